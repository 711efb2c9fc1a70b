//! The single enforcement point (Z3). Authentication turns a bearer token into a [`Principal`];
//! then every decision is made here and nowhere else:
//!
//! - [`Principal::authorize`]: may this principal do this action on this resource *type* at all
//!   (scopes, then the type-level access policy)? Refusal: 403, which reveals nothing about any
//!   record.
//! - [`Principal::may_see`] / [`Principal::may_write`] (the [`Guard`] the record service calls
//!   inside its transactions): may this *record* be revealed — by read, vread, history, search,
//!   conditional matches and every path built on them — or written? A hidden record is
//!   indistinguishable from one that does not exist (404, never counted).
//!
//! Effective rights = the token's SMART scopes ∩ the user's roles (Cedar policies over
//! information classes, care relationship and break-glass) or, for an application acting for
//! itself, scopes ∩ its registered classes. Every denial is audited (the audit layer reads the
//! principal's [`RequestState`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use mamori_authz::{Act, Decision, PolicyEngine, Rules, Situation, Subject, Target, Window};
use mamori_oauth::{Grant, Perm};
use mamori_records::{Actor, ActorKind, Clock, Guard, GuardRef, Method, RecordError, Tx, VersionRecord};

mod admin;
mod labeler;

pub use admin::{AdminAct, MAINTENANCE_ROLE, Refusal};
pub use labeler::ClassLabeler;

/// A person's roles, `fhirUser` and department, read afresh for each request.
pub type Person = (Vec<String>, Option<String>, Option<String>);

/// The policies and class rules in force, swapped as a whole when configuration changes.
pub struct Enforcer {
    engine: RwLock<Arc<PolicyEngine>>,
    rules: RwLock<Arc<Rules>>,
    clock: Arc<dyn Clock>,
    blocks: RwLock<Arc<Blocks>>,
    windows: RwLock<Arc<Vec<ApprovedWindow>>>,
}

/// An approved remote-maintenance window as the enforcement point holds it (M1): whose accounts
/// it covers, when and from where, and its scope. The application layer replaces the list when
/// a window is approved, closed or ends (`mamori_app::maintenance`); a window counts only
/// between its start and its end by the node's clock, so it opens at its start time whatever
/// the moment it was approved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovedWindow {
    /// The scope the policies see.
    pub scope: Arc<Window>,
    /// The maintenance accounts that may work in it.
    pub accounts: BTreeSet<String>,
    /// Start, µs since the epoch (inclusive).
    pub start: i64,
    /// End, µs since the epoch (exclusive).
    pub end: i64,
    /// Source addresses or CIDR blocks the work may come from (empty: any).
    pub sources: Vec<String>,
}

impl ApprovedWindow {
    fn covers(&self, username: &str, now: i64) -> bool {
        self.start <= now && now < self.end && self.accounts.contains(username)
    }

    fn source_allowed(&self, source: Option<&str>) -> bool {
        self.sources.is_empty()
            || source
                .and_then(|s| s.parse::<std::net::IpAddr>().ok())
                .is_some_and(|ip| self.sources.iter().any(|c| mamori_oauth::cidr_contains(c, ip)))
    }
}

/// What the configuration integrity check has stopped (#25, the `block` response): all clinical
/// access while the access policies or class rules were changed around the configuration path,
/// and single accounts or applications whose definitions were. Administrative acts stay open to
/// everyone not blocked, so someone with the right can revert or approve.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Blocks {
    /// Why all clinical access is stopped, if it is.
    pub clinical: Option<String>,
    /// Blocked subjects (`account/NAME`, `client/ID`) and why.
    pub subjects: BTreeMap<String, String>,
}

impl Blocks {
    /// Whether nothing is blocked.
    pub fn is_empty(&self) -> bool {
        self.clinical.is_none() && self.subjects.is_empty()
    }

