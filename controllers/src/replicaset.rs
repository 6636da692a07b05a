//! The ReplicaSet controller: keeps `replicas` active pods matching the selector — creating
//! from the template in slow-start batches, deleting the least useful first — adopts matching
//! orphans, releases pods that stopped matching, and reports `status`.
//!
//! The logic is written once over [`Replicated`], so that the ReplicationController
//! controller ([`crate::replicationcontroller`]) is this same controller over the older kind,
//! as in Kubernetes.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::NamespaceResourceScope;
use serde_json::{json, Value};
use skiff_client::controller::{Action, Config as RunConfig, Controller};
use skiff_client::events::reference;
use skiff_client::informer::Informer;
use skiff_client::reflector::{ObjectKey, Store};
use skiff_client::{Api, DeleteParams, Object};
use tokio_util::sync::CancellationToken;

use crate::expectations::Expectations;
use crate::pods::{self, BURST};
use crate::{owners, Context};

/// A kind that keeps a number of pod replicas: a ReplicaSet, or a ReplicationController.
pub trait Replicated: Object + k8s_openapi::Resource<Scope = NamespaceResourceScope> {
    /// The kind's name in logs.
    const LOG_NAME: &'static str;
    /// The pods it selects (`None`: none yet).
    fn selector(&self) -> Option<Cow<'_, LabelSelector>>;
    /// The replicas it wants (Kubernetes' default 1 when unset).
    fn replicas(&self) -> i32;
    /// The template new pods are made from.
    fn template(&self) -> Option<&PodTemplateSpec>;
    /// How long a pod must be ready to count as available.
    fn min_ready_seconds(&self) -> i32;
    /// Its `status` as written (`{}` when it has none).
    fn status_value(&self) -> Value;
}

impl Replicated for ReplicaSet {
    const LOG_NAME: &'static str = "replicaset";
    fn selector(&self) -> Option<Cow<'_, LabelSelector>> {
        self.spec.as_ref().map(|s| Cow::Borrowed(&s.selector))
    }
    fn replicas(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }
    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref().and_then(|s| s.template.as_ref())
    }
    fn min_ready_seconds(&self) -> i32 {
        self.spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0)
    }
    fn status_value(&self) -> Value {
        self.status
            .as_ref()
            .map(|s| serde_json::to_value(s).unwrap_or_default())
            .unwrap_or_else(|| json!({}))
    }
}

/// Runs the controller until `shutdown`.
pub async fn run(ctx: Arc<Context>, shutdown: CancellationToken) {
    let informer = ctx.replicasets();
    let concurrency = ctx.config.concurrent_replicaset_syncs;
    run_over(ctx, informer, concurrency, shutdown).await;
}

/// Runs the controller over `K`s from `informer` until `shutdown`.
pub async fn run_over<K: Replicated>(
    ctx: Arc<Context>,
    informer: Informer<K>,
    concurrency: usize,
    shutdown: CancellationToken,
) {
    let pods = ctx.pods();
    let ctrl = Controller::new(
        informer.clone(),
        RunConfig {
            concurrency,
            ..RunConfig::default()
        },
    );
    owners::feed_owners(
        pods.clone(),
        informer.store(),
        |w: &K| w.selector(),
        ctrl.queue(),
        shutdown.clone(),
    );
    let exp = Arc::new(Expectations::default());
    let store = pods.store();
    ctrl.run(
        move |key, rs| {
            let (ctx, exp, store) = (ctx.clone(), exp.clone(), store.clone());
            async move { reconcile(&ctx, &exp, &store, key, rs).await }
        },
        shutdown,
    )
    .await;
}

async fn reconcile<K: Replicated>(
    ctx: &Context,
    exp: &Expectations,
    store: &Store<Pod>,
    key: ObjectKey,
    rs: Option<Arc<K>>,
) -> Result<Action, skiff_client::Error> {
    let Some(rs) = rs else {
        exp.forget(&key);
        return Ok(Action::Done);
    };
    store.wait_until_ready().await;
    let Some(selector) = rs.selector() else {
        return Ok(Action::Done);
    };
    let satisfied = exp.satisfied(&key, store);
    let claimed = owners::claim(&ctx.client, rs.as_ref(), &selector, store).await?;
    let active: Vec<Arc<Pod>> = claimed.into_iter().filter(|p| pods::is_active(p)).collect();
    let mut failure = None;
    if satisfied && !owners::deleting(rs.metadata()) {
        let want = rs.replicas().max(0) as usize;
        if let Err(e) = manage(ctx, exp, &key, rs.as_ref(), &active, want).await {
            failure = Some(e);
        }
    }
    let (status, wake) = status_of(rs.as_ref(), &active, failure.as_ref());
    write_status(ctx, rs.as_ref(), status).await?;
    if let Some((reason, e)) = failure {
        tracing::warn!(kind = K::LOG_NAME, object = %key, reason, error = %e, "could not reach the wanted replicas");
        return Err(e);
    }
    Ok(match wake {
        Some(d) => Action::RequeueAfter(d + Duration::from_millis(100)),
        None => Action::Done,
    })
}

