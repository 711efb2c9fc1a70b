//! The embedded store: SQLite in WAL mode, one file under the data directory, no set-up — the
//! SQLite adapter of [`mamori_store_sql`], which holds every table, query and rule. What is
//! SQLite's own stays here: the connections (one writer, a few readers, one for long scans), the
//! writer thread that commits concurrent record writes together (group commit, `writer.rs`), the
//! group fsync every write waits for (`durability.rs`) and the WAL checkpointer.
//!
//! Several processes may open the same file (the server and the CLI); SQLite's locking
//! serialises writers and `busy_timeout` makes them wait rather than fail.

mod durability;
mod writer;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use mamori_records::{Clock, RecordError};
use mamori_store_sql::{Conn, Db, Dialect, Row, SqlStore, Value};
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OpenFlags, TransactionBehavior};

/// The embedded store.
pub type SqliteStore = SqlStore<SqliteDb>;

/// What failed inside this adapter; callers see [`mamori_store_sql::Error`], classified.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// SQLite failed.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A lock was poisoned by a panic in another thread.
    #[error("store lock poisoned")]
    Poisoned,
    /// The write-ahead log could not be made durable.
    #[error("fsync failed: {0}")]
    Sync(#[from] std::io::Error),
    /// The group-committed batch a write was part of failed to commit.
    #[error("the batch of writes this one was part of failed: {0}")]
    Batch(String),
}

impl Error {
    /// What kind of store failure this is, for the edge: busy and unavailable are answered with
    /// 503 and `Retry-After`, the rest with 500.
    fn kind(&self) -> fn(String) -> mamori_records::StoreError {
        use mamori_records::StoreError as K;
        match self {
            Error::Sqlite(e) => sqlite_kind(e),
            // The lock, fsync or the shared commit failed: the write was not made.
            Error::Poisoned | Error::Sync(_) | Error::Batch(_) => K::Unavailable,
        }
    }
}

impl From<Error> for mamori_store_sql::Error {
    fn from(e: Error) -> Self {
        mamori_store_sql::Error::Store(e.kind()(e.to_string()))
    }
}

fn db(e: rusqlite::Error) -> mamori_store_sql::Error {
    Error::Sqlite(e).into()
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

/// Brings a store made before `mamori_schema` existed to the columns the first migration step
/// expects (additive only); the step itself then finds every table present.
fn upgrade_legacy(c: &Connection) -> Result<(), Error> {
    let has_table = |name: &str| -> Result<bool, Error> {
        Ok(c.query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1)",
            [name],
            |r| r.get(0),
        )?)
    };
    if !has_table("versions")? || has_table("mamori_schema")? {
        return Ok(());
    }
    // Versions written before access rights (issue #5) have no stored classes; the enforcement
    // point then reads them from the version's own meta.security.
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
        if has_table(table)? && !present {
            c.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {decl}"))?;
        }
    }
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

/// The SQLite database: its connections, writer thread and durability.
pub struct SqliteDb {
    /// Ends the checkpointer thread when the store goes.
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    durability: std::sync::Arc<durability::Durability>,
    writer: std::sync::Arc<writer::Writer>,
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
    /// Long scans (audit integration), with a small page cache of their own: on the shared
    /// readers, integrating an import's backlog filled every reader's cache (+80 MB RSS).
    scan: Mutex<Connection>,
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
    // Prepared statements kept per connection (rusqlite keeps 16): a search's statement depends
    // on its shape, and a merge by value's on how many values it merges (a power of two); each
    // one prepared anew costs from ~0.1 ms to a few ms (hundreds of merged index ranges).
    c.set_prepared_statement_cache_capacity(64);
    // The query planner's stability guarantee: a statement's plan never depends on the values
    // bound to it. Without it, SQLite prepares a statement with a `LIKE ?` again whenever the
    // pattern bound changes (in case the pattern's prefix could use an index — never here: every
    // `LIKE` is `%v%`), so a cached `:contains` statement was parsed and planned anew on every
    // request (a seventh of a dense `name:contains=` under load; the plans are the same).
    c.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
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

impl Drop for SqliteDb {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Opens (creating if needed) the store file `mamori.db` in `dir` and brings its schema up to
/// date; the store reads time from `clock`.
pub fn open(dir: &Path, clock: std::sync::Arc<dyn Clock>) -> Result<SqliteStore, mamori_store_sql::Error> {
    Ok(SqlStore::new(SqliteDb::open(dir, &*clock)?, clock))
}

impl SqliteDb {
    fn open(dir: &Path, clock: &dyn Clock) -> Result<SqliteDb, Error> {
        let path = dir.join("mamori.db");
        let writer = open_conn(&path, false)?;
        writer.pragma_update(None, "journal_mode", "WAL")?;
        // The checkpointer thread below copies the WAL into the database beside the writer, so
        // the commit that crosses ~40 MB of WAL (10,000 pages) finds most of it copied already and
        // only finishes the rest, instead of copying and fsyncing it all while holding the writer
        // (BENCHMARKS.md, issue #9). That finishing checkpoint is still needed: only a checkpoint
        // that completes lets the next write start the WAL from its beginning.
        writer.pragma_update(None, "wal_autocheckpoint", 10_000)?;
        // After a burst, the WAL file is cut back to 64 MiB when it restarts.
        writer.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)?;
        {
            let tx = rusqlite::Transaction::new_unchecked(&writer, TransactionBehavior::Immediate)?;
            upgrade_legacy(&tx)?;
            mamori_store_sql::schema::migrate(&mut SqliteConn(&tx), clock.now().0)
                .map_err(|e| Error::Batch(format!("schema migration failed: {e}")))?;
            tx.commit()?;
        }
        // SAVEPOINT sub-journals stay in memory up to 256 MiB (SQLITE_STMTJRNL_SPILL, set for the
        // bundled SQLite in .cargo/config.toml) and spill to a temporary file beyond (#9).
        let durability = std::sync::Arc::new(durability::Durability::open(dir, &path)?);
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            readers.push(Mutex::new(open_conn(&path, true)?));
        }
        let scan = open_conn(&path, true)?;
        scan.pragma_update(None, "cache_size", -2048)?;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        checkpointer(&path, stop.clone())?;
        Ok(SqliteDb {
            stop,
            writer: std::sync::Arc::new(writer::Writer::new(writer, durability.clone())?),
            durability,
            readers,
            next_reader: AtomicUsize::new(0),
            scan: Mutex::new(scan),
            path,
        })
    }

