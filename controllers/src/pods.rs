//! Pods as controllers see them: made from a template, active or not, ready and available,
//! the order to delete them in, and creating many in slow-start batches.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

/// Pods created at most per sync of one controller (Kubernetes' `burstReplicas`).
pub const BURST: usize = 500;

/// Whether a pod counts towards replicas: not finished and not being deleted.
pub fn is_active(p: &Pod) -> bool {
    let phase = phase(p);
    phase != "Succeeded" && phase != "Failed" && p.metadata.deletion_timestamp.is_none()
}

/// The pod's phase ("" when not reported yet).
pub fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// When the pod's `Ready` condition last became true, if it is true.
pub fn ready_since(p: &Pod) -> Option<i64> {
    let c = p
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")?;
    if c.status != "True" {
        return None;
    }
    Some(
        c.last_transition_time
            .as_ref()
            .map(|t| t.0.as_second())
            .unwrap_or(0),
    )
}

/// Whether the pod is `Ready`.
pub fn is_ready(p: &Pod) -> bool {
    ready_since(p).is_some()
}

/// Whether the pod has been ready for `min_ready` seconds at `now` (Unix seconds); when it is
/// ready but not yet long enough, how long until it will be.
pub fn available(p: &Pod, min_ready: i64, now: i64) -> (bool, Option<Duration>) {
    match ready_since(p) {
        None => (false, None),
        Some(_) if min_ready <= 0 => (true, None),
        Some(since) => {
            let at = since + min_ready;
            if at <= now {
                (true, None)
            } else {
                (false, Some(Duration::from_secs((at - now) as u64)))
            }
        }
    }
}

/// A pod from `template`, named `<prefix>-<random>` by the server, owned by `owner`.
pub fn from_template(
    template: &PodTemplateSpec,
    namespace: &str,
    prefix: &str,
    owner: OwnerReference,
) -> Pod {
    let tm = template.metadata.clone().unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{prefix}-")),
            namespace: Some(namespace.into()),
            labels: tm.labels,
            annotations: tm.annotations,
            finalizers: tm.finalizers,
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: template.spec.clone(),
        status: None,
    }
}

fn restarts(p: &Pod) -> i32 {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|cs| cs.iter().map(|c| c.restart_count).sum())
        .unwrap_or(0)
}

fn node(p: &Pod) -> &str {
    p.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or("")
}

fn deletion_cost(p: &Pod) -> i64 {
    p.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("controller.kubernetes.io/pod-deletion-cost"))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn created(p: &Pod) -> i64 {
    p.metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.as_second())
        .unwrap_or(0)
}

/// Sorts `pods` so that the ones to delete first come first, as Kubernetes' ReplicaSet
/// controller ranks them: unscheduled before scheduled; Pending before Unknown before Running;
/// not ready before ready; lower `controller.kubernetes.io/pod-deletion-cost` first; pods on
/// nodes holding more of them first; ready for less time first; more restarts first; newer
/// first.
pub fn sort_for_deletion(pods: &mut [Arc<Pod>]) {
    let mut per_node: HashMap<String, usize> = HashMap::new();
    for p in pods.iter() {
        *per_node.entry(node(p).to_string()).or_default() += 1;
    }
    let phase_rank = |p: &Pod| match phase(p) {
        "Pending" | "" => 0,
        "Unknown" => 1,
        _ => 2,
    };
    pods.sort_by(|a, b| {
        let (na, nb) = (node(a), node(b));
        (!na.is_empty())
            .cmp(&!nb.is_empty())
            .then_with(|| phase_rank(a).cmp(&phase_rank(b)))
            .then_with(|| is_ready(a).cmp(&is_ready(b)))
            .then_with(|| deletion_cost(a).cmp(&deletion_cost(b)))
            .then_with(|| {
                let ca = if na.is_empty() { 0 } else { per_node[na] };
                let cb = if nb.is_empty() { 0 } else { per_node[nb] };
                cb.cmp(&ca)
            })
            .then_with(|| match (ready_since(a), ready_since(b)) {
                (Some(x), Some(y)) => y.cmp(&x),
                _ => Ordering::Equal,
            })
            .then_with(|| restarts(b).cmp(&restarts(a)))
            .then_with(|| created(b).cmp(&created(a)))
    });
}

/// Creates `pods` in slow-start batches (see [`slow_start`]) for the controller whose key is
/// `key` (its reference `r`, for events), recording them in `exp`. A namespace being
/// deleted ends the creating quietly; any other failure is reported as `FailedCreate` and
/// returned.
pub async fn create_each(
    ctx: &crate::Context,
    exp: &crate::expectations::Expectations,
    key: &skiff_client::reflector::ObjectKey,
    r: &k8s_openapi::api::core::v1::ObjectReference,
    pods: Vec<Pod>,
) -> Result<(), skiff_client::Error> {
    use skiff_client::reflector::ObjectKey;
    let api: skiff_client::Api<Pod> =
        skiff_client::Api::namespaced(ctx.client.clone(), &key.namespace);
    let (made, err) = slow_start(pods, |pod| {
        let api = api.clone();
        async move { api.create(&skiff_client::PostParams::default(), &pod).await }
    })
    .await;
    for p in &made {
        ctx.events.normal(
            r.clone(),
            "SuccessfulCreate",
            "Create",
            format!("Created pod: {}", p.metadata.name.as_deref().unwrap_or("")),
        );
    }
    exp.expect_adds(
        key,
        made.iter()
            .map(|p| (ObjectKey::of(p), p.metadata.uid.clone().unwrap_or_default())),
    );
    match err {
        None => Ok(()),
        Some(e) if namespace_terminating(&e) => Ok(()),
        Some(e) => {
            ctx.events.warning(
                r.clone(),
                "FailedCreate",
                "Create",
                format!("Error creating: {}", error_message(&e)),
            );
            Err(e)
        }
    }
}

