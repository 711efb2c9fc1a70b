//! Administrative acts (管理操作): registering applications, changing policies and rules, the user
//! lifecycle, reviews. The application layer asks the enforcement point before each one, whoever
//! the caller is — a person signed in to the console, or a person at the command line — so the
//! console and the CLI cannot grant different rights.
//!
//! An act is decided by the same Cedar policies as every FHIR request: `execute` on the system
//! itself (a resource of type [`SYSTEM_TYPE`], information class `system`, no patient), with the
//! act's name as the operation. The shipped policies give the system administrator
//! (システム管理者) the operational acts and the security manager (安全管理責任者) the acts that
//! decide who may see what (docs/ACCESS-RIGHTS.md). Applications never administer.

use std::collections::BTreeSet;

use mamori_authz::{Act, Situation, Subject, Target};

use crate::Enforcer;

/// The resource type administrative acts are decided on: no FHIR type has this name.
pub const SYSTEM_TYPE: &str = "Mamori";

/// The role of a maintenance account (保守事業者の作業者): nothing outside an approved window.
pub const MAINTENANCE_ROLE: &str = "maintenance_vendor";

/// Why an act is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The caller's rights do not cover it (403); the message says which rule refused.
    #[error("{0}")]
    Forbidden(String),
    /// No policy set could be read, so nothing is decided (fail closed).
    #[error("the access policy is unavailable")]
    Unavailable,
    /// Stopped by the configuration integrity check (503) until someone reverts or approves.
    #[error("{0}")]
    Blocked(String),
}

/// One administrative act, as the policies name it (`context.operation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AdminAct {
    /// Issue, transfer, leave, disable, unlock accounts; enrol and reset their factors.
    ManageUsers,
    /// Register, edit, disable applications; rotate their secrets and keys.
    ManageClients,
    /// Replace the access policies (with their test table).
    SetPolicies,
    /// Replace the information-class labelling rules (情報区分).
    SetClassRules,
    /// Open access-review campaigns and decide their items; run the least-privilege report.
    ReviewAccess,
    /// List break-glass (非常時) uses and close their reviews.
    ReviewBreakGlass,
    /// Rotate the ID-token signing keys.
    RotateKeys,
    /// Delete records whose retention period has passed.
    Purge,
    /// Bulk-load records (each record is still judged as a write).
    Import,
    /// Search, read and export the audit trail, check its checkpoints, explain decisions.
    ReadAudit,
    /// Approve the configuration baseline (C2): the state drift is measured against.
    ApproveBaseline,
    /// Approve or refuse another person's high-risk change (the two-person rule, C3): a change
    /// of policies, class rules or the baseline, a grant of administrative rights, an application
    /// with `system/` scopes. Nobody approves their own.
    ApproveChange,
    /// Switch emergency read-only mode (非常時の参照専用, G5) on or off while serving.
    EmergencyMode,
    /// Request remote maintenance for a vendor and file its work report (保守作業の申請・報告):
    /// the vendor's contact (`vendor_contact`) for their own organisation, the system
    /// administrator on a vendor's behalf.
    RequestMaintenance,
    /// Approve, refuse and end maintenance windows, accept or return their reports, keep the
    /// register of remote maintenance (the institution; never the requester's own).
    ApproveMaintenance,
}

impl AdminAct {
    /// Every act, for tables and tests.
    pub const ALL: [AdminAct; 15] = [
        AdminAct::ManageUsers,
        AdminAct::ManageClients,
        AdminAct::SetPolicies,
        AdminAct::SetClassRules,
        AdminAct::ReviewAccess,
        AdminAct::ReviewBreakGlass,
        AdminAct::RotateKeys,
        AdminAct::Purge,
        AdminAct::Import,
        AdminAct::ReadAudit,
        AdminAct::ApproveBaseline,
        AdminAct::ApproveChange,
        AdminAct::EmergencyMode,
        AdminAct::RequestMaintenance,
        AdminAct::ApproveMaintenance,
    ];

