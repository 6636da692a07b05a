//! The schema tree read from a CRD's `openAPIV3Schema` (Kubernetes' `JSONSchemaProps`), and
//! the check Kubernetes makes of it when a CustomResourceDefinition is written:
//!
//! - the OpenAPI rules of `ValidateCustomResourceDefinitionOpenAPISchema` (no `$ref`,
//!   `definitions`, `dependencies`, `patternProperties`, `additionalItems`, `uniqueItems`;
//!   `properties` or `additionalProperties`; list and map types; the static parts of
//!   `x-kubernetes-validations`);
//! - structurality (`ValidateStructural`): a `type` everywhere but where
//!   `x-kubernetes-int-or-string` or `x-kubernetes-preserve-unknown-fields` allow none, value
//!   validations under `allOf`/`anyOf`/`oneOf`/`not` that declare nothing structural, root
//!   `metadata` restricted to `name` and `generateName`, embedded resources typed `object`;
//! - defaults (`ValidateDefaults`): each `default` valid against its schema, already pruned,
//!   and none under the root's `metadata`, `apiVersion` or `kind`.
//!
//! Errors are worded and ordered as Kubernetes words and orders them, with paths under the
//! given root (`spec.versions[0].schema.openAPIV3Schema.properties[spec].type`). CEL rules are
//! compiled by [`crate::validation::Validator::new_at`]; their compilation errors are not part
//! of [`check`].

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use crate::error::{ErrorKind, FieldError};
use crate::path;

/// One `x-kubernetes-validations` rule.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    /// The CEL expression; true means valid.
    pub rule: String,
    /// The message when the rule fails.
    #[serde(default)]
    pub message: Option<String>,
    /// A CEL expression giving the message (a string).
    #[serde(default)]
    pub message_expression: Option<String>,
    /// The `reason` of the error (`FieldValueInvalid` when unset).
    #[serde(default)]
    pub reason: Option<String>,
    /// Where the error points, relative to the node (`.spec.x`).
    #[serde(default)]
    pub field_path: Option<String>,
    /// Whether the rule also runs on create or on a new item, with `oldSelf` an optional.
    #[serde(default)]
    pub optional_old_self: Option<bool>,
}

/// `additionalProperties`: a schema for every other key, or a boolean.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Additional {
    /// `true` or `false`.
    Bool(bool),
    /// A schema.
    Schema(Box<Schema>),
}

/// `items`: one schema for every item (the only form structural schemas allow), or a list.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Items {
    /// One schema.
    Schema(Box<Schema>),
    /// One schema per position (never structural).
    List(Vec<Schema>),
}

/// One node of a schema, as `JSONSchemaProps` spells it. Fields Kubernetes refuses in CRD
/// schemas (`$ref`, `definitions`, ...) are kept so that the check can name them.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Schema {
    /// `type`: object, array, string, integer, number, boolean.
    #[serde(default, rename = "type")]
    pub type_: Option<String>,
    /// `format`: date-time, int32, byte, ...
    #[serde(default)]
    pub format: Option<String>,
    /// `description`.
    #[serde(default)]
    pub description: Option<String>,
    /// `title`.
    #[serde(default)]
    pub title: Option<String>,
    /// `nullable`.
    #[serde(default)]
    pub nullable: bool,
    /// `default`.
    #[serde(default)]
    pub default: Option<Value>,
    /// `enum`.
    #[serde(default, rename = "enum")]
    pub enum_: Option<Vec<Value>>,
    /// `maximum`.
    #[serde(default)]
    pub maximum: Option<f64>,
    /// `exclusiveMaximum`.
    #[serde(default)]
    pub exclusive_maximum: bool,
    /// `minimum`.
    #[serde(default)]
    pub minimum: Option<f64>,
    /// `exclusiveMinimum`.
    #[serde(default)]
    pub exclusive_minimum: bool,
    /// `multipleOf`.
    #[serde(default)]
    pub multiple_of: Option<f64>,
    /// `maxLength`.
    #[serde(default)]
    pub max_length: Option<u64>,
    /// `minLength`.
    #[serde(default)]
    pub min_length: Option<u64>,
    /// `pattern` (ECMA 262, as Kubernetes reads it with Go's regexp).
    #[serde(default)]
    pub pattern: Option<String>,
    /// `maxItems`.
    #[serde(default)]
    pub max_items: Option<u64>,
    /// `minItems`.
    #[serde(default)]
    pub min_items: Option<u64>,
    /// `uniqueItems`.
    #[serde(default)]
    pub unique_items: bool,
    /// `maxProperties`.
    #[serde(default)]
    pub max_properties: Option<u64>,
    /// `minProperties`.
    #[serde(default)]
    pub min_properties: Option<u64>,
    /// `required`.
    #[serde(default)]
    pub required: Vec<String>,
    /// `properties`.
    #[serde(default)]
    pub properties: BTreeMap<String, Schema>,
    /// `additionalProperties`.
    #[serde(default)]
    pub additional_properties: Option<Additional>,
    /// `items`.
    #[serde(default)]
    pub items: Option<Items>,
    /// `allOf`.
    #[serde(default)]
    pub all_of: Vec<Schema>,
    /// `oneOf`.
    #[serde(default)]
    pub one_of: Vec<Schema>,
    /// `anyOf`.
    #[serde(default)]
    pub any_of: Vec<Schema>,
    /// `not`.
    #[serde(default)]
    pub not: Option<Box<Schema>>,
    /// `x-kubernetes-preserve-unknown-fields`.
    #[serde(default, rename = "x-kubernetes-preserve-unknown-fields")]
    pub preserve_unknown_fields: Option<bool>,
    /// `x-kubernetes-embedded-resource`.
    #[serde(default, rename = "x-kubernetes-embedded-resource")]
    pub embedded_resource: bool,
    /// `x-kubernetes-int-or-string`.
    #[serde(default, rename = "x-kubernetes-int-or-string")]
    pub int_or_string: bool,
    /// `x-kubernetes-list-type`: atomic, set, map.
    #[serde(default, rename = "x-kubernetes-list-type")]
    pub list_type: Option<String>,
    /// `x-kubernetes-list-map-keys`.
    #[serde(default, rename = "x-kubernetes-list-map-keys")]
    pub list_map_keys: Vec<String>,
    /// `x-kubernetes-map-type`: granular, atomic.
    #[serde(default, rename = "x-kubernetes-map-type")]
    pub map_type: Option<String>,
    /// `x-kubernetes-validations`.
    #[serde(default, rename = "x-kubernetes-validations")]
    pub validations: Vec<Rule>,
    /// `$ref` (refused in CRD schemas).
    #[serde(default, rename = "$ref")]
    pub reference: Option<String>,
    /// `definitions` (refused in CRD schemas).
    #[serde(default)]
    pub definitions: Option<Value>,
    /// `dependencies` (refused in CRD schemas).
    #[serde(default)]
    pub dependencies: Option<Value>,
    /// `patternProperties` (refused in CRD schemas).
    #[serde(default)]
    pub pattern_properties: Option<Value>,
    /// `additionalItems` (refused in CRD schemas).
    #[serde(default)]
    pub additional_items: Option<Value>,
    /// `uniqueItems` cannot be true in CRD schemas; `id`, `$schema` are refused too.
    #[serde(default)]
    pub id: Option<String>,
    /// `$schema` (refused).
    #[serde(default, rename = "$schema")]
    pub schema_uri: Option<String>,
    /// `externalDocs`.
    #[serde(default)]
    pub external_docs: Option<Value>,
    /// `example`.
    #[serde(default)]
    pub example: Option<Value>,
}

impl Schema {
    /// Reads a schema from its JSON (`openAPIV3Schema`), without checking it.
    pub fn parse(v: &Value) -> Result<Schema, serde_json::Error> {
        Schema::deserialize(v)
    }

    /// Whether unknown fields are kept under this node.
    pub fn preserves_unknown(&self) -> bool {
        self.preserve_unknown_fields == Some(true)
    }

    /// The schema of every item of an array node.
    pub fn item_schema(&self) -> Option<&Schema> {
        match &self.items {
            Some(Items::Schema(s)) => Some(s),
            _ => None,
        }
    }

    /// The schema of values of a map node (`additionalProperties` as a schema).
    pub fn value_schema(&self) -> Option<&Schema> {
        match &self.additional_properties {
            Some(Additional::Schema(s)) => Some(s),
            _ => None,
        }
    }
}

// The check of a CRD's schema.

