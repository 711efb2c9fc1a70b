//! End to end with the real `mamori` executable: start-up on an empty directory, the CLI beside
//! a running server, the loopback/TLS rule, and a crash (SIGKILL) under write load.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

pub const BIN: &str = env!("CARGO_BIN_EXE_mamori");

pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `mamori serve` on a free loopback port and waits until `/healthz` answers.
pub fn start(dir: &Path, extra: &[&str]) -> Server {
    let listen: &[&str] = if extra.contains(&"--listen") { &[] } else { &["--listen", "127.0.0.1:0"] };
    let mut child = Command::new(BIN)
        .arg("serve")
        .args(listen)
        .arg("--data-dir")
        .arg(dir)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    // "mamori serving http://127.0.0.1:PORT/fhir (data: …)"
    let url = line.split_whitespace().nth(2).unwrap_or_else(|| panic!("unexpected start-up line {line:?}"));
    let hostport = url.split("://").nth(1).unwrap().split('/').next().unwrap();
    let addr: SocketAddr = hostport.parse().unwrap();
    Server { child, addr }
}

pub struct Reply {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl Reply {
    /// A response header's value (the first, by case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }
}

/// One HTTP/1.1 request with `Connection: close` over any stream.
pub fn http_on<S: Read + Write>(
    mut s: S,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Reply> {
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    // rustls reports an unclean close as an error even when the response is complete.
    let _ = s.read_to_end(&mut raw);
    let split =
        raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| std::io::Error::other("no response head"))?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    Ok(Reply { status, head, body: raw[split + 4..].to_vec() })
}

pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Reply> {
    let s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    http_on(s, method, path, headers, body)
}

pub fn cli(args: &[&str]) -> std::process::Output {
    cli_in("en", args)
}

/// The command line with its messages in `lang` (`MAMORI_LANG`).
pub fn cli_in(lang: &str, args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).env("MAMORI_LANG", lang).stdin(Stdio::null()).output().unwrap()
}

/// Registers a client with the CLI and gets a token over HTTP.
pub fn token(addr: SocketAddr, dir: &Path, client: &str) -> String {
    let out = cli(&["client", "add", client, "--scope", "system/*.cruds", "--data-dir", dir.to_str().unwrap()]);
    // Exit 3: held for a second person (someone who may approve exists), who approves it.
    if out.status.code() == Some(3) {
        crate::support::approve_pending(dir);
    } else {
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let stdout = String::from_utf8(out.stdout).unwrap();
    let secret = stdout.lines().find_map(|l| l.strip_prefix("client_secret=")).unwrap().to_string();
    let form = format!("grant_type=client_credentials&client_id={client}&client_secret={secret}");
    let r =
        http(addr, "POST", "/oauth/token", &[("Content-Type", "application/x-www-form-urlencoded")], form.as_bytes())
            .unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.json()["access_token"].as_str().unwrap().to_string()
}

#[test]
fn serves_an_empty_directory_and_the_cli_works_beside_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("fresh");
    let _db = crate::support::store_for(&dir);
    let server = start(&dir, &[]);
    assert!(
        dir.join("mamori.toml").exists()
            && dir.join("keys/signing-ed25519.seed").exists()
            && dir.join("mamori.db").exists() == _db.is_none(),
        "configuration, keys, and the embedded store file only when no database is configured"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("keys/master.key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "keys are private to the service account");
    }
    let r = http(server.addr, "GET", "/healthz", &[], b"").unwrap();
    assert_eq!(r.status, 200);
    assert!(r.head.to_ascii_lowercase().contains("x-request-id:"));
    // A new server publishes its ID-token key from the start (clients cache the JWKS, #28).
    let jwks = http(server.addr, "GET", "/oauth/jwks", &[], b"").unwrap().json();
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1, "{jwks}");
    assert_eq!((keys[0]["kty"].as_str(), keys[0]["alg"].as_str()), (Some("RSA"), Some("RS256")), "{jwks}");
    assert!(keys[0].get("d").is_none(), "public half only");

    let t = token(server.addr, &dir, "e2e");
    let auth = format!("Bearer {t}");
    let body =
        json!({"resourceType": "Patient", "name": [{"family": "鈴木", "given": ["花子"]}], "birthDate": "1985-04-01"})
            .to_string();
    let r = http(
        server.addr,
        "POST",
        "/fhir/Patient",
        &[("Authorization", &auth), ("Content-Type", "application/fhir+json")],
        body.as_bytes(),
    )
    .unwrap();
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let id = r.json()["id"].as_str().unwrap().to_string();
    let r = http(server.addr, "GET", &format!("/fhir/Patient/{id}"), &[("Authorization", &auth)], b"").unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["name"][0]["family"], "鈴木");

    // The CLI works on the same directory while the server runs.
    let d = dir.to_str().unwrap();
    let out = cli(&["client", "list", "--data-dir", d]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("e2e\tenabled"));
    let out = cli(&["fsck", "--data-dir", d]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("2 versions checked, all hashes match"));
    let out = cli(&["purge", &format!("Patient/{id}"), "--data-dir", d]);
    assert!(!out.status.success(), "a live record within retention is not purged");
    assert!(String::from_utf8_lossy(&out.stderr).contains("delete it before"));
    let out = cli(&["client", "disable", "e2e", "--data-dir", d]);
    assert!(out.status.success());
    let r = http(server.addr, "GET", &format!("/fhir/Patient/{id}"), &[("Authorization", &auth)], b"").unwrap();
    assert_eq!(r.status, 401, "a disabled client's token stops working at once");

    // Bad input at the CLI: a clear message and a non-zero exit.
    for args in [
        vec!["client", "add", "x y", "--scope", "system/*.rs"],
        vec!["client", "add", "ok", "--scope", "system/Patient.xyz"],
        vec!["client", "add", "ok", "--scope", "system/*.rs", "--token-lifetime", "1s"],
        vec!["client", "add", "ok", "--scope", "system/*.rs", "--allow-ip", "10.0.0.0/33"],
        vec!["client", "add", "ok", "--scope", "system/*.rs", "--allow-ip", "not-an-address"],
        vec!["purge", "Nope/1"],
        vec!["purge", "garbage"],
    ] {
        let mut a = args.clone();
        a.extend(["--data-dir", d]);
        let out = cli(&a);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stderr).starts_with("mamori: "), "{args:?}");
    }
    let out = cli(&["client", "add", "e2e", "--scope", "system/*.rs", "--data-dir", d]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
}

