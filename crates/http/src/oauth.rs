//! The token, introspection and revocation endpoints, discovery (RFC 8414, OpenID Connect
//! Discovery, SMART configuration) and the JWKS. Errors in RFC 6749 §5.2 form; every token
//! issued or refused, introspected or revoked is audited.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use mamori_oauth::{ClientAuth, ClientCredential, OAuthError};
use serde_json::json;

use crate::AppState;

const MAX_FORM: usize = 16 * 1024;

fn error(e: &OAuthError) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
    let mut r = (status, axum::Json(json!({"error": e.error, "error_description": e.description}))).into_response();
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if status == StatusCode::UNAUTHORIZED {
        h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"mamori\""));
    }
    if status == StatusCode::SERVICE_UNAVAILABLE {
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    r
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        match c {
            b'+' => out.push(b' '),
            b'%' => {
                let h = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(h, 16).ok()?);
                i += 2;
            }
            _ => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

pub(crate) fn parse_form(body: &[u8]) -> Result<Vec<(String, String)>, OAuthError> {
    let s = std::str::from_utf8(body).map_err(|_| OAuthError::invalid_request("the form is not UTF-8"))?;
    let mut out: Vec<(String, String)> = Vec::new();
    for pair in s.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (k, v) = (
            percent_decode(k).ok_or_else(|| OAuthError::invalid_request("malformed form encoding"))?,
            percent_decode(v).ok_or_else(|| OAuthError::invalid_request("malformed form encoding"))?,
        );
        // RFC 6749 §3.2: parameters must not be repeated.
        if out.iter().any(|(ek, _)| *ek == k) {
            return Err(OAuthError::invalid_request(format!("parameter `{k}` is repeated")));
        }
        out.push((k, v));
    }
    Ok(out)
}

fn basic_auth(headers: &HeaderMap) -> Result<Option<ClientAuth>, OAuthError> {
    let Some(v) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let s = v.to_str().map_err(|_| OAuthError::invalid_client())?;
    let Some(b64) = s.strip_prefix("Basic ") else {
        return Err(OAuthError::invalid_client());
    };
    let raw = base64::engine::general_purpose::STANDARD.decode(b64.trim()).map_err(|_| OAuthError::invalid_client())?;
    let raw = String::from_utf8(raw).map_err(|_| OAuthError::invalid_client())?;
    let (id, secret) = raw.split_once(':').ok_or_else(OAuthError::invalid_client)?;
    // RFC 6749 §2.3.1: both parts are form-urlencoded.
    Ok(Some(ClientAuth {
        id: percent_decode(id).ok_or_else(OAuthError::invalid_client)?,
        secret: percent_decode(secret).ok_or_else(OAuthError::invalid_client)?,
    }))
}

/// Client authentication (RFC 6749 §2.3.1): HTTP Basic or form fields, not both.
fn client_auth(headers: &HeaderMap, form: &[(String, String)]) -> Result<ClientAuth, OAuthError> {
    let get = |k: &str| form.iter().find(|(fk, _)| fk == k).map(|(_, v)| v.clone());
    let header_auth = basic_auth(headers)?;
    let post_auth = match (get("client_id"), get("client_secret")) {
        (Some(id), Some(secret)) => Some(ClientAuth { id, secret }),
        _ => None,
    };
    match (header_auth, post_auth) {
        (Some(_), Some(_)) => Err(OAuthError::invalid_request("use one client authentication method, not two")),
        (Some(a), None) | (None, Some(a)) => Ok(a),
        (None, None) => Err(OAuthError::invalid_client()),
    }
}

