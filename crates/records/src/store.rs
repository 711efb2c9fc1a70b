//! What the record service needs from storage. Adapters (SQLite, PostgreSQL) implement these.
//!
//! INVARIANT: a version, its index entries and its Provenance are written in one [`Store::write`]
//! transaction; if any part fails, none is visible.

use std::sync::Arc;

use crate::{RecordError, ResourceId, ResourceType, Timestamp};

/// A storage failure: what happened, and a description for the log (never shown to clients).
/// The edge answers [`StoreError::Busy`] and [`StoreError::Unavailable`] with 503 and
/// `Retry-After` (the client may retry; nothing was changed), the others with 500.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A lock or the writer could not be had in time (SQLite busy, a PostgreSQL lock or statement
    /// timeout, a serialization failure, a full connection pool): retrying shortly may succeed.
    #[error("store busy: {0}")]
    Busy(String),
    /// The store cannot be reached or cannot make a write durable (connection lost, disk full,
    /// fsync failed).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A stored value does not decode: the store needs `fsck` or a restore.
    #[error("corrupt stored value: {0}")]
    Corrupt(String),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

impl StoreError {
    /// A failure with no more specific kind.
    pub fn other(message: impl Into<String>) -> StoreError {
        StoreError::Other(message.into())
    }

    /// Whether the same request may succeed if retried shortly (503 rather than 500).
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Busy(_) | StoreError::Unavailable(_))
    }
}

/// How a version came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Created.
    Create,
    /// Replaced by an update.
    Update,
    /// Changed by a JSON Patch.
    Patch,
    /// Logically deleted.
    Delete,
    /// Finalised (確定) by its author after proxy entry.
    Approve,
}

impl Method {
    /// Stored and shown name.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Create => "create",
            Method::Update => "update",
            Method::Patch => "patch",
            Method::Delete => "delete",
            Method::Approve => "approve",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Method> {
        Some(match s {
            "create" => Method::Create,
            "update" => Method::Update,
            "patch" => Method::Patch,
            "delete" => Method::Delete,
            "approve" => Method::Approve,
            _ => return None,
        })
    }
}

/// Whether a version is final or awaits its author's approval (代行入力).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryStatus {
    /// Final: entered by its author, or approved.
    Final,
    /// Entered on behalf of `author` (a reference such as `Practitioner/123`), awaiting approval.
    Pending {
        /// Who must approve.
        author: String,
    },
}

/// One immutable stored version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionRecord {
    /// The FHIR resource type.
    pub resource_type: ResourceType,
    /// Logical id.
    pub id: ResourceId,
    /// Version, from 1.
    pub version: u64,
    /// Server time of the write (never going backwards).
    pub last_updated: Timestamp,
    /// How the version came to be.
    pub method: Method,
    /// The JSON as stored (with `meta`); `None` for a deletion.
    pub body: Option<Arc<str>>,
    /// SHA-256 of the canonical form of `body` (of `null` for a deletion).
    pub content_sha256: [u8; 32],
    /// Who entered it (入力者), as a reference or `client:ID` / `user:NAME`.
    pub entered_by: String,
    /// Final or pending.
    pub status: EntryStatus,
    /// Written by the server itself (its own Provenance); clients may not change it.
    pub server_written: bool,
    /// The patient the version is about (`Patient/123`), if any: for the audit trail and the
    /// care-relationship check.
    pub patient: Option<String>,
    /// Its information classes (情報区分), as labelled in `meta.security` (a deletion keeps
    /// those of the version it deletes; a Provenance those of its target).
    pub classes: Vec<String>,
    /// A laboratory result (Observation / DiagnosticReport of category laboratory).
    pub lab: bool,
}

impl VersionRecord {
    /// Whether this version is a deletion.
    pub fn is_deleted(&self) -> bool {
        self.method == Method::Delete
    }
}

/// An `identifier` token of the current version, kept for conditional interactions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentifierToken {
    /// `Identifier.system`, if any.
    pub system: Option<String>,
    /// `Identifier.value`.
    pub value: String,
}

