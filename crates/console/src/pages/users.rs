//! The system administrator's accounts page (利用者管理): the list with coverage and lock state,
//! issuing an account, and per account — unlock, disable, enable, leave (退職), transfer
//! (人事異動, which opens an access review) and TOTP enrolment with a QR code shown once. Each
//! act is the application layer's use case, which refuses acts on one's own account and audits
//! every change.

use std::sync::Arc;

use askama::Template;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use mamori_app::users;
use mamori_http::browser;

use super::{explain_error, field, render, run};
use crate::Console;
use crate::fmt::local_time;
use crate::visitor::{Chrome, Visitor};

pub struct Row {
    pub username: String,
    pub display_name: String,
    pub roles: String,
    pub status: &'static str,
    pub active: bool,
    pub factors: String,
    pub last_login: String,
    pub locked_until: Option<String>,
    pub must_change: bool,
}

/// The roles a form offers, each with its name in the reader's language.
fn role_choices(ja: bool, chosen: &[String]) -> Vec<(&'static str, &'static str, bool)> {
    mamori_authz::DEFAULT_ROLES
        .iter()
        .map(|(id, name_ja)| (*id, if ja { *name_ja } else { *id }, chosen.iter().any(|c| c == id)))
        .collect()
}

fn status_label(s: mamori_identity::account::Status, ja: bool) -> &'static str {
    use mamori_identity::account::Status as S;
    match (s, ja) {
        (S::Active, true) => "有効",
        (S::Active, false) => "active",
        (S::Disabled, true) => "無効",
        (S::Disabled, false) => "disabled",
        (S::Left, true) => "退職",
        (S::Left, false) => "left",
    }
}

fn row(o: &users::Overview, now: i64, ja: bool) -> Row {
    let locked = o.lockout.get("locked_until").and_then(serde_json::Value::as_i64).filter(|u| *u > now);
    Row {
        username: o.account.username.clone(),
        display_name: o.account.display_name.clone().unwrap_or_default(),
        roles: o.account.roles.join(", "),
        status: status_label(o.account.status, ja),
        active: o.account.status == mamori_identity::account::Status::Active,
        factors: if o.second_factors.is_empty() { "-".into() } else { o.second_factors.join(", ") },
        last_login: o.last_login.map_or_else(|| if ja { "なし" } else { "never" }.to_string(), |t| local_time(t, ja)),
        locked_until: locked.map(|t| local_time(t, ja)),
        must_change: o.must_change_password,
    }
}

/// The issue form as typed.
#[derive(Default, Clone)]
pub struct IssueForm {
    pub username: String,
    pub display_name: String,
    pub fhir_user: String,
    pub department: String,
    pub roles: Vec<String>,
}

#[derive(Template)]
#[template(path = "users.html")]
struct List {
    v: Chrome,
    rows: Vec<Row>,
    f: IssueForm,
    roles: Vec<(&'static str, &'static str, bool)>,
    error: Option<String>,
    issued: Option<String>,
}

#[derive(serde::Deserialize, Default)]
pub struct ListQuery {
    #[serde(default)]
    issued: Option<String>,
}

async fn list_page(
    c: &Arc<Console>,
    v: &Visitor,
    f: IssueForm,
    error: Option<String>,
    issued: Option<String>,
    status: StatusCode,
) -> Response {
    let ja = v.ja();
    match run(c, v, |ctx, node| Ok((users::list(ctx, node)?, ctx.now_secs()))).await {
        Ok((all, now)) => {
            let roles = role_choices(ja, &f.roles);
            let page = List {
                v: v.chrome("利用者", "Users"),
                rows: all.iter().map(|o| row(o, now, ja)).collect(),
                f,
                roles,
                error,
                issued,
            };
            render(v, &page, status)
        }
        Err(e) => super::error_page(v, &e),
    }
}

/// `GET /console/users`.
pub async fn list(State(c): State<Arc<Console>>, v: Visitor, Query(q): Query<ListQuery>) -> Response {
    list_page(&c, &v, IssueForm::default(), None, q.issued, StatusCode::OK).await
}

/// `POST /console/users`: issues an account with an initial password the person must change at
/// first sign-in.
pub async fn issue(State(c): State<Arc<Console>>, v: Visitor, headers: HeaderMap, body: Body) -> Response {
    let Some(form) = browser::form(&c.http, &headers, body).await else { return super::bad_form(&v) };
    let f = IssueForm {
        username: field(&form, "username"),
        display_name: field(&form, "display_name"),
        fhir_user: field(&form, "fhir_user"),
        department: field(&form, "department"),
        roles: form.iter().filter(|(k, _)| k == "role").map(|(_, v)| v.clone()).collect(),
    };
    let ja = v.ja();
    let password = browser::field(&form, "password").to_string();
    let missing = if f.username.is_empty() {
        Some(if ja { "ログイン名を入力してください。" } else { "Enter a login name." })
    } else if f.roles.is_empty() {
        Some(if ja { "職種を一つ以上選んでください。" } else { "Choose at least one role." })
    } else if password.is_empty() {
        Some(if ja { "初期パスワードを入力してください。" } else { "Enter an initial password." })
    } else {
        None
    };
    if let Some(m) = missing {
        return list_page(&c, &v, f, Some(m.into()), None, StatusCode::BAD_REQUEST).await;
    }
    let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
    let n = users::Issue {
        username: f.username.clone(),
        roles: f.roles.clone(),
        fhir_user: opt(&f.fhir_user),
        display_name: opt(&f.display_name),
        department: opt(&f.department),
        proofing: None,
        password,
        emergency: false,
    };
    match run(&c, &v, move |ctx, node| users::issue(ctx, node, n)).await {
        Ok(a) => browser::redirect(
            &format!(
                "/console/users?issued={}",
                url::form_urlencoded::byte_serialize(a.username.as_bytes()).collect::<String>()
            ),
            v.cookies.clone(),
        ),
        Err(e) => {
            let (status, text) = match super::on_form(&v, &e) {
                Ok(x) => x,
                Err(page) => return *page,
            };
            list_page(&c, &v, f, Some(text), None, status).await
        }
    }
}

