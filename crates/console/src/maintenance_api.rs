//! The remote-maintenance API (`/maintenance`, issue #26 M1; docs/REMOTE-MAINTENANCE.md): the
//! same use cases as `mamori maintenance` and the console's maintenance pages
//! (`mamori_app::maintenance`), for a person's bearer token — the vendor's contact, the
//! institution's approvers, and inside a window the vendor's maintenance accounts. Bodies and
//! answers are JSON; errors are OperationOutcome. Times in answers are Unix microseconds; a
//! request's `start` and `end` may be RFC 3339 instead.
//!
//! Every request leaves a trace in the one audit trail: a change is recorded by its use case (a
//! version of the window, an entry), a refusal by the enforcement point; a read and any request
//! refused before its use case ran (no token, a malformed body) are recorded here.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use mamori_app::maintenance::{self, Filing, Request as WindowRequest, Vendor};
use mamori_app::{AppError, Ctx, Node};
use mamori_audit::{AuditActor, AuditRecord, Outcome};
use mamori_http::ApiError;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Console;
use crate::api::api_error;

/// The router served at `/maintenance` ([`mamori_http::app_with_management`]).
pub fn maintenance_api(http: mamori_http::AppState, node: Arc<Node>) -> Router {
    Router::new()
        .route("/windows", get(list).post(file))
        .route("/windows/{id}", get(show))
        .route("/windows/{id}/activity", get(activity))
        .route("/windows/{id}/history", get(history))
        .route("/windows/{id}/document", get(document))
        .route("/windows/{id}/report", post(report))
        .route("/windows/{id}/amend", post(amend))
        .route("/windows/{id}/{act}", post(decide))
        .route("/vendors", get(vendors))
        .route("/vendors/{id}", put(set_vendor))
        .route("/register", get(register).put(set_register))
        .fallback(|| async { ApiError::Record(mamori_records::RecordError::NotFound("no such endpoint".into())) })
        .with_state(Arc::new(Console { http, node }))
}

/// What a handler hands over: the request's edge facts and its JSON body.
struct Call {
    method: Method,
    path: String,
    source: Option<String>,
    ip: Option<std::net::IpAddr>,
    request_id: Option<String>,
    headers: HeaderMap,
    body: Bytes,
}

async fn call_of(c: &Console, req: Request) -> Result<Call, Response> {
    let ip = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(a)| a.ip());
    let path = req
        .extensions()
        .get::<axum::extract::OriginalUri>()
        .map_or_else(|| req.uri().path().to_string(), |u| u.0.path().to_string());
    let (parts, body) = req.into_parts();
    let limit = c.http.config.max_body_bytes;
    let body = axum::body::to_bytes(body, limit).await.map_err(|_| ApiError::PayloadTooLarge(limit).into_response())?;
    Ok(Call {
        method: parts.method,
        path,
        source: ip.map(|i| i.to_string()),
        ip,
        request_id: parts.headers.get("x-request-id").and_then(|v| v.to_str().ok()).map(str::to_string),
        headers: parts.headers,
        body,
    })
}

/// How a request ended, for its trace.
enum Ended {
    /// The use case ran and recorded what it did (a change, or a refusal).
    Recorded,
    /// The use case read something (recorded here), or the request never reached it.
    Here(Option<String>),
}

/// Runs `f` as the token's person and answers its JSON; records the trace.
async fn serve<F, A>(c: Arc<Console>, req: Request, read: bool, f: F) -> Response
where
    F: FnOnce(&Ctx, &Node, &[u8]) -> Result<A, AppError> + Send + 'static,
    A: Into<Answer> + Send + 'static,
{
    let call = match call_of(&c, req).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let (response, ended, actor) = answer(&c, &call, read, f).await;
    let recorded_by_use_case = matches!(ended, Ended::Recorded);
    if !recorded_by_use_case || (read && response.status().is_success()) {
        let failed = !response.status().is_success();
        let mut e = AuditRecord::new(
            if failed { "maintenance-api" } else { "maintenance-read" },
            actor.unwrap_or_else(|| AuditActor::from_tag("anonymous:maintenance-api")),
            if failed { Outcome::Failure } else { Outcome::Success },
            "HOPERAT",
        );
        let why = match ended {
            Ended::Here(Some(w)) => format!(": {}", w.chars().take(200).collect::<String>()),
            _ => String::new(),
        };
        e.detail = Some(format!("{} {}{why}", call.method, call.path.chars().take(200).collect::<String>()));
        e.status = Some(response.status().as_u16());
        e.source = call.source.clone();
        e.request_id = call.request_id.clone();
        // Inside a window the entry carries its id like every other of the vendor's.
        let node = c.node.clone();
        let stamped = tokio::task::spawn_blocking(move || node.store.append(vec![e])).await;
        if !matches!(stamped, Ok(Ok(_))) {
            tracing::error!("a maintenance API request could not be audited");
            return ApiError::Internal("the request could not be audited".into()).into_response();
        }
    }
    response
}

