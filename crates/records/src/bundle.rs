//! batch and transaction Bundles (`POST /fhir`).
//!
//! A transaction runs in one store transaction: every entry commits or none does. Entries are
//! processed in the order the specification prescribes (DELETE, POST, PUT/PATCH, GET), whatever
//! their order in the Bundle; the response lists them in the request's order. Before anything is
//! written, every POST entry gets its id (or its conditional match), every PUT its target, and
//! the references to the entries' `fullUrl`s (`urn:uuid:…`) and conditional references
//! (`Patient?identifier=…`) in the bodies are replaced by `Type/id`.
//!
//! A batch runs each entry as a transaction of its own: one entry's failure is reported in its
//! response and does not touch the others.
//!
//! Every resource an entry reads, changes or matches passes the request's guard, as the single
//! interactions do (they share the same internal steps).

use std::collections::HashMap;

use serde_json::Value;

use crate::search::{SearchPage, SearchRequest, parse::parse_search};
use crate::service::{WriteOutcome, parse_patch};
use crate::{
    Condition, Issue, IssueCode, Method, RecordError, Records, RequestContext, ResourceId, ResourceType, Tx,
    VersionRecord, parse_conditions, validate,
};

/// At most this many entries in one Bundle.
pub const MAX_ENTRIES: usize = 10_000;

/// batch or transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BundleKind {
    /// Independent entries.
    Batch,
    /// All or nothing.
    Transaction,
}

/// What an entry aims at: an id, or the resource a search finds.
#[derive(Debug, Clone)]
pub enum Target {
    /// `Type/id`.
    Id(ResourceId),
    /// `Type?criteria`.
    Conditions(Vec<Condition>),
}

/// One entry's interaction.
#[derive(Debug, Clone)]
pub enum BundleOp {
    /// `POST Type` (with `ifNoneExist`).
    Create {
        /// Type.
        rt: ResourceType,
        /// Validated body.
        body: Value,
        /// Conditional create.
        if_none_exist: Option<Vec<Condition>>,
    },
    /// `PUT Type/id` or `PUT Type?criteria`.
    Update {
        /// Type.
        rt: ResourceType,
        /// Which resource.
        target: Target,
        /// Validated body.
        body: Value,
        /// `ifMatch`.
        if_match: Option<u64>,
    },
    /// `PATCH Type/id` with a JSON Patch (a Binary of `application/json-patch+json`).
    Patch {
        /// Type.
        rt: ResourceType,
        /// Id.
        id: ResourceId,
        /// The patch.
        patch: json_patch::Patch,
        /// `ifMatch`.
        if_match: Option<u64>,
    },
    /// `DELETE Type/id` or `DELETE Type?criteria`.
    Delete {
        /// Type.
        rt: ResourceType,
        /// Which resource.
        target: Target,
    },
    /// `GET Type/id[/_history/v]`.
    Read {
        /// Type.
        rt: ResourceType,
        /// Id.
        id: ResourceId,
        /// Version, for a vread.
        version: Option<u64>,
    },
    /// `GET Type?criteria`.
    Search(Box<SearchRequest>),
}

/// The interaction an entry asks for, for the enforcement point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interaction {
    /// read / vread.
    Read,
    /// search (also any conditional match).
    Search,
    /// create.
    Create,
    /// update / patch.
    Update,
    /// delete.
    Delete,
}

