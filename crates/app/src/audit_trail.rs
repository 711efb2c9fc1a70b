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

/// The result of one check of the whole trail (`verify_now`), kept as workflow state so the
/// dashboard shows the latest without running it again.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Verification {
    /// When it ran (µs since the epoch).
    pub at_micros: i64,
    /// Who ran it.
    pub by: String,
    /// Entries read and recomputed.
    pub entries: u64,
    /// Signed checkpoints whose signature and root matched.
    pub checkpoints: u64,
    /// The root of all entries, hex.
    pub root: String,
    /// Problems found, first first (empty: the trail verifies).
    pub problems: Vec<String>,
    /// How long it took, milliseconds.
    pub millis: u64,
}

impl Verification {
    /// Whether the trail verified.
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }
}

/// One check at a time per process: a second request while one runs is told so.
static VERIFYING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Checks the whole trail now with the offline verifier ([`crate::audit_verify`], its own
/// read-only queries, this node's checkpoint key, witnesses and local witness) and records the
/// result: a version of the `audit-verification` workflow entry (attributed and audited by the
/// one configuration path) and, when the trail does not verify, an `alert-audit-verify` entry
/// that the dashboard's alerts and the metrics show.
pub fn verify_now(ctx: &Ctx, node: &Node) -> Result<Verification, AppError> {
    use std::sync::atomic::Ordering;
    ctx.authorize(node, AdminAct::ReadAudit)?;
    if VERIFYING.swap(true, Ordering::AcqRel) {
        return Err(AppError::Conflict(
            "監査証跡の検証は実行中です / the audit trail is being verified already; wait for the result".into(),
        ));
    }
    struct Done;
    impl Drop for Done {
        fn drop(&mut self) {
            VERIFYING.store(false, Ordering::Release);
        }
    }
    let _done = Done;
    let started = std::time::Instant::now();
    let report = crate::audit_verify::verify(
        &node.dir,
        node.config.database.as_deref(),
        &node.signer.verifier_key(),
        node.config.witness_dir.as_deref(),
        &mut |_| {},
    )
    .map_err(|e| AppError::Failed(format!("audit verify: {e}")))?;
    let v = Verification {
        at_micros: ctx.now().0,
        by: ctx.by(),
        entries: report.entries,
        checkpoints: report.checkpoints,
        root: hex::encode(report.root),
        problems: report.problems,
        millis: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    };
    if !v.passed() {
        let mut alert = mamori_audit::AuditRecord::new(
            "alert-audit-verify",
            ctx.audit_actor(),
            mamori_audit::Outcome::Failure,
            "HOPERAT",
        );
        alert.detail = Some(format!(
            "the audit trail does not verify ({} problem(s)); first: {}",
            v.problems.len(),
            v.problems.first().map_or("", String::as_str)
        ));
        alert.request_id = ctx.request_id.clone();
        alert.source = ctx.source.clone();
        node.store.append(vec![alert]).map_err(|e| AppError::Failed(format!("audit: {e}")))?;
    }
    let kind = crate::registry::ConfigKind::AuditVerification;
    let prev = node.store.config_get(kind.name(), "latest").map_err(AppError::from)?.map(|e| e.version);
    let value = serde_json::to_value(&v).map_err(crate::ctx::failed)?;
    let reason = if v.passed() {
        format!("audit trail verified: {} entries, {} checkpoints", v.entries, v.checkpoints)
    } else {
        format!("audit trail does NOT verify: {} problem(s)", v.problems.len())
    };
    // Another node may have recorded its own run meanwhile: the newest result wins, so retry
    // once on the version that is there now.
    match crate::ctx::change_config(ctx, node, kind, "latest", Some(value.clone()), &reason, prev) {
        Err(AppError::Conflict(_)) => {
            let prev = node.store.config_get(kind.name(), "latest").map_err(AppError::from)?.map(|e| e.version);
            crate::ctx::change_config(ctx, node, kind, "latest", Some(value), &reason, prev)?;
        }
        other => {
            other?;
        }
    }
    Ok(v)
}

/// The latest recorded check of the trail, if it was ever run from the console.
pub fn last_verification(ctx: &Ctx, node: &Node) -> Result<Option<Verification>, AppError> {
    ctx.authorize(node, AdminAct::ReadAudit)?;
    let kind = crate::registry::ConfigKind::AuditVerification;
    let Some(e) = node.store.config_get(kind.name(), "latest").map_err(AppError::from)? else { return Ok(None) };
    e.value.map(serde_json::from_value).transpose().map_err(crate::ctx::failed)
}
