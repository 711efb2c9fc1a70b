//! Backups (#27, B1–B3): encrypted, signed generations of a node's whole state, verified without
//! restoring and proven after restoring.
//!
//! A generation is two files in a repository directory:
//!
//! - `G.age` — the data: an [age](https://age-encryption.org/v1) file (X25519 recipients; the
//!   private key is kept offline, never beside the data) holding a zstd stream of the archive:
//!   `mamori.toml` and `keys/*`, then the store's logical dump ([`mamori_store_sql::dump`]) read
//!   on one snapshot while the node serves. `age -d -i key G.age | zstd -d` opens it without
//!   Mamori.
//! - `G.manifest` — a signed note (C2SP signed-note, the node's Ed25519 key, as the audit
//!   checkpoints) over JSON naming every file and table with its SHA-256, the data file's size
//!   and hash, the store's audit size and newest checkpoint, the time and the Mamori version.
//!
//! A generation exists once its manifest does (both are written to `.partial` names, synced and
//! renamed). Generations are whole: none depends on another.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use mamori_audit::note::NoteVerifier;
use mamori_store_sql::dump::TableSum;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ctx::Caller;
use crate::{AdminAct, AppError, Ctx, Node};
use mamori_audit::Outcome;

/// The first line of a manifest's signed note.
pub const MANIFEST_HEADER: &str = "mamori backup manifest v1";
const ARCHIVE_MAGIC: &[u8] = b"MAMORI-BACKUP/1\n";
/// The largest configuration or key file a generation carries.
const MAX_FILE: u64 = 16 * 1024 * 1024;

/// A file and its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSum {
    /// Relative path (`mamori.toml`, `keys/master.key`, or the data file's name).
    pub path: String,
    /// Bytes.
    pub size: u64,
    /// SHA-256, hex.
    pub sha256: String,
}

/// The newest signed audit checkpoint when the generation was taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointRef {
    /// Entries it covers.
    pub size: u64,
    /// The signed note.
    pub note: String,
}

/// What a generation holds, signed by the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The generation's name (its files are `NAME.age` and `NAME.manifest`).
    pub generation: String,
    /// When it was taken (RFC 3339, UTC).
    pub created: String,
    /// The same, Unix µs.
    pub created_micros: i64,
    /// The Mamori version that took it.
    pub mamori: String,
    /// The store it was taken from (`sqlite`, `postgres`).
    pub store: String,
    /// The store's schema version.
    pub schema: i64,
    /// Audit entries in the copy.
    pub audit_size: u64,
    /// The newest checkpoint in the copy.
    pub checkpoint: Option<CheckpointRef>,
    /// Resource versions in the copy.
    pub versions: u64,
    /// Resources in the copy.
    pub resources: u64,
    /// Configuration and key files, with their hashes.
    pub files: Vec<FileSum>,
    /// Store tables, with their hashes.
    pub tables: Vec<TableSum>,
    /// The encrypted data file.
    pub data: FileSum,
    /// Bytes before compression and encryption.
    pub plaintext_bytes: u64,
    /// The age recipients it was encrypted to.
    pub recipients: Vec<String>,
}

/// A generation just written.
#[derive(Debug, Clone)]
pub struct Created {
    /// Its manifest.
    pub manifest: Manifest,
    /// Seconds it took.
    pub seconds: f64,
    /// What sending it to the vault did, when one is configured (`[backup] vault`); a failed
    /// send leaves the generation in the repository and raises `alert-backup-vault-failed`.
    pub vault: Option<Result<crate::vault::Pushed, String>>,
}

/// Progress of a long run, for the CLI's line on stderr.
#[derive(Debug, Clone, Copy)]
pub enum Step {
    /// Rows dumped or loaded so far.
    Rows(u64),
    /// Versions re-hashed so far.
    Versions(u64),
    /// Audit entries verified so far.
    Entries(u64),
}

/// A new age key pair for a repository: `(identity, recipient)`. The identity
/// (`AGE-SECRET-KEY-1…`) is kept offline; the recipient (`age1…`) goes into the configuration.
pub fn keygen() -> (String, String) {
    use age::secrecy::ExposeSecret;
    let id = age::x25519::Identity::generate();
    let recipient = id.to_public().to_string();
    (id.to_string().expose_secret().to_string(), recipient)
}

/// Parses age recipients (`age1…`).
pub fn parse_recipients(list: &[String]) -> Result<Vec<age::x25519::Recipient>, AppError> {
    if list.is_empty() {
        return Err(AppError::Invalid(
            "no backup recipient: give --recipient age1… (or [backup] recipients in mamori.toml); make one with `mamori backup keygen`".into(),
        ));
    }
    list.iter()
        .map(|r| {
            age::x25519::Recipient::from_str(r.trim())
                .map_err(|e| AppError::Invalid(format!("`{}` is not an age recipient (age1…): {e}", clip(r))))
        })
        .collect()
}

/// Reads an age identity file (`AGE-SECRET-KEY-1…` lines; `#` comments and blank lines ignored,
/// as `age-keygen` writes them).
pub fn read_identities(path: &Path) -> Result<Vec<age::x25519::Identity>, AppError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| AppError::Invalid(format!("cannot read the identity file `{}`: {e}", path.display())))?;
    let ids: Vec<_> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            age::x25519::Identity::from_str(l).map_err(|_| {
                AppError::Invalid(format!("`{}` holds a line that is not an age identity", path.display()))
            })
        })
        .collect::<Result<_, _>>()?;
    if ids.is_empty() {
        return Err(AppError::Invalid(format!("`{}` holds no age identity", path.display())));
    }
    Ok(ids)
}

fn clip(s: &str) -> String {
    s.chars().take(24).collect()
}

/// Backups carry every key: only the operator at the server's command line takes, prunes and
/// drills them. Anyone else is refused, and the refusal audited like any other (`admin-denied`).
fn only_operator(ctx: &Ctx, node: &Node) -> Result<(), AppError> {
    match &ctx.caller {
        Caller::Operator(_) => Ok(()),
        Caller::Person { .. } | Caller::Application(_) => {
            let why = "backups are taken and restored at the server's command line";
            let entry = mamori_audit::AuditRecord::new("admin-denied", ctx.audit_actor(), Outcome::Failure, "HOPERAT");
            ctx.refused(node, entry, why.into())?;
            Err(AppError::Forbidden(why.into()))
        }
    }
}

