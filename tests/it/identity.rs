//! Issue #4 (part): accounts, MHLW password rules, TOTP, lockout, lifecycle, audit of identity
//! events — through the identity service with injected time, and the `mamori user` CLI.

use axum::http::StatusCode;
use mamori_audit::{AuditRecord, EntryQuery};
use mamori_identity::service::NewAccount;
use mamori_identity::totp;

use crate::support::Harness;

const T0: i64 = 1_900_000_000;
const PW: &str = "k7#Vq2!mZp-w9";

pub(crate) fn base32_decode(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let (mut buf, mut bits) = (0u32, 0);
    for c in s.chars() {
        let v = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567".find(c).unwrap() as u32;
        buf = (buf << 5) | v;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
        }
    }
    out
}

fn add(h: &Harness, user: &str) {
    h.node
        .identity
        .add(
            "operator:admin",
            NewAccount {
                username: user.into(),
                roles: vec!["doctor".into()],
                display_name: Some("佐藤 花子".into()),
                fhir_user: Some(format!("Practitioner/{user}")),
                department: Some("内科".into()),
                proofing: Some(mamori_identity::account::Proofing {
                    method: "マイナンバーカード eKYC".into(),
                    verifier: "人事課 田中".into(),
                    date: "2026-11-01".into(),
                }),
            },
            PW,
            T0,
        )
        .unwrap();
}

fn events(h: &Harness, action: &str) -> Vec<AuditRecord> {
    h.node
        .store
        .query(&EntryQuery { action: Some(action.into()), ..EntryQuery::default() })
        .unwrap()
        .iter()
        .map(|(_, e)| serde_json::from_slice(e).unwrap())
        .collect()
}

#[tokio::test]
async fn password_then_totp_with_replay_protection_and_uniform_failures() {
    let h = Harness::new();
    add(&h, "sato");
    let id = &h.node.identity;
    let uri = id.enroll_totp("operator:admin", "sato", "Mamori", T0).unwrap();
    assert!(uri.starts_with("otpauth://totp/Mamori:sato?secret="));
    let secret = base32_decode(uri.split("secret=").nth(1).unwrap().split('&').next().unwrap());
    // The seed is stored sealed, never in clear.
    let creds = h.node.store.credentials("sato").unwrap().unwrap();
    assert!(!creds.totp.as_ref().unwrap().sealed_secret.contains(&uri.split("secret=").nth(1).unwrap()[..8]));

    let t = T0 + 100;
    let code = totp::code_at(&secret, t).unwrap();
    let ok = id.authenticate("sato", PW, Some(&code), t, Some("10.0.0.5")).unwrap().unwrap();
    assert!(ok.totp_verified);
    assert!(ok.must_change_password, "the initial password must be changed at first login");
    assert_eq!(ok.account.fhir_user.as_deref(), Some("Practitioner/sato"));
    // The same code again: refused (each code once), and it says only 認証に失敗しました.
    let r = id.authenticate("sato", PW, Some(&code), t + 2, None).unwrap().unwrap_err();
    assert_eq!(r.message.ja, "認証に失敗しました");
    for (user, pw, code) in [("sato", "wrong-password#1", None), ("nobody", PW, None), ("sato", PW, Some("000000"))] {
        let r = id.authenticate(user, pw, code, t + 60, None).unwrap().unwrap_err();
        assert_eq!(r.message.ja, "認証に失敗しました", "{user}");
    }
    let logins = events(&h, "login");
    assert!(
        logins.iter().any(|e| e.outcome == mamori_audit::Outcome::Success && e.source.as_deref() == Some("10.0.0.5"))
    );
    assert!(logins.iter().any(|e| e.detail.as_deref() == Some("wrong or reused one-time code")), "the audit knows why");
    assert!(!serde_json::to_string(&logins).unwrap().contains(PW), "secrets are never in the trail");

    // Change the password: the old one cannot be reused.
    let e = id.change_password("sato", PW, PW, t).unwrap_err();
    assert!(e.to_string().contains("last 5"), "{e}");
    id.change_password("sato", PW, "Zq9!tRe4#vWx", t).unwrap();
    let ok = id.authenticate("sato", "Zq9!tRe4#vWx", None, t + 200, None).unwrap().unwrap();
    assert!(!ok.must_change_password);
}

