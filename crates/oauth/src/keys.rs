//! ID-token signing keys: RSA-2048 with RS256 (the algorithm every OpenID Connect relying party
//! must accept), kept in the store as configuration entries of kind `signing-key` (so every node
//! of a cluster signs with the same keys, and each rotation is a versioned, audited change), with
//! the private half sealed (encrypted at rest) by a [`Sealer`].
//!
//! Rotation with overlap: a key signs for `rotate_after` (90 days by default), or until
//! `mamori oauth rotate-keys`; the new key signs from then on, and the retired one stays in the
//! JWKS for `overlap` (one day by default, far beyond an ID token's five-minute life) so tokens
//! signed just before the rotation still verify. After that its private half is destroyed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::EncodingKey;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{OAuth, OAuthError, StoreError};

/// Encrypts key material at rest (the data directory's master key, or a KMS).
pub trait Sealer: Send + Sync {
    /// Seals `plain`, bound to `aad`.
    fn seal(&self, aad: &str, plain: &[u8]) -> Result<String, StoreError>;
    /// Opens what [`Sealer::seal`] made with the same `aad`.
    fn open(&self, aad: &str, sealed: &str) -> Result<Vec<u8>, StoreError>;
}

/// What a verified `id_token_hint` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdTokenHint {
    /// The person (`sub`).
    pub subject: String,
    /// The application it was issued to (`aud`).
    pub client_id: String,
}

/// A signing key as stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SigningKey {
    /// Key id: the RFC 7638 JWK thumbprint.
    pub kid: String,
    /// `RS256`.
    pub alg: String,
    /// Unix seconds.
    pub created_at: i64,
    /// When it stopped signing (unix seconds); it stays published for the overlap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired_at: Option<i64>,
    /// The public JWK.
    pub public_jwk: serde_json::Value,
    /// The PKCS#1 DER private key, sealed; `None` once destroyed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_sealed: Option<String>,
}

const DAY: i64 = 86_400;

pub(crate) struct KeyRing {
    pub(crate) sealer: Option<Arc<dyn Sealer>>,
    pub(crate) rotate_after: i64,
    pub(crate) overlap: i64,
    cache: Mutex<HashMap<String, Arc<EncodingKey>>>,
}

impl Default for KeyRing {
    fn default() -> Self {
        KeyRing { sealer: None, rotate_after: 90 * DAY, overlap: DAY, cache: Mutex::new(HashMap::new()) }
    }
}

fn aad(kid: &str) -> String {
    format!("mamori-signing-key:{kid}")
}

fn se(e: impl std::fmt::Display) -> StoreError {
    StoreError::failed(e)
}

