//! JSON values as CEL sees them: read through the schema (Kubernetes'
//! `UnstructuredToVal`), so that an `integer` is an int, a `number` a double even when
//! written `1`, a `date-time` string a timestamp, and an object only shows its declared
//! properties, under their escaped names. Strings are borrowed from the JSON, not copied.
//!
//! Also the sizes a value actually has, per schema node, which the runtime cost estimate
//! uses in place of the schema's bounds.

use std::collections::HashMap;

use base64::Engine as _;
use cel::common::types::{
    CelBool, CelBytes, CelDouble, CelDuration, CelInt, CelList, CelMap, CelMapKey, CelNull,
    CelString, CelTimestamp, CelUInt,
};
use cel::common::value::Val;
use serde_json::Value;

use super::decl::{Decls, Kind, NodeId};

type Boxed<'v> = Box<dyn Val + 'v>;

/// `v` as the CEL value of schema node `node`. Errors are worded as Kubernetes words them
/// (they surface as evaluation errors of the rules that read the value).
pub(crate) fn to_val<'v>(decls: &Decls, node: NodeId, v: &'v Value) -> Result<Boxed<'v>, String> {
    let n = decls.node(node);
    if v.is_null() {
        return if n.nullable {
            Ok(Box::new(CelNull))
        } else {
            Err("invalid data, got null for schema with nullable=false".to_owned())
        };
    }
    Ok(match &n.kind {
        Kind::Any => dyn_val(v),
        Kind::IntOrString => match v {
            Value::String(s) => Box::new(CelString::from(s.as_str())),
            Value::Number(num) if num.is_i64() => Box::new(CelInt::from(num.as_i64().unwrap_or(0))),
            _ => {
                return Err(
                    "invalid data, expected XIntOrString value to be either a string or integer"
                        .to_owned(),
                )
            }
        },
        Kind::Object(fields) => {
            let Value::Object(obj) = v else {
                return Err(
                    "invalid data, expected a map for the provided schema with type=object"
                        .to_owned(),
                );
            };
            let mut map: HashMap<CelMapKey<'v>, Boxed<'v>> = HashMap::with_capacity(fields.len());
            for (escaped, field) in fields {
                let Some(child) = obj.get(&field.json_name) else {
                    continue;
                };
                if child.is_null() && !decls.node(field.node).nullable {
                    // Absent to CEL, as the structural checks refuse it anyway.
                    continue;
                }
                map.insert(
                    CelMapKey::from(escaped.clone()),
                    to_val(decls, field.node, child)?,
                );
            }
            Box::new(CelMap::from(map))
        }
        Kind::Map { elem } => {
            let Value::Object(obj) = v else {
                return Err(
                    "invalid data, expected a map for the provided schema with type=object"
                        .to_owned(),
                );
            };
            let mut map: HashMap<CelMapKey<'v>, Boxed<'v>> = HashMap::with_capacity(obj.len());
            for (k, child) in obj {
                map.insert(CelMapKey::from(k.as_str()), to_val(decls, *elem, child)?);
            }
            Box::new(CelMap::from(map))
        }
        Kind::List { elem, .. } => {
            let Value::Array(items) = v else {
                return Err(
                    "invalid data, expected an array for the provided schema with type=array"
                        .to_owned(),
                );
            };
            let items = items
                .iter()
                .map(|i| to_val(decls, *elem, i))
                .collect::<Result<Vec<_>, _>>()?;
            Box::new(CelList::from(items))
        }
        Kind::String => Box::new(CelString::from(string(v)?)),
        Kind::Bytes => {
            let s = string(v)?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(s)
                .map_err(|e| format!("Invalid byte formatted string {s}: {e}"))?;
            Box::new(CelBytes::from(bytes))
        }
        Kind::Duration => {
            let s = string(v)?;
            let d: skiff_rules::GoDuration = s
                .parse()
                .map_err(|e| format!("Invalid duration {s}: {e}"))?;
            Box::new(CelDuration::from(chrono::Duration::nanoseconds(
                d.as_nanos(),
            )))
        }
        Kind::Timestamp => {
            let s = string(v)?;
            Box::new(CelTimestamp::from(parse_time(s)?))
        }
        Kind::Int => match v.as_i64() {
            Some(i) => Box::new(CelInt::from(i)),
            None => return Err(format!("invalid data, expected int, got {}", go_type(v))),
        },
        Kind::Double => match v.as_f64() {
            Some(f) => Box::new(CelDouble::from(f)),
            None => return Err(format!("invalid data, expected float, got {}", go_type(v))),
        },
        Kind::Bool => match v.as_bool() {
            Some(b) => Box::new(CelBool::from(b)),
            None => return Err(format!("invalid data, expected bool, got {}", go_type(v))),
        },
    })
}