async fn answer<F, A>(c: &Arc<Console>, call: &Call, read: bool, f: F) -> (Response, Ended, Option<AuditActor>)
where
    F: FnOnce(&Ctx, &Node, &[u8]) -> Result<A, AppError> + Send + 'static,
    A: Into<Answer> + Send + 'static,
{
    let (grant, account) = match mamori_http::bearer::grant_of(&c.http, &call.headers, call.ip).await {
        Ok(g) => g,
        Err(e) => return (e.into_response(), Ended::Here(Some("no valid bearer token".into())), None),
    };
    let (Some(user), Some(_)) = (grant.subject.clone(), account) else {
        let actor = AuditActor::from_tag(&format!("client:{}", grant.client_id));
        return (
            ApiError::Forbidden("remote maintenance is a person's work; use a person's token".into()).into_response(),
            Ended::Here(Some("not a person's token".into())),
            Some(actor),
        );
    };
    if !read && !call.body.is_empty() {
        let json =
            call.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|t| {
                t.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
            });
        if !json {
            let e = ApiError::UnsupportedMediaType("send application/json".into());
            return (e.into_response(), Ended::Here(Some("not JSON".into())), None);
        }
    }
    let node = c.node.clone();
    let (source, request_id, body) = (call.source.clone(), call.request_id.clone(), call.body.clone());
    let r = tokio::task::spawn_blocking(move || {
        let ctx = match Ctx::person(&node, &user, source, request_id) {
            Ok(x) => x,
            Err(e) => return (Err(e), None),
        };
        let actor = ctx.audit_actor();
        (f(&ctx, &node, &body).map(Into::into), Some(actor))
    })
    .await
    .unwrap_or_else(|_| (Err(AppError::Failed("the task stopped".into())), None));
    match r {
        (Ok(a), actor) => {
            let ended = if read { Ended::Here(None) } else { Ended::Recorded };
            (a.into_response(), ended, actor)
        }
        // The enforcement point recorded the refusal, the two-person path the held change.
        (Err(e @ (AppError::Forbidden(_) | AppError::Pending(_))), actor) => (api_error(e), Ended::Recorded, actor),
        (Err(e), actor) => {
            let why = e.to_string();
            (api_error(e), Ended::Here(Some(why)), actor)
        }
    }
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, AppError> {
    if body.is_empty() {
        return Err(AppError::Invalid("the body is empty; send JSON".into()));
    }
    serde_json::from_slice(body).map_err(|e| AppError::Invalid(format!("the body does not fit: {e}")))
}

/// What a use case answers: JSON, or a document as it is (its type, bytes and SHA-256).
enum Answer {
    Json(Value),
    Document { html: bool, text: String, sha256: String },
}

impl From<Value> for Answer {
    fn from(v: Value) -> Self {
        Answer::Json(v)
    }
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        match self {
            Answer::Json(v) => {
                (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
            }
            Answer::Document { html, text, sha256 } => {
                let kind = if html { "text/html; charset=utf-8" } else { "application/json" };
                let mut r = (StatusCode::OK, [(header::CONTENT_TYPE, kind)], text).into_response();
                if let Ok(h) = axum::http::HeaderValue::from_str(&sha256) {
                    r.headers_mut().insert("x-mamori-sha256", h);
                }
                if html {
                    // A document to read or print: it loads nothing and runs nothing.
                    r.headers_mut().insert(
                        header::CONTENT_SECURITY_POLICY,
                        axum::http::HeaderValue::from_static("default-src 'none'"),
                    );
                    r.headers_mut().insert("x-content-type-options", axum::http::HeaderValue::from_static("nosniff"));
                }
                r
            }
        }
    }
}

