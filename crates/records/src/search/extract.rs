//! From a resource to its search index rows, for every official parameter of its type.

use std::collections::HashMap;
use std::sync::OnceLock;

use mamori_fhir_schema::{ParamKind, Schema};
use serde_json::Value;

use super::path::{self, Compiled, Node};
use super::{IndexValue, SearchRow, Table, normalize};

/// A search parameter of one resource type, compiled.
#[derive(Debug)]
pub struct ParamInfo {
    /// Code.
    pub code: String,
    /// Kind.
    pub kind: ParamKind,
    /// The compiled expression; `None` when the parameter cannot be indexed (no expression,
    /// `special`, or FHIRPath outside the supported subset).
    pub compiled: Option<Compiled>,
    /// Reference targets.
    pub targets: Vec<String>,
    /// Composite components (kind and expression relative to the composite's node).
    pub components: Vec<(ParamKind, Compiled)>,
    /// Where its index rows are kept.
    pub stored: Stored,
}

/// Where a parameter's index rows are kept. Most parameters have rows of their own; a parameter
/// whose expression is, by definition, another's narrowed or several others' union is answered
/// from their rows and writes none, so a write does not store the same value twice (issue #9:
/// an Observation carried `code` and `combo-code`, `value-quantity` and `combo-value-quantity`,
/// `code-value-quantity` and `combo-code-value-quantity`, `subject` and `patient` — a third of
/// its rows).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// Under its own code.
    Own,
    /// Under each of these codes: its expression is exactly the union of theirs (`combo-code` is
    /// `Observation.code | Observation.component.code`, the expressions of `code` and
    /// `component-code`). Not used for reference parameters.
    Union(Vec<String>),
    /// Under the reference parameter `param`, in the rows whose target is of `target_type`: its
    /// expression is `param`'s with `.where(resolve() is T)` (`patient` is
    /// `Observation.subject.where(resolve() is Patient)`).
    Narrowed {
        /// The reference parameter holding the rows.
        param: String,
        /// The target type those rows must have.
        target_type: String,
    },
}

