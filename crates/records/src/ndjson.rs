//! NDJSON ingestion shared by `mamori import` and `POST /fhir/$import`: one resource per line, as
//! Bulk Data exports write them.
//!
//! Each line is parsed and validated like a REST write. Resources keep their ids
//! (update-as-create, so references between them hold) or get one. Lines are written in batches:
//! one transaction and one fsync per batch, each resource with its Provenance and audit entry. When
//! a batch fails, its lines are retried one by one, so a refused line is reported with its number
//! and stores nothing while the rest still go in.

use std::sync::Arc;

use serde_json::Value;

use crate::{ParsedBody, RecordError, Records, RequestContext, ResourceId, ResourceType, parse_resource};

type Item = (ResourceType, ResourceId, ParsedBody);

/// A line that was not stored, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// File name or `body`.
    pub source: String,
    /// Line number, from 1.
    pub line: usize,
    /// Why (at most 300 characters).
    pub why: String,
}

/// Decides whether the importer may write a resource type (the HTTP enforcement point); `Err`
/// says why not.
pub type TypeCheck = Box<dyn FnMut(&ResourceType) -> Result<(), String> + Send>;

/// Batches lines into transactions.
pub struct Importer {
    records: Arc<Records>,
    ctx: RequestContext,
    batch: usize,
    pending: Vec<Item>,
    /// Where each pending item came from: source and line.
    pending_at: Vec<(String, usize)>,
    check: Option<TypeCheck>,
    /// Resources stored so far.
    pub done: usize,
    /// Lines refused so far (all of them are counted; the first 1,000 are kept).
    pub refused: usize,
    /// The first 1,000 refusals.
    pub refusals: Vec<Refusal>,
}

fn describe(e: &RecordError) -> String {
    e.to_string().chars().take(300).collect()
}

/// Parses one line into the resource to store.
fn item_of(line: &str) -> Result<Item, String> {
    let ParsedBody(mut v) = parse_resource(line.as_bytes()).map_err(|e| describe(&e))?;
    let rt = v.get("resourceType").and_then(Value::as_str).ok_or("no resourceType")?.to_string();
    let rt = ResourceType::parse(&rt).map_err(|e| describe(&e))?;
    let id = match v.get("id").and_then(Value::as_str) {
        Some(id) => ResourceId::parse(id).map_err(|e| describe(&e))?,
        None => {
            let id = ResourceId::generate().map_err(|e| describe(&e))?;
            if let Some(o) = v.as_object_mut() {
                o.insert("id".into(), id.to_string().into());
            }
            id
        }
    };
    Ok((rt, id, ParsedBody(v)))
}

impl Importer {
    /// An importer writing as `ctx`, `batch` resources per transaction (1–10,000).
    pub fn new(records: Arc<Records>, ctx: RequestContext, batch: usize) -> Self {
        let batch = batch.clamp(1, 10_000);
        Importer {
            records,
            ctx,
            batch,
            pending: Vec::with_capacity(batch),
            pending_at: Vec::with_capacity(batch),
            check: None,
            done: 0,
            refused: 0,
            refusals: Vec::new(),
        }
    }

    /// Checks each resource type before it is written.
    pub fn with_check(mut self, check: TypeCheck) -> Self {
        self.check = Some(check);
        self
    }

    /// Records a line refused before it reached the importer (unreadable, too long).
    pub fn refuse(&mut self, source: &str, line: usize, why: String) {
        self.refused += 1;
        if self.refusals.len() < 1000 {
            self.refusals.push(Refusal { source: source.to_string(), line, why });
        }
    }

    /// Takes one line (blank lines are skipped); writes a batch when it is full.
    pub fn line(&mut self, source: &str, n: usize, line: &str) {
        if line.trim().is_empty() {
            return;
        }
        let item = item_of(line).and_then(|item| match &mut self.check {
            Some(check) => check(&item.0).map(|()| item),
            None => Ok(item),
        });
        match item {
            Ok(item) => {
                self.pending.push(item);
                self.pending_at.push((source.to_string(), n));
            }
            Err(why) => self.refuse(source, n, why),
        }
        if self.pending.len() >= self.batch {
            self.flush();
        }
    }

    /// Writes what is pending.
    pub fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        match self.records.import_batch(&self.ctx, &self.pending) {
            Ok(n) => self.done += n,
            Err(_) => {
                // Find the culprits one by one; the others still go in.
                let pending = std::mem::take(&mut self.pending);
                let at = std::mem::take(&mut self.pending_at);
                for (item, (source, line)) in pending.iter().zip(at) {
                    match self.records.import_batch(&self.ctx, std::slice::from_ref(item)) {
                        Ok(n) => self.done += n,
                        Err(e) => self.refuse(&source, line, describe(&e)),
                    }
                }
            }
        }
        self.pending.clear();
        self.pending_at.clear();
    }
}

/// Which resources a Bulk Data export takes.
#[derive(Debug, Clone)]
pub struct ExportFilter {
    /// Only these types (`_type`); all when `None`.
    pub types: Option<std::collections::BTreeSet<String>>,
    /// Only resources changed after this time (`_since`).
    pub since: Option<crate::Timestamp>,
    /// Whose resources.
    pub scope: ExportScope,
}

/// The population of an export.
#[derive(Debug, Clone)]
pub enum ExportScope {
    /// `/$export`: everything.
    System,
    /// `/Patient/$export`: every resource about a patient (the patients themselves included).
    AllPatients,
    /// `/Group/id/$export`: the resources about these patients (`Patient/id`).
    Patients(std::collections::HashSet<String>),
}

impl ExportFilter {
    fn takes(&self, v: &crate::VersionRecord) -> bool {
        if v.is_deleted() || self.since.is_some_and(|s| v.last_updated <= s) {
            return false;
        }
        if self.types.as_ref().is_some_and(|t| !t.contains(v.resource_type.as_str())) {
            return false;
        }
        match &self.scope {
            ExportScope::System => true,
            ExportScope::AllPatients => v.patient.is_some(),
            ExportScope::Patients(set) => v.patient.as_ref().is_some_and(|p| set.contains(p)),
        }
    }
}

impl Records {
    /// Visits, on one read snapshot, every current resource `filter` takes that the requester may
    /// see (each passes `ctx`'s guard); `sink` returns `false` to stop.
    pub fn export(
        &self,
        ctx: &RequestContext,
        filter: &ExportFilter,
        sink: &mut dyn FnMut(&crate::VersionRecord) -> Result<bool, RecordError>,
    ) -> Result<(), RecordError> {
        self.read_tx(|tx| {
            let mut keys = Vec::new();
            tx.for_each_current(&mut |v| {
                if filter.takes(v) {
                    keys.push((v.resource_type.clone(), v.id.clone()));
                }
                true
            })?;
            for (rt, id) in &keys {
                if let Some(v) = tx.current(rt, id)?
                    && filter.takes(&v)
                    && ctx.may_see(tx, &v)?
                    && !sink(&v)?
                {
                    break;
                }
            }
            Ok(())
        })
    }
}