/// How the client authenticates (RFC 6749 §2.3, RFC 7523, RFC 7636 public clients): exactly one
/// method. The client id is kept for the audit entry.
fn credential(
    headers: &HeaderMap,
    form: &[(String, String)],
    client: &mut Option<String>,
) -> Result<ClientCredential, OAuthError> {
    let get = |k: &str| form.iter().find(|(fk, _)| fk == k).map(|(_, v)| v.clone());
    let cred = match (get("client_assertion"), get("client_assertion_type")) {
        (Some(jwt), Some(kind)) => {
            if basic_auth(headers)?.is_some() || get("client_secret").is_some() {
                return Err(OAuthError::invalid_request("use one client authentication method, not two"));
            }
            *client = mamori_oauth::assertion::claimed_client(&jwt).ok();
            ClientCredential::Assertion { kind, jwt }
        }
        (Some(_), None) | (None, Some(_)) => {
            return Err(OAuthError::invalid_request("client_assertion and client_assertion_type go together"));
        }
        (None, None) => match (basic_auth(headers)?, get("client_secret")) {
            (None, None) => {
                let id = get("client_id").ok_or_else(OAuthError::invalid_client)?;
                *client = Some(id.chars().take(64).collect());
                ClientCredential::Public(id)
            }
            _ => {
                let auth = client_auth(headers, form)?;
                *client = Some(auth.id.chars().take(64).collect());
                ClientCredential::Secret(auth)
            }
        },
    };
    // A client_id beside another method must name the same client.
    if let (Some(id), Some(c)) = (get("client_id"), client.as_ref())
        && !matches!(cred, ClientCredential::Public(_))
        && id != *c
    {
        return Err(OAuthError::invalid_client());
    }
    Ok(cred)
}

async fn read_form(headers: &HeaderMap, body: Body) -> Result<Vec<(String, String)>, OAuthError> {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !ct.starts_with("application/x-www-form-urlencoded") {
        return Err(OAuthError::invalid_request("the request must be application/x-www-form-urlencoded"));
    }
    let bytes =
        axum::body::to_bytes(body, MAX_FORM).await.map_err(|_| OAuthError::invalid_request("the form is too large"))?;
    parse_form(&bytes)
}

fn audit_record(
    action: &str,
    client: Option<String>,
    outcome: mamori_audit::Outcome,
    detail: String,
    status: u16,
) -> mamori_audit::AuditRecord {
    mamori_audit::AuditRecord {
        detail: Some(detail),
        status: Some(status),
        ..mamori_audit::AuditRecord::new(
            action,
            mamori_audit::AuditActor {
                client_id: client.clone(),
                fhir_user: None,
                id: client.unwrap_or_default(),
                kind: mamori_audit::ActorKind::Client,
            },
            outcome,
            "TREAT",
        )
    }
}

/// The shared prelude of introspection and revocation: the form, client authentication (the
/// client id is kept for the audit entry) and the required `token`.
async fn token_request(
    s: &AppState,
    headers: &HeaderMap,
    body: Body,
    client: &mut Option<String>,
    path: &str,
) -> Result<(mamori_oauth::Client, String), OAuthError> {
    let form = read_form(headers, body).await?;
    let cred = credential(headers, &form, client)?;
    let token = form
        .iter()
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.clone())
        .ok_or_else(|| OAuthError::invalid_request("`token` is required"))?;
    let oauth = s.oauth.clone();
    let audiences = assertion_audiences(s, path);
    let clock = s.enforcer.clock().clone();
    let c = tokio::task::spawn_blocking(move || oauth.authenticate_client(&cred, &audiences, now_secs(&clock)))
        .await
        .map_err(|_| OAuthError::server_error())??;
    Ok((c, token))
}

/// What a client assertion's `aud` may name when posted to `path`: the endpoint being called,
/// the token endpoint, or the issuer identifier (RFC 7523 §3 leaves the value to the server;
/// current advice for `private_key_jwt` is the issuer, and Keycloak and others accept the
/// endpoint called).
fn assertion_audiences(s: &AppState, path: &str) -> Vec<String> {
    let base = &s.config.public_url;
    let mut v = vec![format!("{base}{path}"), format!("{base}/oauth/token"), base.clone()];
    v.dedup();
    v
}

