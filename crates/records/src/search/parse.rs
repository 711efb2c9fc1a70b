//! A search query string → criteria and result parameters, against the official parameter
//! definitions of the type searched.

use mamori_fhir_schema::ParamKind;

use super::extract::{self, ParamInfo};
use super::{Criterion, Cursor, Pred, Prefix, SearchQuery, SortKey, SortVal, StrMode, Table, normalize};
use crate::{IssueCode, RecordError};

/// Largest page.
pub const MAX_COUNT: usize = 1000;
/// Page size when `_count` is not given.
pub const DEFAULT_COUNT: usize = 50;

/// `_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TotalMode {
    /// Not asked: given when the first page holds every match.
    Default,
    /// `none`
    None,
    /// `estimate`
    Estimate,
    /// `accurate`
    Accurate,
}

/// `_summary`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Summary {
    /// Whole resources (`false` or not given).
    False,
    /// Summary elements only.
    True,
    /// Text, id, meta and mandatory elements.
    Text,
    /// Everything but the narrative.
    Data,
    /// Only the count.
    Count,
}

/// `_include` / `_revinclude`: `Source:param[:Target]`, or `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Include {
    /// The type holding the reference.
    pub source: String,
    /// Its reference parameter; `None` for `*` (every reference parameter).
    pub param: Option<String>,
    /// Restrict to targets of this type.
    pub target: Option<String>,
    /// `:iterate` (applied once more to what was included).
    pub iterate: bool,
}

/// A parsed search.
#[derive(Debug, Clone)]
pub struct SearchRequest {
    /// Criteria, order and start.
    pub query: SearchQuery,
    /// Page size.
    pub count: usize,
    /// `_total`.
    pub total: TotalMode,
    /// `_summary`.
    pub summary: Summary,
    /// `_elements`.
    pub elements: Option<Vec<String>>,
    /// `_include`.
    pub include: Vec<Include>,
    /// `_revinclude`.
    pub revinclude: Vec<Include>,
    /// Parameters not used (lenient handling), with why.
    pub ignored: Vec<String>,
    /// The parameters used, as `key=value` pairs still encoded, for the Bundle's links.
    pub used: Vec<String>,
}

fn bad(msg: impl Into<String>) -> RecordError {
    RecordError::invalid(IssueCode::Invalid, msg)
}

/// Percent-decoding for query strings (`+` is a space).
pub fn percent_decode(s: &str) -> Result<String, RecordError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
                let v = hex
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| bad("malformed percent-encoding in the query"))?;
                out.push(v);
                i += 2;
            }
            _ => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| bad("the query is not UTF-8"))
}

/// Splits a parameter value at unescaped commas (`\,` is a literal comma).
fn split_values(v: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let (Some(n), Some(last)) = (chars.next(), out.last_mut()) {
                    last.push(n);
                }
            }
            ',' => out.push(String::new()),
            c => {
                if let Some(last) = out.last_mut() {
                    last.push(c);
                }
            }
        }
    }
    out
}

/// Why a parameter is not used: an unknown or unsupported parameter or modifier.
struct Unknown(String);

enum Parsed {
    Crit(Criterion),
    Unknown(Unknown),
}

