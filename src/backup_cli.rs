//! `mamori backup …` (#27): key pair, create, list, verify, restore. The use cases are
//! `mamori_app::backup`; this file parses, calls and prints.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;
use mamori_app::Ctx;
use mamori_app::backup::{self, Step};
use mamori_app::messages::Lang;
use mamori_app::node as datadir;

use crate::cli::DataDir;
use crate::fail::Fallible;
use crate::progress::{Label, Progress};

/// `mamori backup` subcommands.
#[derive(Debug, Subcommand)]
pub enum BackupCmd {
    /// Make the age key pair backups are encrypted to: the identity (secret) goes to --out, to
    /// be kept offline; the public key (age1…) is printed, for `[backup] recipients`.
    Keygen {
        /// Where to write the identity (created; must not exist). Without it, printed.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Take a generation now, while the node serves: encrypted to the recipients, with a
    /// manifest signed by the node.
    Create {
        #[command(flatten)]
        dir: DataDir,
        /// The repository (default: `[backup] repository`).
        #[arg(long)]
        repo: Option<PathBuf>,
        /// An age public key to encrypt to (repeatable; default: `[backup] recipients`).
        #[arg(long = "recipient")]
        recipients: Vec<String>,
        /// Who takes it (named in the audit trail).
        #[arg(long, env = "USER", default_value = "operator")]
        operator: String,
        /// Run at normal CPU priority. By default a backup runs at the lowest (nice 19), so a
        /// server on the same cores answers its requests first.
        #[arg(long)]
        normal_priority: bool,
    },
    /// Remove the generations `[backup] keep_*` does not keep (the newest 5 always stay);
    /// audited. --dry-run only lists them.
    Prune {
        #[command(flatten)]
        dir: DataDir,
        /// The repository (default: `[backup] repository`).
        #[arg(long)]
        repo: Option<PathBuf>,
        /// List what would be removed; remove nothing.
        #[arg(long)]
        dry_run: bool,
        /// Who prunes.
        #[arg(long, env = "USER", default_value = "operator")]
        operator: String,
    },
    /// A restore drill (B2): restore the newest (or a random) generation into a scratch
    /// directory, prove it, measure recovery time and point, record the signed result as
    /// evidence. Run it where the backup identity is kept; exit 1 if the restore is not proven.
    Drill {
        #[command(flatten)]
        dir: DataDir,
        /// The repository (default: `[backup] repository`).
        #[arg(long)]
        repo: Option<PathBuf>,
        /// The age identity file.
        #[arg(long)]
        identity: PathBuf,
        /// A random generation instead of the newest.
        #[arg(long)]
        random: bool,
        /// Who runs it.
        #[arg(long, env = "USER", default_value = "operator")]
        operator: String,
    },
    /// The latest restore drill: when, which generation, recovery time and point, result.
    DrillStatus(DataDir),
    /// Send generations to the vault (`[backup] vault`) that it does not hold yet: the newest,
    /// or --generation, or --all. `create` pushes on its own when a vault is configured.
    Push {
        #[command(flatten)]
        dir: DataDir,
        /// The repository (default: `[backup] repository`).
        #[arg(long)]
        repo: Option<PathBuf>,
        /// The generation (default: the newest).
        #[arg(long)]
        generation: Option<String>,
        /// Every generation of the repository the vault lacks.
        #[arg(long, conflicts_with = "generation")]
        all: bool,
        /// Who pushes.
        #[arg(long, env = "USER", default_value = "operator")]
        operator: String,
    },
    /// The vault: a copy of every generation the server can add to but never delete or
    /// overwrite (B1). Run it as another user, on another host at best.
    #[command(subcommand)]
    Vault(VaultCmd),
    /// The generations in a repository, oldest first, each with its manifest's signature checked.
    List {
        #[command(flatten)]
        key: KeySource,
        /// The repository (default: `[backup] repository` of the data directory).
        #[arg(long)]
        repo: Option<PathBuf>,
    },
    /// Check a generation without restoring it: signature, data hash, and — with --identity —
    /// that it decrypts and every file and table matches its hash. Exit 1 on any problem.
    Verify {
        #[command(flatten)]
        key: KeySource,
        /// The repository (default: `[backup] repository` of the data directory).
        #[arg(long)]
        repo: Option<PathBuf>,
        /// The generation (default: the newest).
        #[arg(long)]
        generation: Option<String>,
        /// The age identity file (from `mamori backup keygen`).
        #[arg(long)]
        identity: Option<PathBuf>,
    },
    /// Restore a generation into a new data directory (and a new, empty database with
    /// --database), then prove it: hashes, fsck, audit verify, checkpoints, witness. Exit 1
    /// when a check fails.
    Restore {
        #[command(flatten)]
        key: KeySource,
        /// The repository (default: `[backup] repository` of the data directory).
        #[arg(long)]
        repo: Option<PathBuf>,
        /// The generation (default: the newest).
        #[arg(long)]
        generation: Option<String>,
        /// The age identity file.
        #[arg(long)]
        identity: PathBuf,
        /// The new data directory (must not exist or be empty).
        #[arg(long)]
        to: PathBuf,
        /// A new, empty PostgreSQL database for the restored store (else the embedded store).
        #[arg(long = "to-database")]
        to_database: Option<String>,
        /// Restore the records as they stood at this time (RFC 3339, e.g. 2026-12-05T09:00:00+09:00).
        #[arg(long)]
        as_of: Option<String>,
        /// The external witness of the audit checkpoints (default: `[audit] witness_dir`).
        #[arg(long)]
        witness_dir: Option<PathBuf>,
        /// Who restores (named in the restored audit trail).
        #[arg(long, env = "USER", default_value = "operator")]
        operator: String,
    },
}

/// `mamori backup vault` subcommands (run as the vault's own user).
#[derive(Debug, Subcommand)]
pub enum VaultCmd {
    /// Make DIR a vault for the nodes whose verifier keys are given; prints the write token
    /// once (for the node's `[backup] vault_token_file`); only its hash is kept.
    Init {
        /// The vault directory (created).
        #[arg(long)]
        dir: PathBuf,
        /// A node's verifier key (`mamori audit verifier-key` on that node); repeatable.
        #[arg(long = "node-key", required = true)]
        node_keys: Vec<String>,
        /// The retention lock: no generation younger is ever removed (days).
        #[arg(long, default_value_t = 90)]
        lock_days: u32,
    },
    /// Serve the vault: list generations and accept new files; never overwrite or delete.
    Serve {
        /// The vault directory.
        #[arg(long)]
        dir: PathBuf,
        /// Address to listen on. Plain HTTP only on loopback; other addresses need TLS.
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: String,
        /// TLS certificate chain (PEM).
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// TLS private key (PEM).
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
    },
    /// The generations in the vault, complete or not, and whether each is immutable.
    List {
        /// The vault directory.
        #[arg(long)]
        dir: PathBuf,
    },
    /// Replace the write token (the old one stops working at once); prints the new one.
    RotateToken {
        /// The vault directory.
        #[arg(long)]
        dir: PathBuf,
    },
    /// Remove complete generations older than --older-than-days (never younger than the
    /// vault's lock; the newest five always stay). Local only: there is no remote delete.
    Prune {
        /// The vault directory.
        #[arg(long)]
        dir: PathBuf,
        /// Age in days (at least the lock).
        #[arg(long)]
        older_than_days: u32,
        /// List what would be removed; remove nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// Whose signature a manifest must carry: the key given, or the node's in a data directory.
#[derive(Debug, clap::Args)]
pub struct KeySource {
    /// The node's verifier key (`mamori audit verifier-key`), kept apart from the backups.
    #[arg(long)]
    verifier_key: Option<String>,
    /// A data directory whose node key (and `[backup] repository`) to use.
    #[arg(long, env = "MAMORI_DATA_DIR")]
    data_dir: Option<PathBuf>,
}

impl KeySource {
    fn key(&self) -> Fallible<String> {
        match (&self.verifier_key, &self.data_dir) {
            (Some(k), _) => Ok(k.trim().to_string()),
            (None, Some(d)) if d.join("keys").exists() => Ok(datadir::load_signer(d)?.0.verifier_key()),
            _ => Err("give --verifier-key (from `mamori audit verifier-key`) or --data-dir of the node that took the backups"
                .into()),
        }
    }

    fn config(&self) -> Option<mamori_app::config::Config> {
        self.data_dir.as_ref().and_then(|d| mamori_app::config::load(&d.join("mamori.toml")).ok())
    }

    fn repo(&self, given: Option<PathBuf>) -> Fallible<PathBuf> {
        repo_or_configured(given, self.config().and_then(|c| c.backup_repository))
    }
}

/// `--repo`, else `[backup] repository`.
fn repo_or_configured(given: Option<PathBuf>, configured: Option<PathBuf>) -> Fallible<PathBuf> {
    given.or(configured).ok_or_else(|| "give --repo (or set [backup] repository in mamori.toml)".into())
}

fn label(lang: Lang) -> Label {
    Label { what: "backup", en: "rows", ja: "行", lang }
}

fn show(progress: &mut Progress, lang: Lang, step: Step) {
    let (n, l) = match step {
        Step::Rows(n) => (n, label(lang)),
        Step::Versions(n) => (n, Label { what: "fsck", en: "versions checked", ja: "版を確認", lang }),
        Step::Entries(n) => (n, Label { what: "audit verify", en: "entries", ja: "件", lang }),
    };
    progress.count(false, n, &l);
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Runs a `mamori backup` subcommand.
pub fn run(cmd: BackupCmd) -> Fallible<ExitCode> {
    let lang = Lang::from_env();
    match cmd {
        BackupCmd::Keygen { out } => {
            let (identity, recipient) = backup::keygen();
            let text = format!("# created by mamori backup keygen\n# public key: {recipient}\n{identity}\n");
            match out {
                Some(p) => {
                    write_new_private(&p, text.as_bytes())?;
                    eprintln!("identity written to {} — keep it offline, apart from the backups", p.display());
                }
                None => print!("{text}"),
            }
            println!("{recipient}");
            Ok(ExitCode::SUCCESS)
        }
        BackupCmd::Create { dir, repo, recipients, operator, normal_priority } => {
            if !normal_priority && let Err(e) = backup::lower_priority() {
                eprintln!("mamori: running at normal CPU priority ({e})");
            }
            let node = dir.open()?;
            let repo = repo_or_configured(repo, node.config.backup_repository.clone())?;
            let recipients = if recipients.is_empty() { node.config.backup_recipients.clone() } else { recipients };
            let mut progress = Progress::on_stderr(false);
            let created = backup::create(&Ctx::operator(&node, &operator), &node, &repo, &recipients, &mut |s| {
                show(&mut progress, lang, s)
            });
            progress.finish();
            let c = created?;
            let m = &c.manifest;
            println!(
                "backup {}: {} resources, {} versions, {} audit entries; {:.1} MiB read, {:.1} MiB written in {:.1} s ({:.1} MiB/s, {:.0} resources/s)",
                m.generation,
                m.resources,
                m.versions,
                m.audit_size,
                mib(m.plaintext_bytes),
                mib(m.data.size),
                c.seconds,
                mib(m.plaintext_bytes) / c.seconds.max(1e-3),
                m.resources as f64 / c.seconds.max(1e-3),
            );
            println!("  {}", repo.join(format!("{}.age", m.generation)).display());
            println!("  {}", repo.join(format!("{}.manifest", m.generation)).display());
            match &c.vault {
                None => Ok(ExitCode::SUCCESS),
                Some(Ok(p)) => {
                    println!("  sent to the vault: {} ({:.1} MiB)", p.sent.join(", "), mib(p.bytes));
                    Ok(ExitCode::SUCCESS)
                }
                Some(Err(e)) => {
                    eprintln!(
                        "mamori: the generation is in the repository but NOT in the vault: {}; `mamori backup push` sends it again",
                        mamori_app::messages::localize(e, lang)
                    );
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        BackupCmd::Push { dir, repo, generation, all, operator } => {
            let node = dir.open()?;
            let repo = repo_or_configured(repo, node.config.backup_repository.clone())?;
            let ctx = Ctx::operator(&node, &operator);
            let names = if all {
                backup::generations(&repo)?.into_iter().map(|g| g.name).collect()
            } else {
                vec![backup::find(&repo, generation.as_deref())?.name]
            };
            let mut failed = false;
            for name in names {
                match backup::push(&ctx, &node, &repo, &name) {
                    Ok(p) if p.sent.is_empty() => println!("{name}: already in the vault"),
                    Ok(p) => println!("{name}: sent {} ({:.1} MiB)", p.sent.join(", "), mib(p.bytes)),
                    Err(e) => {
                        eprintln!("{name}: {}", mamori_app::messages::localize(&e.to_string(), lang));
                        failed = true;
                    }
                }
            }
            Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
        }
        BackupCmd::Vault(cmd) => vault(cmd, lang),
        BackupCmd::Prune { dir, repo, dry_run, operator } => {
            let node = dir.open()?;
            let repo = repo_or_configured(repo, node.config.backup_repository.clone())?;
            let p =
                backup::prune(&Ctx::operator(&node, &operator), &node, &repo, node.config.backup_retention, dry_run)?;
            for n in &p.removed {
                println!("{} {n}", if dry_run { "would remove" } else { "removed" });
            }
            for (n, why) in &p.refused {
                println!("COULD NOT REMOVE {n}: {why}");
            }
            println!(
                "kept {} generation(s), {} {}",
                p.kept.len(),
                if dry_run { "would remove" } else { "removed" },
                p.removed.len()
            );
            Ok(if p.refused.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        BackupCmd::Drill { dir, repo, identity, random, operator } => {
            let node = dir.open()?;
            let repo = repo_or_configured(repo, node.config.backup_repository.clone())?;
            let ids = backup::read_identities(&identity)?;
            let mut progress = Progress::on_stderr(false);
            let d = backup::drill(&Ctx::operator(&node, &operator), &node, &repo, &ids, random, &mut |s| {
                show(&mut progress, lang, s)
            });
            progress.finish();
            let d = d?;
            print_drill(&d);
            Ok(if d.passed() { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        BackupCmd::DrillStatus(dir) => {
            let node = dir.open()?;
            match backup::last_drill(&node)? {
                Some(d) => print_drill(&d),
                None => println!("no restore drill recorded"),
            }
            Ok(ExitCode::SUCCESS)
        }
        BackupCmd::List { key, repo } => {
            let vkey = key.key()?;
            let repo = key.repo(repo)?;
            let all = backup::generations(&repo)?;
            if all.is_empty() {
                println!("no generation in {}", repo.display());
            }
            for g in all {
                match backup::read_manifest(&g, &vkey) {
                    Ok(m) => println!(
                        "{}  {}  {} resources  {} versions  {} audit entries  {:.1} MiB  signed",
                        m.generation,
                        m.created,
                        m.resources,
                        m.versions,
                        m.audit_size,
                        mib(m.data.size)
                    ),
                    Err(e) => println!("{}  NOT VERIFIED: {e}", g.name),
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        BackupCmd::Verify { key, repo, generation, identity } => {
            let vkey = key.key()?;
            let repo = key.repo(repo)?;
            let ids = identity.as_deref().map(backup::read_identities).transpose()?;
            let mut progress = Progress::on_stderr(false);
            let v = backup::verify(&repo, generation.as_deref(), &vkey, ids.as_deref(), &mut |s| {
                show(&mut progress, lang, s)
            });
            progress.finish();
            let v = v?;
            for p in &v.problems {
                println!("PROBLEM {p}");
            }
            if v.problems.is_empty() {
                let m = v.manifest.as_ref();
                println!(
                    "backup {}: manifest signature, data hash{} verified ({} resources, {} audit entries)",
                    v.generation,
                    if v.decrypted {
                        ", decryption, every file and table hash"
                    } else {
                        " (give --identity to decrypt and check every file and table)"
                    },
                    m.map_or(0, |m| m.resources),
                    m.map_or(0, |m| m.audit_size),
                );
                Ok(ExitCode::SUCCESS)
            } else {
                println!("backup {}: {} problem(s)", v.generation, v.problems.len());
                Ok(ExitCode::from(1))
            }
        }
        BackupCmd::Restore { key, repo, generation, identity, to, to_database, as_of, witness_dir, operator } => {
            let vkey = key.key()?;
            let repo = key.repo(repo)?;
            let ids = backup::read_identities(&identity)?;
            let as_of = as_of.as_deref().map(parse_time).transpose()?;
            let witness_dir = witness_dir.or_else(|| key.config().and_then(|c| c.witness_dir));
            let mut progress = Progress::on_stderr(false);
            let r = backup::restore(
                &backup::RestoreOptions {
                    repo: &repo,
                    generation: generation.as_deref(),
                    verifier_key: &vkey,
                    ids: &ids,
                    to: &to,
                    database: to_database.as_deref(),
                    as_of,
                    witness_dir: witness_dir.as_deref(),
                    operator: &operator,
                },
                &mut |s| show(&mut progress, lang, s),
            );
            progress.finish();
            let r = r?;
            let m = &r.manifest;
            println!(
                "restored {} (taken {}) into {}: {} rows loaded{}",
                m.generation,
                m.created,
                to.display(),
                r.rows,
                if r.rewound > 0 {
                    format!(", {} later versions left out (--as-of)", r.rewound)
                } else {
                    String::new()
                }
            );
            println!("  fsck: {} versions checked", r.fsck_checked);
            println!("  audit verify: {} entries", r.audit_entries);
            match r.witness {
                (0, 0) => println!("  witness: none configured (give --witness-dir to hold the copy against one)"),
                (agreed, later) => {
                    println!("  witness: {agreed} checkpoint(s) reproduced, {later} later than this copy")
                }
            }
            println!("  time to a proven copy: {:.1} s", r.seconds);
            for p in &r.problems {
                println!("PROBLEM {p}");
            }
            if r.problems.is_empty() {
                println!("restore proven");
                Ok(ExitCode::SUCCESS)
            } else {
                println!("restore NOT proven: {} problem(s)", r.problems.len());
                Ok(ExitCode::from(1))
            }
        }
    }
}

fn vault(cmd: VaultCmd, lang: Lang) -> Fallible<ExitCode> {
    use mamori_app::vault::{self, Vault};
    match cmd {
        VaultCmd::Init { dir, node_keys, lock_days } => {
            let token = vault::init(&dir, &node_keys, lock_days)?;
            eprintln!(
                "vault made in {} (retention lock {lock_days} days). The write token, shown once — put it in the node's [backup] vault_token_file:",
                dir.display()
            );
            println!("{token}");
            Ok(ExitCode::SUCCESS)
        }
        VaultCmd::RotateToken { dir } => {
            let token = Vault::open(&dir)?.rotate_token()?;
            eprintln!("the old token no longer works; the new one, shown once:");
            println!("{token}");
            Ok(ExitCode::SUCCESS)
        }
        VaultCmd::List { dir } => {
            let v = Vault::open(&dir)?;
            let all = v.list()?;
            for s in &all {
                let state = match (s.manifest, s.data) {
                    (true, true) => "complete",
                    (true, false) => "manifest only",
                    _ => "data only",
                };
                println!("{}  {state}  {}", s.name, if s.immutable { "immutable" } else { "read-only" });
            }
            eprintln!("{} generation(s); retention lock {} days", all.len(), v.lock_days());
            Ok(ExitCode::SUCCESS)
        }
        VaultCmd::Prune { dir, older_than_days, dry_run } => {
            let v = Vault::open(&dir)?;
            let removed = v.prune(older_than_days, vault::now_micros(), dry_run)?;
            for n in &removed {
                println!("{} {n}", if dry_run { "would remove" } else { "removed" });
            }
            eprintln!("{} generation(s) {}", removed.len(), if dry_run { "would be removed" } else { "removed" });
            Ok(ExitCode::SUCCESS)
        }
        VaultCmd::Serve { dir, listen, tls_cert, tls_key } => {
            let _ = lang;
            let v = std::sync::Arc::new(Vault::open(&dir)?);
            let addr = crate::cli::parse_listen(&listen)?;
            let tls = match (tls_cert, tls_key) {
                (Some(cert), Some(key)) => {
                    Some(std::sync::Arc::new(mamori_http::Tls::load(mamori_http::TlsFiles { cert, key })?))
                }
                _ => None,
            };
            if tls.is_none() && !addr.ip().is_loopback() {
                return Err(format!(
                    "refusing plain HTTP on `{addr}`: only loopback may be served without TLS; give --tls-cert and --tls-key"
                )
                .into());
            }
            let immutable = v.can_make_immutable();
            if !immutable {
                eprintln!(
                    "mamori: WARNING: this process cannot make files immutable (chattr +i needs CAP_LINUX_IMMUTABLE): stored files are read-only, and only the vault user's separation protects them"
                );
            }
            let scheme = if tls.is_some() { "https" } else { "http" };
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            rt.block_on(async move {
                let listener =
                    tokio::net::TcpListener::bind(addr).await.map_err(|e| format!("cannot listen on `{addr}`: {e}"))?;
                let bound = listener.local_addr()?;
                println!("mamori vault serving {scheme}://{bound}/v1/generations (dir: {})", dir.display());
                let stop = mamori_http::Stop {
                    shutdown: crate::cli::shutdown_signal(),
                    drain: std::time::Duration::from_secs(10),
                };
                mamori_http::serve(listener, crate::vault_server::router(v), tls, stop).await?;
                Ok::<_, crate::fail::Failure>(())
            })?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn print_drill(d: &backup::Drill) {
    let at = time::OffsetDateTime::from_unix_timestamp(d.at / 1_000_000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default();
    println!(
        "restore drill {at} of {}: {} — RTO {:.1} s, RPO {} s; {} rows, {} versions re-hashed, {} audit entries, {} witness checkpoint(s)",
        d.generation,
        if d.passed() { "proven" } else { "FAILED" },
        d.rto_secs,
        d.rpo_secs,
        d.rows,
        d.fsck_checked,
        d.audit_entries,
        d.witness_agreed
    );
    for p in &d.problems {
        println!("PROBLEM {p}");
    }
}

fn parse_time(s: &str) -> Fallible<i64> {
    let t = time::OffsetDateTime::parse(s.trim(), &time::format_description::well_known::Rfc3339)
        .map_err(|_| format!("--as-of `{s}` is not an RFC 3339 time such as 2026-12-05T09:00:00+09:00"))?;
    Ok(i64::try_from(t.unix_timestamp_nanos() / 1000).unwrap_or(i64::MAX))
}

fn write_new_private(path: &Path, bytes: &[u8]) -> Fallible<()> {
    use std::io::Write;
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    let mut f = o.open(path).map_err(|e| format!("cannot create `{}`: {e}", path.display()))?;
    f.write_all(bytes).and_then(|()| f.sync_all()).map_err(|e| format!("cannot write `{}`: {e}", path.display()))?;
    Ok(())
}
