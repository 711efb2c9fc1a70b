//! R1: the FHIR REST interactions and their errors, through the real router.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};

use crate::support::Harness;

fn patient() -> Value {
    json!({
        "resourceType": "Patient",
        "identifier": [{"system": "urn:oid:1.2.392.100495.20.3.51.11234567890", "value": "00012345"}],
        "name": [{"family": "山田", "given": ["太郎"], "extension": [{"url": "http://hl7.org/fhir/StructureDefinition/iso21090-EN-representation", "valueCode": "IDE"}]},
                 {"family": "ヤマダ", "given": ["タロウ"]}],
        "gender": "male",
        "birthDate": "1970-01-01",
        "multipleBirthInteger": 1
    })
}

#[tokio::test]
async fn create_read_vread_update_with_etags_and_location() {
    let h = Harness::new();
    let r = h.call("POST", "/fhir/Patient", Some(&patient())).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.header("etag").as_deref(), Some("W/\"1\""));
    let created = r.json();
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(r.header("location").unwrap(), format!("http://mamori.test/fhir/Patient/{id}/_history/1"));
    assert_eq!(created["meta"]["versionId"], "1");
    assert_eq!(created["name"][0]["family"], "山田");
    assert!(r.header("content-type").unwrap().starts_with("application/fhir+json"));

    let read = h.call("GET", &format!("/fhir/Patient/{id}"), None).await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(read.body, r.body, "read returns the stored bytes exactly");

    let mut changed = created.clone();
    changed["gender"] = json!("female");
    let u = h.call_with("PUT", &format!("/fhir/Patient/{id}"), Some(&changed), &[("if-match", "W/\"1\"")]).await;
    assert_eq!(u.status, StatusCode::OK, "{}", String::from_utf8_lossy(&u.body));
    assert_eq!(u.header("etag").as_deref(), Some("W/\"2\""));
    assert_eq!(u.json()["meta"]["versionId"], "2");

    // A stale If-Match is refused and changes nothing.
    let stale = h.call_with("PUT", &format!("/fhir/Patient/{id}"), Some(&changed), &[("if-match", "W/\"1\"")]).await;
    assert_eq!(stale.status, StatusCode::PRECONDITION_FAILED);
    assert!(stale.diagnostics().contains("current version is 2"));

    let v1 = h.call("GET", &format!("/fhir/Patient/{id}/_history/1"), None).await;
    assert_eq!(v1.status, StatusCode::OK);
    assert_eq!(v1.body, r.body, "version 1 is kept exactly as stored");
    assert_eq!(v1.json()["gender"], "male");
    let v2 = h.call("GET", &format!("/fhir/Patient/{id}/_history/2"), None).await;
    assert_eq!(v2.json()["gender"], "female");
    assert_eq!(h.call("GET", &format!("/fhir/Patient/{id}/_history/3"), None).await.status, StatusCode::NOT_FOUND);
    assert_eq!(h.call("GET", &format!("/fhir/Patient/{id}/_history/x"), None).await.status, StatusCode::BAD_REQUEST);

    // If-None-Match on the current version.
    let nm = h.call_with("GET", &format!("/fhir/Patient/{id}"), None, &[("if-none-match", "W/\"2\"")]).await;
    assert_eq!(nm.status, StatusCode::NOT_MODIFIED);
}

#[tokio::test]
async fn update_as_create_and_id_rules() {
    let h = Harness::new();
    let mut p = patient();
    p["id"] = json!("pt-1");
    let r = h.call("PUT", "/fhir/Patient/pt-1", Some(&p)).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.json()["id"], "pt-1");

    let r = h.call("PUT", "/fhir/Patient/pt-2", Some(&p)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.diagnostics().contains("does not match the URL id"));

    let mut no_id = patient();
    no_id.as_object_mut().unwrap().remove("id");
    let r = h.call("PUT", "/fhir/Patient/pt-1", Some(&no_id)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    let r = h.call("GET", "/fhir/Patient/bad$id", None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // Errors the framework raises are OperationOutcome too.
    let r = h.call("GET", "/fhir/Patient/%FF%FE", None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["resourceType"], "OperationOutcome");
    let r = h.call("POST", "/fhir/Patient/pt-1", Some(&p)).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.json()["issue"][0]["code"], "not-supported");
    assert!(r.header("allow").is_some());
}

