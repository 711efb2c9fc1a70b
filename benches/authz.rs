//! Authorization decision benchmark (issue #5 / P6): decisions/s and p99 latency with the shipped
//! policies and with 1,000 policies (the shipped ones, 900 role-scoped permits of other roles and
//! 100 unscoped forbids, all evaluated by Cedar), beside a same-run baseline: a `HashSet` lookup
//! of the same (role, class, action), the cheapest conceivable check. Run: `cargo bench --bench authz`.
//!
//! Plain timing rather than criterion: the goal is a p99, which needs every sample's latency.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::collections::HashSet;
use std::hint::black_box;
use std::time::Instant;

use mamori_authz::{Act, PolicyEngine, Situation, Subject, Target};

fn thousand() -> String {
    let mut text = mamori_authz::DEFAULT_POLICIES.to_string();
    let shipped = PolicyEngine::default_policies().unwrap().len();
    for i in 0..900 {
        text.push_str(&format!(
            "@id(\"ward-{i}\")\npermit (principal in Mamori::Role::\"ward_{i}\", action in [Mamori::Action::\"read\", Mamori::Action::\"search\"], resource)\nwhen {{ [\"general\", \"administrative\"].containsAll(resource.classes) && (!resource.patientBound || context.care) }};\n"
        ));
    }
    for i in 0..(100 - shipped) {
        text.push_str(&format!(
            "@id(\"vip-{i}\")\nforbid (principal, action, resource == Mamori::Resource::\"Patient/vip{i}\") unless {{ context.care }};\n"
        ));
    }
    text
}

fn measure(label: &str, n: usize, mut f: impl FnMut() -> bool) -> (f64, f64, f64) {
    for _ in 0..n / 10 {
        black_box(f());
    }
    let mut lat = Vec::with_capacity(n);
    let t0 = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        black_box(f());
        lat.push(t.elapsed().as_nanos() as f64 / 1000.0);
    }
    let per_s = n as f64 / t0.elapsed().as_secs_f64();
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let p50 = lat[n / 2];
    let p99 = lat[n * 99 / 100];
    println!("{label:<48} {per_s:>12.0}/s  p50 {p50:>7.2} µs  p99 {p99:>7.2} µs");
    (per_s, p50, p99)
}

fn main() {
    let n: usize = std::env::var("AUTHZ_BENCH_N").ok().and_then(|s| s.parse().ok()).unwrap_or(200_000);
    let shipped = PolicyEngine::default_policies().unwrap();
    let big = PolicyEngine::new(&thousand()).unwrap();
    assert_eq!(big.len(), 1000);
    let doctor = Subject::User {
        username: "dr-sato".into(),
        roles: vec!["doctor".into(), "ward_7".into()],
        department: "内科".into(),
        has_fhir_user: true,
        window: None,
    };
    let obs = Target {
        resource_type: "Observation".into(),
        reference: Some("Observation/123".into()),
        classes: ["general".to_string()].into(),
        patient_bound: true,
        lab: true,
    };
    let care = Situation { care: true, ..Situation::default() };
    assert!(shipped.decide(&doctor, Act::Read, &obs, &care).allowed);
    assert!(big.decide(&doctor, Act::Read, &obs, &care).allowed);
    assert_eq!(
        big.decide_uncached(&doctor, Act::Read, &obs, &care),
        big.decide_unsliced(&doctor, Act::Read, &obs, &care),
        "slicing must not change decisions"
    );
    // 10,000 distinct Observations (ids no policy names) and 100 named VIP patients.
    let targets: Vec<Target> = (0..10_000)
        .map(|i| Target { reference: Some(format!("Observation/o{i}")), ..obs.clone() })
        .chain((0..100).map(|i| Target {
            resource_type: "Patient".into(),
            reference: Some(format!("Patient/vip{i}")),
            classes: ["administrative".to_string()].into(),
            patient_bound: true,
            lab: false,
        }))
        .collect();
    for t in &targets {
        assert_eq!(*big.decide(&doctor, Act::Read, t, &care), big.decide_unsliced(&doctor, Act::Read, t, &care));
    }

    let table: HashSet<(String, String, Act)> =
        [("doctor".to_string(), "general".to_string(), Act::Read)].into_iter().collect();
    let key = ("doctor".to_string(), "general".to_string(), Act::Read);
    println!("policies: shipped {}, large {}", shipped.len(), big.len());
    let (base, _, _) = measure("baseline: HashSet lookup", n, || table.contains(&key));
    let mut i = 0usize;
    let mut next = || {
        i = (i + 1) % targets.len();
        &targets[i]
    };
    let (d, _, p99) = measure("decide(), 1,000 policies, 10,100 resources", n, || {
        big.decide(&doctor, Act::Read, next(), &care).allowed
    });
    let (s, _, _) = measure("Cedar evaluation, shipped policies (no memo)", n / 10, || {
        shipped.decide_uncached(&doctor, Act::Read, next(), &care).allowed
    });
    let (b, _, p99_eval) = measure("Cedar evaluation, 1,000 policies (no memo)", n / 10, || {
        big.decide_uncached(&doctor, Act::Read, next(), &care).allowed
    });
    let (u, _, _) = measure("Cedar evaluation, 1,000 policies, unsliced", n / 100, || {
        big.decide_unsliced(&doctor, Act::Read, next(), &care).allowed
    });
    println!(
        "ratios to baseline: decide() {:.4}; evaluation shipped {:.5}, 1,000 {:.5}, 1,000 unsliced {:.6}",
        d / base,
        s / base,
        b / base,
        u / base
    );
    // For scripts/bench-suite.sh.
    println!("FIGURE P6.decide_p99_us {p99:.2}");
    println!("FIGURE P6.eval_p99_us {p99_eval:.2}");
    println!(
        "P6 goal: p99 <= 50 µs with 1,000 policies: decide() {p99:.2} µs {}; evaluation alone {p99_eval:.2} µs {}",
        if p99 <= 50.0 { "met" } else { "MISSED" },
        if p99_eval <= 50.0 { "met" } else { "MISSED" }
    );
}
