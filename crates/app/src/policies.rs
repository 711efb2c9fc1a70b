//! Access policies (アクセス方針, Cedar): show, test against a table of expected decisions, set
//! (tested first when a table is given), and explain one decision with the server's own decision
//! function.

use mamori_access::{Facts, explain as decide};
use mamori_authz::{Act, PolicyEngine, Situation, Subject, Target};
use mamori_records::{RecordError, ResourceId, ResourceType};
use serde::Deserialize;

use crate::ctx::{change_config, failed};
use crate::node::{load_class_rules, load_policies};
use crate::registry::ConfigKind;
use crate::{AdminAct, AppError, Ctx, Node};

/// One expected decision of a test table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// A label for reports.
    #[serde(default)]
    pub name: Option<String>,
    /// The user's roles (a person); leave out for an application.
    #[serde(default)]
    pub roles: Option<Vec<String>>,
    /// An application's registered classes (instead of `roles`); empty = all classes.
    #[serde(default)]
    pub client_classes: Option<Vec<String>>,
    /// `read`, `search`, `create`, `update`, `delete` or `execute`.
    pub action: String,
    /// The resource type.
    #[serde(rename = "type")]
    pub resource_type: String,
    /// The record's information classes.
    #[serde(default)]
    pub classes: Vec<String>,
    /// Whether the record belongs to a patient (default true).
    #[serde(default = "yes")]
    pub patient_bound: bool,
    /// A laboratory result.
    #[serde(default)]
    pub lab: bool,
    /// In a care relationship.
    #[serde(default)]
    pub care: bool,
    /// Under an active break-glass grant.
    #[serde(default)]
    pub break_glass: bool,
    /// For `execute`: the operation.
    #[serde(default)]
    pub operation: String,
    /// The user's department.
    #[serde(default)]
    pub department: String,
    /// `allow` or `deny`.
    pub expect: String,
}

fn yes() -> bool {
    true
}

/// A table of expected decisions (TOML: `[[case]]` entries).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Table {
    /// The cases.
    pub case: Vec<Case>,
    /// The text it was parsed from, kept with the policies it was applied with.
    #[serde(skip)]
    pub source: String,
}

/// The table of expected decisions shipped for the shipped policies (27 cases, one or more per
/// role): where a console edit starts before a site has kept its own.
pub const SHIPPED_TABLE: &str = include_str!("../../../policies/expected-decisions.toml");

impl Table {
    /// Parses a table.
    pub fn parse(text: &str) -> Result<Table, AppError> {
        let mut t: Table = toml::from_str(text).map_err(|e| AppError::Invalid(format!("test table: {e}")))?;
        if t.case.is_empty() {
            return Err(AppError::Invalid("test table: it has no [[case]]".into()));
        }
        t.source = text.to_string();
        Ok(t)
    }
}

/// Parses and checks policies against the schema.
pub fn parse(text: &str) -> Result<PolicyEngine, AppError> {
    PolicyEngine::new(text).map_err(|e| AppError::Invalid(format!("policies: {e}")))
}

/// The table of expected decisions kept with the policies in force (set with one), else the
/// shipped table.
pub fn current_table(entry: Option<&mamori_store_sql::ConfigEntry>) -> String {
    entry
        .and_then(|e| e.value.as_ref())
        .and_then(|v| v.get("tests"))
        .and_then(serde_json::Value::as_str)
        .map_or_else(|| SHIPPED_TABLE.to_string(), str::to_string)
}

