//! `InterPodAffinity`: required pod affinity (run in the same topology domain — node, zone …
//! named by `topologyKey` — as pods matching a selector), required anti-affinity (never in
//! the same domain), and the symmetric rule that existing pods' anti-affinity keeps the new
//! pod out; preferred terms add or subtract their weights in the score.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Pod, PodAffinityTerm};

use super::{CycleState, Filter, Rejection, Score};
use crate::selector;
use crate::snapshot::{NodeInfo, PodInfo};

/// Namespace name → labels, for `namespaceSelector`.
pub type NamespaceLabels = Arc<parking_lot::RwLock<HashMap<String, BTreeMap<String, String>>>>;

/// The `InterPodAffinity` filter and score.
#[derive(Default, Clone)]
pub struct InterPodAffinity {
    /// Namespace labels, kept up to date by the scheduler's informers.
    pub namespaces: NamespaceLabels,
}

/// Reasons, in Kubernetes' words.
pub const AFFINITY_REASON: &str = "node(s) didn't match pod affinity rules";
/// The incoming pod's anti-affinity.
pub const ANTI_AFFINITY_REASON: &str = "node(s) didn't match pod anti-affinity rules";
/// Existing pods' anti-affinity.
pub const EXISTING_ANTI_AFFINITY_REASON: &str =
    "node(s) didn't satisfy existing pods anti-affinity rules";

const NAME: &str = "InterPodAffinity";

/// (topology key, value) → how many matching pods there.
type Counts = HashMap<(String, String), i64>;

struct FilterState {
    /// Domains holding pods whose anti-affinity matches the incoming pod.
    existing_anti: Counts,
    /// Per required affinity term: domains holding pods that match it.
    affinity: Vec<Counts>,
    /// Domains holding pods that match one of the incoming pod's anti-affinity terms.
    anti: Counts,
    /// No pod anywhere matches the affinity terms, but the pod matches them itself: it may
    /// go anywhere (the first pod of a group that wants to be together).
    first_of_group: bool,
}

fn required(pod: &Pod, anti: bool) -> &[PodAffinityTerm] {
    let a = pod.spec.as_ref().and_then(|s| s.affinity.as_ref());
    let terms = if anti {
        a.and_then(|a| a.pod_anti_affinity.as_ref()).and_then(|p| {
            p.required_during_scheduling_ignored_during_execution
                .as_deref()
        })
    } else {
        a.and_then(|a| a.pod_affinity.as_ref()).and_then(|p| {
            p.required_during_scheduling_ignored_during_execution
                .as_deref()
        })
    };
    terms.unwrap_or(&[])
}

impl InterPodAffinity {
    /// Whether `term`, written in a pod of namespace `owner_ns`, selects `target`.
    fn term_selects(&self, term: &PodAffinityTerm, owner_ns: &str, target: &Pod) -> bool {
        let target_ns = target.metadata.namespace.as_deref().unwrap_or("");
        let in_namespace = match (&term.namespaces, &term.namespace_selector) {
            (None, None) => target_ns == owner_ns,
            (names, sel) => {
                let listed = names.iter().flatten().any(|n| n == target_ns)
                    || (names.as_ref().is_some_and(|n| n.is_empty())
                        && sel.is_none()
                        && target_ns == owner_ns);
                let selected = sel.as_ref().is_some_and(|s| {
                    let ns = self.namespaces.read();
                    selector::matches(Some(s), ns.get(target_ns))
                });
                listed || selected
            }
        };
        in_namespace
            && selector::matches(
                term.label_selector.as_ref(),
                target.metadata.labels.as_ref(),
            )
    }
}

fn ns_of(p: &Pod) -> &str {
    p.metadata.namespace.as_deref().unwrap_or("")
}

