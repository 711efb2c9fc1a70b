//! Bulk Data (HL7 FHIR Bulk Data Access IG 2.0): `$export` at system, Patient and Group level as
//! asynchronous jobs writing NDJSON files, with status polling, cancellation and file download;
//! and `POST /fhir/$import` of an NDJSON body.
//!
//! - Kick-off needs `Prefer: respond-async`; the answer is `202 Accepted` with the job's status URL
//!   in `Content-Location`.
//! - Polling the status URL answers 202 with `X-Progress` while the job runs, 200 with the manifest
//!   when it is complete, and 500 with an OperationOutcome when it failed. `DELETE` on the status
//!   URL cancels the job and removes its files.
//! - Only the client and user that started a job may poll it or download its files, and each
//!   download passes the enforcement point again for the file's type.
//! - Every exported resource passes the requester's guard, as a search does. Each download is
//!   audited with the patients its file is about.
//! - Files live in `DATA_DIR/bulk/JOB/` and are removed 24 hours after the job completes.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::Write;
use std::path::{Path as FsPath, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Extension, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use mamori_records::ndjson::{ExportFilter, ExportScope, Importer};
use mamori_records::search::parse::percent_decode;
use mamori_records::{IssueCode, RecordError, ResourceId, ResourceType, Timestamp, VersionRecord};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::audit::AuditNote;
use crate::error::fhir_response;
use crate::fhir::{blocking, http_date, prefers, strict_handling};
use crate::{ApiError, AppState};
use mamori_access::{Action, Principal};

/// How long a completed job's files are kept.
const KEEP_SECS: i64 = 24 * 3600;
/// Jobs running at once, server-wide.
const MAX_RUNNING: usize = 4;
/// Lines of an import handed to the writer at a time.
const IMPORT_CHUNK: usize = 1000;

/// One output file of a job.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct OutFile {
    #[serde(rename = "type")]
    resource_type: String,
    count: u64,
    /// The patients its resources are about (`Patient/id`), for the download's audit entry.
    patients: BTreeSet<String>,
}

/// A job as kept on disk once it has ended (`job.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Ended {
    owner: String,
    request: String,
    transaction_time: String,
    /// Unix seconds.
    ended: i64,
    files: Vec<OutFile>,
    error: Option<String>,
}

enum JobState {
    Running,
    Ended(Ended),
}

struct Job {
    owner: String,
    state: Mutex<JobState>,
    exported: AtomicU64,
    cancel: AtomicBool,
}

/// The export jobs of this server.
pub struct Jobs {
    dir: PathBuf,
    jobs: Mutex<HashMap<String, Arc<Job>>>,
}

fn now_secs() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

impl Jobs {
    /// Jobs whose files live under `dir`.
    pub fn new(dir: PathBuf) -> Self {
        Jobs { dir, jobs: Mutex::new(HashMap::new()) }
    }

    fn job_dir(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// A job by id: running ones from memory, ended ones from memory or disk.
    fn get(&self, id: &str) -> Option<Arc<Job>> {
        if let Some(j) = self.jobs.lock().ok()?.get(id) {
            return Some(j.clone());
        }
        // Ids are generated hex/uuid; anything else is not a job (and never a path).
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return None;
        }
        let text = std::fs::read_to_string(self.job_dir(id).join("job.json")).ok()?;
        let ended: Ended = serde_json::from_str(&text).ok()?;
        Some(Arc::new(Job {
            owner: ended.owner.clone(),
            state: Mutex::new(JobState::Ended(ended)),
            exported: AtomicU64::new(0),
            cancel: AtomicBool::new(false),
        }))
    }

    /// Export jobs this server knows by state, for `/metrics`: running, and ended in the last
    /// day as completed or failed (a cancelled job is removed).
    pub fn figures(&self) -> Vec<crate::metrics::Figure> {
        let (mut running, mut completed, mut failed) = (0u64, 0u64, 0u64);
        if let Ok(jobs) = self.jobs.lock() {
            for j in jobs.values() {
                match j.state.lock().as_deref() {
                    Ok(JobState::Running) => running += 1,
                    Ok(JobState::Ended(e)) if e.error.is_none() => completed += 1,
                    _ => failed += 1,
                }
            }
        }
        [("running", running), ("completed", completed), ("failed", failed)]
            .into_iter()
            .map(|(state, n)| crate::metrics::Figure {
                labels: vec![("state", state.to_string())],
                ..crate::metrics::Figure::plain(
                    "mamori_bulk_export_jobs",
                    "Bulk export jobs ($export) of this server by state (ended ones are kept a day).",
                    "gauge",
                    n as f64,
                )
            })
            .collect()
    }

