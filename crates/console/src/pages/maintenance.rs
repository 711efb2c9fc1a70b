//! Remote maintenance (リモートメンテナンス, #26 M1; docs/REMOTE-MAINTENANCE.md): the vendor's
//! contact files a request and later the work report; the institution's approvers see the inbox
//! (requests with every amendment shown, reports to review, reports overdue), approve or refuse,
//! watch a window's activity as it happens and end it at once, accept or return the report; the
//! register of what is maintained remotely. A maintenance account signed in inside its window
//! sees what the window allows. Every act is the use case `mamori_app::maintenance`, the one the
//! CLI and the JSON API call.

use std::sync::Arc;

use askama::Template;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use mamori_app::maintenance::{self, Erasure, Filing, ItemResult, Request, Scope, State as WState, Window};
use mamori_app::{AdminAct, AppError};
use mamori_http::browser;

use super::{field, render, run};
use crate::Console;
use crate::fmt::{instant, local_time};
use crate::visitor::{Chrome, Visitor};

/// The delegable acts with the reader's labels.
fn act_label(name: &str, ja: bool) -> String {
    let (j, e) = match name {
        "read-audit" => ("監査証跡・ログの閲覧", "read the audit trail and logs"),
        "manage-clients" => ("アプリケーションの管理", "manage applications"),
        "set-policies" => ("アクセス方針の変更（二人承認）", "change access policies (two-person)"),
        "set-class-rules" => ("情報区分の規則の変更（二人承認）", "change class rules (two-person)"),
        "rotate-keys" => ("署名鍵の更新", "rotate signing keys"),
        "import" => ("データの取り込み", "import data"),
        "emergency-mode" => ("参照専用モードの切替", "switch emergency read-only mode"),
        other => return other.to_string(),
    };
    format!("{} ({name})", if ja { j } else { e })
}

fn class_label(code: &str, ja: bool) -> String {
    mamori_authz::taxonomy()
        .into_iter()
        .find(|c| c.code == code)
        .map_or_else(|| code.to_string(), |c| format!("{} ({code})", if ja { c.ja } else { c.en }))
}

fn when(micros: i64, ja: bool) -> String {
    local_time(micros.div_euclid(1_000_000), ja)
}

fn state_label(s: WState, ja: bool) -> &'static str {
    let (j, e) = s.label();
    if ja { j } else { e }
}

/// A window as a row.
pub struct Row {
    pub id: String,
    pub vendor: String,
    pub system: String,
    pub start: String,
    pub end: String,
    pub state: &'static str,
    pub state_name: &'static str,
    pub overdue: bool,
}

fn row(w: &Window, ja: bool, overdue: bool) -> Row {
    Row {
        id: w.id.clone(),
        vendor: w.vendor.clone(),
        system: w.system.clone(),
        start: when(w.start, ja),
        end: when(w.end, ja),
        state: state_label(w.state, ja),
        state_name: w.state.name(),
        overdue,
    }
}

#[derive(Template)]
#[template(path = "maintenance.html")]
struct ListPage {
    v: Chrome,
    may_request: bool,
    may_approve: bool,
    inbox: Vec<Row>,
    reports: Vec<Row>,
    overdue: Vec<Row>,
    active: Vec<Row>,
    all: Vec<Row>,
    /// A maintenance account inside its window: what it may do.
    working: Option<WorkingView>,
    done: Option<String>,
}

pub struct WorkingView {
    pub id: String,
    pub acts: Vec<String>,
    pub classes: Vec<String>,
    pub patients: Vec<String>,
    pub read: bool,
    pub write: bool,
}

#[derive(serde::Deserialize, Default)]
pub struct Done {
    #[serde(default)]
    done: Option<String>,
}

fn may_request(v: &Visitor) -> bool {
    v.rights.request_maintenance
}

fn may_approve(v: &Visitor) -> bool {
    v.rights.approve_maintenance
}