const V3_TYPES: &[&str] = &["array", "boolean", "integer", "number", "object", "string"];
const META_FIELDS: &[&str] = &["metadata", "kind", "apiVersion"];
const RULE_REASONS: &[&str] = &[
    "FieldValueDuplicate",
    "FieldValueForbidden",
    "FieldValueInvalid",
    "FieldValueRequired",
];

fn required(p: &str, detail: impl Into<String>) -> FieldError {
    FieldError::new(ErrorKind::Required, path::shown(p), None, detail)
}

fn forbidden(p: &str, detail: impl Into<String>) -> FieldError {
    FieldError::new(ErrorKind::Forbidden, path::shown(p), None, detail)
}

fn invalid(p: &str, value: Value, detail: impl Into<String>) -> FieldError {
    FieldError::new(ErrorKind::Invalid, path::shown(p), Some(value), detail)
}

fn not_supported(p: &str, value: &str, allowed: &[&str]) -> FieldError {
    let quoted: Vec<String> = allowed.iter().map(|a| crate::gofmt::quote(a)).collect();
    FieldError::new(
        ErrorKind::NotSupported,
        path::shown(p),
        Some(Value::String(value.to_string())),
        format!("supported values: {}", quoted.join(", ")),
    )
}

fn type_of(s: &Schema) -> &str {
    s.type_.as_deref().unwrap_or("")
}

fn non_empty(v: &Option<Value>) -> bool {
    match v {
        None | Some(Value::Null) => false,
        Some(Value::Object(m)) => !m.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(_) => true,
    }
}

/// Checks a CRD version's `openAPIV3Schema` as Kubernetes does when the CRD is created or
/// updated; `path` names the schema (`spec.versions[0].schema.openAPIV3Schema`). Empty when
/// the schema is acceptable. CEL rules are not compiled here (see
/// [`crate::validation::Validator::new_at`]).
pub fn check(schema: &Schema, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if schema.nullable {
        errs.push(forbidden(
            &path::child(path, "nullable"),
            "nullable cannot be true at the root",
        ));
    }
    let unconvertible = unsupported(schema).err();
    if unconvertible.is_none() {
        let structural = structural_errors(schema, path);
        if structural.is_empty() {
            errs.extend(crate::defaults::check_defaults(schema, path));
        } else {
            errs.extend(structural);
        }
    }
    let ctx = Ctx {
        allow_defaults: true,
        reason: String::new(),
        inside_meta: false,
    };
    openapi(schema, path, &ctx, true, &mut errs);
    // These repeat what the OpenAPI rules report, so Kubernetes shows them only alone.
    if errs.is_empty() {
        if let Some(msg) = unconvertible {
            errs.push(invalid(path, Value::String(String::new()), msg));
        }
    }
    errs
}

/// The violations behind Kubernetes' `NonStructuralSchema` condition, sorted as Kubernetes
/// sorts them; `Err` with Kubernetes' message when the schema cannot even be read as a
/// structural one (`OpenAPIV3Schema '$ref' is not supported`).
pub fn non_structural(schema: &Schema, path: &str) -> Result<Vec<FieldError>, String> {
    unsupported(schema)?;
    Ok(structural_errors(schema, path))
}

