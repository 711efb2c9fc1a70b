//! [`mamori_identity::service::IdentityStore`] on SQLite.

use mamori_identity::Error;
use mamori_identity::account::{Account, Credentials};
use mamori_identity::lockout;
use mamori_identity::service::IdentityStore;
use mamori_identity::session::Session;
use rusqlite::{OptionalExtension, params};

use crate::{ConfigChange, SqliteStore, decode, decode_all};

fn ie(e: impl std::fmt::Display) -> Error {
    let msg = e.to_string();
    tracing::error!(error = %msg, "identity store failure");
    Error::Storage(msg)
}

impl SqliteStore {
    fn durable_write(&self, sql: &str, p: impl rusqlite::Params) -> Result<usize, Error> {
        let conn = self.writer().map_err(ie)?;
        let n = conn.execute(sql, p).map_err(ie)?;
        self.release_durably(conn).map_err(ie)?;
        Ok(n)
    }

    /// Unix time of an account's last successful login.
    pub fn last_login(&self, username: &str) -> Result<Option<i64>, Error> {
        let c = self.reader().map_err(ie)?;
        let v: Option<Option<i64>> = c
            .query_row("SELECT last_login FROM auth_state WHERE username = ?1", params![username], |r| r.get(0))
            .optional()
            .map_err(ie)?;
        Ok(v.flatten())
    }
}

impl IdentityStore for SqliteStore {
    fn account(&self, username: &str) -> Result<Option<(Account, u64)>, Error> {
        decode(self.config_get("account", username).map_err(ie)?).map_err(ie)
    }

    fn save_account(&self, a: &Account, expected: Option<u64>, actor: &str, reason: &str) -> Result<u64, Error> {
        let value = serde_json::to_value(a).map_err(ie)?;
        self.change_config(&ConfigChange::set("account", &a.username, value, actor, reason, expected))
            .map_err(|e| if e.is_stale() { Error::Conflict(e.to_string()) } else { ie(e) })
    }

    fn accounts(&self) -> Result<Vec<Account>, Error> {
        decode_all(self.config_current("account").map_err(ie)?).map_err(ie)
    }

    fn credentials(&self, username: &str) -> Result<Option<Credentials>, Error> {
        let c = self.reader().map_err(ie)?;
        let v: Option<String> = c
            .query_row("SELECT data FROM credentials WHERE username = ?1", params![username], |r| r.get(0))
            .optional()
            .map_err(ie)?;
        v.map(|s| serde_json::from_str(&s).map_err(ie)).transpose()
    }

    fn save_credentials(&self, username: &str, cr: &Credentials) -> Result<(), Error> {
        let data = serde_json::to_string(cr).map_err(ie)?;
        self.durable_write(
            "INSERT INTO credentials (username, data) VALUES (?1, ?2) ON CONFLICT (username) DO UPDATE SET data = excluded.data",
            params![username, data],
        )
        .map(|_| ())
    }

    fn lockout(&self, username: &str) -> Result<lockout::State, Error> {
        let c = self.reader().map_err(ie)?;
        let v: Option<String> = c
            .query_row("SELECT data FROM auth_state WHERE username = ?1", params![username], |r| r.get(0))
            .optional()
            .map_err(ie)?;
        Ok(v.and_then(|s| serde_json::from_str(&s).ok()).unwrap_or_default())
    }

    fn update_credentials(
        &self,
        username: &str,
        f: &mut dyn FnMut(&mut Credentials) -> Result<bool, Error>,
    ) -> Result<bool, Error> {
        let mut conn = self.writer().map_err(ie)?;
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(ie)?;
        let v: Option<String> = tx
            .query_row("SELECT data FROM credentials WHERE username = ?1", params![username], |r| r.get(0))
            .optional()
            .map_err(ie)?;
        let mut creds: Credentials = v.map(|s| serde_json::from_str(&s).map_err(ie)).transpose()?.unwrap_or_default();
        if !f(&mut creds)? {
            return Ok(false);
        }
        let data = serde_json::to_string(&creds).map_err(ie)?;
        tx.execute(
            "INSERT INTO credentials (username, data) VALUES (?1, ?2) ON CONFLICT (username) DO UPDATE SET data = excluded.data",
            params![username, data],
        )
        .map_err(ie)?;
        tx.commit().map_err(ie)?;
        self.release_durably(conn).map_err(ie)?;
        Ok(true)
    }

    fn update_lockout(&self, username: &str, f: &mut dyn FnMut(&mut lockout::State)) -> Result<lockout::State, Error> {
        let mut conn = self.writer().map_err(ie)?;
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(ie)?;
        let v: Option<String> = tx
            .query_row("SELECT data FROM auth_state WHERE username = ?1", params![username], |r| r.get(0))
            .optional()
            .map_err(ie)?;
        let mut state: lockout::State = v.and_then(|s| serde_json::from_str(&s).ok()).unwrap_or_default();
        f(&mut state);
        let data = serde_json::to_string(&state).map_err(ie)?;
        tx.execute(
            "INSERT INTO auth_state (username, data) VALUES (?1, ?2) ON CONFLICT (username) DO UPDATE SET data = excluded.data",
            params![username, data],
        )
        .map_err(ie)?;
        tx.commit().map_err(ie)?;
        self.release_durably(conn).map_err(ie)?;
        Ok(state)
    }

    fn save_lockout(&self, username: &str, s: &lockout::State, last_login: Option<i64>) -> Result<(), Error> {
        let data = serde_json::to_string(s).map_err(ie)?;
        self.durable_write(
            "INSERT INTO auth_state (username, data, last_login) VALUES (?1, ?2, ?3)
             ON CONFLICT (username) DO UPDATE SET data = excluded.data, last_login = COALESCE(excluded.last_login, auth_state.last_login)",
            params![username, data, last_login],
        )
        .map(|_| ())
    }

    fn session(&self, id: &str) -> Result<Option<Session>, Error> {
        let c = self.reader().map_err(ie)?;
        let v: Option<String> =
            c.query_row("SELECT data FROM sessions WHERE id = ?1", params![id], |r| r.get(0)).optional().map_err(ie)?;
        v.map(|s| serde_json::from_str(&s).map_err(ie)).transpose()
    }

    fn save_session(&self, id: &str, s: &Session) -> Result<(), Error> {
        let data = serde_json::to_string(s).map_err(ie)?;
        self.durable_write(
            "INSERT INTO sessions (id, username, data) VALUES (?1, ?2, ?3) ON CONFLICT (id) DO UPDATE SET data = excluded.data",
            params![id, s.username, data],
        )
        .map(|_| ())
    }

    fn delete_session(&self, id: &str) -> Result<(), Error> {
        self.durable_write("DELETE FROM sessions WHERE id = ?1", params![id]).map(|_| ())
    }

    fn delete_sessions_of(&self, username: &str) -> Result<u64, Error> {
        self.durable_write("DELETE FROM sessions WHERE username = ?1", params![username]).map(|n| n as u64)
    }

    fn revoke_tokens_of(&self, username: &str) -> Result<u64, Error> {
        let r = self.durable_write(
            "UPDATE refresh_tokens SET revoked = 1 WHERE subject = ?1 AND revoked = 0",
            params![username],
        )?;
        self.durable_write("UPDATE access_tokens SET revoked = 1 WHERE subject = ?1 AND revoked = 0", params![username])
            .map(|n| (n + r) as u64)
    }
}
