//! Remote maintenance under the institution's control (リモートメンテナンス; M1, guideline 別冊 6.8;
//! docs/REMOTE-MAINTENANCE.md).
//!
//! - **Vendors** (保守事業者, kind `maintenance-vendor`): the organisation, its contact, its
//!   contract, the accounts of its contacts (`vendor_contact`: request and report, nothing else)
//!   and of its maintenance staff (`maintenance_vendor`: nothing at all outside an approved
//!   window, not even sign in), and the addresses they work from.
//! - **Windows** (保守作業の時間枠, workflow kind `maintenance-window`): a request names the system
//!   or function, the purpose, the planned work items, the time (at most `[maintenance]
//!   max_hours`) and the scope — administrative acts, and patient data only if asked (which
//!   classes, which patients, read or write) — and the addresses. The institution approves (one or
//!   two people, never the requester) or refuses. The window opens at its start time and ends at
//!   its end or when the institution closes it; then every session and token of its accounts is
//!   ended. Every state is a version: the history stays after the window.
//! - **Inside** the window the accounts' rights are exactly the scope, decided by the one
//!   enforcement point with the window in the Cedar context (`context.window`); every audit entry
//!   of theirs carries the window's id (stamped by the one audit append); every configuration
//!   change they make is held for a second person.
//! - **The work report** (作業報告): per planned item what was done, the erasure of any test data
//!   with personal information; beside it the window's activity from the audit trail with every
//!   action outside the plan flagged; accepted (its SHA-256 anchored in the audit trail) or
//!   returned with a note. Reports not filed in `[maintenance] report_days` are alerted.
//! - **The register** (kind `maintenance-register`): which system is maintained remotely by which
//!   vendor — derived from the windows, and edited by the institution.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use mamori_access::{ApprovedWindow, MAINTENANCE_ROLE};
use mamori_audit::{EntryQuery, Outcome};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ctx::{change_config, failed};
use crate::registry::ConfigKind;
use crate::{AdminAct, AppError, Caller, Ctx, Node};

const VENDOR: ConfigKind = ConfigKind::MaintenanceVendor;
const WINDOW: ConfigKind = ConfigKind::MaintenanceWindow;
const REGISTER: ConfigKind = ConfigKind::MaintenanceRegister;

/// The role of a vendor's contact (保守事業者窓口).
pub const CONTACT_ROLE: &str = "vendor_contact";

/// The administrative acts a window may approve. What decides who may see what (policies,
/// class rules, reviews, accounts, approvals) stays with the institution.
pub const DELEGABLE_ACTS: [AdminAct; 7] = [
    AdminAct::ReadAudit,
    AdminAct::ManageClients,
    AdminAct::SetPolicies,
    AdminAct::SetClassRules,
    AdminAct::RotateKeys,
    AdminAct::Import,
    AdminAct::EmergencyMode,
];

const MICROS_PER_HOUR: i64 = 3_600_000_000;

/// The name the node's schedule records its changes under (a window opened, ended, alerted).
pub const SCHEDULE: &str = "maintenance-schedule";

/// `[maintenance]` of mamori.toml.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// The longest window (hours).
    pub max_hours: u32,
    /// How many different people of the institution approve a window (1 or 2).
    pub approvers: u8,
    /// Days after a window ends within which its report is due.
    pub report_days: u32,
}

/// A vendor organisation (保守事業者).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vendor {
    /// Short id (`acme`).
    pub id: String,
    /// Name.
    pub name: String,
    /// How to reach them (person, telephone, mail).
    pub contact: String,
    /// The maintenance contract (保守契約) it works under.
    pub contract: String,
    /// Accounts of its contacts (`vendor_contact`): request and report.
    #[serde(default)]
    pub contacts: Vec<String>,
    /// Its maintenance accounts (`maintenance_vendor`): work inside approved windows only.
    #[serde(default)]
    pub accounts: Vec<String>,
    /// Addresses or CIDR blocks it works from (empty: any), the default of its requests.
    #[serde(default)]
    pub sources: Vec<String>,
}

/// What a window lets its accounts do.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scope {
    /// Administrative acts (`read-audit`, `manage-clients`, …; [`DELEGABLE_ACTS`]).
    #[serde(default)]
    pub acts: Vec<String>,
    /// Information classes of patient data (none by default).
    #[serde(default)]
    pub classes: Vec<String>,
    /// The patients (`Patient/id`) whose data of those classes may be touched.
    #[serde(default)]
    pub patients: Vec<String>,
    /// Patient data may be read.
    #[serde(default)]
    pub read: bool,
    /// Patient data may be written.
    #[serde(default)]
    pub write: bool,
    /// Addresses or CIDR blocks the work may come from (empty: any).
    #[serde(default)]
    pub sources: Vec<String>,
}

impl Scope {
    /// Whether any patient data may be touched.
    pub fn touches_patients(&self) -> bool {
        !self.classes.is_empty() && !self.patients.is_empty() && (self.read || self.write)
    }
}

/// Where a window is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// Waiting for the institution.
    Requested,
    /// Approved; opens at its start time.
    Approved,
    /// Refused (final).
    Refused,
    /// Withdrawn by the requester before it opened (final).
    Withdrawn,
    /// Its end time came before anyone decided it (final).
    Expired,
    /// Its start time has come.
    Open,
    /// Ended (at its end time or closed early); its report is due.
    Closed,
    /// The report is filed and waits for the institution.
    Reported,
    /// The report was returned with a note; a new one is due.
    Returned,
    /// The report was accepted (final).
    Accepted,
}

impl State {
    /// The name (as stored).
    pub fn name(self) -> &'static str {
        match self {
            State::Requested => "requested",
            State::Approved => "approved",
            State::Refused => "refused",
            State::Withdrawn => "withdrawn",
            State::Expired => "expired",
            State::Open => "open",
            State::Closed => "closed",
            State::Reported => "reported",
            State::Returned => "returned",
            State::Accepted => "accepted",
        }
    }

    /// Japanese and English labels.
    pub fn label(self) -> (&'static str, &'static str) {
        match self {
            State::Requested => ("承認待ち", "awaiting approval"),
            State::Approved => ("承認済み (開始前)", "approved (not started)"),
            State::Refused => ("却下", "refused"),
            State::Withdrawn => ("取り下げ", "withdrawn"),
            State::Expired => ("未決定のまま期限切れ", "expired undecided"),
            State::Open => ("作業中", "open"),
            State::Closed => ("終了 (報告待ち)", "ended (report due)"),
            State::Reported => ("報告確認待ち", "report filed"),
            State::Returned => ("報告差し戻し", "report returned"),
            State::Accepted => ("報告受理", "report accepted"),
        }
    }
}

/// A person's decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    /// Who (`user:NAME`, `operator:NAME`).
    pub by: String,
    /// When (µs).
    pub at: i64,
    /// Their note.
    #[serde(default)]
    pub note: String,
}

/// How a window ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Closing {
    /// When (µs).
    pub at: i64,
    /// Who (`system` when its time ran out).
    pub by: String,
    /// Closed before its end time.
    pub early: bool,
    /// Why.
    #[serde(default)]
    pub reason: String,
    /// Tokens revoked and sessions ended.
    #[serde(default)]
    pub revoked: u64,
}

/// The result of one planned item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ItemResult {
    /// The item's number (1-based, as planned).
    pub item: usize,
    /// Whether it was done.
    pub done: bool,
    /// What was done and found.
    pub result: String,
}

