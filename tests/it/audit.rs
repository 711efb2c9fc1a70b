//! Issue #6: the audit trail — coverage (L1), fail-closed durability (L3), tiles, signed
//! checkpoints and proofs (L2), the AuditEvent view, export and offline verification.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use mamori_audit::merkle;
use mamori_audit::note::{Checkpoint, NoteVerifier};
use mamori_audit::{AuditRecord, EntryQuery};
use serde_json::json;

use crate::support::Harness;

fn all_records(h: &Harness) -> Vec<AuditRecord> {
    h.node
        .store
        .query(&EntryQuery::default())
        .unwrap()
        .iter()
        .map(|(_, e)| serde_json::from_slice(e).unwrap())
        .collect()
}

async fn get_as(h: &Harness, token: &str, uri: &str) -> crate::support::Resp {
    h.send(Request::builder().uri(uri).header("authorization", format!("Bearer {token}")).body(Body::empty()).unwrap())
        .await
}

#[tokio::test]
async fn every_request_is_recorded_with_who_what_whom_and_outcome() {
    let h = Harness::new();
    let p = h.create(&json!({"resourceType": "Patient", "name": [{"family": "佐藤"}]})).await;
    let pid = p["id"].as_str().unwrap().to_string();
    let obs = json!({"resourceType": "Observation", "status": "final", "code": {"text": "BP"}, "subject": {"reference": format!("Patient/{pid}")}});
    let o = h.call_with("POST", "/fhir/Observation", Some(&obs), &[("x-request-id", "req-create-obs")]).await;
    let oid = o.json()["id"].as_str().unwrap().to_string();
    h.call_with("GET", &format!("/fhir/Observation/{oid}"), None, &[("x-request-id", "req-read-obs")]).await;
    h.call("GET", &format!("/fhir/Patient/{pid}/_history"), None).await;
    h.call("GET", "/fhir/Patient/does-not-exist", None).await;
    h.send(Request::builder().uri(format!("/fhir/Patient/{pid}")).body(Body::empty()).unwrap()).await;
    let narrow = h.token_for("narrow", "system/Observation.rs");
    get_as(&h, &narrow, &format!("/fhir/Patient/{pid}")).await;

    let recs = all_records(&h);
    let find = |f: &dyn Fn(&AuditRecord) -> bool| recs.iter().find(|r| f(r)).cloned();
    let create = find(&|r| r.request_id.as_deref() == Some("req-create-obs")).expect("create audited");
    assert_eq!(create.action, "create");
    assert_eq!(create.patients, vec![format!("Patient/{pid}")]);
    assert_eq!(create.resources[0], format!("Observation/{oid}/_history/1"));
    assert_eq!(create.actor.client_id.as_deref(), Some("test-app"));
    let read = find(&|r| r.request_id.as_deref() == Some("req-read-obs")).expect("read audited");
    assert_eq!((read.action.as_str(), read.status), ("read", Some(200)));
    assert_eq!(read.patients, vec![format!("Patient/{pid}")], "the patient of a read Observation is named");
    let hist = find(&|r| r.action == "history").unwrap();
    assert_eq!(hist.resources.len(), 1);
    let missing = find(&|r| r.status == Some(404)).unwrap();
    assert_eq!(missing.outcome, mamori_audit::Outcome::Failure);
    let anon = find(&|r| r.status == Some(401)).unwrap();
    assert_eq!((anon.actor.kind.as_str(), anon.outcome), ("anonymous", mamori_audit::Outcome::Denied));
    let denied = find(&|r| r.status == Some(403)).unwrap();
    assert_eq!(denied.actor.id, "narrow");
    // The client registrations (configuration changes) are in the trail too.
    assert!(recs.iter().any(|r| r.action == "config" && r.resources[0].starts_with("config/client/narrow/")));
    // Time never goes backwards.
    let times: Vec<&String> = recs.iter().map(|r| &r.time).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]));
}

