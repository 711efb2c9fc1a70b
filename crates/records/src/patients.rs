//! Finding a patient as staff type it (患者検索): a logical id, an identifier (MRN, insurance
//! number), a birth date in any usual form (ISO, slashes, eight digits, 和暦), or a name in kanji
//! or kana — folded for width, kana and variant kanji by the search index. One implementation for
//! the SMART patient picker and the console; every lookup is a read by the requester, audited by
//! the record service, and returns only what the requester may see.

use unicode_normalization::UnicodeNormalization;

use crate::{Condition, IssueCode, RecordError, Records, RequestContext, ResourceId, ResourceType, VersionRecord};

/// Patients matching `query` that `ctx` may see, at most `limit`: the patient with that id,
/// those with that identifier, then those born that day or with that name. An empty query finds
/// nothing; one longer than 128 bytes is refused.
pub fn find(
    records: &Records,
    ctx: &RequestContext,
    query: &str,
    limit: usize,
) -> Result<Vec<VersionRecord>, RecordError> {
    let q = query.trim().to_string();
    if q.is_empty() {
        return Ok(Vec::new());
    }
    if q.len() > 128 {
        return Err(RecordError::invalid(IssueCode::Value, "the search text is longer than 128 bytes"));
    }
    let rt = ResourceType::parse("Patient")?;
    let mut found: Vec<VersionRecord> = Vec::new();
    let add = |found: &mut Vec<VersionRecord>, vs: Vec<VersionRecord>| {
        for v in vs {
            if !found.iter().any(|f| f.id == v.id) {
                found.push(v);
            }
        }
    };
    if let Ok(id) = ResourceId::parse(&q) {
        match records.read(ctx, &rt, &id).wait() {
            Ok(v) => add(&mut found, vec![v]),
            Err(RecordError::NotFound(_) | RecordError::Gone(_)) => {}
            Err(e) => return Err(e),
        }
    }
    let ident = Condition::Identifier { system: None, value: q.clone() };
    let by_identifier = ctx.clone().with_query(Some(&format!("identifier={q}")));
    add(&mut found, records.search(&by_identifier, &rt, &[ident]).wait()?);
    let encoded: String = q
        .bytes()
        .map(|b| if b.is_ascii_alphanumeric() { char::from(b).to_string() } else { format!("%{b:02X}") })
        .collect();
    // A birth date (1970-01-02, 1970/1/2, 19700102, 昭和45年1月2日, S45.1.2) is looked up as
    // one; anything else as a name.
    let by_name = match birth_date(&q) {
        Some(d) => format!("birthdate={d}&_count={limit}"),
        None => format!("name={encoded}&_count={limit}"),
    };
    let req = crate::search::parse_search("Patient", &by_name, false, 0)?;
    add(&mut found, records.search_page(&ctx.clone().with_query(Some(&by_name)), &req).wait()?.matches);
    found.truncate(limit);
    Ok(found)
}

/// A birth date as staff type it, as `YYYY-MM-DD`: ISO, with slashes or dots, eight digits, or
/// in the Japanese era (和暦) with the era's name or initial (明治/M, 大正/T, 昭和/S, 平成/H,
/// 令和/R; 元年 for year one).
pub fn birth_date(q: &str) -> Option<String> {
    let q: String = q.nfkc().collect::<String>().trim().to_string();
    let eras =
        [("明治", 'M', 1868), ("大正", 'T', 1912), ("昭和", 'S', 1926), ("平成", 'H', 1989), ("令和", 'R', 2019)];
    let (offset, rest) = match eras.iter().find_map(|(name, initial, start)| {
        q.strip_prefix(name)
            .or_else(|| q.strip_prefix(*initial))
            .or_else(|| q.strip_prefix(initial.to_ascii_lowercase()))
            .map(|r| (Some(*start - 1), r))
    }) {
        Some(found) => found,
        None => (None, q.as_str()),
    };
    let rest = rest.replace("元年", "1年");
    let parts: Vec<&str> = rest.split(['-', '/', '.', '年', '月', '日']).filter(|p| !p.is_empty()).collect();
    let nums: Vec<u32> = match parts.as_slice() {
        [compact] if offset.is_none() && compact.len() == 8 => {
            vec![compact.get(..4)?.parse().ok()?, compact.get(4..6)?.parse().ok()?, compact.get(6..)?.parse().ok()?]
        }
        [y, m, d] => vec![y.parse().ok()?, m.parse().ok()?, d.parse().ok()?],
        _ => return None,
    };
    let (y, m, d) = (nums.first()?, nums.get(1)?, nums.get(2)?);
    let year = match offset {
        Some(o) if (1..=64).contains(y) => o + y,
        Some(_) => return None,
        None if (1800..=2200).contains(y) => *y,
        None => return None,
    };
    let date = time::Date::from_calendar_date(
        i32::try_from(year).ok()?,
        time::Month::try_from(u8::try_from(*m).ok()?).ok()?,
        u8::try_from(*d).ok()?,
    )
    .ok()?;
    Some(format!("{:04}-{:02}-{:02}", date.year(), u8::from(date.month()), date.day()))
}

/// A patient's names (kanji and kana, as recorded) and birth date, for a list.
pub fn label(body: Option<&str>) -> String {
    let Some(v) = body.and_then(|b| serde_json::from_str::<serde_json::Value>(b).ok()) else { return String::new() };
    let names: Vec<String> = v
        .get("name")
        .and_then(serde_json::Value::as_array)
        .into_iter()
        .flatten()
        .map(|n| {
            n.get("text").and_then(serde_json::Value::as_str).map(str::to_string).unwrap_or_else(|| {
                let family = n.get("family").and_then(serde_json::Value::as_str).unwrap_or("");
                let given: Vec<&str> = n
                    .get("given")
                    .and_then(serde_json::Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(serde_json::Value::as_str)
                    .collect();
                format!("{family} {}", given.join(" ")).trim().to_string()
            })
        })
        .filter(|n| !n.is_empty())
        .collect();
    let birth = v.get("birthDate").and_then(serde_json::Value::as_str).unwrap_or("");
    format!("{} {birth}", names.join(" / ")).trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::birth_date;

    #[test]
    fn birth_dates_as_staff_type_them() {
        for q in [
            "1970-01-02",
            "1970/1/2",
            "1970.01.02",
            "19700102",
            "１９７０－０１－０２",
            "昭和45年1月2日",
            "S45.1.2",
            "s45/01/02",
        ] {
            assert_eq!(birth_date(q).as_deref(), Some("1970-01-02"), "{q}");
        }
        assert_eq!(birth_date("平成元年1月8日").as_deref(), Some("1989-01-08"));
        assert_eq!(birth_date("令和2年2月29日").as_deref(), Some("2020-02-29"));
        for q in ["山田", "MRN-0001", "1970-02-30", "12345678", "S99.1.1", "2024", "p1", "", "昭和", "1970-01-02-03"]
        {
            assert_eq!(birth_date(q), None, "{q}");
        }
    }
}
