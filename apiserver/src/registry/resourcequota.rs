//! ResourceQuotas (core/v1): hard limits on what a namespace may hold. Users write `spec`;
//! `status` (what is enforced and what is used) belongs to the quota controller and to the
//! `ResourceQuota` admission, which charges writes to it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ResourceQuota, ResourceQuotaSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as Wire;
use serde_json::{json, Value};
use skiff_rules::quota::scope;
use skiff_rules::Quantity;

use super::{clear_status, col, Builtin, Column, Typed};
use crate::error::{Cause, CauseKind};
use crate::validation as v;

/// The resourcequotas resource.
pub static INFO: Builtin = Builtin {
    group: "",
    version: "v1",
    kind: "ResourceQuota",
    plural: "resourcequotas",
    singular: "resourcequota",
    short_names: &["quota"],
    categories: &[],
    namespaced: true,
    subresources: &[("status", &super::subresource::STATUS)],
    selectable: &[],
    has_generation: false,
    strategy: &STRATEGY,
    schema: super::schema_of::<ResourceQuota>,
};

static STRATEGY: Typed<ResourceQuota> = Typed {
    status: true,
    validate,
    validate_update,
    prepare_create: clear_status,
    ..Typed::new(columns, cells)
};

/// Names a quota may limit without a `/` (besides hugepages).
const STANDARD_QUOTA: &[&str] = &[
    "cpu",
    "memory",
    "ephemeral-storage",
    "requests.cpu",
    "requests.memory",
    "requests.storage",
    "requests.ephemeral-storage",
    "limits.cpu",
    "limits.memory",
    "limits.ephemeral-storage",
    "pods",
    "resourcequotas",
    "services",
    "replicationcontrollers",
    "secrets",
    "persistentvolumeclaims",
    "configmaps",
    "services.nodeports",
    "services.loadbalancers",
];

/// Names counted in whole units.
const INTEGER: &[&str] = &[
    "pods",
    "resourcequotas",
    "services",
    "replicationcontrollers",
    "secrets",
    "configmaps",
    "persistentvolumeclaims",
    "services.nodeports",
    "services.loadbalancers",
];

const SCOPES: &[&str] = &[
    scope::TERMINATING,
    scope::NOT_TERMINATING,
    scope::BEST_EFFORT,
    scope::NOT_BEST_EFFORT,
    scope::PRIORITY_CLASS,
    scope::CROSS_NAMESPACE_POD_AFFINITY,
];

fn is_hugepages(name: &str) -> bool {
    name.starts_with("hugepages-") || name.starts_with("requests.hugepages-")
}

/// A standard resource name (`storage` too, which quotas may not limit).
pub fn is_standard_resource(name: &str) -> bool {
    STANDARD_QUOTA.contains(&name) || name == "storage" || is_hugepages(name)
}

/// Whether a name is native to Kubernetes (no `/`, or in `kubernetes.io/`).
pub fn is_native(name: &str) -> bool {
    !name.contains('/') || name.contains("kubernetes.io/")
}

/// An extended resource name (`example.com/gpu`, not `requests.`-prefixed).
pub fn is_extended(name: &str) -> bool {
    !is_native(name) && !name.starts_with("requests.")
}

fn is_integer(name: &str) -> bool {
    INTEGER.contains(&name) || is_extended(name)
}

/// A resource name: qualified, and standard unless it has a prefix.
pub fn resource_name(field: &str, name: &str, out: &mut Vec<Cause>) -> bool {
    let before = out.len();
    v::qualified_name(field, name, out);
    if out.len() > before {
        return false;
    }
    if !name.contains('/') && !is_standard_resource(name) {
        out.push(Cause::invalid(
            field,
            &json!(name),
            "must be a standard resource type or fully qualified",
        ));
        return false;
    }
    true
}

fn quota_resource_name(field: &str, name: &str, out: &mut Vec<Cause>) {
    resource_name(field, name, out);
    if !name.contains('/') && !STANDARD_QUOTA.contains(&name) && !is_hugepages(name) {
        out.push(Cause::invalid(
            field,
            &json!(name),
            "must be a standard resource for quota",
        ));
    }
}

