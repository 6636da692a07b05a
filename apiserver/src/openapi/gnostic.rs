//! The Swagger 2.0 document as gnostic's `openapi.v2` protobuf messages: what kubectl and
//! client-go ask `/openapi/v2` for (`application/com.github.proto-openapi.spec.v2@v1.0+protobuf`)
//! and decode into `openapi_v2.Document`.
//!
//! Only the messages and fields a Skiff document uses are declared; names and field numbers are
//! those of gnostic's `openapiv2/OpenAPIv2.proto`. As in gnostic's own reading of a JSON
//! document, vendor extensions, defaults, examples and enum values travel as YAML text in
//! `Any.yaml`, and anything Swagger 2.0 has no place for is refused rather than dropped, so the
//! protobuf never says less than the JSON it was made from.

use serde_json::{Map, Value};

/// Why a JSON document could not be put into the protobuf messages.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The document is not JSON.
    #[error("the document is not JSON")]
    Json(#[source] serde_json::Error),
    /// A key that Swagger 2.0 (or this subset of it) has no field for.
    #[error("{at}: no Swagger 2.0 field for {key:?}")]
    UnknownKey { at: String, key: String },
    /// A value of the wrong JSON type for its field.
    #[error("{at}: expected {expected}")]
    WrongType { at: String, expected: &'static str },
    /// A free-form value that could not be written as YAML.
    #[error("{at}: cannot write as YAML")]
    Yaml {
        at: String,
        #[source]
        source: serde_norway::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `openapi.v2.Document`: the root of the document.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Document {
    #[prost(string, tag = "1")]
    pub swagger: String,
    #[prost(message, optional, tag = "2")]
    pub info: Option<Info>,
    #[prost(message, optional, tag = "8")]
    pub paths: Option<Paths>,
    #[prost(message, optional, tag = "9")]
    pub definitions: Option<Definitions>,
    #[prost(message, repeated, tag = "16")]
    pub vendor_extension: Vec<NamedAny>,
}

/// `openapi.v2.Info`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Info {
    #[prost(string, tag = "1")]
    pub title: String,
    #[prost(string, tag = "2")]
    pub version: String,
    #[prost(string, tag = "3")]
    pub description: String,
    #[prost(message, repeated, tag = "7")]
    pub vendor_extension: Vec<NamedAny>,
}

/// `openapi.v2.Paths`. Its path items (field 2) are not declared: Skiff's v2 document lists
/// no paths (see the parent module for why).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Paths {
    #[prost(message, repeated, tag = "1")]
    pub vendor_extension: Vec<NamedAny>,
}

/// `openapi.v2.Definitions`: the named schemas, in document order.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Definitions {
    #[prost(message, repeated, tag = "1")]
    pub additional_properties: Vec<NamedSchema>,
}

/// `openapi.v2.NamedSchema`: one entry of a map of schemas.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NamedSchema {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<Schema>,
}

/// `openapi.v2.NamedAny`: one vendor extension (or other free-form map entry).
#[derive(Clone, PartialEq, prost::Message)]
pub struct NamedAny {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<Any>,
}

/// `openapi.v2.Any`: a free-form value as YAML text (its `google.protobuf.Any`, field 1, is
/// unused by Kubernetes).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Any {
    #[prost(string, tag = "2")]
    pub yaml: String,
}

