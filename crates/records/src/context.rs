//! The request context every record-service call takes: who asks ([`crate::Actor`]), from
//! where, for what, and the access-rights [`Guard`] the service asks before revealing or writing
//! any version — the enforcement point's principal, or the local operator's explicit
//! [`OperatorGuard`]. There is no unguarded context.

use crate::provenance::Actor;

/// The access-rights hook: the record service calls it inside its transactions so that
/// conditional matches and writes are decided by the same enforcement point as reads. The
/// implementation lives with the enforcement point (`mamori-access`).
pub trait Guard: Send + Sync {
    /// Whether `v` may be revealed to the requester (and so matched by a condition, or changed).
    fn may_see(&self, tx: &mut dyn crate::Tx, v: &crate::VersionRecord) -> Result<bool, crate::RecordError>;
    /// Whether the requester may write `new` (its method says create/update/patch/delete/approve);
    /// `Err(Forbidden)` refuses.
    fn may_write(&self, tx: &mut dyn crate::Tx, new: &crate::VersionRecord) -> Result<(), crate::RecordError>;
    /// Whether an earlier version `v` of a record whose newest version is `current` may be
    /// revealed (vread, history): judged by the classes of both together (a label added later
    /// narrows every earlier version too) and, when the record has moved to another patient,
    /// for both patients.
    fn may_see_version(
        &self,
        tx: &mut dyn crate::Tx,
        v: &crate::VersionRecord,
        current: &crate::VersionRecord,
    ) -> Result<bool, crate::RecordError>;
    /// Whether the requester may search records of `resource_type` at all (type level: scopes,
    /// application classes, policy): asked of every type a chained criterion or `_has` passes
    /// through. `Err(Forbidden)` refuses the search.
    fn may_search(&self, resource_type: &str) -> Result<(), crate::RecordError>;
    /// The purpose of use so far: `ETREAT` once an access relied on break-glass.
    fn purpose(&self) -> Option<String>;
    /// Whether this guard hides nothing (the local operator), so a search may use the store's
    /// own joins and counts, which are then exact.
    fn hides_nothing(&self) -> bool {
        false
    }
    /// What this guard's reads revealed since last asked, when the service that read must audit
    /// them itself (the local operator's tools; requests through the API are audited by the
    /// edge's request entry). Taking it empties it.
    fn take_revealed(&self) -> Option<Revealed> {
        None
    }
    /// Records withheld or acts refused by the access policy so far, with the reasons (for the
    /// audit entry; never for the requester).
    fn denied(&self) -> Vec<String> {
        Vec::new()
    }
    /// The service has appended the audit entry of a read of kind `action` (with the denials
    /// known so far), so the edge need not record the request again.
    fn entry_written(&self, _action: crate::ReadAction) {}
}

/// What reads revealed: `Type/id/_history/n` of each version and the patients they are about.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Revealed {
    /// Versions revealed (at most [`Revealed::MAX_LISTED`]).
    pub resources: std::collections::BTreeSet<String>,
    /// The patients of every version revealed (`Patient/123`), listed or not.
    pub patients: std::collections::BTreeSet<String>,
    /// Versions revealed beyond those listed (a long operator job, such as a re-import that
    /// checks every existing record, must not hold them all in memory).
    pub unlisted: u64,
}

impl Revealed {
    /// Versions listed by name; the rest are counted.
    pub const MAX_LISTED: usize = 10_000;

    /// Remembers that `v` was revealed.
    pub fn note(&mut self, v: &crate::VersionRecord) {
        // Every patient is named (their number is bounded by the population); versions beyond
        // the listed ones are counted.
        if let Some(p) = &v.patient {
            self.patients.insert(p.clone());
        }
        if self.resources.len() < Revealed::MAX_LISTED {
            self.resources.insert(format!("{}/{}/_history/{}", v.resource_type, v.id, v.version));
        } else {
            self.unlisted += 1;
        }
    }

    /// Adds what `other` revealed.
    pub fn merge(&mut self, other: Revealed) {
        self.patients.extend(other.patients);
        self.unlisted += other.unlisted;
        for r in other.resources {
            if self.resources.len() < Revealed::MAX_LISTED {
                self.resources.insert(r);
            } else if !self.resources.contains(&r) {
                self.unlisted += 1;
            }
        }
    }
}

/// The local operator's guard (the command line and jobs run on the server machine): an
/// explicit principal, never a missing one. It allows everything — whoever holds the data
/// directory already holds the data — but remembers each version it lets through, so the
/// operator's reads are audited like anyone's ([`crate::Records::audit_reads`]).
#[derive(Debug, Default)]
pub struct OperatorGuard {
    revealed: std::sync::Mutex<Revealed>,
}

