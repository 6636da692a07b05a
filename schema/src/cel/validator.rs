//! The rules of a whole schema, as Kubernetes' CEL `Validator` holds them: compiled once per
//! CRD version (each node knowing how often it can occur and whether `oldSelf` can be
//! paired there), and run over an object and its old version with one budget.
//!
//! Old values are paired as Kubernetes pairs them: an object's properties and a map's
//! entries by key (unless `x-kubernetes-map-type` is neither `granular` nor `atomic`), the
//! items of an `x-kubernetes-list-type: map` list by their key fields; items of other lists
//! have no old value, so their transition rules do not run.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{Budget, CompileOptions, Rules, TotalCost};
use crate::error::FieldError;
use crate::structural::Schema;

/// The compiled rules of a schema and of every node under it that has some.
#[derive(Debug)]
pub struct SchemaRules {
    rules: Rules,
    all_of: Vec<SchemaRules>,
    properties: BTreeMap<String, SchemaRules>,
    items: Option<Box<SchemaRules>>,
    additional: Option<Box<SchemaRules>>,
    /// The key fields of an `x-kubernetes-list-type: map` list, by which old items pair.
    map_keys: Option<Vec<String>>,
    /// Whether old property and entry values pair with new ones.
    map_correlatable: bool,
}

/// Where the walk over the schema is.
struct At<'a> {
    path: String,
    cardinality: Option<u64>,
    uncorrelatable: Option<String>,
    resource_root: bool,
    total: &'a mut TotalCost,
    errors: &'a mut Vec<FieldError>,
}

impl SchemaRules {
    /// Compiles every `x-kubernetes-validations` of a custom resource's schema; `path` is
    /// the schema's place in the CRD (`spec.versions[0].schema.openAPIV3Schema`). Errors
    /// name each rule's place (`...properties[spec].x-kubernetes-validations[0].rule`),
    /// and the total estimated cost of the CRD's rules is checked too.
    pub fn compile(root: &Schema, path: &str) -> Result<SchemaRules, Vec<FieldError>> {
        let mut total = TotalCost::default();
        let mut errors = Vec::new();
        let mut at = At {
            path: path.to_owned(),
            cardinality: Some(1),
            uncorrelatable: None,
            resource_root: true,
            total: &mut total,
            errors: &mut errors,
        };
        let tree = build(root, root, &mut at);
        errors.extend(total.errors(path));
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(tree.unwrap_or_else(|| empty(root)))
    }

    /// Whether no node has rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
            && self.all_of.is_empty()
            && self.properties.is_empty()
            && self.items.is_none()
            && self.additional.is_none()
    }

    /// Whether any rule uses `oldSelf` (an update must then pass the old object).
    pub fn has_transition_rules(&self) -> bool {
        self.rules.has_transition_rules()
            || self.all_of.iter().any(SchemaRules::has_transition_rules)
            || self
                .properties
                .values()
                .any(SchemaRules::has_transition_rules)
            || self
                .items
                .as_ref()
                .is_some_and(|i| i.has_transition_rules())
            || self
                .additional
                .as_ref()
                .is_some_and(|a| a.has_transition_rules())
    }

    /// Runs every rule on `obj` (and `old`, on an update) with one budget of
    /// [`super::RUNTIME_CEL_COST_BUDGET`]. Errors at the root are at `<nil>`, as Kubernetes
    /// prints a root field path.
    pub fn validate(&self, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
        let mut out = Vec::new();
        self.validate_at("", obj, old, &mut Budget::new(), &mut out);
        out
    }

    /// Runs every rule on `obj`, found at `field` (empty for the root), charging `budget`.
    pub fn validate_at(
        &self,
        field: &str,
        obj: &Value,
        old: Option<&Value>,
        budget: &mut Budget,
        out: &mut Vec<FieldError>,
    ) {
        if obj.is_null() || budget.is_exhausted() {
            return;
        }
        let here = if field.is_empty() { "<nil>" } else { field };
        self.rules.check_with_budget(here, obj, old, budget, out);
        for branch in &self.all_of {
            branch.validate_at(field, obj, old, budget, out);
        }
        let child = |name: &str| {
            if field.is_empty() {
                name.to_owned()
            } else {
                format!("{field}.{name}")
            }
        };
        match obj {
            Value::Array(items) => {
                let Some(item_rules) = &self.items else {
                    return;
                };
                let old_items = old.and_then(Value::as_array);
                for (i, item) in items.iter().enumerate() {
                    if budget.is_exhausted() {
                        return;
                    }
                    let old_item = match (&self.map_keys, old_items) {
                        (Some(keys), Some(olds)) => olds.iter().find(|o| same_keys(keys, item, o)),
                        _ => None,
                    };
                    item_rules.validate_at(&format!("{field}[{i}]"), item, old_item, budget, out);
                }
            }
            Value::Object(map) => {
                let old_map = old
                    .and_then(Value::as_object)
                    .filter(|_| self.map_correlatable);
                if let Some(values) = &self.additional {
                    for (k, v) in map {
                        if budget.is_exhausted() {
                            return;
                        }
                        let old_v = old_map.and_then(|m| m.get(k));
                        values.validate_at(&format!("{field}[{k}]"), v, old_v, budget, out);
                    }
                }
                for (k, v) in map {
                    if budget.is_exhausted() {
                        return;
                    }
                    if let Some(prop) = self.properties.get(k) {
                        let old_v = old_map.and_then(|m| m.get(k));
                        prop.validate_at(&child(k), v, old_v, budget, out);
                    }
                }
            }
            _ => {}
        }
    }
}

