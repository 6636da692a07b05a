//! The Deployment controller: one ReplicaSet per pod template (named by the template's hash),
//! rolled from old to new by `RollingUpdate` (`maxSurge`/`maxUnavailable`) or `Recreate`,
//! revisions in annotations (so `kubectl rollout history|undo` work), proportional scaling
//! during a rollout, pause/resume, `progressDeadlineSeconds`, old ReplicaSets pruned beyond
//! `revisionHistoryLimit`, and `status` with the `Available` and `Progressing` conditions.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, ReplicaSet};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{json, Value};
use skiff_client::controller::{Action, Config as RunConfig, Controller, WorkQueue};
use skiff_client::events::reference;
use skiff_client::reflector::{Change, ObjectKey, Store};
use skiff_client::{Api, DeleteParams, Patch, PatchParams, PostParams};
use tokio_util::sync::CancellationToken;

use crate::{owners, pods, Context};

/// The revision a ReplicaSet (and its Deployment) is at.
pub const REVISION: &str = "deployment.kubernetes.io/revision";
/// Earlier revisions a ReplicaSet was at before a rollback made it current again.
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
/// The Deployment's replicas when the ReplicaSet was last scaled.
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
/// replicas + maxSurge when the ReplicaSet was last scaled.
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
/// The label that tells pod templates (and their pods) apart.
pub const HASH_LABEL: &str = "pod-template-hash";
/// Copied from the Deployment to its ReplicaSets for `kubectl rollout history`.
const CHANGE_CAUSE: &str = "kubernetes.io/change-cause";

type Result<T, E = skiff_client::Error> = std::result::Result<T, E>;

/// Runs the controller until `shutdown`.
pub async fn run(ctx: Arc<Context>, shutdown: CancellationToken) {
    let informer = ctx.informers.informer::<Deployment>();
    let rs = ctx.replicasets();
    let ctrl = Controller::new(
        informer.clone(),
        RunConfig {
            concurrency: ctx.config.concurrent_deployment_syncs,
            ..RunConfig::default()
        },
    );
    owners::feed_owners(
        rs.clone(),
        informer.store(),
        |d: &Deployment| d.spec.as_ref().map(|s| Cow::Borrowed(&s.selector)),
        ctrl.queue(),
        shutdown.clone(),
    );
    feed_from_pods(
        ctx.pods().subscribe(),
        rs.store(),
        ctrl.queue(),
        shutdown.clone(),
    );
    let (rs_store, pod_store) = (rs.store(), ctx.pods().store());
    ctrl.run(
        move |key, d| {
            let (ctx, rs_store, pod_store) = (ctx.clone(), rs_store.clone(), pod_store.clone());
            async move { reconcile(&ctx, &rs_store, &pod_store, key, d).await }
        },
        shutdown,
    )
    .await;
}

/// A pod that goes away may let a `Recreate` rollout go on: wake its Deployment.
fn feed_from_pods(
    changes: impl futures::Stream<Item = Change<Pod>> + Send + 'static,
    rs: Store<ReplicaSet>,
    queue: Arc<WorkQueue<ObjectKey>>,
    shutdown: CancellationToken,
) {
    crate::spawn_each(changes, shutdown, move |c| {
        let Change::Deleted(pod) = c else { return };
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let Some(r) = owners::controller_of(&pod.metadata).filter(|r| r.kind == "ReplicaSet")
        else {
            return;
        };
        if let Some(set) = rs.get(&ObjectKey::new(&ns, &r.name)) {
            if let Some(d) = owners::controller_of(&set.metadata) {
                if d.kind == "Deployment" {
                    queue.add(ObjectKey::new(&ns, &d.name));
                }
            }
        }
    });
}

