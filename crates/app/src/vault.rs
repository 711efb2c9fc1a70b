//! The backup vault (#27, B1): a copy of every generation that the Mamori server can write but
//! never delete or overwrite.
//!
//! `mamori backup vault serve` runs as another operating-system user — on another host, at
//! best — and owns a directory in the repository format (`G.age` + `G.manifest`, so
//! `mamori backup restore --repo VAULT_DIR` reads it as it is). Its HTTP interface has two verbs
//! and no others: list the generations, and put a file that is not there yet. A put is accepted
//! only when:
//! - it carries the vault's write token (only its SHA-256 is stored; compared in constant time);
//! - a manifest is signed by a node key the vault was initialised with and names its generation;
//! - a data file arrives after its manifest and its size and SHA-256 are the manifest's — it is
//!   received into a scratch file and linked into place only then, so a broken upload leaves
//!   nothing and can be sent again;
//! - the name is free: a file already there is never replaced (409), whatever the token.
//!
//! A stored file is made read-only (0444) and, where the vault may (`CAP_LINUX_IMMUTABLE`, or
//! root), immutable (`chattr +i`): not even the vault's own user can then remove it. Removal is
//! a local act of the vault's operator (`mamori backup vault prune`), never over the network, and
//! never of a generation younger than the vault's retention lock (`lock_days`, fixed at `init`).
//! This is S3 Object Lock's compliance mode for a directory: the server that is attacked holds a
//! token that can add generations, not one that can take them away.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::AppError;
use crate::backup::{self, Generation, Manifest, io, sha256_hex, sync_dir};

/// The vault's settings file in its directory.
pub const VAULT_FILE: &str = "vault.toml";
/// The largest manifest the vault takes (they are a few KiB).
pub const MAX_MANIFEST: usize = 1 << 20;
/// Scratch files of uploads in progress start with this.
const INCOMING: &str = ".incoming-";

#[derive(Debug, Serialize, Deserialize)]
struct Settings {
    /// Generations younger than this many days are never removed.
    lock_days: u32,
    /// The verifier keys (`origin+id+key`) of the nodes whose generations the vault takes.
    node_keys: Vec<String>,
    /// SHA-256 (hex) of the write token.
    token_sha256: String,
    /// When the vault was made (RFC 3339).
    created: String,
}

/// A vault directory, opened by its own process.
#[derive(Debug)]
pub struct Vault {
    dir: PathBuf,
    settings: Settings,
}

/// One generation as the vault holds it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Stored {
    /// The generation's name.
    pub name: String,
    /// Its signed manifest is stored.
    pub manifest: bool,
    /// Its data file is stored (and matched the manifest when it arrived).
    pub data: bool,
    /// Every stored file of it is immutable (`chattr +i`), not only read-only.
    pub immutable: bool,
}

impl Stored {
    /// The vault holds the whole generation: its manifest and its data.
    pub fn complete(&self) -> bool {
        self.manifest && self.data
    }
}

/// `chattr FLAG path` (`+i`, `-i`); true when it succeeded.
fn chattr(flag: &str, path: &Path) -> bool {
    std::process::Command::new("chattr")
        .arg(flag)
        .arg(path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Makes `path` read-only and, where this process may, immutable; true when immutable.
fn seal(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o444));
    chattr("+i", path)
}

/// Whether `path` carries the immutable attribute (`lsattr`).
pub fn is_immutable(path: &Path) -> bool {
    std::process::Command::new("lsattr")
        .arg("-d")
        .arg(path)
        .stderr(std::process::Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.split_whitespace().next().map(|flags| flags.contains('i')))
        .unwrap_or(false)
}

/// Now in Unix microseconds, by the vault host's clock.
pub fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn scratch(dir: &Path) -> Result<(PathBuf, std::fs::File), AppError> {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).map_err(|e| AppError::Failed(format!("no randomness: {e}")))?;
    let path = dir.join(format!("{INCOMING}{}", hex::encode(b)));
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(io(format!("cannot create `{}`", path.display())))?;
    Ok((path, f))
}

