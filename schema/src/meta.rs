//! `x-kubernetes-embedded-resource` objects: the `apiVersion`, `kind` and `metadata` checks
//! Kubernetes makes on resources nested inside a custom object (a Pod template in a custom
//! workload, say), and which `metadata` fields survive decoding. The custom object's own
//! `metadata` is the caller's business, as in Kubernetes.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::error::{ErrorKind, FieldError};
use crate::path;
use crate::structural::{Additional, Schema};

/// The fields of `ObjectMeta` (v1); any other field of an embedded `metadata` is dropped when
/// Kubernetes decodes it.
pub(crate) const OBJECT_META_FIELDS: &[&str] = &[
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
];

const OWNER_REFERENCE_FIELDS: &[&str] = &[
    "apiVersion",
    "kind",
    "name",
    "uid",
    "controller",
    "blockOwnerDeletion",
];

const MANAGED_FIELDS_ENTRY_FIELDS: &[&str] = &[
    "manager",
    "operation",
    "apiVersion",
    "time",
    "fieldsType",
    "fieldsV1",
    "subresource",
];

const TOTAL_ANNOTATION_SIZE_LIMIT: usize = 256 * 1024;

/// Checks every embedded resource in `obj` (not `obj` itself), as Kubernetes'
/// `objectmeta.Validate` does for a custom object. `base` is where `obj` sits ("" for the
/// custom object).
pub(crate) fn validate_embedded(base: &str, obj: &Value, s: &Schema, out: &mut Vec<FieldError>) {
    walk(base, obj, Some(s), false, out);
}

/// Checks `obj` as an embedded resource itself (for a default value of one) and everything
/// embedded below it.
pub(crate) fn validate_as_resource(base: &str, obj: &Value, s: &Schema, out: &mut Vec<FieldError>) {
    walk(base, obj, Some(s), true, out);
}

fn walk(p: &str, x: &Value, s: Option<&Schema>, is_resource: bool, out: &mut Vec<FieldError>) {
    let Some(s) = s else {
        return;
    };
    match x {
        Value::Object(m) => {
            if is_resource || s.embedded_resource {
                check_resource(p, m, out);
            }
            for (k, v) in m {
                if let Some(prop) = s.properties.get(k) {
                    walk(&path::child(p, k), v, Some(prop), false, out);
                } else if let Some(ap) = &s.additional_properties {
                    let sub = match ap {
                        Additional::Schema(sub) => Some(sub.as_ref()),
                        Additional::Bool(_) => None,
                    };
                    walk(&path::key(p, k), v, sub, false, out);
                }
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                walk(&path::index(p, i), v, s.item_schema(), false, out);
            }
        }
        _ => {}
    }
}

fn err(
    kind: ErrorKind,
    field: &str,
    value: Option<Value>,
    detail: impl Into<String>,
) -> FieldError {
    FieldError::new(kind, path::shown(field), value, detail)
}

fn check_resource(p: &str, x: &Map<String, Value>, out: &mut Vec<FieldError>) {
    if !x.contains_key("apiVersion") {
        out.push(err(
            ErrorKind::Required,
            &path::child(p, "apiVersion"),
            None,
            "",
        ));
    }
    if !x.contains_key("kind") {
        out.push(err(ErrorKind::Required, &path::child(p, "kind"), None, ""));
    }
    for (k, v) in x {
        match k.as_str() {
            "apiVersion" => {
                let f = path::child(p, "apiVersion");
                match v.as_str() {
                    None => out.push(err(
                        ErrorKind::Invalid,
                        &f,
                        Some(v.clone()),
                        "must be a string",
                    )),
                    Some("") => out.push(err(
                        ErrorKind::Invalid,
                        &f,
                        Some(v.clone()),
                        "must not be empty",
                    )),
                    Some(gv) => {
                        if gv.matches('/').count() > 1 {
                            out.push(err(
                                ErrorKind::Invalid,
                                &f,
                                Some(v.clone()),
                                format!("unexpected GroupVersion string: {gv}"),
                            ));
                        }
                    }
                }
            }
            "kind" => {
                let f = path::child(p, "kind");
                match v.as_str() {
                    None => out.push(err(
                        ErrorKind::Invalid,
                        &f,
                        Some(v.clone()),
                        "must be a string",
                    )),
                    Some("") => out.push(err(
                        ErrorKind::Invalid,
                        &f,
                        Some(v.clone()),
                        "must not be empty",
                    )),
                    Some(kind) => {
                        let errs = dns1035_label(&kind.to_lowercase());
                        if !errs.is_empty() {
                            out.push(err(
                                ErrorKind::Invalid,
                                &f,
                                Some(v.clone()),
                                format!(
                                    "may have mixed case, but should otherwise match: {}",
                                    errs.join(",")
                                ),
                            ));
                        }
                    }
                }
            }
            "metadata" => {
                let f = path::child(p, "metadata");
                match decode(v) {
                    Err(e) => out.push(err(ErrorKind::Invalid, &f, Some(v.clone()), e)),
                    Ok(meta) => validate_meta(&f, &meta, out),
                }
            }
            _ => {}
        }
    }
}

