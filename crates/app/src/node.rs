//! The data directory: created and initialised on first use (config, keys, schema), then opened
//! into a running [`Node`] — the store, the services and the router state.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use mamori_access::{ClassLabeler, Enforcer};
use mamori_authz::PolicyEngine;
use mamori_oauth::OAuth;
use mamori_records::{Clock, Records, SystemClock};

use crate::backend::{self, Backend};
use crate::config::{self, Config};
use mamori_audit::note::NoteSigner;

/// Why a data directory could not be set up, opened or kept running. Each variant keeps its
/// cause as `source()`, so the command line prints the whole chain.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// A file or directory could not be created, read or written.
    #[error("cannot {what} `{}`", path.display())]
    Io {
        /// What was being done (`read`, `create`, `write`, `restrict`).
        what: &'static str,
        /// Which file or directory.
        path: PathBuf,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
    /// `mamori.toml` is not valid; the message names the setting.
    #[error("`{}`: {message}", path.display())]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A key file is malformed, or differs from the keys the shared store was set up with.
    #[error("{0}")]
    Keys(String),
    /// The store could not be opened, read or written.
    #[error("{what}")]
    Store {
        /// What was being done.
        what: String,
        /// The store's error.
        #[source]
        source: mamori_store_sql::Error,
    },
    /// Configuration stored earlier (policies, class rules) no longer loads.
    #[error("{0}")]
    Stored(String),
    /// The `--database` argument is not a PostgreSQL URL.
    #[error("{0}")]
    Usage(String),
}

impl NodeError {
    fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> NodeError {
        let path = path.to_path_buf();
        move |source| NodeError::Io { what, path, source }
    }

    fn store(what: impl Into<String>) -> impl FnOnce(mamori_store_sql::Error) -> NodeError {
        let what = what.into();
        move |source| NodeError::Store { what, source }
    }
}

/// An opened data directory.
pub struct Node {
    /// Where it lives.
    pub dir: PathBuf,
    /// Validated configuration.
    pub config: Config,
    /// The store: embedded, or the PostgreSQL database shared with other nodes.
    pub store: Arc<dyn Backend>,
    /// Record service.
    pub records: Arc<Records>,
    /// Token service.
    pub oauth: Arc<OAuth>,
    /// Checkpoint signer.
    pub signer: Arc<NoteSigner>,
    /// The audit log's origin (checkpoint first line, verifier key name).
    pub origin: String,
    /// Accounts and authentication.
    pub identity: Arc<mamori_identity::service::Identity>,
    /// The one clock every service of this node reads (records, enforcement, use cases).
    pub clock: Arc<dyn Clock>,
    /// Clock-sync status, refreshed in the background.
    pub clock_status: Arc<std::sync::Mutex<crate::clock_sync::ClockStatus>>,
    /// The enforcement point's policies and class rules.
    pub enforcer: Arc<Enforcer>,
    /// The key change requests are sealed with (the two-person rule), derived from the master key.
    pub(crate) request_key: [u8; 32],
    /// The TLS certificate chain this node serves (`serve --tls-cert`): recorded through the
    /// configuration path at every integrity check, so a swapped or renewed certificate is a
    /// difference from the baseline (`crate::baseline`).
    pub tls_cert: Option<PathBuf>,
    /// `serve --read-only`: this node stays in emergency read-only mode whatever is stored
    /// (`crate::emergency`).
    pub read_only_pinned: bool,
}

#[cfg(unix)]
fn private_dir(p: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700))
}

#[cfg(not(unix))]
fn private_dir(_: &Path) -> std::io::Result<()> {
    Ok(())
}

/// Creates a directory (and its parents) readable by the service account only.
pub(crate) fn create_private_dir(p: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(p)?;
    private_dir(p)
}

pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    let mut f = o.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Creates what is missing in `dir`: the directory (0700), `mamori.toml`, and the node keys.
pub fn init(dir: &Path) -> Result<(), NodeError> {
    std::fs::create_dir_all(dir).map_err(NodeError::io("create", dir))?;
    private_dir(dir).map_err(NodeError::io("restrict", dir))?;
    let cfg = dir.join("mamori.toml");
    if !cfg.exists() {
        std::fs::write(&cfg, config::DEFAULT_CONFIG).map_err(NodeError::io("write", &cfg))?;
    }
    let keys = dir.join("keys");
    std::fs::create_dir_all(&keys).map_err(NodeError::io("create", &keys))?;
    private_dir(&keys).map_err(NodeError::io("restrict", &keys))?;
    // The Ed25519 signing seed (audit checkpoints, ID tokens) and the master key for encryption
    // at rest; generated once, readable by the service account only.
    for name in ["signing-ed25519.seed", "master.key"] {
        let p = keys.join(name);
        if !p.exists() {
            let mut seed = [0u8; 32];
            getrandom::fill(&mut seed).map_err(|e| NodeError::Keys(format!("no randomness for `{name}`: {e}")))?;
            write_private(&p, hex::encode(seed).as_bytes()).map_err(NodeError::io("write", &p))?;
        }
    }
    Ok(())
}

/// Initialises if needed and opens a data directory on the store its configuration names
/// (`[store] database`; the embedded store when absent).
pub fn open_node(dir: &Path) -> Result<Node, NodeError> {
    open_node_on(dir, None)
}

/// Initialises if needed and opens a data directory; `database` (a `postgres://` URL, from
/// `--database`) overrides the configuration's store.
pub fn open_node_on(dir: &Path, database: Option<&str>) -> Result<Node, NodeError> {
    init(dir)?;
    // Read once: the settings recorded below are exactly the ones this node runs with.
    let path = dir.join("mamori.toml");
    let text = std::fs::read_to_string(&path).map_err(NodeError::io("read", &path))?;
    let config = config::parse(&text).map_err(|message| NodeError::Config { path: path.clone(), message })?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store = backend::open(dir, database.or(config.database.as_deref()), clock.clone())?;
    let master = load_master_key(dir)?;
    let (signer, origin) = load_signer(dir)?;
    // A restore into this store began and did not finish: it is a copy of nothing (#27).
    if store.restore_incomplete().map_err(NodeError::store("cannot read the store's flags"))? {
        return Err(NodeError::Stored(
            "a backup restore into this store did not finish: it is not a copy of anything; remove it and restore again".into(),
        ));
    }
    check_node_keys(&*store, &master, &signer)?;
    // Every configuration version is sealed under a key derived from the master key, and only
    // sealed versions are served (#25): a row written with sqlite3 or psql is never in force.
    let request_key = derived_key(b"mamori change request key\0", &master);
    let sealed =
        store.seal_config(config_seal_key(&master)).map_err(NodeError::store("cannot seal the configuration"))?;
    if sealed > 0 {
        tracing::info!(versions = sealed, "configuration versions sealed for the first time (trust on first use)");
    }
    // High-risk settings (retention, the password/second-factor rule, audit, integrity) take
    // effect only once two people approved them in a baseline: until then the approved ones stay
    // in force (the file's are recorded, shown as drift, and alerted).
    let (config, held) = hold_settings(&*store, &signer, &text, config)?;
    let enforcer = Arc::new(Enforcer::new(load_policies(&*store)?, load_class_rules(&*store)?, clock.clone()));
    let records = Arc::new(
        Records::new(store.clone(), store.clone(), clock.clone(), config.retention.clone())
            .with_labeler(Arc::new(ClassLabeler(enforcer.clone()))),
    );
    let reindexed = records.ensure_search_index().map_err(|e| match e {
        mamori_records::RecordError::Store(s) => {
            NodeError::Store { what: "cannot build the search index".into(), source: mamori_store_sql::Error::Store(s) }
        }
        other => NodeError::Stored(format!("cannot build the search index: {other}")),
    })?;
    if reindexed > 0 {
        tracing::info!(resources = reindexed, "search index rebuilt for the current index format");
    }
    let recorded = record_settings(&*store, &path, &text, &*clock)?;
    // Alerted once per new content of the file (every command opens the node).
    if recorded && !held.is_empty() {
        tracing::warn!(settings = %held.join(", "), "mamori.toml changes high-risk settings the approved baseline does not hold: the approved values stay in force until a new baseline is approved");
        let mut alert = mamori_audit::AuditRecord::new(
            "alert-settings-held",
            mamori_audit::AuditActor::from_tag("system:mamori.toml"),
            mamori_audit::Outcome::Failure,
            "HOPERAT",
        );
        alert.detail = Some(format!(
            "mamori.toml changes {} from the approved baseline; the approved values stay in force until a new baseline is approved by two people (mamori baseline approve)",
            held.join(", ")
        ));
        store.append(vec![alert]).map_err(|e| NodeError::Stored(format!("cannot record held settings: {e}")))?;
    }
    let oauth = Arc::new(OAuth::new(store.clone()).with_sealer(Arc::new(MasterKeySealer(master))));
    // The `[identity]` rules of mamori.toml reach the service (A4–A6); they were validated and
    // then ignored before (issue #22).
    let identity =
        Arc::new(mamori_identity::service::Identity::new(store.clone(), store.clone(), master).with_policies(
            config.password.clone(),
            config.lockout.clone(),
            config.session.clone(),
        ));
    let clock_status = Arc::new(std::sync::Mutex::new(crate::clock_sync::ClockStatus {
        source: "unknown",
        synchronized: None,
        offset_ms: None,
    }));
    let node = Node {
        dir: dir.to_path_buf(),
        config,
        store,
        records,
        oauth,
        signer: Arc::new(signer),
        origin,
        identity,
        clock,
        clock_status,
        enforcer,
        request_key,
        tls_cert: None,
        read_only_pinned: false,
    };
    if crate::emergency::apply(&node).map_err(|e| NodeError::Stored(format!("cannot read the emergency mode: {e}")))? {
        tracing::warn!("emergency read-only mode is on: record writes are refused");
    }
    crate::maintenance::install(&node)
        .map_err(|e| NodeError::Stored(format!("cannot read the maintenance windows: {e}")))?;
    Ok(node)
}

