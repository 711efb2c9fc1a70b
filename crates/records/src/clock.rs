//! Injected time. Stored timestamps are microseconds since the Unix epoch (UTC).

use time::OffsetDateTime;

/// Microseconds since 1970-01-01T00:00:00Z.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// FHIR `instant` form in UTC with microseconds, e.g. `2026-11-21T09:45:00.123456Z`.
    pub fn to_fhir(self) -> String {
        let dt =
            OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1000).unwrap_or(OffsetDateTime::UNIX_EPOCH);
        let f =
            time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");
        dt.format(&f).unwrap_or_default()
    }

    /// Parses an RFC 3339 instant.
    pub fn parse_rfc3339(s: &str) -> Option<Timestamp> {
        let dt = OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
        i64::try_from(dt.unix_timestamp_nanos() / 1000).ok().map(Timestamp)
    }

    /// The timestamp one microsecond later.
    pub fn next(self) -> Timestamp {
        Timestamp(self.0.saturating_add(1))
    }
}

/// A source of the current time.
pub trait Clock: Send + Sync {
    /// Now.
    fn now(&self) -> Timestamp;
}

/// The operating system's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let n = OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000;
        Timestamp(i64::try_from(n).unwrap_or(i64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_as_fhir_instant() {
        let t = Timestamp(1_700_000_000_123_456);
        assert_eq!(t.to_fhir(), "2023-11-14T22:13:20.123456Z");
        assert_eq!(Timestamp::parse_rfc3339(&t.to_fhir()), Some(t));
        assert!(crate::primitive::is_instant(&t.to_fhir()));
    }
}
