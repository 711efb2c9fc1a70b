//! `GET /console/`: the home page. Each section is there only when the person's rights reach it:
//! the security manager's dashboard (two-factor coverage against the 令和9年度 deadline, dormant
//! and locked accounts, the break-glass queue, access reviews, alerts, the audit checkpoint),
//! the administrator's account summary, the vendor's pointer to maintenance.

use std::sync::Arc;

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use mamori_app::{AdminAct, audit_trail, reviews, users};

use super::{render, run};
use crate::Console;
use crate::fmt::{instant, local_time};
use crate::visitor::{Chrome, Visitor};

/// 令和9年度 (FY2027) begins on 2027-04-01 JST: two factors are expected by then.
const DEADLINE_SECS: i64 = 1_806_505_200;

pub struct Alert {
    pub index: u64,
    pub when: String,
    pub action: String,
    pub who: String,
    pub detail: String,
}

pub struct Security {
    pub percent: String,
    pub active: usize,
    pub covered: usize,
    pub without: Vec<String>,
    pub days_left: i64,
    pub dormant: Vec<(String, String)>,
    pub locked: Vec<(String, String)>,
    pub alerts: Vec<Alert>,
    pub open_break_glass: Option<usize>,
    pub campaigns: Option<Vec<(String, String, usize)>>,
    pub audit_size: u64,
    pub checkpointed: u64,
    pub checkpoint: Option<String>,
    /// The latest check of the whole trail, if one was run.
    pub verification: Option<Verified>,
}

/// The latest `verify` of the trail, for the page.
pub struct Verified {
    pub passed: bool,
    pub when: String,
    pub by: String,
    pub entries: u64,
    pub checkpoints: u64,
    pub millis: u64,
    pub problems: Vec<String>,
}

pub struct Admin {
    pub active: usize,
    pub without: usize,
    pub locked: usize,
    pub inactive: usize,
}

#[derive(Template)]
#[template(path = "dashboard.html")]
struct Dashboard {
    v: Chrome,
    security: Option<Security>,
    admin: Option<Admin>,
    vendor: bool,
    /// For the approvers of remote maintenance: (requests waiting, reports to review, overdue).
    maintenance: Option<(usize, usize, usize)>,
    /// Others' change requests the person could approve (the two-person rule).
    changes_waiting: Option<usize>,
    /// Changes made around the configuration path and blocks now (those who read the audit).
    integrity: Option<(usize, usize)>,
}

pub async fn page(State(c): State<Arc<Console>>, v: Visitor) -> Response {
    let (rights, ja) = (v.rights, v.ja());
    let r = run(&c, &v, move |ctx, node| {
        let now = ctx.now_secs();
        let mut security = None;
        let mut admin = None;
        if rights.read_audit || rights.manage_users {
            let p = users::posture(ctx, node)?;
            if rights.read_audit {
                let alerts = audit_trail::recent_alerts(ctx, node, 10)?
                    .into_iter()
                    .map(|(index, r)| Alert {
                        index,
                        when: instant(&r.time, ja),
                        action: r.action,
                        who: r.actor.id,
                        detail: r.detail.unwrap_or_default(),
                    })
                    .collect();
                let open_break_glass = if ctx.may(node, AdminAct::ReviewBreakGlass) {
                    Some(reviews::break_glass(ctx, node, true)?.len())
                } else {
                    None
                };
                let campaigns = if ctx.may(node, AdminAct::ReviewAccess) {
                    Some(
                        reviews::list(ctx, node)?
                            .into_iter()
                            .filter(|c| c.open_items() > 0)
                            .map(|c| (c.id.clone(), c.reason.clone(), c.open_items()))
                            .collect(),
                    )
                } else {
                    None
                };
                let (note, size, integrated) = audit_trail::checkpoint(ctx, node)?;
                let verification = audit_trail::last_verification(ctx, node)?.map(|r| Verified {
                    passed: r.passed(),
                    when: local_time(r.at_micros.div_euclid(1_000_000), ja),
                    by: r.by,
                    entries: r.entries,
                    checkpoints: r.checkpoints,
                    millis: r.millis,
                    problems: r.problems.into_iter().take(5).collect(),
                });
                security = Some(Security {
                    percent: format!("{:.1}", p.coverage.percent()),
                    active: p.coverage.active,
                    covered: p.coverage.with_second_factor,
                    without: p.coverage.without.clone(),
                    days_left: (DEADLINE_SECS - now).div_euclid(86_400),
                    dormant: p
                        .dormant
                        .iter()
                        .map(|(u, last)| {
                            (
                                u.clone(),
                                last.map_or_else(
                                    || if ja { "なし" } else { "never" }.to_string(),
                                    |t| local_time(t, ja),
                                ),
                            )
                        })
                        .collect(),
                    locked: p.locked.iter().map(|(u, until)| (u.clone(), local_time(*until, ja))).collect(),
                    alerts,
                    open_break_glass,
                    campaigns,
                    audit_size: size,
                    checkpointed: integrated,
                    checkpoint: note,
                    verification,
                });
            }
            if rights.manage_users {
                admin = Some(Admin {
                    active: p.coverage.active,
                    without: p.coverage.without.len(),
                    locked: p.locked.len(),
                    inactive: p.inactive,
                });
            }
        }
        let changes_waiting =
            if rights.approve_change { Some(mamori_app::approvals::waiting_for(ctx, node)?) } else { None };
        let integrity = if rights.read_audit {
            let b = node.enforcer.blocks();
            Some((mamori_app::baseline::tampered(node)?.len(), usize::from(b.clinical.is_some()) + b.subjects.len()))
        } else {
            None
        };
        // Remote maintenance for its approvers: requests waiting, reports to review, reports overdue.
        let maintenance = if rights.approve_maintenance {
            use mamori_app::maintenance::{self as m, State};
            let all = m::list(ctx, node)?;
            let count = |s: State| all.iter().filter(|w| w.state == s).count();
            Some((count(State::Requested), count(State::Reported), m::overdue_among(ctx, node, &all).len()))
        } else {
            None
        };
        Ok((security, admin, changes_waiting, integrity, maintenance))
    })
    .await;
    match r {
        Ok((security, admin, changes_waiting, integrity, maintenance)) => {
            let page = Dashboard {
                v: v.chrome("ホーム", "Home"),
                security,
                admin,
                vendor: v.rights.vendor || v.rights.request_maintenance,
                maintenance,
                changes_waiting,
                integrity,
            };
            render(&v, &page, StatusCode::OK)
        }
        Err(e) => super::error_page(&v, &e),
    }
}
