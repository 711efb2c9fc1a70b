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
    let mut c = Command::new(BIN)
        .args([
            "user",
            "add",
            user,
            "--role",
            "doctor",
            "--fhir-user",
            &format!("Practitioner/{user}"),
            "--password-stdin",
            "--data-dir",
        ])
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(pw.as_bytes()).unwrap();
    let out = c.wait_with_output().unwrap();
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
    for needle in [",login,denied,", ",login,success,", ",enrol,success,", ",logout,success,", "session lasted"] {
        assert!(csv.contains(needle), "audit lacks {needle}:\n{csv}");
    }
    assert!(!csv.contains("k7#Vq2!mZp-w9") && !csv.contains(&secret), "no secrets in the trail");
    let out = cli(&["user", "coverage", "--data-dir", dir.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("100.0%"), "self-enrolment counts");
}
