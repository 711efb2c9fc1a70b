//! `mamori baseline …`: the approved configuration baseline (C2, issue #25) — show it, compare
//! the state now with it, approve the state now. The use cases are `mamori_app::baseline`; this
//! file parses, calls and prints.

use std::process::ExitCode;

use clap::Subcommand;
use mamori_app::Ctx;
use mamori_app::{baseline, external};

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
    /// Another system's exported settings as a baseline of their own (C4): register, check a
    /// later export against it (exit 1 on drift), list, show the recorded checks.
    #[command(subcommand)]
    External(ExternalCmd),
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

/// `mamori baseline external` subcommands.
#[derive(Debug, Subcommand)]
pub enum ExternalCmd {
    /// Register (or replace) NAME's approved settings from an exported JSON file. High-risk:
    /// held for a second person's approval (exit 3) where one exists.
    Add {
        #[command(flatten)]
        dir: DataDir,
        /// The name (a–z 0–9 . _ -), e.g. `m365-tenant`.
        name: String,
        /// The exported settings (JSON).
        #[arg(long)]
        file: std::path::PathBuf,
        /// Applications (client ids) that may post checks over HTTP (repeatable).
        #[arg(long = "client")]
        clients: Vec<String>,
        /// Why (required).
        #[arg(long)]
        reason: String,
        /// Who registers.
        #[arg(long, env = "USER", default_value = "operator")]
        operator: String,
    },
    /// Compare a later export with NAME's approved settings: every changed, added and removed
    /// field by JSON Pointer; exit 1 on drift. The check is recorded and a drift alerted.
    Check {
        #[command(flatten)]
        dir: DataDir,
        /// The name.
        name: String,
        /// The current export (JSON).
        #[arg(long)]
        file: std::path::PathBuf,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
        /// Who checks.
        #[arg(long, env = "USER", default_value = "operator")]
        operator: String,
    },
    /// The registered external baselines.
    List(DataDir),
    /// NAME's recorded checks, newest first.
    Checks {
        #[command(flatten)]
        dir: DataDir,
        /// The name.
        name: String,
    },
}

fn read_settings(file: &std::path::Path) -> Fallible<serde_json::Value> {
    let meta = std::fs::metadata(file).map_err(crate::fail::context(format!("cannot read `{}`", file.display())))?;
    if meta.len() > 64 * 1024 * 1024 {
        return Err(format!("`{}` is larger than 64 MiB", file.display()).into());
    }
    let text =
        std::fs::read_to_string(file).map_err(crate::fail::context(format!("cannot read `{}`", file.display())))?;
    Ok(external::parse(&text)?)
}

fn show_value(v: Option<&serde_json::Value>) -> String {
    v.map_or_else(
        || "-".to_string(),
        |v| {
            let s = v.to_string();
            if s.chars().count() > 80 { format!("{}…", s.chars().take(80).collect::<String>()) } else { s }
        },
    )
}

fn run_external(c: ExternalCmd) -> Fallible<ExitCode> {
    match c {
        ExternalCmd::Add { dir, name, file, clients, reason, operator } => {
            let settings = read_settings(&file)?;
            let node = dir.open()?;
            let v = external::add(&Ctx::operator(&node, &operator), &node, &name, settings, clients, &reason)?;
            println!("external settings `{name}` registered as v{v} (signed; its hash is in the audit trail)");
            Ok(ExitCode::SUCCESS)
        }
        ExternalCmd::Check { dir, name, file, json, operator } => {
            let current = read_settings(&file)?;
            let node = dir.open()?;
            let c = external::check(&Ctx::operator(&node, &operator), &node, &name, &current)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&c)?);
            } else {
                for d in &c.changed {
                    println!(
                        "CHANGED {} {} -> {}",
                        d.path,
                        show_value(d.approved.as_ref()),
                        show_value(d.now.as_ref())
                    );
                }
                for d in &c.added {
                    println!("ADDED {} {}", d.path, show_value(d.now.as_ref()));
                }
                for d in &c.removed {
                    println!("REMOVED {} {}", d.path, show_value(d.approved.as_ref()));
                }
                println!(
                    "external settings `{name}` (v{}): {} changed, {} added, {} removed",
                    c.baseline_version,
                    c.changed.len(),
                    c.added.len(),
                    c.removed.len()
                );
            }
            Ok(if c.drift() { ExitCode::from(1) } else { ExitCode::SUCCESS })
        }
        ExternalCmd::List(dir) => {
            let node = dir.open()?;
            let list = external::list(&Ctx::operator(&node, &reader()), &node)?;
            if list.is_empty() {
                println!("no external settings registered");
            }
            for (x, v, by, at) in list {
                println!("{}	v{v}	{}	{by}	{}	clients: {}", x.name, x.sha256, micros(at), x.clients.join(","));
            }
            Ok(ExitCode::SUCCESS)
        }
        ExternalCmd::Checks { dir, name } => {
            let node = dir.open()?;
            for r in external::checks(&Ctx::operator(&node, &reader()), &node, &name)? {
                println!(
                    "{}	{}	v{}	{} changed, {} added, {} removed	{}",
                    micros(r.at),
                    r.by,
                    r.baseline_version,
                    r.counts[0],
                    r.counts[1],
                    r.counts[2],
                    r.sha256
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn micros(t: i64) -> String {
    mamori_records::Timestamp(t).to_fhir()
}

/// Runs a `mamori baseline` subcommand.
pub fn run(c: BaselineCmd) -> Fallible<ExitCode> {
    match c {
        BaselineCmd::External(c) => run_external(c),
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
