//! Strict decoding: the unknown and duplicate fields of a request body, found as
//! kube-apiserver finds them, and the messages and warnings it makes of them.
//!
//! kube-apiserver decodes JSON with sigs.k8s.io/json's strict decoder: while the body is
//! read, a key the type does not have is an `unknown field` (its value is skipped, unlooked
//! at) and a key named twice in one object is a `duplicate field`, each by its full path
//! (`spec.template.spec.containers[0].name`), in the order the body names them. A parsed
//! `serde_json::Value` keeps only the last of two equal keys, so the body is read here through
//! a [`Deserializer`] that watches every key go by on its way into the type. YAML bodies are
//! checked as yaml.v2's strict mode checks them: `line 12: key "paused" already set in map`,
//! by the line of the repeated value.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;

use serde::de::{
    self, DeserializeOwned, DeserializeSeed, Deserializer, EnumAccess, IgnoredAny, MapAccess,
    SeqAccess, Visitor,
};
use serde::Deserialize;
use serde_json::Value;

/// kube-apiserver keeps the first hundred problems of a body.
const MAX_PROBLEMS: usize = 100;

/// One problem strict decoding found.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Problem {
    /// A field the type does not have, by its full path.
    Unknown(String),
    /// A field named twice in one object, by its full path.
    Duplicate(String),
    /// A problem of a JSON patch's own operations (`json patch duplicate field "[0].path"`).
    JsonPatch(Box<Problem>),
    /// Mapping keys a YAML body gives twice, one yaml.v2 line each
    /// (`line 12: key "paused" already set in map`).
    Yaml(Vec<String>),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Unknown(p) => write!(f, "unknown field {}", go_quote(p)),
            Problem::Duplicate(p) => write!(f, "duplicate field {}", go_quote(p)),
            Problem::JsonPatch(p) => write!(f, "json patch {p}"),
            Problem::Yaml(lines) => write!(f, "yaml: unmarshal errors:\n  {}", lines.join("\n  ")),
        }
    }
}

/// The problems as one error: `strict decoding error: unknown field "spec.foo", duplicate
/// field "metadata.name"`.
pub fn message(problems: &[Problem]) -> String {
    let all: Vec<String> = problems.iter().map(Problem::to_string).collect();
    format!("strict decoding error: {}", all.join(", "))
}

/// One warning per problem; a YAML problem gives one per repeated key.
pub fn warnings(problems: &[Problem]) -> Vec<String> {
    problems
        .iter()
        .flat_map(|p| match p {
            Problem::Yaml(lines) => lines.clone(),
            other => vec![other.to_string()],
        })
        .collect()
}

/// Adds the problems of `more` not already in `problems`, keeping the order.
pub fn merge(problems: &mut Vec<Problem>, more: impl IntoIterator<Item = Problem>) {
    for p in more {
        if !problems.contains(&p) && problems.len() < MAX_PROBLEMS {
            problems.push(p);
        }
    }
}

