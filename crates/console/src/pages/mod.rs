//! The pages. Each handler: the [`Visitor`] (signed in, or sent to sign in), the form checked
//! by the sign-in pages' CSRF code for a POST, one use case run off the async threads, and a
//! template. Errors are shown in the reader's language, on the page, with what they typed.

pub mod access_reviews;
pub mod apps;
pub mod audit;
pub mod backups;
pub mod changes;
pub mod clinical;
pub mod dashboard;
pub mod integrity;
pub mod keys;
pub mod maintenance;
pub mod policies;
pub mod reviews;
pub mod users;

use std::sync::Arc;

use askama::Template;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use mamori_app::messages::{Lang, localize};
use mamori_app::{AppError, Ctx, Node};
use mamori_http::browser;

use crate::Console;
use crate::visitor::{Chrome, Visitor};

/// A page with the security headers and the visitor's cookies.
pub(crate) fn render<T: Template>(v: &Visitor, t: &T, status: StatusCode) -> Response {
    match t.render() {
        Ok(html) => browser::html(status, html, &v.cookies),
        Err(e) => {
            tracing::error!(error = %e, "console template failed");
            browser::html(StatusCode::INTERNAL_SERVER_ERROR, String::new(), &[])
        }
    }
}

/// Runs a use case off the async threads, as the visitor.
pub(crate) async fn run<T: Send + 'static>(
    c: &Arc<Console>,
    v: &Visitor,
    f: impl FnOnce(&Ctx, &Node) -> Result<T, AppError> + Send + 'static,
) -> Result<T, AppError> {
    let (ctx, node) = (v.ctx.clone(), c.node.clone());
    tokio::task::spawn_blocking(move || f(&ctx, &node))
        .await
        .unwrap_or_else(|_| Err(AppError::Failed("the task stopped".into())))
}

/// The status and the reader's text for a use case's error. A storage failure's detail goes to
/// the log, not to the page.
pub(crate) fn explain_error(e: &AppError, lang: Lang) -> (StatusCode, String) {
    let status = match e {
        AppError::Forbidden(_) => StatusCode::FORBIDDEN,
        AppError::Invalid(_) | AppError::PasswordRefused(_) => StatusCode::BAD_REQUEST,
        AppError::NotFound(_) => StatusCode::NOT_FOUND,
        AppError::Conflict(_) => StatusCode::CONFLICT,
        AppError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let text = match e {
        AppError::PasswordRefused(why) => why
            .iter()
            .map(|(ja, en)| if lang == Lang::Ja { ja.as_str() } else { en.as_str() })
            .collect::<Vec<_>>()
            .join(" "),
        AppError::Failed(detail) => {
            tracing::error!(%detail, "console: use case failed");
            pick(
                lang,
                "処理できませんでした。時間をおいてやり直してください。",
                "The request could not be completed; try again later.",
            )
            .to_string()
        }
        AppError::Unavailable(_) => {
            pick(lang, "混雑しています。しばらくしてから再試行してください。", "The server is busy; retry shortly.")
                .to_string()
        }
        other => {
            // Messages written "ja / en" show the reader's half.
            let m = other.to_string();
            match m.split_once(" / ") {
                Some((ja, en)) if !ja.is_ascii() => (if lang == Lang::Ja { ja } else { en }).to_string(),
                _ => localize(&m, lang).into_owned(),
            }
        }
    };
    (status, text)
}

/// A use case's error for showing on the form that caused it (status, text) — except a refusal,
/// which gets the refusal page (`Err`): a person without the right has no form to go back to.
///
/// A change held for a second person (the two-person rule) is no error: the requester is taken to
/// the request's page, which says what happens next.
pub(crate) fn on_form(v: &Visitor, e: &AppError) -> Result<(StatusCode, String), Box<Response>> {
    if let AppError::Pending(p) = e {
        return Err(Box::new(held(v, p)));
    }
    let (status, text) = explain_error(e, v.lang);
    if status == StatusCode::FORBIDDEN { Err(Box::new(error_page(v, e))) } else { Ok((status, text)) }
}

fn pick(lang: Lang, ja: &'static str, en: &'static str) -> &'static str {
    if lang == Lang::Ja { ja } else { en }
}