pub(crate) fn io(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> AppError {
    move |e| AppError::Failed(format!("{what}: {e}"))
}

struct HashWriter<W: Write> {
    inner: W,
    hash: Sha256,
    bytes: u64,
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        if let Some(done) = buf.get(..n) {
            self.hash.update(done);
        }
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

pub(crate) fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// The files of the data directory a generation carries: the configuration and every key.
fn node_files(dir: &Path) -> Result<Vec<(String, Vec<u8>)>, AppError> {
    let mut out = Vec::new();
    let cfg = dir.join("mamori.toml");
    out.push(("mamori.toml".to_string(), std::fs::read(&cfg).map_err(io(format!("cannot read `{}`", cfg.display())))?));
    let keys = dir.join("keys");
    let mut names: Vec<String> = std::fs::read_dir(&keys)
        .map_err(io(format!("cannot list `{}`", keys.display())))?
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .collect();
    names.sort();
    for n in names {
        let p = keys.join(&n);
        out.push((format!("keys/{n}"), std::fs::read(&p).map_err(io(format!("cannot read `{}`", p.display())))?));
    }
    Ok(out)
}

/// A generation name for time `micros`: `YYYYMMDDTHHMMSSZ`, with `-2`, `-3`… if taken.
fn generation_name(repo: &Path, micros: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(micros.div_euclid(1_000_000))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let base = format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    let mut name = base.clone();
    let mut n = 2;
    while repo.join(format!("{name}.manifest")).exists() || repo.join(format!("{name}.age")).exists() {
        name = format!("{base}-{n}");
        n += 1;
    }
    name
}

pub(crate) fn rfc3339(micros: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(micros.div_euclid(1_000_000))
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

pub(crate) fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// A new file readable by the service account only.
fn create_private(path: &Path) -> Result<std::fs::File, AppError> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o.open(path).map_err(io(format!("cannot create `{}`", path.display())))
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), AppError> {
    let mut f = create_private(path)?;
    f.write_all(bytes).and_then(|()| f.sync_all()).map_err(io(format!("cannot write `{}`", path.display())))
}

/// Takes a generation of `node` into `repo`, encrypted to `recipients`, while the node serves.
/// Audited in the source store (`backup-created`), a failed one too (outcome failure, why).
pub fn create(
    ctx: &Ctx,
    node: &Node,
    repo: &Path,
    recipients: &[String],
    progress: &mut dyn FnMut(Step),
) -> Result<Created, AppError> {
    only_operator(ctx, node)?;
    let taken = take(ctx, node, repo, recipients, progress);
    match taken {
        Err(e) => {
            ctx.record(node, "backup-created", Outcome::Failure, format!("no generation in {}: {e}", repo.display()))?;
            Err(e)
        }
        Ok(mut c) => {
            if node.config.backup_vault.is_some() {
                c.vault = Some(push(ctx, node, repo, &c.manifest.generation).map_err(|e| e.to_string()));
            }
            Ok(c)
        }
    }
}

/// Sends generation `name` of `repo` to the vault (`[backup] vault`) unless it holds it already:
/// manifest first, then the data, which the vault takes only when it matches the manifest.
/// Audited `backup-vaulted`; a failure is `alert-backup-vault-failed`.
pub fn push(ctx: &Ctx, node: &Node, repo: &Path, name: &str) -> Result<crate::vault::Pushed, AppError> {
    only_operator(ctx, node)?;
    let target = node.config.backup_vault.as_ref().ok_or_else(|| {
        AppError::Invalid("no vault is configured: set [backup] vault and vault_token_file in mamori.toml".into())
    })?;
    let g = find(repo, Some(name))?;
    send(ctx, node, target, &g).inspect_err(|e| {
        let _ = alert(
            ctx,
            node,
            "alert-backup-vault-failed",
            format!("generation {} could not be sent to the vault {}: {e}", g.name, target.url),
        );
    })
}

fn send(
    ctx: &Ctx,
    node: &Node,
    target: &crate::vault::Target,
    g: &Generation,
) -> Result<crate::vault::Pushed, AppError> {
    let p = crate::vault::push(target, g)?;
    if !p.sent.is_empty() {
        ctx.record(
            node,
            "backup-vaulted",
            Outcome::Success,
            format!(
                "generation {} sent to the vault {}: {} ({} bytes)",
                g.name,
                target.url,
                p.sent.join(", "),
                p.bytes
            ),
        )?;
    }
    Ok(p)
}

/// Sends every generation of `repo` the vault lacks (oldest first); the names sent.
fn send_missing(ctx: &Ctx, node: &Node, target: &crate::vault::Target, repo: &Path) -> Result<Vec<String>, AppError> {
    let held: std::collections::HashSet<String> =
        crate::vault::remote_list(target)?.into_iter().filter(|s| s.complete()).map(|s| s.name).collect();
    let mut sent = Vec::new();
    for g in generations(repo)? {
        if !held.contains(&g.name) {
            send(ctx, node, target, &g)?;
            sent.push(g.name);
        }
    }
    Ok(sent)
}

fn take(
    ctx: &Ctx,
    node: &Node,
    repo: &Path,
    recipients: &[String],
    progress: &mut dyn FnMut(Step),
) -> Result<Created, AppError> {
    let parsed = parse_recipients(recipients)?;
    let started = std::time::Instant::now();
    if !repo.exists() {
        crate::node::create_private_dir(repo).map_err(io(format!("cannot create `{}`", repo.display())))?;
    }
    let now = ctx.clock.now().0;
    let name = generation_name(repo, now);
    let data_name = format!("{name}.age");
    let partial = repo.join(format!("{data_name}.partial"));
    let file = create_private(&partial)?;
    let result = (|| {
        let outer =
            HashWriter { inner: std::io::BufWriter::with_capacity(1 << 20, file), hash: Sha256::new(), bytes: 0 };
        let encryptor = age::Encryptor::with_recipients(parsed.iter().map(|r| r as &dyn age::Recipient))
            .map_err(|e| AppError::Failed(format!("cannot encrypt: {e}")))?;
        let sealed = encryptor.wrap_output(outer).map_err(io("cannot encrypt"))?;
        let zstd = zstd::stream::write::Encoder::new(sealed, 3).map_err(io("cannot compress"))?;
        let mut plain = HashWriter { inner: zstd, hash: Sha256::new(), bytes: 0 };
        plain.write_all(ARCHIVE_MAGIC).map_err(io("cannot write the backup"))?;
        let mut files = Vec::new();
        for (path, bytes) in node_files(&node.dir)? {
            let mut frame = vec![b'F'];
            frame.extend_from_slice(&u16::try_from(path.len()).unwrap_or(u16::MAX).to_le_bytes());
            frame.extend_from_slice(path.as_bytes());
            frame.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
            plain.write_all(&frame).and_then(|()| plain.write_all(&bytes)).map_err(io("cannot write the backup"))?;
            files.push(FileSum { path, size: bytes.len() as u64, sha256: sha256_hex(&bytes) });
        }
        plain.write_all(b"S").map_err(io("cannot write the backup"))?;
        let summary = node.store.dump(&mut plain, &mut |n| progress(Step::Rows(n)))?;
        let plaintext_bytes = plain.bytes;
        let sealed = plain.inner.finish().map_err(io("cannot compress"))?;
        let mut outer = sealed.finish().map_err(io("cannot encrypt"))?;
        outer.flush().map_err(io("cannot write the backup"))?;
        let data = FileSum { path: data_name.clone(), size: outer.bytes, sha256: hex::encode(outer.hash.finalize()) };
        let file = outer.inner.into_inner().map_err(|e| AppError::Failed(format!("cannot write the backup: {e}")))?;
        file.sync_all().map_err(io("cannot sync the backup"))?;
        Ok::<_, AppError>(Manifest {
            generation: name.clone(),
            created: rfc3339(now),
            created_micros: now,
            mamori: env!("CARGO_PKG_VERSION").to_string(),
            store: node.store.kind().to_string(),
            schema: summary.schema,
            audit_size: summary.audit_size,
            checkpoint: summary.checkpoint.map(|(size, note)| CheckpointRef { size, note }),
            versions: summary.versions,
            resources: summary.resources,
            files,
            tables: summary.tables,
            data,
            plaintext_bytes,
            recipients: recipients.iter().map(|r| r.trim().to_string()).collect(),
        })
    })();
    let manifest = match result {
        Ok(m) => m,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    std::fs::rename(&partial, repo.join(&data_name)).map_err(io("cannot name the backup"))?;
    let body = format!(
        "{MANIFEST_HEADER}\n{}\n",
        serde_json::to_string(&manifest).map_err(|e| AppError::Failed(format!("manifest: {e}")))?
    );
    let note = node.signer.sign(&body).map_err(|e| AppError::Failed(format!("cannot sign the manifest: {e}")))?;
    let mpartial = repo.join(format!("{name}.manifest.partial"));
    write_synced(&mpartial, note.as_bytes())?;
    std::fs::rename(&mpartial, repo.join(format!("{name}.manifest"))).map_err(io("cannot name the manifest"))?;
    sync_dir(repo);
    ctx.record(
        node,
        "backup-created",
        Outcome::Success,
        format!(
            "generation {name} in {}: {} versions, {} audit entries, {} bytes encrypted (sha256 {})",
            repo.display(),
            manifest.versions,
            manifest.audit_size,
            manifest.data.size,
            manifest.data.sha256
        ),
    )?;
    Ok(Created { manifest, seconds: started.elapsed().as_secs_f64(), vault: None })
}

/// A generation's name and its two files.
#[derive(Debug, Clone)]
pub struct Generation {
    /// Its name.
    pub name: String,
    /// `NAME.manifest`.
    pub manifest: PathBuf,
    /// `NAME.age`.
    pub data: PathBuf,
}

/// Every generation in `repo` (those with a manifest), oldest first.
pub fn generations(repo: &Path) -> Result<Vec<Generation>, AppError> {
    let rd = std::fs::read_dir(repo).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => AppError::NotFound(format!("no backup repository at `{}`", repo.display())),
        _ => AppError::Failed(format!("cannot list `{}`: {e}", repo.display())),
    })?;
    let mut out: Vec<Generation> = rd
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_suffix(".manifest")).map(str::to_string))
        .filter(|n| valid_name(n))
        .map(|name| Generation {
            manifest: repo.join(format!("{name}.manifest")),
            data: repo.join(format!("{name}.age")),
            name,
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

pub(crate) fn valid_name(n: &str) -> bool {
    !n.is_empty() && n.len() <= 64 && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// The generation named `name`, or the newest when `None` or `latest`.
pub fn find(repo: &Path, name: Option<&str>) -> Result<Generation, AppError> {
    let all = generations(repo)?;
    match name.filter(|n| *n != "latest") {
        None => all
            .into_iter()
            .next_back()
            .ok_or_else(|| AppError::NotFound(format!("no backup generation in `{}`", repo.display()))),
        Some(n) => all
            .into_iter()
            .find(|g| g.name == n)
            .ok_or_else(|| AppError::NotFound(format!("no backup generation `{}` in `{}`", clip(n), repo.display()))),
    }
}

/// Reads a generation's manifest and checks its signature with `verifier_key` (`origin+id+key`,
/// as `mamori keys verifier-key` prints it) and that it names this generation.
pub fn read_manifest(g: &Generation, verifier_key: &str) -> Result<Manifest, AppError> {
    let text = std::fs::read_to_string(&g.manifest).map_err(io(format!("cannot read `{}`", g.manifest.display())))?;
    parse_manifest(&g.name, &text, verifier_key)
}

/// A manifest's text, checked: signed with `verifier_key` and naming generation `name`.
pub fn parse_manifest(name: &str, text: &str, verifier_key: &str) -> Result<Manifest, AppError> {
    let g = Generation { name: name.to_string(), manifest: PathBuf::new(), data: PathBuf::new() };
    let verifier = NoteVerifier::parse(verifier_key)
        .map_err(|e| AppError::Invalid(format!("the verifier key does not parse: {e}")))?;
    let body = verifier.verify(text).map_err(|e| {
        AppError::Invalid(format!(
            "generation {}: the manifest's signature does not verify with this node's key ({e}): it was not written by this node or was changed",
            g.name
        ))
    })?;
    let json = body
        .strip_prefix(MANIFEST_HEADER)
        .and_then(|b| b.strip_prefix('\n'))
        .ok_or_else(|| AppError::Invalid(format!("generation {}: not a backup manifest", g.name)))?;
    let m: Manifest = serde_json::from_str(json.trim_end())
        .map_err(|e| AppError::Invalid(format!("generation {}: the manifest does not parse: {e}", g.name)))?;
    if m.generation != g.name || m.data.path != format!("{}.age", g.name) {
        return Err(AppError::Invalid(format!(
            "generation {}: the manifest is generation {}'s: files were renamed",
            g.name,
            clip(&m.generation)
        )));
    }
    Ok(m)
}

/// Hashes the data file and compares it with the manifest.
fn check_data(g: &Generation, m: &Manifest) -> Result<Option<String>, AppError> {
    let f = match std::fs::File::open(&g.data) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Some(format!("generation {}: its data file `{}` is missing", g.name, m.data.path)));
        }
        Err(e) => return Err(AppError::Failed(format!("cannot read `{}`: {e}", g.data.display()))),
    };
    let mut r = BufReader::with_capacity(1 << 20, f);
    let mut h = Sha256::new();
    let mut n = 0u64;
    loop {
        let buf = r.fill_buf().map_err(io(format!("cannot read `{}`", g.data.display())))?;
        if buf.is_empty() {
            break;
        }
        h.update(buf);
        let len = buf.len();
        n += len as u64;
        r.consume(len);
    }
    if n != m.data.size || hex::encode(h.finalize()) != m.data.sha256 {
        return Ok(Some(format!(
            "generation {}: the data file differs from the manifest ({n} bytes, manifest says {}): it was changed or damaged",
            g.name, m.data.size
        )));
    }
    Ok(None)
}

