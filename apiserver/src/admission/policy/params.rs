//! The params a binding gives its policy: the objects of the policy's `paramKind` its
//! `paramRef` names (by name, or every one a label selector picks), read from the watch
//! cache, each evaluated on its own, as Kubernetes' `CollectParams` finds them.

use k8s_openapi::api::admissionregistration::v1::ParamRef;
use serde_json::Value;

use crate::registry::{Objects, Resource};

/// The resource `paramKind` names (group, version, kind), if served.
pub fn param_resource(
    objs: &dyn Objects,
    (group, version, kind): &(String, String, String),
) -> Option<Resource> {
    objs.resources().into_iter().find(|r| {
        r.group == *group && r.version == *version && r.kind == *kind && r.create_only.is_none()
    })
}

/// Kubernetes' words for a paramKind no served resource has: the kind printed as a
/// `GroupVersionKind` is (`/v1, Kind=ConfigMap`).
pub fn not_found_message((group, version, kind): &(String, String, String)) -> String {
    format!("failed to find resource referenced by paramKind: '{group}/{version}, Kind={kind}'")
}

/// The params to evaluate the policy with: `[None]` when the policy or the binding names
/// none (the policy runs once, `params` being null), else each object found; the error is
/// a configuration error of the binding, worded as Kubernetes words it.
pub fn collect(
    objs: &dyn Objects,
    resource: Option<&Resource>,
    param_ref: Option<&ParamRef>,
    namespace: &str,
) -> Result<Vec<Option<Value>>, String> {
    let (Some(resource), Some(pr)) = (resource, param_ref) else {
        return Ok(vec![None]);
    };
    let ref_ns = pr.namespace.as_deref().unwrap_or("");
    let scope = if resource.namespaced {
        let ns = if ref_ns.is_empty() { namespace } else { ref_ns };
        if ns.is_empty() {
            return Err(
                "cannot use namespaced paramRef in policy binding that matches cluster-scoped resources"
                    .to_owned(),
            );
        }
        Some(ns)
    } else {
        if !ref_ns.is_empty() {
            return Err(
                "paramRef.namespace must not be provided for a cluster-scoped `paramKind`"
                    .to_owned(),
            );
        }
        None
    };
    let name = pr.name.as_deref().unwrap_or("");
    let found: Vec<Option<Value>> = if !name.is_empty() {
        if pr.selector.is_some() {
            return Err("paramRef.name and paramRef.selector are mutually exclusive".to_owned());
        }
        objs.cached(resource, scope, name)
            .map(|c| Some(c.value()))
            .into_iter()
            .collect()
    } else if let Some(sel) = &pr.selector {
        objs.cached_list(resource, scope)
            .into_iter()
            .filter(|c| skiff_rules::selector::matches(Some(sel), Some(&c.labels)))
            .map(|c| Some(c.value()))
            .collect()
    } else {
        return Err("one of name or selector must be provided".to_owned());
    };
    if found.is_empty() && pr.parameter_not_found_action.as_deref() == Some("Deny") {
        return Err(
            "no params found for policy binding with `Deny` parameterNotFoundAction".to_owned(),
        );
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::admission::testing::Fixed;
    use crate::registry::builtin;

    fn cm(ns: &str, name: &str, labels: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": ns, "labels": labels}, "data": {"max": "3"}})
    }

    fn pr(v: Value) -> ParamRef {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn finds_params_by_name_or_selector() {
        let objs = Fixed::default()
            .with(
                "configmaps",
                "a",
                cm("a", "limits", json!({"policy": "yes"})),
            )
            .with(
                "configmaps",
                "a",
                cm("a", "other", json!({"policy": "yes"})),
            )
            .with("configmaps", "b", cm("b", "limits", json!({})));
        let r = builtin("", "configmaps").unwrap();
        let got = collect(&objs, Some(&r), Some(&pr(json!({"name": "limits"}))), "a").unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].as_ref().unwrap()["metadata"]["namespace"], "a");
        let got = collect(
            &objs,
            Some(&r),
            Some(&pr(json!({"name": "limits", "namespace": "b"}))),
            "a",
        )
        .unwrap();
        assert_eq!(got[0].as_ref().unwrap()["metadata"]["namespace"], "b");
        let got = collect(
            &objs,
            Some(&r),
            Some(&pr(json!({"selector": {"matchLabels": {"policy": "yes"}}}))),
            "a",
        )
        .unwrap();
        assert_eq!(got.len(), 2);
        // Nothing found: no evaluation, unless the binding says Deny.
        let none = pr(json!({"name": "missing", "parameterNotFoundAction": "Allow"}));
        assert!(collect(&objs, Some(&r), Some(&none), "a")
            .unwrap()
            .is_empty());
        let deny = pr(json!({"name": "missing", "parameterNotFoundAction": "Deny"}));
        assert_eq!(
            collect(&objs, Some(&r), Some(&deny), "a").unwrap_err(),
            "no params found for policy binding with `Deny` parameterNotFoundAction"
        );
        // No paramRef or paramKind: one run, without params.
        assert_eq!(collect(&objs, Some(&r), None, "a").unwrap(), vec![None]);
        assert_eq!(collect(&objs, None, Some(&none), "a").unwrap(), vec![None]);
    }

    #[test]
    fn refuses_what_kubernetes_refuses() {
        let objs = Fixed::default();
        let cms = builtin("", "configmaps").unwrap();
        let e = collect(&objs, Some(&cms), Some(&pr(json!({"name": "x"}))), "").unwrap_err();
        assert_eq!(
            e,
            "cannot use namespaced paramRef in policy binding that matches cluster-scoped resources"
        );
        let nodes = builtin("", "nodes").unwrap();
        let e = collect(
            &objs,
            Some(&nodes),
            Some(&pr(json!({"name": "x", "namespace": "a"}))),
            "a",
        )
        .unwrap_err();
        assert_eq!(
            e,
            "paramRef.namespace must not be provided for a cluster-scoped `paramKind`"
        );
        let e = collect(&objs, Some(&cms), Some(&pr(json!({}))), "a").unwrap_err();
        assert_eq!(e, "one of name or selector must be provided");
        assert_eq!(
            not_found_message(&("".into(), "v1".into(), "Nope".into())),
            "failed to find resource referenced by paramKind: '/v1, Kind=Nope'"
        );
    }
}
