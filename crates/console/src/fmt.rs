//! Dates and times for people: Japan Standard Time, ISO order, and in Japanese the era (和暦)
//! beside it — `2026-12-04 21:46 JST（令和8年12月4日）`.

use time::{Date, OffsetDateTime, UtcOffset};

/// Japan Standard Time (no daylight saving).
const JST: UtcOffset = match UtcOffset::from_hms(9, 0, 0) {
    Ok(o) => o,
    Err(_) => UtcOffset::UTC,
};

/// Eras from their first day, newest first.
const ERAS: [(i32, u8, u8, &str); 5] =
    [(2019, 5, 1, "令和"), (1989, 1, 8, "平成"), (1926, 12, 25, "昭和"), (1912, 7, 30, "大正"), (1868, 1, 25, "明治")];

/// A date in the Japanese era calendar: `令和8年12月4日` (the first year is `元年`). `None` before
/// 明治.
pub fn era_date(d: Date) -> Option<String> {
    let (y, m, day) = (d.year(), u8::from(d.month()), d.day());
    let (start, _, _, name) = ERAS.iter().find(|(ey, em, ed, _)| (y, m, day) >= (*ey, *em, *ed))?;
    let n = y - start + 1;
    let year = if n == 1 { "元".to_string() } else { n.to_string() };
    Some(format!("{name}{year}年{m}月{day}日"))
}

/// Unix seconds as local time for the reader: `2026-12-04 21:46 JST`, and in Japanese with the
/// era date after it.
pub fn local_time(secs: i64, ja: bool) -> String {
    let Ok(t) = OffsetDateTime::from_unix_timestamp(secs) else { return secs.to_string() };
    let t = t.to_offset(JST);
    let iso =
        format!("{:04}-{:02}-{:02} {:02}:{:02} JST", t.year(), u8::from(t.month()), t.day(), t.hour(), t.minute());
    match (ja, era_date(t.date())) {
        (true, Some(era)) => format!("{iso}（{era}）"),
        _ => iso,
    }
}

/// A FHIR instant (`2026-12-04T12:46:07.123456Z`) as [`local_time`], to the second.
pub fn instant(fhir: &str, ja: bool) -> String {
    match OffsetDateTime::parse(fhir, &time::format_description::well_known::Rfc3339) {
        Ok(t) => {
            let t = t.to_offset(JST);
            let secs = format!(":{:02}", t.second());
            local_time(t.unix_timestamp(), ja).replacen(" JST", &format!("{secs} JST"), 1)
        }
        Err(_) => fhir.to_string(),
    }
}

/// Unix microseconds as an `<input type="datetime-local">` value in Japan Standard Time.
pub fn local_input(micros: i64) -> String {
    let Ok(t) = OffsetDateTime::from_unix_timestamp(micros.div_euclid(1_000_000)) else { return String::new() };
    let t = t.to_offset(JST);
    format!("{:04}-{:02}-{:02}T{:02}:{:02}", t.year(), u8::from(t.month()), t.day(), t.hour(), t.minute())
}

/// A local time the person typed (`2026-12-06T09:30`, as an `<input type="datetime-local">`
/// sends it, or with a space, optionally with seconds) in Japan Standard Time, as Unix
/// microseconds.
pub fn local_input_micros(s: &str) -> Option<i64> {
    let s = s.trim().replacen(' ', "T", 1);
    let long = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
    let short = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]");
    let t = time::PrimitiveDateTime::parse(&s, &long).or_else(|_| time::PrimitiveDateTime::parse(&s, &short)).ok()?;
    Some(t.assume_offset(JST).unix_timestamp() * 1_000_000)
}

/// A date the person typed (`2026-12-04`, as an `<input type="date">` sends it) as the Unix
/// microseconds of its start in Japan; `end` gives the start of the next day (an inclusive
/// "until" date).
pub fn day_start_micros(s: &str, end: bool) -> Option<i64> {
    let f = time::macros::format_description!("[year]-[month]-[day]");
    let d = Date::parse(s.trim(), &f).ok()?;
    let d = if end { d.next_day()? } else { d };
    Some(d.midnight().assume_offset(JST).unix_timestamp() * 1_000_000)
}

/// One line of a diff for the page: `ins`, `del`, `ctx` (unchanged, around a change) or `gap`
/// (unchanged lines left out), with its text prefixed `+`, `-` or a space.
pub struct DiffLine {
    pub kind: &'static str,
    pub text: String,
}

/// The changes from `old` to `new`, line by line, with three lines of context; empty when the
/// texts are the same.
pub fn diff_lines(old: &str, new: &str) -> Vec<DiffLine> {
    use similar::{ChangeTag, TextDiff};
    let diff = TextDiff::from_lines(old, new);
    let mut out = Vec::new();
    for (i, group) in diff.grouped_ops(3).iter().enumerate() {
        if i > 0 {
            out.push(DiffLine { kind: "gap", text: "…".into() });
        }
        for op in group {
            for change in diff.iter_changes(op) {
                let (kind, sign) = match change.tag() {
                    ChangeTag::Insert => ("ins", '+'),
                    ChangeTag::Delete => ("del", '-'),
                    ChangeTag::Equal => ("ctx", ' '),
                };
                let line = change.to_string_lossy();
                out.push(DiffLine { kind, text: format!("{sign} {}", line.trim_end_matches(['\n', '\r'])) });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    #[test]
    fn eras_and_their_first_years() {
        assert_eq!(era_date(date!(2026 - 12 - 04)).as_deref(), Some("令和8年12月4日"));
        assert_eq!(era_date(date!(2019 - 05 - 01)).as_deref(), Some("令和元年5月1日"));
        assert_eq!(era_date(date!(2019 - 04 - 30)).as_deref(), Some("平成31年4月30日"));
        assert_eq!(era_date(date!(1989 - 01 - 07)).as_deref(), Some("昭和64年1月7日"));
        assert_eq!(era_date(date!(1860 - 01 - 01)), None);
    }

    #[test]
    fn times_are_shown_in_japan() {
        // 2026-12-04T12:46:07Z is 21:46 in Japan.
        assert_eq!(local_time(1_796_388_367, false), "2026-12-04 21:46 JST");
        assert_eq!(local_time(1_796_388_367, true), "2026-12-04 21:46 JST（令和8年12月4日）");
        assert_eq!(instant("2026-12-04T15:00:01.5Z", false), "2026-12-05 00:00:01 JST");
        assert_eq!(day_start_micros("2026-12-05", false), Some(1_796_396_400 * 1_000_000));
        assert_eq!(day_start_micros("2026-12-04", true), Some(1_796_396_400 * 1_000_000));
        assert_eq!(day_start_micros("12/04", false), None);
    }

    #[test]
    fn a_diff_shows_changes_with_context_and_nothing_for_the_same_text() {
        let old = "a\nb\nc\nd\ne\nf\ng\nh\ni\nj\n";
        let new = "a\nB\nc\nd\ne\nf\ng\nh\ni\nj\nk\n";
        let d = diff_lines(old, new);
        let text: Vec<(&str, &str)> = d.iter().map(|l| (l.kind, l.text.as_str())).collect();
        assert!(text.contains(&("del", "- b")) && text.contains(&("ins", "+ B")), "{text:?}");
        assert!(text.contains(&("ins", "+ k")));
        assert!(text.contains(&("gap", "…")), "unchanged lines far from a change are left out: {text:?}");
        assert!(!text.iter().any(|(_, t)| *t == "  f"), "{text:?}");
        assert!(diff_lines(old, old).is_empty());
    }
}
