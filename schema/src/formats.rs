//! The string formats Kubernetes checks in custom objects: the kube-openapi `strfmt` registry
//! that the apiextensions API server validates with (`uri`, `email`, `hostname`, `ipv4`,
//! `ipv6`, `cidr`, `mac`, `uuid`/`uuid3`/`uuid4`/`uuid5`, `isbn`/`isbn10`/`isbn13`,
//! `creditcard`, `ssn`, `hexcolor`, `rgbcolor`, `byte`, `password`, `date`, `date-time`,
//! `duration`, `bsonobjectid`, `k8s-short-name`, `k8s-long-name`), and which formats survive
//! on which types (`int32`/`int64` on integers, `float`/`double` on numbers; any other format
//! is ignored, as Kubernetes strips it before validating).
//!
//! Each check follows the Go function Kubernetes calls (`net.ParseIP`, `net/url`'s
//! `ParseRequestURI`, `net/mail`'s `ParseAddress`, `time.Parse`, ...). `email` follows the
//! RFC 5322 address forms that `net/mail` accepts, without comments.

use std::net::Ipv6Addr;
use std::sync::OnceLock;

use regex::Regex;

use crate::structural::Schema;

/// Format names as the registry knows them: dashes removed (`date-time` is `datetime`).
const STRING_FORMATS: &[&str] = &[
    "bsonobjectid",
    "uri",
    "email",
    "hostname",
    "ipv4",
    "ipv6",
    "cidr",
    "mac",
    "uuid",
    "uuid3",
    "uuid4",
    "uuid5",
    "isbn",
    "isbn10",
    "isbn13",
    "creditcard",
    "ssn",
    "hexcolor",
    "rgbcolor",
    "byte",
    "password",
    "date",
    "duration",
    "datetime",
    "k8sshortname",
    "k8slongname",
];

/// The registry's name for a format: dashes removed.
pub(crate) fn normalize(format: &str) -> String {
    format.replace('-', "")
}

/// The format a node is validated with, after Kubernetes strips the ones it does not support
/// for the node's type. `int-or-string` nodes count as untyped, as their two types do.
pub(crate) fn effective(s: &Schema) -> Option<&str> {
    let f = s.format.as_deref().filter(|f| !f.is_empty())?;
    let ty = if s.int_or_string {
        ""
    } else {
        s.type_.as_deref().unwrap_or("")
    };
    let keep = match ty {
        "" | "string" => STRING_FORMATS.contains(&normalize(f).as_str()),
        "integer" => f == "int32" || f == "int64",
        "number" => f == "float" || f == "double",
        _ => false,
    };
    keep.then_some(f)
}

/// Whether the registry has a string check for `format`.
pub(crate) fn is_string_format(format: &str) -> bool {
    STRING_FORMATS.contains(&normalize(format).as_str())
}

/// Whether `s` is valid for the (known) string format `format`.
pub(crate) fn check(format: &str, s: &str) -> bool {
    match normalize(format).as_str() {
        "bsonobjectid" => s.len() == 24 && s.bytes().all(|b| b.is_ascii_hexdigit()),
        "uri" => is_request_uri(s),
        "email" => is_email(s),
        "hostname" => is_hostname(s),
        "ipv4" => is_ipv4(s),
        "ipv6" => is_ipv6(s),
        "cidr" => is_cidr(s),
        "mac" => is_mac(s),
        "uuid" => re(&UUID, UUID_PATTERN).is_match(s),
        "uuid3" => re(&UUID3, UUID3_PATTERN).is_match(s),
        "uuid4" => re(&UUID4, UUID4_PATTERN).is_match(s),
        "uuid5" => re(&UUID5, UUID5_PATTERN).is_match(s),
        "isbn" => is_isbn10(s) || is_isbn13(s),
        "isbn10" => is_isbn10(s),
        "isbn13" => is_isbn13(s),
        "creditcard" => is_credit_card(s),
        "ssn" => s.len() == 11 && re(&SSN, SSN_PATTERN).is_match(s),
        "hexcolor" => re(&HEXCOLOR, HEXCOLOR_PATTERN).is_match(s),
        "rgbcolor" => re(&RGBCOLOR, RGBCOLOR_PATTERN).is_match(s),
        "byte" => re(&BASE64, BASE64_PATTERN).is_match(s),
        "password" => true,
        "date" => is_date(s),
        "datetime" => is_date_time(s),
        "duration" => is_duration(s),
        "k8sshortname" => s.len() <= 63 && is_dns_label(s),
        "k8slongname" => s.len() <= 253 && !s.is_empty() && s.split('.').all(is_dns_label),
        _ => true,
    }
}