/// A care relationship (Z3) a version establishes: `member` (a Practitioner or PractitionerRole
/// reference) cares for `patient`. From active CareTeams, in-progress Encounters and
/// `Patient.generalPractitioner`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CareLink {
    /// `Patient/id`.
    pub patient: String,
    /// `Practitioner/id` or `PractitionerRole/id`.
    pub member: String,
}

/// The index entries of a version, replaced with every write of the resource in the same
/// transaction.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IndexEntries {
    /// `identifier` tokens (conditional interactions).
    pub identifiers: Vec<IdentifierToken>,
    /// Care relationships.
    pub care: Vec<CareLink>,
    /// Search index rows ([`crate::search`]).
    pub search: Vec<crate::search::SearchRow>,
}

/// A break-glass (非常時) grant (Z5): `username` may use their role's rights on `patient` without
/// a care relationship until `expires`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakGlassGrant {
    /// Grant id.
    pub id: String,
    /// The user.
    pub username: String,
    /// `Patient/id`.
    pub patient: String,
    /// Why (required).
    pub reason: String,
    /// When granted.
    pub granted: Timestamp,
    /// Until when.
    pub expires: Timestamp,
    /// When the security manager closed its review, by whom and with what note.
    pub review: Option<(Timestamp, String, String)>,
}

/// Which versions a history asks for, newest first.
#[derive(Debug, Clone, Default)]
pub struct HistoryQuery {
    /// Restrict to one type.
    pub resource_type: Option<ResourceType>,
    /// Restrict to one resource (needs `resource_type`).
    pub id: Option<ResourceId>,
    /// Only versions written at or after this time (`_since`).
    pub since: Option<Timestamp>,
    /// Only versions written at or before this time (`_at`).
    pub before: Option<Timestamp>,
    /// Page size.
    pub count: usize,
    /// Versions to skip (paging).
    pub offset: usize,
}

