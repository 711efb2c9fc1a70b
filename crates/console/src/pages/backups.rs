//! Backups and emergency read-only mode (バックアップと非常時の参照専用モード, #27): the
//! repository's generations with their signed manifests, what the vault (the copy the server
//! cannot erase) holds, the last restore drill with its recovery time and point, and the switch
//! the system administrator throws during an incident. Reading is `mamori_app::backup::overview`;
//! the switch is `mamori_app::emergency::switch`, the one path the CLI uses too.

use std::sync::Arc;

use askama::Template;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use mamori_app::messages::localize;
use mamori_app::{backup, emergency};
use mamori_http::browser;

use super::{field, render, run};
use crate::Console;
use crate::fmt::local_time;
use crate::visitor::{Chrome, Visitor};

pub struct Row {
    pub name: String,
    pub created: String,
    pub resources: String,
    pub versions: String,
    pub audit: String,
    pub size: String,
    /// The manifest does not verify, or the data file is missing: why.
    pub problem: Option<String>,
    /// `None`: no vault (or it did not answer); else (complete, immutable).
    pub vault: Option<(bool, bool)>,
}

pub struct DrillView {
    pub generation: String,
    pub at: String,
    pub rto: String,
    pub rpo: String,
    pub passed: bool,
    pub problems: Vec<String>,
    pub by: String,
    pub versions: u64,
    pub entries: u64,
}

#[derive(Template)]
#[template(path = "backups.html")]
struct Page {
    v: Chrome,
    repository: Option<String>,
    repo_error: Option<String>,
    rows: Vec<Row>,
    vault: Option<(String, Result<usize, String>)>,
    missing_in_vault: Vec<String>,
    schedule: Option<u32>,
    retention: String,
    drill: Option<DrillView>,
    drill_days: u32,
    drill_overdue: bool,
    read_only: bool,
    stored_on: bool,
    mode_reason: String,
    pinned: bool,
    may_switch: bool,
    switched: Option<String>,
    error: Option<String>,
    reason: String,
}

#[derive(serde::Deserialize, Default)]
pub struct PageQuery {
    #[serde(default)]
    switched: Option<String>,
}

/// A duration in seconds, in the reader's words (`3.2 秒`, `2 時間 5 分`).
fn duration(secs: f64, ja: bool) -> String {
    if secs < 60.0 {
        return if ja { format!("{secs:.1} 秒") } else { format!("{secs:.1} s") };
    }
    let whole = secs.round() as i64;
    let (d, h, m) = (whole / 86_400, whole % 86_400 / 3600, whole % 3600 / 60);
    match (d, h, ja) {
        (0, 0, true) => format!("{m} 分"),
        (0, 0, false) => format!("{m} min"),
        (0, _, true) => format!("{h} 時間 {m} 分"),
        (0, _, false) => format!("{h} h {m} min"),
        (_, _, true) => format!("{d} 日 {h} 時間"),
        (_, _, false) => format!("{d} d {h} h"),
    }
}

fn bytes(n: u64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    if n < 1024 * 1024 { format!("{:.1} KiB", n as f64 / 1024.0) } else { format!("{:.1} MiB", n as f64 / MIB) }
}

