//! Filter and score plugins, one file each, named as kube-scheduler names them.
//!
//! A filter says whether a pod may run on a node and, if not, why (the reason words appear
//! in the pod's `Unschedulable` message, counted per node as Kubernetes does). A score rates
//! a feasible node from 0 to 100; the framework weights and sums the scores.

pub mod node_affinity;
pub mod node_name;
pub mod node_ports;
pub mod node_resources;
pub mod node_unschedulable;
pub mod taint_toleration;

use crate::snapshot::{NodeInfo, PodInfo};

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
    /// `Ok` when the pod fits the node.
    fn filter(&self, pod: &PodInfo, node: &NodeInfo) -> Result<(), Rejection>;
}

/// Rates a node for a pod.
pub trait Score: Send + Sync {
    /// The plugin's name in the configuration.
    fn name(&self) -> &'static str;
    /// A raw score for one node.
    fn score(&self, pod: &PodInfo, node: &NodeInfo) -> i64;
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