/// The archive of a generation, decrypted and decompressed, positioned at the start.
fn open_archive(g: &Generation, ids: &[age::x25519::Identity]) -> Result<Box<dyn Read>, AppError> {
    let f = std::fs::File::open(&g.data).map_err(io(format!("cannot read `{}`", g.data.display())))?;
    let d = age::Decryptor::new(BufReader::with_capacity(1 << 20, f))
        .map_err(|e| AppError::Invalid(format!("generation {}: not an age file: {e}", g.name)))?;
    let plain = d
        .decrypt(ids.iter().map(|i| i as &dyn age::Identity))
        .map_err(|e| AppError::Invalid(format!("generation {}: cannot decrypt with this identity: {e}", g.name)))?;
    let z = zstd::stream::read::Decoder::new(plain).map_err(io("cannot decompress"))?;
    Ok(Box::new(z))
}

/// Reads the archive's magic and file frames up to the store dump.
fn read_files(r: &mut dyn Read, name: &str) -> Result<Vec<(String, Vec<u8>)>, AppError> {
    let bad = |what: &str| AppError::Invalid(format!("generation {name}: {what}"));
    let mut magic = [0u8; ARCHIVE_MAGIC.len()];
    r.read_exact(&mut magic).map_err(|e| bad(&format!("cannot read the archive: {e}")))?;
    if magic != ARCHIVE_MAGIC {
        return Err(bad("not a Mamori backup archive"));
    }
    let mut files = Vec::new();
    loop {
        let mut tag = [0u8; 1];
        r.read_exact(&mut tag).map_err(|e| bad(&format!("the archive is cut short: {e}")))?;
        match tag[0] {
            b'S' => return Ok(files),
            b'F' => {}
            _ => return Err(bad("the archive is damaged")),
        }
        let mut two = [0u8; 2];
        r.read_exact(&mut two).map_err(|e| bad(&format!("the archive is cut short: {e}")))?;
        let mut path = Vec::new();
        r.take(u64::from(u16::from_le_bytes(two))).read_to_end(&mut path).map_err(|e| bad(&e.to_string()))?;
        let path = String::from_utf8(path).map_err(|_| bad("a file name is not UTF-8"))?;
        if !safe_path(&path) {
            return Err(bad(&format!("unexpected file `{}` in the archive", clip(&path))));
        }
        let mut eight = [0u8; 8];
        r.read_exact(&mut eight).map_err(|e| bad(&format!("the archive is cut short: {e}")))?;
        let size = u64::from_le_bytes(eight);
        if size > MAX_FILE {
            return Err(bad("a file in the archive is too large"));
        }
        let mut bytes = Vec::new();
        r.take(size).read_to_end(&mut bytes).map_err(|e| bad(&e.to_string()))?;
        if bytes.len() as u64 != size {
            return Err(bad("the archive is cut short"));
        }
        files.push((path, bytes));
    }
}