    /// Releases the writer after a commit and returns once everything committed so far is
    /// durable. Releasing first lets others commit meanwhile and share the fsync.
    /// INVARIANT: writes are acknowledged only after this (or the group-commit writer's wait).
    fn release_durably(&self, conn: MutexGuard<'_, Connection>) -> Result<(), Error> {
        let ticket = self.durability.committed();
        drop(conn);
        self.durability.wait(ticket)
    }

    fn reader(&self) -> Result<MutexGuard<'_, Connection>, Error> {
        // Each thread keeps to one reader (its "home", handed out in turn) while it is free: after
        // any commit — and every audited read commits its entry — a connection begins its next
        // read with an empty page cache, so a request's lookups (token, client, record) spread
        // over the readers each re-read their b-tree pages from the file, while on one connection
        // only the first does (#29: a third of a read's lookup time was those page copies).
        thread_local!(static HOME: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) });
        let start = HOME.with(|h| {
            h.get().unwrap_or_else(|| {
                let home = self.next_reader.fetch_add(1, Ordering::Relaxed);
                h.set(Some(home));
                home
            })
        });
        for i in 0..self.readers.len() {
            if let Some(m) = self.readers.get((start + i) % self.readers.len())
                && let Ok(g) = m.try_lock()
            {
                return Ok(g);
            }
        }
        self.readers.get(start % self.readers.len()).ok_or(Error::Poisoned)?.lock().map_err(|_| Error::Poisoned)
    }

    fn read_on<T, E: From<mamori_store_sql::Error>>(
        conn: &Connection,
        f: impl FnOnce(&mut dyn Conn) -> Result<T, E>,
    ) -> Result<T, E> {
        let tx = rusqlite::Transaction::new_unchecked(conn, TransactionBehavior::Deferred).map_err(db)?;
        let r = f(&mut SqliteConn(&tx))?;
        tx.finish().map_err(db)?;
        Ok(r)
    }
}

impl Db for SqliteDb {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    fn durability_stats(&self) -> (u64, u64) {
        (self.durability.commits(), self.durability.fsyncs())
    }

    fn read<T, E: From<mamori_store_sql::Error>>(&self, f: impl FnOnce(&mut dyn Conn) -> Result<T, E>) -> Result<T, E> {
        let conn = self.reader().map_err(mamori_store_sql::Error::from)?;
        Self::read_on(&conn, f)
    }

    fn read_statement<T, E: From<mamori_store_sql::Error>>(
        &self,
        f: impl FnOnce(&mut dyn Conn) -> Result<T, E>,
    ) -> Result<T, E> {
        let conn = self.reader().map_err(mamori_store_sql::Error::from)?;
        f(&mut SqliteConn(&conn))
    }

