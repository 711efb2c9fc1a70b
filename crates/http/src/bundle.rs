//! `POST /fhir` with a batch or transaction Bundle (the records crate's [`bundle`] runs it).
//!
//! Every entry passes the enforcement point for each interaction it asks (a conditional entry
//! also needs `search`); a transaction with any refused entry is refused whole. The written
//! versions are audited in their own transaction, as single writes are; what the response
//! reveals without writing (reads, searches, matched conditional creates) is named in the
//! request's audit entry.

use axum::body::Body;
use axum::extract::{Extension, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use mamori_records::bundle::{self, BundleDone, BundleEntry, BundleKind, Interaction, locate};
use mamori_records::{RecordError, VersionRecord, WriteOutcome};
use serde_json::{Map, Value, json};

use crate::error::{fhir_response, outcome};
use crate::fhir::{
    BodyKind, Return, blocking, body_value, check_format, etag, prefer_return, read_body, refuse_audit_event_writes,
    searchset,
};
use crate::{ApiError, AppState};
use mamori_access::{Action, Principal};

fn action(i: Interaction) -> Action {
    match i {
        Interaction::Read => Action::Read,
        Interaction::Search => Action::Search,
        Interaction::Create => Action::Create,
        Interaction::Update => Action::Update,
        Interaction::Delete => Action::Delete,
    }
}

/// The enforcement point's answer for one entry.
fn authorize(p: &Principal, e: &BundleEntry) -> Result<(), ApiError> {
    if let Some(rt) = e.op.writes() {
        refuse_audit_event_writes(rt)?;
    }
    let (rt, needs) = e.op.needs();
    Ok(needs.into_iter().try_for_each(|n| p.authorize(rt, action(n)))?)
}

fn status_line(code: StatusCode) -> String {
    format!("{} {}", code.as_u16(), code.canonical_reason().unwrap_or(""))
}

/// An error as a Bundle entry's `response`.
fn error_entry(i: usize, e: ApiError) -> Value {
    let (status, issues) = e.status_issues();
    let issues: Vec<_> = issues.into_iter().map(|x| locate(i, x)).collect();
    json!({"response": {"status": status_line(status), "outcome": outcome(&issues)}})
}

/// An error that fails a whole transaction: one OperationOutcome naming the entry.
fn transaction_error(i: Option<usize>, e: ApiError) -> Response {
    let (status, issues) = e.status_issues();
    let issues: Vec<_> = match i {
        Some(i) => issues.into_iter().map(|x| locate(i, x)).collect(),
        None => issues,
    };
    fhir_response(status, &outcome(&issues))
}

struct Built {
    entry: Value,
    /// Revealed without being written (for the request's audit entry).
    revealed: Vec<VersionRecord>,
}

fn done_entry(s: &AppState, d: BundleDone, ret: Return) -> Built {
    let base = &s.config.public_url;
    let full_url = |v: &VersionRecord| json!(format!("{base}/fhir/{}/{}", v.resource_type, v.id));
    let mut revealed = Vec::new();
    let mut entry = Map::new();
    let mut response = Map::new();
    match d {
        BundleDone::Written(out) => {
            let v = &out.record;
            let status = if out.created { StatusCode::CREATED } else { StatusCode::OK };
            entry.insert("fullUrl".into(), full_url(v));
            response.insert("status".into(), json!(status_line(status)));
            response.insert("location".into(), json!(format!("{}/{}/_history/{}", v.resource_type, v.id, v.version)));
            response.insert("etag".into(), json!(etag(v)));
            response.insert("lastModified".into(), json!(v.last_updated.to_fhir()));
            match ret {
                Return::Representation => {
                    entry.insert("resource".into(), body_value(v));
                }
                Return::Outcome => {
                    let o = json!({"resourceType": "OperationOutcome", "issue": [{
                        "severity": "information", "code": "informational",
                        "diagnostics": format!("{}/{} version {} stored", v.resource_type, v.id, v.version)}]});
                    response.insert("outcome".into(), o);
                }
                Return::Minimal => {}
            }
            if !out.written {
                revealed.push(out.record);
            }
        }
        BundleDone::Deleted(v) => {
            response.insert("status".into(), json!(status_line(StatusCode::NO_CONTENT)));
            if let Some(v) = v {
                response.insert("etag".into(), json!(etag(&v)));
            }
        }
        BundleDone::Read(v) => {
            entry.insert("fullUrl".into(), full_url(&v));
            entry.insert("resource".into(), body_value(&v));
            response.insert("status".into(), json!(status_line(StatusCode::OK)));
            response.insert("etag".into(), json!(etag(&v)));
            response.insert("lastModified".into(), json!(v.last_updated.to_fhir()));
            revealed.push(v);
        }
        BundleDone::Found(req, page) => {
            entry.insert("resource".into(), searchset(s, &req.query.resource_type, &req, &page));
            response.insert("status".into(), json!(status_line(StatusCode::OK)));
            revealed.extend(page.matches);
            revealed.extend(page.included);
        }
    }
    entry.insert("response".into(), Value::Object(response));
    Built { entry: Value::Object(entry), revealed }
}

/// `POST /fhir`: a batch or transaction Bundle.
pub async fn process(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Body,
) -> Result<Response, ApiError> {
    check_format(&headers, q.as_deref())?;
    let bytes = read_body(&s, &headers, body, BodyKind::Resource).await?;
    let base = format!("{}/fhir", s.config.public_url);
    let now = s.enforcer.clock().now().0.div_euclid(1_000_000).saturating_mul(1_000_000);
    let parsed = blocking(move || {
        let v: Value = serde_json::from_slice(&bytes).map_err(|e| {
            RecordError::invalid(mamori_records::IssueCode::Structure, format!("body is not valid JSON: {e}"))
        })?;
        bundle::parse_bundle(&v, &base, now)
    })
    .await?;
    let ret = prefer_return(&headers);
    let ctx = p.context();
    let records = s.records.clone();
    let results: Vec<Result<BundleDone, ApiError>> = match parsed.kind {
        BundleKind::Transaction => {
            let mut entries = Vec::with_capacity(parsed.entries.len());
            for (i, e) in parsed.entries.into_iter().enumerate() {
                match e.map_err(ApiError::from).and_then(|e| authorize(&p, &e).map(|()| e)) {
                    Ok(e) => entries.push(e),
                    Err(err) => return Ok(transaction_error(Some(i), err)),
                }
            }
            let out = tokio::task::spawn_blocking(move || records.transaction(&ctx, &entries))
                .await
                .map_err(|e| ApiError::Internal(format!("worker failed: {e}")))?;
            match out {
                Ok(done) => done.into_iter().map(Ok).collect(),
                Err((i, e)) => return Ok(transaction_error(i, ApiError::from(e))),
            }
        }
        BundleKind::Batch => {
            let checked: Vec<Result<BundleEntry, ApiError>> = parsed
                .entries
                .into_iter()
                .map(|e| e.map_err(ApiError::from).and_then(|e| authorize(&p, &e).map(|()| e)))
                .collect();
            let mut results: Vec<Option<Result<BundleDone, ApiError>>> = Vec::with_capacity(checked.len());
            let mut runnable = Vec::new();
            for (i, e) in checked.into_iter().enumerate() {
                match e {
                    Ok(e) => {
                        runnable.push((i, e));
                        results.push(None);
                    }
                    Err(err) => results.push(Some(Err(err))),
                }
            }
            let (at, ok): (Vec<usize>, Vec<BundleEntry>) = runnable.into_iter().unzip();
            let done = blocking(move || Ok(records.batch(&ctx, &ok))).await?;
            for (i, d) in at.into_iter().zip(done) {
                if let Some(slot) = results.get_mut(i) {
                    *slot = Some(d.map_err(ApiError::from));
                }
            }
            results
                .into_iter()
                .map(|r| r.unwrap_or_else(|| Err(ApiError::Internal("a batch entry was not run".into()))))
                .collect()
        }
    };
    let mut revealed = Vec::new();
    let mut entries = Vec::with_capacity(results.len());
    // Whether every entry was a write that appended its own audit entry; anything else (a read,
    // a search, an error, nothing at all) needs the request's own entry.
    let mut all_written = !results.is_empty();
    for (i, r) in results.into_iter().enumerate() {
        all_written &= matches!(
            &r,
            Ok(BundleDone::Written(WriteOutcome { written: true, .. })) | Ok(BundleDone::Deleted(Some(_)))
        );
        match r {
            Ok(d) => {
                let mut b = done_entry(&s, d, ret);
                revealed.append(&mut b.revealed);
                entries.push(b.entry);
            }
            Err(e) => entries.push(error_entry(i, e)),
        }
    }
    let kind = match parsed.kind {
        BundleKind::Batch => "batch-response",
        BundleKind::Transaction => "transaction-response",
    };
    let bundle = json!({"resourceType": "Bundle", "type": kind, "entry": entries});
    let mut note = crate::fhir::note_of_all(revealed.iter());
    // The writes were audited with their transaction; the request's own entry names the rest
    // (reads, searches, refusals and failures), unless every entry was such a write.
    note.in_transaction = all_written;
    Ok(note.attach(fhir_response(StatusCode::OK, &bundle)))
}