/// Parses the search `query` on resource type `rt`. Malformed values are always an error;
/// unknown parameters are an error when `strict`, otherwise listed in `ignored`. `now` (µs)
/// scales the `ap` prefix on dates.
pub fn parse_search(rt: &str, query: &str, strict: bool, now: i64) -> Result<SearchRequest, RecordError> {
    let mut req = SearchRequest {
        query: SearchQuery { resource_type: rt.to_string(), criteria: Vec::new(), sort: Vec::new(), cursor: None },
        count: DEFAULT_COUNT,
        total: TotalMode::Default,
        summary: Summary::False,
        elements: None,
        include: Vec::new(),
        revinclude: Vec::new(),
        ignored: Vec::new(),
        used: Vec::new(),
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (rk, rv) = pair.split_once('=').unwrap_or((pair, ""));
        let (k, v) = (percent_decode(rk)?, percent_decode(rv)?);
        let mut unknown = |why: String| -> Result<(), RecordError> {
            if strict {
                Err(RecordError::invalid(IssueCode::NotSupported, why))
            } else {
                req.ignored.push(why);
                Ok(())
            }
        };
        match k.as_str() {
            "_count" => {
                req.count =
                    v.parse::<usize>().map_err(|_| bad("`_count` must be a non-negative integer"))?.min(MAX_COUNT);
            }
            "_cursor" => {
                req.query.cursor = Some(decode_cursor(&v)?);
                continue;
            }
            "_format" | "_pretty" => continue,
            "_total" => req.total = parse_total(&v)?,
            "_summary" => req.summary = parse_summary(&v)?,
            "_elements" => req.elements = Some(parse_elements(&v)?),
            "_sort" => req.query.sort.extend(parse_sort(rt, &v)?),
            "_include" | "_include:iterate" | "_revinclude" | "_revinclude:iterate" => {
                let inc = parse_include(&v, k.ends_with(":iterate"))?;
                if k.starts_with("_include") {
                    if inc.source != rt && !k.ends_with(":iterate") {
                        unknown(format!("`_include={v}` names {} but the search is on {rt}", inc.source))?;
                        continue;
                    }
                    req.include.push(inc);
                } else {
                    req.revinclude.push(inc);
                }
            }
            _ => {
                if v.is_empty() {
                    return Err(bad(format!("search parameter `{k}` has no value")));
                }
                match criterion(rt, &k, &v, now)? {
                    Parsed::Crit(c) => req.query.criteria.push(c),
                    Parsed::Unknown(Unknown(why)) => {
                        unknown(why)?;
                        continue;
                    }
                }
            }
        }
        req.used.push(format!("{rk}={rv}"));
    }
    finish(req)
}

fn parse_total(v: &str) -> Result<TotalMode, RecordError> {
    Ok(match v {
        "none" => TotalMode::None,
        "estimate" => TotalMode::Estimate,
        "accurate" => TotalMode::Accurate,
        _ => return Err(bad("`_total` must be none, estimate or accurate")),
    })
}

fn parse_summary(v: &str) -> Result<Summary, RecordError> {
    Ok(match v {
        "true" => Summary::True,
        "false" => Summary::False,
        "text" => Summary::Text,
        "data" => Summary::Data,
        "count" => Summary::Count,
        _ => return Err(bad("`_summary` must be true, false, text, data or count")),
    })
}

fn parse_elements(v: &str) -> Result<Vec<String>, RecordError> {
    let els: Vec<String> = v.split(',').map(|e| e.trim().to_string()).filter(|e| !e.is_empty()).collect();
    if els.iter().any(|e| !e.chars().all(|c| c.is_ascii_alphanumeric() || c == '.')) {
        return Err(bad("`_elements` lists element names separated by commas"));
    }
    Ok(els)
}

/// `_sort=a,-b`: each key a search parameter of `rt` (not a composite), `_id` or `_lastUpdated`;
/// `-` for descending.
fn parse_sort(rt: &str, v: &str) -> Result<Vec<(SortKey, bool)>, RecordError> {
    let mut out = Vec::new();
    for key in v.split(',') {
        let (desc, name) = match key.strip_prefix('-') {
            Some(n) => (true, n),
            None => (false, key),
        };
        let sk = match name {
            "_id" => SortKey::Id,
            "_lastUpdated" => SortKey::LastUpdated,
            _ => match extract::param(rt, name).and_then(|p| p.table().map(|t| (p, t))) {
                Some((_, Table::Composite)) | None => {
                    return Err(bad(format!("cannot sort {rt} by `{name}`: not a search parameter of {rt}")));
                }
                Some((p, table)) => SortKey::Param { param: p.code.clone(), table },
            },
        };
        out.push((sk, desc));
    }
    Ok(out)
}

