//! Issue #8: two `mamori serve` processes on one PostgreSQL database behave as one system —
//! records, versions and `If-Match`, tokens and their revocation, configuration, and one audit
//! log whose checkpoints, signed by either node, are consistent with one tree.
//!
//! Always on PostgreSQL (the local server CI provides), whichever backend the suite runs on.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use mamori_audit::merkle;
use mamori_audit::note::{Checkpoint, NoteVerifier};
use serde_json::{Value, json};

use crate::binary::{Reply, Server, cli, http, start};

/// The admin URL of the test PostgreSQL server.
fn admin() -> String {
    crate::support::postgres_admin()
        .or_else(|| std::env::var("MAMORI_TEST_PG").ok())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A database for this test, dropped at the end.
struct Db {
    admin: String,
    name: String,
    url: String,
}

impl Drop for Db {
    fn drop(&mut self) {
        let _ = mamori_store_postgres::drop_database(&self.admin, &self.name);
    }
}

fn fresh_db(tag: &str) -> Db {
    let admin = admin();
    let name = format!("mamori_n_{tag}_{}", std::process::id());
    let _ = mamori_store_postgres::drop_database(&admin, &name);
    mamori_store_postgres::create_database(&admin, &name).unwrap();
    let base = admin.rsplit_once('/').map(|(b, _)| b.to_string()).unwrap();
    let url = format!("{base}/{name}");
    Db { admin, name, url }
}

/// Keys made once under `tmp` (as a first node's `init` would), for [`node_dir`] to copy.
fn make_keys(tmp: &Path) -> std::path::PathBuf {
    let seed_dir = tmp.join("keys-source");
    assert!(cli(&["init", "--data-dir", seed_dir.to_str().unwrap()]).status.success());
    seed_dir.join("keys")
}

/// A node directory: the shared keys, and `mamori.toml` naming the database.
fn node_dir(dir: &Path, keys: &Path, url: &str) {
    std::fs::create_dir_all(dir.join("keys")).unwrap();
    for f in ["master.key", "signing-ed25519.seed"] {
        std::fs::copy(keys.join(f), dir.join("keys").join(f)).unwrap();
    }
    std::fs::write(dir.join("mamori.toml"), format!("[store]\ndatabase = \"{url}\"\n")).unwrap();
}

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

fn token(addr: std::net::SocketAddr, client: &str, secret: &str) -> String {
    let form = format!("grant_type=client_credentials&client_id={client}&client_secret={secret}");
    let r =
        http(addr, "POST", "/oauth/token", &[("Content-Type", "application/x-www-form-urlencoded")], form.as_bytes())
            .unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.json()["access_token"].as_str().unwrap().to_string()
}

fn add_client(dir: &Path, client: &str, scope: &str) -> String {
    let out = cli(&["client", "add", client, "--scope", scope, "--data-dir", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    stdout.lines().find_map(|l| l.strip_prefix("client_secret=")).unwrap().to_string()
}

fn fhir(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    tok: &str,
    body: Option<&Value>,
    extra: &[(&str, &str)],
) -> Reply {
    let auth = bearer(tok);
    let mut headers = vec![("Authorization", auth.as_str()), ("Content-Type", "application/fhir+json")];
    headers.extend_from_slice(extra);
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    http(addr, method, path, &headers, body.as_bytes()).unwrap()
}

/// The latest checkpoint a node serves, once it covers at least `min` entries.
fn checkpoint(node: &Server, tok: &str, verifier: &NoteVerifier, min: u64) -> (Checkpoint, String) {
    for _ in 0..200 {
        let r = fhir(node.addr, "GET", "/audit/log/checkpoint", tok, None, &[]);
        if r.status == 200 {
            let note = String::from_utf8(r.body).unwrap();
            let cp = Checkpoint::parse(verifier.verify(&note).unwrap()).unwrap();
            if cp.size >= min {
                return (cp, note);
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("no checkpoint covering {min} entries");
}

fn hashes(v: &Value) -> Vec<[u8; 32]> {
    v["hashes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| B64.decode(x.as_str().unwrap()).unwrap().try_into().unwrap())
        .collect()
}

#[test]
fn two_nodes_on_one_database_are_one_system() {
    let db = fresh_db("two");
    let tmp = tempfile::tempdir().unwrap();
    // Keys are made once (as the first node's `init` would) and copied to every node.
    let keys = make_keys(tmp.path());
    let (a_dir, b_dir) = (tmp.path().join("a"), tmp.path().join("b"));
    node_dir(&a_dir, &keys, &db.url);
    node_dir(&b_dir, &keys, &db.url);

    // Both start at once on the empty database: one migrates, the other waits and finds it done.
    let (a, b) = std::thread::scope(|s| {
        let ta = s.spawn(|| start(&a_dir, &[]));
        let tb = s.spawn(|| start(&b_dir, &[]));
        (ta.join().unwrap(), tb.join().unwrap())
    });
    for n in [&a, &b] {
        let h = http(n.addr, "GET", "/healthz", &[], b"").unwrap();
        assert_eq!(h.json()["store"], "postgres", "{}", String::from_utf8_lossy(&h.body));
    }
    assert!(!a_dir.join("mamori.db").exists(), "no embedded store beside the database");

    // A client registered through node A's CLI gets tokens from node B.
    let secret = add_client(&a_dir, "ward-app", "system/*.cruds system/AuditEvent.rs");
    let tok_b = token(b.addr, "ward-app", &secret);
    let tok_a = token(a.addr, "ward-app", &secret);

    // Written on A, read on B; updated on B; a stale If-Match on A is refused.
    let p = json!({"resourceType": "Patient", "name": [{"family": "山田", "given": ["花子"]}], "gender": "female"});
    let r = fhir(a.addr, "POST", "/fhir/Patient", &tok_a, Some(&p), &[]);
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let created = r.json();
    let id = created["id"].as_str().unwrap().to_string();
    let r = fhir(b.addr, "GET", &format!("/fhir/Patient/{id}"), &tok_b, None, &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["name"], created["name"]);
    let found = fhir(b.addr, "GET", "/fhir/Patient?family=山田", &tok_b, None, &[]).json();
    assert_eq!(found["total"], 1, "B's search sees A's index rows: {found}");
    let mut changed = created.clone();
    changed["gender"] = json!("other");
    let r = fhir(b.addr, "PUT", &format!("/fhir/Patient/{id}"), &tok_b, Some(&changed), &[("If-Match", "W/\"1\"")]);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["meta"]["versionId"], "2");
    let r = fhir(a.addr, "PUT", &format!("/fhir/Patient/{id}"), &tok_a, Some(&created), &[("If-Match", "W/\"1\"")]);
    assert_eq!(r.status, 412, "a stale If-Match on the other node: {}", String::from_utf8_lossy(&r.body));
    let r = fhir(a.addr, "GET", &format!("/fhir/Patient/{id}/_history"), &tok_a, None, &[]);
    assert_eq!(r.json()["total"], 2);

    // Concurrent updates through both nodes: each version number is used exactly once.
    let outcomes: Vec<u16> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..8)
            .map(|i| {
                let (node, tok) = if i % 2 == 0 { (a.addr, &tok_a) } else { (b.addr, &tok_b) };
                let body = json!({"resourceType": "Patient", "id": id, "gender": "female", "active": i % 3 == 0});
                let path = format!("/fhir/Patient/{id}");
                s.spawn(move || fhir(node, "PUT", &path, tok, Some(&body), &[("If-Match", "W/\"2\"")]).status)
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(outcomes.iter().filter(|s| **s == 200).count(), 1, "exactly one writer wins: {outcomes:?}");
    assert!(outcomes.iter().all(|s| *s == 200 || *s == 412), "{outcomes:?}");

    // A token revoked on A is refused on B at once.
    let victim = token(a.addr, "ward-app", &secret);
    assert_eq!(fhir(b.addr, "GET", &format!("/fhir/Patient/{id}"), &victim, None, &[]).status, 200);
    let form = format!("token={victim}&client_id=ward-app&client_secret={secret}");
    let r = http(
        a.addr,
        "POST",
        "/oauth/revoke",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        form.as_bytes(),
    )
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(fhir(b.addr, "GET", &format!("/fhir/Patient/{id}"), &victim, None, &[]).status, 401);

    // One audit log: checkpoints served (and signed) by either node are consistent with one tree.
    let vkey =
        String::from_utf8(cli(&["audit", "verifier-key", "--data-dir", a_dir.to_str().unwrap()]).stdout).unwrap();
    let verifier = NoteVerifier::parse(vkey.trim()).unwrap();
    let (first, _) = checkpoint(&b, &tok_b, &verifier, 1);
    for i in 0..30 {
        let node = if i % 2 == 0 { &a } else { &b };
        let tok = if i % 2 == 0 { &tok_a } else { &tok_b };
        assert_eq!(fhir(node.addr, "GET", &format!("/fhir/Patient/{id}"), tok, None, &[]).status, 200);
    }
    let (later, _) = checkpoint(&a, &tok_a, &verifier, first.size + 30);
    assert_eq!(first.origin, later.origin, "one log, one origin");
    for node in [&a, &b] {
        let tok = if std::ptr::eq(node, &a) { &tok_a } else { &tok_b };
        let r = fhir(
            node.addr,
            "GET",
            &format!("/audit/proof/consistency?from={}&to={}", first.size, later.size),
            tok,
            None,
            &[],
        );
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        merkle::verify_consistency(first.size, later.size, &first.root, &later.root, &hashes(&r.json())).unwrap();
    }
    // Every entry, whichever node appended it, is in one gap-free sequence that verifies.
    let out = cli(&["audit", "verify", "--data-dir", b_dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let exported = cli(&["audit", "export", "--format", "ndjson", "--data-dir", a_dir.to_str().unwrap()]);
    let reads = String::from_utf8(exported.stdout)
        .unwrap()
        .lines()
        .filter(|l| l.contains(&format!("Patient/{id}")) && l.contains("\"read\""))
        .count();
    assert!(reads >= 32, "reads through both nodes are in the one log ({reads})");

    // A node with other keys refuses to start rather than fork the log or miss sealed secrets.
    let c_dir = tmp.path().join("c");
    std::fs::create_dir_all(&c_dir).unwrap();
    std::fs::write(c_dir.join("mamori.toml"), format!("[store]\ndatabase = \"{}\"\n", db.url)).unwrap();
    let out = cli(&["client", "list", "--data-dir", c_dir.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("keys directory"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop((a, b));
}

#[test]
fn a_bad_database_url_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("d");
    let out = cli(&["init", "--data-dir", d.to_str().unwrap(), "--database", "mysql://x"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("postgres://"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = cli(&["init", "--data-dir", d.to_str().unwrap(), "--database", "postgres://postgres@127.0.0.1:1/none"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot connect"), "{err}");
    let out =
        cli(&["init", "--data-dir", d.to_str().unwrap(), "--database", "postgres://postgres:hunter2@127.0.0.1:1/none"]);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("hunter2"), "no password in messages");
}

#[test]
fn the_database_link_is_tls_verified_against_the_given_ca() {
    let admin = admin();
    let snakeoil = "/etc/ssl/certs/ssl-cert-snakeoil.pem";
    let ssl = mamori_store_postgres::query_i64(
        &admin,
        &format!(
            "SELECT (current_setting('ssl') = 'on' AND current_setting('ssl_cert_file') = '{snakeoil}')::int::bigint"
        ),
    )
    .unwrap();
    if ssl != 1 {
        eprintln!("skipped: this PostgreSQL server does not serve TLS with the Debian snakeoil certificate");
        return;
    }
    let db = fresh_db("tls");
    let tmp = tempfile::tempdir().unwrap();
    let base = format!("postgres://postgres@localhost:5432/{}", db.name);
    let d = tmp.path().join("d");
    let ds = d.to_str().unwrap();

    // Verified TLS: the server's certificate (CN localhost) against the named CA.
    let url = format!("{base}?sslrootcert={snakeoil}");
    let out = cli(&["init", "--data-dir", ds, "--database", &url]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::write(d.join("mamori.toml"), format!("[store]\ndatabase = \"{url}\"\n")).unwrap();
    let node = start(&d, &[]);
    let _ = http(node.addr, "GET", "/healthz", &[], b"").unwrap();
    let plain = mamori_store_postgres::query_i64(
        &admin,
        &format!("SELECT COUNT(*) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) WHERE a.datname = '{}' AND NOT s.ssl", db.name),
    )
    .unwrap();
    let tls = mamori_store_postgres::query_i64(
        &admin,
        &format!(
            "SELECT COUNT(*) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) WHERE a.datname = '{}' AND s.ssl",
            db.name
        ),
    )
    .unwrap();
    assert!(tls > 0 && plain == 0, "the node's connections are TLS ({tls} TLS, {plain} plain)");
    drop(node);

    // A name the certificate does not carry, another CA, or TLS nobody verifies: refused.
    let other_ca = tmp.path().join("other-ca.pem");
    let key = rcgen::KeyPair::generate().unwrap();
    let ca = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap().self_signed(&key).unwrap();
    std::fs::write(&other_ca, ca.pem()).unwrap();
    for (url, expect) in [
        (format!("postgres://postgres@127.0.0.1:5432/{}?sslrootcert={snakeoil}", db.name), "TLS"),
        (format!("{base}?sslrootcert={}", other_ca.display()), "TLS"),
        (format!("{base}?sslmode=require"), "sslrootcert"),
        (format!("{base}?sslrootcert=/nonexistent/ca.pem"), "sslrootcert"),
    ] {
        let out = cli(&["client", "list", "--data-dir", ds, "--database", &url]);
        assert!(!out.status.success(), "{url} must be refused");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expect), "{url}: {err}");
    }
}

/// A store filled in a burst is analyzed by the node that wrote it (`PgDb::keep_statistics`):
/// PostgreSQL plans searches from statistics that autovacuum refreshes at most once a minute,
/// and a chain checked per candidate on never-analyzed tables took 13 s a statement. Only an
/// explicit `ANALYZE` sets `last_analyze` (autovacuum's own sets `last_autoanalyze`).
#[test]
fn a_burst_of_writes_leaves_the_record_tables_analyzed() {
    let db = fresh_db("stats");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("a");
    node_dir(&dir, &make_keys(tmp.path()), &db.url);
    // How many times a table was analyzed by a command (the schema's migration analyzes the
    // index tables once, for their extended statistics).
    let analyzed = |table: &str| {
        mamori_store_postgres::query_i64(
            &db.url,
            &format!("SELECT analyze_count FROM pg_stat_user_tables WHERE relname = '{table}'"),
        )
        .unwrap()
    };
    // The node's first command migrates the schema.
    assert!(cli(&["fsck", "--data-dir", dir.to_str().unwrap()]).status.success());
    let at_start: Vec<i64> =
        ["resources", "versions", "sp_token", "sp_ref", "sp_number"].iter().map(|t| analyzed(t)).collect();
    let import = |n: usize, name: &str| {
        let file = tmp.path().join(name);
        let lines: Vec<String> = (0..n)
            .map(|i| {
                json!({"resourceType": "Observation", "id": format!("{name}-{i}"), "status": "final",
                       "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                       "subject": {"reference": format!("Patient/p{}", i % 7)},
                       "valueQuantity": {"value": i, "unit": "/min"}})
                .to_string()
            })
            .collect();
        std::fs::write(&file, lines.join("\n")).unwrap();
        let out = cli(&["import", file.to_str().unwrap(), "--data-dir", dir.to_str().unwrap()]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    // A few writes: below the mark, nothing analyzed.
    import(5, "few");
    assert_eq!(
        (analyzed("sp_ref"), analyzed("sp_token")),
        (at_start[3], at_start[2]),
        "five Observations are not a burst"
    );
    // A burst (hundreds of resources, thousands of index rows): analyzed before the import ends.
    import(400, "burst");
    for (table, before) in ["resources", "versions", "sp_token", "sp_ref", "sp_number"].iter().zip(&at_start) {
        assert_eq!(analyzed(table), before + 1, "{table} analyzed after the burst");
    }
    // The planner knows the index tables' columns go together (schema step 8's extended
    // statistics): half the reference rows are Observations' `subject` pointing at a Patient (the
    // other half their Provenances' `target`), and it expects about that many, not the eighth
    // that taking `type`, `param` and `target_type` for independent gives (a chain was then
    // joined by hashing every reference row instead of walked by key).
    mamori_store_postgres::execute_batch(
        &db.url,
        "CREATE FUNCTION mamori_test_estimate(q text) RETURNS bigint LANGUAGE plpgsql AS $$
         DECLARE p json; BEGIN EXECUTE 'EXPLAIN (FORMAT JSON) ' || q INTO p;
         RETURN (p->0->'Plan'->>'Plan Rows')::bigint; END $$",
    )
    .unwrap();
    let count = |sql: &str| mamori_store_postgres::query_i64(&db.url, &format!("SELECT COUNT(*) {sql}")).unwrap();
    let estimate = |sql: &str| {
        mamori_store_postgres::query_i64(
            &db.url,
            &format!("SELECT mamori_test_estimate('SELECT 1 {}')", sql.replace('\'', "''")),
        )
        .unwrap()
    };
    for sql in [
        "FROM sp_ref WHERE type = 'Observation' AND param = 'subject' AND target_type = 'Patient'",
        "FROM sp_token WHERE type = 'Observation' AND param = 'code' AND system = 'http://loinc.org' AND code = '8867-4'",
    ] {
        let (n, e) = (count(sql), estimate(sql));
        assert_eq!(n, 405, "{sql}");
        assert!(e * 10 >= n * 8 && e * 10 <= n * 12, "{sql}: the planner expects {e} rows of {n}");
    }
}