/// Only `mamori.toml` and plain names under `keys/`: a crafted archive writes nowhere else.
fn safe_path(p: &str) -> bool {
    p == "mamori.toml"
        || p.strip_prefix("keys/").is_some_and(|n| {
            !n.is_empty()
                && n != "."
                && n != ".."
                && n.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        })
}

fn compare_files(name: &str, m: &Manifest, files: &[(String, Vec<u8>)], problems: &mut Vec<String>) {
    let got: Vec<FileSum> =
        files.iter().map(|(p, b)| FileSum { path: p.clone(), size: b.len() as u64, sha256: sha256_hex(b) }).collect();
    if got != m.files {
        problems.push(format!("generation {name}: the configuration and key files differ from the manifest"));
    }
}

fn compare_tables(name: &str, m: &Manifest, tables: &[TableSum], problems: &mut Vec<String>) {
    if tables != m.tables.as_slice() {
        let first = m
            .tables
            .iter()
            .zip(tables)
            .find(|(a, b)| a != b)
            .map(|(a, _)| a.name.clone())
            .unwrap_or_else(|| "the table list".into());
        problems.push(format!("generation {name}: the store's tables differ from the manifest (first: {first})"));
    }
}

/// What `verify` found.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The generation.
    pub generation: String,
    /// Its manifest, when its signature verified.
    pub manifest: Option<Manifest>,
    /// Whether the data was decrypted and every file and table hash checked (an identity was
    /// given).
    pub decrypted: bool,
    /// Problems; empty means the generation verifies.
    pub problems: Vec<String>,
}

/// Checks a generation without restoring it: the manifest's signature, the data file's hash,
/// and — with the identity — that it decrypts and every file and table matches its hash.
pub fn verify(
    repo: &Path,
    generation: Option<&str>,
    verifier_key: &str,
    ids: Option<&[age::x25519::Identity]>,
    progress: &mut dyn FnMut(Step),
) -> Result<Verified, AppError> {
    let g = find(repo, generation)?;
    let mut v = Verified { generation: g.name.clone(), manifest: None, decrypted: false, problems: Vec::new() };
    let m = match read_manifest(&g, verifier_key) {
        Ok(m) => m,
        Err(AppError::Invalid(why)) => {
            v.problems.push(why);
            return Ok(v);
        }
        Err(e) => return Err(e),
    };
    if let Some(p) = check_data(&g, &m)? {
        v.problems.push(p);
    }
    if let (Some(ids), true) = (ids, v.problems.is_empty()) {
        let checked = (|| {
            let mut r = open_archive(&g, ids)?;
            let files = read_files(&mut *r, &g.name)?;
            compare_files(&g.name, &m, &files, &mut v.problems);
            let tables = mamori_store_sql::dump::check(&mut *r, &mut |n| progress(Step::Rows(n)))
                .map_err(|e| AppError::Invalid(format!("generation {}: the store copy: {e}", g.name)))?;
            compare_tables(&g.name, &m, &tables, &mut v.problems);
            Ok::<_, AppError>(())
        })();
        match checked {
            Ok(()) => v.decrypted = true,
            Err(AppError::Invalid(why)) => v.problems.push(why),
            Err(e) => return Err(e),
        }
    }
    v.manifest = Some(m);
    Ok(v)
}

/// How to restore.
#[derive(Clone)]
pub struct RestoreOptions<'a> {
    /// The repository.
    pub repo: &'a Path,
    /// The generation (`None`: the newest).
    pub generation: Option<&'a str>,
    /// The node's verifier key (`mamori keys verifier-key`), kept apart from the backups.
    pub verifier_key: &'a str,
    /// The age identities.
    pub ids: &'a [age::x25519::Identity],
    /// A new data directory.
    pub to: &'a Path,
    /// A new, empty PostgreSQL database for the store (else the embedded store in `to`).
    pub database: Option<&'a str>,
    /// Only the record versions written at or before this time (Unix µs).
    pub as_of: Option<i64>,
    /// An external witness of the audit checkpoints to hold the copy against.
    pub witness_dir: Option<&'a Path>,
    /// Who restores (named in the restored trail).
    pub operator: &'a str,
}

/// What a restore did and proved.
#[derive(Debug, Clone)]
pub struct Restored {
    /// The generation's manifest.
    pub manifest: Manifest,
    /// Rows loaded.
    pub rows: u64,
    /// Versions removed by `--as-of`.
    pub rewound: u64,
    /// Versions whose hash `fsck` recomputed.
    pub fsck_checked: u64,
    /// Audit entries verified.
    pub audit_entries: u64,
    /// Witness checkpoints the restored entries reproduce, and those later than the copy.
    pub witness: (u64, u64),
    /// Seconds from start to proven copy (the recovery time of this restore).
    pub seconds: f64,
    /// Problems the checks found; empty means the copy is proven.
    pub problems: Vec<String>,
}

