//! Mamori (守り): assembly of the domain crates, the stores and the HTTP edge into one program,
//! and its command line. The binary's `main` only calls [`cli::main`].

pub mod backend;
pub mod cli;
pub mod clock_sync;
pub mod config;
pub mod datadir;
pub mod export;
pub mod import;
pub mod policy_cli;
pub mod review;
pub mod user_cli;
pub mod verify;

pub use datadir::{Node, open_node, open_node_on};
