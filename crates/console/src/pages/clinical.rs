//! The clinicians' pages (医師・看護師): patient search, a patient's record with each record's
//! versions (入力者, 確定, hash), the proxy-entry (代行入力) approval queue, and break-glass with
//! a mandatory reason. Each calls `mamori_app::clinical` as the signed-in person, so every read
//! is decided and audited exactly as the same person's API read; a patient they may not see is
//! "not found", word for word as one that does not exist.

use std::sync::Arc;

use askama::Template;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use mamori_app::clinical;
use mamori_http::browser;
use mamori_records::{EntryStatus, Method, VersionRecord};
use serde_json::Value;

use super::{error_page, field, not_found, on_form, render, run};
use crate::Console;
use crate::fmt::local_time;
use crate::visitor::{Chrome, Visitor};

/// One patient in a list.
pub struct PatientRow {
    pub id: String,
    pub names: String,
    pub birth: String,
    pub gender: String,
    pub identifiers: String,
}

fn text_of(v: &Value, path: &[&str]) -> Option<String> {
    let mut cur = v;
    for p in path {
        cur = cur.get(*p)?;
    }
    cur.as_str().map(str::to_string)
}

fn patient_row(v: &VersionRecord, ja: bool) -> PatientRow {
    let body: Value = v.body.as_deref().and_then(|b| serde_json::from_str(b).ok()).unwrap_or(Value::Null);
    let label = mamori_records::patients::label(v.body.as_deref());
    let birth = text_of(&body, &["birthDate"]).unwrap_or_default();
    let names = label.strip_suffix(birth.as_str()).unwrap_or(&label).trim().to_string();
    let gender = text_of(&body, &["gender"]).unwrap_or_default();
    let gender = match (gender.as_str(), ja) {
        ("male", true) => "男性".to_string(),
        ("female", true) => "女性".to_string(),
        ("other", true) => "その他".to_string(),
        ("unknown", true) => "不明".to_string(),
        (g, _) => g.to_string(),
    };
    let identifiers = body
        .get("identifier")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|i| i.get("value").and_then(Value::as_str))
        .collect::<Vec<_>>()
        .join(", ");
    let era = ja.then(|| calendar_date(&birth)).flatten().and_then(crate::fmt::era_date);
    let birth = match era {
        Some(e) => format!("{birth}（{e}）"),
        None => birth,
    };
    PatientRow { id: v.id.to_string(), names, birth, gender, identifiers }
}

/// `YYYY-MM-DD` as a date.
fn calendar_date(s: &str) -> Option<time::Date> {
    let mut it = s.splitn(3, '-');
    let (y, m, d) = (it.next()?.parse().ok()?, it.next()?.parse::<u8>().ok()?, it.next()?.parse().ok()?);
    time::Date::from_calendar_date(y, time::Month::try_from(m).ok()?, d).ok()
}

#[derive(Template)]
#[template(path = "patients.html")]
struct Patients {
    v: Chrome,
    q: String,
    searched: bool,
    rows: Vec<PatientRow>,
    error: Option<String>,
}

#[derive(serde::Deserialize, Default)]
pub struct SearchQuery {
    #[serde(default)]
    q: String,
}

/// `GET /console/patients?q=`: search by kanji, kana, id, identifier or birth date.
pub async fn patients(State(c): State<Arc<Console>>, v: Visitor, Query(q): Query<SearchQuery>) -> Response {
    if !v.rights.clinical {
        return not_found(v).await;
    }
    let text = q.q.trim().to_string();
    let mut page = Patients {
        v: v.chrome("患者検索", "Find a patient"),
        q: text.clone(),
        searched: !text.is_empty(),
        rows: Vec::new(),
        error: None,
    };
    if text.is_empty() {
        return render(&v, &page, StatusCode::OK);
    }
    let ja = v.ja();
    match run(&c, &v, move |ctx, node| clinical::find_patients(ctx, node, &text)).await {
        Ok(found) => {
            page.rows = found.iter().map(|p| patient_row(p, ja)).collect();
            render(&v, &page, StatusCode::OK)
        }
        Err(e) => match on_form(&v, &e) {
            Ok((status, text)) => {
                page.error = Some(text);
                render(&v, &page, status)
            }
            Err(r) => *r,
        },
    }
}

/// One record in a list.
pub struct RecordRow {
    pub rtype: String,
    pub id: String,
    pub summary: String,
    pub updated: String,
    pub version: u64,
    pub pending: bool,
    pub entered_by: String,
}

