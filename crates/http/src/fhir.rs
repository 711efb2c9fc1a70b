//! FHIR RESTful interactions: create, read, vread, update, patch, delete, history, conditional
//! create/update/delete, search (GET and POST `_search`), and `$approve` (確定 of proxy entries).

use axum::body::{Body, Bytes};
use axum::extract::{Extension, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use mamori_records::search;
use mamori_records::{
    Condition, HistoryQuery, IssueCode, Method, ParsedBody, RecordError, ResourceId, ResourceType, Timestamp,
    VersionRecord, parse_conditions, parse_resource,
};
use serde_json::{Value, json};

use crate::audit::AuditNote;
use crate::error::{FHIR_JSON, fhir_response, fhir_text_response, outcome};
use crate::{ApiError, AppState};
use mamori_access::{Action, Principal};

type ApiResult = Result<Response, ApiError>;

fn note_of(v: &VersionRecord, in_transaction: bool) -> AuditNote {
    AuditNote {
        resources: vec![format!("{}/{}/_history/{}", v.resource_type, v.id, v.version)],
        patients: v.patient.clone().into_iter().collect(),
        in_transaction,
        query: None,
    }
}

pub(crate) fn note_of_all<'a>(vs: impl Iterator<Item = &'a VersionRecord>) -> AuditNote {
    let mut n = AuditNote::default();
    for v in vs {
        n.resources.push(format!("{}/{}/_history/{}", v.resource_type, v.id, v.version));
        if let Some(p) = &v.patient
            && !n.patients.contains(p)
        {
            n.patients.push(p.clone());
        }
    }
    n
}

/// AuditEvent is the audit trail's read-only view.
pub(crate) fn refuse_audit_event_writes(rt: &ResourceType) -> Result<(), ApiError> {
    if rt.as_str() == "AuditEvent" {
        Err(ApiError::MethodNotAllowed(
            "AuditEvent is written only by the server's audit trail; it cannot be created, changed or deleted".into(),
        ))
    } else {
        Ok(())
    }
}

pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, RecordError> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(ApiError::from),
        Err(e) => Err(ApiError::Internal(format!("worker failed: {e}"))),
    }
}

fn rtype(s: &str) -> Result<ResourceType, ApiError> {
    ResourceType::parse(s).map_err(|_| {
        ApiError::NotFound(format!("`{}` is not an R4 resource type", s.chars().take(64).collect::<String>()))
    })
}

fn rid(s: &str) -> Result<ResourceId, ApiError> {
    ResourceId::parse(s).map_err(ApiError::from)
}

/// Refuses `Accept` / `_format` values that ask for something other than JSON.
pub(crate) fn check_format(headers: &HeaderMap, query: Option<&str>) -> Result<(), ApiError> {
    if let Some(q) = query {
        for pair in q.split('&') {
            if let Some(f) = pair.strip_prefix("_format=") {
                let f = f.replace("%2B", "+").replace("%2b", "+").replace("%2F", "/").replace("%2f", "/");
                if !matches!(
                    f.as_str(),
                    "json" | "application/json" | "application/fhir+json" | "application/fhir json"
                ) {
                    return Err(ApiError::NotAcceptable);
                }
            }
        }
    }
    if let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) {
        let ok = accept.split(',').any(|a| {
            let m = a.split(';').next().unwrap_or("").trim();
            m.is_empty()
                || m == "*/*"
                || m == "application/*"
                || m == "application/json"
                || m == "application/fhir+json"
        });
        if !ok {
            return Err(ApiError::NotAcceptable);
        }
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyKind {
    Resource,
    JsonPatch,
    Form,
}

/// Reads a request body within the configured limit, refusing early on `Content-Length`.
pub(crate) async fn read_body(
    s: &AppState,
    headers: &HeaderMap,
    body: Body,
    kind: BodyKind,
) -> Result<Bytes, ApiError> {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let mime = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let ok = match kind {
        BodyKind::Resource => matches!(mime.as_str(), "application/fhir+json" | "application/json"),
        BodyKind::JsonPatch => mime == "application/json-patch+json",
        BodyKind::Form => mime == "application/x-www-form-urlencoded",
    };
    if !ok {
        return Err(ApiError::UnsupportedMediaType(match kind {
            BodyKind::Resource => {
                format!("Content-Type `{ct}` is not supported; send application/fhir+json")
            }
            BodyKind::JsonPatch => {
                format!("Content-Type `{ct}` is not supported; PATCH takes application/json-patch+json")
            }
            BodyKind::Form => {
                format!("Content-Type `{ct}` is not supported; `_search` takes application/x-www-form-urlencoded")
            }
        }));
    }
    let max = s.config.max_body_bytes;
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(ApiError::PayloadTooLarge(max));
    }
    match axum::body::to_bytes(body, max).await {
        Ok(b) => Ok(b),
        Err(e) => {
            let too_big = std::error::Error::source(&e)
                .is_some_and(|src| src.downcast_ref::<http_body_util::LengthLimitError>().is_some());
            if too_big {
                Err(ApiError::PayloadTooLarge(max))
            } else {
                Err(ApiError::BadRequest(IssueCode::Structure, "the request body could not be read".into()))
            }
        }
    }
}