/// The key configuration versions are sealed with: derived from the master key, so every node
/// on one store seals alike and someone with only database access cannot seal a row.
fn config_seal_key(master: &[u8; 32]) -> [u8; 32] {
    derived_key(b"mamori configuration seal key\0", master)
}

/// A key for one purpose, derived from the master key: SHA-256 of the purpose's label and it.
fn derived_key(label: &[u8], master: &[u8; 32]) -> [u8; 32] {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(label);
    h.update(master);
    h.finalize().into()
}

/// The configuration kind and key under which `mamori.toml`'s settings are versioned.
pub const SETTINGS: (&str, &str) = ("settings", "mamori.toml");

/// Versions the settings of `mamori.toml` through the configuration path (#23 item 4): the
/// file is the operator's way to set retention, the identity rules (password, lockout,
/// sessions) and the audit witness, but a file edit is neither versioned nor audited. So each
/// start records the settings it read — as JSON, with `[store] database` reduced to whether it is
/// set (its URL may hold a password) — whenever they differ from the version recorded last, as
/// `system:mamori.toml`, audited like any configuration change. What a node runs with is then in
/// the trail, and drift detection (#25) has a version to compare with. Returns whether it recorded a
/// new version.
fn record_settings(store: &dyn Backend, path: &Path, text: &str, clock: &dyn Clock) -> Result<bool, NodeError> {
    let mut settings: serde_json::Value =
        toml::from_str(text).map_err(|e| NodeError::Config { path: path.to_path_buf(), message: e.to_string() })?;
    if let Some(db) = settings.pointer_mut("/store/database") {
        *db = serde_json::Value::Bool(true);
    }
    let (kind, key) = SETTINGS;
    for _ in 0..3 {
        let last = store.config_get(kind, key).map_err(NodeError::store("cannot read the recorded settings"))?;
        if last.as_ref().and_then(|e| e.value.as_ref()) == Some(&settings) {
            return Ok(false);
        }
        let change = mamori_store_sql::ConfigChange {
            kind,
            key,
            value: Some(settings.clone()),
            changed_by: "system:mamori.toml",
            reason: "mamori.toml as read at start (retention, identity rules, audit witness)",
            expected_version: last.map(|e| e.version),
            now_micros: clock.now().0,
        };
        match store.change_config(&change) {
            Ok(_) => return Ok(true),
            // Another node recorded the same file at the same moment: look again.
            Err(e) if e.is_stale() => continue,
            Err(e) => return Err(NodeError::store(format!("cannot record the settings of `{}`", path.display()))(e)),
        }
    }
    Err(NodeError::Stored(format!("cannot record the settings of `{}`: changed concurrently", path.display())))
}