const UUID_PATTERN: &str =
    r"(?i)^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$";
const UUID3_PATTERN: &str =
    r"(?i)^[0-9a-f]{8}-?[0-9a-f]{4}-?3[0-9a-f]{3}-?[0-9a-f]{4}-?[0-9a-f]{12}$";
const UUID4_PATTERN: &str =
    r"(?i)^[0-9a-f]{8}-?[0-9a-f]{4}-?4[0-9a-f]{3}-?[89ab][0-9a-f]{3}-?[0-9a-f]{12}$";
const UUID5_PATTERN: &str =
    r"(?i)^[0-9a-f]{8}-?[0-9a-f]{4}-?5[0-9a-f]{3}-?[89ab][0-9a-f]{3}-?[0-9a-f]{12}$";
const SSN_PATTERN: &str = r"^[0-9]{3}[- ]?[0-9]{2}[- ]?[0-9]{4}$";
const HEXCOLOR_PATTERN: &str = r"^#?([0-9a-fA-F]{3}|[0-9a-fA-F]{6})$";
const RGBCOLOR_PATTERN: &str = r"^rgb\(\s*(0|[1-9][0-9]?|1[0-9][0-9]?|2[0-4][0-9]|25[0-5])\s*,\s*(0|[1-9][0-9]?|1[0-9][0-9]?|2[0-4][0-9]|25[0-5])\s*,\s*(0|[1-9][0-9]?|1[0-9][0-9]?|2[0-4][0-9]|25[0-5])\s*\)$";
const BASE64_PATTERN: &str =
    r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=|[A-Za-z0-9+/]{4})$";
const CREDIT_CARD_PATTERN: &str = r"^(?:4[0-9]{12}(?:[0-9]{3})?|5[1-5][0-9]{14}|6(?:011|5[0-9][0-9])[0-9]{12}|3[47][0-9]{13}|3(?:0[0-5]|[68][0-9])[0-9]{11}|(?:2131|1800|35[0-9]{3})[0-9]{11})$";
// Go's `\s` and `\p{S}\p{L}` classes; the dash is escaped where Go reads it as a literal.
const HOSTNAME_PATTERN: &str = r"^([a-zA-Z0-9\p{S}\p{L}]((-?[a-zA-Z0-9\p{S}\p{L}]{0,62})?)|([a-zA-Z0-9\p{S}\p{L}](([a-zA-Z0-9\-\p{S}\p{L}]{0,61}[a-zA-Z0-9\p{S}\p{L}])?)(\.)){1,}([a-zA-Z\p{L}]){2,63})$";
const DATE_TIME_PATTERN: &str =
    r"^([0-9]{2}):([0-9]{2}):([0-9]{2})(.[0-9]+)?(z|([+-][0-9]{2}:[0-9]{2}))$";
const DURATION_PATTERN: &str = r"(([0-9]+)[\t\n\f\r ]*([A-Za-zµ]+))";

