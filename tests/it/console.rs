//! The web console (#24) against the real binary: in Chromium (each role's main path, a forged
//! form, a clerk refused, the language switch, keyboard, axe-core), and what it leaves in the
//! audit trail — the same entries as the command line's use cases.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::binary::{cli, http, start};

const PW: &str = "k7#Vq2!mZp-w9";
const NEW_PW: &str = "Zx8$Lm4!qRt-N6";

fn add(dir: &Path, user: &str, roles: &[&str]) {
    let args: Vec<&str> = roles.iter().flat_map(|r| ["--role", r]).collect();
    crate::login::add_account(dir, user, PW, &args);
}

fn totp(dir: &Path, user: &str) -> String {
    let out = cli(&["user", "enroll-totp", user, "--data-dir", dir.to_str().unwrap()]);
    let uri = String::from_utf8(out.stdout).unwrap();
    assert!(uri.contains("secret="), "enroll-totp {user}: {uri} {}", String::from_utf8_lossy(&out.stderr));
    uri.split("secret=").nth(1).unwrap().split('&').next().unwrap().to_string()
}

/// Without a session the console sends the browser to sign in, and answers nothing else.
#[test]
fn the_console_asks_for_a_sign_in_and_serves_nothing_without_one() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    let _db = crate::support::store_for(&dir);
    let s = start(&dir, &[]);
    for path in ["/console/", "/console", "/console/audit?agent=x", "/console/users/anyone", "/console/nothing-here"] {
        let r = http(s.addr, "GET", path, &[], b"").unwrap();
        assert_eq!(r.status, 303, "{path}");
        let to = r.header("location").unwrap();
        assert!(to.starts_with("/login?next=/console"), "{path} → {to}");
    }
    // A POST without a session changes nothing and also only points to the sign-in.
    let r = http(
        s.addr,
        "POST",
        "/console/users/admin/disable",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        b"csrf=x",
    )
    .unwrap();
    assert_eq!(r.status, 303);
    // The stylesheet is public (no data in it).
    let r = http(s.addr, "GET", "/console/console.css", &[], b"").unwrap();
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/css"));
}