/// `openapi.v2.Schema`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Schema {
    #[prost(string, tag = "1")]
    pub xref: String,
    #[prost(string, tag = "2")]
    pub format: String,
    #[prost(string, tag = "3")]
    pub title: String,
    #[prost(string, tag = "4")]
    pub description: String,
    #[prost(message, optional, tag = "5")]
    pub default: Option<Any>,
    #[prost(double, tag = "6")]
    pub multiple_of: f64,
    #[prost(double, tag = "7")]
    pub maximum: f64,
    #[prost(bool, tag = "8")]
    pub exclusive_maximum: bool,
    #[prost(double, tag = "9")]
    pub minimum: f64,
    #[prost(bool, tag = "10")]
    pub exclusive_minimum: bool,
    #[prost(int64, tag = "11")]
    pub max_length: i64,
    #[prost(int64, tag = "12")]
    pub min_length: i64,
    #[prost(string, tag = "13")]
    pub pattern: String,
    #[prost(int64, tag = "14")]
    pub max_items: i64,
    #[prost(int64, tag = "15")]
    pub min_items: i64,
    #[prost(bool, tag = "16")]
    pub unique_items: bool,
    #[prost(int64, tag = "17")]
    pub max_properties: i64,
    #[prost(int64, tag = "18")]
    pub min_properties: i64,
    #[prost(string, repeated, tag = "19")]
    pub required: Vec<String>,
    #[prost(message, repeated, tag = "20")]
    pub r#enum: Vec<Any>,
    #[prost(message, optional, tag = "21")]
    pub additional_properties: Option<AdditionalPropertiesItem>,
    #[prost(message, optional, tag = "22")]
    pub r#type: Option<TypeItem>,
    #[prost(message, optional, tag = "23")]
    pub items: Option<ItemsItem>,
    #[prost(message, repeated, tag = "24")]
    pub all_of: Vec<Schema>,
    #[prost(message, optional, tag = "25")]
    pub properties: Option<Properties>,
    #[prost(string, tag = "26")]
    pub discriminator: String,
    #[prost(bool, tag = "27")]
    pub read_only: bool,
    #[prost(message, optional, tag = "30")]
    pub example: Option<Any>,
    #[prost(message, repeated, tag = "31")]
    pub vendor_extension: Vec<NamedAny>,
}

/// `openapi.v2.AdditionalPropertiesItem`: a schema for the values, or whether any are allowed.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AdditionalPropertiesItem {
    #[prost(oneof = "additional_properties_item::Oneof", tags = "1, 2")]
    pub oneof: Option<additional_properties_item::Oneof>,
}

/// The choice inside [`AdditionalPropertiesItem`].
pub mod additional_properties_item {
    /// `oneof oneof` of `openapi.v2.AdditionalPropertiesItem`.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Oneof {
        #[prost(message, tag = "1")]
        Schema(Box<super::Schema>),
        #[prost(bool, tag = "2")]
        Boolean(bool),
    }
}

/// `openapi.v2.TypeItem`: `type`, one name or several.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TypeItem {
    #[prost(string, repeated, tag = "1")]
    pub value: Vec<String>,
}

/// `openapi.v2.ItemsItem`: `items`, one schema or a tuple of them.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ItemsItem {
    #[prost(message, repeated, tag = "1")]
    pub schema: Vec<Schema>,
}

/// `openapi.v2.Properties`: a schema's properties, in document order.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Properties {
    #[prost(message, repeated, tag = "1")]
    pub additional_properties: Vec<NamedSchema>,
}

/// Encodes a Swagger 2.0 JSON document as a serialized `openapi.v2.Document`.
pub fn encode(json: &[u8]) -> Result<Vec<u8>> {
    let doc: Value = serde_json::from_slice(json).map_err(Error::Json)?;
    Ok(prost::Message::encode_to_vec(&document(&doc)?))
}

/// Reads a Swagger 2.0 JSON document into the protobuf messages.
pub fn document(doc: &Value) -> Result<Document> {
    let mut out = Document::default();
    for (key, value) in object(doc, "")? {
        let at = format!("/{key}");
        match key.as_str() {
            "swagger" => out.swagger = string(value, &at)?,
            "info" => out.info = Some(info(value, &at)?),
            "paths" => out.paths = Some(paths(value, &at)?),
            "definitions" => {
                out.definitions = Some(Definitions {
                    additional_properties: named_schemas(value, &at)?,
                })
            }
            _ => out.vendor_extension.push(extension(key, value, "")?),
        }
    }
    Ok(out)
}

