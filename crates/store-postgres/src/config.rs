//! The one path for security-configuration changes (C1) on PostgreSQL. A configuration change is
//! a write transaction: it takes the writer lock, checks the expected version, appends the new
//! version and its audit entry, all or nothing.

use tokio_postgres::Row;

use crate::{ConfigChange, ConfigEntry, Error, PgStore, params};

fn entry(r: &Row) -> Result<ConfigEntry, Error> {
    let value: Option<String> = r.try_get(3)?;
    let version: i64 = r.try_get(2)?;
    Ok(ConfigEntry {
        kind: r.try_get(0)?,
        key: r.try_get(1)?,
        version: u64::try_from(version).map_err(|e| Error::Corrupt(e.to_string()))?,
        value: value.map(|v| serde_json::from_str(&v)).transpose().map_err(|e| Error::Corrupt(e.to_string()))?,
        changed_by: r.try_get(4)?,
        changed_at: r.try_get(5)?,
        reason: r.try_get(6)?,
    })
}

impl PgStore {
    /// A number that grows with every configuration change (the history is append-only), for
    /// cheap polling by every node.
    pub fn config_generation(&self) -> Result<u64, Error> {
        let r = self.lease()?.opt("SELECT COUNT(*) FROM config_versions", params![])?;
        Ok(r.map(|r| r.try_get::<_, i64>(0)).transpose()?.and_then(|n| u64::try_from(n).ok()).unwrap_or(0))
    }

    /// Applies a configuration change; returns the new version. Fails with
    /// [`Error::Corrupt`] naming the conflict if `expected_version` is stale — on any node.
    pub fn change_config(&self, c: &ConfigChange<'_>) -> Result<u64, Error> {
        let table = mamori_store_sqlite::table_of(c.kind);
        let mut l = self.lease()?;
        l.write(|l| -> Result<u64, Error> {
            let current = l
                .opt(
                    &format!("SELECT MAX(version) FROM {table} WHERE kind = $1 AND key = $2"),
                    params![c.kind.to_string(), c.key.to_string()],
                )?
                .map(|r| r.try_get::<_, Option<i64>>(0))
                .transpose()?
                .flatten()
                .and_then(|v| u64::try_from(v).ok());
            if current != c.expected_version {
                return Err(Error::Stale { kind: c.kind.into(), key: c.key.into(), current: current.unwrap_or(0) });
            }
            let next = current.unwrap_or(0) + 1;
            l.execute(
                &format!("INSERT INTO {table} (kind, key, version, value, changed_by, changed_at, reason) VALUES ($1, $2, $3, $4, $5, $6, $7)"),
                params![
                    c.kind.to_string(),
                    c.key.to_string(),
                    i64::try_from(next).unwrap_or(i64::MAX),
                    c.value.as_ref().map(|v| v.to_string()),
                    c.changed_by.to_string(),
                    c.now_micros,
                    c.reason.to_string()
                ],
            )?;
            let (kind, id) = c.changed_by.split_once(':').unwrap_or(("operator", c.changed_by));
            crate::audit::insert(
                l,
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
            Ok(next)
        })
    }

    /// The current version of every live entry of a kind.
    pub fn config_current(&self, kind: &str) -> Result<Vec<ConfigEntry>, Error> {
        let table = mamori_store_sqlite::table_of(kind);
        let rows = self.lease()?.query(
            &format!(
                "SELECT DISTINCT ON (key) kind, key, version, value, changed_by, changed_at, reason FROM {table}
                 WHERE kind = $1 ORDER BY key, version DESC"
            ),
            params![kind.to_string()],
        )?;
        let mut out = Vec::new();
        for r in &rows {
            let e = entry(r)?;
            if e.value.is_some() {
                out.push(e);
            }
        }
        Ok(out)
    }

    /// One entry's current version.
    pub fn config_get(&self, kind: &str, key: &str) -> Result<Option<ConfigEntry>, Error> {
        let table = mamori_store_sqlite::table_of(kind);
        self.lease()?
            .opt(
                &format!(
                    "SELECT kind, key, version, value, changed_by, changed_at, reason FROM {table}
                     WHERE kind = $1 AND key = $2 ORDER BY version DESC LIMIT 1"
                ),
                params![kind.to_string(), key.to_string()],
            )?
            .map(|r| entry(&r))
            .transpose()
    }

    /// Every version of one entry, oldest first.
    pub fn config_history(&self, kind: &str, key: &str) -> Result<Vec<ConfigEntry>, Error> {
        let table = mamori_store_sqlite::table_of(kind);
        let rows = self.lease()?.query(
            &format!(
                "SELECT kind, key, version, value, changed_by, changed_at, reason FROM {table}
                 WHERE kind = $1 AND key = $2 ORDER BY version"
            ),
            params![kind.to_string(), key.to_string()],
        )?;
        rows.iter().map(entry).collect()
    }

    /// Runs one statement outside any lock (single-row token and session state, atomic by
    /// itself); PostgreSQL has made it durable when this returns.
    pub(crate) fn exec(&self, sql: &str, p: Vec<crate::P>) -> Result<u64, Error> {
        self.lease()?.execute(sql, p)
    }
}
