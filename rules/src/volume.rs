//! Persistent volumes and claims: which volume a claim may bind to, as Kubernetes'
//! `FindMatchingVolume` decides it (the PV controller's binder and the scheduler's
//! VolumeBinding plugin ask the same question), and the small facts both sides read (a
//! claim's class, its request, whether a volume is bound to a claim, whether a node is in a
//! volume's node affinity).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};

use crate::quantity::Quantity;
use crate::selector;

/// The annotation naming the class before `storageClassName` existed.
pub const BETA_STORAGE_CLASS: &str = "volume.beta.kubernetes.io/storage-class";

fn beta_class(ann: Option<&BTreeMap<String, String>>) -> Option<&str> {
    ann.and_then(|a| a.get(BETA_STORAGE_CLASS))
        .map(String::as_str)
}

/// A claim's class: the beta annotation, else `spec.storageClassName`, else "".
pub fn claim_class(pvc: &PersistentVolumeClaim) -> &str {
    beta_class(pvc.metadata.annotations.as_ref())
        .or_else(|| pvc.spec.as_ref()?.storage_class_name.as_deref())
        .unwrap_or("")
}

/// A volume's class: the beta annotation, else `spec.storageClassName`, else "".
pub fn volume_class(pv: &PersistentVolume) -> &str {
    beta_class(pv.metadata.annotations.as_ref())
        .or_else(|| pv.spec.as_ref()?.storage_class_name.as_deref())
        .unwrap_or("")
}

/// The storage a claim requests (zero when it names none or it does not parse).
pub fn requested(pvc: &PersistentVolumeClaim) -> Quantity {
    pvc.spec
        .as_ref()
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .and_then(|q| Quantity::try_from(q).ok())
        .unwrap_or_default()
}

/// A volume's storage capacity (zero when it states none).
pub fn capacity(pv: &PersistentVolume) -> Quantity {
    pv.spec
        .as_ref()
        .and_then(|s| s.capacity.as_ref())
        .and_then(|c| c.get("storage"))
        .and_then(|q| Quantity::try_from(q).ok())
        .unwrap_or_default()
}

/// Whether the volume's `claimRef` names this claim (by namespace and name, and by UID when
/// the reference has one).
pub fn is_bound_to(pv: &PersistentVolume, pvc: &PersistentVolumeClaim) -> bool {
    let Some(r) = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) else {
        return false;
    };
    r.name == pvc.metadata.name
        && r.namespace == pvc.metadata.namespace
        && r.uid
            .as_deref()
            .is_none_or(|u| u.is_empty() || Some(u) == pvc.metadata.uid.as_deref())
}

fn mode(m: Option<&String>) -> &str {
    m.map(String::as_str).unwrap_or("Filesystem")
}

/// Whether the volume offers every access mode the claim asks for.
pub fn has_access_modes(pv: &PersistentVolume, pvc: &PersistentVolumeClaim) -> bool {
    let offered = pv
        .spec
        .as_ref()
        .and_then(|s| s.access_modes.as_deref())
        .unwrap_or_default();
    pvc.spec
        .as_ref()
        .and_then(|s| s.access_modes.as_deref())
        .unwrap_or_default()
        .iter()
        .all(|m| offered.contains(m))
}

/// Whether a node with these labels (`label` looks one up) and this name is in the volume's
/// required node affinity (any term); a volume without one is reachable from every node.
pub fn node_reachable<'a>(
    pv: &PersistentVolume,
    label: impl Fn(&str) -> Option<&'a str>,
    name: &str,
) -> bool {
    pv.spec
        .as_ref()
        .and_then(|s| s.node_affinity.as_ref())
        .and_then(|a| a.required.as_ref())
        .is_none_or(|r| {
            r.node_selector_terms
                .iter()
                .any(|t| selector::node_term_matches(t, &label, name))
        })
}

/// The node a volume is matched for, when the question is asked for one (the scheduler's).
pub struct NodeView<'a> {
    /// The node's name.
    pub name: &'a str,
    /// The node's labels.
    pub labels: Option<&'a BTreeMap<String, String>>,
}

