//! VolumeBinding's Reserve, Unreserve and PreBind, kube-scheduler's way.
//!
//! Reserve works out, for the chosen node, which Available volumes the pod's
//! `WaitForFirstConsumer` claims get and which claims are provisioned there, and assumes
//! both in the cache (a volume's `claimRef`, a claim's `volume.kubernetes.io/selected-node`)
//! so the next pod sees them taken. PreBind, in the background bind task, writes them to the
//! API server (optimistically, on the versions the decision was made on) and waits until
//! the PV controller has bound every claim of the pod, at most `bindTimeoutSeconds`.
//! Unreserve forgets the assumptions when anything fails.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolume, PersistentVolumeClaim, Pod};
use skiff_client::{Api, Client, PostParams};
use tokio::sync::watch;

use crate::plugins::volume_binding::{find_pod_volumes, pod_claims};
use crate::snapshot::Snapshot;
use crate::volumes::{self, VolumeCache, BOUND_BY_CONTROLLER, SELECTED_NODE};

/// Why PreBind failed (kube's wording after `binding volumes: `).
#[derive(Debug, thiserror::Error)]
pub enum PreBindError {
    /// A write to the API server failed.
    #[error("binding volumes: {0}")]
    Write(#[source] skiff_client::Error),
    /// A claim or volume changed under the binding.
    #[error("binding volumes: {0}")]
    Changed(String),
    /// The claims were not bound within `bindTimeoutSeconds`.
    #[error("binding volumes: timed out waiting for the condition")]
    Timeout,
}

/// What Reserve assumed for one pod.
#[derive(Debug, Default)]
pub struct Reserved {
    /// The pod's namespace.
    pub namespace: String,
    /// Every claim the pod uses.
    pub claims: Vec<String>,
    /// Volumes promised to claims (with their new `claimRef`).
    pub bind: Vec<PersistentVolume>,
    /// Claims given the node (with the annotation).
    pub provision: Vec<PersistentVolumeClaim>,
}

impl Reserved {
    fn volume_names(&self) -> Vec<String> {
        self.bind
            .iter()
            .filter_map(|v| v.metadata.name.clone())
            .collect()
    }

    fn claim_keys(&self) -> Vec<String> {
        self.provision
            .iter()
            .map(|c| volumes::key(&self.namespace, c.metadata.name.as_deref().unwrap_or("")))
            .collect()
    }
}

/// Reserve: assumes the pod's volume bindings on `node` in `snap`. `Ok(None)` when the pod
/// has no claims; `Err` with the reasons when the node no longer suits them.
pub fn reserve(snap: &mut Snapshot, pod: &Pod, node: &str) -> Result<Option<Reserved>, String> {
    let Some(claims) = pod_claims(pod, &snap.volumes)? else {
        return Ok(None);
    };
    let Some(i) = snap.index_of(node) else {
        return Err(format!("node {node:?} not found"));
    };
    let found =
        find_pod_volumes(&claims, &snap.nodes[i], &snap.volumes).map_err(|r| r.join(", "))?;
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let mut out = Reserved {
        claims: volumes::pod_claims(pod),
        namespace,
        ..Default::default()
    };
    for (pv, pvc) in found.bind {
        let mut pv = (*pv).clone();
        let spec = pv.spec.get_or_insert_with(Default::default);
        spec.claim_ref = Some(ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("PersistentVolumeClaim".into()),
            namespace: pvc.metadata.namespace.clone(),
            name: pvc.metadata.name.clone(),
            uid: pvc.metadata.uid.clone(),
            resource_version: pvc.metadata.resource_version.clone(),
            ..Default::default()
        });
        pv.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(BOUND_BY_CONTROLLER.into(), "yes".into());
        snap.volumes.assume_volume(pv.clone());
        out.bind.push(pv);
    }
    for pvc in found.provision {
        if volumes::selected_node(&pvc) == Some(node) {
            continue;
        }
        let mut pvc = (*pvc).clone();
        pvc.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(SELECTED_NODE.into(), node.into());
        snap.volumes.assume_claim(pvc.clone());
        out.provision.push(pvc);
    }
    Ok(Some(out))
}

/// Unreserve: forgets what [`reserve`] assumed.
pub fn unreserve(snap: &mut Snapshot, r: &Reserved) {
    snap.volumes.forget(&r.volume_names(), &r.claim_keys());
}

/// Whether every claim of the pod is bound: `Ok(true)` yes, `Ok(false)` not yet, `Err` when
/// the binding can no longer happen as reserved.
pub fn all_bound(cache: &VolumeCache, r: &Reserved) -> Result<bool, String> {
    for pv in &r.bind {
        let name = pv.metadata.name.as_deref().unwrap_or("");
        match cache.volume(name) {
            None => return Err(format!("persistentvolume \"{name}\" not found")),
            Some(v) if v.spec.as_ref().and_then(|s| s.claim_ref.as_ref()).is_none() => {
                return Err(format!("ClaimRef got reset for pv {name:?}"))
            }
            Some(_) => {}
        }
    }
    let mut bound = true;
    for name in &r.claims {
        let Some(pvc) = cache.claim(&r.namespace, name) else {
            return Err(format!("persistentvolumeclaim \"{name}\" not found"));
        };
        let provisioned = r
            .provision
            .iter()
            .any(|c| c.metadata.name.as_deref() == Some(name));
        if provisioned && !volumes::fully_bound(pvc) && volumes::selected_node(pvc).is_none() {
            return Err(format!("selectedNode annotation reset for PVC {name:?}"));
        }
        let pv_ok = pvc
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.as_deref())
            .and_then(|v| cache.volume(v))
            .is_some_and(|pv| skiff_rules::volume::is_bound_to(pv, pvc));
        bound &= volumes::fully_bound(pvc) && pv_ok;
    }
    Ok(bound)
}

/// PreBind: writes what was reserved and waits until the claims are bound. `cache` reads the
/// scheduler's volume cache; `changes` ticks whenever it changes.
pub async fn pre_bind(
    client: &Client,
    r: &Reserved,
    cache: impl Fn() -> Result<bool, String>,
    mut changes: watch::Receiver<u64>,
    timeout: Duration,
) -> Result<(), PreBindError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    for pv in &r.bind {
        let name = pv.metadata.name.as_deref().unwrap_or("");
        pvs.replace(name, &PostParams::default(), pv)
            .await
            .map_err(PreBindError::Write)?;
    }
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &r.namespace);
    for pvc in &r.provision {
        let name = pvc.metadata.name.as_deref().unwrap_or("");
        pvcs.replace(name, &PostParams::default(), pvc)
            .await
            .map_err(PreBindError::Write)?;
    }
    changes.mark_unchanged();
    loop {
        if cache().map_err(PreBindError::Changed)? {
            return Ok(());
        }
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => return Err(PreBindError::Timeout),
            c = changes.changed() => if c.is_err() { return Err(PreBindError::Timeout) },
        }
    }
}
