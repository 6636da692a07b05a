//! The scheduling framework: a profile's filters and weighted scores run over the snapshot
//! for one pod, ending in the chosen node or a `FitError` that explains, node by node, why
//! none would do (kube-scheduler's message format).

use std::collections::BTreeMap;

use rand::Rng;

use crate::plugins::{Check, Filter, Rejection, Score};
use crate::snapshot::{NodeInfo, PodInfo, Snapshot};

/// A score plugin with its weight.
pub struct Weighted {
    /// The plugin.
    pub plugin: Box<dyn Score>,
    /// Its weight (kube-scheduler's default weights are 1, `TaintToleration` 3,
    /// `NodeAffinity` 2, `InterPodAffinity` 2, `PodTopologySpread` 2).
    pub weight: i64,
}

/// One scheduling profile: which plugins run, how they weigh, how many nodes to score.
pub struct Profile {
    /// The scheduler name pods select it by (`spec.schedulerName`).
    pub scheduler_name: String,
    /// Filters, in order; the first that rejects a node decides its reason.
    pub filters: Vec<Box<dyn Filter>>,
    /// Scores with weights.
    pub scores: Vec<Weighted>,
    /// Stop looking once this share of the nodes is feasible (0: kube-scheduler's adaptive
    /// default, 50% less 1% per 125 nodes, at least 5%); at least 100 nodes are always
    /// looked at when there are that many.
    pub percentage_of_nodes_to_score: u32,
    /// With `VolumeBinding` enabled: how long PreBind waits for a pod's claims to be bound
    /// (`bindTimeoutSeconds`).
    pub volume_binding: Option<std::time::Duration>,
}

/// Why a pod fits no node: how many nodes gave each reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FitError {
    /// How many nodes there are.
    pub nodes: usize,
    /// Reason → number of nodes.
    pub reasons: BTreeMap<String, usize>,
    /// Nodes where evicting pods could help (for preemption).
    pub resolvable_nodes: Vec<usize>,
    /// A PreFilter's verdict on the pod as a whole (no node was looked at).
    pub pre_filter: Option<String>,
}

impl FitError {
    /// The pod was turned away by a PreFilter before any node was looked at.
    pub fn pre_filtered(nodes: usize, message: String) -> Self {
        FitError {
            nodes,
            reasons: BTreeMap::new(),
            resolvable_nodes: Vec::new(),
            pre_filter: Some(message),
        }
    }
}

impl std::fmt::Display for FitError {
    /// `0/5 nodes are available: 2 Insufficient cpu, 3 node(s) had untolerated taint {a: b}.`
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(m) = &self.pre_filter {
            return write!(f, "0/{} nodes are available: {m}.", self.nodes);
        }
        let mut parts: Vec<String> = self
            .reasons
            .iter()
            .map(|(r, n)| format!("{n} {r}"))
            .collect();
        parts.sort();
        if parts.is_empty() {
            write!(f, "0/{} nodes are available.", self.nodes)
        } else {
            write!(
                f,
                "0/{} nodes are available: {}.",
                self.nodes,
                parts.join(", ")
            )
        }
    }
}

/// Where a scheduling attempt landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The index of the chosen node in the snapshot.
    pub node: usize,
    /// How many nodes were feasible among those looked at.
    pub feasible: usize,
}

impl Profile {
    /// How many feasible nodes to find before scoring, for a cluster of `n` nodes.
    pub fn nodes_to_find(&self, n: usize) -> usize {
        const MIN_FEASIBLE: usize = 100;
        if n <= MIN_FEASIBLE {
            return n;
        }
        let pct = if self.percentage_of_nodes_to_score == 0 {
            (50 - (n / 125) as i64).max(5) as usize
        } else {
            (self.percentage_of_nodes_to_score as usize).min(100)
        };
        (n * pct / 100).max(MIN_FEASIBLE)
    }