#[tokio::test]
async fn when_the_trail_cannot_be_written_requests_fail_closed_and_nothing_changes() {
    let h = Harness::new();
    let p = h.create(&json!({"resourceType": "Patient", "active": true})).await;
    let pid = p["id"].as_str().unwrap().to_string();
    let db = crate::support::RawDb::at(h.dir.path());
    db.exec(
        // The trail is a file of its own on SQLite (attached as `audit`); a trigger lives beside its table.
        "CREATE TRIGGER audit.audit_down BEFORE INSERT ON audit_entries BEGIN SELECT RAISE(ABORT, 'disk full'); END;",
        "CREATE FUNCTION audit_down() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'disk full'; END $$;
         CREATE TRIGGER audit_down BEFORE INSERT ON audit_entries FOR EACH ROW EXECUTE FUNCTION audit_down();",
    )
    .unwrap();

    let r = h.call("GET", &format!("/fhir/Patient/{pid}"), None).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "no unrecorded read");
    assert_eq!(r.json()["resourceType"], "OperationOutcome");
    assert!(!String::from_utf8_lossy(&r.body).contains("\"active\""), "the resource is not revealed");
    let r = h.call("POST", "/fhir/Patient", Some(&json!({"resourceType": "Patient"}))).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    let r = h.call("DELETE", &format!("/fhir/Patient/{pid}"), None).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);

    db.exec("DROP TRIGGER audit_down", "DROP TRIGGER audit_down ON audit_entries").unwrap();
    let r = h.call("GET", &format!("/fhir/Patient/{pid}"), None).await;
    assert_eq!(r.status, StatusCode::OK, "the delete did not happen");
    let n = db.int("SELECT COUNT(*) FROM versions WHERE type = 'Patient'");
    assert_eq!(n, 1, "the refused create stored nothing");
}

