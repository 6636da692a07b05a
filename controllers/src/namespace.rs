//! The namespace controller: a namespace being deleted (`Terminating`, held by the
//! `kubernetes` finalizer) is emptied — every namespaced object in it deleted, custom
//! resources' and events too — and then finalized through its `finalize` subresource, which
//! lets the API server remove it. Its status says what remains.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Namespace, NamespaceSpec};
use serde_json::json;
use skiff_client::controller::{Action, Config as RunConfig, Controller};
use skiff_client::reflector::ObjectKey;
use skiff_client::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, PropagationPolicy,
};
use tokio_util::sync::CancellationToken;

use crate::kinds::Kind;
use crate::Context;

/// The finalizer in `spec.finalizers` this controller removes once the namespace is empty.
pub const FINALIZER: &str = "kubernetes";

/// How often a namespace still being emptied is looked at again.
const RECHECK: Duration = Duration::from_secs(1);

/// Runs the controller until `shutdown`.
pub async fn run(ctx: Arc<Context>, shutdown: CancellationToken) {
    let served = ctx.served();
    // Every built-in cache must be complete before "nothing left" can be believed (a
    // custom resource's is checked as each namespace is emptied).
    for k in served.builtin().values().filter(|k| k.namespaced()) {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = k.synced(&ctx) => {}
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
            let ctx = ctx.clone();
            async move { reconcile(&ctx, key, ns).await }
        },
        shutdown,
    )
    .await;
}

/// What is left in a namespace being emptied.
#[derive(Default)]
struct Remaining {
    /// `resource.group` → objects.
    resources: BTreeMap<String, usize>,
    /// finalizer → objects that have it.
    finalizers: BTreeMap<String, usize>,
    /// A kind whose cache is not listed yet: what it holds is not known.
    unknown: bool,
}

impl Remaining {
    fn add(&mut self, resource: String, objects: &[crate::kinds::Meta]) {
        if objects.is_empty() {
            return;
        }
        *self.resources.entry(resource).or_default() += objects.len();
        for f in objects.iter().flat_map(|m| &m.finalizers) {
            *self.finalizers.entry(f.clone()).or_default() += 1;
        }
    }

    fn is_empty(&self) -> bool {
        self.resources.is_empty() && !self.unknown
    }

    /// The conditions Kubernetes reports while a namespace is not empty yet.
    fn conditions(&self) -> Vec<serde_json::Value> {
        let now = skiff_client::time::now_rfc3339();
        let mut out = Vec::new();
        if !self.resources.is_empty() {
            let what: Vec<String> = self
                .resources
                .iter()
                .map(|(r, n)| format!("{r} has {n} resource instances"))
                .collect();
            out.push(
                json!({"type": "NamespaceContentRemaining", "status": "True",
                "reason": "SomeResourcesRemain",
                "message": format!("Some resources are remaining: {}", what.join(", ")),
                "lastTransitionTime": now}),
            );
        }
        if !self.finalizers.is_empty() {
            let what: Vec<String> = self
                .finalizers
                .iter()
                .map(|(f, n)| format!("{f} in {n} resource instances"))
                .collect();
            out.push(json!({"type": "NamespaceFinalizersRemaining", "status": "True",
                "reason": "SomeFinalizersRemain",
                "message": format!("Some content in the namespace has finalizers remaining: {}", what.join(", ")),
                "lastTransitionTime": now}));
        }
        out
    }
}

/// A kind's resource as Kubernetes names it in a namespace's conditions: `pods.`,
/// `deployments.apps`, `widgets.example.skiff.dev`.
fn resource_name(k: &dyn Kind) -> String {
    format!("{}.{}", k.plural(), k.group_kind().group)
}