/// The alternatives of a FHIRPath expression: its top-level `|` operands, trimmed.
fn alternatives(expr: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in expr.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            '|' if depth == 0 => {
                out.push(expr[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(expr[start..].trim());
    out
}

/// Where each parameter of one type keeps its rows, from the definitions' expressions.
fn storage(
    defs: &[(&str, &mamori_fhir_schema::SearchParamDef)],
    indexed: &dyn Fn(&str) -> bool,
) -> HashMap<String, Stored> {
    use std::collections::BTreeSet;
    let components = |d: &mamori_fhir_schema::SearchParamDef| -> Vec<(ParamKind, String)> {
        d.components.iter().map(|(_, k, e)| (*k, e.clone())).collect()
    };
    let mut out = HashMap::new();
    for (code, def) in defs {
        if !indexed(code) {
            continue;
        }
        let alts: BTreeSet<&str> = alternatives(&def.expression).into_iter().collect();
        if def.kind == ParamKind::Reference {
            // `X.where(resolve() is T)` where `X` is another reference parameter's expression.
            let narrowed = (alts.len() == 1)
                .then(|| def.expression.trim().strip_suffix(')'))
                .flatten()
                .and_then(|e| e.rsplit_once(".where(resolve() is "))
                .and_then(|(base, ty)| {
                    let (other, _) = defs.iter().find(|(c, d)| {
                        c != code && d.kind == ParamKind::Reference && indexed(c) && d.expression.trim() == base
                    })?;
                    Some(Stored::Narrowed { param: other.to_string(), target_type: ty.to_string() })
                });
            if let Some(n) = narrowed {
                out.insert(code.to_string(), n);
            }
            continue;
        }
        if alts.len() < 2 {
            continue;
        }
        // The parameters of the same kind (and, for composites, the same components) whose
        // alternatives are a strict subset of this one's; they cover it when their union is it.
        let mut parts: Vec<String> = Vec::new();
        let mut covered: BTreeSet<&str> = BTreeSet::new();
        for (other, d) in defs {
            if other == code || d.kind != def.kind || !indexed(other) || components(d) != components(def) {
                continue;
            }
            let theirs: BTreeSet<&str> = alternatives(&d.expression).into_iter().collect();
            if theirs.len() < alts.len() && theirs.is_subset(&alts) {
                covered.extend(theirs);
                parts.push(other.to_string());
            }
        }
        if covered == alts {
            parts.sort();
            out.insert(code.to_string(), Stored::Union(parts));
        }
    }
    // A parameter that holds another's rows keeps its own (no chains of aliases).
    let aliased: BTreeSet<String> = out.keys().cloned().collect();
    out.retain(|_, s| match s {
        Stored::Own => true,
        Stored::Union(parts) => parts.iter().all(|p| !aliased.contains(p)),
        Stored::Narrowed { param, .. } => !aliased.contains(param),
    });
    out
}

impl ParamInfo {
    /// The index table its rows go to; `None` when it is not indexed.
    pub fn table(&self) -> Option<Table> {
        self.compiled.as_ref()?;
        Some(match self.kind {
            ParamKind::String => Table::Str,
            ParamKind::Token | ParamKind::Uri => Table::Token,
            ParamKind::Date => Table::Date,
            ParamKind::Number | ParamKind::Quantity => Table::Number,
            ParamKind::Reference => Table::Ref,
            ParamKind::Composite => Table::Composite,
            ParamKind::Special => return None,
        })
    }
}

type Registry = HashMap<String, HashMap<String, ParamInfo>>;

fn registry() -> &'static Registry {
    static REG: OnceLock<Registry> = OnceLock::new();
    REG.get_or_init(|| {
        let s = mamori_fhir_schema::r4();
        let mut reg = Registry::new();
        for rt in s.resources() {
            let mut params: HashMap<String, ParamInfo> = HashMap::new();
            for (code, def) in s.search_params(rt) {
                // `_id` and `_lastUpdated` are answered from the version itself, not index rows.
                if code == "_id" || code == "_lastUpdated" || params.contains_key(code) {
                    continue;
                }
                let mut compiled = if def.expression.is_empty() { None } else { path::compile(rt, &def.expression) };
                let mut components = Vec::new();
                if def.kind == ParamKind::Composite {
                    for (_, kind, expr) in &def.components {
                        // Component expressions are relative: compile them under a stand-in root.
                        match path::compile("X", &format!("X.{expr}")) {
                            Some(c) => components.push((*kind, c)),
                            None => compiled = None,
                        }
                    }
                    // Only token-first pairs are indexed (every R4 composite has that shape).
                    if components.len() != 2 || def.components.first().map(|c| c.1) != Some(ParamKind::Token) {
                        compiled = None;
                    }
                }
                params.insert(
                    code.to_string(),
                    ParamInfo {
                        code: code.to_string(),
                        kind: def.kind,
                        compiled,
                        targets: def.targets.clone(),
                        components,
                        stored: Stored::Own,
                    },
                );
            }
            let mut seen = std::collections::HashSet::new();
            let defs: Vec<_> =
                s.search_params(rt).filter(|(c, _)| params.contains_key(*c) && seen.insert(*c)).collect();
            let indexed = |c: &str| params.get(c).is_some_and(|p| p.table().is_some());
            for (code, stored) in storage(&defs, &indexed) {
                if let Some(p) = params.get_mut(&code) {
                    p.stored = stored;
                }
            }
            reg.insert(rt.clone(), params);
        }
        reg
    })
}

/// The compiled parameter `code` of `rt`.
pub fn param(rt: &str, code: &str) -> Option<&'static ParamInfo> {
    registry().get(rt)?.get(code)
}

/// Every parameter of `rt`.
pub fn params(rt: &str) -> impl Iterator<Item = &'static ParamInfo> {
    registry().get(rt).into_iter().flat_map(|m| m.values())
}

