//! Test harness: a fresh data directory, the real router, a registered client and its token.

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use mamori::Node;
use mamori_oauth::{Client, sha256_hex};
use mamori_store_sql::ConfigChange;
use serde_json::Value;
use tower::ServiceExt;

pub const SECRET: &str = "test-secret-0123456789abcdefghijklmnop";

pub struct Harness {
    pub dir: tempfile::TempDir,
    pub node: std::sync::Arc<Node>,
    pub app: Router,
    pub token: String,
    /// The test's own PostgreSQL database, dropped last (none on the embedded store).
    pub db: Option<TestDb>,
}

/// The backend under test: `MAMORI_TEST_BACKEND=postgres` runs the suite on PostgreSQL
/// (`MAMORI_TEST_PG`, default the local server with trust auth); anything else, the embedded store.
pub fn postgres_admin() -> Option<String> {
    match std::env::var("MAMORI_TEST_BACKEND").as_deref() {
        Ok("postgres") => Some(
            std::env::var("MAMORI_TEST_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into()),
        ),
        _ => None,
    }
}

/// A database created for one test and dropped (with its connections) when this is dropped.
pub struct TestDb {
    admin: String,
    pub name: String,
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Err(e) = mamori_store_postgres::drop_database(&self.admin, &self.name) {
            eprintln!("could not drop test database {}: {e}", self.name);
        }
    }
}

/// On PostgreSQL: a fresh database for the data directory `dir`, named in its `mamori.toml`
/// (`[store] database`) so the server and every CLI command on `dir` use it. `None` on the
/// embedded store.
pub fn store_for(dir: &std::path::Path) -> Option<TestDb> {
    let (db, url) = new_database()?;
    std::fs::create_dir_all(dir).unwrap();
    let cfg = dir.join("mamori.toml");
    let mut text = std::fs::read_to_string(&cfg).unwrap_or_default();
    text.push_str(&format!("\n[store]\ndatabase = \"{url}\"\n"));
    std::fs::write(&cfg, text).unwrap();
    Some(db)
}

/// On PostgreSQL: a new, empty database (dropped with the guard) and its URL.
pub fn new_database() -> Option<(TestDb, String)> {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let admin = postgres_admin()?;
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = format!("mamori_t_{}_{n}_{}", std::process::id(), now_secs() % 100_000);
    mamori_store_postgres::create_database(&admin, &name).unwrap();
    let base = admin.rsplit_once('/').map(|(b, _)| b.to_string()).unwrap_or(admin.clone());
    let url = format!("{base}/{name}");
    Some((TestDb { admin, name }, url))
}

/// Opens a node on `dir` (its own database on PostgreSQL).
pub fn open_node(dir: &std::path::Path) -> (Node, Option<TestDb>) {
    let db = if dir.join("mamori.toml").exists()
        && std::fs::read_to_string(dir.join("mamori.toml")).unwrap().contains("[store]")
    {
        None
    } else {
        store_for(dir)
    };
    (mamori::open_node(dir).unwrap(), db)
}

pub struct Resp {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).map(|v| v.to_str().unwrap().to_string())
    }
    /// The first issue's diagnostics of an OperationOutcome.
    pub fn diagnostics(&self) -> String {
        let j = self.json();
        assert_eq!(j["resourceType"], "OperationOutcome", "expected an OperationOutcome: {j}");
        j["issue"][0]["diagnostics"].as_str().unwrap_or_default().to_string()
    }
}

/// A client-credentials token for the harness's client `test-app`.
fn test_app_token(node: &Node) -> String {
    node.oauth
        .client_credentials(
            &mamori_oauth::ClientAuth { id: "test-app".into(), secret: SECRET.into() },
            None,
            now_secs(),
        )
        .unwrap()
        .access_token
}

pub fn register_client(node: &Node, id: &str, scope: &str) {
    let c = Client {
        id: id.into(),
        name: None,
        secret_sha256: Some(sha256_hex(SECRET)),
        scope: scope.into(),
        disabled: false,
        token_lifetime_secs: 900,
        allow_ip: Vec::new(),
        classes: Vec::new(),
        jwks: None,
        redirect_uris: Vec::new(),
    };
    let prev = node.store.config_get("client", id).unwrap().map(|e| e.version);
    node.store
        .change_config(&ConfigChange {
            kind: "client",
            key: id,
            value: Some(serde_json::to_value(c).unwrap()),
            changed_by: "operator:test",
            reason: "test",
            expected_version: prev,
            now_micros: 0,
        })
        .unwrap();
}

