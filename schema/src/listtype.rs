//! `x-kubernetes-list-type` and `x-kubernetes-map-type`: how server-side apply merges a
//! custom object's lists and maps, and the uniqueness Kubernetes demands of `set` and `map`
//! lists (`Duplicate value`).
//!
//! A list without `x-kubernetes-list-type` is `atomic` (replaced whole), as Kubernetes treats
//! lists of custom objects; a map without `x-kubernetes-map-type` is granular.

use serde_json::{Map, Value};

use crate::error::{ErrorKind, FieldError};
use crate::path;
use crate::structural::{Additional, Schema};

/// How a list merges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListType {
    /// Replaced as a whole.
    Atomic,
    /// Scalars (or atomic values), each owned on its own, no duplicates.
    Set,
    /// Objects identified by the values of these keys.
    Map(Vec<String>),
}

/// The schema node at `path`: field names from the root, through `properties` (or
/// `additionalProperties` for names not listed) and through lists' `items` without naming
/// indices. `None` where the schema does not say (preserved unknown fields).
pub fn node<'a>(schema: &'a Schema, path: &[String]) -> Option<&'a Schema> {
    let mut s = schema;
    for name in path {
        while let Some(items) = s.item_schema() {
            if s.properties.contains_key(name) {
                break;
            }
            s = items;
        }
        s = match s.properties.get(name) {
            Some(p) => p,
            None => s.value_schema()?,
        };
    }
    Some(s)
}

/// The list type of the list at `path` (see [`node`]); `None` when the schema does not
/// describe a list there.
pub fn list_type(schema: &Schema, path: &[String]) -> Option<ListType> {
    let s = node(schema, path)?;
    if s.type_.as_deref() != Some("array") && s.items.is_none() {
        return None;
    }
    Some(match s.list_type.as_deref() {
        Some("set") => ListType::Set,
        Some("map") => ListType::Map(s.list_map_keys.clone()),
        _ => ListType::Atomic,
    })
}

/// Whether the map at `path` is `x-kubernetes-map-type: atomic` (replaced whole).
pub fn map_is_atomic(schema: &Schema, path: &[String]) -> bool {
    node(schema, path).is_some_and(|s| s.map_type.as_deref() == Some("atomic"))
}

/// The values of `keys` in a `map` list item, all present and scalar, as Kubernetes
/// correlates old and new items; `None` otherwise.
pub(crate) fn item_key<'a>(item: &'a Value, keys: &[String]) -> Option<Vec<&'a Value>> {
    let m = item.as_object()?;
    keys.iter()
        .map(|k| {
            m.get(k)
                .filter(|v| !v.is_array() && !v.is_object() && !v.is_null())
        })
        .collect()
}

/// The item of `old` with the same keys as `item`, for a `map` list schema `s`.
pub(crate) fn correlate<'a>(s: &Schema, old: &'a [Value], item: &Value) -> Option<&'a Value> {
    if s.type_.as_deref() != Some("array")
        || s.list_type.as_deref() != Some("map")
        || s.list_map_keys.is_empty()
    {
        return None;
    }
    let key = item_key(item, &s.list_map_keys)?;
    old.iter()
        .find(|o| item_key(o, &s.list_map_keys).as_ref() == Some(&key))
}

/// The uniqueness of `set` and `map` lists everywhere in `obj`, as Kubernetes'
/// `ValidateListSetsAndMaps` checks it (paths like `spec.ports[1]`, `spec.labels[a]`).
pub(crate) fn validate_lists(s: &Schema, obj: &Value) -> Vec<FieldError> {
    let mut out = Vec::new();
    if let Value::Object(m) = obj {
        object(&mut out, "", s, m);
    }
    out
}

fn object(out: &mut Vec<FieldError>, p: &str, s: &Schema, m: &Map<String, Value>) {
    if let Some(Additional::Schema(ap)) = &s.additional_properties {
        for (k, v) in m {
            value(out, &path::key(p, k), ap, v);
        }
    }
    for (k, v) in m {
        if let Some(sub) = s.properties.get(k) {
            value(out, &path::child(p, k), sub, v);
        }
    }
}

