//! `mamori approvals …`: the two-person rule (C3, issue #25) on the command line — list the
//! change requests, show one with the value it would replace, approve it by its hash, refuse it,
//! withdraw your own. The use cases are `mamori_app::approvals`; this file parses, calls and
//! prints.

use std::process::ExitCode;

use clap::Subcommand;
use mamori_app::Ctx;
use mamori_app::approvals::{self, Request, State};

use crate::cli::{DataDir, reader};
use crate::fail::Fallible;

/// `mamori approvals` subcommands.
#[derive(Debug, Subcommand)]
pub enum ApprovalsCmd {
    /// Requests waiting for a second person (all of them with --all), newest first.
    List {
        #[command(flatten)]
        dir: DataDir,
        /// Include decided, withdrawn and expired requests.
        #[arg(long)]
        all: bool,
    },
    /// One request: the exact change, its sha256, and the value it would replace.
    Show {
        #[command(flatten)]
        dir: DataDir,
        /// The request's number.
        id: String,
    },
    /// Approve a request made by someone else; it is applied at once, exactly as requested.
    Approve {
        #[command(flatten)]
        dir: DataDir,
        /// The request's number.
        id: String,
        /// The sha256 `show` printed: you approve exactly that change.
        #[arg(long)]
        sha256: String,
        /// A note kept with the decision.
        #[arg(long, default_value = "")]
        note: String,
        /// Who approves.
        #[arg(long, env = "USER", default_value = "operator")]
        operator: String,
    },
    /// Refuse a request made by someone else.
    Refuse {
        #[command(flatten)]
        dir: DataDir,
        /// The request's number.
        id: String,
        /// Why (required).
        #[arg(long)]
        note: String,
        /// Who refuses.
        #[arg(long, env = "USER", default_value = "operator")]
        operator: String,
    },
    /// Withdraw your own pending request.
    Withdraw {
        #[command(flatten)]
        dir: DataDir,
        /// The request's number.
        id: String,
        /// Who withdraws (the requester).
        #[arg(long, env = "USER", default_value = "operator")]
        operator: String,
    },
}

fn micros(t: i64) -> String {
    mamori_records::Timestamp(t).to_fhir()
}

fn line(r: &Request) -> String {
    format!(
        "{}\t{}\t{}\t{}\texpires {}\t{}",
        r.id,
        r.state.name(),
        r.requested_by,
        micros(r.requested_at),
        micros(r.expires_at),
        r.summary
    )
}

/// Runs a `mamori approvals` subcommand.
pub fn run(c: ApprovalsCmd) -> Fallible<ExitCode> {
    match c {
        ApprovalsCmd::List { dir, all } => {
            let node = dir.open()?;
            let list = approvals::list(&Ctx::operator(&node, &reader()), &node)?;
            let shown: Vec<&Request> = list.iter().filter(|r| all || r.state == State::Pending).collect();
            for r in &shown {
                println!("{}", line(r));
            }
            if shown.is_empty() {
                println!("no change request{}", if all { "" } else { " is waiting" });
            }
            Ok(ExitCode::SUCCESS)
        }
        ApprovalsCmd::Show { dir, id } => {
            let node = dir.open()?;
            let (r, current) = approvals::show(&Ctx::operator(&node, &reader()), &node, &id)?;
            println!("{}", line(&r));
            println!("sha256 {}", r.sha256);
            if let Some(by) = &r.decided_by {
                println!(
                    "{} by {by} at {}{}",
                    r.state.name(),
                    r.decided_at.map(micros).unwrap_or_default(),
                    r.note.as_deref().map(|n| format!(": {n}")).unwrap_or_default()
                );
            }
            println!("change:\n{}", serde_json::to_string_pretty(&r.change)?);
            println!(
                "now:\n{}",
                current.map_or_else(|| "(none)".to_string(), |v| serde_json::to_string_pretty(&v).unwrap_or_default())
            );
            Ok(ExitCode::SUCCESS)
        }
        ApprovalsCmd::Approve { dir, id, sha256, note, operator } => {
            let node = dir.open()?;
            let r = approvals::approve(&Ctx::operator(&node, &operator), &node, &id, &sha256, &note)?;
            println!(
                "change request {} approved and applied (v{}): {}",
                r.id,
                r.applied_version.unwrap_or_default(),
                r.summary
            );
            Ok(ExitCode::SUCCESS)
        }
        ApprovalsCmd::Refuse { dir, id, note, operator } => {
            let node = dir.open()?;
            let r = approvals::refuse(&Ctx::operator(&node, &operator), &node, &id, &note)?;
            println!("change request {} refused", r.id);
            Ok(ExitCode::SUCCESS)
        }
        ApprovalsCmd::Withdraw { dir, id, operator } => {
            let node = dir.open()?;
            let r = approvals::withdraw(&Ctx::operator(&node, &operator), &node, &id)?;
            println!("change request {} withdrawn", r.id);
            Ok(ExitCode::SUCCESS)
        }
    }
}
