//! [`mamori_oauth::OAuthStore`] on PostgreSQL: clients (read from the configuration path),
//! access tokens, authorization codes, refresh tokens, `jti` replay records and ID-token signing
//! keys.

use mamori_oauth::{Client, CodeRecord, OAuthStore, RefreshRecord, SigningKey, StoreError, TokenRecord};
use tokio_postgres::Row;

use crate::{ConfigChange, Error, PgStore, decode, decode_all, params};

fn se(e: impl std::fmt::Display) -> StoreError {
    let msg = e.to_string();
    tracing::error!(error = %msg, "oauth store failure");
    StoreError(msg)
}

fn token(sha256: &[u8; 32], r: &Row) -> Result<TokenRecord, Error> {
    Ok(TokenRecord {
        token_sha256: *sha256,
        client_id: r.try_get(0)?,
        subject: r.try_get(1)?,
        fhir_user: r.try_get(2)?,
        scope: r.try_get(3)?,
        issued_at: r.try_get(4)?,
        expires_at: r.try_get(5)?,
        revoked: r.try_get(6)?,
        patient: r.try_get(7)?,
        family: r.try_get(8)?,
    })
}

fn refresh(sha256: &[u8; 32], r: &Row) -> Result<RefreshRecord, Error> {
    Ok(RefreshRecord {
        sha256: *sha256,
        family: r.try_get(0)?,
        client_id: r.try_get(1)?,
        subject: r.try_get(2)?,
        fhir_user: r.try_get(3)?,
        scope: r.try_get(4)?,
        patient: r.try_get(5)?,
        issued_at: r.try_get(6)?,
        expires_at: r.try_get(7)?,
        used: r.try_get(8)?,
        revoked: r.try_get(9)?,
    })
}

impl OAuthStore for PgStore {
    fn client(&self, id: &str) -> Result<Option<Client>, StoreError> {
        Ok(decode(self.config_get("client", id).map_err(se)?).map_err(se)?.map(|(c, _)| c))
    }

