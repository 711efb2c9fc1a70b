//! `mamori review …`: the security manager's queues.
//!
//! - Break-glass uses (Z5): every grant enters a queue that stays open until closed with a note.
//! - Access review campaigns (Z6): periodic, or opened by a transfer (人事異動); a manager
//!   confirms or revokes each user's roles. Campaigns are configuration (kind `access-review`),
//!   so every decision is versioned and audited; a revocation changes the account at once.
//! - Least-privilege report (Z6): rights granted by each user's roles versus rights used in the
//!   last N days, from the audit trail.

use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;

use clap::Subcommand;
use mamori_audit::EntryQuery;
use mamori_authz::{Act, PolicyEngine, Situation, Subject, Target};
use mamori_identity::account::Status;
use mamori_records::{RequestContext, ResourceId, ResourceType};
use mamori_store_sqlite::ConfigChange;
use serde::{Deserialize, Serialize};

use crate::cli::DataDir;
use crate::datadir::{self, Node};

/// The configuration kind of campaigns.
pub const CAMPAIGN_KIND: &str = "access-review";

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

/// One reviewed account.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Item {
    /// The account.
    pub username: String,
    /// Its roles when the campaign opened.
    pub roles: Vec<String>,
    /// The decision, once made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<ItemDecision>,
}

/// A manager's decision on one item.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ItemDecision {
    /// Roles kept.
    pub kept: Vec<String>,
    /// Roles revoked.
    pub revoked: Vec<String>,
    /// Who decided.
    pub by: String,
    /// When (µs).
    pub at: i64,
    /// Note.
    pub note: String,
}

/// An access review campaign.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Campaign {
    /// Id.
    pub id: String,
    /// Why it was opened.
    pub reason: String,
    /// When (µs).
    pub opened_at: i64,
    /// Who opened it.
    pub opened_by: String,
    /// The accounts under review.
    pub items: Vec<Item>,
}

impl Campaign {
    /// Items still undecided.
    pub fn open_items(&self) -> usize {
        self.items.iter().filter(|i| i.decision.is_none()).count()
    }
}

fn now_micros() -> i64 {
    mamori_records::Clock::now(&mamori_records::SystemClock).0
}

fn save(node: &Node, c: &Campaign, expected: Option<u64>, by: &str, reason: &str) -> Result<u64, String> {
    node.store
        .change_config(&ConfigChange {
            kind: CAMPAIGN_KIND,
            key: &c.id,
            value: Some(serde_json::to_value(c).map_err(|e| e.to_string())?),
            changed_by: by,
            reason,
            expected_version: expected,
            now_micros: now_micros(),
        })
        .map_err(|e| e.to_string())
}

fn load(node: &Node, id: &str) -> Result<(Campaign, u64), String> {
    let e = node
        .store
        .config_get(CAMPAIGN_KIND, id)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("no campaign `{id}`"))?;
    let c = serde_json::from_value(e.value.unwrap_or_default()).map_err(|e| format!("stored campaign: {e}"))?;
    Ok((c, e.version))
}