/// A page that only says something (an error, a placeholder).
#[derive(Template)]
#[template(path = "message.html")]
pub(crate) struct Message {
    pub v: Chrome,
    pub heading: String,
    pub text: String,
    pub error: bool,
}

/// To the page of a change request just made.
pub(crate) fn held(v: &Visitor, p: &mamori_app::approvals::Pending) -> Response {
    browser::redirect(&format!("/console/changes/{}?requested=1", p.id), v.cookies.clone())
}

/// A use case's error as a page of its own.
pub(crate) fn error_page(v: &Visitor, e: &AppError) -> Response {
    if let AppError::Pending(p) = e {
        return held(v, p);
    }
    let (status, text) = explain_error(e, v.lang);
    let heading = match status {
        StatusCode::FORBIDDEN => pick(v.lang, "この操作は許可されていません", "Not allowed"),
        StatusCode::NOT_FOUND => pick(v.lang, "見つかりません", "Not found"),
        _ => pick(v.lang, "エラー", "Error"),
    };
    let page = Message { v: v.chrome("エラー", "Error"), heading: heading.into(), text, error: true };
    render(v, &page, status)
}

/// A refused form: CSRF token missing or from another session, or a request from another site.
pub(crate) fn bad_form(v: &Visitor) -> Response {
    let page = Message {
        v: v.chrome("不正なリクエスト", "Invalid request"),
        heading: pick(v.lang, "不正なリクエストです", "Invalid request").into(),
        text: pick(v.lang, "ページを読み込み直してからやり直してください。", "Reload the page and try again.").into(),
        error: true,
    };
    render(v, &page, StatusCode::FORBIDDEN)
}

/// The store could not be reached to check the session.
pub(crate) fn unavailable(ja: bool) -> Response {
    let text = if ja {
        "処理できませんでした。時間をおいてやり直してください。"
    } else {
        "The request could not be completed; try again later."
    };
    browser::html(
        browser::UNAVAILABLE,
        format!(
            "<!doctype html><html lang=\"{}\"><title>Mamori</title><p>{text}</p></html>",
            if ja { "ja" } else { "en" }
        ),
        &[],
    )
}

/// `GET /console/console.css`.
pub async fn stylesheet() -> Response {
    let mut r = include_str!("../../static/console.css").into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/css; charset=utf-8"));
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600"));
    r
}

/// Any other path below `/console/`.
pub async fn not_found(v: Visitor) -> Response {
    missing(&v)
}

/// The page for something that is not there (or that the person may not know is there).
pub(crate) fn missing(v: &Visitor) -> Response {
    let page = Message {
        v: v.chrome("見つかりません", "Not found"),
        heading: pick(v.lang, "見つかりません", "Not found").into(),
        text: pick(v.lang, "このページはありません。", "There is no such page.").into(),
        error: true,
    };
    render(v, &page, StatusCode::NOT_FOUND)
}

/// `POST /console/signout`: ends the session (audited with its duration) and returns to the
/// sign-in page.
pub async fn sign_out(State(c): State<Arc<Console>>, v: Visitor, headers: HeaderMap, body: Body) -> Response {
    if browser::form(&c.http, &headers, body).await.is_none() {
        return bad_form(&v);
    }
    let cleared = browser::sign_out(&c.http, &headers, v.ctx.source.clone()).await;
    browser::redirect(&format!("/login?lang={}", if v.ja() { "ja" } else { "en" }), vec![cleared])
}

/// A form's field, trimmed.
pub(crate) fn field(f: &[(String, String)], k: &str) -> String {
    browser::field(f, k).trim().to_string()
}
