//! Selectors: label selectors (`metav1.LabelSelector`) matched against an object's labels, as
//! controllers, pod affinity and spreading use them; node selector terms and a pod's node
//! constraints (`nodeSelector` and required node affinity) matched against a node, as the
//! scheduler and the DaemonSet controller use them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{NodeSelectorRequirement, NodeSelectorTerm, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Whether `labels` match `selector`: every `matchLabels` pair and every expression
/// (`In`, `NotIn`, `Exists`, `DoesNotExist`). An empty selector matches everything; an
/// absent one (`None`) matches nothing, as in Kubernetes.
#[inline]
pub fn matches(
    selector: Option<&LabelSelector>,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    let Some(sel) = selector else {
        return false;
    };
    let get = |k: &str| labels.and_then(|l| l.get(k)).map(String::as_str);
    let pairs_ok = sel
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| get(k) == Some(v.as_str()));
    pairs_ok
        && sel.match_expressions.iter().flatten().all(|e| {
            let values = e.values.as_deref().unwrap_or(&[]);
            let v = get(&e.key);
            match e.operator.as_str() {
                "In" => v.is_some_and(|v| values.iter().any(|x| x == v)),
                "NotIn" => !v.is_some_and(|v| values.iter().any(|x| x == v)),
                "Exists" => v.is_some(),
                "DoesNotExist" => v.is_none(),
                _ => false,
            }
        })
}

/// Whether a node selector requirement holds for a value (`None`: the label is absent):
/// `In`, `NotIn`, `Exists`, `DoesNotExist`, and `Gt`/`Lt` on integers.
#[inline]
pub fn node_requirement(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = r.values.as_deref().unwrap_or(&[]);
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => !value.is_some_and(|v| values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), Some(bound)) = (
                value.and_then(|v| v.parse::<i64>().ok()),
                values.first().and_then(|b| b.parse::<i64>().ok()),
            ) else {
                return false;
            };
            if r.operator == "Gt" {
                v > bound
            } else {
                v < bound
            }
        }
        _ => false,
    }
}

/// Whether a node selector term (required node affinity) matches a node with these labels
/// (`label` looks one up) and this name: every expression and every field requirement
/// (`metadata.name`) holds. An empty term matches nothing, as in Kubernetes.
pub fn node_term_matches<'a>(
    term: &NodeSelectorTerm,
    label: impl Fn(&str) -> Option<&'a str>,
    name: &str,
) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or(&[]);
    let fields = term.match_fields.as_deref().unwrap_or(&[]);
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    exprs.iter().all(|r| node_requirement(r, label(&r.key)))
        && fields
            .iter()
            .all(|r| r.key == "metadata.name" && node_requirement(r, Some(name)))
}

/// Whether a node with these labels (`label` looks one up) and this name satisfies the pod's
/// `spec.nodeSelector` (every pair) and its required node affinity (any one term), as
/// Kubernetes' `GetRequiredNodeAffinity(pod).Match(node)` decides.
pub fn pod_fits_node<'a>(
    spec: &PodSpec,
    label: impl Fn(&str) -> Option<&'a str>,
    name: &str,
) -> bool {
    let pairs_ok = spec
        .node_selector
        .iter()
        .flatten()
        .all(|(k, v)| label(k) == Some(v.as_str()));
    pairs_ok
        && spec
            .affinity
            .as_ref()
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .is_none_or(|r| {
                r.node_selector_terms
                    .iter()
                    .any(|t| node_term_matches(t, &label, name))
            })
}

