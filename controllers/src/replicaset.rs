//! The ReplicaSet controller: keeps `replicas` active pods matching the selector — creating
//! from the template in slow-start batches, deleting the least useful first — adopts matching
//! orphans, releases pods that stopped matching, and reports `status`.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use serde_json::{json, Value};
use skiff_client::controller::{Action, Config as RunConfig, Controller};
use skiff_client::events::reference;
use skiff_client::reflector::{ObjectKey, Store};
use skiff_client::{Api, DeleteParams};
use tokio_util::sync::CancellationToken;

use crate::expectations::Expectations;
use crate::pods::{self, BURST};
use crate::{owners, Context};

/// Runs the controller until `shutdown`.
pub async fn run(ctx: Arc<Context>, shutdown: CancellationToken) {
    let informer = ctx.replicasets();
    let pods = ctx.pods();
    let ctrl = Controller::new(
        informer.clone(),
        RunConfig {
            concurrency: ctx.config.concurrent_replicaset_syncs,
            ..RunConfig::default()
        },
    );
    owners::feed_owners(
        pods.clone(),
        informer.store(),
        |rs: &ReplicaSet| rs.spec.as_ref().map(|s| &s.selector),
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

async fn reconcile(
    ctx: &Context,
    exp: &Expectations,
    store: &Store<Pod>,
    key: ObjectKey,
    rs: Option<Arc<ReplicaSet>>,
) -> Result<Action, skiff_client::Error> {
    let Some(rs) = rs else {
        exp.forget(&key);
        return Ok(Action::Done);
    };
    store.wait_until_ready().await;
    let Some(spec) = rs.spec.as_ref() else {
        return Ok(Action::Done);
    };
    let satisfied = exp.satisfied(&key, store);
    let claimed = owners::claim(&ctx.client, rs.as_ref(), &spec.selector, store).await?;
    let active: Vec<Arc<Pod>> = claimed.into_iter().filter(|p| pods::is_active(p)).collect();
    let mut failure = None;
    if satisfied && !owners::deleting(&rs.metadata) {
        let want = spec.replicas.unwrap_or(1).max(0) as usize;
        if let Err(e) = manage(ctx, exp, &key, &rs, &active, want).await {
            failure = Some(e);
        }
    }
    let (status, wake) = status_of(&rs, &active, failure.as_ref());
    write_status(ctx, &rs, status).await?;
    if let Some((reason, e)) = failure {
        tracing::warn!(replicaset = %key, reason, error = %e, "could not reach the wanted replicas");
        return Err(e);
    }
    Ok(match wake {
        Some(d) => Action::RequeueAfter(d + Duration::from_millis(100)),
        None => Action::Done,
    })
}

/// Creates or deletes pods so that `want` are active.
async fn manage(
    ctx: &Context,
    exp: &Expectations,
    key: &ObjectKey,
    rs: &ReplicaSet,
    active: &[Arc<Pod>],
    want: usize,
) -> Result<(), (&'static str, skiff_client::Error)> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &key.namespace);
    let r = reference(rs);
    if active.len() < want {
        let n = (want - active.len()).min(BURST);
        let template = rs
            .spec
            .as_ref()
            .and_then(|s| s.template.clone())
            .unwrap_or_default();
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
fn status_of(
    rs: &ReplicaSet,
    active: &[Arc<Pod>],
    failure: Option<&(&'static str, skiff_client::Error)>,
) -> (Value, Option<Duration>) {
    let spec = rs.spec.as_ref();
    let min_ready = spec.and_then(|s| s.min_ready_seconds).unwrap_or(0) as i64;
    let template_labels = spec
        .and_then(|s| s.template.as_ref())
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
    let mut conditions: Vec<Value> = rs
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .map(|cs| {
            cs.iter()
                .filter(|c| c.type_ != "ReplicaFailure")
                .map(|c| serde_json::to_value(c).unwrap_or_default())
                .collect()
        })
        .unwrap_or_default();
    if let Some((reason, e)) = failure {
        let old = rs
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "ReplicaFailure"));
        let since = old
            .and_then(|c| c.last_transition_time.as_ref())
            .map(|t| t.0.to_string())
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
        "observedGeneration": rs.metadata.generation.unwrap_or(0),
    });
    status["conditions"] = if conditions.is_empty() {
        Value::Null
    } else {
        Value::Array(conditions)
    };
    (status, wake)
}

async fn write_status(
    ctx: &Context,
    rs: &ReplicaSet,
    status: Value,
) -> Result<(), skiff_client::Error> {
    let old = rs
        .status
        .as_ref()
        .map(|s| serde_json::to_value(s).unwrap_or_default())
        .unwrap_or_else(|| json!({}));
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
    let api: Api<ReplicaSet> = Api::namespaced(
        ctx.client.clone(),
        rs.metadata.namespace.as_deref().unwrap_or_default(),
    );
    let name = rs.metadata.name.as_deref().unwrap_or_default();
    crate::write_status(&api, name, status).await.map(|_| ())
}