async fn parse_body(bytes: Bytes) -> Result<ParsedBody, ApiError> {
    blocking(move || parse_resource(&bytes)).await
}

fn if_match(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(v) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let s = v.to_str().unwrap_or("").trim();
    let inner = s.strip_prefix("W/").unwrap_or(s).trim_matches('"');
    inner.parse::<u64>().map(Some).map_err(|_| {
        ApiError::BadRequest(IssueCode::Invalid, format!("If-Match `{s}` is not a version ETag such as W/\"3\""))
    })
}

fn x_provenance(headers: &HeaderMap) -> Result<Option<Value>, ApiError> {
    let Some(v) = headers.get("x-provenance") else {
        return Ok(None);
    };
    let s =
        v.to_str().map_err(|_| ApiError::BadRequest(IssueCode::Invalid, "X-Provenance is not valid text".into()))?;
    serde_json::from_str(s)
        .map(Some)
        .map_err(|e| ApiError::BadRequest(IssueCode::Invalid, format!("X-Provenance is not JSON: {e}")))
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Return {
    Representation,
    Minimal,
    Outcome,
}

pub(crate) fn prefer_return(headers: &HeaderMap) -> Return {
    if prefers(headers, "return=minimal") {
        Return::Minimal
    } else if prefers(headers, "return=OperationOutcome") {
        Return::Outcome
    } else {
        Return::Representation
    }
}

pub(crate) fn http_date(t: Timestamp) -> String {
    let dt = time::OffsetDateTime::from_unix_timestamp(t.0 / 1_000_000).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let f = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    dt.format(&f).unwrap_or_default()
}

pub(crate) fn etag(v: &VersionRecord) -> String {
    format!("W/\"{}\"", v.version)
}

fn set(headers: &mut HeaderMap, name: header::HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}

/// The response for a stored version: the stored JSON byte for byte.
fn resource_response(s: &AppState, status: StatusCode, v: &VersionRecord, ret: Return, location: bool) -> Response {
    let mut r = match (ret, v.body.as_deref()) {
        (Return::Minimal, _) | (_, None) => status.into_response(),
        (Return::Outcome, _) => fhir_response(
            status,
            &json!({"resourceType": "OperationOutcome", "issue": [{"severity": "information", "code": "informational",
                "diagnostics": format!("{}/{} version {} stored", v.resource_type, v.id, v.version)}]}),
        ),
        (Return::Representation, Some(body)) => {
            let mut r = (status, body.to_string()).into_response();
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
            r
        }
    };
    let h = r.headers_mut();
    set(h, header::ETAG, &etag(v));
    set(h, header::LAST_MODIFIED, &http_date(v.last_updated));
    if location {
        set(
            h,
            header::LOCATION,
            &format!("{}/fhir/{}/{}/_history/{}", s.config.public_url, v.resource_type, v.id, v.version),
        );
    }
    r
}

/// `POST /fhir/{type}`.
pub async fn create(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(rt): Path<String>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Body,
) -> ApiResult {
    check_format(&headers, q.as_deref())?;
    no_criteria_on_create(q.as_deref())?;
    let rt = rtype(&rt)?;
    refuse_audit_event_writes(&rt)?;
    p.authorize(rt.as_str(), Action::Create)?;
    let cond = match headers.get("if-none-exist") {
        Some(v) => {
            let q = v
                .to_str()
                .map_err(|_| ApiError::BadRequest(IssueCode::Invalid, "If-None-Exist is not valid text".into()))?;
            let q = q.strip_prefix(&format!("{rt}?")).unwrap_or(q);
            p.authorize(rt.as_str(), Action::Search)?;
            Some(parse_conditions(q)?)
        }
        None => None,
    };
    let prov = x_provenance(&headers)?;
    let parsed = parse_body(read_body(&s, &headers, body, BodyKind::Resource).await?).await?;
    let records = s.records.clone();
    let ctx = p.context();
    let (rt2, prov2) = (rt.clone(), prov.clone());
    let out = blocking(move || records.create(&ctx, &rt2, parsed, cond.as_deref(), prov2.as_ref())).await?;
    let status = if out.created { StatusCode::CREATED } else { StatusCode::OK };
    Ok(note_of(&out.record, out.written).attach(resource_response(
        &s,
        status,
        &out.record,
        prefer_return(&headers),
        out.created,
    )))
}

/// A create takes no search criteria in its URL: a client that sends `POST Type?identifier=…`
/// meant a conditional create, and creating regardless would make the duplicate it wanted to
/// avoid. Only `_format` and `_pretty` are allowed.
fn no_criteria_on_create(q: Option<&str>) -> Result<(), ApiError> {
    let criteria: Vec<&str> = q
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').map_or(p, |(k, _)| k))
        .filter(|k| !matches!(*k, "_format" | "_pretty"))
        .collect();
    match criteria.first() {
        None => Ok(()),
        Some(k) => Err(ApiError::BadRequest(
            IssueCode::NotSupported,
            format!(
                "a create takes no search parameters in its URL (got `{}`); for a conditional create send them in the If-None-Exist header",
                k.chars().take(64).collect::<String>()
            ),
        )),
    }
}

/// `GET /fhir/{type}/{id}`.
pub async fn read(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    Path((rt, id)): Path<(String, String)>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> ApiResult {
    check_format(&headers, q.as_deref())?;
    let (rt, id) = (rtype(&rt)?, rid(&id)?);
    p.authorize(rt.as_str(), Action::Read)?;
    if rt.as_str() == "AuditEvent" {
        return audit_event_read(&s, &id).await;
    }
    // Inline: indexed reads by primary key (and the care-relationship index); the service
    // audits the read and hands the record out once its entry is durable.
    // The response is built while the entry is made durable, and sent only after.
    let not_modified = headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()).map(str::trim);
    let respond = |v: VersionRecord| {
        if not_modified == Some(etag(&v).as_str()) {
            let mut r = StatusCode::NOT_MODIFIED.into_response();
            set(r.headers_mut(), header::ETAG, &etag(&v));
            return r;
        }
        resource_response(&s, StatusCode::OK, &v, Return::Representation, false)
    };
    Ok(s.records.read(&p.context().with_query(q.as_deref()), &rt, &id).map(respond).await?)
}

async fn audit_event_read(s: &AppState, id: &ResourceId) -> ApiResult {
    let index: u64 =
        id.as_str().parse().map_err(|_| ApiError::Record(RecordError::NotFound(format!("AuditEvent/{id}"))))?;
    let log = s.audit.clone();
    let entries = tokio::task::spawn_blocking(move || log.entries(index, 1))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let entry = entries.first().ok_or_else(|| ApiError::Record(RecordError::NotFound(format!("AuditEvent/{id}"))))?;
    let note = AuditNote { resources: vec![format!("AuditEvent/{index}")], ..AuditNote::default() };
    Ok(note.attach(fhir_response(StatusCode::OK, &crate::audit_event::audit_event(index, entry))))
}

/// `GET /fhir/{type}/{id}/_history/{vid}`.
pub async fn vread(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    Path((rt, id, vid)): Path<(String, String, String)>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> ApiResult {
    check_format(&headers, q.as_deref())?;
    let (rt, id) = (rtype(&rt)?, rid(&id)?);
    let vid: u64 = vid.parse().map_err(|_| {
        ApiError::BadRequest(
            IssueCode::Value,
            format!("`{}` is not a version id", vid.chars().take(32).collect::<String>()),
        )
    })?;
    p.authorize(rt.as_str(), Action::Read)?;
    let respond = |v: VersionRecord| resource_response(&s, StatusCode::OK, &v, Return::Representation, false);
    Ok(s.records.vread(&p.context().with_query(q.as_deref()), &rt, &id, vid).map(respond).await?)
}

/// `PUT /fhir/{type}/{id}`.
pub async fn update(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    Path((rt, id)): Path<(String, String)>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Body,
) -> ApiResult {
    check_format(&headers, q.as_deref())?;
    let (rt, id) = (rtype(&rt)?, rid(&id)?);
    refuse_audit_event_writes(&rt)?;
    p.authorize(rt.as_str(), Action::Update)?;
    let im = if_match(&headers)?;
    let prov = x_provenance(&headers)?;
    let parsed = parse_body(read_body(&s, &headers, body, BodyKind::Resource).await?).await?;
    let records = s.records.clone();
    let ctx = p.context();
    let out = blocking(move || records.update(&ctx, &rt, &id, parsed, im, prov.as_ref())).await?;
    let status = if out.created { StatusCode::CREATED } else { StatusCode::OK };
    Ok(note_of(&out.record, out.written).attach(resource_response(
        &s,
        status,
        &out.record,
        prefer_return(&headers),
        out.created,
    )))
}

/// `PUT /fhir/{type}?criteria`.
pub async fn conditional_update(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(rt): Path<String>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Body,
) -> ApiResult {
    let rt = rtype(&rt)?;
    refuse_audit_event_writes(&rt)?;
    p.authorize(rt.as_str(), Action::Update)?;
    p.authorize(rt.as_str(), Action::Create)?;
    p.authorize(rt.as_str(), Action::Search)?;
    let conds = conditions(q.as_deref())?;
    let prov = x_provenance(&headers)?;
    let parsed = parse_body(read_body(&s, &headers, body, BodyKind::Resource).await?).await?;
    let records = s.records.clone();
    let ctx = p.context();
    let out = blocking(move || records.conditional_update(&ctx, &rt, &conds, parsed, prov.as_ref())).await?;
    let status = if out.created { StatusCode::CREATED } else { StatusCode::OK };
    Ok(note_of(&out.record, out.written).attach(resource_response(
        &s,
        status,
        &out.record,
        prefer_return(&headers),
        out.created,
    )))
}

fn conditions(q: Option<&str>) -> Result<Vec<Condition>, ApiError> {
    let q = q.unwrap_or("");
    let filtered: Vec<&str> = q.split('&').filter(|p| !p.starts_with("_format=")).collect();
    Ok(parse_conditions(&filtered.join("&"))?)
}

/// `PATCH /fhir/{type}/{id}` (JSON Patch).
pub async fn patch(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    Path((rt, id)): Path<(String, String)>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Body,
) -> ApiResult {
    check_format(&headers, q.as_deref())?;
    let (rt, id) = (rtype(&rt)?, rid(&id)?);
    refuse_audit_event_writes(&rt)?;
    p.authorize(rt.as_str(), Action::Update)?;
    let im = if_match(&headers)?;
    let bytes = read_body(&s, &headers, body, BodyKind::JsonPatch).await?;
    let records = s.records.clone();
    let ctx = p.context();
    let out = blocking(move || records.patch(&ctx, &rt, &id, &bytes, im)).await?;
    Ok(note_of(&out.record, true).attach(resource_response(
        &s,
        StatusCode::OK,
        &out.record,
        prefer_return(&headers),
        false,
    )))
}

/// `DELETE /fhir/{type}/{id}`.
pub async fn delete(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    Path((rt, id)): Path<(String, String)>,
) -> ApiResult {
    let (rt, id) = (rtype(&rt)?, rid(&id)?);
    refuse_audit_event_writes(&rt)?;
    p.authorize(rt.as_str(), Action::Delete)?;
    let records = s.records.clone();
    let ctx = p.context();
    let out = blocking(move || records.delete(&ctx, &rt, &id)).await?;
    Ok(deleted_response(out))
}

fn deleted_response(v: Option<VersionRecord>) -> Response {
    let mut r = StatusCode::NO_CONTENT.into_response();
    match v {
        Some(v) => {
            set(r.headers_mut(), header::ETAG, &etag(&v));
            note_of(&v, true).attach(r)
        }
        None => r,
    }
}

/// `DELETE /fhir/{type}?criteria`.
pub async fn conditional_delete(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(rt): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let rt = rtype(&rt)?;
    refuse_audit_event_writes(&rt)?;
    p.authorize(rt.as_str(), Action::Delete)?;
    p.authorize(rt.as_str(), Action::Search)?;
    let conds = conditions(q.as_deref())?;
    let records = s.records.clone();
    let ctx = p.context();
    let out = blocking(move || records.conditional_delete(&ctx, &rt, &conds)).await?;
    Ok(deleted_response(out))
}

/// The `duration` of a break-glass request in minutes: a `valueDuration` in `min` or `h`.
fn break_glass_minutes(p: &Value) -> Result<u32, ApiError> {
    let bad = |m: &str| ApiError::BadRequest(IssueCode::Value, m.to_string());
    let d = p
        .get("valueDuration")
        .ok_or_else(|| bad("`duration` must be a valueDuration (e.g. {\"value\": 2, \"code\": \"h\"})"))?;
    let value = d.get("value").and_then(Value::as_f64).ok_or_else(|| bad("`duration` needs a numeric `value`"))?;
    let unit = d.get("code").or_else(|| d.get("unit")).and_then(Value::as_str).unwrap_or("");
    let minutes = match unit {
        "min" => value,
        "h" => value * 60.0,
        _ => return Err(bad("`duration` must be in `min` or `h` (UCUM)")),
    };
    if !(1.0..=1440.0).contains(&minutes) || minutes.fract() != 0.0 {
        return Err(bad("`duration` must be whole minutes between 1 minute and 24 hours"));
    }
    Ok(minutes as u32)
}

/// `POST /fhir/Patient/{id}/$break-glass` (非常時, Z5): a Parameters resource with `reason`
/// (required) and `duration` (default 1 h, at most 24 h). The caller gets their role's rights on
/// this patient without a care relationship until it expires; the grant raises an alert and
/// enters the security manager's review queue; every access under it is audited with purpose
/// ETREAT.
pub async fn break_glass(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    let id = rid(&id)?;
    p.authorize("Patient", Action::Execute("break-glass"))?;
    let parsed = parse_body(read_body(&s, &headers, body, BodyKind::Resource).await?).await?;
    let v = parsed.0;
    if v.get("resourceType").and_then(Value::as_str) != Some("Parameters") {
        return Err(ApiError::BadRequest(IssueCode::Invalid, "the body must be a Parameters resource".into()));
    }
    let mut reason = None;
    let mut minutes = 60;
    for param in v.get("parameter").and_then(Value::as_array).into_iter().flatten() {
        match param.get("name").and_then(Value::as_str) {
            Some("reason") => {
                reason =
                    Some(param.get("valueString").and_then(Value::as_str).map(str::to_string).ok_or_else(|| {
                        ApiError::BadRequest(IssueCode::Value, "`reason` must be a valueString".into())
                    })?)
            }
            Some("duration") => minutes = break_glass_minutes(param)?,
            Some(other) => {
                return Err(ApiError::BadRequest(
                    IssueCode::NotSupported,
                    format!("$break-glass has no parameter `{}`", other.chars().take(64).collect::<String>()),
                ));
            }
            None => return Err(ApiError::BadRequest(IssueCode::Value, "every parameter needs a `name`".into())),
        }
    }
    let Some(reason) = reason else {
        return Err(ApiError::BadRequest(IssueCode::Value, "$break-glass needs a `reason` parameter".into()));
    };
    let records = s.records.clone();
    let ctx = p.context();
    let g = blocking(move || records.break_glass(&ctx, &id, &reason, minutes)).await?;
    let out = json!({
        "resourceType": "Parameters",
        "parameter": [
            {"name": "grant", "valueString": g.id},
            {"name": "patient", "valueReference": {"reference": g.patient}},
            {"name": "expires", "valueInstant": g.expires.to_fhir()},
        ],
    });
    let note = AuditNote { patients: vec![g.patient.clone()], in_transaction: true, ..AuditNote::default() };
    Ok(note.attach(fhir_response(StatusCode::OK, &out)))
}

/// `POST /fhir/{type}/{id}/$approve`: the author finalises (確定) a proxy entry (代行入力).
pub async fn approve(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    Path((rt, id)): Path<(String, String)>,
) -> ApiResult {
    let (rt, id) = (rtype(&rt)?, rid(&id)?);
    p.authorize(rt.as_str(), Action::Execute("approve"))?;
    let records = s.records.clone();
    let ctx = p.context();
    let v = blocking(move || records.approve(&ctx, &rt, &id)).await?;
    Ok(note_of(&v, true).attach(resource_response(&s, StatusCode::OK, &v, Return::Representation, false)))
}

/// `GET /fhir/{type}?…`: search by the official R4 parameters (`docs/SEARCH.md`).
pub async fn search(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(rt): Path<String>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> ApiResult {
    check_format(&headers, q.as_deref())?;
    let rt = rtype(&rt)?;
    p.authorize(rt.as_str(), Action::Search)?;
    if rt.as_str() == "AuditEvent" {
        return audit_event_search(&s, q.as_deref()).await;
    }
    let criteria = q.unwrap_or_default();
    run_search(&s, &p, &rt, &headers, &criteria, &criteria).await
}

/// `POST /fhir/{type}/_search` with the parameters as a form body (and/or in the URL).
pub async fn search_post(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(rt): Path<String>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Body,
) -> ApiResult {
    check_format(&headers, q.as_deref())?;
    let rt = rtype(&rt)?;
    p.authorize(rt.as_str(), Action::Search)?;
    let bytes = read_body(&s, &headers, body, BodyKind::Form).await?;
    let form = std::str::from_utf8(&bytes)
        .map_err(|_| ApiError::BadRequest(IssueCode::Structure, "the form body is not UTF-8".into()))?;
    let all =
        [q.as_deref().unwrap_or(""), form].iter().filter(|x| !x.is_empty()).copied().collect::<Vec<_>>().join("&");
    if rt.as_str() == "AuditEvent" {
        let criteria: String = all.chars().take(2000).collect();
        let attach = |r: Response| {
            let mut note = r.extensions().get::<AuditNote>().cloned().unwrap_or_default();
            note.query = Some(criteria.clone());
            note.attach(r)
        };
        return audit_event_search(&s, Some(&all)).await.map(attach);
    }
    run_search(&s, &p, &rt, &headers, &all, &all).await
}

/// Whether a `Prefer` header (any of them, comma- or semicolon-separated) carries `token`.
pub(crate) fn prefers(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split([',', ';']))
        .any(|p| p.trim() == token)
}

pub(crate) fn strict_handling(headers: &HeaderMap) -> bool {
    prefers(headers, "handling=strict")
}

/// Runs a search by `query`; `criteria` is what the audit entry records of it (the URL's query,
/// or with a form body, both).
async fn run_search(
    s: &AppState,
    p: &Principal,
    rt: &ResourceType,
    headers: &HeaderMap,
    query: &str,
    criteria: &str,
) -> ApiResult {
    let now = s.enforcer.clock().now().0.div_euclid(1_000_000).saturating_mul(1_000_000);
    let req = search::parse_search(rt.as_str(), query, strict_handling(headers), now)?;
    let records = s.records.clone();
    let ctx = p.context().with_query(Some(criteria));
    let req2 = req.clone();
    // The page is found on a blocking thread; its audit entry is waited for here, without one.
    let audited = blocking(move || Ok(records.search_page(&ctx, &req2))).await?;
    // The Bundle is written while the entry is made durable, and sent only after.
    let bundle = audited.map(|page| searchset_text(s, rt.as_str(), &req, &page)).await?;
    Ok(fhir_text_response(StatusCode::OK, bundle))
}

/// One entry of a `searchset` Bundle: a resource sent whole, as stored, or an entry built as JSON
/// (a subset by `_summary`/`_elements`, the outcome).
enum Entry<'a> {
    Stored { full_url: String, body: &'a str, mode: &'static str },
    Built(Value),
}

/// A search result page as a `searchset` Bundle: the Bundle without its entries, and the entries.
fn searchset_parts<'a>(
    s: &AppState,
    rt: &str,
    req: &search::SearchRequest,
    page: &'a search::SearchPage,
) -> (Value, Vec<Entry<'a>>) {
    let base = &s.config.public_url;
    let link = |extra: Option<String>| {
        let mut params = req.used.clone();
        params.extend(extra);
        format!("{base}/fhir/{rt}?{}", params.join("&"))
    };
    let mut links = vec![json!({"relation": "self", "url": link(None)})];
    if let Some(c) = &page.next {
        links.push(json!({"relation": "next", "url": link(Some(format!("_cursor={}", search::encode_cursor(c))))}));
    }
    if let Some(c) = &page.previous {
        links.push(json!({"relation": "previous", "url": link(Some(format!("_cursor={}", search::encode_cursor(c))))}));
    }
    let whole = matches!(req.summary, search::Summary::False | search::Summary::Count) && req.elements.is_none();
    let entry = |v: &'a VersionRecord, mode: &'static str| {
        let full_url = format!("{base}/fhir/{}/{}", v.resource_type, v.id);
        match v.body.as_deref() {
            Some(body) if whole => Entry::Stored { full_url, body, mode },
            _ => {
                let mut body = body_value(v);
                search::subset::apply(v.resource_type.as_str(), &mut body, req.summary, req.elements.as_deref());
                Entry::Built(json!({"fullUrl": full_url, "resource": body, "search": {"mode": mode}}))
            }
        }
    };
    let mut entries: Vec<Entry<'a>> = page.matches.iter().map(|v| entry(v, "match")).collect();
    entries.extend(page.included.iter().map(|v| entry(v, "include")));
    let notes: Vec<String> =
        req.ignored.iter().map(|w| format!("ignored: {w}")).chain(page.notes.iter().cloned()).collect();
    if !notes.is_empty() {
        let issues: Vec<Value> =
            notes.iter().map(|n| json!({"severity": "warning", "code": "not-supported", "diagnostics": n})).collect();
        entries.push(Entry::Built(json!({
            "resource": {"resourceType": "OperationOutcome", "issue": issues},
            "search": {"mode": "outcome"},
        })));
    }
    let mut bundle = json!({"resourceType": "Bundle", "type": "searchset"});
    if let (Some(t), Some(o)) = (page.total, bundle.as_object_mut()) {
        o.insert("total".into(), json!(t));
    }
    if let Some(o) = bundle.as_object_mut() {
        o.insert("link".into(), Value::Array(links));
    }
    (bundle, entries)
}