impl BundleOp {
    /// The resource type and the interactions the entry needs to be allowed.
    pub fn needs(&self) -> (&str, Vec<Interaction>) {
        use Interaction as I;
        match self {
            BundleOp::Create { rt, if_none_exist, .. } => {
                (rt.as_str(), if if_none_exist.is_some() { vec![I::Create, I::Search] } else { vec![I::Create] })
            }
            BundleOp::Update { rt, target: Target::Id(_), .. } => (rt.as_str(), vec![I::Update]),
            BundleOp::Update { rt, target: Target::Conditions(_), .. } => {
                (rt.as_str(), vec![I::Update, I::Create, I::Search])
            }
            BundleOp::Patch { rt, .. } => (rt.as_str(), vec![I::Update]),
            BundleOp::Delete { rt, target: Target::Id(_) } => (rt.as_str(), vec![I::Delete]),
            BundleOp::Delete { rt, target: Target::Conditions(_) } => (rt.as_str(), vec![I::Delete, I::Search]),
            BundleOp::Read { rt, .. } => (rt.as_str(), vec![I::Read]),
            BundleOp::Search(req) => (req.query.resource_type.as_str(), vec![I::Search]),
        }
    }

    /// Processing rank in a transaction: DELETE, POST, PUT/PATCH, GET.
    fn rank(&self) -> u8 {
        match self {
            BundleOp::Delete { .. } => 0,
            BundleOp::Create { .. } => 1,
            BundleOp::Update { .. } | BundleOp::Patch { .. } => 2,
            BundleOp::Read { .. } | BundleOp::Search(_) => 3,
        }
    }

    /// The written resource type (for refusing writes the server keeps to itself).
    pub fn writes(&self) -> Option<&ResourceType> {
        match self {
            BundleOp::Create { rt, .. }
            | BundleOp::Update { rt, .. }
            | BundleOp::Patch { rt, .. }
            | BundleOp::Delete { rt, .. } => Some(rt),
            BundleOp::Read { .. } | BundleOp::Search(_) => None,
        }
    }
}

/// One parsed entry.
#[derive(Debug, Clone)]
pub struct BundleEntry {
    /// `fullUrl`, if any.
    pub full_url: Option<String>,
    /// What it asks.
    pub op: BundleOp,
}

/// A parsed Bundle: its kind and each entry, or why the entry cannot be run.
#[derive(Debug)]
pub struct ParsedBundle {
    /// batch or transaction.
    pub kind: BundleKind,
    /// In the request's order.
    pub entries: Vec<Result<BundleEntry, RecordError>>,
}

/// What an entry did.
#[derive(Debug, Clone)]
pub enum BundleDone {
    /// Created, updated, patched, or matched by a conditional create.
    Written(WriteOutcome),
    /// Deleted (the deletion version), or nothing there to delete.
    Deleted(Option<VersionRecord>),
    /// Read.
    Read(VersionRecord),
    /// A search page, with the search that found it.
    Found(Box<SearchRequest>, SearchPage),
}

fn bad(at: usize, msg: impl Into<String>) -> RecordError {
    RecordError::invalid(IssueCode::Invalid, format!("Bundle.entry[{at}]: {}", msg.into()))
}

/// Parses a `Bundle` of type `batch` or `transaction`. `base` is the server's FHIR base URL
/// (`https://host/fhir`); entry URLs may be relative or start with it. `now` (µs) is for search
/// entries' `ap` dates.
pub fn parse_bundle(v: &Value, base: &str, now: i64) -> Result<ParsedBundle, RecordError> {
    if v.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
        return Err(RecordError::invalid(IssueCode::Invalid, "the body must be a Bundle"));
    }
    let kind = match v.get("type").and_then(Value::as_str) {
        Some("batch") => BundleKind::Batch,
        Some("transaction") => BundleKind::Transaction,
        Some(other) => {
            return Err(RecordError::invalid(
                IssueCode::NotSupported,
                format!("a Bundle of type `{other}` cannot be processed; send a `batch` or a `transaction`"),
            ));
        }
        None => return Err(RecordError::invalid(IssueCode::Invalid, "the Bundle has no `type`")),
    };
    // The Bundle itself, without its entries: each entry (its request, then its resource) is
    // validated on its own, so a batch reports a bad entry there and runs the others.
    let shell: serde_json::Map<String, Value> = v
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| *k != "entry")
        .map(|(k, x)| (k.clone(), x.clone()))
        .collect();
    let issues = validate::validate_resource(mamori_fhir_schema::r4(), &Value::Object(shell));
    if !issues.is_empty() {
        return Err(RecordError::Invalid(issues));
    }
    let raw = match v.get("entry") {
        None => &Vec::new(),
        Some(Value::Array(entries)) if !entries.is_empty() => entries,
        Some(_) => {
            return Err(RecordError::Invalid(vec![
                Issue::error(IssueCode::Structure, "`entry` must be a non-empty array").at("Bundle.entry"),
            ]));
        }
    };
    if raw.len() > MAX_ENTRIES {
        return Err(RecordError::invalid(
            IssueCode::TooCostly,
            format!("the Bundle has {} entries; at most {MAX_ENTRIES} are processed at once", raw.len()),
        ));
    }
    let entries = raw.iter().enumerate().map(|(i, e)| parse_entry(i, e, base, now)).collect();
    Ok(ParsedBundle { kind, entries })
}

