//! Canonical JSON (object keys sorted by code point, no insignificant whitespace, numbers as
//! written) and the SHA-256 content hash of a stored version.
//!
//! Numbers are kept exactly as the client wrote them (FHIR decimals carry precision: `1.50` is not
//! `1.5`), which is the one place this differs from RFC 8785.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// Writes `v` in canonical form.
pub fn canonical_json(v: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    write(v, &mut out);
    out
}

fn write(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push(b'{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                string(k, out);
                out.push(b':');
                if let Some(v) = map.get(k) {
                    write(v, out);
                }
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write(item, out);
            }
            out.push(b']');
        }
        Value::String(s) => string(s, out),
        other => out.extend_from_slice(other.to_string().as_bytes()),
    }
}

fn string(s: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(Value::String(s.to_string()).to_string().as_bytes());
}

/// SHA-256 of the canonical form of `v`.
pub fn content_hash(v: &Value) -> [u8; 32] {
    Sha256::digest(canonical_json(v)).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_order_and_whitespace_do_not_change_the_hash() {
        let a: Value = serde_json::from_str(r#"{"b": 1.50, "a": [ {"y":"日本","x":null} ]}"#).unwrap_or_default();
        let b: Value = serde_json::from_str(r#"{"a":[{"x":null,"y":"日本"}],"b":1.50}"#).unwrap_or_default();
        assert_eq!(content_hash(&a), content_hash(&b));
        assert_eq!(canonical_json(&a), r#"{"a":[{"x":null,"y":"日本"}],"b":1.50}"#.as_bytes().to_vec());
        let c: Value = serde_json::from_str(r#"{"a":[{"x":null,"y":"日本"}],"b":1.5}"#).unwrap_or_default();
        assert_ne!(content_hash(&a), content_hash(&c), "decimal precision is content");
    }
}
