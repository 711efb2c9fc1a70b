//! `mamori audit export`: the audit trail as NDJSON, RFC 5424 syslog lines or CSV (L5).

use std::io::Write;

use mamori_audit::{AuditLog, AuditRecord, EntryQuery, Outcome};

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One entry (canonical JSON) per line.
    Ndjson,
    /// RFC 5424 syslog messages, one per line.
    Syslog,
    /// Comma-separated values with a header row.
    Csv,
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_string() }
}

/// RFC 5424 SD-PARAM value escaping: `"`, `\` and `]`.
fn sd_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace(']', "\\]")
}

/// One RFC 5424 message: facility authpriv (10), severity notice (5) for denials, else info (6).
pub fn syslog_line(index: u64, entry: &[u8], host: &str) -> String {
    let r: Option<AuditRecord> = serde_json::from_slice(entry).ok();
    let (time, action, severity, sd) = match &r {
        Some(r) => (
            r.time.clone(),
            r.action.clone(),
            if r.outcome == Outcome::Denied { 5 } else { 6 },
            format!(
                "[mamori@32473 idx=\"{index}\" outcome=\"{}\" actor=\"{}\" patient=\"{}\"]",
                sd_escape(&format!("{:?}", r.outcome).to_lowercase()),
                sd_escape(&format!("{}:{}", r.actor.kind, r.actor.id)),
                sd_escape(&r.patients.join(" "))
            ),
        ),
        None => ("-".into(), "unknown".into(), 6, format!("[mamori@32473 idx=\"{index}\"]")),
    };
    let msgid: String = action.chars().filter(|c| c.is_ascii_graphic()).take(32).collect();
    format!("<{}>1 {time} {host} mamori - {msgid} {sd} {}", 10 * 8 + severity, String::from_utf8_lossy(entry))
}

/// Writes every entry in `[since, until)` in `format`.
pub fn export(
    log: &dyn AuditLog,
    format: Format,
    since: Option<i64>,
    until: Option<i64>,
    out: &mut dyn Write,
) -> Result<u64, String> {
    let host = std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_string()).unwrap_or_else(|_| "-".into());
    let host = if host.is_empty() { "-".to_string() } else { host };
    if format == Format::Csv {
        writeln!(out, "index,time,action,outcome,status,actor_kind,actor_id,client_id,fhir_user,patients,resources,purpose,source,request_id,detail")
            .map_err(|e| e.to_string())?;
    }
    let mut from = 0u64;
    let mut n = 0u64;
    loop {
        let page = log
            .query(&EntryQuery { since, until, from_index: from, limit: 10_000, ..EntryQuery::default() })
            .map_err(|e| e.to_string())?;
        let Some((last, _)) = page.last() else { break };
        from = last + 1;
        for (index, entry) in &page {
            match format {
                Format::Ndjson => {
                    out.write_all(entry).map_err(|e| e.to_string())?;
                    out.write_all(b"\n").map_err(|e| e.to_string())?;
                }
                Format::Syslog => writeln!(out, "{}", syslog_line(*index, entry, &host)).map_err(|e| e.to_string())?,
                Format::Csv => {
                    let r: AuditRecord = serde_json::from_slice(entry).map_err(|e| format!("entry {index}: {e}"))?;
                    let cols = [
                        index.to_string(),
                        r.time,
                        r.action,
                        format!("{:?}", r.outcome).to_lowercase(),
                        r.status.map(|s| s.to_string()).unwrap_or_default(),
                        r.actor.kind,
                        r.actor.id,
                        r.actor.client_id.unwrap_or_default(),
                        r.actor.fhir_user.unwrap_or_default(),
                        r.patients.join(" "),
                        r.resources.join(" "),
                        r.purpose,
                        r.source.unwrap_or_default(),
                        r.request_id.unwrap_or_default(),
                        r.detail.unwrap_or_default(),
                    ];
                    writeln!(out, "{}", cols.iter().map(|c| csv_field(c)).collect::<Vec<_>>().join(","))
                        .map_err(|e| e.to_string())?;
                }
            }
            n += 1;
        }
    }
    Ok(n)
}