/// What keeps Kubernetes' `NewStructural` from reading the schema.
fn unsupported(s: &Schema) -> Result<(), String> {
    if s.id.as_deref().is_some_and(|x| !x.is_empty()) {
        return Err("OpenAPIV3Schema 'id' is not supported".into());
    }
    if s.schema_uri.as_deref().is_some_and(|x| !x.is_empty()) {
        return Err("OpenAPIV3Schema 'schema' is not supported".into());
    }
    if s.reference.as_deref().is_some_and(|x| !x.is_empty()) {
        return Err("OpenAPIV3Schema '$ref' is not supported".into());
    }
    if non_empty(&s.pattern_properties) {
        return Err("OpenAPIV3Schema 'patternProperties' is not supported".into());
    }
    if non_empty(&s.dependencies) {
        return Err("OpenAPIV3Schema 'dependencies' is not supported".into());
    }
    if s.additional_items.as_ref().is_some_and(|v| !v.is_null()) {
        return Err("OpenAPIV3Schema 'additionalItems' is not supported".into());
    }
    if non_empty(&s.definitions) {
        return Err("OpenAPIV3Schema 'definitions' is not supported".into());
    }
    if let Some(not) = &s.not {
        unsupported(not)?;
    }
    for x in s.all_of.iter().chain(&s.any_of).chain(&s.one_of) {
        unsupported(x)?;
    }
    if s.preserve_unknown_fields == Some(false) {
        return Err(
            "internal error: 'x-kubernetes-preserve-unknown-fields' must be true or undefined"
                .into(),
        );
    }
    match &s.items {
        Some(Items::List(_)) => {
            return Err("OpenAPIV3Schema 'items' must be a schema, but is an array".into())
        }
        Some(Items::Schema(x)) => unsupported(x)?,
        None => {}
    }
    for x in s.properties.values() {
        unsupported(x)?;
    }
    if let Some(Additional::Schema(x)) = &s.additional_properties {
        unsupported(x)?;
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Level {
    Root,
    Item,
    Field,
}

/// Kubernetes' `ValidateStructural`, sorted by message as Kubernetes sorts it.
fn structural_errors(s: &Schema, p: &str) -> Vec<FieldError> {
    let mut out = Vec::new();
    invariants(s, Level::Root, p, &mut out);
    completeness(s, s, p, p, &mut out);
    out.sort_by_key(|e| e.to_string());
    out
}

fn int_or_string_alternatives(list: &[Schema]) -> bool {
    let only = |t: &str| Schema {
        type_: Some(t.to_string()),
        ..Schema::default()
    };
    list.len() == 2 && list[0] == only("integer") && list[1] == only("string")
}

fn invariants(s: &Schema, lvl: Level, p: &str, out: &mut Vec<FieldError>) {
    let ty = type_of(s);
    if ty == "array" && s.items.is_none() {
        out.push(required(&path::child(p, "items"), "must be specified"));
    }
    if let Some(Items::Schema(is)) = &s.items {
        invariants(is, Level::Item, &path::child(p, "items"), out);
    }
    for (k, v) in &s.properties {
        invariants(
            v,
            Level::Field,
            &path::key(&path::child(p, "properties"), k),
            out,
        );
    }
    if let Some(ap) = &s.additional_properties {
        let q = path::child(p, "additionalProperties");
        if lvl == Level::Root {
            out.push(forbidden(&q, "must not be used at the root"));
        }
        if let Additional::Schema(x) = ap {
            invariants(x, Level::Field, &q, out);
        }
    }
    let preserve = s.preserves_unknown();
    if s.int_or_string && preserve {
        out.push(invalid(
            &path::child(p, "x-kubernetes-preserve-unknown-fields"),
            Value::Bool(true),
            "must be false if x-kubernetes-int-or-string is true",
        ));
    }
    if s.int_or_string && s.embedded_resource {
        out.push(invalid(
            &path::child(p, "x-kubernetes-embedded-resource"),
            Value::Bool(true),
            "must be false if x-kubernetes-int-or-string is true",
        ));
    }
    // The two forms of int-or-string where `anyOf` may declare types.
    let skip_any_of = int_or_string_alternatives(&s.any_of);
    let skip_first_all_of = s
        .all_of
        .first()
        .is_some_and(|x| int_or_string_alternatives(&x.any_of));
    value_validation(s, skip_any_of, skip_first_all_of, p, out);

    let check_metadata = lvl == Level::Root || s.embedded_resource;
    if s.embedded_resource && ty != "object" {
        let msg = "must be object if x-kubernetes-embedded-resource is true";
        if ty.is_empty() {
            out.push(required(&path::child(p, "type"), msg));
        } else {
            out.push(invalid(
                &path::child(p, "type"),
                Value::String(ty.into()),
                msg,
            ));
        }
    } else if ty.is_empty() && !s.int_or_string && !preserve {
        let msg = match lvl {
            Level::Root => "must not be empty at the root",
            Level::Item => "must not be empty for specified array items",
            Level::Field => "must not be empty for specified object fields",
        };
        out.push(required(&path::child(p, "type"), msg));
    }
    if s.embedded_resource && s.additional_properties.is_some() {
        out.push(forbidden(
            &path::child(p, "additionalProperties"),
            "must not be used if x-kubernetes-embedded-resource is set",
        ));
    }
    if lvl == Level::Root && !ty.is_empty() && ty != "object" {
        out.push(invalid(
            &path::child(p, "type"),
            Value::String(ty.into()),
            "must be object at the root",
        ));
    }
    for field in ["kind", "apiVersion"] {
        if let (Some(x), true) = (s.properties.get(field), check_metadata) {
            if type_of(x) != "string" {
                out.push(invalid(
                    &path::child(&path::key(&path::child(p, "properties"), field), "type"),
                    Value::String(type_of(x).into()),
                    "must be string",
                ));
            }
        }
    }
    if let Some(m) = s.properties.get("metadata") {
        let q = path::key(&path::child(p, "properties"), "metadata");
        if check_metadata && type_of(m) != "object" {
            out.push(invalid(
                &path::child(&q, "type"),
                Value::String(type_of(m).into()),
                "must be object",
            ));
        }
        if lvl == Level::Root && !names_only(m) {
            out.push(forbidden(
                &q,
                "must not specify anything other than name and generateName, but metadata is implicitly specified",
            ));
        }
    }
    if s.embedded_resource && !preserve && s.properties.is_empty() {
        out.push(required(
            &path::child(p, "properties"),
            "must not be empty if x-kubernetes-embedded-resource is true without x-kubernetes-preserve-unknown-fields",
        ));
    }
}

/// Whether a root `metadata` schema says nothing but its type, a default, and properties
/// `name` and/or `generateName`.
fn names_only(m: &Schema) -> bool {
    let props_ok = m.properties.is_empty()
        || m.properties
            .keys()
            .all(|k| k == "name" || k == "generateName");
    let rest = Schema {
        type_: None,
        default: None,
        properties: BTreeMap::new(),
        ..m.clone()
    };
    props_ok && rest == Schema::default()
}

fn value_validation(
    v: &Schema,
    skip_any_of: bool,
    skip_first_all_of: bool,
    p: &str,
    out: &mut Vec<FieldError>,
) {
    if !skip_any_of {
        for (i, x) in v.any_of.iter().enumerate() {
            nested(x, false, &path::index(&path::child(p, "anyOf"), i), out);
        }
    }
    for (i, x) in v.all_of.iter().enumerate() {
        nested(
            x,
            skip_first_all_of && i == 0,
            &path::index(&path::child(p, "allOf"), i),
            out,
        );
    }
    for (i, x) in v.one_of.iter().enumerate() {
        nested(x, false, &path::index(&path::child(p, "oneOf"), i), out);
    }
    if let Some(not) = &v.not {
        nested(not, false, &path::child(p, "not"), out);
    }
    if let Some(pat) = v.pattern.as_deref().filter(|x| !x.is_empty()) {
        if let Err(e) = crate::pattern::compile(pat) {
            out.push(invalid(
                &path::child(p, "pattern"),
                Value::String(pat.into()),
                format!("must be a valid regular expression, but isn't: {e}"),
            ));
        }
    }
}

/// A schema under `allOf`/`anyOf`/`oneOf`/`not`: value validations only.
fn nested(v: &Schema, skip_any_of: bool, p: &str, out: &mut Vec<FieldError>) {
    value_validation(v, skip_any_of, false, p, out);
    if let Some(Items::Schema(is)) = &v.items {
        nested(is, false, &path::child(p, "items"), out);
    }
    for (k, x) in &v.properties {
        nested(x, false, &path::key(&path::child(p, "properties"), k), out);
    }
    let f = |name: &str| path::child(p, name);
    if !type_of(v).is_empty() {
        out.push(forbidden(&f("type"), "must be empty to be structural"));
    }
    if matches!(
        v.additional_properties,
        Some(Additional::Schema(_)) | Some(Additional::Bool(true))
    ) {
        out.push(forbidden(
            &f("additionalProperties"),
            "must be undefined to be structural",
        ));
    }
    if v.default.is_some() {
        out.push(forbidden(
            &f("default"),
            "must be undefined to be structural",
        ));
    }
    if v.title.as_deref().is_some_and(|x| !x.is_empty()) {
        out.push(forbidden(&f("title"), "must be empty to be structural"));
    }
    if v.description.as_deref().is_some_and(|x| !x.is_empty()) {
        out.push(forbidden(
            &f("description"),
            "must be empty to be structural",
        ));
    }
    if v.nullable {
        out.push(forbidden(&f("nullable"), "must be false to be structural"));
    }
    if v.preserves_unknown() {
        out.push(forbidden(
            &f("x-kubernetes-preserve-unknown-fields"),
            "must be false to be structural",
        ));
    }
    if v.embedded_resource {
        out.push(forbidden(
            &f("x-kubernetes-embedded-resource"),
            "must be false to be structural",
        ));
    }
    if v.int_or_string {
        out.push(forbidden(
            &f("x-kubernetes-int-or-string"),
            "must be false to be structural",
        ));
    }
    if !v.list_map_keys.is_empty() {
        out.push(forbidden(
            &f("x-kubernetes-list-map-keys"),
            "must be empty to be structural",
        ));
    }
    if v.list_type.is_some() {
        out.push(forbidden(
            &f("x-kubernetes-list-type"),
            "must be undefined to be structural",
        ));
    }
    if v.map_type.is_some() {
        out.push(forbidden(
            &f("x-kubernetes-map-type"),
            "must be undefined to be structural",
        ));
    }
    if !v.validations.is_empty() {
        out.push(forbidden(
            &f("x-kubernetes-validations"),
            "must be empty to be structural",
        ));
    }
    if v.properties.contains_key("metadata") {
        out.push(forbidden(
            &path::key(&f("properties"), "metadata"),
            "must not be specified in a nested context",
        ));
    }
}

/// Every property and item a value validation at the root names must exist in the structural
/// part of the schema (Kubernetes checks this for the root's value validations).
fn completeness(v: &Schema, s: &Schema, sp: &str, vp: &str, out: &mut Vec<FieldError>) {
    if let Some(not) = &v.not {
        nested_completeness(not, Some(s), sp, &path::child(vp, "not"), out);
    }
    for (name, list) in [
        ("allOf", &v.all_of),
        ("anyOf", &v.any_of),
        ("oneOf", &v.one_of),
    ] {
        for (i, x) in list.iter().enumerate() {
            nested_completeness(x, Some(s), sp, &path::index(&path::child(vp, name), i), out);
        }
    }
}

fn nested_completeness(
    v: &Schema,
    s: Option<&Schema>,
    sp: &str,
    vp: &str,
    out: &mut Vec<FieldError>,
) {
    let Some(s) = s else {
        out.push(required(sp, format!("because it is defined in {vp}")));
        return;
    };
    completeness(v, s, sp, vp, out);
    if let Some(Items::Schema(vi)) = &v.items {
        nested_completeness(
            vi,
            s.item_schema(),
            &path::child(sp, "items"),
            &path::child(vp, "items"),
            out,
        );
    }
    for (k, vf) in &v.properties {
        let sq = path::key(&path::child(sp, "properties"), k);
        let vq = path::key(&path::child(vp, "properties"), k);
        match s.properties.get(k) {
            Some(sf) => nested_completeness(vf, Some(sf), &sq, &vq, out),
            None => out.push(required(&sq, format!("because it is defined in {vq}"))),
        }
    }
}

#[derive(Clone)]
struct Ctx {
    allow_defaults: bool,
    reason: String,
    inside_meta: bool,
}

impl Ctx {
    fn without_defaults(&self, reason: String) -> Ctx {
        Ctx {
            allow_defaults: false,
            reason,
            inside_meta: self.inside_meta,
        }
    }
}

/// Kubernetes' `ValidateCustomResourceDefinitionOpenAPISchema`, without CEL compilation.
fn openapi(s: &Schema, p: &str, ctx: &Ctx, is_root: bool, out: &mut Vec<FieldError>) {
    let ty = type_of(s);
    let f = |name: &str| path::child(p, name);
    if !ty.is_empty() && !V3_TYPES.contains(&ty) {
        out.push(not_supported(&f("type"), ty, V3_TYPES));
    }
    if s.default.is_some() && !ctx.allow_defaults {
        let mut detail = "must not be set".to_string();
        if !ctx.reason.is_empty() {
            detail.push(' ');
            detail.push_str(&ctx.reason);
        }
        out.push(forbidden(&f("default"), detail));
    }
    if s.id.as_deref().is_some_and(|x| !x.is_empty()) {
        out.push(forbidden(&f("id"), "id is not supported"));
    }
    if s.additional_items.as_ref().is_some_and(|v| !v.is_null()) {
        out.push(forbidden(
            &f("additionalItems"),
            "additionalItems is not supported",
        ));
    }
    if non_empty(&s.pattern_properties) {
        out.push(forbidden(
            &f("patternProperties"),
            "patternProperties is not supported",
        ));
    }
    if non_empty(&s.definitions) {
        out.push(forbidden(&f("definitions"), "definitions is not supported"));
    }
    if s.dependencies.as_ref().is_some_and(|v| !v.is_null()) {
        out.push(forbidden(
            &f("dependencies"),
            "dependencies is not supported",
        ));
    }
    if s.reference.is_some() {
        out.push(forbidden(&f("$ref"), "$ref is not supported"));
    }
    if ty == "null" {
        out.push(forbidden(
            &f("type"),
            "type cannot be set to null, use nullable as an alternative",
        ));
    }
    if let Some(Items::List(_)) = &s.items {
        out.push(forbidden(
            &f("items"),
            "items must be a schema object and not an array",
        ));
    }
    if ctx.inside_meta && s.embedded_resource {
        out.push(forbidden(
            &f("x-kubernetes-embedded-resource"),
            "must not be used inside of resource meta",
        ));
    }
    if s.unique_items {
        out.push(forbidden(
            &f("uniqueItems"),
            "uniqueItems cannot be set to true since the runtime complexity becomes quadratic",
        ));
    }
    if let Some(ap) = &s.additional_properties {
        // Properties are for structs, additionalProperties for maps; Kubernetes' convention of
        // ignoring unknown fields rules out both at once.
        if !s.properties.is_empty() && !matches!(ap, Additional::Bool(true)) {
            out.push(forbidden(
                &f("additionalProperties"),
                "additionalProperties and properties are mutual exclusive",
            ));
        }
        let sub = if ctx.inside_meta {
            ctx.without_defaults("inside additionalProperties applying to object metadata".into())
        } else {
            ctx.clone()
        };
        if let Additional::Schema(x) = ap {
            openapi(x, &f("additionalProperties"), &sub, false, out);
        }
    }
    for (k, x) in &s.properties {
        let mut sub = ctx.clone();
        if (is_root || s.embedded_resource) && META_FIELDS.contains(&k.as_str()) {
            sub.inside_meta = true;
            if is_root {
                sub = sub.without_defaults(format!("in top-level {k}"));
            }
        }
        openapi(x, &path::key(&f("properties"), k), &sub, false, out);
    }
    if let Some(not) = &s.not {
        openapi(not, &f("not"), ctx, false, out);
    }
    for (name, list) in [
        ("allOf", &s.all_of),
        ("oneOf", &s.one_of),
        ("anyOf", &s.any_of),
    ] {
        for (i, x) in list.iter().enumerate() {
            openapi(x, &path::index(&f(name), i), ctx, false, out);
        }
    }
    match &s.items {
        Some(Items::Schema(x)) => openapi(x, &f("items"), ctx, false, out),
        Some(Items::List(xs)) => {
            for (i, x) in xs.iter().enumerate() {
                openapi(x, &path::index(&f("items"), i), ctx, false, out);
            }
        }
        None => {}
    }
    if s.preserve_unknown_fields == Some(false) {
        out.push(invalid(
            &f("x-kubernetes-preserve-unknown-fields"),
            Value::Bool(false),
            "must be true or undefined",
        ));
    }
    if let Some(mt) = &s.map_type {
        if ty != "object" {
            let msg = "must be object if x-kubernetes-map-type is specified";
            if ty.is_empty() {
                out.push(required(&f("type"), msg));
            } else {
                out.push(invalid(&f("type"), Value::String(ty.into()), msg));
            }
        }
        if mt != "atomic" && mt != "granular" {
            out.push(not_supported(
                &f("x-kubernetes-map-type"),
                mt,
                &["atomic", "granular"],
            ));
        }
    }
    list_rules(s, p, out);
    rule_rules(s, p, out);
}

fn list_rules(s: &Schema, p: &str, out: &mut Vec<FieldError>) {
    let ty = type_of(s);
    let f = |name: &str| path::child(p, name);
    let items = s.item_schema();
    if let Some(lt) = &s.list_type {
        if ty != "array" {
            let msg = "must be array if x-kubernetes-list-type is specified";
            if ty.is_empty() {
                out.push(required(&f("type"), msg));
            } else {
                out.push(invalid(&f("type"), Value::String(ty.into()), msg));
            }
        } else if let (Some(is), "set") = (items, lt.as_str()) {
            let msg = "must be atomic as item of a list with x-kubernetes-list-type=set";
            let item_lt = || {
                is.list_type
                    .clone()
                    .map(Value::String)
                    .unwrap_or(Value::Null)
            };
            match type_of(is) {
                "array" if is.list_type.as_deref().is_some_and(|x| x != "atomic") => {
                    out.push(invalid(
                        &path::child(&f("items"), "x-kubernetes-list-type"),
                        item_lt(),
                        msg,
                    ))
                }
                "object" if is.map_type.as_deref() != Some("atomic") => out.push(invalid(
                    &path::child(&f("items"), "x-kubernetes-map-type"),
                    item_lt(),
                    msg,
                )),
                _ => {}
            }
        }
        if !matches!(lt.as_str(), "atomic" | "set" | "map") {
            out.push(not_supported(
                &f("x-kubernetes-list-type"),
                lt,
                &["atomic", "set", "map"],
            ));
        }
    }
    if !s.list_map_keys.is_empty() {
        let msg = "must be map if x-kubernetes-list-map-keys is non-empty";
        match s.list_type.as_deref() {
            None => out.push(required(&f("x-kubernetes-list-type"), msg)),
            Some("map") => {}
            Some(lt) => out.push(invalid(
                &f("x-kubernetes-list-type"),
                Value::String(lt.into()),
                msg,
            )),
        }
    }
    let keys_value = || Value::from(s.list_map_keys.clone());
    if s.list_type.as_deref() == Some("map") {
        if s.list_map_keys.is_empty() {
            out.push(required(
                &f("x-kubernetes-list-map-keys"),
                "must not be empty if x-kubernetes-list-type is map",
            ));
        }
        match &s.items {
            None => out.push(required(
                &f("items"),
                "must have a schema if x-kubernetes-list-type is map",
            )),
            Some(Items::List(_)) => out.push(FieldError::new(
                ErrorKind::Invalid,
                f("items"),
                None,
                "must only have a single schema if x-kubernetes-list-type is map",
            )),
            Some(Items::Schema(is)) if type_of(is) != "object" => out.push(invalid(
                &path::child(&f("items"), "type"),
                Value::String(type_of(is).into()),
                "must be object if parent array's x-kubernetes-list-type is map",
            )),
            Some(Items::Schema(is)) => {
                let mut seen: Vec<&str> = Vec::new();
                for k in &s.list_map_keys {
                    match is.properties.get(k) {
                        Some(ks) if matches!(type_of(ks), "array" | "object") => out.push(invalid(
                            &path::child(
                                &path::key(&path::child(&f("items"), "properties"), k),
                                "type",
                            ),
                            Value::String(type_of(is).into()),
                            "must be a scalar type if parent array's x-kubernetes-list-type is map",
                        )),
                        Some(_) => {}
                        None => out.push(invalid(
                            &f("x-kubernetes-list-map-keys"),
                            keys_value(),
                            "entries must all be names of item properties",
                        )),
                    }
                    if seen.contains(&k.as_str()) {
                        out.push(invalid(
                            &f("x-kubernetes-list-map-keys"),
                            keys_value(),
                            "must not contain duplicate entries",
                        ));
                    }
                    seen.push(k);
                }
            }
        }
    }
    // Items of sets and map lists are never null, and map keys always have a value.
    if let (Some(is), Some(lt @ ("set" | "map"))) = (items, s.list_type.as_deref()) {
        if is.nullable {
            out.push(forbidden(
                &path::child(&f("items"), "nullable"),
                format!("cannot be nullable when x-kubernetes-list-type is {lt}"),
            ));
        }
        if lt == "map" {
            for k in &s.list_map_keys {
                let Some(ks) = is.properties.get(k) else {
                    continue;
                };
                let q = path::key(&path::child(&f("items"), "properties"), k);
                if !is.required.contains(k) && ks.default.is_none() {
                    out.push(required(
                        &path::child(&q, "default"),
                        "this property is in x-kubernetes-list-map-keys, so it must have a default or be a required property",
                    ));
                }
                if ks.nullable {
                    out.push(forbidden(
                        &path::child(&q, "nullable"),
                        "this property is in x-kubernetes-list-map-keys, so it cannot be nullable",
                    ));
                }
            }
        }
    }
}

fn has_newlines(s: &str) -> bool {
    s.contains(['\n', '\r'])
}

/// The parts of `x-kubernetes-validations` Kubernetes checks without compiling CEL.
fn rule_rules(s: &Schema, p: &str, out: &mut Vec<FieldError>) {
    for (i, rule) in s.validations.iter().enumerate() {
        let q = path::index(&path::child(p, "x-kubernetes-validations"), i);
        let f = |name: &str| path::child(&q, name);
        let text = rule.rule.trim();
        let message = rule.message.as_deref().unwrap_or("");
        let trimmed_message = message.trim();
        if text.is_empty() {
            out.push(required(&f("rule"), "rule is not specified"));
        } else if !message.is_empty() && trimmed_message.is_empty() {
            out.push(invalid(
                &f("message"),
                Value::String(message.into()),
                "must be non-empty if specified",
            ));
        } else if has_newlines(trimmed_message) {
            out.push(invalid(
                &f("message"),
                Value::String(message.into()),
                "must not contain line breaks",
            ));
        } else if has_newlines(text) && trimmed_message.is_empty() {
            out.push(required(
                &f("message"),
                "message must be specified if rule contains line breaks",
            ));
        }
        if let Some(me) = rule.message_expression.as_deref() {
            if !me.is_empty() && me.trim().is_empty() {
                out.push(required(
                    &f("messageExpression"),
                    "messageExpression must be non-empty if specified",
                ));
            }
        }
        if let Some(reason) = rule.reason.as_deref() {
            if !RULE_REASONS.contains(&reason) {
                out.push(not_supported(&f("reason"), reason, RULE_REASONS));
            }
        }
        if let Some(fp) = rule.field_path.as_deref() {
            if !fp.is_empty() && fp.trim().is_empty() {
                out.push(invalid(
                    &f("fieldPath"),
                    Value::String(fp.into()),
                    "must be non-empty if specified",
                ));
            }
            if has_newlines(fp) {
                out.push(invalid(
                    &f("fieldPath"),
                    Value::String(fp.into()),
                    "must not contain line breaks",
                ));
            }
            if !fp.is_empty() && unsupported(s).is_ok() && field_path(fp, s).is_err() {
                out.push(invalid(
                    &f("fieldPath"),
                    Value::String(fp.into()),
                    "must be a valid path",
                ));
            }
        }
    }
}

/// A rule's `fieldPath` (`.spec.x`, `.spec['a.b']`, `.labels['k']`) resolved against the
/// node's schema, as Kubernetes' `ValidFieldPath` resolves it: the field path it names
/// (`spec.x`, `labels[k]`) and the schema there.
pub fn field_path<'a>(json_path: &str, schema: &'a Schema) -> Result<(String, &'a Schema), String> {
    let tokens = field_path_tokens(json_path);
    let mut s = schema;
    let mut out = String::new();
    let mut it = tokens.into_iter();
    let step = |s: &'a Schema, out: &mut String, name: &str| -> Result<&'a Schema, String> {
        if !s.properties.is_empty() {
            *out = path::child(out, name);
            s.properties
                .get(name)
                .ok_or_else(|| "does not refer to a valid field".to_string())
        } else if s.additional_properties.is_some() {
            *out = path::key(out, name);
            s.value_schema()
                .ok_or_else(|| "does not refer to a valid field".to_string())
        } else {
            Err("does not refer to a valid field".into())
        }
    };
    while let Some(tok) = it.next() {
        match tok.as_str() {
            "[" => {
                let tok = it.next().ok_or("unexpected end of JSON path")?;
                if tok.len() < 2 || !tok.starts_with('\'') || !tok.ends_with('\'') {
                    return Err(format!("expected single quoted string but got {tok}"));
                }
                let name = unescape_single_quoted(&tok[1..tok.len() - 1])
                    .map_err(|e| format!("invalid string literal: {e}"))?;
                s = step(s, &mut out, &name)?;
                let close = it.next().ok_or("unexpected end of JSON path")?;
                if close != "]" {
                    return Err(format!("expected ] but got {close}"));
                }
            }
            "." => {
                let name = it.next().ok_or("unexpected end of JSON path")?;
                s = step(s, &mut out, &name)?;
            }
            other => return Err(format!("expected [ or . but got: {other}")),
        }
    }
    Ok((out, s))
}

/// Splits at `.`, `[` and `]` (each its own token), keeping `'...'` strings whole.
fn field_path_tokens(s: &str) -> Vec<String> {
    let chars: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '\'' {
            let mut j = i + 1;
            while j < chars.len() && !(chars[j] == '\'' && chars[j - 1] != '\\') {
                j += 1;
            }
            let end = (j + 1).min(chars.len());
            out.push(chars[i..end].iter().collect());
            i = end;
            continue;
        }
        if matches!(chars[i], '.' | '[' | ']') {
            out.push(chars[i].to_string());
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len() && !matches!(chars[i], '.' | '[' | ']') {
            i += 1;
        }
        out.push(chars[start..i].iter().collect());
    }
    out
}

fn unescape_single_quoted(s: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('a') => out.push('\u{7}'),
            Some('b') => out.push('\u{8}'),
            Some('f') => out.push('\u{c}'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some('v') => out.push('\u{b}'),
            Some('\'') => out.push('\''),
            Some('\\') => out.push('\\'),
            Some(other) => return Err(format!("invalid escape char \\{other}")),
            None => out.push('\\'),
        }
    }
    Ok(out)
}

