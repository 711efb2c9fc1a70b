//! [`mamori_audit::AuditLog`] on SQLite: entries in `audit_entries`, C2SP tiles in
//! `audit_tiles`, signed checkpoints in `audit_checkpoints`.

use mamori_audit::merkle::{self, NodeSource};
use mamori_audit::note::{Checkpoint, NoteSigner};
use mamori_audit::tiles::{self, TileNodes};
use mamori_audit::{AuditLog, AuditRecord, EntryQuery, Error as AuditError, Hash, StoredEntry};
use mamori_records::{Clock, SystemClock, Timestamp};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::{Error, SqliteStore};

fn ae(e: impl std::fmt::Display) -> AuditError {
    let msg = e.to_string();
    tracing::error!(error = %msg, "audit store failure");
    AuditError::Source(msg)
}

/// One append waiting for a store's audit writer thread.
pub type Job = (Vec<mamori_audit::AuditRecord>, mamori_audit::AppendDone);

/// The audit writer thread's loop, shared with the PostgreSQL store: takes every queued append
/// (up to 4096) into one `commit` — one transaction, one flush — and reports each appender's leaf
/// indexes, or the error to all of them. `commit` returns the indexes per job, once durable. Runs
/// until every sender is dropped.
pub fn writer_loop(
    rx: std::sync::mpsc::Receiver<Job>,
    mut commit: impl FnMut(&[Job]) -> Result<Vec<Vec<u64>>, String>,
) {
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
                    done(Err(mamori_audit::Error::Source(e.clone())));
                }
            }
        }
    }
}

/// The audit writer's commit: every queued append in one transaction, then one group fsync
/// (waited for after the writer is released, so others commit meanwhile).
fn commit_batch(
    batch: &[Job],
    writer: &crate::writer::Writer,
    durability: &crate::durability::Durability,
) -> Result<Vec<Vec<u64>>, String> {
    let (all, ticket) = {
        let conn = writer.lock().map_err(|e| e.to_string())?;
        let tx =
            rusqlite::Transaction::new_unchecked(&conn, TransactionBehavior::Immediate).map_err(|e| e.to_string())?;
        let mut all = Vec::with_capacity(batch.len());
        for (records, _) in batch {
            let mut ids = Vec::with_capacity(records.len());
            for r in records {
                ids.push(insert(&tx, r.clone()).map_err(|e| e.to_string())?);
            }
            all.push(ids);
        }
        tx.commit().map_err(|e| e.to_string())?;
        (all, durability.committed())
    };
    durability.wait(ticket).map_err(|e| e.to_string())?;
    Ok(all)
}

impl SqliteStore {
    fn audit_sender(&self) -> &std::sync::mpsc::Sender<Job> {
        self.audit_tx.get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::channel();
            let (writer, durability) = (self.writer.clone(), self.durability.clone());
            std::thread::Builder::new()
                .name("mamori-audit-writer".into())
                .spawn(move || writer_loop(rx, |batch| commit_batch(batch, &writer, &durability)))
                .map_err(|e| tracing::error!(error = %e, "cannot start the audit writer"))
                .ok();
            tx
        })
    }
}

/// Inserts one record inside the caller's transaction; returns its leaf index.
/// Time never goes backwards: it is at least one microsecond after the previous entry's.
pub(crate) fn insert(c: &Connection, mut record: AuditRecord) -> Result<u64, Error> {
    let last: Option<i64> = c
        .prepare_cached("SELECT time FROM audit_entries ORDER BY idx DESC LIMIT 1")?
        .query_row([], |r| r.get(0))
        .optional()?;
    let now = SystemClock.now().0;
    let t = match last {
        Some(l) if l >= now => l + 1,
        _ => now,
    };
    record.time = Timestamp(t).to_fhir();
    let mut last_idx = 0i64;
    for entry in record.into_entries() {
        c.prepare_cached("INSERT INTO audit_entries (time, entry) VALUES (?1, ?2)")?.execute(params![t, entry])?;
        last_idx = c.last_insert_rowid();
    }
    u64::try_from(last_idx - 1).map_err(|e| Error::Corrupt(e.to_string()))
}

fn decode_hashes(blob: &[u8]) -> Vec<Hash> {
    blob.chunks_exact(32).filter_map(|c| c.try_into().ok()).collect()
}

fn load_tile(c: &Connection, level: u8, index: u64) -> Result<Vec<Hash>, AuditError> {
    let idx = i64::try_from(index).map_err(ae)?;
    let blob: Option<Vec<u8>> = c
        .prepare_cached("SELECT hashes FROM audit_tiles WHERE level = ?1 AND idx = ?2")
        .map_err(ae)?
        .query_row(params![level, idx], |r| r.get(0))
        .optional()
        .map_err(ae)?;
    Ok(blob.map(|b| decode_hashes(&b)).unwrap_or_default())
}

