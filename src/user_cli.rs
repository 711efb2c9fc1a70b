//! `mamori user …`: accounts on the command line. The use cases are `mamori_app::users` (every
//! change through the identity service, versioned and audited); this file parses, calls and
//! prints. Messages for people are Japanese first.

use crate::fail::{Fallible, context};
use std::io::Read;
use std::process::ExitCode;

use clap::Subcommand;
use mamori_app::{Ctx, users};
use mamori_identity::account::{Proofing, Status};

use crate::cli::{DataDir, reader};

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

fn read_password() -> Fallible<String> {
    let mut pw = String::new();
    std::io::stdin().read_to_string(&mut pw).map_err(context("cannot read the password from stdin"))?;
    Ok(pw.trim_end_matches(['\n', '\r']).to_string())
}

fn err(e: mamori_app::AppError) -> crate::fail::Failure {
    match e {
        mamori_app::AppError::PasswordRefused(why) => {
            let mut s = String::from("パスワードが要件を満たしません / the password was refused:");
            for (ja, en) in why {
                s.push_str(&format!("\n  - {ja} / {en}"));
            }
            s.into()
        }
        other => Box::new(other),
    }
}

/// Opens the target's data directory with the operator's context.
fn open(t: &UserTarget) -> Fallible<(mamori_app::Node, Ctx)> {
    let node = t.dir.open()?;
    let ctx = Ctx::operator(&node, &t.operator);
    Ok((node, ctx))
}

/// Runs a `mamori user` subcommand.
pub fn run(c: UserCmd) -> Fallible<ExitCode> {
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
            let password = read_password()?;
            let proofing = match (proofing_method, proofing_verifier, proofing_date) {
                (Some(method), Some(verifier), Some(date)) => Some(Proofing { method, verifier, date }),
                _ => None,
            };
            let node = dir.open()?;
            let issue =
                users::Issue { username, roles, fhir_user, display_name, department, proofing, password, emergency };
            let a = users::issue(&Ctx::operator(&node, &operator), &node, issue).map_err(err)?;
            println!("アカウントを発行しました / account issued: {} (roles: {})", a.username, a.roles.join(", "));
            if emergency {
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
            let list = users::emergency_accounts(&Ctx::operator(&node, &reader()), &node).map_err(err)?;
            if list.is_empty() {
                println!("非常時用アカウントはありません / no emergency accounts");
            }
            let mut to_rotate = 0;
            for (a, opened) in list {
                match opened {
                    None => println!("{}\tsealed (未使用)\t{}", a.username, a.roles.join(", ")),
                    Some(t) => {
                        to_rotate += 1;
                        println!(
                            "{}\tUSED at unix {t} — rotate now (使用済み・要更新)\t{}",
                            a.username,
                            a.roles.join(", ")
                        );
                    }
                }
            }
            Ok(if to_rotate > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS })
        }
        UserCmd::RotateEmergency { dir, username, password_stdin: _, operator } => {
            let password = read_password()?;
            let node = dir.open()?;
            users::rotate_emergency(&Ctx::operator(&node, &operator), &node, &username, &password).map_err(err)?;
            println!("封印パスワードを更新しました / sealed credential rotated: {username}");
            Ok(ExitCode::SUCCESS)
        }
        UserCmd::EnrollTotp { dir, username, issuer, operator } => {
            let node = dir.open()?;
            let uri = users::enroll_totp(&Ctx::operator(&node, &operator), &node, &username, &issuer).map_err(err)?;
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
            let (node, ctx) = open(&t)?;
            for c in users::recovery_codes(&ctx, &node, &t.username).map_err(err)? {
                println!("{c}");
            }
            eprintln!("各コードは一度だけ使えます。安全に保管してください / each code works once; keep them safe");
            Ok(ExitCode::SUCCESS)
        }
        UserCmd::List(dir) => {
            let node = dir.open()?;
            for o in users::list(&Ctx::operator(&node, &reader()), &node).map_err(err)? {
                let status = match o.account.status {
                    Status::Active => "active",
                    Status::Disabled => "disabled",
                    Status::Left => "left",
                };
                let f = o.second_factors.join("+");
                println!(
                    "{}\t{status}\t{}\t2fa:{}",
                    o.account.username,
                    o.account.roles.join(","),
                    if f.is_empty() { "none" } else { &f }
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        UserCmd::Show { dir, username } => {
            let node = dir.open()?;
            let o = users::show(&Ctx::operator(&node, &reader()), &node, &username).map_err(err)?;
            let mut j = serde_json::to_value(&o.account)?;
            if let Some(m) = j.as_object_mut() {
                m.insert("version".into(), o.version.into());
                m.insert("second_factors".into(), o.second_factors.into());
                m.insert("must_change_password".into(), o.must_change_password.into());
                m.insert("lockout".into(), o.lockout);
                m.insert("last_login".into(), o.last_login.into());
            }
            println!("{}", serde_json::to_string_pretty(&j)?);
            Ok(ExitCode::SUCCESS)
        }
        UserCmd::Disable(t) => {
            let (node, ctx) = open(&t)?;
            users::disable(&ctx, &node, &t.username).map_err(err)?;
            println!("無効化しました / disabled: {}", t.username);
            Ok(ExitCode::SUCCESS)
        }
        UserCmd::Enable(t) => {
            let (node, ctx) = open(&t)?;
            users::enable(&ctx, &node, &t.username).map_err(err)?;
            println!("有効化しました / enabled: {}", t.username);
            Ok(ExitCode::SUCCESS)
        }
        UserCmd::Unlock(t) => {
            let (node, ctx) = open(&t)?;
            users::unlock(&ctx, &node, &t.username).map_err(err)?;
            println!("ロックを解除しました / unlocked: {}", t.username);
            Ok(ExitCode::SUCCESS)
        }
        UserCmd::Leave(t) => {
            let (node, ctx) = open(&t)?;
            let n = users::leave(&ctx, &node, &t.username).map_err(err)?;
            println!("退職処理をしました / left: {} ({n} tokens revoked)", t.username);
            Ok(ExitCode::SUCCESS)
        }
        UserCmd::Transfer { target, department, roles } => {
            let roles = if roles.is_empty() { None } else { Some(roles) };
            let (node, ctx) = open(&target)?;
            let (a, c) = users::transfer(&ctx, &node, &target.username, department, roles).map_err(err)?;
            println!(
                "異動を記録し、権限の見直しを開始しました / transferred, access review opened: {} ({}) — campaign {}",
                a.username,
                a.roles.join(", "),
                c.id
            );
            Ok(ExitCode::SUCCESS)
        }
        UserCmd::Coverage(dir) => {
            let node = dir.open()?;
            let c = users::coverage(&Ctx::operator(&node, &reader()), &node).map_err(err)?;
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
            for u in users::dormant(&Ctx::operator(&node, &operator), &node, days, disable).map_err(err)? {
                if disable {
                    println!("休眠のため無効化 / disabled as dormant: {u}");
                } else {
                    println!("休眠 / dormant: {u}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
