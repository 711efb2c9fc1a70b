//! The audit trail's pure core (no I/O): RFC 9162 Merkle hashing and proofs, C2SP tlog-tiles
//! paths, C2SP signed-note checkpoints (Ed25519), and the audit record format.
//!
//! The writer (store adapters) and the independent verifier (`mamori audit verify`) share this
//! module and nothing else.

pub mod integrate;
pub mod merkle;
pub mod note;
mod record;
pub mod tiles;

pub use record::{ActorKind, AuditActor, AuditRecord, Outcome};

/// A SHA-256 hash.
pub type Hash = [u8; 32];

/// Why an audit operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A proof or tree request is out of range.
    #[error("{0}")]
    Range(String),
    /// A proof did not verify.
    #[error("proof does not verify: {0}")]
    BadProof(String),
    /// A note or key did not parse or verify.
    #[error("note: {0}")]
    Note(String),
    /// The hash source failed (storage).
    #[error("hash source: {0}")]
    Source(String),
}

/// Called with the outcome of an [`AuditLog::append_then`].
pub type AppendDone = Box<dyn FnOnce(Result<Vec<u64>, Error>) + Send>;

/// A stored entry: its leaf index and canonical JSON.
pub type StoredEntry = (u64, Vec<u8>);

/// Filters for reading entries back (FHIR view, export).
#[derive(Debug, Clone, Default)]
pub struct EntryQuery {
    /// Entries at or after this time (µs since the epoch).
    pub since: Option<i64>,
    /// Entries before this time (µs).
    pub until: Option<i64>,
    /// Entries naming this patient (`Patient/123`).
    pub patient: Option<String>,
    /// Entries by this actor id or `fhirUser`.
    pub agent: Option<String>,
    /// Entries with this action.
    pub action: Option<String>,
    /// Entries with this outcome.
    pub outcome: Option<Outcome>,
    /// Entries whose action starts with this (`alert-`).
    pub action_prefix: Option<String>,
    /// First leaf index to consider (paging, oldest first).
    pub from_index: u64,
    /// Newest first: entries with a leaf index below `before_index` (all when `None`), going
    /// back in time; `from_index` is then ignored.
    pub newest_first: bool,
    /// See `newest_first`.
    pub before_index: Option<u64>,
    /// At most this many.
    pub limit: usize,
    /// At most this many entries are looked at before the answer is returned (0: no bound), so a
    /// search over a long trail answers in bounded time; [`AuditLog::query_page`] tells the
    /// caller where to continue.
    pub scan_limit: usize,
}

impl EntryQuery {
    /// Whether a stored entry matches the query's content filters (patient, agent, action).
    pub fn matches(&self, entry: &[u8]) -> bool {
        if self.patient.is_none()
            && self.agent.is_none()
            && self.action.is_none()
            && self.outcome.is_none()
            && self.action_prefix.is_none()
        {
            return true;
        }
        let Ok(r) = serde_json::from_slice::<AuditRecord>(entry) else { return false };
        self.patient.as_ref().is_none_or(|p| r.patients.iter().any(|x| x == p))
            && self.agent.as_ref().is_none_or(|a| {
                r.actor.id == *a || r.actor.fhir_user.as_ref() == Some(a) || r.actor.client_id.as_ref() == Some(a)
            })
            && self.action.as_ref().is_none_or(|a| r.action == *a)
            && self.action_prefix.as_ref().is_none_or(|a| r.action.starts_with(a.as_str()))
            && self.outcome.is_none_or(|o| r.outcome == o)
    }
}

/// The audit log as the rest of the system sees it. The store adapters implement it.
///
/// INVARIANT: `append` returns only after the entries are durable; their indexes are final.
pub trait AuditLog: Send + Sync {
    /// Appends records (their `time` is set by the log, never going backwards) and returns their
    /// leaf indexes once durable: [`AuditLog::append_then`], waited for on this thread.
    fn append(&self, records: Vec<AuditRecord>) -> Result<Vec<u64>, Error> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.append_then(
            records,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        rx.recv().map_err(|_| Error::Source("the audit writer stopped".into()))?
    }
    /// Like [`AuditLog::append`], but returns at once; `done` is called once the entries are
    /// durable (or failed). Lets async callers wait without parking a thread.
    fn append_then(&self, records: Vec<AuditRecord>, done: AppendDone);
    /// Entries `[start, start + count)` by leaf index.
    fn entries(&self, start: u64, count: u64) -> Result<Vec<Vec<u8>>, Error>;
    /// Entries matching a query, in log order (newest first when the query says so).
    fn query(&self, q: &EntryQuery) -> Result<Vec<StoredEntry>, Error> {
        Ok(self.query_page(q)?.0)
    }
    /// As [`AuditLog::query`], and when the query's `scan_limit` stopped the scan before the
    /// end, the leaf index to continue from: the next `from_index`, or when newest first the
    /// next `before_index`.
    fn query_page(&self, q: &EntryQuery) -> Result<(Vec<StoredEntry>, Option<u64>), Error>;
    /// The latest alert entries (`alert-…`), newest first.
    fn recent_alerts(&self, limit: usize) -> Result<Vec<StoredEntry>, Error>;
    /// The hashes of one stored tile (empty if none).
    fn tile(&self, level: u8, index: u64) -> Result<Vec<Hash>, Error>;
    /// The newest signed checkpoint note, if any.
    fn latest_checkpoint(&self) -> Result<Option<String>, Error>;
    /// Every stored checkpoint note, oldest first.
    fn checkpoints(&self) -> Result<Vec<String>, Error>;
    /// Integrates appended entries into the tree and, if it grew, signs and stores a checkpoint;
    /// returns the new checkpoint note.
    fn integrate(&self, signer: &note::NoteSigner, origin: &str) -> Result<Option<String>, Error>;
}