fn parse_entry(i: usize, e: &Value, base: &str, now: i64) -> Result<BundleEntry, RecordError> {
    // The entry without its resource, as R4's `Bundle.entry` (request method and URL, their
    // bindings); the resource is validated below when the method carries one.
    let Some(o) = e.as_object() else { return Err(bad(i, "an entry must be a JSON object")) };
    let rest: serde_json::Map<String, Value> =
        o.iter().filter(|(k, _)| *k != "resource").map(|(k, x)| (k.clone(), x.clone())).collect();
    if !rest.is_empty() {
        let at = format!("Bundle.entry[{i}]");
        let issues = validate::validate_element(mamori_fhir_schema::r4(), &Value::Object(rest), "Bundle.entry", &at);
        if !issues.is_empty() {
            return Err(RecordError::Invalid(issues));
        }
    }
    let full_url = e.get("fullUrl").and_then(Value::as_str).map(str::to_string);
    let req = e.get("request").ok_or_else(|| bad(i, "the entry has no `request`"))?;
    let method = req.get("method").and_then(Value::as_str).ok_or_else(|| bad(i, "`request.method` is missing"))?;
    let url = req.get("url").and_then(Value::as_str).ok_or_else(|| bad(i, "`request.url` is missing"))?;
    let url = url.strip_prefix(base).map(|u| u.trim_start_matches('/')).unwrap_or(url);
    let (path, query) = match url.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (url, None),
    };
    // An absolute URL on another server is refused; a query may hold URIs of its own
    // (`Patient?identifier=http://hospital.example/mrn|123`, every conditional update on a
    // system URI).
    if path.contains("://") {
        return Err(bad(i, format!("`{url}` is not on this server")));
    }
    let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let rt = match parts.first() {
        Some(t) => ResourceType::parse(t).map_err(|_| bad(i, format!("`{t}` is not an R4 resource type")))?,
        None => return Err(bad(i, "`request.url` names no resource type")),
    };
    let id = match parts.get(1) {
        Some(s) => Some(ResourceId::parse(s).map_err(|_| bad(i, format!("`{s}` is not a resource id")))?),
        None => None,
    };
    let if_match = match req.get("ifMatch").and_then(Value::as_str) {
        Some(s) => {
            let inner = s.trim().strip_prefix("W/").unwrap_or(s.trim()).trim_matches('"');
            Some(inner.parse::<u64>().map_err(|_| bad(i, format!("ifMatch `{s}` is not a version ETag")))?)
        }
        None => None,
    };
    let rt_name = rt.to_string();
    let resource = || -> Result<Value, RecordError> {
        let r = e.get("resource").ok_or_else(|| bad(i, format!("a {method} entry needs a `resource`")))?;
        if r.get("resourceType").and_then(Value::as_str) != Some(rt_name.as_str()) {
            return Err(bad(i, format!("the resource is not a {rt_name}")));
        }
        let issues = validate::validate_resource(mamori_fhir_schema::r4(), r);
        if !issues.is_empty() {
            return Err(RecordError::Invalid(issues.into_iter().map(|x| locate(i, x)).collect()));
        }
        Ok(r.clone())
    };
    let conditions = |q: &str| parse_conditions(q).map_err(|e| prefix(i, e));
    let op = match (method, id, query, parts.len()) {
        ("POST", None, None, 1) => BundleOp::Create {
            rt: rt.clone(),
            body: resource()?,
            if_none_exist: match req.get("ifNoneExist").and_then(Value::as_str) {
                Some(q) => Some(conditions(q.strip_prefix(&format!("{rt}?")).unwrap_or(q))?),
                None => None,
            },
        },
        ("PUT", Some(id), None, 2) => {
            let body = resource()?;
            match body.get("id").and_then(Value::as_str) {
                Some(b) if b == id.as_str() => {}
                _ => return Err(bad(i, format!("the resource's id must be `{id}`, as in the URL"))),
            }
            BundleOp::Update { rt, target: Target::Id(id), body, if_match }
        }
        ("PUT", None, Some(q), 1) => {
            BundleOp::Update { rt, target: Target::Conditions(conditions(q)?), body: resource()?, if_match }
        }
        ("PATCH", Some(id), None, 2) => BundleOp::Patch { rt, id, patch: entry_patch(i, e)?, if_match },
        ("DELETE", Some(id), None, 2) => BundleOp::Delete { rt, target: Target::Id(id) },
        ("DELETE", None, Some(q), 1) => BundleOp::Delete { rt, target: Target::Conditions(conditions(q)?) },
        ("GET", Some(id), None, 2) => BundleOp::Read { rt, id, version: None },
        ("GET", Some(id), None, 4) if parts.get(2) == Some(&"_history") => {
            let v = parts.get(3).and_then(|v| v.parse::<u64>().ok()).ok_or_else(|| bad(i, "bad version id"))?;
            BundleOp::Read { rt, id, version: Some(v) }
        }
        ("GET", None, q, 1) => BundleOp::Search(Box::new(
            parse_search(rt.as_str(), q.unwrap_or(""), false, now).map_err(|e| prefix(i, e))?,
        )),
        (m @ ("GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE"), ..) => {
            return Err(RecordError::invalid(
                IssueCode::NotSupported,
                format!("Bundle.entry[{i}]: {m} {url} is not an interaction a Bundle entry can ask for here"),
            ));
        }
        (m, ..) => return Err(bad(i, format!("`{m}` is not an HTTP verb FHIR uses"))),
    };
    Ok(BundleEntry { full_url, op })
}

