//! The FHIR R4 (4.0.1) structure definitions as data: which elements each resource, datatype and
//! backbone element has, their types and whether they repeat.
//!
//! The data is generated from the official StructureDefinitions (CC0) by
//! `scripts/gen-fhir-schema.py` and parsed once, on first use.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use serde::Deserialize;

const R4_SCHEMA: &str = include_str!("../data/r4-schema.json");

/// One child element of a structure.
#[derive(Debug, Clone, Deserialize)]
#[serde(from = "(Vec<String>, u8)")]
pub struct Element {
    /// Allowed type codes: primitives (`string`, `date`…), complex types (`HumanName`),
    /// backbone paths (`Patient.contact`) or `Resource` for an embedded resource.
    pub types: Vec<String>,
    /// Whether the element is an array in JSON (max cardinality above 1).
    pub many: bool,
}

impl From<(Vec<String>, u8)> for Element {
    fn from((types, many): (Vec<String>, u8)) -> Self {
        Element { types, many: many != 0 }
    }
}

#[derive(Debug, Deserialize)]
struct Raw {
    #[serde(rename = "fhirVersion")]
    fhir_version: String,
    primitives: Vec<String>,
    resources: Vec<String>,
    types: HashMap<String, HashMap<String, Element>>,
}

/// The R4 structure catalogue.
#[derive(Debug)]
pub struct Schema {
    fhir_version: String,
    primitives: HashSet<String>,
    resources: Vec<String>,
    resource_set: HashSet<String>,
    types: HashMap<String, HashMap<String, Element>>,
    empty: HashMap<String, Element>,
}

impl Schema {
    /// The FHIR version the data was generated from (`4.0.1`).
    pub fn fhir_version(&self) -> &str {
        &self.fhir_version
    }

    /// Whether `name` is a concrete (non-abstract) R4 resource type.
    pub fn is_resource(&self, name: &str) -> bool {
        self.resource_set.contains(name)
    }

    /// Every concrete R4 resource type, sorted.
    pub fn resources(&self) -> &[String] {
        &self.resources
    }

    /// Whether `name` is a primitive datatype (`string`, `date`, `xhtml`…).
    pub fn is_primitive(&self, name: &str) -> bool {
        self.primitives.contains(name)
    }

    /// The child elements of a resource, datatype or backbone path; empty when unknown.
    pub fn elements(&self, type_or_path: &str) -> &HashMap<String, Element> {
        self.types.get(type_or_path).unwrap_or(&self.empty)
    }

    /// Whether a structure of that name or path is known.
    pub fn has_structure(&self, type_or_path: &str) -> bool {
        self.types.contains_key(type_or_path)
    }
}

/// The R4 catalogue, parsed on first use.
pub fn r4() -> &'static Schema {
    static SCHEMA: OnceLock<Schema> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        // The data is compiled in and checked by the tests below; a parse failure is a build
        // defect, so fall back to an empty catalogue rather than panic on a request path.
        let raw: Raw = serde_json::from_str(R4_SCHEMA).unwrap_or(Raw {
            fhir_version: String::new(),
            primitives: Vec::new(),
            resources: Vec::new(),
            types: HashMap::new(),
        });
        Schema {
            fhir_version: raw.fhir_version,
            primitives: raw.primitives.into_iter().collect(),
            resource_set: raw.resources.iter().cloned().collect(),
            resources: raw.resources,
            types: raw.types,
            empty: HashMap::new(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_parses_and_knows_r4() {
        let s = r4();
        assert_eq!(s.fhir_version(), "4.0.1");
        assert_eq!(s.resources().len(), 146);
        assert!(s.is_resource("Patient"));
        assert!(!s.is_resource("DomainResource"));
        assert!(s.is_primitive("date"));
        let bd = &s.elements("Patient")["birthDate"];
        assert_eq!(bd.types, vec!["date".to_string()]);
        assert!(!bd.many);
        assert!(s.elements("Patient")["name"].many);
        assert!(s.elements("Observation").contains_key("value[x]"));
        assert!(s.has_structure("Patient.contact"));
    }
}
