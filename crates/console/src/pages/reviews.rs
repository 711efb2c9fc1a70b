//! The break-glass review queue (非常時アクセスのレビュー, Z5): every use stays open until the
//! security manager closes it with a finding. Closing is the application layer's use case (which
//! refuses a person reviewing their own use, and audits the close).

use std::sync::Arc;

use askama::Template;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use mamori_app::reviews;
use mamori_http::browser;

use super::{explain_error, field, render, run};
use crate::Console;
use crate::fmt::local_time;
use crate::visitor::{Chrome, Visitor};

pub struct Grant {
    pub id: String,
    pub username: String,
    pub patient: String,
    pub reason: String,
    pub granted: String,
    pub expires: String,
    pub review: Option<(String, String, String)>,
}

#[derive(Template)]
#[template(path = "break_glass.html")]
struct Queue {
    v: Chrome,
    grants: Vec<Grant>,
    all: bool,
    error: Option<(String, String)>,
    note: String,
    closed: bool,
}

#[derive(serde::Deserialize, Default)]
pub struct QueueQuery {
    #[serde(default)]
    all: Option<String>,
    #[serde(default)]
    closed: Option<String>,
}

async fn queue(c: &Arc<Console>, v: &Visitor, all: bool) -> Result<Vec<Grant>, mamori_app::AppError> {
    let ja = v.ja();
    let grants = run(c, v, move |ctx, node| reviews::break_glass(ctx, node, !all)).await?;
    let secs = |t: mamori_records::Timestamp| t.0.div_euclid(1_000_000);
    Ok(grants
        .into_iter()
        .map(|g| Grant {
            granted: local_time(secs(g.granted), ja),
            expires: local_time(secs(g.expires), ja),
            review: g.review.map(|(at, by, note)| (local_time(secs(at), ja), by, note)),
            id: g.id,
            username: g.username,
            patient: g.patient,
            reason: g.reason,
        })
        .collect())
}

/// `GET /console/break-glass[?all=1]`.
pub async fn break_glass(State(c): State<Arc<Console>>, v: Visitor, Query(q): Query<QueueQuery>) -> Response {
    let all = q.all.is_some();
    match queue(&c, &v, all).await {
        Ok(grants) => {
            let page = Queue {
                v: v.chrome("非常時アクセスのレビュー", "Break-glass reviews"),
                grants,
                all,
                error: None,
                note: String::new(),
                closed: q.closed.is_some(),
            };
            render(&v, &page, StatusCode::OK)
        }
        Err(e) => super::error_page(&v, &e),
    }
}

/// `POST /console/break-glass/{grant}/close` with `note`.
pub async fn close_break_glass(
    State(c): State<Arc<Console>>,
    v: Visitor,
    Path(grant): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(form) = browser::form(&c.http, &headers, body).await else { return super::bad_form(&v) };
    let note = field(&form, "note");
    let g = grant.clone();
    let n = note.clone();
    match run(&c, &v, move |ctx, node| reviews::close_break_glass(ctx, node, &g, &n)).await {
        Ok(()) => browser::redirect("/console/break-glass?closed=1", v.cookies.clone()),
        Err(e) => {
            let (status, text) = explain_error(&e, v.lang);
            let grants = match queue(&c, &v, false).await {
                Ok(g) => g,
                Err(e) => return super::error_page(&v, &e),
            };
            let page = Queue {
                v: v.chrome("非常時アクセスのレビュー", "Break-glass reviews"),
                grants,
                all: false,
                error: Some((grant, text)),
                note,
                closed: false,
            };
            render(&v, &page, status)
        }
    }
}
