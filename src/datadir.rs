//! The data directory: created and initialised on first use (config, keys, schema), then opened
//! into a running [`Node`] — the store, the services and the router state.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use mamori_http::{AppState, Health, HttpConfig};
use mamori_oauth::OAuth;
use mamori_records::{Records, SystemClock};
use mamori_store_sqlite::SqliteStore;

use crate::config::{self, Config};

/// An opened data directory.
pub struct Node {
    /// Where it lives.
    pub dir: PathBuf,
    /// Validated configuration.
    pub config: Config,
    /// The embedded store.
    pub store: Arc<SqliteStore>,
    /// Record service.
    pub records: Arc<Records>,
    /// Token service.
    pub oauth: Arc<OAuth>,
}

struct StoreHealth(Arc<SqliteStore>);

impl Health for StoreHealth {
    fn ready(&self) -> Result<(), String> {
        self.0.ping().map_err(|e| e.to_string())
    }
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

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
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
pub fn init(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create `{}`: {e}", dir.display()))?;
    private_dir(dir).map_err(|e| format!("cannot restrict `{}`: {e}", dir.display()))?;
    let cfg = dir.join("mamori.toml");
    if !cfg.exists() {
        std::fs::write(&cfg, config::DEFAULT_CONFIG).map_err(|e| format!("cannot write `{}`: {e}", cfg.display()))?;
    }
    let keys = dir.join("keys");
    std::fs::create_dir_all(&keys).map_err(|e| format!("cannot create `{}`: {e}", keys.display()))?;
    private_dir(&keys).map_err(|e| format!("cannot restrict `{}`: {e}", keys.display()))?;
    // The Ed25519 signing seed (audit checkpoints, ID tokens) and the master key for encryption
    // at rest; generated once, readable by the service account only.
    for name in ["signing-ed25519.seed", "master.key"] {
        let p = keys.join(name);
        if !p.exists() {
            let mut seed = [0u8; 32];
            getrandom::fill(&mut seed).map_err(|e| format!("random: {e}"))?;
            write_private(&p, hex::encode(seed).as_bytes())
                .map_err(|e| format!("cannot write `{}`: {e}", p.display()))?;
        }
    }
    Ok(())
}

/// Initialises if needed and opens a data directory.
pub fn open_node(dir: &Path) -> Result<Node, String> {
    init(dir)?;
    let config = config::load(&dir.join("mamori.toml"))?;
    let store =
        Arc::new(SqliteStore::open(dir).map_err(|e| format!("cannot open the store in `{}`: {e}", dir.display()))?);
    let records = Arc::new(Records::new(store.clone(), Arc::new(SystemClock), config.retention.clone()));
    let oauth = Arc::new(OAuth::new(store.clone()));
    Ok(Node { dir: dir.to_path_buf(), config, store, records, oauth })
}

impl Node {
    /// Router state for this node.
    pub fn app_state(&self, public_url: &str) -> AppState {
        AppState {
            records: self.records.clone(),
            oauth: self.oauth.clone(),
            health: Arc::new(StoreHealth(self.store.clone())),
            config: Arc::new(HttpConfig {
                max_body_bytes: self.config.max_body_bytes,
                public_url: self.config.public_url.clone().unwrap_or_else(|| public_url.to_string()),
                version: env!("CARGO_PKG_VERSION").to_string(),
            }),
            started: mamori_records::Clock::now(&SystemClock).to_fhir(),
        }
    }
}