/// Links the finished scratch file to `target` unless a file is there; then seals it.
fn publish(dir: &Path, scratch: &Path, target: &Path) -> Result<(), AppError> {
    let linked = std::fs::hard_link(scratch, target);
    let _ = std::fs::remove_file(scratch);
    match linked {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(AppError::Conflict(format!(
                "`{}` is already in the vault, which never replaces a file",
                target.file_name().and_then(|n| n.to_str()).unwrap_or("?")
            )));
        }
        Err(e) => return Err(AppError::Failed(format!("cannot store `{}`: {e}", target.display()))),
    }
    seal(target);
    sync_dir(dir);
    Ok(())
}

fn random_token() -> Result<String, AppError> {
    use base64::Engine;
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|e| AppError::Failed(format!("no randomness: {e}")))?;
    Ok(format!("mamori-vault-{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)))
}

/// Makes `dir` a vault taking generations signed by `node_keys`, with a retention lock of
/// `lock_days`; returns the write token (shown once; the vault keeps only its hash).
pub fn init(dir: &Path, node_keys: &[String], lock_days: u32) -> Result<String, AppError> {
    if node_keys.is_empty() {
        return Err(AppError::Invalid(
            "a vault needs the verifier key of at least one node (`mamori audit verifier-key` on that node)".into(),
        ));
    }
    for k in node_keys {
        mamori_audit::note::NoteVerifier::parse(k.trim()).map_err(|e| {
            AppError::Invalid(format!("`{}` is not a node verifier key: {e}", k.chars().take(80).collect::<String>()))
        })?;
    }
    if !(1..=3650).contains(&lock_days) {
        return Err(AppError::Invalid("the vault's lock must be 1–3650 days".into()));
    }
    if dir.join(VAULT_FILE).exists() {
        return Err(AppError::Conflict(format!("`{}` is already a vault", dir.display())));
    }
    crate::node::create_private_dir(dir).map_err(io(format!("cannot create `{}`", dir.display())))?;
    let token = random_token()?;
    let settings = Settings {
        lock_days,
        node_keys: node_keys.iter().map(|k| k.trim().to_string()).collect(),
        token_sha256: sha256_hex(token.as_bytes()),
        created: backup::rfc3339(now_micros()),
    };
    let text = toml::to_string(&settings).map_err(|e| AppError::Failed(format!("vault settings: {e}")))?;
    crate::node::write_private(&dir.join(VAULT_FILE), text.as_bytes())
        .map_err(io(format!("cannot write `{}`", dir.join(VAULT_FILE).display())))?;
    sync_dir(dir);
    Ok(token)
}

impl Vault {
    /// Opens the vault at `dir` and removes the scratch files of uploads that never finished.
    pub fn open(dir: &Path) -> Result<Vault, AppError> {
        let path = dir.join(VAULT_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => AppError::NotFound(format!(
                "`{}` is not a vault: make one with `mamori backup vault init --dir {}`",
                dir.display(),
                dir.display()
            )),
            _ => AppError::Failed(format!("cannot read `{}`: {e}", path.display())),
        })?;
        let settings: Settings = toml::from_str(&text)
            .map_err(|e| AppError::Invalid(format!("`{}` does not parse: {e}", path.display())))?;
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.filter_map(Result::ok) {
                if e.file_name().to_str().is_some_and(|n| n.starts_with(INCOMING)) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        Ok(Vault { dir: dir.to_path_buf(), settings })
    }

    /// The vault's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The retention lock in days.
    pub fn lock_days(&self) -> u32 {
        self.settings.lock_days
    }

    /// Whether this process can make files immutable here (tries on a scratch file).
    pub fn can_make_immutable(&self) -> bool {
        let Ok((path, f)) = scratch(&self.dir) else { return false };
        drop(f);
        let ok = seal(&path);
        chattr("-i", &path);
        let _ = std::fs::remove_file(&path);
        ok
    }

    /// Whether `presented` is the write token (constant time). Read from the settings file
    /// each time, so a rotated token takes effect in a serving vault at once.
    pub fn accepts_token(&self, presented: &str) -> bool {
        use subtle::ConstantTimeEq;
        let current = std::fs::read_to_string(self.dir.join(VAULT_FILE))
            .ok()
            .and_then(|t| toml::from_str::<Settings>(&t).ok())
            .map(|s| s.token_sha256);
        let want = current.as_deref().unwrap_or(&self.settings.token_sha256).as_bytes();
        let got = sha256_hex(presented.as_bytes());
        bool::from(got.as_bytes().ct_eq(want))
    }

    /// Replaces the write token (the old one stops working); returns the new one.
    pub fn rotate_token(&mut self) -> Result<String, AppError> {
        let token = random_token()?;
        self.settings.token_sha256 = sha256_hex(token.as_bytes());
        let text = toml::to_string(&self.settings).map_err(|e| AppError::Failed(format!("vault settings: {e}")))?;
        let path = self.dir.join(VAULT_FILE);
        let tmp = self.dir.join(format!("{VAULT_FILE}.new"));
        let _ = std::fs::remove_file(&tmp);
        crate::node::write_private(&tmp, text.as_bytes()).map_err(io(format!("cannot write `{}`", tmp.display())))?;
        std::fs::rename(&tmp, &path).map_err(io(format!("cannot replace `{}`", path.display())))?;
        sync_dir(&self.dir);
        Ok(token)
    }

    /// Every generation the vault holds, oldest first.
    pub fn list(&self) -> Result<Vec<Stored>, AppError> {
        let mut names = std::collections::BTreeSet::new();
        for e in std::fs::read_dir(&self.dir).map_err(io(format!("cannot list `{}`", self.dir.display())))? {
            let Ok(e) = e else { continue };
            let Some(n) = e.file_name().to_str().map(str::to_string) else { continue };
            if let Some(g) = n.strip_suffix(".manifest").or_else(|| n.strip_suffix(".age"))
                && backup::valid_name(g)
            {
                names.insert(g.to_string());
            }
        }
        Ok(names
            .into_iter()
            .map(|name| {
                let m = self.dir.join(format!("{name}.manifest"));
                let d = self.dir.join(format!("{name}.age"));
                let (manifest, data) = (m.exists(), d.exists());
                let immutable = (manifest || data)
                    && [(&m, manifest), (&d, data)].iter().all(|(p, there)| !there || is_immutable(p));
                Stored { name, manifest, data, immutable }
            })
            .collect())
    }

    fn manifest_of(&self, name: &str, text: &str) -> Result<Manifest, AppError> {
        let mut last = None;
        for key in &self.settings.node_keys {
            match backup::parse_manifest(name, text, key) {
                Ok(m) => return Ok(m),
                Err(e) => last = Some(e),
            }
        }
        Err(match last {
            Some(AppError::Invalid(e)) if e.contains("signature") => AppError::Invalid(format!(
                "generation {name}: the manifest is not signed by a node this vault takes: refused"
            )),
            Some(e) => e,
            None => AppError::Invalid("the vault takes no node's generations".into()),
        })
    }

    /// Stores generation `name`'s signed manifest unless one is there. The same bytes again
    /// are accepted as already stored (false); other bytes are refused (409).
    pub fn put_manifest(&self, name: &str, bytes: &[u8]) -> Result<bool, AppError> {
        if !backup::valid_name(name) {
            return Err(AppError::Invalid("not a generation name".into()));
        }
        if bytes.len() > MAX_MANIFEST {
            return Err(AppError::Invalid("a manifest is at most 1 MiB".into()));
        }
        let text = std::str::from_utf8(bytes).map_err(|_| AppError::Invalid("a manifest is UTF-8 text".into()))?;
        self.manifest_of(name, text)?;
        let target = self.dir.join(format!("{name}.manifest"));
        if let Ok(existing) = std::fs::read(&target) {
            return if existing == bytes {
                Ok(false)
            } else {
                Err(AppError::Conflict(format!(
                    "generation {name} already has another manifest in the vault, which never replaces a file"
                )))
            };
        }
        let (path, mut f) = scratch(&self.dir)?;
        let written = f.write_all(bytes).and_then(|()| f.sync_all());
        drop(f);
        if let Err(e) = written {
            let _ = std::fs::remove_file(&path);
            return Err(AppError::Failed(format!("cannot write the manifest: {e}")));
        }
        publish(&self.dir, &path, &target)?;
        tracing::info!(generation = name, "vault: manifest stored");
        Ok(true)
    }

    /// Starts receiving generation `name`'s data file: its manifest must be stored and the
    /// data not yet.
    pub fn begin_data(&self, name: &str) -> Result<Incoming, AppError> {
        if !backup::valid_name(name) {
            return Err(AppError::Invalid("not a generation name".into()));
        }
        let mpath = self.dir.join(format!("{name}.manifest"));
        let text = match std::fs::read_to_string(&mpath) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(AppError::Conflict(format!("generation {name}: send its manifest first")));
            }
            Err(e) => return Err(AppError::Failed(format!("cannot read `{}`: {e}", mpath.display()))),
        };
        let m = self.manifest_of(name, &text)?;
        let target = self.dir.join(format!("{name}.age"));
        if target.exists() {
            return Err(AppError::Conflict(format!(
                "`{name}.age` is already in the vault, which never replaces a file"
            )));
        }
        let (path, file) = scratch(&self.dir)?;
        Ok(Incoming {
            dir: self.dir.clone(),
            name: name.to_string(),
            scratch: path,
            target,
            file: Some(std::io::BufWriter::with_capacity(1 << 20, file)),
            hash: Sha256::new(),
            bytes: 0,
            want_size: m.data.size,
            want_sha256: m.data.sha256,
        })
    }

    /// Removes the complete generations older than `older_than_days` (at least the lock) —
    /// the newest five always stay. A local act of the vault's operator; `chattr -i` needs the
    /// same capability `+i` did. Returns the names removed (or that would be, `dry_run`).
    pub fn prune(&self, older_than_days: u32, now_micros: i64, dry_run: bool) -> Result<Vec<String>, AppError> {
        if older_than_days < self.settings.lock_days {
            return Err(AppError::Invalid(format!(
                "the vault's retention lock is {} days: nothing younger is ever removed",
                self.settings.lock_days
            )));
        }
        let complete: Vec<String> = self.list()?.into_iter().filter(|s| s.manifest && s.data).map(|s| s.name).collect();
        let keep_from = complete.len().saturating_sub(5);
        let cutoff = now_micros / 1_000_000 - i64::from(older_than_days) * 86_400;
        let mut removed = Vec::new();
        for name in complete.iter().take(keep_from) {
            let Some(t) = backup::name_time(name) else { continue };
            if t.unix_timestamp() >= cutoff {
                continue;
            }
            if !dry_run {
                for f in [format!("{name}.age"), format!("{name}.manifest")] {
                    let p = self.dir.join(&f);
                    chattr("-i", &p);
                    std::fs::remove_file(&p).map_err(io(format!("cannot remove `{}`", p.display())))?;
                }
                tracing::info!(generation = %name, "vault: generation pruned");
            }
            removed.push(name.clone());
        }
        sync_dir(&self.dir);
        Ok(removed)
    }
}

