//! Reads audited by the service that performs them (L1, L3). A read's result is handed out only
//! together with its audit entry: [`Audited`] holds both, and gives the result to its caller only
//! once the entry is durable — on this thread ([`Audited::wait`], the command line and jobs) or
//! without holding one (`.await`, the HTTP edge). The entry is queued when the caller starts
//! waiting, after it has prepared its answer ([`Audited::map`]), as the edge's request entry
//! was before; and the log's writer thread, which completes every entry of a commit, makes no
//! system call for an async waiter (a condition variable signalled per entry cost reads a
//! third of their share of each group commit — BENCHMARKS.md, #23). The entry is built once, by [`read_entry`], for
//! every caller, so a record read from the command line is recorded exactly as one through the
//! API.
//!
//! INVARIANT: no value of a read leaves [`Audited`] unless its entry was appended durably; if
//! the append fails, the caller gets [`RecordError::Unaudited`] instead (fail closed).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Waker};

use mamori_audit::{AuditLog, AuditRecord, Outcome};

use crate::{RecordError, RequestContext, Revealed, VersionRecord};

/// What kind of read an entry records (the audit trail's `action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReadAction {
    /// The current version of one record (`GET Type/id`).
    Read,
    /// One version of a record (`GET Type/id/_history/n`).
    Vread,
    /// Versions of one record, a type or everything (`_history`).
    History,
    /// A search (`GET Type?…`, `POST Type/_search`).
    Search,
}

impl ReadAction {
    /// The stored name (the same names the trail has always used).
    pub fn as_str(self) -> &'static str {
        match self {
            ReadAction::Read => "read",
            ReadAction::Vread => "vread",
            ReadAction::History => "history",
            ReadAction::Search => "search",
        }
    }
}

impl std::fmt::Display for ReadAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The audit entry of a read by `ctx`: what it revealed (each version and its patient) — or,
/// when it revealed nothing, what was asked for (`asked`: `Patient/p3`, `Patient`, `_history`) —
/// or why it failed — a refusal by the access policy, or a record hidden from the requester, is
/// `Denied` with the policy's reasons in `detail`, even though the requester is told only "not
/// found". `status` is the FHIR REST status of the answer. The one builder of read entries.
pub fn read_entry(
    ctx: &RequestContext,
    action: &str,
    asked: Option<&str>,
    failure: Option<&RecordError>,
    revealed: Revealed,
    detail: Option<String>,
) -> AuditRecord {
    let denied = ctx.guard.0.denied();
    let outcome = match failure {
        None => Outcome::Success,
        Some(RecordError::Forbidden(_)) => Outcome::Denied,
        Some(RecordError::NotFound(_)) if !denied.is_empty() => Outcome::Denied,
        Some(_) => Outcome::Failure,
    };
    let mut notes: Vec<String> = detail.into_iter().collect();
    if revealed.unlisted > 0 {
        notes.push(format!("{} more versions not listed", revealed.unlisted));
    }
    if !denied.is_empty() {
        notes.push(format!("withheld or refused by access policy: {}", denied.join("; ")));
    }
    let mut entry = AuditRecord::new(action, ctx.audit_actor(), outcome, &ctx.current_purpose());
    entry.resources = revealed.resources.into_iter().collect();
    if entry.resources.is_empty() {
        entry.resources.extend(asked.map(str::to_string));
    }
    entry.patients = revealed.patients.into_iter().collect();
    entry.request_id = ctx.request_id.clone();
    entry.source = ctx.source.clone();
    entry.query = ctx.query.clone();
    entry.status = Some(failure.map_or(200, RecordError::status));
    entry.detail = (!notes.is_empty()).then(|| notes.join("; "));
    entry
}

/// What a result reveals, for its audit entry.
pub trait Reveals {
    /// Notes every version this value reveals.
    fn reveal(&self, into: &mut Revealed);
}

impl Reveals for VersionRecord {
    fn reveal(&self, into: &mut Revealed) {
        into.note(self);
    }
}

impl Reveals for crate::search::SearchPage {
    fn reveal(&self, into: &mut Revealed) {
        self.matches.iter().chain(&self.included).for_each(|v| into.note(v));
    }
}

impl Reveals for crate::HistoryPage {
    fn reveal(&self, into: &mut Revealed) {
        self.entries.iter().for_each(|v| into.note(v));
    }
}

impl Reveals for Vec<VersionRecord> {
    fn reveal(&self, into: &mut Revealed) {
        self.iter().for_each(|v| into.note(v));
    }
}

/// The result of a read and its audit entry on its way to the log; see the module docs.
#[must_use = "a read's result is handed out only once its audit entry is durable: call `.wait()` or `.await` it"]
pub struct Audited<T> {
    result: Option<Result<T, RecordError>>,
    /// The entry, its log, and the guard to tell once it is queued, until the caller waits.
    queued: Option<Queued>,
    pending: Arc<Pending>,
}