fn info(value: &Value, at: &str) -> Result<Info> {
    let mut out = Info::default();
    for (key, value) in object(value, at)? {
        let here = format!("{at}/{key}");
        match key.as_str() {
            "title" => out.title = string(value, &here)?,
            "version" => out.version = string(value, &here)?,
            "description" => out.description = string(value, &here)?,
            _ => out.vendor_extension.push(extension(key, value, at)?),
        }
    }
    Ok(out)
}

fn paths(value: &Value, at: &str) -> Result<Paths> {
    let mut out = Paths::default();
    for (key, value) in object(value, at)? {
        out.vendor_extension.push(extension(key, value, at)?);
    }
    Ok(out)
}

fn named_schemas(value: &Value, at: &str) -> Result<Vec<NamedSchema>> {
    object(value, at)?
        .iter()
        .map(|(name, value)| {
            Ok(NamedSchema {
                name: name.clone(),
                value: Some(schema(value, &format!("{at}/{name}"))?),
            })
        })
        .collect()
}

fn schema(value: &Value, at: &str) -> Result<Schema> {
    let mut out = Schema::default();
    for (key, value) in object(value, at)? {
        let here = format!("{at}/{key}");
        let here = here.as_str();
        match key.as_str() {
            "$ref" => out.xref = string(value, here)?,
            "format" => out.format = string(value, here)?,
            "title" => out.title = string(value, here)?,
            "description" => out.description = string(value, here)?,
            "default" => out.default = Some(any(value, here)?),
            "multipleOf" => out.multiple_of = number(value, here)?,
            "maximum" => out.maximum = number(value, here)?,
            "exclusiveMaximum" => out.exclusive_maximum = boolean(value, here)?,
            "minimum" => out.minimum = number(value, here)?,
            "exclusiveMinimum" => out.exclusive_minimum = boolean(value, here)?,
            "maxLength" => out.max_length = integer(value, here)?,
            "minLength" => out.min_length = integer(value, here)?,
            "pattern" => out.pattern = string(value, here)?,
            "maxItems" => out.max_items = integer(value, here)?,
            "minItems" => out.min_items = integer(value, here)?,
            "uniqueItems" => out.unique_items = boolean(value, here)?,
            "maxProperties" => out.max_properties = integer(value, here)?,
            "minProperties" => out.min_properties = integer(value, here)?,
            "required" => out.required = strings(value, here)?,
            "enum" => {
                out.r#enum = array(value, here)?
                    .iter()
                    .map(|v| any(v, here))
                    .collect::<Result<_>>()?
            }
            "additionalProperties" => {
                use additional_properties_item::Oneof;
                let item = match value {
                    Value::Bool(b) => Oneof::Boolean(*b),
                    v => Oneof::Schema(Box::new(schema(v, here)?)),
                };
                out.additional_properties = Some(AdditionalPropertiesItem { oneof: Some(item) });
            }
            "type" => {
                let names = match value {
                    Value::String(s) => vec![s.clone()],
                    v => strings(v, here)?,
                };
                out.r#type = Some(TypeItem { value: names });
            }
            "items" => {
                let schemas = match value {
                    Value::Array(a) => a
                        .iter()
                        .enumerate()
                        .map(|(i, v)| schema(v, &format!("{here}/{i}")))
                        .collect::<Result<_>>()?,
                    v => vec![schema(v, here)?],
                };
                out.items = Some(ItemsItem { schema: schemas });
            }
            "allOf" => {
                out.all_of = array(value, here)?
                    .iter()
                    .enumerate()
                    .map(|(i, v)| schema(v, &format!("{here}/{i}")))
                    .collect::<Result<_>>()?
            }
            "properties" => {
                out.properties = Some(Properties {
                    additional_properties: named_schemas(value, here)?,
                })
            }
            "discriminator" => out.discriminator = string(value, here)?,
            "readOnly" => out.read_only = boolean(value, here)?,
            "example" => out.example = Some(any(value, here)?),
            _ => out.vendor_extension.push(extension(key, value, at)?),
        }
    }
    Ok(out)
}