/// The erasure of test data containing personal information (個人情報を含むテストデータの消去).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Erasure {
    /// What data.
    pub what: String,
    /// Where it was.
    #[serde(rename = "where")]
    pub place: String,
    /// How it was erased.
    pub how: String,
    /// When (as the vendor states it).
    pub when: String,
    /// By whom.
    pub by: String,
}

/// The vendor's work report (作業報告).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Report {
    /// One result per planned item.
    pub items: Vec<ItemResult>,
    /// Erasures of test data with personal information (empty: none was made).
    #[serde(default)]
    pub erasures: Vec<Erasure>,
    /// Anything else.
    #[serde(default)]
    pub note: String,
    /// Who filed it.
    pub filed_by: String,
    /// When (µs).
    pub filed_at: i64,
}

/// The institution's review of a report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Review {
    /// Accepted (else returned).
    pub accepted: bool,
    /// Who.
    pub by: String,
    /// When (µs).
    pub at: i64,
    /// The note (required to return).
    #[serde(default)]
    pub note: String,
    /// The SHA-256 of the accepted report document (JSON), anchored in the audit trail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// A remote-maintenance window, from request to accepted report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Window {
    /// Id (`MW-YYYYMMDD-xxxxxx`).
    pub id: String,
    /// The vendor's id.
    pub vendor: String,
    /// The maintenance accounts that may work in it.
    pub accounts: Vec<String>,
    /// Which system or function.
    pub system: String,
    /// Why.
    pub purpose: String,
    /// The planned work items, in order.
    pub items: Vec<String>,
    /// Start (µs).
    pub start: i64,
    /// End (µs).
    pub end: i64,
    /// What it allows.
    pub scope: Scope,
    /// Who asked.
    pub requested_by: String,
    /// When (µs).
    pub requested_at: i64,
    /// Where it is.
    pub state: State,
    /// Approvals needed (1 or 2), fixed at request time.
    pub approvals_needed: u8,
    /// Approvals given.
    #[serde(default)]
    pub approvals: Vec<Decision>,
    /// The refusal or the withdrawal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<Decision>,
    /// When its start time was recorded as reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opened_at: Option<i64>,
    /// How it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closing: Option<Closing>,
    /// The report, once filed (the latest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<Report>,
    /// Reviews of reports (a returned one stays).
    #[serde(default)]
    pub reviews: Vec<Review>,
    /// Whether the overdue report was alerted.
    #[serde(default)]
    pub report_alerted: bool,
    /// Amendments of the request before its approval (who, when, why); each one lapses the
    /// approvals given so far. What changed is in the history ([`amendments`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub amendments: Vec<Decision>,
}

impl Window {
    /// The time the report is due by (µs), once the window ended.
    pub fn report_due(&self, settings: &Settings) -> Option<i64> {
        let ended = self.closing.as_ref()?.at;
        Some(ended.saturating_add(i64::from(settings.report_days).saturating_mul(24 * MICROS_PER_HOUR)))
    }

    /// Whether its report is due and late at `now`.
    pub fn report_overdue(&self, settings: &Settings, now: i64) -> bool {
        matches!(self.state, State::Closed | State::Returned) && self.report_due(settings).is_some_and(|d| now > d)
    }

    /// Whether it grants access at `now` (approved or open, between start and end).
    pub fn in_force(&self, now: i64) -> bool {
        matches!(self.state, State::Approved | State::Open) && self.start <= now && now < self.end
    }
}

/// A request as filed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// The vendor's id.
    pub vendor: String,
    /// The maintenance accounts (empty: every one of the vendor's).
    #[serde(default)]
    pub accounts: Vec<String>,
    /// Which system or function.
    pub system: String,
    /// Why.
    pub purpose: String,
    /// Planned work items.
    pub items: Vec<String>,
    /// Start: Unix microseconds, or an RFC 3339 time (`2026-12-06T01:00:00+09:00`).
    #[serde(deserialize_with = "instant")]
    pub start: i64,
    /// End, as the start.
    #[serde(deserialize_with = "instant")]
    pub end: i64,
    /// Scope.
    #[serde(default)]
    pub scope: Scope,
}

/// A time as Unix microseconds or an RFC 3339 text.
fn instant<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Given {
        Micros(i64),
        Text(String),
    }
    match Given::deserialize(d)? {
        Given::Micros(m) => Ok(m),
        Given::Text(t) => mamori_records::Timestamp::parse_rfc3339(&t)
            .map(|t| t.0)
            .ok_or_else(|| serde::de::Error::custom(format!("`{t}` is not an RFC 3339 time"))),
    }
}

// ---------------------------------------------------------------------------------------------
// Storage

/// One stored entry of `kind`, with its version (`None`: there is none).
fn load_one<T: serde::de::DeserializeOwned>(
    node: &Node,
    kind: ConfigKind,
    id: &str,
) -> Result<Option<(T, u64)>, AppError> {
    let e = node.store.config_get(kind.name(), id).map_err(failed)?;
    let Some((v, version)) = e.and_then(|e| e.value.map(|v| (v, e.version))) else { return Ok(None) };
    Ok(Some((serde_json::from_value(v).map_err(|e| failed(format!("stored {kind}: {e}")))?, version)))
}

/// Every current entry of `kind`, with its version.
fn load_all<T: serde::de::DeserializeOwned>(node: &Node, kind: ConfigKind) -> Result<Vec<(T, u64)>, AppError> {
    let mut out = Vec::new();
    for e in node.store.config_current(kind.name()).map_err(AppError::from)? {
        if let Some(v) = e.value {
            out.push((serde_json::from_value(v).map_err(|e| failed(format!("stored {kind}: {e}")))?, e.version));
        }
    }
    Ok(out)
}

fn load_vendor(node: &Node, id: &str) -> Result<(Vendor, u64), AppError> {
    load_one(node, VENDOR, id)?.ok_or_else(|| AppError::NotFound(format!("no vendor `{id}`")))
}

fn load(node: &Node, id: &str) -> Result<(Window, u64), AppError> {
    load_one(node, WINDOW, id)?.ok_or_else(|| AppError::NotFound(format!("no maintenance window `{id}`")))
}

fn save(ctx: &Ctx, node: &Node, w: &Window, expected: Option<u64>, reason: &str) -> Result<u64, AppError> {
    let value = serde_json::to_value(w).map_err(failed)?;
    let v = change_config(ctx, node, WINDOW, &w.id, Some(value), reason, expected)?;
    apply(node)?;
    Ok(v)
}

fn all_vendors(node: &Node) -> Result<Vec<Vendor>, AppError> {
    Ok(load_all(node, VENDOR)?.into_iter().map(|(v, _)| v).collect())
}

/// Every window with its version, newest start first.
fn versioned_windows(node: &Node) -> Result<Vec<(Window, u64)>, AppError> {
    let mut out: Vec<(Window, u64)> = load_all(node, WINDOW)?;
    out.sort_by(|(a, _), (b, _)| b.start.cmp(&a.start).then_with(|| b.id.cmp(&a.id)));
    Ok(out)
}

fn all_windows(node: &Node) -> Result<Vec<Window>, AppError> {
    Ok(versioned_windows(node)?.into_iter().map(|(w, _)| w).collect())
}

/// Gives the enforcement point the windows in force or to come (approved or open, not yet
/// ended), so access follows their times by the node's clock. Called after every change here and
/// every second by the node's watcher (another node's or the CLI's change).
pub fn apply(node: &Node) -> Result<(), AppError> {
    apply_from(node, &all_windows(node)?)
}