/// Places an entry's issues under `Bundle.entry[i]` (inside `.resource` when they have a path).
pub fn locate(i: usize, issue: Issue) -> Issue {
    let at = match &issue.expression {
        // `Patient.birthDate` of entry 2 is `Bundle.entry[2].resource.birthDate` in FHIRPath.
        Some(x) if !x.starts_with("Bundle.") => match x.split_once('.') {
            Some((_, rest)) => format!("Bundle.entry[{i}].resource.{rest}"),
            None => format!("Bundle.entry[{i}].resource"),
        },
        Some(x) => x.clone(),
        None => format!("Bundle.entry[{i}]"),
    };
    issue.at(&at)
}

fn prefix(i: usize, e: RecordError) -> RecordError {
    match e {
        RecordError::Invalid(issues) => RecordError::Invalid(issues.into_iter().map(|x| locate(i, x)).collect()),
        other => other,
    }
}

/// A PATCH entry's JSON Patch: a Binary of `application/json-patch+json` with base64 `data`.
fn entry_patch(i: usize, e: &Value) -> Result<json_patch::Patch, RecordError> {
    use base64::Engine as _;
    let r = e.get("resource").ok_or_else(|| bad(i, "a PATCH entry needs a Binary `resource`"))?;
    let ok_type = r.get("resourceType").and_then(Value::as_str) == Some("Binary")
        && r.get("contentType").and_then(Value::as_str) == Some("application/json-patch+json");
    if !ok_type {
        return Err(RecordError::invalid(
            IssueCode::NotSupported,
            format!("Bundle.entry[{i}]: a PATCH entry takes a Binary of application/json-patch+json"),
        ));
    }
    let data = r.get("data").and_then(Value::as_str).ok_or_else(|| bad(i, "the Binary has no `data`"))?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data)
        .map_err(|_| bad(i, "the Binary's `data` is not base64"))?;
    parse_patch(&bytes).map_err(|e| prefix(i, e))
}