/// Runs a table against an engine; returns the failures, described (empty: every case holds).
pub fn run_table(engine: &PolicyEngine, table: &Table) -> Result<Vec<String>, AppError> {
    let mut failures = Vec::new();
    for (i, c) in table.case.iter().enumerate() {
        let label = c.name.clone().unwrap_or_else(|| format!("case {}", i + 1));
        let act = Act::parse(&c.action)
            .ok_or_else(|| AppError::Invalid(format!("{label}: unknown action `{}`", c.action)))?;
        let expect = match c.expect.as_str() {
            "allow" => true,
            "deny" => false,
            other => {
                return Err(AppError::Invalid(format!("{label}: expect must be `allow` or `deny`, not `{other}`")));
            }
        };
        let subject = match (&c.roles, &c.client_classes) {
            (Some(roles), None) => Subject::User {
                username: "policy-test".into(),
                roles: roles.clone(),
                department: c.department.clone(),
                has_fhir_user: true,
                window: None,
            },
            (None, Some(classes)) => Subject::Client {
                id: "policy-test".into(),
                classes: if classes.is_empty() {
                    mamori_authz::taxonomy().into_iter().map(|d| d.code).collect()
                } else {
                    classes.clone()
                },
            },
            _ => {
                return Err(AppError::Invalid(format!(
                    "{label}: give either `roles` (a person) or `client_classes` (an application)"
                )));
            }
        };
        let target = Target {
            resource_type: c.resource_type.clone(),
            reference: Some(format!("{}/policy-test", c.resource_type)),
            classes: c.classes.iter().cloned().collect(),
            patient_bound: c.patient_bound,
            lab: c.lab,
        };
        let situation = Situation {
            care: c.care,
            break_glass: c.break_glass,
            operation: c.operation.clone(),
            ..Situation::default()
        };
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

/// The policies in force, and who set them when (`None`: the shipped ones). Those who read the
/// audit trail and those who may replace the policies may see them.
pub fn current(ctx: &Ctx, node: &Node) -> Result<(PolicyEngine, Option<mamori_store_sql::ConfigEntry>), AppError> {
    ctx.authorize_any(node, &[AdminAct::ReadAudit, AdminAct::SetPolicies])?;
    let engine = load_policies(&*node.store).map_err(AppError::from)?;
    let entry = node.store.config_get(ConfigKind::Policies.name(), "active").map_err(AppError::from)?;
    Ok((engine, entry))
}

/// Checks `proposed` policies (or those in force) against a table. Returns the failures, the
/// number of cases and the number of policies.
pub fn test(ctx: &Ctx, node: &Node, proposed: Option<&str>, table: &Table) -> Result<(Vec<String>, usize), AppError> {
    let engine = match proposed {
        Some(text) => parse(text)?,
        None => current(ctx, node)?.0,
    };
    Ok((run_table(&engine, table)?, engine.len()))
}

/// Replaces the access policies. They are checked against the schema and, when a table is
/// given, must pass it first; nothing is stored otherwise. Returns the new version and the number
/// of policies. A running server applies them within a second.
pub fn set(ctx: &Ctx, node: &Node, text: &str, table: Option<&Table>, reason: &str) -> Result<(u64, usize), AppError> {
    ctx.authorize(node, AdminAct::SetPolicies)?;
    if reason.trim().is_empty() {
        return Err(AppError::Invalid("a change of policies must say why".into()));
    }
    let engine = parse(text)?;
    if let Some(t) = table {
        let failures = run_table(&engine, t)?;
        if !failures.is_empty() {
            return Err(AppError::Invalid(format!(
                "方針を適用しませんでした / not applied: {} expected decision(s) differ\n{}",
                failures.len(),
                failures.join("\n")
            )));
        }
    }
    let prev = node.store.config_get(ConfigKind::Policies.name(), "active").map_err(AppError::from)?.map(|e| e.version);
    // The table they passed is kept beside them: the next edit starts from it.
    let value = match table {
        Some(t) if !t.source.is_empty() => serde_json::json!({"text": engine.text(), "tests": t.source}),
        _ => serde_json::json!({"text": engine.text()}),
    };
    let v = change_config(ctx, node, ConfigKind::Policies, "active", Some(value), reason.trim(), prev)?;
    Ok((v, engine.len()))
}

/// The question `policy explain` answers: may `user` do `action` on `resource`?
#[derive(Debug, Clone)]
pub struct Question {
    /// The account asked about.
    pub user: String,
    /// The action.
    pub act: Act,
    /// `Type/id` (a stored record) or `Type` (a type-level decision, e.g. before a search).
    pub resource: String,
    /// For `execute`: the operation.
    pub operation: String,
    /// Decide with these proposed policies (Cedar) instead of those in force.
    pub policies: Option<String>,
}

/// An answer: the account, the target, and the server's decision with the situation it was made in.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The account asked about.
    pub account: mamori_identity::account::Account,
    /// What was judged.
    pub target: Target,
    /// The record's patient, if any.
    pub patient: Option<String>,
    /// The decision.
    pub explanation: mamori_access::Explanation,
}

/// The facts of a decision read from the store (the server reads the same facts inside its
/// request's transaction).
struct StoreFacts<'a> {
    node: &'a Node,
    fhir_user: Option<&'a str>,
}

impl Facts for StoreFacts<'_> {
    fn care(&mut self, patient: &str) -> Result<bool, RecordError> {
        match self.fhir_user {
            Some(me) => self.node.records.in_care(patient, me),
            None => Ok(false),
        }
    }

    fn break_glass(&mut self, username: &str, patient: &str) -> Result<bool, RecordError> {
        self.node.records.break_glass_active(username, patient)
    }
}

/// Explains one decision with the server's own decision function. The record is read for its
/// classes, patient and lab flag only ([`Ctx::metadata_reads`]), audited as the caller's read.
pub fn explain(ctx: &Ctx, node: &Node, q: &Question) -> Result<Answer, AppError> {
    ctx.authorize(node, AdminAct::ReadAudit)?;
    let engine = match &q.policies {
        Some(p) => parse(p)?,
        None => load_policies(&*node.store).map_err(AppError::from)?,
    };
    let account =
        node.identity.account(&q.user)?.ok_or_else(|| AppError::NotFound(format!("no account `{}`", q.user)))?;
    let subject = Subject::User {
        username: account.username.clone(),
        roles: account.roles.clone(),
        department: account.department.clone().unwrap_or_default(),
        has_fhir_user: account.fhir_user.is_some(),
        // The window the account works in now, if it is a maintenance account in one.
        window: node.enforcer.window_of_person(&account.username, &account.roles, None),
    };
    let rules = load_class_rules(&*node.store).map_err(AppError::from)?;
    let (target, patient) = match q.resource.split_once('/') {
        Some((t, i)) => {
            let rt = ResourceType::parse(t).map_err(|e| AppError::Invalid(e.to_string()))?;
            let id = ResourceId::parse(i).map_err(|e| AppError::Invalid(e.to_string()))?;
            let rctx = ctx.metadata_reads();
            let v = node.records.version_of(&rctx, &rt, &id, None)?;
            let detail = format!("policy explain: {} by {}", q.act.as_str(), q.user);
            node.records.audit_reads(&rctx, mamori_records::ReadAction::Read, Some(detail))?;
            let v = v.ok_or_else(|| AppError::NotFound(format!("no record `{}`", q.resource)))?;
            (mamori_access::record_target(&v, &rules), v.patient.clone())
        }
        None => {
            ResourceType::parse(&q.resource).map_err(|e| AppError::Invalid(e.to_string()))?;
            (mamori_access::type_target(&q.resource, &rules), None)
        }
    };
    let mut facts = StoreFacts { node, fhir_user: account.fhir_user.as_deref() };
    let explanation =
        decide(&engine, &subject, q.act, &q.operation, &target, patient.as_deref(), &mut facts).map_err(failed)?;
    Ok(Answer { account, target, patient, explanation })
}
