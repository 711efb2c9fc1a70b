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
    let ok = cli(&["baseline", "approve", "--reason", "initial baseline", "--data-dir", d, "--operator", "anzen"]);
    assert!(ok.status.success(), "{}", out(&ok));
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
    for line in ["DRIFT added: client/evil", "DRIFT added: policies/active", "DRIFT changed: file/mamori.toml"] {
        assert!(text.contains(line), "{line} in {text}");
    }
    assert!(!text.contains("account/anzen"), "an unchanged item is not reported: {text}");

    // The baseline itself rewritten in the database: its signature no longer verifies.
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
    assert!(text.contains("the baseline itself does not verify"), "{text}");

    // Approving anew is an audited act, with the note's hash in the trail.
    let again =
        cli(&["baseline", "approve", "--reason", "accept the hand edit", "--data-dir", d, "--operator", "anzen"]);
    assert!(again.status.success(), "{}", out(&again));
    let sha = out(&again).split("note sha256 ").nth(1).unwrap().split_whitespace().next().unwrap().to_string();
    let trail = cli(&["audit", "export", "--format", "ndjson", "--data-dir", d]);
    assert!(String::from_utf8_lossy(&trail.stdout).contains(&sha), "the baseline's hash is anchored in the trail");
    let clean = cli(&["baseline", "diff", "--data-dir", d]);
    assert!(clean.status.success(), "{}", out(&clean));
}

fn alerts(d: &str) -> Vec<serde_json::Value> {
    let out = cli(&["audit", "export", "--format", "ndjson", "--data-dir", d]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["action"] == "alert-config-drift")
        .collect()
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
    let detail = a[1]["detail"].as_str().unwrap();
    assert!(detail.contains("added: client/evil") && detail.contains("file/mamori.toml"), "{detail}");
    drop(s);
}
