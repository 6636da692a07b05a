//! The namespace controller: a namespace being deleted (`Terminating`, held by the
//! `kubernetes` finalizer) is emptied — every namespaced object in it deleted, events too —
//! and then finalized, which lets the API server remove it. Its status says what remains.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Namespace};
use serde_json::json;
use skiff_client::controller::{Action, Config as RunConfig, Controller};
use skiff_client::reflector::ObjectKey;
use skiff_client::{Api, DeleteParams, ListParams, Patch, PatchParams, PropagationPolicy};
use tokio_util::sync::CancellationToken;

use crate::kinds::{self, Kind};
use crate::Context;

/// The finalizer in `spec.finalizers` this controller removes once the namespace is empty.
pub const FINALIZER: &str = "kubernetes";

/// How often a namespace still being emptied is looked at again.
const RECHECK: Duration = Duration::from_secs(1);

/// Runs the controller until `shutdown`.
pub async fn run(ctx: Arc<Context>, shutdown: CancellationToken) {
    let kinds: Arc<Vec<Arc<dyn Kind>>> = Arc::new(
        kinds::all()
            .into_values()
            .filter(|k| k.namespaced())
            .collect(),
    );
    // Every cache must be complete before "nothing left" can be believed.
    for k in kinds.iter() {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = k.watch(&ctx).1 => {}
        }
    }
    let ctrl = Controller::new(
        ctx.informers.informer::<Namespace>(),
        RunConfig {
            concurrency: ctx.config.concurrent_namespace_syncs,
            ..RunConfig::default()
        },
    );
    ctrl.run(
        move |key, ns| {
            let (ctx, kinds) = (ctx.clone(), kinds.clone());
            async move { reconcile(&ctx, &kinds, key, ns).await }
        },
        shutdown,
    )
    .await;
}

async fn reconcile(
    ctx: &Context,
    kinds: &[Arc<dyn Kind>],
    key: ObjectKey,
    ns: Option<Arc<Namespace>>,
) -> Result<Action, skiff_client::Error> {
    let Some(ns) = ns else {
        return Ok(Action::Done);
    };
    let fins = ns
        .spec
        .as_ref()
        .and_then(|s| s.finalizers.clone())
        .unwrap_or_default();
    if ns.metadata.deletion_timestamp.is_none() || !fins.iter().any(|f| f == FINALIZER) {
        return Ok(Action::Done);
    }
    let name = key.name.as_str();
    let mut remaining: Vec<(String, usize)> = Vec::new();
    for k in kinds {
        let objects = k.in_namespace(ctx, name);
        if objects.is_empty() {
            continue;
        }
        for m in objects.iter().filter(|m| !m.deleting) {
            k.delete(
                ctx,
                name,
                &m.name,
                &m.uid,
                None,
                PropagationPolicy::Background,
            )
            .await?;
        }
        remaining.push((k.kind().to_string(), objects.len()));
    }
    // Events are not cached here: read and delete them from the server.
    let events: Api<Event> = Api::namespaced(ctx.client.clone(), name);
    let list = events.list(&ListParams::default()).await?;
    if !list.items.is_empty() {
        for e in &list.items {
            let n = e.metadata.name.clone().unwrap_or_default();
            match events.delete(&n, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(err) if err.is_not_found() => {}
                Err(err) => return Err(err),
            }
        }
        remaining.push(("Event".into(), list.items.len()));
    }
    let api: Api<Namespace> = Api::all(ctx.client.clone());
    if !remaining.is_empty() {
        remaining.sort();
        let what: Vec<String> = remaining
            .iter()
            .map(|(k, n)| format!("{k} has {n} resource instances"))
            .collect();
        let message = format!("Some resources are remaining: {}", what.join(", "));
        let already = ns
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "NamespaceContentRemaining"))
            .and_then(|c| c.message.clone());
        if already.as_deref() != Some(message.as_str()) {
            let cond = json!({"type": "NamespaceContentRemaining", "status": "True",
                "reason": "SomeResourcesRemain", "message": message,
                "lastTransitionTime": skiff_client::time::now_rfc3339()});
            let _ = api
                .patch_status(
                    name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"status": {"conditions": [cond]}})),
                )
                .await;
        }
        return Ok(Action::RequeueAfter(RECHECK));
    }
    let rest: Vec<&String> = fins.iter().filter(|f| *f != FINALIZER).collect();
    match api
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"finalizers": rest}})),
        )
        .await
    {
        Ok(_) => Ok(Action::Done),
        Err(e) if e.is_not_found() => Ok(Action::Done),
        Err(e) => Err(e),
    }
}
