//! The configuration registry (#23 item 4): every kind of versioned state Mamori keeps through
//! its one configuration path, with its type, its check, and who may change it. Security
//! configuration is kept in `config_versions` — the list drift detection (#25) watches; workflow
//! state (access-review campaigns, later maintenance windows) goes through the same versioned,
//! audited path into a table of its own, `workflow_versions`, so a review decision is not a
//! configuration change. Nothing is stored under a kind that is not here (`tests/it/app.rs`
//! checks both tables against it).

use mamori_access::AdminAct;

/// One kind of configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ConfigKind {
    /// A registered application (`mamori_oauth::Client`), by client id.
    Client,
    /// A person's account (`mamori_identity::account::Account`: roles, department, status), by
    /// user name. Credentials are kept apart, never here.
    Account,
    /// An ID-token signing key (public part and sealed private part), by key id.
    SigningKey,
    /// The information-class labelling rules (`mamori_authz::Rules`), key `active`.
    ClassRules,
    /// The access policies (`{"text": Cedar}`), key `active`.
    Policies,
    /// The settings of `mamori.toml` as read at start (retention, identity rules, witness), key
    /// `mamori.toml`.
    Settings,
    /// An access-review campaign (workflow state, in `workflow_versions`), by campaign id.
    AccessReview,
    /// The result of the latest check of the audit trail run from the console or a job
    /// (workflow state, in `workflow_versions`), key `latest`: every run is a version.
    AuditVerification,
    /// The approved configuration baseline (`crate::baseline::Baseline`: a signed note and the
    /// approved values), key `active`.
    Baseline,
    /// A request for a high-risk change under the two-person rule (workflow state, in
    /// `workflow_versions`; `crate::approvals::Request`), by request number: every state it
    /// passes through (requested, approved, refused, withdrawn, expired) is a version.
    ChangeRequest,
    /// Another system's exported settings approved as a baseline of their own (C4,
    /// `crate::external::External`), by name.
    ExternalSettings,
    /// The checks of an external baseline (workflow state; `crate::external::Recorded`), by
    /// name: every check is a version.
    ExternalCheck,
    /// Emergency read-only mode (`crate::emergency::Mode`), key `read-only`: every node applies
    /// it within a second.
    EmergencyMode,
    /// Restore drills (workflow state; `crate::backup::Drill`), key `latest`: every drill is a
    /// version, kept as evidence.
    BackupDrill,
    /// A vendor organisation for remote maintenance (`crate::maintenance::Vendor`), by id.
    MaintenanceVendor,
    /// A remote-maintenance window from request to accepted report (workflow state;
    /// `crate::maintenance::Window`), by id: every state it passes through is a version.
    MaintenanceWindow,
    /// An entry of the register of remote maintenance (`crate::maintenance::RegisterEntry`), by
    /// `vendor/system`.
    MaintenanceRegister,
}

impl ConfigKind {
    /// Every kind.
    pub const ALL: [ConfigKind; 17] = [
        ConfigKind::Client,
        ConfigKind::Account,
        ConfigKind::SigningKey,
        ConfigKind::ClassRules,
        ConfigKind::Policies,
        ConfigKind::Settings,
        ConfigKind::AccessReview,
        ConfigKind::AuditVerification,
        ConfigKind::Baseline,
        ConfigKind::ChangeRequest,
        ConfigKind::ExternalSettings,
        ConfigKind::ExternalCheck,
        ConfigKind::EmergencyMode,
        ConfigKind::BackupDrill,
        ConfigKind::MaintenanceVendor,
        ConfigKind::MaintenanceWindow,
        ConfigKind::MaintenanceRegister,
    ];

