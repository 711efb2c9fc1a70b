//! The record service: every create, read, update, patch, delete, history, conditional
//! interaction, approval (確定), integrity check and purge goes through here.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use serde_json::{Map, Value, json};

use crate::provenance::{ProvenanceFacts, build as build_provenance};
use crate::{
    Audited, BreakGlassGrant, Clock, ENTRY_STATUS_SYSTEM, EntryStatus, HistoryQuery, IdentifierToken, IndexEntries,
    Issue, IssueCode, Method, ReadAction, RecordError, RequestContext, ResourceId, ResourceType, Store, Timestamp, Tx,
    VersionRecord, canonical, care_links, is_lab, validate,
};

/// Retention periods (保存期間) per resource type, in years from the record's last version.
#[derive(Debug, Clone)]
pub struct RetentionPolicy {
    /// For types not listed.
    pub default_years: u32,
    /// Per type.
    pub per_type: HashMap<String, u32>,
}

impl Default for RetentionPolicy {
    /// Five years for everything: 診療録 must be kept 5 years (医師法 §24), and no type is
    /// purgeable sooner unless configured so.
    fn default() -> Self {
        RetentionPolicy { default_years: 5, per_type: HashMap::new() }
    }
}

impl RetentionPolicy {
    /// Years for one type.
    pub fn years_for(&self, rt: &ResourceType) -> u32 {
        self.per_type.get(rt.as_str()).copied().unwrap_or(self.default_years)
    }

    /// When retention of a record last changed at `last` ends.
    pub fn ends(&self, rt: &ResourceType, last: Timestamp) -> Timestamp {
        // Calendar years, counted in 365.25-day years so leap days never shorten retention.
        let micros_per_year: i64 = 36_525 * 24 * 3600 * 10_000;
        Timestamp(last.0.saturating_add(i64::from(self.years_for(rt)).saturating_mul(micros_per_year)))
    }
}

/// A body parsed and structurally validated against R4.
#[derive(Debug, Clone)]
pub struct ParsedBody(pub Value);

/// Parses JSON bytes into a validated R4 resource.
pub fn parse_resource(bytes: &[u8]) -> Result<ParsedBody, RecordError> {
    let v: Value = serde_json::from_slice(bytes)
        .map_err(|e| RecordError::invalid(IssueCode::Structure, format!("body is not valid JSON: {e}")))?;
    let issues = validate::validate_resource(mamori_fhir_schema::r4(), &v);
    if issues.is_empty() { Ok(ParsedBody(v)) } else { Err(RecordError::Invalid(issues)) }
}

/// Parses a JSON Patch (RFC 6902) document.
pub fn parse_patch(bytes: &[u8]) -> Result<json_patch::Patch, RecordError> {
    serde_json::from_slice(bytes)
        .map_err(|e| RecordError::invalid(IssueCode::Structure, format!("not a JSON Patch document: {e}")))
}

/// One search criterion of a conditional interaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// `_id=…`
    Id(ResourceId),
    /// `identifier=[system|]value`; `system` `None` = any system, `Some("")` = no system.
    Identifier {
        /// System.
        system: Option<String>,
        /// Value.
        value: String,
    },
}

/// Parses the query of a conditional interaction (`identifier=urn:x|123&_id=abc`).
///
/// Only `_id` and `identifier` are supported until full search lands; anything else is refused
/// rather than ignored, because ignoring a criterion would widen the match.
pub fn parse_conditions(query: &str) -> Result<Vec<Condition>, RecordError> {
    let mut out = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (k, v) = (crate::search::parse::percent_decode(k)?, crate::search::parse::percent_decode(v)?);
        if v.is_empty() {
            return Err(RecordError::invalid(IssueCode::Invalid, format!("condition parameter `{k}` has no value")));
        }
        match k.as_str() {
            "_id" => out.push(Condition::Id(ResourceId::parse(&v)?)),
            "identifier" => {
                let (system, value) = match v.split_once('|') {
                    Some((s, val)) => (Some(s.to_string()), val.to_string()),
                    None => (None, v.clone()),
                };
                if value.is_empty() {
                    return Err(RecordError::invalid(IssueCode::Invalid, "`identifier` condition needs a value"));
                }
                out.push(Condition::Identifier { system, value });
            }
            other => {
                return Err(RecordError::invalid(
                    IssueCode::NotSupported,
                    format!("conditional interactions support only `_id` and `identifier`, not `{other}`"),
                ));
            }
        }
    }
    if out.is_empty() {
        return Err(RecordError::invalid(IssueCode::Invalid, "a conditional interaction needs at least one criterion"));
    }
    Ok(out)
}

/// The result of a write.
#[derive(Debug, Clone)]
pub struct WriteOutcome {
    /// Whether a new resource was created (201) rather than an existing one changed or matched.
    pub created: bool,
    /// Whether anything was written (a matched conditional create writes nothing).
    pub written: bool,
    /// The resulting current version.
    pub record: VersionRecord,
}

/// One page of history, newest first.
#[derive(Debug, Clone)]
pub struct HistoryPage {
    /// Versions on this page.
    pub entries: Vec<VersionRecord>,
    /// All matching versions, including any withheld.
    pub total: u64,
    /// Whether versions on this page were withheld from the requester.
    pub hidden: bool,
    /// Whether a further version the requester may see follows this page (computed from
    /// visible versions only, so a next link reveals nothing hidden).
    pub more: bool,
}

/// The result of an integrity scrub.
#[derive(Debug, Clone, Default)]
pub struct FsckReport {
    /// Versions re-hashed.
    pub checked: u64,
    /// `Type/id/_history/v` of each version whose stored hash does not match its content.
    pub mismatches: Vec<String>,
    /// `Type/id/_history/v` of each version whose stored body cannot be parsed (so its hash
    /// cannot be recomputed): reported apart from mismatches, which mean changed content.
    pub unparseable: Vec<String>,
}

/// Labels resources with security labels (information classes, 情報区分) before they are stored.
pub trait Labeler: Send + Sync {
    /// The code system this labeler owns in `meta.security`: its codings are replaced, others kept.
    fn system(&self) -> &str;
    /// The labels (FHIR Codings) for a resource about to be stored; `Err` refuses the write.
    fn labels(&self, resource_type: &str, body: &Value) -> Result<Vec<Value>, String>;
}

/// The record service.
pub struct Records {
    pub(crate) store: Arc<dyn Store>,
    /// Where reads are audited (the same log the store's writes append to).
    pub(crate) audit: Arc<dyn mamori_audit::AuditLog>,
    clock: Arc<dyn Clock>,
    retention: RetentionPolicy,
    labeler: Option<Arc<dyn Labeler>>,
    /// Emergency read-only mode (非常時の参照専用, G5/R3): every record write is refused.
    read_only: Arc<std::sync::atomic::AtomicBool>,
}

/// Version `version` of a record (the newest when `None`), deleted or not, if it is stored and
/// the requester may see it — judged with the newest version's classes and patient as well (a
/// label added later narrows every earlier version). The one judgement behind `vread`,
/// [`Records::version_of`] and [`Records::still_visible`].
fn visible_version(
    tx: &mut dyn Tx,
    ctx: &RequestContext,
    rt: &ResourceType,
    id: &ResourceId,
    version: Option<u64>,
) -> Result<Option<VersionRecord>, RecordError> {
    let Some(current) = tx.current(rt, id)? else { return Ok(None) };
    let v = match version {
        Some(n) if n != current.version => match tx.version(rt, id, n)? {
            Some(v) => v,
            None => return Ok(None),
        },
        _ => current.clone(),
    };
    Ok(ctx.may_see_version(tx, &v, &current)?.then_some(v))
}

