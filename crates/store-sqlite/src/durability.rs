//! Group commit: transactions commit to the WAL without fsync (`synchronous=NORMAL`); before a
//! write is acknowledged its committer waits here until an fsync of the WALs that started after
//! its commit has finished. Whoever arrives first while no fsync runs performs one for everyone
//! committed so far, so concurrent writers share one fsync.
//!
//! There are two WALs: `mamori.db-wal` (records, configuration, identity) and `audit.db-wal`
//! (the audit trail, schema step 9). Every fsync covers both, so a commit is durable in
//! whichever file it wrote. fsync acts on the file (inode), so syncing our own handles flushes
//! the pages SQLite wrote through its handles.
//!
//! Each commit also reports the audit trail's size right after it; once an fsync that began
//! after that commit has finished, every entry up to that size is durable in `audit.db`
//! ([`Durability::audit_durable`]): the copies kept beside changes (`audit_pending`) up to it
//! may go.

use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};

use crate::Error;

#[derive(Default)]
struct State {
    committed: u64,
    synced: u64,
    syncing: bool,
    /// The audit trail's size as read after the latest commit.
    audit_committed: u64,
}

pub(crate) struct Durability {
    wals: [File; 2],
    fsyncs: AtomicU64,
    audit_durable: AtomicU64,
    state: Mutex<State>,
    cv: Condvar,
}

fn wal_of(db: &Path) -> Result<File, Error> {
    let mut wal_path = db.as_os_str().to_owned();
    wal_path.push("-wal");
    Ok(std::fs::OpenOptions::new().read(true).write(true).open(&wal_path)?)
}

impl Durability {
    /// The WALs of `db` and `audit` (both in `dir`), synced once; `audit_size` is the trail's
    /// size read before (durable after this).
    pub(crate) fn open(dir: &Path, db: &Path, audit: &Path, audit_size: u64) -> Result<Durability, Error> {
        let wals = [wal_of(db)?, wal_of(audit)?];
        // The WALs' directory entries must survive a power loss too.
        File::open(dir)?.sync_all()?;
        for w in &wals {
            w.sync_data()?;
        }
        Ok(Durability {
            wals,
            fsyncs: AtomicU64::new(0),
            audit_durable: AtomicU64::new(audit_size),
            state: Mutex::new(State::default()),
            cv: Condvar::new(),
        })
    }

    /// Records a commit that has just happened, after which the audit trail holds `audit_size`
    /// entries; returns its ticket.
    pub(crate) fn committed(&self, audit_size: u64) -> u64 {
        let mut s = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        s.committed += 1;
        s.audit_committed = s.audit_committed.max(audit_size);
        s.committed
    }

    /// fsyncs performed so far.
    pub(crate) fn fsyncs(&self) -> u64 {
        self.fsyncs.load(Ordering::Relaxed)
    }

    /// Commits recorded so far.
    pub(crate) fn commits(&self) -> u64 {
        self.state.lock().map(|s| s.committed).unwrap_or(0)
    }

    /// The audit trail's size known durable in `audit.db`.
    pub(crate) fn audit_durable(&self) -> u64 {
        self.audit_durable.load(Ordering::Acquire)
    }

    /// Syncs the two WALs at the same time: one after the other, a write's wait was the sum of
    /// two fsyncs, and with it the group commit's cycle (record writes at 16 connections were
    /// ~15 % slower than with one file).
    fn sync_both(&self) -> std::io::Result<()> {
        let [records, audit] = &self.wals;
        std::thread::scope(|s| {
            let other = s.spawn(|| audit.sync_data());
            let mine = records.sync_data();
            let other = other.join().unwrap_or_else(|_| Err(std::io::Error::other("the fsync thread panicked")));
            mine.and(other)
        })
    }

    /// Returns once every commit up to `ticket` is on disk.
    pub(crate) fn wait(&self, ticket: u64) -> Result<(), Error> {
        let mut s = self.state.lock().map_err(|_| Error::Poisoned)?;
        loop {
            if s.synced >= ticket {
                return Ok(());
            }
            if s.syncing {
                s = self.cv.wait(s).map_err(|_| Error::Poisoned)?;
                continue;
            }
            s.syncing = true;
            let (target, audit) = (s.committed, s.audit_committed);
            drop(s);
            let r = self.sync_both();
            self.fsyncs.fetch_add(1, Ordering::Relaxed);
            s = self.state.lock().map_err(|_| Error::Poisoned)?;
            s.syncing = false;
            if r.is_ok() {
                s.synced = s.synced.max(target);
                self.audit_durable.fetch_max(audit, Ordering::AcqRel);
            }
            self.cv.notify_all();
            r?;
        }
    }
}
