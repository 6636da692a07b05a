//! The schema tree read from a CRD's `openAPIV3Schema` (Kubernetes' `JSONSchemaProps`), and
//! the structural check that refuses what Kubernetes calls a non-structural schema.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

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
