//! The PVC protection controller (`pvc-protection`): a deleting PersistentVolumeClaim keeps
//! its `kubernetes.io/pvc-protection` finalizer while a pod that is scheduled and not finished
//! uses it, and loses it once none does, so that a claim in use is never deleted under a
//! running pod. Before letting go it asks the API server, not only its cache, whether a pod
//! still uses the claim.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use serde_json::json;
use skiff_client::controller::{Action, Config as RunConfig, Controller};
use skiff_client::reflector::{Change, ObjectKey};
use skiff_client::{Api, ListParams, Patch, PatchParams};
use tokio_util::sync::CancellationToken;

use crate::Context;

/// The finalizer this controller removes.
pub const FINALIZER: &str = "kubernetes.io/pvc-protection";

/// Whether `pod` uses the claim `name` (of the pod's namespace) in a way that must keep it: a
/// pod on a node, not finished, naming the claim or owning it as a generic ephemeral volume.
pub fn uses_claim(pod: &Pod, name: &str) -> bool {
    let Some(spec) = &pod.spec else { return false };
    if spec.node_name.as_deref().is_none_or(str::is_empty) {
        // The kubelet starts no pod whose claim is being deleted.
        return false;
    }
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Succeeded" | "Failed")) {
        return false;
    }
    let pod_name = pod.metadata.name.as_deref().unwrap_or("");
    spec.volumes.iter().flatten().any(|v| {
        v.persistent_volume_claim
            .as_ref()
            .is_some_and(|c| c.claim_name == name)
            || (v.ephemeral.is_some() && format!("{pod_name}-{}", v.name) == name)
    })
}

/// Runs the controller until `shutdown`.
pub async fn run(ctx: Arc<Context>, shutdown: CancellationToken) {
    let claims = ctx.informers.informer::<PersistentVolumeClaim>();
    let pods = ctx.pods();
    let ctrl = Controller::new(claims.clone(), RunConfig::default());
    let queue = ctrl.queue();
    // A pod that goes or finishes may free the claims it named.
    crate::spawn_each(pods.subscribe(), shutdown.clone(), move |c| {
        let pod = match &c {
            Change::Applied(p) | Change::Deleted(p) => p,
            Change::Resynced => return,
        };
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let pod_name = pod.metadata.name.clone().unwrap_or_default();
        for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
            if let Some(c) = &v.persistent_volume_claim {
                queue.add(ObjectKey::new(&ns, &c.claim_name));
            } else if v.ephemeral.is_some() {
                queue.add(ObjectKey::new(&ns, &format!("{pod_name}-{}", v.name)));
            }
        }
    });
    let pod_store = pods.store();
    ctrl.run(
        move |_key, pvc| {
            let (ctx, pod_store) = (ctx.clone(), pod_store.clone());
            async move {
                let Some(pvc) = pvc else {
                    return Ok::<_, skiff_client::Error>(Action::Done);
                };
                let has = pvc
                    .metadata
                    .finalizers
                    .iter()
                    .flatten()
                    .any(|f| f == FINALIZER);
                if pvc.metadata.deletion_timestamp.is_none() || !has {
                    return Ok(Action::Done);
                }
                let ns = pvc.metadata.namespace.clone().unwrap_or_default();
                let name = pvc.metadata.name.clone().unwrap_or_default();
                pod_store.wait_until_ready().await;
                if pod_store
                    .in_namespace(&ns)
                    .iter()
                    .any(|p| uses_claim(p, &name))
                {
                    return Ok(Action::Done);
                }
                // The cache may lag behind a pod just made: ask the API server.
                let live = Api::<Pod>::namespaced(ctx.client.clone(), &ns)
                    .list(&ListParams::default())
                    .await?;
                if live.items.iter().any(|p| uses_claim(p, &name)) {
                    return Ok(Action::Done);
                }
                remove_finalizer(&ctx, &pvc, &ns, &name).await?;
                Ok(Action::Done)
            }
        },
        shutdown,
    )
    .await;
}

async fn remove_finalizer(
    ctx: &Context,
    pvc: &PersistentVolumeClaim,
    ns: &str,
    name: &str,
) -> Result<(), skiff_client::Error> {
    let rest: Vec<&String> = pvc
        .metadata
        .finalizers
        .iter()
        .flatten()
        .filter(|f| *f != FINALIZER)
        .collect();
    let body = json!({"metadata": {"resourceVersion": pvc.metadata.resource_version,
        "finalizers": rest}});
    match Api::<PersistentVolumeClaim>::namespaced(ctx.client.clone(), ns)
        .patch(name, &PatchParams::default(), &Patch::Merge(body))
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn only_scheduled_unfinished_pods_hold_a_claim() {
        let running = pod(
            json!({"metadata": {"name": "web"}, "spec": {"nodeName": "n1",
            "containers": [], "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "data"}},
            {"name": "scratch", "ephemeral": {}}]}, "status": {"phase": "Running"}}),
        );
        assert!(uses_claim(&running, "data"));
        assert!(uses_claim(&running, "web-scratch"));
        assert!(!uses_claim(&running, "other"));
        let mut done = running.clone();
        done.status.as_mut().unwrap().phase = Some("Succeeded".into());
        assert!(!uses_claim(&done, "data"));
        let mut unscheduled = running.clone();
        unscheduled.spec.as_mut().unwrap().node_name = None;
        assert!(!uses_claim(&unscheduled, "data"));
    }
}
