//! `mamori policy …` (Z4): show, set (validated, tested, versioned, audited), explain one
//! decision, and test a proposed policy set against a table of expected decisions.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use mamori_authz::{Act, PolicyEngine, Situation, Subject, Target};
use mamori_records::{ResourceId, ResourceType};
use mamori_store_sqlite::ConfigChange;
use serde::Deserialize;

use crate::cli::DataDir;
use crate::datadir::{self, POLICY_KIND};

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

/// One expected decision.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    /// A label for reports.
    #[serde(default)]
    name: Option<String>,
    /// The user's roles (a person); leave out for an application.
    #[serde(default)]
    roles: Option<Vec<String>>,
    /// An application's registered classes (instead of `roles`); empty = all classes.
    #[serde(default)]
    client_classes: Option<Vec<String>>,
    action: String,
    #[serde(rename = "type")]
    resource_type: String,
    #[serde(default)]
    classes: Vec<String>,
    #[serde(default = "yes")]
    patient_bound: bool,
    #[serde(default)]
    lab: bool,
    #[serde(default)]
    care: bool,
    #[serde(default)]
    break_glass: bool,
    #[serde(default)]
    operation: String,
    #[serde(default)]
    department: String,
    /// `allow` or `deny`.
    expect: String,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Table {
    case: Vec<Case>,
}

fn read(path: &PathBuf) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))
}

fn engine_from(path: &PathBuf) -> Result<PolicyEngine, String> {
    PolicyEngine::new(&read(path)?).map_err(|e| format!("`{}`: {e}", path.display()))
}

/// Runs a table against an engine; returns the failures, described.
fn run_table(engine: &PolicyEngine, table: &Table) -> Result<Vec<String>, String> {
    let mut failures = Vec::new();
    for (i, c) in table.case.iter().enumerate() {
        let label = c.name.clone().unwrap_or_else(|| format!("case {}", i + 1));
        let act = Act::parse(&c.action).ok_or_else(|| format!("{label}: unknown action `{}`", c.action))?;
        let expect = match c.expect.as_str() {
            "allow" => true,
            "deny" => false,
            other => return Err(format!("{label}: expect must be `allow` or `deny`, not `{other}`")),
        };
        let subject = match (&c.roles, &c.client_classes) {
            (Some(roles), None) => Subject::User {
                username: "policy-test".into(),
                roles: roles.clone(),
                department: c.department.clone(),
                has_fhir_user: true,
            },
            (None, Some(classes)) => Subject::Client {
                id: "policy-test".into(),
                classes: if classes.is_empty() {
                    mamori_authz::taxonomy().into_iter().map(|d| d.code).collect()
                } else {
                    classes.clone()
                },
            },
            _ => return Err(format!("{label}: give either `roles` (a person) or `client_classes` (an application)")),
        };
        let target = Target {
            resource_type: c.resource_type.clone(),
            reference: Some(format!("{}/policy-test", c.resource_type)),
            classes: c.classes.iter().cloned().collect(),
            patient_bound: c.patient_bound,
            lab: c.lab,
        };
        let situation = Situation { care: c.care, break_glass: c.break_glass, operation: c.operation.clone() };
        let d = engine.decide_unsliced(&subject, act, &target, &situation);
        if d.allowed != expect {
            failures.push(format!(
                "FAIL {label}: expected {}, got {} (policies: {}){}",
                c.expect,
                if d.allowed { "allow" } else { "deny" },
                if d.policies.is_empty() { "none".to_string() } else { d.policies.join(", ") },
                if d.errors.is_empty() { String::new() } else { format!(" errors: {}", d.errors.join("; ")) }
            ));
        }
    }
    Ok(failures)
}

fn load_table(path: &PathBuf) -> Result<Table, String> {
    toml::from_str(&read(path)?).map_err(|e| format!("`{}`: {e}", path.display()))
}

fn now_micros() -> i64 {
    mamori_records::Clock::now(&mamori_records::SystemClock).0
}

/// The facts of a decision read from the store, for `policy explain` (the server reads the same
/// facts inside its request's transaction).
struct StoreFacts<'a> {
    node: &'a datadir::Node,
    fhir_user: Option<&'a str>,
}

