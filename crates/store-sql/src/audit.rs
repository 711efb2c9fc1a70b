//! [`mamori_audit::AuditLog`]: entries in `audit_entries`, C2SP tiles in `audit_tiles`, signed
//! checkpoints in `audit_checkpoints` — one sequencer and one integrator for every database.
//!
//! The sequencer: an entry is inserted only inside a write transaction (serialised with every
//! other write, on every node), with leaf index `MAX(idx) + 1` and a time at least one
//! microsecond after the previous entry's. Indexes are therefore gap-free, in commit order, and
//! the committed entries are always a prefix of the log, whichever process wrote them. Group
//! commit: each process's audit writer thread takes every queued append into one transaction.
//!
//! Integration is [`mamori_audit::integrate`]: steps computed on a read snapshot, stored with the
//! writer only if no one integrated meanwhile.

use mamori_audit::integrate::{self, Step, TreeRead, TreeStore};
use mamori_audit::merkle;
use mamori_audit::note::NoteSigner;
use mamori_audit::{AuditLog, AuditRecord, EntryQuery, Error as AuditError, Hash, StoredEntry};
use mamori_records::Timestamp;

use crate::{Conn, Db, Error, SqlStore, vals};

impl From<Error> for AuditError {
    fn from(e: Error) -> Self {
        let msg = e.to_string();
        tracing::error!(error = %msg, "audit store failure");
        AuditError::Source(msg)
    }
}

fn ae(e: impl std::fmt::Display) -> AuditError {
    AuditError::Source(e.to_string())
}

/// One append waiting for a store's audit writer thread.
pub type Job = (Vec<AuditRecord>, mamori_audit::AppendDone);

/// At most this many distinct (action, outcome) pairs are counted; further ones count as
/// `other`, so a metric's labels stay bounded whatever is appended.
const MAX_COUNTED: usize = 256;

/// What this process appended to the audit trail (for `/metrics`): appends waiting for the
/// writer, and durable entries by action and outcome. Sign-in failures, lockouts (`alert-lock`),
/// tokens issued and break-glass grants are all audited, so counting at the one audit append
/// counts every one of them, whichever caller raised it.
#[derive(Default)]
pub struct AuditCounters {
    queued: std::sync::atomic::AtomicU64,
    by_action: std::sync::Mutex<std::collections::BTreeMap<(String, &'static str), u64>>,
}

/// A snapshot of [`AuditCounters`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuditStats {
    /// Appends handed to the writer and not yet durable (the writer's queue depth).
    pub queued: u64,
    /// Durable entries appended by this process since it started, by (action, outcome).
    pub appended: Vec<(String, &'static str, u64)>,
}

fn outcome_label(o: mamori_audit::Outcome) -> &'static str {
    match o {
        mamori_audit::Outcome::Success => "success",
        mamori_audit::Outcome::Denied => "denied",
        mamori_audit::Outcome::Failure => "failure",
    }
}

/// An action as a label: the action vocabulary is written in code (`login`, `token`,
/// `alert-lock`…); anything else is `other`.
fn action_label(a: &str) -> &str {
    let fits = !a.is_empty()
        && a.len() <= 40
        && a.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'$');
    if fits { a } else { "other" }
}

