//! The security manager's reviews (見直し):
//!
//! - Break-glass uses (Z5): every grant enters a queue that stays open until closed with a note.
//! - Access review campaigns (Z6): periodic, or opened by a transfer (人事異動); a manager
//!   confirms or revokes each user's roles. A revocation changes the account at once, through
//!   the identity service (audited). Campaigns are kept as configuration versions (kind
//!   `access-review`), so every decision is versioned, attributed and audited.
//! - Least-privilege report (Z6): rights granted by each user's roles versus rights used in the
//!   last N days, from the audit trail. Reading records for their classes is audited as the
//!   caller's read.

use std::collections::BTreeSet;

use mamori_audit::EntryQuery;
use mamori_authz::{Act, PolicyEngine, Situation, Subject, Target};
use mamori_identity::account::Status;
use mamori_records::{BreakGlassGrant, RequestContext, ResourceId, ResourceType};
use serde::{Deserialize, Serialize};

use crate::ctx::{change_config, failed};
use crate::node::load_policies;
use crate::registry::ConfigKind;
use crate::{AdminAct, AppError, Ctx, Node};

const KIND: ConfigKind = ConfigKind::AccessReview;

/// One reviewed account.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Item {
    /// The account.
    pub username: String,
    /// Its roles when the campaign opened.
    pub roles: Vec<String>,
    /// The decision, once made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<ItemDecision>,
}

/// A manager's decision on one item.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ItemDecision {
    /// Roles kept.
    pub kept: Vec<String>,
    /// Roles revoked.
    pub revoked: Vec<String>,
    /// Who decided.
    pub by: String,
    /// When (µs).
    pub at: i64,
    /// Note.
    pub note: String,
}

/// An access review campaign.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Campaign {
    /// Id.
    pub id: String,
    /// Why it was opened.
    pub reason: String,
    /// When (µs).
    pub opened_at: i64,
    /// Who opened it.
    pub opened_by: String,
    /// The accounts under review.
    pub items: Vec<Item>,
}

impl Campaign {
    /// Items still undecided.
    pub fn open_items(&self) -> usize {
        self.items.iter().filter(|i| i.decision.is_none()).count()
    }
}

fn save(ctx: &Ctx, node: &Node, c: &Campaign, expected: Option<u64>, reason: &str) -> Result<u64, AppError> {
    let value = serde_json::to_value(c).map_err(failed)?;
    change_config(ctx, node, KIND, &c.id, Some(value), reason, expected)
}

fn load(node: &Node, id: &str) -> Result<(Campaign, u64), AppError> {
    let e = node
        .store
        .config_get(KIND.name(), id)
        .map_err(failed)?
        .ok_or_else(|| AppError::NotFound(format!("no campaign `{id}`")))?;
    let c = serde_json::from_value(e.value.unwrap_or_default()).map_err(|e| failed(format!("stored campaign: {e}")))?;
    Ok((c, e.version))
}

/// Opens a campaign over `users` (every active account when empty).
pub fn open(ctx: &Ctx, node: &Node, reason: &str, users: &[String]) -> Result<Campaign, AppError> {
    ctx.authorize(node, AdminAct::ReviewAccess)?;
    if reason.trim().is_empty() {
        return Err(AppError::Invalid("an access review must say why it is opened".into()));
    }
    open_for(ctx, node, reason.trim(), users)
}

/// Opens a campaign as part of another act the caller was authorized for (a transfer).
pub(crate) fn open_for(ctx: &Ctx, node: &Node, reason: &str, users: &[String]) -> Result<Campaign, AppError> {
    let accounts = node.identity.accounts()?;
    let mut items = Vec::new();
    for a in accounts.into_iter().filter(|a| a.status == Status::Active) {
        if users.is_empty() || users.contains(&a.username) {
            items.push(Item { username: a.username, roles: a.roles, decision: None });
        }
    }
    if let Some(missing) = users.iter().find(|u| !items.iter().any(|i| &i.username == *u)) {
        return Err(AppError::NotFound(format!("no active account `{missing}`")));
    }
    if items.is_empty() {
        return Err(AppError::Invalid("no active accounts to review".into()));
    }
    let now = ctx.now().0;
    let date = mamori_records::Timestamp(now).to_fhir();
    let suffix = ResourceId::random().map_err(failed)?.to_string();
    let id = format!("{}-{}", date.get(0..10).unwrap_or("review"), suffix.get(0..8).unwrap_or("0"));
    let c = Campaign { id, reason: reason.to_string(), opened_at: now, opened_by: ctx.by(), items };
    save(ctx, node, &c, None, &format!("access review opened: {reason}"))?;
    Ok(c)
}

