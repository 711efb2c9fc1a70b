//! The embedded store: SQLite in WAL mode with `synchronous=FULL`, one file under the data
//! directory, no set-up. Implements the record store, the OAuth store and the single path for
//! security-configuration changes (versioned, attributed).
//!
//! Several processes may open the same file (the server and the CLI); SQLite's locking
//! serialises writers and `busy_timeout` makes them wait rather than fail.

mod audit;
mod config;
mod durability;
mod identity;
mod oauth;
mod records;
mod writer;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, OpenFlags};

pub use audit::{Job as AuditJob, writer_loop as audit_writer_loop};
pub use config::{ConfigChange, ConfigEntry, WORKFLOW_KINDS, decode, decode_all, table_of};

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// SQLite failed.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A stored value did not decode.
    #[error("corrupt stored value: {0}")]
    Corrupt(String),
    /// A lock was poisoned by a panic in another thread.
    #[error("store lock poisoned")]
    Poisoned,
    /// The write-ahead log could not be made durable.
    #[error("fsync failed: {0}")]
    Sync(#[from] std::io::Error),
    /// The group-committed batch a write was part of failed to commit.
    #[error("the batch of writes this one was part of failed: {0}")]
    Batch(String),
    /// A configuration change based on a version that is no longer the newest.
    #[error("{kind} `{key}` changed concurrently (now at version {current}); reload and retry")]
    Stale {
        /// The configuration kind.
        kind: String,
        /// The entry.
        key: String,
        /// Its newest version now.
        current: u64,
    },
}

impl Error {
    /// What kind of store failure this is, for the edge: busy and unavailable are answered with
    /// 503 and `Retry-After`, the rest with 500.
    pub fn kind(&self) -> fn(String) -> mamori_records::StoreError {
        use mamori_records::StoreError as K;
        match self {
            Error::Sqlite(e) => sqlite_kind(e),
            Error::Corrupt(_) => K::Corrupt,
            // The lock, fsync or the shared commit failed: the write was not made.
            Error::Poisoned | Error::Sync(_) | Error::Batch(_) => K::Unavailable,
            Error::Stale { .. } => K::Other,
        }
    }

    /// Whether this is a configuration change refused because its entry changed meanwhile.
    pub fn is_stale(&self) -> bool {
        matches!(self, Error::Stale { .. })
    }
}

