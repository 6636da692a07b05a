//! Custom resources: the types CustomResourceDefinitions define, served by the generic store
//! like every built-in type. A definition becomes one [`ResourceInfo`] per served version
//! ([`served`]), whose strategy ([`strategy::Custom`]) validates, prunes and defaults objects
//! by the version's structural schema and prints its columns; `crate::crd` keeps what is
//! served in step with the definitions, as kube-apiserver's apiextensions controllers do.

pub mod conversion;
pub mod schema;
pub mod strategy;

use std::sync::Arc;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, CustomResourceDefinitionVersion,
};
use serde_json::Value;

use crate::error::{Cause, CauseKind};
use crate::registry::subresource::{Scale, SelectorForm, STATUS};
use crate::registry::{ApiVersionOnly, ResourceInfo, Shared};

/// The problems of a version's `openAPIV3Schema`, at `path`: what makes it non-structural,
/// and rules that do not compile.
pub fn check_schema(path: &str, schema: &Value) -> Vec<Cause> {
    let parsed = match skiff_schema::Schema::parse(schema) {
        Ok(s) => s,
        Err(e) => {
            return vec![Cause::invalid(
                path,
                &Value::String("object".into()),
                e.to_string(),
            )]
        }
    };
    strategy::schema_problems(&parsed, path)
        .into_iter()
        .map(cause)
        .collect()
}

/// Whether a printer column's JSONPath can be evaluated.
pub fn check_json_path(path: &str) -> Result<(), String> {
    strategy::parse_path(path).map(|_| ())
}

/// A schema error as a `Status` cause.
pub fn cause(e: skiff_schema::FieldError) -> Cause {
    use skiff_schema::ErrorKind as K;
    let kind = match e.kind {
        K::Required => CauseKind::Required,
        K::Invalid | K::TypeInvalid | K::Internal => CauseKind::Invalid,
        K::NotSupported => CauseKind::NotSupported,
        K::Duplicate => CauseKind::Duplicate,
        K::Forbidden => CauseKind::Forbidden,
        K::TooLong => CauseKind::TooLong,
        K::TooMany => CauseKind::TooMany,
    };
    let message = match (&e.value, kind) {
        (_, CauseKind::Required) => e.detail.clone(),
        (Some(v), _) => {
            let v = match v {
                Value::String(s) => format!("\"{s}\""),
                other => other.to_string(),
            };
            if e.detail.is_empty() {
                v
            } else {
                format!("{v}: {}", e.detail)
            }
        }
        (None, _) => e.detail.clone(),
    };
    Cause {
        kind,
        field: e.field,
        message,
    }
}

/// The versions a definition serves, in the order discovery lists them (Kubernetes' version
/// priority: GA before beta before alpha, higher numbers first).
pub fn served_versions(crd: &CustomResourceDefinition) -> Vec<&CustomResourceDefinitionVersion> {
    let mut v: Vec<&CustomResourceDefinitionVersion> =
        crd.spec.versions.iter().filter(|v| v.served).collect();
    v.sort_by_key(|v| std::cmp::Reverse(version_priority(&v.name)));
    v
}

/// Kubernetes' version ordering: `v2` > `v1` > `v1beta2` > `v1beta1` > `v1alpha1` > other
/// names (alphabetically).
fn version_priority(name: &str) -> (u8, u64, u64, std::cmp::Reverse<String>) {
    let parse = || -> Option<(u8, u64, u64)> {
        let rest = name.strip_prefix('v')?;
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let major: u64 = digits.parse().ok()?;
        let rest = &rest[digits.len()..];
        if rest.is_empty() {
            return Some((3, major, 0));
        }
        let (level, n) = if let Some(n) = rest.strip_prefix("beta") {
            (2, n)
        } else if let Some(n) = rest.strip_prefix("alpha") {
            (1, n)
        } else {
            return None;
        };
        Some((level, major, n.parse().ok()?))
    };
    match parse() {
        Some((level, major, minor)) => (level, major, minor, std::cmp::Reverse(String::new())),
        None => (0, 0, 0, std::cmp::Reverse(name.to_string())),
    }
}

/// The warning of a deprecated version with none of its own, as kube-apiserver words it:
/// it names the newest served version that is not deprecated, if one is newer.
fn deprecation_warning(crd: &CustomResourceDefinition, deprecated: &str, kind: &str) -> String {
    let group = &crd.spec.group;
    let mut out = format!("{group}/{deprecated} {kind} is deprecated");
    let newest = crd
        .spec
        .versions
        .iter()
        .filter(|v| v.served && v.deprecated != Some(true))
        .filter(|v| version_priority(&v.name) > version_priority(deprecated))
        .max_by_key(|v| version_priority(&v.name));
    if let Some(v) = newest {
        out.push_str(&format!("; use {group}/{} {kind}", v.name));
    }
    out
}

