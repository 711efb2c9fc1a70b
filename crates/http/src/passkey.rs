//! Passkey (WebAuthn) endpoints behind the login pages: JSON in and out, called by
//! `/login/webauthn.js`. Each needs the session cookie of this browser and the CSRF token in
//! `X-CSRF-Token` (bound to that session, [`crate::login::csrf_ok`]). Failures answer only 「認証に失敗しました」.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::AppState;
use crate::login::{browser, now, safe_next, set_session, stage_path};

const SCRIPT: &str = include_str!("../assets/webauthn.js");
const MAX_JSON: usize = 64 * 1024;

/// `GET /login/webauthn.js`.
pub async fn script() -> Response {
    let mut r = SCRIPT.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/javascript; charset=utf-8"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600"));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    r
}

fn refused() -> Response {
    let mut r = (
        StatusCode::UNAUTHORIZED,
        axum::Json(serde_json::json!({"error": "認証に失敗しました / Authentication failed"})),
    )
        .into_response();
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn json(v: serde_json::Value) -> Response {
    let mut r = (StatusCode::OK, axum::Json(v)).into_response();
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// The session token, if the request comes from this site with the CSRF header of its session.
fn checked(s: &AppState, headers: &HeaderMap) -> Option<String> {
    let sent = headers.get("x-csrf-token").and_then(|v| v.to_str().ok())?;
    if !crate::login::csrf_ok(s, headers, sent) {
        return None;
    }
    crate::login::session_of(s, headers)
}

async fn body_text(body: Body) -> Option<String> {
    let bytes = axum::body::to_bytes(body, MAX_JSON).await.ok()?;
    String::from_utf8(bytes.to_vec()).ok()
}

#[derive(serde::Deserialize, Default)]
pub struct FinishQuery {
    next: Option<String>,
    name: Option<String>,
}

type Rp = std::sync::Arc<mamori_identity::passkey::RelyingParty>;
type Identity = std::sync::Arc<mamori_identity::service::Identity>;

type Begin = fn(&Identity, &Rp, &str, &str, i64) -> Result<Option<serde_json::Value>, mamori_identity::Error>;

/// The shared start of a ceremony: options for the browser, or refused.
async fn begin(s: &AppState, headers: &HeaderMap, start: Begin) -> Response {
    let (Some(rp), Some(token)) = (s.passkeys.clone(), checked(s, headers)) else { return refused() };
    let (id, ua) = (s.identity.clone(), browser(headers));
    let t = now(s.enforcer.clock());
    match tokio::task::spawn_blocking(move || start(&id, &rp, &token, &ua, t)).await {
        Ok(Ok(Some(options))) => json(options),
        _ => refused(),
    }
}

type Finish =
    fn(
        &Identity,
        &Rp,
        &str,
        &str,
        &str,
        &str,
        i64,
        Option<&str>,
    )
        -> Result<Result<mamori_identity::service::Step, mamori_identity::service::Refused>, mamori_identity::Error>;

/// The shared end of a ceremony: the browser's answer checked, then where to go next.
async fn finish(
    s: &AppState,
    q: FinishQuery,
    peer: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    headers: &HeaderMap,
    body: Body,
    end: Finish,
) -> Response {
    let (Some(rp), Some(token)) = (s.passkeys.clone(), checked(s, headers)) else { return refused() };
    let Some(response) = body_text(body).await else { return refused() };
    let (id, ua, source) = (s.identity.clone(), browser(headers), peer.map(|p| p.0.0.ip().to_string()));
    let name = q.name.unwrap_or_default();
    let t = now(s.enforcer.clock());
    let r =
        tokio::task::spawn_blocking(move || end(&id, &rp, &token, &ua, &response, &name, t, source.as_deref())).await;
    match r {
        Ok(Ok(Ok(step))) => {
            let mut r = json(serde_json::json!({"next": stage_path(step.stage, &safe_next(q.next.as_ref()))}));
            if let Ok(v) = HeaderValue::from_str(&set_session(s, &step.token)) {
                r.headers_mut().append(header::SET_COOKIE, v);
            }
            r
        }
        _ => refused(),
    }
}

/// `POST /login/passkey/register/begin`.
pub async fn register_begin(State(s): State<AppState>, headers: HeaderMap) -> Response {
    begin(&s, &headers, |id, rp, token, ua, now| id.begin_passkey_registration(rp, token, ua, now)).await
}

/// `POST /login/passkey/register/finish?next=…&name=…`.
pub async fn register_finish(
    State(s): State<AppState>,
    Query(q): Query<FinishQuery>,
    peer: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    finish(&s, q, peer, &headers, body, |id, rp, token, ua, response, name, now, source| {
        id.finish_passkey_registration(rp, token, ua, response, name, now, source)
    })
    .await
}

/// `POST /login/passkey/login/begin`.
pub async fn login_begin(State(s): State<AppState>, headers: HeaderMap) -> Response {
    begin(&s, &headers, |id, rp, token, ua, now| id.begin_passkey_login(rp, token, ua, now)).await
}

/// `POST /login/passkey/login/finish?next=…`.
pub async fn login_finish(
    State(s): State<AppState>,
    Query(q): Query<FinishQuery>,
    peer: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    finish(&s, q, peer, &headers, body, |id, rp, token, ua, response, _name, now, source| {
        id.verify_passkey(rp, token, ua, response, now, source)
    })
    .await
}
