//! Kubernetes resource quantities (`100m`, `64Mi`, `1.5Gi`, `2e3`), exact.
//!
//! The semantics are those of apimachinery's `resource.Quantity`: a signed decimal number with
//! a decimal SI suffix (`n u m k M G T P E`), a binary one (`Ki` … `Ei`) or a decimal exponent
//! (`e3`, `E-2`); values are kept to the nanounit, anything finer rounded up (away from zero);
//! binary values are capped at 2^63-1; the value prints in Kubernetes' canonical form (`16.1`
//! → `16100m`, `1.5Gi` → `1536Mi`, `1000` → `1k`). Arithmetic and comparison are exact: no
//! floating point anywhere, so `9m` equals `0.009`.
//!
//! Values are held as an `i128` count of nanounits, which covers every quantity Kubernetes
//! can use (the int64 range of whole units, and far beyond); a decimal quantity past about
//! 1.7×10^29 is refused as out of range, where Kubernetes would carry it as a big decimal.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity as Wire;

/// Why a quantity could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// Not shaped like a quantity at all (kube-apiserver's wording).
    #[error("quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")]
    Format,
    /// Shaped like one, with a suffix that is none of the known ones (`1ki`, `5e`).
    #[error("unable to parse quantity's suffix")]
    Suffix,
    /// Too large to hold (beyond about 1.7×10^29 units).
    #[error("quantity is out of range")]
    OutOfRange,
}

/// `Result` with a [`QuantityError`].
pub type Result<T, E = QuantityError> = std::result::Result<T, E>;

/// How a quantity prints: the family of suffix it was written with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Format {
    /// `n u m k M G T P E` or none (`12M` is 12×10^6).
    #[default]
    DecimalSI,
    /// `Ki Mi Gi Ti Pi Ei` (`12Mi` is 12×2^20).
    BinarySI,
    /// `e<n>` (`12e6`).
    DecimalExponent,
}

const NANO: i128 = 1_000_000_000;
/// Binary quantities are capped at the largest int64, as Kubernetes caps them.
const MAX_BINARY: i128 = i64::MAX as i128 * NANO;

/// An exact Kubernetes quantity. Equality, order and hashing look at the value alone
/// (`1Ki` == `1024`), as Kubernetes' `Cmp` does; the [`Format`] only decides how it prints.
#[derive(Debug, Clone, Copy)]
pub struct Quantity {
    nanos: i128,
    format: Format,
}

impl Quantity {
    /// Zero.
    pub const ZERO: Quantity = Quantity {
        nanos: 0,
        format: Format::DecimalSI,
    };

    /// `milli` thousandths of a unit (`Quantity::from_milli(250)` is `250m`).
    pub fn from_milli(milli: i64) -> Quantity {
        Quantity {
            nanos: i128::from(milli) * 1_000_000,
            format: Format::DecimalSI,
        }
    }

    /// `units` whole units, printed in `format`.
    pub fn from_value(units: i64, format: Format) -> Quantity {
        Quantity {
            nanos: i128::from(units) * NANO,
            format,
        }
    }

    /// The value in nanounits (10^-9), exactly.
    #[inline]
    pub fn as_nanos(&self) -> i128 {
        self.nanos
    }

    /// How it prints.
    pub fn format(&self) -> Format {
        self.format
    }

    /// The same value printed in `format`.
    pub fn with_format(self, format: Format) -> Quantity {
        Quantity { format, ..self }
    }

    /// Whether it is zero.
    #[inline]
    pub fn is_zero(&self) -> bool {
        self.nanos == 0
    }

    /// -1, 0 or 1.
    #[inline]
    pub fn signum(&self) -> i32 {
        self.nanos.signum() as i32
    }

    /// Thousandths of a unit, rounded away from zero and saturating at the int64 range
    /// (Kubernetes' `MilliValue`): `0.1m` → 1, `1.5` → 1500.
    #[inline]
    pub fn milli_value(&self) -> i64 {
        scaled(self.nanos, 1_000_000)
    }