impl OperatorGuard {
    fn note(&self, v: &crate::VersionRecord) {
        if let Ok(mut r) = self.revealed.lock() {
            r.note(v);
        }
    }
}

impl Guard for OperatorGuard {
    fn may_see(&self, _tx: &mut dyn crate::Tx, v: &crate::VersionRecord) -> Result<bool, crate::RecordError> {
        self.note(v);
        Ok(true)
    }

    fn may_write(&self, _tx: &mut dyn crate::Tx, _new: &crate::VersionRecord) -> Result<(), crate::RecordError> {
        Ok(())
    }

    fn may_see_version(
        &self,
        _tx: &mut dyn crate::Tx,
        v: &crate::VersionRecord,
        _current: &crate::VersionRecord,
    ) -> Result<bool, crate::RecordError> {
        self.note(v);
        Ok(true)
    }

    fn may_search(&self, _resource_type: &str) -> Result<(), crate::RecordError> {
        Ok(())
    }

    fn purpose(&self) -> Option<String> {
        None
    }

    fn hides_nothing(&self) -> bool {
        true
    }

    fn take_revealed(&self) -> Option<Revealed> {
        self.revealed.lock().ok().map(|mut r| std::mem::take(&mut *r))
    }
}

/// A shared [`Guard`]; compares by identity.
#[derive(Clone)]
pub struct GuardRef(pub std::sync::Arc<dyn Guard>);

impl std::fmt::Debug for GuardRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GuardRef")
    }
}

impl PartialEq for GuardRef {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for GuardRef {}

/// Who asks, for what purpose, from where: carried into every audit entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestContext {
    /// The principal.
    pub actor: Actor,
    /// `X-Request-ID`.
    pub request_id: Option<String>,
    /// Source address.
    pub source: Option<String>,
    /// Purpose of use (`TREAT`, `ETREAT` under break-glass, `HOPERAT` for the local operator).
    pub purpose: String,
    /// The request's criteria as the caller sent them (a search's or history's query string),
    /// for the audit entry.
    pub query: Option<String>,
    /// The access-rights hook. Always present: the local operator has an explicit
    /// [`OperatorGuard`]; there is no unguarded context.
    pub guard: GuardRef,
}

impl RequestContext {
    /// A context for `actor` under `guard`, with no request id or source yet.
    pub fn new(actor: Actor, guard: GuardRef) -> Self {
        RequestContext { actor, request_id: None, source: None, purpose: "TREAT".into(), query: None, guard }
    }

    /// The local operator `name` (command line, jobs on the server machine), under its own
    /// [`OperatorGuard`]: allowed everything, its reads audited by [`crate::Records::audit_reads`].
    pub fn operator(name: &str) -> Self {
        let mut ctx = Self::new(Actor::operator(name), GuardRef(std::sync::Arc::new(OperatorGuard::default())));
        ctx.purpose = "HOPERAT".into();
        ctx
    }

    /// The same context with the request's criteria (at most 2,000 characters are kept).
    pub fn with_query(mut self, query: Option<&str>) -> Self {
        self.query = query.filter(|q| !q.is_empty()).map(|q| q.chars().take(2000).collect());
        self
    }

    /// Whether `v` may be revealed under this context's guard.
    pub fn may_see(&self, tx: &mut dyn crate::Tx, v: &crate::VersionRecord) -> Result<bool, crate::RecordError> {
        self.guard.0.may_see(tx, v)
    }

    /// [`Guard::may_see_version`] under this context's guard. When `v` is the newest version
    /// itself this is [`RequestContext::may_see`].
    pub fn may_see_version(
        &self,
        tx: &mut dyn crate::Tx,
        v: &crate::VersionRecord,
        current: &crate::VersionRecord,
    ) -> Result<bool, crate::RecordError> {
        if v.version == current.version {
            self.guard.0.may_see(tx, v)
        } else {
            self.guard.0.may_see_version(tx, v, current)
        }
    }

    /// [`Guard::may_search`] under this context's guard.
    pub fn may_search(&self, resource_type: &str) -> Result<(), crate::RecordError> {
        self.guard.0.may_search(resource_type)
    }

    /// Whether the guard hides nothing ([`Guard::hides_nothing`]).
    pub fn hides_nothing(&self) -> bool {
        self.guard.0.hides_nothing()
    }

    /// The purpose to record now.
    pub fn current_purpose(&self) -> String {
        self.guard.0.purpose().unwrap_or_else(|| self.purpose.clone())
    }

    /// The actor as the audit trail records it.
    pub fn audit_actor(&self) -> mamori_audit::AuditActor {
        self.actor.clone()
    }
}
