//! OAuth 2.0 authorization server pieces: registered clients, SMART App Launch scopes and
//! opaque bearer access tokens.
//!
//! Grants: client credentials (client secret or `private_key_jwt`), authorization code with
//! PKCE (S256 only) for people signing in through the login pages, and refresh tokens with
//! rotation and reuse detection ([`flow`]). ID tokens are RS256 JWTs under rotating keys
//! ([`keys`]). Access and refresh tokens are 256-bit random strings; only their SHA-256 is
//! stored, so a copy of the database does not yield usable tokens, and revocation takes effect
//! at once on every node that shares the store.

pub mod assertion;
pub mod flow;
pub mod keys;
mod scope;

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub use flow::{Authorization, AuthorizeError, CodeRecord, RefreshRecord};
pub use keys::{IdTokenHint, Sealer, SigningKey};
pub use scope::{Context, Perm, Scope, ScopeSet, Special};

/// A storage failure, described for logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store is busy or cannot be reached; nothing was changed and the client may retry
    /// (503 with `Retry-After`).
    #[error("oauth store unavailable: {0}")]
    Unavailable(String),
    /// Anything else (500); the detail is for the log.
    #[error("{0}")]
    Failed(String),
}

impl StoreError {
    /// A failure with no more specific kind.
    pub fn failed(e: impl std::fmt::Display) -> StoreError {
        StoreError::Failed(e.to_string())
    }

    /// Whether the same request may succeed if retried shortly.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

/// A registered application.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Client {
    /// `client_id`.
    pub id: String,
    /// Human name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// SHA-256 (hex) of the client secret; `None` for a client without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_sha256: Option<String>,
    /// The scopes the client may be granted (space-separated SMART scopes).
    pub scope: String,
    /// Disabled clients get no tokens and their tokens stop working.
    #[serde(default)]
    pub disabled: bool,
    /// Access-token lifetime in seconds.
    pub token_lifetime_secs: u64,
    /// Source addresses (CIDR) the client may connect from; empty = any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_ip: Vec<String>,
    /// Information classes (情報区分) the client may reach; empty = every class its scopes'
    /// resource types carry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub classes: Vec<String>,
    /// Public keys (a JWK Set) for `private_key_jwt` client authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<serde_json::Value>,
    /// Redirect URIs for the authorization-code flow, matched exactly; empty = the client has no
    /// user-facing flow.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub redirect_uris: Vec<String>,
}