/// A search result page as a `searchset` Bundle with its paging links (as JSON, for a batch's
/// entry).
pub(crate) fn searchset(s: &AppState, rt: &str, req: &search::SearchRequest, page: &search::SearchPage) -> Value {
    let (mut bundle, entries) = searchset_parts(s, rt, req, page);
    let entries: Vec<Value> = entries
        .into_iter()
        .map(|e| match e {
            Entry::Stored { full_url, body, mode } => json!({
                "fullUrl": full_url,
                "resource": serde_json::from_str::<Value>(body).unwrap_or(Value::Null),
                "search": {"mode": mode},
            }),
            Entry::Built(v) => v,
        })
        .collect();
    if let Some(o) = bundle.as_object_mut() {
        o.insert("entry".into(), Value::Array(entries));
    }
    bundle
}

/// The same Bundle as [`searchset`], serialised, with each whole resource spliced in as stored
/// (canonical JSON, exactly what parsing and serialising it again would give) instead of being
/// parsed and serialised again: that was a fifth of a 50-Patient search's CPU (issue #9).
fn searchset_text(s: &AppState, rt: &str, req: &search::SearchRequest, page: &search::SearchPage) -> String {
    let (bundle, entries) = searchset_parts(s, rt, req, page);
    let mut out = bundle.to_string();
    // `bundle` is a JSON object: drop its closing brace and append the entries.
    out.pop();
    out.push_str(",\"entry\":[");
    for (i, e) in entries.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        match e {
            Entry::Stored { full_url, body, mode } => {
                out.push_str("{\"fullUrl\":");
                out.push_str(&Value::String(full_url.clone()).to_string());
                out.push_str(",\"resource\":");
                out.push_str(body);
                out.push_str(",\"search\":{\"mode\":\"");
                out.push_str(mode);
                out.push_str("\"}}");
            }
            Entry::Built(v) => out.push_str(&v.to_string()),
        }
    }
    out.push_str("]}");
    out
}

