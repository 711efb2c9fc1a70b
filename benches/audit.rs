//! Audit trail benchmark (issue #6): append throughput in-process (batched, and concurrent single
//! appends sharing fsyncs), checkpoint latency, inclusion-proof time and offline verification time
//! at N entries, each beside a baseline measured in the same run.
//!
//! Run: `cargo bench --bench audit` (N = 1,000,000) or `MAMORI_BENCH_N=10000000 cargo bench --bench audit`.
//! Prints a Markdown table for BENCHMARKS.md.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::sync::Arc;
use std::time::Instant;

use mamori_audit::{AuditActor, AuditLog, AuditRecord, Outcome, merkle};

fn record(i: u64) -> AuditRecord {
    AuditRecord {
        action: "read".into(),
        actor: AuditActor {
            client_id: Some("ward-7-terminal".into()),
            fhir_user: Some("Practitioner/dr-sato".into()),
            id: "dr-sato".into(),
            kind: mamori_audit::ActorKind::User,
        },
        detail: None,
        outcome: Outcome::Success,
        patients: vec![format!("Patient/{:012}", i % 100_000)],
        purpose: "TREAT".into(),
        query: None,
        request_id: Some(format!("{i:032x}")),
        resources: vec![format!("Observation/{:036}/_history/1", i)],
        source: Some("10.1.2.3".into()),
        status: Some(200),
        time: String::new(),
        v: 1,
        window: None,
    }
}

fn main() {
    let n: u64 = std::env::var("MAMORI_BENCH_N").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    // Under the build's target directory (wherever CARGO_TARGET_DIR puts it), or MAMORI_BENCH_DIR.
    let base = std::env::var("MAMORI_BENCH_DIR")
        .or_else(|_| std::env::var("CARGO_TARGET_DIR"))
        .unwrap_or_else(|_| "target".into());
    std::fs::create_dir_all(&base).unwrap();
    let tmp = tempfile::tempdir_in(base).unwrap();
    let dir = tmp.path().join("d");
    mamori::datadir::init(&dir).unwrap();
    let store = Arc::new(mamori_store_sqlite::open(&dir, std::sync::Arc::new(mamori_records::SystemClock)).unwrap());
    let (signer, origin) = mamori::datadir::load_signer(&dir).unwrap();
    let sample = record(1).to_canonical();
    println!("N = {n}, entry ≈ {} bytes", sample.len());

    // Baseline: the same bytes into a bare SQLite table, one transaction per 1000 rows.
    let base_rows = 200_000u64;
    let bare = rusqlite::Connection::open(dir.join("bare.db")).unwrap();
    bare.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; CREATE TABLE t (idx INTEGER PRIMARY KEY, time INTEGER, entry BLOB);").unwrap();
    let t0 = Instant::now();
    for b in 0..base_rows / 1000 {
        let tx = bare.unchecked_transaction().unwrap();
        for i in 0..1000 {
            tx.execute(
                "INSERT INTO t (time, entry) VALUES (?1, ?2)",
                rusqlite::params![(b * 1000 + i) as i64, record(i).to_canonical()],
            )
            .unwrap();
        }
        tx.commit().unwrap();
    }
    bare.query_row("PRAGMA wal_checkpoint", [], |_| Ok(())).ok();
    let base_rate = base_rows as f64 / t0.elapsed().as_secs_f64();

    // Batched appends (1000 per call), durable per call.
    let t0 = Instant::now();
    let mut i = 0;
    while i < n {
        let k = (n - i).min(1000);
        store.append((i..i + k).map(record).collect()).unwrap();
        i += k;
    }
    let append_rate = n as f64 / t0.elapsed().as_secs_f64();

    // Full integration of N entries into tiles + one signed checkpoint.
    let t0 = Instant::now();
    store.integrate(&signer, &origin).unwrap().unwrap();
    let integrate_all = t0.elapsed().as_secs_f64();

    // Concurrent single-record appends (as from many requests): fsyncs are shared.
    let (c0, f0) = store.durability_stats();
    let threads = 16u64;
    let per = 1000u64;
    let t0 = Instant::now();
    let hs: Vec<_> = (0..threads)
        .map(|t| {
            let s = store.clone();
            std::thread::spawn(move || {
                for j in 0..per {
                    s.append(vec![record(n + t * per + j)]).unwrap();
                }
            })
        })
        .collect();
    hs.into_iter().for_each(|h| h.join().unwrap());
    let single_rate = (threads * per) as f64 / t0.elapsed().as_secs_f64();
    let (c1, f1) = store.durability_stats();
    let _ = (c0, c1);
    let entries_per_fsync = (threads * per) as f64 / (f1 - f0).max(1) as f64;

    // Checkpoint latency for a typical increment (what one second of traffic adds).
    let t0 = Instant::now();
    store.integrate(&signer, &origin).unwrap().unwrap();
    let checkpoint_latency = t0.elapsed().as_secs_f64() * 1000.0;
    let size = store.audit_integrated_size().unwrap();

    // Inclusion proofs at the full size.
    let mut times = Vec::new();
    let root = store.audit_root(size).unwrap();
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for _ in 0..2000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let idx = x % size;
        let t0 = Instant::now();
        let p = store.audit_inclusion_proof(idx, size).unwrap();
        times.push(t0.elapsed().as_secs_f64() * 1e6);
        let leaf = store.audit_leaf_hash(idx).unwrap();
        merkle::verify_inclusion(&leaf, idx, size, &p, &root).unwrap();
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let p50 = times[times.len() / 2];
    let p99 = times[times.len() * 99 / 100];

    // Offline verification of everything.
    let vkey = signer.verifier_key();
    let t0 = Instant::now();
    let r = mamori::audit_verify::verify(&dir, None, &vkey, None, &mut |_| {}).unwrap();
    let verify_s = t0.elapsed().as_secs_f64();
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    let verify_per_m = verify_s / (r.entries as f64 / 1e6);

    // For scripts/bench-suite.sh.
    println!("FIGURE P5.append_per_s {append_rate:.0}");
    println!("FIGURE P5.append_ratio {:.2}", append_rate / base_rate);
    println!("FIGURE P5.verify_s_per_m {verify_per_m:.2}");
    println!("FIGURE P5.proof_p99_us {p99:.0}");
    println!();
    println!("| figure | value | baseline (same run) | goal |");
    println!("|---|---|---|---|");
    println!(
        "| audit append, batches of 1000, durable (entries/s) | {append_rate:.0} | bare SQLite insert of the same bytes: {base_rate:.0}/s (ratio {:.2}) | ≥ 50,000 |",
        append_rate / base_rate
    );
    println!(
        "| audit append, {threads} threads × single entries (entries/s) | {single_rate:.0} | {entries_per_fsync:.1} entries per fsync | — |"
    );
    println!("| integrate {n} entries + sign checkpoint | {integrate_all:.2} s | — | — |");
    println!("| checkpoint latency, {} new entries | {checkpoint_latency:.1} ms | — | ≤ 1 s cadence |", threads * per);
    println!("| inclusion proof at {size} entries | p50 {p50:.0} µs, p99 {p99:.0} µs | — | ≤ 1 ms |");
    println!(
        "| verify {} entries (offline) | {verify_s:.2} s = {verify_per_m:.2} s per 1M | — | ≤ 10 s per 1M |",
        r.entries
    );
}