fn apply_from(node: &Node, windows: &[Window]) -> Result<(), AppError> {
    let now = node.clock.now().0;
    let vendors: BTreeMap<String, Vendor> = all_vendors(node)?.into_iter().map(|v| (v.id.clone(), v)).collect();
    let mut held = Vec::new();
    for w in windows {
        if !matches!(w.state, State::Approved | State::Open) || w.end <= now {
            continue;
        }
        let sources = if w.scope.sources.is_empty() {
            vendors.get(&w.vendor).map(|v| v.sources.clone()).unwrap_or_default()
        } else {
            w.scope.sources.clone()
        };
        held.push(ApprovedWindow {
            scope: Arc::new(mamori_authz::Window {
                id: w.id.clone(),
                acts: w.scope.acts.iter().cloned().collect(),
                classes: w.scope.classes.iter().cloned().collect(),
                patients: w.scope.patients.iter().cloned().collect(),
                read: w.scope.read,
                write: w.scope.write,
            }),
            accounts: w.accounts.iter().cloned().collect(),
            start: w.start,
            end: w.end,
            sources,
        });
    }
    node.enforcer.set_windows(held);
    Ok(())
}

/// Wires the node: the audit append stamps each entry of a maintenance account with the window
/// it works in, and sign-in is refused to a maintenance account outside its window.
pub(crate) fn install(node: &Node) -> Result<(), AppError> {
    let enforcer = node.enforcer.clone();
    node.store.set_audit_stamp(Arc::new(move |r: &mut mamori_audit::AuditRecord| {
        if r.window.is_none() && r.actor.kind == mamori_audit::ActorKind::User {
            r.window = enforcer.window_id_of(&r.actor.id);
        }
    }));
    let enforcer = node.enforcer.clone();
    node.identity.set_sign_in_gate(Arc::new(move |a: &mamori_identity::account::Account, source: Option<&str>| {
        (a.roles.iter().any(|r| r == MAINTENANCE_ROLE) && enforcer.window_for(&a.username, source).is_none())
            .then_some("maintenance account outside an approved window (保守作業の時間枠外)")
    }));
    apply(node)
}

// ---------------------------------------------------------------------------------------------
// Vendors

fn check_sources(sources: &[String]) -> Result<(), AppError> {
    match sources.iter().find(|s| !mamori_oauth::valid_cidr(s)) {
        Some(bad) => Err(AppError::Invalid(format!("`{bad}` is not an address or CIDR block"))),
        None => Ok(()),
    }
}

fn check_accounts(node: &Node, users: &[String], role: &str) -> Result<(), AppError> {
    for u in users {
        let a = node.identity.account(u)?.ok_or_else(|| AppError::NotFound(format!("no account `{u}`")))?;
        if !a.roles.iter().any(|r| r == role) {
            return Err(AppError::Invalid(format!("account `{u}` does not hold the role `{role}`")));
        }
    }
    Ok(())
}

/// Adds or replaces a vendor organisation (`manage-users`): its contacts must hold
/// `vendor_contact`, its maintenance accounts `maintenance_vendor`.
pub fn set_vendor(ctx: &Ctx, node: &Node, v: Vendor, reason: &str) -> Result<Vendor, AppError> {
    ctx.authorize(node, AdminAct::ManageUsers)?;
    let id_ok =
        !v.id.is_empty() && v.id.len() <= 64 && v.id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !id_ok {
        return Err(AppError::Invalid(format!("vendor id `{}`: 1–64 letters, digits, - or _", v.id)));
    }
    if v.name.trim().is_empty() || v.contact.trim().is_empty() || v.contract.trim().is_empty() {
        return Err(AppError::Invalid("a vendor needs a name, a contact and a contract reference".into()));
    }
    check_sources(&v.sources)?;
    check_accounts(node, &v.contacts, CONTACT_ROLE)?;
    check_accounts(node, &v.accounts, MAINTENANCE_ROLE)?;
    let expected = node.store.config_get(VENDOR.name(), &v.id).map_err(failed)?.map(|e| e.version);
    let value = serde_json::to_value(&v).map_err(failed)?;
    let reason = if reason.trim().is_empty() { format!("vendor {}", v.id) } else { reason.trim().to_string() };
    change_config(ctx, node, VENDOR, &v.id, Some(value), &reason, expected)?;
    apply(node)?;
    Ok(v)
}

/// Every vendor: for the institution (either act), or a contact's own.
pub fn vendors(ctx: &Ctx, node: &Node) -> Result<Vec<Vendor>, AppError> {
    ctx.authorize_any(node, &[AdminAct::ApproveMaintenance, AdminAct::ManageUsers, AdminAct::RequestMaintenance])?;
    let all = all_vendors(node)?;
    Ok(match contact_of(ctx) {
        Some(me) => all.into_iter().filter(|v| v.contacts.iter().any(|c| c == me)).collect(),
        None => all,
    })
}

/// The caller's user name when they are a vendor's contact (who sees only their vendor's).
fn contact_of(ctx: &Ctx) -> Option<&str> {
    match &ctx.caller {
        Caller::Person { username, roles, .. } if roles.iter().any(|r| r == CONTACT_ROLE) => {
            let institution = roles.iter().any(|r| r == "system_admin" || r == "security_manager");
            (!institution).then_some(username.as_str())
        }
        _ => None,
    }
}

/// A vendor's contact acts for their own vendor only; to them another vendor's window (or the
/// vendor itself) is exactly as absent as one that does not exist: the same answer, word for word.
fn may_act_for(ctx: &Ctx, vendor: &Vendor, window: Option<&str>) -> Result<(), AppError> {
    match contact_of(ctx) {
        Some(me) if !vendor.contacts.iter().any(|c| c == me) => Err(match window {
            Some(id) => AppError::NotFound(format!("no maintenance window `{id}`")),
            None => AppError::NotFound(format!("no vendor `{}`", vendor.id)),
        }),
        _ => Ok(()),
    }
}

// ---------------------------------------------------------------------------------------------
// Requests and decisions

/// Files a request (`request-maintenance`: the vendor's contact for their own vendor, or the
/// system administrator on a vendor's behalf). Checked against the settings and the vendor; the
/// window's accounts default to every maintenance account of the vendor.
pub fn request(ctx: &Ctx, node: &Node, r: Request) -> Result<Window, AppError> {
    let checked = check_request(ctx, node, r)?;
    let now = ctx.now().0;
    let suffix = mamori_records::ResourceId::random().map_err(failed)?.to_string();
    let date = mamori_records::Timestamp(now).to_fhir();
    let day: String = date.get(0..10).unwrap_or("0000-00-00").chars().filter(char::is_ascii_digit).collect();
    let w = Window {
        id: format!("MW-{day}-{}", suffix.get(0..6).unwrap_or("0")),
        vendor: checked.vendor,
        accounts: checked.accounts,
        system: checked.system,
        purpose: checked.purpose,
        items: checked.items,
        start: checked.start,
        end: checked.end,
        scope: checked.scope,
        requested_by: ctx.by(),
        requested_at: now,
        state: State::Requested,
        approvals_needed: node.config.maintenance.approvers,
        approvals: Vec::new(),
        refusal: None,
        opened_at: None,
        closing: None,
        report: None,
        reviews: Vec::new(),
        report_alerted: false,
        amendments: Vec::new(),
    };
    save(ctx, node, &w, None, &format!("maintenance requested: {} ({})", w.system, w.purpose))?;
    Ok(w)
}

