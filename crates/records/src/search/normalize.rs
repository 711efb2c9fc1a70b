//! Normal forms of search values: strings (for matching that ignores case, accents, width and
//! kana kind), dates and numbers (as the ranges their precision covers).

use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};
use unicode_normalization::UnicodeNormalization;

/// Variant kanji (異体字) common in Japanese names, each with the form it is searched as: a
/// registry may hold 髙橋 and the clerk type 高橋. Old forms (旧字体) and the variants of the
/// family-name lists (JIS X 0213, the IBM extensions, CJK compatibility ideographs that NFC
/// does not fold) become the standard form (新字体) used on 住民票 print-outs. Sorted by variant.
const VARIANTS: &[(char, char)] = &[
    ('亞', '亜'),
    ('傳', '伝'),
    ('冨', '富'),
    ('國', '国'),
    ('圓', '円'),
    ('壽', '寿'),
    ('實', '実'),
    ('嶋', '島'),
    ('嶌', '島'),
    ('廣', '広'),
    ('彌', '弥'),
    ('德', '徳'),
    ('惠', '恵'),
    ('曻', '昇'),
    ('槇', '槙'),
    ('樂', '楽'),
    ('檜', '桧'),
    ('櫻', '桜'),
    ('淺', '浅'),
    ('澤', '沢'),
    ('濱', '浜'),
    ('濵', '浜'),
    ('瀨', '瀬'),
    ('眞', '真'),
    ('萬', '万'),
    ('藏', '蔵'),
    ('邉', '辺'),
    ('邊', '辺'),
    ('關', '関'),
    ('靜', '静'),
    ('髙', '高'),
    ('鷗', '鴎'),
    ('黑', '黒'),
    ('齊', '斉'),
    ('齋', '斎'),
    ('\u{fa10}', '塚'),  // 塚 (compatibility ideograph without a decomposition)
    ('\u{fa11}', '崎'),  // 﨑 (たつさき)
    ('\u{20bb7}', '吉'), // 𠮷 (つちよし)
];

fn variant(c: char) -> char {
    VARIANTS.binary_search_by(|(v, _)| v.cmp(&c)).ok().and_then(|i| VARIANTS.get(i)).map_or(c, |(_, to)| *to)
}

/// The form strings are indexed and searched in: NFKC width folding (全角 ASCII and 半角カナ
/// become ASCII and 全角カナ), Latin accents removed, lower case, katakana folded to hiragana
/// (so ヤマダ, ﾔﾏﾀﾞ and やまだ match alike), variant kanji folded to their standard form (so
/// 髙橋, 﨑 and 齋藤 match 高橋, 崎 and 斎藤; [`VARIANTS`]) and white space removed (so 山田太郎
/// matches 山田 太郎).
pub fn string(s: &str) -> String {
    let stripped: String = s.nfkd().filter(|c| !('\u{0300}'..='\u{036f}').contains(c)).collect();
    stripped
        .nfc()
        .flat_map(char::to_lowercase)
        .filter(|c| !c.is_whitespace())
        .map(|c| match c {
            // Katakana ァ..ヶ → hiragana ぁ..ゖ.
            '\u{30a1}'..='\u{30f6}' => char::from_u32(u32::from(c) - 0x60).unwrap_or(c),
            c if u32::from(c) >= 0x4e00 => variant(c),
            _ => c,
        })
        .collect()
}

const MICROS_PER_SECOND: i64 = 1_000_000;

fn micros(dt: OffsetDateTime) -> i64 {
    i64::try_from(dt.unix_timestamp_nanos() / 1000).unwrap_or(if dt.year() < 1970 { i64::MIN } else { i64::MAX })
}

fn num(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn ymd(y: i32, m: u8, d: u8) -> Option<Date> {
    Date::from_calendar_date(y, Month::try_from(m).ok()?, d).ok()
}

fn first_of_next_month(y: i32, m: u8) -> Option<Date> {
    if m == 12 { ymd(y + 1, 1, 1) } else { ymd(y, m + 1, 1) }
}

/// The closed range, in microseconds since the epoch (UTC), that a FHIR `date`, `dateTime` or
/// `instant` (or a search value of that form) covers at its precision: `2024` is the whole year,
/// `2024-05-01T10:00:00+09:00` one second. Values without a zone are taken as UTC.
pub fn date_range(s: &str) -> Option<(i64, i64)> {
    let (date_part, time_part) = match s.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (s, None),
    };
    let mut parts = date_part.split('-');
    let y_s = parts.next()?;
    if y_s.len() != 4 {
        return None;
    }
    let y = i32::try_from(num(y_s)?).ok()?;
    let m = parts.next().map(|p| if p.len() == 2 { num(p) } else { None });
    let d = parts.next().map(|p| if p.len() == 2 { num(p) } else { None });
    if parts.next().is_some() {
        return None;
    }
    let utc = |date: Date| micros(PrimitiveDateTime::new(date, Time::MIDNIGHT).assume_utc());
    match (m, d, time_part) {
        (None, None, None) => Some((utc(ymd(y, 1, 1)?), utc(ymd(y + 1, 1, 1)?) - 1)),
        (Some(m), None, None) => {
            let m = u8::try_from(m?).ok()?;
            Some((utc(ymd(y, m, 1)?), utc(first_of_next_month(y, m)?) - 1))
        }
        (Some(m), Some(d), None) => {
            let date = ymd(y, u8::try_from(m?).ok()?, u8::try_from(d?).ok()?)?;
            Some((utc(date), utc(date.next_day()?) - 1))
        }
        (Some(m), Some(d), Some(t)) => {
            let date = ymd(y, u8::try_from(m?).ok()?, u8::try_from(d?).ok()?)?;
            time_range(date, t)
        }
        _ => None,
    }
}

