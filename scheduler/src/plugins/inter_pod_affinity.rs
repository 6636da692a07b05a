//! `InterPodAffinity`: required pod affinity (run in the same topology domain — node, zone …
//! named by `topologyKey` — as pods matching a selector), required anti-affinity (never in
//! the same domain), and the symmetric rule that existing pods' anti-affinity keeps the new
//! pod out; preferred terms add or subtract their weights in the score.

use super::{Check, Filter, Rate, Rejection, Score};
use crate::snapshot::{AffinityTerm, PodInfo, Snapshot, Topology, NO_DOMAIN};

/// The `InterPodAffinity` filter and score. Namespace selectors are read against the
/// snapshot's namespace labels.
#[derive(Default, Clone)]
pub struct InterPodAffinity;

/// Reasons, in Kubernetes' words.
pub const AFFINITY_REASON: &str = "node(s) didn't match pod affinity rules";
/// The incoming pod's anti-affinity.
pub const ANTI_AFFINITY_REASON: &str = "node(s) didn't match pod anti-affinity rules";
/// Existing pods' anti-affinity.
pub const EXISTING_ANTI_AFFINITY_REASON: &str =
    "node(s) didn't satisfy existing pods anti-affinity rules";

/// The domains of one topology key that hold some of the pods in question.
struct Domains<'a> {
    topo: Option<&'a Topology>,
    /// Per domain id: whether it holds any.
    held: Vec<bool>,
    /// Whether any domain does.
    any: bool,
}

impl<'a> Domains<'a> {
    fn new(topo: Option<&'a Topology>, nodes: impl Iterator<Item = u32>) -> Self {
        let mut held = vec![false; topo.map_or(0, Topology::ids)];
        let mut any = false;
        if let Some(t) = topo {
            for n in nodes {
                let d = t.domain_of[n as usize];
                if d != NO_DOMAIN {
                    held[d as usize] = true;
                    any = true;
                }
            }
        }
        Domains { topo, held, any }
    }

    /// Whether node `i` is in one of the domains.
    fn has(&self, i: usize) -> bool {
        self.domain(i).is_some_and(|d| self.held[d as usize])
    }

    fn domain(&self, i: usize) -> Option<u32> {
        let d = *self.topo?.domain_of.get(i)?;
        (d != NO_DOMAIN).then_some(d)
    }
}

/// The domains holding pods that `term` selects.
fn selected<'a>(snap: &'a Snapshot, term: &AffinityTerm) -> Domains<'a> {
    let topo = snap.topology(&term.topology_key);
    let nodes = snap
        .group(&term.set)
        .into_iter()
        .flat_map(|g| g.nodes.iter())
        .filter(|(_, c)| c.all > 0)
        .map(|(&n, _)| n);
    Domains::new(topo, nodes)
}

impl Filter for InterPodAffinity {
    fn name(&self) -> &'static str {
        "InterPodAffinity"
    }

    fn filter_for<'a>(&'a self, pod: &'a PodInfo, snap: &'a Snapshot) -> Option<Check<'a>> {
        // Running pods whose anti-affinity keeps this pod out of their domains.
        let existing: Vec<Domains<'_>> = snap
            .anti_terms_selecting(pod)
            .map(|t| Domains::new(snap.topology(&t.term.topology_key), t.nodes.keys().copied()))
            .collect();
        let terms = &pod.affinity;
        if existing.is_empty() && terms.required.is_empty() && terms.required_anti.is_empty() {
            return None;
        }
        let affinity: Vec<Domains<'_>> = terms.required.iter().map(|t| selected(snap, t)).collect();
        let anti: Vec<Domains<'_>> = terms
            .required_anti
            .iter()
            .map(|t| selected(snap, t))
            .collect();
        // No pod anywhere matches the affinity terms, but the pod matches them itself: it may
        // go anywhere the topology labels exist (the first pod of a group that wants to be
        // together).
        let first_of_group = !terms.required.is_empty()
            && affinity.iter().all(|d| !d.any)
            && terms
                .required
                .iter()
                .all(|t| t.set.matches(pod, snap.namespaces()));
        Some(Box::new(move |i, _| {
            let ok = if first_of_group {
                affinity.iter().all(|d| d.domain(i).is_some())
            } else {
                affinity.iter().all(|d| d.has(i))
            };
            if !ok {
                return Err(Rejection::unresolvable(AFFINITY_REASON));
            }
            if anti.iter().any(|d| d.has(i)) {
                return Err(Rejection::resolvable(ANTI_AFFINITY_REASON));
            }
            if existing.iter().any(|d| d.has(i)) {
                return Err(Rejection::resolvable(EXISTING_ANTI_AFFINITY_REASON));
            }
            Ok(())
        }))
    }
}