fn quantity_value(field: &str, name: &str, q: &Wire, out: &mut Vec<Cause>) {
    let Ok(value) = Quantity::try_from(q) else {
        // Decoding already refused malformed quantities.
        return;
    };
    if value.signum() < 0 {
        out.push(Cause::invalid(
            field,
            &json!(value.to_string()),
            "must be greater than or equal to 0",
        ));
    }
    if is_integer(name) && value.milli_value() % 1000 != 0 {
        out.push(Cause::invalid(field, &json!(q.0), "must be an integer"));
    }
}

fn resource_list(field: &str, list: Option<&BTreeMap<String, Wire>>, out: &mut Vec<Cause>) {
    for (k, q) in list.into_iter().flatten() {
        let f = format!("{field}[{k}]");
        quota_resource_name(&f, k, out);
        quantity_value(&f, k, q, out);
    }
}

/// Whether a scope may limit a resource: pod scopes limit pod counts and compute resources,
/// `BestEffort` pod counts only.
fn scope_valid_for(scope: &str, resource: &str) -> bool {
    const COMPUTE: &[&str] = &[
        "cpu",
        "memory",
        "limits.cpu",
        "limits.memory",
        "requests.cpu",
        "requests.memory",
    ];
    match scope {
        scope::TERMINATING
        | scope::NOT_TERMINATING
        | scope::NOT_BEST_EFFORT
        | scope::PRIORITY_CLASS
        | scope::CROSS_NAMESPACE_POD_AFFINITY => resource == "pods" || COMPUTE.contains(&resource),
        scope::BEST_EFFORT => resource == "pods",
        _ => true,
    }
}

fn is_standard_quota_name(name: &str) -> bool {
    STANDARD_QUOTA.contains(&name) || is_hugepages(name)
}

/// An `Invalid value: <Go rendering>: detail` cause, for values Kubernetes prints as Go
/// values (lists of scopes).
fn invalid_raw(field: &str, rendered: String, detail: &str) -> Cause {
    Cause {
        kind: CauseKind::Invalid,
        field: field.into(),
        message: format!("{rendered}: {detail}"),
    }
}

fn go_list(type_name: &str, items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("{s:?}")).collect();
    format!("[]{type_name}{{{}}}", quoted.join(", "))
}

fn conflicting(set: &std::collections::BTreeSet<&str>) -> bool {
    (set.contains(scope::BEST_EFFORT) && set.contains(scope::NOT_BEST_EFFORT))
        || (set.contains(scope::TERMINATING) && set.contains(scope::NOT_TERMINATING))
}

fn validate_spec(spec: &ResourceQuotaSpec, out: &mut Vec<Cause>) {
    resource_list("spec.hard", spec.hard.as_ref(), out);
    let hard: Vec<&str> = spec
        .hard
        .iter()
        .flatten()
        .map(|(k, _)| k.as_str())
        .collect();
    let scopes = spec.scopes.clone().unwrap_or_default();
    if !scopes.is_empty() {
        let rendered = go_list("core.ResourceQuotaScope", &scopes);
        let mut set = std::collections::BTreeSet::new();
        for s in &scopes {
            if !SCOPES.contains(&s.as_str()) {
                out.push(invalid_raw(
                    "spec.scopes",
                    rendered.clone(),
                    "unsupported scope",
                ));
            }
            for k in &hard {
                if is_standard_quota_name(k) && !scope_valid_for(s, k) {
                    out.push(invalid_raw(
                        "spec.scopes",
                        rendered.clone(),
                        "unsupported scope applied to resource",
                    ));
                }
            }
            set.insert(s.as_str());
        }
        if conflicting(&set) {
            out.push(invalid_raw("spec.scopes", rendered, "conflicting scopes"));
        }
    }
    let Some(sel) = &spec.scope_selector else {
        return;
    };
    let f = "spec.scopeSelector.matchExpressions";
    let exprs = sel.match_expressions.clone().unwrap_or_default();
    let mut set = std::collections::BTreeSet::new();
    for e in &exprs {
        if !SCOPES.contains(&e.scope_name.as_str()) {
            out.push(Cause::invalid(
                format!("{f}.scopeName"),
                &json!(e.scope_name),
                "unsupported scope",
            ));
        }
        for k in &hard {
            if is_standard_quota_name(k) && !scope_valid_for(&e.scope_name, k) {
                out.push(Cause::invalid(
                    f,
                    &json!(e.scope_name),
                    "unsupported scope applied to resource",
                ));
            }
        }
        if matches!(
            e.scope_name.as_str(),
            scope::BEST_EFFORT
                | scope::NOT_BEST_EFFORT
                | scope::TERMINATING
                | scope::NOT_TERMINATING
        ) && e.operator != "Exists"
        {
            out.push(Cause::invalid(
                format!("{f}.operator"),
                &json!(e.operator),
                "must be 'Exist' only operator when scope is any of ResourceQuotaScopeTerminating, ResourceQuotaScopeNotTerminating, ResourceQuotaScopeBestEffort and ResourceQuotaScopeNotBestEffort",
            ));
        }
        let values = e.values.as_ref().map_or(0, Vec::len);
        match e.operator.as_str() {
            "In" | "NotIn" => {
                if values == 0 {
                    out.push(Cause {
                        kind: CauseKind::Required,
                        field: format!("{f}.values"),
                        message: "must be at least one value when `operator` is 'In' or 'NotIn' for scope selector".into(),
                    });
                }
            }
            "Exists" | "DoesNotExist" => {
                if values != 0 {
                    out.push(invalid_raw(
                        &format!("{f}.values"),
                        go_list("string", e.values.as_deref().unwrap_or(&[])),
                        "must be no value when `operator` is 'Exist' or 'DoesNotExist' for scope selector",
                    ));
                }
            }
            _ => out.push(Cause::invalid(
                format!("{f}.operator"),
                &json!(e.operator),
                "not a valid selector operator",
            )),
        }
        set.insert(e.scope_name.as_str());
    }
    if conflicting(&set) {
        out.push(invalid_raw(
            f,
            go_list("core.ResourceQuotaScope", &scopes),
            "conflicting scopes",
        ));
    }
}