/// A string as Go's `strconv.Quote` writes it (kube-apiserver's messages quote paths and
/// values so).
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_control() || c == '\u{feff}' => {
                let n = c as u32;
                if n > 0xffff {
                    out.push_str(&format!("\\U{n:08x}"));
                } else {
                    out.push_str(&format!("\\u{n:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

// ---------------------------------------------------------------------------------------
// JSON: a deserializer that watches the keys go by.

/// What one decoding found so far.
#[derive(Default)]
struct Found {
    problems: Vec<Problem>,
    seen: HashSet<Problem>,
    /// The last map key read (set by a key's deserializer, taken by its map).
    key: Option<String>,
}

impl Found {
    fn push(&mut self, p: Problem) {
        if self.problems.len() < MAX_PROBLEMS && self.seen.insert(p.clone()) {
            self.problems.push(p);
        }
    }
}

fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Wraps a deserializer at one place of the document.
struct Track<'a, D> {
    de: D,
    found: &'a RefCell<Found>,
    path: String,
    /// For a field's value not yet looked at: whether its key was already given.
    field: Option<bool>,
    /// Whether this deserializer reads a map key (and records it).
    key: bool,
}

impl<'a, D> Track<'a, D> {
    /// The value is being read as something the type knows: a repeated key is a duplicate.
    fn settle(&mut self) {
        if self.field.take() == Some(true) {
            self.found
                .borrow_mut()
                .push(Problem::Duplicate(self.path.clone()));
        }
    }

    fn wrap<V>(&self, v: V) -> Watch<'a, V> {
        Watch {
            v,
            found: self.found,
            path: self.path.clone(),
            key: self.key,
        }
    }
}

macro_rules! forward {
    ($($m:ident),* $(,)?) => {$(
        fn $m<V: Visitor<'de>>(mut self, v: V) -> Result<V::Value, D::Error> {
            self.settle();
            let w = self.wrap(v);
            self.de.$m(w)
        }
    )*};
}

impl<'de, 'a, D: Deserializer<'de>> Deserializer<'de> for Track<'a, D> {
    type Error = D::Error;

    forward!(
        deserialize_any,
        deserialize_bool,
        deserialize_i8,
        deserialize_i16,
        deserialize_i32,
        deserialize_i64,
        deserialize_i128,
        deserialize_u8,
        deserialize_u16,
        deserialize_u32,
        deserialize_u64,
        deserialize_u128,
        deserialize_f32,
        deserialize_f64,
        deserialize_char,
        deserialize_str,
        deserialize_string,
        deserialize_bytes,
        deserialize_byte_buf,
        deserialize_option,
        deserialize_unit,
        deserialize_seq,
        deserialize_map,
        deserialize_identifier,
    );

    fn deserialize_ignored_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, D::Error> {
        // A field's value the type skips: the type has no such field.
        if self.field.is_some() {
            self.found
                .borrow_mut()
                .push(Problem::Unknown(self.path.clone()));
        }
        self.de.deserialize_ignored_any(v)
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        mut self,
        name: &'static str,
        v: V,
    ) -> Result<V::Value, D::Error> {
        self.settle();
        let w = self.wrap(v);
        self.de.deserialize_unit_struct(name, w)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        mut self,
        name: &'static str,
        v: V,
    ) -> Result<V::Value, D::Error> {
        self.settle();
        let w = self.wrap(v);
        self.de.deserialize_newtype_struct(name, w)
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        mut self,
        len: usize,
        v: V,
    ) -> Result<V::Value, D::Error> {
        self.settle();
        let w = self.wrap(v);
        self.de.deserialize_tuple(len, w)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        mut self,
        name: &'static str,
        len: usize,
        v: V,
    ) -> Result<V::Value, D::Error> {
        self.settle();
        let w = self.wrap(v);
        self.de.deserialize_tuple_struct(name, len, w)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        mut self,
        name: &'static str,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, D::Error> {
        self.settle();
        let w = self.wrap(v);
        self.de.deserialize_struct(name, fields, w)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        mut self,
        name: &'static str,
        variants: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, D::Error> {
        self.settle();
        let w = self.wrap(v);
        self.de.deserialize_enum(name, variants, w)
    }

    fn is_human_readable(&self) -> bool {
        self.de.is_human_readable()
    }
}

/// Wraps a visitor: maps and sequences it visits are watched in turn; a key's text is kept.
struct Watch<'a, V> {
    v: V,
    found: &'a RefCell<Found>,
    path: String,
    key: bool,
}

impl<V> Watch<'_, V> {
    fn keep(&self, s: &str) {
        if self.key {
            self.found.borrow_mut().key = Some(s.to_string());
        }
    }
}

