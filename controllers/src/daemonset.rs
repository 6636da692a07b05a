//! The DaemonSet controller: one pod on every eligible node (`nodeSelector`, required node
//! affinity, taints the pod tolerates — with the tolerations Kubernetes adds to daemon pods),
//! created with node affinity for its node so the scheduler binds it there; pods leave nodes
//! that stop being eligible; `RollingUpdate` (within `maxUnavailable`) and `OnDelete`; status
//! for `kubectl rollout status ds`; the templates' history in ControllerRevisions for
//! `kubectl rollout history|undo ds`.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet};
use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod,
    PodTemplateSpec, Toleration,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use parking_lot::Mutex;
use serde_json::json;
use skiff_client::controller::{Action, Config as RunConfig, Controller};
use skiff_client::events::reference;
use skiff_client::reflector::{Change, ObjectKey, Store};
use skiff_client::{Api, DeleteParams};
use skiff_rules::{selector, toleration};
use tokio_util::sync::CancellationToken;

use crate::expectations::Expectations;
use crate::{deployment, history, nodelifecycle, owners, pods, Context};

/// The label telling daemon pods of different templates apart.
pub const HASH_LABEL: &str = "controller-revision-hash";

/// Runs the controller until `shutdown`.
pub async fn run(ctx: Arc<Context>, shutdown: CancellationToken) {
    let informer = ctx.informers.informer::<DaemonSet>();
    let nodes = ctx.informers.informer::<Node>();
    let pods = ctx.pods();
    let revisions = ctx.owned::<ControllerRevision>();
    let ctrl = Controller::new(
        informer.clone(),
        RunConfig {
            concurrency: ctx.config.concurrent_daemonset_syncs,
            ..RunConfig::default()
        },
    );
    owners::feed_owners(
        pods.clone(),
        informer.store(),
        |d: &DaemonSet| d.spec.as_ref().map(|s| Cow::Borrowed(&s.selector)),
        ctrl.queue(),
        shutdown.clone(),
    );
    // A node that comes, goes, or changes what decides eligibility concerns every DaemonSet.
    let (queue, ds_store) = (ctrl.queue(), informer.store());
    let last: Mutex<HashMap<String, String>> = Mutex::new(HashMap::new());
    crate::spawn_each(nodes.subscribe(), shutdown.clone(), move |c| {
        let changed = match c {
            Change::Applied(n) => {
                let name = n.metadata.name.clone().unwrap_or_default();
                let facts = serde_json::to_string(&(
                    &n.metadata.labels,
                    n.spec.as_ref().map(|s| (&s.taints, s.unschedulable)),
                ))
                .unwrap_or_default();
                last.lock().insert(name, facts.clone()) != Some(facts)
            }
            Change::Deleted(n) => {
                last.lock()
                    .remove(n.metadata.name.as_deref().unwrap_or_default());
                true
            }
            Change::Resynced => true,
        };
        if changed {
            for k in ds_store.keys() {
                queue.add(k);
            }
        }
    });
    let exp = Arc::new(Expectations::default());
    let stores = Arc::new(Stores {
        pods: pods.store(),
        nodes: nodes.store(),
        revisions: revisions.store(),
    });
    ctrl.run(
        move |key, ds| {
            let (ctx, exp, stores) = (ctx.clone(), exp.clone(), stores.clone());
            async move { reconcile(&ctx, &exp, &stores, key, ds).await }
        },
        shutdown,
    )
    .await;
}

/// The tolerations Kubernetes gives every daemon pod.
fn daemon_tolerations(template: &PodTemplateSpec) -> Vec<Toleration> {
    let mut t = template
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.clone())
        .unwrap_or_default();
    let host_network = template
        .spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false);
    let mut add = |key: &str, effect: &str| {
        if !t
            .iter()
            .any(|x| x.key.as_deref() == Some(key) && x.effect.as_deref() == Some(effect))
        {
            t.push(Toleration {
                key: Some(key.into()),
                operator: Some("Exists".into()),
                effect: Some(effect.into()),
                ..Default::default()
            });
        }
    };
    add(nodelifecycle::NOT_READY, "NoExecute");
    add(nodelifecycle::UNREACHABLE, "NoExecute");
    add("node.kubernetes.io/disk-pressure", "NoSchedule");
    add("node.kubernetes.io/memory-pressure", "NoSchedule");
    add("node.kubernetes.io/pid-pressure", "NoSchedule");
    add("node.kubernetes.io/unschedulable", "NoSchedule");
    if host_network {
        add("node.kubernetes.io/network-unavailable", "NoSchedule");
    }
    t
}

