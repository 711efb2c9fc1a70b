//! Login pages (A2, A4–A6): password → TOTP (or enrolment) → forced password change → signed in.
//! Japanese first, English with `?lang=en`. Standard form fields and `autocomplete` values so
//! password managers and assistive tools work. Every failure shows only 「認証に失敗しました」.
//!
//! Browser-session defences, all here:
//! - every form carries a CSRF token bound to the browser's session (a digest of the session
//!   token; before sign-in, of a random pre-session cookie), so a token from another session —
//!   or one an attacker planted in a cookie beside it — does not pass;
//! - every POST must come from this site: `Sec-Fetch-Site` must be `same-origin` (or `none`), an
//!   `Origin` must be this server's, and `Origin: null` is refused;
//! - the session id changes at every login step that raises its privilege (password, second
//!   factor, password change);
//! - cookies are HttpOnly and SameSite=Lax (single sign-on into `/oauth/authorize`); over HTTPS
//!   they are `Secure` and named `__Host-…`, which browsers only accept from this host, for
//!   path `/`, over HTTPS: a sibling subdomain or a plain-http page cannot plant them.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use mamori_identity::session::Stage;
use subtle::ConstantTimeEq;

use crate::AppState;

const SESSION: &str = "mamori_session";
const PRE_SESSION: &str = "mamori_csrf";
const HOST_SESSION: &str = "__Host-mamori_session";
const HOST_PRE_SESSION: &str = "__Host-mamori_csrf";

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lang {
    Ja,
    En,
}

pub(crate) fn t(lang: Lang, ja: &'static str, en: &'static str) -> &'static str {
    if lang == Lang::Ja { ja } else { en }
}

pub(crate) fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(|kv| {
        let (k, v) = kv.trim().split_once('=')?;
        (k == name).then(|| v.to_string())
    })
}

fn https(s: &AppState) -> bool {
    s.config.public_url.starts_with("https://")
}

/// The session token the browser sent, if any.
pub(crate) fn session_of(s: &AppState, headers: &HeaderMap) -> Option<String> {
    cookie(headers, if https(s) { HOST_SESSION } else { SESSION })
}

/// The `Set-Cookie` value that gives the browser a session token.
pub(crate) fn set_session(s: &AppState, token: &str) -> String {
    // Lax, not Strict: an application's top-level redirect to /oauth/authorize must carry the
    // session (single sign-on). Every state-changing form still needs the CSRF token.
    let name = if https(s) { HOST_SESSION } else { SESSION };
    format!("{name}={token}; Path=/; HttpOnly; SameSite=Lax{}", secure(s))
}

/// The `Set-Cookie` value that removes the session cookie.
pub fn clear_session(s: &AppState) -> String {
    let name = if https(s) { HOST_SESSION } else { SESSION };
    format!("{name}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0{}", secure(s))
}

/// What a form's CSRF token is bound to: the session cookie, or before sign-in the pre-session
/// cookie. `None` when the browser sent neither (or a malformed pre-session cookie).
fn csrf_binding(s: &AppState, headers: &HeaderMap) -> Option<String> {
    session_of(s, headers).or_else(|| {
        cookie(headers, if https(s) { HOST_PRE_SESSION } else { PRE_SESSION })
            .filter(|c| c.len() == 64 && c.bytes().all(|b| b.is_ascii_hexdigit()))
    })
}

/// The CSRF token for a binding: a digest, so the token tells nothing about the cookie.
fn csrf_for(binding: &str) -> String {
    mamori_identity::session::digest(&format!("mamori-csrf\0{binding}")).chars().take(32).collect()
}