#[test]
fn plain_http_only_on_loopback_and_tls_on_any_address() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("d");
    let _db = crate::support::store_for(&d);
    let out = Command::new(BIN).args(["serve", "--listen", "0.0.0.0:0", "--data-dir"]).arg(&d).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("only loopback may be served without TLS"));

    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(tmp.path().join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(tmp.path().join("key.pem"), key.serialize_pem()).unwrap();
    let c = tmp.path().join("cert.pem");
    let k = tmp.path().join("key.pem");
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(&d)
        .arg("--tls-cert")
        .arg(&c)
        .arg("--tls-key")
        .arg(&k)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert!(line.contains("https://0.0.0.0:"), "{line}");
    let port: u16 = line.split("0.0.0.0:").nth(1).unwrap().split('/').next().unwrap().parse().unwrap();
    let server = Server { child, addr: SocketAddr::from(([127, 0, 0, 1], port)) };

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    for (versions, expect) in [
        (vec![&rustls::version::TLS13, &rustls::version::TLS12], rustls::ProtocolVersion::TLSv1_3),
        (vec![&rustls::version::TLS12], rustls::ProtocolVersion::TLSv1_2),
    ] {
        let cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&versions)
            .unwrap()
            .with_root_certificates(roots.clone())
            .with_no_client_auth();
        let conn = rustls::ClientConnection::new(Arc::new(cfg), "localhost".try_into().unwrap()).unwrap();
        let tcp = TcpStream::connect(server.addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        let r = http_on(&mut tls, "GET", "/healthz", &[], b"").unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(tls.conn.protocol_version(), Some(expect));
    }
    // Plain HTTP to the TLS port gets no HTTP answer.
    let r = http(server.addr, "GET", "/healthz", &[], b"");
    assert!(r.map(|r| r.status != 200).unwrap_or(true));
}

