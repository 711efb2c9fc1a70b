//! Access review campaigns (アクセス権の見直し, Z6) for the security manager: open a campaign
//! (every active account, or the ones named), and decide each account — keep every role, or
//! revoke some. A revocation changes the account at once through the identity service; each
//! decision is a new version of the campaign on the configuration path (versioned, attributed,
//! audited). Nobody may decide their own account. All of it is `mamori_app::reviews`, the same
//! use cases as `mamori review …`.

use std::sync::Arc;

use askama::Template;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use mamori_app::reviews;
use mamori_http::browser;

use super::{error_page, field, on_form, render, run};
use crate::Console;
use crate::fmt::local_time;
use crate::visitor::{Chrome, Visitor};

pub struct CampaignRow {
    pub id: String,
    pub reason: String,
    pub opened: String,
    pub opened_by: String,
    pub open_items: usize,
    pub total: usize,
}

#[derive(Template)]
#[template(path = "reviews.html")]
struct List {
    v: Chrome,
    rows: Vec<CampaignRow>,
    reason: String,
    users: String,
    error: Option<String>,
}

async fn list_page(
    c: &Arc<Console>,
    v: &Visitor,
    reason: String,
    users: String,
    error: Option<(StatusCode, String)>,
) -> Response {
    let ja = v.ja();
    match run(c, v, reviews::list).await {
        Ok(mut cs) => {
            cs.sort_by_key(|c| std::cmp::Reverse(c.opened_at));
            let rows = cs
                .iter()
                .map(|c| CampaignRow {
                    id: c.id.clone(),
                    reason: c.reason.clone(),
                    opened: local_time(c.opened_at.div_euclid(1_000_000), ja),
                    opened_by: c.opened_by.clone(),
                    open_items: c.open_items(),
                    total: c.items.len(),
                })
                .collect();
            let status = error.as_ref().map_or(StatusCode::OK, |(s, _)| *s);
            let page = List {
                v: v.chrome("アクセス権の見直し", "Access reviews"),
                rows,
                reason,
                users,
                error: error.map(|(_, t)| t),
            };
            render(v, &page, status)
        }
        Err(e) => error_page(v, &e),
    }
}

/// `GET /console/reviews`.
pub async fn list(State(c): State<Arc<Console>>, v: Visitor) -> Response {
    list_page(&c, &v, String::new(), String::new(), None).await
}

/// `POST /console/reviews` with `reason` and `users` (login names separated by spaces or
/// commas; empty: every active account).
pub async fn open(State(c): State<Arc<Console>>, v: Visitor, headers: HeaderMap, body: Body) -> Response {
    let Some(form) = browser::form(&c.http, &headers, body).await else { return super::bad_form(&v) };
    let (reason, users) = (field(&form, "reason"), field(&form, "users"));
    let names: Vec<String> =
        users.split([' ', ',', '、', '\n']).map(str::trim).filter(|u| !u.is_empty()).map(str::to_string).collect();
    let r = reason.clone();
    match run(&c, &v, move |ctx, node| reviews::open(ctx, node, &r, &names)).await {
        Ok(campaign) => browser::redirect(&format!("/console/reviews/{}", campaign.id), v.cookies.clone()),
        Err(e) => match on_form(&v, &e) {
            Ok(err) => list_page(&c, &v, reason, users, Some(err)).await,
            Err(r) => *r,
        },
    }
}

pub struct ItemRow {
    pub username: String,
    pub roles: Vec<String>,
    pub decided: Option<String>,
    pub own: bool,
}

#[derive(Template)]
#[template(path = "review.html")]
struct Show {
    v: Chrome,
    id: String,
    reason: String,
    opened: String,
    items: Vec<ItemRow>,
    error: Option<(String, String)>,
    note: String,
    decided: bool,
}

#[derive(serde::Deserialize, Default)]
pub struct ShowQuery {
    #[serde(default)]
    decided: Option<String>,
}

async fn show_page(
    c: &Arc<Console>,
    v: &Visitor,
    id: String,
    error: Option<(String, String)>,
    note: String,
    decided: bool,
    status: StatusCode,
) -> Response {
    let ja = v.ja();
    let me = v.ctx.name().to_string();
    let key = id.clone();
    match run(c, v, move |ctx, node| reviews::show(ctx, node, &key)).await {
        Ok(campaign) => {
            let items = campaign
                .items
                .iter()
                .map(|i| ItemRow {
                    username: i.username.clone(),
                    roles: i.roles.clone(),
                    own: i.username == me,
                    decided: i.decision.as_ref().map(|d| {
                        let when = local_time(d.at.div_euclid(1_000_000), ja);
                        let what = if d.revoked.is_empty() {
                            if ja { "すべて継続".to_string() } else { "all kept".to_string() }
                        } else if ja {
                            format!("取消: {}", d.revoked.join(", "))
                        } else {
                            format!("revoked: {}", d.revoked.join(", "))
                        };
                        format!(
                            "{what} — {} · {when}{}",
                            d.by,
                            if d.note.is_empty() { String::new() } else { format!(" · {}", d.note) }
                        )
                    }),
                })
                .collect();
            let page = Show {
                v: v.chrome("アクセス権の見直し", "Access review"),
                reason: campaign.reason.clone(),
                opened: local_time(campaign.opened_at.div_euclid(1_000_000), ja),
                id: campaign.id,
                items,
                error,
                note,
                decided,
            };
            render(v, &page, status)
        }
        Err(e) => error_page(v, &e),
    }
}

/// `GET /console/reviews/{id}`.
pub async fn show(
    State(c): State<Arc<Console>>,
    v: Visitor,
    Path(id): Path<String>,
    Query(q): Query<ShowQuery>,
) -> Response {
    show_page(&c, &v, id, None, String::new(), q.decided.is_some(), StatusCode::OK).await
}

/// `POST /console/reviews/{id}/{user}` with `revoke` (the roles to revoke, repeated; none: keep
/// every role) and `note`.
pub async fn decide(
    State(c): State<Arc<Console>>,
    v: Visitor,
    Path((id, user)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(form) = browser::form(&c.http, &headers, body).await else { return super::bad_form(&v) };
    let revoke: Vec<String> = form.iter().filter(|(k, _)| k == "revoke").map(|(_, v)| v.trim().to_string()).collect();
    let note = field(&form, "note");
    let (campaign, who, n) = (id.clone(), user.clone(), note.clone());
    match run(&c, &v, move |ctx, node| reviews::decide(ctx, node, &campaign, &who, &revoke, &n)).await {
        Ok(_) => browser::redirect(&format!("/console/reviews/{id}?decided=1"), v.cookies.clone()),
        Err(e) => match on_form(&v, &e) {
            Ok((status, text)) => show_page(&c, &v, id, Some((user, text)), note, false, status).await,
            Err(r) => *r,
        },
    }
}
