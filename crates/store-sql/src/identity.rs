//! [`mamori_identity::service::IdentityStore`]: account definitions through the configuration
//! path, credentials, lockout counters and sessions — shared by every process on the store.

use mamori_identity::Error as IdError;
use mamori_identity::account::{Account, Credentials};
use mamori_identity::lockout;
use mamori_identity::service::IdentityStore;
use mamori_identity::session::Session;

use crate::{Conn, Db, Error, SqlStore, decode, decode_all, vals};

fn ie(e: impl std::fmt::Display) -> IdError {
    let msg = e.to_string();
    tracing::error!(error = %msg, "identity store failure");
    IdError::Storage(msg)
}

impl From<Error> for IdError {
    fn from(e: Error) -> Self {
        if e.is_stale() { IdError::Conflict(e.to_string()) } else { ie(e) }
    }
}

fn data_of(c: &mut dyn Conn, sql: &str, key: &str) -> Result<Option<String>, Error> {
    c.one(sql, &vals![key])?.map(|r| r.text(0)).transpose()
}

const PUT_CREDENTIALS: &str = "INSERT INTO credentials (username, data) VALUES (?1, ?2) ON CONFLICT (username) DO UPDATE SET data = excluded.data";

impl<D: Db> SqlStore<D> {
    /// Unix time of an account's last successful login.
    pub fn last_login(&self, username: &str) -> Result<Option<i64>, Error> {
        let r = self
            .db
            .read_statement(|c| c.one("SELECT last_login FROM auth_state WHERE username = ?1", &vals![username]))?;
        Ok(r.map(|r| r.opt_int(0)).transpose()?.flatten())
    }
}

impl<D: Db> IdentityStore for SqlStore<D> {
    fn account(&self, username: &str) -> Result<Option<(Account, u64)>, IdError> {
        decode(self.config_get("account", username)?).map_err(ie)
    }

    fn save_account(&self, a: &Account, expected: Option<u64>, actor: &str, reason: &str) -> Result<u64, IdError> {
        let value = serde_json::to_value(a).map_err(ie)?;
        Ok(self.set_config("account", &a.username, value, actor, reason, expected)?)
    }

    fn accounts(&self) -> Result<Vec<Account>, IdError> {
        decode_all(self.config_current("account")?).map_err(ie)
    }

    fn credentials(&self, username: &str) -> Result<Option<Credentials>, IdError> {
        self.db
            .read_statement(|c| data_of(c, "SELECT data FROM credentials WHERE username = ?1", username))?
            .map(|s| serde_json::from_str(&s).map_err(ie))
            .transpose()
    }

    fn save_credentials(&self, username: &str, cr: &Credentials) -> Result<(), IdError> {
        let data = serde_json::to_string(cr).map_err(ie)?;
        self.db.exec(PUT_CREDENTIALS, &vals![username, data])?;
        Ok(())
    }

    fn lockout(&self, username: &str) -> Result<lockout::State, IdError> {
        let v = self.db.read_statement(|c| data_of(c, "SELECT data FROM auth_state WHERE username = ?1", username))?;
        Ok(v.and_then(|s| serde_json::from_str(&s).ok()).unwrap_or_default())
    }

    fn update_credentials(
        &self,
        username: &str,
        f: &mut dyn FnMut(&mut Credentials) -> Result<bool, IdError>,
    ) -> Result<bool, IdError> {
        // In a write transaction: a concurrent use (a recovery code, a TOTP step) on any process
        // waits and then sees this one.
        self.db.write(|c| {
            let data = data_of(c, "SELECT data FROM credentials WHERE username = ?1", username)?;
            let mut creds: Credentials =
                data.map(|s| serde_json::from_str(&s).map_err(ie)).transpose()?.unwrap_or_default();
            if !f(&mut creds)? {
                return Ok(false);
            }
            let data = serde_json::to_string(&creds).map_err(ie)?;
            c.execute(PUT_CREDENTIALS, &vals![username, data])?;
            Ok(true)
        })
    }

    fn update_lockout(
        &self,
        username: &str,
        f: &mut dyn FnMut(&mut lockout::State),
    ) -> Result<lockout::State, IdError> {
        // Concurrent failures on any process queue here: none is lost.
        self.db.write(|c| {
            let data = data_of(c, "SELECT data FROM auth_state WHERE username = ?1", username)?;
            let mut state: lockout::State = data.and_then(|s| serde_json::from_str(&s).ok()).unwrap_or_default();
            f(&mut state);
            let data = serde_json::to_string(&state).map_err(ie)?;
            c.execute(
                "INSERT INTO auth_state (username, data) VALUES (?1, ?2) ON CONFLICT (username) DO UPDATE SET data = excluded.data",
                &vals![username, data],
            )?;
            Ok(state)
        })
    }

    fn save_lockout(&self, username: &str, s: &lockout::State, last_login: Option<i64>) -> Result<(), IdError> {
        let data = serde_json::to_string(s).map_err(ie)?;
        self.db.exec(
            "INSERT INTO auth_state (username, data, last_login) VALUES (?1, ?2, ?3)
             ON CONFLICT (username) DO UPDATE SET data = excluded.data, last_login = COALESCE(excluded.last_login, auth_state.last_login)",
            &vals![username, data, last_login],
        )?;
        Ok(())
    }

    fn session(&self, id: &str) -> Result<Option<Session>, IdError> {
        self.db
            .read_statement(|c| data_of(c, "SELECT data FROM sessions WHERE id = ?1", id))?
            .map(|s| serde_json::from_str(&s).map_err(ie))
            .transpose()
    }

    fn save_session(&self, id: &str, s: &Session) -> Result<(), IdError> {
        let data = serde_json::to_string(s).map_err(ie)?;
        self.db.exec(
            "INSERT INTO sessions (id, username, data) VALUES (?1, ?2, ?3) ON CONFLICT (id) DO UPDATE SET data = excluded.data",
            &vals![id, s.username.as_str(), data],
        )?;
        Ok(())
    }

    fn delete_session(&self, id: &str) -> Result<(), IdError> {
        self.db.exec("DELETE FROM sessions WHERE id = ?1", &vals![id])?;
        Ok(())
    }

    fn delete_sessions_of(&self, username: &str) -> Result<u64, IdError> {
        Ok(self.db.exec("DELETE FROM sessions WHERE username = ?1", &vals![username])?)
    }

    fn revoke_tokens_of(&self, username: &str) -> Result<u64, IdError> {
        Ok(self.db.write(|c| -> Result<u64, Error> {
            let r = c.execute(
                "UPDATE refresh_tokens SET revoked = TRUE WHERE subject = ?1 AND NOT revoked",
                &vals![username],
            )?;
            let a = c.execute(
                "UPDATE access_tokens SET revoked = TRUE WHERE subject = ?1 AND NOT revoked",
                &vals![username],
            )?;
            Ok(a + r)
        })?)
    }
}
