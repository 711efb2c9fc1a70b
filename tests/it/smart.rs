//! Issue #7: the authorization-code flow as a browser and an app see it through the real router —
//! PKCE, the two-factor login session, the Japanese consent page with its patient picker, ID
//! tokens verified against the JWKS, refresh rotation with reuse detection, code replay, key
//! rotation — and every malformed or forged request refused in OAuth's own form.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine;
use serde_json::{Value, json};
use sha2::Digest;

use crate::support::{Harness, Resp, enc, now_secs};

const PW: &str = "k7#Vq2!mZp-w9Xr";
const NEW_PW: &str = "Zq9!tRe4#vWx-7Lp";
const UA: &str = "smart-test-browser/1.0";
const REDIRECT: &str = "http://127.0.0.1:9/cb";
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
const APP_SCOPE: &str = "patient/*.rs user/*.rs openid fhirUser profile launch/patient offline_access";

fn b32decode(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let (mut buf, mut bits) = (0u32, 0);
    for c in s.bytes() {
        let v = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567".iter().position(|&a| a == c).unwrap() as u32;
        buf = (buf << 5) | v;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
        }
    }
    out
}

/// An account with TOTP that has signed in fully (password, TOTP, initial password changed):
/// the session cookie value.
fn signed_in(h: &Harness, user: &str, roles: &[&str], fhir_user: &str) -> String {
    h.add_user(user, roles, fhir_user);
    let id = &h.node.identity;
    let uri = id.enroll_totp("operator:test", user, "Mamori", now_secs()).unwrap();
    let seed = b32decode(uri.split("secret=").nth(1).unwrap().split('&').next().unwrap());
    let auth = id.authenticate(user, PW, None, now_secs(), None).unwrap().unwrap();
    let (token, _) = id.start_session(&auth, UA, None, now_secs()).unwrap();
    let code = mamori_identity::totp::code_at(&seed, now_secs()).unwrap();
    let step = id.verify_totp(&token, UA, &code, now_secs(), None).unwrap().unwrap();
    id.change_password_in_session(&step.token, UA, PW, NEW_PW, now_secs()).unwrap().unwrap().token
}

fn register_app(h: &Harness, id: &str, scope: &str, secret: bool) {
    let c = mamori_oauth::Client {
        id: id.into(),
        name: Some("診療ビューア".into()),
        secret_sha256: secret.then(|| mamori_oauth::sha256_hex(crate::support::SECRET)),
        scope: scope.into(),
        token_lifetime_secs: 900,
        redirect_uris: vec![REDIRECT.into()],
        ..Default::default()
    };
    let prev = h.node.store.config_get("client", id).unwrap().map(|e| e.version);
    h.node
        .store
        .change_config(&mamori_store_sql::ConfigChange {
            kind: "client",
            key: id,
            value: Some(serde_json::to_value(c).unwrap()),
            changed_by: "operator:test",
            reason: "test",
            expected_version: prev,
            now_micros: 0,
        })
        .unwrap();
}

fn authorize_query(client: &str, scope: &str, extra: &[(&str, &str)]) -> String {
    let mut q = vec![
        ("response_type", "code"),
        ("client_id", client),
        ("redirect_uri", REDIRECT),
        ("scope", scope),
        ("state", "st-1"),
        ("nonce", "n-0S6_WzA2Mj"),
        ("aud", "http://mamori.test/fhir"),
        ("code_challenge", CHALLENGE),
        ("code_challenge_method", "S256"),
    ];
    for (k, v) in extra {
        q.retain(|(qk, _)| qk != k);
        if !v.is_empty() {
            q.push((k, v));
        }
    }
    q.iter().map(|(k, v)| format!("{k}={}", enc(v))).collect::<Vec<_>>().join("&")
}

async fn browse(h: &Harness, session: Option<&str>, uri: &str) -> Resp {
    let mut b = Request::builder().uri(uri).header("user-agent", UA);
    if let Some(s) = session {
        b = b.header("cookie", format!("mamori_session={s}"));
    }
    h.send(b.body(Body::empty()).unwrap()).await
}

fn csrf_of(r: &Resp) -> String {
    let html = String::from_utf8_lossy(&r.body);
    let at = html.find(r#"name="csrf" value=""#).expect("a CSRF field") + 19;
    html[at..at + 32].to_string()
}

/// Posts the consent form shown in `page` with `decision` (and a chosen patient).
async fn consent(h: &Harness, session: &str, page: &Resp, decision: &str, patient: Option<&str>) -> Resp {
    let html = String::from_utf8_lossy(&page.body).to_string();
    let form_at = html.find(r#"<form id="consent""#).expect("the consent form");
    let form = &html[form_at..];
    let mut fields: Vec<(String, String)> = Vec::new();
    for part in form.split("<input type=\"hidden\" name=\"").skip(1) {
        let name = part.split('"').next().unwrap().to_string();
        let value = part.split("value=\"").nth(1).unwrap().split('"').next().unwrap();
        let value = value
            .replace("&amp;", "&")
            .replace("&quot;", "\"")
            .replace("&#39;", "'")
            .replace("&lt;", "<")
            .replace("&gt;", ">");
        fields.push((name, value));
    }
    fields.push(("decision".into(), decision.into()));
    if let Some(p) = patient {
        fields.push(("patient".into(), p.into()));
    }
    let body = fields.iter().map(|(k, v)| format!("{k}={}", enc(v))).collect::<Vec<_>>().join("&");
    let csrf = csrf_of(page);
    h.send(
        Request::builder()
            .method("POST")
            .uri("/oauth/authorize")
            .header("user-agent", UA)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("cookie", format!("mamori_session={session}; mamori_csrf={csrf}"))
            .body(Body::from(body))
            .unwrap(),
    )
    .await
}

fn query_param(location: &str, name: &str) -> Option<String> {
    let q = location.split_once('?')?.1;
    q.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| {
            let mut out = Vec::new();
            let b = v.as_bytes();
            let mut i = 0;
            while i < b.len() {
                if b[i] == b'%' {
                    out.push(u8::from_str_radix(&v[i + 1..i + 3], 16).unwrap());
                    i += 3;
                } else {
                    out.push(b[i]);
                    i += 1;
                }
            }
            String::from_utf8(out).unwrap()
        })
    })
}

async fn token(h: &Harness, body: &str) -> Resp {
    h.send(
        Request::builder()
            .method("POST")
            .uri("/oauth/token")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(body.to_string()))
            .unwrap(),
    )
    .await
}

async fn bearer(h: &Harness, token: &str, uri: &str) -> Resp {
    h.send(Request::builder().uri(uri).header("authorization", format!("Bearer {token}")).body(Body::empty()).unwrap())
        .await
}

/// Two patients; the doctor is in care of the first (an in-progress Encounter) only.
async fn patients(h: &Harness) {
    h.create(&json!({"resourceType": "Patient", "id": "p1", "identifier": [{"system": "urn:oid:1.2.392.100495.20.3.51.11311234567", "value": "MRN-0001"}],
        "name": [{"family": "山田", "given": ["太郎"]}, {"family": "ヤマダ", "given": ["タロウ"]}], "birthDate": "1970-01-02"}))
        .await;
    h.call("PUT", "/fhir/Patient/p1", Some(&json!({"resourceType": "Patient", "id": "p1",
        "identifier": [{"system": "urn:oid:1.2.392.100495.20.3.51.11311234567", "value": "MRN-0001"}],
        "name": [{"family": "山田", "given": ["太郎"]}, {"family": "ヤマダ", "given": ["タロウ"]}], "birthDate": "1970-01-02"})))
        .await;
    h.call(
        "PUT",
        "/fhir/Patient/p2",
        Some(&json!({"resourceType": "Patient", "id": "p2",
        "identifier": [{"system": "urn:oid:1.2.392.100495.20.3.51.11311234567", "value": "MRN-0002"}],
        "name": [{"family": "佐藤", "given": ["花子"]}]})),
    )
    .await;
    h.create(&json!({"resourceType": "Encounter", "status": "in-progress", "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": "Patient/p1"}, "participant": [{"individual": {"reference": "Practitioner/sato"}}]}))
        .await;
}

