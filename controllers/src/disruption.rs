//! The disruption controller: keeps each PodDisruptionBudget's status true to the pods it
//! covers, as Kubernetes' `pkg/controller/disruption` does. It counts the healthy (Ready)
//! pods, works out how many must stay healthy — `minAvailable` as is, or `maxUnavailable` and
//! percentages against the pods the owning controllers want (a ReplicaSet's, its
//! Deployment's, a StatefulSet's or ReplicationController's `spec.replicas`) — and writes
//! `disruptionsAllowed` with the `DisruptionAllowed` condition. Pods the eviction subresource
//! recorded in `disruptedPods` count as gone until they go, or until two minutes pass.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use skiff_client::controller::{Action, Config as RunConfig, Controller, WorkQueue};
use skiff_client::dynamic::{ApiResource, DynamicObject};
use skiff_client::events::reference;
use skiff_client::reflector::{Change, ObjectKey, Store};
use skiff_client::{Api, PostParams};
use skiff_rules::disruption::{self as rules, SYNC_FAILED};
use skiff_rules::selector;
use tokio_util::sync::CancellationToken;

use crate::{owners, pods, Context};

/// How long a pod the eviction subresource recorded may take to be deleted before the
/// controller counts it again (kube's `DeletionTimeout`).
pub const DELETION_TIMEOUT: Duration = Duration::from_secs(120);

/// Why the expected pods could not be counted.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A pod's controller is not one whose scale the controller can read.
    #[error("found no controllers for pod {0:?}")]
    NoController(String),
    /// The API refused or failed a read or write.
    #[error(transparent)]
    Api(#[from] skiff_client::Error),
}

type Result<T, E = Error> = std::result::Result<T, E>;

/// Runs the controller until `shutdown`.
pub async fn run(ctx: Arc<Context>, shutdown: CancellationToken) {
    let informer = ctx.informers.informer::<PodDisruptionBudget>();
    let pods = ctx.pods();
    let ctrl = Controller::new(informer.clone(), RunConfig::default());
    feed_from_pods(
        pods.subscribe(),
        informer.store(),
        ctrl.queue(),
        shutdown.clone(),
    );
    let (rs, deploys) = (
        ctx.replicasets().store(),
        ctx.informers.informer::<Deployment>().store(),
    );
    let pod_store = pods.store();
    ctrl.run(
        move |key, pdb| {
            let scales = Scales {
                ctx: ctx.clone(),
                rs: rs.clone(),
                deploys: deploys.clone(),
            };
            let pods = pod_store.clone();
            async move { reconcile(&scales, &pods, key, pdb).await }
        },
        shutdown,
    )
    .await;
}

/// A pod's change wakes every budget in its namespace that selects it.
fn feed_from_pods(
    changes: impl futures::Stream<Item = Change<Pod>> + Send + 'static,
    pdbs: Store<PodDisruptionBudget>,
    queue: Arc<WorkQueue<ObjectKey>>,
    shutdown: CancellationToken,
) {
    crate::spawn_each(changes, shutdown, move |c| match c {
        Change::Applied(p) | Change::Deleted(p) => {
            let ns = p.metadata.namespace.clone().unwrap_or_default();
            for b in pdbs.in_namespace(&ns) {
                if covers(&b, &p) {
                    queue.add(ObjectKey::of(b.as_ref()));
                }
            }
        }
        Change::Resynced => {
            for k in pdbs.keys() {
                queue.add(k);
            }
        }
    });
}

/// Whether `pdb` selects `pod` (policy/v1: an empty selector selects every pod of the
/// namespace, an absent one none).
fn covers(pdb: &PodDisruptionBudget, pod: &Pod) -> bool {
    let sel = pdb.spec.as_ref().and_then(|s| s.selector.as_ref());
    selector::matches(sel, pod.metadata.labels.as_ref())
}

/// Where the controller reads how many pods the owning controllers want.
struct Scales {
    ctx: Arc<Context>,
    rs: Store<ReplicaSet>,
    deploys: Store<Deployment>,
}

