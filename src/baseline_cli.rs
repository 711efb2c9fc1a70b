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
            match baseline::diff(&Ctx::operator(&node, &reader()), &node)? {
                None => {
                    println!("no baseline approved yet (mamori baseline approve --reason …)");
                    Ok(ExitCode::from(2))
                }
                Some(d) if d.is_empty() => {
                    println!("baseline: no difference");
                    Ok(ExitCode::SUCCESS)
                }
                Some(d) => {
                    for x in &d {
                        println!("DRIFT {x}");
                    }
                    println!("baseline: {} difference(s)", d.len());
                    Ok(ExitCode::from(1))
                }
            }
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
