//! `mamori user …`: accounts through the identity service (every change audited, definitions
//! versioned through the configuration path). Messages for people are Japanese first.

use std::io::Read;
use std::process::ExitCode;

use clap::Subcommand;
use mamori_identity::account::{Proofing, Status};
use mamori_identity::service::NewAccount;

use crate::cli::DataDir;

/// `mamori user` subcommands.
#[derive(Debug, Subcommand)]
pub enum UserCmd {
    /// Issue an account (the initial password, read from stdin, must be changed at first login).
    Add {
        #[command(flatten)]
        dir: DataDir,
        /// Login name (a–z 0–9 . _ -).
        username: String,
        /// Role by job type (repeatable): doctor, nurse, pharmacist, clerk, security_manager, …
        #[arg(long = "role", required = true)]
        roles: Vec<String>,
        /// The person's Practitioner/ID or PractitionerRole/ID.
        #[arg(long)]
        fhir_user: Option<String>,
        /// Display name.
        #[arg(long)]
        display_name: Option<String>,
        /// Business unit (業務単位).
        #[arg(long)]
        department: Option<String>,
        /// 身元確認 method, e.g. "マイナンバーカード eKYC".
        #[arg(long, requires_all = ["proofing_verifier", "proofing_date"])]
        proofing_method: Option<String>,
        /// Who verified the person's identity.
        #[arg(long)]
        proofing_verifier: Option<String>,
        /// When (YYYY-MM-DD).
        #[arg(long)]
        proofing_date: Option<String>,
        /// Read the initial password from standard input (required: never on the command line).
        #[arg(long, required = true)]
        password_stdin: bool,
        /// An emergency account (非常時用): the password is sealed for when normal sign-in is
        /// unavailable; every use raises an alert, and after use it must be rotated.
        #[arg(long)]
        emergency: bool,
        /// Who issues it.
        #[arg(long, env = "USER", default_value = "operator")]
        operator: String,
    },
    /// Emergency accounts and whether their sealed credential has been used (must be rotated).
    Emergency(DataDir),
    /// Rotate an emergency account's sealed password (read from stdin) after use.
    RotateEmergency {
        #[command(flatten)]
        dir: DataDir,
        /// Login name.
        username: String,
        /// Read the new password from standard input (required).
        #[arg(long, required = true)]
        password_stdin: bool,
        /// Who rotates it.
        #[arg(long, env = "USER", default_value = "operator")]
        operator: String,
    },
    /// Enrol a TOTP authenticator; prints the otpauth:// URI once.
    EnrollTotp {
        #[command(flatten)]
        dir: DataDir,
        /// Login name.
        username: String,
        /// Issuer shown in the authenticator app.
        #[arg(long, default_value = "Mamori")]
        issuer: String,
        /// Who enrols it.
        #[arg(long, env = "USER", default_value = "operator")]
        operator: String,
    },
    /// Issue 10 single-use recovery codes (replacing unused ones); printed once.
    RecoveryCodes(UserTarget),
    /// List accounts.
    List(DataDir),
    /// Show one account.
    Show {
        #[command(flatten)]
        dir: DataDir,
        /// Login name.
        username: String,
    },
    /// Disable an account (its tokens are revoked).
    Disable(UserTarget),
    /// Re-enable a disabled account.
    Enable(UserTarget),
    /// Clear a lockout.
    Unlock(UserTarget),
    /// Leave (退職): disable at once and revoke every token.
    Leave(UserTarget),
    /// Transfer (人事異動): new department and/or roles; opens an access review.
    Transfer {
        #[command(flatten)]
        target: UserTarget,
        /// New department.
        #[arg(long)]
        department: Option<String>,
        /// New roles (replace the old ones).
        #[arg(long = "role")]
        roles: Vec<String>,
    },
    /// Two-factor coverage of active accounts against the FY2027 (令和9年度) deadline.
    Coverage(DataDir),
    /// Accounts with no login for N days (flag; with --disable, disable them).
    Dormant {
        #[command(flatten)]
        dir: DataDir,
        /// Days without a login.
        #[arg(long, default_value_t = 90)]
        days: i64,
        /// Disable the dormant accounts.
        #[arg(long)]
        disable: bool,
        /// Who disables them.
        #[arg(long, env = "USER", default_value = "operator")]
        operator: String,
    },
}

/// A subcommand's target account.
#[derive(Debug, clap::Args)]
pub struct UserTarget {
    #[command(flatten)]
    dir: DataDir,
    /// Login name.
    username: String,
    /// Who acts.
    #[arg(long, env = "USER", default_value = "operator")]
    operator: String,
}

fn now() -> i64 {
    mamori_records::Clock::now(&mamori_records::SystemClock).0 / 1_000_000
}

