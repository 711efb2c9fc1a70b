//! The one path for security-configuration changes (C1): every change is a new version of a
//! `(kind, key)` entry, attributed and with a reason, in an append-only table. Clients (X2) live
//! here; roles, policies and classes will too.
//!
//! Also the OAuth token store.

use mamori_oauth::{Client, CodeRecord, OAuthStore, RefreshRecord, SigningKey, StoreError, TokenRecord};
use rusqlite::{OptionalExtension, TransactionBehavior, params};

use crate::{Error, SqliteStore};

fn se(e: impl std::fmt::Display) -> StoreError {
    let msg = e.to_string();
    tracing::error!(error = %msg, "oauth store failure");
    StoreError(msg)
}

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
    /// Why.
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
    /// Kind.
    pub kind: String,
    /// Key.
    pub key: String,
    /// Version, from 1.
    pub version: u64,
    /// Value; `None` if removed.
    pub value: Option<serde_json::Value>,
    /// Who.
    pub changed_by: String,
    /// Unix microseconds.
    pub changed_at: i64,
    /// Why.
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

    /// Applies a configuration change; returns the new version. Fails with
    /// [`Error::Corrupt`] naming the conflict if `expected_version` is stale.
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
            return Err(Error::Corrupt(format!(
                "{} `{}` changed concurrently (now at version {}); reload and retry",
                c.kind,
                c.key,
                current.unwrap_or(0)
            )));
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

impl OAuthStore for SqliteStore {
    fn client(&self, id: &str) -> Result<Option<Client>, StoreError> {
        Ok(decode(self.config_get("client", id).map_err(se)?).map_err(se)?.map(|(c, _)| c))
    }

