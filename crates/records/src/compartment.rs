//! Whom a record is about (Z3, L1): the patient the care-relationship check and the audit trail
//! use, derived from the R4 Patient compartment (CompartmentDefinition `patient`,
//! <http://hl7.org/fhir/R4/compartmentdefinition-patient.html>) through the same reference
//! resolution as the search index (`search::extract::reference_value`: relative, absolute and
//! versioned references alike), plus the links R4 leaves out of the compartment but that still
//! make a record one patient's (`Task.for`, `Contract.subject`, `Binary.securityContext`).
//!
//! A record that refers to a Patient in a way none of these covers is about an *undetermined*
//! patient ([`UNDETERMINED`]): it is treated as patient-bound with no care relationship anyone can
//! have, so a person is refused rather than allowed (`docs/ACCESS-RIGHTS.md`).

use serde_json::Value;

use crate::search::extract::{self, Stored};
use crate::search::{IndexValue, SearchRow};

/// The patient of a record that refers to a Patient but not through a compartment link. No
/// care relationship or break-glass grant can name it (`?` is not an id character).
pub const UNDETERMINED: &str = "Patient/?";

/// The R4 Patient compartment: per resource type, the search parameters whose Patient references
/// put a record in that patient's compartment, most specific first (the first found is the
/// record's patient). `Task` and `Contract` are not in R4's definition but are about a patient
/// through `for` / `subject` (added in later versions of the definition).
const PATIENT_COMPARTMENT: &[(&str, &[&str])] = &[
    ("Account", &["subject"]),
    ("AdverseEvent", &["subject"]),
    ("AllergyIntolerance", &["patient", "recorder", "asserter"]),
    ("Appointment", &["actor"]),
    ("AppointmentResponse", &["actor"]),
    ("AuditEvent", &["patient"]),
    ("Basic", &["patient", "author"]),
    ("BodyStructure", &["patient"]),
    ("CarePlan", &["patient", "performer"]),
    ("CareTeam", &["patient", "participant"]),
    ("ChargeItem", &["subject"]),
    ("Claim", &["patient", "payee"]),
    ("ClaimResponse", &["patient"]),
    ("ClinicalImpression", &["subject"]),
    ("Communication", &["subject", "sender", "recipient"]),
    ("CommunicationRequest", &["subject", "sender", "recipient", "requester"]),
    ("Composition", &["subject", "author", "attester"]),
    ("Condition", &["patient", "asserter"]),
    ("Consent", &["patient"]),
    ("Contract", &["patient", "subject"]),
    ("Coverage", &["beneficiary", "policy-holder", "subscriber", "payor"]),
    ("CoverageEligibilityRequest", &["patient"]),
    ("CoverageEligibilityResponse", &["patient"]),
    ("DetectedIssue", &["patient"]),
    ("DeviceRequest", &["subject", "performer"]),
    ("DeviceUseStatement", &["subject"]),
    ("DiagnosticReport", &["subject"]),
    ("DocumentManifest", &["subject", "author", "recipient"]),
    ("DocumentReference", &["subject", "author"]),
    ("Encounter", &["patient"]),
    ("EnrollmentRequest", &["subject"]),
    ("EpisodeOfCare", &["patient"]),
    ("ExplanationOfBenefit", &["patient", "payee"]),
    ("FamilyMemberHistory", &["patient"]),
    ("Flag", &["patient"]),
    ("Goal", &["patient"]),
    ("Group", &["member"]),
    ("ImagingStudy", &["patient"]),
    ("Immunization", &["patient"]),
    ("ImmunizationEvaluation", &["patient"]),
    ("ImmunizationRecommendation", &["patient"]),
    ("Invoice", &["subject", "patient", "recipient"]),
    ("List", &["subject", "source"]),
    ("MeasureReport", &["patient"]),
    ("Media", &["subject"]),
    ("MedicationAdministration", &["patient", "performer", "subject"]),
    ("MedicationDispense", &["subject", "patient", "receiver"]),
    ("MedicationRequest", &["subject"]),
    ("MedicationStatement", &["subject"]),
    ("MolecularSequence", &["patient"]),
    ("NutritionOrder", &["patient"]),
    ("Observation", &["subject", "performer"]),
    ("Person", &["patient"]),
    ("Procedure", &["patient", "performer"]),
    ("Provenance", &["patient"]),
    ("QuestionnaireResponse", &["subject", "author"]),
    ("RelatedPerson", &["patient"]),
    ("RequestGroup", &["subject", "participant"]),
    ("ResearchSubject", &["individual"]),
    ("RiskAssessment", &["subject"]),
    ("Schedule", &["actor"]),
    ("ServiceRequest", &["subject", "performer"]),
    ("Specimen", &["subject"]),
    ("SupplyDelivery", &["patient"]),
    ("SupplyRequest", &["subject"]),
    ("Task", &["patient", "subject"]),
    ("VisionPrescription", &["patient"]),
];

/// The resource types of the Patient compartment.
pub fn patient_compartment_types() -> impl Iterator<Item = &'static str> {
    PATIENT_COMPARTMENT.iter().map(|(t, _)| *t)
}

/// The compartment parameters of `rt`, in order.
pub fn compartment_params(rt: &str) -> &'static [&'static str] {
    PATIENT_COMPARTMENT.iter().find(|(t, _)| *t == rt).map(|(_, p)| *p).unwrap_or(&[])
}

/// The index parameters whose rows hold `param`'s values (a narrowed parameter is kept in its
/// source's rows; a union in its parts').
fn stored_params(rt: &str, param: &str) -> Vec<String> {
    match extract::param(rt, param).map(|p| &p.stored) {
        Some(Stored::Narrowed { param, .. }) => vec![param.clone()],
        Some(Stored::Union(parts)) => parts.clone(),
        Some(Stored::Own) => vec![param.to_string()],
        None => Vec::new(),
    }
}