fn validate(q: &ResourceQuota) -> Vec<Cause> {
    let mut out = Vec::new();
    if let Some(spec) = &q.spec {
        validate_spec(spec, &mut out);
    }
    if let Some(status) = &q.status {
        resource_list("status.hard", status.hard.as_ref(), &mut out);
        resource_list("status.used", status.used.as_ref(), &mut out);
    }
    out
}

fn validate_update(new: &ResourceQuota, old: &ResourceQuota) -> Vec<Cause> {
    let scopes = |q: &ResourceQuota| -> std::collections::BTreeSet<String> {
        q.spec
            .as_ref()
            .and_then(|s| s.scopes.clone())
            .unwrap_or_default()
            .into_iter()
            .collect()
    };
    if scopes(new) != scopes(old) {
        let list = new
            .spec
            .as_ref()
            .and_then(|s| s.scopes.clone())
            .unwrap_or_default();
        return vec![invalid_raw(
            "spec.scopes",
            go_list("core.ResourceQuotaScope", &list),
            "field is immutable",
        )];
    }
    Vec::new()
}

fn columns() -> Vec<Column> {
    vec![
        col("Name", "string", 0, "Name must be unique within a namespace."),
        col("Age", "string", 0, "CreationTimestamp is a timestamp representing the server time when this object was created."),
        col("Request", "string", 0, "Request represents a minimum amount of cpu/memory that a container may consume."),
        col("Limit", "string", 0, "Limits control the maximum amount of cpu/memory that a container may use independent of contention on the node."),
    ]
}

/// A quantity as Kubernetes prints it (its canonical form), or as stored if malformed.
fn canonical(v: Option<&Value>) -> String {
    match v.and_then(Value::as_str) {
        Some(s) => s
            .parse::<Quantity>()
            .map(|q| q.to_string())
            .unwrap_or_else(|_| s.to_string()),
        None => "0".into(),
    }
}