/// The settings whose change is high-risk (the two-person rule): JSON Pointers into
/// `mamori.toml` read as JSON.
pub const HELD_SETTINGS: [&str; 5] = ["/retention", "/identity/password_mode", "/audit", "/integrity", "/backup"];

/// `config` as read from `text`, with every [`HELD_SETTINGS`] entry that differs from the approved
/// baseline's put back to the approved value; and the entries put back. Without a verified
/// baseline, the file as it is.
fn hold_settings(
    store: &dyn Backend,
    signer: &NoteSigner,
    text: &str,
    config: Config,
) -> Result<(Config, Vec<String>), NodeError> {
    let Some(approved) = crate::baseline::approved_settings(store, signer) else { return Ok((config, Vec::new())) };
    let Ok(mut file) = toml::from_str::<serde_json::Value>(text) else { return Ok((config, Vec::new())) };
    let mut held = Vec::new();
    for p in HELD_SETTINGS {
        let want = approved.pointer(p).cloned();
        if file.pointer(p).cloned() == want {
            continue;
        }
        held.push(p.trim_start_matches('/').replace('/', "."));
        let (parent, key) = p.rsplit_once('/').unwrap_or(("", p));
        let key = key.to_string();
        let target = if parent.is_empty() {
            Some(&mut file)
        } else {
            if file.pointer(parent).is_none()
                && let Some(o) = file.as_object_mut()
            {
                o.insert(parent.trim_start_matches('/').to_string(), serde_json::json!({}));
            }
            file.pointer_mut(parent)
        };
        if let Some(o) = target.and_then(serde_json::Value::as_object_mut) {
            match want {
                Some(v) => {
                    o.insert(key, v);
                }
                None => {
                    o.remove(&key);
                }
            }
        }
    }
    if held.is_empty() {
        return Ok((config, held));
    }
    let effective =
        toml::to_string(&to_toml(&file)).map_err(|e| NodeError::Stored(format!("cannot hold settings: {e}")))?;
    let config = config::parse(&effective).map_err(|e| NodeError::Stored(format!("cannot hold settings: {e}")))?;
    Ok((config, held))
}

/// Settings read as JSON, back as TOML (numbers by value: the JSON ones are arbitrary-precision).
fn to_toml(v: &serde_json::Value) -> toml::Value {
    use serde_json::Value as J;
    match v {
        J::Bool(b) => toml::Value::Boolean(*b),
        J::Number(n) => match n.as_i64() {
            Some(i) => toml::Value::Integer(i),
            None => toml::Value::Float(n.as_f64().unwrap_or_default()),
        },
        J::String(s) => toml::Value::String(s.clone()),
        J::Array(a) => toml::Value::Array(a.iter().map(to_toml).collect()),
        J::Object(o) => {
            toml::Value::Table(o.iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k.clone(), to_toml(v))).collect())
        }
        J::Null => toml::Value::String(String::new()),
    }
}

/// The settings key under which a node's TLS certificate is recorded: per host, since nodes on
/// one store may serve certificates of their own.
pub fn tls_key() -> String {
    let host = std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_string()).unwrap_or_default();
    format!("tls-certificate@{}", if host.is_empty() { "localhost" } else { host.as_str() })
}