impl Filter for InterPodAffinity {
    fn name(&self) -> &'static str {
        NAME
    }

    fn pre_filter(&self, pod: &PodInfo, nodes: &[NodeInfo], state: &mut CycleState) {
        let incoming = pod.pod.as_ref();
        let affinity_terms = required(incoming, false);
        let anti_terms = required(incoming, true);
        let mut st = FilterState {
            existing_anti: Counts::new(),
            affinity: vec![Counts::new(); affinity_terms.len()],
            anti: Counts::new(),
            first_of_group: false,
        };
        for node in nodes {
            for existing in &node.pods {
                let e = existing.pod.as_ref();
                for term in required(e, true) {
                    if let Some(v) = node.label(&term.topology_key) {
                        if self.term_selects(term, ns_of(e), incoming) {
                            *st.existing_anti
                                .entry((term.topology_key.clone(), v.to_string()))
                                .or_default() += 1;
                        }
                    }
                }
                for (i, term) in affinity_terms.iter().enumerate() {
                    if let Some(v) = node.label(&term.topology_key) {
                        if self.term_selects(term, ns_of(incoming), e) {
                            *st.affinity[i]
                                .entry((term.topology_key.clone(), v.to_string()))
                                .or_default() += 1;
                        }
                    }
                }
                for term in anti_terms {
                    if let Some(v) = node.label(&term.topology_key) {
                        if self.term_selects(term, ns_of(incoming), e) {
                            *st.anti
                                .entry((term.topology_key.clone(), v.to_string()))
                                .or_default() += 1;
                        }
                    }
                }
            }
        }
        st.first_of_group = !affinity_terms.is_empty()
            && st.affinity.iter().all(|c| c.is_empty())
            && affinity_terms
                .iter()
                .all(|t| self.term_selects(t, ns_of(incoming), incoming));
        state.put(NAME, st);
    }

    fn filter(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Result<(), Rejection> {
        let Some(st) = state.get::<FilterState>(NAME) else {
            return Ok(());
        };
        let in_domain = |counts: &Counts, key: &str| {
            node.label(key).is_some_and(|v| {
                counts
                    .get(&(key.to_string(), v.to_string()))
                    .is_some_and(|n| *n > 0)
            })
        };
        let incoming = pod.pod.as_ref();
        let terms = required(incoming, false);
        if !terms.is_empty() && !st.first_of_group {
            let ok = terms
                .iter()
                .zip(&st.affinity)
                .all(|(t, counts)| in_domain(counts, &t.topology_key));
            if !ok {
                return Err(Rejection::unresolvable(AFFINITY_REASON));
            }
        } else if st.first_of_group && terms.iter().any(|t| node.label(&t.topology_key).is_none()) {
            return Err(Rejection::unresolvable(AFFINITY_REASON));
        }
        if required(incoming, true)
            .iter()
            .any(|t| in_domain(&st.anti, &t.topology_key))
        {
            return Err(Rejection::resolvable(ANTI_AFFINITY_REASON));
        }
        let existing_keys: HashSet<&str> =
            st.existing_anti.keys().map(|(k, _)| k.as_str()).collect();
        if existing_keys
            .iter()
            .any(|k| in_domain(&st.existing_anti, k))
        {
            return Err(Rejection::resolvable(EXISTING_ANTI_AFFINITY_REASON));
        }
        Ok(())
    }
}

/// (topology key, value) → summed weight.
struct ScoreState(HashMap<(String, String), i64>);

