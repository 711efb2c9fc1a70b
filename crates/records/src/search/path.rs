//! The subset of FHIRPath that the R4 SearchParameter expressions use, compiled once and
//! evaluated on a resource's JSON with the structure definitions supplying each element's type:
//! paths, `|` unions, `as T` / `.as(T)` / `.ofType(T)`, `.where(resolve() is T)`,
//! `.where(field='literal')`, `.where(hasExtension('url'))`, `.extension('url')` and the one
//! boolean form `X.exists() and X != false`. An expression outside the subset compiles to
//! `None` and its parameter is reported as unsupported rather than silently matching nothing.

use mamori_fhir_schema::Schema;
use serde_json::Value;

/// One step of a compiled path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A child element (a choice element by its base name selects every `name[Type]`).
    Child(String),
    /// Keep nodes of this type.
    As(String),
    /// Keep references to this resource type.
    ResolveIs(String),
    /// Keep nodes whose `field` equals the literal.
    WhereEq(String, String),
    /// Keep nodes carrying an extension with this URL.
    HasExtension(String),
    /// Extensions with this URL.
    Extension(String),
    /// `exists() and != false`: one boolean.
    Truthy,
    /// `[n]`: the n-th node.
    Index(usize),
}

/// A compiled expression: alternatives, each a list of steps from the resource root.
pub type Compiled = Vec<Vec<Step>>;

/// A node reached by a path: the JSON and its FHIR type (`string`, `HumanName`,
/// `Patient.contact`…).
#[derive(Debug, Clone)]
pub struct Node<'a> {
    /// The value.
    pub v: &'a Value,
    /// Its type (borrowed from the structure definitions, the compiled path or the resource:
    /// no allocation per node).
    pub ty: &'a str,
}

static TRUE: Value = Value::Bool(true);
static FALSE: Value = Value::Bool(false);

/// Compiles the expression of a parameter defined on `rt`.
pub fn compile(rt: &str, expr: &str) -> Option<Compiled> {
    let mut out = Vec::new();
    for alt in split_top(expr, " | ") {
        out.push(compile_alt(rt, alt.trim())?);
    }
    if out.is_empty() { None } else { Some(out) }
}