/// A data file being received; nothing is stored unless `finish` finds it is the manifest's.
pub struct Incoming {
    dir: PathBuf,
    name: String,
    scratch: PathBuf,
    target: PathBuf,
    file: Option<std::io::BufWriter<std::fs::File>>,
    hash: Sha256,
    bytes: u64,
    want_size: u64,
    want_sha256: String,
}

impl Incoming {
    /// Appends a chunk; refused as soon as the file is longer than its manifest says.
    pub fn write(&mut self, chunk: &[u8]) -> Result<(), AppError> {
        self.bytes += chunk.len() as u64;
        if self.bytes > self.want_size {
            return Err(AppError::Invalid(format!(
                "generation {}: the data is longer than its manifest says ({} bytes): refused",
                self.name, self.want_size
            )));
        }
        self.hash.update(chunk);
        let f = self.file.as_mut().ok_or_else(|| AppError::Failed("upload already finished".into()))?;
        f.write_all(chunk).map_err(io("cannot write the upload"))
    }

    /// Checks size and SHA-256 against the manifest and stores the file, sealed.
    pub fn finish(mut self) -> Result<(), AppError> {
        let f = self.file.take().ok_or_else(|| AppError::Failed("upload already finished".into()))?;
        let f = f.into_inner().map_err(|e| AppError::Failed(format!("cannot write the upload: {e}")))?;
        f.sync_all().map_err(io("cannot sync the upload"))?;
        drop(f);
        let got = hex::encode(std::mem::take(&mut self.hash).finalize());
        if self.bytes != self.want_size || got != self.want_sha256 {
            return Err(AppError::Invalid(format!(
                "generation {}: the data ({} bytes, sha256 {got}) is not what its manifest says ({} bytes, sha256 {}): refused",
                self.name, self.bytes, self.want_size, self.want_sha256
            )));
        }
        publish(&self.dir, &self.scratch, &self.target)?;
        tracing::info!(generation = %self.name, bytes = self.bytes, "vault: data stored");
        Ok(())
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        self.file = None;
        let _ = std::fs::remove_file(&self.scratch);
    }
}

