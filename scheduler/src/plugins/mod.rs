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
pub mod pod_topology_spread;
pub mod taint_toleration;

use std::any::Any;
use std::collections::HashMap;

use crate::snapshot::{NodeInfo, PodInfo};

/// What plugins work out once per pod before looking at nodes one by one (kube-scheduler's
/// `CycleState`): each plugin keeps its own slot.
#[derive(Default)]
pub struct CycleState {
    slots: HashMap<&'static str, Box<dyn Any + Send + Sync>>,
}

impl CycleState {
    /// A plugin's slot.
    pub fn get<T: 'static>(&self, plugin: &'static str) -> Option<&T> {
        self.slots.get(plugin).and_then(|b| b.downcast_ref())
    }

    /// Fills a plugin's slot.
    pub fn put<T: Any + Send + Sync>(&mut self, plugin: &'static str, value: T) {
        self.slots.insert(plugin, Box::new(value));
    }
}

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
    /// Works out, once per pod, what `filter` needs across nodes.
    fn pre_filter(&self, _pod: &PodInfo, _nodes: &[NodeInfo], _state: &mut CycleState) {}
    /// `Ok` when the pod fits the node.
    fn filter(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Result<(), Rejection>;
}

/// Rates a node for a pod.
pub trait Score: Send + Sync {
    /// The plugin's name in the configuration.
    fn name(&self) -> &'static str;
    /// Works out, once per pod, what `score` needs across nodes.
    fn pre_score(&self, _pod: &PodInfo, _nodes: &[NodeInfo], _state: &mut CycleState) {}
    /// A raw score for one node.
    fn score(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> i64;
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

    use crate::snapshot::{NodeInfo, PodInfo};

    pub fn node(v: Value) -> NodeInfo {
        let n: Node = serde_json::from_value(v).unwrap();
        NodeInfo::new(Arc::new(n))
    }

    pub fn pod(v: Value) -> PodInfo {
        let p: Pod = serde_json::from_value(v).unwrap();
        PodInfo::new(Arc::new(p))
    }
}