/// The index rows of a resource of type `rt`.
pub fn rows_for(rt: &str, body: &Value) -> Vec<SearchRow> {
    let schema = mamori_fhir_schema::r4();
    let mut out: Vec<SearchRow> = Vec::new();
    for p in params(rt) {
        let Some(compiled) = &p.compiled else { continue };
        if p.stored != Stored::Own {
            continue;
        }
        for node in path::eval(schema, rt, body, compiled) {
            let values = if p.kind == ParamKind::Composite {
                composite(schema, p, &node)
            } else {
                values(schema, p.kind, &node)
            };
            for value in values {
                let row = SearchRow { param: p.code.clone(), value };
                if !out.contains(&row) {
                    out.push(row);
                }
            }
        }
    }
    out
}

fn composite(schema: &Schema, p: &ParamInfo, node: &Node<'_>) -> Vec<IndexValue> {
    let mut out = Vec::new();
    let [(k1, c1), (k2, c2)] = p.components.as_slice() else { return out };
    let firsts: Vec<IndexValue> =
        path::eval_from(schema, node, c1).iter().flat_map(|n| values(schema, *k1, n)).collect();
    let seconds: Vec<IndexValue> =
        path::eval_from(schema, node, c2).iter().flat_map(|n| values(schema, *k2, n)).collect();
    for f in &firsts {
        let IndexValue::Token { system, code, .. } = f else { continue };
        for s in &seconds {
            out.push(IndexValue::Composite { system: system.clone(), code: code.clone(), second: Box::new(s.clone()) });
        }
    }
    out
}

fn s<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

fn strs<'a>(v: &'a Value, key: &str) -> Vec<&'a str> {
    match v.get(key) {
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        Some(Value::String(x)) => vec![x.as_str()],
        _ => Vec::new(),
    }
}

fn string_value(x: &str) -> IndexValue {
    IndexValue::Str { norm: normalize::string(x), exact: x.to_string() }
}

fn token(system: Option<&str>, code: &str, text: Option<&str>) -> IndexValue {
    IndexValue::Token {
        system: system.unwrap_or("").to_string(),
        code: code.to_string(),
        text: text.map(normalize::string).unwrap_or_default(),
    }
}

/// The value an extension carries, as a node.
fn extension_value<'a>(schema: &'a Schema, node: &Node<'a>) -> Option<Node<'a>> {
    path::children(schema, &Node { v: node.v, ty: "Extension" }, "value").into_iter().next()
}