/// Restores a generation into a new data directory (and database), then proves it: every
/// file and table against the signed manifest, `fsck` of every version hash, `audit verify` of
/// the entries and checkpoints, the copy's newest checkpoint against the manifest's, and the
/// entries against every checkpoint an external witness saw. Audited in the restored store.
pub fn restore(opts: &RestoreOptions<'_>, progress: &mut dyn FnMut(Step)) -> Result<Restored, AppError> {
    let started = std::time::Instant::now();
    let g = find(opts.repo, opts.generation)?;
    let m = read_manifest(&g, opts.verifier_key)?;
    if let Some(p) = check_data(&g, &m)? {
        return Err(AppError::Invalid(p));
    }
    let to = opts.to;
    if to.exists() && std::fs::read_dir(to).map_err(io(format!("cannot read `{}`", to.display())))?.next().is_some() {
        return Err(AppError::Conflict(format!(
            "`{}` is not empty: a backup is restored only into a new data directory",
            to.display()
        )));
    }
    let mut r = open_archive(&g, opts.ids)?;
    let files = read_files(&mut *r, &g.name)?;
    let mut problems = Vec::new();
    compare_files(&g.name, &m, &files, &mut problems);
    if !problems.is_empty() {
        return Err(AppError::Invalid(problems.join("; ")));
    }
    crate::node::create_private_dir(to).map_err(io(format!("cannot create `{}`", to.display())))?;
    crate::node::create_private_dir(&to.join("keys")).map_err(io("cannot create the keys directory"))?;
    for (path, bytes) in &files {
        let dest = to.join(path);
        if path == "mamori.toml" {
            let text = String::from_utf8_lossy(bytes);
            std::fs::write(&dest, set_store_database(&text, opts.database))
                .map_err(io(format!("cannot write `{}`", dest.display())))?;
        } else {
            crate::node::write_private(&dest, bytes).map_err(io(format!("cannot write `{}`", dest.display())))?;
        }
    }
    let clock: std::sync::Arc<dyn mamori_records::Clock> = std::sync::Arc::new(mamori_records::SystemClock);
    let store = crate::backend::open(to, opts.database, clock)?;
    let dialect = match store.kind() {
        "postgres" => mamori_store_sql::Dialect::Postgres,
        _ => mamori_store_sql::Dialect::Sqlite,
    };
    let want = mamori_store_sql::schema::steps(dialect).len();
    if !mamori_store_sql::schema::loads_into_this_build(m.schema) {
        return Err(AppError::Invalid(format!(
            "generation {} has store schema {} (Mamori {}); this build has schema {want}: restore it with Mamori {}",
            g.name, m.schema, m.mamori, m.mamori
        )));
    }
    if !store.is_empty_store()? {
        return Err(AppError::Conflict(
            "the target database is not empty: a backup is restored only into a new, empty database".into(),
        ));
    }
    let tables = store
        .load(&mut *r, &mut |n| progress(Step::Rows(n)))
        .map_err(|e| AppError::Invalid(format!("generation {}: the store copy: {e}", g.name)))?;
    compare_tables(&g.name, &m, &tables, &mut problems);
    let rows = tables.iter().map(|t| t.rows).sum();
    let rewound = match opts.as_of {
        Some(t) => store.rewind(t)?,
        None => 0,
    };
    drop(store);
    // Opening the node rebuilds the search index and checks its keys against the store.
    let node = crate::node::open_node_on(to, opts.database)?;
    let ctx = Ctx::operator(&node, opts.operator);
    let fsck = node.records.fsck_with(&mut |n| progress(Step::Versions(n)))?;
    for mm in fsck.mismatches.iter().chain(&fsck.unparseable).take(20) {
        problems.push(format!("fsck: {mm} does not match its hash"));
    }
    let audit = crate::audit_verify::verify_copy(
        to,
        opts.database,
        opts.verifier_key,
        opts.witness_dir,
        m.audit_size,
        &mut |n| progress(Step::Entries(n)),
    )
    .map_err(|e| AppError::Failed(format!("audit verify: {e}")))?;
    problems.extend(audit.problems.iter().map(|p| format!("audit verify: {p}")));
    if audit.entries < m.audit_size {
        problems.push(format!("the copy holds {} audit entries; the manifest says {}", audit.entries, m.audit_size));
    }
    if let Some(cp) = &m.checkpoint {
        let signed = NoteVerifier::parse(opts.verifier_key)
            .and_then(|v| v.verify(&cp.note).and_then(mamori_audit::note::Checkpoint::parse));
        match signed {
            Ok(c) if c.size == cp.size && node.store.audit_root(cp.size).ok() == Some(c.root) => {}
            _ => problems.push(format!(
                "the copy's tree at size {} does not have the root of the checkpoint the manifest names",
                cp.size
            )),
        }
    }
    ctx.record(
        &node,
        "backup-restored",
        if problems.is_empty() { Outcome::Success } else { Outcome::Failure },
        format!(
            "generation {} of {} ({} audit entries, {} versions){}: {}",
            g.name,
            m.created,
            m.audit_size,
            m.versions,
            opts.as_of.map(|t| format!(" as of {}", rfc3339(t))).unwrap_or_default(),
            if problems.is_empty() { "proven".to_string() } else { problems.join("; ") }
        ),
    )?;
    Ok(Restored {
        manifest: m,
        rows,
        rewound,
        fsck_checked: fsck.checked,
        audit_entries: audit.entries,
        witness: (audit.witness_agreed, audit.witness_later),
        seconds: started.elapsed().as_secs_f64(),
        problems,
    })
}

/// How many generations to keep (`[backup] keep_*`): the newest `last`, and the newest of each
/// of the last `daily` days, `weekly` ISO weeks and `monthly` months (UTC) — restic's rule. A
/// generation any rule keeps is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// The newest N, whatever their age (at least 5: the EHR default keeps at least five).
    pub last: usize,
    /// One per day, for N days.
    pub daily: usize,
    /// One per ISO week, for N weeks.
    pub weekly: usize,
    /// One per month, for N months.
    pub monthly: usize,
}

impl Default for Retention {
    fn default() -> Self {
        Retention { last: 5, daily: 7, weekly: 5, monthly: 12 }
    }
}

/// The UTC time a generation's name says (`YYYYMMDDTHHMMSSZ[-n]`).
pub fn name_time(name: &str) -> Option<time::OffsetDateTime> {
    let b = name.get(..16)?;
    let num = |r: std::ops::Range<usize>| b.get(r).and_then(|s| s.parse::<u32>().ok());
    let date = time::Date::from_calendar_date(
        i32::try_from(num(0..4)?).ok()?,
        time::Month::try_from(u8::try_from(num(4..6)?).ok()?).ok()?,
        u8::try_from(num(6..8)?).ok()?,
    )
    .ok()?;
    let t = time::Time::from_hms(
        u8::try_from(num(9..11)?).ok()?,
        u8::try_from(num(11..13)?).ok()?,
        u8::try_from(num(13..15)?).ok()?,
    )
    .ok()?;
    (b.get(8..9) == Some("T") && b.get(15..16) == Some("Z")).then(|| time::PrimitiveDateTime::new(date, t).assume_utc())
}

/// Which of `names` (any order) a retention policy keeps: `(kept, removed)`, each newest first.
/// Names that do not carry a time are kept.
pub fn plan(names: &[String], r: Retention) -> (Vec<String>, Vec<String>) {
    let mut dated: Vec<(time::OffsetDateTime, &String)> = Vec::new();
    let mut kept: Vec<String> = Vec::new();
    for n in names {
        match name_time(n) {
            Some(t) => dated.push((t, n)),
            None => kept.push(n.clone()),
        }
    }
    dated.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(a.1)));
    let mut keep = vec![false; dated.len()];
    for k in keep.iter_mut().take(r.last.max(5)) {
        *k = true;
    }
    type Bucket = fn(&time::OffsetDateTime) -> (i32, u32);
    let rules: [(usize, Bucket); 3] = [
        (r.daily, |t| (t.year(), u32::from(t.ordinal()))),
        (r.weekly, |t| {
            let (y, w, _) = t.to_iso_week_date();
            (y, u32::from(w))
        }),
        (r.monthly, |t| (t.year(), u32::from(u8::from(t.month())))),
    ];
    for (n, bucket) in rules {
        let mut last = None;
        let mut taken = 0;
        for (i, (t, _)) in dated.iter().enumerate() {
            if taken >= n {
                break;
            }
            let b = bucket(t);
            if last != Some(b) {
                last = Some(b);
                taken += 1;
                if let Some(k) = keep.get_mut(i) {
                    *k = true;
                }
            }
        }
    }
    let mut removed = Vec::new();
    for ((_, n), k) in dated.iter().zip(keep) {
        if k {
            kept.push((*n).clone());
        } else {
            removed.push((*n).clone());
        }
    }
    (kept, removed)
}

