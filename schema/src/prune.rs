//! Pruning: fields of a custom object that its schema does not know are dropped, as
//! Kubernetes drops them when it decodes a request or reads from storage (with
//! `fieldValidation=Warn` or `Strict`, the dropped paths become warnings or errors:
//! `unknown field "spec.foo"`).
//!
//! `x-kubernetes-preserve-unknown-fields` keeps unknown fields under a node (specified fields
//! below it are still pruned by their own schemas); embedded resources and the object itself
//! keep `apiVersion`, `kind` and `metadata`, and an embedded resource's `metadata` keeps only
//! the fields of `ObjectMeta`.

use serde_json::Value;

use crate::meta;
use crate::structural::{Additional, Schema};

const META_FIELDS: &[&str] = &["apiVersion", "kind", "metadata"];

/// Removes from `obj` what `schema` does not specify and returns the removed paths, sorted
/// (`spec.foo`, `spec.items[0].bar`, `spec.map.key.x`). `is_root` when `obj` is a whole custom
/// object (its `apiVersion`, `kind` and `metadata` are kept; its `metadata` is the caller's).
pub fn prune(schema: &Schema, obj: &mut Value, is_root: bool) -> Vec<String> {
    let mut out = Vec::new();
    walk(
        obj,
        Some(schema),
        is_root || schema.embedded_resource,
        is_root,
        "",
        &mut out,
    );
    out.sort();
    out
}

fn join(base: &str, k: &str) -> String {
    if base.is_empty() {
        k.to_string()
    } else {
        format!("{base}.{k}")
    }
}

/// The schema for the value of key `k` of an object node: its property, else its
/// `additionalProperties` (`Some(None)`: any value, pruned as unknown below), else `None`.
fn sub_schema<'a>(s: &'a Schema, k: &str) -> Option<Option<&'a Schema>> {
    if let Some(p) = s.properties.get(k) {
        return Some(Some(p));
    }
    match &s.additional_properties {
        Some(Additional::Schema(ap)) => Some(Some(ap)),
        Some(Additional::Bool(_)) => Some(None),
        None => None,
    }
}

