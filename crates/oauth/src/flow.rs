//! The authorization-code grant with PKCE (RFC 6749 §4.1, RFC 7636 with S256 only), as SMART App
//! Launch 2.x uses it for standalone launches, and refresh tokens with rotation and reuse
//! detection (OAuth 2.0 Security BCP §4.14): every refresh token is usable once; presenting a
//! used one means it was stolen, so the whole family — every refresh and access token descended
//! from the same authorization — is revoked. A replayed authorization code does the same
//! (RFC 6749 §4.1.2).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::{Client, Context, OAuth, OAuthError, ScopeSet, Special, TokenRecord, TokenResponse, random_secret};

/// An authorization code as stored (by hash; the code itself only travels to the client).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CodeRecord {
    /// SHA-256 of the code.
    #[serde(skip)]
    pub code_sha256: [u8; 32],
    /// The authorization this code starts.
    pub family: String,
    /// The client it was issued to.
    pub client_id: String,
    /// The redirect URI of the request (the token request must repeat it).
    pub redirect_uri: String,
    /// Granted scopes.
    pub scope: String,
    /// The person who approved.
    pub subject: String,
    /// Their FHIR resource (`Practitioner/…`).
    pub fhir_user: Option<String>,
    /// Their display name (`profile` scope).
    pub name: Option<String>,
    /// The patient chosen (`Patient/…`) for `launch/patient`.
    pub patient: Option<String>,
    /// PKCE S256 challenge.
    pub code_challenge: String,
    /// OpenID Connect nonce, echoed in the ID token.
    pub nonce: Option<String>,
    /// When the person signed in (unix seconds).
    pub auth_time: i64,
    /// How the person signed in (RFC 8176), echoed as the ID token's `amr`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub amr: Vec<String>,
    /// Unix seconds.
    pub expires_at: i64,
}

/// A refresh token as stored (by hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshRecord {
    /// SHA-256 of the token.
    pub sha256: [u8; 32],
    /// The authorization it descends from.
    pub family: String,
    /// Client.
    pub client_id: String,
    /// The person.
    pub subject: String,
    /// Their FHIR resource.
    pub fhir_user: Option<String>,
    /// Scopes of the authorization (a refresh may narrow them, never widen).
    pub scope: String,
    /// Patient in context.
    pub patient: Option<String>,
    /// Unix seconds.
    pub issued_at: i64,
    /// Unix seconds: the family's end (rotation never extends it).
    pub expires_at: i64,
    /// Exchanged already.
    pub used: bool,
    /// Revoked.
    pub revoked: bool,
}

/// A checked authorization request.
#[derive(Debug, Clone)]
pub struct Authorization {
    /// The client.
    pub client: Client,
    /// Exactly one of its registered redirect URIs.
    pub redirect_uri: String,
    /// The scopes asked for (within the client's registration).
    pub scopes: ScopeSet,
    /// Echoed to the client.
    pub state: Option<String>,
    /// Echoed in the ID token.
    pub nonce: Option<String>,
    /// PKCE S256 challenge.
    pub code_challenge: String,
}

/// Why an authorization request failed.
#[derive(Debug, Clone)]
pub enum AuthorizeError {
    /// The client or redirect URI cannot be trusted: show an error page, never redirect
    /// (RFC 6749 §4.1.2.1).
    NoRedirect(String),
    /// Send the error to the client's redirect URI.
    Redirect {
        /// Where.
        redirect_uri: String,
        /// `state` to echo.
        state: Option<String>,
        /// The error.
        error: OAuthError,
    },
}

/// How long an authorization code lives.
pub const CODE_LIFETIME_SECS: i64 = 60;
/// How long an ID token lives.
pub const ID_TOKEN_LIFETIME_SECS: i64 = 300;
/// Refresh-token family lifetime with `offline_access`.
pub const OFFLINE_LIFETIME_SECS: i64 = 30 * 86_400;
/// Refresh-token family lifetime with `online_access` (the login session's absolute lifetime).
pub const ONLINE_LIFETIME_SECS: i64 = 12 * 3600;

