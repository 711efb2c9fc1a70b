//! Identity (利用者の識別・認証): accounts, the MHLW password rules, Argon2id, TOTP (RFC 6238),
//! lockout with growing delays, and encryption of authenticator secrets at rest. No I/O.

pub mod account;
pub mod lockout;
pub mod passkey;
pub mod password;
pub mod secret;
pub mod service;
pub mod session;
pub mod totp;

/// A message for people, Japanese first, English available.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// 日本語.
    pub ja: String,
    /// English.
    pub en: String,
}

impl Message {
    /// A bilingual message.
    pub fn new(ja: impl Into<String>, en: impl Into<String>) -> Self {
        Message { ja: ja.into(), en: en.into() }
    }
}

impl std::fmt::Display for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} / {}", self.ja, self.en)
    }
}

/// What every failed login says, whatever the cause (A4).
pub fn login_failed() -> Message {
    Message::new("認証に失敗しました", "Authentication failed")
}

/// A fresh 256-bit session token (base16).
pub fn session_token() -> Result<String, Error> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|e| Error::Crypto(e.to_string()))?;
    Ok(hex::encode(b))
}

/// Why an identity operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A password was refused; each reason is bilingual.
    #[error("password refused: {}", .0.iter().map(|m| m.to_string()).collect::<Vec<_>>().join("; "))]
    PasswordRefused(Vec<Message>),
    /// Cryptography failed (bad key, corrupted secret).
    #[error("crypto: {0}")]
    Crypto(String),
    /// Invalid input.
    #[error("{0}")]
    Invalid(String),
    /// No account has this user name.
    #[error("no account `{0}`")]
    NoAccount(String),
    /// The account was changed meanwhile (by another administrator or node); reload and retry.
    #[error("{0}")]
    Conflict(String),
    /// The store or the audit trail failed; the input may have been fine (the detail is for
    /// the log).
    #[error("storage: {0}")]
    Storage(String),
}
