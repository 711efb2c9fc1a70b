//! R2–R4: immutable versions with hashes and server-written Provenance, proxy entry (代行入力)
//! and approval (確定), time that never goes backwards, fsck, retention-guarded purge.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use axum::http::StatusCode;
use mamori_records::{
    Clock, Records, RequestContext, ResourceId, ResourceType, RetentionPolicy, Timestamp, content_hash, parse_resource,
};
use serde_json::{Value, json};

use crate::support::Harness;

fn obs() -> Value {
    json!({"resourceType": "Observation", "status": "preliminary", "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
           "subject": {"reference": "Patient/p1"}, "valueQuantity": {"value": 72, "unit": "/min"}})
}

/// Every server-written Provenance, newest first.
async fn provenances(h: &Harness) -> Vec<Value> {
    let b = h.call("GET", "/fhir/Provenance/_history?_count=1000", None).await.json();
    b["entry"].as_array().unwrap().iter().map(|e| e["resource"].clone()).collect()
}

fn for_target<'a>(ps: &'a [Value], target: &str) -> &'a Value {
    ps.iter().find(|p| p["target"][0]["reference"] == target).unwrap_or_else(|| panic!("no Provenance for {target}"))
}

fn agent(p: &Value, code: &str) -> Option<Value> {
    p["agent"].as_array().unwrap().iter().find(|a| a["type"]["coding"][0]["code"] == code).map(|a| a["who"].clone())
}

