//! The PostgreSQL store, for several stateless nodes on one database (issue #8, O1): the
//! PostgreSQL adapter of [`mamori_store_sql`], which holds every table, query and rule — so
//! every node shares every piece of state. What is PostgreSQL's own stays here: the connection
//! pool and the store's runtime, statement caching and pipelining, and the cluster-wide locks.
//!
//! Design (see `docs/DEPLOYMENT.md`):
//! - **One writer at a time, cluster-wide.** Every write transaction first takes the
//!   transaction-scoped advisory lock [`WRITER_LOCK`]. Writes are then serialised exactly as the
//!   embedded store's single writer serialises them: version numbers, conditional creates,
//!   `If-Match` checks, configuration versions and audit leaf indexes see every earlier commit,
//!   whichever node made it. The audit log therefore has one gap-free sequence.
//! - Reads run in `REPEATABLE READ READ ONLY` transactions: one snapshot per request.
//! - Integration is optimistic ([`mamori_audit::integrate`]): a node computes a step on a
//!   snapshot and stores it under the writer lock only if no other node integrated meanwhile.
//!
//! The store is synchronous. Queries run on the store's own runtime thread and the caller waits
//! on a channel, so the store may be called from any thread — a blocking-pool thread, a test's
//! runtime, the CLI — without nesting runtimes.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Condvar, Mutex};

use mamori_records::Clock;
use mamori_store_sql::{Conn, Db, Dialect, Row, SqlStore, Value};
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres::{Client, NoTls, Statement};
use tokio_postgres_rustls::MakeRustlsConnect;

/// The PostgreSQL store.
pub type PgStore = SqlStore<PgDb>;

