//! `mamori policy …`: the access policies on the command line — show, test, set, explain. The
//! use cases are `mamori_app::policies`; this file parses, calls and prints.

use crate::fail::{Fallible, context};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use mamori_app::Ctx;
use mamori_app::policies::{self, Question, Table};
use mamori_authz::Act;

use crate::cli::{DataDir, reader};

/// `mamori policy` subcommands.
#[derive(Debug, Subcommand)]
pub enum PolicyCmd {
    /// Print the access policies in force (Cedar), or the shipped ones with --default.
    Show {
        #[command(flatten)]
        dir: DataDir,
        /// Print the shipped policies instead.
        #[arg(long)]
        default: bool,
    },
    /// Print the Cedar schema policies are checked against.
    Schema,
    /// Replace the policies from a Cedar file: checked against the schema, optionally against a
    /// table of expected decisions, then stored through the audited configuration path. A
    /// running server applies them within a second.
    Set {
        #[command(flatten)]
        dir: DataDir,
        /// The policy file (Cedar).
        file: PathBuf,
        /// A table of expected decisions (TOML, see `policy test`) the policies must pass first.
        #[arg(long)]
        test: Option<PathBuf>,
        /// Why (recorded with the change).
        #[arg(long)]
        reason: String,
        /// Who.
        #[arg(long, env = "USER", default_value = "operator")]
        operator: String,
    },
    /// Explain one decision: the outcome and the policies behind it.
    Explain {
        #[command(flatten)]
        dir: DataDir,
        /// The account.
        #[arg(long)]
        user: String,
        /// read, search, create, update, delete or execute.
        #[arg(long)]
        action: String,
        /// `Type/id` (a stored record) or `Type` (a type-level decision, e.g. before a search).
        #[arg(long)]
        resource: String,
        /// For `execute`: the operation (approve, break-glass, …).
        #[arg(long, default_value = "")]
        operation: String,
        /// Decide with these policies (Cedar file) instead of those in force.
        #[arg(long)]
        policies: Option<PathBuf>,
        /// Who asks (reading the record for its classes is audited in this name).
        #[arg(long, env = "USER", default_value = "operator")]
        operator: String,
    },
    /// Check policies (those in force, or --policies FILE) against a table of expected
    /// decisions; exit 1 if any differs.
    Test {
        #[command(flatten)]
        dir: DataDir,
        /// The table (TOML: [[case]] entries).
        file: PathBuf,
        /// A proposed policy file (Cedar) to test instead of the policies in force.
        #[arg(long)]
        policies: Option<PathBuf>,
    },
}

fn read(path: &PathBuf) -> Fallible<String> {
    std::fs::read_to_string(path).map_err(context(format!("cannot read `{}`", path.display())))
}

fn load_table(path: &PathBuf) -> Fallible<Table> {
    Table::parse(&read(path)?).map_err(context(format!("`{}`", path.display())))
}

/// Runs `mamori policy …`.
pub fn run(c: PolicyCmd) -> Fallible<ExitCode> {
    match c {
        PolicyCmd::Show { dir, default } => {
            if default {
                print!("{}", mamori_authz::DEFAULT_POLICIES);
                return Ok(ExitCode::SUCCESS);
            }
            let node = dir.open()?;
            let (engine, entry) = policies::current(&Ctx::operator(&node, &reader()), &node)?;
            match entry {
                Some(e) => eprintln!(
                    "# policies version {} ({} policies), set by {}: {}",
                    e.version,
                    engine.len(),
                    e.changed_by,
                    e.reason
                ),
                None => eprintln!("# the shipped policies ({} policies); none set", engine.len()),
            }
            print!("{}", engine.text());
            Ok(ExitCode::SUCCESS)
        }
        PolicyCmd::Schema => {
            print!("{}", mamori_authz::policy::SCHEMA);
            Ok(ExitCode::SUCCESS)
        }
        PolicyCmd::Set { dir, file, test, reason, operator } => {
            let text = read(&file)?;
            let table = test.as_ref().map(load_table).transpose()?;
            let node = dir.open()?;
            let (v, n) = policies::set(&Ctx::operator(&node, &operator), &node, &text, table.as_ref(), &reason)
                .map_err(context(format!("`{}`", file.display())))?;
            println!(
                "アクセス方針を更新しました / policies updated to version {v} ({n} policies); a running server applies them within a second"
            );
            Ok(ExitCode::SUCCESS)
        }
        PolicyCmd::Explain { dir, user, action, resource, operation, policies: proposed, operator } => {
            let act = Act::parse(&action).ok_or_else(|| {
                format!("--action `{action}` must be read, search, create, update, delete or execute")
            })?;
            let proposed = proposed.as_ref().map(read).transpose()?;
            let node = dir.open()?;
            let q = Question { user, act, resource, operation, policies: proposed };
            let answer = policies::explain(&Ctx::operator(&node, &operator), &node, &q)?;
            let (account, target, patient, e) = (&answer.account, &answer.target, &answer.patient, &answer.explanation);
            let (d, situation) = (&e.decision, &e.situation);
            println!("decision / 判定: {}", if d.allowed { "ALLOW (許可)" } else { "DENY (拒否)" });
            println!(
                "user: {} roles [{}] fhirUser {}",
                account.username,
                account.roles.join(", "),
                account.fhir_user.as_deref().unwrap_or("-")
            );
            println!(
                "resource: {} classes (情報区分) [{}] patient {} lab {}",
                target.reference.as_deref().unwrap_or(&format!("{} (type level)", target.resource_type)),
                target.classes.iter().cloned().collect::<Vec<_>>().join(", "),
                patient.as_deref().unwrap_or("-"),
                target.lab
            );
            let break_glass = match (e.used_break_glass, situation.break_glass) {
                (true, _) => "used (purpose ETREAT)",
                (false, true) => "active, and still refused",
                (false, false) => "not applied",
            };
            println!(
                "context: care relationship {} · break-glass {break_glass} · operation {}",
                if situation.care { "yes" } else { "no" },
                if situation.operation.is_empty() { "-" } else { &situation.operation }
            );
            if d.policies.is_empty() {
                println!("determining policies: none — nothing permits it, so it is denied by default");
            } else if d.allowed {
                println!("determining policies (permit): {}", d.policies.join(", "));
            } else {
                println!("determining policies (forbid, overriding any permit): {}", d.policies.join(", "));
            }
            for e in &d.errors {
                println!("policy error (the policy was skipped): {e}");
            }
            if target.reference.is_some() && !target.classes.is_empty() {
                println!("note: the server also requires the token's scopes to allow it");
            }
            Ok(ExitCode::SUCCESS)
        }
        PolicyCmd::Test { dir, file, policies: proposed } => {
            let table = load_table(&file)?;
            let proposed = proposed.as_ref().map(read).transpose()?;
            let node = dir.open()?;
            let (failures, n) = policies::test(&Ctx::operator(&node, &reader()), &node, proposed.as_deref(), &table)?;
            for f in &failures {
                println!("{f}");
            }
            println!(
                "{} of {} expected decisions hold ({n} policies)",
                table.case.len() - failures.len(),
                table.case.len(),
            );
            Ok(if failures.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
    }
}
