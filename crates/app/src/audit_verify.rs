//! The audit trail's verifier (`mamori audit verify`, and the console's "verify now" through
//! [`crate::audit_trail::verify_now`]). It shares only the pure audit module with the writer: it
//! opens the database read-only with its own queries, recomputes every leaf and root, checks
//! every checkpoint's signature and root, the stored tiles, the append-only triggers, and that
//! time never goes backwards; it compares the witnesses' copies of the checkpoints.

use std::path::Path;

use mamori_audit::merkle::{CompactRange, leaf_hash};
use mamori_audit::note::{Checkpoint, NoteVerifier};
use rusqlite::{Connection, OpenFlags};

/// What the verifier found.
#[derive(Debug, Default)]
pub struct Report {
    /// Entries read.
    pub entries: u64,
    /// Checkpoints verified.
    pub checkpoints: u64,
    /// Root of all entries.
    pub root: [u8; 32],
    /// Problems, first one first. Empty means the log verifies.
    pub problems: Vec<String>,
    /// Witness checkpoints whose root the entries reproduce (a restored copy, #27).
    pub witness_agreed: u64,
    /// Witness checkpoints beyond the stored entries (a restored copy is older than they are).
    pub witness_later: u64,
}

/// What the verifier returns when it cannot read at all (the store or a witness).
pub type Fallible<T> = Result<T, Box<dyn std::error::Error + Send + Sync + 'static>>;

/// For `map_err`: says what was being done, before the cause.
fn context<E: std::fmt::Display>(what: &'static str) -> impl FnOnce(E) -> Box<dyn std::error::Error + Send + Sync> {
    move |e| format!("{what}: {e}").into()
}

fn hashes(blob: &[u8]) -> Vec<[u8; 32]> {
    blob.chunks_exact(32).filter_map(|c| c.try_into().ok()).collect()
}

/// What the verifier reads, with its own queries on either store: it shares no code with the
/// writer beyond the pure audit module.
trait Source {
    /// `(size, note)` of every stored checkpoint, by size.
    fn checkpoints(&mut self) -> Fallible<Vec<(i64, String)>>;
    /// The stored level-0 tile `idx`, if any.
    fn tile0(&mut self, idx: i64) -> Fallible<Option<Vec<u8>>>;
    /// Up to `limit` entries `(idx, time, entry)` after `after`, by index.
    fn entries(&mut self, after: i64, limit: i64) -> Fallible<Vec<(i64, i64, Vec<u8>)>>;
    /// The names of the triggers on the audit entries table (the append-only guard).
    fn audit_triggers(&mut self) -> Fallible<Vec<String>>;
}

/// The triggers that keep `audit_entries` append-only, per backend (`store-sqlite` `SCHEMA`,
/// `store-postgres` `MIGRATIONS`). Missing ones mean someone could have removed entries.
const SQLITE_AUDIT_TRIGGERS: [&str; 2] = ["audit_no_update", "audit_no_delete"];
const PG_AUDIT_TRIGGERS: [&str; 2] = ["audit_no_change", "audit_no_truncate"];

struct SqliteSource(Connection);