macro_rules! pass {
    ($($m:ident: $t:ty),* $(,)?) => {$(
        fn $m<E: de::Error>(self, x: $t) -> Result<V::Value, E> {
            self.v.$m(x)
        }
    )*};
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Watch<'_, V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.v.expecting(f)
    }

    pass!(
        visit_bool: bool,
        visit_i8: i8,
        visit_i16: i16,
        visit_i32: i32,
        visit_i64: i64,
        visit_i128: i128,
        visit_u8: u8,
        visit_u16: u16,
        visit_u32: u32,
        visit_u64: u64,
        visit_u128: u128,
        visit_f32: f32,
        visit_f64: f64,
        visit_char: char,
        visit_bytes: &[u8],
        visit_borrowed_bytes: &'de [u8],
        visit_byte_buf: Vec<u8>,
    );

    fn visit_str<E: de::Error>(self, s: &str) -> Result<V::Value, E> {
        self.keep(s);
        self.v.visit_str(s)
    }

    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<V::Value, E> {
        self.keep(s);
        self.v.visit_borrowed_str(s)
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<V::Value, E> {
        self.keep(&s);
        self.v.visit_string(s)
    }

    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        self.v.visit_none()
    }

    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        self.v.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        self.v.visit_some(Track {
            de: d,
            found: self.found,
            path: self.path,
            field: None,
            key: self.key,
        })
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        self.v.visit_newtype_struct(Track {
            de: d,
            found: self.found,
            path: self.path,
            field: None,
            key: self.key,
        })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        self.v.visit_seq(Items {
            seq,
            found: self.found,
            path: self.path,
            index: 0,
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        self.v.visit_map(Fields {
            map,
            found: self.found,
            path: self.path,
            seen: HashSet::new(),
            next: None,
        })
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<V::Value, A::Error> {
        self.v.visit_enum(data)
    }
}

/// A watched object: each key's path, and whether it came before.
struct Fields<'a, A> {
    map: A,
    found: &'a RefCell<Found>,
    path: String,
    seen: HashSet<String>,
    next: Option<(String, bool)>,
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Fields<'_, A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        self.found.borrow_mut().key = None;
        let out = self.map.next_key_seed(Seeded {
            seed,
            found: self.found,
            path: String::new(),
            field: None,
            key: true,
        })?;
        let key = self.found.borrow_mut().key.take().unwrap_or_default();
        let again = !self.seen.insert(key.clone());
        self.next = Some((key, again));
        Ok(out)
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, A::Error> {
        let (key, again) = self.next.take().unwrap_or_default();
        self.map.next_value_seed(Seeded {
            seed,
            found: self.found,
            path: child(&self.path, &key),
            field: Some(again),
            key: false,
        })
    }

    fn size_hint(&self) -> Option<usize> {
        self.map.size_hint()
    }
}

/// A watched array: each item's path.
struct Items<'a, A> {
    seq: A,
    found: &'a RefCell<Found>,
    path: String,
    index: usize,
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for Items<'_, A> {
    type Error = A::Error;

    fn next_element_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, A::Error> {
        let path = format!("{}[{}]", self.path, self.index);
        self.index += 1;
        self.seq.next_element_seed(Seeded {
            seed,
            found: self.found,
            path,
            field: None,
            key: false,
        })
    }

    fn size_hint(&self) -> Option<usize> {
        self.seq.size_hint()
    }
}

/// A seed whose deserializer is watched.
struct Seeded<'a, S> {
    seed: S,
    found: &'a RefCell<Found>,
    path: String,
    field: Option<bool>,
    key: bool,
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Seeded<'_, S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<S::Value, D::Error> {
        self.seed.deserialize(Track {
            de: d,
            found: self.found,
            path: self.path,
            field: self.field,
            key: self.key,
        })
    }
}

/// Reads `body` as a `T`, returning what it decodes to and the problems met on the way.
fn watched<T: DeserializeOwned>(body: &[u8]) -> Result<(T, Vec<Problem>), serde_json::Error> {
    let found = RefCell::new(Found::default());
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = T::deserialize(Track {
        de: &mut de,
        found: &found,
        path: String::new(),
        field: None,
        key: false,
    })?;
    de.end()?;
    Ok((value, found.into_inner().problems))
}

/// The unknown and duplicate fields of a JSON document read as a `T`, in the order the
/// document names them; `None` when it does not read as a `T` at all.
pub fn json_typed<T: DeserializeOwned>(body: &[u8]) -> Option<Vec<Problem>> {
    watched::<T>(body).ok().map(|(_, problems)| problems)
}

/// The duplicate fields of a JSON document, wherever they are (no type says what is
/// unknown).
pub fn json_duplicates(body: &[u8]) -> Vec<Problem> {
    watched::<Value>(body)
        .map(|(_, problems)| problems)
        .unwrap_or_default()
}

/// One JSON patch operation, as kube-apiserver reads it strictly: four fields, the last of
/// two equal keys winning.
struct JsonPatchOp;

impl<'de> Deserialize<'de> for JsonPatchOp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = JsonPatchOp;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON patch operation")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<JsonPatchOp, A::Error> {
                while let Some(k) = map.next_key::<Cow<'de, str>>()? {
                    match &*k {
                        "op" | "path" | "from" => {
                            map.next_value::<Option<String>>()?;
                        }
                        "value" => {
                            map.next_value::<Value>()?;
                        }
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(JsonPatchOp)
            }
        }
        d.deserialize_map(V)
    }
}