/// `requests.cpu: 500m/1, pods: 2/10` and `limits.cpu: 1/2`: each enforced resource's usage
/// and limit, the `limits.` ones in the second column.
fn cells(q: &Value) -> Vec<Value> {
    let hard = q.pointer("/status/hard").and_then(Value::as_object);
    let used = q.pointer("/status/used");
    let mut names: Vec<&String> = hard.map(|h| h.keys().collect()).unwrap_or_default();
    names.sort();
    let (mut request, mut limit) = (Vec::new(), Vec::new());
    for n in names {
        let text = format!(
            "{n}: {}/{}",
            canonical(used.and_then(|u| u.get(n.as_str()))),
            canonical(hard.and_then(|h| h.get(n.as_str())))
        );
        match n.split_once('.') {
            Some(("limits", _)) => limit.push(text),
            _ => request.push(text),
        }
    }
    vec![
        super::name(q),
        super::age(q),
        json!(request.join(", ")),
        json!(limit.join(", ")),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(obj: Value) -> Vec<String> {
        let q: ResourceQuota = serde_json::from_value(obj).unwrap();
        validate(&q).iter().map(Cause::text).collect()
    }

    #[test]
    fn hard_limits_name_quota_resources_with_valid_amounts() {
        assert!(check(json!({"metadata": {"name": "q"}, "spec": {"hard": {
            "pods": "10", "requests.cpu": "1500m", "count/deployments.apps": "2",
            "requests.example.com/gpu": "4", "hugepages-2Mi": "1Gi",
            "gold.storageclass.storage.k8s.io/requests.storage": "10Gi"}}}))
        .is_empty());
        let errs = check(json!({"metadata": {"name": "q"}, "spec": {"hard": {
            "pods": "1500m", "storage": "1Gi", "bogus": "1", "cpu": "-1"}}}));
        assert!(
            errs.contains(
                &"spec.hard[pods]: Invalid value: \"1500m\": must be an integer".to_string()
            ),
            "{errs:?}"
        );
        assert!(errs.contains(&"spec.hard[storage]: Invalid value: \"storage\": must be a standard resource for quota".to_string()), "{errs:?}");
        assert!(errs.contains(&"spec.hard[bogus]: Invalid value: \"bogus\": must be a standard resource type or fully qualified".to_string()), "{errs:?}");
        assert!(
            errs.contains(
                &"spec.hard[cpu]: Invalid value: \"-1\": must be greater than or equal to 0"
                    .to_string()
            ),
            "{errs:?}"
        );
        let errs = check(json!({"metadata": {"name": "q"}, "spec": {"hard": {"count/x": "1.5"}}}));
        assert_eq!(
            errs,
            vec!["spec.hard[count/x]: Invalid value: \"1.5\": must be an integer"]
        );
    }

    #[test]
    fn scopes_are_checked_as_kubernetes_checks_them() {
        let errs = check(
            json!({"metadata": {"name": "q"}, "spec": {"hard": {"pods": "1"},
            "scopes": ["BestEffort", "NotBestEffort"]}}),
        );
        assert_eq!(
            errs,
            vec!["spec.scopes: Invalid value: []core.ResourceQuotaScope{\"BestEffort\", \"NotBestEffort\"}: conflicting scopes"]
        );
        let errs = check(
            json!({"metadata": {"name": "q"}, "spec": {"hard": {"requests.cpu": "1"},
            "scopes": ["BestEffort"]}}),
        );
        assert_eq!(
            errs,
            vec!["spec.scopes: Invalid value: []core.ResourceQuotaScope{\"BestEffort\"}: unsupported scope applied to resource"]
        );
        let errs = check(
            json!({"metadata": {"name": "q"}, "spec": {"hard": {"pods": "1"},
            "scopeSelector": {"matchExpressions": [
                {"scopeName": "PriorityClass", "operator": "In"},
                {"scopeName": "Terminating", "operator": "In", "values": ["x"]}]}}}),
        );
        assert!(
            errs.iter().any(|e| e.contains(
                "must be at least one value when `operator` is 'In' or 'NotIn' for scope selector"
            )),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.contains("must be 'Exist' only operator")),
            "{errs:?}"
        );
        let old: ResourceQuota =
            serde_json::from_value(json!({"spec": {"scopes": ["BestEffort"]}})).unwrap();
        let new: ResourceQuota =
            serde_json::from_value(json!({"spec": {"scopes": ["NotTerminating"]}})).unwrap();
        assert_eq!(
            validate_update(&new, &old)[0].text(),
            "spec.scopes: Invalid value: []core.ResourceQuotaScope{\"NotTerminating\"}: field is immutable"
        );
    }

    #[test]
    fn table_cells_show_used_over_hard() {
        let q = json!({"metadata": {"name": "q", "creationTimestamp": "2020-01-01T00:00:00Z"},
            "status": {"hard": {"pods": "10", "limits.cpu": "2", "requests.cpu": "1"},
                       "used": {"pods": "3", "limits.cpu": "500m"}}});
        let c = cells(&q);
        assert_eq!(c[2], json!("pods: 3/10, requests.cpu: 0/1"));
        assert_eq!(c[3], json!("limits.cpu: 500m/2"));
    }
}
