//! Field validators shared by every type, with kube-apiserver's messages.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use skiff_rules::Quantity;

use crate::error::Cause;

/// Message for an invalid DNS-1123 subdomain.
pub const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
/// Message for an invalid DNS-1123 label.
pub const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
/// Message for an invalid DNS-1035 label.
pub const DNS1035_LABEL_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";
const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
const QUALIFIED_NAME_MSG: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";

fn is_lower_alnum(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 bytes.
pub fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && is_lower_alnum(b[0])
        && is_lower_alnum(b[b.len() - 1])
        && b.iter().all(|&c| is_lower_alnum(c) || c == b'-')
}

/// Dot-separated DNS-1123 labels, at most 253 bytes.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            let b = l.as_bytes();
            !b.is_empty()
                && is_lower_alnum(b[0])
                && is_lower_alnum(b[b.len() - 1])
                && b.iter().all(|&c| is_lower_alnum(c) || c == b'-')
        })
}

/// `[a-z]([-a-z0-9]*[a-z0-9])?`, at most 63 bytes.
pub fn is_dns1035_label(s: &str) -> bool {
    is_dns1123_label(s) && s.as_bytes()[0].is_ascii_lowercase()
}

fn is_label_chars(s: &str) -> bool {
    let b = s.as_bytes();
    b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// Validates a name with a DNS-1123 subdomain rule.
pub fn subdomain(field: &str, name: &str, out: &mut Vec<Cause>) {
    if !is_dns1123_subdomain(name) {
        out.push(Cause::invalid(field, &json!(name), DNS1123_SUBDOMAIN_MSG));
    }
}

/// Validates a name with a DNS-1123 label rule.
pub fn label_name(field: &str, name: &str, out: &mut Vec<Cause>) {
    if !is_dns1123_label(name) {
        let msg = if name.len() > 63 {
            "must be no more than 63 characters".to_string()
        } else {
            DNS1123_LABEL_MSG.to_string()
        };
        out.push(Cause::invalid(field, &json!(name), msg));
    }
}

/// A qualified name (`prefix/name` or `name`) as used for label and annotation keys.
pub fn qualified_name(field: &str, key: &str, out: &mut Vec<Cause>) {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        if p.is_empty() {
            out.push(Cause::invalid(
                field,
                &json!(key),
                "prefix part must be non-empty",
            ));
        } else if !is_dns1123_subdomain(p) {
            out.push(Cause::invalid(
                field,
                &json!(key),
                format!("prefix part {DNS1123_SUBDOMAIN_MSG}"),
            ));
        }
    }
    if name.is_empty() {
        out.push(Cause::invalid(
            field,
            &json!(key),
            "name part must be non-empty",
        ));
    } else if name.len() > 63 {
        out.push(Cause::invalid(
            field,
            &json!(key),
            "name part must be no more than 63 characters",
        ));
    } else if !is_label_chars(name) || name.contains('/') {
        out.push(Cause::invalid(field, &json!(key), QUALIFIED_NAME_MSG));
    }
}

/// Validates a label map.
pub fn labels(field: &str, labels: Option<&BTreeMap<String, String>>, out: &mut Vec<Cause>) {
    let Some(labels) = labels else { return };
    for (k, v) in labels {
        qualified_name(field, k, out);
        label_value(field, v, out);
    }
}

/// Validates a label value (empty, or at most 63 alphanumeric, `-`, `_` or `.` characters).
pub fn label_value(field: &str, v: &str, out: &mut Vec<Cause>) {
    if v.len() > 63 {
        out.push(Cause::invalid(
            field,
            &json!(v),
            "must be no more than 63 characters",
        ));
    } else if !v.is_empty() && !is_label_chars(v) {
        out.push(Cause::invalid(field, &json!(v), LABEL_VALUE_MSG));
    }
}

/// Validates an annotation map (keys and total size).
pub fn annotations(field: &str, ann: Option<&BTreeMap<String, String>>, out: &mut Vec<Cause>) {
    let Some(ann) = ann else { return };
    let mut total = 0;
    for (k, v) in ann {
        qualified_name(field, &k.to_lowercase(), out);
        total += k.len() + v.len();
    }
    if total > 256 * 1024 {
        out.push(Cause::too_long(field, 256 * 1024));
    }
}

/// Validates a port number.
pub fn port(field: &str, p: i32, out: &mut Vec<Cause>) {
    if !(1..=65535).contains(&p) {
        out.push(Cause::invalid(
            field,
            &json!(p),
            "must be between 1 and 65535, inclusive",
        ));
    }
}

