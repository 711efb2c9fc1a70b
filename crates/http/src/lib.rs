//! The HTTP edge: the axum router for `/fhir`, `/oauth`, the health probes and `/metrics`, request ids, bearer
//! authentication, the single enforcement point, OperationOutcome and OAuth error mapping, and
//! the plain/TLS listeners.
//!
//! Every request: request id → principal (bearer token) → decision ([`enforce`]) → handler.

mod audit;
mod audit_event;
pub mod bearer;
pub mod browser;
mod bulk;
mod bundle;
mod capability;
pub mod cors;
mod error;
mod fhir;
mod forwarded;
mod login;
pub mod metrics;
mod oauth;
mod oauth_authorize;
mod oidc;
mod passkey;
mod serve;
mod tlog;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use mamori_oauth::OAuth;
use mamori_records::Records;

pub use audit::AuditNote;
pub use bulk::Jobs as BulkJobs;
pub use error::{ApiError, RequestId};
pub use mamori_access::{Enforcer, Explanation, Facts, explain, record_target, type_target};
pub use serve::{Stop, Tls, TlsFiles, serve, tls_config};

/// The node's health, for `/healthz`, `/readyz` and `/metrics`.
pub trait Health: Send + Sync {
    /// Details (clock sync, audit backlog…) when the server can serve requests; `Err` when not.
    fn check(&self) -> Result<serde_json::Value, String>;
    /// Whether the node may take requests: the store reachable, its schema current, the audit
    /// writer running. `Err` says which is not.
    fn ready(&self) -> Result<(), String>;
    /// The node's own figures for `/metrics` (audit entries, checkpoints, commits, fsyncs).
    fn figures(&self) -> Vec<metrics::Figure>;
}

/// Limits and settings of the HTTP edge.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Largest request body accepted, in bytes (413 above).
    pub max_body_bytes: usize,
    /// The public base URL, e.g. `https://ehr.example.jp` (no trailing slash).
    pub public_url: String,
    /// Software version shown in the CapabilityStatement.
    pub version: String,
    /// Whether the per-request token and account lookups may run inline on the async thread:
    /// true for the embedded store (indexed reads of microseconds, cheaper than a hop to the
    /// blocking pool); false for a networked store, whose round trips must not stall the executor.
    pub inline_lookups: bool,
    /// Reverse proxies (CIDRs) whose `Forwarded`/`X-Forwarded-For` name the client.
    pub trusted_proxies: Vec<String>,
    /// Besides loopback, the networks (CIDRs) that may read `/metrics`.
    pub metrics_from: Vec<String>,
}

