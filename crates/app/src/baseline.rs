//! The configuration baseline (C2, issue #25): the approved state of every kind of security
//! configuration in the registry and of the files under the data directory that matter, as
//! SHA-256 hashes plus the approved values, signed and anchored in the audit trail.
//!
//! A baseline is a signed note (C2SP signed-note, Ed25519, the node's checkpoint key — the same
//! key `mamori audit verify` checks checkpoints with) whose body names the approver, the time and
//! one line per item. It is stored through the one configuration path as the `baseline` kind
//! (key `active`), so approving one is versioned, attributed and audited; the audit entry carries
//! the hash of the signed note, so replacing a baseline behind the server's back means rewriting
//! the trail. [`diff`] compares the state now with the baseline: every item changed, added or
//! removed, and a baseline whose signature does not verify.
//!
//! What is in it: every current entry of every non-workflow kind (policies, class rules, accounts
//! and their roles, applications, signing keys, the settings read from `mamori.toml`), and the
//! files `mamori.toml`, `keys/master.key` and `keys/signing-ed25519.seed` (secrets by hash only).

use std::collections::BTreeMap;

use mamori_audit::note::NoteVerifier;
use sha2::{Digest, Sha256};

use crate::config::Response;
use crate::ctx::{change_config, failed};
use crate::registry::ConfigKind;
use crate::{AdminAct, AppError, Ctx, Node};

/// The files of the data directory a baseline covers, by hash.
pub const FILES: [&str; 3] = ["mamori.toml", "keys/master.key", "keys/signing-ed25519.seed"];

/// The first line of a baseline note's body.
const HEADER: &str = "mamori configuration baseline";

/// The state of one moment: item name → SHA-256 (hex). Items are `kind/key` for configuration
/// entries and `file/path` for files (`absent` for a file that is not there).
pub type State = BTreeMap<String, String>;

/// The state now, with the current value of every configuration item.
pub fn state(node: &Node) -> Result<(State, BTreeMap<String, serde_json::Value>), AppError> {
    let mut hashes = State::new();
    let mut values = BTreeMap::new();
    for kind in ConfigKind::ALL {
        if kind.is_workflow() || kind == ConfigKind::Baseline {
            continue;
        }
        for e in node.store.config_current(kind.name()).map_err(AppError::from)? {
            let Some(v) = e.value else { continue };
            let item = format!("{}/{}", kind.name(), e.key);
            hashes.insert(item.clone(), hex::encode(Sha256::digest(v.to_string().as_bytes())));
            values.insert(item, v);
        }
    }
    for f in FILES {
        let hash = match std::fs::read(node.dir.join(f)) {
            Ok(bytes) => hex::encode(Sha256::digest(&bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => "absent".to_string(),
            Err(e) => return Err(AppError::Failed(format!("cannot read `{f}` for the baseline: {e}"))),
        };
        hashes.insert(format!("file/{f}"), hash);
    }
    Ok((hashes, values))
}

/// An approved baseline as stored.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Baseline {
    /// The signed note: header, `approved-by`, `approved-at` (µs), `reason`, then one
    /// `<item> <sha256>` line per item.
    pub note: String,
    /// The approved values of the configuration items (files are kept by hash only).
    pub values: BTreeMap<String, serde_json::Value>,
}

/// What a verified baseline says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approved {
    /// The configuration version it is stored as.
    pub version: u64,
    /// Who approved it.
    pub by: String,
    /// When (µs since the epoch).
    pub at_micros: i64,
    /// Why.
    pub reason: String,
    /// The approved hashes.
    pub state: State,
    /// SHA-256 (hex) of the signed note: the value anchored in the audit trail.
    pub note_sha256: String,
}

/// One difference between the state now and the baseline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Drift {
    /// The item's value differs from the approved one.
    Changed(String),
    /// The item is not in the baseline.
    Added(String),
    /// The approved item is gone.
    Removed(String),
    /// The stored baseline does not verify against the node's key, or cannot be read.
    BadBaseline(String),
}

impl std::fmt::Display for Drift {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Drift::Changed(i) => write!(f, "changed: {i}"),
            Drift::Added(i) => write!(f, "added: {i}"),
            Drift::Removed(i) => write!(f, "removed: {i}"),
            Drift::BadBaseline(why) => write!(f, "the baseline itself does not verify: {why}"),
        }
    }
}