// ---------------------------------------------------------------------------------------------
// The client: what a node uses to push its generations.

/// Where a node pushes its generations (`[backup] vault`, `vault_token_file`, `vault_ca`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `https://host:port` (`http://` only to a loopback address).
    pub url: String,
    /// The file holding the write token.
    pub token_file: PathBuf,
    /// PEM certificates the vault's TLS certificate must chain to.
    pub ca_file: Option<PathBuf>,
}

impl Target {
    /// Checks the URL's form (scheme, host; plain HTTP only to loopback).
    pub fn check(url: &str) -> Result<(), String> {
        let u = url::Url::parse(url).map_err(|e| format!("backup.vault: `{url}` is not a URL: {e}"))?;
        let host = u.host_str().ok_or_else(|| format!("backup.vault: `{url}` names no host"))?;
        match u.scheme() {
            "https" => Ok(()),
            "http" if matches!(host, "127.0.0.1" | "[::1]" | "::1" | "localhost") => Ok(()),
            "http" => Err(format!("backup.vault: `{url}`: plain http only to a loopback address; use https")),
            s => Err(format!("backup.vault: `{url}`: scheme `{s}` is not http(s)")),
        }
    }
}

/// What a push did.
#[derive(Debug, Clone, Default)]
pub struct Pushed {
    /// Files sent and stored.
    pub sent: Vec<String>,
    /// Bytes sent.
    pub bytes: u64,
}

