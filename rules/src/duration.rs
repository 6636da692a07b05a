//! Go durations (`1m30s`, `5m0s`, `1.5h`, `300ms`, `-2h45m`), as Kubernetes' flags and
//! configuration files carry them: read as Go's `time.ParseDuration` reads them and printed as
//! Go's `Duration.String()` prints them (`5m0s`, `1h0m0s`, `1.5s`, `300ms`, `0s`).
//!
//! A Go duration is a signed count of nanoseconds in an int64; [`GoDuration`] is exactly that.
//! Flags that want a `std::time::Duration` use [`parse`], which refuses negative ones.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// Why a duration could not be read; the messages are Go's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Not shaped like a duration, or past the int64 range of nanoseconds.
    #[error("time: invalid duration {0:?}")]
    Invalid(String),
    /// A number without its unit (`10`).
    #[error("time: missing unit in duration {0:?}")]
    MissingUnit(String),
    /// A unit that is none of `ns us µs ms s m h`.
    #[error("time: unknown unit {unit:?} in duration {input:?}")]
    UnknownUnit {
        /// The unit as written.
        unit: String,
        /// The whole text.
        input: String,
    },
    /// A negative duration where only a length of time makes sense.
    #[error("negative duration {0:?}")]
    Negative(String),
}

/// `Result` with a [`DurationError`].
pub type Result<T, E = DurationError> = std::result::Result<T, E>;

/// A Go `time.Duration`: signed nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct GoDuration(pub i64);

const NS: u64 = 1;
const US: u64 = 1_000 * NS;
const MS: u64 = 1_000 * US;
const S: u64 = 1_000 * MS;
const MIN: u64 = 60 * S;
const H: u64 = 60 * MIN;

fn unit(u: &str) -> Option<u64> {
    Some(match u {
        "ns" => NS,
        // U+00B5 (micro sign) and U+03BC (Greek mu), as Go accepts both.
        "us" | "\u{b5}s" | "\u{3bc}s" => US,
        "ms" => MS,
        "s" => S,
        "m" => MIN,
        "h" => H,
        _ => return None,
    })
}

impl GoDuration {
    /// Zero.
    pub const ZERO: GoDuration = GoDuration(0);

    /// The nanoseconds.
    pub fn as_nanos(self) -> i64 {
        self.0
    }

    /// As a `std::time::Duration`; `None` when negative.
    pub fn to_std(self) -> Option<Duration> {
        u64::try_from(self.0).ok().map(Duration::from_nanos)
    }

    /// From a `std::time::Duration`, saturating at Go's largest duration (about 292 years).
    pub fn from_std(d: Duration) -> GoDuration {
        GoDuration(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
    }
}

impl From<Duration> for GoDuration {
    fn from(d: Duration) -> Self {
        GoDuration::from_std(d)
    }
}

/// Digits at the start of `s` as an integer: the value, the rest, or `None` on overflow.
fn leading_int(s: &str) -> Option<(u64, &str)> {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let mut v: u64 = 0;
    for b in s[..end].bytes() {
        v = v.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
        if v > 1 << 63 {
            return None;
        }
    }
    Some((v, &s[end..]))
}

/// Fraction digits at the start of `s`: numerator, denominator (a power of ten, saturating:
/// past u128 the fraction is far below a nanosecond), the rest. Digits past what fits are
/// dropped, as Go drops them.
fn leading_fraction(s: &str) -> (u64, u128, &str) {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (mut f, mut scale) = (0u64, 1u128);
    let mut overflow = false;
    for b in s[..end].bytes() {
        if overflow {
            continue;
        }
        if f > (i64::MAX as u64) / 10 {
            overflow = true;
            continue;
        }
        let y = f * 10 + u64::from(b - b'0');
        if y > 1 << 63 {
            overflow = true;
            continue;
        }
        f = y;
        scale = scale.saturating_mul(10);
    }
    (f, scale, &s[end..])
}

impl FromStr for GoDuration {
    type Err = DurationError;

