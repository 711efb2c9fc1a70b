//! Authenticator secrets (TOTP seeds) encrypted at rest with ChaCha20-Poly1305 under the data
//! directory's master key. The account name is bound as associated data, so a sealed secret
//! copied to another account does not open.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};

use crate::Error;

/// Seals `plain` for `account`; output is hex(nonce ‖ ciphertext).
pub fn seal(master: &[u8; 32], account: &str, plain: &[u8]) -> Result<String, Error> {
    let cipher = ChaCha20Poly1305::new(Key::from_slice(master));
    let mut nonce = [0u8; 12];
    getrandom::fill(&mut nonce).map_err(|e| Error::Crypto(e.to_string()))?;
    let ct = cipher
        .encrypt(Nonce::from_slice(&nonce), Payload { msg: plain, aad: account.as_bytes() })
        .map_err(|_| Error::Crypto("seal failed".into()))?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&ct);
    Ok(hex::encode(out))
}

/// Opens a sealed secret.
pub fn open(master: &[u8; 32], account: &str, sealed: &str) -> Result<Vec<u8>, Error> {
    let raw = hex::decode(sealed).map_err(|_| Error::Crypto("sealed secret is not hex".into()))?;
    if raw.len() < 12 + 16 {
        return Err(Error::Crypto("sealed secret too short".into()));
    }
    let (nonce, ct) = raw.split_at(12);
    ChaCha20Poly1305::new(Key::from_slice(master))
        .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad: account.as_bytes() })
        .map_err(|_| Error::Crypto("sealed secret does not open (wrong key or account, or altered)".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_and_refuse_misuse() {
        let k = [3u8; 32];
        let s = seal(&k, "sato", b"seed").unwrap_or_default();
        assert_eq!(open(&k, "sato", &s).unwrap_or_default(), b"seed");
        assert!(open(&k, "ito", &s).is_err(), "bound to the account");
        assert!(open(&[4u8; 32], "sato", &s).is_err());
        let mut t = s.clone();
        t.replace_range(30..32, if &s[30..32] == "00" { "11" } else { "00" });
        assert!(open(&k, "sato", &t).is_err(), "tampering is detected");
    }
}
