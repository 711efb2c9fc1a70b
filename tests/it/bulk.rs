//! Bulk Data (#3): `$export` at system, Patient and Group level as async jobs with status polling,
//! cancellation and download per the Bulk Data IG; `$import` of NDJSON; the guard and ownership
//! on everything a job reveals.

use std::collections::BTreeSet;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};

use crate::support::{Harness, Resp};

async fn get_as(h: &Harness, token: &str, uri: &str, headers: &[(&str, &str)]) -> Resp {
    let mut b = Request::builder().uri(uri).header("authorization", format!("Bearer {token}"));
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    h.send(b.body(Body::empty()).unwrap()).await
}

const ASYNC: &[(&str, &str)] = &[("prefer", "respond-async"), ("accept", "application/fhir+json")];

/// Kicks off an export and polls it to completion; returns the manifest.
pub(crate) async fn export(h: &Harness, token: &str, uri: &str) -> Value {
    let r = get_as(h, token, uri, ASYNC).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{uri}: {}", r.diagnostics());
    let status = r.header("content-location").unwrap();
    let path = status.strip_prefix("http://mamori.test").unwrap().to_string();
    for _ in 0..400 {
        let r = get_as(h, token, &path, &[]).await;
        match r.status {
            StatusCode::ACCEPTED => {
                assert!(r.header("x-progress").is_some());
                tokio::time::sleep(std::time::Duration::from_millis(25)).await;
            }
            StatusCode::OK => {
                assert!(r.header("expires").is_some());
                return r.json();
            }
            s => panic!("{path}: {s} {}", r.diagnostics()),
        }
    }
    panic!("{uri} did not complete");
}

/// Downloads every output file: type → resources.
async fn files(h: &Harness, token: &str, manifest: &Value) -> Vec<(String, Vec<Value>)> {
    let mut out = Vec::new();
    for o in manifest["output"].as_array().unwrap() {
        let path = o["url"].as_str().unwrap().strip_prefix("http://mamori.test").unwrap().to_string();
        let r = get_as(h, token, &path, &[]).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert_eq!(r.header("content-type").as_deref(), Some("application/fhir+ndjson"));
        let lines: Vec<Value> =
            String::from_utf8(r.body).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len() as u64, o["count"].as_u64().unwrap());
        assert!(lines.iter().all(|l| l["resourceType"] == o["type"]));
        out.push((o["type"].as_str().unwrap().to_string(), lines));
    }
    out
}

fn types(manifest: &Value) -> BTreeSet<String> {
    manifest["output"].as_array().unwrap().iter().map(|o| o["type"].as_str().unwrap().to_string()).collect()
}

async fn seed(h: &Harness) {
    for (id, family) in [("p1", "山田"), ("p2", "佐藤")] {
        let r = h
            .call(
                "PUT",
                &format!("/fhir/Patient/{id}"),
                Some(&json!({"resourceType": "Patient", "id": id, "name": [{"family": family}]})),
            )
            .await;
        assert!(r.status.is_success());
        for n in 0..3 {
            h.create(&json!({"resourceType": "Observation", "status": "final", "code": {"text": format!("o{n}")},
                "subject": {"reference": format!("Patient/{id}")}}))
                .await;
        }
    }
    h.call("PUT", "/fhir/Practitioner/dr1", Some(&json!({"resourceType": "Practitioner", "id": "dr1"}))).await;
    h.call(
        "PUT",
        "/fhir/Group/g1",
        Some(&json!({"resourceType": "Group", "id": "g1", "type": "person", "actual": true,
        "member": [{"entity": {"reference": "Patient/p2"}}]})),
    )
    .await;
}

