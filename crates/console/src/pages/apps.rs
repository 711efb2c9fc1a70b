//! The system administrator's applications page (アプリケーション管理): the registered OAuth
//! clients, registering one, and per client — its versions, disable and enable, a new secret or
//! new public keys. Each act is the application layer's use case (`mamori_app::clients`), the
//! same the command line's `client` commands call. A secret is shown on the response that made
//! it, once: never in a URL, never on a later page.

use std::sync::Arc;

use askama::Template;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use mamori_app::clients;
use mamori_http::browser;

use super::{field, render, run};
use crate::Console;
use crate::fmt::local_time;
use crate::visitor::{Chrome, Visitor};

/// One client, as the pages show it.
pub struct Row {
    pub id: String,
    pub name: String,
    pub scope: String,
    /// How it proves itself, in the reader's language.
    pub kind: &'static str,
    pub disabled: bool,
    pub lifetime: String,
    pub allow_ip: String,
    pub classes: String,
    pub redirect_uris: Vec<String>,
    pub has_secret: bool,
    pub has_keys: bool,
    pub version: u64,
}

fn row(c: &mamori_oauth::Client, version: u64, ja: bool) -> Row {
    let pick = |j: &'static str, e: &'static str| if ja { j } else { e };
    let kind = if c.jwks.is_some() {
        pick("公開鍵（private_key_jwt）", "public keys (private_key_jwt)")
    } else if c.secret_sha256.is_some() {
        pick("クライアントシークレット", "client secret")
    } else {
        pick("公開クライアント（PKCE）", "public client (PKCE)")
    };
    let mins = c.token_lifetime_secs / 60;
    Row {
        id: c.id.clone(),
        name: c.name.clone().unwrap_or_default(),
        scope: c.scope.clone(),
        kind,
        disabled: c.disabled,
        lifetime: if ja { format!("{mins} 分") } else { format!("{mins} min") },
        allow_ip: if c.allow_ip.is_empty() { pick("制限なし", "any").into() } else { c.allow_ip.join(", ") },
        classes: if c.classes.is_empty() { pick("すべて", "all").into() } else { c.classes.join(", ") },
        redirect_uris: c.redirect_uris.clone(),
        has_secret: c.secret_sha256.is_some(),
        has_keys: c.jwks.is_some(),
        version,
    }
}

/// The registration form as typed.
#[derive(Clone)]
pub struct RegisterForm {
    pub id: String,
    pub name: String,
    pub scope: String,
    pub minutes: String,
    pub redirect_uris: String,
    pub allow_ip: String,
    pub classes: Vec<String>,
    pub jwks: String,
}

impl Default for RegisterForm {
    fn default() -> Self {
        RegisterForm {
            id: String::new(),
            name: String::new(),
            scope: String::new(),
            minutes: "15".into(),
            redirect_uris: String::new(),
            allow_ip: String::new(),
            classes: Vec::new(),
            jwks: String::new(),
        }
    }
}

/// The information classes a form offers: `(code, name in the reader's language, chosen)`.
fn class_choices(ja: bool, chosen: &[String]) -> Vec<(String, String, bool)> {
    mamori_authz::taxonomy()
        .into_iter()
        .map(|d| {
            let on = chosen.contains(&d.code);
            let name = if ja { d.ja.clone() } else { d.en.clone() };
            (d.code, name, on)
        })
        .collect()
}

#[derive(Template)]
#[template(path = "apps.html")]
struct List {
    v: Chrome,
    rows: Vec<Row>,
    f: RegisterForm,
    classes: Vec<(String, String, bool)>,
    error: Option<String>,
}

async fn list_page(
    c: &Arc<Console>,
    v: &Visitor,
    f: RegisterForm,
    error: Option<String>,
    status: StatusCode,
) -> Response {
    let ja = v.ja();
    match run(c, v, clients::list).await {
        Ok(all) => {
            let classes = class_choices(ja, &f.classes);
            let page = List {
                v: v.chrome("アプリケーション", "Applications"),
                rows: all.iter().map(|(c, ver)| row(c, *ver, ja)).collect(),
                f,
                classes,
                error,
            };
            render(v, &page, status)
        }
        Err(e) => super::error_page(v, &e),
    }
}

