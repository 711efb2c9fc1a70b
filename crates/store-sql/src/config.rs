//! The one path for security-configuration changes (C1): every change is a new version of a
//! `(kind, key)` entry, attributed and with a reason, in an append-only table, with its audit
//! entry in the same transaction. Clients, accounts, keys, rules, policies and the settings live
//! here (the registry: `mamori_app::registry`); workflow state in a table of its own.
//!
//! The rule, once for every database: a change names the version it was based on; if that is
//! not the newest version now, it is refused ([`Error::Stale`]) — on any node, as the write
//! transaction is serialised with every other.

use hmac::{Hmac, Mac};
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
    /// Whether the version carries a valid seal, i.e. was written by the one configuration path
    /// (always true for workflow state and for a store opened without keys). Only the history
    /// shows unsealed versions; the current value is always the newest sealed one.
    pub sealed: bool,
}

/// A configuration version found changed around the one configuration path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tampered {
    /// The registry kind.
    pub kind: String,
    /// The entry.
    pub key: String,
    /// The version concerned.
    pub version: u64,
    /// `unsealed` (written or edited around the path: no valid seal) or `removed` (a sealed
    /// version newer than any left in the table was deleted).
    pub how: &'static str,
}

type HmacSha256 = Hmac<sha2::Sha256>;

/// The seal of one version: HMAC-SHA256 over kind, key, version and the value exactly as stored
/// (`None`: a removal), each part length-prefixed so no two versions share an input.
fn seal_mac(key: &[u8; 32], kind: &str, entry: &str, version: u64, value: Option<&str>) -> HmacSha256 {
    let mut mac =
        <HmacSha256 as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(b"mamori config seal v1\0");
    for part in [kind.as_bytes(), entry.as_bytes(), version.to_string().as_bytes()] {
        mac.update(&(part.len() as u64).to_be_bytes());
        mac.update(part);
    }
    match value {
        Some(v) => {
            mac.update(&[1]);
            mac.update(v.as_bytes());
        }
        None => mac.update(&[0]),
    }
    mac
}

/// The seal to store beside a version.
fn seal(key: &[u8; 32], kind: &str, entry: &str, version: u64, value: Option<&str>) -> String {
    hex::encode(seal_mac(key, kind, entry, version, value).finalize().into_bytes())
}

/// Whether `stored` is the version's seal (compared in constant time).
fn seal_ok(key: &[u8; 32], kind: &str, entry: &str, version: u64, value: Option<&str>, stored: Option<&str>) -> bool {
    let Some(Ok(bytes)) = stored.map(hex::decode) else { return false };
    seal_mac(key, kind, entry, version, value).verify_slice(&bytes).is_ok()
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
pub const WORKFLOW_KINDS: &[&str] =
    &["access-review", "audit-verification", "change-request", "external-check", "backup-drill", "maintenance-window"];

/// The table a kind's versions are kept in.
pub fn table_of(kind: &str) -> &'static str {
    if WORKFLOW_KINDS.contains(&kind) { "workflow_versions" } else { "config_versions" }
}

/// The columns of a version and its seal (`NULL` for workflow state, which is not sealed).
fn cols(table: &str) -> String {
    if table == "config_versions" {
        format!("{VERSION_COLS}, s.seal FROM config_versions c {SEAL_JOIN}")
    } else {
        format!("{VERSION_COLS}, NULL FROM {table} c")
    }
}

/// A version's columns (table alias `c`), as [`entry`] reads them, before the seal.
pub(crate) const VERSION_COLS: &str = "c.kind, c.key, c.version, c.value, c.changed_by, c.changed_at, c.reason";
/// The seal of configuration version `c`, as `s`.
pub(crate) const SEAL_JOIN: &str =
    "LEFT JOIN config_seals s ON s.kind = c.kind AND s.key = c.key AND s.version = c.version";

/// A version read with [`cols`]; its seal checked with `key` when it is configuration.
fn entry(r: &Row, key: Option<&[u8; 32]>) -> Result<ConfigEntry, Error> {
    let (kind, k, version, raw) = (r.text(0)?, r.text(1)?, r.uint(2)?, r.opt_text(3)?);
    let sealed = match key {
        Some(key) if table_of(&kind) == "config_versions" => {
            seal_ok(key, &kind, &k, version, raw.as_deref(), r.opt_text(7)?.as_deref())
        }
        _ => true,
    };
    Ok(ConfigEntry {
        value: raw.map(|v| serde_json::from_str(&v)).transpose().map_err(Error::corrupt)?,
        kind,
        key: k,
        version,
        changed_by: r.text(4)?,
        changed_at: r.int(5)?,
        reason: r.text(6)?,
        sealed,
    })
}

const COLS: &str = "kind, key, version, value, changed_by, changed_at, reason";