/// Whether a state-changing request comes from this site (Fetch Metadata, then `Origin`). A
/// request with neither header (a non-browser client, an old browser) passes here and still
/// needs its CSRF token.
pub fn from_this_site(s: &AppState, headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site")
        && !matches!(site.to_str(), Ok("same-origin" | "none"))
    {
        return false;
    }
    let Some(origin) = headers.get(header::ORIGIN) else { return true };
    let Ok(origin) = origin.to_str() else { return false };
    let Ok(o) = url::Url::parse(origin) else { return false };
    if o.host_str().is_none() {
        return false; // `null` and other opaque origins
    }
    let ours = url::Url::parse(&s.config.public_url).is_ok_and(|p| p.origin() == o.origin());
    // The address the browser used (a deployment reached by another name than `public_url`):
    // a cross-site request names the attacker's origin here, never ours.
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let authority = match (o.host_str(), o.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        _ => String::new(),
    };
    ours || host.is_some_and(|h| h.eq_ignore_ascii_case(&authority))
}

/// Checks a request's CSRF token (sent in a form field or the `X-CSRF-Token` header) against
/// the browser's session, and that it comes from this site.
pub(crate) fn csrf_ok(s: &AppState, headers: &HeaderMap, sent: &str) -> bool {
    let Some(binding) = csrf_binding(s, headers) else { return false };
    from_this_site(s, headers) && bool::from(sent.as_bytes().ct_eq(csrf_for(&binding).as_bytes()))
}

pub(crate) fn browser(headers: &HeaderMap) -> String {
    headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or("").to_string()
}

/// Seconds now, by the node's one clock.
pub(crate) fn now(clock: &std::sync::Arc<dyn mamori_records::Clock>) -> i64 {
    clock.now().0.div_euclid(1_000_000)
}

/// Only paths on this server may be `next` targets (no open redirects): `next` is parsed as a
/// browser would parse it (WHATWG URL: tabs and newlines stripped, `\\` as `/`) relative to
/// this server's origin, must stay on that origin, and is returned re-serialised as path and
/// query — so `/%09/evil.example`, `/\\evil`, `//evil` and `https://evil` all fall back.
pub fn safe_next(n: Option<&String>) -> String {
    const FALLBACK: &str = "/account";
    // A stand-in for the public origin: only the relation between the two matters.
    const ORIGIN: &str = "https://mamori.invalid";
    let Some(n) = n.filter(|n| n.starts_with('/') && n.len() < 8192) else { return FALLBACK.into() };
    let Ok(base) = url::Url::parse(ORIGIN) else { return FALLBACK.into() };
    match base.join(n) {
        Ok(u) if u.origin() == base.origin() && u.username().is_empty() && u.password().is_none() => {
            let mut out = u.path().to_string();
            if let Some(q) = u.query() {
                out.push('?');
                out.push_str(q);
            }
            if out.starts_with("//") { FALLBACK.into() } else { out }
        }
        _ => FALLBACK.into(),
    }
}

/// The passkey part of a page: a button wired by `/login/webauthn.js` and a failure notice.
fn passkey_block(
    lang: Lang,
    id: &str,
    label_ja: &'static str,
    label_en: &'static str,
    next: &str,
    with_name: bool,
) -> String {
    let name = if with_name {
        format!(
            r#"<label for="passkey-name">{}</label><input id="passkey-name" name="passkey_name" autocomplete="off" maxlength="64">"#,
            t(lang, "パスキーの名前（例: 業務用PC）", "Name of this passkey (e.g. work PC)")
        )
    } else {
        String::new()
    };
    format!(
        r#"<section>{name}<button type="button" id="{id}" data-next="{next}">{label}</button><p id="passkey-error" role="alert" class="error" hidden>{err}</p><script src="/login/webauthn.js" defer></script></section>"#,
        next = esc(next),
        label = t(lang, label_ja, label_en),
        err = t(lang, "認証に失敗しました", "Authentication failed"),
    )
}

#[derive(serde::Deserialize, Default)]
pub struct PageQuery {
    pub(crate) lang: Option<String>,
    pub(crate) next: Option<String>,
}

/// The language of a page: `?lang=`, the remembered choice (cookie), the browser's
/// `Accept-Language`, then Japanese.
pub(crate) fn lang_of(q: &PageQuery, headers: &HeaderMap) -> Lang {
    let chosen = q.lang.clone().or_else(|| cookie(headers, "mamori_lang"));
    match chosen.as_deref().or_else(|| accepted_language(headers)) {
        Some("en") => Lang::En,
        _ => Lang::Ja,
    }
}

