//! `mamori.toml` in the data directory: read raw, validated once into [`Config`].

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::Deserialize;

/// The file written on first start.
pub const DEFAULT_CONFIG: &str = r#"# Mamori configuration (設定). Changes take effect at the next start.

[server]
# Largest request body accepted, in bytes; larger requests get 413.
max_body_bytes = 16777216
# Browser origins that may call the API (CORS) besides those of registered applications'
# redirect URIs, e.g. ["https://app.example"]. Scheme, host and port only; no wildcard.
# cors_origins = []
# Reverse proxies (CIDRs) in front of this server. From these peers only, the client's address
# is taken from `Forwarded` / `X-Forwarded-For` for the audit trail and address limits; from
# any other peer those headers are ignored. E.g. ["10.0.0.5/32"].
# trusted_proxies = []
# Besides loopback, networks (CIDRs) that may scrape /metrics (Prometheus), e.g. ["10.0.9.0/24"].
# metrics_from = []

[retention]
# 保存期間: years a record is kept after its last version before it may be purged.
# 診療録 must be kept 5 years (医師法 第24条); nothing is purgeable sooner unless listed here.
default_years = 5

[retention.types]
# Per resource type, e.g.:
# Observation = 10

[identity]
# Password rule (MHLW Q&A): "long" (13+), "rotate" (8+, changed every max_age_days),
# or "second-factor" (8+ with a second factor enrolled, else 13+).
password_mode = "second-factor"
password_max_age_days = 60
password_history = 5
# Lockout: failures before the account locks, and for how long (seconds).
lockout_threshold = 10
lockout_secs = 1800
# Sessions: idle auto-lock and absolute lifetime (seconds).
session_idle_secs = 900
session_absolute_secs = 43200

[store]
# The store this node uses. Absent: the embedded store (SQLite) in this data directory. For
# several nodes on one PostgreSQL database (docs/DEPLOYMENT.md), a postgres:// URL; the
# `--database` option and MAMORI_DATABASE override it. Prefer a password file (~/.pgpass) to a
# password in this URL.
# database = "postgres://mamori@db.example.local:5432/mamori"

[audit]
# A directory outside the data directory (ideally another machine or write-once storage) where
# every signed checkpoint is also written, so that rewriting history would be caught.
# witness_dir = "/mnt/witness/mamori"

[backup]
# Where `mamori backup create` writes generations (another disk; copy them on to storage the
# server cannot erase — docs/BACKUP.md), and the age public keys (age1…) they are encrypted to.
# Make a key pair with `mamori backup keygen --out FILE` and keep FILE offline: the server never
# holds what decrypts its backups.
# repository = "/var/backups/mamori"
# recipients = ["age1…"]
# `mamori serve` takes a generation when the newest is this many hours old, then prunes (or run
# `mamori backup create` and `mamori backup prune` from the system scheduler instead).
# every_hours = 24
# Which generations pruning keeps: the newest keep_last (at least 5), and the newest of each of
# the last keep_daily days, keep_weekly weeks, keep_monthly months.
# keep_last = 5
# keep_daily = 7
# keep_weekly = 5
# keep_monthly = 12
# A restore drill (`mamori backup drill`, run where the backup identity is) is due this many days
# after the last one; an overdue or failed drill is an alert.
# drill_days = 30
# The vault (B1): a copy the server can add to but never delete or overwrite — `mamori backup
# vault serve`, run as another user on another host (docs/BACKUP.md). Every new generation is
# sent there; a failed send is an alert and is retried by the schedule.
# vault = "https://vault.example.jp:8443"
# vault_token_file = "/etc/mamori/vault-token"
# vault_ca = "/etc/mamori/vault-ca.pem"

[maintenance]
# Remote maintenance by vendors (docs/REMOTE-MAINTENANCE.md): the longest window that may be
# requested (hours, 1–168), how many different people of the institution must approve a window
# (1 or 2; never the requester), and the days after a window ends within which the vendor's
# work report is due (1–90; a report not filed by then is an alert).
# max_hours = 8
# approvers = 1
# report_days = 7