fn state(c: &Connection, name: &str) -> Result<u64, Error> {
    let v: Option<i64> = c
        .prepare_cached("SELECT value FROM audit_state WHERE name = ?1")?
        .query_row(params![name], |r| r.get(0))
        .optional()?;
    Ok(v.and_then(|v| u64::try_from(v).ok()).unwrap_or(0))
}

impl SqliteStore {
    /// Number of entries integrated into the tree (covered by the latest checkpoint).
    pub fn audit_integrated_size(&self) -> Result<u64, Error> {
        state(&*self.reader()?, "integrated")
    }

    /// Total entries appended.
    pub fn audit_size(&self) -> Result<u64, Error> {
        let n: i64 = self.reader()?.query_row("SELECT COALESCE(MAX(idx), 0) FROM audit_entries", [], |r| r.get(0))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Inclusion proof of leaf `index` in the tree of `size` (≤ integrated size).
    pub fn audit_inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, AuditError> {
        let c = self.reader().map_err(ae)?;
        if size > state(&c, "integrated").map_err(ae)? {
            return Err(AuditError::Range(format!("tree size {size} is not integrated yet")));
        }
        let nodes = TileNodes::new(|l, i| load_tile(&c, l, i));
        merkle::inclusion_proof(&nodes, index, size)
    }

    /// Consistency proof between two integrated sizes.
    pub fn audit_consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>, AuditError> {
        let c = self.reader().map_err(ae)?;
        if new > state(&c, "integrated").map_err(ae)? {
            return Err(AuditError::Range(format!("tree size {new} is not integrated yet")));
        }
        let nodes = TileNodes::new(|l, i| load_tile(&c, l, i));
        merkle::consistency_proof(&nodes, old, new)
    }

    /// The root of an integrated tree size.
    pub fn audit_root(&self, size: u64) -> Result<Hash, AuditError> {
        let c = self.reader().map_err(ae)?;
        let nodes = TileNodes::new(|l, i| load_tile(&c, l, i));
        merkle::root(&nodes, size)
    }

    /// Leaf hash of one entry, from the level-0 tile.
    pub fn audit_leaf_hash(&self, index: u64) -> Result<Hash, AuditError> {
        let c = self.reader().map_err(ae)?;
        TileNodes::new(|l, i| load_tile(&c, l, i)).node(0, index)
    }
}

impl AuditLog for SqliteStore {
    fn append_then(&self, records: Vec<AuditRecord>, done: mamori_audit::AppendDone) {
        if let Err(std::sync::mpsc::SendError((_, done))) = self.audit_sender().send((records, done)) {
            done(Err(AuditError::Source("the audit writer stopped".into())));
        }
    }

    fn entries(&self, start: u64, count: u64) -> Result<Vec<Vec<u8>>, AuditError> {
        let c = self.reader().map_err(ae)?;
        let mut st = c
            .prepare_cached("SELECT entry FROM audit_entries WHERE idx > ?1 AND idx <= ?2 ORDER BY idx")
            .map_err(ae)?;
        let (a, b) = (i64::try_from(start).map_err(ae)?, i64::try_from(start.saturating_add(count)).map_err(ae)?);
        let rows = st.query_map(params![a, b], |r| r.get::<_, Vec<u8>>(0)).map_err(ae)?;
        rows.collect::<Result<_, _>>().map_err(ae)
    }