/// The checks and defaults that depend on the whole request: the server's order, the cursor's
/// fit to it, and `_summary=count`.
fn finish(mut req: SearchRequest) -> Result<SearchRequest, RecordError> {
    // Without `_sort` the order is the server's to choose (FHIR R4 3.1.1.5.7): by id, or for a
    // search driven by a string prefix by the matching value, which its index gives in order.
    if req.query.sort.is_empty() && super::sql::value_ordered(&req.query).is_some() {
        req.query.sort.push((SortKey::Matched, false));
    }
    // A cursor carries one value per sort key, as its search's own links wrote it; one made for
    // another order (or by hand) would page from a meaningless place.
    if let Some(c) = &req.query.cursor {
        let ordered = super::sql::value_ordered(&req.query);
        let fits = c.keys.len() == req.query.sort.len()
            && req
                .query
                .sort
                .iter()
                .zip(&c.keys)
                .all(|((k, _), (_, v))| !matches!(k, SortKey::Matched) || ordered.is_some_and(|o| o.fits(v)));
        if !fits {
            return Err(bad("`_cursor` does not belong to this search: its sort order differs"));
        }
    }
    if req.summary == Summary::Count {
        req.count = 0;
    }
    // A page of no entries asks for the number of matches (`_summary=count`, or `_count=0` as
    // clients such as fhirpy's `count()` send it): an accurate total, of visible matches only.
    if req.count == 0 && req.total == TotalMode::Default {
        req.total = TotalMode::Accurate;
    }
    Ok(req)
}

fn parse_include(v: &str, iterate: bool) -> Result<Include, RecordError> {
    if v == "*" {
        return Err(bad("`_include=*` is not supported; name the parameter (`Type:param`)"));
    }
    let parts: Vec<&str> = v.split(':').collect();
    let (source, param, target) = match parts.as_slice() {
        [s, p] => (*s, *p, None),
        [s, p, t] => (*s, *p, Some(t.to_string())),
        _ => return Err(bad(format!("`{v}`: an include is `Type:param` or `Type:param:Target`"))),
    };
    if !mamori_fhir_schema::r4().is_resource(source) {
        return Err(bad(format!("`{v}`: `{source}` is not a resource type")));
    }
    let param = if param == "*" {
        None
    } else {
        match extract::param(source, param) {
            Some(p) if p.kind == ParamKind::Reference => Some(param.to_string()),
            _ => return Err(bad(format!("`{v}`: `{param}` is not a reference parameter of {source}"))),
        }
    };
    if let Some(t) = &target
        && !mamori_fhir_schema::r4().is_resource(t)
    {
        return Err(bad(format!("`{v}`: `{t}` is not a resource type")));
    }
    Ok(Include { source: source.to_string(), param, target, iterate })
}

