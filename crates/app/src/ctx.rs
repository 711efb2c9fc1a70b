//! Who asks, from where, by which clock: the context every use case takes, and its errors.

use std::sync::Arc;

use mamori_access::{AdminAct, Principal, Refusal};
use mamori_authz::Subject;
use mamori_records::{Actor, Clock, RequestContext, Timestamp};

use crate::node::Node;

/// Who performs a use case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// The local operator: a person at the server's command line (or a job on the server). Whoever
    /// can run the binary can read the data directory, so every act is allowed — but the operator
    /// is named, and every act and every read is audited in that name.
    Operator(String),
    /// A person signed in (the console): their account's current roles decide every act.
    Person {
        /// Login name.
        username: String,
        /// Roles (職種), read afresh from the account.
        roles: Vec<String>,
        /// Department.
        department: String,
        /// Their FHIR resource (`Practitioner/…`), if any.
        fhir_user: Option<String>,
    },
    /// A registered application acting for itself (a scheduler posting an external-settings
    /// check with its client-credentials token). It performs no administrative act and reads no
    /// record through a use case: only what a use case lets an application do by name
    /// (`crate::external::check` of a baseline that lists it).
    Application(String),
}

/// The context of one use case: the caller, where the request came from, and the node's clock.
#[derive(Clone)]
pub struct Ctx {
    /// Who.
    pub caller: Caller,
    /// The request id (`X-Request-ID`) the surface assigned, if any.
    pub request_id: Option<String>,
    /// The source address, if any.
    pub source: Option<String>,
    /// The node's one clock.
    pub clock: Arc<dyn Clock>,
    /// Why a high-risk change may be made without holding it for a second person: the approved
    /// request being applied, or a revert to the last value the path wrote (`None`: it is held).
    pub(crate) two_person: Option<String>,
    /// The remote-maintenance window a maintenance account works in now (from this source), if
    /// any: its scope is part of every decision on this caller (`crate::maintenance`).
    pub window: Option<std::sync::Arc<mamori_authz::Window>>,
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("caller", &self.caller)
            .field("request_id", &self.request_id)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// Why a use case failed. Each variant is one kind of answer for the surface: the CLI prints the
/// message and exits non-zero, the console shows it in the user's language.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AppError {
    /// The caller may not perform this act (403).
    #[error("{0}")]
    Forbidden(String),
    /// The input is wrong; nothing was changed (400).
    #[error("{0}")]
    Invalid(String),
    /// The named thing does not exist (404).
    #[error("{0}")]
    NotFound(String),
    /// Someone changed it meanwhile, or it is already in that state (409).
    #[error("{0}")]
    Conflict(String),
    /// A password or other secret was refused by its rules; each reason in Japanese and English.
    #[error("パスワードが要件を満たしません / the password was refused: {}", .0.iter().map(|(ja, en)| format!("{ja} / {en}")).collect::<Vec<_>>().join("; "))]
    PasswordRefused(Vec<(String, String)>),
    /// The store is busy or unreachable; nothing was changed and the caller may retry (503).
    #[error("混雑しています。しばらくしてから再試行してください / the server is busy; retry shortly")]
    Unavailable(String),
    /// Storage or another service failed (500); the detail is for the log.
    #[error("{0}")]
    Failed(String),
    /// A high-risk change was not made but stored as a request for a second person's approval
    /// (the two-person rule, `crate::approvals`): nothing is in force yet (202).
    #[error("change request {} awaits a second person's approval (sha256 {}): {}; nothing changes until another person approves it", .0.id, .0.sha256, .0.summary)]
    Pending(Box<crate::approvals::Pending>),
}

impl From<mamori_records::RecordError> for AppError {
    fn from(e: mamori_records::RecordError) -> Self {
        use mamori_records::RecordError as R;
        match e {
            R::NotFound(_) | R::Gone(_) => AppError::NotFound(e.to_string()),
            R::Forbidden(m) => AppError::Forbidden(m),
            R::Conflict(_) | R::VersionConflict { .. } | R::MultipleMatches(_) => AppError::Conflict(e.to_string()),
            R::Invalid(_) | R::Unprocessable(_) => AppError::Invalid(e.to_string()),
            R::Store(s) if s.is_transient() => AppError::Unavailable(s.to_string()),
            R::Unaudited(m) => AppError::Unavailable(format!("the audit trail could not be written: {m}")),
            R::ReadOnly => AppError::Unavailable(e.to_string()),
            other => AppError::Failed(other.to_string()),
        }
    }
}