fn err(e: mamori_identity::Error) -> String {
    match e {
        mamori_identity::Error::PasswordRefused(why) => {
            let mut s = String::from("パスワードが要件を満たしません / the password was refused:");
            for m in why {
                s.push_str(&format!("\n  - {} / {}", m.ja, m.en));
            }
            s
        }
        other => other.to_string(),
    }
}

/// Runs a `mamori user` subcommand.
pub fn run(c: UserCmd) -> Result<ExitCode, String> {
    match c {
        UserCmd::Add {
            dir,
            username,
            roles,
            fhir_user,
            display_name,
            department,
            proofing_method,
            proofing_verifier,
            proofing_date,
            password_stdin: _,
            emergency,
            operator,
        } => {
            let mut pw = String::new();
            std::io::stdin()
                .read_to_string(&mut pw)
                .map_err(|e| format!("cannot read the password from stdin: {e}"))?;
            let pw = pw.trim_end_matches(['\n', '\r']);
            let proofing = match (proofing_method, proofing_verifier, proofing_date) {
                (Some(method), Some(verifier), Some(date)) => {
                    if !mamori_records::primitive::is_date(&date) || date.len() != 10 {
                        return Err(format!("--proofing-date `{date}` is not YYYY-MM-DD"));
                    }
                    Some(Proofing { method, verifier, date })
                }
                _ => None,
            };
            let node = dir.open()?;
            let a = node
                .identity
                .add(
                    &format!("operator:{operator}"),
                    NewAccount { username, roles, display_name, fhir_user, department, proofing },
                    pw,
                    now(),
                )
                .map_err(err)?;
            println!("アカウントを発行しました / account issued: {} (roles: {})", a.username, a.roles.join(", "));
            if emergency {
                node.identity.mark_emergency(&format!("operator:{operator}"), &a.username).map_err(err)?;
                println!(
                    "非常時用アカウントです。パスワードを封印して保管してください / emergency account: seal the password; every use raises an alert"
                );
            } else {
                println!("初回ログイン時にパスワードの変更が必要です / the password must be changed at first login");
            }
            Ok(ExitCode::SUCCESS)
        }
        UserCmd::Emergency(dir) => {
            let node = dir.open()?;
            let list = node.identity.emergency_accounts().map_err(err)?;
            if list.is_empty() {
                println!("非常時用アカウントはありません / no emergency accounts");
            }
            let mut to_rotate = 0;
            for (a, opened) in list {
                match opened {
                    None => println!("{}	sealed (未使用)	{}", a.username, a.roles.join(", ")),
                    Some(t) => {
                        to_rotate += 1;
                        println!(
                            "{}	USED at unix {t} — rotate now (使用済み・要更新)	{}",
                            a.username,
                            a.roles.join(", ")
                        );
                    }
                }
            }
            Ok(if to_rotate > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS })
        }
        UserCmd::RotateEmergency { dir, username, password_stdin: _, operator } => {
            let mut pw = String::new();
            std::io::stdin()
                .read_to_string(&mut pw)
                .map_err(|e| format!("cannot read the password from stdin: {e}"))?;
            let node = dir.open()?;
            node.identity
                .rotate_emergency(&format!("operator:{operator}"), &username, pw.trim_end_matches(['\n', '\r']), now())
                .map_err(err)?;
            println!("封印パスワードを更新しました / sealed credential rotated: {username}");
            Ok(ExitCode::SUCCESS)
        }
        UserCmd::EnrollTotp { dir, username, issuer, operator } => {
            let node = dir.open()?;
            let uri =
                node.identity.enroll_totp(&format!("operator:{operator}"), &username, &issuer, now()).map_err(err)?;
            println!("{uri}");
            match qrcode::QrCode::new(uri.as_bytes()) {
                Ok(code) => println!(
                    "{}",
                    code.render::<qrcode::render::unicode::Dense1x2>()
                        .dark_color(qrcode::render::unicode::Dense1x2::Light)
                        .light_color(qrcode::render::unicode::Dense1x2::Dark)
                        .build()
                ),
                Err(e) => eprintln!("QR code unavailable: {e}"),
            }
            eprintln!(
                "認証アプリで登録してください（この URI は一度だけ表示されます） / add it to an authenticator app (shown once)"
            );
            Ok(ExitCode::SUCCESS)
        }
        UserCmd::RecoveryCodes(t) => {
            let codes = t
                .dir
                .open()?
                .identity
                .new_recovery_codes(&format!("operator:{}", t.operator), &t.username)
                .map_err(err)?;
            for c in codes {
                println!("{c}");
            }
            eprintln!("各コードは一度だけ使えます。安全に保管してください / each code works once; keep them safe");
            Ok(ExitCode::SUCCESS)
        }
        UserCmd::List(dir) => {
            let node = dir.open()?;
            for a in node.store.accounts().map_err(err)? {
                let f = node
                    .store
                    .credentials(&a.username)
                    .map_err(err)?
                    .map(|c| c.second_factors().join("+"))
                    .unwrap_or_default();
                let status = match a.status {
                    Status::Active => "active",
                    Status::Disabled => "disabled",
                    Status::Left => "left",
                };
                println!(
                    "{}\t{status}\t{}\t2fa:{}",
                    a.username,
                    a.roles.join(","),
                    if f.is_empty() { "none" } else { &f }
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        UserCmd::Show { dir, username } => {
            let node = dir.open()?;
            let (a, v) =
                node.store.account(&username).map_err(err)?.ok_or_else(|| format!("no account `{username}`"))?;
            let mut j = serde_json::to_value(&a).map_err(|e| e.to_string())?;
            if let Some(o) = j.as_object_mut() {
                o.insert("version".into(), v.into());
                let creds = node.store.credentials(&username).map_err(err)?;
                o.insert(
                    "second_factors".into(),
                    creds.as_ref().map(|c| c.second_factors()).unwrap_or_default().into(),
                );
                o.insert("must_change_password".into(), creds.is_some_and(|c| c.must_change).into());
                o.insert(
                    "lockout".into(),
                    serde_json::to_value(node.store.lockout(&username).map_err(err)?).unwrap_or_default(),
                );
                o.insert("last_login".into(), node.store.last_login(&username)?.into());
            }
            println!("{}", serde_json::to_string_pretty(&j).map_err(|e| e.to_string())?);
            Ok(ExitCode::SUCCESS)
        }
        UserCmd::Disable(t) => {
            t.dir.open()?.identity.disable(&format!("operator:{}", t.operator), &t.username).map_err(err)?;
            println!("無効化しました / disabled: {}", t.username);
            Ok(ExitCode::SUCCESS)
        }
        UserCmd::Enable(t) => {
            t.dir.open()?.identity.enable(&format!("operator:{}", t.operator), &t.username).map_err(err)?;
            println!("有効化しました / enabled: {}", t.username);
            Ok(ExitCode::SUCCESS)
        }
        UserCmd::Unlock(t) => {
            t.dir.open()?.identity.unlock(&format!("operator:{}", t.operator), &t.username).map_err(err)?;
            println!("ロックを解除しました / unlocked: {}", t.username);
            Ok(ExitCode::SUCCESS)
        }
        UserCmd::Leave(t) => {
            let n = t.dir.open()?.identity.leave(&format!("operator:{}", t.operator), &t.username).map_err(err)?;
            println!("退職処理をしました / left: {} ({n} tokens revoked)", t.username);
            Ok(ExitCode::SUCCESS)
        }
        UserCmd::Transfer { target, department, roles } => {
            let roles = if roles.is_empty() { None } else { Some(roles) };
            let node = target.dir.open()?;
            let by = format!("operator:{}", target.operator);
            let a = node.identity.transfer(&by, &target.username, department, roles).map_err(err)?;
            let c = crate::review::open_campaign(
                &node,
                &format!("transfer (人事異動) of {}", a.username),
                std::slice::from_ref(&a.username),
                &by,
            )?;
            println!(
                "異動を記録し、権限の見直しを開始しました / transferred, access review opened: {} ({}) — campaign {}",
                a.username,
                a.roles.join(", "),
                c.id
            );
            Ok(ExitCode::SUCCESS)
        }
        UserCmd::Coverage(dir) => {
            let c = dir.open()?.identity.coverage().map_err(err)?;
            println!(
                "二要素認証の導入率 / two-factor coverage: {:.1}% ({} of {} active accounts)",
                c.percent(),
                c.with_second_factor,
                c.active
            );
            println!("期限 / deadline: 令和9年度 (FY2027: 2027-04-01 – 2028-03-31)");
            for (factor, n) in &c.by_factor {
                let name = match factor.as_str() {
                    "totp" => "認証アプリ (TOTP)",
                    "passkey" => "パスキー／セキュリティキー (WebAuthn)",
                    other => other,
                };
                println!("要素別 / by factor: {name}: {n}");
            }
            for u in &c.without {
                println!("未対応 / without a second factor: {u}");
            }
            Ok(if c.without.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        UserCmd::Dormant { dir, days, disable, operator } => {
            let node = dir.open()?;
            let cutoff = now() - days * 86_400;
            for a in node.store.accounts().map_err(err)?.into_iter().filter(|a| a.status == Status::Active) {
                let last = node.store.last_login(&a.username)?.unwrap_or(a.created_at);
                if last < cutoff {
                    if disable {
                        node.identity.disable(&format!("operator:{operator}"), &a.username).map_err(err)?;
                        println!("休眠のため無効化 / disabled as dormant: {}", a.username);
                    } else {
                        println!("休眠 / dormant: {}", a.username);
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