/// One `key=value` criterion on `rt` (key may carry a modifier, a chain or `_has`).
fn criterion(rt: &str, key: &str, value: &str, now: i64) -> Result<Parsed, RecordError> {
    if let Some(rest) = key.strip_prefix("_has:") {
        // _has:Source:refParam:criterion
        let mut it = rest.splitn(3, ':');
        let (Some(source), Some(ref_param), Some(inner_key)) = (it.next(), it.next(), it.next()) else {
            return Err(bad(format!("`{key}`: `_has` is `_has:Type:reference:parameter`")));
        };
        if inner_key.starts_with("_has:") {
            return Ok(Parsed::Unknown(Unknown(format!("`{key}`: `_has` is supported one level deep"))));
        }
        if !mamori_fhir_schema::r4().is_resource(source) {
            return Err(bad(format!("`{key}`: `{source}` is not a resource type")));
        }
        match extract::param(source, ref_param) {
            Some(p) if p.kind == ParamKind::Reference => {}
            _ => return Err(bad(format!("`{key}`: `{ref_param}` is not a reference parameter of {source}"))),
        }
        return Ok(match criterion(source, inner_key, value, now)? {
            Parsed::Crit(inner) => Parsed::Crit(Criterion::Has {
                source: source.to_string(),
                param: ref_param.to_string(),
                inner: Box::new(inner),
            }),
            u @ Parsed::Unknown(_) => u,
        });
    }
    // name[:modifier][.chain]
    let (head, chain) = match key.split_once('.') {
        Some((h, c)) => (h, Some(c)),
        None => (key, None),
    };
    let (name, modifier) = match head.split_once(':') {
        Some((n, m)) => (n, Some(m)),
        None => (head, None),
    };
    if name == "_id" {
        if modifier.is_some() || chain.is_some() {
            return Ok(Parsed::Unknown(Unknown(format!("`{key}`: `_id` takes no modifier"))));
        }
        let ids = split_values(value);
        if ids.iter().any(|i| !crate::primitive::is_id(i)) {
            return Err(bad(format!("`_id={value}`: not a resource id")));
        }
        return Ok(Parsed::Crit(Criterion::Id(ids)));
    }
    if name == "_lastUpdated" {
        if modifier.is_some() || chain.is_some() {
            return Ok(Parsed::Unknown(Unknown(format!("`{key}`: `_lastUpdated` takes no modifier"))));
        }
        let any = split_values(value).iter().map(|v| date(key, v, now)).collect::<Result<Vec<_>, _>>()?;
        return Ok(Parsed::Crit(Criterion::LastUpdated(any)));
    }
    let Some(p) = extract::param(rt, name) else {
        return Ok(Parsed::Unknown(Unknown(format!("`{name}` is not a search parameter of {rt}"))));
    };
    let Some(table) = p.table() else {
        return Ok(Parsed::Unknown(Unknown(format!("search parameter `{name}` of {rt} is not supported"))));
    };
    if modifier == Some("missing") {
        let missing = match value {
            "true" => true,
            "false" => false,
            _ => return Err(bad(format!("`{key}` must be true or false"))),
        };
        return Ok(Parsed::Crit(Criterion::Missing { param: p.code.clone(), table, missing }));
    }
    if let Some(chain) = chain {
        return chained(rt, p, modifier, chain, value, now);
    }
    let mut negate = false;
    let mut any = Vec::new();
    for v in split_values(value) {
        if v.is_empty() {
            return Err(bad(format!("`{key}` has an empty value")));
        }
        let pred = match (p.kind, modifier) {
            (ParamKind::String, None) => Pred::Str(StrMode::Prefix, normalize::string(&v)),
            (ParamKind::String, Some("exact")) => Pred::Str(StrMode::Exact, v),
            (ParamKind::String, Some("contains")) => Pred::Str(StrMode::Contains, normalize::string(&v)),
            (ParamKind::Token, None) => token(&v),
            (ParamKind::Token, Some("not")) => {
                negate = true;
                token(&v)
            }
            (ParamKind::Token, Some("text")) => Pred::TokenText(normalize::string(&v)),
            (ParamKind::Uri, None) => Pred::Token { system: None, code: Some(v) },
            (ParamKind::Uri, Some("below")) => Pred::UriBelow(v),
            (ParamKind::Uri, Some("above")) => Pred::UriAbove(v),
            (ParamKind::Date, None) => date(key, &v, now)?,
            (ParamKind::Number, None) => number(key, &v, false)?,
            (ParamKind::Quantity, None) => number(key, &v, true)?,
            (ParamKind::Reference, m) => match reference(p, m, &v) {
                Some(pred) => pred,
                None => return Err(bad(format!("`{key}={v}`: not a reference to a {}", m.unwrap_or("resource")))),
            },
            (ParamKind::Composite, None) => composite(rt, p, key, &v, now)?,
            (_, Some(m)) => {
                return Ok(Parsed::Unknown(Unknown(format!("modifier `:{m}` is not supported on `{name}`"))));
            }
            (_, None) => return Ok(Parsed::Unknown(Unknown(format!("search parameter `{name}` is not supported")))),
        };
        any.push(pred);
    }
    Ok(Parsed::Crit(Criterion::Match { param: p.code.clone(), table, any, negate }))
}

fn chained(
    rt: &str,
    p: &ParamInfo,
    modifier: Option<&str>,
    chain: &str,
    value: &str,
    now: i64,
) -> Result<Parsed, RecordError> {
    if p.kind != ParamKind::Reference {
        return Err(bad(format!("`{}.{chain}`: only reference parameters can be chained", p.code)));
    }
    if chain.contains('.') {
        return Ok(Parsed::Unknown(Unknown(format!("`{}.{chain}`: chains are supported one level deep", p.code))));
    }
    let types: Vec<String> = match modifier {
        Some(t) if p.targets.iter().any(|x| x == t) => vec![t.to_string()],
        Some(t) => return Err(bad(format!("`{}:{t}`: {rt}.{} does not refer to {t}", p.code, p.code))),
        None => p.targets.clone(),
    };
    let mut out = Vec::new();
    let mut why = None;
    for t in types {
        match criterion(&t, chain, value, now)? {
            Parsed::Crit(c) => out.push((t, c)),
            Parsed::Unknown(Unknown(w)) => why = Some(w),
        }
    }
    if out.is_empty() {
        let why = why.unwrap_or_else(|| format!("`{}` has no target types", p.code));
        return Ok(Parsed::Unknown(Unknown(format!("`{}.{chain}`: {why}", p.code))));
    }
    Ok(Parsed::Crit(Criterion::Match {
        param: p.code.clone(),
        table: Table::Ref,
        any: vec![Pred::Chain(out)],
        negate: false,
    }))
}

