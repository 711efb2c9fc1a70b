//! The store's one writing connection, and group commit of record writes (issue #9).
//!
//! A record write (`Store::write`: a create, an update, an import batch…) runs on the writer
//! thread — one thread, a rayon-core pool of one: the caller hands it its closure and blocks until
//! it has run (`ThreadPool::install`, which runs a closure that borrows the caller's stack on
//! another thread without `unsafe` here) — inside a `SAVEPOINT` of a transaction that may already
//! hold other writes. When another write is queued behind it (`pending`), the transaction is left
//! open for that one; the last one in (none queued, or [`MAX_JOBS`] writes in the batch) commits
//! for everyone. Every write of a batch is therefore committed by one `COMMIT`, and the pages the
//! writes share — the right-hand leaves of the version table and of every index, where
//! time-ordered ids land — go to the WAL once per batch instead of once per write. Durability is
//! unchanged: each writer is acknowledged only after the group fsync that follows its batch's
//! commit (`Durability::wait`), waited for on the caller's own thread.
//!
//! One thread runs the writes because passing the connection from thread to thread was what
//! bounded creates: each pass waited for the next thread to be scheduled (~0.3 ms on two busy
//! cores), so the connection was held all the time but used half of it (issue #9, BENCHMARKS.md).
//!
//! Invariants:
//! - A batch is left open only while a write is queued for the writer thread (`pending` is
//!   counted before it is queued); that write extends the batch or commits it, and every other
//!   use of the connection ([`Writer::lock`]) commits it first, so an open batch always has a
//!   committer.
//! - A write that failed is rolled back to its savepoint; the others in its batch are unaffected.
//! - Every write of a batch, even one that failed or only read, answers only after the batch's
//!   outcome is known — what it saw in the batch was not yet committed — and a batch that fails to
//!   commit fails every write in it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use rusqlite::Connection;

use crate::Error;
use crate::durability::Durability;

/// Writes committed together at most. Smaller batches let the next batch form while the last
/// one's fsync runs; at 16 connections 8 measured best (1,938/s and 1,857/s against 1,919/s and
/// 1,753/s with 64, and about 1,000/s with no batching, in one run).
pub(crate) const MAX_JOBS: usize = 8;

/// How a batch ended: the durability ticket of its commit, or why it failed.
type Outcome = Result<u64, String>;

#[derive(Default)]
struct Slot {
    outcome: Mutex<Option<Outcome>>,
    cv: Condvar,
}

impl Slot {
    fn publish(&self, outcome: Outcome) {
        *self.outcome.lock().unwrap_or_else(PoisonError::into_inner) = Some(outcome);
        self.cv.notify_all();
    }

    fn wait(&self) -> Outcome {
        let mut o = self.outcome.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(r) = o.as_ref() {
                return r.clone();
            }
            o = self.cv.wait(o).unwrap_or_else(PoisonError::into_inner);
        }
    }
}

struct Open {
    slot: Arc<Slot>,
    jobs: usize,
}

/// The writing connection.
pub(crate) struct Writer {
    conn: Mutex<Connection>,
    /// The batch whose transaction is open on `conn`; changed only by the holder of `conn`.
    open: Mutex<Option<Open>>,
    /// Record writes handed to `thread` and not started there yet.
    pending: AtomicUsize,
    /// The one thread that runs every record write, one after another.
    thread: rayon_core::ThreadPool,
    durability: Arc<Durability>,
}

impl Writer {
    pub(crate) fn new(conn: Connection, durability: Arc<Durability>) -> Result<Writer, Error> {
        let thread = rayon_core::ThreadPoolBuilder::new()
            .num_threads(1)
            .thread_name(|_| "mamori-writer".into())
            .build()
            .map_err(|e| Error::Batch(format!("cannot start the writer thread: {e}")))?;
        Ok(Writer { conn: Mutex::new(conn), open: Mutex::new(None), pending: AtomicUsize::new(0), thread, durability })
    }