    fn running(&self) -> usize {
        self.jobs
            .lock()
            .map(|j| j.values().filter(|j| j.state.lock().is_ok_and(|s| matches!(*s, JobState::Running))).count())
            .unwrap_or(0)
    }

    /// Removes jobs that ended more than a day ago (and directories of jobs no one knows).
    fn sweep(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return };
        let known: HashSet<String> = self.jobs.lock().map(|j| j.keys().cloned().collect()).unwrap_or_default();
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            let ended = std::fs::read_to_string(e.path().join("job.json"))
                .ok()
                .and_then(|t| serde_json::from_str::<Ended>(&t).ok());
            let stale = match ended {
                Some(end) => now_secs() - end.ended > KEEP_SECS,
                // A job interrupted by a restart leaves a directory without job.json.
                None => !known.contains(&name),
            };
            if stale {
                let _ = std::fs::remove_dir_all(e.path());
                if let Ok(mut j) = self.jobs.lock() {
                    j.remove(&name);
                }
            }
        }
    }
}

/// Who may see a job: the client and the user it acts for.
fn owner_of(p: &Principal) -> String {
    let a = p.actor();
    format!("{}|{}", a.client_id.as_deref().unwrap_or(&a.id), a.label())
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::BadRequest(IssueCode::Invalid, msg.into())
}

struct Kickoff {
    types: Option<BTreeSet<String>>,
    since: Option<Timestamp>,
}

/// Parses the kick-off parameters; unsupported ones are an error unless `lenient`.
fn kickoff_params(q: Option<&str>, lenient: bool) -> Result<Kickoff, ApiError> {
    let mut k = Kickoff { types: None, since: None };
    for pair in q.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode(value)?;
        match key {
            "_outputFormat" => {
                if !matches!(value.as_str(), "application/fhir+ndjson" | "application/ndjson" | "ndjson") {
                    return Err(bad(format!("_outputFormat `{value}` is not supported; use application/fhir+ndjson")));
                }
            }
            "_since" => {
                k.since = Some(Timestamp::parse_rfc3339(&value).ok_or_else(|| {
                    bad(format!("_since `{value}` is not an instant such as 2024-04-01T00:00:00+09:00"))
                })?);
            }
            "_type" => {
                let mut set = k.types.take().unwrap_or_default();
                for t in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                    ResourceType::parse(t).map_err(|_| bad(format!("_type `{t}` is not an R4 resource type")))?;
                    set.insert(t.to_string());
                }
                k.types = Some(set);
            }
            other if lenient => {
                tracing::debug!(parameter = other, "export parameter ignored (handling=lenient)");
            }
            other => {
                return Err(ApiError::BadRequest(
                    IssueCode::NotSupported,
                    format!("export parameter `{other}` is not supported (send Prefer: handling=lenient to ignore it)"),
                ));
            }
        }
    }
    Ok(k)
}

fn lenient(headers: &HeaderMap) -> bool {
    !strict_handling(headers) && prefers(headers, "handling=lenient")
}

fn respond_async(headers: &HeaderMap) -> Result<(), ApiError> {
    if prefers(headers, "respond-async") {
        Ok(())
    } else {
        Err(bad("a Bulk Data export runs asynchronously: send `Prefer: respond-async`"))
    }
}

/// `GET /fhir/$export`.
pub async fn export_system(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    kickoff(s, p, headers, q, "$export".into(), ExportScope::System).await
}

/// `GET /fhir/Patient/$export`.
pub async fn export_patients(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    kickoff(s, p, headers, q, "Patient/$export".into(), ExportScope::AllPatients).await
}

