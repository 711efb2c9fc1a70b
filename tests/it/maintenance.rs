//! Remote maintenance under the institution's control (M1, docs/REMOTE-MAINTENANCE.md): a
//! maintenance account can do nothing outside an approved window, not even sign in; inside,
//! exactly the window's scope, decided by the one enforcement point for the API and the use
//! cases alike; every entry carries the window's id; ending the window ends its tokens at once;
//! the report puts the audit trail's facts beside the vendor's, flags what was outside the plan,
//! and the accepted report's hash is anchored in the audit trail. On both backends.

use axum::http::StatusCode;
use mamori_app::maintenance::{self, Erasure, Filing, ItemResult, Request, Scope, State, Vendor};
use mamori_app::{AdminAct, AppError, Ctx};
use mamori_audit::{AuditRecord, EntryQuery};
use serde_json::json;

use crate::support::{Harness, Later, now_secs};

const PASSWORD: &str = "k7#Vq2!mZp-w9Xr";

fn person(h: &Harness, who: &str) -> Ctx {
    Ctx::person(&h.node, who, Some("192.0.2.9".into()), Some(format!("req-{who}"))).unwrap()
}

fn entries(h: &Harness, action: &str) -> Vec<AuditRecord> {
    let q = EntryQuery { action: Some(action.into()), limit: 10_000, ..EntryQuery::default() };
    h.node.store.query(&q).unwrap().into_iter().map(|(_, b)| serde_json::from_slice(&b).unwrap()).collect()
}

fn signs_in(h: &Harness, who: &str) -> bool {
    h.node.identity.authenticate(who, PASSWORD, None, now_secs(), Some("192.0.2.50")).unwrap().is_ok()
}

/// A request with `token` (not the harness's application token).
async fn call_as(
    h: &Harness,
    token: &str,
    method: &str,
    uri: &str,
    body: Option<&serde_json::Value>,
) -> crate::support::Resp {
    let mut b =
        axum::http::Request::builder().method(method).uri(uri).header("authorization", format!("Bearer {token}"));
    if body.is_some() {
        b = b.header("content-type", "application/fhir+json");
    }
    let body = body.map(|v| axum::body::Body::from(v.to_string())).unwrap_or_else(axum::body::Body::empty);
    h.send(b.body(body).unwrap()).await
}

async fn get(h: &Harness, token: &str, uri: &str) -> (StatusCode, serde_json::Value) {
    let r = call_as(h, token, "GET", uri, None).await;
    let body = serde_json::from_slice(&r.body).unwrap_or_default();
    (r.status, body)
}

fn now_us() -> i64 {
    now_secs() * 1_000_000
}

struct World {
    h: Harness,
    obs1: String,
    obs2: String,
}

async fn world() -> World {
    world_with(Harness::new()).await
}

async fn world_with(h: Harness) -> World {
    h.add_user("kanri", &["system_admin"], "Practitioner/kanri");
    h.add_user("anzen", &["security_manager"], "Practitioner/anzen");
    h.add_user("v-sato", &["maintenance_vendor"], "Practitioner/v-sato");
    h.add_user("v-contact", &["vendor_contact"], "Practitioner/v-contact");
    h.add_user("clerk1", &["clerk"], "Practitioner/clerk1");
    for p in ["mp1", "mp2"] {
        let r = h.call("PUT", &format!("/fhir/Patient/{p}"), Some(&json!({"resourceType": "Patient", "id": p}))).await;
        assert!(r.status.is_success(), "{}", r.diagnostics());
    }
    let obs = |p: &str| {
        json!({"resourceType": "Observation", "status": "final", "code": {"text": "BP"},
               "subject": {"reference": format!("Patient/{p}")}})
    };
    let obs1 = h.create(&obs("mp1")).await["id"].as_str().unwrap().to_string();
    let obs2 = h.create(&obs("mp2")).await["id"].as_str().unwrap().to_string();
    let kanri = person(&h, "kanri");
    let v = Vendor {
        id: "acme".into(),
        name: "Acme 医療システム".into(),
        contact: "保守窓口 03-0000-0000".into(),
        contract: "保守契約 2026-17".into(),
        contacts: vec!["v-contact".into()],
        accounts: vec!["v-sato".into()],
        sources: Vec::new(),
    };
    maintenance::set_vendor(&kanri, &h.node, v, "contract signed").unwrap();
    World { h, obs1, obs2 }
}

fn plan(start: i64, minutes: i64, scope: Scope) -> Request {
    Request {
        vendor: "acme".into(),
        accounts: Vec::new(),
        system: "電子カルテ 検査結果表示".into(),
        purpose: "表示不具合の調査".into(),
        items: vec!["ログの確認".into(), "対象患者の検査結果の表示確認".into()],
        start,
        end: start + minutes * 60_000_000,
        scope,
    }
}

