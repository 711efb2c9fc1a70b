//! [`mamori_oauth::OAuthStore`]: clients (read from the configuration path), access tokens,
//! authorization codes, refresh tokens, `jti` replay records and ID-token signing keys.
//!
//! Every change that guards against a replay — a spent code, a used refresh token, a `jti`, a
//! revocation — is durable before the call returns, so a crash cannot reopen it.

use mamori_oauth::{Client, CodeRecord, OAuthStore, RefreshRecord, SigningKey, StoreError, TokenRecord};

use crate::{Db, Error, Row, SqlStore, decode, decode_all, vals};

fn se(e: impl std::fmt::Display) -> StoreError {
    let msg = e.to_string();
    tracing::error!(error = %msg, "oauth store failure");
    StoreError::Failed(msg)
}

impl From<Error> for StoreError {
    fn from(e: Error) -> Self {
        match e {
            Error::Store(s) if s.is_transient() => {
                tracing::warn!(error = %s, "oauth store busy");
                StoreError::Unavailable(s.to_string())
            }
            other => se(other),
        }
    }
}

fn hash(v: Vec<u8>) -> Result<[u8; 32], Error> {
    v.try_into().map_err(|_| Error::corrupt("token hash is not 32 bytes"))
}

fn token(r: &Row) -> Result<TokenRecord, Error> {
    Ok(TokenRecord {
        token_sha256: hash(r.blob(0)?)?,
        client_id: r.text(1)?,
        subject: r.opt_text(2)?,
        fhir_user: r.opt_text(3)?,
        scope: r.text(4)?,
        issued_at: r.int(5)?,
        expires_at: r.int(6)?,
        revoked: r.bool(7)?,
        patient: r.opt_text(8)?,
        family: r.opt_text(9)?,
    })
}

fn refresh(r: &Row) -> Result<RefreshRecord, Error> {
    Ok(RefreshRecord {
        sha256: hash(r.blob(0)?)?,
        family: r.text(1)?,
        client_id: r.text(2)?,
        subject: r.text(3)?,
        fhir_user: r.opt_text(4)?,
        scope: r.text(5)?,
        patient: r.opt_text(6)?,
        issued_at: r.int(7)?,
        expires_at: r.int(8)?,
        used: r.bool(9)?,
        revoked: r.bool(10)?,
    })
}

impl<D: Db> OAuthStore for SqlStore<D> {
    fn client(&self, id: &str) -> Result<Option<Client>, StoreError> {
        Ok(decode(self.config_get("client", id)?).map_err(se)?.map(|(c, _)| c))
    }

