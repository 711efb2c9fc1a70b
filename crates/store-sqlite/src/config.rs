//! The one path for security-configuration changes (C1): every change is a new version of a
//! `(kind, key)` entry, attributed and with a reason, in an append-only table, with its audit
//! entry in the same transaction. Clients, accounts, keys, rules, policies and the settings live
//! here (the registry: `mamori_app::registry`); workflow state in a table of its own.

use rusqlite::{OptionalExtension, TransactionBehavior, params};

use crate::{Error, SqliteStore};

/// A proposed change.
#[derive(Debug, Clone)]
pub struct ConfigChange<'a> {
    /// Kind, e.g. `client`.
    pub kind: &'a str,
    /// Key within the kind, e.g. the client id.
    pub key: &'a str,
    /// New value (JSON); `None` removes the entry.
    pub value: Option<serde_json::Value>,
    /// Who makes the change.
    pub changed_by: &'a str,
    /// The reason given with the change (recorded and audited).
    pub reason: &'a str,
    /// The version the change was based on (`None` = must not exist yet); a mismatch is refused
    /// so that concurrent edits cannot overwrite each other.
    pub expected_version: Option<u64>,
    /// Unix microseconds.
    pub now_micros: i64,
}

/// One version of a configuration entry.
#[derive(Debug, Clone)]
pub struct ConfigEntry {
    /// The registry kind, e.g. `client` (`mamori_app::registry::ConfigKind`).
    pub kind: String,
    /// The entry within the kind, e.g. a client id; `active` for singletons.
    pub key: String,
    /// Version, from 1.
    pub version: u64,
    /// Value; `None` if removed.
    pub value: Option<serde_json::Value>,
    /// Who changed it: `operator:NAME`, `user:NAME` or `system:WHAT`.
    pub changed_by: String,
    /// When, in Unix microseconds.
    pub changed_at: i64,
    /// The reason given with the change.
    pub reason: String,
}

impl ConfigChange<'_> {
    /// Sets `kind`/`key` to `value` now, based on version `expected` (`None` = new).
    pub fn set<'a>(
        kind: &'a str,
        key: &'a str,
        value: serde_json::Value,
        changed_by: &'a str,
        reason: &'a str,
        expected: Option<u64>,
    ) -> ConfigChange<'a> {
        let now = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000;
        ConfigChange {
            kind,
            key,
            value: Some(value),
            changed_by,
            reason,
            expected_version: expected,
            now_micros: i64::try_from(now).unwrap_or(i64::MAX),
        }
    }
}

/// An entry's value as `T` with its version; `None` when there is no entry or it was removed.
/// (Clients, accounts and signing keys are stored this way by both stores.)
pub fn decode<T: serde::de::DeserializeOwned>(e: Option<ConfigEntry>) -> Result<Option<(T, u64)>, serde_json::Error> {
    match e {
        Some(ConfigEntry { value: Some(v), version, .. }) => serde_json::from_value(v).map(|t| Some((t, version))),
        _ => Ok(None),
    }
}

/// The live values of entries as `T`.
pub fn decode_all<T: serde::de::DeserializeOwned>(entries: Vec<ConfigEntry>) -> Result<Vec<T>, serde_json::Error> {
    entries.into_iter().filter_map(|e| e.value).map(serde_json::from_value).collect()
}

/// Kinds that are workflow state rather than security configuration — an access-review
/// campaign's items and decisions, later maintenance windows. They go through the same versioned,
/// attributed, audited path but are kept in `workflow_versions`, so a decision does not count as
/// a configuration change (`config_generation` does not move and no node reloads its policies)
/// and drift detection watches only `config_versions`.
pub const WORKFLOW_KINDS: &[&str] = &["access-review"];

/// The table a kind's versions are kept in.
pub fn table_of(kind: &str) -> &'static str {
    if WORKFLOW_KINDS.contains(&kind) { "workflow_versions" } else { "config_versions" }
}

