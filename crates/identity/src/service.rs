//! The identity service: adding and changing accounts, enrolment, password authentication with
//! lockout, lifecycle events. Every act is audited; account definitions change only through the
//! store's configuration path.

use std::sync::Arc;

use mamori_audit::{AuditActor, AuditLog, AuditRecord, Outcome};

use crate::account::{Account, Coverage, Credentials, Proofing, Status, TotpFactor, valid_username};
use crate::session::{self, Invalid, Session, Stage};
use crate::{Error, Message, lockout, passkey, password, secret, totp};

/// What the identity service needs from storage.
pub trait IdentityStore: Send + Sync {
    /// An account and its configuration version.
    fn account(&self, username: &str) -> Result<Option<(Account, u64)>, Error>;
    /// Saves an account definition through the audited configuration path; `expected` is the
    /// version it was based on (`None` = new).
    fn save_account(&self, a: &Account, expected: Option<u64>, actor: &str, reason: &str) -> Result<u64, Error>;
    /// Every account.
    fn accounts(&self) -> Result<Vec<Account>, Error>;
    /// Credentials.
    fn credentials(&self, username: &str) -> Result<Option<Credentials>, Error>;
    /// Saves credentials.
    fn save_credentials(&self, username: &str, c: &Credentials) -> Result<(), Error>;
    /// Lockout counters.
    fn lockout(&self, username: &str) -> Result<lockout::State, Error>;
    /// Changes credentials atomically: `f` sees the stored credentials (none yet: the default)
    /// and returns whether to save what it changed. Consuming a one-time credential (a TOTP step,
    /// a recovery code, a passkey counter) goes through here, so two concurrent uses — on one
    /// node or two — cannot both succeed. Returns whether it saved.
    fn update_credentials(
        &self,
        username: &str,
        f: &mut dyn FnMut(&mut Credentials) -> Result<bool, Error>,
    ) -> Result<bool, Error>;
    /// Changes lockout counters atomically (no failure counted on any node is lost) and returns
    /// them as saved.
    fn update_lockout(&self, username: &str, f: &mut dyn FnMut(&mut lockout::State)) -> Result<lockout::State, Error>;
    /// Saves lockout counters and the last login time (if given).
    fn save_lockout(&self, username: &str, s: &lockout::State, last_login: Option<i64>) -> Result<(), Error>;
    /// Revokes every token issued to a person.
    fn revoke_tokens_of(&self, username: &str) -> Result<u64, Error>;
    /// A session by the SHA-256 of its token.
    fn session(&self, id: &str) -> Result<Option<Session>, Error>;
    /// Saves a session.
    fn save_session(&self, id: &str, s: &Session) -> Result<(), Error>;
    /// Deletes a session.
    fn delete_session(&self, id: &str) -> Result<(), Error>;
    /// Deletes every session of a person; returns how many.
    fn delete_sessions_of(&self, username: &str) -> Result<u64, Error>;
}

/// A new account.
#[derive(Debug, Clone)]
pub struct NewAccount {
    /// Login name.
    pub username: String,
    /// Roles.
    pub roles: Vec<String>,
    /// Display name.
    pub display_name: Option<String>,
    /// fhirUser reference.
    pub fhir_user: Option<String>,
    /// Department.
    pub department: Option<String>,
    /// 身元確認.
    pub proofing: Option<Proofing>,
}

/// A successful password(+TOTP) authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated {
    /// The account.
    pub account: Account,
    /// Second factors enrolled (the login flow requires one before data is reachable).
    pub second_factors: Vec<&'static str>,
    /// Whether the TOTP code was checked in this attempt.
    pub totp_verified: bool,
    /// Whether the password must be changed before anything else.
    pub must_change_password: bool,
}

/// A refused authentication: the message is always 「認証に失敗しました」; the reason is for the
/// audit trail only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// What the person sees.
    pub message: Message,
    /// Seconds before another attempt is accepted, if any.
    pub retry_after: Option<i64>,
}

/// A login step that moved the session on. The session's id changes whenever its privilege does
/// (second factor done, password changed), so a token seen before the step — planted by an
/// attacker (session fixation) or read off a half-finished login — is worth nothing after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// Where the login stands now.
    pub stage: Stage,
    /// The session's token from now on: the browser's cookie must be replaced with it.
    pub token: String,
}

/// The identity service.
pub struct Identity {
    store: Arc<dyn IdentityStore>,
    audit: Arc<dyn AuditLog>,
    master_key: [u8; 32],
    /// Password rules.
    pub password_policy: password::Policy,
    /// Lockout rules.
    pub lockout_policy: lockout::Policy,
    /// Session lifetimes.
    pub session_policy: session::Policy,
    gate: std::sync::RwLock<Option<SignInGate>>,
}

/// A rule outside the identity service that may refuse a sign-in whose factors are right: given
/// the account and the source address, the reason to refuse (for the audit entry), if any. The
/// node sets one for maintenance accounts, which may sign in only inside an approved window.
pub type SignInGate = Arc<dyn Fn(&Account, Option<&str>) -> Option<&'static str> + Send + Sync>;

fn operator(actor: &str) -> AuditActor {
    AuditActor::from_tag(actor)
}

/// What the factors presented at sign-in proved.
struct FactorCheck {
    /// The password matched.
    password: bool,
    /// The account is active.
    active: bool,
    /// `None`: no code checked; `Some(None)`: a wrong, expired or reused code; `Some(Some(step))`:
    /// a valid code, now spent.
    totp: Option<Option<i64>>,
}

impl FactorCheck {
    /// Why the sign-in fails, if it does. With no code offered, the password step alone is judged
    /// (the login flow asks for the factor next).
    fn failure(&self, code_offered: bool) -> Option<&'static str> {
        if !self.password {
            Some("wrong password")
        } else if !self.active {
            Some("account not active")
        } else if code_offered && !matches!(self.totp, Some(Some(_))) {
            Some("wrong or reused one-time code")
        } else {
            None
        }
    }
}