#[tokio::test]
async fn each_version_has_a_hash_and_a_provenance() {
    let h = Harness::new();
    let created = h.create(&obs()).await;
    let id = created["id"].as_str().unwrap();
    let mut upd = created.clone();
    upd["status"] = json!("final");
    let r = h.call("PUT", &format!("/fhir/Observation/{id}"), Some(&upd)).await;
    assert_eq!(r.status, StatusCode::OK);

    let ps = provenances(&h).await;
    assert_eq!(ps.len(), 2);
    for v in [1, 2] {
        let target = format!("Observation/{id}/_history/{v}");
        let p = for_target(&ps, &target);
        let stored = h.call("GET", &format!("/fhir/{target}"), None).await.json();
        let hash = mamori_records::content_hash(&stored);
        assert_eq!(
            p["target"][0]["extension"][0]["valueString"],
            hex(&hash),
            "Provenance carries the version's SHA-256"
        );
        assert_eq!(p["recorded"], stored["meta"]["lastUpdated"], "recorded from the server clock");
        assert_eq!(agent(p, "enterer").unwrap()["identifier"]["value"], "test-app", "入力者 is the client");
        assert!(agent(p, "attester").is_some(), "a direct entry is final: 確定者 present");
    }
    let p2 = for_target(&ps, &format!("Observation/{id}/_history/2"));
    assert_eq!(p2["entity"][0]["role"], "revision");
    assert_eq!(
        p2["entity"][0]["what"]["reference"],
        format!("Observation/{id}/_history/1"),
        "a correction links to what it corrects"
    );
    assert_eq!(p2["activity"]["coding"][0]["code"], "UPDATE");

    // The server's own Provenance cannot be changed or deleted through the API.
    let pid = p2["id"].as_str().unwrap();
    let mut forged = p2.clone();
    forged["recorded"] = json!("2000-01-01T00:00:00Z");
    let r = h.call("PUT", &format!("/fhir/Provenance/{pid}"), Some(&forged)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(h.call("DELETE", &format!("/fhir/Provenance/{pid}"), None).await.status, StatusCode::FORBIDDEN);
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[tokio::test]
async fn proxy_entry_stays_pending_until_the_author_approves() {
    let h = Harness::new();
    // A nurse enters on the doctor's behalf (代行入力); all three care for Patient/p1.
    let clerk = h.user_token("ns-kato", &["nurse"], "Practitioner/ns-kato");
    let doctor = h.user_token("dr-sato", &["doctor"], "Practitioner/dr-sato");
    let other = h.user_token("dr-ito", &["doctor"], "Practitioner/dr-ito");
    h.create(&json!({"resourceType": "CareTeam", "status": "active", "subject": {"reference": "Patient/p1"},
        "participant": [{"member": {"reference": "Practitioner/ns-kato"}}, {"member": {"reference": "Practitioner/dr-sato"}},
                        {"member": {"reference": "Practitioner/dr-ito"}}]}))
        .await;
    let as_user = |token: &str| vec![("authorization".to_string(), format!("Bearer {token}"))];
    let xprov = json!({"resourceType": "Provenance", "agent": [{"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type", "code": "author"}]}, "who": {"reference": "Practitioner/dr-sato"}}]}).to_string();

    let mut hdrs = as_user(&clerk);
    hdrs.push(("x-provenance".into(), xprov.clone()));
    let r = call_as(&h, "POST", "/fhir/Observation", Some(&obs()), &hdrs).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", String::from_utf8_lossy(&r.body));
    let v1 = r.json();
    let id = v1["id"].as_str().unwrap().to_string();
    assert_eq!(v1["meta"]["tag"][0]["code"], "pending-approval");
    let ps = provenances(&h).await;
    let p1 = for_target(&ps, &format!("Observation/{id}/_history/1"));
    assert_eq!(agent(p1, "enterer").unwrap()["reference"], "Practitioner/ns-kato");
    assert_eq!(agent(p1, "author").unwrap()["reference"], "Practitioner/dr-sato");
    assert!(agent(p1, "attester").is_none(), "no 確定者 while pending");

    // The clerk corrects it: still pending for the same author.
    let mut fix = v1.clone();
    fix["valueQuantity"]["value"] = json!(74);
    let r = call_as(&h, "PUT", &format!("/fhir/Observation/{id}"), Some(&fix), &as_user(&clerk)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["meta"]["tag"][0]["code"], "pending-approval");

    // Neither the clerk nor another doctor can approve.
    for t in [&clerk, &other] {
        let r = call_as(&h, "POST", &format!("/fhir/Observation/{id}/$approve"), None, &as_user(t)).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
    }
    let r = call_as(&h, "POST", &format!("/fhir/Observation/{id}/$approve"), None, &as_user(&doctor)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", String::from_utf8_lossy(&r.body));
    let v3 = r.json();
    assert_eq!(v3["meta"]["versionId"], "3");
    assert!(v3["meta"].get("tag").is_none(), "final: the pending tag is gone");
    assert_eq!(v3["valueQuantity"]["value"], 74);
    let ps = provenances(&h).await;
    let p3 = for_target(&ps, &format!("Observation/{id}/_history/3"));
    assert_eq!(agent(p3, "attester").unwrap()["reference"], "Practitioner/dr-sato", "確定者 is the approving author");
    assert_eq!(p3["activity"]["coding"][0]["display"], "approve (確定)");
    // Versions 1 and 2 stay as they were: pending.
    let old = h.call("GET", &format!("/fhir/Observation/{id}/_history/1"), None).await.json();
    assert_eq!(old["meta"]["tag"][0]["code"], "pending-approval");
    let r = call_as(&h, "POST", &format!("/fhir/Observation/{id}/$approve"), None, &as_user(&doctor)).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "approving twice is refused");

    // A client cannot forge the status tag.
    let mut forged = obs();
    forged["meta"] =
        json!({"tag": [{"system": "urn:mamori:entry-status", "code": "pending-approval"}], "versionId": "99"});
    let r = h.create(&forged).await;
    assert!(r["meta"].get("tag").is_none());
    assert_eq!(r["meta"]["versionId"], "1");

    let mut bad = as_user(&clerk);
    bad.push(("x-provenance".into(), "{not json".into()));
    let r = call_as(&h, "POST", "/fhir/Observation", Some(&obs()), &bad).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

async fn call_as(
    h: &Harness,
    method: &str,
    uri: &str,
    body: Option<&Value>,
    headers: &[(String, String)],
) -> crate::support::Resp {
    let mut b = axum::http::Request::builder().method(method).uri(uri);
    if body.is_some() {
        b = b.header("content-type", "application/fhir+json");
    }
    for (k, v) in headers {
        b = b.header(k.as_str(), v.as_str());
    }
    h.send(b.body(body.map(|v| axum::body::Body::from(v.to_string())).unwrap_or_default()).unwrap()).await
}

/// A clock that someone has set back by an hour after the first write.
struct SteppingBack(AtomicI64);