    /// Whole units, rounded away from zero and saturating at the int64 range (Kubernetes'
    /// `Value`): `100m` → 1, `1.5Gi` → 1610612736.
    #[inline]
    pub fn value(&self) -> i64 {
        scaled(self.nanos, NANO)
    }

    /// The sum, or `None` past the range.
    pub fn checked_add(self, other: Quantity) -> Option<Quantity> {
        Some(Quantity {
            nanos: self.nanos.checked_add(other.nanos)?,
            format: if self.is_zero() {
                other.format
            } else {
                self.format
            },
        })
    }

    /// The difference, or `None` past the range.
    pub fn checked_sub(self, other: Quantity) -> Option<Quantity> {
        Some(Quantity {
            nanos: self.nanos.checked_sub(other.nanos)?,
            format: if self.is_zero() {
                other.format
            } else {
                self.format
            },
        })
    }

    /// The product with an integer, or `None` past the range.
    pub fn checked_mul(self, by: i64) -> Option<Quantity> {
        Some(Quantity {
            nanos: self.nanos.checked_mul(i128::from(by))?,
            format: self.format,
        })
    }

    /// The canonical text, as a k8s-openapi `Quantity`.
    pub fn to_wire(&self) -> Wire {
        Wire(self.to_string())
    }
}

/// `n / unit`, rounded away from zero, saturated to i64.
fn scaled(n: i128, unit: i128) -> i64 {
    let q = n / unit;
    let q = if n % unit == 0 { q } else { q + n.signum() };
    i64::try_from(q).unwrap_or(if q < 0 { i64::MIN } else { i64::MAX })
}

impl PartialEq for Quantity {
    fn eq(&self, other: &Self) -> bool {
        self.nanos == other.nanos
    }
}

impl Eq for Quantity {}

impl PartialOrd for Quantity {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Quantity {
    fn cmp(&self, other: &Self) -> Ordering {
        self.nanos.cmp(&other.nanos)
    }
}

impl std::hash::Hash for Quantity {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.nanos.hash(state);
    }
}

impl Default for Quantity {
    fn default() -> Self {
        Quantity::ZERO
    }
}

impl std::ops::Add for Quantity {
    type Output = Quantity;
    /// The sum; panics past the range (about 1.7×10^29 units), as integer overflow does.
    fn add(self, other: Quantity) -> Quantity {
        self.checked_add(other).expect("quantity overflow")
    }
}

impl std::ops::Sub for Quantity {
    type Output = Quantity;
    /// The difference; panics past the range, as integer overflow does.
    fn sub(self, other: Quantity) -> Quantity {
        self.checked_sub(other).expect("quantity overflow")
    }
}

impl std::ops::Neg for Quantity {
    type Output = Quantity;
    fn neg(self) -> Quantity {
        Quantity {
            nanos: -self.nanos,
            format: self.format,
        }
    }
}

impl std::iter::Sum for Quantity {
    fn sum<I: Iterator<Item = Quantity>>(iter: I) -> Quantity {
        iter.fold(Quantity::ZERO, |a, b| a + b)
    }
}

/// The parts of a quantity's text, as apimachinery's scanner splits them.
struct Scanned<'a> {
    negative: bool,
    /// Integer digits, leading zeros stripped (may be empty).
    int: &'a str,
    /// Fraction digits (may be empty).
    frac: &'a str,
    suffix: &'a str,
}

fn scan(s: &str) -> Result<Scanned<'_>> {
    let b = s.as_bytes();
    let end = b.len();
    let mut pos = 0;
    let mut negative = false;
    if let Some(&c) = b.first() {
        if c == b'-' || c == b'+' {
            negative = c == b'-';
            pos = 1;
        }
    }
    while pos < end && b[pos] == b'0' {
        pos += 1;
    }
    let digits = |from: usize| (from..end).find(|&i| !b[i].is_ascii_digit()).unwrap_or(end);
    let int_end = digits(pos);
    let int = &s[pos..int_end];
    pos = int_end;
    let mut frac = "";
    if pos < end && b[pos] == b'.' {
        let frac_end = digits(pos + 1);
        frac = &s[pos + 1..frac_end];
        pos = frac_end;
    }
    let suffix_start = pos;
    while pos < end && b"eEinumkKMGTP".contains(&b[pos]) {
        pos += 1;
    }
    if pos < end && (b[pos] == b'-' || b[pos] == b'+') {
        pos += 1;
    }
    if digits(pos) != end {
        return Err(QuantityError::Format);
    }
    Ok(Scanned {
        negative,
        int,
        frac,
        suffix: &s[suffix_start..],
    })
}

