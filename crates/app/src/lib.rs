//! The application layer (issue #23): every administrative use case of Mamori, written once, for
//! every caller — the command line, the web console and background jobs.
//!
//! A use case is a function `(ctx, node, validated input) -> Result<output, AppError>`. It asks
//! the enforcement point ([`Ctx::authorize`], `mamori-access`) whether the caller may perform the
//! act, changes state through the one path for that state (the configuration path, the identity
//! service, the record service) and leaves its audit entry — the configuration path writes the
//! change and its entry in one transaction. Callers only parse, call and print.
//!
//! [`node`] is the composition root: it opens a data directory into the services every caller
//! shares.

pub mod approvals;
pub mod audit_trail;
pub mod audit_verify;
pub mod backend;
pub mod backup;
pub mod baseline;
pub mod class_rules;
pub mod clients;
pub mod clinical;
pub mod clock_sync;
pub mod config;
mod ctx;
pub mod emergency;
pub mod external;
pub mod import;
pub mod keys;
pub mod maintenance;
pub mod messages;
pub mod node;
pub mod policies;
pub mod reads;
pub mod registry;
pub mod retention;
pub mod reviews;
pub mod users;
pub mod vault;

pub use ctx::{AppError, Caller, Ctx};
pub use mamori_access::AdminAct;
pub use node::{Node, NodeError, open_node, open_node_on};
