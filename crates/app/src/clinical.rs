//! The clinicians' use cases (医師・看護師): find a patient, read their record with each
//! record's versions, approve proxy entries (代行入力) and break the glass (非常時アクセス).
//!
//! Every read goes through the record service with the person's principal — the same guard and
//! the same audit entries as their API requests — so a record they may not see is "not found"
//! here too, and the trail cannot tell the console from an app except by the client id
//! (`mamori-console`). Type-level acts (search, approve, break-glass) are first asked of the
//! enforcement point, as the API's routes ask; a refusal is audited before it is returned.

use mamori_access::Action;
use mamori_records::{BreakGlassGrant, HistoryQuery, ResourceId, ResourceType, VersionRecord};

use crate::{AppError, Ctx, Node};

/// The record types shown to decide whether a person works with clinical records at all: one
/// of them readable by their roles' policies (a clerk's administrative class is not).
const CLINICAL_TYPES: [&str; 3] = ["Observation", "Condition", "MedicationRequest"];

/// Whether the caller works with clinical records (for the console's menu; each use case still
/// decides). The operator does.
pub fn may_use(ctx: &Ctx, node: &Node) -> bool {
    match ctx.principal(node) {
        None => true,
        Some(p) => CLINICAL_TYPES.iter().any(|t| p.allows(t, Action::Search)),
    }
}

/// Whether the caller may break the glass (for showing the form; the use case decides).
pub fn may_break_glass(ctx: &Ctx, node: &Node) -> bool {
    ctx.principal(node).is_none_or(|p| p.allows("Patient", Action::Execute("break-glass")))
}

/// Asks the enforcement point for a type-level act; a refusal is audited (action `act`,
/// outcome denied) and returned.
fn authorize(ctx: &Ctx, node: &Node, rt: &str, action: Action, act: &str, asked: &str) -> Result<(), AppError> {
    let Some(p) = ctx.principal(node) else { return Ok(()) };
    match p.authorize(rt, action) {
        Ok(()) => Ok(()),
        Err(refusal) => {
            let mut entry =
                mamori_audit::AuditRecord::new(act, ctx.audit_actor(), mamori_audit::Outcome::Denied, "TREAT");
            entry.resources = vec![asked.to_string()];
            ctx.refused(node, entry, refusal.to_string())?;
            Err(AppError::from(refusal))
        }
    }
}

/// Patients matching what staff typed — an id, an identifier, a birth date (ISO or 和暦), a
/// name in kanji or kana — that the caller may see; at most 50. The same finder as the SMART
/// patient picker (`mamori_records::patients`).
pub fn find_patients(ctx: &Ctx, node: &Node, query: &str) -> Result<Vec<VersionRecord>, AppError> {
    authorize(ctx, node, "Patient", Action::Search, "search", "Patient")?;
    Ok(mamori_records::patients::find(&node.records, &ctx.records(node), query, 50)?)
}

/// A patient and their records by type (see [`patient_record`]).
pub struct PatientRecord {
    /// The Patient.
    pub patient: VersionRecord,
    /// Resource type → current records of that type, newest first; types in name order.
    pub by_type: Vec<(String, Vec<VersionRecord>)>,
    /// Whether the caller sees it under an active break-glass grant (purpose ETREAT).
    pub under_break_glass: bool,
}

/// A patient's record as the caller may see it: the Patient and the current records of their
/// compartment, grouped by type (types in name order, newest first within a type). A patient
/// the caller may not see is [`AppError::NotFound`], exactly as one that does not exist.
pub fn patient_record(ctx: &Ctx, node: &Node, patient: &str) -> Result<PatientRecord, AppError> {
    let id = ResourceId::parse(patient).map_err(|_| not_found(format!("Patient/{}", clip(patient))))?;
    let rt = ResourceType::parse("Patient").map_err(|e| AppError::Failed(e.to_string()))?;
    let rctx = ctx.records(node);
    let found = node.records.read(&rctx, &rt, &id).wait()?;
    let records = node.records.compartment(&ctx.records(node), &id).wait()?;
    let mut by_type: std::collections::BTreeMap<String, Vec<VersionRecord>> = std::collections::BTreeMap::new();
    for v in records {
        by_type.entry(v.resource_type.to_string()).or_default().push(v);
    }
    let mut out: Vec<(String, Vec<VersionRecord>)> = by_type.into_iter().collect();
    for (_, vs) in &mut out {
        vs.sort_by_key(|v| std::cmp::Reverse(v.last_updated));
    }
    let under_break_glass = match &ctx.caller {
        crate::Caller::Person { username, .. } => {
            node.records.break_glass_active(username, &format!("Patient/{id}"))?
        }
        crate::Caller::Operator(_) | crate::Caller::Application(_) => false,
    };
    Ok(PatientRecord { patient: found, by_type: out, under_break_glass })
}

/// Every version of one record the caller may see, newest first (at most 100): who entered
/// each (入力者), whether it is final (確定) or awaits its author's approval, and its hash.
pub fn versions(ctx: &Ctx, node: &Node, rtype: &str, id: &str) -> Result<Vec<VersionRecord>, AppError> {
    let missing = || not_found(format!("{}/{}", clip(rtype), clip(id)));
    let rt = ResourceType::parse(rtype).map_err(|_| missing())?;
    let rid = ResourceId::parse(id).map_err(|_| missing())?;
    let q = HistoryQuery { resource_type: Some(rt), id: Some(rid), since: None, before: None, count: 100, offset: 0 };
    Ok(node.records.history(&ctx.records(node), &q).wait()?.entries)
}

/// Proxy entries (代行入力) awaiting the caller's approval as their author (確定者): those
/// entered on behalf of the caller's own FHIR resource (`Practitioner/…`).
pub fn my_pending(ctx: &Ctx, node: &Node) -> Result<Vec<VersionRecord>, AppError> {
    let author = ctx.actor().label();
    Ok(node.records.pending_for(&ctx.records(node), &author).wait()?)
}

/// Approves (確定) a proxy entry: only its author may; the approval is a new version written by
/// the record service with its Provenance and audit entry.
pub fn approve(ctx: &Ctx, node: &Node, rtype: &str, id: &str) -> Result<VersionRecord, AppError> {
    let missing = || not_found(format!("{}/{}", clip(rtype), clip(id)));
    let rt = ResourceType::parse(rtype).map_err(|_| missing())?;
    let rid = ResourceId::parse(id).map_err(|_| missing())?;
    authorize(ctx, node, rt.as_str(), Action::Execute("approve"), "approve", &format!("{rt}/{rid}"))?;
    Ok(node.records.approve(&ctx.records(node), &rt, &rid)?)
}

/// Break-glass (非常時, Z5) on a patient: the caller's role's rights on that patient without a
/// care relationship for `minutes`, with a mandatory reason. Raises an alert and enters the
/// security manager's review queue; every access under it is audited with purpose ETREAT.
pub fn break_glass(
    ctx: &Ctx,
    node: &Node,
    patient: &str,
    reason: &str,
    minutes: u32,
) -> Result<BreakGlassGrant, AppError> {
    let id = ResourceId::parse(patient).map_err(|_| not_found(format!("Patient/{}", clip(patient))))?;
    authorize(ctx, node, "Patient", Action::Execute("break-glass"), "break-glass", &format!("Patient/{id}"))?;
    Ok(node.records.break_glass(&ctx.records(node), &id, reason, minutes)?)
}

fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}

/// "Not found" for a reference that cannot name a record, worded exactly as the record
/// service's own (a malformed id answers as a missing one).
fn not_found(reference: String) -> AppError {
    AppError::from(mamori_records::RecordError::NotFound(reference))
}