/// Validates a protocol enum value.
pub fn protocol(field: &str, p: Option<&str>, out: &mut Vec<Cause>) {
    if let Some(p) = p {
        if !matches!(p, "TCP" | "UDP" | "SCTP") {
            out.push(Cause::not_supported(field, p, &["SCTP", "TCP", "UDP"]));
        }
    }
}

/// Validates a value against an enum.
pub fn one_of(field: &str, v: Option<&str>, allowed: &[&str], out: &mut Vec<Cause>) {
    if let Some(v) = v {
        if !allowed.contains(&v) {
            out.push(Cause::not_supported(field, v, allowed));
        }
    }
}

/// Validates a non-negative integer.
pub fn non_negative(field: &str, v: Option<i64>, out: &mut Vec<Cause>) {
    if let Some(v) = v {
        if v < 0 {
            out.push(Cause::invalid(
                field,
                &json!(v),
                "must be greater than or equal to 0",
            ));
        }
    }
}

/// Validates a map of resource quantities (well-formed, non-negative), with kube-apiserver's
/// messages.
pub fn quantities(
    field: &str,
    m: Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
    out: &mut Vec<Cause>,
) {
    let Some(m) = m else { return };
    for (k, q) in m {
        let f = format!("{field}[{k}]");
        match Quantity::try_from(q) {
            Err(e) => out.push(Cause::invalid(f, &json!(q.0), e.to_string())),
            Ok(v) if v.signum() < 0 => out.push(Cause::invalid(
                f,
                &json!(q.0),
                "must be greater than or equal to 0",
            )),
            Ok(_) => {}
        }
    }
}

/// Validates a `LabelSelector` object.
pub fn label_selector(
    field: &str,
    sel: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
    out: &mut Vec<Cause>,
) {
    labels(
        &format!("{field}.matchLabels"),
        sel.match_labels.as_ref(),
        out,
    );
    for (n, e) in sel.match_expressions.iter().flatten().enumerate() {
        let f = format!("{field}.matchExpressions[{n}]");
        qualified_name(&format!("{f}.key"), &e.key, out);
        let vals = e.values.as_ref().map(|v| v.len()).unwrap_or(0);
        match e.operator.as_str() {
            "In" | "NotIn" => {
                if vals == 0 {
                    out.push(Cause::required(format!("{f}.values")));
                }
            }
            "Exists" | "DoesNotExist" => {
                if vals > 0 {
                    out.push(Cause::forbidden(
                        format!("{f}.values"),
                        "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                    ));
                }
            }
            other => out.push(Cause::not_supported(
                format!("{f}.operator"),
                other,
                &["In", "NotIn", "Exists", "DoesNotExist"],
            )),
        }
    }
}

/// A JSON value for a cause.
pub fn val<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(is_dns1123_subdomain("web-1.example"));
        assert!(!is_dns1123_subdomain("Web"));
        assert!(!is_dns1123_subdomain("-a"));
        assert!(is_dns1123_label("a1"));
        assert!(!is_dns1123_label("a.b"));
        assert!(is_dns1035_label("web"));
        assert!(!is_dns1035_label("1web"));
    }

    #[test]
    fn label_keys_and_values() {
        let mut out = Vec::new();
        let mut m = BTreeMap::new();
        m.insert("app.kubernetes.io/name".into(), "web_1".into());
        m.insert("bad key".into(), "-x".into());
        labels("metadata.labels", Some(&m), &mut out);
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn quantities_are_checked_exactly() {
        use k8s_openapi::apimachinery::pkg::api::resource::Quantity as Wire;
        let mut m = BTreeMap::new();
        m.insert("cpu".to_string(), Wire("1.2.3".into()));
        m.insert("memory".to_string(), Wire("-1Gi".into()));
        m.insert("ok".to_string(), Wire("16.1".into()));
        let mut out = Vec::new();
        quantities("resources.requests", Some(&m), &mut out);
        let texts: Vec<String> = out.iter().map(Cause::text).collect();
        assert_eq!(texts.len(), 2, "{texts:?}");
        assert!(texts[0].starts_with("resources.requests[cpu]: Invalid value: \"1.2.3\": quantities must match the regular expression"), "{texts:?}");
        assert!(
            texts[1].ends_with("must be greater than or equal to 0"),
            "{texts:?}"
        );
    }
}
