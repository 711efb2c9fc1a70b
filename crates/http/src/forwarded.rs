//! The client's address behind a reverse proxy (`[server] trusted_proxies`).
//!
//! A request's source address — recorded in the audit trail, matched against an application's
//! allowed addresses, limited at login — is the TCP peer's, unless that peer is a trusted proxy:
//! then it is the address the proxy reports in `Forwarded` (RFC 7239) or, failing that,
//! `X-Forwarded-For`. The list is read from the right (the nearest hop first), skipping trusted
//! proxies; the first address that is not one is the client. From any other peer these headers
//! are ignored, so a client cannot choose the address the audit trail records. A value that is
//! not an address (`unknown`, an obfuscated `_name`) stops the walk and the proxy's own address
//! is kept.
//!
//! This layer replaces the peer address every other part of the edge reads (`ConnectInfo`), so
//! there is one place that decides it.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;

use crate::AppState;

/// Puts the client's address in place of a trusted proxy's.
pub async fn layer(State(s): State<AppState>, mut req: Request, next: Next) -> Response {
    let trusted = &s.config.trusted_proxies;
    if !trusted.is_empty()
        && let Some(peer) = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0)
        && is_trusted(trusted, peer.ip())
        && let Some(client) = client_address(req.headers(), trusted)
    {
        req.extensions_mut().insert(ConnectInfo(SocketAddr::new(client, 0)));
    }
    next.run(req).await
}

fn is_trusted(trusted: &[String], ip: IpAddr) -> bool {
    trusted.iter().any(|c| mamori_oauth::cidr_contains(c, ip))
}

/// The client's address from the forwarding headers of a request a trusted proxy sent.
pub fn client_address(headers: &HeaderMap, trusted: &[String]) -> Option<IpAddr> {
    let hops = forwarded_for(headers).or_else(|| x_forwarded_for(headers))?;
    let mut last = None;
    for hop in hops.iter().rev() {
        let ip = (*hop)?;
        if !is_trusted(trusted, ip) {
            return Some(ip);
        }
        last = Some(ip);
    }
    // Every hop is a trusted proxy: the leftmost is as far as the chain goes.
    last
}

/// The `for=` of every element of every `Forwarded` header, in order; `None` inside for a
/// value that is not an address. `None` when there is no `Forwarded` header with `for=`.
fn forwarded_for(headers: &HeaderMap) -> Option<Vec<Option<IpAddr>>> {
    let mut hops = Vec::new();
    for v in headers.get_all("forwarded") {
        let v = v.to_str().ok()?;
        for element in v.split(',') {
            for pair in element.split(';') {
                let Some((k, val)) = pair.trim().split_once('=') else { continue };
                if k.trim().eq_ignore_ascii_case("for") {
                    hops.push(parse_node(val.trim().trim_matches('"')));
                }
            }
        }
    }
    (!hops.is_empty()).then_some(hops)
}

fn x_forwarded_for(headers: &HeaderMap) -> Option<Vec<Option<IpAddr>>> {
    let mut hops = Vec::new();
    for v in headers.get_all("x-forwarded-for") {
        let v = v.to_str().ok()?;
        hops.extend(v.split(',').map(|h| parse_node(h.trim())));
    }
    (!hops.is_empty()).then_some(hops)
}

/// An RFC 7239 node: `192.0.2.43`, `192.0.2.43:4711`, `[2001:db8::17]`, `[2001:db8::17]:4711`
/// (and a bare IPv6 address, as `X-Forwarded-For` carries it).
fn parse_node(v: &str) -> Option<IpAddr> {
    if let Some(rest) = v.strip_prefix('[') {
        return rest.split_once(']').and_then(|(ip, _)| ip.parse::<std::net::Ipv6Addr>().ok()).map(IpAddr::V6);
    }
    if let Ok(ip) = v.parse::<IpAddr>() {
        return Some(ip);
    }
    v.parse::<SocketAddr>().ok().map(|s| s.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        h
    }

    #[test]
    fn nearest_untrusted_hop_is_the_client() {
        let trusted = vec!["10.0.0.0/8".to_string()];
        let h = headers(&[("x-forwarded-for", "203.0.113.9, 198.51.100.7, 10.0.0.2")]);
        assert_eq!(client_address(&h, &trusted), Some("198.51.100.7".parse().unwrap()));
        let h = headers(&[("forwarded", "for=192.0.2.60;proto=https, for=\"[2001:db8:cafe::17]:4711\"")]);
        assert_eq!(client_address(&h, &trusted), Some("2001:db8:cafe::17".parse().unwrap()));
        // Forwarded wins over X-Forwarded-For when both are present.
        let h = headers(&[("forwarded", "for=192.0.2.60:80"), ("x-forwarded-for", "198.51.100.1")]);
        assert_eq!(client_address(&h, &trusted), Some("192.0.2.60".parse().unwrap()));
        // Several header lines are one list.
        let h = headers(&[("x-forwarded-for", "198.51.100.1"), ("x-forwarded-for", "10.1.1.1")]);
        assert_eq!(client_address(&h, &trusted), Some("198.51.100.1".parse().unwrap()));
    }

    #[test]
    fn what_is_not_an_address_keeps_the_proxys() {
        let trusted = vec!["10.0.0.0/8".to_string()];
        for v in ["unknown", "_hidden", "", "not an ip", "[::1", "1.2.3.4.5"] {
            let h = headers(&[("x-forwarded-for", v)]);
            assert_eq!(client_address(&h, &trusted), None, "{v}");
        }
        assert_eq!(client_address(&HeaderMap::new(), &trusted), None);
        let h = headers(&[("forwarded", "by=10.0.0.1;proto=https")]);
        assert_eq!(client_address(&h, &trusted), None);
    }

    #[test]
    fn a_chain_of_trusted_proxies_yields_its_leftmost() {
        let trusted = vec!["10.0.0.0/8".to_string()];
        let h = headers(&[("x-forwarded-for", "10.0.0.9, 10.0.0.2")]);
        assert_eq!(client_address(&h, &trusted), Some("10.0.0.9".parse().unwrap()));
    }
}