/// `GET /console/maintenance`: the inbox and the windows (the institution), the requests and
/// reports of the contact's vendor, or the window a maintenance account works in.
pub async fn list(State(c): State<Arc<Console>>, v: Visitor, Query(q): Query<Done>) -> Response {
    let ja = v.ja();
    let working = v.ctx.window.as_ref().map(|w| WorkingView {
        id: w.id.clone(),
        acts: w.acts.iter().map(|a| act_label(a, ja)).collect(),
        classes: w.classes.iter().map(|k| class_label(k, ja)).collect(),
        patients: w.patients.iter().cloned().collect(),
        read: w.read,
        write: w.write,
    });
    if !may_request(&v) && !may_approve(&v) {
        if working.is_none() {
            return super::missing(&v);
        }
        let page = ListPage {
            v: v.chrome("保守作業", "Maintenance"),
            may_request: false,
            may_approve: false,
            inbox: Vec::new(),
            reports: Vec::new(),
            overdue: Vec::new(),
            active: Vec::new(),
            all: Vec::new(),
            working,
            done: None,
        };
        return render(&v, &page, StatusCode::OK);
    }
    let r = run(&c, &v, |ctx, node| {
        let all = maintenance::list(ctx, node)?;
        let due: Vec<String> = maintenance::overdue_among(ctx, node, &all).into_iter().map(|w| w.id.clone()).collect();
        Ok((all, due))
    })
    .await;
    let (all, due) = match r {
        Ok(x) => x,
        Err(e) => return super::error_page(&v, &e),
    };
    let pick = |f: &dyn Fn(&Window) -> bool| -> Vec<Row> {
        all.iter().filter(|w| f(w)).map(|w| row(w, ja, due.contains(&w.id))).collect()
    };
    let page = ListPage {
        v: v.chrome("保守作業", "Maintenance"),
        may_request: may_request(&v),
        may_approve: may_approve(&v),
        inbox: pick(&|w| w.state == WState::Requested),
        reports: pick(&|w| w.state == WState::Reported),
        overdue: pick(&|w| due.contains(&w.id)),
        active: pick(&|w| matches!(w.state, WState::Approved | WState::Open)),
        all: pick(&|_| true),
        working,
        done: q.done,
    };
    render(&v, &page, StatusCode::OK)
}

// ---------------------------------------------------------------------------------------------
// The request form

/// What the person typed into the request form.
#[derive(Default, Clone)]
pub struct RequestForm {
    pub vendor: String,
    pub accounts: String,
    pub system: String,
    pub purpose: String,
    pub items: String,
    pub start: String,
    pub end: String,
    pub acts: Vec<String>,
    pub classes: Vec<String>,
    pub patients: String,
    pub read: bool,
    pub write: bool,
    pub sources: String,
}

pub struct Choice {
    pub value: String,
    pub label: String,
    pub checked: bool,
}

#[derive(Template)]
#[template(path = "maintenance_form.html")]
struct FormPage {
    v: Chrome,
    f: RequestForm,
    vendors: Vec<(String, String)>,
    acts: Vec<Choice>,
    classes: Vec<Choice>,
    max_hours: u32,
    error: Option<String>,
    /// Changing the request of this window (the form posts to its `amend`).
    amend: Option<String>,
    note: String,
}

async fn form_page(
    c: &Arc<Console>,
    v: &Visitor,
    f: RequestForm,
    error: Option<String>,
    status: StatusCode,
) -> Response {
    change_page(c, v, f, None, String::new(), error, status).await
}

async fn change_page(
    c: &Arc<Console>,
    v: &Visitor,
    f: RequestForm,
    amend: Option<String>,
    note: String,
    error: Option<String>,
    status: StatusCode,
) -> Response {
    if !may_request(v) {
        return super::missing(v);
    }
    let ja = v.ja();
    let vendors = match run(c, v, maintenance::vendors).await {
        Ok(vs) => vs.into_iter().map(|x| (x.id, x.name)).collect(),
        Err(e) => return super::error_page(v, &e),
    };
    let acts = maintenance::DELEGABLE_ACTS
        .iter()
        .map(|a| Choice {
            value: a.name().to_string(),
            label: act_label(a.name(), ja),
            checked: f.acts.iter().any(|x| x == a.name()),
        })
        .collect();
    let classes = mamori_authz::taxonomy()
        .into_iter()
        .map(|k| Choice {
            checked: f.classes.contains(&k.code),
            label: format!("{} ({})", if ja { &k.ja } else { &k.en }, k.code),
            value: k.code,
        })
        .collect();
    let page = FormPage {
        v: if amend.is_some() {
            v.chrome("保守作業の申請の変更", "Change a maintenance request")
        } else {
            v.chrome("保守作業の申請", "Request a maintenance window")
        },
        f,
        vendors,
        acts,
        classes,
        max_hours: c.node.config.maintenance.max_hours,
        error,
        amend,
        note,
    };
    render(v, &page, status)
}

