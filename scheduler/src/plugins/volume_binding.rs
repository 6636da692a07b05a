//! `VolumeBinding`: a pod's claims must be bound, bindable or provisionable where it goes.
//!
//! PreFilter turns the pod away as a whole when a claim is missing, being deleted, or unbound
//! in an `Immediate` class (the PV controller binds those; the pod waits for it). Filter asks
//! of each node that the volumes of bound claims reach it (their node affinity) and that each
//! unbound `WaitForFirstConsumer` claim either has an Available matching volume reaching it or
//! can be provisioned there: the class has a provisioner, its `allowedTopologies` admit the
//! node, a provisioner registered as a CSIDriver runs on the node (its CSINode lists it), and
//! when that driver publishes storage capacity a CSIStorageCapacity of the class that selects
//! the node has room for the claim. Reserve and PreBind live in the scheduler loop
//! ([`crate::scheduler`]) and use [`find_pod_volumes`] for the chosen node. Scoring (kube's
//! `VolumeCapacityPriority`, off by default) is not implemented.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use skiff_rules::quantity::Quantity;
use skiff_rules::volume::{self, find_matching_volume, NodeView};

use super::{Check, Filter, Rejection};
use crate::snapshot::{NodeInfo, PodInfo, Snapshot};
use crate::volumes::{self, VolumeCache, NO_PROVISIONER};

/// A bound claim's volume does not reach the node.
pub const NODE_CONFLICT: &str = "node(s) had volume node affinity conflict";
/// No volume to bind and none can be provisioned on the node.
pub const BIND_CONFLICT: &str = "node(s) didn't find available persistent volumes to bind";
/// The driver has no room for the claim on the node.
pub const NOT_ENOUGH_SPACE: &str = "node(s) did not have enough free storage";
/// A bound claim's volume is gone.
pub const PV_NOT_EXIST: &str =
    "node(s) unavailable due to one or more pvc(s) bound to non-existent pv(s)";
/// PreFilter: a claim of an `Immediate` class is not bound yet.
pub const UNBOUND_IMMEDIATE: &str = "pod has unbound immediate PersistentVolumeClaims";

/// The plugin.
#[derive(Debug, Clone, Copy, Default)]
pub struct VolumeBinding;

/// A pod's claims, sorted as VolumeBinding needs them.
#[derive(Debug, Default)]
pub struct PodClaims {
    /// Claims whose binding is complete.
    pub bound: Vec<Arc<PersistentVolumeClaim>>,
    /// Unbound claims of `WaitForFirstConsumer` classes, smallest request first.
    pub delayed: Vec<Arc<PersistentVolumeClaim>>,
}

/// What binding a pod's claims on one node takes.
#[derive(Debug, Default)]
pub struct NodeBindings {
    /// Available volumes to promise to claims (the volume's `claimRef`).
    pub bind: Vec<(Arc<PersistentVolume>, Arc<PersistentVolumeClaim>)>,
    /// Claims to provision on the node (`volume.kubernetes.io/selected-node`).
    pub provision: Vec<Arc<PersistentVolumeClaim>>,
}

/// Sorts a pod's claims (kube-scheduler's `GetPodVolumeClaims` with PreFilter's verdict):
/// `Ok(None)` when the pod uses none, `Err` with kube's message when the pod cannot be
/// scheduled anywhere until a claim changes.
pub fn pod_claims(pod: &Pod, cache: &VolumeCache) -> Result<Option<PodClaims>, String> {
    if !volumes::uses_claims(pod) {
        return Ok(None);
    }
    let ns = pod.metadata.namespace.as_deref().unwrap_or("");
    let mut out = PodClaims::default();
    let mut immediate = false;
    for name in volumes::pod_claims(pod) {
        let Some(pvc) = cache.claim(ns, &name) else {
            return Err(format!("persistentvolumeclaim \"{name}\" not found"));
        };
        if pvc.metadata.deletion_timestamp.is_some() {
            return Err(format!("persistentvolumeclaim \"{name}\" is being deleted"));
        }
        if is_ephemeral_claim(pod, &name) && !controlled_by(pvc, pod) {
            // Someone else's claim under the name of the pod's generic ephemeral volume.
            let pod_name = pod.metadata.name.as_deref().unwrap_or("");
            return Err(format!(
                "PVC {ns}/{name} was not created for pod {ns}/{pod_name} (pod is not owner)"
            ));
        }
        if volumes::fully_bound(pvc) {
            out.bound.push(pvc.clone());
        } else if cache.delays_binding(pvc)
            && pvc
                .spec
                .as_ref()
                .and_then(|s| s.volume_name.as_deref())
                .is_none_or(str::is_empty)
        {
            out.delayed.push(pvc.clone());
        } else {
            immediate = true;
        }
    }
    if immediate {
        return Err(UNBOUND_IMMEDIATE.into());
    }
    out.delayed.sort_by_key(|c| volume::requested(c));
    Ok(Some(out))
}