/// The root fields allowed when the status subresource is enabled, in `JSONSchemaProps`
/// order, with the Go names Kubernetes prints.
const STATUS_ROOT_FIELDS: &[(&str, &str, bool)] = &[
    ("id", "ID", false),
    ("$schema", "Schema", false),
    ("$ref", "Ref", false),
    ("description", "Description", true),
    ("type", "Type", true),
    ("format", "Format", true),
    ("title", "Title", true),
    ("default", "Default", false),
    ("maximum", "Maximum", true),
    ("exclusiveMaximum", "ExclusiveMaximum", true),
    ("minimum", "Minimum", true),
    ("exclusiveMinimum", "ExclusiveMinimum", true),
    ("maxLength", "MaxLength", true),
    ("minLength", "MinLength", true),
    ("pattern", "Pattern", true),
    ("maxItems", "MaxItems", true),
    ("minItems", "MinItems", true),
    ("uniqueItems", "UniqueItems", true),
    ("multipleOf", "MultipleOf", true),
    ("enum", "Enum", false),
    ("maxProperties", "MaxProperties", false),
    ("minProperties", "MinProperties", false),
    ("required", "Required", true),
    ("items", "Items", true),
    ("allOf", "AllOf", false),
    ("oneOf", "OneOf", false),
    ("anyOf", "AnyOf", false),
    ("not", "Not", false),
    ("properties", "Properties", true),
    ("additionalProperties", "AdditionalProperties", false),
    ("patternProperties", "PatternProperties", false),
    ("dependencies", "Dependencies", false),
    ("additionalItems", "AdditionalItems", false),
    ("definitions", "Definitions", false),
    ("externalDocs", "ExternalDocs", true),
    ("example", "Example", true),
    ("nullable", "Nullable", false),
    (
        "x-kubernetes-preserve-unknown-fields",
        "XPreserveUnknownFields",
        true,
    ),
    ("x-kubernetes-embedded-resource", "XEmbeddedResource", false),
    ("x-kubernetes-int-or-string", "XIntOrString", false),
    ("x-kubernetes-list-map-keys", "XListMapKeys", false),
    ("x-kubernetes-list-type", "XListType", false),
    ("x-kubernetes-map-type", "XMapType", false),
    ("x-kubernetes-validations", "XValidations", true),
];

