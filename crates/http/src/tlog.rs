//! The audit log as C2SP tlog-tiles under `/audit/log/` (RFC 9162 Merkle tree): the signed
//! checkpoint, tiles and entry bundles, inclusion and consistency proofs. Reading them is reading
//! the audit trail, decided as a read of `AuditEvent`.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use mamori_access::{Action, Principal};
use mamori_audit::merkle;
use mamori_audit::note::Checkpoint;
use mamori_audit::tiles::{self, TileNodes, TilePath};
use mamori_records::IssueCode;
use serde_json::{Value, json};

use crate::audit::AuditNote;
use crate::{ApiError, AppState};

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
