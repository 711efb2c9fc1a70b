//! The audit trail at the edge: the layer that records every request (L1, L3), the C2SP
//! tlog-tiles endpoints under `/audit/log/`, inclusion and consistency proofs, and the read-only
//! FHIR `AuditEvent` view built from entries.
//!
//! INVARIANT: a response leaves only after its audit entry is durable; if the entry cannot be
//! written the client gets 503 instead (fail closed).

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use mamori_audit::merkle;
use mamori_audit::note::Checkpoint;
use mamori_audit::tiles::{self, TileNodes, TilePath};
use mamori_audit::{AuditActor, AuditRecord, EntryQuery, Outcome};
use mamori_records::IssueCode;
use serde_json::{Value, json};

use crate::error::{RequestId, fhir_response, outcome};
use crate::{ApiError, AppState};
use mamori_access::{Action, Principal};

/// What a handler tells the audit layer about its response.
#[derive(Debug, Clone, Default)]
pub struct AuditNote {
    /// Resources revealed or changed (`Type/id/_history/v`).
    pub resources: Vec<String>,
    /// Patients concerned.
    pub patients: Vec<String>,
    /// The handler's write already appended its entry in the same transaction.
    pub in_transaction: bool,
    /// The request's criteria when they were not in the URL (`POST …/_search`).
    pub query: Option<String>,
}

impl AuditNote {
    /// Attaches the note to a response.
    pub fn attach(self, mut r: Response) -> Response {
        r.extensions_mut().insert(self);
        r
    }
}

/// The action of a request, from its method and path.
fn action_of(method: &Method, path: &str) -> String {
    let p = path.trim_start_matches('/');
    let segs: Vec<&str> = p.split('/').collect();
    if segs.first() == Some(&"audit") {
        return "audit-read".into();
    }
    let segs: Vec<&str> = segs.into_iter().skip(1).collect();
    let m = method.as_str();
    match (m, segs.as_slice()) {
        (_, ["_history"]) | (_, [_, "_history"]) | (_, [_, _, "_history"]) => "history",
        (_, [_, _, "_history", _]) => "vread",
        (_, [_, _, op]) if op.starts_with('$') => op.trim_start_matches('$'),
        ("GET", [_]) | ("POST", [_, "_search"]) | ("POST", ["_search"]) => "search",
        ("POST", [_]) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", _) => "delete",
        ("GET", [_, _]) => "read",
        _ => "other",
    }
    .to_string()
}

/// Records every request that reaches `/fhir` or `/audit` (except `metadata`).
pub async fn layer(State(s): State<AppState>, req: Request, next: Next) -> Response {
    // The full path: inside a nested router `req.uri()` has lost its `/fhir` or `/audit` prefix.
    let path = req
        .extensions()
        .get::<axum::extract::OriginalUri>()
        .map_or_else(|| req.uri().path().to_string(), |u| u.0.path().to_string());
    if path == "/fhir/metadata" {
        return next.run(req).await;
    }
    let method = req.method().clone();
    let query = req.uri().query().map(|q| q.chars().take(2000).collect::<String>());
    let request_id = req.extensions().get::<RequestId>().map(|r| r.0.clone());
    let source = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip().to_string());
    let resp = next.run(req).await;
    let note = resp.extensions().get::<AuditNote>().cloned().unwrap_or_default();
    let principal = resp.extensions().get::<Principal>().cloned();
    // A write's own entry (same transaction) stands for the request, unless something was
    // withheld or refused on the way: those denials need this entry.
    if note.in_transaction && resp.status().is_success() && principal.as_ref().is_none_or(|p| p.denied().is_empty()) {
        return resp;
    }
    let status = resp.status();
    let actor = principal.as_ref().map(|p| p.audit_actor()).unwrap_or(AuditActor {
        client_id: None,
        fhir_user: None,
        id: String::new(),
        kind: "anonymous".into(),
    });
    // Denials by the access policy are recorded with their reasons, even when the response
    // (a 404, or a search with records withheld) does not say so to the client.
    let denied = principal.as_ref().map(Principal::denied).unwrap_or_default();
    let detail = (!denied.is_empty()).then(|| format!("withheld or refused by access policy: {}", denied.join("; ")));
    let record = AuditRecord {
        action: action_of(&method, &path),
        actor,
        detail,
        outcome: if status.is_success() || status == StatusCode::NOT_MODIFIED {
            Outcome::Success
        } else if status == StatusCode::UNAUTHORIZED
            || status == StatusCode::FORBIDDEN
            || (status == StatusCode::NOT_FOUND && !denied.is_empty())
        {
            Outcome::Denied
        } else {
            Outcome::Failure
        },
        patients: note.patients,
        purpose: principal.as_ref().map_or_else(|| "TREAT".to_string(), Principal::purpose),
        query: note.query.or(query),
        request_id,
        resources: if note.resources.is_empty() { vec![path.clone()] } else { note.resources },
        source,
        status: Some(status.as_u16()),
        time: String::new(),
        v: 1,
    };
    match append(&s, record).await {
        Ok(()) => resp,
        Err(e) => fail_closed(&e),
    }
}