/// What failed inside this adapter; callers see [`mamori_store_sql::Error`], classified.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// PostgreSQL failed.
    #[error("postgres: {}", Error::text(.0))]
    Pg(#[from] tokio_postgres::Error),
    /// The connection pool or the store's runtime failed.
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

impl Error {
    fn kind(&self) -> fn(String) -> mamori_records::StoreError {
        use mamori_records::StoreError as K;
        match self {
            Error::Pg(e) => match e.code() {
                Some(code) => pg_kind(code.code()),
                // No SQLSTATE: the connection or its I/O failed.
                None => K::Unavailable,
            },
            Error::Unavailable(_) => K::Unavailable,
        }
    }

    /// The underlying database error's message (with its detail), for messages to operators.
    fn text(e: &tokio_postgres::Error) -> String {
        match e.as_db_error() {
            Some(db) => db.message().to_string(),
            None => match std::error::Error::source(e) {
                Some(cause) => format!("{e}: {cause}"),
                None => e.to_string(),
            },
        }
    }
}

impl From<Error> for mamori_store_sql::Error {
    fn from(e: Error) -> Self {
        mamori_store_sql::Error::Store(e.kind()(e.to_string()))
    }
}

type SqlError = mamori_store_sql::Error;

/// The kind of a PostgreSQL failure by its SQLSTATE: a lock or statement timeout, a
/// serialization failure, a deadlock or too many connections is busy (retry); the server
/// shutting down, out of disk or memory, or a lost connection is unavailable; data corruption
/// (XX001/XX002) is corrupt.
pub fn pg_kind(sqlstate: &str) -> fn(String) -> mamori_records::StoreError {
    use mamori_records::StoreError as K;
    match sqlstate {
        "55P03" | "57014" | "40001" | "40P01" | "53300" => K::Busy,
        "57P01" | "57P02" | "57P03" | "53100" | "53200" | "08000" | "08003" | "08006" | "08001" | "08004" => {
            K::Unavailable
        }
        "XX001" | "XX002" => K::Corrupt,
        _ => K::Other,
    }
}

/// Where and how to connect: the parsed URL and, when it asks for TLS, the verifying connector.
#[derive(Clone)]
pub struct Target {
    config: tokio_postgres::Config,
    tls: Option<MakeRustlsConnect>,
}

/// A connection's driver: run it (spawn it) for the client to work.
pub type Driver = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

impl Target {
    /// Parses `postgres://user@host:port/db[?sslmode=require&sslrootcert=/path/ca.pem]`.
    ///
    /// TLS is verified or not used: `sslrootcert` names the PEM file of the CA that signed the
    /// server's certificate (checked with the host name), and implies `sslmode=require`;
    /// `sslmode=require` without it is refused, as a certificate no one checks would not keep a
    /// man in the middle out.
    pub fn parse(url: &str) -> Result<Target, SqlError> {
        Ok(Target::parse_inner(url)?)
    }

    fn parse_inner(url: &str) -> Result<Target, Error> {
        let bad = |e: String| Error::Unavailable(format!("`{}` is not a usable PostgreSQL URL: {e}", redact(url)));
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut rootcert = None;
        let rest: Vec<&str> = query
            .split('&')
            .filter(|kv| !kv.is_empty())
            .filter(|kv| match kv.strip_prefix("sslrootcert=") {
                Some(path) => {
                    rootcert = Some(path.to_string());
                    false
                }
                None => true,
            })
            .collect();
        let plain = if rest.is_empty() { base.to_string() } else { format!("{base}?{}", rest.join("&")) };
        let mut config: tokio_postgres::Config = plain.parse().map_err(|e| bad(format!("{e}")))?;
        let require = matches!(config.get_ssl_mode(), tokio_postgres::config::SslMode::Require);
        let tls = match (rootcert, require) {
            (None, false) => None,
            (None, true) => {
                return Err(bad("sslmode=require needs sslrootcert=/path/to/ca.pem to verify the server".into()));
            }
            (Some(path), _) => {
                use rustls::pki_types::CertificateDer;
                use rustls::pki_types::pem::PemObject;
                let mut roots = rustls::RootCertStore::empty();
                for cert in
                    CertificateDer::pem_file_iter(&path).map_err(|e| bad(format!("sslrootcert `{path}`: {e}")))?
                {
                    let cert = cert.map_err(|e| bad(format!("sslrootcert `{path}`: {e}")))?;
                    roots.add(cert).map_err(|e| bad(format!("sslrootcert `{path}`: {e}")))?;
                }
                if roots.is_empty() {
                    return Err(bad(format!("sslrootcert `{path}` holds no certificate")));
                }
                let provider = Arc::new(rustls::crypto::ring::default_provider());
                let tls = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map_err(|e| bad(e.to_string()))?
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                config.ssl_mode(tokio_postgres::config::SslMode::Require);
                Some(MakeRustlsConnect::new(tls))
            }
        };
        Ok(Target { config, tls })
    }

    /// Connects; the driver must be spawned (or awaited) for the client to work.
    pub async fn connect(&self) -> Result<(Client, Driver), tokio_postgres::Error> {
        fn drive<F: Future<Output = Result<(), tokio_postgres::Error>> + Send + 'static>(f: F) -> Driver {
            Box::pin(async move {
                if let Err(e) = f.await {
                    tracing::warn!(error = %e, "postgres connection closed");
                }
            })
        }
        match &self.tls {
            None => self.config.connect(NoTls).await.map(|(c, conn)| (c, drive(conn))),
            Some(tls) => self.config.connect(tls.clone()).await.map(|(c, conn)| (c, drive(conn))),
        }
    }
}

/// The advisory-lock key every write transaction takes (`"mamoriWR"` as a number).
pub const WRITER_LOCK: i64 = 0x6d61_6d6f_7269_5752;
/// The advisory-lock key of schema migration (`"mamoriMG"`).
const MIGRATE_LOCK: i64 = 0x6d61_6d6f_7269_4d47;

