//! The store contract (#23 item 3): what every backend must do alike, checked in process against
//! the store itself, not through HTTP. The suite runs it on the embedded store and, with
//! `MAMORI_TEST_BACKEND=postgres`, on PostgreSQL — so a difference between the adapters fails
//! here first, named.

use std::collections::BTreeSet;

use mamori_audit::{AuditActor, AuditRecord, Outcome};
use mamori_records::{RecordError, RequestContext, ResourceId, ResourceType, parse_resource};
use mamori_store_sql::ConfigChange;

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
        assert!(matches!(e, mamori::backend::Error::Stale { .. }), "{stale:?}: {e}");
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
                    let actor = AuditActor {
                        client_id: None,
                        fhir_user: None,
                        id: format!("t{t}"),
                        kind: mamori_audit::ActorKind::User,
                    };
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
    let now = records.read(&ctx, &rt, &ResourceId::parse(id.as_str()).unwrap()).wait().unwrap();
    assert_eq!(now.version, 2, "the loser wrote nothing");
}

/// Both backends run the one schema: every migration step applied once, recorded in
/// `mamori_schema`; versions and the audit trail refuse UPDATE and DELETE (a version goes only in
/// a purge); opening again applies nothing twice.
#[test]
fn the_one_schema_is_applied_once_and_its_append_only_tables_hold() {
    let h = Harness::new();
    let db = RawDb::at(h.dir.path());
    let steps = mamori_store_sql::schema::steps(mamori_store_sql::Dialect::Sqlite).len() as i64;
    assert_eq!(steps, mamori_store_sql::schema::steps(mamori_store_sql::Dialect::Postgres).len() as i64);
    assert_eq!(db.int("SELECT COUNT(*) FROM mamori_schema"), steps);
    assert_eq!(db.int("SELECT MAX(version) FROM mamori_schema"), steps);
    let patient = parse_resource(r#"{"resourceType": "Patient", "name": [{"family": "契約"}]}"#.as_bytes()).unwrap();
    let rt = ResourceType::parse("Patient").unwrap();
    h.node.records.create(&RequestContext::operator("contract"), &rt, patient, None, None).unwrap();
    for refused in [
        "UPDATE versions SET entered_by = 'x'",
        "DELETE FROM versions",
        "UPDATE audit_entries SET time = 0",
        "DELETE FROM audit_entries",
    ] {
        assert!(db.exec_both(refused).is_err(), "{refused} must be refused");
    }
    assert!(db.int("SELECT COUNT(*) FROM versions") >= 1);
    // A second process on the same store (the CLI beside the server) migrates nothing.
    drop(mamori::open_node(h.dir.path()).unwrap());
    assert_eq!(db.int("SELECT COUNT(*) FROM mamori_schema"), steps);
}

/// Two processes integrating the same log at once (two nodes on one database; the server and the
/// CLI on one file) make one tree: every checkpoint is of a larger size than the one before, and
/// the final root is the root of the entries.
#[test]
fn two_integrators_make_one_tree() {
    let h = Harness::new();
    let other = mamori::open_node(h.dir.path()).unwrap();
    let signer = mamori_audit::note::NoteSigner::new("contract.local/audit", &[9; 32]).unwrap();
    let verifier = mamori_audit::note::NoteVerifier::parse(&signer.verifier_key()).unwrap();
    let stores = [h.node.store.clone(), other.store.clone()];
    for round in 0..5 {
        let actor =
            AuditActor { client_id: None, fhir_user: None, id: "contract".into(), kind: mamori_audit::ActorKind::User };
        let batch: Vec<AuditRecord> = (0..40)
            .map(|i| {
                let mut r = AuditRecord::new("contract", actor.clone(), Outcome::Success, "HOPERAT");
                r.detail = Some(format!("{round}/{i}"));
                r
            })
            .collect();
        stores[round % 2].append(batch).unwrap();
        let handles: Vec<_> = stores
            .iter()
            .map(|s| {
                let s = s.clone();
                std::thread::spawn(move || {
                    let signer = mamori_audit::note::NoteSigner::new("contract.local/audit", &[9; 32]).unwrap();
                    s.integrate(&signer, "contract.local/audit").unwrap()
                })
            })
            .collect();
        for t in handles {
            t.join().unwrap();
        }
    }
    let size = stores[0].audit_size().unwrap();
    assert_eq!(stores[1].audit_integrated_size().unwrap(), size);
    let sizes: Vec<u64> = stores[1]
        .checkpoints()
        .unwrap()
        .iter()
        .filter_map(|n| verifier.verify(n).ok())
        .map(|b| mamori_audit::note::Checkpoint::parse(b).unwrap().size)
        .collect();
    assert!(sizes.windows(2).all(|w| w[0] < w[1]), "one checkpoint per size, growing: {sizes:?}");
    assert_eq!(sizes.last(), Some(&size));
    let leaves: Vec<[u8; 32]> =
        stores[0].entries(0, size).unwrap().iter().map(|e| mamori_audit::merkle::leaf_hash(e)).collect();
    assert_eq!(stores[1].audit_root(size).unwrap(), mamori_audit::merkle::root_of(&leaves));
}

/// A code and a refresh token are each spent once, however many redeem them at once.
#[test]
fn a_code_and_a_refresh_token_are_spent_once_under_concurrency() {
    let h = Harness::new();
    let store = h.node.store.clone();
    let code = mamori_oauth::CodeRecord {
        code_sha256: [3; 32],
        family: "fam-contract".into(),
        client_id: "c".into(),
        redirect_uri: "https://app.example/cb".into(),
        scope: "openid".into(),
        subject: "contract".into(),
        fhir_user: None,
        name: None,
        patient: None,
        code_challenge: "x".into(),
        nonce: None,
        auth_time: 1,
        amr: vec!["pwd".into(), "otp".into(), "mfa".into()],
        expires_at: i64::MAX / 2,
    };
    store.insert_code(&code).unwrap();
    let refresh = mamori_oauth::RefreshRecord {
        sha256: [4; 32],
        family: "fam-contract".into(),
        client_id: "c".into(),
        subject: "contract".into(),
        fhir_user: None,
        scope: "openid".into(),
        patient: None,
        issued_at: 1,
        expires_at: i64::MAX / 2,
        used: false,
        revoked: false,
    };
    store.insert_refresh(&refresh).unwrap();
    assert_eq!(store.refresh_token(&[4; 32]).unwrap().as_ref(), Some(&refresh), "stored as given");
    let firsts: Vec<(bool, bool)> = (0..8)
        .map(|_| {
            let s = store.clone();
            std::thread::spawn(move || (s.take_code(&[3; 32]).unwrap().unwrap().1, s.use_refresh(&[4; 32]).unwrap()))
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    assert_eq!(firsts.iter().filter(|(c, _)| *c).count(), 1, "the code is spent once");
    assert_eq!(firsts.iter().filter(|(_, r)| *r).count(), 1, "the refresh token is used once");
    assert_eq!(store.take_code(&[9; 32]).unwrap(), None, "an unknown code is none");
    assert_eq!(store.revoke_family("fam-contract").unwrap(), 1);
    assert!(store.refresh_token(&[4; 32]).unwrap().unwrap().revoked);
}