    /// One statement in autocommit mode on the writer (no `BEGIN`/`COMMIT` around it), then
    /// durable.
    fn exec(&self, sql: &str, params: &[Value<'_>]) -> Result<u64, mamori_store_sql::Error> {
        let conn = self.writer.lock()?;
        let n = SqliteConn(&conn).execute(sql, params)?;
        self.release_durably(conn)?;
        Ok(n)
    }

    fn read_scan<T, E: From<mamori_store_sql::Error>>(
        &self,
        f: impl FnOnce(&mut dyn Conn) -> Result<T, E>,
    ) -> Result<T, E> {
        let conn = self.scan.lock().map_err(|_| mamori_store_sql::Error::from(Error::Poisoned))?;
        Self::read_on(&conn, f)
    }

    fn write<T, E: From<mamori_store_sql::Error>>(
        &self,
        f: impl FnOnce(&mut dyn Conn) -> Result<T, E>,
    ) -> Result<T, E> {
        let conn = self.writer.lock().map_err(mamori_store_sql::Error::from)?;
        let tx = rusqlite::Transaction::new_unchecked(&conn, TransactionBehavior::Immediate).map_err(db)?;
        // Dropped without commit on failure: rolled back.
        let r = f(&mut SqliteConn(&tx))?;
        tx.commit().map_err(db)?;
        self.release_durably(conn).map_err(mamori_store_sql::Error::from)?;
        Ok(r)
    }

    fn write_records(
        &self,
        f: &mut (dyn FnMut(&mut dyn Conn) -> Result<(), RecordError> + Send),
    ) -> Result<(), RecordError> {
        // Group commit: concurrent writes share one transaction and one fsync (writer.rs).
        self.writer.write(&mut |c| f(&mut SqliteConn(c)), |e| mamori_store_sql::Error::from(e).into())
    }
}

/// A connection inside a transaction.
struct SqliteConn<'c>(&'c Connection);

/// A neutral value bound as SQLite's own, borrowing its data.
struct Bind<'v, 'a>(&'v Value<'a>);

