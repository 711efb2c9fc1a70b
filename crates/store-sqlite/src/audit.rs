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

    fn integrate(&self, signer: &NoteSigner, origin: &str) -> Result<Option<String>, AuditError> {
        let mut conn = self.writer().map_err(ae)?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(ae)?;
        let mut size = state(&tx, "integrated").map_err(ae)?;
        let total: i64 =
            tx.query_row("SELECT COALESCE(MAX(idx), 0) FROM audit_entries", [], |r| r.get(0)).map_err(ae)?;
        let total = u64::try_from(total).map_err(ae)?;
        if total == size {
            return Ok(None);
        }
        while size < total {
            let chunk = (total - size).min(65_536);
            let leaves: Vec<Hash> = {
                let mut st = tx
                    .prepare_cached("SELECT entry FROM audit_entries WHERE idx > ?1 AND idx <= ?2 ORDER BY idx")
                    .map_err(ae)?;
                let rows = st
                    .query_map(
                        params![i64::try_from(size).map_err(ae)?, i64::try_from(size + chunk).map_err(ae)?],
                        |r| r.get::<_, Vec<u8>>(0),
                    )
                    .map_err(ae)?;
                let mut v = Vec::with_capacity(usize::try_from(chunk).unwrap_or(0));
                for e in rows {
                    v.push(merkle::leaf_hash(&e.map_err(ae)?));
                }
                v
            };
            let rows = tiles::append_leaves(size, &leaves, |l, i| load_tile(&tx, l, i))?;
            let mut up = tx
                .prepare_cached(
                    "INSERT INTO audit_tiles (level, idx, hashes) VALUES (?1, ?2, ?3)
                     ON CONFLICT (level, idx) DO UPDATE SET hashes = excluded.hashes",
                )
                .map_err(ae)?;
            for (level, index, hashes) in rows {
                let blob: Vec<u8> = hashes.concat();
                up.execute(params![level, i64::try_from(index).map_err(ae)?, blob]).map_err(ae)?;
            }
            size += leaves.len() as u64;
        }
        let root = merkle::root(&TileNodes::new(|l, i| load_tile(&tx, l, i)), size)?;
        let note = signer.sign(&Checkpoint { origin: origin.to_string(), size, root }.body())?;
        tx.execute(
            "INSERT INTO audit_checkpoints (size, created, note) VALUES (?1, ?2, ?3)",
            params![i64::try_from(size).map_err(ae)?, SystemClock.now().0, note],
        )
        .map_err(ae)?;
        tx.execute(
            "INSERT INTO audit_state (name, value) VALUES ('integrated', ?1) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            params![i64::try_from(size).map_err(ae)?],
        )
        .map_err(ae)?;
        tx.commit().map_err(ae)?;
        self.release_durably(conn).map_err(ae)?;
        Ok(Some(note))
    }
}