/// Whether a new daemon pod of `template` belongs on `node`.
pub fn should_run(template: &PodTemplateSpec, node: &Node) -> bool {
    eligible(template, node, &["NoSchedule", "NoExecute"])
}

/// Whether a daemon pod already on `node` may stay: as for a new one, except that only
/// `NoExecute` taints drive it away (as Kubernetes does).
pub fn may_stay(template: &PodTemplateSpec, node: &Node) -> bool {
    eligible(template, node, &["NoExecute"])
}

fn eligible(template: &PodTemplateSpec, node: &Node, effects: &[&str]) -> bool {
    let Some(spec) = template.spec.as_ref() else {
        return false;
    };
    if spec
        .node_name
        .as_deref()
        .is_some_and(|n| !n.is_empty() && Some(n) != node.metadata.name.as_deref())
    {
        return false;
    }
    let labels = node.metadata.labels.as_ref();
    let name = node.metadata.name.as_deref().unwrap_or_default();
    if !selector::pod_fits_node(
        spec,
        |k| labels.and_then(|l| l.get(k)).map(String::as_str),
        name,
    ) {
        return false;
    }
    let tolerations = daemon_tolerations(template);
    let taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default();
    toleration::first_untolerated(taints, &tolerations, effects).is_none()
}

/// The node a daemon pod is for: where it is bound, else its node affinity's name.
fn pod_node(p: &Pod) -> Option<String> {
    let spec = p.spec.as_ref()?;
    if let Some(n) = spec.node_name.clone().filter(|n| !n.is_empty()) {
        return Some(n);
    }
    spec.affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms
        .iter()
        .flat_map(|t| t.match_fields.iter().flatten())
        .find(|r| r.key == "metadata.name" && r.operator == "In")
        .and_then(|r| r.values.as_ref()?.first().cloned())
}

fn pod_hash(p: &Pod) -> Option<&str> {
    p.metadata
        .labels
        .as_ref()?
        .get(HASH_LABEL)
        .map(String::as_str)
}

fn pod_for(ds: &DaemonSet, hash: &str, node: &str) -> Pod {
    let spec = ds.spec.as_ref().expect("checked");
    let mut template = spec.template.clone();
    let tm = template.metadata.get_or_insert_with(Default::default);
    tm.labels = Some(owners::with_label(tm.labels.as_ref(), HASH_LABEL, hash));
    let tolerations = daemon_tolerations(&template);
    let mut pod = pods::from_template(
        &template,
        ds.metadata.namespace.as_deref().unwrap_or_default(),
        ds.metadata.name.as_deref().unwrap_or_default(),
        owners::controller_ref(ds),
    );
    if let Some(ps) = pod.spec.as_mut() {
        ps.tolerations = Some(tolerations);
        let mut affinity = ps.affinity.clone().unwrap_or_default();
        let mut na = affinity.node_affinity.clone().unwrap_or_default();
        na.required_during_scheduling_ignored_during_execution = Some(NodeSelector {
            node_selector_terms: vec![NodeSelectorTerm {
                match_fields: Some(vec![NodeSelectorRequirement {
                    key: "metadata.name".into(),
                    operator: "In".into(),
                    values: Some(vec![node.into()]),
                }]),
                ..Default::default()
            }],
        });
        affinity.node_affinity = Some(NodeAffinity { ..na });
        ps.affinity = Some(Affinity { ..affinity });
    }
    pod
}

struct Stores {
    pods: Store<Pod>,
    nodes: Store<Node>,
    revisions: Store<ControllerRevision>,
}

