//! The client-credentials grant at `/oauth/token` as an outside client sees it.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine;

use crate::support::{Harness, SECRET};

fn form(body: &str, basic: Option<(&str, &str)>) -> Request<Body> {
    let mut b = Request::builder()
        .method("POST")
        .uri("/oauth/token")
        .header("content-type", "application/x-www-form-urlencoded");
    if let Some((id, secret)) = basic {
        let v = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"));
        b = b.header("authorization", format!("Basic {v}"));
    }
    b.body(Body::from(body.to_string())).unwrap()
}

#[tokio::test]
async fn client_credentials_issue_tokens_within_registered_scopes() {
    let h = Harness::new();
    crate::support::register_client(&h.node, "lab", "system/Observation.cruds system/Patient.rs");
    let r = h.send(form("grant_type=client_credentials&scope=system%2FObservation.rs", Some(("lab", SECRET)))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    let j = r.json();
    assert_eq!(j["token_type"], "Bearer");
    assert_eq!(j["scope"], "system/Observation.rs");
    assert_eq!(j["expires_in"], 900);
    let token = j["access_token"].as_str().unwrap().to_string();
    assert!(token.len() >= 43);

    // client_secret_post works too; without a scope the registered scopes are granted.
    let r = h.send(form(&format!("grant_type=client_credentials&client_id=lab&client_secret={SECRET}"), None)).await;
    assert_eq!(r.json()["scope"], "system/Observation.cruds system/Patient.rs");

    let r = h.send(form("grant_type=client_credentials&scope=system%2FPatient.cruds", Some(("lab", SECRET)))).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["error"], "invalid_scope");
    let r = h.send(form("grant_type=client_credentials&scope=patient%2FObservation.rs", Some(("lab", SECRET)))).await;
    assert_eq!(r.json()["error"], "invalid_scope");
    let r = h.send(form("grant_type=client_credentials&scope=nonsense", Some(("lab", SECRET)))).await;
    assert_eq!(r.json()["error"], "invalid_scope");

    // The token works for what it allows and nothing else.
    let get = |uri: &str, t: &str| {
        Request::builder().uri(uri).header("authorization", format!("Bearer {t}")).body(Body::empty()).unwrap()
    };
    assert_eq!(h.send(get("/fhir/Observation/x", &token)).await.status, StatusCode::NOT_FOUND);
    assert_eq!(h.send(get("/fhir/Patient/x", &token)).await.status, StatusCode::FORBIDDEN);

    // Revocation and disabling take effect at once.
    h.node.oauth.revoke(&token).unwrap();
    assert_eq!(h.send(get("/fhir/Observation/x", &token)).await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn token_endpoint_errors_are_oauth_json() {
    let h = Harness::new();
    let cases: Vec<(Request<Body>, StatusCode, &str)> = vec![
        (
            form("grant_type=client_credentials", Some(("test-app", "wrong"))),
            StatusCode::UNAUTHORIZED,
            "invalid_client",
        ),
        (form("grant_type=client_credentials", Some(("nobody", SECRET))), StatusCode::UNAUTHORIZED, "invalid_client"),
        (form("grant_type=client_credentials", None), StatusCode::UNAUTHORIZED, "invalid_client"),
        (
            form("grant_type=password&username=a&password=b", Some(("test-app", SECRET))),
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
        ),
        (form("scope=system%2F*.rs", Some(("test-app", SECRET))), StatusCode::BAD_REQUEST, "invalid_request"),
        (
            form("grant_type=client_credentials&grant_type=client_credentials", Some(("test-app", SECRET))),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            form(
                &format!("grant_type=client_credentials&client_id=test-app&client_secret={SECRET}"),
                Some(("test-app", SECRET)),
            ),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            form("grant_type=client_credentials&%zz=1", Some(("test-app", SECRET))),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
    ];
    for (req, status, error) in cases {
        let r = h.send(req).await;
        assert_eq!(r.status, status, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.json()["error"], error);
        assert!(r.json()["error_description"].is_string());
    }
    let json_body = Request::builder()
        .method("POST")
        .uri("/oauth/token")
        .header("content-type", "application/json")
        .body(Body::from("{}"))
        .unwrap();
    assert_eq!(h.send(json_body).await.json()["error"], "invalid_request");

    // A disabled client gets nothing, and its tokens stop working.
    let mut c: mamori_oauth::Client =
        serde_json::from_value(h.node.store.config_get("client", "test-app").unwrap().unwrap().value.unwrap()).unwrap();
    c.disabled = true;
    let v = h.node.store.config_get("client", "test-app").unwrap().unwrap().version;
    h.node
        .store
        .change_config(&mamori_store_sql::ConfigChange {
            kind: "client",
            key: "test-app",
            value: Some(serde_json::to_value(&c).unwrap()),
            changed_by: "operator:test",
            reason: "test",
            expected_version: Some(v),
            now_micros: 0,
        })
        .unwrap();
    let r = h.send(form("grant_type=client_credentials", Some(("test-app", SECRET)))).await;
    assert_eq!(r.json()["error"], "invalid_client");
    assert_eq!(h.call("GET", "/fhir/Patient/x", None).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(h.node.store.config_history("client", "test-app").unwrap().len(), 2, "every change is a version");

    // A newer version written around the configuration path (no seal) that enables the client
    // again does not revive its tokens: the bearer check reads the client with its token in one
    // statement and still serves only the newest sealed version.
    let db = crate::support::RawDb::at(h.dir.path());
    db.exec_both(
        "INSERT INTO config_versions (kind, key, version, value, changed_by, changed_at, reason) \
         SELECT kind, key, version + 1, REPLACE(value, '\"disabled\":true', '\"disabled\":false'), 'nobody', 0, 'x' \
         FROM config_versions WHERE kind = 'client' AND key = 'test-app' AND version = 2",
    )
    .unwrap();
    assert_eq!(db.int("SELECT COUNT(*) FROM config_versions WHERE kind = 'client' AND key = 'test-app'"), 3);
    assert_eq!(
        db.int("SELECT COUNT(*) FROM config_versions WHERE kind = 'client' AND key = 'test-app' AND version = 3 AND value LIKE '%\"disabled\":false%'"),
        1,
        "the forged version enables the client"
    );
    assert_eq!(h.call("GET", "/fhir/Patient/x", None).await.status, StatusCode::UNAUTHORIZED);
}

fn post_form(uri: &str, body: &str, basic: Option<(&str, &str)>, peer: Option<&str>) -> Request<Body> {
    let mut r = form(body, basic);
    *r.uri_mut() = uri.parse().unwrap();
    if let Some(p) = peer {
        r.extensions_mut().insert(axum::extract::ConnectInfo(p.parse::<std::net::SocketAddr>().unwrap()));
    }
    r
}

#[tokio::test]
async fn introspection_and_revocation_show_and_touch_only_the_clients_own_tokens() {
    let h = Harness::new();
    crate::support::register_client(&h.node, "other", "system/Patient.rs");
    let other_token = h.token_for("other", "system/Patient.rs");
    let mine = h.token.clone();

    let r = h.send(post_form("/oauth/introspect", &format!("token={mine}"), Some(("test-app", SECRET)), None)).await;
    assert_eq!(r.status, StatusCode::OK);
    let j = r.json();
    assert_eq!(j["active"], true);
    assert_eq!(j["client_id"], "test-app");
    assert_eq!(j["scope"], "system/*.cruds");
    assert!(j["exp"].as_i64().unwrap() > crate::support::now_secs());
    let r =
        h.send(post_form("/oauth/introspect", &format!("token={other_token}"), Some(("test-app", SECRET)), None)).await;
    assert_eq!(r.json(), serde_json::json!({"active": false}), "another client's token is not disclosed");
    let r = h.send(post_form("/oauth/introspect", "token=forged", Some(("test-app", SECRET)), None)).await;
    assert_eq!(r.json()["active"], false);
    let r = h.send(post_form("/oauth/introspect", &format!("token={mine}"), None, None)).await;
    assert_eq!((r.status, r.json()["error"].clone()), (StatusCode::UNAUTHORIZED, "invalid_client".into()));
    let r = h.send(post_form("/oauth/introspect", "", Some(("test-app", SECRET)), None)).await;
    assert_eq!(r.json()["error"], "invalid_request");

    // Revoking another client's token does nothing (but answers 200, as RFC 7009 asks).
    let r = h.send(post_form("/oauth/revoke", &format!("token={other_token}"), Some(("test-app", SECRET)), None)).await;
    assert_eq!(r.status, StatusCode::OK);
    let get = |t: &str| {
        Request::builder()
            .uri("/fhir/Patient/x")
            .header("authorization", format!("Bearer {t}"))
            .body(Body::empty())
            .unwrap()
    };
    assert_eq!(h.send(get(&other_token)).await.status, StatusCode::NOT_FOUND, "still valid");
    let r = h
        .send(post_form(
            "/oauth/revoke",
            &format!("token={mine}&token_type_hint=access_token"),
            Some(("test-app", SECRET)),
            None,
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(h.send(get(&mine)).await.status, StatusCode::UNAUTHORIZED, "revoked tokens stop working at once");
    let r = h.send(post_form("/oauth/introspect", &format!("token={mine}"), Some(("test-app", SECRET)), None)).await;
    assert_eq!(r.json()["active"], false);

    let recs: Vec<mamori_audit::AuditRecord> =
        mamori_audit::AuditLog::query(&*h.node.store, &mamori_audit::EntryQuery::default())
            .unwrap()
            .iter()
            .map(|(_, e)| serde_json::from_slice(e).unwrap())
            .collect();
    assert!(recs.iter().any(|r| r.action == "introspect" && r.detail.as_deref() == Some("active")));
    assert!(recs.iter().any(|r| r.action == "revoke" && r.detail.as_deref() == Some("revoked")));
    assert!(recs.iter().any(|r| r.action == "revoke" && r.detail.as_deref() == Some("nothing to revoke")));
}

#[tokio::test]
async fn discovery_lists_what_exists() {
    let h = Harness::new();
    let r =
        h.send(Request::builder().uri("/.well-known/oauth-authorization-server").body(Body::empty()).unwrap()).await;
    assert_eq!(r.status, StatusCode::OK);
    let m = r.json();
    assert_eq!(m["issuer"], "http://mamori.test");
    assert_eq!(m["introspection_endpoint"], "http://mamori.test/oauth/introspect");
    assert_eq!(m["revocation_endpoint"], "http://mamori.test/oauth/revoke");
    assert_eq!(m["code_challenge_methods_supported"], serde_json::json!(["S256"]));
    let r = h.send(Request::builder().uri("/fhir/.well-known/smart-configuration").body(Body::empty()).unwrap()).await;
    assert_eq!(r.status, StatusCode::OK, "no token needed");
    let caps = r.json()["capabilities"].clone();
    assert!(caps.as_array().unwrap().contains(&"permission-v2".into()));
    for c in [
        "launch-standalone",
        "client-public",
        "client-confidential-asymmetric",
        "context-standalone-patient",
        "permission-v1",
        "sso-openid-connect",
    ] {
        assert!(caps.as_array().unwrap().contains(&c.into()), "{c}");
    }
}

#[tokio::test]
async fn clients_limited_to_source_addresses() {
    let h = Harness::new();
    let mut c: mamori_oauth::Client =
        serde_json::from_value(h.node.store.config_get("client", "test-app").unwrap().unwrap().value.unwrap()).unwrap();
    c.id = "ward".into();
    c.allow_ip = vec!["10.20.0.0/16".into()];
    h.node
        .store
        .change_config(&mamori_store_sql::ConfigChange {
            kind: "client",
            key: "ward",
            value: Some(serde_json::to_value(&c).unwrap()),
            changed_by: "operator:test",
            reason: "test",
            expected_version: None,
            now_micros: 0,
        })
        .unwrap();
    let r = h
        .send(post_form(
            "/oauth/token",
            "grant_type=client_credentials",
            Some(("ward", SECRET)),
            Some("192.0.2.7:5000"),
        ))
        .await;
    assert_eq!(r.json()["error"], "unauthorized_client");
    let r = h
        .send(post_form(
            "/oauth/token",
            "grant_type=client_credentials",
            Some(("ward", SECRET)),
            Some("10.20.3.4:5000"),
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let token = r.json()["access_token"].as_str().unwrap().to_string();
    let at = |peer: &str| {
        let mut r = Request::builder()
            .uri("/fhir/Patient/x")
            .header("authorization", format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap();
        r.extensions_mut().insert(axum::extract::ConnectInfo(peer.parse::<std::net::SocketAddr>().unwrap()));
        r
    };
    assert_eq!(h.send(at("10.20.9.9:1")).await.status, StatusCode::NOT_FOUND);
    assert_eq!(h.send(at("198.51.100.1:1")).await.status, StatusCode::UNAUTHORIZED, "the token is useless elsewhere");
}

/// PyJWT + cryptography + requests, installed once into the test's temporary directory.
fn jwt_deps() -> std::path::PathBuf {
    crate::support::pip_target(
        "pydeps-jwt",
        &["PyJWT==2.10.1", "cryptography==50.0.2", "requests==2.32.3"],
        &["jwt", "cryptography", "requests"],
    )
}

fn backend_client(deps: &std::path::Path, args: &[&str]) {
    crate::support::python_ok(deps, "backend_client.py", args);
}

#[test]
fn backend_services_authenticate_with_private_key_jwt_and_forgeries_are_refused() {
    use crate::binary::{cli, start};
    let deps = jwt_deps();
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    backend_client(&deps, &["keys", keys.to_str().unwrap()]);
    let dir = tmp.path().join("d");
    let _db = crate::support::store_for(&dir);
    let d = dir.to_str().unwrap();
    // A JWK Set with a private member is refused at registration.
    let leaky = tmp.path().join("leaky.json");
    let mut jwks: serde_json::Value = serde_json::from_slice(&std::fs::read(keys.join("jwks.json")).unwrap()).unwrap();
    let mut with_private = jwks.clone();
    with_private["keys"][0]["d"] = serde_json::json!("AAAA");
    std::fs::write(&leaky, with_private.to_string()).unwrap();
    let out = cli(&[
        "client",
        "add",
        "leaky",
        "--scope",
        "system/Patient.rs",
        "--jwks-file",
        leaky.to_str().unwrap(),
        "--data-dir",
        d,
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("public keys only"));
    let out = cli(&[
        "client",
        "add",
        "backend",
        "--scope",
        "system/Patient.rs",
        "--jwks-file",
        keys.join("jwks.json").to_str().unwrap(),
        "--data-dir",
        d,
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("private_key_jwt") && !stdout.contains("client_secret="), "{stdout}");
    let server = start(&dir, &[]);
    let base = format!("http://{}", server.addr);
    backend_client(&deps, &["flow", &base, keys.to_str().unwrap()]);
    // Authlib, unchanged, at the token, introspection and revocation endpoints.
    let authlib = crate::smart::smart_deps();
    crate::support::python_ok(&authlib, "authlib_introspect.py", &[&base, keys.to_str().unwrap()]);
    // Key rotation: drop the P-384 key; assertions signed with it stop working.
    jwks["keys"].as_array_mut().unwrap().remove(0);
    let rotated = tmp.path().join("rotated.json");
    std::fs::write(&rotated, jwks.to_string()).unwrap();
    let out = cli(&["client", "rotate-jwks", "backend", "--jwks-file", rotated.to_str().unwrap(), "--data-dir", d]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Rotation is refused for unknown clients and for clients that use a secret.
    let out = cli(&["client", "rotate-jwks", "nobody", "--jwks-file", rotated.to_str().unwrap(), "--data-dir", d]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("no client"));
    assert!(cli(&["client", "add", "with-secret", "--scope", "system/Patient.rs", "--data-dir", d]).status.success());
    let out = cli(&["client", "rotate-jwks", "with-secret", "--jwks-file", rotated.to_str().unwrap(), "--data-dir", d]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("uses a secret"));
    let show = cli(&["client", "show", "backend", "--data-dir", d]);
    assert!(String::from_utf8_lossy(&show.stdout).contains("k256"));
    assert!(!String::from_utf8_lossy(&show.stdout).contains("\"k384\""));
    // Every refusal above is in the audit trail under the client's id.
    let out = cli(&["audit", "export", "--format", "ndjson", "--data-dir", d]);
    let text = String::from_utf8_lossy(&out.stdout);
    let refused =
        text.lines().filter(|l| l.contains("\"action\":\"token\"") && l.contains("\"outcome\":\"denied\"")).count();
    assert!(refused >= 10, "refused token requests audited: {refused}");
}