/// Appends one record and waits, without holding a thread, until it is durable.
pub async fn append(s: &AppState, record: AuditRecord) -> Result<(), String> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    s.audit.append_then(
        vec![record],
        Box::new(move |r| {
            let _ = tx.send(r);
        }),
    );
    match rx.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("the audit writer dropped the request".into()),
    }
}

fn fail_closed(e: &str) -> Response {
    tracing::error!(error = %e, "audit append failed; refusing the response");
    let mut r = fhir_response(
        StatusCode::SERVICE_UNAVAILABLE,
        &outcome(&[mamori_records::Issue::error(
            IssueCode::Exception,
            "the audit trail could not be written, so the request was not completed (監査証跡に記録できません)",
        )]),
    );
    r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    r
}

fn require_audit(p: &Principal) -> Result<(), ApiError> {
    Ok(p.authorize("AuditEvent", Action::Read)?)
}

/// `GET /audit/log/checkpoint`.
pub async fn checkpoint(
    State(s): State<AppState>,
    axum::Extension(p): axum::Extension<Principal>,
) -> Result<Response, ApiError> {
    require_audit(&p)?;
    let log = s.audit.clone();
    let note = tokio::task::spawn_blocking(move || log.latest_checkpoint())
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .ok_or_else(|| ApiError::NotFound("no checkpoint yet".into()))?;
    let mut r = (StatusCode::OK, note).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(AuditNote::default().attach(r))
}