    /// The name stored in `config_versions.kind`.
    pub fn name(self) -> &'static str {
        match self {
            ConfigKind::Client => "client",
            ConfigKind::Account => "account",
            ConfigKind::SigningKey => "signing-key",
            ConfigKind::ClassRules => "class-rules",
            ConfigKind::Policies => "policies",
            ConfigKind::Settings => "settings",
            ConfigKind::AccessReview => "access-review",
            ConfigKind::AuditVerification => "audit-verification",
            ConfigKind::Baseline => "baseline",
            ConfigKind::ChangeRequest => "change-request",
            ConfigKind::ExternalSettings => "external-settings",
            ConfigKind::ExternalCheck => "external-check",
            ConfigKind::EmergencyMode => "emergency-mode",
            ConfigKind::BackupDrill => "backup-drill",
            ConfigKind::MaintenanceVendor => "maintenance-vendor",
            ConfigKind::MaintenanceWindow => "maintenance-window",
            ConfigKind::MaintenanceRegister => "maintenance-register",
        }
    }

    /// The kind stored under `name`.
    pub fn parse(name: &str) -> Option<ConfigKind> {
        ConfigKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// What it is, in Japanese and English (for the console and reports).
    pub fn label(self) -> (&'static str, &'static str) {
        match self {
            ConfigKind::Client => ("アプリケーション", "application"),
            ConfigKind::Account => ("利用者アカウント", "account"),
            ConfigKind::SigningKey => ("ID トークン署名鍵", "ID-token signing key"),
            ConfigKind::ClassRules => ("情報区分の付与規則", "information-class rules"),
            ConfigKind::Policies => ("アクセス方針", "access policies"),
            ConfigKind::Settings => ("設定ファイル (mamori.toml)", "settings file (mamori.toml)"),
            ConfigKind::AccessReview => ("権限の見直し", "access review"),
            ConfigKind::AuditVerification => ("監査証跡の検証結果", "audit trail verification"),
            ConfigKind::Baseline => ("構成のベースライン", "configuration baseline"),
            ConfigKind::ChangeRequest => ("変更の承認依頼", "change request"),
            ConfigKind::ExternalSettings => ("外部システムの設定", "external settings"),
            ConfigKind::ExternalCheck => ("外部システムの設定の確認", "external settings check"),
            ConfigKind::EmergencyMode => ("非常時の参照専用モード", "emergency read-only mode"),
            ConfigKind::BackupDrill => ("復元訓練", "restore drill"),
            ConfigKind::MaintenanceVendor => ("保守事業者", "maintenance vendor"),
            ConfigKind::MaintenanceWindow => ("保守作業の時間枠", "maintenance window"),
            ConfigKind::MaintenanceRegister => ("リモートメンテナンス台帳", "remote maintenance register"),
        }
    }

    /// The act a person needs to change it through a use case; `None` for what only the system
    /// writes (the settings, recorded at start from the file the operator edits).
    pub fn changed_through(self) -> Option<AdminAct> {
        match self {
            ConfigKind::Client => Some(AdminAct::ManageClients),
            ConfigKind::Account => Some(AdminAct::ManageUsers),
            ConfigKind::SigningKey => Some(AdminAct::RotateKeys),
            ConfigKind::ClassRules => Some(AdminAct::SetClassRules),
            ConfigKind::Policies => Some(AdminAct::SetPolicies),
            ConfigKind::Settings => None,
            ConfigKind::AccessReview => Some(AdminAct::ReviewAccess),
            ConfigKind::AuditVerification => Some(AdminAct::ReadAudit),
            ConfigKind::Baseline => Some(AdminAct::ApproveBaseline),
            ConfigKind::ChangeRequest => Some(AdminAct::ApproveChange),
            ConfigKind::ExternalSettings => Some(AdminAct::ApproveBaseline),
            ConfigKind::ExternalCheck => Some(AdminAct::ReadAudit),
            ConfigKind::EmergencyMode => Some(AdminAct::EmergencyMode),
            ConfigKind::BackupDrill => None,
            ConfigKind::MaintenanceVendor => Some(AdminAct::ManageUsers),
            ConfigKind::MaintenanceWindow => Some(AdminAct::RequestMaintenance),
            ConfigKind::MaintenanceRegister => Some(AdminAct::ApproveMaintenance),
        }
    }

    /// Whether it is workflow state (kept in `workflow_versions`) rather than security
    /// configuration (kept in `config_versions`, watched for drift, a candidate for the
    /// two-person rule under #25).
    pub fn is_workflow(self) -> bool {
        matches!(
            self,
            ConfigKind::AccessReview
                | ConfigKind::AuditVerification
                | ConfigKind::ChangeRequest
                | ConfigKind::ExternalCheck
                | ConfigKind::BackupDrill
                | ConfigKind::MaintenanceWindow
        )
    }

    /// Checks a value of this kind before it is stored: its shape, and for rules and policies
    /// their own validation. `None` (removing an entry) is always well-formed.
    pub fn validate(self, value: Option<&serde_json::Value>) -> Result<(), String> {
        let Some(v) = value else { return Ok(()) };
        let shape = |e: serde_json::Error| format!("{} value: {e}", self.name());
        match self {
            ConfigKind::Client => {
                let c: mamori_oauth::Client = serde_json::from_value(v.clone()).map_err(shape)?;
                mamori_oauth::ScopeSet::parse(&c.scope).map(|_| ()).map_err(|e| format!("client value: {e}"))
            }
            ConfigKind::Account => {
                serde_json::from_value::<mamori_identity::account::Account>(v.clone()).map(|_| ()).map_err(shape)
            }
            ConfigKind::SigningKey => {
                serde_json::from_value::<mamori_oauth::SigningKey>(v.clone()).map(|_| ()).map_err(shape)
            }
            ConfigKind::ClassRules => {
                let r: mamori_authz::Rules = serde_json::from_value(v.clone()).map_err(shape)?;
                r.validate().map_err(|e| e.to_string())
            }
            ConfigKind::Policies => {
                let text = v.get("text").and_then(serde_json::Value::as_str).ok_or("policies value has no `text`")?;
                mamori_authz::PolicyEngine::new(text).map(|_| ()).map_err(|e| e.to_string())
            }
            ConfigKind::Settings => {
                if v.is_object() {
                    Ok(())
                } else {
                    Err("settings value is not an object".into())
                }
            }
            ConfigKind::AccessReview => {
                serde_json::from_value::<crate::reviews::Campaign>(v.clone()).map(|_| ()).map_err(shape)
            }
            ConfigKind::AuditVerification => {
                serde_json::from_value::<crate::audit_trail::Verification>(v.clone()).map(|_| ()).map_err(shape)
            }
            ConfigKind::Baseline => {
                serde_json::from_value::<crate::baseline::Baseline>(v.clone()).map(|_| ()).map_err(shape)
            }
            ConfigKind::ChangeRequest => {
                serde_json::from_value::<crate::approvals::Request>(v.clone()).map(|_| ()).map_err(shape)
            }
            ConfigKind::ExternalSettings => {
                serde_json::from_value::<crate::external::External>(v.clone()).map(|_| ()).map_err(shape)
            }
            ConfigKind::ExternalCheck => {
                serde_json::from_value::<crate::external::Recorded>(v.clone()).map(|_| ()).map_err(shape)
            }
            ConfigKind::EmergencyMode => {
                serde_json::from_value::<crate::emergency::Mode>(v.clone()).map(|_| ()).map_err(shape)
            }
            ConfigKind::BackupDrill => {
                serde_json::from_value::<crate::backup::Drill>(v.clone()).map(|_| ()).map_err(shape)
            }
            ConfigKind::MaintenanceVendor => {
                serde_json::from_value::<crate::maintenance::Vendor>(v.clone()).map(|_| ()).map_err(shape)
            }
            ConfigKind::MaintenanceWindow => {
                serde_json::from_value::<crate::maintenance::Window>(v.clone()).map(|_| ()).map_err(shape)
            }
            ConfigKind::MaintenanceRegister => {
                serde_json::from_value::<crate::maintenance::RegisterEntry>(v.clone()).map(|_| ()).map_err(shape)
            }
        }
    }
}