impl SqliteStore {
    /// A number that grows with every configuration change (the history is append-only), for
    /// cheap polling by long-running processes.
    pub fn config_generation(&self) -> Result<u64, Error> {
        let n: i64 = self.reader()?.query_row("SELECT COUNT(*) FROM config_versions", [], |r| r.get(0))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Applies a configuration change; returns the new version. Fails with [`Error::Stale`] if
    /// `expected_version` is not the newest version.
    pub fn change_config(&self, c: &ConfigChange<'_>) -> Result<u64, Error> {
        let table = table_of(c.kind);
        let mut conn = self.writer()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let current: Option<i64> = tx
            .query_row(
                &format!("SELECT MAX(version) FROM {table} WHERE kind = ?1 AND key = ?2"),
                params![c.kind, c.key],
                |r| r.get(0),
            )
            .optional()?
            .flatten();
        let current = current.and_then(|v| u64::try_from(v).ok());
        if current != c.expected_version {
            return Err(Error::Stale { kind: c.kind.into(), key: c.key.into(), current: current.unwrap_or(0) });
        }
        let next = current.unwrap_or(0) + 1;
        tx.execute(
            &format!("INSERT INTO {table} (kind, key, version, value, changed_by, changed_at, reason) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
            params![
                c.kind,
                c.key,
                i64::try_from(next).unwrap_or(i64::MAX),
                c.value.as_ref().map(|v| v.to_string()),
                c.changed_by,
                c.now_micros,
                c.reason
            ],
        )?;
        let (kind, id) = c.changed_by.split_once(':').unwrap_or(("operator", c.changed_by));
        crate::audit::insert(
            &tx,
            mamori_audit::AuditRecord {
                detail: Some(c.reason.to_string()),
                resources: vec![format!("config/{}/{}/v{next}", c.kind, c.key)],
                ..mamori_audit::AuditRecord::new(
                    "config",
                    mamori_audit::AuditActor { client_id: None, fhir_user: None, id: id.into(), kind: kind.into() },
                    mamori_audit::Outcome::Success,
                    "HOPERAT",
                )
            },
        )?;
        tx.commit()?;
        self.release_durably(conn)?;
        Ok(next)
    }

    /// The current version of every live entry of a kind.
    pub fn config_current(&self, kind: &str) -> Result<Vec<ConfigEntry>, Error> {
        let table = table_of(kind);
        let conn = self.reader()?;
        let mut st = conn.prepare_cached(&format!(
            "SELECT c.kind, c.key, c.version, c.value, c.changed_by, c.changed_at, c.reason FROM {table} c
             WHERE c.kind = ?1 AND c.version = (SELECT MAX(version) FROM {table} d WHERE d.kind = c.kind AND d.key = c.key)
             AND c.value IS NOT NULL ORDER BY c.key"
        ))?;
        let rows = st.query_map(params![kind], entry)?;
        let mut out = Vec::new();
        for r in rows {
            out.push(r??);
        }
        Ok(out)
    }

    /// One entry's current version.
    pub fn config_get(&self, kind: &str, key: &str) -> Result<Option<ConfigEntry>, Error> {
        let table = table_of(kind);
        let conn = self.reader()?;
        let mut st = conn.prepare_cached(&format!(
            "SELECT kind, key, version, value, changed_by, changed_at, reason FROM {table}
             WHERE kind = ?1 AND key = ?2 ORDER BY version DESC LIMIT 1"
        ))?;
        st.query_row(params![kind, key], entry).optional()?.transpose()
    }

    /// Every version of one entry, oldest first.
    pub fn config_history(&self, kind: &str, key: &str) -> Result<Vec<ConfigEntry>, Error> {
        let table = table_of(kind);
        let conn = self.reader()?;
        let mut st = conn.prepare_cached(&format!(
            "SELECT kind, key, version, value, changed_by, changed_at, reason FROM {table}
             WHERE kind = ?1 AND key = ?2 ORDER BY version"
        ))?;
        let rows = st.query_map(params![kind, key], entry)?;
        let mut out = Vec::new();
        for r in rows {
            out.push(r??);
        }
        Ok(out)
    }
}

fn entry(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<ConfigEntry, Error>> {
    let value: Option<String> = r.get(3)?;
    let version: i64 = r.get(2)?;
    Ok((|| {
        Ok(ConfigEntry {
            kind: r.get(0)?,
            key: r.get(1)?,
            version: u64::try_from(version).map_err(|e| Error::Corrupt(e.to_string()))?,
            value: value.map(|v| serde_json::from_str(&v)).transpose().map_err(|e| Error::Corrupt(e.to_string()))?,
            changed_by: r.get(4)?,
            changed_at: r.get(5)?,
            reason: r.get(6)?,
        })
    })())
}