#[derive(Template)]
#[template(path = "user.html")]
struct Detail {
    v: Chrome,
    r: Row,
    department: String,
    fhir_user: String,
    roles: Vec<(&'static str, &'static str, bool)>,
    error: Option<String>,
    done: Option<String>,
    qr: Option<String>,
    uri: Option<String>,
}

#[derive(serde::Deserialize, Default)]
pub struct DetailQuery {
    #[serde(default)]
    pub(crate) done: Option<String>,
}

async fn detail_page(
    c: &Arc<Console>,
    v: &Visitor,
    username: String,
    error: Option<String>,
    done: Option<String>,
    totp: Option<String>,
    status: StatusCode,
) -> Response {
    let ja = v.ja();
    match run(c, v, move |ctx, node| Ok((users::show(ctx, node, &username)?, ctx.now_secs()))).await {
        Ok((o, now)) => {
            let qr = totp.as_deref().and_then(|u| {
                qrcode::QrCode::new(u.as_bytes())
                    .ok()
                    .map(|q| q.render::<qrcode::render::svg::Color<'_>>().min_dimensions(200, 200).build())
            });
            let page = Detail {
                v: v.chrome("利用者", "User"),
                department: o.account.department.clone().unwrap_or_default(),
                fhir_user: o.account.fhir_user.clone().unwrap_or_default(),
                roles: role_choices(ja, &o.account.roles),
                r: row(&o, now, ja),
                error,
                done,
                qr,
                uri: totp,
            };
            render(v, &page, status)
        }
        Err(e) => super::error_page(v, &e),
    }
}

/// `GET /console/users/{username}`.
pub async fn show(
    State(c): State<Arc<Console>>,
    v: Visitor,
    Path(username): Path<String>,
    Query(q): Query<DetailQuery>,
) -> Response {
    detail_page(&c, &v, username, None, q.done, None, StatusCode::OK).await
}

/// `POST /console/users/{username}/{act}`: `unlock`, `disable`, `enable`, `leave` (needs
/// `confirm`), `transfer` (department and roles), `enroll-totp` (shows the QR code once).
pub async fn act(
    State(c): State<Arc<Console>>,
    v: Visitor,
    Path((username, act)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(form) = browser::form(&c.http, &headers, body).await else { return super::bad_form(&v) };
    let ja = v.ja();
    let u = username.clone();
    let issuer = "Mamori".to_string();
    let result: Result<Option<String>, mamori_app::AppError> = match act.as_str() {
        "unlock" => run(&c, &v, move |ctx, node| users::unlock(ctx, node, &u).map(|_| None)).await,
        "disable" => run(&c, &v, move |ctx, node| users::disable(ctx, node, &u).map(|_| None)).await,
        "enable" => run(&c, &v, move |ctx, node| users::enable(ctx, node, &u).map(|_| None)).await,
        "leave" => {
            if field(&form, "confirm") != username {
                let m = if ja {
                    "退職処理を行うには、確認欄にログイン名を入力してください。"
                } else {
                    "To record leaving, type the login name in the confirmation box."
                };
                return detail_page(&c, &v, username, Some(m.into()), None, None, StatusCode::BAD_REQUEST).await;
            }
            run(&c, &v, move |ctx, node| users::leave(ctx, node, &u).map(|_| None)).await
        }
        "transfer" => {
            let department = Some(field(&form, "department")).filter(|d| !d.is_empty());
            let roles: Vec<String> = form.iter().filter(|(k, _)| k == "role").map(|(_, v)| v.clone()).collect();
            if roles.is_empty() {
                let m = if ja { "職種を一つ以上選んでください。" } else { "Choose at least one role." };
                return detail_page(&c, &v, username, Some(m.into()), None, None, StatusCode::BAD_REQUEST).await;
            }
            run(&c, &v, move |ctx, node| users::transfer(ctx, node, &u, department, Some(roles)).map(|_| None)).await
        }
        "enroll-totp" => run(&c, &v, move |ctx, node| users::enroll_totp(ctx, node, &u, &issuer).map(Some)).await,
        _ => return super::not_found(v).await,
    };
    match result {
        // The TOTP secret is shown on this response only (never in a URL or a later page).
        Ok(Some(uri)) => detail_page(&c, &v, username, None, Some(act), Some(uri), StatusCode::OK).await,
        Ok(None) => browser::redirect(
            &format!(
                "/console/users/{}?done={act}",
                url::form_urlencoded::byte_serialize(username.as_bytes()).collect::<String>()
            ),
            v.cookies.clone(),
        ),
        Err(e) => {
            let (status, text) = explain_error(&e, v.lang);
            // Refused to someone who may manage users (their own account): on the page, as any
            // other mistake; refused to anyone else: the refusal page.
            if status == StatusCode::FORBIDDEN && !v.rights.manage_users {
                return super::error_page(&v, &e);
            }
            detail_page(&c, &v, username, Some(text), None, None, status).await
        }
    }
}
