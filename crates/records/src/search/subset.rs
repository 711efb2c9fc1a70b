//! `_summary` and `_elements`: the parts of a resource a search returns.

use serde_json::{Map, Value, json};

use super::Summary;

const SUBSETTED: &str = "http://terminology.hl7.org/CodeSystem/v3-ObservationValue";

/// The element name of a JSON key: `valueQuantity` → `value` when `value[x]` is an element.
fn element_of<'a>(rt: &str, key: &'a str) -> Option<(&'a str, &'static mamori_fhir_schema::Element)> {
    let els = mamori_fhir_schema::r4().elements(rt);
    if let Some(e) = els.get(key) {
        return Some((key, e));
    }
    let split = key.char_indices().find(|(_, c)| c.is_ascii_uppercase()).map(|(i, _)| i)?;
    let base = key.get(..split)?;
    els.get(&format!("{base}[x]")).map(|e| (base, e))
}

/// Reduces `body` (a resource of type `rt`) as `_summary` and `_elements` ask; marks it
/// `SUBSETTED` when anything was left out.
pub fn apply(rt: &str, body: &mut Value, summary: Summary, elements: Option<&[String]>) {
    let Some(obj) = body.as_object_mut() else { return };
    let always = |k: &str| matches!(k, "resourceType" | "id" | "meta");
    let before = obj.len();
    match (summary, elements) {
        (Summary::True, _) => obj.retain(|k, _| always(k) || element_of(rt, k).is_some_and(|(_, e)| e.summary)),
        (Summary::Text, _) => obj.retain(|k, _| always(k) || k == "text"),
        (Summary::Data, _) => {
            obj.remove("text");
        }
        (_, Some(list)) => obj.retain(|k, _| {
            always(k) || element_of(rt, k).is_some_and(|(base, _)| list.iter().any(|l| l == base || l == k))
        }),
        _ => {}
    }
    if obj.len() < before {
        let meta = obj.entry("meta").or_insert_with(|| Value::Object(Map::new()));
        if let Some(m) = meta.as_object_mut() {
            let tags = m.entry("tag").or_insert_with(|| json!([]));
            if let Some(t) = tags.as_array_mut() {
                t.push(json!({"system": SUBSETTED, "code": "SUBSETTED"}));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_and_elements() {
        let p = json!({"resourceType": "Patient", "id": "a", "text": {"status": "generated", "div": "<div/>"},
            "name": [{"family": "x"}], "contact": [{"name": {"family": "y"}}], "deceasedBoolean": false});
        let mut s = p.clone();
        apply("Patient", &mut s, Summary::True, None);
        assert!(s.get("name").is_some() && s.get("deceasedBoolean").is_some());
        assert!(s.get("contact").is_none() && s.get("text").is_none());
        assert_eq!(s["meta"]["tag"][0]["code"], "SUBSETTED");
        let mut e = p.clone();
        apply("Patient", &mut e, Summary::False, Some(&["name".to_string(), "deceased".to_string()]));
        assert_eq!(e.as_object().map(|o| o.len()), Some(5), "{e}");
        let mut d = p.clone();
        apply("Patient", &mut d, Summary::Data, None);
        assert!(d.get("text").is_none() && d.get("contact").is_some());
        let mut f = p.clone();
        apply("Patient", &mut f, Summary::False, None);
        assert_eq!(f, p);
    }
}