impl Clock for SteppingBack {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.fetch_sub(3_600_000_000, Ordering::SeqCst))
    }
}

#[tokio::test]
async fn stored_time_never_goes_backwards() {
    let h = Harness::new();
    let records = Records::new(
        h.node.store.clone(),
        h.node.store.clone(),
        Arc::new(SteppingBack(AtomicI64::new(1_900_000_000_000_000))),
        RetentionPolicy::default(),
    );
    let rt = ResourceType::parse("Observation").unwrap();
    let ctx = RequestContext::operator("test");
    let mut last = Timestamp(0);
    for _ in 0..5 {
        let out = records.create(&ctx, &rt, parse_resource(obs().to_string().as_bytes()).unwrap(), None, None).unwrap();
        assert!(out.record.last_updated > last, "time went backwards");
        last = out.record.last_updated;
    }
}

#[tokio::test]
async fn versions_are_immutable_and_fsck_finds_tampering() {
    let h = Harness::new();
    let created = h.create(&obs()).await;
    let id = created["id"].as_str().unwrap();
    let report = h.node.records.fsck().unwrap();
    assert_eq!(report.checked, 2);
    assert!(report.mismatches.is_empty());

    let db = crate::support::RawDb::at(h.dir.path());
    let err = db.exec_both(&format!("UPDATE versions SET body = '{{}}' WHERE id = '{id}'")).unwrap_err();
    assert!(err.contains("immutable"), "{err}");
    let err = db.exec_both(&format!("DELETE FROM versions WHERE id = '{id}'")).unwrap_err();
    assert!(err.contains("purge"), "{err}");
    let err = db.exec("SELECT 'no TRUNCATE in SQLite: the DELETE guard covers it' || 'immutable'", "TRUNCATE versions");
    if db.is_pg() {
        assert!(err.unwrap_err().contains("immutable"));
    }

    // Someone with raw database access drops the guard and edits a value.
    let tampered = created.to_string().replace("72", "27").replace('\'', "''");
    db.exec(
        &format!("DROP TRIGGER versions_no_update; UPDATE versions SET body = '{tampered}' WHERE id = '{id}'"),
        &format!(
            "DROP TRIGGER versions_no_update ON versions; UPDATE versions SET body = '{tampered}' WHERE id = '{id}'"
        ),
    )
    .unwrap();
    let report = h.node.records.fsck().unwrap();
    assert_eq!(report.mismatches, vec![format!("Observation/{id}/_history/1")]);
    assert_eq!(content_hash(&created), content_hash(&serde_json::from_str::<Value>(&created.to_string()).unwrap()));
}

#[tokio::test]
async fn nothing_inside_retention_can_be_purged() {
    let h = Harness::new();
    let created = h.create(&obs()).await;
    let id = ResourceId::parse(created["id"].as_str().unwrap()).unwrap();
    let rt = ResourceType::parse("Observation").unwrap();
    let err = h.node.records.purge(&op(), &rt, &id).unwrap_err();
    assert!(err.to_string().contains("delete it before"), "{err}");
    h.call("DELETE", &format!("/fhir/Observation/{id}"), None).await;
    let err = h.node.records.purge(&op(), &rt, &id).unwrap_err();
    assert!(err.to_string().contains("retention period"), "{err}");
    assert_eq!(h.call("GET", &format!("/fhir/Observation/{id}/_history/1"), None).await.status, StatusCode::OK);

    // With a zero-year retention for the type, the deleted record can go.
    let h0 = Harness::with_config(Some("[retention]\ndefault_years = 5\n[retention.types]\nObservation = 0\n"));
    let created = h0.create(&obs()).await;
    let id = ResourceId::parse(created["id"].as_str().unwrap()).unwrap();
    h0.call("DELETE", &format!("/fhir/Observation/{id}"), None).await;
    assert_eq!(h0.node.records.purge(&op(), &rt, &id).unwrap(), 2);
    assert_eq!(h0.call("GET", &format!("/fhir/Observation/{id}/_history/1"), None).await.status, StatusCode::NOT_FOUND);
    // The Provenance of the purged versions remains as evidence.
    assert_eq!(provenances(&h0).await.len(), 2);
}

fn op() -> RequestContext {
    RequestContext::operator("test")
}