fn event(
    action: &str,
    actor: AuditActor,
    target: &str,
    outcome: Outcome,
    detail: Option<String>,
    source: Option<&str>,
) -> AuditRecord {
    AuditRecord {
        detail,
        resources: vec![format!("account/{target}")],
        source: source.map(str::to_string),
        ..AuditRecord::new(action, actor, outcome, "HOPERAT")
    }
}

impl Identity {
    /// A service over a store, the audit log and the master key.
    pub fn new(store: Arc<dyn IdentityStore>, audit: Arc<dyn AuditLog>, master_key: [u8; 32]) -> Self {
        Identity {
            store,
            audit,
            master_key,
            password_policy: password::Policy::default(),
            lockout_policy: lockout::Policy::default(),
            session_policy: session::Policy::default(),
            gate: std::sync::RwLock::new(None),
        }
    }

    /// Sets the rule that may refuse a sign-in whose factors are right ([`SignInGate`]).
    pub fn set_sign_in_gate(&self, gate: SignInGate) {
        if let Ok(mut g) = self.gate.write() {
            *g = Some(gate);
        }
    }

    fn gated(&self, account: &Account, source: Option<&str>) -> Option<&'static str> {
        let g = self.gate.read().ok()?;
        g.as_ref().and_then(|f| f(account, source))
    }

    /// The same service with the operator's password, lockout and session rules (`[identity]`
    /// of `mamori.toml`, A4–A6) instead of the defaults.
    #[must_use]
    pub fn with_policies(
        mut self,
        password: password::Policy,
        lockout: lockout::Policy,
        session: session::Policy,
    ) -> Self {
        self.password_policy = password;
        self.lockout_policy = lockout;
        self.session_policy = session;
        self
    }

    fn log(&self, r: AuditRecord) -> Result<(), Error> {
        self.audit.append(vec![r]).map(|_| ()).map_err(|e| Error::Storage(format!("audit: {e}")))
    }

    /// Every account.
    pub fn accounts(&self) -> Result<Vec<Account>, Error> {
        self.store.accounts()
    }

    /// One account, if it exists.
    pub fn account(&self, username: &str) -> Result<Option<Account>, Error> {
        Ok(self.store.account(username)?.map(|(a, _)| a))
    }

    /// Adds an account with an initial password that must be changed at first login.
    pub fn add(&self, actor: &str, n: NewAccount, initial_password: &str, now: i64) -> Result<Account, Error> {
        if !valid_username(&n.username) {
            return Err(Error::Invalid(format!(
                "user name `{}` must be 3–64 of a–z 0–9 . _ - and start with a letter",
                n.username
            )));
        }
        if n.roles.is_empty() {
            return Err(Error::Invalid("an account needs at least one role".into()));
        }
        if let Some(f) = &n.fhir_user {
            let ok = f.split_once('/').is_some_and(|(t, id)| {
                matches!(t, "Practitioner" | "PractitionerRole") && !id.is_empty() && id.len() <= 64
            });
            if !ok {
                return Err(Error::Invalid(format!(
                    "--fhir-user `{f}` must be Practitioner/ID or PractitionerRole/ID"
                )));
            }
        }
        if self.store.account(&n.username)?.is_some() {
            return Err(Error::Invalid(format!("account `{}` already exists (one account per person)", n.username)));
        }
        // The initial password is checked as if a second factor were enrolled: it is temporary,
        // and the person is led through enrolment before reaching any data.
        let ctx = password::Context {
            username: &n.username,
            display_name: n.display_name.as_deref(),
            has_second_factor: true,
            previous: &[],
        };
        self.password_policy.check(initial_password, &ctx)?;
        let account = Account {
            username: n.username.clone(),
            display_name: n.display_name,
            roles: n.roles,
            fhir_user: n.fhir_user,
            department: n.department,
            proofing: n.proofing,
            status: Status::Active,
            created_at: now,
            emergency: false,
        };
        self.store.save_account(&account, None, actor, "account issued (join)")?;
        let creds = Credentials {
            password_hash: password::hash(initial_password)?,
            password_changed_at: now,
            must_change: true,
            ..Credentials::default()
        };
        self.store.save_credentials(&account.username, &creds)?;
        self.log(event(
            "credential",
            operator(actor),
            &account.username,
            Outcome::Success,
            Some("initial password set".into()),
            None,
        ))?;
        Ok(account)
    }

    /// Enrols a TOTP authenticator; returns the `otpauth://` URI (shown once).
    pub fn enroll_totp(&self, actor: &str, username: &str, issuer: &str, now: i64) -> Result<String, Error> {
        let (account, _) = self.store.account(username)?.ok_or_else(|| Error::NoAccount(username.to_string()))?;
        let seed = totp::new_secret()?;
        let factor = TotpFactor {
            sealed_secret: secret::seal(&self.master_key, username, &seed)?,
            last_step: None,
            enrolled_at: now,
        };
        self.store.update_credentials(username, &mut |creds| {
            creds.totp = Some(factor.clone());
            Ok(true)
        })?;
        self.log(event(
            "enrol",
            operator(actor),
            username,
            Outcome::Success,
            Some("TOTP authenticator enrolled".into()),
            None,
        ))?;
        Ok(totp::otpauth_uri(issuer, &account.username, &seed))
    }

    /// Changes a password (the person, knowing the current one).
    pub fn change_password(&self, username: &str, current: &str, new: &str, now: i64) -> Result<(), Error> {
        let (account, _) =
            self.store.account(username)?.ok_or_else(|| Error::PasswordRefused(vec![crate::login_failed()]))?;
        let changed = self.store.update_credentials(username, &mut |creds| {
            if creds.password_hash.is_empty() || !password::verify(current, &creds.password_hash) {
                return Err(Error::PasswordRefused(vec![crate::login_failed()]));
            }
            let mut previous = vec![creds.password_hash.clone()];
            previous.extend(creds.history.iter().cloned());
            previous.truncate(self.password_policy.history.max(1));
            let ctx = password::Context {
                username,
                display_name: account.display_name.as_deref(),
                has_second_factor: !creds.second_factors().is_empty(),
                previous: &previous,
            };
            self.password_policy.check(new, &ctx)?;
            creds.history = previous;
            creds.password_hash = password::hash(new)?;
            creds.password_changed_at = now;
            creds.must_change = false;
            Ok(true)
        })?;
        if !changed {
            return Err(Error::PasswordRefused(vec![crate::login_failed()]));
        }
        self.log(event(
            "credential",
            AuditActor {
                client_id: None,
                fhir_user: account.fhir_user,
                id: username.into(),
                kind: mamori_audit::ActorKind::User,
            },
            username,
            Outcome::Success,
            Some("password changed".into()),
            None,
        ))
    }

    /// Checks a password and, when given, a TOTP code. Lockout applies first; every failure says
    /// only 「認証に失敗しました」.
    pub fn authenticate(
        &self,
        username: &str,
        pw: &str,
        code: Option<&str>,
        now: i64,
        source: Option<&str>,
    ) -> Result<Result<Authenticated, Refused>, Error> {
        let who = AuditActor {
            client_id: None,
            fhir_user: None,
            id: username.chars().take(64).collect(),
            kind: mamori_audit::ActorKind::User,
        };
        let refuse = |reason: &str, retry_after: Option<i64>| -> Result<Result<Authenticated, Refused>, Error> {
            self.log(event("login", who.clone(), username, Outcome::Denied, Some(reason.into()), source))?;
            Ok(Err(Refused { message: crate::login_failed(), retry_after }))
        };
        // 1. Who, and whether they may try now. Every refusal here costs what checking a
        //    password costs: the time to answer must not tell an existing account from an
        //    unknown one (A6).
        let Some((account, _)) = self.store.account(username)? else {
            let _ = password::verify(pw, password::dummy_hash());
            return refuse("unknown account", None);
        };
        let mut state = self.store.lockout(username)?;
        if let Some((reason, retry_after)) = self.gate(&state, now) {
            let _ = password::verify(pw, password::dummy_hash());
            return refuse(reason, Some(retry_after));
        }
        // 2. The factors presented.
        let creds = self.store.credentials(username)?.unwrap_or_default();
        let checked = self.check_factors(username, &account, &creds, pw, code, now)?;
        if let Some(reason) = checked.failure(code.is_some()) {
            self.count_failure(username, &who, now, source)?;
            return refuse(reason, None);
        }
        // 3. A rule of the node's (a maintenance account outside its approved window). The
        //    refusal looks like every other one.
        if let Some(reason) = self.gated(&account, source) {
            return refuse(reason, None);
        }
        // 3b. The emergency account's window (非常時用アカウント).
        if account.emergency
            && let Some(reason) = self.open_emergency(username, &who, &creds, now, source)?
        {
            return refuse(reason, None);
        }
        // 4. Signed in: reset the count when the sign-in is complete, and record it.
        let factors = creds.second_factors();
        // The failure count is reset only when the sign-in is complete: the second factor
        // verified here, or none enrolled yet (enrolment follows). A right password alone must
        // not reset it, or password → wrong codes → password … would guess codes forever (A5).
        if code.is_some() || factors.is_empty() {
            self.lockout_policy.succeed(&mut state);
            self.store.save_lockout(username, &state, Some(now))?;
        }
        let days = |t: i64| t.div_euclid(86_400);
        let must_change = creds.must_change || self.password_policy.expired(days(creds.password_changed_at), days(now));
        let detail = format!("password{}", if checked.totp.is_some() { " + totp" } else { "" });
        self.log(event(
            "login",
            AuditActor { fhir_user: account.fhir_user.clone(), ..who },
            username,
            Outcome::Success,
            Some(detail),
            source,
        ))?;
        Ok(Ok(Authenticated {
            account,
            second_factors: factors,
            totp_verified: checked.totp.is_some(),
            must_change_password: must_change,
        }))
    }

    /// Whether the lockout rules let `username` try now: `None`, or the reason to refuse and the
    /// seconds until they may try again.
    fn gate(&self, state: &lockout::State, now: i64) -> Option<(&'static str, i64)> {
        match self.lockout_policy.gate(state, now) {
            lockout::Gate::Open => None,
            lockout::Gate::RetryAfter(s) => Some(("retry too early", s)),
            lockout::Gate::Locked(until) => Some(("account locked", until - now)),
        }
    }

    /// Checks the password, the account's status and, when one is offered, the one-time code —
    /// spending a valid code atomically (RFC 6238 §5.2: of two concurrent uses, one wins).
    fn check_factors(
        &self,
        username: &str,
        account: &Account,
        creds: &Credentials,
        pw: &str,
        code: Option<&str>,
        now: i64,
    ) -> Result<FactorCheck, Error> {
        let password = password::verify(pw, &creds.password_hash);
        let mut totp = None;
        if let (Some(c), Some(t)) = (code, &creds.totp) {
            let seed = secret::open(&self.master_key, username, &t.sealed_secret)?;
            totp = Some(totp::verify(&seed, c, now, t.last_step));
        }
        let active = account.status == Status::Active;
        if let (true, true, Some(Some(step))) = (password, active, totp) {
            let spent = self.store.update_credentials(username, &mut |c| {
                Ok(match c.totp.as_mut() {
                    Some(t) if t.last_step.is_none_or(|l| step > l) => {
                        t.last_step = Some(step);
                        true
                    }
                    _ => false,
                })
            })?;
            if !spent {
                totp = Some(None);
            }
        }
        Ok(FactorCheck { password, active, totp })
    }

    /// Counts a failed sign-in; when it locks the account, raises `alert-lock`.
    fn count_failure(&self, username: &str, who: &AuditActor, now: i64, source: Option<&str>) -> Result<(), Error> {
        let mut after = lockout::AfterFailure::Delayed(0);
        let state = self.store.update_lockout(username, &mut |s| after = self.lockout_policy.fail(s, now))?;
        if let lockout::AfterFailure::LockedNow(until) = after {
            self.log(event(
                "alert-lock",
                who.clone(),
                username,
                Outcome::Denied,
                Some(format!("account locked until unix {until} after {} failures", state.failures)),
                source,
            ))?;
        }
        Ok(())
    }

    /// 非常時用アカウント: every use is an alert; once opened it works for a window, then not
    /// until an administrator rotates it. `Some(reason)` refuses.
    fn open_emergency(
        &self,
        username: &str,
        who: &AuditActor,
        creds: &Credentials,
        now: i64,
        source: Option<&str>,
    ) -> Result<Option<&'static str>, Error> {
        match creds.emergency_opened_at {
            Some(t) if now - t > crate::account::EMERGENCY_WINDOW_SECS => {
                self.log(event(
                    "alert-emergency-account",
                    who.clone(),
                    username,
                    Outcome::Denied,
                    Some("emergency credential used after its window; it must be rotated".into()),
                    source,
                ))?;
                return Ok(Some("emergency credential not rotated after use"));
            }
            Some(_) => {}
            None => {
                // Atomically, so the one-time code just spent stays spent.
                self.store.update_credentials(username, &mut |c| {
                    Ok(c.emergency_opened_at.is_none() && {
                        c.emergency_opened_at = Some(now);
                        true
                    })
                })?;
            }
        }
        self.log(event(
            "alert-emergency-account",
            who.clone(),
            username,
            Outcome::Success,
            Some("emergency account used (非常時用アカウントの使用): review and rotate it".into()),
            source,
        ))?;
        Ok(None)
    }

    fn set_status(
        &self,
        actor: &str,
        username: &str,
        status: Status,
        reason: &str,
        expected: Option<u64>,
    ) -> Result<Account, Error> {
        let (mut a, v) = self.store.account(username)?.ok_or_else(|| Error::NoAccount(username.to_string()))?;
        if expected.is_some_and(|e| e != v) {
            return Err(Error::Conflict(format!("account `{username}` was changed meanwhile")));
        }
        if a.status == Status::Left && status != Status::Left {
            return Err(Error::Invalid(format!("`{username}` has left; a leaver's account is never re-enabled")));
        }
        a.status = status;
        self.store.save_account(&a, Some(v), actor, reason)?;
        Ok(a)
    }

    /// Disables an account (its sessions end and its tokens are revoked).
    pub fn disable(&self, actor: &str, username: &str) -> Result<Account, Error> {
        let a = self.set_status(actor, username, Status::Disabled, "account disabled", None)?;
        self.store.revoke_tokens_of(username)?;
        self.store.delete_sessions_of(username)?;
        Ok(a)
    }

    /// Ends every session and revokes every token of `username` (a maintenance window ended);
    /// returns how many.
    pub fn end_access_of(&self, username: &str) -> Result<u64, Error> {
        let tokens = self.store.revoke_tokens_of(username)?;
        let sessions = self.store.delete_sessions_of(username)?;
        Ok(tokens + sessions)
    }

    /// Re-enables a disabled account.
    /// `expected`: the account's version the change was decided on (`None`: whatever it is now).
    pub fn enable(&self, actor: &str, username: &str, expected: Option<u64>) -> Result<Account, Error> {
        self.set_status(actor, username, Status::Active, "account enabled", expected)
    }

    /// Leave (退職): disabled at once, every token revoked.
    pub fn leave(&self, actor: &str, username: &str) -> Result<u64, Error> {
        self.set_status(actor, username, Status::Left, "leave (退職): disabled at once", None)?;
        let n = self.store.revoke_tokens_of(username)?;
        self.store.delete_sessions_of(username)?;
        self.log(event(
            "leave",
            operator(actor),
            username,
            Outcome::Success,
            Some(format!("{n} tokens revoked")),
            None,
        ))?;
        Ok(n)
    }

    /// Transfer (人事異動): new department and roles; an access review is opened (recorded as an
    /// audit event until the access-review work lands). `expected`: the account's version the
    /// change was decided on (`None`: whatever it is now).
    pub fn transfer(
        &self,
        actor: &str,
        username: &str,
        department: Option<String>,
        roles: Option<Vec<String>>,
        expected: Option<u64>,
    ) -> Result<Account, Error> {
        let (mut a, v) = self.store.account(username)?.ok_or_else(|| Error::NoAccount(username.to_string()))?;
        if expected.is_some_and(|e| e != v) {
            return Err(Error::Conflict(format!("account `{username}` was changed meanwhile")));
        }
        if a.status == Status::Left {
            return Err(Error::Invalid(format!("`{username}` has left")));
        }
        if let Some(d) = department {
            a.department = Some(d);
        }
        if let Some(r) = roles {
            if r.is_empty() {
                return Err(Error::Invalid("an account needs at least one role".into()));
            }
            a.roles = r;
        }
        self.store.save_account(&a, Some(v), actor, "transfer (人事異動)")?;
        self.log(event(
            "access-review-opened",
            operator(actor),
            username,
            Outcome::Success,
            Some("transfer: review this account's roles (見直し)".into()),
            None,
        ))?;
        Ok(a)
    }

    /// Flags an account as an emergency account with sealed credentials: its initial password
    /// is the sealed one (no change is forced at first use) and every use raises an alert.
    pub fn mark_emergency(&self, actor: &str, username: &str) -> Result<Account, Error> {
        let (mut a, v) = self.store.account(username)?.ok_or_else(|| Error::NoAccount(username.to_string()))?;
        a.emergency = true;
        self.store.save_account(&a, Some(v), actor, "flagged as emergency account (非常時用)")?;
        self.store.update_credentials(username, &mut |creds| {
            creds.must_change = false;
            Ok(true)
        })?;
        self.log(event("emergency-flagged", operator(actor), username, Outcome::Success, None, None))?;
        Ok(a)
    }

    /// Rotates an emergency account's sealed password after use (or periodically).
    pub fn rotate_emergency(&self, actor: &str, username: &str, new_password: &str, now: i64) -> Result<(), Error> {
        let (a, _) = self.store.account(username)?.ok_or_else(|| Error::NoAccount(username.to_string()))?;
        if !a.emergency {
            return Err(Error::Invalid(format!("`{username}` is not an emergency account")));
        }
        self.store.update_credentials(username, &mut |creds| {
            let ctx = password::Context {
                username,
                display_name: a.display_name.as_deref(),
                has_second_factor: creds.totp.is_some(),
                previous: &creds.history,
            };
            self.password_policy.check(new_password, &ctx)?;
            if password::verify(new_password, &creds.password_hash) {
                return Err(Error::Invalid("the new sealed password must differ from the old one".into()));
            }
            let old = std::mem::replace(&mut creds.password_hash, password::hash(new_password)?);
            creds.history.insert(0, old);
            creds.history.truncate(self.password_policy.history);
            creds.password_changed_at = now;
            creds.must_change = false;
            creds.emergency_opened_at = None;
            Ok(true)
        })?;
        self.store.revoke_tokens_of(username)?;
        self.store.delete_sessions_of(username)?;
        self.log(event(
            "emergency-rotated",
            operator(actor),
            username,
            Outcome::Success,
            Some("sealed credential rotated".into()),
            None,
        ))
    }

    /// Emergency accounts and whether each was opened (unix seconds) and not yet rotated.
    pub fn emergency_accounts(&self) -> Result<Vec<(Account, Option<i64>)>, Error> {
        let mut out = Vec::new();
        for a in self.store.accounts()?.into_iter().filter(|a| a.emergency) {
            let opened = self.store.credentials(&a.username)?.and_then(|c| c.emergency_opened_at);
            out.push((a, opened));
        }
        Ok(out)
    }

    /// Replaces an account's roles (an access-review decision); audited.
    pub fn set_roles(&self, actor: &str, username: &str, roles: Vec<String>, reason: &str) -> Result<Account, Error> {
        let (mut a, v) = self.store.account(username)?.ok_or_else(|| Error::NoAccount(username.to_string()))?;
        a.roles = roles;
        self.store.save_account(&a, Some(v), actor, reason)?;
        self.log(event("roles-changed", operator(actor), username, Outcome::Success, Some(reason.to_string()), None))?;
        Ok(a)
    }

    /// Clears a lock (administrator).
    pub fn unlock(&self, actor: &str, username: &str) -> Result<(), Error> {
        self.store.account(username)?.ok_or_else(|| Error::NoAccount(username.to_string()))?;
        self.store.save_lockout(username, &lockout::State::default(), None)?;
        self.log(event("unlock", operator(actor), username, Outcome::Success, None, None))
    }

    /// Starts a browser session after the password step; returns the cookie token and the next
    /// stage (TOTP, or enrolment when the account has no second factor).
    /// A session the browser still carried (`previous`) ends here: a sign-in never continues
    /// an earlier session id.
    pub fn start_session(
        &self,
        auth: &Authenticated,
        browser: &str,
        previous: Option<&str>,
        now: i64,
    ) -> Result<(String, Stage), Error> {
        if let Some(old) = previous {
            self.store.delete_session(&session::digest(old))?;
        }
        let token = crate::session_token()?;
        let stage = if auth.second_factors.is_empty() { Stage::NeedEnrol } else { Stage::NeedTotp };
        let s = Session {
            username: auth.account.username.clone(),
            stage,
            created: now,
            last_seen: now,
            browser: session::digest(browser),
            pending_totp: None,
            pending_webauthn: None,
            amr: Vec::new(),
        };
        self.store.save_session(&session::digest(&token), &s)?;
        Ok((token, stage))
    }

    /// The session behind a cookie token, checked (idle, lifetime, browser, account still
    /// active); a full session's idle timer restarts.
    pub fn session(&self, token: &str, browser: &str, now: i64) -> Result<Result<Session, Invalid>, Error> {
        let id = session::digest(token);
        let Some(mut s) = self.store.session(&id)? else { return Ok(Err(Invalid::Unknown)) };
        if let Err(why) = self.session_policy.check(&s, now, browser) {
            self.store.delete_session(&id)?;
            if why == Invalid::OtherBrowser {
                // The token left the browser it was issued to: whoever holds it now, the session
                // ends for both, and the security manager hears of it.
                let detail = Some("session token presented by another browser: session revoked".into());
                self.log(event("alert-session", user_actor(&s.username), &s.username, Outcome::Denied, detail, None))?;
            }
            return Ok(Err(why));
        }
        let active = self.store.account(&s.username)?.is_some_and(|(a, _)| a.status == Status::Active);
        if !active {
            self.store.delete_session(&id)?;
            return Ok(Err(Invalid::Unknown));
        }
        if s.stage == Stage::Full && now > s.last_seen {
            s.last_seen = now;
            self.store.save_session(&id, &s)?;
        }
        Ok(Ok(s))
    }

    /// Moves a session to its next stage under a new id: the old id is deleted before the new
    /// one is saved, so no moment exists where both work.
    fn rotate(&self, old_id: &str, s: &Session) -> Result<String, Error> {
        let token = crate::session_token()?;
        self.store.delete_session(old_id)?;
        self.store.save_session(&session::digest(&token), s)?;
        Ok(token)
    }

    fn after_second_factor(
        &self,
        id: &str,
        s: &mut Session,
        now: i64,
        source: Option<&str>,
        how: &str,
    ) -> Result<Step, Error> {
        let creds = self.store.credentials(&s.username)?.unwrap_or_default();
        let days = |t: i64| t.div_euclid(86_400);
        let must = creds.must_change || self.password_policy.expired(days(creds.password_changed_at), days(now));
        s.stage = if must { Stage::NeedPasswordChange } else { Stage::Full };
        s.last_seen = now;
        // RFC 8176: the password, then a one-time code or a WebAuthn key; both make it `mfa`.
        let second = if how.starts_with("passkey") { "hwk" } else { "otp" };
        s.amr = ["pwd", second, "mfa"].map(str::to_string).to_vec();
        let token = self.rotate(id, s)?;
        let fhir_user = self.store.account(&s.username)?.and_then(|(a, _)| a.fhir_user);
        let actor =
            AuditActor { client_id: None, fhir_user, id: s.username.clone(), kind: mamori_audit::ActorKind::User };
        self.log(event(
            "login",
            actor,
            &s.username,
            Outcome::Success,
            Some(format!("two-factor: password + {how}")),
            source,
        ))?;
        Ok(Step { stage: s.stage, token })
    }

    /// Issues 10 new recovery codes (replacing any unused ones); shown once.
    pub fn new_recovery_codes(&self, actor: &str, username: &str) -> Result<Vec<String>, Error> {
        self.store.account(username)?.ok_or_else(|| Error::NoAccount(username.to_string()))?;
        let mut codes = Vec::with_capacity(10);
        for _ in 0..10 {
            let mut b = [0u8; 10];
            getrandom::fill(&mut b).map_err(|e| Error::Crypto(e.to_string()))?;
            let raw = totp::base32(&b);
            codes.push(format!("{}-{}-{}-{}", &raw[0..4], &raw[4..8], &raw[8..12], &raw[12..16]));
        }
        let digests: Vec<String> = codes.iter().map(|c| session::digest(&normalise_recovery(c))).collect();
        self.store.update_credentials(username, &mut |creds| {
            creds.recovery = digests.clone();
            Ok(true)
        })?;
        self.log(event(
            "enrol",
            operator(actor),
            username,
            Outcome::Success,
            Some("10 recovery codes issued".into()),
            None,
        ))?;
        Ok(codes)
    }

    /// The second step with a recovery code instead of the authenticator (single use).
    pub fn verify_recovery(
        &self,
        token: &str,
        browser: &str,
        code: &str,
        now: i64,
        source: Option<&str>,
    ) -> Result<Result<Step, Refused>, Error> {
        let want = session::digest(&normalise_recovery(code));
        self.second_step(token, browser, now, source, "wrong or used recovery code", |_, creds| {
            let pos = creds
                .recovery
                .iter()
                .position(|h| bool::from(subtle::ConstantTimeEq::ct_eq(h.as_bytes(), want.as_bytes())));
            Ok(pos.map(|p| {
                creds.recovery.remove(p);
                format!("recovery code ({} left)", creds.recovery.len())
            }))
        })
    }

    /// The second step: a TOTP code. Lockout applies as for passwords.
    pub fn verify_totp(
        &self,
        token: &str,
        browser: &str,
        code: &str,
        now: i64,
        source: Option<&str>,
    ) -> Result<Result<Step, Refused>, Error> {
        self.second_step(token, browser, now, source, "wrong or reused one-time code", |username, creds| {
            let Some(t) = creds.totp.as_mut() else { return Ok(None) };
            let seed = secret::open(&self.master_key, username, &t.sealed_secret)?;
            Ok(totp::verify(&seed, code, now, t.last_step).map(|step| {
                t.last_step = Some(step);
                "totp".to_string()
            }))
        })
    }

    /// The one second-step sequence: the session must be waiting for it, lockout applies,
    /// `check` verifies (and consumes) the credential, returning how on success; a failure counts
    /// toward lockout, raises an alert on locking, and says only 「認証に失敗しました」.
    fn second_step(
        &self,
        token: &str,
        browser: &str,
        now: i64,
        source: Option<&str>,
        failure: &str,
        check: impl FnOnce(&str, &mut Credentials) -> Result<Option<String>, Error>,
    ) -> Result<Result<Step, Refused>, Error> {
        let id = session::digest(token);
        let refused = Refused { message: crate::login_failed(), retry_after: None };
        let Ok(mut s) = self.session(token, browser, now)? else { return Ok(Err(refused)) };
        if s.stage != Stage::NeedTotp {
            return Ok(Err(refused));
        }
        let who = user_actor(&s.username);
        let mut state = self.store.lockout(&s.username)?;
        if self.lockout_policy.gate(&state, now) != lockout::Gate::Open {
            let detail = Some("second step refused: retry too early or locked".into());
            self.log(event("login", who, &s.username, Outcome::Denied, detail, source))?;
            return Ok(Err(refused));
        }
        // Verified and consumed in one atomic change of the stored credentials.
        let mut how = None;
        let mut check = Some(check);
        let username = s.username.clone();
        self.store.update_credentials(&username, &mut |creds| {
            let Some(check) = check.take() else { return Ok(false) };
            how = check(&username, creds)?;
            Ok(how.is_some())
        })?;
        let Some(how) = how else {
            let mut after = lockout::AfterFailure::Delayed(0);
            self.store.update_lockout(&s.username, &mut |st| after = self.lockout_policy.fail(st, now))?;
            if let lockout::AfterFailure::LockedNow(until) = after {
                let detail = Some(format!("account locked until unix {until}"));
                self.log(event("alert-lock", who.clone(), &s.username, Outcome::Denied, detail, source))?;
            }
            self.log(event("login", who, &s.username, Outcome::Denied, Some(failure.into()), source))?;
            return Ok(Err(refused));
        };
        self.lockout_policy.succeed(&mut state);
        self.store.save_lockout(&s.username, &state, Some(now))?;
        Ok(Ok(self.after_second_factor(&id, &mut s, now, source, &how)?))
    }

    /// Self-service enrolment after the password step: returns the `otpauth://` URI to show.
    pub fn begin_enrol(&self, token: &str, browser: &str, issuer: &str, now: i64) -> Result<Option<String>, Error> {
        let Ok(mut s) = self.session(token, browser, now)? else { return Ok(None) };
        if s.stage != Stage::NeedEnrol {
            return Ok(None);
        }
        let seed = totp::new_secret()?;
        s.pending_totp = Some(secret::seal(&self.master_key, &s.username, &seed)?);
        self.store.save_session(&session::digest(token), &s)?;
        Ok(Some(totp::otpauth_uri(issuer, &s.username, &seed)))
    }

    /// Confirms enrolment with a first code from the new authenticator.
    pub fn confirm_enrol(
        &self,
        token: &str,
        browser: &str,
        code: &str,
        now: i64,
        source: Option<&str>,
    ) -> Result<Result<Step, Refused>, Error> {
        let id = session::digest(token);
        let refused = Refused { message: crate::login_failed(), retry_after: None };
        let Ok(mut s) = self.session(token, browser, now)? else { return Ok(Err(refused)) };
        let (Stage::NeedEnrol, Some(sealed)) = (s.stage, s.pending_totp.clone()) else { return Ok(Err(refused)) };
        let seed = secret::open(&self.master_key, &s.username, &sealed)?;
        let Some(step) = totp::verify(&seed, code, now, None) else { return Ok(Err(refused)) };
        let factor = TotpFactor { sealed_secret: sealed, last_step: Some(step), enrolled_at: now };
        self.store.update_credentials(&s.username, &mut |creds| {
            creds.totp = Some(factor.clone());
            Ok(true)
        })?;
        s.pending_totp = None;
        let who = user_actor(&s.username);
        self.log(event(
            "enrol",
            who,
            &s.username,
            Outcome::Success,
            Some("TOTP authenticator enrolled at login".into()),
            source,
        ))?;
        Ok(Ok(self.after_second_factor(&id, &mut s, now, source, "totp (enrolled)")?))
    }

    /// Keeps a WebAuthn ceremony in the server-side session until the browser answers.
    fn hold_ceremony(&self, token: &str, s: &mut Session, state: &passkey::Ceremony) -> Result<(), Error> {
        s.pending_webauthn = Some(serde_json::to_value(state).map_err(|e| Error::Invalid(e.to_string()))?);
        self.store.save_session(&session::digest(token), s)
    }

    /// Takes the session's WebAuthn ceremony out: single use, whatever the answer turns out to be.
    fn take_ceremony(
        &self,
        token: &str,
        browser: &str,
        now: i64,
    ) -> Result<Option<(Session, passkey::Ceremony)>, Error> {
        let Ok(mut s) = self.session(token, browser, now)? else { return Ok(None) };
        let Some(state) = s.pending_webauthn.take() else { return Ok(None) };
        self.store.save_session(&session::digest(token), &s)?;
        Ok(serde_json::from_value::<passkey::Ceremony>(state).ok().map(|c| (s, c)))
    }

    /// Which second factors the account behind a session awaiting its second step has:
    /// `(totp, passkey)`. `None` if the session is not waiting for one.
    pub fn pending_factors(&self, token: &str, browser: &str, now: i64) -> Result<Option<(bool, bool)>, Error> {
        let Ok(s) = self.session(token, browser, now)? else { return Ok(None) };
        if s.stage != Stage::NeedTotp {
            return Ok(None);
        }
        let creds = self.store.credentials(&s.username)?.unwrap_or_default();
        Ok(Some((creds.totp.is_some(), !creds.passkeys.is_empty())))
    }

    /// The passkeys of a signed-in person: `(name, enrolled_at, last_used)`.
    pub fn passkeys_of(&self, username: &str) -> Result<Vec<(String, i64, Option<i64>)>, Error> {
        let creds = self.store.credentials(username)?.unwrap_or_default();
        Ok(creds.passkey_factors().into_iter().map(|k| (k.name, k.enrolled_at, k.last_used)).collect())
    }

    /// Starts registering a passkey: while enrolling a second factor at login, or from a full
    /// session (adding another key). Returns the options for `navigator.credentials.create`.
    pub fn begin_passkey_registration(
        &self,
        rp: &passkey::RelyingParty,
        token: &str,
        browser: &str,
        now: i64,
    ) -> Result<Option<serde_json::Value>, Error> {
        let Ok(mut s) = self.session(token, browser, now)? else { return Ok(None) };
        if !matches!(s.stage, Stage::NeedEnrol | Stage::Full) {
            return Ok(None);
        }
        // The user handle is made once, atomically (two tabs registering at once share it).
        let fresh = passkey::new_user_handle()?;
        self.store.update_credentials(&s.username, &mut |creds| {
            Ok(creds.webauthn_handle.is_none() && {
                creds.webauthn_handle = Some(fresh.to_string());
                true
            })
        })?;
        let creds = self.store.credentials(&s.username)?.unwrap_or_default();
        let handle = creds
            .webauthn_handle
            .as_deref()
            .and_then(|h| h.parse().ok())
            .ok_or_else(|| Error::Storage("stored passkey user handle is not valid".into()))?;
        let display =
            self.store.account(&s.username)?.and_then(|(a, _)| a.display_name).unwrap_or_else(|| s.username.clone());
        let (options, state) = rp.begin_register(handle, &s.username, &display, &creds.passkey_factors())?;
        self.hold_ceremony(token, &mut s, &state)?;
        Ok(Some(options))
    }

    /// Finishes registering a passkey with the browser's response. At login enrolment this
    /// completes the second factor (then the password change if due); from a full session it adds
    /// the key. Audited.
    #[expect(clippy::too_many_arguments, reason = "the parts of one ceremony step")]
    pub fn finish_passkey_registration(
        &self,
        rp: &passkey::RelyingParty,
        token: &str,
        browser: &str,
        response: &str,
        name: &str,
        now: i64,
        source: Option<&str>,
    ) -> Result<Result<Step, Refused>, Error> {
        let id = session::digest(token);
        let refused = Refused { message: crate::login_failed(), retry_after: None };
        let Some((mut s, state)) = self.take_ceremony(token, browser, now)? else { return Ok(Err(refused)) };
        if !matches!(s.stage, Stage::NeedEnrol | Stage::Full) {
            return Ok(Err(refused));
        }
        let Some(key) = rp.finish_register(response, &state)? else {
            let who = user_actor(&s.username);
            let detail = Some("passkey registration refused".into());
            self.log(event("enrol", who, &s.username, Outcome::Failure, detail, source))?;
            return Ok(Err(refused));
        };
        let name: String = name.trim().chars().take(64).collect();
        let (mut named, mut count) = (String::new(), 0);
        let mut key = Some(key);
        self.store.update_credentials(&s.username, &mut |creds| {
            let Some(key) = key.take() else { return Ok(false) };
            let mut keys = creds.passkey_factors();
            named = if name.is_empty() { format!("passkey {}", keys.len() + 1) } else { name.clone() };
            keys.push(passkey::PasskeyFactor {
                name: named.clone(),
                enrolled_at: now,
                last_used: None,
                credential: key,
            });
            creds.set_passkey_factors(&keys);
            count = keys.len();
            Ok(true)
        })?;
        let who = user_actor(&s.username);
        let detail = Some(format!("passkey `{named}` registered ({count} in all)"));
        self.log(event("enrol", who, &s.username, Outcome::Success, detail, source))?;
        if s.stage == Stage::NeedEnrol {
            return Ok(Ok(self.after_second_factor(&id, &mut s, now, source, "passkey (enrolled)")?));
        }
        Ok(Ok(Step { stage: s.stage, token: token.to_string() }))
    }

    /// Starts the passkey second step after the password: options for
    /// `navigator.credentials.get`, or `None` if the session is not waiting for a second factor or
    /// the account has no passkey.
    pub fn begin_passkey_login(
        &self,
        rp: &passkey::RelyingParty,
        token: &str,
        browser: &str,
        now: i64,
    ) -> Result<Option<serde_json::Value>, Error> {
        let Ok(mut s) = self.session(token, browser, now)? else { return Ok(None) };
        if s.stage != Stage::NeedTotp {
            return Ok(None);
        }
        let keys = self.store.credentials(&s.username)?.unwrap_or_default().passkey_factors();
        if keys.is_empty() {
            return Ok(None);
        }
        let (options, state) = rp.begin_authenticate(&keys)?;
        self.hold_ceremony(token, &mut s, &state)?;
        Ok(Some(options))
    }

    /// The second step with a passkey assertion. The challenge is single use; lockout applies as
    /// for other factors.
    pub fn verify_passkey(
        &self,
        rp: &passkey::RelyingParty,
        token: &str,
        browser: &str,
        response: &str,
        now: i64,
        source: Option<&str>,
    ) -> Result<Result<Step, Refused>, Error> {
        let state = self.take_ceremony(token, browser, now)?.map(|(_, c)| c);
        self.second_step(token, browser, now, source, "passkey assertion refused", |_, creds| {
            let Some(state) = state else { return Ok(None) };
            let mut keys = creds.passkey_factors();
            let used = rp.finish_authenticate(response, &state, &mut keys, now);
            if used.is_some() {
                creds.set_passkey_factors(&keys);
            }
            Ok(used.map(|name| format!("passkey ({name})")))
        })
    }

    /// The forced password change within a login.
    pub fn change_password_in_session(
        &self,
        token: &str,
        browser: &str,
        current: &str,
        new: &str,
        now: i64,
    ) -> Result<Result<Step, Error>, Error> {
        let Ok(mut s) = self.session(token, browser, now)? else {
            return Ok(Err(Error::PasswordRefused(vec![crate::login_failed()])));
        };
        if s.stage != Stage::NeedPasswordChange {
            return Ok(Err(Error::PasswordRefused(vec![crate::login_failed()])));
        }
        if let Err(e) = self.change_password(&s.username, current, new, now) {
            return Ok(Err(e));
        }
        s.stage = Stage::Full;
        s.last_seen = now;
        let token = self.rotate(&session::digest(token), &s)?;
        Ok(Ok(Step { stage: Stage::Full, token }))
    }

    /// Logout: ends the session and records how long it lasted.
    pub fn logout(&self, token: &str, now: i64, source: Option<&str>) -> Result<(), Error> {
        let id = session::digest(token);
        if let Some(s) = self.store.session(&id)? {
            self.store.delete_session(&id)?;
            let who = user_actor(&s.username);
            self.log(event(
                "logout",
                who,
                &s.username,
                Outcome::Success,
                Some(format!("session lasted {} s", now - s.created)),
                source,
            ))?;
        }
        Ok(())
    }

    /// Two-factor coverage of active accounts.
    pub fn coverage(&self) -> Result<Coverage, Error> {
        let mut c = Coverage::default();
        for a in self.store.accounts()?.into_iter().filter(|a| a.status == Status::Active) {
            c.active += 1;
            let factors = self.store.credentials(&a.username)?.map(|cr| cr.second_factors()).unwrap_or_default();
            for f in &factors {
                *c.by_factor.entry((*f).to_string()).or_default() += 1;
            }
            if !factors.is_empty() {
                c.with_second_factor += 1;
            } else {
                c.without.push(a.username);
            }
        }
        Ok(c)
    }
}

/// A person acting for themselves (login steps, enrolment), as the audit trail records them.
fn user_actor(username: &str) -> AuditActor {
    AuditActor { client_id: None, fhir_user: None, id: username.to_string(), kind: mamori_audit::ActorKind::User }
}

/// Recovery codes compare without dashes, spaces or case.
fn normalise_recovery(c: &str) -> String {
    c.chars().filter(|c| c.is_ascii_alphanumeric()).collect::<String>().to_uppercase()
}