/// The kind of a SQLite failure: locked (another process holds the database past the busy
/// timeout) is busy; I/O, a full disk, a read-only file are unavailable; a damaged file corrupt.
pub(crate) fn sqlite_kind(e: &rusqlite::Error) -> fn(String) -> mamori_records::StoreError {
    use mamori_records::StoreError as K;
    use rusqlite::ErrorCode as C;
    match e {
        rusqlite::Error::SqliteFailure(f, _) => match f.code {
            C::DatabaseBusy | C::DatabaseLocked => K::Busy,
            C::DatabaseCorrupt | C::NotADatabase => K::Corrupt,
            C::DiskFull | C::CannotOpen | C::SystemIoFailure | C::ReadOnly | C::OutOfMemory => K::Unavailable,
            _ => K::Other,
        },
        _ => K::Other,
    }
}

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS versions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    type TEXT NOT NULL,
    id TEXT NOT NULL,
    version INTEGER NOT NULL,
    last_updated INTEGER NOT NULL,
    method TEXT NOT NULL,
    body TEXT,
    sha256 BLOB NOT NULL,
    entered_by TEXT NOT NULL,
    pending_author TEXT,
    server_written INTEGER NOT NULL DEFAULT 0,
    patient TEXT,
    classes TEXT NOT NULL DEFAULT '',
    lab INTEGER NOT NULL DEFAULT 0,
    UNIQUE (type, id, version)
);
CREATE INDEX IF NOT EXISTS versions_by_time ON versions (last_updated);
CREATE INDEX IF NOT EXISTS versions_by_type ON versions (type, seq);
CREATE TABLE IF NOT EXISTS resources (
    type TEXT NOT NULL,
    id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (type, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS identifier_index (
    type TEXT NOT NULL,
    id TEXT NOT NULL,
    system TEXT NOT NULL,
    value TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS identifier_lookup ON identifier_index (type, value, system);
CREATE INDEX IF NOT EXISTS identifier_owner ON identifier_index (type, id);
-- Care relationships (Z3) from the current versions of CareTeam, Encounter and Patient.
CREATE TABLE IF NOT EXISTS care_index (
    type TEXT NOT NULL,
    id TEXT NOT NULL,
    patient TEXT NOT NULL,
    member TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS care_lookup ON care_index (patient, member);
CREATE INDEX IF NOT EXISTS care_owner ON care_index (type, id);
-- Break-glass grants (Z5) and their review.
CREATE TABLE IF NOT EXISTS break_glass (
    id TEXT PRIMARY KEY,
    username TEXT NOT NULL,
    patient TEXT NOT NULL,
    reason TEXT NOT NULL,
    granted INTEGER NOT NULL,
    expires INTEGER NOT NULL,
    reviewed_at INTEGER,
    reviewed_by TEXT,
    review_note TEXT
);
CREATE INDEX IF NOT EXISTS break_glass_lookup ON break_glass (username, patient, expires);
CREATE TABLE IF NOT EXISTS sp_string (type TEXT NOT NULL, id TEXT NOT NULL, param TEXT NOT NULL, norm TEXT NOT NULL, exact TEXT NOT NULL,
    PRIMARY KEY (type, id, param, norm, exact)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS sp_string_value ON sp_string (type, param, norm);
CREATE TABLE IF NOT EXISTS sp_token (type TEXT NOT NULL, id TEXT NOT NULL, param TEXT NOT NULL, system TEXT NOT NULL, code TEXT NOT NULL, text TEXT NOT NULL,
    PRIMARY KEY (type, id, param, code, system, text)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS sp_token_value ON sp_token (type, param, code, system);
CREATE TABLE IF NOT EXISTS sp_date (type TEXT NOT NULL, id TEXT NOT NULL, param TEXT NOT NULL, lo INTEGER NOT NULL, hi INTEGER NOT NULL,
    PRIMARY KEY (type, id, param, lo, hi)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS sp_date_value ON sp_date (type, param, lo);
CREATE TABLE IF NOT EXISTS sp_number (type TEXT NOT NULL, id TEXT NOT NULL, param TEXT NOT NULL, lo REAL NOT NULL, hi REAL NOT NULL, system TEXT NOT NULL, code TEXT NOT NULL,
    PRIMARY KEY (type, id, param, lo, hi, system, code)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS sp_number_value ON sp_number (type, param, lo);
CREATE TABLE IF NOT EXISTS sp_ref (type TEXT NOT NULL, id TEXT NOT NULL, param TEXT NOT NULL, target_type TEXT NOT NULL, target_id TEXT NOT NULL, url TEXT NOT NULL,
    PRIMARY KEY (type, id, param, target_type, target_id, url)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS sp_ref_value ON sp_ref (type, param, target_id, target_type);
CREATE TABLE IF NOT EXISTS sp_composite (type TEXT NOT NULL, id TEXT NOT NULL, param TEXT NOT NULL, system TEXT NOT NULL, code TEXT NOT NULL, s_system TEXT NOT NULL, s_code TEXT NOT NULL, lo NUMERIC, hi NUMERIC);
CREATE INDEX IF NOT EXISTS sp_composite_value ON sp_composite (type, param, code, system);
CREATE INDEX IF NOT EXISTS sp_composite_owner ON sp_composite (type, id, param);
CREATE TABLE IF NOT EXISTS store_flags (name TEXT PRIMARY KEY, value TEXT NOT NULL);
-- Versions are immutable (真正性): no UPDATE ever, DELETE only inside a purge.
CREATE TRIGGER IF NOT EXISTS versions_no_update BEFORE UPDATE ON versions
BEGIN SELECT RAISE(ABORT, 'versions are immutable'); END;
CREATE TRIGGER IF NOT EXISTS versions_no_delete BEFORE DELETE ON versions
WHEN (SELECT value FROM store_flags WHERE name = 'purge') IS NULL
BEGIN SELECT RAISE(ABORT, 'versions are removed only by a purge'); END;
CREATE TABLE IF NOT EXISTS config_versions (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    version INTEGER NOT NULL,
    value TEXT,
    changed_by TEXT NOT NULL,
    changed_at INTEGER NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (kind, key, version)
);
CREATE TRIGGER IF NOT EXISTS config_no_update BEFORE UPDATE ON config_versions
BEGIN SELECT RAISE(ABORT, 'configuration history is append-only'); END;
CREATE TRIGGER IF NOT EXISTS config_no_delete BEFORE DELETE ON config_versions
BEGIN SELECT RAISE(ABORT, 'configuration history is append-only'); END;
-- Workflow state (access-review campaigns): versioned and audited like configuration, but not
-- configuration (config::WORKFLOW_KINDS).
CREATE TABLE IF NOT EXISTS workflow_versions (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    version INTEGER NOT NULL,
    value TEXT,
    changed_by TEXT NOT NULL,
    changed_at INTEGER NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (kind, key, version)
);
CREATE TRIGGER IF NOT EXISTS workflow_no_update BEFORE UPDATE ON workflow_versions
BEGIN SELECT RAISE(ABORT, 'workflow history is append-only'); END;
CREATE TRIGGER IF NOT EXISTS workflow_no_delete BEFORE DELETE ON workflow_versions
BEGIN SELECT RAISE(ABORT, 'workflow history is append-only'); END;
CREATE TABLE IF NOT EXISTS access_tokens (
    sha256 BLOB PRIMARY KEY,
    client_id TEXT NOT NULL,
    subject TEXT,
    fhir_user TEXT,
    scope TEXT NOT NULL,
    issued_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0,
    patient TEXT
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS access_tokens_by_client ON access_tokens (client_id);
-- private_key_jwt replay cache: each assertion's jti once per client, until it expires.
CREATE TABLE IF NOT EXISTS client_assertions (
    client_id TEXT NOT NULL,
    jti TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (client_id, jti)
) WITHOUT ROWID;
-- Authorization codes (by hash; JSON record), kept after use until expiry so a replay is seen.
CREATE TABLE IF NOT EXISTS auth_codes (
    sha256 BLOB PRIMARY KEY,
    data TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    used INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
-- Refresh tokens (by hash), rotated on use; `family` ties them to the access tokens of one
-- authorization so reuse revokes them all.
CREATE TABLE IF NOT EXISTS refresh_tokens (
    sha256 BLOB PRIMARY KEY,
    family TEXT NOT NULL,
    client_id TEXT NOT NULL,
    subject TEXT NOT NULL,
    fhir_user TEXT,
    scope TEXT NOT NULL,
    patient TEXT,
    issued_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used INTEGER NOT NULL DEFAULT 0,
    revoked INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS refresh_by_family ON refresh_tokens (family);
CREATE INDEX IF NOT EXISTS refresh_by_subject ON refresh_tokens (subject);
-- The audit trail (L2/L3): append-only entries; leaf index = idx - 1.
CREATE TABLE IF NOT EXISTS audit_entries (
    idx INTEGER PRIMARY KEY,
    time INTEGER NOT NULL,
    entry BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_by_time ON audit_entries (time);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit_entries
BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit_entries
BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
CREATE TABLE IF NOT EXISTS audit_tiles (
    level INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    hashes BLOB NOT NULL,
    PRIMARY KEY (level, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS audit_checkpoints (
    size INTEGER PRIMARY KEY,
    created INTEGER NOT NULL,
    note TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit_state (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
-- Identity: credentials (Argon2id hashes, sealed TOTP seeds) and lockout counters. Account
-- definitions live in config_versions (kind 'account').
CREATE TABLE IF NOT EXISTS credentials (username TEXT PRIMARY KEY, data TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS auth_state (
    username TEXT PRIMARY KEY,
    data TEXT NOT NULL,
    last_login INTEGER
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS access_tokens_by_subject ON access_tokens (subject);
CREATE TABLE IF NOT EXISTS sessions (id TEXT PRIMARY KEY, username TEXT NOT NULL, data TEXT NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS sessions_by_user ON sessions (username);
"#;

/// Brings a store made by an earlier version up to the current schema. Additive only.
fn migrate(c: &Connection) -> Result<(), Error> {
    // Versions written before access rights (issue #5) have no stored classes; the enforcement
    // point then reads them from the version's own meta.security (`mamori_http::record_target`).
    for (table, column, decl) in [
        ("versions", "classes", "TEXT NOT NULL DEFAULT ''"),
        ("versions", "lab", "INTEGER NOT NULL DEFAULT 0"),
        ("access_tokens", "patient", "TEXT"),
        ("access_tokens", "family", "TEXT"),
    ] {
        let present: bool = c.query_row(
            "SELECT EXISTS (SELECT 1 FROM pragma_table_info(?1) WHERE name = ?2)",
            rusqlite::params![table, column],
            |r| r.get(0),
        )?;
        if !present {
            c.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {decl}"))?;
        }
    }
    c.execute_batch("CREATE INDEX IF NOT EXISTS access_tokens_by_family ON access_tokens (family)")?;
    // Campaigns were kept among configuration versions before they had a table of their own:
    // their versions are copied over (once; the old rows stay, as history, and are no longer read).
    c.execute_batch(
        "INSERT OR IGNORE INTO workflow_versions (kind, key, version, value, changed_by, changed_at, reason)
         SELECT kind, key, version, value, changed_by, changed_at, reason FROM config_versions WHERE kind = 'access-review'",
    )?;
    Ok(())
}

const READERS: usize = 4;

/// Checkpoints the WAL into the database from a thread of its own, on a connection of its own:
/// `PASSIVE`, so it never takes the writer lock nor waits for readers — it copies what it can
/// and the next pass (or the writer's own checkpoint at 10,000 pages) copies the rest. Every
/// 25 ms while the WAL changes, every 250 ms when it does not; the writer's own checkpoint keeps
/// the WAL short enough that frequent passes stay cheap (figures in BENCHMARKS.md, issue #9).
fn checkpointer(path: &Path, stop: std::sync::Arc<std::sync::atomic::AtomicBool>) -> Result<(), Error> {
    let conn = open_conn(path, false)?;
    std::thread::Builder::new().name("mamori-checkpoint".into()).spawn(move || {
        let mut last = (0, 0);
        while !stop.load(Ordering::Relaxed) {
            let r = conn
                .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?)));
            let now = r.unwrap_or_else(|e| {
                tracing::warn!(error = %e, "WAL checkpoint failed; retrying");
                last
            });
            // While the WAL grows, every 25 ms: the writer's own checkpoint, when a commit crosses
            // the WAL limit, then has at most ~25 ms of frames left to copy (at 250 ms it copied
            // up to a quarter-second's worth, 2-10 ms holding the writer, under a read load:
            // the audited reads' p99, issue #9). Idle, every 250 ms.
            let pause = if now != last { 25 } else { 250 };
            last = now;
            std::thread::sleep(std::time::Duration::from_millis(pause));
        }
    })?;
    Ok(())
}

/// The SQLite store.
pub struct SqliteStore {
    /// Ends the checkpointer thread when the store goes.
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    durability: std::sync::Arc<durability::Durability>,
    audit_tx: std::sync::OnceLock<std::sync::mpsc::Sender<audit::Job>>,
    writer: std::sync::Arc<writer::Writer>,
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
    /// The audit integrator's reads (entries, tiles), with a small page cache of its own: on the
    /// shared readers, integrating an import's backlog filled every reader's cache (+80 MB RSS).
    integration: Mutex<Connection>,
    path: std::path::PathBuf,
}

fn open_conn(path: &Path, read_only: bool) -> Result<Connection, Error> {
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let c = Connection::open_with_flags(path, flags)?;
    c.busy_timeout(std::time::Duration::from_secs(10))?;
    // NORMAL: commits do not fsync; durability comes from the group fsync of the WAL that every
    // write waits for (see durability.rs) — one fsync per batch of commits, not per commit.
    c.pragma_update(None, "synchronous", "NORMAL")?;
    c.pragma_update(None, "foreign_keys", "ON")?;
    // Page cache (negative = KiB): the writer's holds the index pages every write touches (each
    // version updates several search-index b-trees), each reader's the hot pages of searches.
    // Together at most 32 + 4 × 16 MiB.
    c.pragma_update(
        None,
        "cache_size",
        std::env::var("MAMORI_CACHE").ok().and_then(|v| v.parse::<i64>().ok()).unwrap_or(if read_only {
            -16_384
        } else {
            -32_768
        }),
    )?;
    Ok(c)
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the store file `mamori.db` in `dir`.
    pub fn open(dir: &Path) -> Result<SqliteStore, Error> {
        let path = dir.join("mamori.db");
        let writer = open_conn(&path, false)?;
        writer.pragma_update(None, "journal_mode", "WAL")?;
        // The checkpointer thread below copies the WAL into the database beside the writer, so
        // the commit that crosses ~40 MB of WAL (10,000 pages) finds most of it copied already and
        // only finishes the rest, instead of copying and fsyncing it all while holding the writer
        // (BENCHMARKS.md, issue #9). That finishing checkpoint is still needed: only a checkpoint
        // that completes lets the next write start the WAL from its beginning; without it the
        // WAL grows as long as writes go on.
        writer.pragma_update(None, "wal_autocheckpoint", 10_000)?;
        // After a burst, the WAL file is cut back to 64 MiB when it restarts.
        writer.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)?;
        writer.execute_batch(SCHEMA)?;
        migrate(&writer)?;
        // SAVEPOINT sub-journals stay in memory up to 256 MiB (SQLITE_STMTJRNL_SPILL, set for the
        // bundled SQLite in .cargo/config.toml) and spill to a temporary file beyond: ordinary
        // group-committed writes never touch the file system for them, a whole-store reindex
        // cannot exhaust memory (#9).
        let durability = std::sync::Arc::new(durability::Durability::open(dir, &path)?);
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            readers.push(Mutex::new(open_conn(&path, true)?));
        }
        let integration = open_conn(&path, true)?;
        integration.pragma_update(None, "cache_size", -2048)?;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        checkpointer(&path, stop.clone())?;
        Ok(SqliteStore {
            stop,
            writer: std::sync::Arc::new(writer::Writer::new(writer, durability.clone())?),
            durability,
            audit_tx: std::sync::OnceLock::new(),
            readers,
            next_reader: AtomicUsize::new(0),
            integration: Mutex::new(integration),
            path,
        })
    }

    /// Releases the writer after a commit and returns once everything committed so far is
    /// durable. Releasing first lets others commit meanwhile and share the fsync.
    /// INVARIANT: writes are acknowledged only after this (or the audit writer thread's wait).
    fn release_durably(&self, conn: MutexGuard<'_, Connection>) -> Result<(), Error> {
        let ticket = self.durability.committed();
        drop(conn);
        self.durability.wait(ticket)
    }

    /// The writing connection with no transaction open (any open batch of record writes is
    /// committed first).
    fn writer(&self) -> Result<MutexGuard<'_, Connection>, Error> {
        self.writer.lock()
    }

    fn reader(&self) -> Result<MutexGuard<'_, Connection>, Error> {
        let start = self.next_reader.fetch_add(1, Ordering::Relaxed);
        for i in 0..self.readers.len() {
            if let Some(m) = self.readers.get((start + i) % self.readers.len())
                && let Ok(g) = m.try_lock()
            {
                return Ok(g);
            }
        }
        self.readers.get(start % self.readers.len()).ok_or(Error::Poisoned)?.lock().map_err(|_| Error::Poisoned)
    }

    /// `(commits, fsyncs)` since this store was opened: group commit makes the second smaller.
    pub fn durability_stats(&self) -> (u64, u64) {
        (self.durability.commits(), self.durability.fsyncs())
    }

    /// The store file.
    pub fn describe(&self) -> String {
        self.path.display().to_string()
    }

    /// Sets a named value if it is not set yet; returns the value now stored.
    pub fn flag_init(&self, name: &str, value: &str) -> Result<String, Error> {
        // Set once, read at every start: read first, take the writer (and an fsync) only the
        // first time.
        let set: Option<String> = {
            use rusqlite::OptionalExtension;
            self.reader()?
                .query_row("SELECT value FROM store_flags WHERE name = ?1", rusqlite::params![name], |r| r.get(0))
                .optional()?
        };
        if let Some(v) = set {
            return Ok(v);
        }
        let conn = self.writer()?;
        conn.execute(
            "INSERT INTO store_flags (name, value) VALUES (?1, ?2) ON CONFLICT (name) DO NOTHING",
            rusqlite::params![name, value],
        )?;
        let v: String =
            conn.query_row("SELECT value FROM store_flags WHERE name = ?1", rusqlite::params![name], |r| r.get(0))?;
        self.release_durably(conn)?;
        Ok(v)
    }

    /// A quick liveness check for `/healthz`.
    pub fn ping(&self) -> Result<(), Error> {
        self.reader()?.query_row("SELECT 1", [], |_| Ok(()))?;
        Ok(())
    }
}

#[cfg(test)]
mod error_kind_tests {
    use super::*;
    use mamori_records::StoreError;

    fn failure(code: i32) -> Error {
        Error::Sqlite(rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None))
    }

    /// A database locked by another process past the busy timeout is busy (503 and retry), a
    /// full disk unavailable, a damaged file corrupt; the failures of this crate by what they mean.
    #[test]
    fn sqlite_failures_have_their_kind() {
        let kind = |e: Error| e.kind()(String::new());
        assert_eq!(kind(failure(rusqlite::ffi::SQLITE_BUSY)), StoreError::Busy(String::new()));
        assert_eq!(kind(failure(rusqlite::ffi::SQLITE_LOCKED)), StoreError::Busy(String::new()));
        assert_eq!(kind(failure(rusqlite::ffi::SQLITE_FULL)), StoreError::Unavailable(String::new()));
        assert_eq!(kind(failure(rusqlite::ffi::SQLITE_IOERR)), StoreError::Unavailable(String::new()));
        assert_eq!(kind(failure(rusqlite::ffi::SQLITE_CORRUPT)), StoreError::Corrupt(String::new()));
        assert_eq!(kind(failure(rusqlite::ffi::SQLITE_CONSTRAINT)), StoreError::Other(String::new()));
        assert_eq!(kind(Error::Corrupt("x".into())), StoreError::Corrupt(String::new()));
        assert_eq!(kind(Error::Batch("x".into())), StoreError::Unavailable(String::new()));
    }

    /// And a real lock: another connection holds the database exclusively while the store's
    /// writer, with a short busy timeout, tries to write.
    #[test]
    fn a_locked_database_is_busy() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("t.db");
        let holder = Connection::open(&path)?;
        holder.execute_batch("CREATE TABLE t (x); BEGIN EXCLUSIVE; INSERT INTO t VALUES (1);")?;
        let other = Connection::open(&path)?;
        other.busy_timeout(std::time::Duration::from_millis(50))?;
        let e = other.execute("INSERT INTO t VALUES (2)", []).err().ok_or("the write should wait and fail")?;
        assert!(matches!(Error::Sqlite(e).kind()(String::new()), StoreError::Busy(_)));
        Ok(())
    }
}
