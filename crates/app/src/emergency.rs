//! Emergency read-only mode (非常時の参照専用モード; G5, R3; issue #27): during an incident —
//! ransomware suspected, a restore under way, a copy serving from another machine — every read
//! goes on (all versions of all records, to the same access rules, audited), every record write
//! is refused with a clear OperationOutcome (503), and nothing stored changes.
//!
//! Switched on or off by an administrator (`emergency-mode`) through the one configuration path
//! (kind `emergency-mode`, key `read-only`: versioned, sealed, audited; every node applies it
//! within a second), with an `alert-emergency-mode` entry for the security manager's dashboard
//! and the syslog collector. `mamori serve --read-only` pins one node read-only whatever is
//! stored (a restored copy serving charts while the incident is handled).

use serde::{Deserialize, Serialize};

use crate::ctx::change_config;
use crate::registry::ConfigKind;
use crate::{AdminAct, AppError, Ctx, Node};

const KIND: ConfigKind = ConfigKind::EmergencyMode;
const KEY: &str = "read-only";

/// The stored mode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mode {
    /// Whether record writes are refused.
    pub read_only: bool,
    /// Why it was switched (required).
    pub reason: String,
}

/// The mode stored now (off when never switched), and the version it is at.
pub fn stored(node: &Node) -> Result<(Mode, Option<u64>), AppError> {
    match node.store.config_get(KIND.name(), KEY)? {
        Some(e) => {
            let m = e
                .value
                .and_then(|v| serde_json::from_value::<Mode>(v).ok())
                .unwrap_or(Mode { read_only: false, reason: String::new() });
            Ok((m, Some(e.version)))
        }
        None => Ok((Mode { read_only: false, reason: String::new() }, None)),
    }
}

/// Applies the stored mode (or the node's pin) to this node's record service; returns whether
/// the node is read-only now.
pub fn apply(node: &Node) -> Result<bool, AppError> {
    let (m, _) = stored(node)?;
    let on = m.read_only || node.read_only_pinned;
    node.records.set_read_only(on);
    Ok(on)
}

/// Switches read-only mode on or off for every node: `emergency-mode`, audited as a
/// configuration change and alerted.
pub fn switch(ctx: &Ctx, node: &Node, read_only: bool, reason: &str) -> Result<(), AppError> {
    ctx.authorize(node, AdminAct::EmergencyMode)?;
    let reason = reason.trim();
    if reason.is_empty() {
        return Err(AppError::Invalid("switching emergency read-only mode needs a reason".into()));
    }
    let (now, version) = stored(node)?;
    if now.read_only == read_only {
        return Err(AppError::Conflict(if read_only {
            "emergency read-only mode is already on".into()
        } else {
            "emergency read-only mode is already off".into()
        }));
    }
    let mode = Mode { read_only, reason: reason.to_string() };
    let value = serde_json::to_value(&mode).map_err(|e| AppError::Failed(e.to_string()))?;
    change_config(ctx, node, KIND, KEY, Some(value), reason, version)?;
    apply(node)?;
    ctx.record(
        node,
        "alert-emergency-mode",
        mamori_audit::Outcome::Success,
        if read_only {
            format!("emergency read-only mode ON (record writes refused on every node): {reason}")
        } else {
            format!("emergency read-only mode OFF (record writes accepted again): {reason}")
        },
    )?;
    Ok(())
}

/// What isolating did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Isolated {
    /// Access and refresh tokens revoked.
    pub tokens: u64,
    /// Browser sessions ended.
    pub sessions: u64,
    /// Whether read-only mode was switched on now (false: it was on already).
    pub read_only_switched: bool,
}

/// The first step of the ransomware runbook (`docs/RECOVERY.md`): revoke every token and end
/// every session of every person and application, and switch read-only mode on. People sign in
/// again (two factors) to read charts; applications get new tokens. Audited and alerted.
pub fn isolate(ctx: &Ctx, node: &Node, reason: &str) -> Result<Isolated, AppError> {
    ctx.authorize(node, AdminAct::EmergencyMode)?;
    if reason.trim().is_empty() {
        return Err(AppError::Invalid("switching emergency read-only mode needs a reason".into()));
    }
    let read_only_switched = match switch(ctx, node, true, reason) {
        Ok(()) => true,
        Err(AppError::Conflict(_)) => false,
        Err(e) => return Err(e),
    };
    let (tokens, sessions) = node.store.revoke_everything()?;
    ctx.record(
        node,
        "alert-emergency-isolate",
        mamori_audit::Outcome::Success,
        format!("isolated: {tokens} tokens revoked, {sessions} sessions ended, read-only mode on: {}", reason.trim()),
    )?;
    Ok(Isolated { tokens, sessions, read_only_switched })
}
