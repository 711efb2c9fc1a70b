//! The configuration baseline (C2, issue #25) through the command line on either backend:
//! approved, shown, compared — and every change made around the configuration path is named:
//! rows inserted with SQL, an edited `mamori.toml`, and a baseline rewritten
//! in the database (its signature no longer verifies).

use crate::binary::cli;

fn out(o: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn a_signed_baseline_names_every_change_made_around_the_configuration_path() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    let _db = crate::support::store_for(&dir);
    let d = dir.to_str().unwrap();
    assert!(cli(&["init", "--data-dir", d]).status.success());
    crate::login::add_account(&dir, "anzen", "k7#Vq2!mZp-w9", &["--role", "security_manager"]);

    // Nothing approved yet: said, exit 2.
    let none = cli(&["baseline", "diff", "--data-dir", d]);
    assert_eq!(none.status.code(), Some(2), "{}", out(&none));
    // A reason is required.
    let bad = cli(&["baseline", "approve", "--reason", " ", "--data-dir", d, "--operator", "anzen"]);
    assert!(!bad.status.success(), "{}", out(&bad));
    // Approving a baseline is high-risk: held for a second person (exit 3), here the security
    // manager signed in (the operator's name proves nobody), who approves it.
    let held = cli(&["baseline", "approve", "--reason", "initial baseline", "--data-dir", d, "--operator", "anzen"]);
    assert_eq!(held.status.code(), Some(3), "{}", out(&held));
    let pending = cli(&["baseline", "diff", "--data-dir", d]);
    assert_eq!(pending.status.code(), Some(2), "nothing approved while held: {}", out(&pending));
    assert_eq!(crate::support::approve_pending(&dir), 1);
    let shown = cli(&["baseline", "show", "--data-dir", d]);
    let text = out(&shown);
    assert!(shown.status.success(), "{text}");
    for item in ["account/anzen ", "file/mamori.toml ", "file/keys/master.key ", "settings/mamori.toml "] {
        assert!(text.contains(item), "{item} in {text}");
    }
    assert!(text.contains("approved by operator:anzen") || text.contains("approved by anzen"), "{text}");
    let same = cli(&["baseline", "diff", "--data-dir", d]);
    assert!(same.status.success() && out(&same).contains("no difference"), "{}", out(&same));

    // Around the path: a client inserted with SQL, a new policies version written the same way,
    // and mamori.toml edited.
    let db = crate::support::RawDb::at(&dir);
    db.exec_both(
        "INSERT INTO config_versions (kind, key, version, value, changed_by, changed_at, reason) VALUES \
         ('client', 'evil', 1, '{\"id\":\"evil\",\"scope\":\"system/*.rs\",\"token_lifetime_secs\":3600}', 'nobody', 0, 'x'), \
         ('policies', 'active', 1, '{\"text\":\"@id(\\\"evil\\\") permit (principal, action, resource);\"}', 'nobody', 0, 'x')",
    )
    .unwrap();
    let toml = dir.join("mamori.toml");
    let mut t = std::fs::read_to_string(&toml).unwrap();
    t.push_str("\n# edited by hand\n");
    std::fs::write(&toml, t).unwrap();
    let drift = cli(&["baseline", "diff", "--data-dir", d]);
    let text = out(&drift);
    assert_eq!(drift.status.code(), Some(1), "{text}");
    for line in [
        "TAMPERED client/evil (unsealed v1)",
        "TAMPERED policies/active (unsealed v1)",
        "DRIFT changed: file/mamori.toml",
    ] {
        assert!(text.contains(line), "{line} in {text}");
    }
    assert!(!text.contains("account/anzen"), "an unchanged item is not reported: {text}");
    // Rows without a seal are never served: the application does not exist for the CLI either.
    let listed = cli(&["client", "list", "--data-dir", d]);
    assert!(listed.status.success() && !out(&listed).contains("evil"), "{}", out(&listed));

    // The baseline itself rewritten in the database: not sealed, so not served either.
    let v = db.int("SELECT MAX(version) FROM config_versions WHERE kind = 'baseline'");
    db.exec_both(&format!(
        "INSERT INTO config_versions (kind, key, version, value, changed_by, changed_at, reason) \
         SELECT kind, key, version + 1, replace(value, 'initial baseline', 'forged baseline'), changed_by, changed_at, reason \
         FROM config_versions WHERE kind = 'baseline' AND version = {v}"
    ))
    .unwrap();
    let forged = cli(&["baseline", "diff", "--data-dir", d]);
    let text = out(&forged);
    assert_eq!(forged.status.code(), Some(1), "{text}");
    assert!(text.contains(&format!("TAMPERED baseline/active (unsealed v{})", v + 1)), "{text}");
    let shown = out(&cli(&["baseline", "show", "--data-dir", d]));
    assert!(shown.contains("initial baseline") && !shown.contains("forged"), "{shown}");

    // Recovery needs a reason, and only what was changed around the path can be reverted.
    let bare = cli(&["baseline", "revert", "client/evil", "--reason", " ", "--data-dir", d, "--operator", "anzen"]);
    assert!(!bare.status.success(), "{}", out(&bare));
    let odd = cli(&["baseline", "revert", "access-review/x", "--reason", "x", "--data-dir", d]);
    assert!(!odd.status.success() && out(&odd).contains("not a configuration kind"), "{}", out(&odd));
    let intact = cli(&["baseline", "revert", "account/anzen", "--reason", "x", "--data-dir", d, "--operator", "anzen"]);
    assert!(!intact.status.success() && out(&intact).contains("not changed around"), "{}", out(&intact));
    for item in ["client/evil", "policies/active", "baseline/active"] {
        let r = cli(&["baseline", "revert", item, "--reason", "not ours", "--data-dir", d, "--operator", "anzen"]);
        assert!(r.status.success(), "{item}: {}", out(&r));
    }
    let text = out(&cli(&["baseline", "diff", "--data-dir", d]));
    assert!(!text.contains("TAMPERED") && text.contains("DRIFT changed: file/mamori.toml"), "{text}");

    // Approving anew is an audited act, with the note's hash in the trail.
    let again =
        cli(&["baseline", "approve", "--reason", "accept the hand edit", "--data-dir", d, "--operator", "anzen"]);
    assert_eq!(again.status.code(), Some(3), "{}", out(&again));
    assert_eq!(crate::support::approve_pending(&dir), 1);
    let shown = out(&cli(&["baseline", "show", "--data-dir", d]));
    assert!(shown.contains("accept the hand edit"), "{shown}");
    let sha = shown.split("note sha256 ").nth(1).unwrap().split_whitespace().next().unwrap().to_string();
    let trail = cli(&["audit", "export", "--format", "ndjson", "--data-dir", d]);
    let trail = String::from_utf8_lossy(&trail.stdout).to_string();
    assert!(trail.contains(&sha), "the baseline's hash is anchored in the trail");
    assert!(trail.contains("reverted a change made around the configuration path: not ours"), "reverts are audited");
    let clean = cli(&["baseline", "diff", "--data-dir", d]);
    assert!(clean.status.success(), "{}", out(&clean));
}