#[tokio::test]
async fn a_vendor_works_only_inside_an_approved_window_and_only_its_scope() {
    let World { h, obs1, obs2 } = world().await;
    let node = &h.node;
    let (kanri, anzen, contact) = (person(&h, "kanri"), person(&h, "anzen"), person(&h, "v-contact"));

    // Outside any window: no sign-in, and a token (however obtained) does nothing.
    assert!(!signs_in(&h, "v-sato"), "a maintenance account signed in outside a window");
    let refused = entries(&h, "login");
    assert!(
        refused.iter().any(|e| e.actor.id == "v-sato" && e.detail.as_deref().is_some_and(|d| d.contains("window"))),
        "the refused sign-in is audited with its reason"
    );
    let token = h.user_token("v-sato", &["maintenance_vendor"], "Practitioner/v-sato");
    let (hidden, _) = get(&h, &token, &format!("/fhir/Observation/{obs1}")).await;
    let (missing, _) = get(&h, &token, "/fhir/Observation/does-not-exist").await;
    assert_eq!(hidden, missing, "hidden looks like missing");
    assert_eq!(hidden, StatusCode::FORBIDDEN, "refused at the type, before any record is looked at");
    assert_eq!(get(&h, &token, "/fhir/Observation?subject=Patient/mp1").await.0, StatusCode::FORBIDDEN);
    let v_ctx = person(&h, "v-sato");
    assert!(v_ctx.window.is_none());
    assert!(matches!(v_ctx.authorize(node, AdminAct::ReadAudit), Err(AppError::Forbidden(_))));

    // The contact requests; a scope beyond what may be delegated, or patient data half-named, is
    // refused before anything is stored.
    let bad = Scope { acts: vec!["manage-users".into()], ..Scope::default() };
    assert!(matches!(maintenance::request(&contact, node, plan(now_us(), 30, bad)), Err(AppError::Invalid(_))));
    let half = Scope { classes: vec!["general".into()], read: true, ..Scope::default() };
    assert!(matches!(maintenance::request(&contact, node, plan(now_us(), 30, half)), Err(AppError::Invalid(_))));
    assert!(
        matches!(
            maintenance::request(
                &contact,
                node,
                plan(now_us(), 60 * 24, Scope { acts: vec!["read-audit".into()], ..Scope::default() })
            ),
            Err(AppError::Invalid(_))
        ),
        "longer than max_hours"
    );
    let scope = Scope {
        acts: vec!["read-audit".into()],
        classes: vec!["general".into(), "administrative".into()],
        patients: vec!["mp1".into()],
        read: true,
        ..Scope::default()
    };
    let w = maintenance::request(&contact, node, plan(now_us() - 1_000_000, 30, scope)).unwrap();
    assert_eq!(w.state, State::Requested);
    assert_eq!(w.scope.patients, vec!["Patient/mp1"]);
    assert!(!signs_in(&h, "v-sato"), "requested is not approved");

    // The contact and a clerk may not approve; the system administrator's own request is not
    // theirs to approve either.
    assert!(matches!(maintenance::approve(&contact, node, &w.id, ""), Err(AppError::Forbidden(_))));
    assert!(matches!(maintenance::approve(&person(&h, "clerk1"), node, &w.id, ""), Err(AppError::Forbidden(_))));
    let own = maintenance::request(
        &kanri,
        node,
        plan(now_us() + 3_600_000_000, 30, Scope { acts: vec!["read-audit".into()], ..Scope::default() }),
    )
    .unwrap();
    match maintenance::approve(&kanri, node, &own.id, "") {
        Err(AppError::Forbidden(m)) => assert!(m.contains("own request"), "{m}"),
        other => panic!("self-approval: {other:?}"),
    }
    maintenance::refuse(&anzen, node, &own.id, "not needed").unwrap();

    // Approved by the security manager: the window is open now (its start has passed).
    let w = maintenance::approve(&anzen, node, &w.id, "調査のため承認").unwrap();
    assert_eq!(w.state, State::Approved);
    assert!(signs_in(&h, "v-sato"), "inside the window the vendor signs in");

    // Exactly the scope: patient mp1's data read, mp2's hidden as if missing, no write, the
    // approved act and no other.
    let (s, _) = get(&h, &token, &format!("/fhir/Observation/{obs1}")).await;
    assert_eq!(s, StatusCode::OK);
    let (s, hidden) = get(&h, &token, &format!("/fhir/Observation/{obs2}")).await;
    let (m, missing) = get(&h, &token, "/fhir/Observation/does-not-exist").await;
    assert_eq!((s, m), (StatusCode::NOT_FOUND, StatusCode::NOT_FOUND), "another patient's record is hidden");
    assert_eq!(hidden["issue"][0]["code"], missing["issue"][0]["code"]);
    let (s, bundle) = get(&h, &token, "/fhir/Observation").await;
    assert_eq!(s, StatusCode::OK);
    let ids: Vec<&str> =
        bundle["entry"].as_array().unwrap().iter().filter_map(|e| e["resource"]["id"].as_str()).collect();
    assert_eq!(ids, vec![obs1.as_str()], "only the approved patient's records are found");
    let amended = json!({"resourceType": "Observation", "id": obs1, "status": "amended", "code": {"text": "BP"},
                         "subject": {"reference": "Patient/mp1"}});
    let r = call_as(&h, &token, "PUT", &format!("/fhir/Observation/{obs1}"), Some(&amended)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "read-only window: {}", r.diagnostics());
    let v_ctx = person(&h, "v-sato");
    assert_eq!(v_ctx.window.as_ref().map(|w| w.id.as_str()), Some(w.id.as_str()));
    v_ctx.authorize(node, AdminAct::ReadAudit).unwrap();
    assert!(matches!(v_ctx.authorize(node, AdminAct::ManageUsers), Err(AppError::Forbidden(_))));

    // Every entry the vendor made in the window carries its id; the activity flags what was
    // outside the plan (the refused write, the refused act).
    let activity = maintenance::activity(&anzen, node, &w.id).unwrap();
    assert!(activity.len() >= 5, "{activity:#?}");
    assert!(activity.iter().all(|a| a.actor.contains("v-sato")), "{activity:#?}");
    assert!(activity.iter().any(|a| a.action == "read" && a.unplanned.is_none()), "{activity:#?}");
    assert!(activity.iter().any(|a| a.action == "update" && a.unplanned.is_some()), "{activity:#?}");
    assert!(activity.iter().any(|a| a.action == "admin-denied" && a.unplanned.is_some()), "{activity:#?}");
    let others = entries(&h, "read");
    assert!(others.iter().filter(|e| e.actor.id != "v-sato").all(|e| e.window.is_none()), "only the vendor's entries");

    // No report while the window is open; the institution ends it: the token stops at once.
    let report = Filing {
        items: vec![
            ItemResult { item: 1, done: true, result: "エラーログを確認".into() },
            ItemResult { item: 2, done: true, result: "表示を確認、設定の誤りを特定".into() },
        ],
        erasures: vec![Erasure {
            what: "検証用に抽出した検査結果 1 件".into(),
            place: "保守端末 ACME-PC-07".into(),
            how: "shred -u".into(),
            when: "2026-12-05 23:00".into(),
            by: "佐藤".into(),
        }],
        note: String::new(),
    };
    assert!(matches!(maintenance::report(&contact, node, &w.id, report.clone()), Err(AppError::Conflict(_))));
    assert!(matches!(maintenance::close(&contact, node, &w.id, "x"), Err(AppError::Forbidden(_))));
    let closed = maintenance::close(&anzen, node, &w.id, "作業完了の連絡を受けた").unwrap();
    assert_eq!(closed.state, State::Closed);
    assert!(closed.closing.as_ref().unwrap().early);
    let (s, _) = get(&h, &token, &format!("/fhir/Observation/{obs1}")).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "the vendor's token ended with the window");
    assert!(!signs_in(&h, "v-sato"), "no sign-in after the window");
    assert!(entries(&h, "maintenance-window-closed").iter().any(|e| e.detail.as_deref().unwrap_or("").contains(&w.id)));

    // The report: every planned item, once; then the institution (not who filed it) accepts.
    let short = Filing { items: report.items[..1].to_vec(), ..report.clone() };
    assert!(matches!(maintenance::report(&contact, node, &w.id, short), Err(AppError::Invalid(_))));
    let filed = maintenance::report(&contact, node, &w.id, report).unwrap();
    assert_eq!(filed.state, State::Reported);
    let doc = maintenance::document(&anzen, node, &w.id).unwrap();
    assert!(doc.unplanned >= 2, "the unplanned actions are flagged: {}", doc.unplanned);
    let (accepted, sha) = maintenance::accept(&anzen, node, &w.id, "確認した").unwrap();
    assert_eq!(accepted.state, State::Accepted);
    let anchored = entries(&h, "maintenance-report-accepted");
    assert!(anchored.iter().any(|e| e.detail.as_deref().unwrap_or("").contains(&sha)), "the hash is in the trail");
    let (doc, exported) = maintenance::accepted_document(&anzen, node, &w.id).unwrap();
    assert_eq!(exported, sha);
    assert_eq!(doc.sha256().unwrap(), sha, "the exported document is the one whose hash was anchored");
    assert!(maintenance::to_html(&doc, &sha).contains("shred -u"));

    // Its history stays: every state it passed through.
    let states: Vec<State> =
        maintenance::history(&anzen, node, &w.id).unwrap().into_iter().map(|(_, w)| w.state).collect();
    assert_eq!(states, vec![State::Requested, State::Approved, State::Closed, State::Reported, State::Accepted]);
    // The register knows the system is maintained remotely by the vendor.
    let reg = maintenance::register(&anzen, node).unwrap();
    assert!(reg.iter().any(|r| r.vendor == "acme" && r.system == "電子カルテ 検査結果表示" && r.windows == 1));
    // The trail verifies with all of it.
    // (Off the async test's thread: the verifier reads PostgreSQL with a runtime of its own.)
    let v =
        std::thread::scope(|s| s.spawn(|| mamori_app::audit_trail::verify_now(&anzen, node)).join()).unwrap().unwrap();
    assert!(v.passed(), "{v:?}");
}