/// A neutral value bound as the type PostgreSQL inferred for its placeholder: an integer binds
/// to `boolean`, `integer`, `double precision` or `text` columns as well as `bigint`, a double
/// to `bigint` as its nearest integer (a decimal bound against an integer column).
#[derive(Debug)]
struct Bind(Value<'static>);

impl ToSql for Bind {
    fn to_sql(&self, ty: &Type, out: &mut bytes::BytesMut) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match &self.0 {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(i) => {
                let i = *i;
                if *ty == Type::BOOL {
                    (i != 0).to_sql(ty, out)
                } else if *ty == Type::INT4 {
                    i32::try_from(i).unwrap_or(if i < 0 { i32::MIN } else { i32::MAX }).to_sql(ty, out)
                } else if *ty == Type::INT2 {
                    i16::try_from(i).unwrap_or(if i < 0 { i16::MIN } else { i16::MAX }).to_sql(ty, out)
                } else if *ty == Type::FLOAT8 || *ty == Type::NUMERIC {
                    // Microseconds and search integers fit a double exactly (below 2^53).
                    #[allow(clippy::cast_precision_loss)]
                    (i as f64).to_sql(&Type::FLOAT8, out)
                } else if *ty == Type::TEXT || *ty == Type::VARCHAR {
                    i.to_string().to_sql(ty, out)
                } else {
                    i.to_sql(ty, out)
                }
            }
            Value::Real(r) => {
                if *ty == Type::INT8 {
                    #[allow(clippy::cast_possible_truncation)]
                    (r.round() as i64).to_sql(ty, out)
                } else {
                    r.to_sql(ty, out)
                }
            }
            Value::Text(t) => t.as_ref().to_sql(ty, out),
            Value::Blob(b) => b.as_ref().to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

fn binds(params: &[Value<'_>]) -> Vec<Bind> {
    params.iter().map(|v| Bind(v.clone().into_owned())).collect()
}

/// A result row as neutral values.
fn row_of(r: &tokio_postgres::Row) -> Result<Row, Error> {
    let mut out = Vec::with_capacity(r.len());
    for (i, col) in r.columns().iter().enumerate() {
        let t = col.type_();
        let v = if *t == Type::INT8 {
            r.try_get::<_, Option<i64>>(i)?.map(Value::Int)
        } else if *t == Type::INT4 {
            r.try_get::<_, Option<i32>>(i)?.map(|v| Value::Int(i64::from(v)))
        } else if *t == Type::INT2 {
            r.try_get::<_, Option<i16>>(i)?.map(|v| Value::Int(i64::from(v)))
        } else if *t == Type::BOOL {
            r.try_get::<_, Option<bool>>(i)?.map(|v| Value::Int(i64::from(v)))
        } else if *t == Type::FLOAT8 {
            r.try_get::<_, Option<f64>>(i)?.map(Value::Real)
        } else if *t == Type::FLOAT4 {
            r.try_get::<_, Option<f32>>(i)?.map(|v| Value::Real(f64::from(v)))
        } else if *t == Type::BYTEA {
            r.try_get::<_, Option<Vec<u8>>>(i)?.map(Value::from)
        } else {
            r.try_get::<_, Option<String>>(i)?.map(Value::from)
        };
        out.push(v.unwrap_or(Value::Null));
    }
    Ok(Row(out))
}

/// `?N` placeholders (SQL is written once, as SQLite writes them) → PostgreSQL's `$N`, outside
/// string literals.
pub(crate) fn dollar(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        if c == '\'' {
            quoted = !quoted;
        }
        if c == '?' && !quoted && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('$');
        } else {
            out.push(c);
        }
    }
    out
}

/// The store's own runtime: one thread that drives every connection and query.
struct Runtime {
    rt: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
}

impl Runtime {
    fn new() -> Result<Runtime, Error> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("mamori-postgres")
            .enable_all()
            .build()
            .map_err(|e| Error::Unavailable(format!("cannot start the store runtime: {e}")))?;
        Ok(Runtime { handle: rt.handle().clone(), rt: Some(rt) })
    }

    /// Runs `fut` on the store's thread and waits for it on this one.
    fn run<T: Send + 'static>(&self, fut: impl Future<Output = T> + Send + 'static) -> Result<T, Error> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.handle.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv().map_err(|_| Error::Unavailable("the store runtime stopped".into()))
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        // Never blocks, so the store may be dropped inside an async context.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// One pooled connection and its prepared statements.
struct PgConn {
    client: Arc<Client>,
    /// Prepared statements by their `?N` text.
    stmts: HashMap<String, Statement>,
    /// Statements to send with the next request on this connection, in the same flight: a
    /// transaction's `BEGIN` goes out with its first query, saving a round trip.
    prefix: String,
}

impl PgConn {
    fn queue(&mut self, sql: &str) {
        if !self.prefix.is_empty() {
            self.prefix.push_str("; ");
        }
        self.prefix.push_str(sql);
    }
}

/// At most this many statements are kept prepared per connection (search builds many shapes).
const STATEMENT_CACHE: usize = 512;

/// A checked-out connection; goes back to the pool when dropped unless it broke.
pub(crate) struct Lease<'s> {
    store: &'s Arc<Inner>,
    conn: Option<PgConn>,
}