fn to_json<T: serde::Serialize>(t: &T) -> Result<Value, AppError> {
    serde_json::to_value(t).map_err(|e| AppError::Failed(e.to_string()))
}

/// A decision's or an amendment's note.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Note {
    #[serde(default)]
    note: String,
}

fn note_of(body: &[u8]) -> Result<String, AppError> {
    if body.is_empty() { Ok(String::new()) } else { parse::<Note>(body).map(|n| n.note) }
}

#[derive(Deserialize, Default)]
struct ListQuery {
    #[serde(default)]
    due: Option<bool>,
}

/// `GET /maintenance/windows[?due=true]`: the windows the person may see, newest first (with
/// `due`: those whose report is overdue).
async fn list(State(c): State<Arc<Console>>, Query(q): Query<ListQuery>, req: Request) -> Response {
    let due = q.due.unwrap_or(false);
    serve(c, req, true, move |ctx, node, _| {
        let ws = if due { maintenance::reports_due(ctx, node)? } else { maintenance::list(ctx, node)? };
        Ok(json!({ "windows": to_json(&ws)? }))
    })
    .await
}

/// `POST /maintenance/windows`: files a request (body: `vendor`, `accounts`, `system`,
/// `purpose`, `items`, `start`, `end`, `scope`); 201 with the window.
async fn file(State(c): State<Arc<Console>>, req: Request) -> Response {
    let r = serve(c, req, false, |ctx, node, body| {
        let r: WindowRequest = parse(body)?;
        to_json(&maintenance::request(ctx, node, r)?)
    })
    .await;
    if r.status() == StatusCode::OK {
        let (mut parts, body) = r.into_parts();
        parts.status = StatusCode::CREATED;
        return Response::from_parts(parts, body);
    }
    r
}

/// `GET /maintenance/windows/{id}`: the window, with every amendment of its request and what
/// it changed.
async fn show(State(c): State<Arc<Console>>, Path(id): Path<String>, req: Request) -> Response {
    serve(c, req, true, move |ctx, node, _| {
        // Its history, decided once: the last version is the window as it stands.
        let versions = maintenance::history(ctx, node, &id)?;
        let a = maintenance::amendments_in(&versions);
        let Some((_, w)) = versions.last() else {
            return Err(AppError::NotFound(format!("no maintenance window `{id}`")));
        };
        let mut v = to_json(w)?;
        if let Some(o) = v.as_object_mut() {
            o.insert("amendmentChanges".into(), to_json(&a)?);
        }
        Ok(v)
    })
    .await
}

#[derive(Deserialize, Default)]
struct After {
    #[serde(default)]
    after: Option<u64>,
}

/// `GET /maintenance/windows/{id}/activity[?after=N]`: the window's audit entries as they
/// happen (after entry `N`), each judged against the plan — the institution's live view.
async fn activity(
    State(c): State<Arc<Console>>,
    Path(id): Path<String>,
    Query(q): Query<After>,
    req: Request,
) -> Response {
    serve(c, req, true, move |ctx, node, _| {
        let mut a = maintenance::activity(ctx, node, &id)?;
        if let Some(n) = q.after {
            a.retain(|e| e.index > n);
        }
        let last = a.last().map(|e| e.index);
        Ok(json!({ "window": id, "entries": to_json(&a)?, "last": last }))
    })
    .await
}

/// `GET /maintenance/windows/{id}/history`: every version the window passed through.
async fn history(State(c): State<Arc<Console>>, Path(id): Path<String>, req: Request) -> Response {
    serve(c, req, true, move |ctx, node, _| {
        let h = maintenance::history(ctx, node, &id)?;
        let versions: Vec<Value> = h.iter().map(|(v, w)| json!({ "version": v, "window": w })).collect::<Vec<_>>();
        Ok(json!({ "versions": versions }))
    })
    .await
}

#[derive(Deserialize, Default)]
struct Format {
    #[serde(default)]
    format: Option<String>,
}

/// `GET /maintenance/windows/{id}/document[?format=html]`: the report document. Once accepted,
/// the JSON is byte for byte the document whose SHA-256 is in the audit trail (header
/// `X-Mamori-SHA256`); before, the document as it stands.
async fn document(
    State(c): State<Arc<Console>>,
    Path(id): Path<String>,
    Query(q): Query<Format>,
    req: Request,
) -> Response {
    let html = q.format.as_deref() == Some("html");
    serve(c, req, true, move |ctx, node, _| {
        let (doc, sha256, _) = maintenance::current_document(ctx, node, &id)?;
        let text = if html { maintenance::to_html(&doc, &sha256) } else { doc.to_json()? };
        Ok(Answer::Document { html, text, sha256 })
    })
    .await
}

