//! The audit trail at the edge: the layer that records every request no service recorded (L1,
//! L3) — refused before reaching one (401, 403 by scope, malformed), AuditEvent and tlog reads,
//! Bundles, bulk export — and the one append for the edge's own entries. Reads of records are
//! audited by the record service itself (`mamori_records::Audited`). The tlog-tiles endpoints are in `tlog.rs`, the FHIR `AuditEvent`
//! view in `audit_event.rs`.
//!
//! INVARIANT: a response leaves only after its audit entry is durable; if the entry cannot be
//! written the client gets 503 instead (fail closed).

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use mamori_access::Principal;
use mamori_audit::{AuditActor, AuditRecord, Outcome};
use mamori_records::IssueCode;

use crate::AppState;
use crate::error::{RequestId, fhir_response, outcome};

/// What a handler tells the audit layer about its response.
#[derive(Debug, Clone, Default)]
pub struct AuditNote {
    /// Resources revealed or changed (`Type/id/_history/v`).
    pub resources: Vec<String>,
    /// Patients concerned.
    pub patients: Vec<String>,
    /// The handler's write already appended its entry in the same transaction.
    pub in_transaction: bool,
    /// The request's criteria when they were not in the URL (`POST …/_search`).
    pub query: Option<String>,
}

impl AuditNote {
    /// Attaches the note to a response.
    pub fn attach(self, mut r: Response) -> Response {
        r.extensions_mut().insert(self);
        r
    }
}

/// The action of a request, from its method and path.
fn action_of(method: &Method, path: &str) -> String {
    let p = path.trim_start_matches('/');
    let segs: Vec<&str> = p.split('/').collect();
    if segs.first() == Some(&"audit") {
        return "audit-read".into();
    }
    let segs: Vec<&str> = segs.into_iter().skip(1).collect();
    let m = method.as_str();
    match (m, segs.as_slice()) {
        (_, ["_history"]) | (_, [_, "_history"]) | (_, [_, _, "_history"]) => "history",
        (_, [_, _, "_history", _]) => "vread",
        (_, [_, _, op]) if op.starts_with('$') => op.trim_start_matches('$'),
        ("GET", [_]) | ("POST", [_, "_search"]) | ("POST", ["_search"]) => "search",
        ("POST", [_]) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", _) => "delete",
        ("GET", [_, _]) => "read",
        _ => "other",
    }
    .to_string()
}

/// Records every request that reaches `/fhir` or `/audit` (except `metadata`).
pub async fn layer(State(s): State<AppState>, req: Request, next: Next) -> Response {
    // The full path: inside a nested router `req.uri()` has lost its `/fhir` or `/audit` prefix.
    let path = req
        .extensions()
        .get::<axum::extract::OriginalUri>()
        .map_or_else(|| req.uri().path().to_string(), |u| u.0.path().to_string());
    if path == "/fhir/metadata" {
        return next.run(req).await;
    }
    let method = req.method().clone();
    let query = req.uri().query().map(|q| q.chars().take(2000).collect::<String>());
    let request_id = req.extensions().get::<RequestId>().map(|r| r.0.clone());
    let source = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip().to_string());
    let resp = next.run(req).await;
    let note = resp.extensions().get::<AuditNote>().cloned().unwrap_or_default();
    let principal = resp.extensions().get::<Principal>().cloned();
    // A write's own entry (same transaction) stands for the request, unless something was
    // withheld or refused on the way: those denials need this entry.
    if note.in_transaction && resp.status().is_success() && principal.as_ref().is_none_or(|p| p.denied().is_empty()) {
        return resp;
    }
    // A read the record service performed was audited there (with its outcome and every
    // denial), and its result was handed out only once that entry was durable.
    let action = action_of(&method, &path);
    if principal.as_ref().is_some_and(|p| p.read_audited(&action)) {
        return resp;
    }
    let status = resp.status();
    let actor = principal.as_ref().map(|p| p.audit_actor()).unwrap_or(AuditActor {
        client_id: None,
        fhir_user: None,
        id: String::new(),
        kind: mamori_audit::ActorKind::Anonymous,
    });
    // Denials by the access policy are recorded with their reasons, even when the response
    // (a 404, or a search with records withheld) does not say so to the client.
    let denied = principal.as_ref().map(Principal::denied).unwrap_or_default();
    let detail = (!denied.is_empty()).then(|| format!("withheld or refused by access policy: {}", denied.join("; ")));
    let record = AuditRecord {
        action,
        actor,
        detail,
        outcome: if status.is_success() || status == StatusCode::NOT_MODIFIED {
            Outcome::Success
        } else if status == StatusCode::UNAUTHORIZED
            || status == StatusCode::FORBIDDEN
            || (status == StatusCode::NOT_FOUND && !denied.is_empty())
        {
            Outcome::Denied
        } else {
            Outcome::Failure
        },
        patients: note.patients,
        purpose: principal.as_ref().map_or_else(|| "TREAT".to_string(), Principal::purpose),
        query: note.query.or(query),
        request_id,
        resources: if note.resources.is_empty() { vec![path.clone()] } else { note.resources },
        source,
        status: Some(status.as_u16()),
        time: String::new(),
        v: 1,
        window: None,
    };
    match append(&s, record).await {
        Ok(()) => resp,
        Err(e) => fail_closed(&e),
    }
}

/// Appends one record and waits, without holding a thread, until it is durable.
pub async fn append(s: &AppState, record: AuditRecord) -> Result<(), String> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    s.audit.append_then(
        vec![record],
        Box::new(move |r| {
            let _ = tx.send(r);
        }),
    );
    match rx.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("the audit writer dropped the request".into()),
    }
}

fn fail_closed(e: &str) -> Response {
    tracing::error!(error = %e, "audit append failed; refusing the response");
    let mut r = fhir_response(
        StatusCode::SERVICE_UNAVAILABLE,
        &outcome(&[mamori_records::Issue::error(
            IssueCode::Exception,
            "the audit trail could not be written, so the request was not completed (監査証跡に記録できません)",
        )]),
    );
    r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    r
}