async fn page(
    c: &Arc<Console>,
    v: &Visitor,
    switched: Option<String>,
    error: Option<String>,
    reason: String,
    status: StatusCode,
) -> Response {
    let ja = v.ja();
    let o = match run(c, v, backup::overview).await {
        Ok(o) => o,
        Err(e) => return super::error_page(v, &e),
    };
    let (rows, repo_error) = match o.generations {
        Ok(gs) => (
            gs.into_iter()
                .map(|g| {
                    let vault = o
                        .vault
                        .as_ref()
                        .and_then(|(_, r)| r.as_ref().ok())
                        .map(|_| g.vault.as_ref().map_or((false, false), |s| (s.complete(), s.immutable)));
                    let missing = g.data_bytes.is_none().then(|| {
                        if ja {
                            "データファイルがありません".to_string()
                        } else {
                            "the data file is missing".to_string()
                        }
                    });
                    match g.manifest {
                        Ok(m) => Row {
                            name: g.name,
                            created: local_time(m.created_micros.div_euclid(1_000_000), ja),
                            resources: m.resources.to_string(),
                            versions: m.versions.to_string(),
                            audit: m.audit_size.to_string(),
                            size: bytes(g.data_bytes.unwrap_or(m.data.size)),
                            problem: missing,
                            vault,
                        },
                        Err(e) => Row {
                            created: backup::name_time(&g.name)
                                .map_or_else(String::new, |t| local_time(t.unix_timestamp(), ja)),
                            name: g.name,
                            resources: "—".into(),
                            versions: "—".into(),
                            audit: "—".into(),
                            size: g.data_bytes.map_or_else(|| "—".into(), bytes),
                            problem: Some(localize(&e, v.lang).into_owned()),
                            vault,
                        },
                    }
                })
                .collect(),
            None,
        ),
        Err(e) => (Vec::new(), Some(localize(&e, v.lang).into_owned())),
    };
    let r = o.retention;
    let retention = if ja {
        format!("最新 {} · 日次 {} · 週次 {} · 月次 {}", r.last, r.daily, r.weekly, r.monthly)
    } else {
        format!("newest {} · daily {} · weekly {} · monthly {}", r.last, r.daily, r.weekly, r.monthly)
    };
    let drill = o.last_drill.map(|d| DrillView {
        passed: d.passed(),
        generation: d.generation,
        at: local_time(d.at.div_euclid(1_000_000), ja),
        rto: duration(d.rto_secs, ja),
        rpo: duration(d.rpo_secs as f64, ja),
        problems: d.problems,
        by: d.by,
        versions: d.fsck_checked,
        entries: d.audit_entries,
    });
    // Generations the vault (when it answered) does not hold whole.
    let missing_in_vault =
        rows.iter().filter(|r| r.vault.is_some_and(|(complete, _)| !complete)).map(|r| r.name.clone()).collect();
    let p = Page {
        v: v.chrome("バックアップ", "Backups"),
        repository: o.repository.map(|p| p.display().to_string()),
        repo_error,
        rows,
        vault: o.vault.map(|(url, r)| (url, r.map_err(|e| localize(&e, v.lang).into_owned()))),
        missing_in_vault,
        schedule: o.every_hours,
        retention,
        drill,
        drill_days: o.drill_days,
        drill_overdue: o.drill_overdue,
        read_only: o.read_only_now,
        stored_on: o.emergency.read_only,
        mode_reason: o.emergency.reason,
        pinned: o.pinned,
        may_switch: o.may_switch,
        switched,
        error,
        reason,
    };
    render(v, &p, status)
}

/// `GET /console/backups`.
pub async fn show(State(c): State<Arc<Console>>, v: Visitor, Query(q): Query<PageQuery>) -> Response {
    page(&c, &v, q.switched, None, String::new(), StatusCode::OK).await
}

/// `POST /console/backups/emergency`: switches emergency read-only mode on (`mode=on`) or off
/// (`mode=off`) for every node; a reason is required.
pub async fn switch(State(c): State<Arc<Console>>, v: Visitor, headers: HeaderMap, body: Body) -> Response {
    let Some(form) = browser::form(&c.http, &headers, body).await else { return super::bad_form(&v) };
    let reason = field(&form, "reason");
    let on = match field(&form, "mode").as_str() {
        "on" => true,
        "off" => false,
        _ => return super::bad_form(&v),
    };
    if reason.is_empty() {
        let m = if v.ja() {
            "参照専用モードを切り替える理由を入力してください。"
        } else {
            "Say why emergency read-only mode is switched."
        };
        return page(&c, &v, None, Some(m.into()), reason, StatusCode::BAD_REQUEST).await;
    }
    let why = reason.clone();
    match run(&c, &v, move |ctx, node| emergency::switch(ctx, node, on, &why)).await {
        Ok(()) => browser::redirect(
            &format!("/console/backups?switched={}", if on { "on" } else { "off" }),
            v.cookies.clone(),
        ),
        Err(e) => {
            let (status, text) = match super::on_form(&v, &e) {
                Ok(x) => x,
                Err(page) => return *page,
            };
            page(&c, &v, None, Some(text), reason, status).await
        }
    }
}