/// Creates or deletes pods so that `want` are active.
async fn manage<K: Replicated>(
    ctx: &Context,
    exp: &Expectations,
    key: &ObjectKey,
    rs: &K,
    active: &[Arc<Pod>],
    want: usize,
) -> Result<(), (&'static str, skiff_client::Error)> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &key.namespace);
    let r = reference(rs);
    if active.len() < want {
        let n = (want - active.len()).min(BURST);
        let template = rs.template().cloned().unwrap_or_default();
        let owner = owners::controller_ref(rs);
        let new_pods = (0..n)
            .map(|_| pods::from_template(&template, &key.namespace, &key.name, owner.clone()))
            .collect();
        pods::create_each(ctx, exp, key, &r, new_pods)
            .await
            .map_err(|e| ("FailedCreate", e))?;
    } else if active.len() > want {
        let mut victims = active.to_vec();
        pods::sort_for_deletion(&mut victims);
        victims.truncate((active.len() - want).min(BURST));
        exp.expect_dels(
            key,
            victims.iter().map(|p| {
                (
                    ObjectKey::of(p.as_ref()),
                    p.metadata.uid.clone().unwrap_or_default(),
                )
            }),
        );
        let results = futures::future::join_all(victims.iter().map(|p| {
            let api = api.clone();
            let name = p.metadata.name.clone().unwrap_or_default();
            let uid = p.metadata.uid.clone();
            async move {
                let dp = DeleteParams {
                    precondition_uid: uid,
                    ..Default::default()
                };
                (name.clone(), api.delete(&name, &dp).await)
            }
        }))
        .await;
        let mut first = None;
        for (name, res) in results {
            match res {
                Ok(_) => ctx.events.normal(
                    r.clone(),
                    "SuccessfulDelete",
                    "Delete",
                    format!("Deleted pod: {name}"),
                ),
                Err(e) if e.is_not_found() || e.is_conflict() => {}
                Err(e) => {
                    ctx.events.warning(
                        r.clone(),
                        "FailedDelete",
                        "Delete",
                        format!("Error deleting: {}", pods::error_message(&e)),
                    );
                    first.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first {
            return Err(("FailedDelete", e));
        }
    }
    Ok(())
}

/// The status the pods give, and when the next pod becomes available (to look again then).
fn status_of<K: Replicated>(
    rs: &K,
    active: &[Arc<Pod>],
    failure: Option<&(&'static str, skiff_client::Error)>,
) -> (Value, Option<Duration>) {
    let min_ready = i64::from(rs.min_ready_seconds());
    let template_labels = rs
        .template()
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let now = skiff_client::time::now().as_second();
    let (mut ready, mut available, mut labeled) = (0, 0, 0);
    let mut wake: Option<Duration> = None;
    for p in active {
        let labels = p.metadata.labels.clone().unwrap_or_default();
        if template_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
        {
            labeled += 1;
        }
        if pods::is_ready(p) {
            ready += 1;
        }
        match pods::available(p, min_ready, now) {
            (true, _) => available += 1,
            (false, Some(d)) => wake = Some(wake.map_or(d, |w| w.min(d))),
            _ => {}
        }
    }
    let old_conditions = rs
        .status_value()
        .get("conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let is_failure = |c: &Value| c.get("type").and_then(Value::as_str) == Some("ReplicaFailure");
    let mut conditions: Vec<Value> = old_conditions
        .iter()
        .filter(|c| !is_failure(c))
        .cloned()
        .collect();
    if let Some((reason, e)) = failure {
        let since = old_conditions
            .iter()
            .find(|c| is_failure(c))
            .and_then(|c| c.get("lastTransitionTime"))
            .and_then(Value::as_str)
            .map(String::from)
            .unwrap_or_else(skiff_client::time::now_rfc3339);
        conditions.push(json!({
            "type": "ReplicaFailure",
            "status": "True",
            "reason": reason,
            "message": pods::error_message(e),
            "lastTransitionTime": since,
        }));
    }
    let mut status = json!({
        "replicas": active.len(),
        "fullyLabeledReplicas": labeled,
        "readyReplicas": ready,
        "availableReplicas": available,
        "observedGeneration": rs.metadata().generation.unwrap_or(0),
    });
    status["conditions"] = if conditions.is_empty() {
        Value::Null
    } else {
        Value::Array(conditions)
    };
    (status, wake)
}

async fn write_status<K: Replicated>(
    ctx: &Context,
    rs: &K,
    status: Value,
) -> Result<(), skiff_client::Error> {
    let old = rs.status_value();
    let same = status.as_object().is_some_and(|m| {
        m.iter().all(|(k, v)| {
            let o = old.get(k).unwrap_or(&Value::Null);
            // Zero counts are left out of stored statuses.
            o == v || (o.is_null() && v.as_i64() == Some(0))
        })
    });
    if same {
        return Ok(());
    }
    let meta = rs.metadata();
    let api: Api<K> = Api::namespaced(
        ctx.client.clone(),
        meta.namespace.as_deref().unwrap_or_default(),
    );
    let name = meta.name.as_deref().unwrap_or_default();
    crate::write_status(&api, name, status).await.map(|_| ())
}