fn body(by: &str, at: i64, reason: &str, state: &State) -> String {
    let mut b = format!("{HEADER}\napproved-by {by}\napproved-at {at}\nreason {}\n", reason.replace('\n', " "));
    for (item, hash) in state {
        b.push_str(&format!("{item} {hash}\n"));
    }
    b
}

/// Reads a signed baseline note back (after its signature was checked).
fn parse(text: &str) -> Result<(String, i64, String, State), String> {
    let mut lines = text.lines();
    if lines.next() != Some(HEADER) {
        return Err("not a baseline note".into());
    }
    let mut field = |name: &str| {
        lines
            .next()
            .and_then(|l| l.strip_prefix(name))
            .and_then(|l| l.strip_prefix(' '))
            .map(str::to_string)
            .ok_or_else(|| format!("the baseline has no `{name}` line"))
    };
    let by = field("approved-by")?;
    let at = field("approved-at")?.parse::<i64>().map_err(|e| format!("approved-at: {e}"))?;
    let reason = field("reason")?;
    let mut state = State::new();
    for l in lines {
        let (item, hash) = l.rsplit_once(' ').ok_or_else(|| format!("a baseline line without a hash: {l}"))?;
        state.insert(item.to_string(), hash.to_string());
    }
    Ok((by, at, reason, state))
}

/// Approves the state now as the baseline; returns it. Approving is itself a high-risk change
/// (`approve-baseline`, then a second person's `approve-change`: [`AppError::Pending`] until
/// then — the baseline approved is the state as it was requested).
pub fn approve(ctx: &Ctx, node: &Node, reason: &str) -> Result<Approved, AppError> {
    ctx.authorize(node, AdminAct::ApproveBaseline)?;
    if reason.trim().is_empty() {
        return Err(AppError::Invalid("approving a baseline must say why".into()));
    }
    let (state, values) = state(node)?;
    let (by, at) = (ctx.by(), ctx.now().0);
    let note = node.signer.sign(&body(&by, at, reason.trim(), &state)).map_err(failed)?;
    let note_sha256 = hex::encode(Sha256::digest(note.as_bytes()));
    let value = serde_json::to_value(Baseline { note, values }).map_err(failed)?;
    let prev = node.store.config_get(ConfigKind::Baseline.name(), "active").map_err(AppError::from)?.map(|e| e.version);
    let version = change_config(
        ctx,
        node,
        ConfigKind::Baseline,
        "active",
        Some(value),
        &format!("baseline approved (note sha256 {note_sha256}): {}", reason.trim()),
        prev,
    )?;
    Ok(Approved { version, by, at_micros: at, reason: reason.trim().to_string(), state, note_sha256 })
}

/// The approved baseline, its signature checked (`None`: none approved yet).
pub fn current(ctx: &Ctx, node: &Node) -> Result<Option<Approved>, AppError> {
    ctx.authorize_any(node, &[AdminAct::ReadAudit, AdminAct::ApproveBaseline])?;
    approved(node)
}

/// The approved baseline, verified, whoever asks (for the checks the path itself makes).
fn approved(node: &Node) -> Result<Option<Approved>, AppError> {
    let Some(e) = node.store.config_get(ConfigKind::Baseline.name(), "active").map_err(AppError::from)? else {
        return Ok(None);
    };
    let b: Baseline = serde_json::from_value(e.value.unwrap_or_default())
        .map_err(|err| AppError::Failed(format!("the stored baseline cannot be read: {err}")))?;
    let verifier = NoteVerifier::parse(&node.signer.verifier_key()).map_err(failed)?;
    let text =
        verifier.verify(&b.note).map_err(|err| AppError::Failed(format!("the baseline does not verify: {err}")))?;
    let (by, at, reason, state) =
        parse(text).map_err(|err| AppError::Failed(format!("the baseline does not verify: {err}")))?;
    Ok(Some(Approved {
        version: e.version,
        by,
        at_micros: at,
        reason,
        state,
        note_sha256: hex::encode(Sha256::digest(b.note.as_bytes())),
    }))
}