/// Records the template as the newest revision and trims the history to
/// `revisionHistoryLimit`, sparing revisions live pods run. Returns the revision's hash, the
/// pods' hash label, as Kubernetes labels daemon pods; a name clash that made the collision
/// count grow is written to the status.
async fn keep_history(
    ctx: &Context,
    revisions: &Store<ControllerRevision>,
    ds: &DaemonSet,
    hash: &str,
    pods: &[Arc<Pod>],
) -> Result<String, skiff_client::Error> {
    let Some(spec) = ds.spec.as_ref() else {
        return Ok(hash.to_string());
    };
    let owned = history::owned(revisions, ds);
    let collisions = ds.status.as_ref().and_then(|s| s.collision_count);
    let hash = match history::record(&ctx.client, ds, &owned, &spec.template, collisions).await {
        Ok(r) => {
            if r.collision_count != collisions {
                let api: Api<DaemonSet> = Api::namespaced(
                    ctx.client.clone(),
                    ds.metadata.namespace.as_deref().unwrap_or_default(),
                );
                let name = ds.metadata.name.as_deref().unwrap_or_default();
                crate::write_status(&api, name, json!({"collisionCount": r.collision_count}))
                    .await?;
            }
            history::revision_hash(&r.revision)
                .unwrap_or(hash)
                .to_string()
        }
        Err(history::Error::Collision(name)) => {
            tracing::warn!(revision = %name, "no free controller revision name");
            hash.to_string()
        }
        Err(history::Error::Api(e)) => return Err(e),
    };
    let hash = hash.as_str();
    let mut keep: std::collections::BTreeSet<String> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| pod_hash(p).map(str::to_string))
        .collect();
    keep.insert(hash.to_string());
    history::trim(
        &ctx.client,
        &owned,
        &keep,
        spec.revision_history_limit.unwrap_or(10),
    )
    .await?;
    Ok(hash.to_string())
}