/// The browser's preferred language of the two offered (`ja`, `en`) by `Accept-Language`
/// (highest weight first; a primary tag such as `en-US` counts as `en`), if it names either.
pub fn accepted_language(headers: &HeaderMap) -> Option<&'static str> {
    let accept = headers.get(header::ACCEPT_LANGUAGE).and_then(|v| v.to_str().ok())?;
    let mut best: Option<(f32, &'static str)> = None;
    for part in accept.split(',') {
        let mut it = part.split(';');
        let primary = it.next().unwrap_or("").trim().split(['-', '_']).next().unwrap_or("").to_ascii_lowercase();
        let lang = match primary.as_str() {
            "ja" => "ja",
            "en" => "en",
            _ => continue,
        };
        let q = it.find_map(|p| p.trim().strip_prefix("q=").and_then(|v| v.trim().parse::<f32>().ok())).unwrap_or(1.0);
        if q > 0.0 && best.is_none_or(|(b, _)| q > b) {
            best = Some((q, lang));
        }
    }
    best.map(|(_, l)| l)
}

struct Page {
    status: StatusCode,
    html: String,
    cookies: Vec<String>,
}

pub(crate) fn secure(s: &AppState) -> &'static str {
    if s.config.public_url.starts_with("https://") { "; Secure" } else { "" }
}

/// The CSRF token for a page, and a new pre-session cookie value when the browser has neither
/// a session nor a pre-session cookie yet.
pub(crate) fn csrf_token(s: &AppState, headers: &HeaderMap) -> (String, Option<String>) {
    match csrf_binding(s, headers) {
        Some(b) => (csrf_for(&b), None),
        None => {
            let pre = mamori_identity::session_token().unwrap_or_default();
            (csrf_for(&pre), Some(pre))
        }
    }
}

