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
/// (`approve-baseline`; under the two-person rule once that lands).
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

/// Compares the state with the baseline as the node itself (at start, then every
/// `[integrity] rehash_secs`), and raises `alert-config-drift` — an audit entry (counted in the
/// metrics, listed among the dashboard's alerts) and a log line — when the differences are not
/// those reported last time (`last`): a drift is reported once, and again when it changes or
/// after it was resolved. Nothing is reported before a baseline is approved.
pub fn check(node: &Node, last: &mut Option<Vec<String>>) -> Result<Vec<Drift>, AppError> {
    let ctx = Ctx::operator(node, WATCHER);
    let drift = diff(&ctx, node)?.unwrap_or_default();
    let names: Vec<String> = drift.iter().map(ToString::to_string).collect();
    if last.as_ref() == Some(&names) {
        return Ok(drift);
    }
    if !drift.is_empty() {
        tracing::warn!(differences = drift.len(), first = %names.first().map_or("", String::as_str), "configuration differs from the approved baseline");
        let mut alert = mamori_audit::AuditRecord::new(
            "alert-config-drift",
            ctx.audit_actor(),
            mamori_audit::Outcome::Failure,
            "HOPERAT",
        );
        let shown: Vec<&str> = names.iter().take(20).map(String::as_str).collect();
        alert.detail = Some(format!(
            "{} difference(s) from the approved baseline: {}{}",
            drift.len(),
            shown.join("; "),
            if names.len() > shown.len() { "; …" } else { "" }
        ));
        alert.resources = drift
            .iter()
            .map(|d| match d {
                Drift::Changed(i) | Drift::Added(i) | Drift::Removed(i) => format!("config/{i}"),
                Drift::BadBaseline(_) => "config/baseline/active".to_string(),
            })
            .take(50)
            .collect();
        node.store.append(vec![alert]).map_err(|e| AppError::Failed(format!("audit: {e}")))?;
    } else if last.as_ref().is_some_and(|l| !l.is_empty()) {
        tracing::info!("configuration matches the approved baseline again");
    }
    *last = Some(names);
    Ok(drift)
}

/// Re-hashes the configuration every `[integrity] rehash_secs` on a thread of its own. A check
/// that cannot run (the store unreachable, a file unreadable) is logged every time and, once it
/// has failed for a minute, raised as `alert-integrity-watcher`: a watcher that stops working
/// is itself an alert.
/// `last` is what the start check reported, so the same drift is not raised twice.
pub fn spawn_watcher(node: std::sync::Arc<Node>, last: Option<Vec<String>>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let every = std::time::Duration::from_secs(node.config.rehash_secs);
        let mut last = last;
        std::thread::sleep(every);
        let mut failing_since: Option<std::time::Instant> = None;
        let mut raised = false;
        loop {
            match check(&node, &mut last) {
                Ok(_) => {
                    failing_since = None;
                    raised = false;
                }
                Err(e) => {
                    tracing::error!(error = %e, "the configuration integrity check could not run");
                    let since = *failing_since.get_or_insert_with(std::time::Instant::now);
                    if !raised && since.elapsed() >= std::time::Duration::from_secs(60) {
                        let ctx = Ctx::operator(&node, WATCHER);
                        let mut alert = mamori_audit::AuditRecord::new(
                            "alert-integrity-watcher",
                            ctx.audit_actor(),
                            mamori_audit::Outcome::Failure,
                            "HOPERAT",
                        );
                        alert.detail = Some(format!("the configuration integrity check has failed for a minute: {e}"));
                        raised = node.store.append(vec![alert]).is_ok();
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
