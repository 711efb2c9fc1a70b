//! Mamori's storage, written once for every SQL database it runs on (#23).
//!
//! Everything a store does — the schema and its migrations, every query and row mapping, the
//! one path for configuration changes, the audit sequencer and the record, OAuth and identity
//! stores — lives here, over a small dialect layer:
//!
//! - [`Conn`]: run a statement on a connection inside a transaction (`?N` placeholders, as
//!   SQLite writes them; the PostgreSQL adapter turns them into `$N`), with neutral [`Value`]s
//!   and [`Row`]s;
//! - [`Db`]: open read and write transactions, where the adapters keep what is theirs: the
//!   SQLite adapter's single writer thread with group commit and group fsync, the PostgreSQL
//!   adapter's pool, runtime and cluster-wide advisory locks;
//! - [`Dialect`]: the few places the SQL differs (column types, the purge guard, index-key
//!   length).
//!
//! [`SqlStore`] implements [`mamori_records::Store`], [`mamori_oauth::OAuthStore`],
//! [`mamori_identity::service::IdentityStore`] and [`mamori_audit::AuditLog`] once, for any
//! [`Db`]. The contract module of the integration tests runs the same checks on both.

mod audit;
pub use audit::recover_pending as recover_pending_audit;
mod config;
pub mod dump;
mod identity;
mod oauth;
mod records;
pub mod schema;

use std::borrow::Cow;
use std::sync::Arc;

use mamori_records::{Clock, RecordError, StoreError};

pub use audit::{AuditStats, Job as AuditJob, writer_loop as audit_writer_loop};
pub use config::{ConfigChange, ConfigEntry, Tampered, WORKFLOW_KINDS, decode, decode_all, table_of};

/// Why the store failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The database failed, classified by what a caller should do (busy → retry, unavailable,
    /// corrupt, other).
    #[error(transparent)]
    Store(#[from] StoreError),
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
    /// A stored value that does not decode.
    pub fn corrupt(e: impl std::fmt::Display) -> Error {
        Error::Store(StoreError::Corrupt(e.to_string()))
    }

    /// The store cannot be reached or cannot make a write durable.
    pub fn unavailable(e: impl std::fmt::Display) -> Error {
        Error::Store(StoreError::Unavailable(e.to_string()))
    }

    /// Whether this is a configuration change refused because its entry changed meanwhile.
    pub fn is_stale(&self) -> bool {
        matches!(self, Error::Stale { .. })
    }

    /// The failure as a record-store error (a stale change is `Other`: the record service never
    /// makes one).
    pub fn into_store_error(self) -> StoreError {
        match self {
            Error::Store(e) => e,
            stale @ Error::Stale { .. } => StoreError::Other(stale.to_string()),
        }
    }
}

impl From<Error> for RecordError {
    fn from(e: Error) -> Self {
        tracing::error!(error = %e, "record store failure");
        RecordError::Store(e.into_store_error())
    }
}

/// Where the SQL differs between the databases Mamori runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// The embedded store.
    Sqlite,
    /// Several nodes on one database.
    Postgres,
}