#[tokio::test]
async fn type_mismatch_unknown_type_and_invalid_content_are_400_and_store_nothing() {
    let h = Harness::new();
    let r = h.call("POST", "/fhir/Observation", Some(&patient())).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.diagnostics().contains("does not match the URL type"));

    let r = h.call("POST", "/fhir/Patientx", Some(&patient())).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    let mut bad = patient();
    bad["birthDate"] = json!("1970-02-30");
    bad["nickname"] = json!("x");
    bad["active"] = json!("yes");
    bad["name"] = json!({"family": "not an array"});
    let r = h.call("POST", "/fhir/Patient", Some(&bad)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let issues = r.json()["issue"].as_array().unwrap().clone();
    let text = serde_json::to_string(&issues).unwrap();
    assert!(text.contains("Patient.birthDate") && text.contains("not a valid date"), "{text}");
    assert!(text.contains("unknown element `nickname`"), "{text}");
    assert!(text.contains("Patient.active"), "{text}");
    assert!(text.contains("`name` must be an array"), "{text}");

    let malformed = Request::builder()
        .method("POST")
        .uri("/fhir/Patient")
        .header("authorization", format!("Bearer {}", h.token))
        .header("content-type", "application/fhir+json")
        .body(Body::from("{\"resourceType\": \"Patient\", "))
        .unwrap();
    let r = h.send(malformed).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.diagnostics().contains("not valid JSON"));

    // Choice types: the suffix must name an allowed type.
    let obs = json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "valueFoo": 1});
    let r = h.call("POST", "/fhir/Observation", Some(&obs)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let obs: Value = serde_json::from_str(r#"{"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "valueQuantity": {"value": 1.50, "unit": "mg"}}"#).unwrap();
    let r = h.call("POST", "/fhir/Observation", Some(&obs)).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert!(String::from_utf8_lossy(&r.body).contains("1.50"), "decimal precision is kept");

    let hist = h.call("GET", "/fhir/Patient/_history", None).await;
    assert_eq!(hist.json()["total"], 0, "nothing was stored by the refused requests");
}

#[tokio::test]
async fn json_patch_applies_and_refuses_bad_patches() {
    let h = Harness::new();
    let p = h.create(&patient()).await;
    let id = p["id"].as_str().unwrap();
    let patch = |body: &str, ct: &str| {
        Request::builder()
            .method("PATCH")
            .uri(format!("/fhir/Patient/{id}"))
            .header("authorization", format!("Bearer {}", h.token))
            .header("content-type", ct)
            .body(Body::from(body.to_string()))
            .unwrap()
    };
    let r = h
        .send(patch(
            r#"[{"op":"replace","path":"/gender","value":"other"},{"op":"add","path":"/active","value":true}]"#,
            "application/json-patch+json",
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["gender"], "other");
    assert_eq!(r.json()["active"], true);
    assert_eq!(r.json()["meta"]["versionId"], "2");

    let r = h
        .send(patch(r#"[{"op":"replace","path":"/birthDate","value":"not-a-date"}]"#, "application/json-patch+json"))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "a patch producing an invalid resource is refused");
    let r = h.send(patch(r#"[{"op":"remove","path":"/nonexistent"}]"#, "application/json-patch+json")).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let r = h.send(patch(r#"[{"op":"replace","path":"/id","value":"other"}]"#, "application/json-patch+json")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = h.send(patch(r#"{"not":"a patch"}"#, "application/json-patch+json")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = h.send(patch(r#"[]"#, "application/fhir+json")).await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let cur = h.call("GET", &format!("/fhir/Patient/{id}"), None).await;
    assert_eq!(cur.json()["meta"]["versionId"], "2", "failed patches wrote nothing");
}

#[tokio::test]
async fn delete_is_logical_and_history_keeps_everything() {
    let h = Harness::new();
    let p = h.create(&patient()).await;
    let id = p["id"].as_str().unwrap();
    let r = h.call("DELETE", &format!("/fhir/Patient/{id}"), None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = h.call("GET", &format!("/fhir/Patient/{id}"), None).await;
    assert_eq!(r.status, StatusCode::GONE);
    assert_eq!(r.json()["issue"][0]["code"], "deleted");
    // Deleting again is harmless; a never-existing resource is 404.
    assert_eq!(h.call("DELETE", &format!("/fhir/Patient/{id}"), None).await.status, StatusCode::NO_CONTENT);
    assert_eq!(h.call("DELETE", "/fhir/Patient/nope", None).await.status, StatusCode::NOT_FOUND);
    assert_eq!(h.call("GET", "/fhir/Patient/nope", None).await.status, StatusCode::NOT_FOUND);
    // The content is still readable by version (見読性).
    let v1 = h.call("GET", &format!("/fhir/Patient/{id}/_history/1"), None).await;
    assert_eq!(v1.status, StatusCode::OK);
    assert_eq!(h.call("GET", &format!("/fhir/Patient/{id}/_history/2"), None).await.status, StatusCode::GONE);

    let hist = h.call("GET", &format!("/fhir/Patient/{id}/_history"), None).await;
    assert_eq!(hist.status, StatusCode::OK);
    let b = hist.json();
    assert_eq!(b["type"], "history");
    assert_eq!(b["total"], 2);
    assert_eq!(b["entry"][0]["request"]["method"], "DELETE");
    assert!(b["entry"][0].get("resource").is_none());
    assert_eq!(b["entry"][1]["request"]["method"], "POST");
    assert_eq!(b["entry"][1]["resource"]["id"], id);

    // Re-creating by update after delete makes version 3.
    let mut again = p.clone();
    again["gender"] = json!("female");
    let r = h.call("PUT", &format!("/fhir/Patient/{id}"), Some(&again)).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.json()["meta"]["versionId"], "3");
}

#[tokio::test]
async fn type_and_system_history_page_with_links() {
    let h = Harness::new();
    for _ in 0..5 {
        h.create(&patient()).await;
    }
    h.create(&json!({"resourceType": "Observation", "status": "final", "code": {"text": "BP"}})).await;
    let r = h.call("GET", "/fhir/Patient/_history?_count=2", None).await;
    let b = r.json();
    assert_eq!(b["total"], 5);
    assert_eq!(b["entry"].as_array().unwrap().len(), 2);
    let next = b["link"].as_array().unwrap().iter().find(|l| l["relation"] == "next").unwrap()["url"]
        .as_str()
        .unwrap()
        .to_string();
    // Writes after the first page do not shift later pages.
    h.create(&patient()).await;
    let path = next.strip_prefix("http://mamori.test").unwrap();
    let page2 = h.call("GET", path, None).await.json();
    assert_eq!(page2["entry"].as_array().unwrap().len(), 2);
    assert_ne!(page2["entry"][0]["fullUrl"], b["entry"][0]["fullUrl"]);
    assert_eq!(page2["total"], 5, "the anchored page still counts what existed at the first page");

    let sys = h.call("GET", "/fhir/_history", None).await.json();
    // 7 resources written, each with its server-written Provenance.
    assert_eq!(sys["total"], 14);
    let r = h.call("GET", "/fhir/_history?_bogus=1", None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = h.call("GET", "/fhir/_history?_since=yesterday", None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn conditional_create_update_delete() {
    let h = Harness::new();
    let p = patient();
    let cond = "identifier=urn:oid:1.2.392.100495.20.3.51.11234567890|00012345";
    let r = h.call_with("POST", "/fhir/Patient", Some(&p), &[("if-none-exist", cond)]).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let id = r.json()["id"].as_str().unwrap().to_string();
    let r = h.call_with("POST", "/fhir/Patient", Some(&p), &[("if-none-exist", cond)]).await;
    assert_eq!(r.status, StatusCode::OK, "an existing match is returned, not duplicated");
    assert_eq!(r.json()["id"], id.as_str());
    let r = h.call_with("POST", "/fhir/Patient", Some(&p), &[("if-none-exist", "name=山田")]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "unsupported criteria are refused, never ignored");

    // Conditional update of the one match.
    let mut upd = p.clone();
    upd["gender"] = json!("female");
    let r = h.call("PUT", &format!("/fhir/Patient?{cond}"), Some(&upd)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["id"], id.as_str());
    assert_eq!(r.json()["meta"]["versionId"], "2");
    // No match: creates.
    let mut other = p.clone();
    other["identifier"] = json!([{"system": "urn:x", "value": "new"}]);
    let r = h.call("PUT", "/fhir/Patient?identifier=urn:x|new", Some(&other)).await;
    assert_eq!(r.status, StatusCode::CREATED);
    // Two matches: 412 for create/update/delete.
    let mut dup = p.clone();
    dup["identifier"] = json!([{"system": "urn:x", "value": "new"}]);
    h.create(&dup).await;
    let r = h.call("PUT", "/fhir/Patient?identifier=urn:x|new", Some(&other)).await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED);
    let r = h.call_with("POST", "/fhir/Patient", Some(&p), &[("if-none-exist", "identifier=new")]).await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(
        h.call("DELETE", "/fhir/Patient?identifier=urn:x|new", None).await.status,
        StatusCode::PRECONDITION_FAILED
    );

    // Search on identifier sees the two; delete one match by _id.
    let s = h.call("GET", "/fhir/Patient?identifier=urn:x%7Cnew", None).await.json();
    assert_eq!(s["total"], 2);
    assert_eq!(h.call("DELETE", &format!("/fhir/Patient?{cond}"), None).await.status, StatusCode::NO_CONTENT);
    assert_eq!(h.call("GET", &format!("/fhir/Patient/{id}"), None).await.status, StatusCode::GONE);
    assert_eq!(
        h.call("DELETE", &format!("/fhir/Patient?{cond}"), None).await.status,
        StatusCode::NO_CONTENT,
        "no match is not an error"
    );
    let s = h.call("GET", &format!("/fhir/Patient?_id={id}"), None).await.json();
    assert_eq!(s["total"], 0, "deleted resources are not found by search");
}

#[tokio::test]
async fn the_api_is_never_open() {
    let h = Harness::new();
    let p = h.create(&patient()).await;
    let id = p["id"].as_str().unwrap();
    for (method, uri) in [
        ("GET", format!("/fhir/Patient/{id}")),
        ("GET", "/fhir/_history".into()),
        ("POST", "/fhir/Patient".into()),
        ("DELETE", format!("/fhir/Patient/{id}")),
    ] {
        let r = h.send(Request::builder().method(method).uri(&uri).body(Body::empty()).unwrap()).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{method} {uri}");
        assert!(r.header("www-authenticate").unwrap().starts_with("Bearer"));
        assert_eq!(r.json()["resourceType"], "OperationOutcome");
        let forged = Request::builder()
            .method(method)
            .uri(&uri)
            .header("authorization", "Bearer forged-token")
            .body(Body::empty())
            .unwrap();
        assert_eq!(h.send(forged).await.status, StatusCode::UNAUTHORIZED);
    }
    // Only the FHIR metadata is exempt, not any nested path named like it.
    let r = h.send(Request::builder().uri("/audit/metadata").body(Body::empty()).unwrap()).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // metadata is open and truthful.
    let r = h.send(Request::builder().uri("/fhir/metadata").body(Body::empty()).unwrap()).await;
    assert_eq!(r.status, StatusCode::OK);
    let cs = r.json();
    assert_eq!(cs["fhirVersion"], "4.0.1");
    let pat = cs["rest"][0]["resource"].as_array().unwrap().iter().find(|r| r["type"] == "Patient").unwrap().clone();
    assert_eq!(pat["conditionalDelete"], "single");
    assert_eq!(cs["rest"][0]["resource"].as_array().unwrap().len(), 146);
    // The search parameters it lists are the ones search takes.
    let names: Vec<&str> = pat["searchParam"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    for n in ["_id", "_lastUpdated", "name", "birthdate", "identifier", "general-practitioner", "_security"] {
        assert!(names.contains(&n), "{n}: {names:?}");
    }
    assert!(pat["searchInclude"].as_array().unwrap().iter().any(|i| i == "Patient:general-practitioner"));

    // A token whose scopes do not cover the act gets 403.
    let ro = h.token_for("reader", "system/Observation.rs");
    let r = h
        .send(
            Request::builder()
                .uri(format!("/fhir/Patient/{id}"))
                .header("authorization", format!("Bearer {ro}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // System history hides what the token may not read; a total counts only what it shows
    // (issue #22: its presence must not depend on hidden versions).
    let r = h
        .send(
            Request::builder()
                .uri("/fhir/_history")
                .header("authorization", format!("Bearer {ro}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    let b = r.json();
    assert_eq!(b["total"], 0);
    assert!(b["entry"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn request_ids_formats_and_body_limits() {
    let h = Harness::with_config(Some("[server]\nmax_body_bytes = 2048\n"));
    let r = h.call_with("GET", "/fhir/metadata", None, &[("x-request-id", "abc-123.x")]).await;
    assert_eq!(r.header("x-request-id").as_deref(), Some("abc-123.x"));
    let r = h.call_with("GET", "/fhir/metadata", None, &[("x-request-id", "bad id with spaces")]).await;
    let generated = r.header("x-request-id").unwrap();
    assert_ne!(generated, "bad id with spaces");
    assert_eq!(generated.len(), 32);
    assert!(h.call("GET", "/nowhere", None).await.header("x-request-id").is_some());

    let mut big = patient();
    big["name"][0]["family"] = json!("x".repeat(4000));
    let r = h.call("POST", "/fhir/Patient", Some(&big)).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.json()["resourceType"], "OperationOutcome");
    // Without Content-Length (streamed), the limit still holds.
    let stream = futures_stream(big.to_string().into_bytes());
    let req = Request::builder()
        .method("POST")
        .uri("/fhir/Patient")
        .header("authorization", format!("Bearer {}", h.token))
        .header("content-type", "application/fhir+json")
        .body(stream)
        .unwrap();
    assert_eq!(h.send(req).await.status, StatusCode::PAYLOAD_TOO_LARGE);

    let r = h.call_with("GET", "/fhir/Patient/x", None, &[("accept", "application/fhir+xml")]).await;
    assert_eq!(r.status, StatusCode::NOT_ACCEPTABLE);
    let r = h.call("GET", "/fhir/Patient/x?_format=xml", None).await;
    assert_eq!(r.status, StatusCode::NOT_ACCEPTABLE);
    let req = Request::builder()
        .method("POST")
        .uri("/fhir/Patient")
        .header("authorization", format!("Bearer {}", h.token))
        .header("content-type", "text/plain")
        .body(Body::from(patient().to_string()))
        .unwrap();
    assert_eq!(h.send(req).await.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let r = h.call_with("POST", "/fhir/Patient", Some(&patient()), &[("prefer", "return=minimal")]).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert!(r.body.is_empty());
    assert!(r.header("location").is_some());
}

fn futures_stream(bytes: Vec<u8>) -> Body {
    let chunks: Vec<axum::body::Bytes> = bytes.chunks(512).map(axum::body::Bytes::copy_from_slice).collect();
    Body::new(Chunked(chunks.into_iter()))
}

/// A body of unknown length (no Content-Length), delivered in chunks.
struct Chunked(std::vec::IntoIter<axum::body::Bytes>);

impl http_body::Body for Chunked {
    type Data = axum::body::Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::task::Poll::Ready(self.0.next().map(|b| Ok(http_body::Frame::data(b))))
    }
}

/// `POST Type?criteria` is a conditional create the client did not ask for correctly: refused
/// with a clear error instead of creating the duplicate it meant to avoid (#28). `_format` and
/// `_pretty` are still fine.
#[tokio::test]
async fn a_create_with_search_criteria_in_its_url_is_refused() {
    let h = Harness::new();
    let p = json!({"resourceType": "Patient", "identifier": [{"system": "urn:mrn", "value": "Q1"}]});
    let r = h.call("POST", "/fhir/Patient?identifier=urn:mrn%7CQ1", Some(&p)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.diagnostics());
    assert_eq!(r.json()["resourceType"], "OperationOutcome");
    assert!(r.diagnostics().contains("If-None-Exist"), "{}", r.diagnostics());
    let found = h.call("GET", "/fhir/Patient?identifier=urn:mrn%7CQ1", None).await.json();
    assert_eq!(found["total"], 0, "nothing was created");
    let r = h.call("POST", "/fhir/Patient?_format=json&_pretty=true", Some(&p)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.diagnostics());
}