/// Every difference between the state now and the approved baseline, in item order; a baseline
/// that does not verify is itself the difference. `None` when no baseline was approved.
pub fn diff(ctx: &Ctx, node: &Node) -> Result<Option<Vec<Drift>>, AppError> {
    let approved = match current(ctx, node) {
        Ok(Some(a)) => a,
        Ok(None) => return Ok(None),
        Err(AppError::Failed(why)) => return Ok(Some(vec![Drift::BadBaseline(why)])),
        Err(e) => return Err(e),
    };
    let (now, _) = state(node)?;
    let mut out = Vec::new();
    for (item, hash) in &approved.state {
        match now.get(item) {
            Some(h) if h == hash => {}
            Some(_) => out.push(Drift::Changed(item.clone())),
            None => out.push(Drift::Removed(item.clone())),
        }
    }
    for item in now.keys().filter(|i| !approved.state.contains_key(*i)) {
        out.push(Drift::Added(item.clone()));
    }
    Ok(Some(out))
}

/// The watcher's name in the audit trail.
const WATCHER: &str = "mamori-integrity";

/// How many times a `revert` is tried before the item is blocked instead.
const REVERT_TRIES: u32 = 5;

/// One change made around the configuration path (an entry without a valid seal, a sealed
/// version deleted, a guard trigger dropped or disabled) and what was done about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// `kind/key`, or `schema/<trigger>`.
    pub item: String,
    /// `unsealed`, `removed` or `missing`.
    pub how: String,
    /// The configured response.
    pub response: Response,
    /// What happened: `alerted`, `reverted`, `blocked`, or why a revert failed.
    pub outcome: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.item, self.how, self.outcome)
    }
}

/// What one check found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Changes made around the configuration path, with the response taken.
    pub tampered: Vec<Finding>,
    /// Differences from the approved baseline (empty when none was approved).
    pub drift: Vec<Drift>,
}

impl Report {
    /// Whether nothing was found.
    pub fn is_empty(&self) -> bool {
        self.tampered.is_empty() && self.drift.is_empty()
    }
}

/// The watcher's memory between checks: what was reported last (so a finding is raised once)
/// and the revert attempts so far.
#[derive(Debug, Default)]
pub struct Watch {
    drift: Option<Vec<String>>,
    tampered: Option<Vec<String>>,
    attempts: BTreeMap<String, (u32, std::time::Instant)>,
}

/// What a block on `item` stops, and the message every refused request carries.
fn block_of(item: &str) -> (Option<String>, String) {
    let kind = item.split_once('/').map_or(item, |(k, _)| k);
    let fix = format!(
        "someone with the right must revert or accept it: mamori baseline revert|accept {item} --reason … \
         (構成の改ざんを検知したため停止中 — configuration integrity block; docs/CONFIG-INTEGRITY.md)"
    );
    match kind {
        "account" | "client" => (
            Some(item.to_string()),
            format!("`{item}` was changed around the configuration path and is refused until {fix}"),
        ),
        _ => (None, format!("clinical access is stopped: `{item}` was changed around the configuration path; {fix}")),
    }
}

/// Writes the served (newest sealed) value of a tampered entry back through the configuration
/// path as a new version, past the tampered one.
fn put_back(ctx: &Ctx, node: &Node, kind: ConfigKind, key: &str, reason: &str) -> Result<u64, AppError> {
    let served = node.store.config_get(kind.name(), key).map_err(AppError::from)?.and_then(|e| e.value);
    let newest = node.store.config_history(kind.name(), key).map_err(AppError::from)?.last().map(|e| e.version);
    // Back to a value the path wrote (and, if high-risk, two people approved): not a new change
    // for the two-person rule.
    let mut ctx = ctx.clone();
    ctx.two_person = Some(format!("revert of {kind}/{key} to its last sealed value"));
    change_config(&ctx, node, kind, key, served, reason, newest)
}

fn parse_item(item: &str) -> Result<(ConfigKind, &str), AppError> {
    let (kind, key) = item
        .split_once('/')
        .ok_or_else(|| AppError::Invalid(format!("`{item}` is not KIND/KEY (e.g. policies/active)")))?;
    let kind = ConfigKind::parse(kind)
        .filter(|k| !k.is_workflow())
        .ok_or_else(|| AppError::Invalid(format!("`{kind}` is not a configuration kind")))?;
    Ok((kind, key))
}