impl std::fmt::Display for ConfigKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_values_are_checked() {
        for k in ConfigKind::ALL {
            assert_eq!(ConfigKind::parse(k.name()), Some(k));
            assert!(k.validate(None).is_ok());
        }
        assert_eq!(ConfigKind::parse("nonsense"), None);
        // The stores keep workflow kinds apart by the same list.
        for k in ConfigKind::ALL {
            assert_eq!(k.is_workflow(), mamori_store_sql::WORKFLOW_KINDS.contains(&k.name()), "{k}");
        }
        // A policy text that does not parse, rules of the wrong shape, a client without scope:
        // refused before anything is written.
        assert!(ConfigKind::Policies.validate(Some(&serde_json::json!({"text": "permit("}))).is_err());
        assert!(ConfigKind::Policies.validate(Some(&serde_json::json!({"txt": ""}))).is_err());
        assert!(ConfigKind::ClassRules.validate(Some(&serde_json::json!([1, 2]))).is_err());
        assert!(ConfigKind::Client.validate(Some(&serde_json::json!({"id": "x"}))).is_err());
        assert!(ConfigKind::Settings.validate(Some(&serde_json::json!("x"))).is_err());
        let rules = serde_json::to_value(mamori_authz::default_rules()).unwrap_or_default();
        assert!(ConfigKind::ClassRules.validate(Some(&rules)).is_ok());
        let policies = serde_json::json!({"text": mamori_authz::DEFAULT_POLICIES});
        assert!(ConfigKind::Policies.validate(Some(&policies)).is_ok());
    }
}
