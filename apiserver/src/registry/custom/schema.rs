//! The seam to the structural-schema rules (`skiff_schema`): what the custom resource
//! strategy needs of them, in one place.

use serde_json::Value;
use skiff_schema::{FieldError, Schema};

/// A compiled schema: validation (with its CEL rules), pruning and defaulting of one
/// version's objects.
pub struct Validator(skiff_schema::validation::Validator);

impl Validator {
    /// Compiles `schema`; errors name `path`.
    pub fn new_at(schema: Schema, path: &str) -> Result<Validator, Vec<FieldError>> {
        skiff_schema::validation::Validator::new_at(schema, path).map(Validator)
    }

    /// The schema.
    pub fn schema(&self) -> &Schema {
        self.0.schema()
    }

    /// The problems of an object (`old` on update, for transition rules and ratcheting).
    pub fn validate(&self, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
        self.0.validate(obj, old)
    }

    /// Removes fields the schema does not know, and nulls it does not allow; returns the
    /// paths of the fields removed.
    pub fn prune(&self, obj: &mut Value) -> Vec<String> {
        skiff_schema::prune::prune(self.schema(), obj, true)
    }

    /// Fills in defaults (after pruning, as Kubernetes does), then drops the nulls left on
    /// fields that are not nullable.
    pub fn default(&self, obj: &mut Value) {
        skiff_schema::defaults::default(self.schema(), obj);
        skiff_schema::defaults::prune_nulls(self.schema(), obj);
    }
}

/// What makes a schema unusable for a CustomResourceDefinition: non-structural, invalid
/// OpenAPI, defaults that do not validate.
pub fn structural_problems(schema: &Schema, path: &str) -> Vec<FieldError> {
    skiff_schema::structural::check(schema, path)
}

/// A JSONPath of a printer column or selectable field.
pub type Path = skiff_schema::jsonpath::JsonPath;

/// Parses a JSONPath as printer columns write it.
pub fn parse_path(path: &str) -> Result<Path, String> {
    skiff_schema::jsonpath::parse(path)
}

/// A custom resource's lists, as its schema's `x-kubernetes-list-type` says (atomic when
/// unset, as in Kubernetes).
pub struct SchemaLists(pub Schema);

impl crate::apply::ListTypes for SchemaLists {
    fn list_type(&self, parents: &[String], field: &str) -> crate::apply::ListType {
        use crate::apply::ListType;
        let mut path = parents.to_vec();
        path.push(field.to_string());
        match skiff_schema::listtype::list_type(&self.0, &path) {
            Some(skiff_schema::listtype::ListType::Set) => ListType::Set,
            Some(skiff_schema::listtype::ListType::Map(keys)) => ListType::Map(keys),
            _ => ListType::Atomic,
        }
    }
}
