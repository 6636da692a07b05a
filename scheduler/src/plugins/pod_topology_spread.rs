//! `PodTopologySpread`: keeps matching pods evenly spread over topology domains (zones,
//! hosts …). `DoNotSchedule` constraints filter: a node is out when placing the pod there
//! would make its domain exceed the least-loaded domain by more than `maxSkew` (with fewer
//! than `minDomains` domains the minimum counts as 0). `ScheduleAnyway` constraints score:
//! fewer matching pods in a node's domain is better. Nodes that lack the topology label do
//! not count as domains, nor nodes that do not match the pod's node affinity/selector
//! (`nodeAffinityPolicy: Honor`, the default) or, with `nodeTaintsPolicy: Honor`, nodes
//! with taints the pod does not tolerate. `matchLabelKeys` narrows the selector to pods
//! sharing the pod's values of those labels.

use super::{node_affinity, taint_toleration};
use super::{Check, Filter, Rate, Rejection, Score, MAX_SCORE};
use crate::snapshot::{PodInfo, Snapshot, SpreadConstraint, Topology, NO_DOMAIN};

/// The `PodTopologySpread` filter and score.
pub struct PodTopologySpread;

/// A node without the constraint's topology label.
pub const MISSING_LABEL_REASON: &str =
    "node(s) didn't match pod topology spread constraints (missing required label)";
/// A node whose domain would be too crowded.
pub const SKEW_REASON: &str = "node(s) didn't match pod topology spread constraints";

/// One constraint worked out for a pod: the domains and how many matching pods each holds.
struct Spread<'a> {
    c: &'a SpreadConstraint,
    topo: &'a Topology,
    /// Per domain id: matching pods, over eligible nodes.
    counts: Vec<i64>,
    /// How many domains hold some.
    nonzero: usize,
    /// How many eligible domains there are.
    domains: usize,
}

impl Spread<'_> {
    fn here(&self, node: usize) -> Option<i64> {
        let d = *self.topo.domain_of.get(node)?;
        (d != NO_DOMAIN).then(|| self.counts[d as usize])
    }
}

/// Counts matching pods per domain for the pod's constraints of one kind. Nodes that lack
/// the topology label are no domain, nor — per the constraint's policies — nodes outside the
/// pod's node selector or required node affinity (`nodeAffinityPolicy: Honor`, the default)
/// or with a `NoSchedule`/`NoExecute` taint the pod does not tolerate (`nodeTaintsPolicy:
/// Honor`; the default `Ignore` counts them).
fn spreads<'a>(pod: &'a PodInfo, snap: &'a Snapshot, hard: bool) -> Vec<Spread<'a>> {
    let restricted = node_affinity::restricts(pod);
    let tolerations = taint_toleration::tolerations(pod);
    let untainted =
        |i: usize| taint_toleration::untolerated(tolerations, snap.nodes[i].taints()).is_none();
    pod.spread
        .iter()
        .filter(|c| c.hard == hard)
        .filter_map(|c| {
            let by_affinity = c.honor_affinity && restricted;
            let eligible = |i: usize| {
                (!by_affinity || node_affinity::matches(pod, &snap.nodes[i]))
                    && (!c.honor_taints || untainted(i))
            };
            let topo = snap.topology(&c.topology_key)?;
            let mut counts = vec![0i64; topo.ids()];
            let mut nonzero = 0;
            if let Some(group) = snap.group(&c.set) {
                for (&node, n) in &group.nodes {
                    let d = topo.domain_of[node as usize];
                    if d != NO_DOMAIN && n.live > 0 && eligible(node as usize) {
                        let slot = &mut counts[d as usize];
                        nonzero += usize::from(*slot == 0);
                        *slot += i64::from(n.live);
                    }
                }
            }
            let domains = if by_affinity || c.honor_taints {
                let mut seen = std::collections::HashSet::new();
                for (i, &d) in topo.domain_of.iter().enumerate() {
                    if d != NO_DOMAIN && eligible(i) {
                        seen.insert(d);
                    }
                }
                seen.len()
            } else {
                topo.domains()
            };
            Some(Spread {
                c,
                topo,
                counts,
                nonzero,
                domains,
            })
        })
        .collect()
}

impl Filter for PodTopologySpread {
    fn name(&self) -> &'static str {
        "PodTopologySpread"
    }

    /// A node passes when placing the pod there keeps its domain within `maxSkew` of the
    /// least-loaded domain (taken as 0 while fewer than `minDomains` domains exist).
    fn filter_for<'a>(&'a self, pod: &'a PodInfo, snap: &'a Snapshot) -> Option<Check<'a>> {
        if !pod.spread.iter().any(|c| c.hard) {
            return None;
        }
        let spreads = spreads(pod, snap, true);
        let mins: Vec<i64> = spreads
            .iter()
            .map(|s| {
                if s.domains < s.c.min_domains || s.nonzero < s.domains {
                    0
                } else {
                    s.counts
                        .iter()
                        .copied()
                        .filter(|c| *c > 0)
                        .min()
                        .unwrap_or(0)
                }
            })
            .collect();
        Some(Box::new(move |i, _| {
            for (s, min) in spreads.iter().zip(&mins) {
                let Some(here) = s.here(i) else {
                    return Err(Rejection::unresolvable(MISSING_LABEL_REASON));
                };
                if here + i64::from(s.c.self_match) - min > s.c.max_skew {
                    return Err(Rejection::resolvable(SKEW_REASON));
                }
            }
            Ok(())
        }))
    }
}

