//! Backups (#27) with the real executable, on the backend under test: a generation taken under
//! write load restores every acknowledged write and proves itself (fsck, audit verify); a
//! tampered generation is refused; `--as-of` gives the records of that time; the `age` tool
//! itself opens a generation.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Value, json};

use crate::binary::{cli, http, start, token};

fn out(o: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn ok(args: &[&str]) -> String {
    let o = cli(args);
    assert!(o.status.success(), "mamori {args:?}: {}", out(&o));
    String::from_utf8_lossy(&o.stdout).to_string()
}

/// A data directory (its own database on PostgreSQL), initialised, with a backup key pair.
struct Site {
    tmp: tempfile::TempDir,
    dir: PathBuf,
    _db: Option<crate::support::TestDb>,
    identity: PathBuf,
    recipient: String,
}

impl Site {
    fn new() -> Site {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("d");
        let db = crate::support::store_for(&dir);
        ok(&["init", "--data-dir", dir.to_str().unwrap()]);
        let identity = tmp.path().join("backup-identity.txt");
        let printed = ok(&["backup", "keygen", "--out", identity.to_str().unwrap()]);
        let recipient = printed.lines().last().unwrap().trim().to_string();
        assert!(recipient.starts_with("age1"), "{printed}");
        Site { tmp, dir, _db: db, identity, recipient }
    }

    fn d(&self) -> &str {
        self.dir.to_str().unwrap()
    }

    fn repo(&self) -> PathBuf {
        self.tmp.path().join("repo")
    }

    fn create(&self) -> String {
        let text = ok(&[
            "backup",
            "create",
            "--data-dir",
            self.d(),
            "--repo",
            self.repo().to_str().unwrap(),
            "--recipient",
            &self.recipient,
        ]);
        // "backup NAME: …"
        text.split_whitespace().nth(1).unwrap().trim_end_matches(':').to_string()
    }

    fn restore_args(&self, generation: &str, to: &Path) -> Vec<String> {
        [
            "backup",
            "restore",
            "--data-dir",
            self.d(),
            "--repo",
            self.repo().to_str().unwrap(),
            "--generation",
            generation,
            "--identity",
            self.identity.to_str().unwrap(),
            "--to",
            to.to_str().unwrap(),
        ]
        .map(String::from)
        .to_vec()
    }
}

fn run(args: &[String]) -> std::process::Output {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    cli(&a)
}

fn patient(family: &str) -> Value {
    json!({"resourceType": "Patient", "name": [{"family": family, "given": ["太郎"]}], "gender": "male"})
}

fn post(addr: std::net::SocketAddr, token: &str, body: &Value) -> Option<String> {
    let auth = format!("Bearer {token}");
    let r = http(
        addr,
        "POST",
        "/fhir/Patient",
        &[("Authorization", &auth), ("Content-Type", "application/fhir+json")],
        body.to_string().as_bytes(),
    )
    .ok()?;
    (r.status == 201).then(|| r.json()["id"].as_str().unwrap().to_string())
}

/// The restored copy's view of `Patient/id` (its newest version's body), read as the operator.
fn read_restored(dir: &Path, database: Option<&str>, reference: &str) -> Option<Value> {
    let mut args = vec!["read", "--data-dir", dir.to_str().unwrap()];
    if let Some(db) = database {
        args.extend(["--database", db]);
    }
    args.push(reference);
    let o = cli(&args);
    o.status.success().then(|| serde_json::from_slice(&o.stdout).unwrap())
}

#[test]
fn a_backup_under_write_load_restores_every_acknowledged_write_and_proves_it() {
    let site = Site::new();
    let server = start(&site.dir, &[]);
    let tok = token(server.addr, &site.dir, "writer");
    let before: Vec<String> = (0..30).map(|i| post(server.addr, &tok, &patient(&format!("前{i}"))).unwrap()).collect();
    // Writers keep going while the generation is taken.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, tok, addr) = (stop.clone(), tok.clone(), server.addr);
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                if post(addr, &tok, &patient(&format!("最中{n}"))).is_some() {
                    n += 1;
                }
            }
            n
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(300));
    let generation = site.create();
    stop.store(true, Ordering::Relaxed);
    let during = writer.join().unwrap();
    assert!(during > 0, "no write went on during the backup");
    drop(server);

    // Verified without restoring: signature and hash; with the identity, every file and table.
    let repo = site.repo();
    let v = ok(&["backup", "verify", "--data-dir", site.d(), "--repo", repo.to_str().unwrap()]);
    assert!(v.contains("manifest signature, data hash (give --identity"), "{v}");
    let v = ok(&[
        "backup",
        "verify",
        "--data-dir",
        site.d(),
        "--repo",
        repo.to_str().unwrap(),
        "--identity",
        site.identity.to_str().unwrap(),
    ]);
    assert!(v.contains("decryption, every file and table hash verified"), "{v}");
    let listed = ok(&["backup", "list", "--data-dir", site.d(), "--repo", repo.to_str().unwrap()]);
    assert!(listed.contains(&generation) && listed.contains("signed"), "{listed}");
    // The backup is itself in the audit trail.
    let trail = ok(&["audit", "export", "--format", "ndjson", "--data-dir", site.d()]);
    assert!(
        trail.lines().any(|l| l.contains("\"backup-created\"") && l.contains(&generation)),
        "no backup-created entry"
    );

    // Restored into a new data directory — and, on PostgreSQL, into a new database as well.
    let mut targets: Vec<(PathBuf, Option<(crate::support::TestDb, String)>)> =
        vec![(site.tmp.path().join("restored"), None)];
    if let Some(db) = crate::support::new_database() {
        targets.push((site.tmp.path().join("restored-pg"), Some(db)));
    }
    for (to, db) in &targets {
        let mut args = site.restore_args(&generation, to);
        if let Some((_, url)) = db {
            args.extend(["--to-database".to_string(), url.clone()]);
        }
        let o = run(&args);
        let text = out(&o);
        assert!(o.status.success(), "{text}");
        assert!(text.contains("restore proven"), "{text}");
        let url = db.as_ref().map(|(_, u)| u.as_str());
        // Every write acknowledged before the backup began is there, as written.
        for id in &before {
            let body = read_restored(to, url, &format!("Patient/{id}")).unwrap_or_else(|| panic!("Patient/{id} lost"));
            assert!(body["name"][0]["family"].as_str().unwrap().starts_with('前'), "{body}");
        }
        // The copy proves itself with the ordinary tools.
        let t = to.to_str().unwrap();
        let mut base = vec!["--data-dir", t];
        if let Some(u) = url {
            base.extend(["--database", u]);
        }
        let fsck = cli(&[&["fsck"][..], &base].concat());
        assert!(fsck.status.success(), "{}", out(&fsck));
        let verify = cli(&[&["audit", "verify"][..], &base].concat());
        assert!(verify.status.success(), "{}", out(&verify));
        let trail = cli(&[&["audit", "export", "--format", "ndjson"][..], &base].concat());
        assert!(
            String::from_utf8_lossy(&trail.stdout).lines().any(|l| l.contains("\"backup-restored\"")),
            "no backup-restored entry"
        );
    }
    // A restored server starts with no live token: the one issued before is refused.
    let s = start(&targets[0].0, &[]);
    let r = http(
        s.addr,
        "GET",
        &format!("/fhir/Patient/{}", before[0]),
        &[("Authorization", &format!("Bearer {tok}"))],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 401, "{}", String::from_utf8_lossy(&r.body));
    drop(s);
    // A second restore into the same place is refused; nothing there changes.
    let o = run(&site.restore_args(&generation, &targets[0].0));
    assert!(!o.status.success() && out(&o).contains("not empty"), "{}", out(&o));
}