/// The base (10 or 2), exponent and format a suffix stands for.
fn interpret(suffix: &str) -> Option<(u32, i32, Format)> {
    let dec = |e| Some((10, e, Format::DecimalSI));
    let bin = |e| Some((2, e, Format::BinarySI));
    match suffix {
        "n" => dec(-9),
        "u" => dec(-6),
        "m" => dec(-3),
        "" => dec(0),
        "k" => dec(3),
        "M" => dec(6),
        "G" => dec(9),
        "T" => dec(12),
        "P" => dec(15),
        "E" => dec(18),
        "Ki" => bin(10),
        "Mi" => bin(20),
        "Gi" => bin(30),
        "Ti" => bin(40),
        "Pi" => bin(50),
        "Ei" => bin(60),
        s if s.len() > 1 && s.starts_with(['e', 'E']) => {
            let e: i64 = s[1..].parse().ok()?;
            // apimachinery keeps the low 32 bits.
            Some((10, e as i32, Format::DecimalExponent))
        }
        _ => None,
    }
}

/// `digits × 2^bin × 10^exp10` in nanounits, rounded up in magnitude.
fn nanos_of(digits: &str, bin: u32, exp10: i64) -> Result<i128> {
    let digits = digits.trim_start_matches('0');
    let trimmed = digits.trim_end_matches('0');
    if trimmed.is_empty() {
        return Ok(0);
    }
    let exp10 = exp10 + 9 + (digits.len() - trimmed.len()) as i64;
    let n = trimmed.len() as i64;
    // At least 10^(n-1+exp10): past i128 (about 1.7×10^38) from 10^39 on.
    if n - 1 + exp10 >= 39 {
        return Err(QuantityError::OutOfRange);
    }
    // At most 10^n × 2^60 × 10^exp10 < 10^(n+19+exp10): below one nanounit, so rounds to 1.
    if n + 19 + exp10 <= 0 {
        return Ok(1);
    }
    if n <= 38 {
        let d: u128 = trimmed.parse().map_err(|_| QuantityError::Format)?;
        let d = d
            .checked_mul(1u128 << bin)
            .ok_or(QuantityError::OutOfRange)?;
        let v = if exp10 >= 0 {
            d.checked_mul(10u128.pow(exp10 as u32))
                .ok_or(QuantityError::OutOfRange)?
        } else {
            div_ceil_pow10(d, (-exp10) as u32)
        };
        return i128::try_from(v).map_err(|_| QuantityError::OutOfRange);
    }
    // More significant digits than u128 holds, with a negative exponent: the digits that stay
    // after the point decide the integer part; those beyond carry only "round up".
    long_nanos(trimmed, bin, (-exp10) as usize)
}

/// `ceil(d / 10^k)`.
fn div_ceil_pow10(d: u128, k: u32) -> u128 {
    match 10u128.checked_pow(k) {
        Some(p) => d.div_ceil(p),
        None => u128::from(d > 0),
    }
}

