//! Issue #4: an outside client (Python `requests` + `pyotp`, installed by the test) signs in
//! through the real login pages of the real binary: password, TOTP or enrolment, forced password
//! change, browser binding, logout. Identity events land in the audit trail.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::binary::{BIN, cli, start};

/// A directory with `requests` and `pyotp`, installed with pip once.
fn python_deps() -> PathBuf {
    crate::support::pip_target("pydeps", &["requests==2.32.3", "pyotp==2.9.0"], &["pyotp", "requests"])
}

pub(crate) fn add_user(dir: &Path, user: &str, pw: &str) {
    add_account(dir, user, pw, &["--role", "doctor", "--fhir-user", &format!("Practitioner/{user}")]);
}

/// `mamori user add USER ARGS… --password-stdin`.
pub(crate) fn add_account(dir: &Path, user: &str, pw: &str, args: &[&str]) {
    let mut c = Command::new(BIN)
        .args(["user", "add", user])
        .args(args)
        .args(["--password-stdin", "--data-dir"])
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(pw.as_bytes()).unwrap();
    let out = c.wait_with_output().unwrap();
    // Exit 3: an account with administrative rights, held for a second person, who approves it.
    if out.status.code() == Some(3) {
        assert_eq!(crate::support::approve_pending(dir), 1);
        return;
    }
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

fn client(deps: &Path, base: &str, args: &[&str]) {
    let mut all = vec![base];
    all.extend_from_slice(args);
    crate::support::python_ok(deps, "login_client.py", &all);
}

#[test]
fn an_outside_client_signs_in_with_two_factors_through_the_pages() {
    let deps = python_deps();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    let _db = crate::support::store_for(&dir);
    assert!(cli(&["init", "--data-dir", dir.to_str().unwrap()]).status.success());
    add_user(&dir, "sato", "k7#Vq2!mZp-w9");
    add_user(&dir, "ito", "Qp4$wL8!nRx-2");
    let out = cli(&["user", "enroll-totp", "sato", "--data-dir", dir.to_str().unwrap()]);
    let uri = String::from_utf8(out.stdout).unwrap();
    let secret = uri.split("secret=").nth(1).unwrap().split('&').next().unwrap().to_string();
    let server = start(&dir, &[]);
    let base = format!("http://{}", server.addr);

    client(&deps, &base, &["sato", "k7#Vq2!mZp-w9", "Zq9!tRe4#vWx", &secret]);
    client(&deps, &base, &["ito", "Qp4$wL8!nRx-2", "Hb7&uYw3!kQz"]);
    drop(server);

    let out = cli(&["audit", "export", "--format", "csv", "--data-dir", dir.to_str().unwrap()]);
    let csv = String::from_utf8(out.stdout).unwrap();
    for needle in [
        ",login,denied,",
        ",login,success,",
        ",enrol,success,",
        ",logout,success,",
        "session lasted",
        ",alert-session,denied,",
    ] {
        assert!(csv.contains(needle), "audit lacks {needle}:\n{csv}");
    }
    assert!(!csv.contains("k7#Vq2!mZp-w9") && !csv.contains(&secret), "no secrets in the trail");
    let out = cli(&["user", "coverage", "--data-dir", dir.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("100.0%"), "self-enrolment counts");
}

/// Debian's Chromium and ChromeDriver, installed once if missing (the project installs what its
/// tests need).
pub(crate) fn chromium() {
    if std::path::Path::new("/usr/bin/chromium").exists() && std::path::Path::new("/usr/bin/chromedriver").exists() {
        return;
    }
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "chromium", "chromium-driver"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .output()
            .expect("apt-get is needed to install Chromium for the passkey test")
    };
    if !install().status.success() {
        let _ = Command::new("apt-get").args(["update", "-qq"]).output();
        let out = install();
        assert!(out.status.success(), "installing chromium failed: {}", String::from_utf8_lossy(&out.stderr));
    }
}

/// Passkeys in a real browser: Chromium's virtual authenticator registers a passkey at
/// enrolment and signs in with it; a browser without it cannot pass the second step.
#[test]
fn a_real_browser_enrols_and_signs_in_with_a_passkey() {
    chromium();
    let deps = crate::support::pip_target("seleniumdeps", &["selenium==4.27.1"], &["selenium"]);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    let _db = crate::support::store_for(&dir);
    assert!(cli(&["init", "--data-dir", dir.to_str().unwrap()]).status.success());
    add_user(&dir, "kimura", "k7#Vq2!mZp-w9");
    // WebAuthn needs a domain name: serve on a fixed free port with public URL http://localhost.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let base = format!("http://localhost:{port}");
    let server = start(&dir, &["--listen", &format!("127.0.0.1:{port}"), "--public-url", &base]);
    let _ = &server;
    crate::support::python_ok(&deps, "passkey_browser.py", &[&base, "kimura", "k7#Vq2!mZp-w9", "Zq9!tRe4#vWx-7Lp"]);
    // The audit trail has the enrolment and a login by password + passkey.
    let out = cli(&["audit", "export", "--format", "ndjson", "--data-dir", dir.to_str().unwrap()]);
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(log.contains("passkey `診察室PC` registered"), "{log}");
    assert!(log.contains("two-factor: password + passkey (診察室PC)"), "{log}");
    let out = cli(&["user", "coverage", "--data-dir", dir.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success() && text.contains("パスキー／セキュリティキー (WebAuthn): 1"), "{text}");
}
