//! The application layer (issue #23): each administrative act is one use case in `mamori-app`,
//! decided by the enforcement point for whoever calls it — a person (the console) or the local
//! operator (the CLI) — and audited in the caller's name.

use mamori_app::clients::{self, NewClient};
use mamori_app::{AppError, Ctx, class_rules, reviews, users};
use mamori_audit::{AuditRecord, EntryQuery};

use crate::binary::cli;
use crate::support::Harness;

fn entries(h: &Harness, action: &str, agent: &str) -> Vec<AuditRecord> {
    let q =
        EntryQuery { action: Some(action.into()), agent: Some(agent.into()), limit: 10_000, ..EntryQuery::default() };
    h.node.store.query(&q).unwrap().into_iter().map(|(_, b)| serde_json::from_slice(&b).unwrap()).collect()
}

fn feed(id: &str) -> NewClient {
    NewClient { id: id.into(), scope: "system/Observation.rs".into(), token_lifetime_secs: 900, ..NewClient::default() }
}

fn person(h: &Harness, who: &str) -> Ctx {
    Ctx::person(&h.node, who, Some("192.0.2.7".into()), Some(format!("req-{who}"))).unwrap()
}

#[test]
fn a_person_may_do_only_the_acts_their_roles_allow_and_each_refusal_is_audited() {
    let h = Harness::new();
    h.add_user("admin1", &["system_admin"], "Practitioner/sa");
    h.add_user("manager1", &["security_manager"], "Practitioner/sm");
    h.add_user("doctor1", &["doctor"], "Practitioner/dr");
    let node = &h.node;

    // The system administrator registers an application: stored, attributed to the person,
    // and its change entry carries who did it.
    // With `system/` scopes it is a high-risk change: held until a second person (here the
    // security manager) approves it, then applied in the approver's name, naming the requester.
    let r = clients::register(&person(&h, "admin1"), node, feed("lab-feed")).unwrap();
    assert!(r.secret.is_some(), "a confidential client gets a secret once");
    let p = r.pending.expect("held for a second person");
    assert!(node.store.config_get("client", "lab-feed").unwrap().is_none());
    assert!(!entries(&h, "config", "admin1").is_empty(), "the request is in the audit trail in sa's name");
    mamori_app::approvals::approve(&person(&h, "manager1"), node, &p.id, &p.sha256, "").unwrap();
    let stored = node.store.config_get("client", "lab-feed").unwrap().unwrap();
    assert_eq!(stored.changed_by, "user:manager1");
    assert!(stored.reason.contains("requested by user:admin1"), "{}", stored.reason);

    // The security manager and a doctor may not: refused, nothing stored, the refusal audited
    // with who, from where, the request id and the act.
    for who in ["manager1", "doctor1"] {
        let id = format!("feed-{who}");
        match clients::register(&person(&h, who), node, feed(&id)) {
            Err(AppError::Forbidden(m)) => assert!(m.contains("manage-clients"), "{m}"),
            other => panic!("{who} registering a client: {other:?}"),
        }
        assert!(node.store.config_get("client", &id).unwrap().is_none(), "{who}: nothing stored");
        let denied = entries(&h, "admin-denied", who);
        assert_eq!(denied.len(), 1, "{who}: one refusal entry");
        let e = &denied[0];
        assert_eq!(e.status, Some(403));
        assert_eq!(e.source.as_deref(), Some("192.0.2.7"));
        assert_eq!(e.request_id.as_deref(), Some(format!("req-{who}").as_str()));
        assert!(e.detail.as_deref().unwrap_or("").starts_with("manage-clients"), "{:?}", e.detail);
    }

    // A refused caller learns nothing about what exists: the same answer for an application that
    // is registered and one that is not (refused before anything is looked up).
    let doctor = person(&h, "doctor1");
    let existing = clients::history(&doctor, node, "lab-feed").unwrap_err().to_string();
    let missing = clients::history(&doctor, node, "no-such-feed").unwrap_err().to_string();
    assert_eq!(existing, missing);

    // The rules of who may see what are the security manager's, not the administrator's.
    let rules = class_rules::current(&person(&h, "manager1"), node).unwrap();
    assert!(matches!(class_rules::set(&person(&h, "admin1"), node, &rules, "try"), Err(AppError::Forbidden(_))));
    let p = match class_rules::set(&person(&h, "manager1"), node, &rules, "re-affirmed") {
        Err(AppError::Pending(p)) => p,
        other => panic!("class rules are held for a second person: {other:?}"),
    };
    let r = mamori_app::approvals::approve(&person(&h, "admin1"), node, &p.id, &p.sha256, "").unwrap();
    assert_eq!(Some(node.store.config_get("class-rules", "active").unwrap().unwrap().version), r.applied_version);
    assert!(matches!(class_rules::set(&person(&h, "manager1"), node, &rules, " "), Err(AppError::Invalid(_))));

    // The operator may do everything, named in the change.
    let op = Ctx::operator(node, "kanri");
    clients::disable(&op, node, "lab-feed").unwrap();
    assert_eq!(node.store.config_get("client", "lab-feed").unwrap().unwrap().changed_by, "operator:kanri");
    assert!(matches!(clients::disable(&op, node, "lab-feed"), Err(AppError::Conflict(_))));
    assert!(matches!(clients::disable(&op, node, "no-such"), Err(AppError::NotFound(_))));
}

