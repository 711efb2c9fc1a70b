//! ID-token signing keys (OIDC): list and rotate. The previous key stays published for the
//! overlap, so relying parties that cached the JWKS keep verifying.

use mamori_oauth::SigningKey;

use crate::ctx::failed;
use crate::{AdminAct, AppError, Ctx, Node};

/// One key and whether the JWKS publishes it now.
#[derive(Debug, Clone)]
pub struct KeyState {
    /// The key (never its private half: sealed in the store).
    pub key: SigningKey,
    /// Published in the JWKS.
    pub published: bool,
}

/// Every signing key, oldest first.
pub fn list(ctx: &Ctx, node: &Node) -> Result<Vec<KeyState>, AppError> {
    ctx.authorize(node, AdminAct::RotateKeys)?;
    let jwks = node.oauth.jwks(ctx.now_secs()).map_err(failed)?;
    let published: Vec<&str> = jwks
        .get("keys")
        .and_then(serde_json::Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|k| k.get("kid").and_then(serde_json::Value::as_str))
        .collect();
    Ok(node
        .oauth
        .signing_keys()
        .map_err(failed)?
        .into_iter()
        .map(|key| KeyState { published: published.contains(&key.kid.as_str()), key })
        .collect())
}

/// Makes the first signing key when there is none that signs (a new installation), so the JWKS
/// is never empty: relying parties cache it, and one fetched empty would refuse the first ID
/// tokens. Returns the new key id, or `None` when a key already signs. Audited like a rotation.
pub fn ensure_signing_key(ctx: &Ctx, node: &Node) -> Result<Option<String>, AppError> {
    ctx.authorize(node, AdminAct::RotateKeys)?;
    let signs =
        node.oauth.signing_keys().map_err(failed)?.iter().any(|k| k.retired_at.is_none() && k.private_sealed.is_some());
    if signs {
        return Ok(None);
    }
    node.oauth
        .rotate_signing_key(ctx.now_secs(), &format!("first ID-token signing key, made by {} at start", ctx.by()))
        .map(Some)
        .map_err(failed)
}

/// Makes a new signing key current; returns its key id.
pub fn rotate(ctx: &Ctx, node: &Node, reason: &str) -> Result<String, AppError> {
    ctx.authorize(node, AdminAct::RotateKeys)?;
    if reason.trim().is_empty() {
        return Err(AppError::Invalid("a key rotation must say why".into()));
    }
    node.oauth
        .rotate_signing_key(ctx.now_secs(), &format!("rotated by {}: {}", ctx.by(), reason.trim()))
        .map_err(failed)
}
