//! Browser sessions for pages served beside this crate's (the console, `mamori-console`): the
//! same cookies, CSRF binding, origin checks and security headers as the sign-in pages, from one
//! implementation ([`crate::login`]). A page outside this crate never reads a cookie or checks a
//! token by itself.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use mamori_identity::session::{Session, Stage};

use crate::AppState;
pub use crate::login::{accepted_language, clear_session, cookie, field, from_this_site, redirect, safe_next};

/// Why a browser has no usable session for a page.
pub enum NotSignedIn {
    /// No session, or an ended one: sign in first (a redirect to `/login?next=…`).
    SignIn(Response),
    /// The store failed; nothing was decided.
    Unavailable,
}

/// The signed-in, two-factor session of the browser, checked as for `/account`: idle lock,
/// absolute lifetime, bound to the browser that signed in, account still active. A session part
/// way through sign-in is sent on to its next step; none at all, to `/login?next={next}`.
pub async fn signed_in(s: &AppState, headers: &HeaderMap, next: &str) -> Result<Session, NotSignedIn> {
    let sign_in =
        || NotSignedIn::SignIn(redirect(&format!("/login?next={}", crate::oauth::form_encode(next)), Vec::new()));
    let Some(token) = crate::login::session_of(s, headers) else { return Err(sign_in()) };
    let (id, ua) = (s.identity.clone(), crate::login::browser(headers));
    let clock = s.enforcer.clock().clone();
    match tokio::task::spawn_blocking(move || id.session(&token, &ua, crate::login::now(&clock))).await {
        Ok(Ok(Ok(sess))) if sess.stage == Stage::Full => Ok(sess),
        Ok(Ok(Ok(sess))) => Err(NotSignedIn::SignIn(redirect(&crate::login::stage_path(sess.stage, next), Vec::new()))),
        Ok(Ok(Err(_))) => Err(sign_in()),
        _ => Err(NotSignedIn::Unavailable),
    }
}

/// The CSRF token for a page's forms, bound to the browser's session.
pub fn csrf_token(s: &AppState, headers: &HeaderMap) -> String {
    crate::login::csrf_token(s, headers).0
}

/// Whether a state-changing request carries this session's CSRF token (form field `csrf`) and
/// comes from this site. Reads a URL-encoded form body of at most 64 KiB.
pub async fn form(s: &AppState, headers: &HeaderMap, body: axum::body::Body) -> Option<Vec<(String, String)>> {
    crate::login::form_limited(s, headers, body, 64 * 1024).await
}

/// Ends the browser's session (audited with its duration) and removes its cookie.
pub async fn sign_out(s: &AppState, headers: &HeaderMap, source: Option<String>) -> String {
    if let Some(token) = crate::login::session_of(s, headers) {
        let id = s.identity.clone();
        let clock = s.enforcer.clock().clone();
        let _ =
            tokio::task::spawn_blocking(move || id.logout(&token, crate::login::now(&clock), source.as_deref())).await;
    }
    clear_session(s)
}

/// The `Set-Cookie` value that remembers the language a person chose (`ja`, `en`).
pub fn language_cookie(s: &AppState, lang: &str) -> String {
    format!("mamori_lang={lang}; Path=/; SameSite=Strict{}", crate::login::secure(s))
}

/// An HTML page with the sign-in pages' security headers: no caching, no framing, a strict CSP
/// (scripts and styles from this server only), and the given cookies.
pub fn html(status: StatusCode, body: String, cookies: &[String]) -> Response {
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    secure_headers(h);
    for c in cookies {
        if let Ok(v) = HeaderValue::from_str(c) {
            h.append(header::SET_COOKIE, v);
        }
    }
    r
}

/// The headers every page of a signed-in person carries.
pub fn secure_headers(h: &mut HeaderMap) {
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
}

/// The status for a [`NotSignedIn::Unavailable`].
pub const UNAVAILABLE: StatusCode = StatusCode::SERVICE_UNAVAILABLE;
