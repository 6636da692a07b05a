//! `PodTopologySpread`: keeps matching pods evenly spread over topology domains (zones,
//! hosts …). `DoNotSchedule` constraints filter: a node is out when placing the pod there
//! would make its domain exceed the least-loaded domain by more than `maxSkew` (with fewer
//! than `minDomains` domains the minimum counts as 0). `ScheduleAnyway` constraints score:
//! fewer matching pods in a node's domain is better. Nodes that do not match the pod's node
//! affinity/selector, or lack the topology label, do not count as domains (Kubernetes'
//! default `nodeAffinityPolicy: Honor`).

use std::collections::HashMap;

use k8s_openapi::api::core::v1::TopologySpreadConstraint;

use super::node_affinity::NodeAffinity;
use super::{CycleState, Filter, Rejection, Score, MAX_SCORE};
use crate::selector;
use crate::snapshot::{NodeInfo, PodInfo};

/// The `PodTopologySpread` filter and score.
pub struct PodTopologySpread;

/// A node without the constraint's topology label.
pub const MISSING_LABEL_REASON: &str =
    "node(s) didn't match pod topology spread constraints (missing required label)";
/// A node whose domain would be too crowded.
pub const SKEW_REASON: &str = "node(s) didn't match pod topology spread constraints";

const NAME: &str = "PodTopologySpread";

/// Kubernetes' default constraints for pods that set none but belong to a controller
/// (a ReplicaSet, StatefulSet, Job ...): spread softly over hosts (skew 3) and zones (skew 5),
/// counting the pods that carry the same labels.
fn default_constraints(pod: &PodInfo) -> Vec<TopologySpreadConstraint> {
    let controlled = pod
        .pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true));
    let labels = pod.pod.metadata.labels.clone().unwrap_or_default();
    if !controlled || labels.is_empty() {
        return Vec::new();
    }
    let selector = k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector {
        match_labels: Some(labels),
        match_expressions: None,
    };
    [
        ("kubernetes.io/hostname", 3),
        ("topology.kubernetes.io/zone", 5),
    ]
    .into_iter()
    .map(|(key, skew)| TopologySpreadConstraint {
        max_skew: skew,
        topology_key: key.into(),
        when_unsatisfiable: "ScheduleAnyway".into(),
        label_selector: Some(selector.clone()),
        ..Default::default()
    })
    .collect()
}

/// The pod's constraints of one kind (`DoNotSchedule` or `ScheduleAnyway`); a controlled pod
/// without any gets the default ones.
fn constraints(pod: &PodInfo, when: &str) -> Vec<TopologySpreadConstraint> {
    let own = pod
        .spec()
        .and_then(|s| s.topology_spread_constraints.as_deref())
        .unwrap_or(&[]);
    let all = if own.is_empty() {
        default_constraints(pod)
    } else {
        own.to_vec()
    };
    all.into_iter()
        .filter(|c| c.when_unsatisfiable == when)
        .collect()
}

