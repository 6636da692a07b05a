//! `NodeResourcesFit`: a pod fits when the node's allocatable minus what its pods request
//! covers the pod's requests (CPU, memory, ephemeral storage, pod count, extended
//! resources). Its score follows the configured strategy: `LeastAllocated` spreads,
//! `MostAllocated` packs, `RequestedToCapacityRatio` follows a utilization → score curve.

use super::{Check, Filter, Rate, Rejection, Score, MAX_SCORE};
use crate::resources::Resources;
use crate::snapshot::{NodeInfo, PodInfo, Snapshot};

/// The `NodeResourcesFit` filter.
pub struct NodeResourcesFit;

impl Filter for NodeResourcesFit {
    fn name(&self) -> &'static str {
        "NodeResourcesFit"
    }

    fn filter_for<'a>(&'a self, pod: &'a PodInfo, _snap: &'a Snapshot) -> Option<Check<'a>> {
        Some(Box::new(move |_, node| fits(pod, node)))
    }
}

/// Whether `pod`'s requests fit what `node` has left, naming every resource that runs short.
pub fn fits(pod: &PodInfo, node: &NodeInfo) -> Result<(), Rejection> {
    let want = &pod.requests;
    let (alloc, used) = (&node.allocatable, &node.requested);
    let mut reasons = Vec::new();
    if used.pods + 1 > alloc.pods {
        reasons.push("Too many pods".to_string());
    }
    let short = |need: i64, have: i64, used: i64| need > 0 && need > have - used;
    if short(want.milli_cpu, alloc.milli_cpu, used.milli_cpu) {
        reasons.push("Insufficient cpu".into());
    }
    if short(want.memory, alloc.memory, used.memory) {
        reasons.push("Insufficient memory".into());
    }
    if short(
        want.ephemeral_storage,
        alloc.ephemeral_storage,
        used.ephemeral_storage,
    ) {
        reasons.push("Insufficient ephemeral-storage".into());
    }
    for (name, need) in &want.scalar {
        if short(*need, alloc.scalar(name), used.scalar(name)) {
            reasons.push(format!("Insufficient {name}"));
        }
    }
    if reasons.is_empty() {
        Ok(())
    } else {
        Err(Rejection {
            reasons,
            unresolvable: false,
        })
    }
}

/// How resource use turns into a score.
#[derive(Debug, Clone, PartialEq)]
pub enum Strategy {
    /// Prefer nodes with the most left over (spread).
    LeastAllocated,
    /// Prefer the fullest nodes (binpack).
    MostAllocated,
    /// A piecewise-linear curve of (utilization %, score 0–10) points, as
    /// kube-scheduler's `requestedToCapacityRatio.shape`.
    RequestedToCapacityRatio(Vec<(i64, i64)>),
}

/// The resources a strategy weighs, with their weights (default: cpu 1, memory 1).
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceWeight {
    /// `cpu`, `memory`, `ephemeral-storage` or an extended resource.
    pub name: String,
    /// Its weight.
    pub weight: i64,
}

/// The `NodeResourcesFit` score.
pub struct NodeResourcesScore {
    /// The strategy.
    pub strategy: Strategy,
    /// The weighed resources.
    pub resources: Vec<ResourceWeight>,
}

impl Default for NodeResourcesScore {
    fn default() -> Self {
        NodeResourcesScore {
            strategy: Strategy::LeastAllocated,
            resources: vec![
                ResourceWeight {
                    name: "cpu".into(),
                    weight: 1,
                },
                ResourceWeight {
                    name: "memory".into(),
                    weight: 1,
                },
            ],
        }
    }
}

/// A resource, its name resolved once per pod rather than per node.
#[derive(Clone, Copy)]
enum Kind<'a> {
    Cpu,
    Memory,
    EphemeralStorage,
    Pods,
    Scalar(&'a str),
}

impl<'a> Kind<'a> {
    fn of(name: &'a str) -> Self {
        match name {
            "cpu" => Kind::Cpu,
            "memory" => Kind::Memory,
            "ephemeral-storage" => Kind::EphemeralStorage,
            "pods" => Kind::Pods,
            other => Kind::Scalar(other),
        }
    }

    fn amount(self, r: &Resources) -> i64 {
        match self {
            Kind::Cpu => r.milli_cpu,
            Kind::Memory => r.memory,
            Kind::EphemeralStorage => r.ephemeral_storage,
            Kind::Pods => r.pods,
            Kind::Scalar(name) => r.scalar(name),
        }
    }
}

/// The score of a utilization (0–100 %) on a curve of (utilization, 0–10) points.
fn on_curve(shape: &[(i64, i64)], util: i64) -> i64 {
    let Some(first) = shape.first() else {
        return 0;
    };
    if util <= first.0 {
        return first.1 * MAX_SCORE / 10;
    }
    for w in shape.windows(2) {
        let ((x0, y0), (x1, y1)) = (w[0], w[1]);
        if util <= x1 {
            let y = y0 * 10 + (y1 - y0) * 10 * (util - x0) / (x1 - x0).max(1);
            return y * MAX_SCORE / 100;
        }
    }
    shape.last().map(|l| l.1 * MAX_SCORE / 10).unwrap_or(0)
}