/// Splits at `sep` outside parentheses and quotes.
fn split_top<'s>(s: &'s str, sep: &str) -> Vec<&'s str> {
    let mut out = Vec::new();
    let (mut depth, mut quoted, mut start) = (0i32, false, 0usize);
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes.get(i) {
            Some(b'\'') => quoted = !quoted,
            Some(b'(') if !quoted => depth += 1,
            Some(b')') if !quoted => depth -= 1,
            _ if !quoted && depth == 0 && s.get(i..).is_some_and(|r| r.starts_with(sep)) => {
                out.push(s.get(start..i).unwrap_or(""));
                i += sep.len();
                start = i;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    out.push(s.get(start..).unwrap_or(""));
    out
}

fn is_ident(s: &str) -> bool {
    let mut c = s.chars();
    c.next().is_some_and(|f| f.is_ascii_alphabetic()) && c.all(|x| x.is_ascii_alphanumeric())
}

fn quoted(s: &str) -> Option<String> {
    s.strip_prefix('\'')?.strip_suffix('\'').map(str::to_string)
}

fn compile_alt(rt: &str, s: &str) -> Option<Vec<Step>> {
    if let [lhs, rhs] = split_top(s, " and ").as_slice() {
        // `X.exists() and X != false`
        let x = lhs.strip_suffix(".exists()")?;
        if rhs.trim() != format!("{x} != false") {
            return None;
        }
        let mut steps = compile_alt(rt, x)?;
        steps.push(Step::Truthy);
        return Some(steps);
    }
    if let [lhs, ty] = split_top(s, " as ").as_slice() {
        let mut steps = compile_alt(rt, lhs.trim())?;
        let ty = ty.trim();
        if !is_ident(ty) {
            return None;
        }
        steps.push(Step::As(ty.to_string()));
        return Some(steps);
    }
    let (mut steps, rest) = if let Some(inner) = s.strip_prefix('(') {
        let close = matching_paren(inner)?;
        let steps = compile_alt(rt, inner.get(..close)?)?;
        (steps, inner.get(close + 1..)?.to_string())
    } else {
        let segs = split_top(s, ".");
        let (root, rest) = segs.split_first()?;
        let rest = rest.iter().map(|r| format!(".{r}")).collect::<String>();
        if root.starts_with(|c: char| c.is_ascii_lowercase()) {
            // Unrooted (`name | alias`): relative to the resource.
            (Vec::new(), format!(".{root}{rest}"))
        } else if *root != rt && *root != "Resource" && *root != "DomainResource" {
            return None;
        } else {
            (Vec::new(), rest)
        }
    };
    if !rest.is_empty() {
        let rest = rest.strip_prefix('.')?;
        for seg in split_top(rest, ".") {
            match seg.strip_suffix(']').and_then(|x| x.split_once('[')) {
                Some((name, n)) => {
                    steps.push(step(name)?);
                    steps.push(Step::Index(n.parse().ok()?));
                }
                None => steps.push(step(seg)?),
            }
        }
    }
    Some(steps)
}

fn matching_paren(s: &str) -> Option<usize> {
    let mut depth = 1i32;
    let mut quoted = false;
    for (i, b) in s.bytes().enumerate() {
        match b {
            b'\'' => quoted = !quoted,
            b'(' if !quoted => depth += 1,
            b')' if !quoted => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

fn step(seg: &str) -> Option<Step> {
    if is_ident(seg) {
        return Some(Step::Child(seg.to_string()));
    }
    let (f, arg) = seg.strip_suffix(')')?.split_once('(')?;
    match f {
        "as" | "ofType" if is_ident(arg) => Some(Step::As(arg.to_string())),
        "extension" => Some(Step::Extension(quoted(arg)?)),
        "where" => {
            if let Some(ty) = arg.strip_prefix("resolve() is ") {
                return is_ident(ty).then(|| Step::ResolveIs(ty.to_string()));
            }
            if let Some(url) = arg.strip_prefix("hasExtension(").and_then(|a| a.strip_suffix(')')) {
                return Some(Step::HasExtension(quoted(url)?));
            }
            let (field, lit) = arg.split_once('=')?;
            is_ident(field).then_some(())?;
            Some(Step::WhereEq(field.to_string(), quoted(lit)?))
        }
        _ => None,
    }
}

fn push_all<'a>(out: &mut Vec<Node<'a>>, v: &'a Value, ty: &'a str) {
    match v {
        Value::Array(items) => out.extend(items.iter().map(|i| Node { v: i, ty })),
        Value::Null => {}
        v => out.push(Node { v, ty }),
    }
}

/// Whether `suffix` is the type name `t` with its first letter capitalised (`Quantity` for
/// `Quantity`, `DateTime` for `dateTime`): how a choice element names its type.
fn is_capitalized(suffix: &str, t: &str) -> bool {
    let (mut s, mut c) = (suffix.chars(), t.chars());
    match (s.next(), c.next()) {
        (Some(a), Some(b)) => a == b.to_ascii_uppercase() && s.as_str() == c.as_str(),
        _ => false,
    }
}

/// The resource type a reference string points to (`Patient/1`, `http://x/fhir/Patient/1`,
/// `Patient/1/_history/2`).
pub fn reference_type(r: &str) -> Option<&str> {
    let r = r.split("/_history/").next().unwrap_or(r);
    let mut it = r.rsplit('/');
    let _id = it.next()?;
    it.next().filter(|t| t.chars().next().is_some_and(|c| c.is_ascii_uppercase()))
}

/// The child `name` of `node`: with a choice element, every `name[Type]` present.
pub fn children<'a>(schema: &'a Schema, node: &Node<'a>, name: &str) -> Vec<Node<'a>> {
    let mut out = Vec::new();
    let Value::Object(obj) = node.v else { return out };
    let ty = if node.ty == "Resource" {
        obj.get("resourceType").and_then(Value::as_str).unwrap_or("Resource")
    } else {
        node.ty
    };
    let els = schema.elements(ty);
    if let Some(el) = els.get(name) {
        if let Some(v) = obj.get(name) {
            push_all(&mut out, v, el.types.first().map_or("Element", String::as_str));
        }
    } else if let Some(el) = els.get(&format!("{name}[x]")) {
        // The element present under its type's name (`valueQuantity`), found by scanning the
        // object's few keys rather than building every `name[Type]`.
        for (k, v) in obj {
            if let Some(suffix) = k.strip_prefix(name)
                && let Some(t) = el.types.iter().find(|t| is_capitalized(suffix, t))
            {
                push_all(&mut out, v, t);
            }
        }
    }
    out
}

/// Evaluates a compiled expression on a resource of type `rt`.
pub fn eval<'a>(schema: &'a Schema, rt: &'a str, root: &'a Value, compiled: &'a Compiled) -> Vec<Node<'a>> {
    eval_from(schema, &Node { v: root, ty: rt }, compiled)
}

/// Evaluates a compiled expression from `start` (the root step is `start` itself).
pub fn eval_from<'a>(schema: &'a Schema, start: &Node<'a>, compiled: &'a Compiled) -> Vec<Node<'a>> {
    let mut out = Vec::new();
    for steps in compiled {
        let mut nodes = vec![start.clone()];
        for s in steps {
            nodes = match s {
                Step::Child(name) => nodes.iter().flat_map(|n| children(schema, n, name)).collect(),
                Step::As(t) => nodes.into_iter().filter(|n| n.ty == t).collect(),
                Step::ResolveIs(t) => nodes
                    .into_iter()
                    .filter(|n| {
                        n.v.get("reference").and_then(Value::as_str).and_then(reference_type) == Some(t.as_str())
                    })
                    .collect(),
                Step::WhereEq(field, lit) => {
                    nodes.into_iter().filter(|n| n.v.get(field).and_then(Value::as_str) == Some(lit.as_str())).collect()
                }
                Step::HasExtension(url) => nodes.into_iter().filter(|n| !extensions(n.v, url).is_empty()).collect(),
                Step::Extension(url) => {
                    nodes.iter().flat_map(|n| extensions(n.v, url)).map(|v| Node { v, ty: "Extension" }).collect()
                }
                Step::Index(i) => nodes.into_iter().nth(*i).into_iter().collect(),
                Step::Truthy => {
                    let truthy = nodes.iter().any(|n| n.v.as_bool() != Some(false));
                    vec![Node { v: if truthy { &TRUE } else { &FALSE }, ty: "boolean" }]
                }
            };
        }
        out.extend(nodes);
    }
    out
}

fn extensions<'a>(v: &'a Value, url: &str) -> Vec<&'a Value> {
    v.get("extension")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter(|e| e.get("url").and_then(Value::as_str) == Some(url)).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn values(rt: &str, expr: &str, res: &Value) -> Vec<(String, Value)> {
        let c = compile(rt, expr).unwrap_or_else(|| unreachable!("{expr} does not compile"));
        eval(mamori_fhir_schema::r4(), rt, res, &c).into_iter().map(|n| (n.ty.to_string(), n.v.clone())).collect()
    }

    #[test]
    fn every_official_expression_compiles_or_is_knowingly_special() {
        let s = mamori_fhir_schema::r4();
        let mut failed = Vec::new();
        for rt in s.resources() {
            for (code, p) in s.search_params(rt) {
                if !p.expression.is_empty() && compile(rt, &p.expression).is_none() {
                    failed.push(format!("{rt}.{code}: {}", p.expression));
                }
            }
        }
        assert!(failed.is_empty(), "{failed:#?}");
    }

    #[test]
    fn paths_choices_and_filters() {
        let obs = json!({"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
            "subject": {"reference": "Patient/p1"},
            "valueQuantity": {"value": 72, "unit": "/min"},
            "component": [{"code": {"text": "a"}, "valueString": "x"}]});
        let v = values("Observation", "(Observation.value as Quantity)", &obs);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].0, "Quantity");
        assert!(values("Observation", "(Observation.value as CodeableConcept)", &obs).is_empty());
        assert_eq!(values("Observation", "Observation.subject.where(resolve() is Patient)", &obs).len(), 1);
        assert!(values("Observation", "Observation.subject.where(resolve() is Group)", &obs).is_empty());
        assert_eq!(values("Observation", "Observation.component.value.as(string)", &obs)[0].1, json!("x"));
        let pat = json!({"resourceType": "Patient", "telecom": [{"system": "phone", "value": "1"}, {"system": "email", "value": "a@b"}],
            "deceasedDateTime": "2020-01-01"});
        assert_eq!(values("Patient", "Patient.telecom.where(system='email')", &pat)[0].1["value"], json!("a@b"));
        let dec = "Patient.deceased.exists() and Patient.deceased != false";
        assert_eq!(values("Patient", dec, &pat)[0].1, json!(true));
        assert_eq!(values("Patient", dec, &json!({"resourceType": "Patient"}))[0].1, json!(false));
        assert_eq!(
            values("Patient", dec, &json!({"resourceType": "Patient", "deceasedBoolean": false}))[0].1,
            json!(false)
        );
        assert!(compile("Patient", "Patient.name.select(x)").is_none());
        assert!(compile("Patient", "Observation.code").is_none());
        assert_eq!(reference_type("http://x/fhir/Patient/1/_history/2"), Some("Patient"));
        assert_eq!(reference_type("#c1"), None);
    }
}