#[test]
fn nobody_changes_their_own_account_or_reviews_their_own_access() {
    let h = Harness::new();
    h.add_user("admin1", &["system_admin"], "Practitioner/sa");
    h.add_user("admin2", &["system_admin"], "Practitioner/admin2");
    h.add_user("manager1", &["security_manager"], "Practitioner/sm");
    h.add_user("manager2", &["security_manager"], "Practitioner/sm2");
    let node = &h.node;

    // An administrator may not widen, disable or unlock their own account.
    let sa = person(&h, "admin1");
    assert!(matches!(
        users::transfer(&sa, node, "admin1", None, Some(vec!["system_admin".into(), "doctor".into()])),
        Err(AppError::Forbidden(_))
    ));
    assert!(matches!(users::disable(&sa, node, "admin1"), Err(AppError::Forbidden(_))));
    assert_eq!(node.identity.account("admin1").unwrap().unwrap().roles, vec!["system_admin".to_string()]);
    // …but another administrator's, yes; the transfer opens a review of that account.
    let (a, campaign) = users::transfer(&sa, node, "admin2", Some("外来".into()), None).unwrap();
    assert_eq!(a.department.as_deref(), Some("外来"));
    assert_eq!(campaign.items.len(), 1);

    // A security manager may not decide their own item of a campaign; another may.
    let sm = person(&h, "manager1");
    let c = reviews::open(&sm, node, "2026 Q4", &[]).unwrap();
    assert!(matches!(reviews::decide(&sm, node, &c.id, "manager1", &[], "ok"), Err(AppError::Forbidden(_))));
    let (d, _) = reviews::decide(&person(&h, "manager2"), node, &c.id, "manager1", &[], "ok").unwrap();
    assert_eq!(d.by, "user:manager2");
    // Deciding twice is a conflict, and nothing changes.
    assert!(matches!(
        reviews::decide(&person(&h, "manager2"), node, &c.id, "manager1", &[], "again"),
        Err(AppError::Conflict(_))
    ));

    // A disabled account has no context at all.
    users::disable(&Ctx::operator(node, "kanri"), node, "manager2").unwrap();
    assert!(matches!(Ctx::person(node, "manager2", None, None), Err(AppError::Forbidden(_))));
}