/// The index values of one node for a parameter of `kind`.
pub fn values(schema: &Schema, kind: ParamKind, node: &Node<'_>) -> Vec<IndexValue> {
    if node.ty == "Extension" {
        return extension_value(schema, node).map(|n| values(schema, kind, &n)).unwrap_or_default();
    }
    let v = node.v;
    let ty = node.ty;
    let mut out = Vec::new();
    match kind {
        ParamKind::String => match ty {
            "HumanName" => {
                let family = s(v, "family");
                for part in family.into_iter().chain(strs(v, "given")).chain(strs(v, "prefix")).chain(strs(v, "suffix"))
                {
                    out.push(string_value(part));
                }
                if let Some(t) = s(v, "text") {
                    out.push(string_value(t));
                }
                // The whole name as written in Japanese order (family then given), so 山田太郎
                // and やまだたろう find it without a space.
                let given = strs(v, "given").concat();
                if let Some(f) = family
                    && !given.is_empty()
                {
                    out.push(string_value(&format!("{f}{given}")));
                }
            }
            "Address" => {
                for key in ["line", "city", "district", "state", "postalCode", "country", "text"] {
                    out.extend(strs(v, key).into_iter().map(string_value));
                }
            }
            _ => out.extend(v.as_str().map(string_value)),
        },
        ParamKind::Token => match ty {
            "Coding" => {
                if let Some(c) = s(v, "code") {
                    out.push(token(s(v, "system"), c, s(v, "display")));
                }
            }
            "CodeableConcept" => {
                let text = s(v, "text");
                for c in v.get("coding").and_then(Value::as_array).into_iter().flatten() {
                    if let Some(code) = s(c, "code") {
                        out.push(token(s(c, "system"), code, s(c, "display").or(text)));
                    }
                }
                if let Some(t) = text
                    && out.is_empty()
                {
                    out.push(token(None, "", Some(t)));
                }
            }
            "Identifier" => {
                if let Some(val) = s(v, "value") {
                    out.push(token(s(v, "system"), val, v.get("type").and_then(|t| s(t, "text"))));
                }
            }
            "ContactPoint" => out.extend(s(v, "value").map(|val| token(None, val, None))),
            _ => match v {
                Value::Bool(b) => out.push(token(None, if *b { "true" } else { "false" }, None)),
                Value::String(x) => out.push(token(None, x, None)),
                _ => {}
            },
        },
        ParamKind::Uri => out.extend(v.as_str().map(|x| token(None, x, None))),
        ParamKind::Date => match ty {
            "Period" => {
                let lo = s(v, "start").and_then(normalize::date_range).map_or(i64::MIN, |r| r.0);
                let hi = s(v, "end").and_then(normalize::date_range).map_or(i64::MAX, |r| r.1);
                if v.get("start").is_some() || v.get("end").is_some() {
                    // Every stored range has `lo <= hi`, which the searches' bounds rely on
                    // (`sql.rs`): a Period that ends before it starts (R4's per-1 forbids it) is
                    // the range between its two ends.
                    let (lo, hi) = (lo.min(hi), lo.max(hi));
                    out.push(IndexValue::Date { lo, hi });
                }
            }
            "Timing" => {
                for e in strs(v, "event") {
                    out.extend(normalize::date_range(e).map(|(lo, hi)| IndexValue::Date { lo, hi }));
                }
            }
            "date" | "dateTime" | "instant" => {
                out.extend(v.as_str().and_then(normalize::date_range).map(|(lo, hi)| IndexValue::Date { lo, hi }));
            }
            _ => {}
        },
        ParamKind::Number | ParamKind::Quantity => match ty {
            "Range" => {
                let low = v.get("low");
                let lo = low.and_then(|q| q.get("value")).and_then(Value::as_f64).unwrap_or(f64::NEG_INFINITY);
                let hi = v.get("high").and_then(|q| q.get("value")).and_then(Value::as_f64).unwrap_or(f64::INFINITY);
                let unit = low.or(v.get("high"));
                // `lo <= hi`, as for a Period: a Range whose low is above its high (rng-2 forbids
                // it) is the range between its two ends.
                let (lo, hi) = (lo.min(hi), lo.max(hi));
                if lo.is_finite() || hi.is_finite() {
                    out.push(IndexValue::Number {
                        lo,
                        hi,
                        system: unit.and_then(|u| s(u, "system")).unwrap_or("").to_string(),
                        code: unit.and_then(|u| s(u, "code").or(s(u, "unit"))).unwrap_or("").to_string(),
                    });
                }
            }
            "Quantity" | "Age" | "Duration" | "Distance" | "Count" | "Money" | "SimpleQuantity" | "MoneyQuantity" => {
                if let Some(x) = v.get("value").and_then(Value::as_f64) {
                    out.push(IndexValue::Number {
                        lo: x,
                        hi: x,
                        system: s(v, "system").unwrap_or("").to_string(),
                        code: s(v, "code").or(s(v, "unit")).or(s(v, "currency")).unwrap_or("").to_string(),
                    });
                }
            }
            _ => out.extend(v.as_f64().map(|x| IndexValue::Number {
                lo: x,
                hi: x,
                system: String::new(),
                code: String::new(),
            })),
        },
        ParamKind::Reference => match ty {
            "Reference" => out.extend(s(v, "reference").and_then(reference_value)),
            _ => {
                out.extend(v.as_str().map(|u| IndexValue::Ref { ty: String::new(), id: String::new(), url: u.into() }))
            }
        },
        ParamKind::Composite | ParamKind::Special => {}
    }
    out
}