#[tokio::test]
async fn lockout_delays_then_locks_and_alerts() {
    let h = Harness::new();
    add(&h, "ito");
    let id = &h.node.identity;
    let mut t = T0;
    for _ in 0..10 {
        t += 60;
        let r = id.authenticate("ito", "wrong#pass9x", None, t, None).unwrap().unwrap_err();
        assert_eq!(r.message.ja, "認証に失敗しました");
    }
    // Locked: even the right password fails, and a retry time is given.
    let r = id.authenticate("ito", PW, None, t + 5, None).unwrap().unwrap_err();
    assert!(r.retry_after.unwrap() > 1700);
    assert_eq!(events(&h, "alert-lock").len(), 1, "the lock is an alert for the security manager");
    // An early retry after one failure is refused without checking the password.
    add(&h, "kato");
    id.authenticate("kato", "wrong#pass9x", None, T0, None).unwrap().unwrap_err();
    let r = id.authenticate("kato", PW, None, T0, None).unwrap().unwrap_err();
    assert_eq!(r.retry_after, Some(1));
    assert!(id.authenticate("kato", PW, None, T0 + 1, None).unwrap().is_ok());
    // Admin unlock.
    id.unlock("operator:admin", "ito").unwrap();
    assert!(id.authenticate("ito", PW, None, t + 10, None).unwrap().is_ok());
    // Or the lock runs out.
}

#[tokio::test]
async fn concurrent_failures_are_each_counted() {
    // Attempts that pass the gate together (several browsers, or several nodes) each count: the
    // counter is changed atomically in the store, not read here and written back.
    let h = Harness::new();
    add(&h, "ueda");
    let id = h.node.identity.clone();
    std::thread::scope(|s| {
        for _ in 0..6 {
            let id = id.clone();
            s.spawn(move || id.authenticate("ueda", "wrong#pass9x", None, T0, None).unwrap().unwrap_err());
        }
    });
    let state = mamori_identity::service::IdentityStore::lockout(&*h.node.store, "ueda").unwrap();
    assert!(state.failures >= 1 && state.failures <= 6);
    let counted = events(&h, "login").iter().filter(|e| e.detail.as_deref() == Some("wrong password")).count();
    assert_eq!(state.failures as usize, counted, "every failure that reached the password check is counted");
}

#[tokio::test]
async fn a_one_time_code_used_concurrently_succeeds_once() {
    // RFC 6238 §5.2: once a code has been accepted it must not be accepted again — also when the
    // two uses race (two browsers, or two nodes on one database).
    let h = Harness::new();
    add(&h, "noda");
    let id = h.node.identity.clone();
    let uri = id.enroll_totp("operator:admin", "noda", "Mamori", T0).unwrap();
    let secret = base32_decode(uri.split("secret=").nth(1).unwrap().split('&').next().unwrap());
    let t = T0 + 100;
    let code = totp::code_at(&secret, t).unwrap();
    let accepted = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4)
            .map(|_| {
                let (id, code) = (id.clone(), code.clone());
                s.spawn(move || id.authenticate("noda", PW, Some(&code), t, None).unwrap().is_ok())
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).filter(|ok| *ok).count()
    });
    assert_eq!(accepted, 1, "the code is accepted exactly once");
}

