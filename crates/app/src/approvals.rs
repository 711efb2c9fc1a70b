//! The two-person rule (C3, issue #25): a high-risk change is not made by one person. It is
//! stored as a request bound to the SHA-256 of the exact change (canonical JSON), and takes
//! effect only when a second person with the right (`approve-change`) approves that hash; the
//! requester cannot approve their own, requests expire, and every step — requested, approved,
//! refused, withdrawn, expired, failed — is a version of the request in `workflow_versions`,
//! written and audited through the one configuration path.
//!
//! High-risk (what [`config_risk`] and the account use cases ask for):
//! - the access policies, the information-class rules, the configuration baseline (approving one
//!   or accepting a change made around the path);
//! - an application with `system/` scopes: registering it, changing its scopes, classes or
//!   addresses, enabling it (disabling it, or rotating its secret or keys, is not);
//! - an account given administrative rights it did not have (any act of `AdminAct::ALL` its new
//!   roles allow and its old ones did not): issuing it with them, a transfer into them, enabling it.
//!
//! Settings in `mamori.toml` (retention, the password and second-factor rules, the audit
//! witness) are edited in the file by whoever runs the server; a change there shows as drift from
//! the approved baseline until a new baseline is approved — which is itself under this rule.
//!
//! Where nobody but the requester could approve (a fresh installation with one administrator),
//! the change applies at once and a `two-person-waived` audit entry says so. A request made at the
//! command line (an operator, whose name the command line does not prove) must be approved by a
//! person signed in to the console.

use hmac::{Hmac, Mac};
use mamori_authz::Subject;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::ctx::{change_config, failed};
use crate::registry::ConfigKind;
use crate::{AdminAct, AppError, Caller, Ctx, Node};

const KIND: ConfigKind = ConfigKind::ChangeRequest;

/// The operator name under which expired requests are closed.
const EXPIRY: &str = "mamori-approvals";

/// The exact change a request stands for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Change {
    /// A new version of a configuration entry, decided on version `expected`.
    Config {
        /// The registry kind.
        kind: String,
        /// The entry.
        key: String,
        /// The new value (`None`: removed).
        value: Option<serde_json::Value>,
        /// The version it replaces (`None`: it must not exist yet).
        expected: Option<u64>,
        /// Why, as the requester gave it.
        reason: String,
    },
    /// New roles (and department) for an account, decided on its version `expected`.
    Roles {
        /// The account.
        username: String,
        /// The new department, if it changes.
        department: Option<String>,
        /// The new roles.
        roles: Vec<String>,
        /// The account's version.
        expected: u64,
    },
    /// Enabling an account whose roles carry administrative rights, decided on its version
    /// `expected` (an account issued with such roles is created disabled and waits for this).
    Enable {
        /// The account.
        username: String,
        /// Its roles, as the approver sees them.
        roles: Vec<String>,
        /// The account's version.
        expected: u64,
    },
}

impl Change {
    /// The hash a request is bound to: SHA-256 of the change's canonical JSON, hex.
    pub fn sha256(&self) -> String {
        let v = serde_json::to_value(self).unwrap_or_default();
        hex::encode(mamori_records::content_hash(&v))
    }
}

/// Where a request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Waiting for a second person.
    Pending,
    /// Approved and applied.
    Approved,
    /// Refused by a second person.
    Refused,
    /// Withdrawn by the requester.
    Withdrawn,
    /// Not decided in time.
    Expired,
    /// Approved, but the entry had changed meanwhile: nothing was applied.
    Failed,
}

impl State {
    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Approved => "approved",
            State::Refused => "refused",
            State::Withdrawn => "withdrawn",
            State::Expired => "expired",
            State::Failed => "failed",
        }
    }

    /// In Japanese and English.
    pub fn label(self) -> (&'static str, &'static str) {
        match self {
            State::Pending => ("承認待ち", "pending"),
            State::Approved => ("承認・反映済み", "approved"),
            State::Refused => ("却下", "refused"),
            State::Withdrawn => ("取り下げ", "withdrawn"),
            State::Expired => ("期限切れ", "expired"),
            State::Failed => ("反映できず", "failed"),
        }
    }
}

