//! Kubernetes resource quantities (`100m`, `64Mi`, `1.5Gi`, `2e3`) as exact integers.
//!
//! A quantity is a decimal number with an optional binary (`Ki` … `Ei`) or decimal
//! (`n`, `u`, `m`, `k`, `M`, `G`, `T`, `P`, `E`) suffix or exponent. The scheduler needs two
//! views: milli-units (CPU is counted in millicores) and whole units rounded up (bytes, pods,
//! extended resources), as Kubernetes' `MilliValue` and `Value` give them.

/// Why a quantity could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$': {0:?}")]
pub struct QuantityError(pub String);

/// The quantity in thousandths of a unit, rounded up (Kubernetes' `MilliValue`).
pub fn parse_milli(s: &str) -> Result<i64, QuantityError> {
    let err = || QuantityError(s.to_string());
    let s = s.trim();
    if s.is_empty() {
        return Err(err());
    }
    let (sign, rest) = match s.as_bytes()[0] {
        b'-' => (-1i128, &s[1..]),
        b'+' => (1, &s[1..]),
        _ => (1, s),
    };
    let split = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let (number, suffix) = rest.split_at(split);
    if number.is_empty() || number == "." || number.matches('.').count() > 1 {
        return Err(err());
    }
    let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
    // The number as digits × 10^-scale.
    let digits: String = format!("{int_part}{frac_part}");
    let mut mantissa: i128 = if digits.is_empty() {
        0
    } else {
        digits.parse().map_err(|_| err())?
    };
    let mut exp10: i32 = -(frac_part.len() as i32);
    let mut mult: i128 = 1;
    match suffix {
        "" => {}
        "Ki" => mult = 1 << 10,
        "Mi" => mult = 1 << 20,
        "Gi" => mult = 1 << 30,
        "Ti" => mult = 1 << 40,
        "Pi" => mult = 1 << 50,
        "Ei" => mult = 1 << 60,
        "n" => exp10 -= 9,
        "u" => exp10 -= 6,
        "m" => exp10 -= 3,
        "k" => exp10 += 3,
        "M" => exp10 += 6,
        "G" => exp10 += 9,
        "T" => exp10 += 12,
        "P" => exp10 += 15,
        "E" => exp10 += 18,
        s if s.starts_with(['e', 'E']) => {
            let e: i32 = s[1..].parse().map_err(|_| err())?;
            if !(-30..=30).contains(&e) {
                return Err(err());
            }
            exp10 += e;
        }
        _ => return Err(err()),
    }
    mantissa = mantissa.checked_mul(mult).ok_or_else(err)?;
    // Milli-units: shift by 3 more.
    exp10 += 3;
    let value = if exp10 >= 0 {
        mantissa
            .checked_mul(10i128.checked_pow(exp10 as u32).ok_or_else(err)?)
            .ok_or_else(err)?
    } else {
        let d = 10i128.checked_pow((-exp10) as u32).ok_or_else(err)?;
        // Round up, as Kubernetes does.
        (mantissa + d - 1) / d
    };
    i64::try_from(sign * value).map_err(|_| err())
}

/// The quantity in whole units, rounded up (Kubernetes' `Value`).
pub fn parse_value(s: &str) -> Result<i64, QuantityError> {
    let m = parse_milli(s)?;
    Ok(if m >= 0 { (m + 999) / 1000 } else { m / 1000 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_kubernetes_quantities() {
        assert_eq!(parse_milli("100m"), Ok(100));
        assert_eq!(parse_milli("1"), Ok(1000));
        assert_eq!(parse_milli("0.5"), Ok(500));
        assert_eq!(parse_milli("1.5"), Ok(1500));
        assert_eq!(parse_milli("2k"), Ok(2_000_000));
        assert_eq!(parse_milli("1e3"), Ok(1_000_000));
        assert_eq!(parse_milli("1n"), Ok(1), "rounds up");
        assert_eq!(parse_value("64Mi"), Ok(64 << 20));
        assert_eq!(parse_value("1.5Gi"), Ok(3 << 29));
        assert_eq!(parse_value("1G"), Ok(1_000_000_000));
        assert_eq!(parse_value("100m"), Ok(1), "whole units round up");
        assert_eq!(parse_value("110"), Ok(110));
        assert_eq!(parse_milli("-1"), Ok(-1000));
    }

    #[test]
    fn rejects_what_kubernetes_rejects() {
        for bad in ["", "abc", "1x", "1.2.3", "Mi", ".", "1e99"] {
            assert!(parse_milli(bad).is_err(), "{bad:?}");
        }
    }
}