/// The references in `v` (every `reference` string), visited mutably.
fn for_each_reference(
    v: &mut Value,
    f: &mut dyn FnMut(&mut String) -> Result<(), RecordError>,
) -> Result<(), RecordError> {
    match v {
        Value::Object(o) => {
            for (k, x) in o.iter_mut() {
                match x {
                    Value::String(s) if k == "reference" => f(s)?,
                    _ => for_each_reference(x, f)?,
                }
            }
            Ok(())
        }
        Value::Array(a) => a.iter_mut().try_for_each(|x| for_each_reference(x, f)),
        _ => Ok(()),
    }
}

/// A conditional reference (`Patient?identifier=…`): the type and query.
fn conditional_reference(s: &str) -> Option<(&str, &str)> {
    let (t, q) = s.split_once('?')?;
    (!t.contains('/') && !t.contains(':')).then_some((t, q))
}

impl Records {
    /// Runs a parsed Bundle's entries (all parsed successfully for a transaction). For a
    /// transaction: all or nothing, `Err((entry index, error))` on the first failure. For a batch
    /// use [`Records::batch`].
    pub fn transaction(
        &self,
        ctx: &RequestContext,
        entries: &[BundleEntry],
    ) -> Result<Vec<BundleDone>, (Option<usize>, RecordError)> {
        let mut failed = None;
        let out = self.write(|tx| {
            failed = None;
            self.transaction_in(tx, ctx, entries, &mut failed)
        });
        out.map_err(|e| (failed, e))
    }

    /// Runs each entry on its own (a batch): each result in the request's order.
    pub fn batch(&self, ctx: &RequestContext, entries: &[BundleEntry]) -> Vec<Result<BundleDone, RecordError>> {
        entries
            .iter()
            .map(|e| {
                let one = std::slice::from_ref(e);
                let done = match &e.op {
                    // Reads need no write transaction (nor its fsync).
                    BundleOp::Read { .. } | BundleOp::Search(_) => {
                        self.read_tx(|tx| self.transaction_in(tx, ctx, one, &mut None))
                    }
                    _ => self.write(|tx| self.transaction_in(tx, ctx, one, &mut None)),
                };
                done.and_then(|mut d| d.pop().ok_or_else(|| RecordError::Unprocessable("the entry did nothing".into())))
            })
            .collect()
    }

