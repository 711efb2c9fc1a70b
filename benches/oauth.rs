//! OAuth benchmark (issue #7): client-credentials issuance/s in process (the durable token insert
//! that every grant pays; the HTTP figure with the audit entry is in `scripts/bench.sh`), and the
//! cost of validating a bearer token on every request (SHA-256 → indexed SQLite read of the
//! token → client record), with 100,000 live tokens in the store, beside SHA-256 of the token as
//! a same-run baseline. Run: `cargo bench --bench oauth`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::time::Instant;

use mamori_oauth::{ClientAuth, OAuth};
use sha2::Digest;

fn percentile(v: &mut [u128], p: f64) -> f64 {
    v.sort_unstable();
    v[((v.len() as f64 - 1.0) * p) as usize] as f64 / 1000.0
}

fn main() {
    let tmp = tempfile::tempdir_in("target").unwrap();
    let dir = tmp.path().join("d");
    let node = mamori::open_node(&dir).unwrap();
    let secret = "bench-secret-0123456789abcdefghijklmnop";
    let c = mamori_oauth::Client {
        id: "bench".into(),
        secret_sha256: Some(mamori_oauth::sha256_hex(secret)),
        scope: "system/*.cruds".into(),
        token_lifetime_secs: 3600,
        ..Default::default()
    };
    node.store
        .change_config(&mamori_store_sql::ConfigChange {
            kind: "client",
            key: "bench",
            value: Some(serde_json::to_value(c).unwrap()),
            changed_by: "operator:bench",
            reason: "bench",
            expected_version: None,
            now_micros: 0,
        })
        .unwrap();
    let oauth: &OAuth = &node.oauth;
    let auth = ClientAuth { id: "bench".into(), secret: secret.into() };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();

    // Issuance, one thread, then as many threads as cores (group commit shares the fsync).
    let n = 3_000;
    let t0 = Instant::now();
    let mut tokens = Vec::with_capacity(n);
    for _ in 0..n {
        tokens.push(oauth.client_credentials(&auth, Some("system/Patient.rs"), now).unwrap().access_token);
    }
    let issue_one = n as f64 / t0.elapsed().as_secs_f64();
    let cores = std::thread::available_parallelism().map(|c| c.get()).unwrap_or(1);
    let threads = cores * 8;
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                for _ in 0..n / threads {
                    oauth.client_credentials(&auth, None, now).unwrap();
                }
            });
        }
    });
    let issue_many = (n / threads * threads) as f64 / t0.elapsed().as_secs_f64();

    // Fill to 100,000 tokens, then validate random ones.
    let fill = 100_000 - 2 * n;
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                for _ in 0..fill / threads {
                    oauth.client_credentials(&auth, None, now).unwrap();
                }
            });
        }
    });
    eprintln!("filled {fill} tokens in {:.1} s", t0.elapsed().as_secs_f64());
    let m = 50_000;
    let mut lat = Vec::with_capacity(m);
    let t0 = Instant::now();
    for i in 0..m {
        let t = &tokens[(i * 7919) % tokens.len()];
        let s = Instant::now();
        let g = oauth.validate(t, now).unwrap();
        lat.push(s.elapsed().as_nanos());
        std::hint::black_box(g);
    }
    let validate_rate = m as f64 / t0.elapsed().as_secs_f64();
    let (v50, v99) = (percentile(&mut lat, 0.5), percentile(&mut lat, 0.99));
    let mut lat = Vec::with_capacity(m);
    let t0 = Instant::now();
    for i in 0..m {
        let t = &tokens[(i * 7919) % tokens.len()];
        let s = Instant::now();
        let h: [u8; 32] = sha2::Sha256::digest(t.as_bytes()).into();
        lat.push(s.elapsed().as_nanos());
        std::hint::black_box(h);
    }
    let sha_rate = m as f64 / t0.elapsed().as_secs_f64();
    let (s50, s99) = (percentile(&mut lat, 0.5), percentile(&mut lat, 0.99));
    // A forged token costs the same lookup and is refused.
    assert!(oauth.validate("forged-token-that-was-never-issued-by-mamori", now).is_err());

    println!("| figure | value | same-run baseline / reference |");
    println!("|---|---|---|");
    println!(
        "| client-credentials issuance, 1 thread (durable token insert) | {issue_one:.0}/s | Keycloak publishes ~120 grants/s per vCPU |"
    );
    println!(
        "| client-credentials issuance, {threads} threads on {cores} cores | {issue_many:.0}/s ({:.0}/s per core) | group commit shares one fsync |",
        issue_many / cores as f64
    );
    println!(
        "| bearer validation, 100k live tokens | {validate_rate:.0}/s, p50 {v50:.1} µs, p99 {v99:.1} µs | SHA-256 of the token: {sha_rate:.0}/s, p50 {s50:.2} µs, p99 {s99:.2} µs |"
    );
}
