//! FHIR search (#3): the official R4 parameters of every kind, modifiers and prefixes, chains and
//! `_has`, result parameters, keyset paging that survives concurrent writes, strict and lenient
//! handling, and the guard on everything a search reveals.

use std::collections::BTreeSet;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};

use crate::support::{Harness, Resp};

async fn put(h: &Harness, v: Value) {
    let uri = format!("/fhir/{}/{}", v["resourceType"].as_str().unwrap(), v["id"].as_str().unwrap());
    let r = h.call("PUT", &uri, Some(&v)).await;
    assert!(r.status.is_success(), "{uri}: {}", r.diagnostics());
}

/// Seeds four patients, a practitioner and three observations.
async fn seed(h: &Harness) {
    put(h, json!({"resourceType": "Practitioner", "id": "dr1", "name": [{"family": "医師", "given": ["一郎"]}]})).await;
    put(
        h,
        json!({"resourceType": "Patient", "id": "p1",
        "identifier": [{"system": "urn:oid:1.2.392.100495.20.3.51.1", "value": "00012345"}],
        "name": [{"family": "山田", "given": ["太郎"]}, {"family": "ヤマダ", "given": ["タロウ"]}],
        "gender": "male", "birthDate": "1970-04-01", "generalPractitioner": [{"reference": "Practitioner/dr1"}]}),
    )
    .await;
    put(
        h,
        json!({"resourceType": "Patient", "id": "p2", "name": [{"family": "佐藤", "given": ["花子"]}],
        "gender": "female", "birthDate": "1985-12-24"}),
    )
    .await;
    put(
        h,
        json!({"resourceType": "Patient", "id": "p3", "name": [{"family": "Smith", "given": ["Renée"]}],
        "gender": "female", "birthDate": "2000-02-29"}),
    )
    .await;
    put(h, json!({"resourceType": "Patient", "id": "p4", "name": [{"text": "名前不明"}], "gender": "unknown"})).await;
    let bp = |id: &str, patient: &str, v: f64, when: &str| {
        json!({"resourceType": "Observation", "id": id, "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6", "display": "Systolic blood pressure"}]},
            "subject": {"reference": format!("Patient/{patient}")}, "effectiveDateTime": when,
            "valueQuantity": {"value": v, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}})
    };
    put(h, bp("o1", "p1", 120.0, "2024-05-01T09:00:00+09:00")).await;
    put(
        h,
        json!({"resourceType": "Observation", "id": "o2", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}]},
        "subject": {"reference": "Patient/p1"}, "effectiveDateTime": "2024-05-01T09:05:00+09:00",
        "valueQuantity": {"value": 72, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"}}),
    )
    .await;
    put(h, bp("o3", "p2", 140.0, "2024-06-01")).await;
}