/// Opens a campaign over `users` (every active account when empty); returns it.
pub fn open_campaign(node: &Node, reason: &str, users: &[String], operator: &str) -> Result<Campaign, String> {
    let accounts = node.identity.accounts().map_err(|e| e.to_string())?;
    let mut items = Vec::new();
    for a in accounts.into_iter().filter(|a| a.status == Status::Active) {
        if users.is_empty() || users.contains(&a.username) {
            items.push(Item { username: a.username, roles: a.roles, decision: None });
        }
    }
    if let Some(missing) = users.iter().find(|u| !items.iter().any(|i| &i.username == *u)) {
        return Err(format!("no active account `{missing}`"));
    }
    if items.is_empty() {
        return Err("no active accounts to review".into());
    }
    let now = now_micros();
    let date = mamori_records::Timestamp(now).to_fhir();
    let suffix = ResourceId::random().map_err(|e| e.to_string())?.to_string();
    let id = format!("{}-{}", date.get(0..10).unwrap_or("review"), suffix.get(0..8).unwrap_or("0"));
    let c = Campaign { id, reason: reason.to_string(), opened_at: now, opened_by: operator.to_string(), items };
    save(node, &c, None, operator, &format!("access review opened: {reason}"))?;
    Ok(c)
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

/// One right: an action on a class.
type Right = (String, Act);

/// Types a class is typically carried by, to probe policies that also look at the type.
const PROBE_TYPES: &[&str] = &[
    "Observation",
    "Condition",
    "DiagnosticReport",
    "MedicationRequest",
    "MedicationDispense",
    "AllergyIntolerance",
    "Patient",
    "Encounter",
    "AuditEvent",
    "CapabilityStatement",
];

/// The (class, action) pairs a role permits on some probe type, in care.
fn granted(engine: &PolicyEngine, roles: &[String]) -> BTreeSet<Right> {
    let mut out = BTreeSet::new();
    let subject = Subject::User {
        username: "probe".into(),
        roles: roles.to_vec(),
        department: String::new(),
        has_fhir_user: true,
    };
    for class in mamori_authz::taxonomy() {
        for act in [Act::Read, Act::Search, Act::Create, Act::Update, Act::Delete] {
            let any = PROBE_TYPES.iter().any(|t| {
                let target = Target {
                    resource_type: (*t).to_string(),
                    reference: Some(format!("{t}/probe")),
                    classes: [class.code.clone()].into(),
                    patient_bound: true,
                    lab: true,
                };
                engine.decide(&subject, act, &target, &Situation { care: true, ..Situation::default() }).allowed
            });
            if any {
                out.insert((class.code.clone(), act));
            }
        }
    }
    out
}

fn act_of(action: &str) -> Option<Act> {
    Some(match action {
        "read" | "vread" | "history" => Act::Read,
        "search" => Act::Search,
        "create" => Act::Create,
        "update" | "patch" => Act::Update,
        "delete" => Act::Delete,
        _ => return None,
    })
}

/// The (class, action) pairs a user exercised since `since` (µs), from the audit trail.
fn used(node: &Node, ctx: &RequestContext, username: &str, since: i64) -> Result<BTreeSet<Right>, String> {
    let mut out = BTreeSet::new();
    let mut from = 0;
    loop {
        let q = EntryQuery {
            since: Some(since),
            agent: Some(username.to_string()),
            from_index: from,
            limit: 4096,
            ..EntryQuery::default()
        };
        let batch = node.store.query(&q).map_err(|e| e.to_string())?;
        let Some((last, _)) = batch.last() else { break };
        from = last + 1;
        for (_, bytes) in &batch {
            let Ok(r) = serde_json::from_slice::<mamori_audit::AuditRecord>(bytes) else { continue };
            if r.actor.id != username || r.outcome != mamori_audit::Outcome::Success {
                continue;
            }
            let Some(act) = act_of(&r.action) else { continue };
            for res in &r.resources {
                let parts: Vec<&str> = res.split('/').collect();
                let (Some(t), Some(i)) = (parts.first(), parts.get(1)) else { continue };
                let (Ok(rt), Ok(id)) = (ResourceType::parse(t), ResourceId::parse(i)) else { continue };
                let version = parts.get(3).and_then(|v| v.parse::<u64>().ok());
                let v = node.records.version_of(ctx, &rt, &id, version).map_err(|e| e.to_string())?;
                for c in v.map(|v| v.classes).unwrap_or_default() {
                    out.insert((c, act));
                }
            }
        }
        if batch.len() < 4096 {
            break;
        }
    }
    Ok(out)
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
pub fn run(c: ReviewCmd) -> Result<ExitCode, String> {
    match c {
        ReviewCmd::BreakGlass { dir, all } => {
            let node = dir.open()?;
            let grants = node.records.break_glass_grants(!all).map_err(|e| e.to_string())?;
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
            let ctx = RequestContext::operator(&operator);
            node.records.close_break_glass(&ctx, &grant, &note).map_err(|e| e.to_string())?;
            println!("レビューを完了しました / review closed: {grant}");
            Ok(ExitCode::SUCCESS)
        }
        ReviewCmd::Start { dir, reason, users, operator } => {
            if reason.trim().is_empty() {
                return Err("--reason must say why".into());
            }
            let node = dir.open()?;
            let c = open_campaign(&node, &reason, &users, &format!("operator:{operator}"))?;
            println!("権限の見直しを開始しました / access review opened: {} ({} accounts)", c.id, c.items.len());
            Ok(ExitCode::SUCCESS)
        }
        ReviewCmd::List(dir) => {
            let node = dir.open()?;
            for e in node.store.config_current(CAMPAIGN_KIND).map_err(|e| e.to_string())? {
                let c: Campaign = serde_json::from_value(e.value.unwrap_or_default()).map_err(|e| e.to_string())?;
                println!("{}\t{} open of {}\t{}", c.id, c.open_items(), c.items.len(), c.reason);
            }
            Ok(ExitCode::SUCCESS)
        }
        ReviewCmd::Show { dir, campaign } => {
            let node = dir.open()?;
            print_campaign(&load(&node, &campaign)?.0);
            Ok(ExitCode::SUCCESS)
        }
        ReviewCmd::Decide { dir, campaign, user, confirm, revoke, note, operator } => {
            if !confirm && revoke.is_empty() {
                return Err("say --confirm, or --revoke ROLE for each role to remove".into());
            }
            let node = dir.open()?;
            let (mut c, version) = load(&node, &campaign)?;
            let by = format!("operator:{operator}");
            let account = node
                .identity
                .account(&user)
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("no account `{user}`"))?;
            let item = c
                .items
                .iter_mut()
                .find(|i| i.username == user)
                .ok_or_else(|| format!("`{user}` is not in campaign {campaign}"))?;
            if item.decision.is_some() {
                return Err(format!("`{user}` was already decided in {campaign}"));
            }
            if let Some(bad) = revoke.iter().find(|r| !account.roles.contains(r)) {
                return Err(format!("`{user}` does not hold the role `{bad}`"));
            }
            let kept: Vec<String> = account.roles.iter().filter(|r| !revoke.contains(r)).cloned().collect();
            item.decision = Some(ItemDecision {
                kept: kept.clone(),
                revoked: revoke.clone(),
                by: by.clone(),
                at: now_micros(),
                note,
            });
            if !revoke.is_empty() {
                node.identity
                    .set_roles(
                        &by,
                        &user,
                        kept.clone(),
                        &format!("access review {campaign}: revoked {}", revoke.join(", ")),
                    )
                    .map_err(|e| e.to_string())?;
            }
            save(&node, &c, Some(version), &by, &format!("access review decision for {user}"))?;
            println!(
                "決定を記録しました / decision recorded: {user} kept [{}] revoked [{}]; {} item(s) still open",
                kept.join(", "),
                revoke.join(", "),
                c.open_items()
            );
            Ok(ExitCode::SUCCESS)
        }
        ReviewCmd::Report { dir, days, user, operator } => {
            let node = dir.open()?;
            let ctx = RequestContext::operator(&operator);
            let engine = datadir::load_policies(&*node.store)?;
            let since = now_micros() - i64::from(days) * 86_400_000_000;
            println!("最小権限レポート / least-privilege report: rights granted vs used in the last {days} days");
            for a in node.identity.accounts().map_err(|e| e.to_string())? {
                if a.status != Status::Active || user.as_ref().is_some_and(|u| *u != a.username) {
                    continue;
                }
                let g = granted(&engine, &a.roles);
                let u = used(&node, &ctx, &a.username, since)?;
                let unused: BTreeSet<Right> = g.difference(&u).cloned().collect();
                println!("{}\troles [{}]", a.username, a.roles.join(", "));
                println!("  granted: {}", fmt_rights(&g));
                println!("  used:    {}", fmt_rights(&u));
                println!("  unused:  {}", fmt_rights(&unused));
                for role in &a.roles {
                    let alone = granted(&engine, std::slice::from_ref(role));
                    if !alone.is_empty() && alone.is_disjoint(&u) {
                        println!(
                            "  ! role `{role}` was not used in {days} days: candidate for revocation (見直し候補)"
                        );
                    }
                }
            }
            // The records the report looked at (for their classes) are audited as its reads.
            let detail = format!("least-privilege report over {days} days: classes of the records each account used");
            node.records.audit_reads(&ctx, "read", Some(detail)).map_err(|e| e.to_string())?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