/// Changes a request still awaiting approval (`request-maintenance`: the vendor's contact for
/// their own vendor, or the system administrator): checked as a new request; the approvals given
/// so far lapse, and whoever amends may not approve it either. The approver sees every change
/// ([`amendments`]).
pub fn amend(ctx: &Ctx, node: &Node, id: &str, r: Request, note: &str) -> Result<Window, AppError> {
    ctx.authorize(node, AdminAct::RequestMaintenance)?;
    let (mut w, version) = load(node, id)?;
    let (vendor, _) = load_vendor(node, &w.vendor)?;
    may_act_for(ctx, &vendor, Some(id))?;
    if w.state != State::Requested {
        return Err(AppError::Conflict(format!(
            "window {id} is {}; only a request awaiting approval can be changed",
            w.state.name()
        )));
    }
    if note.trim().is_empty() {
        return Err(AppError::Invalid("changing a request needs a note saying why".into()));
    }
    if r.vendor.trim() != w.vendor {
        return Err(AppError::Invalid("a request stays with its vendor; file a new one for another".into()));
    }
    let c = check_request(ctx, node, r)?;
    (w.accounts, w.system, w.purpose, w.items, w.start, w.end, w.scope) =
        (c.accounts, c.system, c.purpose, c.items, c.start, c.end, c.scope);
    w.approvals.clear();
    w.amendments.push(Decision { by: ctx.by(), at: ctx.now().0, note: note.trim().to_string() });
    save(ctx, node, &w, Some(version), &format!("maintenance request changed: {}", note.trim()))?;
    Ok(w)
}

/// A request's fields, checked.
struct Checked {
    vendor: String,
    accounts: Vec<String>,
    system: String,
    purpose: String,
    items: Vec<String>,
    start: i64,
    end: i64,
    scope: Scope,
}

fn check_request(ctx: &Ctx, node: &Node, r: Request) -> Result<Checked, AppError> {
    ctx.authorize(node, AdminAct::RequestMaintenance)?;
    let (vendor, _) = load_vendor(node, r.vendor.trim())?;
    may_act_for(ctx, &vendor, None)?;
    let settings = node.config.maintenance;
    if r.system.trim().is_empty() || r.purpose.trim().is_empty() {
        return Err(AppError::Invalid("a request names the system or function and the purpose".into()));
    }
    let items: Vec<String> = r.items.iter().map(|i| i.trim().to_string()).filter(|i| !i.is_empty()).collect();
    if items.is_empty() {
        return Err(AppError::Invalid("a request lists at least one planned work item".into()));
    }
    let now = ctx.now().0;
    if r.end <= r.start {
        return Err(AppError::Invalid("the window must end after it starts".into()));
    }
    if r.end <= now {
        return Err(AppError::Invalid("the window ends in the past".into()));
    }
    if r.end.saturating_sub(r.start) > i64::from(settings.max_hours) * MICROS_PER_HOUR {
        return Err(AppError::Invalid(format!(
            "the window is longer than [maintenance] max_hours ({} h)",
            settings.max_hours
        )));
    }
    let accounts = if r.accounts.is_empty() { vendor.accounts.clone() } else { r.accounts.clone() };
    if accounts.is_empty() {
        return Err(AppError::Invalid(format!("vendor `{}` has no maintenance accounts", vendor.id)));
    }
    if let Some(stranger) = accounts.iter().find(|a| !vendor.accounts.contains(a)) {
        return Err(AppError::Invalid(format!("`{stranger}` is not a maintenance account of `{}`", vendor.id)));
    }
    let scope = check_scope(r.scope)?;
    Ok(Checked {
        vendor: vendor.id,
        accounts,
        system: r.system.trim().to_string(),
        purpose: r.purpose.trim().to_string(),
        items,
        start: r.start,
        end: r.end,
        scope,
    })
}

fn check_scope(mut s: Scope) -> Result<Scope, AppError> {
    for a in &s.acts {
        if !DELEGABLE_ACTS.iter().any(|d| d.name() == a) {
            let allowed: Vec<&str> = DELEGABLE_ACTS.iter().map(|d| d.name()).collect();
            return Err(AppError::Invalid(format!(
                "act `{a}` cannot be given to a vendor (possible: {})",
                allowed.join(", ")
            )));
        }
    }
    let known: BTreeSet<String> = mamori_authz::taxonomy().into_iter().map(|c| c.code).collect();
    if let Some(bad) = s.classes.iter().find(|c| !known.contains(*c)) {
        return Err(AppError::Invalid(format!("`{bad}` is not an information class")));
    }
    for p in &mut s.patients {
        let id = p.trim().trim_start_matches("Patient/");
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.') {
            return Err(AppError::Invalid(format!("`{p}` is not a patient reference (Patient/id)")));
        }
        *p = format!("Patient/{id}");
    }
    let data = !s.classes.is_empty() || !s.patients.is_empty() || s.read || s.write;
    if data && !s.touches_patients() {
        return Err(AppError::Invalid(
            "patient data needs its information classes, its patients and read or write — all three".into(),
        ));
    }
    if s.acts.is_empty() && !data {
        return Err(AppError::Invalid("the scope is empty: name the acts, or the patient data".into()));
    }
    check_sources(&s.sources)?;
    s.acts.sort();
    s.acts.dedup();
    s.classes.sort();
    s.classes.dedup();
    s.patients.sort();
    s.patients.dedup();
    Ok(s)
}

fn institution_decision(ctx: &Ctx, node: &Node, w: &Window) -> Result<(), AppError> {
    ctx.authorize(node, AdminAct::ApproveMaintenance)?;
    if ctx.by() == w.requested_by || w.amendments.iter().any(|a| a.by == ctx.by()) {
        let entry = mamori_audit::AuditRecord::new("admin-denied", ctx.audit_actor(), Outcome::Failure, "HOPERAT");
        ctx.refused(node, entry, format!("maintenance window {}: the requester may not decide it", w.id))?;
        return Err(AppError::Forbidden(
            "自分の申請は承認できません / you may not approve or refuse your own request".into(),
        ));
    }
    Ok(())
}

/// Approves a request (`approve-maintenance`; never the requester, never twice by one person).
/// With `[maintenance] approvers = 2` the second approval makes it approved.
pub fn approve(ctx: &Ctx, node: &Node, id: &str, note: &str) -> Result<Window, AppError> {
    let (mut w, version) = load(node, id)?;
    institution_decision(ctx, node, &w)?;
    if w.state != State::Requested {
        return Err(AppError::Conflict(format!("window {id} is {}, not awaiting approval", w.state.name())));
    }
    if w.approvals.iter().any(|a| a.by == ctx.by()) {
        return Err(AppError::Conflict(format!("you have already approved window {id}; another person must")));
    }
    if w.end <= ctx.now().0 {
        return Err(AppError::Conflict(format!("window {id} has already ended; ask for a new one")));
    }
    w.approvals.push(Decision { by: ctx.by(), at: ctx.now().0, note: note.trim().to_string() });
    let done = w.approvals.len() >= usize::from(w.approvals_needed);
    if done {
        w.state = State::Approved;
    }
    let what = if done { "approved" } else { "approved (one of two)" };
    save(ctx, node, &w, Some(version), &format!("maintenance window {what}: {}", w.system))?;
    Ok(w)
}