impl SqliteSource {
    /// The embedded store in `dir`, read-only: `mamori.db` with the trail's own file `audit.db`
    /// attached when there is one (schema step 9; before it the trail is in `mamori.db`, where
    /// the unqualified names below then find it).
    fn open(dir: &Path) -> Fallible<SqliteSource> {
        let c = Connection::open_with_flags(dir.join("mamori.db"), OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(context("cannot open the store read-only"))?;
        let audit = dir.join("audit.db");
        let attach = if audit.exists() { audit.to_str() } else { None };
        c.execute("ATTACH DATABASE ?1 AS audit", [attach.unwrap_or(":memory:")])
            .map_err(context("cannot open the audit trail's file (audit.db) read-only"))?;
        Ok(SqliteSource(c))
    }
}

impl Source for SqliteSource {
    fn audit_triggers(&mut self) -> Fallible<Vec<String>> {
        let mut st = self.0.prepare(
            "SELECT name FROM main.sqlite_master WHERE type = 'trigger' AND tbl_name = 'audit_entries'
             UNION ALL SELECT name FROM audit.sqlite_master WHERE type = 'trigger' AND tbl_name = 'audit_entries'",
        )?;
        let rows = st.query_map([], |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    fn checkpoints(&mut self) -> Fallible<Vec<(i64, String)>> {
        let mut st = self.0.prepare("SELECT size, note FROM audit_checkpoints ORDER BY size")?;
        let rows = st.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn tile0(&mut self, idx: i64) -> Fallible<Option<Vec<u8>>> {
        use rusqlite::OptionalExtension;
        self.0
            .query_row("SELECT hashes FROM audit_tiles WHERE level = 0 AND idx = ?1", [idx], |r| r.get(0))
            .optional()
            .map_err(Into::into)
    }

    fn entries(&mut self, after: i64, limit: i64) -> Fallible<Vec<(i64, i64, Vec<u8>)>> {
        let mut st =
            self.0.prepare("SELECT idx, time, entry FROM audit_entries WHERE idx > ?1 ORDER BY idx LIMIT ?2")?;
        let mut rows = st.query([after, limit])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            // Read whatever is stored: an edited entry may no longer even be a BLOB.
            let entry: Vec<u8> = match r.get_ref(2)? {
                rusqlite::types::ValueRef::Blob(b) | rusqlite::types::ValueRef::Text(b) => b.to_vec(),
                _ => Vec::new(),
            };
            out.push((r.get(0)?, r.get(1)?, entry));
        }
        Ok(out)
    }
}

/// PostgreSQL, read in one `REPEATABLE READ READ ONLY` transaction (one consistent snapshot).
struct PgSource {
    rt: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
}

impl PgSource {
    fn open(url: &str) -> Fallible<PgSource> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let target = mamori_store_postgres::Target::parse(url)?;
        let client = rt.block_on(async {
            let (client, driver) = target.connect().await?;
            tokio::spawn(driver);
            client.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await?;
            Ok::<_, tokio_postgres::Error>(client)
        });
        let client = client.map_err(context("cannot open the database read-only"))?;
        Ok(PgSource { rt, client })
    }

    fn rows(&self, sql: &str, p: &[&(dyn tokio_postgres::types::ToSql + Sync)]) -> Fallible<Vec<tokio_postgres::Row>> {
        Ok(self.rt.block_on(self.client.query(sql, p))?)
    }
}

impl Source for PgSource {
    fn audit_triggers(&mut self) -> Fallible<Vec<String>> {
        let rows = self.rows(
            "SELECT t.tgname::text FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid \
             WHERE c.relname = 'audit_entries' AND NOT t.tgisinternal AND t.tgenabled <> 'D'",
            &[],
        )?;
        Ok(rows.iter().map(|r| r.try_get::<_, String>(0)).collect::<Result<_, _>>()?)
    }

    fn checkpoints(&mut self) -> Fallible<Vec<(i64, String)>> {
        let rows = self.rows("SELECT size, note FROM audit_checkpoints ORDER BY size", &[])?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
    }

    fn tile0(&mut self, idx: i64) -> Fallible<Option<Vec<u8>>> {
        let rows = self.rows("SELECT hashes FROM audit_tiles WHERE level = 0 AND idx = $1", &[&idx])?;
        Ok(rows.first().map(|r| r.try_get(0)).transpose()?)
    }