/// Shared state of the router: one allocation behind one reference count, since every layer
/// and handler of every request takes its own copy (cloning eleven `Arc`s and a `String` per copy
/// was 6 % of a read's CPU time, #29). Fields are reached through `Deref` to [`Shared`].
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    /// The router state holding `shared`.
    pub fn new(shared: Shared) -> AppState {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What the router's handlers share (see [`AppState`]).
pub struct Shared {
    /// Clinical records.
    pub records: Arc<Records>,
    /// Token service.
    pub oauth: Arc<OAuth>,
    /// The audit trail.
    pub audit: Arc<dyn mamori_audit::AuditLog>,
    /// Accounts, sessions and login.
    pub identity: Arc<mamori_identity::service::Identity>,
    /// The WebAuthn relying party (this server's public URL); `None` when the URL has no domain
    /// name (passkeys need one), and then passkeys are not offered.
    pub passkeys: Option<Arc<mamori_identity::passkey::RelyingParty>>,
    /// Readiness.
    pub health: Arc<dyn Health>,
    /// Access policies and class rules in force (the enforcement point's configuration).
    pub enforcer: Arc<Enforcer>,
    /// Settings.
    pub config: Arc<HttpConfig>,
    /// Server start time (CapabilityStatement `date`).
    pub started: String,
    /// Bulk Data export jobs.
    pub bulk: Arc<bulk::Jobs>,
    /// Origins that may call the API from a browser (CORS).
    pub cors: Arc<dyn cors::Origins>,
    /// Request metrics (`/metrics`).
    pub metrics: Arc<metrics::Metrics>,
}

/// Builds the application router.
pub fn app(state: AppState) -> Router {
    app_with(state, None)
}

/// Builds the application router with the web console (`mamori-console`) at `/console`: its
/// requests pass the same layers as every other (request id, forwarded address, metrics).
pub fn app_with_console(state: AppState, console: Router) -> Router {
    app_with(state, Some((console, Vec::new())))
}

/// [`app_with_console`], with the management APIs served behind the same layers, each at its
/// prefix (`/integrity`: `mamori_console::integrity_api`; `/maintenance`:
/// `mamori_console::maintenance_api`).
pub fn app_with_management(state: AppState, console: Router, apis: Vec<(&'static str, Router)>) -> Router {
    app_with(state, Some((console, apis)))
}

fn app_with(state: AppState, console: Option<(Router, Vec<(&'static str, Router)>)>) -> Router {
    let fhir = Router::new()
        .route("/", post(bundle::process))
        .route("/metadata", get(capability::metadata))
        .route("/$export", get(bulk::export_system))
        .route("/$import", post(bulk::import))
        .route("/Patient/$export", get(bulk::export_patients))
        .route("/Group/{id}/$export", get(bulk::export_group))
        .route("/$bulk/{job}", get(bulk::status).delete(bulk::cancel))
        .route("/$bulk/{job}/{file}", get(bulk::file))
        .route("/_history", get(fhir::history_system))
        .route(
            "/{rtype}",
            post(fhir::create).put(fhir::conditional_update).delete(fhir::conditional_delete).get(fhir::search),
        )
        .route("/{rtype}/_history", get(fhir::history_type))
        .route("/{rtype}/_search", post(fhir::search_post))
        .route("/{rtype}/{id}", get(fhir::read).put(fhir::update).patch(fhir::patch).delete(fhir::delete))
        .route("/{rtype}/{id}/_history", get(fhir::history_instance))
        .route("/{rtype}/{id}/_history/{vid}", get(fhir::vread))
        .route("/{rtype}/{id}/$approve", post(fhir::approve))
        .route("/Patient/{id}/$break-glass", post(fhir::break_glass))
        .fallback(fhir::not_found)
        .layer(axum::middleware::from_fn_with_state(state.clone(), bearer::authenticate))
        .layer(axum::middleware::from_fn_with_state(state.clone(), audit::layer))
        .layer(axum::middleware::from_fn(error::fhir_errors));
    let audit_log = Router::new()
        .route("/log/checkpoint", get(tlog::checkpoint))
        .route("/log/tile/{*path}", get(tlog::tile))
        .route("/proof/inclusion", get(tlog::inclusion))
        .route("/proof/consistency", get(tlog::consistency))
        .fallback(fhir::not_found)
        .layer(axum::middleware::from_fn_with_state(state.clone(), bearer::authenticate))
        .layer(axum::middleware::from_fn_with_state(state.clone(), audit::layer))
        .layer(axum::middleware::from_fn(error::fhir_errors));
    let routes = Router::new()
        .route("/healthz", get(healthz))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics::metrics))
        .route("/openapi.json", get(openapi))
        .route("/oauth/authorize", get(oauth_authorize::authorize).post(oauth_authorize::authorize_post))
        .route("/oauth/jwks", get(oauth::jwks))
        .route("/.well-known/openid-configuration", get(oauth::openid_configuration))
        .route("/oauth/token", post(oauth::token))
        .route("/oauth/introspect", post(oauth::introspect))
        .route("/oauth/userinfo", get(oidc::userinfo).post(oidc::userinfo))
        .route("/oauth/logout", get(oidc::logout).post(oidc::logout_post))
        .route("/oauth/revoke", post(oauth::revoke))
        .route("/.well-known/oauth-authorization-server", get(oauth::metadata))
        .route("/fhir/.well-known/smart-configuration", get(oauth::smart_configuration))
        .route("/login", get(login::login_page).post(login::login_submit))
        .route("/login/totp", get(login::totp_page).post(login::totp_submit))
        .route("/login/enroll", get(login::enroll_page).post(login::enroll_submit))
        .route("/login/password", get(login::password_page).post(login::password_submit))
        .route("/login/webauthn.js", get(passkey::script))
        .route("/login/passkey/register/begin", post(passkey::register_begin))
        .route("/login/passkey/register/finish", post(passkey::register_finish))
        .route("/login/passkey/login/begin", post(passkey::login_begin))
        .route("/login/passkey/login/finish", post(passkey::login_finish))
        .route("/account", get(login::account_page))
        .route("/logout", post(login::logout))
        .nest("/fhir", fhir)
        .nest("/audit", audit_log);
    let routes = match console {
        Some((c, apis)) => {
            apis.into_iter().fold(routes.nest_service("/console", c), |r, (at, api)| r.nest_service(at, api))
        }
        None => routes,
    };
    let routes = routes
        .fallback(fhir::not_found)
        .layer(axum::middleware::from_fn_with_state(state.clone(), cors::layer))
        .layer(axum::middleware::from_fn(error::request_id))
        .layer(axum::middleware::from_fn_with_state(state.clone(), forwarded::layer))
        .layer(axum::middleware::from_fn_with_state(state.clone(), metrics::layer))
        .with_state(state);
    // The FHIR base with a trailing slash is the base (`POST /fhir/`, as fhir-kit-client sends a
    // transaction): rewritten before routing, so it passes the same layers as `/fhir`.
    Router::new().fallback_service(tower::ServiceExt::map_request(routes, base_without_slash))
}

/// `/fhir/` (with any query) as `/fhir`.
fn base_without_slash(mut req: axum::extract::Request) -> axum::extract::Request {
    if req.uri().path() == "/fhir/" {
        let pq = match req.uri().query() {
            Some(q) => format!("/fhir?{q}"),
            None => "/fhir".to_string(),
        };
        let mut parts = req.uri().clone().into_parts();
        if let Ok(p) = pq.parse() {
            parts.path_and_query = Some(p);
            if let Ok(uri) = axum::http::Uri::from_parts(parts) {
                *req.uri_mut() = uri;
            }
        }
    }
    req
}

/// `/openapi.json`: the OpenAPI 3.1 description of the endpoints besides FHIR (`openapi.json`
/// in this crate, checked by the tests), served with this server's public URL.
async fn openapi(axum::extract::State(s): axum::extract::State<AppState>) -> axum::response::Response {
    use axum::response::IntoResponse;
    static DOC: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();
    let mut doc = DOC.get_or_init(|| serde_json::from_str(include_str!("openapi.json")).unwrap_or_default()).clone();
    if let Some(o) = doc.as_object_mut() {
        o.insert("servers".into(), serde_json::json!([{"url": s.config.public_url}]));
        if let Some(info) = o.get_mut("info").and_then(serde_json::Value::as_object_mut) {
            info.insert("version".into(), s.config.version.clone().into());
        }
    }
    axum::Json(doc).into_response()
}

/// `/livez`: the process answers (no store access; a restart is the remedy when it does not).
async fn livez() -> axum::response::Response {
    use axum::response::IntoResponse;
    axum::Json(serde_json::json!({"status": "live"})).into_response()
}

/// `/readyz`: the node may take requests (store reachable, schema current, audit writer
/// running); 503 with the reason otherwise, so a load balancer sends requests elsewhere.
async fn readyz(axum::extract::State(s): axum::extract::State<AppState>) -> axum::response::Response {
    use axum::response::IntoResponse;
    let h = s.health.clone();
    match tokio::task::spawn_blocking(move || h.ready()).await {
        Ok(Ok(())) => axum::Json(serde_json::json!({"status": "ready"})).into_response(),
        Ok(Err(reason)) => {
            tracing::warn!(%reason, "not ready");
            (
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(serde_json::json!({"status": "not ready", "reason": reason})),
            )
                .into_response()
        }
        Err(_) => (axum::http::StatusCode::SERVICE_UNAVAILABLE, axum::Json(serde_json::json!({"status": "not ready"})))
            .into_response(),
    }
}

async fn healthz(axum::extract::State(s): axum::extract::State<AppState>) -> axum::response::Response {
    use axum::response::IntoResponse;
    let h = s.health.clone();
    match tokio::task::spawn_blocking(move || h.check()).await {
        Ok(Ok(detail)) => {
            let mut body = serde_json::json!({"status": "ok"});
            if let (Some(o), serde_json::Value::Object(d)) = (body.as_object_mut(), detail) {
                o.extend(d);
            }
            (axum::http::StatusCode::OK, axum::Json(body)).into_response()
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "health check failed");
            (axum::http::StatusCode::SERVICE_UNAVAILABLE, axum::Json(serde_json::json!({"status": "unavailable"})))
                .into_response()
        }
        Err(_) => {
            (axum::http::StatusCode::SERVICE_UNAVAILABLE, axum::Json(serde_json::json!({"status": "unavailable"})))
                .into_response()
        }
    }
}