/// Refuses a request (`approve-maintenance`; a note is required).
pub fn refuse(ctx: &Ctx, node: &Node, id: &str, note: &str) -> Result<Window, AppError> {
    let (mut w, version) = load(node, id)?;
    institution_decision(ctx, node, &w)?;
    if note.trim().is_empty() {
        return Err(AppError::Invalid("refusing needs a note for the vendor".into()));
    }
    if w.state != State::Requested {
        return Err(AppError::Conflict(format!("window {id} is {}, not awaiting approval", w.state.name())));
    }
    w.state = State::Refused;
    w.refusal = Some(Decision { by: ctx.by(), at: ctx.now().0, note: note.trim().to_string() });
    save(ctx, node, &w, Some(version), &format!("maintenance window refused: {}", note.trim()))?;
    Ok(w)
}

/// Withdraws one's own request before it opens (`request-maintenance`).
pub fn withdraw(ctx: &Ctx, node: &Node, id: &str, note: &str) -> Result<Window, AppError> {
    ctx.authorize(node, AdminAct::RequestMaintenance)?;
    let (mut w, version) = load(node, id)?;
    let (vendor, _) = load_vendor(node, &w.vendor)?;
    may_act_for(ctx, &vendor, Some(id))?;
    let before_start = w.state == State::Approved && ctx.now().0 < w.start;
    if w.state != State::Requested && !before_start {
        return Err(AppError::Conflict(format!("window {id} is {}; it can no longer be withdrawn", w.state.name())));
    }
    w.state = State::Withdrawn;
    w.refusal = Some(Decision { by: ctx.by(), at: ctx.now().0, note: note.trim().to_string() });
    save(ctx, node, &w, Some(version), "maintenance request withdrawn")?;
    Ok(w)
}

/// Ends a window at once (`approve-maintenance`): its accounts' sessions end and their tokens are
/// revoked, and nothing more is allowed in it. A window not yet started is ended as well.
pub fn close(ctx: &Ctx, node: &Node, id: &str, reason: &str) -> Result<Window, AppError> {
    ctx.authorize(node, AdminAct::ApproveMaintenance)?;
    if reason.trim().is_empty() {
        return Err(AppError::Invalid("ending a window needs a reason".into()));
    }
    let (w, version) = load(node, id)?;
    if !matches!(w.state, State::Approved | State::Open) {
        return Err(AppError::Conflict(format!("window {id} is {}, not approved or open", w.state.name())));
    }
    end_window(ctx, node, w, version, true, reason.trim())
}

fn end_window(
    ctx: &Ctx,
    node: &Node,
    mut w: Window,
    version: u64,
    early: bool,
    reason: &str,
) -> Result<Window, AppError> {
    let now = ctx.now().0;
    // Every session and token of its accounts ends first; saving then hands the enforcement
    // point the windows still in force, without this one.
    let mut revoked = 0;
    for a in &w.accounts {
        revoked += node.identity.end_access_of(a)?;
    }
    w.state = State::Closed;
    w.closing = Some(Closing { at: now, by: ctx.by(), early, reason: reason.to_string(), revoked });
    save(ctx, node, &w, Some(version), &format!("maintenance window ended: {reason}"))?;
    ctx.record(
        node,
        "maintenance-window-closed",
        Outcome::Success,
        format!(
            "window {} ({}) {}: {reason}; {revoked} tokens and sessions of {} ended",
            w.id,
            w.system,
            if early { "closed early" } else { "ended at its end time" },
            w.accounts.join(", ")
        ),
    )?;
    Ok(w)
}

/// One window (the institution, or the vendor's contact for their own).
pub fn show(ctx: &Ctx, node: &Node, id: &str) -> Result<Window, AppError> {
    ctx.authorize_any(node, &[AdminAct::ApproveMaintenance, AdminAct::RequestMaintenance])?;
    let (w, _) = load(node, id)?;
    let (vendor, _) = load_vendor(node, &w.vendor)?;
    may_act_for(ctx, &vendor, Some(id))?;
    Ok(w)
}

/// Every window, newest first (a vendor's contact: their vendor's).
pub fn list(ctx: &Ctx, node: &Node) -> Result<Vec<Window>, AppError> {
    ctx.authorize_any(node, &[AdminAct::ApproveMaintenance, AdminAct::RequestMaintenance])?;
    let all = all_windows(node)?;
    Ok(match contact_of(ctx) {
        Some(me) => {
            let mine: BTreeSet<String> =
                all_vendors(node)?.into_iter().filter(|v| v.contacts.iter().any(|c| c == me)).map(|v| v.id).collect();
            all.into_iter().filter(|w| mine.contains(&w.vendor)).collect()
        }
        None => all,
    })
}

/// Every version a window passed through (its history), oldest first.
pub fn history(ctx: &Ctx, node: &Node, id: &str) -> Result<Vec<(u64, Window)>, AppError> {
    show(ctx, node, id)?;
    history_of(node, id)
}

fn history_of(node: &Node, id: &str) -> Result<Vec<(u64, Window)>, AppError> {
    let mut out = Vec::new();
    for e in node.store.config_history(WINDOW.name(), id).map_err(AppError::from)? {
        if let Some(v) = e.value {
            out.push((e.version, serde_json::from_value(v).map_err(failed)?));
        }
    }
    Ok(out)
}

/// A window with what its page shows: every amendment of its request and its activity.
#[derive(Debug, Clone)]
pub struct Detail {
    /// The window as it stands.
    pub window: Window,
    /// Every amendment, oldest first, with what it changed.
    pub amendments: Vec<Amendment>,
    /// Its activity in the audit trail, judged against the plan.
    pub activity: Vec<Activity>,
}

/// A window, its amendments and its activity, decided once (the console's page of a window).
pub fn detail(ctx: &Ctx, node: &Node, id: &str) -> Result<Detail, AppError> {
    let window = show(ctx, node, id)?;
    let amendments = amendments_in(&history_of(node, id)?);
    let activity = activity_of(node, &window)?;
    Ok(Detail { window, amendments, activity })
}

/// One field of a request, before and after an amendment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// The field (`start`, `scope.patients`, …).
    pub field: &'static str,
    /// Its value before.
    pub before: String,
    /// Its value after.
    pub after: String,
}

/// An amendment with what it changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Amendment {
    /// Who, when, why.
    pub decision: Decision,
    /// Every field it changed.
    pub changes: Vec<Change>,
}

