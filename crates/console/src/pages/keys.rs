//! ID-token signing keys (ID トークン署名鍵): which key signs, which the JWKS publishes, and a
//! rotation with its reason — `mamori_app::keys`, as `mamori keys rotate` calls it. The previous
//! key stays published for the overlap, so relying parties that cached the JWKS keep verifying.

use std::sync::Arc;

use askama::Template;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use mamori_app::keys;
use mamori_http::browser;

use super::{field, render, run};
use crate::Console;
use crate::fmt::local_time;
use crate::visitor::{Chrome, Visitor};

pub struct KeyRow {
    pub kid: String,
    pub alg: String,
    pub created: String,
    pub retired: Option<String>,
    pub signs: bool,
    pub published: bool,
}

#[derive(Template)]
#[template(path = "keys.html")]
struct KeysPage {
    v: Chrome,
    rows: Vec<KeyRow>,
    reason: String,
    error: Option<String>,
    rotated: Option<String>,
}

#[derive(serde::Deserialize, Default)]
pub struct RotatedQuery {
    #[serde(default)]
    rotated: Option<String>,
}

async fn keys_page(
    c: &Arc<Console>,
    v: &Visitor,
    reason: String,
    error: Option<String>,
    rotated: Option<String>,
    status: StatusCode,
) -> Response {
    let ja = v.ja();
    match run(c, v, keys::list).await {
        Ok(all) => {
            let rows = all
                .into_iter()
                .rev()
                .map(|k| KeyRow {
                    signs: k.key.retired_at.is_none() && k.key.private_sealed.is_some(),
                    kid: k.key.kid,
                    alg: k.key.alg,
                    created: local_time(k.key.created_at, ja),
                    retired: k.key.retired_at.map(|t| local_time(t, ja)),
                    published: k.published,
                })
                .collect();
            let page = KeysPage { v: v.chrome("署名鍵", "Signing keys"), rows, reason, error, rotated };
            render(v, &page, status)
        }
        Err(e) => super::error_page(v, &e),
    }
}

/// `GET /console/keys`.
pub async fn list(State(c): State<Arc<Console>>, v: Visitor, Query(q): Query<RotatedQuery>) -> Response {
    keys_page(&c, &v, String::new(), None, q.rotated, StatusCode::OK).await
}

/// `POST /console/keys`: makes a new signing key current (a reason is required).
pub async fn rotate(State(c): State<Arc<Console>>, v: Visitor, headers: HeaderMap, body: Body) -> Response {
    let Some(form) = browser::form(&c.http, &headers, body).await else { return super::bad_form(&v) };
    let reason = field(&form, "reason");
    if reason.is_empty() {
        let m = if v.ja() {
            "鍵を更新する理由を入力してください。"
        } else {
            "Say why the key is rotated."
        };
        return keys_page(&c, &v, reason, Some(m.into()), None, StatusCode::BAD_REQUEST).await;
    }
    let why = reason.clone();
    match run(&c, &v, move |ctx, node| keys::rotate(ctx, node, &why)).await {
        Ok(kid) => browser::redirect(
            &format!(
                "/console/keys?rotated={}",
                url::form_urlencoded::byte_serialize(kid.as_bytes()).collect::<String>()
            ),
            v.cookies.clone(),
        ),
        Err(e) => {
            let (status, text) = match super::on_form(&v, &e) {
                Ok(x) => x,
                Err(page) => return *page,
            };
            keys_page(&c, &v, reason, Some(text), None, status).await
        }
    }
}