impl Score for InterPodAffinity {
    fn name(&self) -> &'static str {
        "InterPodAffinity"
    }

    /// Per preferred term, its weight for each matching pod in the node's domain (added for
    /// affinity, subtracted for anti-affinity).
    fn score_for<'a>(&'a self, pod: &'a PodInfo, snap: &'a Snapshot) -> Option<Rate<'a>> {
        let terms = &pod.affinity;
        if terms.preferred.is_empty() && terms.preferred_anti.is_empty() {
            return None;
        }
        let signed = terms
            .preferred
            .iter()
            .map(|t| (t, 1))
            .chain(terms.preferred_anti.iter().map(|t| (t, -1)));
        let mut per_term: Vec<(&Topology, Vec<i64>)> = Vec::new();
        for (term, sign) in signed {
            let (Some(topo), Some(group)) =
                (snap.topology(&term.topology_key), snap.group(&term.set))
            else {
                continue;
            };
            let mut weights = vec![0i64; topo.ids()];
            for (&node, c) in &group.nodes {
                let d = topo.domain_of[node as usize];
                if d != NO_DOMAIN {
                    weights[d as usize] += sign * term.weight * i64::from(c.all);
                }
            }
            per_term.push((topo, weights));
        }
        Some(Box::new(move |i, _| {
            per_term
                .iter()
                .filter_map(|(topo, w)| w.get(*topo.domain_of.get(i)? as usize))
                .sum()
        }))
    }

    /// Maps the range of raw scores (which may be negative) onto 0–100.
    fn normalize(&self, scores: &mut [i64]) {
        let (min, max) = (
            scores.iter().copied().min().unwrap_or(0),
            scores.iter().copied().max().unwrap_or(0),
        );
        if max == min {
            scores.iter_mut().for_each(|s| *s = 0);
            return;
        }
        for s in scores.iter_mut() {
            *s = (*s - min) * super::MAX_SCORE / (max - min);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::{self, node, pod};
    use crate::snapshot::{NodeInfo, Snapshot};
    use serde_json::json;
    use std::sync::Arc;

    fn nodes() -> Vec<NodeInfo> {
        vec![
            node(
                json!({"metadata": {"name": "a", "labels": {"kubernetes.io/hostname": "a", "topology.kubernetes.io/zone": "z1"}}}),
            ),
            node(
                json!({"metadata": {"name": "b", "labels": {"kubernetes.io/hostname": "b", "topology.kubernetes.io/zone": "z1"}}}),
            ),
            node(
                json!({"metadata": {"name": "c", "labels": {"kubernetes.io/hostname": "c", "topology.kubernetes.io/zone": "z2"}}}),
            ),
        ]
    }

    fn web(name: &str, extra: serde_json::Value) -> PodInfo {
        let mut spec = json!({"containers": []});
        if let Some(a) = extra.get("affinity") {
            spec["affinity"] = a.clone();
        }
        pod(
            json!({"metadata": {"name": name, "namespace": "d", "labels": {"app": "web"}}, "spec": spec}),
        )
    }

    fn fits(p: &InterPodAffinity, pod: &PodInfo, nodes: &[NodeInfo]) -> Vec<String> {
        testing::feasible(p, pod, nodes)
    }

    fn anti(key: &str) -> serde_json::Value {
        json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": key}]}}})
    }

    #[test]
    fn anti_affinity_one_per_host_and_per_zone() {
        let plugin = InterPodAffinity;
        let mut ns = nodes();
        ns[0].add_pod(Arc::new(web("w1", anti("kubernetes.io/hostname"))));
        let p = web("w2", anti("kubernetes.io/hostname"));
        assert_eq!(fits(&plugin, &p, &ns), vec!["b", "c"]);
        let z = web("w3", anti("topology.kubernetes.io/zone"));
        assert_eq!(fits(&plugin, &z, &ns), vec!["c"]);
        // Symmetry: a pod without rules is kept away from w1, whose anti-affinity matches it.
        let plain = web("w4", json!({}));
        assert_eq!(fits(&plugin, &plain, &ns), vec!["b", "c"]);
        assert_eq!(
            testing::checks(&plugin, &plain, &ns)
                .remove(0)
                .unwrap_err()
                .reasons,
            vec![EXISTING_ANTI_AFFINITY_REASON]
        );
        // Other namespaces are not selected by default.
        let other = pod(
            json!({"metadata": {"name": "x", "namespace": "other", "labels": {"app": "web"}}, "spec": {"containers": []}}),
        );
        assert_eq!(fits(&plugin, &other, &ns), vec!["a", "b", "c"]);
    }

    #[test]
    fn affinity_follows_matching_pods_and_lets_the_first_of_a_group_anywhere() {
        let plugin = InterPodAffinity;
        let with = json!({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "topology.kubernetes.io/zone"}]}}});
        let mut ns = nodes();
        let first = web("w1", with.clone());
        assert_eq!(
            fits(&plugin, &first, &ns),
            vec!["a", "b", "c"],
            "first of its group"
        );
        ns[2].add_pod(Arc::new(first));
        let second = web("w2", with);
        assert_eq!(fits(&plugin, &second, &ns), vec!["c"]);
        let err = testing::checks(&plugin, &second, &ns)
            .remove(0)
            .unwrap_err();
        assert_eq!(err.reasons, vec![AFFINITY_REASON]);
        assert!(err.unresolvable);
    }

    #[test]
    fn namespace_selectors_pick_namespaces_by_label() {
        let plugin = InterPodAffinity;
        let mut ns = nodes();
        ns[0].add_pod(Arc::new(pod(json!({"metadata": {"name": "x", "namespace": "team-a", "labels": {"app": "web"}}, "spec": {"containers": []}}))));
        let p = pod(
            json!({"metadata": {"name": "y", "namespace": "d"}, "spec": {"containers": [], "affinity": {"podAntiAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [{"labelSelector": {"matchLabels": {"app": "web"}},
            "namespaceSelector": {"matchLabels": {"team": "a"}}, "topologyKey": "kubernetes.io/hostname"}]}}}}),
        );
        let feasible = |snap: &mut Snapshot| {
            snap.prepare(&p);
            let check = plugin.filter_for(&p, snap).unwrap();
            snap.nodes
                .iter()
                .enumerate()
                .filter(|(i, n)| check(*i, n).is_ok())
                .map(|(_, n)| n.name.clone())
                .collect::<Vec<_>>()
        };
        let mut snap = Snapshot::from_nodes(ns);
        let labelled = |team: &str| {
            [(
                "team-a".to_string(),
                [("team".to_string(), team.to_string())].into(),
            )]
            .into()
        };
        snap.set_namespaces(labelled("a"));
        assert_eq!(feasible(&mut snap), vec!["b", "c"]);
        // The namespace is relabelled: its pods no longer count.
        snap.set_namespaces(labelled("b"));
        assert_eq!(feasible(&mut snap), vec!["a", "b", "c"]);
    }

    #[test]
    fn preferred_terms_attract_and_repel() {
        let plugin = InterPodAffinity;
        let mut ns = nodes();
        ns[0].add_pod(Arc::new(web("w1", json!({}))));
        let p = pod(
            json!({"metadata": {"name": "n", "namespace": "d"}, "spec": {"containers": [], "affinity": {
            "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 100, "podAffinityTerm":
                {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "topology.kubernetes.io/zone"}}]}}}}),
        );
        let mut scores = testing::scores(&plugin, &p, &ns);
        assert_eq!(scores, vec![-100, -100, 0]);
        Score::normalize(&plugin, &mut scores);
        assert_eq!(scores, vec![0, 0, 100]);
    }
}
