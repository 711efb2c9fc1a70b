//! The one error type at the edge, mapped to FHIR OperationOutcome; and the request-id layer.

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use mamori_records::{Issue, IssueCode, RecordError, Severity};
use serde_json::{Value, json};

/// Content type of every FHIR response.
pub const FHIR_JSON: &str = "application/fhir+json; charset=utf-8";

/// Why a request failed, as the client will see it.
#[derive(Debug)]
pub enum ApiError {
    /// From the record service.
    Record(RecordError),
    /// No or bad bearer token (401 with `WWW-Authenticate`).
    Unauthorized,
    /// The token does not allow this (403).
    Forbidden(String),
    /// Malformed request (400).
    BadRequest(IssueCode, String),
    /// Body too large (413).
    PayloadTooLarge(usize),
    /// Unsupported `Content-Type` (415).
    UnsupportedMediaType(String),
    /// Unsupported `Accept` / `_format` (406).
    NotAcceptable,
    /// No such endpoint (404).
    NotFound(String),
    /// The interaction is not allowed on this resource type (405).
    MethodNotAllowed(String),
    /// Something failed inside (500); the detail is logged, never shown.
    Internal(String),
    /// Stopped by the configuration integrity check until someone reverts or approves (503).
    Blocked(String),
}

impl From<mamori_access::Refusal> for ApiError {
    fn from(e: mamori_access::Refusal) -> Self {
        match e {
            mamori_access::Refusal::Forbidden(m) => ApiError::Forbidden(m),
            mamori_access::Refusal::Unavailable => ApiError::Internal("policy engine unavailable".into()),
            mamori_access::Refusal::Blocked(m) => ApiError::Blocked(m),
        }
    }
}

impl From<RecordError> for ApiError {
    fn from(e: RecordError) -> Self {
        ApiError::Record(e)
    }
}

/// Builds an OperationOutcome.
pub fn outcome(issues: &[Issue]) -> Value {
    let issues: Vec<Value> = issues
        .iter()
        .map(|i| {
            let mut o = json!({
                "severity": match i.severity { Severity::Error => "error", Severity::Warning => "warning", Severity::Information => "information" },
                "code": i.code.as_str(),
                "diagnostics": i.diagnostics,
            });
            if let (Some(e), Some(m)) = (&i.expression, o.as_object_mut()) {
                m.insert("expression".into(), json!([e]));
            }
            o
        })
        .collect();
    json!({"resourceType": "OperationOutcome", "issue": issues})
}

/// A FHIR JSON response with a status.
pub fn fhir_response(status: StatusCode, body: &Value) -> Response {
    fhir_text_response(status, body.to_string())
}

/// A FHIR JSON response from JSON already serialised.
pub fn fhir_text_response(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
    r
}

impl ApiError {
    /// The status and issues this error answers with (also a Bundle entry's `response`).
    pub fn status_issues(self) -> (StatusCode, Vec<Issue>) {
        let one = |code, msg: String| vec![Issue::error(code, msg)];
        match self {
            ApiError::Record(e) => match e {
                RecordError::Invalid(issues) => (StatusCode::BAD_REQUEST, issues),
                RecordError::NotFound(what) => {
                    (StatusCode::NOT_FOUND, one(IssueCode::NotFound, format!("{what} not found")))
                }
                RecordError::Gone(what) => (StatusCode::GONE, one(IssueCode::Deleted, format!("{what} is deleted"))),
                e @ RecordError::VersionConflict { .. } => {
                    (StatusCode::PRECONDITION_FAILED, one(IssueCode::Conflict, e.to_string()))
                }
                e @ RecordError::MultipleMatches(_) => {
                    (StatusCode::PRECONDITION_FAILED, one(IssueCode::Duplicate, e.to_string()))
                }
                RecordError::Conflict(m) => (StatusCode::CONFLICT, one(IssueCode::Conflict, m)),
                RecordError::Unprocessable(m) => (StatusCode::UNPROCESSABLE_ENTITY, one(IssueCode::Processing, m)),
                RecordError::Forbidden(m) => (StatusCode::FORBIDDEN, one(IssueCode::Forbidden, m)),
                RecordError::Store(e) if e.is_transient() => {
                    tracing::warn!(error = %e, "storage busy or unavailable; answered 503");
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        one(
                            IssueCode::Transient,
                            "the server is busy; nothing was changed — retry shortly (混雑しています。しばらくしてから再試行してください)"
                                .into(),
                        ),
                    )
                }
                RecordError::Unaudited(e) => {
                    tracing::error!(error = %e, "audit append failed; the read's result was withheld");
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        one(
                            IssueCode::Exception,
                            "the audit trail could not be written, so the request was not completed (監査証跡に記録できません)"
                                .into(),
                        ),
                    )
                }
                RecordError::ReadOnly => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    one(
                        IssueCode::Transient,
                        "the system is in emergency read-only mode: records can be read but not written; nothing was changed (非常時の参照専用モードです。記録の閲覧はできますが、書き込みはできません)"
                            .into(),
                    ),
                ),
                RecordError::Store(e) => {
                    tracing::error!(error = %e, "storage failure");
                    (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        one(
                            IssueCode::Exception,
                            "the server could not complete the request; nothing was changed".into(),
                        ),
                    )
                }
                other => {
                    tracing::error!(error = %other, "unmapped record error");
                    (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        one(IssueCode::Exception, "the server could not complete the request".into()),
                    )
                }
            },
            ApiError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                one(IssueCode::Login, "a valid bearer access token is required (認証が必要です)".into()),
            ),
            ApiError::Forbidden(m) => (StatusCode::FORBIDDEN, one(IssueCode::Forbidden, m)),
            ApiError::Blocked(m) => (StatusCode::SERVICE_UNAVAILABLE, one(IssueCode::Exception, m)),
            ApiError::BadRequest(code, m) => (StatusCode::BAD_REQUEST, one(code, m)),
            ApiError::PayloadTooLarge(max) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                one(IssueCode::TooCostly, format!("request body exceeds the limit of {max} bytes")),
            ),
            ApiError::UnsupportedMediaType(m) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, one(IssueCode::NotSupported, m)),
            ApiError::NotAcceptable => (
                StatusCode::NOT_ACCEPTABLE,
                one(IssueCode::NotSupported, "only JSON (application/fhir+json) is served".into()),
            ),
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, one(IssueCode::NotFound, m)),
            ApiError::MethodNotAllowed(m) => (StatusCode::METHOD_NOT_ALLOWED, one(IssueCode::NotSupported, m)),
            ApiError::Internal(m) => {
                tracing::error!(error = %m, "internal error");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    one(IssueCode::Exception, "the server could not complete the request".into()),
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let unauthorized = matches!(self, ApiError::Unauthorized);
        let (status, issues) = self.status_issues();
        let mut r = fhir_response(status, &outcome(&issues));
        if unauthorized {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"mamori\", error=\"invalid_token\""),
            );
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            // RFC 9110 §10.2.3: when to try again.
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        r
    }
}

