//! `occurred_at`: RFC 3339 with an offset, rendered in UTC to the second.

use compact_str::CompactString;
use std::cmp::Ordering;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// An instant with the offset the producer wrote; ordered by instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Timestamp(OffsetDateTime);

impl Timestamp {
    /// The instant in UTC to the second, fraction dropped: `2026-11-28T10:15:00Z`.
    ///
    /// Computed from the Unix time, not with `time`'s offset conversion, which
    /// panics outside years 0000 to 9999: `9999-12-31T23:30:00-01:00` is valid
    /// RFC 3339 and renders, with the sign ISO 8601 asks of expanded years, as
    /// `+10000-01-01T00:30:00Z`.
    pub fn to_utc_second(&self) -> CompactString {
        let seconds = self.0.unix_timestamp();
        let (year, month, day) = civil_from_days(seconds.div_euclid(86_400));
        let of_day = seconds.rem_euclid(86_400);
        let (hour, minute, second) = (of_day / 3600, of_day / 60 % 60, of_day % 60);
        if !(0..=9999).contains(&year) {
            return compact_str::format_compact!(
                "{year:+05}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}Z"
            );
        }
        // The usual case, written digit by digit: this runs for every event.
        // Twenty bytes fit in the value itself, without an allocation.
        let mut out = CompactString::const_new("");
        for (value, width, after) in [
            (year, 4, '-'),
            (i64::from(month), 2, '-'),
            (i64::from(day), 2, 'T'),
            (hour, 2, ':'),
            (minute, 2, ':'),
            (second, 2, 'Z'),
        ] {
            for place in (0..width).rev() {
                let digit = (value / 10_i64.pow(place) % 10) as u8;
                out.push(char::from(b'0' + digit));
            }
            out.push(after);
        }
        out
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
///
/// A leap second (`:60`) is accepted when it falls at 23:59:60 UTC, on any
/// day: the rule of JSON Schema's `date-time` format, so that the published
/// schema and this parser agree. It stands for the last nanosecond of 23:59:59.
pub fn parse_rfc3339(text: &str) -> Option<Timestamp> {
    if !has_date_time_shape(text) {
        return None;
    }
    // The shape check makes the first 19 bytes ASCII, so slicing is safe.
    if &text[17..19] != "60" {
        return OffsetDateTime::parse(text, &Rfc3339).ok().map(Timestamp);
    }
    let stand_in = format!("{}59{}", &text[..17], &text[19..]);
    let parsed = OffsetDateTime::parse(&stand_in, &Rfc3339).ok()?;
    if parsed.unix_timestamp().rem_euclid(86_400) != 86_399 {
        return None;
    }
    parsed.replace_nanosecond(999_999_999).ok().map(Timestamp)
}

/// `YYYY-MM-DD`, `T` or `t`, `HH:MM:SS`: the part the `time` crate would
/// otherwise let through with any separator byte.
fn has_date_time_shape(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() >= 20
        && bytes[..19].iter().enumerate().all(|(at, &byte)| match at {
            4 | 7 => byte == b'-',
            10 => matches!(byte, b'T' | b't'),
            13 | 16 => byte == b':',
            _ => byte.is_ascii_digit(),
        })
}

/// The proleptic Gregorian date of a day counted from 1970-01-01 (Howard
/// Hinnant's `civil_from_days`), for any year.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
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
    fn leap_seconds_count_at_23_59_60_utc_on_any_day() {
        let ts = parse_rfc3339("2016-12-31T23:59:60Z").unwrap();
        assert_eq!(ts.to_utc_second(), "2016-12-31T23:59:59Z");
        assert_eq!(ts.as_offset_date_time().nanosecond(), 999_999_999);
        let ts = parse_rfc3339("2026-11-28T18:29:60.5-05:30").unwrap();
        assert_eq!(ts.to_utc_second(), "2026-11-28T23:59:59Z");
        for bad in [
            "2026-11-28T23:58:60Z",
            "2026-11-28T22:59:60Z",
            "2026-11-28T23:59:60+01:00",
            "2026-11-28T23:59:61Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn instants_beyond_year_9999_in_utc_render_without_panicking() {
        let late = parse_rfc3339("9999-12-31T23:30:00-01:00").unwrap();
        assert_eq!(late.to_utc_second(), "+10000-01-01T00:30:00Z");
        let early = parse_rfc3339("0000-01-01T00:30:00+01:00").unwrap();
        assert_eq!(early.to_utc_second(), "-0001-12-31T23:30:00Z");
        let edge = parse_rfc3339("0000-03-01T00:00:00Z").unwrap();
        assert_eq!(edge.to_utc_second(), "0000-03-01T00:00:00Z");
    }

    #[test]
    fn rendering_agrees_with_the_time_crate_across_the_calendar() {
        // Every day around year 0 and the century rules (1900, 2000, 2100, 2400).
        for (first, last) in [(-4, 4), (1896, 1904), (1996, 2104), (2396, 2404)] {
            let mut day = time::Date::from_calendar_date(first, time::Month::January, 1).unwrap();
            while day.year() <= last {
                let ts = Timestamp(day.with_hms(13, 4, 5).unwrap().assume_utc());
                let year = if day.year() < 0 {
                    format!("-{:04}", -day.year())
                } else {
                    format!("{:04}", day.year())
                };
                let expected = format!(
                    "{year}-{:02}-{:02}T13:04:05Z",
                    u8::from(day.month()),
                    day.day()
                );
                assert_eq!(ts.to_utc_second(), expected);
                day = day.next_day().unwrap();
            }
        }
    }

    #[test]
    fn orders_by_instant_not_by_text() {
        let a = parse_rfc3339("2026-11-28T10:00:00+02:00").unwrap();
        let b = parse_rfc3339("2026-11-28T09:00:00Z").unwrap();
        assert!(a < b);
    }
}
