//! The ephemeral volume controller (`ephemeral-volume`, kube-controller-manager's
//! `ephemeral-volume-controller`): for every volume of a pod with an
//! `ephemeral.volumeClaimTemplate` (a generic ephemeral volume), the PersistentVolumeClaim
//! `<pod>-<volume>` in the pod's namespace, made from the template's labels, annotations and
//! spec and controlled by the pod (`controller` and `blockOwnerDeletion`), so that the
//! garbage collector deletes it, and with it a `Delete` volume, when the pod goes.
//!
//! As in Kubernetes, a claim of that name the pod does not control is never taken over: the
//! pod gets a `FailedBinding` warning (`ephemeral volume V: PVC NS/NAME was not created for
//! pod NS/POD (pod is not owner)`) and is retried with back-off, and the scheduler and the
//! kubelet do not use that claim for it. A claim deleted while its pod lives is made again.
//! Pods being deleted are left alone.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Volume};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use skiff_client::controller::{Action, Config as RunConfig, Controller};
use skiff_client::events::reference;
use skiff_client::reflector::{Change, ObjectKey, Store};
use skiff_client::{Api, PostParams};
use tokio_util::sync::CancellationToken;

use crate::{owners, Context};

/// The event reason for a claim that could not be made or is not the pod's.
pub const FAILED_BINDING: &str = "FailedBinding";

/// Errors handling one pod.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API refused or failed.
    #[error(transparent)]
    Api(#[from] skiff_client::Error),
    /// A volume's claim could not be had; the message is the pod's event.
    #[error("pod {pod}, {message}")]
    Volume {
        /// `namespace/name` of the pod.
        pod: String,
        /// `ephemeral volume V: ...`, as the event says.
        message: String,
    },
}

/// The claim a generic ephemeral volume stands for: `<pod>-<volume>`.
pub fn claim_name(pod: &Pod, volume: &Volume) -> String {
    format!(
        "{}-{}",
        pod.metadata.name.as_deref().unwrap_or_default(),
        volume.name
    )
}

/// Whether `pvc` is the claim made for `pod` (same namespace, controlled by the pod); the
/// error is Kubernetes' message.
pub fn volume_is_for_pod(pod: &Pod, pvc: &PersistentVolumeClaim) -> Result<(), String> {
    let controlled = owners::controller_of(&pvc.metadata)
        .is_some_and(|r| Some(&r.uid) == pod.metadata.uid.as_ref());
    if pvc.metadata.namespace == pod.metadata.namespace && controlled {
        return Ok(());
    }
    Err(format!(
        "PVC {}/{} was not created for pod {}/{} (pod is not owner)",
        pvc.metadata.namespace.as_deref().unwrap_or_default(),
        pvc.metadata.name.as_deref().unwrap_or_default(),
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default(),
    ))
}

/// The claim to create for `volume` of `pod`, if it is a generic ephemeral volume.
pub fn claim_for(pod: &Pod, volume: &Volume) -> Option<PersistentVolumeClaim> {
    let template = volume.ephemeral.as_ref()?.volume_claim_template.as_ref()?;
    let meta = template.metadata.clone().unwrap_or_default();
    Some(PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(claim_name(pod, volume)),
            namespace: pod.metadata.namespace.clone(),
            labels: meta.labels,
            annotations: meta.annotations,
            owner_references: Some(vec![owners::controller_ref(pod)]),
            ..Default::default()
        },
        spec: Some(template.spec.clone()),
        status: None,
    })
}

fn ephemeral_volumes(pod: &Pod) -> impl Iterator<Item = &Volume> {
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter(|v| v.ephemeral.is_some())
}

/// Runs the controller until `shutdown`: one worker per pod, `concurrency` at once.
pub async fn run(ctx: Arc<Context>, shutdown: CancellationToken) {
    let pods = ctx.pods();
    let claims = ctx.informers.informer::<PersistentVolumeClaim>();
    let claim_store = claims.store();
    let ctrl = Controller::new(
        pods.clone(),
        RunConfig {
            concurrency: ctx.config.concurrent_ephemeral_volume_syncs,
            ..RunConfig::default()
        },
    );
    // A claim deleted under a living pod is made again: wake the pods whose volume it was.
    {
        let (queue, pod_store) = (ctrl.queue(), pods.store());
        crate::spawn_each(claims.subscribe(), shutdown.clone(), move |c| {
            let Change::Deleted(pvc) = c else { return };
            let ns = pvc.metadata.namespace.as_deref().unwrap_or_default();
            let name = pvc.metadata.name.as_deref().unwrap_or_default();
            for pod in pod_store.in_namespace(ns) {
                if ephemeral_volumes(&pod).any(|v| claim_name(&pod, v) == name) {
                    queue.add(ObjectKey::of(pod.as_ref()));
                }
            }
        });
    }
    ctrl.run(
        move |key, pod| {
            let (ctx, claims) = (ctx.clone(), claim_store.clone());
            async move { sync_pod(&ctx, &claims, key, pod).await }
        },
        shutdown,
    )
    .await;
}

