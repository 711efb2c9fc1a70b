//! `mamori audit export`: the audit trail as NDJSON, RFC 5424 syslog lines or CSV (L5).

use crate::fail::{Fallible, context};
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

/// A remote syslog collector reached over TLS (RFC 5425).
#[derive(Debug, Clone)]
pub struct SyslogTls {
    /// `host:port` (6514 is the registered port).
    pub addr: String,
    /// Name to verify in the collector's certificate.
    pub server_name: String,
    /// PEM file with the CA certificate(s) that sign the collector's certificate.
    pub ca_file: std::path::PathBuf,
}

/// Streams every entry in `[since, until)` to a collector as RFC 5424 messages over TLS with
/// RFC 5425 octet-counting framing (`LEN SP MSG`). Returns how many were sent.
pub fn stream_syslog_tls(log: &dyn AuditLog, since: Option<i64>, until: Option<i64>, to: &SyslogTls) -> Fallible<u64> {
    let mut tls = connect_syslog(to)?;
    let mut lines = Vec::new();
    export(log, Format::Syslog, since, until, &mut lines, &mut |_| {})?;
    let mut n = 0;
    for line in String::from_utf8_lossy(&lines).lines() {
        write!(tls, "{} {line}", line.len()).map_err(context("collector"))?;
        n += 1;
    }
    tls.flush().map_err(context("collector"))?;
    tls.conn.send_close_notify();
    tls.flush().map_err(context("collector"))?;
    // Read until the collector closes: closing with unread data (its session tickets) would
    // reset the connection and could discard messages it has not read yet.
    let _ = tls.sock.set_read_timeout(Some(std::time::Duration::from_secs(10)));
    let _ = tls.sock.shutdown(std::net::Shutdown::Write);
    let mut sink = Vec::new();
    let _ = std::io::Read::read_to_end(&mut tls, &mut sink);
    Ok(n)
}

/// A TLS connection to a syslog collector (RFC 5425), its certificate checked against `to`'s CA
/// and name.
pub fn connect_syslog(to: &SyslogTls) -> Fallible<rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(&to.ca_file)
        .map_err(context(format!("cannot read `{}`", to.ca_file.display())))?;
    for c in certs {
        roots.add(c.map_err(context("bad CA PEM"))?).map_err(context("bad CA certificate"))?;
    }
    let cfg =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_root_certificates(roots)
            .with_no_client_auth();
    let name = ServerName::try_from(to.server_name.clone())
        .map_err(|_| format!("`{}` is not a server name", to.server_name))?;
    let conn = rustls::ClientConnection::new(std::sync::Arc::new(cfg), name)?;
    let tcp = std::net::TcpStream::connect(&to.addr).map_err(context(format!("cannot connect to `{}`", to.addr)))?;
    tcp.set_write_timeout(Some(std::time::Duration::from_secs(30)))?;
    Ok(rustls::StreamOwned::new(conn, tcp))
}

/// Writes every entry in `[since, until)` in `format`, telling `progress` the count after each page.
pub fn export(
    log: &dyn AuditLog,
    format: Format,
    since: Option<i64>,
    until: Option<i64>,
    out: &mut dyn Write,
    progress: &mut dyn FnMut(u64),
) -> Fallible<u64> {
    let host = std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_string()).unwrap_or_else(|_| "-".into());
    let host = if host.is_empty() { "-".to_string() } else { host };
    if format == Format::Csv {
        writeln!(
            out,
            "index,time,action,outcome,status,actor_kind,actor_id,client_id,fhir_user,patients,resources,purpose,source,request_id,detail"
        )?;
    }
    let mut from = 0u64;
    let mut n = 0u64;
    loop {
        let page = log.query(&EntryQuery { since, until, from_index: from, limit: 10_000, ..EntryQuery::default() })?;
        let Some((last, _)) = page.last() else { break };
        from = last + 1;
        for (index, entry) in &page {
            match format {
                Format::Ndjson => {
                    out.write_all(entry)?;
                    out.write_all(b"\n")?;
                }
                Format::Syslog => writeln!(out, "{}", syslog_line(*index, entry, &host))?,
                Format::Csv => {
                    let r: AuditRecord = serde_json::from_slice(entry).map_err(context(format!("entry {index}")))?;
                    let cols = [
                        index.to_string(),
                        r.time,
                        r.action,
                        format!("{:?}", r.outcome).to_lowercase(),
                        r.status.map(|s| s.to_string()).unwrap_or_default(),
                        r.actor.kind.to_string(),
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
                    writeln!(out, "{}", cols.iter().map(|c| csv_field(c)).collect::<Vec<_>>().join(","))?;
                }
            }
            n += 1;
        }
        progress(n);
    }
    Ok(n)
}