/// FNV-1a, 32 bits: the template hash, as Kubernetes computes its own.
fn fnv32a(bytes: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in bytes {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// The pod template's hash (with the collision count), in Kubernetes' alphabet without
/// vowels, so names never spell words.
pub fn template_hash(t: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut bytes = serde_json::to_vec(&normalized(t)).unwrap_or_default();
    if let Some(c) = collision_count {
        bytes.extend_from_slice(c.to_string().as_bytes());
    }
    fnv32a(&bytes)
        .to_string()
        .bytes()
        .map(|b| ALPHABET[usize::from(b) % ALPHABET.len()] as char)
        .collect()
}

fn strip_hash(t: &PodTemplateSpec) -> PodTemplateSpec {
    let mut t = t.clone();
    if let Some(l) = t.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        l.remove(HASH_LABEL);
    }
    t
}

/// The template as JSON without `pod-template-hash` and without empty values (`{}`, `[]`,
/// `null`): Kubernetes compares templates semantically, where an empty struct or list is the
/// same as none, and clients such as `kubectl rollout undo` send `resources: {}` that the
/// stored template leaves out.
fn normalized(t: &PodTemplateSpec) -> Value {
    fn prune(v: &mut Value) -> bool {
        match v {
            Value::Object(m) => {
                m.retain(|_, x| !prune(x));
                m.is_empty()
            }
            Value::Array(a) => {
                for x in a.iter_mut() {
                    prune(x);
                }
                a.is_empty()
            }
            Value::Null => true,
            _ => false,
        }
    }
    let mut v = serde_json::to_value(strip_hash(t)).unwrap_or_default();
    prune(&mut v);
    v
}

/// Whether two templates are the same apart from `pod-template-hash` (semantically).
pub fn same_template(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    normalized(a) == normalized(b)
}

fn annotation(m: &ObjectMeta, k: &str) -> Option<String> {
    m.annotations.as_ref().and_then(|a| a.get(k)).cloned()
}

fn revision(rs: &ReplicaSet) -> i64 {
    annotation(&rs.metadata, REVISION)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

fn status_replicas(rs: &ReplicaSet) -> i32 {
    rs.status.as_ref().map(|s| s.replicas).unwrap_or(0)
}

fn available(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0)
}

fn ready(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0)
}

fn name(m: &ObjectMeta) -> &str {
    m.name.as_deref().unwrap_or("")
}

/// An int-or-percent of `total`, percentages rounded up or down.
fn scaled(v: Option<&IntOrString>, total: i32, round_up: bool) -> i32 {
    match v {
        None => 0,
        Some(IntOrString::Int(i)) => *i,
        Some(IntOrString::String(s)) => {
            let p: f64 = s.trim_end_matches('%').parse().unwrap_or(0.0);
            let x = p * f64::from(total) / 100.0;
            (if round_up { x.ceil() } else { x.floor() }) as i32
        }
    }
}

/// maxSurge and maxUnavailable as pod counts (never both zero).
fn fenceposts(d: &Deployment) -> (i32, i32) {
    let spec = d.spec.as_ref();
    let want = spec.and_then(|s| s.replicas).unwrap_or(1);
    let ru = spec
        .and_then(|s| s.strategy.as_ref())
        .filter(|s| s.type_.as_deref() != Some("Recreate"))
        .and_then(|s| s.rolling_update.as_ref());
    let Some(ru) = ru else {
        return (0, 0);
    };
    let surge = scaled(ru.max_surge.as_ref(), want, true);
    let unavailable = scaled(ru.max_unavailable.as_ref(), want, false);
    if surge == 0 && unavailable == 0 {
        return (0, 1);
    }
    (surge, unavailable)
}

fn recreate(d: &Deployment) -> bool {
    d.spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.type_.as_deref())
        == Some("Recreate")
}

/// One sync's working view: the ReplicaSets as last written.
struct Sync<'a> {
    ctx: &'a Context,
    d: &'a Deployment,
    key: &'a ObjectKey,
    api: Api<ReplicaSet>,
    want: i32,
    new: Option<ReplicaSet>,
    old: Vec<ReplicaSet>,
    /// The Progressing condition's reason and message to set, when something happened.
    progress: Option<(&'static str, String)>,
}

