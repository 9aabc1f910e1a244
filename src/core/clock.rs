//! Instants at microsecond precision, their one canonical text form, and the clock,
//! which `MEMORY_BACKUP_NOW` replaces for tests.

use std::fmt;

use chrono::{DateTime, Datelike, NaiveDate, Timelike, Utc};

/// The environment variable that replaces the clock.
pub const NOW_ENV: &str = "MEMORY_BACKUP_NOW";

/// An instant, in microseconds since the Unix epoch (UTC). Comparisons use this,
/// never the text it was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    pub const fn from_micros(us: i64) -> Self {
        Timestamp(us)
    }

    pub const fn micros(self) -> i64 {
        self.0
    }

    /// The last instant that RFC 3339 can write: 9999-12-31T23:59:59.999999Z.
    pub const MAX: Timestamp = Timestamp(253_402_300_799_999_999);

    /// The next representable instant: what a hybrid logical clock gives an edit of
    /// a version stamped at `self`. It stops at [`Timestamp::MAX`], so that what is
    /// written can always be read back (the version still orders such edits).
    pub fn next(self) -> Self {
        Timestamp(self.0.saturating_add(1).min(Self::MAX.0))
    }

    /// Reads any RFC 3339 form; digits past the microsecond are dropped.
    pub fn parse(s: &str) -> Option<Self> {
        Timestamp::parse_noting_form(s).map(|(t, _)| t)
    }

    /// A timestamp in the canonical form `YYYY-MM-DDTHH:MM:SS.ffffffZ`, as bytes;
    /// `None` for any other text.
    pub fn parse_canonical(b: &[u8]) -> Option<Self> {
        parse_canonical(b)
    }

    /// [`Timestamp::parse`], and whether `s` is the canonical text of the instant
    /// read (what [`Timestamp::canonical_bytes`] gives): the canonical form is the
    /// only one the fast path takes, and every text it takes is canonical.
    pub fn parse_noting_form(s: &str) -> Option<(Self, bool)> {
        if let Some(t) = parse_canonical(s.as_bytes()) {
            return Some((t, true));
        }
        let dt = DateTime::parse_from_rfc3339(s).ok()?;
        Some((Timestamp(dt.timestamp_micros()), false))
    }

    /// Reads an RFC 3339 timestamp, or a plain `YYYY-MM-DD` as that day's end (UTC):
    /// "at or before a date" then includes the whole day.
    pub fn parse_date_or_time(s: &str) -> Option<Self> {
        Timestamp::parse(s).or_else(|| {
            let d = NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
            let end = d.succ_opt()?.and_hms_opt(0, 0, 0)?.and_utc();
            Some(Timestamp(end.timestamp_micros() - 1))
        })
    }

    fn to_datetime(self) -> DateTime<Utc> {
        DateTime::from_timestamp_micros(self.0).unwrap_or(DateTime::<Utc>::MIN_UTC)
    }
}

/// Length of the canonical text of a timestamp in years 0000 to 9999.
pub const CANONICAL_LEN: usize = 27;

impl Timestamp {
    /// The canonical text as bytes, without chrono or allocation; `None` for years
    /// outside 0000..=9999, whose text has another width (chrono writes those).
    pub fn canonical_bytes(self) -> Option<[u8; CANONICAL_LEN]> {
        let secs = self.0.div_euclid(1_000_000);
        let us = self.0.rem_euclid(1_000_000);
        let days = secs.div_euclid(86_400);
        let sod = secs.rem_euclid(86_400);
        let (y, mo, d) = civil_from_days(days);
        if !(0..=9999).contains(&y) {
            return None;
        }
        let mut b = *b"0000-00-00T00:00:00.000000Z";
        let mut put = |at: usize, width: usize, mut v: i64| {
            for k in (at..at + width).rev() {
                b[k] = b'0' + (v % 10) as u8;
                v /= 10;
            }
        };
        put(0, 4, y);
        put(5, 2, mo);
        put(8, 2, d);
        put(11, 2, sod / 3600);
        put(14, 2, sod / 60 % 60);
        put(17, 2, sod % 60);
        put(20, 6, us);
        Some(b)
    }
}

/// The canonical text: `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(b) = self.canonical_bytes() {
            return f.write_str(std::str::from_utf8(&b).expect("ASCII digits"));
        }
        let dt = self.to_datetime();
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
            dt.year(),
            dt.month(),
            dt.day(),
            dt.hour(),
            dt.minute(),
            dt.second(),
            dt.timestamp_subsec_micros()
        )
    }
}

