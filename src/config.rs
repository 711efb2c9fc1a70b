//! `mamori.toml` in the data directory: read raw, validated once into [`Config`].

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;

/// The file written on first start.
pub const DEFAULT_CONFIG: &str = r#"# Mamori configuration (設定). Changes take effect at the next start.

[server]
# Largest request body accepted, in bytes; larger requests get 413.
max_body_bytes = 16777216

[retention]
# 保存期間: years a record is kept after its last version before it may be purged.
# 診療録 must be kept 5 years (医師法 第24条); nothing is purgeable sooner unless listed here.
default_years = 5

[retention.types]
# Per resource type, e.g.:
# Observation = 10

[audit]
# A directory outside the data directory (ideally another machine or write-once storage) where
# every signed checkpoint is also written, so that rewriting history would be caught.
# witness_dir = "/mnt/witness/mamori"
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
    /// Retention.
    pub retention: mamori_records::RetentionPolicy,
    /// Where checkpoints are also published.
    pub witness_dir: Option<std::path::PathBuf>,
}

/// Reads and validates `mamori.toml`.
pub fn load(path: &Path) -> Result<Config, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    parse(&text).map_err(|e| format!("`{}`: {e}", path.display()))
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
    if let Some(u) = &public_url {
        if !(u.starts_with("https://") || u.starts_with("http://")) {
            return Err(format!("server.public_url `{u}` must start with https:// or http://"));
        }
    }
    Ok(Config {
        max_body_bytes: usize::try_from(max).map_err(|e| e.to_string())?,
        public_url,
        retention: mamori_records::RetentionPolicy {
            default_years: raw.retention.default_years.unwrap_or(5),
            per_type: raw.retention.types,
        },
        witness_dir: raw.audit.witness_dir,
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
        assert!(parse("[retention.types]\nPatiant = 3\n").is_err());
        assert!(parse("[server]\nmax_body_bytes = 10\n").is_err());
    }
}
