//! The one path for security-configuration changes (C1): every change is a new version of a
//! `(kind, key)` entry, attributed and with a reason, in an append-only table, with its audit
//! entry in the same transaction. Clients, accounts, keys, rules, policies and the settings live
//! here (the registry: `mamori_app::registry`); workflow state in a table of its own.
//!
//! The rule, once for every database: a change names the version it was based on; if that is
//! not the newest version now, it is refused ([`Error::Stale`]) — on any node, as the write
//! transaction is serialised with every other.

use mamori_audit::{AuditActor, AuditRecord, Outcome};

use crate::{Conn, Db, Error, Row, SqlStore, vals};

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
    /// When, in Unix microseconds, by the caller's clock (the node's one clock).
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

/// An entry's value as `T` with its version; `None` when there is no entry or it was removed.
/// (Clients, accounts and signing keys are stored this way.)
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
pub const WORKFLOW_KINDS: &[&str] = &["access-review", "audit-verification"];

/// The table a kind's versions are kept in.
pub fn table_of(kind: &str) -> &'static str {
    if WORKFLOW_KINDS.contains(&kind) { "workflow_versions" } else { "config_versions" }
}

const COLS: &str = "kind, key, version, value, changed_by, changed_at, reason";

fn entry(r: &Row) -> Result<ConfigEntry, Error> {
    Ok(ConfigEntry {
        kind: r.text(0)?,
        key: r.text(1)?,
        version: r.uint(2)?,
        value: r.opt_text(3)?.map(|v| serde_json::from_str(&v)).transpose().map_err(Error::corrupt)?,
        changed_by: r.text(4)?,
        changed_at: r.int(5)?,
        reason: r.text(6)?,
    })
}

/// Applies a change inside the caller's write transaction; returns the new version. Its audit
/// entry is stamped `now` (the store's clock).
pub(crate) fn apply(c: &mut dyn Conn, change: &ConfigChange<'_>, now: i64) -> Result<u64, Error> {
    let table = table_of(change.kind);
    let current = c
        .one(
            &format!("SELECT MAX(version) FROM {table} WHERE kind = ?1 AND key = ?2"),
            &vals![change.kind, change.key],
        )?
        .map(|r| r.opt_int(0))
        .transpose()?
        .flatten()
        .and_then(|v| u64::try_from(v).ok());
    if current != change.expected_version {
        return Err(Error::Stale { kind: change.kind.into(), key: change.key.into(), current: current.unwrap_or(0) });
    }
    let next = current.unwrap_or(0) + 1;
    c.execute(
        &format!("INSERT INTO {table} ({COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
        &vals![
            change.kind,
            change.key,
            i64::try_from(next).map_err(Error::corrupt)?,
            change.value.as_ref().map(|v| v.to_string()),
            change.changed_by,
            change.now_micros,
            change.reason
        ],
    )?;
    crate::audit::insert(
        c,
        now,
        AuditRecord {
            detail: Some(change.reason.to_string()),
            resources: vec![format!("config/{}/{}/v{next}", change.kind, change.key)],
            ..AuditRecord::new("config", AuditActor::from_tag(change.changed_by), Outcome::Success, "HOPERAT")
        },
    )?;
    Ok(next)
}

impl<D: Db> SqlStore<D> {
    /// A number that grows with every configuration change (the history is append-only), for
    /// cheap polling by every node.
    pub fn config_generation(&self) -> Result<u64, Error> {
        self.db.read_statement(|c| {
            Ok(c.one("SELECT COUNT(*) FROM config_versions", &[])?.map(|r| r.uint(0)).transpose()?.unwrap_or(0))
        })
    }

    /// Applies a configuration change; returns the new version. Fails with [`Error::Stale`] if
    /// `expected_version` is not the newest version.
    pub fn change_config(&self, change: &ConfigChange<'_>) -> Result<u64, Error> {
        let now = self.now_micros();
        self.db.write(|c| apply(c, change, now))
    }

    /// The current version of every live entry of a kind.
    pub fn config_current(&self, kind: &str) -> Result<Vec<ConfigEntry>, Error> {
        let table = table_of(kind);
        let rows = self.db.read_statement(|c| {
            c.query(
                &format!(
                    "SELECT c.kind, c.key, c.version, c.value, c.changed_by, c.changed_at, c.reason FROM {table} c
                     WHERE c.kind = ?1 AND c.version = (SELECT MAX(version) FROM {table} d WHERE d.kind = c.kind AND d.key = c.key)
                     AND c.value IS NOT NULL ORDER BY c.key"
                ),
                &vals![kind],
            )
        })?;
        rows.iter().map(entry).collect()
    }

    /// One entry's current version.
    pub fn config_get(&self, kind: &str, key: &str) -> Result<Option<ConfigEntry>, Error> {
        let table = table_of(kind);
        let row = self.db.read_statement(|c| {
            c.one(
                &format!("SELECT {COLS} FROM {table} WHERE kind = ?1 AND key = ?2 ORDER BY version DESC LIMIT 1"),
                &vals![kind, key],
            )
        })?;
        row.as_ref().map(entry).transpose()
    }

    /// Every version of one entry, oldest first.
    pub fn config_history(&self, kind: &str, key: &str) -> Result<Vec<ConfigEntry>, Error> {
        let table = table_of(kind);
        let rows = self.db.read_statement(|c| {
            c.query(
                &format!("SELECT {COLS} FROM {table} WHERE kind = ?1 AND key = ?2 ORDER BY version"),
                &vals![kind, key],
            )
        })?;
        rows.iter().map(entry).collect()
    }

    /// Sets `kind`/`key` to `value` now, based on the version `expected` (used by the identity
    /// and OAuth stores for accounts and signing keys).
    pub(crate) fn set_config(
        &self,
        kind: &str,
        key: &str,
        value: serde_json::Value,
        changed_by: &str,
        reason: &str,
        expected: Option<u64>,
    ) -> Result<u64, Error> {
        self.change_config(&ConfigChange {
            kind,
            key,
            value: Some(value),
            changed_by,
            reason,
            expected_version: expected,
            now_micros: self.now_micros(),
        })
    }
}