#[tokio::test]
async fn a_window_opens_at_its_start_time_and_its_end_ends_the_vendors_access() {
    let World { h, obs1, .. } = world().await;
    let node = &h.node;
    let (contact, anzen) = (person(&h, "v-contact"), person(&h, "anzen"));
    let scope =
        Scope { classes: vec!["general".into()], patients: vec!["Patient/mp1".into()], read: true, ..Scope::default() };
    let start = now_us() + 2_000_000;
    let mut r = plan(start, 1, scope);
    r.end = start + 3_000_000;
    let undecided = maintenance::request(&contact, node, r.clone()).unwrap();
    let w = maintenance::request(&contact, node, r).unwrap();
    maintenance::approve(&anzen, node, &w.id, "").unwrap();
    // Approved, not yet started: nothing.
    let token = h.user_token("v-sato", &["maintenance_vendor"], "Practitioner/v-sato");
    assert!(!signs_in(&h, "v-sato"), "the time counts from the start, not the approval");
    assert_eq!(get(&h, &token, &format!("/fhir/Observation/{obs1}")).await.0, StatusCode::FORBIDDEN);
    while now_us() < start + 200_000 {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(get(&h, &token, &format!("/fhir/Observation/{obs1}")).await.0, StatusCode::OK);
    maintenance::tick(node).unwrap();
    assert_eq!(maintenance::show(&anzen, node, &w.id).unwrap().state, State::Open);
    while now_us() < start + 3_200_000 {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // Its end: refused at once by the clock, and the schedule ends the tokens and records it.
    assert_eq!(get(&h, &token, &format!("/fhir/Observation/{obs1}")).await.0, StatusCode::FORBIDDEN);
    maintenance::tick(node).unwrap();
    let ended = maintenance::show(&anzen, node, &w.id).unwrap();
    assert_eq!(ended.state, State::Closed);
    // A request nobody decided expires at its end time and leaves the inbox, recorded.
    assert_eq!(maintenance::show(&anzen, node, &undecided.id).unwrap().state, State::Expired);
    assert!(matches!(maintenance::approve(&anzen, node, &undecided.id, ""), Err(AppError::Conflict(_))));
    assert!(
        entries(&h, "maintenance-window-expired").iter().any(|e| e
            .detail
            .as_deref()
            .unwrap_or("")
            .contains(&undecided.id))
    );
    assert!(!ended.closing.as_ref().unwrap().early);
    assert_eq!(get(&h, &token, &format!("/fhir/Observation/{obs1}")).await.0, StatusCode::UNAUTHORIZED);
    // The report is due; not overdue yet.
    assert!(maintenance::reports_due(&anzen, node).unwrap().is_empty());
    // Eight days on ([maintenance] report_days = 7): listed, and alerted once by the schedule.
    let days_later = |mut c: Ctx| {
        c.clock = std::sync::Arc::new(Later(8 * 24));
        c
    };
    let due = maintenance::reports_due(&days_later(person(&h, "anzen")), node).unwrap();
    assert_eq!(due.iter().map(|w| w.id.as_str()).collect::<Vec<_>>(), vec![w.id.as_str()]);
    let schedule = days_later(Ctx::operator(node, maintenance::SCHEDULE));
    maintenance::tick_as(&schedule, node).unwrap();
    maintenance::tick_as(&schedule, node).unwrap();
    let alerts = entries(&h, "alert-maintenance-report-due");
    assert_eq!(alerts.len(), 1, "alerted once: {alerts:?}");
    assert!(alerts[0].detail.as_deref().unwrap_or("").contains(&w.id));
    assert!(maintenance::show(&anzen, node, &w.id).unwrap().report_alerted);
}

/// A JSON request to the maintenance API with a person's token.
async fn api(
    h: &Harness,
    token: Option<&str>,
    method: &str,
    uri: &str,
    body: Option<serde_json::Value>,
) -> (StatusCode, serde_json::Value, crate::support::Resp) {
    let mut b = axum::http::Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    if body.is_some() {
        b = b.header("content-type", "application/json");
    }
    let body = body.map(|v| axum::body::Body::from(v.to_string())).unwrap_or_else(axum::body::Body::empty);
    let r = h.send(b.body(body).unwrap()).await;
    (r.status, serde_json::from_slice(&r.body).unwrap_or_default(), r)
}

/// The JSON API: the same use cases for a person's token — request, amendment shown to the
/// approver, approval, the live activity, closing, the report, acceptance with the document's
/// hash, the register — every bad request answered in OperationOutcome and left in the trail,
/// and another vendor's window exactly as absent as one that does not exist.
#[tokio::test]
async fn the_json_api_runs_the_same_use_cases_for_a_persons_token() {
    let World { h, obs1, .. } = world().await;
    let node = &h.node;
    h.add_user("other-contact", &["vendor_contact"], "Practitioner/other-contact");
    let other = Vendor {
        id: "beta".into(),
        name: "Beta".into(),
        contact: "beta".into(),
        contract: "B-1".into(),
        contacts: vec!["other-contact".into()],
        accounts: Vec::new(),
        sources: Vec::new(),
    };
    maintenance::set_vendor(&person(&h, "kanri"), node, other, "").unwrap();
    let contact = h.user_token("v-contact", &["vendor_contact"], "Practitioner/v-contact");
    let stranger = h.user_token("other-contact", &["vendor_contact"], "Practitioner/other-contact");
    let anzen = h.user_token("anzen", &["security_manager"], "Practitioner/anzen");
    let kanri = h.user_token("kanri", &["system_admin"], "Practitioner/kanri");
    let vendor = h.user_token("v-sato", &["maintenance_vendor"], "Practitioner/v-sato");

    let start = mamori_records::Timestamp(now_us() - 1_000_000).to_fhir();
    let end = mamori_records::Timestamp(now_us() + 30 * 60_000_000).to_fhir();
    let request = json!({
        "vendor": "acme", "system": "検査システム連携", "purpose": "連携エラーの調査",
        "items": ["ログの確認"], "start": start, "end": end,
        "scope": {"classes": ["general"], "patients": ["Patient/mp1"], "read": true}
    });
    let (s, w, r) = api(&h, Some(&contact), "POST", "/maintenance/windows", Some(request.clone())).await;
    assert_eq!(s, StatusCode::CREATED, "{}", r.diagnostics());
    let id = w["id"].as_str().unwrap().to_string();
    assert_eq!(w["state"], "requested");

    // Bad requests: OperationOutcome, nothing stored, each left in the trail.
    let before = maintenance::list(&person(&h, "anzen"), node).unwrap().len();
    let (s, oo, _) = api(&h, Some(&contact), "POST", "/maintenance/windows", Some(json!({"vendor": "acme"}))).await;
    assert_eq!((s, oo["resourceType"].as_str()), (StatusCode::BAD_REQUEST, Some("OperationOutcome")));
    let mut bad_time = request.clone();
    bad_time["start"] = json!("tomorrow at nine");
    assert_eq!(
        api(&h, Some(&contact), "POST", "/maintenance/windows", Some(bad_time)).await.0,
        StatusCode::BAD_REQUEST
    );
    // Times at the ends of the range: refused, no arithmetic overflow.
    let mut extreme = request.clone();
    (extreme["start"], extreme["end"]) = (json!(i64::MIN), json!(i64::MAX));
    assert_eq!(api(&h, Some(&contact), "POST", "/maintenance/windows", Some(extreme)).await.0, StatusCode::BAD_REQUEST);
    let r = h
        .send(
            axum::http::Request::builder()
                .method("POST")
                .uri("/maintenance/windows")
                .header("authorization", format!("Bearer {contact}"))
                .header("content-type", "text/plain")
                .body(axum::body::Body::from(request.to_string()))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(api(&h, None, "GET", "/maintenance/windows", None).await.0, StatusCode::UNAUTHORIZED);
    let (s, _, _) = api(&h, Some(&h.token), "GET", "/maintenance/windows", None).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "an application's token is not a person's");
    assert_eq!(maintenance::list(&person(&h, "anzen"), node).unwrap().len(), before, "nothing stored");
    let traces = entries(&h, "maintenance-api");
    assert!(traces.iter().filter(|e| e.outcome == mamori_audit::Outcome::Failure).count() >= 6, "{traces:#?}");

    // Another vendor's contact: the window is as absent as one that does not exist.
    let (hs, hidden, _) = api(&h, Some(&stranger), "GET", &format!("/maintenance/windows/{id}"), None).await;
    let fake = format!("MW-{}", &id[3..].replace(|c: char| c.is_ascii_alphabetic(), "z"));
    let (ms, missing, _) = api(&h, Some(&stranger), "GET", &format!("/maintenance/windows/{fake}"), None).await;
    assert_eq!((hs, ms), (StatusCode::NOT_FOUND, StatusCode::NOT_FOUND));
    assert_eq!(
        hidden.to_string().replace(&id, "ID"),
        missing.to_string().replace(&fake, "ID"),
        "the same answer, word for word"
    );
    let (_, theirs, _) = api(&h, Some(&stranger), "GET", "/maintenance/windows", None).await;
    assert_eq!(theirs["windows"], json!([]));

    // The contact may not approve (refused and audited); they amend, and the approver sees what
    // changed.
    assert_eq!(
        api(&h, Some(&contact), "POST", &format!("/maintenance/windows/{id}/approve"), None).await.0,
        StatusCode::FORBIDDEN
    );
    let mut changed = request.clone();
    changed["items"] = json!(["ログの確認", "連携設定の表示確認"]);
    let amend = json!({"request": changed, "note": "作業項目を追加"});
    let (s, _, r) = api(&h, Some(&contact), "POST", &format!("/maintenance/windows/{id}/amend"), Some(amend)).await;
    assert_eq!(s, StatusCode::OK, "{}", r.diagnostics());
    let (s, shown, _) = api(&h, Some(&anzen), "GET", &format!("/maintenance/windows/{id}"), None).await;
    assert_eq!(s, StatusCode::OK);
    let change = &shown["amendmentChanges"][0];
    assert_eq!(change["decision"]["note"], "作業項目を追加");
    assert_eq!(change["changes"][0]["field"], "items");
    assert_eq!(change["changes"][0]["after"], "ログの確認 / 連携設定の表示確認");

    // Approved by the system administrator; the vendor works; the institution watches live.
    let (s, approved, _) =
        api(&h, Some(&kanri), "POST", &format!("/maintenance/windows/{id}/approve"), Some(json!({"note": "承認"})))
            .await;
    assert_eq!((s, approved["state"].as_str()), (StatusCode::OK, Some("approved")));
    assert_eq!(get(&h, &vendor, &format!("/fhir/Observation/{obs1}")).await.0, StatusCode::OK);
    let (s, live, _) = api(&h, Some(&anzen), "GET", &format!("/maintenance/windows/{id}/activity"), None).await;
    assert_eq!(s, StatusCode::OK);
    let entries_now = live["entries"].as_array().unwrap();
    assert!(entries_now.iter().any(|e| e["action"] == "read" && e["actor"].as_str().unwrap().contains("v-sato")));
    let last = live["last"].as_u64().unwrap();
    let (_, later, _) =
        api(&h, Some(&anzen), "GET", &format!("/maintenance/windows/{id}/activity?after={last}"), None).await;
    assert_eq!(later["entries"], json!([]), "nothing new since the last entry seen");
    // The vendor's own call to the maintenance API is refused, in the window's timeline.
    assert_eq!(api(&h, Some(&vendor), "GET", "/maintenance/windows", None).await.0, StatusCode::FORBIDDEN);
    let (_, later, _) =
        api(&h, Some(&anzen), "GET", &format!("/maintenance/windows/{id}/activity?after={last}"), None).await;
    assert!(
        later["entries"].as_array().unwrap().iter().any(|e| e["action"] == "admin-denied" && !e["unplanned"].is_null())
    );

    // Ended at once; reported; accepted; the document's hash is the anchored one.
    let url = |act: &str| format!("/maintenance/windows/{id}/{act}");
    assert_eq!(api(&h, Some(&anzen), "POST", &url("close"), Some(json!({}))).await.0, StatusCode::BAD_REQUEST);
    let (s, _, _) = api(&h, Some(&anzen), "POST", &url("close"), Some(json!({"note": "作業完了"}))).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(get(&h, &vendor, &format!("/fhir/Observation/{obs1}")).await.0, StatusCode::UNAUTHORIZED);
    let filing = json!({"items": [{"item": 1, "done": true, "result": "ログ確認済み"},
                                  {"item": 2, "done": false, "result": "不要と判断"}], "note": ""});
    let (s, _, r) = api(&h, Some(&contact), "POST", &url("report"), Some(filing)).await;
    assert_eq!(s, StatusCode::OK, "{}", r.diagnostics());
    let (s, accepted, _) = api(&h, Some(&anzen), "POST", &url("accept"), Some(json!({"note": "受理"}))).await;
    assert_eq!(s, StatusCode::OK);
    let sha = accepted["documentSha256"].as_str().unwrap().to_string();
    let (s, _, doc) = api(&h, Some(&anzen), "GET", &url("document"), None).await;
    assert_eq!(s, StatusCode::OK);
    use sha2::Digest;
    assert_eq!(hex::encode(sha2::Sha256::digest(&doc.body)), sha, "the body is the document whose hash is anchored");
    assert_eq!(doc.header("x-mamori-sha256").as_deref(), Some(sha.as_str()));
    assert!(
        entries(&h, "maintenance-report-accepted").iter().any(|e| e.detail.as_deref().unwrap_or("").contains(&sha))
    );
    let (s, _, html) = api(&h, Some(&anzen), "GET", &format!("{}?format=html", url("document")), None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(String::from_utf8_lossy(&html.body).contains("ログ確認済み"));
    let (_, reg, _) = api(&h, Some(&anzen), "GET", "/maintenance/register", None).await;
    assert!(reg["register"].as_array().unwrap().iter().any(|e| e["system"] == "検査システム連携"));
    assert!(entries(&h, "maintenance-read").iter().any(|e| e.actor.id == "anzen"), "reads leave a trace");
}

/// `mamori maintenance` through the binary: request → refused self-approval → approval by
/// another operator → close → report (an unreadable or malformed file is a clear error with a
/// non-zero exit, nothing stored) → accept → export, whose JSON hashes to what the audit trail
/// holds; the trail verifies.
#[test]
fn the_command_line_runs_a_window_from_request_to_exported_report() {
    use crate::binary::cli;
    use sha2::Digest;
    let out = |o: &std::process::Output| {
        format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    let _db = crate::support::store_for(&dir);
    let d = dir.to_str().unwrap();
    assert!(cli(&["init", "--data-dir", d]).status.success());
    crate::login::add_account(&dir, "v-sato", PASSWORD, &["--role", "maintenance_vendor"]);
    crate::login::add_account(&dir, "v-contact", PASSWORD, &["--role", "vendor_contact"]);
    let o = cli(&[
        "maintenance",
        "vendor",
        "acme",
        "--name",
        "Acme",
        "--contact",
        "03-0000-0000",
        "--contract",
        "C-17",
        "--contact-account",
        "v-contact",
        "--account",
        "v-sato",
        "--operator",
        "kanri",
        "--data-dir",
        d,
    ]);
    assert!(o.status.success(), "{}", out(&o));
    let request = |start: &str| {
        cli(&[
            "maintenance",
            "request",
            "--vendor",
            "acme",
            "--system",
            "検査システム",
            "--purpose",
            "ログ調査",
            "--item",
            "ログの確認",
            "--start",
            start,
            "--minutes",
            "30",
            "--act",
            "read-audit",
            "--operator",
            "kanri",
            "--data-dir",
            d,
        ])
    };
    let bad = request("next tuesday");
    assert_eq!(bad.status.code(), Some(2), "{}", out(&bad));
    assert!(out(&bad).contains("--start `next tuesday`"), "{}", out(&bad));
    let o = request("now");
    assert!(o.status.success(), "{}", out(&o));
    let id = out(&o).split_whitespace().find(|w| w.starts_with("MW-")).unwrap().to_string();
    let own = cli(&["maintenance", "approve", &id, "--operator", "kanri", "--data-dir", d]);
    assert_ne!(own.status.code(), Some(0));
    assert!(out(&own).contains("own request"), "{}", out(&own));
    let o = cli(&["maintenance", "approve", &id, "--note", "ok", "--operator", "anzen", "--data-dir", d]);
    assert!(o.status.success() && out(&o).contains("approved"), "{}", out(&o));
    let o = cli(&["maintenance", "list", "--json", "--data-dir", d]);
    let listed: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(listed[0]["id"], id.as_str());
    assert_eq!(listed[0]["state"], "approved");
    let o = cli(&["maintenance", "close", &id, "--reason", "作業完了", "--operator", "anzen", "--data-dir", d]);
    assert!(o.status.success(), "{}", out(&o));

    // The report file: missing, then not a report — each a clear error, nothing filed.
    let missing = tmp.path().join("no-such-report.json");
    let o = cli(&["maintenance", "report", &id, "--file", missing.to_str().unwrap(), "--data-dir", d]);
    assert_ne!(o.status.code(), Some(0));
    assert!(out(&o).contains("cannot read"), "{}", out(&o));
    let file = tmp.path().join("report.json");
    std::fs::write(&file, r#"{"items": [{"item": 1, "done": true}]}"#).unwrap();
    let o = cli(&["maintenance", "report", &id, "--file", file.to_str().unwrap(), "--data-dir", d]);
    assert_ne!(o.status.code(), Some(0));
    assert!(out(&o).contains("is not a work report"), "{}", out(&o));
    let o = cli(&["maintenance", "show", &id, "--data-dir", d]);
    assert!(out(&o).contains("closed"), "nothing filed: {}", out(&o));
    std::fs::write(&file, r#"{"items": [{"item": 1, "done": true, "result": "エラーなし"}], "note": "完了"}"#).unwrap();
    let o =
        cli(&["maintenance", "report", &id, "--file", file.to_str().unwrap(), "--operator", "kanri", "--data-dir", d]);
    assert!(o.status.success(), "{}", out(&o));
    let o = cli(&["maintenance", "accept", &id, "--operator", "anzen", "--data-dir", d]);
    assert!(o.status.success(), "{}", out(&o));
    let sha = out(&o).split("sha256 ").nth(1).unwrap().trim().to_string();
    let export = tmp.path().join("export");
    let o = cli(&["maintenance", "export", &id, "--out", export.to_str().unwrap(), "--data-dir", d]);
    assert!(o.status.success(), "{}", out(&o));
    let json = std::fs::read(export.join(format!("{id}.json"))).unwrap();
    assert_eq!(hex::encode(sha2::Sha256::digest(&json)), sha, "the exported JSON is the anchored document");
    assert!(std::fs::read_to_string(export.join(format!("{id}.html"))).unwrap().contains("エラーなし"));
    let o = cli(&["audit", "export", "--format", "ndjson", "--data-dir", d]);
    let anchored = String::from_utf8_lossy(&o.stdout)
        .lines()
        .any(|l| l.contains("maintenance-report-accepted") && l.contains(&sha));
    assert!(anchored, "the hash is in the audit trail");
    let o = cli(&["audit", "verify", "--data-dir", d]);
    assert!(o.status.success(), "{}", out(&o));
}

/// `[maintenance] approvers = 2`: a window is approved only by two different people of the
/// institution; one person twice is refused; a change to the request lapses the approval given;
/// `max_hours` is the configured one; a setting out of range stops the node with its reason.
#[tokio::test]
async fn two_approvers_are_two_different_people_and_a_change_lapses_an_approval() {
    let h = Harness::with_config(Some("[maintenance]\napprovers = 2\nmax_hours = 2\n"));
    let World { h, .. } = world_with(h).await;
    let node = &h.node;
    h.add_user("anzen2", &["security_manager"], "Practitioner/anzen2");
    let (contact, anzen, anzen2, kanri) =
        (person(&h, "v-contact"), person(&h, "anzen"), person(&h, "anzen2"), person(&h, "kanri"));
    let scope = || Scope { acts: vec!["read-audit".into()], ..Scope::default() };
    let start = now_us() + 3_600_000_000;
    assert!(
        matches!(maintenance::request(&contact, node, plan(start, 3 * 60, scope())), Err(AppError::Invalid(_))),
        "longer than max_hours = 2"
    );
    let w = maintenance::request(&contact, node, plan(start, 60, scope())).unwrap();
    assert_eq!(w.approvals_needed, 2);
    let once = maintenance::approve(&anzen, node, &w.id, "").unwrap();
    assert_eq!((once.state, once.approvals.len()), (State::Requested, 1), "one of two");
    assert!(matches!(maintenance::approve(&anzen, node, &w.id, ""), Err(AppError::Conflict(_))), "not twice");
    // A change lapses the approval given; the amender cannot approve it either.
    let mut changed = plan(start, 90, scope());
    changed.items.push("再起動後の確認".into());
    assert!(
        matches!(maintenance::amend(&kanri, node, &w.id, changed.clone(), " "), Err(AppError::Invalid(_))),
        "a change without its reason"
    );
    let mut other_vendor = changed.clone();
    other_vendor.vendor = "beta".into();
    assert!(matches!(maintenance::amend(&kanri, node, &w.id, other_vendor, "x"), Err(AppError::Invalid(_))));
    assert_eq!(maintenance::show(&anzen, node, &w.id).unwrap().approvals.len(), 1, "nothing changed by either");
    let amended = maintenance::amend(&kanri, node, &w.id, changed, "作業項目と時間を変更").unwrap();
    assert!(amended.approvals.is_empty());
    assert!(matches!(maintenance::approve(&kanri, node, &w.id, ""), Err(AppError::Forbidden(_))));
    let shown = maintenance::amendments(&anzen, node, &w.id).unwrap();
    let fields: Vec<&str> = shown[0].changes.iter().map(|c| c.field).collect();
    assert_eq!(fields, vec!["items", "end"], "{shown:?}");
    maintenance::approve(&anzen, node, &w.id, "").unwrap();
    let twice = maintenance::approve(&anzen2, node, &w.id, "").unwrap();
    assert_eq!(twice.state, State::Approved);
    // Once decided, it can no longer be changed.
    assert!(matches!(
        maintenance::amend(&contact, node, &w.id, plan(start, 30, scope()), "late"),
        Err(AppError::Conflict(_))
    ));

    // A setting out of range: the command line says which and stops (exit 2).
    let d = h.dir.path().to_str().unwrap().to_string();
    let toml = h.dir.path().join("mamori.toml");
    let text = std::fs::read_to_string(&toml).unwrap().replace("approvers = 2", "approvers = 3");
    std::fs::write(&toml, text).unwrap();
    let o = crate::binary::cli(&["maintenance", "list", "--data-dir", &d]);
    assert_ne!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stderr).contains("approvers 1 or 2"), "{}", String::from_utf8_lossy(&o.stderr));
}
