//! Outside FHIR clients, installed from their registries and run unchanged against the real
//! `mamori` executable (#28): fhirpy (Python) and fhir-kit-client (Node).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::binary::{start, token};

/// `packages` installed with npm once into `CARGO_TARGET_TMPDIR/name`.
pub(crate) fn npm_prefix(name: &str, packages: &[&str], present: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    if dir.join("node_modules").join(present).exists() {
        return dir;
    }
    std::fs::create_dir_all(&dir).unwrap();
    let out = Command::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--silent", "--prefix"])
        .arg(&dir)
        .args(packages)
        .output()
        .expect("npm is needed for the outside-client tests");
    assert!(out.status.success(), "npm install failed: {}", String::from_utf8_lossy(&out.stderr));
    dir
}

#[test]
fn fhirpy_counts_pages_and_creates_conditionally() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("d");
    let _db = crate::support::store_for(&d);
    let s = start(&d, &[]);
    let tok = token(s.addr, &d, "fhirpy");
    let deps = crate::support::pip_target("fhirpydeps", &["fhirpy==2.3.1"], &["fhirpy"]);
    crate::support::python_ok(&deps, "fhirpy_client.py", &[&format!("http://{}", s.addr), &tok]);
}

#[test]
fn fhir_kit_client_posts_transactions_to_the_base_with_its_slash() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("d");
    let _db = crate::support::store_for(&d);
    let s = start(&d, &[]);
    let tok = token(s.addr, &d, "fhir-kit");
    let prefix = npm_prefix("fhirkit", &["fhir-kit-client@2.0.3"], "fhir-kit-client");
    // An ES module resolves packages from its own directory: run a copy beside node_modules.
    let script = prefix.join("fhir_kit_client.mjs");
    std::fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/fhir_kit_client.mjs"), &script).unwrap();
    let out = Command::new("node").arg(&script).arg(format!("http://{}", s.addr)).arg(&tok).output().unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok",
        "fhir-kit-client failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
