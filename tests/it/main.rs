//! Mamori's integration tests: one binary, modules by capability. Most drive the real router with
//! `oneshot`; `binary` starts the real `mamori` executable.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod access;
mod app;
mod approvals;
mod attack;
mod audit;
mod authenticity;
mod backup;
mod baseline;
mod binary;
mod bulk;
mod bundle;
mod classes;
mod clients;
mod clinosim;
mod console;
mod contract;
mod crud;
mod examples;
mod identity;
mod login;
mod maintenance;
mod nodes;
mod oauth;
mod operations;
mod search;
mod sessions;
mod smart;
mod support;