/// What a record says, in a line: its code's text or display, a value, a date.
fn summary(body: Option<&str>) -> String {
    let Some(v) = body.and_then(|b| serde_json::from_str::<Value>(b).ok()) else { return String::new() };
    let concept = |c: &Value| {
        c.get("text").and_then(Value::as_str).map(str::to_string).or_else(|| {
            c.get("coding")?
                .as_array()?
                .iter()
                .find_map(|x| {
                    x.get("display").and_then(Value::as_str).or_else(|| x.get("code").and_then(Value::as_str))
                })
                .map(str::to_string)
        })
    };
    let mut parts: Vec<String> = Vec::new();
    for key in ["code", "medicationCodeableConcept", "vaccineCode", "type", "category"] {
        let c = v.get(key);
        let c = c.and_then(|c| if c.is_array() { c.get(0) } else { Some(c) });
        if let Some(t) = c.and_then(concept) {
            parts.push(t);
            break;
        }
    }
    if let Some(q) = v.get("valueQuantity") {
        let value = q.get("value").map(|x| x.to_string()).unwrap_or_default();
        let unit = q.get("unit").or_else(|| q.get("code")).and_then(Value::as_str).unwrap_or("");
        parts.push(format!("{value} {unit}").trim().to_string());
    } else if let Some(s) = v.get("valueString").and_then(Value::as_str) {
        parts.push(s.chars().take(80).collect());
    } else if let Some(t) = v.get("valueCodeableConcept").and_then(concept) {
        parts.push(t);
    }
    for key in ["effectiveDateTime", "onsetDateTime", "authoredOn", "recordedDate", "occurrenceDateTime", "issued"] {
        if let Some(d) = v.get(key).and_then(Value::as_str) {
            parts.push(d.chars().take(10).collect());
            break;
        }
    }
    if let Some(s) = v.get("status").and_then(Value::as_str)
        && parts.len() < 2
    {
        parts.push(s.to_string());
    }
    parts.join(" · ")
}

fn record_row(r: &VersionRecord, ja: bool) -> RecordRow {
    RecordRow {
        rtype: r.resource_type.to_string(),
        id: r.id.to_string(),
        summary: summary(r.body.as_deref()),
        updated: local_time(r.last_updated.0.div_euclid(1_000_000), ja),
        version: r.version,
        pending: matches!(r.status, EntryStatus::Pending { .. }),
        entered_by: r.entered_by.clone(),
    }
}

#[derive(Template)]
#[template(path = "patient.html")]
struct PatientPage {
    v: Chrome,
    patient: PatientRow,
    groups: Vec<(String, Vec<RecordRow>)>,
    may_break_glass: bool,
    under_break_glass: bool,
}

/// `GET /console/patients/{id}`: the patient's record as the person may see it.
pub async fn patient(State(c): State<Arc<Console>>, v: Visitor, Path(id): Path<String>) -> Response {
    if !v.rights.clinical {
        return not_found(v).await;
    }
    let ja = v.ja();
    match run(&c, &v, move |ctx, node| clinical::patient_record(ctx, node, &id)).await {
        Ok(mamori_app::clinical::PatientRecord { patient: p, by_type: groups, under_break_glass }) => {
            let page = PatientPage {
                v: v.chrome("患者の記録", "Patient record"),
                patient: patient_row(&p, ja),
                groups: groups.into_iter().map(|(t, rs)| (t, rs.iter().map(|r| record_row(r, ja)).collect())).collect(),
                may_break_glass: v.rights.break_glass && !under_break_glass,
                under_break_glass,
            };
            render(&v, &page, StatusCode::OK)
        }
        Err(e) => error_page(&v, &e),
    }
}

/// One version in a record's history.
pub struct VersionRow {
    pub version: u64,
    pub at: String,
    pub method: &'static str,
    pub entered_by: String,
    pub status: String,
    pub sha256: String,
}

#[derive(Template)]
#[template(path = "record.html")]
struct RecordPage {
    v: Chrome,
    reference: String,
    patient: Option<String>,
    versions: Vec<VersionRow>,
    body: String,
}

fn method_label(m: Method, ja: bool) -> &'static str {
    match (m, ja) {
        (Method::Create, true) => "作成",
        (Method::Update | Method::Patch, true) => "更新",
        (Method::Delete, true) => "削除",
        (Method::Approve, true) => "確定（承認）",
        (Method::Create, false) => "created",
        (Method::Update | Method::Patch, false) => "updated",
        (Method::Delete, false) => "deleted",
        (Method::Approve, false) => "approved",
    }
}

/// `GET /console/records/{type}/{id}`: every version the person may see, with 入力者, whether it
/// is final (確定) or awaits its author, and its hash; the newest version's content.
pub async fn record(State(c): State<Arc<Console>>, v: Visitor, Path((rtype, id)): Path<(String, String)>) -> Response {
    if !v.rights.clinical {
        return not_found(v).await;
    }
    let ja = v.ja();
    let reference = format!("{rtype}/{id}");
    match run(&c, &v, move |ctx, node| clinical::versions(ctx, node, &rtype, &id)).await {
        Ok(versions) => {
            let body = versions
                .first()
                .and_then(|n| n.body.as_deref())
                .and_then(|b| serde_json::from_str::<Value>(b).ok())
                .and_then(|b| serde_json::to_string_pretty(&b).ok())
                .unwrap_or_default();
            let rows = versions
                .iter()
                .map(|r| VersionRow {
                    version: r.version,
                    at: local_time(r.last_updated.0.div_euclid(1_000_000), ja),
                    method: method_label(r.method, ja),
                    entered_by: r.entered_by.clone(),
                    status: match (&r.status, ja) {
                        (EntryStatus::Final, true) => format!("確定（確定者: {}）", r.entered_by),
                        (EntryStatus::Final, false) => format!("final (attested by {})", r.entered_by),
                        (EntryStatus::Pending { author }, true) => format!("承認待ち（承認者: {author}）"),
                        (EntryStatus::Pending { author }, false) => format!("awaiting approval by {author}"),
                    },
                    sha256: hex::encode(r.content_sha256),
                })
                .collect();
            let page = RecordPage {
                v: v.chrome("記録の版", "Record versions"),
                patient: versions
                    .first()
                    .and_then(|r| r.patient.clone())
                    .and_then(|p| p.strip_prefix("Patient/").map(str::to_string)),
                reference,
                versions: rows,
                body,
            };
            render(&v, &page, StatusCode::OK)
        }
        Err(e) => error_page(&v, &e),
    }
}