impl Lease<'_> {
    fn conn(&mut self) -> Result<&mut PgConn, Error> {
        self.conn.as_mut().ok_or_else(|| Error::Unavailable("connection already returned".into()))
    }

    /// A prepared statement for `sql` (`?N` placeholders), from the cache when possible.
    fn prepare(&mut self, sql: &str) -> Result<Statement, Error> {
        let rt = &self.store.rt;
        let c = self.conn()?;
        if let Some(s) = c.stmts.get(sql) {
            return Ok(s.clone());
        }
        let client = c.client.clone();
        let text = dollar(sql);
        let st = rt.run(async move { client.prepare(&text).await })??;
        if c.stmts.len() >= STATEMENT_CACHE {
            c.stmts.clear();
        }
        c.stmts.insert(sql.to_string(), st.clone());
        Ok(st)
    }

    /// The client and whatever is queued to go out before the next request.
    fn take_prefix(&mut self) -> Result<(Arc<Client>, String), Error> {
        let c = self.conn()?;
        Ok((c.client.clone(), std::mem::take(&mut c.prefix)))
    }

    /// Runs `sql` with `params` and returns its rows.
    fn pg_query(&mut self, sql: &str, params: Vec<Bind>) -> Result<Vec<tokio_postgres::Row>, Error> {
        let st = self.prepare(sql)?;
        let (client, prefix) = self.take_prefix()?;
        Ok(self.store.rt.run(async move {
            let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
            if prefix.is_empty() {
                return client.query(&st, &refs).await;
            }
            // Pipelined: both requests leave before either answer arrives.
            let (p, r) = tokio::join!(client.batch_execute(&prefix), client.query(&st, &refs));
            p?;
            r
        })??)
    }

    /// Runs `sql` with `params` and returns the number of rows changed.
    fn pg_execute(&mut self, sql: &str, params: Vec<Bind>) -> Result<u64, Error> {
        let st = self.prepare(sql)?;
        let (client, prefix) = self.take_prefix()?;
        Ok(self.store.rt.run(async move {
            let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
            if prefix.is_empty() {
                return client.execute(&st, &refs).await;
            }
            let (p, r) = tokio::join!(client.batch_execute(&prefix), client.execute(&st, &refs));
            p?;
            r
        })??)
    }

    /// Runs several statements whose results are not needed, pipelined: all leave in one
    /// flight and the server runs them in order. Fails with the first error.
    fn pg_execute_many(&mut self, stmts: &[(&str, Vec<Value<'_>>)]) -> Result<(), Error> {
        if stmts.is_empty() {
            return Ok(());
        }
        // Index rows and versions: what makes the tables' statistics stale (`keep_statistics`).
        self.store.written.fetch_add(stmts.len() as u64, std::sync::atomic::Ordering::Relaxed);
        let mut prepared = Vec::with_capacity(stmts.len());
        for (sql, p) in stmts {
            prepared.push((self.prepare(sql)?, binds(p)));
        }
        let (client, prefix) = self.take_prefix()?;
        self.store.rt.run(async move {
            let refs: Vec<Vec<&(dyn ToSql + Sync)>> =
                prepared.iter().map(|(_, p)| p.iter().map(|x| x as &(dyn ToSql + Sync)).collect()).collect();
            let all = futures_util::future::try_join_all(
                prepared.iter().zip(&refs).map(|((st, _), r)| client.execute(st, r.as_slice())),
            );
            if prefix.is_empty() {
                return all.await.map(|_| ());
            }
            let (p, r) = tokio::join!(client.batch_execute(&prefix), all);
            p?;
            r.map(|_| ())
        })??;
        Ok(())
    }

    /// Runs statements without parameters (`COMMIT`, DDL…), after anything queued.
    fn pg_batch(&mut self, sql: &str) -> Result<(), Error> {
        let (client, mut text) = self.take_prefix()?;
        if !text.is_empty() {
            text.push_str("; ");
        }
        text.push_str(sql);
        Ok(self.store.rt.run(async move { client.batch_execute(&text).await })??)
    }

    /// Runs `f` in a transaction: `BEGIN` with `begin`'s options (sent with the first query),
    /// `COMMIT` if `f` succeeds, `ROLLBACK` otherwise. A read-only transaction's `COMMIT` is not
    /// waited for: it goes out when the connection is returned, before anyone else may use it.
    fn transaction<T, E: From<SqlError>>(
        &mut self,
        begin: &str,
        f: impl FnOnce(&mut Self) -> Result<T, E>,
    ) -> Result<T, E> {
        let sql = |e: Error| E::from(SqlError::from(e));
        self.conn().map_err(sql)?.queue(begin);
        match f(self) {
            Ok(v) => {
                if begin.ends_with("READ ONLY") {
                    self.conn().map_err(sql)?.queue("COMMIT");
                } else {
                    self.pg_batch("COMMIT").map_err(sql)?;
                }
                Ok(v)
            }
            Err(e) => {
                // A failed rollback leaves the connection unusable; it is then not pooled again.
                if self.pg_batch("ROLLBACK").is_err() {
                    self.conn = None;
                }
                Err(e)
            }
        }
    }

    /// A write transaction: serialised cluster-wide by [`WRITER_LOCK`].
    fn write<T, E: From<SqlError>>(&mut self, f: impl FnOnce(&mut Self) -> Result<T, E>) -> Result<T, E> {
        self.transaction("BEGIN ISOLATION LEVEL READ COMMITTED", |l| {
            l.pg_query("SELECT pg_advisory_xact_lock($1)", vec![Bind(Value::Int(WRITER_LOCK))])
                .map_err(|e| E::from(SqlError::from(e)))?;
            f(l)
        })
    }

    /// A read transaction on one snapshot.
    fn read<T, E: From<SqlError>>(&mut self, f: impl FnOnce(&mut Self) -> Result<T, E>) -> Result<T, E> {
        self.transaction("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", f)
    }
}

impl Conn for Lease<'_> {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn query(&mut self, sql: &str, params: &[Value<'_>]) -> Result<Vec<Row>, SqlError> {
        let rows = self.pg_query(sql, binds(params))?;
        Ok(rows.iter().map(row_of).collect::<Result<_, _>>()?)
    }

    fn execute(&mut self, sql: &str, params: &[Value<'_>]) -> Result<u64, SqlError> {
        Ok(self.pg_execute(sql, binds(params))?)
    }

    fn execute_many(&mut self, stmts: &[(&str, Vec<Value<'_>>)]) -> Result<(), SqlError> {
        Ok(self.pg_execute_many(stmts)?)
    }

    fn batch(&mut self, sql: &str) -> Result<(), SqlError> {
        Ok(self.pg_batch(sql)?)
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        match self.conn.take() {
            // Queued statements (a read's `COMMIT`) go out on the store's thread; the connection
            // is pooled again once they are done, so the caller does not wait for them.
            Some(mut c) if !c.prefix.is_empty() => {
                let inner = self.store.clone();
                self.store.rt.handle.spawn(async move {
                    let prefix = std::mem::take(&mut c.prefix);
                    let ok = c.client.batch_execute(&prefix).await.is_ok();
                    inner.give_back(ok.then_some(c));
                });
            }
            c => self.store.give_back(c),
        }
    }
}

struct Pool {
    target: Target,
    idle: Mutex<Vec<PgConn>>,
    out: Mutex<usize>,
    freed: Condvar,
    max: usize,
}

/// The PostgreSQL database: the runtime and the connection pool.
pub struct PgDb {
    inner: Arc<Inner>,
}

/// The runtime and the connection pool.
pub(crate) struct Inner {
    rt: Runtime,
    pool: Pool,
    /// The database URL without any password, for messages.
    display: String,
    /// Rows this node has written (pipelined statements of writes) since it last analyzed the
    /// record tables ([`PgDb::keep_statistics`]).
    written: std::sync::atomic::AtomicU64,
    /// About how many rows the record tables held when last analyzed.
    analyzed: std::sync::atomic::AtomicU64,
    /// Held while this node analyzes.
    analyzing: Mutex<()>,
}

/// The tables a search reads, whose statistics its plans depend on.
const RECORD_TABLES: &str =
    "resources, versions, identifier_index, care_index, sp_string, sp_token, sp_date, sp_number, sp_ref, sp_composite";

/// Rows written since the last `ANALYZE` that call for another, beyond a fifth of the rows then.
const ANALYZE_ROWS: u64 = 1000;

/// Connections per node: enough for the blocking pool's concurrent requests, few enough that
/// several nodes fit PostgreSQL's default `max_connections` (100).
const POOL_MAX: usize = 16;

/// Connects to `url` (`postgres://user@host:5432/db`) and brings the schema up to date.
/// Several nodes may start at once: migrations run under an advisory lock. The store reads time
/// from `clock`.
pub fn open(url: &str, clock: Arc<dyn Clock>) -> Result<PgStore, SqlError> {
    let target = Target::parse_inner(url)?;
    let db = PgDb {
        inner: Arc::new(Inner {
            rt: Runtime::new()?,
            pool: Pool {
                target,
                idle: Mutex::new(Vec::new()),
                out: Mutex::new(0),
                freed: Condvar::new(),
                max: POOL_MAX,
            },
            display: redact(url),
            written: std::sync::atomic::AtomicU64::new(0),
            analyzed: std::sync::atomic::AtomicU64::new(0),
            analyzing: Mutex::new(()),
        }),
    };
    db.migrate(&*clock)?;
    // The rows the tables held when PostgreSQL last analyzed them (its estimate; -1 never).
    let rows = db.lease()?.pg_query(
        "SELECT COALESCE(SUM(GREATEST(reltuples, 0)), 0)::BIGINT FROM pg_class WHERE relname = ANY(string_to_array($1, ', '))",
        vec![Bind(Value::Text(RECORD_TABLES.into()))],
    )?;
    let rows = rows.first().and_then(|r| r.try_get::<_, i64>(0).ok()).unwrap_or(0);
    db.inner.analyzed.store(u64::try_from(rows).unwrap_or(0), std::sync::atomic::Ordering::Relaxed);
    Ok(SqlStore::new(db, clock))
}

impl PgDb {
    fn lease(&self) -> Result<Lease<'_>, Error> {
        lease(&self.inner)
    }

    /// Analyzes the record tables when this node has written more than [`ANALYZE_ROWS`] rows
    /// and a fifth of what they held at the last `ANALYZE` since. PostgreSQL plans a search from
    /// its statistics, which autovacuum refreshes at most once a minute and only after a tenth of
    /// a table changed: a store filled in a burst (an import, a batch, a test) was planned as if
    /// its tables held a row each — a chain checked per candidate read every reference of the
    /// type for each candidate (13 s for one statement over 2,000 Observations; 6 ms analyzed).
    /// Runs after the write that crosses the mark has committed, before it returns (a few ms on
    /// a small store; `ANALYZE` samples at most 30,000 rows a table on a large one, and the mark
    /// moves with the store). A failure is logged: statistics are never worth a failed write.
    fn keep_statistics(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        let due = |i: &Inner| i.written.load(Relaxed) > ANALYZE_ROWS + i.analyzed.load(Relaxed) / 5;
        if !due(&self.inner) {
            return;
        }
        // Another thread analyzing covers this write's rows too.
        let Ok(_analyzing) = self.inner.analyzing.try_lock() else { return };
        if !due(&self.inner) {
            return;
        }
        let written = self.inner.written.swap(0, Relaxed);
        match self.lease().and_then(|mut l| l.pg_batch(&format!("ANALYZE {RECORD_TABLES}"))) {
            Ok(()) => {
                self.inner.analyzed.fetch_add(written, Relaxed);
            }
            Err(e) => {
                self.inner.written.fetch_add(written, Relaxed);
                tracing::warn!(error = %e, "ANALYZE of the record tables failed; plans may use stale statistics");
            }
        }
    }

    fn migrate(&self, clock: &dyn Clock) -> Result<(), SqlError> {
        let mut l = self.lease()?;
        l.transaction("BEGIN", |l| -> Result<(), SqlError> {
            // Several nodes starting at once: the first migrates, the others wait and find it done.
            l.pg_query("SELECT pg_advisory_xact_lock($1)", vec![Bind(Value::Int(MIGRATE_LOCK))])?;
            mamori_store_sql::schema::migrate(l, clock.now().0)
        })
    }
}

impl Db for PgDb {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn describe(&self) -> String {
        self.inner.display.clone()
    }

    fn read<T, E: From<SqlError>>(&self, f: impl FnOnce(&mut dyn Conn) -> Result<T, E>) -> Result<T, E> {
        let mut l = self.lease().map_err(|e| E::from(e.into()))?;
        l.read(|l| f(l))
    }

    fn read_statement<T, E: From<SqlError>>(&self, f: impl FnOnce(&mut dyn Conn) -> Result<T, E>) -> Result<T, E> {
        let mut l = self.lease().map_err(|e| E::from(e.into()))?;
        f(&mut l)
    }

    fn write<T, E: From<SqlError>>(&self, f: impl FnOnce(&mut dyn Conn) -> Result<T, E>) -> Result<T, E> {
        let mut l = self.lease().map_err(|e| E::from(e.into()))?;
        let out = l.write(|l| f(l));
        drop(l);
        if out.is_ok() {
            self.keep_statistics();
        }
        out
    }

    /// One statement outside the writer lock (single-row token and session state, atomic by
    /// itself); PostgreSQL has made it durable when this returns.
    fn exec(&self, sql: &str, params: &[Value<'_>]) -> Result<u64, SqlError> {
        Ok(self.lease()?.pg_execute(sql, binds(params))?)
    }
}

/// `postgres://user:secret@host/db` → `postgres://user@host/db`.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let (head, rest) = url.split_at(s + 3);
            let userinfo = rest.get(..at - s - 3).unwrap_or("");
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{head}{user}{}", url.get(at..).unwrap_or(""))
        }
        _ => url.to_string(),
    }
}