    /// The operation name the policies see.
    pub fn name(self) -> &'static str {
        match self {
            AdminAct::ManageUsers => "manage-users",
            AdminAct::ManageClients => "manage-clients",
            AdminAct::SetPolicies => "set-policies",
            AdminAct::SetClassRules => "set-class-rules",
            AdminAct::ReviewAccess => "review-access",
            AdminAct::ReviewBreakGlass => "review-break-glass",
            AdminAct::RotateKeys => "rotate-keys",
            AdminAct::Purge => "purge",
            AdminAct::Import => "import",
            AdminAct::ReadAudit => "read-audit",
            AdminAct::ApproveBaseline => "approve-baseline",
            AdminAct::ApproveChange => "approve-change",
            AdminAct::EmergencyMode => "emergency-mode",
            AdminAct::RequestMaintenance => "request-maintenance",
            AdminAct::ApproveMaintenance => "approve-maintenance",
        }
    }

    /// The target an act is decided on: the system itself.
    pub fn target() -> Target {
        Target {
            resource_type: SYSTEM_TYPE.to_string(),
            reference: None,
            classes: BTreeSet::from(["system".to_string()]),
            patient_bound: false,
            lab: false,
        }
    }
}

impl std::fmt::Display for AdminAct {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Enforcer {
    /// The window a person holding `roles` works in now from `source`: only a maintenance
    /// account (`maintenance_vendor`) has one; everyone else is judged by their roles alone.
    pub fn window_of_person(
        &self,
        username: &str,
        roles: &[String],
        source: Option<&str>,
    ) -> Option<std::sync::Arc<mamori_authz::Window>> {
        if roles.iter().any(|r| r == MAINTENANCE_ROLE) { self.window_for(username, source) } else { None }
    }

    /// Whether `subject` (a person; an application is always refused) may perform `act`, by the
    /// policies in force.
    pub fn authorize_admin(&self, subject: &Subject, act: AdminAct) -> Result<(), Refusal> {
        if matches!(subject, Subject::Client { .. }) {
            return Err(Refusal::Forbidden(format!("applications may not perform administrative acts ({act})")));
        }
        if let Some(why) = self.admin_block(subject) {
            return Err(Refusal::Blocked(why));
        }
        let engine = self.engine().ok_or(Refusal::Unavailable)?;
        let situation = Situation { operation: act.name().to_string(), ..Situation::default() };
        if engine.decide(subject, Act::Execute, &AdminAct::target(), &situation).allowed {
            Ok(())
        } else {
            Err(Refusal::Forbidden(format!("the access policy does not allow {act} for this account's roles")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mamori_authz::PolicyEngine;
    use mamori_records::SystemClock;
    use std::sync::Arc;

    fn person(roles: &[&str]) -> Subject {
        Subject::User {
            username: "u".into(),
            roles: roles.iter().map(|r| (*r).to_string()).collect(),
            department: String::new(),
            has_fhir_user: true,
            window: None,
        }
    }

    /// The shipped policies, act by act and role by role: the security manager decides who may
    /// see what, the system administrator runs the system, nobody else administers.
    #[test]
    fn shipped_policies_give_each_act_to_one_role() -> Result<(), Box<dyn std::error::Error>> {
        let e = Enforcer::new(PolicyEngine::default_policies()?, mamori_authz::default_rules(), Arc::new(SystemClock));
        let security_manager = [
            AdminAct::SetPolicies,
            AdminAct::SetClassRules,
            AdminAct::ReviewAccess,
            AdminAct::ReviewBreakGlass,
            AdminAct::Purge,
            AdminAct::ReadAudit,
            AdminAct::ApproveBaseline,
        ];
        for act in AdminAct::ALL {
            let sm = e.authorize_admin(&person(&["security_manager"]), act).is_ok();
            let sa = e.authorize_admin(&person(&["system_admin"]), act).is_ok();
            if matches!(act, AdminAct::ApproveChange | AdminAct::ApproveMaintenance) {
                // The second person of the two-person rule, and the institution's approval of a
                // maintenance window: either may.
                assert!(sm && sa, "{act} belongs to both");
            } else {
                assert_eq!(sm, security_manager.contains(&act), "security_manager {act}");
                assert_eq!(sa, !security_manager.contains(&act), "system_admin {act}");
            }
            for role in ["doctor", "nurse", "pharmacist", "clerk", "maintenance_vendor"] {
                assert!(e.authorize_admin(&person(&[role]), act).is_err(), "{role} {act}");
            }
            // The vendor's contact requests and reports maintenance, nothing else.
            let contact = e.authorize_admin(&person(&["vendor_contact"]), act).is_ok();
            assert_eq!(contact, act == AdminAct::RequestMaintenance, "vendor_contact {act}");
            // The vendor's forbid overrides any role held beside it.
            assert!(e.authorize_admin(&person(&["system_admin", "maintenance_vendor"]), act).is_err());
            let app = Subject::Client { id: "app".into(), classes: vec!["system".into()] };
            assert!(e.authorize_admin(&app, act).is_err(), "an application {act}");
        }
        Ok(())
    }
}