impl AuditCounters {
    fn count(&self, keys: &[(String, &'static str)]) {
        let Ok(mut m) = self.by_action.lock() else { return };
        for (action, outcome) in keys {
            let full = m.len() >= MAX_COUNTED && !m.contains_key(&(action.clone(), *outcome));
            let key = if full { ("other".to_string(), *outcome) } else { (action.clone(), *outcome) };
            *m.entry(key).or_insert(0) += 1;
        }
    }

    /// The counters now.
    pub fn stats(&self) -> AuditStats {
        let appended = self
            .by_action
            .lock()
            .map(|m| m.iter().map(|((a, o), n)| (a.clone(), *o, *n)).collect())
            .unwrap_or_default();
        AuditStats { queued: self.queued.load(std::sync::atomic::Ordering::Relaxed), appended }
    }
}

/// The audit writer thread's loop: takes every queued append (up to 4096) into one `commit` —
/// one transaction, one flush — and reports each appender's leaf indexes, or the error to all of
/// them. `commit` returns the indexes per job, once durable. Runs until every sender is dropped.
pub fn writer_loop(rx: std::sync::mpsc::Receiver<Job>, mut commit: impl FnMut(&[Job]) -> Result<Vec<Vec<u64>>, Error>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < 4096 {
            match rx.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        match commit(&batch) {
            Ok(all) => {
                for ((_, done), ids) in batch.into_iter().zip(all) {
                    done(Ok(ids));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "audit append failed");
                for (_, done) in batch {
                    done(Err(AuditError::Source(e.to_string())));
                }
            }
        }
    }
}

/// Inserts records inside the caller's write transaction beside a change of its own (a record,
/// a configuration version); returns each record's last leaf index. Time never goes backwards,
/// even when processes' clocks differ slightly.
pub(crate) fn insert_all(c: &mut dyn Conn, now: i64, records: Vec<AuditRecord>) -> Result<Vec<u64>, Error> {
    insert_entries(c, now, records, true)
}

/// As [`insert_all`]. `beside_change`: the transaction also changes the main database, so on
/// SQLite — where the trail is a file of its own (schema step 9) and a transaction is not atomic
/// across the two — each entry is kept in `audit_pending` too, beside the change, until it is
/// known durable in the trail. An append that only records a request leaves `mamori.db`
/// untouched (the point of the file of its own: readers keep their page cache).
fn insert_entries(
    c: &mut dyn Conn,
    now: i64,
    records: Vec<AuditRecord>,
    beside_change: bool,
) -> Result<Vec<u64>, Error> {
    let own_file = c.dialect() == crate::Dialect::Sqlite;
    if own_file {
        recover_pending(c)?;
    }
    let (mut idx, mut prev) = match c.one("SELECT idx, time FROM audit_entries ORDER BY idx DESC LIMIT 1", &[])? {
        Some(r) => (r.int(0)?, Some(r.int(1)?)),
        None => (0, None),
    };
    let mut rows = Vec::new();
    let mut out = Vec::with_capacity(records.len());
    let keep = own_file && beside_change;
    if keep {
        // Entries known durable in the trail need no copy beside the change any more.
        let durable = i64::try_from(c.audit_durable()).map_err(Error::corrupt)?;
        rows.push(("DELETE FROM audit_pending WHERE idx <= ?1", Vec::from(vals![durable.min(idx)])));
    }
    for mut record in records {
        let t = match prev {
            Some(p) if p >= now => p + 1,
            _ => now,
        };
        prev = Some(t);
        record.time = Timestamp(t).to_fhir();
        let alert = record.action.starts_with("alert-");
        for entry in record.into_entries() {
            idx += 1;
            if keep {
                rows.push((
                    "INSERT INTO audit_pending (idx, time, entry, alert) VALUES (?1, ?2, ?3, ?4)",
                    Vec::from(vals![idx, t, entry.clone(), i64::from(alert)]),
                ));
            }
            rows.push((
                "INSERT INTO audit_entries (idx, time, entry) VALUES (?1, ?2, ?3)",
                Vec::from(vals![idx, t, entry]),
            ));
        }
        if alert {
            rows.push(("INSERT INTO audit_alerts (idx, time) VALUES (?1, ?2)", Vec::from(vals![idx, t])));
        }
        out.push(u64::try_from(idx - 1).map_err(Error::corrupt)?);
    }
    c.execute_many(&rows)?;
    Ok(out)
}

/// SQLite: entries written beside a change whose change committed and whose entry did not reach
/// `audit.db` (schema step 9) go into the trail now, at the indexes they were given — before any
/// later entry, so the trail stays gap-free and in commit order. Every append runs this first,
/// whichever process makes it.
pub fn recover_pending(c: &mut dyn Conn) -> Result<(), Error> {
    let lost = c.query(
        "SELECT idx, time, entry, alert FROM audit_pending
         WHERE idx > (SELECT COALESCE(MAX(idx), 0) FROM audit_entries) ORDER BY idx",
        &[],
    )?;
    if lost.is_empty() {
        return Ok(());
    }
    let size = size(c)?;
    let mut rows = Vec::with_capacity(lost.len());
    for (r, expected) in lost.iter().zip(size + 1..) {
        let (idx, time) = (r.int(0)?, r.int(1)?);
        if u64::try_from(idx).ok() != Some(expected) {
            // The trail ends before the entries kept beside the changes begin: `audit.db` is an
            // older file than `mamori.db` (replaced, or restored alone). Appending would leave a gap.
            return Err(Error::corrupt(format!(
                "the audit trail (audit.db) ends at {size} entries, but entries from {idx} on were written \
                 beside changes in mamori.db: audit.db is older than mamori.db"
            )));
        }
        rows.push((
            "INSERT INTO audit_entries (idx, time, entry) VALUES (?1, ?2, ?3)",
            Vec::from(vals![idx, time, r.blob(2)?]),
        ));
        if r.bool(3)? {
            rows.push(("INSERT INTO audit_alerts (idx, time) VALUES (?1, ?2)", Vec::from(vals![idx, time])));
        }
    }
    tracing::warn!(
        entries = lost.len(),
        "audit entries written beside a change were missing from the trail (a crash between the two files' commits); recovered"
    );
    c.execute_many(&rows)
}

/// Inserts one record inside the caller's write transaction; returns its last leaf index.
pub(crate) fn insert(c: &mut dyn Conn, now: i64, record: AuditRecord) -> Result<u64, Error> {
    insert_all(c, now, vec![record])?.pop().ok_or_else(|| Error::corrupt("no audit entry written"))
}

fn decode_hashes(blob: &[u8]) -> Vec<Hash> {
    blob.chunks_exact(32).filter_map(|c| c.try_into().ok()).collect()
}

fn int(v: u64) -> Result<i64, AuditError> {
    i64::try_from(v).map_err(ae)
}

/// The log's tables as read through one connection.
struct Tables<'c>(&'c mut dyn Conn);

impl TreeRead for Tables<'_> {
    fn integrated(&mut self) -> Result<u64, AuditError> {
        Ok(state(self.0, "integrated")?)
    }

