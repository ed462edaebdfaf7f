//! Timestamps for idle times (XEP-0319 `since`, RPID `last-input`).
//!
//! Both wire forms use the XML Schema `dateTime` profile of XEP-0082 / RFC 3339. We keep whole
//! seconds in UTC: fractions of a second are dropped on input (nobody's idle time needs them) and
//! never written, so a round trip through either wire form is exact at second granularity. No
//! clock is read here; the caller supplies every instant.

use std::fmt;
use std::str::FromStr;

/// An instant, in whole seconds since 1970-01-01T00:00:00Z.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

/// A timestamp that is not an XEP-0082 `DateTime`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an XEP-0082 date-time: {0:?}")]
pub struct TimestampError(String);

impl Timestamp {
    /// Earliest instant we accept: 0000-01-01T00:00:00Z.
    pub const MIN: Timestamp = Timestamp(-62_167_219_200);
    /// Latest instant we accept: 9999-12-31T23:59:59Z.
    pub const MAX: Timestamp = Timestamp(253_402_300_799);

    /// The instant `secs` seconds after the Unix epoch, clamped to [`Self::MIN`]..=[`Self::MAX`]
    /// (four-digit years are all XEP-0082 allows us to write).
    pub fn from_unix(secs: i64) -> Self {
        Timestamp(secs.clamp(Self::MIN.0, Self::MAX.0))
    }

    /// Seconds since the Unix epoch.
    pub fn unix(self) -> i64 {
        self.0
    }
}

// Howard Hinnant's days-from-civil / civil-from-days algorithms (public domain).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

impl fmt::Display for Timestamp {
    /// `YYYY-MM-DDThh:mm:ssZ`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let days = self.0.div_euclid(86_400);
        let secs = self.0.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
            secs / 3600,
            secs / 60 % 60,
            secs % 60
        )
    }
}

impl FromStr for Timestamp {
    type Err = TimestampError;

    /// `YYYY-MM-DDThh:mm:ss[.fraction](Z|(+|-)hh:mm)`, as XEP-0082 `DateTime`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || TimestampError(s.chars().take(64).collect());
        let b = s.trim().as_bytes();
        let num = |r: std::ops::Range<usize>| -> Result<i64, TimestampError> {
            let part = b.get(r).ok_or_else(err)?;
            if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
                return Err(err());
            }
            Ok(part
                .iter()
                .fold(0i64, |acc, d| acc * 10 + i64::from(d - b'0')))
        };
        let sep = |i: usize, c: u8| -> Result<(), TimestampError> {
            (b.get(i) == Some(&c)).then_some(()).ok_or_else(err)
        };
        let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
        sep(4, b'-')?;
        sep(7, b'-')?;
        if !matches!(b.get(10), Some(b'T' | b't')) {
            return Err(err());
        }
        let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
        sep(13, b':')?;
        sep(16, b':')?;
        let mut i = 19;
        if b.get(i) == Some(&b'.') {
            i += 1;
            let start = i;
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            if i == start {
                return Err(err());
            }
        }
        let offset = match b.get(i) {
            Some(b'Z' | b'z') if i + 1 == b.len() => 0,
            Some(sign @ (b'+' | b'-')) if i + 6 == b.len() => {
                sep(i + 3, b':')?;
                let (oh, om) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
                if oh > 23 || om > 59 {
                    return Err(err());
                }
                let o = oh * 3600 + om * 60;
                if *sign == b'-' {
                    -o
                } else {
                    o
                }
            }
            _ => return Err(err()),
        };
        if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 {
            return Err(err());
        }
        // A leap second (ss = 60) is folded into the next second.
        if se > 60 {
            return Err(err());
        }
        let t = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + se - offset;
        Ok(Timestamp::from_unix(t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses() {
        let t: Timestamp = "2026-11-03T08:15:00Z".parse().unwrap();
        assert_eq!(t.to_string(), "2026-11-03T08:15:00Z");
        let u: Timestamp = "2026-11-03T09:15:00.123+01:00".parse().unwrap();
        assert_eq!(t, u);
        assert_eq!(Timestamp::from_unix(0).to_string(), "1970-01-01T00:00:00Z");
        assert_eq!(Timestamp::MIN.to_string(), "0000-01-01T00:00:00Z");
        assert_eq!(Timestamp::MAX.to_string(), "9999-12-31T23:59:59Z");
    }

    #[test]
    fn rejects_garbage() {
        for s in [
            "",
            "2026-13-01T00:00:00Z",
            "2026-02-30T00:00:00Z",
            "2026-01-01 00:00:00Z",
            "2026-01-01T00:00:00",
            "2026-01-01T00:00:00.Z",
            "2026-01-01T24:00:00Z",
            "２026-01-01T00:00:00Z",
        ] {
            assert!(s.parse::<Timestamp>().is_err(), "{s}");
        }
    }
}
