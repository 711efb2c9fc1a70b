//! Validation of R4 JSON against the generated catalogue: unknown elements, arrays where single
//! values belong (and back), wrong JSON kinds, primitive lexical errors (control characters
//! included), minimum cardinality, and **required** terminology bindings (the value sets expanded
//! from the official package). Each problem names its location as a FHIRPath expression
//! (`Observation.code`, `Patient.contact[0].gender`).
//!
//! Invariants (FHIRPath constraints) and bindings weaker than required are not checked here.

use mamori_fhir_schema::{Element, Schema, ValueSet};
use serde_json::{Map, Value};

use crate::{Issue, IssueCode, primitive};

/// Validates a parsed resource; returns every problem found (up to a bound), each with its path.
pub fn validate_resource(schema: &Schema, v: &Value) -> Vec<Issue> {
    let mut issues = Vec::new();
    resource(schema, v, "", &mut issues);
    issues
}

/// Validates `v` as an instance of the datatype or backbone element `type_path`
/// (`Bundle.entry`), reporting locations under `path` (`Bundle.entry[3]`).
pub fn validate_element(schema: &Schema, v: &Value, type_path: &str, path: &str) -> Vec<Issue> {
    let mut issues = Vec::new();
    typed(schema, v, type_path, path, &mut issues);
    issues
}

const MAX_ISSUES: usize = 50;

fn push(issues: &mut Vec<Issue>, code: IssueCode, path: &str, msg: String) {
    if issues.len() < MAX_ISSUES {
        issues.push(Issue::error(code, msg).at(path));
    }
}

fn resource(schema: &Schema, v: &Value, path: &str, issues: &mut Vec<Issue>) {
    let Some(obj) = v.as_object() else {
        push(issues, IssueCode::Structure, path, "a resource must be a JSON object".into());
        return;
    };
    let rt = match obj.get("resourceType") {
        Some(Value::String(rt)) if schema.is_resource(rt) => rt.as_str(),
        Some(Value::String(rt)) => {
            push(issues, IssueCode::NotSupported, path, format!("unknown resource type `{rt}`"));
            return;
        }
        _ => {
            push(issues, IssueCode::Structure, path, "missing or non-string `resourceType`".into());
            return;
        }
    };
    let here = if path.is_empty() { rt.to_string() } else { path.to_string() };
    if let Some(id) = obj.get("id")
        && !id.as_str().is_some_and(primitive::is_id)
    {
        push(issues, IssueCode::Value, &format!("{here}.id"), "`id` must be 1–64 characters of A–Z a–z 0–9 - .".into());
    }
    structure(schema, obj, rt, &here, true, issues);
}

/// Finds the element definition for a JSON key, resolving choice types (`valueQuantity`):
/// the element's name (`value[x]`), its definition and the chosen type of a choice.
fn lookup<'a>(schema: &'a Schema, type_path: &str, key: &str) -> Option<(&'a str, &'a Element, Option<String>)> {
    let elements = schema.elements(type_path);
    if let Some((name, e)) = elements.get_key_value(key) {
        return Some((name, e, None));
    }
    for (name, e) in elements {
        let Some(prefix) = name.strip_suffix("[x]") else {
            continue;
        };
        let Some(suffix) = key.strip_prefix(prefix) else {
            continue;
        };
        for t in &e.types {
            let mut chars = t.chars();
            let cap = match chars.next() {
                Some(c) => c.to_uppercase().chain(chars).collect::<String>(),
                None => continue,
            };
            if cap == suffix {
                return Some((name, e, Some(t.clone())));
            }
        }
    }
    None
}

