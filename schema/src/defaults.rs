//! Defaulting: the `default`s of a schema filled into a custom object, as Kubernetes fills
//! them when it decodes a request and when it reads an object from storage (the caller
//! decides when), and the check Kubernetes makes of `default`s when a CRD is written.
//!
//! A missing field with a default gets a copy of it; so does a `null` where the schema is not
//! `nullable` (a `null` on a `nullable` field stays). [`prune_nulls`] first drops the `null`s
//! that are neither nullable nor defaulted, as Kubernetes does after pruning.

use serde_json::{Map, Value};

use crate::error::{ErrorKind, FieldError};
use crate::meta;
use crate::path;
use crate::structural::{Additional, Schema};
use crate::validation::Validator;

/// Fills `obj` with the defaults of `schema` (deep copies), recursing into properties,
/// `additionalProperties` and `items`.
pub fn default(schema: &Schema, obj: &mut Value) {
    apply(Some(schema), obj);
}

fn non_nullable_null(x: &Value, s: Option<&Schema>) -> bool {
    x.is_null() && s.is_some_and(|s| !s.nullable)
}

fn apply(s: Option<&Schema>, x: &mut Value) {
    let Some(s) = s else {
        return;
    };
    match x {
        Value::Object(m) => {
            for (k, prop) in &s.properties {
                let Some(d) = &prop.default else {
                    continue;
                };
                if m.get(k).is_none_or(|v| non_nullable_null(v, Some(prop))) {
                    m.insert(k.clone(), d.clone());
                }
            }
            let ap = s.value_schema();
            for (k, v) in m.iter_mut() {
                if let Some(prop) = s.properties.get(k) {
                    apply(Some(prop), v);
                } else if s.additional_properties.is_some() {
                    if non_nullable_null(v, ap) {
                        // Kubernetes copies the default in, which may itself be absent (null).
                        *v = ap.and_then(|a| a.default.clone()).unwrap_or(Value::Null);
                    }
                    apply(ap, v);
                }
            }
        }
        Value::Array(items) => {
            let item = s.item_schema();
            for v in items.iter_mut() {
                if non_nullable_null(v, item) {
                    *v = item.and_then(|i| i.default.clone()).unwrap_or(Value::Null);
                }
                apply(item, v);
            }
        }
        _ => {}
    }
}

/// Drops `null` fields whose schema is neither `nullable` nor defaulted (the others are left
/// for [`default`]). `null` list items stay.
pub fn prune_nulls(schema: &Schema, obj: &mut Value) {
    prune_nulls_at(Some(schema), obj);
}

fn field_schema<'a>(s: Option<&'a Schema>, k: &str) -> Option<&'a Schema> {
    let s = s?;
    s.properties.get(k).or_else(|| s.value_schema())
}

fn prune_nulls_at(s: Option<&Schema>, x: &mut Value) {
    match x {
        Value::Object(m) => {
            m.retain(|k, v| {
                let fs = field_schema(s, k);
                !(v.is_null() && fs.is_some_and(|f| !f.nullable && f.default.is_none()))
            });
            for (k, v) in m.iter_mut() {
                prune_nulls_at(field_schema(s, k), v);
            }
        }
        Value::Array(items) => {
            let item = s.and_then(Schema::item_schema);
            for v in items {
                prune_nulls_at(item, v);
            }
        }
        _ => {}
    }
}

/// One step from a resource root down to a default: a property or a list item.
#[derive(Clone)]
enum Step {
    Child(String),
    Index,
}

const META_FIELDS: &[&str] = &["metadata", "apiVersion", "kind"];

/// Kubernetes' `ValidateDefaults`: every `default` must be valid for its schema, contain no
/// field pruning would drop, and, inside an embedded resource's `metadata`, give valid
/// metadata. `additionalProperties` are not followed, as in Kubernetes.
pub(crate) fn check_defaults(schema: &Schema, p: &str) -> Vec<FieldError> {
    let mut out = Vec::new();
    walk(schema, p, schema, &[], false, true, &mut out);
    out
}

