//! The security manager's view of the audit trail (監査証跡): search by patient, person or
//! application, action, outcome and period, newest first; one entry in full, with whether the
//! signed checkpoint covers it; and "may X do Y on Z, and why" (policy explain). Each is the
//! application layer's use case, which records the look itself in the trail.

use std::sync::Arc;

use askama::Template;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use mamori_app::{audit_trail, policies};
use mamori_http::browser;

use super::{render, run};
use crate::Console;
use crate::fmt::{day_start_micros, instant};
use crate::visitor::{Chrome, Visitor};

/// The search form as typed (kept on the page after an error).
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct SearchForm {
    #[serde(default)]
    pub patient: String,
    #[serde(default)]
    pub agent: String,
    #[serde(default)]
    pub action: String,
    #[serde(default)]
    pub outcome: String,
    #[serde(default)]
    pub since: String,
    #[serde(default)]
    pub until: String,
    #[serde(default)]
    pub before: String,
}

pub struct Row {
    pub index: u64,
    pub when: String,
    pub action: String,
    pub outcome: &'static str,
    pub who: String,
    pub patients: String,
    pub resources: String,
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    v: Chrome,
    f: SearchForm,
    error: Option<String>,
    rows: Vec<Row>,
    searched: bool,
    next: Option<String>,
    size: u64,
}

fn outcome_label(o: mamori_audit::Outcome, ja: bool) -> &'static str {
    use mamori_audit::Outcome as O;
    match (o, ja) {
        (O::Success, true) => "成功",
        (O::Success, false) => "success",
        (O::Denied, true) => "拒否",
        (O::Denied, false) => "denied",
        (O::Failure, true) => "失敗",
        (O::Failure, false) => "failure",
    }
}

/// The form as a use-case query, or what is wrong with it (in the reader's language).
fn parse(f: &SearchForm, ja: bool) -> Result<audit_trail::Search, String> {
    let t = |j: &str, e: &str| if ja { j.to_string() } else { e.to_string() };
    let opt = |s: &str| (!s.trim().is_empty()).then(|| s.trim().to_string());
    let patient = opt(&f.patient).map(|p| if p.contains('/') { p } else { format!("Patient/{p}") });
    let outcome = match f.outcome.as_str() {
        "" => None,
        "success" => Some(mamori_audit::Outcome::Success),
        "denied" => Some(mamori_audit::Outcome::Denied),
        "failure" => Some(mamori_audit::Outcome::Failure),
        _ => return Err(t("結果の指定が正しくありません。", "The outcome is not one of the choices.")),
    };
    let since = match opt(&f.since) {
        Some(s) => Some(day_start_micros(&s, false).ok_or_else(|| {
            t("開始日は YYYY-MM-DD の形式で入力してください。", "Enter the start date as YYYY-MM-DD.")
        })?),
        None => None,
    };
    let until =
        match opt(&f.until) {
            Some(s) => Some(day_start_micros(&s, true).ok_or_else(|| {
                t("終了日は YYYY-MM-DD の形式で入力してください。", "Enter the end date as YYYY-MM-DD.")
            })?),
            None => None,
        };
    let before = match opt(&f.before) {
        Some(b) => Some(b.parse::<u64>().map_err(|_| t("ページの指定が正しくありません。", "The page is not valid."))?),
        None => None,
    };
    Ok(audit_trail::Search {
        patient,
        agent: opt(&f.agent),
        action: opt(&f.action),
        outcome,
        since,
        until,
        before,
        limit: 50,
    })
}

/// `GET /console/audit?patient=&agent=&action=&outcome=&since=&until=&before=`. The bare page
/// shows the latest entries.
pub async fn search(State(c): State<Arc<Console>>, v: Visitor, Query(f): Query<SearchForm>) -> Response {
    let ja = v.ja();
    let mut page = AuditPage {
        v: v.chrome("監査証跡", "Audit trail"),
        f: f.clone(),
        error: None,
        rows: Vec::new(),
        searched: true,
        next: None,
        size: 0,
    };
    let q = match parse(&f, ja) {
        Ok(q) => q,
        Err(e) => {
            page.error = Some(e);
            page.searched = false;
            return render(&v, &page, StatusCode::BAD_REQUEST);
        }
    };
    match run(&c, &v, move |ctx, node| audit_trail::search(ctx, node, &q)).await {
        Ok(p) => {
            page.size = p.size;
            page.rows = p
                .entries
                .into_iter()
                .map(|(index, r)| Row {
                    index,
                    when: instant(&r.time, ja),
                    action: r.action,
                    outcome: outcome_label(r.outcome, ja),
                    who: match &r.actor.client_id {
                        Some(app) if *app != r.actor.id => format!("{} ({app})", r.actor.id),
                        _ => r.actor.id,
                    },
                    patients: r.patients.join(", "),
                    resources: r.resources.iter().take(3).cloned().collect::<Vec<_>>().join(", ")
                        + if r.resources.len() > 3 { " …" } else { "" },
                })
                .collect();
            page.next = p.next.map(|n| {
                let mut q = url::form_urlencoded::Serializer::new(String::new());
                for (k, val) in [
                    ("patient", &f.patient),
                    ("agent", &f.agent),
                    ("action", &f.action),
                    ("outcome", &f.outcome),
                    ("since", &f.since),
                    ("until", &f.until),
                ] {
                    if !val.is_empty() {
                        q.append_pair(k, val);
                    }
                }
                q.append_pair("before", &n.to_string());
                format!("/console/audit?{}", q.finish())
            });
            render(&v, &page, StatusCode::OK)
        }
        Err(e) => {
            let (status, text) = match super::on_form(&v, &e) {
                Ok(x) => x,
                Err(page) => return *page,
            };
            page.error = Some(text);
            page.searched = false;
            render(&v, &page, status)
        }
    }
}

