//! Accounts (利用者): issue, transfer (人事異動), leave (退職), disable, enable, unlock, enrol
//! factors, the emergency accounts, two-factor coverage and dormant accounts. Every change goes
//! through the identity service, which versions the account and audits the act; a transfer also
//! opens an access review of the account.
//!
//! Separation of duties: a person may not change their own account through these acts (their
//! own password and factors they change at sign-in); the operator at the command line may.

use mamori_identity::account::{Account, Coverage, Proofing, Status};
use mamori_identity::service::NewAccount;

use crate::{AdminAct, AppError, Caller, Ctx, Node, approvals};

/// An account to issue.
#[derive(Debug, Clone, Default)]
pub struct Issue {
    /// Login name.
    pub username: String,
    /// Roles (職種).
    pub roles: Vec<String>,
    /// The person's FHIR resource (`Practitioner/…`).
    pub fhir_user: Option<String>,
    /// Display name.
    pub display_name: Option<String>,
    /// Department.
    pub department: Option<String>,
    /// Identity proofing (身元確認): method, who verified, date (YYYY-MM-DD).
    pub proofing: Option<Proofing>,
    /// The initial password (must be changed at first sign-in, unless emergency).
    pub password: String,
    /// An emergency (非常時用) account: its password is sealed; every use raises an alert.
    pub emergency: bool,
}

/// One account as the administrator sees it.
#[derive(Debug, Clone)]
pub struct Overview {
    /// The account.
    pub account: Account,
    /// Its version.
    pub version: u64,
    /// Second factors enrolled (`totp`, `passkey`).
    pub second_factors: Vec<String>,
    /// The password must be changed at next sign-in.
    pub must_change_password: bool,
    /// Failed attempts and lock state.
    pub lockout: serde_json::Value,
    /// Unix seconds of the last successful sign-in.
    pub last_login: Option<i64>,
}

fn not_self(ctx: &Ctx, username: &str) -> Result<(), AppError> {
    match &ctx.caller {
        Caller::Person { username: me, .. } if me == username => Err(AppError::Forbidden(
            "自分自身のアカウントは変更できません / you may not change your own account".into(),
        )),
        _ => Ok(()),
    }
}

/// Issues an account.
///
/// An account whose roles carry administrative rights is a high-risk change (the two-person
/// rule): where a second person could approve, it is issued **disabled** and enabling it is held
/// for their approval ([`AppError::Pending`], the account exists but cannot sign in until then).
pub fn issue(ctx: &Ctx, node: &Node, n: Issue) -> Result<Account, AppError> {
    ctx.authorize(node, AdminAct::ManageUsers)?;
    if let Some(p) = &n.proofing
        && (!mamori_records::primitive::is_date(&p.date) || p.date.len() != 10)
    {
        return Err(AppError::Invalid(format!("proofing date `{}` is not YYYY-MM-DD", p.date)));
    }
    let gain = approvals::admin_gain(node, &n.username, &[], &n.roles);
    let held = !gain.is_empty() && approvals::second_person_exists(ctx, node)?;
    let a = node.identity.add(
        &ctx.by(),
        NewAccount {
            username: n.username,
            roles: n.roles,
            display_name: n.display_name,
            fhir_user: n.fhir_user,
            department: n.department,
            proofing: n.proofing,
        },
        &n.password,
        ctx.now_secs(),
    )?;
    if n.emergency {
        node.identity.mark_emergency(&ctx.by(), &a.username)?;
    }
    if held {
        let a = node.identity.disable(&ctx.by(), &a.username)?;
        let version = node.store.account(&a.username)?.map_or(0, |(_, v)| v);
        let change =
            approvals::Change::Enable { username: a.username.clone(), roles: a.roles.clone(), expected: version };
        approvals::hold(ctx, node, change, grant_summary(&a.username, &a.roles, &gain, "issued disabled; enabling"))?;
    } else if !gain.is_empty() {
        // Nobody else could approve (recorded as waived); the account is usable at once.
        approvals::waive(
            ctx,
            node,
            &approvals::Change::Enable { username: a.username.clone(), roles: a.roles.clone(), expected: 0 },
            &grant_summary(&a.username, &a.roles, &gain, "issued with"),
        )?;
    }
    Ok(a)
}

fn grant_summary(username: &str, roles: &[String], gain: &[AdminAct], what: &str) -> String {
    let acts: Vec<&str> = gain.iter().map(|a| a.name()).collect();
    format!("account `{username}` {what} roles {} (administrative rights: {})", roles.join(", "), acts.join(", "))
}

/// Every account.
pub fn list(ctx: &Ctx, node: &Node) -> Result<Vec<Overview>, AppError> {
    ctx.authorize(node, AdminAct::ManageUsers)?;
    let mut out = Vec::new();
    for a in node.store.accounts()? {
        out.push(overview(node, a)?);
    }
    Ok(out)
}

