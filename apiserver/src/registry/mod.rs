//! The resources the server serves, and each one's strategy: defaults, validation, table
//! columns and selectable fields. One file per resource.

mod apps;
mod batch;
mod cluster;
mod configmap;
mod endpoints;
mod event;
mod lease;
mod namespace;
mod node;
pub mod pod;
mod service;

use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

use crate::error::Cause;

/// One column of a `Table` response.
#[derive(Debug, Clone)]
pub struct Column {
    /// Header text.
    pub name: &'static str,
    /// OpenAPI type: `string`, `integer`, `date`.
    pub kind: &'static str,
    /// `name` for the name column, else empty.
    pub format: &'static str,
    /// 0 = always shown; 1 = only with `-o wide`.
    pub priority: u8,
    /// What the column means.
    pub description: &'static str,
}

/// Shorthand for a column.
pub const fn col(
    name: &'static str,
    kind: &'static str,
    priority: u8,
    description: &'static str,
) -> Column {
    let format = if matches!(name.as_bytes(), b"Name") {
        "name"
    } else {
        ""
    };
    Column {
        name,
        kind,
        format,
        priority,
        description,
    }
}

/// Why an object was refused at admission.
#[derive(Debug)]
pub enum Rejection {
    /// It does not decode as the type (400).
    Decode(String),
    /// Fields are invalid (422).
    Invalid(Vec<Cause>),
}

/// What admission made of an object.
#[derive(Debug)]
pub struct Admitted {
    /// The decoded, defaulted object.
    pub value: Value,
    /// Paths of fields the type does not know (dropped).
    pub unknown: Vec<String>,
}

/// Per-type behaviour.
pub trait Strategy: Send + Sync {
    /// Decodes `obj` as the type, applies defaults, validates it (against `old` on update).
    fn admit(&self, obj: Value, old: Option<&Value>) -> Result<Admitted, Rejection>;
    /// Whether the type has a `status` subresource (main writes then keep the old status).
    fn has_status(&self) -> bool;
    /// Changes made on create before validation (clearing status, setting phase, ...).
    fn prepare_create(&self, _obj: &mut Value) {}
    /// The `Table` columns.
    fn columns(&self) -> Vec<Column>;
    /// One `Table` row's cells, in column order.
    fn cells(&self, obj: &Value) -> Vec<Value>;
    /// The value of a type-specific field selector field; `None` if the type has no such field.
    fn field(&self, _obj: &Value, _field: &str) -> Option<String> {
        None
    }
    /// The fields this type supports in field selectors beyond `metadata.name/namespace`.
    fn selectable_fields(&self) -> &'static [&'static str] {
        &[]
    }
}

/// A strategy built from typed hooks over a k8s-openapi type.
pub struct Typed<T> {
    /// Whether the type has a status subresource.
    pub status: bool,
    /// Fills in defaults.
    pub defaults: fn(&mut T),
    /// Validates a new object.
    pub validate: fn(&T) -> Vec<Cause>,
    /// Validates an update (the new object was validated already).
    pub validate_update: fn(&T, &T) -> Vec<Cause>,
    /// Create-time preparation on the raw object.
    pub prepare_create: fn(&mut Value),
    /// Table columns.
    pub columns: fn() -> Vec<Column>,
    /// Table cells.
    pub cells: fn(&Value) -> Vec<Value>,
    /// Type-specific field selector values.
    pub field: fn(&Value, &str) -> Option<String>,
    /// Type-specific field selector names.
    pub selectable: &'static [&'static str],
    /// The type.
    pub ty: PhantomData<fn() -> T>,
}

/// No validation.
pub fn no_validate<T>(_: &T) -> Vec<Cause> {
    Vec::new()
}
/// No update validation.
pub fn no_validate_update<T>(_: &T, _: &T) -> Vec<Cause> {
    Vec::new()
}
/// No defaults.
pub fn no_defaults<T>(_: &mut T) {}
/// Nothing to prepare.
pub fn no_prepare(_: &mut Value) {}
/// No extra fields.
pub fn no_field(_: &Value, _: &str) -> Option<String> {
    None
}
/// Clears `status` on create.
pub fn clear_status(obj: &mut Value) {
    if let Some(o) = obj.as_object_mut() {
        o.remove("status");
    }
}