impl Inner {
    /// Returns a connection to the pool (unless it broke) and frees its slot.
    fn give_back(&self, c: Option<PgConn>) {
        if let Some(c) = c
            && !c.client.is_closed()
            && let Ok(mut idle) = self.pool.idle.lock()
        {
            idle.push(c);
        }
        if let Ok(mut n) = self.pool.out.lock() {
            *n = n.saturating_sub(1);
            self.pool.freed.notify_one();
        }
    }

    fn connect(&self) -> Result<PgConn, Error> {
        let target = self.pool.target.clone();
        let handle = self.rt.handle.clone();
        let client = self.rt.run(async move {
            let (client, driver) = target.connect().await?;
            handle.spawn(driver);
            // A node that stalls inside a transaction (and so holds the writer lock) is cut off
            // by the server after 30 s; a writer waits at most 30 s for the lock, then fails
            // (503/500) rather than hanging.
            client.batch_execute("SET idle_in_transaction_session_timeout = '30s'; SET lock_timeout = '30s'").await?;
            Ok::<_, tokio_postgres::Error>(client)
        })??;
        Ok(PgConn { client: Arc::new(client), stmts: HashMap::new(), prefix: String::new() })
    }
}

/// A connection from the pool (waiting while [`POOL_MAX`] are out).
fn lease(inner: &Arc<Inner>) -> Result<Lease<'_>, Error> {
    inner.lease_slot()?;
    // From here the slot is released by the lease's drop.
    let mut lease = Lease { store: inner, conn: None };
    let idle = inner.pool.idle.lock().ok().and_then(|mut v| v.pop());
    lease.conn = Some(match idle {
        Some(c) => c,
        None => inner.connect().map_err(|e| match e {
            Error::Pg(p) => Error::Unavailable(format!("cannot connect to {}: {}", inner.display, Error::text(&p))),
            other => other,
        })?,
    });
    Ok(lease)
}

