//! The store contract (#23 item 3): what every backend must do alike, checked in process against
//! the store itself, not through HTTP. The suite runs it on the embedded store and, with
//! `MAMORI_TEST_BACKEND=postgres`, on PostgreSQL — so a difference between the adapters fails
//! here first, named.

use std::collections::BTreeSet;

use mamori_audit::{AuditActor, AuditRecord, Outcome};
use mamori_records::{RecordError, RequestContext, ResourceId, ResourceType, parse_resource};
use mamori_store_sqlite::ConfigChange;

use crate::support::{Harness, RawDb};

fn change<'a>(key: &'a str, value: i64, expected: Option<u64>) -> ConfigChange<'a> {
    ConfigChange {
        kind: "policies",
        key,
        value: Some(serde_json::json!({"text": "", "n": value})),
        changed_by: "operator:contract",
        reason: "contract",
        expected_version: expected,
        now_micros: 1,
    }
}

/// A configuration change based on a stale version is refused and changes nothing; each change
/// adds exactly one version and moves the generation; the table refuses UPDATE and DELETE.
#[test]
fn a_stale_configuration_change_is_a_conflict_and_the_history_is_append_only() {
    let h = Harness::new();
    let s = &h.node.store;
    let g0 = s.config_generation().unwrap();
    assert_eq!(s.change_config(&change("contract", 1, None)).unwrap(), 1);
    assert_eq!(s.change_config(&change("contract", 2, Some(1))).unwrap(), 2);
    for stale in [None, Some(1), Some(7)] {
        let e = s.change_config(&change("contract", 3, stale)).unwrap_err();
        assert!(matches!(e, mamori::backend::ConfigError::Stale(_)), "{stale:?}: {e}");
        assert!(e.to_string().contains("changed concurrently"), "{e}");
    }
    let history = s.config_history("policies", "contract").unwrap();
    assert_eq!(history.iter().map(|h| h.version).collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(history[1].value.as_ref().unwrap()["n"], 2);
    assert_eq!(s.config_generation().unwrap(), g0 + 2);
    // An account saved from a stale version is a conflict, not a storage failure.
    h.add_user("contract1", &["nurse"], "Practitioner/c1");
    let (account, v) = s.account("contract1").unwrap().unwrap();
    s.save_account(&account, Some(v), "operator:contract", "first").unwrap();
    match s.save_account(&account, Some(v), "operator:contract", "second, from the same version") {
        Err(mamori_identity::Error::Conflict(m)) => assert!(m.contains("changed concurrently"), "{m}"),
        other => panic!("a stale account save: {other:?}"),
    }
    let db = RawDb::at(h.dir.path());
    assert!(db.exec_both("UPDATE config_versions SET reason = 'x' WHERE key = 'contract'").is_err());
    assert!(db.exec_both("DELETE FROM config_versions WHERE key = 'contract'").is_err());
    assert_eq!(s.config_history("policies", "contract").unwrap().len(), 2);
}

/// Concurrent appends get distinct, gap-free indexes, and the log holds exactly them in order
/// with non-decreasing times.
#[test]
fn concurrent_audit_appends_make_one_gap_free_sequence() {
    let h = Harness::new();
    let store = h.node.store.clone();
    let before = store.audit_size().unwrap();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                let mut got = Vec::new();
                for i in 0..25 {
                    let actor =
                        AuditActor { client_id: None, fhir_user: None, id: format!("t{t}"), kind: "user".into() };
                    let mut r = AuditRecord::new("contract", actor, Outcome::Success, "HOPERAT");
                    r.detail = Some(format!("{t}/{i}"));
                    got.extend(store.append(vec![r]).unwrap());
                }
                got
            })
        })
        .collect();
    let mut indexes: Vec<u64> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    indexes.sort_unstable();
    let unique: BTreeSet<u64> = indexes.iter().copied().collect();
    assert_eq!(unique.len(), 200, "every append has its own index");
    let (first, last) = (indexes[0], indexes[199]);
    assert_eq!(last - first, 199, "no gap");
    assert!(first >= before);
    let entries = store.entries(first, 200).unwrap();
    assert_eq!(entries.len(), 200);
    let mut seen = BTreeSet::new();
    let mut last_time = String::new();
    for e in &entries {
        let r: AuditRecord = serde_json::from_slice(e).unwrap();
        assert!(r.time >= last_time, "time goes forward: {} after {last_time}", r.time);
        last_time = r.time.clone();
        if r.action == "contract" {
            seen.insert(r.detail.unwrap());
        }
    }
    assert_eq!(seen.len(), 200, "each entry is where its index says");
}

/// Two writers based on the same version: exactly one wins, the other is a version conflict, on
/// every backend; the loser leaves no version behind.
#[test]
fn two_writes_on_one_version_are_one_success_and_one_conflict() {
    let h = Harness::new();
    let records = h.node.records.clone();
    let ctx = RequestContext::operator("contract");
    let rt = ResourceType::parse("Patient").unwrap();
    let body = |family: &str, id: Option<&str>| {
        let mut v = serde_json::json!({"resourceType": "Patient", "name": [{"family": family}]});
        if let Some(id) = id {
            v["id"] = id.into();
        }
        parse_resource(v.to_string().as_bytes()).unwrap()
    };
    let created = records.create(&ctx, &rt, body("山田", None), None, None).unwrap().record;
    let id = created.id.clone();
    let outcomes: Vec<Result<u64, RecordError>> = (0..2)
        .map(|i| {
            let (records, ctx, rt, id) = (records.clone(), ctx.clone(), rt.clone(), id.clone());
            let b = body(&format!("改{i}"), Some(id.as_str()));
            std::thread::spawn(move || records.update(&ctx, &rt, &id, b, Some(1), None).map(|o| o.record.version))
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    let wins = outcomes.iter().filter(|o| matches!(o, Ok(2))).count();
    let conflicts = outcomes.iter().filter(|o| matches!(o, Err(RecordError::VersionConflict { .. }))).count();
    assert_eq!((wins, conflicts), (1, 1), "{outcomes:?}");
    let now = records.read(&ctx, &rt, &ResourceId::parse(id.as_str()).unwrap()).unwrap();
    assert_eq!(now.version, 2, "the loser wrote nothing");
}
