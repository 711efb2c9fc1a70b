//! The audit trail's pure core (no I/O): RFC 9162 Merkle hashing and proofs, C2SP tlog-tiles
//! paths, C2SP signed-note checkpoints (Ed25519), and the audit record format.
//!
//! The writer (store adapters) and the independent verifier (`mamori audit verify`) share this
//! module and nothing else.

pub mod merkle;
pub mod note;
mod record;
pub mod tiles;

pub use record::{AuditActor, AuditRecord, Outcome};

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