impl mamori_http::Facts for StoreFacts<'_> {
    fn care(&mut self, patient: &str) -> Result<bool, mamori_records::RecordError> {
        match self.fhir_user {
            Some(me) => self.node.records.in_care(patient, me),
            None => Ok(false),
        }
    }

    fn break_glass(&mut self, username: &str, patient: &str) -> Result<bool, mamori_records::RecordError> {
        self.node.records.break_glass_active(username, patient)
    }
}

/// Runs `mamori policy …`.
pub fn run(c: PolicyCmd) -> Result<ExitCode, String> {
    match c {
        PolicyCmd::Show { dir, default } => {
            if default {
                print!("{}", mamori_authz::DEFAULT_POLICIES);
                return Ok(ExitCode::SUCCESS);
            }
            let node = dir.open()?;
            let engine = datadir::load_policies(&*node.store)?;
            match node.store.config_get(POLICY_KIND, "active").map_err(|e| e.to_string())? {
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
            let engine = engine_from(&file)?;
            if let Some(t) = &test {
                let failures = run_table(&engine, &load_table(t)?)?;
                if !failures.is_empty() {
                    for f in &failures {
                        eprintln!("{f}");
                    }
                    return Err(format!(
                        "方針を適用しませんでした / not applied: {} expected decision(s) differ",
                        failures.len()
                    ));
                }
            }
            if reason.trim().is_empty() {
                return Err("--reason must say why".into());
            }
            let node = dir.open()?;
            let prev = node.store.config_get(POLICY_KIND, "active").map_err(|e| e.to_string())?.map(|e| e.version);
            let v = node
                .store
                .change_config(&ConfigChange {
                    kind: POLICY_KIND,
                    key: "active",
                    value: Some(serde_json::json!({"text": engine.text()})),
                    changed_by: &format!("operator:{operator}"),
                    reason: &reason,
                    expected_version: prev,
                    now_micros: now_micros(),
                })
                .map_err(|e| e.to_string())?;
            println!(
                "アクセス方針を更新しました / policies updated to version {v} ({} policies); a running server applies them within a second",
                engine.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        PolicyCmd::Explain { dir, user, action, resource, operation, policies, operator } => {
            let act = Act::parse(&action).ok_or_else(|| {
                format!("--action `{action}` must be read, search, create, update, delete or execute")
            })?;
            let node = dir.open()?;
            let engine = match &policies {
                Some(p) => engine_from(p)?,
                None => datadir::load_policies(&*node.store)?,
            };
            let account = node
                .identity
                .account(&user)
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("no account `{user}`"))?;
            let subject = Subject::User {
                username: account.username.clone(),
                roles: account.roles.clone(),
                department: account.department.clone().unwrap_or_default(),
                has_fhir_user: account.fhir_user.is_some(),
            };
            let rules = datadir::load_class_rules(&*node.store)?;
            let (target, patient) = match resource.split_once('/') {
                Some((t, i)) => {
                    let rt = ResourceType::parse(t).map_err(|e| e.to_string())?;
                    let id = ResourceId::parse(i).map_err(|e| e.to_string())?;
                    let ctx = mamori_records::RequestContext::operator(&operator);
                    let v = node
                        .records
                        .version_of(&ctx, &rt, &id, None)
                        .map_err(|e| e.to_string())?
                        .ok_or_else(|| format!("no record `{resource}`"))?;
                    let detail = format!("policy explain: {action} by {user}");
                    node.records.audit_reads(&ctx, "read", Some(detail)).map_err(|e| e.to_string())?;
                    (mamori_http::record_target(&v, &rules), v.patient.clone())
                }
                None => {
                    ResourceType::parse(&resource).map_err(|e| e.to_string())?;
                    (mamori_http::type_target(&resource, &rules), None)
                }
            };
            // The server's own decision function, with the facts read from the store.
            let mut facts = StoreFacts { node: &node, fhir_user: account.fhir_user.as_deref() };
            let e = mamori_http::explain(&engine, &subject, act, &operation, &target, patient.as_deref(), &mut facts)
                .map_err(|e| e.to_string())?;
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
        PolicyCmd::Test { dir, file, policies } => {
            let engine = match &policies {
                Some(p) => engine_from(p)?,
                None => datadir::load_policies(&*dir.open()?.store)?,
            };
            let table = load_table(&file)?;
            let failures = run_table(&engine, &table)?;
            for f in &failures {
                println!("{f}");
            }
            println!(
                "{} of {} expected decisions hold ({} policies)",
                table.case.len() - failures.len(),
                table.case.len(),
                engine.len()
            );
            Ok(if failures.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
    }
}