/// A `x-` key, kept as YAML like gnostic keeps every extension it has no handler for.
fn extension(key: &str, value: &Value, at: &str) -> Result<NamedAny> {
    if !key.starts_with("x-") {
        return Err(Error::UnknownKey {
            at: if at.is_empty() { "/".into() } else { at.into() },
            key: key.into(),
        });
    }
    Ok(NamedAny {
        name: key.into(),
        value: Some(any(value, &format!("{at}/{key}"))?),
    })
}

fn any(value: &Value, at: &str) -> Result<Any> {
    serde_norway::to_string(value)
        .map(|yaml| Any { yaml })
        .map_err(|source| Error::Yaml {
            at: at.into(),
            source,
        })
}

fn wrong(at: &str, expected: &'static str) -> Error {
    Error::WrongType {
        at: if at.is_empty() { "/".into() } else { at.into() },
        expected,
    }
}

fn object<'a>(value: &'a Value, at: &str) -> Result<&'a Map<String, Value>> {
    value.as_object().ok_or_else(|| wrong(at, "an object"))
}

fn array<'a>(value: &'a Value, at: &str) -> Result<&'a Vec<Value>> {
    value.as_array().ok_or_else(|| wrong(at, "an array"))
}

fn string(value: &Value, at: &str) -> Result<String> {
    value
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| wrong(at, "a string"))
}

fn strings(value: &Value, at: &str) -> Result<Vec<String>> {
    array(value, at)?.iter().map(|v| string(v, at)).collect()
}

fn boolean(value: &Value, at: &str) -> Result<bool> {
    value.as_bool().ok_or_else(|| wrong(at, "a boolean"))
}

fn number(value: &Value, at: &str) -> Result<f64> {
    value.as_f64().ok_or_else(|| wrong(at, "a number"))
}

fn integer(value: &Value, at: &str) -> Result<i64> {
    value.as_i64().ok_or_else(|| wrong(at, "an integer"))
}

/// The way back, for tests: the JSON a decoded document stands for, as gnostic would write it.
#[cfg(test)]
pub(super) fn to_json(doc: &Document) -> Value {
    let mut out = Map::new();
    put_str(&mut out, "swagger", &doc.swagger);
    if let Some(info) = &doc.info {
        let mut m = Map::new();
        put_str(&mut m, "title", &info.title);
        put_str(&mut m, "version", &info.version);
        put_str(&mut m, "description", &info.description);
        put_extensions(&mut m, &info.vendor_extension);
        out.insert("info".into(), m.into());
    }
    if let Some(paths) = &doc.paths {
        let mut m = Map::new();
        put_extensions(&mut m, &paths.vendor_extension);
        out.insert("paths".into(), m.into());
    }
    if let Some(defs) = &doc.definitions {
        out.insert(
            "definitions".into(),
            named_to_json(&defs.additional_properties),
        );
    }
    put_extensions(&mut out, &doc.vendor_extension);
    out.into()
}

#[cfg(test)]
fn named_to_json(named: &[NamedSchema]) -> Value {
    named
        .iter()
        .map(|n| {
            let v = n.value.as_ref().map(schema_to_json).unwrap_or_default();
            (n.name.clone(), v)
        })
        .collect::<Map<_, _>>()
        .into()
}

