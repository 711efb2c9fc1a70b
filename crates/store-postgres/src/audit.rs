//! [`mamori_audit::AuditLog`] on PostgreSQL: one log for every node.
//!
//! The sequencer: an entry is inserted only by a transaction holding [`crate::WRITER_LOCK`], with
//! leaf index `MAX(idx) + 1` and a time at least one microsecond after the previous entry's. The
//! lock is released only when that transaction ends, so indexes are gap-free, in commit order,
//! and the committed entries are always a prefix of the log — whichever node wrote them.
//! Group commit: each node's audit writer thread takes every queued append into one transaction.

use mamori_audit::merkle::{self, NodeSource};
use mamori_audit::note::{Checkpoint, NoteSigner};
use mamori_audit::tiles::{self, TileNodes};
use mamori_audit::{AuditLog, AuditRecord, EntryQuery, Error as AuditError, Hash, StoredEntry};
use mamori_records::{Clock, SystemClock, Timestamp};

use crate::{Error, INTEGRATE_LOCK, Inner, Lease, PgStore, params};

fn ae(e: impl std::fmt::Display) -> AuditError {
    let msg = e.to_string();
    tracing::error!(error = %msg, "audit store failure");
    AuditError::Source(msg)
}

pub(crate) use mamori_store_sqlite::AuditJob as Job;

/// Inserts records inside the caller's write transaction (which holds the writer lock), all in
/// one statement; returns each record's last leaf index.
pub(crate) fn insert_all(l: &mut Lease<'_>, records: Vec<AuditRecord>) -> Result<Vec<u64>, Error> {
    let last = l.opt("SELECT idx, time FROM audit_entries ORDER BY idx DESC LIMIT 1", params![])?;
    let (mut idx, mut prev) = match last {
        Some(r) => (r.try_get::<_, i64>(0)?, Some(r.try_get::<_, i64>(1)?)),
        None => (0, None),
    };
    let (mut idxs, mut times, mut entries) = (Vec::new(), Vec::new(), Vec::new());
    let mut out = Vec::with_capacity(records.len());
    for mut record in records {
        let now = SystemClock.now().0;
        // Time never goes backwards, even when the nodes' clocks differ slightly.
        let t = match prev {
            Some(p) if p >= now => p + 1,
            _ => now,
        };
        prev = Some(t);
        record.time = Timestamp(t).to_fhir();
        for entry in record.into_entries() {
            idx += 1;
            idxs.push(idx);
            times.push(t);
            entries.push(entry);
        }
        out.push(u64::try_from(idx - 1).map_err(|e| Error::Corrupt(e.to_string()))?);
    }
    if !idxs.is_empty() {
        l.execute(
            "INSERT INTO audit_entries (idx, time, entry) SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bytea[])",
            params![idxs, times, entries],
        )?;
    }
    Ok(out)
}

/// Inserts one record inside the caller's write transaction; returns its last leaf index.
pub(crate) fn insert(l: &mut Lease<'_>, record: AuditRecord) -> Result<u64, Error> {
    insert_all(l, vec![record])?.pop().ok_or_else(|| Error::Corrupt("no audit entry written".into()))
}

fn decode_hashes(blob: &[u8]) -> Vec<Hash> {
    blob.chunks_exact(32).filter_map(|c| c.try_into().ok()).collect()
}

fn load_tile(l: &mut Lease<'_>, level: u8, index: u64) -> Result<Vec<Hash>, AuditError> {
    let idx = i64::try_from(index).map_err(ae)?;
    let row = l
        .opt("SELECT hashes FROM audit_tiles WHERE level = $1 AND idx = $2", params![i32::from(level), idx])
        .map_err(ae)?;
    Ok(match row {
        Some(r) => decode_hashes(&r.try_get::<_, Vec<u8>>(0).map_err(ae)?),
        None => Vec::new(),
    })
}

fn state(l: &mut Lease<'_>, name: &str) -> Result<u64, Error> {
    let v = l.opt("SELECT value FROM audit_state WHERE name = $1", params![name.to_string()])?;
    Ok(match v {
        Some(r) => u64::try_from(r.try_get::<_, i64>(0)?).unwrap_or(0),
        None => 0,
    })
}

fn size(l: &mut Lease<'_>) -> Result<u64, Error> {
    let r = l.opt("SELECT COALESCE(MAX(idx), 0) FROM audit_entries", params![])?;
    Ok(match r {
        Some(r) => u64::try_from(r.try_get::<_, i64>(0)?).unwrap_or(0),
        None => 0,
    })
}

