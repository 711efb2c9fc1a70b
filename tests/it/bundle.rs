//! batch and transaction Bundles (#3): urn:uuid resolution, conditional entries and references,
//! the prescribed processing order, all-or-nothing, per-entry authorization and bad input.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};

use crate::support::{Harness, Resp};

async fn post_bundle(h: &Harness, b: &Value) -> Resp {
    h.call("POST", "/fhir", Some(b)).await
}

async fn post_bundle_as(h: &Harness, token: &str, b: &Value) -> Resp {
    let req = Request::builder()
        .method("POST")
        .uri("/fhir")
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/fhir+json")
        .body(Body::from(b.to_string()))
        .unwrap();
    h.send(req).await
}

async fn count(h: &Harness, query: &str) -> u64 {
    let r = h.call("GET", &format!("{query}&_summary=count"), None).await;
    assert_eq!(r.status, StatusCode::OK, "{query}: {}", r.diagnostics());
    r.json()["total"].as_u64().unwrap()
}

fn status(b: &Value, i: usize) -> &str {
    b["entry"][i]["response"]["status"].as_str().unwrap_or("")
}

#[tokio::test]
async fn a_transaction_resolves_placeholders_and_conditions_in_the_prescribed_order() {
    let h = Harness::new();
    let existing = h
        .create(&json!({"resourceType": "Patient", "identifier": [{"system": "urn:mrn", "value": "A1"}], "name": [{"family": "既存"}]}))
        .await;
    let gone =
        h.create(&json!({"resourceType": "Patient", "identifier": [{"system": "urn:mrn", "value": "D1"}]})).await;
    let patch = json!([{"op": "add", "path": "/gender", "value": "female"}]);
    use base64::Engine as _;
    let patch_b64 = base64::engine::general_purpose::STANDARD.encode(patch.to_string());
    let b = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        // 0: an Observation about a patient created in the same transaction (listed first).
        {"fullUrl": "urn:uuid:8f7a1c2e-0000-4000-8000-000000000002",
         "resource": {"resourceType": "Observation", "status": "final", "code": {"text": "体温"},
            "subject": {"reference": "urn:uuid:8f7a1c2e-0000-4000-8000-000000000001"},
            "performer": [{"reference": "Patient?identifier=urn:mrn|A1"}]},
         "request": {"method": "POST", "url": "Observation"}},
        // 1: the new patient.
        {"fullUrl": "urn:uuid:8f7a1c2e-0000-4000-8000-000000000001",
         "resource": {"resourceType": "Patient", "name": [{"family": "新規", "given": ["花子"]}],
            "identifier": [{"system": "urn:mrn", "value": "N1"}]},
         "request": {"method": "POST", "url": "Patient"}},
        // 2: a conditional create that matches: nothing is written.
        {"resource": {"resourceType": "Patient", "identifier": [{"system": "urn:mrn", "value": "A1"}]},
         "request": {"method": "POST", "url": "Patient", "ifNoneExist": "identifier=urn:mrn|A1"}},
        // 3: a conditional create of what entry 4 deletes: DELETE runs first, so it creates.
        {"resource": {"resourceType": "Patient", "identifier": [{"system": "urn:mrn", "value": "D1"}]},
         "request": {"method": "POST", "url": "Patient", "ifNoneExist": "identifier=urn:mrn|D1"}},
        // 4
        {"request": {"method": "DELETE", "url": format!("Patient/{}", gone["id"].as_str().unwrap())}},
        // 5: update-as-create with a client id.
        {"fullUrl": "http://mamori.test/fhir/Practitioner/dr-tx",
         "resource": {"resourceType": "Practitioner", "id": "dr-tx", "name": [{"family": "医師"}]},
         "request": {"method": "PUT", "url": "Practitioner/dr-tx"}},
        // 6: a JSON Patch of the existing patient.
        {"resource": {"resourceType": "Binary", "contentType": "application/json-patch+json", "data": patch_b64},
         "request": {"method": "PATCH", "url": format!("Patient/{}", existing["id"].as_str().unwrap()), "ifMatch": "W/\"1\""}},
        // 7: a search, run after the writes.
        {"request": {"method": "GET", "url": "Patient?identifier=urn:mrn|N1"}},
        // 8: a read.
        {"request": {"method": "GET", "url": "Practitioner/dr-tx"}},
    ]});
    let r = post_bundle(&h, &b).await;
    assert_eq!(r.status, StatusCode::OK, "{}", String::from_utf8_lossy(&r.body));
    let out = r.json();
    assert_eq!(out["type"], "transaction-response");
    let want = [
        "201 Created",
        "201 Created",
        "200 OK",
        "201 Created",
        "204 No Content",
        "201 Created",
        "200 OK",
        "200 OK",
        "200 OK",
    ];
    for (i, w) in want.iter().enumerate() {
        assert_eq!(status(&out, i), *w, "entry {i}: {}", out["entry"][i]);
    }
    let new_patient = out["entry"][1]["resource"]["id"].as_str().unwrap().to_string();
    let obs = &out["entry"][0]["resource"];
    assert_eq!(obs["subject"]["reference"], format!("Patient/{new_patient}"), "urn:uuid resolved");
    assert_eq!(obs["performer"][0]["reference"], format!("Patient/{}", existing["id"].as_str().unwrap()));
    assert_eq!(out["entry"][2]["resource"]["id"], existing["id"], "the match is returned, not a copy");
    assert!(out["entry"][0]["response"]["location"].as_str().unwrap().starts_with("Observation/"));
    assert_eq!(out["entry"][0]["response"]["etag"], "W/\"1\"");
    assert_eq!(out["entry"][6]["resource"]["gender"], "female");
    assert_eq!(out["entry"][7]["resource"]["type"], "searchset");
    assert_eq!(out["entry"][7]["resource"]["entry"][0]["resource"]["id"], new_patient.as_str(), "GET sees the writes");
    assert_eq!(out["entry"][8]["resource"]["id"], "dr-tx");
    // The stored Observation points at the stored patient.
    let stored = h.call("GET", &format!("/fhir/Observation?subject=Patient/{new_patient}"), None).await.json();
    assert_eq!(stored["entry"].as_array().unwrap().len(), 1);
    assert_eq!(count(&h, "/fhir/Patient?identifier=urn:mrn|A1").await, 1);
    assert_eq!(count(&h, "/fhir/Patient?identifier=urn:mrn|D1").await, 1, "deleted, then created anew");
    // Each write got its server-written Provenance.
    let prov = h.call("GET", &format!("/fhir/Provenance?target=Patient/{new_patient}"), None).await.json();
    assert_eq!(prov["entry"].as_array().unwrap().len(), 1, "{prov}");
}