impl<T> Strategy for Typed<T>
where
    T: DeserializeOwned + Serialize,
{
    fn admit(&self, obj: Value, old: Option<&Value>) -> Result<Admitted, Rejection> {
        let mut typed: T = T::deserialize(&obj).map_err(|e| Rejection::Decode(e.to_string()))?;
        (self.defaults)(&mut typed);
        let mut causes = (self.validate)(&typed);
        if let Some(old) = old {
            if let Ok(old) = T::deserialize(old) {
                causes.extend((self.validate_update)(&typed, &old));
            }
        }
        if !causes.is_empty() {
            return Err(Rejection::Invalid(causes));
        }
        let value = serde_json::to_value(&typed).map_err(|e| Rejection::Decode(e.to_string()))?;
        let mut unknown = Vec::new();
        unknown_fields(&obj, &value, "", &mut unknown);
        if !unknown.is_empty() {
            // Defaulting may consume write-only fields (a Secret's `stringData`): only what
            // decoding itself dropped is unknown.
            if let Ok(Ok(decoded)) = T::deserialize(&obj).map(|t| serde_json::to_value(&t)) {
                unknown.clear();
                unknown_fields(&obj, &decoded, "", &mut unknown);
            }
        }
        Ok(Admitted { value, unknown })
    }

    fn has_status(&self) -> bool {
        self.status
    }

    fn prepare_create(&self, obj: &mut Value) {
        (self.prepare_create)(obj)
    }

    fn columns(&self) -> Vec<Column> {
        (self.columns)()
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        (self.cells)(obj)
    }

    fn field(&self, obj: &Value, field: &str) -> Option<String> {
        (self.field)(obj, field)
    }

    fn selectable_fields(&self) -> &'static [&'static str] {
        self.selectable
    }
}

/// Collects the paths present in `input` that decoding dropped.
fn unknown_fields(input: &Value, output: &Value, path: &str, out: &mut Vec<String>) {
    match (input, output) {
        (Value::Object(i), Value::Object(o)) => {
            for (k, v) in i {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match o.get(k) {
                    Some(ov) => unknown_fields(v, ov, &p, out),
                    None if v.is_null() => {}
                    // Empty objects and lists of optional fields serialize away; not unknown.
                    None if is_empty_value(v) => {}
                    None => out.push(p),
                }
            }
        }
        (Value::Array(i), Value::Array(o)) => {
            for (n, (iv, ov)) in i.iter().zip(o.iter()).enumerate() {
                unknown_fields(iv, ov, &format!("{path}[{n}]"), out);
            }
        }
        _ => {}
    }
}

fn is_empty_value(v: &Value) -> bool {
    match v {
        Value::Object(o) => o.values().all(is_empty_value),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// A served resource.
pub struct ResourceInfo {
    /// API group ("" for core).
    pub group: &'static str,
    /// API version.
    pub version: &'static str,
    /// Kind.
    pub kind: &'static str,
    /// Plural resource name (URL segment).
    pub plural: &'static str,
    /// Singular name.
    pub singular: &'static str,
    /// kubectl short names.
    pub short_names: &'static [&'static str],
    /// Categories (`all`).
    pub categories: &'static [&'static str],
    /// Whether objects live in namespaces.
    pub namespaced: bool,
    /// Subresources served.
    pub subresources: &'static [&'static str],
    /// Whether a spec change bumps `metadata.generation`.
    pub has_generation: bool,
    /// The type's strategy.
    pub strategy: &'static dyn Strategy,
    /// Adds the type's OpenAPI schema to a generator, returning a reference to it.
    pub schema: fn(&mut schemars::SchemaGenerator) -> schemars::Schema,
}

/// The OpenAPI schema of a k8s-openapi type.
pub fn schema_of<T: schemars::JsonSchema>(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
    g.subschema_for::<T>()
}

impl ResourceInfo {
    /// `v1` or `apps/v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `pods` or `deployments.apps`, as error messages name a resource.
    pub fn group_resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// The etcd key prefix for the resource (ends in `/`).
    pub fn prefix(&self, root: &str) -> String {
        format!("{root}/{}/", self.plural)
    }

    /// The etcd key prefix for a namespace's objects, or for all if `ns` is None.
    pub fn ns_prefix(&self, root: &str, ns: Option<&str>) -> String {
        match (self.namespaced, ns) {
            (true, Some(ns)) => format!("{root}/{}/{ns}/", self.plural),
            _ => self.prefix(root),
        }
    }

    /// The etcd key of one object.
    pub fn key(&self, root: &str, ns: Option<&str>, name: &str) -> String {
        match (self.namespaced, ns) {
            (true, Some(ns)) => format!("{root}/{}/{ns}/{name}", self.plural),
            _ => format!("{root}/{}/{name}", self.plural),
        }
    }

    /// Whether the resource serves a subresource.
    pub fn has_subresource(&self, sub: &str) -> bool {
        self.subresources.contains(&sub)
    }

    /// The verbs for discovery.
    pub fn verbs(&self) -> &'static [&'static str] {
        &[
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ]
    }
}

/// Every resource the server serves.
pub fn all() -> &'static [ResourceInfo] {
    RESOURCES
}

static RESOURCES: &[ResourceInfo] = &[
    namespace::INFO,
    pod::INFO,
    node::INFO,
    service::INFO,
    endpoints::INFO,
    configmap::CONFIGMAPS,
    configmap::SECRETS,
    configmap::SERVICEACCOUNTS,
    event::INFO,
    apps::DEPLOYMENTS,
    apps::REPLICASETS,
    apps::DAEMONSETS,
    batch::JOBS,
    batch::CRONJOBS,
    lease::INFO,
    endpoints::SLICES,
    cluster::PRIORITYCLASSES,
];

