//! The two-person rule (C3, issue #25): a high-risk change is held as a request bound to the
//! hash of the exact change, applied only when a second person with the right approves that
//! hash; the requester cannot approve their own; requests expire; a request altered in the
//! database is refused; every step is audited. On both backends (the harness's store).

use std::sync::Arc;

use mamori_app::approvals::{self, State};
use mamori_app::clients::{self, NewClient};
use mamori_app::{AppError, Ctx, class_rules, policies, users};
use mamori_audit::{AuditRecord, EntryQuery};

use crate::binary::cli;
use crate::support::{Harness, Later, RawDb};

fn person(h: &Harness, who: &str) -> Ctx {
    Ctx::person(&h.node, who, Some("192.0.2.9".into()), Some(format!("req-{who}"))).unwrap()
}

fn held<T: std::fmt::Debug>(r: Result<T, AppError>) -> approvals::Pending {
    match r {
        Err(AppError::Pending(p)) => *p,
        other => panic!("expected the change to be held for a second person, got {other:?}"),
    }
}

fn entries(h: &Harness, action: &str) -> Vec<AuditRecord> {
    let q = EntryQuery { action: Some(action.into()), limit: 10_000, ..EntryQuery::default() };
    h.node.store.query(&q).unwrap().into_iter().map(|(_, b)| serde_json::from_slice(&b).unwrap()).collect()
}

fn version(h: &Harness, kind: &str, key: &str) -> Option<u64> {
    h.node.store.config_get(kind, key).unwrap().map(|e| e.version)
}