    fn query(&self, q: &EntryQuery) -> Result<Vec<StoredEntry>, AuditError> {
        let c = self.reader().map_err(ae)?;
        let mut st = c
            .prepare_cached(
                "SELECT idx, entry FROM audit_entries WHERE idx > ?1 AND time >= ?2 AND time < ?3 ORDER BY idx LIMIT 4096",
            )
            .map_err(ae)?;
        let mut out = Vec::new();
        let mut from = i64::try_from(q.from_index).map_err(ae)?;
        let since = q.since.unwrap_or(i64::MIN);
        let until = q.until.unwrap_or(i64::MAX);
        let limit = if q.limit == 0 { usize::MAX } else { q.limit };
        loop {
            let rows: Vec<(i64, Vec<u8>)> = st
                .query_map(params![from, since, until], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(ae)?
                .collect::<Result<_, _>>()
                .map_err(ae)?;
            let Some(last) = rows.last().map(|r| r.0) else { break };
            for (idx, entry) in rows {
                if q.matches(&entry) {
                    out.push((u64::try_from(idx - 1).map_err(ae)?, entry));
                    if out.len() >= limit {
                        return Ok(out);
                    }
                }
            }
            from = last;
        }
        Ok(out)
    }

    fn tile(&self, level: u8, index: u64) -> Result<Vec<Hash>, AuditError> {
        load_tile(&*self.reader().map_err(ae)?, level, index)
    }

    fn latest_checkpoint(&self) -> Result<Option<String>, AuditError> {
        let c = self.reader().map_err(ae)?;
        c.prepare_cached("SELECT note FROM audit_checkpoints ORDER BY size DESC LIMIT 1")
            .map_err(ae)?
            .query_row([], |r| r.get(0))
            .optional()
            .map_err(ae)
    }

    fn checkpoints(&self) -> Result<Vec<String>, AuditError> {
        let c = self.reader().map_err(ae)?;
        let mut st = c.prepare_cached("SELECT note FROM audit_checkpoints ORDER BY size").map_err(ae)?;
        let rows = st.query_map([], |r| r.get(0)).map_err(ae)?;
        rows.collect::<Result<_, _>>().map_err(ae)
    }

    /// Integrates in steps of at most [`INTEGRATE_STEP`] entries, each with its own signed
    /// checkpoint. A step reads and hashes on a read connection of its own, without the writer
    /// (hashing a quarter-second of entries took 2–11 ms, and every write and every audited read
    /// waited behind it, issue #9), then takes the writer only to store the tiles, the checkpoint
    /// and the new size, after checking that no one integrated meanwhile.
    fn integrate(&self, signer: &NoteSigner, origin: &str) -> Result<Option<String>, AuditError> {
        let mut last = None;
        while let Some(step) = self.integration_step(signer, origin)? {
            let done = step.size == step.total;
            if !self.store_step(&step)? {
                // Another integrator stored this step first; its checkpoint stands.
                break;
            }
            last = Some(step.note);
            if done {
                break;
            }
        }
        Ok(last)
    }
}

/// At most this many entries are integrated per transaction (and per checkpoint); a few in the
/// unit tests, to run several steps.
const INTEGRATE_STEP: u64 = if cfg!(test) { 100 } else { 65_536 };

/// One integration step, computed on the integrator's read connection: from `from` entries to
/// `size` (of `total`).
struct Step {
    from: u64,
    size: u64,
    total: u64,
    rows: Vec<tiles::TileRow>,
    note: String,
}

impl SqliteStore {
    /// Reads, hashes and signs the next step on the integrator's own read connection, in one read
    /// transaction (one snapshot of the entries, the tiles and the integrated size); `None` when
    /// nothing is left to integrate.
    fn integration_step(&self, signer: &NoteSigner, origin: &str) -> Result<Option<Step>, AuditError> {
        let c = self.integration.lock().map_err(|_| ae("the integrator's connection is poisoned"))?;
        let tx = rusqlite::Transaction::new_unchecked(&c, TransactionBehavior::Deferred).map_err(ae)?;
        let from = state(&tx, "integrated").map_err(ae)?;
        let total: i64 =
            tx.query_row("SELECT COALESCE(MAX(idx), 0) FROM audit_entries", [], |r| r.get(0)).map_err(ae)?;
        let total = u64::try_from(total).map_err(ae)?;
        if total <= from {
            return Ok(None);
        }
        let size = from + (total - from).min(INTEGRATE_STEP);
        let leaves: Vec<Hash> = {
            let mut st = tx
                .prepare_cached("SELECT entry FROM audit_entries WHERE idx > ?1 AND idx <= ?2 ORDER BY idx")
                .map_err(ae)?;
            let rows = st
                .query_map(params![i64::try_from(from).map_err(ae)?, i64::try_from(size).map_err(ae)?], |r| {
                    r.get::<_, Vec<u8>>(0)
                })
                .map_err(ae)?;
            let mut v = Vec::with_capacity(usize::try_from(size - from).unwrap_or(0));
            for e in rows {
                v.push(merkle::leaf_hash(&e.map_err(ae)?));
            }
            v
        };
        if leaves.len() as u64 != size - from {
            return Err(ae(format!("audit entries {}..{size} are not contiguous", from + 1)));
        }
        let rows = tiles::append_leaves(from, &leaves, |l, i| load_tile(&tx, l, i))?;
        // The root of the new size, from the stored tiles overlaid with the changed rows.
        let changed: std::collections::HashMap<(u8, u64), &Vec<Hash>> =
            rows.iter().map(|(l, i, h)| ((*l, *i), h)).collect();
        let root = merkle::root(
            &TileNodes::new(|l, i| match changed.get(&(l, i)) {
                Some(h) => Ok((*h).clone()),
                None => load_tile(&tx, l, i),
            }),
            size,
        )?;
        let note = signer.sign(&Checkpoint { origin: origin.to_string(), size, root }.body())?;
        drop(changed);
        Ok(Some(Step { from, size, total, rows, note }))
    }