    fn transaction_in(
        &self,
        tx: &mut dyn Tx,
        ctx: &RequestContext,
        entries: &[BundleEntry],
        failed: &mut Option<usize>,
    ) -> Result<Vec<BundleDone>, RecordError> {
        let mut plan = Plan::new(entries);
        let order = plan.order.clone();
        type Phase = fn(&Records, &mut dyn Tx, &RequestContext, &mut Plan<'_>, usize) -> Result<(), RecordError>;
        // 1. DELETE; 2. resolve the identities of POST and PUT entries before writing any;
        // 3. rewrite references, then write (POST, then PUT / PATCH); 4. GET.
        let phases: [Phase; 4] =
            [Records::delete_entry, Records::resolve_entry, Records::write_entry, Records::read_entry];
        for phase in phases {
            for &i in &order {
                if let Err(e) = phase(self, tx, ctx, &mut plan, i) {
                    *failed = Some(i);
                    return Err(e);
                }
            }
        }
        plan.done.into_iter().enumerate().map(|(i, d)| d.ok_or_else(|| bad(i, "the entry was not processed"))).collect()
    }

    /// Phase 1: a DELETE entry (by id, or the one match of its conditions).
    fn delete_entry(
        &self,
        tx: &mut dyn Tx,
        ctx: &RequestContext,
        plan: &mut Plan<'_>,
        i: usize,
    ) -> Result<(), RecordError> {
        let Some(BundleEntry { op: BundleOp::Delete { rt, target }, .. }) = plan.entries.get(i) else { return Ok(()) };
        let id = match target {
            Target::Id(id) => Some(id.clone()),
            Target::Conditions(c) => match self.matches(tx, ctx, rt, c)?.as_slice() {
                [] => None,
                [one] => Some(one.clone()),
                many => return Err(RecordError::MultipleMatches(many.len())),
            },
        };
        let out = match id {
            Some(id) => {
                plan.touch(i, rt, &id)?;
                self.delete_in(tx, ctx, rt, &id)?
            }
            None => None,
        };
        if let Some(slot) = plan.done.get_mut(i) {
            *slot = Some(BundleDone::Deleted(out));
        }
        Ok(())
    }

    /// Phase 2: the identity a POST or PUT entry will write (a conditional create's match, a new
    /// id, a conditional update's target), recorded under its fullUrl.
    fn resolve_entry(
        &self,
        tx: &mut dyn Tx,
        ctx: &RequestContext,
        plan: &mut Plan<'_>,
        i: usize,
    ) -> Result<(), RecordError> {
        let Some(e) = plan.entries.get(i) else { return Ok(()) };
        let (rt, id, existing) = match &e.op {
            BundleOp::Create { rt, if_none_exist, .. } => {
                let existing = match if_none_exist {
                    Some(c) => self.existing_match(tx, ctx, rt, c)?,
                    None => None,
                };
                let id = match &existing {
                    Some(v) => v.id.clone(),
                    None => ResourceId::generate()?,
                };
                (rt, id, existing)
            }
            BundleOp::Update { rt, target, body, .. } => {
                let id = match target {
                    Target::Id(id) => id.clone(),
                    Target::Conditions(c) => self.conditional_target(tx, ctx, rt, c, body)?,
                };
                (rt, id, None)
            }
            BundleOp::Patch { rt, id, .. } => {
                plan.touch(i, rt, id)?;
                return Ok(());
            }
            _ => return Ok(()),
        };
        if existing.is_none() {
            plan.touch(i, rt, &id)?;
        }
        if let Some(u) = &e.full_url {
            plan.resolved.insert(u.clone(), format!("{rt}/{id}"));
        }
        if let Some(slot) = plan.ids.get_mut(i) {
            *slot = Some((id, existing));
        }
        Ok(())
    }

    /// Phase 3: a POST, PUT or PATCH entry written, its references to other entries' fullUrls
    /// and conditional references rewritten first.
    fn write_entry(
        &self,
        tx: &mut dyn Tx,
        ctx: &RequestContext,
        plan: &mut Plan<'_>,
        i: usize,
    ) -> Result<(), RecordError> {
        let Some(e) = plan.entries.get(i) else { return Ok(()) };
        let (rt, mut body) = match &e.op {
            BundleOp::Create { rt, body, .. } | BundleOp::Update { rt, body, .. } => (rt, body.clone()),
            BundleOp::Patch { rt, id, patch, if_match } => {
                let out = self.patch_in(tx, ctx, rt, id, patch, *if_match)?;
                if let Some(slot) = plan.done.get_mut(i) {
                    *slot = Some(BundleDone::Written(out));
                }
                return Ok(());
            }
            _ => return Ok(()),
        };
        let Some(Some((id, existing))) = plan.ids.get(i).cloned() else { return Ok(()) };
        if let Some(v) = existing {
            // A conditional create that matched: nothing is written.
            if let Some(slot) = plan.done.get_mut(i) {
                *slot = Some(BundleDone::Written(WriteOutcome { created: false, written: false, record: v }));
            }
            return Ok(());
        }
        let mut conditional: Vec<String> = Vec::new();
        for_each_reference(&mut body, &mut |s| {
            if let Some(to) = plan.resolved.get(s.as_str()) {
                *s = to.clone();
            } else if s.starts_with("urn:uuid:") || s.starts_with("urn:oid:") {
                return Err(RecordError::invalid(
                    IssueCode::Invalid,
                    format!("Bundle.entry[{i}]: reference `{s}` names no entry's fullUrl"),
                ));
            } else if conditional_reference(s).is_some() {
                conditional.push(s.clone());
            }
            Ok(())
        })?;
        for c in conditional {
            if plan.resolved.contains_key(&c) {
                continue;
            }
            let Some((t, q)) = conditional_reference(&c) else { continue };
            let t = ResourceType::parse(t)?;
            let to = match self.matches(tx, ctx, &t, &parse_conditions(q)?)?.as_slice() {
                [one] => format!("{t}/{one}"),
                [] => {
                    return Err(RecordError::invalid(
                        IssueCode::NotFound,
                        format!("Bundle.entry[{i}]: conditional reference `{c}` matches nothing"),
                    ));
                }
                many => return Err(RecordError::MultipleMatches(many.len())),
            };
            plan.resolved.insert(c, to);
        }
        for_each_reference(&mut body, &mut |s| {
            if let Some(to) = plan.resolved.get(s.as_str()) {
                *s = to.clone();
            }
            Ok(())
        })?;
        let out = match &e.op {
            BundleOp::Update { if_match, .. } => {
                if let Some(o) = body.as_object_mut() {
                    o.insert("id".into(), Value::String(id.to_string()));
                }
                self.update_in(tx, ctx, rt, &id, body, *if_match, None, Method::Update)?
            }
            _ => self.create_in(tx, ctx, rt, &id, body, None)?,
        };
        if let Some(slot) = plan.done.get_mut(i) {
            *slot = Some(BundleDone::Written(out));
        }
        Ok(())
    }

    /// Phase 4: a GET entry (read, vread or search), after every write.
    fn read_entry(
        &self,
        tx: &mut dyn Tx,
        ctx: &RequestContext,
        plan: &mut Plan<'_>,
        i: usize,
    ) -> Result<(), RecordError> {
        let Some(e) = plan.entries.get(i) else { return Ok(()) };
        let d = match &e.op {
            BundleOp::Read { rt, id, version } => {
                let v = match version {
                    Some(n) => tx.version(rt, id, *n)?,
                    None => tx.current(rt, id)?,
                };
                let v = match v {
                    Some(v) if ctx.may_see(tx, &v)? => v,
                    _ => return Err(RecordError::NotFound(format!("{rt}/{id}"))),
                };
                if v.is_deleted() {
                    return Err(RecordError::Gone(format!("{rt}/{id}")));
                }
                BundleDone::Read(v)
            }
            BundleOp::Search(req) => BundleDone::Found(req.clone(), self.search_in(tx, ctx, req)?),
            _ => return Ok(()),
        };
        if let Some(slot) = plan.done.get_mut(i) {
            *slot = Some(d);
        }
        Ok(())
    }
}

/// A transaction's state between its phases (FHIR's processing order): the entries in that
/// order, what each produced, the identity each POST or PUT resolved to, fullUrl → `Type/id`, and
/// which entry changes which resource (a transaction may change a resource once).
struct Plan<'e> {
    entries: &'e [BundleEntry],
    order: Vec<usize>,
    done: Vec<Option<BundleDone>>,
    resolved: HashMap<String, String>,
    ids: Vec<Option<(ResourceId, Option<VersionRecord>)>>,
    touched: HashMap<(String, String), usize>,
}

