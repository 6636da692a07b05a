//! The volume expander (`persistentvolume-expander`): a bound claim that asks for more storage
//! than it has, on a CSI volume, is handed to the driver's external resizer by annotating it
//! `volume.kubernetes.io/storage-resizer: DRIVER`, as Kubernetes does for CSI drivers; the
//! resizer grows the volume and then the claim's `status.capacity`.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use serde_json::json;
use skiff_client::controller::{Action, Config as RunConfig, Controller};
use skiff_client::events::reference;
use skiff_client::reflector::{ObjectKey, Store};
use skiff_client::{Api, Patch, PatchParams};
use skiff_rules::volume::requested;
use skiff_rules::Quantity;
use tokio_util::sync::CancellationToken;

use crate::Context;

/// The annotation naming the driver that resizes a claim's volume.
pub const STORAGE_RESIZER: &str = "volume.kubernetes.io/storage-resizer";

/// The driver that must resize the claim's volume, when the claim asks for more than it has
/// and its volume is a CSI one.
pub fn resizer_for(pvc: &PersistentVolumeClaim, pv: Option<&PersistentVolume>) -> Option<String> {
    let status = pvc.status.as_ref()?;
    if status.phase.as_deref() != Some("Bound") {
        return None;
    }
    let has = status
        .capacity
        .as_ref()
        .and_then(|c| c.get("storage"))
        .and_then(|q| Quantity::try_from(q).ok())
        .unwrap_or_default();
    if requested(pvc) <= has {
        return None;
    }
    let csi = pv?.spec.as_ref()?.csi.as_ref()?;
    Some(csi.driver.clone())
}

/// Runs the controller until `shutdown`.
pub async fn run(ctx: Arc<Context>, shutdown: CancellationToken) {
    let claims = ctx.informers.informer::<PersistentVolumeClaim>();
    let volumes: Store<PersistentVolume> = ctx.informers.informer::<PersistentVolume>().store();
    let ctrl = Controller::new(claims, RunConfig::default());
    ctrl.run(
        move |_key, pvc| {
            let (ctx, volumes) = (ctx.clone(), volumes.clone());
            async move {
                let Some(pvc) = pvc else {
                    return Ok::<_, skiff_client::Error>(Action::Done);
                };
                volumes.wait_until_ready().await;
                let vname = pvc
                    .spec
                    .as_ref()
                    .and_then(|s| s.volume_name.clone())
                    .unwrap_or_default();
                let pv = volumes.get(&ObjectKey::new("", &vname));
                let Some(driver) = resizer_for(&pvc, pv.as_deref()) else {
                    return Ok(Action::Done);
                };
                let current = pvc
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(STORAGE_RESIZER));
                if current == Some(&driver) {
                    return Ok(Action::Done);
                }
                let body = json!({"metadata": {"annotations": {STORAGE_RESIZER: driver}}});
                let ns = pvc.metadata.namespace.clone().unwrap_or_default();
                let name = pvc.metadata.name.clone().unwrap_or_default();
                Api::<PersistentVolumeClaim>::namespaced(ctx.client.clone(), &ns)
                    .patch(&name, &PatchParams::default(), &Patch::Merge(body))
                    .await?;
                ctx.events.normal(
                    reference(pvc.as_ref()),
                    "ExternalExpanding",
                    "Resize",
                    "waiting for an external controller to expand this PVC".into(),
                );
                Ok(Action::Done)
            }
        },
        shutdown,
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grown_csi_claims_go_to_their_driver() {
        let pvc = |req: &str, phase: &str| -> PersistentVolumeClaim {
            serde_json::from_value(
                json!({"metadata": {"name": "d"}, "spec": {"volumeName": "v",
                "resources": {"requests": {"storage": req}}},
                "status": {"phase": phase, "capacity": {"storage": "1Gi"}}}),
            )
            .unwrap()
        };
        let csi: PersistentVolume = serde_json::from_value(json!({"metadata": {"name": "v"},
            "spec": {"csi": {"driver": "local.csi.skiff.dev", "volumeHandle": "h"}}}))
        .unwrap();
        let host: PersistentVolume = serde_json::from_value(json!({"metadata": {"name": "v"},
            "spec": {"hostPath": {"path": "/x"}}}))
        .unwrap();
        assert_eq!(
            resizer_for(&pvc("2Gi", "Bound"), Some(&csi)).as_deref(),
            Some("local.csi.skiff.dev")
        );
        assert_eq!(resizer_for(&pvc("1Gi", "Bound"), Some(&csi)), None);
        assert_eq!(resizer_for(&pvc("2Gi", "Pending"), Some(&csi)), None);
        assert_eq!(resizer_for(&pvc("2Gi", "Bound"), Some(&host)), None);
    }
}
