//! The external resizer: Kubernetes' `external-resizer` sidecar, built in.
//!
//! A bound claim annotated `volume.kubernetes.io/storage-resizer: DRIVER` (by the controller
//! manager's expander) whose requested size is above its `status.capacity` is grown with the
//! driver's `ControllerExpandVolume` (over CSI gRPC, so any driver fits), through the states
//! the external-resizer records on the claim:
//!
//! 1. the `Resizing` condition, `status.allocatedResources.storage` set to the new size and
//!    `status.allocatedResourceStatuses.storage: ControllerResizeInProgress`, and a `Resizing`
//!    event;
//! 2. `ControllerExpandVolume`; the PersistentVolume's capacity set to what the driver
//!    answers;
//! 3. then either, when the driver needs no node expansion, `status.capacity` grown, the
//!    resize conditions and the resource status cleared, the annotation
//!    `volume.kubernetes.io/node-expansion-not-required: "true"` and a
//!    `VolumeResizeSuccessful` event; or, when it does (`node_expansion_required`), the
//!    `FileSystemResizePending` condition, `NodeResizePending` and a
//!    `FileSystemResizeRequired` event: the kubelet of a node using the volume finishes with
//!    `NodeExpandVolume` and grows `status.capacity`.
//!
//! A failure is a `VolumeResizeFailed` event and a retry with back-off; an error that says the
//! operation is over (any code but `Canceled`, `DeadlineExceeded`, `Unavailable`,
//! `ResourceExhausted`, `Aborted`) also sets the `ControllerResizeError` condition, and one
//! that says it cannot succeed (`InvalidArgument`, `OutOfRange`, `NotFound`)
//! `ControllerResizeInfeasible`.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    PersistentVolume, PersistentVolumeClaim, PersistentVolumeClaimCondition,
};
use serde_json::{json, Value};
use skiff_client::controller::{Action, Config as RunConfig, Controller};
use skiff_client::events::{reference, Recorder};
use skiff_client::informer::InformerFactory;
use skiff_client::{Api, Client, Patch, PatchParams};
use skiff_proto::csi::v1 as csi;
use tokio_util::sync::CancellationToken;

use crate::provisioner::{
    affinity_matches, bytes_of, capabilities, quantity_of, Config, Error, Plugin, Result,
};
use crate::CsiClient;

/// The claim annotation naming the driver that is to resize it.
pub const ANN_STORAGE_RESIZER: &str = "volume.kubernetes.io/storage-resizer";
/// The claim annotation telling the kubelet that no node expansion is to follow.
pub const ANN_NODE_EXPANSION_NOT_REQUIRED: &str =
    "volume.kubernetes.io/node-expansion-not-required";

/// The claim condition of a resize under way in the controller.
pub const RESIZING: &str = "Resizing";
/// The claim condition of a resize waiting for the node.
pub const FILE_SYSTEM_RESIZE_PENDING: &str = "FileSystemResizePending";
/// The claim condition of a failed controller resize.
pub const CONTROLLER_RESIZE_ERROR: &str = "ControllerResizeError";
/// The claim condition of a failed node resize.
pub const NODE_RESIZE_ERROR: &str = "NodeResizeError";
/// The conditions that belong to resizing, replaced as a resize goes on.
const RESIZE_CONDITIONS: [&str; 4] = [
    RESIZING,
    FILE_SYSTEM_RESIZE_PENDING,
    CONTROLLER_RESIZE_ERROR,
    NODE_RESIZE_ERROR,
];

/// `status.allocatedResourceStatuses.storage` while the controller expands.
pub const CONTROLLER_RESIZE_IN_PROGRESS: &str = "ControllerResizeInProgress";
/// ... when the controller's expansion cannot succeed.
pub const CONTROLLER_RESIZE_INFEASIBLE: &str = "ControllerResizeInfeasible";
/// ... when the node is to finish the expansion.
pub const NODE_RESIZE_PENDING: &str = "NodeResizePending";
/// ... while the node expands.
pub const NODE_RESIZE_IN_PROGRESS: &str = "NodeResizeInProgress";

/// The message of `FileSystemResizePending`, as Kubernetes words it.
pub const FILE_SYSTEM_RESIZE_PENDING_MESSAGE: &str =
    "Waiting for user to (re-)start a pod to finish file system resize of volume on node.";

struct Resizer {
    plugin: Plugin,
    config: Config,
    csi: CsiClient,
    client: Client,
    recorder: Recorder,
}

/// The claim's `status.allocatedResourceStatuses.storage`, if any.
fn resize_status(claim: &PersistentVolumeClaim) -> Option<&str> {
    claim
        .status
        .as_ref()
        .and_then(|s| s.allocated_resource_statuses.as_ref())
        .and_then(|m| m.get("storage"))
        .map(String::as_str)
}