impl From<mamori_store_sql::Error> for AppError {
    fn from(e: mamori_store_sql::Error) -> Self {
        match e {
            mamori_store_sql::Error::Stale { .. } => AppError::Conflict(e.to_string()),
            mamori_store_sql::Error::Store(s) if s.is_transient() => AppError::Unavailable(s.to_string()),
            other => AppError::Failed(other.to_string()),
        }
    }
}

impl From<crate::NodeError> for AppError {
    fn from(e: crate::NodeError) -> Self {
        match e {
            crate::NodeError::Store { source, .. } => AppError::from(source),
            other => AppError::Failed(other.to_string()),
        }
    }
}

impl From<Refusal> for AppError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::Forbidden(m) => AppError::Forbidden(m),
            Refusal::Unavailable => AppError::Failed(r.to_string()),
            Refusal::Blocked(m) => AppError::Unavailable(m),
        }
    }
}

impl From<mamori_identity::Error> for AppError {
    fn from(e: mamori_identity::Error) -> Self {
        use mamori_identity::Error as E;
        match e {
            E::PasswordRefused(why) => AppError::PasswordRefused(why.into_iter().map(|m| (m.ja, m.en)).collect()),
            E::NoAccount(_) => AppError::NotFound(e.to_string()),
            E::Conflict(m) => AppError::Conflict(m),
            E::Storage(m) => AppError::Failed(format!("storage: {m}")),
            E::Invalid(m) => AppError::Invalid(m),
            E::Crypto(m) => AppError::Failed(format!("crypto: {m}")),
            other => AppError::Failed(other.to_string()),
        }
    }
}

impl Ctx {
    /// The local operator `name`, on `node`'s clock.
    pub fn operator(node: &Node, name: &str) -> Ctx {
        Ctx {
            caller: Caller::Operator(name.to_string()),
            request_id: None,
            source: None,
            clock: node.clock.clone(),
            two_person: None,
            window: None,
        }
    }

    /// A person signed in, with their account's current roles: refused at once unless the account
    /// is active.
    pub fn person(
        node: &Node,
        username: &str,
        source: Option<String>,
        request_id: Option<String>,
    ) -> Result<Ctx, AppError> {
        let a = node
            .identity
            .account(username)?
            .filter(|a| a.status == mamori_identity::account::Status::Active)
            .ok_or_else(|| AppError::Forbidden(format!("account `{username}` is not active")))?;
        let window = node.enforcer.window_of_person(&a.username, &a.roles, source.as_deref());
        Ok(Ctx {
            window,
            caller: Caller::Person {
                username: a.username,
                roles: a.roles,
                department: a.department.unwrap_or_default(),
                fhir_user: a.fhir_user,
            },
            request_id,
            source,
            clock: node.clock.clone(),
            two_person: None,
        })
    }

    /// Application `client_id` (its token already validated by the surface).
    pub fn application(node: &Node, client_id: &str, source: Option<String>, request_id: Option<String>) -> Ctx {
        Ctx {
            caller: Caller::Application(client_id.to_string()),
            request_id,
            source,
            clock: node.clock.clone(),
            two_person: None,
            window: None,
        }
    }

    /// Now, by the node's clock.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Now in Unix seconds.
    pub fn now_secs(&self) -> i64 {
        self.now().0.div_euclid(1_000_000)
    }

    /// The caller as the configuration path and the identity service record it
    /// (`operator:NAME`, `user:NAME`).
    pub fn by(&self) -> String {
        self.actor().tag()
    }

    /// The caller's name.
    pub fn name(&self) -> &str {
        match &self.caller {
            Caller::Operator(n) | Caller::Application(n) => n,
            Caller::Person { username, .. } => username,
        }
    }

    /// Asks the enforcement point whether the caller may perform `act`. The operator may; a
    /// person's roles decide by the policies in force. A refusal is audited (an `admin-denied`
    /// entry naming the act) before it is returned.
    pub fn authorize(&self, node: &Node, act: AdminAct) -> Result<(), AppError> {
        self.authorize_any(node, &[act])
    }

