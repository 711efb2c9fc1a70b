//! Prometheus metrics at `/metrics` (text exposition format 0.0.4): requests by route, method,
//! status and principal kind, a latency histogram per route, requests in flight, and the store's
//! figures (audit entries appended and checkpointed, commits, fsyncs) from [`crate::Health`].
//!
//! Labels are bounded: the route is the router's path template (`/fhir/{rtype}/{id}`, never the
//! path asked for), unmatched paths share one label, methods outside the standard set share
//! `OTHER`. Nothing that identifies a person, a token or a patient is ever a label or value.
//!
//! Who may read it: peers on loopback and in `[server] metrics_from` (CIDRs); anyone else gets
//! 404, as for a path that does not exist.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Instant;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::AppState;

/// Upper bounds of the latency histogram's buckets, in seconds.
const BUCKETS: [f64; 14] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// A figure the node reports beside the request metrics (audit trail, store).
#[derive(Debug, Clone)]
pub struct Figure {
    /// Metric name, `mamori_…`.
    pub name: &'static str,
    /// One line of help.
    pub help: &'static str,
    /// `counter` or `gauge`.
    pub kind: &'static str,
    /// Label names and values (a bounded set: never a person, token or patient).
    pub labels: Vec<(&'static str, String)>,
    /// The value.
    pub value: f64,
}

impl Figure {
    /// A figure without labels.
    pub fn plain(name: &'static str, help: &'static str, kind: &'static str, value: f64) -> Figure {
        Figure { name, help, kind, labels: Vec::new(), value }
    }
}

#[derive(Default)]
struct RouteStats {
    /// Requests by (status, principal kind).
    by_status: HashMap<(u16, &'static str), u64>,
    /// Cumulative counts per bucket are computed at exposition; these are per bucket.
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum_secs: f64,
}

/// The request metrics of one server.
pub struct Metrics {
    /// By route template, then method (looked up by `&str`: no allocation per request).
    routes: Mutex<HashMap<String, HashMap<&'static str, RouteStats>>>,
    in_flight: AtomicI64,
    started: std::time::SystemTime,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            routes: Mutex::new(HashMap::new()),
            in_flight: AtomicI64::new(0),
            started: std::time::SystemTime::now(),
        }
    }
}

fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

impl Metrics {
    fn observe(&self, method: &'static str, route: &str, status: u16, principal: &'static str, secs: f64) {
        let Ok(mut routes) = self.routes.lock() else { return };
        let by_method = match routes.get_mut(route) {
            Some(m) => m,
            None => routes.entry(route.to_string()).or_default(),
        };
        let stats = by_method.entry(method).or_default();
        *stats.by_status.entry((status, principal)).or_insert(0) += 1;
        let i = BUCKETS.iter().position(|b| secs <= *b).unwrap_or(BUCKETS.len());
        if let Some(b) = stats.buckets.get_mut(i) {
            *b += 1;
        }
        stats.count += 1;
        stats.sum_secs += secs;
    }