    fn from_str(orig: &str) -> Result<GoDuration> {
        let invalid = || DurationError::Invalid(orig.to_string());
        let mut s = orig;
        let mut negative = false;
        if let Some(c) = s.chars().next() {
            if c == '-' || c == '+' {
                negative = c == '-';
                s = &s[1..];
            }
        }
        if s == "0" {
            return Ok(GoDuration(0));
        }
        if s.is_empty() {
            return Err(invalid());
        }
        let mut total: u64 = 0;
        while !s.is_empty() {
            if !s.starts_with(|c: char| c == '.' || c.is_ascii_digit()) {
                return Err(invalid());
            }
            let before = s.len();
            let (mut v, rest) = leading_int(s).ok_or_else(invalid)?;
            s = rest;
            let pre = s.len() != before;
            let (mut f, mut scale, mut post) = (0, 1, false);
            if let Some(rest) = s.strip_prefix('.') {
                let before = rest.len();
                (f, scale, s) = leading_fraction(rest);
                post = s.len() != before;
            }
            if !pre && !post {
                return Err(invalid());
            }
            let end = s
                .find(|c: char| c == '.' || c.is_ascii_digit())
                .unwrap_or(s.len());
            if end == 0 {
                return Err(DurationError::MissingUnit(orig.to_string()));
            }
            let u = &s[..end];
            s = &s[end..];
            let unit = unit(u).ok_or_else(|| DurationError::UnknownUnit {
                unit: u.to_string(),
                input: orig.to_string(),
            })?;
            if v > (1 << 63) / unit {
                return Err(invalid());
            }
            v *= unit;
            if f > 0 {
                // Exact where Go goes through float64 (the same to the nanosecond but for
                // the last digit of rare fractions of hours).
                let frac = u128::from(f) * u128::from(unit) / scale;
                v = v.checked_add(frac as u64).ok_or_else(invalid)?;
                if v > 1 << 63 {
                    return Err(invalid());
                }
            }
            total = total.checked_add(v).ok_or_else(invalid)?;
            if total > 1 << 63 {
                return Err(invalid());
            }
        }
        if negative {
            // -2^63 is the one value whose magnitude is past i64::MAX.
            return Ok(GoDuration((total as i64).wrapping_neg()));
        }
        i64::try_from(total).map(GoDuration).map_err(|_| invalid())
    }
}

impl fmt::Display for GoDuration {
    /// Go's `Duration.String()`: `1h2m3.5s`, `300ms`, `1.5µs`, `0s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let neg = self.0 < 0;
        let u = self.0.unsigned_abs();
        let mut out = String::with_capacity(24);
        if neg {
            out.push('-');
        }
        if u < S {
            let (unit, prec) = match u {
                0 => return f.write_str("0s"),
                u if u < US => ("ns", 0),
                u if u < MS => ("\u{b5}s", 3),
                _ => ("ms", 6),
            };
            push_with_fraction(&mut out, u, prec);
            out.push_str(unit);
        } else {
            let secs = u / S;
            let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
            if h > 0 {
                out.push_str(&format!("{h}h"));
            }
            if h > 0 || m > 0 {
                out.push_str(&format!("{m}m"));
            }
            push_with_fraction(&mut out, s * S + u % S, 9);
            out.push('s');
        }
        f.write_str(&out)
    }
}

/// `v / 10^prec` with its fraction, trailing zeros (and a bare point) left out.
fn push_with_fraction(out: &mut String, v: u64, prec: u32) {
    let p = 10u64.pow(prec);
    out.push_str(&(v / p).to_string());
    let frac = v % p;
    if frac != 0 {
        let digits = format!("{frac:0width$}", width = prec as usize);
        out.push('.');
        out.push_str(digits.trim_end_matches('0'));
    }
}

/// Reads a non-negative Go duration as a `std::time::Duration` (what every duration flag
/// takes): `15s`, `1m30s`, `5m0s`, `1.5h`, `0`.
pub fn parse(s: &str) -> Result<Duration> {
    let d: GoDuration = s.parse()?;
    d.to_std()
        .ok_or_else(|| DurationError::Negative(s.to_string()))
}