    fn insert_token(&self, t: &TokenRecord) -> Result<(), StoreError> {
        self.db.exec(
            "INSERT INTO access_tokens (sha256, client_id, subject, fhir_user, scope, issued_at, expires_at, revoked, patient, family)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            &vals![
                &t.token_sha256[..],
                &t.client_id,
                t.subject.as_deref(),
                t.fhir_user.as_deref(),
                &t.scope,
                t.issued_at,
                t.expires_at,
                t.revoked,
                t.patient.as_deref(),
                t.family.as_deref()
            ],
        )?;
        Ok(())
    }

    fn token(&self, sha256: &[u8; 32]) -> Result<Option<TokenRecord>, StoreError> {
        let r = self.db.read_statement(|c| {
            c.one(
                "SELECT sha256, client_id, subject, fhir_user, scope, issued_at, expires_at, revoked, patient, family
                 FROM access_tokens WHERE sha256 = ?1",
                &vals![&sha256[..]],
            )
        })?;
        Ok(r.as_ref().map(token).transpose()?)
    }

    /// One statement: the token and its client's newest configuration version (with its seal),
    /// instead of two read transactions per API request (#29).
    fn token_with_client(&self, sha256: &[u8; 32]) -> Result<Option<(TokenRecord, Option<Client>)>, StoreError> {
        const TOKEN_COLS: usize = 10;
        static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
            format!(
                "SELECT t.sha256, t.client_id, t.subject, t.fhir_user, t.scope, t.issued_at, t.expires_at, t.revoked, t.patient, t.family,
                        {}, s.seal
                 FROM access_tokens t
                 LEFT JOIN config_versions c ON c.kind = 'client' AND c.key = t.client_id
                 {}
                 WHERE t.sha256 = ?1 ORDER BY c.version DESC LIMIT 1",
                crate::config::VERSION_COLS,
                crate::config::SEAL_JOIN
            )
        });
        debug_assert_eq!(crate::config::table_of("client"), "config_versions");
        let Some(mut r) = self.db.read_statement(|c| c.one(&SQL, &vals![&sha256[..]]))? else { return Ok(None) };
        let t = token(&r)?;
        let version = r.0.split_off(TOKEN_COLS);
        let row = (!matches!(version.first(), Some(crate::Value::Null) | None)).then_some(Row(version));
        let client = decode(self.sealed_or_older("client", &t.client_id, row)?).map_err(se)?.map(|(c, _)| c);
        Ok(Some((t, client)))
    }

    fn revoke_token(&self, sha256: &[u8; 32]) -> Result<bool, StoreError> {
        Ok(self.db.exec("UPDATE access_tokens SET revoked = TRUE WHERE sha256 = ?1", &vals![&sha256[..]])? > 0)
    }

    fn use_jti(&self, client_id: &str, jti: &str, expires_at: i64, now: i64) -> Result<bool, StoreError> {
        Ok(self.db.write(|c| -> Result<bool, Error> {
            c.execute("DELETE FROM client_assertions WHERE expires_at < ?1", &vals![now])?;
            let n = c.execute(
                "INSERT INTO client_assertions (client_id, jti, expires_at) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
                &vals![client_id, jti, expires_at],
            )?;
            Ok(n == 1)
        })?)
    }

    fn insert_code(&self, code: &CodeRecord) -> Result<(), StoreError> {
        let data = serde_json::to_string(code).map_err(se)?;
        Ok(self.db.write(|c| -> Result<(), Error> {
            // Codes live a minute; forget those an hour past expiry.
            c.execute("DELETE FROM auth_codes WHERE expires_at < ?1", &vals![code.expires_at - 3600])?;
            c.execute(
                "INSERT INTO auth_codes (sha256, data, expires_at) VALUES (?1, ?2, ?3)",
                &vals![&code.code_sha256[..], data, code.expires_at],
            )?;
            Ok(())
        })?)
    }

    fn take_code(&self, sha256: &[u8; 32]) -> Result<Option<(CodeRecord, bool)>, StoreError> {
        // In a write transaction: of two concurrent redemptions (on any processes) exactly one
        // sees the code unused.
        let found = self.db.write(|c| -> Result<Option<(String, bool)>, Error> {
            let Some(r) = c.one("SELECT data, used FROM auth_codes WHERE sha256 = ?1", &vals![&sha256[..]])? else {
                return Ok(None);
            };
            let used = r.bool(1)?;
            if !used {
                c.execute("UPDATE auth_codes SET used = TRUE WHERE sha256 = ?1", &vals![&sha256[..]])?;
            }
            Ok(Some((r.text(0)?, used)))
        })?;
        let Some((data, used)) = found else { return Ok(None) };
        let mut rec: CodeRecord = serde_json::from_str(&data).map_err(se)?;
        rec.code_sha256 = *sha256;
        Ok(Some((rec, !used)))
    }

    fn insert_refresh(&self, r: &RefreshRecord) -> Result<(), StoreError> {
        self.db.exec(
            "INSERT INTO refresh_tokens (sha256, family, client_id, subject, fhir_user, scope, patient, issued_at, expires_at, used, revoked)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            &vals![
                &r.sha256[..],
                &r.family,
                &r.client_id,
                &r.subject,
                r.fhir_user.as_deref(),
                &r.scope,
                r.patient.as_deref(),
                r.issued_at,
                r.expires_at,
                r.used,
                r.revoked
            ],
        )?;
        Ok(())
    }

    fn refresh_token(&self, sha256: &[u8; 32]) -> Result<Option<RefreshRecord>, StoreError> {
        let r = self.db.read_statement(|c| {
            c.one(
                "SELECT sha256, family, client_id, subject, fhir_user, scope, patient, issued_at, expires_at, used, revoked
                 FROM refresh_tokens WHERE sha256 = ?1",
                &vals![&sha256[..]],
            )
        })?;
        Ok(r.as_ref().map(refresh).transpose()?)
    }

    fn use_refresh(&self, sha256: &[u8; 32]) -> Result<bool, StoreError> {
        Ok(self.db.exec("UPDATE refresh_tokens SET used = TRUE WHERE sha256 = ?1 AND NOT used", &vals![&sha256[..]])?
            == 1)
    }

    fn revoke_family(&self, family: &str) -> Result<u64, StoreError> {
        Ok(self.db.write(|c| -> Result<u64, Error> {
            let a =
                c.execute("UPDATE access_tokens SET revoked = TRUE WHERE family = ?1 AND NOT revoked", &vals![family])?;
            let r = c.execute(
                "UPDATE refresh_tokens SET revoked = TRUE WHERE family = ?1 AND NOT revoked",
                &vals![family],
            )?;
            Ok(a + r)
        })?)
    }

    fn signing_keys(&self) -> Result<Vec<SigningKey>, StoreError> {
        decode_all(self.config_current("signing-key")?).map_err(se)
    }

    fn put_signing_key(&self, k: &SigningKey, reason: &str) -> Result<(), StoreError> {
        let previous = self.config_get("signing-key", &k.kid)?.map(|e| e.version);
        let value = serde_json::to_value(k).map_err(se)?;
        self.set_config("signing-key", &k.kid, value, "system:oauth", reason, previous)?;
        Ok(())
    }
}