/// What pruning did.
#[derive(Debug, Clone, Default)]
pub struct Pruned {
    /// Generations kept.
    pub kept: Vec<String>,
    /// Generations removed.
    pub removed: Vec<String>,
    /// Generations the policy would remove but whose files could not be deleted (an immutable
    /// target, say), with why.
    pub refused: Vec<(String, String)>,
}

/// Removes the generations `retention` does not keep (unless `dry_run`), manifest first so a
/// half-removed generation is never listed; audited (`backup-pruned`) in the node's trail.
pub fn prune(ctx: &Ctx, node: &Node, repo: &Path, retention: Retention, dry_run: bool) -> Result<Pruned, AppError> {
    only_operator(ctx, node)?;
    let all: Vec<String> = generations(repo)?.into_iter().map(|g| g.name).collect();
    let (kept, remove) = plan(&all, retention);
    let mut out = Pruned { kept, ..Pruned::default() };
    for name in remove {
        if dry_run {
            out.removed.push(name);
            continue;
        }
        let gone =
            std::fs::remove_file(repo.join(format!("{name}.manifest"))).and_then(|()| {
                match std::fs::remove_file(repo.join(format!("{name}.age"))) {
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    other => other,
                }
            });
        match gone {
            Ok(()) => out.removed.push(name),
            Err(e) => out.refused.push((name, e.to_string())),
        }
    }
    sync_dir(repo);
    if !dry_run && (!out.removed.is_empty() || !out.refused.is_empty()) {
        ctx.record(
            node,
            "backup-pruned",
            if out.refused.is_empty() { Outcome::Success } else { Outcome::Failure },
            format!(
                "{}: removed {} ({}); kept {}{}",
                repo.display(),
                out.removed.len(),
                out.removed.join(", "),
                out.kept.len(),
                if out.refused.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; could not remove {}",
                        out.refused.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ")
                    )
                }
            ),
        )?;
    }
    Ok(out)
}

/// A restore drill's result (B2), kept as evidence (workflow `backup-drill`, every drill a
/// version) and signed by the node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Drill {
    /// The generation restored.
    pub generation: String,
    /// When the drill ran (Unix µs).
    pub at: i64,
    /// Seconds from start to a proven copy (recovery time, RTO).
    pub rto_secs: f64,
    /// Age of the generation when the drill ran, in seconds: the data a restore would lose
    /// (recovery point, RPO).
    pub rpo_secs: i64,
    /// Rows loaded.
    pub rows: u64,
    /// Versions re-hashed.
    pub fsck_checked: u64,
    /// Audit entries verified.
    pub audit_entries: u64,
    /// Witness checkpoints reproduced.
    pub witness_agreed: u64,
    /// Problems; empty means it passed.
    pub problems: Vec<String>,
    /// Who ran it.
    pub by: String,
    /// The node's signed note over the rest (C2SP signed-note), for the checklist's evidence.
    #[serde(default)]
    pub signed: String,
}

impl Drill {
    /// Whether the restore was proven.
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }
}

/// The first line of a drill's signed note.
pub const DRILL_HEADER: &str = "mamori backup restore drill v1";

/// Runs a restore drill: restores the newest generation (or a random one) into a scratch
/// directory (the embedded store, whatever the source's: the logical copy is proven on either),
/// runs every check of [`restore`], measures the recovery time and point, removes the scratch,
/// and records the signed result (an alert if it failed).
pub fn drill(
    ctx: &Ctx,
    node: &Node,
    repo: &Path,
    ids: &[age::x25519::Identity],
    random: bool,
    progress: &mut dyn FnMut(Step),
) -> Result<Drill, AppError> {
    only_operator(ctx, node)?;
    let all = generations(repo)?;
    let pick = if random && !all.is_empty() {
        let mut b = [0u8; 8];
        getrandom::fill(&mut b).map_err(|e| AppError::Failed(format!("no randomness: {e}")))?;
        all.get(usize::try_from(u64::from_le_bytes(b) % all.len() as u64).unwrap_or(0)).cloned()
    } else {
        all.last().cloned()
    };
    let g = pick.ok_or_else(|| AppError::NotFound(format!("no backup generation in `{}`", repo.display())))?;
    let scratch = node.dir.join(format!("drill-{}", g.name));
    if scratch.exists() {
        std::fs::remove_dir_all(&scratch).map_err(io(format!("cannot clear `{}`", scratch.display())))?;
    }
    let vkey = node.signer.verifier_key();
    let started = std::time::Instant::now();
    let result = restore(
        &RestoreOptions {
            repo,
            generation: Some(&g.name),
            verifier_key: &vkey,
            ids,
            to: &scratch,
            database: None,
            as_of: None,
            witness_dir: node.config.witness_dir.as_deref(),
            operator: ctx.name(),
        },
        progress,
    );
    let rto = started.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&scratch);
    let now = ctx.clock.now().0;
    let mut d = match result {
        Ok(r) => Drill {
            generation: g.name.clone(),
            at: now,
            rto_secs: rto,
            rpo_secs: (now - r.manifest.created_micros) / 1_000_000,
            rows: r.rows,
            fsck_checked: r.fsck_checked,
            audit_entries: r.audit_entries,
            witness_agreed: r.witness.0,
            problems: r.problems,
            by: ctx.name().to_string(),
            signed: String::new(),
        },
        Err(e) => Drill {
            generation: g.name.clone(),
            at: now,
            rto_secs: rto,
            rpo_secs: name_time(&g.name).map_or(0, |t| now / 1_000_000 - t.unix_timestamp()),
            rows: 0,
            fsck_checked: 0,
            audit_entries: 0,
            witness_agreed: 0,
            problems: vec![e.to_string()],
            by: ctx.name().to_string(),
            signed: String::new(),
        },
    };
    let body = format!(
        "{DRILL_HEADER}\n{}\n",
        serde_json::to_string(&d).map_err(|e| AppError::Failed(format!("drill: {e}")))?
    );
    d.signed = node.signer.sign(&body).map_err(|e| AppError::Failed(format!("cannot sign the drill: {e}")))?;
    let value = serde_json::to_value(&d).map_err(|e| AppError::Failed(e.to_string()))?;
    let version = node.store.config_get(crate::registry::ConfigKind::BackupDrill.name(), "latest")?.map(|e| e.version);
    crate::ctx::change_config(
        ctx,
        node,
        crate::registry::ConfigKind::BackupDrill,
        "latest",
        Some(value),
        &format!("restore drill of {}", g.name),
        version,
    )?;
    let passed = d.passed();
    ctx.record(
        node,
        if passed { "backup-drill" } else { "alert-backup-drill-failed" },
        if passed { Outcome::Success } else { Outcome::Failure },
        format!(
            "restore drill of {}: {} (RTO {:.1} s, RPO {} s, {} versions re-hashed, {} audit entries verified){}",
            g.name,
            if passed { "proven" } else { "FAILED" },
            d.rto_secs,
            d.rpo_secs,
            d.fsck_checked,
            d.audit_entries,
            if passed { String::new() } else { format!(": {}", d.problems.join("; ")) }
        ),
    )?;
    Ok(d)
}