/// Tile nodes read through one connection (the trait takes `&self`; the lease needs `&mut`).
struct Tiles<'a, 's>(std::cell::RefCell<&'a mut Lease<'s>>);

impl NodeSource for Tiles<'_, '_> {
    fn node(&self, level: u8, index: u64) -> Result<Hash, AuditError> {
        TileNodes::new(|lv, i| load_tile(*self.0.try_borrow_mut().map_err(ae)?, lv, i)).node(level, index)
    }
}

/// The audit writer's commit: every queued append in one write transaction (the sequencer's
/// lock), its entries in one statement.
fn commit_batch(batch: &[Job], store: &std::sync::Arc<Inner>) -> Result<Vec<Vec<u64>>, String> {
    crate::lease(store)
        .and_then(|mut l| {
            l.write(|l| -> Result<Vec<Vec<u64>>, Error> {
                let records: Vec<AuditRecord> = batch.iter().flat_map(|(r, _)| r.iter().cloned()).collect();
                let mut ids = insert_all(l, records)?.into_iter();
                Ok(batch.iter().map(|(r, _)| ids.by_ref().take(r.len()).collect()).collect())
            })
        })
        .map_err(|e| e.to_string())
}

impl PgStore {
    /// The audit writer thread's queue, started on first use. The thread ends when the store is
    /// dropped (its sender with it).
    fn audit_sender(&self) -> &std::sync::mpsc::Sender<Job> {
        self.audit_tx.get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::channel();
            let inner = self.inner.clone();
            std::thread::Builder::new()
                .name("mamori-audit-writer".into())
                .spawn(move || mamori_store_sqlite::audit_writer_loop(rx, |batch| commit_batch(batch, &inner)))
                .map_err(|e| tracing::error!(error = %e, "cannot start the audit writer"))
                .ok();
            tx
        })
    }
    /// Number of entries integrated into the tree (covered by the latest checkpoint).
    pub fn audit_integrated_size(&self) -> Result<u64, Error> {
        state(&mut self.lease()?, "integrated")
    }

    /// Total entries appended.
    pub fn audit_size(&self) -> Result<u64, Error> {
        size(&mut self.lease()?)
    }

    /// Inclusion proof of leaf `index` in the tree of `size` (≤ integrated size).
    pub fn audit_inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, AuditError> {
        let mut l = self.lease().map_err(ae)?;
        if size > state(&mut l, "integrated").map_err(ae)? {
            return Err(AuditError::Range(format!("tree size {size} is not integrated yet")));
        }
        merkle::inclusion_proof(&Tiles(std::cell::RefCell::new(&mut l)), index, size)
    }

    /// Consistency proof between two integrated sizes.
    pub fn audit_consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>, AuditError> {
        let mut l = self.lease().map_err(ae)?;
        if new > state(&mut l, "integrated").map_err(ae)? {
            return Err(AuditError::Range(format!("tree size {new} is not integrated yet")));
        }
        merkle::consistency_proof(&Tiles(std::cell::RefCell::new(&mut l)), old, new)
    }

    /// The root of an integrated tree size.
    pub fn audit_root(&self, size: u64) -> Result<Hash, AuditError> {
        let mut l = self.lease().map_err(ae)?;
        merkle::root(&Tiles(std::cell::RefCell::new(&mut l)), size)
    }

    /// Leaf hash of one entry, from the level-0 tile.
    pub fn audit_leaf_hash(&self, index: u64) -> Result<Hash, AuditError> {
        let mut l = self.lease().map_err(ae)?;
        Tiles(std::cell::RefCell::new(&mut l)).node(0, index)
    }
}

impl AuditLog for PgStore {
    fn append_then(&self, records: Vec<AuditRecord>, done: mamori_audit::AppendDone) {
        if let Err(std::sync::mpsc::SendError((_, done))) = self.audit_sender().send((records, done)) {
            done(Err(AuditError::Source("the audit writer stopped".into())));
        }
    }

    fn entries(&self, start: u64, count: u64) -> Result<Vec<Vec<u8>>, AuditError> {
        let (a, b) = (i64::try_from(start).map_err(ae)?, i64::try_from(start.saturating_add(count)).map_err(ae)?);
        let rows = self
            .lease()
            .map_err(ae)?
            .query("SELECT entry FROM audit_entries WHERE idx > $1 AND idx <= $2 ORDER BY idx", params![a, b])
            .map_err(ae)?;
        rows.iter().map(|r| r.try_get::<_, Vec<u8>>(0).map_err(ae)).collect()
    }