/// `GET /console/maintenance/new`.
pub async fn new(State(c): State<Arc<Console>>, v: Visitor) -> Response {
    form_page(&c, &v, RequestForm::default(), None, StatusCode::OK).await
}

/// `GET /console/maintenance/{id}/edit`: the request of a window awaiting approval, to change.
pub async fn edit(State(c): State<Arc<Console>>, v: Visitor, Path(id): Path<String>) -> Response {
    if !may_request(&v) {
        return super::missing(&v);
    }
    let i = id.clone();
    let w = match run(&c, &v, move |ctx, node| maintenance::show(ctx, node, &i)).await {
        Ok(w) => w,
        Err(e) => return super::error_page(&v, &e),
    };
    let f = RequestForm {
        vendor: w.vendor.clone(),
        accounts: w.accounts.join(", "),
        system: w.system.clone(),
        purpose: w.purpose.clone(),
        items: w.items.join("\n"),
        start: crate::fmt::local_input(w.start),
        end: crate::fmt::local_input(w.end),
        acts: w.scope.acts.clone(),
        classes: w.scope.classes.clone(),
        patients: w.scope.patients.join(", "),
        read: w.scope.read,
        write: w.scope.write,
        sources: w.scope.sources.join(", "),
    };
    change_page(&c, &v, f, Some(id), String::new(), None, StatusCode::OK).await
}

fn list_of(s: &str) -> Vec<String> {
    s.split([',', '\n', ' ', '、']).map(str::trim).filter(|x| !x.is_empty()).map(str::to_string).collect()
}

fn all_of(form: &[(String, String)], k: &str) -> Vec<String> {
    form.iter().filter(|(n, _)| n == k).map(|(_, v)| v.trim().to_string()).filter(|x| !x.is_empty()).collect()
}

fn read_form(form: &[(String, String)]) -> RequestForm {
    RequestForm {
        vendor: field(form, "vendor"),
        accounts: field(form, "accounts"),
        system: field(form, "system"),
        purpose: field(form, "purpose"),
        items: field(form, "items"),
        start: field(form, "start"),
        end: field(form, "end"),
        acts: all_of(form, "act"),
        classes: all_of(form, "class"),
        patients: field(form, "patients"),
        read: field(form, "read") == "on",
        write: field(form, "write") == "on",
        sources: field(form, "sources"),
    }
}

/// The typed form as a request; a time that is not one is the reader's error.
fn to_request(f: &RequestForm, ja: bool) -> Result<Request, String> {
    let time = |s: &str, which: (&str, &str)| {
        crate::fmt::local_input_micros(s).ok_or_else(|| {
            if ja {
                format!("{}の日時を入力してください（例 2026-12-06 09:00）。", which.0)
            } else {
                format!("Enter the {} date and time (e.g. 2026-12-06 09:00).", which.1)
            }
        })
    };
    Ok(Request {
        vendor: f.vendor.clone(),
        accounts: list_of(&f.accounts),
        system: f.system.clone(),
        purpose: f.purpose.clone(),
        items: f.items.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect(),
        start: time(&f.start, ("開始", "start"))?,
        end: time(&f.end, ("終了", "end"))?,
        scope: Scope {
            acts: f.acts.clone(),
            classes: f.classes.clone(),
            patients: list_of(&f.patients),
            read: f.read,
            write: f.write,
            sources: list_of(&f.sources),
        },
    })
}

