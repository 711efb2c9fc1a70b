//! What a hospital IT team checks before putting a service under systemd (#28): the health
//! probes, Prometheus metrics read by a real parser, SIGHUP and SIGTERM, the client's address
//! behind a trusted proxy, serve options from the environment, completions and the man page.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::binary::{BIN, Server, cli, http, start, token};

fn signal(server: &Server, sig: &str) {
    let out = Command::new("kill").args([sig, &server.child.id().to_string()]).output().unwrap();
    assert!(out.status.success(), "kill {sig}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Waits for the process to exit, for at most `limit` (a liveness bound, not a timing claim).
fn exit_within(server: &mut Server, limit: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(st) = server.child.try_wait().unwrap() {
            return Some(st);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[test]
fn the_probes_answer_and_readyz_fails_when_the_schema_is_not_this_builds() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("d");
    let _db = crate::support::store_for(&d);
    let s = start(&d, &[]);
    let live = http(s.addr, "GET", "/livez", &[], b"").unwrap();
    assert_eq!((live.status, live.json()["status"].as_str()), (200, Some("live")));
    let ready = http(s.addr, "GET", "/readyz", &[], b"").unwrap();
    assert_eq!((ready.status, ready.json()["status"].as_str()), (200, Some("ready")));
    // Another node (a newer build) migrated the shared store past this one: not ready, and says so.
    let raw = crate::support::RawDb::at(&d);
    raw.exec_both("INSERT INTO mamori_schema (version, applied) VALUES (999, 0)").unwrap();
    let ready = http(s.addr, "GET", "/readyz", &[], b"").unwrap();
    assert_eq!(ready.status, 503, "{}", String::from_utf8_lossy(&ready.body));
    assert!(ready.json()["reason"].as_str().unwrap().contains("999"));
    // The process itself is alive: livez does not touch the store.
    assert_eq!(http(s.addr, "GET", "/livez", &[], b"").unwrap().status, 200);
}

#[test]
fn metrics_parse_with_prometheus_and_move_under_load() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("d");
    let _db = crate::support::store_for(&d);
    cli(&["init", "--data-dir", d.to_str().unwrap()]);
    // Three failures lock an account, so a lockout happens within the test.
    let conf = d.join("mamori.toml");
    let text = std::fs::read_to_string(&conf).unwrap();
    let text = if text.contains("lockout_threshold = 10") {
        text.replace("lockout_threshold = 10", "lockout_threshold = 3")
    } else {
        format!("{text}\n[identity]\nlockout_threshold = 3\n") // a store_for file, written before init
    };
    std::fs::write(&conf, text).unwrap();
    crate::login::add_user(&d, "kato", "Tq8!vLm2#pWz7");
    let s = start(&d, &[]);
    let tok = token(s.addr, &d, "metrics-load");
    let deps = crate::support::pip_target("promdeps", &["prometheus-client==0.21.1"], &["prometheus_client"]);
    crate::support::python_ok(&deps, "metrics_client.py", &[&format!("http://{}", s.addr), &tok, "kato"]);
    // Never a token, a patient or a path asked for in a label: the route is the template.
    let m = http(s.addr, "GET", "/metrics", &[], b"").unwrap();
    let text = String::from_utf8(m.body).unwrap();
    assert!(!text.contains(&tok));
    assert!(!text.contains("metrics-load"), "no client id as a label");
    assert!(!text.contains("kato"), "no user name as a label");
    assert!(text.contains("route=\"/fhir/{rtype}/{id}\""), "{text}");
    assert!(!text.contains("/fhir/Patient/"), "{text}");
}

#[test]
fn metrics_are_not_served_to_other_networks() {
    // A trusted proxy forwarding an outside client: /metrics is as absent as any unknown path.
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("d");
    let _db = crate::support::store_for(&d);
    cli(&["init", "--data-dir", d.to_str().unwrap()]);
    append_server_setting(&d, "trusted_proxies = [\"127.0.0.1/32\"]");
    let s = start(&d, &[]);
    let outside = http(s.addr, "GET", "/metrics", &[("X-Forwarded-For", "203.0.113.5")], b"").unwrap();
    let missing = http(s.addr, "GET", "/no-such-path", &[("X-Forwarded-For", "203.0.113.5")], b"").unwrap();
    assert_eq!(outside.status, 404);
    assert_eq!(outside.status, missing.status);
    assert_eq!(outside.json()["resourceType"], "OperationOutcome");
    assert_eq!(http(s.addr, "GET", "/metrics", &[], b"").unwrap().status, 200, "loopback itself may scrape");
}

/// Adds a line under `[server]` in the data directory's mamori.toml.
fn append_server_setting(dir: &Path, line: &str) {
    let p = dir.join("mamori.toml");
    let text = std::fs::read_to_string(&p).unwrap_or_default();
    let text = if text.contains("[server]\n") {
        text.replacen("[server]\n", &format!("[server]\n{line}\n"), 1)
    } else {
        format!("{text}\n[server]\n{line}\n")
    };
    std::fs::write(&p, text).unwrap();
}

fn sources_in_trail(dir: &Path, request_id: &str) -> Vec<String> {
    let out = cli(&["audit", "export", "--data-dir", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["request_id"] == request_id)
        .map(|e| e["source"].as_str().unwrap_or("").to_string())
        .collect()
}

#[test]
fn a_forwarded_address_is_recorded_only_from_a_trusted_proxy() {
    for trusted in [false, true] {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("d");
        let _db = crate::support::store_for(&d);
        cli(&["init", "--data-dir", d.to_str().unwrap()]);
        if trusted {
            append_server_setting(&d, "trusted_proxies = [\"127.0.0.1/32\"]");
        }
        let s = start(&d, &[]);
        let tok = token(s.addr, &d, "proxy-test");
        let auth = format!("Bearer {tok}");
        let id = if trusted { "req-trusted-1" } else { "req-untrusted-1" };
        for (name, value) in [("X-Forwarded-For", "198.51.100.7, 127.0.0.1"), ("Forwarded", "for=198.51.100.7")] {
            let r = http(
                s.addr,
                "GET",
                "/fhir/Patient/nobody",
                &[("Authorization", &auth), ("X-Request-ID", id), (name, value)],
                b"",
            )
            .unwrap();
            assert_eq!(r.status, 404);
        }
        drop(s);
        let sources = sources_in_trail(&d, id);
        assert_eq!(sources.len(), 2, "{sources:?}");
        let want = if trusted { "198.51.100.7" } else { "127.0.0.1" };
        assert!(sources.iter().all(|s| s == want), "trusted={trusted}: {sources:?}");
    }
}

#[test]
fn a_bad_proxy_setting_stops_the_start_with_a_clear_message() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("d");
    let _db = crate::support::store_for(&d);
    cli(&["init", "--data-dir", d.to_str().unwrap()]);
    append_server_setting(&d, "trusted_proxies = [\"10.0.0.0/40\"]");
    let out = cli(&["serve", "--listen", "127.0.0.1:0", "--data-dir", d.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("server.trusted_proxies") && err.contains("10.0.0.0/40"), "{err}");
}

#[cfg(unix)]
#[test]
fn sighup_keeps_serving_and_sigterm_under_a_slow_upload_ends_within_the_drain_bound() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("d");
    let _db = crate::support::store_for(&d);
    // Every serve option from the environment, as a container sets them.
    let mut child = Command::new(BIN)
        .arg("serve")
        .env("MAMORI_DATA_DIR", &d)
        .env("MAMORI_LISTEN", "127.0.0.1:0")
        .env("MAMORI_DRAIN_SECS", "1")
        .env("MAMORI_PUBLIC_URL", "http://mamori.test")
        .env("MAMORI_LOG_FORMAT", "json")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let hostport = line.split_whitespace().nth(2).unwrap().split("://").nth(1).unwrap().split('/').next().unwrap();
    let addr: SocketAddr = hostport.parse().unwrap();
    let stderr = child.stderr.take().unwrap();
    let logs =
        std::thread::spawn(move || BufReader::new(stderr).lines().map_while(Result::ok).collect::<Vec<String>>());
    let mut s = Server { child, addr };
    let disc = http(addr, "GET", "/.well-known/openid-configuration", &[], b"").unwrap();
    assert_eq!(disc.json()["issuer"], "http://mamori.test", "MAMORI_PUBLIC_URL applies");

    signal(&s, "-HUP");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(http(addr, "GET", "/healthz", &[], b"").unwrap().status, 200, "SIGHUP does not stop the server");
    assert!(s.child.try_wait().unwrap().is_none());

    // An authorised client uploading slowly: the head promises 1 MB and only a little arrives.
    let tok = token(addr, &d, "slow-uploader");
    let mut slow = TcpStream::connect(addr).unwrap();
    let head = format!(
        "POST /fhir/Patient HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tok}\r\nContent-Type: application/fhir+json\r\nContent-Length: 1000000\r\n\r\n{{\"resourceType\":"
    );
    slow.write_all(head.as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    signal(&s, "-TERM");
    let status = exit_within(&mut s, Duration::from_secs(60));
    assert!(status.is_some_and(|st| st.success()), "the drain is bounded and the exit is clean: {status:?}");
    drop(slow);
    let logs = logs.join().unwrap();
    // JSON logs: one object per line, the SIGHUP and the drain among them.
    for l in &logs {
        serde_json::from_str::<serde_json::Value>(l).unwrap_or_else(|e| panic!("{e}: {l}"));
    }
    assert!(logs.iter().any(|l| l.contains("SIGHUP")), "{logs:?}");
    assert!(logs.iter().any(|l| l.contains("drain bound reached")), "{logs:?}");
}

#[cfg(unix)]
#[test]
fn sighup_re_reads_the_tls_certificate() {
    use std::sync::Arc;
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("d");
    let _db = crate::support::store_for(&d);
    let (c, k) = (tmp.path().join("cert.pem"), tmp.path().join("key.pem"));
    let issue = |name: &str| {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        cert
    };
    let first = issue("first");
    let s = start(&d, &["--tls-cert", c.to_str().unwrap(), "--tls-key", k.to_str().unwrap()]);
    let presented = |root: &rcgen::Certificate| -> bool {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(root.der().clone()).unwrap();
        let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let conn = rustls::ClientConnection::new(Arc::new(cfg), "localhost".try_into().unwrap()).unwrap();
        let tcp = TcpStream::connect(s.addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        crate::binary::http_on(&mut tls, "GET", "/livez", &[], b"").is_ok_and(|r| r.status == 200)
    };
    assert!(presented(&first));
    // The certificate served is in the configuration baseline (#25): approve the state now.
    let dd = d.to_str().unwrap();
    assert!(cli(&["baseline", "approve", "--reason", "with the first certificate", "--data-dir", dd]).status.success());
    let shown = String::from_utf8_lossy(&cli(&["baseline", "show", "--data-dir", dd]).stdout).to_string();
    assert!(shown.contains("settings/tls-certificate@"), "{shown}");
    // A broken file is not taken: the certificate in use is kept.
    std::fs::write(&k, "not a key").unwrap();
    signal(&s, "-HUP");
    std::thread::sleep(Duration::from_millis(500));
    assert!(presented(&first), "a failed reload keeps the old certificate");
    let second = issue("second");
    signal(&s, "-HUP");
    let mut switched = false;
    for _ in 0..50 {
        if presented(&second) {
            switched = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(switched, "new connections get the renewed certificate");
    assert!(!presented(&first), "the replaced certificate is no longer served");
    // The renewal is recorded through the configuration path: a difference from the baseline.
    let mut drift = String::new();
    for _ in 0..100 {
        drift = String::from_utf8_lossy(&cli(&["baseline", "diff", "--data-dir", dd]).stdout).to_string();
        if drift.contains("DRIFT changed: settings/tls-certificate@") {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(drift.contains("DRIFT changed: settings/tls-certificate@"), "{drift}");
}

#[test]
fn completions_and_the_man_page_come_from_the_parser() {
    for shell in ["bash", "zsh", "fish"] {
        let out = cli(&["completions", shell]);
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.contains("mamori") && text.contains("data-dir") && text.contains("serve"), "{shell}");
    }
    let out = cli(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
    let man = String::from_utf8(cli(&["man"]).stdout).unwrap();
    assert!(man.starts_with(".ie") || man.contains(".TH mamori"), "{}", &man[..man.len().min(200)]);
    let tmp = tempfile::tempdir().unwrap();
    let out = cli(&["man", "--dir", tmp.path().to_str().unwrap()]);
    assert!(out.status.success());
    let serve = std::fs::read_to_string(tmp.path().join("mamori-serve.1")).unwrap();
    assert!(serve.contains("drain") && serve.contains("MAMORI_LISTEN"), "{serve}");
    assert!(tmp.path().join("mamori-audit-verify.1").exists());
}

#[test]
fn the_systemd_unit_verifies_with_systemd() {
    // systemd's own checker: every key known, the command present and executable.
    let Ok(analyze) = which("systemd-analyze") else {
        panic!("systemd-analyze (Debian's systemd package) is needed to check deploy/mamori.service");
    };
    let unit = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/mamori.service")).unwrap();
    assert!(unit.contains("ExecReload=/bin/kill -HUP $MAINPID"), "reload is SIGHUP");
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("mamori.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/mamori", BIN)).unwrap();
    let out = Command::new(analyze).args(["verify", "--man=no"]).arg(&path).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.trim().is_empty(), "{err}");
}

fn which(name: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .and_then(|p| std::env::split_paths(&p).map(|d| d.join(name)).find(|f| f.is_file()))
        .ok_or(())
}

#[test]
fn the_openapi_document_is_valid_and_every_operation_answers_as_documented() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("d");
    let _db = crate::support::store_for(&d);
    let s = start(&d, &[]);
    let deps =
        crate::support::pip_target("openapideps", &["openapi-spec-validator==0.7.1"], &["openapi_spec_validator"]);
    crate::support::python_ok(&deps, "openapi_check.py", &[&format!("http://{}/openapi.json", s.addr)]);
    let doc = http(s.addr, "GET", "/openapi.json", &[], b"").unwrap().json();
    assert_eq!(doc["servers"][0]["url"], format!("http://{}", s.addr));
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            // Required parameters get a harmless value; nothing is authenticated.
            let mut uri = path.replace("{path}", "0/000").replace("{act}", "approve");
            // Any other path parameter: a name that does not exist.
            while let (Some(a), Some(b)) = (uri.find('{'), uri.find('}')) {
                uri.replace_range(a..=b, "no-such-id");
            }
            let query: Vec<String> = op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["in"] == "query" && p["required"] == true)
                .map(|p| format!("{}=0", p["name"].as_str().unwrap()))
                .collect();
            if !query.is_empty() {
                uri = format!("{uri}?{}", query.join("&"));
            }
            let body_type = op["requestBody"]["content"].as_object().and_then(|c| c.keys().next().cloned());
            let headers: Vec<(&str, &str)> =
                body_type.as_deref().map(|t| vec![("Content-Type", t)]).unwrap_or_default();
            let headers = headers.as_slice();
            let r = http(s.addr, &method.to_uppercase(), &uri, headers, b"").unwrap();
            let documented: Vec<&String> = op["responses"].as_object().unwrap().keys().collect();
            assert!(
                documented.iter().any(|c| **c == r.status.to_string()),
                "{method} {uri}: {} is not among the documented {documented:?}",
                r.status
            );
            checked += 1;
        }
    }
    assert!(checked >= 20, "{checked}");
    // And the other way round: what answers besides FHIR and the pages is documented.
    for path in [
        "/healthz",
        "/livez",
        "/readyz",
        "/metrics",
        "/oauth/userinfo",
        "/oauth/logout",
        "/audit/log/checkpoint",
        "/maintenance/windows",
        "/integrity/external/{name}/check",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} is not documented");
    }
    let r = http(s.addr, "GET", "/no-such-endpoint", &[], b"").unwrap();
    assert_eq!(r.status, 404);
}