/// Whether the selector selects nothing in particular (no pairs, no expressions): such a
/// selector matches every object.
#[inline]
pub fn is_empty(selector: &LabelSelector) -> bool {
    selector.match_labels.as_ref().is_none_or(|m| m.is_empty())
        && selector
            .match_expressions
            .as_ref()
            .is_none_or(|e| e.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sel(v: serde_json::Value) -> LabelSelector {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn pairs_and_expressions() {
        let labels: BTreeMap<String, String> = [
            ("app".to_string(), "web".to_string()),
            ("tier".into(), "front".into()),
        ]
        .into();
        assert!(matches(Some(&sel(json!({}))), Some(&labels)));
        assert!(!matches(None, Some(&labels)));
        assert!(matches(
            Some(&sel(json!({"matchLabels": {"app": "web"}}))),
            Some(&labels)
        ));
        assert!(!matches(
            Some(&sel(json!({"matchLabels": {"app": "db"}}))),
            Some(&labels)
        ));
        let e = |op: &str, vals: serde_json::Value| {
            sel(json!({"matchExpressions": [{"key": "tier", "operator": op, "values": vals}]}))
        };
        assert!(matches(
            Some(&e("In", json!(["front", "back"]))),
            Some(&labels)
        ));
        assert!(!matches(Some(&e("NotIn", json!(["front"]))), Some(&labels)));
        assert!(matches(Some(&e("Exists", json!([]))), Some(&labels)));
        assert!(!matches(Some(&e("DoesNotExist", json!([]))), Some(&labels)));
        assert!(matches(Some(&e("DoesNotExist", json!([]))), None));
        assert!(!matches(Some(&e("Gt", json!(["1"]))), Some(&labels)));
        assert!(is_empty(&sel(json!({"matchLabels": {}}))));
        assert!(!is_empty(&e("Exists", json!([]))));
    }

    #[test]
    fn node_requirements_and_terms() {
        let r = |op: &str, vals: serde_json::Value| -> NodeSelectorRequirement {
            serde_json::from_value(json!({"key": "k", "operator": op, "values": vals})).unwrap()
        };
        assert!(node_requirement(&r("Gt", json!(["5"])), Some("6")));
        assert!(!node_requirement(&r("Gt", json!(["5"])), Some("5")));
        assert!(node_requirement(&r("Lt", json!(["5"])), Some("-1")));
        assert!(!node_requirement(&r("Lt", json!(["x"])), Some("1")));
        assert!(!node_requirement(&r("Gt", json!(["5"])), None));
        assert!(node_requirement(&r("NotIn", json!(["a"])), None));
        assert!(!node_requirement(&r("Bogus", json!([])), Some("a")));
        let term =
            |v: serde_json::Value| -> NodeSelectorTerm { serde_json::from_value(v).unwrap() };
        let labels: BTreeMap<&str, &str> = [("zone", "a")].into();
        let label = |k: &str| labels.get(k).copied();
        assert!(
            !node_term_matches(&term(json!({})), label, "n1"),
            "empty term"
        );
        assert!(node_term_matches(
            &term(
                json!({"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]})
            ),
            label,
            "n1"
        ));
        assert!(!node_term_matches(
            &term(
                json!({"matchFields": [{"key": "spec.other", "operator": "In", "values": ["n1"]}]})
            ),
            label,
            "n1"
        ));
    }

    #[test]
    fn pods_fit_nodes_by_selector_and_required_affinity() {
        let spec = |v: serde_json::Value| -> PodSpec {
            serde_json::from_value(json!({"containers": [], "nodeSelector": v["sel"],
                "affinity": v["aff"]}))
            .unwrap()
        };
        let labels: BTreeMap<&str, &str> = [("zone", "a"), ("gpu", "yes")].into();
        let label = |k: &str| labels.get(k).copied();
        assert!(pod_fits_node(&spec(json!({})), label, "n"));
        assert!(pod_fits_node(
            &spec(json!({"sel": {"zone": "a"}})),
            label,
            "n"
        ));
        assert!(!pod_fits_node(
            &spec(json!({"sel": {"zone": "b"}})),
            label,
            "n"
        ));
        let aff = |terms: serde_json::Value| {
            json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": terms}}})
        };
        let z = |zone: &str| json!({"matchExpressions": [{"key": "zone", "operator": "In", "values": [zone]}]});
        assert!(pod_fits_node(
            &spec(json!({"aff": aff(json!([z("b"), z("a")]))})),
            label,
            "n"
        ));
        assert!(!pod_fits_node(
            &spec(json!({"aff": aff(json!([z("b")]))})),
            label,
            "n"
        ));
        assert!(
            !pod_fits_node(&spec(json!({"aff": aff(json!([]))})), label, "n"),
            "no terms"
        );
        assert!(!pod_fits_node(
            &spec(json!({"sel": {"zone": "b"}, "aff": aff(json!([z("a")]))})),
            label,
            "n"
        ));
    }
}