#[cfg(unix)]
#[test]
fn a_crash_under_write_load_loses_no_acknowledged_write() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("crash");
    let _db = crate::support::store_for(&dir);
    let mut server = start(&dir, &[]);
    let t = token(server.addr, &dir, "loader");
    let addr = server.addr;
    let acked = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let acked_requests = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..4 {
        let (acked, stop, t, acked_requests) = (acked.clone(), stop.clone(), t.clone(), acked_requests.clone());
        workers.push(std::thread::spawn(move || {
            let auth = format!("Bearer {t}");
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                i += 1;
                let body =
                    json!({"resourceType": "Observation", "status": "final", "code": {"text": format!("w{w}-{i}")},
                    "valueQuantity": {"value": i, "unit": "mmHg"}})
                    .to_string();
                let rid = format!("crash-w{w}-{i}");
                let headers = [
                    ("Authorization", auth.as_str()),
                    ("Content-Type", "application/fhir+json"),
                    ("X-Request-ID", rid.as_str()),
                ];
                match http(addr, "POST", "/fhir/Observation", &headers, body.as_bytes()) {
                    Ok(r) if r.status == 201 => {
                        let id = r.json()["id"].as_str().unwrap().to_string();
                        acked.lock().unwrap().push(id.clone());
                        acked_requests.lock().unwrap().push(rid);
                        // And a read of it: reads must be in the trail too.
                        let rid = format!("crash-w{w}-{i}-read");
                        let headers = [("Authorization", auth.as_str()), ("X-Request-ID", rid.as_str())];
                        match http(addr, "GET", &format!("/fhir/Observation/{id}"), &headers, b"") {
                            Ok(r) if r.status == 200 => acked_requests.lock().unwrap().push(rid),
                            _ => break,
                        }
                    }
                    _ => break,
                }
            }
        }));
    }
    while acked.lock().unwrap().len() < 150 {
        std::thread::sleep(Duration::from_millis(20));
    }
    // SIGKILL: no shutdown, no flush.
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let restarted = start(&dir, &[]);
    let auth = format!("Bearer {t}");
    for id in &acked {
        let r =
            http(restarted.addr, "GET", &format!("/fhir/Observation/{id}"), &[("Authorization", &auth)], b"").unwrap();
        assert_eq!(r.status, 200, "acknowledged Observation/{id} was lost");
    }
    // Every version that exists is whole: its hash matches and it has its Provenance.
    let out = cli(&["fsck", "--data-dir", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let db = crate::support::RawDb::at(&dir);
    let obs = db.int("SELECT COUNT(*) FROM versions WHERE type = 'Observation'");
    let prov = db.int("SELECT COUNT(*) FROM versions WHERE type = 'Provenance'");
    assert_eq!(obs, prov, "a version and its Provenance are written together or not at all");
    assert!(obs as usize >= acked.len());

    // Every request that got a response is in the audit trail (L3).
    let out = cli(&["audit", "export", "--format", "ndjson", "--data-dir", dir.to_str().unwrap()]);
    assert!(out.status.success());
    let logged: std::collections::HashSet<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok()?.get("request_id")?.as_str().map(str::to_string))
        .collect();
    let acked_requests = acked_requests.lock().unwrap().clone();
    assert!(acked_requests.len() > 150);
    for rid in &acked_requests {
        assert!(logged.contains(rid), "acknowledged request {rid} is missing from the audit trail");
    }
    // And the trail verifies once the restarted server has integrated it.
    wait_for_checkpoint(restarted.addr, &auth, dir.as_path());
    let out = cli(&["audit", "verify", "--data-dir", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    // With no external witness configured, verify says so loudly (issue #22).
    assert!(String::from_utf8_lossy(&out.stderr).contains("no external witness"));
}

/// Waits until the integrator has covered every entry appended so far.
fn wait_for_checkpoint(_addr: SocketAddr, _auth: &str, dir: &Path) {
    let db = crate::support::RawDb::at(dir);
    for _ in 0..100 {
        let total = db.int("SELECT COALESCE(MAX(idx), 0) FROM audit_entries");
        let done = db.int("SELECT COALESCE(MAX(size), 0) FROM audit_checkpoints");
        if total > 0 && done >= total {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("no checkpoint covering the log within 10 s");
}

#[test]
fn the_offline_verifier_catches_tampering_and_the_witness_keeps_its_copy() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    let _db = crate::support::store_for(&dir);
    let witness = tmp.path().join("witness");
    let d = dir.to_str().unwrap();
    assert!(cli(&["init", "--data-dir", d]).status.success());
    std::fs::write(dir.join("mamori.toml"), format!("[audit]\nwitness_dir = \"{}\"\n", witness.display())).unwrap();
    let vkey = String::from_utf8(cli(&["audit", "verifier-key", "--data-dir", d]).stdout).unwrap().trim().to_string();
    assert!(vkey.starts_with("mamori.local/audit/"), "{vkey}");
    let server = start(&dir, &[]);
    let t = token(server.addr, &dir, "w");
    let auth = format!("Bearer {t}");
    for i in 0..40 {
        http(server.addr, "GET", &format!("/fhir/Patient/p{i}"), &[("Authorization", &auth)], b"").unwrap();
    }
    wait_for_checkpoint(server.addr, &auth, &dir);
    // A checkpoint over HTTP verifies with the printed key (with an audit-scoped client).
    let out = cli(&["client", "add", "auditor", "--scope", "system/AuditEvent.rs", "--data-dir", d]);
    let secret = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("client_secret=").map(str::to_string))
        .unwrap();
    let form = format!("grant_type=client_credentials&client_id=auditor&client_secret={secret}");
    let tok = http(
        server.addr,
        "POST",
        "/oauth/token",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        form.as_bytes(),
    )
    .unwrap()
    .json()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let note =
        http(server.addr, "GET", "/audit/log/checkpoint", &[("Authorization", &format!("Bearer {tok}"))], b"").unwrap();
    assert_eq!(note.status, 200);
    let v = mamori_audit::note::NoteVerifier::parse(&vkey).unwrap();
    v.verify(std::str::from_utf8(&note.body).unwrap()).unwrap();
    drop(server);

    let ok =
        cli(&["audit", "verify", "--data-dir", d, "--verifier-key", &vkey, "--witness-dir", witness.to_str().unwrap()]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stdout));
    assert!(String::from_utf8_lossy(&ok.stdout).contains("checkpoints verified"));

    // Someone with database access edits the first entry about patient p3. (Matched case-
    // sensitively, as replace() is: SQLite's LIKE ignores case and a random id may hold "P3".)
    let db = crate::support::RawDb::at(&dir);
    let idx = if db.is_pg() {
        db.int("SELECT MIN(idx) FROM audit_entries WHERE strpos(convert_from(entry, 'UTF8'), 'Patient/p3') > 0")
    } else {
        db.int("SELECT MIN(idx) FROM audit_entries WHERE instr(CAST(entry AS TEXT), 'Patient/p3') > 0")
    };
    assert!(idx > 0, "an entry about Patient/p3");
    db.exec(
        &format!("DROP TRIGGER audit_no_update; UPDATE audit_entries SET entry = replace(entry, 'Patient/p3', 'Patient/p9') WHERE idx = {idx}"),
        &format!("DROP TRIGGER audit_no_change ON audit_entries;
         UPDATE audit_entries SET entry = convert_to(replace(convert_from(entry, 'UTF8'), 'Patient/p3', 'Patient/p9'), 'UTF8') WHERE idx = {idx}"),
    )
    .unwrap();
    let bad = cli(&["audit", "verify", "--data-dir", d, "--verifier-key", &vkey]);
    assert_eq!(bad.status.code(), Some(1));
    let text = String::from_utf8_lossy(&bad.stdout).to_string();
    // Leaf indexes count from 0, the table's from 1.
    let first = format!("entry {}", idx - 1);
    assert!(text.lines().next().unwrap().contains(&first), "names the first bad entry ({first}): {text}");

    // Or deletes the tail of the log; the witness still has the larger checkpoint.
    db.exec(
        "DROP TRIGGER audit_no_delete; DELETE FROM audit_entries WHERE idx > 20; DELETE FROM audit_checkpoints WHERE size > 20;",
        "DELETE FROM audit_entries WHERE idx > 20; DELETE FROM audit_checkpoints WHERE size > 20;",
    )
    .unwrap();
    let bad =
        cli(&["audit", "verify", "--data-dir", d, "--verifier-key", &vkey, "--witness-dir", witness.to_str().unwrap()]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&bad.stdout).contains("the witness saw size"),
        "{}",
        String::from_utf8_lossy(&bad.stdout)
    );
    // Without any external witness the cut is still found (issue #22): the server kept its latest
    // checkpoint in the data directory, and the append-only triggers are gone.
    let bad = cli(&["audit", "verify", "--data-dir", d, "--verifier-key", &vkey]);
    assert_eq!(bad.status.code(), Some(1));
    let text = String::from_utf8_lossy(&bad.stdout).to_string();
    assert!(text.contains("the witness saw size"), "{text}");
    assert!(text.contains("append-only trigger"), "{text}");
}

/// `mamori import`: NDJSON lines go in with their ids (references between them hold), each with
/// Provenance and an audit entry; refused lines are named by file and line, and nothing of them
/// is stored.
#[test]
fn import_ndjson_keeps_ids_and_reports_refused_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    let _db = crate::support::store_for(&dir);
    let d = dir.to_str().unwrap();
    let file = tmp.path().join("patients.ndjson");
    std::fs::write(
        &file,
        [
            r#"{"resourceType":"Patient","id":"pt-a","name":[{"family":"山田","given":["太郎"]}],"birthDate":"1970-01-02"}"#,
            r#"{"resourceType":"Observation","id":"obs-1","status":"final","code":{"text":"体温"},"subject":{"reference":"Patient/pt-a"},"valueQuantity":{"value":36.5,"unit":"Cel"}}"#,
            "",
            r#"{"resourceType":"Patient","name":[{"family":"佐藤"}]}"#,
            r#"{"resourceType":"Patient","id":"bad","gender":12}"#,
            r#"{"resourceType":"Patient","id":"#,
            r#"{"resourceType":"NoSuchType","id":"x"}"#,
        ]
        .join("\n"),
    )
    .unwrap();
    let out = cli(&["import", file.to_str().unwrap(), "--data-dir", d, "--batch", "2"]);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("imported 3 resources") && stdout.contains("3 line(s) refused"), "{stdout}");
    for line in [5, 6, 7] {
        assert!(stderr.contains(&format!("patients.ndjson:{line}:")), "line {line}: {stderr}");
    }
    assert!(!stderr.contains("patients.ndjson:4:"), "{stderr}");
    // Importing the same file again makes new versions of the same ids, nothing else.
    let out = cli(&["import", file.to_str().unwrap(), "--data-dir", d]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("imported 3 resources"));
    let server = start(&dir, &[]);
    let token = token(server.addr, &dir, "reader");
    let auth = format!("Bearer {token}");
    let r = http(server.addr, "GET", "/fhir/Observation/obs-1", &[("Authorization", &auth)], b"").unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["subject"]["reference"], "Patient/pt-a");
    assert_eq!(r.json()["meta"]["versionId"], "2");
    let r = http(server.addr, "GET", "/fhir/Patient/bad", &[("Authorization", &auth)], b"").unwrap();
    assert_eq!(r.status, 404, "a refused line stores nothing");
    drop(server);
    assert!(cli(&["fsck", "--data-dir", d]).status.success());
    let out = cli(&["audit", "export", "--format", "ndjson", "--data-dir", d]);
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(
        log.contains(r#""kind":"operator""#) && log.contains("Observation/obs-1/_history/1"),
        "every import is audited"
    );
    // No files: a clear message and exit 2.
    let out = cli(&["import", "--data-dir", d]);
    assert_eq!(out.status.code(), Some(2));
    // A missing file: named, exit 2, nothing imported.
    let out = cli(&["import", tmp.path().join("missing.ndjson").to_str().unwrap(), "--data-dir", d]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.ndjson"));
}

/// A command that fails says what it was doing and why, cause by cause, and exits non-zero;
/// bad configuration names the file and the setting.
#[test]
fn a_failing_command_prints_its_whole_error_chain() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    let d = dir.to_str().unwrap();
    assert!(cli(&["init", "--data-dir", d]).status.success());
    // The master key is not a file: which file, and the operating system's reason.
    let key = dir.join("keys").join("master.key");
    std::fs::remove_file(&key).unwrap();
    std::fs::create_dir(&key).unwrap();
    let out = cli(&["fsck", "--data-dir", d]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    let mine: Vec<&str> = err.lines().filter(|l| l.starts_with("mamori: ") || l.starts_with("  caused by: ")).collect();
    assert_eq!(mine.len(), 2, "{err}");
    assert!(mine[0].starts_with("mamori: cannot read `") && mine[0].contains("master.key"), "{err}");
    assert!(mine[1].starts_with("  caused by: ") && mine[1].to_lowercase().contains("directory"), "{err}");
    // The same in Japanese (LANG=ja_JP.UTF-8, or MAMORI_LANG=ja): our words translated, the
    // operating system's reason as it gives it.
    let out = Command::new(BIN)
        .args(["fsck", "--data-dir", d])
        .env_remove("MAMORI_LANG")
        .env("LC_ALL", "ja_JP.UTF-8")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    let mine: Vec<&str> = err.lines().filter(|l| l.starts_with("mamori: ") || l.starts_with("  原因: ")).collect();
    assert_eq!(mine.len(), 2, "{err}");
    assert!(mine[0].contains("master.key` を読み込めません"), "{err}");
    std::fs::remove_dir(&key).unwrap();
    std::fs::write(&key, "00".repeat(32)).unwrap();

    // A bad setting: the file and the setting, and nothing is opened.
    std::fs::write(dir.join("mamori.toml"), "[server]\nmax_body_bytes = 1\n").unwrap();
    let out = cli(&["fsck", "--data-dir", d]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("mamori.toml") && err.contains("max_body_bytes"), "{err}");
    let out = cli_in("ja", &["fsck", "--data-dir", d]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("server.max_body_bytes `1` は1KiBから1GiBの間で指定してください"), "{err}");

    // Errors from the use cases and from the argument parser, in both languages.
    let fresh = tmp.path().join("fresh");
    let d = fresh.to_str().unwrap();
    assert!(cli(&["init", "--data-dir", d]).status.success());
    let out = cli_in("ja", &["client", "disable", "nobody", "--data-dir", d]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("クライアント `nobody` はありません"), "{out:?}");
    let out = cli_in("en", &["client", "disable", "nobody", "--data-dir", d]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no client `nobody`"), "{out:?}");
    let out = cli_in("ja", &["fsck", "--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("mamori: コマンドの引数が正しくありません") && err.contains("--no-such-flag"), "{err}");
}

/// `args` run with standard error on a terminal (a pseudo-terminal) and standard output piped:
/// (exit code, stdout, stderr).
fn on_a_terminal(lang: &str, args: &[&str]) -> (i64, String, String) {
    let out = Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/tty_run.py"))
        .arg(BIN)
        .args(args)
        .env("MAMORI_LANG", lang)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    (v["code"].as_i64().unwrap(), v["stdout"].as_str().unwrap().to_string(), v["stderr"].as_str().unwrap().to_string())
}

/// Long commands show progress on standard error when it is a terminal, in the reader's
/// language, and nothing of it when piped; their results on standard output are the same.
#[test]
fn long_commands_show_progress_on_a_terminal_only() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    let _db = crate::support::store_for(&dir);
    let d = dir.to_str().unwrap();
    let file = tmp.path().join("p.ndjson");
    let lines: Vec<String> = (0..300)
        .map(|i| format!(r#"{{"resourceType":"Patient","id":"p{i}","name":[{{"family":"山田{i}"}}]}}"#))
        .collect();
    std::fs::write(&file, lines.join("\n")).unwrap();
    let f = file.to_str().unwrap();
    let export = tmp.path().join("trail.ndjson");
    let e = export.to_str().unwrap();

    let (code, stdout, stderr) = on_a_terminal("en", &["import", f, "--data-dir", d]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("imported 300 resources"), "{stdout}");
    assert!(stderr.contains("[####################] 100% of the bytes read; 300 imported, 0 refused"), "{stderr}");
    let piped = cli(&["import", f, "--data-dir", d]);
    assert!(String::from_utf8_lossy(&piped.stdout).contains("imported 300 resources"));
    assert!(!String::from_utf8_lossy(&piped.stderr).contains("bytes read"), "no progress when piped");

    let (code, stdout, stderr) = on_a_terminal("en", &["fsck", "--data-dir", d]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let versions: u64 = stdout.split("fsck: ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    assert!(versions >= 600 && stdout.contains("versions checked, all hashes match"), "{stdout}");
    assert!(stderr.contains(&format!("fsck: {versions} versions checked (")), "{stderr}");
    assert!(!stdout.contains("/s)"), "progress stays off standard output");
    let (_, _, stderr) = on_a_terminal("ja", &["fsck", "--data-dir", d]);
    assert!(stderr.contains(&format!("fsck: {versions} 版を確認（毎秒")), "{stderr}");
    let piped = cli(&["fsck", "--data-dir", d]);
    assert!(String::from_utf8_lossy(&piped.stderr).trim().is_empty(), "{piped:?}");

    let (code, stdout, stderr) = on_a_terminal("en", &["audit", "verify", "--data-dir", d]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let entries: u64 = stdout.split("audit verify: ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    assert!(stderr.contains(&format!("audit verify: {entries} entries verified (")), "{stderr}");
    let piped = cli(&["audit", "verify", "--data-dir", d]);
    assert!(!String::from_utf8_lossy(&piped.stderr).contains("entries verified"), "{piped:?}");

    let (code, stdout, stderr) = on_a_terminal("en", &["audit", "export", "--output", e, "--data-dir", d]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stderr.contains("entries exported ("), "{stderr}");
    let piped = cli(&["audit", "export", "--output", e, "--data-dir", d]);
    assert!(!String::from_utf8_lossy(&piped.stderr).contains("entries exported ("), "{piped:?}");
}
