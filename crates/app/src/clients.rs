//! Applications (クライアント): register, edit, disable, rotate their secret or keys. Every change
//! is a new version of the `client` configuration entry, attributed and audited; the token
//! service reads the newest version at each request, so a disabled client stops at once.

use mamori_oauth::{Client, ScopeSet, random_secret, sha256_hex};

use crate::ctx::{change_config, failed};
use crate::registry::ConfigKind;
use crate::{AdminAct, AppError, Ctx, Node};

/// The configuration kind of applications.
const KIND: ConfigKind = ConfigKind::Client;

/// A registration request, as a surface collected it.
#[derive(Debug, Clone, Default)]
pub struct NewClient {
    /// `client_id`: 1–64 of A–Z a–z 0–9 `-` `_` `.`.
    pub id: String,
    /// Human name.
    pub name: Option<String>,
    /// SMART scopes, space-separated.
    pub scope: String,
    /// Access-token lifetime, 60 s – 24 h.
    pub token_lifetime_secs: u64,
    /// Source addresses or CIDR blocks it may connect from (empty: any).
    pub allow_ip: Vec<String>,
    /// Information classes it may reach (empty: every class).
    pub classes: Vec<String>,
    /// Redirect URIs (an app used by people).
    pub redirect_uris: Vec<String>,
    /// Public keys for `private_key_jwt`.
    pub jwks: Option<serde_json::Value>,
}

/// A registered client and, for a confidential client with a secret, that secret — shown once.
#[derive(Debug, Clone)]
pub struct Registered {
    /// As stored.
    pub client: Client,
    /// The secret in clear; only the hash is stored.
    pub secret: Option<String>,
    /// An application with `system/` scopes is held for a second person's approval (the
    /// two-person rule): the request, if it was. The secret is shown now, once, and works only
    /// once the registration is approved.
    pub pending: Option<crate::approvals::Pending>,
}

fn valid_client_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// Whether a redirect URI may be registered (RFC 6749 §3.1.2, RFC 8252 §7): absolute, no
/// fragment; https, http only on a loopback address, or a private-use (reverse-DNS) scheme.
pub fn valid_redirect_uri(u: &str) -> Result<(), AppError> {
    let bad = |why: &str| Err(AppError::Invalid(format!("redirect URI `{u}`: {why}")));
    if u.contains('#') {
        return bad("a redirect URI must not have a fragment");
    }
    if u.len() > 1024 || u.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return bad("not a URI");
    }
    let Some((scheme, rest)) = u.split_once(':') else { return bad("not an absolute URI") };
    match scheme {
        "https" if rest.starts_with("//") && rest.len() > 2 => Ok(()),
        "http" => {
            let host = rest.trim_start_matches("//").split(['/', '?']).next().unwrap_or("");
            let host = host
                .rsplit_once(':')
                .map_or(host, |(h, p)| if p.bytes().all(|b| b.is_ascii_digit()) { h } else { host });
            if matches!(host, "127.0.0.1" | "localhost" | "[::1]") {
                Ok(())
            } else {
                bad("http is allowed only on a loopback address (127.0.0.1, [::1], localhost); use https")
            }
        }
        s if s.contains('.') && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'+')) => {
            Ok(())
        }
        _ => bad("use https, http on a loopback address, or a private-use scheme such as jp.example.app"),
    }
}

/// Checks a JWK Set: public EC (P-256/P-384) or RSA keys only.
pub fn valid_jwks(jwks: &serde_json::Value) -> Result<(), AppError> {
    mamori_oauth::assertion::validate_jwks(jwks).map(|_| ()).map_err(|e| AppError::Invalid(format!("JWK Set: {e}")))
}

impl NewClient {
    /// Every check a registration must pass, before anything is read or written.
    fn validate(&self) -> Result<ScopeSet, AppError> {
        if !valid_client_id(&self.id) {
            return Err(AppError::Invalid(format!(
                "client id `{}` must be 1–64 characters of A–Z a–z 0–9 - _ .",
                self.id
            )));
        }
        if let Some(j) = &self.jwks {
            valid_jwks(j)?;
        }
        for u in &self.redirect_uris {
            valid_redirect_uri(u)?;
        }
        let known: Vec<String> = mamori_authz::taxonomy().into_iter().map(|c| c.code).collect();
        if let Some(bad) = self.classes.iter().find(|c| !known.contains(c)) {
            return Err(AppError::Invalid(format!("class `{bad}` is not an information class ({})", known.join(", "))));
        }
        if let Some(bad) = self.allow_ip.iter().find(|c| !mamori_oauth::valid_cidr(c)) {
            return Err(AppError::Invalid(format!(
                "allowed address `{bad}` is not an address or CIDR block such as 10.1.0.0/16"
            )));
        }
        if !(60..=86_400).contains(&self.token_lifetime_secs) {
            return Err(AppError::Invalid("the token lifetime must be between 60 s and 24 h".into()));
        }
        let scopes = ScopeSet::parse(&self.scope).map_err(AppError::Invalid)?;
        if self.redirect_uris.is_empty() && scopes.iter().any(|s| s.context != mamori_oauth::Context::System) {
            return Err(AppError::Invalid(
                "patient/ and user/ scopes are granted by a person: give a redirect URI".into(),
            ));
        }
        if self.redirect_uris.is_empty() && scopes.specials().next().is_some() {
            return Err(AppError::Invalid(
                "openid, fhirUser, launch/patient and offline_access need a person: give a redirect URI".into(),
            ));
        }
        Ok(scopes)
    }
}