    /// The filters' checks for `pod` (the snapshot prepared for it), or the first
    /// PreFilter's verdict that no node will do.
    pub fn checks<'a>(
        &'a self,
        pod: &'a PodInfo,
        snap: &'a Snapshot,
    ) -> Result<Vec<Check<'a>>, String> {
        let mut out = Vec::new();
        for f in &self.filters {
            if let Some(c) = f.pre_filter(pod, snap)? {
                out.push(c);
            }
        }
        Ok(out)
    }

    /// Runs `checks` on the node at index `i`; the first rejection decides.
    pub fn filter(checks: &[Check<'_>], i: usize, node: &NodeInfo) -> Result<(), Rejection> {
        for c in checks {
            c(i, node)?;
        }
        Ok(())
    }

    /// Chooses a node for `pod`, starting the search at node `start` (rotated by the caller
    /// so successive pods look at different nodes first).
    pub fn schedule(
        &self,
        pod: &PodInfo,
        snap: &mut Snapshot,
        start: usize,
    ) -> Result<Placement, FitError> {
        snap.prepare(pod);
        self.schedule_prepared(pod, snap, start)
    }

    /// [`Profile::schedule`] on a snapshot already prepared for `pod`.
    pub fn schedule_prepared(
        &self,
        pod: &PodInfo,
        snap: &Snapshot,
        start: usize,
    ) -> Result<Placement, FitError> {
        let nodes = &snap.nodes;
        let n = nodes.len();
        let want = self.nodes_to_find(n);
        let checks = self
            .checks(pod, snap)
            .map_err(|m| FitError::pre_filtered(n, m))?;
        let mut feasible = Vec::with_capacity(want.min(n));
        let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
        let mut resolvable_nodes = Vec::new();
        for i in 0..n {
            let idx = (start + i) % n.max(1);
            match Self::filter(&checks, idx, &nodes[idx]) {
                Ok(()) => {
                    feasible.push(idx);
                    if feasible.len() >= want {
                        break;
                    }
                }
                Err(r) => {
                    if !r.unresolvable {
                        resolvable_nodes.push(idx);
                    }
                    for reason in r.reasons {
                        *reasons.entry(reason).or_default() += 1;
                    }
                }
            }
        }
        drop(checks);
        if feasible.is_empty() {
            return Err(FitError {
                nodes: n,
                reasons,
                resolvable_nodes,
                pre_filter: None,
            });
        }
        if feasible.len() == 1 || self.scores.is_empty() {
            return Ok(Placement {
                node: feasible[0],
                feasible: feasible.len(),
            });
        }
        let mut totals = vec![0i64; feasible.len()];
        let mut raw = vec![0i64; feasible.len()];
        for w in &self.scores {
            let Some(rate) = w.plugin.score_for(pod, snap) else {
                // Every node would rate the same: the choice cannot change.
                continue;
            };
            for (slot, &idx) in raw.iter_mut().zip(&feasible) {
                *slot = rate(idx, &nodes[idx]);
            }
            w.plugin.normalize(&mut raw);
            for (t, s) in totals.iter_mut().zip(&raw) {
                *t += s * w.weight;
            }
        }
        // The best total; ties broken at random (reservoir sampling).
        let mut rng = rand::rng();
        let (mut best, mut best_score, mut ties) = (0usize, i64::MIN, 0u32);
        for (i, &t) in totals.iter().enumerate() {
            if t > best_score {
                (best, best_score, ties) = (i, t, 1);
            } else if t == best_score {
                ties += 1;
                if rng.random_range(0..ties) == 0 {
                    best = i;
                }
            }
        }
        Ok(Placement {
            node: feasible[best],
            feasible: feasible.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::node_resources::{NodeResourcesFit, NodeResourcesScore, Strategy};
    use crate::plugins::taint_toleration::TaintToleration;
    use crate::plugins::testing::{node, pod};
    use serde_json::json;
    use std::sync::Arc;

    fn profile(strategy: Strategy) -> Profile {
        Profile {
            scheduler_name: "default-scheduler".into(),
            filters: vec![Box::new(NodeResourcesFit), Box::new(TaintToleration)],
            scores: vec![
                Weighted {
                    plugin: Box::new(NodeResourcesScore {
                        strategy,
                        ..Default::default()
                    }),
                    weight: 1,
                },
                Weighted {
                    plugin: Box::new(TaintToleration),
                    weight: 3,
                },
            ],
            percentage_of_nodes_to_score: 0,
            volume_binding: None,
        }
    }

    fn n(name: &str, cpu: &str) -> NodeInfo {
        node(
            json!({"metadata": {"name": name}, "status": {"allocatable": {"cpu": cpu, "memory": "8Gi", "pods": "110"}}}),
        )
    }

    fn p(name: &str, cpu: &str) -> PodInfo {
        pod(
            json!({"metadata": {"name": name, "namespace": "d"}, "spec": {"containers": [
            {"name": "c", "resources": {"requests": {"cpu": cpu, "memory": "1Gi"}}}]}}),
        )
    }

    #[test]
    fn spread_picks_the_emptiest_binpack_the_fullest() {
        let mut nodes = vec![n("a", "4"), n("b", "4")];
        nodes[0].add_pod(Arc::new(p("x", "2")));
        let mut snap = Snapshot::from_nodes(nodes);
        let pod = p("new", "1");
        let spread = profile(Strategy::LeastAllocated)
            .schedule(&pod, &mut snap, 0)
            .unwrap();
        assert_eq!(snap.nodes[spread.node].name, "b");
        let pack = profile(Strategy::MostAllocated)
            .schedule(&pod, &mut snap, 0)
            .unwrap();
        assert_eq!(snap.nodes[pack.node].name, "a");
    }

    #[test]
    fn ties_are_broken_at_random() {
        let nodes: Vec<NodeInfo> = (0..4).map(|i| n(&format!("n{i}"), "4")).collect();
        let mut snap = Snapshot::from_nodes(nodes);
        let pod = p("new", "1");
        let prof = profile(Strategy::LeastAllocated);
        let chosen: std::collections::HashSet<usize> = (0..200)
            .map(|_| prof.schedule(&pod, &mut snap, 0).unwrap().node)
            .collect();
        assert!(chosen.len() > 1, "always the same node: {chosen:?}");
    }

    #[test]
    fn explains_why_no_node_fits_as_kubernetes_does() {
        let mut nodes = vec![n("a", "1"), n("b", "1"), n("c", "8")];
        nodes[2] = node(
            json!({"metadata": {"name": "c"}, "spec": {"taints": [{"key": "k", "value": "v", "effect": "NoSchedule"}]},
            "status": {"allocatable": {"cpu": "8", "memory": "8Gi", "pods": "110"}}}),
        );
        let err = profile(Strategy::LeastAllocated)
            .schedule(&p("big", "2"), &mut Snapshot::from_nodes(nodes), 0)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "0/3 nodes are available: 1 node(s) had untolerated taint {k: v}, 2 Insufficient cpu."
        );
        assert_eq!(err.resolvable_nodes, vec![0, 1]);
    }

    #[test]
    fn large_clusters_score_a_share_of_the_nodes() {
        let prof = profile(Strategy::LeastAllocated);
        assert_eq!(prof.nodes_to_find(50), 50);
        assert_eq!(prof.nodes_to_find(1000), 420);
        assert_eq!(prof.nodes_to_find(5000), 500);
        assert_eq!(prof.nodes_to_find(200), 100);
    }
}
