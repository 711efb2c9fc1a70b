//! The backup vault's HTTP interface (#27, B1; `mamori backup vault serve`): list generations
//! and put a file that is not there yet — no other verb, no overwrite, no delete. The rules are
//! `mamori_app::vault`; this file maps them to HTTP.
//!
//! - `GET /v1/generations` → `200` JSON list (`name`, `manifest`, `data`, `immutable`).
//! - `PUT /v1/generations/{G}.manifest` → `201` stored, `200` the same bytes were already
//!   there, `409` another manifest is there, `400` not signed by a node the vault takes.
//! - `PUT /v1/generations/{G}.age` → `201` stored (after size and SHA-256 matched the stored
//!   manifest), `409` already there or no manifest yet, `400` not the manifest's data.
//! - Without the write token `401`; any other method `405`; anything else `404`.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::StreamExt;
use mamori_app::AppError;
use mamori_app::vault::Vault;
use serde_json::json;

fn error(status: StatusCode, why: &str) -> Response {
    (status, axum::Json(json!({ "error": why }))).into_response()
}

fn app_error(e: &AppError) -> Response {
    let status = match e {
        AppError::Invalid(_) => StatusCode::BAD_REQUEST,
        AppError::Conflict(_) => StatusCode::CONFLICT,
        AppError::NotFound(_) => StatusCode::NOT_FOUND,
        AppError::Forbidden(_) => StatusCode::FORBIDDEN,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    if status == StatusCode::INTERNAL_SERVER_ERROR {
        tracing::error!(error = %e, "vault: request failed");
        return error(status, "the vault could not store the file; see its log");
    }
    tracing::warn!(error = %e, "vault: refused");
    error(status, &e.to_string())
}

fn authorized(vault: &Vault, headers: &HeaderMap) -> bool {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| vault.accepts_token(t.trim()))
}

fn unauthorized() -> Response {
    let mut r = error(StatusCode::UNAUTHORIZED, "the vault's write token is needed");
    r.headers_mut().insert(axum::http::header::WWW_AUTHENTICATE, axum::http::HeaderValue::from_static("Bearer"));
    r
}

async fn list(State(vault): State<Arc<Vault>>, headers: HeaderMap) -> Response {
    if !authorized(&vault, &headers) {
        return unauthorized();
    }
    let v = vault.clone();
    match tokio::task::spawn_blocking(move || v.list()).await {
        Ok(Ok(l)) => axum::Json(l).into_response(),
        Ok(Err(e)) => app_error(&e),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "the vault could not list its generations"),
    }
}

async fn put(State(vault): State<Arc<Vault>>, Path(file): Path<String>, headers: HeaderMap, body: Body) -> Response {
    if !authorized(&vault, &headers) {
        return unauthorized();
    }
    if let Some(name) = file.strip_suffix(".manifest") {
        let bytes = match axum::body::to_bytes(body, mamori_app::vault::MAX_MANIFEST).await {
            Ok(b) => b,
            Err(_) => return error(StatusCode::BAD_REQUEST, "a manifest is at most 1 MiB"),
        };
        let (v, name) = (vault.clone(), name.to_string());
        return match tokio::task::spawn_blocking(move || v.put_manifest(&name, &bytes)).await {
            Ok(Ok(true)) => (StatusCode::CREATED, axum::Json(json!({ "stored": file }))).into_response(),
            Ok(Ok(false)) => (StatusCode::OK, axum::Json(json!({ "already stored": file }))).into_response(),
            Ok(Err(e)) => app_error(&e),
            Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "the vault could not store the file"),
        };
    }
    let Some(name) = file.strip_suffix(".age") else {
        return error(StatusCode::NOT_FOUND, "the vault takes `G.manifest` and `G.age` only");
    };
    let mut incoming = match vault.begin_data(name) {
        Ok(i) => i,
        Err(e) => return app_error(&e),
    };
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(_) => return error(StatusCode::BAD_REQUEST, "the upload broke off; nothing was stored"),
        };
        if let Err(e) = incoming.write(&chunk) {
            return app_error(&e);
        }
    }
    match tokio::task::spawn_blocking(move || incoming.finish()).await {
        Ok(Ok(())) => (StatusCode::CREATED, axum::Json(json!({ "stored": file }))).into_response(),
        Ok(Err(e)) => app_error(&e),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "the vault could not store the file"),
    }
}

/// The vault's router.
pub fn router(vault: Arc<Vault>) -> Router {
    Router::new()
        .route("/v1/generations", get(list))
        .route("/v1/generations/{file}", axum::routing::put(put))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not a vault path") })
        .layer(DefaultBodyLimit::disable())
        .with_state(vault)
}