#[test]
fn every_role_uses_the_console_in_a_browser() {
    crate::login::chromium();
    let deps = crate::support::pip_target("smartjsdeps", &["selenium==4.27.1", "pyotp==2.9.0"], &["selenium", "pyotp"]);
    let axe = crate::clients::npm_prefix("axecore", &["axe-core@4.11.0"], "axe-core");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    let _db = crate::support::store_for(&dir);
    let d = dir.to_str().unwrap();
    assert!(cli(&["init", "--data-dir", d]).status.success());
    add(&dir, "anzen", &["security_manager"]);
    add(&dir, "kanri", &["system_admin"]);
    add(&dir, "uketsuke", &["clerk"]);
    add(&dir, "suzuki", &["nurse"]);
    crate::login::add_account(&dir, "tanaka", PW, &["--role", "doctor", "--fhir-user", "Practitioner/tanaka"]);
    // A maintenance vendor: its contact requests and reports, its engineer works inside windows.
    add(&dir, "v-contact", &["vendor_contact"]);
    add(&dir, "v-sato", &["maintenance_vendor"]);
    let out = cli(&[
        "maintenance",
        "vendor",
        "acme",
        "--name",
        "Acme 医療システム",
        "--contact",
        "保守窓口 03-0000-0000",
        "--contract",
        "保守契約 2026-17",
        "--contact-account",
        "v-contact",
        "--account",
        "v-sato",
        "--operator",
        "kanri",
        "--data-dir",
        d,
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let secrets: serde_json::Map<String, Value> = ["anzen", "kanri", "uketsuke", "tanaka", "v-contact", "v-sato"]
        .iter()
        .map(|u| ((*u).to_string(), Value::from(totp(&dir, u))))
        .collect();
    // A backup repository with one generation (no drill yet), for the backups page.
    let identity = tmp.path().join("backup-identity.txt");
    let out = cli(&["backup", "keygen", "--out", identity.to_str().unwrap()]);
    let recipient = String::from_utf8_lossy(&out.stdout).lines().last().unwrap().trim().to_string();
    crate::backup::set_backup(
        &dir,
        &format!("repository = \"{}\"\nrecipients = [\"{recipient}\"]", tmp.path().join("repo").display()),
    );
    let out = cli(&["backup", "create", "--data-dir", d]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let free = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (port, attack_port) = (free(), free());
    let base = format!("http://localhost:{port}");
    let server = start(&dir, &["--listen", &format!("127.0.0.1:{port}"), "--public-url", &base]);
    seed_ward(server.addr, &dir);
    // Screenshots for docs/console/ when asked (MAMORI_CONSOLE_SHOTS=docs/console), else thrown away.
    let shots = match std::env::var("MAMORI_CONSOLE_SHOTS") {
        Ok(p) => {
            // Japanese glyphs for the pictures (Debian's Noto CJK); the checks do not need them.
            let out = Command::new("apt-get")
                .args(["install", "-y", "-qq", "fonts-noto-cjk"])
                .env("DEBIAN_FRONTEND", "noninteractive")
                .output()
                .unwrap();
            assert!(out.status.success(), "installing fonts-noto-cjk: {}", String::from_utf8_lossy(&out.stderr));
            Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
        }
        Err(_) => tmp.path().join("shots"),
    };
    crate::support::python_ok(
        &deps,
        "console_browser.py",
        &[
            &base,
            &Value::Object(secrets).to_string(),
            PW,
            NEW_PW,
            axe.join("node_modules/axe-core/axe.min.js").to_str().unwrap(),
            shots.to_str().unwrap(),
            &attack_port.to_string(),
        ],
    );
    drop(server);
    // What the console did is in the audit trail, as the people who did it.
    let out = cli(&["audit", "export", "--format", "ndjson", "--data-dir", d]);
    let entries: Vec<Value> =
        String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let by = |who: &str, action: &str| -> Vec<&Value> {
        entries.iter().filter(|e| e["actor"]["id"] == who && e["action"] == action).collect()
    };
    assert!(!by("anzen", "audit-search").is_empty(), "searching the trail is recorded");
    assert!(!by("anzen", "audit-read").is_empty(), "opening an entry is recorded");
    let logouts = by("anzen", "logout");
    assert!(
        logouts.iter().any(|e| e["detail"].as_str().unwrap_or("").starts_with("session lasted")),
        "signing out is recorded with the session's length: {logouts:?}"
    );
    let denied = by("uketsuke", "admin-denied");
    assert!(denied.len() >= 4, "each page refused to the clerk is recorded: {denied:?}");
    let account = |user: &str| {
        let out = cli(&["user", "show", user, "--data-dir", d]);
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    assert!(account("suzuki").contains("disabled"), "{}", account("suzuki"));
    assert!(account("takahashi").contains("nurse"), "{}", account("takahashi"));
    assert!(account("kanri").contains("active"), "{}", account("kanri"));
    // The administrator's changes are attributed to them.
    let changes: Vec<&Value> = entries
        .iter()
        .filter(|e| e["actor"]["id"] == "kanri" && e["outcome"] == "success" && e.to_string().contains("suzuki"))
        .collect();
    assert!(changes.len() >= 2, "enrolment and disabling of suzuki by kanri: {changes:?}");
}

/// A ward: p-care (髙橋 花子) in Practitioner/tanaka's care with a final Observation and a proxy
/// entry awaiting tanaka's approval, and p-other (山田 太郎) in nobody's care. Returns the seeding
/// client's token, the final Observation and the pending one.
fn seed_ward(addr: std::net::SocketAddr, dir: &Path) -> (String, Value, Value) {
    let tok = crate::binary::token(addr, dir, "seed");
    seed(
        addr,
        &tok,
        &serde_json::json!({"resourceType": "Patient", "id": "p-care", "gender": "female", "birthDate": "1970-01-02",
            "identifier": [{"system": "http://hospital.example/mrn", "value": "MRN-1001"}],
            "name": [{"text": "髙橋 花子", "family": "髙橋", "given": ["花子"]},
                     {"text": "タカハシ ハナコ", "family": "タカハシ", "given": ["ハナコ"]}]}),
        &[],
    );
    seed(
        addr,
        &tok,
        &serde_json::json!({"resourceType": "Patient", "id": "p-other", "gender": "male", "birthDate": "1980-05-06",
            "identifier": [{"system": "http://hospital.example/mrn", "value": "MRN-2002"}],
            "name": [{"text": "山田 太郎", "family": "山田", "given": ["太郎"]}]}),
        &[],
    );
    seed(
        addr,
        &tok,
        &serde_json::json!({"resourceType": "CareTeam", "status": "active", "subject": {"reference": "Patient/p-care"},
            "participant": [{"member": {"reference": "Practitioner/tanaka"}}]}),
        &[],
    );
    let obs = |value: i64| {
        serde_json::json!({"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7", "display": "Body weight"}], "text": "体重"},
            "subject": {"reference": "Patient/p-care"}, "effectiveDateTime": "2026-12-01",
            "valueQuantity": {"value": value, "unit": "kg"}})
    };
    let final_obs = seed(addr, &tok, &obs(52), &[]);
    let author = r#"{"resourceType":"Provenance","agent":[{"type":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/provenance-participant-type","code":"author"}]},"who":{"reference":"Practitioner/tanaka"}}]}"#;
    let pending = seed(addr, &tok, &obs(53), &[("X-Provenance", author)]);
    assert_eq!(pending["meta"]["tag"][0]["code"], "pending-approval");
    (tok, final_obs, pending)
}

/// Posts a resource with the seeding client's token; returns the created resource.
fn seed(addr: std::net::SocketAddr, token: &str, body: &Value, extra: &[(&str, &str)]) -> Value {
    let auth = format!("Bearer {token}");
    let mut headers = vec![("Authorization", auth.as_str()), ("Content-Type", "application/fhir+json")];
    headers.extend_from_slice(extra);
    let rt = body["resourceType"].as_str().unwrap();
    let (method, path) = match body["id"].as_str() {
        Some(id) => ("PUT", format!("/fhir/{rt}/{id}")),
        None => ("POST", format!("/fhir/{rt}")),
    };
    let r = http(addr, method, &path, &headers, body.to_string().as_bytes()).unwrap();
    assert!(r.status == 200 || r.status == 201, "{}", String::from_utf8_lossy(&r.body));
    r.json()
}

/// Clinicians (#24): patient search by the keys staff type, a patient's record with versions,
/// 入力者 and hashes, proxy-entry approval, break-glass with a reason — and the oracle: a patient
/// outside the doctor's care answers exactly as a missing one; the clerk has no clinical pages.
/// Every read is in the audit trail as the same person's API read would be.
#[test]
fn clinicians_find_read_approve_and_break_the_glass() {
    let deps = crate::support::pip_target("pydeps", &["requests==2.32.3", "pyotp==2.9.0"], &["pyotp", "requests"]);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    let _db = crate::support::store_for(&dir);
    let d = dir.to_str().unwrap();
    assert!(cli(&["init", "--data-dir", d]).status.success());
    for (user, role) in [("tanaka", "doctor"), ("yamada", "doctor")] {
        let fhir_user = format!("Practitioner/{user}");
        crate::login::add_account(&dir, user, PW, &["--role", role, "--fhir-user", &fhir_user]);
    }
    add(&dir, "uketsuke", &["clerk"]);
    add(&dir, "anzen", &["security_manager"]);
    let secrets: serde_json::Map<String, Value> = ["tanaka", "yamada", "uketsuke", "anzen"]
        .iter()
        .map(|u| ((*u).to_string(), Value::from(totp(&dir, u))))
        .collect();
    let s = start(&dir, &[]);
    let (tok, final_obs, pending) = seed_ward(s.addr, &dir);
    // The version's hash, from the server's own Provenance.
    let final_id = final_obs["id"].as_str().unwrap();
    let auth = format!("Bearer {tok}");
    let provs = http(
        s.addr,
        "GET",
        &format!("/fhir/Provenance?target=Observation/{final_id}"),
        &[("Authorization", auth.as_str())],
        b"",
    )
    .unwrap()
    .json();
    let hash = provs["entry"][0]["resource"]["target"][0]["extension"][0]["valueString"].as_str().unwrap().to_string();
    crate::support::python_ok(
        &deps,
        "console_clinical.py",
        &[
            &format!("http://{}", s.addr),
            &Value::Object(secrets).to_string(),
            PW,
            NEW_PW,
            &hash,
            pending["id"].as_str().unwrap(),
        ],
    );
    drop(s);
    // The console's reads are the people's reads, recorded as their API reads would be.
    let out = cli(&["audit", "export", "--format", "ndjson", "--data-dir", d]);
    let entries: Vec<Value> =
        String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let find = |who: &str, action: &str, outcome: &str, resource: &str| {
        entries.iter().any(|e| {
            e["actor"]["id"] == who
                && e["actor"]["client_id"] == "mamori-console"
                && e["action"] == action
                && e["outcome"] == outcome
                && e.to_string().contains(resource)
        })
    };
    assert!(find("tanaka", "read", "success", "Patient/p-care"), "the record page's read");
    assert!(find("tanaka", "search", "success", &format!("Observation/{final_id}")), "the compartment's search");
    assert!(
        !entries.iter().any(|e| e["actor"]["id"] == "tanaka"
            && e["action"] == "search"
            && e.to_string().contains("\"Provenance/")),
        "the server's own Provenance is not shown, so not recorded as shown"
    );
    assert!(find("tanaka", "history", "success", &format!("Observation/{final_id}")), "the versions");
    assert!(find("yamada", "read", "denied", "Patient/p-care"), "the hidden patient, denied in the trail");
    assert!(find("tanaka", "break-glass", "success", "Patient/p-other"), "the grant");
    assert!(find("tanaka", "alert-break-glass", "success", "Patient/p-other"), "its alert");
    assert!(find("uketsuke", "break-glass", "denied", "Patient/p-care"), "the clerk's refused break-glass");
    let under_glass = entries.iter().any(|e| {
        e["actor"]["id"] == "tanaka"
            && e["purpose"] == "ETREAT"
            && e["action"] == "read"
            && e.to_string().contains("Patient/p-other")
    });
    assert!(under_glass, "reads under break-glass carry purpose ETREAT");
    let out = cli(&["user", "show", "uketsuke", "--data-dir", d]);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("clerk"), "the revoked role is gone");
}

