//! Type checking of a policy's expressions against the kinds it matches, for
//! `status.typeChecking.expressionWarnings`, as Kubernetes' `TypeChecker` does it: for each
//! kind the `matchConstraints.resourceRules` name without wildcards (at most 10), `object`
//! and `oldObject` typed by the kind's schema and `params` by the paramKind's, every
//! `spec.validations[i].expression` and `messageExpression` is compiled again; what does not
//! check is a warning naming the kind (`apps/v1, Kind=Deployment: ERROR: <input>:1:8:
//! undefined field 'replicsa'`). Warnings never change what the policy does.
//!
//! The schemas are those the server publishes in its OpenAPI documents: k8s-openapi's for
//! built-in kinds, a CustomResourceDefinition's structural schema (with the object metadata
//! every kind has) for custom ones.

use std::collections::BTreeSet;

use serde_json::{json, Map, Value};
use skiff_schema::cel::InputType;
use skiff_schema::Schema;

use super::compile::env_with;
use crate::registry::{Objects, ResourceInfo};

/// The most kinds one policy is checked against.
const MAX_TYPES_TO_CHECK: usize = 10;

/// A group, version and kind.
pub type Gvk = (String, String, String);

/// One warning: where (`spec.validations[0].expression`) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// `fieldRef`.
    pub field_ref: String,
    /// `warning`.
    pub warning: String,
}

/// Where the types come from.
pub trait Schemas {
    /// The kinds `group/version` `resource` holds.
    fn kinds_for(&self, group: &str, version: &str, resource: &str) -> Vec<Gvk>;
    /// The schema of a kind, as CEL sees an object of it; `None` when unknown.
    fn schema(&self, gvk: &Gvk) -> Option<Schema>;
}

fn gvk_string((g, v, k): &Gvk) -> String {
    format!("{g}/{v}, Kind={k}")
}

/// The kinds to check `spec` against (Kubernetes' `typesToCheck`): rules with a wildcard
/// group or version are skipped, as are wildcard resources and subresources.
fn types_to_check(spec: &Value, schemas: &dyn Schemas) -> Vec<Gvk> {
    let mut out = BTreeSet::new();
    let strings = |r: &Value, f: &str| -> Vec<String> {
        r.get(f)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let rules = spec
        .pointer("/matchConstraints/resourceRules")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for rule in &rules {
        let mut groups = strings(rule, "apiGroups");
        let mut versions = strings(rule, "apiVersions");
        if groups.iter().chain(&versions).any(|s| s.contains('*')) {
            continue;
        }
        let mut resources: Vec<String> = strings(rule, "resources")
            .into_iter()
            .filter(|r| !r.contains(['*', '/']))
            .collect();
        groups.sort();
        versions.sort();
        resources.sort();
        for g in &groups {
            for v in &versions {
                for r in &resources {
                    for gvk in schemas.kinds_for(g, v, r) {
                        out.insert(gvk);
                        if out.len() == MAX_TYPES_TO_CHECK {
                            return out.into_iter().collect();
                        }
                    }
                }
            }
        }
    }
    out.into_iter().collect()
}

/// The warnings for the policy whose spec is `spec`.
pub fn check(spec: &Value, schemas: &dyn Schemas) -> Vec<Warning> {
    let kinds: Vec<(Gvk, Schema)> = types_to_check(spec, schemas)
        .into_iter()
        .filter_map(|gvk| schemas.schema(&gvk).map(|s| (gvk, s)))
        .collect();
    if kinds.is_empty() {
        return Vec::new();
    }
    let params = spec.get("paramKind").map(|pk| {
        let api_version = pk.get("apiVersion").and_then(Value::as_str).unwrap_or("");
        let (g, v) = api_version.split_once('/').unwrap_or(("", api_version));
        let kind = pk.get("kind").and_then(Value::as_str).unwrap_or("");
        match schemas.schema(&(g.to_owned(), v.to_owned(), kind.to_owned())) {
            Some(s) => InputType::Schema(Box::new(s)),
            None => InputType::Dyn,
        }
    });
    let envs: Vec<(&Gvk, skiff_schema::cel::Env)> = kinds
        .iter()
        .map(|(gvk, schema)| {
            let mut env = env_with(InputType::Schema(Box::new(schema.clone())), params.clone());
            for var in spec
                .get("variables")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let name = var.get("name").and_then(Value::as_str).unwrap_or("");
                let source = var.get("expression").and_then(Value::as_str).unwrap_or("");
                let compiled = env.compile(source).ok();
                env.add_variable(name, compiled.as_ref());
            }
            (gvk, env)
        })
        .collect();
    let check_one = |source: &str| -> Option<String> {
        let results: Vec<String> = envs
            .iter()
            .filter_map(|(gvk, env)| {
                env.compile(source)
                    .err()
                    .map(|issues| format!("{}: {issues}\n", gvk_string(gvk)))
            })
            .collect();
        (!results.is_empty()).then(|| results.join("\n"))
    };
    let mut warnings = Vec::new();
    for (i, v) in spec
        .get("validations")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        for field in ["expression", "messageExpression"] {
            let Some(source) = v
                .get(field)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
            else {
                continue;
            };
            if let Some(warning) = check_one(source) {
                warnings.push(Warning {
                    field_ref: format!("spec.validations[{i}].{field}"),
                    warning,
                });
            }
        }
    }
    warnings
}