async fn audit_event_search(s: &AppState, query: Option<&str>) -> ApiResult {
    let (q, letter) = crate::audit_event::search_query(query)?;
    let limit = q.limit;
    let log = s.audit.clone();
    let q2 = q.clone();
    let found = tokio::task::spawn_blocking(move || log.query(&q2))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let events: Vec<(u64, Value)> = found
        .iter()
        .map(|(i, e)| (*i, crate::audit_event::audit_event(*i, e)))
        .filter(|(_, ev)| letter.as_deref().is_none_or(|l| ev["action"] == l))
        .collect();
    let base = &s.config.public_url;
    let mut links =
        vec![json!({"relation": "self", "url": format!("{base}/fhir/AuditEvent?{}", query.unwrap_or_default())})];
    if found.len() >= limit
        && let Some((last, _)) = found.last()
    {
        let rest: Vec<&str> =
            query.unwrap_or_default().split('&').filter(|p| !p.starts_with("_from=") && !p.is_empty()).collect();
        links.push(
            json!({"relation": "next", "url": format!("{base}/fhir/AuditEvent?{}&_from={}", rest.join("&"), last + 1)}),
        );
    }
    let note = AuditNote {
        resources: events.iter().map(|(i, _)| format!("AuditEvent/{i}")).collect(),
        ..AuditNote::default()
    };
    let bundle = json!({
        "resourceType": "Bundle",
        "type": "searchset",
        "link": links,
        "entry": events.into_iter().map(|(i, ev)| json!({"fullUrl": format!("{base}/fhir/AuditEvent/{i}"), "resource": ev, "search": {"mode": "match"}})).collect::<Vec<_>>(),
    });
    Ok(note.attach(fhir_response(StatusCode::OK, &bundle)))
}