/// Registers an application. A public app (redirect URIs, no keys) gets no secret: it proves
/// itself with PKCE; an app with keys uses `private_key_jwt`; any other gets a secret, returned
/// once.
pub fn register(ctx: &Ctx, node: &Node, n: NewClient) -> Result<Registered, AppError> {
    ctx.authorize(node, AdminAct::ManageClients)?;
    let scopes = n.validate()?;
    let previous = node.store.config_get(KIND.name(), &n.id).map_err(AppError::from)?;
    if previous.as_ref().is_some_and(|e| e.value.is_some()) {
        return Err(AppError::Conflict(format!("client `{}` already exists", n.id)));
    }
    let secret =
        if n.jwks.is_some() || !n.redirect_uris.is_empty() { None } else { Some(random_secret().map_err(failed)?) };
    let client = Client {
        id: n.id.clone(),
        name: n.name,
        secret_sha256: secret.as_deref().map(sha256_hex),
        scope: scopes.to_string(),
        disabled: false,
        token_lifetime_secs: n.token_lifetime_secs,
        allow_ip: n.allow_ip,
        classes: n.classes,
        redirect_uris: n.redirect_uris,
        jwks: n.jwks,
    };
    let value = serde_json::to_value(&client).map_err(failed)?;
    let pending =
        match change_config(ctx, node, KIND, &n.id, Some(value), "client registered", previous.map(|e| e.version)) {
            Ok(_) => None,
            Err(AppError::Pending(p)) => Some(*p),
            Err(e) => return Err(e),
        };
    Ok(Registered { client, secret, pending })
}

/// Every registered application with its configuration version. A secret's hash is replaced by
/// an empty string: it says only that the client has a secret.
pub fn list(ctx: &Ctx, node: &Node) -> Result<Vec<(Client, u64)>, AppError> {
    ctx.authorize(node, AdminAct::ManageClients)?;
    let mut out = Vec::new();
    for e in node.store.config_current(KIND.name()).map_err(AppError::from)? {
        let mut c: Client = serde_json::from_value(e.value.unwrap_or_default()).map_err(failed)?;
        c.secret_sha256 = c.secret_sha256.map(|_| String::new());
        out.push((c, e.version));
    }
    Ok(out)
}

/// One application's versions, oldest first: `(version, time µs, by, reason, value)` with the
/// secret's hash removed from every value.
pub fn history(ctx: &Ctx, node: &Node, id: &str) -> Result<Vec<mamori_store_sql::ConfigEntry>, AppError> {
    ctx.authorize(node, AdminAct::ManageClients)?;
    let mut history = node.store.config_history(KIND.name(), id).map_err(AppError::from)?;
    if history.is_empty() {
        return Err(AppError::NotFound(format!("no client `{id}`")));
    }
    for h in &mut history {
        if let Some(o) = h.value.as_mut().and_then(serde_json::Value::as_object_mut) {
            o.remove("secret_sha256");
        }
    }
    Ok(history)
}

/// Changes a registered client, refusing if it was changed meanwhile.
fn edit(
    ctx: &Ctx,
    node: &Node,
    id: &str,
    reason: &str,
    change: impl FnOnce(&mut Client) -> Result<(), AppError>,
) -> Result<Client, AppError> {
    ctx.authorize(node, AdminAct::ManageClients)?;
    let cur = node
        .store
        .config_get(KIND.name(), id)
        .map_err(failed)?
        .filter(|e| e.value.is_some())
        .ok_or_else(|| AppError::NotFound(format!("no client `{id}`")))?;
    let mut c: Client = serde_json::from_value(cur.value.clone().unwrap_or_default()).map_err(failed)?;
    change(&mut c)?;
    let value = serde_json::to_value(&c).map_err(failed)?;
    change_config(ctx, node, KIND, id, Some(value), reason, Some(cur.version))?;
    Ok(c)
}

/// Disables an application: it gets no tokens, and its tokens stop working.
pub fn disable(ctx: &Ctx, node: &Node, id: &str) -> Result<(), AppError> {
    edit(ctx, node, id, "client disabled", |c| {
        if c.disabled {
            return Err(AppError::Conflict(format!("client `{id}` is already disabled")));
        }
        c.disabled = true;
        Ok(())
    })
    .map(|_| ())
}

/// Enables a disabled application again.
pub fn enable(ctx: &Ctx, node: &Node, id: &str) -> Result<(), AppError> {
    edit(ctx, node, id, "client enabled", |c| {
        if !c.disabled {
            return Err(AppError::Conflict(format!("client `{id}` is not disabled")));
        }
        c.disabled = false;
        Ok(())
    })
    .map(|_| ())
}

/// Replaces a `private_key_jwt` client's public keys.
pub fn rotate_jwks(ctx: &Ctx, node: &Node, id: &str, jwks: serde_json::Value) -> Result<(), AppError> {
    valid_jwks(&jwks)?;
    edit(ctx, node, id, "client keys rotated (JWK Set replaced)", |c| {
        if c.jwks.is_none() {
            return Err(AppError::Invalid(format!("client `{id}` uses a secret, not private_key_jwt")));
        }
        c.jwks = Some(jwks);
        Ok(())
    })
    .map(|_| ())
}

/// Gives a confidential client a new secret, returned once; the old one stops working at once.
pub fn rotate_secret(ctx: &Ctx, node: &Node, id: &str) -> Result<String, AppError> {
    let secret = random_secret().map_err(failed)?;
    let hash = sha256_hex(&secret);
    edit(ctx, node, id, "client secret rotated", |c| {
        if c.secret_sha256.is_none() {
            return Err(AppError::Invalid(format!("client `{id}` has no secret (a public client, or one with keys)")));
        }
        c.secret_sha256 = Some(hash);
        Ok(())
    })?;
    Ok(secret)
}