/// The fields of a request that differ between two versions of it.
pub fn changes(before: &Window, after: &Window) -> Vec<Change> {
    let list = |v: &[String]| v.join(", ");
    let time = |t: i64| mamori_records::Timestamp(t).to_fhir();
    let flag = |b: bool| if b { "yes".to_string() } else { "no".to_string() };
    let pairs: [(&'static str, String, String); 12] = [
        ("system", before.system.clone(), after.system.clone()),
        ("purpose", before.purpose.clone(), after.purpose.clone()),
        ("items", before.items.join(" / "), after.items.join(" / ")),
        ("start", time(before.start), time(after.start)),
        ("end", time(before.end), time(after.end)),
        ("accounts", list(&before.accounts), list(&after.accounts)),
        ("scope.acts", list(&before.scope.acts), list(&after.scope.acts)),
        ("scope.classes", list(&before.scope.classes), list(&after.scope.classes)),
        ("scope.patients", list(&before.scope.patients), list(&after.scope.patients)),
        ("scope.read", flag(before.scope.read), flag(after.scope.read)),
        ("scope.write", flag(before.scope.write), flag(after.scope.write)),
        ("scope.sources", list(&before.scope.sources), list(&after.scope.sources)),
    ];
    pairs.into_iter().filter(|(_, b, a)| b != a).map(|(field, before, after)| Change { field, before, after }).collect()
}

/// Every amendment of a request, oldest first, with what it changed (from the window's history).
pub fn amendments(ctx: &Ctx, node: &Node, id: &str) -> Result<Vec<Amendment>, AppError> {
    Ok(amendments_in(&history(ctx, node, id)?))
}

/// The amendments a window's versions ([`history`], oldest first) hold, with what each changed.
pub fn amendments_in(versions: &[(u64, Window)]) -> Vec<Amendment> {
    let mut out = Vec::new();
    for pair in versions.windows(2) {
        let [(_, before), (_, after)] = pair else { continue };
        if after.amendments.len() > before.amendments.len()
            && let Some(d) = after.amendments.last()
        {
            out.push(Amendment { decision: d.clone(), changes: changes(before, after) });
        }
    }
    out
}

/// Records a window's start and ends windows whose time is up (revoking their accounts'
/// access), and alerts reports that are overdue. Run every second by the node's watcher; on
/// several nodes one wins each change (the others find it changed and leave it).
pub fn tick(node: &Node) -> Result<(), AppError> {
    tick_as(&Ctx::operator(node, SCHEDULE), node)
}

/// [`tick`] as `ctx` (its clock is the schedule's: a test runs the schedule days ahead).
pub fn tick_as(ctx: &Ctx, node: &Node) -> Result<(), AppError> {
    let now = ctx.now().0;
    let settings = node.config.maintenance;
    let windows = versioned_windows(node)?;
    let mut changed = false;
    for (w, version) in &windows {
        let r = if w.state == State::Approved && w.start <= now && now < w.end {
            let mut o = w.clone();
            o.state = State::Open;
            o.opened_at = Some(now);
            save(ctx, node, &o, Some(*version), "maintenance window opened (its start time)").map(|_| ())
        } else if w.state == State::Requested && w.end <= now {
            let mut o = w.clone();
            o.state = State::Expired;
            save(ctx, node, &o, Some(*version), "maintenance request expired undecided (its end time came)").and_then(
                |_| {
                    ctx.record(
                        node,
                        "maintenance-window-expired",
                        Outcome::Success,
                        format!(
                            "maintenance request {} ({}) expired: its end time came before a decision",
                            w.id, w.system
                        ),
                    )
                },
            )
        } else if matches!(w.state, State::Approved | State::Open) && w.end <= now {
            end_window(ctx, node, w.clone(), *version, false, "its end time came").map(|_| ())
        } else if w.report_overdue(&settings, now) && !w.report_alerted {
            let mut o = w.clone();
            o.report_alerted = true;
            save(ctx, node, &o, Some(*version), "work report overdue: alerted").and_then(|_| {
                ctx.record(
                    node,
                    "alert-maintenance-report-due",
                    Outcome::Failure,
                    format!(
                        "the work report of maintenance window {} ({}, vendor {}) was due {} days after it ended and is not filed",
                        w.id, w.system, w.vendor, settings.report_days
                    ),
                )
            })
        } else {
            continue;
        };
        match r {
            Ok(()) => changed = true,
            // Another node made the change first.
            Err(AppError::Conflict(_)) => {}
            Err(e) => return Err(e),
        }
    }
    // Each change applied itself; otherwise the windows just read are handed to the
    // enforcement point (a change made on another node or by the CLI).
    if changed { Ok(()) } else { apply_from(node, &windows.into_iter().map(|(w, _)| w).collect::<Vec<_>>()) }
}

// ---------------------------------------------------------------------------------------------
// Reports

/// One audit entry of a window's activity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Activity {
    /// The entry's leaf index.
    pub index: u64,
    /// When.
    pub time: String,
    /// Who.
    pub actor: String,
    /// What.
    pub action: String,
    /// Outcome (`success`, `failure`, `denied`…).
    pub outcome: String,
    /// HTTP status or exit code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Resources.
    pub resources: Vec<String>,
    /// Patients touched.
    pub patients: Vec<String>,
    /// Detail.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Why it is outside the plan, if it is (作業計画外).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unplanned: Option<String>,
}

const WRITES: [&str; 6] = ["create", "update", "patch", "delete", "approve", "config"];

fn judge(w: &Window, r: &mamori_audit::AuditRecord) -> Option<String> {
    if r.outcome != Outcome::Success || r.status.is_some_and(|s| s >= 400) {
        return Some("refused: outside the approved scope or failed".into());
    }
    if let Some(p) = r.patients.iter().find(|p| !w.scope.patients.contains(*p)) {
        return Some(format!("patient data of {p}, not approved"));
    }
    let data_write = WRITES.contains(&r.action.as_str()) && r.action != "config";
    if data_write && !w.scope.write {
        return Some(format!("{} without approval to write", r.action));
    }
    None
}

/// The window's activity from the audit trail: every entry stamped with its id, oldest first,
/// each judged against the plan.
pub fn activity(ctx: &Ctx, node: &Node, id: &str) -> Result<Vec<Activity>, AppError> {
    let w = show(ctx, node, id)?;
    activity_of(node, &w)
}

fn activity_of(node: &Node, w: &Window) -> Result<Vec<Activity>, AppError> {
    // Entries are stamped while the window is in force: up to its end or its closing.
    let until = w.closing.as_ref().map_or(w.end, |c| c.at.min(w.end).max(w.start)).saturating_add(60_000_000);
    let q = EntryQuery { since: Some(w.start), until: Some(until), ..EntryQuery::default() };
    let mut out = Vec::new();
    for (index, entry) in node.store.query(&q).map_err(|e| failed(format!("audit: {e}")))? {
        let Ok(r) = serde_json::from_slice::<mamori_audit::AuditRecord>(&entry) else { continue };
        if r.window.as_deref() != Some(w.id.as_str()) {
            continue;
        }
        out.push(Activity {
            index,
            time: r.time.clone(),
            actor: r.actor.label(),
            action: r.action.clone(),
            outcome: format!("{:?}", r.outcome).to_lowercase(),
            status: r.status,
            resources: r.resources.clone(),
            patients: r.patients.clone(),
            detail: r.detail.clone(),
            unplanned: judge(w, &r),
        });
    }
    Ok(out)
}

/// A report as filed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filing {
    /// One result per planned item.
    pub items: Vec<ItemResult>,
    /// Erasures of test data with personal information.
    #[serde(default)]
    pub erasures: Vec<Erasure>,
    /// Anything else.
    #[serde(default)]
    pub note: String,
}

