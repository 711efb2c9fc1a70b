//! The embedded store: SQLite in WAL mode, two files under the data directory, no set-up — the
//! SQLite adapter of [`mamori_store_sql`], which holds every table, query and rule. What is
//! SQLite's own stays here: the connections (one writer, a few readers, one for long scans), the
//! writer thread that commits concurrent record writes together (group commit, `writer.rs`), the
//! group fsync every write waits for (`durability.rs`) and the WAL checkpointer.
//!
//! `mamori.db` holds the records and everything else; `audit.db` the audit trail (schema step 9),
//! attached to every connection as `audit`, so that the entry every audited request commits does
//! not empty the other connections' page cache of `mamori.db` (SQLite empties a connection's
//! cache of a file whenever another connection has committed to it). Both belong together: a
//! copy of one without the other is not a store.
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
    let has_table = |name: &str| has_table(c, "main", name);
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

fn has_table(c: &Connection, schema: &str, name: &str) -> Result<bool, Error> {
    // `schema` is one of this file's two literal names.
    Ok(c.query_row(
        &format!("SELECT EXISTS (SELECT 1 FROM {schema}.sqlite_master WHERE type = 'table' AND name = ?1)"),
        [name],
        |r| r.get(0),
    )?)
}

/// Schema step 9's first half: copies the audit trail from `mamori.db` into `audit.db` and makes
/// the copy durable, so that the step that then drops it from `mamori.db` never loses an entry
/// (the two files commit separately). Runs again harmlessly: it copies what is not there yet.
/// A store past step 9 whose `audit.db` has no trail is refused: the trail was removed or
/// replaced, and starting a new one would hide that.
fn move_audit_trail(c: &Connection, dir: &Path, audit: &Path) -> Result<(), Error> {
    let tx = rusqlite::Transaction::new_unchecked(c, TransactionBehavior::Immediate)?;
    if !has_table(&tx, "main", "audit_entries")? {
        if !has_table(&tx, "audit", "audit_entries")? {
            return Err(Error::Batch(format!(
                "the audit trail (監査証跡) is missing: {} holds no trail, but the records in mamori.db were \
                 written beside one; restore audit.db from the copy mamori.db was taken with, or the \
                 whole store from a backup generation",
                audit.display()
            )));
        }
        return Ok(());
    }
    tx.execute_batch(&mamori_store_sql::schema::audit_trail_sqlite())?;
    tx.execute_batch(
        "INSERT INTO audit.audit_entries (idx, time, entry) SELECT idx, time, entry FROM main.audit_entries
             WHERE idx > (SELECT COALESCE(MAX(idx), 0) FROM audit.audit_entries) ORDER BY idx;
         INSERT INTO audit.audit_alerts (idx, time) SELECT idx, time FROM main.audit_alerts WHERE true
             ON CONFLICT DO NOTHING;
         INSERT INTO audit.audit_tiles (level, idx, hashes) SELECT level, idx, hashes FROM main.audit_tiles WHERE true
             ON CONFLICT DO NOTHING;
         INSERT INTO audit.audit_checkpoints (size, created, note) SELECT size, created, note FROM main.audit_checkpoints
             WHERE true ON CONFLICT DO NOTHING;
         INSERT INTO audit.audit_state (name, value) SELECT name, value FROM main.audit_state WHERE true
             ON CONFLICT (name) DO UPDATE SET value = max(value, excluded.value);",
    )?;
    tx.commit()?;
    // The copy is in the trail's WAL: synced with its directory entry. Never open and close
    // `audit.db` itself here: closing any descriptor of a file drops every POSIX lock this
    // process holds on it, SQLite's included — another process would then take itself for the
    // file's last user and remove the WAL under this one.
    let mut wal = audit.as_os_str().to_owned();
    wal.push("-wal");
    std::fs::File::open(&wal)?.sync_data()?;
    std::fs::File::open(dir)?.sync_all()?;
    tracing::info!(file = %audit.display(), "the audit trail was copied into a file of its own (schema step 9)");
    Ok(())
}