/// With the status subresource enabled, Kubernetes allows only some fields at the root of the
/// schema (so that `properties.status` alone validates the status); `raw` is the
/// `openAPIV3Schema` as written, `path` its field path.
pub fn check_status_root(raw: &Value, path: &str) -> Vec<FieldError> {
    let Some(m) = raw.as_object() else {
        return Vec::new();
    };
    let is_zero =
        |v: &Value| matches!(v, Value::Null | Value::Bool(false)) || v.as_str() == Some("");
    for (key, go_name, allowed) in STATUS_ROOT_FIELDS {
        let Some(v) = m.get(*key).filter(|v| !is_zero(v)) else {
            continue;
        };
        if *key == "type" {
            if v.as_str() != Some("object") {
                return vec![invalid(
                    &path::child(path, "type"),
                    v.clone(),
                    "only \"object\" is allowed as the type at the root of the schema if the status subresource is enabled",
                )];
            }
            continue;
        }
        if !allowed {
            let _ = go_name;
            let names: Vec<&str> = STATUS_ROOT_FIELDS
                .iter()
                .filter(|(_, _, ok)| *ok)
                .map(|(_, n, _)| *n)
                .collect();
            return vec![invalid(
                path,
                raw.clone(),
                format!(
                    "only [{}] fields are allowed at the root of the schema if the status subresource is enabled",
                    names.join(" ")
                ),
            )];
        }
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ROOT: &str = "spec.validation.openAPIV3Schema";

    fn errs(v: Value) -> Vec<String> {
        check(&Schema::parse(&v).unwrap(), ROOT)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    fn spec(props: Value) -> Value {
        json!({"type": "object", "properties": {"spec": {"type": "object", "properties": props}}})
    }

    #[test]
    fn a_good_schema_passes() {
        let s = json!({
            "type": "object",
            "description": "A widget",
            "properties": {
                "metadata": {"type": "object", "properties": {"name": {"type": "string", "maxLength": 20}}},
                "spec": {
                    "type": "object",
                    "required": ["size"],
                    "properties": {
                        "size": {"type": "string", "enum": ["small", "large"], "default": "small"},
                        "replicas": {"type": "integer", "minimum": 0, "default": 1},
                        "port": {"x-kubernetes-int-or-string": true,
                                 "anyOf": [{"type": "integer"}, {"type": "string"}]},
                        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                        "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                        "template": {"type": "object", "x-kubernetes-embedded-resource": true,
                                     "x-kubernetes-preserve-unknown-fields": true},
                        "ports": {"type": "array", "x-kubernetes-list-type": "map",
                                  "x-kubernetes-list-map-keys": ["port"],
                                  "items": {"type": "object", "required": ["port"],
                                            "properties": {"port": {"type": "integer"}}}},
                        "tags": {"type": "array", "x-kubernetes-list-type": "set",
                                 "items": {"type": "string"}},
                        "choice": {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "string"}},
                                   "oneOf": [{"required": ["a"]}, {"required": ["b"]}]}
                    },
                    "x-kubernetes-validations": [{"rule": "self.replicas >= 0", "message": "never negative"}]
                },
                "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
            }
        });
        assert_eq!(errs(s), Vec::<String>::new());
    }

    #[test]
    fn types_are_required_except_where_allowed() {
        assert_eq!(
            errs(json!({"properties": {"spec": {"properties": {"a": {}}},
                                       "list": {"type": "array", "items": {}}}})),
            vec![
                "spec.validation.openAPIV3Schema.properties[list].items.type: Required value: must not be empty for specified array items",
                "spec.validation.openAPIV3Schema.properties[spec].properties[a].type: Required value: must not be empty for specified object fields",
                "spec.validation.openAPIV3Schema.properties[spec].type: Required value: must not be empty for specified object fields",
                "spec.validation.openAPIV3Schema.type: Required value: must not be empty at the root",
            ]
        );
        assert_eq!(
            errs(json!({"type": "string"})),
            vec!["spec.validation.openAPIV3Schema.type: Invalid value: \"string\": must be object at the root"]
        );
        assert_eq!(
            errs(spec(json!({"list": {"type": "array"}}))),
            vec!["spec.validation.openAPIV3Schema.properties[spec].properties[list].items: Required value: must be specified"]
        );
        assert_eq!(
            errs(spec(json!({"x": {"type": "thing"}}))),
            vec!["spec.validation.openAPIV3Schema.properties[spec].properties[x].type: Unsupported value: \"thing\": supported values: \"array\", \"boolean\", \"integer\", \"number\", \"object\", \"string\""]
        );
        assert_eq!(
            errs(spec(json!({"x": {"type": "null"}}))),
            vec![
                "spec.validation.openAPIV3Schema.properties[spec].properties[x].type: Unsupported value: \"null\": supported values: \"array\", \"boolean\", \"integer\", \"number\", \"object\", \"string\"",
                "spec.validation.openAPIV3Schema.properties[spec].properties[x].type: Forbidden: type cannot be set to null, use nullable as an alternative"
            ]
        );
    }

    #[test]
    fn unsupported_keywords_are_forbidden() {
        assert_eq!(
            errs(spec(json!({"x": {"$ref": "#/definitions/y"}}))),
            vec!["spec.validation.openAPIV3Schema.properties[spec].properties[x].$ref: Forbidden: $ref is not supported"]
        );
        assert_eq!(
            errs(json!({"type": "object", "definitions": {"a": {"type": "string"}}})),
            vec!["spec.validation.openAPIV3Schema.definitions: Forbidden: definitions is not supported"]
        );
        assert_eq!(
            errs(spec(json!({"x": {"type": "object", "patternProperties": {"^a": {"type": "string"}},
                                    "dependencies": {"a": ["b"]}}}))),
            vec![
                "spec.validation.openAPIV3Schema.properties[spec].properties[x].patternProperties: Forbidden: patternProperties is not supported",
                "spec.validation.openAPIV3Schema.properties[spec].properties[x].dependencies: Forbidden: dependencies is not supported"
            ]
        );
        assert_eq!(
            errs(spec(json!({"x": {"type": "array", "items": [{"type": "string"}], "additionalItems": false}}))),
            vec![
                "spec.validation.openAPIV3Schema.properties[spec].properties[x].additionalItems: Forbidden: additionalItems is not supported",
                "spec.validation.openAPIV3Schema.properties[spec].properties[x].items: Forbidden: items must be a schema object and not an array"
            ]
        );
        assert_eq!(
            errs(spec(json!({"x": {"type": "array", "uniqueItems": true, "items": {"type": "string"}}}))),
            vec!["spec.validation.openAPIV3Schema.properties[spec].properties[x].uniqueItems: Forbidden: uniqueItems cannot be set to true since the runtime complexity becomes quadratic"]
        );
        assert_eq!(
            errs(spec(json!({"x": {"type": "object", "x-kubernetes-preserve-unknown-fields": false}}))),
            vec!["spec.validation.openAPIV3Schema.properties[spec].properties[x].x-kubernetes-preserve-unknown-fields: Invalid value: false: must be true or undefined"]
        );
    }

    #[test]
    fn properties_and_additional_properties() {
        assert_eq!(
            errs(spec(json!({"m": {"type": "object", "properties": {"a": {"type": "string"}},
                                    "additionalProperties": {"type": "string"}}}))),
            vec!["spec.validation.openAPIV3Schema.properties[spec].properties[m].additionalProperties: Forbidden: additionalProperties and properties are mutual exclusive"]
        );
        // `true` beside properties, and `false` alone, are accepted as Kubernetes accepts them.
        assert!(errs(spec(
            json!({"m": {"type": "object", "properties": {"a": {"type": "string"}},
                                        "additionalProperties": true}})
        ))
        .is_empty());
        assert!(errs(spec(
            json!({"m": {"type": "object", "additionalProperties": false}})
        ))
        .is_empty());
        assert_eq!(
            errs(json!({"type": "object", "additionalProperties": {"type": "string"}})),
            vec!["spec.validation.openAPIV3Schema.additionalProperties: Forbidden: must not be used at the root"]
        );
    }

    #[test]
    fn value_validations_must_not_declare_structure() {
        assert_eq!(
            errs(spec(json!({"x": {"type": "string", "anyOf": [
                {"type": "string", "description": "d", "nullable": true, "default": "a",
                 "x-kubernetes-list-type": "atomic"}
            ]}}))),
            vec![
                "spec.validation.openAPIV3Schema.properties[spec].properties[x].anyOf[0].default: Forbidden: must be undefined to be structural",
                "spec.validation.openAPIV3Schema.properties[spec].properties[x].anyOf[0].description: Forbidden: must be empty to be structural",
                "spec.validation.openAPIV3Schema.properties[spec].properties[x].anyOf[0].nullable: Forbidden: must be false to be structural",
                "spec.validation.openAPIV3Schema.properties[spec].properties[x].anyOf[0].type: Forbidden: must be empty to be structural",
                "spec.validation.openAPIV3Schema.properties[spec].properties[x].anyOf[0].x-kubernetes-list-type: Forbidden: must be undefined to be structural",
                // The OpenAPI rules apply under anyOf too.
                "spec.validation.openAPIV3Schema.properties[spec].properties[x].anyOf[0].type: Invalid value: \"string\": must be array if x-kubernetes-list-type is specified",
            ]
        );
        assert_eq!(
            errs(spec(json!({"x": {"type": "object", "allOf": [
                {"properties": {"metadata": {}}, "x-kubernetes-validations": [{"rule": "true"}],
                 "additionalProperties": true}
            ]}}))),
            vec![
                "spec.validation.openAPIV3Schema.properties[spec].properties[x].allOf[0].additionalProperties: Forbidden: must be undefined to be structural",
                "spec.validation.openAPIV3Schema.properties[spec].properties[x].allOf[0].properties[metadata]: Forbidden: must not be specified in a nested context",
                "spec.validation.openAPIV3Schema.properties[spec].properties[x].allOf[0].x-kubernetes-validations: Forbidden: must be empty to be structural",
            ]
        );
        // The two int-or-string forms may name types.
        assert!(errs(spec(
            json!({"p": {"x-kubernetes-int-or-string": true, "allOf": [
                {"anyOf": [{"type": "integer"}, {"type": "string"}]}, {"pattern": "^[0-9a-z]+$"}
            ]}})
        ))
        .is_empty());
        assert_eq!(
            errs(spec(json!({"p": {"x-kubernetes-int-or-string": true, "anyOf": [
                {"type": "integer", "minimum": 1}, {"type": "string"}
            ]}}))),
            vec![
                "spec.validation.openAPIV3Schema.properties[spec].properties[p].anyOf[0].type: Forbidden: must be empty to be structural",
                "spec.validation.openAPIV3Schema.properties[spec].properties[p].anyOf[1].type: Forbidden: must be empty to be structural",
            ]
        );
    }

    #[test]
    fn root_value_validations_need_structural_counterparts() {
        assert_eq!(
            errs(json!({"type": "object", "properties": {"spec": {"type": "object"}},
                        "anyOf": [{"properties": {"spec": {"properties": {"x": {"minLength": 1}}}}},
                                  {"properties": {"other": {}}}]})),
            vec![
                "spec.validation.openAPIV3Schema.properties[other]: Required value: because it is defined in spec.validation.openAPIV3Schema.anyOf[1].properties[other]",
                "spec.validation.openAPIV3Schema.properties[spec].properties[x]: Required value: because it is defined in spec.validation.openAPIV3Schema.anyOf[0].properties[spec].properties[x]",
            ]
        );
    }

    #[test]
    fn root_metadata_is_restricted() {
        assert!(errs(json!({"type": "object", "properties": {"metadata": {"type": "object",
            "properties": {"name": {"type": "string", "pattern": "^a"}, "generateName": {"type": "string"}}}}})).is_empty());
        assert_eq!(
            errs(json!({"type": "object", "properties": {"metadata": {"type": "object",
                "properties": {"labels": {"type": "object"}}}}})),
            vec!["spec.validation.openAPIV3Schema.properties[metadata]: Forbidden: must not specify anything other than name and generateName, but metadata is implicitly specified"]
        );
        assert_eq!(
            errs(json!({"type": "object", "properties": {"metadata": {"type": "object", "description": "x"}}})),
            vec!["spec.validation.openAPIV3Schema.properties[metadata]: Forbidden: must not specify anything other than name and generateName, but metadata is implicitly specified"]
        );
        assert_eq!(
            errs(json!({"type": "object", "properties": {"metadata": {"type": "string"}, "kind": {"type": "integer"}}})),
            vec![
                "spec.validation.openAPIV3Schema.properties[kind].type: Invalid value: \"integer\": must be string",
                "spec.validation.openAPIV3Schema.properties[metadata].type: Invalid value: \"string\": must be object",
            ]
        );
        assert_eq!(
            errs(json!({"type": "object", "properties": {"metadata": {"type": "object",
                "properties": {"name": {"type": "string", "default": "x"}}}}})),
            vec!["spec.validation.openAPIV3Schema.properties[metadata].properties[name].default: Forbidden: must not be set in top-level metadata"]
        );
    }

    #[test]
    fn embedded_resources() {
        assert_eq!(
            errs(spec(json!({"t": {"type": "string", "x-kubernetes-embedded-resource": true}}))),
            vec![
                "spec.validation.openAPIV3Schema.properties[spec].properties[t].properties: Required value: must not be empty if x-kubernetes-embedded-resource is true without x-kubernetes-preserve-unknown-fields",
                "spec.validation.openAPIV3Schema.properties[spec].properties[t].type: Invalid value: \"string\": must be object if x-kubernetes-embedded-resource is true",
            ]
        );
        assert_eq!(
            errs(spec(json!({"t": {"type": "object", "x-kubernetes-embedded-resource": true,
                                   "x-kubernetes-preserve-unknown-fields": true,
                                   "properties": {"metadata": {"type": "object",
                                       "properties": {"labels": {"type": "object",
                                           "x-kubernetes-embedded-resource": true,
                                           "additionalProperties": {"type": "string", "default": "x"}}}}}}}))),
            vec![
                // Structural errors first, sorted; then the OpenAPI rules.
                "spec.validation.openAPIV3Schema.properties[spec].properties[t].properties[metadata].properties[labels].additionalProperties: Forbidden: must not be used if x-kubernetes-embedded-resource is set",
                "spec.validation.openAPIV3Schema.properties[spec].properties[t].properties[metadata].properties[labels].properties: Required value: must not be empty if x-kubernetes-embedded-resource is true without x-kubernetes-preserve-unknown-fields",
                "spec.validation.openAPIV3Schema.properties[spec].properties[t].properties[metadata].properties[labels].x-kubernetes-embedded-resource: Forbidden: must not be used inside of resource meta",
                "spec.validation.openAPIV3Schema.properties[spec].properties[t].properties[metadata].properties[labels].additionalProperties.default: Forbidden: must not be set inside additionalProperties applying to object metadata",
            ]
        );
        assert_eq!(
            errs(spec(json!({"x": {"x-kubernetes-int-or-string": true, "x-kubernetes-embedded-resource": true,
                                   "x-kubernetes-preserve-unknown-fields": true}}))),
            vec![
                "spec.validation.openAPIV3Schema.properties[spec].properties[x].type: Required value: must be object if x-kubernetes-embedded-resource is true",
                "spec.validation.openAPIV3Schema.properties[spec].properties[x].x-kubernetes-embedded-resource: Invalid value: true: must be false if x-kubernetes-int-or-string is true",
                "spec.validation.openAPIV3Schema.properties[spec].properties[x].x-kubernetes-preserve-unknown-fields: Invalid value: true: must be false if x-kubernetes-int-or-string is true",
            ]
        );
    }

    #[test]
    fn list_and_map_types() {
        let p = "spec.validation.openAPIV3Schema.properties[spec].properties[l]";
        assert_eq!(
            errs(spec(json!({"l": {"type": "array", "x-kubernetes-list-type": "map",
                                   "items": {"type": "object", "properties": {"k": {"type": "string"}}}}}))),
            vec![format!("{p}.x-kubernetes-list-map-keys: Required value: must not be empty if x-kubernetes-list-type is map")]
        );
        assert_eq!(
            errs(spec(json!({"l": {"type": "array", "x-kubernetes-list-type": "map",
                                   "x-kubernetes-list-map-keys": ["k", "o", "missing", "k"],
                                   "items": {"type": "object", "required": ["o"], "properties": {
                                       "k": {"type": "string", "nullable": true},
                                       "o": {"type": "object"}}}}}))),
            vec![
                format!("{p}.items.properties[o].type: Invalid value: \"object\": must be a scalar type if parent array's x-kubernetes-list-type is map"),
                format!("{p}.x-kubernetes-list-map-keys: Invalid value: [\"k\",\"o\",\"missing\",\"k\"]: entries must all be names of item properties"),
                format!("{p}.x-kubernetes-list-map-keys: Invalid value: [\"k\",\"o\",\"missing\",\"k\"]: must not contain duplicate entries"),
                format!("{p}.items.properties[k].default: Required value: this property is in x-kubernetes-list-map-keys, so it must have a default or be a required property"),
                format!("{p}.items.properties[k].nullable: Forbidden: this property is in x-kubernetes-list-map-keys, so it cannot be nullable"),
                format!("{p}.items.properties[k].default: Required value: this property is in x-kubernetes-list-map-keys, so it must have a default or be a required property"),
                format!("{p}.items.properties[k].nullable: Forbidden: this property is in x-kubernetes-list-map-keys, so it cannot be nullable"),
            ]
        );
        assert_eq!(
            errs(spec(json!({"l": {"type": "array", "x-kubernetes-list-type": "set",
                                   "items": {"type": "object", "nullable": true}}}))),
            vec![
                format!("{p}.items.x-kubernetes-map-type: Invalid value: null: must be atomic as item of a list with x-kubernetes-list-type=set"),
                format!("{p}.items.nullable: Forbidden: cannot be nullable when x-kubernetes-list-type is set"),
            ]
        );
        assert!(errs(spec(json!({"l": {"type": "array", "x-kubernetes-list-type": "set",
                                       "items": {"type": "object", "x-kubernetes-map-type": "atomic"}}}))).is_empty());
        assert_eq!(
            errs(spec(json!({"l": {"type": "string", "x-kubernetes-list-type": "bag",
                                   "x-kubernetes-list-map-keys": ["a"]}}))),
            vec![
                format!("{p}.type: Invalid value: \"string\": must be array if x-kubernetes-list-type is specified"),
                format!("{p}.x-kubernetes-list-type: Unsupported value: \"bag\": supported values: \"atomic\", \"set\", \"map\""),
                format!("{p}.x-kubernetes-list-type: Invalid value: \"bag\": must be map if x-kubernetes-list-map-keys is non-empty"),
            ]
        );
        assert_eq!(
            errs(spec(json!({"l": {"type": "array", "items": {"type": "string"},
                                   "x-kubernetes-map-type": "loose"}}))),
            vec![
                format!("{p}.type: Invalid value: \"array\": must be object if x-kubernetes-map-type is specified"),
                format!("{p}.x-kubernetes-map-type: Unsupported value: \"loose\": supported values: \"atomic\", \"granular\""),
            ]
        );
    }

    #[test]
    fn defaults_must_validate_and_be_pruned() {
        let p = "spec.validation.openAPIV3Schema.properties[spec].properties";
        assert_eq!(
            errs(spec(json!({"n": {"type": "integer", "default": "x"}}))),
            vec![format!("{p}[n].default: Invalid value: \"string\":  in body must be of type integer: \"string\"")]
        );
        assert_eq!(
            errs(spec(json!({"o": {"type": "object", "properties": {"a": {"type": "string", "maxLength": 1}},
                                   "default": {"a": "long", "b": 1}}}))),
            vec![
                format!("{p}[o].default: Invalid value: {{\"a\":\"long\",\"b\":1}}: must not have unknown fields"),
                format!("{p}[o].default.a: Too long: may not be more than 1 byte"),
            ]
        );
        assert_eq!(
            errs(spec(
                json!({"e": {"type": "string", "enum": ["a"], "default": "b"}})
            )),
            vec![format!(
                "{p}[e].default: Unsupported value: \"b\": supported values: \"a\""
            )]
        );
        // A default needing a missing embedded-resource type is refused.
        assert_eq!(
            errs(spec(
                json!({"t": {"type": "object", "x-kubernetes-embedded-resource": true,
                                   "x-kubernetes-preserve-unknown-fields": true,
                                   "default": {"kind": "Pod"}}})
            )),
            vec![format!("{p}[t].default.apiVersion: Required value")]
        );
        // Defaults inside an embedded resource's metadata must give valid metadata.
        assert_eq!(
            errs(spec(json!({"t": {"type": "object", "x-kubernetes-embedded-resource": true,
                                   "x-kubernetes-preserve-unknown-fields": true,
                                   "properties": {"metadata": {"type": "object", "properties": {
                                       "name": {"type": "string", "default": "a/b"}}}}}}))),
            vec![format!("{p}[t].properties[metadata].properties[name].default: Invalid value: \"a/b\": must result in valid metadata: metadata.name: Invalid value: \"a/b\": may not contain '/'")]
        );
        assert!(errs(spec(
            json!({"n": {"type": "integer", "nullable": true, "default": null}})
        ))
        .is_empty());
        assert!(errs(spec(
            json!({"n": {"type": "integer", "default": 3, "maximum": 5}})
        ))
        .is_empty());
    }

    #[test]
    fn nullable_root_and_bad_patterns() {
        assert_eq!(
            errs(json!({"type": "object", "nullable": true})),
            vec!["spec.validation.openAPIV3Schema.nullable: Forbidden: nullable cannot be true at the root"]
        );
        let e = errs(spec(json!({"s": {"type": "string", "pattern": "(a"}})));
        assert_eq!(e.len(), 1);
        assert!(e[0].starts_with(
            "spec.validation.openAPIV3Schema.properties[spec].properties[s].pattern: Invalid value: \"(a\": must be a valid regular expression, but isn't: error parsing regexp: "
        ), "{}", e[0]);
    }

    #[test]
    fn static_rule_checks() {
        let p = "spec.validation.openAPIV3Schema.properties[spec].x-kubernetes-validations";
        let s = json!({"type": "object", "properties": {"spec": {
            "type": "object",
            "properties": {"a": {"type": "string"}, "m": {"type": "object", "additionalProperties": {"type": "string"}}},
            "x-kubernetes-validations": [
                {"rule": "  "},
                {"rule": "self.a\n == 'x'"},
                {"rule": "true", "message": "two\nlines"},
                {"rule": "true", "reason": "FieldValueWrong"},
                {"rule": "true", "fieldPath": ".b"},
                {"rule": "true", "fieldPath": ".m['any.key']"},
                {"rule": "true", "fieldPath": ".a"},
                {"rule": "true", "messageExpression": " "}
            ]
        }}});
        assert_eq!(
            errs(s),
            vec![
                format!("{p}[0].rule: Required value: rule is not specified"),
                format!("{p}[1].message: Required value: message must be specified if rule contains line breaks"),
                format!("{p}[2].message: Invalid value: \"two\\nlines\": must not contain line breaks"),
                format!("{p}[3].reason: Unsupported value: \"FieldValueWrong\": supported values: \"FieldValueDuplicate\", \"FieldValueForbidden\", \"FieldValueInvalid\", \"FieldValueRequired\""),
                format!("{p}[4].fieldPath: Invalid value: \".b\": must be a valid path"),
                format!("{p}[7].messageExpression: Required value: messageExpression must be non-empty if specified"),
            ]
        );
    }

    #[test]
    fn unreadable_schemas_report_alone() {
        let s = Schema::parse(
            &json!({"type": "object", "properties": {"a": {"type": "string", "$ref": "x"}}}),
        )
        .unwrap();
        assert_eq!(
            non_structural(&s, ROOT),
            Err("OpenAPIV3Schema '$ref' is not supported".into())
        );
        let s = Schema::parse(&json!({"type": "object", "properties": {"a": {}}})).unwrap();
        let e = non_structural(&s, "spec.versions[0].schema.openAPIV3Schema").unwrap();
        assert_eq!(
            e[0].to_string(),
            "spec.versions[0].schema.openAPIV3Schema.properties[a].type: Required value: must not be empty for specified object fields"
        );
    }

    #[test]
    fn rule_field_paths_resolve_against_the_schema() {
        let s = Schema::parse(&json!({"type": "object", "properties": {
            "spec": {"type": "object", "properties": {"a.b": {"type": "string"}, "x": {"type": "integer"}}},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}}
        }}))
        .unwrap();
        assert_eq!(
            field_path(".spec.x", &s).map(|r| r.0),
            Ok("spec.x".to_string())
        );
        assert_eq!(
            field_path(".spec['a.b']", &s).map(|r| r.0),
            Ok("spec.a.b".to_string())
        );
        assert_eq!(
            field_path(".labels['app']", &s).map(|r| r.0),
            Ok("labels[app]".to_string())
        );
        assert_eq!(
            field_path(".spec.y", &s).err(),
            Some("does not refer to a valid field".to_string())
        );
        assert_eq!(
            field_path("spec", &s).err(),
            Some("expected [ or . but got: spec".to_string())
        );
        assert_eq!(
            field_path(".spec[x]", &s).err(),
            Some("expected single quoted string but got x".to_string())
        );
        assert_eq!(
            field_path(".spec.", &s).err(),
            Some("unexpected end of JSON path".to_string())
        );
    }

    #[test]
    fn status_subresource_root_rules() {
        let root = "spec.versions[0].schema.openAPIV3Schema";
        assert!(check_status_root(
            &json!({"type": "object", "description": "d", "properties": {}}),
            root
        )
        .is_empty());
        let e = check_status_root(&json!({"type": "array"}), root);
        assert_eq!(
            e[0].to_string(),
            "spec.versions[0].schema.openAPIV3Schema.type: Invalid value: \"array\": only \"object\" is allowed as the type at the root of the schema if the status subresource is enabled"
        );
        let raw = json!({"type": "object", "anyOf": [{"required": ["spec"]}]});
        let e = check_status_root(&raw, root);
        assert_eq!(e.len(), 1);
        assert!(
            e[0].detail
                .starts_with("only [Description Type Format Title Maximum"),
            "{}",
            e[0].detail
        );
        assert_eq!(e[0].value, Some(raw));
    }
}