/// Whether `ip` is inside a CIDR block such as `10.1.0.0/16` or `2001:db8::/32` (a bare address
/// is a /32 or /128).
pub fn cidr_contains(cidr: &str, ip: std::net::IpAddr) -> bool {
    let (net, len) = match cidr.split_once('/') {
        Some((n, l)) => (n, l.parse::<u32>().ok()),
        None => (cidr, None),
    };
    match (net.parse::<std::net::IpAddr>(), ip) {
        (Ok(std::net::IpAddr::V4(n)), std::net::IpAddr::V4(a)) => {
            let len = len.unwrap_or(32).min(32);
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            u32::from(n) & mask == u32::from(a) & mask
        }
        (Ok(std::net::IpAddr::V6(n)), std::net::IpAddr::V6(a)) => {
            let len = len.unwrap_or(128).min(128);
            let mask = if len == 0 { 0 } else { u128::MAX << (128 - len) };
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

/// Whether a CIDR string parses.
pub fn valid_cidr(cidr: &str) -> bool {
    let (net, len) = cidr.split_once('/').unwrap_or((cidr, ""));
    match net.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => len.is_empty() || len.parse::<u32>().is_ok_and(|l| l <= 32),
        Ok(std::net::IpAddr::V6(_)) => len.is_empty() || len.parse::<u32>().is_ok_and(|l| l <= 128),
        Err(_) => false,
    }
}

impl Client {
    /// A public client (SMART `client-public`): neither a secret nor keys; it must use PKCE.
    pub fn is_public(&self) -> bool {
        self.secret_sha256.is_none() && self.jwks.is_none()
    }

    /// Whether the client may connect from `ip` (`None` = unknown source, refused when limited).
    pub fn allows_source(&self, ip: Option<std::net::IpAddr>) -> bool {
        self.allow_ip.is_empty() || ip.is_some_and(|ip| self.allow_ip.iter().any(|c| cidr_contains(c, ip)))
    }
}

/// An issued access token as stored (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// SHA-256 of the token.
    pub token_sha256: [u8; 32],
    /// Who it was issued to.
    pub client_id: String,
    /// The person it acts for, if any.
    pub subject: Option<String>,
    /// That person's FHIR resource, if any.
    pub fhir_user: Option<String>,
    /// Granted scopes.
    pub scope: String,
    /// Unix seconds.
    pub issued_at: i64,
    /// Unix seconds.
    pub expires_at: i64,
    /// Revoked.
    pub revoked: bool,
    /// The patient in context (`Patient/123`) for `patient/` scopes, if any.
    pub patient: Option<String>,
    /// The authorization this token descends from (authorization code and refresh tokens); a
    /// replayed code or refresh token revokes the whole family.
    pub family: Option<String>,
}

/// What the OAuth service needs from storage.
pub trait OAuthStore: Send + Sync {
    /// A registered client.
    fn client(&self, id: &str) -> Result<Option<Client>, StoreError>;
    /// Stores an issued token.
    fn insert_token(&self, t: &TokenRecord) -> Result<(), StoreError>;
    /// Looks a token up by its hash.
    fn token(&self, sha256: &[u8; 32]) -> Result<Option<TokenRecord>, StoreError>;
    /// Looks a token up by its hash together with the client it was issued to (`None` if that
    /// client no longer exists or has no sealed version; a disabled one is returned as it is):
    /// the lookup every API request makes, answered with one query.
    fn token_with_client(&self, sha256: &[u8; 32]) -> Result<Option<(TokenRecord, Option<Client>)>, StoreError>;
    /// Marks a token revoked; returns whether it existed.
    fn revoke_token(&self, sha256: &[u8; 32]) -> Result<bool, StoreError>;
    /// Records a client assertion's `jti` until `expires_at`; `false` if it was already used
    /// (replay). Forgets entries that expired before `now`.
    fn use_jti(&self, client_id: &str, jti: &str, expires_at: i64, now: i64) -> Result<bool, StoreError>;
    /// Stores an authorization code (by hash).
    fn insert_code(&self, c: &CodeRecord) -> Result<(), StoreError>;
    /// Marks a code used and returns it with whether this was its first use (atomic: of two
    /// concurrent redemptions exactly one is first).
    fn take_code(&self, sha256: &[u8; 32]) -> Result<Option<(CodeRecord, bool)>, StoreError>;
    /// Stores a refresh token (by hash).
    fn insert_refresh(&self, r: &RefreshRecord) -> Result<(), StoreError>;
    /// Looks a refresh token up by its hash.
    fn refresh_token(&self, sha256: &[u8; 32]) -> Result<Option<RefreshRecord>, StoreError>;
    /// Marks a refresh token used; `false` if it already was (atomic compare-and-set).
    fn use_refresh(&self, sha256: &[u8; 32]) -> Result<bool, StoreError>;
    /// Revokes every access and refresh token of a family; returns how many.
    fn revoke_family(&self, family: &str) -> Result<u64, StoreError>;
    /// The ID-token signing keys (private halves sealed).
    fn signing_keys(&self) -> Result<Vec<SigningKey>, StoreError>;
    /// Adds or replaces a signing key (through the audited configuration path).
    fn put_signing_key(&self, k: &SigningKey, reason: &str) -> Result<(), StoreError>;
}

/// An OAuth error response (RFC 6749 §5.2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{error}: {description}")]
pub struct OAuthError {
    /// The error code (`invalid_client`, `invalid_scope`…).
    pub error: &'static str,
    /// A sentence for the developer.
    pub description: String,
    /// HTTP status to answer with.
    pub status: u16,
}

impl OAuthError {
    pub fn new(error: &'static str, status: u16, description: impl Into<String>) -> Self {
        OAuthError { error, description: description.into(), status }
    }
    /// `invalid_request` (400).
    pub fn invalid_request(d: impl Into<String>) -> Self {
        Self::new("invalid_request", 400, d)
    }
    /// `invalid_client` (401).
    pub fn invalid_client() -> Self {
        Self::new("invalid_client", 401, "client authentication failed")
    }
    /// `invalid_grant` (400).
    pub fn invalid_grant(d: impl Into<String>) -> Self {
        Self::new("invalid_grant", 400, d)
    }
    /// `unauthorized_client` (400).
    pub fn unauthorized_client(d: impl Into<String>) -> Self {
        Self::new("unauthorized_client", 400, d)
    }
    /// `invalid_scope` (400).
    pub fn invalid_scope(d: impl Into<String>) -> Self {
        Self::new("invalid_scope", 400, d)
    }
    /// `unsupported_grant_type` (400).
    pub fn unsupported_grant_type(d: impl Into<String>) -> Self {
        Self::new("unsupported_grant_type", 400, d)
    }
    /// `server_error` (500); the detail goes to logs only.
    pub fn server_error() -> Self {
        Self::new("server_error", 500, "the authorization server failed; try again")
    }
}

impl From<StoreError> for OAuthError {
    /// The storage detail is dropped here: a client sees only `temporarily_unavailable` (503, may
    /// retry) or `server_error`; the store adapter reports its own failures.
    fn from(e: StoreError) -> Self {
        if e.is_transient() {
            Self::new("temporarily_unavailable", 503, "the authorization server is busy; retry shortly")
        } else {
            OAuthError::server_error()
        }
    }
}

/// A successful token response (RFC 6749 §5.1).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TokenResponse {
    /// The bearer token.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds.
    pub expires_in: u64,
    /// Granted scopes.
    pub scope: String,
    /// OpenID Connect ID token (when `openid` was granted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
    /// A refresh token (when `offline_access` or `online_access` was granted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// SMART launch context: the patient's id (when `launch/patient` was granted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patient: Option<String>,
    /// SMART: the app should show which patient it is working on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub need_patient_banner: Option<bool>,
}