    /// Why `subject` (or, for a person, the application the token came through) is blocked.
    fn subject(&self, subject: &Subject, client_id: Option<&str>) -> Option<&String> {
        let own = match subject {
            Subject::User { username, .. } => format!("account/{username}"),
            Subject::Client { id, .. } => format!("client/{id}"),
        };
        self.subjects.get(&own).or_else(|| client_id.and_then(|c| self.subjects.get(&format!("client/{c}"))))
    }
}

impl std::fmt::Debug for Enforcer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Enforcer")
    }
}

impl Enforcer {
    /// An enforcer with these policies and labelling rules, judging time-bound grants
    /// (break-glass) by `clock` — the node's one clock, the record service's too.
    pub fn new(engine: PolicyEngine, rules: Rules, clock: Arc<dyn Clock>) -> Self {
        Enforcer {
            engine: RwLock::new(Arc::new(engine)),
            rules: RwLock::new(Arc::new(rules)),
            clock,
            blocks: RwLock::new(Arc::default()),
            windows: RwLock::new(Arc::default()),
        }
    }

    /// Replaces the approved maintenance windows (the application layer's snapshot).
    pub fn set_windows(&self, windows: Vec<ApprovedWindow>) {
        if let Ok(mut w) = self.windows.write() {
            *w = Arc::new(windows);
        }
    }

    /// The approved windows held now.
    pub fn windows(&self) -> Arc<Vec<ApprovedWindow>> {
        self.windows.read().map(|w| w.clone()).unwrap_or_default()
    }

    /// The scope of the window `username` may work in now from `source`, if any: open by the
    /// node's clock, naming the account, and the source one of its addresses.
    pub fn window_for(&self, username: &str, source: Option<&str>) -> Option<Arc<Window>> {
        let now = self.clock.now().0;
        let windows = self.windows();
        windows.iter().find(|w| w.covers(username, now) && w.source_allowed(source)).map(|w| w.scope.clone())
    }

    /// The id of the window open now for `username` (from any address): what the audit trail
    /// stamps on the account's entries, refusals included.
    pub fn window_id_of(&self, username: &str) -> Option<String> {
        let now = self.clock.now().0;
        let windows = self.windows();
        if windows.is_empty() {
            return None;
        }
        windows.iter().find(|w| w.covers(username, now)).map(|w| w.scope.id.clone())
    }

    /// Replaces what is blocked (the configuration integrity check).
    pub fn set_blocks(&self, blocks: Blocks) {
        if let Ok(mut b) = self.blocks.write() {
            *b = Arc::new(blocks);
        }
    }

    /// What is blocked now.
    pub fn blocks(&self) -> Arc<Blocks> {
        self.blocks.read().map(|b| b.clone()).unwrap_or_default()
    }

    /// Why a clinical request by `subject` (through `client_id`) is refused by a block.
    pub fn clinical_block(&self, subject: &Subject, client_id: Option<&str>) -> Option<String> {
        let b = self.blocks();
        b.clinical.clone().or_else(|| b.subject(subject, client_id).cloned())
    }

    /// Why an administrative act by `subject` is refused by a block.
    pub fn admin_block(&self, subject: &Subject) -> Option<String> {
        self.blocks().subject(subject, None).cloned()
    }

    /// The clock decisions are made by.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Replaces the policies (configuration change).
    pub fn set_engine(&self, engine: PolicyEngine) {
        if let Ok(mut e) = self.engine.write() {
            *e = Arc::new(engine);
        }
    }

    /// Replaces the labelling rules (configuration change).
    pub fn set_rules(&self, rules: Rules) {
        if let Ok(mut r) = self.rules.write() {
            *r = Arc::new(rules);
        }
    }

    /// The policies in force.
    pub fn engine(&self) -> Option<Arc<PolicyEngine>> {
        self.engine.read().ok().map(|e| e.clone())
    }

    /// The labelling rules in force.
    pub fn rules(&self) -> Arc<Rules> {
        self.rules.read().map(|r| r.clone()).unwrap_or_else(|_| Arc::new(mamori_authz::default_rules()))
    }
}