/// Records the TLS certificate chain at `path` (SHA-256 of the file, of the leaf certificate's
/// DER — its usual fingerprint — and the number of certificates) as a version of the settings
/// through the configuration path, when it differs from the one recorded.
pub fn record_tls(node: &Node, path: &Path) -> Result<(), NodeError> {
    use base64::Engine;
    use sha2::Digest;
    let pem = std::fs::read(path).map_err(NodeError::io("read", path))?;
    let text = String::from_utf8_lossy(&pem);
    let blocks: Vec<&str> = text
        .split("-----BEGIN CERTIFICATE-----")
        .skip(1)
        .filter_map(|b| b.split("-----END CERTIFICATE-----").next())
        .collect();
    let leaf = blocks.first().and_then(|b| {
        let b64: String = b.chars().filter(|c| !c.is_whitespace()).collect();
        base64::engine::general_purpose::STANDARD.decode(b64).ok()
    });
    let value = serde_json::json!({
        "path": path.display().to_string(),
        "chain_sha256": hex::encode(sha2::Sha256::digest(&pem)),
        "leaf_sha256": leaf.map(|d| hex::encode(sha2::Sha256::digest(d))),
        "certificates": blocks.len(),
    });
    let key = tls_key();
    let last =
        node.store.config_get(SETTINGS.0, &key).map_err(NodeError::store("cannot read the recorded certificate"))?;
    if last.as_ref().and_then(|e| e.value.as_ref()) == Some(&value) {
        return Ok(());
    }
    let change = mamori_store_sql::ConfigChange {
        kind: SETTINGS.0,
        key: &key,
        value: Some(value),
        changed_by: "system:tls",
        reason: "the TLS certificate this node serves",
        expected_version: last.map(|e| e.version),
        now_micros: node.clock.now().0,
    };
    match node.store.change_config(&change) {
        Ok(_) => Ok(()),
        Err(e) if e.is_stale() => Ok(()),
        Err(e) => Err(NodeError::store("cannot record the TLS certificate")(e)),
    }
}

/// Every node on one store must hold the same keys: the master key (it opens the sealed
/// authenticator secrets and ID-token keys every node reads) and the checkpoint signing key (one
/// log, one origin). The first node records their fingerprints; a node with other keys refuses
/// to start rather than write what the others cannot read or sign a second history.
fn check_node_keys(store: &dyn Backend, master: &[u8; 32], signer: &NoteSigner) -> Result<(), NodeError> {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(b"mamori master key fingerprint\0");
    h.update(master);
    let fingerprint = hex::encode(h.finalize());
    let vkey = signer.verifier_key();
    for (name, mine, what) in [
        ("master_key_sha256", fingerprint.as_str(), "keys/master.key"),
        ("checkpoint_verifier_key", vkey.as_str(), "keys/signing-ed25519.seed"),
    ] {
        let shared =
            store.shared_flag(name, mine).map_err(NodeError::store(format!("cannot read the store's `{name}`")))?;
        if shared != mine {
            return Err(NodeError::Keys(format!(
                "this node's `{what}` differs from the one the store {} was set up with; \
                 copy the keys directory of the first node to every node (docs/DEPLOYMENT.md)",
                store.describe()
            )));
        }
    }
    Ok(())
}

/// Seals ID-token signing keys with the data directory's master key (ChaCha20-Poly1305, the key
/// id bound as associated data), as authenticator secrets are.
struct MasterKeySealer([u8; 32]);

impl mamori_oauth::Sealer for MasterKeySealer {
    fn seal(&self, aad: &str, plain: &[u8]) -> Result<String, mamori_oauth::StoreError> {
        mamori_identity::secret::seal(&self.0, aad, plain).map_err(|e| mamori_oauth::StoreError::Failed(e.to_string()))
    }