#[cfg(test)]
fn schema_to_json(s: &Schema) -> Value {
    let mut m = Map::new();
    put_str(&mut m, "$ref", &s.xref);
    put_str(&mut m, "format", &s.format);
    put_str(&mut m, "title", &s.title);
    put_str(&mut m, "description", &s.description);
    if let Some(d) = &s.default {
        m.insert("default".into(), any_to_json(d));
    }
    for (k, v) in [
        ("multipleOf", s.multiple_of),
        ("maximum", s.maximum),
        ("minimum", s.minimum),
    ] {
        if v != 0.0 {
            m.insert(k.into(), v.into());
        }
    }
    for (k, v) in [
        ("exclusiveMaximum", s.exclusive_maximum),
        ("exclusiveMinimum", s.exclusive_minimum),
        ("uniqueItems", s.unique_items),
        ("readOnly", s.read_only),
    ] {
        if v {
            m.insert(k.into(), v.into());
        }
    }
    for (k, v) in [
        ("maxLength", s.max_length),
        ("minLength", s.min_length),
        ("maxItems", s.max_items),
        ("minItems", s.min_items),
        ("maxProperties", s.max_properties),
        ("minProperties", s.min_properties),
    ] {
        if v != 0 {
            m.insert(k.into(), v.into());
        }
    }
    put_str(&mut m, "pattern", &s.pattern);
    if !s.required.is_empty() {
        m.insert("required".into(), s.required.clone().into());
    }
    if !s.r#enum.is_empty() {
        m.insert(
            "enum".into(),
            s.r#enum.iter().map(any_to_json).collect::<Vec<_>>().into(),
        );
    }
    if let Some(ap) = &s.additional_properties {
        let v = match &ap.oneof {
            Some(additional_properties_item::Oneof::Schema(s)) => schema_to_json(s),
            Some(additional_properties_item::Oneof::Boolean(b)) => (*b).into(),
            None => Value::Null,
        };
        m.insert("additionalProperties".into(), v);
    }
    if let Some(t) = &s.r#type {
        let v = match t.value.as_slice() {
            [one] => one.clone().into(),
            many => many.to_vec().into(),
        };
        m.insert("type".into(), v);
    }
    if let Some(items) = &s.items {
        let v = match items.schema.as_slice() {
            [one] => schema_to_json(one),
            many => many.iter().map(schema_to_json).collect::<Vec<_>>().into(),
        };
        m.insert("items".into(), v);
    }
    if !s.all_of.is_empty() {
        m.insert(
            "allOf".into(),
            s.all_of
                .iter()
                .map(schema_to_json)
                .collect::<Vec<_>>()
                .into(),
        );
    }
    if let Some(p) = &s.properties {
        m.insert("properties".into(), named_to_json(&p.additional_properties));
    }
    put_str(&mut m, "discriminator", &s.discriminator);
    if let Some(e) = &s.example {
        m.insert("example".into(), any_to_json(e));
    }
    put_extensions(&mut m, &s.vendor_extension);
    m.into()
}

#[cfg(test)]
fn any_to_json(a: &Any) -> Value {
    serde_norway::from_str(&a.yaml).expect("Any holds YAML")
}

#[cfg(test)]
fn put_str(m: &mut Map<String, Value>, key: &str, v: &str) {
    if !v.is_empty() {
        m.insert(key.into(), v.into());
    }
}