/// Replaces the labeler's codings in `meta.security` with `labels`.
fn set_labels(body: &mut Value, system: &str, labels: &[Value]) {
    let Some(obj) = body.as_object_mut() else { return };
    let meta = obj.entry("meta").or_insert_with(|| Value::Object(Map::new()));
    let Some(m) = meta.as_object_mut() else { return };
    let mut sec: Vec<Value> = m
        .get("security")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter(|c| c.get("system").and_then(Value::as_str) != Some(system)).cloned().collect())
        .unwrap_or_default();
    sec.extend(labels.iter().cloned());
    if sec.is_empty() {
        m.remove("security");
    } else {
        m.insert("security".into(), Value::Array(sec));
    }
}

/// What a write derives from its body alone — its information-class labels (情報区分), its entry
/// status tag and its index entries — so that it can be computed before the writer is taken and
/// the serialised part of a write stays short (issue #9). `commit` uses it when the entry status
/// it was prepared for is the one the write gets, and prepares again otherwise.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    labels: Vec<Value>,
    index: IndexEntries,
    pending_for: Option<String>,
}

/// The body of a write, prepared or not.
#[derive(Debug, Clone)]
pub(crate) struct Content {
    pub(crate) body: Value,
    pub(crate) prepared: Option<Prepared>,
}

impl From<Value> for Content {
    fn from(body: Value) -> Self {
        Content { body, prepared: None }
    }
}

/// The content a write closure takes: the store runs the closure once (`Store::write`), so it
/// is moved in rather than cloned under the writer.
pub(crate) fn once(c: &mut Option<Content>) -> Result<Content, RecordError> {
    c.take().ok_or_else(|| RecordError::Store(crate::StoreError::other("a write closure ran twice")))
}

pub(crate) struct Draft<'a> {
    pub(crate) rt: &'a ResourceType,
    pub(crate) id: &'a ResourceId,
    pub(crate) method: Method,
    pub(crate) body: Option<Content>,
    pub(crate) previous: Option<&'a VersionRecord>,
    pub(crate) ctx: &'a RequestContext,
    /// Author named by the client (X-Provenance), if any.
    pub(crate) author: Option<String>,
}

/// Who the client says authored the content, from an `X-Provenance` resource.
fn provenance_author(x_provenance: Option<&Value>) -> Result<Option<String>, RecordError> {
    let Some(p) = x_provenance else {
        return Ok(None);
    };
    if p.get("resourceType").and_then(Value::as_str) != Some("Provenance") {
        return Err(RecordError::invalid(IssueCode::Invalid, "X-Provenance must be a Provenance resource"));
    }
    let agents = p.get("agent").and_then(Value::as_array).cloned().unwrap_or_default();
    for a in &agents {
        let is_author = a
            .pointer("/type/coding")
            .and_then(Value::as_array)
            .is_some_and(|cs| cs.iter().any(|c| c.get("code").and_then(Value::as_str) == Some("author")));
        if is_author {
            let r = a
                .pointer("/who/reference")
                .and_then(Value::as_str)
                .ok_or_else(|| RecordError::invalid(IssueCode::Invalid, "X-Provenance author needs `who.reference`"))?;
            if !r.split_once('/').is_some_and(|(t, id)| crate::primitive::is_id(id) && !t.is_empty()) {
                return Err(RecordError::invalid(
                    IssueCode::Value,
                    "X-Provenance author must be a relative reference such as `Practitioner/123`",
                ));
            }
            return Ok(Some(r.to_string()));
        }
    }
    Ok(None)
}

fn identifiers(body: &Value) -> Vec<IdentifierToken> {
    let mut out = Vec::new();
    let items: Vec<&Value> = match body.get("identifier") {
        Some(Value::Array(a)) => a.iter().collect(),
        Some(v @ Value::Object(_)) => vec![v],
        _ => Vec::new(),
    };
    for i in items {
        if let Some(value) = i.get("value").and_then(Value::as_str) {
            out.push(IdentifierToken {
                system: i.get("system").and_then(Value::as_str).map(str::to_string),
                value: value.to_string(),
            });
        }
    }
    out
}

/// Every index entry of a version: identifiers (conditional interactions), care links (Z3) and
/// search rows — written by the store in the version's own transaction.
pub(crate) fn index_for(rt: &ResourceType, id: &ResourceId, body: Option<&Value>) -> IndexEntries {
    IndexEntries {
        identifiers: body.map(identifiers).unwrap_or_default(),
        care: body.map(|b| care_links(rt.as_str(), id.as_str(), b)).unwrap_or_default(),
        search: body.map(|b| crate::search::rows_for(rt.as_str(), b)).unwrap_or_default(),
    }
}

/// Sets server-managed meta; drops client attempts to set version, time or entry status.
fn stamp_meta(body: &mut Value, version: u64, now: Timestamp, pending_for: Option<&str>) {
    let Some(m) = meta_of(body) else { return };
    m.insert("versionId".into(), Value::String(version.to_string()));
    m.insert("lastUpdated".into(), Value::String(now.to_fhir()));
    stamp_status(body, pending_for);
}

/// `meta` of a resource, created (or replaced when it is not an object) if need be.
fn meta_of(body: &mut Value) -> Option<&mut Map<String, Value>> {
    let obj = body.as_object_mut()?;
    let meta = obj.entry("meta").or_insert_with(|| Value::Object(Map::new()));
    if !meta.is_object() {
        *meta = Value::Object(Map::new());
    }
    meta.as_object_mut()
}

/// Sets the entry-status tag: pending approval by `pending_for`, or none.
fn stamp_status(body: &mut Value, pending_for: Option<&str>) {
    let Some(m) = meta_of(body) else { return };
    let mut tags: Vec<Value> = m
        .get("tag")
        .and_then(Value::as_array)
        .map(|t| {
            t.iter().filter(|t| t.get("system").and_then(Value::as_str) != Some(ENTRY_STATUS_SYSTEM)).cloned().collect()
        })
        .unwrap_or_default();
    if let Some(author) = pending_for {
        tags.push(json!({
            "system": ENTRY_STATUS_SYSTEM,
            "code": "pending-approval",
            "display": format!("代行入力・承認待ち (awaiting approval by {author})"),
        }));
    }
    if tags.is_empty() {
        m.remove("tag");
    } else {
        m.insert("tag".into(), Value::Array(tags));
    }
}

fn hex_hash(h: &[u8; 32]) -> String {
    hex::encode(h)
}

fn reference(rt: &ResourceType, id: &ResourceId, v: u64) -> String {
    format!("{rt}/{id}/_history/{v}")
}

impl Records {
    /// A service over a store and a clock.
    pub fn new(
        store: Arc<dyn Store>,
        audit: Arc<dyn mamori_audit::AuditLog>,
        clock: Arc<dyn Clock>,
        retention: RetentionPolicy,
    ) -> Self {
        Records { store, audit, clock, retention, labeler: None, read_only: Arc::default() }
    }

    /// Labels every stored resource (and its Provenance) with `labeler`.
    pub fn with_labeler(mut self, labeler: Arc<dyn Labeler>) -> Self {
        self.labeler = Some(labeler);
        self
    }

    /// The retention policy in force.
    pub fn retention(&self) -> &RetentionPolicy {
        &self.retention
    }