impl TokenResponse {
    fn bearer(access_token: String, expires_in: u64, scope: String) -> Self {
        TokenResponse {
            access_token,
            token_type: "Bearer",
            expires_in,
            scope,
            id_token: None,
            refresh_token: None,
            patient: None,
            need_patient_banner: None,
        }
    }
}

/// How a client authenticates at the token, introspection and revocation endpoints.
#[derive(Debug, Clone)]
pub enum ClientCredential {
    /// `client_secret_basic` / `client_secret_post`.
    Secret(ClientAuth),
    /// `private_key_jwt` (RFC 7523): the assertion type and the signed JWT.
    Assertion {
        /// `client_assertion_type`.
        kind: String,
        /// `client_assertion`.
        jwt: String,
    },
    /// A public client identifies itself by `client_id` only (it proves possession through PKCE).
    Public(String),
}

/// Why a bearer token was not accepted. Deliberately coarse: the client learns only that the
/// token is not valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BearerError {
    /// Missing, unknown, expired, revoked or of a disabled client.
    #[error("the access token is missing, expired or not valid")]
    Invalid,
    /// Storage failed.
    #[error("token storage failed")]
    Store,
}

/// A validated bearer token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Client the token was issued to.
    pub client_id: String,
    /// The person, if any.
    pub subject: Option<String>,
    /// The person's FHIR resource, if any.
    pub fhir_user: Option<String>,
    /// Granted scopes.
    pub scopes: ScopeSet,
    /// Unix seconds.
    pub expires_at: i64,
    /// The client's registered information classes (empty = not limited); set by
    /// [`OAuth::validate_from`].
    pub client_classes: Vec<String>,
    /// The patient in context (`Patient/123`): `patient/` scopes reach only this patient's
    /// records; without one they reach nothing.
    pub patient: Option<String>,
}

/// Client authentication presented at the token endpoint.
#[derive(Debug, Clone)]
pub struct ClientAuth {
    /// `client_id`.
    pub id: String,
    /// `client_secret`.
    pub secret: String,
}

/// SHA-256 of a secret or token, hex.
pub fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// A fresh 256-bit random string, base64url.
pub fn random_secret() -> Result<String, StoreError> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|e| StoreError::Failed(format!("random: {e}")))?;
    Ok(URL_SAFE_NO_PAD.encode(b))
}

/// The token service.
pub struct OAuth {
    store: Arc<dyn OAuthStore>,
    keys: keys::KeyRing,
}

impl OAuth {
    /// A service over a store. Without [`OAuth::with_sealer`] it cannot sign ID tokens.
    pub fn new(store: Arc<dyn OAuthStore>) -> Self {
        OAuth { store, keys: keys::KeyRing::default() }
    }

    /// Enables ID tokens: signing keys are sealed (encrypted at rest) with `sealer`.
    pub fn with_sealer(mut self, sealer: Arc<dyn Sealer>) -> Self {
        self.keys.sealer = Some(sealer);
        self
    }

