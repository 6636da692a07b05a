//! Filter and score plugins, one file each, named as kube-scheduler names them.
//!
//! A filter says whether a pod may run on a node and, if not, why (the reason words appear
//! in the pod's `Unschedulable` message, counted per node as Kubernetes does). A score rates
//! a feasible node from 0 to 100; the framework weights and sums the scores.

pub mod image_locality;
pub mod inter_pod_affinity;
pub mod node_affinity;
pub mod node_name;
pub mod node_ports;
pub mod node_resources;
pub mod node_unschedulable;
pub mod node_volume_limits;
pub mod pod_topology_spread;
pub mod taint_toleration;
pub mod volume_binding;
pub mod volume_restrictions;

use crate::snapshot::{NodeInfo, PodInfo, Snapshot};

/// A filter's check for one pod, worked out once per scheduling attempt and then asked of
/// each node (by its index in the snapshot).
pub type Check<'a> = Box<dyn Fn(usize, &NodeInfo) -> Result<(), Rejection> + Send + Sync + 'a>;

/// A score's rating for one pod, worked out once per scheduling attempt and then asked of
/// each feasible node (by its index in the snapshot).
pub type Rate<'a> = Box<dyn Fn(usize, &NodeInfo) -> i64 + Send + Sync + 'a>;

/// The best score a plugin gives.
pub const MAX_SCORE: i64 = 100;

/// Why a node cannot take a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The reasons, in Kubernetes' words ("Insufficient cpu").
    pub reasons: Vec<String>,
    /// True when preempting pods on the node could not help (a taint, a selector, ...).
    pub unresolvable: bool,
}

impl Rejection {
    /// A rejection that evicting pods might cure (resources, ports).
    pub fn resolvable(reason: impl Into<String>) -> Self {
        Rejection {
            reasons: vec![reason.into()],
            unresolvable: false,
        }
    }

    /// A rejection that no eviction can cure.
    pub fn unresolvable(reason: impl Into<String>) -> Self {
        Rejection {
            reasons: vec![reason.into()],
            unresolvable: true,
        }
    }
}

/// Decides whether a pod may run on a node.
pub trait Filter: Send + Sync {
    /// The plugin's name in the configuration (`NodeResourcesFit`, ...).
    fn name(&self) -> &'static str;
    /// The check for `pod` (kube-scheduler's PreFilter and Filter in one): whatever needs
    /// the whole snapshot is worked out here, once; `None` when the plugin has nothing to
    /// check for this pod (every node passes).
    fn filter_for<'a>(&'a self, pod: &'a PodInfo, snap: &'a Snapshot) -> Option<Check<'a>>;
    /// [`Filter::filter_for`] for plugins whose PreFilter may turn the pod away as a whole
    /// (kube's `UnschedulableAndUnresolvable` from PreFilter): `Err` carries kube's message,
    /// which becomes the whole explanation of the failure, no node being looked at.
    fn pre_filter<'a>(
        &'a self,
        pod: &'a PodInfo,
        snap: &'a Snapshot,
    ) -> Result<Option<Check<'a>>, String> {
        Ok(self.filter_for(pod, snap))
    }
}

/// Rates a node for a pod.
pub trait Score: Send + Sync {
    /// The plugin's name in the configuration.
    fn name(&self) -> &'static str;
    /// The raw rating for `pod` (kube-scheduler's PreScore and Score in one); `None` when
    /// every node would rate the same, so the plugin cannot change the choice.
    fn score_for<'a>(&'a self, pod: &'a PodInfo, snap: &'a Snapshot) -> Option<Rate<'a>>;
    /// Turns the raw scores of every feasible node into 0–100 (default: as they are).
    fn normalize(&self, _scores: &mut [i64]) {}
}

/// Scales raw scores so the highest becomes [`MAX_SCORE`] (or, `reverse`, the lowest).
pub fn normalize_to_max(scores: &mut [i64], reverse: bool) {
    let max = scores.iter().copied().max().unwrap_or(0);
    for s in scores.iter_mut() {
        let v = if max == 0 { 0 } else { *s * MAX_SCORE / max };
        *s = if reverse { MAX_SCORE - v } else { v };
    }
    if max == 0 && reverse {
        scores.iter_mut().for_each(|s| *s = MAX_SCORE);
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Hand-built nodes and pods for the plugins' unit tests.

    use std::sync::Arc;

    use k8s_openapi::api::core::v1::{Node, Pod};
    use serde_json::Value;

    use super::{Filter, Rejection, Score};
    use crate::snapshot::{NodeInfo, PodInfo, Snapshot};

    pub fn node(v: Value) -> NodeInfo {
        let n: Node = serde_json::from_value(v).unwrap();
        NodeInfo::new(Arc::new(n))
    }

    pub fn pod(v: Value) -> PodInfo {
        let p: Pod = serde_json::from_value(v).unwrap();
        PodInfo::new(Arc::new(p))
    }

    /// A snapshot of `nodes` (with the pods already added to them), prepared for `pod`.
    pub fn snapshot(nodes: &[NodeInfo], pod: &PodInfo) -> Snapshot {
        let mut snap = Snapshot::from_nodes(nodes.to_vec());
        snap.prepare(pod);
        snap
    }

    /// The filter's verdict on every node.
    pub fn checks(f: &dyn Filter, pod: &PodInfo, nodes: &[NodeInfo]) -> Vec<Result<(), Rejection>> {
        let snap = snapshot(nodes, pod);
        let check = f.filter_for(pod, &snap);
        snap.nodes
            .iter()
            .enumerate()
            .map(|(i, n)| check.as_ref().map_or(Ok(()), |c| c(i, n)))
            .collect()
    }

    /// The filter's verdict on one node.
    pub fn check(f: &dyn Filter, pod: &PodInfo, node: &NodeInfo) -> Result<(), Rejection> {
        checks(f, pod, std::slice::from_ref(node)).remove(0)
    }

    /// The names of the nodes the filter lets the pod onto.
    pub fn feasible(f: &dyn Filter, pod: &PodInfo, nodes: &[NodeInfo]) -> Vec<String> {
        checks(f, pod, nodes)
            .into_iter()
            .zip(nodes)
            .filter(|(r, _)| r.is_ok())
            .map(|(_, n)| n.name.clone())
            .collect()
    }

    /// The raw scores of every node (0 for all when the plugin does not apply).
    pub fn scores(s: &dyn Score, pod: &PodInfo, nodes: &[NodeInfo]) -> Vec<i64> {
        let snap = snapshot(nodes, pod);
        let rate = s.score_for(pod, &snap);
        snap.nodes
            .iter()
            .enumerate()
            .map(|(i, n)| rate.as_ref().map_or(0, |r| r(i, n)))
            .collect()
    }

    /// The raw score of one node.
    pub fn rate(s: &dyn Score, pod: &PodInfo, node: &NodeInfo) -> i64 {
        scores(s, pod, std::slice::from_ref(node))[0]
    }
}
