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

/// Where canonical bytes go: a buffer, or straight into a hash.
trait Sink {
    fn put(&mut self, bytes: &[u8]);
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

impl Sink for Sha256 {
    fn put(&mut self, bytes: &[u8]) {
        self.update(bytes);
    }
}

/// Lets serde_json's escaping and number formatting write into any sink, without a String of its
/// own (this runs inside the writer's critical section for every version and Provenance, #9).
struct Adapter<'a, S: Sink>(&'a mut S);

impl<S: Sink> std::io::Write for Adapter<'_, S> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.put(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn write<S: Sink>(v: &Value, out: &mut S) {
    match v {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.put(b"{");
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.put(b",");
                }
                scalar(k, out);
                out.put(b":");
                write(v, out);
            }
            out.put(b"}");
        }
        Value::Array(items) => {
            out.put(b"[");
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.put(b",");
                }
                write(item, out);
            }
            out.put(b"]");
        }
        Value::String(s) => scalar(s, out),
        other => scalar(other, out),
    }
}

/// A string (escaped as serde_json escapes it) or a number, `true`, `false`, `null` as written.
fn scalar<S: Sink, T: serde::Serialize + ?Sized>(x: &T, out: &mut S) {
    // Writing to memory cannot fail, and a string or a JSON scalar always serialises.
    let _ = serde_json::to_writer(Adapter(out), x);
}

/// SHA-256 of the canonical form of `v`.
pub fn content_hash(v: &Value) -> [u8; 32] {
    let mut h = Sha256::new();
    write(v, &mut h);
    h.finalize().into()
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
        // The hash is of exactly those bytes (stored hashes must keep verifying).
        let bytes = canonical_json(&a);
        assert_eq!(content_hash(&a), <[u8; 32]>::from(Sha256::digest(&bytes)));
        // Byte for byte what the first implementation (a String per key and scalar) wrote, so the
        // hashes of versions stored before still verify.
        let docs = [
            r#"{"s":"a\"b\\c\n\u0001é\u2028","t":true,"f":false,"x":null,"n":-1.0e3,"m":0.000100,"z":[],"o":{}}"#,
            r#"{"resourceType":"Observation","valueQuantity":{"value":72,"unit":"/min"},"code":{"text":"心拍数"},"b":[1,[2,{"y":"</script>","a":"\t"}]]}"#,
        ];
        for doc in docs {
            let v: Value = serde_json::from_str(doc).unwrap_or_default();
            assert_ne!(v, Value::Null);
            assert_eq!(canonical_json(&v), reference(&v), "{doc}");
        }
    }

    fn reference(v: &Value) -> Vec<u8> {
        fn string(s: &str, out: &mut Vec<u8>) {
            out.extend_from_slice(Value::String(s.to_string()).to_string().as_bytes());
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
        let mut out = Vec::new();
        write(v, &mut out);
        out
    }
}