impl Score for NodeResourcesScore {
    fn name(&self) -> &'static str {
        "NodeResourcesFit"
    }

    fn score_for<'a>(&'a self, pod: &'a PodInfo, _snap: &'a Snapshot) -> Option<Rate<'a>> {
        let weighed: Vec<(Kind<'a>, i64, i64)> = self
            .resources
            .iter()
            .map(|rw| {
                let kind = Kind::of(&rw.name);
                (kind, rw.weight, kind.amount(&pod.requests))
            })
            .collect();
        Some(Box::new(move |_, node| self.rate(&weighed, node)))
    }
}

impl NodeResourcesScore {
    /// The node's rating for a pod asking `weighed` amounts (kind, weight, amount).
    fn rate(&self, weighed: &[(Kind<'_>, i64, i64)], node: &NodeInfo) -> i64 {
        let (mut total, mut weights) = (0i64, 0i64);
        for &(kind, weight, want) in weighed {
            let cap = kind.amount(&node.allocatable);
            if cap <= 0 {
                continue;
            }
            // What the node would have requested with this pod on it.
            let req = (kind.amount(&node.requested) + want).min(cap);
            let s = match &self.strategy {
                Strategy::LeastAllocated => (cap - req) * MAX_SCORE / cap,
                Strategy::MostAllocated => req * MAX_SCORE / cap,
                Strategy::RequestedToCapacityRatio(shape) => on_curve(shape, req * 100 / cap),
            };
            total += s * weight;
            weights += weight;
        }
        if weights == 0 {
            0
        } else {
            total / weights
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::{check, node, pod, rate};
    use serde_json::json;
    use std::sync::Arc;

    fn n(cpu: &str, mem: &str, pods: &str) -> NodeInfo {
        node(
            json!({"metadata": {"name": "n"}, "status": {"allocatable": {"cpu": cpu, "memory": mem, "pods": pods, "example.com/gpu": "1"}}}),
        )
    }

    fn p(name: &str, cpu: &str, mem: &str) -> PodInfo {
        pod(
            json!({"metadata": {"name": name, "namespace": "d"}, "spec": {"containers": [
            {"name": "c", "resources": {"requests": {"cpu": cpu, "memory": mem}}}]}}),
        )
    }

    #[test]
    fn fits_until_a_resource_runs_out_and_names_each() {
        let mut node = n("1", "1Gi", "2");
        assert!(check(&NodeResourcesFit, &p("a", "600m", "512Mi"), &node).is_ok());
        node.add_pod(Arc::new(p("a", "600m", "512Mi")));
        let err = check(&NodeResourcesFit, &p("b", "500m", "600Mi"), &node).unwrap_err();
        assert_eq!(err.reasons, vec!["Insufficient cpu", "Insufficient memory"]);
        assert!(!err.unresolvable);
        assert!(check(&NodeResourcesFit, &p("c", "400m", "512Mi"), &node).is_ok());
        node.add_pod(Arc::new(p("c", "100m", "1Mi")));
        assert_eq!(
            check(&NodeResourcesFit, &p("d", "1m", "1Mi"), &node)
                .unwrap_err()
                .reasons,
            vec!["Too many pods"]
        );
        let gpu = pod(
            json!({"spec": {"containers": [{"name": "c", "resources": {"requests": {"example.com/gpu": "2"}}}]}}),
        );
        assert!(check(&NodeResourcesFit, &gpu, &n("1", "1Gi", "10"))
            .unwrap_err()
            .reasons
            .contains(&"Insufficient example.com/gpu".to_string()));
    }

    #[test]
    fn strategies_spread_pack_or_follow_a_curve() {
        let empty = n("4", "4Gi", "10");
        let mut half = n("4", "4Gi", "10");
        half.add_pod(Arc::new(p("x", "2", "2Gi")));
        let pod = p("new", "1", "1Gi");
        let least = NodeResourcesScore::default();
        assert_eq!(rate(&least, &pod, &empty), 75);
        assert_eq!(rate(&least, &pod, &half), 25);
        let most = NodeResourcesScore {
            strategy: Strategy::MostAllocated,
            ..Default::default()
        };
        assert_eq!(rate(&most, &pod, &empty), 25);
        assert_eq!(rate(&most, &pod, &half), 75);
        let curve = NodeResourcesScore {
            strategy: Strategy::RequestedToCapacityRatio(vec![(0, 0), (100, 10)]),
            ..Default::default()
        };
        assert_eq!(rate(&curve, &pod, &half), 75, "a rising curve packs");
    }
}
