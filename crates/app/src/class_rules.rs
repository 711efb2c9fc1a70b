//! Information-class labelling rules (情報区分の付与規則): show and replace. New and changed
//! resources are labelled with the rules in force; existing versions keep their labels.

use crate::ctx::{change_config, failed};
use crate::node::load_class_rules;
use crate::registry::ConfigKind;
use crate::{AdminAct, AppError, Ctx, Node};

const KIND: ConfigKind = ConfigKind::ClassRules;

/// The rules in force. Those who read the audit trail and those who may replace the rules may
/// see them.
pub fn current(ctx: &Ctx, node: &Node) -> Result<mamori_authz::Rules, AppError> {
    ctx.authorize_any(node, &[AdminAct::ReadAudit, AdminAct::SetClassRules])?;
    load_class_rules(&*node.store).map_err(AppError::from)
}

/// Who set the rules in force, when and why (`None`: the shipped ones).
pub fn current_entry(ctx: &Ctx, node: &Node) -> Result<Option<mamori_store_sql::ConfigEntry>, AppError> {
    ctx.authorize_any(node, &[AdminAct::ReadAudit, AdminAct::SetClassRules])?;
    node.store.config_get(KIND.name(), "active").map_err(AppError::from)
}

/// Parses and validates rules (the JSON shape `classes show` prints under "rules").
pub fn parse(text: &str) -> Result<mamori_authz::Rules, AppError> {
    let rules: mamori_authz::Rules =
        serde_json::from_str(text).map_err(|e| AppError::Invalid(format!("class rules: {e}")))?;
    rules.validate().map_err(|e| AppError::Invalid(e.to_string()))?;
    Ok(rules)
}

/// Replaces the rules; returns the new version. A running server applies them within a second.
pub fn set(ctx: &Ctx, node: &Node, rules: &mamori_authz::Rules, reason: &str) -> Result<u64, AppError> {
    ctx.authorize(node, AdminAct::SetClassRules)?;
    if reason.trim().is_empty() {
        return Err(AppError::Invalid("a change of the class rules must say why".into()));
    }
    rules.validate().map_err(|e| AppError::Invalid(e.to_string()))?;
    let prev = node.store.config_get(KIND.name(), "active").map_err(AppError::from)?.map(|e| e.version);
    let value = serde_json::to_value(rules).map_err(failed)?;
    change_config(ctx, node, KIND, "active", Some(value), reason.trim(), prev)
}