/// Applies a change inside the caller's write transaction; returns the new version. Its audit
/// entry is stamped `now` (the store's clock).
pub(crate) fn apply(
    c: &mut dyn Conn,
    change: &ConfigChange<'_>,
    now: i64,
    key: Option<&[u8; 32]>,
    stamp: &std::sync::RwLock<Option<crate::AuditStamp>>,
) -> Result<u64, Error> {
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
    // A version removed around the path keeps its seal: the next version goes past it.
    let sealed_max = if table == "config_versions" {
        c.one("SELECT MAX(version) FROM config_seals WHERE kind = ?1 AND key = ?2", &vals![change.kind, change.key])?
            .map(|r| r.opt_int(0))
            .transpose()?
            .flatten()
            .and_then(|v| u64::try_from(v).ok())
    } else {
        None
    };
    let next = current.max(sealed_max).unwrap_or(0) + 1;
    let value = change.value.as_ref().map(|v| v.to_string());
    let version = i64::try_from(next).map_err(Error::corrupt)?;
    c.execute(
        &format!("INSERT INTO {table} ({COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
        &vals![change.kind, change.key, version, value.as_deref(), change.changed_by, change.now_micros, change.reason],
    )?;
    if let (Some(key), "config_versions") = (key, table) {
        let seal = seal(key, change.kind, change.key, next, value.as_deref());
        c.execute(
            "INSERT INTO config_seals (kind, key, version, seal) VALUES (?1, ?2, ?3, ?4)",
            &vals![change.kind, change.key, version, seal],
        )?;
    }
    let mut entry = AuditRecord {
        detail: Some(change.reason.to_string()),
        resources: vec![format!("config/{}/{}/v{next}", change.kind, change.key)],
        ..AuditRecord::new("config", AuditActor::from_tag(change.changed_by), Outcome::Success, "HOPERAT")
    };
    crate::stamp_with(stamp, &mut entry);
    crate::audit::insert(c, now, entry)?;
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
        let key = self.seal_key.get().copied();
        let stamp = &*self.stamp;
        self.db.write(|c| apply(c, change, now, key.as_ref(), stamp))
    }

    /// From now on, seals every configuration version written with `key` and serves only
    /// versions whose seal verifies (#25). The first time a store is sealed, the versions already
    /// in it are sealed as they stand (trust on first use, recorded in the store's flags and
    /// returned as the count); after that, a version without a valid seal was written around
    /// the configuration path. Returns how many versions were sealed now.
    pub fn seal_config(&self, key: [u8; 32]) -> Result<u64, Error> {
        let _ = self.seal_key.set(key);
        let key = self.seal_key.get().copied().unwrap_or(key);
        if self.flag_get("config_sealed")?.is_some() {
            return Ok(0);
        }
        let now = self.now_micros();
        self.db.write(|c| {
            let rows = c.query(&format!("SELECT {} WHERE s.seal IS NULL", cols("config_versions")), &[])?;
            let mut n = 0u64;
            for r in &rows {
                let (kind, k, version, raw) = (r.text(0)?, r.text(1)?, r.uint(2)?, r.opt_text(3)?);
                let seal = seal(&key, &kind, &k, version, raw.as_deref());
                c.execute(
                    "INSERT INTO config_seals (kind, key, version, seal) VALUES (?1, ?2, ?3, ?4)",
                    &vals![kind, k, i64::try_from(version).map_err(Error::corrupt)?, seal],
                )?;
                n += 1;
            }
            c.execute(
                "INSERT INTO store_flags (name, value) VALUES ('config_sealed', ?1) ON CONFLICT (name) DO NOTHING",
                &vals![now.to_string()],
            )?;
            Ok(n)
        })
    }

    fn key(&self) -> Option<&[u8; 32]> {
        self.seal_key.get()
    }

    /// The newest sealed version among `desc` (newest first).
    fn newest_sealed(&self, kind: &str, entry_key: &str) -> Result<Option<ConfigEntry>, Error> {
        let table = table_of(kind);
        let rows = self.db.read_statement(|c| {
            c.query(
                &format!("SELECT {} WHERE c.kind = ?1 AND c.key = ?2 ORDER BY c.version DESC", cols(table)),
                &vals![kind, entry_key],
            )
        })?;
        for r in &rows {
            let e = entry(r, self.key())?;
            if e.sealed {
                return Ok(Some(e));
            }
        }
        Ok(None)
    }

    /// The current version of every live entry of a kind: the newest version with a valid seal
    /// (a version written around the configuration path is never served).
    pub fn config_current(&self, kind: &str) -> Result<Vec<ConfigEntry>, Error> {
        let table = table_of(kind);
        let rows = self.db.read_statement(|c| {
            c.query(
                &format!(
                    "SELECT {} WHERE c.kind = ?1 AND c.version = (SELECT MAX(version) FROM {table} d WHERE d.kind = c.kind AND d.key = c.key) ORDER BY c.key",
                    cols(table)
                ),
                &vals![kind],
            )
        })?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let e = entry(r, self.key())?;
            let e = if e.sealed { Some(e) } else { self.newest_sealed(kind, &e.key)? };
            out.extend(e.filter(|e| e.value.is_some()));
        }
        Ok(out)
    }

    /// One entry's current version: the newest with a valid seal.
    pub fn config_get(&self, kind: &str, key: &str) -> Result<Option<ConfigEntry>, Error> {
        let table = table_of(kind);
        let row = self.db.read_statement(|c| {
            c.one(
                &format!("SELECT {} WHERE c.kind = ?1 AND c.key = ?2 ORDER BY c.version DESC LIMIT 1", cols(table)),
                &vals![kind, key],
            )
        })?;
        self.sealed_or_older(kind, key, row)
    }

    /// The entry read from `row` (columns as [`cols`] gives them) if its seal holds; else the
    /// newest version that has a valid seal (a version written around the configuration path
    /// is never served).
    pub(crate) fn sealed_or_older(
        &self,
        kind: &str,
        key: &str,
        row: Option<Row>,
    ) -> Result<Option<ConfigEntry>, Error> {
        match row.as_ref().map(|r| entry(r, self.key())).transpose()? {
            Some(e) if !e.sealed => self.newest_sealed(kind, key),
            other => Ok(other),
        }
    }

    /// Every version of one entry, oldest first, unsealed ones included (marked).
    pub fn config_history(&self, kind: &str, key: &str) -> Result<Vec<ConfigEntry>, Error> {
        let table = table_of(kind);
        let rows = self.db.read_statement(|c| {
            c.query(
                &format!("SELECT {} WHERE c.kind = ?1 AND c.key = ?2 ORDER BY c.version", cols(table)),
                &vals![kind, key],
            )
        })?;
        rows.iter().map(|r| entry(r, self.key())).collect()
    }

    /// Every configuration version changed around the one configuration path: the newest
    /// version of an entry without a valid seal, and sealed versions no longer in the table.
    /// Empty when the store has no seal key.
    pub fn config_tampered(&self) -> Result<Vec<Tampered>, Error> {
        let Some(key) = self.key() else { return Ok(Vec::new()) };
        let (rows, gone) = self.db.read_statement(|c| {
            let rows = c.query(
                &format!(
                    "SELECT {} WHERE c.version = (SELECT MAX(version) FROM config_versions d WHERE d.kind = c.kind AND d.key = c.key) ORDER BY c.kind, c.key",
                    cols("config_versions")
                ),
                &[],
            )?;
            let gone = c.query(
                "SELECT s.kind, s.key, s.version FROM config_seals s WHERE s.version > \
                 COALESCE((SELECT MAX(c.version) FROM config_versions c WHERE c.kind = s.kind AND c.key = s.key), 0) \
                 ORDER BY s.kind, s.key, s.version",
                &[],
            )?;
            Ok::<_, Error>((rows, gone))
        })?;
        let mut out = Vec::new();
        for r in &rows {
            let e = entry(r, Some(key))?;
            if !e.sealed {
                out.push(Tampered { kind: e.kind, key: e.key, version: e.version, how: "unsealed" });
            }
        }
        for r in &gone {
            out.push(Tampered { kind: r.text(0)?, key: r.text(1)?, version: r.uint(2)?, how: "removed" });
        }
        Ok(out)
    }

    /// The guard triggers (append-only tables, immutable versions) that are missing or
    /// disabled, by name.
    pub fn guards_missing(&self) -> Result<Vec<String>, Error> {
        let dialect = self.db.dialect();
        let live = self.db.read_statement(|c| {
            c.query(
                match dialect {
                    // The audit trail's guards live in its own file (schema step 9).
                    crate::Dialect::Sqlite => {
                        "SELECT name FROM main.sqlite_master WHERE type = 'trigger' \
                         UNION ALL SELECT name FROM audit.sqlite_master WHERE type = 'trigger'"
                    }
                    crate::Dialect::Postgres => {
                        "SELECT t.tgname FROM pg_trigger t JOIN pg_class r ON r.oid = t.tgrelid \
                         JOIN pg_namespace n ON n.oid = r.relnamespace \
                         WHERE NOT t.tgisinternal AND t.tgenabled <> 'D' AND n.nspname = current_schema()"
                    }
                },
                &[],
            )
        })?;
        let live: std::collections::BTreeSet<String> = live.iter().map(|r| r.text(0)).collect::<Result<_, _>>()?;
        Ok(crate::schema::guard_names(dialect).into_iter().filter(|n| !live.contains(n)).collect())
    }

    /// Puts every guard trigger back (and enables it), as the migration installed it.
    pub fn repair_guards(&self) -> Result<(), Error> {
        let dialect = self.db.dialect();
        let mut sql = crate::schema::guards(dialect);
        if dialect == crate::Dialect::Postgres {
            for (table, _) in crate::schema::guarded_tables() {
                sql.push_str(&format!("ALTER TABLE {table} ENABLE TRIGGER USER;\n"));
            }
        }
        self.db.write(|c| c.batch(&sql))
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