/// What [`revert`] and [`accept`] check first: the right (`approve-baseline`), a reason, and that
/// the item was indeed changed around the configuration path.
fn recovery<'a>(
    ctx: &Ctx,
    node: &Node,
    item: &'a str,
    reason: &str,
    no_reason: &str,
) -> Result<(ConfigKind, &'a str), AppError> {
    ctx.authorize(node, AdminAct::ApproveBaseline)?;
    if reason.trim().is_empty() {
        return Err(AppError::Invalid(no_reason.into()));
    }
    let (kind, key) = parse_item(item)?;
    if !node.store.config_tampered().map_err(AppError::from)?.iter().any(|t| t.kind == kind.name() && t.key == key) {
        return Err(AppError::NotFound(format!("`{item}` was not changed around the configuration path")));
    }
    Ok((kind, key))
}

/// Ends a change made around the configuration path by writing the last value the path wrote
/// (a value added around it is removed) back as a new version — attributed, with a reason,
/// audited. Lifts the block on the item at the next check. (`approve-baseline`.)
pub fn revert(ctx: &Ctx, node: &Node, item: &str, reason: &str) -> Result<u64, AppError> {
    let (kind, key) = recovery(ctx, node, item, reason, "reverting must say why")?;
    put_back(ctx, node, kind, key, &format!("reverted a change made around the configuration path: {}", reason.trim()))
}

/// Accepts a change made around the configuration path as intended: its value (checked like any
/// change) is written through the path as a new, sealed version — attributed, with a reason,
/// audited. Lifts the block at the next check. (`approve-baseline`; for a high-risk entry, held
/// for a second person like any change of it.)
pub fn accept(ctx: &Ctx, node: &Node, item: &str, reason: &str) -> Result<u64, AppError> {
    let (kind, key) = recovery(ctx, node, item, reason, "accepting must say why")?;
    let history = node.store.config_history(kind.name(), key).map_err(AppError::from)?;
    let newest = history.last();
    change_config(
        ctx,
        node,
        kind,
        key,
        newest.and_then(|e| e.value.clone()),
        &format!("accepted a change made around the configuration path: {}", reason.trim()),
        newest.map(|e| e.version),
    )
}

/// Every change made around the configuration path now, without responding (for `diff`).
pub fn tampered(node: &Node) -> Result<Vec<(String, String)>, AppError> {
    let mut out: Vec<(String, String)> = node
        .store
        .config_tampered()
        .map_err(AppError::from)?
        .into_iter()
        .map(|t| (format!("{}/{}", t.kind, t.key), format!("{} v{}", t.how, t.version)))
        .collect();
    for g in node.store.guards_missing().map_err(AppError::from)? {
        out.push((format!("schema/{g}"), "missing".into()));
    }
    Ok(out)
}

