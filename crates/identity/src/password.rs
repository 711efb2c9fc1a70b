//! The MHLW password rules (A4) and Argon2id hashing.
//!
//! The MHLW Q&A allows three policies; the institution picks one:
//! - `long`: at least 13 characters mixing letters, digits and symbols (英数字、記号を混在);
//! - `rotate`: at least 8 such characters, changed at least every 2 months;
//! - `second-factor`: at least 8 such characters when the account has a second factor.
//!
//! Always refused: under 8 characters, fewer than three kinds of character, the user name or
//! display name inside it, one of the 100,000 most common passwords, a dictionary word alone
//! (also with digits/symbols only around it), and reuse of the last N passwords.

use std::collections::HashSet;
use std::sync::OnceLock;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use serde::{Deserialize, Serialize};

use crate::{Error, Message};

const COMMON: &str = include_str!("../data/common-passwords.txt");
const DICTIONARY: &str = include_str!("../data/dictionary-words.txt");

fn common() -> &'static HashSet<String> {
    static S: OnceLock<HashSet<String>> = OnceLock::new();
    S.get_or_init(|| COMMON.lines().map(str::to_lowercase).collect())
}

fn dictionary() -> &'static HashSet<&'static str> {
    static S: OnceLock<HashSet<&'static str>> = OnceLock::new();
    S.get_or_init(|| DICTIONARY.lines().collect())
}

/// Which MHLW option the institution follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// ≥ 13 characters.
    Long,
    /// ≥ 8 characters, changed at least every `max_age_days`.
    Rotate,
    /// ≥ 8 characters with a second factor enrolled.
    SecondFactor,
}

/// The password policy in force.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Policy {
    /// Option chosen.
    pub mode: Mode,
    /// Maximum age in `rotate` mode (days; the Q&A says two months).
    pub max_age_days: u32,
    /// How many previous passwords may not be reused.
    pub history: usize,
}

impl Default for Policy {
    fn default() -> Self {
        Policy { mode: Mode::SecondFactor, max_age_days: 60, history: 5 }
    }
}

/// Who the password is for, to refuse passwords built from their names.
#[derive(Debug, Clone, Default)]
pub struct Context<'a> {
    /// Login name.
    pub username: &'a str,
    /// Display name (may be Japanese).
    pub display_name: Option<&'a str>,
    /// Whether a second factor is enrolled (for `second-factor` mode).
    pub has_second_factor: bool,
    /// Argon2id hashes of the previous passwords, newest first.
    pub previous: &'a [String],
}

fn kinds(p: &str) -> (bool, bool, bool) {
    let letter = p.chars().any(char::is_alphabetic);
    let digit = p.chars().any(|c| c.is_ascii_digit());
    let symbol = p.chars().any(|c| !c.is_alphanumeric() && !c.is_whitespace());
    (letter, digit, symbol)
}

/// The password stripped of digits and symbols at both ends (`Sunshine2024!` → `sunshine`).
fn core_word(p: &str) -> String {
    p.trim_matches(|c: char| !c.is_alphabetic()).to_lowercase()
}

impl Policy {
    /// Minimum length under this policy for this account.
    pub fn min_length(&self, ctx: &Context<'_>) -> usize {
        match self.mode {
            Mode::Long => 13,
            Mode::Rotate => 8,
            Mode::SecondFactor if ctx.has_second_factor => 8,
            Mode::SecondFactor => 13,
        }
    }

    /// Checks a candidate; returns every reason it is refused.
    pub fn check(&self, candidate: &str, ctx: &Context<'_>) -> Result<(), Error> {
        let mut why = Vec::new();
        let len = candidate.chars().count();
        let min = self.min_length(ctx);
        if len < min {
            why.push(Message::new(
                format!("パスワードは{min}文字以上にしてください"),
                format!("the password must have at least {min} characters"),
            ));
        }
        if len > 256 {
            why.push(Message::new(
                "パスワードが長すぎます（256文字まで）",
                "the password is too long (256 characters at most)",
            ));
        }
        let (l, d, s) = kinds(candidate);
        if !(l && d && s) {
            why.push(Message::new(
                "英字・数字・記号をすべて含めてください",
                "the password must mix letters, digits and symbols",
            ));
        }
        let lower = candidate.to_lowercase();
        let user = ctx.username.to_lowercase();
        if user.chars().count() >= 3 && lower.contains(&user) {
            why.push(Message::new(
                "パスワードに利用者IDを含めないでください",
                "the password must not contain the user name",
            ));
        }
        if let Some(dn) = ctx.display_name {
            let parts: Vec<String> = dn
                .split(|c: char| c.is_whitespace() || c == '・')
                .filter(|p| p.chars().count() >= 2)
                .map(str::to_lowercase)
                .collect();
            if parts.iter().any(|p| lower.contains(p.as_str())) {
                why.push(Message::new(
                    "パスワードに氏名を含めないでください",
                    "the password must not contain your name",
                ));
            }
        }
        if common().contains(&lower) {
            why.push(Message::new(
                "よく使われるパスワードまたは漏えいしたパスワードは使えません",
                "this is a commonly used or breached password",
            ));
        }
        let core = core_word(candidate);
        if core.chars().count() >= 4 && (dictionary().contains(core.as_str()) || common().contains(&core)) {
            why.push(Message::new(
                "辞書にある単語だけのパスワードは使えません",
                "a dictionary word alone (with digits or symbols around it) is not allowed",
            ));
        }
        if ctx.previous.iter().any(|h| verify(candidate, h)) {
            why.push(Message::new(
                format!("直近{}回に使ったパスワードは使えません", self.history),
                format!("the password was used within the last {} changes", self.history),
            ));
        }
        if why.is_empty() { Ok(()) } else { Err(Error::PasswordRefused(why)) }
    }