#[tokio::test]
async fn a_failed_transaction_writes_nothing() {
    let h = Harness::new();
    let p = h.create(&json!({"resourceType": "Patient", "name": [{"family": "元"}]})).await;
    let pid = p["id"].as_str().unwrap().to_string();
    let q = h.create(&json!({"resourceType": "Patient", "name": [{"family": "消"}]})).await;
    let qid = q["id"].as_str().unwrap().to_string();
    let before_obs = count(&h, "/fhir/Observation?_id:missing=false").await;
    let tx = |last: Value| {
        json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"}},
             "request": {"method": "POST", "url": "Observation"}},
            {"request": {"method": "DELETE", "url": format!("Patient/{qid}")}},
            last,
        ]})
    };
    let cases = [
        // A stale If-Match: 412.
        (
            json!({"resource": {"resourceType": "Patient", "id": pid, "name": [{"family": "新"}]},
                   "request": {"method": "PUT", "url": format!("Patient/{pid}"), "ifMatch": "W/\"7\""}}),
            StatusCode::PRECONDITION_FAILED,
        ),
        // A reference to no entry's fullUrl: 400.
        (
            json!({"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "y"},
                   "subject": {"reference": "urn:uuid:00000000-0000-4000-8000-00000000dead"}},
                   "request": {"method": "POST", "url": "Observation"}}),
            StatusCode::BAD_REQUEST,
        ),
        // Invalid content: 400.
        (
            json!({"resource": {"resourceType": "Observation", "status": 12}, "request": {"method": "POST", "url": "Observation"}}),
            StatusCode::BAD_REQUEST,
        ),
        // A read of nothing: 404.
        (json!({"request": {"method": "GET", "url": "Patient/nobody"}}), StatusCode::NOT_FOUND),
        // The same resource changed twice.
        (json!({"request": {"method": "DELETE", "url": format!("Patient/{qid}")}}), StatusCode::BAD_REQUEST),
        // A conditional reference that matches nothing.
        (
            json!({"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "z"},
                   "subject": {"reference": "Patient?identifier=urn:none|0"}},
                   "request": {"method": "POST", "url": "Observation"}}),
            StatusCode::BAD_REQUEST,
        ),
        // The audit trail is not written through Bundles.
        (
            json!({"resource": {"resourceType": "AuditEvent",
                "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest"},
                "recorded": "2026-12-03T10:00:00Z", "agent": [{"requestor": true}],
                "source": {"observer": {"display": "forged"}}},
                "request": {"method": "POST", "url": "AuditEvent"}}),
            StatusCode::METHOD_NOT_ALLOWED,
        ),
    ];
    for (last, want) in cases {
        let r = post_bundle(&h, &tx(last.clone())).await;
        assert_eq!(r.status, want, "{last}: {}", String::from_utf8_lossy(&r.body));
        let o = r.json();
        assert_eq!(o["resourceType"], "OperationOutcome");
        assert!(o.to_string().contains("Bundle.entry["), "the failing entry is named: {o}");
        assert_eq!(h.call("GET", &format!("/fhir/Patient/{qid}"), None).await.status, StatusCode::OK, "{last}");
        assert_eq!(h.call("GET", &format!("/fhir/Patient/{pid}"), None).await.json()["meta"]["versionId"], "1");
        assert_eq!(count(&h, "/fhir/Observation?_id:missing=false").await, before_obs, "{last}");
    }
}