/// Checks the configuration as the node itself (at start, then every `[integrity]
/// rehash_secs`): every change made around the configuration path gets its configured response
/// (`[integrity.response]`: alert, revert, block) and an `alert-config-tampered` entry; every
/// difference from the approved baseline an `alert-config-drift` entry. Each is raised once,
/// and again when it changes or after it was resolved and comes back; blocks are lifted as soon
/// as their cause is gone.
pub fn check(node: &Node, watch: &mut Watch) -> Result<Report, AppError> {
    let ctx = Ctx::operator(node, WATCHER);
    // The certificate served, as it is on disk now (a swap or a renewal is a recorded change,
    // hence a difference from the baseline below).
    if let Some(path) = &node.tls_cert {
        crate::node::record_tls(node, path)?;
    }
    let response = |kind: &str| node.config.responses.get(kind).copied().unwrap_or(Response::Block);
    let mut blocks = mamori_access::Blocks::default();
    let mut findings = Vec::new();
    let mut live: Vec<String> = Vec::new();
    for t in node.store.config_tampered().map_err(AppError::from)? {
        let item = format!("{}/{}", t.kind, t.key);
        live.push(item.clone());
        let r = response(&t.kind);
        let mut block = r == Response::Block;
        let outcome = match r {
            Response::Alert => "alerted".to_string(),
            Response::Block => "blocked".to_string(),
            Response::Revert => {
                let (tries, next) = watch.attempts.get(&item).copied().unwrap_or((0, std::time::Instant::now()));
                if tries >= REVERT_TRIES {
                    block = true;
                    format!("revert failed {REVERT_TRIES} times; blocked")
                } else if std::time::Instant::now() < next {
                    format!("revert failed (try {tries} of {REVERT_TRIES}); will retry")
                } else {
                    let attempt = ConfigKind::parse(&t.kind)
                        .ok_or_else(|| AppError::Failed(format!("unknown kind `{}`", t.kind)))
                        .and_then(|kind| {
                            put_back(
                                &ctx,
                                node,
                                kind,
                                &t.key,
                                &format!(
                                    "reverted automatically: v{} was {} around the configuration path",
                                    t.version, t.how
                                ),
                            )
                        });
                    match attempt {
                        Ok(v) => {
                            watch.attempts.remove(&item);
                            format!("reverted (v{v})")
                        }
                        Err(e) => {
                            let tries = tries + 1;
                            let wait = std::time::Duration::from_secs(1 << tries.min(6));
                            watch.attempts.insert(item.clone(), (tries, std::time::Instant::now() + wait));
                            block = tries >= REVERT_TRIES;
                            format!("revert failed (try {tries} of {REVERT_TRIES}): {e}")
                        }
                    }
                }
            }
        };
        if block {
            let (subject, why) = block_of(&item);
            match subject {
                Some(s) => {
                    blocks.subjects.insert(s, why);
                }
                None => {
                    blocks.clinical.get_or_insert(why);
                }
            }
        }
        findings.push(Finding { item, how: t.how.to_string(), response: r, outcome });
    }
    let missing = node.store.guards_missing().map_err(AppError::from)?;
    if !missing.is_empty() {
        let r = response("schema");
        let repaired = r == Response::Revert && node.store.repair_guards().is_ok();
        let still = if repaired { node.store.guards_missing().map_err(AppError::from)? } else { missing.clone() };
        for g in &missing {
            let item = format!("schema/{g}");
            live.push(item.clone());
            let fixed = !still.contains(g);
            let outcome = match (r, fixed) {
                (_, true) => "reverted (trigger put back)".to_string(),
                (Response::Revert, false) | (Response::Block, _) => {
                    blocks.clinical.get_or_insert(block_of(&item).1);
                    if r == Response::Revert {
                        "could not be put back; blocked".to_string()
                    } else {
                        "blocked".to_string()
                    }
                }
                (Response::Alert, false) => "alerted".to_string(),
            };
            findings.push(Finding { item, how: "missing".into(), response: r, outcome });
        }
    }
    watch.attempts.retain(|item, _| live.contains(item));
    if *node.enforcer.blocks() != blocks {
        if blocks.is_empty() {
            tracing::info!("configuration integrity: every block lifted");
        } else {
            tracing::error!(
                clinical = blocks.clinical.is_some(),
                subjects = blocks.subjects.len(),
                "configuration integrity: access blocked"
            );
        }
        node.enforcer.set_blocks(blocks);
    }
    let names: Vec<String> = findings.iter().map(ToString::to_string).collect();
    if !findings.is_empty() && watch.tampered.as_ref() != Some(&names) {
        tracing::error!(changes = findings.len(), first = %names.first().map_or("", String::as_str), "configuration changed around the configuration path");
        raise(
            node,
            &ctx,
            "alert-config-tampered",
            format!("{} change(s) made around the configuration path: {}", findings.len(), shown(&names)),
            findings.iter().map(|f| format!("config/{}", f.item)).collect(),
        )?;
    }
    watch.tampered = Some(names);

    let drift = diff(&ctx, node)?.unwrap_or_default();
    let names: Vec<String> = drift.iter().map(ToString::to_string).collect();
    if watch.drift.as_ref() != Some(&names) {
        if !drift.is_empty() {
            tracing::warn!(differences = drift.len(), first = %names.first().map_or("", String::as_str), "configuration differs from the approved baseline");
            raise(
                node,
                &ctx,
                "alert-config-drift",
                format!("{} difference(s) from the approved baseline: {}", drift.len(), shown(&names)),
                drift
                    .iter()
                    .map(|d| match d {
                        Drift::Changed(i) | Drift::Added(i) | Drift::Removed(i) => format!("config/{i}"),
                        Drift::BadBaseline(_) => "config/baseline/active".to_string(),
                    })
                    .collect(),
            )?;
        } else if watch.drift.as_ref().is_some_and(|l| !l.is_empty()) {
            tracing::info!("configuration matches the approved baseline again");
        }
        watch.drift = Some(names);
    }
    Ok(Report { tampered: findings, drift })
}