/// `GET /console/apps`.
pub async fn list(State(c): State<Arc<Console>>, v: Visitor) -> Response {
    list_page(&c, &v, RegisterForm::default(), None, StatusCode::OK).await
}

/// Splits a list typed one per line or separated by spaces or commas.
fn items(s: &str) -> Vec<String> {
    s.split(|c: char| c.is_whitespace() || c == ',').filter(|x| !x.is_empty()).map(str::to_string).collect()
}

/// What a registration form says, checked for what only the form can get wrong; the use case
/// checks the rest.
fn parse_register(f: &RegisterForm, ja: bool) -> Result<clients::NewClient, String> {
    let pick = |j: &str, e: &str| if ja { j.to_string() } else { e.to_string() };
    if f.id.is_empty() {
        return Err(pick("クライアントIDを入力してください。", "Enter a client id."));
    }
    if f.scope.is_empty() {
        return Err(pick("スコープを入力してください。", "Enter the scopes."));
    }
    let minutes: u64 = f.minutes.parse().ok().filter(|m| (1..=1440).contains(m)).ok_or_else(|| {
        pick("トークンの有効期間は 1〜1440 分で入力してください。", "Enter a token lifetime of 1 to 1440 minutes.")
    })?;
    let jwks = if f.jwks.trim().is_empty() {
        None
    } else {
        Some(serde_json::from_str(f.jwks.trim()).map_err(|e| {
            if ja {
                format!("公開鍵（JWK Set）がJSONとして読めません: {e}")
            } else {
                format!("The JWK Set is not JSON: {e}")
            }
        })?)
    };
    Ok(clients::NewClient {
        id: f.id.clone(),
        name: (!f.name.is_empty()).then(|| f.name.clone()),
        scope: f.scope.clone(),
        token_lifetime_secs: minutes * 60,
        allow_ip: items(&f.allow_ip),
        classes: f.classes.clone(),
        redirect_uris: items(&f.redirect_uris),
        jwks,
    })
}

#[derive(Template)]
#[template(path = "app.html")]
struct Detail {
    v: Chrome,
    r: Row,
    history: Vec<(u64, String, String, String)>,
    error: Option<String>,
    done: Option<String>,
    secret: Option<String>,
}

#[derive(Template)]
#[template(path = "app_held.html")]
struct Held {
    v: Chrome,
    id: String,
    request: String,
    secret: Option<String>,
}

/// `POST /console/apps`: registers an application. A confidential client's secret is shown on
/// this response only.
pub async fn register(State(c): State<Arc<Console>>, v: Visitor, headers: HeaderMap, body: Body) -> Response {
    let Some(form) = browser::form(&c.http, &headers, body).await else { return super::bad_form(&v) };
    let f = RegisterForm {
        id: field(&form, "client_id"),
        name: field(&form, "name"),
        scope: field(&form, "scope"),
        minutes: field(&form, "minutes"),
        redirect_uris: field(&form, "redirect_uris"),
        allow_ip: field(&form, "allow_ip"),
        classes: form.iter().filter(|(k, _)| k == "class").map(|(_, v)| v.clone()).collect(),
        jwks: field(&form, "jwks"),
    };
    let n = match parse_register(&f, v.ja()) {
        Ok(n) => n,
        Err(m) => return list_page(&c, &v, f, Some(m), StatusCode::BAD_REQUEST).await,
    };
    match run(&c, &v, move |ctx, node| clients::register(ctx, node, n)).await {
        Ok(r) if r.pending.is_some() => {
            // Held for a second person (system/ scopes): the secret is shown now, once, and works
            // when the registration is approved.
            let request = r.pending.map(|p| p.id).unwrap_or_default();
            let page =
                Held {
                    v: v.chrome("アプリケーション", "Application"), id: r.client.id, request, secret: r.secret
                };
            render(&v, &page, StatusCode::ACCEPTED)
        }
        Ok(r) => {
            let id = r.client.id.clone();
            detail_page(&c, &v, id, None, Some("register".into()), r.secret, StatusCode::OK).await
        }
        Err(e) => {
            let (status, text) = match super::on_form(&v, &e) {
                Ok(x) => x,
                Err(page) => return *page,
            };
            list_page(&c, &v, f, Some(text), status).await
        }
    }
}