#[test]
fn a_high_risk_change_takes_effect_only_when_a_second_person_approves_exactly_it() {
    let h = Harness::new();
    h.add_user("admin1", &["system_admin"], "Practitioner/sa");
    h.add_user("manager1", &["security_manager"], "Practitioner/sm1");
    h.add_user("manager2", &["security_manager"], "Practitioner/sm2");
    h.add_user("doctor1", &["doctor"], "Practitioner/dr");
    let node = &h.node;
    let (m1, m2, admin, doctor) =
        (person(&h, "manager1"), person(&h, "manager2"), person(&h, "admin1"), person(&h, "doctor1"));

    // Class rules: held, nothing in force changes.
    let before = version(&h, "class-rules", "active");
    let rules = class_rules::current(&m1, node).unwrap();
    let p = held(class_rules::set(&m1, node, &rules, "re-affirmed"));
    assert_eq!(p.sha256.len(), 64);
    assert_eq!(version(&h, "class-rules", "active"), before, "nothing applied while held");
    assert_eq!(approvals::waiting_for(&m1, node).unwrap(), 0, "not the requester's to decide");
    assert_eq!(approvals::waiting_for(&admin, node).unwrap(), 1);

    // The requester cannot approve their own; a doctor has no right; a wrong hash is not the
    // change the approver saw. None of it changes anything.
    match approvals::approve(&m1, node, &p.id, &p.sha256, "") {
        Err(AppError::Forbidden(m)) => assert!(m.contains("your own request"), "{m}"),
        other => panic!("self-approval: {other:?}"),
    }
    assert!(matches!(approvals::approve(&doctor, node, &p.id, &p.sha256, ""), Err(AppError::Forbidden(_))));
    let wrong = "0".repeat(64);
    assert!(matches!(approvals::approve(&admin, node, &p.id, &wrong, ""), Err(AppError::Conflict(_))));
    assert_eq!(version(&h, "class-rules", "active"), before);
    assert!(matches!(approvals::approve(&admin, node, "999", &p.sha256, ""), Err(AppError::NotFound(_))));

    // A second person approves that hash: applied exactly, attributed, closed.
    let r = approvals::approve(&admin, node, &p.id, &p.sha256, "checked the rules").unwrap();
    assert_eq!(r.state, State::Approved);
    let e = node.store.config_get("class-rules", "active").unwrap().unwrap();
    assert_eq!(Some(e.version), r.applied_version);
    assert_eq!(e.value.unwrap(), serde_json::to_value(&rules).unwrap());
    assert_eq!(e.changed_by, "user:admin1");
    assert!(e.reason.contains("requested by user:manager1") && e.reason.contains(&p.sha256), "{}", e.reason);
    assert!(matches!(approvals::approve(&m2, node, &p.id, &p.sha256, ""), Err(AppError::Conflict(_))));
    let (shown, _) = approvals::show(&m2, node, &p.id).unwrap();
    assert_eq!((shown.state, shown.decided_by.as_deref()), (State::Approved, Some("user:admin1")));

    // Two requests on the same version: the first approved wins; the other is not applied
    // over it (its change was decided on a version that is gone) and is closed as failed.
    let text_a = format!("{}\n// a\n", mamori_authz::DEFAULT_POLICIES);
    let text_b = format!("{}\n// b\n", mamori_authz::DEFAULT_POLICIES);
    let a = held(policies::set(&m1, node, &text_a, None, "variant a"));
    let b = held(policies::set(&m2, node, &text_b, None, "variant b"));
    assert_ne!(a.sha256, b.sha256);
    approvals::approve(&m1, node, &b.id, &b.sha256, "").unwrap();
    assert!(matches!(approvals::approve(&m2, node, &a.id, &a.sha256, ""), Err(AppError::Conflict(_))));
    assert_eq!(approvals::show(&m1, node, &a.id).unwrap().0.state, State::Failed);
    let in_force = node.store.config_get("policies", "active").unwrap().unwrap().value.unwrap();
    assert_eq!(in_force["text"].as_str().map(|t| t.ends_with("// b\n")), Some(true));

    // Refuse (a reason is required), withdraw (the requester only).
    let c = held(policies::set(&m1, node, &text_a, None, "try again"));
    assert!(matches!(approvals::refuse(&m2, node, &c.id, " "), Err(AppError::Invalid(_))));
    assert!(matches!(approvals::withdraw(&m2, node, &c.id), Err(AppError::Forbidden(_))));
    assert_eq!(approvals::refuse(&m2, node, &c.id, "not now").unwrap().state, State::Refused);
    assert!(matches!(approvals::approve(&admin, node, &c.id, &c.sha256, ""), Err(AppError::Conflict(_))));
    let d = held(policies::set(&m1, node, &text_a, None, "once more"));
    assert_eq!(approvals::withdraw(&m1, node, &d.id).unwrap().state, State::Withdrawn);

    // A request not decided in time expires, and cannot be approved after.
    let e = held(policies::set(&m1, node, &text_a, None, "late"));
    let mut late = person(&h, "admin1");
    late.clock = Arc::new(Later(node.config.approval_hours as i64 + 1));
    assert!(matches!(approvals::approve(&late, node, &e.id, &e.sha256, ""), Err(AppError::Conflict(_))));
    assert_eq!(approvals::show(&m1, node, &e.id).unwrap().0.state, State::Expired);
    let in_force_after = node.store.config_get("policies", "active").unwrap().unwrap().value.unwrap();
    assert_eq!(in_force, in_force_after, "an expired request changed nothing");

    // A request whose change is rewritten in the database is refused: its seal no longer holds.
    let f = held(policies::set(&m1, node, &text_a, None, "to be tampered"));
    let raw = RawDb::at(h.dir.path());
    // (Workflow history is append-only, so the forger adds a version with the change swapped.)
    let sql = format!(
        "INSERT INTO workflow_versions (kind, key, version, value, changed_by, changed_at, reason) \
         SELECT kind, key, version + 1, replace(value, '// a', '// x'), changed_by, changed_at, reason \
         FROM workflow_versions WHERE kind = 'change-request' AND key = '{}'",
        f.id
    );
    raw.exec_both(&sql).unwrap();
    let tampered = node.store.config_get("change-request", &f.id).unwrap().unwrap().value.unwrap();
    let sha = approvals::Change::sha256(&serde_json::from_value(tampered["change"].clone()).unwrap());
    for hash in [f.sha256.as_str(), sha.as_str()] {
        match approvals::approve(&admin, node, &f.id, hash, "") {
            Err(AppError::Conflict(m)) => assert!(m.contains("altered"), "{m}"),
            other => panic!("a tampered request: {other:?}"),
        }
    }
    assert_eq!(node.store.config_get("policies", "active").unwrap().unwrap().value.unwrap(), in_force);

    // Every step is in the audit trail as a change of the request.
    let steps: Vec<String> = entries(&h, "config").into_iter().filter_map(|e| e.detail).collect();
    for word in ["change requested", "approved", "refused", "withdrawn", "expired", "failed"] {
        assert!(steps.iter().any(|d| d.contains(word)), "no audit entry for `{word}`");
    }
}

