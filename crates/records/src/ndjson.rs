//! NDJSON ingestion shared by `mamori import` and `POST /fhir/$import`: one resource per line,
//! as Bulk Data exports write them.
//!
//! Each line is parsed and validated like a REST write. Resources keep their ids
//! (update-as-create, so references between them hold) or get one. Lines are written in batches:
//! one transaction and one fsync per batch, each resource with its Provenance and audit entry. When
//! a batch fails, its lines are retried one by one, so a refused line is reported with its number
//! and stores nothing while the rest still go in.
//!
//! Two stages on two threads (issue #9): the caller's thread parses, validates, labels and indexes
//! each line (everything that needs no transaction) while a writer thread stores the previous
//! batch. At most one batch waits between them, so memory stays bounded by two batches.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender};

use serde_json::Value;

use crate::service::Content;
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

/// A line ready to be written: its resource prepared, and the line itself to retry it alone.
pub(crate) struct Ready {
    pub(crate) rt: ResourceType,
    pub(crate) id: ResourceId,
    pub(crate) content: Option<Content>,
    line: String,
    source: Arc<str>,
    n: usize,
    /// Order of arrival, to report refusals in input order.
    seq: u64,
}

/// What the writer thread reports for one batch.
#[derive(Default)]
struct Outcome {
    done: usize,
    refused: Vec<(u64, Refusal)>,
}

/// The writer thread and the batches it has not reported yet.
struct Writer {
    to: Option<SyncSender<Vec<Ready>>>,
    from: Receiver<Outcome>,
    handle: Option<std::thread::JoinHandle<()>>,
    /// The lines (order, source, number) of each batch handed over and not reported yet, oldest
    /// first: the writer reports its batches in order.
    in_flight: std::collections::VecDeque<Vec<(u64, Arc<str>, usize)>>,
}

