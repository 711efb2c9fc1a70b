//! External settings (C4, issue #25): another system's exported settings — a cloud tenant's
//! policy JSON, a network device's configuration export — registered as a signed baseline of
//! their own, and checked against a later export: every changed, added and removed field named
//! by its JSON Pointer (RFC 6901), each check recorded, drift alerted.
//!
//! Registering (or replacing) an external baseline is a high-risk change like approving Mamori's
//! own baseline (`approve-baseline`, then a second person under the two-person rule). The entry
//! is security configuration (`config_versions`, kind `external-settings`, sealed and watched
//! like any other); the settings are kept whole with a note signed by the node's key over their
//! canonical SHA-256, and the hash is in the change's audit entry. Each check is a version of
//! workflow state (`external-check`, key = the name).

use mamori_audit::note::NoteVerifier;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ctx::{change_config, failed};
use crate::registry::ConfigKind;
use crate::{AdminAct, AppError, Ctx, Node};

const KIND: ConfigKind = ConfigKind::ExternalSettings;
const CHECKS: ConfigKind = ConfigKind::ExternalCheck;

/// The first line of an external baseline's signed note.
const HEADER: &str = "mamori external settings baseline";

/// At most this many paths of each sort are kept with a recorded check (all are returned).
const KEPT_PATHS: usize = 500;

/// A registered external baseline, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct External {
    /// Its name (`a-z 0-9 . _ -`).
    pub name: String,
    /// The approved settings, whole.
    pub settings: Value,
    /// SHA-256 of their canonical JSON, hex.
    pub sha256: String,
    /// The note signed by the node's key: header, name, sha256, approved-by, approved-at, reason.
    pub note: String,
    /// Applications (client ids) that may post checks of it over HTTP (a scheduler).
    #[serde(default)]
    pub clients: Vec<String>,
}

/// One difference, by JSON Pointer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Difference {
    /// RFC 6901 JSON Pointer (`/tenant/policies/0/enabled`; `""` is the whole document).
    pub path: String,
    /// The approved value (`None`: added).
    pub approved: Option<Value>,
    /// The value now (`None`: removed).
    pub now: Option<Value>,
}

/// What one check found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    /// The external baseline checked.
    pub name: String,
    /// Its version.
    pub baseline_version: u64,
    /// SHA-256 of the settings checked, canonical JSON.
    pub sha256: String,
    /// When (µs) and by whom.
    pub at: i64,
    /// `user:…`, `operator:…`, `client:…`.
    pub by: String,
    /// Fields whose value changed.
    pub changed: Vec<Difference>,
    /// Fields added.
    pub added: Vec<Difference>,
    /// Fields removed.
    pub removed: Vec<Difference>,
}

impl Check {
    /// Whether anything differs.
    pub fn drift(&self) -> bool {
        !(self.changed.is_empty() && self.added.is_empty() && self.removed.is_empty())
    }
}

/// What a recorded check keeps (paths only, at most [`KEPT_PATHS`] of each sort).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recorded {
    /// The baseline version checked against.
    pub baseline_version: u64,
    /// SHA-256 of the settings checked.
    pub sha256: String,
    /// When (µs).
    pub at: i64,
    /// By whom.
    pub by: String,
    /// Counts: changed, added, removed.
    pub counts: [usize; 3],
    /// The paths, per sort.
    pub changed: Vec<String>,
    /// Added paths.
    pub added: Vec<String>,
    /// Removed paths.
    pub removed: Vec<String>,
}

fn valid_name(n: &str) -> bool {
    (1..=64).contains(&n.len())
        && n.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

fn sha256(v: &Value) -> String {
    hex::encode(mamori_records::content_hash(v))
}

fn pointer_token(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// Every difference from `approved` to `now`, by JSON Pointer, in document order: objects are
/// compared key by key, arrays index by index, anything else by value.
pub fn diff(approved: &Value, now: &Value) -> (Vec<Difference>, Vec<Difference>, Vec<Difference>) {
    let mut out = (Vec::new(), Vec::new(), Vec::new());
    walk(String::new(), approved, now, &mut out);
    out
}

fn walk(path: String, a: &Value, b: &Value, out: &mut (Vec<Difference>, Vec<Difference>, Vec<Difference>)) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (k, va) in x {
                let p = format!("{path}/{}", pointer_token(k));
                match y.get(k) {
                    Some(vb) => walk(p, va, vb, out),
                    None => out.2.push(Difference { path: p, approved: Some(va.clone()), now: None }),
                }
            }
            for (k, vb) in y {
                if !x.contains_key(k) {
                    let p = format!("{path}/{}", pointer_token(k));
                    out.1.push(Difference { path: p, approved: None, now: Some(vb.clone()) });
                }
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            for (i, va) in x.iter().enumerate() {
                let p = format!("{path}/{i}");
                match y.get(i) {
                    Some(vb) => walk(p, va, vb, out),
                    None => out.2.push(Difference { path: p, approved: Some(va.clone()), now: None }),
                }
            }
            for (i, vb) in y.iter().enumerate().skip(x.len()) {
                out.1.push(Difference { path: format!("{path}/{i}"), approved: None, now: Some(vb.clone()) });
            }
        }
        _ => {
            // Numbers compare by value (1.0 and 1 are the same setting), everything else exactly.
            let same = match (a.as_f64(), b.as_f64()) {
                (Some(x), Some(y)) if a.is_number() && b.is_number() => x == y,
                _ => a == b,
            };
            if !same {
                out.0.push(Difference { path, approved: Some(a.clone()), now: Some(b.clone()) });
            }
        }
    }
}