    /// Whether the caller may perform `act`, recording nothing: for showing or hiding a page's
    /// navigation. The act itself is still decided, and a refusal audited, by its use case.
    pub fn may(&self, node: &Node, act: AdminAct) -> bool {
        match &self.caller {
            Caller::Operator(_) => true,
            Caller::Application(_) => false,
            Caller::Person { .. } => self.subject().is_some_and(|s| node.enforcer.authorize_admin(&s, act).is_ok()),
        }
    }

    fn subject(&self) -> Option<Subject> {
        match &self.caller {
            Caller::Operator(_) => None,
            Caller::Application(id) => Some(Subject::Client { id: id.clone(), classes: Vec::new() }),
            Caller::Person { username, roles, department, fhir_user } => Some(Subject::User {
                username: username.clone(),
                roles: roles.clone(),
                department: department.clone(),
                has_fhir_user: fhir_user.is_some(),
                window: self.window.clone(),
            }),
        }
    }

    /// As [`Ctx::authorize`], allowed when any one of `acts` is (e.g. coverage, which both the
    /// administrator and the security manager watch); the refusal names the first.
    pub fn authorize_any(&self, node: &Node, acts: &[AdminAct]) -> Result<(), AppError> {
        let Some(subject) = self.subject() else {
            return Ok(());
        };
        let mut first = None;
        for act in acts {
            match node.enforcer.authorize_admin(&subject, *act) {
                Ok(()) => return Ok(()),
                Err(refusal) => {
                    first.get_or_insert((*act, refusal));
                }
            }
        }
        let (act, refusal) = first.unwrap_or((AdminAct::ReadAudit, Refusal::Unavailable));
        let entry = mamori_audit::AuditRecord::new(
            "admin-denied",
            self.audit_actor(),
            mamori_audit::Outcome::Failure,
            "HOPERAT",
        );
        self.refused(node, entry, format!("{act}: {refusal}"))?;
        Err(refusal.into())
    }

    /// Records an act (or an alert, `alert-…`) of this caller through the one audit append:
    /// `action`, `outcome` and `detail`, with this request's id and source.
    pub(crate) fn record(
        &self,
        node: &Node,
        action: &str,
        outcome: mamori_audit::Outcome,
        detail: String,
    ) -> Result<(), AppError> {
        let mut entry = mamori_audit::AuditRecord::new(action, self.audit_actor(), outcome, "HOPERAT");
        entry.detail = Some(detail);
        entry.request_id = self.request_id.clone();
        entry.source = self.source.clone();
        node.store.append(vec![entry]).map(|_| ()).map_err(|e| AppError::Failed(format!("audit: {e}")))
    }

    /// Records a refusal before it is returned: `entry` (action, outcome, purpose, resources)
    /// with the reason, this request's id and source, and status 403.
    pub(crate) fn refused(
        &self,
        node: &Node,
        mut entry: mamori_audit::AuditRecord,
        reason: String,
    ) -> Result<(), AppError> {
        entry.detail = Some(reason);
        entry.request_id = self.request_id.clone();
        entry.source = self.source.clone();
        entry.status = Some(403);
        node.store.append(vec![entry]).map_err(|e| AppError::Failed(format!("audit: {e}")))?;
        Ok(())
    }

    /// The record service's context for this caller: the operator's explicit guard (allowed,
    /// every revealed version remembered for the read entry), or the person's principal at the
    /// enforcement point, exactly as their API requests are judged.
    pub fn records(&self, node: &Node) -> RequestContext {
        let mut ctx = match self.principal(node) {
            None => RequestContext::operator(self.name()),
            Some(p) => p.context(),
        };
        ctx.request_id = self.request_id.clone();
        ctx.source = self.source.clone();
        ctx
    }

