//! The store a node runs on: the embedded SQLite file (default) or a PostgreSQL database shared
//! by several nodes (`--database postgres://…`). Everything above sees one [`Backend`].

use std::path::Path;
use std::sync::Arc;

use mamori_audit::{AuditLog, Hash};
use mamori_identity::service::IdentityStore;
use mamori_oauth::OAuthStore;
use mamori_records::Clock;
use mamori_records::Store;
pub use mamori_store_sql::Error;
use mamori_store_sql::{ConfigChange, ConfigEntry, Db, SqlStore};

/// Every piece of state a node keeps, behind one object: records, tokens, accounts, the audit
/// log and the configuration path (C1).
pub trait Backend: Store + OAuthStore + IdentityStore + AuditLog + Send + Sync {
    /// `sqlite` or `postgres`.
    fn kind(&self) -> &'static str;
    /// Where the data is (a file path, or a database URL without its password).
    fn describe(&self) -> String;
    /// A quick liveness check for `/healthz`.
    fn ping(&self) -> Result<(), Error>;
    /// Whether the node may take requests (`/readyz`): store reachable, schema current, audit
    /// writer running; `Err` says what is not.
    fn ready(&self) -> Result<(), String>;
    /// Grows with every configuration change (polled by every node to reload policies).
    fn config_generation(&self) -> Result<u64, Error>;
    /// The one path for configuration changes: versioned, attributed, audited; a change based on
    /// a version that is no longer the newest is [`Error::Stale`].
    fn change_config(&self, c: &ConfigChange<'_>) -> Result<u64, Error>;
    /// The current version of every live entry of a kind.
    fn config_current(&self, kind: &str) -> Result<Vec<ConfigEntry>, Error>;
    /// One entry's current version.
    fn config_get(&self, kind: &str, key: &str) -> Result<Option<ConfigEntry>, Error>;
    /// Every version of one entry, oldest first.
    fn config_history(&self, kind: &str, key: &str) -> Result<Vec<ConfigEntry>, Error>;
    /// Seals configuration versions with `key` from now on and serves only sealed ones (#25).
    fn seal_config(&self, key: [u8; 32]) -> Result<u64, Error>;
    /// Configuration versions changed around the one configuration path.
    fn config_tampered(&self) -> Result<Vec<mamori_store_sql::Tampered>, Error>;
    /// Guard triggers missing or disabled.
    fn guards_missing(&self) -> Result<Vec<String>, Error>;
    /// Puts the guard triggers back.
    fn repair_guards(&self) -> Result<(), Error>;
    /// Unix time of an account's last successful login.
    fn last_login(&self, username: &str) -> Result<Option<i64>, Error>;
    /// Audit entries appended.
    fn audit_size(&self) -> Result<u64, Error>;
    /// Audit entries covered by the latest checkpoint.
    fn audit_integrated_size(&self) -> Result<u64, Error>;
    /// Inclusion proof of leaf `index` in the tree of `size`.
    fn audit_inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, mamori_audit::Error>;
    /// Consistency proof between two integrated sizes.
    fn audit_consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>, mamori_audit::Error>;
    /// Root of an integrated tree size.
    fn audit_root(&self, size: u64) -> Result<Hash, mamori_audit::Error>;
    /// `(commits, fsyncs)` of the embedded store's group commit (zeros on PostgreSQL, which
    /// flushes its own WAL).
    fn durability_stats(&self) -> (u64, u64);
    /// This process's audit appends: the writer's queue and durable entries by action/outcome.
    fn audit_stats(&self) -> mamori_store_sql::AuditStats;
    /// The database's size in bytes.
    fn size_bytes(&self) -> Result<u64, Error>;
    /// A value shared by every node (set once by the first); the embedded store keeps it in the
    /// data directory's own database.
    fn shared_flag(&self, name: &str, first: &str) -> Result<String, Error>;
    /// A logical copy of the store on one snapshot (#27, `mamori_store_sql::dump`).
    fn dump(
        &self,
        out: &mut dyn std::io::Write,
        progress: &mut dyn FnMut(u64),
    ) -> Result<mamori_store_sql::dump::DumpSummary, Error>;
    /// Loads a copy into this store, which must be empty.
    fn load(
        &self,
        input: &mut dyn std::io::Read,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Vec<mamori_store_sql::dump::TableSum>, Error>;
    /// Revokes every token and ends every session: `(tokens, sessions)`.
    fn revoke_everything(&self) -> Result<(u64, u64), Error>;
    /// Whether the store holds no data yet (a restore's target).
    fn is_empty_store(&self) -> Result<bool, Error>;
    /// Whether a load began here and did not finish (the store is not a copy of anything).
    fn restore_incomplete(&self) -> Result<bool, Error>;
    /// Removes every version written after `micros` and points each resource at its newest
    /// remaining version (a restore as of a time); returns the versions removed.
    fn rewind(&self, micros: i64) -> Result<u64, Error>;
    /// Sets what the one audit append stamps on every entry (`mamori_store_sql::AuditStamp`).
    fn set_audit_stamp(&self, stamp: mamori_store_sql::AuditStamp);
}

/// Both stores are [`SqlStore`]s: one implementation over any [`Db`].
impl<D: Db> Backend for SqlStore<D> {
    fn kind(&self) -> &'static str {
        self.db().dialect().name()
    }
    fn describe(&self) -> String {
        SqlStore::describe(self)
    }
    fn ping(&self) -> Result<(), Error> {
        SqlStore::ping(self)
    }
    fn ready(&self) -> Result<(), String> {
        SqlStore::ready(self)
    }
    fn config_generation(&self) -> Result<u64, Error> {
        SqlStore::config_generation(self)
    }
    fn change_config(&self, c: &ConfigChange<'_>) -> Result<u64, Error> {
        SqlStore::change_config(self, c)
    }
    fn config_current(&self, kind: &str) -> Result<Vec<ConfigEntry>, Error> {
        SqlStore::config_current(self, kind)
    }
    fn config_get(&self, kind: &str, key: &str) -> Result<Option<ConfigEntry>, Error> {
        SqlStore::config_get(self, kind, key)
    }
    fn seal_config(&self, key: [u8; 32]) -> Result<u64, Error> {
        SqlStore::seal_config(self, key)
    }
    fn config_tampered(&self) -> Result<Vec<mamori_store_sql::Tampered>, Error> {
        SqlStore::config_tampered(self)
    }
    fn guards_missing(&self) -> Result<Vec<String>, Error> {
        SqlStore::guards_missing(self)
    }
    fn repair_guards(&self) -> Result<(), Error> {
        SqlStore::repair_guards(self)
    }
    fn config_history(&self, kind: &str, key: &str) -> Result<Vec<ConfigEntry>, Error> {
        SqlStore::config_history(self, kind, key)
    }
    fn last_login(&self, username: &str) -> Result<Option<i64>, Error> {
        SqlStore::last_login(self, username)
    }
    fn audit_size(&self) -> Result<u64, Error> {
        SqlStore::audit_size(self)
    }
    fn audit_integrated_size(&self) -> Result<u64, Error> {
        SqlStore::audit_integrated_size(self)
    }
    fn audit_inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, mamori_audit::Error> {
        SqlStore::audit_inclusion_proof(self, index, size)
    }
    fn audit_consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>, mamori_audit::Error> {
        SqlStore::audit_consistency_proof(self, old, new)
    }
    fn audit_root(&self, size: u64) -> Result<Hash, mamori_audit::Error> {
        SqlStore::audit_root(self, size)
    }
    fn durability_stats(&self) -> (u64, u64) {
        SqlStore::durability_stats(self)
    }
    fn audit_stats(&self) -> mamori_store_sql::AuditStats {
        SqlStore::audit_stats(self)
    }
    fn size_bytes(&self) -> Result<u64, Error> {
        SqlStore::size_bytes(self)
    }
    fn shared_flag(&self, name: &str, first: &str) -> Result<String, Error> {
        SqlStore::flag_init(self, name, first)
    }
    fn dump(
        &self,
        out: &mut dyn std::io::Write,
        progress: &mut dyn FnMut(u64),
    ) -> Result<mamori_store_sql::dump::DumpSummary, Error> {
        SqlStore::dump(self, out, progress)
    }
    fn load(
        &self,
        input: &mut dyn std::io::Read,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Vec<mamori_store_sql::dump::TableSum>, Error> {
        SqlStore::load(self, input, progress)
    }
    fn revoke_everything(&self) -> Result<(u64, u64), Error> {
        SqlStore::revoke_everything(self)
    }
    fn is_empty_store(&self) -> Result<bool, Error> {
        SqlStore::is_empty(self)
    }
    fn restore_incomplete(&self) -> Result<bool, Error> {
        SqlStore::restore_incomplete(self)
    }
    fn rewind(&self, micros: i64) -> Result<u64, Error> {
        SqlStore::rewind(self, micros)
    }
    fn set_audit_stamp(&self, stamp: mamori_store_sql::AuditStamp) {
        SqlStore::set_audit_stamp(self, stamp);
    }
}

/// Opens the store: PostgreSQL when `database` is a `postgres://` (or `postgresql://`) URL,
/// else the embedded store in `dir`. The store stamps audit entries and checkpoints by `clock`,
/// the node's one clock.
pub fn open(
    dir: &Path,
    database: Option<&str>,
    clock: Arc<dyn Clock>,
) -> Result<Arc<dyn Backend>, crate::node::NodeError> {
    use crate::node::NodeError;
    match database.map(str::trim).filter(|d| !d.is_empty()) {
        None => Ok(Arc::new(mamori_store_sqlite::open(dir, clock).map_err(|source| NodeError::Store {
            what: format!("cannot open the store in `{}`", dir.display()),
            source,
        })?)),
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => Ok(Arc::new(
            mamori_store_postgres::open(url, clock)
                .map_err(|source| NodeError::Store { what: "cannot open the database".into(), source })?,
        )),
        Some(other) => Err(NodeError::Usage(format!(
            "--database must be a postgres:// URL (got `{}`); without it the embedded store in the data directory is used",
            other.chars().take(40).collect::<String>()
        ))),
    }
}