fn alerts(d: &str) -> Vec<serde_json::Value> {
    entries(d, "alert-config-drift")
}

/// Layers 2 and 3 of detection: while serving, a file edited behind the server's back is found
/// by the periodic re-hash and raised once as `alert-config-drift`; a change made while the
/// server was stopped is raised at start, before it serves.
#[test]
fn drift_is_alerted_while_serving_and_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    let _db = crate::support::store_for(&dir);
    let d = dir.to_str().unwrap();
    assert!(cli(&["init", "--data-dir", d]).status.success());
    let toml = dir.join("mamori.toml");
    let text = std::fs::read_to_string(&toml).unwrap().replace("# rehash_secs = 3", "rehash_secs = 1");
    std::fs::write(&toml, &text).unwrap();
    assert!(cli(&["baseline", "approve", "--reason", "initial", "--data-dir", d]).status.success());

    let s = crate::binary::start(&dir, &[]);
    std::fs::write(&toml, format!("{text}\n# edited while serving\n")).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let found = loop {
        let a = alerts(d);
        if !a.is_empty() || std::time::Instant::now() > deadline {
            break a;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    };
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0]["detail"].as_str().unwrap().contains("changed: file/mamori.toml"), "{found:?}");
    // The same drift is not raised again on every re-hash.
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert_eq!(alerts(d).len(), 1);
    drop(s);

    // While stopped: an application inserted into the database.
    let db = crate::support::RawDb::at(&dir);
    db.exec_both(
        "INSERT INTO config_versions (kind, key, version, value, changed_by, changed_at, reason) VALUES \
         ('client', 'evil', 1, '{\"id\":\"evil\",\"scope\":\"system/*.rs\",\"token_lifetime_secs\":3600}', 'nobody', 0, 'x')",
    )
    .unwrap();
    let s = crate::binary::start(&dir, &[]);
    // Raised before the server answered its first request.
    let a = alerts(d);
    assert_eq!(a.len(), 2, "{a:?}");
    assert!(a[1]["detail"].as_str().unwrap().contains("file/mamori.toml"), "{a:?}");
    let t = entries(d, "alert-config-tampered");
    assert_eq!(t.len(), 1, "{t:?}");
    let detail = t[0]["detail"].as_str().unwrap();
    assert!(detail.contains("client/evil (unsealed): blocked"), "{detail}");
    drop(s);
}