async fn reconcile(
    ctx: &Context,
    exp: &Expectations,
    stores: &Stores,
    key: ObjectKey,
    ds: Option<Arc<DaemonSet>>,
) -> Result<Action, skiff_client::Error> {
    let Some(ds) = ds else {
        exp.forget(&key);
        return Ok(Action::Done);
    };
    let (pod_store, node_store) = (&stores.pods, &stores.nodes);
    pod_store.wait_until_ready().await;
    node_store.wait_until_ready().await;
    stores.revisions.wait_until_ready().await;
    let Some(spec) = ds.spec.as_ref() else {
        return Ok(Action::Done);
    };
    let mut hash = deployment::template_hash(
        &spec.template,
        ds.status.as_ref().and_then(|s| s.collision_count),
    );
    let claimed = owners::claim(&ctx.client, ds.as_ref(), &spec.selector, pod_store).await?;
    if !owners::deleting(&ds.metadata) {
        hash = keep_history(ctx, &stores.revisions, &ds, &hash, &claimed).await?;
    }
    let mut by_node: BTreeMap<String, Vec<Arc<Pod>>> = BTreeMap::new();
    for p in claimed {
        if let Some(n) = pod_node(&p) {
            by_node.entry(n).or_default().push(p);
        }
    }
    let nodes = node_store.state();
    // Per node: whether it should run a daemon pod (a new one may start there, or the one
    // there may stay).
    let eligible: BTreeMap<String, bool> = nodes
        .iter()
        .map(|n| {
            let name = n.metadata.name.clone().unwrap_or_default();
            let has_pod = by_node
                .get(&name)
                .is_some_and(|ps| ps.iter().any(|p| p.metadata.deletion_timestamp.is_none()));
            let ok = if has_pod {
                may_stay(&spec.template, n)
            } else {
                should_run(&spec.template, n)
            };
            (name, ok)
        })
        .collect();
    let min_ready = i64::from(spec.min_ready_seconds.unwrap_or(0));
    let now = skiff_client::time::now().as_second();
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &key.namespace);
    let r = reference(ds.as_ref());
    let mut create: Vec<String> = Vec::new();
    let mut delete: Vec<Arc<Pod>> = Vec::new();
    let satisfied = exp.satisfied(&key, pod_store) && !owners::deleting(&ds.metadata);
    for (node, ok) in &eligible {
        let here = by_node.get(node).cloned().unwrap_or_default();
        let alive: Vec<Arc<Pod>> = here
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .cloned()
            .collect();
        if !ok {
            delete.extend(alive);
            continue;
        }
        // A failed daemon pod is replaced.
        let (failed, running): (Vec<_>, Vec<_>) =
            alive.into_iter().partition(|p| pods::phase(p) == "Failed");
        delete.extend(failed);
        if running.is_empty() {
            // Wait for a terminating pod to be gone before starting the next.
            if here
                .iter()
                .all(|p| p.metadata.deletion_timestamp.is_none() || pods::phase(p) == "Failed")
            {
                create.push(node.clone());
            }
        } else if running.len() > 1 {
            let mut extra = running.clone();
            // Keep one of the current template if there is one, else the oldest.
            extra.sort_by_key(|p| {
                (
                    pod_hash(p) != Some(hash.as_str()),
                    p.metadata
                        .creation_timestamp
                        .as_ref()
                        .map(|t| t.0.as_second()),
                )
            });
            delete.extend(extra.into_iter().skip(1));
        }
    }
    // Pods for nodes that no longer exist.
    for (node, ps) in &by_node {
        if !eligible.contains_key(node) {
            delete.extend(
                ps.iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_none())
                    .cloned(),
            );
        }
    }
    // Rolling update: old pods go while no more than maxUnavailable nodes are without an
    // available pod.
    let desired = eligible.values().filter(|ok| **ok).count() as i32;
    let rolling = spec
        .update_strategy
        .as_ref()
        .and_then(|s| s.type_.as_deref())
        .unwrap_or("RollingUpdate")
        == "RollingUpdate";
    if rolling && create.is_empty() {
        let max_unavailable = match spec
            .update_strategy
            .as_ref()
            .and_then(|s| s.rolling_update.as_ref())
            .and_then(|r| r.max_unavailable.clone())
        {
            Some(IntOrString::Int(n)) => n,
            Some(IntOrString::String(s)) => {
                let p: f64 = s.trim_end_matches('%').parse().unwrap_or(0.0);
                (p * f64::from(desired) / 100.0).ceil() as i32
            }
            None => 1,
        }
        .max(1);
        let mut unavailable = 0;
        let mut old_unavailable = Vec::new();
        let mut old_available = Vec::new();
        for (node, ok) in &eligible {
            if !ok {
                continue;
            }
            let alive: Vec<&Arc<Pod>> = by_node
                .get(node)
                .into_iter()
                .flatten()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .collect();
            let Some(p) = alive.first() else {
                unavailable += 1;
                continue;
            };
            let avail = pods::available(p, min_ready, now).0;
            if !avail {
                unavailable += 1;
            }
            if pod_hash(p) != Some(hash.as_str()) {
                if avail {
                    old_available.push((*p).clone());
                } else {
                    old_unavailable.push((*p).clone());
                }
            }
        }
        delete.extend(old_unavailable);
        let budget = (max_unavailable - unavailable).max(0) as usize;
        delete.extend(old_available.into_iter().take(budget));
    }
    if satisfied {
        // At most a burst per sync; the pods' creation brings the DaemonSet back for the rest.
        let new_pods: Vec<Pod> = create
            .iter()
            .take(pods::BURST)
            .map(|node| pod_for(&ds, &hash, node))
            .collect();
        pods::create_each(ctx, exp, &key, &r, new_pods).await?;
        exp.expect_dels(
            &key,
            delete.iter().map(|p| {
                (
                    ObjectKey::of(p.as_ref()),
                    p.metadata.uid.clone().unwrap_or_default(),
                )
            }),
        );
        for p in &delete {
            let name = p.metadata.name.clone().unwrap_or_default();
            let dp = DeleteParams {
                precondition_uid: p.metadata.uid.clone(),
                ..Default::default()
            };
            match api.delete(&name, &dp).await {
                Ok(_) => ctx.events.normal(
                    r.clone(),
                    "SuccessfulDelete",
                    "Delete",
                    format!("Deleted pod: {name}"),
                ),
                Err(e) if e.is_not_found() || e.is_conflict() => {}
                Err(e) => return Err(e),
            }
        }
    }
    // Status.
    let (mut current, mut misscheduled, mut ready, mut available, mut updated) = (0, 0, 0, 0, 0);
    let mut wake: Option<Duration> = None;
    for (node, ps) in &by_node {
        let alive: Vec<&Arc<Pod>> = ps
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect();
        if alive.is_empty() {
            continue;
        }
        if eligible.get(node) != Some(&true) {
            misscheduled += 1;
            continue;
        }
        current += 1;
        if alive.iter().any(|p| pod_hash(p) == Some(hash.as_str())) {
            updated += 1;
        }
        if alive.iter().any(|p| pods::is_ready(p)) {
            ready += 1;
        }
        match alive
            .iter()
            .map(|p| pods::available(p, min_ready, now))
            .find(|a| a.0)
        {
            Some(_) => available += 1,
            None => {
                if let Some(d) = alive
                    .iter()
                    .filter_map(|p| pods::available(p, min_ready, now).1)
                    .min()
                {
                    wake = Some(wake.map_or(d, |w| w.min(d)));
                }
            }
        }
    }
    let status = json!({
        "desiredNumberScheduled": desired,
        "currentNumberScheduled": current,
        "numberMisscheduled": misscheduled,
        "numberReady": ready,
        "numberAvailable": available,
        "numberUnavailable": (desired - available).max(0),
        "updatedNumberScheduled": updated,
        "observedGeneration": ds.metadata.generation.unwrap_or(0),
    });
    let old = serde_json::to_value(ds.status.clone().unwrap_or_default()).unwrap_or_default();
    let same = status.as_object().is_some_and(|m| {
        m.iter().all(|(k, v)| {
            old.get(k).unwrap_or(&json!(0)) == v || (old.get(k).is_none() && v == &json!(0))
        })
    });
    if !same {
        let dapi: Api<DaemonSet> = Api::namespaced(ctx.client.clone(), &key.namespace);
        if crate::write_status(&dapi, &key.name, status)
            .await?
            .is_none()
        {
            return Ok(Action::Done);
        }
    }
    Ok(match wake {
        Some(d) => Action::RequeueAfter(d + Duration::from_millis(100)),
        None => Action::Done,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(v: serde_json::Value) -> Node {
        serde_json::from_value(v).unwrap()
    }

    fn template(v: serde_json::Value) -> PodTemplateSpec {
        serde_json::from_value(json!({"spec": v})).unwrap()
    }

    #[test]
    fn eligibility_by_selector_affinity_and_taints() {
        let n = node(
            json!({"metadata": {"name": "n1", "labels": {"disk": "ssd", "gen": "5"}},
            "spec": {"taints": [{"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"},
                                {"key": "soft", "effect": "PreferNoSchedule"}]}}),
        );
        let plain = template(json!({"containers": []}));
        assert!(
            should_run(&plain, &n),
            "daemon pods tolerate unreachable, PreferNoSchedule is ignored"
        );
        assert!(!should_run(
            &template(json!({"containers": [], "nodeSelector": {"disk": "hdd"}})),
            &n
        ));
        assert!(should_run(
            &template(json!({"containers": [], "nodeSelector": {"disk": "ssd"}})),
            &n
        ));
        let gt = template(
            json!({"containers": [], "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
            {"nodeSelectorTerms": [{"matchExpressions": [{"key": "gen", "operator": "Gt", "values": ["6"]}]}]}}}}),
        );
        assert!(!should_run(&gt, &n));
        let dedicated = node(json!({"metadata": {"name": "n2"},
            "spec": {"taints": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]}}));
        assert!(!should_run(&plain, &dedicated));
        assert!(
            may_stay(&plain, &dedicated),
            "NoSchedule does not drive a running pod away"
        );
        let tolerant = template(
            json!({"containers": [], "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoSchedule"}]}),
        );
        assert!(should_run(&tolerant, &dedicated));
    }

    #[test]
    fn daemon_pods_are_pinned_by_node_affinity() {
        let ds: DaemonSet = serde_json::from_value(json!({"metadata": {"name": "agent", "namespace": "kube-system", "uid": "u"},
            "spec": {"selector": {"matchLabels": {"app": "agent"}},
                "template": {"metadata": {"labels": {"app": "agent"}}, "spec": {"containers": []}}}})).unwrap();
        let p = pod_for(&ds, "h1", "n7");
        assert_eq!(pod_node(&p).as_deref(), Some("n7"));
        assert_eq!(pod_hash(&p), Some("h1"));
        assert!(p
            .spec
            .unwrap()
            .tolerations
            .unwrap()
            .iter()
            .any(|t| t.key.as_deref() == Some(nodelifecycle::UNREACHABLE)));
    }
}
