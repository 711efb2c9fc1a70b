//! Configuration integrity (構成の整合性, #25): the approved baseline, differences from it,
//! changes made around the configuration path with revert and accept, what is blocked now, and
//! the external baselines with their latest check. Every act is the application layer's use case
//! (`mamori_app::baseline`); approving a new baseline is held for a second person.

use std::sync::Arc;

use askama::Template;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use mamori_app::baseline;
use mamori_http::browser;

use super::{field, render, run};
use crate::Console;
use crate::fmt::local_time;
use crate::visitor::{Chrome, Visitor};

pub struct External {
    pub name: String,
    pub version: u64,
    pub sha256: String,
    pub last: Option<(String, String, bool)>,
}

#[derive(Template)]
#[template(path = "integrity.html")]
struct Page {
    v: Chrome,
    approved: Option<(u64, String, String, String, String)>,
    drift: Vec<String>,
    tampered: Vec<(String, String)>,
    blocks: Vec<(String, String)>,
    external: Vec<External>,
    may_decide: bool,
    done: Option<String>,
    error: Option<(String, String)>,
    reason: String,
}

#[derive(serde::Deserialize, Default)]
pub struct PageQuery {
    #[serde(default)]
    done: Option<String>,
}

async fn page(
    c: &Arc<Console>,
    v: &Visitor,
    done: Option<String>,
    error: Option<(String, String)>,
    reason: String,
    status: StatusCode,
) -> Response {
    let ja = v.ja();
    let o = match run(c, v, baseline::overview).await {
        Ok(o) => o,
        Err(e) => return super::error_page(v, &e),
    };
    let secs = |t: i64| t.div_euclid(1_000_000);
    let page = Page {
        v: v.chrome("構成の整合性", "Configuration integrity"),
        approved: o.approved.map(|a| (a.version, a.by, local_time(secs(a.at_micros), ja), a.reason, a.note_sha256)),
        drift: o.drift.iter().map(ToString::to_string).collect(),
        tampered: o.tampered,
        blocks: o.blocks,
        external: o
            .external
            .into_iter()
            .map(|(x, version, last)| External {
                name: x.name,
                version,
                sha256: x.sha256,
                last: last.map(|r| {
                    let drift = r.counts.iter().sum::<usize>() > 0;
                    let what = if ja {
                        format!("変更 {} · 追加 {} · 削除 {}", r.counts[0], r.counts[1], r.counts[2])
                    } else {
                        format!("{} changed · {} added · {} removed", r.counts[0], r.counts[1], r.counts[2])
                    };
                    (local_time(secs(r.at), ja), what, drift)
                }),
            })
            .collect(),
        may_decide: o.may_decide,
        done,
        error,
        reason,
    };
    render(v, &page, status)
}

/// `GET /console/integrity`.
pub async fn show(State(c): State<Arc<Console>>, v: Visitor, Query(q): Query<PageQuery>) -> Response {
    page(&c, &v, q.done, None, String::new(), StatusCode::OK).await
}

/// `POST /console/integrity` with `step` (`approve`, `revert`, `accept`), `item` and `reason`.
pub async fn act(State(c): State<Arc<Console>>, v: Visitor, headers: HeaderMap, body: Body) -> Response {
    let Some(form) = browser::form(&c.http, &headers, body).await else { return super::bad_form(&v) };
    let (step, item, reason) = (field(&form, "step"), field(&form, "item"), field(&form, "reason"));
    let (i, r) = (item.clone(), reason.clone());
    let result = match step.as_str() {
        "approve" => run(&c, &v, move |ctx, node| baseline::approve(ctx, node, &r).map(|_| ())).await,
        "revert" => run(&c, &v, move |ctx, node| baseline::revert(ctx, node, &i, &r).map(|_| ())).await,
        "accept" => run(&c, &v, move |ctx, node| baseline::accept(ctx, node, &i, &r).map(|_| ())).await,
        _ => return super::bad_form(&v),
    };
    match result {
        Ok(()) => browser::redirect(&format!("/console/integrity?done={step}"), v.cookies.clone()),
        Err(e) => match super::on_form(&v, &e) {
            Ok((status, text)) => {
                let at = if step == "approve" { "baseline".to_string() } else { item };
                page(&c, &v, None, Some((at, text)), reason, status).await
            }
            Err(r) => *r,
        },
    }
}
