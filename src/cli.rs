//! The command line: `serve`, `init`, `client`, `keys`, `classes`, `audit`, `fsck`, `read`, `purge`, and
//! the `user`, `policy` and `review` families in their own files. Every subcommand takes
//! `--data-dir` and works while a server runs on the same directory. A subcommand parses its
//! flags, calls its use case in `mamori-app` as the local operator, and prints.

use crate::fail::{Fallible, context};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::progress::{Label, Progress};
use clap::{Args, Parser, Subcommand};
use mamori_app::messages::Lang;
use mamori_app::{Ctx, class_rules, clients, keys as signing_keys, retention};

use crate::datadir;

/// Mamori (守り): a FHIR R4 medical information system with the MHLW security guideline built in.
#[derive(Debug, Parser)]
#[command(name = "mamori", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args, Clone)]
pub struct DataDir {
    /// Data directory (embedded store, configuration, keys).
    #[arg(long, default_value = "./mamori-data", env = "MAMORI_DATA_DIR")]
    pub data_dir: PathBuf,
    /// PostgreSQL database shared by several nodes (`postgres://user@host:5432/db`); overrides
    /// `[store] database` in mamori.toml. Without either, the embedded store in the data directory.
    #[arg(long, env = "MAMORI_DATABASE", hide_env_values = true)]
    pub database: Option<String>,
}