#[test]
fn granting_administrative_rights_and_system_applications_need_a_second_person() {
    let h = Harness::new();
    h.add_user("admin1", &["system_admin"], "Practitioner/sa");
    h.add_user("manager1", &["security_manager"], "Practitioner/sm");
    h.add_user("nurse1", &["nurse"], "Practitioner/ns");
    let node = &h.node;
    let (admin, m1) = (person(&h, "admin1"), person(&h, "manager1"));

    // A transfer into the security manager's role: held; the account keeps its roles.
    let p = held(users::transfer(&admin, node, "nurse1", None, Some(vec!["nurse".into(), "security_manager".into()])));
    assert!(p.summary.contains("set-policies"), "the rights gained are named: {}", p.summary);
    assert_eq!(node.store.account("nurse1").unwrap().unwrap().0.roles, vec!["nurse".to_string()]);
    approvals::approve(&m1, node, &p.id, &p.sha256, "").unwrap();
    assert_eq!(node.store.account("nurse1").unwrap().unwrap().0.roles, vec!["nurse", "security_manager"]);
    // A transfer that gives no administrative right is not held.
    users::transfer(&admin, node, "nurse1", Some("外科".into()), None).unwrap();

    // Issuing an administrator: created disabled, enabled only by the approval.
    let issue = users::Issue {
        username: "admin2".into(),
        roles: vec!["system_admin".into()],
        password: "k7#Vq2!mZp-w9Xr-2".into(),
        ..users::Issue::default()
    };
    let p = held(users::issue(&admin, node, issue));
    let disabled = mamori_identity::account::Status::Disabled;
    assert_eq!(node.store.account("admin2").unwrap().unwrap().0.status, disabled);
    // Enabling it by hand is the same held change, not a way around it.
    let again = held(users::enable(&admin, node, "admin2"));
    assert_eq!(node.store.account("admin2").unwrap().unwrap().0.status, disabled);
    approvals::approve(&m1, node, &p.id, &p.sha256, "new colleague").unwrap();
    assert_eq!(node.store.account("admin2").unwrap().unwrap().0.status, mamori_identity::account::Status::Active);
    // The second request was decided on a version that is gone.
    assert!(matches!(approvals::approve(&m1, node, &again.id, &again.sha256, ""), Err(AppError::Conflict(_))));

    // An application with system/ scopes: held (its secret shown once now), not registered
    // until approved; a client without system/ scopes is not held.
    let feed = NewClient {
        id: "lab-feed".into(),
        scope: "system/Observation.rs".into(),
        token_lifetime_secs: 900,
        ..NewClient::default()
    };
    let r = clients::register(&admin, node, feed).unwrap();
    let p = r.pending.expect("held");
    assert!(r.secret.is_some());
    assert!(node.store.config_get("client", "lab-feed").unwrap().is_none(), "not registered while held");
    approvals::approve(&m1, node, &p.id, &p.sha256, "").unwrap();
    let c = node.store.config_get("client", "lab-feed").unwrap().unwrap();
    assert_eq!(c.value.unwrap()["scope"], "system/Observation.rs");
    // Disabling it is not held; enabling it again is.
    clients::disable(&admin, node, "lab-feed").unwrap();
    held(clients::enable(&admin, node, "lab-feed"));
}