/// The unknown and duplicate fields of a JSON patch's operations (`json patch unknown field
/// "[0].foo"`).
pub fn json_patch_problems(body: &[u8]) -> Vec<Problem> {
    watched::<Vec<JsonPatchOp>>(body)
        .map(|(_, problems)| {
            problems
                .into_iter()
                .map(|p| Problem::JsonPatch(Box::new(p)))
                .collect()
        })
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------
// YAML: repeated mapping keys, by line, as yaml.v2's strict mode reports them.

/// A mapping key as yaml.v2 resolves it into a Go value: keys equal as values are the same
/// key (`yes` and `true` both), and it prints them as Go's `%#v` does.
fn yaml_key(text: &str, plain: bool) -> String {
    if !plain {
        return go_quote(text);
    }
    match text {
        "y" | "Y" | "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => {
            return "true".into()
        }
        "n" | "N" | "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => {
            return "false".into()
        }
        "" | "~" | "null" | "Null" | "NULL" => return "<nil>".into(),
        _ => {}
    }
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(n) = text.parse::<i64>() {
            return n.to_string();
        }
    }
    if text.bytes().any(|b| b.is_ascii_digit())
        && !text.contains(|c: char| c.is_alphabetic() && c != 'e' && c != 'E')
    {
        if let Ok(f) = text.parse::<f64>() {
            return go_float(f);
        }
    }
    go_quote(text)
}

/// A mapping being read: the keys it has, and the key whose value comes next.
struct Mapping {
    keys: HashSet<String>,
    /// The key read and the line its value starts on, once the value has started.
    pending: Option<(Option<String>, usize)>,
    /// Whether the next node is a key.
    at_key: bool,
}

/// What the node on top of the stack is.
enum Frame {
    Mapping(Mapping),
    Sequence,
}

/// The repeated keys of a YAML document, as yaml.v2's strict mode names them: `None` when
/// there are none (or the document does not parse; decoding reports that itself).
pub fn yaml_duplicates(body: &[u8]) -> Option<Problem> {
    use granit_parser::{Event, Parser, ScalarStyle};
    let text = std::str::from_utf8(body).ok()?;
    let mut stack: Vec<Frame> = Vec::new();
    let mut lines = Vec::new();
    // The key a mapping is about to read, before its value starts.
    let mut key_text: Option<Option<String>> = None;
    let mut started = false;
    for next in Parser::new_from_str(text) {
        let Ok((event, span)) = next else {
            return None;
        };
        let line = span.start.line();
        // Called when a node starts: if it is a mapping's key or value, note it.
        let mut node_starts = |stack: &mut Vec<Frame>, key: Option<String>| -> bool {
            if let Some(Frame::Mapping(m)) = stack.last_mut() {
                if m.at_key {
                    m.at_key = false;
                    key_text = Some(key);
                    return true;
                }
                m.pending = Some((key_text.take().flatten(), line));
            }
            false
        };
        // Called when a node ends: a mapping's value ending adds its key.
        let node_ends = |stack: &mut Vec<Frame>, lines: &mut Vec<String>| {
            if let Some(Frame::Mapping(m)) = stack.last_mut() {
                if let Some((key, at)) = m.pending.take() {
                    m.at_key = true;
                    if let Some(k) = key {
                        if !m.keys.insert(k.clone()) {
                            lines.push(format!("line {at}: key {k} already set in map"));
                        }
                    }
                }
            }
        };
        match event {
            Event::DocumentStart(..) => {
                if started {
                    break;
                }
                started = true;
            }
            Event::DocumentEnd | Event::StreamEnd => break,
            Event::Scalar(value, style, ..) => {
                let plain = style == ScalarStyle::Plain;
                // A merge key (`<<`) merges rather than sets.
                let key = (!(plain && value == "<<")).then(|| yaml_key(&value, plain));
                if node_starts(&mut stack, key) {
                    continue;
                }
                node_ends(&mut stack, &mut lines);
            }
            Event::Alias(_) => {
                if node_starts(&mut stack, None) {
                    continue;
                }
                node_ends(&mut stack, &mut lines);
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                // A collection as a key cannot be a Go map key; yaml.v2 refuses it itself.
                node_starts(&mut stack, None);
                stack.push(match event {
                    Event::MappingStart(..) => Frame::Mapping(Mapping {
                        keys: HashSet::new(),
                        pending: None,
                        at_key: true,
                    }),
                    _ => Frame::Sequence,
                });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                stack.pop();
                node_ends(&mut stack, &mut lines);
            }
            _ => {}
        }
    }
    (!lines.is_empty()).then_some(Problem::Yaml(lines))
}