pub fn now_secs() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

impl Harness {
    pub fn new() -> Harness {
        Self::with_config(None)
    }

    /// A harness whose `mamori.toml` is `config` (default file when `None`).
    pub fn with_config(config: Option<&str>) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        if let Some(c) = config {
            std::fs::write(dir.path().join("mamori.toml"), c).unwrap();
        }
        let (node, db) = open_node(dir.path());
        register_client(&node, "test-app", "system/*.cruds");
        Self::from_node(dir, node).with_db(db)
    }

    /// Keeps the test database alive as long as the harness.
    pub fn with_db(mut self, db: Option<TestDb>) -> Harness {
        self.db = db;
        self
    }

    /// A fresh token for `test-app` (tokens live 15 minutes; a long test under load outlives one).
    pub fn renew_token(&mut self) {
        self.token = test_app_token(&self.node);
    }

    /// A harness over a node already opened on `dir` (with client `test-app` registered).
    pub fn from_node(dir: tempfile::TempDir, node: Node) -> Harness {
        let token = test_app_token(&node);
        let node = std::sync::Arc::new(node);
        let app = mamori::router(&node, "http://mamori.test");
        Harness { dir, node, app, token, db: None }
    }

    /// The same node served as if from `public_url` (e.g. `https://…`: `Secure`, `__Host-` cookies).
    pub fn with_public_url(mut self, public_url: &str) -> Harness {
        self.app = mamori::router(&self.node, public_url);
        self
    }

    /// A token for `scope` from a client registered with it.
    pub fn token_for(&self, client: &str, scope: &str) -> String {
        register_client(&self.node, client, scope);
        self.node
            .oauth
            .client_credentials(
                &mamori_oauth::ClientAuth { id: client.into(), secret: SECRET.into() },
                None,
                now_secs(),
            )
            .unwrap()
            .access_token
    }

    /// Adds an account (if it does not exist) with these roles and fhirUser.
    pub fn add_user(&self, user: &str, roles: &[&str], fhir_user: &str) {
        if self.node.identity.account(user).unwrap().is_some() {
            return;
        }
        self.node
            .identity
            .add(
                "test",
                mamori_identity::service::NewAccount {
                    username: user.into(),
                    roles: roles.iter().map(|r| (*r).to_string()).collect(),
                    display_name: None,
                    fhir_user: Some(fhir_user.into()),
                    department: None,
                    proofing: None,
                },
                "k7#Vq2!mZp-w9Xr",
                now_secs(),
            )
            .unwrap();
    }

    /// A token acting for a person with these roles (an account is added if missing).
    pub fn user_token(&self, user: &str, roles: &[&str], fhir_user: &str) -> String {
        self.add_user(user, roles, fhir_user);
        self.node
            .oauth
            .issue_for_user("test-app", user, Some(fhir_user), "user/*.cruds", 900, now_secs())
            .unwrap()
            .access_token
    }

    pub async fn send(&self, req: Request<Body>) -> Resp {
        let r = self.app.clone().oneshot(req).await.unwrap();
        let status = r.status();
        let headers = r.headers().clone();
        let body = r.into_body().collect().await.unwrap().to_bytes().to_vec();
        Resp { status, headers, body }
    }

    /// A request with the harness token; `body` is sent as FHIR JSON.
    pub async fn call(&self, method: &str, uri: &str, body: Option<&Value>) -> Resp {
        self.call_with(method, uri, body, &[]).await
    }

    pub async fn call_with(&self, method: &str, uri: &str, body: Option<&Value>, headers: &[(&str, &str)]) -> Resp {
        let mut b =
            Request::builder().method(method).uri(uri).header("authorization", format!("Bearer {}", self.token));
        if body.is_some() {
            b = b.header("content-type", "application/fhir+json");
        }
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let body = body.map(|v| Body::from(v.to_string())).unwrap_or_else(Body::empty);
        self.send(b.body(body).unwrap()).await
    }

    pub async fn create(&self, v: &Value) -> Value {
        let rt = v["resourceType"].as_str().unwrap();
        let r = self.call("POST", &format!("/fhir/{rt}"), Some(v)).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", String::from_utf8_lossy(&r.body));
        r.json()
    }
}