impl Score for PodTopologySpread {
    fn name(&self) -> &'static str {
        "PodTopologySpread"
    }

    /// Matching pods in the node's domains, each constraint weighted by log(domains + 2)
    /// (lower is better; normalized below).
    fn score_for<'a>(&'a self, pod: &'a PodInfo, snap: &'a Snapshot) -> Option<Rate<'a>> {
        if !pod.spread.iter().any(|c| !c.hard) {
            return None;
        }
        let spreads = spreads(pod, snap, false);
        let weights: Vec<f64> = spreads
            .iter()
            .map(|s| ((s.domains + 2) as f64).ln())
            .collect();
        Some(Box::new(move |i, _| {
            let mut total = 0.0;
            for (s, w) in spreads.iter().zip(&weights) {
                if let Some(here) = s.here(i) {
                    total += here as f64 * w;
                }
            }
            (total * 1000.0).round() as i64
        }))
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
    use crate::plugins::testing::{self, node, pod};
    use crate::snapshot::NodeInfo;
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
        testing::feasible(&PodTopologySpread, pod, nodes)
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
        let p = web("w3", "DoNotSchedule", 5, None);
        let err = testing::checks(&PodTopologySpread, &p, &nodes)
            .remove(4)
            .unwrap_err();
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
    fn node_taints_policy_honor_leaves_out_a_lost_zone() {
        let mut nodes = zones();
        nodes.truncate(3); // a, b in z1; c in z2
        nodes.push(node(json!({"metadata": {"name": "d", "labels": {"zone": "z3"}},
            "spec": {"taints": [{"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"}]}})));
        for (i, n) in [(0, "w1"), (1, "w2"), (2, "w3"), (2, "w4")] {
            nodes[i].add_pod(Arc::new(web(n, "DoNotSchedule", 1, None)));
        }
        // z1: 2, z2: 2, z3 (tainted): 0. By default z3 counts, and nothing fits.
        let ignore = web("w5", "DoNotSchedule", 1, None);
        assert_eq!(feasible(&ignore, &nodes), vec!["d"]);
        let mut honor = web("w5", "DoNotSchedule", 1, None);
        let spec = Arc::make_mut(&mut honor.pod).spec.as_mut().unwrap();
        spec.topology_spread_constraints.as_mut().unwrap()[0].node_taints_policy =
            Some("Honor".into());
        let honor = PodInfo::new(honor.pod.clone());
        // (d itself is left to the TaintToleration filter.)
        assert_eq!(feasible(&honor, &nodes), vec!["a", "b", "c", "d"]);
        // Tolerating the taint brings z3 back as a domain.
        let mut tolerant = (*honor.pod).clone();
        tolerant.spec.as_mut().unwrap().tolerations = Some(vec![serde_json::from_value(
            json!({"key": "node.kubernetes.io/unreachable", "operator": "Exists"}),
        )
        .unwrap()]);
        assert_eq!(
            feasible(&PodInfo::new(Arc::new(tolerant)), &nodes),
            vec!["d"]
        );
    }

    #[test]
    fn match_label_keys_count_only_pods_of_the_same_revision() {
        let rev = |name: &str, hash: &str| {
            pod(json!({"metadata": {"name": name, "namespace": "d",
                "labels": {"app": "web", "pod-template-hash": hash}},
                "spec": {"containers": [], "topologySpreadConstraints": [{"maxSkew": 1,
                    "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule",
                    "labelSelector": {"matchLabels": {"app": "web"}},
                    "matchLabelKeys": ["pod-template-hash"]}]}}))
        };
        let mut nodes = zones();
        nodes.truncate(3); // z1 and z2
        nodes[0].add_pod(Arc::new(rev("old-1", "v1")));
        nodes[1].add_pod(Arc::new(rev("old-2", "v1")));
        nodes[2].add_pod(Arc::new(rev("new-1", "v2")));
        // Old pods do not count for a new one: z1 has none of v2, z2 has one.
        assert_eq!(feasible(&rev("new-2", "v2"), &nodes), vec!["a", "b"]);
        // Without matchLabelKeys all three count: z1 has 2, so only z2 fits.
        assert_eq!(
            feasible(&web("w", "DoNotSchedule", 1, None), &nodes),
            vec!["c"]
        );
    }

    #[test]
    fn schedule_anyway_prefers_emptier_domains() {
        let mut nodes = zones();
        nodes[0].add_pod(Arc::new(web("w1", "ScheduleAnyway", 1, None)));
        nodes[1].add_pod(Arc::new(web("w2", "ScheduleAnyway", 1, None)));
        nodes[2].add_pod(Arc::new(web("w3", "ScheduleAnyway", 1, None)));
        let p = web("w4", "ScheduleAnyway", 1, None);
        assert_eq!(feasible(&p, &nodes).len(), 4, "never filters");
        let mut scores = testing::scores(&PodTopologySpread, &p, &nodes);
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
        let mut scores = testing::scores(&PodTopologySpread, &p, &nodes);
        PodTopologySpread.normalize(&mut scores);
        assert!(
            scores[2] > scores[1] && scores[1] > scores[0],
            "other zone, then other host: {scores:?}"
        );
        // An uncontrolled pod gets no default constraints.
        let lone = pod(
            json!({"metadata": {"name": "x", "namespace": "d", "labels": {"app": "db"}}, "spec": {"containers": []}}),
        );
        assert!(PodTopologySpread
            .score_for(&lone, &testing::snapshot(&nodes, &lone))
            .is_none());
    }
}
