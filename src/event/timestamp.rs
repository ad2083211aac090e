//! `occurred_at`: RFC 3339 with an offset, rendered in UTC to the second.

use std::cmp::Ordering;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// An instant with the offset the producer wrote; ordered by instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Timestamp(OffsetDateTime);

impl Timestamp {
    /// The instant in UTC to the second, fraction dropped: `2026-11-28T10:15:00Z`.
    pub fn to_utc_second(&self) -> String {
        let utc = self.0.to_offset(time::UtcOffset::UTC);
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            utc.year(),
            u8::from(utc.month()),
            utc.day(),
            utc.hour(),
            utc.minute(),
            utc.second()
        )
    }

    /// Seconds since the Unix epoch (with the fraction), for ages and metrics.
    pub fn unix_seconds_f64(&self) -> f64 {
        self.0.unix_timestamp_nanos() as f64 / 1e9
    }

    /// The instant as `time` sees it.
    pub fn as_offset_date_time(&self) -> OffsetDateTime {
        self.0
    }
}

impl PartialOrd for Timestamp {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Timestamp {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.cmp(&other.0)
    }
}

/// Parses RFC 3339 (`T`/`Z` in either case, fraction optional, offset required).
pub fn parse_rfc3339(text: &str) -> Option<Timestamp> {
    // The time crate's parser is strict RFC 3339; it has no year below 0000
    // or above 9999 and no missing offset, which is what the contract asks.
    let parsed = OffsetDateTime::parse(text, &Rfc3339).ok()?;
    // RFC 3339 allows a lower-case `t` and `z`; so does the parser, but be
    // explicit about the one shape it must have: a date, a separator, a time.
    if text.len() < 20 || !matches!(text.as_bytes()[10], b'T' | b't') {
        return None;
    }
    Some(Timestamp(parsed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_utc_to_the_second_dropping_the_fraction() {
        let ts = parse_rfc3339("2026-11-28T11:15:00.999+01:00").unwrap();
        assert_eq!(ts.to_utc_second(), "2026-11-28T10:15:00Z");
        let ts = parse_rfc3339("2026-11-28t23:30:59.5-05:30").unwrap();
        assert_eq!(ts.to_utc_second(), "2026-11-29T05:00:59Z");
        let ts = parse_rfc3339("2026-11-28T10:15:00z").unwrap();
        assert_eq!(ts.to_utc_second(), "2026-11-28T10:15:00Z");
    }

    #[test]
    fn refuses_what_is_not_rfc_3339() {
        for bad in [
            "2026-11-28T10:15:00",
            "2026-11-28 10:15:00Z",
            "2026-11-28",
            "2026-13-01T00:00:00Z",
            "2026-02-30T00:00:00Z",
            "2026-11-28T24:00:00Z",
            "2026-11-28T10:15:00.Z",
            "2026-11-28T10:15:00+0100",
            "28/11/2026",
            "",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn orders_by_instant_not_by_text() {
        let a = parse_rfc3339("2026-11-28T10:00:00+02:00").unwrap();
        let b = parse_rfc3339("2026-11-28T09:00:00Z").unwrap();
        assert!(a < b);
    }
}