/// The types of the kinds a server serves.
pub struct Served<'a>(pub &'a dyn Objects);

impl Schemas for Served<'_> {
    fn kinds_for(&self, group: &str, version: &str, resource: &str) -> Vec<Gvk> {
        self.0
            .resource(group, version, resource)
            .map(|r| vec![(r.group.clone(), r.version.clone(), r.kind.clone())])
            .unwrap_or_default()
    }

    fn schema(&self, (g, v, k): &Gvk) -> Option<Schema> {
        let r = self.0.resources().into_iter().find(|r| {
            r.group == *g && r.version == *v && r.kind == *k && r.create_only.is_none()
        })?;
        schema_of(&r)
    }
}

/// A resource's schema as one self-contained JSON schema: built-in kinds from their OpenAPI
/// definitions, references inlined; custom kinds from their definition's schema, with the
/// object metadata added.
pub fn schema_of(r: &ResourceInfo) -> Option<Schema> {
    let mut generator = schemars::generate::SchemaSettings::openapi3().into_generator();
    let root = match (r.schema, &r.json_schema) {
        (Some(schema_fn), _) => serde_json::to_value(schema_fn(&mut generator)).ok()?,
        (None, Some(custom)) => {
            let meta = generator
                .subschema_for::<k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>();
            let mut s = custom.clone();
            let props = s
                .as_object_mut()?
                .entry("properties")
                .or_insert_with(|| json!({}));
            let props = props.as_object_mut()?;
            props.insert("metadata".to_owned(), serde_json::to_value(meta).ok()?);
            props
                .entry("apiVersion")
                .or_insert_with(|| json!({"type": "string"}));
            props
                .entry("kind")
                .or_insert_with(|| json!({"type": "string"}));
            s
        }
        (None, None) => return None,
    };
    let defs = serde_json::to_value(generator.take_definitions(true)).ok()?;
    let defs = defs.as_object().cloned().unwrap_or_default();
    let inlined = inline(&root, &defs, 0);
    Schema::parse(&inlined).ok()
}

/// How deep references are followed; below, a value is of any type (recursive types).
const MAX_DEPTH: usize = 24;

