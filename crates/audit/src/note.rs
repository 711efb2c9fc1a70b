//! C2SP signed notes with Ed25519 (`signed-note`), and checkpoints (`tlog-checkpoint`).
//!
//! A verifier key is `<name>+<hex key id>+<base64(0x01 || public key)>`; the key id is the first
//! four bytes of `SHA-256(<name> || "\n" || 0x01 || public key)`; a signature line is
//! `— <name> <base64(key id || signature)>`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::{Error, Hash};

const ALG_ED25519: u8 = 0x01;

fn key_id(name: &str, public: &VerifyingKey) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update([ALG_ED25519]);
    h.update(public.as_bytes());
    let d: [u8; 32] = h.finalize().into();
    [d[0], d[1], d[2], d[3]]
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && !name.contains('+') && !name.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// A note signer.
pub struct NoteSigner {
    name: String,
    key: SigningKey,
    id: [u8; 4],
}

impl NoteSigner {
    /// A signer from a 32-byte Ed25519 seed.
    pub fn new(name: &str, seed: &[u8; 32]) -> Result<NoteSigner, Error> {
        if !valid_name(name) {
            return Err(Error::Note(format!("`{name}` is not a valid key name")));
        }
        let key = SigningKey::from_bytes(seed);
        let id = key_id(name, &key.verifying_key());
        Ok(NoteSigner { name: name.to_string(), key, id })
    }

    /// The verifier key string.
    pub fn verifier_key(&self) -> String {
        let mut k = vec![ALG_ED25519];
        k.extend_from_slice(self.key.verifying_key().as_bytes());
        format!("{}+{}+{}", self.name, hex::encode(self.id), B64.encode(k))
    }

    /// Signs a note body (which must end with a newline) and returns the whole signed note.
    pub fn sign(&self, body: &str) -> Result<String, Error> {
        if !body.ends_with('\n') || body.contains("\n\n") {
            return Err(Error::Note("a note body ends with one newline and has no blank lines".into()));
        }
        let sig = self.key.sign(body.as_bytes());
        let mut blob = self.id.to_vec();
        blob.extend_from_slice(&sig.to_bytes());
        Ok(format!("{body}\n\u{2014} {} {}\n", self.name, B64.encode(blob)))
    }
}

/// A parsed verifier key.
#[derive(Debug, Clone)]
pub struct NoteVerifier {
    name: String,
    id: [u8; 4],
    key: VerifyingKey,
}

impl NoteVerifier {
    /// Parses `<name>+<hex id>+<base64 key>`.
    pub fn parse(vkey: &str) -> Result<NoteVerifier, Error> {
        let bad = |m: &str| Error::Note(format!("verifier key: {m}"));
        let mut parts = vkey.trim().splitn(3, '+');
        let (Some(name), Some(id_hex), Some(k64)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad("expected name+id+key"));
        };
        let raw = B64.decode(k64).map_err(|_| bad("key is not base64"))?;
        let (alg, pk) = raw.split_first().ok_or_else(|| bad("empty key"))?;
        if *alg != ALG_ED25519 {
            return Err(bad("only Ed25519 keys are supported"));
        }
        let pk: [u8; 32] = pk.try_into().map_err(|_| bad("an Ed25519 key has 32 bytes"))?;
        let key = VerifyingKey::from_bytes(&pk).map_err(|_| bad("not a valid Ed25519 key"))?;
        let id = key_id(name, &key);
        if hex::encode(id) != id_hex {
            return Err(bad("key id does not match name and key"));
        }
        Ok(NoteVerifier { name: name.to_string(), id, key })
    }

    /// Verifies a signed note; returns its body.
    pub fn verify<'a>(&self, note: &'a str) -> Result<&'a str, Error> {
        let split = note.rfind("\n\n").ok_or_else(|| Error::Note("no signature block".into()))?;
        let body = note.get(..=split).ok_or_else(|| Error::Note("bad note".into()))?;
        let sigs = note.get(split + 2..).unwrap_or_default();
        for line in sigs.lines() {
            let Some(rest) = line.strip_prefix("\u{2014} ") else {
                return Err(Error::Note("malformed signature line".into()));
            };
            let Some((name, b64)) = rest.rsplit_once(' ') else { continue };
            if name != self.name {
                continue;
            }
            let blob = B64.decode(b64).map_err(|_| Error::Note("signature is not base64".into()))?;
            if blob.len() != 68 || blob.get(..4) != Some(&self.id[..]) {
                continue;
            }
            let sig = Signature::from_slice(blob.get(4..).unwrap_or_default())
                .map_err(|_| Error::Note("bad signature".into()))?;
            return self
                .key
                .verify(body.as_bytes(), &sig)
                .map(|()| body)
                .map_err(|_| Error::Note("signature does not verify".into()));
        }
        Err(Error::Note(format!("no signature by `{}`", self.name)))
    }
}

/// A checkpoint body: origin, tree size, base64 root hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Log origin (unique name).
    pub origin: String,
    /// Tree size.
    pub size: u64,
    /// Root hash.
    pub root: Hash,
}

impl Checkpoint {
    /// The note body.
    pub fn body(&self) -> String {
        format!("{}\n{}\n{}\n", self.origin, self.size, B64.encode(self.root))
    }

    /// Parses a checkpoint note body (extension lines are ignored).
    pub fn parse(body: &str) -> Result<Checkpoint, Error> {
        let mut lines = body.lines();
        let bad = || Error::Note("malformed checkpoint".into());
        let origin = lines.next().filter(|o| !o.is_empty()).ok_or_else(bad)?.to_string();
        let size: u64 = lines.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
        let root: Hash =
            lines.next().and_then(|r| B64.decode(r).ok()).and_then(|r| r.try_into().ok()).ok_or_else(bad)?;
        Ok(Checkpoint { origin, size, root })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_and_refuse_forgeries() {
        let s = NoteSigner::new("mamori.test/audit", &[7u8; 32]).unwrap();
        let vkey = s.verifier_key();
        assert!(vkey.starts_with("mamori.test/audit+"));
        let v = NoteVerifier::parse(&vkey).unwrap();
        let cp = Checkpoint { origin: "mamori.test/audit".into(), size: 3, root: [9u8; 32] };
        let note = s.sign(&cp.body()).unwrap();
        assert!(note.contains("\n\n\u{2014} mamori.test/audit "));
        let body = v.verify(&note).unwrap();
        assert_eq!(Checkpoint::parse(body).unwrap(), cp);

        let tampered = note.replacen("\n3\n", "\n4\n", 1);
        assert!(v.verify(&tampered).is_err());
        let other = NoteSigner::new("mamori.test/audit", &[8u8; 32]).unwrap();
        assert!(v.verify(&other.sign(&cp.body()).unwrap()).is_err(), "another key with the same name is refused");
        assert!(NoteVerifier::parse("name+00000000+AQ==").is_err());
        assert!(NoteVerifier::parse(&vkey.replace("mamori.test", "evil.test")).is_err());
    }
}