#[tokio::test]
async fn a_batch_runs_each_entry_on_its_own() {
    let h = Harness::new();
    let b = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": {"resourceType": "Patient", "name": [{"family": "一"}]}, "request": {"method": "POST", "url": "Patient"}},
        {"request": {"method": "GET", "url": "Patient/missing"}},
        {"resource": {"resourceType": "Patient", "birthDate": "not a date"}, "request": {"method": "POST", "url": "Patient"}},
        {"request": {"method": "GET", "url": "Patient?name=一"}},
        {"request": {"method": "TRACE", "url": "Patient"}},
    ]});
    let r = post_bundle(&h, &b).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.diagnostics());
    let out = r.json();
    assert_eq!(out["type"], "batch-response");
    assert_eq!(status(&out, 0), "201 Created");
    assert_eq!(status(&out, 1), "404 Not Found");
    assert_eq!(out["entry"][1]["response"]["outcome"]["resourceType"], "OperationOutcome");
    assert_eq!(status(&out, 2), "400 Bad Request");
    assert!(out["entry"][2]["response"]["outcome"].to_string().contains("Bundle.entry[2].resource.birthDate"));
    assert_eq!(status(&out, 3), "200 OK");
    assert_eq!(out["entry"][3]["resource"]["entry"].as_array().unwrap().len(), 1, "sees entry 0");
    assert_eq!(status(&out, 4), "400 Bad Request");
    assert_eq!(count(&h, "/fhir/Patient?name=一").await, 1);
}