struct Queued {
    log: Arc<dyn AuditLog>,
    entry: AuditRecord,
    guard: crate::GuardRef,
    action: ReadAction,
}

#[derive(Default)]
struct Pending {
    state: Mutex<State>,
    done: Condvar,
}

#[derive(Default)]
struct State {
    /// `Some` once the log answered: `Err` with why the entry could not be written.
    outcome: Option<Result<(), String>>,
    waker: Option<Waker>,
    /// A thread waits in [`Audited::wait`] (only then is the condition variable signalled).
    blocked: bool,
}

impl Pending {
    fn finish(&self, outcome: Result<(), String>) {
        let (waker, blocked) = match self.state.lock() {
            Ok(mut s) => {
                s.outcome = Some(outcome);
                (s.waker.take(), s.blocked)
            }
            Err(_) => (None, true),
        };
        // The log's writer thread calls this for every entry of a commit: no system call unless
        // a thread actually waits.
        if blocked {
            self.done.notify_all();
        }
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<T: Reveals> Audited<T> {
    /// Builds `result`'s entry (see [`read_entry`]), marks it written on `ctx`'s guard, and hands
    /// it to `log`.
    pub(crate) fn append(
        log: &Arc<dyn AuditLog>,
        ctx: &RequestContext,
        action: ReadAction,
        asked: &str,
        result: Result<T, RecordError>,
    ) -> Self {
        let mut revealed = Revealed::default();
        if let Ok(v) = &result {
            v.reveal(&mut revealed);
        }
        // Whatever else the context's guard let through since last asked (an operator's tool
        // that looked at records before this read) is recorded here too, never dropped.
        if let Some(earlier) = ctx.guard.0.take_revealed() {
            revealed.merge(earlier);
        }
        let entry = read_entry(ctx, action.as_str(), Some(asked), result.as_ref().err(), revealed, None);
        let queued = Queued { log: log.clone(), entry, guard: ctx.guard.clone(), action };
        Audited { result: Some(result), queued: Some(queued), pending: Arc::new(Pending::default()) }
    }
}

impl<T> Audited<T> {
    /// Turns the result into what the caller will hand out (a response body) now, while the
    /// entry is on its way to durability; the transformed value still comes out only once the
    /// entry is durable. Lets the edge serialise a read during the audit's fsync instead of after.
    pub fn map<U>(mut self, f: impl FnOnce(T) -> U) -> Audited<U> {
        let result = self.result.take().map(|r| r.map(f));
        Audited { result, queued: self.queued.take(), pending: self.pending.clone() }
    }

    /// Hands the entry to the log (once), and only then tells the guard that this read is
    /// recorded: a read dropped before it was waited for is left to the edge's request entry.
    fn queue(&mut self) {
        if let Some(Queued { log, entry, guard, action }) = self.queued.take() {
            guard.0.entry_written(action);
            let p = self.pending.clone();
            log.append_then(vec![entry], Box::new(move |r| p.finish(r.map(|_| ()).map_err(|e| e.to_string()))));
        }
    }

    fn take(&mut self, outcome: &Result<(), String>) -> Result<T, RecordError> {
        let result =
            self.result.take().unwrap_or_else(|| Err(RecordError::Unaudited("the read was already handed out".into())));
        match outcome {
            Ok(()) => result,
            Err(e) => Err(RecordError::Unaudited(e.clone())),
        }
    }

    /// Waits on this thread until the entry is durable, then hands out the result.
    pub fn wait(mut self) -> Result<T, RecordError> {
        self.queue();
        let outcome = {
            let Ok(mut s) = self.pending.state.lock() else {
                return Err(RecordError::Unaudited("the audit wait was poisoned".into()));
            };
            loop {
                if let Some(o) = s.outcome.take() {
                    break o;
                }
                s.blocked = true;
                s = match self.pending.done.wait(s) {
                    Ok(s) => s,
                    Err(_) => return Err(RecordError::Unaudited("the audit wait was poisoned".into())),
                };
            }
        };
        self.take(&outcome)
    }
}

impl<T: Unpin> Future for Audited<T> {
    type Output = Result<T, RecordError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        this.queue();
        let outcome = {
            let Ok(mut s) = this.pending.state.lock() else {
                return Poll::Ready(Err(RecordError::Unaudited("the audit wait was poisoned".into())));
            };
            match s.outcome.take() {
                Some(o) => o,
                None => {
                    s.waker = Some(cx.waker().clone());
                    return Poll::Pending;
                }
            }
        };
        Poll::Ready(this.take(&outcome))
    }
}