/// Parses an exported settings file: JSON, an object or an array.
pub fn parse(text: &str) -> Result<Value, AppError> {
    let v: Value =
        serde_json::from_str(text).map_err(|e| AppError::Invalid(format!("the settings are not JSON: {e}")))?;
    if !(v.is_object() || v.is_array()) {
        return Err(AppError::Invalid("the settings must be a JSON object or array".into()));
    }
    Ok(v)
}

/// Registers (or replaces) external baseline `name`: `settings` signed by the node's key, kept
/// whole; `clients` may post checks over HTTP. A high-risk change (`approve-baseline`, then a
/// second person). Returns the version.
pub fn add(
    ctx: &Ctx,
    node: &Node,
    name: &str,
    settings: Value,
    clients: Vec<String>,
    reason: &str,
) -> Result<u64, AppError> {
    ctx.authorize(node, AdminAct::ApproveBaseline)?;
    if !valid_name(name) {
        return Err(AppError::Invalid(format!(
            "`{}` is not an external settings name (1–64 of a–z 0–9 . _ -)",
            name.chars().take(80).collect::<String>()
        )));
    }
    if reason.trim().is_empty() {
        return Err(AppError::Invalid("registering external settings must say why".into()));
    }
    if !(settings.is_object() || settings.is_array()) {
        return Err(AppError::Invalid("the settings must be a JSON object or array".into()));
    }
    for c in &clients {
        if node.store.config_get(ConfigKind::Client.name(), c).map_err(AppError::from)?.and_then(|e| e.value).is_none()
        {
            return Err(AppError::Invalid(format!("no application `{c}` is registered")));
        }
    }
    let hash = sha256(&settings);
    let (by, at) = (ctx.by(), ctx.now().0);
    let body = format!(
        "{HEADER}\nname {name}\nsha256 {hash}\napproved-by {by}\napproved-at {at}\nreason {}\n",
        reason.trim().replace('\n', " ")
    );
    let note = node.signer.sign(&body).map_err(failed)?;
    let value =
        serde_json::to_value(External { name: name.to_string(), settings, sha256: hash.clone(), note, clients })
            .map_err(failed)?;
    let prev = node.store.config_get(KIND.name(), name).map_err(AppError::from)?.map(|e| e.version);
    change_config(
        ctx,
        node,
        KIND,
        name,
        Some(value),
        &format!("external settings `{name}` registered (sha256 {hash}): {}", reason.trim()),
        prev,
    )
}

/// The registered external baselines: each with its version, who changed it and when (µs).
pub fn list(ctx: &Ctx, node: &Node) -> Result<Vec<(External, u64, String, i64)>, AppError> {
    ctx.authorize_any(node, &[AdminAct::ReadAudit, AdminAct::ApproveBaseline])?;
    let mut out = Vec::new();
    for e in node.store.config_current(KIND.name()).map_err(AppError::from)? {
        let Some(v) = e.value else { continue };
        let x: External = serde_json::from_value(v).map_err(failed)?;
        out.push((x, e.version, e.changed_by, e.changed_at));
    }
    Ok(out)
}

/// The baseline `name`, its signature and hash checked, with its version.
fn load(node: &Node, name: &str) -> Result<(External, u64), AppError> {
    let e = node
        .store
        .config_get(KIND.name(), name)
        .map_err(AppError::from)?
        .filter(|e| e.value.is_some())
        .ok_or_else(|| AppError::NotFound(format!("no external settings `{name}`")))?;
    let x: External = serde_json::from_value(e.value.unwrap_or_default()).map_err(failed)?;
    let verifier = NoteVerifier::parse(&node.signer.verifier_key()).map_err(failed)?;
    let body = verifier
        .verify(&x.note)
        .map_err(|err| AppError::Failed(format!("external settings `{name}` do not verify: {err}")))?;
    let signed = body.lines().find_map(|l| l.strip_prefix("sha256 "));
    if !body.starts_with(HEADER) || signed != Some(x.sha256.as_str()) || sha256(&x.settings) != x.sha256 {
        return Err(AppError::Failed(format!(
            "external settings `{name}` do not verify: the hash is not the signed one"
        )));
    }
    Ok((x, e.version))
}

