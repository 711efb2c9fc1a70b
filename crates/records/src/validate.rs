//! Structural validation of R4 JSON against the generated catalogue: unknown elements, arrays
//! where single values belong (and back), wrong JSON kinds and primitive lexical errors.
//!
//! Cardinality minimums, invariants and terminology bindings are not checked here.

use mamori_fhir_schema::{Element, Schema};
use serde_json::{Map, Value};

use crate::{Issue, IssueCode, primitive};

/// Validates a parsed resource; returns every problem found (up to a bound), each with its path.
pub fn validate_resource(schema: &Schema, v: &Value) -> Vec<Issue> {
    let mut issues = Vec::new();
    resource(schema, v, "", &mut issues);
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

/// Finds the element definition for a JSON key, resolving choice types (`valueQuantity`).
fn lookup<'a>(schema: &'a Schema, type_path: &str, key: &str) -> Option<(&'a Element, Option<String>)> {
    let elements = schema.elements(type_path);
    if let Some(e) = elements.get(key) {
        return Some((e, None));
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
                return Some((e, Some(t.clone())));
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
                Some((e, chosen))
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
        let Some((element, chosen)) = lookup(schema, type_path, key) else {
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
        }
    }
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
