//! Group commit: transactions commit to the WAL without fsync (`synchronous=NORMAL`); before a
//! write is acknowledged its committer waits here until an fsync of the WAL that started after
//! its commit has finished. Whoever arrives first while no fsync runs performs one for everyone
//! committed so far, so concurrent writers share one fsync.
//!
//! fsync acts on the file (inode), so syncing our own handle of `mamori.db-wal` flushes the pages
//! SQLite wrote through its handle.

use std::fs::File;
use std::path::Path;
use std::sync::{Condvar, Mutex};

use crate::Error;

#[derive(Default)]
struct State {
    committed: u64,
    synced: u64,
    syncing: bool,
}

pub(crate) struct Durability {
    wal: File,
    fsyncs: std::sync::atomic::AtomicU64,
    state: Mutex<State>,
    cv: Condvar,
}

impl Durability {
    pub(crate) fn open(dir: &Path, db: &Path) -> Result<Durability, Error> {
        let mut wal_path = db.as_os_str().to_owned();
        wal_path.push("-wal");
        let wal = std::fs::OpenOptions::new().read(true).write(true).open(&wal_path)?;
        // The WAL's directory entry must survive a power loss too.
        File::open(dir)?.sync_all()?;
        wal.sync_data()?;
        Ok(Durability {
            wal,
            fsyncs: std::sync::atomic::AtomicU64::new(0),
            state: Mutex::new(State::default()),
            cv: Condvar::new(),
        })
    }

    /// Records a commit that has just happened; returns its ticket.
    pub(crate) fn committed(&self) -> u64 {
        let mut s = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        s.committed += 1;
        s.committed
    }

    /// fsyncs performed so far.
    pub(crate) fn fsyncs(&self) -> u64 {
        self.fsyncs.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Commits recorded so far.
    pub(crate) fn commits(&self) -> u64 {
        self.state.lock().map(|s| s.committed).unwrap_or(0)
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
            let target = s.committed;
            drop(s);
            let r = self.wal.sync_data();
            self.fsyncs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            s = self.state.lock().map_err(|_| Error::Poisoned)?;
            s.syncing = false;
            if r.is_ok() {
                s.synced = s.synced.max(target);
            }
            self.cv.notify_all();
            r?;
        }
    }
}