/// `POST /console/maintenance`: files the request.
pub async fn file(State(c): State<Arc<Console>>, v: Visitor, headers: HeaderMap, body: Body) -> Response {
    let Some(form) = browser::form(&c.http, &headers, body).await else { return super::bad_form(&v) };
    let f = read_form(&form);
    let r = match to_request(&f, v.ja()) {
        Ok(r) => r,
        Err(m) => return form_page(&c, &v, f, Some(m), StatusCode::BAD_REQUEST).await,
    };
    match run(&c, &v, move |ctx, node| maintenance::request(ctx, node, r)).await {
        Ok(w) => browser::redirect(&format!("/console/maintenance/{}?done=requested", w.id), v.cookies.clone()),
        Err(e) => {
            let (status, text) = match super::on_form(&v, &e) {
                Ok(x) => x,
                Err(page) => return *page,
            };
            form_page(&c, &v, f, Some(text), status).await
        }
    }
}

// ---------------------------------------------------------------------------------------------
// One window

pub struct Line {
    pub by: String,
    pub at: String,
    pub note: String,
}

pub struct AmendView {
    pub line: Line,
    pub changes: Vec<(String, String, String)>,
}

pub struct ActivityView {
    pub index: u64,
    pub time: String,
    pub actor: String,
    pub action: String,
    pub outcome: String,
    pub what: String,
    pub unplanned: Option<String>,
}

pub struct ItemView {
    pub n: usize,
    pub text: String,
    /// The filed result (done, text).
    pub result: Option<(bool, String)>,
    /// What the form holds (on an error, what was typed).
    pub typed_done: bool,
    pub typed: String,
}

pub struct ReviewView {
    pub accepted: bool,
    pub line: Line,
    pub sha256: Option<String>,
}

#[derive(Template)]
#[template(path = "maintenance_window.html")]
struct WindowPage {
    v: Chrome,
    id: String,
    vendor: String,
    system: String,
    purpose: String,
    start: String,
    end: String,
    state: &'static str,
    state_name: &'static str,
    accounts: String,
    acts: Vec<String>,
    classes: Vec<String>,
    patients: Vec<String>,
    read: bool,
    write: bool,
    sources: String,
    requested: Line,
    approvals: Vec<Line>,
    approvals_needed: u8,
    refusal: Option<Line>,
    closing: Option<String>,
    amendments: Vec<AmendView>,
    activity: Vec<ActivityView>,
    unplanned: usize,
    items: Vec<ItemView>,
    erasures: Vec<[String; 5]>,
    report_note: String,
    filed: Option<Line>,
    reviews: Vec<ReviewView>,
    overdue: bool,
    may_decide: bool,
    may_withdraw: bool,
    may_amend: bool,
    may_close: bool,
    may_report: bool,
    may_review: bool,
    accepted: bool,
    error: Option<String>,
    done: Option<String>,
    note: String,
}

/// What a failed form sends back to the page.
#[derive(Default)]
struct Typed {
    error: Option<String>,
    note: String,
    results: Vec<(bool, String)>,
    erasures: Vec<[String; 5]>,
    report_note: String,
}

