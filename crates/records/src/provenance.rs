//! Who did what: the [`Actor`] behind a request and the Provenance the server writes beside each
//! version (入力者 = enterer, author, 確定者 = attester). The request context and its access
//! guard are in `context.rs`.

use serde_json::{Value, json};

use crate::{Method, Timestamp};

/// Code system of the entry-status tag on pending versions.
pub const ENTRY_STATUS_SYSTEM: &str = "urn:mamori:entry-status";
const PARTICIPANT: &str = "http://terminology.hl7.org/CodeSystem/provenance-participant-type";
const DATA_OPERATION: &str = "http://terminology.hl7.org/CodeSystem/v3-DataOperation";
const HASH_EXTENSION: &str = "urn:mamori:fhir:extension:content-sha256";

/// The principal behind a request: the one actor type (`mamori_audit::AuditActor`).
pub use mamori_audit::{ActorKind, AuditActor as Actor};

/// The FHIR `Reference` for a stored label.
pub(crate) fn who(label: &str) -> Value {
    match label.split_once(':') {
        Some((kind @ ("client" | "user" | "operator"), id)) => {
            json!({"identifier": {"system": format!("urn:mamori:{kind}"), "value": id}, "display": label})
        }
        _ => json!({"reference": label}),
    }
}

fn agent(code: &str, display: &str, label: &str) -> Value {
    json!({
        "type": {"coding": [{"system": PARTICIPANT, "code": code, "display": display}]},
        "who": who(label),
    })
}

/// What the server knows about one write, for its Provenance.
pub(crate) struct ProvenanceFacts<'a> {
    pub target: String,
    pub sha256_hex: String,
    pub recorded: Timestamp,
    pub method: Method,
    pub enterer: &'a str,
    pub author: &'a str,
    /// 確定者; `None` while pending.
    pub attester: Option<&'a str>,
    pub previous: Option<String>,
}

/// Builds the server's Provenance for one version (without id and meta).
pub(crate) fn build(f: &ProvenanceFacts<'_>) -> Value {
    let (code, display) = match f.method {
        Method::Create => ("CREATE", "create"),
        Method::Update | Method::Patch => ("UPDATE", "revise"),
        Method::Delete => ("DELETE", "delete"),
        Method::Approve => ("UPDATE", "approve (確定)"),
    };
    let mut agents = vec![agent("enterer", "入力者 Enterer", f.enterer), agent("author", "Author", f.author)];
    if let Some(a) = f.attester {
        agents.push(agent("attester", "確定者 Attester", a));
    }
    let mut p = json!({
        "resourceType": "Provenance",
        "target": [{
            "reference": f.target,
            "extension": [{"url": HASH_EXTENSION, "valueString": f.sha256_hex}],
        }],
        "recorded": f.recorded.to_fhir(),
        "activity": {"coding": [{"system": DATA_OPERATION, "code": code, "display": display}]},
        "agent": agents,
    });
    if let (Some(prev), Some(obj)) = (&f.previous, p.as_object_mut()) {
        obj.insert("entity".into(), json!([{"role": "revision", "what": {"reference": prev}}]));
    }
    p
}