/// Reads and writes inside one transaction.
pub trait Tx {
    /// The newest version of a resource, deleted or not.
    fn current(&mut self, rt: &ResourceType, id: &ResourceId) -> Result<Option<VersionRecord>, StoreError>;
    /// [`Tx::current`] of several resources of one type, in the order asked: a store may read
    /// them in one statement (a search page's candidates; on PostgreSQL each statement is a
    /// round trip).
    fn current_many(
        &mut self,
        rt: &ResourceType,
        ids: &[ResourceId],
    ) -> Result<Vec<Option<VersionRecord>>, StoreError> {
        ids.iter().map(|id| self.current(rt, id)).collect()
    }
    /// One version.
    fn version(
        &mut self,
        rt: &ResourceType,
        id: &ResourceId,
        version: u64,
    ) -> Result<Option<VersionRecord>, StoreError>;
    /// A page of history, newest first, and the total count of matching versions.
    fn history(&mut self, q: &HistoryQuery) -> Result<(Vec<VersionRecord>, u64), StoreError>;
    /// Current, not deleted resources of a type having an identifier (`system` `None` = any system).
    fn find_by_identifier(
        &mut self,
        rt: &ResourceType,
        system: Option<&str>,
        value: &str,
    ) -> Result<Vec<ResourceId>, StoreError>;
    /// The latest timestamp ever stored, so time never goes backwards across restarts and processes.
    fn latest_timestamp(&mut self) -> Result<Option<Timestamp>, StoreError>;
    /// Appends a version and makes it current, replacing the resource's index entries.
    /// Fails if that version number already exists.
    fn put(&mut self, v: &VersionRecord, index: &IndexEntries) -> Result<(), StoreError>;
    /// Whether `member` has a care relationship with `patient` (current, live versions only).
    fn in_care(&mut self, patient: &str, member: &str) -> Result<bool, StoreError>;
    /// Whether an unexpired break-glass grant covers `username` and `patient` at `now`.
    fn break_glass_active(&mut self, username: &str, patient: &str, now: Timestamp) -> Result<bool, StoreError>;
    /// Records a break-glass grant.
    fn add_break_glass(&mut self, g: &BreakGlassGrant) -> Result<(), StoreError>;
    /// Break-glass grants, newest first; `open_only` = those whose review is not closed.
    fn break_glass_grants(&mut self, open_only: bool) -> Result<Vec<BreakGlassGrant>, StoreError>;
    /// Closes the review of a grant; `false` if there is no such open grant.
    fn close_break_glass(&mut self, id: &str, by: &str, note: &str, at: Timestamp) -> Result<bool, StoreError>;
    /// Visits every stored version (for `fsck`); stop early by returning `false`.
    fn for_each_version(&mut self, f: &mut dyn FnMut(&VersionRecord) -> bool) -> Result<(), StoreError>;
    /// Removes every version of a resource; returns how many were removed.
    fn purge(&mut self, rt: &ResourceType, id: &ResourceId) -> Result<u64, StoreError>;
    /// Search: matching current, live resources in the query's order from its cursor, at most
    /// `limit`. No access check: the record service passes each through the guard.
    fn search(&mut self, q: &crate::search::SearchQuery, limit: usize) -> Result<Vec<crate::search::Hit>, StoreError>;
    /// How many current, live resources match (no access check).
    fn search_count(&mut self, q: &crate::search::SearchQuery) -> Result<u64, StoreError>;
    /// Local references a resource's current version makes through `param` (any reference
    /// parameter when `None`): `(target type, target id)`.
    fn references_from(
        &mut self,
        rt: &ResourceType,
        id: &ResourceId,
        param: Option<&str>,
    ) -> Result<Vec<(String, String)>, StoreError>;
    /// [`Tx::references_from`] of several resources of one type through one parameter, in the
    /// order asked: a store may read them in one statement (a search page's candidates checked
    /// against a chain; on PostgreSQL each statement is a round trip).
    fn references_from_many(
        &mut self,
        rt: &ResourceType,
        ids: &[ResourceId],
        param: &str,
    ) -> Result<Vec<Vec<(String, String)>>, StoreError> {
        ids.iter().map(|id| self.references_from(rt, id, Some(param))).collect()
    }
    /// Ids of current resources of type `source` referring to `target_type/target_id` through
    /// `param` (any when `None`).
    fn references_to(
        &mut self,
        source: &str,
        param: Option<&str>,
        target_type: &str,
        target_id: &str,
    ) -> Result<Vec<String>, StoreError>;
    /// Replaces a resource's index entries (used when the index format changes).
    fn replace_index(&mut self, rt: &ResourceType, id: &ResourceId, index: &IndexEntries) -> Result<(), StoreError>;
    /// Visits the current, live version of every resource; stop early by returning `false`.
    fn for_each_current(&mut self, f: &mut dyn FnMut(&VersionRecord) -> bool) -> Result<(), StoreError>;
    /// The version of the index format the stored index entries were built with.
    fn index_version(&mut self) -> Result<Option<String>, StoreError>;
    /// Records the index format version.
    fn set_index_version(&mut self, v: &str) -> Result<(), StoreError>;
    /// Appends an audit record in this transaction (its time is set by the log); returns its
    /// leaf index. The write and its audit entry commit together or not at all.
    fn append_audit(&mut self, record: mamori_audit::AuditRecord) -> Result<u64, StoreError>;
}

/// A transactional store.
pub trait Store: Send + Sync {
    /// Runs `f` once in a serialisable write transaction; commits when it returns `Ok` and
    /// returns only once the commit is durable. (A store may commit several writers' `f`s in one
    /// transaction — each in its own savepoint — but each sees the others' writes only in order
    /// and answers only once they are all durable.) `f` is `Send`: a store may run it on a writer
    /// thread of its own while the caller waits.
    fn write(&self, f: &mut (dyn FnMut(&mut dyn Tx) -> Result<(), RecordError> + Send)) -> Result<(), RecordError>;
    /// Runs `f` on a consistent read snapshot.
    fn read(&self, f: &mut dyn FnMut(&mut dyn Tx) -> Result<(), RecordError>) -> Result<(), RecordError>;
}
