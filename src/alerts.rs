//! Alert delivery (#25, "alert … and a configured webhook or syslog"): every `alert-*` audit
//! entry — configuration changed around the path, drift from the baseline, external settings
//! drift, a failed audit check, a watcher that stopped — is also sent to the syslog collector
//! of `[integrity] alert_syslog` as an RFC 5424 message over TLS (RFC 5425, octet counting),
//! from a thread of `mamori serve`. The audit trail is the queue: delivery is at least once, in
//! order, and resumes after an outage or a restart from the index kept in `alerts.cursor` (alerts
//! raised by the command line while no server ran are sent when one starts). A collector that
//! cannot be reached is logged at every try and, after a minute, recorded once per outage as
//! `alert-delivery-failed` (sent like any alert once the collector is back).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mamori_audit::EntryQuery;

use crate::audit_export::{SyslogTls, connect_syslog, syslog_line};

/// The file in the data directory that keeps the next alert index to send.
pub const CURSOR: &str = "alerts.cursor";

fn read_cursor(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok().and_then(|s| s.trim().parse().ok())
}

fn write_cursor(path: &Path, next: u64) -> std::io::Result<()> {
    let tmp = path.with_extension("cursor.tmp");
    std::fs::write(&tmp, format!("{next}\n"))?;
    std::fs::rename(&tmp, path)
}

/// Where delivery starts: the kept cursor, else just after the newest alert already in the trail
/// (a collector configured now does not receive the whole past).
pub fn start_at(node: &mamori_app::Node) -> u64 {
    read_cursor(&node.dir.join(CURSOR))
        .or_else(|| node.store.recent_alerts(1).ok().and_then(|a| a.first().map(|(i, _)| i + 1)))
        .unwrap_or(0)
}

/// Sends every alert from index `from` on, now and as they come, to `to`.
pub fn spawn(node: Arc<mamori_app::Node>, to: SyslogTls, from: u64) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let cursor_file: PathBuf = node.dir.join(CURSOR);
        let host =
            std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_string()).unwrap_or_else(|_| "-".into());
        let mut next = from;
        let mut conn = None;
        let mut failing_since: Option<Instant> = None;
        let mut recorded = false;
        loop {
            let q = EntryQuery {
                action_prefix: Some("alert-".into()),
                from_index: next,
                limit: 100,
                ..EntryQuery::default()
            };
            let batch = match node.store.query(&q) {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(error = %e, "alerts: the audit trail could not be read");
                    Vec::new()
                }
            };
            if !batch.is_empty() {
                let sent = (|| -> crate::fail::Fallible<u64> {
                    if conn.is_none() {
                        conn = Some(connect_syslog(&to)?);
                    }
                    let Some(tls) = conn.as_mut() else { return Err("no connection".into()) };
                    let mut last = next;
                    for (index, entry) in &batch {
                        let line = syslog_line(*index, entry, &host);
                        write!(tls, "{} {line}", line.len())?;
                        last = index + 1;
                    }
                    tls.flush()?;
                    Ok(last)
                })();
                match sent {
                    Ok(last) => {
                        next = last;
                        if let Err(e) = write_cursor(&cursor_file, next) {
                            tracing::warn!(error = %e, "alerts: the cursor could not be kept");
                        }
                        failing_since = None;
                        recorded = false;
                    }
                    Err(e) => {
                        conn = None;
                        tracing::warn!(error = %e, collector = %to.addr, "alerts: could not deliver to the syslog collector");
                        let since = *failing_since.get_or_insert_with(Instant::now);
                        if !recorded && since.elapsed() >= Duration::from_secs(60) {
                            let mut a = mamori_audit::AuditRecord::new(
                                "alert-delivery-failed",
                                mamori_audit::AuditActor::from_tag("system:alerts"),
                                mamori_audit::Outcome::Failure,
                                "HOPERAT",
                            );
                            a.detail = Some(format!("alerts could not be sent to {} for a minute: {e}", to.addr));
                            recorded = node.store.append(vec![a]).is_ok();
                        }
                        std::thread::sleep(Duration::from_secs(5));
                        continue;
                    }
                }
                if batch.len() == 100 {
                    continue;
                }
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    })
}