/// Before step 9 drops the trail from `mamori.db`: every entry and checkpoint there is in
/// `audit.db`, byte for byte (a process of an older build may have appended after the copy; then
/// the store is opened again, and the next copy takes the rest).
fn moved_whole(c: &Connection) -> Result<(), Error> {
    let missing: i64 = c.query_row(
        "SELECT (SELECT COUNT(*) FROM main.audit_entries m WHERE NOT EXISTS
                    (SELECT 1 FROM audit.audit_entries a WHERE a.idx = m.idx AND a.time = m.time AND a.entry = m.entry))
              + (SELECT COUNT(*) FROM main.audit_checkpoints m WHERE NOT EXISTS
                    (SELECT 1 FROM audit.audit_checkpoints a WHERE a.size = m.size AND a.note = m.note))
              + (SELECT COUNT(*) FROM main.audit_alerts m WHERE NOT EXISTS
                    (SELECT 1 FROM audit.audit_alerts a WHERE a.idx = m.idx))",
        [],
        |r| r.get(0),
    )?;
    if missing == 0 {
        Ok(())
    } else {
        Err(Error::Batch("the audit trail changed while it was copied into audit.db; open the store again".into()))
    }
}

/// Checkpoints the WAL into the database from a thread of its own, on a connection of its own:
/// `PASSIVE`, so it never takes the writer lock nor waits for readers — it copies what it can
/// and the next pass (or the writer's own checkpoint at 10,000 pages) copies the rest. Every
/// 25 ms while the WAL changes, every 250 ms when it does not; the writer's own checkpoint keeps
/// the WAL short enough that frequent passes stay cheap (figures in BENCHMARKS.md, issue #9).
fn checkpointer(path: &Path, audit: &Path, stop: std::sync::Arc<std::sync::atomic::AtomicBool>) -> Result<(), Error> {
    // Each file on its own: without a schema name `wal_checkpoint` checkpoints both but reports
    // only the first, so a WAL growing in `audit.db` alone (under reads) looked idle.
    let conn = open_conn(path, audit, false)?;
    std::thread::Builder::new().name("mamori-checkpoint".into()).spawn(move || {
        let mut last = [(0, 0); 2];
        while !stop.load(Ordering::Relaxed) {
            let mut now = last;
            for (slot, sql) in
                now.iter_mut().zip(["PRAGMA main.wal_checkpoint(PASSIVE)", "PRAGMA audit.wal_checkpoint(PASSIVE)"])
            {
                match conn.query_row(sql, [], |r| Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))) {
                    Ok(v) => *slot = v,
                    Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed; retrying"),
                }
            }
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

/// The audit trail's size (its last leaf index + 1) as `c` sees it; 0 when it cannot be read.
pub(crate) fn audit_size(c: &Connection) -> u64 {
    // After every commit: kept prepared.
    c.prepare_cached("SELECT COALESCE(MAX(idx), 0) FROM audit_entries")
        .and_then(|mut st| st.query_row([], |r| r.get::<_, i64>(0)))
        .ok()
        .and_then(|n| u64::try_from(n).ok())
        .unwrap_or(0)
}

fn open_conn(path: &Path, audit: &Path, read_only: bool) -> Result<Connection, Error> {
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let c = Connection::open_with_flags(path, flags)?;
    c.busy_timeout(std::time::Duration::from_secs(10))?;
    // The audit trail's file (schema step 9), opened as this connection is (read-only or not).
    let audit = audit
        .to_str()
        .ok_or_else(|| Error::Batch(format!("the data directory's path is not UTF-8: {}", audit.display())))?;
    c.execute("ATTACH DATABASE ?1 AS audit", [audit])?;
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
    c.pragma_update(Some("audit"), "synchronous", "NORMAL")?;
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
    // The trail's pages: appended at its end, read back by the audit views and the integrator
    // (which has a connection of its own).
    c.pragma_update(Some("audit"), "cache_size", -4096)?;
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
        let audit = dir.join("audit.db");
        let writer = open_conn(&path, &audit, false)?;
        writer.pragma_update(None, "journal_mode", "WAL")?;
        writer.pragma_update(Some("audit"), "journal_mode", "WAL")?;
        // The checkpointer thread below copies the WAL into the database beside the writer, so
        // the commit that crosses ~40 MB of WAL (10,000 pages) finds most of it copied already and
        // only finishes the rest, instead of copying and fsyncing it all while holding the writer
        // (BENCHMARKS.md, issue #9). That finishing checkpoint is still needed: only a checkpoint
        // that completes lets the next write start the WAL from its beginning.
        writer.pragma_update(None, "wal_autocheckpoint", 10_000)?;
        // After a burst, the WAL file is cut back to 64 MiB when it restarts.
        writer.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)?;
        writer.pragma_update(Some("audit"), "journal_size_limit", 64 * 1024 * 1024)?;
        writer.pragma_update(Some("audit"), "cache_size", -8192)?;
        let migration_failed = |e: mamori_store_sql::Error| Error::Batch(format!("schema migration failed: {e}"));
        {
            let tx = rusqlite::Transaction::new_unchecked(&writer, TransactionBehavior::Immediate)?;
            upgrade_legacy(&tx)?;
            let until = mamori_store_sql::schema::AUDIT_FILE_STEP - 1;
            mamori_store_sql::schema::migrate_until(&mut SqliteConn(&tx, 0), clock.now().0, until)
                .map_err(migration_failed)?;
            tx.commit()?;
        }
        move_audit_trail(&writer, dir, &audit)?;
        {
            let tx = rusqlite::Transaction::new_unchecked(&writer, TransactionBehavior::Immediate)?;
            if has_table(&tx, "main", "audit_entries")? {
                moved_whole(&tx)?;
            }
            let mut c = SqliteConn(&tx, 0);
            mamori_store_sql::schema::migrate(&mut c, clock.now().0).map_err(migration_failed)?;
            // Entries a crash kept from the trail go in before anything else is appended.
            mamori_store_sql::recover_pending_audit(&mut c).map_err(migration_failed)?;
            tx.commit()?;
        }
        // SAVEPOINT sub-journals stay in memory up to 256 MiB (SQLITE_STMTJRNL_SPILL, set for the
        // bundled SQLite in .cargo/config.toml) and spill to a temporary file beyond (#9).
        let durability = std::sync::Arc::new(durability::Durability::open(dir, &path, &audit, audit_size(&writer))?);
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            readers.push(Mutex::new(open_conn(&path, &audit, true)?));
        }
        let scan = open_conn(&path, &audit, true)?;
        scan.pragma_update(None, "cache_size", -2048)?;
        scan.pragma_update(Some("audit"), "cache_size", -2048)?;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        checkpointer(&path, &audit, stop.clone())?;
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
        let ticket = self.durability.committed(audit_size(&conn));
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
        let r = f(&mut SqliteConn(&tx, 0))?;
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
        f(&mut SqliteConn(&conn, 0))
    }

    /// One statement in autocommit mode on the writer (no `BEGIN`/`COMMIT` around it), then
    /// durable.
    fn exec(&self, sql: &str, params: &[Value<'_>]) -> Result<u64, mamori_store_sql::Error> {
        let conn = self.writer.lock()?;
        let n = SqliteConn(&conn, 0).execute(sql, params)?;
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
        let r = f(&mut SqliteConn(&tx, self.durability.audit_durable()))?;
        tx.commit().map_err(db)?;
        self.release_durably(conn).map_err(mamori_store_sql::Error::from)?;
        Ok(r)
    }

    fn write_records(
        &self,
        f: &mut (dyn FnMut(&mut dyn Conn) -> Result<(), RecordError> + Send),
    ) -> Result<(), RecordError> {
        // Group commit: concurrent writes share one transaction and one fsync (writer.rs).
        let durability = &self.durability;
        self.writer.write(&mut |c| f(&mut SqliteConn(c, durability.audit_durable())), |e| {
            mamori_store_sql::Error::from(e).into()
        })
    }
}