impl<'e> Plan<'e> {
    fn new(entries: &'e [BundleEntry]) -> Plan<'e> {
        let mut order: Vec<usize> = (0..entries.len()).collect();
        order.sort_by_key(|&i| entries.get(i).map_or(9, |e| e.op.rank()));
        Plan {
            entries,
            order,
            done: vec![None; entries.len()],
            resolved: HashMap::new(),
            ids: vec![None; entries.len()],
            touched: HashMap::new(),
        }
    }

    /// Entry `i` changes `rt/id`; refused if another entry already does.
    fn touch(&mut self, i: usize, rt: &ResourceType, id: &ResourceId) -> Result<(), RecordError> {
        match self.touched.insert((rt.to_string(), id.to_string()), i) {
            Some(j) if j != i => Err(RecordError::invalid(
                IssueCode::Invalid,
                format!(
                    "Bundle.entry[{j}] and Bundle.entry[{i}] both change {rt}/{id}; a transaction may change a resource once"
                ),
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn entries_parse_or_say_why() {
        let b = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"fullUrl": "urn:uuid:1", "resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient"}},
            {"request": {"method": "GET", "url": "Patient?name=x"}},
            {"request": {"method": "DELETE", "url": "https://h/fhir/Patient/abc"}},
            {"resource": {"resourceType": "Patient", "id": "zz"}, "request": {"method": "PUT", "url": "Patient/abc"}},
            {"request": {"method": "FETCH", "url": "Patient"}},
            {"request": {"method": "GET", "url": "https://elsewhere/fhir/Patient/1"}},
            {"request": {"method": "PUT", "url": "Patient?identifier=a|b"}, "resource": {"resourceType": "Observation"}},
        ]});
        let p = parse_bundle(&b, "https://h/fhir", 0).unwrap();
        assert_eq!(p.kind, BundleKind::Transaction);
        let e = &p.entries;
        assert!(matches!(e[0].as_ref().unwrap().op, BundleOp::Create { .. }));
        assert_eq!(e[0].as_ref().unwrap().full_url.as_deref(), Some("urn:uuid:1"));
        assert!(matches!(e[1].as_ref().unwrap().op, BundleOp::Search(_)));
        assert!(matches!(e[2].as_ref().unwrap().op, BundleOp::Delete { target: Target::Id(_), .. }));
        assert!(e[3].as_ref().unwrap_err().to_string().contains("must be `abc`"));
        assert!(e[4].as_ref().unwrap_err().to_string().contains("FETCH"));
        assert!(e[5].as_ref().unwrap_err().to_string().contains("not on this server"));
        assert!(e[6].as_ref().unwrap_err().to_string().contains("not a Patient"));
    }

    #[test]
    fn bundles_that_are_not_batches_are_refused() {
        for b in [
            json!({"resourceType": "Patient"}),
            json!({"resourceType": "Bundle", "type": "searchset"}),
            json!({"resourceType": "Bundle"}),
            json!({"resourceType": "Bundle", "type": "batch", "entry": "x"}),
        ] {
            assert!(parse_bundle(&b, "", 0).is_err(), "{b}");
        }
    }

    #[test]
    fn references_are_found_everywhere() {
        let mut v = json!({"subject": {"reference": "urn:uuid:a"}, "x": [{"y": {"reference": "Patient?identifier=1"}}], "reference": 3});
        let mut seen = Vec::new();
        for_each_reference(&mut v, &mut |s| {
            seen.push(s.clone());
            *s = "Patient/1".into();
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, ["urn:uuid:a", "Patient?identifier=1"]);
        assert_eq!(v["subject"]["reference"], "Patient/1");
        assert_eq!(conditional_reference("Patient?identifier=1"), Some(("Patient", "identifier=1")));
        assert_eq!(conditional_reference("http://x/Patient?a=1"), None);
        assert_eq!(conditional_reference("Patient/1"), None);
    }
}
