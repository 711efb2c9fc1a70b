//! Clinical records (診療録等) as FHIR R4 resources: parsing and structural validation, immutable
//! versions with content hashes and server-written Provenance (真正性), the storage traits the
//! store adapters implement, and the record service that the HTTP edge and the CLI call.
//!
//! No I/O happens here: storage sits behind [`Store`], time behind [`Clock`].

mod audited;
pub mod bundle;
mod canonical;
mod care;
mod clock;
pub mod compartment;
mod context;
mod error;
pub mod ndjson;
pub mod patients;
pub mod primitive;
mod provenance;
pub mod search;
mod service;
mod store;
mod types;
pub mod validate;

pub use audited::{Audited, ReadAction, Reveals, read_entry};
pub use canonical::{canonical_json, content_hash};
pub use care::{care_links, is_lab};
pub use clock::{Clock, SystemClock, Timestamp};
pub use context::{Guard, GuardRef, OperatorGuard, RequestContext, Revealed};
pub use error::{Issue, IssueCode, RecordError, Severity};
pub use provenance::{Actor, ActorKind, ENTRY_STATUS_SYSTEM};
pub use service::{
    Condition, FsckReport, HistoryPage, Labeler, ParsedBody, Records, RetentionPolicy, WriteOutcome, parse_conditions,
    parse_resource,
};
pub use store::{
    BreakGlassGrant, CareLink, EntryStatus, HistoryQuery, IdentifierToken, IndexEntries, Method, Store, StoreError, Tx,
    VersionRecord,
};
pub use types::{ResourceId, ResourceType};