#[derive(Template)]
#[template(path = "audit_entry.html")]
struct EntryPage {
    v: Chrome,
    index: u64,
    when: String,
    outcome: &'static str,
    checkpointed: bool,
    r: mamori_audit::AuditRecord,
    json: String,
}

/// `GET /console/audit/{index}`: one entry in full.
pub async fn entry(State(c): State<Arc<Console>>, v: Visitor, Path(index): Path<String>) -> Response {
    let Ok(index) = index.parse::<u64>() else { return super::not_found(v).await };
    match run(&c, &v, move |ctx, node| audit_trail::entry(ctx, node, index)).await {
        Ok((r, checkpointed)) => {
            let ja = v.ja();
            let page = EntryPage {
                v: v.chrome("監査記録", "Audit entry"),
                index,
                when: instant(&r.time, ja),
                outcome: outcome_label(r.outcome, ja),
                checkpointed,
                json: serde_json::to_string_pretty(&r).unwrap_or_default(),
                r,
            };
            render(&v, &page, StatusCode::OK)
        }
        Err(e) => super::error_page(&v, &e),
    }
}

#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct ExplainForm {
    #[serde(default)]
    pub user: String,
    #[serde(default)]
    pub action: String,
    #[serde(default)]
    pub resource: String,
}

pub struct Verdict {
    pub allowed: bool,
    pub roles: String,
    pub classes: String,
    pub patient: String,
    pub care: bool,
    pub break_glass: bool,
    pub policies: Vec<String>,
    pub errors: Vec<String>,
}

#[derive(Template)]
#[template(path = "explain.html")]
struct ExplainPage {
    v: Chrome,
    f: ExplainForm,
    error: Option<String>,
    verdict: Option<Verdict>,
    acts: Vec<(&'static str, &'static str)>,
}

/// `GET /console/explain?user=&action=&resource=`: why a person may or may not do something.
pub async fn explain(State(c): State<Arc<Console>>, v: Visitor, Query(f): Query<ExplainForm>) -> Response {
    let ja = v.ja();
    let acts = vec![
        ("read", if ja { "参照" } else { "read" }),
        ("search", if ja { "検索" } else { "search" }),
        ("create", if ja { "追加" } else { "create" }),
        ("update", if ja { "更新" } else { "update" }),
        ("delete", if ja { "削除" } else { "delete" }),
    ];
    let mut page = ExplainPage {
        v: v.chrome("アクセス判定の説明", "Explain a decision"),
        f: f.clone(),
        error: None,
        verdict: None,
        acts,
    };
    if f.user.trim().is_empty() && f.resource.trim().is_empty() {
        return render(&v, &page, StatusCode::OK);
    }
    let Some(act) = mamori_authz::Act::parse(f.action.trim()).filter(|a| *a != mamori_authz::Act::Execute) else {
        page.error = Some(if ja { "操作を選んでください。" } else { "Choose an action." }.into());
        return render(&v, &page, StatusCode::BAD_REQUEST);
    };
    if f.user.trim().is_empty() || f.resource.trim().is_empty() {
        page.error = Some(
            if ja {
                "アカウントと対象を入力してください。"
            } else {
                "Enter an account and a resource."
            }
            .into(),
        );
        return render(&v, &page, StatusCode::BAD_REQUEST);
    }
    let q = policies::Question {
        user: f.user.trim().to_string(),
        act,
        resource: f.resource.trim().to_string(),
        operation: String::new(),
        policies: None,
    };
    match run(&c, &v, move |ctx, node| policies::explain(ctx, node, &q)).await {
        Ok(a) => {
            let d = &a.explanation.decision;
            page.verdict = Some(Verdict {
                allowed: d.allowed,
                roles: a.account.roles.join(", "),
                classes: a.target.classes.iter().cloned().collect::<Vec<_>>().join(", "),
                patient: a.patient.clone().unwrap_or_else(|| "-".into()),
                care: a.explanation.situation.care,
                break_glass: a.explanation.used_break_glass,
                policies: d.policies.clone(),
                errors: d.errors.clone(),
            });
            render(&v, &page, StatusCode::OK)
        }
        Err(e) => {
            let (status, text) = match super::on_form(&v, &e) {
                Ok(x) => x,
                Err(page) => return *page,
            };
            page.error = Some(text);
            render(&v, &page, status)
        }
    }
}

/// `POST /console/audit/verify`: checks the whole trail now (every entry recomputed, every
/// checkpoint's signature and root, the witnesses, the append-only triggers); the result is
/// recorded and shown on the home page. A trail that does not verify also raises an alert.
pub async fn verify(State(c): State<Arc<Console>>, v: Visitor, headers: HeaderMap, body: Body) -> Response {
    if browser::form(&c.http, &headers, body).await.is_none() {
        return super::bad_form(&v);
    }
    match run(&c, &v, audit_trail::verify_now).await {
        Ok(_) => browser::redirect("/console/#h-trail", v.cookies.clone()),
        Err(e) => super::error_page(&v, &e),
    }
}