/// Files the work report of an ended window (`request-maintenance`: the vendor's contact, or
/// the system administrator on its behalf): a result for every planned item, once each; every
/// erasure complete (what, where, how, when, by whom).
pub fn report(ctx: &Ctx, node: &Node, id: &str, f: Filing) -> Result<Window, AppError> {
    ctx.authorize(node, AdminAct::RequestMaintenance)?;
    let (mut w, version) = load(node, id)?;
    let (vendor, _) = load_vendor(node, &w.vendor)?;
    may_act_for(ctx, &vendor, Some(id))?;
    if !matches!(w.state, State::Closed | State::Returned) {
        return Err(AppError::Conflict(format!(
            "window {id} is {}; a report is filed once the window has ended",
            w.state.name()
        )));
    }
    let mut seen = BTreeSet::new();
    for i in &f.items {
        if i.item == 0 || i.item > w.items.len() {
            return Err(AppError::Invalid(format!("item {} is not one of the {} planned", i.item, w.items.len())));
        }
        if !seen.insert(i.item) {
            return Err(AppError::Invalid(format!("item {} is reported twice", i.item)));
        }
        if i.result.trim().is_empty() {
            return Err(AppError::Invalid(format!("item {}: say what was done (or why not)", i.item)));
        }
    }
    if seen.len() != w.items.len() {
        let missing: Vec<String> = (1..=w.items.len()).filter(|n| !seen.contains(n)).map(|n| n.to_string()).collect();
        return Err(AppError::Invalid(format!("every planned item needs a result; missing: {}", missing.join(", "))));
    }
    for e in &f.erasures {
        if [&e.what, &e.place, &e.how, &e.when, &e.by].iter().any(|s| s.trim().is_empty()) {
            return Err(AppError::Invalid("an erasure record says what, where, how, when and by whom".into()));
        }
    }
    let mut items = f.items;
    items.sort_by_key(|i| i.item);
    w.report = Some(Report {
        items,
        erasures: f.erasures,
        note: f.note.trim().to_string(),
        filed_by: ctx.by(),
        filed_at: ctx.now().0,
    });
    w.state = State::Reported;
    save(ctx, node, &w, Some(version), "maintenance work report filed")?;
    Ok(w)
}

/// The report document: the window, the report, its activity with unplanned actions flagged.
#[derive(Debug, Clone, Serialize)]
pub struct Document {
    /// The window (with the report and its reviews).
    pub window: Window,
    /// The vendor.
    pub vendor: Vendor,
    /// The activity recorded in the audit trail.
    pub activity: Vec<Activity>,
    /// How many actions are outside the plan.
    pub unplanned: usize,
}

impl Document {
    /// The canonical JSON whose SHA-256 is anchored when the report is accepted.
    pub fn to_json(&self) -> Result<String, AppError> {
        serde_json::to_string_pretty(self).map_err(failed)
    }

    /// The hex SHA-256 of [`Document::to_json`].
    pub fn sha256(&self) -> Result<String, AppError> {
        Ok(hex::encode(Sha256::digest(self.to_json()?.as_bytes())))
    }
}

/// The report document of a window (the institution, or the vendor's contact for their own).
pub fn document(ctx: &Ctx, node: &Node, id: &str) -> Result<Document, AppError> {
    document_of(node, show(ctx, node, id)?)
}

fn document_of(node: &Node, window: Window) -> Result<Document, AppError> {
    let (vendor, _) = load_vendor(node, &window.vendor)?;
    let activity = activity_of(node, &window)?;
    let unplanned = activity.iter().filter(|a| a.unplanned.is_some()).count();
    Ok(Document { window, vendor, activity, unplanned })
}

/// Accepts the filed report (`approve-maintenance`; not by whoever filed it): the document's
/// SHA-256 is recorded in the audit trail (`maintenance-report-accepted`), so the exported JSON
/// can be checked against it at any later time.
pub fn accept(ctx: &Ctx, node: &Node, id: &str, note: &str) -> Result<(Window, String), AppError> {
    review(ctx, node, id, true, note)
}

/// Returns the filed report with a note (`approve-maintenance`): a new one is due.
pub fn send_back(ctx: &Ctx, node: &Node, id: &str, note: &str) -> Result<Window, AppError> {
    review(ctx, node, id, false, note).map(|(w, _)| w)
}

fn review(ctx: &Ctx, node: &Node, id: &str, accepted: bool, note: &str) -> Result<(Window, String), AppError> {
    ctx.authorize(node, AdminAct::ApproveMaintenance)?;
    let (mut w, version) = load(node, id)?;
    if w.state != State::Reported {
        return Err(AppError::Conflict(format!("window {id} is {}, no report waits", w.state.name())));
    }
    if w.report.as_ref().is_some_and(|r| r.filed_by == ctx.by()) {
        return Err(AppError::Forbidden(
            "自分が提出した報告は確認できません / you may not review a report you filed".into(),
        ));
    }
    if !accepted && note.trim().is_empty() {
        return Err(AppError::Invalid("returning a report needs a note saying what is missing".into()));
    }
    let now = ctx.now().0;
    let mut sha = String::new();
    if accepted {
        w.state = State::Accepted;
        w.reviews.push(Review { accepted, by: ctx.by(), at: now, note: note.trim().to_string(), sha256: None });
        let doc = document_of(node, w.clone())?;
        let unplanned = doc.unplanned;
        sha = doc.sha256()?;
        if let Some(r) = w.reviews.last_mut() {
            r.sha256 = Some(sha.clone());
        }
        save(ctx, node, &w, Some(version), "maintenance work report accepted")?;
        ctx.record(
            node,
            "maintenance-report-accepted",
            Outcome::Success,
            format!(
                "work report of maintenance window {} accepted; report document sha256 {sha}; {unplanned} actions outside the plan",
                w.id
            ),
        )?;
    } else {
        w.state = State::Returned;
        w.reviews.push(Review { accepted, by: ctx.by(), at: now, note: note.trim().to_string(), sha256: None });
        save(ctx, node, &w, Some(version), &format!("maintenance work report returned: {}", note.trim()))?;
    }
    Ok((w, sha))
}

/// The accepted report's document as it was accepted: the window's version at acceptance, with
/// the activity then — its SHA-256 equals the one anchored in the audit trail.
pub fn accepted_document(ctx: &Ctx, node: &Node, id: &str) -> Result<(Document, String), AppError> {
    as_accepted(document(ctx, node, id)?)
        .ok_or_else(|| AppError::Conflict(format!("the report of window {id} has not been accepted")))
}

/// The document with its hash, as it stands: once accepted, the accepted one (whose SHA-256 is
/// anchored); before, the document now and its hash. The third value says which.
pub fn current_document(ctx: &Ctx, node: &Node, id: &str) -> Result<(Document, String, bool), AppError> {
    let doc = document(ctx, node, id)?;
    if doc.window.state == State::Accepted {
        let (d, sha) = as_accepted(doc).ok_or_else(|| failed(format!("window {id} is accepted without a review")))?;
        return Ok((d, sha, true));
    }
    let sha = doc.sha256()?;
    Ok((doc, sha, false))
}

fn as_accepted(mut doc: Document) -> Option<(Document, String)> {
    let sha = doc.window.reviews.last().filter(|r| r.accepted).and_then(|r| r.sha256.clone())?;
    // The document hashed at acceptance held the window with the review but without its hash.
    if let Some(r) = doc.window.reviews.last_mut() {
        r.sha256 = None;
    }
    Some((doc, sha))
}

/// Windows whose report is overdue (for the institution's list and the dashboard).
pub fn reports_due(ctx: &Ctx, node: &Node) -> Result<Vec<Window>, AppError> {
    let all = list(ctx, node)?;
    Ok(overdue_among(ctx, node, &all).into_iter().cloned().collect())
}

/// Those of `windows` (as [`list`] gave them) whose report is overdue now.
pub fn overdue_among<'a>(ctx: &Ctx, node: &Node, windows: &'a [Window]) -> Vec<&'a Window> {
    let (now, settings) = (ctx.now().0, node.config.maintenance);
    windows.iter().filter(|w| w.report_overdue(&settings, now)).collect()
}

// ---------------------------------------------------------------------------------------------
// The register of remote maintenance

