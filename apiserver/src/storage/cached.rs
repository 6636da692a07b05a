//! An object as the watch cache holds it: its JSON bytes (ready to send, resourceVersion
//! included) and the few fields that selectors and the server's own loops look at.
//!
//! Keeping bytes rather than a parsed tree makes the cache several times smaller and lets a
//! list or a watch event go out without re-serializing anything.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde_json::Value;

/// What the cache indexes of a type's objects beyond their metadata: the values of its
/// selectable fields (for field selectors), in the type's own order.
pub trait Indexer: Send + Sync {
    /// The field values of `obj`.
    fn fields(&self, obj: &Value) -> Vec<String>;
}

/// A cached object.
#[derive(Debug)]
pub struct Cached {
    /// The object's JSON, with `metadata.resourceVersion`.
    pub json: Bytes,
    /// Its resourceVersion.
    pub rv: i64,
    /// `metadata.namespace`, or empty.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// The values of the type's selectable fields, in the order its [`Indexer`] gives them.
    pub fields: Vec<String>,
    /// UIDs of its owners.
    pub owners: Vec<String>,
    /// Whether `metadata.deletionTimestamp` is set.
    pub deleting: bool,
}

/// Inserts `"resourceVersion":"N"` into stored JSON (which never carries one) right after
/// `"metadata":{`, where our own serializer always puts metadata.
pub fn with_rv(raw: &[u8], rv: i64) -> Bytes {
    const KEY: &[u8] = b"\"metadata\":{";
    let Some(pos) = top_level(raw, KEY) else {
        return Bytes::copy_from_slice(raw);
    };
    let at = pos + KEY.len();
    let mut out = Vec::with_capacity(raw.len() + 32);
    out.extend_from_slice(&raw[..at]);
    out.extend_from_slice(b"\"resourceVersion\":\"");
    out.extend_from_slice(rv.to_string().as_bytes());
    out.push(b'"');
    if raw.get(at) != Some(&b'}') {
        out.push(b',');
    }
    out.extend_from_slice(&raw[at..]);
    Bytes::from(out)
}

/// The position of `key` directly inside the outermost object.
fn top_level(raw: &[u8], key: &[u8]) -> Option<usize> {
    let (mut depth, mut in_str, mut esc) = (0i32, false, false);
    for (i, &b) in raw.iter().enumerate() {
        if in_str {
            match (esc, b) {
                (true, _) => esc = false,
                (false, b'\\') => esc = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' if depth == 1 && raw[i..].starts_with(key) => return Some(i),
            b'"' => in_str = true,
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth -= 1,
            _ => {}
        }
    }
    None
}

impl Cached {
    /// Indexes an object whose JSON (with resourceVersion) is `json`.
    pub fn new(index: &dyn Indexer, value: &Value, json: Bytes, rv: i64) -> Self {
        let meta = value.get("metadata");
        let s = |k: &str| {
            meta.and_then(|m| m.get(k))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let labels = meta
            .and_then(|m| m.get("labels"))
            .and_then(Value::as_object)
            .map(|l| {
                l.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                    .collect()
            })
            .unwrap_or_default();
        let owners = meta
            .and_then(|m| m.get("ownerReferences"))
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|o| o.get("uid").and_then(Value::as_str).map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        let fields = index.fields(value);
        Cached {
            json,
            rv,
            namespace: s("namespace"),
            name: s("name"),
            labels,
            fields,
            owners,
            deleting: meta.is_some_and(|m| m.get("deletionTimestamp").is_some()),
        }
    }

    /// Indexes an object, serializing it.
    pub fn from_value(index: &dyn Indexer, value: &Value, rv: i64) -> Self {
        let json = Bytes::from(serde_json::to_vec(value).unwrap_or_default());
        Self::new(index, value, json, rv)
    }

    /// A placeholder (bookmarks carry no object).
    pub fn empty() -> Self {
        Cached {
            json: Bytes::new(),
            rv: 0,
            namespace: String::new(),
            name: String::new(),
            labels: BTreeMap::new(),
            fields: Vec::new(),
            owners: Vec::new(),
            deleting: false,
        }
    }

    /// The parsed object.
    pub fn value(&self) -> Value {
        serde_json::from_slice(&self.json).unwrap_or(Value::Null)
    }

    /// A label's value.
    pub fn label(&self, k: &str) -> Option<&str> {
        self.labels.get(k).map(String::as_str)
    }

    /// The value of the type's selectable field number `n`.
    pub fn field(&self, n: usize) -> &str {
        self.fields.get(n).map(String::as_str).unwrap_or("")
    }
}

/// An [`Indexer`] for types with no selectable fields beyond metadata.
pub struct NoFields;

impl Indexer for NoFields {
    fn fields(&self, _obj: &Value) -> Vec<String> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_version_is_spliced_in() {
        let raw = br#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"a"},"spec":{}}"#;
        let v: Value = serde_json::from_slice(&with_rv(raw, 42)).unwrap();
        assert_eq!(v["metadata"]["resourceVersion"], "42");
        assert_eq!(v["metadata"]["name"], "a");
        let v: Value = serde_json::from_slice(&with_rv(br#"{"metadata":{}}"#, 7)).unwrap();
        assert_eq!(v["metadata"]["resourceVersion"], "7");
        // Only the object's own metadata, never a template's.
        let raw = br#"{"spec":{"template":{"metadata":{"name":"t"}}},"metadata":{"name":"d"}}"#;
        let v: Value = serde_json::from_slice(&with_rv(raw, 9)).unwrap();
        assert_eq!(v["metadata"]["resourceVersion"], "9");
        assert!(v["spec"]["template"]["metadata"]
            .get("resourceVersion")
            .is_none());
    }
}