/// A new RSA-2048 key: (public JWK with its thumbprint as `kid`, PKCS#1 DER private key).
fn generate() -> Result<(String, serde_json::Value, Vec<u8>), StoreError> {
    use rsa::pkcs1::EncodeRsaPrivateKey;
    use rsa::traits::PublicKeyParts;
    let key = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048).map_err(se)?;
    let n = URL_SAFE_NO_PAD.encode(key.n().to_bytes_be());
    let e = URL_SAFE_NO_PAD.encode(key.e().to_bytes_be());
    // RFC 7638: the required members in lexicographic order, no whitespace.
    let thumb = format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#);
    let kid = URL_SAFE_NO_PAD.encode(Sha256::digest(thumb.as_bytes()));
    let jwk = serde_json::json!({"kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid, "n": n, "e": e});
    let der = key.to_pkcs1_der().map_err(se)?.as_bytes().to_vec();
    Ok((kid, jwk, der))
}

impl OAuth {
    fn sealer(&self) -> Result<&Arc<dyn Sealer>, OAuthError> {
        self.keys.sealer.as_ref().ok_or_else(|| {
            OAuthError::new("server_error", 500, "this server has no key store for ID tokens; openid is unavailable")
        })
    }

    /// Starts a new signing key now and retires the current ones (they stay published for the
    /// overlap). Returns the new key id.
    pub fn rotate_signing_key(&self, now: i64, reason: &str) -> Result<String, OAuthError> {
        let sealer = self.sealer()?.clone();
        let existing = self.store.signing_keys()?;
        let (kid, jwk, der) = generate()?;
        let key = SigningKey {
            kid: kid.clone(),
            alg: "RS256".into(),
            created_at: now,
            retired_at: None,
            public_jwk: jwk,
            private_sealed: Some(sealer.seal(&aad(&kid), &der)?),
        };
        self.store.put_signing_key(&key, reason)?;
        for mut old in existing {
            if old.retired_at.is_none() {
                old.retired_at = Some(now);
                self.store.put_signing_key(&old, "retired by rotation; published until the overlap ends")?;
            } else {
                self.destroy_if_withdrawn(old, now)?;
            }
        }
        Ok(kid)
    }

    /// Destroys the private half of a retired key once its overlap has ended (it is no longer
    /// published, so nothing signed with it can be verified any more).
    fn destroy_if_withdrawn(&self, mut k: SigningKey, now: i64) -> Result<(), OAuthError> {
        if k.private_sealed.is_some() && k.retired_at.is_some_and(|r| r + self.keys.overlap <= now) {
            k.private_sealed = None;
            self.store.put_signing_key(&k, "overlap ended: private key destroyed")?;
            if let Ok(mut c) = self.keys.cache.lock() {
                c.remove(&k.kid);
            }
        }
        Ok(())
    }

    /// The key that signs now, rotating first when there is none or it is due; retired keys
    /// past their overlap lose their private half on the way.
    pub(crate) fn current_signing_key(&self, now: i64) -> Result<(String, Arc<EncodingKey>), OAuthError> {
        let sealer = self.sealer()?.clone();
        let mut active = None;
        for k in self.store.signing_keys()? {
            if k.retired_at.is_some() {
                self.destroy_if_withdrawn(k, now)?;
            } else if k.private_sealed.is_some()
                && active.as_ref().is_none_or(|a: &SigningKey| (k.created_at, &k.kid) > (a.created_at, &a.kid))
            {
                active = Some(k);
            }
        }
        let key = match active {
            Some(k) if k.created_at + self.keys.rotate_after > now => k,
            _ => {
                let kid = self.rotate_signing_key(now, "scheduled rotation of the ID-token signing key")?;
                self.store.signing_keys()?.into_iter().find(|k| k.kid == kid).ok_or_else(OAuthError::server_error)?
            }
        };
        if let Some(k) = self.keys.cache.lock().ok().and_then(|c| c.get(&key.kid).cloned()) {
            return Ok((key.kid, k));
        }
        let sealed = key.private_sealed.as_deref().ok_or_else(OAuthError::server_error)?;
        let der = sealer.open(&aad(&key.kid), sealed)?;
        let enc = Arc::new(EncodingKey::from_rsa_der(&der));
        if let Ok(mut c) = self.keys.cache.lock() {
            c.insert(key.kid.clone(), enc.clone());
        }
        Ok((key.kid, enc))
    }

    /// The published key set (RFC 7517): public keys only, the signing one and those retired
    /// less than the overlap ago.
    pub fn jwks(&self, now: i64) -> Result<serde_json::Value, OAuthError> {
        let mut keys: Vec<SigningKey> = self
            .store
            .signing_keys()?
            .into_iter()
            .filter(|k| k.retired_at.is_none_or(|r| r + self.keys.overlap > now))
            .collect();
        keys.sort_by_key(|k| std::cmp::Reverse(k.created_at));
        Ok(serde_json::json!({"keys": keys.into_iter().map(|k| k.public_jwk).collect::<Vec<_>>()}))
    }

    /// Checks an `id_token_hint` (OpenID Connect RP-Initiated Logout 1.0): an ID token this
    /// server signed with a key it still publishes, issued by `issuer`. An expired one is
    /// accepted (a hint is often sent after its token expired); returns its subject and client.
    pub fn id_token_hint(&self, hint: &str, issuer: &str, now: i64) -> Result<IdTokenHint, OAuthError> {
        let bad = || OAuthError::invalid_request("id_token_hint is not an ID token this server issued");
        if hint.len() > 16 * 1024 {
            return Err(bad());
        }
        let header = jsonwebtoken::decode_header(hint).map_err(|_| bad())?;
        if header.alg != jsonwebtoken::Algorithm::RS256 {
            return Err(bad());
        }
        let set: jsonwebtoken::jwk::JwkSet =
            serde_json::from_value(self.jwks(now)?).map_err(|_| OAuthError::server_error())?;
        let key = header.kid.as_deref().and_then(|kid| set.find(kid)).ok_or_else(bad)?;
        let key = jsonwebtoken::DecodingKey::from_jwk(key).map_err(|_| OAuthError::server_error())?;
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        v.set_issuer(&[issuer]);
        v.validate_exp = false;
        v.validate_aud = false;
        v.set_required_spec_claims(&["iss", "sub", "aud"]);
        #[derive(Deserialize)]
        struct Claims {
            sub: String,
            aud: serde_json::Value,
        }
        let c = jsonwebtoken::decode::<Claims>(hint, &key, &v).map_err(|_| bad())?.claims;
        let client_id = match c.aud {
            serde_json::Value::String(a) => a,
            serde_json::Value::Array(a) if a.len() == 1 => {
                a.first().and_then(serde_json::Value::as_str).ok_or_else(bad)?.to_string()
            }
            _ => return Err(bad()),
        };
        Ok(IdTokenHint { subject: c.sub, client_id })
    }

    /// Every signing key with its state, for operators.
    pub fn signing_keys(&self) -> Result<Vec<SigningKey>, OAuthError> {
        let mut keys = self.store.signing_keys()?;
        keys.sort_by_key(|k| k.created_at);
        for k in &mut keys {
            // Never hand sealed material around.
            k.private_sealed = k.private_sealed.as_ref().map(|_| "(sealed)".to_string());
        }
        Ok(keys)
    }
}