/// Whether `claim` is the claim of one of the pod's generic ephemeral volumes.
fn is_ephemeral_claim(pod: &Pod, claim: &str) -> bool {
    let pod_name = pod.metadata.name.as_deref().unwrap_or("");
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .any(|v| v.ephemeral.is_some() && format!("{pod_name}-{}", v.name) == claim)
}

/// Whether the pod is the claim's controller (its owner reference with `controller: true`).
fn controlled_by(pvc: &PersistentVolumeClaim, pod: &Pod) -> bool {
    pvc.metadata
        .owner_references
        .iter()
        .flatten()
        .any(|r| r.controller == Some(true) && Some(r.uid.as_str()) == pod.metadata.uid.as_deref())
}

fn view(node: &NodeInfo) -> NodeView<'_> {
    NodeView {
        name: &node.name,
        labels: node.node.metadata.labels.as_ref(),
    }
}

/// Whether the class's `allowedTopologies` admit a node with these labels (no terms: any).
fn topology_allows(class: &StorageClass, node: &NodeInfo) -> bool {
    let Some(terms) = class.allowed_topologies.as_ref().filter(|t| !t.is_empty()) else {
        return true;
    };
    terms.iter().any(|t| {
        let reqs = t.match_label_expressions.as_deref().unwrap_or_default();
        !reqs.is_empty()
            && reqs.iter().all(|r| {
                node.label(&r.key)
                    .is_some_and(|v| r.values.iter().any(|x| x == v))
            })
    })
}

enum Provision {
    Yes,
    No,
    NoSpace,
}

/// kube-scheduler's `checkVolumeProvisions` for one claim on one node.
fn can_provision(cache: &VolumeCache, pvc: &PersistentVolumeClaim, node: &NodeInfo) -> Provision {
    let Some(class) = cache.class_of(pvc) else {
        return Provision::No;
    };
    let provisioner = class.provisioner.as_str();
    if provisioner.is_empty() || provisioner == NO_PROVISIONER || !topology_allows(class, node) {
        return Provision::No;
    }
    let Some(driver) = cache.csi_drivers.get(provisioner) else {
        // Not a CSI driver the cluster knows of: nothing more to check.
        return Provision::Yes;
    };
    let on_node = cache
        .csi_nodes
        .get(&node.name)
        .is_some_and(|n| n.spec.drivers.iter().any(|d| d.name == provisioner));
    if !on_node {
        return Provision::No;
    }
    if driver.spec.storage_capacity != Some(true) {
        return Provision::Yes;
    }
    let want = volume::requested(pvc);
    if want.is_zero() {
        return Provision::Yes;
    }
    let class_name = class.metadata.name.as_deref().unwrap_or("");
    let room = cache.capacities.values().any(|c| {
        let limit = c.maximum_volume_size.as_ref().or(c.capacity.as_ref());
        c.storage_class_name == class_name
            && limit
                .and_then(|l| Quantity::try_from(l).ok())
                .is_some_and(|l| l >= want)
            && c.node_topology.as_ref().is_some_and(|t| {
                skiff_rules::selector::matches(Some(t), node.node.metadata.labels.as_ref())
            })
    });
    if room {
        Provision::Yes
    } else {
        Provision::NoSpace
    }
}