/// `GET /audit/log/tile/{*path}`: hash tiles and entry bundles.
pub async fn tile(
    State(s): State<AppState>,
    axum::Extension(p): axum::Extension<Principal>,
    Path(rest): Path<String>,
) -> Result<Response, ApiError> {
    require_audit(&p)?;
    let t = tiles::parse(&rest).map_err(|e| ApiError::NotFound(e.to_string()))?;
    let log = s.audit.clone();
    let body = tokio::task::spawn_blocking(move || -> Result<Option<Vec<u8>>, mamori_audit::Error> {
        let integrated = log
            .latest_checkpoint()?
            .and_then(|n| n.split("\n\n").next().and_then(|b| Checkpoint::parse(&format!("{b}\n")).ok()))
            .map_or(0, |c| c.size);
        match t {
            TilePath::Hashes { level, index, width } => {
                let hashes = log.tile(level, index)?;
                let want = width.map_or(tiles::WIDTH as usize, usize::from);
                // Serve exactly the requested width, and only what the latest checkpoint covers.
                let covered = integrated.checked_shr(u32::from(level) * 8).unwrap_or(0);
                if hashes.len() < want || index * tiles::WIDTH + want as u64 > covered {
                    return Ok(None);
                }
                Ok(Some(hashes.get(..want).unwrap_or_default().concat()))
            }
            TilePath::Entries { index, width } => {
                let want = width.map_or(tiles::WIDTH, u64::from);
                if index * tiles::WIDTH + want > integrated {
                    return Ok(None);
                }
                let entries = log.entries(index * tiles::WIDTH, want)?;
                if entries.len() as u64 != want {
                    return Ok(None);
                }
                let mut out = Vec::new();
                for e in entries {
                    let len = u16::try_from(e.len()).unwrap_or(u16::MAX);
                    out.extend_from_slice(&len.to_be_bytes());
                    out.extend_from_slice(e.get(..usize::from(len)).unwrap_or_default());
                }
                Ok(Some(out))
            }
        }
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?
    .map_err(|e| ApiError::Internal(e.to_string()))?
    .ok_or_else(|| ApiError::NotFound(format!("tile `{rest}` does not exist (yet)")))?;
    let mut r = (StatusCode::OK, body).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    Ok(AuditNote::default().attach(r))
}

#[derive(serde::Deserialize)]
pub struct InclusionParams {
    index: u64,
    size: Option<u64>,
}

fn integrated(s: &AppState) -> Result<u64, ApiError> {
    let note = s.audit.latest_checkpoint().map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(note
        .and_then(|n| n.split("\n\n").next().and_then(|b| Checkpoint::parse(&format!("{b}\n")).ok()))
        .map_or(0, |c| c.size))
}

fn b64s(hs: &[mamori_audit::Hash]) -> Vec<String> {
    hs.iter().map(|h| B64.encode(h)).collect()
}

/// `GET /audit/proof/inclusion?index=N[&size=S]`.
pub async fn inclusion(
    State(s): State<AppState>,
    axum::Extension(p): axum::Extension<Principal>,
    q: Result<Query<InclusionParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    require_audit(&p)?;
    let Query(q) = q.map_err(|e| ApiError::BadRequest(IssueCode::Invalid, e.body_text()))?;
    let s2 = s.clone();
    let v = tokio::task::spawn_blocking(move || -> Result<Value, ApiError> {
        let size = q.size.unwrap_or(integrated(&s2)?);
        if size > integrated(&s2)? || q.index >= size {
            return Err(ApiError::BadRequest(IssueCode::Value, format!("index {} is not in an integrated tree of size {size}", q.index)));
        }
        let log = s2.audit.clone();
        let nodes = TileNodes::new(|l, i| log.tile(l, i));
        let proof = merkle::inclusion_proof(&nodes, q.index, size).map_err(|e| ApiError::Internal(e.to_string()))?;
        let leaf = merkle::NodeSource::node(&nodes, 0, q.index).map_err(|e| ApiError::Internal(e.to_string()))?;
        let root = merkle::root(&nodes, size).map_err(|e| ApiError::Internal(e.to_string()))?;
        Ok(json!({"index": q.index, "tree_size": size, "leaf_hash": B64.encode(leaf), "root_hash": B64.encode(root), "hashes": b64s(&proof)}))
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))??;
    Ok(AuditNote::default().attach(axum::Json(v).into_response()))
}

#[derive(serde::Deserialize)]
pub struct ConsistencyParams {
    from: u64,
    to: u64,
}

/// `GET /audit/proof/consistency?from=A&to=B`.
pub async fn consistency(
    State(s): State<AppState>,
    axum::Extension(p): axum::Extension<Principal>,
    q: Result<Query<ConsistencyParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    require_audit(&p)?;
    let Query(q) = q.map_err(|e| ApiError::BadRequest(IssueCode::Invalid, e.body_text()))?;
    let s2 = s.clone();
    let v = tokio::task::spawn_blocking(move || -> Result<Value, ApiError> {
        if q.from > q.to || q.to > integrated(&s2)? {
            return Err(ApiError::BadRequest(
                IssueCode::Value,
                format!("sizes {}..{} are not integrated sizes in order", q.from, q.to),
            ));
        }
        let log = s2.audit.clone();
        let nodes = TileNodes::new(|l, i| log.tile(l, i));
        let proof = merkle::consistency_proof(&nodes, q.from, q.to).map_err(|e| ApiError::Internal(e.to_string()))?;
        Ok(json!({"from": q.from, "to": q.to, "hashes": b64s(&proof)}))
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))??;
    Ok(AuditNote::default().attach(axum::Json(v).into_response()))
}

/// The FHIR `AuditEvent` (IHE BALP style) for one entry.
pub fn audit_event(index: u64, entry: &[u8]) -> Value {
    let Ok(r) = serde_json::from_slice::<AuditRecord>(entry) else {
        return json!({"resourceType": "AuditEvent", "id": index.to_string()});
    };
    let (letter, interaction) = match r.action.as_str() {
        "create" => ("C", "create"),
        "update" | "approve" => ("U", "update"),
        "patch" => ("U", "patch"),
        "delete" => ("D", "delete"),
        "search" => ("E", "search-type"),
        "history" => ("R", "history-instance"),
        "vread" => ("R", "vread"),
        "read" | "audit-read" => ("R", "read"),
        _ => ("E", "operation"),
    };
    let who = match &r.actor.fhir_user {
        Some(u) => json!({"reference": u}),
        None => json!({"identifier": {"system": format!("urn:mamori:{}", r.actor.kind), "value": r.actor.id}}),
    };
    let mut agent = json!({
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP", "display": "information recipient"}]},
        "who": who,
        "requestor": true,
    });
    if let (Some(addr), Some(a)) = (&r.source, agent.as_object_mut()) {
        a.insert("network".into(), json!({"address": addr, "type": "2"}));
    }
    let mut agents = vec![agent];
    if let Some(c) = &r.actor.client_id {
        agents.push(json!({
            "type": {"coding": [{"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110150", "display": "Application"}]},
            "who": {"identifier": {"system": "urn:mamori:client", "value": c}},
            "requestor": false,
        }));
    }
    let mut entities: Vec<Value> = r
        .patients
        .iter()
        .map(|p| json!({"what": {"reference": p}, "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "1", "display": "Patient"}}))
        .collect();
    for res in r.resources.iter().filter(|x| x.contains('/') && !x.starts_with('/')) {
        entities.push(json!({"what": {"reference": res}, "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "4", "display": "Domain Resource"}}));
    }
    if let Some(q) = &r.query {
        entities.push(json!({"type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2"}, "query": B64.encode(q)}));
    }
    if let Some(id) = &r.request_id {
        entities.push(json!({"what": {"identifier": {"system": "urn:mamori:request-id", "value": id}}}));
    }
    let mut ev = json!({
        "resourceType": "AuditEvent",
        "id": index.to_string(),
        "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest", "display": "RESTful Operation"},
        "subtype": [{"system": "http://hl7.org/fhir/restful-interaction", "code": interaction}, {"system": "urn:mamori:audit-action", "code": r.action}],
        "action": letter,
        "recorded": r.time,
        "outcome": match r.outcome { Outcome::Success => "0", Outcome::Failure => "8", Outcome::Denied => "4" },
        "purposeOfEvent": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": r.purpose}]}],
        "agent": agents,
        "source": {"observer": {"display": "Mamori"}, "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4", "display": "Application Server"}]},
    });
    if let Some(o) = ev.as_object_mut() {
        if !entities.is_empty() {
            o.insert("entity".into(), Value::Array(entities));
        }
        if let Some(d) = r.detail.or(r.status.map(|s| format!("HTTP {s}"))) {
            o.insert("outcomeDesc".into(), Value::String(d));
        }
    }
    ev
}

fn parse_date_bound(v: &str) -> Option<(String, i64, i64)> {
    let (prefix, rest) = match v.get(..2) {
        Some(p @ ("eq" | "ne" | "lt" | "le" | "gt" | "ge" | "sa" | "eb" | "ap")) => {
            (p.to_string(), v.get(2..).unwrap_or(""))
        }
        _ => ("eq".to_string(), v),
    };
    // The range [start, end) the value denotes at its precision.
    let day = |d: &str| mamori_records::Timestamp::parse_rfc3339(&format!("{d}T00:00:00Z"));
    let (start, end) = if rest.len() == 10 {
        let s = day(rest)?;
        (s.0, s.0 + 86_400_000_000)
    } else {
        let t = mamori_records::Timestamp::parse_rfc3339(rest)?;
        (t.0, t.0 + 1)
    };
    Some((prefix, start, end))
}

/// `GET /fhir/AuditEvent?patient=&agent=&date=&action=&_count=`.
pub fn search_query(query: Option<&str>) -> Result<(EntryQuery, Option<String>), ApiError> {
    let mut q = EntryQuery { limit: 100, ..EntryQuery::default() };
    let mut letter = None;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = v
            .replace("%2F", "/")
            .replace("%2f", "/")
            .replace("%3A", ":")
            .replace("%3a", ":")
            .replace("%2B", "+")
            .replace("%2b", "+");
        let bad = |m: &str| ApiError::BadRequest(IssueCode::Value, format!("`{k}`: {m}"));
        match k {
            "patient" => q.patient = Some(if v.starts_with("Patient/") { v } else { format!("Patient/{v}") }),
            "agent" => q.agent = Some(v),
            "action" if v.len() == 1 => letter = Some(v),
            "action" | "subtype" => q.action = Some(v),
            "date" => {
                let (p, start, end) = parse_date_bound(&v).ok_or_else(|| bad("not a date or dateTime"))?;
                match p.as_str() {
                    "ge" | "sa" => q.since = Some(q.since.map_or(start, |s| s.max(start))),
                    "gt" => q.since = Some(q.since.map_or(end, |s| s.max(end))),
                    "le" | "eb" => q.until = Some(q.until.map_or(end, |u| u.min(end))),
                    "lt" => q.until = Some(q.until.map_or(start, |u| u.min(start))),
                    "eq" | "ap" => {
                        q.since = Some(start);
                        q.until = Some(end);
                    }
                    _ => return Err(bad("prefix not supported")),
                }
            }
            "_count" => q.limit = v.parse::<usize>().map_err(|_| bad("not a number"))?.clamp(1, 1000),
            "_from" => q.from_index = v.parse().map_err(|_| bad("not a number"))?,
            "_format" => {}
            other => {
                return Err(ApiError::BadRequest(
                    IssueCode::NotSupported,
                    format!(
                        "AuditEvent search supports patient, agent, date, action, _count; not `{}`",
                        other.chars().take(64).collect::<String>()
                    ),
                ));
            }
        }
    }
    Ok((q, letter))
}