#[tokio::test]
async fn system_patient_and_group_exports_follow_the_bulk_data_ig() {
    let h = Harness::new();
    seed(&h).await;
    let t = h.token.clone();
    let m = export(&h, &t, "/fhir/$export").await;
    assert_eq!(m["requiresAccessToken"], true);
    assert!(m["transactionTime"].as_str().is_some());
    assert_eq!(m["request"], "http://mamori.test/fhir/$export");
    let all = files(&h, &t, &m).await;
    let count = |t: &str| all.iter().find(|(k, _)| k == t).map_or(0, |(_, v)| v.len());
    assert_eq!(count("Patient"), 2);
    assert_eq!(count("Observation"), 6);
    assert_eq!(count("Practitioner"), 1);
    assert!(count("Provenance") >= 10, "every write's Provenance is a resource too");

    let m = export(&h, &t, "/fhir/$export?_type=Patient,Group&_outputFormat=application%2Ffhir%2Bndjson").await;
    assert_eq!(types(&m), ["Group", "Patient"].map(String::from).into());

    let m = export(&h, &t, "/fhir/Patient/$export?_type=Patient,Observation,Practitioner").await;
    assert_eq!(types(&m), ["Observation", "Patient"].map(String::from).into(), "no Practitioner: not about a patient");

    let m = export(&h, &t, "/fhir/Group/g1/$export?_type=Patient,Observation").await;
    let got = files(&h, &t, &m).await;
    for (_, rs) in &got {
        for r in rs {
            let about = r["subject"]["reference"]
                .as_str()
                .map(str::to_string)
                .unwrap_or(format!("Patient/{}", r["id"].as_str().unwrap()));
            assert_eq!(about, "Patient/p2", "{r}");
        }
    }
    assert_eq!(got.iter().map(|(_, v)| v.len()).sum::<usize>(), 4);

    let future = "/fhir/$export?_since=2999-01-01T00:00:00Z";
    assert!(export(&h, &t, future).await["output"].as_array().unwrap().is_empty());
    // Unknown group: 404; bad parameters: 400; no Prefer: respond-async: 400.
    assert_eq!(get_as(&h, &t, "/fhir/Group/nope/$export", ASYNC).await.status, StatusCode::NOT_FOUND);
    for bad in [
        "/fhir/$export?_type=Nope",
        "/fhir/$export?_since=yesterday",
        "/fhir/$export?_outputFormat=text/csv",
        "/fhir/$export?_typeFilter=Patient%3Fname%3Dx",
    ] {
        let r = get_as(&h, &t, bad, ASYNC).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(r.json()["resourceType"], "OperationOutcome");
    }
    let lenient = [("prefer", "respond-async, handling=lenient")];
    assert_eq!(
        get_as(&h, &t, "/fhir/$export?_typeFilter=Patient%3Fname%3Dx", &lenient).await.status,
        StatusCode::ACCEPTED
    );
    assert_eq!(get_as(&h, &t, "/fhir/$export", &[]).await.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn jobs_belong_to_their_requester_and_can_be_cancelled() {
    let h = Harness::new();
    seed(&h).await;
    let t = h.token.clone();
    let m = export(&h, &t, "/fhir/$export?_type=Patient").await;
    let url = m["output"][0]["url"].as_str().unwrap().strip_prefix("http://mamori.test").unwrap().to_string();
    let job = url.rsplit_once('/').unwrap().0.to_string();
    let other = h.token_for("other-app", "system/*.rs");
    assert_eq!(get_as(&h, &other, &job, &[]).await.status, StatusCode::NOT_FOUND);
    assert_eq!(get_as(&h, &other, &url, &[]).await.status, StatusCode::NOT_FOUND);
    assert_eq!(get_as(&h, "", &url, &[]).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(get_as(&h, &t, &format!("{job}/Nope.ndjson"), &[]).await.status, StatusCode::NOT_FOUND);
    assert_eq!(get_as(&h, &t, "/fhir/$bulk/..%2F..%2Fetc", &[]).await.status, StatusCode::NOT_FOUND);
    let r = h.call("DELETE", &job, None).await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    assert_eq!(get_as(&h, &t, &job, &[]).await.status, StatusCode::NOT_FOUND);
    assert_eq!(get_as(&h, &t, &url, &[]).await.status, StatusCode::NOT_FOUND);
    // A type the token may not read is refused at kick-off.
    let patients_only = h.token_for("patients-only", "system/Patient.rs");
    assert_eq!(
        get_as(&h, &patients_only, "/fhir/$export?_type=Observation", ASYNC).await.status,
        StatusCode::FORBIDDEN
    );
    let m = export(&h, &patients_only, "/fhir/$export").await;
    assert_eq!(types(&m), ["Patient"].map(String::from).into(), "without _type: the types the token may read");
}

#[tokio::test]
async fn an_export_reveals_only_what_the_guard_allows() {
    let h = Harness::new();
    seed(&h).await;
    h.add_user("u-doc", &["doctor"], "Practitioner/dr1");
    h.create(&json!({"resourceType": "CareTeam", "status": "active", "subject": {"reference": "Patient/p1"},
        "participant": [{"member": {"reference": "Practitioner/dr1"}}]}))
        .await;
    let token = h
        .node
        .oauth
        .issue_for_user(
            "test-app",
            "u-doc",
            Some("Practitioner/dr1"),
            "user/Patient.rs user/Observation.rs",
            900,
            crate::support::now_secs(),
        )
        .unwrap()
        .access_token;
    let m = export(&h, &token, "/fhir/Patient/$export?_type=Patient,Observation").await;
    let got = files(&h, &token, &m).await;
    let n: usize = got.iter().map(|(_, v)| v.len()).sum();
    assert_eq!(n, 4, "p1 and its observations only (care relationship): {got:?}");
    // Each download is audited with the patients its file is about.
    let auditor = h.token_for("auditor", "system/AuditEvent.rs");
    let events = get_as(&h, &auditor, "/fhir/AuditEvent?patient=p1", &[]).await.json();
    assert!(events.to_string().contains("$export/"), "{events}");
    let events = get_as(&h, &auditor, "/fhir/AuditEvent?patient=p2", &[]).await.json();
    assert!(!events.to_string().contains("$export/"), "p2 was not exported to this user");
}

fn ndjson(lines: &[Value]) -> String {
    lines.iter().map(|l| l.to_string()).collect::<Vec<_>>().join("\n") + "\n"
}

async fn import(h: &Harness, token: &str, body: String, ct: &str) -> Resp {
    let req = Request::builder()
        .method("POST")
        .uri("/fhir/$import")
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", ct)
        .body(Body::from(body))
        .unwrap();
    h.send(req).await
}

#[tokio::test]
async fn import_takes_ndjson_and_reports_refused_lines() {
    let h = Harness::new();
    let t = h.token.clone();
    let body = ndjson(&[
        json!({"resourceType": "Patient", "id": "imp1", "name": [{"family": "取込"}]}),
        json!({"resourceType": "Observation", "id": "imp-o1", "status": "final", "code": {"text": "x"}, "subject": {"reference": "Patient/imp1"}}),
        json!({"resourceType": "Patient", "birthDate": "someday"}),
        json!({"resourceType": "Patient"}),
    ]) + "{not json\n\n";
    let r = import(&h, &t, body, "application/fhir+ndjson").await;
    assert_eq!(r.status, StatusCode::OK, "{}", String::from_utf8_lossy(&r.body));
    let o = r.json();
    assert!(o["issue"][0]["diagnostics"].as_str().unwrap().contains("imported 3 resources; 2 line(s) refused"), "{o}");
    let errors: Vec<&str> =
        o["issue"].as_array().unwrap()[1..].iter().map(|i| i["diagnostics"].as_str().unwrap()).collect();
    assert!(errors[0].starts_with("line 3:") && errors[1].starts_with("line 5:"), "{errors:?}");
    assert_eq!(h.call("GET", "/fhir/Observation/imp-o1", None).await.status, StatusCode::OK);
    // Types the token may not write are refused line by line.
    let patients_only = h.token_for("patients-writer", "system/Patient.cu");
    let body = ndjson(&[
        json!({"resourceType": "Patient", "id": "imp2"}),
        json!({"resourceType": "Observation", "id": "imp-o2", "status": "final", "code": {"text": "x"}}),
    ]);
    let o = import(&h, &patients_only, body, "application/fhir+ndjson").await.json();
    assert!(o.to_string().contains("line 2:"), "{o}");
    assert_eq!(h.call("GET", "/fhir/Observation/imp-o2", None).await.status, StatusCode::NOT_FOUND);
    assert_eq!(h.call("GET", "/fhir/Patient/imp2", None).await.status, StatusCode::OK);
    // Everything refused: 400. Wrong media type: 415.
    assert_eq!(import(&h, &t, "nope\n".into(), "application/fhir+ndjson").await.status, StatusCode::BAD_REQUEST);
    assert_eq!(import(&h, &t, "{}".into(), "application/fhir+json").await.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

#[tokio::test]
async fn an_export_imports_into_another_server_unchanged() {
    let a = Harness::new();
    seed(&a).await;
    let m = export(&a, &a.token, "/fhir/$export?_type=Patient,Observation,Group,Practitioner").await;
    let b = Harness::new();
    for (_, rs) in files(&a, &a.token, &m).await {
        let r = import(&b, &b.token, ndjson(&rs), "application/fhir+ndjson").await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.diagnostics());
        for res in rs {
            let uri = format!("/fhir/{}/{}", res["resourceType"].as_str().unwrap(), res["id"].as_str().unwrap());
            let mut got = b.call("GET", &uri, None).await.json();
            let mut want = res.clone();
            got.as_object_mut().unwrap().remove("meta");
            want.as_object_mut().unwrap().remove("meta");
            assert_eq!(got, want, "{uri}");
        }
    }
}
