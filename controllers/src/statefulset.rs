//! The StatefulSet controller: pods with stable names (`NAME-0` … `NAME-(N-1)`), a stable
//! network identity (`hostname`, and `subdomain` from `serviceName`) and stable storage (one
//! claim per ordinal from each `volumeClaimTemplates` entry, kept across pod deletion),
//! created in order and each only once the one before is Running and Ready (`OrderedReady`),
//! or all at once (`Parallel`); scaled down from the highest ordinal; updated by
//! `RollingUpdate` (highest ordinal first, down to `partition`, at most `maxUnavailable` at a
//! time) or `OnDelete`; with the history in ControllerRevisions that `kubectl rollout` reads.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, PodTemplateSpec, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::json;
use skiff_client::controller::{Action, Config as RunConfig, Controller};
use skiff_client::events::reference;
use skiff_client::reflector::{ObjectKey, Store};
use skiff_client::{Api, DeleteParams, Patch, PatchParams, PostParams};
use tokio_util::sync::CancellationToken;

use crate::history::{self, HASH_LABEL};
use crate::{owners, pods, Context};

/// The label with the pod's own name (what a per-pod Service selects).
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
/// The label with the pod's ordinal.
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

/// Errors of one sync.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API refused or failed.
    #[error(transparent)]
    Api(#[from] skiff_client::Error),
    /// Keeping the history failed.
    #[error(transparent)]
    History(#[from] history::Error),
}

/// Runs the controller until `shutdown`.
pub async fn run(ctx: Arc<Context>, shutdown: CancellationToken) {
    let informer = ctx.informers.informer::<StatefulSet>();
    let pods = ctx.pods();
    let revisions = ctx.owned::<ControllerRevision>();
    let claims = ctx.informers.informer::<PersistentVolumeClaim>();
    let ctrl = Controller::new(
        informer.clone(),
        RunConfig {
            concurrency: ctx.config.concurrent_statefulset_syncs,
            ..RunConfig::default()
        },
    );
    owners::feed_owners(
        pods.clone(),
        informer.store(),
        |s: &StatefulSet| s.spec.as_ref().map(|s| Cow::Borrowed(&s.selector)),
        ctrl.queue(),
        shutdown.clone(),
    );
    let stores = Arc::new(Stores {
        pods: pods.store(),
        revisions: revisions.store(),
        claims: claims.store(),
    });
    ctrl.run(
        move |key, set| {
            let (ctx, stores) = (ctx.clone(), stores.clone());
            async move { reconcile(&ctx, &stores, key, set).await }
        },
        shutdown,
    )
    .await;
}

struct Stores {
    pods: Store<Pod>,
    revisions: Store<ControllerRevision>,
    claims: Store<PersistentVolumeClaim>,
}

/// The ordinal of a pod of `set` named `SET-N`, if it is one.
pub fn ordinal_of(set: &str, pod: &str) -> Option<i32> {
    let n = pod.strip_prefix(set)?.strip_prefix('-')?;
    if n.is_empty() || (n.len() > 1 && n.starts_with('0')) {
        return None;
    }
    n.parse().ok().filter(|n: &i32| *n >= 0)
}

/// The claim of ordinal `ordinal` from template `template`: `TEMPLATE-SET-ORDINAL`.
pub fn claim_name(template: &str, set: &str, ordinal: i32) -> String {
    format!("{template}-{set}-{ordinal}")
}

fn running_and_ready(p: &Pod) -> bool {
    pods::phase(p) == "Running" && pods::is_ready(p)
}

fn terminating(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_some()
}

fn finished(p: &Pod) -> bool {
    matches!(pods::phase(p), "Failed" | "Succeeded")
}

fn pod_revision(p: &Pod) -> Option<&str> {
    p.metadata
        .labels
        .as_ref()?
        .get(HASH_LABEL)
        .map(String::as_str)
}

/// The pod of ordinal `ordinal` made from `template` (revision `revision`).
pub fn pod_for(set: &StatefulSet, template: &PodTemplateSpec, revision: &str, ordinal: i32) -> Pod {
    let spec = set.spec.as_ref().expect("checked");
    let set_name = set.metadata.name.clone().unwrap_or_default();
    let name = format!("{set_name}-{ordinal}");
    let tm = template.metadata.clone().unwrap_or_default();
    let mut labels = tm.labels.unwrap_or_default();
    labels.insert(POD_NAME_LABEL.into(), name.clone());
    labels.insert(POD_INDEX_LABEL.into(), ordinal.to_string());
    labels.insert(HASH_LABEL.into(), revision.into());
    let mut ps = template.spec.clone().unwrap_or_default();
    ps.hostname = Some(name.clone());
    if let Some(svc) = spec.service_name.as_deref().filter(|s| !s.is_empty()) {
        ps.subdomain = Some(svc.into());
    }
    let mut volumes = ps.volumes.take().unwrap_or_default();
    for c in spec.volume_claim_templates.iter().flatten() {
        let tname = c.metadata.name.clone().unwrap_or_default();
        volumes.retain(|v| v.name != tname);
        volumes.push(Volume {
            name: tname.clone(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim_name(&tname, &set_name, ordinal),
                read_only: None,
            }),
            ..Default::default()
        });
    }
    if !volumes.is_empty() {
        ps.volumes = Some(volumes);
    }
    Pod {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: set.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: tm.annotations,
            finalizers: tm.finalizers,
            owner_references: Some(vec![owners::controller_ref(set)]),
            ..Default::default()
        },
        spec: Some(ps),
        status: None,
    }
}