/// The part of `ObjectMeta` that validation looks at.
#[derive(Debug, Default)]
pub(crate) struct Meta {
    name: String,
    generate_name: String,
    namespace: String,
    generation: i64,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    finalizers: Vec<String>,
    owners: Vec<Owner>,
}

#[derive(Debug, Default)]
struct Owner {
    api_version: String,
    kind: String,
    name: String,
    uid: String,
    controller: bool,
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn mismatch(v: &Value, field: &str, go_type: &str) -> String {
    let what = match v {
        Value::Number(n) if go_type == "int64" => format!("number {n}"),
        _ => json_kind(v).to_string(),
    };
    format!(
        "json: cannot unmarshal {what} into Go struct field ObjectMeta.{field} of type {go_type}"
    )
}

fn string_field(v: &Value, field: &str) -> Result<String, String> {
    match v {
        Value::Null => Ok(String::new()),
        Value::String(s) => Ok(s.clone()),
        other => Err(mismatch(other, field, "string")),
    }
}

fn int_field(v: &Value, field: &str) -> Result<i64, String> {
    match v {
        Value::Null => Ok(0),
        Value::Number(n) => n.as_i64().ok_or_else(|| mismatch(v, field, "int64")),
        other => Err(mismatch(other, field, "int64")),
    }
}

fn string_map(v: &Value, field: &str) -> Result<BTreeMap<String, String>, String> {
    match v {
        Value::Null => Ok(BTreeMap::new()),
        Value::Object(m) => m
            .iter()
            .map(|(k, x)| match x {
                Value::String(s) => Ok((k.clone(), s.clone())),
                Value::Null => Ok((k.clone(), String::new())),
                other => Err(mismatch(other, field, "string")),
            })
            .collect(),
        other => Err(mismatch(other, field, "map[string]string")),
    }
}

fn time_field(v: &Value, field: &str) -> Result<(), String> {
    match v {
        Value::Null => Ok(()),
        Value::String(s) if crate::formats::check("date-time", s) => Ok(()),
        Value::String(s) => Err(format!(
            "parsing time {} as \"2006-01-02T15:04:05Z07:00\": cannot parse {} as \"2006\"",
            crate::gofmt::quote(s),
            crate::gofmt::quote(s)
        )),
        other => Err(mismatch(other, field, "Time")),
    }
}

/// Reads `metadata` as Go's JSON decoder reads it into an `ObjectMeta`, with its errors.
pub(crate) fn decode(v: &Value) -> Result<Meta, String> {
    let m = match v {
        Value::Null => return Ok(Meta::default()),
        Value::Object(m) => m,
        other => {
            return Err(format!(
                "json: cannot unmarshal {} into Go value of type v1.ObjectMeta",
                json_kind(other)
            ))
        }
    };
    let mut meta = Meta::default();
    for (k, x) in m {
        match k.as_str() {
            "name" => meta.name = string_field(x, k)?,
            "generateName" => meta.generate_name = string_field(x, k)?,
            "namespace" => meta.namespace = string_field(x, k)?,
            "selfLink" | "uid" | "resourceVersion" => {
                string_field(x, k)?;
            }
            "generation" => meta.generation = int_field(x, k)?,
            "deletionGracePeriodSeconds" => {
                int_field(x, k)?;
            }
            "creationTimestamp" | "deletionTimestamp" => time_field(x, k)?,
            "labels" => meta.labels = string_map(x, k)?,
            "annotations" => meta.annotations = string_map(x, k)?,
            "finalizers" => match x {
                Value::Null => {}
                Value::Array(a) => {
                    for f in a {
                        meta.finalizers.push(string_field(f, k)?);
                    }
                }
                other => return Err(mismatch(other, k, "[]string")),
            },
            "ownerReferences" => match x {
                Value::Null => {}
                Value::Array(a) => {
                    for r in a {
                        meta.owners.push(decode_owner(r)?);
                    }
                }
                other => return Err(mismatch(other, k, "[]v1.OwnerReference")),
            },
            "managedFields" => match x {
                Value::Null | Value::Array(_) => {}
                other => return Err(mismatch(other, k, "[]v1.ManagedFieldsEntry")),
            },
            _ => {}
        }
    }
    Ok(meta)
}

fn decode_owner(v: &Value) -> Result<Owner, String> {
    let m = match v {
        Value::Null => return Ok(Owner::default()),
        Value::Object(m) => m,
        other => return Err(mismatch(other, "ownerReferences", "v1.OwnerReference")),
    };
    let mut o = Owner::default();
    for (k, x) in m {
        let field = format!("ownerReferences.{k}");
        match k.as_str() {
            "apiVersion" => o.api_version = string_field(x, &field)?,
            "kind" => o.kind = string_field(x, &field)?,
            "name" => o.name = string_field(x, &field)?,
            "uid" => o.uid = string_field(x, &field)?,
            "controller" | "blockOwnerDeletion" => match x {
                Value::Null => {}
                Value::Bool(b) => {
                    if k == "controller" {
                        o.controller = *b;
                    }
                }
                other => return Err(mismatch(other, &field, "bool")),
            },
            _ => {}
        }
    }
    Ok(o)
}

/// `ValidateObjectMeta` for an embedded resource on create: names must be usable as path
/// segments, the namespace (when set) a DNS label, labels and annotations well formed.
fn validate_meta(p: &str, meta: &Meta, out: &mut Vec<FieldError>) {
    if !meta.generate_name.is_empty() {
        for msg in path_segment_prefix(&meta.generate_name) {
            out.push(err(
                ErrorKind::Invalid,
                &path::child(p, "generateName"),
                Some(Value::String(meta.generate_name.clone())),
                msg,
            ));
        }
    }
    // Kubernetes checks an unnamed embedded resource as if it were called `fakename`.
    let name = if meta.name.is_empty() {
        "fakename"
    } else {
        &meta.name
    };
    for msg in path_segment_name(name) {
        out.push(err(
            ErrorKind::Invalid,
            &path::child(p, "name"),
            Some(Value::String(name.to_string())),
            msg,
        ));
    }
    if !meta.namespace.is_empty() {
        for msg in dns1123_label(&meta.namespace) {
            out.push(err(
                ErrorKind::Invalid,
                &path::child(p, "namespace"),
                Some(Value::String(meta.namespace.clone())),
                msg,
            ));
        }
    }
    if meta.generation < 0 {
        out.push(err(
            ErrorKind::Invalid,
            &path::child(p, "generation"),
            Some(Value::from(meta.generation)),
            "must be greater than or equal to 0",
        ));
    }
    let labels = path::child(p, "labels");
    for (k, v) in &meta.labels {
        for msg in qualified_name(k) {
            out.push(err(
                ErrorKind::Invalid,
                &labels,
                Some(Value::String(k.clone())),
                msg,
            ));
        }
        for msg in label_value(v) {
            out.push(err(
                ErrorKind::Invalid,
                &labels,
                Some(Value::String(v.clone())),
                msg,
            ));
        }
    }
    let annotations = path::child(p, "annotations");
    let mut size = 0;
    for (k, v) in &meta.annotations {
        for msg in qualified_name(&k.to_lowercase()) {
            out.push(err(
                ErrorKind::Invalid,
                &annotations,
                Some(Value::String(k.clone())),
                msg,
            ));
        }
        size += k.len() + v.len();
    }
    if size > TOTAL_ANNOTATION_SIZE_LIMIT {
        out.push(err(
            ErrorKind::TooLong,
            &annotations,
            None,
            format!("may not be more than {TOTAL_ANNOTATION_SIZE_LIMIT} bytes"),
        ));
    }
    validate_owners(&path::child(p, "ownerReferences"), &meta.owners, out);
    let finalizers = path::child(p, "finalizers");
    for f in &meta.finalizers {
        for msg in qualified_name(f) {
            out.push(err(
                ErrorKind::Invalid,
                &finalizers,
                Some(Value::String(f.clone())),
                msg,
            ));
        }
    }
    if meta.finalizers.iter().any(|f| f == "orphan")
        && meta.finalizers.iter().any(|f| f == "foregroundDeletion")
    {
        out.push(err(
            ErrorKind::Invalid,
            &finalizers,
            Some(Value::from(meta.finalizers.clone())),
            "finalizer orphan and foregroundDeletion cannot be both set",
        ));
    }
}

fn validate_owners(p: &str, owners: &[Owner], out: &mut Vec<FieldError>) {
    let mut controller: Option<String> = None;
    for (i, o) in owners.iter().enumerate() {
        let q = path::index(p, i);
        let gv_parts = o.api_version.matches('/').count();
        if o.api_version.is_empty() {
            out.push(err(
                ErrorKind::Required,
                &path::child(&q, "apiVersion"),
                None,
                "must not be empty",
            ));
        } else if gv_parts > 1 || o.api_version.ends_with('/') {
            out.push(err(
                ErrorKind::Invalid,
                &path::child(&q, "apiVersion"),
                Some(Value::String(o.api_version.clone())),
                "must be <group>/<version> or <version>",
            ));
        }
        for (field, value) in [("kind", &o.kind), ("name", &o.name), ("uid", &o.uid)] {
            if value.is_empty() {
                out.push(err(
                    ErrorKind::Required,
                    &path::child(&q, field),
                    None,
                    "must not be empty",
                ));
            }
        }
        if o.api_version == "v1" && o.kind == "Event" {
            out.push(err(
                ErrorKind::Invalid,
                &q,
                Some(serde_json::json!({
                    "apiVersion": o.api_version, "kind": o.kind, "name": o.name, "uid": o.uid
                })),
                "/v1, Kind=Event is disallowed from being an owner",
            ));
        }
        if o.controller {
            let this = format!("{}/{}", o.kind, o.name);
            match &controller {
                Some(first) => out.push(err(
                    ErrorKind::Invalid,
                    p,
                    None,
                    format!(
                        "Only one reference can have Controller set to true. Found \"true\" in references for {first} and {this}"
                    ),
                )),
                None => controller = Some(this),
            }
        }
    }
}

/// Drops the fields of an embedded `metadata` that `ObjectMeta` does not have (and those of
/// its owner references and managed-fields entries), as decoding into `ObjectMeta` does;
/// returns the dropped paths (`spec.template.metadata.foo`).
pub(crate) fn prune_meta(base: &str, meta: &mut Value) -> Vec<String> {
    let mut dropped = Vec::new();
    let Value::Object(m) = meta else {
        return dropped;
    };
    let unknown: Vec<String> = m
        .keys()
        .filter(|k| !OBJECT_META_FIELDS.contains(&k.as_str()))
        .cloned()
        .collect();
    for k in unknown {
        m.remove(&k);
        dropped.push(format!("{base}.{k}"));
    }
    if m.get("creationTimestamp") == Some(&Value::Null) {
        m.remove("creationTimestamp");
    }
    for (list, allowed) in [
        ("ownerReferences", OWNER_REFERENCE_FIELDS),
        ("managedFields", MANAGED_FIELDS_ENTRY_FIELDS),
    ] {
        if let Some(Value::Array(items)) = m.get_mut(list) {
            for (i, item) in items.iter_mut().enumerate() {
                if let Value::Object(entry) = item {
                    let unknown: Vec<String> = entry
                        .keys()
                        .filter(|k| !allowed.contains(&k.as_str()))
                        .cloned()
                        .collect();
                    for k in unknown {
                        entry.remove(&k);
                        dropped.push(format!("{base}.{list}[{i}].{k}"));
                    }
                }
            }
        }
    }
    dropped
}

// Name rules, worded as apimachinery's validation helpers word them.

const DNS1123_LABEL_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const DNS1123_SUBDOMAIN_FMT: &str =
    "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const DNS1035_LABEL_FMT: &str = "[a-z]([-a-z0-9]*[a-z0-9])?";
const LABEL_KEY_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const LABEL_KEY_MSG: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";

fn regex_error(msg: &str, re: &str, examples: &[&str]) -> String {
    if examples.is_empty() {
        return format!("{msg} (regex used for validation is '{re}')");
    }
    let mut s = format!("{msg} (e.g. ");
    for (i, e) in examples.iter().enumerate() {
        if i > 0 {
            s.push_str(" or ");
        }
        s.push_str(&format!("'{e}', "));
    }
    s.push_str(&format!("regex used for validation is '{re}')"));
    s
}

fn max_len_error(n: usize) -> String {
    format!("must be no more than {n} bytes")
}

fn lower_alnum(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

fn is_label_shape(s: &str, first: fn(u8) -> bool) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && first(b[0])
        && lower_alnum(b[b.len() - 1])
        && b.iter().all(|&c| lower_alnum(c) || c == b'-')
}

fn is_subdomain_shape(s: &str) -> bool {
    !s.is_empty() && s.split('.').all(|l| is_label_shape(l, lower_alnum))
}

pub(crate) fn dns1123_label(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 63 {
        errs.push(max_len_error(63));
    }
    if !is_label_shape(s, lower_alnum) {
        if is_subdomain_shape(s) {
            errs.push("must not contain dots".into());
        } else {
            errs.push(regex_error(
                "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character",
                DNS1123_LABEL_FMT,
                &["my-name", "123-abc"],
            ));
        }
    }
    errs
}

pub(crate) fn dns1123_subdomain(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 253 {
        errs.push(max_len_error(253));
    }
    if !is_subdomain_shape(s) {
        errs.push(regex_error(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
            DNS1123_SUBDOMAIN_FMT,
            &["example.com"],
        ));
    }
    errs
}

pub(crate) fn dns1035_label(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 63 {
        errs.push(max_len_error(63));
    }
    if !is_label_shape(s, |c| c.is_ascii_lowercase()) {
        errs.push(regex_error(
            "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character",
            DNS1035_LABEL_FMT,
            &["my-name", "abc-123"],
        ));
    }
    errs
}

fn is_label_key_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// `IsQualifiedName`: an optional DNS subdomain prefix and `/`, then a name of at most 63.
pub(crate) fn qualified_name(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let parts: Vec<&str> = value.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_string());
            } else {
                errs.extend(
                    dns1123_subdomain(prefix)
                        .into_iter()
                        .map(|m| format!("prefix part {m}")),
                );
            }
            *name
        }
        _ => {
            errs.push(format!(
                "a valid label key {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(LABEL_KEY_MSG, LABEL_KEY_FMT, &["MyName", "my.name", "123-abc"])
            ));
            return errs;
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".into());
    } else if name.len() > 63 {
        errs.push(format!("name part {}", max_len_error(63)));
    }
    if !is_label_key_name(name) {
        errs.push(format!(
            "name part {}",
            regex_error(
                LABEL_KEY_MSG,
                LABEL_KEY_FMT,
                &["MyName", "my.name", "123-abc"]
            )
        ));
    }
    errs
}