    /// A person's principal at the enforcement point, as their API requests are judged (`None`
    /// for the operator, who is allowed).
    pub fn principal(&self, node: &Node) -> Option<Principal> {
        match &self.caller {
            Caller::Operator(_) => None,
            // No scope: the enforcement point permits an application nothing through a use case.
            Caller::Application(id) => Some(Principal::new(
                mamori_oauth::Grant {
                    client_id: id.clone(),
                    subject: None,
                    fhir_user: None,
                    scopes: mamori_oauth::ScopeSet::default(),
                    expires_at: 0,
                    client_classes: Vec::new(),
                    patient: None,
                },
                None,
                node.enforcer.clone(),
                self.request_id.clone(),
                self.source.clone(),
            )),
            Caller::Person { username, roles, department, fhir_user } => Some(Principal::for_person(
                username,
                (roles.clone(), fhir_user.clone(), Some(department.clone())),
                "mamori-console",
                node.enforcer.clone(),
                self.request_id.clone(),
                self.source.clone(),
            )),
        }
    }

    /// A record context for use cases that read only what records are *about* — their
    /// information classes, patient and lab flag, never their content — for the security
    /// manager's tools (policy explain, the least-privilege report), whose own roles may not read
    /// clinical records. Every version it lets through is remembered and must be audited in the
    /// caller's name with [`mamori_records::Records::audit_reads`].
    pub(crate) fn metadata_reads(&self) -> RequestContext {
        let guard = mamori_records::GuardRef(Arc::new(mamori_records::OperatorGuard::default()));
        let mut ctx = RequestContext::new(self.actor(), guard);
        ctx.purpose = "HOPERAT".into();
        ctx.request_id = self.request_id.clone();
        ctx.source = self.source.clone();
        ctx
    }

    /// The caller as the audit trail records it.
    pub fn audit_actor(&self) -> mamori_audit::AuditActor {
        self.actor()
    }

    /// The actor for writes (入力者).
    pub fn actor(&self) -> Actor {
        match &self.caller {
            Caller::Operator(n) => Actor::operator(n),
            Caller::Application(id) => Actor {
                kind: mamori_records::ActorKind::Client,
                id: id.clone(),
                fhir_user: None,
                client_id: Some(id.clone()),
            },
            Caller::Person { .. } => Actor {
                kind: mamori_records::ActorKind::User,
                id: self.name().to_string(),
                fhir_user: match &self.caller {
                    Caller::Person { fhir_user, .. } => fhir_user.clone(),
                    Caller::Operator(_) | Caller::Application(_) => None,
                },
                client_id: Some("mamori-console".into()),
            },
        }
    }
}

/// The one configuration path, for the use cases: a new version of `(kind, key)` — checked by
/// the registry first — attributed to the caller, at the caller's clock, based on `expected`
/// (`None`: must not exist yet). The store writes the version and its audit entry in one
/// transaction. A high-risk change (`crate::approvals::config_risk`) is not written but held for
/// a second person: [`AppError::Pending`].
pub(crate) fn change_config(
    ctx: &Ctx,
    node: &Node,
    kind: crate::registry::ConfigKind,
    key: &str,
    value: Option<serde_json::Value>,
    reason: &str,
    expected: Option<u64>,
) -> Result<u64, AppError> {
    kind.validate(value.as_ref()).map_err(AppError::Invalid)?;
    // A change made by someone working in a remote-maintenance window is always held for a
    // second person of the institution (the scope's "configuration change through the
    // two-person path").
    let risk = if ctx.window.is_some() && !kind.is_workflow() {
        Some("a change made during remote maintenance")
    } else {
        crate::approvals::config_risk(node, kind, key, value.as_ref())?
    };
    if ctx.two_person.is_none()
        && let Some(what) = risk
    {
        let change = crate::approvals::Change::Config {
            kind: kind.name().to_string(),
            key: key.to_string(),
            value: value.clone(),
            expected,
            reason: reason.to_string(),
        };
        crate::approvals::hold(ctx, node, change, format!("{what} `{key}`: {reason}"))?;
    }
    let by = ctx.by();
    let version = node
        .store
        .change_config(&mamori_store_sql::ConfigChange {
            kind: kind.name(),
            key,
            value: value.clone(),
            changed_by: &by,
            reason,
            expected_version: expected,
            now_micros: ctx.now().0,
        })
        .map_err(AppError::from)?;
    crate::baseline::check_change(ctx, node, kind, key, value.as_ref());
    Ok(version)
}

/// A storage failure of a lookup, for the log.
pub(crate) fn failed(e: impl std::fmt::Display) -> AppError {
    AppError::Failed(e.to_string())
}