/// The fast path for the form this tool writes; anything else goes through chrono.
fn parse_canonical(b: &[u8]) -> Option<Timestamp> {
    if b.len() != 27
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[19] != b'.'
        || b[26] != b'Z'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        b[r].iter().try_fold(0i64, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0'))
        })
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, s, us) = (num(11..13)?, num(14..16)?, num(17..19)?, num(20..26)?);
    if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || s > 59 {
        return None; // leap seconds and the like: let chrono decide
    }
    let days = days_from_civil(y, mo, d);
    Some(Timestamp(
        ((days * 86_400 + h * 3600 + mi * 60 + s) * 1_000_000) + us,
    ))
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The proleptic Gregorian date of a count of days since 1970-01-01 (the inverse of
/// [`days_from_civil`], Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Where "now" comes from.
#[derive(Debug, Clone, Copy)]
pub enum Clock {
    System,
    Fixed(Timestamp),
}

impl Clock {
    /// The system clock, unless `MEMORY_BACKUP_NOW` holds an RFC 3339 instant.
    pub fn from_env() -> Result<Clock, String> {
        match std::env::var(NOW_ENV) {
            Ok(v) if !v.trim().is_empty() => Timestamp::parse(v.trim())
                .map(Clock::Fixed)
                .ok_or_else(|| format!("{NOW_ENV}={v:?} is not an RFC 3339 timestamp")),
            _ => Ok(Clock::System),
        }
    }

    pub fn now(&self) -> Timestamp {
        match self {
            Clock::System => Timestamp(Utc::now().timestamp_micros()),
            Clock::Fixed(t) => *t,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_path_agrees_with_chrono() {
        for s in [
            "2026-11-21T22:12:04.123456Z",
            "1970-01-01T00:00:00.000000Z",
            "2000-02-29T23:59:59.999999Z",
            "1969-12-31T23:59:59.999999Z",
            "2400-12-31T00:00:00.000001Z",
        ] {
            let fast = parse_canonical(s.as_bytes()).unwrap();
            let slow = DateTime::parse_from_rfc3339(s).unwrap().timestamp_micros();
            assert_eq!(fast.micros(), slow, "{s}");
            assert_eq!(fast.to_string(), s);
        }
        assert_eq!(parse_canonical(b"2001-02-29T00:00:00.000000Z"), None);
    }

    /// What Display wrote before the fast path: chrono's fields.
    fn via_chrono(t: Timestamp) -> String {
        let dt = t.to_datetime();
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
            dt.year(),
            dt.month(),
            dt.day(),
            dt.hour(),
            dt.minute(),
            dt.second(),
            dt.timestamp_subsec_micros()
        )
    }

    #[test]
    fn fast_formatter_agrees_with_chrono() {
        let day = 86_400_000_000i64;
        let mut instants = vec![
            0,
            -1,
            1,
            i64::MIN,
            i64::MAX,
            // 0000-01-01, 9999-12-31T23:59:59.999999Z and just outside both.
            -62_167_219_200_000_000,
            -62_167_219_200_000_001,
            253_402_300_799_999_999,
            253_402_300_800_000_000,
            // Leap days: 2000-02-29, 1900-03-01, 2024-02-29.
            951_782_400_000_000,
            -2_203_891_200_000_000,
            1_709_164_800_000_000,
        ];
        // Every day from 1890 to 2110 at a varying time of day, and a spread of
        // pseudo-random instants over the years 0000 to 9999 and beyond.
        let mut t = -2_524_608_000_000_000i64;
        while t < 4_417_977_600_000_000 {
            instants.push(t + (t / day).rem_euclid(day));
            instants.push(t - 1);
            t += day;
        }
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            instants.push((x % 640_000_000_000_000_000) as i64 - 320_000_000_000_000_000);
        }
        for us in instants {
            let t = Timestamp(us);
            assert_eq!(t.to_string(), via_chrono(t), "{us}");
            if let Some(b) = t.canonical_bytes() {
                let text = std::str::from_utf8(&b).unwrap();
                assert_eq!(Timestamp::parse_noting_form(text), Some((t, true)));
            }
        }
    }

    #[test]
    fn other_rfc3339_forms_give_the_same_instant() {
        let a = Timestamp::parse("2026-11-21T22:12:04.123456Z").unwrap();
        for s in [
            "2026-11-21T23:12:04.123456+01:00",
            "2026-11-21t22:12:04.123456z",
            "2026-11-21T22:12:04.1234569Z",
            "2026-11-21T17:12:04.123456000-05:00",
        ] {
            assert_eq!(Timestamp::parse(s), Some(a), "{s}");
            assert_eq!(Timestamp::parse_noting_form(s), Some((a, false)), "{s}");
        }
        assert_eq!(Timestamp::parse("2026-11-21 22:12"), None);
    }

    #[test]
    fn a_leap_second_is_read_but_not_canonical() {
        let text = "2016-12-31T23:59:60.500000Z";
        let (t, canonical) = Timestamp::parse_noting_form(text).unwrap();
        assert!(!canonical);
        assert_ne!(t.to_string(), text);
    }

    proptest::proptest! {
        /// Law: the fast path takes a text only when it is the canonical text of the
        /// instant it reads, so `Metadata` can skip formatting it again to know.
        #[test]
        fn every_text_the_fast_path_takes_is_canonical(
            y in 0u32..10_000, mo in 0u32..14, d in 0u32..33, h in 0u32..26,
            mi in 0u32..62, s in 0u32..62, us in 0u32..1_000_000,
        ) {
            let text = format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{us:06}Z");
            if let Some(t) = parse_canonical(text.as_bytes()) {
                proptest::prop_assert_eq!(t.canonical_bytes().unwrap(), text.as_bytes());
            }
        }
    }

    #[test]
    fn the_hybrid_clock_stops_at_the_last_writable_instant() {
        let last = Timestamp::parse("9999-12-31T23:59:59.999999Z").unwrap();
        assert_eq!(last, Timestamp::MAX);
        assert_eq!(last.next(), last);
        assert_eq!(Timestamp::parse(&last.next().to_string()), Some(last));
    }

    #[test]
    fn a_bare_date_means_the_end_of_that_day() {
        let t = Timestamp::parse_date_or_time("2026-11-21").unwrap();
        assert_eq!(t.to_string(), "2026-11-21T23:59:59.999999Z");
    }
}