static UUID: OnceLock<Regex> = OnceLock::new();
static UUID3: OnceLock<Regex> = OnceLock::new();
static UUID4: OnceLock<Regex> = OnceLock::new();
static UUID5: OnceLock<Regex> = OnceLock::new();
static SSN: OnceLock<Regex> = OnceLock::new();
static HEXCOLOR: OnceLock<Regex> = OnceLock::new();
static RGBCOLOR: OnceLock<Regex> = OnceLock::new();
static BASE64: OnceLock<Regex> = OnceLock::new();
static CREDIT_CARD: OnceLock<Regex> = OnceLock::new();
static HOSTNAME: OnceLock<Regex> = OnceLock::new();
static DATE_TIME: OnceLock<Regex> = OnceLock::new();
static DURATION: OnceLock<Regex> = OnceLock::new();

/// A fixed pattern of this module, compiled once (the tests compile every one of them).
fn re(cell: &'static OnceLock<Regex>, pattern: &str) -> &'static Regex {
    cell.get_or_init(|| Regex::new(pattern).expect("the module's constant patterns compile"))
}

fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    let ok = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !b.is_empty() && ok(b[0]) && ok(b[b.len() - 1]) && b.iter().all(|&c| ok(c) || c == b'-')
}

/// `net/url.ParseRequestURI` succeeds: an absolute URI or an absolute path.
fn is_request_uri(s: &str) -> bool {
    if s.is_empty() || s.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return false;
    }
    if s == "*" {
        return true;
    }
    // Scheme: a letter, then letters, digits, `+`, `-`, `.`, up to `:`.
    let mut scheme = "";
    let mut rest = s;
    for (i, c) in s.char_indices() {
        if c.is_ascii_alphabetic() {
            continue;
        }
        if c.is_ascii_digit() || c == '+' || c == '-' || c == '.' {
            if i == 0 {
                break;
            }
            continue;
        }
        if c == ':' {
            if i == 0 {
                return false; // missing protocol scheme
            }
            scheme = &s[..i];
            rest = &s[i + 1..];
        }
        break;
    }
    let rest = if rest.ends_with('?') && rest.matches('?').count() == 1 {
        &rest[..rest.len() - 1]
    } else {
        rest.split('?').next().unwrap_or("")
    };
    if !rest.starts_with('/') {
        // An opaque URI (`mailto:x`) needs a scheme; a request URI must be absolute.
        return !scheme.is_empty();
    }
    let mut path = rest;
    if !scheme.is_empty() && rest.starts_with("//") {
        let after = &rest[2..];
        let (authority, p) = match after.find('/') {
            Some(i) => (&after[..i], &after[i..]),
            None => (after, ""),
        };
        if !valid_authority(authority) {
            return false;
        }
        path = p;
    }
    valid_escapes(path)
}