fn value(out: &mut Vec<FieldError>, p: &str, s: &Schema, v: &Value) {
    match v {
        Value::Array(a) => array(out, p, s, a),
        Value::Object(m) => object(out, p, s, m),
        _ => {}
    }
}

fn array(out: &mut Vec<FieldError>, p: &str, s: &Schema, a: &[Value]) {
    match s.list_type.as_deref() {
        Some("set") => {
            for i in duplicates(a.iter().map(Key::of)) {
                out.push(dup(p, i, a[i].clone()));
            }
        }
        Some("map") => map_list(out, p, s, a),
        _ => {}
    }
    if let Some(items) = s.item_schema() {
        for (i, v) in a.iter().enumerate() {
            value(out, &path::index(p, i), items, v);
        }
    }
}

fn dup(p: &str, i: usize, v: Value) -> FieldError {
    FieldError::new(ErrorKind::Duplicate, path::index(p, i), Some(v), "")
}

fn map_list(out: &mut Vec<FieldError>, p: &str, s: &Schema, a: &[Value]) {
    for (i, x) in a.iter().enumerate() {
        if !x.is_null() && !x.is_object() {
            out.push(FieldError::new(
                ErrorKind::Invalid,
                path::index(p, i),
                Some(x.clone()),
                "must be an object for an array of list-type map",
            ));
            return;
        }
    }
    if a.len() <= 1 {
        return;
    }
    if let [key] = s.list_map_keys.as_slice() {
        let keys: Vec<Option<&Value>> = a
            .iter()
            .map(|x| x.as_object().and_then(|m| m.get(key)))
            .collect();
        let ids = keys.iter().map(|k| match k {
            None => Key::Unspecified,
            Some(v) => Key::of(v),
        });
        for i in duplicates(ids) {
            let shown = match keys[i] {
                None => Value::Object(Map::new()),
                Some(v) => {
                    let mut m = Map::new();
                    m.insert(key.clone(), v.clone());
                    Value::Object(m)
                }
            };
            out.push(dup(p, i, shown));
        }
        return;
    }
    let keys: Vec<Value> = a
        .iter()
        .map(|x| {
            let mut m = Map::new();
            if let Some(obj) = x.as_object() {
                for k in &s.list_map_keys {
                    if let Some(v) = obj.get(k) {
                        m.insert(k.clone(), v.clone());
                    }
                }
            }
            Value::Object(m)
        })
        .collect();
    for i in duplicates(keys.iter().map(Key::of)) {
        out.push(dup(p, i, keys[i].clone()));
    }
}

/// An item's identity as Kubernetes compares set items: scalars by value (an integer and a
/// float differ), compound values by their JSON, a missing map key apart from everything.
#[derive(PartialEq)]
enum Key {
    Unspecified,
    Scalar(Value),
    Compound(String),
}

impl Key {
    fn of(v: &Value) -> Key {
        match v {
            Value::Array(_) | Value::Object(_) => Key::Compound(crate::gofmt::json(v)),
            _ => Key::Scalar(v.clone()),
        }
    }
}

