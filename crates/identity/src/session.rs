//! Browser sessions (A6): a random 256-bit token in an HttpOnly cookie (only its SHA-256 is
//! stored), bound to the browser that made it, with an idle lock and an absolute lifetime. A
//! session is *full* only after both factors; before that it can only continue the login.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Where a login stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    /// Password accepted; the TOTP code is next.
    NeedTotp,
    /// Password accepted; no second factor yet: enrol one first.
    NeedEnrol,
    /// Both factors done, but the password must be changed first.
    NeedPasswordChange,
    /// Signed in with two factors: may reach data and single sign-on.
    Full,
}

/// A stored session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// Account.
    pub username: String,
    /// Login stage.
    pub stage: Stage,
    /// Unix time the session began.
    pub created: i64,
    /// Unix time of the last request.
    pub last_seen: i64,
    /// SHA-256 (hex) of the browser's User-Agent: a session is not usable from another terminal.
    pub browser: String,
    /// TOTP seed being enrolled (sealed), between showing it and confirming it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_totp: Option<String>,
    /// A WebAuthn ceremony in progress ([`crate::passkey::Ceremony`] as JSON), server-side only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_webauthn: Option<serde_json::Value>,
    /// How the person signed in, as RFC 8176 methods (`pwd`, `otp`, `hwk`, `mfa`): set when
    /// the second factor is accepted; the ID token's `amr`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub amr: Vec<String>,
}

/// Session lifetimes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Policy {
    /// Idle auto-lock (default 15 min).
    pub idle_secs: i64,
    /// Absolute lifetime (default 12 h).
    pub absolute_secs: i64,
    /// A login must finish within this (default 10 min).
    pub login_secs: i64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy { idle_secs: 15 * 60, absolute_secs: 12 * 3600, login_secs: 10 * 60 }
    }
}

/// Why a session is not valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    /// No such session (or logged out).
    Unknown,
    /// Idle too long.
    Idle,
    /// Older than the absolute lifetime.
    Expired,
    /// Presented by another browser.
    OtherBrowser,
}

/// SHA-256 hex of a string (session tokens, browser fingerprints).
pub fn digest(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

impl Policy {
    /// Checks a session at `now` from a browser.
    pub fn check(&self, s: &Session, now: i64, browser: &str) -> Result<(), Invalid> {
        let idle = if s.stage == Stage::Full { self.idle_secs } else { self.login_secs };
        if s.browser != digest(browser) {
            Err(Invalid::OtherBrowser)
        } else if now - s.created > self.absolute_secs || (s.stage != Stage::Full && now - s.created > self.login_secs)
        {
            Err(Invalid::Expired)
        } else if now - s.last_seen > idle {
            Err(Invalid::Idle)
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_absolute_and_browser_binding() {
        let p = Policy::default();
        let s = Session {
            username: "a".into(),
            stage: Stage::Full,
            created: 0,
            last_seen: 0,
            browser: digest("UA1"),
            pending_totp: None,
            pending_webauthn: None,
            amr: Vec::new(),
        };
        assert_eq!(p.check(&s, 900, "UA1"), Ok(()));
        assert_eq!(p.check(&s, 901, "UA1"), Err(Invalid::Idle));
        assert_eq!(p.check(&s, 10, "UA2"), Err(Invalid::OtherBrowser));
        let active = Session { last_seen: 43_199, ..s.clone() };
        assert_eq!(p.check(&active, 43_201, "UA1"), Err(Invalid::Expired));
        let half = Session { stage: Stage::NeedTotp, ..s };
        assert_eq!(p.check(&half, 601, "UA1"), Err(Invalid::Expired), "a login must finish in 10 minutes");
    }
}