/// What a definition serves: one resource per served version, sharing the storage directory
/// `GROUP/PLURAL`. Names come from `status.acceptedNames` once accepted. A definition with
/// webhook conversion has its objects converted through `webhooks`.
pub fn served(
    crd: &CustomResourceDefinition,
    webhooks: &Arc<dyn conversion::Caller>,
) -> Vec<ResourceInfo> {
    let spec = &crd.spec;
    let names = crd
        .status
        .as_ref()
        .and_then(|s| s.accepted_names.clone())
        .filter(|n| !n.plural.is_empty())
        .unwrap_or_else(|| spec.names.clone());
    let storage_version = spec
        .versions
        .iter()
        .find(|v| v.storage)
        .map(|v| v.name.clone())
        .unwrap_or_default();
    let hook = spec
        .conversion
        .as_ref()
        .filter(|c| c.strategy == "Webhook")
        .and_then(|c| c.webhook.as_ref())
        .and_then(|w| {
            Some((
                Arc::new(conversion::Hook {
                    definition: crd.metadata.name.clone().unwrap_or_default(),
                    client_config: w.client_config.clone()?,
                }),
                w.conversion_review_versions.clone(),
            ))
        });
    let singular = names
        .singular
        .clone()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| names.kind.to_lowercase());
    served_versions(crd)
        .into_iter()
        .map(|version| {
            let strategy = strategy::Custom::new(version);
            let schema = version
                .schema
                .as_ref()
                .and_then(|s| s.open_api_v3_schema.as_ref())
                .map(crate::validation::val);
            let mut info = ResourceInfo::new(
                &spec.group,
                &version.name,
                &names.kind,
                &names.plural,
                &singular,
                spec.scope == "Namespaced",
                Shared::Owned(Arc::new(strategy)),
            );
            info.short_names = names.short_names.clone().unwrap_or_default();
            info.categories = names.categories.clone().unwrap_or_default();
            info.has_generation = true;
            info.selectable = version
                .selectable_fields
                .iter()
                .flatten()
                .map(|f| f.json_path.trim_start_matches('.').to_string())
                .collect();
            info.json_schema = schema;
            info.storage = format!("{}/{}", spec.group, names.plural);
            info.storage_version_hash = Some(super::storage_version_hash(
                &spec.group,
                &storage_version,
                &names.kind,
            ));
            let stored = format!("{}/{}", spec.group, storage_version);
            let api_version = format!("{}/{}", spec.group, version.name);
            info.convert = Some(match &hook {
                Some((hook, review_versions)) => Shared::Owned(Arc::new(conversion::Webhook::new(
                    webhooks.clone(),
                    hook.clone(),
                    review_versions,
                    names.kind.clone(),
                    stored,
                    api_version,
                ))),
                None => Shared::Owned(Arc::new(ApiVersionOnly::new(stored, api_version))),
            });
            if version.deprecated == Some(true) {
                info.deprecation = Some(
                    version
                        .deprecation_warning
                        .clone()
                        .unwrap_or_else(|| deprecation_warning(crd, &version.name, &names.kind)),
                );
            }
            if let Some(sub) = &version.subresources {
                if sub.status.is_some() {
                    info.subresources
                        .push(("status".into(), Shared::Static(&STATUS)));
                }
                if let Some(scale) = &sub.scale {
                    let pointer = |p: &str| p.replace('.', "/");
                    info.subresources.push((
                        "scale".into(),
                        Shared::Owned(Arc::new(Scale {
                            spec_replicas: pointer(&scale.spec_replicas_path).into(),
                            status_replicas: pointer(&scale.status_replicas_path).into(),
                            selector: scale
                                .label_selector_path
                                .as_deref()
                                .map(pointer)
                                .unwrap_or_default()
                                .into(),
                            selector_form: SelectorForm::Text,
                        })),
                    ));
                }
            }
            info
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crd(versions: &[(&str, bool, bool)]) -> CustomResourceDefinition {
        let versions: Vec<Value> = versions
            .iter()
            .map(|(name, served, deprecated)| {
                serde_json::json!({
                    "name": name, "served": served, "storage": false, "deprecated": deprecated,
                })
            })
            .collect();
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "widgets.example.com"},
            "spec": {
                "group": "example.com",
                "scope": "Namespaced",
                "names": {"plural": "widgets", "kind": "Widget"},
                "versions": versions,
            },
        }))
        .expect("a definition")
    }

    #[test]
    fn deprecated_versions_point_at_the_newest_served_one() {
        let c = crd(&[
            ("v1alpha1", true, true),
            ("v1beta1", true, true),
            ("v1", true, false),
            ("v2", false, false),
        ]);
        assert_eq!(
            deprecation_warning(&c, "v1alpha1", "Widget"),
            "example.com/v1alpha1 Widget is deprecated; use example.com/v1 Widget"
        );
        // Nothing newer than it that is served and not deprecated: the bare warning.
        let c = crd(&[("v1", true, true), ("v1beta1", true, false)]);
        assert_eq!(
            deprecation_warning(&c, "v1", "Widget"),
            "example.com/v1 Widget is deprecated"
        );
    }

    #[test]
    fn versions_sort_as_kubernetes_sorts_them() {
        let mut v = vec![
            "v1alpha1", "foo", "v1", "v2beta1", "v1beta2", "v2", "bar", "v1beta1",
        ];
        v.sort_by_key(|v| std::cmp::Reverse(version_priority(v)));
        assert_eq!(
            v,
            ["v2", "v1", "v2beta1", "v1beta2", "v1beta1", "v1alpha1", "bar", "foo"]
        );
    }
}