fn valid_escapes(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            if i + 2 >= b.len() || !b[i + 1].is_ascii_hexdigit() || !b[i + 2].is_ascii_hexdigit() {
                return false;
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    true
}

fn valid_authority(a: &str) -> bool {
    let (userinfo, host) = match a.rfind('@') {
        Some(i) => (Some(&a[..i]), &a[i + 1..]),
        None => (None, a),
    };
    if let Some(u) = userinfo {
        let ok = u.chars().all(|c| {
            c.is_ascii_alphanumeric() || "-._:~!$&'()*+,;=%@".contains(c) || !c.is_ascii()
        });
        if !ok || !valid_escapes(u) {
            return false;
        }
    }
    let port_ok = |p: &str| {
        p.is_empty() || (p.starts_with(':') && p[1..].bytes().all(|b| b.is_ascii_digit()))
    };
    let name = if host.starts_with('[') {
        match host.rfind(']') {
            Some(i) => {
                if !port_ok(&host[i + 1..]) {
                    return false;
                }
                &host[1..i]
            }
            None => return false,
        }
    } else if let Some(i) = host.rfind(':') {
        if !port_ok(&host[i..]) {
            return false;
        }
        &host[..i]
    } else {
        host
    };
    name.chars().all(|c| {
        c.is_ascii_alphanumeric() || "-._~!$&'()*+,;=:[]<>\"%".contains(c) || !c.is_ascii()
    }) && valid_escapes(name)
}

/// `net/mail.ParseAddress` succeeds: `local@domain` or `Name <local@domain>`.
fn is_email(s: &str) -> bool {
    let s = s.trim_matches(|c| c == ' ' || c == '\t');
    let addr = if s.ends_with('>') {
        let Some(open) = s.rfind('<') else {
            return false;
        };
        let name = s[..open].trim();
        if !name.is_empty() && !valid_display_name(name) {
            return false;
        }
        &s[open + 1..s.len() - 1]
    } else {
        s
    };
    let Some(at) = addr.rfind('@') else {
        return false;
    };
    let (local, domain) = (&addr[..at], &addr[at + 1..]);
    let local_ok = if local.len() >= 2 && local.starts_with('"') && local.ends_with('"') {
        !local[1..local.len() - 1].contains(['"', '\n', '\r'])
    } else {
        is_dot_atom(local)
    };
    let domain_ok = if domain.starts_with('[') && domain.ends_with(']') {
        let inner = &domain[1..domain.len() - 1];
        !inner.contains(['[', ']', '\\'])
    } else {
        is_dot_atom(domain)
    };
    local_ok && domain_ok
}

fn is_atext(c: char) -> bool {
    if !c.is_ascii() {
        return true;
    }
    c.is_ascii_graphic() && !"()<>[]:;@\\,\".".contains(c)
}

fn is_dot_atom(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('.')
        && !s.ends_with('.')
        && !s.contains("..")
        && s.chars().all(|c| c == '.' || is_atext(c))
}

fn valid_display_name(name: &str) -> bool {
    if name.starts_with('"') {
        return name.len() >= 2 && name.ends_with('"');
    }
    name.split([' ', '\t'])
        .filter(|w| !w.is_empty())
        .all(|w| w.chars().all(|c| c == '.' || is_atext(c)))
}

fn is_hostname(s: &str) -> bool {
    re(&HOSTNAME, HOSTNAME_PATTERN).is_match(s)
        && s.len() <= 255
        && s.split('.').all(|p| p.len() <= 63)
}

/// IPv4 as `net.ParseIP` read it before Go 1.17: leading zeros allowed (`010.1.1.1`).
fn parse_ipv4_sloppy(s: &str) -> Option<[u8; 4]> {
    let parts: Vec<&str> = s.split('.').collect();
    if parts.len() != 4 {
        return None;
    }
    let mut out = [0u8; 4];
    for (i, p) in parts.iter().enumerate() {
        if p.is_empty() || p.len() > 8 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let n: u32 = p.parse().ok()?;
        out[i] = u8::try_from(n).ok()?;
    }
    Some(out)
}

fn parse_ip_sloppy(s: &str) -> bool {
    if parse_ipv4_sloppy(s).is_some() {
        return true;
    }
    if s.contains(':') {
        if s.parse::<Ipv6Addr>().is_ok() {
            return true;
        }
        // An IPv6 address whose trailing IPv4 part has leading zeros.
        if let Some(i) = s.rfind(':') {
            if let Some(v4) = parse_ipv4_sloppy(&s[i + 1..]) {
                let fixed = format!("{}:{}.{}.{}.{}", &s[..i], v4[0], v4[1], v4[2], v4[3]);
                return fixed.parse::<Ipv6Addr>().is_ok();
            }
        }
    }
    false
}

fn is_ipv4(s: &str) -> bool {
    parse_ip_sloppy(s) && s.contains('.')
}

fn is_ipv6(s: &str) -> bool {
    s.contains(':') && s.parse::<Ipv6Addr>().is_ok()
}

fn is_cidr(s: &str) -> bool {
    let Some((addr, mask)) = s.split_once('/') else {
        return false;
    };
    if mask.is_empty() || mask.len() > 8 || !mask.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let Ok(bits) = mask.parse::<u32>() else {
        return false;
    };
    if parse_ipv4_sloppy(addr).is_some() {
        return bits <= 32;
    }
    addr.contains(':') && parse_ip_sloppy(addr) && bits <= 128
}

/// `net.ParseMAC`: 6, 8 or 20 octets as `xx:xx:..`, `xx-xx-..` or `xxxx.xxxx.xxxx`.
fn is_mac(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() < 14 {
        return false;
    }
    let count_ok = |n: usize| n == 6 || n == 8 || n == 20;
    if b[2] == b':' || b[2] == b'-' {
        if (b.len() + 1) % 3 != 0 || !count_ok((b.len() + 1) / 3) {
            return false;
        }
        b.chunks(3).all(|g| {
            g[0].is_ascii_hexdigit() && g[1].is_ascii_hexdigit() && (g.len() == 2 || g[2] == b[2])
        })
    } else if b[4] == b'.' {
        if (b.len() + 1) % 5 != 0 || !count_ok(2 * (b.len() + 1) / 5) {
            return false;
        }
        b.chunks(5)
            .all(|g| g[..4].iter().all(u8::is_ascii_hexdigit) && (g.len() == 4 || g[4] == b'.'))
    } else {
        false
    }
}

fn strip_isbn(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .collect()
}

fn is_isbn10(s: &str) -> bool {
    let d = strip_isbn(s);
    let b = d.as_bytes();
    if b.len() != 10
        || !b[..9].iter().all(u8::is_ascii_digit)
        || !(b[9].is_ascii_digit() || b[9] == b'X')
    {
        return false;
    }
    let mut sum: u32 = 0;
    for (i, &c) in b[..9].iter().enumerate() {
        sum += (i as u32 + 1) * u32::from(c - b'0');
    }
    sum += 10
        * if b[9] == b'X' {
            10
        } else {
            u32::from(b[9] - b'0')
        };
    sum % 11 == 0
}

fn is_isbn13(s: &str) -> bool {
    let d = strip_isbn(s);
    let b = d.as_bytes();
    if b.len() != 13 || !b.iter().all(u8::is_ascii_digit) {
        return false;
    }
    let mut sum: u32 = 0;
    for (i, &c) in b[..12].iter().enumerate() {
        sum += if i % 2 == 0 { 1 } else { 3 } * u32::from(c - b'0');
    }
    u32::from(b[12] - b'0') == (10 - sum % 10) % 10
}

fn is_credit_card(s: &str) -> bool {
    let digits: String = s.chars().filter(char::is_ascii_digit).collect();
    if !re(&CREDIT_CARD, CREDIT_CARD_PATTERN).is_match(&digits) {
        return false;
    }
    let mut sum = 0;
    let mut double = false;
    for c in digits.bytes().rev() {
        let mut n = u32::from(c - b'0');
        if double {
            n *= 2;
            if n >= 10 {
                n = n % 10 + 1;
            }
        }
        sum += n;
        double = !double;
    }
    sum % 10 == 0
}

/// `time.Parse("2006-01-02", s)`: four-digit year, two-digit month and day, a real date.
fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return false;
    }
    let digits = |r: std::ops::Range<usize>| -> Option<u32> {
        let part = &s[r];
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    let (Some(year), Some(month), Some(day)) = (digits(0..4), digits(5..7), digits(8..10)) else {
        return false;
    };
    if !(1..=12).contains(&month) || day < 1 {
        return false;
    }
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days = match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    day <= days
}

