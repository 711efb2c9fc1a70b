//! [`mamori_identity::service::IdentityStore`] on PostgreSQL: credentials, lockout counters and
//! sessions shared by every node.

use mamori_identity::Error;
use mamori_identity::account::{Account, Credentials};
use mamori_identity::lockout;
use mamori_identity::service::IdentityStore;
use mamori_identity::session::Session;

use crate::{ConfigChange, PgStore, decode, decode_all, params};

fn ie(e: impl std::fmt::Display) -> Error {
    let msg = e.to_string();
    tracing::error!(error = %msg, "identity store failure");
    Error::Storage(msg)
}

impl From<crate::Error> for Error {
    fn from(e: crate::Error) -> Self {
        ie(e)
    }
}

impl PgStore {
    fn text_of(&self, sql: &str, key: &str) -> Result<Option<String>, Error> {
        let r = self.lease().map_err(ie)?.opt(sql, params![key.to_string()]).map_err(ie)?;
        r.map(|r| r.try_get::<_, String>(0).map_err(ie)).transpose()
    }

    /// Unix time of an account's last successful login.
    pub fn last_login(&self, username: &str) -> Result<Option<i64>, Error> {
        let r = self
            .lease()
            .map_err(ie)?
            .opt("SELECT last_login FROM auth_state WHERE username = $1", params![username.to_string()])
            .map_err(ie)?;
        Ok(r.map(|r| r.try_get::<_, Option<i64>>(0).map_err(ie)).transpose()?.flatten())
    }
}

impl IdentityStore for PgStore {
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
        self.text_of("SELECT data FROM credentials WHERE username = $1", username)?
            .map(|s| serde_json::from_str(&s).map_err(ie))
            .transpose()
    }

    fn save_credentials(&self, username: &str, cr: &Credentials) -> Result<(), Error> {
        let data = serde_json::to_string(cr).map_err(ie)?;
        self.exec(
            "INSERT INTO credentials (username, data) VALUES ($1, $2) ON CONFLICT (username) DO UPDATE SET data = excluded.data",
            params![username.to_string(), data],
        )
        .map_err(ie)?;
        Ok(())
    }

    fn lockout(&self, username: &str) -> Result<lockout::State, Error> {
        let v = self.text_of("SELECT data FROM auth_state WHERE username = $1", username)?;
        Ok(v.and_then(|s| serde_json::from_str(&s).ok()).unwrap_or_default())
    }

    fn update_credentials(
        &self,
        username: &str,
        f: &mut dyn FnMut(&mut Credentials) -> Result<bool, Error>,
    ) -> Result<bool, Error> {
        let mut l = self.lease().map_err(ie)?;
        l.transaction("BEGIN", |l| -> Result<bool, Error> {
            // The row (if any) is locked: a concurrent use on any node waits and then sees this one.
            let data: Option<String> = l
                .opt("SELECT data FROM credentials WHERE username = $1 FOR UPDATE", params![username.to_string()])
                .map_err(ie)?
                .map(|r| r.try_get(0))
                .transpose()
                .map_err(ie)?;
            let mut creds: Credentials = data.map(|s| serde_json::from_str(&s).map_err(ie)).transpose()?.unwrap_or_default();
            if !f(&mut creds)? {
                return Ok(false);
            }
            let data = serde_json::to_string(&creds).map_err(ie)?;
            l.execute(
                "INSERT INTO credentials (username, data) VALUES ($1, $2) ON CONFLICT (username) DO UPDATE SET data = excluded.data",
                params![username.to_string(), data],
            )
            .map_err(ie)?;
            Ok(true)
        })
    }

    fn update_lockout(&self, username: &str, f: &mut dyn FnMut(&mut lockout::State)) -> Result<lockout::State, Error> {
        let mut l = self.lease().map_err(ie)?;
        l.transaction("BEGIN", |l| -> Result<lockout::State, crate::Error> {
            // The row exists and is locked: concurrent failures on any node queue here.
            l.execute(
                "INSERT INTO auth_state (username, data) VALUES ($1, '{}') ON CONFLICT (username) DO NOTHING",
                params![username.to_string()],
            )?;
            let data: String = l
                .opt("SELECT data FROM auth_state WHERE username = $1 FOR UPDATE", params![username.to_string()])?
                .map(|r| r.try_get(0))
                .transpose()?
                .unwrap_or_default();
            let mut state: lockout::State = serde_json::from_str(&data).unwrap_or_default();
            f(&mut state);
            let data = serde_json::to_string(&state).map_err(|e| crate::Error::Corrupt(e.to_string()))?;
            l.execute("UPDATE auth_state SET data = $2 WHERE username = $1", params![username.to_string(), data])?;
            Ok(state)
        })
        .map_err(ie)
    }

    fn save_lockout(&self, username: &str, s: &lockout::State, last_login: Option<i64>) -> Result<(), Error> {
        let data = serde_json::to_string(s).map_err(ie)?;
        self.exec(
            "INSERT INTO auth_state (username, data, last_login) VALUES ($1, $2, $3)
             ON CONFLICT (username) DO UPDATE SET data = excluded.data, last_login = COALESCE(excluded.last_login, auth_state.last_login)",
            params![username.to_string(), data, last_login],
        )
        .map_err(ie)?;
        Ok(())
    }

    fn session(&self, id: &str) -> Result<Option<Session>, Error> {
        self.text_of("SELECT data FROM sessions WHERE id = $1", id)?
            .map(|s| serde_json::from_str(&s).map_err(ie))
            .transpose()
    }

    fn save_session(&self, id: &str, s: &Session) -> Result<(), Error> {
        let data = serde_json::to_string(s).map_err(ie)?;
        self.exec(
            "INSERT INTO sessions (id, username, data) VALUES ($1, $2, $3) ON CONFLICT (id) DO UPDATE SET data = excluded.data",
            params![id.to_string(), s.username.clone(), data],
        )
        .map_err(ie)?;
        Ok(())
    }

    fn delete_session(&self, id: &str) -> Result<(), Error> {
        self.exec("DELETE FROM sessions WHERE id = $1", params![id.to_string()]).map_err(ie)?;
        Ok(())
    }

    fn delete_sessions_of(&self, username: &str) -> Result<u64, Error> {
        self.exec("DELETE FROM sessions WHERE username = $1", params![username.to_string()]).map_err(ie)
    }

    fn revoke_tokens_of(&self, username: &str) -> Result<u64, Error> {
        let r = self
            .exec(
                "UPDATE refresh_tokens SET revoked = TRUE WHERE subject = $1 AND NOT revoked",
                params![username.to_string()],
            )
            .map_err(ie)?;
        let a = self
            .exec(
                "UPDATE access_tokens SET revoked = TRUE WHERE subject = $1 AND NOT revoked",
                params![username.to_string()],
            )
            .map_err(ie)?;
        Ok(a + r)
    }
}