/// The claim's conditions with the resize ones replaced by `new` (all of them dropped unless
/// `keep_old`), as the external-resizer merges them.
pub fn merge_resize_conditions(
    claim: &PersistentVolumeClaim,
    new: Vec<PersistentVolumeClaimCondition>,
    keep_old: bool,
) -> Vec<PersistentVolumeClaimCondition> {
    let mut out: Vec<PersistentVolumeClaimCondition> = claim
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|c| {
            !RESIZE_CONDITIONS.contains(&c.type_.as_str())
                || (keep_old && !new.iter().any(|n| n.type_ == c.type_))
        })
        .collect();
    out.extend(new);
    out
}

/// A resize condition, true since now.
pub fn condition(type_: &str, message: Option<String>) -> PersistentVolumeClaimCondition {
    PersistentVolumeClaimCondition {
        type_: type_.into(),
        status: "True".into(),
        message,
        last_transition_time: Some(skiff_client::time::now_time()),
        ..Default::default()
    }
}

/// The merge patch value that removes the `storage` entry of the claim's
/// `allocatedResourceStatuses` (the whole map when nothing else is in it).
pub fn clear_resize_status(claim: &PersistentVolumeClaim) -> Value {
    let others = claim
        .status
        .as_ref()
        .and_then(|s| s.allocated_resource_statuses.as_ref())
        .is_some_and(|m| m.keys().any(|k| k != "storage"));
    if others {
        json!({"storage": null})
    } else {
        Value::Null
    }
}

/// Whether a failed call is over for sure (the external-resizer's `IsFinalError`).
fn is_final(code: tonic::Code) -> bool {
    use tonic::Code;
    !matches!(
        code,
        Code::Cancelled
            | Code::DeadlineExceeded
            | Code::Unavailable
            | Code::ResourceExhausted
            | Code::Aborted
    )
}

/// Whether a failed call can never succeed (the external-resizer's `IsInfeasibleError`).
fn is_infeasible(code: tonic::Code) -> bool {
    use tonic::Code;
    matches!(
        code,
        Code::InvalidArgument | Code::OutOfRange | Code::NotFound
    )
}

/// What to do with a claim, by its sizes and resize status.
#[derive(Debug, PartialEq, Eq)]
enum Plan {
    /// Nothing: no growth asked for, or the node's part is pending.
    Nothing,
    /// Expand the volume to this many bytes.
    Expand(i64),
}

