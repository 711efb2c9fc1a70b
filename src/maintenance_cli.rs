//! `mamori maintenance …`: remote maintenance under the institution's control (M1,
//! docs/REMOTE-MAINTENANCE.md) on the command line — vendors, requests, approvals, closing a
//! window, the work report and its acceptance, the register. The use cases are
//! `mamori_app::maintenance`; this file parses, calls and prints.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use mamori_app::Ctx;
use mamori_app::maintenance::{self, Filing, Request, Scope, Vendor, Window};

use crate::cli::{DataDir, reader};
use crate::fail::Fallible;

/// `mamori maintenance` subcommands.
#[derive(Debug, Subcommand)]
pub enum MaintenanceCmd {
    /// Add or replace a vendor organisation (保守事業者) with its contacts and maintenance accounts.
    Vendor {
        #[command(flatten)]
        dir: DataDir,
        /// Short id (`acme`).
        id: String,
        /// Name.
        #[arg(long)]
        name: String,
        /// How to reach them.
        #[arg(long)]
        contact: String,
        /// The maintenance contract it works under.
        #[arg(long)]
        contract: String,
        /// An account of its contact (role `vendor_contact`); repeat for several.
        #[arg(long = "contact-account")]
        contacts: Vec<String>,
        /// A maintenance account (role `maintenance_vendor`); repeat for several.
        #[arg(long = "account")]
        accounts: Vec<String>,
        /// An address or CIDR block it works from; repeat for several (none: any).
        #[arg(long = "source")]
        sources: Vec<String>,
        /// Who.
        #[arg(long, env = "USER", default_value = "operator")]
        operator: String,
    },
    /// The vendor organisations.
    Vendors {
        #[command(flatten)]
        dir: DataDir,
    },
    /// Request a window for a vendor (on its behalf).
    Request {
        #[command(flatten)]
        dir: DataDir,
        /// The vendor's id.
        #[arg(long)]
        vendor: String,
        /// Which system or function.
        #[arg(long)]
        system: String,
        /// Why.
        #[arg(long)]
        purpose: String,
        /// A planned work item; repeat for each, in order.
        #[arg(long = "item", required = true)]
        items: Vec<String>,
        /// Start: RFC 3339 (`2026-12-06T01:00:00Z`) or `now`.
        #[arg(long)]
        start: String,
        /// Length in minutes.
        #[arg(long)]
        minutes: u32,
        /// A maintenance account of the vendor (none: all of them); repeat for several.
        #[arg(long = "account")]
        accounts: Vec<String>,
        /// An administrative act the window allows (`read-audit`, `manage-clients`, …).
        #[arg(long = "act")]
        acts: Vec<String>,
        /// An information class of patient data the window allows (none by default).
        #[arg(long = "class")]
        classes: Vec<String>,
        /// A patient (`Patient/id`) whose data of those classes may be touched.
        #[arg(long = "patient")]
        patients: Vec<String>,
        /// Approved patient data may be read.
        #[arg(long)]
        read: bool,
        /// Approved patient data may be written.
        #[arg(long)]
        write: bool,
        /// An address or CIDR block the work may come from (none: the vendor's).
        #[arg(long = "source")]
        sources: Vec<String>,
        /// Who requests.
        #[arg(long, env = "USER", default_value = "operator")]
        operator: String,
    },
    /// Approve a request (never your own).
    Approve {
        #[command(flatten)]
        dir: DataDir,
        /// The window's id.
        id: String,
        /// A note kept with the approval.
        #[arg(long, default_value = "")]
        note: String,
        /// Who approves.
        #[arg(long, env = "USER", default_value = "operator")]
        operator: String,
    },
    /// Refuse a request (never your own).
    Refuse {
        #[command(flatten)]
        dir: DataDir,
        /// The window's id.
        id: String,
        /// Why (required).
        #[arg(long)]
        note: String,
        /// Who refuses.
        #[arg(long, env = "USER", default_value = "operator")]
        operator: String,
    },
    /// Withdraw a request before its window starts.
    Withdraw {
        #[command(flatten)]
        dir: DataDir,
        /// The window's id.
        id: String,
        /// Why.
        #[arg(long, default_value = "")]
        note: String,
        /// Who.
        #[arg(long, env = "USER", default_value = "operator")]
        operator: String,
    },
    /// End a window now: its accounts' sessions end and their tokens are revoked.
    Close {
        #[command(flatten)]
        dir: DataDir,
        /// The window's id.
        id: String,
        /// Why (required).
        #[arg(long)]
        reason: String,
        /// Who.
        #[arg(long, env = "USER", default_value = "operator")]
        operator: String,
    },
    /// File the work report of an ended window from a JSON file:
    /// `{"items":[{"item":1,"done":true,"result":"…"}],"erasures":[{"what":"…","where":"…","how":"…","when":"…","by":"…"}],"note":"…"}`.
    Report {
        #[command(flatten)]
        dir: DataDir,
        /// The window's id.
        id: String,
        /// The report (JSON).
        #[arg(long)]
        file: PathBuf,
        /// Who files it (on the vendor's behalf).
        #[arg(long, env = "USER", default_value = "operator")]
        operator: String,
    },
    /// Accept the filed report: its document's SHA-256 goes into the audit trail.
    Accept {
        #[command(flatten)]
        dir: DataDir,
        /// The window's id.
        id: String,
        /// A note.
        #[arg(long, default_value = "")]
        note: String,
        /// Who accepts (not who filed it).
        #[arg(long, env = "USER", default_value = "operator")]
        operator: String,
    },
    /// Return the filed report with a note: a new one is due.
    Return {
        #[command(flatten)]
        dir: DataDir,
        /// The window's id.
        id: String,
        /// What is missing (required).
        #[arg(long)]
        note: String,
        /// Who returns it.
        #[arg(long, env = "USER", default_value = "operator")]
        operator: String,
    },
    /// Every window, newest first (`--due`: those whose report is overdue).
    List {
        #[command(flatten)]
        dir: DataDir,
        /// Only windows whose report is overdue.
        #[arg(long)]
        due: bool,
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// One window: its request, decisions, report, every state it passed through and its
    /// activity in the audit trail (actions outside the plan marked).
    Show {
        #[command(flatten)]
        dir: DataDir,
        /// The window's id.
        id: String,
        /// The report document as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write the accepted report as `ID.json` (the document whose SHA-256 the audit trail holds)
    /// and `ID.html` into a directory.
    Export {
        #[command(flatten)]
        dir: DataDir,
        /// The window's id.
        id: String,
        /// Where to write.
        #[arg(long)]
        out: PathBuf,
    },
    /// The register of remote maintenance: which system is maintained remotely by which vendor.
    Register {
        #[command(flatten)]
        dir: DataDir,
        /// Record (or with --remove, remove) the entry for this system…
        #[arg(long, requires = "vendor")]
        system: Option<String>,
        /// …maintained by this vendor.
        #[arg(long)]
        vendor: Option<String>,
        /// A note (the device, the connection, the contract clause).
        #[arg(long, default_value = "")]
        note: String,
        /// Remove the recorded entry.
        #[arg(long)]
        remove: bool,
        /// Who.
        #[arg(long, env = "USER", default_value = "operator")]
        operator: String,
    },
}

fn micros(t: i64) -> String {
    mamori_records::Timestamp(t).to_fhir()
}

fn line(w: &Window) -> String {
    format!(
        "{}\t{}\t{}\t{}\t{} – {}\t{}",
        w.id,
        w.state.name(),
        w.vendor,
        w.system,
        micros(w.start),
        micros(w.end),
        w.accounts.join(",")
    )
}

fn parse_start(s: &str, now: i64) -> Fallible<i64> {
    if s == "now" {
        return Ok(now);
    }
    mamori_records::Timestamp::parse_rfc3339(s)
        .map(|t| t.0)
        .ok_or_else(|| format!("--start `{s}`: give an RFC 3339 time (2026-12-06T01:00:00Z) or `now`").into())
}

/// Runs a `mamori maintenance` subcommand.
pub fn run(c: MaintenanceCmd) -> Fallible<ExitCode> {
    match c {
        MaintenanceCmd::Vendor { dir, id, name, contact, contract, contacts, accounts, sources, operator } => {
            let node = dir.open()?;
            let v = Vendor { id, name, contact, contract, contacts, accounts, sources };
            let v = maintenance::set_vendor(&Ctx::operator(&node, &operator), &node, v, "")?;
            println!(
                "vendor {} recorded ({} contacts, {} maintenance accounts)",
                v.id,
                v.contacts.len(),
                v.accounts.len()
            );
        }
        MaintenanceCmd::Vendors { dir } => {
            let node = dir.open()?;
            for v in maintenance::vendors(&Ctx::operator(&node, &reader()), &node)? {
                println!(
                    "{}\t{}\t{}\t{}\tcontacts {}\taccounts {}\tfrom {}",
                    v.id,
                    v.name,
                    v.contact,
                    v.contract,
                    v.contacts.join(","),
                    v.accounts.join(","),
                    if v.sources.is_empty() { "any".to_string() } else { v.sources.join(",") }
                );
            }
        }
        MaintenanceCmd::Request {
            dir,
            vendor,
            system,
            purpose,
            items,
            start,
            minutes,
            accounts,
            acts,
            classes,
            patients,
            read,
            write,
            sources,
            operator,
        } => {
            let node = dir.open()?;
            let ctx = Ctx::operator(&node, &operator);
            let start = parse_start(&start, ctx.now().0)?;
            let r = Request {
                vendor,
                accounts,
                system,
                purpose,
                items,
                start,
                end: start.saturating_add(i64::from(minutes) * 60_000_000),
                scope: Scope { acts, classes, patients, read, write, sources },
            };
            let w = maintenance::request(&ctx, &node, r)?;
            println!("maintenance window {} requested; it waits for the institution's approval", w.id);
            println!("{}", line(&w));
        }
        MaintenanceCmd::Approve { dir, id, note, operator } => {
            let node = dir.open()?;
            let w = maintenance::approve(&Ctx::operator(&node, &operator), &node, &id, &note)?;
            match w.state {
                maintenance::State::Approved => {
                    println!("maintenance window {} approved; it opens at {}", w.id, micros(w.start));
                }
                _ => println!(
                    "maintenance window {}: approval {} of {} recorded; another person must approve",
                    w.id,
                    w.approvals.len(),
                    w.approvals_needed
                ),
            }
        }
        MaintenanceCmd::Refuse { dir, id, note, operator } => {
            let node = dir.open()?;
            let w = maintenance::refuse(&Ctx::operator(&node, &operator), &node, &id, &note)?;
            println!("maintenance window {} refused", w.id);
        }
        MaintenanceCmd::Withdraw { dir, id, note, operator } => {
            let node = dir.open()?;
            let w = maintenance::withdraw(&Ctx::operator(&node, &operator), &node, &id, &note)?;
            println!("maintenance window {} withdrawn", w.id);
        }
        MaintenanceCmd::Close { dir, id, reason, operator } => {
            let node = dir.open()?;
            let w = maintenance::close(&Ctx::operator(&node, &operator), &node, &id, &reason)?;
            let revoked = w.closing.as_ref().map_or(0, |c| c.revoked);
            println!("maintenance window {} closed; {revoked} tokens and sessions ended", w.id);
        }
        MaintenanceCmd::Report { dir, id, file, operator } => {
            let node = dir.open()?;
            let text = std::fs::read_to_string(&file).map_err(|e| format!("cannot read `{}`: {e}", file.display()))?;
            let f: Filing =
                serde_json::from_str(&text).map_err(|e| format!("`{}` is not a work report: {e}", file.display()))?;
            let w = maintenance::report(&Ctx::operator(&node, &operator), &node, &id, f)?;
            println!("work report of maintenance window {} filed; it waits for the institution", w.id);
        }
        MaintenanceCmd::Accept { dir, id, note, operator } => {
            let node = dir.open()?;
            let (w, sha) = maintenance::accept(&Ctx::operator(&node, &operator), &node, &id, &note)?;
            println!("work report of maintenance window {} accepted; document sha256 {sha}", w.id);
        }
        MaintenanceCmd::Return { dir, id, note, operator } => {
            let node = dir.open()?;
            let w = maintenance::send_back(&Ctx::operator(&node, &operator), &node, &id, &note)?;
            println!("work report of maintenance window {} returned", w.id);
        }
        MaintenanceCmd::List { dir, due, json } => {
            let node = dir.open()?;
            let ctx = Ctx::operator(&node, &reader());
            let list = if due { maintenance::reports_due(&ctx, &node)? } else { maintenance::list(&ctx, &node)? };
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                for w in &list {
                    println!("{}", line(w));
                }
                if list.is_empty() {
                    println!("{}", if due { "no work report is overdue" } else { "no maintenance window" });
                }
            }
        }
        MaintenanceCmd::Show { dir, id, json } => {
            let node = dir.open()?;
            let ctx = Ctx::operator(&node, &reader());
            let doc = maintenance::document(&ctx, &node, &id)?;
            if json {
                println!("{}", doc.to_json()?);
                return Ok(ExitCode::SUCCESS);
            }
            let w = &doc.window;
            println!("{}", line(w));
            println!("purpose: {}", w.purpose);
            for (n, item) in w.items.iter().enumerate() {
                println!("item {}: {item}", n + 1);
            }
            println!(
                "scope: acts [{}]; patient data: {}",
                w.scope.acts.join(", "),
                if w.scope.touches_patients() {
                    format!(
                        "classes [{}] of [{}], {}",
                        w.scope.classes.join(", "),
                        w.scope.patients.join(", "),
                        match (w.scope.read, w.scope.write) {
                            (true, true) => "read and write",
                            (false, true) => "write",
                            _ => "read",
                        }
                    )
                } else {
                    "none".into()
                }
            );
            println!("history:");
            for (v, h) in maintenance::history(&ctx, &node, &id)? {
                println!("  v{v}\t{}", h.state.name());
            }
            println!("activity ({} entries, {} outside the plan):", doc.activity.len(), doc.unplanned);
            for a in &doc.activity {
                println!(
                    "  {}\t{}\t{}\t{}\t{}{}",
                    a.time,
                    a.actor,
                    a.action,
                    a.status.map_or_else(|| a.outcome.clone(), |s| s.to_string()),
                    a.resources.join(" "),
                    a.unplanned.as_deref().map(|u| format!("\tUNPLANNED: {u}")).unwrap_or_default()
                );
            }
        }
        MaintenanceCmd::Export { dir, id, out } => {
            let node = dir.open()?;
            let (doc, sha) = maintenance::accepted_document(&Ctx::operator(&node, &reader()), &node, &id)?;
            std::fs::create_dir_all(&out).map_err(|e| format!("cannot create `{}`: {e}", out.display()))?;
            let json = out.join(format!("{id}.json"));
            let html = out.join(format!("{id}.html"));
            std::fs::write(&json, doc.to_json()?).map_err(|e| format!("cannot write `{}`: {e}", json.display()))?;
            std::fs::write(&html, maintenance::to_html(&doc, &sha))
                .map_err(|e| format!("cannot write `{}`: {e}", html.display()))?;
            println!("wrote {} and {}; sha256 {sha} (as recorded in the audit trail)", json.display(), html.display());
        }
        MaintenanceCmd::Register { dir, system, vendor, note, remove, operator } => {
            let node = dir.open()?;
            let ctx = Ctx::operator(&node, &operator);
            if let (Some(system), Some(vendor)) = (system, vendor) {
                maintenance::set_register(&ctx, &node, &system, &vendor, &note, remove)?;
                println!("register: {system} by {vendor} {}", if remove { "removed" } else { "recorded" });
            } else {
                for r in maintenance::register(&ctx, &node)? {
                    println!(
                        "{}\t{}\t{} windows\tlast {}\t{}{}",
                        r.system,
                        r.vendor,
                        r.windows,
                        r.last.map(micros).unwrap_or_else(|| "-".into()),
                        if r.recorded { "recorded" } else { "derived" },
                        if r.note.is_empty() { String::new() } else { format!("\t{}", r.note) }
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