    fn insert_token(&self, t: &TokenRecord) -> Result<(), StoreError> {
        let conn = self.writer().map_err(se)?;
        conn.prepare_cached(
            "INSERT INTO access_tokens (sha256, client_id, subject, fhir_user, scope, issued_at, expires_at, revoked, patient, family) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )
        .map_err(se)?
        .execute(params![&t.token_sha256[..], t.client_id, t.subject, t.fhir_user, t.scope, t.issued_at, t.expires_at, i64::from(t.revoked), t.patient, t.family])
        .map_err(se)?;
        self.release_durably(conn).map_err(se)
    }

    fn token(&self, sha256: &[u8; 32]) -> Result<Option<TokenRecord>, StoreError> {
        let conn = self.reader().map_err(se)?;
        let mut st = conn
            .prepare_cached("SELECT client_id, subject, fhir_user, scope, issued_at, expires_at, revoked, patient, family FROM access_tokens WHERE sha256 = ?1")
            .map_err(se)?;
        st.query_row(params![&sha256[..]], |r| {
            Ok(TokenRecord {
                token_sha256: *sha256,
                client_id: r.get(0)?,
                subject: r.get(1)?,
                fhir_user: r.get(2)?,
                scope: r.get(3)?,
                issued_at: r.get(4)?,
                expires_at: r.get(5)?,
                revoked: r.get::<_, i64>(6)? != 0,
                patient: r.get(7)?,
                family: r.get(8)?,
            })
        })
        .optional()
        .map_err(se)
    }

    fn revoke_token(&self, sha256: &[u8; 32]) -> Result<bool, StoreError> {
        let conn = self.writer().map_err(se)?;
        let n =
            conn.execute("UPDATE access_tokens SET revoked = 1 WHERE sha256 = ?1", params![&sha256[..]]).map_err(se)?;
        // A revocation is acknowledged only once durable.
        self.release_durably(conn).map_err(se)?;
        Ok(n > 0)
    }

    fn use_jti(&self, client_id: &str, jti: &str, expires_at: i64, now: i64) -> Result<bool, StoreError> {
        let conn = self.writer().map_err(se)?;
        conn.execute("DELETE FROM client_assertions WHERE expires_at < ?1", params![now]).map_err(se)?;
        let n = conn
            .execute(
                "INSERT OR IGNORE INTO client_assertions (client_id, jti, expires_at) VALUES (?1, ?2, ?3)",
                params![client_id, jti, expires_at],
            )
            .map_err(se)?;
        // Durable before the token it guards is issued, so a crash cannot reopen a replay.
        self.release_durably(conn).map_err(se)?;
        Ok(n == 1)
    }

    fn insert_code(&self, c: &CodeRecord) -> Result<(), StoreError> {
        let data = serde_json::to_string(c).map_err(se)?;
        let conn = self.writer().map_err(se)?;
        // Codes live a minute; forget those an hour past expiry.
        conn.execute("DELETE FROM auth_codes WHERE expires_at < ?1", params![c.expires_at - 3600]).map_err(se)?;
        conn.execute(
            "INSERT INTO auth_codes (sha256, data, expires_at) VALUES (?1, ?2, ?3)",
            params![&c.code_sha256[..], data, c.expires_at],
        )
        .map_err(se)?;
        self.release_durably(conn).map_err(se)
    }

    fn take_code(&self, sha256: &[u8; 32]) -> Result<Option<(CodeRecord, bool)>, StoreError> {
        let conn = self.writer().map_err(se)?;
        let row: Option<(String, i64)> = conn
            .query_row("SELECT data, used FROM auth_codes WHERE sha256 = ?1", params![&sha256[..]], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
            .map_err(se)?;
        let Some((data, used)) = row else {
            drop(conn);
            return Ok(None);
        };
        if used == 0 {
            conn.execute("UPDATE auth_codes SET used = 1 WHERE sha256 = ?1", params![&sha256[..]]).map_err(se)?;
        }
        // Spent durably before any token is issued for it.
        self.release_durably(conn).map_err(se)?;
        let mut rec: CodeRecord = serde_json::from_str(&data).map_err(se)?;
        rec.code_sha256 = *sha256;
        Ok(Some((rec, used == 0)))
    }

    fn insert_refresh(&self, r: &RefreshRecord) -> Result<(), StoreError> {
        let conn = self.writer().map_err(se)?;
        conn.prepare_cached(
            "INSERT INTO refresh_tokens (sha256, family, client_id, subject, fhir_user, scope, patient, issued_at, expires_at, used, revoked) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )
        .map_err(se)?
        .execute(params![
            &r.sha256[..],
            r.family,
            r.client_id,
            r.subject,
            r.fhir_user,
            r.scope,
            r.patient,
            r.issued_at,
            r.expires_at,
            i64::from(r.used),
            i64::from(r.revoked)
        ])
        .map_err(se)?;
        self.release_durably(conn).map_err(se)
    }

    fn refresh_token(&self, sha256: &[u8; 32]) -> Result<Option<RefreshRecord>, StoreError> {
        let conn = self.reader().map_err(se)?;
        conn.prepare_cached(
            "SELECT family, client_id, subject, fhir_user, scope, patient, issued_at, expires_at, used, revoked FROM refresh_tokens WHERE sha256 = ?1",
        )
        .map_err(se)?
        .query_row(params![&sha256[..]], |r| {
            Ok(RefreshRecord {
                sha256: *sha256,
                family: r.get(0)?,
                client_id: r.get(1)?,
                subject: r.get(2)?,
                fhir_user: r.get(3)?,
                scope: r.get(4)?,
                patient: r.get(5)?,
                issued_at: r.get(6)?,
                expires_at: r.get(7)?,
                used: r.get::<_, i64>(8)? != 0,
                revoked: r.get::<_, i64>(9)? != 0,
            })
        })
        .optional()
        .map_err(se)
    }

    fn use_refresh(&self, sha256: &[u8; 32]) -> Result<bool, StoreError> {
        let conn = self.writer().map_err(se)?;
        let n = conn
            .execute("UPDATE refresh_tokens SET used = 1 WHERE sha256 = ?1 AND used = 0", params![&sha256[..]])
            .map_err(se)?;
        self.release_durably(conn).map_err(se)?;
        Ok(n == 1)
    }

    fn revoke_family(&self, family: &str) -> Result<u64, StoreError> {
        let mut conn = self.writer().map_err(se)?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(se)?;
        let a = tx
            .execute("UPDATE access_tokens SET revoked = 1 WHERE family = ?1 AND revoked = 0", params![family])
            .map_err(se)?;
        let r = tx
            .execute("UPDATE refresh_tokens SET revoked = 1 WHERE family = ?1 AND revoked = 0", params![family])
            .map_err(se)?;
        tx.commit().map_err(se)?;
        self.release_durably(conn).map_err(se)?;
        Ok((a + r) as u64)
    }

    fn signing_keys(&self) -> Result<Vec<SigningKey>, StoreError> {
        decode_all(self.config_current("signing-key").map_err(se)?).map_err(se)
    }

    fn put_signing_key(&self, k: &SigningKey, reason: &str) -> Result<(), StoreError> {
        let previous = self.config_get("signing-key", &k.kid).map_err(se)?.map(|e| e.version);
        let value = serde_json::to_value(k).map_err(se)?;
        self.change_config(&ConfigChange::set("signing-key", &k.kid, value, "system:oauth", reason, previous))
            .map_err(se)?;
        Ok(())
    }
}
