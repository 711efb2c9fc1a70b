//! `private_key_jwt` client authentication (RFC 7523 §2.2, OpenID Connect Core §9), as SMART
//! Backend Services use it: the client signs a short-lived JWT with a key whose public half it
//! registered (`mamori client add --jwks-file`).
//!
//! Checked: the algorithm is one of ES256, ES384, RS384 (never `none`, never HMAC — a public key
//! can never be used as an HMAC secret, because only asymmetric keys are registered and the
//! algorithm must match the key's family); `iss` = `sub` = the client id; `aud` = our token
//! endpoint, the endpoint called, or our issuer identifier; `exp` present, not past and at most
//! five minutes ahead; `nbf` and `iat`, when present, not in the future (RFC 7523 §3, with the
//! same 30 s leeway as `exp`); `jti` present and never seen before for this client (replay cache
//! until the assertion expires).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::OAuthError;

/// The only assertion type accepted.
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Signing algorithms accepted for client assertions (SMART Backend Services).
pub const ALGORITHMS: [&str; 3] = ["ES256", "ES384", "RS384"];

/// The longest an assertion may live ahead of now (SMART: no more than five minutes).
pub const MAX_LIFETIME_SECS: i64 = 300;

/// Why a JWK Set is not acceptable for registration.
pub fn validate_jwks(v: &serde_json::Value) -> Result<usize, String> {
    let set: JwkSet = serde_json::from_value(v.clone()).map_err(|e| format!("not a JWK Set: {e}"))?;
    if set.keys.is_empty() {
        return Err("the JWK Set has no keys".into());
    }
    let raw = v.get("keys").and_then(serde_json::Value::as_array).cloned().unwrap_or_default();
    for k in &raw {
        for private in ["d", "p", "q", "dp", "dq", "qi", "k"] {
            if k.get(private).is_some() {
                return Err(format!(
                    "a key carries the private or symmetric member `{private}`; register public keys only"
                ));
            }
        }
    }
    for k in &set.keys {
        match &k.algorithm {
            AlgorithmParameters::EllipticCurve(_) | AlgorithmParameters::RSA(_) => {}
            _ => return Err("only EC (P-256, P-384) and RSA keys can be registered".into()),
        }
        DecodingKey::from_jwk(k).map_err(|e| format!("unusable key: {e}"))?;
    }
    Ok(set.keys.len())
}

#[derive(Debug, Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    exp: i64,
    jti: String,
    #[serde(default)]
    nbf: Option<i64>,
    #[serde(default)]
    iat: Option<i64>,
}

#[derive(Debug, Deserialize)]
struct Unverified {
    iss: Option<String>,
}

fn reject(d: &str) -> OAuthError {
    OAuthError::new("invalid_client", 401, format!("client assertion refused: {d}"))
}

/// The client id an assertion claims to come from (unverified: only to choose the keys).
pub fn claimed_client(assertion: &str) -> Result<String, OAuthError> {
    let payload = assertion.split('.').nth(1).ok_or_else(|| reject("not a JWT"))?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).map_err(|_| reject("not a JWT"))?;
    let u: Unverified = serde_json::from_slice(&bytes).map_err(|_| reject("the payload is not a JSON object"))?;
    u.iss.filter(|s| !s.is_empty() && s.len() <= 64).ok_or_else(|| reject("`iss` is missing"))
}

fn key_fits(k: &Jwk, alg: Algorithm) -> bool {
    matches!(
        (&k.algorithm, alg),
        (AlgorithmParameters::EllipticCurve(_), Algorithm::ES256 | Algorithm::ES384)
            | (AlgorithmParameters::RSA(_), Algorithm::RS384)
    )
}

/// Verifies an assertion against the client's registered keys; returns its `jti` and `exp`
/// for the replay cache.
pub fn verify(
    assertion: &str,
    client_id: &str,
    jwks: &serde_json::Value,
    audiences: &[String],
    now: i64,
) -> Result<(String, i64), OAuthError> {
    if assertion.len() > 16 * 1024 {
        return Err(reject("too long"));
    }
    let header = jsonwebtoken::decode_header(assertion).map_err(|_| reject("the header is not valid"))?;
    let alg = match header.alg {
        Algorithm::ES256 => Algorithm::ES256,
        Algorithm::ES384 => Algorithm::ES384,
        Algorithm::RS384 => Algorithm::RS384,
        other => return Err(reject(&format!("algorithm {other:?} is not accepted (ES256, ES384, RS384)"))),
    };
    let set: JwkSet = serde_json::from_value(jwks.clone()).map_err(|_| OAuthError::server_error())?;
    let candidates: Vec<&Jwk> = set
        .keys
        .iter()
        .filter(|k| key_fits(k, alg))
        .filter(|k| header.kid.is_none() || k.common.key_id == header.kid)
        .collect();
    if candidates.is_empty() {
        return Err(reject("no registered key matches the header's kid and alg"));
    }
    let mut v = Validation::new(alg);
    v.set_audience(audiences);
    v.set_issuer(&[client_id]);
    v.sub = Some(client_id.to_string());
    v.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
    v.leeway = 30;
    v.validate_exp = true;
    v.validate_nbf = true;
    let mut last = reject("signature not valid");
    for k in candidates {
        let Ok(key) = DecodingKey::from_jwk(k) else { continue };
        match jsonwebtoken::decode::<Claims>(assertion, &key, &v) {
            Ok(data) => {
                let c = data.claims;
                if c.iss != client_id || c.sub != client_id {
                    return Err(reject("`iss` and `sub` must both be the client id"));
                }
                if c.nbf.is_some_and(|t| t > now + 30) {
                    return Err(reject("`nbf` is in the future"));
                }
                if c.iat.is_some_and(|t| t > now + 30) {
                    return Err(reject("`iat` is in the future"));
                }
                if c.exp > now + MAX_LIFETIME_SECS + 30 {
                    return Err(reject("`exp` is more than five minutes ahead"));
                }
                if c.jti.is_empty() || c.jti.len() > 256 {
                    return Err(reject("`jti` is missing or too long"));
                }
                return Ok((c.jti, c.exp));
            }
            Err(e) => {
                last = reject(&match e.kind() {
                    jsonwebtoken::errors::ErrorKind::ExpiredSignature => "expired".to_string(),
                    jsonwebtoken::errors::ErrorKind::ImmatureSignature => "`nbf` is in the future".to_string(),
                    jsonwebtoken::errors::ErrorKind::InvalidAudience => {
                        format!("`aud` must be one of {}", audiences.join(", "))
                    }
                    jsonwebtoken::errors::ErrorKind::InvalidIssuer
                    | jsonwebtoken::errors::ErrorKind::InvalidSubject => {
                        "`iss` and `sub` must both be the client id".to_string()
                    }
                    jsonwebtoken::errors::ErrorKind::MissingRequiredClaim(c) => format!("`{c}` is missing"),
                    jsonwebtoken::errors::ErrorKind::Json(_) => {
                        "claims missing or of the wrong type (`jti` is required)".into()
                    }
                    _ => "signature not valid".to_string(),
                });
            }
        }
    }
    Err(last)
}