/// `v` with every `$ref` (and `allOf: [{$ref}]`) replaced by the definition it names.
fn inline(v: &Value, defs: &Map<String, Value>, depth: usize) -> Value {
    let Value::Object(m) = v else {
        return v.clone();
    };
    if depth > MAX_DEPTH {
        return json!({"x-kubernetes-preserve-unknown-fields": true});
    }
    let target = m.get("$ref").and_then(Value::as_str).or_else(|| {
        match m.get("allOf").and_then(Value::as_array).map(Vec::as_slice) {
            Some([one]) => one.get("$ref").and_then(Value::as_str),
            _ => None,
        }
    });
    if let Some(target) = target {
        let name = target.rsplit('/').next().unwrap_or("");
        let mut resolved = match defs.get(name) {
            Some(d) => inline(d, defs, depth + 1),
            None => json!({"x-kubernetes-preserve-unknown-fields": true}),
        };
        if m.get("nullable") == Some(&Value::Bool(true)) {
            resolved["nullable"] = Value::Bool(true);
        }
        return resolved;
    }
    let mut out = Map::new();
    for (k, child) in m {
        let child = match k.as_str() {
            "properties" | "patternProperties" => match child {
                Value::Object(props) => Value::Object(
                    props
                        .iter()
                        .map(|(name, s)| (name.clone(), inline(s, defs, depth + 1)))
                        .collect(),
                ),
                other => other.clone(),
            },
            "items" | "additionalProperties" | "not" => inline(child, defs, depth + 1),
            "allOf" | "anyOf" | "oneOf" => match child {
                Value::Array(a) => {
                    Value::Array(a.iter().map(|s| inline(s, defs, depth + 1)).collect())
                }
                other => other.clone(),
            },
            "description" => continue,
            _ => child.clone(),
        };
        out.insert(k.clone(), child);
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::builtin;

    struct Builtins;

    impl Schemas for Builtins {
        fn kinds_for(&self, group: &str, version: &str, resource: &str) -> Vec<Gvk> {
            builtin(group, resource)
                .filter(|r| r.version == version)
                .map(|r| vec![(r.group.clone(), r.version.clone(), r.kind.clone())])
                .unwrap_or_default()
        }
        fn schema(&self, (g, _, k): &Gvk) -> Option<Schema> {
            let plural = match k.as_str() {
                "Deployment" => "deployments",
                "Pod" => "pods",
                "ConfigMap" => "configmaps",
                _ => return None,
            };
            schema_of(&*builtin(g, plural)?)
        }
    }

    #[test]
    fn warns_about_what_does_not_fit_the_matched_kinds() {
        let spec = json!({
            "paramKind": {"apiVersion": "v1", "kind": "ConfigMap"},
            "matchConstraints": {"resourceRules": [
                {"apiGroups": ["apps"], "apiVersions": ["v1"], "operations": ["CREATE"],
                 "resources": ["deployments", "deployments/scale"]},
                {"apiGroups": ["*"], "apiVersions": ["v1"], "operations": ["CREATE"],
                 "resources": ["pods"]},
            ]},
            "variables": [{"name": "replicas", "expression": "object.spec.replicas"}],
            "validations": [
                {"expression": "object.spec.replicas <= int(params.data.max)"},
                {"expression": "object.spec.replicsa > 1",
                 "messageExpression": "'x' + object.metadata.name"},
                {"expression": "variables.replicas == 'three'"},
                {"expression": "params.nosuch == 1"},
                {"expression": "object.metadata.labels.app == 'x' && object.spec.template.spec.containers.all(c, c.image != '')"},
            ],
        });
        let w = check(&spec, &Builtins);
        let refs: Vec<&str> = w.iter().map(|w| w.field_ref.as_str()).collect();
        assert_eq!(
            refs,
            vec![
                "spec.validations[1].expression",
                "spec.validations[2].expression",
                "spec.validations[3].expression"
            ],
            "{w:#?}"
        );
        assert!(
            w[0].warning.starts_with(
                "apps/v1, Kind=Deployment: ERROR: <input>:1:12: undefined field 'replicsa'"
            ),
            "{}",
            w[0].warning
        );
        assert!(
            w[1].warning
                .contains("found no matching overload for '_==_'"),
            "{}",
            w[1].warning
        );
        assert!(
            w[2].warning.contains("undefined field 'nosuch'"),
            "{}",
            w[2].warning
        );
    }

    #[test]
    fn wildcards_and_unknown_kinds_are_not_checked() {
        let spec = json!({
            "matchConstraints": {"resourceRules": [
                {"apiGroups": ["*"], "apiVersions": ["*"], "operations": ["*"], "resources": ["*"]},
                {"apiGroups": ["example.com"], "apiVersions": ["v1"], "operations": ["*"], "resources": ["widgets"]},
            ]},
            "validations": [{"expression": "object.nosuch == 1"}],
        });
        assert!(check(&spec, &Builtins).is_empty());
    }
}
