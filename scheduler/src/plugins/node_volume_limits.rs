//! `NodeVolumeLimits` (kube's `CSILimits`): a node takes no more volumes of a CSI driver than
//! its CSINode says the driver can attach (`spec.drivers[].allocatable.count`). Volumes are
//! counted once per node however many pods share them: a bound claim by its volume's driver
//! and handle, an unbound claim by its class's provisioner, an inline CSI volume by its pod.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::Pod;

use super::{Check, Filter, Rejection};
use crate::snapshot::{PodInfo, Snapshot};
use crate::volumes::VolumeCache;

/// The node has no room for the pod's volumes of some driver.
pub const MAX_VOLUME_COUNT: &str = "node(s) exceed max volume count";

/// The plugin.
#[derive(Debug, Clone, Copy, Default)]
pub struct NodeVolumeLimits;

/// The pod's CSI volumes: unique name → driver.
fn csi_volumes(pod: &Pod, cache: &VolumeCache, out: &mut HashMap<String, String>) {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("");
    let pod_name = pod.metadata.name.as_deref().unwrap_or("");
    let Some(vols) = pod.spec.as_ref().and_then(|s| s.volumes.as_ref()) else {
        return;
    };
    for v in vols {
        let claim = if let Some(c) = v.persistent_volume_claim.as_ref() {
            c.claim_name.clone()
        } else if v.ephemeral.is_some() {
            format!("{pod_name}-{}", v.name)
        } else if let Some(csi) = v.csi.as_ref() {
            out.insert(
                format!("{}/{ns}-{pod_name}-{}", csi.driver, v.name),
                csi.driver.clone(),
            );
            continue;
        } else {
            continue;
        };
        let Some(pvc) = cache.claim(ns, &claim) else {
            continue;
        };
        let bound = pvc
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.as_deref())
            .filter(|n| !n.is_empty());
        match bound {
            Some(pv_name) => {
                if let Some(csi) = cache
                    .volume(pv_name)
                    .and_then(|pv| pv.spec.as_ref()?.csi.as_ref())
                {
                    out.insert(
                        format!("{}/{}", csi.driver, csi.volume_handle),
                        csi.driver.clone(),
                    );
                }
            }
            None => {
                if let Some(class) = cache.class_of(pvc) {
                    out.insert(
                        format!("{}/{ns}-{claim}", class.provisioner),
                        class.provisioner.clone(),
                    );
                }
            }
        }
    }
}

impl Filter for NodeVolumeLimits {
    fn name(&self) -> &'static str {
        "NodeVolumeLimits"
    }

    fn filter_for<'a>(&'a self, pod: &'a PodInfo, snap: &'a Snapshot) -> Option<Check<'a>> {
        let has_volumes = pod
            .spec()
            .and_then(|s| s.volumes.as_ref())
            .is_some_and(|vs| {
                vs.iter().any(|v| {
                    v.persistent_volume_claim.is_some() || v.ephemeral.is_some() || v.csi.is_some()
                })
            });
        if !has_volumes {
            return None;
        }
        let mut new = HashMap::new();
        csi_volumes(&pod.pod, &snap.volumes, &mut new);
        if new.is_empty() {
            return None;
        }
        Some(Box::new(move |_, node| {
            let Some(csi_node) = snap.volumes.csi_nodes.get(&node.name) else {
                return Ok(());
            };
            let limits: HashMap<&str, i64> = csi_node
                .spec
                .drivers
                .iter()
                .filter_map(|d| Some((d.name.as_str(), d.allocatable.as_ref()?.count? as i64)))
                .collect();
            if limits.is_empty() {
                return Ok(());
            }
            let mut attached = HashMap::new();
            for p in &node.pods {
                if p.key != pod.key {
                    csi_volumes(&p.pod, &snap.volumes, &mut attached);
                }
            }
            let mut wanted: HashMap<&str, i64> = HashMap::new();
            for (unique, driver) in &new {
                if !attached.contains_key(unique) {
                    *wanted.entry(driver.as_str()).or_default() += 1;
                }
            }
            for (driver, more) in wanted {
                let Some(limit) = limits.get(driver) else {
                    continue;
                };
                let used = attached.values().filter(|d| *d == driver).count() as i64;
                if used + more > *limit {
                    return Err(Rejection::resolvable(MAX_VOLUME_COUNT));
                }
            }
            Ok(())
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::{node, pod};
    use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
    use k8s_openapi::api::storage::v1::CSINode;
    use serde_json::json;
    use std::sync::Arc;

    fn user(name: &str, claims: &[&str]) -> PodInfo {
        let vols: Vec<_> = claims
            .iter()
            .map(|c| json!({"name": c, "persistentVolumeClaim": {"claimName": c}}))
            .collect();
        pod(
            json!({"metadata": {"name": name, "namespace": "d"}, "spec": {"nodeName": "a",
            "containers": [{"name": "c"}], "volumes": vols}}),
        )
    }

    fn bound(name: &str) -> (PersistentVolumeClaim, PersistentVolume) {
        (
            serde_json::from_value(json!({"metadata": {"name": name, "namespace": "d"},
                "spec": {"volumeName": format!("pv-{name}")}}))
            .unwrap(),
            serde_json::from_value(json!({"metadata": {"name": format!("pv-{name}")},
                "spec": {"csi": {"driver": "csi.skiff.dev", "volumeHandle": name}}}))
            .unwrap(),
        )
    }

    #[test]
    fn a_node_takes_as_many_volumes_as_its_driver_attaches() {
        let (claims, pvs): (Vec<_>, Vec<_>) = ["x", "y", "z"].into_iter().map(bound).unzip();
        let csi: CSINode = serde_json::from_value(json!({"metadata": {"name": "a"},
            "spec": {"drivers": [{"name": "csi.skiff.dev", "nodeID": "a", "allocatable": {"count": 2}}]}}))
        .unwrap();
        let verdict = |placed: PodInfo, new: PodInfo| {
            let mut a = node(json!({"metadata": {"name": "a"}}));
            a.add_pod(Arc::new(placed.placed()));
            let mut snap = Snapshot::from_nodes(vec![a]);
            snap.volumes = VolumeCache::default()
                .with(claims.clone())
                .with(pvs.clone())
                .with([csi.clone()]);
            snap.prepare(&new);
            let check = NodeVolumeLimits.filter_for(&new, &snap);
            check.map_or(Ok(()), |c| c(0, &snap.nodes[0]))
        };
        assert_eq!(verdict(user("one", &["x"]), user("two", &["y"])), Ok(()));
        assert_eq!(
            verdict(user("one", &["x", "y"]), user("two", &["z"])),
            Err(Rejection::resolvable(MAX_VOLUME_COUNT))
        );
        // A volume already on the node is not counted twice.
        assert_eq!(
            verdict(user("one", &["x", "y"]), user("two", &["x"])),
            Ok(())
        );
    }
}
