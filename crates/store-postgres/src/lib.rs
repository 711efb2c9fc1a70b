//! The PostgreSQL store, for several stateless nodes on one database (issue #8, O1). It
//! implements the same traits as the embedded store — records, OAuth, identity, the audit log
//! and the configuration path — so every node shares every piece of state.
//!
//! Design (see `docs/DEPLOYMENT.md`):
//! - **One writer at a time, cluster-wide.** Every write transaction first takes the
//!   transaction-scoped advisory lock [`WRITER_LOCK`]. Writes are then serialised exactly as the
//!   embedded store's single writer serialises them: version numbers, conditional creates and
//!   `If-Match` checks see every earlier commit, whichever node made it.
//! - **The audit sequencer is that lock.** Audit entries are inserted under it with the next
//!   leaf index (`MAX(idx) + 1`) and a time never before the previous entry's, so the log has one
//!   gap-free sequence whichever node wrote the entry; the committed entries are always a prefix.
//!   Group commit is kept: each node's audit writer thread takes every queued append into one
//!   transaction (one lock, one WAL flush), and PostgreSQL's own group commit merges the flushes
//!   of concurrent transactions.
//! - **Integration** (tiles and signed checkpoints) takes its own advisory lock, so one node at a
//!   time extends the tree from the committed prefix; every node signs with the same key.
//! - Reads run in `REPEATABLE READ READ ONLY` transactions: one snapshot per request.
//!
//! The store's traits are synchronous. Queries run on the store's own runtime thread and the
//! caller waits on a channel, so the store may be called from any thread — a blocking-pool
//! thread, a test's runtime, the CLI — without nesting runtimes.

mod audit;
mod config;
mod identity;
mod oauth;
mod records;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Condvar, Mutex};

use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, NoTls, Row, Statement};
use tokio_postgres_rustls::MakeRustlsConnect;