/// `GET /fhir/Group/{id}/$export`: the Group's member patients.
pub async fn export_group(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let id = ResourceId::parse(&id).map_err(ApiError::from)?;
    p.authorize("Group", Action::Read)?;
    let rt = ResourceType::parse("Group").map_err(ApiError::from)?;
    let group = s.records.read(&p.context(), &rt, &id).await?;
    let body: Value = group.body.as_deref().and_then(|b| serde_json::from_str(b).ok()).unwrap_or(Value::Null);
    let members: HashSet<String> = body
        .get("member")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|m| m.get("inactive").and_then(Value::as_bool) != Some(true))
        .filter_map(|m| m.pointer("/entity/reference").and_then(Value::as_str))
        .filter(|r| r.starts_with("Patient/"))
        .map(str::to_string)
        .collect();
    kickoff(s, p, headers, q, format!("Group/{id}/$export"), ExportScope::Patients(members)).await
}

async fn kickoff(
    s: AppState,
    p: Principal,
    headers: HeaderMap,
    q: Option<String>,
    what: String,
    scope: ExportScope,
) -> Result<Response, ApiError> {
    respond_async(&headers)?;
    let k = kickoff_params(q.as_deref(), lenient(&headers))?;
    let types = export_types(&p, k.types)?;
    let jobs = s.bulk.clone();
    let sweep = jobs.clone();
    let _ = tokio::task::spawn_blocking(move || sweep.sweep()).await;
    if jobs.running() >= MAX_RUNNING {
        let mut r = fhir_response(
            StatusCode::TOO_MANY_REQUESTS,
            &json!({"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "throttled",
                "diagnostics": format!("{MAX_RUNNING} export jobs are already running; try again later")}]}),
        );
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("30"));
        return Ok(r);
    }
    let id = ResourceId::random().map_err(ApiError::from)?.to_string();
    let job = Arc::new(Job {
        owner: owner_of(&p),
        state: Mutex::new(JobState::Running),
        exported: AtomicU64::new(0),
        cancel: AtomicBool::new(false),
    });
    if let Ok(mut j) = jobs.jobs.lock() {
        j.insert(id.clone(), job.clone());
    }
    let request = format!("{}/fhir/{what}{}", s.config.public_url, q.map(|q| format!("?{q}")).unwrap_or_default());
    let transaction_time = s.enforcer.clock().now();
    let filter = ExportFilter { types: Some(types), since: k.since, scope };
    let (records, ctx, dir) = (s.records.clone(), p.context(), jobs.job_dir(&id));
    let (audit, principal) = (s.audit.clone(), p.clone());
    let started = Started { request, transaction_time, filter, dir, job, job_id: id.clone() };
    tokio::task::spawn_blocking(move || run_job(&records, &ctx, &*audit, &principal, started));
    let mut r = StatusCode::ACCEPTED.into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("{}/fhir/$bulk/{id}", s.config.public_url)) {
        r.headers_mut().insert(header::CONTENT_LOCATION, v);
    }
    Ok(r)
}

/// An export job as the kick-off started it.
struct Started {
    request: String,
    transaction_time: Timestamp,
    filter: ExportFilter,
    dir: std::path::PathBuf,
    job: Arc<Job>,
    job_id: String,
}

/// The types an export covers: those asked for (each must be allowed to be read and searched),
/// or every type the requester may read and search (never the audit trail's `AuditEvent`).
fn export_types(p: &Principal, asked: Option<BTreeSet<String>>) -> Result<BTreeSet<String>, ApiError> {
    match asked {
        Some(t) => {
            for rt in &t {
                p.authorize(rt, Action::Read)?;
                p.authorize(rt, Action::Search)?;
            }
            Ok(t)
        }
        None => {
            let all: BTreeSet<String> = mamori_fhir_schema::r4()
                .resources()
                .iter()
                .filter(|t| t.as_str() != "AuditEvent")
                .filter(|t| p.allows(t, Action::Read) && p.allows(t, Action::Search))
                .cloned()
                .collect();
            if all.is_empty() {
                return Err(ApiError::Forbidden("the access token allows reading no resource type".into()));
            }
            Ok(all)
        }
    }
}