/// Per constraint: matching pods per domain, over eligible nodes.
fn count(
    pod: &PodInfo,
    nodes: &[NodeInfo],
    cs: &[TopologySpreadConstraint],
) -> Vec<HashMap<String, i64>> {
    let ns = pod.pod.metadata.namespace.as_deref().unwrap_or("");
    let none = CycleState::default();
    // Domains are borrowed from the nodes while counting; owned once per distinct domain.
    let mut counts: Vec<HashMap<&str, i64>> = vec![HashMap::new(); cs.len()];
    for node in nodes {
        if NodeAffinity.filter(&none, pod, node).is_err() {
            continue;
        }
        for (i, c) in cs.iter().enumerate() {
            let Some(domain) = node.label(&c.topology_key) else {
                continue;
            };
            let matching = node
                .pods
                .iter()
                .filter(|p| p.pod.metadata.namespace.as_deref().unwrap_or("") == ns)
                .filter(|p| p.pod.metadata.deletion_timestamp.is_none())
                .filter(|p| {
                    selector::matches(c.label_selector.as_ref(), p.pod.metadata.labels.as_ref())
                })
                .count() as i64;
            *counts[i].entry(domain).or_default() += matching;
        }
    }
    counts
        .into_iter()
        .map(|m| m.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
        .collect()
}

struct FilterState {
    /// The pod's DoNotSchedule constraints, worked out once.
    constraints: Vec<TopologySpreadConstraint>,
    /// Per constraint: matching pods per domain.
    counts: Vec<HashMap<String, i64>>,
}

impl Filter for PodTopologySpread {
    fn name(&self) -> &'static str {
        NAME
    }

    fn pre_filter(&self, pod: &PodInfo, nodes: &[NodeInfo], state: &mut CycleState) {
        let cs = constraints(pod, "DoNotSchedule");
        if !cs.is_empty() {
            let counts = count(pod, nodes, &cs);
            state.put(
                NAME,
                FilterState {
                    constraints: cs,
                    counts,
                },
            );
        }
    }

    fn filter(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Result<(), Rejection> {
        let Some(st) = state.get::<FilterState>(NAME) else {
            return Ok(());
        };
        for (c, counts) in st.constraints.iter().zip(&st.counts) {
            let Some(domain) = node.label(&c.topology_key) else {
                return Err(Rejection::unresolvable(MISSING_LABEL_REASON));
            };
            let min_domains = c.min_domains.unwrap_or(1).max(1) as usize;
            let min = if counts.len() < min_domains {
                0
            } else {
                counts.values().copied().min().unwrap_or(0)
            };
            let self_match = i64::from(selector::matches(
                c.label_selector.as_ref(),
                pod.pod.metadata.labels.as_ref(),
            ));
            let here = counts.get(domain).copied().unwrap_or(0);
            if here + self_match - min > i64::from(c.max_skew) {
                return Err(Rejection::resolvable(SKEW_REASON));
            }
        }
        Ok(())
    }
}

struct ScoreState {
    /// The pod's ScheduleAnyway constraints, worked out once.
    constraints: Vec<TopologySpreadConstraint>,
    counts: Vec<HashMap<String, i64>>,
    /// Per constraint, a weight growing with the number of domains (as log(n + 2)).
    weights: Vec<f64>,
}

impl Score for PodTopologySpread {
    fn name(&self) -> &'static str {
        NAME
    }

    fn pre_score(&self, pod: &PodInfo, nodes: &[NodeInfo], state: &mut CycleState) {
        let cs = constraints(pod, "ScheduleAnyway");
        if cs.is_empty() {
            return;
        }
        let counts = count(pod, nodes, &cs);
        let weights = counts.iter().map(|c| ((c.len() + 2) as f64).ln()).collect();
        state.put(
            NAME,
            ScoreState {
                constraints: cs,
                counts,
                weights,
            },
        );
    }

    /// Matching pods in the node's domains, weighted (lower is better; normalized below).
    fn score(&self, state: &CycleState, _pod: &PodInfo, node: &NodeInfo) -> i64 {
        let Some(st) = state.get::<ScoreState>(NAME) else {
            return 0;
        };
        let mut total = 0.0;
        for ((c, counts), w) in st.constraints.iter().zip(&st.counts).zip(&st.weights) {
            if let Some(domain) = node.label(&c.topology_key) {
                total += counts.get(domain).copied().unwrap_or(0) as f64 * w;
            }
        }
        (total * 1000.0).round() as i64
    }

    /// Fewest matching pods → 100.
    fn normalize(&self, scores: &mut [i64]) {
        let max = scores.iter().copied().max().unwrap_or(0);
        let min = scores.iter().copied().min().unwrap_or(0);
        for s in scores.iter_mut() {
            *s = if max == 0 {
                MAX_SCORE
            } else {
                MAX_SCORE * (max + min - *s) / max
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::{node, pod};
    use serde_json::json;
    use std::sync::Arc;

    fn zones() -> Vec<NodeInfo> {
        [("a", "z1"), ("b", "z1"), ("c", "z2"), ("d", "z3")]
            .iter()
            .map(|(n, z)| node(json!({"metadata": {"name": n, "labels": {"zone": z, "host": n}}})))
            .collect()
    }

    fn web(name: &str, when: &str, skew: i32, min_domains: Option<i32>) -> PodInfo {
        let mut c = json!({"maxSkew": skew, "topologyKey": "zone", "whenUnsatisfiable": when,
            "labelSelector": {"matchLabels": {"app": "web"}}});
        if let Some(m) = min_domains {
            c["minDomains"] = json!(m);
        }
        pod(
            json!({"metadata": {"name": name, "namespace": "d", "labels": {"app": "web"}},
            "spec": {"containers": [], "topologySpreadConstraints": [c]}}),
        )
    }

    fn feasible(pod: &PodInfo, nodes: &[NodeInfo]) -> Vec<String> {
        let mut st = CycleState::default();
        PodTopologySpread.pre_filter(pod, nodes, &mut st);
        nodes
            .iter()
            .filter(|n| PodTopologySpread.filter(&st, pod, n).is_ok())
            .map(|n| n.name.clone())
            .collect()
    }

    #[test]
    fn max_skew_keeps_zones_even() {
        let mut nodes = zones();
        nodes[0].add_pod(Arc::new(web("w1", "DoNotSchedule", 1, None)));
        nodes[2].add_pod(Arc::new(web("w2", "DoNotSchedule", 1, None)));
        // z1: 1, z2: 1, z3: 0 → only z3 keeps the skew at 1.
        assert_eq!(
            feasible(&web("w3", "DoNotSchedule", 1, None), &nodes),
            vec!["d"]
        );
        assert_eq!(
            feasible(&web("w3", "DoNotSchedule", 2, None), &nodes),
            vec!["a", "b", "c", "d"]
        );
        // A node without the label cannot take part.
        nodes.push(node(json!({"metadata": {"name": "e"}})));
        let mut st = CycleState::default();
        let p = web("w3", "DoNotSchedule", 5, None);
        PodTopologySpread.pre_filter(&p, &nodes, &mut st);
        let err = PodTopologySpread.filter(&st, &p, &nodes[4]).unwrap_err();
        assert_eq!(err.reasons, vec![MISSING_LABEL_REASON]);
    }

    #[test]
    fn min_domains_treats_missing_domains_as_empty() {
        let mut nodes = zones();
        nodes.truncate(3); // z1 and z2 only
        nodes[0].add_pod(Arc::new(web("w1", "DoNotSchedule", 1, None)));
        nodes[2].add_pod(Arc::new(web("w2", "DoNotSchedule", 1, None)));
        assert_eq!(
            feasible(&web("w3", "DoNotSchedule", 1, None), &nodes),
            vec!["a", "b", "c"]
        );
        // With minDomains 3 only two domains exist: the minimum counts as 0.
        assert!(feasible(&web("w3", "DoNotSchedule", 1, Some(3)), &nodes).is_empty());
    }

    #[test]
    fn schedule_anyway_prefers_emptier_domains() {
        let mut nodes = zones();
        nodes[0].add_pod(Arc::new(web("w1", "ScheduleAnyway", 1, None)));
        nodes[1].add_pod(Arc::new(web("w2", "ScheduleAnyway", 1, None)));
        nodes[2].add_pod(Arc::new(web("w3", "ScheduleAnyway", 1, None)));
        let p = web("w4", "ScheduleAnyway", 1, None);
        assert_eq!(feasible(&p, &nodes).len(), 4, "never filters");
        let mut st = CycleState::default();
        PodTopologySpread.pre_score(&p, &nodes, &mut st);
        let mut scores: Vec<i64> = nodes
            .iter()
            .map(|n| PodTopologySpread.score(&st, &p, n))
            .collect();
        PodTopologySpread.normalize(&mut scores);
        assert_eq!(scores[3], 100, "{scores:?}");
        assert!(scores[2] > scores[0], "{scores:?}");
        assert_eq!(scores[0], scores[1]);
    }

    #[test]
    fn controlled_pods_spread_over_hosts_and_zones_by_default() {
        let rs_pod = |name: &str| {
            pod(
                json!({"metadata": {"name": name, "namespace": "d", "labels": {"app": "db"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "db", "uid": "u", "controller": true}]},
                "spec": {"containers": []}}),
            )
        };
        let mut nodes: Vec<NodeInfo> = [("a", "z1"), ("b", "z1"), ("c", "z2")]
            .iter()
            .map(|(n, z)| {
                node(json!({"metadata": {"name": n, "labels": {
                "kubernetes.io/hostname": n, "topology.kubernetes.io/zone": z}}}))
            })
            .collect();
        nodes[0].add_pod(Arc::new(rs_pod("db-1")));
        let p = rs_pod("db-2");
        let mut st = CycleState::default();
        PodTopologySpread.pre_score(&p, &nodes, &mut st);
        let mut scores: Vec<i64> = nodes
            .iter()
            .map(|n| PodTopologySpread.score(&st, &p, n))
            .collect();
        PodTopologySpread.normalize(&mut scores);
        assert!(
            scores[2] > scores[1] && scores[1] > scores[0],
            "other zone, then other host: {scores:?}"
        );
        // An uncontrolled pod gets no default constraints.
        let lone = pod(
            json!({"metadata": {"name": "x", "namespace": "d", "labels": {"app": "db"}}, "spec": {"containers": []}}),
        );
        let mut st = CycleState::default();
        PodTopologySpread.pre_score(&lone, &nodes, &mut st);
        assert!(nodes
            .iter()
            .all(|n| PodTopologySpread.score(&st, &lone, n) == 0));
    }
}