fn policy(spec: &StatefulSetSpec) -> (bool, bool) {
    let p = spec.persistent_volume_claim_retention_policy.as_ref();
    let delete = |x: Option<&String>| x.map(String::as_str) == Some("Delete");
    (
        delete(p.and_then(|p| p.when_deleted.as_ref())),
        delete(p.and_then(|p| p.when_scaled.as_ref())),
    )
}

fn plain_ref<O: skiff_client::Object>(o: &O) -> OwnerReference {
    OwnerReference {
        controller: None,
        block_owner_deletion: None,
        ..owners::controller_ref(o)
    }
}

/// The owner references a claim should carry under the retention policy: the StatefulSet
/// when `whenDeleted: Delete`; its pod when `whenScaled: Delete` and the pod's ordinal is
/// being scaled away. Other owners are kept.
fn wanted_owners(
    claim: &PersistentVolumeClaim,
    set: &StatefulSet,
    pod: Option<&Pod>,
    condemned: bool,
) -> Vec<OwnerReference> {
    let spec = set.spec.as_ref().expect("checked");
    let (when_deleted, when_scaled) = policy(spec);
    let set_uid = set.metadata.uid.clone().unwrap_or_default();
    let pod_uid = pod.and_then(|p| p.metadata.uid.clone());
    let mut refs: Vec<OwnerReference> = claim
        .metadata
        .owner_references
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|r| {
            !(r.uid == set_uid
                || (r.kind == "Pod"
                    && r.name
                        .starts_with(set.metadata.name.as_deref().unwrap_or_default())))
        })
        .collect();
    if when_deleted {
        refs.push(plain_ref(set));
    }
    if when_scaled && condemned {
        if let (Some(p), Some(_)) = (pod, pod_uid) {
            refs.push(plain_ref(p));
        }
    }
    refs
}

