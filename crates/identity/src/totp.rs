//! TOTP (RFC 6238): HMAC-SHA-1, 6 digits, 30-second steps, ±1 step of clock skew, and each code
//! accepted once (the last accepted step is kept and earlier-or-equal steps are refused).
//! SHA-1 because that is what authenticator apps implement.

use hmac::{Hmac, Mac};
use sha1::Sha1;
use subtle::ConstantTimeEq;

use crate::Error;

/// Step length in seconds.
pub const STEP: i64 = 30;
/// Digits per code.
pub const DIGITS: u32 = 6;

/// HOTP (RFC 4226) value for a counter, with `digits` digits.
pub fn hotp(secret: &[u8], counter: u64, digits: u32) -> Result<u32, Error> {
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(secret).map_err(|e| Error::Crypto(e.to_string()))?;
    mac.update(&counter.to_be_bytes());
    let h = mac.finalize().into_bytes();
    let offset = usize::from(h.get(19).copied().unwrap_or(0) & 0x0f);
    let b: [u8; 4] =
        h.get(offset..offset + 4).and_then(|b| b.try_into().ok()).ok_or_else(|| Error::Crypto("hmac output".into()))?;
    let bin = u32::from_be_bytes(b) & 0x7fff_ffff;
    Ok(bin % 10u32.pow(digits))
}

/// The code for a Unix time.
pub fn code_at(secret: &[u8], unix: i64) -> Result<String, Error> {
    let step = u64::try_from(unix.div_euclid(STEP)).map_err(|_| Error::Invalid("time before 1970".into()))?;
    Ok(format!("{:06}", hotp(secret, step, DIGITS)?))
}

/// Checks a code at `unix` time. Returns the matched step, which must then be stored as the
/// last used step; a code at or before `last_step` is refused (replay).
pub fn verify(secret: &[u8], code: &str, unix: i64, last_step: Option<i64>) -> Option<i64> {
    let code = code.trim();
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let now = unix.div_euclid(STEP);
    let mut matched = None;
    // Check all three windows without early exit so timing does not reveal which matched.
    for step in [now - 1, now, now + 1] {
        let Ok(s) = u64::try_from(step) else { continue };
        let Ok(expected) = hotp(secret, s, DIGITS) else { continue };
        let expected = format!("{expected:06}");
        if bool::from(expected.as_bytes().ct_eq(code.as_bytes())) && last_step.is_none_or(|l| step > l) {
            matched = Some(step);
        }
    }
    matched
}

/// A new random 160-bit secret.
pub fn new_secret() -> Result<[u8; 20], Error> {
    let mut s = [0u8; 20];
    getrandom::fill(&mut s).map_err(|e| Error::Crypto(e.to_string()))?;
    Ok(s)
}

/// RFC 4648 base32 without padding (what `otpauth://` URIs carry).
pub fn base32(data: &[u8]) -> String {
    const A: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::new();
    let mut buf: u32 = 0;
    let mut bits = 0;
    for &b in data {
        buf = (buf << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.extend(A.get(((buf >> bits) & 31) as usize).map(|&c| char::from(c)));
        }
    }
    if bits > 0 {
        out.extend(A.get(((buf << (5 - bits)) & 31) as usize).map(|&c| char::from(c)));
    }
    out
}

fn uri_escape(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The `otpauth://totp/…` URI an authenticator app scans.
pub fn otpauth_uri(issuer: &str, account: &str, secret: &[u8]) -> String {
    format!(
        "otpauth://totp/{}:{}?secret={}&issuer={}&algorithm=SHA1&digits=6&period=30",
        uri_escape(issuer),
        uri_escape(account),
        base32(secret),
        uri_escape(issuer)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 Appendix B, SHA-1 rows (8-digit values; the 6-digit code is the last six).
    #[test]
    fn rfc6238_appendix_b_vectors() {
        let secret = b"12345678901234567890";
        for (t, want) in [
            (59i64, 94_287_082u32),
            (1_111_111_109, 7_081_804),
            (1_111_111_111, 14_050_471),
            (1_234_567_890, 89_005_924),
            (2_000_000_000, 69_279_037),
            (20_000_000_000, 65_353_130),
        ] {
            assert_eq!(hotp(secret, (t / 30) as u64, 8).unwrap_or(0), want, "T={t}");
            assert_eq!(code_at(secret, t).unwrap_or_default(), format!("{:06}", want % 1_000_000));
        }
    }

    #[test]
    fn window_and_replay() {
        let s = b"12345678901234567890";
        let t = 1_111_111_111;
        let now = code_at(s, t).unwrap_or_default();
        let prev = code_at(s, t - 30).unwrap_or_default();
        let next = code_at(s, t + 30).unwrap_or_default();
        let far = code_at(s, t - 90).unwrap_or_default();
        let step = verify(s, &now, t, None).unwrap_or(-1);
        assert_eq!(step, t / 30);
        assert!(verify(s, &prev, t, None).is_some(), "one step of skew back");
        assert!(verify(s, &next, t, None).is_some(), "one step of skew forward");
        assert!(verify(s, &far, t, None).is_none());
        assert!(verify(s, &now, t, Some(step)).is_none(), "each code is accepted once");
        assert!(verify(s, &prev, t, Some(step)).is_none(), "older codes after a newer one are refused");
        assert!(verify(s, "12345", t, None).is_none());
        assert!(verify(s, "abcdef", t, None).is_none());
    }

    #[test]
    fn base32_and_uri() {
        assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
        assert_eq!(base32(b"12345678901234567890"), "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
        let u = otpauth_uri("Mamori 守り", "dr.sato", b"12345678901234567890");
        assert!(u.starts_with("otpauth://totp/Mamori%20%E5%AE%88%E3%82%8A:dr.sato?secret=GEZDGNBVGY3TQOJQ"));
    }
}