fn type_classes(rules: &Rules, resource_type: &str) -> BTreeSet<String> {
    rules.by_type.get(resource_type).unwrap_or(&rules.default).iter().cloned().collect()
}

/// What a type-level decision is about: the type with its own classes (every record of the type
/// carries at least those, so a type-level refusal can never hide an allowed record), not tied to
/// a patient, possibly a lab result. Used by [`Principal::authorize`] and by explanations.
pub fn type_target(resource_type: &str, rules: &Rules) -> Target {
    Target {
        resource_type: resource_type.to_string(),
        reference: None,
        classes: type_classes(rules, resource_type),
        patient_bound: false,
        lab: true,
    }
}

/// What a record-level decision is about. Used by [`Principal::may_see`] /
/// [`Principal::may_write`] and by explanations, so both judge a record alike.
pub fn record_target(v: &VersionRecord, rules: &Rules) -> Target {
    let mut classes: BTreeSet<String> = v.classes.iter().cloned().collect();
    if classes.is_empty() {
        // A version stored before classes were recorded beside it: its labels are in its own
        // meta.security, plus the rules' classes for its type. Never "no classes", which every
        // permit would cover.
        classes = v
            .body
            .as_deref()
            .and_then(|b| serde_json::from_str::<serde_json::Value>(b).ok())
            .map(|b| {
                b.pointer("/meta/security")
                    .and_then(serde_json::Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter(|c| c.get("system").and_then(serde_json::Value::as_str) == Some(mamori_authz::SYSTEM))
                    .filter_map(|c| c.get("code").and_then(serde_json::Value::as_str).map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        classes.extend(type_classes(rules, v.resource_type.as_str()));
    }
    Target {
        resource_type: v.resource_type.to_string(),
        reference: Some(format!("{}/{}", v.resource_type, v.id)),
        classes,
        patient_bound: v.patient.is_some(),
        lab: v.lab,
    }
}

/// What one request's decisions found, for the audit layer.
#[derive(Debug, Default)]
pub struct RequestState {
    care: HashMap<String, bool>,
    break_glass: HashMap<String, bool>,
    /// An access relied on break-glass: the purpose of use is ETREAT.
    pub used_break_glass: bool,
    /// Records withheld or writes refused by the access policy.
    pub denied: Vec<String>,
    /// For a principal whose reads the calling service audits itself (a person in the console):
    /// what its reads revealed. `None` when the edge's request entry records them (the API).
    revealed: Option<mamori_records::Revealed>,
    /// Reads whose audit entries the record service wrote for this request, each with the
    /// number of denials it recorded.
    audited: Vec<(mamori_records::ReadAction, usize)>,
}

/// Who is asking, established from the bearer token (and, for a person, their account).
#[derive(Debug, Clone)]
pub struct Principal {
    grant: Grant,
    subject: Subject,
    request_id: Option<String>,
    source: Option<String>,
    enforcer: Arc<Enforcer>,
    state: Arc<Mutex<RequestState>>,
    /// Whether the calling service audits this principal's reads itself (a person in the
    /// console), so each revealed version is remembered; API requests are audited by the edge.
    audits_reads: bool,
}

/// An action, as a request asks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// read / vread / history
    Read,
    /// search
    Search,
    /// create
    Create,
    /// update / patch
    Update,
    /// delete
    Delete,
    /// an operation (`$name`)
    Execute(&'static str),
}

impl Action {
    fn act(self) -> Act {
        match self {
            Action::Read => Act::Read,
            Action::Search => Act::Search,
            Action::Create => Act::Create,
            Action::Update => Act::Update,
            Action::Delete => Act::Delete,
            Action::Execute(_) => Act::Execute,
        }
    }

    fn perm(self) -> Perm {
        match self {
            Action::Read => Perm::Read,
            Action::Search => Perm::Search,
            Action::Create => Perm::Create,
            Action::Update | Action::Execute(_) => Perm::Update,
            Action::Delete => Perm::Delete,
        }
    }

    fn operation(self) -> &'static str {
        if let Action::Execute(op) = self { op } else { "" }
    }

    fn name(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Search => "search",
            Action::Create => "create",
            Action::Update => "update",
            Action::Delete => "delete",
            Action::Execute(op) => op,
        }
    }
}

fn all_classes() -> Vec<String> {
    static ALL: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    ALL.get_or_init(|| mamori_authz::taxonomy().into_iter().map(|c| c.code).collect()).clone()
}

impl Principal {
    /// A principal for a validated grant. `account` is the person's account when the token was
    /// issued for one: `(roles, fhirUser, department)`.
    pub fn new(
        grant: Grant,
        account: Option<Person>,
        enforcer: Arc<Enforcer>,
        request_id: Option<String>,
        source: Option<String>,
    ) -> Principal {
        let subject = match (&grant.subject, account) {
            (Some(user), Some((roles, fhir_user, department))) => Subject::User {
                window: enforcer.window_of_person(user, &roles, source.as_deref()),
                username: user.clone(),
                roles,
                department: department.unwrap_or_default(),
                has_fhir_user: fhir_user.is_some(),
            },
            // A person's token without an account has no roles: nothing is permitted.
            (Some(user), None) => Subject::User {
                username: user.clone(),
                roles: Vec::new(),
                department: String::new(),
                has_fhir_user: false,
                window: None,
            },
            (None, _) => Subject::Client {
                id: grant.client_id.clone(),
                classes: if grant.client_classes.is_empty() { all_classes() } else { grant.client_classes.clone() },
            },
        };
        Principal {
            grant,
            subject,
            request_id,
            source,
            enforcer,
            state: Arc::new(Mutex::new(RequestState::default())),
            audits_reads: false,
        }
    }

    /// A principal for a person signed in to this server's own pages (the console's login
    /// session), not through an application: their roles alone decide, as if through an
    /// application with every `user/` scope and no class limit. `account` as for
    /// [`Principal::new`]; `client_id` names the surface (e.g. `mamori-console`) in the trail.
    pub fn for_person(
        username: &str,
        account: Person,
        client_id: &str,
        enforcer: Arc<Enforcer>,
        request_id: Option<String>,
        source: Option<String>,
    ) -> Principal {
        let grant = Grant {
            client_id: client_id.to_string(),
            subject: Some(username.to_string()),
            fhir_user: account.1.clone(),
            scopes: mamori_oauth::ScopeSet::parse("user/*.cruds").unwrap_or_default(),
            expires_at: i64::MAX,
            client_classes: Vec::new(),
            patient: None,
        };
        let mut p = Principal::new(grant, Some(account), enforcer, request_id, source);
        p.audits_reads = true;
        if let Ok(mut s) = p.state.lock() {
            s.revealed = Some(mamori_records::Revealed::default());
        }
        p
    }

    /// `user` for a person (through an application or the console), `client` for an
    /// application acting for itself (backend services): the label of request metrics.
    pub fn kind(&self) -> &'static str {
        match self.subject {
            Subject::User { .. } => "user",
            Subject::Client { .. } => "client",
        }
    }

    /// Remembers a version revealed, when this principal's reads are audited by the service.
    fn note_revealed(&self, v: &VersionRecord) {
        if !self.audits_reads {
            return;
        }
        if let Ok(mut s) = self.state.lock()
            && let Some(r) = s.revealed.as_mut()
        {
            r.note(v);
        }
    }

    /// The subject the policies judge.
    pub fn subject(&self) -> &Subject {
        &self.subject
    }

    /// The actor recorded as 入力者 for writes.
    pub fn actor(&self) -> Actor {
        match &self.grant.subject {
            Some(user) => Actor {
                kind: ActorKind::User,
                id: user.clone(),
                fhir_user: self.grant.fhir_user.clone(),
                client_id: Some(self.grant.client_id.clone()),
            },
            None => Actor::client(&self.grant.client_id),
        }
    }

    /// Who asks, from where, for what, as the record service and the audit trail need it; it
    /// carries this principal as the record service's [`Guard`].
    pub fn context(&self) -> mamori_records::RequestContext {
        mamori_records::RequestContext {
            actor: self.actor(),
            request_id: self.request_id.clone(),
            source: self.source.clone(),
            purpose: "TREAT".into(),
            query: None,
            guard: GuardRef(Arc::new(self.clone())),
        }
    }

    /// The purpose of use of this request so far.
    pub fn purpose(&self) -> String {
        if self.state.lock().is_ok_and(|s| s.used_break_glass) { "ETREAT".into() } else { "TREAT".into() }
    }

    /// Whether the record service has already recorded this request as a read of kind `action`
    /// (named as the audit trail names it) with every denial known now, so the edge need not.
    pub fn read_audited(&self, action: &str) -> bool {
        self.state.lock().is_ok_and(|s| s.audited.iter().any(|(a, n)| a.as_str() == action && *n == s.denied.len()))
    }

    /// Records withheld or refused so far (for the audit layer).
    pub fn denied(&self) -> Vec<String> {
        self.state.lock().map(|s| s.denied.clone()).unwrap_or_default()
    }

    fn deny(&self, what: String) {
        if let Ok(mut s) = self.state.lock()
            && s.denied.len() < 100
        {
            s.denied.push(what);
        }
    }

    fn engine(&self) -> Result<Arc<PolicyEngine>, Refusal> {
        self.enforcer.engine().ok_or(Refusal::Unavailable)
    }

    /// Decides one action on one resource type: the token's scopes, then the access policy for
    /// the type's own classes (every record of the type carries at least those, so a type-level
    /// refusal can never hide an allowed record). Refusal: 403.
    pub fn authorize(&self, resource_type: &str, action: Action) -> Result<(), Refusal> {
        match self.refusal(resource_type, action)? {
            None => Ok(()),
            Some(why) => {
                self.deny(format!("{resource_type} ({}): {why}", action.name()));
                Err(Refusal::Forbidden(format!("{why}: {} on {resource_type}", action.name())))
            }
        }
    }

    /// Whether [`Principal::authorize`] would allow it, without recording a refusal: for
    /// choosing the types an export without `_type` covers.
    pub fn allows(&self, resource_type: &str, action: Action) -> bool {
        matches!(self.refusal(resource_type, action), Ok(None))
    }

    /// Why the action would be refused, if it would.
    fn refusal(&self, resource_type: &str, action: Action) -> Result<Option<&'static str>, Refusal> {
        if let Some(why) = self.enforcer.clinical_block(&self.subject, Some(&self.grant.client_id)) {
            return Err(Refusal::Blocked(why));
        }
        if !self.grant.scopes.allows(resource_type, action.perm()) {
            return Ok(Some("the access token's scopes do not allow it"));
        }
        let target = type_target(resource_type, &self.enforcer.rules());
        if !self.client_reaches(&target) {
            return Ok(Some("the application is not registered for these information classes"));
        }
        let situation = Situation { operation: action.operation().to_string(), ..Situation::default() };
        if self.engine()?.decide(&self.subject, action.act(), &target, &situation).allowed {
            Ok(None)
        } else {
            Ok(Some("the access policy does not allow it"))
        }
    }

    /// Whether the application's registered classes (`client add --class`) cover the target's:
    /// a person's token through an app never reaches beyond the app's registration. (For an
    /// application acting for itself the policy already judges its classes.)
    fn client_reaches(&self, target: &Target) -> bool {
        self.grant.client_classes.is_empty() || target.classes.iter().all(|c| self.grant.client_classes.contains(c))
    }

    /// The record-level decision. Returns the decision and whether it relied on break-glass.
    fn decide_record(
        &self,
        tx: &mut dyn Tx,
        act: Act,
        operation: &str,
        v: &VersionRecord,
    ) -> Result<(Arc<Decision>, bool), RecordError> {
        let target = record_target(v, &self.enforcer.rules());
        self.decide_target(tx, act, operation, &target, v.patient.as_deref())
    }

    /// The decision on `target`, a record about `patient` (care relationship and break-glass
    /// are looked up for that patient): the application's classes, then [`explain`].
    fn decide_target(
        &self,
        tx: &mut dyn Tx,
        act: Act,
        operation: &str,
        target: &Target,
        patient: Option<&str>,
    ) -> Result<(Arc<Decision>, bool), RecordError> {
        let engine = self.enforcer.engine().ok_or_else(|| {
            RecordError::Store(mamori_records::StoreError::Unavailable("policy engine unavailable".into()))
        })?;
        if let Some(why) = self.enforcer.clinical_block(&self.subject, Some(&self.grant.client_id)) {
            return Err(RecordError::Store(mamori_records::StoreError::Unavailable(why)));
        }
        if !self.client_reaches(target) {
            let d = Decision { allowed: false, policies: vec!["client-classes".into()], errors: Vec::new() };
            return Ok((Arc::new(d), false));
        }
        let mut facts = TxFacts { principal: self, tx };
        let e = explain(&engine, &self.subject, act, operation, target, patient, &mut facts)?;
        Ok((e.decision, e.used_break_glass))
    }

    /// Whether an earlier version `v` of a record whose newest version is `current` may be
    /// revealed: judged with the classes of both (a label added later narrows every earlier
    /// version; a label can only narrow, so `lab` holds only if it holds for both), for the
    /// patient of each.
    pub fn may_see_version(
        &self,
        tx: &mut dyn Tx,
        v: &VersionRecord,
        current: &VersionRecord,
    ) -> Result<bool, RecordError> {
        let reference = || format!("{}/{}/_history/{}", v.resource_type, v.id, v.version);
        if !self.scopes_reach(v, Perm::Read) || !self.scopes_reach(current, Perm::Read) {
            self.deny(format!("{} (read): scopes", reference()));
            return Ok(false);
        }
        let rules = self.enforcer.rules();
        let mut target = record_target(v, &rules);
        let now = record_target(current, &rules);
        target.classes.extend(now.classes);
        target.patient_bound |= now.patient_bound;
        target.lab &= now.lab;
        let mut used = false;
        let mut patients = vec![v.patient.as_deref()];
        if current.patient.is_some() && current.patient != v.patient {
            patients.push(current.patient.as_deref());
        }
        for patient in patients {
            let (d, bg) = self.decide_target(tx, Act::Read, "", &target, patient)?;
            if !d.allowed {
                self.deny(format!("{} (read): policy", reference()));
                return Ok(false);
            }
            used |= bg;
        }
        self.note_use(used);
        self.note_revealed(v);
        Ok(true)
    }

    /// Whether this principal may search `resource_type` at all; a refusal is recorded.
    pub fn may_search(&self, resource_type: &str) -> Result<(), RecordError> {
        match self.refusal(resource_type, Action::Search) {
            Ok(None) => Ok(()),
            Ok(Some(why)) => {
                self.deny(format!("{resource_type} (search, joined): {why}"));
                Err(RecordError::Forbidden(format!(
                    "{why}: search on {resource_type} (in a chained or _has criterion)"
                )))
            }
            Err(_) => {
                Err(RecordError::Store(mamori_records::StoreError::Unavailable("policy engine unavailable".into())))
            }
        }
    }

    fn care(&self, tx: &mut dyn Tx, patient: &str) -> Result<bool, RecordError> {
        let Some(me) = self.grant.fhir_user.as_deref() else { return Ok(false) };
        if let Some(c) = self.state.lock().ok().and_then(|s| s.care.get(patient).copied()) {
            return Ok(c);
        }
        let c = tx.in_care(patient, me)?;
        if let Ok(mut s) = self.state.lock() {
            s.care.insert(patient.to_string(), c);
        }
        Ok(c)
    }

    fn break_glass(&self, tx: &mut dyn Tx, username: &str, patient: &str) -> Result<bool, RecordError> {
        if let Some(c) = self.state.lock().ok().and_then(|s| s.break_glass.get(patient).copied()) {
            return Ok(c);
        }
        let c = tx.break_glass_active(username, patient, self.enforcer.clock.now())?;
        if let Ok(mut s) = self.state.lock() {
            s.break_glass.insert(patient.to_string(), c);
        }
        Ok(c)
    }

    fn note_use(&self, used_break_glass: bool) {
        if used_break_glass && let Ok(mut s) = self.state.lock() {
            s.used_break_glass = true;
        }
    }

    /// Whether the token's scopes let `perm` reach record `v`: `patient/` scopes reach only
    /// the patient in context (and nothing without one).
    fn scopes_reach(&self, v: &VersionRecord, perm: Perm) -> bool {
        match self.grant.scopes.reach(v.resource_type.as_str(), perm) {
            None => false,
            Some(false) => true,
            Some(true) => self.grant.patient.is_some() && self.grant.patient == v.patient,
        }
    }

    /// Whether a stored version may appear in a response to this principal.
    pub fn may_see(&self, tx: &mut dyn Tx, v: &VersionRecord) -> Result<bool, RecordError> {
        let reference = || format!("{}/{}/_history/{}", v.resource_type, v.id, v.version);
        if !self.scopes_reach(v, Perm::Read) {
            self.deny(format!("{} (read): scopes", reference()));
            return Ok(false);
        }
        let (d, bg) = self.decide_record(tx, Act::Read, "", v)?;
        if d.allowed {
            self.note_use(bg);
            self.note_revealed(v);
            Ok(true)
        } else {
            self.deny(format!("{} (read): policy", reference()));
            Ok(false)
        }
    }

    /// Whether this principal may write `new` (the method says which action).
    pub fn may_write(&self, tx: &mut dyn Tx, new: &VersionRecord) -> Result<(), RecordError> {
        let (action, op) = match new.method {
            Method::Create => (Action::Create, ""),
            Method::Update | Method::Patch => (Action::Update, ""),
            Method::Delete => (Action::Delete, ""),
            Method::Approve => (Action::Execute("approve"), "approve"),
        };
        let reference = format!("{}/{}", new.resource_type, new.id);
        if !self.scopes_reach(new, action.perm()) {
            self.deny(format!("{reference} ({}): scopes", action.name()));
            return Err(RecordError::Forbidden(format!(
                "the access token's scopes do not allow {} on {}",
                action.name(),
                new.resource_type
            )));
        }
        let (d, bg) = self.decide_record(tx, action.act(), op, new)?;
        if d.allowed {
            self.note_use(bg);
            Ok(())
        } else {
            self.deny(format!("{reference} ({}): policy, classes {}", action.name(), new.classes.join(",")));
            Err(RecordError::Forbidden(format!(
                "the access policy does not allow {} of {} with information classes [{}] for this patient",
                action.name(),
                new.resource_type,
                new.classes.join(", ")
            )))
        }
    }

    /// An application acting for itself with a wildcard read scope and no class limit: the
    /// shipped policies hide nothing from it, so counts reveal nothing.
    pub fn reads_everything(&self) -> bool {
        self.grant.subject.is_none()
            && self.grant.patient.is_none()
            && self.grant.client_classes.is_empty()
            && self.grant.scopes.iter().any(|s| s.resource.is_none() && s.allows("*", Perm::Read))
    }

    /// The principal as the audit trail records it.
    pub fn audit_actor(&self) -> mamori_audit::AuditActor {
        mamori_audit::AuditActor {
            client_id: Some(self.grant.client_id.clone()),
            fhir_user: self.grant.fhir_user.clone(),
            id: self.grant.subject.clone().unwrap_or_else(|| self.grant.client_id.clone()),
            kind: if self.grant.subject.is_some() {
                mamori_audit::ActorKind::User
            } else {
                mamori_audit::ActorKind::Client
            },
        }
    }
}