/// `ceil(digits × 2^bin / 10^k)` for a digit string too long for u128, by long multiplication
/// in decimal: the digits left of the last `k` are the integer part, any nonzero digit among
/// those `k` rounds up.
fn long_nanos(digits: &str, bin: u32, k: usize) -> Result<i128> {
    let m = 1u128 << bin;
    // Least significant digit first.
    let mut product: Vec<u8> = Vec::with_capacity(digits.len() + 20);
    let mut carry: u128 = 0;
    for c in digits.bytes().rev() {
        let v = u128::from(c - b'0') * m + carry;
        product.push((v % 10) as u8);
        carry = v / 10;
    }
    while carry > 0 {
        product.push((carry % 10) as u8);
        carry /= 10;
    }
    let (fraction, int) = product.split_at(k.min(product.len()));
    let mut v: u128 = 0;
    for &d in int.iter().rev() {
        v = v
            .checked_mul(10)
            .and_then(|v| v.checked_add(u128::from(d)))
            .ok_or(QuantityError::OutOfRange)?;
    }
    if fraction.iter().any(|&d| d != 0) {
        v = v.checked_add(1).ok_or(QuantityError::OutOfRange)?;
    }
    i128::try_from(v).map_err(|_| QuantityError::OutOfRange)
}

impl FromStr for Quantity {
    type Err = QuantityError;

    /// Parses as apimachinery's `ParseQuantity` does (no surrounding spaces allowed; the
    /// `TryFrom<&k8s Quantity>` conversion trims them, as JSON decoding does).
    fn from_str(s: &str) -> Result<Quantity> {
        if s.is_empty() {
            return Err(QuantityError::Format);
        }
        let p = scan(s)?;
        let (base, exp, mut format) = interpret(p.suffix).ok_or(QuantityError::Suffix)?;
        let digits = format!("{}{}", p.int, p.frac);
        let (bin, exp10) = if base == 2 {
            (exp as u32, -(p.frac.len() as i64))
        } else {
            (0, i64::from(exp) - p.frac.len() as i64)
        };
        let mut nanos = nanos_of(&digits, bin, exp10)?;
        if format == Format::BinarySI {
            nanos = nanos.min(MAX_BINARY);
            if nanos > 0 && nanos < NANO {
                format = Format::DecimalSI;
            }
        }
        if p.negative {
            nanos = -nanos;
        }
        Ok(Quantity { nanos, format })
    }
}

impl TryFrom<&Wire> for Quantity {
    type Error = QuantityError;

    /// Reads a k8s-openapi quantity, surrounding spaces ignored as Kubernetes' JSON decoding
    /// ignores them.
    fn try_from(q: &Wire) -> Result<Quantity> {
        q.0.trim().parse()
    }
}

impl From<Quantity> for Wire {
    fn from(q: Quantity) -> Wire {
        q.to_wire()
    }
}

impl fmt::Display for Quantity {
    /// Kubernetes' canonical form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.nanos == 0 {
            return f.write_str("0");
        }
        let binary = self.format == Format::BinarySI
            && self.nanos.unsigned_abs() >= 1024 * NANO as u128
            && self.nanos % NANO == 0;
        if binary {
            let mut m = self.nanos / NANO;
            let mut exp = 0;
            while exp < 6 && m % 1024 == 0 {
                m /= 1024;
                exp += 1;
            }
            let suffix = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"][exp];
            return write!(f, "{m}{suffix}");
        }
        let mut m = self.nanos;
        let mut exp: i32 = -9;
        while m % 10 == 0 {
            m /= 10;
            exp += 1;
        }
        let r = exp.rem_euclid(3);
        m *= 10i128.pow(r as u32);
        exp -= r;
        let si = match exp {
            -9 => Some("n"),
            -6 => Some("u"),
            -3 => Some("m"),
            0 => Some(""),
            3 => Some("k"),
            6 => Some("M"),
            9 => Some("G"),
            12 => Some("T"),
            15 => Some("P"),
            18 => Some("E"),
            _ => None,
        };
        match si {
            Some(s) if self.format != Format::DecimalExponent => write!(f, "{m}{s}"),
            _ if exp == 0 => write!(f, "{m}"),
            _ => write!(f, "{m}e{exp}"),
        }
    }
}

impl serde::Serialize for Quantity {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Quantity {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.trim().parse().map_err(serde::de::Error::custom)
    }
}