// ---------------------------------------------------------------------------------------
// How kube-apiserver prints what it decoded, in the messages of refused patches.

/// A float as Go's `%v` prints it.
fn go_float(f: f64) -> String {
    if f.is_finite() && f != 0.0 && (f.abs() >= 1e21 || f.abs() < 1e-4) {
        let s = format!("{f:e}");
        match s.split_once('e') {
            Some((m, e)) if e.starts_with('-') => format!("{m}e-{:0>2}", &e[1..]),
            Some((m, e)) => format!("{m}e+{e:0>2}"),
            None => s,
        }
    } else {
        format!("{f}")
    }
}

/// A decoded JSON value as Go's `%+v` prints a `map[string]interface{}`:
/// `map[spec:map[paused:true]]`, keys sorted.
pub fn go_value(v: &Value) -> String {
    match v {
        Value::Null => "<nil>".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => i.to_string(),
            (None, _) if n.is_u64() => go_float(n.as_f64().unwrap_or(0.0)),
            (None, Some(f)) => go_float(f),
            _ => n.to_string(),
        },
        Value::String(s) => s.clone(),
        Value::Array(a) => format!("[{}]", a.iter().map(go_value).collect::<Vec<_>>().join(" ")),
        Value::Object(o) => {
            let mut keys: Vec<&String> = o.keys().collect();
            keys.sort();
            let items: Vec<String> = keys
                .into_iter()
                .map(|k| format!("{k}:{}", go_value(&o[k])))
                .collect();
            format!("map[{}]", items.join(" "))
        }
    }
}