async fn sync_pod(
    ctx: &Context,
    claims: &Store<PersistentVolumeClaim>,
    key: ObjectKey,
    pod: Option<Arc<Pod>>,
) -> Result<Action, Error> {
    // A pod's spec cannot change, and its claims go with it through their owner reference:
    // only pods that live and have ephemeral volumes need anything.
    let Some(pod) = pod.filter(|p| !owners::deleting(&p.metadata)) else {
        return Ok(Action::Done);
    };
    if ephemeral_volumes(&pod).next().is_none() {
        return Ok(Action::Done);
    }
    claims.wait_until_ready().await;
    for v in ephemeral_volumes(&pod) {
        if let Err(message) = handle_volume(ctx, claims, &pod, v).await {
            let message = format!("ephemeral volume {}: {message}", v.name);
            ctx.events.warning(
                reference(pod.as_ref()),
                FAILED_BINDING,
                "Binding",
                message.clone(),
            );
            return Err(Error::Volume {
                pod: format!("{}/{}", key.namespace, key.name),
                message,
            });
        }
    }
    Ok(Action::Done)
}

/// Makes sure the claim of one ephemeral volume exists and is the pod's; the error is the
/// event's message.
async fn handle_volume(
    ctx: &Context,
    claims: &Store<PersistentVolumeClaim>,
    pod: &Pod,
    volume: &Volume,
) -> Result<(), String> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    let name = claim_name(pod, volume);
    if let Some(pvc) = claims.get(&ObjectKey::new(ns, &name)) {
        return volume_is_for_pod(pod, &pvc);
    }
    let Some(pvc) = claim_for(pod, volume) else {
        // No template: the API server refuses such pods; nothing to make.
        return Ok(());
    };
    let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), ns);
    match api.create(&PostParams::default(), &pvc).await {
        Ok(_) => Ok(()),
        Err(e) if e.is_already_exists() => {
            // Made a moment ago (by this controller or someone else) and not in the cache yet.
            match api.get(&name).await {
                Ok(there) => volume_is_for_pod(pod, &there),
                Err(e) => Err(format!("create PVC {name}: {e}")),
            }
        }
        Err(e) => Err(format!("create PVC {name}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "ns", "uid": "u-1"},
            "spec": {"containers": [{"name": "c", "image": "busybox"}], "volumes": [
                {"name": "scratch", "ephemeral": {"volumeClaimTemplate": {
                    "metadata": {"labels": {"tier": "cache"}, "annotations": {"a": "b"}},
                    "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "local",
                             "resources": {"requests": {"storage": "1Gi"}}}}}},
                {"name": "tmp", "emptyDir": {}}
            ]}
        }))
        .unwrap()
    }

    #[test]
    fn claims_are_named_after_pod_and_volume_and_owned_by_the_pod() {
        let p = pod();
        let vols: Vec<_> = ephemeral_volumes(&p).collect();
        assert_eq!(vols.len(), 1);
        let c = claim_for(&p, vols[0]).unwrap();
        assert_eq!(c.metadata.name.as_deref(), Some("web-scratch"));
        assert_eq!(c.metadata.namespace.as_deref(), Some("ns"));
        assert_eq!(c.metadata.labels.as_ref().unwrap()["tier"], "cache");
        assert_eq!(c.metadata.annotations.as_ref().unwrap()["a"], "b");
        let r = &c.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (r.kind.as_str(), r.api_version.as_str(), r.name.as_str()),
            ("Pod", "v1", "web")
        );
        assert_eq!(r.uid, "u-1");
        assert_eq!(
            (r.controller, r.block_owner_deletion),
            (Some(true), Some(true))
        );
        let spec = c.spec.as_ref().unwrap();
        assert_eq!(spec.storage_class_name.as_deref(), Some("local"));
        assert!(volume_is_for_pod(&p, &c).is_ok());
    }

    #[test]
    fn a_claim_the_pod_does_not_control_is_refused_in_kubes_words() {
        let p = pod();
        let mut c = claim_for(&p, ephemeral_volumes(&p).next().unwrap()).unwrap();
        c.metadata.owner_references = None;
        assert_eq!(
            volume_is_for_pod(&p, &c).unwrap_err(),
            "PVC ns/web-scratch was not created for pod ns/web (pod is not owner)"
        );
        // Owned, but not as its controller, or by an earlier pod of the same name.
        let mut r = owners::controller_ref(&p);
        r.controller = None;
        c.metadata.owner_references = Some(vec![r.clone()]);
        assert!(volume_is_for_pod(&p, &c).is_err());
        r.controller = Some(true);
        r.uid = "u-0".into();
        c.metadata.owner_references = Some(vec![r]);
        assert!(volume_is_for_pod(&p, &c).is_err());
    }
}