/// Prints a `std::time::Duration` as Go does (`5m0s`), saturating past about 292 years.
pub fn format(d: Duration) -> String {
    GoDuration::from_std(d).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ns(s: &str) -> i64 {
        s.parse::<GoDuration>()
            .unwrap_or_else(|e| panic!("{s:?}: {e}"))
            .0
    }

    #[test]
    fn reads_what_go_reads() {
        let s = 1_000_000_000i64;
        for (text, want) in [
            ("1m30s", 90 * s),
            ("5m0s", 300 * s),
            ("1.5h", 5400 * s),
            ("300ms", 300_000_000),
            ("2h45m", (2 * 3600 + 45 * 60) * s),
            ("1us", 1_000),
            ("1\u{b5}s", 1_000),
            ("1\u{3bc}s", 1_000),
            ("1ns", 1),
            ("0", 0),
            ("-0", 0),
            ("+5s", 5 * s),
            ("-1.5s", -1_500_000_000),
            (".5s", 500_000_000),
            ("1.s", s),
            ("1h1h", 7200 * s),
            ("0.000000001s", 1),
            ("0.0000000001s", 0),
            ("2562047h47m16.854775807s", i64::MAX),
            ("-2562047h47m16.854775808s", i64::MIN),
            ("1.00000000000000000000000000001s", s),
        ] {
            assert_eq!(ns(text), want, "{text:?}");
        }
    }

    #[test]
    fn refuses_what_go_refuses_with_its_words() {
        let err = |s: &str| s.parse::<GoDuration>().unwrap_err().to_string();
        assert_eq!(err(""), "time: invalid duration \"\"");
        assert_eq!(err("10"), "time: missing unit in duration \"10\"");
        assert_eq!(err("3d"), "time: unknown unit \"d\" in duration \"3d\"");
        for bad in [
            "soon",
            ".s",
            "-",
            "+",
            "1.5",
            "s",
            "1s ",
            " 1s",
            "2562047h47m16.854775808s",
        ] {
            assert!(bad.parse::<GoDuration>().is_err(), "{bad:?}");
        }
        assert_eq!(parse("-1s"), Err(DurationError::Negative("-1s".into())));
        assert_eq!(parse("1m30s"), Ok(Duration::from_secs(90)));
    }

    #[test]
    fn prints_what_go_prints() {
        for (n, want) in [
            (0, "0s"),
            (1, "1ns"),
            (1_100, "1.1\u{b5}s"),
            (2_200_000, "2.2ms"),
            (300_000_000, "300ms"),
            (1_500_000_000, "1.5s"),
            (300_000_000_000, "5m0s"),
            (90_000_000_000, "1m30s"),
            (3_600_000_000_000, "1h0m0s"),
            (3_601_000_000_000, "1h0m1s"),
            (-1_500_000_000, "-1.5s"),
            (i64::MAX, "2562047h47m16.854775807s"),
            (i64::MIN, "-2562047h47m16.854775808s"),
        ] {
            assert_eq!(GoDuration(n).to_string(), want, "{n}");
        }
        assert_eq!(format(Duration::from_secs(300)), "5m0s");
    }

    proptest! {
        #[test]
        fn printing_then_parsing_gives_the_same_duration(n in any::<i64>()) {
            let text = GoDuration(n).to_string();
            prop_assert_eq!(text.parse::<GoDuration>(), Ok(GoDuration(n)), "{}", text);
        }

        #[test]
        fn any_text_parses_or_fails_without_panicking(s in "\\PC{0,30}") {
            let _ = s.parse::<GoDuration>();
        }

        #[test]
        fn duration_shaped_text_parses_or_fails_without_panicking(
            s in "[+-]?([0-9]{0,21}(\\.[0-9]{0,25})?(ns|us|µs|μs|ms|s|m|h|x)?){1,4}"
        ) {
            if let Ok(d) = s.parse::<GoDuration>() {
                let canonical = d.to_string();
                prop_assert_eq!(canonical.parse::<GoDuration>(), Ok(d));
            }
        }
    }
}