async fn reconcile(
    ctx: &Context,
    st: &Stores,
    key: ObjectKey,
    set: Option<Arc<StatefulSet>>,
) -> Result<Action, Error> {
    let Some(set) = set else {
        return Ok(Action::Done);
    };
    st.pods.wait_until_ready().await;
    st.revisions.wait_until_ready().await;
    st.claims.wait_until_ready().await;
    let Some(spec) = set.spec.as_ref() else {
        return Ok(Action::Done);
    };
    let set_name = key.name.clone();
    let status = set.status.clone().unwrap_or_default();
    let mut collision = status.collision_count;

    // History: the update revision is the template now; the current one what pods ran before.
    let revisions = history::owned(&st.revisions, set.as_ref());
    let update = match history::record(
        &ctx.client,
        set.as_ref(),
        &revisions,
        &spec.template,
        collision,
    )
    .await
    {
        Ok(r) => {
            // Written with the status below when a name clash made it grow.
            collision = r.collision_count;
            r.revision
        }
        Err(history::Error::Collision(_)) => {
            collision = Some(collision.unwrap_or(0) + history::MAX_COLLISIONS);
            let api: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &key.namespace);
            crate::write_status(&api, &set_name, json!({"collisionCount": collision})).await?;
            return Ok(Action::RequeueAfter(Duration::from_millis(100)));
        }
        Err(e) => return Err(e.into()),
    };
    let update_name = update.metadata.name.clone().unwrap_or_default();
    let current = status
        .current_revision
        .as_deref()
        .and_then(|n| {
            revisions
                .iter()
                .find(|r| r.metadata.name.as_deref() == Some(n))
        })
        .map(|r| r.as_ref().clone())
        .unwrap_or_else(|| update.clone());
    let current_name = current.metadata.name.clone().unwrap_or_default();
    let current_template = history::template_of(&current).unwrap_or_else(|| spec.template.clone());

    let claimed = owners::claim(&ctx.client, set.as_ref(), &spec.selector, &st.pods).await?;
    let mut by_ordinal: BTreeMap<i32, Arc<Pod>> = BTreeMap::new();
    for p in claimed {
        if let Some(o) = ordinal_of(&set_name, p.metadata.name.as_deref().unwrap_or_default()) {
            by_ordinal.insert(o, p);
        }
    }
    let replicas = spec.replicas.unwrap_or(1).max(0);
    let start = spec
        .ordinals
        .as_ref()
        .and_then(|o| o.start)
        .unwrap_or(0)
        .max(0);
    let end = start + replicas;
    let monotonic = spec.pod_management_policy.as_deref() != Some("Parallel");
    let rolling = spec
        .update_strategy
        .as_ref()
        .and_then(|u| u.type_.as_deref())
        .unwrap_or("RollingUpdate")
        == "RollingUpdate";
    let ru = spec
        .update_strategy
        .as_ref()
        .and_then(|u| u.rolling_update.as_ref());
    let partition = ru.and_then(|r| r.partition).unwrap_or(0);
    let min_ready = i64::from(spec.min_ready_seconds.unwrap_or(0));
    let now = skiff_client::time::now().as_second();
    let available = |p: &Pod| running_and_ready(p) && pods::available(p, min_ready, now).0;
    let mut wake: Option<Duration> = None;
    let mut note_wake = |p: &Pod| {
        if let (true, Some(d)) = (running_and_ready(p), pods::available(p, min_ready, now).1) {
            wake = Some(wake.map_or(d, |w: Duration| w.min(d)));
        }
    };
    let r = reference(set.as_ref());
    let pod_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &key.namespace);
    let deleting_set = owners::deleting(&set.metadata);

    // Claims: each live pod's claims exist and carry the owners the retention policy asks for.
    if !deleting_set {
        for (o, p) in &by_ordinal {
            if !terminating(p) {
                ensure_claims(ctx, st, &set, *o, Some(p.as_ref()), *o >= end || *o < start).await?;
            }
        }
    }

    // Create and replace pods, in order.
    let mut blocked = deleting_set;
    for o in start..end {
        if blocked {
            break;
        }
        match by_ordinal.get(&o) {
            None => {
                // Below the partition a pod comes back as it was; otherwise (and always under
                // OnDelete) at the update revision.
                let (template, rev) =
                    if rolling && o < start + partition && current_name != update_name {
                        (&current_template, current_name.as_str())
                    } else {
                        (&spec.template, update_name.as_str())
                    };
                ensure_claims(ctx, st, &set, o, None, false).await?;
                let pod = pod_for(&set, template, rev, o);
                let name = pod.metadata.name.clone().unwrap_or_default();
                match pod_api.create(&PostParams::default(), &pod).await {
                    Ok(_) => ctx.events.normal(
                        r.clone(),
                        "SuccessfulCreate",
                        "Create",
                        format!("create Pod {name} in StatefulSet {set_name} successful"),
                    ),
                    Err(e) if e.is_already_exists() => {}
                    Err(e) if pods::namespace_terminating(&e) => return Ok(Action::Done),
                    Err(e) => {
                        ctx.events.warning(
                            r.clone(),
                            "FailedCreate",
                            "Create",
                            format!(
                                "create Pod {name} in StatefulSet {set_name} failed error: {}",
                                pods::error_message(&e)
                            ),
                        );
                        return Err(e.into());
                    }
                }
                blocked = monotonic;
            }
            Some(p) if finished(p) && !terminating(p) => {
                let name = p.metadata.name.clone().unwrap_or_default();
                ctx.events.warning(
                    r.clone(),
                    "RecreatingFailedPod",
                    "Recreate",
                    format!(
                        "StatefulSet {}/{set_name} is recreating failed Pod {name}",
                        key.namespace
                    ),
                );
                delete_pod(ctx, &pod_api, &r, &set_name, p).await?;
                blocked = monotonic;
            }
            Some(p) if terminating(p) => blocked = monotonic,
            Some(p) => {
                note_wake(p.as_ref());
                if !available(p.as_ref()) {
                    blocked = monotonic;
                }
            }
        }
    }

    // Scale down: the highest ordinal first; one at a time, once all others are healthy,
    // unless Parallel.
    let condemned: Vec<Arc<Pod>> = by_ordinal
        .iter()
        .rev()
        .filter(|(o, _)| **o >= end || **o < start)
        .map(|(_, p)| p.clone())
        .collect();
    if !blocked && !condemned.is_empty() {
        let unhealthy = by_ordinal
            .values()
            .any(|p| terminating(p) || !running_and_ready(p));
        for p in &condemned {
            if terminating(p) {
                if monotonic {
                    break;
                }
                continue;
            }
            if monotonic && unhealthy && running_and_ready(p) {
                break;
            }
            delete_pod(ctx, &pod_api, &r, &set_name, p).await?;
            if monotonic {
                break;
            }
        }
        blocked = true;
    }

    // Rolling update: outdated pods from the highest ordinal down to the partition go, at
    // most maxUnavailable unavailable at a time; each comes back at the update revision.
    if rolling && !blocked && !deleting_set {
        let max_unavailable = match ru.and_then(|r| r.max_unavailable.clone()) {
            Some(IntOrString::Int(n)) => n,
            Some(IntOrString::String(s)) => {
                let p: f64 = s.trim_end_matches('%').parse().unwrap_or(0.0);
                (p * f64::from(replicas) / 100.0).floor() as i32
            }
            None => 1,
        }
        .max(1);
        let targets: Vec<&Arc<Pod>> = (start..end)
            .rev()
            .filter(|o| *o >= start + partition)
            .filter_map(|o| by_ordinal.get(&o))
            .collect();
        let mut unavailable = (start..end)
            .filter(|o| {
                by_ordinal
                    .get(o)
                    .is_none_or(|p| terminating(p) || !available(p.as_ref()))
            })
            .count() as i32;
        for p in targets {
            if pod_revision(p) == Some(update_name.as_str()) {
                if !available(p.as_ref()) && monotonic && max_unavailable == 1 {
                    break;
                }
                continue;
            }
            if terminating(p) {
                continue;
            }
            if available(p.as_ref()) {
                if unavailable >= max_unavailable {
                    break;
                }
                unavailable += 1;
            }
            delete_pod(ctx, &pod_api, &r, &set_name, p).await?;
        }
    }

    // History: keep what pods use, the current and the update revision, and the newest others.
    let mut keep: BTreeSet<String> = by_ordinal
        .values()
        .filter_map(|p| pod_revision(p).map(str::to_string))
        .collect();
    keep.insert(current_name.clone());
    keep.insert(update_name.clone());
    history::trim(
        &ctx.client,
        &revisions,
        &keep,
        spec.revision_history_limit.unwrap_or(10),
    )
    .await?;

    // Status.
    let (mut n, mut ready, mut avail, mut cur, mut upd) = (0, 0, 0, 0, 0);
    for p in by_ordinal.values() {
        n += 1;
        if running_and_ready(p) {
            ready += 1;
            if available(p.as_ref()) {
                avail += 1;
            }
        }
        if !terminating(p) {
            if pod_revision(p) == Some(current_name.as_str()) {
                cur += 1;
            }
            if pod_revision(p) == Some(update_name.as_str()) {
                upd += 1;
            }
        }
    }
    let (mut current_out, mut cur_out) = (current_name.clone(), cur);
    if rolling && upd == n && ready == n && n == replicas {
        current_out = update_name.clone();
        cur_out = upd;
    }
    let mut new_status = json!({
        "replicas": n,
        "readyReplicas": ready,
        "availableReplicas": avail,
        "currentReplicas": cur_out,
        "updatedReplicas": upd,
        "currentRevision": current_out,
        "updateRevision": update_name,
        "observedGeneration": set.metadata.generation.unwrap_or(0),
    });
    // Like Kubernetes, no count until a collision: it is part of the revisions' hash.
    if let Some(c) = collision {
        new_status["collisionCount"] = json!(c);
    }
    let old = serde_json::to_value(&status).unwrap_or_default();
    let same = new_status.as_object().is_some_and(|m| {
        m.iter()
            .all(|(k, v)| old.get(k) == Some(v) || (old.get(k).is_none() && v == &json!(0)))
    });
    if !same {
        let api: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &key.namespace);
        if crate::write_status(&api, &set_name, new_status)
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

