//! The HTTP router's state for an opened node: the services of `mamori-app`'s composition root,
//! handed to `mamori-http`.

use std::sync::Arc;

use mamori_app::Node;
use mamori_app::backend::Backend;
use mamori_http::metrics::Figure;
use mamori_http::{AppState, Health, HttpConfig};

struct StoreHealth {
    store: Arc<dyn Backend>,
    clock: Arc<std::sync::Mutex<mamori_app::clock_sync::ClockStatus>>,
}

impl Health for StoreHealth {
    fn check(&self) -> Result<serde_json::Value, String> {
        let down = |e: mamori_app::backend::Error| format!("store: {e}");
        self.store.ping().map_err(down)?;
        let clock = self.clock.lock().map(|c| c.to_json()).unwrap_or_default();
        let appended = self.store.audit_size().map_err(down)?;
        let integrated = self.store.audit_integrated_size().map_err(down)?;
        // Commits and fsyncs of the store since start: with group commit, fsyncs per request is
        // well under one (scripts/bench.sh reports it).
        let (commits, fsyncs) = self.store.durability_stats();
        Ok(serde_json::json!({
            "clock": clock,
            "store": self.store.kind(),
            "audit": {"entries": appended, "checkpointed": integrated},
            "durability": {"commits": commits, "fsyncs": fsyncs}
        }))
    }

    fn ready(&self) -> Result<(), String> {
        self.store.ready()
    }

    fn figures(&self) -> Vec<Figure> {
        let mut out = Vec::new();
        let mut add = |name, help, kind, value: f64| out.push(Figure::plain(name, help, kind, value));
        let (commits, fsyncs) = self.store.durability_stats();
        add(
            "mamori_store_commits_total",
            "Write transactions committed by this process (embedded store).",
            "counter",
            commits as f64,
        );
        add(
            "mamori_store_fsyncs_total",
            "fsync calls of this process's group commit (embedded store).",
            "counter",
            fsyncs as f64,
        );
        if let Ok(n) = self.store.audit_size() {
            add("mamori_audit_entries", "Entries in the audit trail (監査証跡).", "gauge", n as f64);
            if let Ok(i) = self.store.audit_integrated_size() {
                add(
                    "mamori_audit_checkpointed_entries",
                    "Audit entries covered by the latest signed checkpoint.",
                    "gauge",
                    i as f64,
                );
                add(
                    "mamori_audit_unintegrated_entries",
                    "Audit entries not yet covered by a checkpoint (the integrator's backlog).",
                    "gauge",
                    n.saturating_sub(i) as f64,
                );
            }
        }
        let audit = self.store.audit_stats();
        add(
            "mamori_audit_writer_queue",
            "Audit appends waiting for this process's audit writer (its queue depth).",
            "gauge",
            audit.queued as f64,
        );
        if let Ok(bytes) = self.store.size_bytes() {
            add(
                "mamori_store_size_bytes",
                "Size of the database (SQLite file or PostgreSQL database).",
                "gauge",
                bytes as f64,
            );
        }
        for (action, outcome, n) in audit.appended {
            out.push(Figure {
                labels: vec![("action", action), ("outcome", outcome.to_string())],
                ..Figure::plain(
                    "mamori_audit_events_total",
                    "Audit entries appended by this process since it started, by action and outcome: \
                     login{outcome=denied} are sign-in failures, alert-lock lockouts, token{outcome=success} \
                     tokens issued, break-glass{outcome=success} break-glass grants.",
                    "counter",
                    n as f64,
                )
            });
        }
        let mut add = |name, help, kind, value: f64| out.push(Figure::plain(name, help, kind, value));
        add(
            "mamori_ready",
            "1 when the node may take requests (/readyz), else 0.",
            "gauge",
            f64::from(u8::from(self.store.ready().is_ok())),
        );
        if let Some(offset) = self.clock.lock().ok().and_then(|c| c.offset_ms) {
            add(
                "mamori_clock_offset_seconds",
                "Offset of the system clock from the reference time source.",
                "gauge",
                offset / 1000.0,
            );
        }
        out
    }
}