    /// The connection; `Err` when it was poisoned, after committing any batch left open so that
    /// no writer in it waits for ever.
    fn take(&self) -> Result<MutexGuard<'_, Connection>, Error> {
        self.conn.lock().map_err(|p| {
            self.close(&p.into_inner());
            Error::Poisoned
        })
    }

    fn open(&self) -> MutexGuard<'_, Option<Open>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Commits the open batch, if any, and tells its writers how it went.
    fn close(&self, conn: &Connection) {
        let Some(open) = self.open().take() else { return };
        let outcome = match conn.execute_batch("COMMIT") {
            Ok(()) => Ok(self.durability.committed(crate::audit_size(conn))),
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                tracing::error!(error = %e, "a batch of record writes failed to commit");
                Err(e.to_string())
            }
        };
        open.slot.publish(outcome);
    }

    /// The connection with no transaction open, for a use of its own (the caller commits and
    /// waits for durability itself).
    pub(crate) fn lock(&self) -> Result<MutexGuard<'_, Connection>, Error> {
        let g = self.take()?;
        self.close(&g);
        Ok(g)
    }

    /// Runs `f` as one write of a group-committed batch; returns once its batch is durable.
    /// `E` is the caller's error; `wrap` turns the store's own failures into it.
    pub(crate) fn write<E: Send>(
        &self,
        f: &mut (dyn FnMut(&Connection) -> Result<(), E> + Send),
        wrap: impl Fn(Error) -> E + Sync,
    ) -> Result<(), E> {
        // Counted before it is queued, so that the write running now leaves its batch open for it.
        self.pending.fetch_add(1, Ordering::SeqCst);
        let (result, slot) = self.thread.install(|| {
            self.pending.fetch_sub(1, Ordering::SeqCst);
            self.run(f, &wrap)
        })?;
        let ticket = slot.wait().map_err(|e| wrap(Error::Batch(e)))?;
        result?;
        self.durability.wait(ticket).map_err(wrap)
    }

    /// On the writer thread: `f` in a savepoint of the open batch (begun if none is); commits the
    /// batch unless another write is queued behind it and the batch has room. Returns `f`'s result
    /// and the batch's slot; `Err` when the batch could not even be joined, or was lost.
    fn run<E>(
        &self,
        f: &mut (dyn FnMut(&Connection) -> Result<(), E> + Send),
        wrap: &impl Fn(Error) -> E,
    ) -> Result<(Result<(), E>, Arc<Slot>), E> {
        let conn = self.take().map_err(wrap)?;
        let mut open = self.open();
        if open.is_none() {
            conn.execute_batch("BEGIN IMMEDIATE").map_err(|e| wrap(e.into()))?;
            *open = Some(Open { slot: Arc::default(), jobs: 0 });
        }
        let result = match conn.execute_batch("SAVEPOINT job") {
            Ok(()) => {
                let r = f(&conn);
                let end = if r.is_ok() { "RELEASE job" } else { "ROLLBACK TO job; RELEASE job" };
                match conn.execute_batch(end) {
                    Ok(()) => r,
                    Err(e) => Err(wrap(e.into())),
                }
            }
            Err(e) => Err(wrap(e.into())),
        };
        if conn.is_autocommit() {
            // SQLite rolled the whole transaction back (an I/O error, a full disk): the batch is
            // lost, and everyone in it must hear so.
            if let Some(o) = open.take() {
                o.slot.publish(Err("the batch's transaction was rolled back".into()));
            }
            return Err(result.err().unwrap_or_else(|| wrap(Error::Batch("transaction rolled back".into()))));
        }
        let Some(batch) = open.as_mut() else {
            return Err(wrap(Error::Batch("no open batch".into())));
        };
        batch.jobs += 1;
        let slot = batch.slot.clone();
        // A write queued behind this one runs next on this thread and extends the batch (or
        // commits it); the connection's other users commit it when they take the connection.
        let leave_open = self.pending.load(Ordering::SeqCst) > 0 && batch.jobs < MAX_JOBS;
        drop(open);
        if !leave_open {
            self.close(&conn);
        }
        Ok((result, slot))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn writer(dir: &std::path::Path) -> Arc<Writer> {
        let (path, audit) = (dir.join("t.db"), dir.join("a.db"));
        let c = Connection::open(&path).unwrap();
        c.pragma_update(None, "journal_mode", "WAL").unwrap();
        c.execute("ATTACH DATABASE ?1 AS audit", [audit.to_str().unwrap()]).unwrap();
        c.pragma_update(Some("audit"), "journal_mode", "WAL").unwrap();
        c.execute_batch("CREATE TABLE t (k INTEGER PRIMARY KEY); CREATE TABLE audit.a (k)").unwrap();
        let d = Arc::new(Durability::open(dir, &path, &audit, 0).unwrap());
        Arc::new(Writer::new(c, d).unwrap())
    }

    fn count(w: &Writer) -> i64 {
        w.lock().unwrap().query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0)).unwrap()
    }

    #[test]
    fn a_waiting_writer_joins_the_open_batch_and_commits_it() {
        let dir = tempfile::tempdir().unwrap();
        let w = writer(dir.path());
        let (w2, started) = (w.clone(), Arc::new(std::sync::Barrier::new(2)));
        let s2 = started.clone();
        let a = std::thread::spawn(move || {
            w2.write(
                &mut |c| {
                    s2.wait();
                    // Stay in the write until the other thread waits for the connection.
                    while w2.pending.load(Ordering::SeqCst) == 0 {
                        std::thread::yield_now();
                    }
                    c.execute("INSERT INTO t (k) VALUES (1)", [])?;
                    Ok(())
                },
                |e| e,
            )
        });
        started.wait();
        w.write(
            &mut |c| {
                c.execute("INSERT INTO t (k) VALUES (2)", [])?;
                Ok(())
            },
            |e| e,
        )
        .unwrap();
        a.join().unwrap().unwrap();
        assert_eq!(count(&w), 2);
        // Two writes, one commit.
        assert_eq!(w.durability.commits(), 1);
    }

    #[test]
    fn a_failed_write_leaves_nothing_and_spares_its_batch() {
        let dir = tempfile::tempdir().unwrap();
        let w = writer(dir.path());
        let threads: Vec<_> = (0..8i64)
            .map(|t| {
                let w = w.clone();
                std::thread::spawn(move || {
                    let mut ok = 0;
                    for i in 0..50i64 {
                        let k = t * 1000 + i;
                        let r = w.write(
                            &mut |c| {
                                c.execute("INSERT INTO t (k) VALUES (?1)", [k])?;
                                // Every tenth write fails after writing: its row must go.
                                if k % 10 == 3 { Err(Error::Batch("refused".into())) } else { Ok(()) }
                            },
                            |e| e,
                        );
                        match r {
                            Ok(()) => ok += 1,
                            Err(Error::Batch(m)) if m == "refused" => {}
                            Err(e) => panic!("unexpected failure: {e}"),
                        }
                    }
                    ok
                })
            })
            .collect();
        let ok: i64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(ok, 8 * 45);
        assert_eq!(count(&w), ok);
        let failed: i64 =
            w.lock().unwrap().query_row("SELECT COUNT(*) FROM t WHERE k % 10 = 3", [], |r| r.get(0)).unwrap();
        assert_eq!(failed, 0);
        // No transaction is left open, and the connection takes a write of its own.
        let c = w.lock().unwrap();
        assert!(c.is_autocommit());
    }
}