/// `hh:mm[:ss[.fff]](Z|±hh:mm)` on `date`.
fn time_range(date: Date, t: &str) -> Option<(i64, i64)> {
    let (clock, offset) = if let Some(c) = t.strip_suffix('Z') {
        (c, UtcOffset::UTC)
    } else {
        let at = t.rfind(['+', '-'])?;
        let (c, z) = t.split_at(at);
        let sign: i8 = if z.starts_with('-') { -1 } else { 1 };
        let (zh, zm) = z.get(1..)?.split_once(':')?;
        let (zh, zm) = (i8::try_from(num(zh)?).ok()?, i8::try_from(num(zm)?).ok()?);
        (c, UtcOffset::from_hms(sign * zh, sign * zm, 0).ok()?)
    };
    let mut it = clock.split(':');
    let h = u8::try_from(num(it.next()?)?).ok()?;
    let mi = u8::try_from(num(it.next()?)?).ok()?;
    let (sec, frac, width) = match it.next() {
        None => (None, 0u32, 60 * MICROS_PER_SECOND),
        Some(s) => {
            let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
            let sec = u8::try_from(num(whole)?).ok()?;
            if frac.is_empty() {
                (Some(sec), 0, MICROS_PER_SECOND)
            } else {
                let digits = frac.len().min(6);
                let f = num(frac.get(..digits)?)?;
                let scale = 10u32.pow(u32::try_from(6 - digits).ok()?);
                (Some(sec), f * scale, i64::from(scale))
            }
        }
    };
    if it.next().is_some() {
        return None;
    }
    let time = Time::from_hms_micro(h, mi, sec.unwrap_or(0), frac).ok()?;
    let lo = micros(PrimitiveDateTime::new(date, time).assume_offset(offset));
    Some((lo, lo.saturating_add(width - 1)))
}

/// A decimal search value and the range its precision implies: `100` covers [99.5, 100.5],
/// `1.50` covers [1.495, 1.505]; an exponent form counts its mantissa's digits.
pub fn number_range(s: &str) -> Option<(f64, f64, f64)> {
    let v: f64 = s.parse().ok()?;
    if !v.is_finite() {
        return None;
    }
    let (mantissa, exp) = match s.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i32>().ok()?),
        None => (s, 0),
    };
    let decimals = mantissa.split_once('.').map_or(0, |(_, f)| f.len());
    let half = 0.5 * 10f64.powi(exp - i32::try_from(decimals).ok()?);
    Some((v, v - half, v + half))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variant_kanji_fold_to_their_standard_form() {
        assert!(VARIANTS.windows(2).all(|w| w[0].0 < w[1].0), "sorted for the binary search");
        assert_eq!(string("髙橋"), string("高橋"));
        assert_eq!(string("山﨑"), string("山崎"));
        assert_eq!(string("齋藤"), string("斎藤"));
        assert_eq!(string("渡邊"), string("渡辺"));
        assert_eq!(string("渡邉"), string("渡辺"));
        assert_eq!(string("𠮷田"), string("吉田"));
        assert_eq!(string("濱田"), "浜田");
        // CJK compatibility ideographs with a canonical decomposition fold by NFC already.
        assert_eq!(string("\u{fa19}"), "神");
        // Different characters stay different: 斎 and 斉 are not variants of each other.
        assert_ne!(string("斎藤"), string("斉藤"));
        assert_eq!(string("佐藤"), "佐藤");
    }

    #[test]
    fn strings_fold_case_accents_width_and_kana() {
        assert_eq!(string("Chalmers"), "chalmers");
        assert_eq!(string("Renée"), "renee");
        assert_eq!(string("ヤマダ"), "やまだ");
        assert_eq!(string("ﾔﾏﾀﾞ"), "やまだ");
        assert_eq!(string("山田 太郎"), "山田太郎");
        assert_eq!(string("ＡＢＣ"), "abc");
        // Dakuten survive: が is not か.
        assert_ne!(string("ガ"), string("カ"));
    }

    #[test]
    fn dates_cover_their_precision() {
        let (lo, hi) = date_range("2024").unwrap();
        assert_eq!(lo, date_range("2024-01-01T00:00:00Z").unwrap().0);
        assert_eq!(hi + 1, date_range("2025-01-01T00:00:00Z").unwrap().0);
        let (lo, hi) = date_range("2024-02").unwrap();
        assert_eq!(hi + 1 - lo, 29 * 86_400 * MICROS_PER_SECOND);
        let (lo, hi) = date_range("2024-05-01T10:00:00+09:00").unwrap();
        assert_eq!(lo, date_range("2024-05-01T01:00:00Z").unwrap().0);
        assert_eq!(hi - lo, MICROS_PER_SECOND - 1);
        let (lo, hi) = date_range("2024-05-01T10:00:00.5Z").unwrap();
        assert_eq!(hi - lo, 100_000 - 1);
        for bad in ["", "24", "2024-13", "2024-02-30", "2024-1-01", "2024-01-01T25:00Z", "2024-01-01T10:00", "x"] {
            assert!(date_range(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn numbers_carry_their_precision() {
        assert_eq!(number_range("100"), Some((100.0, 99.5, 100.5)));
        let (_, lo, hi) = number_range("1.50").unwrap();
        assert!((lo - 1.495).abs() < 1e-9 && (hi - 1.505).abs() < 1e-9);
        // One significant figure.
        assert_eq!(number_range("1e2"), Some((100.0, 50.0, 150.0)));
        assert!(number_range("abc").is_none());
        assert!(number_range("inf").is_none());
    }
}
