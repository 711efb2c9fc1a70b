//! The approvals inbox of the two-person rule (変更の承認, C3): high-risk changes waiting for a
//! second person. The page shows the exact change as a difference from what is in force, with
//! its SHA-256; approving sends that hash back, so what is approved is what was shown. Deciding
//! is the application layer's use case (`mamori_app::approvals`), which refuses the requester.

use std::sync::Arc;

use askama::Template;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use mamori_app::approvals::{self, Change, Request, State as RequestState};
use mamori_http::browser;

use super::{explain_error, field, render, run};
use crate::Console;
use crate::fmt::{DiffLine, diff_lines, local_time};
use crate::visitor::{Chrome, Visitor};

pub struct Row {
    pub id: String,
    pub state: String,
    pub pending: bool,
    pub summary: String,
    pub requested_by: String,
    pub requested_at: String,
    pub expires: String,
}

fn state_label(s: RequestState, ja: bool) -> String {
    let (j, e) = s.label();
    (if ja { j } else { e }).to_string()
}

fn row(r: &Request, ja: bool) -> Row {
    let secs = |t: i64| t.div_euclid(1_000_000);
    Row {
        id: r.id.clone(),
        state: state_label(r.state, ja),
        pending: r.state == RequestState::Pending,
        summary: r.summary.clone(),
        requested_by: r.requested_by.clone(),
        requested_at: local_time(secs(r.requested_at), ja),
        expires: local_time(secs(r.expires_at), ja),
    }
}

#[derive(Template)]
#[template(path = "changes.html")]
struct List {
    v: Chrome,
    rows: Vec<Row>,
    all: bool,
}

#[derive(serde::Deserialize, Default)]
pub struct ListQuery {
    #[serde(default)]
    all: Option<String>,
}

/// `GET /console/changes[?all=1]`.
pub async fn list(State(c): State<Arc<Console>>, v: Visitor, Query(q): Query<ListQuery>) -> Response {
    let all = q.all.is_some();
    let ja = v.ja();
    match run(&c, &v, approvals::list).await {
        Ok(list) => {
            let rows = list.iter().filter(|r| all || r.state == RequestState::Pending).map(|r| row(r, ja)).collect();
            render(&v, &List { v: v.chrome("変更の承認", "Change approvals"), rows, all }, StatusCode::OK)
        }
        Err(e) => super::error_page(&v, &e),
    }
}

#[derive(Template)]
#[template(path = "change.html")]
struct Show {
    v: Chrome,
    r: Row,
    sha256: String,
    what: String,
    diff: Vec<DiffLine>,
    decided: Option<String>,
    mine: bool,
    requested: bool,
    done: Option<String>,
    error: Option<String>,
    note: String,
}

/// What a change looks like for reading: a policy text as text, anything else as JSON.
fn readable(v: Option<&serde_json::Value>) -> String {
    match v {
        None => String::new(),
        Some(v) => match v.get("text").and_then(serde_json::Value::as_str) {
            Some(text) => text.to_string(),
            None => {
                let mut v = v.clone();
                if let Some(o) = v.as_object_mut() {
                    // A secret's hash is nobody's business on this page.
                    o.remove("secret_sha256");
                }
                serde_json::to_string_pretty(&v).unwrap_or_default()
            }
        },
    }
}

#[derive(serde::Deserialize, Default)]
pub struct ShowQuery {
    #[serde(default)]
    requested: Option<String>,
    #[serde(default)]
    done: Option<String>,
}

async fn page(
    c: &Arc<Console>,
    v: &Visitor,
    id: String,
    flags: (bool, Option<String>),
    error: Option<(StatusCode, String)>,
    note: String,
) -> Response {
    let ja = v.ja();
    let me = v.ctx.by();
    let r = run(c, v, move |ctx, node| approvals::show(ctx, node, &id)).await;
    let (r, current) = match r {
        Ok(x) => x,
        Err(e) => return super::error_page(v, &e),
    };
    let (what, old, new) = match &r.change {
        Change::Config { kind, key, value, .. } => {
            (format!("{kind}/{key}"), readable(current.as_ref()), readable(value.as_ref()))
        }
        Change::Roles { username, roles, department, .. } => {
            let old = current.as_ref().map(|a| format!("roles: {}\ndepartment: {}", a["roles"], a["department"]));
            let new = format!(
                "roles: {}\ndepartment: {}",
                serde_json::json!(roles),
                department.as_deref().map_or_else(
                    || current.as_ref().map_or(String::new(), |a| a["department"].to_string()),
                    |d| serde_json::json!(d).to_string()
                )
            );
            (format!("account/{username}"), old.unwrap_or_default(), new)
        }
        Change::Enable { username, roles, .. } => {
            let old = current.as_ref().map(|a| format!("status: {}\nroles: {}", a["status"], a["roles"]));
            (
                format!("account/{username}"),
                old.unwrap_or_default(),
                format!("status: \"active\"\nroles: {}", serde_json::json!(roles)),
            )
        }
    };
    let decided = r.decided_by.as_ref().map(|by| {
        format!(
            "{} · {by} · {}{}",
            state_label(r.state, ja),
            r.decided_at.map(|t| local_time(t.div_euclid(1_000_000), ja)).unwrap_or_default(),
            r.note.as_deref().map(|n| format!(" · {n}")).unwrap_or_default()
        )
    });
    let (status, error) = match error {
        Some((s, t)) => (s, Some(t)),
        None => (StatusCode::OK, None),
    };
    let page = Show {
        v: v.chrome("変更の承認", "Change approvals"),
        mine: r.requested_by == me,
        r: row(&r, ja),
        sha256: r.sha256.clone(),
        what,
        diff: diff_lines(&old, &new),
        decided,
        requested: flags.0,
        done: flags.1,
        error,
        note,
    };
    render(v, &page, status)
}

/// `GET /console/changes/{id}`.
pub async fn show(
    State(c): State<Arc<Console>>,
    v: Visitor,
    Path(id): Path<String>,
    Query(q): Query<ShowQuery>,
) -> Response {
    page(&c, &v, id, (q.requested.is_some(), q.done), None, String::new()).await
}

/// `POST /console/changes/{id}` with `step` (`approve`, `refuse`, `withdraw`), `sha256` and
/// `note`.
pub async fn decide(
    State(c): State<Arc<Console>>,
    v: Visitor,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(form) = browser::form(&c.http, &headers, body).await else { return super::bad_form(&v) };
    let (step, sha256, note) = (field(&form, "step"), field(&form, "sha256"), field(&form, "note"));
    let (i, n) = (id.clone(), note.clone());
    let r = match step.as_str() {
        "approve" => run(&c, &v, move |ctx, node| approvals::approve(ctx, node, &i, &sha256, &n)).await,
        "refuse" => run(&c, &v, move |ctx, node| approvals::refuse(ctx, node, &i, &n)).await,
        "withdraw" => run(&c, &v, move |ctx, node| approvals::withdraw(ctx, node, &i)).await,
        _ => return super::bad_form(&v),
    };
    match r {
        Ok(r) => browser::redirect(&format!("/console/changes/{}?done={}", r.id, r.state.name()), v.cookies.clone()),
        Err(e) => {
            let (status, text) = explain_error(&e, v.lang);
            if status == StatusCode::FORBIDDEN
                && !matches!(e, mamori_app::AppError::Forbidden(ref m) if m.contains(" / "))
            {
                return super::error_page(&v, &e);
            }
            page(&c, &v, id, (false, None), Some((status, text)), note).await
        }
    }
}