type Body = http_body_util::combinators::BoxBody<bytes::Bytes, std::io::Error>;

struct Client {
    host: String,
    port: u16,
    base: String,
    token: String,
    tls: Option<tokio_rustls::TlsConnector>,
    answer_within: std::time::Duration,
}

/// How long a request to the vault may take, apart from sending the data (see `Client::send`).
const ANSWER_WITHIN: std::time::Duration = std::time::Duration::from_secs(30);

fn failed(e: impl std::fmt::Display) -> AppError {
    AppError::Failed(format!("backup vault: {e}"))
}

impl Client {
    fn new(t: &Target) -> Result<Client, AppError> {
        Target::check(&t.url).map_err(AppError::Invalid)?;
        let u = url::Url::parse(&t.url).map_err(failed)?;
        let token = std::fs::read_to_string(&t.token_file)
            .map_err(|e| failed(format!("cannot read the token file `{}`: {e}", t.token_file.display())))?
            .trim()
            .to_string();
        let tls = if u.scheme() == "https" {
            let mut roots = rustls::RootCertStore::empty();
            let ca = t.ca_file.as_ref().ok_or_else(|| {
                AppError::Invalid("backup.vault_ca: the vault's CA certificate (PEM) is needed for https".into())
            })?;
            use rustls::pki_types::pem::PemObject;
            let certs = rustls::pki_types::CertificateDer::pem_file_iter(ca)
                .map_err(|e| failed(format!("cannot read `{}`: {e}", ca.display())))?;
            for c in certs {
                roots.add(c.map_err(|e| failed(format!("`{}`: {e}", ca.display())))?).map_err(failed)?;
            }
            let cfg = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(failed)?
            .with_root_certificates(roots)
            .with_no_client_auth();
            Some(tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg)))
        } else {
            None
        };
        let host = u.host_str().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_string();
        Ok(Client {
            port: u.port_or_known_default().unwrap_or(443),
            base: u.path().trim_end_matches('/').to_string(),
            host,
            token,
            tls,
            answer_within: ANSWER_WITHIN,
        })
    }

    /// One request and its whole answer, within a deadline: [`ANSWER_WITHIN`] plus a second per
    /// MiB sent. A vault that accepts the connection and then says nothing must not hold the
    /// backup schedule's thread (or a console page) for ever.
    async fn send(
        &self,
        method: hyper::Method,
        path: &str,
        len: Option<u64>,
        body: Body,
    ) -> Result<(u16, String), AppError> {
        let deadline = self.answer_within + std::time::Duration::from_secs(len.unwrap_or(0) >> 20);
        tokio::time::timeout(deadline, self.exchange(method, path, len, body)).await.map_err(|_| {
            failed(format!("no answer from {}:{} within {} s", self.host, self.port, deadline.as_secs()))
        })?
    }

    async fn exchange(
        &self,
        method: hyper::Method,
        path: &str,
        len: Option<u64>,
        body: Body,
    ) -> Result<(u16, String), AppError> {
        use hyper_util::rt::TokioIo;
        let tcp = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            tokio::net::TcpStream::connect((self.host.as_str(), self.port)),
        )
        .await
        .map_err(|_| failed(format!("no answer from {}:{}", self.host, self.port)))?
        .map_err(|e| failed(format!("cannot connect to {}:{}: {e}", self.host, self.port)))?;
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header(hyper::header::HOST, self.host.as_str())
            .header(hyper::header::AUTHORIZATION, format!("Bearer {}", self.token));
        if let Some(n) = len {
            req = req.header(hyper::header::CONTENT_LENGTH, n);
        }
        let req = req.body(body).map_err(failed)?;
        let resp = match &self.tls {
            Some(c) => {
                let name = rustls::pki_types::ServerName::try_from(self.host.clone()).map_err(failed)?;
                let tls = c.connect(name, tcp).await.map_err(|e| failed(format!("TLS: {e}")))?;
                let (mut s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.map_err(failed)?;
                tokio::spawn(conn);
                s.send_request(req).await.map_err(failed)?
            }
            None => {
                let (mut s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.map_err(failed)?;
                tokio::spawn(conn);
                s.send_request(req).await.map_err(failed)?
            }
        };
        let status = resp.status().as_u16();
        use http_body_util::BodyExt;
        let body = resp.into_body().collect().await.map_err(failed)?.to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
}

fn small(bytes: Vec<u8>) -> Body {
    use http_body_util::BodyExt;
    http_body_util::Full::new(bytes::Bytes::from(bytes)).map_err(|never| match never {}).boxed()
}

fn file_body(f: tokio::fs::File) -> Body {
    use http_body_util::BodyExt;
    use tokio::io::AsyncReadExt;
    let stream = futures_util::stream::unfold(Some(f), |f| async move {
        let mut f = f?;
        let mut buf = vec![0u8; 1 << 16];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(hyper::body::Frame::data(bytes::Bytes::from(buf))), Some(f)))
            }
            Err(e) => Some((Err(e), None)),
        }
    });
    http_body_util::StreamBody::new(stream).boxed()
}

