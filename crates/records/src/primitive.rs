//! Lexical rules of the FHIR R4 primitive datatypes, written out by hand (no regex engine) so
//! they are cheap and cannot panic on any input.

use serde_json::Value;

/// Checks one JSON value against a primitive type; `Err` says what is wrong, in words.
pub fn check(type_code: &str, v: &Value) -> Result<(), String> {
    match type_code {
        "boolean" => v.as_bool().map(|_| ()).ok_or_else(|| "expected a JSON boolean".into()),
        "integer" => integer(v, i64::from(i32::MIN)),
        "positiveInt" => integer(v, 1),
        "unsignedInt" => integer(v, 0),
        "decimal" => {
            if v.is_number() {
                Ok(())
            } else {
                Err("expected a JSON number".into())
            }
        }
        _ => {
            let Some(s) = v.as_str() else {
                return Err("expected a JSON string".into());
            };
            string(type_code, s)
        }
    }
}

fn integer(v: &Value, min: i64) -> Result<(), String> {
    let Some(n) = v.as_i64() else {
        return Err("expected a JSON integer".into());
    };
    if n < min || n > i64::from(i32::MAX) {
        return Err(format!("integer `{n}` out of range"));
    }
    Ok(())
}

fn string(type_code: &str, s: &str) -> Result<(), String> {
    // R4 (datatypes §2.24.0.1): strings may not hold control characters other than tab, CR, LF.
    if let Some((at, c)) = s.char_indices().find(|(_, c)| (*c as u32) < 0x20 && !matches!(c, '\t' | '\r' | '\n')) {
        return Err(format!(
            "control character U+{:04X} at character {} is not allowed",
            c as u32,
            s[..at].chars().count()
        ));
    }
    let ok = match type_code {
        "string" | "markdown" => !s.is_empty(),
        "code" => is_code(s),
        "id" => is_id(s),
        "uri" | "url" | "canonical" => !s.is_empty() && !s.chars().any(char::is_whitespace),
        "oid" => is_oid(s),
        "uuid" => is_uuid_urn(s),
        "base64Binary" => is_base64(s),
        "instant" => is_instant(s),
        "date" => is_date(s),
        "dateTime" => is_datetime(s),
        "time" => is_time(s),
        "xhtml" => s.trim_start().starts_with("<div"),
        // Unknown codes come only from the generated catalogue; accept strings for them.
        _ => true,
    };
    if ok {
        Ok(())
    } else if s.is_empty() {
        Err("empty string; omit the element instead".into())
    } else {
        Err(format!("`{}` is not a valid {type_code}", shorten(s)))
    }
}

fn shorten(s: &str) -> String {
    if s.chars().count() > 40 {
        let mut t: String = s.chars().take(40).collect();
        t.push('…');
        t
    } else {
        s.to_string()
    }
}

/// A FHIR logical id: `[A-Za-z0-9\-\.]{1,64}`.
pub fn is_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// `[^\s]+(\s[^\s]+)*` where `\s` is the regex (ASCII) class, as in the FHIR specification:
/// a no-break space inside a code is content, not whitespace.
fn is_code(s: &str) -> bool {
    let ws = |c: char| c.is_ascii_whitespace() || c == '\u{0B}';
    !s.is_empty()
        && !s.starts_with(ws)
        && !s.ends_with(ws)
        && !s.chars().zip(s.chars().skip(1)).any(|(a, b)| ws(a) && ws(b))
}

fn is_oid(s: &str) -> bool {
    let Some(rest) = s.strip_prefix("urn:oid:") else {
        return false;
    };
    let mut parts = rest.split('.');
    match parts.next() {
        Some("0" | "1" | "2") => {}
        _ => return false,
    }
    let mut n = 0;
    for p in parts {
        n += 1;
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) || (p.len() > 1 && p.starts_with('0')) {
            return false;
        }
    }
    n >= 1
}

fn is_uuid_urn(s: &str) -> bool {
    let Some(rest) = s.strip_prefix("urn:uuid:") else {
        return false;
    };
    let groups: Vec<&str> = rest.split('-').collect();
    let lens = [8, 4, 4, 4, 12];
    groups.len() == 5
        && groups
            .iter()
            .zip(lens)
            .all(|(g, l)| g.len() == l && g.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}

fn is_base64(s: &str) -> bool {
    let mut n = 0usize;
    let mut pad = 0usize;
    for b in s.bytes() {
        if b.is_ascii_whitespace() {
            continue;
        }
        if b == b'=' {
            pad += 1;
        } else if pad > 0 || !(b.is_ascii_alphanumeric() || b == b'+' || b == b'/') {
            return false;
        }
        n += 1;
    }
    n.is_multiple_of(4) && pad <= 2
}

fn digits(s: &str, n: usize) -> Option<u32> {
    if s.len() == n && s.bytes().all(|b| b.is_ascii_digit()) { s.parse().ok() } else { None }
}

fn days_in_month(y: u32, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400) => 29,
        2 => 28,
        _ => 0,
    }
}