/// `IsValidLabelValue`: empty, or a name of at most 63.
pub(crate) fn label_value(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > 63 {
        errs.push(max_len_error(63));
    }
    if !value.is_empty() && !is_label_key_name(value) {
        errs.push(regex_error(
            "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
            "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?",
            &["MyValue", "my_value", "12345"],
        ));
    }
    errs
}

fn path_segment_name(name: &str) -> Vec<String> {
    if name == "." || name == ".." {
        return vec![format!("may not be '{name}'")];
    }
    path_segment_prefix(name)
}

fn path_segment_prefix(name: &str) -> Vec<String> {
    ["/", "%"]
        .iter()
        .filter(|c| name.contains(*c))
        .map(|c| format!("may not contain '{c}'"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn embedded() -> Schema {
        Schema::parse(&json!({
            "type": "object",
            "properties": {
                "template": {
                    "type": "object",
                    "x-kubernetes-embedded-resource": true,
                    "x-kubernetes-preserve-unknown-fields": true
                },
                "many": {
                    "type": "array",
                    "items": {"type": "object", "x-kubernetes-embedded-resource": true,
                              "x-kubernetes-preserve-unknown-fields": true}
                }
            }
        }))
        .unwrap()
    }

    fn run(obj: Value) -> Vec<String> {
        let mut out = Vec::new();
        validate_embedded("", &obj, &embedded(), &mut out);
        out.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn embedded_resources_need_api_version_and_kind() {
        assert_eq!(
            run(json!({"template": {"metadata": {}}})),
            vec![
                "template.apiVersion: Required value",
                "template.kind: Required value"
            ]
        );
        assert!(run(json!({"template": {"apiVersion": "v1", "kind": "Pod"}})).is_empty());
        assert_eq!(
            run(json!({"many": [{"apiVersion": "v1", "kind": "Pod"}, {"apiVersion": "v1"}]})),
            vec!["many[1].kind: Required value"]
        );
    }

    #[test]
    fn embedded_type_meta_is_checked() {
        let e = run(json!({"template": {"apiVersion": 5, "kind": "my_kind"}}));
        assert_eq!(
            e[0],
            "template.apiVersion: Invalid value: 5: must be a string"
        );
        assert!(e[1].starts_with(
            "template.kind: Invalid value: \"my_kind\": may have mixed case, but should otherwise match: a DNS-1035 label"
        ), "{}", e[1]);
        let e = run(json!({"template": {"apiVersion": "a/b/c", "kind": "Pod"}}));
        assert_eq!(
            e,
            vec!["template.apiVersion: Invalid value: \"a/b/c\": unexpected GroupVersion string: a/b/c"]
        );
        assert!(run(json!({"template": {"apiVersion": "apps/v1", "kind": "MyKind"}})).is_empty());
    }

    #[test]
    fn embedded_metadata_is_checked() {
        let e = run(
            json!({"template": {"apiVersion": "v1", "kind": "Pod", "metadata": {
                "name": "a/b", "namespace": "Not_OK", "labels": {"bad key!": "ok"}, "generation": -1
            }}}),
        );
        assert_eq!(e.len(), 4, "{e:?}");
        assert_eq!(
            e[0],
            "template.metadata.name: Invalid value: \"a/b\": may not contain '/'"
        );
        assert!(e[1].starts_with(
            "template.metadata.namespace: Invalid value: \"Not_OK\": a lowercase RFC 1123 label"
        ));
        assert_eq!(
            e[2],
            "template.metadata.generation: Invalid value: -1: must be greater than or equal to 0"
        );
        assert!(e[3].starts_with(
            "template.metadata.labels: Invalid value: \"bad key!\": name part must consist of"
        ));
        let e =
            run(json!({"template": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": 5}}}));
        assert_eq!(
            e,
            vec!["template.metadata: Invalid value: {\"name\":5}: json: cannot unmarshal number into Go struct field ObjectMeta.name of type string"]
        );
    }

    #[test]
    fn unknown_metadata_fields_are_dropped() {
        let mut m = json!({"name": "x", "bogus": 1, "creationTimestamp": null,
                           "ownerReferences": [{"name": "o", "extra": true}]});
        let dropped = prune_meta("spec.template.metadata", &mut m);
        assert_eq!(
            dropped,
            vec![
                "spec.template.metadata.bogus",
                "spec.template.metadata.ownerReferences[0].extra"
            ]
        );
        assert_eq!(m, json!({"name": "x", "ownerReferences": [{"name": "o"}]}));
    }

    #[test]
    fn name_rules_match_apimachinery() {
        assert!(qualified_name("example.com/my-key").is_empty());
        assert!(qualified_name("My.Key_1").is_empty());
        assert_eq!(qualified_name("/x"), vec!["prefix part must be non-empty"]);
        assert_eq!(qualified_name("a/b/c").len(), 1);
        assert!(label_value("").is_empty());
        assert_eq!(
            label_value(&"a".repeat(64))[0],
            "must be no more than 63 bytes"
        );
        assert_eq!(dns1123_label("a.b"), vec!["must not contain dots"]);
        assert!(dns1123_label("my-ns").is_empty());
    }
}