    /// Sets how often ID-token signing keys rotate and how long a retired key stays published.
    pub fn with_key_schedule(mut self, rotate_after_secs: i64, overlap_secs: i64) -> Self {
        self.keys.rotate_after = rotate_after_secs.max(3600);
        self.keys.overlap = overlap_secs.max(600);
        self
    }

    /// Authenticates a client by any of the methods it is registered for: a secret client must
    /// present its secret, a key-holding client a signed assertion (whose `aud` must name one of
    /// `audiences`), a public client only its id. Anything else is `invalid_client`.
    pub fn authenticate_client(
        &self,
        cred: &ClientCredential,
        audiences: &[String],
        now: i64,
    ) -> Result<Client, OAuthError> {
        match cred {
            ClientCredential::Secret(auth) => self.authenticate(auth),
            ClientCredential::Assertion { kind, jwt } => self.authenticate_assertion(kind, jwt, audiences, now),
            ClientCredential::Public(id) => match self.store.client(id)? {
                Some(c) if !c.disabled && c.is_public() => Ok(c),
                _ => Err(OAuthError::invalid_client()),
            },
        }
    }

    fn authenticate_assertion(
        &self,
        assertion_type: &str,
        assertion: &str,
        audiences: &[String],
        now: i64,
    ) -> Result<Client, OAuthError> {
        if assertion_type != assertion::JWT_BEARER {
            return Err(OAuthError::invalid_request(format!(
                "client_assertion_type must be {}",
                assertion::JWT_BEARER
            )));
        }
        let id = assertion::claimed_client(assertion)?;
        let client = match self.store.client(&id)? {
            Some(c) if !c.disabled => c,
            _ => return Err(OAuthError::invalid_client()),
        };
        let Some(jwks) = &client.jwks else {
            return Err(OAuthError::invalid_client());
        };
        let (jti, exp) = assertion::verify(assertion, &client.id, jwks, audiences, now)?;
        if !self.store.use_jti(&client.id, &jti, exp.max(now) + 60, now)? {
            return Err(OAuthError::invalid_grant("this client assertion (jti) was already used"));
        }
        Ok(client)
    }

    fn authenticate(&self, auth: &ClientAuth) -> Result<Client, OAuthError> {
        let client = self.store.client(&auth.id)?;
        // Hash the presented secret even for unknown clients so timing does not reveal which ids exist.
        let presented = Sha256::digest(auth.secret.as_bytes());
        let Some(client) = client else {
            return Err(OAuthError::invalid_client());
        };
        let expected = client.secret_sha256.as_deref().and_then(|h| hex::decode(h).ok()).unwrap_or_default();
        let ok: bool = expected.len() == 32 && bool::from(expected.as_slice().ct_eq(presented.as_slice()));
        if !ok || client.disabled {
            return Err(OAuthError::invalid_client());
        }
        Ok(client)
    }

    /// The client-credentials grant (RFC 6749 §4.4), for system scopes only.
    pub fn client_credentials(
        &self,
        auth: &ClientAuth,
        scope: Option<&str>,
        now: i64,
    ) -> Result<TokenResponse, OAuthError> {
        self.client_credentials_from(auth, scope, now, None)
    }

    /// The client-credentials grant from a known source address (checked against the client's
    /// allowed addresses).
    pub fn client_credentials_from(
        &self,
        auth: &ClientAuth,
        scope: Option<&str>,
        now: i64,
        source: Option<std::net::IpAddr>,
    ) -> Result<TokenResponse, OAuthError> {
        let client = self.authenticate(auth)?;
        self.issue_client_token(&client, scope, now, source)
    }

