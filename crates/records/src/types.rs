//! Newtypes built once at the edge: a resource type known to R4, a valid logical id.

use std::fmt;

use crate::{IssueCode, RecordError, primitive};

/// A concrete R4 resource type such as `Patient`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceType(String);

impl ResourceType {
    /// Parses a type name; unknown names are refused.
    pub fn parse(s: &str) -> Result<Self, RecordError> {
        if mamori_fhir_schema::r4().is_resource(s) {
            Ok(ResourceType(s.to_string()))
        } else {
            Err(RecordError::NotFound(format!("resource type `{}`", s.chars().take(64).collect::<String>())))
        }
    }

    /// The type name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ResourceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The 8-4-4-4-12 hex form of a UUID.
fn uuid_text(b: &[u8; 16]) -> String {
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        h.get(0..8).unwrap_or_default(),
        h.get(8..12).unwrap_or_default(),
        h.get(12..16).unwrap_or_default(),
        h.get(16..20).unwrap_or_default(),
        h.get(20..32).unwrap_or_default()
    )
}

/// A FHIR logical id (`[A-Za-z0-9\-\.]{1,64}`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceId(String);

impl ResourceId {
    /// Parses an id.
    pub fn parse(s: &str) -> Result<Self, RecordError> {
        if primitive::is_id(s) {
            Ok(ResourceId(s.to_string()))
        } else {
            Err(RecordError::invalid(
                IssueCode::Value,
                format!("`{}` is not a valid FHIR id", s.chars().take(64).collect::<String>()),
            ))
        }
    }

    /// A fresh id for a stored record: a UUID version 7 (RFC 9562 §5.7) — 48 bits of Unix time
    /// in milliseconds, then 74 random bits. Ids created one after another sort after each other,
    /// so every b-tree keyed by `(type, id)` (the version table, the current-version pointers, every
    /// search index) takes a new record at its right edge instead of a random leaf: a random id
    /// dirties one page per index per record, which made a batch of writes rewrite thousands of
    /// scattered pages (issue #9). The creation time the id reveals is in `meta.lastUpdated` anyway.
    pub fn generate() -> Result<Self, RecordError> {
        let ms = u64::try_from(
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0),
        )
        .unwrap_or(0);
        let mut b = [0u8; 16];
        getrandom::fill(&mut b).map_err(|e| crate::StoreError::other(format!("random: {e}")))?;
        for (slot, byte) in b.iter_mut().zip(ms.to_be_bytes().get(2..8).unwrap_or_default()) {
            *slot = *byte;
        }
        b[6] = (b[6] & 0x0f) | 0x70;
        b[8] = (b[8] & 0x3f) | 0x80;
        Ok(ResourceId(uuid_text(&b)))
    }

    /// A fresh id with nothing but randomness in it (UUID v4): for names that should not reveal
    /// when they were made or sort by it (export jobs, review campaigns).
    pub fn random() -> Result<Self, RecordError> {
        let mut b = [0u8; 16];
        getrandom::fill(&mut b).map_err(|e| crate::StoreError::other(format!("random: {e}")))?;
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        Ok(ResourceId(uuid_text(&b)))
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
