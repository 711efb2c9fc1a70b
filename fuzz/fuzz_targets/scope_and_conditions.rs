//! Fuzz the SMART scope parser (resource and special scopes), the client-assertion issuer
//! peek, PKCE verification and the conditional-interaction query parser.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(set) = mamori_oauth::ScopeSet::parse(s) {
            // Display and parse again: the model round-trips.
            assert_eq!(mamori_oauth::ScopeSet::parse(&set.to_string()).ok(), Some(set));
        }
        let _ = mamori_records::parse_conditions(s);
        let _ = mamori_oauth::assertion::claimed_client(s);
        let (a, b) = s.split_at(s.len() / 2);
        let _ = mamori_oauth::flow::pkce_matches(a, b);
    }
});