    /// Stores a step with the writer; `false` (and nothing written) when the integrated size is
    /// no longer the step's starting point.
    fn store_step(&self, step: &Step) -> Result<bool, AuditError> {
        let mut conn = self.writer().map_err(ae)?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(ae)?;
        if state(&tx, "integrated").map_err(ae)? != step.from {
            return Ok(false);
        }
        {
            let mut up = tx
                .prepare_cached(
                    "INSERT INTO audit_tiles (level, idx, hashes) VALUES (?1, ?2, ?3)
                     ON CONFLICT (level, idx) DO UPDATE SET hashes = excluded.hashes",
                )
                .map_err(ae)?;
            for (level, index, hashes) in &step.rows {
                let blob: Vec<u8> = hashes.concat();
                up.execute(params![level, i64::try_from(*index).map_err(ae)?, blob]).map_err(ae)?;
            }
        }
        let size = i64::try_from(step.size).map_err(ae)?;
        tx.execute(
            "INSERT INTO audit_checkpoints (size, created, note) VALUES (?1, ?2, ?3)",
            params![size, SystemClock.now().0, step.note],
        )
        .map_err(ae)?;
        tx.execute(
            "INSERT INTO audit_state (name, value) VALUES ('integrated', ?1) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            params![size],
        )
        .map_err(ae)?;
        tx.commit().map_err(ae)?;
        self.release_durably(conn).map_err(ae)?;
        Ok(true)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use mamori_audit::note::NoteVerifier;
    use mamori_audit::{AuditActor, Outcome};

    fn record(i: u64) -> AuditRecord {
        AuditRecord {
            action: "read".into(),
            actor: AuditActor { client_id: None, fhir_user: None, id: format!("user-{i}"), kind: "user".into() },
            detail: None,
            outcome: Outcome::Success,
            patients: vec![],
            purpose: "TREAT".into(),
            query: None,
            request_id: None,
            resources: vec![format!("Patient/p{i}")],
            source: None,
            status: Some(200),
            time: String::new(),
            v: 1,
        }
    }

    fn root_of_entries(store: &SqliteStore, n: u64) -> Hash {
        let leaves: Vec<Hash> = store.entries(0, n).unwrap().iter().map(|e| merkle::leaf_hash(e)).collect();
        assert_eq!(leaves.len() as u64, n);
        merkle::root_of(&leaves)
    }

    #[test]
    fn integration_runs_in_steps_off_the_writer_and_a_stale_step_is_not_stored() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let signer = NoteSigner::new("test.local/audit", &[7; 32]).unwrap();
        let verifier = NoteVerifier::parse(&signer.verifier_key()).unwrap();
        store.append((0..250).map(record).collect()).unwrap();

        // 250 entries in steps of 100: three checkpoints, the last one of the whole log.
        let note = store.integrate(&signer, "test.local/audit").unwrap().expect("the log grew");
        let cp = Checkpoint::parse(verifier.verify(&note).unwrap()).unwrap();
        assert_eq!((cp.size, cp.root), (250, root_of_entries(&store, 250)));
        let sizes: Vec<u64> = store
            .checkpoints()
            .unwrap()
            .iter()
            .map(|n| Checkpoint::parse(verifier.verify(n).unwrap()).unwrap().size)
            .collect();
        assert_eq!(sizes, [100, 200, 250]);
        assert_eq!(store.audit_integrated_size().unwrap(), 250);
        assert_eq!(store.integrate(&signer, "test.local/audit").unwrap(), None, "nothing new");

        // A step computed, then overtaken by another integration, is refused and changes nothing.
        store.append((250..260).map(record).collect()).unwrap();
        let stale = store.integration_step(&signer, "test.local/audit").unwrap().unwrap();
        assert_eq!((stale.from, stale.size), (250, 260));
        store.integrate(&signer, "test.local/audit").unwrap().unwrap();
        assert!(!store.store_step(&stale).unwrap());
        assert_eq!(store.audit_integrated_size().unwrap(), 260);
        assert_eq!(store.checkpoints().unwrap().len(), 4);

        // The stored tiles give the same root and valid proofs.
        let root = root_of_entries(&store, 260);
        assert_eq!(store.audit_root(260).unwrap(), root);
        let leaf = merkle::leaf_hash(&store.entries(122, 1).unwrap()[0]);
        let proof = store.audit_inclusion_proof(122, 260).unwrap();
        merkle::verify_inclusion(&leaf, 122, 260, &proof, &root).unwrap();
    }
}
