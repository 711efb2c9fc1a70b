//! [`mamori_oauth::OAuthStore`] on SQLite: clients (read from the configuration path), access
//! tokens, authorization codes, refresh tokens, `jti` replay records and ID-token signing keys.

use mamori_oauth::{Client, CodeRecord, OAuthStore, RefreshRecord, SigningKey, StoreError, TokenRecord};
use rusqlite::{OptionalExtension, TransactionBehavior, params};

use crate::SqliteStore;
use crate::config::{ConfigChange, decode, decode_all};

fn se(e: impl std::fmt::Display) -> StoreError {
    let msg = e.to_string();
    tracing::error!(error = %msg, "oauth store failure");
    StoreError(msg)
}

impl OAuthStore for SqliteStore {
    fn client(&self, id: &str) -> Result<Option<Client>, StoreError> {
        Ok(decode(self.config_get("client", id).map_err(se)?).map_err(se)?.map(|(c, _)| c))
    }

    fn insert_token(&self, t: &TokenRecord) -> Result<(), StoreError> {
        let conn = self.writer().map_err(se)?;
        conn.prepare_cached(
            "INSERT INTO access_tokens (sha256, client_id, subject, fhir_user, scope, issued_at, expires_at, revoked, patient, family) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )
        .map_err(se)?
        .execute(params![&t.token_sha256[..], t.client_id, t.subject, t.fhir_user, t.scope, t.issued_at, t.expires_at, i64::from(t.revoked), t.patient, t.family])
        .map_err(se)?;
        self.release_durably(conn).map_err(se)
    }

    fn token(&self, sha256: &[u8; 32]) -> Result<Option<TokenRecord>, StoreError> {
        let conn = self.reader().map_err(se)?;
        let mut st = conn
            .prepare_cached("SELECT client_id, subject, fhir_user, scope, issued_at, expires_at, revoked, patient, family FROM access_tokens WHERE sha256 = ?1")
            .map_err(se)?;
        st.query_row(params![&sha256[..]], |r| {
            Ok(TokenRecord {
                token_sha256: *sha256,
                client_id: r.get(0)?,
                subject: r.get(1)?,
                fhir_user: r.get(2)?,
                scope: r.get(3)?,
                issued_at: r.get(4)?,
                expires_at: r.get(5)?,
                revoked: r.get::<_, i64>(6)? != 0,
                patient: r.get(7)?,
                family: r.get(8)?,
            })
        })
        .optional()
        .map_err(se)
    }

    fn revoke_token(&self, sha256: &[u8; 32]) -> Result<bool, StoreError> {
        let conn = self.writer().map_err(se)?;
        let n =
            conn.execute("UPDATE access_tokens SET revoked = 1 WHERE sha256 = ?1", params![&sha256[..]]).map_err(se)?;
        // A revocation is acknowledged only once durable.
        self.release_durably(conn).map_err(se)?;
        Ok(n > 0)
    }

    fn use_jti(&self, client_id: &str, jti: &str, expires_at: i64, now: i64) -> Result<bool, StoreError> {
        let conn = self.writer().map_err(se)?;
        conn.execute("DELETE FROM client_assertions WHERE expires_at < ?1", params![now]).map_err(se)?;
        let n = conn
            .execute(
                "INSERT OR IGNORE INTO client_assertions (client_id, jti, expires_at) VALUES (?1, ?2, ?3)",
                params![client_id, jti, expires_at],
            )
            .map_err(se)?;
        // Durable before the token it guards is issued, so a crash cannot reopen a replay.
        self.release_durably(conn).map_err(se)?;
        Ok(n == 1)
    }

    fn insert_code(&self, c: &CodeRecord) -> Result<(), StoreError> {
        let data = serde_json::to_string(c).map_err(se)?;
        let conn = self.writer().map_err(se)?;
        // Codes live a minute; forget those an hour past expiry.
        conn.execute("DELETE FROM auth_codes WHERE expires_at < ?1", params![c.expires_at - 3600]).map_err(se)?;
        conn.execute(
            "INSERT INTO auth_codes (sha256, data, expires_at) VALUES (?1, ?2, ?3)",
            params![&c.code_sha256[..], data, c.expires_at],
        )
        .map_err(se)?;
        self.release_durably(conn).map_err(se)
    }

    fn take_code(&self, sha256: &[u8; 32]) -> Result<Option<(CodeRecord, bool)>, StoreError> {
        let conn = self.writer().map_err(se)?;
        let row: Option<(String, i64)> = conn
            .query_row("SELECT data, used FROM auth_codes WHERE sha256 = ?1", params![&sha256[..]], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
            .map_err(se)?;
        let Some((data, used)) = row else {
            drop(conn);
            return Ok(None);
        };
        if used == 0 {
            conn.execute("UPDATE auth_codes SET used = 1 WHERE sha256 = ?1", params![&sha256[..]]).map_err(se)?;
        }
        // Spent durably before any token is issued for it.
        self.release_durably(conn).map_err(se)?;
        let mut rec: CodeRecord = serde_json::from_str(&data).map_err(se)?;
        rec.code_sha256 = *sha256;
        Ok(Some((rec, used == 0)))
    }

    fn insert_refresh(&self, r: &RefreshRecord) -> Result<(), StoreError> {
        let conn = self.writer().map_err(se)?;
        conn.prepare_cached(
            "INSERT INTO refresh_tokens (sha256, family, client_id, subject, fhir_user, scope, patient, issued_at, expires_at, used, revoked) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )
        .map_err(se)?
        .execute(params![
            &r.sha256[..],
            r.family,
            r.client_id,
            r.subject,
            r.fhir_user,
            r.scope,
            r.patient,
            r.issued_at,
            r.expires_at,
            i64::from(r.used),
            i64::from(r.revoked)
        ])
        .map_err(se)?;
        self.release_durably(conn).map_err(se)
    }

    fn refresh_token(&self, sha256: &[u8; 32]) -> Result<Option<RefreshRecord>, StoreError> {
        let conn = self.reader().map_err(se)?;
        conn.prepare_cached(
            "SELECT family, client_id, subject, fhir_user, scope, patient, issued_at, expires_at, used, revoked FROM refresh_tokens WHERE sha256 = ?1",
        )
        .map_err(se)?
        .query_row(params![&sha256[..]], |r| {
            Ok(RefreshRecord {
                sha256: *sha256,
                family: r.get(0)?,
                client_id: r.get(1)?,
                subject: r.get(2)?,
                fhir_user: r.get(3)?,
                scope: r.get(4)?,
                patient: r.get(5)?,
                issued_at: r.get(6)?,
                expires_at: r.get(7)?,
                used: r.get::<_, i64>(8)? != 0,
                revoked: r.get::<_, i64>(9)? != 0,
            })
        })
        .optional()
        .map_err(se)
    }

    fn use_refresh(&self, sha256: &[u8; 32]) -> Result<bool, StoreError> {
        let conn = self.writer().map_err(se)?;
        let n = conn
            .execute("UPDATE refresh_tokens SET used = 1 WHERE sha256 = ?1 AND used = 0", params![&sha256[..]])
            .map_err(se)?;
        self.release_durably(conn).map_err(se)?;
        Ok(n == 1)
    }

    fn revoke_family(&self, family: &str) -> Result<u64, StoreError> {
        let mut conn = self.writer().map_err(se)?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(se)?;
        let a = tx
            .execute("UPDATE access_tokens SET revoked = 1 WHERE family = ?1 AND revoked = 0", params![family])
            .map_err(se)?;
        let r = tx
            .execute("UPDATE refresh_tokens SET revoked = 1 WHERE family = ?1 AND revoked = 0", params![family])
            .map_err(se)?;
        tx.commit().map_err(se)?;
        self.release_durably(conn).map_err(se)?;
        Ok((a + r) as u64)
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