/// Finds a resource by group, version and plural name.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static ResourceInfo> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// Finds a resource by apiVersion and kind.
pub fn find_kind(api_version: &str, kind: &str) -> Option<&'static ResourceInfo> {
    RESOURCES
        .iter()
        .find(|r| r.api_version() == api_version && r.kind == kind)
}

// ---- helpers for cells ----

/// A string at a JSON pointer, or "".
pub fn s(obj: &Value, ptr: &str) -> String {
    match obj.pointer(ptr) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Bool(b)) => b.to_string(),
        _ => String::new(),
    }
}

/// An integer at a JSON pointer, or 0.
pub fn i(obj: &Value, ptr: &str) -> i64 {
    obj.pointer(ptr).and_then(Value::as_i64).unwrap_or(0)
}

/// The name cell.
pub fn name(obj: &Value) -> Value {
    json!(s(obj, "/metadata/name"))
}

/// The age cell, as kubectl prints it (`5m`, `3h12m`, `2d`).
pub fn age(obj: &Value) -> Value {
    json!(since(&s(obj, "/metadata/creationTimestamp")))
}

/// Human time since an RFC 3339 timestamp, or `<unknown>`.
pub fn since(ts: &str) -> String {
    match chrono::DateTime::parse_from_rfc3339(ts) {
        Ok(t) => human_duration(chrono::Utc::now().signed_duration_since(t).num_seconds()),
        Err(_) => "<unknown>".into(),
    }
}

/// Kubernetes' `duration.HumanDuration`.
pub fn human_duration(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".into();
    }
    let secs = secs.max(0);
    let mins = secs / 60;
    let hours = secs / 3600;
    if secs < 120 {
        format!("{secs}s")
    } else if mins < 10 {
        if secs % 60 == 0 {
            format!("{mins}m")
        } else {
            format!("{mins}m{}s", secs % 60)
        }
    } else if mins < 180 {
        format!("{mins}m")
    } else if hours < 8 {
        if mins % 60 == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{}m", mins % 60)
        }
    } else if hours < 48 {
        format!("{hours}h")
    } else if hours < 24 * 8 {
        if hours % 24 == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{}h", hours / 24, hours % 24)
        }
    } else if hours < 24 * 365 * 2 {
        format!("{}d", hours / 24)
    } else if hours < 24 * 365 * 8 {
        let days = hours / 24;
        format!("{}y{}d", days / 365, days % 365)
    } else {
        format!("{}y", hours / 24 / 365)
    }
}

/// Comma-joined container names and images of a pod template at `ptr`.
pub fn containers_images(obj: &Value, ptr: &str) -> (Value, Value) {
    let list = obj
        .pointer(ptr)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let names: Vec<String> = list.iter().map(|c| s(c, "/name")).collect();
    let images: Vec<String> = list.iter().map(|c| s(c, "/image")).collect();
    (json!(names.join(",")), json!(images.join(",")))
}

/// A label selector rendered as kubectl prints it.
pub fn selector_text(sel: Option<&Value>) -> String {
    let Some(sel) = sel else {
        return "<none>".into();
    };
    let mut parts = Vec::new();
    if let Some(m) = sel.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in m {
            parts.push(format!("{k}={}", v.as_str().unwrap_or("")));
        }
    }
    if let Some(exprs) = sel.get("matchExpressions").and_then(Value::as_array) {
        for e in exprs {
            let key = s(e, "/key");
            let op = s(e, "/operator");
            let vals: Vec<String> = e
                .get("values")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            parts.push(match op.as_str() {
                "In" => format!("{key} in ({})", vals.join(",")),
                "NotIn" => format!("{key} notin ({})", vals.join(",")),
                "Exists" => key,
                "DoesNotExist" => format!("!{key}"),
                _ => format!("{key} {op}"),
            });
        }
    }
    if parts.is_empty() {
        "<none>".into()
    } else {
        parts.join(",")
    }
}

/// A plain map selector (`app=web,tier=fe`).
pub fn map_text(m: Option<&Value>) -> String {
    match m.and_then(Value::as_object) {
        Some(m) if !m.is_empty() => m
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
            .collect::<Vec<_>>()
            .join(","),
        _ => "<none>".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations_match_kubectl() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(119), "119s");
        assert_eq!(human_duration(150), "2m30s");
        assert_eq!(human_duration(600), "10m");
        assert_eq!(human_duration(4 * 3600 + 5 * 60), "4h5m");
        assert_eq!(human_duration(30 * 3600), "30h");
        assert_eq!(human_duration(3 * 86400 + 3600), "3d1h");
        assert_eq!(human_duration(100 * 86400), "100d");
    }

    #[test]
    fn unknown_fields_are_reported_by_path() {
        let input =
            json!({"spec": {"containers": [{"name": "a", "imagee": "x"}], "nope": 1}, "x": null});
        let output = json!({"spec": {"containers": [{"name": "a"}]}});
        let mut out = Vec::new();
        unknown_fields(&input, &output, "", &mut out);
        assert_eq!(out, vec!["spec.containers[0].imagee", "spec.nope"]);
    }
}