fn pkce_shaped(s: &str) -> bool {
    (43..=128).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

fn hash(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

/// Checks that `verifier` answers the S256 `challenge` (RFC 7636 §4.6), in constant time.
pub fn pkce_matches(verifier: &str, challenge: &str) -> bool {
    use base64::Engine;
    let computed = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    pkce_shaped(verifier) && bool::from(computed.as_bytes().ct_eq(challenge.as_bytes()))
}

impl OAuth {
    /// Checks an authorization request (`/oauth/authorize` query). `fhir_base` is the FHIR
    /// endpoint the SMART `aud` parameter must name.
    pub fn check_authorize(
        &self,
        params: &[(String, String)],
        fhir_base: &str,
    ) -> Result<Authorization, AuthorizeError> {
        let get = |k: &str| params.iter().find(|(pk, _)| pk == k).map(|(_, v)| v.as_str());
        let client_id = get("client_id").ok_or_else(|| AuthorizeError::NoRedirect("client_id is missing".into()))?;
        let client = match self.store.client(client_id) {
            Ok(Some(c)) if !c.disabled => c,
            Ok(_) => return Err(AuthorizeError::NoRedirect("unknown or disabled client".into())),
            Err(e) => return Err(AuthorizeError::NoRedirect(format!("storage: {e}"))),
        };
        let redirect_uri = match get("redirect_uri") {
            Some(r) if client.redirect_uris.iter().any(|x| x == r) => r.to_string(),
            Some(_) => return Err(AuthorizeError::NoRedirect("redirect_uri is not registered for this client".into())),
            None if client.redirect_uris.len() == 1 => client.redirect_uris.concat(),
            None => return Err(AuthorizeError::NoRedirect("redirect_uri is missing".into())),
        };
        let state = get("state").map(str::to_string);
        let fail = |error: OAuthError| AuthorizeError::Redirect {
            redirect_uri: redirect_uri.clone(),
            state: state.clone(),
            error,
        };
        if let Some((k, _)) =
            params.iter().enumerate().find_map(|(i, p)| params.iter().skip(i + 1).any(|q| q.0 == p.0).then_some(p))
        {
            return Err(fail(OAuthError::invalid_request(format!("parameter `{k}` is repeated"))));
        }
        match get("response_type") {
            Some("code") => {}
            _ => {
                return Err(fail(OAuthError::new(
                    "unsupported_response_type",
                    400,
                    "only response_type=code is supported",
                )));
            }
        }
        if state.as_ref().is_some_and(|s| s.len() > 1024) {
            return Err(fail(OAuthError::invalid_request("state is longer than 1024 characters")));
        }
        match (get("code_challenge"), get("code_challenge_method")) {
            (Some(c), Some("S256")) if pkce_shaped(c) => {}
            (_, Some(m)) if m != "S256" => {
                return Err(fail(OAuthError::invalid_request("code_challenge_method must be S256 (plain is refused)")));
            }
            _ => {
                return Err(fail(OAuthError::invalid_request(
                    "PKCE is required: code_challenge (43–128 characters) with code_challenge_method=S256",
                )));
            }
        }
        if get("launch").is_some() {
            return Err(fail(OAuthError::invalid_request("EHR launch is not offered; use a standalone launch")));
        }
        if get("request").is_some() || get("request_uri").is_some() {
            return Err(fail(OAuthError::new("request_not_supported", 400, "request objects are not supported")));
        }
        match get("aud") {
            Some(a) if a.trim_end_matches('/') == fhir_base.trim_end_matches('/') => {}
            Some(_) => {
                return Err(fail(OAuthError::invalid_request(format!("aud must be this FHIR server: {fhir_base}"))));
            }
            None => return Err(fail(OAuthError::invalid_request(format!("aud is required (SMART): {fhir_base}")))),
        }
        let asked = get("scope")
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| fail(OAuthError::invalid_scope("scope is required")))?;
        let scopes = ScopeSet::parse(asked).map_err(|e| fail(OAuthError::invalid_scope(e)))?;
        if let Some(bad) = scopes.iter().find(|s| s.context == Context::System) {
            return Err(fail(OAuthError::invalid_scope(format!(
                "`{bad}` is a system scope; a person cannot grant it"
            ))));
        }
        let registered = ScopeSet::parse(&client.scope).map_err(|_| fail(OAuthError::server_error()))?;
        if let Err(bad) = registered.contains_all(&scopes) {
            return Err(fail(OAuthError::invalid_scope(format!(
                "`{bad}` exceeds the scopes registered for this client"
            ))));
        }
        if scopes.iter().any(|s| s.context == Context::Patient) && !scopes.has(Special::LaunchPatient) {
            return Err(fail(OAuthError::invalid_scope("patient/ scopes need launch/patient to choose the patient")));
        }
        let nonce = get("nonce").map(str::to_string);
        if nonce.as_ref().is_some_and(|n| n.len() > 512) {
            return Err(fail(OAuthError::invalid_request("nonce is longer than 512 characters")));
        }
        let code_challenge = get("code_challenge").unwrap_or_default().to_string();
        Ok(Authorization { client, redirect_uri, scopes, state, nonce, code_challenge })
    }

    /// Issues an authorization code for an approved request. `subject` signed in with two
    /// factors at `auth_time` by the methods `amr` (RFC 8176); `patient` is the one they chose
    /// (`Patient/…`).
    #[expect(clippy::too_many_arguments, reason = "the fields of one approval")]
    pub fn issue_code(
        &self,
        a: &Authorization,
        subject: &str,
        fhir_user: Option<&str>,
        name: Option<&str>,
        patient: Option<&str>,
        auth_time: i64,
        amr: &[String],
        now: i64,
    ) -> Result<String, OAuthError> {
        if a.scopes.has(Special::LaunchPatient) && patient.is_none() {
            return Err(OAuthError::invalid_request("launch/patient needs a patient to be chosen"));
        }
        let code = random_secret()?;
        let record = CodeRecord {
            code_sha256: hash(&code),
            family: random_secret()?,
            client_id: a.client.id.clone(),
            redirect_uri: a.redirect_uri.clone(),
            scope: a.scopes.to_string(),
            subject: subject.to_string(),
            fhir_user: fhir_user.map(str::to_string),
            name: name.map(str::to_string),
            patient: if a.scopes.has(Special::LaunchPatient) { patient.map(str::to_string) } else { None },
            code_challenge: a.code_challenge.clone(),
            nonce: a.nonce.clone(),
            auth_time,
            amr: amr.to_vec(),
            expires_at: now + CODE_LIFETIME_SECS,
        };
        self.store.insert_code(&record)?;
        Ok(code)
    }

    /// The authorization-code grant for an authenticated client. `issuer` is this server's base
    /// URL (the ID token's `iss`). Returns the response and the person it is for.
    pub fn exchange_code(
        &self,
        client: &Client,
        code: &str,
        redirect_uri: Option<&str>,
        verifier: Option<&str>,
        issuer: &str,
        now: i64,
    ) -> Result<(TokenResponse, String), OAuthError> {
        let Some((c, first)) = self.store.take_code(&hash(code))? else {
            return Err(OAuthError::invalid_grant("the authorization code is not valid"));
        };
        if !first {
            self.store.revoke_family(&c.family)?;
            return Err(OAuthError::invalid_grant(
                "the authorization code was already used; the tokens issued from it are revoked",
            ));
        }
        if c.client_id != client.id {
            return Err(OAuthError::invalid_grant("the authorization code was issued to another client"));
        }
        if c.expires_at <= now {
            return Err(OAuthError::invalid_grant("the authorization code has expired"));
        }
        if redirect_uri != Some(c.redirect_uri.as_str()) {
            return Err(OAuthError::invalid_grant("redirect_uri does not match the authorization request"));
        }
        let Some(verifier) = verifier else {
            return Err(OAuthError::invalid_grant("code_verifier is required (PKCE)"));
        };
        if !pkce_matches(verifier, &c.code_challenge) {
            return Err(OAuthError::invalid_grant("code_verifier does not match the code_challenge"));
        }
        let scopes = ScopeSet::parse(&c.scope).map_err(|_| OAuthError::server_error())?;
        let mut resp = self.issue_person_tokens(
            client,
            &c.family,
            &c.subject,
            c.fhir_user.as_deref(),
            &scopes,
            &scopes,
            c.patient.as_deref(),
            None,
            now,
        )?;
        if scopes.has(Special::OpenId) {
            resp.id_token = Some(self.id_token(client, &c, &scopes, issuer, now)?);
        }
        Ok((resp, c.subject))
    }

    /// An access token with `access` scopes for a person and, when the authorization
    /// (`granted`) includes `offline_access` or `online_access`, a new refresh token carrying the
    /// whole grant (RFC 6749 §6: a rotated refresh token keeps the scope of the one it replaces).
    #[expect(clippy::too_many_arguments, reason = "the fields of one token family")]
    fn issue_person_tokens(
        &self,
        client: &Client,
        family: &str,
        subject: &str,
        fhir_user: Option<&str>,
        access: &ScopeSet,
        granted: &ScopeSet,
        patient: Option<&str>,
        refresh_expires_at: Option<i64>,
        now: i64,
    ) -> Result<TokenResponse, OAuthError> {
        let token = random_secret()?;
        let lifetime = client.token_lifetime_secs.clamp(60, 86_400);
        let record = TokenRecord {
            token_sha256: hash(&token),
            client_id: client.id.clone(),
            subject: Some(subject.to_string()),
            fhir_user: fhir_user.map(str::to_string),
            scope: access.to_string(),
            issued_at: now,
            expires_at: now.saturating_add(i64::try_from(lifetime).unwrap_or(3600)),
            revoked: false,
            patient: patient.map(str::to_string),
            family: Some(family.to_string()),
        };
        self.store.insert_token(&record)?;
        let mut resp = TokenResponse::bearer(token, lifetime, record.scope.clone());
        if granted.has(Special::OfflineAccess) || granted.has(Special::OnlineAccess) {
            let life = if granted.has(Special::OfflineAccess) { OFFLINE_LIFETIME_SECS } else { ONLINE_LIFETIME_SECS };
            let refresh = random_secret()?;
            self.store.insert_refresh(&RefreshRecord {
                sha256: hash(&refresh),
                family: family.to_string(),
                client_id: client.id.clone(),
                subject: subject.to_string(),
                fhir_user: record.fhir_user.clone(),
                scope: granted.to_string(),
                patient: record.patient.clone(),
                issued_at: now,
                expires_at: refresh_expires_at.unwrap_or(now + life),
                used: false,
                revoked: false,
            })?;
            resp.refresh_token = Some(refresh);
        }
        if let Some(p) = patient {
            resp.patient = Some(p.strip_prefix("Patient/").unwrap_or(p).to_string());
            resp.need_patient_banner = Some(true);
        }
        Ok(resp)
    }

    fn id_token(
        &self,
        client: &Client,
        c: &CodeRecord,
        scopes: &ScopeSet,
        issuer: &str,
        now: i64,
    ) -> Result<String, OAuthError> {
        let (kid, key) = self.current_signing_key(now)?;
        let mut claims = serde_json::json!({
            "iss": issuer,
            "sub": c.subject,
            "aud": client.id,
            "azp": client.id,
            "iat": now,
            "exp": now + ID_TOKEN_LIFETIME_SECS,
            "auth_time": c.auth_time,
        });
        if let Some(o) = claims.as_object_mut() {
            if let Some(n) = &c.nonce {
                o.insert("nonce".into(), n.clone().into());
            }
            if !c.amr.is_empty() {
                o.insert("amr".into(), c.amr.clone().into());
            }
            if scopes.has(Special::FhirUser)
                && let Some(fu) = &c.fhir_user
            {
                o.insert("fhirUser".into(), format!("{issuer}/fhir/{fu}").into());
            }
            if scopes.has(Special::Profile) {
                o.insert("name".into(), c.name.clone().unwrap_or_else(|| c.subject.clone()).into());
                o.insert("preferred_username".into(), c.subject.clone().into());
            }
        }
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = Some(kid);
        jsonwebtoken::encode(&header, &claims, &key).map_err(|_| OAuthError::server_error())
    }

    /// The client a refresh token was issued to, if it is one this server issued: a public
    /// client may present its refresh token without naming itself (RFC 6749 §6 requires client
    /// authentication only of confidential clients), so the token says whose it is.
    pub fn refresh_token_client(&self, refresh_token: &str) -> Result<Option<String>, OAuthError> {
        Ok(self.store.refresh_token(&hash(refresh_token))?.map(|r| r.client_id))
    }

    /// The refresh-token grant (RFC 6749 §6) with rotation: the presented token is spent and a
    /// new one (same family, same end) comes back. A spent token presented again revokes the
    /// family. Returns the response and the person it is for.
    pub fn refresh(
        &self,
        client: &Client,
        refresh_token: &str,
        scope: Option<&str>,
        now: i64,
    ) -> Result<(TokenResponse, String), OAuthError> {
        let sha = hash(refresh_token);
        let Some(r) = self.store.refresh_token(&sha)? else {
            return Err(OAuthError::invalid_grant("the refresh token is not valid"));
        };
        if r.client_id != client.id {
            return Err(OAuthError::invalid_grant("the refresh token was issued to another client"));
        }
        if r.revoked || r.expires_at <= now {
            return Err(OAuthError::invalid_grant("the refresh token has expired or was revoked"));
        }
        let reused = || -> Result<(TokenResponse, String), OAuthError> {
            self.store.revoke_family(&r.family)?;
            Err(OAuthError::invalid_grant(
                "the refresh token was already used; every token of this authorization is revoked",
            ))
        };
        if r.used {
            return reused();
        }
        let granted = ScopeSet::parse(&r.scope).map_err(|_| OAuthError::server_error())?;
        // A narrowed scope applies to this access token only; the new refresh token keeps the
        // whole grant.
        let access = match scope {
            Some(s) if !s.trim().is_empty() => {
                let asked = ScopeSet::parse(s).map_err(OAuthError::invalid_scope)?;
                granted.contains_all(&asked).map_err(|bad| {
                    OAuthError::invalid_scope(format!("`{bad}` was not granted in the authorization"))
                })?;
                asked
            }
            _ => granted.clone(),
        };
        // Spent only once the request is otherwise valid (a malformed retry must not burn it);
        // losing the race to a concurrent use is reuse too.
        if !self.store.use_refresh(&sha)? {
            return reused();
        }
        let resp = self.issue_person_tokens(
            client,
            &r.family,
            &r.subject,
            r.fhir_user.as_deref(),
            &access,
            &granted,
            r.patient.as_deref(),
            Some(r.expires_at),
            now,
        )?;
        Ok((resp, r.subject))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_rfc7636_appendix_b() {
        // RFC 7636 Appendix B.
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        assert!(pkce_matches(verifier, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"));
        assert!(!pkce_matches(
            "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXl",
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        ));
        // A verifier outside 43–128 unreserved characters never matches, whatever it hashes to.
        let short = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjX";
        let c = {
            use base64::Engine;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(short.as_bytes()))
        };
        assert!(!pkce_matches(short, &c));
    }
}