/// strfmt's `IsDateTime`: a date, a `t`, then `hh:mm:ss[.frac](z|±hh:mm)`, compared as text.
fn is_date_time(s: &str) -> bool {
    if s.len() < 4 {
        return false;
    }
    let lower = s.to_lowercase();
    let parts: Vec<&str> = lower.split('t').collect();
    if parts.len() < 2 || !is_date(parts[0]) {
        return false;
    }
    let Some(c) = re(&DATE_TIME, DATE_TIME_PATTERN).captures(parts[1]) else {
        return false;
    };
    let g = |i: usize| c.get(i).map(|m| m.as_str()).unwrap_or("");
    g(1) <= "23" && g(2) <= "59" && g(3) <= "59"
}

/// strfmt's `ParseDuration`: a Go duration, or Scala-like `5 seconds`, `1h 30min`.
fn is_duration(s: &str) -> bool {
    if s.parse::<skiff_rules::duration::GoDuration>().is_ok() {
        return true;
    }
    const UNITS: &[&[&str]] = &[
        &["ns", "nano"],
        &["us", "µs", "micro"],
        &["ms", "milli"],
        &["s", "sec"],
        &["m", "min"],
        &["h", "hr", "hour"],
        &["d", "day"],
        &["w", "wk", "week"],
    ];
    let mut ok = false;
    for c in re(&DURATION, DURATION_PATTERN).captures_iter(s) {
        let factor = c.get(2).map(|m| m.as_str()).unwrap_or("");
        if factor.parse::<i64>().is_err() {
            return false;
        }
        let unit = c
            .get(3)
            .map(|m| m.as_str().trim().to_lowercase())
            .unwrap_or_default();
        for variants in UNITS {
            let last = variants.len() - 1;
            for (i, v) in variants.iter().enumerate() {
                if (i == last && unit.starts_with(v)) || unit.eq_ignore_ascii_case(v) {
                    ok = true;
                }
            }
        }
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pattern_compiles() {
        for p in [
            UUID_PATTERN,
            UUID3_PATTERN,
            UUID4_PATTERN,
            UUID5_PATTERN,
            SSN_PATTERN,
            HEXCOLOR_PATTERN,
            RGBCOLOR_PATTERN,
            BASE64_PATTERN,
            CREDIT_CARD_PATTERN,
            HOSTNAME_PATTERN,
            DATE_TIME_PATTERN,
            DURATION_PATTERN,
        ] {
            Regex::new(p).unwrap_or_else(|e| panic!("{p}: {e}"));
        }
    }

    #[test]
    fn formats_are_stripped_by_type() {
        let s = |ty: &str, f: &str| Schema {
            type_: Some(ty.into()),
            format: Some(f.into()),
            ..Default::default()
        };
        assert_eq!(effective(&s("string", "date-time")), Some("date-time"));
        assert_eq!(effective(&s("string", "int32")), None);
        assert_eq!(effective(&s("string", "madeup")), None);
        assert_eq!(effective(&s("integer", "int32")), Some("int32"));
        assert_eq!(effective(&s("integer", "date")), None);
        assert_eq!(effective(&s("number", "double")), Some("double"));
        assert_eq!(effective(&s("object", "uri")), None);
        let ios = Schema {
            int_or_string: true,
            format: Some("uri".into()),
            ..Default::default()
        };
        assert_eq!(effective(&ios), Some("uri"));
    }

    #[test]
    fn addresses() {
        assert!(check("ipv4", "10.0.0.1"));
        assert!(check("ipv4", "010.000.000.001"));
        assert!(!check("ipv4", "256.0.0.1"));
        assert!(!check("ipv4", "::1"));
        assert!(check("ipv4", "::ffff:1.2.3.4"));
        assert!(check("ipv6", "::1"));
        assert!(check("ipv6", "2001:db8::1"));
        assert!(!check("ipv6", "1.2.3.4"));
        assert!(!check("ipv6", "fe80::1%eth0"));
        assert!(check("cidr", "10.0.0.0/8"));
        assert!(check("cidr", "2001:db8::/32"));
        assert!(!check("cidr", "10.0.0.0/33"));
        assert!(!check("cidr", "10.0.0.0"));
        assert!(check("mac", "00:00:5e:00:53:01"));
        assert!(check("mac", "00-00-5E-00-53-01"));
        assert!(check("mac", "0000.5e00.5301"));
        assert!(check("mac", "02:00:5e:10:00:00:00:01"));
        assert!(!check("mac", "00:00:5e:00:53"));
        assert!(!check("mac", "00:00:5e:00:53-01"));
    }

    #[test]
    fn names_and_identifiers() {
        assert!(check("hostname", "example.com"));
        assert!(check("hostname", "localhost"));
        assert!(check("hostname", "a-b.example.org"));
        assert!(!check("hostname", "-a.example.com"));
        assert!(!check("hostname", "a_b.example.com"));
        assert!(!check("hostname", &format!("{}.com", "a".repeat(64))));
        assert!(check("uuid", "123e4567-e89b-12d3-a456-426614174000"));
        assert!(check("uuid", "123E4567E89B12D3A456426614174000"));
        assert!(!check("uuid", "123e4567-e89b-12d3-a456"));
        assert!(check("uuid4", "123e4567-e89b-42d3-a456-426614174000"));
        assert!(!check("uuid4", "123e4567-e89b-12d3-a456-426614174000"));
        assert!(check("bsonobjectid", "507f1f77bcf86cd799439011"));
        assert!(!check("bsonobjectid", "507f1f77bcf86cd79943901"));
        assert!(check("k8s-short-name", "my-name"));
        assert!(!check("k8s-short-name", "My-name"));
        assert!(check("k8s-long-name", "a.b-c.d"));
        assert!(!check("k8s-long-name", "a..b"));
    }

    #[test]
    fn uris_and_emails() {
        assert!(check("uri", "https://example.com/a?b=c"));
        assert!(check("uri", "/just/a/path"));
        assert!(check("uri", "mailto:a@b.c"));
        assert!(check("uri", "http://[::1]:8080/x"));
        assert!(!check("uri", "relative/path"));
        assert!(!check("uri", ""));
        assert!(!check("uri", ":nope"));
        assert!(!check("uri", "http://host:port/"));
        assert!(!check("uri", "http://x/%zz"));
        assert!(check("email", "a@example.com"));
        assert!(check("email", "Jane Doe <jane.doe@example.com>"));
        assert!(check("email", "\"odd name\"@example.com"));
        assert!(!check("email", "example.com"));
        assert!(!check("email", "a..b@example.com"));
        assert!(!check("email", "a@"));
    }

    #[test]
    fn times() {
        assert!(check("date", "2024-02-29"));
        assert!(!check("date", "2023-02-29"));
        assert!(!check("date", "2024-13-01"));
        assert!(!check("date", "2024-1-01"));
        assert!(check("date-time", "2024-01-02T03:04:05Z"));
        assert!(check("date-time", "2024-01-02t03:04:05.123+01:00"));
        assert!(!check("date-time", "2024-01-02T24:04:05Z"));
        assert!(!check("date-time", "2024-01-02 03:04:05Z"));
        assert!(!check("date-time", "2024-01-02T03:04:05"));
        assert!(check("duration", "1h30m"));
        assert!(check("duration", "-1.5s"));
        assert!(check("duration", "5 seconds"));
        assert!(check("duration", "3 days"));
        assert!(!check("duration", "soon"));
        assert!(!check("duration", "5"));
    }

    #[test]
    fn checksums_and_codes() {
        assert!(check("isbn10", "0321751043"));
        assert!(!check("isbn10", "0321751044"));
        assert!(check("isbn13", "978-0321751041"));
        assert!(check("isbn", "978-0321751041"));
        assert!(check("creditcard", "4111 1111 1111 1111"));
        assert!(!check("creditcard", "4111 1111 1111 1112"));
        assert!(check("ssn", "123-45-6789"));
        assert!(!check("ssn", "123456789"));
        assert!(check("hexcolor", "#ffF"));
        assert!(!check("hexcolor", "#ffff"));
        assert!(check("rgbcolor", "rgb(255, 0, 10)"));
        assert!(!check("rgbcolor", "rgb(256,0,0)"));
        assert!(check("byte", "aGVsbG8="));
        assert!(!check("byte", "aGVsbG8"));
        assert!(!check("byte", ""));
        assert!(check("password", "anything"));
    }
}