impl Dialect {
    /// `sqlite` or `postgres`.
    pub fn name(self) -> &'static str {
        match self {
            Dialect::Sqlite => "sqlite",
            Dialect::Postgres => "postgres",
        }
    }

    /// The longest index value kept, in bytes (on a character boundary): PostgreSQL's b-tree rows
    /// hold at most about 2.7 kB and a key holds up to three values; values longer than this (a
    /// ValueSet's description, say) are found by their beginning. SQLite keeps them whole.
    pub fn index_bytes(self) -> Option<usize> {
        match self {
            Dialect::Sqlite => None,
            Dialect::Postgres => Some(600),
        }
    }

    /// How searches find substrings: SQLite through its FTS5 trigram table, PostgreSQL with
    /// `LIKE` on the value columns, which `pg_trgm`'s indexes serve (schema step 5).
    pub fn substrings(self) -> mamori_records::search::sql::Substrings {
        match self {
            Dialect::Sqlite => mamori_records::search::sql::Substrings::Fts5,
            Dialect::Postgres => mamori_records::search::sql::Substrings::Like,
        }
    }

    /// How searches run here before a density probe decides more: the substring index, and the
    /// form of a walk's bound that the dialect's planner reads well.
    pub fn how(self) -> mamori_records::search::sql::How {
        use mamori_records::search::sql::{How, WalkBound};
        let bound = match self {
            Dialect::Sqlite => WalkBound::Range,
            Dialect::Postgres => WalkBound::Subquery,
        };
        How { bound, ..How::new(self.substrings()) }
    }

    /// The statement that lets (`true`) or stops letting the current transaction delete versions
    /// (a purge): the append-only trigger checks it.
    pub fn purge_guard(self, on: bool) -> &'static str {
        match (self, on) {
            (Dialect::Sqlite, true) => "INSERT INTO store_flags (name, value) VALUES ('purge', 'on')",
            (Dialect::Sqlite, false) => "DELETE FROM store_flags WHERE name = 'purge'",
            (Dialect::Postgres, true) => "SET LOCAL mamori.purge = 'on'",
            (Dialect::Postgres, false) => "SET LOCAL mamori.purge = 'off'",
        }
    }
}

/// A statement parameter or a column value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    /// SQL NULL.
    Null,
    /// An integer (booleans are 0 and 1; the PostgreSQL adapter binds them as its column's type).
    Int(i64),
    /// A double.
    Real(f64),
    /// Text.
    Text(Cow<'a, str>),
    /// Bytes.
    Blob(Cow<'a, [u8]>),
}

impl Value<'_> {
    /// The same value, owning its data.
    pub fn into_owned(self) -> Value<'static> {
        match self {
            Value::Null => Value::Null,
            Value::Int(i) => Value::Int(i),
            Value::Real(r) => Value::Real(r),
            Value::Text(t) => Value::Text(Cow::Owned(t.into_owned())),
            Value::Blob(b) => Value::Blob(Cow::Owned(b.into_owned())),
        }
    }
}

impl From<i64> for Value<'_> {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}
impl From<bool> for Value<'_> {
    fn from(v: bool) -> Self {
        Value::Int(i64::from(v))
    }
}
impl From<f64> for Value<'_> {
    fn from(v: f64) -> Self {
        Value::Real(v)
    }
}
impl<'a> From<&'a str> for Value<'a> {
    fn from(v: &'a str) -> Self {
        Value::Text(Cow::Borrowed(v))
    }
}
impl<'a> From<&'a String> for Value<'a> {
    fn from(v: &'a String) -> Self {
        Value::Text(Cow::Borrowed(v))
    }
}
impl From<String> for Value<'_> {
    fn from(v: String) -> Self {
        Value::Text(Cow::Owned(v))
    }
}
impl<'a> From<&'a [u8]> for Value<'a> {
    fn from(v: &'a [u8]) -> Self {
        Value::Blob(Cow::Borrowed(v))
    }
}
impl From<Vec<u8>> for Value<'_> {
    fn from(v: Vec<u8>) -> Self {
        Value::Blob(Cow::Owned(v))
    }
}
impl<'a, T: Into<Value<'a>>> From<Option<T>> for Value<'a> {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

/// Statement parameters: `vals![a, b]`.
#[macro_export]
macro_rules! vals {
    ($($x:expr),* $(,)?) => { [$($crate::Value::from($x)),*] };
}

/// A result row.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Row(pub Vec<Value<'static>>);