/// Administrators (#24): applications (a secret shown once and used at the token endpoint
/// unchanged, rotation, disable), signing keys, policies checked against the table of expected
/// decisions with a diff before they apply, class rules, and "verify now" on the home page —
/// which, after someone edits an entry behind the server's back, says the trail does not verify
/// and raises an alert. A clerk sees none of it. The changes are in the audit trail as the people
/// who made them.
#[test]
fn administrators_manage_applications_policies_keys_and_verify_the_trail() {
    let deps = crate::support::pip_target("pydeps", &["requests==2.32.3", "pyotp==2.9.0"], &["pyotp", "requests"]);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    let _db = crate::support::store_for(&dir);
    let d = dir.to_str().unwrap();
    assert!(cli(&["init", "--data-dir", d]).status.success());
    add(&dir, "kanri", &["system_admin"]);
    add(&dir, "anzen", &["security_manager"]);
    add(&dir, "uketsuke", &["clerk"]);
    let secrets: serde_json::Map<String, Value> =
        ["kanri", "anzen", "uketsuke"].iter().map(|u| ((*u).to_string(), Value::from(totp(&dir, u)))).collect();
    let secrets = Value::Object(secrets).to_string();
    let s = start(&dir, &[]);
    let base = format!("http://{}", s.addr);
    crate::support::python_ok(&deps, "console_admin.py", &[&base, &secrets, PW, NEW_PW, "main"]);

    // The changes are attributed to the people who made them, through the one configuration path.
    let out = cli(&["client", "show", "lab-feed", "--data-dir", d]);
    let shown = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success() && shown.contains("kanri"), "{shown}");
    let out = cli(&["policy", "show", "--data-dir", d]);
    let (shown, set_by) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(shown.contains("vendor-no-delete") && set_by.contains("anzen"), "{set_by}");

    // What they did is in the audit trail as the people who did it.
    let out = cli(&["audit", "export", "--format", "ndjson", "--data-dir", d]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let entries: Vec<Value> =
        String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let any = |who: &str, action: &str, needle: &str| {
        entries.iter().any(|e| e["actor"]["id"] == who && e["action"] == action && e.to_string().contains(needle))
    };
    let actions: std::collections::BTreeSet<String> =
        entries.iter().filter_map(|e| e["action"].as_str().map(str::to_string)).collect();
    assert!(any("kanri", "config", "config/client/lab-feed/v3"), "registration and rotation by kanri: {actions:?}");
    // The policy change: requested by anzen, applied when kanri approved it (two-person rule).
    // (Request 1 was anzen's own account, 2 and 3 the application's registration and enabling.)
    assert!(any("anzen", "config", "config/change-request/4/v1"), "the policy change requested by anzen");
    assert!(any("kanri", "config", "config/policies/active/v1"), "and applied by kanri's approval");
    assert!(any("anzen", "config", "config/audit-verification/latest/v1"), "each verification is recorded");
    assert!(
        entries.iter().filter(|e| e["actor"]["id"] == "uketsuke" && e["action"] == "admin-denied").count() >= 4,
        "each page refused to the clerk is recorded"
    );

    // Someone with database access edits an entry about kanri's registration.
    let db = crate::support::RawDb::at(&dir);
    let idx = if db.is_pg() {
        db.int("SELECT MIN(idx) FROM audit_entries WHERE strpos(convert_from(entry, 'UTF8'), 'lab-feed') > 0")
    } else {
        db.int("SELECT MIN(idx) FROM audit_entries WHERE instr(CAST(entry AS TEXT), 'lab-feed') > 0")
    };
    assert!(idx > 0);
    db.exec(
        &format!("DROP TRIGGER audit_no_update; UPDATE audit_entries SET entry = CAST(replace(entry, 'lab-feed', 'lab-fake') AS BLOB) WHERE idx = {idx}"),
        &format!("DROP TRIGGER audit_no_change ON audit_entries;
         UPDATE audit_entries SET entry = convert_to(replace(convert_from(entry, 'UTF8'), 'lab-feed', 'lab-fake'), 'UTF8') WHERE idx = {idx}"),
    )
    .unwrap();
    // And the application's row, around the configuration path (found within the re-hash interval).
    let v = db.int("SELECT MAX(version) FROM config_versions WHERE kind = 'client' AND key = 'lab-feed'");
    db.exec_both(&format!(
        "INSERT INTO config_versions (kind, key, version, value, changed_by, changed_at, reason) \
         SELECT kind, key, version + 1, value, changed_by, changed_at, 'widened' FROM config_versions \
         WHERE kind = 'client' AND key = 'lab-feed' AND version = {v}"
    ))
    .unwrap();
    // "Verify now" says so, on the home page and among the alerts (console_admin.py checks both).
    crate::support::python_ok(&deps, "console_admin.py", &[&base, &secrets, PW, NEW_PW, "tampered"]);
    drop(s);
}

/// Backups in the console (#27): the security manager sees the repository's generations (one
/// whose manifest was altered shown as not verifying), the last restore drill with its RTO and
/// RPO, and a vault that cannot be reached shown as such; the system administrator switches
/// emergency read-only mode on (a reason required) and every page tells every visitor, a clerk
/// included; a record write is refused meanwhile; then back off. A clerk cannot open the page.
#[test]
fn the_backups_page_shows_generations_drills_the_vault_and_switches_read_only_mode() {
    let deps = crate::support::pip_target("pydeps", &["requests==2.32.3", "pyotp==2.9.0"], &["pyotp", "requests"]);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    let _db = crate::support::store_for(&dir);
    let d = dir.to_str().unwrap();
    let ok = |args: &[&str]| {
        let o = cli(args);
        assert!(o.status.success(), "mamori {args:?}: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    ok(&["init", "--data-dir", d]);
    add(&dir, "kanri", &["system_admin"]);
    add(&dir, "anzen", &["security_manager"]);
    add(&dir, "uketsuke", &["clerk"]);
    let identity = tmp.path().join("backup-identity.txt");
    let printed = ok(&["backup", "keygen", "--out", identity.to_str().unwrap()]);
    let recipient = printed.lines().last().unwrap().trim().to_string();
    let repo = tmp.path().join("repo");
    crate::backup::set_backup(
        &dir,
        &format!("repository = \"{}\"\nrecipients = [\"{recipient}\"]\ndrill_days = 30", repo.display()),
    );
    let mut names = Vec::new();
    for _ in 0..3 {
        let text = ok(&["backup", "create", "--data-dir", d]);
        names.push(text.split_whitespace().nth(1).unwrap().trim_end_matches(':').to_string());
    }
    ok(&["backup", "drill", "--data-dir", d, "--identity", identity.to_str().unwrap()]);
    // Someone alters the oldest generation's manifest.
    let m = repo.join(format!("{}.manifest", names[0]));
    let text = std::fs::read_to_string(&m).unwrap().replacen("\"resources\":", "\"resources\": ", 1);
    std::fs::write(&m, text).unwrap();
    // A vault nobody answers at.
    let token = tmp.path().join("vault-token");
    std::fs::write(&token, "t").unwrap();
    let toml = dir.join("mamori.toml");
    let repo_line = format!("repository = \"{}\"", repo.display());
    let t = std::fs::read_to_string(&toml).unwrap().replacen(
        &repo_line,
        &format!("{repo_line}\nvault = \"http://127.0.0.1:9\"\nvault_token_file = \"{}\"", token.display()),
        1,
    );
    std::fs::write(&toml, t).unwrap();

    let secrets: serde_json::Map<String, Value> =
        ["kanri", "anzen", "uketsuke"].iter().map(|u| ((*u).to_string(), Value::from(totp(&dir, u)))).collect();
    let secrets = Value::Object(secrets).to_string();
    let s = start(&dir, &[]);
    let base = format!("http://{}", s.addr);
    let names_json = Value::from(names.clone()).to_string();
    crate::support::python_ok(&deps, "console_admin.py", &[&base, &secrets, PW, NEW_PW, "backups", &names_json]);
    drop(s);

    let out = cli(&["audit", "export", "--format", "ndjson", "--data-dir", d]);
    let entries: Vec<Value> =
        String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let any = |who: &str, action: &str, needle: &str| {
        entries.iter().any(|e| e["actor"]["id"] == who && e["action"] == action && e.to_string().contains(needle))
    };
    assert!(any("kanri", "config", "config/emergency-mode/read-only/v1"), "switched on by kanri");
    assert!(any("kanri", "config", "config/emergency-mode/read-only/v2"), "and off");
    assert!(any("kanri", "alert-emergency-mode", "ON"), "the switch is alerted");
    assert!(any("uketsuke", "admin-denied", ""), "the clerk's refusal is recorded");
    let st = ok(&["emergency", "status", "--data-dir", d]);
    assert!(st.contains("off"), "{st}");
}