#[cfg(test)]
fn put_extensions(m: &mut Map<String, Value>, extensions: &[NamedAny]) {
    for e in extensions {
        let v = e.value.as_ref().map(any_to_json).unwrap_or_default();
        m.insert(e.name.clone(), v);
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;
    use serde_json::json;

    use super::*;

    fn round_trip(doc: &Value) -> Value {
        let bytes = encode(doc.to_string().as_bytes()).unwrap();
        to_json(&Document::decode(bytes.as_slice()).unwrap())
    }

    #[test]
    fn every_schema_field_survives() {
        let doc = json!({
            "swagger": "2.0",
            "info": {"title": "t", "version": "v", "description": "d", "x-i": 1},
            "paths": {"x-p": "here"},
            "definitions": {
                "a.B": {
                    "description": "a B",
                    "title": "B",
                    "type": "object",
                    "required": ["n", "m"],
                    "properties": {
                        "n": {"type": "integer", "format": "int32", "minimum": 1.0,
                              "maximum": 9.5, "exclusiveMaximum": true, "multipleOf": 0.5,
                              "default": 3},
                        "s": {"type": "string", "pattern": "^x", "minLength": 1, "maxLength": 4,
                              "enum": ["x", "xy"], "example": "xy", "readOnly": true},
                        "l": {"type": "array", "items": {"$ref": "#/definitions/a.C"},
                              "minItems": 1, "maxItems": 2, "uniqueItems": true,
                              "x-kubernetes-list-type": "map",
                              "x-kubernetes-list-map-keys": ["k"]},
                        "t": {"type": "array", "items": [{"type": "string"}, {"type": "integer"}]},
                        "m": {"type": "object", "additionalProperties": {"type": "string"},
                              "minProperties": 1, "maxProperties": 3},
                        "open": {"type": "object", "additionalProperties": false},
                        "c": {"description": "see C", "$ref": "#/definitions/a.C"},
                        "both": {"allOf": [{"$ref": "#/definitions/a.C"}, {"type": "object"}]},
                        "u": {"type": ["string", "integer"], "discriminator": "k"},
                    },
                    "x-kubernetes-group-version-kind": [{"group": "", "version": "v1", "kind": "B"}],
                },
                "a.C": {"type": "object", "properties": {"k": {"type": "string"}}},
            },
            "x-top": {"nested": [1, "two", null]},
        });
        assert_eq!(round_trip(&doc), doc);
    }

    #[test]
    fn order_of_definitions_and_properties_is_kept() {
        let doc = json!({"definitions": {"z": {"properties": {"b": {}, "a": {}}}, "y": {}}});
        let bytes = encode(doc.to_string().as_bytes()).unwrap();
        let decoded = Document::decode(bytes.as_slice()).unwrap();
        let defs = decoded.definitions.unwrap().additional_properties;
        assert_eq!(defs[0].name, "z");
        assert_eq!(defs[1].name, "y");
        let props = &defs[0].value.as_ref().unwrap().properties;
        let names: Vec<_> = props
            .as_ref()
            .unwrap()
            .additional_properties
            .iter()
            .map(|p| p.name.as_str())
            .collect();
        assert_eq!(names, ["b", "a"]);
    }

    #[test]
    fn extensions_are_yaml_text() {
        let doc = json!({"definitions": {"p": {
            "x-kubernetes-patch-merge-key": "name",
            "x-kubernetes-group-version-kind": [{"group": "apps", "kind": "Deployment", "version": "v1"}],
        }}});
        let bytes = encode(doc.to_string().as_bytes()).unwrap();
        let decoded = Document::decode(bytes.as_slice()).unwrap();
        let p = decoded.definitions.unwrap().additional_properties[0]
            .value
            .clone()
            .unwrap();
        let yaml = |name: &str| {
            p.vendor_extension
                .iter()
                .find(|e| e.name == name)
                .and_then(|e| e.value.clone())
                .unwrap()
                .yaml
        };
        assert_eq!(yaml("x-kubernetes-patch-merge-key"), "name\n");
        assert_eq!(
            yaml("x-kubernetes-group-version-kind"),
            "- group: apps\n  kind: Deployment\n  version: v1\n"
        );
    }

    #[test]
    fn what_swagger_2_cannot_say_is_refused() {
        let err = encode(br#"{"definitions": {"a": {"properties": {"b": {"nullable": true}}}}}"#)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"/definitions/a/properties/b: no Swagger 2.0 field for "nullable""#
        );
        let err = encode(br#"{"paths": {"/api/v1/pods": {}}}"#).unwrap_err();
        assert!(matches!(err, Error::UnknownKey { ref key, .. } if key == "/api/v1/pods"));
        let err = encode(br#"{"definitions": {"a": {"required": "b"}}}"#).unwrap_err();
        assert_eq!(
            err.to_string(),
            "/definitions/a/required: expected an array"
        );
        assert!(matches!(encode(b"{"), Err(Error::Json(_))));
    }
}