fn string(v: &Value) -> Result<&str, String> {
    v.as_str()
        .ok_or_else(|| format!("invalid data, expected string, got {}", go_type(v)))
}

/// The Go type a JSON value decodes to, as Kubernetes' messages name it.
fn go_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "<nil>",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_i64() || n.is_u64() => "int64",
        Value::Number(_) => "float64",
        Value::String(_) => "string",
        Value::Array(_) => "[]interface {}",
        Value::Object(_) => "map[string]interface {}",
    }
}

/// A `date-time` (RFC 3339) or `date` (`2006-01-02`, midnight UTC).
fn parse_time(s: &str) -> Result<chrono::DateTime<chrono::FixedOffset>, String> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t);
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        if let Some(t) = d.and_hms_opt(0, 0, 0) {
            return Ok(t.and_utc().fixed_offset());
        }
    }
    Err(format!("Invalid date-time formatted string {s}"))
}

/// A JSON value with no schema: objects as maps, whole numbers as ints (as
/// `unstructured` JSON decodes them), other numbers as doubles.
pub(crate) fn dyn_val(v: &Value) -> Boxed<'_> {
    match v {
        Value::Null => Box::new(CelNull),
        Value::Bool(b) => Box::new(CelBool::from(*b)),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Box::new(CelInt::from(i)),
            (None, Some(u)) => Box::new(CelUInt::from(u)),
            _ => Box::new(CelDouble::from(n.as_f64().unwrap_or(f64::NAN))),
        },
        Value::String(s) => Box::new(CelString::from(s.as_str())),
        Value::Array(items) => {
            Box::new(CelList::from(items.iter().map(dyn_val).collect::<Vec<_>>()))
        }
        Value::Object(obj) => Box::new(CelMap::from(
            obj.iter()
                .map(|(k, v)| (CelMapKey::from(k.as_str()), dyn_val(v)))
                .collect::<HashMap<_, _>>(),
        )),
    }
}

/// A CEL result as JSON: maps with string keys become objects, timestamps RFC 3339
/// strings, durations Go duration strings, bytes base64.
pub(crate) fn to_json(v: &cel::Value) -> Result<Value, String> {
    Ok(match v {
        cel::Value::Null => Value::Null,
        cel::Value::Bool(b) => Value::Bool(*b),
        cel::Value::Int(i) => Value::from(*i),
        cel::Value::UInt(u) => Value::from(*u),
        cel::Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(Value::Number)
            .ok_or_else(|| format!("{f} cannot be represented in JSON"))?,
        cel::Value::String(s) => Value::String(s.to_string()),
        cel::Value::Bytes(b) => {
            Value::String(base64::engine::general_purpose::STANDARD.encode(b.as_slice()))
        }
        cel::Value::List(items) => {
            Value::Array(items.iter().map(to_json).collect::<Result<_, _>>()?)
        }
        cel::Value::Map(m) => {
            let mut entries: Vec<(String, Value)> = Vec::with_capacity(m.map.len());
            for (k, v) in m.map.iter() {
                let key = match k {
                    cel::objects::Key::String(s) => s.to_string(),
                    other => other.to_string(),
                };
                entries.push((key, to_json(v)?));
            }
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().collect())
        }
        cel::Value::Timestamp(t) => Value::String(t.to_rfc3339()),
        cel::Value::Duration(d) => {
            let nanos = d.num_nanoseconds().unwrap_or(i64::MAX);
            Value::String(skiff_rules::GoDuration(nanos).to_string())
        }
        other => {
            return Err(format!(
                "a value of type {} has no JSON form",
                other.type_of()
            ))
        }
    })
}

/// The largest size seen at each schema node in `v` (string bytes, list items, map
/// entries), raising `sizes[node]`: the sizes the runtime cost estimate uses.
pub(crate) fn observe(decls: &Decls, node: NodeId, v: &Value, sizes: &mut [u64]) {
    let n = decls.node(node);
    let seen = |sizes: &mut [u64], len: usize| {
        if let Some(s) = sizes.get_mut(node) {
            *s = (*s).max(len as u64);
        }
    };
    match (&n.kind, v) {
        (Kind::Object(fields), Value::Object(obj)) => {
            for field in fields.values() {
                if let Some(child) = obj.get(&field.json_name) {
                    observe(decls, field.node, child, sizes);
                }
            }
        }
        (Kind::Map { elem }, Value::Object(obj)) => {
            seen(sizes, obj.len());
            for child in obj.values() {
                observe(decls, *elem, child, sizes);
            }
        }
        (Kind::List { elem, .. }, Value::Array(items)) => {
            seen(sizes, items.len());
            for child in items {
                observe(decls, *elem, child, sizes);
            }
        }
        (_, Value::String(s)) => seen(sizes, s.len()),
        _ => {}
    }
}
