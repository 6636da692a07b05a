//! `NodeAffinity`: `spec.nodeSelector` and required node affinity must match the node's
//! labels (and, for `matchFields`, its name); preferred node affinity adds the weights of the
//! terms a node matches to its score.

use k8s_openapi::api::core::v1::{NodeSelector, NodeSelectorTerm};
use skiff_rules::selector;

use super::{normalize_to_max, Check, Filter, Rate, Rejection, Score};
use crate::snapshot::{NodeInfo, PodInfo, Snapshot};

/// The `NodeAffinity` filter and score.
pub struct NodeAffinity;

/// Kubernetes' reason.
pub const REASON: &str = "node(s) didn't match Pod's node affinity/selector";

/// Whether a node selector term matches the node (see [`selector::node_term_matches`]).
pub fn term_matches(term: &NodeSelectorTerm, node: &NodeInfo) -> bool {
    selector::node_term_matches(term, |k| node.label(k), &node.name)
}

/// The pod's required node affinity.
fn required(pod: &PodInfo) -> Option<&NodeSelector> {
    pod.spec()?
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()
}

/// Whether `pod` restricts its nodes at all (a `nodeSelector` or required node affinity).
pub fn restricts(pod: &PodInfo) -> bool {
    let selector = pod
        .spec()
        .and_then(|s| s.node_selector.as_ref())
        .is_some_and(|s| !s.is_empty());
    selector || required(pod).is_some()
}

/// Whether `node` satisfies `pod`'s `nodeSelector` and required node affinity.
pub fn matches(pod: &PodInfo, node: &NodeInfo) -> bool {
    pod.spec()
        .is_none_or(|s| selector::pod_fits_node(s, |k| node.label(k), &node.name))
}

impl Filter for NodeAffinity {
    fn name(&self) -> &'static str {
        "NodeAffinity"
    }

    fn filter_for<'a>(&'a self, pod: &'a PodInfo, _snap: &'a Snapshot) -> Option<Check<'a>> {
        if !restricts(pod) {
            return None;
        }
        Some(Box::new(move |_, node| {
            if matches(pod, node) {
                Ok(())
            } else {
                Err(Rejection::unresolvable(REASON))
            }
        }))
    }
}

impl Score for NodeAffinity {
    fn name(&self) -> &'static str {
        "NodeAffinity"
    }

    /// The summed weights of the preferred terms the node matches.
    fn score_for<'a>(&'a self, pod: &'a PodInfo, _snap: &'a Snapshot) -> Option<Rate<'a>> {
        let preferred = pod
            .spec()
            .and_then(|s| s.affinity.as_ref())
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|na| {
                na.preferred_during_scheduling_ignored_during_execution
                    .as_deref()
            })
            .filter(|p| !p.is_empty())?;
        Some(Box::new(move |_, node| {
            preferred
                .iter()
                .filter(|p| term_matches(&p.preference, node))
                .map(|p| i64::from(p.weight))
                .sum()
        }))
    }

    fn normalize(&self, scores: &mut [i64]) {
        normalize_to_max(scores, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::{check, node, pod, rate};
    use serde_json::json;

    fn n(name: &str, labels: serde_json::Value) -> NodeInfo {
        node(json!({"metadata": {"name": name, "labels": labels}}))
    }

    fn required(exprs: serde_json::Value) -> PodInfo {
        pod(
            json!({"spec": {"containers": [], "affinity": {"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": exprs}]}}}}}),
        )
    }

    #[test]
    fn node_selector_must_match_every_label() {
        let ssd = n("a", json!({"disk": "ssd", "zone": "z1"}));
        let hdd = n("b", json!({"disk": "hdd"}));
        let p = pod(json!({"spec": {"containers": [], "nodeSelector": {"disk": "ssd"}}}));
        assert!(check(&NodeAffinity, &p, &ssd).is_ok());
        assert_eq!(
            check(&NodeAffinity, &p, &hdd).unwrap_err().reasons,
            vec![REASON]
        );
    }

    #[test]
    fn every_operator() {
        let node = n("a", json!({"zone": "z1", "cores": "16"}));
        let cases = [
            (
                json!([{"key": "zone", "operator": "In", "values": ["z1", "z2"]}]),
                true,
            ),
            (
                json!([{"key": "zone", "operator": "In", "values": ["z2"]}]),
                false,
            ),
            (
                json!([{"key": "zone", "operator": "NotIn", "values": ["z2"]}]),
                true,
            ),
            (
                json!([{"key": "gpu", "operator": "NotIn", "values": ["x"]}]),
                true,
            ),
            (json!([{"key": "zone", "operator": "Exists"}]), true),
            (json!([{"key": "gpu", "operator": "Exists"}]), false),
            (json!([{"key": "gpu", "operator": "DoesNotExist"}]), true),
            (
                json!([{"key": "cores", "operator": "Gt", "values": ["8"]}]),
                true,
            ),
            (
                json!([{"key": "cores", "operator": "Lt", "values": ["8"]}]),
                false,
            ),
            (
                json!([{"key": "zone", "operator": "Gt", "values": ["8"]}]),
                false,
            ),
            (
                json!([{"key": "zone", "operator": "In", "values": ["z1"]}, {"key": "cores", "operator": "Lt", "values": ["4"]}]),
                false,
            ),
        ];
        for (exprs, fits) in cases {
            assert_eq!(
                check(&NodeAffinity, &required(exprs.clone()), &node).is_ok(),
                fits,
                "{exprs}"
            );
        }
    }

    #[test]
    fn terms_are_ored_and_match_fields_names_the_node() {
        let a = n("a", json!({}));
        let b = n("b", json!({"zone": "z9"}));
        let p = pod(
            json!({"spec": {"containers": [], "affinity": {"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["a"]}]},
                {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["z9"]}]}]}}}}}),
        );
        assert!(check(&NodeAffinity, &p, &a).is_ok());
        assert!(check(&NodeAffinity, &p, &b).is_ok());
        assert!(check(&NodeAffinity, &p, &n("c", json!({}))).is_err());
    }

    #[test]
    fn preferred_terms_add_their_weights() {
        let p = pod(
            json!({"spec": {"containers": [], "affinity": {"nodeAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 80, "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["z1"]}]}},
                {"weight": 20, "preference": {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}}]}}}}),
        );
        let nodes = [
            n("a", json!({"zone": "z1", "disk": "ssd"})),
            n("b", json!({"zone": "z1"})),
            n("c", json!({})),
        ];
        let mut scores: Vec<i64> = nodes.iter().map(|x| rate(&NodeAffinity, &p, x)).collect();
        assert_eq!(scores, vec![100, 80, 0]);
        NodeAffinity.normalize(&mut scores);
        assert_eq!(scores, vec![100, 80, 0]);
    }
}