fn structure(
    schema: &Schema,
    obj: &Map<String, Value>,
    type_path: &str,
    path: &str,
    is_resource: bool,
    issues: &mut Vec<Issue>,
) {
    if obj.is_empty() {
        push(issues, IssueCode::Structure, path, "empty object; omit the element instead".into());
    }
    for (key, value) in obj {
        if is_resource && (key == "resourceType" || key == "id") {
            continue;
        }
        let child_path = format!("{path}.{key}");
        if let Some(base) = key.strip_prefix('_') {
            // The companion of a primitive: its id and extensions.
            match lookup(schema, type_path, base) {
                Some((_, e, chosen))
                    if chosen
                        .as_deref()
                        .map_or_else(|| e.types.iter().all(|t| schema.is_primitive(t)), |t| schema.is_primitive(t)) =>
                {
                    companion(schema, value, e.many, &child_path, issues);
                }
                _ => push(issues, IssueCode::Structure, &child_path, format!("unknown element `{key}`")),
            }
            continue;
        }
        let Some((_, element, chosen)) = lookup(schema, type_path, key) else {
            push(issues, IssueCode::Structure, &child_path, format!("unknown element `{key}`"));
            continue;
        };
        let ty = match chosen {
            Some(t) => t,
            None => match element.types.as_slice() {
                [t] => t.clone(),
                _ => {
                    push(issues, IssueCode::Structure, &child_path, format!("`{key}` needs a type suffix"));
                    continue;
                }
            },
        };
        let has_companion = obj.contains_key(&format!("_{key}"));
        if element.many {
            match value {
                Value::Array(items) if !items.is_empty() => {
                    for (i, item) in items.iter().enumerate() {
                        let p = format!("{child_path}[{i}]");
                        if item.is_null() && has_companion && schema.is_primitive(&ty) {
                            continue;
                        }
                        typed(schema, item, &ty, &p, issues);
                        if let Some(vs) = &element.binding {
                            bound(vs, item, &ty, &p, issues);
                        }
                    }
                }
                Value::Array(_) => {
                    push(issues, IssueCode::Structure, &child_path, "empty array; omit the element instead".into())
                }
                _ => push(issues, IssueCode::Structure, &child_path, format!("`{key}` must be an array")),
            }
        } else if value.is_array() {
            push(issues, IssueCode::Structure, &child_path, format!("`{key}` must not be an array"));
        } else if !(value.is_null() && has_companion) {
            typed(schema, value, &ty, &child_path, issues);
            if let Some(vs) = &element.binding {
                bound(vs, value, &ty, &child_path, issues);
            }
        }
    }
    // The minimums: an element is present under its own name, as a choice variant, or as a
    // primitive with only its `_companion` (an extension in place of the value).
    for name in schema.required(type_path) {
        let present = obj.keys().any(|k| {
            let k = k.strip_prefix('_').unwrap_or(k);
            k == name.as_str() || lookup(schema, type_path, k).is_some_and(|(n, ..)| n == name.as_str())
        });
        if !present {
            let element = name.strip_suffix("[x]").unwrap_or(name);
            push(
                issues,
                IssueCode::Required,
                &format!("{path}.{element}"),
                format!("`{element}` is required (minimum cardinality 1) in {type_path}"),
            );
        }
    }
}

/// Checks a value against the value set of its element's required binding: a `code` must be one
/// of its codes; a `Coding` must carry a system and code from it; a `CodeableConcept` must hold
/// at least one such coding. Values of other types (and values already refused as malformed) are
/// left to the other checks.
fn bound(vs: &ValueSet, v: &Value, ty: &str, path: &str, issues: &mut Vec<Issue>) {
    let coding_in = |c: &Value| match (c.get("system").and_then(Value::as_str), c.get("code").and_then(Value::as_str)) {
        (Some(system), Some(code)) => vs.contains(system, code),
        _ => false,
    };
    let (ok, shown) = match ty {
        "code" => match v.as_str() {
            Some(code) => (vs.contains_code(code), format!("`{code}`")),
            None => return,
        },
        "Coding" => {
            if !v.is_object() {
                return;
            }
            (coding_in(v), coding_text(v))
        }
        "CodeableConcept" => {
            let codings = v.get("coding").and_then(Value::as_array);
            let ok = codings.is_some_and(|cs| cs.iter().any(coding_in));
            let shown = codings
                .map(|cs| cs.iter().map(coding_text).collect::<Vec<_>>().join(", "))
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "no coding".into());
            (ok, shown)
        }
        _ => return,
    };
    if !ok {
        let codes = vs.codes();
        let allowed = if codes.len() <= 12 { format!(" (one of: {})", codes.join(", ")) } else { String::new() };
        push(
            issues,
            IssueCode::CodeInvalid,
            path,
            format!("{shown} is not in the required value set {}{allowed}", vs.url),
        );
    }
}

fn coding_text(c: &Value) -> String {
    let system = c.get("system").and_then(Value::as_str).unwrap_or("(no system)");
    let code = c.get("code").and_then(Value::as_str).unwrap_or("(no code)");
    format!("`{system}|{code}`")
}

fn companion(schema: &Schema, value: &Value, many: bool, path: &str, issues: &mut Vec<Issue>) {
    let check = |v: &Value, p: &str, issues: &mut Vec<Issue>| match v {
        Value::Null if many => {}
        Value::Object(o) => structure(schema, o, "Element", p, false, issues),
        _ => push(issues, IssueCode::Structure, p, "a primitive's companion must be an object".into()),
    };
    match (many, value) {
        (true, Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                check(item, &format!("{path}[{i}]"), issues);
            }
        }
        (true, _) => push(issues, IssueCode::Structure, path, "must be an array".into()),
        (false, v) => check(v, path, issues),
    }
}

fn typed(schema: &Schema, v: &Value, ty: &str, path: &str, issues: &mut Vec<Issue>) {
    if schema.is_primitive(ty) {
        if let Err(msg) = primitive::check(ty, v) {
            push(issues, IssueCode::Value, path, msg);
        }
    } else if ty == "Resource" {
        resource(schema, v, path, issues);
    } else if let Some(o) = v.as_object() {
        if schema.has_structure(ty) {
            structure(schema, o, ty, path, false, issues);
        }
    } else {
        push(issues, IssueCode::Structure, path, format!("expected a JSON object ({ty})"));
    }
}