pub use mamori_store_sqlite::{ConfigChange, ConfigEntry};
use mamori_store_sqlite::{decode, decode_all};

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// PostgreSQL failed.
    #[error("postgres: {}", Error::text(.0))]
    Pg(#[from] tokio_postgres::Error),
    /// A stored value did not decode.
    #[error("corrupt stored value: {0}")]
    Corrupt(String),
    /// The connection pool or the store's runtime failed.
    #[error("store unavailable: {0}")]
    Unavailable(String),
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
            Error::Pg(e) => match e.code() {
                Some(code) => pg_kind(code.code()),
                // No SQLSTATE: the connection or its I/O failed.
                None => K::Unavailable,
            },
            Error::Corrupt(_) => K::Corrupt,
            Error::Unavailable(_) => K::Unavailable,
            Error::Stale { .. } => K::Other,
        }
    }

    /// Whether this is a configuration change refused because its entry changed meanwhile.
    pub fn is_stale(&self) -> bool {
        matches!(self, Error::Stale { .. })
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
    pub fn parse(url: &str) -> Result<Target, Error> {
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
/// The advisory-lock key of audit integration (`"mamoriIN"`).
const INTEGRATE_LOCK: i64 = 0x6d61_6d6f_7269_494e;
/// The advisory-lock key of schema migration (`"mamoriMG"`).
const MIGRATE_LOCK: i64 = 0x6d61_6d6f_7269_4d47;

/// A boxed query parameter that can cross to the store's runtime thread.
pub(crate) type P = Box<dyn ToSql + Send + Sync>;

/// Boxes parameters: `params![a, b]`.
macro_rules! params {
    ($($x:expr),* $(,)?) => { vec![$(Box::new($x) as $crate::P),*] };
}
pub(crate) use params;

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
pub(crate) struct Conn {
    client: Arc<Client>,
    stmts: HashMap<String, Statement>,
    /// Statements to send with the next request on this connection, in the same flight: a
    /// transaction's `BEGIN` goes out with its first query, saving a round trip.
    prefix: String,
}

impl Conn {
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
    conn: Option<Conn>,
}

impl Lease<'_> {
    fn conn(&mut self) -> Result<&mut Conn, Error> {
        self.conn.as_mut().ok_or_else(|| Error::Unavailable("connection already returned".into()))
    }

    /// A prepared statement for `sql`, from the cache when possible.
    pub(crate) fn prepare(&mut self, sql: &str) -> Result<Statement, Error> {
        let rt = &self.store.rt;
        let c = self.conn()?;
        if let Some(s) = c.stmts.get(sql) {
            return Ok(s.clone());
        }
        let client = c.client.clone();
        let text = sql.to_string();
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
    pub(crate) fn query(&mut self, sql: &str, params: Vec<P>) -> Result<Vec<Row>, Error> {
        let st = self.prepare(sql)?;
        let (client, prefix) = self.take_prefix()?;
        Ok(self.store.rt.run(async move {
            let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p.as_ref() as &(dyn ToSql + Sync)).collect();
            if prefix.is_empty() {
                return client.query(&st, &refs).await;
            }
            // Pipelined: both requests leave before either answer arrives.
            let (p, r) = tokio::join!(client.batch_execute(&prefix), client.query(&st, &refs));
            p?;
            r
        })??)
    }

    /// Runs `sql` with `params` and returns the first row, if any.
    pub(crate) fn opt(&mut self, sql: &str, params: Vec<P>) -> Result<Option<Row>, Error> {
        Ok(self.query(sql, params)?.into_iter().next())
    }

    /// Runs `sql` with `params` and returns the number of rows changed.
    pub(crate) fn execute(&mut self, sql: &str, params: Vec<P>) -> Result<u64, Error> {
        let st = self.prepare(sql)?;
        let (client, prefix) = self.take_prefix()?;
        Ok(self.store.rt.run(async move {
            let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p.as_ref() as &(dyn ToSql + Sync)).collect();
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
    pub(crate) fn execute_many(&mut self, stmts: Vec<(&str, Vec<P>)>) -> Result<(), Error> {
        if stmts.is_empty() {
            return Ok(());
        }
        let mut prepared = Vec::with_capacity(stmts.len());
        for (sql, p) in stmts {
            prepared.push((self.prepare(sql)?, p));
        }
        let (client, prefix) = self.take_prefix()?;
        self.store.rt.run(async move {
            let refs: Vec<Vec<&(dyn ToSql + Sync)>> =
                prepared.iter().map(|(_, p)| p.iter().map(|x| x.as_ref() as &(dyn ToSql + Sync)).collect()).collect();
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
    pub(crate) fn batch(&mut self, sql: &str) -> Result<(), Error> {
        let (client, mut text) = self.take_prefix()?;
        if !text.is_empty() {
            text.push_str("; ");
        }
        text.push_str(sql);
        Ok(self.store.rt.run(async move { client.batch_execute(&text).await })??)
    }

    /// The parameter types of a prepared statement (to bind dynamic arguments as they are typed).
    pub(crate) fn param_types(&mut self, sql: &str) -> Result<Vec<Type>, Error> {
        Ok(self.prepare(sql)?.params().to_vec())
    }

    /// Runs `f` in a transaction: `BEGIN` with `begin`'s options (sent with the first query),
    /// `COMMIT` if `f` succeeds, `ROLLBACK` otherwise. A read-only transaction's `COMMIT` is not
    /// waited for: it goes out when the connection is returned, before anyone else may use it.
    pub(crate) fn transaction<T, E: From<Error>>(
        &mut self,
        begin: &str,
        f: impl FnOnce(&mut Self) -> Result<T, E>,
    ) -> Result<T, E> {
        self.conn()?.queue(begin);
        match f(self) {
            Ok(v) => {
                if begin.ends_with("READ ONLY") {
                    self.conn()?.queue("COMMIT");
                } else {
                    self.batch("COMMIT")?;
                }
                Ok(v)
            }
            Err(e) => {
                // A failed rollback leaves the connection unusable; it is then not pooled again.
                if self.batch("ROLLBACK").is_err() {
                    self.conn = None;
                }
                Err(e)
            }
        }
    }

    /// A write transaction: serialised cluster-wide by [`WRITER_LOCK`].
    pub(crate) fn write<T, E: From<Error>>(&mut self, f: impl FnOnce(&mut Self) -> Result<T, E>) -> Result<T, E> {
        self.transaction("BEGIN ISOLATION LEVEL READ COMMITTED", |l| {
            l.query("SELECT pg_advisory_xact_lock($1)", params![WRITER_LOCK])?;
            f(l)
        })
    }

    /// A read transaction on one snapshot.
    pub(crate) fn read<T, E: From<Error>>(&mut self, f: impl FnOnce(&mut Self) -> Result<T, E>) -> Result<T, E> {
        self.transaction("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", f)
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
    idle: Mutex<Vec<Conn>>,
    out: Mutex<usize>,
    freed: Condvar,
    max: usize,
}

/// The PostgreSQL store.
pub struct PgStore {
    inner: Arc<Inner>,
    audit_tx: std::sync::OnceLock<std::sync::mpsc::Sender<audit::Job>>,
}

/// The runtime and the connection pool, shared with the audit writer thread.
pub(crate) struct Inner {
    rt: Runtime,
    pool: Pool,
    /// The database URL without any password, for messages.
    display: String,
}

/// Connections per node: enough for the blocking pool's concurrent requests, few enough that
/// several nodes fit PostgreSQL's default `max_connections` (100).
const POOL_MAX: usize = 16;

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

impl PgStore {
    /// Connects to `url` (`postgres://user@host:5432/db`) and brings the schema up to date.
    /// Several nodes may start at once: migrations run under an advisory lock.
    pub fn open(url: &str) -> Result<PgStore, Error> {
        let target = Target::parse(url)?;
        let store = PgStore {
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
            }),
            audit_tx: std::sync::OnceLock::new(),
        };
        store.migrate()?;
        Ok(store)
    }

    /// The database this store uses, without any password.
    pub fn describe(&self) -> String {
        self.inner.display.clone()
    }

    /// A connection from the pool.
    pub(crate) fn lease(&self) -> Result<Lease<'_>, Error> {
        lease(&self.inner)
    }
}

impl Inner {
    /// Returns a connection to the pool (unless it broke) and frees its slot.
    fn give_back(&self, c: Option<Conn>) {
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

    fn connect(&self) -> Result<Conn, Error> {
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
        Ok(Conn { client: Arc::new(client), stmts: HashMap::new(), prefix: String::new() })
    }
}

/// A connection from the pool (waiting while [`POOL_MAX`] are out).
pub(crate) fn lease(inner: &Arc<Inner>) -> Result<Lease<'_>, Error> {
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
        {
            let poisoned = |_| Error::Unavailable("pool lock poisoned".into());
            let mut out = self.pool.out.lock().map_err(poisoned)?;
            while *out >= self.pool.max {
                out = self.pool.freed.wait(out).map_err(poisoned)?;
            }
            *out += 1;
        }
        Ok(())
    }
}

impl PgStore {
    fn migrate(&self) -> Result<(), Error> {
        let mut l = self.lease()?;
        l.transaction("BEGIN", |l| -> Result<(), Error> {
            // Several nodes starting at once: the first migrates, the others wait and find it done.
            l.query("SELECT pg_advisory_xact_lock($1)", params![MIGRATE_LOCK])?;
            l.batch("CREATE TABLE IF NOT EXISTS mamori_schema (version BIGINT PRIMARY KEY, applied BIGINT NOT NULL)")?;
            let have: i64 =
                l.opt("SELECT COALESCE(MAX(version), 0) FROM mamori_schema", params![])?.map_or(0, |r| r.get(0));
            for (i, step) in MIGRATIONS.iter().enumerate() {
                let version = i64::try_from(i + 1).unwrap_or(i64::MAX);
                if version > have {
                    l.batch(step)?;
                    l.execute(
                        "INSERT INTO mamori_schema (version, applied) VALUES ($1, $2)",
                        params![version, now_micros()],
                    )?;
                    tracing::info!(version, "postgres schema migrated");
                }
            }
            Ok(())
        })
    }

    /// A quick liveness check for `/healthz`.
    pub fn ping(&self) -> Result<(), Error> {
        self.lease()?.query("SELECT 1", params![])?;
        Ok(())
    }

    /// Sets a node-shared value if it is not set yet; returns the value now stored (the first
    /// node's, when several race).
    pub fn flag_init(&self, name: &str, value: &str) -> Result<String, Error> {
        let mut l = self.lease()?;
        // Set once, read at every start: read first, write only the first time.
        if let Some(r) = l.opt("SELECT value FROM store_flags WHERE name = $1", params![name.to_string()])? {
            return Ok(r.try_get(0)?);
        }
        l.execute(
            "INSERT INTO store_flags (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
            params![name.to_string(), value.to_string()],
        )?;
        l.opt("SELECT value FROM store_flags WHERE name = $1", params![name.to_string()])?
            .map(|r| r.get(0))
            .ok_or_else(|| Error::Corrupt(format!("store flag `{name}` vanished")))
    }

    /// `(commits, fsyncs)`: PostgreSQL makes every commit durable itself; not counted here.
    pub fn durability_stats(&self) -> (u64, u64) {
        (0, 0)
    }
}

/// Unix microseconds now.
pub(crate) fn now_micros() -> i64 {
    i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000).unwrap_or(i64::MAX)
}

/// Creates database `name` through the server at `admin_url` (tests, benchmarks, first set-up).
/// The collation is byte order ("C"), which prefix searches and paging rely on.
pub fn create_database(admin_url: &str, name: &str) -> Result<(), Error> {
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(Error::Unavailable(format!("`{name}` is not a plain database name")));
    }
    admin(admin_url, format!("CREATE DATABASE {name} TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'"))
}

/// Drops database `name` (closing its connections).
pub fn drop_database(admin_url: &str, name: &str) -> Result<(), Error> {
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(Error::Unavailable(format!("`{name}` is not a plain database name")));
    }
    admin(admin_url, format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
}

/// Runs SQL statements on the database at `url` outside any store (operators' tools, tests).
pub fn execute_batch(url: &str, sql: &str) -> Result<(), Error> {
    admin(url, sql.to_string())
}

/// The first column of the first row of `sql` on the database at `url`, as an integer.
pub fn query_i64(url: &str, sql: &str) -> Result<i64, Error> {
    let target = Target::parse(url)?;
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
    .map_err(Error::from)
}

fn admin(admin_url: &str, sql: String) -> Result<(), Error> {
    let target = Target::parse(admin_url)?;
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

/// Schema migrations, applied in order once each (`mamori_schema` records them). Text columns
/// compared by range (prefix search, paging) use the "C" collation: byte order, as in SQLite.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE versions (
    seq BIGSERIAL PRIMARY KEY,
    type TEXT COLLATE "C" NOT NULL,
    id TEXT COLLATE "C" NOT NULL,
    version BIGINT NOT NULL,
    last_updated BIGINT NOT NULL,
    method TEXT NOT NULL,
    body TEXT,
    sha256 BYTEA NOT NULL,
    entered_by TEXT NOT NULL,
    pending_author TEXT,
    server_written BOOLEAN NOT NULL DEFAULT FALSE,
    patient TEXT,
    classes TEXT NOT NULL DEFAULT '',
    lab BOOLEAN NOT NULL DEFAULT FALSE,
    UNIQUE (type, id, version)
);
CREATE INDEX versions_by_time ON versions (last_updated);
CREATE INDEX versions_by_type ON versions (type, seq);
CREATE TABLE resources (
    type TEXT COLLATE "C" NOT NULL,
    id TEXT COLLATE "C" NOT NULL,
    seq BIGINT NOT NULL,
    PRIMARY KEY (type, id)
);
CREATE TABLE identifier_index (
    type TEXT COLLATE "C" NOT NULL, id TEXT COLLATE "C" NOT NULL, system TEXT COLLATE "C" NOT NULL, value TEXT COLLATE "C" NOT NULL
);
CREATE INDEX identifier_lookup ON identifier_index (type, value, system);
CREATE INDEX identifier_owner ON identifier_index (type, id);
CREATE TABLE care_index (
    type TEXT COLLATE "C" NOT NULL, id TEXT COLLATE "C" NOT NULL, patient TEXT COLLATE "C" NOT NULL, member TEXT COLLATE "C" NOT NULL
);
CREATE INDEX care_lookup ON care_index (patient, member);
CREATE INDEX care_owner ON care_index (type, id);
CREATE TABLE break_glass (
    id TEXT PRIMARY KEY,
    username TEXT NOT NULL,
    patient TEXT NOT NULL,
    reason TEXT NOT NULL,
    granted BIGINT NOT NULL,
    expires BIGINT NOT NULL,
    reviewed_at BIGINT,
    reviewed_by TEXT,
    review_note TEXT
);
CREATE INDEX break_glass_lookup ON break_glass (username, patient, expires);
CREATE TABLE sp_string (type TEXT COLLATE "C" NOT NULL, id TEXT COLLATE "C" NOT NULL, param TEXT COLLATE "C" NOT NULL, norm TEXT COLLATE "C" NOT NULL, exact TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (type, id, param, norm, exact));
CREATE INDEX sp_string_value ON sp_string (type, param, norm);
CREATE TABLE sp_token (type TEXT COLLATE "C" NOT NULL, id TEXT COLLATE "C" NOT NULL, param TEXT COLLATE "C" NOT NULL, system TEXT COLLATE "C" NOT NULL, code TEXT COLLATE "C" NOT NULL, text TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (type, id, param, code, system, text));
CREATE INDEX sp_token_value ON sp_token (type, param, code, system);
CREATE TABLE sp_date (type TEXT COLLATE "C" NOT NULL, id TEXT COLLATE "C" NOT NULL, param TEXT COLLATE "C" NOT NULL, lo BIGINT NOT NULL, hi BIGINT NOT NULL,
    PRIMARY KEY (type, id, param, lo, hi));
CREATE INDEX sp_date_value ON sp_date (type, param, lo);
CREATE TABLE sp_number (type TEXT COLLATE "C" NOT NULL, id TEXT COLLATE "C" NOT NULL, param TEXT COLLATE "C" NOT NULL, lo DOUBLE PRECISION NOT NULL, hi DOUBLE PRECISION NOT NULL, system TEXT COLLATE "C" NOT NULL, code TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (type, id, param, lo, hi, system, code));
CREATE INDEX sp_number_value ON sp_number (type, param, lo);
CREATE TABLE sp_ref (type TEXT COLLATE "C" NOT NULL, id TEXT COLLATE "C" NOT NULL, param TEXT COLLATE "C" NOT NULL, target_type TEXT COLLATE "C" NOT NULL, target_id TEXT COLLATE "C" NOT NULL, url TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (type, id, param, target_type, target_id, url));
CREATE INDEX sp_ref_value ON sp_ref (type, param, target_id, target_type);
CREATE TABLE sp_composite (type TEXT COLLATE "C" NOT NULL, id TEXT COLLATE "C" NOT NULL, param TEXT COLLATE "C" NOT NULL, system TEXT COLLATE "C" NOT NULL, code TEXT COLLATE "C" NOT NULL, s_system TEXT COLLATE "C" NOT NULL, s_code TEXT COLLATE "C" NOT NULL, lo DOUBLE PRECISION, hi DOUBLE PRECISION);
CREATE INDEX sp_composite_value ON sp_composite (type, param, code, system);
CREATE INDEX sp_composite_owner ON sp_composite (type, id, param);
CREATE TABLE store_flags (name TEXT PRIMARY KEY, value TEXT NOT NULL);

-- Append-only tables (真正性): refuse UPDATE, DELETE and TRUNCATE. Versions may be deleted only by
-- a purge, which sets `mamori.purge` for its own transaction.
CREATE FUNCTION mamori_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION '%', TG_ARGV[0]; END $$;
CREATE FUNCTION mamori_versions_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('mamori.purge', true) IS DISTINCT FROM 'on' THEN
        RAISE EXCEPTION 'versions are removed only by a purge';
    END IF;
    RETURN OLD;
END $$;
CREATE TRIGGER versions_no_update BEFORE UPDATE ON versions FOR EACH ROW EXECUTE FUNCTION mamori_refuse('versions are immutable');
CREATE TRIGGER versions_no_delete BEFORE DELETE ON versions FOR EACH ROW EXECUTE FUNCTION mamori_versions_delete();
CREATE TRIGGER versions_no_truncate BEFORE TRUNCATE ON versions FOR EACH STATEMENT EXECUTE FUNCTION mamori_refuse('versions are immutable');

CREATE TABLE config_versions (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    version BIGINT NOT NULL,
    value TEXT,
    changed_by TEXT NOT NULL,
    changed_at BIGINT NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (kind, key, version)
);
CREATE TRIGGER config_no_update BEFORE UPDATE OR DELETE ON config_versions FOR EACH ROW EXECUTE FUNCTION mamori_refuse('configuration history is append-only');
CREATE TRIGGER config_no_truncate BEFORE TRUNCATE ON config_versions FOR EACH STATEMENT EXECUTE FUNCTION mamori_refuse('configuration history is append-only');
CREATE TABLE access_tokens (
    sha256 BYTEA PRIMARY KEY,
    client_id TEXT NOT NULL,
    subject TEXT,
    fhir_user TEXT,
    scope TEXT NOT NULL,
    issued_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked BOOLEAN NOT NULL DEFAULT FALSE,
    patient TEXT,
    family TEXT
);
CREATE INDEX access_tokens_by_client ON access_tokens (client_id);
CREATE INDEX access_tokens_by_subject ON access_tokens (subject);
CREATE INDEX access_tokens_by_family ON access_tokens (family);
CREATE TABLE client_assertions (
    client_id TEXT NOT NULL,
    jti TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (client_id, jti)
);
CREATE TABLE auth_codes (
    sha256 BYTEA PRIMARY KEY,
    data TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    used BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE TABLE refresh_tokens (
    sha256 BYTEA PRIMARY KEY,
    family TEXT NOT NULL,
    client_id TEXT NOT NULL,
    subject TEXT NOT NULL,
    fhir_user TEXT,
    scope TEXT NOT NULL,
    patient TEXT,
    issued_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used BOOLEAN NOT NULL DEFAULT FALSE,
    revoked BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX refresh_by_family ON refresh_tokens (family);
CREATE INDEX refresh_by_subject ON refresh_tokens (subject);
CREATE TABLE audit_entries (
    idx BIGINT PRIMARY KEY,
    time BIGINT NOT NULL,
    entry BYTEA NOT NULL
);
CREATE INDEX audit_by_time ON audit_entries (time);
CREATE TRIGGER audit_no_change BEFORE UPDATE OR DELETE ON audit_entries FOR EACH ROW EXECUTE FUNCTION mamori_refuse('the audit trail is append-only');
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit_entries FOR EACH STATEMENT EXECUTE FUNCTION mamori_refuse('the audit trail is append-only');
CREATE TABLE audit_tiles (
    level INTEGER NOT NULL,
    idx BIGINT NOT NULL,
    hashes BYTEA NOT NULL,
    PRIMARY KEY (level, idx)
);
CREATE TABLE audit_checkpoints (
    size BIGINT PRIMARY KEY,
    created BIGINT NOT NULL,
    note TEXT NOT NULL
);
CREATE TABLE audit_state (name TEXT PRIMARY KEY, value BIGINT NOT NULL);
CREATE TABLE credentials (username TEXT PRIMARY KEY, data TEXT NOT NULL);
CREATE TABLE auth_state (username TEXT PRIMARY KEY, data TEXT NOT NULL, last_login BIGINT);
CREATE TABLE sessions (id TEXT PRIMARY KEY, username TEXT NOT NULL, data TEXT NOT NULL);
CREATE INDEX sessions_by_user ON sessions (username);
"#,
    r#"
-- Workflow state (access-review campaigns) in a table of its own (#23): versioned and audited like
-- configuration, but not counted as a configuration change.
CREATE TABLE workflow_versions (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    version BIGINT NOT NULL,
    value TEXT,
    changed_by TEXT NOT NULL,
    changed_at BIGINT NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (kind, key, version)
);
CREATE TRIGGER workflow_no_update BEFORE UPDATE OR DELETE ON workflow_versions FOR EACH ROW EXECUTE FUNCTION mamori_refuse('workflow history is append-only');
CREATE TRIGGER workflow_no_truncate BEFORE TRUNCATE ON workflow_versions FOR EACH STATEMENT EXECUTE FUNCTION mamori_refuse('workflow history is append-only');
INSERT INTO workflow_versions (kind, key, version, value, changed_by, changed_at, reason)
SELECT kind, key, version, value, changed_by, changed_at, reason FROM config_versions WHERE kind = 'access-review';
"#,
];

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
