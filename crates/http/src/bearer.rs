//! Bearer authentication for `/fhir`: the token becomes a [`Principal`] of the enforcement point
//! (`mamori-access`), which then decides every action.

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use mamori_access::{Person, Principal};
use mamori_oauth::{BearerError, Grant};

use crate::{ApiError, AppState};

/// Seconds now, by the node's one clock (the enforcer's).
fn now_secs(s: &AppState) -> i64 {
    s.enforcer.clock().now().0.div_euclid(1_000_000)
}

/// The grant of a bearer token and, for a person's token, their active account's roles,
/// `fhirUser` and department — read afresh, so a role removed or an account disabled takes effect
/// at once.
fn lookup_bearer(
    s: &AppState,
    token: &str,
    source: Option<std::net::IpAddr>,
) -> Result<(Grant, Option<Person>), ApiError> {
    let grant = match s.oauth.validate_from(token, now_secs(s), source) {
        Ok(grant) => grant,
        Err(BearerError::Invalid) => return Err(ApiError::Unauthorized),
        Err(BearerError::Store) => return Err(ApiError::Internal("token validation failed".into())),
    };
    let account = match &grant.subject {
        Some(user) => match s.identity.account(user) {
            Ok(Some(a)) if a.status == mamori_identity::account::Status::Active => {
                Some((a.roles, a.fhir_user, a.department))
            }
            Ok(_) => return Err(ApiError::Unauthorized),
            Err(_) => return Err(ApiError::Internal("account lookup failed".into())),
        },
        None => None,
    };
    Ok((grant, account))
}

/// The token of an `Authorization: Bearer …` value; the scheme name is case-insensitive
/// (RFC 7235 §2.1), so `BEARER x` and `bEaReR x` are the same as `Bearer x`.
pub(crate) fn bearer_credentials(v: &str) -> Option<&str> {
    let (scheme, rest) = v.trim_start().split_once(' ')?;
    let token = rest.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The grant of the request's bearer token (and the person's account for a person's token), for
/// surfaces outside `/fhir` that take the same tokens (the integrity API). Off the async threads
/// when the store is networked.
pub async fn grant_of(
    s: &AppState,
    headers: &axum::http::HeaderMap,
    source: Option<std::net::IpAddr>,
) -> Result<(Grant, Option<Person>), ApiError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_credentials)
        .map(str::to_string)
        .ok_or(ApiError::Unauthorized)?;
    let s2 = s.clone();
    tokio::task::spawn_blocking(move || lookup_bearer(&s2, &token, source))
        .await
        .unwrap_or_else(|_| Err(ApiError::Internal("token validation failed".into())))
}

/// Authenticates every `/fhir` request except `metadata`.
pub async fn authenticate(State(s): State<AppState>, mut req: Request, next: Next) -> Response {
    // Exempt exact full paths only (`req.uri()` inside a nested router has lost its prefix).
    let full = req.extensions().get::<axum::extract::OriginalUri>().map(|u| u.0.path().to_string());
    if matches!(full.as_deref(), Some("/fhir/metadata" | "/fhir/.well-known/smart-configuration")) {
        return next.run(req).await;
    }
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_credentials)
        .map(str::to_string);
    let Some(token) = token else {
        return ApiError::Unauthorized.into_response();
    };
    let source = req.extensions().get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip());
    // Inline on the embedded store (two indexed reads of a few microseconds cost less than a hop
    // to the blocking pool); on a networked store, off the async threads.
    let looked_up = if s.config.inline_lookups {
        lookup_bearer(&s, &token, source)
    } else {
        let s2 = s.clone();
        match tokio::task::spawn_blocking(move || lookup_bearer(&s2, &token, source)).await {
            Ok(r) => r,
            Err(_) => Err(ApiError::Internal("token validation failed".into())),
        }
    };
    let (grant, account) = match looked_up {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    let request_id = req.extensions().get::<crate::RequestId>().map(|r| r.0.clone());
    let source = source.map(|ip| ip.to_string());
    let mut grant = grant;
    if let Some((_, fhir_user, _)) = &account {
        grant.fhir_user = fhir_user.clone();
    }
    let principal = Principal::new(grant, account, s.enforcer.clone(), request_id, source);
    req.extensions_mut().insert(principal.clone());
    let mut resp = next.run(req).await;
    // For the audit layer outside this one.
    resp.extensions_mut().insert(principal);
    resp
}