#[test]
fn a_tampered_generation_is_refused() {
    let site = Site::new();
    let server = start(&site.dir, &[]);
    let tok = token(server.addr, &site.dir, "writer");
    for i in 0..5 {
        post(server.addr, &tok, &patient(&format!("改ざん{i}"))).unwrap();
    }
    drop(server);
    let g = site.create();
    let repo = site.repo();
    let r = repo.to_str().unwrap();
    let verify = |extra: &[&str]| {
        let o =
            cli(&[
                &[
                    "backup",
                    "verify",
                    "--data-dir",
                    site.d(),
                    "--repo",
                    r,
                    "--identity",
                    site.identity.to_str().unwrap(),
                ][..],
                extra,
            ]
            .concat());
        (o.status.code(), out(&o))
    };
    assert_eq!(verify(&[]).0, Some(0), "{}", verify(&[]).1);
    let data = repo.join(format!("{g}.age"));
    let manifest = repo.join(format!("{g}.manifest"));
    let original = std::fs::read(&data).unwrap();

    // One byte changed.
    let mut bad = original.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x01;
    std::fs::write(&data, &bad).unwrap();
    let (code, text) = verify(&[]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("data file differs from the manifest"), "{text}");
    let o = run(&site.restore_args(&g, &site.tmp.path().join("r1")));
    assert!(!o.status.success(), "{}", out(&o));
    assert!(!site.tmp.path().join("r1").join("mamori.db").exists(), "a refused restore wrote a store");

    // The file removed.
    std::fs::remove_file(&data).unwrap();
    let (code, text) = verify(&[]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("is missing"), "{text}");
    std::fs::write(&data, &original).unwrap();
    assert_eq!(verify(&[]).0, Some(0));

    // The manifest re-signed with another key (its body, even unchanged).
    let note = std::fs::read_to_string(&manifest).unwrap();
    let body = note.split("\n\n").next().unwrap().to_string() + "\n";
    let other = mamori_audit::note::NoteSigner::new("mamori.local/audit/attacker", &[7u8; 32]).unwrap();
    std::fs::write(&manifest, other.sign(&body).unwrap()).unwrap();
    let (code, text) = verify(&[]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("signature does not verify"), "{text}");
    let o = run(&site.restore_args(&g, &site.tmp.path().join("r2")));
    assert!(!o.status.success() && out(&o).contains("signature"), "{}", out(&o));
    std::fs::write(&manifest, &note).unwrap();

    // A generation's files under another generation's name.
    let g2 = site.create();
    let renamed = repo.join("20000101T000000Z");
    std::fs::copy(repo.join(format!("{g2}.manifest")), renamed.with_extension("manifest")).unwrap();
    std::fs::copy(repo.join(format!("{g2}.age")), renamed.with_extension("age")).unwrap();
    let (code, text) = verify(&["--generation", "20000101T000000Z"]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("renamed"), "{text}");

    // Another node's generation is not this node's.
    let stranger = Site::new();
    let sg = stranger.create();
    let o = cli(&[
        "backup",
        "verify",
        "--data-dir",
        site.d(),
        "--repo",
        stranger.repo().to_str().unwrap(),
        "--generation",
        &sg,
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));

    // The wrong identity cannot decrypt; a bad --as-of and a missing generation are clear errors.
    let wrong = site.tmp.path().join("wrong.txt");
    ok(&["backup", "keygen", "--out", wrong.to_str().unwrap()]);
    let o = cli(&["backup", "verify", "--data-dir", site.d(), "--repo", r, "--identity", wrong.to_str().unwrap()]);
    let (code, text) = (o.status.code(), out(&o));
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("cannot decrypt"), "{text}");
    let mut args = site.restore_args(&g, &site.tmp.path().join("r3"));
    args.extend(["--as-of".into(), "yesterday".into()]);
    let o = run(&args);
    assert!(!o.status.success() && out(&o).contains("RFC 3339"), "{}", out(&o));
    let (code, text) = verify(&["--generation", "19990101T000000Z"]);
    assert_ne!(code, Some(0), "{text}");
    assert!(text.contains("no backup generation"), "{text}");

    // A create with a key that is not an age recipient: a clear error, nothing written, and the
    // failed attempt is in the audit trail.
    let before = std::fs::read_dir(&repo).unwrap().count();
    let o = cli(&["backup", "create", "--data-dir", site.d(), "--repo", r, "--recipient", "age1nope"]);
    assert!(!o.status.success() && out(&o).contains("is not an age recipient"), "{}", out(&o));
    assert_eq!(std::fs::read_dir(&repo).unwrap().count(), before, "a refused create wrote a file");
    let trail = ok(&["audit", "export", "--format", "ndjson", "--data-dir", site.d()]);
    assert!(
        trail.lines().any(|l| l.contains("\"backup-created\"") && l.contains("\"failure\"") && l.contains("age1nope")),
        "the failed create is not in the audit trail"
    );
}