fn plan(claim: &PersistentVolumeClaim, pv_bytes: i64) -> Result<Plan> {
    let quantity = |q: Option<&k8s_openapi::apimachinery::pkg::api::resource::Quantity>| {
        q.map(bytes_of).transpose()
    };
    let status = claim.status.as_ref();
    let requested = quantity(
        claim
            .spec
            .as_ref()
            .and_then(|s| s.resources.as_ref())
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("storage")),
    )?;
    let capacity = quantity(
        status
            .and_then(|s| s.capacity.as_ref())
            .and_then(|c| c.get("storage")),
    )?;
    let allocated = quantity(
        status
            .and_then(|s| s.allocated_resources.as_ref())
            .and_then(|c| c.get("storage")),
    )?;
    let (Some(requested), Some(capacity)) = (requested, capacity) else {
        return Ok(Plan::Nothing);
    };
    if requested <= capacity {
        return Ok(Plan::Nothing);
    }
    let node_side = matches!(
        resize_status(claim),
        Some(NODE_RESIZE_PENDING | NODE_RESIZE_IN_PROGRESS)
    );
    // The node finishes what the controller did: let it, unless more is asked for than the
    // volume has now.
    if node_side && pv_bytes >= allocated.unwrap_or(requested) {
        return Ok(Plan::Nothing);
    }
    // Claims can only grow (the API server refuses shrinking), so the request is the size
    // to reach, whatever an earlier attempt allocated.
    Ok(Plan::Expand(requested))
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
        // A first look before reading the volume: nothing asked for.
        if plan(&claim, 0)? == Plan::Nothing {
            return Ok(Action::Done);
        }
        let pvs: Api<PersistentVolume> = Api::all(self.client.clone());
        let pv = pvs.get(&volume_name).await?;
        let spec = pv.spec.clone().unwrap_or_default();
        let Some(source) = spec.csi.as_ref() else {
            return Ok(Action::Done);
        };
        if source.driver != self.plugin.name {
            return Ok(Action::Done);
        }
        let claim_ref_uid = spec.claim_ref.as_ref().and_then(|r| r.uid.as_deref());
        if claim_ref_uid != meta.uid.as_deref() {
            return Ok(Action::Done);
        }
        if let (Some(_), Some(t)) = (&self.config.node, &self.plugin.node_topology) {
            if !affinity_matches(spec.node_affinity.as_ref(), t) {
                return Ok(Action::Done);
            }
        }
        let pv_bytes = spec
            .capacity
            .as_ref()
            .and_then(|c| c.get("storage"))
            .map(bytes_of)
            .transpose()?
            .unwrap_or(0);
        let Plan::Expand(new_bytes) = plan(&claim, pv_bytes)? else {
            return Ok(Action::Done);
        };
        let new_size = quantity_of(new_bytes);
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(
            self.client.clone(),
            meta.namespace.as_deref().unwrap_or_default(),
        );
        let name = meta.name.clone().unwrap_or_default();
        let patch_status = |v: Value| {
            let (claims, name) = (claims.clone(), name.clone());
            async move {
                claims
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(v))
                    .await
            }
        };
        let claim = Arc::new(
            patch_status(json!({"status": {
                "conditions": merge_resize_conditions(&claim, vec![condition(RESIZING, None)], false),
                "allocatedResources": {"storage": new_size},
                "allocatedResourceStatuses": {"storage": CONTROLLER_RESIZE_IN_PROGRESS},
            }}))
            .await?,
        );
        self.recorder.normal(
            reference(claim.as_ref()),
            "Resizing",
            "Resizing",
            format!("External resizer is resizing volume {volume_name}"),
        );
        let block = spec.volume_mode.as_deref() == Some("Block");
        let capability = capabilities(
            spec.access_modes.as_deref().unwrap_or_default(),
            block,
            source.fs_type.as_deref().unwrap_or_default(),
            spec.mount_options.as_deref().unwrap_or_default(),
        )
        .into_iter()
        .next();
        let r = self
            .csi
            .controller
            .clone()
            .controller_expand_volume(csi::ControllerExpandVolumeRequest {
                volume_id: source.volume_handle.clone(),
                capacity_range: Some(csi::CapacityRange {
                    required_bytes: new_bytes,
                    limit_bytes: 0,
                }),
                secrets: HashMap::new(),
                volume_capability: capability,
            })
            .await;
        let answer = match r {
            Ok(a) => a.into_inner(),
            Err(status) => {
                let code = status.code();
                let e = Error::from(status);
                if is_final(code) {
                    let mut s = json!({"conditions": merge_resize_conditions(
                        &claim,
                        vec![condition(CONTROLLER_RESIZE_ERROR, Some(format!("failed to expand pvc with {e}")))],
                        true,
                    )});
                    if is_infeasible(code) {
                        s["allocatedResourceStatuses"] =
                            json!({"storage": CONTROLLER_RESIZE_INFEASIBLE});
                    }
                    if let Err(pe) = patch_status(json!({ "status": s })).await {
                        tracing::warn!(claim = %name, error = %pe, "recording a failed resize");
                    }
                }
                let e = Error::Invalid(format!(
                    "resize volume {volume_name:?} by resizer {:?} failed: {e}",
                    self.plugin.name
                ));
                self.recorder.warning(
                    reference(claim.as_ref()),
                    "VolumeResizeFailed",
                    "Resizing",
                    e.to_string(),
                );
                return Err(e);
            }
        };
        let size = quantity_of(answer.capacity_bytes.max(new_bytes));
        pvs.patch(
            &volume_name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"capacity": {"storage": size}}})),
        )
        .await?;
        if answer.node_expansion_required {
            patch_status(json!({"status": {
                "conditions": merge_resize_conditions(
                    &claim,
                    vec![condition(
                        FILE_SYSTEM_RESIZE_PENDING,
                        Some(FILE_SYSTEM_RESIZE_PENDING_MESSAGE.into()),
                    )],
                    true,
                ),
                "allocatedResourceStatuses": {"storage": NODE_RESIZE_PENDING},
            }}))
            .await?;
            claims
                .patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(
                        json!({"metadata": {"annotations": {ANN_NODE_EXPANSION_NOT_REQUIRED: null}}}),
                    ),
                )
                .await?;
            tracing::info!(volume = %volume_name, size = %size.0, "resized; the node is to finish");
            self.recorder.normal(
                reference(claim.as_ref()),
                "FileSystemResizeRequired",
                "Resizing",
                "Require file system resize of volume on node".into(),
            );
            return Ok(Action::Done);
        }
        patch_status(json!({"status": {
            "capacity": {"storage": size},
            "conditions": merge_resize_conditions(&claim, vec![], false),
            "allocatedResourceStatuses": clear_resize_status(&claim),
        }}))
        .await?;
        claims
            .patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(
                    json!({"metadata": {"annotations": {ANN_NODE_EXPANSION_NOT_REQUIRED: "true"}}}),
                ),
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
        .run_present(
            move |claim: Arc<PersistentVolumeClaim>| {
                let r = r.clone();
                async move { r.reconcile(claim).await }
            },
            shutdown,
        )
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(v: Value) -> PersistentVolumeClaim {
        serde_json::from_value(v).unwrap()
    }

    fn sized(requested: &str, capacity: &str, status: Value) -> PersistentVolumeClaim {
        let mut s = json!({"phase": "Bound", "capacity": {"storage": capacity}});
        if let (Some(o), Some(extra)) = (s.as_object_mut(), status.as_object()) {
            o.extend(extra.clone());
        }
        claim(json!({
            "metadata": {"name": "c"},
            "spec": {"resources": {"requests": {"storage": requested}}},
            "status": s,
        }))
    }

    #[test]
    fn what_to_do_by_sizes_and_status() {
        const MI: i64 = 1 << 20;
        // Nothing asked for.
        assert_eq!(
            plan(&sized("1Mi", "1Mi", json!({})), MI).unwrap(),
            Plan::Nothing
        );
        // Growth asked for.
        assert_eq!(
            plan(&sized("2Mi", "1Mi", json!({})), MI).unwrap(),
            Plan::Expand(2 * MI)
        );
        // The controller expanded, the node has yet to: wait for the kubelet.
        let pending = json!({"allocatedResources": {"storage": "2Mi"},
            "allocatedResourceStatuses": {"storage": NODE_RESIZE_PENDING}});
        assert_eq!(
            plan(&sized("2Mi", "1Mi", pending.clone()), 2 * MI).unwrap(),
            Plan::Nothing
        );
        // ... unless more is asked for than the volume has.
        assert_eq!(
            plan(&sized("3Mi", "1Mi", pending), 2 * MI).unwrap(),
            Plan::Nothing
        );
        let pending_small = json!({"allocatedResources": {"storage": "2Mi"},
            "allocatedResourceStatuses": {"storage": NODE_RESIZE_IN_PROGRESS}});
        assert_eq!(
            plan(&sized("3Mi", "1Mi", pending_small), MI).unwrap(),
            Plan::Expand(3 * MI)
        );
        // Expanded but not recorded: expand again (idempotent) to record it.
        let in_progress = json!({"allocatedResources": {"storage": "2Mi"},
            "allocatedResourceStatuses": {"storage": CONTROLLER_RESIZE_IN_PROGRESS}});
        assert_eq!(
            plan(&sized("2Mi", "1Mi", in_progress), 2 * MI).unwrap(),
            Plan::Expand(2 * MI)
        );
        // No capacity yet, or a bad quantity.
        let unbound = claim(json!({"spec": {"resources": {"requests": {"storage": "1Mi"}}}}));
        assert_eq!(plan(&unbound, 0).unwrap(), Plan::Nothing);
        assert!(plan(&sized("lots", "1Mi", json!({})), 0).is_err());
    }

    #[test]
    fn resize_conditions_merge_as_the_external_resizers() {
        let c = sized(
            "2Mi",
            "1Mi",
            json!({"conditions": [
                {"type": "Resizing", "status": "True"},
                {"type": "ControllerResizeError", "status": "True", "message": "old"},
                {"type": "Other", "status": "True"},
            ]}),
        );
        let types = |v: &[PersistentVolumeClaimCondition]| {
            v.iter().map(|c| c.type_.clone()).collect::<Vec<_>>()
        };
        let kept =
            merge_resize_conditions(&c, vec![condition(FILE_SYSTEM_RESIZE_PENDING, None)], true);
        assert_eq!(
            types(&kept),
            [
                "Resizing",
                "ControllerResizeError",
                "Other",
                "FileSystemResizePending"
            ]
        );
        let replaced = merge_resize_conditions(&c, vec![condition(RESIZING, None)], false);
        assert_eq!(types(&replaced), ["Other", "Resizing"]);
        assert_eq!(
            types(&merge_resize_conditions(&c, vec![], false)),
            ["Other"]
        );
    }

    #[test]
    fn the_storage_status_is_cleared_alone() {
        let only = sized(
            "1Mi",
            "1Mi",
            json!({"allocatedResourceStatuses": {"storage": NODE_RESIZE_PENDING}}),
        );
        assert_eq!(clear_resize_status(&only), Value::Null);
        let more = sized(
            "1Mi",
            "1Mi",
            json!({"allocatedResourceStatuses": {"storage": NODE_RESIZE_PENDING, "example.com/x": "NodeResizePending"}}),
        );
        assert_eq!(clear_resize_status(&more), json!({"storage": null}));
    }

    #[test]
    fn final_and_infeasible_codes() {
        use tonic::Code;
        assert!(!is_final(Code::ResourceExhausted));
        assert!(!is_final(Code::Unavailable));
        assert!(is_final(Code::Internal));
        assert!(is_final(Code::OutOfRange));
        assert!(is_infeasible(Code::OutOfRange));
        assert!(is_infeasible(Code::NotFound));
        assert!(!is_infeasible(Code::Internal));
    }
}
