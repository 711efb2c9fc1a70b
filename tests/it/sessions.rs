//! Issue #22 item 14: browser sessions under attack, driven through the real login pages. The CSRF
//! token is bound to the session, requests from other sites are refused (`Origin`,
//! `Sec-Fetch-Site`), the session id changes at every login step, a token used from another browser
//! ends the session, and over HTTPS the cookies are `__Host-` prefixed.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use mamori_audit::EntryQuery;

use crate::identity::base32_decode;
use crate::support::{Harness, Resp, enc, now_secs};

const PW: &str = "k7#Vq2!mZp-w9Xr";
const NEW_PW: &str = "Zq9!tRe4#vWx-7Lp";
const UA: &str = "session-test-browser/1.0";

/// A browser: a cookie jar, a User-Agent, and the pages it was last shown.
struct Browser<'a> {
    h: &'a Harness,
    ua: String,
    jar: BTreeMap<String, String>,
}

impl<'a> Browser<'a> {
    fn new(h: &'a Harness) -> Self {
        Browser { h, ua: UA.into(), jar: BTreeMap::new() }
    }

    fn cookie_header(&self) -> String {
        self.jar.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ")
    }

    fn keep(&mut self, r: &Resp) {
        for c in r.headers.get_all("set-cookie") {
            let c = c.to_str().unwrap();
            let (kv, attrs) = c.split_once(';').unwrap_or((c, ""));
            let (k, v) = kv.split_once('=').unwrap();
            if attrs.contains("Max-Age=0") {
                self.jar.remove(k);
            } else {
                self.jar.insert(k.to_string(), v.to_string());
            }
        }
    }

    async fn get(&mut self, uri: &str) -> Resp {
        let req = Request::builder()
            .uri(uri)
            .header("user-agent", &self.ua)
            .header("cookie", self.cookie_header())
            .body(Body::empty())
            .unwrap();
        let r = self.h.send(req).await;
        self.keep(&r);
        r
    }

    /// Posts a form with these fields and extra headers (as a page of this site would, unless
    /// the headers say otherwise).
    async fn post(&mut self, uri: &str, fields: &[(&str, &str)], headers: &[(&str, &str)]) -> Resp {
        let body = fields.iter().map(|(k, v)| format!("{k}={}", enc(v))).collect::<Vec<_>>().join("&");
        let mut b = Request::builder()
            .method("POST")
            .uri(uri)
            .header("user-agent", &self.ua)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("cookie", self.cookie_header());
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let r = self.h.send(b.body(Body::from(body)).unwrap()).await;
        self.keep(&r);
        r
    }

    fn session(&self) -> Option<String> {
        self.jar.get("mamori_session").or_else(|| self.jar.get("__Host-mamori_session")).cloned()
    }
}