/// Runs an export job on a blocking thread: writes the files, appends the job's own audit
/// entry (without which it offers no files), and records how it ended.
fn run_job(
    records: &mamori_records::Records,
    ctx: &mamori_records::RequestContext,
    audit: &dyn mamori_audit::AuditLog,
    principal: &Principal,
    started: Started,
) {
    let Started { request, transaction_time, filter, dir, job, job_id } = started;
    let result = write_files(records, ctx, &filter, &dir, &job);
    // The job's own audit entry (issue #22): what it wrote and, above all, what the access
    // policy withheld while it ran, which the kick-off request's entry could not know.
    let denied = principal.denied();
    let mut entry = mamori_audit::AuditRecord::new(
        "export-job",
        principal.audit_actor(),
        if result.is_ok() { mamori_audit::Outcome::Success } else { mamori_audit::Outcome::Failure },
        &principal.purpose(),
    );
    entry.resources = vec![format!("$export/{job_id}")];
    if let Ok(files) = &result {
        entry.resources.extend(
            files.iter().map(|f| format!("$export/{job_id}/{}.ndjson ({} resources)", f.resource_type, f.count)),
        );
        let patients: BTreeSet<&String> = files.iter().flat_map(|f| &f.patients).collect();
        entry.patients = patients.into_iter().cloned().collect();
    }
    entry.detail = (!denied.is_empty()).then(|| format!("withheld or refused by access policy: {}", denied.join("; ")));
    // Without its entry the job offers no files: it ends as failed, through the same path.
    let result = match audit.append(vec![entry]) {
        Ok(_) => result,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            Err(format!("the job's audit entry could not be written: {e}"))
        }
    };
    let (files, error) = match result {
        Ok(files) => (files, None),
        Err(e) => {
            tracing::error!(error = %e, "export job failed");
            (Vec::new(), Some(e))
        }
    };
    let ended = Ended {
        owner: job.owner.clone(),
        request,
        transaction_time: transaction_time.to_fhir(),
        ended: now_secs(),
        files,
        error,
    };
    if job.cancel.load(Ordering::SeqCst) {
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }
    if let Ok(text) = serde_json::to_string(&ended) {
        let _ = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(dir.join("job.json"), text));
    }
    if let Ok(mut st) = job.state.lock() {
        *st = JobState::Ended(ended);
    }
}

/// Writes one NDJSON file per type; stops early when cancelled.
fn write_files(
    records: &mamori_records::Records,
    ctx: &mamori_records::RequestContext,
    filter: &ExportFilter,
    dir: &FsPath,
    job: &Job,
) -> Result<Vec<OutFile>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create the export directory: {e}"))?;
    let mut writers: BTreeMap<String, (std::io::BufWriter<std::fs::File>, OutFile)> = BTreeMap::new();
    let mut io_error: Option<String> = None;
    let mut sink = |v: &VersionRecord| -> Result<bool, RecordError> {
        if job.cancel.load(Ordering::Relaxed) {
            return Ok(false);
        }
        let t = v.resource_type.to_string();
        if !writers.contains_key(&t) {
            match std::fs::File::create(dir.join(format!("{t}.ndjson"))) {
                Ok(f) => {
                    let out = OutFile { resource_type: t.clone(), count: 0, patients: BTreeSet::new() };
                    writers.insert(t.clone(), (std::io::BufWriter::new(f), out));
                }
                Err(e) => {
                    io_error = Some(format!("cannot write {t}.ndjson: {e}"));
                    return Ok(false);
                }
            }
        }
        if let Some((w, out)) = writers.get_mut(&t) {
            let body = v.body.as_deref().unwrap_or("null");
            if let Err(e) = w.write_all(body.as_bytes()).and_then(|()| w.write_all(b"\n")) {
                io_error = Some(format!("cannot write {t}.ndjson: {e}"));
                return Ok(false);
            }
            out.count += 1;
            if let Some(p) = &v.patient {
                out.patients.insert(p.clone());
            }
        }
        job.exported.fetch_add(1, Ordering::Relaxed);
        Ok(true)
    };
    records.export(ctx, filter, &mut sink).map_err(|e| e.to_string())?;
    if let Some(e) = io_error {
        return Err(e);
    }
    let mut files = Vec::new();
    for (_, (mut w, out)) in writers {
        w.flush().map_err(|e| format!("cannot write {}.ndjson: {e}", out.resource_type))?;
        w.get_ref().sync_all().map_err(|e| format!("cannot write {}.ndjson: {e}", out.resource_type))?;
        files.push(out);
    }
    Ok(files)
}

/// The job, if `p` started it; otherwise 404 (a job of someone else is not revealed).
fn owned_job(s: &AppState, p: &Principal, id: &str) -> Result<Arc<Job>, ApiError> {
    match s.bulk.get(id) {
        Some(j) if j.owner == owner_of(p) => Ok(j),
        _ => Err(ApiError::NotFound(format!("no export job `{}`", id.chars().take(64).collect::<String>()))),
    }
}

