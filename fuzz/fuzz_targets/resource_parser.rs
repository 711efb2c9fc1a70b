//! Fuzz the FHIR resource parser and validator (structure, cardinality, required bindings) and
//! the Bundle parser: any bytes, never a panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(parsed) = mamori_records::parse_resource(data) {
        // A valid resource must hash and canonicalise without trouble.
        let _ = mamori_records::content_hash(&parsed.0);
    }
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = mamori_records::bundle::parse_bundle(&v, "https://mamori.invalid/fhir", 0);
    }
});