    /// Turns emergency read-only mode on or off: while on, every record write (create, update,
    /// patch, delete, import, transaction, approve, purge) is refused with
    /// [`RecordError::ReadOnly`]; reads, searches and history, break-glass grants and the audit
    /// trail go on.
    pub fn set_read_only(&self, on: bool) {
        self.read_only.store(on, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether emergency read-only mode is on.
    pub fn is_read_only(&self) -> bool {
        self.read_only.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The one path of every record write: refused in read-only mode.
    pub(crate) fn write<R: Send>(
        &self,
        f: impl FnMut(&mut dyn Tx) -> Result<R, RecordError> + Send,
    ) -> Result<R, RecordError> {
        if self.is_read_only() {
            return Err(RecordError::ReadOnly);
        }
        self.write_state(f)
    }

    /// A write of access state beside the records (break-glass grants and their review), which
    /// read-only mode keeps open: reading charts in an emergency may need break-glass.
    pub(crate) fn write_state<R: Send>(
        &self,
        mut f: impl FnMut(&mut dyn Tx) -> Result<R, RecordError> + Send,
    ) -> Result<R, RecordError> {
        let mut out = None;
        self.store.write(&mut |tx| {
            out = Some(f(tx)?);
            Ok(())
        })?;
        out.ok_or_else(|| RecordError::Store(crate::StoreError::other("transaction produced no result")))
    }

    pub(crate) fn read_tx<R>(
        &self,
        mut f: impl FnMut(&mut dyn Tx) -> Result<R, RecordError>,
    ) -> Result<R, RecordError> {
        let mut out = None;
        self.store.read(&mut |tx| {
            out = Some(f(tx)?);
            Ok(())
        })?;
        out.ok_or_else(|| RecordError::Store(crate::StoreError::other("read produced no result")))
    }

    /// Server time for a write: the clock, but never before anything already stored.
    fn now(&self, tx: &mut dyn Tx) -> Result<Timestamp, RecordError> {
        let now = self.clock.now();
        Ok(match tx.latest_timestamp()? {
            Some(last) if last >= now => last.next(),
            _ => now,
        })
    }

    /// Labels `body` (情報区分), sets its entry-status tag and derives its index entries: the part
    /// of a write that needs no transaction.
    pub(crate) fn prepare(
        &self,
        rt: &ResourceType,
        id: &ResourceId,
        body: &mut Value,
        pending_for: Option<&str>,
    ) -> Result<Prepared, RecordError> {
        let mut labels = Vec::new();
        if let Some(l) = &self.labeler {
            labels = l.labels(rt.as_str(), body).map_err(|e| RecordError::invalid(IssueCode::Value, e))?;
            set_labels(body, l.system(), &labels);
        }
        stamp_status(body, pending_for);
        let index = index_for(rt, id, Some(body));
        Ok(Prepared { labels, index, pending_for: pending_for.map(str::to_string) })
    }

    /// `body` prepared outside any transaction for a write by `ctx` naming `author`: the entry
    /// status predicted is the one a new resource gets (an update of a record pending for someone
    /// else may differ, and is prepared again in `commit`).
    pub(crate) fn content(
        &self,
        ctx: &RequestContext,
        rt: &ResourceType,
        id: &ResourceId,
        mut body: Value,
        author: Option<&str>,
    ) -> Result<Content, RecordError> {
        let enterer = ctx.actor.label();
        let pending_for = author.filter(|a| *a != enterer);
        let prepared = self.prepare(rt, id, &mut body, pending_for)?;
        Ok(Content { body, prepared: Some(prepared) })
    }

    /// The patient a new version is about (`compartment::patient_of`); a `Binary` is about the
    /// patient of its security context (the record it names, looked up here), and about an
    /// undetermined patient when that record is missing.
    fn patient_of(
        &self,
        tx: &mut dyn Tx,
        rt: &str,
        id: &str,
        body: &Value,
        rows: &[crate::search::SearchRow],
    ) -> Result<Option<String>, RecordError> {
        if rt != "Binary" {
            return Ok(crate::compartment::patient_of(rt, id, Some(body), rows));
        }
        Ok(match crate::compartment::security_context(body) {
            None => None,
            Some(Ok(patient)) => Some(patient),
            Some(Err((t, i))) => match (ResourceType::parse(&t), ResourceId::parse(&i)) {
                (Ok(t), Ok(i)) => match tx.current(&t, &i)? {
                    Some(v) => v.patient,
                    None => Some(crate::compartment::UNDETERMINED.to_string()),
                },
                _ => Some(crate::compartment::UNDETERMINED.to_string()),
            },
        })
    }

    /// Writes one version and the Provenance that records it, in the caller's transaction.
    pub(crate) fn commit(&self, tx: &mut dyn Tx, d: Draft<'_>) -> Result<VersionRecord, RecordError> {
        let now = self.now(tx)?;
        let version = d.previous.map_or(1, |p| p.version + 1);
        let enterer = d.ctx.actor.label();
        // A correction by someone other than the pending author keeps it pending for that author.
        let inherited = match d.previous.map(|p| &p.status) {
            Some(EntryStatus::Pending { author }) if *author != enterer && d.method != Method::Delete => {
                Some(author.clone())
            }
            _ => None,
        };
        let author = d.author.clone().or(inherited).unwrap_or_else(|| enterer.clone());
        let pending = author != enterer && d.method != Method::Delete;
        let status = if pending { EntryStatus::Pending { author: author.clone() } } else { EntryStatus::Final };

        let pending_for = pending.then_some(author.as_str());
        let (body, hash, labels, index) = match d.body {
            Some(Content { mut body, prepared }) => {
                let p = match prepared {
                    Some(p) if p.pending_for.as_deref() == pending_for => p,
                    _ => self.prepare(d.rt, d.id, &mut body, pending_for)?,
                };
                stamp_meta(&mut body, version, now, pending_for);
                let hash = canonical::content_hash(&body);
                (Some(body), hash, p.labels, p.index)
            }
            None => (None, canonical::content_hash(&Value::Null), Vec::new(), IndexEntries::default()),
        };
        let patient = match &body {
            Some(b) => self.patient_of(tx, d.rt.as_str(), d.id.as_str(), b, &index.search)?,
            // A deletion is about whom the deleted version was about.
            None => d.previous.and_then(|p| p.patient.clone()),
        };
        let (classes, lab) = match &body {
            Some(b) => (
                labels.iter().filter_map(|l| l.get("code").and_then(Value::as_str)).map(str::to_string).collect(),
                is_lab(d.rt.as_str(), b),
            ),
            // A deletion reveals what it deleted: it keeps that version's classes.
            None => d.previous.map(|p| (p.classes.clone(), p.lab)).unwrap_or_default(),
        };
        let record = VersionRecord {
            resource_type: d.rt.clone(),
            id: d.id.clone(),
            version,
            last_updated: now,
            method: d.method,
            body: body.map(|b| Arc::from(b.to_string())),
            content_sha256: hash,
            entered_by: enterer.clone(),
            status,
            server_written: false,
            patient: patient.clone(),
            classes: classes.clone(),
            lab,
        };
        d.ctx.guard.0.may_write(tx, &record)?;
        tx.put(&record, &index)?;

        let mut prov = build_provenance(&ProvenanceFacts {
            target: reference(d.rt, d.id, version),
            sha256_hex: hex_hash(&hash),
            recorded: now,
            method: d.method,
            enterer: &enterer,
            author: &author,
            attester: if pending {
                None
            } else if d.method == Method::Approve {
                Some(&enterer)
            } else {
                Some(&author)
            },
            previous: d.previous.map(|p| reference(&p.resource_type, &p.id, p.version)),
        });
        let prov_id = ResourceId::generate()?;
        if let Some(o) = prov.as_object_mut() {
            o.insert("id".into(), Value::String(prov_id.to_string()));
        }
        if let Some(l) = &self.labeler {
            // The Provenance reveals what its target is about: it carries the target's classes.
            set_labels(&mut prov, l.system(), &labels);
        }
        stamp_meta(&mut prov, 1, now, None);
        let prov_hash = canonical::content_hash(&prov);
        let prov_record = VersionRecord {
            resource_type: ResourceType::parse("Provenance")?,
            id: prov_id,
            version: 1,
            last_updated: now,
            method: Method::Create,
            body: Some(Arc::from(prov.to_string())),
            content_sha256: prov_hash,
            entered_by: "operator:mamori".into(),
            status: EntryStatus::Final,
            server_written: true,
            // The Provenance is about the same patient and carries the same classes.
            patient: patient.clone(),
            classes,
            lab: false,
        };
        tx.put(&prov_record, &index_for(&prov_record.resource_type, &prov_record.id, Some(&prov)))?;
        tx.append_audit(mamori_audit::AuditRecord {
            detail: pending.then(|| format!("proxy entry (代行入力), awaiting approval by {author}")),
            patients: patient.into_iter().collect(),
            request_id: d.ctx.request_id.clone(),
            resources: vec![reference(d.rt, d.id, version), format!("Provenance/{}/_history/1", prov_record.id)],
            source: d.ctx.source.clone(),
            ..mamori_audit::AuditRecord::new(
                d.method.as_str(),
                d.ctx.audit_actor(),
                mamori_audit::Outcome::Success,
                &d.ctx.current_purpose(),
            )
        })?;
        Ok(record)
    }

    /// The resources a condition matches, as a search by the same requester would find them:
    /// records the requester may not see are not matched (nor revealed by a multiple-match error).
    pub(crate) fn matches(
        &self,
        tx: &mut dyn Tx,
        ctx: &RequestContext,
        rt: &ResourceType,
        conds: &[Condition],
    ) -> Result<Vec<ResourceId>, RecordError> {
        let found = self.matches_unguarded(tx, rt, conds)?;
        let mut out = Vec::with_capacity(found.len());
        for id in found {
            if let Some(v) = tx.current(rt, &id)?
                && ctx.may_see(tx, &v)?
            {
                out.push(id);
            }
        }
        Ok(out)
    }

    fn matches_unguarded(
        &self,
        tx: &mut dyn Tx,
        rt: &ResourceType,
        conds: &[Condition],
    ) -> Result<Vec<ResourceId>, RecordError> {
        let mut result: Option<BTreeSet<ResourceId>> = None;
        for c in conds {
            let found: BTreeSet<ResourceId> = match c {
                Condition::Id(id) => match tx.current(rt, id)? {
                    Some(v) if !v.is_deleted() => [id.clone()].into_iter().collect(),
                    _ => BTreeSet::new(),
                },
                Condition::Identifier { system, value } => {
                    tx.find_by_identifier(rt, system.as_deref(), value)?.into_iter().collect()
                }
            };
            result = Some(match result {
                None => found,
                Some(r) => r.intersection(&found).cloned().collect(),
            });
        }
        Ok(result.unwrap_or_default().into_iter().collect())
    }

    /// `POST /Type`, optionally conditional on `If-None-Exist`.
    pub fn create(
        &self,
        ctx: &RequestContext,
        rt: &ResourceType,
        body: ParsedBody,
        if_none_exist: Option<&[Condition]>,
        x_provenance: Option<&Value>,
    ) -> Result<WriteOutcome, RecordError> {
        let mut v = body.0;
        check_type(&v, rt)?;
        let author = provenance_author(x_provenance)?;
        // The id and everything derived from the body alone are made before the writer is taken.
        let id = ResourceId::generate()?;
        if let Some(o) = v.as_object_mut() {
            o.insert("id".into(), Value::String(id.to_string()));
        }
        let mut content = Some(self.content(ctx, rt, &id, v, author.as_deref())?);
        self.write(|tx| {
            if let Some(conds) = if_none_exist
                && let Some(record) = self.existing_match(tx, ctx, rt, conds)?
            {
                return Ok(WriteOutcome { created: false, written: false, record });
            }
            self.create_in(tx, ctx, rt, &id, once(&mut content)?, author.clone())
        })
    }

    /// The one resource a conditional create's criteria match (`None`: create), as the
    /// requester may see it; several matches are an error.
    pub(crate) fn existing_match(
        &self,
        tx: &mut dyn Tx,
        ctx: &RequestContext,
        rt: &ResourceType,
        conds: &[Condition],
    ) -> Result<Option<VersionRecord>, RecordError> {
        match self.matches(tx, ctx, rt, conds)?.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(tx.current(rt, one)?.ok_or_else(|| RecordError::NotFound(format!("{rt}/{one}")))?)),
            many => Err(RecordError::MultipleMatches(many.len())),
        }
    }

    /// Creates `rt/id` (a fresh id) in the caller's transaction.
    pub(crate) fn create_in(
        &self,
        tx: &mut dyn Tx,
        ctx: &RequestContext,
        rt: &ResourceType,
        id: &ResourceId,
        body: impl Into<Content>,
        author: Option<String>,
    ) -> Result<WriteOutcome, RecordError> {
        let mut body = body.into();
        if let Some(o) = body.body.as_object_mut() {
            o.insert("id".into(), Value::String(id.to_string()));
        }
        let record =
            self.commit(tx, Draft { rt, id, method: Method::Create, body: Some(body), previous: None, ctx, author })?;
        Ok(WriteOutcome { created: true, written: true, record })
    }

    /// The id a conditional update writes: the one match, else the body's id, else a new one.
    pub(crate) fn conditional_target(
        &self,
        tx: &mut dyn Tx,
        ctx: &RequestContext,
        rt: &ResourceType,
        conds: &[Condition],
        body: &Value,
    ) -> Result<ResourceId, RecordError> {
        let body_id = match body.get("id") {
            Some(Value::String(s)) => Some(ResourceId::parse(s)?),
            _ => None,
        };
        match (self.matches(tx, ctx, rt, conds)?.as_slice(), body_id) {
            ([], Some(bid)) => Ok(bid),
            ([], None) => ResourceId::generate(),
            ([one], Some(bid)) if *one != bid => Err(RecordError::invalid(
                IssueCode::Invalid,
                format!("the condition matched `{one}` but the body has id `{bid}`"),
            )),
            ([one], _) => Ok(one.clone()),
            (many, _) => Err(RecordError::MultipleMatches(many.len())),
        }
    }

    /// `PUT /Type/id`: update, or create with that id when it does not exist.
    pub fn update(
        &self,
        ctx: &RequestContext,
        rt: &ResourceType,
        id: &ResourceId,
        body: ParsedBody,
        if_match: Option<u64>,
        x_provenance: Option<&Value>,
    ) -> Result<WriteOutcome, RecordError> {
        let v = body.0;
        check_type(&v, rt)?;
        match v.get("id").and_then(Value::as_str) {
            Some(body_id) if body_id == id.as_str() => {}
            Some(body_id) => {
                return Err(RecordError::invalid(
                    IssueCode::Invalid,
                    format!("resource id `{body_id}` does not match the URL id `{id}`"),
                ));
            }
            None => {
                return Err(RecordError::invalid(IssueCode::Invalid, "an update needs the resource `id` in the body"));
            }
        }
        let author = provenance_author(x_provenance)?;
        let mut content = Some(self.content(ctx, rt, id, v, author.as_deref())?);
        self.write(|tx| self.update_in(tx, ctx, rt, id, once(&mut content)?, if_match, author.clone(), Method::Update))
    }

    #[expect(clippy::too_many_arguments, reason = "one internal step shared by update, patch and conditional update")]
    pub(crate) fn update_in(
        &self,
        tx: &mut dyn Tx,
        ctx: &RequestContext,
        rt: &ResourceType,
        id: &ResourceId,
        body: impl Into<Content>,
        if_match: Option<u64>,
        author: Option<String>,
        method: Method,
    ) -> Result<WriteOutcome, RecordError> {
        let body = body.into();
        let current = tx.current(rt, id)?;
        // Visibility first, deleted records included (a deletion keeps its classes): a hidden
        // record answers exactly as a missing one would, and its id cannot be taken over.
        let hidden = match &current {
            Some(c) => !ctx.may_see(tx, c)?,
            None => false,
        };
        if let Some(expected) = if_match {
            // A precondition on a record that does not exist (or is hidden) never holds.
            let now = if hidden { 0 } else { current.as_ref().map_or(0, |c| c.version) };
            if now == 0 || now != expected {
                return Err(RecordError::VersionConflict { expected, current: now });
            }
        }
        if hidden {
            return Err(RecordError::NotFound(format!("{rt}/{id}")));
        }
        if current.as_ref().is_some_and(|c| c.server_written) {
            return Err(RecordError::Forbidden(format!("{rt}/{id} is written by the server and cannot be changed")));
        }
        let created = current.as_ref().is_none_or(VersionRecord::is_deleted);
        let method = if current.is_none() { Method::Create } else { method };
        let record =
            self.commit(tx, Draft { rt, id, method, body: Some(body), previous: current.as_ref(), ctx, author })?;
        Ok(WriteOutcome { created, written: true, record })
    }

    /// Bulk import: writes resources with their ids (update-as-create, as `PUT /Type/id`) in one
    /// transaction — one fsync for the whole batch — each with its Provenance and audit entry.
    /// All or nothing: an error rolls the batch back (the caller may retry items one by one to
    /// find the culprit).
    pub fn import_batch(
        &self,
        ctx: &RequestContext,
        items: &[(ResourceType, ResourceId, ParsedBody)],
    ) -> Result<usize, RecordError> {
        for (rt, id, body) in items {
            check_type(&body.0, rt)?;
            if body.0.get("id").and_then(Value::as_str) != Some(id.as_str()) {
                return Err(RecordError::invalid(IssueCode::Invalid, format!("{rt}/{id}: the body's id differs")));
            }
        }
        // Labels and index rows are derived before the writer is taken.
        let mut contents = items
            .iter()
            .map(|(rt, id, body)| self.content(ctx, rt, id, body.0.clone(), None).map(Some))
            .collect::<Result<Vec<_>, _>>()?;
        self.write(|tx| {
            for ((rt, id, _), content) in items.iter().zip(contents.iter_mut()) {
                self.update_in(tx, ctx, rt, id, once(content)?, None, None, Method::Update)?;
            }
            Ok(items.len())
        })
    }

    /// [`Records::import_batch`] of resources the NDJSON importer has already parsed, validated
    /// and prepared (`ndjson`'s first stage).
    pub(crate) fn import_prepared(
        &self,
        ctx: &RequestContext,
        items: &mut [crate::ndjson::Ready],
    ) -> Result<usize, RecordError> {
        let n = items.len();
        self.write(|tx| {
            for r in items.iter_mut() {
                self.update_in(tx, ctx, &r.rt, &r.id, once(&mut r.content)?, None, None, Method::Update)?;
            }
            Ok(n)
        })
    }

    /// `PUT /Type?criteria`.
    pub fn conditional_update(
        &self,
        ctx: &RequestContext,
        rt: &ResourceType,
        conds: &[Condition],
        body: ParsedBody,
        x_provenance: Option<&Value>,
    ) -> Result<WriteOutcome, RecordError> {
        let mut v = body.0;
        check_type(&v, rt)?;
        let author = provenance_author(x_provenance)?;
        self.write(|tx| {
            let id = self.conditional_target(tx, ctx, rt, conds, &v)?;
            if let Some(o) = v.as_object_mut() {
                o.insert("id".into(), Value::String(id.to_string()));
            }
            self.update_in(tx, ctx, rt, &id, v.clone(), None, author.clone(), Method::Update)
        })
    }

    /// `PATCH /Type/id` with a JSON Patch (RFC 6902) document.
    pub fn patch(
        &self,
        ctx: &RequestContext,
        rt: &ResourceType,
        id: &ResourceId,
        patch: &[u8],
        if_match: Option<u64>,
    ) -> Result<WriteOutcome, RecordError> {
        let ops = parse_patch(patch)?;
        self.write(|tx| self.patch_in(tx, ctx, rt, id, &ops, if_match))
    }

    /// Applies a JSON Patch to the current version in the caller's transaction.
    pub(crate) fn patch_in(
        &self,
        tx: &mut dyn Tx,
        ctx: &RequestContext,
        rt: &ResourceType,
        id: &ResourceId,
        ops: &json_patch::Patch,
        if_match: Option<u64>,
    ) -> Result<WriteOutcome, RecordError> {
        {
            let current = live(visible_current(tx, ctx, rt, id)?, rt, id)?;
            let body = current.body.as_deref().unwrap_or("null");
            let mut v: Value =
                serde_json::from_str(body).map_err(|e| crate::StoreError::Corrupt(format!("stored body: {e}")))?;
            json_patch::patch(&mut v, ops).map_err(|e| RecordError::Unprocessable(format!("patch failed: {e}")))?;
            check_type(&v, rt)?;
            if v.get("id").and_then(Value::as_str) != Some(id.as_str()) {
                return Err(RecordError::invalid(IssueCode::Invalid, "a patch may not change the resource id"));
            }
            // The result is checked as a new body would be, through the same parser: a patch
            // may not build what a client could not send (e.g. nesting deeper than the parser
            // accepts, which could then never be read back or patched again).
            let text = serde_json::to_vec(&v).map_err(|e| RecordError::Unprocessable(format!("patch failed: {e}")))?;
            let v = parse_resource(&text)
                .map_err(|e| match e {
                    RecordError::Invalid(issues) => RecordError::Invalid(issues),
                    other => RecordError::Unprocessable(format!("the patched resource is not acceptable: {other}")),
                })?
                .0;
            self.update_in(tx, ctx, rt, id, v, if_match, None, Method::Patch)
        }
    }

    /// `DELETE /Type/id`: a logical delete. Returns the deletion version, or `None` if there was
    /// nothing live to delete.
    pub fn delete(
        &self,
        ctx: &RequestContext,
        rt: &ResourceType,
        id: &ResourceId,
    ) -> Result<Option<VersionRecord>, RecordError> {
        self.write(|tx| self.delete_in(tx, ctx, rt, id))
    }

    pub(crate) fn delete_in(
        &self,
        tx: &mut dyn Tx,
        ctx: &RequestContext,
        rt: &ResourceType,
        id: &ResourceId,
    ) -> Result<Option<VersionRecord>, RecordError> {
        let current = tx.current(rt, id)?;
        if let Some(c) = &current
            && !ctx.may_see(tx, c)?
        {
            return Err(RecordError::NotFound(format!("{rt}/{id}")));
        }
        match current {
            None => Err(RecordError::NotFound(format!("{rt}/{id}"))),
            Some(c) if c.is_deleted() => Ok(None),
            Some(c) if c.server_written => {
                Err(RecordError::Forbidden(format!("{rt}/{id} is written by the server and cannot be deleted")))
            }
            Some(c) => {
                let r = self.commit(
                    tx,
                    Draft { rt, id, method: Method::Delete, body: None, previous: Some(&c), ctx, author: None },
                )?;
                Ok(Some(r))
            }
        }
    }

    /// `DELETE /Type?criteria`: deletes the one match; no match is not an error.
    pub fn conditional_delete(
        &self,
        ctx: &RequestContext,
        rt: &ResourceType,
        conds: &[Condition],
    ) -> Result<Option<VersionRecord>, RecordError> {
        self.write(|tx| {
            let found = self.matches(tx, ctx, rt, conds)?;
            match found.as_slice() {
                [] => Ok(None),
                [one] => self.delete_in(tx, ctx, rt, one),
                many => Err(RecordError::MultipleMatches(many.len())),
            }
        })
    }

    /// `POST /Type/id/$approve`: the author finalises (確定) a version entered on their behalf.
    pub fn approve(
        &self,
        ctx: &RequestContext,
        rt: &ResourceType,
        id: &ResourceId,
    ) -> Result<VersionRecord, RecordError> {
        self.write(|tx| {
            let current = live(visible_current(tx, ctx, rt, id)?, rt, id)?;
            let EntryStatus::Pending { author } = &current.status else {
                return Err(RecordError::Conflict(format!("{rt}/{id} is not awaiting approval")));
            };
            if *author != ctx.actor.label() {
                return Err(RecordError::Forbidden(format!(
                    "only {author}, the author named at proxy entry (代行入力), can approve {rt}/{id}"
                )));
            }
            let body: Value = serde_json::from_str(current.body.as_deref().unwrap_or("null"))
                .map_err(|e| crate::StoreError::Corrupt(format!("stored body: {e}")))?;
            self.commit(
                tx,
                Draft {
                    rt,
                    id,
                    method: Method::Approve,
                    body: Some(body.into()),
                    previous: Some(&current),
                    ctx,
                    author: Some(author.clone()),
                },
            )
        })
    }

    /// `GET /Type/id`, audited. A record the requester may not see is reported as not found.
    pub fn read(&self, ctx: &RequestContext, rt: &ResourceType, id: &ResourceId) -> Audited<VersionRecord> {
        Audited::append(&self.audit, ctx, ReadAction::Read, &format!("{rt}/{id}"), self.read_current(ctx, rt, id))
    }

    fn read_current(
        &self,
        ctx: &RequestContext,
        rt: &ResourceType,
        id: &ResourceId,
    ) -> Result<VersionRecord, RecordError> {
        self.read_tx(|tx| {
            let v = tx.current(rt, id)?;
            if let Some(v) = &v
                && !ctx.may_see(tx, v)?
            {
                return Err(RecordError::NotFound(format!("{rt}/{id}")));
            }
            live(v, rt, id)
        })
    }

    /// `GET /Type/id/_history/vid`, audited.
    pub fn vread(
        &self,
        ctx: &RequestContext,
        rt: &ResourceType,
        id: &ResourceId,
        version: u64,
    ) -> Audited<VersionRecord> {
        let result = self.read_tx(|tx| {
            let v = visible_version(tx, ctx, rt, id, Some(version))?
                .ok_or_else(|| RecordError::NotFound(reference(rt, id, version)))?;
            if v.is_deleted() {
                return Err(RecordError::Gone(reference(rt, id, version)));
            }
            Ok(v)
        });
        Audited::append(&self.audit, ctx, ReadAction::Vread, &reference(rt, id, version), result)
    }

    /// Which of these versions of `rt` the requester may still see, judged as a `vread` of each
    /// would be judged now (with the record's newest version's classes and patient): for
    /// handing out something prepared earlier, such as an `$export` file, under today's rights.
    /// Each answer is the stored version if visible, `None` if not (a version no longer stored
    /// counts as not visible). One read transaction for the batch.
    pub fn still_visible(
        &self,
        ctx: &RequestContext,
        rt: &ResourceType,
        versions: &[(ResourceId, u64)],
    ) -> Result<Vec<Option<VersionRecord>>, RecordError> {
        self.read_tx(|tx| {
            let mut out = Vec::with_capacity(versions.len());
            for (id, version) in versions {
                out.push(visible_version(tx, ctx, rt, id, Some(*version))?);
            }
            Ok(out)
        })
    }

    /// Current, live resources of a type matching every condition that the requester may see,
    /// audited as a search.
    pub fn search(&self, ctx: &RequestContext, rt: &ResourceType, conds: &[Condition]) -> Audited<Vec<VersionRecord>> {
        let result = self.read_tx(|tx| {
            let mut out = Vec::new();
            for id in self.matches(tx, ctx, rt, conds)? {
                if let Some(v) = tx.current(rt, &id)?
                    && !v.is_deleted()
                {
                    out.push(v);
                }
            }
            Ok(out)
        });
        Audited::append(&self.audit, ctx, ReadAction::Search, rt.as_str(), result)
    }

    /// `GET Patient/{id}/*`: the current, live records in the patient's compartment (R4 Patient
    /// compartment; each record's own patient is this one) that the requester may see, in one
    /// read and audited as one search. The patient itself is not included: read it first, so
    /// that a patient the requester may not see is "not found" before anything else is looked up.
    /// Nor is the server's own Provenance of each version (its facts — 入力者, 確定者, hash — are
    /// each record's history).
    pub fn compartment(&self, ctx: &RequestContext, patient: &ResourceId) -> Audited<Vec<VersionRecord>> {
        let asked = format!("Patient/{patient}/*");
        let target = format!("Patient/{patient}");
        let result = self.read_tx(|tx| {
            let mut out = Vec::new();
            for t in crate::compartment::patient_compartment_types() {
                let rt = ResourceType::parse(t)?;
                for id in tx.references_to(t, None, "Patient", patient.as_str())? {
                    let Ok(id) = ResourceId::parse(&id) else { continue };
                    if let Some(v) = tx.current(&rt, &id)?
                        && !v.is_deleted()
                        && !v.server_written
                        && v.patient.as_deref() == Some(target.as_str())
                        && ctx.may_see(tx, &v)?
                    {
                        out.push(v);
                    }
                }
            }
            Ok(out)
        });
        Audited::append(&self.audit, ctx, ReadAction::Search, &asked, result)
    }

    /// Proxy entries (代行入力) awaiting approval by `author` (a reference such as
    /// `Practitioner/123`) that the requester may see: the author's queue. One read, audited as
    /// one search.
    pub fn pending_for(&self, ctx: &RequestContext, author: &str) -> Audited<Vec<VersionRecord>> {
        let query = format!("_tag={}|pending-approval&_count=200", crate::ENTRY_STATUS_SYSTEM);
        let ctx = ctx.clone().with_query(Some(&query));
        let result = self.read_tx(|tx| {
            let mut out = Vec::new();
            for t in crate::compartment::patient_compartment_types() {
                let req = crate::search::parse_search(t, &query, false, 0)?;
                for v in self.search_in(tx, &ctx, &req)?.matches {
                    if matches!(&v.status, EntryStatus::Pending { author: a } if a == author) {
                        out.push(v);
                    }
                }
            }
            out.sort_by_key(|v| std::cmp::Reverse(v.last_updated));
            Ok(out)
        });
        Audited::append(&self.audit, &ctx, ReadAction::Search, "_tag=pending-approval", result)
    }

    /// Instance, type or system history, audited: only versions the requester may see. `hidden`
    /// says whether any were withheld (so a total would reveal them).
    pub fn history(&self, ctx: &RequestContext, q: &HistoryQuery) -> Audited<HistoryPage> {
        let asked = match (&q.resource_type, &q.id) {
            (Some(rt), Some(id)) => format!("{rt}/{id}/_history"),
            (Some(rt), None) => format!("{rt}/_history"),
            _ => "_history".to_string(),
        };
        Audited::append(&self.audit, ctx, ReadAction::History, &asked, self.history_page(ctx, q))
    }

    /// Instance, type or system history: only versions the requester may see. `hidden` says
    /// whether any were withheld (so a total would reveal them).
    fn history_page(&self, ctx: &RequestContext, q: &HistoryQuery) -> Result<HistoryPage, RecordError> {
        self.read_tx(|tx| {
            if let (Some(rt), Some(id)) = (&q.resource_type, &q.id) {
                match tx.current(rt, id)? {
                    None => return Err(RecordError::NotFound(format!("{rt}/{id}"))),
                    Some(c) if !ctx.may_see(tx, &c)? => return Err(RecordError::NotFound(format!("{rt}/{id}"))),
                    Some(_) => {}
                }
            }
            // Paged over the versions this requester may see: `offset` skips visible versions and
            // `more` says whether another visible one follows, so neither the next link nor the
            // page's contents depend on hidden versions.
            let batch = (q.offset + q.count + 1).clamp(64, 1000);
            let mut store_q = q.clone();
            store_q.offset = 0;
            store_q.count = batch;
            let mut currents: std::collections::HashMap<(String, String), VersionRecord> =
                std::collections::HashMap::new();
            let (mut entries, mut hidden, mut more, mut skipped) = (Vec::with_capacity(q.count), false, false, 0usize);
            let mut total;
            'scan: loop {
                let (all, t) = tx.history(&store_q)?;
                total = t;
                let n = all.len();
                for v in all {
                    let key = (v.resource_type.to_string(), v.id.to_string());
                    let current = match currents.entry(key) {
                        std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                        std::collections::hash_map::Entry::Vacant(e) => {
                            e.insert(tx.current(&v.resource_type, &v.id)?.unwrap_or_else(|| v.clone()))
                        }
                    };
                    if !ctx.may_see_version(tx, &v, current)? {
                        hidden = true;
                    } else if skipped < q.offset {
                        skipped += 1;
                    } else if entries.len() == q.count {
                        more = true;
                        break 'scan;
                    } else {
                        entries.push(v);
                    }
                }
                if n < batch {
                    break;
                }
                store_q.offset += n;
            }
            Ok(HistoryPage { entries, total, hidden, more })
        })
    }