fn overview(node: &Node, a: Account) -> Result<Overview, AppError> {
    let (account, version) = node.store.account(&a.username)?.unwrap_or((a, 0));
    let creds = node.store.credentials(&account.username)?;
    let lockout = serde_json::to_value(node.store.lockout(&account.username)?).unwrap_or_default();
    let last_login = node.store.last_login(&account.username).map_err(AppError::from)?;
    Ok(Overview {
        second_factors: creds
            .as_ref()
            .map(|c| c.second_factors().iter().map(|f| (*f).to_string()).collect())
            .unwrap_or_default(),
        must_change_password: creds.is_some_and(|c| c.must_change),
        lockout,
        last_login,
        version,
        account,
    })
}

/// One account.
pub fn show(ctx: &Ctx, node: &Node, username: &str) -> Result<Overview, AppError> {
    ctx.authorize(node, AdminAct::ManageUsers)?;
    let (a, _) = node.store.account(username)?.ok_or_else(|| AppError::NotFound(format!("no account `{username}`")))?;
    overview(node, a)
}

/// Disables an account: it cannot sign in, and its tokens and sessions stop working at once.
pub fn disable(ctx: &Ctx, node: &Node, username: &str) -> Result<Account, AppError> {
    ctx.authorize(node, AdminAct::ManageUsers)?;
    not_self(ctx, username)?;
    Ok(node.identity.disable(&ctx.by(), username)?)
}

/// Enables a disabled account. One whose roles carry administrative rights is held for a second
/// person's approval (the two-person rule).
pub fn enable(ctx: &Ctx, node: &Node, username: &str) -> Result<Account, AppError> {
    ctx.authorize(node, AdminAct::ManageUsers)?;
    not_self(ctx, username)?;
    let (a, version) =
        node.store.account(username)?.ok_or_else(|| AppError::NotFound(format!("no account `{username}`")))?;
    let gain = approvals::admin_gain(node, username, &[], &a.roles);
    if !gain.is_empty() && a.status == Status::Disabled {
        let change =
            approvals::Change::Enable { username: a.username.clone(), roles: a.roles.clone(), expected: version };
        approvals::hold(ctx, node, change, grant_summary(username, &a.roles, &gain, "enabled with"))?;
    }
    Ok(node.identity.enable(&ctx.by(), username, Some(version))?)
}

/// Lifts a lockout after failed sign-ins.
pub fn unlock(ctx: &Ctx, node: &Node, username: &str) -> Result<(), AppError> {
    ctx.authorize(node, AdminAct::ManageUsers)?;
    not_self(ctx, username)?;
    Ok(node.identity.unlock(&ctx.by(), username)?)
}

/// Leaving (退職): the account is closed for good and every token revoked; returns how many.
pub fn leave(ctx: &Ctx, node: &Node, username: &str) -> Result<u64, AppError> {
    ctx.authorize(node, AdminAct::ManageUsers)?;
    not_self(ctx, username)?;
    Ok(node.identity.leave(&ctx.by(), username)?)
}

/// A transfer (人事異動): a new department and/or roles, and an access review of the account
/// opened at once. Returns the account and the campaign.
pub fn transfer(
    ctx: &Ctx,
    node: &Node,
    username: &str,
    department: Option<String>,
    roles: Option<Vec<String>>,
) -> Result<(Account, crate::reviews::Campaign), AppError> {
    ctx.authorize(node, AdminAct::ManageUsers)?;
    not_self(ctx, username)?;
    if department.is_none() && roles.is_none() {
        return Err(AppError::Invalid("a transfer needs a new department or new roles".into()));
    }
    let (old, version) =
        node.store.account(username)?.ok_or_else(|| AppError::NotFound(format!("no account `{username}`")))?;
    if let Some(new) = &roles {
        let gain = approvals::admin_gain(node, username, &old.roles, new);
        if !gain.is_empty() {
            let change = approvals::Change::Roles {
                username: username.to_string(),
                department: department.clone(),
                roles: new.clone(),
                expected: version,
            };
            approvals::hold(ctx, node, change, grant_summary(username, new, &gain, "transferred to"))?;
        }
    }
    apply_transfer(ctx, node, username, department, roles, Some(version))
}

/// The transfer itself, decided on the account's version `expected`: new department and/or
/// roles, and an access review of the account opened at once.
pub(crate) fn apply_transfer(
    ctx: &Ctx,
    node: &Node,
    username: &str,
    department: Option<String>,
    roles: Option<Vec<String>>,
    expected: Option<u64>,
) -> Result<(Account, crate::reviews::Campaign), AppError> {
    let a = node.identity.transfer(&ctx.by(), username, department, roles, expected)?;
    let c = crate::reviews::open_for(
        ctx,
        node,
        &format!("transfer (人事異動) of {}", a.username),
        std::slice::from_ref(&a.username),
    )?;
    Ok((a, c))
}

