//! Access policies (アクセス方針, Cedar) and the information-class rules (情報区分の付与規則):
//! what is in force and who set it, and an edit that is checked before it is applied — the
//! proposed text against the schema, the table of expected decisions run against it, and a diff
//! against the version in force. Applying calls the same use cases as `mamori policy set` and
//! `mamori classes set` (the table must pass first; nothing is stored otherwise).

use std::sync::Arc;

use askama::Template;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use mamori_app::{class_rules, policies};
use mamori_http::browser;

use super::{field, render, run};
use crate::Console;
use crate::fmt::{DiffLine, diff_lines, local_time};
use crate::visitor::{Chrome, Visitor};

/// Who set what is in force: `(version, when, by, reason)`, or `None` for what was shipped.
type Provenance = Option<(u64, String, String, String)>;

fn provenance(e: Option<&mamori_store_sql::ConfigEntry>, ja: bool) -> Provenance {
    e.map(|e| (e.version, local_time(e.changed_at / 1_000_000, ja), e.changed_by.clone(), e.reason.clone()))
}

/// The edit as typed.
#[derive(Default)]
pub struct PolicyForm {
    pub policies: String,
    pub tests: String,
    pub reason: String,
}

/// What a check found.
pub struct Checked {
    /// Cases of the table, and those that differ from the expectation.
    pub cases: usize,
    pub failures: Vec<String>,
    /// Policies in the proposal.
    pub count: usize,
    pub diff: Vec<DiffLine>,
}

#[derive(Template)]
#[template(path = "policies.html")]
struct PoliciesPage {
    v: Chrome,
    set_by: Provenance,
    in_force: usize,
    may_set: bool,
    f: PolicyForm,
    checked: Option<Checked>,
    error: Option<String>,
    done: bool,
}

#[derive(serde::Deserialize, Default)]
pub struct DoneQuery {
    #[serde(default)]
    done: Option<String>,
}

async fn policies_page(
    c: &Arc<Console>,
    v: &Visitor,
    form: Option<PolicyForm>,
    checked: Option<Checked>,
    error: Option<String>,
    done: bool,
    status: StatusCode,
) -> Response {
    let ja = v.ja();
    let may_set = v.rights.set_policies;
    match run(c, v, policies::current).await {
        Ok((engine, entry)) => {
            let f = form.unwrap_or_else(|| PolicyForm {
                policies: engine.text().to_string(),
                tests: policies::current_table(entry.as_ref()),
                reason: String::new(),
            });
            let page = PoliciesPage {
                v: v.chrome("アクセス方針", "Access policies"),
                set_by: provenance(entry.as_ref(), ja),
                in_force: engine.len(),
                may_set,
                f,
                checked,
                error,
                done,
            };
            render(v, &page, status)
        }
        Err(e) => super::error_page(v, &e),
    }
}

/// `GET /console/policies`.
pub async fn show(State(c): State<Arc<Console>>, v: Visitor, Query(q): Query<DoneQuery>) -> Response {
    policies_page(&c, &v, None, None, None, q.done.is_some(), StatusCode::OK).await
}

/// `POST /console/policies`: `step=check` runs the table against the proposal and shows the
/// diff; `step=apply` replaces the policies if the table passes (the use case runs it again).
pub async fn submit(State(c): State<Arc<Console>>, v: Visitor, headers: HeaderMap, body: Body) -> Response {
    let Some(form) = browser::form(&c.http, &headers, body).await else { return super::bad_form(&v) };
    let ja = v.ja();
    let f = PolicyForm {
        // The texts as typed (not trimmed line by line: the diff is of what was typed).
        policies: browser::field(&form, "policies").replace("\r\n", "\n"),
        tests: browser::field(&form, "tests").replace("\r\n", "\n"),
        reason: field(&form, "reason"),
    };
    let apply = field(&form, "step") == "apply";
    if f.tests.trim().is_empty() {
        let m = if ja {
            "期待される判定の表（テスト表）を入力してください。表に合格しない方針は適用されません。"
        } else {
            "Enter the table of expected decisions: policies that do not pass it are not applied."
        };
        return policies_page(&c, &v, Some(f), None, Some(m.into()), false, StatusCode::BAD_REQUEST).await;
    }
    if apply && f.reason.is_empty() {
        let m = if ja { "変更の理由を入力してください。" } else { "Say why the policies change." };
        return policies_page(&c, &v, Some(f), None, Some(m.into()), false, StatusCode::BAD_REQUEST).await;
    }
    let (text, tests, reason) = (f.policies.clone(), f.tests.clone(), f.reason.clone());
    let r = run(&c, &v, move |ctx, node| {
        let table = policies::Table::parse(&tests)?;
        let (engine, _) = policies::current(ctx, node)?;
        let diff_of = |proposed: &str| diff_lines(engine.text(), proposed);
        // Checked in any case, so a refusal to apply still shows what differed.
        let checked = match policies::test(ctx, node, Some(&text), &table) {
            Ok((failures, count)) => Some(Checked { cases: table.case.len(), failures, count, diff: diff_of(&text) }),
            Err(e) => return Ok((None, Some(e))),
        };
        if apply {
            if let Err(e) = policies::set(ctx, node, &text, Some(&table), &reason) {
                return Ok((checked, Some(e)));
            }
            return Ok((None, None));
        }
        Ok((checked, None))
    })
    .await;
    let (checked, err) = r.unwrap_or_else(|e| (None, Some(e)));
    match (checked, err) {
        (None, None) => browser::redirect("/console/policies?done=1", v.cookies.clone()),
        (checked, None) => policies_page(&c, &v, Some(f), checked, None, false, StatusCode::OK).await,
        (checked, Some(e)) => {
            let (status, text) = match super::on_form(&v, &e) {
                Ok(x) => x,
                Err(page) => return *page,
            };
            policies_page(&c, &v, Some(f), checked, Some(text), false, status).await
        }
    }
}