/// `POST /maintenance/windows/{id}/report`: files the work report (body: `items`
/// [{item, done, result}], `erasures` [{what, where, how, when, by}], `note`).
async fn report(State(c): State<Arc<Console>>, Path(id): Path<String>, req: Request) -> Response {
    serve(c, req, false, move |ctx, node, body| {
        let f: Filing = parse(body)?;
        to_json(&maintenance::report(ctx, node, &id, f)?)
    })
    .await
}

/// An amendment: the request's fields and a note.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Amend {
    request: WindowRequest,
    note: String,
}

/// `POST /maintenance/windows/{id}/amend`: changes a request awaiting approval (body:
/// `{"request": {…as filed…}, "note": "why"}`); approvals given so far lapse.
async fn amend(State(c): State<Arc<Console>>, Path(id): Path<String>, req: Request) -> Response {
    serve(c, req, false, move |ctx, node, body| {
        let a: Amend = parse(body)?;
        to_json(&maintenance::amend(ctx, node, &id, a.request, &a.note)?)
    })
    .await
}

/// `POST /maintenance/windows/{id}/{approve|refuse|withdraw|close|accept|return}` with
/// `{"note": "…"}` (required to refuse, close and return).
async fn decide(State(c): State<Arc<Console>>, Path((id, act)): Path<(String, String)>, req: Request) -> Response {
    serve(c, req, false, move |ctx, node, body| {
        let note = note_of(body)?;
        let w = match act.as_str() {
            "approve" => maintenance::approve(ctx, node, &id, &note)?,
            "refuse" => maintenance::refuse(ctx, node, &id, &note)?,
            "withdraw" => maintenance::withdraw(ctx, node, &id, &note)?,
            "close" => maintenance::close(ctx, node, &id, &note)?,
            "accept" => {
                let (w, sha) = maintenance::accept(ctx, node, &id, &note)?;
                let mut v = to_json(&w)?;
                if let Some(o) = v.as_object_mut() {
                    o.insert("documentSha256".into(), Value::String(sha));
                }
                return Ok(v);
            }
            "return" => maintenance::send_back(ctx, node, &id, &note)?,
            other => return Err(AppError::NotFound(format!("no act `{other}` on a maintenance window"))),
        };
        to_json(&w)
    })
    .await
}

/// `GET /maintenance/vendors`: the vendor organisations (a contact: their own).
async fn vendors(State(c): State<Arc<Console>>, req: Request) -> Response {
    serve(c, req, true, |ctx, node, _| Ok(json!({ "vendors": to_json(&maintenance::vendors(ctx, node)?)? }))).await
}

/// `PUT /maintenance/vendors/{id}`: adds or replaces a vendor (`manage-users`; body: the vendor,
/// its `id` equal to the path's).
async fn set_vendor(State(c): State<Arc<Console>>, Path(id): Path<String>, req: Request) -> Response {
    serve(c, req, false, move |ctx, node, body| {
        let v: Vendor = parse(body)?;
        if v.id != id {
            return Err(AppError::Invalid(format!("the body's id `{}` is not the path's `{id}`", v.id)));
        }
        to_json(&maintenance::set_vendor(ctx, node, v, "")?)
    })
    .await
}

/// `GET /maintenance/register`: which system is maintained remotely by which vendor.
async fn register(State(c): State<Arc<Console>>, req: Request) -> Response {
    serve(c, req, true, |ctx, node, _| Ok(json!({ "register": to_json(&maintenance::register(ctx, node)?)? }))).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterChange {
    system: String,
    vendor: String,
    #[serde(default)]
    note: String,
    #[serde(default)]
    remove: bool,
}

/// `PUT /maintenance/register`: records (or with `remove`, removes) an entry of the register.
async fn set_register(State(c): State<Arc<Console>>, req: Request) -> Response {
    serve(c, req, false, |ctx, node, body| {
        let r: RegisterChange = parse(body)?;
        maintenance::set_register(ctx, node, &r.system, &r.vendor, &r.note, r.remove)?;
        Ok(json!({ "register": to_json(&maintenance::register(ctx, node)?)? }))
    })
    .await
}
