//! Mamori (守り): the program. Its command line parses flags, calls the application layer
//! (`mamori-app`, where every use case lives once) and prints; `serve` hands the node's services
//! to the HTTP edge. The binary's `main` only calls [`cli::main`].

pub mod alerts;
pub mod approvals_cli;
pub mod audit_export;
pub mod backup_cli;
pub mod baseline_cli;
pub mod cli;
pub mod fail;
pub mod import;
pub mod maintenance_cli;
pub mod policy_cli;
pub mod progress;
pub mod review_cli;
mod state;
pub mod user_cli;
pub mod vault_server;

pub use mamori_app::node as datadir;
pub use mamori_app::{Node, audit_verify, backend, clock_sync, config, open_node, open_node_on};
pub use state::{app_state, router};