    fn query(&self, q: &EntryQuery) -> Result<Vec<StoredEntry>, AuditError> {
        let mut l = self.lease().map_err(ae)?;
        let mut out = Vec::new();
        let mut from = i64::try_from(q.from_index).map_err(ae)?;
        let since = q.since.unwrap_or(i64::MIN);
        let until = q.until.unwrap_or(i64::MAX);
        let limit = if q.limit == 0 { usize::MAX } else { q.limit };
        loop {
            let rows = l
                .query(
                    "SELECT idx, entry FROM audit_entries WHERE idx > $1 AND time >= $2 AND time < $3 ORDER BY idx LIMIT 4096",
                    params![from, since, until],
                )
                .map_err(ae)?;
            let Some(last) = rows.last() else { break };
            let last: i64 = last.try_get(0).map_err(ae)?;
            for r in &rows {
                let idx: i64 = r.try_get(0).map_err(ae)?;
                let entry: Vec<u8> = r.try_get(1).map_err(ae)?;
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
        load_tile(&mut self.lease().map_err(ae)?, level, index)
    }

    fn latest_checkpoint(&self) -> Result<Option<String>, AuditError> {
        let r = self
            .lease()
            .map_err(ae)?
            .opt("SELECT note FROM audit_checkpoints ORDER BY size DESC LIMIT 1", params![])
            .map_err(ae)?;
        r.map(|r| r.try_get(0).map_err(ae)).transpose()
    }

    fn checkpoints(&self) -> Result<Vec<String>, AuditError> {
        let rows = self
            .lease()
            .map_err(ae)?
            .query("SELECT note FROM audit_checkpoints ORDER BY size", params![])
            .map_err(ae)?;
        rows.iter().map(|r| r.try_get(0).map_err(ae)).collect()
    }

    fn integrate(&self, signer: &NoteSigner, origin: &str) -> Result<Option<String>, AuditError> {
        let mut l = self.lease().map_err(ae)?;
        l.transaction("BEGIN ISOLATION LEVEL READ COMMITTED", |l| -> Result<Option<String>, AuditError> {
            // One integrator at a time, cluster-wide; appends go on meanwhile (they take the
            // writer lock, not this one) and the committed entries are always a prefix.
            l.query("SELECT pg_advisory_xact_lock($1)", params![INTEGRATE_LOCK]).map_err(ae)?;
            let mut done = state(l, "integrated").map_err(ae)?;
            let total = size(l).map_err(ae)?;
            if total == done {
                return Ok(None);
            }
            while done < total {
                let chunk = (total - done).min(65_536);
                let rows = l
                    .query(
                        "SELECT entry FROM audit_entries WHERE idx > $1 AND idx <= $2 ORDER BY idx",
                        params![i64::try_from(done).map_err(ae)?, i64::try_from(done + chunk).map_err(ae)?],
                    )
                    .map_err(ae)?;
                let mut leaves = Vec::with_capacity(rows.len());
                for r in &rows {
                    leaves.push(merkle::leaf_hash(&r.try_get::<_, Vec<u8>>(0).map_err(ae)?));
                }
                if leaves.is_empty() {
                    return Err(ae(format!("audit entries after {done} are missing")));
                }
                let tiles_rows = {
                    let cell = std::cell::RefCell::new(&mut *l);
                    tiles::append_leaves(done, &leaves, |lv, i| {
                        let mut g = cell.try_borrow_mut().map_err(ae)?;
                        load_tile(&mut g, lv, i)
                    })?
                };
                for (level, index, hashes) in tiles_rows {
                    l.execute(
                        "INSERT INTO audit_tiles (level, idx, hashes) VALUES ($1, $2, $3)
                         ON CONFLICT (level, idx) DO UPDATE SET hashes = excluded.hashes",
                        params![i32::from(level), i64::try_from(index).map_err(ae)?, hashes.concat()],
                    )
                    .map_err(ae)?;
                }
                done += leaves.len() as u64;
            }
            let root = merkle::root(&Tiles(std::cell::RefCell::new(&mut *l)), done)?;
            let note = signer.sign(&Checkpoint { origin: origin.to_string(), size: done, root }.body())?;
            l.execute(
                "INSERT INTO audit_checkpoints (size, created, note) VALUES ($1, $2, $3)",
                params![i64::try_from(done).map_err(ae)?, SystemClock.now().0, note.clone()],
            )
            .map_err(ae)?;
            l.execute(
                "INSERT INTO audit_state (name, value) VALUES ('integrated', $1) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                params![i64::try_from(done).map_err(ae)?],
            )
            .map_err(ae)?;
            Ok(Some(note))
        })
    }
}

impl From<Error> for AuditError {
    fn from(e: Error) -> Self {
        ae(e)
    }
}