/// `GET /fhir/$bulk/{job}`: the job's status or manifest.
pub async fn status(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let job = owned_job(&s, &p, &id)?;
    let ended = match &*job.state.lock().map_err(|_| ApiError::Internal("job state poisoned".into()))? {
        JobState::Running => None,
        JobState::Ended(e) => Some(e.clone()),
    };
    let Some(e) = ended else {
        let mut r = StatusCode::ACCEPTED.into_response();
        let h = r.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&format!("{} resources exported", job.exported.load(Ordering::Relaxed))) {
            h.insert("x-progress", v);
        }
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
        return Ok(r);
    };
    if let Some(err) = &e.error {
        return Ok(fhir_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            &json!({"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "exception",
                "diagnostics": format!("the export failed: {err}")}]}),
        ));
    }
    let base = &s.config.public_url;
    let manifest = json!({
        "transactionTime": e.transaction_time,
        "request": e.request,
        "requiresAccessToken": true,
        "output": e.files.iter().map(|f| json!({
            "type": f.resource_type,
            "url": format!("{base}/fhir/$bulk/{id}/{}.ndjson", f.resource_type),
            "count": f.count,
        })).collect::<Vec<_>>(),
        "deleted": [],
        "error": [],
    });
    let mut r = (StatusCode::OK, axum::Json(manifest)).into_response();
    let expires = Timestamp((e.ended + KEEP_SECS).saturating_mul(1_000_000));
    if let Ok(v) = HeaderValue::from_str(&http_date(expires)) {
        r.headers_mut().insert(header::EXPIRES, v);
    }
    Ok(r)
}

/// `DELETE /fhir/$bulk/{job}`: cancels the job and removes its files.
pub async fn cancel(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let job = owned_job(&s, &p, &id)?;
    job.cancel.store(true, Ordering::SeqCst);
    if let Ok(mut j) = s.bulk.jobs.lock() {
        j.remove(&id);
    }
    let dir = s.bulk.job_dir(&id);
    let running = job.state.lock().is_ok_and(|st| matches!(*st, JobState::Running));
    if !running {
        let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir)).await;
    }
    Ok(StatusCode::ACCEPTED.into_response())
}