/// The Patient a reference row names, if it names one.
fn patient_ref(v: &IndexValue) -> Option<String> {
    match v {
        IndexValue::Ref { ty, id, .. } if ty == "Patient" && !id.is_empty() => Some(format!("Patient/{id}")),
        _ => None,
    }
}

/// Whether any reference in `body` resolves to a Patient.
fn refers_to_patient(body: &Value) -> bool {
    match body {
        Value::Object(o) => o.iter().any(|(k, v)| {
            (k == "reference" && v.as_str().and_then(extract::reference_value).as_ref().and_then(patient_ref).is_some())
                || refers_to_patient(v)
        }),
        Value::Array(a) => a.iter().any(refers_to_patient),
        _ => false,
    }
}

/// The patient a version of `rt/id` is about, from its body and its index rows: itself for a
/// Patient; the first Patient its compartment links name; [`UNDETERMINED`] when it refers to a
/// Patient otherwise; `None` when it refers to none. (`Binary` is resolved by the caller through
/// its security context, which needs the store.)
pub fn patient_of(rt: &str, id: &str, body: Option<&Value>, rows: &[SearchRow]) -> Option<String> {
    if rt == "Patient" {
        return Some(format!("Patient/{id}"));
    }
    let body = body?;
    for param in compartment_params(rt) {
        for stored in stored_params(rt, param) {
            if let Some(p) = rows.iter().filter(|r| r.param == stored).find_map(|r| patient_ref(&r.value)) {
                return Some(p);
            }
        }
    }
    if rt == "Task"
        && let Some(p) = body.pointer("/for/reference").and_then(Value::as_str).and_then(extract::reference_value)
        && let Some(p) = patient_ref(&p)
    {
        return Some(p);
    }
    if rows.iter().any(|r| patient_ref(&r.value).is_some()) || refers_to_patient(body) {
        return Some(UNDETERMINED.to_string());
    }
    None
}

/// What `Binary.securityContext` names: `Some(Ok(patient))` for a Patient, `Some(Err((type,
/// id)))` for another local record (whose patient the caller looks up), `None` when absent or
/// not local.
pub fn security_context(body: &Value) -> Option<Result<String, (String, String)>> {
    let r = body.pointer("/securityContext/reference").and_then(Value::as_str)?;
    match extract::reference_value(r)? {
        IndexValue::Ref { ty, id, .. } if ty == "Patient" && !id.is_empty() => Some(Ok(format!("Patient/{id}"))),
        IndexValue::Ref { ty, id, .. } if !ty.is_empty() && !id.is_empty() => Some(Err((ty, id))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::search::rows_for;

    fn of(body: Value) -> Option<String> {
        let rt = body["resourceType"].as_str().unwrap().to_string();
        let rows = rows_for(&rt, &body);
        patient_of(&rt, "x", Some(&body), &rows)
    }

    #[test]
    fn compartment_links_name_the_patient() {
        let p = Some("Patient/p1".to_string());
        assert_eq!(of(json!({"resourceType": "Observation", "subject": {"reference": "Patient/p1"}})), p);
        // An absolute URL of this (or any) server resolves as the search index resolves it.
        assert_eq!(
            of(
                json!({"resourceType": "Observation", "subject": {"reference": "https://mamori.example/fhir/Patient/p1"}})
            ),
            p
        );
        assert_eq!(of(json!({"resourceType": "Condition", "subject": {"reference": "Patient/p1/_history/2"}})), p);
        assert_eq!(of(json!({"resourceType": "Task", "for": {"reference": "Patient/p1"}})), p);
        assert_eq!(
            of(json!({"resourceType": "Appointment", "status": "booked",
                      "participant": [{"actor": {"reference": "Practitioner/d"}, "status": "accepted"},
                                      {"actor": {"reference": "Patient/p1"}, "status": "accepted"}]})),
            p
        );
        assert_eq!(
            of(json!({"resourceType": "Account", "status": "active", "subject": [{"reference": "Patient/p1"}]})),
            p
        );
        assert_eq!(
            of(json!({"resourceType": "ResearchSubject", "status": "on-study",
                      "study": {"reference": "ResearchStudy/s"}, "individual": {"reference": "Patient/p1"}})),
            p
        );
        assert_eq!(of(json!({"resourceType": "Contract", "subject": [{"reference": "Patient/p1"}]})), p);
        assert_eq!(of(json!({"resourceType": "Coverage", "beneficiary": {"reference": "Patient/p1"}})), p);
    }

    #[test]
    fn other_patient_references_are_undetermined_and_none_is_none() {
        // Observation.focus is not a compartment link.
        assert_eq!(
            of(json!({"resourceType": "Observation", "focus": [{"reference": "Patient/p1"}]})),
            Some(UNDETERMINED.to_string())
        );
        assert_eq!(
            of(
                json!({"resourceType": "Observation", "extension": [{"url": "urn:x", "valueReference": {"reference": "Patient/p1"}}]})
            ),
            Some(UNDETERMINED.to_string())
        );
        assert_eq!(of(json!({"resourceType": "Organization", "name": "x"})), None);
        assert_eq!(of(json!({"resourceType": "Observation", "subject": {"reference": "Group/g"}})), None);
    }

    #[test]
    fn binary_security_context() {
        assert_eq!(
            security_context(&json!({"securityContext": {"reference": "Patient/p1"}})),
            Some(Ok("Patient/p1".into()))
        );
        assert_eq!(
            security_context(&json!({"securityContext": {"reference": "DocumentReference/d"}})),
            Some(Err(("DocumentReference".into(), "d".into())))
        );
        assert_eq!(security_context(&json!({})), None);
    }
}
