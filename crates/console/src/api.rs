//! The integrity API (`/integrity`, issue #25 C4): what a scheduler posts to. `POST
//! /integrity/external/{name}/check` with another system's current settings export (JSON) and a
//! bearer token — an application's (client credentials) that external baseline `name` lists, or
//! a person's whose roles may read the audit trail — answers every changed, added and removed
//! field by JSON Pointer and records the check (`mamori_app::external::check`, the same use case
//! as `mamori baseline external check`). Errors are OperationOutcome; to an application the
//! baseline does not list, it does not exist (404, as for a name that is not there).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use mamori_app::{AppError, Ctx, external};
use mamori_http::{ApiError, AppState};

use crate::Console;

/// The router served at `/integrity` ([`mamori_http::app_with_management`]).
pub fn integrity_api(http: AppState, node: Arc<mamori_app::Node>) -> Router {
    Router::new().route("/external/{name}/check", post(check)).with_state(Arc::new(Console { http, node }))
}

/// A use case's error in the management APIs' form (OperationOutcome), or 202 for a change
/// held for a second person.
pub(crate) fn api_error(e: AppError) -> Response {
    match e {
        AppError::Forbidden(m) => ApiError::Forbidden(m).into_response(),
        AppError::NotFound(m) => ApiError::Record(mamori_records::RecordError::NotFound(m)).into_response(),
        AppError::Invalid(m) => ApiError::BadRequest(mamori_records::IssueCode::Invalid, m).into_response(),
        AppError::Conflict(m) => ApiError::Record(mamori_records::RecordError::Conflict(m)).into_response(),
        AppError::Unavailable(m) => ApiError::Blocked(m).into_response(),
        // A change made inside a window waits for a second person of the institution.
        AppError::Pending(p) => (
            StatusCode::ACCEPTED,
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::json!({ "held": p.id, "detail": "held for a second person (the two-person rule)" }).to_string(),
        )
            .into_response(),
        other => ApiError::Internal(other.to_string()).into_response(),
    }
}

async fn check(State(c): State<Arc<Console>>, Path(name): Path<String>, req: Request) -> Response {
    let ip = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(a)| a.ip());
    let request_id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).map(str::to_string);
    let node = c.node.clone();
    let r = answer(c, name.clone(), req).await;
    // A refused or failed check leaves its trace too (a successful one is recorded by the use
    // case as a version of `external-check`), in the one audit trail.
    if !r.status().is_success() {
        let mut e = mamori_audit::AuditRecord::new(
            "external-check",
            mamori_audit::AuditActor::from_tag("anonymous:integrity-api"),
            mamori_audit::Outcome::Failure,
            "HOPERAT",
        );
        e.detail =
            Some(format!("POST /integrity/external/{}/check refused", name.chars().take(64).collect::<String>()));
        e.status = Some(r.status().as_u16());
        e.source = ip.map(|i| i.to_string());
        e.request_id = request_id;
        if let Err(err) = node.store.append(vec![e]) {
            tracing::error!(error = %err, "the refused external check could not be audited");
        }
    }
    r
}

async fn answer(c: Arc<Console>, name: String, req: Request) -> Response {
    let ip = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(a)| a.ip());
    let (parts, body) = req.into_parts();
    let headers: HeaderMap = parts.headers;
    let limit = c.http.config.max_body_bytes;
    let body: Bytes = match axum::body::to_bytes(body, limit).await {
        Ok(b) => b,
        Err(_) => return ApiError::PayloadTooLarge(limit).into_response(),
    };
    let (grant, account) = match mamori_http::bearer::grant_of(&c.http, &headers, ip).await {
        Ok(g) => g,
        Err(e) => return e.into_response(),
    };
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json")));
    if !json {
        return ApiError::UnsupportedMediaType("send the settings as application/json".into()).into_response();
    }
    let text = match std::str::from_utf8(&body) {
        Ok(t) => t.to_string(),
        Err(_) => {
            return ApiError::BadRequest(mamori_records::IssueCode::Invalid, "the body is not UTF-8".into())
                .into_response();
        }
    };
    let request_id = headers.get("x-request-id").and_then(|v| v.to_str().ok()).map(str::to_string);
    let node = c.node.clone();
    let source = ip.map(|i| i.to_string());
    let r = tokio::task::spawn_blocking(move || {
        let ctx = match (&grant.subject, account) {
            (Some(user), Some(_)) => Ctx::person(&node, user, source, request_id)?,
            (Some(_), None) => return Err(AppError::Forbidden("the account is not active".into())),
            (None, _) => Ctx::application(&node, &grant.client_id, source, request_id),
        };
        let current = external::parse(&text)?;
        external::check(&ctx, &node, &name, &current)
    })
    .await
    .unwrap_or_else(|_| Err(AppError::Failed("the task stopped".into())));
    match r {
        Ok(check) => {
            let mut v = serde_json::to_value(&check).unwrap_or_default();
            if let Some(o) = v.as_object_mut() {
                o.insert("drift".into(), serde_json::Value::Bool(check.drift()));
            }
            (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
        }
        Err(e) => api_error(e),
    }
}