    fn size(&mut self) -> Result<u64, AuditError> {
        Ok(size(self.0)?)
    }

    fn entries(&mut self, from: u64, to: u64) -> Result<Vec<Vec<u8>>, AuditError> {
        let rows = self.0.query(
            "SELECT entry FROM audit_entries WHERE idx > ?1 AND idx <= ?2 ORDER BY idx",
            &vals![int(from)?, int(to)?],
        )?;
        Ok(rows.iter().map(|r| r.blob(0)).collect::<Result<_, _>>()?)
    }

    fn tile(&mut self, level: u8, index: u64) -> Result<Vec<Hash>, AuditError> {
        let row = self.0.one(
            "SELECT hashes FROM audit_tiles WHERE level = ?1 AND idx = ?2",
            &vals![i64::from(level), int(index)?],
        )?;
        Ok(match row {
            Some(r) => decode_hashes(&r.blob(0)?),
            None => Vec::new(),
        })
    }
}

fn size(c: &mut dyn Conn) -> Result<u64, Error> {
    Ok(c.one("SELECT COALESCE(MAX(idx), 0) FROM audit_entries", &[])?.map(|r| r.uint(0)).transpose()?.unwrap_or(0))
}

fn state(c: &mut dyn Conn, name: &str) -> Result<u64, Error> {
    Ok(c.one("SELECT value FROM audit_state WHERE name = ?1", &vals![name])?
        .map(|r| r.uint(0))
        .transpose()?
        .unwrap_or(0))
}

/// The audit writer's commit: every queued append in one write transaction, then durable.
fn commit_batch<D: Db>(db: &D, now: i64, batch: &[Job]) -> Result<Vec<Vec<u64>>, Error> {
    db.write(|c| {
        let records: Vec<AuditRecord> = batch.iter().flat_map(|(r, _)| r.iter().cloned()).collect();
        // Only the trail changes: the records' file is left alone.
        let mut ids = insert_entries(c, now, records, false)?.into_iter();
        Ok(batch.iter().map(|(r, _)| ids.by_ref().take(r.len()).collect()).collect())
    })
}

impl<D: Db> SqlStore<D> {
    /// The audit writer thread's queue, started on first use. The thread ends when the store is
    /// dropped (its sender with it).
    fn audit_sender(&self) -> &std::sync::mpsc::Sender<Job> {
        &self
            .audit_tx
            .get_or_init(|| {
                let (tx, rx) = std::sync::mpsc::channel();
                let (db, clock) = (self.db.clone(), self.clock.clone());
                let writer = std::thread::Builder::new()
                    .name("mamori-audit-writer".into())
                    .spawn(move || writer_loop(rx, |batch| commit_batch(&*db, clock.now().0, batch)))
                    .map_err(|e| tracing::error!(error = %e, "cannot start the audit writer"))
                    .ok();
                (tx, writer)
            })
            .0
    }

