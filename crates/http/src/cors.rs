//! CORS for browser-based SMART apps on their own origin (SMART App Launch 2.x, "Considerations
//! for CORS"): discovery, the token, revocation and JWKS endpoints, and the FHIR API answer
//! cross-origin requests from the origins of registered applications' redirect URIs and the
//! origins `[server] cors_origins` adds — never from anywhere else.
//!
//! Bearer tokens, not cookies, authorize these requests, so credentials are never allowed
//! (`Access-Control-Allow-Credentials` is not sent): a page on another origin cannot ride a
//! person's login session. The login, consent and account pages get no CORS headers at all.
//! A preflight is answered before authentication (browsers send it without the token); it
//! reveals nothing but which methods and headers the API takes.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::AppState;

/// Which origins may call the API from a browser.
pub trait Origins: Send + Sync {
    /// Whether `origin` (`scheme://host[:port]`, as a browser sends it) is allowed.
    fn allowed(&self, origin: &str) -> bool;
}

/// Methods the API takes.
const METHODS: &str = "GET, POST, PUT, PATCH, DELETE";
/// Request headers a SMART app may send.
const ALLOW_HEADERS: &str = "authorization, content-type, accept, prefer, if-match, if-none-match, if-none-exist, if-modified-since, x-request-id, x-provenance";
/// Response headers a SMART app may read.
const EXPOSE_HEADERS: &str = "location, etag, last-modified, content-location, x-request-id, retry-after";

/// The origin of a URL (`https://app.example:8443/cb` → `https://app.example:8443`), lower-cased,
/// default ports dropped, as a browser's `Origin` header names it; `None` for anything but an
/// http(s) URL with a host.
pub fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "https" && scheme != "http" {
        return None;
    }
    let authority = rest.split(['/', '?', '#']).next()?;
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let authority = authority.to_ascii_lowercase();
    let authority = match (scheme.as_str(), authority.rsplit_once(':')) {
        ("https", Some((h, "443"))) | ("http", Some((h, "80"))) => h.to_string(),
        _ => authority,
    };
    Some(format!("{scheme}://{authority}"))
}

/// Whether `path` is one a browser app calls cross-origin.
fn covered(path: &str) -> bool {
    path == "/fhir"
        || path.starts_with("/fhir/")
        || path.starts_with("/.well-known/")
        || matches!(path, "/oauth/token" | "/oauth/revoke" | "/oauth/jwks" | "/oauth/userinfo")
}

/// The request's `Origin`, if it is allowed (asked only on a covered path).
fn allowed_origin(s: &AppState, headers: &HeaderMap) -> Option<HeaderValue> {
    let origin = headers.get(header::ORIGIN)?;
    let text = origin.to_str().ok()?;
    (origin_of(text).as_deref() == Some(text) && s.cors.allowed(text)).then(|| origin.clone())
}

/// Answers preflights and marks the responses of allowed cross-origin requests.
pub async fn layer(State(s): State<AppState>, req: Request, next: Next) -> Response {
    if !covered(req.uri().path()) {
        return next.run(req).await;
    }
    let origin = allowed_origin(&s, req.headers());
    let preflight =
        req.method() == Method::OPTIONS && req.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut r = if preflight { StatusCode::NO_CONTENT.into_response() } else { next.run(req).await };
    let h = r.headers_mut();
    h.append(header::VARY, HeaderValue::from_static("origin"));
    // Refused origins get no CORS headers: the browser then blocks the request.
    if let Some(o) = origin {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o);
        if preflight {
            h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static(METHODS));
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static(ALLOW_HEADERS));
            h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
        } else {
            h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static(EXPOSE_HEADERS));
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_normalised_as_browsers_send_them() {
        assert_eq!(origin_of("https://App.Example/cb?x=1").as_deref(), Some("https://app.example"));
        assert_eq!(origin_of("https://app.example:443/cb").as_deref(), Some("https://app.example"));
        assert_eq!(origin_of("http://127.0.0.1:9/cb").as_deref(), Some("http://127.0.0.1:9"));
        assert_eq!(origin_of("https://app.example:8443").as_deref(), Some("https://app.example:8443"));
        for bad in ["app.example/cb", "javascript://x", "https://", "https://user@app.example/", "urn:x"] {
            assert_eq!(origin_of(bad), None, "{bad}");
        }
    }

    #[test]
    fn only_the_api_and_discovery_are_covered() {
        for p in [
            "/fhir",
            "/fhir/Patient/1",
            "/fhir/.well-known/smart-configuration",
            "/.well-known/openid-configuration",
            "/oauth/token",
            "/oauth/jwks",
            "/oauth/userinfo",
        ] {
            assert!(covered(p), "{p}");
        }
        for p in [
            "/login",
            "/oauth/authorize",
            "/account",
            "/logout",
            "/oauth/introspect",
            "/audit/log/checkpoint",
            "/healthz",
            "/fhirx",
        ] {
            assert!(!covered(p), "{p}");
        }
    }
}