impl Guard for Principal {
    fn may_see(&self, tx: &mut dyn Tx, v: &VersionRecord) -> Result<bool, RecordError> {
        Principal::may_see(self, tx, v)
    }

    fn may_write(&self, tx: &mut dyn Tx, new: &VersionRecord) -> Result<(), RecordError> {
        Principal::may_write(self, tx, new)
    }

    fn may_see_version(
        &self,
        tx: &mut dyn Tx,
        v: &VersionRecord,
        current: &VersionRecord,
    ) -> Result<bool, RecordError> {
        Principal::may_see_version(self, tx, v, current)
    }

    fn may_search(&self, resource_type: &str) -> Result<(), RecordError> {
        Principal::may_search(self, resource_type)
    }

    fn purpose(&self) -> Option<String> {
        self.state.lock().ok().filter(|s| s.used_break_glass).map(|_| "ETREAT".to_string())
    }

    fn take_revealed(&self) -> Option<mamori_records::Revealed> {
        let mut s = self.state.lock().ok()?;
        let r = s.revealed.as_mut()?;
        Some(std::mem::take(r))
    }

    fn denied(&self) -> Vec<String> {
        Principal::denied(self)
    }

    fn entry_written(&self, action: mamori_records::ReadAction) {
        if let Ok(mut s) = self.state.lock() {
            let n = s.denied.len();
            s.audited.push((action, n));
        }
    }
}