/// Python packages (pinned `packages`), installed with pip once into `CARGO_TARGET_TMPDIR/name`;
/// `present` are import names whose directories show the install is complete.
pub fn pip_target(name: &str, packages: &[&str], present: &[&str]) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    if present.iter().all(|p| dir.join(p).exists()) {
        return dir;
    }
    let out = std::process::Command::new("python3")
        .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--target"])
        .arg(&dir)
        .args(packages)
        .output()
        .expect("python3 with pip is needed for the outside-client tests");
    assert!(out.status.success(), "pip install failed: {}", String::from_utf8_lossy(&out.stderr));
    dir
}

/// Runs `tests/it/{script}` with `deps` on the Python path; it must print exactly `ok`.
pub fn python_ok(deps: &std::path::Path, script: &str, args: &[&str]) {
    let out = std::process::Command::new("python3")
        .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it").join(script))
        .args(args)
        .env("PYTHONPATH", deps)
        .output()
        .unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok",
        "python client failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Percent-encodes a query value (RFC 3986 unreserved characters stay).
pub fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Raw access to a node's database behind the server's back (tamper and failure tests), on
/// either backend.
pub enum RawDb {
    Sqlite(rusqlite::Connection),
    Pg(String),
}

impl RawDb {
    /// The database of data directory `dir` (its `[store] database`, else `mamori.db`).
    pub fn at(dir: &std::path::Path) -> RawDb {
        let cfg = std::fs::read_to_string(dir.join("mamori.toml")).unwrap_or_default();
        let url = cfg
            .lines()
            .find_map(|l| l.trim().strip_prefix("database = \"").and_then(|r| r.strip_suffix('"')).map(str::to_string));
        match url {
            Some(u) => RawDb::Pg(u),
            None => {
                // The audit trail has a file of its own (schema step 9), attached as the store does.
                let c = rusqlite::Connection::open(dir.join("mamori.db")).unwrap();
                c.execute("ATTACH DATABASE ?1 AS audit", [dir.join("audit.db").to_str().unwrap()]).unwrap();
                RawDb::Sqlite(c)
            }
        }
    }

    pub fn is_pg(&self) -> bool {
        matches!(self, RawDb::Pg(_))
    }

    /// Runs `sqlite` or `pg` (the same act in each dialect).
    pub fn exec(&self, sqlite: &str, pg: &str) -> Result<(), String> {
        match self {
            RawDb::Sqlite(c) => c.execute_batch(sqlite).map_err(|e| e.to_string()),
            RawDb::Pg(url) => mamori_store_postgres::execute_batch(url, pg).map_err(|e| e.to_string()),
        }
    }

    /// Runs SQL that is the same in both dialects.
    pub fn exec_both(&self, sql: &str) -> Result<(), String> {
        self.exec(sql, sql)
    }

    /// An integer query (the same SQL in both dialects).
    pub fn int(&self, sql: &str) -> i64 {
        match self {
            RawDb::Sqlite(c) => c.query_row(sql, [], |r| r.get(0)).unwrap(),
            RawDb::Pg(url) => mamori_store_postgres::query_i64(url, sql).unwrap(),
        }
    }
}

/// Approves every change request waiting in data directory `dir` (the two-person rule), each as
/// an active person other than its requester who may approve changes: what a second person does
/// in the console after a test's set-up made a high-risk change on the command line (a second
/// administrator, a `system/` application). Returns how many.
pub fn approve_pending(dir: &std::path::Path) -> usize {
    let node = mamori::open_node(dir).unwrap();
    let op = mamori_app::Ctx::operator(&node, "test");
    let mut n = 0;
    for r in mamori_app::approvals::list(&op, &node).unwrap() {
        if r.state != mamori_app::approvals::State::Pending {
            continue;
        }
        let approver = node
            .store
            .accounts()
            .unwrap()
            .into_iter()
            .filter(|a| a.status == mamori_identity::account::Status::Active)
            .filter_map(|a| mamori_app::Ctx::person(&node, &a.username, None, None).ok())
            .find(|c| c.may(&node, mamori_app::AdminAct::ApproveChange) && c.by() != r.requested_by)
            .unwrap_or_else(|| panic!("nobody to approve change request {}", r.id));
        mamori_app::approvals::approve(&approver, &node, &r.id, &r.sha256, "test set-up").unwrap();
        n += 1;
    }
    n
}

/// A clock some hours ahead of the system's (a schedule or a deadline tested days ahead).
pub struct Later(pub i64);

impl mamori_records::Clock for Later {
    fn now(&self) -> mamori_records::Timestamp {
        mamori_records::Timestamp(mamori_records::SystemClock.now().0 + self.0 * 3_600_000_000)
    }
}