/// A reference string as an index value: local `Type/id` (with or without a base URL or a
/// version), or a URL/URN kept as written. Contained references (`#x`) are not indexed.
pub fn reference_value(r: &str) -> Option<IndexValue> {
    if r.starts_with('#') || r.is_empty() {
        return None;
    }
    let unversioned = r.split("/_history/").next().unwrap_or(r);
    let absolute = r.contains("://") || r.starts_with("urn:");
    let local = path::reference_type(unversioned).and_then(|ty| {
        let id = unversioned.rsplit('/').next()?;
        crate::primitive::is_id(id).then(|| (ty.to_string(), id.to_string()))
    });
    match local {
        Some((ty, id)) => Some(IndexValue::Ref { ty, id, url: if absolute { r.to_string() } else { String::new() } }),
        None => Some(IndexValue::Ref { ty: String::new(), id: String::new(), url: r.to_string() }),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn of(rows: &[SearchRow], param: &str) -> Vec<IndexValue> {
        rows.iter().filter(|r| r.param == param).map(|r| r.value.clone()).collect()
    }

    #[test]
    fn patient_rows() {
        let p = json!({"resourceType": "Patient", "id": "p1",
            "meta": {"lastUpdated": "2024-01-01T00:00:00Z", "tag": [{"system": "urn:t", "code": "x"}]},
            "identifier": [{"system": "urn:oid:1.2.392.100495.20.3.51.1", "value": "12345"}],
            "name": [{"family": "山田", "given": ["太郎"]}, {"family": "ヤマダ", "given": ["タロウ"], "extension": []}],
            "gender": "male", "birthDate": "1970-04-01", "active": true,
            "telecom": [{"system": "phone", "value": "03-1234-5678"}],
            "generalPractitioner": [{"reference": "Practitioner/dr1"}]});
        let rows = rows_for("Patient", &p);
        let names = of(&rows, "name");
        assert!(names.contains(&IndexValue::Str { norm: "やまだ".into(), exact: "ヤマダ".into() }));
        assert!(names.contains(&IndexValue::Str { norm: "山田太郎".into(), exact: "山田太郎".into() }));
        assert_eq!(of(&rows, "family").len(), 2);
        assert_eq!(
            of(&rows, "identifier"),
            vec![IndexValue::Token {
                system: "urn:oid:1.2.392.100495.20.3.51.1".into(),
                code: "12345".into(),
                text: String::new()
            }]
        );
        assert_eq!(of(&rows, "gender").len(), 1);
        assert_eq!(
            of(&rows, "active"),
            vec![IndexValue::Token { system: String::new(), code: "true".into(), text: String::new() }]
        );
        assert_eq!(of(&rows, "birthdate").len(), 1);
        assert_eq!(of(&rows, "phone").len(), 1);
        assert!(of(&rows, "email").is_empty());
        assert_eq!(
            of(&rows, "general-practitioner"),
            vec![IndexValue::Ref { ty: "Practitioner".into(), id: "dr1".into(), url: String::new() }]
        );
        assert_eq!(of(&rows, "_tag").len(), 1);
        assert!(of(&rows, "_lastUpdated").is_empty(), "answered from the version's own time");
        assert_eq!(
            of(&rows, "deceased"),
            vec![IndexValue::Token { system: String::new(), code: "false".into(), text: String::new() }]
        );
    }

    #[test]
    fn observation_rows_with_composites() {
        let o = json!({"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6", "display": "Systolic"}]},
            "subject": {"reference": "Patient/p1"}, "effectiveDateTime": "2024-05-01T10:00:00+09:00",
            "valueQuantity": {"value": 120, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}});
        let rows = rows_for("Observation", &o);
        // `patient` is answered from the `subject` rows that point at a Patient.
        assert!(of(&rows, "patient").is_empty());
        assert_eq!(
            of(&rows, "subject"),
            vec![IndexValue::Ref { ty: "Patient".into(), id: "p1".into(), url: String::new() }]
        );
        assert_eq!(of(&rows, "code").len(), 1);
        assert_eq!(of(&rows, "date").len(), 1);
        assert_eq!(
            of(&rows, "value-quantity"),
            vec![IndexValue::Number {
                lo: 120.0,
                hi: 120.0,
                system: "http://unitsofmeasure.org".into(),
                code: "mm[Hg]".into()
            }]
        );
        let cvq = of(&rows, "code-value-quantity");
        assert_eq!(cvq.len(), 1);
        assert!(matches!(&cvq[0], IndexValue::Composite { code, .. } if code == "8480-6"));
        // The `combo-*` parameters are unions of these and the `component-*` ones: no rows.
        for combo in ["combo-code", "combo-value-quantity", "combo-code-value-quantity"] {
            assert!(of(&rows, combo).is_empty(), "{combo}");
        }
        assert_eq!(rows.len(), 6, "{rows:?}");
        let o = json!({"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
            "component": [{"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
                "valueQuantity": {"value": 120, "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}}]});
        let rows = rows_for("Observation", &o);
        assert_eq!(of(&rows, "component-code").len(), 1);
        assert_eq!(of(&rows, "component-value-quantity").len(), 1);
        assert_eq!(of(&rows, "component-code-value-quantity").len(), 1);
    }

    #[test]
    fn alternatives_split_at_the_top_level_only() {
        assert_eq!(
            alternatives("(Observation.value as Quantity) | (Observation.value as SampledData)"),
            vec!["(Observation.value as Quantity)", "(Observation.value as SampledData)"]
        );
        assert_eq!(alternatives("Observation.code"), vec!["Observation.code"]);
        assert_eq!(alternatives("a.where((b | c).exists()) | d"), vec!["a.where((b | c).exists())", "d"]);
    }

    #[test]
    fn parameters_kept_in_others_rows() {
        let stored = |rt: &str, code: &str| param(rt, code).unwrap().stored.clone();
        let union = |v: &[&str]| Stored::Union(v.iter().map(|s| (*s).to_string()).collect());
        let narrowed = |p: &str, t: &str| Stored::Narrowed { param: p.into(), target_type: t.into() };
        assert_eq!(stored("Observation", "combo-code"), union(&["code", "component-code"]));
        assert_eq!(
            stored("Observation", "combo-value-quantity"),
            union(&["component-value-quantity", "value-quantity"])
        );
        assert_eq!(
            stored("Observation", "combo-code-value-quantity"),
            union(&["code-value-quantity", "component-code-value-quantity"])
        );
        assert_eq!(stored("Observation", "patient"), narrowed("subject", "Patient"));
        assert_eq!(stored("Encounter", "practitioner"), narrowed("participant", "Practitioner"));
        assert_eq!(stored("Provenance", "patient"), narrowed("target", "Patient"));
        // Their sources keep rows of their own; so do parameters that only resemble another.
        for (rt, code) in [
            ("Observation", "code"),
            ("Observation", "subject"),
            ("Observation", "value-quantity"),
            ("Observation", "value-string"),
            ("Patient", "name"),
            ("Patient", "family"),
            ("AllergyIntolerance", "patient"),
        ] {
            assert_eq!(stored(rt, code), Stored::Own, "{rt}.{code}");
        }
        // No parameter is kept in the rows of one that is itself kept elsewhere.
        for rt in mamori_fhir_schema::r4().resources() {
            for p in params(rt) {
                let sources: Vec<&str> = match &p.stored {
                    Stored::Own => continue,
                    Stored::Union(parts) => parts.iter().map(String::as_str).collect(),
                    Stored::Narrowed { param, .. } => vec![param.as_str()],
                };
                for s in sources {
                    let src = param(rt, s).unwrap();
                    assert_eq!(src.stored, Stored::Own, "{rt}.{} from {s}", p.code);
                    assert_eq!(src.table(), p.table(), "{rt}.{} from {s}", p.code);
                }
            }
        }
    }

    #[test]
    fn references() {
        assert_eq!(
            reference_value("http://h/fhir/Patient/1/_history/3"),
            Some(IndexValue::Ref {
                ty: "Patient".into(),
                id: "1".into(),
                url: "http://h/fhir/Patient/1/_history/3".into()
            })
        );
        assert_eq!(reference_value("#c"), None);
        assert_eq!(
            reference_value("urn:uuid:0b1c"),
            Some(IndexValue::Ref { ty: String::new(), id: String::new(), url: "urn:uuid:0b1c".into() })
        );
    }
}
