//! WebAuthn passkeys and security keys as the second factor (A2), on webauthn-rs: registration at
//! enrolment (or later from the account page), then the assertion after the password. The
//! relying party is the server's public URL (its host is the RP ID), so a passkey works only on
//! this site. Ceremony state lives in the server-side session record, never with the browser.

use serde::{Deserialize, Serialize};
use webauthn_rs::prelude::{
    Passkey, PasskeyAuthentication, PasskeyRegistration, PublicKeyCredential, RegisterPublicKeyCredential, Url, Uuid,
};

use crate::Error;

/// A registered passkey as stored with the account's credentials (public key and counter; no
/// secret).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PasskeyFactor {
    /// A name the person gave it (or a default).
    pub name: String,
    /// Unix seconds.
    pub enrolled_at: i64,
    /// Unix seconds of the last successful use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used: Option<i64>,
    /// The webauthn-rs credential (id, public key, counter, backup state).
    pub credential: Passkey,
}

/// A ceremony in progress, kept in the session.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Ceremony {
    /// Registering a new passkey.
    Register(PasskeyRegistration),
    /// Proving possession of a registered one.
    Authenticate(PasskeyAuthentication),
}

/// The relying party: this server.
pub struct RelyingParty(webauthn_rs::Webauthn);

impl std::fmt::Debug for RelyingParty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RelyingParty")
    }
}

fn we(e: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("webauthn: {e}"))
}

impl RelyingParty {
    /// The relying party for a public URL such as `https://ehr.example.jp` (RP ID = its host).
    /// WebAuthn needs a domain name: an IP-address URL yields an error (use `localhost` for a
    /// local test, a DNS name in production).
    pub fn new(public_url: &str) -> Result<RelyingParty, Error> {
        let origin = Url::parse(public_url).map_err(we)?;
        let host = origin.host_str().ok_or_else(|| we("the public URL has no host"))?.to_string();
        if host.parse::<std::net::IpAddr>().is_ok() || host.starts_with('[') {
            return Err(we("passkeys need a domain name in the public URL, not an IP address"));
        }
        let w = webauthn_rs::WebauthnBuilder::new(&host, &origin).map_err(we)?.rp_name("Mamori").build().map_err(we)?;
        Ok(RelyingParty(w))
    }

    /// Starts registration for an account: (options for `navigator.credentials.create`, state).
    pub fn begin_register(
        &self,
        user_id: Uuid,
        username: &str,
        display: &str,
        existing: &[PasskeyFactor],
    ) -> Result<(serde_json::Value, Ceremony), Error> {
        let exclude = existing.iter().map(|p| p.credential.cred_id().clone()).collect::<Vec<_>>();
        let (options, state) = self
            .0
            .start_passkey_registration(user_id, username, display, (!exclude.is_empty()).then_some(exclude))
            .map_err(we)?;
        Ok((serde_json::to_value(options).map_err(we)?, Ceremony::Register(state)))
    }

    /// Finishes registration with the browser's response (JSON).
    pub fn finish_register(&self, response: &str, state: &Ceremony) -> Result<Option<Passkey>, Error> {
        let Ceremony::Register(state) = state else { return Ok(None) };
        let Ok(cred) = serde_json::from_str::<RegisterPublicKeyCredential>(response) else { return Ok(None) };
        Ok(self.0.finish_passkey_registration(&cred, state).ok())
    }

    /// Starts an assertion against the account's passkeys.
    pub fn begin_authenticate(&self, keys: &[PasskeyFactor]) -> Result<(serde_json::Value, Ceremony), Error> {
        let creds: Vec<Passkey> = keys.iter().map(|k| k.credential.clone()).collect();
        let (options, state) = self.0.start_passkey_authentication(&creds).map_err(we)?;
        Ok((serde_json::to_value(options).map_err(we)?, Ceremony::Authenticate(state)))
    }

    /// Verifies the browser's assertion (JSON); on success updates the matching passkey's counter
    /// and returns its name. A cloned authenticator (counter going backwards) is refused by
    /// webauthn-rs.
    pub fn finish_authenticate(
        &self,
        response: &str,
        state: &Ceremony,
        keys: &mut [PasskeyFactor],
        now: i64,
    ) -> Option<String> {
        let Ceremony::Authenticate(state) = state else { return None };
        let cred = serde_json::from_str::<PublicKeyCredential>(response).ok()?;
        let result = self.0.finish_passkey_authentication(&cred, state).ok()?;
        let key = keys.iter_mut().find(|k| k.credential.cred_id() == result.cred_id())?;
        key.credential.update_credential(&result);
        key.last_used = Some(now);
        Some(key.name.clone())
    }
}

/// A fresh random user handle (WebAuthn `user.id`): not the user name, so it reveals nothing.
pub fn new_user_handle() -> Result<Uuid, Error> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|e| Error::Crypto(e.to_string()))?;
    Ok(Uuid::from_bytes(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_relying_party_is_the_public_host() {
        assert!(RelyingParty::new("https://ehr.example.jp").is_ok());
        assert!(RelyingParty::new("http://localhost:8080").is_ok());
        assert!(RelyingParty::new("http://127.0.0.1:8080").is_err(), "an IP address cannot be an RP ID");
        assert!(RelyingParty::new("http://[::1]:8080").is_err());
        assert!(RelyingParty::new("not a url").is_err());
    }

    #[test]
    fn garbage_responses_are_refused_without_panicking() {
        let rp = RelyingParty::new("https://ehr.example.jp").unwrap_or_else(|e| unreachable!("{e}"));
        let handle = new_user_handle().unwrap_or_else(|e| unreachable!("{e}"));
        let (options, state) = rp.begin_register(handle, "sato", "佐藤", &[]).unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(options.pointer("/publicKey/rp/id").and_then(|v| v.as_str()), Some("ehr.example.jp"));
        for bad in ["", "{}", "null", "[1,2]", r#"{"id":"x","rawId":"x","type":"public-key","response":{}}"#] {
            assert!(matches!(rp.finish_register(bad, &state), Ok(None)), "{bad}");
        }
        let mut none: Vec<PasskeyFactor> = Vec::new();
        assert!(
            rp.finish_authenticate("{}", &state, &mut none, 0).is_none(),
            "a registration state is not an assertion"
        );
    }
}