async fn window_page(
    c: &Arc<Console>,
    v: &Visitor,
    id: String,
    typed: Typed,
    done: Option<String>,
    status: StatusCode,
) -> Response {
    let ja = v.ja();
    let r = run(c, v, move |ctx, node| {
        let d = maintenance::detail(ctx, node, &id)?;
        Ok((d.window, d.amendments, d.activity, ctx.now().0, node.config.maintenance))
    })
    .await;
    let (w, amendments, activity, now, settings) = match r {
        Ok(x) => x,
        Err(e) => return super::error_page(v, &e),
    };
    let line = |d: &maintenance::Decision| Line { by: d.by.clone(), at: when(d.at, ja), note: d.note.clone() };
    let approver = may_approve(v);
    let requester = may_request(v);
    let items = w
        .items
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let filed = w.report.as_ref().and_then(|r| r.items.iter().find(|x| x.item == i + 1));
            let typed_back = typed.results.get(i).cloned();
            ItemView {
                n: i + 1,
                text: text.clone(),
                result: filed.map(|x| (x.done, x.result.clone())),
                typed_done: typed_back.as_ref().is_some_and(|t| t.0),
                typed: typed_back.map(|t| t.1).unwrap_or_default(),
            }
        })
        .collect();
    let mut erasures = typed.erasures;
    erasures.resize_with(erasures.len().max(2), Default::default);
    let unplanned = activity.iter().filter(|a| a.unplanned.is_some()).count();
    let page = WindowPage {
        v: v.chrome("保守作業の時間枠", "Maintenance window"),
        id: w.id.clone(),
        vendor: w.vendor.clone(),
        system: w.system.clone(),
        purpose: w.purpose.clone(),
        start: when(w.start, ja),
        end: when(w.end, ja),
        state: state_label(w.state, ja),
        state_name: w.state.name(),
        accounts: w.accounts.join(", "),
        acts: w.scope.acts.iter().map(|a| act_label(a, ja)).collect(),
        classes: w.scope.classes.iter().map(|k| class_label(k, ja)).collect(),
        patients: w.scope.patients.clone(),
        read: w.scope.read,
        write: w.scope.write,
        sources: w.scope.sources.join(", "),
        requested: Line { by: w.requested_by.clone(), at: when(w.requested_at, ja), note: String::new() },
        approvals: w.approvals.iter().map(line).collect(),
        approvals_needed: w.approvals_needed,
        refusal: w.refusal.as_ref().map(line),
        closing: w.closing.as_ref().map(|c| {
            let how = match (c.early, ja) {
                (true, true) => "早期終了",
                (true, false) => "closed early",
                (false, true) => "終了時刻に終了",
                (false, false) => "ended at its end time",
            };
            let revoked = if ja {
                format!("セッション・トークン {} 件を失効", c.revoked)
            } else {
                format!("{} sessions and tokens ended", c.revoked)
            };
            format!("{} — {how} ({}): {} · {revoked}", when(c.at, ja), c.by, c.reason)
        }),
        amendments: amendments
            .iter()
            .map(|a| AmendView {
                line: line(&a.decision),
                changes: a.changes.iter().map(|c| (c.field.to_string(), c.before.clone(), c.after.clone())).collect(),
            })
            .collect(),
        activity: activity
            .iter()
            .map(|a| ActivityView {
                index: a.index,
                time: instant(&a.time, ja),
                actor: a.actor.clone(),
                action: a.action.clone(),
                outcome: a.outcome.clone(),
                what: a
                    .resources
                    .first()
                    .cloned()
                    .or_else(|| a.detail.clone())
                    .unwrap_or_default()
                    .chars()
                    .take(160)
                    .collect(),
                unplanned: a.unplanned.clone(),
            })
            .collect(),
        unplanned,
        items,
        erasures,
        report_note: typed.report_note,
        filed: w.report.as_ref().map(|r| Line {
            by: r.filed_by.clone(),
            at: when(r.filed_at, ja),
            note: r.note.clone(),
        }),
        reviews: w
            .reviews
            .iter()
            .map(|r| ReviewView {
                accepted: r.accepted,
                line: Line { by: r.by.clone(), at: when(r.at, ja), note: r.note.clone() },
                sha256: r.sha256.clone(),
            })
            .collect(),
        overdue: w.report_overdue(&settings, now),
        may_decide: approver && w.state == WState::Requested,
        may_withdraw: requester && (w.state == WState::Requested || (w.state == WState::Approved && now < w.start)),
        may_amend: requester && w.state == WState::Requested,
        may_close: approver && matches!(w.state, WState::Approved | WState::Open),
        may_report: requester && matches!(w.state, WState::Closed | WState::Returned),
        may_review: approver && w.state == WState::Reported,
        accepted: w.state == WState::Accepted,
        error: typed.error,
        done,
        note: typed.note,
    };
    render(v, &page, status)
}

/// `GET /console/maintenance/{id}`: the window — request, amendments, decisions, the live
/// activity, the report — with the acts the person may take.
pub async fn show(
    State(c): State<Arc<Console>>,
    v: Visitor,
    Path(id): Path<String>,
    Query(q): Query<Done>,
) -> Response {
    if !may_request(&v) && !may_approve(&v) {
        return super::missing(&v);
    }
    window_page(&c, &v, id, Typed::default(), q.done, StatusCode::OK).await
}