async fn reconcile(
    ctx: &Context,
    rs_store: &Store<ReplicaSet>,
    pod_store: &Store<Pod>,
    key: ObjectKey,
    d: Option<Arc<Deployment>>,
) -> Result<Action> {
    let Some(d) = d else {
        return Ok(Action::Done);
    };
    rs_store.wait_until_ready().await;
    pod_store.wait_until_ready().await;
    let Some(spec) = d.spec.as_ref() else {
        return Ok(Action::Done);
    };
    if skiff_rules::selector::is_empty(&spec.selector) {
        ctx.events.warning(
            reference(d.as_ref()),
            "SelectingAll",
            "Sync",
            "This deployment is selecting all pods. A non-empty selector is required.".into(),
        );
        return Ok(Action::Done);
    }
    let mut all: Vec<ReplicaSet> = owners::claim(&ctx.client, d.as_ref(), &spec.selector, rs_store)
        .await?
        .into_iter()
        .map(|r| r.as_ref().clone())
        .collect();
    all.sort_by_key(|r| {
        (
            r.metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.as_second()),
            r.metadata.name.clone(),
        )
    });
    let mut s = Sync {
        ctx,
        d: d.as_ref(),
        key: &key,
        api: Api::namespaced(ctx.client.clone(), &key.namespace),
        want: spec.replicas.unwrap_or(1),
        new: None,
        old: Vec::new(),
        progress: None,
    };
    let template = &spec.template;
    let mut rest = Vec::new();
    for r in all {
        let same = r
            .spec
            .as_ref()
            .and_then(|x| x.template.as_ref())
            .is_some_and(|t| same_template(t, template));
        if same && s.new.is_none() {
            s.new = Some(r);
        } else {
            rest.push(r);
        }
    }
    s.old = rest;
    if owners::deleting(&d.metadata) {
        return s.finish().await;
    }
    if spec.paused == Some(true) {
        s.scale_proportionally().await?;
        return s.finish().await;
    }
    if s.scaling_event() {
        s.scale_proportionally().await?;
        return s.finish().await;
    }
    if recreate(&d) {
        s.recreate(pod_store).await?;
    } else {
        s.rolling().await?;
    }
    s.finish().await
}