impl Inner {
    fn lease_slot(&self) -> Result<(), Error> {
        let poisoned = |_| Error::Unavailable("pool lock poisoned".into());
        let mut out = self.pool.out.lock().map_err(poisoned)?;
        while *out >= self.pool.max {
            out = self.pool.freed.wait(out).map_err(poisoned)?;
        }
        *out += 1;
        Ok(())
    }
}

/// Creates database `name` through the server at `admin_url` (tests, benchmarks, first set-up).
/// The collation is byte order ("C"), which prefix searches and paging rely on.
pub fn create_database(admin_url: &str, name: &str) -> Result<(), SqlError> {
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(Error::Unavailable(format!("`{name}` is not a plain database name")).into());
    }
    Ok(admin(
        admin_url,
        format!("CREATE DATABASE {name} TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'"),
    )?)
}

/// Drops database `name` (closing its connections).
pub fn drop_database(admin_url: &str, name: &str) -> Result<(), SqlError> {
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(Error::Unavailable(format!("`{name}` is not a plain database name")).into());
    }
    Ok(admin(admin_url, format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))?)
}

/// Runs SQL statements on the database at `url` outside any store (operators' tools, tests).
pub fn execute_batch(url: &str, sql: &str) -> Result<(), SqlError> {
    Ok(admin(url, sql.to_string())?)
}