async fn delete_pod(
    ctx: &Context,
    api: &Api<Pod>,
    r: &k8s_openapi::api::core::v1::ObjectReference,
    set_name: &str,
    p: &Pod,
) -> Result<(), skiff_client::Error> {
    let name = p.metadata.name.clone().unwrap_or_default();
    let dp = DeleteParams {
        precondition_uid: p.metadata.uid.clone(),
        ..Default::default()
    };
    match api.delete(&name, &dp).await {
        Ok(_) => {
            ctx.events.normal(
                r.clone(),
                "SuccessfulDelete",
                "Delete",
                format!("delete Pod {name} in StatefulSet {set_name} successful"),
            );
            Ok(())
        }
        Err(e) if e.is_not_found() || e.is_conflict() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Creates the claims of ordinal `o` that do not exist, and sets the owners the retention
/// policy asks for on those that do.
async fn ensure_claims(
    ctx: &Context,
    st: &Stores,
    set: &StatefulSet,
    o: i32,
    pod: Option<&Pod>,
    condemned: bool,
) -> Result<(), skiff_client::Error> {
    let spec = set.spec.as_ref().expect("checked");
    let ns = set.metadata.namespace.clone().unwrap_or_default();
    let set_name = set.metadata.name.clone().unwrap_or_default();
    let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
    let r = reference(set);
    for t in spec.volume_claim_templates.iter().flatten() {
        let tname = t.metadata.name.clone().unwrap_or_default();
        let name = claim_name(&tname, &set_name, o);
        match st.claims.get(&ObjectKey::new(&ns, &name)) {
            Some(existing) => {
                if existing.metadata.deletion_timestamp.is_some() {
                    continue;
                }
                let want = wanted_owners(&existing, set, pod, condemned);
                let have = existing
                    .metadata
                    .owner_references
                    .clone()
                    .unwrap_or_default();
                if want != have {
                    let body = json!({"metadata": {
                        "ownerReferences": want,
                        "resourceVersion": existing.metadata.resource_version,
                    }});
                    match api
                        .patch(&name, &PatchParams::default(), &Patch::Merge(body))
                        .await
                    {
                        Ok(_) => {}
                        Err(e) if e.is_conflict() || e.is_not_found() => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            None => {
                let mut labels = spec.selector.match_labels.clone().unwrap_or_default();
                labels.extend(t.metadata.labels.clone().unwrap_or_default());
                let mut claim = PersistentVolumeClaim {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        namespace: Some(ns.clone()),
                        labels: Some(labels),
                        annotations: t.metadata.annotations.clone(),
                        ..Default::default()
                    },
                    spec: t.spec.clone(),
                    status: None,
                };
                let refs = wanted_owners(&claim, set, pod, condemned);
                if !refs.is_empty() {
                    claim.metadata.owner_references = Some(refs);
                }
                let pod_name = format!("{set_name}-{o}");
                match api.create(&PostParams::default(), &claim).await {
                    Ok(_) => ctx.events.normal(
                        r.clone(),
                        "SuccessfulCreate",
                        "Create",
                        format!(
                            "create Claim {name} Pod {pod_name} in StatefulSet {set_name} success"
                        ),
                    ),
                    Err(e) if e.is_already_exists() => {}
                    Err(e) => {
                        ctx.events.warning(
                            r.clone(),
                            "FailedCreate",
                            "Create",
                            format!(
                                "create Claim {name} for Pod {pod_name} in StatefulSet {set_name} failed error: {}",
                                pods::error_message(&e)
                            ),
                        );
                        return Err(e);
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn web() -> StatefulSet {
        serde_json::from_value(json!({"metadata": {"name": "web", "namespace": "ns", "uid": "u1"},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "serviceName": "web",
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "c", "image": "busybox"}],
                             "volumes": [{"name": "data", "emptyDir": {}}]}},
                "volumeClaimTemplates": [{"metadata": {"name": "data"},
                    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}],
                "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Delete", "whenScaled": "Delete"}}}))
        .unwrap()
    }

    #[test]
    fn ordinals_from_names() {
        assert_eq!(ordinal_of("web", "web-0"), Some(0));
        assert_eq!(ordinal_of("web", "web-12"), Some(12));
        assert_eq!(ordinal_of("web", "web-01"), None);
        assert_eq!(ordinal_of("web", "web-x"), None);
        assert_eq!(ordinal_of("web", "webby-1"), None);
        assert_eq!(ordinal_of("web", "web-"), None);
    }

    #[test]
    fn pods_have_stable_identity_and_claims() {
        let set = web();
        let t = set.spec.as_ref().unwrap().template.clone();
        let p = pod_for(&set, &t, "web-abc", 2);
        assert_eq!(p.metadata.name.as_deref(), Some("web-2"));
        let l = p.metadata.labels.as_ref().unwrap();
        assert_eq!(l[POD_NAME_LABEL], "web-2");
        assert_eq!(l[POD_INDEX_LABEL], "2");
        assert_eq!(l[HASH_LABEL], "web-abc");
        let ps = p.spec.unwrap();
        assert_eq!(ps.hostname.as_deref(), Some("web-2"));
        assert_eq!(ps.subdomain.as_deref(), Some("web"));
        let vols = ps.volumes.unwrap();
        assert_eq!(
            vols.len(),
            1,
            "the claim replaces the template's volume of that name"
        );
        assert_eq!(
            vols[0].persistent_volume_claim.as_ref().unwrap().claim_name,
            "data-web-2"
        );
    }

    #[test]
    fn retention_policy_owners() {
        let set = web();
        let claim = PersistentVolumeClaim::default();
        let pod: Pod =
            serde_json::from_value(json!({"metadata": {"name": "web-3", "uid": "p3"}})).unwrap();
        let kept = wanted_owners(&claim, &set, Some(&pod), false);
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].kind, "StatefulSet");
        let scaled = wanted_owners(&claim, &set, Some(&pod), true);
        assert_eq!(scaled.len(), 2);
        assert_eq!(scaled[1].kind, "Pod");
    }
}