    /// The client-credentials grant (RFC 6749 §4.4) for an authenticated client: system scopes
    /// only, within what it is registered for, from an allowed address. Public clients cannot
    /// use it.
    pub fn issue_client_token(
        &self,
        client: &Client,
        scope: Option<&str>,
        now: i64,
        source: Option<std::net::IpAddr>,
    ) -> Result<TokenResponse, OAuthError> {
        if client.is_public() {
            return Err(OAuthError::unauthorized_client("a public client cannot use the client-credentials grant"));
        }
        if !client.allows_source(source) {
            return Err(OAuthError::unauthorized_client("this client may not connect from this address"));
        }
        let registered = ScopeSet::parse(&client.scope).map_err(|_| OAuthError::server_error())?;
        let requested = match scope {
            Some(s) if !s.trim().is_empty() => ScopeSet::parse(s).map_err(OAuthError::invalid_scope)?,
            _ => registered.clone(),
        };
        if let Some(bad) = requested.specials().next() {
            return Err(OAuthError::invalid_scope(format!(
                "`{}` needs a person; the client-credentials grant carries only system/ scopes",
                bad.as_str()
            )));
        }
        if let Some(bad) = requested.iter().find(|s| s.context != Context::System) {
            return Err(OAuthError::invalid_scope(format!(
                "`{bad}` is not a system scope; the client-credentials grant carries only system/ scopes"
            )));
        }
        if let Some(bad) = requested.iter().find(|s| !registered.covers(s)) {
            return Err(OAuthError::invalid_scope(format!("`{bad}` exceeds the scopes registered for this client")));
        }
        let token = random_secret()?;
        let lifetime = client.token_lifetime_secs.clamp(60, 86_400);
        let record = TokenRecord {
            token_sha256: Sha256::digest(token.as_bytes()).into(),
            client_id: client.id.clone(),
            subject: None,
            fhir_user: None,
            scope: requested.to_string(),
            issued_at: now,
            expires_at: now.saturating_add(i64::try_from(lifetime).unwrap_or(3600)),
            revoked: false,
            patient: None,
            family: None,
        };
        self.store.insert_token(&record)?;
        Ok(TokenResponse::bearer(token, lifetime, record.scope))
    }

    /// Issues a token directly to a person through an already authenticated session (the login
    /// flow of the identity layer uses this; tests use it to act as a clinician).
    pub fn issue_for_user(
        &self,
        client_id: &str,
        subject: &str,
        fhir_user: Option<&str>,
        scope: &str,
        lifetime_secs: u64,
        now: i64,
    ) -> Result<TokenResponse, OAuthError> {
        self.issue_for_user_in_context(client_id, subject, fhir_user, scope, None, lifetime_secs, now)
    }

    /// As [`OAuth::issue_for_user`], with a patient in context (`Patient/123`) for `patient/`
    /// scopes (a SMART launch with `launch/patient` will use this).
    #[expect(clippy::too_many_arguments, reason = "the fields of one token")]
    pub fn issue_for_user_in_context(
        &self,
        client_id: &str,
        subject: &str,
        fhir_user: Option<&str>,
        scope: &str,
        patient: Option<&str>,
        lifetime_secs: u64,
        now: i64,
    ) -> Result<TokenResponse, OAuthError> {
        let scopes = ScopeSet::parse(scope).map_err(OAuthError::invalid_scope)?;
        let token = random_secret()?;
        let record = TokenRecord {
            token_sha256: Sha256::digest(token.as_bytes()).into(),
            client_id: client_id.to_string(),
            subject: Some(subject.to_string()),
            fhir_user: fhir_user.map(str::to_string),
            scope: scopes.to_string(),
            issued_at: now,
            expires_at: now.saturating_add(i64::try_from(lifetime_secs).unwrap_or(3600)),
            revoked: false,
            patient: patient.map(str::to_string),
            family: None,
        };
        self.store.insert_token(&record)?;
        Ok(TokenResponse::bearer(token, lifetime_secs, record.scope))
    }

    /// Validates a bearer token presented from `source` (checked against the client's allowed
    /// addresses).
    pub fn validate_from(&self, token: &str, now: i64, source: Option<std::net::IpAddr>) -> Result<Grant, BearerError> {
        let (grant, client) = self.validate_with_client(token, now)?;
        if client.allows_source(source) { Ok(grant) } else { Err(BearerError::Invalid) }
    }

    /// Validates a bearer token.
    pub fn validate(&self, token: &str, now: i64) -> Result<Grant, BearerError> {
        self.validate_with_client(token, now).map(|(g, _)| g)
    }

    fn validate_with_client(&self, token: &str, now: i64) -> Result<(Grant, Client), BearerError> {
        if token.is_empty() || token.len() > 512 {
            return Err(BearerError::Invalid);
        }
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let (t, client) =
            self.store.token_with_client(&hash).map_err(|_| BearerError::Store)?.ok_or(BearerError::Invalid)?;
        if t.revoked || t.expires_at <= now {
            return Err(BearerError::Invalid);
        }
        let client = match client {
            Some(c) if !c.disabled => c,
            _ => return Err(BearerError::Invalid),
        };
        let scopes = ScopeSet::parse(&t.scope).map_err(|_| BearerError::Invalid)?;
        let grant = Grant {
            client_id: t.client_id,
            subject: t.subject,
            fhir_user: t.fhir_user,
            scopes,
            expires_at: t.expires_at,
            client_classes: client.classes.clone(),
            patient: t.patient,
        };
        Ok((grant, client))
    }