/// `GET /fhir/$bulk/{job}/{Type}.ndjson`: one output file.
pub async fn file(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    Path((id, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let job = owned_job(&s, &p, &id)?;
    let not_found = || ApiError::NotFound(format!("no file `{}`", name.chars().take(64).collect::<String>()));
    let t = name.strip_suffix(".ndjson").ok_or_else(not_found)?;
    let out = match &*job.state.lock().map_err(|_| ApiError::Internal("job state poisoned".into()))? {
        JobState::Ended(e) => e.files.iter().find(|f| f.resource_type == t).cloned(),
        JobState::Running => None,
    }
    .ok_or_else(not_found)?;
    // The token may have changed since the kick-off: decide again, for the type and then for
    // every record in the file (issue #22: a care relationship may have ended since).
    p.authorize(t, Action::Read)?;
    let rt = ResourceType::parse(t).map_err(|_| not_found())?;
    let dir = s.bulk.job_dir(&id);
    let (records, ctx) = (s.records.clone(), p.context());
    let checked = tokio::task::spawn_blocking(move || recheck(&records, &ctx, &rt, &dir))
        .await
        .map_err(|e| ApiError::Internal(format!("worker failed: {e}")))?
        .map_err(ApiError::Internal)?;
    let mut r = Response::new(Body::from_stream(chunks(tokio::fs::File::from_std(checked.file))));
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/fhir+ndjson"));
    let withheld = if checked.withheld > 0 { format!(", {} withheld", checked.withheld) } else { String::new() };
    let note = AuditNote {
        resources: vec![format!(
            "$export/{id}/{t}.ndjson ({} of {} resources{withheld})",
            checked.delivered, out.count
        )],
        patients: checked.patients.into_iter().collect(),
        in_transaction: false,
        query: None,
    };
    Ok(note.attach(r))
}

/// Lines of an export file re-checked per read transaction at download.
const RECHECK_BATCH: usize = 1000;

/// What a download hands out after the re-check.
struct Rechecked {
    /// The export file itself, or when anything was withheld a filtered copy (already unlinked).
    file: std::fs::File,
    delivered: u64,
    withheld: u64,
    /// The patients of the delivered records.
    patients: BTreeSet<String>,
}

/// The parts of an exported line the re-check needs.
#[derive(Deserialize)]
struct LineHead {
    id: String,
    meta: Option<LineMeta>,
}

#[derive(Deserialize)]
struct LineMeta {
    #[serde(rename = "versionId")]
    version_id: Option<String>,
}

/// Re-checks every record of `{dir}/{rt}.ndjson` against the requester's rights *now*, as a
/// `vread` of the exported version would be judged: what they may no longer see is left out
/// (and recorded as withheld by the guard). A line that cannot be read is left out too.
fn recheck(
    records: &mamori_records::Records,
    ctx: &mamori_records::RequestContext,
    rt: &ResourceType,
    dir: &FsPath,
) -> Result<Rechecked, String> {
    use std::io::BufRead;
    let path = dir.join(format!("{rt}.ndjson"));
    let open = || std::fs::File::open(&path).map_err(|e| format!("cannot open {rt}.ndjson: {e}"));
    let mut lines = std::io::BufReader::new(open()?).lines();
    // The first pass decides; the second (only if anything is withheld) writes what passed.
    let mut keep: Vec<bool> = Vec::new();
    let mut patients = BTreeSet::new();
    loop {
        let mut batch: Vec<(ResourceId, u64)> = Vec::with_capacity(RECHECK_BATCH);
        let mut slots: Vec<Option<usize>> = Vec::with_capacity(RECHECK_BATCH);
        for line in lines.by_ref().take(RECHECK_BATCH) {
            let line = line.map_err(|e| format!("cannot read {rt}.ndjson: {e}"))?;
            let head = serde_json::from_str::<LineHead>(&line).ok().and_then(|h| {
                let version = h.meta?.version_id?.parse::<u64>().ok()?;
                Some((ResourceId::parse(&h.id).ok()?, version))
            });
            slots.push(head.map(|h| {
                batch.push(h);
                batch.len() - 1
            }));
        }
        if slots.is_empty() {
            break;
        }
        let seen = records.still_visible(ctx, rt, &batch).map_err(|e| e.to_string())?;
        for slot in slots {
            let v = slot.and_then(|i| seen.get(i)).and_then(Option::as_ref);
            if let Some(p) = v.and_then(|v| v.patient.as_ref()) {
                patients.insert(p.clone());
            }
            keep.push(v.is_some());
        }
    }
    let delivered = keep.iter().filter(|k| **k).count() as u64;
    let withheld = keep.len() as u64 - delivered;
    if withheld == 0 {
        return Ok(Rechecked { file: open()?, delivered, withheld, patients });
    }
    let part = dir.join(format!(".{rt}.{}.part", ResourceId::random().map_err(|e| e.to_string())?));
    let write = || -> std::io::Result<std::fs::File> {
        let mut out = std::io::BufWriter::new(std::fs::File::create(&part)?);
        let input = std::io::BufReader::new(std::fs::File::open(&path)?);
        for (line, keep) in input.split(b'\n').zip(&keep) {
            let line = line?;
            if *keep {
                out.write_all(&line)?;
                out.write_all(b"\n")?;
            }
        }
        out.flush()?;
        std::fs::File::open(&part)
    };
    let file = write();
    // The copy lives only as long as the open file: removed now, whatever happened.
    let _ = std::fs::remove_file(&part);
    let file = file.map_err(|e| format!("cannot prepare {rt}.ndjson: {e}"))?;
    Ok(Rechecked { file, delivered, withheld, patients })
}

/// A file as a stream of chunks (an export file may be far larger than memory allows).
fn chunks(file: tokio::fs::File) -> impl futures_util::Stream<Item = Result<axum::body::Bytes, std::io::Error>> + Send {
    futures_util::stream::unfold(Some(file), |f| async move {
        use tokio::io::AsyncReadExt;
        let mut f = f?;
        let mut buf = vec![0u8; 64 * 1024];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(axum::body::Bytes::from(buf)), Some(f)))
            }
            Err(e) => Some((Err(e), None)),
        }
    })
}

