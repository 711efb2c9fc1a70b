//! `mamori baseline …`: the approved configuration baseline (C2, issue #25) — show it, compare
//! the state now with it, approve the state now. The use cases are `mamori_app::baseline`; this
//! file parses, calls and prints.

use std::process::ExitCode;

use clap::Subcommand;
use mamori_app::Ctx;
use mamori_app::baseline;

use crate::cli::{DataDir, reader};
use crate::fail::Fallible;

/// `mamori baseline` subcommands.
#[derive(Debug, Subcommand)]
pub enum BaselineCmd {
    /// Show the approved baseline: who approved it, when, why, and every item with its hash.
    Show(DataDir),
    /// Compare the state now with the approved baseline; exits 1 on any difference (or a
    /// baseline whose signature does not verify), 2 when none was approved.
    Diff(DataDir),
    /// Approve the state now as the baseline (signed with the node's key, anchored in the audit
    /// trail).
    Approve {
        #[command(flatten)]
        dir: DataDir,
        /// Why (required).
        #[arg(long)]
        reason: String,
        /// Who approves.
        #[arg(long, env = "USER", default_value = "operator")]
        operator: String,
    },
    /// End a change made around the configuration path (`diff` lists them as TAMPERED): write
    /// the last value the path wrote back as a new version. Lifts its block.
    Revert {
        #[command(flatten)]
        dir: DataDir,
        /// The entry, KIND/KEY (e.g. policies/active, client/app1).
        item: String,
        /// Why (required).
        #[arg(long)]
        reason: String,
        /// Who reverts.
        #[arg(long, env = "USER", default_value = "operator")]
        operator: String,
    },
    /// Accept a change made around the configuration path as intended: its value is checked and
    /// written through the path as a new, sealed version. Lifts its block.
    Accept {
        #[command(flatten)]
        dir: DataDir,
        /// The entry, KIND/KEY.
        item: String,
        /// Why (required).
        #[arg(long)]
        reason: String,
        /// Who accepts.
        #[arg(long, env = "USER", default_value = "operator")]
        operator: String,
    },
}

fn micros(t: i64) -> String {
    mamori_records::Timestamp(t).to_fhir()
}

/// Runs a `mamori baseline` subcommand.
pub fn run(c: BaselineCmd) -> Fallible<ExitCode> {
    match c {
        BaselineCmd::Show(dir) => {
            let node = dir.open()?;
            match baseline::current(&Ctx::operator(&node, &reader()), &node)? {
                None => {
                    println!("no baseline approved yet (mamori baseline approve --reason …)");
                    Ok(ExitCode::from(2))
                }
                Some(a) => {
                    println!(
                        "baseline v{} approved by {} at {}: {}\nnote sha256 {}",
                        a.version,
                        a.by,
                        micros(a.at_micros),
                        a.reason,
                        a.note_sha256
                    );
                    for (item, hash) in &a.state {
                        println!("{item} {hash}");
                    }
                    Ok(ExitCode::SUCCESS)
                }
            }
        }
        BaselineCmd::Diff(dir) => {
            let node = dir.open()?;
            let tampered = baseline::tampered(&node)?;
            for (item, how) in &tampered {
                println!("TAMPERED {item} ({how})");
            }
            let diff = baseline::diff(&Ctx::operator(&node, &reader()), &node)?;
            for x in diff.iter().flatten() {
                println!("DRIFT {x}");
            }
            let drift = diff.as_ref().map_or(0, Vec::len);
            if diff.is_none() {
                println!("no baseline approved yet (mamori baseline approve --reason …)");
            }
            if tampered.is_empty() && drift == 0 {
                if diff.is_none() {
                    return Ok(ExitCode::from(2));
                }
                println!("baseline: no difference");
                return Ok(ExitCode::SUCCESS);
            }
            println!("baseline: {} change(s) around the configuration path, {drift} difference(s)", tampered.len());
            Ok(ExitCode::from(1))
        }
        BaselineCmd::Revert { dir, item, reason, operator } => {
            let node = dir.open()?;
            let v = baseline::revert(&Ctx::operator(&node, &operator), &node, &item, &reason)?;
            println!("{item}: reverted as v{v} (a running server lifts its block at its next check)");
            Ok(ExitCode::SUCCESS)
        }
        BaselineCmd::Accept { dir, item, reason, operator } => {
            let node = dir.open()?;
            let v = baseline::accept(&Ctx::operator(&node, &operator), &node, &item, &reason)?;
            println!("{item}: accepted as v{v} (a running server lifts its block at its next check)");
            Ok(ExitCode::SUCCESS)
        }
        BaselineCmd::Approve { dir, reason, operator } => {
            let node = dir.open()?;
            let a = baseline::approve(&Ctx::operator(&node, &operator), &node, &reason)?;
            println!(
                "baseline v{} approved: {} items, note sha256 {} (anchored in the audit trail)",
                a.version,
                a.state.len(),
                a.note_sha256
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