/// Every campaign.
pub fn list(ctx: &Ctx, node: &Node) -> Result<Vec<Campaign>, AppError> {
    ctx.authorize(node, AdminAct::ReviewAccess)?;
    let mut out = Vec::new();
    for e in node.store.config_current(KIND.name()).map_err(AppError::from)? {
        out.push(serde_json::from_value(e.value.unwrap_or_default()).map_err(failed)?);
    }
    Ok(out)
}

/// One campaign.
pub fn show(ctx: &Ctx, node: &Node, id: &str) -> Result<Campaign, AppError> {
    ctx.authorize(node, AdminAct::ReviewAccess)?;
    Ok(load(node, id)?.0)
}

/// A decision on one item: confirm every role (`revoke` empty), or revoke some.
pub fn decide(
    ctx: &Ctx,
    node: &Node,
    campaign: &str,
    user: &str,
    revoke: &[String],
    note: &str,
) -> Result<(ItemDecision, usize), AppError> {
    ctx.authorize(node, AdminAct::ReviewAccess)?;
    if let crate::Caller::Person { username, .. } = &ctx.caller
        && username == user
    {
        return Err(AppError::Forbidden("自分自身の権限は見直せません / you may not review your own access".into()));
    }
    let (mut c, version) = load(node, campaign)?;
    let account = node.identity.account(user)?.ok_or_else(|| AppError::NotFound(format!("no account `{user}`")))?;
    let item = c
        .items
        .iter_mut()
        .find(|i| i.username == user)
        .ok_or_else(|| AppError::NotFound(format!("`{user}` is not in campaign {campaign}")))?;
    if item.decision.is_some() {
        return Err(AppError::Conflict(format!("`{user}` was already decided in {campaign}")));
    }
    if let Some(bad) = revoke.iter().find(|r| !account.roles.contains(r)) {
        return Err(AppError::Invalid(format!("`{user}` does not hold the role `{bad}`")));
    }
    let kept: Vec<String> = account.roles.iter().filter(|r| !revoke.contains(r)).cloned().collect();
    let decision = ItemDecision {
        kept: kept.clone(),
        revoked: revoke.to_vec(),
        by: ctx.by(),
        at: ctx.now().0,
        note: note.to_string(),
    };
    item.decision = Some(decision.clone());
    if !revoke.is_empty() {
        node.identity.set_roles(
            &ctx.by(),
            user,
            kept,
            &format!("access review {campaign}: revoked {}", revoke.join(", ")),
        )?;
    }
    save(ctx, node, &c, Some(version), &format!("access review decision for {user}"))?;
    Ok((decision, c.open_items()))
}

/// Break-glass grants, newest first (`open_only`: reviews not yet closed).
pub fn break_glass(ctx: &Ctx, node: &Node, open_only: bool) -> Result<Vec<BreakGlassGrant>, AppError> {
    ctx.authorize(node, AdminAct::ReviewBreakGlass)?;
    Ok(node.records.break_glass_grants(open_only)?)
}

/// Closes the review of a break-glass use with the reviewer's finding (required; audited).
pub fn close_break_glass(ctx: &Ctx, node: &Node, grant: &str, note: &str) -> Result<(), AppError> {
    ctx.authorize(node, AdminAct::ReviewBreakGlass)?;
    if note.trim().is_empty() {
        return Err(AppError::Invalid("closing a review needs a note".into()));
    }
    let grants = node.records.break_glass_grants(true)?;
    if let crate::Caller::Person { username, .. } = &ctx.caller
        && grants.iter().any(|g| g.id == grant && &g.username == username)
    {
        return Err(AppError::Forbidden(
            "自分の非常時アクセスは自分でレビューできません / you may not review your own break-glass use".into(),
        ));
    }
    Ok(node.records.close_break_glass(&ctx.records(node), grant, note)?)
}

/// One right: an action on a class.
pub type Right = (String, Act);

/// Types a class is typically carried by, to probe policies that also look at the type.
const PROBE_TYPES: &[&str] = &[
    "Observation",
    "Condition",
    "DiagnosticReport",
    "MedicationRequest",
    "MedicationDispense",
    "AllergyIntolerance",
    "Patient",
    "Encounter",
    "AuditEvent",
    "CapabilityStatement",
];