    /// Re-hashes every stored version and reports mismatches (R2/R4 integrity scrub).
    pub fn fsck(&self) -> Result<FsckReport, RecordError> {
        self.fsck_with(&mut |_| {})
    }

    /// [`Self::fsck`], telling `progress` how many versions have been checked so far.
    pub fn fsck_with(&self, progress: &mut dyn FnMut(u64)) -> Result<FsckReport, RecordError> {
        self.read_tx(|tx| {
            let mut report = FsckReport::default();
            tx.for_each_version(&mut |v| {
                report.checked += 1;
                progress(report.checked);
                let actual = match v.body.as_deref() {
                    None => Some(canonical::content_hash(&Value::Null)),
                    Some(b) => serde_json::from_str::<Value>(b).ok().map(|v| canonical::content_hash(&v)),
                };
                match actual {
                    None => report.unparseable.push(reference(&v.resource_type, &v.id, v.version)),
                    Some(h) if h != v.content_sha256 => {
                        report.mismatches.push(reference(&v.resource_type, &v.id, v.version));
                    }
                    Some(_) => {}
                }
                true
            })?;
            Ok(report)
        })
    }

    /// Break-glass (非常時, Z5): grants `ctx`'s user their role's rights on `Patient/patient`
    /// without a care relationship for `minutes`. The grant, an alert and the audit entry (purpose
    /// ETREAT) commit together. Whether the user may break glass at all is decided before, by the
    /// enforcement point.
    pub fn break_glass(
        &self,
        ctx: &RequestContext,
        patient: &ResourceId,
        reason: &str,
        minutes: u32,
    ) -> Result<BreakGlassGrant, RecordError> {
        let reason = reason.trim();
        if reason.is_empty() {
            return Err(RecordError::invalid(IssueCode::Value, "break-glass needs a `reason`"));
        }
        if reason.chars().count() > 1000 {
            return Err(RecordError::invalid(IssueCode::Value, "`reason` is longer than 1000 characters"));
        }
        if !(1..=24 * 60).contains(&minutes) {
            return Err(RecordError::invalid(IssueCode::Value, "the duration must be between 1 minute and 24 hours"));
        }
        if ctx.actor.kind != crate::ActorKind::User {
            return Err(RecordError::Forbidden("break-glass is for a person signed in, not an application".into()));
        }
        let rt = ResourceType::parse("Patient")?;
        self.write_state(|tx| {
            live(tx.current(&rt, patient)?, &rt, patient)?;
            let now = self.now(tx)?;
            let g = BreakGlassGrant {
                id: ResourceId::generate()?.to_string(),
                username: ctx.actor.id.clone(),
                patient: format!("Patient/{patient}"),
                reason: reason.to_string(),
                granted: now,
                expires: Timestamp(now.0.saturating_add(i64::from(minutes) * 60_000_000)),
                review: None,
            };
            tx.add_break_glass(&g)?;
            let detail = format!("grant {} for {} min: {}", g.id, minutes, g.reason);
            for action in ["break-glass", "alert-break-glass"] {
                tx.append_audit(mamori_audit::AuditRecord {
                    detail: Some(detail.clone()),
                    patients: vec![g.patient.clone()],
                    request_id: ctx.request_id.clone(),
                    source: ctx.source.clone(),
                    resources: vec![g.patient.clone()],
                    ..mamori_audit::AuditRecord::new(
                        action,
                        ctx.audit_actor(),
                        mamori_audit::Outcome::Success,
                        "ETREAT",
                    )
                })?;
            }
            Ok(g)
        })
    }