/// What a decision about a patient's record depends on besides the policies: looked up only
/// when the decision needs it.
pub trait Facts {
    /// Whether the person (`fhirUser`) is in `patient`'s care relationship.
    fn care(&mut self, patient: &str) -> Result<bool, RecordError>;
    /// Whether `username` holds an active break-glass grant for `patient`.
    fn break_glass(&mut self, username: &str, patient: &str) -> Result<bool, RecordError>;
}

/// A decision with the situation it was made in: what every request is decided by and what
/// `mamori policy explain` prints — one function, so the two cannot drift.
#[derive(Debug, Clone)]
pub struct Explanation {
    /// The decision, with its determining policies.
    pub decision: Arc<Decision>,
    /// The situation of the decision that counted (`break_glass` is set only when the access
    /// needed it and a grant was active).
    pub situation: Situation,
    /// Whether the access relied on break-glass (purpose `ETREAT`).
    pub used_break_glass: bool,
}

/// Decides `act` on `target` (a record about `patient`, or a type) for `subject`. For a person
/// and a patient's record: first within the care relationship as it is; only if that refuses
/// someone outside the care relationship who holds an active break-glass grant for the patient,
/// once more under break-glass. The application's registered classes are the caller's concern
/// (they belong to a token, not to the person).
pub fn explain(
    engine: &PolicyEngine,
    subject: &Subject,
    act: Act,
    operation: &str,
    target: &Target,
    patient: Option<&str>,
    facts: &mut dyn Facts,
) -> Result<Explanation, RecordError> {
    let mut situation = Situation { operation: operation.to_string(), ..Situation::default() };
    if let (Subject::User { username, window, .. }, Some(patient)) = (subject, patient) {
        situation.window_patient = window.as_ref().is_some_and(|w| w.patients.contains(patient));
        situation.care = facts.care(patient)?;
        let d = engine.decide(subject, act, target, &situation);
        if d.allowed || situation.care || !facts.break_glass(username, patient)? {
            return Ok(Explanation { decision: d, situation, used_break_glass: false });
        }
        situation.break_glass = true;
        let d = engine.decide(subject, act, target, &situation);
        let used_break_glass = d.allowed;
        return Ok(Explanation { decision: d, situation, used_break_glass });
    }
    let decision = engine.decide(subject, act, target, &situation);
    Ok(Explanation { decision, situation, used_break_glass: false })
}

/// The facts of a request, read in the record service's transaction and cached per request.
struct TxFacts<'a> {
    principal: &'a Principal,
    tx: &'a mut dyn Tx,
}

impl Facts for TxFacts<'_> {
    fn care(&mut self, patient: &str) -> Result<bool, RecordError> {
        self.principal.care(self.tx, patient)
    }

    fn break_glass(&mut self, username: &str, patient: &str) -> Result<bool, RecordError> {
        self.principal.break_glass(self.tx, username, patient)
    }
}