fn walk(
    s: &Schema,
    p: &str,
    resource: &Schema,
    steps: &[Step],
    inside_meta: bool,
    is_top: bool,
    out: &mut Vec<FieldError>,
) {
    // Each embedded resource starts over, as the object itself does.
    let (resource, steps, inside_meta) = if s.embedded_resource && !is_top {
        (s, &[][..], false)
    } else {
        (resource, steps, inside_meta)
    };
    let embedded_here = s.embedded_resource || is_top;
    if let Some(d) = &s.default {
        let q = path::child(p, "default");
        if inside_meta {
            meta_default(s, &q, d, resource, steps, out);
        } else {
            let mut pruned = d.clone();
            crate::prune::prune(s, &mut pruned, embedded_here);
            if &pruned != d {
                out.push(FieldError::new(
                    ErrorKind::Invalid,
                    q.clone(),
                    Some(d.clone()),
                    "must not have unknown fields",
                ));
            }
            if let Some(e) = coerce(&q, d, s, embedded_here) {
                out.push(e);
            } else {
                let mut errs = Vec::new();
                if embedded_here {
                    meta::validate_as_resource(&q, d, s, &mut errs);
                } else {
                    meta::validate_embedded(&q, d, s, &mut errs);
                }
                if errs.is_empty() {
                    errs = validator(s, p).check_default(&q, d);
                }
                out.extend(errs);
            }
        }
    }
    if let Some(is) = s.item_schema() {
        let mut sub = steps.to_vec();
        sub.push(Step::Index);
        walk(
            is,
            &path::child(p, "items"),
            resource,
            &sub,
            inside_meta,
            false,
            out,
        );
    }
    for (k, x) in &s.properties {
        let mut sub = steps.to_vec();
        sub.push(Step::Child(k.clone()));
        let sub_meta = inside_meta || (embedded_here && META_FIELDS.contains(&k.as_str()));
        let q = path::key(&path::child(p, "properties"), k);
        walk(x, &q, resource, &sub, sub_meta, false, out);
    }
}

/// A validator for checking defaults; CEL rules that do not compile are left out here (the
/// CRD check reports them where the rules are compiled).
fn validator(s: &Schema, p: &str) -> Validator {
    Validator::lenient(s.clone(), p)
}

/// A default inside an embedded resource's `metadata` (or `apiVersion`, `kind`): placed into
/// an otherwise empty resource, which must then have valid metadata.
fn meta_default(
    s: &Schema,
    q: &str,
    d: &Value,
    resource: &Schema,
    steps: &[Step],
    out: &mut Vec<FieldError>,
) {
    let mut obj = d.clone();
    for step in steps.iter().rev() {
        obj = match step {
            Step::Child(k) => {
                let mut m = Map::new();
                m.insert(k.clone(), obj);
                Value::Object(m)
            }
            Step::Index => Value::Array(vec![obj]),
        };
    }
    let Value::Object(mut m) = obj else {
        return;
    };
    m.entry("kind").or_insert_with(|| Value::from("Validation"));
    m.entry("apiVersion")
        .or_insert_with(|| Value::from("validation/v1"));
    let obj = Value::Object(m);
    if let Some(e) = coerce("", &obj, resource, true) {
        out.push(FieldError::new(
            ErrorKind::Invalid,
            q,
            Some(d.clone()),
            format!("must result in valid metadata: {e}"),
        ));
        return;
    }
    let mut errs = Vec::new();
    meta::validate_as_resource("", &obj, resource, &mut errs);
    if !errs.is_empty() {
        out.push(FieldError::new(
            ErrorKind::Invalid,
            q,
            Some(d.clone()),
            format!(
                "must result in valid metadata: {}",
                crate::error::aggregate(&errs)
            ),
        ));
        return;
    }
    let p = q.strip_suffix(".default").unwrap_or(q);
    out.extend(validator(s, p).check_default(q, d));
}