#[test]
fn restore_as_of_gives_the_records_of_that_time_and_age_opens_a_generation() {
    let site = Site::new();
    let server = start(&site.dir, &[]);
    let tok = token(server.addr, &site.dir, "writer");
    let id = post(server.addr, &tok, &patient("過去")).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let then = time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let auth = format!("Bearer {tok}");
    let mut updated = patient("現在");
    updated["id"] = Value::from(id.clone());
    let r = http(
        server.addr,
        "PUT",
        &format!("/fhir/Patient/{id}"),
        &[("Authorization", &auth), ("Content-Type", "application/fhir+json")],
        updated.to_string().as_bytes(),
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let later = post(server.addr, &tok, &patient("後")).unwrap();
    drop(server);
    let g = site.create();

    let to = site.tmp.path().join("as-of");
    let mut args = site.restore_args(&g, &to);
    args.extend(["--as-of".into(), then]);
    let o = run(&args);
    let text = out(&o);
    assert!(o.status.success() && text.contains("restore proven"), "{text}");
    assert!(text.contains("later versions left out (--as-of)"), "{text}");
    let body = read_restored(&to, None, &format!("Patient/{id}")).unwrap();
    assert_eq!(body["name"][0]["family"], "過去", "{body}");
    assert_eq!(body["meta"]["versionId"], "1", "{body}");
    assert!(read_restored(&to, None, &format!("Patient/{later}")).is_none(), "a later record came back");
    // Search sees the records of that time too (the index is rebuilt from them).
    let s = start(&to, &[]);
    let tok2 = token(s.addr, &to, "reader");
    let r = http(s.addr, "GET", "/fhir/Patient?family=過去", &[("Authorization", &format!("Bearer {tok2}"))], b"");
    let r = r.unwrap();
    assert_eq!(r.json()["total"].as_u64().or(Some(r.json()["entry"].as_array().map_or(0, Vec::len) as u64)), Some(1));
    let r =
        http(s.addr, "GET", "/fhir/Patient?family=現在", &[("Authorization", &format!("Bearer {tok2}"))], b"").unwrap();
    assert!(r.json()["entry"].as_array().is_none_or(Vec::is_empty), "{}", String::from_utf8_lossy(&r.body));
    drop(s);

    // A store whose restore did not finish is a copy of nothing: no command opens it.
    crate::support::RawDb::at(&to)
        .exec_both("INSERT INTO store_flags (name, value) VALUES ('restore-incomplete', 'yes')")
        .unwrap();
    let o = cli(&["fsck", "--data-dir", to.to_str().unwrap()]);
    assert!(!o.status.success() && out(&o).contains("did not finish"), "{}", out(&o));

    // The age tool opens a generation with the offline identity: no Mamori needed to read it.
    ensure_age();
    let dec = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "age -d -i '{}' '{}' | zstd -d | head -c 16",
            site.identity.display(),
            site.repo().join(format!("{g}.age")).display()
        ))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&dec.stdout), "MAMORI-BACKUP/1\n", "{}", String::from_utf8_lossy(&dec.stderr));
}

/// Debian's `age` (and `zstd`), installed by the test when missing.
fn ensure_age() {
    let have = |c: &str| {
        Command::new("sh").arg("-c").arg(format!("command -v {c}")).output().is_ok_and(|o| o.status.success())
    };
    if have("age") && have("zstd") {
        return;
    }
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "age", "zstd"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .output()
            .expect("apt-get is needed to install age for the backup test")
    };
    if !install().status.success() {
        let _ = Command::new("apt-get").args(["update", "-qq"]).output();
        let o = install();
        assert!(o.status.success(), "installing age: {}", String::from_utf8_lossy(&o.stderr));
    }
}