/// kube-scheduler's `FindPodVolumes` for one node: the bindings and provisions that would
/// place the pod's claims there, or the reasons the node cannot have them.
pub fn find_pod_volumes(
    claims: &PodClaims,
    node: &NodeInfo,
    cache: &VolumeCache,
) -> Result<NodeBindings, Vec<&'static str>> {
    let mut reasons = Vec::new();
    for pvc in &claims.bound {
        let name = pvc
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.as_deref())
            .unwrap_or("");
        match cache.volume(name) {
            None => return Err(vec![PV_NOT_EXIST]),
            Some(pv) => {
                if !volume::node_reachable(pv, |k| node.label(k), &node.name) {
                    reasons.push(NODE_CONFLICT);
                    break;
                }
            }
        }
    }
    let mut out = NodeBindings::default();
    let mut unbound_ok = true;
    let mut enough = true;
    let mut to_provision = Vec::new();
    for pvc in &claims.delayed {
        match volumes::selected_node(pvc) {
            Some(n) if n != node.name => {
                unbound_ok = false;
                break;
            }
            Some(_) => to_provision.push(pvc.clone()),
            None => {
                let chosen = &out.bind;
                let free = cache.volumes().filter(|v| {
                    !chosen
                        .iter()
                        .any(|(c, _)| c.metadata.name == v.metadata.name)
                });
                match find_matching_volume(pvc, free, Some(&view(node)), true) {
                    Some(pv) => {
                        let pv = cache
                            .volume(pv.metadata.name.as_deref().unwrap_or(""))
                            .cloned()
                            .unwrap_or_else(|| Arc::new(pv.clone()));
                        out.bind.push((pv, pvc.clone()));
                    }
                    None => to_provision.push(pvc.clone()),
                }
            }
        }
    }
    if unbound_ok {
        for pvc in to_provision {
            match can_provision(cache, &pvc, node) {
                Provision::Yes => out.provision.push(pvc),
                Provision::No => {
                    unbound_ok = false;
                    break;
                }
                Provision::NoSpace => {
                    enough = false;
                    break;
                }
            }
        }
    }
    if !unbound_ok {
        reasons.push(BIND_CONFLICT);
    }
    if !enough {
        reasons.push(NOT_ENOUGH_SPACE);
    }
    if reasons.is_empty() {
        Ok(out)
    } else {
        Err(reasons)
    }
}