/// A person's reads through the application layer are judged by their own rights and audited
/// in their name, like an API read; the operator's reads likewise, in the operator's name.
#[tokio::test]
async fn reads_through_the_application_layer_are_judged_and_audited_in_the_callers_name() {
    let h = Harness::new();
    h.add_user("doctor1", &["doctor"], "Practitioner/dr");
    h.add_user("manager1", &["security_manager"], "Practitioner/sm");
    let p =
        h.create(&serde_json::json!({"resourceType": "Patient", "id": "app-p1", "name": [{"family": "山田"}]})).await;
    let id = p["id"].as_str().unwrap();
    let rt = mamori_records::ResourceType::parse("Patient").unwrap();
    let rid = mamori_records::ResourceId::parse(id).unwrap();

    // The security manager may not read a patient's record: hidden, as missing — and the
    // attempt is one entry, refused by the policy (the reason kept for the auditor), revealing
    // nothing.
    let sm = person(&h, "manager1");
    let rctx = sm.records(&h.node);
    assert!(matches!(h.node.records.read(&rctx, &rt, &rid).wait(), Err(mamori_records::RecordError::NotFound(_))));
    let e = entries(&h, "read", "manager1");
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!((e[0].outcome, e[0].status), (mamori_audit::Outcome::Denied, Some(404)));
    // It names what was asked for, not a version, and no patient.
    assert_eq!(e[0].resources, vec![format!("Patient/{id}")]);
    assert!(e[0].patients.is_empty(), "{e:?}");
    assert!(e[0].detail.as_deref().is_some_and(|d| d.contains("access policy")), "{e:?}");
    assert_eq!(e[0].request_id.as_deref(), Some("req-manager1"));

    // The operator reads it; the read is one entry naming the version and the patient, written
    // by the service before the record is handed out.
    let op = Ctx::operator(&h.node, "kanri");
    let octx = op.records(&h.node);
    h.node.records.read(&octx, &rt, &rid).wait().unwrap();
    let e = entries(&h, "read", "kanri");
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].actor.kind, "operator");
    assert_eq!((e[0].purpose.as_str(), e[0].status), ("HOPERAT", Some(200)));
    assert_eq!(e[0].resources, vec![format!("Patient/{id}/_history/1")]);
    assert_eq!(e[0].patients, vec![format!("Patient/{id}")]);
    // Nothing is left for a later aggregate entry to list twice.
    h.node.records.audit_reads(&octx, mamori_records::ReadAction::Read, Some("test".into())).unwrap();
    assert_eq!(entries(&h, "read", "kanri").len(), 1);

    // The CLI's read (policy explain by the security manager's tool) is the same entry.
    let out = cli(&[
        "policy",
        "explain",
        "--user",
        "doctor1",
        "--action",
        "read",
        "--resource",
        &format!("Patient/{id}"),
        "--operator",
        "kansa",
        "--data-dir",
        h.dir.path().to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let e = entries(&h, "read", "kansa");
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].resources, vec![format!("Patient/{id}/_history/1")]);
}

#[test]
fn a_rotated_client_secret_replaces_the_old_one_at_once() {
    let h = Harness::new();
    let op = Ctx::operator(&h.node, "kanri");
    let first = clients::register(&op, &h.node, feed("rot")).unwrap().secret.unwrap();
    let token = |secret: &str| {
        h.node.oauth.client_credentials(
            &mamori_oauth::ClientAuth { id: "rot".into(), secret: secret.into() },
            None,
            crate::support::now_secs(),
        )
    };
    assert!(token(&first).is_ok());
    let second = clients::rotate_secret(&op, &h.node, "rot").unwrap();
    assert_ne!(first, second);
    assert!(token(&first).is_err(), "the old secret stops working");
    assert!(token(&second).is_ok());
    // A public client has no secret to rotate.
    let public = NewClient {
        id: "spa".into(),
        scope: "user/Patient.rs openid".into(),
        token_lifetime_secs: 900,
        redirect_uris: vec!["https://app.example/cb".into()],
        ..NewClient::default()
    };
    assert!(clients::register(&op, &h.node, public).unwrap().secret.is_none());
    assert!(matches!(clients::rotate_secret(&op, &h.node, "spa"), Err(AppError::Invalid(_))));
    // Bad input is refused before anything is stored.
    for bad in [
        NewClient { id: "bad id".into(), ..feed("x") },
        NewClient { token_lifetime_secs: 5, ..feed("short") },
        NewClient { classes: vec!["nonsense".into()], ..feed("cls") },
        NewClient { redirect_uris: vec!["http://evil.example/cb".into()], ..feed("redir") },
    ] {
        let id = bad.id.clone();
        assert!(matches!(clients::register(&op, &h.node, bad), Err(AppError::Invalid(_))), "{id}");
        assert!(h.node.store.config_get("client", &id).unwrap().is_none());
    }
}