/// The indices where a value is seen for the second time (once per repeated value).
fn duplicates(keys: impl Iterator<Item = Key>) -> Vec<usize> {
    let mut seen: Vec<(Key, usize)> = Vec::new();
    let mut out = Vec::new();
    for (i, k) in keys.enumerate() {
        match seen.iter_mut().find(|(s, _)| *s == k) {
            Some((_, times)) => {
                *times += 1;
                if *times == 2 {
                    out.push(i);
                }
            }
            None => seen.push((k, 1)),
        }
    }
    out
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
                        "tags": {"type": "array", "x-kubernetes-list-type": "set",
                                 "items": {"type": "string"}},
                        "plain": {"type": "array", "items": {"type": "string"}},
                        "ports": {
                            "type": "array",
                            "x-kubernetes-list-type": "map",
                            "x-kubernetes-list-map-keys": ["port", "protocol"],
                            "items": {"type": "object", "properties": {
                                "port": {"type": "integer"}, "protocol": {"type": "string"},
                                "names": {"type": "array", "x-kubernetes-list-type": "set",
                                          "items": {"type": "string"}}
                            }}
                        },
                        "byName": {
                            "type": "array",
                            "x-kubernetes-list-type": "map",
                            "x-kubernetes-list-map-keys": ["name"],
                            "items": {"type": "object", "properties": {"name": {"type": "string"}}}
                        },
                        "selector": {"type": "object", "x-kubernetes-map-type": "atomic",
                                     "additionalProperties": {"type": "string"}},
                        "groups": {"type": "object", "additionalProperties": {
                            "type": "array", "x-kubernetes-list-type": "set",
                            "items": {"type": "integer"}}}
                    }
                }
            }
        }))
        .unwrap()
    }

    fn p(s: &str) -> Vec<String> {
        s.split('.').map(String::from).collect()
    }

    #[test]
    fn list_types_for_server_side_apply() {
        let s = schema();
        assert_eq!(list_type(&s, &p("spec.tags")), Some(ListType::Set));
        assert_eq!(list_type(&s, &p("spec.plain")), Some(ListType::Atomic));
        assert_eq!(
            list_type(&s, &p("spec.ports")),
            Some(ListType::Map(vec!["port".into(), "protocol".into()]))
        );
        // Through a list's items without an index, and through additionalProperties.
        assert_eq!(list_type(&s, &p("spec.ports.names")), Some(ListType::Set));
        assert_eq!(
            list_type(&s, &p("spec.groups.anything")),
            Some(ListType::Set)
        );
        assert_eq!(list_type(&s, &p("spec.selector")), None);
        assert_eq!(list_type(&s, &p("spec.unknown")), None);
        assert!(map_is_atomic(&s, &p("spec.selector")));
        assert!(!map_is_atomic(&s, &p("spec.groups")));
    }

    fn errs(obj: Value) -> Vec<String> {
        validate_lists(&schema(), &obj)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn sets_refuse_duplicates_once_per_value() {
        assert_eq!(
            errs(json!({"spec": {"tags": ["a", "b", "a", "a", "b"]}})),
            vec![
                "spec.tags[2]: Duplicate value: \"a\"",
                "spec.tags[4]: Duplicate value: \"b\""
            ]
        );
        assert!(errs(json!({"spec": {"plain": ["a", "a"]}})).is_empty());
        assert_eq!(
            errs(json!({"spec": {"groups": {"x": [1, 1.0, 1]}}})),
            vec!["spec.groups[x][2]: Duplicate value: 1"]
        );
    }

    #[test]
    fn map_lists_refuse_duplicate_keys() {
        assert_eq!(
            errs(json!({"spec": {"ports": [
                {"port": 80, "protocol": "TCP"}, {"port": 80, "protocol": "UDP"},
                {"port": 80, "protocol": "TCP", "names": ["x"]}
            ]}})),
            vec!["spec.ports[2]: Duplicate value: {\"port\":80,\"protocol\":\"TCP\"}"]
        );
        assert_eq!(
            errs(json!({"spec": {"byName": [{"name": "a"}, {}, {"name": "a"}, {}]}})),
            vec![
                "spec.byName[2]: Duplicate value: {\"name\":\"a\"}",
                "spec.byName[3]: Duplicate value: {}"
            ]
        );
        assert_eq!(
            errs(json!({"spec": {"byName": [{"name": "a"}, "x"]}})),
            vec!["spec.byName[1]: Invalid value: \"x\": must be an object for an array of list-type map"]
        );
        assert_eq!(
            errs(json!({"spec": {"ports": [{"port": 1, "names": ["a", "a"]}]}})),
            vec!["spec.ports[0].names[1]: Duplicate value: \"a\""]
        );
    }

    #[test]
    fn map_list_items_correlate_by_key() {
        let s = schema();
        let ports = node(&s, &p("spec.ports")).unwrap();
        let old = vec![
            json!({"port": 1, "protocol": "TCP", "x": 1}),
            json!({"port": 2, "protocol": "TCP"}),
        ];
        assert_eq!(
            correlate(ports, &old, &json!({"port": 2, "protocol": "TCP", "y": 2})),
            Some(&old[1])
        );
        assert_eq!(
            correlate(ports, &old, &json!({"port": 3, "protocol": "TCP"})),
            None
        );
        assert_eq!(correlate(ports, &old, &json!({"port": 1})), None);
        let tags = node(&s, &p("spec.tags")).unwrap();
        assert_eq!(correlate(tags, &[json!("a")], &json!("a")), None);
    }
}