    fn insert_token(&self, t: &TokenRecord) -> Result<(), StoreError> {
        self.exec(
            "INSERT INTO access_tokens (sha256, client_id, subject, fhir_user, scope, issued_at, expires_at, revoked, patient, family) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            params![
                t.token_sha256.to_vec(),
                t.client_id.clone(),
                t.subject.clone(),
                t.fhir_user.clone(),
                t.scope.clone(),
                t.issued_at,
                t.expires_at,
                t.revoked,
                t.patient.clone(),
                t.family.clone()
            ],
        )
        .map_err(se)?;
        Ok(())
    }

    fn token(&self, sha256: &[u8; 32]) -> Result<Option<TokenRecord>, StoreError> {
        self.lease()
            .map_err(se)?
            .opt(
                "SELECT client_id, subject, fhir_user, scope, issued_at, expires_at, revoked, patient, family FROM access_tokens WHERE sha256 = $1",
                params![sha256.to_vec()],
            )
            .map_err(se)?
            .map(|r| token(sha256, &r).map_err(se))
            .transpose()
    }

    fn revoke_token(&self, sha256: &[u8; 32]) -> Result<bool, StoreError> {
        let n = self
            .exec("UPDATE access_tokens SET revoked = TRUE WHERE sha256 = $1", params![sha256.to_vec()])
            .map_err(se)?;
        Ok(n > 0)
    }

    fn use_jti(&self, client_id: &str, jti: &str, expires_at: i64, now: i64) -> Result<bool, StoreError> {
        let mut l = self.lease().map_err(se)?;
        l.execute("DELETE FROM client_assertions WHERE expires_at < $1", params![now]).map_err(se)?;
        // The primary key makes the first use win on every node at once.
        let n = l
            .execute(
                "INSERT INTO client_assertions (client_id, jti, expires_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                params![client_id.to_string(), jti.to_string(), expires_at],
            )
            .map_err(se)?;
        Ok(n == 1)
    }

    fn insert_code(&self, c: &CodeRecord) -> Result<(), StoreError> {
        let data = serde_json::to_string(c).map_err(se)?;
        let mut l = self.lease().map_err(se)?;
        l.execute("DELETE FROM auth_codes WHERE expires_at < $1", params![c.expires_at - 3600]).map_err(se)?;
        l.execute(
            "INSERT INTO auth_codes (sha256, data, expires_at) VALUES ($1, $2, $3)",
            params![c.code_sha256.to_vec(), data, c.expires_at],
        )
        .map_err(se)?;
        Ok(())
    }

    fn take_code(&self, sha256: &[u8; 32]) -> Result<Option<(CodeRecord, bool)>, StoreError> {
        // One statement: of two concurrent redemptions (on any nodes) exactly one sees `used`
        // false before its own update.
        let row = self
            .lease()
            .map_err(se)?
            .opt(
                "UPDATE auth_codes n SET used = TRUE FROM (SELECT sha256, used FROM auth_codes WHERE sha256 = $1 FOR UPDATE) o
                 WHERE n.sha256 = o.sha256 RETURNING n.data, o.used",
                params![sha256.to_vec()],
            )
            .map_err(se)?;
        let Some(r) = row else { return Ok(None) };
        let data: String = r.try_get(0).map_err(se)?;
        let used: bool = r.try_get(1).map_err(se)?;
        let mut rec: CodeRecord = serde_json::from_str(&data).map_err(se)?;
        rec.code_sha256 = *sha256;
        Ok(Some((rec, !used)))
    }

    fn insert_refresh(&self, r: &RefreshRecord) -> Result<(), StoreError> {
        self.exec(
            "INSERT INTO refresh_tokens (sha256, family, client_id, subject, fhir_user, scope, patient, issued_at, expires_at, used, revoked) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            params![
                r.sha256.to_vec(),
                r.family.clone(),
                r.client_id.clone(),
                r.subject.clone(),
                r.fhir_user.clone(),
                r.scope.clone(),
                r.patient.clone(),
                r.issued_at,
                r.expires_at,
                r.used,
                r.revoked
            ],
        )
        .map_err(se)?;
        Ok(())
    }

    fn refresh_token(&self, sha256: &[u8; 32]) -> Result<Option<RefreshRecord>, StoreError> {
        self.lease()
            .map_err(se)?
            .opt(
                "SELECT family, client_id, subject, fhir_user, scope, patient, issued_at, expires_at, used, revoked FROM refresh_tokens WHERE sha256 = $1",
                params![sha256.to_vec()],
            )
            .map_err(se)?
            .map(|r| refresh(sha256, &r).map_err(se))
            .transpose()
    }

    fn use_refresh(&self, sha256: &[u8; 32]) -> Result<bool, StoreError> {
        let n = self
            .exec("UPDATE refresh_tokens SET used = TRUE WHERE sha256 = $1 AND NOT used", params![sha256.to_vec()])
            .map_err(se)?;
        Ok(n == 1)
    }

    fn revoke_family(&self, family: &str) -> Result<u64, StoreError> {
        let mut l = self.lease().map_err(se)?;
        l.transaction("BEGIN", |l| -> Result<u64, Error> {
            let a = l.execute(
                "UPDATE access_tokens SET revoked = TRUE WHERE family = $1 AND NOT revoked",
                params![family.to_string()],
            )?;
            let r = l.execute(
                "UPDATE refresh_tokens SET revoked = TRUE WHERE family = $1 AND NOT revoked",
                params![family.to_string()],
            )?;
            Ok(a + r)
        })
        .map_err(se)
    }

    fn signing_keys(&self) -> Result<Vec<SigningKey>, StoreError> {
        decode_all(self.config_current("signing-key").map_err(se)?).map_err(se)
    }

    fn put_signing_key(&self, k: &SigningKey, reason: &str) -> Result<(), StoreError> {
        let previous = self.config_get("signing-key", &k.kid).map_err(se)?.map(|e| e.version);
        let value = serde_json::to_value(k).map_err(se)?;
        self.change_config(&ConfigChange::set("signing-key", &k.kid, value, "system:oauth", reason, previous))
            .map_err(se)?;
        Ok(())
    }
}