/// One entry of the register: a system or function maintained remotely, by which vendor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterEntry {
    /// The system or function (装置・機能).
    pub system: String,
    /// The vendor's id.
    pub vendor: String,
    /// Anything the institution notes (the device, the connection, the contract clause).
    #[serde(default)]
    pub note: String,
    /// Windows recorded for it (derived; not stored).
    #[serde(default, skip_deserializing)]
    pub windows: usize,
    /// The latest window's start (derived).
    #[serde(default, skip_deserializing, skip_serializing_if = "Option::is_none")]
    pub last: Option<i64>,
    /// Whether the institution wrote this entry (else derived from the windows alone).
    #[serde(default, skip_deserializing)]
    pub recorded: bool,
}

fn register_key(system: &str, vendor: &str) -> String {
    format!("{vendor}/{system}")
}

/// The register: every entry the institution recorded, and every (system, vendor) pair of an
/// approved window, with how many windows and the latest.
pub fn register(ctx: &Ctx, node: &Node) -> Result<Vec<RegisterEntry>, AppError> {
    ctx.authorize_any(node, &[AdminAct::ApproveMaintenance, AdminAct::ReadAudit])?;
    let mut out: BTreeMap<String, RegisterEntry> = BTreeMap::new();
    for e in node.store.config_current(REGISTER.name()).map_err(AppError::from)? {
        if let Some(v) = e.value {
            let mut r: RegisterEntry = serde_json::from_value(v).map_err(failed)?;
            r.recorded = true;
            out.insert(register_key(&r.system, &r.vendor), r);
        }
    }
    for w in all_windows(node)? {
        if matches!(w.state, State::Requested | State::Refused | State::Withdrawn | State::Expired) {
            continue;
        }
        let r = out.entry(register_key(&w.system, &w.vendor)).or_insert_with(|| RegisterEntry {
            system: w.system.clone(),
            vendor: w.vendor.clone(),
            note: String::new(),
            windows: 0,
            last: None,
            recorded: false,
        });
        r.windows += 1;
        r.last = Some(r.last.map_or(w.start, |l| l.max(w.start)));
    }
    Ok(out.into_values().collect())
}

/// Records (or, with `remove`, removes) a register entry (`approve-maintenance`).
pub fn set_register(
    ctx: &Ctx,
    node: &Node,
    system: &str,
    vendor: &str,
    note: &str,
    remove: bool,
) -> Result<(), AppError> {
    ctx.authorize(node, AdminAct::ApproveMaintenance)?;
    let (system, vendor) = (system.trim(), vendor.trim());
    if system.is_empty() {
        return Err(AppError::Invalid("name the system or function".into()));
    }
    load_vendor(node, vendor)?;
    let key = register_key(system, vendor);
    let expected = node.store.config_get(REGISTER.name(), &key).map_err(failed)?.map(|e| e.version);
    if remove {
        if expected.is_none() {
            return Err(AppError::NotFound(format!("no register entry for {system} by {vendor}")));
        }
        change_config(ctx, node, REGISTER, &key, None, "remote maintenance register: removed", expected)?;
        return Ok(());
    }
    let entry = RegisterEntry {
        system: system.to_string(),
        vendor: vendor.to_string(),
        note: note.trim().to_string(),
        windows: 0,
        last: None,
        recorded: true,
    };
    let value = serde_json::to_value(&entry).map_err(failed)?;
    let value = match value {
        serde_json::Value::Object(mut m) => {
            m.retain(|k, _| matches!(k.as_str(), "system" | "vendor" | "note"));
            serde_json::Value::Object(m)
        }
        other => other,
    };
    change_config(ctx, node, REGISTER, &key, Some(value), "remote maintenance register", expected)?;
    Ok(())
}

/// The report document as HTML (Japanese with English beside it), for printing or archiving.
pub fn to_html(doc: &Document, sha256: &str) -> String {
    let e = |s: &str| s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;");
    let t = |us: i64| mamori_records::Timestamp(us).to_fhir();
    let w = &doc.window;
    let mut h = String::new();
    h.push_str("<!doctype html><html lang=\"ja\"><head><meta charset=\"utf-8\"><title>作業報告 / Work report ");
    h.push_str(&e(&w.id));
    h.push_str("</title></head><body>\n");
    h.push_str(&format!("<h1>リモートメンテナンス作業報告 / Remote maintenance work report — {}</h1>\n", e(&w.id)));
    h.push_str("<table>\n");
    for (k, v) in [
        ("保守事業者 / Vendor", format!("{} ({}) — {}", doc.vendor.name, doc.vendor.id, doc.vendor.contract)),
        ("対象システム / System", w.system.clone()),
        ("目的 / Purpose", w.purpose.clone()),
        ("時間枠 / Window", format!("{} – {}", t(w.start), t(w.end))),
        ("作業者 / Accounts", w.accounts.join(", ")),
        ("申請者 / Requested by", w.requested_by.clone()),
        ("承認 / Approved by", w.approvals.iter().map(|a| a.by.clone()).collect::<Vec<_>>().join(", ")),
        ("状態 / State", format!("{} / {}", w.state.label().0, w.state.label().1)),
    ] {
        h.push_str(&format!("<tr><th>{}</th><td>{}</td></tr>\n", e(k), e(&v)));
    }
    h.push_str("</table>\n<h2>作業項目と結果 / Planned items and results</h2>\n<ol>\n");
    for (n, item) in w.items.iter().enumerate() {
        let result = w.report.as_ref().and_then(|r| r.items.iter().find(|i| i.item == n + 1));
        let (done, text) = result.map_or(("—", String::new()), |r| {
            (if r.done { "完了 / done" } else { "未完了 / not done" }, r.result.clone())
        });
        h.push_str(&format!("<li>{} — <strong>{}</strong>: {}</li>\n", e(item), done, e(&text)));
    }
    h.push_str("</ol>\n<h2>テストデータの消去 / Erasure of test data</h2>\n");
    match w.report.as_ref().map(|r| &r.erasures) {
        Some(list) if !list.is_empty() => {
            h.push_str("<table><tr><th>何を / What</th><th>どこで / Where</th><th>方法 / How</th><th>いつ / When</th><th>誰が / By</th></tr>\n");
            for x in list {
                h.push_str(&format!(
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
                    e(&x.what),
                    e(&x.place),
                    e(&x.how),
                    e(&x.when),
                    e(&x.by)
                ));
            }
            h.push_str("</table>\n");
        }
        _ => h.push_str("<p>なし / none</p>\n"),
    }
    h.push_str(&format!(
        "<h2>監査証跡の記録 / Activity in the audit trail ({} 件, 計画外 {} / unplanned)</h2>\n<table><tr><th>時刻 / Time</th><th>実施者 / Actor</th><th>操作 / Action</th><th>結果 / Status</th><th>対象 / Resources</th><th>計画外 / Unplanned</th></tr>\n",
        doc.activity.len(),
        doc.unplanned
    ));
    for a in &doc.activity {
        h.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            e(&a.time),
            e(&a.actor),
            e(&a.action),
            a.status.map_or_else(|| e(&a.outcome), |s| s.to_string()),
            e(&a.resources.join(" ")),
            e(a.unplanned.as_deref().unwrap_or(""))
        ));
    }
    h.push_str("</table>\n");
    if !sha256.is_empty() {
        h.push_str(&format!(
            "<p>受理した報告 (JSON) の SHA-256 / SHA-256 of the accepted report (JSON): <code>{}</code> — 監査証跡の maintenance-report-accepted に記録 / recorded in the audit trail</p>\n",
            e(sha256)
        ));
    }
    h.push_str("</body></html>\n");
    h
}