impl Score for InterPodAffinity {
    fn name(&self) -> &'static str {
        NAME
    }

    fn pre_score(&self, pod: &PodInfo, nodes: &[NodeInfo], state: &mut CycleState) {
        let incoming = pod.pod.as_ref();
        let a = incoming.spec.as_ref().and_then(|s| s.affinity.as_ref());
        let preferred = a
            .and_then(|a| a.pod_affinity.as_ref())
            .and_then(|p| {
                p.preferred_during_scheduling_ignored_during_execution
                    .as_deref()
            })
            .unwrap_or(&[]);
        let preferred_anti = a
            .and_then(|a| a.pod_anti_affinity.as_ref())
            .and_then(|p| {
                p.preferred_during_scheduling_ignored_during_execution
                    .as_deref()
            })
            .unwrap_or(&[]);
        let mut weights: HashMap<(String, String), i64> = HashMap::new();
        for node in nodes {
            for existing in &node.pods {
                let e = existing.pod.as_ref();
                for (terms, sign) in [(preferred, 1i64), (preferred_anti, -1)] {
                    for w in terms {
                        let t = &w.pod_affinity_term;
                        if let Some(v) = node.label(&t.topology_key) {
                            if self.term_selects(t, ns_of(incoming), e) {
                                *weights
                                    .entry((t.topology_key.clone(), v.to_string()))
                                    .or_default() += sign * i64::from(w.weight);
                            }
                        }
                    }
                }
            }
        }
        state.put(NAME, ScoreState(weights));
    }

    fn score(&self, state: &CycleState, _pod: &PodInfo, node: &NodeInfo) -> i64 {
        let Some(ScoreState(weights)) = state.get::<ScoreState>(NAME) else {
            return 0;
        };
        weights
            .iter()
            .filter(|((k, v), _)| node.label(k) == Some(v.as_str()))
            .map(|(_, w)| *w)
            .sum()
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
    use crate::plugins::testing::{node, pod};
    use serde_json::json;

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
        let mut st = CycleState::default();
        p.pre_filter(pod, nodes, &mut st);
        nodes
            .iter()
            .filter(|n| p.filter(&st, pod, n).is_ok())
            .map(|n| n.name.clone())
            .collect()
    }

    fn anti(key: &str) -> serde_json::Value {
        json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": key}]}}})
    }

    #[test]
    fn anti_affinity_one_per_host_and_per_zone() {
        let plugin = InterPodAffinity::default();
        let mut ns = nodes();
        ns[0].add_pod(Arc::new(web("w1", anti("kubernetes.io/hostname"))));
        let p = web("w2", anti("kubernetes.io/hostname"));
        assert_eq!(fits(&plugin, &p, &ns), vec!["b", "c"]);
        let z = web("w3", anti("topology.kubernetes.io/zone"));
        assert_eq!(fits(&plugin, &z, &ns), vec!["c"]);
        // Symmetry: a pod without rules is kept away from w1, whose anti-affinity matches it.
        let plain = web("w4", json!({}));
        assert_eq!(fits(&plugin, &plain, &ns), vec!["b", "c"]);
        let mut st = CycleState::default();
        plugin.pre_filter(&plain, &ns, &mut st);
        assert_eq!(
            plugin.filter(&st, &plain, &ns[0]).unwrap_err().reasons,
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
        let plugin = InterPodAffinity::default();
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
        let mut st = CycleState::default();
        plugin.pre_filter(&second, &ns, &mut st);
        let err = plugin.filter(&st, &second, &ns[0]).unwrap_err();
        assert_eq!(err.reasons, vec![AFFINITY_REASON]);
        assert!(err.unresolvable);
    }

    #[test]
    fn namespace_selectors_pick_namespaces_by_label() {
        let plugin = InterPodAffinity::default();
        plugin.namespaces.write().insert(
            "team-a".into(),
            [("team".to_string(), "a".to_string())].into(),
        );
        let mut ns = nodes();
        ns[0].add_pod(Arc::new(pod(json!({"metadata": {"name": "x", "namespace": "team-a", "labels": {"app": "web"}}, "spec": {"containers": []}}))));
        let p = pod(
            json!({"metadata": {"name": "y", "namespace": "d"}, "spec": {"containers": [], "affinity": {"podAntiAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [{"labelSelector": {"matchLabels": {"app": "web"}},
            "namespaceSelector": {"matchLabels": {"team": "a"}}, "topologyKey": "kubernetes.io/hostname"}]}}}}),
        );
        assert_eq!(fits(&plugin, &p, &ns), vec!["b", "c"]);
    }

    #[test]
    fn preferred_terms_attract_and_repel() {
        let plugin = InterPodAffinity::default();
        let mut ns = nodes();
        ns[0].add_pod(Arc::new(web("w1", json!({}))));
        let p = pod(
            json!({"metadata": {"name": "n", "namespace": "d"}, "spec": {"containers": [], "affinity": {
            "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 100, "podAffinityTerm":
                {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "topology.kubernetes.io/zone"}}]}}}}),
        );
        let mut st = CycleState::default();
        plugin.pre_score(&p, &ns, &mut st);
        let mut scores: Vec<i64> = ns.iter().map(|n| plugin.score(&st, &p, n)).collect();
        assert_eq!(scores, vec![-100, -100, 0]);
        Score::normalize(&plugin, &mut scores);
        assert_eq!(scores, vec![0, 0, 100]);
    }
}