/// The (class, action) pairs a role permits on some probe type, in care.
fn granted(engine: &PolicyEngine, roles: &[String]) -> BTreeSet<Right> {
    let mut out = BTreeSet::new();
    let subject = Subject::User {
        username: "probe".into(),
        roles: roles.to_vec(),
        department: String::new(),
        has_fhir_user: true,
        window: None,
    };
    for class in mamori_authz::taxonomy() {
        for act in [Act::Read, Act::Search, Act::Create, Act::Update, Act::Delete] {
            let any = PROBE_TYPES.iter().any(|t| {
                let target = Target {
                    resource_type: (*t).to_string(),
                    reference: Some(format!("{t}/probe")),
                    classes: [class.code.clone()].into(),
                    patient_bound: true,
                    lab: true,
                };
                engine.decide(&subject, act, &target, &Situation { care: true, ..Situation::default() }).allowed
            });
            if any {
                out.insert((class.code.clone(), act));
            }
        }
    }
    out
}

fn act_of(action: &str) -> Option<Act> {
    Some(match action {
        "read" | "vread" | "history" => Act::Read,
        "search" => Act::Search,
        "create" => Act::Create,
        "update" | "patch" => Act::Update,
        "delete" => Act::Delete,
        _ => return None,
    })
}

/// The (class, action) pairs a user exercised since `since` (µs), from the audit trail.
fn used(node: &Node, rctx: &RequestContext, username: &str, since: i64) -> Result<BTreeSet<Right>, AppError> {
    let mut out = BTreeSet::new();
    let mut from = 0;
    loop {
        let q = EntryQuery {
            since: Some(since),
            agent: Some(username.to_string()),
            from_index: from,
            limit: 4096,
            ..EntryQuery::default()
        };
        let batch = node.store.query(&q).map_err(failed)?;
        let Some((last, _)) = batch.last() else { break };
        from = last + 1;
        for (_, bytes) in &batch {
            let Ok(r) = serde_json::from_slice::<mamori_audit::AuditRecord>(bytes) else { continue };
            if r.actor.id != username || r.outcome != mamori_audit::Outcome::Success {
                continue;
            }
            let Some(act) = act_of(&r.action) else { continue };
            for res in &r.resources {
                let parts: Vec<&str> = res.split('/').collect();
                let (Some(t), Some(i)) = (parts.first(), parts.get(1)) else { continue };
                let (Ok(rt), Ok(id)) = (ResourceType::parse(t), ResourceId::parse(i)) else { continue };
                let version = parts.get(3).and_then(|v| v.parse::<u64>().ok());
                let v = node.records.version_of(rctx, &rt, &id, version)?;
                for c in v.map(|v| v.classes).unwrap_or_default() {
                    out.insert((c, act));
                }
            }
        }
        if batch.len() < 4096 {
            break;
        }
    }
    Ok(out)
}

/// One account's line of the least-privilege report.
#[derive(Debug, Clone)]
pub struct Usage {
    /// The account.
    pub username: String,
    /// Its roles.
    pub roles: Vec<String>,
    /// Rights its roles grant.
    pub granted: BTreeSet<Right>,
    /// Rights it used in the window.
    pub used: BTreeSet<Right>,
    /// Roles none of whose rights were used: candidates for revocation (見直し候補).
    pub unused_roles: Vec<String>,
}

/// Least-privilege report over the last `days` days, for every active account or one.
pub fn report(ctx: &Ctx, node: &Node, days: u32, user: Option<&str>) -> Result<Vec<Usage>, AppError> {
    ctx.authorize(node, AdminAct::ReviewAccess)?;
    let rctx = ctx.metadata_reads();
    let engine = load_policies(&*node.store).map_err(AppError::from)?;
    let since = ctx.now().0 - i64::from(days) * 86_400_000_000;
    let mut out = Vec::new();
    for a in node.identity.accounts()? {
        if a.status != Status::Active || user.is_some_and(|u| u != a.username) {
            continue;
        }
        let g = granted(&engine, &a.roles);
        let u = used(node, &rctx, &a.username, since)?;
        let unused_roles = a
            .roles
            .iter()
            .filter(|role| {
                let alone = granted(&engine, std::slice::from_ref(*role));
                !alone.is_empty() && alone.is_disjoint(&u)
            })
            .cloned()
            .collect();
        out.push(Usage { username: a.username, roles: a.roles, granted: g, used: u, unused_roles });
    }
    // The records the report looked at (for their classes) are audited as its reads.
    let detail = format!("least-privilege report over {days} days: classes of the records each account used");
    node.records.audit_reads(&rctx, mamori_records::ReadAction::Read, Some(detail))?;
    Ok(out)
}
