//! The labeller every write goes through: information classes (情報区分) from the rules in force.

use std::sync::Arc;

use crate::Enforcer;

/// Labels resources with their information classes from the enforcer's current rules.
pub struct ClassLabeler(pub Arc<Enforcer>);

impl mamori_records::Labeler for ClassLabeler {
    fn system(&self) -> &str {
        mamori_authz::SYSTEM
    }

    fn labels(&self, resource_type: &str, body: &serde_json::Value) -> Result<Vec<serde_json::Value>, String> {
        let tax = mamori_authz::taxonomy();
        let classes = mamori_authz::classify(&self.0.rules(), resource_type, body).map_err(|e| e.to_string())?;
        Ok(classes
            .into_iter()
            .map(|c| {
                let display = tax.iter().find(|d| d.code == c).map(|d| d.ja.clone()).unwrap_or_default();
                serde_json::json!({"system": mamori_authz::SYSTEM, "code": c, "display": display})
            })
            .collect())
    }
}