fn report_of(form: &[(String, String)], items: usize) -> (Filing, Vec<(bool, String)>, Vec<[String; 5]>) {
    let mut results = Vec::new();
    let mut typed = Vec::new();
    for n in 1..=items {
        let done = field(form, &format!("done{n}")) == "on";
        let text = field(form, &format!("result{n}"));
        typed.push((done, text.clone()));
        results.push(ItemResult { item: n, done, result: text });
    }
    let mut erasures = Vec::new();
    let mut typed_erasures = Vec::new();
    for k in 1..=10 {
        let row: [String; 5] = ["what", "where", "how", "when", "by"].map(|f| field(form, &format!("{f}{k}")));
        if form.iter().all(|(n, _)| n != &format!("what{k}")) {
            break;
        }
        typed_erasures.push(row.clone());
        if row.iter().all(String::is_empty) {
            continue;
        }
        let [what, place, how, when, by] = row;
        erasures.push(Erasure { what, place, how, when, by });
    }
    (Filing { items: results, erasures, note: field(form, "report_note") }, typed, typed_erasures)
}

/// `POST /console/maintenance/{id}/{act}`: approve, refuse, withdraw, close, report, accept,
/// return.
pub async fn act(
    State(c): State<Arc<Console>>,
    v: Visitor,
    Path((id, act)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(form) = browser::form(&c.http, &headers, body).await else { return super::bad_form(&v) };
    let note = field(&form, "note");
    let mut typed = Typed { note: note.clone(), ..Typed::default() };
    let (i, a) = (id.clone(), act.clone());
    if act == "amend" {
        let f = read_form(&form);
        let r = match to_request(&f, v.ja()) {
            Ok(r) => r,
            Err(m) => return change_page(&c, &v, f, Some(id), note, Some(m), StatusCode::BAD_REQUEST).await,
        };
        let why = note.clone();
        return match run(&c, &v, move |ctx, node| maintenance::amend(ctx, node, &i, r, &why)).await {
            Ok(_) => browser::redirect(&format!("/console/maintenance/{id}?done=amended"), v.cookies.clone()),
            Err(e) => {
                let (status, text) = match super::on_form(&v, &e) {
                    Ok(x) => x,
                    Err(page) => return *page,
                };
                change_page(&c, &v, f, Some(id), note, Some(text), status).await
            }
        };
    }
    let r: Result<&'static str, AppError> = if act == "report" {
        // The form has a result field per planned item (the use case checks every one is there).
        let items = (1..).take_while(|n| form.iter().any(|(k, _)| k == &format!("result{n}"))).count();
        let (filing, results, erasures) = report_of(&form, items);
        (typed.results, typed.erasures, typed.report_note) = (results, erasures, filing.note.clone());
        run(&c, &v, move |ctx, node| maintenance::report(ctx, node, &i, filing).map(|_| "reported")).await
    } else {
        run(&c, &v, move |ctx, node| match a.as_str() {
            "approve" => maintenance::approve(ctx, node, &i, &note).map(|_| "approved"),
            "refuse" => maintenance::refuse(ctx, node, &i, &note).map(|_| "refused"),
            "withdraw" => maintenance::withdraw(ctx, node, &i, &note).map(|_| "withdrawn"),
            "close" => maintenance::close(ctx, node, &i, &note).map(|_| "closed"),
            "accept" => maintenance::accept(ctx, node, &i, &note).map(|_| "accepted"),
            "return" => maintenance::send_back(ctx, node, &i, &note).map(|_| "returned"),
            _ => Err(AppError::NotFound(format!("no maintenance window `{i}`"))),
        })
        .await
    };
    match r {
        Ok(done) => browser::redirect(&format!("/console/maintenance/{id}?done={done}"), v.cookies.clone()),
        Err(e) => {
            let (status, text) = match super::on_form(&v, &e) {
                Ok(x) => x,
                Err(page) => return *page,
            };
            typed.error = Some(text);
            window_page(&c, &v, id, typed, None, status).await
        }
    }
}