/// The latest restore drill, if any.
pub fn last_drill(node: &Node) -> Result<Option<Drill>, AppError> {
    Ok(node
        .store
        .config_get(crate::registry::ConfigKind::BackupDrill.name(), "latest")?
        .and_then(|e| e.value)
        .and_then(|v| serde_json::from_value(v).ok()))
}

/// One generation as the console shows it.
#[derive(Debug, Clone)]
pub struct GenerationState {
    /// Its name.
    pub name: String,
    /// Its manifest, when the signature verifies with this node's key; else why not.
    pub manifest: Result<Manifest, String>,
    /// Bytes of its data file in the repository (`None`: missing).
    pub data_bytes: Option<u64>,
    /// What the vault holds of it (`None`: no vault configured, or it could not be asked).
    pub vault: Option<crate::vault::Stored>,
}

/// Backups at a glance (B1–B3, G5): the repository's generations, the vault's copy, the last
/// restore drill, the schedule and emergency read-only mode.
#[derive(Debug, Clone)]
pub struct Overview {
    /// `[backup] repository` (`None`: not configured).
    pub repository: Option<PathBuf>,
    /// Its generations, newest first; an unreadable repository is `Err`.
    pub generations: Result<Vec<GenerationState>, String>,
    /// The vault's address and what it answered (`None`: no vault configured).
    pub vault: Option<(String, Result<usize, String>)>,
    /// `[backup] every_hours` (`None`: the system scheduler).
    pub every_hours: Option<u32>,
    /// `[backup] keep_*`.
    pub retention: Retention,
    /// The latest restore drill.
    pub last_drill: Option<Drill>,
    /// `[backup] drill_days`.
    pub drill_days: u32,
    /// A drill is due: none since the last `drill_days` (or none ever, once a generation exists).
    pub drill_overdue: bool,
    /// Emergency read-only mode as stored.
    pub emergency: crate::emergency::Mode,
    /// This node is read-only now (stored mode or `serve --read-only`).
    pub read_only_now: bool,
    /// This node was started with `--read-only`.
    pub pinned: bool,
    /// Whether the caller may switch emergency mode (`emergency-mode`).
    pub may_switch: bool,
}

/// Whether a restore drill is due at `now` (Unix s): the last is `drill_days` old, or there was
/// none though a generation exists.
fn drill_due(node: &Node, last: Option<&Drill>, have_generation: bool, now: i64) -> bool {
    match last {
        Some(d) => now - d.at / 1_000_000 >= i64::from(node.config.drill_days) * 86_400,
        None => have_generation,
    }
}

/// [`Overview`] (`read-audit` or `emergency-mode`). Reading it changes nothing; a vault that
/// cannot be reached is shown as such, not hidden.
pub fn overview(ctx: &Ctx, node: &Node) -> Result<Overview, AppError> {
    ctx.authorize_any(node, &[AdminAct::ReadAudit, AdminAct::EmergencyMode])?;
    let repository = node.config.backup_repository.clone();
    let vault = node.config.backup_vault.as_ref().map(|t| (t.url.clone(), crate::vault::remote_list(t)));
    let held: Option<Vec<crate::vault::Stored>> = vault.as_ref().and_then(|(_, r)| r.as_ref().ok().cloned());
    let vkey = node.signer.verifier_key();
    let generations = match &repository {
        None => Ok(Vec::new()),
        Some(repo) if !repo.exists() => Ok(Vec::new()),
        Some(repo) => generations(repo).map_err(|e| e.to_string()).map(|all| {
            all.into_iter()
                .rev()
                .map(|g| GenerationState {
                    manifest: read_manifest(&g, &vkey).map_err(|e| e.to_string()),
                    data_bytes: std::fs::metadata(&g.data).ok().map(|m| m.len()),
                    vault: held.as_ref().and_then(|h| h.iter().find(|s| s.name == g.name).cloned()),
                    name: g.name,
                })
                .collect::<Vec<_>>()
        }),
    };
    let last_drill = last_drill(node)?;
    let now = ctx.clock.now().0 / 1_000_000;
    let drill_overdue = drill_due(node, last_drill.as_ref(), generations.as_ref().is_ok_and(|g| !g.is_empty()), now);
    let (emergency, _) = crate::emergency::stored(node)?;
    Ok(Overview {
        repository,
        generations,
        vault: vault.map(|(url, r)| (url, r.map(|l| l.len()).map_err(|e| e.to_string()))),
        every_hours: node.config.backup_every_hours,
        retention: node.config.backup_retention,
        last_drill,
        drill_days: node.config.drill_days,
        drill_overdue,
        emergency,
        read_only_now: node.records.is_read_only(),
        pinned: node.read_only_pinned,
        may_switch: ctx.may(node, AdminAct::EmergencyMode),
    })
}

/// Lowers the calling thread's CPU priority to the lowest (nice 19): taking a backup is background
/// work and should yield the cores to the requests a server is answering. On Linux the nice value
/// belongs to the thread (and threads it starts inherit it), and an unprivileged thread cannot
/// raise it again — so this is called only on threads that do nothing else: the schedule's and
/// the command line's. Returns the nice value now, or why it could not be set.
pub fn lower_priority() -> Result<i32, String> {
    rustix::process::setpriority_process(None, 19).map_err(|e| format!("setpriority: {e}"))?;
    rustix::process::getpriority_process(None).map_err(|e| format!("getpriority: {e}"))
}

/// The backup schedule inside `mamori serve` (B1/B2): every minute, a generation is taken when
/// `[backup] every_hours` is set and the newest is that old (then pruned by `[backup] keep_*`);
/// a failed backup is `alert-backup-failed`. A restore drill overdue by `[backup] drill_days`
/// (or none ever, once a generation exists) is `alert-backup-drill-overdue`, at most once a day.
pub fn spawn_scheduler(node: std::sync::Arc<Node>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        // A thread of its own, at the lowest CPU priority: the requests come first.
        if let Err(e) = lower_priority() {
            tracing::warn!(error = %e, "the backup schedule runs at normal CPU priority");
        }
        let ctx = Ctx::operator(&node, "mamori-serve");
        let mut last_overdue: Option<std::time::Instant> = None;
        let mut failing = false;
        let mut vault_failing = false;
        std::thread::sleep(std::time::Duration::from_secs(2));
        loop {
            if let Err(e) = tick(&ctx, &node, &mut last_overdue, &mut failing) {
                tracing::error!(error = %e, "the backup schedule could not run");
            }
            if let Err(e) = vault_tick(&ctx, &node, &mut vault_failing) {
                tracing::error!(error = %e, "the backup schedule could not run");
            }
            std::thread::sleep(std::time::Duration::from_secs(60));
        }
    })
}

/// Sends what the vault lacks; a failure is alerted once per outage.
fn vault_tick(ctx: &Ctx, node: &Node, failing: &mut bool) -> Result<(), AppError> {
    let (Some(repo), Some(target)) = (&node.config.backup_repository, &node.config.backup_vault) else {
        return Ok(());
    };
    if !repo.exists() {
        return Ok(());
    }
    match send_missing(ctx, node, target, repo) {
        Ok(sent) => {
            if !sent.is_empty() {
                tracing::info!(generations = sent.len(), "generations sent to the vault");
            }
            *failing = false;
        }
        Err(e) => {
            if !*failing {
                alert(
                    ctx,
                    node,
                    "alert-backup-vault-failed",
                    format!("generations could not be sent to the vault {}: {e}", target.url),
                )?;
            }
            *failing = true;
        }
    }
    Ok(())
}