pub(crate) fn body_value(v: &VersionRecord) -> Value {
    v.body.as_deref().and_then(|b| serde_json::from_str(b).ok()).unwrap_or(Value::Null)
}

struct HistoryParams {
    count: usize,
    offset: usize,
    since: Option<Timestamp>,
    before: Option<Timestamp>,
}

fn history_params(q: Option<&str>) -> Result<HistoryParams, ApiError> {
    let mut p = HistoryParams { count: 50, offset: 0, since: None, before: None };
    for pair in q.unwrap_or("").split('&').filter(|s| !s.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = v.replace("%3A", ":").replace("%3a", ":").replace("%2B", "+").replace("%2b", "+");
        let bad = |what: &str| ApiError::BadRequest(IssueCode::Value, format!("`{k}` must be {what}"));
        match k {
            "_count" => p.count = v.parse::<usize>().map_err(|_| bad("a number"))?.clamp(1, 1000),
            "_offset" => p.offset = v.parse().map_err(|_| bad("a number"))?,
            "_since" => p.since = Some(Timestamp::parse_rfc3339(&v).ok_or_else(|| bad("an instant"))?),
            "_before" => p.before = Some(Timestamp::parse_rfc3339(&v).ok_or_else(|| bad("an instant"))?),
            "_format" => {}
            other => {
                return Err(ApiError::BadRequest(
                    IssueCode::NotSupported,
                    format!("history does not support the parameter `{}`", other.chars().take(64).collect::<String>()),
                ));
            }
        }
    }
    Ok(p)
}