/// The first 20 names, joined.
fn shown(names: &[String]) -> String {
    let first: Vec<&str> = names.iter().take(20).map(String::as_str).collect();
    format!("{}{}", first.join("; "), if names.len() > first.len() { "; …" } else { "" })
}

/// Appends an alert entry (counted in the metrics, listed among the dashboard's alerts).
fn raise(node: &Node, ctx: &Ctx, action: &str, detail: String, mut resources: Vec<String>) -> Result<(), AppError> {
    let mut alert =
        mamori_audit::AuditRecord::new(action, ctx.audit_actor(), mamori_audit::Outcome::Failure, "HOPERAT");
    alert.detail = Some(detail);
    resources.truncate(50);
    alert.resources = resources;
    node.store.append(vec![alert]).map_err(|e| AppError::Failed(format!("audit: {e}")))?;
    Ok(())
}

/// The settings (`mamori.toml` as recorded) of the approved baseline, if one is approved and its
/// signature and that value's hash verify — for holding back high-risk settings the baseline does
/// not cover (`crate::node`). `None` otherwise (the periodic check reports a bad baseline).
pub(crate) fn approved_settings(
    store: &dyn crate::backend::Backend,
    signer: &mamori_audit::note::NoteSigner,
) -> Option<serde_json::Value> {
    let e = store.config_get(ConfigKind::Baseline.name(), "active").ok()??;
    let b: Baseline = serde_json::from_value(e.value?).ok()?;
    let verifier = NoteVerifier::parse(&signer.verifier_key()).ok()?;
    let (_, _, _, state) = parse(verifier.verify(&b.note).ok()?).ok()?;
    let item = format!("{}/{}", crate::node::SETTINGS.0, crate::node::SETTINGS.1);
    let v = b.values.get(&item)?;
    (state.get(&item)? == &hex::encode(Sha256::digest(v.to_string().as_bytes()))).then(|| v.clone())
}

/// Layer 1 of detection: a change just written through the configuration path, checked against
/// the approved baseline at once. A value that differs from the approved one (or an entry the
/// baseline does not have, or one it has that was removed) raises `alert-config-drift` naming the
/// entry and who changed it; the periodic check then reports the whole set as usual. Nothing is
/// raised without a baseline, for workflow state, or when the baseline cannot be read (the
/// periodic check reports that).
pub(crate) fn check_change(ctx: &Ctx, node: &Node, kind: ConfigKind, key: &str, value: Option<&serde_json::Value>) {
    if kind.is_workflow() || kind == ConfigKind::Baseline {
        return;
    }
    let Ok(Some(a)) = approved(node) else { return };
    let item = format!("{}/{key}", kind.name());
    let now = value.map(|v| hex::encode(Sha256::digest(v.to_string().as_bytes())));
    let how = match (a.state.get(&item), now) {
        (Some(was), Some(now)) if *was == now => return,
        (None, None) => return,
        (Some(_), Some(_)) => "changed",
        (None, Some(_)) => "added",
        (Some(_), None) => "removed",
    };
    let detail = format!(
        "{how}: {item} — through the configuration path by {}; differs from the baseline approved by {} (v{})",
        ctx.by(),
        a.by,
        a.version
    );
    if let Err(e) = raise(node, ctx, "alert-config-drift", detail, vec![format!("config/{item}")]) {
        tracing::warn!(error = %e, "the drift of a change could not be recorded");
    }
}