/// The volume a claim should bind to, as Kubernetes' `FindMatchingVolume` picks it:
/// a volume already bound to the claim (its `claimRef` names it) wins outright; otherwise the
/// smallest Available volume that is not promised to another claim, is big enough, offers
/// the claim's access modes, has its volume mode and class, matches its selector and (when a
/// node is given) reaches that node. Deleting volumes never match. With `delay_binding` (a
/// `WaitForFirstConsumer` class) and no node, only a volume already bound to the claim
/// matches: the scheduler chooses the others.
pub fn find_matching_volume<'v>(
    pvc: &PersistentVolumeClaim,
    volumes: impl IntoIterator<Item = &'v PersistentVolume>,
    node: Option<&NodeView<'_>>,
    delay_binding: bool,
) -> Option<&'v PersistentVolume> {
    let want = requested(pvc);
    let spec = pvc.spec.clone().unwrap_or_default();
    let class = claim_class(pvc);
    let mut best: Option<(&PersistentVolume, Quantity)> = None;
    for pv in volumes {
        let Some(pspec) = pv.spec.as_ref() else {
            continue;
        };
        let size = capacity(pv);
        if size < want
            || mode(pspec.volume_mode.as_ref()) != mode(spec.volume_mode.as_ref())
            || pv.metadata.deletion_timestamp.is_some()
            || !has_access_modes(pv, pvc)
        {
            continue;
        }
        let reachable = node.is_none_or(|n| {
            node_reachable(
                pv,
                |k| n.labels.and_then(|l| l.get(k)).map(String::as_str),
                n.name,
            )
        });
        if is_bound_to(pv, pvc) {
            return reachable.then_some(pv);
        }
        if node.is_none() && delay_binding {
            continue;
        }
        let available = pv.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Available");
        if !available
            || pspec.claim_ref.is_some()
            || spec
                .selector
                .as_ref()
                .is_some_and(|s| !selector::matches(Some(s), pv.metadata.labels.as_ref()))
            || volume_class(pv) != class
            || !reachable
        {
            continue;
        }
        if best.as_ref().is_none_or(|(_, b)| size < *b) {
            best = Some((pv, size));
        }
    }
    best.map(|(pv, _)| pv)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pv(name: &str, size: &str, extra: serde_json::Value) -> PersistentVolume {
        let mut v = json!({"metadata": {"name": name, "labels": {"tier": "gold"}},
            "spec": {"capacity": {"storage": size}, "accessModes": ["ReadWriteOnce", "ReadOnlyMany"],
                "storageClassName": "fast", "hostPath": {"path": "/x"}},
            "status": {"phase": "Available"}});
        merge(&mut v, extra);
        serde_json::from_value(v).unwrap()
    }

    fn pvc(size: &str, extra: serde_json::Value) -> PersistentVolumeClaim {
        let mut v = json!({"metadata": {"name": "data", "namespace": "ns", "uid": "u1"},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "fast",
                "resources": {"requests": {"storage": size}}}});
        merge(&mut v, extra);
        serde_json::from_value(v).unwrap()
    }

    fn merge(a: &mut serde_json::Value, b: serde_json::Value) {
        match (a, b) {
            (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
                for (k, v) in b {
                    merge(a.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
            (a, b) => *a = b,
        }
    }

    fn name(p: Option<&PersistentVolume>) -> Option<&str> {
        p.and_then(|p| p.metadata.name.as_deref())
    }

    #[test]
    fn the_smallest_fitting_volume_wins() {
        let vols = [
            pv("big", "10Gi", json!({})),
            pv("small", "1Gi", json!({})),
            pv("right", "2Gi", json!({})),
            pv("tiny", "512Mi", json!({})),
        ];
        assert_eq!(
            name(find_matching_volume(
                &pvc("1500Mi", json!({})),
                &vols,
                None,
                false
            )),
            Some("right")
        );
        assert_eq!(
            name(find_matching_volume(
                &pvc("1Gi", json!({})),
                &vols,
                None,
                false
            )),
            Some("small")
        );
        assert_eq!(
            name(find_matching_volume(
                &pvc("20Gi", json!({})),
                &vols,
                None,
                false
            )),
            None
        );
    }

    #[test]
    fn class_modes_selector_and_phase_must_agree() {
        let claim = pvc("1Gi", json!({}));
        let refuse = |extra: serde_json::Value| {
            let vols = [pv("v", "1Gi", extra)];
            find_matching_volume(&claim, &vols, None, false).is_none()
        };
        assert!(!refuse(json!({})));
        assert!(refuse(json!({"spec": {"storageClassName": "slow"}})));
        assert!(refuse(json!({"spec": {"accessModes": ["ReadOnlyMany"]}})));
        assert!(refuse(json!({"spec": {"volumeMode": "Block"}})));
        assert!(refuse(json!({"status": {"phase": "Released"}})));
        assert!(refuse(
            json!({"metadata": {"deletionTimestamp": "2025-01-01T00:00:00Z"}})
        ));
        assert!(refuse(
            json!({"spec": {"claimRef": {"namespace": "ns", "name": "other"}}})
        ));
        let picky = pvc(
            "1Gi",
            json!({"spec": {"selector": {"matchLabels": {"tier": "silver"}}}}),
        );
        assert!(find_matching_volume(&picky, &[pv("v", "1Gi", json!({}))], None, false).is_none());
        // The class named by the beta annotation counts as the class.
        let beta = pvc(
            "1Gi",
            json!({"metadata": {"annotations": {BETA_STORAGE_CLASS: "slow"}}}),
        );
        let vols = [pv(
            "v",
            "1Gi",
            json!({"spec": {"storageClassName": "slow"}}),
        )];
        assert!(find_matching_volume(&beta, &vols, None, false).is_some());
    }

    #[test]
    fn a_volume_bound_to_the_claim_wins_even_when_waiting() {
        let claim = pvc("1Gi", json!({}));
        let vols = [
            pv("free", "1Gi", json!({})),
            pv(
                "mine",
                "5Gi",
                json!({"spec": {"claimRef": {"namespace": "ns", "name": "data"}},
                "status": {"phase": "Pending"}}),
            ),
        ];
        assert_eq!(
            name(find_matching_volume(&claim, &vols, None, false)),
            Some("mine")
        );
        assert_eq!(
            name(find_matching_volume(&claim, &vols, None, true)),
            Some("mine")
        );
        // Waiting for a consumer, nothing else matches without a node.
        assert_eq!(
            name(find_matching_volume(&claim, &vols[..1], None, true)),
            None
        );
        // A claimRef with another claim's UID is not this claim's.
        let other = [pv(
            "x",
            "1Gi",
            json!({"spec": {"claimRef": {"namespace": "ns", "name": "data", "uid": "u0"}}}),
        )];
        assert!(find_matching_volume(&claim, &other, None, false).is_none());
    }

    #[test]
    fn a_node_must_be_in_the_volume_affinity() {
        let claim = pvc("1Gi", json!({}));
        let vols = [pv(
            "local",
            "1Gi",
            json!({"spec": {"nodeAffinity": {"required": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["n1"]}]}]}}}}),
        )];
        let l1: BTreeMap<String, String> =
            [("kubernetes.io/hostname".to_string(), "n1".to_string())].into();
        let l2: BTreeMap<String, String> =
            [("kubernetes.io/hostname".to_string(), "n2".to_string())].into();
        let n1 = NodeView {
            name: "n1",
            labels: Some(&l1),
        };
        let n2 = NodeView {
            name: "n2",
            labels: Some(&l2),
        };
        assert!(find_matching_volume(&claim, &vols, Some(&n1), true).is_some());
        assert!(find_matching_volume(&claim, &vols, Some(&n2), true).is_none());
        // Without a node (Immediate binding) affinity is not checked.
        assert!(find_matching_volume(&claim, &vols, None, false).is_some());
    }
}