/// The origins allowed to call the API from a browser: those of every enabled application's
/// redirect URIs, and `[server] cors_origins`. Read from the store at most every two seconds, so
/// a newly registered application works at once and a disabled one stops soon after.
struct ClientOrigins {
    store: Arc<dyn Backend>,
    extra: Vec<String>,
    cache: std::sync::Mutex<Option<(std::time::Instant, std::collections::HashSet<String>)>>,
}

impl ClientOrigins {
    fn load(&self) -> std::collections::HashSet<String> {
        let mut set: std::collections::HashSet<String> = self.extra.iter().cloned().collect();
        match self.store.config_current("client") {
            Ok(entries) => {
                for e in entries {
                    let Some(c) = e.value.and_then(|v| serde_json::from_value::<mamori_oauth::Client>(v).ok()) else {
                        continue;
                    };
                    if !c.disabled {
                        set.extend(c.redirect_uris.iter().filter_map(|u| mamori_http::cors::origin_of(u)));
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the registered applications for CORS"),
        }
        set
    }
}

impl mamori_http::cors::Origins for ClientOrigins {
    fn allowed(&self, origin: &str) -> bool {
        let Ok(mut cache) = self.cache.lock() else { return false };
        let fresh = cache.as_ref().is_some_and(|(at, _)| at.elapsed() < std::time::Duration::from_secs(2));
        if !fresh {
            *cache = Some((std::time::Instant::now(), self.load()));
        }
        cache.as_ref().is_some_and(|(_, set)| set.contains(origin))
    }
}

/// Router state for `node`, served at `public_url` unless the configuration names another.
pub fn app_state(node: &Node, public_url: &str) -> AppState {
    let public = node.config.public_url.clone().unwrap_or_else(|| public_url.to_string());
    let passkeys = match mamori_identity::passkey::RelyingParty::new(&public) {
        Ok(rp) => Some(Arc::new(rp)),
        Err(e) => {
            tracing::info!(public_url = %public, reason = %e, "passkeys are not offered at this address");
            None
        }
    };
    AppState::new(mamori_http::Shared {
        passkeys,
        records: node.records.clone(),
        oauth: node.oauth.clone(),
        audit: node.store.clone(),
        identity: node.identity.clone(),
        health: Arc::new(StoreHealth { store: node.store.clone(), clock: node.clock_status.clone() }),
        enforcer: node.enforcer.clone(),
        config: Arc::new(HttpConfig {
            max_body_bytes: node.config.max_body_bytes,
            public_url: public,
            version: env!("CARGO_PKG_VERSION").to_string(),
            inline_lookups: node.store.kind() == "sqlite",
            trusted_proxies: node.config.trusted_proxies.clone(),
            metrics_from: node.config.metrics_from.clone(),
        }),
        metrics: Arc::new(mamori_http::metrics::Metrics::default()),
        started: node.clock.now().to_fhir(),
        bulk: Arc::new(mamori_http::BulkJobs::new(node.dir.join("bulk"))),
        cors: Arc::new(ClientOrigins {
            store: node.store.clone(),
            extra: node.config.cors_origins.clone(),
            cache: std::sync::Mutex::new(None),
        }),
    })
}

/// Every route `mamori serve` answers for `node` at `public_url`: FHIR, OAuth and sign-in, the
/// console at `/console`, and the management APIs (`/integrity`, `/maintenance`).
pub fn router(node: &Arc<Node>, public_url: &str) -> axum::Router {
    let state = app_state(node, public_url);
    mamori_http::app_with_management(
        state.clone(),
        mamori_console::router(state.clone(), node.clone()),
        vec![
            ("/integrity", mamori_console::integrity_api(state.clone(), node.clone())),
            ("/maintenance", mamori_console::maintenance_api(state, node.clone())),
        ],
    )
}