#[tokio::test]
async fn every_entry_passes_the_enforcement_point() {
    let h = Harness::new();
    let token = h.token_for("patients-only", "system/Patient.cruds");
    let tx = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Patient", "name": [{"family": "許可"}]}, "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"}},
         "request": {"method": "POST", "url": "Observation"}},
    ]});
    let r = post_bundle_as(&h, &token, &tx).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.diagnostics());
    assert!(r.diagnostics().contains("Observation"));
    assert_eq!(count(&h, "/fhir/Patient?name=許可").await, 0, "refused whole");
    let mut batch = tx.clone();
    batch["type"] = json!("batch");
    let out = post_bundle_as(&h, &token, &batch).await.json();
    assert_eq!(status(&out, 0), "201 Created");
    assert_eq!(status(&out, 1), "403 Forbidden");
    assert_eq!(count(&h, "/fhir/Patient?name=許可").await, 1);
    // A conditional entry also needs search.
    let create_only = h.token_for("create-only", "system/Patient.c");
    let cond = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient", "ifNoneExist": "identifier=a|b"}},
    ]});
    assert_eq!(post_bundle_as(&h, &create_only, &cond).await.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn bad_bundles_get_an_operation_outcome() {
    let h = Harness::new();
    let raw = |body: &'static str| {
        Request::builder()
            .method("POST")
            .uri("/fhir")
            .header("authorization", format!("Bearer {}", h.token))
            .header("content-type", "application/fhir+json")
            .body(Body::from(body))
            .unwrap()
    };
    for body in [
        "{",
        "[]",
        "{\"resourceType\": \"Patient\"}",
        "{\"resourceType\": \"Bundle\", \"type\": \"searchset\"}",
        "{\"resourceType\": \"Bundle\", \"type\": \"transaction\", \"entry\": [{\"request\": {\"method\": \"POST\"}}]}",
        "{\"resourceType\": \"Bundle\", \"type\": \"transaction\", \"entry\": [{\"request\": {\"method\": \"PATCH\", \"url\": \"Patient/x\"}, \"resource\": {\"resourceType\": \"Patient\"}}]}",
    ] {
        let r = h.send(raw(body)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.diagnostics());
        assert_eq!(r.json()["resourceType"], "OperationOutcome");
    }
    let empty = post_bundle(&h, &json!({"resourceType": "Bundle", "type": "transaction"})).await;
    assert_eq!(empty.status, StatusCode::OK);
    assert_eq!(empty.json()["type"], "transaction-response");
}

/// Hospital interfaces update patients by identifier on a system URI: an entry URL whose query
/// holds `://` is a conditional interaction on this server, not a URL elsewhere (#28). An entry
/// whose path is on another server is still refused, and nothing of its Bundle is stored.
#[tokio::test]
async fn conditional_entries_on_system_uris_work_and_other_servers_are_refused() {
    let h = Harness::new();
    let mrn = "http://hospital.example/mrn";
    let put = |family: &str| {
        json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": {"resourceType": "Patient", "identifier": [{"system": mrn, "value": "123"}],
                "name": [{"family": family}]},
             "request": {"method": "PUT", "url": format!("Patient?identifier={mrn}|123")}},
            {"request": {"method": "GET", "url": format!("Patient?identifier={mrn}%7C123")}}]})
    };
    let first = post_bundle(&h, &put("最初")).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.diagnostics());
    let b = first.json();
    assert!(status(&b, 0).starts_with("201"), "{b}");
    let second = post_bundle(&h, &put("更新")).await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.diagnostics());
    let b = second.json();
    assert!(status(&b, 0).starts_with("200"), "the same patient is updated: {b}");
    assert_eq!(b["entry"][1]["resource"]["total"].as_u64(), Some(1), "{b}");
    assert_eq!(count(&h, &format!("/fhir/Patient?identifier={}", crate::support::enc(&format!("{mrn}|123")))).await, 1);

    // A path on another server: refused, and the whole transaction with it.
    let elsewhere = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Patient", "identifier": [{"system": mrn, "value": "999"}]},
         "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "Patient", "id": "x1"},
         "request": {"method": "PUT", "url": "https://other.example/fhir/Patient/x1"}}]});
    let r = post_bundle(&h, &elsewhere).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.diagnostics());
    assert!(r.diagnostics().contains("not on this server"), "{}", r.diagnostics());
    assert_eq!(count(&h, &format!("/fhir/Patient?identifier={}", crate::support::enc(&format!("{mrn}|999")))).await, 0);
}

/// A base URL with a trailing slash is the base: `POST /fhir/` processes the Bundle as
/// `POST /fhir` does (fhir-kit-client's `transaction()`, #28), and `GET /fhir/metadata` stays
/// where it was.
#[tokio::test]
async fn the_base_with_a_trailing_slash_takes_bundles() {
    let h = Harness::new();
    let b = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Patient", "name": [{"family": "末尾"}]},
         "request": {"method": "POST", "url": "Patient"}}]});
    let r = h.call("POST", "/fhir/", Some(&b)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.diagnostics());
    assert_eq!(r.json()["type"], "transaction-response");
    // Still behind the enforcement point: no token, no Bundle.
    let req = Request::builder()
        .method("POST")
        .uri("/fhir/")
        .header("content-type", "application/fhir+json")
        .body(Body::from(b.to_string()))
        .unwrap();
    assert_eq!(h.send(req).await.status, StatusCode::UNAUTHORIZED);
}