impl rusqlite::ToSql for Bind<'_, '_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self.0 {
            Value::Null => ValueRef::Null,
            Value::Int(i) => ValueRef::Integer(*i),
            Value::Real(r) => ValueRef::Real(*r),
            Value::Text(t) => ValueRef::Text(t.as_bytes()),
            Value::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

fn value_of(v: ValueRef<'_>) -> Result<Value<'static>, mamori_store_sql::Error> {
    Ok(match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Int(i),
        ValueRef::Real(r) => Value::Real(r),
        ValueRef::Text(t) => Value::Text(std::borrow::Cow::Owned(
            String::from_utf8(t.to_vec()).map_err(mamori_store_sql::Error::corrupt)?,
        )),
        ValueRef::Blob(b) => Value::Blob(std::borrow::Cow::Owned(b.to_vec())),
    })
}

impl Conn for SqliteConn<'_> {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn query(&mut self, sql: &str, params: &[Value<'_>]) -> Result<Vec<Row>, mamori_store_sql::Error> {
        let mut st = self.0.prepare_cached(sql).map_err(db)?;
        let n = st.column_count();
        let mut rows = st.query(rusqlite::params_from_iter(params.iter().map(Bind))).map_err(db)?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(db)? {
            let mut row = Vec::with_capacity(n);
            for i in 0..n {
                row.push(value_of(r.get_ref(i).map_err(db)?)?);
            }
            out.push(Row(row));
        }
        Ok(out)
    }

    fn execute(&mut self, sql: &str, params: &[Value<'_>]) -> Result<u64, mamori_store_sql::Error> {
        let n = self
            .0
            .prepare_cached(sql)
            .map_err(db)?
            .execute(rusqlite::params_from_iter(params.iter().map(Bind)))
            .map_err(db)?;
        Ok(n as u64)
    }

    fn batch(&mut self, sql: &str) -> Result<(), mamori_store_sql::Error> {
        self.0.execute_batch(sql).map_err(db)
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod integration_tests {
    use mamori_audit::integrate::{TreeStore, next_step};
    use mamori_audit::merkle;
    use mamori_audit::note::{Checkpoint, NoteSigner, NoteVerifier};
    use mamori_audit::{AuditActor, AuditLog, AuditRecord, Hash, Outcome};

    fn record(i: u64) -> AuditRecord {
        AuditRecord {
            resources: vec![format!("Patient/p{i}")],
            status: Some(200),
            ..AuditRecord::new(
                "read",
                AuditActor {
                    client_id: None,
                    fhir_user: None,
                    id: format!("user-{i}"),
                    kind: mamori_audit::ActorKind::User,
                },
                Outcome::Success,
                "TREAT",
            )
        }
    }

    fn root_of_entries(store: &super::SqliteStore, n: u64) -> Hash {
        let leaves: Vec<Hash> = store.entries(0, n).unwrap().iter().map(|e| merkle::leaf_hash(e)).collect();
        assert_eq!(leaves.len() as u64, n);
        merkle::root_of(&leaves)
    }

    /// The one integrator on the embedded store: steps with their own checkpoints, computed on a
    /// read snapshot; a step overtaken by another integration is refused and changes nothing.
    #[test]
    fn integration_runs_in_steps_and_a_stale_step_is_not_stored() {
        let dir = tempfile::tempdir().unwrap();
        let store = super::open(dir.path(), std::sync::Arc::new(mamori_records::SystemClock)).unwrap();
        let signer = NoteSigner::new("test.local/audit", &[7; 32]).unwrap();
        let verifier = NoteVerifier::parse(&signer.verifier_key()).unwrap();
        store.append((0..250).map(record).collect()).unwrap();

        let note = store.integrate_in_steps(&signer, "test.local/audit", 100).unwrap().expect("the log grew");
        let cp = Checkpoint::parse(verifier.verify(&note).unwrap()).unwrap();
        assert_eq!((cp.size, cp.root), (250, root_of_entries(&store, 250)));
        let sizes: Vec<u64> = store
            .checkpoints()
            .unwrap()
            .iter()
            .map(|n| Checkpoint::parse(verifier.verify(n).unwrap()).unwrap().size)
            .collect();
        assert_eq!(sizes, [100, 200, 250]);
        assert_eq!(store.audit_integrated_size().unwrap(), 250);
        assert_eq!(store.integrate(&signer, "test.local/audit").unwrap(), None, "nothing new");

        store.append((250..260).map(record).collect()).unwrap();
        let stale = store.snapshot(|r| next_step(r, &signer, "test.local/audit", 100)).unwrap().unwrap();
        assert_eq!((stale.from, stale.size), (250, 260));
        store.integrate(&signer, "test.local/audit").unwrap().unwrap();
        assert!(!store.store_step(&stale).unwrap());
        assert_eq!(store.audit_integrated_size().unwrap(), 260);
        assert_eq!(store.checkpoints().unwrap().len(), 4);

        let root = root_of_entries(&store, 260);
        assert_eq!(store.audit_root(260).unwrap(), root);
        let leaf = merkle::leaf_hash(&store.entries(122, 1).unwrap()[0]);
        let proof = store.audit_inclusion_proof(122, 260).unwrap();
        merkle::verify_inclusion(&leaf, 122, 260, &proof, &root).unwrap();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod substring_tests {
    use rusqlite::Connection;

    /// The substring dictionary (schema step 5, #29) follows the value tables whoever writes them:
    /// a value enters with its first row, stays while any row holds it, and leaves — from the
    /// trigram index too — with its last; values under three characters never enter.
    #[test]
    fn the_substring_dictionary_follows_the_value_rows() {
        let dir = tempfile::tempdir().unwrap();
        drop(super::open(dir.path(), std::sync::Arc::new(mamori_records::SystemClock)).unwrap());
        let c = Connection::open(dir.path().join("mamori.db")).unwrap();
        let string = |id: &str, norm: &str| {
            c.execute(
                "INSERT INTO sp_string (type, id, param, norm, exact) VALUES ('Patient', ?1, 'family', ?2, ?2)",
                [id, norm],
            )
            .unwrap();
        };
        let entries = |norm: &str| -> i64 {
            c.query_row("SELECT COUNT(*) FROM sp_text WHERE norm = ?1", [norm], |r| r.get(0)).unwrap()
        };
        let found = |needle: &str| -> i64 {
            c.query_row("SELECT COUNT(*) FROM sp_text_fts WHERE sp_text_fts MATCH ?1", [format!("\"{needle}\"")], |r| {
                r.get(0)
            })
            .unwrap()
        };
        string("a", "やまだ");
        string("b", "やまだ");
        string("c", "山田");
        c.execute(
            "INSERT INTO sp_token (type, id, param, system, code, text) VALUES ('Observation', 'o', 'code', 's', 'c', 'へもぐろびん')",
            [],
        )
        .unwrap();
        assert_eq!((entries("やまだ"), entries("山田"), entries("へもぐろびん")), (1, 0, 1));
        assert_eq!((found("まだ"), found("やまだ"), found("ぐろび")), (0, 1, 1), "a trigram needs three characters");
        c.execute("DELETE FROM sp_string WHERE id = 'a'", []).unwrap();
        assert_eq!((entries("やまだ"), found("やまだ")), (1, 1), "b still holds it");
        c.execute("DELETE FROM sp_string WHERE id = 'b'", []).unwrap();
        c.execute("DELETE FROM sp_token WHERE id = 'o'", []).unwrap();
        assert_eq!((entries("やまだ"), found("やまだ"), entries("へもぐろびん"), found("ぐろび")), (0, 0, 0, 0));
        let left: i64 = c.query_row("SELECT COUNT(*) FROM sp_text", [], |r| r.get(0)).unwrap();
        assert_eq!(left, 0);
    }
}