/// Whether two items of a map list have the same key fields.
fn same_keys(keys: &[String], a: &Value, b: &Value) -> bool {
    keys.iter().all(|k| a.get(k) == b.get(k))
}

fn empty(node: &Schema) -> SchemaRules {
    SchemaRules {
        rules: Rules::empty(node.type_.clone().unwrap_or_default()),
        all_of: Vec::new(),
        properties: BTreeMap::new(),
        items: None,
        additional: None,
        map_keys: None,
        map_correlatable: true,
    }
}

fn map_correlatable(s: &Schema) -> bool {
    matches!(
        s.map_type.as_deref(),
        None | Some("granular") | Some("atomic")
    )
}

/// The factor by which a node multiplies how often its children occur: `None` for an
/// unbounded list or map.
fn max_elements(s: &Schema) -> Option<u64> {
    match s.type_.as_deref() {
        Some("array") => s.max_items,
        Some("object") if s.additional_properties.is_some() && s.value_schema().is_some() => {
            s.max_properties
        }
        _ => Some(1),
    }
}

/// Compiles the rules found in `validation` (the schema, or an `allOf` branch of it)
/// against the types of `node`; `None` when there are none below.
fn build(validation: &Schema, node: &Schema, at: &mut At<'_>) -> Option<SchemaRules> {
    let opts = CompileOptions {
        resource_root: at.resource_root,
        cardinality: at.cardinality,
        uncorrelatable: at.uncorrelatable.clone(),
    };
    let rules = match Rules::compile_rules(node, &validation.validations, &at.path, &opts) {
        Ok(rules) => {
            at.total.observe(&rules);
            rules
        }
        Err(errs) => {
            at.errors.extend(errs);
            Rules::empty(node.type_.clone().unwrap_or_default())
        }
    };
    let child_cardinality = match (at.cardinality, max_elements(node)) {
        (Some(c), Some(m)) => Some(c.saturating_mul(m)),
        _ => None,
    };
    let descend =
        |v: &Schema, n: &Schema, path: String, uncorrelatable: Option<String>, at: &mut At<'_>| {
            let mut sub = At {
                path,
                cardinality: child_cardinality,
                uncorrelatable: at.uncorrelatable.clone().or(uncorrelatable),
                resource_root: n.embedded_resource,
                total: at.total,
                errors: at.errors,
            };
            build(v, n, &mut sub).map(Box::new)
        };

    let mut properties = BTreeMap::new();
    for (name, vprop) in &validation.properties {
        let Some(nprop) = node.properties.get(name) else {
            continue;
        };
        let forbid = (!map_correlatable(node)).then(|| at.path.clone());
        if let Some(sub) = descend(
            vprop,
            nprop,
            format!("{}.properties[{name}]", at.path),
            forbid,
            at,
        ) {
            properties.insert(name.clone(), *sub);
        }
    }
    let items = match (validation.item_schema(), node.item_schema()) {
        (Some(v), Some(n)) => {
            let forbid = (node.list_type.as_deref() != Some("map")).then(|| at.path.clone());
            descend(v, n, format!("{}.items", at.path), forbid, at)
        }
        _ => None,
    };
    let additional = match (validation.value_schema(), node.value_schema()) {
        (Some(v), Some(n)) => descend(v, n, format!("{}.additionalProperties", at.path), None, at),
        _ => None,
    };
    let mut all_of = Vec::new();
    for (i, branch) in validation.all_of.iter().enumerate() {
        let mut sub = At {
            path: format!("{}.allOf[{i}]", at.path),
            cardinality: at.cardinality,
            uncorrelatable: at.uncorrelatable.clone(),
            resource_root: at.resource_root,
            total: at.total,
            errors: at.errors,
        };
        if let Some(tree) = build(branch, node, &mut sub) {
            all_of.push(tree);
        }
    }
    let tree = SchemaRules {
        rules,
        all_of,
        properties,
        items,
        additional,
        map_keys: (node.list_type.as_deref() == Some("map")).then(|| node.list_map_keys.clone()),
        map_correlatable: map_correlatable(node),
    };
    (!tree.is_empty()).then_some(tree)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn compile(s: Value) -> Result<SchemaRules, Vec<String>> {
        SchemaRules::compile(
            &Schema::parse(&s).unwrap(),
            "spec.validation.openAPIV3Schema",
        )
        .map_err(|errs| {
            errs.iter()
                .map(|e| format!("{}: {}", e.field, e.detail))
                .collect()
        })
    }

    fn fields(errs: &[FieldError]) -> Vec<String> {
        errs.iter()
            .map(|e| format!("{}: {}", e.field, e.detail))
            .collect()
    }

    fn crd_schema() -> Value {
        json!({
            "type": "object",
            "x-kubernetes-validations": [{"rule": "self.metadata.name != 'forbidden'", "message": "forbidden name"}],
            "properties": {
                "spec": {
                    "type": "object",
                    "properties": {
                        "replicas": {"type": "integer", "x-kubernetes-validations": [{"rule": "self >= 0", "message": "must not be negative"}]},
                        "ports": {
                            "type": "array", "maxItems": 10,
                            "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
                            "items": {"type": "object", "required": ["name"], "properties": {
                                "name": {"type": "string", "maxLength": 15},
                                "port": {"type": "integer", "x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "port is immutable"}]},
                            }}
                        },
                        "labels": {"type": "object", "maxProperties": 10, "additionalProperties": {
                            "type": "string", "maxLength": 63,
                            "x-kubernetes-validations": [{"rule": "self != ''", "message": "empty label"}]}},
                    },
                    "allOf": [{"x-kubernetes-validations": [{"rule": "!has(self.replicas) || self.replicas < 100", "message": "too many"}]}]
                }
            }
        })
    }

    #[test]
    fn every_node_is_checked_with_kubernetes_field_paths() {
        let tree = compile(crd_schema()).unwrap();
        assert!(tree.has_transition_rules());
        let obj = json!({
            "apiVersion": "x/v1", "kind": "W", "metadata": {"name": "forbidden"},
            "spec": {"replicas": -1, "ports": [{"name": "a", "port": 1}], "labels": {"app": ""}}
        });
        assert_eq!(
            fields(&tree.validate(&obj, None)),
            vec![
                "<nil>: forbidden name",
                "spec.replicas: must not be negative",
                "spec.labels[app]: empty label",
            ]
        );
    }

    #[test]
    fn old_values_pair_by_key_and_map_list_keys() {
        let tree = compile(crd_schema()).unwrap();
        let obj = |ports: Value| json!({"metadata": {"name": "w"}, "spec": {"ports": ports}});
        let old = obj(json!([{"name": "a", "port": 1}, {"name": "b", "port": 2}]));
        let new = obj(
            json!([{"name": "b", "port": 3}, {"name": "a", "port": 1}, {"name": "c", "port": 9}]),
        );
        assert_eq!(
            fields(&tree.validate(&new, Some(&old))),
            vec!["spec.ports[0].port: port is immutable"]
        );
    }

    #[test]
    fn all_of_rules_apply_to_their_node() {
        let tree = compile(crd_schema()).unwrap();
        let obj = json!({"metadata": {"name": "w"}, "spec": {"replicas": 500}});
        assert_eq!(fields(&tree.validate(&obj, None)), vec!["spec: too many"]);
    }

    #[test]
    fn errors_name_each_rule_and_old_self_under_plain_lists_is_refused() {
        let s = json!({
            "type": "object",
            "properties": {
                "list": {"type": "array", "maxItems": 5, "items": {"type": "string", "maxLength": 5,
                    "x-kubernetes-validations": [{"rule": "self == oldSelf"}]}},
                "bad": {"type": "string", "x-kubernetes-validations": [{"rule": "self.nope()"}]},
            }
        });
        let errs = compile(s).unwrap_err();
        assert_eq!(errs.len(), 2, "{errs:#?}");
        assert!(errs[0].starts_with("spec.validation.openAPIV3Schema.properties[bad].x-kubernetes-validations[0].rule: compilation failed"));
        assert_eq!(
            errs[1],
            "spec.validation.openAPIV3Schema.properties[list].items.x-kubernetes-validations[0].rule: oldSelf cannot be used on the uncorrelatable portion of the schema within spec.validation.openAPIV3Schema.properties[list]"
        );
    }

    #[test]
    fn rules_under_unbounded_lists_cost_more() {
        let rule = json!([{"rule": "self.size() < 100"}]);
        let bounded = json!({"type": "object", "properties": {"l": {"type": "array", "maxItems": 10,
            "items": {"type": "string", "maxLength": 1000, "x-kubernetes-validations": rule}}}});
        assert!(compile(bounded).is_ok());
        let unbounded = json!({"type": "object", "properties": {"l": {"type": "array",
            "items": {"type": "string", "x-kubernetes-validations": [{"rule": "self.matches('^[a-z]+$')"}]}}}});
        let errs = compile(unbounded).unwrap_err();
        assert!(errs[0].contains("properties[l].items.x-kubernetes-validations[0].rule: estimated rule cost exceeds budget"), "{errs:?}");
    }
}