#[test]
fn emergency_read_only_mode_serves_every_read_and_refuses_every_write() {
    let site = Site::new();
    let server = start(&site.dir, &[]);
    let tok = token(server.addr, &site.dir, "clinic");
    let auth = format!("Bearer {tok}");
    let h = [("Authorization", auth.as_str()), ("Content-Type", "application/fhir+json")];
    let id = post(server.addr, &tok, &patient("参照")).unwrap();
    let mut v2 = patient("参照二");
    v2["id"] = Value::from(id.clone());
    assert_eq!(
        http(server.addr, "PUT", &format!("/fhir/Patient/{id}"), &h, v2.to_string().as_bytes()).unwrap().status,
        200
    );

    let o = cli(&["emergency", "read-only", "on", "--reason", "ransomware suspected", "--data-dir", site.d()]);
    assert!(o.status.success(), "{}", out(&o));
    // Every node applies it within a second or so.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let refused = loop {
        let r = http(server.addr, "POST", "/fhir/Patient", &h, patient("新規").to_string().as_bytes()).unwrap();
        if r.status != 201 || std::time::Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert_eq!(refused.status, 503, "{}", String::from_utf8_lossy(&refused.body));
    let oo = refused.json();
    assert_eq!(oo["resourceType"], "OperationOutcome");
    assert!(oo["issue"][0]["diagnostics"].as_str().unwrap().contains("read-only"), "{oo}");
    // Every kind of write is refused; nothing stored changes.
    let mut v3 = patient("参照三");
    v3["id"] = Value::from(id.clone());
    let put = http(server.addr, "PUT", &format!("/fhir/Patient/{id}"), &h, v3.to_string().as_bytes()).unwrap();
    assert_eq!(put.status, 503);
    assert_eq!(http(server.addr, "DELETE", &format!("/fhir/Patient/{id}"), &h, b"").unwrap().status, 503);
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": patient("束"), "request": {"method": "POST", "url": "Patient"}}]});
    let t = http(server.addr, "POST", "/fhir", &h, bundle.to_string().as_bytes()).unwrap();
    assert_eq!(t.status, 503, "{}", String::from_utf8_lossy(&t.body));
    // Every read goes on: the record, each version, history, search.
    let r = http(server.addr, "GET", &format!("/fhir/Patient/{id}"), &h, b"").unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["meta"]["versionId"], "2");
    let r = http(server.addr, "GET", &format!("/fhir/Patient/{id}/_history/1"), &h, b"").unwrap();
    assert_eq!((r.status, r.json()["name"][0]["family"].clone()), (200, Value::from("参照")));
    let r = http(server.addr, "GET", &format!("/fhir/Patient/{id}/_history"), &h, b"").unwrap();
    assert_eq!(r.json()["entry"].as_array().unwrap().len(), 2);
    let r = http(server.addr, "GET", "/fhir/Patient?family=参照", &h, b"").unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(!r.json()["entry"].as_array().unwrap().is_empty());
    // The command line is refused too, and says why.
    let file = site.tmp.path().join("one.ndjson");
    std::fs::write(&file, format!("{}\n", patient("取込"))).unwrap();
    let o = cli(&["import", "--data-dir", site.d(), file.to_str().unwrap()]);
    assert!(out(&o).contains("read-only"), "{}", out(&o));
    let st = ok(&["emergency", "status", "--data-dir", site.d()]);
    assert!(st.contains("ON (ransomware suspected)"), "{st}");
    let trail = ok(&["audit", "export", "--format", "ndjson", "--data-dir", site.d()]);
    assert!(trail.lines().any(|l| l.contains("\"alert-emergency-mode\"") && l.contains("ON")), "no alert");
    assert!(
        trail.lines().any(|l| l.contains("\"create\"") && l.contains("\"failure\"") && l.contains("503")),
        "the refused create is not in the audit trail"
    );
    // Off again: writes are accepted.
    ok(&["emergency", "read-only", "off", "--reason", "incident closed", "--data-dir", site.d()]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while post(server.addr, &tok, &patient("再開")).is_none() {
        assert!(std::time::Instant::now() < deadline, "writes not accepted after read-only mode was switched off");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    drop(server);

    // `serve --read-only` pins a node read-only whatever is stored (a restored copy serving charts).
    let s = start(&site.dir, &["--read-only"]);
    let r = http(s.addr, "POST", "/fhir/Patient", &h, patient("固定").to_string().as_bytes()).unwrap();
    assert_eq!(r.status, 503);
    assert_eq!(http(s.addr, "GET", &format!("/fhir/Patient/{id}"), &h, b"").unwrap().status, 200);
}

/// Sets `[audit] witness_dir` in the data directory's mamori.toml (the default file has the
/// table with the line commented out; a PostgreSQL test's file may not have the table).
fn set_witness(dir: &Path, witness: &Path) {
    let toml = dir.join("mamori.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    let line = format!("witness_dir = \"{}\"", witness.display());
    let new = if text.contains("# witness_dir = \"/mnt/witness/mamori\"") {
        text.replace("# witness_dir = \"/mnt/witness/mamori\"", &line)
    } else {
        format!("{text}\n[audit]\n{line}\n")
    };
    std::fs::write(&toml, new).unwrap();
}

/// docs/RECOVERY.md, followed step by step: isolate, choose a clean generation, restore and
/// prove it against the witness, serve it read-only, return to service.
#[test]
fn the_ransomware_runbook_works_end_to_end() {
    let site = Site::new();
    let witness = site.tmp.path().join("witness");
    set_witness(&site.dir, &witness);
    let server = start(&site.dir, &[]);
    let tok = token(server.addr, &site.dir, "ward");
    let ids: Vec<String> = (0..10).map(|i| post(server.addr, &tok, &patient(&format!("病棟{i}"))).unwrap()).collect();
    // Checkpoints reach the witness at least every second.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !witness.join("checkpoints.log").exists() {
        assert!(std::time::Instant::now() < deadline, "no checkpoint reached the witness");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let clean = site.create();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    // The incident: writes that must not be trusted.
    let bad = post(server.addr, &tok, &patient("暗号化")).unwrap();

    // 1. Isolate: every token and session ends, writes stop on every node.
    let text = ok(&["emergency", "isolate", "--reason", "ransomware suspected", "--data-dir", site.d()]);
    assert!(text.contains("tokens revoked") && text.contains("switched ON"), "{text}");
    let r = http(
        server.addr,
        "GET",
        &format!("/fhir/Patient/{}", ids[0]),
        &[("Authorization", &format!("Bearer {tok}"))],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 401, "an old token still works");
    drop(server);

    // 2. Choose a clean generation: its signature, hashes and decryption verify.
    let listed = ok(&["backup", "list", "--data-dir", site.d(), "--repo", site.repo().to_str().unwrap()]);
    assert!(listed.contains(&clean), "{listed}");
    ok(&[
        "backup",
        "verify",
        "--data-dir",
        site.d(),
        "--repo",
        site.repo().to_str().unwrap(),
        "--generation",
        &clean,
        "--identity",
        site.identity.to_str().unwrap(),
    ]);
    // 3. Restore on (another) machine with the verifier key kept apart, and prove it against the witness.
    let vkey = ok(&["audit", "verifier-key", "--data-dir", site.d()]).trim().to_string();
    let to = site.tmp.path().join("recovered");
    let o = cli(&[
        "backup",
        "restore",
        "--verifier-key",
        &vkey,
        "--repo",
        site.repo().to_str().unwrap(),
        "--generation",
        &clean,
        "--identity",
        site.identity.to_str().unwrap(),
        "--to",
        to.to_str().unwrap(),
        "--witness-dir",
        witness.to_str().unwrap(),
    ]);
    let text = out(&o);
    assert!(o.status.success() && text.contains("restore proven"), "{text}");
    let agreed: u64 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("witness: "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(agreed >= 1, "no witness checkpoint was reproduced: {text}");
    // A witness that saw another log fails the restore.
    let other = Site::new();
    let other_witness = other.tmp.path().join("w");
    std::fs::create_dir_all(&other_witness).unwrap();
    std::fs::copy(witness.join("checkpoints.log"), other_witness.join("checkpoints.log")).unwrap();
    let mut log = std::fs::read_to_string(other_witness.join("checkpoints.log")).unwrap();
    log = log.replacen("\n\n", "\nX\n\n", 1);
    std::fs::write(other_witness.join("checkpoints.log"), log).unwrap();
    let o = cli(&[
        "backup",
        "restore",
        "--verifier-key",
        &vkey,
        "--repo",
        site.repo().to_str().unwrap(),
        "--generation",
        &clean,
        "--identity",
        site.identity.to_str().unwrap(),
        "--to",
        site.tmp.path().join("not-proven").to_str().unwrap(),
        "--witness-dir",
        other_witness.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    assert!(out(&o).contains("restore NOT proven"), "{}", out(&o));

    // 4. Serve the proven copy read-only: charts readable (with a new token), nothing written.
    let s = start(&to, &["--read-only"]);
    let tok2 = token(s.addr, &to, "ward-recovered");
    let auth2 = format!("Bearer {tok2}");
    for id in &ids {
        assert_eq!(
            http(s.addr, "GET", &format!("/fhir/Patient/{id}"), &[("Authorization", &auth2)], b"").unwrap().status,
            200
        );
    }
    assert_eq!(
        http(s.addr, "GET", &format!("/fhir/Patient/{bad}"), &[("Authorization", &auth2)], b"").unwrap().status,
        404,
        "a write made after the clean generation came back"
    );
    assert_eq!(
        http(
            s.addr,
            "POST",
            "/fhir/Patient",
            &[("Authorization", &auth2), ("Content-Type", "application/fhir+json")],
            patient("x").to_string().as_bytes()
        )
        .unwrap()
        .status,
        503
    );
    drop(s);
    // 5. Return to service: the copy serves writes again.
    let s = start(&to, &[]);
    assert!(post(s.addr, &tok2, &patient("復旧後")).is_some(), "the recovered system does not accept writes");
    let st = ok(&["emergency", "status", "--data-dir", to.to_str().unwrap()]);
    assert!(st.contains("off"), "{st}");
}

/// Writes `[backup]` settings into the data directory's mamori.toml.
pub(crate) fn set_backup(dir: &Path, lines: &str) {
    let toml = dir.join("mamori.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    let new = if text.contains("# repository = \"/var/backups/mamori\"") {
        text.replace("# repository = \"/var/backups/mamori\"", lines)
    } else {
        format!("{text}\n[backup]\n{lines}\n")
    };
    std::fs::write(&toml, new).unwrap();
}

fn trail(d: &str) -> Vec<Value> {
    ok(&["audit", "export", "--format", "ndjson", "--data-dir", d])
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[test]
fn the_server_takes_generations_on_schedule_and_drills_and_pruning_are_recorded() {
    let site = Site::new();
    let repo = site.repo();
    set_backup(
        &site.dir,
        &format!(
            "repository = \"{}\"\nrecipients = [\"{}\"]\nevery_hours = 24\ndrill_days = 30",
            repo.display(),
            site.recipient
        ),
    );
    let server = start(&site.dir, &[]);
    let tok = token(server.addr, &site.dir, "ward");
    post(server.addr, &tok, &patient("予定")).unwrap();
    // The first scheduled generation is taken soon after start (none existed), and with none
    // drilled yet, the overdue drill is alerted.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let (created, overdue) = loop {
        let t = trail(site.d());
        let created = t.iter().any(|e| e["action"] == "backup-created" && e["actor"]["id"] == "mamori-serve");
        let overdue = t.iter().any(|e| e["action"] == "alert-backup-drill-overdue");
        if (created && overdue) || std::time::Instant::now() > deadline {
            break (created, overdue);
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
    };
    assert!(created, "no scheduled generation");
    assert!(overdue, "no overdue-drill alert");
    drop(server);
    assert_eq!(
        std::fs::read_dir(&repo)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "manifest"))
            .count(),
        1
    );

    // A drill, where the identity is: restored into scratch, proven, measured, recorded and signed.
    let d = ok(&["backup", "drill", "--data-dir", site.d(), "--identity", site.identity.to_str().unwrap()]);
    assert!(d.contains("proven") && d.contains("RTO") && d.contains("RPO"), "{d}");
    assert!(
        !site.dir.read_dir().unwrap().any(|e| e.unwrap().file_name().to_string_lossy().starts_with("drill-")),
        "scratch left"
    );
    let st = ok(&["backup", "drill-status", "--data-dir", site.d()]);
    assert!(st.contains("proven"), "{st}");
    assert!(trail(site.d()).iter().any(|e| e["action"] == "backup-drill"), "no backup-drill entry");
    {
        let node = mamori::open_node(&site.dir).unwrap();
        let last = mamori_app::backup::last_drill(&node).unwrap().unwrap();
        let verifier = mamori_audit::note::NoteVerifier::parse(&node.signer.verifier_key()).unwrap();
        let body = verifier.verify(&last.signed).unwrap();
        assert!(body.starts_with(mamori_app::backup::DRILL_HEADER) && body.contains(&last.generation), "{body}");
    }

    // Seven generations more: pruning keeps the newest five of the day (and no fewer than five).
    let mut names = Vec::new();
    for _ in 0..7 {
        names.push(site.create());
    }
    let dry = ok(&["backup", "prune", "--data-dir", site.d(), "--dry-run"]);
    assert!(dry.contains("would remove 3"), "{dry}");
    let count = || {
        std::fs::read_dir(&repo)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "manifest"))
            .count()
    };
    assert_eq!(count(), 8, "a dry run removed something");
    // A generation whose files cannot be deleted (made immutable) is reported, not lost.
    let oldest = std::fs::read_dir(&repo)
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().to_str().and_then(|n| n.strip_suffix(".manifest")).map(str::to_string))
        .min()
        .unwrap();
    let locked = repo.join(format!("{oldest}.manifest"));
    let immutable = Command::new("chattr").arg("+i").arg(&locked).status().is_ok_and(|s| s.success());
    let o = cli(&["backup", "prune", "--data-dir", site.d()]);
    let text = out(&o);
    if immutable {
        assert_eq!(o.status.code(), Some(1), "{text}");
        assert!(text.contains(&format!("COULD NOT REMOVE {oldest}")), "{text}");
        assert!(locked.exists());
        let _ = Command::new("chattr").arg("-i").arg(&locked).status();
        assert_eq!(count(), 6);
    } else {
        eprintln!("chattr +i is not available here: the immutable-file case was not exercised");
        assert!(o.status.success(), "{text}");
        assert_eq!(count(), 5);
    }
    let pruned: Vec<Value> = trail(site.d()).into_iter().filter(|e| e["action"] == "backup-pruned").collect();
    assert_eq!(pruned.len(), 1, "{pruned:?}");
    for n in names.iter().rev().take(5) {
        assert!(repo.join(format!("{n}.manifest")).exists(), "{n} was pruned");
    }

    // A drill of a damaged generation fails, and says so in an alert.
    let newest = names.last().unwrap();
    let data = repo.join(format!("{newest}.age"));
    let mut bytes = std::fs::read(&data).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&data, bytes).unwrap();
    let o = cli(&["backup", "drill", "--data-dir", site.d(), "--identity", site.identity.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    assert!(out(&o).contains("FAILED"), "{}", out(&o));
    assert!(trail(site.d()).iter().any(|e| e["action"] == "alert-backup-drill-failed"), "no failed-drill alert");
}

/// `mamori backup vault serve` on a free loopback port (TLS when a certificate is given).
fn start_vault(dir: &Path, tls: Option<(&Path, &Path)>) -> crate::binary::Server {
    use std::io::BufRead;
    let mut cmd = Command::new(crate::binary::BIN);
    cmd.args(["backup", "vault", "serve", "--listen", "127.0.0.1:0", "--dir"]).arg(dir);
    if let Some((c, k)) = tls {
        cmd.arg("--tls-cert").arg(c).arg("--tls-key").arg(k);
    }
    let mut child = cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::null()).spawn().unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    // "mamori vault serving https://127.0.0.1:PORT/v1/generations (dir: …)"
    let url = line.split_whitespace().nth(3).unwrap_or_else(|| panic!("unexpected start-up line {line:?}"));
    let addr = url.split("://").nth(1).unwrap().split('/').next().unwrap().parse().unwrap();
    crate::binary::Server { child, addr }
}