    /// Whether `member` has a care relationship with `patient` (for explanations).
    pub fn in_care(&self, patient: &str, member: &str) -> Result<bool, RecordError> {
        self.read_tx(|tx| Ok(tx.in_care(patient, member)?))
    }

    /// Whether an active break-glass grant covers `username` and `patient` now.
    pub fn break_glass_active(&self, username: &str, patient: &str) -> Result<bool, RecordError> {
        let now = self.clock.now();
        self.read_tx(|tx| Ok(tx.break_glass_active(username, patient, now)?))
    }

    /// A version of a resource (the newest when `version` is `None`), deleted or not, if the
    /// requester may see it: for tools that need a record's metadata (its classes, its
    /// patient), such as `policy explain` and access reviews. `None` when missing or hidden.
    pub fn version_of(
        &self,
        ctx: &RequestContext,
        rt: &ResourceType,
        id: &ResourceId,
        version: Option<u64>,
    ) -> Result<Option<VersionRecord>, RecordError> {
        self.read_tx(|tx| visible_version(tx, ctx, rt, id, version))
    }

    /// Appends the audit entry for what `ctx`'s reads revealed, when its guard leaves that to the
    /// service (the local operator's tools that look at records' metadata, such as `policy
    /// explain`); does nothing when nothing was revealed. `action` is the audit action, `detail`
    /// what the tool did. The entry is built as every read's is ([`crate::read_entry`]).
    pub fn audit_reads(
        &self,
        ctx: &RequestContext,
        action: ReadAction,
        detail: Option<String>,
    ) -> Result<(), RecordError> {
        let Some(revealed) = ctx.guard.0.take_revealed() else { return Ok(()) };
        if revealed.resources.is_empty() && revealed.unlisted == 0 {
            return Ok(());
        }
        let entry = crate::read_entry(ctx, action.as_str(), None, None, revealed, detail);
        self.audit.append(vec![entry]).map(|_| ()).map_err(|e| RecordError::Unaudited(e.to_string()))
    }

