//! Fuzz the FHIR resource parser and structural validator: any bytes, never a panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(parsed) = mamori_records::parse_resource(data) {
        // A valid resource must hash and canonicalise without trouble.
        let _ = mamori_records::content_hash(&parsed.0);
    }
});