fn vault_files(v: &Path) -> Vec<String> {
    let mut n: Vec<String> = std::fs::read_dir(v)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n != "vault.toml")
        .collect();
    n.sort();
    n
}

#[test]
fn the_vault_takes_every_generation_and_refuses_to_overwrite_or_delete_any() {
    use crate::binary::http;
    use std::os::unix::fs::PermissionsExt;
    let site = Site::new();
    let vault = site.tmp.path().join("vault");
    let key = ok(&["audit", "verifier-key", "--data-dir", site.d()]).trim().to_string();
    // Bad input is refused and makes no vault.
    let o = cli(&["backup", "vault", "init", "--dir", vault.to_str().unwrap(), "--node-key", "not-a-key"]);
    assert!(!o.status.success() && !vault.join("vault.toml").exists(), "{}", out(&o));
    let token =
        ok(&["backup", "vault", "init", "--dir", vault.to_str().unwrap(), "--node-key", &key, "--lock-days", "30"])
            .trim()
            .to_string();
    assert!(token.starts_with("mamori-vault-"), "{token}");
    assert!(!std::fs::read_to_string(vault.join("vault.toml")).unwrap().contains(&token), "the token is stored");
    let o = cli(&["backup", "vault", "init", "--dir", vault.to_str().unwrap(), "--node-key", &key]);
    assert!(!o.status.success(), "a vault was made twice: {}", out(&o));

    // The node pushes over TLS, trusting only the vault's CA.
    let kp = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap().self_signed(&kp).unwrap();
    let (c, k, token_file) =
        (site.tmp.path().join("v-cert.pem"), site.tmp.path().join("v-key.pem"), site.tmp.path().join("v-token"));
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, kp.serialize_pem()).unwrap();
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let tls_vault = start_vault(&vault, Some((&c, &k)));
    set_backup(
        &site.dir,
        &format!(
            "repository = \"{}\"\nrecipients = [\"{}\"]\nvault = \"https://localhost:{}\"\nvault_token_file = \"{}\"\nvault_ca = \"{}\"",
            site.repo().display(),
            site.recipient,
            tls_vault.addr.port(),
            token_file.display(),
            c.display()
        ),
    );
    let o = cli(&["backup", "create", "--data-dir", site.d()]);
    let text = out(&o);
    assert!(o.status.success(), "{text}");
    assert!(text.contains("sent to the vault"), "{text}");
    let g1 = text.split_whitespace().nth(1).unwrap().trim_end_matches(':').to_string();
    assert_eq!(vault_files(&vault), vec![format!("{g1}.age"), format!("{g1}.manifest")]);
    // Byte for byte what the repository holds, read-only, and immutable where the vault may.
    let root = std::process::Command::new("id").arg("-u").output().unwrap().stdout == b"0\n";
    for f in [format!("{g1}.age"), format!("{g1}.manifest")] {
        assert_eq!(std::fs::read(vault.join(&f)).unwrap(), std::fs::read(site.repo().join(&f)).unwrap());
        assert_eq!(std::fs::metadata(vault.join(&f)).unwrap().permissions().mode() & 0o777, 0o444, "{f}");
        if root && mamori_app::vault::is_immutable(&vault.join(&f)) {
            assert!(std::fs::remove_file(vault.join(&f)).is_err(), "an immutable file was removed");
            assert!(std::fs::write(vault.join(&f), b"x").is_err(), "an immutable file was overwritten");
        } else {
            assert!(!root, "running as root, the vault did not make {f} immutable");
        }
    }
    let list = ok(&["backup", "vault", "list", "--dir", vault.to_str().unwrap()]);
    assert!(list.contains(&g1) && list.contains("complete"), "{list}");
    assert!(trail(site.d()).iter().any(|e| e["action"] == "backup-vaulted"), "the push is not in the audit trail");
    // The vault's copy is a repository: it verifies and decrypts as it is.
    let v = ok(&[
        "backup",
        "verify",
        "--data-dir",
        site.d(),
        "--repo",
        vault.to_str().unwrap(),
        "--identity",
        site.identity.to_str().unwrap(),
    ]);
    assert!(v.contains(&g1), "{v}");

    // An attacker holding the node and its token: nothing stored can be replaced or removed.
    let plain = start_vault(&vault, None);
    let auth = format!("Bearer {token}");
    let h = [("Authorization", auth.as_str())];
    let path = |f: &str| format!("/v1/generations/{f}");
    let manifest1 = std::fs::read(site.repo().join(format!("{g1}.manifest"))).unwrap();
    assert_eq!(http(plain.addr, "DELETE", &path(&format!("{g1}.age")), &h, b"").unwrap().status, 405);
    assert_eq!(http(plain.addr, "DELETE", &path(&format!("{g1}.manifest")), &h, b"").unwrap().status, 405);
    assert_eq!(http(plain.addr, "POST", &path(&format!("{g1}.age")), &h, b"x").unwrap().status, 405);
    let r = http(plain.addr, "PUT", &path(&format!("{g1}.age")), &h, b"ransom").unwrap();
    assert_eq!(r.status, 409, "{}", String::from_utf8_lossy(&r.body));
    // The same manifest again is "already stored"; a different one is refused.
    assert_eq!(http(plain.addr, "PUT", &path(&format!("{g1}.manifest")), &h, &manifest1).unwrap().status, 200);
    let mut other = manifest1.clone();
    other.extend_from_slice(b"\n");
    assert_ne!(http(plain.addr, "PUT", &path(&format!("{g1}.manifest")), &h, &other).unwrap().status / 100, 2);
    assert_eq!(http(plain.addr, "PUT", "/v1/generations/../vault.toml", &h, b"x").unwrap().status / 100, 4);
    assert_eq!(http(plain.addr, "PUT", &path("vault.toml"), &h, b"x").unwrap().status, 404);
    // No token, a wrong token: 401, for reading the list too.
    assert_eq!(http(plain.addr, "GET", "/v1/generations", &[], b"").unwrap().status, 401);
    let wrong = [("Authorization", "Bearer mamori-vault-guess")];
    assert_eq!(http(plain.addr, "GET", "/v1/generations", &wrong, b"").unwrap().status, 401);
    assert_eq!(http(plain.addr, "PUT", &path("20991231T000000Z-0.manifest"), &wrong, &manifest1).unwrap().status, 401);
    // Data before its manifest; a manifest under another generation's name; another node's manifest.
    assert_eq!(http(plain.addr, "PUT", &path("20991231T000000Z-0.age"), &h, b"x").unwrap().status, 409);
    assert_eq!(http(plain.addr, "PUT", &path("20991231T000000Z-0.manifest"), &h, &manifest1).unwrap().status, 400);
    let stranger = Site::new();
    let sg = stranger.create();
    let sm = std::fs::read(stranger.repo().join(format!("{sg}.manifest"))).unwrap();
    let r = http(plain.addr, "PUT", &path(&format!("{sg}.manifest")), &h, &sm).unwrap();
    assert_eq!(r.status, 400, "another node's generation was taken: {}", String::from_utf8_lossy(&r.body));
    assert_eq!(vault_files(&vault), vec![format!("{g1}.age"), format!("{g1}.manifest")]);

    // A second generation whose data is damaged on the way: refused, nothing stored; then sent whole.
    std::fs::write(
        site.dir.join("mamori.toml"),
        std::fs::read_to_string(site.dir.join("mamori.toml")).unwrap().replace(
            &format!("vault = \"https://localhost:{}\"", tls_vault.addr.port()),
            "vault = \"https://localhost:9\"",
        ),
    )
    .unwrap();
    let o = cli(&["backup", "create", "--data-dir", site.d()]);
    let text = out(&o);
    assert_eq!(o.status.code(), Some(1), "an unreachable vault was not reported: {text}");
    assert!(text.contains("NOT in the vault"), "{text}");
    assert!(trail(site.d()).iter().any(|e| e["action"] == "alert-backup-vault-failed"), "no alert");
    let g2 = text.split_whitespace().nth(1).unwrap().trim_end_matches(':').to_string();
    let m2 = std::fs::read(site.repo().join(format!("{g2}.manifest"))).unwrap();
    let mut d2 = std::fs::read(site.repo().join(format!("{g2}.age"))).unwrap();
    assert_eq!(http(plain.addr, "PUT", &path(&format!("{g2}.manifest")), &h, &m2).unwrap().status, 201);
    let mid = d2.len() / 2;
    d2[mid] ^= 1;
    let r = http(plain.addr, "PUT", &path(&format!("{g2}.age")), &h, &d2).unwrap();
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    assert!(!vault.join(format!("{g2}.age")).exists(), "damaged data was stored");
    assert!(!vault_files(&vault).iter().any(|f| f.starts_with(".incoming")), "a scratch file was left");
    std::fs::write(
        site.dir.join("mamori.toml"),
        std::fs::read_to_string(site.dir.join("mamori.toml"))
            .unwrap()
            .replace("vault = \"https://localhost:9\"", &format!("vault = \"http://127.0.0.1:{}\"", plain.addr.port())),
    )
    .unwrap();
    let p = ok(&["backup", "push", "--data-dir", site.d(), "--all"]);
    assert!(p.contains(&format!("{g1}: already in the vault")) && p.contains(&format!("{g2}: sent {g2}.age")), "{p}");
    assert!(vault.join(format!("{g2}.age")).exists());

    // Removal is local, by the vault's operator, and never inside the retention lock.
    let o = cli(&["backup", "vault", "prune", "--dir", vault.to_str().unwrap(), "--older-than-days", "1"]);
    assert!(!o.status.success() && out(&o).contains("retention lock is 30 days"), "{}", out(&o));
    let p = ok(&["backup", "vault", "prune", "--dir", vault.to_str().unwrap(), "--older-than-days", "30"]);
    assert!(!p.contains("removed"), "{p}");
    assert_eq!(vault_files(&vault).len(), 4);
    // A rotated token: the old one stops at once.
    let new = ok(&["backup", "vault", "rotate-token", "--dir", vault.to_str().unwrap()]).trim().to_string();
    assert_eq!(http(plain.addr, "GET", "/v1/generations", &h, b"").unwrap().status, 401);
    let nh = format!("Bearer {new}");
    assert_eq!(http(plain.addr, "GET", "/v1/generations", &[("Authorization", nh.as_str())], b"").unwrap().status, 200);
    // Clean up the immutable files so the temporary directory can go.
    for f in vault_files(&vault) {
        let _ = Command::new("chattr").arg("-i").arg(vault.join(f)).status();
    }
}
