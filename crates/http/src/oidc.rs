//! OpenID Connect beyond the ID token: the UserInfo endpoint (OIDC Core §5.3) and RP-initiated
//! logout (OpenID Connect RP-Initiated Logout 1.0).
//!
//! UserInfo answers a person's access token that carries `openid` with the claims its scopes
//! allow (`sub`; `name`, `preferred_username` with `profile`; `fhirUser` with `fhirUser`), read
//! from the account now — a disabled account's token gets `invalid_token`. Errors are RFC 6750
//! `WWW-Authenticate` challenges.
//!
//! Logout ends this server's browser session (audited with its duration, as the sign-out button)
//! and sends the browser back to the application only to one of its registered redirect URIs.
//! Without an `id_token_hint` naming the signed-in person, the person confirms on a page first
//! (an application cannot sign someone out by a link alone).

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use mamori_oauth::Special;

use crate::AppState;
use crate::login::{Lang, PageQuery, esc, lang_of, now, render, t};

fn challenge(status: StatusCode, value: &'static str) -> Response {
    let mut r =
        (status, axum::Json(serde_json::json!({"error": value.split('"').nth(1).unwrap_or("invalid_request")})))
            .into_response();
    r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(value));
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// `GET|POST /oauth/userinfo`.
pub async fn userinfo(
    State(s): State<AppState>,
    peer: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
) -> Response {
    let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::bearer::bearer_credentials)
        .map(str::to_string)
    else {
        let mut r = StatusCode::UNAUTHORIZED.into_response();
        r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"mamori\""));
        return r;
    };
    let source = peer.map(|p| p.0.0.ip());
    let s2 = s.clone();
    let looked_up = tokio::task::spawn_blocking(move || {
        let t = now(s2.enforcer.clock());
        let grant = s2.oauth.validate_from(&token, t, source).ok()?;
        let account = match &grant.subject {
            Some(u) => s2
                .identity
                .account(u)
                .ok()
                .flatten()
                .filter(|a| a.status == mamori_identity::account::Status::Active)
                .map(Some)?,
            None => None,
        };
        Some((grant, account))
    })
    .await
    .ok()
    .flatten();
    let Some((grant, account)) = looked_up else {
        return challenge(StatusCode::UNAUTHORIZED, "Bearer realm=\"mamori\", error=\"invalid_token\"");
    };
    let (Some(user), Some(account)) = (grant.subject.as_ref(), account) else {
        // An application's own token names no person.
        return challenge(
            StatusCode::FORBIDDEN,
            "Bearer realm=\"mamori\", error=\"insufficient_scope\", scope=\"openid\"",
        );
    };
    if !grant.scopes.has(Special::OpenId) {
        return challenge(
            StatusCode::FORBIDDEN,
            "Bearer realm=\"mamori\", error=\"insufficient_scope\", scope=\"openid\"",
        );
    }
    let mut claims = serde_json::json!({"sub": user});
    if let Some(o) = claims.as_object_mut() {
        if grant.scopes.has(Special::Profile) {
            o.insert("name".into(), account.display_name.clone().unwrap_or_else(|| user.clone()).into());
            o.insert("preferred_username".into(), user.clone().into());
        }
        if grant.scopes.has(Special::FhirUser)
            && let Some(fu) = &account.fhir_user
        {
            o.insert("fhirUser".into(), format!("{}/fhir/{fu}", s.config.public_url).into());
        }
    }
    let mut r = axum::Json(claims).into_response();
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// The parameters of a logout request, checked.
struct Logout {
    /// The person the hint names, if a valid hint came.
    hinted: Option<String>,
    /// Where to send the browser afterwards (registered), with `state`.
    back: Option<String>,
    /// The parameters to carry through the confirmation form.
    carried: Vec<(String, String)>,
}

fn logout_lang(params: &[(String, String)], headers: &HeaderMap) -> Lang {
    let asked = params.iter().find(|(k, _)| k == "ui_locales").map(|(_, v)| v.as_str()).unwrap_or("");
    crate::oauth_authorize::ui_locale(asked).unwrap_or_else(|| lang_of(&PageQuery::default(), headers))
}