/// Batches lines into transactions.
pub struct Importer {
    records: Arc<Records>,
    ctx: RequestContext,
    batch: usize,
    pending: Vec<Ready>,
    check: Option<TypeCheck>,
    writer: Option<Writer>,
    seq: u64,
    /// Refusals not yet put in order.
    unsorted: Vec<(u64, Refusal)>,
    /// Resources stored so far.
    pub done: usize,
    /// Lines refused so far (all of them are counted; the first 1,000 are kept).
    pub refused: usize,
    /// The first 1,000 refusals, in input order (complete after [`Importer::flush`]).
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

/// Stores one batch in one transaction; when that fails, each line alone.
fn store_batch(records: &Records, ctx: &RequestContext, mut batch: Vec<Ready>) -> Outcome {
    let mut out = Outcome::default();
    match records.import_prepared(ctx, &mut batch) {
        Ok(n) => out.done = n,
        Err(_) => {
            // Find the culprits one by one; the others still go in.
            for r in &batch {
                let result =
                    item_of(&r.line).and_then(|item| records.import_batch(ctx, &[item]).map_err(|e| describe(&e)));
                match result {
                    Ok(n) => out.done += n,
                    Err(why) => out.refused.push((r.seq, Refusal { source: r.source.to_string(), line: r.n, why })),
                }
            }
        }
    }
    out
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
            check: None,
            writer: None,
            seq: 0,
            unsorted: Vec::new(),
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

    fn refuse_at(&mut self, seq: u64, source: &str, line: usize, why: String) {
        self.refused += 1;
        if self.unsorted.len() + self.refusals.len() < 1000 {
            self.unsorted.push((seq, Refusal { source: source.to_string(), line, why }));
        }
    }

    /// Records a line refused before it reached the importer (unreadable, too long).
    pub fn refuse(&mut self, source: &str, line: usize, why: String) {
        self.seq += 1;
        self.refuse_at(self.seq, source, line, why);
    }

    /// Takes one line (blank lines are skipped); hands a batch to the writer when it is full.
    pub fn line(&mut self, source: &str, n: usize, line: &str) {
        if line.trim().is_empty() {
            return;
        }
        self.seq += 1;
        let ready = item_of(line)
            .and_then(|item| match &mut self.check {
                Some(check) => check(&item.0).map(|()| item),
                None => Ok(item),
            })
            .and_then(|(rt, id, body)| {
                // As an update-as-create by the importer: no author of its own.
                let content = self.records.content(&self.ctx, &rt, &id, body.0, None).map_err(|e| describe(&e))?;
                Ok(Ready {
                    rt,
                    id,
                    content: Some(content),
                    line: line.to_string(),
                    source: Arc::from(source),
                    n,
                    seq: self.seq,
                })
            });
        match ready {
            Ok(r) => self.pending.push(r),
            Err(why) => self.refuse_at(self.seq, source, n, why),
        }
        if self.pending.len() >= self.batch {
            self.send();
        }
        self.collect(false);
    }

    /// Hands what is pending to the writer thread (started on first use), or stores it here when
    /// there is no writer thread.
    fn send(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let batch = std::mem::replace(&mut self.pending, Vec::with_capacity(self.batch));
        if self.writer.is_none() {
            let (to, rx) = std::sync::mpsc::sync_channel::<Vec<Ready>>(1);
            let (tx, from) = std::sync::mpsc::sync_channel::<Outcome>(2);
            let (records, ctx) = (self.records.clone(), self.ctx.clone());
            let spawned = std::thread::Builder::new().name("mamori-import-writer".into()).spawn(move || {
                while let Ok(batch) = rx.recv() {
                    if tx.send(store_batch(&records, &ctx, batch)).is_err() {
                        return;
                    }
                }
            });
            // No thread to be had: the batches are stored on this one.
            if let Ok(h) = spawned {
                self.writer = Some(Writer { to: Some(to), from, handle: Some(h), in_flight: Default::default() });
            }
        }
        let unsent = match self.writer.as_mut().and_then(|w| w.to.as_ref().map(|to| (to, &mut w.in_flight))) {
            Some((to, in_flight)) => {
                let lines = batch.iter().map(|r| (r.seq, r.source.clone(), r.n)).collect();
                match to.send(batch) {
                    Ok(()) => {
                        in_flight.push_back(lines);
                        None
                    }
                    Err(std::sync::mpsc::SendError(batch)) => Some(batch),
                }
            }
            None => Some(batch),
        };
        if let Some(batch) = unsent {
            let o = store_batch(&self.records, &self.ctx, batch);
            self.merge(o);
        }
    }

    fn merge(&mut self, o: Outcome) {
        self.done += o.done;
        for (seq, r) in o.refused {
            self.refuse_at(seq, &r.source, r.line, r.why);
        }
    }

    /// Takes the writer's reports: those ready, or (`wait`) all of them.
    fn collect(&mut self, wait: bool) {
        loop {
            let Some(w) = self.writer.as_mut() else { return };
            if w.in_flight.is_empty() {
                return;
            }
            let o = if wait { w.from.recv().ok() } else { w.from.try_recv().ok() };
            let Some(o) = o else {
                if wait {
                    // The writer thread is gone: the lines it had are reported, since whether
                    // their batch committed is not known here.
                    let lost: Vec<_> = w.in_flight.drain(..).flatten().collect();
                    for (seq, source, n) in lost {
                        self.refuse_at(
                            seq,
                            &source,
                            n,
                            "the import writer stopped; this line may not have been stored".into(),
                        );
                    }
                }
                return;
            };
            w.in_flight.pop_front();
            self.merge(o);
        }
    }

    /// Writes what is pending and waits until everything handed over is stored or refused.
    pub fn flush(&mut self) {
        self.send();
        self.collect(true);
        let mut all: Vec<(u64, Refusal)> = std::mem::take(&mut self.unsorted);
        all.sort_by_key(|(seq, _)| *seq);
        self.refusals.extend(all.into_iter().map(|(_, r)| r));
        self.refusals.truncate(1000);
    }
}

impl Drop for Importer {
    fn drop(&mut self) {
        if let Some(w) = self.writer.as_mut() {
            // Closing the channel ends the writer thread once it has finished its batch.
            w.to = None;
            if let Some(h) = w.handle.take() {
                let _ = h.join();
            }
        }
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
