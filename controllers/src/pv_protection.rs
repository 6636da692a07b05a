//! The PV protection controller (`pv-protection`): a deleting PersistentVolume keeps its
//! `kubernetes.io/pv-protection` finalizer while it is Bound to a claim, and loses it once it
//! is not, so that a volume in use is never deleted under its claim.

use std::sync::Arc;

use k8s_openapi::api::core::v1::PersistentVolume;
use serde_json::json;
use skiff_client::controller::{Action, Config as RunConfig, Controller};
use skiff_client::{Api, Patch, PatchParams};
use tokio_util::sync::CancellationToken;

use crate::Context;

/// The finalizer this controller removes.
pub const FINALIZER: &str = "kubernetes.io/pv-protection";

/// Whether a deleting volume may go: it holds the finalizer and is not Bound.
pub fn may_go(pv: &PersistentVolume) -> bool {
    pv.metadata.deletion_timestamp.is_some()
        && pv
            .metadata
            .finalizers
            .iter()
            .flatten()
            .any(|f| f == FINALIZER)
        && pv.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Bound")
}

/// Runs the controller until `shutdown`.
pub async fn run(ctx: Arc<Context>, shutdown: CancellationToken) {
    let volumes = ctx.informers.informer::<PersistentVolume>();
    let ctrl = Controller::new(volumes, RunConfig::default());
    ctrl.run(
        move |_key, pv| {
            let ctx = ctx.clone();
            async move {
                let Some(pv) = pv.filter(|pv| may_go(pv)) else {
                    return Ok::<_, skiff_client::Error>(Action::Done);
                };
                let rest: Vec<&String> = pv
                    .metadata
                    .finalizers
                    .iter()
                    .flatten()
                    .filter(|f| *f != FINALIZER)
                    .collect();
                let body = json!({"metadata": {"resourceVersion": pv.metadata.resource_version,
                    "finalizers": rest}});
                let name = pv.metadata.name.clone().unwrap_or_default();
                match Api::<PersistentVolume>::all(ctx.client.clone())
                    .patch(&name, &PatchParams::default(), &Patch::Merge(body))
                    .await
                {
                    Ok(_) => Ok(Action::Done),
                    Err(e) if e.is_not_found() => Ok(Action::Done),
                    Err(e) => Err(e),
                }
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
    fn bound_volumes_stay() {
        let pv = |phase: &str, deleting: bool| -> PersistentVolume {
            let mut v = json!({"metadata": {"name": "v", "finalizers": [FINALIZER]},
                "status": {"phase": phase}});
            if deleting {
                v["metadata"]["deletionTimestamp"] = json!("2025-01-01T00:00:00Z");
            }
            serde_json::from_value(v).unwrap()
        };
        assert!(!may_go(&pv("Bound", true)));
        assert!(may_go(&pv("Released", true)));
        assert!(may_go(&pv("Available", true)));
        assert!(!may_go(&pv("Available", false)));
    }
}