#[test]
fn with_nobody_else_to_approve_the_change_applies_and_the_waiver_is_audited() {
    let h = Harness::new();
    let op = Ctx::operator(&h.node, "kanri");
    let before = version(&h, "class-rules", "active");
    let rules = class_rules::current(&op, &h.node).unwrap();
    class_rules::set(&op, &h.node, &rules, "installation").unwrap();
    assert_ne!(version(&h, "class-rules", "active"), before);
    let waived = entries(&h, "two-person-waived");
    assert_eq!(waived.len(), 1);
    assert!(waived[0].detail.as_deref().unwrap_or("").contains("no other active account"));

    // Once a person who may approve exists, the operator's change is held, and an operator
    // (whose name the command line does not prove) cannot approve an operator's request.
    h.add_user("manager1", &["security_manager"], "Practitioner/sm");
    let p = held(class_rules::set(&op, &h.node, &rules, "again"));
    let other = Ctx::operator(&h.node, "someone-else");
    assert!(matches!(approvals::approve(&other, &h.node, &p.id, &p.sha256, ""), Err(AppError::Forbidden(_))));
    approvals::approve(&person(&h, "manager1"), &h.node, &p.id, &p.sha256, "").unwrap();
}

#[test]
fn the_command_line_holds_lists_shows_and_approves_by_hash() {
    let dir = tempfile::tempdir().unwrap();
    let _db = crate::support::store_for(dir.path());
    let d = dir.path().to_str().unwrap();
    let add = |name: &str, role: &str| {
        use std::io::Write;
        let mut c = std::process::Command::new(crate::binary::BIN)
            .args(["user", "add", name, "--role", role, "--fhir-user", "Practitioner/x", "--password-stdin"])
            .args(["--data-dir", d])
            .env("MAMORI_LANG", "en")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin.take().unwrap().write_all(b"k7#Vq2!mZp-w9Xr\n").unwrap();
        c.wait_with_output().unwrap()
    };
    // The first security manager: nobody else could approve, applied at once.
    assert!(add("anzen", "security_manager").status.success());
    // The second administrator is held: exit 3, the account exists disabled.
    let out = add("kanri", "system_admin");
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("awaits a second person's approval"));

    let list = cli(&["approvals", "list", "--data-dir", d]);
    let text = String::from_utf8_lossy(&list.stdout).to_string();
    assert!(list.status.success() && text.starts_with("1\tpending\toperator:"), "{text}");
    let show = cli(&["approvals", "show", "1", "--data-dir", d]);
    let shown = String::from_utf8_lossy(&show.stdout).to_string();
    let sha = shown.lines().find_map(|l| l.strip_prefix("sha256 ")).unwrap().to_string();
    assert!(shown.contains("\"type\": \"enable\""), "{shown}");

    // An operator's request needs a person signed in: the command line cannot approve it.
    let out = cli(&["approvals", "approve", "1", "--sha256", &sha, "--data-dir", d, "--operator", "other"]);
    assert_eq!(out.status.code(), Some(2));
    // A person approves it (the console's use case, in process).
    {
        let node = mamori::open_node(dir.path()).unwrap();
        let anzen = Ctx::person(&node, "anzen", None, None).unwrap();
        // Approving needs the exact hash the command line showed.
        approvals::approve(&anzen, &node, "1", &sha, "").unwrap();
    }
    let list = cli(&["approvals", "list", "--all", "--data-dir", d]);
    assert!(String::from_utf8_lossy(&list.stdout).starts_with("1\tapproved"));
    let bad = cli(&["approvals", "show", "nope", "--data-dir", d]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("no change request"));
}
