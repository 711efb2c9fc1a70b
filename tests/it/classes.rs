//! Issue #5 (Z1, part): every stored resource carries its information classes (情報区分) in
//! `meta.security`, from rules that are versioned configuration.

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::support::Harness;

const SYSTEM: &str = "urn:mamori:information-class";

fn classes(v: &Value) -> Vec<String> {
    let mut c: Vec<String> = v["meta"]["security"]
        .as_array()
        .map(|a| a.iter().filter(|c| c["system"] == SYSTEM).map(|c| c["code"].as_str().unwrap().to_string()).collect())
        .unwrap_or_default();
    c.sort();
    c
}

#[tokio::test]
async fn resources_are_labelled_on_write() {
    let h = Harness::new();
    let p = h.create(&json!({"resourceType": "Patient"})).await;
    assert_eq!(classes(&p), vec!["administrative"]);
    let pid = p["id"].as_str().unwrap();
    let hiv = json!({"resourceType": "Observation", "status": "final", "subject": {"reference": format!("Patient/{pid}")},
        "code": {"coding": [{"system": "http://loinc.org", "code": "7917-8", "display": "HIV 1 Ab"}]}});
    let o = h.create(&hiv).await;
    assert_eq!(classes(&o), vec!["general", "hiv"]);
    let label = &o["meta"]["security"].as_array().unwrap().iter().find(|c| c["code"] == "hiv").unwrap()["display"];
    assert_eq!(label, "HIV/性感染症");

    // Explicit labels are kept, other systems' labels untouched; unknown classes are refused.
    let tagged = json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
        "meta": {"security": [{"system": SYSTEM, "code": "genetic"}, {"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}]}});
    let t = h.create(&tagged).await;
    assert_eq!(classes(&t), vec!["general", "genetic"]);
    assert!(t["meta"]["security"].as_array().unwrap().iter().any(|c| c["code"] == "R"));
    let bad = json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "meta": {"security": [{"system": SYSTEM, "code": "top-secret"}]}});
    let r = h.call("POST", "/fhir/Observation", Some(&bad)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.diagnostics().contains("not an information class"));

    // A label cannot be dropped by an update: rules apply again.
    let mut stripped = o.clone();
    stripped.as_object_mut().unwrap().remove("meta");
    let r = h.call("PUT", &format!("/fhir/Observation/{}", o["id"].as_str().unwrap()), Some(&stripped)).await;
    assert_eq!(classes(&r.json()), vec!["general", "hiv"]);

    // The server's Provenance carries its target's classes.
    let b = h.call("GET", "/fhir/Provenance/_history?_count=100", None).await.json();
    let prov = b["entry"].as_array().unwrap().iter().map(|e| &e["resource"]).find(|p| {
        p["target"][0]["reference"]
            .as_str()
            .unwrap()
            .starts_with(&format!("Observation/{}/", o["id"].as_str().unwrap()))
    });
    assert_eq!(classes(prov.unwrap()), vec!["general", "hiv"]);
}

#[test]
fn rules_are_versioned_configuration() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("d");
    let _db = crate::support::store_for(&d);
    let d = d.to_str().unwrap();
    let out = crate::binary::cli(&["classes", "show", "--data-dir", d]);
    assert!(out.status.success());
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["classes"].as_array().unwrap().len(), 9);
    let mut rules = shown["rules"].clone();
    rules["by_type"]["Observation"] = json!(["general", "reproductive"]);
    let f = tmp.path().join("rules.json");
    std::fs::write(&f, rules.to_string()).unwrap();
    let out = crate::binary::cli(&[
        "classes",
        "set",
        "--file",
        f.to_str().unwrap(),
        "--reason",
        "review 2026",
        "--data-dir",
        d,
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let shown: Value =
        serde_json::from_slice(&crate::binary::cli(&["classes", "show", "--data-dir", d]).stdout).unwrap();
    assert_eq!(shown["rules"]["by_type"]["Observation"], json!(["general", "reproductive"]));
    rules["default"] = json!(["nonsense"]);
    std::fs::write(&f, rules.to_string()).unwrap();
    let out = crate::binary::cli(&["classes", "set", "--file", f.to_str().unwrap(), "--reason", "x", "--data-dir", d]);
    assert_eq!(out.status.code(), Some(2), "unknown classes are refused");
    let out = crate::binary::cli(&["audit", "export", "--format", "csv", "--data-dir", d]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("config/class-rules/active/v1"));
}
