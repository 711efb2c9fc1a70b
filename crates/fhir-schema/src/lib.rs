//! The FHIR R4 (4.0.1) structure definitions as data: which elements each resource, datatype and
//! backbone element has, their types, whether they repeat and whether they are required, and the
//! value sets of the **required** bindings, expanded from the same official package.
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
    /// Whether the element must be present (minimum cardinality 1).
    pub required: bool,
    /// The value set of its required binding, when R4 gives it one and the official package
    /// can expand it.
    pub binding: Option<std::sync::Arc<ValueSet>>,
}

impl From<(Vec<String>, u8)> for Element {
    fn from((types, flags): (Vec<String>, u8)) -> Self {
        Element { types, many: flags & 1 != 0, summary: flags & 2 != 0, required: flags & 4 != 0, binding: None }
    }
}

/// A value set of a required binding, expanded: the codes of each code system it draws on.
#[derive(Debug, Clone)]
pub struct ValueSet {
    /// Its canonical URL.
    pub url: String,
    systems: HashMap<String, HashSet<String>>,
}

impl ValueSet {
    /// Whether `system`|`code` is in the value set.
    pub fn contains(&self, system: &str, code: &str) -> bool {
        self.systems.get(system).is_some_and(|c| c.contains(code))
    }

    /// Whether `code` is in the value set from any of its systems (a `code` element, whose
    /// system is implied by the binding).
    pub fn contains_code(&self, code: &str) -> bool {
        self.systems.values().any(|c| c.contains(code))
    }

    /// Every code, sorted (for messages).
    pub fn codes(&self) -> Vec<&str> {
        let mut all: Vec<&str> = self.systems.values().flatten().map(String::as_str).collect();
        all.sort_unstable();
        all.dedup();
        all
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
    #[serde(default)]
    bindings: HashMap<String, String>,
    #[serde(default, rename = "valueSets")]
    value_sets: HashMap<String, Vec<(String, Vec<String>)>>,
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
    /// Required elements of each structure, sorted by name.
    required: HashMap<String, Vec<String>>,
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

    /// The names of the required children (minimum cardinality 1) of a structure, sorted;
    /// choice elements keep their `[x]`.
    pub fn required(&self, type_or_path: &str) -> &[String] {
        self.required.get(type_or_path).map_or(&[], Vec::as_slice)
    }

    /// The value set of the required binding on element `path` (`Observation.status`), if R4
    /// gives it one and the official package can expand it.
    pub fn required_binding(&self, path: &str) -> Option<&ValueSet> {
        let (parent, child) = path.rsplit_once('.')?;
        self.elements(parent).get(child)?.binding.as_deref()
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
        let mut raw: Raw = serde_json::from_str(R4_SCHEMA).unwrap_or(Raw {
            fhir_version: String::new(),
            primitives: Vec::new(),
            resources: Vec::new(),
            types: HashMap::new(),
            bindings: HashMap::new(),
            value_sets: HashMap::new(),
        });
        let required = raw
            .types
            .iter()
            .map(|(t, els)| {
                let mut names: Vec<String> = els.iter().filter(|(_, e)| e.required).map(|(n, _)| n.clone()).collect();
                names.sort();
                (t.clone(), names)
            })
            .filter(|(_, names)| !names.is_empty())
            .collect();
        let sets: HashMap<String, std::sync::Arc<ValueSet>> = raw
            .value_sets
            .into_iter()
            .map(|(url, systems)| {
                let systems = systems.into_iter().map(|(s, codes)| (s, codes.into_iter().collect())).collect();
                (url.clone(), std::sync::Arc::new(ValueSet { url, systems }))
            })
            .collect();
        for (path, url) in raw.bindings {
            let Some((parent, child)) = path.rsplit_once('.') else { continue };
            if let Some(e) = raw.types.get_mut(parent).and_then(|els| els.get_mut(child)) {
                e.binding = sets.get(&url).cloned();
            }
        }
        Schema {
            required,
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
        assert_eq!(s.required("Observation"), ["code", "status"]);
        assert_eq!(s.required("Encounter"), ["class", "status"]);
        assert!(s.required("Patient").is_empty());
        assert_eq!(s.required("Narrative"), ["div", "status"]);
    }

    #[test]
    fn required_bindings_come_expanded_from_the_package() {
        let s = r4();
        let status = s.required_binding("Observation.status").unwrap();
        assert!(status.contains_code("final") && !status.contains_code("bogus-code"));
        assert!(status.contains("http://hl7.org/fhir/observation-status", "final"));
        let gender = s.required_binding("Patient.gender").unwrap();
        assert_eq!(gender.codes(), ["female", "male", "other", "unknown"]);
        assert!(s.required_binding("Quantity.comparator").unwrap().contains_code("<="));
        let clinical = s.required_binding("Condition.clinicalStatus").unwrap();
        assert!(clinical.contains("http://terminology.hl7.org/CodeSystem/condition-clinical", "active"));
        assert!(s.required_binding("Observation.code").is_none(), "example bindings are not enforced");
        // Bindings the package cannot expand (BCP 13 media types) are not enforced.
        assert!(s.required_binding("Attachment.contentType").is_none());
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