/// A request for a high-risk change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// Its number.
    pub id: String,
    /// What it changes, exactly.
    pub change: Change,
    /// [`Change::sha256`] when it was requested.
    pub sha256: String,
    /// What it is, for people.
    pub summary: String,
    /// Who asked (`user:NAME`, `operator:NAME`).
    pub requested_by: String,
    /// When (µs).
    pub requested_at: i64,
    /// Undecided after this (µs), it expires.
    pub expires_at: i64,
    /// Where it stands.
    pub state: State,
    /// Who decided, withdrew, or closed it.
    #[serde(default)]
    pub decided_by: Option<String>,
    /// When (µs).
    #[serde(default)]
    pub decided_at: Option<i64>,
    /// The decider's note.
    #[serde(default)]
    pub note: Option<String>,
    /// The version the approved change was written as.
    #[serde(default)]
    pub applied_version: Option<u64>,
    /// HMAC-SHA256 over number, hash, requester and times under a key derived from the master
    /// key: a request written around the path (its change swapped in the database) is refused.
    pub seal: String,
}

/// A change held for a second person: what the requester is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// The request's number.
    pub id: String,
    /// The hash the approver must confirm.
    pub sha256: String,
    /// What it is.
    pub summary: String,
    /// When it expires (µs).
    pub expires_at: i64,
}

type HmacSha256 = Hmac<Sha256>;

fn seal_mac(node: &Node, r: &Request) -> HmacSha256 {
    let mut mac = <HmacSha256 as Mac>::new_from_slice(&node.request_key).unwrap_or_else(|_| unreachable!());
    for part in [r.id.as_bytes(), r.sha256.as_bytes(), r.requested_by.as_bytes()] {
        mac.update(part);
        mac.update(b"\0");
    }
    mac.update(&r.requested_at.to_be_bytes());
    mac.update(&r.expires_at.to_be_bytes());
    mac
}

fn sealed(node: &Node, r: &Request) -> bool {
    let Ok(bytes) = hex::decode(&r.seal) else { return false };
    seal_mac(node, r).verify_slice(&bytes).is_ok() && r.change.sha256() == r.sha256
}

/// Whether a new version of a configuration entry is a high-risk change; the reason, if it is.
pub(crate) fn config_risk(
    node: &Node,
    kind: ConfigKind,
    key: &str,
    value: Option<&serde_json::Value>,
) -> Result<Option<&'static str>, AppError> {
    Ok(match kind {
        ConfigKind::Policies => Some("access policies"),
        ConfigKind::ClassRules => Some("information-class rules"),
        ConfigKind::Baseline => Some("configuration baseline"),
        ConfigKind::ExternalSettings => Some("external settings baseline"),
        ConfigKind::Client => {
            let Some(new) = value.and_then(|v| serde_json::from_value::<mamori_oauth::Client>(v.clone()).ok()) else {
                return Ok(None);
            };
            let system = new.scope.split_whitespace().any(|s| s.starts_with("system/"));
            if !system || new.disabled {
                return Ok(None);
            }
            let old = node
                .store
                .config_get(kind.name(), key)
                .map_err(AppError::from)?
                .and_then(|e| e.value)
                .and_then(|v| serde_json::from_value::<mamori_oauth::Client>(v).ok());
            match old {
                Some(o)
                    if !o.disabled
                        && o.scope == new.scope
                        && o.classes == new.classes
                        && o.allow_ip == new.allow_ip =>
                {
                    None
                }
                _ => Some("an application with system/ scopes"),
            }
        }
        _ => None,
    })
}

fn subject(username: &str, roles: &[String]) -> Subject {
    Subject::User {
        username: username.into(),
        roles: roles.to_vec(),
        department: String::new(),
        has_fhir_user: true,
        window: None,
    }
}

/// The administrative acts `new` roles allow that `old` ones do not, by the policies in force.
pub fn admin_gain(node: &Node, username: &str, old: &[String], new: &[String]) -> Vec<AdminAct> {
    AdminAct::ALL
        .into_iter()
        .filter(|a| {
            node.enforcer.authorize_admin(&subject(username, new), *a).is_ok()
                && node.enforcer.authorize_admin(&subject(username, old), *a).is_err()
        })
        .collect()
}

