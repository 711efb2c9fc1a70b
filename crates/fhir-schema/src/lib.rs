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
    /// Whether the element is part of the summary (`_summary=true`).
    pub summary: bool,
}

impl From<(Vec<String>, u8)> for Element {
    fn from((types, flags): (Vec<String>, u8)) -> Self {
        Element { types, many: flags & 1 != 0, summary: flags & 2 != 0 }
    }
}

const R4_SEARCH_PARAMS: &str = include_str!("../data/r4-search-params.json");

/// The kind of a search parameter (R4 `SearchParamType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamKind {
    /// number
    Number,
    /// date
    Date,
    /// string
    String,
    /// token
    Token,
    /// reference
    Reference,
    /// composite
    Composite,
    /// quantity
    Quantity,
    /// uri
    Uri,
    /// special
    Special,
}

/// One official R4 search parameter, as defined for one base type.
#[derive(Debug, Clone, Deserialize)]
#[serde(from = "(ParamKind, String, Vec<String>, Vec<(String, ParamKind, String)>)")]
pub struct SearchParamDef {
    /// Its kind.
    pub kind: ParamKind,
    /// Its FHIRPath expression, reduced to the alternatives rooted at the base; empty when the
    /// specification gives none.
    pub expression: String,
    /// Resource types a reference parameter may point to.
    pub targets: Vec<String>,
    /// For a composite: each component's parameter code, kind and expression relative to the
    /// composite's element.
    pub components: Vec<(String, ParamKind, String)>,
}

impl From<(ParamKind, String, Vec<String>, Vec<(String, ParamKind, String)>)> for SearchParamDef {
    fn from(
        (kind, expression, targets, components): (ParamKind, String, Vec<String>, Vec<(String, ParamKind, String)>),
    ) -> Self {
        SearchParamDef { kind, expression, targets, components }
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
    search: HashMap<String, HashMap<String, SearchParamDef>>,
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

    /// The official search parameter `code` of resource type `rt`, including those every
    /// resource has (`_id`, `_lastUpdated`, `_tag`…).
    pub fn search_param(&self, rt: &str, code: &str) -> Option<&SearchParamDef> {
        [rt, "DomainResource", "Resource"].iter().find_map(|b| self.search.get(*b).and_then(|m| m.get(code)))
    }

    /// Every official search parameter of resource type `rt` (its own and the common ones).
    pub fn search_params(&self, rt: &str) -> impl Iterator<Item = (&str, &SearchParamDef)> {
        [rt, "DomainResource", "Resource"]
            .into_iter()
            .filter_map(|b| self.search.get(b))
            .flat_map(|m| m.iter().map(|(k, v)| (k.as_str(), v)))
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
            search: serde_json::from_str(R4_SEARCH_PARAMS).unwrap_or_default(),
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
        assert!(s.elements("Patient")["name"].summary);
        assert!(!s.elements("Patient")["contact"].summary);
    }

    #[test]
    fn search_parameters_are_the_official_ones() {
        let s = r4();
        let name = s.search_param("Patient", "name").unwrap();
        assert_eq!(name.kind, ParamKind::String);
        assert_eq!(name.expression, "Patient.name");
        let subj = s.search_param("Observation", "patient").unwrap();
        assert_eq!(subj.kind, ParamKind::Reference);
        assert!(subj.targets.contains(&"Patient".to_string()));
        assert_eq!(s.search_param("Observation", "_lastUpdated").unwrap().kind, ParamKind::Date);
        let cvq = s.search_param("Observation", "code-value-quantity").unwrap();
        assert_eq!(cvq.components.len(), 2);
        assert!(s.search_param("Patient", "age").is_none(), "experimental examples are left out");
        let n: usize = s.resources().iter().map(|r| s.search_params(r).count()).sum();
        assert!(n > 1500, "{n}");
    }
}