/// Kubernetes' `objectmeta.Coerce` as a check: in every resource (`is_resource` for `x`
/// itself), `apiVersion` and `kind` are strings and `metadata` decodes as `ObjectMeta`.
fn coerce(p: &str, x: &Value, s: &Schema, is_resource: bool) -> Option<FieldError> {
    match x {
        Value::Object(m) => {
            for (k, v) in m {
                if is_resource || s.embedded_resource {
                    match k.as_str() {
                        "apiVersion" | "kind" if !v.is_string() => {
                            return Some(FieldError::new(
                                ErrorKind::Invalid,
                                path::shown(&path::child(p, k)),
                                Some(v.clone()),
                                "must be a string",
                            ));
                        }
                        "metadata" => {
                            if let Err(e) = meta::decode(v) {
                                return Some(FieldError::new(
                                    ErrorKind::Invalid,
                                    path::shown(&path::child(p, "metadata")),
                                    Some(v.clone()),
                                    e,
                                ));
                            }
                        }
                        _ => {}
                    }
                }
                if let Some(prop) = s.properties.get(k) {
                    if let Some(e) = coerce(&path::child(p, k), v, prop, false) {
                        return Some(e);
                    }
                } else if let Some(Additional::Schema(ap)) = &s.additional_properties {
                    if let Some(e) = coerce(&path::key(p, k), v, ap, false) {
                        return Some(e);
                    }
                }
            }
            None
        }
        Value::Array(items) => {
            let is = s.item_schema()?;
            items
                .iter()
                .enumerate()
                .find_map(|(i, v)| coerce(&path::index(p, i), v, is, false))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Schema {
        Schema::parse(&json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "default": {},
                    "properties": {
                        "replicas": {"type": "integer", "default": 1},
                        "mode": {"type": "string", "default": "fast"},
                        "note": {"type": "string", "nullable": true, "default": "n"},
                        "plain": {"type": "string"},
                        "nullableNoDefault": {"type": "string", "nullable": true},
                        "ports": {"type": "array", "items": {
                            "type": "object",
                            "properties": {
                                "protocol": {"type": "string", "default": "TCP"},
                                "port": {"type": "integer"}
                            }
                        }},
                        "env": {"type": "object", "additionalProperties": {
                            "type": "object",
                            "properties": {"value": {"type": "string", "default": "v"}}
                        }},
                        "sizes": {"type": "array", "items": {"type": "integer", "default": 7}}
                    }
                }
            }
        }))
        .unwrap()
    }

    #[test]
    fn missing_fields_get_defaults_recursively() {
        let mut obj = json!({"apiVersion": "x/v1", "kind": "K"});
        default(&schema(), &mut obj);
        assert_eq!(
            obj,
            json!({"apiVersion": "x/v1", "kind": "K",
                   "spec": {"replicas": 1, "mode": "fast", "note": "n"}})
        );
    }

    #[test]
    fn defaults_reach_list_items_and_map_values() {
        let mut obj = json!({"spec": {
            "replicas": 3,
            "ports": [{"port": 80}, {"port": 53, "protocol": "UDP"}],
            "env": {"A": {}, "B": {"value": "b"}},
            "sizes": [1, null, 3]
        }});
        default(&schema(), &mut obj);
        assert_eq!(
            obj["spec"],
            json!({
                "replicas": 3, "mode": "fast", "note": "n",
                "ports": [{"port": 80, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}],
                "env": {"A": {"value": "v"}, "B": {"value": "b"}},
                "sizes": [1, 7, 3]
            })
        );
    }

    #[test]
    fn nulls_follow_nullable() {
        let mut obj = json!({"spec": {"replicas": null, "note": null}});
        default(&schema(), &mut obj);
        // Not nullable: the default replaces null. Nullable: null stays.
        assert_eq!(obj["spec"]["replicas"], json!(1));
        assert_eq!(obj["spec"]["note"], Value::Null);
    }

    #[test]
    fn null_pruning_keeps_nullable_and_defaulted_fields() {
        let mut obj = json!({"spec": {
            "plain": null, "nullableNoDefault": null, "replicas": null, "unknown": null,
            "sizes": [null]
        }});
        prune_nulls(&schema(), &mut obj);
        assert_eq!(
            obj,
            json!({"spec": {"nullableNoDefault": null, "replicas": null, "unknown": null,
                            "sizes": [null]}})
        );
        default(&schema(), &mut obj);
        assert_eq!(obj["spec"]["replicas"], json!(1));
    }

    #[test]
    fn defaults_are_copies() {
        let s = schema();
        let mut a = json!({});
        let mut b = json!({});
        default(&s, &mut a);
        default(&s, &mut b);
        a["spec"]["mode"] = json!("changed");
        assert_eq!(b["spec"]["mode"], json!("fast"));
        assert_eq!(
            s.properties["spec"].properties["mode"].default,
            Some(json!("fast"))
        );
    }
}