async fn detail_page(
    c: &Arc<Console>,
    v: &Visitor,
    id: String,
    error: Option<String>,
    done: Option<String>,
    secret: Option<String>,
    status: StatusCode,
) -> Response {
    let ja = v.ja();
    let r = run(c, v, move |ctx, node| {
        let history = clients::history(ctx, node, &id)?;
        let current = clients::list(ctx, node)?.into_iter().find(|(c, _)| c.id == id);
        Ok((current, history))
    })
    .await;
    match r {
        Ok((Some((client, version)), history)) => {
            let page = Detail {
                v: v.chrome("アプリケーション", "Application"),
                r: row(&client, version, ja),
                history: history
                    .into_iter()
                    .rev()
                    .map(|h| (h.version, local_time(h.changed_at / 1_000_000, ja), h.changed_by, h.reason))
                    .collect(),
                error,
                done,
                secret,
            };
            render(v, &page, status)
        }
        // Removed (no current version): as unknown.
        Ok((None, _)) => super::missing(v),
        Err(e) => super::error_page(v, &e),
    }
}

/// `GET /console/apps/{id}`.
pub async fn show(
    State(c): State<Arc<Console>>,
    v: Visitor,
    Path(id): Path<String>,
    Query(q): Query<super::users::DetailQuery>,
) -> Response {
    detail_page(&c, &v, id, None, q.done, None, StatusCode::OK).await
}

/// `POST /console/apps/{id}/{act}`: `disable`, `enable`, `rotate-secret` (the new secret shown
/// once), `rotate-keys` (a new JWK Set).
pub async fn act(
    State(c): State<Arc<Console>>,
    v: Visitor,
    Path((id, act)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(form) = browser::form(&c.http, &headers, body).await else { return super::bad_form(&v) };
    let ja = v.ja();
    let i = id.clone();
    let result: Result<Option<String>, mamori_app::AppError> = match act.as_str() {
        "disable" => run(&c, &v, move |ctx, node| clients::disable(ctx, node, &i).map(|_| None)).await,
        "enable" => run(&c, &v, move |ctx, node| clients::enable(ctx, node, &i).map(|_| None)).await,
        "rotate-secret" => run(&c, &v, move |ctx, node| clients::rotate_secret(ctx, node, &i).map(Some)).await,
        "rotate-keys" => {
            let jwks: serde_json::Value = match serde_json::from_str(field(&form, "jwks").trim()) {
                Ok(j) => j,
                Err(e) => {
                    let m = if ja {
                        format!("公開鍵（JWK Set）がJSONとして読めません: {e}")
                    } else {
                        format!("The JWK Set is not JSON: {e}")
                    };
                    return detail_page(&c, &v, id, Some(m), None, None, StatusCode::BAD_REQUEST).await;
                }
            };
            run(&c, &v, move |ctx, node| clients::rotate_jwks(ctx, node, &i, jwks).map(|_| None)).await
        }
        _ => return super::not_found(v).await,
    };
    match result {
        // The new secret is on this response only.
        Ok(Some(secret)) => detail_page(&c, &v, id, None, Some(act), Some(secret), StatusCode::OK).await,
        Ok(None) => browser::redirect(
            &format!(
                "/console/apps/{}?done={act}",
                url::form_urlencoded::byte_serialize(id.as_bytes()).collect::<String>()
            ),
            v.cookies.clone(),
        ),
        Err(e) => {
            let (status, text) = match super::on_form(&v, &e) {
                Ok(x) => x,
                Err(page) => return *page,
            };
            detail_page(&c, &v, id, Some(text), None, None, status).await
        }
    }
}
