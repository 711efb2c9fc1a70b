//! Every resource example of the official R4 package `hl7.fhir.r4.examples` (CC0) round-trips:
//! PUT with its own id → read → the same JSON, apart from server-managed meta. The package is
//! fetched once with npm into Cargo's test temp directory.

use std::path::{Path, PathBuf};
use std::process::Command;

use axum::http::StatusCode;
use serde_json::Value;

use crate::support::Harness;

const PACKAGE: &str = "hl7.fhir.r4.examples@4.0.1";

/// The unpacked package directory, fetched with `npm pack` when missing. Tests that call this run
/// in parallel: one of them fetches (the others wait on the lock), and the package is unpacked into
/// a scratch directory renamed into place, so a half-unpacked package is never seen.
pub fn examples_dir() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(fetch_examples).clone()
}

fn fetch_examples() -> PathBuf {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("hl7.fhir.r4.examples-4.0.1");
    let package = root.join("package");
    if package.join("Patient-example.json").exists() {
        return package;
    }
    let scratch = root.join(format!("unpack-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).unwrap();
    let out = Command::new("npm")
        .args(["pack", PACKAGE, "--pack-destination"])
        .arg(&scratch)
        .output()
        .expect("npm is needed to fetch the official FHIR examples (apt-get install npm)");
    assert!(out.status.success(), "npm pack failed: {}", String::from_utf8_lossy(&out.stderr));
    let tgz = scratch.join("hl7.fhir.r4.examples-4.0.1.tgz");
    let out = Command::new("tar").arg("xzf").arg(&tgz).arg("-C").arg(&scratch).output().unwrap();
    assert!(out.status.success(), "tar failed: {}", String::from_utf8_lossy(&out.stderr));
    let _ = std::fs::remove_dir_all(&package);
    std::fs::rename(scratch.join("package"), &package).unwrap();
    let _ = std::fs::remove_dir_all(&scratch);
    package
}

/// Examples in the package that break R4 itself, with the issue code and location (if any) each
/// must be refused with (the HL7 validator reports the same errors for them). Every other example must
/// round-trip.
const KNOWN_INVALID: &[(&str, &str, &str)] = &[
    // The id has 65 characters (ids allow 64): refused as the URL's id, before the body.
    ("SearchParameter-questionnaireresponse-extensions-QuestionnaireResponse-item-subject.json", "value", ""),
    // SearchParameter.base is 1..* ; these extension search parameters have none.
    ("SearchParameter-codesystem-extensions-CodeSystem-author.json", "required", "SearchParameter.base"),
    ("SearchParameter-codesystem-extensions-CodeSystem-effective.json", "required", "SearchParameter.base"),
    ("SearchParameter-codesystem-extensions-CodeSystem-end.json", "required", "SearchParameter.base"),
    ("SearchParameter-codesystem-extensions-CodeSystem-keyword.json", "required", "SearchParameter.base"),
    ("SearchParameter-codesystem-extensions-CodeSystem-workflow.json", "required", "SearchParameter.base"),
    ("SearchParameter-valueset-extensions-ValueSet-author.json", "required", "SearchParameter.base"),
    ("SearchParameter-valueset-extensions-ValueSet-effective.json", "required", "SearchParameter.base"),
    ("SearchParameter-valueset-extensions-ValueSet-end.json", "required", "SearchParameter.base"),
    ("SearchParameter-valueset-extensions-ValueSet-keyword.json", "required", "SearchParameter.base"),
    ("SearchParameter-valueset-extensions-ValueSet-workflow.json", "required", "SearchParameter.base"),
    // Questionnaire.item.linkId is 1..1 ; nested items here have none.
    ("Questionnaire-qs1.json", "required", "Questionnaire.item[0].item[0].linkId"),
    // ImplementationGuide.name and .status are 1..1 ; these two have neither.
    ("ImplementationGuide-fhir.json", "required", "ImplementationGuide.name"),
    ("ig-r4.json", "required", "ImplementationGuide.status"),
];

/// Removes what the server manages in `meta`: version, time and its information-class labels.
fn strip_server_meta(v: &mut Value) {
    if let Some(meta) = v.get_mut("meta").and_then(Value::as_object_mut) {
        meta.remove("versionId");
        meta.remove("lastUpdated");
        if let Some(sec) = meta.get_mut("security").and_then(Value::as_array_mut) {
            sec.retain(|c| c.get("system").and_then(Value::as_str) != Some("urn:mamori:information-class"));
            if sec.is_empty() {
                meta.remove("security");
            }
        }
        if meta.is_empty() {
            v.as_object_mut().unwrap().remove("meta");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_official_r4_example_round_trips() {
    let dir = examples_dir();
    // Bundle-resources.json is 17 MiB, above the default body limit.
    let h = Harness::with_config(Some("[server]\nmax_body_bytes = 67108864\n"));
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    let mut tried = 0;
    let mut failures = Vec::new();
    for f in files {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        if !name.ends_with(".json") || name.starts_with('.') || name == "package.json" {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap();
        let Ok(original) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        let (Some(rt), Some(id)) = (original["resourceType"].as_str(), original["id"].as_str()) else {
            continue;
        };
        tried += 1;
        let r = h.call("PUT", &format!("/fhir/{rt}/{id}"), Some(&original)).await;
        if rt == "AuditEvent" {
            // The audit trail's FHIR view is read-only: AuditEvents are never written by clients.
            assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{name}");
            continue;
        }
        if let Some((_, code, at)) = KNOWN_INVALID.iter().find(|(n, ..)| *n == name) {
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{name} is invalid R4 and must be refused");
            let issues = r.json()["issue"].as_array().cloned().unwrap_or_default();
            assert!(
                issues.iter().any(|i| i["code"] == *code && (at.is_empty() || i["expression"][0] == *at)),
                "{name} must be refused with `{code}` at {at}: {issues:?}"
            );
            continue;
        }
        if !matches!(r.status, StatusCode::CREATED | StatusCode::OK) {
            failures.push(format!(
                "{name}: {} {}",
                r.status,
                String::from_utf8_lossy(&r.body).chars().take(300).collect::<String>()
            ));
            continue;
        }
        let mut back = h.call("GET", &format!("/fhir/{rt}/{id}"), None).await.json();
        let labelled = back["meta"]["security"]
            .as_array()
            .is_some_and(|s| s.iter().any(|c| c["system"] == "urn:mamori:information-class"));
        if !labelled {
            failures.push(format!("{name}: stored without an information class"));
        }
        strip_server_meta(&mut back);
        let mut want = original.clone();
        strip_server_meta(&mut want);
        if back != want {
            failures.push(format!("{name}: read-back differs"));
        }
    }
    assert!(tried > 2000, "only {tried} examples found");
    assert!(failures.is_empty(), "{} of {tried} examples failed:\n{}", failures.len(), failures.join("\n"));
}

/// The official R4 transaction Bundles as a hospital interface would send them.
#[tokio::test]
async fn the_official_transaction_bundles_are_processed() {
    let dir = examples_dir();
    for name in ["Bundle-hla-1.json", "Bundle-xds.json"] {
        let h = Harness::new();
        let bundle: Value = serde_json::from_str(&std::fs::read_to_string(dir.join(name)).unwrap()).unwrap();
        let n = bundle["entry"].as_array().unwrap().len();
        let r = h.call("POST", "/fhir", Some(&bundle)).await;
        assert_eq!(r.status, StatusCode::OK, "{name}: {}", r.diagnostics());
        let out = r.json();
        assert_eq!(out["type"], "transaction-response", "{name}");
        let entries = out["entry"].as_array().unwrap();
        assert_eq!(entries.len(), n, "{name}");
        for e in entries {
            let status = e["response"]["status"].as_str().unwrap();
            assert!(status.starts_with("201") || status.starts_with("200"), "{name}: {status}");
        }
        // Every urn:uuid reference was rewritten to the record it names.
        assert!(
            !String::from_utf8_lossy(&h.call("GET", "/fhir/_history?_count=500", None).await.body)
                .contains("urn:uuid:"),
            "{name}"
        );
    }
    // This one writes to another server's URLs (`PUT http://hl7.org/fhir/us/sdc/Questionnaire/…`):
    // refused as a whole, naming the entry, nothing stored.
    let h = Harness::new();
    let bundle: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("Bundle-ussg-fht.json")).unwrap()).unwrap();
    let r = h.call("POST", "/fhir", Some(&bundle)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.diagnostics().contains("is not on this server"), "{}", r.diagnostics());
    assert_eq!(h.call("GET", "/fhir/Questionnaire?_summary=count", None).await.json()["total"], 0);
    // The transaction example of the specification itself: every entry uses a feature of its own
    // (conditional create, update and delete with system URIs, If-Match, an operation, reads), some
    // on records that do not exist here. As one transaction it must fail as a whole — cleanly, in
    // an OperationOutcome, with nothing stored — and never on the `|` or `/` of its criteria.
    let h = Harness::new();
    let bundle: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("Bundle-bundle-transaction.json")).unwrap()).unwrap();
    let r = h.call("POST", "/fhir", Some(&bundle)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["resourceType"], "OperationOutcome");
    // The first entry refused is the operation (`ValueSet/$lookup`, not a Bundle interaction
    // here), not any of the conditional entries before it.
    assert!(r.diagnostics().contains("Bundle.entry[7]"), "{}", r.diagnostics());
    assert_eq!(h.call("GET", "/fhir/Patient?_summary=count", None).await.json()["total"], 0, "all or nothing");
}