    /// Break-glass grants, newest first (`open_only`: not yet reviewed).
    pub fn break_glass_grants(&self, open_only: bool) -> Result<Vec<BreakGlassGrant>, RecordError> {
        self.read_tx(|tx| Ok(tx.break_glass_grants(open_only)?))
    }

    /// The security manager closes the review of a break-glass use (audited).
    pub fn close_break_glass(&self, ctx: &RequestContext, id: &str, note: &str) -> Result<(), RecordError> {
        if note.trim().is_empty() {
            return Err(RecordError::invalid(IssueCode::Value, "closing a review needs a note"));
        }
        self.write_state(|tx| {
            let now = self.now(tx)?;
            let grants = tx.break_glass_grants(true)?;
            let Some(g) = grants.iter().find(|g| g.id == id) else {
                return Err(RecordError::NotFound(format!("no open break-glass review `{id}`")));
            };
            if !tx.close_break_glass(id, &ctx.actor.label(), note.trim(), now)? {
                return Err(RecordError::NotFound(format!("no open break-glass review `{id}`")));
            }
            tx.append_audit(mamori_audit::AuditRecord {
                detail: Some(format!("review of break-glass grant {id} closed: {}", note.trim())),
                patients: vec![g.patient.clone()],
                ..mamori_audit::AuditRecord::new(
                    "break-glass-review",
                    ctx.audit_actor(),
                    mamori_audit::Outcome::Success,
                    "HOPERAT",
                )
            })?;
            Ok(())
        })
    }