fn alert(ctx: &Ctx, node: &Node, action: &str, detail: String) -> Result<(), AppError> {
    tracing::warn!(%detail, "{action}");
    ctx.record(node, action, Outcome::Failure, detail)
}

fn tick(
    ctx: &Ctx,
    node: &Node,
    last_overdue: &mut Option<std::time::Instant>,
    failing: &mut bool,
) -> Result<(), AppError> {
    let Some(repo) = node.config.backup_repository.clone() else { return Ok(()) };
    let now = ctx.clock.now().0 / 1_000_000;
    let newest = if repo.exists() { generations(&repo)?.last().and_then(|g| name_time(&g.name)) } else { None };
    let mut have_generation = newest.is_some();
    if let Some(hours) = node.config.backup_every_hours
        && newest.is_none_or(|t| now - t.unix_timestamp() >= i64::from(hours) * 3600)
    {
        match create(ctx, node, &repo, &node.config.backup_recipients, &mut |_| {}) {
            Ok(c) => {
                *failing = false;
                have_generation = true;
                tracing::info!(generation = %c.manifest.generation, seconds = c.seconds, "scheduled backup taken");
                prune(ctx, node, &repo, node.config.backup_retention, false)?;
            }
            Err(e) => {
                if !*failing {
                    alert(
                        ctx,
                        node,
                        "alert-backup-failed",
                        format!("the scheduled backup into {} failed: {e}", repo.display()),
                    )?;
                }
                *failing = true;
            }
        }
    }
    let last = last_drill(node)?;
    let due = drill_due(node, last.as_ref(), have_generation, now);
    if due && last_overdue.is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(86_400)) {
        alert(
            ctx,
            node,
            "alert-backup-drill-overdue",
            match last {
                Some(d) => format!(
                    "the last restore drill ({}, generation {}) is more than {} days old: run `mamori backup drill`",
                    rfc3339(d.at),
                    d.generation,
                    node.config.drill_days
                ),
                None => {
                    "no restore drill has been recorded: run `mamori backup drill` where the backup identity is".into()
                }
            },
        )?;
        *last_overdue = Some(std::time::Instant::now());
    }
    Ok(())
}

/// `mamori.toml` with `[store] database` set to `database` (or removed: the embedded store).
/// Every other line is kept as it was.
pub fn set_store_database(text: &str, database: Option<&str>) -> String {
    let mut out = Vec::new();
    let mut in_store = false;
    let mut had_store = false;
    let mut written = false;
    let line_for = |url: &str| format!("database = {}", toml::Value::String(url.to_string()));
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            if in_store && !written {
                if let Some(url) = database {
                    out.push(line_for(url));
                }
                written = true;
            }
            in_store = t == "[store]";
            had_store |= in_store;
        } else if in_store && t.split('=').next().map(str::trim) == Some("database") {
            if let Some(url) = database {
                out.push(line_for(url));
            }
            written = true;
            continue;
        }
        out.push(line.to_string());
    }
    if in_store && !written {
        if let Some(url) = database {
            out.push(line_for(url));
        }
    } else if !had_store && let Some(url) = database {
        out.push("[store]".into());
        out.push(line_for(url));
    }
    let mut s = out.join("\n");
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backup_thread_lowers_only_its_own_priority() {
        let before = rustix::process::getpriority_process(None).unwrap();
        let inside = std::thread::spawn(lower_priority).join().unwrap();
        assert_eq!(inside, Ok(19));
        // This thread (and so the rest of a server) keeps its priority.
        assert_eq!(rustix::process::getpriority_process(None).unwrap(), before);
    }

    #[test]
    fn the_store_line_is_replaced_added_or_removed() {
        let t = "# c\n[store]\ndatabase = \"postgres://a/b\"\n\n[audit]\nx = 1\n";
        let s = set_store_database(t, None);
        assert!(!s.contains("database"), "{s}");
        assert!(s.contains("[audit]\nx = 1"), "{s}");
        let s = set_store_database(t, Some("postgres://h/new"));
        assert!(s.contains("database = \"postgres://h/new\""), "{s}");
        assert!(!s.contains("postgres://a/b"), "{s}");
        let s = set_store_database("[audit]\nx = 1\n", Some("postgres://h/n"));
        assert!(s.ends_with("[store]\ndatabase = \"postgres://h/n\"\n"), "{s}");
        let s = set_store_database("[store]\n[audit]\n", Some("postgres://h/n"));
        assert!(s.starts_with("[store]\ndatabase = \"postgres://h/n\"\n[audit]"), "{s}");
    }

    #[test]
    fn retention_keeps_the_newest_and_one_per_day_week_and_month() {
        // Four generations a day for 400 days.
        let start = time::macros::datetime!(2025-10-01 00:00 UTC);
        let names: Vec<String> = (0..400 * 4)
            .map(|i| {
                let t = start + time::Duration::hours(6 * i);
                format!(
                    "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
                    t.year(),
                    u8::from(t.month()),
                    t.day(),
                    t.hour(),
                    t.minute(),
                    t.second()
                )
            })
            .collect();
        let (kept, removed) = plan(&names, Retention::default());
        assert_eq!(kept.len() + removed.len(), names.len());
        // The newest five, then one per day for 7 days (the newest day's is among the five),
        // 5 weeks, 12 months: overlapping buckets are kept once.
        assert!(kept.len() >= 5 + 6 && kept.len() <= 5 + 7 + 5 + 12, "{}", kept.len());
        let newest = names.last().unwrap();
        assert_eq!(&kept[0], newest);
        for n in names.iter().rev().take(5) {
            assert!(kept.contains(n), "{n}");
        }
        // A month ago is kept by the monthly rule; something 200 days old between months is not.
        assert!(removed.iter().any(|n| n.starts_with("2026")), "{removed:?}");
        // Fewer than five: all kept, and so is a name that is not a time.
        let few = vec!["20261201T000000Z".to_string(), "20261202T000000Z".into(), "odd".into()];
        let (k, r) = plan(&few, Retention { last: 5, daily: 0, weekly: 0, monthly: 0 });
        assert_eq!((k.len(), r.len()), (3, 0));
        assert_eq!(name_time("20261205T103437Z-2").map(|t| t.hour()), Some(10));
        assert!(name_time("2026120xT103437Z").is_none());
    }

    #[test]
    fn archive_paths_stay_inside_the_data_directory() {
        for ok in ["mamori.toml", "keys/master.key", "keys/signing-ed25519.seed"] {
            assert!(safe_path(ok), "{ok}");
        }
        for bad in ["../x", "keys/../mamori.db", "keys/", "keys/a/b", "/etc/passwd", "mamori.db", "keys/.."] {
            assert!(!safe_path(bad), "{bad}");
        }
    }

    #[test]
    fn a_key_pair_round_trips_through_age() {
        let (id, rcpt) = keygen();
        assert!(id.starts_with("AGE-SECRET-KEY-1") && rcpt.starts_with("age1"));
        assert!(parse_recipients(&[rcpt]).is_ok());
        assert!(parse_recipients(&["age1nope".into()]).is_err());
        assert!(parse_recipients(&[]).is_err());
    }
}