async fn check_logout(s: &AppState, params: &[(String, String)]) -> Result<Logout, String> {
    let get = |k: &str| params.iter().find(|(pk, _)| pk == k).map(|(_, v)| v.clone()).filter(|v| !v.is_empty());
    let (hint, uri, state, client_id) =
        (get("id_token_hint"), get("post_logout_redirect_uri"), get("state"), get("client_id"));
    let (oauth, issuer) = (s.oauth.clone(), s.config.public_url.clone());
    let t = now(s.enforcer.clock());
    let checked = tokio::task::spawn_blocking(move || -> Result<(Option<String>, Option<String>), String> {
        let hint = match hint {
            Some(h) => Some(oauth.id_token_hint(&h, &issuer, t).map_err(|e| e.description)?),
            None => None,
        };
        let client = match (&hint, client_id) {
            (Some(h), Some(c)) if h.client_id != c => {
                return Err("client_id does not match the id_token_hint's audience".into());
            }
            (Some(h), _) => Some(h.client_id.clone()),
            (None, c) => c,
        };
        let back = match uri {
            None => None,
            Some(uri) => {
                let Some(client) = client else {
                    return Err("post_logout_redirect_uri needs id_token_hint or client_id".into());
                };
                if !oauth.post_logout_redirect_allowed(&client, &uri).map_err(|_| "internal error".to_string())? {
                    return Err("post_logout_redirect_uri is not registered for this application".into());
                }
                let mut back = uri;
                if let Some(st) = state {
                    back.push(if back.contains('?') { '&' } else { '?' });
                    back.push_str("state=");
                    back.push_str(&crate::oauth::form_encode(&st));
                }
                Some(back)
            }
        };
        Ok((hint.map(|h| h.subject), back))
    })
    .await
    .map_err(|_| "internal error".to_string())??;
    let carried = params
        .iter()
        .filter(|(k, _)| {
            ["id_token_hint", "post_logout_redirect_uri", "state", "client_id", "ui_locales"].contains(&k.as_str())
        })
        .cloned()
        .collect();
    Ok(Logout { hinted: checked.0, back: checked.1, carried })
}

fn logout_error(s: &AppState, headers: &HeaderMap, lang: Lang, why: &str) -> Response {
    let body = format!(
        "<p>{}</p><p><small>{}</small></p>",
        t(
            lang,
            "サインアウトの要求がアプリケーションの登録内容と一致しません。",
            "The sign-out request does not match the application's registration."
        ),
        esc(why)
    );
    render(s, headers, lang, t(lang, "サインアウトできません", "Cannot sign out"), None, &body, StatusCode::BAD_REQUEST)
}

/// Ends the browser's session (audited) and redirects.
async fn end_session(s: &AppState, headers: &HeaderMap, source: Option<String>, back: Option<&str>) -> Response {
    if let Some(token) = crate::login::session_of(s, headers) {
        let id = s.identity.clone();
        let clock = s.enforcer.clock().clone();
        let _ = tokio::task::spawn_blocking(move || id.logout(&token, now(&clock), source.as_deref())).await;
    }
    crate::login::redirect(back.unwrap_or("/login"), vec![crate::login::clear_session(s)])
}

/// `GET /oauth/logout` (the `end_session_endpoint`).
pub async fn logout(
    State(s): State<AppState>,
    peer: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let params = crate::oauth::parse_form(q.unwrap_or_default().as_bytes()).unwrap_or_default();
    let lang = logout_lang(&params, &headers);
    let l = match check_logout(&s, &params).await {
        Ok(l) => l,
        Err(why) => return logout_error(&s, &headers, lang, &why),
    };
    let source = peer.map(|p| p.0.0.ip().to_string());
    // Whose session this browser holds, if any.
    let signed_in = match crate::login::session_of(&s, &headers) {
        Some(token) => {
            let (id, ua, t) = (s.identity.clone(), crate::login::browser(&headers), now(s.enforcer.clock()));
            tokio::task::spawn_blocking(move || id.session(&token, &ua, t)).await.ok().and_then(|r| r.ok()?.ok())
        }
        None => None,
    };
    match signed_in {
        None => crate::login::redirect(l.back.as_deref().unwrap_or("/login"), Vec::new()),
        Some(sess) if l.hinted.as_deref() == Some(sess.username.as_str()) => {
            end_session(&s, &headers, source, l.back.as_deref()).await
        }
        Some(sess) => {
            let hidden: String = l
                .carried
                .iter()
                .map(|(k, v)| format!(r#"<input type="hidden" name="{}" value="{}">"#, esc(k), esc(v)))
                .collect();
            let body = format!(
                r#"<p>{q} <strong>{u}</strong></p><form method="post" action="/oauth/logout">{{csrf}}{hidden}<button type="submit">{b}</button></form>"#,
                q = t(lang, "サインアウトしますか？ ログイン中:", "Sign out? Signed in as"),
                u = esc(&sess.username),
                b = t(lang, "サインアウト", "Sign out"),
            );
            render(&s, &headers, lang, t(lang, "サインアウト", "Sign out"), None, &body, StatusCode::OK)
        }
    }
}

/// `POST /oauth/logout`: the confirmation (CSRF-checked), or a logout request sent as a form.
pub async fn logout_post(
    State(s): State<AppState>,
    peer: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(f) = crate::login::form(&s, &headers, body).await else {
        let lang = lang_of(&PageQuery::default(), &headers);
        return crate::login::bad_request(&s, &headers, lang);
    };
    let lang = logout_lang(&f, &headers);
    let l = match check_logout(&s, &f).await {
        Ok(l) => l,
        Err(why) => return logout_error(&s, &headers, lang, &why),
    };
    end_session(&s, &headers, peer.map(|p| p.0.0.ip().to_string()), l.back.as_deref()).await
}