/// Whether the server refused a create because the namespace is being deleted (a 403 with
/// the `NamespaceTerminating` cause).
pub fn namespace_terminating(e: &skiff_client::Error) -> bool {
    e.api().is_some_and(|a| {
        a.code == 403
            && a.status.as_ref().is_some_and(|s| {
                s["details"]["causes"]
                    .as_array()
                    .is_some_and(|cs| cs.iter().any(|c| c["reason"] == "NamespaceTerminating"))
            })
    })
}

/// What the server said of a failed request (its `Status` message), or the error itself.
pub fn error_message(e: &skiff_client::Error) -> String {
    e.api()
        .map(|a| a.message.clone())
        .unwrap_or_else(|| e.to_string())
}

/// Runs `make` on each item, concurrently within batches of 1, 2, 4, … (Kubernetes' slow
/// start: a template that cannot be created fails once, not once per pod). Stops after the
/// first batch with a failure; returns what succeeded and the first error.
pub async fn slow_start<I, T, E, F, Fut>(items: Vec<I>, make: F) -> (Vec<T>, Option<E>)
where
    F: Fn(I) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut done = Vec::new();
    let mut batch = 1;
    let mut items = items.into_iter();
    let mut left = items.len();
    while left > 0 {
        let n = batch.min(left);
        let results = futures::future::join_all(items.by_ref().take(n).map(&make)).await;
        let mut first_err = None;
        for r in results {
            match r {
                Ok(t) => done.push(t),
                Err(e) => {
                    if first_err.is_none() {
                        first_err = Some(e);
                    }
                }
            }
        }
        if first_err.is_some() {
            return (done, first_err);
        }
        left -= n;
        batch *= 2;
    }
    (done, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> Arc<Pod> {
        Arc::new(serde_json::from_value(v).unwrap())
    }

    fn ready(name: &str, node: &str, since: &str) -> serde_json::Value {
        json!({"metadata": {"name": name, "creationTimestamp": "2026-01-01T00:00:00Z"},
               "spec": {"nodeName": node, "containers": []},
               "status": {"phase": "Running", "conditions": [
                   {"type": "Ready", "status": "True", "lastTransitionTime": since}]}})
    }

    #[test]
    fn deletes_unscheduled_pending_and_unready_first() {
        let mut pods = vec![
            pod(ready("old-ready", "n1", "2026-01-01T00:00:00Z")),
            pod(json!({"metadata": {"name": "unscheduled"}, "spec": {"containers": []}})),
            pod(
                json!({"metadata": {"name": "pending"}, "spec": {"nodeName": "n2", "containers": []},
                       "status": {"phase": "Pending"}}),
            ),
            pod(
                json!({"metadata": {"name": "unready"}, "spec": {"nodeName": "n3", "containers": []},
                       "status": {"phase": "Running"}}),
            ),
            pod(ready("new-ready", "n4", "2026-01-02T00:00:00Z")),
        ];
        sort_for_deletion(&mut pods);
        let names: Vec<_> = pods
            .iter()
            .map(|p| p.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "unscheduled",
                "pending",
                "unready",
                "new-ready",
                "old-ready"
            ]
        );
    }

    #[test]
    fn doubled_up_nodes_and_deletion_cost() {
        let mut pods = vec![
            pod(ready("alone", "n1", "2026-01-01T00:00:00Z")),
            pod(ready("pair-a", "n2", "2026-01-01T00:00:00Z")),
            pod(ready("pair-b", "n2", "2026-01-01T00:00:00Z")),
        ];
        sort_for_deletion(&mut pods);
        assert_eq!(pods[2].metadata.name.as_deref(), Some("alone"));
        let mut cheap = ready("cheap", "n1", "2026-01-01T00:00:00Z");
        cheap["metadata"]["annotations"] =
            json!({"controller.kubernetes.io/pod-deletion-cost": "-100"});
        let mut pods = vec![
            pod(ready("pair-a", "n2", "2026-01-01T00:00:00Z")),
            pod(cheap),
        ];
        sort_for_deletion(&mut pods);
        assert_eq!(pods[0].metadata.name.as_deref(), Some("cheap"));
    }

    #[test]
    fn availability_waits_for_min_ready_seconds() {
        let p = pod(ready("p", "n", "2026-01-01T00:00:00Z"));
        let t0 = 1_767_225_600; // 2026-01-01T00:00:00Z
        assert_eq!(available(&p, 0, t0), (true, None));
        assert_eq!(
            available(&p, 10, t0 + 4),
            (false, Some(Duration::from_secs(6)))
        );
        assert_eq!(available(&p, 10, t0 + 10), (true, None));
    }

    #[tokio::test]
    async fn slow_start_stops_after_a_failing_batch() {
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let (ok, err) = slow_start((0..10).collect(), |_: usize| {
            let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async move {
                if n >= 2 {
                    Err("quota")
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        // Batches of 1 and 2: the second batch's second pod fails; nothing more is tried.
        assert_eq!(ok.len(), 2);
        assert_eq!(err, Some("quota"));
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 3);
        let (ok, err) = slow_start(vec![(); 10], |_| async { Ok::<_, ()>(()) }).await;
        assert_eq!((ok.len(), err), (10, None));
    }
}