/// The first column of the first row of `sql` on the database at `url`, as an integer.
pub fn query_i64(url: &str, sql: &str) -> Result<i64, SqlError> {
    let target = Target::parse_inner(url)?;
    let sql = sql.to_string();
    let rt = Runtime::new()?;
    rt.run(async move {
        let (client, driver) = target.connect().await?;
        let driver = tokio::spawn(driver);
        let r = client.query_one(&sql, &[]).await.and_then(|row| row.try_get::<_, i64>(0));
        drop(client);
        let _ = driver.await;
        r
    })?
    .map_err(|e| Error::from(e).into())
}

fn admin(admin_url: &str, sql: String) -> Result<(), Error> {
    let target = Target::parse_inner(admin_url)?;
    let rt = Runtime::new()?;
    rt.run(async move {
        let (client, driver) = target.connect().await?;
        let driver = tokio::spawn(driver);
        let r = client.batch_execute(&sql).await;
        drop(client);
        let _ = driver.await;
        r
    })??;
    Ok(())
}

#[cfg(test)]
mod error_kind_tests {
    use super::pg_kind;
    use mamori_records::StoreError;

    /// SQLSTATEs by what a client should do: retry (busy: lock_timeout, statement timeout,
    /// serialization failure, deadlock, too many connections), wait for the server (unavailable),
    /// or call for a restore (corrupt).
    #[test]
    fn postgres_failures_have_their_kind() {
        let kind = |code: &str| pg_kind(code)(String::new());
        for busy in ["55P03", "57014", "40001", "40P01", "53300"] {
            assert_eq!(kind(busy), StoreError::Busy(String::new()), "{busy}");
        }
        for down in ["57P01", "53100", "08006"] {
            assert_eq!(kind(down), StoreError::Unavailable(String::new()), "{down}");
        }
        assert_eq!(kind("XX001"), StoreError::Corrupt(String::new()));
        assert_eq!(kind("23505"), StoreError::Other(String::new()));
    }
}

#[cfg(test)]
mod dialect_tests {
    use super::dollar;

    #[test]
    fn placeholders_become_dollars_outside_literals() {
        assert_eq!(
            dollar("a = ?1 AND b LIKE ?12 ESCAPE '\\' AND c = '?3'"),
            "a = $1 AND b LIKE $12 ESCAPE '\\' AND c = '?3'"
        );
    }
}