#[derive(Template)]
#[template(path = "approvals.html")]
struct Approvals {
    v: Chrome,
    rows: Vec<RecordRow>,
    approved: bool,
    error: Option<(String, String)>,
}

#[derive(serde::Deserialize, Default)]
pub struct ApprovalsQuery {
    #[serde(default)]
    approved: Option<String>,
}

async fn approvals_page(
    c: &Arc<Console>,
    v: &Visitor,
    approved: bool,
    error: Option<(String, String)>,
    status: StatusCode,
) -> Response {
    let ja = v.ja();
    match run(c, v, clinical::my_pending).await {
        Ok(pending) => {
            let page = Approvals {
                v: v.chrome("代行入力の承認", "Approve proxy entries"),
                rows: pending.iter().map(|r| record_row(r, ja)).collect(),
                approved,
                error,
            };
            render(v, &page, status)
        }
        Err(e) => error_page(v, &e),
    }
}

/// `GET /console/approvals`: proxy entries (代行入力) awaiting the person's approval.
pub async fn approvals(State(c): State<Arc<Console>>, v: Visitor, Query(q): Query<ApprovalsQuery>) -> Response {
    if !v.rights.clinical {
        return not_found(v).await;
    }
    approvals_page(&c, &v, q.approved.is_some(), None, StatusCode::OK).await
}

/// `POST /console/approvals/{type}/{id}`: approve (確定) one.
pub async fn approve(
    State(c): State<Arc<Console>>,
    v: Visitor,
    Path((rtype, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if browser::form(&c.http, &headers, body).await.is_none() {
        return super::bad_form(&v);
    }
    let reference = format!("{rtype}/{id}");
    match run(&c, &v, move |ctx, node| clinical::approve(ctx, node, &rtype, &id)).await {
        Ok(_) => browser::redirect("/console/approvals?approved=1", v.cookies.clone()),
        Err(e) => match on_form(&v, &e) {
            Ok((status, text)) => approvals_page(&c, &v, false, Some((reference, text)), status).await,
            Err(r) => *r,
        },
    }
}

#[derive(Template)]
#[template(path = "break_glass_form.html")]
struct GlassForm {
    v: Chrome,
    patient: String,
    reason: String,
    minutes: u32,
    error: Option<String>,
}

const DURATIONS: [u32; 4] = [30, 60, 120, 240];

/// `GET /console/patients/{id}/break-glass`: the form (reason required).
pub async fn break_glass_form(v: Visitor, Path(id): Path<String>) -> Response {
    if !v.rights.break_glass {
        return not_found(v).await;
    }
    let page = GlassForm {
        v: v.chrome("非常時アクセス（ブレークグラス）", "Break-glass access"),
        patient: id.chars().take(64).collect(),
        reason: String::new(),
        minutes: 60,
        error: None,
    };
    render(&v, &page, StatusCode::OK)
}

/// `POST /console/patients/{id}/break-glass` with `reason` and `minutes`.
pub async fn break_glass(
    State(c): State<Arc<Console>>,
    v: Visitor,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(form) = browser::form(&c.http, &headers, body).await else { return super::bad_form(&v) };
    let reason = field(&form, "reason");
    let minutes = field(&form, "minutes").parse::<u32>().ok().filter(|m| DURATIONS.contains(m));
    let (patient, why) = (id.clone(), reason.clone());
    let result = match minutes {
        Some(m) => run(&c, &v, move |ctx, node| clinical::break_glass(ctx, node, &patient, &why, m)).await,
        None => Err(mamori_app::AppError::Invalid("the duration must be between 1 minute and 24 hours".into())),
    };
    match result {
        Ok(g) => browser::redirect(
            &format!("/console/patients/{}", g.patient.trim_start_matches("Patient/")),
            v.cookies.clone(),
        ),
        Err(e) => match on_form(&v, &e) {
            Ok((status, text)) => {
                let page = GlassForm {
                    v: v.chrome("非常時アクセス（ブレークグラス）", "Break-glass access"),
                    patient: id.chars().take(64).collect(),
                    reason,
                    minutes: minutes.unwrap_or(60),
                    error: Some(text),
                };
                render(&v, &page, status)
            }
            Err(r) => *r,
        },
    }
}
