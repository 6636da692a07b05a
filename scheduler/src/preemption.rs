//! Preemption (kube-scheduler's `DefaultPreemption`, simplified): when a pod fits nowhere,
//! look at the nodes where evicting pods could help, evict only pods of lower priority, as
//! few and as unimportant as possible, and pick the node that evicts the least.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;

use crate::framework::{FitError, Profile};
use crate::snapshot::{PodInfo, Snapshot};

/// A pod's priority: `spec.priority`, which the API server's admission sets from
/// `priorityClassName`; 0 when unset.
pub fn priority(pod: &Pod) -> i32 {
    pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)
}

/// Whether a pod may preempt others (`preemptionPolicy` is not `Never`).
pub fn may_preempt(pod: &PodInfo) -> bool {
    pod.spec().and_then(|s| s.preemption_policy.as_deref()) != Some("Never")
}

/// The node to free and the pods to evict there.
#[derive(Debug, Clone)]
pub struct Preemption {
    /// The node's index in the snapshot.
    pub node: usize,
    /// The pods to evict.
    pub victims: Vec<Arc<PodInfo>>,
}

/// The least disruptive way to make room for `pod` with priority `prio`, if there is one.
pub fn find(
    profile: &Profile,
    pod: &PodInfo,
    prio: i32,
    snap: &Snapshot,
    fit: &FitError,
) -> Option<Preemption> {
    let nodes = &snap.nodes;
    let checks = profile.checks(pod, snap).ok()?;
    let mut best: Option<(Preemption, (usize, i64, i32))> = None;
    for &idx in &fit.resolvable_nodes {
        let node = &nodes[idx];
        let mut trial = node.clone();
        let mut lower: Vec<Arc<PodInfo>> = node
            .pods
            .iter()
            .filter(|p| priority(&p.pod) < prio)
            .cloned()
            .collect();
        if lower.is_empty() {
            continue;
        }
        for v in &lower {
            trial.remove_pod(&v.key);
        }
        if Profile::filter(&checks, idx, &trial).is_err() {
            continue;
        }
        // Give back as many as possible, most important first.
        lower.sort_by_key(|p| std::cmp::Reverse(priority(&p.pod)));
        let mut victims = Vec::new();
        for v in lower {
            trial.add_pod(v.clone());
            if Profile::filter(&checks, idx, &trial).is_err() {
                trial.remove_pod(&v.key);
                victims.push(v);
            }
        }
        let cost = (
            victims.len(),
            victims
                .iter()
                .map(|v| i64::from(priority(&v.pod)))
                .sum::<i64>(),
            victims
                .iter()
                .map(|v| priority(&v.pod))
                .max()
                .unwrap_or(i32::MIN),
        );
        if best.as_ref().is_none_or(|(_, c)| cost < *c) {
            best = Some((Preemption { node: idx, victims }, cost));
        }
    }
    best.map(|(p, _)| p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::Weighted;
    use crate::plugins::node_resources::NodeResourcesFit;
    use crate::plugins::testing::{node, pod};
    use crate::snapshot::NodeInfo;
    use serde_json::json;

    fn n(name: &str) -> NodeInfo {
        node(
            json!({"metadata": {"name": name}, "status": {"allocatable": {"cpu": "2", "memory": "8Gi", "pods": "110"}}}),
        )
    }

    fn p(name: &str, cpu: &str, prio: i32) -> PodInfo {
        pod(
            json!({"metadata": {"name": name, "namespace": "d"}, "spec": {"priority": prio, "containers": [
            {"name": "c", "resources": {"requests": {"cpu": cpu}}}]}}),
        )
    }

    #[test]
    fn evicts_the_fewest_lowest_priority_pods() {
        let profile = Profile {
            scheduler_name: "default-scheduler".into(),
            filters: vec![Box::new(NodeResourcesFit)],
            scores: Vec::<Weighted>::new(),
            percentage_of_nodes_to_score: 0,
            volume_binding: None,
        };
        let mut nodes = vec![n("a"), n("b")];
        // a: two small low-priority pods; b: one big pod of middle priority.
        nodes[0].add_pod(Arc::new(p("small-1", "1", 1)));
        nodes[0].add_pod(Arc::new(p("small-2", "1", 1)));
        nodes[1].add_pod(Arc::new(p("big", "2", 5)));
        let urgent = p("urgent", "1", 10);
        let mut snap = Snapshot::from_nodes(nodes);
        let fit = profile.schedule(&urgent, &mut snap, 0).unwrap_err();
        let pre = find(&profile, &urgent, 10, &snap, &fit).unwrap();
        assert_eq!(
            snap.nodes[pre.node].name, "a",
            "one small victim beats one big one of higher priority"
        );
        assert_eq!(pre.victims.len(), 1);
        // Nothing of lower priority to evict: no preemption.
        let meek = p("meek", "1", 1);
        let fit = profile.schedule(&meek, &mut snap, 0).unwrap_err();
        assert!(find(&profile, &meek, 1, &snap, &fit).is_none());
    }
}