#[tokio::test]
async fn leave_revokes_tokens_transfer_opens_a_review_and_coverage_counts() {
    let h = Harness::new();
    add(&h, "mori");
    add(&h, "abe");
    let token = h
        .node
        .oauth
        .issue_for_user("test-app", "mori", Some("Practitioner/mori"), "user/*.cruds", 900, crate::support::now_secs())
        .unwrap()
        .access_token;
    let r = h
        .send(
            axum::http::Request::builder()
                .uri("/fhir/Patient/x")
                .header("authorization", format!("Bearer {token}"))
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(h.node.identity.leave("operator:hr", "mori").unwrap(), 1);
    let r = h
        .send(
            axum::http::Request::builder()
                .uri("/fhir/Patient/x")
                .header("authorization", format!("Bearer {token}"))
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "a leaver's tokens stop working at once");
    assert!(h.node.identity.enable("operator:hr", "mori", None).is_err(), "a leaver is never re-enabled");
    assert!(h.node.identity.authenticate("mori", PW, None, T0, None).unwrap().is_err());

    h.node.identity.transfer("operator:hr", "abe", Some("外科".into()), Some(vec!["nurse".into()]), None).unwrap();
    assert_eq!(events(&h, "access-review-opened").len(), 1);
    let history = h.node.store.config_history("account", "abe").unwrap();
    assert_eq!(history.len(), 2, "account definitions are versioned");
    assert_eq!(history[1].reason, "transfer (人事異動)");

    let c = h.node.identity.coverage().unwrap();
    assert_eq!((c.active, c.with_second_factor), (1, 0));
    h.node.identity.enroll_totp("operator:admin", "abe", "Mamori", T0).unwrap();
    assert_eq!(h.node.identity.coverage().unwrap().percent(), 100.0);

    // One account per person; bad input is refused.
    let dup = h.node.identity.add(
        "operator:admin",
        NewAccount {
            username: "abe".into(),
            roles: vec!["nurse".into()],
            display_name: None,
            fhir_user: None,
            department: None,
            proofing: None,
        },
        PW,
        T0,
    );
    assert!(dup.unwrap_err().to_string().contains("already exists"));
    let bad = h.node.identity.add(
        "operator:admin",
        NewAccount {
            username: "Bad Name".into(),
            roles: vec!["nurse".into()],
            display_name: None,
            fhir_user: None,
            department: None,
            proofing: None,
        },
        PW,
        T0,
    );
    assert!(bad.is_err());
}

#[test]
fn the_cli_issues_accounts_and_refuses_bad_passwords_in_both_languages() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("d");
    let _db = crate::support::store_for(&d);
    let d = d.to_str().unwrap();
    let run = |args: &[&str], stdin: &str| {
        let mut c = Command::new(crate::binary::BIN)
            .args(args)
            .args(["--data-dir", d])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        c.wait_with_output().unwrap()
    };
    let out = run(
        &["user", "add", "tanaka", "--role", "nurse", "--display-name", "田中 一郎", "--password-stdin"],
        "password123\n",
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("パスワードが要件を満たしません") && err.contains("the password was refused"), "{err}");
    assert!(err.contains("よく使われる") && err.contains("commonly used"), "{err}");
    let out = run(
        &["user", "add", "tanaka", "--role", "nurse", "--display-name", "田中 一郎", "--password-stdin"],
        &format!("{PW}\n"),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = run(&["user", "enroll-totp", "tanaka"], "");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("otpauth://totp/Mamori:tanaka?secret="));
    let out = run(&["user", "list"], "");
    assert!(String::from_utf8_lossy(&out.stdout).contains("tanaka\tactive\tnurse\t2fa:totp"));
    let out = run(&["user", "show", "tanaka"], "");
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["must_change_password"], true);
    assert!(j.get("password_hash").is_none(), "no secrets shown");
    let out = run(&["user", "coverage"], "");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success() && text.contains("100.0%"), "{text}");
    assert!(text.contains("要素別 / by factor: 認証アプリ (TOTP): 1"), "{text}");
    let out = run(&["user", "leave", "tanaka"], "");
    assert!(out.status.success());
    let out = run(&["user", "enable", "tanaka"], "");
    assert_eq!(out.status.code(), Some(2));
    let out = run(&["user", "add", "x", "--role", "nurse"], "");
    assert_eq!(out.status.code(), Some(2), "--password-stdin is required: passwords never go on the command line");
}