/// `YYYY`, `YYYY-MM` or `YYYY-MM-DD`, with real months and days.
pub fn is_date(s: &str) -> bool {
    let mut it = s.split('-');
    let (y, m, d) = (it.next(), it.next(), it.next());
    if it.next().is_some() {
        return false;
    }
    let Some(year) = y.and_then(|y| digits(y, 4)) else {
        return false;
    };
    match (m, d) {
        (None, None) => true,
        (Some(m), None) => digits(m, 2).is_some_and(|m| (1..=12).contains(&m)),
        (Some(m), Some(d)) => match (digits(m, 2), digits(d, 2)) {
            (Some(m), Some(d)) => (1..=12).contains(&m) && d >= 1 && d <= days_in_month(year, m),
            _ => false,
        },
        (None, Some(_)) => false,
    }
}

/// `hh:mm:ss` with an optional fraction.
pub fn is_time(s: &str) -> bool {
    let (main, frac) = match s.split_once('.') {
        Some((a, f)) => (a, Some(f)),
        None => (s, None),
    };
    if let Some(f) = frac
        && (f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit()))
    {
        return false;
    }
    let mut it = main.split(':');
    let (h, m, sec) = (it.next(), it.next(), it.next());
    if it.next().is_some() {
        return false;
    }
    matches!(
        (h.and_then(|h| digits(h, 2)), m.and_then(|m| digits(m, 2)), sec.and_then(|s| digits(s, 2))),
        (Some(h), Some(m), Some(s)) if h < 24 && m < 60 && s < 60
    )
}

fn is_zone(z: &str) -> bool {
    if z == "Z" {
        return true;
    }
    let Some(rest) = z.strip_prefix('+').or_else(|| z.strip_prefix('-')) else {
        return false;
    };
    match rest.split_once(':') {
        Some((h, m)) => {
            matches!((digits(h, 2), digits(m, 2)), (Some(h), Some(m)) if h <= 14 && m < 60)
        }
        None => false,
    }
}

fn split_time_zone(t: &str) -> Option<(&str, &str)> {
    let pos = t.find(['Z', '+', '-'])?;
    Some((t.get(..pos)?, t.get(pos..)?))
}

/// A partial or full date-time; a time needs a zone.
pub fn is_datetime(s: &str) -> bool {
    match s.split_once('T') {
        None => is_date(s),
        Some((d, t)) => {
            d.len() == 10 && is_date(d) && split_time_zone(t).is_some_and(|(tm, z)| is_time(tm) && is_zone(z))
        }
    }
}

/// A full date-time with seconds and zone.
pub fn is_instant(s: &str) -> bool {
    s.len() >= 20 && s.contains('T') && is_datetime(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        for ok in ["2024", "2024-02", "2024-02-29", "2000-02-29"] {
            assert!(is_date(ok), "{ok}");
        }
        for bad in ["2023-02-29", "1900-02-29", "2024-13", "2024-1-01", "24-01-01", "2024-01-32", "", "2024-"] {
            assert!(!is_date(bad), "{bad}");
        }
    }

    #[test]
    fn datetimes_and_instants() {
        assert!(is_datetime("2015-02-07T13:28:17-05:00"));
        assert!(is_datetime("2015-02-07T13:28:17.239+09:00"));
        assert!(is_datetime("2015-02"));
        assert!(!is_datetime("2015-02-07T13:28:17"), "a time needs a zone");
        assert!(!is_datetime("2015-02-07T25:28:17Z"));
        assert!(is_instant("2015-02-07T13:28:17.239Z"));
        assert!(!is_instant("2015-02-07"));
    }

    #[test]
    fn other_primitives() {
        assert!(is_id("abc-1.2"));
        assert!(!is_id("a/b"));
        assert!(!is_id(&"x".repeat(65)));
        assert!(is_oid("urn:oid:1.2.392.100495.20.3.51"));
        assert!(!is_oid("urn:oid:3.1"));
        assert!(is_uuid_urn("urn:uuid:53fefa32-fcbb-4ff8-8a92-55ee120877b7"));
        assert!(is_base64("aGVsbG8="));
        assert!(!is_base64("aGVsbG8"));
        assert!(check("code", &Value::from("a b")).is_ok());
        assert!(check("code", &Value::from(" a")).is_err());
        assert!(check("code", &Value::from("a\t b")).is_err());
        assert!(check("code", &Value::from("CHEST\u{a0}")).is_ok(), "NBSP is not regex whitespace");
        assert!(check("string", &Value::from("")).is_err());
        assert!(check("positiveInt", &Value::from(0)).is_err());
        assert!(check("integer", &Value::from(5_000_000_000i64)).is_err());
        assert!(check("boolean", &Value::from("true")).is_err());
    }
}