/// The rules edit as typed.
#[derive(Default)]
pub struct RulesForm {
    pub rules: String,
    pub reason: String,
}

#[derive(Template)]
#[template(path = "class_rules.html")]
struct RulesPage {
    v: Chrome,
    set_by: Provenance,
    may_set: bool,
    classes: Vec<(String, String)>,
    f: RulesForm,
    diff: Option<Vec<DiffLine>>,
    error: Option<String>,
    done: bool,
}

fn pretty(rules: &mamori_authz::Rules) -> String {
    serde_json::to_string_pretty(rules).unwrap_or_default()
}

async fn rules_page(
    c: &Arc<Console>,
    v: &Visitor,
    form: Option<RulesForm>,
    diff: Option<Vec<DiffLine>>,
    error: Option<String>,
    done: bool,
    status: StatusCode,
) -> Response {
    let ja = v.ja();
    let may_set = v.rights.set_class_rules;
    let r = run(c, v, |ctx, node| Ok((class_rules::current(ctx, node)?, class_rules::current_entry(ctx, node)?))).await;
    match r {
        Ok((rules, entry)) => {
            let page = RulesPage {
                v: v.chrome("情報区分の付与規則", "Information-class rules"),
                set_by: provenance(entry.as_ref(), ja),
                may_set,
                classes: mamori_authz::taxonomy().into_iter().map(|d| (d.code, if ja { d.ja } else { d.en })).collect(),
                f: form.unwrap_or_else(|| RulesForm { rules: pretty(&rules), reason: String::new() }),
                diff,
                error,
                done,
            };
            render(v, &page, status)
        }
        Err(e) => super::error_page(v, &e),
    }
}

/// `GET /console/class-rules`.
pub async fn show_rules(State(c): State<Arc<Console>>, v: Visitor, Query(q): Query<DoneQuery>) -> Response {
    rules_page(&c, &v, None, None, None, q.done.is_some(), StatusCode::OK).await
}

/// `POST /console/class-rules`: `step=check` validates the proposal and shows the diff;
/// `step=apply` replaces the rules (new and changed resources are labelled with them).
pub async fn submit_rules(State(c): State<Arc<Console>>, v: Visitor, headers: HeaderMap, body: Body) -> Response {
    let Some(form) = browser::form(&c.http, &headers, body).await else { return super::bad_form(&v) };
    let ja = v.ja();
    let f = RulesForm { rules: browser::field(&form, "rules").replace("\r\n", "\n"), reason: field(&form, "reason") };
    let apply = field(&form, "step") == "apply";
    if apply && f.reason.is_empty() {
        let m = if ja { "変更の理由を入力してください。" } else { "Say why the rules change." };
        return rules_page(&c, &v, Some(f), None, Some(m.into()), false, StatusCode::BAD_REQUEST).await;
    }
    let (text, reason) = (f.rules.clone(), f.reason.clone());
    let r = run(&c, &v, move |ctx, node| {
        let current = class_rules::current(ctx, node)?;
        let proposed = match class_rules::parse(&text) {
            Ok(p) => p,
            Err(e) => return Ok((None, Some(e))),
        };
        let diff = diff_lines(&pretty(&current), &pretty(&proposed));
        if apply {
            return match class_rules::set(ctx, node, &proposed, &reason) {
                Ok(_) => Ok((None, None)),
                Err(e) => Ok((Some(diff), Some(e))),
            };
        }
        Ok((Some(diff), None))
    })
    .await;
    let (diff, err) = r.unwrap_or_else(|e| (None, Some(e)));
    match (diff, err) {
        (None, None) => browser::redirect("/console/class-rules?done=1", v.cookies.clone()),
        (diff, None) => rules_page(&c, &v, Some(f), diff, None, false, StatusCode::OK).await,
        (diff, Some(e)) => {
            let (status, text) = match super::on_form(&v, &e) {
                Ok(x) => x,
                Err(page) => return *page,
            };
            rules_page(&c, &v, Some(f), diff, Some(text), false, status).await
        }
    }
}