fn entries(d: &str, action: &str) -> Vec<serde_json::Value> {
    let out = cli(&["audit", "export", "--format", "ndjson", "--data-dir", d]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["action"] == action)
        .collect()
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !f() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// The responses (運用に反映), while serving, on either backend: a policy set written with SQL
/// stops all clinical access (block) until it is reverted; an application's row changed with
/// SQL blocks that application only; the settings row is written back (revert); a dropped guard
/// trigger is put back. Each is an `alert-config-tampered` entry.
#[test]
fn changes_around_the_path_are_blocked_or_reverted_while_serving() {
    use crate::binary::{http, token};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    let _db = crate::support::store_for(&dir);
    let d = dir.to_str().unwrap();
    assert!(cli(&["init", "--data-dir", d]).status.success());
    let toml = dir.join("mamori.toml");
    let text = std::fs::read_to_string(&toml).unwrap().replace("# rehash_secs = 3", "rehash_secs = 1");
    std::fs::write(&toml, &text).unwrap();
    crate::login::add_account(&dir, "anzen", "k7#Vq2!mZp-w9", &["--role", "security_manager"]);
    let s = crate::binary::start(&dir, &[]);
    let app = token(s.addr, &dir, "app1");
    let other = token(s.addr, &dir, "app2");
    let read = |t: &str| {
        let auth = format!("Bearer {t}");
        http(s.addr, "GET", "/fhir/Patient?_count=1", &[("Authorization", auth.as_str())], b"").unwrap()
    };
    assert_eq!(read(&app).status, 200);
    let db = crate::support::RawDb::at(&dir);

    // A permissive policy set written with SQL: never loaded, and all clinical access stops.
    db.exec_both(
        "INSERT INTO config_versions (kind, key, version, value, changed_by, changed_at, reason) VALUES \
         ('policies', 'active', 1, '{\"text\":\"@id(\\\"evil\\\") permit (principal, action, resource);\"}', 'nobody', 0, 'x')",
    )
    .unwrap();
    wait_for("the policy block", || read(&app).status == 503);
    let r = read(&other);
    assert_eq!(r.status, 503);
    let body = r.json();
    assert_eq!(body["resourceType"], "OperationOutcome");
    let msg = body["issue"][0]["diagnostics"].as_str().unwrap_or_default().to_string();
    assert!(msg.contains("policies/active") && msg.contains("mamori baseline revert"), "{msg}");
    let t = entries(d, "alert-config-tampered");
    assert!(t.iter().any(|e| e["detail"].as_str().unwrap().contains("policies/active (unsealed): blocked")), "{t:?}");
    // Reverted with the right and a reason: access comes back.
    let rv =
        cli(&["baseline", "revert", "policies/active", "--reason", "not ours", "--data-dir", d, "--operator", "anzen"]);
    assert!(rv.status.success(), "{}", out(&rv));
    wait_for("the block to lift", || read(&app).status == 200);

    // One application's row changed with SQL: that application is refused, the other is not.
    let v = db.int("SELECT MAX(version) FROM config_versions WHERE kind = 'client' AND key = 'app1'");
    db.exec_both(&format!(
        "INSERT INTO config_versions (kind, key, version, value, changed_by, changed_at, reason) \
         SELECT kind, key, version + 1, value, changed_by, changed_at, 'widened' FROM config_versions \
         WHERE kind = 'client' AND key = 'app1' AND version = {v}"
    ))
    .unwrap();
    wait_for("the application block", || read(&app).status == 503);
    assert_eq!(read(&other).status, 200, "only the tampered application is blocked");
    let ok = cli(&[
        "baseline",
        "accept",
        "client/app1",
        "--reason",
        "our DBA's fix",
        "--data-dir",
        d,
        "--operator",
        "anzen",
    ]);
    assert!(ok.status.success(), "{}", out(&ok));
    wait_for("the application block to lift", || read(&app).status == 200);

    // The settings row changed with SQL: written back by the server itself (revert).
    let v = db.int("SELECT MAX(version) FROM config_versions WHERE kind = 'settings'");
    db.exec_both(&format!(
        "INSERT INTO config_versions (kind, key, version, value, changed_by, changed_at, reason) \
         SELECT kind, key, version + 1, '{{}}', changed_by, changed_at, 'reset' FROM config_versions \
         WHERE kind = 'settings' AND version = {v}"
    ))
    .unwrap();
    wait_for("the settings revert", || {
        entries(d, "alert-config-tampered")
            .iter()
            .any(|e| e["detail"].as_str().unwrap().contains("settings/mamori.toml (unsealed): reverted"))
    });
    let fixed = cli(&["baseline", "diff", "--data-dir", d]);
    assert!(!out(&fixed).contains("TAMPERED"), "{}", out(&fixed));
    assert_eq!(read(&app).status, 200);

    // A guard trigger dropped: put back, and the table is append-only again.
    db.exec("DROP TRIGGER config_no_update", "DROP TRIGGER config_no_change ON config_versions").unwrap();
    wait_for("the trigger repair", || {
        entries(d, "alert-config-tampered")
            .iter()
            .any(|e| e["detail"].as_str().unwrap().contains("(missing): reverted (trigger put back)"))
    });
    assert!(db.exec_both("UPDATE config_versions SET reason = 'x'").is_err(), "the guard is back");
    drop(s);
}

/// External settings (C4): another system's export registered as a signed baseline; a later
/// export checked field by field (JSON Pointer) on the command line and over HTTP by the
/// scheduler application the baseline names; each check recorded, drift alerted; an application
/// the baseline does not name finds nothing there, exactly as for a name that does not exist.
#[test]
fn external_settings_are_a_signed_baseline_checked_by_json_pointer() {
    use crate::binary::{http, start, token};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    let _db = crate::support::store_for(&dir);
    let d = dir.to_str().unwrap();
    assert!(cli(&["init", "--data-dir", d]).status.success());
    let s = start(&dir, &[]);
    let sched = token(s.addr, &dir, "cloud-export");
    let other = token(s.addr, &dir, "other-app");

    let approved = tmp.path().join("approved.json");
    std::fs::write(&approved, r#"{"tenant": {"mfa": true, "sharing": "internal", "admins": ["a", "b"], "a/b": 1}}"#)
        .unwrap();
    let f = approved.to_str().unwrap();
    // Bad input: a clear error, nothing registered.
    let bad = tmp.path().join("bad.json");
    std::fs::write(&bad, "{\"tenant\": ").unwrap();
    let o = cli(&[
        "baseline",
        "external",
        "add",
        "m365",
        "--file",
        bad.to_str().unwrap(),
        "--reason",
        "x",
        "--data-dir",
        d,
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(out(&o).contains("not JSON"), "{}", out(&o));
    let o = cli(&["baseline", "external", "add", "M 365", "--file", f, "--reason", "x", "--data-dir", d]);
    assert!(o.status.code() == Some(2) && out(&o).contains("not an external settings name"), "{}", out(&o));
    let o = cli(&[
        "baseline",
        "external",
        "add",
        "m365",
        "--file",
        f,
        "--client",
        "nobody",
        "--reason",
        "x",
        "--data-dir",
        d,
    ]);
    assert!(o.status.code() == Some(2) && out(&o).contains("no application"), "{}", out(&o));
    assert!(out(&cli(&["baseline", "external", "list", "--data-dir", d])).contains("no external settings registered"));

    let o = cli(&[
        "baseline",
        "external",
        "add",
        "m365",
        "--file",
        f,
        "--client",
        "cloud-export",
        "--reason",
        "tenant at go-live",
        "--data-dir",
        d,
    ]);
    assert!(o.status.success(), "{}", out(&o));
    let listed = out(&cli(&["baseline", "external", "list", "--data-dir", d]));
    assert!(listed.starts_with("m365\tv1\t") && listed.contains("clients: cloud-export"), "{listed}");

    // The same export: no difference, exit 0.
    let same = cli(&["baseline", "external", "check", "m365", "--file", f, "--data-dir", d]);
    assert!(same.status.success() && out(&same).contains("0 changed, 0 added, 0 removed"), "{}", out(&same));
    // A drifted export: every difference by JSON Pointer, exit 1.
    let current = tmp.path().join("current.json");
    let drifted = r#"{"tenant": {"mfa": false, "sharing": "internal", "admins": ["a"], "a/b": 1.0, "guests": true}}"#;
    std::fs::write(&current, drifted).unwrap();
    let drift = cli(&["baseline", "external", "check", "m365", "--file", current.to_str().unwrap(), "--data-dir", d]);
    let text = out(&drift);
    assert_eq!(drift.status.code(), Some(1), "{text}");
    assert!(text.contains("CHANGED /tenant/mfa true -> false"), "{text}");
    assert!(text.contains("ADDED /tenant/guests true"), "{text}");
    assert!(text.contains("REMOVED /tenant/admins/1 \"b\""), "{text}");
    assert!(!text.contains("a~1b"), "1.0 and 1 are the same setting: {text}");
    let missing = cli(&["baseline", "external", "check", "nope", "--file", f, "--data-dir", d]);
    assert!(missing.status.code() == Some(2) && out(&missing).contains("no external settings `nope`"));

    // Over HTTP, by the scheduler the baseline names.
    let post = |t: &str, name: &str, ctype: &str, body: &str| {
        let auth = format!("Bearer {t}");
        let path = format!("/integrity/external/{name}/check");
        http(s.addr, "POST", &path, &[("Authorization", auth.as_str()), ("Content-Type", ctype)], body.as_bytes())
            .unwrap()
    };
    let r = post(&sched, "m365", "application/json", drifted);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["drift"], true);
    assert_eq!(v["changed"][0]["path"], "/tenant/mfa");
    assert_eq!(v["by"], "client:cloud-export");
    assert_eq!(post(&sched, "m365", "application/json", r#"{"tenant": "#).status, 400);
    assert_eq!(post(&sched, "m365", "text/plain", drifted).status, 415);
    assert_eq!(post("not-a-token", "m365", "application/json", drifted).status, 401);
    // Another application: the baseline is not there for it, exactly as a name that is not.
    let hidden = post(&other, "m365", "application/json", drifted);
    let absent = post(&other, "m366", "application/json", drifted);
    assert_eq!((hidden.status, absent.status), (404, 404));
    let shape = |r: &crate::binary::Reply| {
        let j = r.json();
        (j["resourceType"].clone(), j["issue"][0]["code"].clone(), r.body.len())
    };
    assert_eq!(shape(&hidden), shape(&absent));
    // Each refused request left its audit entry (400, 415, 401, and both 404s).
    let refused = entries(d, "external-check");
    assert_eq!(refused.iter().filter(|e| e["outcome"] == "failure").count(), 5, "{refused:?}");
    assert_eq!(hidden.body.len(), absent.body.len(), "the same answer, but for the name");

    // Every check is recorded (newest first) and a drift alerted.
    let checks = out(&cli(&["baseline", "external", "checks", "m365", "--data-dir", d]));
    let lines: Vec<&str> = checks.lines().collect();
    assert_eq!(lines.len(), 3, "{checks}");
    assert!(lines[0].contains("client:cloud-export") && lines[0].contains("1 changed, 1 added, 1 removed"), "{checks}");
    let alerts = entries(d, "alert-external-drift");
    assert_eq!(alerts.len(), 2, "{alerts:?}");
}

/// Every alert also reaches the syslog collector of `[integrity] alert_syslog` (RFC 5424 over
/// TLS, octet counting): here a client's row changed with SQL while serving.
#[test]
fn alerts_reach_the_syslog_collector() {
    use std::io::Read;
    let tmp = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["collector.test".to_string()]).unwrap().self_signed(&key).unwrap();
    std::fs::write(tmp.path().join("c.pem"), cert.pem()).unwrap();
    std::fs::write(tmp.path().join("k.pem"), key.serialize_pem()).unwrap();
    let cfg = mamori_http::tls_config(&mamori_http::TlsFiles {
        cert: tmp.path().join("c.pem"),
        key: tmp.path().join("k.pem"),
    })
    .unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let received = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = received.clone();
    std::thread::spawn(move || {
        for tcp in listener.incoming() {
            let Ok(tcp) = tcp else { continue };
            let conn = rustls::ServerConnection::new(cfg.clone()).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            let mut buf = [0u8; 4096];
            while let Ok(n) = tls.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        }
    });

    let dir = tmp.path().join("d");
    let _db = crate::support::store_for(&dir);
    let d = dir.to_str().unwrap();
    assert!(cli(&["init", "--data-dir", d]).status.success());
    let toml = dir.join("mamori.toml");
    let text = std::fs::read_to_string(&toml).unwrap().replace("# rehash_secs = 3", "rehash_secs = 1");
    let settings = format!(
        "alert_syslog = \"{addr}\"\nalert_syslog_ca = \"{}\"\nalert_syslog_name = \"collector.test\"",
        tmp.path().join("c.pem").display()
    );
    // The default file has the line commented in its [integrity] table; a file written for the
    // PostgreSQL store before `init` has no such table.
    let text = if text.contains("# alert_syslog = ") {
        text.replace("# alert_syslog = \"siem.example.local:6514\"", &settings)
    } else {
        format!("{text}\n[integrity]\n{settings}\n")
    };
    std::fs::write(&toml, &text).unwrap();
    let s = crate::binary::start(&dir, &[]);
    let _ = crate::binary::token(s.addr, &dir, "app1");
    let db = crate::support::RawDb::at(&dir);
    let v = db.int("SELECT MAX(version) FROM config_versions WHERE kind = 'client' AND key = 'app1'");
    db.exec_both(&format!(
        "INSERT INTO config_versions (kind, key, version, value, changed_by, changed_at, reason) \
         SELECT kind, key, version + 1, value, changed_by, changed_at, 'widened' FROM config_versions \
         WHERE kind = 'client' AND key = 'app1' AND version = {v}"
    ))
    .unwrap();
    wait_for("the alert at the collector", || received.lock().unwrap().contains("alert-config-tampered"));
    let got = received.lock().unwrap().clone();
    // Octet counting: "LEN SP <PRI>1 …" frames.
    let (len, rest) = got.split_once(' ').unwrap();
    assert!(len.parse::<usize>().is_ok() && rest.starts_with('<'), "{got}");
    assert!(got.contains("client/app1"), "{got}");
    let cursor: u64 = std::fs::read_to_string(dir.join("alerts.cursor")).unwrap().trim().parse().unwrap();
    assert!(cursor > 0);
}

/// Layer 1: a change through the configuration path is checked against the baseline at once —
/// in the same call, before any re-hash — and a difference names the entry and who made it; a
/// change back to the approved value raises nothing.
#[test]
fn a_change_through_the_path_is_checked_against_the_baseline_at_once() {
    let h = crate::support::Harness::new();
    let op = mamori_app::Ctx::operator(&h.node, "kanri");
    mamori_app::baseline::approve(&op, &h.node, "installation").unwrap();
    let drift = |h: &crate::support::Harness| {
        let q = mamori_audit::EntryQuery {
            action: Some("alert-config-drift".into()),
            limit: 100,
            ..mamori_audit::EntryQuery::default()
        };
        h.node.store.query(&q).unwrap().len()
    };
    assert_eq!(drift(&h), 0);
    let feed = mamori_app::clients::NewClient {
        id: "lab-feed".into(),
        scope: "system/Observation.rs".into(),
        token_lifetime_secs: 900,
        ..mamori_app::clients::NewClient::default()
    };
    mamori_app::clients::register(&op, &h.node, feed).unwrap();
    let q = mamori_audit::EntryQuery {
        action: Some("alert-config-drift".into()),
        limit: 100,
        ..mamori_audit::EntryQuery::default()
    };
    let found = h.node.store.query(&q).unwrap();
    assert_eq!(found.len(), 1);
    let e: serde_json::Value = serde_json::from_slice(&found[0].1).unwrap();
    let detail = e["detail"].as_str().unwrap();
    assert!(detail.starts_with("added: client/lab-feed") && detail.contains("by operator:kanri"), "{detail}");
    // With the application in a new baseline: disabling it differs (raised), enabling it again
    // is the approved value (nothing raised).
    mamori_app::baseline::approve(&op, &h.node, "with the lab feed").unwrap();
    mamori_app::clients::disable(&op, &h.node, "lab-feed").unwrap();
    assert_eq!(drift(&h), 2);
    mamori_app::clients::enable(&op, &h.node, "lab-feed").unwrap();
    assert_eq!(drift(&h), 2);
}

/// High-risk settings in `mamori.toml` (retention, the password/second-factor rule, audit,
/// integrity) take effect only once a baseline holding them is approved (itself under the
/// two-person rule): until then the approved values stay in force, the file's are recorded as
/// drift, and the hold is alerted. Other settings apply at start as before.
#[test]
fn high_risk_settings_wait_for_an_approved_baseline() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    let _db = crate::support::store_for(&dir);
    let d = dir.to_str().unwrap();
    // The shipped file, with the test database when on PostgreSQL (written there before `init`).
    let toml = dir.join("mamori.toml");
    let written = std::fs::read_to_string(&toml).unwrap_or_default();
    let mut shipped = mamori_app::config::DEFAULT_CONFIG.to_string();
    if let Some(line) = written.lines().find(|l| l.starts_with("database = ")) {
        shipped = shipped.replace("# database = \"postgres://mamori@db.example.local:5432/mamori\"", line);
    }
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(&toml, &shipped).unwrap();
    assert!(cli(&["init", "--data-dir", d]).status.success());
    assert!(cli(&["baseline", "approve", "--reason", "installation", "--data-dir", d]).status.success());
    let text = std::fs::read_to_string(&toml).unwrap();
    let edited = text
        .replace("default_years = 5", "default_years = 7")
        .replace("password_mode = \"second-factor\"", "password_mode = \"long\"")
        .replace("max_body_bytes = 16777216", "max_body_bytes = 8388608");
    assert_ne!(edited, text);
    std::fs::write(&toml, &edited).unwrap();
    {
        let node = mamori::open_node(&dir).unwrap();
        assert_eq!(node.config.retention.default_years, 5, "retention held at the approved value");
        assert_eq!(node.config.password.mode, mamori_identity::password::Mode::SecondFactor, "2FA rule held");
        assert_eq!(node.config.max_body_bytes, 8_388_608, "an ordinary setting applies at once");
    }
    let held = entries(d, "alert-settings-held");
    assert!(!held.is_empty(), "the hold is alerted");
    let detail = held[0]["detail"].as_str().unwrap();
    assert!(detail.contains("retention") && detail.contains("identity.password_mode"), "{detail}");
    let diff = String::from_utf8_lossy(&cli(&["baseline", "diff", "--data-dir", d]).stdout).to_string();
    assert!(diff.contains("DRIFT changed: settings/mamori.toml"), "{diff}");
    // Approved (here by the only one who could: waived): in force at the next start.
    assert!(cli(&["baseline", "approve", "--reason", "seven years", "--data-dir", d]).status.success());
    let node = mamori::open_node(&dir).unwrap();
    assert_eq!(node.config.retention.default_years, 7);
    assert_eq!(node.config.password.mode, mamori_identity::password::Mode::Long);
}
