//! The ServiceAccount controller: every namespace that is not being deleted has a `default`
//! ServiceAccount, made again if it is deleted.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use skiff_client::controller::{Action, Config as RunConfig, Controller};
use skiff_client::reflector::{Change, ObjectKey, Store};
use skiff_client::{Api, PostParams};
use tokio_util::sync::CancellationToken;

use crate::Context;

/// The ServiceAccount every namespace has.
pub const DEFAULT: &str = "default";

/// Runs the controller until `shutdown`.
pub async fn run(ctx: Arc<Context>, shutdown: CancellationToken) {
    let namespaces = ctx.informers.informer::<Namespace>();
    let accounts = ctx.owned::<ServiceAccount>();
    let ctrl = Controller::new(namespaces, RunConfig::default());
    let queue = ctrl.queue();
    crate::spawn_each(accounts.subscribe(), shutdown.clone(), move |c| {
        if let Change::Deleted(sa) = c {
            if sa.metadata.name.as_deref() == Some(DEFAULT) {
                let ns = sa.metadata.namespace.clone().unwrap_or_default();
                queue.add(ObjectKey::new("", &ns));
            }
        }
    });
    let store = accounts.store();
    ctrl.run(
        move |key, ns| {
            let (ctx, store) = (ctx.clone(), store.clone());
            async move { reconcile(&ctx, &store, key, ns).await }
        },
        shutdown,
    )
    .await;
}

async fn reconcile(
    ctx: &Context,
    store: &Store<ServiceAccount>,
    key: ObjectKey,
    ns: Option<Arc<Namespace>>,
) -> Result<Action, skiff_client::Error> {
    let Some(ns) = ns else {
        return Ok(Action::Done);
    };
    let active = ns.metadata.deletion_timestamp.is_none()
        && ns.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Terminating");
    store.wait_until_ready().await;
    if !active || store.get(&ObjectKey::new(&key.name, DEFAULT)).is_some() {
        return Ok(Action::Done);
    }
    let sa = ServiceAccount {
        metadata: ObjectMeta {
            name: Some(DEFAULT.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    match Api::<ServiceAccount>::namespaced(ctx.client.clone(), &key.name)
        .create(&PostParams::default(), &sa)
        .await
    {
        Ok(_) => Ok(Action::Done),
        // Already there, or the namespace started terminating meanwhile.
        Err(e) if e.is_already_exists() || e.api().is_some_and(|a| a.code == 403) => {
            Ok(Action::Done)
        }
        Err(e) => Err(e),
    }
}
