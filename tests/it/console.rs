//! The web console (#24) against the real binary: in Chromium (each role's main path, a forged
//! form, a clerk refused, the language switch, keyboard, axe-core), and what it leaves in the
//! audit trail — the same entries as the command line's use cases.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::binary::{cli, http, start};

const PW: &str = "k7#Vq2!mZp-w9";
const NEW_PW: &str = "Zx8$Lm4!qRt-N6";

fn add(dir: &Path, user: &str, roles: &[&str]) {
    let args: Vec<&str> = roles.iter().flat_map(|r| ["--role", r]).collect();
    crate::login::add_account(dir, user, PW, &args);
}

fn totp(dir: &Path, user: &str) -> String {
    let out = cli(&["user", "enroll-totp", user, "--data-dir", dir.to_str().unwrap()]);
    let uri = String::from_utf8(out.stdout).unwrap();
    uri.split("secret=").nth(1).unwrap().split('&').next().unwrap().to_string()
}

/// Without a session the console sends the browser to sign in, and answers nothing else.
#[test]
fn the_console_asks_for_a_sign_in_and_serves_nothing_without_one() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    let _db = crate::support::store_for(&dir);
    let s = start(&dir, &[]);
    for path in ["/console/", "/console", "/console/audit?agent=x", "/console/users/anyone", "/console/nothing-here"] {
        let r = http(s.addr, "GET", path, &[], b"").unwrap();
        assert_eq!(r.status, 303, "{path}");
        let to = r.header("location").unwrap();
        assert!(to.starts_with("/login?next=/console"), "{path} → {to}");
    }
    // A POST without a session changes nothing and also only points to the sign-in.
    let r = http(
        s.addr,
        "POST",
        "/console/users/admin/disable",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        b"csrf=x",
    )
    .unwrap();
    assert_eq!(r.status, 303);
    // The stylesheet is public (no data in it).
    let r = http(s.addr, "GET", "/console/console.css", &[], b"").unwrap();
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/css"));
}

#[test]
fn every_role_uses_the_console_in_a_browser() {
    crate::login::chromium();
    let deps = crate::support::pip_target("smartjsdeps", &["selenium==4.27.1", "pyotp==2.9.0"], &["selenium", "pyotp"]);
    let axe = crate::clients::npm_prefix("axecore", &["axe-core@4.11.0"], "axe-core");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    let _db = crate::support::store_for(&dir);
    let d = dir.to_str().unwrap();
    assert!(cli(&["init", "--data-dir", d]).status.success());
    add(&dir, "anzen", &["security_manager"]);
    add(&dir, "kanri", &["system_admin"]);
    add(&dir, "uketsuke", &["clerk"]);
    add(&dir, "suzuki", &["nurse"]);
    let secrets: serde_json::Map<String, Value> =
        ["anzen", "kanri", "uketsuke"].iter().map(|u| ((*u).to_string(), Value::from(totp(&dir, u)))).collect();
    let free = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (port, attack_port) = (free(), free());
    let base = format!("http://localhost:{port}");
    let server = start(&dir, &["--listen", &format!("127.0.0.1:{port}"), "--public-url", &base]);
    // Screenshots for docs/console/ when asked (MAMORI_CONSOLE_SHOTS=docs/console), else thrown away.
    let shots = match std::env::var("MAMORI_CONSOLE_SHOTS") {
        Ok(p) => {
            // Japanese glyphs for the pictures (Debian's Noto CJK); the checks do not need them.
            let out = Command::new("apt-get")
                .args(["install", "-y", "-qq", "fonts-noto-cjk"])
                .env("DEBIAN_FRONTEND", "noninteractive")
                .output()
                .unwrap();
            assert!(out.status.success(), "installing fonts-noto-cjk: {}", String::from_utf8_lossy(&out.stderr));
            Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
        }
        Err(_) => tmp.path().join("shots"),
    };
    crate::support::python_ok(
        &deps,
        "console_browser.py",
        &[
            &base,
            &Value::Object(secrets).to_string(),
            PW,
            NEW_PW,
            axe.join("node_modules/axe-core/axe.min.js").to_str().unwrap(),
            shots.to_str().unwrap(),
            &attack_port.to_string(),
        ],
    );
    drop(server);
    // What the console did is in the audit trail, as the people who did it.
    let out = cli(&["audit", "export", "--format", "ndjson", "--data-dir", d]);
    let entries: Vec<Value> =
        String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let by = |who: &str, action: &str| -> Vec<&Value> {
        entries.iter().filter(|e| e["actor"]["id"] == who && e["action"] == action).collect()
    };
    assert!(!by("anzen", "audit-search").is_empty(), "searching the trail is recorded");
    assert!(!by("anzen", "audit-read").is_empty(), "opening an entry is recorded");
    let logouts = by("anzen", "logout");
    assert!(
        logouts.iter().any(|e| e["detail"].as_str().unwrap_or("").starts_with("session lasted")),
        "signing out is recorded with the session's length: {logouts:?}"
    );
    let denied = by("uketsuke", "admin-denied");
    assert!(denied.len() >= 4, "each page refused to the clerk is recorded: {denied:?}");
    let account = |user: &str| {
        let out = cli(&["user", "show", user, "--data-dir", d]);
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    assert!(account("suzuki").contains("disabled"), "{}", account("suzuki"));
    assert!(account("takahashi").contains("nurse"), "{}", account("takahashi"));
    assert!(account("kanri").contains("active"), "{}", account("kanri"));
    // The administrator's changes are attributed to them.
    let changes: Vec<&Value> = entries
        .iter()
        .filter(|e| e["actor"]["id"] == "kanri" && e["outcome"] == "success" && e.to_string().contains("suzuki"))
        .collect();
    assert!(changes.len() >= 2, "enrolment and disabling of suzuki by kanri: {changes:?}");
}