pub(crate) fn render(
    s: &AppState,
    headers: &HeaderMap,
    lang: Lang,
    title: &str,
    error: Option<&str>,
    form: &str,
    status: StatusCode,
) -> Response {
    let (csrf, new_cookie) = csrf_token(s, headers);
    let form = form.replace("{csrf}", &format!(r#"<input type="hidden" name="csrf" value="{}">"#, esc(&csrf)));
    let err = error.map(|e| format!(r#"<p role="alert" class="error">{}</p>"#, esc(e))).unwrap_or_default();
    let other = if lang == Lang::Ja {
        r#"<a href="?lang=en" hreflang="en">English</a>"#
    } else {
        r#"<a href="?lang=ja" hreflang="ja">日本語</a>"#
    };
    let html = format!(
        r#"<!doctype html>
<html lang="{l}"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} — Mamori</title>
<style>body{{font-family:system-ui,sans-serif;max-width:28rem;margin:3rem auto;padding:0 1rem}}label{{display:block;margin-top:1rem}}input{{font-size:1.1rem;width:100%;padding:.4rem}}button{{margin-top:1.2rem;font-size:1.1rem;padding:.4rem 1.2rem}}.error{{color:#a00;font-weight:bold}}</style>
</head><body><main><h1>{title}</h1>{err}{form}<p>{other}</p></main></body></html>"#,
        l = if lang == Lang::Ja { "ja" } else { "en" },
        title = esc(title),
    );
    let mut page = Page { status, html, cookies: Vec::new() };
    if let Some(c) = new_cookie {
        let name = if https(s) { HOST_PRE_SESSION } else { PRE_SESSION };
        page.cookies.push(format!("{name}={c}; Path=/; HttpOnly; SameSite=Lax{}", secure(s)));
    }
    page.cookies.push(format!(
        "mamori_lang={}; Path=/; SameSite=Strict{}",
        if lang == Lang::Ja { "ja" } else { "en" },
        secure(s)
    ));
    finish(page)
}

fn finish(p: Page) -> Response {
    let mut r = (p.status, p.html).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    for c in p.cookies {
        if let Ok(v) = HeaderValue::from_str(&c) {
            h.append(header::SET_COOKIE, v);
        }
    }
    r
}

pub fn redirect(to: &str, cookies: Vec<String>) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    for c in cookies {
        if let Ok(v) = HeaderValue::from_str(&c) {
            r.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    r
}

/// Reads a form body and checks its CSRF token against the browser's session and its origin
/// ([`csrf_ok`]).
pub(crate) async fn form(s: &AppState, headers: &HeaderMap, body: Body) -> Option<Vec<(String, String)>> {
    form_limited(s, headers, body, 16 * 1024).await
}

/// [`form`] with a body of at most `limit` bytes.
pub(crate) async fn form_limited(
    s: &AppState,
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Option<Vec<(String, String)>> {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !ct.starts_with("application/x-www-form-urlencoded") {
        return None;
    }
    let bytes = axum::body::to_bytes(body, limit).await.ok()?;
    let f = crate::oauth::parse_form(&bytes).ok()?;
    let sent = f.iter().find(|(k, _)| k == "csrf").map(|(_, v)| v.as_str())?;
    csrf_ok(s, headers, sent).then_some(f)
}

pub fn field<'a>(f: &'a [(String, String)], k: &str) -> &'a str {
    f.iter().find(|(fk, _)| fk == k).map_or("", |(_, v)| v.as_str())
}

pub(crate) fn bad_request(s: &AppState, headers: &HeaderMap, lang: Lang) -> Response {
    render(
        s,
        headers,
        lang,
        t(lang, "不正なリクエストです", "Invalid request"),
        Some(t(lang, "ページを読み込み直してからやり直してください。", "Reload the page and try again.")),
        "",
        StatusCode::FORBIDDEN,
    )
}

pub(crate) fn stage_path(stage: Stage, next: &str) -> String {
    let n = crate::oauth::form_encode(next);
    match stage {
        Stage::NeedTotp => format!("/login/totp?next={n}"),
        Stage::NeedEnrol => format!("/login/enroll?next={n}"),
        Stage::NeedPasswordChange => format!("/login/password?next={n}"),
        Stage::Full => next.to_string(),
    }
}

fn login_form(lang: Lang, next: &str) -> String {
    format!(
        r#"<form method="post" action="/login?next={n}">{{csrf}}
<label for="username">{u}</label><input id="username" name="username" autocomplete="username" autocapitalize="none" required>
<label for="password">{p}</label><input id="password" name="password" type="password" autocomplete="current-password" required>
<button type="submit">{b}</button></form>"#,
        n = esc(&crate::oauth::form_encode(next)),
        u = t(lang, "利用者ID", "User name"),
        p = t(lang, "パスワード", "Password"),
        b = t(lang, "ログイン", "Sign in"),
    )
}

/// `GET /login`.
pub async fn login_page(State(s): State<AppState>, Query(q): Query<PageQuery>, headers: HeaderMap) -> Response {
    let lang = lang_of(&q, &headers);
    render(
        &s,
        &headers,
        lang,
        t(lang, "ログイン", "Sign in"),
        None,
        &login_form(lang, &safe_next(q.next.as_ref())),
        StatusCode::OK,
    )
}

/// `POST /login`: the password step.
pub async fn login_submit(
    State(s): State<AppState>,
    Query(q): Query<PageQuery>,
    peer: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let lang = lang_of(&q, &headers);
    let next = safe_next(q.next.as_ref());
    let Some(f) = form(&s, &headers, body).await else { return bad_request(&s, &headers, lang) };
    let source = peer.map(|p| p.0.0.ip().to_string());
    let (user, pw) = (field(&f, "username").trim().to_string(), field(&f, "password").to_string());
    let id = s.identity.clone();
    let (ua, previous) = (browser(&headers), session_of(&s, &headers));
    let clock = s.enforcer.clock().clone();
    let r = tokio::task::spawn_blocking(move || -> Result<Option<(String, Stage)>, mamori_identity::Error> {
        match id.authenticate(&user, &pw, None, now(&clock), source.as_deref())? {
            Ok(auth) => id.start_session(&auth, &ua, previous.as_deref(), now(&clock)).map(Some),
            Err(_) => Ok(None),
        }
    })
    .await;
    match r {
        Ok(Ok(Some((token, stage)))) => redirect(&stage_path(stage, &next), vec![set_session(&s, &token)]),
        Ok(Ok(None)) => failed(&s, &headers, lang, &login_form(lang, &next)),
        _ => server_error(&s, &headers, lang),
    }
}

fn failed(s: &AppState, headers: &HeaderMap, lang: Lang, form: &str) -> Response {
    render(
        s,
        headers,
        lang,
        t(lang, "ログイン", "Sign in"),
        Some(t(lang, "認証に失敗しました", "Authentication failed")),
        form,
        StatusCode::UNAUTHORIZED,
    )
}

pub(crate) fn server_error(s: &AppState, headers: &HeaderMap, lang: Lang) -> Response {
    render(
        s,
        headers,
        lang,
        t(lang, "エラー", "Error"),
        Some(t(
            lang,
            "処理できませんでした。時間をおいてやり直してください。",
            "The request could not be completed; try again later.",
        )),
        "",
        StatusCode::SERVICE_UNAVAILABLE,
    )
}

fn recovery_form(lang: Lang, next: &str) -> String {
    format!(
        r#"<details><summary>{s}</summary><form method="post" action="/login/totp?next={n}">{{csrf}}
<label for="recovery">{l}</label><input id="recovery" name="recovery_code" autocomplete="off" autocapitalize="characters" required>
<button type="submit">{b}</button></form></details>"#,
        s = t(lang, "認証アプリを使えない場合", "Cannot use your authenticator?"),
        n = esc(&crate::oauth::form_encode(next)),
        l = t(lang, "リカバリーコード", "Recovery code"),
        b = t(lang, "確認", "Verify"),
    )
}

fn code_form(lang: Lang, action: &str, next: &str) -> String {
    format!(
        r#"<form method="post" action="{action}?next={n}">{{csrf}}
<label for="code">{l}</label><input id="code" name="code" inputmode="numeric" pattern="[0-9]{{6}}" maxlength="6" autocomplete="one-time-code" required>
<button type="submit">{b}</button></form>"#,
        n = esc(&crate::oauth::form_encode(next)),
        l = t(lang, "確認コード（認証アプリの6桁）", "Verification code (6 digits from your authenticator app)"),
        b = t(lang, "確認", "Verify"),
    )
}

/// The second-step forms for what the account has: passkey button, TOTP code, recovery code.
async fn second_step_forms(s: &AppState, headers: &HeaderMap, lang: Lang, next: &str) -> String {
    let factors = match session_of(s, headers) {
        Some(token) => {
            let (id, ua) = (s.identity.clone(), browser(headers));
            let clock = s.enforcer.clock().clone();
            tokio::task::spawn_blocking(move || id.pending_factors(&token, &ua, now(&clock)))
                .await
                .ok()
                .and_then(Result::ok)
                .flatten()
        }
        None => None,
    };
    let (totp, passkey) = factors.unwrap_or((true, false));
    let mut out = String::new();
    if passkey && s.passkeys.is_some() {
        out.push_str(&passkey_block(
            lang,
            "passkey-login",
            "パスキーでログイン",
            "Sign in with a passkey",
            next,
            false,
        ));
    }
    if totp || !passkey {
        out.push_str(&code_form(lang, "/login/totp", next));
    }
    out.push_str(&recovery_form(lang, next));
    out
}

/// `GET /login/totp`.
pub async fn totp_page(State(s): State<AppState>, Query(q): Query<PageQuery>, headers: HeaderMap) -> Response {
    let lang = lang_of(&q, &headers);
    let next = safe_next(q.next.as_ref());
    let forms = second_step_forms(&s, &headers, lang, &next).await;
    render(&s, &headers, lang, t(lang, "二要素認証", "Two-factor authentication"), None, &forms, StatusCode::OK)
}

/// `POST /login/totp`.
pub async fn totp_submit(
    State(s): State<AppState>,
    Query(q): Query<PageQuery>,
    peer: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let lang = lang_of(&q, &headers);
    let next = safe_next(q.next.as_ref());
    let Some(f) = form(&s, &headers, body).await else { return bad_request(&s, &headers, lang) };
    let Some(token) = session_of(&s, &headers) else {
        return redirect(&format!("/login?next={}", crate::oauth::form_encode(&next)), Vec::new());
    };
    let code = field(&f, "code").to_string();
    let recovery = field(&f, "recovery_code").to_string();
    let (id, ua, source) = (s.identity.clone(), browser(&headers), peer.map(|p| p.0.0.ip().to_string()));
    let clock = s.enforcer.clock().clone();
    let r = tokio::task::spawn_blocking(move || {
        if recovery.is_empty() {
            id.verify_totp(&token, &ua, &code, now(&clock), source.as_deref())
        } else {
            id.verify_recovery(&token, &ua, &recovery, now(&clock), source.as_deref())
        }
    })
    .await;
    match r {
        Ok(Ok(Ok(step))) => redirect(&stage_path(step.stage, &next), vec![set_session(&s, &step.token)]),
        Ok(Ok(Err(_))) => {
            let forms = second_step_forms(&s, &headers, lang, &next).await;
            render(
                &s,
                &headers,
                lang,
                t(lang, "二要素認証", "Two-factor authentication"),
                Some(t(lang, "認証に失敗しました", "Authentication failed")),
                &forms,
                StatusCode::UNAUTHORIZED,
            )
        }
        _ => server_error(&s, &headers, lang),
    }
}

/// `GET /login/enroll`: shows a new authenticator secret to add, then asks for its first code.
pub async fn enroll_page(State(s): State<AppState>, Query(q): Query<PageQuery>, headers: HeaderMap) -> Response {
    let lang = lang_of(&q, &headers);
    let next = safe_next(q.next.as_ref());
    let Some(token) = session_of(&s, &headers) else { return redirect("/login", Vec::new()) };
    let (id, ua) = (s.identity.clone(), browser(&headers));
    let clock = s.enforcer.clock().clone();
    let r = tokio::task::spawn_blocking(move || id.begin_enrol(&token, &ua, "Mamori", now(&clock))).await;
    let uri = match r {
        Ok(Ok(Some(u))) => u,
        Ok(Ok(None)) => return redirect("/login", Vec::new()),
        _ => return server_error(&s, &headers, lang),
    };
    let secret = uri.split("secret=").nth(1).and_then(|x| x.split('&').next()).unwrap_or_default();
    let intro = format!(
        r#"<p>{msg}</p><p><a href="{uri}">{uri_l}</a></p><p>{key_l}: <code>{secret}</code></p>"#,
        msg = t(
            lang,
            "データを利用する前に、二要素認証の登録が必要です。認証アプリにこのアカウントを追加してください。",
            "Before you can reach any data, enrol a second factor: add this account to an authenticator app."
        ),
        uri = esc(&uri),
        uri_l = t(lang, "認証アプリで開く", "Open in authenticator app"),
        key_l = t(lang, "手入力用のキー", "Key for manual entry"),
        secret = esc(secret),
    );
    let passkey = if s.passkeys.is_some() {
        format!(
            "<h2>{}</h2><p>{}</p>{}<h2>{}</h2>",
            t(lang, "パスキー／セキュリティキーを使う", "Use a passkey or security key"),
            t(
                lang,
                "この端末の生体認証・PIN、またはセキュリティキーを登録します。",
                "Register this device's biometrics or PIN, or a security key."
            ),
            passkey_block(lang, "passkey-register", "パスキーを登録", "Register a passkey", &next, true),
            t(lang, "認証アプリを使う", "Use an authenticator app"),
        )
    } else {
        String::new()
    };
    render(
        &s,
        &headers,
        lang,
        t(lang, "二要素認証の登録", "Enrol two-factor authentication"),
        None,
        &format!("{passkey}{intro}{}", code_form(lang, "/login/enroll", &next)),
        StatusCode::OK,
    )
}

/// `POST /login/enroll`: confirms the new authenticator with its first code.
pub async fn enroll_submit(
    State(s): State<AppState>,
    Query(q): Query<PageQuery>,
    peer: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let lang = lang_of(&q, &headers);
    let next = safe_next(q.next.as_ref());
    let Some(f) = form(&s, &headers, body).await else { return bad_request(&s, &headers, lang) };
    let Some(token) = session_of(&s, &headers) else { return redirect("/login", Vec::new()) };
    let code = field(&f, "code").to_string();
    let (id, ua, source) = (s.identity.clone(), browser(&headers), peer.map(|p| p.0.0.ip().to_string()));
    let clock = s.enforcer.clock().clone();
    let r =
        tokio::task::spawn_blocking(move || id.confirm_enrol(&token, &ua, &code, now(&clock), source.as_deref())).await;
    match r {
        Ok(Ok(Ok(step))) => redirect(&stage_path(step.stage, &next), vec![set_session(&s, &step.token)]),
        Ok(Ok(Err(_))) => render(
            &s,
            &headers,
            lang,
            t(lang, "二要素認証の登録", "Enrol two-factor authentication"),
            Some(t(lang, "認証に失敗しました", "Authentication failed")),
            &code_form(lang, "/login/enroll", &next),
            StatusCode::UNAUTHORIZED,
        ),
        _ => server_error(&s, &headers, lang),
    }
}

fn password_form(lang: Lang, next: &str) -> String {
    format!(
        r#"<p>{msg}</p><form method="post" action="/login/password?next={n}">{{csrf}}
<label for="current">{c}</label><input id="current" name="current_password" type="password" autocomplete="current-password" required>
<label for="new">{nw}</label><input id="new" name="new_password" type="password" autocomplete="new-password" required>
<label for="new2">{n2}</label><input id="new2" name="new_password2" type="password" autocomplete="new-password" required>
<button type="submit">{b}</button></form>"#,
        msg = t(
            lang,
            "初期パスワードまたは期限切れのパスワードです。新しいパスワードを設定してください。",
            "Your password is an initial or expired one: set a new password."
        ),
        n = esc(&crate::oauth::form_encode(next)),
        c = t(lang, "現在のパスワード", "Current password"),
        nw = t(lang, "新しいパスワード", "New password"),
        n2 = t(lang, "新しいパスワード（確認）", "New password (again)"),
        b = t(lang, "変更", "Change"),
    )
}

/// `GET /login/password`.
pub async fn password_page(State(s): State<AppState>, Query(q): Query<PageQuery>, headers: HeaderMap) -> Response {
    let lang = lang_of(&q, &headers);
    render(
        &s,
        &headers,
        lang,
        t(lang, "パスワードの変更", "Change your password"),
        None,
        &password_form(lang, &safe_next(q.next.as_ref())),
        StatusCode::OK,
    )
}

/// `POST /login/password`.
pub async fn password_submit(
    State(s): State<AppState>,
    Query(q): Query<PageQuery>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let lang = lang_of(&q, &headers);
    let next = safe_next(q.next.as_ref());
    let Some(f) = form(&s, &headers, body).await else { return bad_request(&s, &headers, lang) };
    let Some(token) = session_of(&s, &headers) else { return redirect("/login", Vec::new()) };
    let title = t(lang, "パスワードの変更", "Change your password");
    if field(&f, "new_password") != field(&f, "new_password2") {
        let msg = t(lang, "新しいパスワードが一致しません", "The new passwords do not match");
        return render(&s, &headers, lang, title, Some(msg), &password_form(lang, &next), StatusCode::BAD_REQUEST);
    }
    let (cur, new) = (field(&f, "current_password").to_string(), field(&f, "new_password").to_string());
    let (id, ua) = (s.identity.clone(), browser(&headers));
    let clock = s.enforcer.clock().clone();
    let r =
        tokio::task::spawn_blocking(move || id.change_password_in_session(&token, &ua, &cur, &new, now(&clock))).await;
    match r {
        Ok(Ok(Ok(step))) => redirect(&next, vec![set_session(&s, &step.token)]),
        Ok(Ok(Err(mamori_identity::Error::PasswordRefused(why)))) => {
            let text: Vec<String> =
                why.iter().map(|m| if lang == Lang::Ja { m.ja.clone() } else { m.en.clone() }).collect();
            render(
                &s,
                &headers,
                lang,
                title,
                Some(&text.join(" / ")),
                &password_form(lang, &next),
                StatusCode::BAD_REQUEST,
            )
        }
        _ => server_error(&s, &headers, lang),
    }
}

/// `GET /account`: who is signed in (a full, two-factor session only).
pub async fn account_page(State(s): State<AppState>, Query(q): Query<PageQuery>, headers: HeaderMap) -> Response {
    let lang = lang_of(&q, &headers);
    let sess = match crate::browser::signed_in(&s, &headers, "/account").await {
        Ok(sess) => sess,
        Err(crate::browser::NotSignedIn::SignIn(r)) => return r,
        Err(crate::browser::NotSignedIn::Unavailable) => return server_error(&s, &headers, lang),
    };
    let (id, user) = (s.identity.clone(), sess.username.clone());
    let keys =
        tokio::task::spawn_blocking(move || id.passkeys_of(&user)).await.ok().and_then(Result::ok).unwrap_or_default();
    let listed: String = keys
        .iter()
        .map(|(name, enrolled, used)| {
            let used = used.map_or_else(
                || t(lang, "未使用", "never used").to_string(),
                |u| mamori_records::Timestamp(u * 1_000_000).to_fhir(),
            );
            format!(
                "<li>{} — {} {} / {} {}</li>",
                esc(name),
                t(lang, "登録", "added"),
                mamori_records::Timestamp(enrolled * 1_000_000).to_fhir(),
                t(lang, "最終使用", "last used"),
                used
            )
        })
        .collect();
    let passkeys = if s.passkeys.is_some() {
        format!(
            "<h2>{}</h2><ul>{listed}</ul>{}",
            t(lang, "パスキー", "Passkeys"),
            passkey_block(lang, "passkey-register", "パスキーを追加", "Add a passkey", "/account", true)
        )
    } else {
        String::new()
    };
    let body = format!(
        r#"<p>{l}: <strong>{u}</strong></p><form method="post" action="/logout">{{csrf}}<button type="submit">{b}</button></form>{passkeys}"#,
        l = t(lang, "ログイン中", "Signed in as"),
        u = esc(&sess.username),
        b = t(lang, "ログアウト", "Sign out"),
    );
    render(&s, &headers, lang, t(lang, "アカウント", "Account"), None, &body, StatusCode::OK)
}

/// `POST /logout`.
pub async fn logout(
    State(s): State<AppState>,
    peer: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let lang = lang_of(&PageQuery::default(), &headers);
    if form(&s, &headers, body).await.is_none() {
        return bad_request(&s, &headers, lang);
    }
    let cleared = crate::browser::sign_out(&s, &headers, peer.map(|p| p.0.0.ip().to_string())).await;
    redirect("/login", vec![cleared])
}

#[cfg(test)]
mod tests {
    use super::safe_next;

    #[test]
    fn open_redirect_next_targets_fall_back() {
        let s = |n: &str| safe_next(Some(&n.to_string()));
        for evil in [
            "/\t/evil.example",
            "/\n/evil.example",
            "/\r\n/evil.example",
            "//evil.example",
            "/\\evil.example",
            "/\\/evil.example",
            "https://evil.example/",
            "evil.example",
            "/\t\\evil.example",
        ] {
            assert_eq!(s(evil), "/account", "{evil:?}");
        }
        assert_eq!(s("/oauth/authorize?client_id=a&state=x%20y"), "/oauth/authorize?client_id=a&state=x%20y");
        assert_eq!(s("/account"), "/account");
        assert_eq!(safe_next(None), "/account");
    }
}
