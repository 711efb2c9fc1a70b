//! The read-only FHIR `AuditEvent` view (IHE BALP style) of audit entries, and the translation of
//! an `AuditEvent` search into an entry query.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use mamori_audit::{AuditRecord, EntryQuery, Outcome};
use mamori_records::IssueCode;
use serde_json::{Value, json};

use crate::ApiError;

/// The FHIR `AuditEvent` (IHE BALP style) for one entry.
pub fn audit_event(index: u64, entry: &[u8]) -> Value {
    let Ok(r) = serde_json::from_slice::<AuditRecord>(entry) else {
        return json!({"resourceType": "AuditEvent", "id": index.to_string()});
    };
    let (letter, interaction) = match r.action.as_str() {
        "create" => ("C", "create"),
        "update" | "approve" => ("U", "update"),
        "patch" => ("U", "patch"),
        "delete" => ("D", "delete"),
        "search" => ("E", "search-type"),
        "history" => ("R", "history-instance"),
        "vread" => ("R", "vread"),
        "read" | "audit-read" => ("R", "read"),
        _ => ("E", "operation"),
    };
    let who = match &r.actor.fhir_user {
        Some(u) => json!({"reference": u}),
        None => json!({"identifier": {"system": format!("urn:mamori:{}", r.actor.kind), "value": r.actor.id}}),
    };
    let mut agent = json!({
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP", "display": "information recipient"}]},
        "who": who,
        "requestor": true,
    });
    if let (Some(addr), Some(a)) = (&r.source, agent.as_object_mut()) {
        a.insert("network".into(), json!({"address": addr, "type": "2"}));
    }
    let mut agents = vec![agent];
    if let Some(c) = &r.actor.client_id {
        agents.push(json!({
            "type": {"coding": [{"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110150", "display": "Application"}]},
            "who": {"identifier": {"system": "urn:mamori:client", "value": c}},
            "requestor": false,
        }));
    }
    let mut entities: Vec<Value> = r
        .patients
        .iter()
        .map(|p| json!({"what": {"reference": p}, "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "1", "display": "Patient"}}))
        .collect();
    for res in r.resources.iter().filter(|x| x.contains('/') && !x.starts_with('/')) {
        entities.push(json!({"what": {"reference": res}, "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "4", "display": "Domain Resource"}}));
    }
    if let Some(q) = &r.query {
        entities.push(json!({"type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2"}, "query": B64.encode(q)}));
    }
    if let Some(id) = &r.request_id {
        entities.push(json!({"what": {"identifier": {"system": "urn:mamori:request-id", "value": id}}}));
    }
    let mut ev = json!({
        "resourceType": "AuditEvent",
        "id": index.to_string(),
        "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest", "display": "RESTful Operation"},
        "subtype": [{"system": "http://hl7.org/fhir/restful-interaction", "code": interaction}, {"system": "urn:mamori:audit-action", "code": r.action}],
        "action": letter,
        "recorded": r.time,
        "outcome": match r.outcome { Outcome::Success => "0", Outcome::Failure => "8", Outcome::Denied => "4" },
        "purposeOfEvent": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": r.purpose}]}],
        "agent": agents,
        "source": {"observer": {"display": "Mamori"}, "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4", "display": "Application Server"}]},
    });
    if let Some(o) = ev.as_object_mut() {
        if !entities.is_empty() {
            o.insert("entity".into(), Value::Array(entities));
        }
        if let Some(d) = r.detail.or(r.status.map(|s| format!("HTTP {s}"))) {
            o.insert("outcomeDesc".into(), Value::String(d));
        }
    }
    ev
}

fn parse_date_bound(v: &str) -> Option<(String, i64, i64)> {
    let (prefix, rest) = match v.get(..2) {
        Some(p @ ("eq" | "ne" | "lt" | "le" | "gt" | "ge" | "sa" | "eb" | "ap")) => {
            (p.to_string(), v.get(2..).unwrap_or(""))
        }
        _ => ("eq".to_string(), v),
    };
    // The range [start, end) the value denotes at its precision.
    let day = |d: &str| mamori_records::Timestamp::parse_rfc3339(&format!("{d}T00:00:00Z"));
    let (start, end) = if rest.len() == 10 {
        let s = day(rest)?;
        (s.0, s.0 + 86_400_000_000)
    } else {
        let t = mamori_records::Timestamp::parse_rfc3339(rest)?;
        (t.0, t.0 + 1)
    };
    Some((prefix, start, end))
}

/// `GET /fhir/AuditEvent?patient=&agent=&date=&action=&_count=`.
pub fn search_query(query: Option<&str>) -> Result<(EntryQuery, Option<String>), ApiError> {
    let mut q = EntryQuery { limit: 100, ..EntryQuery::default() };
    let mut letter = None;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = v
            .replace("%2F", "/")
            .replace("%2f", "/")
            .replace("%3A", ":")
            .replace("%3a", ":")
            .replace("%2B", "+")
            .replace("%2b", "+");
        let bad = |m: &str| ApiError::BadRequest(IssueCode::Value, format!("`{k}`: {m}"));
        match k {
            "patient" => q.patient = Some(if v.starts_with("Patient/") { v } else { format!("Patient/{v}") }),
            "agent" => q.agent = Some(v),
            "action" if v.len() == 1 => letter = Some(v),
            "action" | "subtype" => q.action = Some(v),
            "date" => {
                let (p, start, end) = parse_date_bound(&v).ok_or_else(|| bad("not a date or dateTime"))?;
                match p.as_str() {
                    "ge" | "sa" => q.since = Some(q.since.map_or(start, |s| s.max(start))),
                    "gt" => q.since = Some(q.since.map_or(end, |s| s.max(end))),
                    "le" | "eb" => q.until = Some(q.until.map_or(end, |u| u.min(end))),
                    "lt" => q.until = Some(q.until.map_or(start, |u| u.min(start))),
                    "eq" | "ap" => {
                        q.since = Some(start);
                        q.until = Some(end);
                    }
                    _ => return Err(bad("prefix not supported")),
                }
            }
            "_count" => q.limit = v.parse::<usize>().map_err(|_| bad("not a number"))?.clamp(1, 1000),
            "_from" => q.from_index = v.parse().map_err(|_| bad("not a number"))?,
            "_format" => {}
            other => {
                return Err(ApiError::BadRequest(
                    IssueCode::NotSupported,
                    format!(
                        "AuditEvent search supports patient, agent, date, action, _count; not `{}`",
                        other.chars().take(64).collect::<String>()
                    ),
                ));
            }
        }
    }
    Ok((q, letter))
}