    /// The exposition text: request metrics, then `figures`.
    pub fn render(&self, version: &str, figures: &[Figure]) -> String {
        let mut out = String::with_capacity(4096);
        let _ = writeln!(out, "# HELP mamori_build_info The running build.\n# TYPE mamori_build_info gauge");
        let _ = writeln!(out, "mamori_build_info{{version=\"{}\"}} 1", escape(version));
        let started = self.started.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
        let _ = writeln!(
            out,
            "# HELP process_start_time_seconds Start time of the process since the Unix epoch.\n# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds {started}"
        );
        let _ = writeln!(
            out,
            "# HELP mamori_http_requests_in_flight Requests being served.\n# TYPE mamori_http_requests_in_flight gauge\nmamori_http_requests_in_flight {}",
            self.in_flight.load(Ordering::Relaxed)
        );
        let mut rows: Vec<(String, String, u16, &'static str, u64)> = Vec::new();
        let mut hist = String::new();
        if let Ok(routes) = self.routes.lock() {
            let mut keys: Vec<(&String, &&'static str)> =
                routes.iter().flat_map(|(r, by)| by.keys().map(move |m| (r, m))).collect();
            keys.sort();
            for (r, m) in keys {
                let Some(s) = routes.get(r).and_then(|by| by.get(*m)) else { continue };
                let (method, route) = (*m, escape(r));
                for ((status, principal), n) in &s.by_status {
                    rows.push((method.to_string(), route.clone(), *status, principal, *n));
                }
                let mut cumulative = 0;
                for (b, n) in BUCKETS.iter().zip(s.buckets.iter()) {
                    cumulative += n;
                    let _ = writeln!(
                        hist,
                        "mamori_http_request_duration_seconds_bucket{{method=\"{method}\",route=\"{route}\",le=\"{b}\"}} {cumulative}"
                    );
                }
                let _ = writeln!(
                    hist,
                    "mamori_http_request_duration_seconds_bucket{{method=\"{method}\",route=\"{route}\",le=\"+Inf\"}} {}\nmamori_http_request_duration_seconds_sum{{method=\"{method}\",route=\"{route}\"}} {}\nmamori_http_request_duration_seconds_count{{method=\"{method}\",route=\"{route}\"}} {}",
                    s.count, s.sum_secs, s.count
                );
            }
        }
        rows.sort();
        let _ = writeln!(
            out,
            "# HELP mamori_http_requests_total Requests answered, by route template, method, status and principal kind.\n# TYPE mamori_http_requests_total counter"
        );
        for (method, route, status, principal, n) in rows {
            let _ = writeln!(
                out,
                "mamori_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\",principal=\"{principal}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP mamori_http_request_duration_seconds Time from the request's arrival to its response head, by route template.\n# TYPE mamori_http_request_duration_seconds histogram"
        );
        out.push_str(&hist);
        // One family per name (HELP and TYPE once), its samples together, in first-seen order.
        let mut done: Vec<&str> = Vec::new();
        for f in figures {
            if done.contains(&f.name) {
                continue;
            }
            done.push(f.name);
            let _ = writeln!(out, "# HELP {} {}\n# TYPE {} {}", f.name, f.help, f.name, f.kind);
            for g in figures.iter().filter(|g| g.name == f.name) {
                let labels: Vec<String> = g.labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
                if labels.is_empty() {
                    let _ = writeln!(out, "{} {}", g.name, g.value);
                } else {
                    let _ = writeln!(out, "{}{{{}}} {}", g.name, labels.join(","), g.value);
                }
            }
        }
        out
    }
}

/// A label value as the exposition format escapes it.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Counts and times every request (the outermost layer of every route).
pub async fn layer(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(req.method());
    let route = req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_string());
    s.metrics.in_flight.fetch_add(1, Ordering::Relaxed);
    let resp = next.run(req).await;
    s.metrics.in_flight.fetch_sub(1, Ordering::Relaxed);
    let principal = resp.extensions().get::<mamori_access::Principal>().map_or("none", |p| p.kind());
    s.metrics.observe(
        method,
        route.as_deref().unwrap_or("unmatched"),
        resp.status().as_u16(),
        principal,
        started.elapsed().as_secs_f64(),
    );
    resp
}

/// `GET /metrics`.
pub async fn metrics(
    State(s): State<AppState>,
    peer: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    uri: axum::http::Uri,
) -> Response {
    let allowed = peer.is_some_and(|p| {
        let ip = p.0.0.ip();
        ip.is_loopback() || s.config.metrics_from.iter().any(|c| mamori_oauth::cidr_contains(c, ip))
    });
    if !allowed {
        return crate::fhir::not_found(uri).await;
    }
    let h = s.health.clone();
    let mut figures = tokio::task::spawn_blocking(move || h.figures()).await.unwrap_or_default();
    figures.extend(s.bulk.figures());
    let body = s.metrics.render(&s.config.version, &figures);
    let mut r = (StatusCode::OK, body).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_counts_and_buckets() {
        let m = Metrics::default();
        m.observe("GET", "/fhir/{rtype}/{id}", 200, "user", 0.002);
        m.observe("GET", "/fhir/{rtype}/{id}", 200, "user", 0.2);
        m.observe("GET", "/fhir/{rtype}/{id}", 404, "user", 20.0);
        let labelled = |v: &str, n| Figure {
            labels: vec![("state", v.to_string())],
            ..Figure::plain("mamori_y", "Y.", "gauge", n)
        };
        let text = m
            .render("1.0", &[labelled("a\"b", 1.0), Figure::plain("mamori_x", "X.", "gauge", 3.0), labelled("c", 2.0)]);
        assert!(text.contains(
            "mamori_http_requests_total{method=\"GET\",route=\"/fhir/{rtype}/{id}\",status=\"200\",principal=\"user\"} 2"
        ));
        assert!(text.contains("le=\"0.0025\"} 1\n"), "{text}");
        assert!(text.contains("le=\"0.25\"} 2\n"), "{text}");
        assert!(text.contains("le=\"10\"} 2\n"), "{text}");
        assert!(text.contains("le=\"+Inf\"} 3\n"), "{text}");
        assert!(text.contains("# TYPE mamori_x gauge\nmamori_x 3\n"));
        assert!(
            text.contains("# TYPE mamori_y gauge\nmamori_y{state=\"a\\\"b\"} 1\nmamori_y{state=\"c\"} 2\n"),
            "{text}"
        );
        assert_eq!(text.matches("# TYPE mamori_y").count(), 1);
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