/// A connection inside a transaction, with the audit trail's size known durable (writes only;
/// 0 elsewhere).
struct SqliteConn<'c>(&'c Connection, u64);

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

    fn audit_durable(&self) -> u64 {
        self.1
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

    /// The bundled SQLite is built as `.cargo/config.toml` says: each connection has a page
    /// cache of its own and no allocation counts into global statistics. libsqlite3-sys's
    /// default (`SQLITE_ENABLE_MEMORY_MANAGEMENT`, memory statistics on) puts every page fetch
    /// and unpin of every connection under one process-wide mutex — a third of the server's CPU
    /// under a concurrent search load (BENCHMARKS.md, session 39).
    #[test]
    fn every_connection_has_a_page_cache_of_its_own() -> Result<(), Box<dyn std::error::Error>> {
        let c = Connection::open_in_memory()?;
        let mut s = c.prepare("PRAGMA compile_options")?;
        let options: Vec<String> = s.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
        assert!(!options.iter().any(|o| o == "ENABLE_MEMORY_MANAGEMENT"), "{options:?}");
        assert!(options.iter().any(|o| o == "DEFAULT_MEMSTATUS=0"), "{options:?}");
        assert!(options.iter().any(|o| o == "STMTJRNL_SPILL=268435456"), "{options:?}");
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

    pub(super) fn record(i: u64) -> AuditRecord {
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
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod audit_file_tests {
    use std::path::Path;
    use std::sync::Arc;

    use mamori_audit::AuditLog;
    use mamori_records::Store;
    use rusqlite::Connection;

    use super::integration_tests::record;

    fn open(dir: &Path) -> super::SqliteStore {
        super::open(dir, Arc::new(mamori_records::SystemClock)).unwrap()
    }

    /// An entry written beside a change, as a record write writes it.
    fn beside_a_change(store: &super::SqliteStore, i: u64) {
        store
            .write(&mut |tx| {
                tx.append_audit(record(i))?;
                Ok(())
            })
            .unwrap();
    }

    /// The raw files, as another process (or an attacker with the files) sees them.
    fn raw(dir: &Path) -> Connection {
        let c = Connection::open(dir.join("mamori.db")).unwrap();
        c.execute("ATTACH DATABASE ?1 AS audit", [dir.join("audit.db").to_str().unwrap()]).unwrap();
        c
    }

    fn int(c: &Connection, sql: &str) -> i64 {
        c.query_row(sql, [], |r| r.get(0)).unwrap()
    }

    /// The point of the file of its own (#29): an entry that only records a request leaves
    /// `mamori.db` untouched — no other connection's page cache of it is emptied — while an
    /// entry written beside a change is also kept in `mamori.db` with the change.
    #[test]
    fn a_request_s_entry_leaves_the_records_file_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let r = raw(dir.path());
        let version = |schema: &str| int(&r, &format!("PRAGMA {schema}.data_version"));
        let (main, audit) = (version("main"), version("audit"));
        store.append((0..20).map(record).collect()).unwrap();
        assert_eq!(version("main"), main, "a request's entry changed mamori.db");
        assert_ne!(version("audit"), audit);
        assert_eq!(store.audit_size().unwrap(), 20);
        beside_a_change(&store, 20);
        assert_ne!(version("main"), main, "an entry beside a change is kept with it");
        assert_eq!(int(&r, "SELECT COUNT(*) FROM main.audit_pending"), 1);
        assert_eq!(int(&r, "SELECT COUNT(*) FROM audit.audit_entries"), 21);
        assert_eq!(int(&r, "SELECT COUNT(*) FROM main.sqlite_master WHERE name = 'audit_entries'"), 0);
    }

    /// A kept entry goes once it is durable in the trail: after a run of writes, one at a time,
    /// only the last write's entry is still kept.
    #[test]
    fn kept_entries_go_once_durable_in_the_trail() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        for i in 0..30 {
            beside_a_change(&store, i);
        }
        let r = raw(dir.path());
        assert_eq!(int(&r, "SELECT COUNT(*) FROM audit_pending"), 1);
        assert_eq!(int(&r, "SELECT idx FROM audit_pending"), 30);
        assert_eq!(store.audit_size().unwrap(), 30);
    }

    /// A crash between the two files' commits (or a power loss that kept `mamori.db`'s log and
    /// not `audit.db`'s): the change is there and its entry is not. The next opening puts the
    /// entry back at the index it was given, the same bytes, before anything else is appended;
    /// a trail that ends further back than the kept entries begin is refused, not patched over.
    #[test]
    fn an_entry_that_missed_the_trail_is_put_back_and_a_gap_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        store.append((0..5).map(record).collect()).unwrap();
        beside_a_change(&store, 5);
        let kept = store.entries(5, 1).unwrap();
        drop(store);
        let lose = |n: i64| {
            raw(dir.path())
                .execute_batch(&format!(
                    "DROP TRIGGER audit.audit_no_delete; DELETE FROM audit.audit_entries WHERE idx > {n};
                     CREATE TRIGGER audit.audit_no_delete BEFORE DELETE ON audit_entries BEGIN SELECT RAISE(ABORT, 'x'); END;"
                ))
                .unwrap();
        };
        lose(5);
        let store = open(dir.path());
        assert_eq!(store.audit_size().unwrap(), 6);
        assert_eq!(store.entries(5, 1).unwrap(), kept);
        store.append(vec![record(6)]).unwrap();
        assert_eq!(store.audit_size().unwrap(), 7);
        let leaves: Vec<_> = store.entries(0, 7).unwrap().iter().map(|e| mamori_audit::merkle::leaf_hash(e)).collect();
        assert_eq!(leaves.len(), 7);
        drop(store);

        // Entry 5 (index 4) lost too, and it was not kept beside a change: a gap.
        lose(4);
        let e = super::open(dir.path(), Arc::new(mamori_records::SystemClock)).err().expect("a gap must be refused");
        assert!(e.to_string().contains("audit.db is older than mamori.db"), "{e}");
        assert_eq!(int(&raw(dir.path()), "SELECT COUNT(*) FROM audit.audit_entries"), 4, "nothing was appended");
    }

    /// A store whose trail file was removed is refused: a new, empty trail would hide it.
    #[test]
    fn a_store_without_its_trail_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        beside_a_change(&store, 0);
        drop(store);
        for f in ["audit.db", "audit.db-wal", "audit.db-shm"] {
            let _ = std::fs::remove_file(dir.path().join(f));
        }
        let e = super::open(dir.path(), Arc::new(mamori_records::SystemClock)).err().expect("must be refused");
        assert!(e.to_string().contains("the audit trail (監査証跡) is missing"), "{e}");
    }

    /// A store made before step 9 (its trail in `mamori.db`) is moved whole: the same entries,
    /// tiles, checkpoints and state in `audit.db`, none left behind; moving again after a crash
    /// between the copy and the drop copies nothing twice.
    #[test]
    fn a_trail_made_before_its_own_file_is_moved_whole() {
        let dir = tempfile::tempdir().unwrap();
        {
            let c = Connection::open(dir.path().join("mamori.db")).unwrap();
            c.pragma_update(None, "journal_mode", "WAL").unwrap();
            let tx = rusqlite::Transaction::new_unchecked(&c, rusqlite::TransactionBehavior::Immediate).unwrap();
            mamori_store_sql::schema::migrate_until(&mut super::SqliteConn(&tx, 0), 1, 8).unwrap();
            tx.execute_batch(
                "INSERT INTO audit_entries (idx, time, entry) VALUES (1, 10, x'7b7d'), (2, 11, x'7b2261227d'), (3, 12, x'7b7d');
                 INSERT INTO audit_alerts (idx, time) VALUES (2, 11);
                 INSERT INTO audit_tiles (level, idx, hashes) VALUES (0, 0, x'00');
                 INSERT INTO audit_checkpoints (size, created, note) VALUES (2, 11, 'note');
                 INSERT INTO audit_state (name, value) VALUES ('integrated', 2);",
            )
            .unwrap();
            tx.commit().unwrap();
        }
        // The first half ran and the process stopped: the copy is there, the drop is not.
        {
            let c = Connection::open(dir.path().join("mamori.db")).unwrap();
            c.execute("ATTACH DATABASE ?1 AS audit", [dir.path().join("audit.db").to_str().unwrap()]).unwrap();
            c.pragma_update(Some("audit"), "journal_mode", "WAL").unwrap();
            super::move_audit_trail(&c, dir.path(), &dir.path().join("audit.db")).unwrap();
        }
        let store = open(dir.path());
        assert_eq!(store.audit_size().unwrap(), 3);
        assert_eq!(store.entries(0, 3).unwrap(), vec![b"{}".to_vec(), b"{\"a\"}".to_vec(), b"{}".to_vec()]);
        assert_eq!(store.audit_integrated_size().unwrap(), 2);
        assert_eq!(store.checkpoints().unwrap(), vec!["note".to_string()]);
        assert_eq!(store.tile(0, 0).unwrap(), Vec::<mamori_audit::Hash>::new(), "a 1-byte tile holds no whole hash");
        assert_eq!(store.recent_alerts(5).unwrap().len(), 1);
        let r = raw(dir.path());
        assert_eq!(
            int(&r, "SELECT COUNT(*) FROM main.sqlite_master WHERE name LIKE 'audit_%' AND name <> 'audit_pending'"),
            0
        );
        assert_eq!(int(&r, "SELECT COUNT(*) FROM audit.sqlite_master WHERE type = 'trigger'"), 4);
        assert!(store.guards_missing().unwrap().is_empty(), "{:?}", store.guards_missing());
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