fn refusal(status: u16, body: &str) -> String {
    let why = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
        .unwrap_or_else(|| body.chars().take(200).collect());
    format!("the vault answered {status}: {why}")
}

fn runtime() -> Result<tokio::runtime::Runtime, AppError> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(failed)
}

/// The generations the vault at `target` holds.
pub fn remote_list(target: &Target) -> Result<Vec<Stored>, AppError> {
    let c = Client::new(target)?;
    runtime()?.block_on(async {
        let (status, body) = c.send(hyper::Method::GET, "/v1/generations", None, small(Vec::new())).await?;
        if status != 200 {
            return Err(failed(refusal(status, &body)));
        }
        serde_json::from_str(&body).map_err(|e| failed(format!("the vault's list does not parse: {e}")))
    })
}

/// Sends generation `g` (its manifest, then its data) to the vault unless it has them.
pub fn push(target: &Target, g: &Generation) -> Result<Pushed, AppError> {
    let c = Client::new(target)?;
    runtime()?.block_on(async {
        let (status, body) = c.send(hyper::Method::GET, "/v1/generations", None, small(Vec::new())).await?;
        if status != 200 {
            return Err(failed(refusal(status, &body)));
        }
        let held: Vec<Stored> =
            serde_json::from_str(&body).map_err(|e| failed(format!("the vault's list does not parse: {e}")))?;
        let have = held.iter().find(|s| s.name == g.name).cloned();
        let mut out = Pushed::default();
        if !have.as_ref().is_some_and(|s| s.manifest) {
            let mut bytes = Vec::new();
            std::fs::File::open(&g.manifest)
                .and_then(|mut f| f.read_to_end(&mut bytes))
                .map_err(|e| failed(format!("cannot read `{}`: {e}", g.manifest.display())))?;
            let n = bytes.len() as u64;
            let path = format!("/v1/generations/{}.manifest", g.name);
            let (status, body) = c.send(hyper::Method::PUT, &path, Some(n), small(bytes)).await?;
            if status != 201 && status != 200 {
                return Err(failed(refusal(status, &body)));
            }
            out.sent.push(format!("{}.manifest", g.name));
            out.bytes += n;
        }
        if !have.as_ref().is_some_and(|s| s.data) {
            let f = tokio::fs::File::open(&g.data)
                .await
                .map_err(|e| failed(format!("cannot read `{}`: {e}", g.data.display())))?;
            let n = f.metadata().await.map_err(failed)?.len();
            let path = format!("/v1/generations/{}.age", g.name);
            let (status, body) = c.send(hyper::Method::PUT, &path, Some(n), file_body(f)).await?;
            if status != 201 {
                return Err(failed(refusal(status, &body)));
            }
            out.sent.push(format!("{}.age", g.name));
            out.bytes += n;
        }
        Ok(out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vault_that_accepts_and_never_answers_is_given_up_on() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        // Accepts, reads nothing, answers nothing, keeps the connection open.
        let held = std::thread::spawn(move || listener.accept().map(|(s, _)| s));
        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, "t").unwrap();
        let target = Target { url: format!("http://127.0.0.1:{port}"), token_file, ca_file: None };
        let mut c = Client::new(&target).unwrap();
        c.answer_within = std::time::Duration::from_millis(300);
        let r = runtime().unwrap().block_on(c.send(hyper::Method::GET, "/v1/generations", None, small(Vec::new())));
        let e = r.unwrap_err().to_string();
        assert!(e.contains("no answer from 127.0.0.1"), "{e}");
        drop(held.join());
    }
}