/// Checks `current` against external baseline `name`: every difference by JSON Pointer. The
/// check is recorded (a version of `external-check/NAME`, audited) and a drift raises an
/// `alert-external-drift` audit entry. `read-audit` or `approve-baseline`, or an application
/// the baseline lists (the HTTP surface, [`crate::Ctx::application`]); to an application that
/// is not listed, the baseline does not exist.
pub fn check(ctx: &Ctx, node: &Node, name: &str, current: &Value) -> Result<Check, AppError> {
    let (x, version) = match &ctx.caller {
        // An application only for a baseline that lists it; any other name is "not found".
        crate::Caller::Application(id) => {
            let (x, v) = load(node, name).map_err(|_| AppError::NotFound(format!("no external settings `{name}`")))?;
            if !x.clients.iter().any(|c| c == id) {
                return Err(AppError::NotFound(format!("no external settings `{name}`")));
            }
            (x, v)
        }
        _ => {
            ctx.authorize_any(node, &[AdminAct::ReadAudit, AdminAct::ApproveBaseline])?;
            load(node, name)?
        }
    };
    let (changed, added, removed) = diff(&x.settings, current);
    let c = Check {
        name: name.to_string(),
        baseline_version: version,
        sha256: sha256(current),
        at: ctx.now().0,
        by: ctx.by(),
        changed,
        added,
        removed,
    };
    let paths = |d: &[Difference]| d.iter().take(KEPT_PATHS).map(|d| d.path.clone()).collect::<Vec<_>>();
    let recorded = Recorded {
        baseline_version: version,
        sha256: c.sha256.clone(),
        at: c.at,
        by: c.by.clone(),
        counts: [c.changed.len(), c.added.len(), c.removed.len()],
        changed: paths(&c.changed),
        added: paths(&c.added),
        removed: paths(&c.removed),
    };
    let prev = node.store.config_get(CHECKS.name(), name).map_err(AppError::from)?.map(|e| e.version);
    let summary = format!(
        "external settings `{name}` checked (sha256 {}): {} changed, {} added, {} removed",
        c.sha256, recorded.counts[0], recorded.counts[1], recorded.counts[2]
    );
    change_config(ctx, node, CHECKS, name, Some(serde_json::to_value(&recorded).map_err(failed)?), &summary, prev)?;
    if c.drift() {
        let mut alert = mamori_audit::AuditRecord::new(
            "alert-external-drift",
            ctx.audit_actor(),
            mamori_audit::Outcome::Failure,
            "HOPERAT",
        );
        let mut first: Vec<String> =
            c.changed.iter().chain(&c.added).chain(&c.removed).map(|d| d.path.clone()).collect();
        first.truncate(20);
        alert.detail = Some(format!("{summary}; first: {}", first.join(", ")));
        alert.request_id = ctx.request_id.clone();
        alert.source = ctx.source.clone();
        node.store.append(vec![alert]).map_err(|e| AppError::Failed(format!("audit: {e}")))?;
    }
    Ok(c)
}

/// The recorded checks of `name`, newest first.
pub fn checks(ctx: &Ctx, node: &Node, name: &str) -> Result<Vec<Recorded>, AppError> {
    ctx.authorize_any(node, &[AdminAct::ReadAudit, AdminAct::ApproveBaseline])?;
    let mut out = Vec::new();
    for e in node.store.config_history(CHECKS.name(), name).map_err(AppError::from)?.into_iter().rev() {
        if let Some(v) = e.value {
            out.push(serde_json::from_value(v).map_err(failed)?);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn differences_are_named_by_json_pointer() {
        let a =
            json!({"tenant": {"mfa": true, "a/b": 1, "policies": [{"id": "p1", "on": true}, {"id": "p2"}]}, "gone": 1});
        let b = json!({"tenant": {"mfa": false, "a/b": 1.0, "policies": [{"id": "p1", "on": true}], "new~x": "y"}});
        let (changed, added, removed) = diff(&a, &b);
        let p = |d: &[Difference]| d.iter().map(|d| d.path.clone()).collect::<Vec<_>>();
        assert_eq!(p(&changed), vec!["/tenant/mfa"]);
        assert_eq!(p(&added), vec!["/tenant/new~0x"]);
        assert_eq!(p(&removed), vec!["/tenant/policies/1", "/gone"]);
        assert_eq!(changed[0].approved, Some(json!(true)));
        let (c, ad, r) = diff(&a, &a);
        assert!(c.is_empty() && ad.is_empty() && r.is_empty());
        // Another type at the same place is a change of that place.
        let (c, _, _) = diff(&json!({"x": [1]}), &json!({"x": {"0": 1}}));
        assert_eq!(p(&c), vec!["/x"]);
        assert!(parse("[1,").is_err() && parse("3").is_err() && parse("{}").is_ok());
        assert!(valid_name("m365-tenant.prod") && !valid_name("Bad Name") && !valid_name(""));
    }
}