async fn reconcile(
    ctx: &Context,
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
    let served = ctx.served();
    // Until the definitions are listed, which custom resources there are is not known.
    let Some(custom) = served.custom() else {
        return Ok(Action::RequeueAfter(RECHECK));
    };
    let kinds = served
        .builtin()
        .values()
        .chain(custom.values())
        .filter(|k| k.namespaced());
    let name = key.name.as_str();
    let mut remaining = Remaining::default();
    for k in kinds {
        let Some(objects) = k.in_namespace(ctx, name) else {
            remaining.unknown = true;
            continue;
        };
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
        remaining.add(resource_name(k.as_ref()), &objects);
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
        remaining
            .resources
            .insert("events.".into(), list.items.len());
    }
    let api: Api<Namespace> = Api::all(ctx.client.clone());
    if !remaining.is_empty() {
        let conditions = remaining.conditions();
        let already: Vec<(String, Option<String>)> = ns
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .map(|cs| {
                cs.iter()
                    .filter(|c| c.status == "True")
                    .map(|c| (c.type_.clone(), c.message.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let wanted: Vec<(String, Option<String>)> = conditions
            .iter()
            .map(|c| {
                (
                    c["type"].as_str().unwrap_or_default().to_string(),
                    c["message"].as_str().map(String::from),
                )
            })
            .collect();
        if !conditions.is_empty() && already != wanted {
            let _ = api
                .patch_status(
                    name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"status": {"conditions": conditions}})),
                )
                .await;
        }
        return Ok(Action::RequeueAfter(RECHECK));
    }
    // Through the `finalize` subresource, the one way Kubernetes lets `spec.finalizers`
    // change.
    let rest: Vec<String> = fins.into_iter().filter(|f| f != FINALIZER).collect();
    let mut finalized = (*ns).clone();
    finalized.spec = Some(NamespaceSpec {
        finalizers: Some(rest),
    });
    match api
        .replace_subresource("finalize", name, &PostParams::default(), &finalized)
        .await
    {
        Ok(_) => Ok(Action::Done),
        Err(e) if e.is_not_found() => Ok(Action::Done),
        Err(e) if e.is_conflict() => Ok(Action::RequeueAfter(Duration::ZERO)),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::Meta;

    fn object(finalizers: &[&str]) -> Meta {
        Meta {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            namespace: "team".into(),
            name: "c".into(),
            uid: "u".into(),
            owners: Vec::new(),
            finalizers: finalizers.iter().map(|f| f.to_string()).collect(),
            deleting: !finalizers.is_empty(),
            resource_version: "1".into(),
        }
    }

    #[test]
    fn what_remains_is_said_as_kubernetes_says_it() {
        let mut r = Remaining::default();
        assert!(r.is_empty() && r.conditions().is_empty());
        r.add(
            "widgets.example.skiff.dev".into(),
            &[object(&["example.com/hold"])],
        );
        r.add(
            "configmaps.".into(),
            &[object(&[]), object(&["example.com/hold"])],
        );
        r.add("pods.".into(), &[]);
        let c = r.conditions();
        assert_eq!(c[0]["type"], "NamespaceContentRemaining");
        assert_eq!(c[0]["reason"], "SomeResourcesRemain");
        assert_eq!(
            c[0]["message"],
            "Some resources are remaining: configmaps. has 2 resource instances, \
             widgets.example.skiff.dev has 1 resource instances"
        );
        assert_eq!(c[1]["type"], "NamespaceFinalizersRemaining");
        assert_eq!(
            c[1]["message"],
            "Some content in the namespace has finalizers remaining: \
             example.com/hold in 2 resource instances"
        );
        // A kind whose cache is not listed yet keeps the namespace, saying nothing of it.
        let unknown = Remaining {
            unknown: true,
            ..Remaining::default()
        };
        assert!(!unknown.is_empty());
        assert!(unknown.conditions().is_empty());
    }

    #[test]
    fn resources_are_named_with_their_group() {
        let kinds = crate::kinds::builtin();
        let name = |api_version: &str, kind: &str| {
            resource_name(kinds[&crate::kinds::GroupKind::of(api_version, kind)].as_ref())
        };
        assert_eq!(name("v1", "Pod"), "pods.");
        assert_eq!(name("apps/v1", "Deployment"), "deployments.apps");
    }
}