/// Turns any error response inside `/fhir` that is not already FHIR JSON (axum's own rejections:
/// 405 for a wrong method, a path that does not decode, …) into an OperationOutcome, so clients
/// see one error form whatever produced the error.
pub async fn fhir_errors(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    let is_fhir = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/fhir+json"));
    if !(status.is_client_error() || status.is_server_error()) || is_fhir {
        return resp;
    }
    let allow = resp.headers().get(header::ALLOW).cloned();
    let (_, body) = resp.into_parts();
    let text =
        axum::body::to_bytes(body, 4096).await.map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
    let (code, msg) = match status {
        StatusCode::METHOD_NOT_ALLOWED => {
            (IssueCode::NotSupported, "this interaction is not supported at this URL".to_string())
        }
        s if s.is_server_error() => (IssueCode::Exception, "the server could not complete the request".to_string()),
        _ if text.is_empty() => (IssueCode::Invalid, status.canonical_reason().unwrap_or("bad request").to_lowercase()),
        _ => (IssueCode::Invalid, text.chars().take(300).collect()),
    };
    let mut r = fhir_response(status, &outcome(&[Issue::error(code, msg)]));
    if let Some(a) = allow {
        r.headers_mut().insert(header::ALLOW, a);
    }
    r
}

/// The request id of a request, also in its response's `X-Request-ID`.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

fn sane_request_id(v: &HeaderValue) -> Option<String> {
    let s = v.to_str().ok()?;
    let ok = (1..=128).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
    ok.then(|| s.to_string())
}

fn new_request_id() -> String {
    let mut b = [0u8; 16];
    // A request id is not a secret; if the OS RNG fails, a time-based id is still unique enough.
    if getrandom::fill(&mut b).is_err() {
        let t = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
        return format!("t{t:x}");
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Takes the caller's sane `X-Request-ID` or makes one, and echoes it on the response.
pub async fn request_id(mut req: Request, next: Next) -> Response {
    let id = req.headers().get("x-request-id").and_then(sane_request_id).unwrap_or_else(new_request_id);
    req.extensions_mut().insert(RequestId(id.clone()));
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let mut resp = next.run(req).await;
    tracing::info!(request_id = %id, %method, %path, status = resp.status().as_u16(), "request");
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

#[cfg(test)]
mod store_error_tests {
    use super::*;
    use mamori_records::StoreError;

    fn answer(e: StoreError) -> Response {
        ApiError::Record(RecordError::Store(e)).into_response()
    }

    /// A busy or unavailable store is 503 with `Retry-After` (the client may retry; nothing
    /// changed); corruption and the rest are 500 without it. No cause reaches the client.
    #[test]
    fn busy_and_unavailable_stores_are_503_with_retry_after() {
        for (e, status, retry) in [
            (StoreError::Busy("database is locked".into()), StatusCode::SERVICE_UNAVAILABLE, true),
            (StoreError::Unavailable("connection refused".into()), StatusCode::SERVICE_UNAVAILABLE, true),
            (StoreError::Corrupt("stored body".into()), StatusCode::INTERNAL_SERVER_ERROR, false),
            (StoreError::other("x"), StatusCode::INTERNAL_SERVER_ERROR, false),
        ] {
            let r = answer(e.clone());
            assert_eq!(r.status(), status, "{e:?}");
            assert_eq!(r.headers().get(header::RETRY_AFTER).is_some(), retry, "{e:?}");
        }
    }
}