/// `embedded`: the node is a resource whose `apiVersion`, `kind` and `metadata` stay;
/// `is_root`: it is the custom object itself (whose `metadata` the caller handles).
fn walk(
    x: &mut Value,
    s: Option<&Schema>,
    embedded: bool,
    is_root: bool,
    at: &str,
    out: &mut Vec<String>,
) {
    if let Some(s) = s {
        if s.preserves_unknown() {
            keep_unknown(x, s, embedded, is_root, at, out);
            return;
        }
    }
    match x {
        Value::Object(m) => {
            let Some(s) = s else {
                for k in m.keys() {
                    out.push(join(at, k));
                }
                m.clear();
                return;
            };
            let keys: Vec<String> = m.keys().cloned().collect();
            for k in keys {
                if embedded && META_FIELDS.contains(&k.as_str()) {
                    continue;
                }
                match sub_schema(s, &k) {
                    Some(sub) => {
                        if let Some(v) = m.get_mut(&k) {
                            let e = sub.is_some_and(|x| x.embedded_resource);
                            walk(v, sub, e, false, &join(at, &k), out);
                        }
                    }
                    None => {
                        out.push(join(at, &k));
                        m.remove(&k);
                    }
                }
            }
            if embedded && !is_root {
                if let Some(md) = m.get_mut("metadata") {
                    out.extend(meta::prune_meta(&join(at, "metadata"), md));
                }
            }
        }
        Value::Array(items) => {
            let item = s.and_then(Schema::item_schema);
            for (i, v) in items.iter_mut().enumerate() {
                let e = item.is_some_and(|x| x.embedded_resource);
                walk(v, item, e, false, &format!("{at}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// Under `x-kubernetes-preserve-unknown-fields`: unknown fields stay, known ones are pruned by
/// their schemas, and list items keep their unknown fields too (as Kubernetes does).
fn keep_unknown(
    x: &mut Value,
    s: &Schema,
    embedded: bool,
    is_root: bool,
    at: &str,
    out: &mut Vec<String>,
) {
    match x {
        Value::Object(m) => {
            let keys: Vec<String> = m.keys().cloned().collect();
            for k in keys {
                if embedded && META_FIELDS.contains(&k.as_str()) {
                    continue;
                }
                if let (Some(sub), Some(v)) = (sub_schema(s, &k), m.get_mut(&k)) {
                    let e = sub.is_some_and(|x| x.embedded_resource);
                    walk(v, sub, e, false, &join(at, &k), out);
                }
            }
            if embedded && !is_root {
                if let Some(md) = m.get_mut("metadata") {
                    out.extend(meta::prune_meta(&join(at, "metadata"), md));
                }
            }
        }
        Value::Array(items) => {
            if let Some(item) = s.item_schema() {
                for (i, v) in items.iter_mut().enumerate() {
                    let e = item.embedded_resource;
                    keep_unknown(v, item, e, false, &format!("{at}[{i}]"), out);
                }
            }
        }
        _ => {}
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
                    "properties": {
                        "replicas": {"type": "integer"},
                        "items": {"type": "array", "items": {
                            "type": "object", "properties": {"name": {"type": "string"}}}},
                        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                        "nested": {"type": "object", "additionalProperties": {
                            "type": "object", "properties": {"a": {"type": "string"}}}},
                        "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true,
                                 "properties": {"known": {"type": "object", "properties": {
                                     "x": {"type": "string"}}}}},
                        "freeList": {"type": "array", "x-kubernetes-preserve-unknown-fields": true,
                                     "items": {"type": "object"}},
                        "anyMap": {"type": "object", "additionalProperties": true},
                        "template": {"type": "object", "x-kubernetes-embedded-resource": true,
                                     "properties": {"spec": {"type": "object", "properties": {
                                         "image": {"type": "string"}}}}}
                    }
                },
                "status": {"type": "object", "properties": {"ready": {"type": "boolean"}}}
            }
        }))
        .unwrap()
    }

    #[test]
    fn unknown_fields_are_removed_and_reported() {
        let mut obj = json!({
            "apiVersion": "example.com/v1", "kind": "Thing", "metadata": {"name": "x", "odd": 1},
            "spec": {"replicas": 1, "foo": 2, "items": [{"name": "a", "bar": 1}, {"baz": {}}]},
            "status": {"ready": true, "extra": "x"},
            "top": true
        });
        let pruned = prune(&schema(), &mut obj, true);
        assert_eq!(
            pruned,
            vec![
                "spec.foo",
                "spec.items[0].bar",
                "spec.items[1].baz",
                "status.extra",
                "top"
            ]
        );
        assert_eq!(
            obj,
            json!({
                "apiVersion": "example.com/v1", "kind": "Thing", "metadata": {"name": "x", "odd": 1},
                "spec": {"replicas": 1, "items": [{"name": "a"}, {}]},
                "status": {"ready": true}
            })
        );
    }

    #[test]
    fn maps_keep_their_keys_and_prune_their_values() {
        let mut obj = json!({"spec": {
            "labels": {"a": "b"},
            "nested": {"k": {"a": "x", "zz": 1}},
            "anyMap": {"k": 1, "obj": {"gone": true}}
        }});
        let pruned = prune(&schema(), &mut obj, true);
        assert_eq!(pruned, vec!["spec.anyMap.obj.gone", "spec.nested.k.zz"]);
        assert_eq!(
            obj,
            json!({"spec": {"labels": {"a": "b"}, "nested": {"k": {"a": "x"}},
                            "anyMap": {"k": 1, "obj": {}}}})
        );
    }

    #[test]
    fn preserved_fields_stay_but_known_ones_are_pruned() {
        let mut obj = json!({"spec": {
            "free": {"anything": {"deep": [1, {"x": 2}]}, "known": {"x": "y", "drop": 1}},
            "freeList": [{"a": 1}, {"b": {"c": 2}}]
        }});
        let pruned = prune(&schema(), &mut obj, true);
        assert_eq!(pruned, vec!["spec.free.known.drop"]);
        assert_eq!(
            obj,
            json!({"spec": {
                "free": {"anything": {"deep": [1, {"x": 2}]}, "known": {"x": "y"}},
                "freeList": [{"a": 1}, {"b": {"c": 2}}]
            }})
        );
    }

    #[test]
    fn embedded_resources_keep_type_and_object_meta() {
        let mut obj = json!({"spec": {"template": {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "labels": {"a": "b"}, "bogus": 1},
            "spec": {"image": "x", "other": 1},
            "status": {}
        }}});
        let pruned = prune(&schema(), &mut obj, true);
        assert_eq!(
            pruned,
            vec![
                "spec.template.metadata.bogus",
                "spec.template.spec.other",
                "spec.template.status"
            ]
        );
        assert_eq!(
            obj,
            json!({"spec": {"template": {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "p", "labels": {"a": "b"}},
                "spec": {"image": "x"}
            }}})
        );
    }

    #[test]
    fn a_value_without_root_keeps_nothing_unknown() {
        let s = schema();
        let mut v = json!({"replicas": 3, "apiVersion": "x"});
        let spec = s.properties.get("spec").unwrap();
        assert_eq!(prune(spec, &mut v, false), vec!["apiVersion"]);
        assert_eq!(v, json!({"replicas": 3}));
    }
}
