//! Facts the access decision needs that are derived from a resource at write time: the care
//! relationships (Z3) it establishes, and whether it is a laboratory result.

use serde_json::Value;

use crate::CareLink;

fn refs(v: Option<&Value>) -> Vec<&str> {
    match v {
        Some(Value::Array(a)) => a.iter().filter_map(|x| x.get("reference").and_then(Value::as_str)).collect(),
        Some(o @ Value::Object(_)) => o.get("reference").and_then(Value::as_str).into_iter().collect(),
        _ => Vec::new(),
    }
}

fn carer(r: &str) -> Option<String> {
    let r = r.split("/_history/").next().unwrap_or(r);
    let (t, id) = r.split_once('/')?;
    (matches!(t, "Practitioner" | "PractitionerRole") && crate::primitive::is_id(id)).then(|| r.to_string())
}

fn patient_ref(v: Option<&Value>) -> Option<String> {
    let r = v?.get("reference")?.as_str()?;
    let r = r.split("/_history/").next().unwrap_or(r);
    r.strip_prefix("Patient/").filter(|id| crate::primitive::is_id(id)).map(|id| format!("Patient/{id}"))
}

/// The care relationships a resource establishes: members of an `active` CareTeam for its
/// subject, participants of an `in-progress` Encounter, and a Patient's generalPractitioner.
pub fn care_links(resource_type: &str, id: &str, body: &Value) -> Vec<CareLink> {
    let status = body.get("status").and_then(Value::as_str);
    let mut out = Vec::new();
    let mut add = |patient: &str, member: String| {
        let l = CareLink { patient: patient.to_string(), member };
        if !out.contains(&l) {
            out.push(l);
        }
    };
    match resource_type {
        "CareTeam" if status == Some("active") => {
            if let Some(p) = patient_ref(body.get("subject")) {
                for part in body.get("participant").and_then(Value::as_array).into_iter().flatten() {
                    refs(part.get("member")).into_iter().filter_map(carer).for_each(|m| add(&p, m));
                }
            }
        }
        "Encounter" if status == Some("in-progress") => {
            if let Some(p) = patient_ref(body.get("subject")) {
                for part in body.get("participant").and_then(Value::as_array).into_iter().flatten() {
                    refs(part.get("individual")).into_iter().filter_map(carer).for_each(|m| add(&p, m));
                }
            }
        }
        "Patient" if crate::primitive::is_id(id) => {
            let p = format!("Patient/{id}");
            refs(body.get("generalPractitioner")).into_iter().filter_map(carer).for_each(|m| add(&p, m));
        }
        _ => {}
    }
    out
}

/// Whether a resource is a laboratory result: an Observation with category `laboratory`
/// (observation-category) or a DiagnosticReport with category `LAB` (v2-0074).
pub fn is_lab(resource_type: &str, body: &Value) -> bool {
    let want = match resource_type {
        "Observation" => "laboratory",
        "DiagnosticReport" => "LAB",
        _ => return false,
    };
    let cats: Vec<&Value> = match body.get("category") {
        Some(Value::Array(a)) => a.iter().collect(),
        Some(o @ Value::Object(_)) => vec![o],
        _ => Vec::new(),
    };
    cats.iter().any(|c| {
        c.get("coding")
            .and_then(Value::as_array)
            .is_some_and(|cs| cs.iter().any(|x| x.get("code").and_then(Value::as_str) == Some(want)))
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn care_links_from_the_three_sources() {
        let ct = json!({"resourceType": "CareTeam", "status": "active", "subject": {"reference": "Patient/p1"},
            "participant": [{"member": {"reference": "Practitioner/d1"}}, {"member": {"reference": "Organization/o"}}]});
        assert_eq!(
            care_links("CareTeam", "c", &ct),
            vec![CareLink { patient: "Patient/p1".into(), member: "Practitioner/d1".into() }]
        );
        let inactive = json!({"resourceType": "CareTeam", "status": "inactive", "subject": {"reference": "Patient/p1"},
            "participant": [{"member": {"reference": "Practitioner/d1"}}]});
        assert!(care_links("CareTeam", "c", &inactive).is_empty());
        let enc = json!({"resourceType": "Encounter", "status": "in-progress", "subject": {"reference": "Patient/p2"},
            "participant": [{"individual": {"reference": "PractitionerRole/r1"}}]});
        assert_eq!(care_links("Encounter", "e", &enc).len(), 1);
        let done = json!({"resourceType": "Encounter", "status": "finished", "subject": {"reference": "Patient/p2"},
            "participant": [{"individual": {"reference": "Practitioner/d1"}}]});
        assert!(care_links("Encounter", "e", &done).is_empty());
        let pat = json!({"resourceType": "Patient", "generalPractitioner": [{"reference": "Practitioner/gp"}]});
        assert_eq!(
            care_links("Patient", "p3", &pat),
            vec![CareLink { patient: "Patient/p3".into(), member: "Practitioner/gp".into() }]
        );
        assert!(is_lab("Observation", &json!({"category": [{"coding": [{"code": "laboratory"}]}]})));
        assert!(!is_lab("Observation", &json!({"category": [{"coding": [{"code": "vital-signs"}]}]})));
        assert!(is_lab("DiagnosticReport", &json!({"category": [{"coding": [{"code": "LAB"}]}]})));
    }
}