/// Seconds now, by the node's one clock.
fn now_secs(clock: &std::sync::Arc<dyn mamori_records::Clock>) -> i64 {
    clock.now().0.div_euclid(1_000_000)
}

/// How a refused OAuth request is recorded: failed client authentication is a denial.
fn refused(e: &OAuthError) -> (mamori_audit::Outcome, String, u16) {
    let outcome = if e.status == 401 { mamori_audit::Outcome::Denied } else { mamori_audit::Outcome::Failure };
    (outcome, e.error.to_string(), e.status)
}

fn ok_json(v: serde_json::Value) -> Response {
    let mut r = (StatusCode::OK, axum::Json(v)).into_response();
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// `POST /oauth/introspect` (RFC 7662): client authentication required; a client sees only its
/// own tokens as active. Audited.
pub async fn introspect(
    State(s): State<AppState>,
    rid: Option<axum::Extension<crate::RequestId>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut client = None;
    let result = async {
        let (c, token) = token_request(&s, &headers, body, &mut client, "/oauth/introspect").await?;
        let oauth = s.oauth.clone();
        let now = now_secs(s.enforcer.clock());
        tokio::task::spawn_blocking(move || oauth.introspect_for(&c, &token, now))
            .await
            .map_err(|_| OAuthError::server_error())?
    }
    .await;
    let (outcome, detail, status) = match &result {
        Ok(Some(_)) => (mamori_audit::Outcome::Success, "active".to_string(), 200),
        Ok(None) => (mamori_audit::Outcome::Success, "inactive".to_string(), 200),
        Err(e) => refused(e),
    };
    let mut rec = audit_record("introspect", client, outcome, detail, status);
    rec.request_id = rid.map(|r| r.0.0.clone());
    if crate::audit::append(&s, rec).await.is_err() {
        return error(&OAuthError::server_error());
    }
    match result {
        Ok(Some(t)) => {
            let mut v = serde_json::json!({
                "active": true, "scope": t.scope, "client_id": t.client_id, "token_type": "Bearer",
                "exp": t.expires_at, "iat": t.issued_at, "iss": s.config.public_url,
            });
            if let (Some(sub), Some(o)) = (&t.subject, v.as_object_mut()) {
                o.insert("sub".into(), sub.clone().into());
                o.insert("username".into(), sub.clone().into());
            }
            if let (Some(fu), Some(o)) = (&t.fhir_user, v.as_object_mut()) {
                o.insert("fhirUser".into(), fu.clone().into());
            }
            if let (Some(p), Some(o)) = (&t.patient, v.as_object_mut()) {
                o.insert("patient".into(), p.strip_prefix("Patient/").unwrap_or(p).into());
            }
            ok_json(v)
        }
        Ok(None) => ok_json(serde_json::json!({"active": false})),
        Err(e) => error(&e),
    }
}

/// `POST /oauth/revoke` (RFC 7009): client authentication required; 200 whether or not the token
/// existed; only the client's own tokens are revoked. Audited.
pub async fn revoke(
    State(s): State<AppState>,
    rid: Option<axum::Extension<crate::RequestId>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut client = None;
    let result = async {
        let (c, token) = token_request(&s, &headers, body, &mut client, "/oauth/revoke").await?;
        let oauth = s.oauth.clone();
        tokio::task::spawn_blocking(move || oauth.revoke_for(&c, &token))
            .await
            .map_err(|_| OAuthError::server_error())?
    }
    .await;
    let (outcome, detail, status) = match &result {
        Ok(true) => (mamori_audit::Outcome::Success, "revoked".to_string(), 200),
        Ok(false) => (mamori_audit::Outcome::Success, "nothing to revoke".to_string(), 200),
        Err(e) => refused(e),
    };
    let mut rec = audit_record("revoke", client, outcome, detail, status);
    rec.request_id = rid.map(|r| r.0.0.clone());
    if crate::audit::append(&s, rec).await.is_err() {
        return error(&OAuthError::server_error());
    }
    match result {
        Ok(_) => ok_json(serde_json::json!({})),
        Err(e) => error(&e),
    }
}

const SCOPES: [&str; 16] = [
    "openid",
    "fhirUser",
    "profile",
    "launch/patient",
    "offline_access",
    "online_access",
    "patient/*.rs",
    "patient/*.cruds",
    "user/*.rs",
    "user/*.cruds",
    "system/*.rs",
    "system/*.cruds",
    "patient/*.read",
    "user/*.read",
    "user/*.write",
    "system/*.read",
];

const AUTH_METHODS: [&str; 4] = ["client_secret_basic", "client_secret_post", "private_key_jwt", "none"];

/// The authorization-server metadata shared by RFC 8414 and OpenID Connect Discovery.
fn server_metadata(s: &AppState) -> serde_json::Value {
    let base = &s.config.public_url;
    serde_json::json!({
        "issuer": base,
        "authorization_endpoint": format!("{base}/oauth/authorize"),
        "token_endpoint": format!("{base}/oauth/token"),
        "jwks_uri": format!("{base}/oauth/jwks"),
        "introspection_endpoint": format!("{base}/oauth/introspect"),
        "revocation_endpoint": format!("{base}/oauth/revoke"),
        "userinfo_endpoint": format!("{base}/oauth/userinfo"),
        "end_session_endpoint": format!("{base}/oauth/logout"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "token_endpoint_auth_methods_supported": AUTH_METHODS,
        "token_endpoint_auth_signing_alg_values_supported": mamori_oauth::assertion::ALGORITHMS,
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt"],
        "revocation_endpoint_auth_methods_supported": AUTH_METHODS,
        "scopes_supported": SCOPES,
        "claims_supported": ["iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "azp", "amr", "fhirUser", "name", "preferred_username"],
        "code_challenge_methods_supported": ["S256"],
        "authorization_response_iss_parameter_supported": true,
        "ui_locales_supported": ["ja", "en"],
    })
}

/// `GET /.well-known/oauth-authorization-server` (RFC 8414).
pub async fn metadata(State(s): State<AppState>) -> Response {
    axum::Json(server_metadata(&s)).into_response()
}

/// `GET /.well-known/openid-configuration` (OpenID Connect Discovery 1.0).
pub async fn openid_configuration(State(s): State<AppState>) -> Response {
    axum::Json(server_metadata(&s)).into_response()
}

/// `GET /oauth/jwks`: the ID-token verification keys (public only), the signing key and those
/// retired within the overlap.
pub async fn jwks(State(s): State<AppState>) -> Response {
    let oauth = s.oauth.clone();
    let clock = s.enforcer.clock().clone();
    match tokio::task::spawn_blocking(move || oauth.jwks(now_secs(&clock))).await {
        Ok(Ok(v)) => {
            let mut r = (StatusCode::OK, axum::Json(v)).into_response();
            r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/jwk-set+json"));
            r
        }
        _ => error(&OAuthError::server_error()),
    }
}

/// `GET /fhir/.well-known/smart-configuration`: SMART App Launch 2.x discovery.
pub async fn smart_configuration(State(s): State<AppState>) -> Response {
    let base = &s.config.public_url;
    axum::Json(serde_json::json!({
        "issuer": base,
        "jwks_uri": format!("{base}/oauth/jwks"),
        "authorization_endpoint": format!("{base}/oauth/authorize"),
        "token_endpoint": format!("{base}/oauth/token"),
        "introspection_endpoint": format!("{base}/oauth/introspect"),
        "revocation_endpoint": format!("{base}/oauth/revoke"),
        "management_endpoint": format!("{base}/account"),
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "response_types_supported": ["code"],
        "token_endpoint_auth_methods_supported": AUTH_METHODS,
        "token_endpoint_auth_signing_alg_values_supported": mamori_oauth::assertion::ALGORITHMS,
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": SCOPES,
        "capabilities": [
            "launch-standalone",
            "client-public",
            "client-confidential-symmetric",
            "client-confidential-asymmetric",
            "context-standalone-patient",
            "context-banner",
            "sso-openid-connect",
            "permission-offline",
            "permission-online",
            "permission-patient",
            "permission-user",
            "permission-v1",
            "permission-v2",
            "authorize-post",
        ],
        "code_challenge_methods_supported": ["S256"],
    }))
    .into_response()
}

/// `POST /oauth/token`. Every issued or refused token is audited (never the secret); if the
/// audit entry cannot be written the client gets `server_error` instead of a token.
pub async fn token(
    State(s): State<AppState>,
    rid: Option<axum::Extension<crate::RequestId>>,
    peer: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut client = None;
    let source = peer.as_ref().map(|p| p.0.0.ip());
    let mut person = None;
    let result = token_inner(&s, headers, body, &mut client, &mut person, source).await;
    let (outcome, detail, status) = match &result {
        Ok((_, scope, grant)) => (mamori_audit::Outcome::Success, format!("{grant}: granted {scope}"), 200),
        Err(e) => refused(e),
    };
    let patients = match &result {
        Ok((_, _, _)) => person.as_ref().and_then(|(_, p)| p.clone()).into_iter().collect(),
        Err(_) => Vec::new(),
    };
    let record = mamori_audit::AuditRecord {
        action: "token".into(),
        actor: mamori_audit::AuditActor {
            client_id: client.clone(),
            fhir_user: None,
            id: person.as_ref().map(|(u, _)| u.clone()).or_else(|| client.clone()).unwrap_or_default(),
            kind: if person.is_some() { mamori_audit::ActorKind::User } else { mamori_audit::ActorKind::Client },
        },
        detail: Some(detail),
        outcome,
        patients,
        purpose: "TREAT".into(),
        query: None,
        request_id: rid.map(|r| r.0.0.clone()),
        resources: vec!["/oauth/token".into()],
        source: peer.map(|p| p.0.0.ip().to_string()),
        status: Some(status),
        time: String::new(),
        v: 1,
        window: None,
    };
    match crate::audit::append(&s, record).await {
        Ok(()) => {}
        Err(_) => {
            tracing::error!("audit append failed at the token endpoint; refusing");
            return error(&OAuthError::server_error());
        }
    }
    match result {
        Ok((r, _, _)) => r,
        Err(e) => error(&e),
    }
}

/// A refresh request that names no client at all (the official SMART JavaScript client's
/// default for a public client): the client the refresh token was issued to. It is then
/// authenticated as any public client is — a confidential client's token still needs its
/// credentials, and a token this server did not issue is refused as before.
async fn refresh_by_public_client(
    s: &AppState,
    headers: &HeaderMap,
    form: &[(String, String)],
    grant: &str,
) -> Result<Option<String>, OAuthError> {
    let has = |k: &str| form.iter().any(|(fk, _)| fk == k);
    let names_client = headers.contains_key(header::AUTHORIZATION)
        || ["client_id", "client_secret", "client_assertion", "client_assertion_type"].iter().any(|k| has(k));
    let token = form.iter().find(|(k, _)| k == "refresh_token").map(|(_, v)| v.clone());
    let (false, "refresh_token", Some(token)) = (names_client, grant, token) else { return Ok(None) };
    let oauth = s.oauth.clone();
    match tokio::task::spawn_blocking(move || oauth.refresh_token_client(&token)).await {
        Ok(Ok(Some(id))) => Ok(Some(id)),
        Ok(Ok(None)) => Err(OAuthError::invalid_client()),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(OAuthError::server_error()),
    }
}

async fn token_inner(
    s: &AppState,
    headers: HeaderMap,
    body: Body,
    client: &mut Option<String>,
    person: &mut Option<(String, Option<String>)>,
    source: Option<std::net::IpAddr>,
) -> Result<(Response, String, &'static str), OAuthError> {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !ct.starts_with("application/x-www-form-urlencoded") {
        return Err(OAuthError::invalid_request("the token request must be application/x-www-form-urlencoded"));
    }
    let bytes =
        axum::body::to_bytes(body, MAX_FORM).await.map_err(|_| OAuthError::invalid_request("the form is too large"))?;
    let form = parse_form(&bytes)?;
    let get = |k: &str| form.iter().find(|(fk, _)| fk == k).map(|(_, v)| v.clone());
    let grant: &'static str = match get("grant_type").as_deref() {
        Some("client_credentials") => "client_credentials",
        Some("authorization_code") => "authorization_code",
        Some("refresh_token") => "refresh_token",
        Some(other) => {
            return Err(OAuthError::unsupported_grant_type(format!(
                "grant type `{}` is not supported",
                other.chars().take(64).collect::<String>()
            )));
        }
        None => return Err(OAuthError::invalid_request("`grant_type` is required")),
    };
    let cred = match refresh_by_public_client(s, &headers, &form, grant).await? {
        Some(id) => {
            *client = Some(id.chars().take(64).collect());
            ClientCredential::Public(id)
        }
        None => credential(&headers, &form, client)?,
    };
    let oauth = s.oauth.clone();
    let now = now_secs(s.enforcer.clock());
    let endpoint = assertion_audiences(s, "/oauth/token");
    let issuer = s.config.public_url.clone();
    let (resp, subject) = tokio::task::spawn_blocking(move || {
        let get = |k: &str| form.iter().find(|(fk, _)| fk == k).map(|(_, v)| v.clone());
        let c = oauth.authenticate_client(&cred, &endpoint, now)?;
        match grant {
            "client_credentials" => {
                oauth.issue_client_token(&c, get("scope").as_deref(), now, source).map(|r| (r, None))
            }
            _ if !c.allows_source(source) => {
                Err(OAuthError::unauthorized_client("this client may not connect from this address"))
            }
            "authorization_code" => {
                let code = get("code").ok_or_else(|| OAuthError::invalid_request("`code` is required"))?;
                oauth
                    .exchange_code(
                        &c,
                        &code,
                        get("redirect_uri").as_deref(),
                        get("code_verifier").as_deref(),
                        &issuer,
                        now,
                    )
                    .map(|(r, u)| (r, Some(u)))
            }
            _ => {
                let rt =
                    get("refresh_token").ok_or_else(|| OAuthError::invalid_request("`refresh_token` is required"))?;
                oauth.refresh(&c, &rt, get("scope").as_deref(), now).map(|(r, u)| (r, Some(u)))
            }
        }
    })
    .await
    .map_err(|_| OAuthError::server_error())??;
    if let Some(user) = subject {
        *person = Some((user.clone(), resp.patient.as_ref().map(|p| format!("Patient/{p}"))));
        // A person's tokens exist only while their account is active.
        let active = matches!(
            s.identity.account(&user),
            Ok(Some(a)) if a.status == mamori_identity::account::Status::Active
        );
        if !active {
            let oauth = s.oauth.clone();
            let (access, refresh) = (resp.access_token.clone(), resp.refresh_token.clone());
            let _ = tokio::task::spawn_blocking(move || {
                let _ = oauth.revoke(&access);
                if let Some(r) = refresh {
                    let _ = oauth.revoke(&r);
                }
            })
            .await;
            return Err(OAuthError::invalid_grant("the account is not active"));
        }
    }
    let scope = resp.scope.clone();
    let mut r = (StatusCode::OK, axum::Json(resp)).into_response();
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r.headers_mut().insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    Ok((r, scope, grant))
}

/// `application/x-www-form-urlencoded` encoding of one value.
pub(crate) fn form_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