impl Sync<'_> {
    fn actives(&self) -> impl Iterator<Item = &ReplicaSet> {
        self.new.iter().chain(self.old.iter())
    }

    fn max_old_revision(&self) -> i64 {
        self.old.iter().map(revision).max().unwrap_or(0)
    }

    /// Active ReplicaSets whose desired-replicas annotation disagrees with `replicas`.
    fn scaling_event(&self) -> bool {
        self.actives().filter(|r| replicas(r) > 0).any(|r| {
            annotation(&r.metadata, DESIRED_REPLICAS).and_then(|v| v.parse::<i32>().ok())
                != Some(self.want)
        })
    }

    /// Makes sure the new ReplicaSet exists (with `replicas` when made now) and carries the
    /// newest revision and the Deployment's annotations; records the Deployment's revision.
    async fn ensure_new(&mut self, replicas: i32) -> Result<()> {
        let next_rev = self.max_old_revision() + 1;
        let (surge, _) = fenceposts(self.d);
        if let Some(new) = self.new.clone() {
            let cur = revision(&new);
            let mut ann = BTreeMap::new();
            if cur < next_rev {
                ann.insert(REVISION.to_string(), Value::from(next_rev.to_string()));
                if cur > 0 {
                    let mut hist: Vec<String> = annotation(&new.metadata, REVISION_HISTORY)
                        .map(|h| h.split(',').map(String::from).collect())
                        .unwrap_or_default();
                    hist.push(cur.to_string());
                    ann.insert(REVISION_HISTORY.to_string(), Value::from(hist.join(",")));
                }
            }
            let cause = annotation(&self.d.metadata, CHANGE_CAUSE);
            if cause.is_some() && cause != annotation(&new.metadata, CHANGE_CAUSE) {
                ann.insert(CHANGE_CAUSE.to_string(), Value::from(cause));
            }
            if !ann.is_empty() {
                let updated = self
                    .api
                    .patch(
                        name(&new.metadata),
                        &PatchParams::default(),
                        &Patch::Merge(json!({"metadata": {"annotations": ann}})),
                    )
                    .await?;
                self.new = Some(updated);
            }
            let has_progressing = self
                .d
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Progressing"));
            if self.progress.is_none() && !has_progressing {
                self.progress = Some((
                    "FoundNewReplicaSet",
                    format!("Found new replica set \"{}\"", name(&new.metadata)),
                ));
            }
            return self.record_revision().await;
        }
        let spec = self.d.spec.as_ref().expect("checked");
        let mut collisions = self.d.status.as_ref().and_then(|s| s.collision_count);
        loop {
            let hash = template_hash(&spec.template, collisions);
            let mut template = spec.template.clone();
            let tm = template.metadata.get_or_insert_with(Default::default);
            tm.labels = Some(owners::with_label(tm.labels.as_ref(), HASH_LABEL, &hash));
            let mut sel: LabelSelector = spec.selector.clone();
            sel.match_labels = Some(owners::with_label(
                sel.match_labels.as_ref(),
                HASH_LABEL,
                &hash,
            ));
            let mut ann: BTreeMap<String, String> = self
                .d
                .metadata
                .annotations
                .clone()
                .unwrap_or_default()
                .into_iter()
                .filter(|(k, _)| {
                    !k.starts_with("deployment.kubernetes.io/")
                        && k != "kubectl.kubernetes.io/last-applied-configuration"
                })
                .collect();
            ann.insert(REVISION.into(), next_rev.to_string());
            ann.insert(DESIRED_REPLICAS.into(), self.want.to_string());
            ann.insert(MAX_REPLICAS.into(), (self.want + surge).to_string());
            let rs = ReplicaSet {
                metadata: ObjectMeta {
                    name: Some(format!("{}-{hash}", self.key.name)),
                    namespace: Some(self.key.namespace.clone()),
                    labels: template.metadata.as_ref().and_then(|m| m.labels.clone()),
                    annotations: Some(ann),
                    owner_references: Some(vec![owners::controller_ref(self.d)]),
                    ..Default::default()
                },
                spec: Some(k8s_openapi::api::apps::v1::ReplicaSetSpec {
                    replicas: Some(replicas),
                    min_ready_seconds: spec.min_ready_seconds,
                    selector: sel,
                    template: Some(template),
                }),
                status: None,
            };
            match self.api.create(&PostParams::default(), &rs).await {
                Ok(created) => {
                    let n = name(&created.metadata).to_string();
                    self.ctx.events.normal(
                        reference(self.d),
                        "ScalingReplicaSet",
                        "Scale",
                        format!("Scaled up replica set {n} from 0 to {replicas}"),
                    );
                    self.progress = Some((
                        "NewReplicaSetCreated",
                        format!("Created new replica set \"{n}\""),
                    ));
                    self.new = Some(created);
                    return self.record_revision().await;
                }
                Err(e) if e.is_already_exists() => {
                    // Someone else's ReplicaSet, or one of ours with another template: try
                    // the next name (Kubernetes' collisionCount).
                    let existing = self.api.get(&format!("{}-{hash}", self.key.name)).await?;
                    let ours = owners::controller_of(&existing.metadata)
                        .is_some_and(|r| Some(&r.uid) == self.d.metadata.uid.as_ref());
                    let same = existing
                        .spec
                        .as_ref()
                        .and_then(|x| x.template.as_ref())
                        .is_some_and(|t| same_template(t, &spec.template));
                    if ours && same {
                        self.new = Some(existing);
                        return self.record_revision().await;
                    }
                    collisions = Some(collisions.unwrap_or(0) + 1);
                    let dapi: Api<Deployment> =
                        Api::namespaced(self.ctx.client.clone(), &self.key.namespace);
                    dapi.patch_status(
                        &self.key.name,
                        &PatchParams::default(),
                        &Patch::Merge(json!({"status": {"collisionCount": collisions}})),
                    )
                    .await?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Writes the new ReplicaSet's revision onto the Deployment.
    async fn record_revision(&self) -> Result<()> {
        let Some(new) = &self.new else { return Ok(()) };
        let rev = revision(new).to_string();
        if annotation(&self.d.metadata, REVISION).as_deref() == Some(rev.as_str()) {
            return Ok(());
        }
        let dapi: Api<Deployment> = Api::namespaced(self.ctx.client.clone(), &self.key.namespace);
        match dapi
            .patch(
                &self.key.name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {REVISION: rev}}})),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Sets a ReplicaSet's replicas (and the annotations recording why); updates the view.
    async fn scale(&mut self, rs_name: &str, to: i32) -> Result<()> {
        let (surge, _) = fenceposts(self.d);
        let slot = if self
            .new
            .as_ref()
            .is_some_and(|n| name(&n.metadata) == rs_name)
        {
            self.new.as_mut()
        } else {
            self.old.iter_mut().find(|r| name(&r.metadata) == rs_name)
        };
        let Some(rs) = slot else { return Ok(()) };
        let from = replicas(rs);
        let desired = annotation(&rs.metadata, DESIRED_REPLICAS);
        if from == to && desired.as_deref() == Some(self.want.to_string().as_str()) {
            return Ok(());
        }
        let body = json!({
            "metadata": {"annotations": {
                DESIRED_REPLICAS: self.want.to_string(),
                MAX_REPLICAS: (self.want + surge).to_string(),
            }},
            "spec": {"replicas": to},
        });
        let updated = self
            .api
            .patch(rs_name, &PatchParams::default(), &Patch::Merge(body))
            .await?;
        *rs = updated;
        if from != to {
            let dir = if to > from { "up" } else { "down" };
            self.ctx.events.normal(
                reference(self.d),
                "ScalingReplicaSet",
                "Scale",
                format!("Scaled {dir} replica set {rs_name} from {from} to {to}"),
            );
        }
        Ok(())
    }

    /// Spreads a change of `replicas` over the active ReplicaSets in proportion to their
    /// sizes (Kubernetes' proportional scaling), so a rollout in progress keeps its shape.
    async fn scale_proportionally(&mut self) -> Result<()> {
        let (surge, _) = fenceposts(self.d);
        let active: Vec<(String, i32)> = self
            .actives()
            .filter(|r| replicas(r) > 0)
            .map(|r| (name(&r.metadata).to_string(), replicas(r)))
            .collect();
        let targets: Vec<(String, i32)> = if active.len() <= 1 {
            // One ReplicaSet (or none active): it takes all the replicas.
            let target = active
                .first()
                .map(|(n, _)| n.clone())
                .or_else(|| self.new.as_ref().map(|n| name(&n.metadata).to_string()));
            match target {
                Some(n) => vec![(n, self.want)],
                None => Vec::new(),
            }
        } else {
            let total: i32 = active.iter().map(|(_, r)| r).sum();
            let allowed = self.want + surge;
            let delta = allowed - total;
            let mut sized = active.clone();
            // The biggest first (newest first among equals when adding, oldest when
            // removing) takes what rounding leaves over.
            sized.sort_by_key(|s| std::cmp::Reverse(s.1));
            let mut left = delta;
            let mut out: Vec<(String, i32)> = sized
                .iter()
                .map(|(n, r)| {
                    let share = (i64::from(*r) * i64::from(delta) / i64::from(total.max(1))) as i32;
                    left -= share;
                    (n.clone(), r + share)
                })
                .collect();
            if let Some(first) = out.first_mut() {
                first.1 = (first.1 + left).max(0);
            }
            out
        };
        for (n, to) in targets {
            self.scale(&n, to.max(0)).await?;
        }
        Ok(())
    }

    async fn rolling(&mut self) -> Result<()> {
        let (surge, unavailable) = fenceposts(self.d);
        if self.new.is_none() {
            let current: i32 = self.old.iter().map(replicas).sum();
            let n = (self.want + surge - current).clamp(0, self.want);
            self.ensure_new(n).await?;
            if self.progress.as_ref().map(|p| p.0) == Some("NewReplicaSetCreated") {
                return Ok(());
            }
        } else {
            self.ensure_new(0).await?;
        }
        let new = self.new.clone().expect("ensured");
        let new_name = name(&new.metadata).to_string();
        // Scale the new ReplicaSet up as far as maxSurge allows.
        let nr = replicas(&new);
        if nr > self.want {
            return self.scale(&new_name, self.want).await;
        }
        if nr < self.want {
            let total: i32 = self.actives().map(replicas).sum();
            let room = (self.want + surge - total).max(0);
            let to = nr + room.min(self.want - nr);
            if to != nr {
                // Progress is judged by the status this brings, in `finish`.
                return self.scale(&new_name, to).await;
            }
        }
        // Scale old ReplicaSets down as far as maxUnavailable allows.
        let old_total: i32 = self.old.iter().map(replicas).sum();
        if old_total == 0 {
            return Ok(());
        }
        let all: i32 = self.actives().map(replicas).sum();
        let min_available = self.want - unavailable;
        let new_unavailable = (replicas(&new) - available(&new)).max(0);
        let max_down = all - min_available - new_unavailable;
        if max_down <= 0 {
            return Ok(());
        }
        // Unhealthy old pods go first: removing them costs no availability.
        let mut budget = max_down;
        let mut olds: Vec<(String, i32, i32)> = self
            .old
            .iter()
            .map(|r| (name(&r.metadata).to_string(), replicas(r), available(r)))
            .collect();
        let mut cleaned = 0;
        for (n, r, a) in olds.iter_mut() {
            if budget <= 0 {
                break;
            }
            let unhealthy = (*r - *a).max(0).min(budget);
            if unhealthy > 0 {
                *r -= unhealthy;
                budget -= unhealthy;
                cleaned += unhealthy;
                self.scale(n, *r).await?;
            }
        }
        // Then available ones, while the total available stays at minAvailable or above.
        let available_all: i32 = self.actives().map(available).sum();
        let mut down = (available_all - min_available).min(max_down - cleaned);
        for (n, r, _) in olds.iter_mut() {
            if down <= 0 {
                break;
            }
            let by = (*r).min(down);
            if by > 0 {
                *r -= by;
                down -= by;
                self.scale(n, *r).await?;
            }
        }
        Ok(())
    }

    async fn recreate(&mut self, pods: &Store<Pod>) -> Result<()> {
        // Old ReplicaSets to zero, and wait until their pods are gone.
        let olds: Vec<String> = self
            .old
            .iter()
            .filter(|r| replicas(r) > 0)
            .map(|r| name(&r.metadata).to_string())
            .collect();
        for n in olds {
            self.scale(&n, 0).await?;
        }
        let old_uids: Vec<String> = self
            .old
            .iter()
            .filter_map(|r| r.metadata.uid.clone())
            .collect();
        let running = old_uids.iter().any(|u| {
            pods.by_index(owners::CONTROLLER_INDEX, u)
                .iter()
                .any(|p| !matches!(pods::phase(p), "Succeeded" | "Failed"))
        });
        if running {
            return Ok(());
        }
        if self.new.is_none() {
            self.ensure_new(self.want).await?;
        } else {
            self.ensure_new(0).await?;
        }
        let new = self.new.clone().expect("ensured");
        let n = name(&new.metadata).to_string();
        if replicas(&new) != self.want {
            self.scale(&n, self.want).await?;
        }
        Ok(())
    }

    /// Deletes old, empty ReplicaSets beyond `revisionHistoryLimit`, oldest revision first.
    async fn prune(&mut self) -> Result<()> {
        let limit = self
            .d
            .spec
            .as_ref()
            .and_then(|s| s.revision_history_limit)
            .unwrap_or(10)
            .max(0) as usize;
        let mut empty: Vec<&ReplicaSet> = self
            .old
            .iter()
            .filter(|r| {
                replicas(r) == 0 && status_replicas(r) == 0 && !owners::deleting(&r.metadata)
            })
            .collect();
        if empty.len() <= limit {
            return Ok(());
        }
        empty.sort_by_key(|r| revision(r));
        let doomed: Vec<(String, Option<String>)> = empty[..empty.len() - limit]
            .iter()
            .map(|r| (name(&r.metadata).to_string(), r.metadata.uid.clone()))
            .collect();
        for (n, uid) in doomed {
            let dp = DeleteParams {
                precondition_uid: uid,
                ..Default::default()
            };
            match self.api.delete(&n, &dp).await {
                Ok(_) => {}
                Err(e) if e.is_not_found() || e.is_conflict() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Writes `status` and decides when to look again (progress deadline, min ready).
    async fn finish(mut self) -> Result<Action> {
        let spec = self.d.spec.as_ref().expect("checked");
        let (_, unavailable) = fenceposts(self.d);
        let status_sum = |f: fn(&ReplicaSet) -> i32| self.actives().map(f).sum::<i32>();
        let total = status_sum(status_replicas);
        let ready_n = status_sum(ready);
        let available_n = status_sum(available);
        let updated = self.new.as_ref().map(status_replicas).unwrap_or(0);
        let complete = updated == self.want
            && total == self.want
            && available_n == self.want
            && self.new.as_ref().is_some_and(|n| replicas(n) == self.want);
        if complete {
            self.prune().await?;
        }
        let old = self.d.status.clone().unwrap_or_default();
        let old_conds = old.conditions.clone().unwrap_or_default();
        let find = |t: &str| old_conds.iter().find(|c| c.type_ == t).cloned();
        let now = skiff_client::time::now_time();
        let cond = |t: &str, status: &str, reason: &str, message: String| {
            let prev = find(t);
            let same = prev
                .as_ref()
                .is_some_and(|p| p.status == status && p.reason.as_deref() == Some(reason));
            let transition = prev
                .as_ref()
                .filter(|p| p.status == status)
                .and_then(|p| p.last_transition_time.clone())
                .unwrap_or_else(|| now.clone());
            DeploymentCondition {
                type_: t.into(),
                status: status.into(),
                reason: Some(reason.into()),
                message: Some(message),
                last_transition_time: Some(transition),
                last_update_time: if same {
                    prev.and_then(|p| p.last_update_time)
                } else {
                    Some(now.clone())
                },
            }
        };
        let min_available = self.want - unavailable;
        let available_cond = if available_n >= min_available {
            cond(
                "Available",
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.".into(),
            )
        } else {
            cond(
                "Available",
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.".into(),
            )
        };
        let new_name = self
            .new
            .as_ref()
            .map(|n| name(&n.metadata).to_string())
            .unwrap_or_default();
        let deadline = spec.progress_deadline_seconds.filter(|s| *s > 0);
        let prev_prog = find("Progressing");
        let progressed = updated > old.updated_replicas.unwrap_or(0)
            || ready_n > old.ready_replicas.unwrap_or(0)
            || available_n > old.available_replicas.unwrap_or(0)
            || (total < old.replicas.unwrap_or(0) && updated >= old.updated_replicas.unwrap_or(0));
        let mut wake: Option<Duration> = None;
        let progressing = if spec.paused == Some(true) {
            cond(
                "Progressing",
                "Unknown",
                "DeploymentPaused",
                "Deployment is paused".into(),
            )
        } else if prev_prog.as_ref().and_then(|p| p.reason.as_deref()) == Some("DeploymentPaused") {
            cond(
                "Progressing",
                "Unknown",
                "DeploymentResumed",
                "Deployment is resumed".into(),
            )
        } else if complete {
            cond(
                "Progressing",
                "True",
                "NewReplicaSetAvailable",
                format!("ReplicaSet \"{new_name}\" has successfully progressed."),
            )
        } else if let Some((reason, msg)) = self.progress.clone() {
            let mut c = cond("Progressing", "True", reason, msg);
            c.last_update_time = Some(now.clone());
            c
        } else if progressed || prev_prog.is_none() {
            let mut c = cond(
                "Progressing",
                "True",
                "ReplicaSetUpdated",
                format!("ReplicaSet \"{new_name}\" is progressing."),
            );
            c.last_update_time = Some(now.clone());
            c
        } else {
            let p = prev_prog.clone().expect("checked");
            let since = p
                .last_update_time
                .as_ref()
                .map(|t| t.0.as_second())
                .unwrap_or_else(|| now.0.as_second());
            match deadline {
                Some(secs) if p.reason.as_deref() != Some("ProgressDeadlineExceeded") => {
                    let left = since + i64::from(secs) - now.0.as_second();
                    if left <= 0 {
                        self.ctx.events.warning(
                            reference(self.d),
                            "ProgressDeadlineExceeded",
                            "Sync",
                            format!("ReplicaSet \"{new_name}\" has timed out progressing."),
                        );
                        cond(
                            "Progressing",
                            "False",
                            "ProgressDeadlineExceeded",
                            format!("ReplicaSet \"{new_name}\" has timed out progressing."),
                        )
                    } else {
                        wake = Some(Duration::from_secs(left as u64 + 1));
                        p
                    }
                }
                _ => p,
            }
        };
        if let (Some(secs), None, false) = (deadline, wake, complete) {
            if progressing.reason.as_deref() != Some("ProgressDeadlineExceeded")
                && spec.paused != Some(true)
            {
                wake = Some(Duration::from_secs(u64::from(secs.max(0) as u32) + 1));
            }
        }
        // Available first, then Progressing, then anything else someone else set.
        let mut conditions = vec![available_cond, progressing];
        conditions.extend(
            old_conds
                .iter()
                .filter(|c| c.type_ != "Available" && c.type_ != "Progressing")
                .cloned(),
        );
        let status = json!({
            "observedGeneration": self.d.metadata.generation.unwrap_or(0),
            "replicas": total,
            "updatedReplicas": updated,
            "readyReplicas": ready_n,
            "availableReplicas": available_n,
            "unavailableReplicas": (self.want - available_n).max(0),
            "conditions": conditions,
            "collisionCount": old.collision_count,
        });
        let mut old_v = serde_json::to_value(&old).unwrap_or_default();
        let mut new_v = status.clone();
        for v in [&mut old_v, &mut new_v] {
            if let Some(m) = v.as_object_mut() {
                m.retain(|_, x| !x.is_null() && x.as_i64() != Some(0));
            }
        }
        if old_v != new_v {
            let dapi: Api<Deployment> =
                Api::namespaced(self.ctx.client.clone(), &self.key.namespace);
            if crate::write_status(&dapi, &self.key.name, status)
                .await?
                .is_none()
            {
                return Ok(Action::Done);
            }
        }
        // Pods that are ready but not yet available for minReadySeconds change nothing the
        // controller sees: look again when they will be.
        if spec.min_ready_seconds.unwrap_or(0) > 0 && available_n < ready_n {
            let d = Duration::from_secs(spec.min_ready_seconds.unwrap_or(0) as u64 + 1);
            wake = Some(wake.map_or(d, |w| w.min(d)));
        }
        Ok(match wake {
            Some(d) => Action::RequeueAfter(d),
            None => Action::Done,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dep(v: Value) -> Deployment {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn fenceposts_round_like_kubernetes() {
        let d = |surge: Value, unav: Value, n: i32| {
            dep(
                json!({"spec": {"replicas": n, "selector": {}, "template": {},
                "strategy": {"type": "RollingUpdate",
                    "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unav}}}}),
            )
        };
        assert_eq!(fenceposts(&d(json!("25%"), json!("25%"), 10)), (3, 2));
        assert_eq!(fenceposts(&d(json!(0), json!(0), 10)), (0, 1));
        assert_eq!(fenceposts(&d(json!(2), json!("50%"), 3)), (2, 1));
        let r = dep(
            json!({"spec": {"replicas": 3, "selector": {}, "template": {},
            "strategy": {"type": "Recreate"}}}),
        );
        assert_eq!(fenceposts(&r), (0, 0));
    }

    #[test]
    fn template_hash_ignores_its_own_label_and_changes_with_collisions() {
        let t: PodTemplateSpec = serde_json::from_value(json!({
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "i"}]}}))
        .unwrap();
        let mut labelled = t.clone();
        labelled
            .metadata
            .as_mut()
            .unwrap()
            .labels
            .as_mut()
            .unwrap()
            .insert(HASH_LABEL.into(), "x".into());
        assert_eq!(template_hash(&t, None), template_hash(&labelled, None));
        assert!(same_template(&t, &labelled));
        assert_ne!(template_hash(&t, None), template_hash(&t, Some(1)));
        let h = template_hash(&t, None);
        assert!(
            h.chars().all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)),
            "{h}"
        );
        let mut other = t.clone();
        other.spec.as_mut().unwrap().containers[0].image = Some("j".into());
        assert!(!same_template(&t, &other));
        let mut with_empty = t.clone();
        with_empty.spec.as_mut().unwrap().containers[0].resources = Some(Default::default());
        assert!(same_template(&t, &with_empty));
        assert_eq!(template_hash(&t, None), template_hash(&with_empty, None));
    }
}