    /// A registered application, enabled or not.
    pub fn client(&self, id: &str) -> Result<Option<Client>, StoreError> {
        self.store.client(id)
    }

    /// Whether `uri` is where `client_id` may be sent after RP-initiated logout: exactly one of
    /// its registered redirect URIs (the client must be enabled).
    pub fn post_logout_redirect_allowed(&self, client_id: &str, uri: &str) -> Result<bool, StoreError> {
        Ok(self.store.client(client_id)?.is_some_and(|c| !c.disabled && c.redirect_uris.iter().any(|r| r == uri)))
    }

    /// Revokes a token (RFC 7009 semantics: unknown tokens are not an error).
    /// An access token is revoked alone; a refresh token takes its family with it.
    pub fn revoke(&self, token: &str) -> Result<(), StoreError> {
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if self.store.revoke_token(&hash)? {
            return Ok(());
        }
        if let Some(r) = self.store.refresh_token(&hash)? {
            self.store.revoke_family(&r.family)?;
        }
        Ok(())
    }

    /// RFC 7009 revocation for an authenticated client: an access token is revoked alone; a
    /// refresh token revokes its whole family (the refresh tokens and the access tokens issued
    /// from the same authorization).
    pub fn revoke_for(&self, client: &Client, token: &str) -> Result<bool, OAuthError> {
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(t) = self.store.token(&hash)? {
            return Ok(t.client_id == client.id && !t.revoked && self.store.revoke_token(&hash)?);
        }
        match self.store.refresh_token(&hash)? {
            Some(r) if r.client_id == client.id && !r.revoked => Ok(self.store.revoke_family(&r.family)? > 0),
            _ => Ok(false),
        }
    }

    /// RFC 7662 introspection for an authenticated (non-public) client: its own live access or
    /// refresh tokens are active; a refresh token is described like the access tokens it yields.
    pub fn introspect_for(&self, client: &Client, token: &str, now: i64) -> Result<Option<TokenRecord>, OAuthError> {
        if client.is_public() {
            return Err(OAuthError::invalid_client());
        }
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(t) = self.store.token(&hash)? {
            return Ok((t.client_id == client.id && !t.revoked && t.expires_at > now).then_some(t));
        }
        Ok(match self.store.refresh_token(&hash)? {
            Some(r) if r.client_id == client.id && !r.revoked && !r.used && r.expires_at > now => Some(TokenRecord {
                token_sha256: hash,
                client_id: r.client_id,
                subject: Some(r.subject),
                fhir_user: r.fhir_user,
                scope: r.scope,
                issued_at: r.issued_at,
                expires_at: r.expires_at,
                revoked: false,
                patient: r.patient,
                family: Some(r.family),
            }),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs() {
        let ip =
            |s: &str| s.parse::<std::net::IpAddr>().unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
        assert!(cidr_contains("10.1.0.0/16", ip("10.1.200.3")));
        assert!(!cidr_contains("10.1.0.0/16", ip("10.2.0.1")));
        assert!(cidr_contains("127.0.0.1", ip("127.0.0.1")));
        assert!(cidr_contains("0.0.0.0/0", ip("192.0.2.1")));
        assert!(cidr_contains("2001:db8::/32", ip("2001:db8:1::5")));
        assert!(!cidr_contains("2001:db8::/32", ip("10.0.0.1")));
        assert!(
            valid_cidr("192.168.0.0/24") && valid_cidr("::1") && !valid_cidr("10.0.0.0/33") && !valid_cidr("nonsense")
        );
    }

    /// A busy store is `temporarily_unavailable` (503; the edge adds `Retry-After`), anything
    /// else `server_error` (500); neither carries the storage detail to the client.
    #[test]
    fn store_failures_reach_the_client_by_kind() {
        let busy = OAuthError::from(StoreError::Unavailable("database is locked".into()));
        assert_eq!((busy.error, busy.status), ("temporarily_unavailable", 503));
        assert!(!busy.description.contains("locked"));
        let failed = OAuthError::from(StoreError::failed("disk I/O error"));
        assert_eq!((failed.error, failed.status), ("server_error", 500));
        assert!(!failed.description.contains("disk"));
    }
}
