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

/// What kind of principal acts. Stored lower-case (`client`, `user`…), as before it was typed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActorKind {
    /// A registered application acting for itself (client credentials).
    Client,
    /// A person, signed in.
    User,
    /// An operator at the command line of the server machine.
    Operator,
    /// The server itself (`system:oauth`, `system:mamori.toml`).
    System,
    /// No credentials were presented (a refused request).
    Anonymous,
    /// A kind this version does not know (read from a newer log).
    #[serde(other)]
    Unknown,
}

impl ActorKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            ActorKind::Client => "client",
            ActorKind::User => "user",
            ActorKind::Operator => "operator",
            ActorKind::System => "system",
            ActorKind::Anonymous => "anonymous",
            ActorKind::Unknown => "unknown",
        }
    }

    /// The kind named `s`; unknown names are [`ActorKind::Unknown`].
    pub fn parse(s: &str) -> ActorKind {
        match s {
            "client" => ActorKind::Client,
            "user" => ActorKind::User,
            "operator" => ActorKind::Operator,
            "system" => ActorKind::System,
            "anonymous" => ActorKind::Anonymous,
            _ => ActorKind::Unknown,
        }
    }
}

impl std::fmt::Display for ActorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for ActorKind {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// Who acts — the one actor type: the record service's 入力者, the audit trail's actor and the
/// `kind:id` tag of a configuration change are all this.
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
    /// What kind of principal.
    pub kind: ActorKind,
}

impl AuditActor {
    /// An actor of `kind` named `id`, with no client or FHIR resource.
    pub fn new(kind: ActorKind, id: impl Into<String>) -> AuditActor {
        AuditActor { client_id: None, fhir_user: None, id: id.into(), kind }
    }

    /// A registered application acting for itself.
    pub fn client(id: &str) -> AuditActor {
        AuditActor { client_id: Some(id.to_string()), ..AuditActor::new(ActorKind::Client, id) }
    }

    /// A command-line operator.
    pub fn operator(name: &str) -> AuditActor {
        AuditActor::new(ActorKind::Operator, name)
    }

    /// A person, with their FHIR resource when known.
    pub fn user(username: &str, fhir_user: Option<String>) -> AuditActor {
        AuditActor { fhir_user, ..AuditActor::new(ActorKind::User, username) }
    }

    /// The `kind:id` tag configuration changes are attributed with (`operator:kansa`,
    /// `user:admin1`, `system:oauth`).
    pub fn tag(&self) -> String {
        format!("{}:{}", self.kind, self.id)
    }

    /// The stable label a version stores as its 入力者: the person's FHIR reference, else the
    /// `kind:id` tag.
    pub fn label(&self) -> String {
        self.fhir_user.clone().unwrap_or_else(|| self.tag())
    }

    /// The actor a tag names; a tag without a kind is an operator's name.
    pub fn from_tag(tag: &str) -> AuditActor {
        match tag.split_once(':') {
            Some((kind, id)) => AuditActor::new(ActorKind::parse(kind), id),
            None => AuditActor::operator(tag),
        }
    }
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
    /// The remote-maintenance window (保守作業の時間枠) the actor worked in, if any: every entry
    /// of a maintenance account inside an approved window carries its id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
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
            window: None,
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
            actor: AuditActor::client("app"),
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
            window: None,
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

    /// The typed kind is stored as the lower-case name it always had, so entries written before
    /// it was typed hash and parse the same; a kind from a newer log reads as `Unknown`.
    #[test]
    fn actor_kinds_keep_their_stored_names() {
        let a = AuditActor::user("nurse1", Some("Practitioner/p1".into()));
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(json, r#"{"fhir_user":"Practitioner/p1","id":"nurse1","kind":"user"}"#);
        assert_eq!(serde_json::from_str::<AuditActor>(&json).unwrap(), a);
        let newer: AuditActor = serde_json::from_str(r#"{"id":"x","kind":"robot"}"#).unwrap();
        assert_eq!(newer.kind, ActorKind::Unknown);
        for k in [ActorKind::Client, ActorKind::User, ActorKind::Operator, ActorKind::System, ActorKind::Anonymous] {
            assert_eq!(ActorKind::parse(k.as_str()), k);
        }
        assert_eq!(AuditActor::from_tag("system:oauth"), AuditActor::new(ActorKind::System, "oauth"));
        assert_eq!(AuditActor::from_tag("kansa"), AuditActor::operator("kansa"));
        assert_eq!(AuditActor::operator("kansa").tag(), "operator:kansa");
        assert_eq!(a.label(), "Practitioner/p1");
        assert_eq!(AuditActor::client("app").label(), "client:app");
    }
}