/// Verifies an ID token against the published JWKS (RS256 only).
async fn verify_id_token(h: &Harness, id_token: &str, audience: &str) -> Value {
    let jwks = browse(h, None, "/oauth/jwks").await.json();
    let header = jsonwebtoken::decode_header(id_token).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::RS256);
    let kid = header.kid.unwrap();
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .expect("the signing key is published");
    assert!(jwk.get("d").is_none() && jwk.get("p").is_none(), "public keys only");
    let key =
        jsonwebtoken::DecodingKey::from_rsa_components(jwk["n"].as_str().unwrap(), jwk["e"].as_str().unwrap()).unwrap();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    v.set_audience(&[audience]);
    v.set_issuer(&["http://mamori.test"]);
    jsonwebtoken::decode::<Value>(id_token, &key, &v).unwrap().claims
}

#[tokio::test]
async fn a_standalone_launch_runs_from_login_to_data_and_refresh() {
    let h = Harness::new();
    patients(&h).await;
    register_app(&h, "viewer", APP_SCOPE, false);
    let q = authorize_query("viewer", APP_SCOPE, &[]);

    // Not signed in: through the login pages and back to this very request.
    let r = browse(&h, None, &format!("/oauth/authorize?{q}")).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let to = r.header("location").unwrap();
    assert!(
        to.starts_with("/login?next=%2Foauth%2Fauthorize") || to.starts_with("/login?next=/oauth/authorize"),
        "{to}"
    );

    // A session that has not finished two-factor login is sent on to finish it.
    h.add_user("half", &["doctor"], "Practitioner/half");
    let auth = h.node.identity.authenticate("half", PW, None, now_secs(), None).unwrap().unwrap();
    let (half, _) = h.node.identity.start_session(&auth, UA, None, now_secs()).unwrap();
    let r = browse(&h, Some(&half), &format!("/oauth/authorize?{q}")).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert!(r.header("location").unwrap().starts_with("/login/enroll"), "no consent before the second factor");

    let session = signed_in(&h, "dr-sato", &["doctor"], "Practitioner/sato");
    let page = browse(&h, Some(&session), &format!("/oauth/authorize?{q}")).await;
    assert_eq!(page.status, StatusCode::OK, "{}", String::from_utf8_lossy(&page.body));
    let html = String::from_utf8_lossy(&page.body).to_string();
    assert!(html.contains(r#"<html lang="ja">"#) && html.contains("アクセスの許可") && html.contains("診療ビューア"));
    assert!(html.contains("選択した患者のすべての種類の記録の閲覧・検索"), "scopes in words");
    assert!(html.contains("ログアウト後も最長30日間"), "offline_access in words");
    assert!(html.contains("対象患者の選択"), "a patient picker");
    let csp = page.header("content-security-policy").unwrap();
    assert!(csp.contains("form-action 'self' http://127.0.0.1:9"), "{csp}");

    // The picker finds a patient in the doctor's care by number, and not one outside it.
    let found = browse(&h, Some(&session), &format!("/oauth/authorize?{q}&patient_query=MRN-0001")).await;
    let found_html = String::from_utf8_lossy(&found.body).to_string();
    assert!(found_html.contains(r#"value="p1""#) && found_html.contains("山田 太郎"), "{found_html}");
    let hidden = browse(&h, Some(&session), &format!("/oauth/authorize?{q}&patient_query=MRN-0002")).await;
    let hidden_html = String::from_utf8_lossy(&hidden.body).to_string();
    assert!(!hidden_html.contains(r#"value="p2""#) && hidden_html.contains("該当する患者はいません"));
    // …and by name, in kana too (ヤマダ is found as やまだ), still only within the person's rights.
    let by_kana =
        browse(&h, Some(&session), &format!("/oauth/authorize?{q}&patient_query=%E3%82%84%E3%81%BE%E3%81%A0")).await;
    assert!(String::from_utf8_lossy(&by_kana.body).contains(r#"value="p1""#));
    // …and by birth date, as staff type it (西暦 or 和暦).
    for date in ["1970-01-02", "%E6%98%AD%E5%92%8C45%E5%B9%B41%E6%9C%882%E6%97%A5", "S45.1.2"] {
        let by_date = browse(&h, Some(&session), &format!("/oauth/authorize?{q}&patient_query={date}")).await;
        assert!(String::from_utf8_lossy(&by_date.body).contains(r#"value="p1""#), "{date}");
    }
    let by_name = browse(&h, Some(&session), &format!("/oauth/authorize?{q}&patient_query=%E4%BD%90%E8%97%A4")).await;
    assert!(!String::from_utf8_lossy(&by_name.body).contains(r#"value="p2""#), "佐藤 is outside the doctor's care");

    // Choosing a patient the person may not see is refused on the form, not granted.
    let r = consent(&h, &session, &found, "allow", Some("p2")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // Without CSRF: refused.
    let r = h
        .send(
            Request::builder()
                .method("POST")
                .uri("/oauth/authorize")
                .header("user-agent", UA)
                .header("content-type", "application/x-www-form-urlencoded")
                .header("cookie", format!("mamori_session={session}"))
                .body(Body::from(format!("{q}&decision=allow&patient=p1")))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    let r = consent(&h, &session, &found, "allow", Some("p1")).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", String::from_utf8_lossy(&r.body));
    let loc = r.header("location").unwrap();
    assert!(loc.starts_with(REDIRECT), "{loc}");
    assert_eq!(query_param(&loc, "state").as_deref(), Some("st-1"));
    assert_eq!(query_param(&loc, "iss").as_deref(), Some("http://mamori.test"));
    let code = query_param(&loc, "code").unwrap();

    // Wrong verifier, wrong redirect URI, missing verifier: refused (and the code is spent).
    let base = format!("grant_type=authorization_code&client_id=viewer&redirect_uri={}", enc(REDIRECT));
    let r = token(&h, &format!("{base}&code={code}&code_verifier={}", "x".repeat(43))).await;
    assert_eq!((r.status, r.json()["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")));

    // A fresh approval (single sign-on: no second login), redeemed properly.
    let r = consent(&h, &session, &found, "allow", Some("p1")).await;
    let code = query_param(&r.header("location").unwrap(), "code").unwrap();
    let r = token(&h, &format!("grant_type=authorization_code&client_id=viewer&code={code}&code_verifier={VERIFIER}&redirect_uri=http://127.0.0.1:9/other")).await;
    assert_eq!(r.json()["error"], "invalid_grant", "the redirect URI must match");
    let r = consent(&h, &session, &found, "allow", Some("p1")).await;
    let code = query_param(&r.header("location").unwrap(), "code").unwrap();
    let r = token(&h, &format!("{base}&code={code}&code_verifier={VERIFIER}")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    let t = r.json();
    assert_eq!(t["token_type"], "Bearer");
    assert_eq!(t["patient"], "p1");
    assert_eq!(t["need_patient_banner"], true);
    assert_eq!(t["scope"], APP_SCOPE);
    let access = t["access_token"].as_str().unwrap().to_string();
    let refresh = t["refresh_token"].as_str().unwrap().to_string();
    let claims = verify_id_token(&h, t["id_token"].as_str().unwrap(), "viewer").await;
    assert_eq!(claims["sub"], "dr-sato");
    assert_eq!(claims["nonce"], "n-0S6_WzA2Mj");
    assert_eq!(claims["fhirUser"], "http://mamori.test/fhir/Practitioner/sato");
    assert!(claims["auth_time"].as_i64().unwrap() <= now_secs());
    assert_eq!(claims["amr"], json!(["pwd", "otp", "mfa"]), "the app can see that two factors were used");

    // The token reaches what the doctor may see (their rights ∩ the scopes), nothing else.
    assert_eq!(bearer(&h, &access, "/fhir/Patient/p1").await.status, StatusCode::OK);
    assert_eq!(bearer(&h, &access, "/fhir/Patient/p2").await.status, StatusCode::NOT_FOUND);
    let r = h
        .send(
            Request::builder()
                .method("POST")
                .uri("/fhir/Patient")
                .header("authorization", format!("Bearer {access}"))
                .header("content-type", "application/fhir+json")
                .body(Body::from(r#"{"resourceType":"Patient"}"#))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "read-only scopes");
    // The audit trail names the person and the client for the data access.
    let entries: Vec<Value> = h
        .node
        .store
        .query(&mamori_audit::EntryQuery::default())
        .unwrap()
        .iter()
        .map(|(_, e)| serde_json::from_slice(e).unwrap())
        .collect();
    assert!(
        entries
            .iter()
            .any(|e| e["action"] == "authorize" && e["actor"]["id"] == "dr-sato" && e["outcome"] == "success")
    );
    assert!(
        entries
            .iter()
            .any(|e| e["action"] == "read" && e["actor"]["id"] == "dr-sato" && e["actor"]["client_id"] == "viewer")
    );
    // What the patient picker revealed is audited as a search by the person.
    assert!(entries.iter().any(|e| e["action"] == "search"
        && e["actor"]["id"] == "dr-sato"
        && e["patients"] == json!(["Patient/p1"])
        && e["detail"].as_str().is_some_and(|d| d.contains("MRN-0001"))));
    assert!(entries.iter().any(|e| e["action"] == "search"
        && e["detail"].as_str().is_some_and(|d| d.contains("`MRN-0002`, 0 shown"))));

    // Replaying the code: refused, and everything issued from it is revoked.
    let r = token(&h, &format!("{base}&code={code}&code_verifier={VERIFIER}")).await;
    assert_eq!(r.json()["error"], "invalid_grant");
    assert_eq!(bearer(&h, &access, "/fhir/Patient/p1").await.status, StatusCode::UNAUTHORIZED);
    let r = token(&h, &format!("grant_type=refresh_token&client_id=viewer&refresh_token={refresh}")).await;
    assert_eq!(r.json()["error"], "invalid_grant", "the refresh token went with the family");

    // Refresh rotation: a new authorization, refreshed once; the spent token replayed revokes all.
    let r = consent(&h, &session, &found, "allow", Some("p1")).await;
    let code = query_param(&r.header("location").unwrap(), "code").unwrap();
    let t = token(&h, &format!("{base}&code={code}&code_verifier={VERIFIER}")).await.json();
    let (access1, refresh1) =
        (t["access_token"].as_str().unwrap().to_string(), t["refresh_token"].as_str().unwrap().to_string());
    let r = token(
        &h,
        &format!("grant_type=refresh_token&client_id=viewer&refresh_token={refresh1}&scope=patient%2FPatient.r"),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", String::from_utf8_lossy(&r.body));
    let t2 = r.json();
    assert_eq!(t2["scope"], "patient/Patient.r", "a refresh may narrow");
    let (access2, refresh2) =
        (t2["access_token"].as_str().unwrap().to_string(), t2["refresh_token"].as_str().unwrap().to_string());
    assert_ne!(refresh1, refresh2, "rotated");
    assert_eq!(bearer(&h, &access2, "/fhir/Patient/p1").await.status, StatusCode::OK);
    let r = token(
        &h,
        &format!("grant_type=refresh_token&client_id=viewer&refresh_token={refresh2}&scope=user%2FPatient.cruds"),
    )
    .await;
    assert_eq!(r.json()["error"], "invalid_scope", "never wider than granted");
    // The refused request did not spend refresh2, and the narrowing did not shrink the family's
    // grant: the next refresh gets the whole of it back (RFC 6749 §6).
    let r = token(&h, &format!("grant_type=refresh_token&client_id=viewer&refresh_token={refresh2}")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", String::from_utf8_lossy(&r.body));
    let t3 = r.json();
    assert_eq!(t3["scope"], APP_SCOPE);
    let access3 = t3["access_token"].as_str().unwrap().to_string();
    // A public client may refresh without naming itself (the SMART JS client's default): the
    // refresh token says whose it is (RFC 6749 §6, #28).
    let refresh3 = t3["refresh_token"].as_str().unwrap().to_string();
    let r = token(&h, &format!("grant_type=refresh_token&refresh_token={refresh3}")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", String::from_utf8_lossy(&r.body));
    let access4 = r.json()["access_token"].as_str().unwrap().to_string();
    assert_eq!(bearer(&h, &access4, "/fhir/Patient/p1").await.status, StatusCode::OK);
    let r = token(&h, "grant_type=refresh_token&refresh_token=forged").await;
    assert_eq!(r.json()["error"], "invalid_client", "a token this server did not issue names no client");
    let r = token(&h, &format!("grant_type=refresh_token&client_id=viewer&refresh_token={refresh1}")).await;
    assert_eq!(r.json()["error"], "invalid_grant", "reuse detected");
    for t in [&access1, &access2, &access3, &access4] {
        assert_eq!(bearer(&h, t, "/fhir/Patient/p1").await.status, StatusCode::UNAUTHORIZED, "the family is revoked");
    }
    let r = token(&h, &format!("grant_type=refresh_token&client_id=viewer&refresh_token={refresh2}")).await;
    assert_eq!(r.json()["error"], "invalid_grant");

    // A confidential client's refresh token presented without the client's credentials is
    // refused, and not spent: the client itself still refreshes with it.
    register_app(&h, "conf", APP_SCOPE, true);
    let cq = authorize_query("conf", APP_SCOPE, &[]);
    let cpage = browse(&h, Some(&session), &format!("/oauth/authorize?{cq}&patient_query=MRN-0001")).await;
    let r = consent(&h, &session, &cpage, "allow", Some("p1")).await;
    let code = query_param(&r.header("location").unwrap(), "code").unwrap();
    let secret = crate::support::SECRET;
    let r = token(
        &h,
        &format!(
            "grant_type=authorization_code&client_id=conf&client_secret={secret}&code={code}&code_verifier={VERIFIER}&redirect_uri={}",
            enc(REDIRECT)
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", String::from_utf8_lossy(&r.body));
    let crefresh = r.json()["refresh_token"].as_str().unwrap().to_string();
    let r = token(&h, &format!("grant_type=refresh_token&refresh_token={crefresh}")).await;
    assert_eq!(r.json()["error"], "invalid_client", "{}", String::from_utf8_lossy(&r.body));
    let r = token(&h, &format!("grant_type=refresh_token&client_id=conf&refresh_token={crefresh}")).await;
    assert_eq!(r.json()["error"], "invalid_client");
    let r =
        token(&h, &format!("grant_type=refresh_token&client_id=conf&client_secret={secret}&refresh_token={crefresh}"))
            .await;
    assert_eq!(r.status, StatusCode::OK, "{}", String::from_utf8_lossy(&r.body));

    // Refusing consent sends access_denied back to the app.
    let r = consent(&h, &session, &found, "deny", None).await;
    let loc = r.header("location").unwrap();
    assert_eq!(query_param(&loc, "error").as_deref(), Some("access_denied"));
    assert_eq!(query_param(&loc, "state").as_deref(), Some("st-1"));

    // A person who leaves: their refresh tokens stop at once.
    let r = consent(&h, &session, &found, "allow", Some("p1")).await;
    let code = query_param(&r.header("location").unwrap(), "code").unwrap();
    let t = token(&h, &format!("{base}&code={code}&code_verifier={VERIFIER}")).await.json();
    h.node.identity.leave("operator:test", "dr-sato").unwrap();
    let r = token(
        &h,
        &format!("grant_type=refresh_token&client_id=viewer&refresh_token={}", t["refresh_token"].as_str().unwrap()),
    )
    .await;
    assert_eq!(r.json()["error"], "invalid_grant");
}

#[tokio::test]
async fn bad_authorization_requests_are_refused_in_oauth_form() {
    let h = Harness::new();
    register_app(&h, "viewer", "user/*.rs openid fhirUser", false);
    register_app(&h, "confidential", "user/*.rs openid", true);
    let session = signed_in(&h, "dr-ito", &["doctor"], "Practitioner/ito");
    let go = |q: String| {
        let session = session.clone();
        let h = &h;
        async move { browse(h, Some(&session), &format!("/oauth/authorize?{q}")).await }
    };
    // The client or redirect URI cannot be trusted: an error page, never a redirect.
    for q in [
        authorize_query("nobody", "user/*.rs", &[]),
        authorize_query("viewer", "user/*.rs", &[("redirect_uri", "http://127.0.0.1:9/evil")]),
        authorize_query("viewer", "user/*.rs", &[("redirect_uri", "http://127.0.0.1:9/cb/")]),
        authorize_query("viewer", "user/*.rs", &[("client_id", "")]),
    ] {
        let r = go(q).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert!(r.header("location").is_none());
        assert!(String::from_utf8_lossy(&r.body).contains("続行できません"));
    }
    // Everything else goes back to the app with the error and the state.
    for (extra, error) in [
        (vec![("code_challenge", "")], "invalid_request"),
        (vec![("code_challenge_method", "plain")], "invalid_request"),
        (vec![("code_challenge_method", "")], "invalid_request"),
        (vec![("code_challenge", "short")], "invalid_request"),
        (vec![("response_type", "token")], "unsupported_response_type"),
        (vec![("aud", "")], "invalid_request"),
        (vec![("aud", "https://elsewhere.example/fhir")], "invalid_request"),
        (vec![("scope", "user/*.cruds")], "invalid_scope"),
        (vec![("scope", "system/*.rs")], "invalid_scope"),
        (vec![("scope", "user/*.rs offline_access")], "invalid_scope"),
        (vec![("scope", "user/Patient.rs?name=x")], "invalid_scope"),
        (vec![("scope", "")], "invalid_scope"),
        (vec![("launch", "xyz")], "invalid_request"),
        (vec![("prompt", "none")], "consent_required"),
    ] {
        let r = go(authorize_query("viewer", "user/*.rs", &extra)).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{extra:?}");
        let loc = r.header("location").unwrap();
        assert!(loc.starts_with(REDIRECT), "{loc}");
        assert_eq!(query_param(&loc, "error").as_deref(), Some(error), "{extra:?}: {loc}");
        assert_eq!(query_param(&loc, "state").as_deref(), Some("st-1"));
    }
    let r = go(format!("{}&state=again", authorize_query("viewer", "user/*.rs", &[]))).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "a repeated parameter: which redirect_uri is meant is unknowable");
    assert!(r.header("location").is_none());
    let r = go("%zz=1".into()).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    // Token endpoint: a public client cannot use client credentials; a confidential client must
    // authenticate; an unknown code or grant type is refused.
    let r = token(&h, "grant_type=client_credentials&client_id=viewer").await;
    assert_eq!(r.json()["error"], "unauthorized_client");
    let r = token(
        &h,
        &format!(
            "grant_type=authorization_code&client_id=confidential&code=abc&code_verifier={VERIFIER}&redirect_uri={}",
            enc(REDIRECT)
        ),
    )
    .await;
    assert_eq!((r.status, r.json()["error"].as_str()), (StatusCode::UNAUTHORIZED, Some("invalid_client")));
    let r = token(
        &h,
        &format!(
            "grant_type=authorization_code&client_id=viewer&code=forged&code_verifier={VERIFIER}&redirect_uri={}",
            enc(REDIRECT)
        ),
    )
    .await;
    assert_eq!(r.json()["error"], "invalid_grant");
    let r = token(&h, "grant_type=refresh_token&client_id=viewer&refresh_token=forged").await;
    assert_eq!(r.json()["error"], "invalid_grant");
    let r = token(&h, "grant_type=password&client_id=viewer&username=a&password=b").await;
    assert_eq!(r.json()["error"], "unsupported_grant_type");
    let r = token(&h, "grant_type=authorization_code").await;
    assert_eq!(r.json()["error"], "invalid_client");

    // A confidential app authenticates with its secret at the token endpoint.
    let page = go(authorize_query("confidential", "user/*.rs openid", &[])).await;
    assert_eq!(page.status, StatusCode::OK);
    let r = consent(&h, &session, &page, "allow", None).await;
    let code = query_param(&r.header("location").unwrap(), "code").unwrap();
    let body =
        format!("grant_type=authorization_code&code={code}&code_verifier={VERIFIER}&redirect_uri={}", enc(REDIRECT));
    let r = token(&h, &format!("{body}&client_id=confidential&client_secret={}", crate::support::SECRET)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", String::from_utf8_lossy(&r.body));
    let t = r.json();
    assert!(t.get("refresh_token").is_none(), "no offline_access, no refresh token");
    let claims = verify_id_token(&h, t["id_token"].as_str().unwrap(), "confidential").await;
    assert!(claims.get("fhirUser").is_none(), "fhirUser only with its scope");

    // Introspection needs client authentication; a public client cannot introspect but may revoke.
    let intro = |body: String| {
        let h = &h;
        async move {
            h.send(
                Request::builder()
                    .method("POST")
                    .uri("/oauth/introspect")
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(Body::from(body))
                    .unwrap(),
            )
            .await
        }
    };
    let access = t["access_token"].as_str().unwrap();
    let r = intro(format!("token={access}&client_id=confidential&client_secret={}", crate::support::SECRET)).await;
    let j = r.json();
    assert_eq!((j["active"].as_bool(), j["sub"].as_str()), (Some(true), Some("dr-ito")));
    assert_eq!(intro(format!("token={access}&client_id=viewer")).await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn signing_keys_rotate_with_overlap_and_only_public_halves_are_published() {
    let h = Harness::new();
    let now = now_secs();
    let oauth = &h.node.oauth;
    let first = oauth.rotate_signing_key(now, "test").unwrap();
    let jwks = oauth.jwks(now).unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 1);
    let second = oauth.rotate_signing_key(now + 10, "test").unwrap();
    assert_ne!(first, second);
    let kids = |v: &Value| {
        v["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap().to_string()).collect::<Vec<_>>()
    };
    assert_eq!(kids(&oauth.jwks(now + 10).unwrap()), vec![second.clone(), first.clone()], "the old key overlaps");
    assert_eq!(kids(&oauth.jwks(now + 10 + 86_400).unwrap()), vec![second.clone()], "then it is withdrawn");
    // The key id is the RFC 7638 thumbprint of the public key.
    let k = &oauth.jwks(now + 10).unwrap()["keys"][0];
    let thumb = format!(r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#, k["e"].as_str().unwrap(), k["n"].as_str().unwrap());
    assert_eq!(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(thumb.as_bytes())), second);
    for k in oauth.jwks(now + 10).unwrap()["keys"].as_array().unwrap() {
        assert_eq!(k["kty"], "RSA");
        for private in ["d", "p", "q", "dp", "dq", "qi"] {
            assert!(k.get(private).is_none());
        }
    }
    // Stored sealed: the configuration history holds no private key in the clear.
    let stored = h.node.store.config_get("signing-key", &second).unwrap().unwrap().value.unwrap();
    let sealed = stored["private_sealed"].as_str().unwrap();
    assert!(sealed.bytes().all(|b| b.is_ascii_hexdigit()) && !sealed.contains("MII"));
    // Each rotation is a configuration change, audited.
    assert!(h.node.store.config_history("signing-key", &first).unwrap().len() >= 2, "created, then retired");
    // Served at /oauth/jwks with discovery pointing there.
    let r = browse(&h, None, "/.well-known/openid-configuration").await;
    let m = r.json();
    assert_eq!(m["issuer"], "http://mamori.test");
    assert_eq!(m["jwks_uri"], "http://mamori.test/oauth/jwks");
    assert_eq!(m["authorization_endpoint"], "http://mamori.test/oauth/authorize");
    assert_eq!(m["id_token_signing_alg_values_supported"], json!(["RS256"]));
    assert_eq!(m["code_challenge_methods_supported"], json!(["S256"]));
    let r = browse(&h, None, "/oauth/jwks").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(kids(&r.json())[0], second);
    // Once its overlap has ended, a retired key's private half is destroyed.
    let third = oauth.rotate_signing_key(now + 20 + 86_400, "test").unwrap();
    let private = |kid: &str| {
        h.node.store.config_get("signing-key", kid).unwrap().unwrap().value.unwrap().get("private_sealed").cloned()
    };
    assert!(private(&first).is_none(), "withdrawn: destroyed");
    assert!(private(&second).is_some() && private(&third).is_some(), "still within the overlap, or signing");
    assert_eq!(kids(&oauth.jwks(now + 20 + 86_400).unwrap()), vec![third.clone(), second.clone()]);
}

/// Authlib, joserfc, fhirclient, requests, pyotp and cryptography, installed once.
pub fn smart_deps() -> std::path::PathBuf {
    crate::support::pip_target(
        "smartdeps",
        &["Authlib==1.9.9", "fhirclient==4.4.0", "requests==2.32.3", "pyotp==2.9.0", "cryptography==50.0.2"],
        &["authlib", "fhirclient", "joserfc", "pyotp", "requests", "cryptography"],
    )
}

/// Authlib (code flow with PKCE, ID token checked with joserfc, refresh, revocation) and
/// fhirclient (standalone launch with the patient picker) against the real binary, as they are.
#[test]
fn outside_smart_clients_launch_unchanged() {
    use crate::binary::{cli, http, start};
    let deps = smart_deps();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    let _db = crate::support::store_for(&dir);
    let d = dir.to_str().unwrap();
    assert!(cli(&["init", "--data-dir", d]).status.success());
    crate::login::add_user(&dir, "sato", "k7#Vq2!mZp-w9");
    let out = cli(&["user", "enroll-totp", "sato", "--data-dir", d]);
    let uri = String::from_utf8(out.stdout).unwrap();
    let secret = uri.split("secret=").nth(1).unwrap().split('&').next().unwrap().to_string();
    // A public app: redirect URI, no keys, so no secret; it must use PKCE.
    let out = cli(&[
        "client",
        "add",
        "viewer",
        "--redirect-uri",
        REDIRECT,
        "--scope",
        "openid fhirUser profile launch/patient offline_access patient/*.rs",
        "--name",
        "診療ビューア",
        "--data-dir",
        d,
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.contains("token_endpoint_auth_method=none") && !printed.contains("client_secret="), "{printed}");
    // Registration refuses what cannot work.
    for bad in [
        vec!["client", "add", "x1", "--redirect-uri", "http://app.example.jp/cb", "--scope", "user/*.rs"],
        vec!["client", "add", "x2", "--redirect-uri", "https://app.example.jp/cb#frag", "--scope", "user/*.rs"],
        vec!["client", "add", "x3", "--scope", "user/*.rs"],
        vec!["client", "add", "x4", "--scope", "system/*.rs openid"],
    ] {
        let mut args = bad.clone();
        args.extend(["--data-dir", d]);
        let out = cli(&args);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {}", String::from_utf8_lossy(&out.stdout));
    }

    let server = start(&dir, &[]);
    let base = format!("http://{}", server.addr);
    let system = crate::binary::token(server.addr, &dir, "loader");
    let put = |path: &str, body: Value| {
        let r = http(
            server.addr,
            "PUT",
            path,
            &[("Authorization", &format!("Bearer {system}")), ("Content-Type", "application/fhir+json")],
            body.to_string().as_bytes(),
        )
        .unwrap();
        assert!(r.status == 200 || r.status == 201, "{}", String::from_utf8_lossy(&r.body));
    };
    put(
        "/fhir/Patient/pt-yamada",
        json!({"resourceType": "Patient", "id": "pt-yamada",
        "identifier": [{"system": "urn:oid:1.2.392.100495.20.3.51.11311234567", "value": "00012345"}],
        "name": [{"use": "official", "family": "山田", "given": ["太郎"]}], "gender": "male", "birthDate": "1970-01-02"}),
    );
    put("/fhir/Patient/other-patient", json!({"resourceType": "Patient", "id": "other-patient"}));
    put(
        "/fhir/Encounter/enc-1",
        json!({"resourceType": "Encounter", "id": "enc-1", "status": "in-progress",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": "Patient/pt-yamada"}, "participant": [{"individual": {"reference": "Practitioner/sato"}}]}),
    );
    crate::support::python_ok(
        &deps,
        "smart_client.py",
        &[&base, "sato", "k7#Vq2!mZp-w9", "Zq9!tRe4#vWx-7Lp", &secret, "00012345", "pt-yamada"],
    );
    // `mamori keys list` shows the key the flow created; `keys rotate` starts another.
    drop(server);
    let out = cli(&["keys", "list", "--data-dir", d]);
    let listed = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success() && listed.contains("RS256") && listed.contains("signing\tpublished"), "{listed}");
    let out = cli(&["keys", "rotate", "--data-dir", d, "--reason", "test"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = cli(&["keys", "list", "--data-dir", d]);
    let listed = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(listed.lines().count(), 2, "{listed}");
    assert!(listed.contains("retired") && listed.contains("signing\tpublished"), "{listed}");
}

/// An app registered for some information classes (`--class`) never reaches beyond them, even
/// with a person whose own rights are wider: rights ∩ scopes ∩ the app's classes.
#[tokio::test]
async fn a_persons_token_through_an_app_stays_within_the_apps_classes() {
    let h = Harness::new();
    h.add_user("dr-kato", &["doctor"], "Practitioner/kato");
    h.create(&json!({"resourceType": "Patient", "id": "pk"})).await;
    h.call("PUT", "/fhir/Patient/pk", Some(&json!({"resourceType": "Patient", "id": "pk"}))).await;
    h.create(&json!({"resourceType": "CareTeam", "status": "active", "subject": {"reference": "Patient/pk"},
        "participant": [{"member": {"reference": "Practitioner/kato"}}]}))
        .await;
    let obs = |code: &str| {
        json!({"resourceType": "Observation", "status": "final", "subject": {"reference": "Patient/pk"},
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]}})
    };
    let general = h.create(&obs("2345-7")).await["id"].as_str().unwrap().to_string();
    let hiv = h.create(&obs("7917-8")).await["id"].as_str().unwrap().to_string();
    register_app(&h, "general-only", "user/*.rs openid", false);
    let mut c: mamori_oauth::Client =
        serde_json::from_value(h.node.store.config_get("client", "general-only").unwrap().unwrap().value.unwrap())
            .unwrap();
    c.classes = vec!["general".into(), "administrative".into()];
    h.node
        .store
        .change_config(&mamori_store_sql::ConfigChange {
            kind: "client",
            key: "general-only",
            value: Some(serde_json::to_value(c).unwrap()),
            changed_by: "operator:test",
            reason: "test",
            expected_version: Some(1),
            now_micros: 0,
        })
        .unwrap();
    let issue = |client: &str| {
        h.node
            .oauth
            .issue_for_user(client, "dr-kato", Some("Practitioner/kato"), "user/*.rs", 900, now_secs())
            .unwrap()
            .access_token
    };
    let (wide, narrow) = (issue("test-app"), issue("general-only"));
    assert_eq!(bearer(&h, &wide, &format!("/fhir/Observation/{hiv}")).await.status, StatusCode::OK, "the doctor may");
    assert_eq!(bearer(&h, &narrow, &format!("/fhir/Observation/{general}")).await.status, StatusCode::OK);
    assert_eq!(
        bearer(&h, &narrow, &format!("/fhir/Observation/{hiv}")).await.status,
        StatusCode::NOT_FOUND,
        "the app may not"
    );
    assert_eq!(bearer(&h, &narrow, "/fhir/Patient/pk").await.status, StatusCode::OK);
}

/// Bearer tokens that are forged, expired, revoked or of a disabled account are all refused alike
/// (401 with an OperationOutcome and `WWW-Authenticate`), on every request.
#[tokio::test]
async fn forged_expired_and_revoked_bearer_tokens_are_refused() {
    let h = Harness::new();
    h.add_user("dr-mori", &["doctor"], "Practitioner/mori");
    let now = now_secs();
    let issue = |at: i64, life: u64| {
        h.node
            .oauth
            .issue_for_user("test-app", "dr-mori", Some("Practitioner/mori"), "user/*.rs", life, at)
            .unwrap()
            .access_token
    };
    let expired = issue(now - 7200, 3600);
    let live = issue(now, 900);
    let forged = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([7u8; 32]);
    for (what, t) in
        [("forged", forged.as_str()), ("expired", expired.as_str()), ("empty", ""), ("oversized", &"a".repeat(600))]
    {
        let r = bearer(&h, t, "/fhir/Patient/nobody").await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{what}");
        assert!(r.header("www-authenticate").is_some_and(|v| v.starts_with("Bearer")), "{what}");
        assert_eq!(r.json()["resourceType"], "OperationOutcome");
    }
    // A JWT-looking token (alg none) is just another unknown opaque string.
    let none = format!(
        "{}.{}.",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"sub":"dr-mori","scope":"user/*.cruds"}"#)
    );
    assert_eq!(bearer(&h, &none, "/fhir/Patient/nobody").await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        bearer(&h, &live, "/fhir/Patient/nobody").await.status,
        StatusCode::NOT_FOUND,
        "accepted: no such patient"
    );
    h.node.oauth.revoke(&live).unwrap();
    assert_eq!(bearer(&h, &live, "/fhir/Patient/nobody").await.status, StatusCode::UNAUTHORIZED, "revoked at once");
    h.node.identity.disable("operator:test", "dr-mori").unwrap();
    // Even a token minted after the account was disabled does not act for it.
    let after = issue(now, 900);
    assert_eq!(bearer(&h, &after, "/fhir/Patient/nobody").await.status, StatusCode::UNAUTHORIZED, "account disabled");
}

/// CORS (SMART App Launch 2.x, #28): a browser app on the origin of a registered redirect URI
/// (or one `[server] cors_origins` adds) may call discovery, the token endpoint and the FHIR API;
/// preflights are answered without a token; any other origin, and the login pages, get no CORS
/// headers; credentials (cookies) are never allowed cross-origin.
#[tokio::test]
async fn browser_apps_on_registered_origins_may_call_the_api_and_no_one_else() {
    let h = Harness::with_config(Some("[server]\ncors_origins = [\"https://extra.example\"]\n"));
    patients(&h).await;
    register_app(&h, "viewer", APP_SCOPE, false);
    let app_origin = "http://127.0.0.1:9";
    let send = |method: &str, uri: &str, origin: &str, extra: &[(&str, &str)]| {
        let mut b = Request::builder().method(method).uri(uri).header("origin", origin);
        for (k, v) in extra {
            b = b.header(*k, *v);
        }
        b.body(Body::empty()).unwrap()
    };
    let acao = |r: &Resp| r.header("access-control-allow-origin");

    // Preflight, without a token: allowed origins get the methods and headers, others nothing.
    let pre = [("access-control-request-method", "GET"), ("access-control-request-headers", "authorization")];
    for origin in [app_origin, "https://extra.example"] {
        let r = h.send(send("OPTIONS", "/fhir/Patient", origin, &pre)).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{origin}");
        assert_eq!(acao(&r).as_deref(), Some(origin));
        assert!(r.header("access-control-allow-headers").unwrap().contains("authorization"));
        assert!(r.header("access-control-allow-methods").unwrap().contains("PUT"));
        assert!(r.header("access-control-allow-credentials").is_none());
    }
    for origin in ["https://evil.example", "http://127.0.0.1:10", "null", "http://127.0.0.1:9/cb"] {
        let r = h.send(send("OPTIONS", "/fhir/Patient", origin, &pre)).await;
        assert!(acao(&r).is_none(), "{origin}");
    }

    // Discovery, the token endpoint and the API carry the header for the app's origin.
    let r = h.send(send("GET", "/fhir/.well-known/smart-configuration", app_origin, &[])).await;
    assert_eq!((r.status, acao(&r).as_deref()), (StatusCode::OK, Some(app_origin)));
    let r = h.send(send("GET", "/fhir/metadata", app_origin, &[])).await;
    assert_eq!(acao(&r).as_deref(), Some(app_origin));
    assert_eq!(r.json()["rest"][0]["security"]["cors"], true);
    let r = h
        .send(send("POST", "/oauth/token", app_origin, &[("content-type", "application/x-www-form-urlencoded")]))
        .await;
    assert_eq!(acao(&r).as_deref(), Some(app_origin), "the error too, so the app can read it");
    let token = h.token_for("reader", "system/Patient.rs");
    let auth = format!("Bearer {token}");
    let r = h.send(send("GET", "/fhir/Patient/p1", app_origin, &[("authorization", &auth)])).await;
    assert_eq!((r.status, acao(&r).as_deref()), (StatusCode::OK, Some(app_origin)));
    assert!(r.header("access-control-expose-headers").unwrap().contains("etag"));
    assert!(r.header("vary").unwrap().to_lowercase().contains("origin"));
    // Another origin is served (the token decides) but the browser is not told it may read it.
    let r = h.send(send("GET", "/fhir/Patient/p1", "https://evil.example", &[("authorization", &auth)])).await;
    assert!(acao(&r).is_none());

    // The login and consent pages never take part in CORS.
    for uri in ["/login", "/oauth/authorize?client_id=viewer", "/account"] {
        let r = h.send(send("GET", uri, app_origin, &[])).await;
        assert!(acao(&r).is_none(), "{uri}");
        let r = h.send(send("OPTIONS", uri, app_origin, &pre)).await;
        assert!(acao(&r).is_none(), "{uri}");
    }
}

/// `authorize-post` (advertised in the SMART configuration): an app may send its authorization
/// request as a form POST; it continues as the same request by GET — checked, signed in and
/// consented exactly as one — while a consent decision still needs the page's CSRF token.
#[tokio::test]
async fn an_authorization_request_may_be_posted() {
    let h = Harness::new();
    patients(&h).await;
    register_app(&h, "viewer", APP_SCOPE, false);
    let q = authorize_query("viewer", APP_SCOPE, &[]);
    let post = |body: String, session: Option<&str>| {
        let mut b = Request::builder()
            .method("POST")
            .uri("/oauth/authorize")
            .header("user-agent", UA)
            .header("content-type", "application/x-www-form-urlencoded");
        if let Some(s) = session {
            b = b.header("cookie", format!("mamori_session={s}"));
        }
        b.body(Body::from(body)).unwrap()
    };
    let session = signed_in(&h, "dr-post", &["doctor"], "Practitioner/post");
    let r = h.send(post(q.clone(), Some(&session))).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", String::from_utf8_lossy(&r.body));
    let to = r.header("location").unwrap();
    assert!(to.starts_with("/oauth/authorize?"), "{to}");
    let page = browse(&h, Some(&session), &to).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(String::from_utf8_lossy(&page.body).contains("アクセスの許可"));
    // The same as its GET: a bad request is refused the same way (here: an unknown client).
    let bad = authorize_query("nobody", APP_SCOPE, &[]);
    let r = h.send(post(bad, Some(&session))).await;
    let to = r.header("location").unwrap();
    let r = browse(&h, Some(&session), &to).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // A decision without the page's CSRF token is refused, never taken as a request.
    let r = h.send(post(format!("{q}&decision=allow&patient=p1"), Some(&session))).await;
    assert!(r.header("location").is_none_or(|l| !l.starts_with(REDIRECT)), "no code without consent");
    assert_ne!(r.status, StatusCode::OK);
}

/// A launch up to the token response for `user` (a fresh session), returning (session, tokens).
async fn launched(h: &Harness, user: &str, fhir_user: &str) -> (String, Value) {
    let session = signed_in(h, user, &["doctor"], fhir_user);
    let q = authorize_query("viewer", "user/*.rs openid fhirUser profile", &[]);
    let page = browse(h, Some(&session), &format!("/oauth/authorize?{q}")).await;
    assert_eq!(page.status, StatusCode::OK, "{}", String::from_utf8_lossy(&page.body));
    let r = consent(h, &session, &page, "allow", None).await;
    let code = query_param(&r.header("location").unwrap(), "code").unwrap();
    let base = format!("grant_type=authorization_code&client_id=viewer&redirect_uri={}", enc(REDIRECT));
    let t = token(h, &format!("{base}&code={code}&code_verifier={VERIFIER}")).await;
    assert_eq!(t.status, StatusCode::OK, "{}", String::from_utf8_lossy(&t.body));
    (session, t.json())
}

#[tokio::test]
async fn openid_userinfo_answers_a_persons_token_within_its_scopes() {
    let h = Harness::new();
    register_app(&h, "viewer", APP_SCOPE, false);
    let (_, t) = launched(&h, "dr-ito", "Practitioner/ito").await;
    let access = t["access_token"].as_str().unwrap();
    let disc = browse(&h, None, "/.well-known/openid-configuration").await.json();
    assert_eq!(disc["userinfo_endpoint"], "http://mamori.test/oauth/userinfo");
    assert_eq!(disc["end_session_endpoint"], "http://mamori.test/oauth/logout");
    let r = bearer(&h, access, "/oauth/userinfo").await;
    assert_eq!(r.status, StatusCode::OK, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    let u = r.json();
    assert_eq!(u["sub"], "dr-ito");
    assert_eq!(u["preferred_username"], "dr-ito");
    assert_eq!(u["fhirUser"], "http://mamori.test/fhir/Practitioner/ito");
    let id = verify_id_token(&h, t["id_token"].as_str().unwrap(), "viewer").await;
    assert_eq!(u["sub"], id["sub"], "UserInfo's sub is the ID token's");
    // POST works too (OIDC Core §5.3.1).
    let r = h
        .send(
            Request::builder()
                .method("POST")
                .uri("/oauth/userinfo")
                .header("authorization", format!("Bearer {access}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    // No token, a forged one, an application's own token (no person, no openid): RFC 6750.
    let r = browse(&h, None, "/oauth/userinfo").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.header("www-authenticate").unwrap().starts_with("Bearer"));
    let r = bearer(&h, "not-a-token", "/oauth/userinfo").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.header("www-authenticate").unwrap().contains("invalid_token"));
    let system = h.token_for("backend-x", "system/Patient.rs");
    let r = bearer(&h, &system, "/oauth/userinfo").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.header("www-authenticate").unwrap().contains("insufficient_scope"));
    // A person's token without `openid`.
    let plain = h.user_token("dr-kato", &["doctor"], "Practitioner/kato");
    assert_eq!(bearer(&h, &plain, "/oauth/userinfo").await.status, StatusCode::FORBIDDEN);
    // The account disabled: the token no longer tells who it was.
    h.node.identity.leave("operator:test", "dr-ito").unwrap();
    assert_eq!(bearer(&h, access, "/oauth/userinfo").await.status, StatusCode::UNAUTHORIZED);
}

async fn session_alive(h: &Harness, session: &str) -> bool {
    browse(h, Some(session), "/account").await.status == StatusCode::OK
}

#[tokio::test]
async fn rp_initiated_logout_ends_the_session_and_returns_only_to_a_registered_uri() {
    let h = Harness::new();
    register_app(&h, "viewer", APP_SCOPE, false);
    let (session, t) = launched(&h, "dr-mori", "Practitioner/mori").await;
    let hint = t["id_token"].as_str().unwrap();
    assert!(session_alive(&h, &session).await);

    // An unregistered return address is never followed, even with a valid hint.
    let evil = format!("/oauth/logout?id_token_hint={hint}&post_logout_redirect_uri={}", enc("https://evil.example/"));
    let r = browse(&h, Some(&session), &evil).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.header("location").is_none());
    assert!(session_alive(&h, &session).await, "a refused request ends nothing");
    // A forged hint is refused.
    let forged = format!("{}.{}", &hint[..hint.rfind('.').unwrap()], "AAAA");
    let r = browse(&h, Some(&session), &format!("/oauth/logout?id_token_hint={forged}")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // A return address without a client to check it against is refused.
    let r = browse(&h, Some(&session), &format!("/oauth/logout?post_logout_redirect_uri={}", enc(REDIRECT))).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    // Without a hint the person confirms first (a link alone signs no one out), in English here.
    let r = browse(
        &h,
        Some(&session),
        &format!("/oauth/logout?client_id=viewer&ui_locales=en-US&state=s9&post_logout_redirect_uri={}", enc(REDIRECT)),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let html = String::from_utf8_lossy(&r.body).to_string();
    assert!(html.contains(r#"<html lang="en">"#) && html.contains("Sign out?"), "{html}");
    assert!(session_alive(&h, &session).await);
    // The confirmation without its CSRF token does nothing.
    let post = |body: String, cookie: String| {
        Request::builder()
            .method("POST")
            .uri("/oauth/logout")
            .header("user-agent", UA)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("cookie", cookie)
            .body(Body::from(body))
            .unwrap()
    };
    let r = h
        .send(post(
            format!("client_id=viewer&post_logout_redirect_uri={}", enc(REDIRECT)),
            format!("mamori_session={session}"),
        ))
        .await;
    assert_ne!(r.status, StatusCode::SEE_OTHER);
    assert!(session_alive(&h, &session).await);
    let csrf = csrf_of(&r_page(&h, &session).await);
    let r = h
        .send(post(
            format!("csrf={csrf}&client_id=viewer&state=s9&post_logout_redirect_uri={}", enc(REDIRECT)),
            format!("mamori_session={session}; mamori_csrf={csrf}"),
        ))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("location").as_deref(), Some(format!("{REDIRECT}?state=s9").as_str()));
    assert!(!session_alive(&h, &session).await, "the session ended");

    // With a hint naming the signed-in person: signed out at once, back to the app with state.
    let (session, t) = launched(&h, "dr-mori2", "Practitioner/mori2").await;
    let hint = t["id_token"].as_str().unwrap();
    let r = browse(
        &h,
        Some(&session),
        &format!("/oauth/logout?id_token_hint={hint}&state=x%201&post_logout_redirect_uri={}", enc(REDIRECT)),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.header("location").as_deref(), Some(format!("{REDIRECT}?state=x%201").as_str()));
    assert!(!session_alive(&h, &session).await);
    // The sign-out is in the audit trail with the session's duration.
    let entries: Vec<Value> = h
        .node
        .store
        .query(&mamori_audit::EntryQuery::default())
        .unwrap()
        .iter()
        .map(|(_, e)| serde_json::from_slice(e).unwrap())
        .collect();
    assert!(entries.iter().any(|e| e["action"] == "logout" && e["actor"]["id"] == "dr-mori2"));
    // A hint for another person than the one signed in asks first.
    let (other_session, _) = launched(&h, "dr-mori3", "Practitioner/mori3").await;
    let r = browse(&h, Some(&other_session), &format!("/oauth/logout?id_token_hint={hint}")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(session_alive(&h, &other_session).await);
}

/// The logout confirmation page (for its CSRF token).
async fn r_page(h: &Harness, session: &str) -> Resp {
    browse(h, Some(session), "/oauth/logout?client_id=viewer").await
}

#[tokio::test]
async fn ui_locales_chooses_the_language_of_sign_in_and_consent() {
    let h = Harness::new();
    register_app(&h, "viewer", APP_SCOPE, false);
    let q = authorize_query("viewer", APP_SCOPE, &[("ui_locales", "fr en-GB ja")]);
    let r = browse(&h, None, &format!("/oauth/authorize?{q}")).await;
    let to = r.header("location").unwrap();
    assert!(to.starts_with("/login?lang=en&next="), "{to}");
    let login = browse(&h, None, &to).await;
    assert!(String::from_utf8_lossy(&login.body).contains(r#"<html lang="en">"#));
    let session = signed_in(&h, "dr-en", &["doctor"], "Practitioner/en");
    let page = browse(&h, Some(&session), &format!("/oauth/authorize?{q}")).await;
    assert!(String::from_utf8_lossy(&page.body).contains(r#"<html lang="en">"#));
    let q = authorize_query("viewer", APP_SCOPE, &[("ui_locales", "ja-JP")]);
    let page = browse(&h, Some(&session), &format!("/oauth/authorize?{q}")).await;
    assert!(String::from_utf8_lossy(&page.body).contains(r#"<html lang="ja">"#));
}

/// The launch page and the redirect page of a browser SMART app built on the official JS client.
fn smart_js_app(dir: &std::path::Path, iss: &str, redirect: &str) {
    let fhirclient = crate::clients::npm_prefix("smartjs", &["fhirclient@2.6.3"], "fhirclient");
    std::fs::create_dir_all(dir).unwrap();
    std::fs::copy(fhirclient.join("node_modules/fhirclient/build/fhir-client.js"), dir.join("fhir-client.js")).unwrap();
    let scope = "openid fhirUser launch/patient offline_access patient/Patient.rs patient/Observation.rs";
    std::fs::write(
        dir.join("launch.html"),
        format!(
            r#"<!doctype html><meta charset="utf-8"><title>launch</title><script src="fhir-client.js"></script>
<script>FHIR.oauth2.authorize({{ iss: "{iss}", clientId: "viewer-js", scope: "{scope}", redirectUri: "{redirect}", pkceMode: "required" }});</script>"#
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("app.html"),
        r#"<!doctype html><meta charset="utf-8"><title>app</title><script src="fhir-client.js"></script>
<pre id="result"></pre>
<script>
const show = r => { document.getElementById("result").textContent = JSON.stringify(r); };
FHIR.oauth2.ready().then(async client => {
  const r = { patientId: client.patient.id, scope: client.state.tokenResponse.scope };
  const p = await client.patient.read();
  r.family = (p.name || []).map(n => n.family).join(" ");
  let pages = 0, observations = 0;
  await client.request("Observation?patient=" + encodeURIComponent(client.patient.id) + "&_count=10",
    { pageLimit: 0, flat: true, onPage: entries => { pages += 1; observations += entries.length; } });
  r.pages = pages; r.observations = observations;
  const before = client.state.tokenResponse;
  const access = before.access_token, refresh = before.refresh_token;
  await client.refresh();
  r.refreshed = true;
  r.newAccessToken = client.state.tokenResponse.access_token !== access;
  r.newRefreshToken = client.state.tokenResponse.refresh_token !== refresh;
  r.afterRefresh = (await client.patient.read()).id;
  show(r);
}).catch(e => show({ error: String(e && e.stack || e) }));
</script>"#,
    )
    .unwrap();
}

/// The official SMART JavaScript client (fhirclient 2.6.3, its published browser build) served
/// from an origin of its own and run in Chromium: standalone launch with PKCE through the login
/// and consent pages, the patient read, Observations paged, the token refreshed (a public client's
/// refresh without client_id, as this client sends it) — every API call crossing CORS.
#[test]
fn the_official_smart_js_client_launches_from_another_origin_in_a_browser() {
    use crate::binary::{cli, http, start};
    crate::login::chromium();
    let deps = crate::support::pip_target("smartjsdeps", &["selenium==4.27.1", "pyotp==2.9.0"], &["selenium", "pyotp"]);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    let _db = crate::support::store_for(&dir);
    let d = dir.to_str().unwrap();
    assert!(cli(&["init", "--data-dir", d]).status.success());
    crate::login::add_user(&dir, "sato", PW);
    let out = cli(&["user", "enroll-totp", "sato", "--data-dir", d]);
    let uri = String::from_utf8(out.stdout).unwrap();
    let secret = uri.split("secret=").nth(1).unwrap().split('&').next().unwrap().to_string();
    // Two origins: the server at localhost, the app at 127.0.0.1 on a port of its own.
    let free = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (port, app_port) = (free(), free());
    let base = format!("http://localhost:{port}");
    let redirect = format!("http://127.0.0.1:{app_port}/app.html");
    let out = cli(&[
        "client",
        "add",
        "viewer-js",
        "--redirect-uri",
        &redirect,
        "--scope",
        "openid fhirUser launch/patient offline_access patient/*.rs",
        "--name",
        "診療ビューア (JS)",
        "--data-dir",
        d,
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let app_dir = tmp.path().join("app");
    smart_js_app(&app_dir, &format!("{base}/fhir"), &redirect);

    let server = start(&dir, &["--listen", &format!("127.0.0.1:{port}"), "--public-url", &base]);
    let system = crate::binary::token(server.addr, &dir, "loader");
    let put = |path: &str, body: Value| {
        let r = http(
            server.addr,
            "PUT",
            path,
            &[("Authorization", &format!("Bearer {system}")), ("Content-Type", "application/fhir+json")],
            body.to_string().as_bytes(),
        )
        .unwrap();
        assert!(r.status == 200 || r.status == 201, "{}", String::from_utf8_lossy(&r.body));
    };
    put(
        "/fhir/Patient/pt-yamada",
        json!({"resourceType": "Patient", "id": "pt-yamada",
        "identifier": [{"system": "urn:oid:1.2.392.100495.20.3.51.11311234567", "value": "00012345"}],
        "name": [{"use": "official", "family": "山田", "given": ["太郎"]}], "gender": "male", "birthDate": "1970-01-02"}),
    );
    put(
        "/fhir/Encounter/enc-1",
        json!({"resourceType": "Encounter", "id": "enc-1", "status": "in-progress",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": "Patient/pt-yamada"}, "participant": [{"individual": {"reference": "Practitioner/sato"}}]}),
    );
    for i in 0..23 {
        put(
            &format!("/fhir/Observation/bp-{i}"),
            json!({"resourceType": "Observation", "id": format!("bp-{i}"), "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
            "subject": {"reference": "Patient/pt-yamada"},
            "valueQuantity": {"value": 120 + i, "unit": "mm[Hg]"}}),
        );
    }
    // Another patient's Observation, outside the app's patient context: never counted.
    put("/fhir/Patient/other", json!({"resourceType": "Patient", "id": "other"}));
    put(
        "/fhir/Observation/other-bp",
        json!({"resourceType": "Observation", "id": "other-bp", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]}, "subject": {"reference": "Patient/other"}}),
    );
    crate::support::python_ok(
        &deps,
        "smart_js_browser.py",
        &[
            &base,
            app_dir.to_str().unwrap(),
            &app_port.to_string(),
            "sato",
            PW,
            NEW_PW,
            &secret,
            "00012345",
            "pt-yamada",
            "23",
        ],
    );
    // The app's reads are in the audit trail, as the person through the app.
    drop(server);
    let out = cli(&["audit", "export", "--format", "ndjson", "--data-dir", d]);
    let log = String::from_utf8_lossy(&out.stdout);
    let searches: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e.to_string().contains("viewer-js") && e.to_string().contains("Observation"))
        .collect();
    assert!(searches.len() >= 3, "every page read is audited with the app: {log}");
}