    fn open(&self, aad: &str, sealed: &str) -> Result<Vec<u8>, mamori_oauth::StoreError> {
        mamori_identity::secret::open(&self.0, aad, sealed).map_err(|e| mamori_oauth::StoreError::Failed(e.to_string()))
    }
}

/// The master key (encryption at rest of authenticator secrets) from `keys/master.key`.
pub fn load_master_key(dir: &Path) -> Result<[u8; 32], NodeError> {
    let p = dir.join("keys").join("master.key");
    let text = std::fs::read_to_string(&p).map_err(NodeError::io("read", &p))?;
    hex::decode(text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| NodeError::Keys(format!("`{}` is not a 32-byte hex key", p.display())))
}

/// The checkpoint signer from `keys/signing-ed25519.seed`; the origin is derived from its public
/// key so that two installations never share one.
pub fn load_signer(dir: &Path) -> Result<(NoteSigner, String), NodeError> {
    let p = dir.join("keys").join("signing-ed25519.seed");
    let text = std::fs::read_to_string(&p).map_err(NodeError::io("read", &p))?;
    let seed: [u8; 32] = hex::decode(text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| NodeError::Keys(format!("`{}` is not a 32-byte hex seed", p.display())))?;
    let bad = |e: mamori_audit::Error| NodeError::Keys(format!("`{}`: {e}", p.display()));
    let probe = NoteSigner::new("mamori", &seed).map_err(bad)?;
    let vkey = probe.verifier_key();
    let id = vkey.split('+').nth(1).unwrap_or("0");
    let origin = format!("mamori.local/audit/{id}");
    let signer = NoteSigner::new(&origin, &seed).map_err(bad)?;
    Ok((signer, origin))
}

impl Node {
    /// Integrates new audit entries and signs a checkpoint if the log grew; publishes it to the
    /// witness directory when one is configured.
    pub fn integrate_audit(&self) -> Result<Option<String>, NodeError> {
        let note = self
            .store
            .integrate(&self.signer, &self.origin)
            .map_err(|e| NodeError::Stored(format!("cannot integrate the audit trail: {e}")))?;
        if let Some(n) = &note {
            keep_local_witness(&self.dir, n).map_err(NodeError::io("write", &self.dir.join(LOCAL_WITNESS)))?;
        }
        if let (Some(n), Some(w)) = (&note, &self.config.witness_dir) {
            publish(w, n).map_err(NodeError::io("publish the checkpoint to", w))?;
        }
        Ok(note)
    }

    /// Starts clock-sync monitoring for `/healthz` (the CLI does not need it).
    pub fn monitor_clock(&mut self) {
        self.clock_status = crate::clock_sync::monitor();
    }

    /// Runs [`Node::integrate_audit`] every 250 ms on a background thread, so that a checkpoint
    /// follows any growth within a second.
    pub fn spawn_integrator(self: &Arc<Self>) -> std::thread::JoinHandle<()> {
        let node = self.clone();
        std::thread::spawn(move || {
            loop {
                if let Err(e) = node.integrate_audit() {
                    tracing::error!(error = %e, "audit integration failed; will retry");
                }
                std::thread::sleep(std::time::Duration::from_millis(250));
            }
        })
    }

    /// Reloads the access policies and class rules when the configuration changed (in this
    /// process or another: the CLI, another node). Returns whether anything was reloaded.
    pub fn refresh_policy(&self, seen: &mut u64) -> Result<bool, NodeError> {
        let generation =
            self.store.config_generation().map_err(NodeError::store("cannot read the configuration generation"))?;
        if generation == *seen {
            return Ok(false);
        }
        self.enforcer.set_engine(load_policies(&*self.store)?);
        self.enforcer.set_rules(load_class_rules(&*self.store)?);
        crate::emergency::apply(self).map_err(|e| NodeError::Stored(format!("cannot read the emergency mode: {e}")))?;
        *seen = generation;
        Ok(true)
    }