impl Row {
    fn at(&self, i: usize) -> Result<&Value<'static>, Error> {
        self.0.get(i).ok_or_else(|| Error::corrupt(format!("no column {i}")))
    }

    /// An integer column.
    pub fn int(&self, i: usize) -> Result<i64, Error> {
        self.opt_int(i)?.ok_or_else(|| Error::corrupt(format!("column {i} is NULL")))
    }

    /// An integer column that may be NULL.
    pub fn opt_int(&self, i: usize) -> Result<Option<i64>, Error> {
        match self.at(i)? {
            Value::Null => Ok(None),
            Value::Int(v) => Ok(Some(*v)),
            other => Err(Error::corrupt(format!("column {i} is not an integer: {other:?}"))),
        }
    }

    /// A non-negative integer column.
    pub fn uint(&self, i: usize) -> Result<u64, Error> {
        u64::try_from(self.int(i)?).map_err(Error::corrupt)
    }

    /// A boolean column (0/1 on SQLite).
    pub fn bool(&self, i: usize) -> Result<bool, Error> {
        Ok(self.int(i)? != 0)
    }

    /// A text column.
    pub fn text(&self, i: usize) -> Result<String, Error> {
        self.opt_text(i)?.ok_or_else(|| Error::corrupt(format!("column {i} is NULL")))
    }

    /// A text column that may be NULL.
    pub fn opt_text(&self, i: usize) -> Result<Option<String>, Error> {
        match self.at(i)? {
            Value::Null => Ok(None),
            Value::Text(t) => Ok(Some(t.to_string())),
            other => Err(Error::corrupt(format!("column {i} is not text: {other:?}"))),
        }
    }

    /// A text column that may be NULL, moved out of the row (a version's body).
    pub fn take_text(&mut self, i: usize) -> Result<Option<String>, Error> {
        let slot = self.0.get_mut(i).ok_or_else(|| Error::corrupt(format!("no column {i}")))?;
        match std::mem::replace(slot, Value::Null) {
            Value::Null => Ok(None),
            Value::Text(t) => Ok(Some(t.into_owned())),
            other => Err(Error::corrupt(format!("column {i} is not text: {other:?}"))),
        }
    }

    /// A text column, moved out of the row.
    pub fn take_string(&mut self, i: usize) -> Result<String, Error> {
        self.take_text(i)?.ok_or_else(|| Error::corrupt(format!("column {i} is NULL")))
    }

    /// A bytes column, moved out of the row.
    pub fn take_blob(&mut self, i: usize) -> Result<Vec<u8>, Error> {
        let slot = self.0.get_mut(i).ok_or_else(|| Error::corrupt(format!("no column {i}")))?;
        match std::mem::replace(slot, Value::Null) {
            Value::Blob(b) => Ok(b.into_owned()),
            other => Err(Error::corrupt(format!("column {i} is not bytes: {other:?}"))),
        }
    }

    /// A bytes column.
    pub fn blob(&self, i: usize) -> Result<Vec<u8>, Error> {
        match self.at(i)? {
            Value::Blob(b) => Ok(b.to_vec()),
            other => Err(Error::corrupt(format!("column {i} is not bytes: {other:?}"))),
        }
    }

    /// Any column as it is.
    pub fn value(&self, i: usize) -> Result<&Value<'static>, Error> {
        self.at(i)
    }
}

