//! `mamori review …`: the security manager's reviews on the command line — break-glass uses,
//! access review campaigns, the least-privilege report. The use cases are
//! `mamori_app::reviews`; this file parses, calls and prints.

use crate::fail::Fallible;
use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;

use clap::Subcommand;
use mamori_app::Ctx;
use mamori_app::reviews::{self, Campaign, Right};

use crate::cli::{DataDir, reader};

/// `mamori review` subcommands.
#[derive(Debug, Subcommand)]
pub enum ReviewCmd {
    /// Break-glass uses awaiting review (all with --all).
    BreakGlass {
        #[command(flatten)]
        dir: DataDir,
        /// Include closed reviews.
        #[arg(long)]
        all: bool,
    },
    /// Close the review of a break-glass use.
    Close {
        #[command(flatten)]
        dir: DataDir,
        /// The grant id.
        grant: String,
        /// The reviewer's finding (required).
        #[arg(long)]
        note: String,
        /// Who reviews.
        #[arg(long, env = "USER", default_value = "operator")]
        operator: String,
    },
    /// Open an access review campaign over every active account (or --user …).
    Start {
        #[command(flatten)]
        dir: DataDir,
        /// Why, e.g. "2026 Q4 periodic review".
        #[arg(long)]
        reason: String,
        /// Review only these accounts (repeatable).
        #[arg(long = "user")]
        users: Vec<String>,
        /// Who opens it.
        #[arg(long, env = "USER", default_value = "operator")]
        operator: String,
    },
    /// List campaigns and how many items are still open.
    List(DataDir),
    /// Show one campaign.
    Show {
        #[command(flatten)]
        dir: DataDir,
        /// Campaign id.
        campaign: String,
    },
    /// Decide one user's item: confirm their roles, or revoke some.
    Decide {
        #[command(flatten)]
        dir: DataDir,
        /// Campaign id.
        campaign: String,
        /// The account.
        user: String,
        /// Confirm every role as it is.
        #[arg(long, conflicts_with = "revoke")]
        confirm: bool,
        /// Revoke this role (repeatable).
        #[arg(long)]
        revoke: Vec<String>,
        /// A note.
        #[arg(long, default_value = "")]
        note: String,
        /// Who decides.
        #[arg(long, env = "USER", default_value = "operator")]
        operator: String,
    },
    /// Least-privilege report: rights granted vs rights used in the last N days.
    Report {
        #[command(flatten)]
        dir: DataDir,
        /// The window, in days.
        #[arg(long, default_value_t = 90)]
        days: u32,
        /// Only this account.
        #[arg(long)]
        user: Option<String>,
        /// Who runs the report (its reads of records are audited in this name).
        #[arg(long, env = "USER", default_value = "operator")]
        operator: String,
    },
}

fn print_campaign(c: &Campaign) {
    println!(
        "campaign {} — {} (opened {} by {})",
        c.id,
        c.reason,
        mamori_records::Timestamp(c.opened_at).to_fhir(),
        c.opened_by
    );
    for i in &c.items {
        match &i.decision {
            None => println!("  OPEN     {}\troles [{}]", i.username, i.roles.join(", ")),
            Some(d) => println!(
                "  DECIDED  {}\tkept [{}] revoked [{}] by {}{}",
                i.username,
                d.kept.join(", "),
                d.revoked.join(", "),
                d.by,
                if d.note.is_empty() { String::new() } else { format!(" — {}", d.note) }
            ),
        }
    }
}

fn fmt_rights(r: &BTreeSet<Right>) -> String {
    let mut by_class: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (c, a) in r {
        by_class.entry(c).or_default().push(a.as_str());
    }
    if by_class.is_empty() {
        return "none".into();
    }
    by_class.iter().map(|(c, a)| format!("{c}:{}", a.join("/"))).collect::<Vec<_>>().join(" ")
}

/// Runs `mamori review …`.
pub fn run(c: ReviewCmd) -> Fallible<ExitCode> {
    match c {
        ReviewCmd::BreakGlass { dir, all } => {
            let node = dir.open()?;
            let grants = reviews::break_glass(&Ctx::operator(&node, &reader()), &node, !all)?;
            if grants.is_empty() {
                println!("レビュー待ちの非常時アクセスはありません / no break-glass use awaiting review");
            }
            for g in grants {
                println!(
                    "{}\t{}\t{}\t{} → {}\t{}\t{}",
                    g.id,
                    g.username,
                    g.patient,
                    g.granted.to_fhir(),
                    g.expires.to_fhir(),
                    g.reason,
                    match &g.review {
                        None => "OPEN".to_string(),
                        Some((t, by, note)) => format!("closed {} by {by}: {note}", t.to_fhir()),
                    }
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        ReviewCmd::Close { dir, grant, note, operator } => {
            let node = dir.open()?;
            reviews::close_break_glass(&Ctx::operator(&node, &operator), &node, &grant, &note)?;
            println!("レビューを完了しました / review closed: {grant}");
            Ok(ExitCode::SUCCESS)
        }
        ReviewCmd::Start { dir, reason, users, operator } => {
            let node = dir.open()?;
            let c = reviews::open(&Ctx::operator(&node, &operator), &node, &reason, &users)?;
            println!("権限の見直しを開始しました / access review opened: {} ({} accounts)", c.id, c.items.len());
            Ok(ExitCode::SUCCESS)
        }
        ReviewCmd::List(dir) => {
            let node = dir.open()?;
            for c in reviews::list(&Ctx::operator(&node, &reader()), &node)? {
                println!("{}\t{} open of {}\t{}", c.id, c.open_items(), c.items.len(), c.reason);
            }
            Ok(ExitCode::SUCCESS)
        }
        ReviewCmd::Show { dir, campaign } => {
            let node = dir.open()?;
            print_campaign(&reviews::show(&Ctx::operator(&node, &reader()), &node, &campaign)?);
            Ok(ExitCode::SUCCESS)
        }
        ReviewCmd::Decide { dir, campaign, user, confirm, revoke, note, operator } => {
            if !confirm && revoke.is_empty() {
                return Err("say --confirm, or --revoke ROLE for each role to remove".into());
            }
            let node = dir.open()?;
            let (d, open) = reviews::decide(&Ctx::operator(&node, &operator), &node, &campaign, &user, &revoke, &note)?;
            println!(
                "決定を記録しました / decision recorded: {user} kept [{}] revoked [{}]; {open} item(s) still open",
                d.kept.join(", "),
                d.revoked.join(", "),
            );
            Ok(ExitCode::SUCCESS)
        }
        ReviewCmd::Report { dir, days, user, operator } => {
            let node = dir.open()?;
            let lines = reviews::report(&Ctx::operator(&node, &operator), &node, days, user.as_deref())?;
            println!("最小権限レポート / least-privilege report: rights granted vs used in the last {days} days");
            for u in lines {
                let unused: BTreeSet<Right> = u.granted.difference(&u.used).cloned().collect();
                println!("{}\troles [{}]", u.username, u.roles.join(", "));
                println!("  granted: {}", fmt_rights(&u.granted));
                println!("  used:    {}", fmt_rights(&u.used));
                println!("  unused:  {}", fmt_rights(&unused));
                for role in &u.unused_roles {
                    println!("  ! role `{role}` was not used in {days} days: candidate for revocation (見直し候補)");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