fn ids(b: &Value, mode: &str) -> BTreeSet<String> {
    b["entry"]
        .as_array()
        .map(|es| {
            es.iter()
                .filter(|e| e["search"]["mode"] == mode)
                .map(|e| {
                    format!(
                        "{}/{}",
                        e["resource"]["resourceType"].as_str().unwrap(),
                        e["resource"]["id"].as_str().unwrap()
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

async fn find(h: &Harness, uri: &str) -> BTreeSet<String> {
    let r = h.call("GET", uri, None).await;
    assert_eq!(r.status, StatusCode::OK, "{uri}: {}", r.diagnostics());
    ids(&r.json(), "match").into_iter().map(|i| i.split('/').nth(1).unwrap().to_string()).collect()
}

fn set(v: &[&str]) -> BTreeSet<String> {
    v.iter().map(|s| (*s).to_string()).collect()
}

#[tokio::test]
async fn every_parameter_kind_modifier_and_prefix() {
    let h = Harness::new();
    seed(&h).await;
    let cases: &[(&str, &[&str])] = &[
        // string: prefix, ignoring case, accents, width and kana kind; whole JP names
        ("/fhir/Patient?name=やまだ", &["p1"]),
        ("/fhir/Patient?name=%E5%B1%B1%E7%94%B0%E5%A4%AA%E9%83%8E", &["p1"]), // 山田太郎
        ("/fhir/Patient?family=ﾔﾏﾀﾞ", &["p1"]),
        ("/fhir/Patient?name=ren", &["p3"]),
        ("/fhir/Patient?name=SMI", &["p3"]),
        ("/fhir/Patient?name:exact=Ren%C3%A9e", &["p3"]),
        ("/fhir/Patient?name:exact=renee", &[]),
        ("/fhir/Patient?name:contains=mit", &["p3"]),
        ("/fhir/Patient?name=不明", &[]),
        ("/fhir/Patient?name:contains=不明", &["p4"]),
        ("/fhir/Patient?name=sato,smith", &["p3"]),
        // token
        ("/fhir/Patient?gender=female", &["p2", "p3"]),
        ("/fhir/Patient?gender:not=female", &["p1", "p4"]),
        ("/fhir/Patient?identifier=urn:oid:1.2.392.100495.20.3.51.1|00012345", &["p1"]),
        ("/fhir/Patient?identifier=00012345", &["p1"]),
        ("/fhir/Patient?identifier=urn:other|00012345", &[]),
        ("/fhir/Observation?code=http://loinc.org|", &["o1", "o2", "o3"]),
        ("/fhir/Observation?code:text=systolic", &["o1", "o3"]),
        // date with prefixes and precision
        ("/fhir/Patient?birthdate=1970", &["p1"]),
        ("/fhir/Patient?birthdate=1970-04-01", &["p1"]),
        ("/fhir/Patient?birthdate=lt1980", &["p1"]),
        ("/fhir/Patient?birthdate=ge1985-12", &["p2", "p3"]),
        ("/fhir/Patient?birthdate=gt1985-12-24", &["p3"]),
        ("/fhir/Patient?birthdate=le1985-12-24", &["p1", "p2"]),
        ("/fhir/Patient?birthdate=sa1985", &["p3"]),
        ("/fhir/Patient?birthdate=eb1985", &["p1"]),
        ("/fhir/Patient?birthdate=ne1970-04-01", &["p2", "p3"]),
        ("/fhir/Patient?birthdate=ap1970-04-03", &["p1"]),
        ("/fhir/Patient?birthdate=ge1980&birthdate=lt1990", &["p2"]),
        ("/fhir/Patient?birthdate:missing=true", &["p4"]),
        ("/fhir/Observation?date=2024-05", &["o1", "o2"]),
        ("/fhir/Observation?date=2024-05-01T00:00:00Z", &["o1"]), // 09:00+09:00, to the second
        ("/fhir/Observation?date=2024-05-01T00:00:01Z", &[]),
        ("/fhir/Observation?date=ge2024-05-01T00:00:00%2B09:00", &["o1", "o2", "o3"]),
        // quantity
        ("/fhir/Observation?value-quantity=gt130", &["o3"]),
        ("/fhir/Observation?value-quantity=120||mm[Hg]", &["o1"]),
        ("/fhir/Observation?value-quantity=120|http://unitsofmeasure.org|/min", &[]),
        ("/fhir/Observation?value-quantity=lt100", &["o2"]),
        ("/fhir/Observation?value-quantity=ap125", &["o1"]),
        // above a point, through the upper bound's index
        ("/fhir/Observation?value-quantity=ge120", &["o1", "o3"]),
        ("/fhir/Observation?value-quantity=gt140", &[]),
        ("/fhir/Observation?value-quantity=eb100", &["o2"]),
        ("/fhir/Observation?value-quantity=gt130,ge72", &["o1", "o2", "o3"]),
        ("/fhir/Observation?value-quantity=gt130,lt80", &["o2", "o3"]),
        ("/fhir/Observation?date=gt2024-05-15", &["o3"]),
        ("/fhir/Observation?date=eb2024-05-02", &["o1", "o2"]),
        ("/fhir/Patient?birthdate=gt1970-04-01", &["p2", "p3"]),
        // checked per candidate (a reference drives), by the resource's key
        ("/fhir/Observation?subject=Patient/p1&value-quantity=gt100", &["o1"]),
        ("/fhir/Observation?subject=Patient/p1&value-quantity=ge72&date=eb2024-05-02", &["o1", "o2"]),
        ("/fhir/Observation?subject=Patient/p2&date=gt2024-05-15", &["o3"]),
        // reference, chained, _has
        ("/fhir/Observation?patient=p1&code=8480-6", &["o1"]),
        ("/fhir/Observation?subject=Patient/p2", &["o3"]),
        ("/fhir/Observation?subject:Patient=p2", &["o3"]),
        ("/fhir/Observation?subject=http://mamori.test/fhir/Patient/p2", &["o3"]),
        ("/fhir/Observation?subject:Patient.name=%E4%BD%90%E8%97%A4", &["o3"]), // 佐藤
        ("/fhir/Observation?patient.gender=male", &["o1", "o2"]),
        ("/fhir/Patient?general-practitioner.name=医師", &["p1"]),
        ("/fhir/Patient?_has:Observation:patient:code=8867-4", &["p1"]),
        ("/fhir/Patient?_has:Observation:patient:value-quantity=gt130", &["p2"]),
        // composite
        ("/fhir/Observation?code-value-quantity=http://loinc.org|8480-6$gt130", &["o3"]),
        ("/fhir/Observation?code-value-quantity=8480-6$lt130", &["o1"]),
        // common parameters
        ("/fhir/Patient?_id=p1,p2", &["p1", "p2"]),
        ("/fhir/Observation?_lastUpdated=gt2000-01-01", &["o1", "o2", "o3"]),
        ("/fhir/Observation?_lastUpdated=lt2000-01-01", &[]),
    ];
    for (uri, want) in cases {
        assert_eq!(find(&h, uri).await, set(want), "{uri}");
    }
    // POST _search takes the same parameters as a form.
    let req = Request::builder()
        .method("POST")
        .uri("/fhir/Observation/_search?code=8480-6")
        .header("authorization", format!("Bearer {}", h.token))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from("patient=p1"))
        .unwrap();
    let r = h.send(req).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.diagnostics());
    assert_eq!(ids(&r.json(), "match"), set(&["Observation/o1"]));
    let req = Request::builder()
        .method("POST")
        .uri("/fhir/Observation/_search")
        .header("authorization", format!("Bearer {}", h.token))
        .header("content-type", "application/json")
        .body(Body::from("{}"))
        .unwrap();
    assert_eq!(h.send(req).await.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let req = Request::builder()
        .method("POST")
        .uri("/fhir/Observation/_search")
        .header("authorization", format!("Bearer {}", h.token))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("content-length", (16 * 1024 * 1024 + 1).to_string())
        .body(Body::from("patient=p1"))
        .unwrap();
    let r = h.send(req).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.json()["resourceType"], "OperationOutcome");

    // The index follows every write: an update replaces rows, a deletion removes them.
    put(
        &h,
        json!({"resourceType": "Patient", "id": "p2", "name": [{"family": "鈴木", "given": ["花子"]}],
        "gender": "female", "birthDate": "1985-12-24"}),
    )
    .await;
    assert_eq!(find(&h, "/fhir/Patient?family=佐藤").await, set(&[]));
    assert_eq!(find(&h, "/fhir/Patient?family=鈴木").await, set(&["p2"]));
    assert!(h.call("DELETE", "/fhir/Observation/o3", None).await.status.is_success());
    assert_eq!(find(&h, "/fhir/Observation?value-quantity=gt130").await, set(&[]));
    assert_eq!(find(&h, "/fhir/Patient?_has:Observation:patient:value-quantity=gt130").await, set(&[]));
    // A deleted resource is found by no query shape: driven by an index (which reads no version),
    // by `_id`, with the version's time, or counted.
    assert_eq!(find(&h, "/fhir/Observation?code=http://loinc.org|").await, set(&["o1", "o2"]));
    assert_eq!(find(&h, "/fhir/Observation?patient=p2").await, set(&[]));
    assert_eq!(find(&h, "/fhir/Observation?_id=o3").await, set(&[]));
    assert_eq!(find(&h, "/fhir/Observation?code=http://loinc.org|&_sort=-_lastUpdated").await, set(&["o1", "o2"]));
    assert_eq!(find(&h, "/fhir/Observation?_lastUpdated=gt2000").await, set(&["o1", "o2"]));
    let r = h.call("GET", "/fhir/Observation?code=http://loinc.org|&_total=accurate&_count=1", None).await;
    assert_eq!(r.json()["total"], 2);
}

/// Parameters answered from other parameters' rows (`combo-*` from the plain and `component-*`
/// ones, `patient` from the `subject` rows that point at a Patient) find what their definitions
/// say, in every place a parameter is used: criteria, `:missing`, chains, `_has`, `_sort`,
/// `_include` and `_revinclude`.
/// Date and number ranges answer every prefix by both of their ends, including a Period and a
/// Range that end before they start (R4's per-1 and rng-2 forbid them; stored as the range
/// between their ends, which the searches' bounds rely on — schema step 7 turns the rows an
/// older store kept). The answers are worked out by hand from R4's definition of each prefix.
#[tokio::test]
async fn ranges_answer_by_both_ends_and_inverted_ones_are_turned() {
    let h = Harness::new();
    put(&h, json!({"resourceType": "Patient", "id": "rp", "name": [{"family": "範囲"}]})).await;
    let enc = |id: &str, period: Value| {
        json!({"resourceType": "Encounter", "id": id, "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "subject": {"reference": "Patient/rp"}, "period": period})
    };
    put(&h, enc("e1", json!({"start": "2024-05-01T10:00:00Z", "end": "2024-05-03T12:00:00Z"}))).await;
    put(&h, enc("e2", json!({"start": "2024-06-10", "end": "2024-06-01"}))).await; // inverted
    put(&h, enc("e3", json!({"start": "2024-07-01"}))).await;
    put(&h, enc("e4", json!({"end": "2024-04-01"}))).await;
    let risk = |id: &str, prediction: Value| {
        json!({"resourceType": "RiskAssessment", "id": id, "status": "final",
            "subject": {"reference": "Patient/rp"}, "prediction": [prediction]})
    };
    put(&h, risk("r1", json!({"probabilityDecimal": 0.3}))).await;
    put(&h, risk("r2", json!({"probabilityRange": {"low": {"value": 0.2}, "high": {"value": 0.4}}}))).await;
    put(&h, risk("r3", json!({"probabilityRange": {"low": {"value": 0.9}, "high": {"value": 0.7}}}))).await; // inverted
    let cases: &[(&str, &[&str])] = &[
        ("/fhir/Encounter?date=2024", &["e1", "e2"]),
        ("/fhir/Encounter?date=2024-05", &["e1"]),
        ("/fhir/Encounter?date=2024-05-01", &[]),
        ("/fhir/Encounter?date=2024-05-01T10:00:00Z", &[]),
        ("/fhir/Encounter?date=2024-06", &["e2"]),
        ("/fhir/Encounter?date=ne2024-06", &["e1", "e3", "e4"]),
        ("/fhir/Encounter?date=ge2024-06-05", &["e2", "e3"]),
        ("/fhir/Encounter?date=le2024-06-05", &["e1", "e2", "e4"]),
        ("/fhir/Encounter?date=ge2024-05-02&date=le2024-05-02", &["e1"]),
        ("/fhir/Encounter?date=gt2024-06-30", &["e3"]),
        ("/fhir/Encounter?date=lt2024-05-02", &["e1", "e4"]),
        ("/fhir/Encounter?date=sa2024-06-30", &["e3"]),
        ("/fhir/Encounter?date=eb2024-05-01", &["e4"]),
        ("/fhir/Encounter?subject=Patient/rp&date=le2024-06-05", &["e1", "e2", "e4"]),
        ("/fhir/RiskAssessment?probability=0.3", &["r1"]),
        ("/fhir/RiskAssessment?probability=0.8", &[]),
        ("/fhir/RiskAssessment?probability=gt0.8", &["r3"]),
        ("/fhir/RiskAssessment?probability=lt0.75", &["r1", "r2", "r3"]),
        ("/fhir/RiskAssessment?probability=ge0.4", &["r2", "r3"]),
        ("/fhir/RiskAssessment?probability=le0.2", &["r2"]),
        ("/fhir/RiskAssessment?probability=eb0.25", &[]),
        ("/fhir/RiskAssessment?probability=sa0.35", &["r3"]),
        ("/fhir/RiskAssessment?subject=Patient/rp&probability=lt0.75", &["r1", "r2", "r3"]),
    ];
    let check = |label: &'static str| {
        let h = &h;
        async move {
            for (uri, want) in cases {
                assert_eq!(find(h, uri).await, set(want), "{label}: {uri}");
            }
        }
    };
    check("as written").await;

    // The rows an older store kept for the two inverted values: its searches miss them where
    // the new bounds apply, until opening the store again turns them (step 7 and after).
    let db = crate::support::RawDb::at(h.dir.path());
    db.exec_both(
        "UPDATE sp_date SET lo = hi, hi = lo WHERE type = 'Encounter' AND id = 'e2';
         UPDATE sp_number SET lo = hi, hi = lo WHERE type = 'RiskAssessment' AND id = 'r3';
         DELETE FROM mamori_schema WHERE version >= 7",
    )
    .unwrap();
    assert_eq!(find(&h, "/fhir/Encounter?date=le2024-06-05").await, set(&["e1", "e4"]));
    assert_eq!(find(&h, "/fhir/RiskAssessment?probability=lt0.75").await, set(&["r1", "r2"]));
    drop(mamori::open_node(h.dir.path()).unwrap());
    assert_eq!(db.int("SELECT COUNT(*) FROM sp_date WHERE lo > hi"), 0);
    assert_eq!(db.int("SELECT COUNT(*) FROM sp_number WHERE lo > hi"), 0);
    check("after the upgrade").await;
}

#[tokio::test]
async fn parameters_answered_from_other_rows() {
    let h = Harness::new();
    seed(&h).await;
    put(&h, json!({"resourceType": "Group", "id": "g1", "type": "person", "actual": true})).await;
    // A blood-pressure panel about a group: its values are in components only.
    put(
        &h,
        json!({"resourceType": "Observation", "id": "o4", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
        "subject": {"reference": "Group/g1"}, "effectiveDateTime": "2024-07-01",
        "component": [{"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
            "valueQuantity": {"value": 150, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}}]}),
    )
    .await;
    let cases: &[(&str, &[&str])] = &[
        ("/fhir/Observation?code=8480-6", &["o1", "o3"]),
        ("/fhir/Observation?component-code=8480-6", &["o4"]),
        ("/fhir/Observation?combo-code=8480-6", &["o1", "o3", "o4"]),
        ("/fhir/Observation?combo-code=85354-9", &["o4"]),
        ("/fhir/Observation?combo-code:missing=true", &[]),
        ("/fhir/Observation?value-quantity=gt130", &["o3"]),
        ("/fhir/Observation?combo-value-quantity=gt130", &["o3", "o4"]),
        ("/fhir/Observation?combo-value-quantity:missing=true", &[]),
        ("/fhir/Observation?value-quantity:missing=true", &["o4"]),
        ("/fhir/Observation?combo-code-value-quantity=8480-6$gt145", &["o4"]),
        ("/fhir/Observation?combo-code-value-quantity=8480-6$lt130", &["o1"]),
        ("/fhir/Observation?code-value-quantity=8480-6$gt145", &[]),
        ("/fhir/Observation?patient=p1", &["o1", "o2"]),
        ("/fhir/Observation?patient=g1", &[]),
        ("/fhir/Observation?subject=g1", &["o4"]),
        ("/fhir/Observation?patient:missing=true", &["o4"]),
        ("/fhir/Observation?patient:missing=false", &["o1", "o2", "o3"]),
        ("/fhir/Observation?patient.gender=female", &["o3"]),
        ("/fhir/Observation?patient:Patient.gender=female", &["o3"]),
        ("/fhir/Patient?_has:Observation:patient:combo-code=8867-4", &["p1"]),
        ("/fhir/Group?_has:Observation:patient:code=85354-9", &[]),
        ("/fhir/Group?_has:Observation:subject:code=85354-9", &["g1"]),
    ];
    for (uri, want) in cases {
        assert_eq!(find(&h, uri).await, set(want), "{uri}");
    }
    // Sorted by patient: the Observation with none sorts last.
    let b = h.call("GET", "/fhir/Observation?_sort=patient,_id", None).await.json();
    assert_eq!(page_ids(&b), ["o1", "o2", "o3", "o4"], "{b}");
    let b = h.call("GET", "/fhir/Observation?_sort=-combo-value-quantity", None).await.json();
    assert_eq!(page_ids(&b), ["o4", "o3", "o1", "o2"], "{b}");
    // _include and _revinclude of `patient` see Patient targets only.
    let b = h.call("GET", "/fhir/Observation?_include=Observation:patient", None).await.json();
    assert_eq!(ids(&b, "include"), set(&["Patient/p1", "Patient/p2"]));
    let b = h.call("GET", "/fhir/Observation?_include=Observation:subject", None).await.json();
    assert_eq!(ids(&b, "include"), set(&["Patient/p1", "Patient/p2", "Group/g1"]));
    let b = h.call("GET", "/fhir/Group?_revinclude=Observation:patient", None).await.json();
    assert!(ids(&b, "include").is_empty(), "{b}");
    let b = h.call("GET", "/fhir/Group?_revinclude=Observation:subject", None).await.json();
    assert_eq!(ids(&b, "include"), set(&["Observation/o4"]));
    let b = h.call("GET", "/fhir/Patient?_id=p2&_revinclude=Observation:patient", None).await.json();
    assert_eq!(ids(&b, "include"), set(&["Observation/o3"]));
}

#[tokio::test]
async fn result_parameters_includes_and_handling() {
    let h = Harness::new();
    seed(&h).await;
    // A whole resource in a searchset is the stored one, byte for byte as a read returns it
    // (spliced in, not parsed and written again); a subset is still a subset.
    let read = h.call("GET", "/fhir/Patient/p1", None).await;
    let r = h.call("GET", "/fhir/Patient?_id=p1&_include=Patient:general-practitioner", None).await;
    assert_eq!(r.status, StatusCode::OK);
    let text = String::from_utf8(r.body.clone()).unwrap();
    assert!(text.contains(std::str::from_utf8(&read.body).unwrap()), "{text}");
    assert_eq!(r.json()["entry"][0]["resource"], read.json());
    let b = h.call("GET", "/fhir/Patient?_id=p1&_elements=gender", None).await.json();
    assert!(b["entry"][0]["resource"].get("name").is_none() && b["entry"][0]["resource"]["gender"].is_string(), "{b}");
    let b = h.call("GET", "/fhir/Patient?_id=p1&bogus=1", None).await.json();
    assert_eq!(b["entry"].as_array().map(Vec::len), Some(2), "the match and the outcome: {b}");
    // _include, _revinclude (with the server's own Provenance), :iterate one level
    let b = h.call("GET", "/fhir/Observation?code=8480-6&_include=Observation:patient", None).await.json();
    assert_eq!(ids(&b, "match"), set(&["Observation/o1", "Observation/o3"]));
    assert_eq!(ids(&b, "include"), set(&["Patient/p1", "Patient/p2"]));
    let b = h.call("GET", "/fhir/Patient?_id=p1&_revinclude=Observation:subject", None).await.json();
    assert_eq!(ids(&b, "include"), set(&["Observation/o1", "Observation/o2"]));
    let b = h.call("GET", "/fhir/Patient?_id=p1&_revinclude=Provenance:target", None).await.json();
    assert_eq!(ids(&b, "include").len(), 1, "the Provenance of p1's one version: {b}");
    let b = h
        .call(
            "GET",
            "/fhir/Observation?_id=o1&_include=Observation:patient&_include:iterate=Patient:general-practitioner",
            None,
        )
        .await
        .json();
    assert_eq!(ids(&b, "include"), set(&["Patient/p1", "Practitioner/dr1"]));
    let b = h.call("GET", "/fhir/Observation?_id=o1&_include=Observation:subject:Group", None).await.json();
    assert!(ids(&b, "include").is_empty());

    // _summary and _elements
    let b = h.call("GET", "/fhir/Patient?_summary=count", None).await.json();
    assert_eq!(b["total"], 4);
    assert!(b["entry"].as_array().is_none_or(Vec::is_empty));
    let b = h.call("GET", "/fhir/Patient?_id=p1&_elements=birthDate", None).await.json();
    let p = &b["entry"][0]["resource"];
    assert_eq!(p["birthDate"], "1970-04-01");
    assert!(p.get("name").is_none() && p.get("gender").is_none());
    assert_eq!(p["meta"]["tag"][0]["code"], "SUBSETTED");
    let b = h.call("GET", "/fhir/Patient?_id=p1&_summary=true", None).await.json();
    assert!(b["entry"][0]["resource"].get("name").is_some());

    // _sort with several keys, descending, missing values last
    let order = |b: &Value| -> Vec<String> {
        b["entry"].as_array().unwrap().iter().map(|e| e["resource"]["id"].as_str().unwrap().to_string()).collect()
    };
    let b = h.call("GET", "/fhir/Patient?_sort=-birthdate", None).await.json();
    assert_eq!(order(&b), ["p3", "p2", "p1", "p4"]);
    let b = h.call("GET", "/fhir/Patient?_sort=gender,-birthdate", None).await.json();
    assert_eq!(order(&b), ["p3", "p2", "p1", "p4"]);
    let b = h.call("GET", "/fhir/Patient?_sort=birthdate", None).await.json();
    assert_eq!(order(&b), ["p1", "p2", "p3", "p4"]);
    let b = h.call("GET", "/fhir/Patient?_sort=family", None).await.json();
    assert_eq!(order(&b)[0], "p3", "smith < ヤマダ/佐藤/山田 in code-point order");

    // _total
    let b = h.call("GET", "/fhir/Patient?_count=1&_total=accurate", None).await.json();
    assert_eq!(b["total"], 4);
    assert_eq!(b["entry"].as_array().unwrap().len(), 1);
    let b = h.call("GET", "/fhir/Patient?_count=1&_total=none", None).await.json();
    assert!(b.get("total").is_none());

    // Lenient by default: unknown parameters are ignored and said so; strict refuses them.
    let b = h.call("GET", "/fhir/Patient?nonsense=1&gender=male", None).await.json();
    assert_eq!(ids(&b, "match"), set(&["Patient/p1"]));
    let outcome = b["entry"].as_array().unwrap().iter().find(|e| e["search"]["mode"] == "outcome").unwrap();
    assert!(outcome["resource"]["issue"][0]["diagnostics"].as_str().unwrap().contains("nonsense"));
    assert!(!b["link"][0]["url"].as_str().unwrap().contains("nonsense"), "the self link shows what was used");
    let r = h.call_with("GET", "/fhir/Patient?nonsense=1", None, &[("prefer", "handling=strict")]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["resourceType"], "OperationOutcome");
    assert!(r.diagnostics().contains("nonsense"));
    // Malformed values are refused either way, and nothing is changed by a refused search.
    for bad in [
        "/fhir/Patient?birthdate=1970-13",
        "/fhir/Patient?_count=x",
        "/fhir/Patient?_sort=nonsense",
        "/fhir/Patient?_cursor=00ff",
        "/fhir/Observation?value-quantity=abc",
        "/fhir/Patient?name=",
        "/fhir/Patient?_include=Nope:x",
        "/fhir/Observation?subject:Nope=1",
        "/fhir/Patient?name=%zz",
    ] {
        let r = h.call("GET", bad, None).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(r.json()["resourceType"], "OperationOutcome", "{bad}");
    }
    assert_eq!(find(&h, "/fhir/Patient").await.len(), 4);
}

async fn follow(h: &Harness, b: &Value, rel: &str) -> Option<Value> {
    let url = b["link"].as_array()?.iter().find(|l| l["relation"] == rel)?["url"].as_str()?.to_string();
    let path = url.strip_prefix("http://mamori.test").unwrap().to_string();
    let r: Resp = h.call("GET", &path, None).await;
    assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.diagnostics());
    Some(r.json())
}

/// The `_cursor` of a searchset's `next` link.
fn next_cursor(b: &Value) -> String {
    let url = b["link"].as_array().unwrap().iter().find(|l| l["relation"] == "next").unwrap()["url"].clone();
    url.as_str().unwrap().split("_cursor=").nth(1).unwrap().split('&').next().unwrap().to_string()
}

fn page_ids(b: &Value) -> Vec<String> {
    b["entry"]
        .as_array()
        .map(|es| es.iter().map(|e| e["resource"]["id"].as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

/// Every page of `uri`, following `next` from the first; asserts the answer is 200 and that
/// following `previous` back from the last page gives the same matches in the same order.
/// Returns the first page's bundle and the ids page by page.
async fn pages_both_ways(h: &Harness, uri: &str) -> (Value, Vec<Vec<String>>) {
    let r = h.call("GET", uri, None).await;
    assert_eq!(r.status, StatusCode::OK, "{uri}: {}", r.diagnostics());
    let first = r.json();
    let mut page = first.clone();
    let mut pages = vec![page_ids(&page)];
    while let Some(next) = follow(h, &page, "next").await {
        pages.push(page_ids(&next));
        page = next;
    }
    let mut back = vec![page_ids(&page)];
    while let Some(previous) = follow(h, &page, "previous").await {
        back.push(page_ids(&previous));
        page = previous;
    }
    back.reverse();
    assert_eq!(back.concat(), pages.concat(), "{uri} (backwards)");
    (first, pages)
}

/// A date or number range alone is listed by the bound its index seeks (`hi` for `gt`, `ge`,
/// `eb`; else `lo`), each resource once at its least matching row, then by id — page by page
/// both ways, through an open end (an infinite or unbounded key in the cursor); beside another
/// criterion the order is by id as before. Orders worked out by hand.
#[tokio::test]
async fn ranges_alone_list_by_their_matching_bound() {
    let h = Harness::new();
    put(&h, json!({"resourceType": "Patient", "id": "rp", "name": [{"family": "順序"}]})).await;
    let risk = |id: &str, predictions: Value| {
        json!({"resourceType": "RiskAssessment", "id": id, "status": "final",
            "subject": {"reference": "Patient/rp"}, "prediction": predictions})
    };
    let p = |v: f64| json!({"probabilityDecimal": v});
    let range = |low: f64, high: Option<f64>| match high {
        Some(hv) => json!({"probabilityRange": {"low": {"value": low}, "high": {"value": hv}}}),
        None => json!({"probabilityRange": {"low": {"value": low}}}),
    };
    put(&h, risk("ra1", json!([p(0.5)]))).await;
    put(&h, risk("ra2", json!([p(0.2), p(0.8)]))).await;
    put(&h, risk("ra3", json!([range(0.3, Some(0.6))]))).await;
    put(&h, risk("ra4", json!([p(0.8)]))).await;
    put(&h, risk("ra5", json!([p(0.1), p(0.5)]))).await;
    put(&h, risk("ra6", json!([range(0.7, None)]))).await; // up to +infinity
    put(&h, risk("ra7", json!([p(0.5)]))).await;
    let enc = |id: &str, period: Value| {
        json!({"resourceType": "Encounter", "id": id, "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "subject": {"reference": "Patient/rp"}, "period": period})
    };
    put(&h, enc("en1", json!({"start": "2024-05-01T10:00:00Z", "end": "2024-05-03T12:00:00Z"}))).await;
    put(&h, enc("en2", json!({"start": "2024-05-02", "end": "2024-05-02"}))).await;
    put(&h, enc("en3", json!({"start": "2024-05-02T08:00:00Z"}))).await;
    put(&h, enc("en4", json!({"end": "2024-05-01"}))).await;
    for (query, want) in [
        // by hi: 0.5 (ra1, ra5 at its 0.5, ra7), 0.6, 0.8 (ra2 at its 0.8, ra4), +inf; 0.1, 0.2
        ("RiskAssessment?probability=gt0.4", vec!["ra1", "ra5", "ra7", "ra3", "ra2", "ra4", "ra6"]),
        ("RiskAssessment?probability=ge0.8", vec!["ra2", "ra4", "ra6"]),
        ("RiskAssessment?probability=eb0.25", vec!["ra5", "ra2"]),
        // by lo: 0.1 (ra5 at its least), 0.2, 0.3, 0.5 (ra1, ra7); 0.7, 0.8
        ("RiskAssessment?probability=lt0.55", vec!["ra5", "ra2", "ra3", "ra1", "ra7"]),
        ("RiskAssessment?probability=0.5", vec!["ra1", "ra5", "ra7"]),
        ("RiskAssessment?probability=sa0.65", vec!["ra6", "ra2", "ra4"]),
        // by hi: the day itself, then 05-03T12, then unbounded
        ("Encounter?date=ge2024-05-02", vec!["en2", "en1", "en3"]),
        // by lo: unbounded, then 05-01T10, then the day
        ("Encounter?date=le2024-05-02", vec!["en4", "en1", "en2"]),
        ("Encounter?date=2024-05", vec!["en1", "en2"]),
        // beside another criterion: by id
        ("RiskAssessment?probability=gt0.4&subject=Patient/rp", vec!["ra1", "ra2", "ra3", "ra4", "ra5", "ra6", "ra7"]),
        ("Encounter?date=le2024-05-02&subject=Patient/rp", vec!["en1", "en2", "en4"]),
    ] {
        for count in [1, 2, 3, 10] {
            let uri = format!("/fhir/{query}&_count={count}&_total=accurate");
            let (first, pages) = pages_both_ways(&h, &uri).await;
            assert_eq!(pages.concat(), want, "{uri}");
            assert_eq!(first["total"], json!(want.len()), "{uri}");
            assert!(pages.iter().all(|p| p.len() <= count), "{uri}");
        }
    }
    // A cursor of one order is refused by another (a number's by a date search, and back).
    let by_number = next_cursor(&h.call("GET", "/fhir/RiskAssessment?probability=gt0.4&_count=1", None).await.json());
    let by_date = next_cursor(&h.call("GET", "/fhir/Encounter?date=ge2024-05-02&_count=1", None).await.json());
    for bad in [
        format!("/fhir/Encounter?date=ge2024-05-02&_cursor={by_number}"),
        format!("/fhir/RiskAssessment?probability=gt0.4&_cursor={by_date}"),
    ] {
        let r = h.call("GET", &bad, None).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}");
        assert!(r.diagnostics().contains("_cursor"), "{bad}");
    }
}

#[tokio::test]
async fn paging_is_stable_under_concurrent_writes() {
    let h = Harness::new();
    for i in 0..25 {
        put(&h, json!({"resourceType": "Patient", "id": format!("pt{i:02}"), "gender": if i % 2 == 0 { "male" } else { "female" },
            "birthDate": format!("19{:02}-01-01", 50 + i % 7)}))
        .await;
    }
    for sort in ["", "&_sort=-birthdate,gender", "&_sort=_lastUpdated"] {
        let first = h.call("GET", &format!("/fhir/Patient?_count=4{sort}"), None).await.json();
        assert!(first["link"].as_array().unwrap().iter().all(|l| l["relation"] != "previous"));
        let mut seen = page_ids(&first);
        let mut page = first.clone();
        let mut pages = vec![page_ids(&first)];
        // A write between pages: a new patient sorting first, and an update of one already seen.
        put(&h, json!({"resourceType": "Patient", "id": format!("a-new{}", pages.len() + sort.len()), "birthDate": "2020-01-01"}))
            .await;
        while let Some(next) = follow(&h, &page, "next").await {
            seen.extend(page_ids(&next));
            pages.push(page_ids(&next));
            page = next;
        }
        let originals: Vec<&String> = seen.iter().filter(|i| i.starts_with("pt")).collect();
        let unique: BTreeSet<&String> = originals.iter().copied().collect();
        assert_eq!(originals.len(), 25, "{sort}: every original once: {pages:?}");
        assert_eq!(unique.len(), 25, "{sort}: no duplicates: {pages:?}");
        // previous from the last page gives the page before it again
        let prev = follow(&h, &page, "previous").await.unwrap();
        assert_eq!(page_ids(&prev), pages[pages.len() - 2], "{sort}");
        let again = follow(&h, &prev, "next").await.unwrap();
        assert_eq!(page_ids(&again), pages[pages.len() - 1], "{sort}");
    }
}

/// A search driven by a string prefix lists its matches by the least matching value, then id
/// (the value index's own order, so the statement stops after a page), each resource once, and
/// pages through them with the same keyset guarantees as the other orders.
#[tokio::test]
async fn name_searches_list_by_matching_value() {
    let h = Harness::new();
    let pt = |id: &str, gender: &str, families: &[&str]| {
        let names: Vec<Value> = families.iter().map(|f| json!({"family": f})).collect();
        json!({"resourceType": "Patient", "id": id, "gender": gender, "name": names})
    };
    for p in [
        pt("z1", "male", &["山田"]),
        pt("a2", "female", &["山田川"]),
        pt("m3", "female", &["山"]),
        pt("b4", "male", &["ヤマダ", "やまだ"]),
        pt("c5", "female", &["山中"]),
        pt("k6", "female", &["山田"]),
        pt("x7", "male", &["川山"]),
        pt("d8", "male", &["山本", "山"]),
    ] {
        put(&h, p).await;
    }
    let all = |uri: String| {
        let h = &h;
        async move {
            let mut page = h.call("GET", &uri, None).await.json();
            let mut pages = vec![page_ids(&page)];
            while let Some(next) = follow(h, &page, "next").await {
                pages.push(page_ids(&next));
                page = next;
            }
            (pages, page)
        }
    };
    // 山 < 山中 < 山本 < 山田 < 山田川 in code points; d8 once, at its least matching name 山.
    let (pages, last) = all("/fhir/Patient?name=%E5%B1%B1&_count=2".into()).await;
    assert_eq!(pages, [vec!["d8", "m3"], vec!["c5", "k6"], vec!["z1", "a2"]]);
    let prev = follow(&h, &last, "previous").await.unwrap();
    assert_eq!(page_ids(&prev), ["c5", "k6"]);
    assert_eq!(page_ids(&follow(&h, &prev, "previous").await.unwrap()), ["d8", "m3"]);
    // Katakana and hiragana fold alike: b4's two names are one match.
    assert_eq!(all("/fhir/Patient?name=%E3%82%84%E3%81%BE&_count=1".into()).await.0, [vec!["b4"]]);
    // Further criteria filter the ordered rows; `_sort` and totals are unchanged.
    let (pages, _) = all("/fhir/Patient?name=%E5%B1%B1&gender=female&_count=2".into()).await;
    assert_eq!(pages, [vec!["m3", "c5"], vec!["k6", "a2"]]);
    let (pages, _) = all("/fhir/Patient?name=%E5%B1%B1&_sort=_id&_count=10".into()).await;
    assert_eq!(pages, [vec!["a2", "c5", "d8", "k6", "m3", "z1"]]);
    let b = h.call("GET", "/fhir/Patient?name=%E5%B1%B1&_count=1&_total=accurate", None).await.json();
    assert_eq!(b["total"], 6);
    // Writes between pages: a new 山 sorts before the cursor and is not listed; a renamed
    // patient appears where its new name sorts (what changed may appear again, docs/SEARCH.md);
    // nothing unchanged is skipped or repeated.
    let first = h.call("GET", "/fhir/Patient?name=%E5%B1%B1&_count=3", None).await.json();
    assert_eq!(page_ids(&first), ["d8", "m3", "c5"]);
    put(&h, pt("a0", "male", &["山"])).await;
    put(&h, pt("m3", "female", &["山田川"])).await;
    let next = follow(&h, &first, "next").await.unwrap();
    let mut rest = page_ids(&next);
    let mut page = next;
    while let Some(n) = follow(&h, &page, "next").await {
        rest.extend(page_ids(&n));
        page = n;
    }
    assert_eq!(rest, ["k6", "z1", "a2", "m3"]);
    // A cursor belongs to its search's order: one of a name search (carrying a value) on a search
    // by id, or one of a search by id on a name search, is refused rather than paged from.
    let by_name = next_cursor(&first);
    let by_id = next_cursor(&h.call("GET", "/fhir/Patient?gender=male&_count=1", None).await.json());
    for bad in [
        format!("/fhir/Patient?gender=male&_cursor={by_name}"),
        format!("/fhir/Patient?name=%E5%B1%B1&_cursor={by_id}"),
    ] {
        let r = h.call("GET", &bad, None).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}");
        assert!(r.diagnostics().contains("_cursor"), "{bad}");
    }
}

#[tokio::test]
async fn search_reveals_only_what_the_guard_allows() {
    let h = Harness::new();
    seed(&h).await;
    h.add_user("u-doc", &["doctor"], "Practitioner/dr1");
    for p in ["p1", "p2"] {
        h.create(
            &json!({"resourceType": "CareTeam", "status": "active", "subject": {"reference": format!("Patient/{p}")},
            "participant": [{"member": {"reference": "Practitioner/dr1"}}]}),
        )
        .await;
    }
    // A token in p1's context: matches, includes, revincludes, chains and totals see only p1.
    let token = h
        .node
        .oauth
        .issue_for_user_in_context(
            "test-app",
            "u-doc",
            Some("Practitioner/dr1"),
            "patient/Observation.rs patient/Patient.rs",
            Some("Patient/p1"),
            900,
            crate::support::now_secs(),
        )
        .unwrap()
        .access_token;
    let get = |uri: &'static str| {
        let t = token.clone();
        let h = &h;
        async move {
            let req =
                Request::builder().uri(uri).header("authorization", format!("Bearer {t}")).body(Body::empty()).unwrap();
            let r = h.send(req).await;
            assert_eq!(r.status, StatusCode::OK, "{uri}: {}", r.diagnostics());
            r.json()
        }
    };
    let b = get("/fhir/Observation?code=8480-6&_include=Observation:patient&_total=accurate").await;
    assert_eq!(ids(&b, "match"), set(&["Observation/o1"]));
    assert_eq!(ids(&b, "include"), set(&["Patient/p1"]));
    assert_eq!(b["total"], 1);
    let b = get("/fhir/Patient?gender=female&_revinclude=Observation:patient").await;
    assert!(ids(&b, "match").is_empty() && ids(&b, "include").is_empty(), "{b}");
    let b = get("/fhir/Patient?_id=p1&_revinclude=Observation:patient").await;
    assert_eq!(ids(&b, "include"), set(&["Observation/o1", "Observation/o2"]));
    let b = get("/fhir/Observation?_count=1").await;
    assert_eq!(ids(&b, "match").len(), 1);
    let b = get("/fhir/Observation?_summary=count").await;
    assert_eq!(b["total"], 2, "counts only what may be seen");
    // The audit entry of a search names every revealed resource and patient.
    let b = get("/fhir/Observation?patient=p1&_include=Observation:patient").await;
    assert_eq!(ids(&b, "match").len(), 2);
}

#[tokio::test]
async fn data_written_before_search_is_reindexed_on_open() {
    let tmp = tempfile::tempdir().unwrap();
    let db;
    {
        let (node, d) = crate::support::open_node(tmp.path());
        db = d;
        crate::support::register_client(&node, "test-app", "system/*.cruds");
        let h = Harness::from_node(tempfile::tempdir().unwrap(), node);
        put(&h, json!({"resourceType": "Patient", "id": "old", "name": [{"family": "古川"}]})).await;
    }
    {
        // As a store from before search: no rows, no index version.
        let c = crate::support::RawDb::at(tmp.path());
        c.exec_both("DELETE FROM sp_string; DELETE FROM sp_token; DELETE FROM sp_date; DELETE FROM sp_ref; DELETE FROM store_flags WHERE name = 'index_version';").unwrap();
    }
    let node = mamori::open_node(tmp.path()).unwrap();
    crate::support::register_client(&node, "test-app", "system/*.cruds");
    let h = Harness::from_node(tmp, node).with_db(db);
    assert_eq!(find(&h, "/fhir/Patient?family=古川").await, set(&["old"]));
}

#[tokio::test]
async fn variant_kanji_in_names_match_their_standard_form() {
    let h = Harness::new();
    for (id, family) in [("v1", "髙橋"), ("v2", "山﨑"), ("v3", "齋藤"), ("v4", "渡邊"), ("v5", "𠮷田"), ("v6", "斉藤")]
    {
        put(&h, json!({"resourceType": "Patient", "id": id, "name": [{"family": family}]})).await;
    }
    let q = |s: &str| format!("/fhir/Patient?family={}", crate::support::enc(s));
    assert_eq!(find(&h, &q("高橋")).await, set(&["v1"]));
    assert_eq!(find(&h, &q("髙橋")).await, set(&["v1"]), "either form finds it");
    assert_eq!(find(&h, &q("山崎")).await, set(&["v2"]));
    assert_eq!(find(&h, &q("斎藤")).await, set(&["v3"]), "斉藤 is another name, not a variant");
    assert_eq!(find(&h, &q("渡辺")).await, set(&["v4"]));
    assert_eq!(find(&h, &q("渡邉")).await, set(&["v4"]));
    assert_eq!(find(&h, &q("吉田")).await, set(&["v5"]));
    assert_eq!(find(&h, &format!("/fhir/Patient?name:contains={}", crate::support::enc("崎"))).await, set(&["v2"]));
    // :exact compares the value as written.
    assert_eq!(find(&h, &format!("/fhir/Patient?family:exact={}", crate::support::enc("髙橋"))).await, set(&["v1"]));
    assert!(find(&h, &format!("/fhir/Patient?family:exact={}", crate::support::enc("高橋"))).await.is_empty());
}

#[tokio::test]
async fn names_indexed_before_variant_folding_are_reindexed_on_open() {
    let tmp = tempfile::tempdir().unwrap();
    let db;
    {
        let (node, d) = crate::support::open_node(tmp.path());
        db = d;
        crate::support::register_client(&node, "test-app", "system/*.cruds");
        let h = Harness::from_node(tempfile::tempdir().unwrap(), node);
        put(&h, json!({"resourceType": "Patient", "id": "old", "name": [{"family": "髙橋"}]})).await;
    }
    {
        // As the previous index format left it: the variant itself in the normal form.
        let c = crate::support::RawDb::at(tmp.path());
        c.exec_both("UPDATE sp_string SET norm = '髙橋' WHERE norm = '高橋'; UPDATE store_flags SET value = 'search-2' WHERE name = 'index_version';").unwrap();
    }
    let node = mamori::open_node(tmp.path()).unwrap();
    crate::support::register_client(&node, "test-app", "system/*.cruds");
    let h = Harness::from_node(tmp, node).with_db(db);
    assert_eq!(find(&h, &format!("/fhir/Patient?family={}", crate::support::enc("高橋"))).await, set(&["old"]));
}

/// Every string modifier (#29), against its definition computed here from the data: the plain
/// (prefix) form, `:exact`, `:contains`, `:missing`, a token's `:text`, a chain and `_has`, on
/// a mixed Japanese/ASCII set with kana, width and case variants, accents, variant kanji, LIKE's
/// own characters and values of one to many characters. Every page is followed; the matches
/// and their order must be exactly the definition's (prefix: by least matching value then id;
/// the rest: by id), whichever index answers.
#[tokio::test]
async fn string_modifiers_match_their_definition() {
    use mamori_records::search::normalize::string as norm;
    let h = Harness::new();
    const FAMILIES: [&str; 30] = [
        "山田",
        "ヤマダ",
        "ﾔﾏﾀﾞ",
        "やまだ",
        "山田川",
        "川山",
        "山",
        "髙橋",
        "高橋",
        "橋本",
        "佐藤",
        "Smith",
        "SMITH",
        "ＳＭＩＴＨ",
        "Smithers",
        "Goldsmith",
        "Renée",
        "Renee",
        "O'Brien",
        "a%b",
        "a_b",
        "ab",
        "a\\b",
        "田",
        "de la Cruz",
        "Ōno",
        "Yamada",
        "axb",
        "山田太郎",
        "ﾀﾅｶ",
    ];
    const GIVENS: [&str; 12] =
        ["太郎", "タロウ", "ﾀﾛｳ", "taro", "Taro", "花子", "優子", "ゆうこ", "Ichirō", "", "子", "Ｔａｒｏ"];
    // (family, given) per patient; some have a second name, some no given name.
    let mut people: Vec<(String, Vec<(String, String)>)> = Vec::new();
    for i in 0..96usize {
        let mut names = vec![(FAMILIES[i % FAMILIES.len()].to_string(), GIVENS[(i * 7) % GIVENS.len()].to_string())];
        if i % 5 == 0 {
            names
                .push((FAMILIES[(i * 3 + 1) % FAMILIES.len()].to_string(), GIVENS[(i + 4) % GIVENS.len()].to_string()));
        }
        people.push((format!("p{i:03}"), names));
    }
    for (id, names) in &people {
        let names: Vec<Value> = names
            .iter()
            .map(|(f, g)| if g.is_empty() { json!({"family": f}) } else { json!({"family": f, "given": [g]}) })
            .collect();
        put(&h, json!({"resourceType": "Patient", "id": id, "name": names})).await;
    }
    const DISPLAYS: [&str; 7] =
        ["Systolic blood pressure", "Heart rate", "体温", "血圧（収縮期）", "ｹﾂｱﾂ", "Body weight", "けつあつ"];
    let mut observations: Vec<(String, String, String)> = Vec::new(); // (id, subject, display)
    for i in 0..28usize {
        let (id, subject, display) =
            (format!("o{i:03}"), format!("p{:03}", (i * 3) % 96), DISPLAYS[i % DISPLAYS.len()]);
        let code = if i % 4 == 3 {
            json!({"text": display})
        } else {
            json!({"coding": [{"system": "http://loinc.org", "code": format!("c{}", i % 7), "display": display}]})
        };
        put(
            &h,
            json!({"resourceType": "Observation", "id": id, "status": "final", "code": code,
            "subject": {"reference": format!("Patient/{subject}")}}),
        )
        .await;
        observations.push((id, subject, display.to_string()));
    }

    // The values each parameter has, per patient.
    let values = |param: &str, names: &[(String, String)]| -> Vec<String> {
        let mut out = Vec::new();
        for (f, g) in names {
            match param {
                "family" => out.push(f.clone()),
                "given" if !g.is_empty() => out.push(g.clone()),
                "name" => {
                    out.push(f.clone());
                    if !g.is_empty() {
                        out.push(g.clone());
                        out.push(format!("{f}{g}"));
                    }
                }
                _ => {}
            }
        }
        out
    };
    let all_pages = |uri: String| {
        let h = &h;
        async move { pages_both_ways(h, &uri).await.1.concat() }
    };
    // A search value escapes FHIR's own `\`, `,`, `$` and `|` (R4 3.1.1.5.8).
    let escaped = |v: &str| {
        crate::support::enc(&v.replace('\\', "\\\\").replace(',', "\\,").replace('$', "\\$").replace('|', "\\|"))
    };
    let needles = [
        "山",
        "山田",
        "山田太",
        "田太郎",
        "やま",
        "ヤマダ",
        "ﾔﾏﾀﾞ",
        "ＳＭＩ",
        "smi",
        "mit",
        "Smith",
        "SMITH",
        "rené",
        "enee",
        "ee",
        "e",
        "髙橋",
        "高橋",
        "橋",
        "a%b",
        "a_b",
        "_",
        "%",
        "\\",
        "a\\b",
        "o'",
        "tar",
        "taro",
        "ﾀﾛ",
        "太郎",
        "ゆうこ",
        "子",
        "de la",
        "delacruz",
        "ōno",
        "ono",
        "zzz",
        "たなか",
        "ﾀﾅｶ",
    ];
    let every = people.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>().join(",");
    let mut checked = 0;
    for param in ["family", "given", "name"] {
        for needle in needles {
            let q = norm(needle);
            // Plain: starts with, listed by the least matching value, then id.
            let mut prefix: Vec<(String, String)> = people
                .iter()
                .filter_map(|(id, names)| {
                    values(param, names)
                        .iter()
                        .map(|v| norm(v))
                        .filter(|v| v.starts_with(&q))
                        .min()
                        .map(|m| (m, id.clone()))
                })
                .collect();
            prefix.sort();
            let by_id = |keep: &dyn Fn(&str) -> bool| -> Vec<String> {
                people
                    .iter()
                    .filter(|(_, names)| values(param, names).iter().any(|v| keep(v)))
                    .map(|(id, _)| id.clone())
                    .collect()
            };
            let cases = [
                (String::new(), prefix.into_iter().map(|(_, id)| id).collect::<Vec<_>>()),
                (":exact".into(), by_id(&|v| v == needle)),
                (":contains".into(), by_id(&|v| norm(v).contains(&q))),
            ];
            let contains = cases[2].1.clone();
            // The same value as written, with another criterion checked per candidate.
            let named: Vec<String> = cases[1]
                .1
                .iter()
                .filter(|id| people.iter().any(|(p, names)| p == *id && names.iter().any(|(_, g)| !g.is_empty())))
                .cloned()
                .collect();
            let uri = format!("/fhir/Patient?{param}:exact={}&given:missing=false&_count=3", escaped(needle));
            assert_eq!(all_pages(uri.clone()).await, named, "{uri} ({needle})");
            for (modifier, want) in cases {
                let uri = format!("/fhir/Patient?{param}{modifier}={}&_count=7", escaped(needle));
                assert_eq!(all_pages(uri.clone()).await, want, "{uri} ({needle})");
                checked += 1;
            }
            // The same substring checked per candidate (another criterion drives).
            let uri = format!("/fhir/Patient?{param}:contains={}&_id={every}&_count=7", escaped(needle));
            assert_eq!(all_pages(uri.clone()).await, contains, "{uri} ({needle})");
            // Chained: observations whose subject's value contains the needle, by id.
            let want: Vec<String> = observations
                .iter()
                .filter(|(_, s, _)| {
                    people
                        .iter()
                        .any(|(id, names)| id == s && values(param, names).iter().any(|v| norm(v).contains(&q)))
                })
                .map(|(id, _, _)| id.clone())
                .collect();
            let uri = format!("/fhir/Observation?subject:Patient.{param}:contains={}&_count=4", escaped(needle));
            assert_eq!(all_pages(uri.clone()).await, want, "{uri} ({needle})");
        }
        // Several values as written: any of them, by id.
        for pair in [["山田", "ヤマダ"], ["ﾔﾏﾀﾞ", "やまだ"], ["Smith", "Goldsmith"], ["a%b", "zzz"], ["太郎", "taro"]]
        {
            let want: Vec<String> = people
                .iter()
                .filter(|(_, names)| values(param, names).iter().any(|v| pair.contains(&v.as_str())))
                .map(|(id, _)| id.clone())
                .collect();
            let uri = format!("/fhir/Patient?{param}:exact={},{}&_count=4", escaped(pair[0]), escaped(pair[1]));
            assert_eq!(all_pages(uri.clone()).await, want, "{uri}");
            checked += 1;
        }
        for missing in [true, false] {
            let want: Vec<String> = people
                .iter()
                .filter(|(_, names)| values(param, names).is_empty() == missing)
                .map(|(id, _)| id.clone())
                .collect();
            let uri = format!("/fhir/Patient?{param}:missing={missing}&_count=20");
            assert_eq!(all_pages(uri.clone()).await, want, "{uri}");
        }
    }
    // A token's `:text` (the coding's display, or the concept's text) and `_has` over it.
    for needle in ["pressure", "PRESSURE", "rate", "体", "血圧", "けつあつ", "ｹﾂｱﾂ", "（収", "(収", "ty", "e", "zzz"]
    {
        let q = norm(needle);
        let want: Vec<String> =
            observations.iter().filter(|(_, _, d)| norm(d).contains(&q)).map(|(id, _, _)| id.clone()).collect();
        let uri = format!("/fhir/Observation?code:text={}&_count=5", crate::support::enc(needle));
        assert_eq!(all_pages(uri.clone()).await, want, "{uri}");
        let mut subjects: Vec<String> =
            observations.iter().filter(|(_, _, d)| norm(d).contains(&q)).map(|(_, s, _)| s.clone()).collect();
        subjects.sort();
        subjects.dedup();
        let uri = format!("/fhir/Patient?_has:Observation:subject:code:text={}&_count=5", crate::support::enc(needle));
        assert_eq!(all_pages(uri.clone()).await, subjects, "{uri}");
        checked += 2;
    }
    assert!(checked > 300, "{checked}");
}

/// #29: a dense substring is answered by walking the resources in id order (at most
/// `WALK_CANDIDATES` of them, then gathering if the walk found less than a page), a sparse one by
/// gathering its matches: whichever runs, every page forwards and backwards and the total are
/// exactly the definition's. 1,200 patients: `kaz` in a third of them (hundreds of distinct
/// values: walked, each page found), `vyq` in a few early ones and the last hundred (walked, short
/// of a page in the first thousand: gathered), `yq` (too short for a trigram: walked), `zzq`
/// (nowhere), and `kaz` checked per candidate when `gender` drives.
#[tokio::test]
async fn dense_substrings_walk_and_fall_back_exactly() {
    let h = Harness::new();
    let family = |i: usize| {
        if i.is_multiple_of(3) {
            format!("Kaz{i:04}")
        } else if i >= 1100 || i % 250 == 7 {
            format!("Vyq{i:04}")
        } else {
            format!("Plain{i:04}")
        }
    };
    let gender = |i: usize| if i.is_multiple_of(2) { "male" } else { "female" };
    // A batch entry writing patient `prefix` + i with its gender and family name.
    let put = |prefix: &str, i: usize, family: &str| {
        let id = format!("{prefix}{i:04}");
        json!({"resource": {"resourceType": "Patient", "id": id, "gender": gender(i), "name": [{"family": family}]},
               "request": {"method": "PUT", "url": format!("Patient/{id}")}})
    };
    const N: usize = 1200;
    for chunk in (0..N).collect::<Vec<_>>().chunks(200) {
        let entries: Vec<Value> = chunk.iter().map(|&i| put("p", i, &family(i))).collect();
        let r =
            h.call("POST", "/fhir", Some(&json!({"resourceType": "Bundle", "type": "batch", "entry": entries}))).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.diagnostics());
        let statuses: Vec<String> = r.json()["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["response"]["status"].as_str().unwrap_or("").to_string())
            .collect();
        assert!(statuses.iter().all(|s| s.starts_with("201") || s.starts_with("200")), "{statuses:?}");
    }
    // A needle held by two dictionary values but 300 patients, every one of them after the 1,200
    // above in id order (a block that does not match comes first, as after a bulk load): merged
    // by value, each value's rows read in id order.
    const M: usize = 300;
    let moxa = |i: usize| if i.is_multiple_of(2) { "Mox" } else { "Moxa" };
    let entries: Vec<Value> = (0..M).map(|i| put("q", i, moxa(i))).collect();
    let r = h.call("POST", "/fhir", Some(&json!({"resourceType": "Bundle", "type": "batch", "entry": entries}))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.diagnostics());
    // A needle held by more dictionary values than one merge reads (MERGE_VALUES, 256): 300
    // patients with a name each, after the block too. It walks, the walk falls short in the
    // block, and the store merges the values in parts. Written last id first, so that the
    // dictionary lists the values of the first ids in its last part.
    let wuv = |i: usize| format!("Wuv{i:03}");
    let entries: Vec<Value> = (0..M).rev().map(|i| put("r", i, &wuv(i))).collect();
    let r = h.call("POST", "/fhir", Some(&json!({"resourceType": "Bundle", "type": "batch", "entry": entries}))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.diagnostics());
    let want = |needle: &str, male_only: bool| -> Vec<String> {
        let mut ids: Vec<String> = (0..N)
            .filter(|&i| family(i).to_lowercase().contains(needle) && (!male_only || gender(i) == "male"))
            .map(|i| format!("p{i:04}"))
            .collect();
        ids.extend(
            (0..M)
                .filter(|&i| moxa(i).to_lowercase().contains(needle) && (!male_only || gender(i) == "male"))
                .map(|i| format!("q{i:04}")),
        );
        ids.extend(
            (0..M)
                .filter(|&i| wuv(i).to_lowercase().contains(needle) && (!male_only || gender(i) == "male"))
                .map(|i| format!("r{i:04}")),
        );
        ids
    };
    for (query, want) in [
        ("family:contains=mox", want("mox", false)),
        ("family:contains=oxa", want("oxa", false)),
        (
            "name:contains=MOX,kaz0",
            want("mox", false)
                .into_iter()
                .chain(want("kaz0", false))
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect(),
        ),
        ("gender=male&family:contains=mox", want("mox", true)),
        ("family:contains=wuv", want("wuv", false)),
        ("name:contains=UV2", want("uv2", false)),
        ("gender=male&family:contains=wuv", want("wuv", true)),
        ("family:contains=kaz", want("kaz", false)),
        ("name:contains=KAZ", want("kaz", false)),
        ("family:contains=vyq", want("vyq", false)),
        ("family:contains=yq", want("yq", false)),
        ("family:contains=zzq", want("zzq", false)),
        ("gender=male&family:contains=kaz", want("kaz", true)),
    ] {
        assert!(want.len() < N, "{query}");
        // Forwards page by page, and backwards from the last page to the same pages.
        let uri = format!("/fhir/Patient?{query}&_count=7&_total=accurate");
        let (first, pages) = pages_both_ways(&h, &uri).await;
        assert_eq!(first["total"], json!(want.len()), "{uri}");
        assert_eq!(pages.concat(), want, "{uri}");
        assert!(pages.iter().all(|p| p.len() <= 7), "{uri}");
    }
}

/// #29: a chain whose matches hold many references (`subject:Patient.name=…` over a common name)
/// is walked like a dense substring — the referring resources in id order, each checked — and
/// gathered when the walk falls short: every page forwards and backwards and the total are
/// exactly the definition's either way. 2,100 Observations with five performers each: the first
/// thousand `Dense` practitioners, the rest `Late` ones (5,495 references: walked; the first
/// page's walk finds none in the first thousand and gathers, later pages walk from their cursor),
/// two only `Rare` (first and last in id order: gathered). A token on every Observation (three
/// codings of one system each: 6,300 rows) is walked the same way.
#[tokio::test]
async fn dense_chains_walk_and_fall_back_exactly() {
    let h = Harness::new();
    let batch = |entries: Vec<Value>| {
        let h = &h;
        async move {
            let r = h
                .call("POST", "/fhir", Some(&json!({"resourceType": "Bundle", "type": "batch", "entry": entries})))
                .await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.diagnostics());
            let entries = r.json()["entry"].as_array().cloned().unwrap_or_default();
            assert!(
                entries.iter().all(|e| e["response"]["status"].as_str().is_some_and(|s| s.starts_with("20"))),
                "{entries:?}"
            );
        }
    };
    let practitioner = |id: &str, family: &str| {
        json!({"resource": {"resourceType": "Practitioner", "id": id, "name": [{"family": family}]},
               "request": {"method": "PUT", "url": format!("Practitioner/{id}")}})
    };
    let mut practitioners = vec![practitioner("rare", "Rare")];
    for i in 0..5 {
        practitioners.push(practitioner(&format!("dense{i}"), "Dense"));
        practitioners.push(practitioner(&format!("late{i}"), "Late"));
        // Performed nothing: no `_has` finds them.
        practitioners.push(practitioner(&format!("idle{i}"), "Idle"));
    }
    batch(practitioners).await;
    const N: usize = 2100;
    let group = |i: usize| {
        if i == 4 || i == N - 4 {
            "rare"
        } else if i < 1000 {
            "dense"
        } else {
            "late"
        }
    };
    for chunk in (0..N).collect::<Vec<_>>().chunks(300) {
        let entries: Vec<Value> = chunk
            .iter()
            .map(|&i| {
                let id = format!("o{i:05}");
                let performers: Vec<Value> = match group(i) {
                    "rare" => vec![json!({"reference": "Practitioner/rare"})],
                    g => (0..5).map(|k| json!({"reference": format!("Practitioner/{g}{k}")})).collect(),
                };
                json!({"resource": {"resourceType": "Observation", "id": id, "status": "final",
                                    "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"},
                                                        {"system": "http://loinc.org", "code": format!("x{}", i % 3)},
                                                        {"system": "http://loinc.org", "code": format!("y{}", i % 2)},
                                                        {"system": "http://example.org/local", "code": "hr"}]},
                                    "performer": performers},
                       "request": {"method": "PUT", "url": format!("Observation/{id}")}})
            })
            .collect();
        batch(entries).await;
    }
    let want = |g: &str| -> Vec<String> { (0..N).filter(|&i| group(i) == g).map(|i| format!("o{i:05}")).collect() };
    assert!(want("late").len() * 5 > 5000, "more references than the density probe counts");
    for (query, want, count) in [
        ("performer:Practitioner.name=late", want("late"), 60),
        ("performer:Practitioner.family=LATE&code=8867-4", want("late"), 60),
        ("performer:Practitioner.name=dense", want("dense"), 60),
        ("performer:Practitioner.name=rare", want("rare"), 1),
        ("performer:Practitioner.name=rare,dense", [want("dense"), want("rare")].concat(), 70),
        ("performer:Practitioner.name=nobody", Vec::new(), 10),
        // A token held by 6,300 rows (three LOINC codings each) and every Observation: walked,
        // each page found; beside the chain, both checked per candidate.
        ("code=http://loinc.org%7C", (0..N).map(|i| format!("o{i:05}")).collect(), 60),
        ("code=http://loinc.org%7C&performer:Practitioner.name=late", want("late"), 60),
        ("code=x1", (0..N).filter(|i| i % 3 == 1).map(|i| format!("o{i:05}")).collect(), 60),
    ] {
        let mut want = want;
        want.sort();
        let uri = format!("/fhir/Observation?{query}&_count={count}&_total=accurate");
        let (first, pages) = pages_both_ways(&h, &uri).await;
        assert_eq!(first["total"], json!(want.len()), "{uri}");
        assert_eq!(pages.concat(), want, "{uri}");
        assert!(pages.iter().all(|p| p.len() <= count), "{uri}");
    }
    // `_has` the other way: its criterion held by 6,300 rows (dense: the practitioners are
    // walked, each checked by key) or by 700 (gathered), alone and beside a name.
    let named = |groups: &[&str]| -> Vec<String> {
        let mut ids: Vec<String> = groups
            .iter()
            .flat_map(
                |g| if *g == "rare" { vec!["rare".to_string()] } else { (0..5).map(|k| format!("{g}{k}")).collect() },
            )
            .collect();
        ids.sort();
        ids
    };
    for (query, want, count) in [
        ("_has:Observation:performer:code=http://loinc.org%7C", named(&["dense", "late", "rare"]), 3),
        ("_has:Observation:performer:code=http://loinc.org%7C&name=late", named(&["late"]), 2),
        ("_has:Observation:performer:code=x1", named(&["dense", "late", "rare"]), 4),
        ("_has:Observation:performer:code=nope", Vec::new(), 4),
        ("_has:Observation:performer:code=http://loinc.org%7C&name=idle", Vec::new(), 4),
    ] {
        let uri = format!("/fhir/Practitioner?{query}&_count={count}&_total=accurate");
        let (first, pages) = pages_both_ways(&h, &uri).await;
        assert_eq!(first["total"], json!(want.len()), "{uri}");
        assert_eq!(pages.concat(), want, "{uri}");
        assert!(pages.iter().all(|p| p.len() <= count), "{uri}");
    }
}

/// `_lastUpdated` with every prefix, at a second's and at a microsecond's precision, alone and
/// beside a dense token, over a store large enough for both plans: a range holding fewer than
/// the density probe's 5,000 versions is gathered through the time index; a denser one is
/// walked in id order, and where the walk falls short (1,100 patients whose times are before the
/// range, first in id order, then 30 inside it among 5,000 Observations) it gathers. Every
/// answer is checked against the times the batches returned, page by page both ways, with its
/// total; a deleted resource is in none.
#[tokio::test]
async fn last_updated_ranges_walk_and_gather_exactly() {
    let h = Harness::new();
    // (id, lastModified) of every write, in order.
    let batch = |entries: Vec<Value>| {
        let h = &h;
        async move {
            let r = h
                .call(
                    "POST",
                    "/fhir",
                    Some(&json!({"resourceType": "Bundle", "type": "batch", "entry": entries.clone()})),
                )
                .await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.diagnostics());
            let out = r.json()["entry"].as_array().cloned().unwrap_or_default();
            assert_eq!(out.len(), entries.len());
            entries
                .iter()
                .zip(out)
                .map(|(e, o)| {
                    assert!(o["response"]["status"].as_str().is_some_and(|s| s.starts_with("20")), "{o}");
                    let at = o["response"]["lastModified"].as_str().unwrap_or_default().to_string();
                    assert_eq!(at.len(), 27, "a fixed-width UTC instant: {at}");
                    (e["resource"]["id"].as_str().unwrap_or_default().to_string(), at)
                })
                .collect::<Vec<_>>()
        }
    };
    let patient = |id: String| {
        json!({"resource": {"resourceType": "Patient", "id": id, "name": [{"family": "Toki"}]},
               "request": {"method": "PUT", "url": format!("Patient/{id}")}})
    };
    let observation = |id: String| {
        json!({"resource": {"resourceType": "Observation", "id": id, "status": "final",
                            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]}},
               "request": {"method": "PUT", "url": format!("Observation/{id}")}})
    };
    let mut patients = Vec::new();
    for chunk in (0..1100).collect::<Vec<_>>().chunks(550) {
        patients.extend(batch(chunk.iter().map(|i| patient(format!("pa{i:04}"))).collect()).await);
    }
    // The cut: a second after every patient so far, before everything after.
    let cut = patients.iter().map(|(_, at)| at[..19].to_string()).max().unwrap_or_default();
    loop {
        let now = mamori_records::Clock::now(&mamori_records::SystemClock).to_fhir();
        if now[..19] > *cut {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let mut observations = Vec::new();
    for (n, chunk) in (0..5000).collect::<Vec<_>>().chunks(500).enumerate() {
        let mut entries: Vec<Value> = chunk.iter().map(|i| observation(format!("ob{i:04}"))).collect();
        if n == 5 {
            entries.extend((0..30).map(|i| patient(format!("pz{i:02}"))));
        }
        for (id, at) in batch(entries).await {
            if id.starts_with("ob") { observations.push((id, at)) } else { patients.push((id, at)) }
        }
    }
    let r = h.call("DELETE", "/fhir/Patient/pz00", None).await;
    assert!(r.status.is_success(), "{}", r.diagnostics());
    patients.retain(|(id, _)| id != "pz00");
    let cut = format!("{cut}Z");
    let mid = patients.iter().find(|(id, _)| id == "pa0500").map(|(_, at)| at.clone()).unwrap_or_default();
    let late = observations.get(2500).map(|(_, at)| at.clone()).unwrap_or_default();
    // What a `_lastUpdated` of `value` (a second's or a microsecond's instant) matches: a
    // version's time is a point, compared at the value's precision (the fixed-width form compares
    // as text).
    let matches = |at: &str, prefix: &str, value: &str| -> bool {
        let v = value.trim_end_matches('Z');
        let t = &at[..v.len()];
        match prefix {
            "eq" => t == v,
            "ne" => t != v,
            "gt" | "sa" => t > v,
            "lt" | "eb" => t < v,
            "ge" => t >= v,
            "le" => t <= v,
            // Within a day at least: every write of this test.
            "ap" => true,
            p => panic!("{p}"),
        }
    };
    let want = |rows: &[(String, String)], prefix: &str, value: &str| -> Vec<String> {
        let mut ids: Vec<String> =
            rows.iter().filter(|(_, at)| matches(at, prefix, value)).map(|(id, _)| id.clone()).collect();
        ids.sort();
        ids
    };
    let mut questions: Vec<(String, Vec<String>)> = Vec::new();
    for prefix in ["eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"] {
        for value in [&cut, &mid] {
            questions.push((format!("Patient?_lastUpdated={prefix}{value}"), want(&patients, prefix, value)));
        }
    }
    // After `latest`, the matches lie beyond four walks of a thousand (`sql::WALKS`): the page
    // walks on and then gathers; after `late`, the third walk finds them.
    let latest = observations.get(4500).map(|(_, at)| at.clone()).unwrap_or_default();
    for (prefix, value) in [("gt", &cut), ("le", &cut), ("gt", &late), ("le", &late), ("gt", &latest)] {
        let w = want(&observations, prefix, value);
        questions.push((format!("Observation?_lastUpdated={prefix}{value}"), w.clone()));
        questions.push((format!("Observation?code=8867-4&_lastUpdated={prefix}{value}"), w));
    }
    questions.push(("Patient?_lastUpdated=ge2000".into(), want(&patients, "ge", "2000")));
    questions.push(("Observation?_lastUpdated=lt2000".into(), Vec::new()));
    questions.push((
        format!("Patient?_lastUpdated=gt{mid},lt{cut}"),
        want(&patients, "gt", &mid)
            .into_iter()
            .chain(want(&patients, "lt", &cut))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect(),
    ));
    let before_cut = want(&patients, "le", &cut);
    questions.push((
        format!("Patient?_lastUpdated=gt{mid}&_lastUpdated=le{cut}"),
        want(&patients, "gt", &mid).into_iter().filter(|id| before_cut.contains(id)).collect(),
    ));
    // The walk falls short here: the first 1,000 patients in id order are before the range.
    assert_eq!(want(&patients, "gt", &cut).len(), 29);
    for (query, want) in questions {
        // Pages of 50 (a walk is tried for pages of up to 100); the total asked once.
        let uri = format!("/fhir/{}&_count=50", query.replace('+', "%2B"));
        let (_, pages) = pages_both_ways(&h, &uri).await;
        assert_eq!(pages.concat(), want, "{uri}");
        let total = h.call("GET", &format!("{uri}&_total=accurate"), None).await.json()["total"].clone();
        assert_eq!(total, json!(want.len()), "{uri}");
    }
    // In time order, the dense range read in the type's order and sorted.
    let uri = format!("/fhir/Patient?_lastUpdated=gt{mid}&_sort=_lastUpdated&_count=100");
    let (_, pages) = pages_both_ways(&h, &uri).await;
    let got = pages.concat();
    let at = |id: &String| patients.iter().find(|(p, _)| p == id).map(|(_, at)| at.clone()).unwrap_or_default();
    assert!(got.windows(2).all(|w| at(&w[0]) <= at(&w[1])), "{uri}: in time order");
    let mut got = got;
    got.sort();
    assert_eq!(got, want(&patients, "gt", &mid), "{uri}");
}