    /// What this process appended to the audit trail, and what waits for the writer.
    pub fn audit_stats(&self) -> AuditStats {
        self.audit_counters.stats()
    }

    /// Number of entries integrated into the tree (covered by the latest checkpoint).
    pub fn audit_integrated_size(&self) -> Result<u64, Error> {
        self.db.read_statement(|c| state(c, "integrated"))
    }

    /// Total entries appended.
    pub fn audit_size(&self) -> Result<u64, Error> {
        self.db.read_statement(size)
    }

    /// Inclusion proof of leaf `index` in the tree of `size` (≤ integrated size).
    pub fn audit_inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, AuditError> {
        self.db.read(|c| {
            let mut t = Tables(c);
            if size > t.integrated()? {
                return Err(AuditError::Range(format!("tree size {size} is not integrated yet")));
            }
            merkle::inclusion_proof(&integrate::nodes(&mut t), index, size)
        })
    }

    /// Consistency proof between two integrated sizes.
    pub fn audit_consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>, AuditError> {
        self.db.read(|c| {
            let mut t = Tables(c);
            if new > t.integrated()? {
                return Err(AuditError::Range(format!("tree size {new} is not integrated yet")));
            }
            merkle::consistency_proof(&integrate::nodes(&mut t), old, new)
        })
    }

    /// The root of an integrated tree size.
    pub fn audit_root(&self, size: u64) -> Result<Hash, AuditError> {
        self.db.read(|c| merkle::root(&integrate::nodes(&mut Tables(c)), size))
    }

    /// Leaf hash of one entry, from the level-0 tile (the audit benchmark's proof check).
    pub fn audit_leaf_hash(&self, index: u64) -> Result<Hash, AuditError> {
        self.db.read(|c| merkle::NodeSource::node(&integrate::nodes(&mut Tables(c)), 0, index))
    }

    /// Integrates in steps of at most `max` entries (tests use small steps).
    pub fn integrate_in_steps(
        &self,
        signer: &NoteSigner,
        origin: &str,
        max: u64,
    ) -> Result<Option<String>, AuditError> {
        integrate::integrate(self, signer, origin, max)
    }
}

impl<D: Db> TreeStore for SqlStore<D> {
    fn snapshot<T>(&self, f: impl FnOnce(&mut dyn TreeRead) -> Result<T, AuditError>) -> Result<T, AuditError> {
        self.db.read_scan(|c| f(&mut Tables(c)))
    }

    fn store_step(&self, step: &Step) -> Result<bool, AuditError> {
        let created = self.now_micros();
        self.db.write(|c| {
            if state(c, "integrated")? != step.from {
                return Ok(false);
            }
            let mut stmts = Vec::with_capacity(step.rows.len() + 2);
            for (level, index, hashes) in &step.rows {
                stmts.push((
                    "INSERT INTO audit_tiles (level, idx, hashes) VALUES (?1, ?2, ?3)
                     ON CONFLICT (level, idx) DO UPDATE SET hashes = excluded.hashes",
                    Vec::from(vals![i64::from(*level), int(*index)?, hashes.concat()]),
                ));
            }
            let size = int(step.size)?;
            stmts.push((
                "INSERT INTO audit_checkpoints (size, created, note) VALUES (?1, ?2, ?3)",
                Vec::from(vals![size, created, step.note.as_str()]),
            ));
            stmts.push((
                "INSERT INTO audit_state (name, value) VALUES ('integrated', ?1) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                Vec::from(vals![size]),
            ));
            c.execute_many(&stmts)?;
            Ok(true)
        })
    }
}