[integrity]
# How often (seconds, 1–3600) the whole configuration — every entry of the configuration
# registry and the files mamori.toml and keys/* — is re-hashed and compared with the approved
# baseline (`mamori baseline approve`); a difference is an `alert-config-drift` audit entry.
# The same check runs at every start, before serving.
# rehash_secs = 3
# Hours a high-risk change waits for a second person's approval before it expires (1–720). The
# two-person rule: policies, class rules, the baseline, administrative rights, applications with
# system/ scopes are changed only when someone other than the requester approves them
# (`mamori approvals`, or the console's approvals inbox).
# approval_hours = 72
# Every alert (`alert-*` audit entry: configuration changed around the path, drift, external
# settings drift, a failed audit check…) is also sent as an RFC 5424 message over TLS (RFC 5425)
# to this syslog collector, with the CA file that signs its certificate and the name it carries
# (default: the host part). Delivery resumes where it stopped (`alerts.cursor` in the data
# directory).
# alert_syslog = "siem.example.local:6514"
# alert_syslog_ca = "/etc/mamori/siem-ca.pem"
# alert_syslog_name = "siem.example.local"

[integrity.response]
# What happens when a configuration entry is changed around the configuration path (a row
# written with sqlite3 or psql: it carries no valid seal and is never served) or a guard trigger
# is dropped: "alert" (audit entry, log line, dashboard, metric), "revert" (the last sealed value
# is written back through the configuration path; after 5 failed tries, alert and block) or
# "block" (fail closed until someone reverts or accepts it: `mamori baseline revert|accept`).
# Every response also alerts. docs/CONFIG-INTEGRITY.md
# policies = "block"        # all clinical access stops
# class-rules = "block"     # all clinical access stops
# client = "block"          # that application is refused
# account = "block"         # that account is refused
# signing-key = "revert"
# settings = "revert"
# baseline = "revert"
# external-settings = "revert"
# emergency-mode = "revert"
# schema = "revert"         # the guard triggers are put back
"#;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    retention: RawRetention,
    #[serde(default)]
    audit: RawAudit,
    #[serde(default)]
    identity: RawIdentity,
    #[serde(default)]
    store: RawStore,
    #[serde(default)]
    integrity: RawIntegrity,
    #[serde(default)]
    backup: RawBackup,
    #[serde(default)]
    maintenance: RawMaintenance,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawMaintenance {
    max_hours: Option<u32>,
    approvers: Option<u8>,
    report_days: Option<u32>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawBackup {
    repository: Option<std::path::PathBuf>,
    #[serde(default)]
    recipients: Vec<String>,
    keep_last: Option<usize>,
    keep_daily: Option<usize>,
    keep_weekly: Option<usize>,
    keep_monthly: Option<usize>,
    every_hours: Option<u32>,
    drill_days: Option<u32>,
    vault: Option<String>,
    vault_token_file: Option<std::path::PathBuf>,
    vault_ca: Option<std::path::PathBuf>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawIntegrity {
    rehash_secs: Option<u64>,
    approval_hours: Option<u32>,
    alert_syslog: Option<String>,
    alert_syslog_ca: Option<std::path::PathBuf>,
    alert_syslog_name: Option<String>,
    #[serde(default)]
    response: BTreeMap<String, Response>,
}

/// What the configuration integrity check does about a change made around the configuration
/// path (`[integrity.response]`, #25).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Response {
    /// Audit entry, log line, dashboard alert, metric.
    Alert,
    /// Alert, and write the last sealed value back through the configuration path.
    Revert,
    /// Alert, and stop the affected function until someone reverts or accepts.
    Block,
}

/// The items `[integrity.response]` names, with their defaults.
pub const RESPONSE_DEFAULTS: [(&str, Response); 10] = [
    ("policies", Response::Block),
    ("class-rules", Response::Block),
    ("client", Response::Block),
    ("account", Response::Block),
    ("signing-key", Response::Revert),
    ("settings", Response::Revert),
    ("baseline", Response::Revert),
    ("external-settings", Response::Revert),
    ("emergency-mode", Response::Revert),
    ("schema", Response::Revert),
];

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawStore {
    database: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawIdentity {
    password_mode: Option<mamori_identity::password::Mode>,
    password_max_age_days: Option<u32>,
    password_history: Option<usize>,
    lockout_threshold: Option<u32>,
    lockout_secs: Option<i64>,
    session_idle_secs: Option<i64>,
    session_absolute_secs: Option<i64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAudit {
    witness_dir: Option<std::path::PathBuf>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawServer {
    max_body_bytes: Option<u64>,
    public_url: Option<String>,
    #[serde(default)]
    cors_origins: Vec<String>,
    #[serde(default)]
    trusted_proxies: Vec<String>,
    #[serde(default)]
    metrics_from: Vec<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRetention {
    default_years: Option<u32>,
    #[serde(default)]
    types: HashMap<String, u32>,
}

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Body limit.
    pub max_body_bytes: usize,
    /// Public base URL, if set in the file.
    pub public_url: Option<String>,
    /// Browser origins allowed to call the API besides those of registered applications'
    /// redirect URIs (`https://app.example`).
    pub cors_origins: Vec<String>,
    /// Reverse proxies (CIDRs) whose forwarding headers name the client.
    pub trusted_proxies: Vec<String>,
    /// Networks (CIDRs) besides loopback that may read `/metrics`.
    pub metrics_from: Vec<String>,
    /// Retention.
    pub retention: mamori_records::RetentionPolicy,
    /// Where checkpoints are also published.
    pub witness_dir: Option<std::path::PathBuf>,
    /// Password rules.
    pub password: mamori_identity::password::Policy,
    /// Lockout rules.
    pub lockout: mamori_identity::lockout::Policy,
    /// Session lifetimes.
    pub session: mamori_identity::session::Policy,
    /// The PostgreSQL database (`[store] database`), if the node does not use the embedded store.
    pub database: Option<String>,
    /// How often the configuration is re-hashed against the baseline (`[integrity] rehash_secs`).
    pub rehash_secs: u64,
    /// The syslog collector every alert is also sent to (`[integrity] alert_syslog`): address
    /// (`host:port`), CA file, certificate name.
    pub alert_syslog: Option<(String, std::path::PathBuf, String)>,
    /// Hours a change request waits for a second person before it expires
    /// (`[integrity] approval_hours`).
    pub approval_hours: u32,
    /// The response to a change made around the configuration path, per kind
    /// (`[integrity.response]`; every name of [`RESPONSE_DEFAULTS`] present).
    pub responses: BTreeMap<String, Response>,
    /// Where backups go (`[backup] repository`).
    pub backup_repository: Option<std::path::PathBuf>,
    /// The age recipients backups are encrypted to (`[backup] recipients`).
    pub backup_recipients: Vec<String>,
    /// Where every new generation is also sent (`[backup] vault`, `vault_token_file`, `vault_ca`).
    pub backup_vault: Option<crate::vault::Target>,
    /// Which generations pruning keeps (`[backup] keep_*`).
    pub backup_retention: crate::backup::Retention,
    /// `mamori serve` takes a generation (then prunes) when the newest is this many hours old
    /// (`[backup] every_hours`; none: the system scheduler runs `mamori backup create`).
    pub backup_every_hours: Option<u32>,
    /// A restore drill is due this many days after the last (`[backup] drill_days`, default 30):
    /// overdue is an alert.
    pub drill_days: u32,
    /// `[maintenance]`: the longest window, the approvers needed, the days a report is due in.
    pub maintenance: crate::maintenance::Settings,
}

/// Reads and validates `mamori.toml`.
pub fn load(path: &Path) -> Result<Config, crate::NodeError> {
    let text = std::fs::read_to_string(path).map_err(|source| crate::NodeError::Io {
        what: "read",
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text).map_err(|message| crate::NodeError::Config { path: path.to_path_buf(), message })
}

/// Parses and validates configuration text.
pub fn parse(text: &str) -> Result<Config, String> {
    let raw: Raw = toml::from_str(text).map_err(|e| e.to_string())?;
    let max = raw.server.max_body_bytes.unwrap_or(16 * 1024 * 1024);
    if !(1024..=1024 * 1024 * 1024).contains(&max) {
        return Err(format!("server.max_body_bytes `{max}` must be between 1 KiB and 1 GiB"));
    }
    let schema = mamori_fhir_schema::r4();
    for t in raw.retention.types.keys() {
        if !schema.is_resource(t) {
            return Err(format!("retention.types: `{t}` is not an R4 resource type"));
        }
    }
    let public_url = raw.server.public_url.map(|u| u.trim_end_matches('/').to_string());
    if let Some(u) = &public_url
        && !(u.starts_with("https://") || u.starts_with("http://"))
    {
        return Err(format!("server.public_url `{u}` must start with https:// or http://"));
    }
    let mut cors_origins = Vec::new();
    for o in &raw.server.cors_origins {
        let authority = o.strip_prefix("https://").or_else(|| o.strip_prefix("http://")).unwrap_or("");
        if authority.is_empty() || authority.contains(['/', '?', '#', '@', '*', ' ']) {
            return Err(format!(
                "server.cors_origins: `{}` is not an origin such as https://app.example (scheme, host and port only; no wildcard)",
                o.chars().take(80).collect::<String>()
            ));
        }
        cors_origins.push(o.to_ascii_lowercase());
    }
    for (name, list) in [("trusted_proxies", &raw.server.trusted_proxies), ("metrics_from", &raw.server.metrics_from)] {
        if let Some(bad) = list.iter().find(|c| !mamori_oauth::valid_cidr(c)) {
            return Err(format!(
                "server.{name}: `{}` is not an address or CIDR block such as 10.0.0.5/32",
                bad.chars().take(60).collect::<String>()
            ));
        }
    }
    let database = raw.store.database.map(|d| d.trim().to_string()).filter(|d| !d.is_empty());
    if let Some(d) = &database
        && !(d.starts_with("postgres://") || d.starts_with("postgresql://"))
    {
        return Err("store.database must be a postgres:// URL (or absent for the embedded store)".into());
    }
    let rehash_secs = raw.integrity.rehash_secs.unwrap_or(3);
    if !(1..=3600).contains(&rehash_secs) {
        return Err(format!("integrity.rehash_secs `{rehash_secs}` must be 1–3600"));
    }
    let alert_syslog = match (raw.integrity.alert_syslog, raw.integrity.alert_syslog_ca) {
        (None, None) => None,
        (Some(addr), Some(ca)) => {
            let host = addr.rsplit_once(':').map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']').to_string());
            let port_ok = addr.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok_and(|p| p > 0));
            if !port_ok || host.as_deref().is_none_or(str::is_empty) {
                return Err(format!("integrity.alert_syslog `{addr}` must be host:port, e.g. siem.example.local:6514"));
            }
            let name = raw.integrity.alert_syslog_name.or(host).unwrap_or_default();
            Some((addr, ca, name))
        }
        (Some(_), None) => {
            return Err(
                "integrity.alert_syslog needs alert_syslog_ca (the CA file that signs the collector's certificate)"
                    .into(),
            );
        }
        (None, Some(_)) => return Err("integrity.alert_syslog_ca is set but alert_syslog is not".into()),
    };
    let approval_hours = raw.integrity.approval_hours.unwrap_or(72);
    if !(1..=720).contains(&approval_hours) {
        return Err(format!("integrity.approval_hours `{approval_hours}` must be 1–720"));
    }
    let mut responses: BTreeMap<String, Response> =
        RESPONSE_DEFAULTS.iter().map(|(k, r)| ((*k).to_string(), *r)).collect();
    for (kind, r) in raw.integrity.response {
        if !responses.contains_key(&kind) {
            let names: Vec<&str> = RESPONSE_DEFAULTS.iter().map(|(k, _)| *k).collect();
            return Err(format!("integrity.response `{kind}` is not one of {}", names.join(", ")));
        }
        responses.insert(kind, r);
    }
    for r in &raw.backup.recipients {
        if <age::x25519::Recipient as std::str::FromStr>::from_str(r.trim()).is_err() {
            return Err(format!(
                "backup.recipients: `{}` is not an age public key (age1…); make one with `mamori backup keygen`",
                r.chars().take(24).collect::<String>()
            ));
        }
    }
    if raw.backup.keep_last.is_some_and(|n| n < 5) {
        return Err("backup.keep_last must be at least 5 (the EHR keeps at least five generations)".into());
    }
    let backup_every_hours = raw.backup.every_hours;
    if backup_every_hours.is_some_and(|h| !(1..=24 * 31).contains(&h)) {
        return Err("backup.every_hours must be 1–744".into());
    }
    if backup_every_hours.is_some() && (raw.backup.repository.is_none() || raw.backup.recipients.is_empty()) {
        return Err("backup.every_hours needs backup.repository and backup.recipients".into());
    }
    let backup_vault = match (raw.backup.vault, raw.backup.vault_token_file) {
        (None, None) if raw.backup.vault_ca.is_none() => None,
        (Some(url), Some(token_file)) => {
            crate::vault::Target::check(&url)?;
            if url.starts_with("https:") && raw.backup.vault_ca.is_none() {
                return Err("backup.vault_ca: the vault's CA certificate (PEM) is needed for https".into());
            }
            Some(crate::vault::Target { url, token_file, ca_file: raw.backup.vault_ca })
        }
        _ => return Err("backup.vault needs backup.vault_token_file (and vault_ca for https)".into()),
    };
    let drill_days = raw.backup.drill_days.unwrap_or(30);
    if !(1..=366).contains(&drill_days) {
        return Err("backup.drill_days must be 1–366".into());
    }
    let m = &raw.maintenance;
    let maintenance = crate::maintenance::Settings {
        max_hours: m.max_hours.unwrap_or(8),
        approvers: m.approvers.unwrap_or(1),
        report_days: m.report_days.unwrap_or(7),
    };
    if !(1..=168).contains(&maintenance.max_hours)
        || !(1..=2).contains(&maintenance.approvers)
        || !(1..=90).contains(&maintenance.report_days)
    {
        return Err("maintenance.max_hours must be 1–168, approvers 1 or 2 and report_days 1–90".into());
    }
    let i = raw.identity;
    let defaults = (
        mamori_identity::password::Policy::default(),
        mamori_identity::lockout::Policy::default(),
        mamori_identity::session::Policy::default(),
    );
    let password = mamori_identity::password::Policy {
        mode: i.password_mode.unwrap_or(defaults.0.mode),
        max_age_days: i.password_max_age_days.unwrap_or(defaults.0.max_age_days),
        history: i.password_history.unwrap_or(defaults.0.history),
    };
    if password.max_age_days == 0 || password.max_age_days > 60 {
        return Err(format!(
            "identity.password_max_age_days `{}` must be 1–60 (the Q&A: at least every two months)",
            password.max_age_days
        ));
    }
    let lockout = mamori_identity::lockout::Policy {
        threshold: i.lockout_threshold.unwrap_or(defaults.1.threshold),
        lock_secs: i.lockout_secs.unwrap_or(defaults.1.lock_secs),
        ..defaults.1
    };
    if !(3..=100).contains(&lockout.threshold) || !(60..=86_400).contains(&lockout.lock_secs) {
        return Err("identity.lockout_threshold must be 3–100 and lockout_secs 60–86400".into());
    }
    let session = mamori_identity::session::Policy {
        idle_secs: i.session_idle_secs.unwrap_or(defaults.2.idle_secs),
        absolute_secs: i.session_absolute_secs.unwrap_or(defaults.2.absolute_secs),
        ..defaults.2
    };
    if !(60..=3600).contains(&session.idle_secs)
        || !(600..=86_400).contains(&session.absolute_secs)
        || session.idle_secs > session.absolute_secs
    {
        return Err("identity.session_idle_secs must be 60–3600 and session_absolute_secs 600–86400 (and not shorter than idle)".into());
    }
    Ok(Config {
        password,
        lockout,
        session,
        max_body_bytes: usize::try_from(max).map_err(|e| e.to_string())?,
        public_url,
        cors_origins,
        trusted_proxies: raw.server.trusted_proxies,
        metrics_from: raw.server.metrics_from,
        retention: mamori_records::RetentionPolicy {
            default_years: raw.retention.default_years.unwrap_or(5),
            per_type: raw.retention.types,
        },
        witness_dir: raw.audit.witness_dir,
        database,
        rehash_secs,
        approval_hours,
        alert_syslog,
        responses,
        backup_retention: crate::backup::Retention {
            last: raw.backup.keep_last.unwrap_or(5),
            daily: raw.backup.keep_daily.unwrap_or(7),
            weekly: raw.backup.keep_weekly.unwrap_or(5),
            monthly: raw.backup.keep_monthly.unwrap_or(12),
        },
        backup_every_hours,
        drill_days,
        maintenance,
        backup_repository: raw.backup.repository,
        backup_vault,
        backup_recipients: raw.backup.recipients,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_file_parses() {
        let c = parse(DEFAULT_CONFIG).unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(c.max_body_bytes, 16 * 1024 * 1024);
        assert_eq!(c.retention.default_years, 5);
    }

    #[test]
    fn mistakes_are_refused() {
        assert!(parse("[server]\nmax_body_bites = 5\n").is_err(), "unknown keys are refused");
        assert!(parse("[store]\ndatabase = \"mysql://db/x\"\n").is_err(), "only postgres:// URLs");
        assert!(parse("[store]\ndatabse = \"postgres://db/x\"\n").is_err());
        let c = parse("[store]\ndatabase = \"postgres://mamori@db/x\"\n").unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(c.database.as_deref(), Some("postgres://mamori@db/x"));
        assert!(parse("[retention.types]\nPatiant = 3\n").is_err());
        assert!(parse("[server]\nmax_body_bytes = 10\n").is_err());
        assert_eq!(
            parse("[server]\ncors_origins = [\"https://App.example:8443\"]\n").unwrap().cors_origins,
            vec!["https://app.example:8443".to_string()]
        );
        for bad in ["*", "https://*.example", "https://app.example/cb", "app.example", "https://"] {
            assert!(parse(&format!("[server]\ncors_origins = [\"{bad}\"]\n")).is_err(), "{bad}");
        }
        assert!(parse("[identity]\npassword_mode = \"short\"\n").is_err());
        assert!(parse("[integrity]\nalert_syslog = \"siem:6514\"\n").is_err(), "a CA is required");
        assert!(parse("[integrity]\nalert_syslog = \"siem\"\nalert_syslog_ca = \"/ca.pem\"\n").is_err());
        let c = parse("[integrity]\nalert_syslog = \"siem.local:6514\"\nalert_syslog_ca = \"/ca.pem\"\n").unwrap();
        assert_eq!(c.alert_syslog.map(|s| s.2), Some("siem.local".to_string()));
        assert!(parse("[identity]\npassword_max_age_days = 90\n").is_err(), "the Q&A requires two months at most");
        assert!(parse("[identity]\nlockout_threshold = 1\n").is_err());
        let c = parse("[identity]\npassword_mode = \"long\"\nlockout_threshold = 5\nsession_idle_secs = 600\n")
            .unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(c.password.mode, mamori_identity::password::Mode::Long);
        assert_eq!((c.lockout.threshold, c.session.idle_secs), (5, 600));
    }
}
