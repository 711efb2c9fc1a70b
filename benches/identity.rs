//! Identity benchmark (issue #4): Argon2id password verifications/s (OWASP parameters) on one and
//! on all cores, and TOTP verifications/s, beside SHA-256 of the same input as a same-run
//! baseline. Run: `cargo bench --bench identity`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::time::Instant;

use mamori_identity::{password, totp};
use sha2::Digest;

fn main() {
    let pw = "k7#Vq2!mZp-w9";
    let h = password::hash(pw).unwrap();
    let n = 60;
    let t0 = Instant::now();
    for _ in 0..n {
        assert!(password::verify(pw, &h));
    }
    let one = n as f64 / t0.elapsed().as_secs_f64();
    let cores = std::thread::available_parallelism().map(|c| c.get()).unwrap_or(1);
    let t0 = Instant::now();
    let hs: Vec<_> = (0..cores)
        .map(|_| {
            let h = h.clone();
            std::thread::spawn(move || {
                for _ in 0..n {
                    assert!(password::verify(pw, &h));
                }
            })
        })
        .collect();
    hs.into_iter().for_each(|t| t.join().unwrap());
    let all = (n * cores) as f64 / t0.elapsed().as_secs_f64();

    let secret = totp::new_secret().unwrap();
    let m = 200_000;
    let t0 = Instant::now();
    for i in 0..m {
        let _ = totp::verify(&secret, "123456", 1_900_000_000 + i, None);
    }
    let totp_rate = m as f64 / t0.elapsed().as_secs_f64();
    let t0 = Instant::now();
    let mut x = [0u8; 32];
    for _ in 0..m {
        x = sha2::Sha256::digest(x).into();
    }
    let sha_rate = m as f64 / t0.elapsed().as_secs_f64();
    std::hint::black_box(x);

    // Session checks: cookie token → stored session (SQLite), browser binding, idle/absolute
    // limits, account still active.
    let tmp = tempfile::tempdir_in("target").unwrap();
    let dir = tmp.path().join("d");
    mamori::datadir::init(&dir).unwrap();
    let store =
        std::sync::Arc::new(mamori_store_sqlite::open(&dir, std::sync::Arc::new(mamori_records::SystemClock)).unwrap());
    let key = mamori::datadir::load_master_key(&dir).unwrap();
    let id = mamori_identity::service::Identity::new(store.clone(), store.clone(), key);
    id.add(
        "operator:bench",
        mamori_identity::service::NewAccount {
            username: "bench".into(),
            roles: vec!["doctor".into()],
            display_name: None,
            fhir_user: None,
            department: None,
            proofing: None,
        },
        pw,
        1_900_000_000,
    )
    .unwrap();
    let token = "f".repeat(64);
    use mamori_identity::service::IdentityStore;
    let sess = mamori_identity::session::Session {
        username: "bench".into(),
        stage: mamori_identity::session::Stage::Full,
        created: 1_900_000_000,
        last_seen: 1_900_000_000,
        browser: mamori_identity::session::digest("UA"),
        pending_totp: None,
        pending_webauthn: None,
        amr: vec!["pwd".into(), "otp".into(), "mfa".into()],
    };
    store.save_session(&mamori_identity::session::digest(&token), &sess).unwrap();
    let k = 50_000;
    let t0 = Instant::now();
    for _ in 0..k {
        assert!(id.session(&token, "UA", 1_900_000_000).unwrap().is_ok());
    }
    let session_rate = k as f64 / t0.elapsed().as_secs_f64();

    println!("| figure | value | same-run baseline / reference |");
    println!("|---|---|---|");
    println!(
        "| Argon2id verify (m=19 MiB, t=2, p=1), 1 thread | {one:.1}/s | Keycloak publishes ~15 password logins/s per vCPU |"
    );
    println!("| Argon2id verify, {cores} threads | {all:.1}/s ({:.1}/s per core) | |", all / cores as f64);
    println!("| TOTP verify (3 windows, HMAC-SHA-1) | {totp_rate:.0}/s | SHA-256 of 32 bytes: {sha_rate:.0}/s |");
    println!("| session check (SQLite: session + account) | {session_rate:.0}/s | |");
}