/// Configuration integrity at a glance, for the console: the approved baseline, the differences
/// from it, the changes made around the configuration path, what is blocked now, and the
/// external baselines with their latest check.
#[derive(Debug, Clone)]
pub struct Overview {
    /// The approved baseline (`None`: none yet).
    pub approved: Option<Approved>,
    /// The differences from it (empty when none was approved).
    pub drift: Vec<Drift>,
    /// Changes made around the path: item, how.
    pub tampered: Vec<(String, String)>,
    /// What is blocked now (on this node): `clinical` or a subject, and why.
    pub blocks: Vec<(String, String)>,
    /// External baselines: the entry, its version, and its latest check.
    pub external: Vec<(crate::external::External, u64, Option<crate::external::Recorded>)>,
    /// Whether the caller may revert, accept and approve (`approve-baseline`).
    pub may_decide: bool,
}

/// [`Overview`] (`read-audit` or `approve-baseline`).
pub fn overview(ctx: &Ctx, node: &Node) -> Result<Overview, AppError> {
    ctx.authorize_any(node, &[AdminAct::ReadAudit, AdminAct::ApproveBaseline])?;
    let approved = match current(ctx, node) {
        Ok(a) => a,
        Err(AppError::Failed(_)) => None,
        Err(e) => return Err(e),
    };
    let drift = diff(ctx, node)?.unwrap_or_default();
    let b = node.enforcer.blocks();
    let mut blocks: Vec<(String, String)> = b.clinical.iter().map(|w| ("clinical".to_string(), w.clone())).collect();
    blocks.extend(b.subjects.iter().map(|(k, v)| (k.clone(), v.clone())));
    let mut external = Vec::new();
    for (x, version, _, _) in crate::external::list(ctx, node)? {
        let last = crate::external::checks(ctx, node, &x.name)?.into_iter().next();
        external.push((x, version, last));
    }
    Ok(Overview {
        approved,
        drift,
        tampered: tampered(node)?,
        blocks,
        external,
        may_decide: ctx.may(node, AdminAct::ApproveBaseline),
    })
}

/// Checks every `[integrity] rehash_secs` on a thread of its own. A check that cannot run (the
/// store unreachable, a file unreadable) is logged every time and, once it has failed for a
/// minute, raised as `alert-integrity-watcher`: a watcher that stops working is itself an alert.
/// `watch` is what the start check remembered, so the same finding is not raised twice.
pub fn spawn_watcher(node: std::sync::Arc<Node>, watch: Watch) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let every = std::time::Duration::from_secs(node.config.rehash_secs);
        let mut watch = watch;
        std::thread::sleep(every);
        let mut failing_since: Option<std::time::Instant> = None;
        let mut raised = false;
        loop {
            // Change requests past their time are closed as expired (audited) on the same beat.
            if let Err(e) = crate::approvals::expire_due(&node) {
                tracing::warn!(error = %e, "change requests could not be expired");
            }
            match check(&node, &mut watch) {
                Ok(_) => {
                    failing_since = None;
                    raised = false;
                }
                Err(e) => {
                    tracing::error!(error = %e, "the configuration integrity check could not run");
                    let since = *failing_since.get_or_insert_with(std::time::Instant::now);
                    if !raised && since.elapsed() >= std::time::Duration::from_secs(60) {
                        let ctx = Ctx::operator(&node, WATCHER);
                        raised = raise(
                            &node,
                            &ctx,
                            "alert-integrity-watcher",
                            format!("the configuration integrity check has failed for a minute: {e}"),
                            Vec::new(),
                        )
                        .is_ok();
                    }
                }
            }
            std::thread::sleep(every);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_reads_back() {
        let mut s = State::new();
        s.insert("policies/active".into(), "ab".repeat(32));
        s.insert("file/keys/master.key".into(), "absent".into());
        let b = body("user:anzen", 42, "first\nbaseline", &s);
        let (by, at, reason, state) = parse(&b).unwrap();
        assert_eq!((by.as_str(), at, reason.as_str()), ("user:anzen", 42, "first baseline"));
        assert_eq!(state, s);
        assert!(parse("something else\n").is_err());
        assert!(parse(&format!("{HEADER}\napproved-by x\n")).is_err());
    }
}