/// A JSON value as Go's `json.Marshal` writes a decoded map: compact, keys sorted, `<`, `>`
/// and `&` escaped.
pub fn go_json(v: &Value) -> String {
    fn sorted(v: &Value) -> Value {
        match v {
            Value::Object(o) => {
                let mut keys: Vec<&String> = o.keys().collect();
                keys.sort();
                Value::Object(
                    keys.into_iter()
                        .map(|k| (k.clone(), sorted(&o[k])))
                        .collect(),
                )
            }
            Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    sorted(v)
        .to_string()
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::ConfigMap;

    fn texts(p: &[Problem]) -> Vec<String> {
        p.iter().map(Problem::to_string).collect()
    }

    #[test]
    fn typed_json_names_unknown_and_duplicate_fields_in_document_order() {
        let body = br#"{
            "apiVersion": "apps/v1", "kind": "Deployment",
            "spec": {"foo": 1, "foo": 2, "paused": true, "paused": false,
                "selector": {"matchLabels": {"app": "a", "app": "b"}},
                "template": {"metadata": {"labels": {"app": "x"}, "labels": {"app": "y"}},
                    "spec": {"containers": [{"name": "c", "image": "i", "bogus": {"a": 1, "a": 2},
                        "imagePullPolicy": "Always", "imagePullPolicy": "Never"}]}}},
            "metadata": {"name": "a", "name": "b"}
        }"#;
        let found = json_typed::<Deployment>(body).unwrap();
        assert_eq!(
            texts(&found),
            [
                r#"unknown field "spec.foo""#,
                r#"duplicate field "spec.paused""#,
                r#"duplicate field "spec.selector.matchLabels.app""#,
                r#"duplicate field "spec.template.metadata.labels""#,
                r#"unknown field "spec.template.spec.containers[0].bogus""#,
                r#"duplicate field "spec.template.spec.containers[0].imagePullPolicy""#,
                r#"duplicate field "metadata.name""#,
            ]
        );
        assert_eq!(
            message(&found[..1]),
            r#"strict decoding error: unknown field "spec.foo""#
        );
        // Nothing to report, nothing reported; a body that is not the type: no answer.
        let clean = br#"{"metadata": {"name": "a", "labels": {"x": "1"}}, "data": {"k": "v"}}"#;
        assert_eq!(json_typed::<ConfigMap>(clean), Some(vec![]));
        assert_eq!(json_typed::<ConfigMap>(br#"{"data": 5}"#), None);
        // Null values of unknown fields are still unknown, as in kube-apiserver.
        assert_eq!(
            texts(&json_typed::<ConfigMap>(br#"{"nope": null}"#).unwrap()),
            [r#"unknown field "nope""#]
        );
    }

    #[test]
    fn untyped_json_finds_duplicates_at_any_depth() {
        let body = br#"{"a": [{"b": 1, "b": 2}], "c": {"d": {"e": 1, "e": 1}}, "a": []}"#;
        assert_eq!(
            texts(&json_duplicates(body)),
            [
                r#"duplicate field "a[0].b""#,
                r#"duplicate field "c.d.e""#,
                r#"duplicate field "a""#
            ]
        );
        assert!(json_duplicates(b"not json").is_empty());
    }

    #[test]
    fn json_patch_operations_are_read_strictly() {
        let body = br#"[{"op": "add", "path": "/a", "value": 1, "foo": "bar"},
                        {"op": "add", "path": "/b", "path": "/c", "value": {"x": 1, "x": 2}}]"#;
        assert_eq!(
            texts(&json_patch_problems(body)),
            [
                r#"json patch unknown field "[0].foo""#,
                r#"json patch duplicate field "[1].path""#,
                r#"json patch duplicate field "[1].value.x""#,
            ]
        );
    }

    #[test]
    fn yaml_duplicates_are_named_by_the_line_of_the_repeated_value() {
        let body = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  name: b\ndata:\n  k: v\n  k: w\n";
        let p = yaml_duplicates(body.as_bytes()).unwrap();
        assert_eq!(
            p.to_string(),
            "yaml: unmarshal errors:\n  line 5: key \"name\" already set in map\n  line 8: key \"k\" already set in map"
        );
        assert_eq!(
            warnings(&[p]),
            [
                r#"line 5: key "name" already set in map"#,
                r#"line 8: key "k" already set in map"#
            ]
        );
        // A repeated key whose value is a mapping: the line the mapping starts on; duplicates
        // inside it first, as yaml.v2 decodes the value before setting it.
        let nested = "spec:\n  a: 1\nspec:\n  b: 1\n  b: 2\n";
        assert_eq!(
            warnings(&[yaml_duplicates(nested.as_bytes()).unwrap()]),
            [
                r#"line 5: key "b" already set in map"#,
                r#"line 4: key "spec" already set in map"#
            ]
        );
        // JSON is YAML too; keys resolve as values (`1` is not `"1"`).
        let json = "{\n\"a\": 1,\n\"a\": 2, \"1\": 0, 1: 0, yes: 1, true: 2}";
        assert_eq!(
            warnings(&[yaml_duplicates(json.as_bytes()).unwrap()]),
            [
                r#"line 3: key "a" already set in map"#,
                "line 3: key true already set in map"
            ]
        );
        assert_eq!(yaml_duplicates(b"a: 1\nb: [1, 1]\nc: {d: 1}\n"), None);
        assert_eq!(yaml_duplicates(b"a: [\n"), None);
    }

    #[test]
    fn deep_documents_are_read_within_the_stack() {
        use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
        // A schema nested as deep as a JSON body may be (serde_json stops at 128 levels).
        let mut schema = String::from(r#"{"type": "object"}"#);
        for _ in 0..58 {
            schema = format!(r#"{{"type": "object", "properties": {{"a": {schema}}}}}"#);
        }
        let body = format!(
            r#"{{"spec": {{"versions": [{{"name": "v1", "schema": {{"openAPIV3Schema": {schema}}}}}]}}}}"#
        );
        assert_eq!(
            json_typed::<CustomResourceDefinition>(body.as_bytes()),
            Some(vec![])
        );
        let deeper = format!(r#"{{"a": {}}}"#, "[".repeat(200) + &"]".repeat(200));
        assert!(json_duplicates(deeper.as_bytes()).is_empty());
        // What a field the type lacks holds is skipped, unlooked at.
        assert_eq!(
            json_typed::<CustomResourceDefinition>(deeper.as_bytes()),
            Some(vec![Problem::Unknown("a".into())])
        );
    }

    #[test]
    fn go_printing() {
        assert_eq!(go_quote("a\"b\\c\n\u{1}é"), r#""a\"b\\c\n\x01é""#);
        let v = serde_json::json!({"spec": {"z": [1, "a", null], "a": 1.5, "b": true}});
        assert_eq!(go_value(&v), "map[spec:map[a:1.5 b:true z:[1 a <nil>]]]");
        assert_eq!(
            go_json(&serde_json::json!({"b": "<&>", "a": 1})),
            r#"{"a":1,"b":"\u003c\u0026\u003e"}"#
        );
        assert_eq!(go_float(1e21), "1e+21");
        assert_eq!(go_float(0.5), "0.5");
    }
}