    fn entries(&mut self, after: i64, limit: i64) -> Fallible<Vec<(i64, i64, Vec<u8>)>> {
        let rows = self.rows(
            "SELECT idx, time, entry FROM audit_entries WHERE idx > $1 ORDER BY idx LIMIT $2",
            &[&after, &limit],
        )?;
        rows.iter()
            .map(|r| {
                let e = |e: tokio_postgres::Error| e.to_string();
                Ok((r.try_get(0).map_err(e)?, r.try_get(1).map_err(e)?, r.try_get(2).map_err(e)?))
            })
            .collect()
    }
}

/// The checkpoints kept outside the store — a witness directory's log and the node's local
/// witness — verified; a note that does not verify is a problem.
fn witness_checkpoints(
    dir: &Path,
    witness_dir: Option<&Path>,
    verifier: &NoteVerifier,
    report: &mut Report,
) -> Fallible<Vec<Checkpoint>> {
    let mut notes = Vec::new();
    if let Some(w) = witness_dir {
        let text = std::fs::read_to_string(w.join("checkpoints.log")).map_err(context("witness"))?;
        notes.extend(witness_notes(&text));
    }
    // The latest checkpoint the server kept outside the database (issue #22): a store whose
    // newest entries were cut off no longer reaches it. Witnesses are read before the store (the
    // server writes the store first), so a checkpoint signed meanwhile is never ahead of it.
    match std::fs::read_to_string(dir.join(crate::node::LOCAL_WITNESS)) {
        Ok(text) => notes.push(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => report.problems.push(format!("the local witness checkpoint cannot be read: {e}")),
    }
    let mut witness = Vec::new();
    for n in notes {
        match verifier.verify(&n).and_then(Checkpoint::parse) {
            Ok(cp) => witness.push(cp),
            Err(e) => report.problems.push(format!("a witness checkpoint does not verify: {e}")),
        }
    }
    Ok(witness)
}

/// The append-only triggers of the audit trail that are missing or disabled, each described.
fn trigger_problems(db: &mut dyn Source, postgres: bool) -> Fallible<Vec<String>> {
    let present = db.audit_triggers()?;
    let expected: &[&str] = if postgres { &PG_AUDIT_TRIGGERS } else { &SQLITE_AUDIT_TRIGGERS };
    Ok(expected
        .iter()
        .filter(|t| !present.iter().any(|p| p == *t))
        .map(|t| {
            format!(
                "the append-only trigger `{t}` on the audit trail is missing or disabled: entries may have been removed"
            )
        })
        .collect())
}

/// Verifies the audit log of data directory `dir` (on `database` when given, else the store its
/// configuration names) against `verifier_key`. Problems found are in the report; an error means
/// the store or a witness could not be read at all.
pub fn verify(
    dir: &Path,
    database: Option<&str>,
    verifier_key: &str,
    witness_dir: Option<&Path>,
    progress: &mut dyn FnMut(u64),
) -> Fallible<Report> {
    verify_log(dir, database, verifier_key, witness_dir, None, progress)
}

/// [`verify`] for a copy restored from a backup (#27): the copy may be older than what the
/// witnesses saw. Every witness checkpoint up to `copied` entries (what the backup held; entries
/// after it are the restore's own) must be reproduced by the entries (its root recomputed at its
/// size); later ones are counted, not failed.
pub fn verify_copy(
    dir: &Path,
    database: Option<&str>,
    verifier_key: &str,
    witness_dir: Option<&Path>,
    copied: u64,
    progress: &mut dyn FnMut(u64),
) -> Fallible<Report> {
    verify_log(dir, database, verifier_key, witness_dir, Some(copied), progress)
}

fn verify_log(
    dir: &Path,
    database: Option<&str>,
    verifier_key: &str,
    witness_dir: Option<&Path>,
    copied: Option<u64>,
    progress: &mut dyn FnMut(u64),
) -> Fallible<Report> {
    let older_copy = copied.is_some();
    let copied = copied.unwrap_or(u64::MAX);
    let verifier = NoteVerifier::parse(verifier_key)?;
    let configured = crate::config::load(&dir.join("mamori.toml")).ok().and_then(|c| c.database);
    let url = database.or(configured.as_deref());
    let mut db: Box<dyn Source> = match url {
        Some(url) => Box::new(PgSource::open(url)?),
        None => Box::new(SqliteSource::open(dir)?),
    };

    // Checkpoints, by size, each with its signature checked.
    let mut cps: Vec<(u64, Checkpoint, String)> = Vec::new();
    let mut report = Report::default();
    let witness = witness_checkpoints(dir, witness_dir, &verifier, &mut report)?;
    // The append-only guard must still be there (reported after the entries, so the first
    // problem still names the first bad entry).
    let trigger_problems = trigger_problems(&mut *db, url.is_some())?;
    for (size, note) in db.checkpoints()? {
        match verifier.verify(&note).and_then(Checkpoint::parse) {
            Ok(cp) if i64::try_from(cp.size).ok() == Some(size) => cps.push((cp.size, cp, note)),
            Ok(cp) => report.problems.push(format!("checkpoint row {size} carries size {}", cp.size)),
            Err(e) => report.problems.push(format!("checkpoint at size {size}: {e}")),
        }
    }
    // Level-0 tiles as written at integration, to name the first altered entry.
    let mut tile: (u64, Vec<[u8; 32]>) = (u64::MAX, Vec::new());

    let mut range = CompactRange::default();
    let mut next_cp = 0usize;
    let mut last_time = i64::MIN;
    let mut after = 0i64;
    'pages: loop {
        let page = db.entries(after, 10_000)?;
        if page.is_empty() {
            break;
        }
        for (idx, time, entry) in page {
            after = idx;
            let leaf_index = range.size();
            if u64::try_from(idx - 1).ok() != Some(leaf_index) {
                report.problems.push(format!("entry {leaf_index} is missing (next stored is {})", idx - 1));
                break 'pages;
            }
            if time < last_time {
                report.problems.push(format!("entry {leaf_index}: time goes backwards"));
            }
            last_time = time;
            let lh = leaf_hash(&entry);
            let tile_index = leaf_index / 256;
            if tile.0 != tile_index {
                let blob = db.tile0(i64::try_from(tile_index).unwrap_or(i64::MAX)).ok().flatten();
                tile = (tile_index, blob.map(|b| hashes(&b)).unwrap_or_default());
            }
            if let Some(stored) = tile.1.get(usize::try_from(leaf_index % 256).unwrap_or(usize::MAX))
                && *stored != lh
            {
                report.problems.push(format!(
                    "entry {leaf_index} does not match the hash integrated into the tree: it was altered"
                ));
            }
            if serde_json::from_slice::<mamori_audit::AuditRecord>(&entry).is_err() {
                report.problems.push(format!("entry {leaf_index} is not a valid audit record"));
            }
            range.push(lh);
            if older_copy {
                for w in witness.iter().filter(|w| w.size == range.size() && w.size <= copied) {
                    if w.root == range.root() {
                        report.witness_agreed += 1;
                    } else {
                        report.problems.push(format!(
                            "the witness's checkpoint at size {} differs from these entries: this copy is not the log the witness saw",
                            w.size
                        ));
                    }
                }
            }
            while let Some((size, cp, _)) = cps.get(next_cp) {
                if *size != range.size() {
                    break;
                }
                if range.root() != cp.root {
                    report.problems.push(format!(
                        "checkpoint at size {size} does not match the entries: an entry at or before {} was altered",
                        size - 1
                    ));
                }
                report.checkpoints += 1;
                next_cp += 1;
            }
            if report.problems.len() > 20 {
                break 'pages;
            }
        }
        progress(range.size());
    }
    report.entries = range.size();
    report.root = range.root();
    for (size, _, _) in cps.get(next_cp..).unwrap_or_default() {
        report.problems.push(format!(
            "checkpoint at size {size} covers entries that are missing (only {} stored)",
            report.entries
        ));
    }
    // A witness's copy must agree with what we recomputed for that size.
    for w in witness.iter().filter(|_| !older_copy) {
        match cps.iter().find(|(s, _, _)| *s == w.size) {
            Some((_, cp, _)) if cp.root == w.root => {}
            Some(_) => {
                report.problems.push(format!("the witness's checkpoint at size {} differs from the stored one", w.size))
            }
            None if w.size > report.entries => report.problems.push(format!(
                "the witness saw size {} but only {} entries are stored: entries were removed",
                w.size, report.entries
            )),
            None => report.problems.push(format!("the witness's checkpoint at size {} is no longer stored", w.size)),
        }
    }
    if older_copy {
        report.witness_later = witness.iter().filter(|w| w.size > report.entries.min(copied)).count() as u64;
    }
    report.problems.extend(trigger_problems);
    Ok(report)
}

/// Splits a witness log (notes separated by blank lines after their signature lines).
fn witness_notes(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_sigs = false;
    for line in text.split_inclusive('\n') {
        if line == "\n" {
            if in_sigs {
                out.push(std::mem::take(&mut cur));
                in_sigs = false;
                continue;
            }
            in_sigs = true;
        }
        cur.push_str(line);
    }
    if !cur.trim().is_empty() {
        out.push(cur);
    }
    out
}