    /// Physically removes a deleted record whose retention period has ended. Inside retention
    /// this always fails.
    pub fn purge(&self, ctx: &RequestContext, rt: &ResourceType, id: &ResourceId) -> Result<u64, RecordError> {
        self.write(|tx| {
            let current = tx.current(rt, id)?.ok_or_else(|| RecordError::NotFound(format!("{rt}/{id}")))?;
            if !current.is_deleted() {
                return Err(RecordError::Conflict(format!("{rt}/{id} is live; delete it before it can be purged")));
            }
            let ends = self.retention.ends(rt, current.last_updated);
            if self.clock.now() < ends {
                return Err(RecordError::Forbidden(format!(
                    "{rt}/{id} is within its retention period (保存期間, {} years) until {}",
                    self.retention.years_for(rt),
                    ends.to_fhir()
                )));
            }
            let removed = tx.purge(rt, id)?;
            tx.append_audit(mamori_audit::AuditRecord {
                detail: Some(format!("{removed} versions removed after retention ended at {}", ends.to_fhir())),
                patients: current.patient.clone().into_iter().collect(),
                request_id: ctx.request_id.clone(),
                resources: vec![format!("{rt}/{id}")],
                source: ctx.source.clone(),
                ..mamori_audit::AuditRecord::new("purge", ctx.audit_actor(), mamori_audit::Outcome::Success, "HOPERAT")
            })?;
            Ok(removed)
        })
    }
}