/// The settings of `mamori.toml` are versioned and audited: each start records them when they
/// differ from the last recorded version, with a database URL reduced to "set".
#[test]
fn the_settings_of_mamori_toml_are_versioned_and_audited_at_each_start() {
    let h = Harness::new();
    let (kind, key) = mamori_app::node::SETTINGS;
    let first = h.node.store.config_get(kind, key).unwrap().expect("recorded at the first start");
    assert_eq!(first.changed_by, "system:mamori.toml");
    let cfg = h.dir.path().join("mamori.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    // Reopening with the same file records nothing new.
    drop(mamori::open_node(h.dir.path()).unwrap());
    assert_eq!(h.node.store.config_get(kind, key).unwrap().unwrap().version, first.version);
    // An edited lockout rule is a new version, audited.
    let edited = if text.contains("lockout_threshold = 10") {
        text.replace("lockout_threshold = 10", "lockout_threshold = 5")
    } else {
        format!("{text}\n[identity]\nlockout_threshold = 5\n")
    };
    std::fs::write(&cfg, edited).unwrap();
    drop(mamori::open_node(h.dir.path()).unwrap());
    let second = h.node.store.config_get(kind, key).unwrap().unwrap();
    assert_eq!(second.version, first.version + 1);
    assert_eq!(second.value.as_ref().unwrap()["identity"]["lockout_threshold"], 5);
    let audited: Vec<AuditRecord> = entries(&h, "config", "mamori.toml");
    assert_eq!(audited.len(), 2, "one entry per recorded version");
    // A PostgreSQL URL (which may carry a password) is never recorded.
    if let Some(db) = second.value.as_ref().unwrap().pointer("/store/database") {
        assert_eq!(db, &serde_json::Value::Bool(true));
    }
    let all = serde_json::to_string(&audited).unwrap() + &serde_json::to_string(&second.value).unwrap();
    assert!(!all.contains("postgres://"), "no database URL in the trail or the version");
}

/// Everything stored through the configuration path is of a kind in the registry, and every
/// current value passes its kind's check: the list drift detection will watch is complete.
#[test]
fn every_stored_configuration_kind_is_in_the_registry() {
    use mamori_app::registry::ConfigKind;
    let h = Harness::new();
    let node = &h.node;
    let op = Ctx::operator(node, "kanri");
    clients::register(&op, node, feed("reg-feed")).unwrap();
    h.add_user("nurse1", &["nurse"], "Practitioner/n1");
    let rules = class_rules::current(&op, node).unwrap();
    class_rules::set(&op, node, &rules, "re-affirmed").unwrap();
    mamori_app::policies::set(&op, node, mamori_authz::DEFAULT_POLICIES, None, "shipped").unwrap();
    reviews::open(&op, node, "periodic", &[]).unwrap();
    mamori_app::keys::rotate(&op, node, "first key").unwrap();
    let checked = mamori_app::audit_trail::verify_now(&op, node).unwrap();
    assert!(checked.passed() && checked.entries > 0, "{checked:?}");
    assert_eq!(mamori_app::audit_trail::last_verification(&op, node).unwrap(), Some(checked));
    mamori_app::baseline::approve(&op, node, "first baseline").unwrap();
    assert_eq!(ConfigKind::parse(mamori_app::node::SETTINGS.0), Some(ConfigKind::Settings));
    let tenant = serde_json::json!({"tenant": {"mfa": true}});
    mamori_app::external::add(&op, node, "tenant", tenant.clone(), vec!["reg-feed".into()], "go-live").unwrap();
    assert!(!mamori_app::external::check(&op, node, "tenant", &tenant).unwrap().drift());
    mamori_app::emergency::switch(&op, node, true, "drill").unwrap();
    mamori_app::emergency::switch(&op, node, false, "drill over").unwrap();
    // A restore drill (its result is workflow state).
    let repo = h.dir.path().join("backup-repo");
    let (identity, recipient) = mamori_app::backup::keygen();
    mamori_app::backup::create(&op, node, &repo, &[recipient], &mut |_| {}).unwrap();
    let id_file = h.dir.path().join("backup-identity.txt");
    std::fs::write(&id_file, identity).unwrap();
    let ids = mamori_app::backup::read_identities(&id_file).unwrap();
    let drill = mamori_app::backup::drill(&op, node, &repo, &ids, false, &mut |_| {}).unwrap();
    assert!(drill.passed(), "{drill:?}");
    // With a second person who may approve, a high-risk change is a change request.
    h.add_user("manager1", &["security_manager"], "Practitioner/sm1");
    let held = mamori_app::baseline::approve(&op, node, "second baseline");
    assert!(matches!(held, Err(AppError::Pending(_))), "{held:?}");

    // Remote maintenance: a vendor, a requested window, a register entry.
    h.add_user("v-sato", &["maintenance_vendor"], "Practitioner/v-sato");
    let vendor = mamori_app::maintenance::Vendor {
        id: "acme".into(),
        name: "Acme".into(),
        contact: "03-0000-0000".into(),
        contract: "C-1".into(),
        contacts: Vec::new(),
        accounts: vec!["v-sato".into()],
        sources: vec!["192.0.2.0/24".into()],
    };
    mamori_app::maintenance::set_vendor(&op, node, vendor, "contract").unwrap();
    let start = op.now().0 + 3_600_000_000;
    let request = mamori_app::maintenance::Request {
        vendor: "acme".into(),
        system: "PACS".into(),
        purpose: "update".into(),
        items: vec!["apply the update".into()],
        start,
        end: start + 3_600_000_000,
        scope: mamori_app::maintenance::Scope { acts: vec!["read-audit".into()], ..Default::default() },
        ..Default::default()
    };
    mamori_app::maintenance::request(&op, node, request).unwrap();
    mamori_app::maintenance::set_register(&op, node, "PACS", "acme", "VPN", false).unwrap();

    let db = crate::support::RawDb::at(h.dir.path());
    let mut seen = 0;
    for k in ConfigKind::ALL {
        let current = node.store.config_current(k.name()).unwrap();
        if !current.is_empty() {
            seen += 1;
        }
        for e in current {
            k.validate(e.value.as_ref()).unwrap_or_else(|why| panic!("{k} {}: {why}", e.key));
        }
        // Each kind is kept in its own table only.
        let (mine, other) = if k.is_workflow() {
            ("workflow_versions", "config_versions")
        } else {
            ("config_versions", "workflow_versions")
        };
        assert!(db.int(&format!("SELECT COUNT(*) FROM {mine} WHERE kind = '{k}'")) > 0, "{k} in {mine}");
        assert_eq!(db.int(&format!("SELECT COUNT(*) FROM {other} WHERE kind = '{k}'")), 0, "{k} not in {other}");
    }
    assert_eq!(seen, ConfigKind::ALL.len(), "every kind was exercised");
    let stored = db.int("SELECT COUNT(DISTINCT kind) FROM config_versions")
        + db.int("SELECT COUNT(DISTINCT kind) FROM workflow_versions");
    assert_eq!(stored, seen as i64, "no stored kind outside the registry");

    // A review decision is not a configuration change: no node reloads its policies for it.
    let generation = node.store.config_generation().unwrap();
    let campaign = reviews::open(&op, node, "one more", &["nurse1".to_string()]).unwrap();
    reviews::decide(&op, node, &campaign.id, "nurse1", &[], "ok").unwrap();
    assert_eq!(node.store.config_generation().unwrap(), generation);
    assert!(db.exec_both("DELETE FROM workflow_versions").is_err(), "workflow history is append-only");

    // The one path refuses a value its kind does not accept, and stores nothing.
    let bad = mamori_app::policies::set(&op, node, "permit(", None, "broken");
    assert!(matches!(bad, Err(AppError::Invalid(_))));
}

/// A store from before campaigns had their own table (and before `mamori_schema` recorded the
/// migration steps): its campaigns are found after the upgrade — copied into `workflow_versions`
/// by schema step 2, once; the old rows stay as history. PostgreSQL runs the same step.
#[test]
fn campaigns_of_an_older_embedded_store_survive_the_upgrade() {
    let h = Harness::new();
    let db = crate::support::RawDb::at(h.dir.path());
    if db.is_pg() {
        return;
    }
    let campaign = serde_json::json!({
        "id": "2026-01-01-old", "reason": "before the upgrade", "opened_at": 1, "opened_by": "operator:x",
        "items": [{"username": "someone", "roles": ["nurse"]}]
    });
    // The embedded store as an earlier version left it: no step record, no workflow table.
    db.exec_both("DROP TABLE mamori_schema; DROP TABLE workflow_versions").unwrap();
    db.exec_both(&format!(
        "INSERT INTO config_versions (kind, key, version, value, changed_by, changed_at, reason)
         VALUES ('access-review', '2026-01-01-old', 1, '{campaign}', 'operator:x', 1, 'opened')"
    ))
    .unwrap();
    let node = mamori::open_node(h.dir.path()).unwrap();
    let c = reviews::show(&Ctx::operator(&node, "kansa"), &node, "2026-01-01-old").unwrap();
    assert_eq!(c.reason, "before the upgrade");
    // Opening again copies nothing twice.
    drop(mamori::open_node(h.dir.path()).unwrap());
    assert_eq!(db.int("SELECT COUNT(*) FROM workflow_versions WHERE key = '2026-01-01-old'"), 1);
}

/// A record read at the command line (`mamori read`) is decided and audited by the record
/// service exactly as a read through the API: the same action, outcome, status, versions and
/// patients — found or not — and only who, from where and why differ.
#[tokio::test]
async fn a_record_read_at_the_command_line_is_recorded_as_one_through_the_api() {
    let h = Harness::new();
    let p =
        h.create(&serde_json::json!({"resourceType": "Patient", "id": "cli-p1", "name": [{"family": "佐藤"}]})).await;
    let id = p["id"].as_str().unwrap().to_string();
    let d = h.dir.path().to_str().unwrap().to_string();
    let shape = |r: &AuditRecord| (r.action.clone(), r.outcome, r.status, r.resources.clone(), r.patients.clone());
    let reads = || {
        let q = EntryQuery { action: Some("read".into()), limit: 10_000, ..EntryQuery::default() };
        h.node
            .store
            .query(&q)
            .unwrap()
            .into_iter()
            .map(|(_, b)| serde_json::from_slice(&b).unwrap())
            .collect::<Vec<AuditRecord>>()
    };

    for target in [id.as_str(), "cli-missing"] {
        let before = reads().len();
        let api = h.call("GET", &format!("/fhir/Patient/{target}"), None).await;
        let out = cli(&["read", &format!("Patient/{target}"), "--operator", "kansa", "--data-dir", &d]);
        let all = reads();
        assert_eq!(all.len(), before + 2, "one entry per read: {all:?}");
        let (api_entry, cli_entry) = (&all[before], &all[before + 1]);
        assert_eq!(shape(api_entry), shape(cli_entry), "{api_entry:?} / {cli_entry:?}");
        assert_eq!(api_entry.status, Some(api.status.as_u16()));
        assert_eq!(cli_entry.actor.kind, "operator");
        assert_eq!(cli_entry.actor.id, "kansa");
        assert_eq!(cli_entry.purpose, "HOPERAT");
        if target == id {
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(printed["id"], id.as_str());
            assert_eq!(cli_entry.resources, vec![format!("Patient/{id}/_history/1")]);
            assert_eq!(cli_entry.patients, vec![format!("Patient/{id}")]);
        } else {
            assert!(!out.status.success());
            assert!(
                String::from_utf8_lossy(&out.stderr).contains("not found"),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(
                (cli_entry.status, cli_entry.resources.clone()),
                (Some(404), vec!["Patient/cli-missing".to_string()])
            );
        }
    }

    // A malformed reference is refused before anything is read: a message, a non-zero exit, no
    // entry.
    let before = reads().len();
    for bad in ["Patient", "Patient/x/_history/one", "nosuch/x"] {
        let out = cli(&["read", bad, "--data-dir", &d]);
        assert!(!out.status.success(), "{bad}");
        assert!(!out.stderr.is_empty(), "{bad}");
    }
    assert_eq!(reads().len(), before);
}