    /// Whether a password set at `changed_at_days` (days since the epoch) has expired at `today`.
    pub fn expired(&self, changed_at_days: i64, today: i64) -> bool {
        self.mode == Mode::Rotate && today - changed_at_days > i64::from(self.max_age_days)
    }
}

fn argon2() -> Argon2<'static> {
    // OWASP Password Storage Cheat Sheet: Argon2id, m = 19 MiB, t = 2, p = 1.
    let params = Params::new(19 * 1024, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes a password with Argon2id and a random salt (PHC string).
pub fn hash(password: &str) -> Result<String, Error> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| Error::Crypto(e.to_string()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| Error::Crypto(e.to_string()))?;
    argon2().hash_password(password.as_bytes(), &salt).map(|h| h.to_string()).map_err(|e| Error::Crypto(e.to_string()))
}

/// Verifies a password against a PHC hash (constant time in the password).
pub fn verify(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| argon2().verify_password(password.as_bytes(), &h).is_ok())
}

/// A hash of nothing, verified against on unknown accounts so that timing does not reveal which
/// user names exist.
pub fn dummy_hash() -> &'static str {
    static H: OnceLock<String> = OnceLock::new();
    H.get_or_init(|| hash("not a real password: timing equaliser").unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx<'a>(prev: &'a [String]) -> Context<'a> {
        Context { username: "sato", display_name: Some("佐藤 花子"), has_second_factor: true, previous: prev }
    }

    fn refused(p: &Policy, pw: &str, c: &Context<'_>) -> Vec<String> {
        match p.check(pw, c) {
            Ok(()) => Vec::new(),
            Err(Error::PasswordRefused(m)) => m.into_iter().map(|m| m.en).collect(),
            Err(e) => vec![e.to_string()],
        }
    }

    #[test]
    fn the_three_mhlw_modes() {
        let none: Vec<String> = Vec::new();
        let sf = Policy::default();
        assert!(sf.check("k7#Vq2!mZp", &ctx(&none)).is_ok(), "8+ with a second factor");
        let no2fa = Context { has_second_factor: false, ..ctx(&none) };
        assert!(refused(&sf, "k7#Vq2!mZp", &no2fa)[0].contains("13"), "13 without a second factor");
        let long = Policy { mode: Mode::Long, ..Policy::default() };
        assert!(long.check("k7#Vq2!mZp", &ctx(&none)).is_err());
        assert!(long.check("k7#Vq2!mZp-w9Lx", &ctx(&none)).is_ok());
        let rotate = Policy { mode: Mode::Rotate, ..Policy::default() };
        assert!(rotate.check("k7#Vq2!mZp", &no2fa).is_ok());
        assert!(rotate.expired(0, 61));
        assert!(!rotate.expired(0, 60));
        assert!(!sf.expired(0, 1000));
    }

    #[test]
    fn always_refused() {
        let none: Vec<String> = Vec::new();
        let p = Policy::default();
        let c = ctx(&none);
        assert!(!refused(&p, "k7#Vq2!", &c).is_empty(), "under 8");
        assert!(refused(&p, "abcdefghij12", &c).iter().any(|m| m.contains("symbols")));
        assert!(refused(&p, "Sato#2024!xy", &c).iter().any(|m| m.contains("user name")));
        assert!(refused(&p, "花子#2024!xyz", &c).iter().any(|m| m.contains("your name")));
        assert!(refused(&p, "password123!", &c).iter().any(|m| m.contains("dictionary") || m.contains("common")));
        assert!(refused(&p, "Sunshine2024!", &c).iter().any(|m| m.contains("dictionary")));
        assert!(refused(&p, "iloveyou", &c).iter().any(|m| m.contains("common")));
        assert_eq!(COMMON.lines().count(), 100_000, "the shipped list is the 100k most common");
        assert!(common().len() > 90_000, "compared case-insensitively");
    }

    #[test]
    fn argon2id_and_no_reuse() {
        let h = hash("k7#Vq2!mZp").unwrap_or_default();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(verify("k7#Vq2!mZp", &h));
        assert!(!verify("k7#Vq2!mZq", &h));
        assert!(!verify("x", "not a hash"));
        let prev = vec![h];
        let p = Policy::default();
        assert!(refused(&p, "k7#Vq2!mZp", &ctx(&prev)).iter().any(|m| m.contains("used within")));
    }
}