fn token(v: &str) -> Pred {
    match v.split_once('|') {
        None => Pred::Token { system: None, code: Some(v.to_string()) },
        Some((s, "")) => Pred::Token { system: Some(s.to_string()), code: None },
        Some((s, c)) => Pred::Token { system: Some(s.to_string()), code: Some(c.to_string()) },
    }
}

fn prefix(v: &str) -> (Prefix, &str) {
    let p = match v.get(..2) {
        Some("eq") => Prefix::Eq,
        Some("ne") => Prefix::Ne,
        Some("lt") => Prefix::Lt,
        Some("le") => Prefix::Le,
        Some("gt") => Prefix::Gt,
        Some("ge") => Prefix::Ge,
        Some("sa") => Prefix::Sa,
        Some("eb") => Prefix::Eb,
        Some("ap") => Prefix::Ap,
        _ => return (Prefix::Eq, v),
    };
    (p, v.get(2..).unwrap_or(""))
}

fn date(key: &str, v: &str, now: i64) -> Result<Pred, RecordError> {
    let (prefix, rest) = prefix(v);
    let (lo, hi) = normalize::date_range(rest)
        .ok_or_else(|| bad(format!("`{key}={v}`: not a date (YYYY, YYYY-MM, YYYY-MM-DD or a dateTime with zone)")))?;
    // `ap`: within 10% of the distance between the value and now, and at least a day.
    let margin = (now.saturating_sub(lo).abs() / 10).max(86_400_000_000);
    Ok(Pred::Date { prefix, lo, hi, margin })
}

fn number(key: &str, v: &str, quantity: bool) -> Result<Pred, RecordError> {
    let (prefix, rest) = prefix(v);
    let (num, system, code) = if quantity {
        let mut it = rest.splitn(3, '|');
        let n = it.next().unwrap_or("");
        let s = it.next().filter(|s| !s.is_empty()).map(str::to_string);
        let c = it.next().filter(|c| !c.is_empty()).map(str::to_string);
        (n, s, c)
    } else {
        (rest, None, None)
    };
    let (value, lo, hi) = normalize::number_range(num).ok_or_else(|| bad(format!("`{key}={v}`: not a number")))?;
    Ok(Pred::Number { prefix, value, lo, hi, system, code })
}

fn reference(p: &ParamInfo, modifier: Option<&str>, v: &str) -> Option<Pred> {
    if let Some(t) = modifier {
        // `subject:Patient=123`
        if !p.targets.iter().any(|x| x == t) || !crate::primitive::is_id(v) {
            return None;
        }
        return Some(Pred::Ref { ty: Some(t.to_string()), id: v.to_string() });
    }
    if v.contains("://") || v.starts_with("urn:") {
        return Some(Pred::RefUrl(v.to_string()));
    }
    match v.split_once('/') {
        None => crate::primitive::is_id(v).then(|| Pred::Ref { ty: None, id: v.to_string() }),
        Some((t, id)) => (mamori_fhir_schema::r4().is_resource(t) && crate::primitive::is_id(id))
            .then(|| Pred::Ref { ty: Some(t.to_string()), id: id.to_string() }),
    }
}

fn composite(rt: &str, p: &ParamInfo, key: &str, v: &str, now: i64) -> Result<Pred, RecordError> {
    let Some((first, second)) = v.split_once('$') else {
        return Err(bad(format!("`{key}={v}`: a composite value is `code$value`")));
    };
    let def = mamori_fhir_schema::r4().search_param(rt, &p.code);
    let kind2 = def.and_then(|d| d.components.get(1)).map(|c| c.1);
    let (system, code) = match token(first) {
        Pred::Token { system, code: Some(code) } => (system, code),
        _ => return Err(bad(format!("`{key}={v}`: the first part needs a code"))),
    };
    let second = match kind2 {
        Some(ParamKind::Token) => token(second),
        Some(ParamKind::Quantity) => number(key, second, true)?,
        Some(ParamKind::Number) => number(key, second, false)?,
        Some(ParamKind::Date) => date(key, second, now)?,
        Some(ParamKind::String) => Pred::Str(StrMode::Prefix, normalize::string(second)),
        _ => return Err(bad(format!("`{key}`: this composite is not supported"))),
    };
    Ok(Pred::Composite { system, code, second: Box::new(second) })
}