    /// Runs [`Node::refresh_policy`] every second on a background thread, so a policy or rule
    /// change applied with the CLI takes effect on a running server within about a second.
    pub fn spawn_policy_watcher(self: &Arc<Self>) -> std::thread::JoinHandle<()> {
        let node = self.clone();
        std::thread::spawn(move || {
            let mut seen = node.store.config_generation().unwrap_or(0);
            loop {
                std::thread::sleep(std::time::Duration::from_secs(1));
                match node.refresh_policy(&mut seen) {
                    Ok(true) => tracing::debug!("configuration changed; access policies and class rules reloaded"),
                    Ok(false) => {}
                    Err(e) => tracing::error!(error = %e, "policy reload failed; the previous policies stay in force"),
                }
                // Maintenance windows are workflow state (not counted by the generation): read
                // every second, so a window approved or closed on another node applies here too.
                if let Err(e) = crate::maintenance::tick(&node) {
                    tracing::error!(error = %e, "maintenance windows could not be read; the previous ones stay in force");
                }
            }
        })
    }
}

/// Where each node keeps the latest checkpoint it signed, outside the database (issue #22):
/// `mamori audit verify` reads it, so cutting the newest entries off the store is detected even
/// without an external witness. It is in the data directory, so it is in every backup; it does
/// not protect against someone who can also write the data directory — that is what the
/// external witness (`[audit] witness_dir`, another machine) is for.
pub const LOCAL_WITNESS: &str = "audit-witness/checkpoint";

/// Replaces the local witness checkpoint (written, synced, renamed: never half a note).
fn keep_local_witness(dir: &Path, note: &str) -> std::io::Result<()> {
    use std::io::Write;
    let path = dir.join(LOCAL_WITNESS);
    let parent = path.parent().unwrap_or(dir);
    std::fs::create_dir_all(parent)?;
    let tmp = parent.join("checkpoint.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(note.as_bytes())?;
    f.sync_data()?;
    std::fs::rename(&tmp, &path)
}

/// Appends a checkpoint to `checkpoints.log` in the witness directory and replaces `checkpoint`.
fn publish(dir: &Path, note: &str) -> std::io::Result<()> {
    use std::io::Write;
    std::fs::create_dir_all(dir)?;
    let mut log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("checkpoints.log"))?;
    log.write_all(note.as_bytes())?;
    log.write_all(b"\n")?;
    log.sync_data()?;
    let tmp = dir.join("checkpoint.tmp");
    std::fs::write(&tmp, note)?;
    std::fs::rename(&tmp, dir.join("checkpoint"))
}

/// The active access policies: the latest `policies/active` configuration, else the shipped
/// ones. Stored policies were validated when set; they are validated again here.
pub fn load_policies(store: &dyn Backend) -> Result<PolicyEngine, NodeError> {
    match store
        .config_get(crate::registry::ConfigKind::Policies.name(), "active")
        .map_err(NodeError::store("cannot read the access policies"))?
        .and_then(|e| e.value)
    {
        Some(v) => {
            let text = v
                .get("text")
                .and_then(serde_json::Value::as_str)
                .ok_or_else(|| NodeError::Stored("stored policies have no `text`".into()))?;
            PolicyEngine::new(text).map_err(|e| NodeError::Stored(format!("stored policies: {e}")))
        }
        None => PolicyEngine::default_policies().map_err(|e| NodeError::Stored(format!("shipped policies: {e}"))),
    }
}

/// The active labelling rules: the latest `class-rules/active` configuration, else the defaults.
pub fn load_class_rules(store: &dyn Backend) -> Result<mamori_authz::Rules, NodeError> {
    match store
        .config_get(crate::registry::ConfigKind::ClassRules.name(), "active")
        .map_err(NodeError::store("cannot read the class rules"))?
        .and_then(|e| e.value)
    {
        Some(v) => {
            let r: mamori_authz::Rules =
                serde_json::from_value(v).map_err(|e| NodeError::Stored(format!("stored class rules: {e}")))?;
            r.validate().map_err(|e| NodeError::Stored(format!("stored class rules: {e}")))?;
            Ok(r)
        }
        None => Ok(mamori_authz::default_rules()),
    }
}
