//! Japanese data (#3): synthetic JP Core–profiled records from the PyPI package `clinosim`
//! (`clinosim simulate --country JP -p 200 --format fhir-r4 --allow-legacy`) import through
//! `POST /fhir/$import`, and the patients are found by kanji and kana name, identifier and birth
//! date, with their observations by patient and date.
//!
//! clinosim 0.6.5 writes a few resources that are not valid R4 (`MedicationAdministration.dosage`
//! with `timing`/`doseAndRate`, which belong to `Dosage`, and empty `code`/`display`/`text`
//! strings). Mamori refuses exactly those lines; the test checks each refusal against the line's
//! own content, so a refusal of anything valid fails it.

use std::collections::HashMap;
use std::path::PathBuf;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::Value;

use crate::support::{Harness, enc, pip_target};

/// The simulator's output directory (generated once per target directory; the seed fixes it).
fn simulate() -> PathBuf {
    let deps = pip_target("clinosim", &["clinosim==0.6.5"], &["clinosim", "numpy", "scipy"]);
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("clinosim-jp-p200-s7");
    let data = out.join("fhir_r4");
    if data.join("manifest.json").exists() {
        return data;
    }
    let run = std::process::Command::new("python3")
        .args(["-c", "import sys; from clinosim.simulator.cli import main; sys.argv[0] = 'clinosim'; sys.exit(main())"])
        .args(["simulate", "--country", "JP", "-p", "200", "--format", "fhir-r4", "--allow-legacy", "-s", "7", "-o"])
        .arg(&out)
        .env("PYTHONPATH", &deps)
        .output()
        .expect("python3 runs clinosim");
    assert!(run.status.success(), "clinosim failed: {}", String::from_utf8_lossy(&run.stderr));
    assert!(data.join("Patient.ndjson").exists());
    data
}

fn has_empty_string(v: &Value) -> bool {
    match v {
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.iter().any(has_empty_string),
        Value::Object(o) => o.values().any(has_empty_string),
        _ => false,
    }
}

/// Whether the line really has the defect the refusal names.
fn defect_is_real(line: &Value, why: &str) -> bool {
    let dosage_has = |k: &str| line["resourceType"] == "MedicationAdministration" && line["dosage"].get(k).is_some();
    if why.contains("unknown element `timing`") {
        dosage_has("timing")
    } else if why.contains("unknown element `doseAndRate`") {
        dosage_has("doseAndRate")
    } else if why.contains("empty string") {
        has_empty_string(line)
    } else {
        false
    }
}

async fn search(h: &Harness, q: &str) -> Vec<Value> {
    let r = h.call("GET", q, None).await;
    assert_eq!(r.status, StatusCode::OK, "{q}: {}", r.diagnostics());
    r.json()["entry"].as_array().cloned().unwrap_or_default().into_iter().map(|e| e["resource"].clone()).collect()
}