/// Encodes a cursor for a `next`/`previous` link (opaque to clients).
pub fn encode_cursor(c: &Cursor) -> String {
    let keys: Vec<serde_json::Value> = c
        .keys
        .iter()
        .map(|(missing, v)| {
            let v = match v {
                SortVal::Int(i) => serde_json::json!({"i": i}),
                // JSON has no infinities (an open Range's end): they are written as words.
                SortVal::Real(r) if r.is_finite() => serde_json::json!({"r": r}),
                SortVal::Real(r) => serde_json::json!({"x": if *r > 0.0 { "inf" } else { "-inf" }}),
                SortVal::Text(t) => serde_json::json!({"t": t}),
            };
            serde_json::json!([missing, v])
        })
        .collect();
    hex::encode(serde_json::json!({"k": keys, "id": c.id, "b": c.backwards}).to_string())
}

fn decode_cursor(s: &str) -> Result<Cursor, RecordError> {
    let invalid = || bad("`_cursor` is not a cursor this server issued");
    let bytes = hex::decode(s).map_err(|_| invalid())?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
    let id =
        v.get("id").and_then(serde_json::Value::as_str).filter(|i| crate::primitive::is_id(i)).ok_or_else(invalid)?;
    let backwards = v.get("b").and_then(serde_json::Value::as_bool).ok_or_else(invalid)?;
    let mut keys = Vec::new();
    for k in v.get("k").and_then(serde_json::Value::as_array).ok_or_else(invalid)? {
        let missing = k.get(0).and_then(serde_json::Value::as_bool).ok_or_else(invalid)?;
        let val = k.get(1).ok_or_else(invalid)?;
        let sv = if let Some(i) = val.get("i").and_then(serde_json::Value::as_i64) {
            SortVal::Int(i)
        } else if let Some(r) = val.get("r").and_then(serde_json::Value::as_f64) {
            SortVal::Real(r)
        } else if let Some(x) = val.get("x").and_then(serde_json::Value::as_str) {
            match x {
                "inf" => SortVal::Real(f64::INFINITY),
                "-inf" => SortVal::Real(f64::NEG_INFINITY),
                _ => return Err(invalid()),
            }
        } else if let Some(t) = val.get("t").and_then(serde_json::Value::as_str) {
            SortVal::Text(t.to_string())
        } else {
            return Err(invalid());
        };
        keys.push((missing, sv));
    }
    Ok(Cursor { keys, id: id.to_string(), backwards })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(rt: &str, q: &str) -> Result<SearchRequest, RecordError> {
        parse_search(rt, q, true, 0)
    }

    #[test]
    fn parameters_of_every_kind() {
        let r =
            parse("Observation", "patient=p1&code=http://loinc.org|8480-6&date=ge2024-01&value-quantity=gt100||mm[Hg]")
                .unwrap();
        assert_eq!(r.query.criteria.len(), 4);
        assert!(matches!(&r.query.criteria[0], Criterion::Match { table: Table::Ref, .. }));
        let r =
            parse("Patient", "name:exact=山田&birthdate=1970&gender:not=male&_count=5&_sort=-birthdate,_id").unwrap();
        assert_eq!(r.count, 5);
        assert_eq!(r.query.sort.len(), 2);
        assert!(matches!(&r.query.criteria[2], Criterion::Match { negate: true, .. }));
        let r =
            parse("Observation", "subject:Patient.name=yamada&_has:Provenance:target:agent=Practitioner/x").unwrap();
        assert!(
            matches!(&r.query.criteria[0], Criterion::Match { any, .. } if matches!(&any[0], Pred::Chain(c) if c.len() == 1))
        );
        let r = parse("Patient", "_has:Observation:patient:code=1234-5").unwrap();
        assert!(matches!(&r.query.criteria[0], Criterion::Has { .. }));
        let r = parse("Observation", "code-value-quantity=http://loinc.org|8480-6$gt100").unwrap();
        assert!(matches!(&r.query.criteria[0], Criterion::Match { table: Table::Composite, .. }));
        let r = parse("Patient", "name=a,b\\,c").unwrap();
        assert!(matches!(&r.query.criteria[0], Criterion::Match { any, .. } if any.len() == 2));
        let r = parse("Patient", "_include=Patient:general-practitioner&_revinclude=Provenance:target").unwrap();
        assert_eq!((r.include.len(), r.revinclude.len()), (1, 1));
    }

    #[test]
    fn strict_and_lenient() {
        assert!(parse("Patient", "nonsense=1").is_err());
        let r = parse_search("Patient", "nonsense=1&name=x", false, 0).unwrap();
        assert_eq!(r.ignored.len(), 1);
        assert_eq!(r.query.criteria.len(), 1);
        assert_eq!(r.used, vec!["name=x".to_string()]);
        // Malformed values are errors either way.
        for q in [
            "birthdate=1970-13",
            "_count=-1",
            "_total=maybe",
            "value-quantity=abc",
            "name=",
            "_id=a b",
            "_sort=nonsense",
            "_cursor=zz",
            "general-practitioner:Nope=1",
        ] {
            let rt = if q.starts_with("value") { "Observation" } else { "Patient" };
            assert!(parse_search(rt, q, false, 0).is_err(), "{q}");
        }
    }

    #[test]
    fn cursors_round_trip() {
        let c = Cursor {
            keys: vec![(false, SortVal::Text("やまだ".into())), (true, SortVal::Int(0)), (false, SortVal::Real(1.5))],
            id: "a1".into(),
            backwards: true,
        };
        let r = parse("Patient", &format!("_sort=name,-birthdate,_lastUpdated&_cursor={}", encode_cursor(&c))).unwrap();
        assert_eq!(r.query.cursor, Some(c));
        // An open Range's end has no JSON number.
        for r in [f64::INFINITY, f64::NEG_INFINITY] {
            let c = Cursor { keys: vec![(false, SortVal::Real(r))], id: "a1".into(), backwards: false };
            let q = parse("RiskAssessment", &format!("probability=gt0.4&_cursor={}", encode_cursor(&c))).unwrap();
            assert_eq!(q.query.cursor, Some(c));
        }
        // Any other word is not a cursor this server wrote.
        let forged = hex::encode(r#"{"k":[[false,{"x":"nan"}]],"id":"a1","b":false}"#);
        let e = parse("RiskAssessment", &format!("probability=gt0.4&_cursor={forged}")).unwrap_err();
        assert!(e.to_string().contains("_cursor"), "{e}");
    }

    #[test]
    fn a_cursor_of_another_order_is_refused() {
        let cursor = |keys: Vec<(bool, SortVal)>| {
            format!("_cursor={}", encode_cursor(&Cursor { keys, id: "a1".into(), backwards: false }))
        };
        // By id (no sort key): no values.
        assert!(parse("Patient", &format!("gender=male&{}", cursor(vec![]))).is_ok());
        assert!(parse("Patient", &format!("gender=male&{}", cursor(vec![(false, SortVal::Int(1))]))).is_err());
        // By matching name: one text value.
        assert!(parse("Patient", &format!("name=yam&{}", cursor(vec![(false, SortVal::Text("yam".into()))]))).is_ok());
        for keys in [vec![], vec![(false, SortVal::Int(7))], vec![(false, SortVal::Real(0.5))]] {
            let e = parse("Patient", &format!("name=yam&{}", cursor(keys))).unwrap_err();
            assert!(e.to_string().contains("_cursor"), "{e}");
        }
        // By a range's bound: an integer for a date, a real for a number.
        assert!(parse("Encounter", &format!("date=ge2024&{}", cursor(vec![(false, SortVal::Int(7))]))).is_ok());
        assert!(parse("Encounter", &format!("date=ge2024&{}", cursor(vec![(false, SortVal::Real(7.0))]))).is_err());
        assert!(
            parse("RiskAssessment", &format!("probability=gt1&{}", cursor(vec![(false, SortVal::Real(1.5))]))).is_ok()
        );
        assert!(
            parse("RiskAssessment", &format!("probability=gt1&{}", cursor(vec![(false, SortVal::Int(1))]))).is_err()
        );
        // By `_sort`: one value per key.
        assert!(parse("Patient", &format!("_sort=birthdate&{}", cursor(vec![(false, SortVal::Int(1))]))).is_ok());
        assert!(parse("Patient", &format!("_sort=birthdate,name&{}", cursor(vec![(false, SortVal::Int(1))]))).is_err());
    }
}
