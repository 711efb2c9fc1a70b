//! Accounts (A1), their credentials, lifecycle (A7) and the two-factor coverage report (A2).

use serde::{Deserialize, Serialize};

/// 身元確認: how a person's identity was verified before the account was issued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proofing {
    /// Method, e.g. `マイナンバーカード eKYC`, `運転免許証 対面確認`.
    pub method: String,
    /// Who verified.
    pub verifier: String,
    /// When (YYYY-MM-DD).
    pub date: String,
}

/// Account status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// May sign in.
    Active,
    /// Disabled by an administrator or for dormancy.
    Disabled,
    /// The person left (退職); never re-enabled.
    Left,
}

/// One account per person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// Login name.
    pub username: String,
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Roles by job type (職種).
    pub roles: Vec<String>,
    /// The person's Practitioner / PractitionerRole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fhir_user: Option<String>,
    /// Business unit (業務単位).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub department: Option<String>,
    /// Identity proofing record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proofing: Option<Proofing>,
    /// Status.
    pub status: Status,
    /// Unix time of creation.
    pub created_at: i64,
    /// An emergency account (非常時用アカウント): its credentials are sealed (e.g. in an envelope
    /// in the director's safe) for when normal sign-in is unavailable. Every use raises an alert;
    /// after first use it works for [`EMERGENCY_WINDOW_SECS`] and then not until rotated.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub emergency: bool,
}

/// How long an opened emergency credential keeps working before it must be rotated (24 h).
pub const EMERGENCY_WINDOW_SECS: i64 = 24 * 3600;

/// A TOTP authenticator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TotpFactor {
    /// The seed, sealed under the master key (see [`crate::secret`]).
    pub sealed_secret: String,
    /// Last accepted step (replay protection).
    pub last_step: Option<i64>,
    /// Unix time of enrolment.
    pub enrolled_at: i64,
}

/// Credentials of one account.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    /// Argon2id PHC string.
    pub password_hash: String,
    /// Unix time of the last change.
    pub password_changed_at: i64,
    /// Initial or reset password: must be changed at first use.
    pub must_change: bool,
    /// Previous hashes, newest first.
    pub history: Vec<String>,
    /// TOTP, if enrolled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub totp: Option<TotpFactor>,
    /// SHA-256 (hex) of each unused recovery code (80 random bits each, single use).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recovery: Vec<String>,
    /// For an emergency account: when its sealed credential was first used (unix seconds);
    /// cleared by rotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emergency_opened_at: Option<i64>,
    /// WebAuthn passkeys / security keys ([`crate::passkey::PasskeyFactor`] as JSON: public keys
    /// and counters, no secret).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub passkeys: Vec<serde_json::Value>,
    /// The random WebAuthn user handle of this account (set at the first passkey).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webauthn_handle: Option<String>,
}

impl Credentials {
    /// The registered passkeys.
    pub fn passkey_factors(&self) -> Vec<crate::passkey::PasskeyFactor> {
        self.passkeys.iter().filter_map(|v| serde_json::from_value(v.clone()).ok()).collect()
    }

    /// Replaces the registered passkeys.
    pub fn set_passkey_factors(&mut self, keys: &[crate::passkey::PasskeyFactor]) {
        self.passkeys = keys.iter().filter_map(|k| serde_json::to_value(k).ok()).collect();
    }

    /// Second factors enrolled (names).
    pub fn second_factors(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.totp.is_some() {
            v.push("totp");
        }
        if !self.passkeys.is_empty() {
            v.push("passkey");
        }
        v
    }
}

/// A valid user name: 3–64 of `a-z 0-9 . _ -`, starting with a letter.
pub fn valid_username(s: &str) -> bool {
    (3..=64).contains(&s.len())
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

/// Two-factor coverage against the FY2027 (令和9年度) deadline.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Coverage {
    /// Active accounts.
    pub active: usize,
    /// Active accounts with a second factor.
    pub with_second_factor: usize,
    /// Active accounts without one (user names).
    pub without: Vec<String>,
    /// Active accounts by second factor (`totp`, `passkey`): how many have each (an account
    /// with both counts in both).
    pub by_factor: std::collections::BTreeMap<String, usize>,
}

impl Coverage {
    /// Share covered, 0–100.
    pub fn percent(&self) -> f64 {
        if self.active == 0 { 100.0 } else { self.with_second_factor as f64 * 100.0 / self.active as f64 }
    }
}