/// Whether someone other than the caller could approve a request now: an active account, not
/// the caller's, allowed `approve-change` by the policies in force.
pub(crate) fn second_person_exists(ctx: &Ctx, node: &Node) -> Result<bool, AppError> {
    let me = match &ctx.caller {
        Caller::Person { username, .. } => Some(username.as_str()),
        Caller::Operator(_) | Caller::Application(_) => None,
    };
    for a in node.store.accounts()? {
        if a.status != mamori_identity::account::Status::Active || Some(a.username.as_str()) == me {
            continue;
        }
        if node.enforcer.authorize_admin(&subject(&a.username, &a.roles), AdminAct::ApproveChange).is_ok() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Holds `change` for a second person: stores the request and returns [`AppError::Pending`].
/// When nobody else could approve, returns `Ok` after recording a `two-person-waived` audit
/// entry, and the caller applies the change at once.
pub(crate) fn hold(ctx: &Ctx, node: &Node, change: Change, summary: String) -> Result<(), AppError> {
    if !second_person_exists(ctx, node)? {
        return waive(ctx, node, &change, &summary);
    }
    let p = request(ctx, node, change, summary)?;
    Err(AppError::Pending(Box::new(p)))
}

/// Records that `change` was made without a second person because nobody else could approve it
/// (a `two-person-waived` audit entry naming it and its hash).
pub(crate) fn waive(ctx: &Ctx, node: &Node, change: &Change, summary: &str) -> Result<(), AppError> {
    let mut e = mamori_audit::AuditRecord::new(
        "two-person-waived",
        ctx.audit_actor(),
        mamori_audit::Outcome::Success,
        "HOPERAT",
    );
    e.detail = Some(format!(
        "{summary}: applied without a second person — no other active account may approve changes (sha256 {})",
        change.sha256()
    ));
    e.request_id = ctx.request_id.clone();
    e.source = ctx.source.clone();
    node.store.append(vec![e]).map_err(|e| AppError::Failed(format!("audit: {e}")))?;
    Ok(())
}

fn request(ctx: &Ctx, node: &Node, change: Change, summary: String) -> Result<Pending, AppError> {
    let now = ctx.now().0;
    let expires_at = now.saturating_add(i64::from(node.config.approval_hours).saturating_mul(3_600_000_000));
    for _ in 0..5 {
        let n = node.store.config_current(KIND.name()).map_err(AppError::from)?.len() + 1;
        let mut r = Request {
            id: n.to_string(),
            sha256: change.sha256(),
            change: change.clone(),
            summary: summary.clone(),
            requested_by: ctx.by(),
            requested_at: now,
            expires_at,
            state: State::Pending,
            decided_by: None,
            decided_at: None,
            note: None,
            applied_version: None,
            seal: String::new(),
        };
        r.seal = hex::encode(seal_mac(node, &r).finalize().into_bytes());
        let value = serde_json::to_value(&r).map_err(failed)?;
        let reason = format!("change requested (sha256 {}): {summary}", r.sha256);
        match change_config(ctx, node, KIND, &r.id, Some(value), &reason, None) {
            Ok(_) => return Ok(Pending { id: r.id, sha256: r.sha256, summary, expires_at }),
            // Another request took the number meanwhile: the next one.
            Err(AppError::Conflict(_)) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(AppError::Unavailable("could not number the request; retry".into()))
}

fn load(node: &Node, id: &str) -> Result<(Request, u64), AppError> {
    let e = node
        .store
        .config_get(KIND.name(), id)
        .map_err(AppError::from)?
        .filter(|e| e.value.is_some())
        .ok_or_else(|| AppError::NotFound(format!("no change request `{id}`")))?;
    let r: Request = serde_json::from_value(e.value.unwrap_or_default())
        .map_err(|err| AppError::Failed(format!("change request {id} cannot be read: {err}")))?;
    if !sealed(node, &r) {
        return Err(AppError::Conflict(format!(
            "change request {id} was altered outside Mamori (its seal does not match); it cannot be decided"
        )));
    }
    Ok((r, e.version))
}

/// Writes the request's next state.
fn close(
    ctx: &Ctx,
    node: &Node,
    mut r: Request,
    version: u64,
    state: State,
    note: Option<String>,
) -> Result<Request, AppError> {
    r.state = state;
    r.decided_by = Some(ctx.by());
    r.decided_at = Some(ctx.now().0);
    r.note = note;
    let value = serde_json::to_value(&r).map_err(failed)?;
    let reason = format!("change request {} {}", r.id, state.name());
    change_config(ctx, node, KIND, &r.id, Some(value), &reason, Some(version))?;
    Ok(r)
}

/// Every request, newest first, pending ones as they stand now (a pending request past its time
/// shows as expired even before the watcher closes it). `approve-change` or `read-audit`.
pub fn list(ctx: &Ctx, node: &Node) -> Result<Vec<Request>, AppError> {
    ctx.authorize_any(node, &[AdminAct::ApproveChange, AdminAct::ReadAudit])?;
    let now = ctx.now().0;
    let mut out: Vec<Request> =
        mamori_store_sql::decode_all(node.store.config_current(KIND.name())?).map_err(failed)?;
    for r in &mut out {
        if r.state == State::Pending && now > r.expires_at {
            r.state = State::Expired;
        }
    }
    out.sort_by_key(|r| std::cmp::Reverse(r.id.parse::<u64>().unwrap_or(0)));
    Ok(out)
}

/// One request, with the current value it would replace (for the approver to compare).
pub fn show(ctx: &Ctx, node: &Node, id: &str) -> Result<(Request, Option<serde_json::Value>), AppError> {
    ctx.authorize_any(node, &[AdminAct::ApproveChange, AdminAct::ReadAudit])?;
    let (r, _) = load(node, id)?;
    let current = match &r.change {
        Change::Config { kind, key, .. } => {
            node.store.config_get(kind, key).map_err(AppError::from)?.and_then(|e| e.value)
        }
        Change::Roles { username, .. } | Change::Enable { username, .. } => {
            node.store.account(username)?.and_then(|(a, _)| serde_json::to_value(a).ok())
        }
    };
    Ok((r, current))
}

/// Approves request `id` whose change hashes to `sha256` (what the approver was shown), and
/// applies it exactly: the entry must still be at the version the request was decided on.
/// Returns the request as closed.
pub fn approve(ctx: &Ctx, node: &Node, id: &str, sha256: &str, note: &str) -> Result<Request, AppError> {
    ctx.authorize(node, AdminAct::ApproveChange)?;
    let (r, version) = load(node, id)?;
    if r.state != State::Pending {
        return Err(AppError::Conflict(format!("change request {id} is already {}", r.state.name())));
    }
    if ctx.now().0 > r.expires_at {
        close(&Ctx::operator(node, EXPIRY), node, r, version, State::Expired, None)?;
        return Err(AppError::Conflict(format!("change request {id} has expired")));
    }
    if r.requested_by == ctx.by() {
        return Err(AppError::Forbidden(
            "自分の依頼は承認できません。別の担当者の承認が必要です / you may not approve your own request: a second person must".into(),
        ));
    }
    if matches!(ctx.caller, Caller::Operator(_)) && r.requested_by.starts_with("operator:") {
        return Err(AppError::Forbidden(
            "a request made at the command line must be approved by a person signed in to the console".into(),
        ));
    }
    if !sha256.trim().eq_ignore_ascii_case(&r.sha256) {
        return Err(AppError::Conflict(format!(
            "change request {id} is not the change you confirmed (its sha256 is {}); look at it again",
            r.sha256
        )));
    }
    let note = note.trim();
    let mut actx = ctx.clone();
    actx.two_person = Some(format!("request {id}"));
    let applied = match &r.change {
        Change::Config { kind, key, value, expected, reason } => {
            let k = ConfigKind::parse(kind).ok_or_else(|| AppError::Failed(format!("unknown kind `{kind}`")))?;
            let why = format!(
                "{reason} (two-person rule: requested by {}, approved by {}, request {id}, sha256 {})",
                r.requested_by,
                ctx.by(),
                r.sha256
            );
            change_config(&actx, node, k, key, value.clone(), &why, *expected)
        }
        Change::Roles { username, department, roles, expected } => crate::users::apply_transfer(
            &actx,
            node,
            username,
            department.clone(),
            Some(roles.clone()),
            Some(*expected),
        )
        .and_then(|_| Ok(node.store.account(username)?.map_or(0, |(_, v)| v))),
        Change::Enable { username, expected, .. } => node
            .identity
            .enable(&actx.by(), username, Some(*expected))
            .map_err(AppError::from)
            .and_then(|_| Ok(node.store.account(username)?.map_or(0, |(_, v)| v))),
    };
    match applied {
        Ok(v) => {
            let mut r = r;
            r.applied_version = Some(v);
            close(ctx, node, r, version, State::Approved, (!note.is_empty()).then(|| note.to_string()))
        }
        Err(AppError::Conflict(m)) => {
            close(ctx, node, r, version, State::Failed, Some(format!("not applied: {m}")))?;
            Err(AppError::Conflict(format!(
                "change request {id} was not applied: the entry changed after it was requested ({m}); request it again"
            )))
        }
        Err(e) => Err(e),
    }
}

/// Refuses request `id` (a second person, with a reason).
pub fn refuse(ctx: &Ctx, node: &Node, id: &str, note: &str) -> Result<Request, AppError> {
    ctx.authorize(node, AdminAct::ApproveChange)?;
    if note.trim().is_empty() {
        return Err(AppError::Invalid("refusing a request must say why".into()));
    }
    let (r, version) = load(node, id)?;
    if r.state != State::Pending {
        return Err(AppError::Conflict(format!("change request {id} is already {}", r.state.name())));
    }
    if r.requested_by == ctx.by() {
        return Err(AppError::Invalid("to take back your own request, withdraw it".into()));
    }
    close(ctx, node, r, version, State::Refused, Some(note.trim().to_string()))
}

/// Withdraws the caller's own pending request.
pub fn withdraw(ctx: &Ctx, node: &Node, id: &str) -> Result<Request, AppError> {
    let (r, version) = load(node, id)?;
    if r.requested_by != ctx.by() {
        return Err(AppError::Forbidden(format!("change request {id} is not yours to withdraw")));
    }
    if r.state != State::Pending {
        return Err(AppError::Conflict(format!("change request {id} is already {}", r.state.name())));
    }
    close(ctx, node, r, version, State::Withdrawn, None)
}

/// Closes every pending request past its time as expired (audited through the path); returns
/// how many. Run by the integrity watcher.
pub fn expire_due(node: &Node) -> Result<usize, AppError> {
    let ctx = Ctx::operator(node, EXPIRY);
    let now = ctx.now().0;
    let mut n = 0;
    for e in node.store.config_current(KIND.name())? {
        let version = e.version;
        let Some(r) = e.value.and_then(|v| serde_json::from_value::<Request>(v).ok()) else { continue };
        if r.state == State::Pending && now > r.expires_at && sealed(node, &r) {
            match close(&ctx, node, r, version, State::Expired, None) {
                Ok(_) => n += 1,
                Err(AppError::Conflict(_)) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(n)
}

/// Pending requests the caller could decide (not their own), for the dashboard's count.
pub fn waiting_for(ctx: &Ctx, node: &Node) -> Result<usize, AppError> {
    if !ctx.may(node, AdminAct::ApproveChange) {
        return Ok(0);
    }
    let now = ctx.now().0;
    let all: Vec<Request> = mamori_store_sql::decode_all(node.store.config_current(KIND.name())?).map_err(failed)?;
    Ok(all.iter().filter(|r| r.state == State::Pending && now <= r.expires_at && r.requested_by != ctx.by()).count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_hashes_by_content_not_by_key_order() {
        let a = Change::Config {
            kind: "policies".into(),
            key: "active".into(),
            value: Some(serde_json::json!({"text": "x", "tests": "y"})),
            expected: Some(3),
            reason: "r".into(),
        };
        let b = Change::Config {
            kind: "policies".into(),
            key: "active".into(),
            value: Some(serde_json::from_str(r#"{"tests": "y", "text": "x"}"#).unwrap()),
            expected: Some(3),
            reason: "r".into(),
        };
        assert_eq!(a.sha256(), b.sha256());
        assert_eq!(a.sha256().len(), 64);
        let c = Change::Config {
            kind: "policies".into(),
            key: "active".into(),
            value: Some(serde_json::json!({"text": "x ", "tests": "y"})),
            expected: Some(3),
            reason: "r".into(),
        };
        assert_ne!(a.sha256(), c.sha256(), "one character is another change");
        let d = Change::Config {
            kind: "policies".into(),
            key: "active".into(),
            value: Some(serde_json::json!({"text": "x", "tests": "y"})),
            expected: Some(4),
            reason: "r".into(),
        };
        assert_ne!(a.sha256(), d.sha256(), "decided on another version: another change");
    }
}