/// The current version of `rt/id` when the requester may see it; a hidden one, live or deleted,
/// is `None` exactly like a missing one (so the caller's 404/410 cannot tell them apart).
fn visible_current(
    tx: &mut dyn Tx,
    ctx: &RequestContext,
    rt: &ResourceType,
    id: &ResourceId,
) -> Result<Option<VersionRecord>, RecordError> {
    match tx.current(rt, id)? {
        Some(v) if !ctx.may_see(tx, &v)? => Ok(None),
        other => Ok(other),
    }
}

fn live(v: Option<VersionRecord>, rt: &ResourceType, id: &ResourceId) -> Result<VersionRecord, RecordError> {
    match v {
        Some(v) if v.is_deleted() => Err(RecordError::Gone(format!("{rt}/{id}"))),
        Some(v) => Ok(v),
        None => Err(RecordError::NotFound(format!("{rt}/{id}"))),
    }
}

fn check_type(v: &Value, rt: &ResourceType) -> Result<(), RecordError> {
    match v.get("resourceType").and_then(Value::as_str) {
        Some(t) if t == rt.as_str() => Ok(()),
        Some(t) => Err(RecordError::Invalid(vec![
            Issue::error(IssueCode::Invalid, format!("resourceType `{t}` does not match the URL type `{rt}`"))
                .at("resourceType"),
        ])),
        None => Err(RecordError::invalid(IssueCode::Structure, "missing `resourceType`")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic relative of the cargo-fuzz target: mutated resources never panic the parser.
    #[test]
    fn mutated_input_never_panics() {
        let seeds: [&[u8]; 3] = [
            br#"{"resourceType":"Patient","id":"p1","name":[{"family":"Yamada","given":["Taro"]}],"birthDate":"1970-01-01","_birthDate":{"extension":[{"url":"http://x","valueString":"y"}]},"contained":[{"resourceType":"Organization","id":"o"}]}"#,
            br#"{"resourceType":"Observation","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"8867-4"}]},"valueQuantity":{"value":1.50,"unit":"mg"},"component":[{"code":{"text":"a"},"valueString":"b"}]}"#,
            br#"{"resourceType":"Bundle","type":"collection","entry":[{"resource":{"resourceType":"Patient","active":true}}]}"#,
        ];
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let interesting = b"{}[]\":,0123456789.-eE \\tnull true false _ x";
        let mut parsed_ok = 0;
        for seed in seeds {
            assert!(parse_resource(seed).is_ok(), "seed must be valid");
            for _ in 0..3000 {
                let mut m = seed.to_vec();
                for _ in 0..(next() % 4 + 1) {
                    let pos = (next() as usize) % m.len().max(1);
                    let b = interesting.get((next() as usize) % interesting.len()).copied().unwrap_or(b'x');
                    match next() % 3 {
                        0 => m.insert(pos, b),
                        1 if !m.is_empty() => {
                            m.remove(pos);
                        }
                        _ => {
                            if let Some(slot) = m.get_mut(pos) {
                                *slot = b;
                            }
                        }
                    }
                }
                if parse_resource(&m).is_ok() {
                    parsed_ok += 1;
                }
            }
        }
        assert!(parsed_ok > 0, "some mutations stay valid, so the validator is not refusing everything");
    }

    #[test]
    fn conditions_parse_and_refuse() {
        assert_eq!(
            parse_conditions("identifier=urn%3Ax%7C1&_id=a").ok(),
            Some(vec![
                Condition::Identifier { system: Some("urn:x".into()), value: "1".into() },
                Condition::Id(ResourceId::parse("a").unwrap_or_else(|e| unreachable!("{e}"))),
            ])
        );
        assert!(parse_conditions("").is_err());
        assert!(parse_conditions("name=x").is_err());
        assert!(parse_conditions("identifier=").is_err());
        assert!(parse_conditions("identifier=%zz").is_err());
        assert!(parse_conditions("identifier=urn:x|").is_err());
    }
}