/// Reads `map[name]`: `None` when absent, the error when malformed.
pub fn get(
    map: Option<&std::collections::BTreeMap<String, Wire>>,
    name: &str,
) -> Option<Result<Quantity>> {
    map?.get(name).map(Quantity::try_from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn q(s: &str) -> Quantity {
        s.parse().unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    #[test]
    fn canonical_forms_as_kubernetes_prints_them() {
        for (input, canonical) in [
            ("16.1", "16100m"),
            ("0.009", "9m"),
            ("9m", "9m"),
            ("1.5Gi", "1536Mi"),
            ("1000", "1k"),
            ("1500", "1500"),
            ("0.1", "100m"),
            ("100m", "100m"),
            ("1Ki", "1Ki"),
            ("1024", "1024"),
            ("512Ki", "512Ki"),
            ("0.5Ki", "512"),
            ("1.1Gi", "1181116006400m"),
            ("2e3", "2e3"),
            ("1.5e3", "1500"),
            ("12e6", "12e6"),
            ("1e-3", "1e-3"),
            ("1e21", "1e21"),
            ("1000E", "1e21"),
            ("-1.5", "-1500m"),
            ("+5", "5"),
            ("0", "0"),
            ("00100", "100"),
            ("0.0001m", "100n"),
            ("1n", "1n"),
            ("0.1n", "1n"),
            ("-0.1n", "-1n"),
            ("1e-20", "1e-9"),
            ("1.", "1"),
            (".5", "500m"),
            ("1Ei", "1Ei"),
            ("9Ei", "9223372036854775807"),
            ("64Mi", "64Mi"),
            ("1.5", "1500m"),
            ("1M", "1M"),
            ("1000000", "1M"),
            ("1000k", "1M"),
            ("1024Ki", "1Mi"),
            // apimachinery reads an empty number as zero.
            ("Mi", "0"),
            (".", "0"),
            ("-", "0"),
        ] {
            assert_eq!(q(input).to_string(), canonical, "{input:?}");
        }
    }

    #[test]
    fn equal_values_are_equal_whatever_their_text() {
        assert_eq!(q("9m"), q("0.009"));
        assert!(q("9m") <= q("0.009"), "requests 9m within limits 0.009");
        assert_eq!(q("1Ki"), q("1024"));
        assert_eq!(q("1e3"), q("1k"));
        assert_eq!(q("16.1").milli_value(), 16100);
        assert!(q("100m") < q("1"));
        assert!(q("-1") < q("0"));
    }

    #[test]
    fn milli_value_and_value_round_away_from_zero() {
        assert_eq!(q("100m").milli_value(), 100);
        assert_eq!(q("1").milli_value(), 1000);
        assert_eq!(q("0.5").milli_value(), 500);
        assert_eq!(q("2k").milli_value(), 2_000_000);
        assert_eq!(q("1e3").milli_value(), 1_000_000);
        assert_eq!(q("1n").milli_value(), 1);
        assert_eq!(q("-1n").milli_value(), -1);
        assert_eq!(q("64Mi").value(), 64 << 20);
        assert_eq!(q("1.5Gi").value(), 3 << 29);
        assert_eq!(q("1G").value(), 1_000_000_000);
        assert_eq!(q("100m").value(), 1);
        assert_eq!(q("-100m").value(), -1);
        assert_eq!(q("110").value(), 110);
        assert_eq!(q("-1").milli_value(), -1000);
        assert_eq!(q("9Ei").value(), i64::MAX, "binary quantities are capped");
        assert_eq!(q("100E").milli_value(), i64::MAX, "saturates");
    }

    #[test]
    fn arithmetic_is_exact() {
        assert_eq!((q("0.1") + q("0.2")).to_string(), "300m");
        assert_eq!((q("1Gi") - q("512Mi")).to_string(), "512Mi");
        assert_eq!(
            (Quantity::ZERO + q("1Ki")).to_string(),
            "1Ki",
            "zero takes the format"
        );
        assert_eq!((-q("1Ki")).to_string(), "-1Ki");
        assert_eq!(q("250m").checked_mul(4), Some(q("1")));
        assert_eq!([q("1"), q("500m")].into_iter().sum::<Quantity>(), q("1.5"));
        assert_eq!(Quantity::from_milli(16100), q("16.1"));
        assert_eq!(Quantity::from_value(3, Format::BinarySI).to_string(), "3");
    }

    #[test]
    fn errors_as_kubernetes_words_them() {
        for bad in ["", "abc", "1x", "1.2.3", "1Xi", " 1", "1 ", "1e1.5", "1µ"] {
            assert_eq!(
                bad.parse::<Quantity>(),
                Err(QuantityError::Format),
                "{bad:?}"
            );
        }
        for bad in ["1ki", "1e", "5mi", "1KiB", "--1"] {
            let e = bad.parse::<Quantity>();
            assert!(e.is_err(), "{bad:?}");
        }
        assert_eq!("1ki".parse::<Quantity>(), Err(QuantityError::Suffix));
        assert_eq!("1e99".parse::<Quantity>(), Err(QuantityError::OutOfRange));
        assert_eq!(
            QuantityError::Format.to_string(),
            "quantities must match the regular expression \
             '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
        );
        let wire = Wire(" 2Gi ".into());
        assert_eq!(
            Quantity::try_from(&wire),
            Ok(q("2Gi")),
            "JSON decoding trims"
        );
    }

    #[test]
    fn long_inputs_stay_exact() {
        assert_eq!(
            q("0.0000000000000000000000000000000000000000001").to_string(),
            "1n"
        );
        assert_eq!(
            q("1.0000000000000000000000000000000000000000001").to_string(),
            "1000000001n"
        );
        assert_eq!(
            q("12345678901234567890.123456789").to_string(),
            "12345678901234567890123456789n"
        );
        assert_eq!(
            q("0.0000000000000000000000000000000000000000001Ei").to_string(),
            "1n"
        );
        assert_eq!(q("1e-2147483648").to_string(), "1e-9");
    }

    #[test]
    fn serde_round_trip() {
        let v: Quantity = serde_json::from_str("\"1.5Gi\"").unwrap();
        assert_eq!(serde_json::to_string(&v).unwrap(), "\"1536Mi\"");
        assert!(serde_json::from_str::<Quantity>("\"x\"").is_err());
    }

    fn any_quantity() -> impl Strategy<Value = Quantity> {
        let nanos = prop_oneof![
            any::<i64>().prop_map(i128::from),
            (any::<i64>(), 0u32..12).prop_map(|(v, e)| i128::from(v) * 10i128.pow(e)),
            (any::<i32>(), 0u32..7).prop_map(|(v, e)| i128::from(v) * NANO * (1i128 << (10 * e))),
        ];
        let format = prop_oneof![
            Just(Format::DecimalSI),
            Just(Format::BinarySI),
            Just(Format::DecimalExponent),
        ];
        (nanos, format).prop_map(|(nanos, format)| Quantity {
            nanos: if format == Format::BinarySI {
                nanos.clamp(-MAX_BINARY, MAX_BINARY)
            } else {
                nanos
            },
            format,
        })
    }

    proptest! {
        #[test]
        fn printing_then_parsing_keeps_the_value(v in any_quantity()) {
            let text = v.to_string();
            let back: Quantity = text.parse().map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
            prop_assert_eq!(back, v, "{}", text);
            prop_assert_eq!(back.to_string(), text, "the canonical form is stable");
        }

        #[test]
        fn any_text_parses_or_fails_without_panicking(s in "\\PC{0,40}") {
            let _ = s.parse::<Quantity>();
        }

        #[test]
        fn quantity_shaped_text_parses_or_fails_without_panicking(
            s in "[+-]?[0-9.]{0,45}[eEinumkKMGTP]{0,3}[-+]?[0-9]{0,12}"
        ) {
            if let Ok(v) = s.parse::<Quantity>() {
                let canonical = v.to_string();
                let again: Quantity = canonical.parse().unwrap();
                prop_assert_eq!(again, v);
                prop_assert_eq!(again.to_string(), canonical);
            }
        }
    }
}