fn csrf_of(r: &Resp) -> String {
    let html = String::from_utf8_lossy(&r.body);
    let at = html.find(r#"name="csrf" value=""#).unwrap_or_else(|| panic!("a CSRF field in {html}")) + 19;
    html[at..at + 32].to_string()
}

fn location(r: &Resp) -> String {
    r.header("location").unwrap_or_default()
}

/// An account with TOTP: its seed.
fn account(h: &Harness, user: &str) -> Vec<u8> {
    h.add_user(user, &["doctor"], &format!("Practitioner/{user}"));
    let uri = h.node.identity.enroll_totp("operator:test", user, "Mamori", now_secs()).unwrap();
    base32_decode(uri.split("secret=").nth(1).unwrap().split('&').next().unwrap())
}

/// Signs `user` in through the pages, returning the session id after each step: password,
/// second factor, password change.
async fn sign_in(b: &mut Browser<'_>, user: &str, seed: &[u8]) -> [String; 3] {
    let page = b.get("/login?next=/account").await;
    let r =
        b.post("/login?next=/account", &[("username", user), ("password", PW), ("csrf", &csrf_of(&page))], &[]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", String::from_utf8_lossy(&r.body));
    assert!(location(&r).starts_with("/login/totp"), "{}", location(&r));
    let after_password = b.session().unwrap();
    let page = b.get(&location(&r)).await;
    let code = mamori_identity::totp::code_at(seed, now_secs()).unwrap();
    let r = b.post("/login/totp?next=/account", &[("code", &code), ("csrf", &csrf_of(&page))], &[]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", String::from_utf8_lossy(&r.body));
    assert!(location(&r).starts_with("/login/password"), "{}", location(&r));
    let after_totp = b.session().unwrap();
    let page = b.get(&location(&r)).await;
    let form = [("current_password", PW), ("new_password", NEW_PW), ("new_password2", NEW_PW)];
    let csrf = csrf_of(&page);
    let mut fields = form.to_vec();
    fields.push(("csrf", &csrf));
    let r = b.post("/login/password?next=/account", &fields, &[]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(location(&r), "/account");
    [after_password, after_totp, b.session().unwrap()]
}

/// Whether a session id opens `/account` from this browser.
async fn opens_account(h: &Harness, session: &str, ua: &str) -> bool {
    let mut b = Browser::new(h);
    b.ua = ua.into();
    b.jar.insert("mamori_session".into(), session.into());
    b.get("/account").await.status == StatusCode::OK
}

#[tokio::test]
async fn r22_the_session_id_changes_at_every_login_step_and_a_planted_one_dies() {
    let h = Harness::new();
    let seed = account(&h, "kato");
    // An attacker plants a session id of their own (session fixation) before the victim signs in.
    h.add_user("mallory", &["clerk"], "Practitioner/mallory");
    let auth = h.node.identity.authenticate("mallory", PW, None, now_secs(), None).unwrap().unwrap();
    let (planted, _) = h.node.identity.start_session(&auth, UA, None, now_secs()).unwrap();
    let mut b = Browser::new(&h);
    b.jar.insert("mamori_session".into(), planted.clone());
    let ids = sign_in(&mut b, "kato", &seed).await;
    assert!(h.node.identity.session(&planted, UA, now_secs()).unwrap().is_err(), "the planted id ended at sign-in");
    assert!(!ids.contains(&planted));
    assert!(ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2], "a new id at every step: {ids:?}");
    assert!(!opens_account(&h, &ids[0], UA).await && !opens_account(&h, &ids[1], UA).await, "earlier ids are dead");
    assert!(opens_account(&h, &ids[2], UA).await);
    let acct = b.get("/account").await;
    assert_eq!(acct.status, StatusCode::OK);
    assert!(String::from_utf8_lossy(&acct.body).contains("kato"));
}

#[tokio::test]
async fn r22_a_csrf_token_works_only_with_its_own_session_and_only_from_this_site() {
    let h = Harness::new();
    let (seed_a, seed_b) = (account(&h, "kato"), account(&h, "endo"));
    let mut a = Browser::new(&h);
    let mut b = Browser::new(&h);
    sign_in(&mut a, "kato", &seed_a).await;
    sign_in(&mut b, "endo", &seed_b).await;
    let token_a = csrf_of(&a.get("/account").await);
    let token_b = csrf_of(&b.get("/account").await);
    assert_ne!(token_a, token_b);

    // Another session's token, and the old double-submit trick (a cookie the attacker chose with
    // the same value in the form), are both refused; B stays signed in.
    let r = b.post("/logout", &[("csrf", &token_a)], &[]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let forged = "0123456789abcdef0123456789abcdef";
    b.jar.insert("mamori_csrf".into(), forged.into());
    let r = b.post("/logout", &[("csrf", forged)], &[]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(b.get("/account").await.status, StatusCode::OK, "still signed in");

    // Its own token, sent from another site: refused however the browser says so.
    for headers in [
        vec![("origin", "https://evil.example")],
        vec![("origin", "null")],
        vec![("sec-fetch-site", "cross-site")],
        vec![("sec-fetch-site", "same-site"), ("origin", "http://mamori.test")],
        vec![("sec-fetch-site", "same-origin"), ("origin", "http://evil.example")],
    ] {
        let r = b.post("/logout", &[("csrf", &token_b)], &headers).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{headers:?}");
    }
    assert_eq!(b.get("/account").await.status, StatusCode::OK, "still signed in");

    // From this site (as a browser says it: the public origin, or the host it was reached at).
    let r = b
        .post("/logout", &[("csrf", &token_b)], &[("sec-fetch-site", "same-origin"), ("origin", "http://mamori.test")])
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert!(b.session().is_none(), "the cookie is cleared");
    let token_a = csrf_of(&a.get("/account").await);
    let r = a
        .post("/logout", &[("csrf", &token_a)], &[("host", "10.0.0.5:8080"), ("origin", "http://10.0.0.5:8080")])
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);

    // Before sign-in the token is bound to the pre-session cookie: another browser's is refused.
    let mut c = Browser::new(&h);
    let mut d = Browser::new(&h);
    let token_c = csrf_of(&c.get("/login").await);
    let _ = d.get("/login").await;
    let r = d.post("/login", &[("username", "kato"), ("password", NEW_PW), ("csrf", &token_c)], &[]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(d.session().is_none());
    let r = c.post("/login", &[("username", "kato"), ("password", NEW_PW), ("csrf", &token_c)], &[]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn r22_a_session_used_from_another_browser_ends_and_is_reported() {
    let h = Harness::new();
    let seed = account(&h, "kato");
    let mut b = Browser::new(&h);
    let [_, _, session] = sign_in(&mut b, "kato", &seed).await;
    assert!(opens_account(&h, &session, UA).await);
    assert!(!opens_account(&h, &session, "thief-browser/9.9").await);
    assert!(!opens_account(&h, &session, UA).await, "the session ended for its owner too");
    let alerts = h.node.store.query(&EntryQuery { action: Some("alert-session".into()), ..EntryQuery::default() });
    assert_eq!(alerts.unwrap().len(), 1);
}

#[tokio::test]
async fn r22_over_https_the_cookies_are_host_prefixed_and_secure() {
    let h = Harness::new().with_public_url("https://mamori.test");
    let seed = account(&h, "kato");
    let mut b = Browser::new(&h);
    let page = b.get("/login").await;
    let set: Vec<String> = page.headers.get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_string()).collect();
    let pre = set.iter().find(|c| c.starts_with("__Host-mamori_csrf=")).unwrap_or_else(|| panic!("{set:?}"));
    assert!(pre.contains("; Secure") && pre.contains("; Path=/") && pre.contains("HttpOnly"), "{pre}");
    assert!(!pre.to_ascii_lowercase().contains("domain="), "{pre}");
    let [.., session] = sign_in(&mut b, "kato", &seed).await;
    assert!(b.jar.contains_key("__Host-mamori_session") && !b.jar.contains_key("mamori_session"));
    // The unprefixed name (which a sibling host could plant) is not read over HTTPS.
    let mut plain = Browser::new(&h);
    plain.jar.insert("mamori_session".into(), session.clone());
    assert_eq!(plain.get("/account").await.status, StatusCode::SEE_OTHER);
    assert_eq!(b.get("/account").await.status, StatusCode::OK);
}