impl DataDir {
    /// Initialises if needed and opens the node on its store.
    pub fn open(&self) -> Fallible<datadir::Node> {
        Ok(datadir::open_node_on(&self.data_dir, self.database.as_deref())?)
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (initialises an empty data directory first).
    Serve(ServeArgs),
    /// Initialise a data directory (configuration, keys, schema) without serving.
    Init(DataDir),
    /// Registered applications (OAuth clients).
    #[command(subcommand)]
    Client(ClientCmd),
    /// Bulk import of FHIR NDJSON files (one resource per line); resources keep their ids.
    Import {
        #[command(flatten)]
        dir: DataDir,
        /// NDJSON files.
        files: Vec<PathBuf>,
        /// Resources per transaction (one fsync each).
        #[arg(long, default_value_t = 1000)]
        batch: usize,
        /// Who imports (recorded as 入力者 of every version and in the audit trail).
        #[arg(long, env = "USER", default_value = "operator")]
        operator: String,
    },
    /// ID-token signing keys (RS256): list them, rotate now.
    #[command(subcommand)]
    Keys(KeysCmd),
    /// Re-hash every stored version and report any mismatch (exit 1 if one is found).
    Fsck(DataDir),
    /// Accounts (利用者): one per person, MHLW password rules, TOTP, lifecycle.
    #[command(subcommand)]
    User(UserCmd),
    /// Information classes (情報区分): the taxonomy and the labelling rules.
    #[command(subcommand)]
    Classes(ClassesCmd),
    /// The audit trail (監査証跡): verifier key, offline verification, export.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Access policies (アクセス権限, Cedar): show, set, explain a decision, test a proposal.
    #[command(subcommand)]
    Policy(crate::policy_cli::PolicyCmd),
    /// The security manager's reviews: break-glass uses, access review campaigns, least privilege.
    #[command(subcommand)]
    Review(crate::review_cli::ReviewCmd),
    /// The approved configuration baseline (C2): show it, diff the state now against it, approve.
    #[command(subcommand)]
    Baseline(crate::baseline_cli::BaselineCmd),
    /// The two-person rule (C3): high-risk changes waiting for a second person — list, show,
    /// approve (by hash), refuse, withdraw.
    #[command(subcommand)]
    Approvals(crate::approvals_cli::ApprovalsCmd),
    /// Remote maintenance (M1): vendors, requested and approved windows, closing one, work
    /// reports and their acceptance, the register.
    #[command(subcommand)]
    Maintenance(crate::maintenance_cli::MaintenanceCmd),
    /// Backups (B1–B3): encrypted, signed generations taken while serving; verify without
    /// restoring; restore into a new directory or database and prove it.
    #[command(subcommand)]
    Backup(crate::backup_cli::BackupCmd),
    /// Emergency read-only mode (G5): every read served, every record write refused.
    #[command(subcommand)]
    Emergency(EmergencyCmd),
    /// Read one record as the operator (its newest version, or `Type/id/_history/n`), printed as
    /// stored. Audited exactly as a read through the API, in the operator's name.
    Read {
        #[command(flatten)]
        dir: DataDir,
        /// `Type/id` or `Type/id/_history/n`, e.g. `Patient/123`.
        reference: String,
        /// Who reads (recorded in the audit trail).
        #[arg(long, env = "USER", default_value = "operator")]
        operator: String,
    },
    /// Physically remove a deleted record whose retention period (保存期間) has ended.
    Purge {
        #[command(flatten)]
        dir: DataDir,
        /// `Type/id`, e.g. `Patient/123`.
        reference: String,
    },
    /// Print a shell completion script, e.g. `mamori completions bash > /etc/bash_completion.d/mamori`.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), or with `--dir` write one page per subcommand there
    /// (`mamori.1`, `mamori-serve.1`, …).
    Man {
        /// Directory to write every page into.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
struct ServeArgs {
    #[command(flatten)]
    dir: DataDir,
    /// Address to listen on. Plain HTTP only on loopback; other addresses need TLS.
    #[arg(long, default_value = "127.0.0.1:8080", env = "MAMORI_LISTEN")]
    listen: String,
    /// TLS certificate chain (PEM). Re-read on SIGHUP (a renewed certificate without a restart).
    #[arg(long, requires = "tls_key", env = "MAMORI_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM). Re-read on SIGHUP with the certificate.
    #[arg(long, requires = "tls_cert", env = "MAMORI_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// Public base URL used in links (default: derived from --listen).
    #[arg(long, env = "MAMORI_PUBLIC_URL")]
    public_url: Option<String>,
    /// On SIGTERM, seconds to let requests in progress finish before the remaining connections
    /// are closed (1–3600).
    #[arg(long, default_value_t = 30, env = "MAMORI_DRAIN_SECS", value_parser = clap::value_parser!(u64).range(1..=3600))]
    drain_secs: u64,
    /// Emergency read-only mode on this node whatever is stored (非常時の参照専用): every read is
    /// served, every record write refused — e.g. a restored copy serving charts during an
    /// incident (docs/RECOVERY.md).
    #[arg(long, env = "MAMORI_READ_ONLY")]
    read_only: bool,
}

/// `mamori emergency` subcommands.
#[derive(Debug, Subcommand)]
enum EmergencyCmd {
    /// Switch emergency read-only mode on or off for every node (applied within a second):
    /// reads go on, record writes are refused. Audited and alerted.
    ReadOnly {
        #[command(flatten)]
        dir: DataDir,
        /// `on` or `off`.
        #[arg(value_parser = ["on", "off"])]
        state: String,
        /// Why (required).
        #[arg(long)]
        reason: String,
        /// Who switches it.
        #[arg(long, env = "USER", default_value = "operator")]
        operator: String,
    },
    /// Whether emergency read-only mode is on, since which change and why.
    Status(DataDir),
    /// Isolate the system (docs/RECOVERY.md, step 1): revoke every token, end every session,
    /// switch read-only mode on. Audited and alerted.
    Isolate {
        #[command(flatten)]
        dir: DataDir,
        /// Why (required).
        #[arg(long)]
        reason: String,
        /// Who isolates.
        #[arg(long, env = "USER", default_value = "operator")]
        operator: String,
    },
}

pub use crate::user_cli::UserCmd;

#[derive(Debug, Subcommand)]
enum ClassesCmd {
    /// Print the taxonomy and the active labelling rules (JSON).
    Show(DataDir),
    /// Replace the labelling rules from a JSON file (validated, versioned, audited). New and
    /// changed resources are labelled with them; existing versions keep their labels.
    Set {
        #[command(flatten)]
        dir: DataDir,
        /// The rules file (the shape `classes show` prints under "rules").
        #[arg(long)]
        file: PathBuf,
        /// Why (recorded with the change).
        #[arg(long)]
        reason: String,
        /// Who.
        #[arg(long, env = "USER", default_value = "operator")]
        operator: String,
    },
}

fn classes(c: ClassesCmd) -> Fallible<ExitCode> {
    match c {
        ClassesCmd::Show(d) => {
            let node = d.open()?;
            let rules = class_rules::current(&Ctx::operator(&node, &reader()), &node)?;
            let out = serde_json::json!({"system": mamori_authz::SYSTEM, "classes": mamori_authz::taxonomy(), "rules": rules});
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(ExitCode::SUCCESS)
        }
        ClassesCmd::Set { dir, file, reason, operator } => {
            let text = std::fs::read_to_string(&file).map_err(context(format!("cannot read `{}`", file.display())))?;
            let rules = class_rules::parse(&text).map_err(context(format!("`{}`", file.display())))?;
            let node = dir.open()?;
            let v = class_rules::set(&Ctx::operator(&node, &operator), &node, &rules, &reason)?;
            println!("class rules updated to version {v}; a running server applies them within a second");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The local operator when a read-only subcommand does not ask who runs it.
pub(crate) fn reader() -> String {
    std::env::var("USER").unwrap_or_else(|_| "operator".into())
}

#[derive(Debug, Subcommand)]
enum AuditCmd {
    /// Print the checkpoint verifier key (`name+hash+base64`), for witnesses and auditors.
    VerifierKey(DataDir),
    /// Recompute the tree from the stored entries; check every checkpoint, tile and timestamp.
    /// Exits 1 naming the first bad entry.
    Verify {
        #[command(flatten)]
        dir: DataDir,
        /// Verify against this key instead of the one in the data directory (recommended: a copy
        /// kept outside the system).
        #[arg(long)]
        verifier_key: Option<String>,
        /// Also compare the checkpoints a witness kept (its directory with `checkpoints.log`).
        #[arg(long)]
        witness_dir: Option<PathBuf>,
    },
    /// Export entries as NDJSON, RFC 5424 syslog or CSV.
    Export {
        #[command(flatten)]
        dir: DataDir,
        /// Output format.
        #[arg(long, value_enum, default_value = "ndjson")]
        format: crate::audit_export::Format,
        /// Only entries at or after this instant (RFC 3339) or date (YYYY-MM-DD).
        #[arg(long)]
        since: Option<String>,
        /// Only entries before this instant or date.
        #[arg(long)]
        until: Option<String>,
        /// Write to this file instead of standard output.
        #[arg(long, conflicts_with = "syslog_tls")]
        output: Option<PathBuf>,
        /// Stream RFC 5424 messages to this collector (`host:port`) over TLS (RFC 5425).
        #[arg(long, requires = "ca_file")]
        syslog_tls: Option<String>,
        /// CA certificate(s) (PEM) that sign the collector's certificate.
        #[arg(long)]
        ca_file: Option<PathBuf>,
        /// Name to verify in the collector's certificate (default: the host of --syslog-tls).
        #[arg(long)]
        server_name: Option<String>,
        /// Who exports (the export is itself audited in this name).
        #[arg(long, env = "USER", default_value = "operator")]
        operator: String,
    },
}

fn parse_instant(s: &str) -> Fallible<i64> {
    let t = if s.len() == 10 { format!("{s}T00:00:00Z") } else { s.to_string() };
    mamori_records::Timestamp::parse_rfc3339(&t)
        .map(|t| t.0)
        .ok_or_else(|| format!("`{s}` is not a date (YYYY-MM-DD) or RFC 3339 instant").into())
}

fn audit(c: AuditCmd) -> Fallible<ExitCode> {
    match c {
        AuditCmd::VerifierKey(d) => {
            datadir::init(&d.data_dir)?;
            let (signer, _) = datadir::load_signer(&d.data_dir)?;
            println!("{}", signer.verifier_key());
            Ok(ExitCode::SUCCESS)
        }
        AuditCmd::Verify { dir, verifier_key, witness_dir } => {
            let key = match verifier_key {
                Some(k) => k,
                None => datadir::load_signer(&dir.data_dir)?.0.verifier_key(),
            };
            let configured = crate::config::load(&dir.data_dir.join("mamori.toml")).ok().and_then(|c| c.witness_dir);
            let witness_dir = witness_dir.or(configured);
            if witness_dir.is_none() {
                eprintln!(
                    "mamori: WARNING: no external witness is configured ([audit] witness_dir, or --witness-dir): \
                     only the checkpoint kept in the data directory guards against entries cut off the end of the trail; \
                     someone who can write the data directory could cut both"
                );
            }
            let label = Label {
                what: "audit verify",
                en: "entries verified",
                ja: "件の監査エントリを検証",
                lang: Lang::from_env(),
            };
            let mut progress = Progress::on_stderr(false);
            let r = crate::audit_verify::verify(
                &dir.data_dir,
                dir.database.as_deref(),
                &key,
                witness_dir.as_deref(),
                &mut |n| progress.count(false, n, &label),
            );
            if let Ok(r) = &r {
                progress.count(true, r.entries, &label);
            }
            progress.finish();
            let r = r?;
            if r.problems.is_empty() {
                println!(
                    "audit verify: {} entries, {} checkpoints verified; root {}",
                    r.entries,
                    r.checkpoints,
                    hex::encode(r.root)
                );
                Ok(ExitCode::SUCCESS)
            } else {
                for p in &r.problems {
                    println!("BAD {p}");
                }
                println!("audit verify: FAILED after {} entries, {} checkpoints verified", r.entries, r.checkpoints);
                Ok(ExitCode::from(1))
            }
        }
        AuditCmd::Export { dir, format, since, until, output, syslog_tls, ca_file, server_name, operator } => {
            let range = format!(
                "from {} until {}",
                since.as_deref().unwrap_or("the first entry"),
                until.as_deref().unwrap_or("the last entry")
            );
            let since = since.as_deref().map(parse_instant).transpose()?;
            let until = until.as_deref().map(parse_instant).transpose()?;
            let node = dir.open()?;
            let ctx = Ctx::operator(&node, &operator);
            mamori_app::audit_trail::may_export(&ctx, &node)?;
            let exported =
                |detail: String| mamori_app::audit_trail::exported(&ctx, &node, detail).map_err(|e| e.to_string());
            if let (Some(addr), Some(ca_file)) = (syslog_tls, ca_file) {
                if format != crate::audit_export::Format::Syslog {
                    return Err("--syslog-tls sends syslog messages; use --format syslog".into());
                }
                let server_name =
                    server_name.unwrap_or_else(|| addr.rsplit_once(':').map_or(addr.clone(), |(h, _)| h.to_string()));
                let to = crate::audit_export::SyslogTls { addr, server_name, ca_file };
                let n = crate::audit_export::stream_syslog_tls(&*node.store, since, until, &to)?;
                exported(format!("{n} entries {range} sent as syslog to {}", to.addr))?;
                eprintln!("sent {n} entries to {}", to.addr);
                return Ok(ExitCode::SUCCESS);
            }
            let to = output.as_ref().map_or_else(|| "standard output".to_string(), |p| format!("`{}`", p.display()));
            let label = Label {
                what: "audit export",
                en: "entries exported",
                ja: "件の監査エントリを出力",
                lang: Lang::from_env(),
            };
            let mut progress = Progress::on_stderr(output.is_none());
            let mut tick = |n: u64| progress.count(false, n, &label);
            let n = match output {
                Some(p) => {
                    let mut f = std::io::BufWriter::new(
                        std::fs::File::create(&p).map_err(context(format!("cannot create `{}`", p.display())))?,
                    );
                    let n = crate::audit_export::export(&*node.store, format, since, until, &mut f, &mut tick)?;
                    std::io::Write::flush(&mut f)?;
                    n
                }
                None => {
                    let stdout = std::io::stdout();
                    let mut lock = stdout.lock();
                    crate::audit_export::export(&*node.store, format, since, until, &mut lock, &mut tick)?
                }
            };
            progress.count(true, n, &label);
            progress.finish();
            exported(format!("{n} entries {range} exported as {format:?} to {to}"))?;
            eprintln!("exported {n} entries");
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[derive(Debug, Subcommand)]
enum ClientCmd {
    /// Register an application. With `--jwks-file` it authenticates with `private_key_jwt`;
    /// with `--redirect-uri` and no keys it is a public app (PKCE, no secret); with neither it is
    /// a backend service with a secret, printed once.
    Add {
        #[command(flatten)]
        dir: DataDir,
        /// The client id.
        client_id: String,
        /// Scopes the client may be granted, e.g. "system/Patient.cruds system/Observation.rs".
        #[arg(long)]
        scope: String,
        /// Human-readable name.
        #[arg(long)]
        name: Option<String>,
        /// Access-token lifetime, e.g. 300s, 15m, 1h (60 s – 24 h).
        #[arg(long, default_value = "15m")]
        token_lifetime: String,
        /// Source addresses (CIDR, repeatable) the client may connect from; default any.
        #[arg(long = "allow-ip")]
        allow_ip: Vec<String>,
        /// Information classes (repeatable) the client may reach, e.g. `general`; default every
        /// class its scopes' resource types carry.
        #[arg(long = "class")]
        class: Vec<String>,
        /// The client's public keys (a JWK Set file): it authenticates with `private_key_jwt`
        /// (ES256, ES384, RS384) instead of a secret.
        #[arg(long)]
        jwks_file: Option<PathBuf>,
        /// Redirect URI (repeatable, matched exactly) for the authorization-code flow: https, or
        /// http on a loopback address, or a private-use scheme such as `jp.example.app:/cb`.
        #[arg(long = "redirect-uri")]
        redirect_uri: Vec<String>,
        /// Who registers it (recorded with the change).
        #[arg(long, env = "USER", default_value = "operator")]
        operator: String,
    },
    /// List registered clients.
    List(DataDir),
    /// Show one client and its configuration history.
    Show {
        #[command(flatten)]
        dir: DataDir,
        /// The client id.
        client_id: String,
    },
    /// Replace a client's public keys (JWK Set) for `private_key_jwt`.
    RotateJwks {
        #[command(flatten)]
        dir: DataDir,
        /// The client id.
        client_id: String,
        /// The new JWK Set file (include the old key too for an overlap period).
        #[arg(long)]
        jwks_file: PathBuf,
        /// Who rotates it.
        #[arg(long, env = "USER", default_value = "operator")]
        operator: String,
    },
    /// Disable a client: it gets no tokens and its tokens stop working.
    Disable {
        #[command(flatten)]
        dir: DataDir,
        /// The client id.
        client_id: String,
        /// Who disables it.
        #[arg(long, env = "USER", default_value = "operator")]
        operator: String,
    },
    /// Enable a disabled client again.
    Enable {
        #[command(flatten)]
        dir: DataDir,
        /// The client id.
        client_id: String,
        /// Who enables it.
        #[arg(long, env = "USER", default_value = "operator")]
        operator: String,
    },
    /// Give a confidential client a new secret (shown once); the old one stops working at once.
    RotateSecret {
        #[command(flatten)]
        dir: DataDir,
        /// The client id.
        client_id: String,
        /// Who rotates it.
        #[arg(long, env = "USER", default_value = "operator")]
        operator: String,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCmd {
    /// The signing keys: id, created, retired, whether still published.
    List(DataDir),
    /// Start a new signing key now; the current one keeps being published for the overlap.
    Rotate {
        #[command(flatten)]
        dir: DataDir,
        /// Who rotates (recorded with the change).
        #[arg(long, env = "USER", default_value = "operator")]
        operator: String,
        /// Why (e.g. `scheduled`, `suspected compromise`).
        #[arg(long, default_value = "rotation from the command line")]
        reason: String,
    },
}

fn keys(c: KeysCmd) -> Fallible<ExitCode> {
    match c {
        KeysCmd::List(dir) => {
            let node = dir.open()?;
            let ts = |t: i64| mamori_records::Timestamp(t.saturating_mul(1_000_000)).to_fhir();
            for k in signing_keys::list(&Ctx::operator(&node, &reader()), &node)? {
                let state = match k.key.retired_at {
                    None => "signing".to_string(),
                    Some(r) => format!("retired {}", ts(r)),
                };
                let shown = if k.published { "published" } else { "withdrawn" };
                println!("{}\t{}\tcreated {}\t{state}\t{shown}", k.key.kid, k.key.alg, ts(k.key.created_at));
            }
            Ok(ExitCode::SUCCESS)
        }
        KeysCmd::Rotate { dir, operator, reason } => {
            let node = dir.open()?;
            let kid = signing_keys::rotate(&Ctx::operator(&node, &operator), &node, &reason)?;
            println!("signing key {kid} is now in use; the previous key stays published for the overlap");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Runs the command line and returns the process exit code.
pub fn main() -> ExitCode {
    let lang = Lang::from_env();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            // Help and version are answers, not errors; clap prints its own words after ours.
            if !matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) && lang == Lang::Ja {
                eprintln!("mamori: コマンドの引数が正しくありません（使い方は `mamori help` で確認できます）");
            }
            e.exit();
        }
    };
    init_logging();
    match run(cli) {
        Ok(code) => code,
        // A high-risk change held for a second person: not a failure, but not in force either.
        Err(e) if crate::fail::pending(&*e) => {
            eprintln!("{}", mamori_app::messages::localize(&e.to_string(), lang));
            ExitCode::from(3)
        }
        Err(e) => {
            eprintln!("{}", crate::fail::report(&*e, lang));
            ExitCode::from(2)
        }
    }
}

/// Logs to standard error: `MAMORI_LOG` sets the level (error, warn, info, debug, trace);
/// `MAMORI_LOG_FORMAT=json` writes one JSON object per line (for journald, Fluent Bit, Loki…).
fn init_logging() {
    let level = match std::env::var("MAMORI_LOG").as_deref() {
        Ok("debug") => tracing::Level::DEBUG,
        Ok("warn") => tracing::Level::WARN,
        Ok("error") => tracing::Level::ERROR,
        Ok("trace") => tracing::Level::TRACE,
        _ => tracing::Level::INFO,
    };
    let fmt = tracing_subscriber::fmt().with_max_level(level).with_writer(std::io::stderr).with_ansi(false);
    let _ = match std::env::var("MAMORI_LOG_FORMAT").as_deref() {
        Ok("json") => fmt.json().flatten_event(true).with_current_span(false).try_init(),
        _ => fmt.try_init(),
    };
}

fn run(cli: Cli) -> Fallible<ExitCode> {
    match cli.command {
        Command::Serve(a) => serve(a),
        Command::Init(d) => {
            datadir::init(&d.data_dir)?;
            let node = d.open()?;
            signing_keys::ensure_signing_key(&Ctx::operator(&node, &reader()), &node)?;
            println!("initialised {}", d.data_dir.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Client(c) => client(c),
        Command::Keys(c) => keys(c),
        Command::Import { dir, files, batch, operator } => crate::import::run(&dir, &files, &operator, batch),
        Command::Audit(c) => audit(c),
        Command::User(c) => crate::user_cli::run(c),
        Command::Classes(c) => classes(c),
        Command::Policy(c) => crate::policy_cli::run(c),
        Command::Review(c) => crate::review_cli::run(c),
        Command::Baseline(c) => crate::baseline_cli::run(c),
        Command::Approvals(c) => crate::approvals_cli::run(c),
        Command::Maintenance(c) => crate::maintenance_cli::run(c),
        Command::Backup(c) => crate::backup_cli::run(c),
        Command::Emergency(EmergencyCmd::ReadOnly { dir, state, reason, operator }) => {
            let node = dir.open()?;
            mamori_app::emergency::switch(&Ctx::operator(&node, &operator), &node, state == "on", &reason)?;
            println!(
                "emergency read-only mode {}: every node applies it within a second",
                if state == "on" { "ON" } else { "OFF" }
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Emergency(EmergencyCmd::Isolate { dir, reason, operator }) => {
            let node = dir.open()?;
            let i = mamori_app::emergency::isolate(&Ctx::operator(&node, &operator), &node, &reason)?;
            println!(
                "isolated: {} tokens revoked, {} sessions ended; emergency read-only mode {}",
                i.tokens,
                i.sessions,
                if i.read_only_switched { "switched ON" } else { "was already on" }
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Emergency(EmergencyCmd::Status(dir)) => {
            let node = dir.open()?;
            let (m, version) = mamori_app::emergency::stored(&node)?;
            match (m.read_only, version) {
                (true, _) => println!("emergency read-only mode: ON ({})", m.reason),
                (false, Some(_)) => println!("emergency read-only mode: off (last switched off: {})", m.reason),
                (false, None) => println!("emergency read-only mode: off"),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Fsck(d) => {
            let node = d.open()?;
            let lang = Lang::from_env();
            let label = Label { what: "fsck", en: "versions checked", ja: "版を確認", lang };
            let mut progress = Progress::on_stderr(false);
            let report =
                retention::fsck(&Ctx::operator(&node, &reader()), &node, &mut |n| progress.count(false, n, &label));
            if let Ok(r) = &report {
                progress.count(true, r.checked, &label);
            }
            progress.finish();
            let report = report?;
            if report.mismatches.is_empty() && report.unparseable.is_empty() {
                println!("fsck: {} versions checked, all hashes match", report.checked);
                Ok(ExitCode::SUCCESS)
            } else {
                for m in &report.mismatches {
                    println!("MISMATCH {m}");
                }
                for m in &report.unparseable {
                    println!("UNPARSEABLE {m} (the stored body cannot be parsed, so its hash cannot be checked)");
                }
                println!(
                    "fsck: {} versions checked, {} mismatches, {} unparseable",
                    report.checked,
                    report.mismatches.len(),
                    report.unparseable.len()
                );
                Ok(ExitCode::from(1))
            }
        }
        Command::Read { dir, reference, operator } => {
            let node = dir.open()?;
            let v = mamori_app::reads::read(&Ctx::operator(&node, &operator), &node, &reference)?;
            println!("{}", v.body.as_deref().unwrap_or("{}"));
            Ok(ExitCode::SUCCESS)
        }
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut <Cli as clap::CommandFactory>::command(),
                "mamori",
                &mut std::io::stdout(),
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Man { dir } => {
            let cmd = <Cli as clap::CommandFactory>::command();
            match dir {
                Some(d) => {
                    std::fs::create_dir_all(&d).map_err(context(format!("cannot create `{}`", d.display())))?;
                    clap_mangen::generate_to(cmd, &d)
                        .map_err(context(format!("cannot write into `{}`", d.display())))?;
                    eprintln!("manual pages written to {}", d.display());
                }
                None => clap_mangen::Man::new(cmd).render(&mut std::io::stdout())?,
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Purge { dir, reference } => {
            let node = dir.open()?;
            let n = retention::purge(&Ctx::operator(&node, &reader()), &node, &reference)?;
            println!("purged {reference}: {n} versions removed");
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub(crate) fn parse_listen(s: &str) -> Fallible<SocketAddr> {
    let s2 = s.strip_prefix("localhost:").map(|p| format!("127.0.0.1:{p}"));
    s2.as_deref()
        .unwrap_or(s)
        .parse()
        .map_err(|_| format!("--listen `{s}` is not an address such as 127.0.0.1:8080").into())
}

fn serve(a: ServeArgs) -> Fallible<ExitCode> {
    let addr = parse_listen(&a.listen)?;
    let tls = match (&a.tls_cert, &a.tls_key) {
        (Some(cert), Some(key)) => Some(std::sync::Arc::new(mamori_http::Tls::load(mamori_http::TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        })?)),
        _ => None,
    };
    if tls.is_none() && !addr.ip().is_loopback() {
        return Err(format!(
            "refusing plain HTTP on `{addr}`: only loopback may be served without TLS; give --tls-cert and --tls-key"
        )
        .into());
    }
    let mut node = a.dir.open()?;
    // The certificate served is part of the configuration the baseline covers (#25).
    node.tls_cert = a.tls_cert.clone();
    node.read_only_pinned = a.read_only;
    if mamori_app::emergency::apply(&node)? {
        eprintln!("mamori: emergency read-only mode: every record write is refused");
    }
    // The JWKS is never empty, even before the first ID token (#28).
    signing_keys::ensure_signing_key(&Ctx::operator(&node, "mamori-serve"), &node)?;
    node.monitor_clock();
    // Alerts from here on (the start check's too) also go to the syslog collector, if one is set.
    let alerts_from = crate::alerts::start_at(&node);
    // A change made while the server was down is found before it serves (#25, layer 3).
    let mut watch = mamori_app::baseline::Watch::default();
    match mamori_app::baseline::check(&node, &mut watch) {
        Ok(r) => {
            for f in &r.tampered {
                eprintln!("mamori: WARNING: changed around the configuration path: {f}");
            }
            if !r.drift.is_empty() {
                eprintln!(
                    "mamori: WARNING: the configuration differs from the approved baseline in {} place(s) ({}); see `mamori baseline diff`",
                    r.drift.len(),
                    r.drift.first().map(ToString::to_string).unwrap_or_default()
                );
            }
        }
        Err(e) => eprintln!("mamori: WARNING: the configuration could not be checked against the baseline: {e}"),
    }
    let node = std::sync::Arc::new(node);
    node.spawn_integrator();
    node.spawn_policy_watcher();
    mamori_app::baseline::spawn_watcher(node.clone(), watch);
    mamori_app::backup::spawn_scheduler(node.clone());
    if let Some((addr, ca_file, server_name)) = node.config.alert_syslog.clone() {
        tracing::info!(collector = %addr, from = alerts_from, "alerts are also sent to the syslog collector");
        crate::alerts::spawn(node.clone(), crate::audit_export::SyslogTls { addr, server_name, ca_file }, alerts_from);
    }
    let scheme = if tls.is_some() { "https" } else { "http" };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(context("runtime"))?;
    rt.block_on(async move {
        let listener =
            tokio::net::TcpListener::bind(addr).await.map_err(context(format!("cannot listen on `{addr}`")))?;
        let bound = listener.local_addr()?;
        // From the bound address, so that `--listen 127.0.0.1:0` yields the real port in links,
        // discovery documents and the `aud` clients must use.
        let public = a.public_url.clone().unwrap_or_else(|| format!("{scheme}://{bound}"));
        let app = crate::router(&node, public.trim_end_matches('/'));
        let store = format!("{} {}", node.store.kind(), node.store.describe());
        tracing::info!(%bound, data_dir = %node.dir.display(), %store, tls = tls.is_some(), "mamori serving");
        println!("mamori serving {scheme}://{bound}/fhir (data: {}; store: {store})", node.dir.display());
        tokio::spawn(on_hangup(tls.clone()));
        let stop =
            mamori_http::Stop { shutdown: shutdown_signal(), drain: std::time::Duration::from_secs(a.drain_secs) };
        mamori_http::serve(listener, app, tls, stop).await.map_err(context("server"))
    })?;
    // Requests cut off by the drain bound may still hold blocking tasks: do not wait for them.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    tracing::info!("mamori stopped");
    Ok(ExitCode::SUCCESS)
}

/// SIGHUP (as sent by `systemctl reload` or a log rotator) never stops the server: it re-reads
/// the TLS certificate and key if there are any, and says what it did. Policies, class rules and
/// applications need no signal — every node applies their changes within a second.
async fn on_hangup(tls: Option<std::sync::Arc<mamori_http::Tls>>) {
    #[cfg(unix)]
    {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP");
            return;
        };
        while hup.recv().await.is_some() {
            match &tls {
                Some(t) => match t.reload() {
                    Ok(()) => tracing::info!("SIGHUP: TLS certificate and key re-read; new connections use them"),
                    Err(e) => {
                        tracing::error!(error = %e, "SIGHUP: cannot re-read the TLS certificate; the one in use is kept")
                    }
                },
                None => {
                    tracing::info!("SIGHUP: nothing to reload (no TLS); configuration changes apply without a signal")
                }
            }
        }
    }
    #[cfg(not(unix))]
    let _ = tls;
}

pub(crate) async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn parse_duration(s: &str) -> Fallible<u64> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, 's')) => (s.get(..i), 1),
        Some((i, 'm')) => (s.get(..i), 60),
        Some((i, 'h')) => (s.get(..i), 3600),
        Some((i, 'd')) => (s.get(..i), 86_400),
        _ => (Some(s), 1),
    };
    let n: u64 =
        num.and_then(|n| n.parse().ok()).ok_or_else(|| format!("`{s}` is not a duration such as 300s, 15m or 1h"))?;
    let secs = n.saturating_mul(mult);
    if !(60..=86_400).contains(&secs) {
        return Err(format!("token lifetime `{s}` must be between 60 s and 24 h").into());
    }
    Ok(secs)
}

/// Reads a JWK Set file (checked by the use case).
fn read_jwks(path: &PathBuf) -> Fallible<serde_json::Value> {
    let text = std::fs::read_to_string(path).map_err(context(format!("cannot read `{}`", path.display())))?;
    serde_json::from_str(&text).map_err(context(format!("`{}`", path.display())))
}

fn client(c: ClientCmd) -> Fallible<ExitCode> {
    match c {
        ClientCmd::RotateJwks { dir, client_id, jwks_file, operator } => {
            let jwks = read_jwks(&jwks_file)?;
            let node = dir.open()?;
            clients::rotate_jwks(&Ctx::operator(&node, &operator), &node, &client_id, jwks)
                .map_err(context(format!("`{}`", jwks_file.display())))?;
            println!("client {client_id}: keys replaced");
            Ok(ExitCode::SUCCESS)
        }
        ClientCmd::RotateSecret { dir, client_id, operator } => {
            let node = dir.open()?;
            let secret = clients::rotate_secret(&Ctx::operator(&node, &operator), &node, &client_id)?;
            println!("client_id={client_id}");
            println!("client_secret={secret}");
            eprintln!("The new secret is shown only now; the old one no longer works.");
            Ok(ExitCode::SUCCESS)
        }
        ClientCmd::Add {
            dir,
            client_id,
            scope,
            name,
            token_lifetime,
            allow_ip,
            class,
            jwks_file,
            redirect_uri,
            operator,
        } => {
            let jwks = jwks_file.as_ref().map(read_jwks).transpose()?;
            let token_lifetime_secs = parse_duration(&token_lifetime)?;
            let node = dir.open()?;
            let n = clients::NewClient {
                id: client_id.clone(),
                name,
                scope,
                token_lifetime_secs,
                allow_ip,
                classes: class,
                redirect_uris: redirect_uri,
                jwks,
            };
            let r = clients::register(&Ctx::operator(&node, &operator), &node, n)?;
            println!("client_id={client_id}");
            if let Some(p) = &r.pending {
                println!("pending_request={}", p.id);
                eprintln!(
                    "{}",
                    mamori_app::messages::localize(
                        &mamori_app::AppError::Pending(Box::new(p.clone())).to_string(),
                        Lang::from_env()
                    )
                );
            }
            match &r.secret {
                Some(secret) => {
                    println!("client_secret={secret}");
                    println!("scope={}", r.client.scope);
                    eprintln!("The secret is shown only now; store it in the application's secret store.");
                }
                None if r.client.jwks.is_some() => {
                    println!("token_endpoint_auth_method=private_key_jwt");
                    println!("scope={}", r.client.scope);
                }
                None => {
                    println!("token_endpoint_auth_method=none");
                    println!("scope={}", r.client.scope);
                    eprintln!("A public client: it must use PKCE (S256) and has no secret.");
                }
            }
            // Held for a second person: the application cannot get tokens yet (as any held change).
            Ok(if r.pending.is_some() { ExitCode::from(3) } else { ExitCode::SUCCESS })
        }
        ClientCmd::List(dir) => {
            let node = dir.open()?;
            for (c, version) in clients::list(&Ctx::operator(&node, &reader()), &node)? {
                println!("{}\t{}\t{}\tv{version}", c.id, if c.disabled { "disabled" } else { "enabled" }, c.scope);
            }
            Ok(ExitCode::SUCCESS)
        }
        ClientCmd::Show { dir, client_id } => {
            let node = dir.open()?;
            let history = clients::history(&Ctx::operator(&node, &reader()), &node, &client_id)?;
            let shown = history.last().and_then(|h| h.value.clone()).unwrap_or_default();
            println!("{}", serde_json::to_string_pretty(&shown)?);
            for h in &history {
                println!(
                    "v{} {} by {}: {}",
                    h.version,
                    mamori_records::Timestamp(h.changed_at).to_fhir(),
                    h.changed_by,
                    h.reason
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        ClientCmd::Disable { dir, client_id, operator } => {
            let node = dir.open()?;
            clients::disable(&Ctx::operator(&node, &operator), &node, &client_id)?;
            println!("client `{client_id}` disabled");
            Ok(ExitCode::SUCCESS)
        }
        ClientCmd::Enable { dir, client_id, operator } => {
            let node = dir.open()?;
            clients::enable(&Ctx::operator(&node, &operator), &node, &client_id)?;
            println!("client `{client_id}` enabled");
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("15m").ok(), Some(900));
        assert_eq!(parse_duration("1h").ok(), Some(3600));
        assert_eq!(parse_duration("120").ok(), Some(120));
        assert!(parse_duration("5s").is_err());
        assert!(parse_duration("2d").is_err());
        assert!(parse_duration("abc").is_err());
    }
}
