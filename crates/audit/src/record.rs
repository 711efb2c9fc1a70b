//! One audit record (L1) and its canonical JSON: object keys in code-point order, no whitespace.
//! Field names are declared in sorted order and `None`s are skipped, so `serde_json` writes the
//! canonical form directly.

use serde::{Deserialize, Serialize};

/// The outcome of an audited act.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Done.
    Success,
    /// Refused by authentication or authorisation.
    Denied,
    /// Failed (bad request, conflict, server error).
    Failure,
}

/// Who acted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditActor {
    /// OAuth client through which the act came.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The person's FHIR resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fhir_user: Option<String>,
    /// Client id, user name, operator name; empty if unknown.
    pub id: String,
    /// `client`, `user`, `operator` or `anonymous`.
    pub kind: String,
}

/// One audit record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// What was done: `read`, `vread`, `search`, `history`, `create`, `update`, `patch`,
    /// `delete`, `approve`, `token`, `config`, `audit-read`, …
    pub action: String,
    /// Who.
    pub actor: AuditActor,
    /// Free-text detail (never secrets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Outcome.
    pub outcome: Outcome,
    /// Patients whose information was touched (`Patient/123`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub patients: Vec<String>,
    /// Purpose of use: `TREAT` normally, `ETREAT` under break-glass.
    pub purpose: String,
    /// The query string of a search or history, when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// The request id (`X-Request-ID`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Resources revealed or changed (`Type/id/_history/v`), or the resource type asked for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
    /// Source address of the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// HTTP status or exit code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Server time, FHIR instant (UTC, microseconds).
    pub time: String,
    /// Record format version.
    pub v: u8,
}

/// Largest entry a tlog-tiles entry bundle can carry (uint16 length prefix).
pub const MAX_ENTRY: usize = 65_535;

impl AuditRecord {
    /// A record with its essentials and every optional field empty; the log sets `time`.
    pub fn new(action: &str, actor: AuditActor, outcome: Outcome, purpose: &str) -> Self {
        AuditRecord {
            action: action.into(),
            actor,
            detail: None,
            outcome,
            patients: Vec::new(),
            purpose: purpose.into(),
            query: None,
            request_id: None,
            resources: Vec::new(),
            source: None,
            status: None,
            time: String::new(),
            v: 1,
        }
    }

    /// The canonical JSON of the record.
    pub fn to_canonical(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Splits a record whose entry would exceed [`MAX_ENTRY`] into several, each carrying a part
    /// of the resource list (`detail` says `part i of n`).
    pub fn into_entries(self) -> Vec<Vec<u8>> {
        let whole = self.to_canonical();
        if whole.len() <= MAX_ENTRY {
            return vec![whole];
        }
        let chunk = 400;
        let parts: Vec<Vec<String>> = self.resources.chunks(chunk).map(<[String]>::to_vec).collect();
        let n = parts.len();
        parts
            .into_iter()
            .enumerate()
            .map(|(i, resources)| {
                let mut r = self.clone();
                r.resources = resources;
                r.detail = Some(format!("part {} of {n}", i + 1));
                let mut e = r.to_canonical();
                e.truncate(MAX_ENTRY);
                e
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec() -> AuditRecord {
        AuditRecord {
            action: "read".into(),
            actor: AuditActor {
                client_id: Some("app".into()),
                fhir_user: None,
                id: "app".into(),
                kind: "client".into(),
            },
            detail: None,
            status: Some(200),
            outcome: Outcome::Success,
            patients: vec!["Patient/1".into()],
            purpose: "TREAT".into(),
            query: None,
            request_id: Some("r1".into()),
            resources: vec!["Patient/1/_history/1".into()],
            source: Some("127.0.0.1".into()),
            time: "2026-11-21T00:00:00.000000Z".into(),
            v: 1,
        }
    }

    #[test]
    fn canonical_keys_are_sorted() {
        let s = String::from_utf8(rec().to_canonical()).unwrap();
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
    }

    #[test]
    fn oversized_records_split_into_bundle_sized_entries() {
        let mut r = rec();
        r.resources = (0..5000).map(|i| format!("Observation/{i:040}/_history/1")).collect();
        let entries = r.into_entries();
        assert!(entries.len() > 1);
        assert!(entries.iter().all(|e| e.len() <= MAX_ENTRY));
        let total: usize =
            entries.iter().map(|e| serde_json::from_slice::<AuditRecord>(e).unwrap().resources.len()).sum();
        assert_eq!(total, 5000);
    }
}