#[tokio::test]
async fn tiles_checkpoints_and_proofs_verify_from_outside() {
    let h = Harness::new();
    for i in 0..300 {
        h.call("GET", &format!("/fhir/Patient/p{i}"), None).await;
    }
    let first = h.node.integrate_audit().unwrap().expect("a checkpoint");
    for _ in 0..20 {
        h.create(&json!({"resourceType": "Patient"})).await;
    }
    h.node.integrate_audit().unwrap().expect("a second checkpoint");
    assert!(h.node.integrate_audit().unwrap().is_none(), "no growth, no new checkpoint");

    let auditor = h.token_for("auditor", "system/AuditEvent.rs");
    // Only the audit class may read the log.
    let clinical = h.token_for("clinical", "system/Patient.cruds system/Observation.cruds");
    assert_eq!(get_as(&h, &clinical, "/audit/log/checkpoint").await.status, StatusCode::FORBIDDEN);
    assert_eq!(get_as(&h, &clinical, "/audit/log/tile/0/000").await.status, StatusCode::FORBIDDEN);
    assert_eq!(
        h.send(Request::builder().uri("/audit/log/checkpoint").body(Body::empty()).unwrap()).await.status,
        StatusCode::UNAUTHORIZED
    );

    let r = get_as(&h, &auditor, "/audit/log/checkpoint").await;
    assert_eq!(r.status, StatusCode::OK);
    let note = String::from_utf8(r.body.clone()).unwrap();
    let v = NoteVerifier::parse(&h.node.signer.verifier_key()).unwrap();
    let cp = Checkpoint::parse(v.verify(&note).unwrap()).unwrap();
    assert_eq!(cp.origin, h.node.origin);
    assert!(cp.size > 300);

    // Rebuild the root from the tiles as a tlog-tiles client would.
    let full = get_as(&h, &auditor, "/audit/log/tile/0/000").await;
    assert_eq!(full.status, StatusCode::OK);
    assert_eq!(full.body.len(), 256 * 32);
    let w = cp.size - 256;
    let part = get_as(&h, &auditor, &format!("/audit/log/tile/0/001.p/{w}")).await;
    assert_eq!(part.status, StatusCode::OK, "{}", String::from_utf8_lossy(&part.body));
    let mut leaves: Vec<[u8; 32]> = full.body.chunks(32).map(|c| c.try_into().unwrap()).collect();
    leaves.extend(part.body.chunks(32).map(|c| <[u8; 32]>::try_from(c).unwrap()));
    assert_eq!(merkle::root_of(&leaves), cp.root);
    // Entry bundles hash to those leaves.
    let bundle = get_as(&h, &auditor, "/audit/log/tile/entries/000").await.body;
    let mut pos = 0;
    let mut i = 0;
    while pos < bundle.len() {
        let len = u16::from_be_bytes([bundle[pos], bundle[pos + 1]]) as usize;
        let entry = &bundle[pos + 2..pos + 2 + len];
        assert_eq!(merkle::leaf_hash(entry), leaves[i]);
        serde_json::from_slice::<AuditRecord>(entry).unwrap();
        pos += 2 + len;
        i += 1;
    }
    assert_eq!(i, 256);
    assert_eq!(get_as(&h, &auditor, "/audit/log/tile/0/009").await.status, StatusCode::NOT_FOUND);
    assert_eq!(get_as(&h, &auditor, "/audit/log/tile/0/5").await.status, StatusCode::NOT_FOUND, "non-canonical path");

    // Inclusion and consistency proofs over HTTP.
    let r = get_as(&h, &auditor, &format!("/audit/proof/inclusion?index=7&size={}", cp.size)).await.json();
    let proof: Vec<[u8; 32]> = r["hashes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| B64.decode(x.as_str().unwrap()).unwrap().try_into().unwrap())
        .collect();
    merkle::verify_inclusion(&leaves[7], 7, cp.size, &proof, &cp.root).unwrap();
    let old = Checkpoint::parse(v.verify(&first).unwrap()).unwrap();
    let r = get_as(&h, &auditor, &format!("/audit/proof/consistency?from={}&to={}", old.size, cp.size)).await.json();
    let proof: Vec<[u8; 32]> = r["hashes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| B64.decode(x.as_str().unwrap()).unwrap().try_into().unwrap())
        .collect();
    merkle::verify_consistency(old.size, cp.size, &old.root, &cp.root, &proof).unwrap();
    let r = get_as(&h, &auditor, "/audit/proof/inclusion?index=abc").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = get_as(&h, &auditor, &format!("/audit/proof/inclusion?index={}", cp.size + 5)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    // Reading the audit log is itself recorded, as such, with the full path.
    let reads: Vec<AuditRecord> = all_records(&h).into_iter().filter(|r| r.actor.id == "auditor").collect();
    assert!(
        reads.iter().any(|r| r.action == "audit-read" && r.resources == vec!["/audit/log/checkpoint".to_string()]),
        "{reads:?}"
    );
    assert!(reads.iter().all(|r| r.action == "audit-read"), "{reads:?}");
}

#[tokio::test]
async fn the_audit_event_view_searches_and_is_read_only() {
    let h = Harness::new();
    let p = h.create(&json!({"resourceType": "Patient"})).await;
    let pid = p["id"].as_str().unwrap().to_string();
    h.call("GET", &format!("/fhir/Patient/{pid}"), None).await;
    h.create(&json!({"resourceType": "Patient"})).await;
    let auditor = h.token_for("auditor", "system/AuditEvent.rs");
    let b = get_as(&h, &auditor, &format!("/fhir/AuditEvent?patient={pid}")).await.json();
    assert_eq!(b["type"], "searchset");
    let events = b["entry"].as_array().unwrap();
    assert_eq!(events.len(), 2, "the create and the read of that patient: {b}");
    let ev = &events[1]["resource"];
    assert_eq!(ev["resourceType"], "AuditEvent");
    assert_eq!(ev["action"], "R");
    assert_eq!(ev["outcome"], "0");
    assert!(ev["entity"].as_array().unwrap().iter().any(|e| e["what"]["reference"] == format!("Patient/{pid}")));
    let b = get_as(&h, &auditor, "/fhir/AuditEvent?action=C&agent=test-app").await.json();
    assert_eq!(b["entry"].as_array().unwrap().len(), 2);
    let today = &ev["recorded"].as_str().unwrap()[..10];
    let b = get_as(&h, &auditor, &format!("/fhir/AuditEvent?date=ge{today}&_count=1")).await.json();
    assert_eq!(b["entry"].as_array().unwrap().len(), 1);
    assert!(b["link"].as_array().unwrap().iter().any(|l| l["relation"] == "next"));
    let b = get_as(&h, &auditor, "/fhir/AuditEvent?date=lt2000-01-01").await.json();
    assert_eq!(b["entry"].as_array().unwrap().len(), 0);
    let id = events[0]["resource"]["id"].as_str().unwrap();
    assert_eq!(get_as(&h, &auditor, &format!("/fhir/AuditEvent/{id}")).await.json()["id"], id);
    assert_eq!(get_as(&h, &auditor, "/fhir/AuditEvent?nonsense=1").await.status, StatusCode::BAD_REQUEST);
    // Without the audit class: no access.
    assert_eq!(h.call("GET", "/fhir/AuditEvent", None).await.status, StatusCode::OK, "test-app has system/*.cruds");
    let clinical = h.token_for("clinical", "system/Patient.cruds");
    assert_eq!(get_as(&h, &clinical, "/fhir/AuditEvent").await.status, StatusCode::FORBIDDEN);
    for (m, uri) in [
        ("POST", "/fhir/AuditEvent".to_string()),
        ("PUT", format!("/fhir/AuditEvent/{id}")),
        ("DELETE", format!("/fhir/AuditEvent/{id}")),
    ] {
        let r = h.call(m, &uri, Some(&json!({"resourceType": "AuditEvent", "id": id}))).await;
        assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{m} {uri}");
    }
}

#[tokio::test]
async fn export_formats() {
    let h = Harness::new();
    h.create(&json!({"resourceType": "Patient"})).await;
    h.call("GET", "/fhir/Patient/x", None).await;
    let mut out = Vec::new();
    let n = mamori::audit_export::export(
        &*h.node.store,
        mamori::audit_export::Format::Ndjson,
        None,
        None,
        &mut out,
        &mut |_| {},
    )
    .unwrap();
    let text = String::from_utf8(out).unwrap();
    assert_eq!(text.lines().count() as u64, n);
    assert!(text.lines().all(|l| serde_json::from_str::<AuditRecord>(l).is_ok()));
    let mut out = Vec::new();
    mamori::audit_export::export(&*h.node.store, mamori::audit_export::Format::Csv, None, None, &mut out, &mut |_| {})
        .unwrap();
    let csv = String::from_utf8(out).unwrap();
    assert!(csv.starts_with("index,time,action,outcome"));
    assert_eq!(csv.lines().count() as u64, n + 1);
    let mut out = Vec::new();
    mamori::audit_export::export(
        &*h.node.store,
        mamori::audit_export::Format::Syslog,
        None,
        None,
        &mut out,
        &mut |_| {},
    )
    .unwrap();
    let sys = String::from_utf8(out).unwrap();
    for line in sys.lines() {
        // <PRI>VERSION SP TIMESTAMP SP HOSTNAME SP APP-NAME SP PROCID SP MSGID SP SD SP MSG
        let parts: Vec<&str> = line.splitn(8, ' ').collect();
        assert!(parts[0] == "<86>1" || parts[0] == "<85>1", "{line}");
        assert!(parts[1].ends_with('Z') && parts[1].contains('T'));
        assert_eq!(parts[3], "mamori");
        assert_eq!(parts[6], "[mamori@32473");
        assert!(parts[7].starts_with("idx=\""));
    }
    let mut out = Vec::new();
    let future = mamori_records::Timestamp::parse_rfc3339("2999-01-01T00:00:00Z").unwrap().0;
    assert_eq!(
        mamori::audit_export::export(
            &*h.node.store,
            mamori::audit_export::Format::Ndjson,
            Some(future),
            None,
            &mut out,
            &mut |_| {}
        )
        .unwrap(),
        0
    );
}

#[test]
fn syslog_streams_to_a_tls_collector_with_octet_counting() {
    use std::io::Read;
    let h = Harness::new();
    let tmp = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["collector.test".to_string()]).unwrap().self_signed(&key).unwrap();
    std::fs::write(tmp.path().join("c.pem"), cert.pem()).unwrap();
    std::fs::write(tmp.path().join("k.pem"), key.serialize_pem()).unwrap();
    let server_cfg = mamori_http::tls_config(&mamori_http::TlsFiles {
        cert: tmp.path().join("c.pem"),
        key: tmp.path().join("k.pem"),
    })
    .unwrap();
    let collect = |cfg: std::sync::Arc<rustls::ServerConfig>| {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let t = std::thread::spawn(move || {
            let (tcp, _) = listener.accept().unwrap();
            let conn = rustls::ServerConnection::new(cfg).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            let mut buf = Vec::new();
            let _ = tls.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        });
        (addr, t)
    };
    let (addr, collector) = collect(server_cfg.clone());
    let to = mamori::audit_export::SyslogTls {
        addr: addr.to_string(),
        server_name: "collector.test".into(),
        ca_file: tmp.path().join("c.pem"),
    };
    let n = mamori::audit_export::stream_syslog_tls(&*h.node.store, None, None, &to).unwrap();
    assert!(n >= 1);
    let received = collector.join().unwrap();
    // Octet counting: "LEN SP MSG", repeated.
    let mut rest = received.as_str();
    let mut frames = 0;
    while !rest.is_empty() {
        let (len, tail) = rest.split_once(' ').unwrap();
        let len: usize = len.parse().unwrap();
        let msg = &tail[..len];
        assert!(msg.starts_with("<86>1 ") || msg.starts_with("<85>1 "), "{msg}");
        rest = &tail[len..];
        frames += 1;
    }
    assert_eq!(frames, n);
    // A collector whose certificate does not name it is refused, and receives nothing.
    let (addr, collector) = collect(server_cfg);
    let wrong = mamori::audit_export::SyslogTls { addr: addr.to_string(), server_name: "other.test".into(), ..to };
    assert!(mamori::audit_export::stream_syslog_tls(&*h.node.store, None, None, &wrong).is_err());
    assert!(collector.join().unwrap().is_empty());
}