impl Scales {
    /// The replicas the controller `owner` of a pod in `ns` wants, if it can tell.
    async fn replicas(
        &self,
        ns: &str,
        owner: &k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference,
    ) -> Result<Option<i32>> {
        let group = owner.api_version.split_once('/').map_or("", |(g, _)| g);
        let same = |m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
            m.uid.as_deref() == Some(owner.uid.as_str())
        };
        match (group, owner.kind.as_str()) {
            ("apps", "ReplicaSet") => {
                let Some(rs) = self.rs.get(&ObjectKey::new(ns, &owner.name)) else {
                    return Ok(None);
                };
                if !same(&rs.metadata) {
                    return Ok(None);
                }
                if let Some(d) = owners::controller_of(&rs.metadata)
                    .filter(|r| r.kind == "Deployment" && r.api_version.starts_with("apps/"))
                {
                    let dep = self.deploys.get(&ObjectKey::new(ns, &d.name));
                    return Ok(dep
                        .filter(|x| x.metadata.uid.as_deref() == Some(d.uid.as_str()))
                        .map(|x| x.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)));
                }
                Ok(Some(rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)))
            }
            ("apps", "StatefulSet") | ("", "ReplicationController") => {
                let plural = if owner.kind == "StatefulSet" {
                    "statefulsets"
                } else {
                    "replicationcontrollers"
                };
                let version = owner.api_version.rsplit('/').next().unwrap_or("v1");
                let ar = ApiResource::namespaced(group, version, &owner.kind, plural);
                let api: Api<DynamicObject> =
                    Api::namespaced_with(self.ctx.client.clone(), ns, &ar);
                let Some(o) = api.get_opt(&owner.name).await? else {
                    return Ok(None);
                };
                if !same(&o.metadata) {
                    return Ok(None);
                }
                let n = o.data.pointer("/spec/replicas").and_then(|v| v.as_i64());
                Ok(Some(n.map_or(1, |n| n as i32)))
            }
            _ => Ok(None),
        }
    }

    /// The pods the controllers of `pods` want in all (kube's `getExpectedScale`), and the
    /// names of the pods no controller owns.
    async fn expected(&self, pods: &[Arc<Pod>]) -> Result<(i32, Vec<String>)> {
        let mut seen = HashSet::new();
        let mut expected = 0;
        let mut unmanaged = Vec::new();
        for p in pods {
            let name = p.metadata.name.clone().unwrap_or_default();
            let Some(owner) = owners::controller_of(&p.metadata) else {
                unmanaged.push(name);
                continue;
            };
            if !seen.insert(owner.uid.clone()) {
                continue;
            }
            let ns = p.metadata.namespace.as_deref().unwrap_or("");
            match self.replicas(ns, owner).await? {
                Some(n) => expected += n,
                None => return Err(Error::NoController(name)),
            }
        }
        Ok((expected, unmanaged))
    }
}

/// What a budget's pods come to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counts {
    /// Pods that must stay healthy.
    pub desired_healthy: i32,
    /// Pods the budget expects to exist.
    pub expected: i32,
}

/// The pods that must stay healthy and the pods expected, from the budget's bound (kube's
/// `getExpectedPodCount`); `scale` is what the owning controllers want, asked for only when
/// the bound needs it.
pub fn counts(pdb: &PodDisruptionBudget, pods: usize, scale: Option<i32>) -> Option<Counts> {
    let spec = pdb.spec.clone().unwrap_or_default();
    let pods = i32::try_from(pods).unwrap_or(i32::MAX);
    Some(match (&spec.max_unavailable, &spec.min_available) {
        (Some(max), _) => {
            let expected = scale?;
            let max = rules::scaled(max, expected, true)?;
            Counts {
                desired_healthy: (expected - max).max(0),
                expected,
            }
        }
        (None, Some(IntOrString::Int(n))) => Counts {
            desired_healthy: *n,
            expected: pods,
        },
        (None, Some(min)) => {
            let expected = scale?;
            Counts {
                desired_healthy: rules::scaled(min, expected, true)?,
                expected,
            }
        }
        (None, None) => Counts {
            desired_healthy: 0,
            expected: 0,
        },
    })
}

/// Whether the bound needs the owning controllers' scale.
fn needs_scale(pdb: &PodDisruptionBudget) -> bool {
    let spec = pdb.spec.as_ref();
    spec.is_some_and(|s| {
        s.max_unavailable.is_some() || matches!(s.min_available, Some(IntOrString::String(_)))
    })
}

/// The recorded disruptions still pending at `now` (kube's `buildDisruptedPodMap`): those
/// of live pods not yet past their deletion timeout, and when the next one times out.
pub fn pending_disruptions(
    recorded: &BTreeMap<String, Time>,
    pods: &[Arc<Pod>],
    now: Timestamp,
) -> (BTreeMap<String, Time>, Option<Timestamp>) {
    let mut out = BTreeMap::new();
    let mut recheck: Option<Timestamp> = None;
    for p in pods {
        if p.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let name = p.metadata.name.clone().unwrap_or_default();
        let Some(at) = recorded.get(&name) else {
            continue;
        };
        let Ok(due) = at.0.checked_add(DELETION_TIMEOUT) else {
            continue;
        };
        if due < now {
            tracing::info!(pod = %name, "pod was expected to be deleted but it was not");
            continue;
        }
        recheck = Some(recheck.map_or(due, |r| r.min(due)));
        out.insert(name, at.clone());
    }
    (out, recheck)
}

