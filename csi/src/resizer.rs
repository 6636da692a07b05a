//! The external resizer: Kubernetes' `external-resizer` sidecar, built in.
//!
//! A bound claim annotated `volume.kubernetes.io/storage-resizer: DRIVER` whose requested
//! size is above its `status.capacity` is grown with the driver's `ControllerExpandVolume`
//! (over CSI gRPC, so any driver fits); then the PersistentVolume's capacity and the claim's
//! `status.capacity` and `status.allocatedResources` are set to the new size. Events are the
//! external-resizer's: `Resizing`, `VolumeResizeSuccessful`, `VolumeResizeFailed`.
//! Skiff's drivers need no node-side expansion; a driver that answers
//! `node_expansion_required` leaves the claim with the `FileSystemResizePending` condition
//! for the kubelet.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use serde_json::json;
use skiff_client::controller::{Action, Config as RunConfig, Controller};
use skiff_client::events::{reference, Recorder};
use skiff_client::informer::InformerFactory;
use skiff_client::reflector::ObjectKey;
use skiff_client::{Api, Client, Patch, PatchParams};
use skiff_proto::csi::v1 as csi;
use tokio_util::sync::CancellationToken;

use crate::provisioner::{affinity_matches, bytes_of, quantity_of, Config, Error, Plugin, Result};
use crate::CsiClient;

/// The claim annotation naming the driver that is to resize it.
pub const ANN_STORAGE_RESIZER: &str = "volume.kubernetes.io/storage-resizer";

struct Resizer {
    plugin: Plugin,
    config: Config,
    csi: CsiClient,
    client: Client,
    recorder: Recorder,
}

/// The size a claim asks for and the size it has, when it asks for more.
fn wanted(claim: &PersistentVolumeClaim) -> Result<Option<(i64, i64)>> {
    let requested = claim
        .spec
        .as_ref()
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"));
    let current = claim
        .status
        .as_ref()
        .and_then(|s| s.capacity.as_ref())
        .and_then(|c| c.get("storage"));
    let (Some(requested), Some(current)) = (requested, current) else {
        return Ok(None);
    };
    let (requested, current) = (bytes_of(requested)?, bytes_of(current)?);
    Ok((requested > current).then_some((requested, current)))
}

impl Resizer {
    async fn reconcile(&self, claim: Arc<PersistentVolumeClaim>) -> Result<Action> {
        let meta = &claim.metadata;
        let ours = meta
            .annotations
            .as_ref()
            .and_then(|a| a.get(ANN_STORAGE_RESIZER))
            .is_some_and(|d| *d == self.plugin.name);
        let bound = claim.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
        let Some(volume_name) = claim.spec.as_ref().and_then(|s| s.volume_name.clone()) else {
            return Ok(Action::Done);
        };
        if !ours || !bound || meta.deletion_timestamp.is_some() {
            return Ok(Action::Done);
        }
        let Some((requested, _)) = wanted(&claim)? else {
            return Ok(Action::Done);
        };
        let pvs: Api<PersistentVolume> = Api::all(self.client.clone());
        let pv = pvs.get(&volume_name).await?;
        let Some(source) = pv.spec.as_ref().and_then(|s| s.csi.as_ref()) else {
            return Ok(Action::Done);
        };
        if source.driver != self.plugin.name {
            return Ok(Action::Done);
        }
        if let (Some(_), Some(t)) = (&self.config.node, &self.plugin.node_topology) {
            if !affinity_matches(pv.spec.as_ref().and_then(|s| s.node_affinity.as_ref()), t) {
                return Ok(Action::Done);
            }
        }
        self.recorder.normal(
            reference(claim.as_ref()),
            "Resizing",
            "Resizing",
            format!("External resizer is resizing volume {volume_name}"),
        );
        let r = self
            .csi
            .controller
            .clone()
            .controller_expand_volume(csi::ControllerExpandVolumeRequest {
                volume_id: source.volume_handle.clone(),
                capacity_range: Some(csi::CapacityRange {
                    required_bytes: requested,
                    limit_bytes: 0,
                }),
                secrets: HashMap::new(),
                volume_capability: None,
            })
            .await;
        let answer = match r {
            Ok(a) => a.into_inner(),
            Err(e) => {
                let e = Error::from(e);
                self.recorder.warning(
                    reference(claim.as_ref()),
                    "VolumeResizeFailed",
                    "Resizing",
                    format!(
                        "resize volume {volume_name:?} by resizer {:?} failed: {e}",
                        self.plugin.name
                    ),
                );
                return Err(e);
            }
        };
        let size = quantity_of(answer.capacity_bytes.max(requested));
        pvs.patch(
            &volume_name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"capacity": {"storage": size}}})),
        )
        .await?;
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(
            self.client.clone(),
            meta.namespace.as_deref().unwrap_or_default(),
        );
        let mut conditions: Vec<_> = claim
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c.type_ != "Resizing" && c.type_ != "ControllerResizeError")
            .collect();
        let status = if answer.node_expansion_required {
            conditions.push(k8s_openapi::api::core::v1::PersistentVolumeClaimCondition {
                type_: "FileSystemResizePending".into(),
                status: "True".into(),
                message: Some(
                    "Waiting for user to (re-)start a pod to finish file system resize of volume on node."
                        .into(),
                ),
                last_transition_time: Some(skiff_client::time::now_time()),
                ..Default::default()
            });
            json!({"status": {
                "allocatedResources": {"storage": size},
                "allocatedResourceStatuses": {"storage": "NodeResizePending"},
                "conditions": conditions,
            }})
        } else {
            json!({"status": {
                "capacity": {"storage": size},
                "allocatedResources": {"storage": size},
                "allocatedResourceStatuses": null,
                "conditions": conditions,
            }})
        };
        claims
            .patch_status(
                meta.name.as_deref().unwrap_or_default(),
                &PatchParams::default(),
                &Patch::Merge(status),
            )
            .await?;
        tracing::info!(volume = %volume_name, size = %size.0, "resized");
        self.recorder.normal(
            reference(claim.as_ref()),
            "VolumeResizeSuccessful",
            "Resizing",
            "Resize volume succeeded".into(),
        );
        Ok(Action::Done)
    }
}

/// Runs the resizer for the driver at `csi` until `shutdown`.
pub async fn run(
    client: Client,
    csi: CsiClient,
    plugin: Plugin,
    config: Config,
    shutdown: CancellationToken,
) {
    let factory = InformerFactory::new(client.clone(), shutdown.clone());
    let claims = factory.informer::<PersistentVolumeClaim>();
    let recorder = Recorder::new(client.clone(), &plugin.name, &config.identity);
    let r = Arc::new(Resizer {
        plugin,
        config,
        csi,
        client,
        recorder,
    });
    Controller::new(claims, RunConfig::default())
        .run(
            move |_: ObjectKey, claim: Option<Arc<PersistentVolumeClaim>>| {
                let r = r.clone();
                async move {
                    match claim {
                        Some(c) => r.reconcile(c).await,
                        None => Ok(Action::Done),
                    }
                }
            },
            shutdown,
        )
        .await;
}