/// `GET /console/maintenance/{id}/document`: the report document (HTML, Japanese with English)
/// — once accepted, the one whose SHA-256 is anchored in the audit trail.
pub async fn document(State(c): State<Arc<Console>>, v: Visitor, Path(id): Path<String>) -> Response {
    match run(&c, &v, move |ctx, node| maintenance::current_document(ctx, node, &id)).await {
        Ok((doc, sha, _)) => browser::html(StatusCode::OK, maintenance::to_html(&doc, &sha), &v.cookies),
        Err(e) => super::error_page(&v, &e),
    }
}

// ---------------------------------------------------------------------------------------------
// The register

pub struct RegisterRow {
    pub system: String,
    pub vendor: String,
    pub note: String,
    pub windows: usize,
    pub last: String,
    pub recorded: bool,
}

#[derive(Template)]
#[template(path = "maintenance_register.html")]
struct RegisterPage {
    v: Chrome,
    rows: Vec<RegisterRow>,
    vendors: Vec<(String, String)>,
    /// Every vendor in full (保守事業者): contract, contact, accounts, sources.
    vendor_list: Vec<maintenance::Vendor>,
    may_edit: bool,
    system: String,
    vendor: String,
    note: String,
    error: Option<String>,
    saved: bool,
}

#[derive(serde::Deserialize, Default)]
pub struct Saved {
    #[serde(default)]
    saved: Option<String>,
}

async fn register_page(
    c: &Arc<Console>,
    v: &Visitor,
    typed: (String, String, String),
    error: Option<String>,
    saved: bool,
    status: StatusCode,
) -> Response {
    let ja = v.ja();
    let r = run(c, v, |ctx, node| Ok((maintenance::register(ctx, node)?, maintenance::vendors(ctx, node)?))).await;
    let (entries, vendors) = match r {
        Ok(x) => x,
        Err(e) => return super::error_page(v, &e),
    };
    let page = RegisterPage {
        v: v.chrome("リモート保守の台帳", "Remote-maintenance register"),
        rows: entries
            .into_iter()
            .map(|e| RegisterRow {
                system: e.system,
                vendor: e.vendor,
                note: e.note,
                windows: e.windows,
                last: e.last.map_or_else(|| "—".into(), |t| when(t, ja)),
                recorded: e.recorded,
            })
            .collect(),
        vendors: vendors.iter().map(|x| (x.id.clone(), x.name.clone())).collect(),
        vendor_list: vendors,
        may_edit: may_approve(v),
        system: typed.0,
        vendor: typed.1,
        note: typed.2,
        error,
        saved,
    };
    render(v, &page, status)
}

/// `GET /console/maintenance/register`.
pub async fn register(State(c): State<Arc<Console>>, v: Visitor, Query(q): Query<Saved>) -> Response {
    if !may_approve(&v) {
        return super::missing(&v);
    }
    register_page(&c, &v, Default::default(), None, q.saved.is_some(), StatusCode::OK).await
}

/// `POST /console/maintenance/register`: records (or removes) an entry.
pub async fn set_register(State(c): State<Arc<Console>>, v: Visitor, headers: HeaderMap, body: Body) -> Response {
    let Some(form) = browser::form(&c.http, &headers, body).await else { return super::bad_form(&v) };
    let (system, vendor, note) = (field(&form, "system"), field(&form, "vendor"), field(&form, "note"));
    let remove = field(&form, "remove") == "1";
    let (s, vd, n) = (system.clone(), vendor.clone(), note.clone());
    match run(&c, &v, move |ctx, node| maintenance::set_register(ctx, node, &s, &vd, &n, remove)).await {
        Ok(()) => browser::redirect("/console/maintenance/register?saved=1", v.cookies.clone()),
        Err(e) => {
            let (status, text) = match super::on_form(&v, &e) {
                Ok(x) => x,
                Err(page) => return *page,
            };
            register_page(&c, &v, (system, vendor, note), Some(text), false, status).await
        }
    }
}

/// Whether the visitor may request and approve maintenance (for the menu): decided once each.
pub(crate) fn in_menu(ctx: &mamori_app::Ctx, node: &mamori_app::Node) -> (bool, bool) {
    (ctx.may(node, AdminAct::RequestMaintenance), ctx.may(node, AdminAct::ApproveMaintenance))
}