/// Ready pods not deleting and not being disrupted.
pub fn healthy(pods: &[Arc<Pod>], disrupted: &BTreeMap<String, Time>) -> i32 {
    let n = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| !disrupted.contains_key(p.metadata.name.as_deref().unwrap_or("")))
        .filter(|p| pods::is_ready(p))
        .count();
    i32::try_from(n).unwrap_or(i32::MAX)
}

async fn reconcile(
    scales: &Scales,
    store: &Store<Pod>,
    key: ObjectKey,
    pdb: Option<Arc<PodDisruptionBudget>>,
) -> Result<Action, skiff_client::Error> {
    let Some(pdb) = pdb else {
        return Ok(Action::Done);
    };
    store.wait_until_ready().await;
    let ctx = &scales.ctx;
    let pods: Vec<Arc<Pod>> = store
        .in_namespace(&key.namespace)
        .into_iter()
        .filter(|p| covers(&pdb, p))
        .collect();
    let r = reference(pdb.as_ref());
    if pods.is_empty() {
        ctx.events
            .normal(r.clone(), "NoPods", "Sync", "No matching pods found".into());
    }
    let scale = if needs_scale(&pdb) {
        match scales.expected(&pods).await {
            Ok((n, unmanaged)) => {
                if !unmanaged.is_empty() {
                    ctx.events.warning(
                        r.clone(),
                        "UnmanagedPods",
                        "Sync",
                        "Pods selected by this PodDisruptionBudget were found to be unmanaged. As a result, the status of the PDB cannot be calculated correctly, which may result in undefined behavior. To account for these pods please set \".spec.minAvailable\" field of the PDB to an integer value.".into(),
                    );
                }
                Some(n)
            }
            Err(e) => {
                ctx.events.warning(
                    r,
                    "CalculateExpectedPodCountFailed",
                    "Sync",
                    format!("Failed to calculate the number of expected pods: {e}"),
                );
                fail_safe(ctx, &key, &pdb, &e.to_string()).await?;
                return Ok(Action::RequeueAfter(Duration::from_secs(5)));
            }
        }
    } else {
        None
    };
    let Some(c) = counts(&pdb, pods.len(), scale) else {
        fail_safe(ctx, &key, &pdb, "invalid bound").await?;
        return Ok(Action::Done);
    };
    let now = skiff_client::time::now();
    let recorded = pdb
        .status
        .as_ref()
        .and_then(|s| s.disrupted_pods.clone())
        .unwrap_or_default();
    let (disrupted, recheck) = pending_disruptions(&recorded, &pods, now);
    let current = healthy(&pods, &disrupted);
    let old = pdb.status.clone().unwrap_or_default();
    let mut allowed = current - c.desired_healthy;
    if c.expected <= 0 || allowed <= 0 {
        allowed = 0;
    }
    let mut status = PodDisruptionBudgetStatus {
        current_healthy: current,
        desired_healthy: c.desired_healthy,
        expected_pods: c.expected,
        disruptions_allowed: allowed,
        disrupted_pods: (!disrupted.is_empty()).then_some(disrupted),
        observed_generation: pdb.metadata.generation,
        conditions: old.conditions.clone(),
    };
    rules::update_allowed_condition(&mut status, Time(now));
    let unchanged = |a: &PodDisruptionBudgetStatus, b: &PodDisruptionBudgetStatus| {
        let cond = |s: &PodDisruptionBudgetStatus| -> Vec<(String, String, String)> {
            s.conditions
                .iter()
                .flatten()
                .map(|c: &Condition| (c.type_.clone(), c.status.clone(), c.reason.clone()))
                .collect()
        };
        a.current_healthy == b.current_healthy
            && a.desired_healthy == b.desired_healthy
            && a.expected_pods == b.expected_pods
            && a.disruptions_allowed == b.disruptions_allowed
            && a.observed_generation == b.observed_generation
            && a.disrupted_pods.clone().unwrap_or_default()
                == b.disrupted_pods.clone().unwrap_or_default()
            && cond(a) == cond(b)
    };
    if !unchanged(&old, &status) {
        write(ctx, &key, &pdb, status).await?;
    }
    Ok(match recheck {
        Some(t) => {
            let wait = t.duration_since(now).unsigned_abs();
            Action::RequeueAfter(wait)
        }
        None => Action::Done,
    })
}

