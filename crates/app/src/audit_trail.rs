//! The audit trail as a whole (監査証跡): exporting it is itself an audited act.

use crate::{AdminAct, AppError, Ctx, Node};

/// Asks whether the caller may export the trail; call before taking any entry.
pub fn may_export(ctx: &Ctx, node: &Node) -> Result<(), AppError> {
    ctx.authorize(node, AdminAct::ReadAudit)
}

/// Records an export of the trail — which entries went where — as the trail's own entry.
pub fn exported(ctx: &Ctx, node: &Node, detail: String) -> Result<(), AppError> {
    let mut entry =
        mamori_audit::AuditRecord::new("audit-export", ctx.audit_actor(), mamori_audit::Outcome::Success, "HOPERAT");
    entry.detail = Some(detail);
    entry.request_id = ctx.request_id.clone();
    entry.source = ctx.source.clone();
    node.store
        .append(vec![entry])
        .map(|_| ())
        .map_err(|e| AppError::Failed(format!("the export's own audit entry: {e}")))
}

/// A search of the trail (the console's audit view): by patient, person or application, action,
/// outcome and time; newest first, one page at a time.
#[derive(Debug, Clone, Default)]
pub struct Search {
    /// `Patient/123`.
    pub patient: Option<String>,
    /// An account, an application (`client_id`) or a `Practitioner/…`.
    pub agent: Option<String>,
    /// An action (`read`, `login`, `break-glass`…).
    pub action: Option<String>,
    /// An outcome.
    pub outcome: Option<mamori_audit::Outcome>,
    /// From this time (µs), inclusive.
    pub since: Option<i64>,
    /// Until this time (µs), exclusive.
    pub until: Option<i64>,
    /// Entries older than this leaf index (the next page).
    pub before: Option<u64>,
    /// Page size (1–200; 50 when 0).
    pub limit: usize,
}

/// One page of a search.
#[derive(Debug, Clone)]
pub struct Page {
    /// Entries, newest first.
    pub entries: Vec<(u64, mamori_audit::AuditRecord)>,
    /// Where the next page starts (`Search::before`), if there may be more.
    pub next: Option<u64>,
    /// Entries in the trail.
    pub size: u64,
}

/// Entries examined per page at most: a search over a long trail returns what it found in that
/// many and a link to go on, instead of scanning millions of entries in one request.
pub const SCAN_PER_PAGE: usize = 200_000;

/// Searches the trail. Searching is itself recorded (`audit-search`, with the criteria), as any
/// look into who did what.
pub fn search(ctx: &Ctx, node: &Node, s: &Search) -> Result<Page, AppError> {
    ctx.authorize(node, AdminAct::ReadAudit)?;
    if let (Some(a), Some(b)) = (s.since, s.until)
        && a >= b
    {
        return Err(AppError::Invalid("the start of the period must be before its end".into()));
    }
    let limit = if s.limit == 0 { 50 } else { s.limit.min(200) };
    let q = mamori_audit::EntryQuery {
        since: s.since,
        until: s.until,
        patient: s.patient.clone(),
        agent: s.agent.clone(),
        action: s.action.clone(),
        outcome: s.outcome,
        newest_first: true,
        before_index: s.before,
        limit: limit + 1,
        scan_limit: SCAN_PER_PAGE,
        ..mamori_audit::EntryQuery::default()
    };
    let (found, stopped) = node.store.query_page(&q).map_err(|e| AppError::Failed(format!("audit: {e}")))?;
    let mut entries = Vec::with_capacity(found.len());
    for (i, bytes) in found {
        let r = serde_json::from_slice::<mamori_audit::AuditRecord>(&bytes)
            .map_err(|e| AppError::Failed(format!("audit entry {i}: {e}")))?;
        entries.push((i, r));
    }
    let next = if entries.len() > limit {
        entries.truncate(limit);
        entries.last().map(|(i, _)| *i)
    } else {
        stopped
    };
    let size = node.store.audit_size().map_err(AppError::from)?;
    let mut criteria = Vec::new();
    for (k, v) in [("patient", &s.patient), ("agent", &s.agent), ("action", &s.action)] {
        if let Some(v) = v {
            criteria.push(format!("{k}={v}"));
        }
    }
    if let Some(o) = s.outcome {
        criteria.push(format!("outcome={o:?}").to_lowercase());
    }
    let mut entry =
        mamori_audit::AuditRecord::new("audit-search", ctx.audit_actor(), mamori_audit::Outcome::Success, "HOPERAT");
    entry.query = Some(criteria.join("&"));
    entry.detail = Some(format!("{} entries shown", entries.len()));
    entry.request_id = ctx.request_id.clone();
    entry.source = ctx.source.clone();
    node.store.append(vec![entry]).map_err(|e| AppError::Failed(format!("audit: {e}")))?;
    Ok(Page { entries, next, size })
}

/// One entry of the trail, with whether the latest signed checkpoint covers it.
pub fn entry(ctx: &Ctx, node: &Node, index: u64) -> Result<(mamori_audit::AuditRecord, bool), AppError> {
    ctx.authorize(node, AdminAct::ReadAudit)?;
    let bytes = node
        .store
        .entries(index, 1)
        .map_err(|e| AppError::Failed(format!("audit: {e}")))?
        .into_iter()
        .next()
        .ok_or_else(|| AppError::NotFound(format!("no audit entry {index}")))?;
    let r = serde_json::from_slice::<mamori_audit::AuditRecord>(&bytes)
        .map_err(|e| AppError::Failed(format!("audit entry {index}: {e}")))?;
    let checkpointed = node.store.audit_integrated_size().map_err(AppError::from)? > index;
    let mut read =
        mamori_audit::AuditRecord::new("audit-read", ctx.audit_actor(), mamori_audit::Outcome::Success, "HOPERAT");
    read.detail = Some(format!("entry {index}"));
    read.request_id = ctx.request_id.clone();
    read.source = ctx.source.clone();
    node.store.append(vec![read]).map_err(|e| AppError::Failed(format!("audit: {e}")))?;
    Ok((r, checkpointed))
}

/// The latest signed checkpoint (`None` before the first) and the trail's size.
pub fn checkpoint(ctx: &Ctx, node: &Node) -> Result<(Option<String>, u64, u64), AppError> {
    ctx.authorize(node, AdminAct::ReadAudit)?;
    let note = node.store.latest_checkpoint().map_err(|e| AppError::Failed(format!("audit: {e}")))?;
    let size = node.store.audit_size().map_err(AppError::from)?;
    let integrated = node.store.audit_integrated_size().map_err(AppError::from)?;
    Ok((note, size, integrated))
}

/// The latest alerts (`alert-…` entries: lockouts, break-glass, emergency accounts, stolen
/// sessions), newest first, from the trail's alert index.
pub fn recent_alerts(ctx: &Ctx, node: &Node, limit: usize) -> Result<Vec<(u64, mamori_audit::AuditRecord)>, AppError> {
    ctx.authorize(node, AdminAct::ReadAudit)?;
    let found = node.store.recent_alerts(limit).map_err(|e| AppError::Failed(format!("audit: {e}")))?;
    found
        .into_iter()
        .map(|(i, bytes)| {
            serde_json::from_slice(&bytes)
                .map(|r| (i, r))
                .map_err(|e| AppError::Failed(format!("audit entry {i}: {e}")))
        })
        .collect()
}