/// Hands a chunk of lines to the writer, off the async runtime.
async fn import_chunk(
    mut importer: Importer,
    lines: Vec<(usize, Result<String, String>)>,
) -> Result<Importer, ApiError> {
    blocking(move || {
        for (n, line) in lines {
            match line {
                Ok(l) => importer.line("body", n, &l),
                Err(why) => importer.refuse("body", n, why),
            }
        }
        Ok(importer)
    })
    .await
}

/// `POST /fhir/$import`: a body of NDJSON (`application/fhir+ndjson`), one resource per line,
/// written as `mamori import` writes files: ids kept (update-as-create), batches of 500 per
/// transaction, each resource with its Provenance and audit entry, refused lines reported by
/// number while the others go in. Each resource type needs `create` and `update`. The body is
/// streamed, so its size is not limited; a single line is limited to `max_body_bytes`.
///
/// Answers an OperationOutcome: 200 when anything was stored or nothing was refused, 400 when
/// every line was refused.
pub async fn import(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    use http_body_util::BodyExt as _;
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let mime = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if !matches!(mime.as_str(), "application/fhir+ndjson" | "application/ndjson" | "application/x-ndjson") {
        return Err(ApiError::UnsupportedMediaType(format!(
            "Content-Type `{ct}` is not supported; $import takes application/fhir+ndjson"
        )));
    }
    let checker = p.clone();
    let mut decided: HashMap<String, Result<(), String>> = HashMap::new();
    let check = Box::new(move |rt: &ResourceType| {
        decided
            .entry(rt.to_string())
            .or_insert_with(|| {
                checker
                    .authorize(rt.as_str(), Action::Create)
                    .and_then(|()| checker.authorize(rt.as_str(), Action::Update))
                    .map_err(|e| e.to_string())
            })
            .clone()
    });
    let mut importer = Importer::new(s.records.clone(), p.context(), 500).with_check(check);
    let max_line = s.config.max_body_bytes;
    let mut body = body;
    let mut buf: Vec<u8> = Vec::new();
    let mut line_no = 0usize;
    let mut skipping = false;
    let mut lines: Vec<(usize, Result<String, String>)> = Vec::new();
    let take_line = |raw: Vec<u8>, line_no: &mut usize, lines: &mut Vec<(usize, Result<String, String>)>| {
        *line_no += 1;
        lines.push((*line_no, String::from_utf8(raw).map_err(|_| "the line is not UTF-8".to_string())));
    };
    loop {
        let frame = match body.frame().await {
            None => break,
            Some(Ok(f)) => f,
            Some(Err(_)) => {
                return Err(ApiError::BadRequest(
                    IssueCode::Structure,
                    format!(
                        "the request body could not be read after line {line_no}; lines before it may have been stored"
                    ),
                ));
            }
        };
        let Ok(data) = frame.into_data() else { continue };
        buf.extend_from_slice(&data);
        while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let raw: Vec<u8> = buf.drain(..=pos).collect();
            if skipping {
                skipping = false;
                continue;
            }
            take_line(raw, &mut line_no, &mut lines);
        }
        if buf.len() > max_line && !skipping {
            line_no += 1;
            lines.push((line_no, Err(format!("the line is longer than {max_line} bytes"))));
            skipping = true;
        }
        if skipping {
            buf.clear();
        }
        if lines.len() >= IMPORT_CHUNK {
            importer = import_chunk(importer, std::mem::take(&mut lines)).await?;
        }
    }
    if !buf.is_empty() && !skipping {
        take_line(std::mem::take(&mut buf), &mut line_no, &mut lines);
    }
    importer = import_chunk(importer, lines).await?;
    let mut importer = blocking(move || {
        importer.flush();
        Ok(importer)
    })
    .await?;
    let mut issues = vec![json!({"severity": "information", "code": "informational",
        "diagnostics": format!("imported {} resources; {} line(s) refused", importer.done, importer.refused)})];
    for r in importer.refusals.drain(..) {
        issues.push(
            json!({"severity": "error", "code": "invalid", "diagnostics": format!("line {}: {}", r.line, r.why)}),
        );
    }
    let status = if importer.done == 0 && importer.refused > 0 { StatusCode::BAD_REQUEST } else { StatusCode::OK };
    let note = AuditNote { in_transaction: importer.refused == 0 && importer.done > 0, ..AuditNote::default() };
    Ok(note.attach(fhir_response(status, &json!({"resourceType": "OperationOutcome", "issue": issues}))))
}