/// Enrols a TOTP authenticator for an account; returns the `otpauth://` URI, shown once.
pub fn enroll_totp(ctx: &Ctx, node: &Node, username: &str, issuer: &str) -> Result<String, AppError> {
    ctx.authorize(node, AdminAct::ManageUsers)?;
    not_self(ctx, username)?;
    Ok(node.identity.enroll_totp(&ctx.by(), username, issuer, ctx.now_secs())?)
}

/// New recovery codes for an account (the old ones stop working); shown once.
pub fn recovery_codes(ctx: &Ctx, node: &Node, username: &str) -> Result<Vec<String>, AppError> {
    ctx.authorize(node, AdminAct::ManageUsers)?;
    not_self(ctx, username)?;
    Ok(node.identity.new_recovery_codes(&ctx.by(), username)?)
}

/// The emergency accounts, each with the time its sealed password was used (Unix seconds), if it was.
pub fn emergency_accounts(ctx: &Ctx, node: &Node) -> Result<Vec<(Account, Option<i64>)>, AppError> {
    ctx.authorize(node, AdminAct::ManageUsers)?;
    Ok(node.identity.emergency_accounts()?)
}

/// Replaces an emergency account's sealed password (after a use).
pub fn rotate_emergency(ctx: &Ctx, node: &Node, username: &str, password: &str) -> Result<(), AppError> {
    ctx.authorize(node, AdminAct::ManageUsers)?;
    not_self(ctx, username)?;
    Ok(node.identity.rotate_emergency(&ctx.by(), username, password, ctx.now_secs())?)
}

/// Two-factor coverage of the active accounts (the 令和9年度 requirement).
pub fn coverage(ctx: &Ctx, node: &Node) -> Result<Coverage, AppError> {
    ctx.authorize_any(node, &[AdminAct::ManageUsers, AdminAct::ReadAudit])?;
    Ok(node.identity.coverage()?)
}

/// Active accounts with no sign-in for `days` days (from their creation if they never signed
/// in); with `disable`, each is disabled (audited as any disable). Returns their names.
pub fn dormant(ctx: &Ctx, node: &Node, days: i64, disable: bool) -> Result<Vec<String>, AppError> {
    ctx.authorize(node, AdminAct::ManageUsers)?;
    if days < 1 {
        return Err(AppError::Invalid("the dormancy period must be at least one day".into()));
    }
    let cutoff = ctx.now_secs() - days.saturating_mul(86_400);
    let mut out = Vec::new();
    for a in node.store.accounts()?.into_iter().filter(|a| a.status == Status::Active) {
        let last = node.store.last_login(&a.username).map_err(AppError::from)?.unwrap_or(a.created_at);
        if last < cutoff {
            if disable && not_self(ctx, &a.username).is_ok() {
                node.identity.disable(&ctx.by(), &a.username)?;
            }
            out.push(a.username);
        }
    }
    Ok(out)
}

/// The accounts as the security manager watches them (a read: nothing is changed).
#[derive(Debug, Clone)]
pub struct Posture {
    /// Two-factor coverage of the active accounts.
    pub coverage: Coverage,
    /// Active accounts with no sign-in for the dormancy period: name, last sign-in (Unix s;
    /// `None`: never).
    pub dormant: Vec<(String, Option<i64>)>,
    /// Accounts locked now: name, locked until (Unix s).
    pub locked: Vec<(String, i64)>,
    /// Accounts that are disabled or have left.
    pub inactive: usize,
}

/// Days without a sign-in after which an active account counts as dormant on the dashboard.
pub const DORMANT_DAYS: i64 = 90;

/// Coverage, dormant and locked accounts: what the security manager (and the administrator)
/// sees at a glance.
pub fn posture(ctx: &Ctx, node: &Node) -> Result<Posture, AppError> {
    ctx.authorize_any(node, &[AdminAct::ReadAudit, AdminAct::ManageUsers])?;
    let now = ctx.now_secs();
    let cutoff = now - DORMANT_DAYS * 86_400;
    let mut p = Posture { coverage: node.identity.coverage()?, dormant: Vec::new(), locked: Vec::new(), inactive: 0 };
    for a in node.store.accounts()? {
        if a.status != Status::Active {
            p.inactive += 1;
            continue;
        }
        let last = node.store.last_login(&a.username).map_err(AppError::from)?;
        if last.unwrap_or(a.created_at) < cutoff {
            p.dormant.push((a.username.clone(), last));
        }
        if let Some(until) = node.store.lockout(&a.username)?.locked_until
            && until > now
        {
            p.locked.push((a.username, until));
        }
    }
    Ok(p)
}