#[tokio::test]
async fn clinosim_jp_core_records_import_and_are_searchable() {
    let data = simulate();
    let mut h = Harness::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "ndjson"))
        .collect();
    files.sort();
    assert!(files.len() >= 20, "{files:?}");
    let (mut stored, mut lines_total) = (0usize, 0usize);
    let mut refused_by_type: HashMap<String, usize> = HashMap::new();
    let mut observations_of: HashMap<String, usize> = HashMap::new();
    for f in &files {
        // A token per file: on a loaded machine the whole import outlives one (15 minutes).
        h.renew_token();
        let text = std::fs::read_to_string(f).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        lines_total += lines.iter().filter(|l| !l.trim().is_empty()).count();
        let req = Request::builder()
            .method("POST")
            .uri("/fhir/$import")
            .header("authorization", format!("Bearer {}", h.token))
            .header("content-type", "application/fhir+ndjson")
            .body(Body::from(text.clone()))
            .unwrap();
        let r = h.send(req).await;
        assert_eq!(r.status, StatusCode::OK, "{}: {}", f.display(), String::from_utf8_lossy(&r.body));
        let o = r.json();
        let issues = o["issue"].as_array().unwrap();
        let head = issues[0]["diagnostics"].as_str().unwrap();
        let n: usize = head.strip_prefix("imported ").unwrap().split(' ').next().unwrap().parse().unwrap();
        stored += n;
        let mut refused_lines = std::collections::HashSet::new();
        for i in &issues[1..] {
            let d = i["diagnostics"].as_str().unwrap();
            let (num, why) = d.strip_prefix("line ").unwrap().split_once(": ").unwrap();
            let num: usize = num.parse().unwrap();
            let line: Value = serde_json::from_str(lines[num - 1]).unwrap();
            assert!(
                defect_is_real(&line, why),
                "{}:{num} refused for `{why}` but the line has no such defect",
                f.display()
            );
            *refused_by_type.entry(line["resourceType"].as_str().unwrap().to_string()).or_default() += 1;
            refused_lines.insert(num);
        }
        for (k, l) in lines.iter().enumerate() {
            if refused_lines.contains(&(k + 1)) {
                continue;
            }
            let v: Value = serde_json::from_str(l).unwrap();
            if v["resourceType"] == "Observation"
                && let Some(s) = v["subject"]["reference"].as_str()
            {
                *observations_of.entry(s.to_string()).or_default() += 1;
            }
        }
    }
    h.renew_token(); // for the searches below
    let refused: usize = refused_by_type.values().sum();
    assert_eq!(stored + refused, lines_total);
    assert!(refused * 20 < lines_total, "most of the data is valid R4: {refused_by_type:?}");
    assert_eq!(refused_by_type.get("Patient"), None, "every JP Core patient imports");

    // Find one patient by every route.
    let patients: Vec<Value> = std::fs::read_to_string(data.join("Patient.ndjson"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(patients.len() >= 50);
    let mut checked = 0;
    for p in patients.iter().take(10) {
        let id = p["id"].as_str().unwrap();
        let names = p["name"].as_array().unwrap();
        let rep = |code: &str| {
            names.iter().find(|n| n["extension"].as_array().is_some_and(|e| e.iter().any(|x| x["valueCode"] == code)))
        };
        let (Some(kanji), Some(kana)) = (rep("IDE"), rep("SYL")) else { continue };
        let found = |list: &[Value]| list.iter().any(|r| r["id"] == id);
        let family = kanji["family"].as_str().unwrap();
        assert!(
            found(&search(&h, &format!("/fhir/Patient?family={}&_count=100", enc(family))).await),
            "kanji {family}"
        );
        let kana_family = kana["family"].as_str().unwrap();
        assert!(
            found(&search(&h, &format!("/fhir/Patient?name={}&_count=100", enc(kana_family))).await),
            "kana {kana_family}"
        );
        // Hiragana finds the katakana reading.
        let hira: String = kana_family
            .chars()
            .map(|c| if ('\u{30A1}'..='\u{30F6}').contains(&c) { char::from_u32(c as u32 - 0x60).unwrap() } else { c })
            .collect();
        assert!(found(&search(&h, &format!("/fhir/Patient?name={}&_count=100", enc(&hira))).await), "hiragana {hira}");
        let mrn = p["identifier"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["system"] == "urn:oid:1.2.392.100495.20.3.51.1")
            .unwrap();
        let by_id = search(
            &h,
            &format!(
                "/fhir/Patient?identifier={}",
                enc(&format!("urn:oid:1.2.392.100495.20.3.51.1|{}", mrn["value"].as_str().unwrap()))
            ),
        )
        .await;
        assert_eq!(by_id.len(), 1);
        assert_eq!(by_id[0]["id"], id);
        let born = p["birthDate"].as_str().unwrap();
        assert!(found(&search(&h, &format!("/fhir/Patient?birthdate={born}&_count=100")).await), "birthdate {born}");
        let year = &born[..4];
        assert!(found(&search(&h, &format!("/fhir/Patient?birthdate={year}&family={}&_count=100", enc(family))).await));
        // Their observations, by patient, and by date.
        let want = observations_of.get(&format!("Patient/{id}")).copied().unwrap_or(0);
        let r = h.call("GET", &format!("/fhir/Observation?patient={id}&_summary=count"), None).await.json();
        assert_eq!(r["total"].as_u64().unwrap() as usize, want, "observations of {id}");
        let r = h
            .call("GET", &format!("/fhir/Observation?patient={id}&date=ge1900-01-01&_summary=count"), None)
            .await
            .json();
        assert!(r["total"].as_u64().unwrap() as usize <= want);
        checked += 1;
    }
    assert!(checked >= 5, "patients with both kanji and kana names: {checked}");
}
