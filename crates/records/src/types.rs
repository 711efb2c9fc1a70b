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

    /// A fresh random id (UUID v4 form).
    pub fn generate() -> Result<Self, RecordError> {
        let mut b = [0u8; 16];
        getrandom::fill(&mut b).map_err(|e| crate::StoreError(format!("random: {e}")))?;
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        let h = hex::encode(b);
        let s = format!(
            "{}-{}-{}-{}-{}",
            h.get(0..8).unwrap_or_default(),
            h.get(8..12).unwrap_or_default(),
            h.get(12..16).unwrap_or_default(),
            h.get(16..20).unwrap_or_default(),
            h.get(20..32).unwrap_or_default()
        );
        Ok(ResourceId(s))
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