/// Writes `status` over the budget's, conditional on the resourceVersion the controller
/// read (an eviction may have taken a disruption meanwhile: then it looks again).
async fn write(
    ctx: &Context,
    key: &ObjectKey,
    pdb: &PodDisruptionBudget,
    status: PodDisruptionBudgetStatus,
) -> Result<(), skiff_client::Error> {
    let api: Api<PodDisruptionBudget> = Api::namespaced(ctx.client.clone(), &key.namespace);
    let mut new = pdb.clone();
    new.status = Some(status);
    match api
        .replace_status(&key.name, &PostParams::default(), &new)
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(e),
    }
}

/// What a budget says when the controller cannot compute it: no disruption allowed
/// (kube's `failSafe`), with a `SyncFailed` condition saying why.
async fn fail_safe(
    ctx: &Context,
    key: &ObjectKey,
    pdb: &PodDisruptionBudget,
    why: &str,
) -> Result<(), skiff_client::Error> {
    let mut status = pdb.status.clone().unwrap_or_default();
    status.disruptions_allowed = 0;
    status.observed_generation = pdb.metadata.generation;
    let c = Condition {
        type_: rules::DISRUPTION_ALLOWED.into(),
        status: "False".into(),
        reason: SYNC_FAILED.into(),
        message: why.into(),
        observed_generation: pdb.metadata.generation,
        last_transition_time: Time(skiff_client::time::now()),
    };
    rules::set_condition(status.conditions.get_or_insert_with(Vec::new), c);
    write(ctx, key, pdb, status).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pdb(spec: serde_json::Value) -> PodDisruptionBudget {
        serde_json::from_value(json!({"metadata": {"name": "b"}, "spec": spec})).unwrap()
    }

    fn pod(name: &str, ready: bool) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "labels": {"app": "web"}},
                "status": {"conditions": [{"type": "Ready",
                    "status": if ready { "True" } else { "False" },
                    "lastTransitionTime": "2024-01-01T00:00:00Z"}]}
            }))
            .unwrap(),
        )
    }

    #[test]
    fn bounds_count_as_kubernetes_counts_them() {
        let c = |spec, pods, scale| counts(&pdb(spec), pods, scale).unwrap();
        assert_eq!(
            c(json!({"minAvailable": 2}), 3, None),
            Counts {
                desired_healthy: 2,
                expected: 3
            }
        );
        assert_eq!(
            c(json!({"maxUnavailable": 1}), 2, Some(3)),
            Counts {
                desired_healthy: 2,
                expected: 3
            }
        );
        assert_eq!(
            c(json!({"minAvailable": "50%"}), 3, Some(3)),
            Counts {
                desired_healthy: 2,
                expected: 3
            }
        );
        assert_eq!(
            c(json!({"maxUnavailable": "100%"}), 3, Some(3)).desired_healthy,
            0
        );
        assert!(counts(&pdb(json!({"maxUnavailable": 1})), 3, None).is_none());
        assert!(!needs_scale(&pdb(json!({"minAvailable": 1}))));
        assert!(needs_scale(&pdb(json!({"minAvailable": "10%"}))));
    }

    #[test]
    fn disrupted_pods_count_as_gone_until_they_time_out() {
        let now = Timestamp::from_second(1_000).unwrap();
        let t = |s: i64| Time(Timestamp::from_second(s).unwrap());
        let pods = vec![pod("a", true), pod("b", true), pod("c", false)];
        let recorded: BTreeMap<String, Time> = [
            ("a".to_string(), t(990)),
            ("b".to_string(), t(1_000 - 121)),
            ("gone".to_string(), t(999)),
        ]
        .into_iter()
        .collect();
        let (pending, recheck) = pending_disruptions(&recorded, &pods, now);
        assert_eq!(pending.keys().collect::<Vec<_>>(), vec!["a"]);
        assert_eq!(recheck, Some(Timestamp::from_second(990 + 120).unwrap()));
        assert_eq!(healthy(&pods, &pending), 1);
        assert_eq!(healthy(&pods, &BTreeMap::new()), 2);
    }

    #[test]
    fn budgets_select_pods_by_label() {
        let p = pod("a", true);
        assert!(covers(
            &pdb(json!({"selector": {"matchLabels": {"app": "web"}}})),
            &p
        ));
        assert!(covers(&pdb(json!({"selector": {}})), &p));
        assert!(!covers(&pdb(json!({})), &p));
    }
}