/// A connection inside an open transaction.
///
/// SQL is written once with `?N` placeholders (N from 1); values are bound by position.
pub trait Conn {
    /// Which database this is.
    fn dialect(&self) -> Dialect;
    /// Runs a query and returns its rows.
    fn query(&mut self, sql: &str, params: &[Value<'_>]) -> Result<Vec<Row>, Error>;
    /// Runs a statement and returns the number of rows it changed.
    fn execute(&mut self, sql: &str, params: &[Value<'_>]) -> Result<u64, Error>;
    /// Runs statements in order whose results are not needed (pipelined where the driver can).
    fn execute_many(&mut self, stmts: &[(&str, Vec<Value<'_>>)]) -> Result<(), Error> {
        for (sql, p) in stmts {
            self.execute(sql, p)?;
        }
        Ok(())
    }
    /// Runs statements without parameters (DDL, settings).
    fn batch(&mut self, sql: &str) -> Result<(), Error>;
    /// The first row of a query, if any.
    fn one(&mut self, sql: &str, params: &[Value<'_>]) -> Result<Option<Row>, Error> {
        Ok(self.query(sql, params)?.into_iter().next())
    }
    /// On SQLite's writing connection: the audit trail's size known durable in `audit.db`
    /// (entries written beside a change and kept in `audit_pending` up to it may go, schema step
    /// 9); 0 when not known.
    fn audit_durable(&self) -> u64 {
        0
    }
}

/// A database: where transactions come from. The adapters implement it.
pub trait Db: Send + Sync + 'static {
    /// Which database this is.
    fn dialect(&self) -> Dialect;
    /// Where the data is (a file path, or a database URL without its password).
    fn describe(&self) -> String;
    /// `(commits, fsyncs)` of the adapter's group commit, if it keeps them.
    fn durability_stats(&self) -> (u64, u64) {
        (0, 0)
    }
    /// Runs `f` in a read-only transaction on one snapshot.
    fn read<T, E: From<Error>>(&self, f: impl FnOnce(&mut dyn Conn) -> Result<T, E>) -> Result<T, E>;
    /// Runs `f`, which issues a single statement, on a reading connection: a statement is its own
    /// snapshot, so no explicit transaction is opened (a token or session lookup on every
    /// request saves its `BEGIN` and `COMMIT`).
    fn read_statement<T, E: From<Error>>(&self, f: impl FnOnce(&mut dyn Conn) -> Result<T, E>) -> Result<T, E> {
        self.read(f)
    }
    /// Like [`Db::read`], for long scans (audit integration) that should not evict the hot pages
    /// of the connections serving requests.
    fn read_scan<T, E: From<Error>>(&self, f: impl FnOnce(&mut dyn Conn) -> Result<T, E>) -> Result<T, E> {
        self.read(f)
    }
    /// Runs `f` in a write transaction, serialised with every other write (on every node);
    /// committed if `f` succeeds and durable when this returns, rolled back otherwise.
    fn write<T, E: From<Error>>(&self, f: impl FnOnce(&mut dyn Conn) -> Result<T, E>) -> Result<T, E>;
    /// A record write (create, update, import batch…): like [`Db::write`]; the SQLite adapter
    /// commits concurrent ones together (group commit).
    fn write_records(
        &self,
        f: &mut (dyn FnMut(&mut dyn Conn) -> Result<(), RecordError> + Send),
    ) -> Result<(), RecordError> {
        self.write(|c| f(c))
    }
    /// One statement on its own (single-row token and session state, atomic by itself), durable
    /// when this returns.
    fn exec(&self, sql: &str, params: &[Value<'_>]) -> Result<u64, Error> {
        self.write(|c| c.execute(sql, params))
    }
}

/// The store: every trait the server needs, over one [`Db`].
pub struct SqlStore<D: Db> {
    db: Arc<D>,
    clock: Arc<dyn Clock>,
    audit_tx: std::sync::OnceLock<(std::sync::mpsc::Sender<AuditJob>, Option<std::thread::JoinHandle<()>>)>,
    audit_counters: Arc<audit::AuditCounters>,
    /// The key configuration versions are sealed with (`SqlStore::seal_config`); until it is
    /// set, versions are written and served unsealed (tools that open a store without keys).
    seal_key: std::sync::OnceLock<[u8; 32]>,
    stamp: Arc<std::sync::RwLock<Option<AuditStamp>>>,
    /// Recent density probes' answers, shared by the store's transactions.
    densities: Arc<records::Densities>,
}

/// What the one audit append adds to every entry before it is written: the remote-maintenance
/// window its actor works in (`AuditRecord::window`), so no path can leave it out.
pub type AuditStamp = Arc<dyn Fn(&mut mamori_audit::AuditRecord) + Send + Sync>;

impl<D: Db> SqlStore<D> {
    /// Sets what every audit entry is stamped with before it is written (see [`AuditStamp`]).
    pub fn set_audit_stamp(&self, stamp: AuditStamp) {
        if let Ok(mut s) = self.stamp.write() {
            *s = Some(stamp);
        }
    }

    /// Stamps `record` (see [`AuditStamp`]).
    pub(crate) fn stamp(&self, record: &mut mamori_audit::AuditRecord) {
        stamp_with(&self.stamp, record);
    }
}

pub(crate) fn stamp_with(stamp: &std::sync::RwLock<Option<AuditStamp>>, record: &mut mamori_audit::AuditRecord) {
    if let Ok(s) = stamp.read()
        && let Some(f) = s.as_ref()
    {
        f(record);
    }
}

impl<D: Db> SqlStore<D> {
    /// A store over `db` (whose schema the adapter has brought up to date with
    /// [`schema::migrate`]), reading time from `clock` — the node's one clock — for audit entry
    /// and checkpoint times.
    pub fn new(db: D, clock: Arc<dyn Clock>) -> SqlStore<D> {
        SqlStore {
            db: Arc::new(db),
            clock,
            audit_tx: std::sync::OnceLock::new(),
            audit_counters: Arc::default(),
            seal_key: std::sync::OnceLock::new(),
            stamp: Arc::default(),
            densities: Arc::default(),
        }
    }

    /// The database.
    pub fn db(&self) -> &D {
        &self.db
    }

    /// Where the data is.
    pub fn describe(&self) -> String {
        self.db.describe()
    }

    /// `(commits, fsyncs)` since the store was opened (zeros where the database flushes itself).
    pub fn durability_stats(&self) -> (u64, u64) {
        self.db.durability_stats()
    }

    /// The database's size in bytes: SQLite's pages in use or not (the file, without its WAL),
    /// PostgreSQL's `pg_database_size`.
    pub fn size_bytes(&self) -> Result<u64, Error> {
        let sql = match self.db.dialect() {
            Dialect::Sqlite => "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()",
            Dialect::Postgres => "SELECT pg_database_size(current_database())",
        };
        let n = self.db.read_statement(|c| c.one(sql, &[])?.map(|r| r.int(0)).transpose())?.unwrap_or(0);
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// A quick liveness check for `/healthz`.
    pub fn ping(&self) -> Result<(), Error> {
        self.db.read_statement(|c| c.query("SELECT 1", &[]).map(|_| ()))
    }

    /// Whether this store can take requests (`/readyz`): the database answers, its schema is
    /// exactly the one this build migrates to (not older, not a newer node's), and the audit
    /// writer thread — without which no request may be answered — has not stopped.
    pub fn ready(&self) -> Result<(), String> {
        let want = i64::try_from(schema::steps(self.db.dialect()).len()).unwrap_or(i64::MAX);
        let have = self
            .db
            .read_statement(|c| {
                c.one("SELECT COALESCE(MAX(version), 0) FROM mamori_schema", &[])?.map(|r| r.int(0)).transpose()
            })
            .map_err(|e| format!("store: {e}"))?
            .unwrap_or(0);
        if have != want {
            return Err(format!("store schema is version {have}; this build needs {want}"));
        }
        if let Some((_, Some(writer))) = self.audit_tx.get()
            && writer.is_finished()
        {
            return Err("the audit writer has stopped".into());
        }
        Ok(())
    }

    /// Sets a value shared by every process on the store if it is not set yet; returns the value
    /// now stored (the first one's, when several race).
    pub fn flag_get(&self, name: &str) -> Result<Option<String>, Error> {
        self.db.read_statement(|c| {
            c.one("SELECT value FROM store_flags WHERE name = ?1", &vals![name])?.map(|r| r.text(0)).transpose()
        })
    }

    /// A store-wide flag set by the first node that starts and read by every later one.
    pub fn flag_init(&self, name: &str, value: &str) -> Result<String, Error> {
        // Set once, read at every start: read first, write only the first time.
        let get = |c: &mut dyn Conn| -> Result<Option<String>, Error> {
            c.one("SELECT value FROM store_flags WHERE name = ?1", &vals![name])?.map(|r| r.text(0)).transpose()
        };
        if let Some(v) = self.db.read_statement(get)? {
            return Ok(v);
        }
        self.db.write(|c| {
            c.execute(
                "INSERT INTO store_flags (name, value) VALUES (?1, ?2) ON CONFLICT (name) DO NOTHING",
                &vals![name, value],
            )?;
            get(c)?.ok_or_else(|| Error::corrupt(format!("store flag `{name}` vanished")))
        })
    }

    fn now_micros(&self) -> i64 {
        self.clock.now().0
    }
}
