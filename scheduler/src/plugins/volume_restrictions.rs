//! `VolumeRestrictions`: a claim with the `ReadWriteOncePod` access mode serves one pod in
//! the whole cluster; while another pod (placed or assumed) uses it, no node will do. The
//! in-tree disk conflicts kube also checks here (GCE PD, EBS, RBD, iSCSI) do not exist in
//! Skiff.

use std::collections::HashSet;

use super::{Check, Filter, Rejection};
use crate::snapshot::{PodInfo, Snapshot};
use crate::volumes;

/// Another pod uses a `ReadWriteOncePod` claim of the pod.
pub const READ_WRITE_ONCE_POD_CONFLICT: &str =
    "node has pod using PersistentVolumeClaim with the same name and ReadWriteOncePod access mode";

/// The plugin.
#[derive(Debug, Clone, Copy, Default)]
pub struct VolumeRestrictions;

impl Filter for VolumeRestrictions {
    fn name(&self) -> &'static str {
        "VolumeRestrictions"
    }

    fn filter_for<'a>(&'a self, pod: &'a PodInfo, snap: &'a Snapshot) -> Option<Check<'a>> {
        if !volumes::uses_claims(&pod.pod) {
            return None;
        }
        let ns = pod.namespace.as_str();
        let once: HashSet<String> = volumes::pod_claims(&pod.pod)
            .into_iter()
            .filter(|c| {
                snap.volumes.claim(ns, c).is_some_and(|pvc| {
                    pvc.spec
                        .as_ref()
                        .and_then(|s| s.access_modes.as_ref())
                        .is_some_and(|m| m.iter().any(|m| m == "ReadWriteOncePod"))
                })
            })
            .collect();
        if once.is_empty() {
            return None;
        }
        let conflict = snap.nodes.iter().flat_map(|n| &n.pods).any(|p| {
            p.key != pod.key
                && p.namespace == ns
                && volumes::pod_claims(&p.pod).iter().any(|c| once.contains(c))
        });
        // Kube rejects every node alike: preempting the other pod is what could help.
        conflict.then(|| -> Check<'a> {
            Box::new(|_, _| Err(Rejection::resolvable(READ_WRITE_ONCE_POD_CONFLICT)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::{node, pod};
    use crate::snapshot::NodeInfo;
    use crate::volumes::VolumeCache;
    use k8s_openapi::api::core::v1::PersistentVolumeClaim;
    use serde_json::json;
    use std::sync::Arc;

    fn user(name: &str, claim: &str) -> PodInfo {
        pod(
            json!({"metadata": {"name": name, "namespace": "d"}, "spec": {"nodeName": "a",
            "containers": [{"name": "c"}],
            "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": claim}}]}}),
        )
    }

    fn claim(name: &str, mode: &str) -> PersistentVolumeClaim {
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": "d"},
            "spec": {"accessModes": [mode]}}))
        .unwrap()
    }

    fn verdicts(placed: PodInfo, new: &PodInfo) -> Vec<Result<(), Rejection>> {
        let mut a = node(json!({"metadata": {"name": "a"}}));
        let b: NodeInfo = node(json!({"metadata": {"name": "b"}}));
        a.add_pod(Arc::new(placed.placed()));
        let mut snap = Snapshot::from_nodes(vec![a, b]);
        snap.volumes = VolumeCache::default().with([
            claim("once", "ReadWriteOncePod"),
            claim("many", "ReadWriteMany"),
        ]);
        snap.prepare(new);
        let check = VolumeRestrictions.filter_for(new, &snap);
        snap.nodes
            .iter()
            .enumerate()
            .map(|(i, n)| check.as_ref().map_or(Ok(()), |c| c(i, n)))
            .collect()
    }

    #[test]
    fn a_read_write_once_pod_claim_serves_one_pod() {
        let v = verdicts(user("first", "once"), &user("second", "once"));
        assert_eq!(
            v,
            vec![Err(Rejection::resolvable(READ_WRITE_ONCE_POD_CONFLICT)); 2]
        );
        assert_eq!(
            verdicts(user("first", "many"), &user("second", "many")),
            vec![Ok(()), Ok(())]
        );
        // The pod itself (assumed, then looked at again) is no conflict.
        assert_eq!(
            verdicts(user("first", "once"), &user("first", "once")),
            vec![Ok(()), Ok(())]
        );
    }
}
