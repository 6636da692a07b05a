//! The root-CA publisher: every namespace has a ConfigMap `kube-root-ca.crt` whose `ca.crt`
//! is the cluster CA (`--root-ca-file`, else the CA the controller manager trusts the API
//! server with), so that pods can verify `https://kubernetes.default.svc` — the ServiceAccount
//! admission projects it into every pod next to the token. Edited or deleted, it is put back.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use skiff_client::controller::{Action, Config as RunConfig, Controller};
use skiff_client::reflector::{Change, ObjectKey, Store};
use skiff_client::{Api, PostParams};
use tokio_util::sync::CancellationToken;

use crate::Context;

/// The ConfigMap's name.
pub const CONFIGMAP: &str = "kube-root-ca.crt";

/// The key of the CA bundle in it.
pub const KEY: &str = "ca.crt";

/// The annotation describing it, and its text (Kubernetes').
pub const DESCRIPTION_ANNOTATION: &str = "kubernetes.io/description";
/// The description.
pub const DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.";

/// Runs the publisher with `ca` (PEM) until `shutdown`.
pub async fn run(ctx: Arc<Context>, ca: String, shutdown: CancellationToken) {
    let namespaces = ctx.informers.informer::<Namespace>();
    let configmaps = ctx.informers.informer::<ConfigMap>();
    let ctrl = Controller::new(namespaces, RunConfig::default());
    let queue = ctrl.queue();
    crate::spawn_each(configmaps.subscribe(), shutdown.clone(), move |c| {
        let cm = match &c {
            Change::Applied(cm) | Change::Deleted(cm) => cm,
            Change::Resynced => return,
        };
        if cm.metadata.name.as_deref() == Some(CONFIGMAP) {
            let ns = cm.metadata.namespace.clone().unwrap_or_default();
            queue.add(ObjectKey::new("", &ns));
        }
    });
    let store = configmaps.store();
    let ca = Arc::new(ca);
    ctrl.run(
        move |key, ns| {
            let (ctx, store, ca) = (ctx.clone(), store.clone(), ca.clone());
            async move { reconcile(&ctx, &store, &ca, key, ns).await }
        },
        shutdown,
    )
    .await;
}

/// What the ConfigMap must hold.
fn data(ca: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(KEY.to_string(), ca.to_string())])
}

/// The ConfigMap as it must be, from what it is (`None`: it is right already).
pub fn wanted(current: Option<&ConfigMap>, ca: &str) -> Option<ConfigMap> {
    let want = data(ca);
    match current {
        None => Some(ConfigMap {
            metadata: ObjectMeta {
                name: Some(CONFIGMAP.into()),
                annotations: Some(BTreeMap::from([(
                    DESCRIPTION_ANNOTATION.to_string(),
                    DESCRIPTION.to_string(),
                )])),
                ..Default::default()
            },
            data: Some(want),
            ..Default::default()
        }),
        Some(cm) => {
            let described = cm
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(DESCRIPTION_ANNOTATION))
                .is_some_and(|d| !d.is_empty());
            if cm.data.as_ref() == Some(&want) && cm.binary_data.is_none() && described {
                return None;
            }
            let mut cm = cm.clone();
            cm.data = Some(want);
            cm.binary_data = None;
            cm.metadata
                .annotations
                .get_or_insert_with(BTreeMap::new)
                .insert(DESCRIPTION_ANNOTATION.into(), DESCRIPTION.into());
            Some(cm)
        }
    }
}

async fn reconcile(
    ctx: &Context,
    store: &Store<ConfigMap>,
    ca: &str,
    key: ObjectKey,
    ns: Option<Arc<Namespace>>,
) -> Result<Action, skiff_client::Error> {
    let Some(ns) = ns else {
        return Ok(Action::Done);
    };
    let active = ns.metadata.deletion_timestamp.is_none()
        && ns.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Terminating");
    if !active {
        return Ok(Action::Done);
    }
    store.wait_until_ready().await;
    let current = store.get(&ObjectKey::new(&key.name, CONFIGMAP));
    let Some(cm) = wanted(current.as_deref(), ca) else {
        return Ok(Action::Done);
    };
    let api = Api::<ConfigMap>::namespaced(ctx.client.clone(), &key.name);
    let result = match current {
        None => api.create(&PostParams::default(), &cm).await.map(|_| ()),
        Some(_) => api
            .replace(CONFIGMAP, &PostParams::default(), &cm)
            .await
            .map(|_| ()),
    };
    match result {
        Ok(()) => Ok(Action::Done),
        // Made meanwhile, changed meanwhile (the cache will show it and bring us back), or
        // the namespace is going away.
        Err(e)
            if e.is_already_exists()
                || e.api()
                    .is_some_and(|a| a.code == 403 || a.code == 404 || a.code == 409) =>
        {
            Ok(Action::Done)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configmap_is_kept_as_kubernetes_writes_it() {
        let made = wanted(None, "PEM").unwrap();
        assert_eq!(made.metadata.name.as_deref(), Some(CONFIGMAP));
        assert_eq!(made.data.as_ref().unwrap()[KEY], "PEM");
        assert_eq!(
            made.metadata.annotations.as_ref().unwrap()[DESCRIPTION_ANNOTATION],
            DESCRIPTION
        );
        assert!(wanted(Some(&made), "PEM").is_none());
        // Edited data, an extra key, a lost annotation: put back, other fields kept.
        let mut edited = made.clone();
        edited.data.as_mut().unwrap().insert("x".into(), "y".into());
        edited.metadata.labels = Some(BTreeMap::from([("a".into(), "b".into())]));
        let fixed = wanted(Some(&edited), "PEM").unwrap();
        assert_eq!(fixed.data, made.data);
        assert_eq!(fixed.metadata.labels, edited.metadata.labels);
        let mut bare = made.clone();
        bare.metadata.annotations = None;
        assert!(wanted(Some(&bare), "PEM").is_some());
        // A new CA replaces the old.
        assert_eq!(
            wanted(Some(&made), "NEW").unwrap().data.unwrap()[KEY],
            "NEW"
        );
    }
}