impl<D: Db> AuditLog for SqlStore<D> {
    fn append_then(&self, mut records: Vec<AuditRecord>, done: mamori_audit::AppendDone) {
        use std::sync::atomic::Ordering;
        for r in &mut records {
            self.stamp(r);
        }
        let keys: Vec<(String, &'static str)> =
            records.iter().map(|r| (action_label(&r.action).to_string(), outcome_label(r.outcome))).collect();
        let counters = self.audit_counters.clone();
        counters.queued.fetch_add(1, Ordering::Relaxed);
        let done: mamori_audit::AppendDone = Box::new(move |r| {
            counters.queued.fetch_sub(1, Ordering::Relaxed);
            if r.is_ok() {
                counters.count(&keys);
            }
            done(r)
        });
        if let Err(std::sync::mpsc::SendError((_, done))) = self.audit_sender().send((records, done)) {
            done(Err(AuditError::Source("the audit writer stopped".into())));
        }
    }

    fn entries(&self, start: u64, count: u64) -> Result<Vec<Vec<u8>>, AuditError> {
        self.db.read_statement(|c| Tables(c).entries(start, start.saturating_add(count)))
    }

    fn query_page(&self, q: &EntryQuery) -> Result<(Vec<StoredEntry>, Option<u64>), AuditError> {
        let since = q.since.unwrap_or(i64::MIN);
        let until = q.until.unwrap_or(i64::MAX);
        let limit = if q.limit == 0 { usize::MAX } else { q.limit };
        let scan_limit = if q.scan_limit == 0 { usize::MAX } else { q.scan_limit };
        // Rows hold leaf index + 1. Oldest first: rows above `from` (exclusive); newest first:
        // rows below `before` (exclusive).
        let (sql, mut bound) = if q.newest_first {
            (
                "SELECT idx, entry FROM audit_entries WHERE idx < ?1 AND time >= ?2 AND time < ?3 ORDER BY idx DESC LIMIT 1024",
                q.before_index.map_or(Ok(i64::MAX), |b| int(b.saturating_add(1)))?,
            )
        } else {
            (
                "SELECT idx, entry FROM audit_entries WHERE idx > ?1 AND time >= ?2 AND time < ?3 ORDER BY idx LIMIT 4096",
                int(q.from_index)?,
            )
        };
        self.db.read(|c| {
            let mut out = Vec::new();
            let mut scanned = 0usize;
            loop {
                let rows = c.query(sql, &vals![bound, since, until])?;
                let Some(last) = rows.last() else { break };
                let last = last.int(0)?;
                for r in &rows {
                    let row = r.int(0)?;
                    let index = u64::try_from(row - 1).map_err(ae)?;
                    let entry = r.blob(1)?;
                    scanned += 1;
                    if q.matches(&entry) {
                        out.push((index, entry));
                        if out.len() >= limit {
                            return Ok((out, None));
                        }
                    }
                    if scanned >= scan_limit {
                        // Continue after this row next time.
                        let next = if q.newest_first { index } else { index + 1 };
                        return Ok((out, Some(next)));
                    }
                }
                bound = last;
            }
            Ok((out, None))
        })
    }

    fn recent_alerts(&self, limit: usize) -> Result<Vec<StoredEntry>, AuditError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self.db.read_statement(|c| {
            c.query(
                "SELECT e.idx, e.entry FROM audit_alerts a JOIN audit_entries e ON e.idx = a.idx ORDER BY a.idx DESC LIMIT ?1",
                &vals![limit],
            )
        })?;
        rows.iter().map(|r| Ok((u64::try_from(r.int(0)? - 1).map_err(ae)?, r.blob(1)?))).collect()
    }

    fn tile(&self, level: u8, index: u64) -> Result<Vec<Hash>, AuditError> {
        self.db.read_statement(|c| Tables(c).tile(level, index))
    }

    fn latest_checkpoint(&self) -> Result<Option<String>, AuditError> {
        let r =
            self.db.read_statement(|c| c.one("SELECT note FROM audit_checkpoints ORDER BY size DESC LIMIT 1", &[]))?;
        Ok(r.map(|r| r.text(0)).transpose()?)
    }

    fn checkpoints(&self) -> Result<Vec<String>, AuditError> {
        let rows = self.db.read_statement(|c| c.query("SELECT note FROM audit_checkpoints ORDER BY size", &[]))?;
        Ok(rows.iter().map(|r| r.text(0)).collect::<Result<_, _>>()?)
    }

    fn integrate(&self, signer: &NoteSigner, origin: &str) -> Result<Option<String>, AuditError> {
        integrate::integrate(self, signer, origin, integrate::STEP)
    }
}