async fn history(
    s: AppState,
    p: Principal,
    rt: Option<ResourceType>,
    id: Option<ResourceId>,
    q: Option<String>,
) -> ApiResult {
    let params = history_params(q.as_deref())?;
    // Anchor paging at the first page's time, so versions written meanwhile do not shift pages.
    let before = match params.before {
        Some(b) => b,
        None => s.enforcer.clock().now(),
    };
    let query = HistoryQuery {
        resource_type: rt.clone(),
        id: id.clone(),
        since: params.since,
        before: Some(before),
        count: params.count,
        offset: params.offset,
    };
    let records = s.records.clone();
    let ctx = p.context().with_query(q.as_deref());
    let page = blocking(move || Ok(records.history(&ctx, &query))).await?.await?;
    let base = &s.config.public_url;
    let mut entries = Vec::new();
    for v in &page.entries {
        let (method, url, status) = match v.method {
            Method::Create => ("POST", v.resource_type.to_string(), "201 Created"),
            Method::Update | Method::Approve => ("PUT", format!("{}/{}", v.resource_type, v.id), "200 OK"),
            Method::Patch => ("PATCH", format!("{}/{}", v.resource_type, v.id), "200 OK"),
            Method::Delete => ("DELETE", format!("{}/{}", v.resource_type, v.id), "204 No Content"),
        };
        let mut e = json!({
            "fullUrl": format!("{base}/fhir/{}/{}", v.resource_type, v.id),
            "request": {"method": method, "url": url},
            "response": {"status": status, "etag": etag(v), "lastModified": v.last_updated.to_fhir()},
        });
        if let (Some(_), Some(o)) = (&v.body, e.as_object_mut()) {
            o.insert("resource".into(), body_value(v));
        }
        entries.push(e);
    }
    let path = match (&rt, &id) {
        (Some(rt), Some(id)) => format!("{base}/fhir/{rt}/{id}/_history"),
        (Some(rt), None) => format!("{base}/fhir/{rt}/_history"),
        _ => format!("{base}/fhir/_history"),
    };
    let mut common = format!("_count={}&_before={}", params.count, before.to_fhir().replace(':', "%3A"));
    if let Some(since) = params.since {
        common.push_str(&format!("&_since={}", since.to_fhir().replace(':', "%3A")));
    }
    let mut links = vec![json!({"relation": "self", "url": format!("{path}?{common}&_offset={}", params.offset)})];
    let next = params.offset + params.count;
    // From visible versions only (`more`), so the link reveals nothing withheld.
    if page.more {
        links.push(json!({"relation": "next", "url": format!("{path}?{common}&_offset={next}")}));
    }
    if params.offset > 0 {
        links.push(json!({"relation": "previous", "url": format!("{path}?{common}&_offset={}", params.offset.saturating_sub(params.count))}));
    }
    let mut bundle = json!({"resourceType": "Bundle", "type": "history", "link": links, "entry": entries});
    // A total counts what this principal may see: exactly the entries when the whole visible
    // history is on this first page; the store's count only for an application unrestricted by
    // scope and class from whom nothing was withheld. Never a count that includes hidden
    // versions, and its presence never depends on them for anyone else.
    let total = if params.offset == 0 && !page.more {
        Some(page.entries.len() as u64)
    } else if p.reads_everything() && !page.hidden {
        Some(page.total)
    } else {
        None
    };
    if let (Some(t), Some(o)) = (total, bundle.as_object_mut()) {
        o.insert("total".into(), json!(t));
    }
    Ok(fhir_response(StatusCode::OK, &bundle))
}

/// `GET /fhir/{type}/{id}/_history`.
pub async fn history_instance(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    Path((rt, id)): Path<(String, String)>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> ApiResult {
    check_format(&headers, q.as_deref())?;
    let (rt, id) = (rtype(&rt)?, rid(&id)?);
    p.authorize(rt.as_str(), Action::Read)?;
    history(s, p, Some(rt), Some(id), q).await
}

/// `GET /fhir/{type}/_history`.
pub async fn history_type(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(rt): Path<String>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> ApiResult {
    check_format(&headers, q.as_deref())?;
    let rt = rtype(&rt)?;
    p.authorize(rt.as_str(), Action::Read)?;
    history(s, p, Some(rt), None, q).await
}

/// `GET /fhir/_history`.
pub async fn history_system(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> ApiResult {
    check_format(&headers, q.as_deref())?;
    history(s, p, None, None, q).await
}

/// Anything else.
pub async fn not_found(uri: axum::http::Uri) -> Response {
    let path: String = uri.path().chars().take(200).collect();
    fhir_response(
        StatusCode::NOT_FOUND,
        &outcome(&[mamori_records::Issue::error(IssueCode::NotFound, format!("no endpoint at `{path}`"))]),
    )
}