impl Filter for VolumeBinding {
    fn name(&self) -> &'static str {
        "VolumeBinding"
    }

    fn filter_for<'a>(&'a self, pod: &'a PodInfo, snap: &'a Snapshot) -> Option<Check<'a>> {
        match self.pre_filter(pod, snap) {
            Ok(c) => c,
            Err(reason) => Some(Box::new(move |_, _| {
                Err(Rejection::unresolvable(reason.clone()))
            })),
        }
    }

    fn pre_filter<'a>(
        &'a self,
        pod: &'a PodInfo,
        snap: &'a Snapshot,
    ) -> Result<Option<Check<'a>>, String> {
        let Some(claims) = pod_claims(&pod.pod, &snap.volumes)? else {
            return Ok(None);
        };
        if claims.bound.is_empty() && claims.delayed.is_empty() {
            return Ok(None);
        }
        Ok(Some(Box::new(move |_, node| {
            find_pod_volumes(&claims, node, &snap.volumes)
                .map(|_| ())
                .map_err(|reasons| Rejection {
                    reasons: reasons.into_iter().map(String::from).collect(),
                    unresolvable: true,
                })
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::{node, pod};
    use k8s_openapi::api::storage::v1::{CSIDriver, CSINode, CSIStorageCapacity};
    use serde_json::{json, Value};

    fn n(name: &str, zone: &str) -> NodeInfo {
        node(
            json!({"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "zone": zone}},
            "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"}}}),
        )
    }

    fn uses(claims: &[&str]) -> PodInfo {
        let vols: Vec<Value> = claims
            .iter()
            .map(|c| json!({"name": c, "persistentVolumeClaim": {"claimName": c}}))
            .collect();
        pod(json!({"metadata": {"name": "p", "namespace": "d"},
            "spec": {"containers": [{"name": "c"}], "volumes": vols}}))
    }

    fn claim(name: &str, class: &str, extra: Value) -> PersistentVolumeClaim {
        let mut v = json!({"metadata": {"name": name, "namespace": "d", "uid": name, "resourceVersion": "1"},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": class,
                "resources": {"requests": {"storage": "1Gi"}}}});
        merge(&mut v, extra);
        serde_json::from_value(v).unwrap()
    }

    fn bound(name: &str, pv: &str) -> PersistentVolumeClaim {
        claim(
            name,
            "local",
            json!({"metadata": {"annotations": {volumes::BIND_COMPLETED: "yes"}},
            "spec": {"volumeName": pv}}),
        )
    }

    fn local_pv(name: &str, host: &str, extra: Value) -> PersistentVolume {
        let mut v = json!({"metadata": {"name": name, "resourceVersion": "1"},
            "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                "storageClassName": "local", "local": {"path": "/d"},
                "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "kubernetes.io/hostname", "operator": "In", "values": [host]}]}]}}},
            "status": {"phase": "Available"}});
        merge(&mut v, extra);
        serde_json::from_value(v).unwrap()
    }

    fn class(name: &str, provisioner: &str, extra: Value) -> StorageClass {
        let mut v = json!({"metadata": {"name": name}, "provisioner": provisioner,
            "volumeBindingMode": "WaitForFirstConsumer"});
        merge(&mut v, extra);
        serde_json::from_value(v).unwrap()
    }

    fn merge(a: &mut Value, b: Value) {
        match (a, b) {
            (Value::Object(a), Value::Object(b)) => {
                for (k, v) in b {
                    merge(a.entry(k).or_insert(Value::Null), v);
                }
            }
            (a, b) => *a = b,
        }
    }

    fn base() -> VolumeCache {
        VolumeCache::default().with([
            class("local", NO_PROVISIONER, json!({})),
            class("fast", "csi.skiff.dev", json!({})),
            class(
                "now",
                "csi.skiff.dev",
                json!({"volumeBindingMode": "Immediate"}),
            ),
        ])
    }

    /// Each node's verdict for a pod using `claims`.
    fn verdicts(
        cache: VolumeCache,
        claims: &[&str],
        nodes: &[NodeInfo],
    ) -> Vec<Result<(), Vec<String>>> {
        let p = uses(claims);
        let mut snap = Snapshot::from_nodes(nodes.to_vec());
        snap.volumes = cache;
        snap.prepare(&p);
        let out = match VolumeBinding.pre_filter(&p, &snap) {
            Err(e) => vec![Err(vec![e])],
            Ok(None) => nodes.iter().map(|_| Ok(())).collect(),
            Ok(Some(c)) => snap
                .nodes
                .iter()
                .enumerate()
                .map(|(i, n)| c(i, n).map_err(|r| r.reasons))
                .collect(),
        };
        out
    }

    #[test]
    fn an_ephemeral_volumes_claim_must_be_the_pods_own() {
        let p = pod(
            json!({"metadata": {"name": "p", "namespace": "d", "uid": "pod-1"},
            "spec": {"containers": [{"name": "c"}], "volumes": [
                {"name": "scratch", "ephemeral": {"volumeClaimTemplate": {"spec": {}}}}]}}),
        );
        let verdict = |c: PersistentVolumeClaim| {
            let mut snap = Snapshot::from_nodes(vec![n("a", "z1")]);
            snap.volumes = base().with([c]);
            snap.prepare(&p);
            VolumeBinding.pre_filter(&p, &snap).map(|c| c.is_some())
        };
        assert_eq!(
            verdict(claim("p-scratch", "fast", json!({}))),
            Err("PVC d/p-scratch was not created for pod d/p (pod is not owner)".to_string())
        );
        let owned = json!({"metadata": {"ownerReferences": [{"apiVersion": "v1", "kind": "Pod",
            "name": "p", "uid": "pod-1", "controller": true}]}});
        assert_eq!(verdict(claim("p-scratch", "fast", owned)), Ok(true));
    }

    #[test]
    fn missing_deleting_and_unbound_immediate_claims_turn_the_pod_away() {
        let nodes = [n("a", "z1")];
        assert_eq!(
            verdicts(base(), &["data"], &nodes),
            vec![Err(vec![
                "persistentvolumeclaim \"data\" not found".to_string()
            ])]
        );
        let deleting = claim(
            "data",
            "fast",
            json!({"metadata": {"deletionTimestamp": "2025-01-01T00:00:00Z"}}),
        );
        assert_eq!(
            verdicts(base().with([deleting]), &["data"], &nodes),
            vec![Err(vec![
                "persistentvolumeclaim \"data\" is being deleted".to_string()
            ])]
        );
        assert_eq!(
            verdicts(
                base().with([claim("data", "now", json!({}))]),
                &["data"],
                &nodes
            ),
            vec![Err(vec![UNBOUND_IMMEDIATE.to_string()])]
        );
        // A pod without claims is not looked at.
        assert_eq!(verdicts(base(), &[], &nodes), vec![Ok(())]);
    }

    #[test]
    fn a_bound_volume_steers_the_pod_to_its_node() {
        let cache = base().with([bound("data", "pv-b")]).with([local_pv(
            "pv-b",
            "b",
            json!({"spec": {"claimRef": {"namespace": "d", "name": "data"}}}),
        )]);
        let nodes = [n("a", "z1"), n("b", "z1")];
        assert_eq!(
            verdicts(cache, &["data"], &nodes),
            vec![Err(vec![NODE_CONFLICT.to_string()]), Ok(())]
        );
        let gone = base().with([bound("data", "pv-x")]);
        assert_eq!(
            verdicts(gone, &["data"], &nodes[..1]),
            vec![Err(vec![PV_NOT_EXIST.to_string()])]
        );
    }

    #[test]
    fn a_waiting_claim_binds_to_a_local_volume_where_it_is() {
        let cache = base()
            .with([claim("data", "local", json!({}))])
            .with([local_pv("pv-b", "b", json!({}))]);
        let nodes = [n("a", "z1"), n("b", "z1")];
        assert_eq!(
            verdicts(cache.clone(), &["data"], &nodes),
            vec![Err(vec![BIND_CONFLICT.to_string()]), Ok(())]
        );
        let claims = pod_claims(&uses(&["data"]).pod, &cache).unwrap().unwrap();
        let b = find_pod_volumes(&claims, &nodes[1], &cache).unwrap();
        assert_eq!(b.bind.len(), 1);
        assert_eq!(b.bind[0].0.metadata.name.as_deref(), Some("pv-b"));
        assert!(b.provision.is_empty());
    }

    #[test]
    fn two_claims_never_get_the_same_volume() {
        let cache = base()
            .with([
                claim("one", "local", json!({})),
                claim("two", "local", json!({})),
            ])
            .with([local_pv("pv-a", "a", json!({}))]);
        assert_eq!(
            verdicts(cache, &["one", "two"], &[n("a", "z1")]),
            vec![Err(vec![BIND_CONFLICT.to_string()])]
        );
    }

    #[test]
    fn provisioning_follows_topology_the_driver_and_capacity() {
        let driver: CSIDriver =
            serde_json::from_value(json!({"metadata": {"name": "csi.skiff.dev"},
            "spec": {"storageCapacity": true}}))
            .unwrap();
        let on = |node: &str| -> CSINode {
            serde_json::from_value(json!({"metadata": {"name": node},
                "spec": {"drivers": [{"name": "csi.skiff.dev", "nodeID": node}]}}))
            .unwrap()
        };
        let cap = |node: &str, size: &str| -> CSIStorageCapacity {
            serde_json::from_value(
                json!({"metadata": {"name": format!("cap-{node}"), "namespace": "kube-system"},
                "storageClassName": "fast", "capacity": size,
                "nodeTopology": {"matchLabels": {"kubernetes.io/hostname": node}}}),
            )
            .unwrap()
        };
        let nodes = [n("a", "z1"), n("b", "z1"), n("c", "z2")];
        let cache = base()
            .with([claim("data", "fast", json!({}))])
            .with([driver])
            .with([on("a"), on("b"), on("c")])
            .with([cap("a", "10Gi"), cap("b", "512Mi"), cap("c", "10Gi")]);
        assert_eq!(
            verdicts(cache.clone(), &["data"], &nodes),
            vec![Ok(()), Err(vec![NOT_ENOUGH_SPACE.to_string()]), Ok(())]
        );
        // allowedTopologies keeps zone z2 out; a node without the driver is out.
        let zoned = cache
            .clone()
            .with([class("fast", "csi.skiff.dev", json!({"allowedTopologies": [{"matchLabelExpressions": [{"key": "zone", "values": ["z1"]}]}]}))]);
        assert_eq!(
            verdicts(zoned, &["data"], &nodes)[2],
            Err(vec![BIND_CONFLICT.to_string()])
        );
        let mut no_driver = cache.clone();
        CSINode::delete(&mut no_driver, &on("a"));
        assert_eq!(
            verdicts(no_driver, &["data"], &nodes)[0],
            Err(vec![BIND_CONFLICT.to_string()])
        );
        // A claim already given a node goes there only.
        let chosen = cache.with([claim(
            "data",
            "fast",
            json!({"metadata": {"annotations": {volumes::SELECTED_NODE: "c"}}}),
        )]);
        assert_eq!(
            verdicts(chosen, &["data"], &nodes),
            vec![
                Err(vec![BIND_CONFLICT.to_string()]),
                Err(vec![BIND_CONFLICT.to_string()]),
                Ok(())
            ]
        );
    }

    use crate::volumes::Cached;
}