#[tokio::test]
async fn recovery_codes_work_once_in_place_of_the_authenticator() {
    let h = Harness::new();
    add(&h, "endo");
    let id = &h.node.identity;
    id.enroll_totp("operator:admin", "endo", "Mamori", T0).unwrap();
    let codes = id.new_recovery_codes("operator:admin", "endo").unwrap();
    assert_eq!(codes.len(), 10);
    assert!(codes.iter().all(|c| c.len() == 19 && c.matches('-').count() == 3));
    let stored = h.node.store.credentials("endo").unwrap().unwrap().recovery;
    assert!(!stored.iter().any(|s| s.contains(&codes[0][..4])), "only hashes are stored");

    let ua = "browser-1";
    let auth = id.authenticate("endo", PW, None, T0, None).unwrap().unwrap();
    let (token, stage) = id.start_session(&auth, ua, None, T0).unwrap();
    assert_eq!(stage, mamori_identity::session::Stage::NeedTotp);
    assert!(id.verify_recovery(&token, ua, "AAAA-BBBB-CCCC-DDDD", T0 + 1, None).unwrap().is_err());
    let typed = codes[3].to_lowercase().replace('-', " ");
    let step = id.verify_recovery(&token, ua, &typed, T0 + 3, None).unwrap().unwrap();
    assert_eq!(
        step.stage,
        mamori_identity::session::Stage::NeedPasswordChange,
        "then the initial password must change"
    );
    assert!(id.session(&token, ua, T0 + 3).unwrap().is_err(), "the pre-second-factor id no longer works");
    assert!(id.session(&step.token, ua, T0 + 3).unwrap().is_ok());
    assert_eq!(h.node.store.credentials("endo").unwrap().unwrap().recovery.len(), 9);

    // The same code cannot be used again.
    let auth = id.authenticate("endo", PW, None, T0 + 10, None).unwrap().unwrap();
    let (token, _) = id.start_session(&auth, ua, None, T0 + 10).unwrap();
    assert!(id.verify_recovery(&token, ua, &codes[3], T0 + 11, None).unwrap().is_err());
    // A session presented by another browser cannot continue the login.
    assert!(id.verify_recovery(&token, "browser-2", &codes[4], T0 + 12, None).unwrap().is_err());
    assert!(
        events(&h, "login").iter().any(|e| e.detail.as_deref().is_some_and(|d| d.contains("recovery code (9 left)")))
    );
}

#[test]
fn emergency_accounts_alert_on_every_use_and_must_be_rotated_after() {
    let h = Harness::new();
    add(&h, "er-sealed");
    let id = &h.node.identity;
    id.mark_emergency("operator:admin", "er-sealed").unwrap();
    // Opened: works, no forced change, and raises an alert each time.
    let a = id.authenticate("er-sealed", PW, None, T0 + 10, None).unwrap().unwrap();
    assert!(!a.must_change_password);
    id.authenticate("er-sealed", PW, None, T0 + 3600, None).unwrap().unwrap();
    assert_eq!(events(&h, "alert-emergency-account").len(), 2);
    let listed = id.emergency_accounts().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].1, Some(T0 + 10), "use is detected");
    // After the window, refused (uniformly) until rotated.
    let late = id.authenticate("er-sealed", PW, None, T0 + 10 + 25 * 3600, None).unwrap();
    assert!(late.is_err());
    assert_eq!(events(&h, "alert-emergency-account").len(), 3);
    // Rotation: policy-checked, must differ, re-seals.
    assert!(id.rotate_emergency("operator:admin", "er-sealed", "short", T0 + 100_000).is_err());
    assert!(id.rotate_emergency("operator:admin", "er-sealed", PW, T0 + 100_000).is_err());
    id.rotate_emergency("operator:admin", "er-sealed", "Zq9!vT4#mWx-2Lp", T0 + 100_000).unwrap();
    assert_eq!(id.emergency_accounts().unwrap()[0].1, None);
    id.authenticate("er-sealed", "Zq9!vT4#mWx-2Lp", None, T0 + 100_010, None).unwrap().unwrap();
    // Only emergency accounts rotate this way.
    add(&h, "dr-plain");
    assert!(id.rotate_emergency("operator:admin", "dr-plain", "Zq9!vT4#mWx-2Lp", T0).is_err());
    // The CLI lists it and exits 1 while a used credential awaits rotation.
    let dir = h.dir.path().to_str().unwrap();
    let out = crate::binary::cli(&["user", "emergency", "--data-dir", dir]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stdout).contains("USED"));
}
