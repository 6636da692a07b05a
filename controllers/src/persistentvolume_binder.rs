//! The PersistentVolume binder (kube-controller-manager's `persistentvolume-binder`): binds
//! claims to volumes and keeps both sides' phases true.
//!
//! - An unbound claim of an `Immediate` class (or of no class) gets the smallest matching
//!   Available volume ([`skiff_rules::volume::find_matching_volume`]); a volume already
//!   promised to it (its `claimRef`, or the claim's `volumeName`) wins.
//! - No match and a class whose provisioner is a driver: the claim is annotated with
//!   `volume.kubernetes.io/storage-provisioner` (and the beta annotation) so that the driver's
//!   external provisioner makes a volume for it, as Kubernetes does for CSI drivers.
//! - `WaitForFirstConsumer`: nothing happens until the scheduler picks a node
//!   (`volume.kubernetes.io/selected-node`) or promises a volume (`claimRef`/`volumeName`).
//! - Binding writes the volume's `claimRef` first (conditionally, so two claims never get one
//!   volume), then the claim's `volumeName` and `pv.kubernetes.io/bind-completed`, then both
//!   phases, the claim's capacity and access modes.
//! - A volume whose claim is gone is `Released`; `Retain` keeps it so, `Delete` removes a
//!   volume nobody provisioned (there is nothing behind it to delete) and leaves a
//!   provisioned one (`pv.kubernetes.io/provisioned-by`) to its provisioner.
//! - One sync finishes a bind, as Kubernetes' `bind` does: the volume's `claimRef`, its phase,
//!   the claim's `volumeName` and annotations, its phase, each write building on the object
//!   the previous one returned. A volume a provisioner made pre-bound to a claim keeps its
//!   phase until then (the claim's sync binds it), so nothing races the bind.
//! - Like Kubernetes' binder, which looks at every claim again each `--pvclaimbinder-sync-period`
//!   (15 s), a claim left Pending is looked at again after 15 s, and says why it waits
//!   (`WaitForFirstConsumer`, `WaitForPodScheduled`, `ExternalProvisioning`, `FailedBinding`,
//!   `ProvisioningFailed`) once per such period: the other syncs a claim sees (its own
//!   writes, volumes and classes changing) repeat no event, so `kubectl describe` counts
//!   them as Kubernetes' would (`x3 over 30s`), not once per wake-up.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use parking_lot::Mutex;
use serde_json::json;
use skiff_client::controller::{Action, Config as RunConfig, Controller, WorkQueue};
use skiff_client::events::reference;
use skiff_client::reflector::{Change, ObjectKey, Store};
use skiff_client::{Api, DeleteParams, Patch, PatchParams, PostParams};
use skiff_rules::volume::{self, claim_class, find_matching_volume};
use tokio_util::sync::CancellationToken;

use crate::Context;

/// Set on a claim once its binding is complete.
pub const BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";
/// Set on the side of a binding the controller (not a user) chose.
pub const BOUND_BY_CONTROLLER: &str = "pv.kubernetes.io/bound-by-controller";
/// The driver asked to provision a claim.
pub const STORAGE_PROVISIONER: &str = "volume.kubernetes.io/storage-provisioner";
/// The beta form of [`STORAGE_PROVISIONER`].
pub const BETA_STORAGE_PROVISIONER: &str = "volume.beta.kubernetes.io/storage-provisioner";
/// The node the scheduler chose for a claim of a `WaitForFirstConsumer` class.
pub const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
/// Who provisioned a volume.
pub const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
/// The provisioner of classes that provision nothing (statically made local volumes).
pub const NO_PROVISIONER: &str = "kubernetes.io/no-provisioner";

/// How often a Pending claim is looked at again and may repeat why it waits: Kubernetes'
/// `--pvclaimbinder-sync-period` default.
pub const SYNC_PERIOD: Duration = Duration::from_secs(15);

type Result<T, E = skiff_client::Error> = std::result::Result<T, E>;

/// The caches the binder reads, and what it last said about each claim.
#[derive(Clone)]
struct Caches {
    volumes: Store<PersistentVolume>,
    claims: Store<PersistentVolumeClaim>,
    classes: Store<StorageClass>,
    pods: Store<Pod>,
    said: Arc<Said>,
}

/// The last event said about each claim, by `namespace/name`.
#[derive(Default)]
struct Said(Mutex<HashMap<String, LastSaid>>);

/// An event said about a claim (of this UID), and when.
#[derive(PartialEq)]
struct LastSaid {
    uid: String,
    warning: bool,
    reason: String,
    message: String,
    at: Instant,
}

impl Said {
    /// Whether an event may be said now: it differs from the last one about this claim, or
    /// that one is a sync period old.
    fn may_say(&self, pvc: &PersistentVolumeClaim, warning: bool, reason: &str, msg: &str) -> bool {
        self.may_say_at(pvc, warning, reason, msg, Instant::now())
    }

    fn may_say_at(
        &self,
        pvc: &PersistentVolumeClaim,
        warning: bool,
        reason: &str,
        message: &str,
        now: Instant,
    ) -> bool {
        let said = LastSaid {
            uid: pvc.metadata.uid.clone().unwrap_or_default(),
            warning,
            reason: reason.to_string(),
            message: message.to_string(),
            at: now,
        };
        let mut map = self.0.lock();
        let key = claim_key(pvc);
        if let Some(last) = map.get(&key) {
            let same = LastSaid {
                at: last.at,
                ..said
            };
            if *last == same && now.duration_since(last.at) < SYNC_PERIOD {
                return false;
            }
            map.insert(key, LastSaid { at: now, ..same });
            return true;
        }
        map.insert(key, said);
        true
    }

    /// Forgets a claim (gone, or bound: nothing left to repeat).
    fn forget(&self, key: &str) {
        self.0.lock().remove(key);
    }
}

fn claim_key(pvc: &PersistentVolumeClaim) -> String {
    format!(
        "{}/{}",
        pvc.metadata.namespace.as_deref().unwrap_or(""),
        pvc.metadata.name.as_deref().unwrap_or("")
    )
}

impl Caches {
    /// Records an event about a claim, unless the same was said within a sync period.
    fn say(
        &self,
        ctx: &Context,
        pvc: &PersistentVolumeClaim,
        warning: bool,
        reason: &str,
        action: &str,
        message: String,
    ) {
        if !self.said.may_say(pvc, warning, reason, &message) {
            return;
        }
        if warning {
            ctx.events.warning(reference(pvc), reason, action, message);
        } else {
            ctx.events.normal(reference(pvc), reason, action, message);
        }
    }
}

/// Runs the binder until `shutdown`: one controller over claims, one over volumes, each
/// waking the other.
pub async fn run(ctx: Arc<Context>, shutdown: CancellationToken) {
    let volumes = ctx.informers.informer::<PersistentVolume>();
    let claims = ctx.informers.informer::<PersistentVolumeClaim>();
    let classes = ctx.informers.informer::<StorageClass>();
    let caches = Caches {
        volumes: volumes.store(),
        claims: claims.store(),
        classes: classes.store(),
        pods: ctx.pods().store(),
        said: Arc::default(),
    };
    let claim_ctrl = Controller::new(claims.clone(), RunConfig::default());
    let volume_ctrl = Controller::new(volumes.clone(), RunConfig::default());
    let (claim_q, volume_q) = (claim_ctrl.queue(), volume_ctrl.queue());

    // A volume's change concerns the claim it names (or that names it); a claim's change
    // concerns its volume; a class's change (one made after its claims) concerns every
    // pending claim.
    {
        let (claim_q, caches) = (claim_q.clone(), caches.clone());
        crate::spawn_each(volumes.subscribe(), shutdown.clone(), move |c| match c {
            Change::Applied(pv) | Change::Deleted(pv) => wake_claims_of(&pv, &caches, &claim_q),
            Change::Resynced => {}
        });
    }
    {
        let (volume_q, caches) = (volume_q.clone(), caches.clone());
        crate::spawn_each(claims.subscribe(), shutdown.clone(), move |c| match c {
            Change::Applied(pvc) | Change::Deleted(pvc) => {
                if let Some(v) = pvc.spec.as_ref().and_then(|s| s.volume_name.as_deref()) {
                    if !v.is_empty() {
                        volume_q.add(ObjectKey::new("", v));
                    }
                }
                // Volumes that name the claim learn that it came or went.
                for pv in caches.volumes.state() {
                    let names = claim_ref(&pv).is_some_and(|r| {
                        r.name == pvc.metadata.name && r.namespace == pvc.metadata.namespace
                    });
                    if names {
                        volume_q.add(ObjectKey::of(pv.as_ref()));
                    }
                }
            }
            Change::Resynced => {}
        });
    }
    {
        let (claim_q, caches) = (claim_q.clone(), caches.clone());
        crate::spawn_each(classes.subscribe(), shutdown.clone(), move |c| {
            if let Change::Applied(_) = c {
                for pvc in caches.claims.state() {
                    if pvc.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Bound") {
                        claim_q.add(ObjectKey::of(pvc.as_ref()));
                    }
                }
            }
        });
    }

    let claims_run = {
        let (ctx, caches, volume_q) = (ctx.clone(), caches.clone(), volume_q.clone());
        claim_ctrl.run(
            move |key, pvc| {
                let (ctx, caches, volume_q) = (ctx.clone(), caches.clone(), volume_q.clone());
                async move { sync_claim(&ctx, &caches, &volume_q, key, pvc).await }
            },
            shutdown.clone(),
        )
    };
    let volumes_run = {
        let (ctx, caches) = (ctx.clone(), caches.clone());
        volume_ctrl.run(
            move |_key, pv| {
                let (ctx, caches) = (ctx.clone(), caches.clone());
                async move { sync_volume_key(&ctx, &caches, pv).await }
            },
            shutdown,
        )
    };
    tokio::join!(claims_run, volumes_run);
}

fn wake_claims_of(pv: &PersistentVolume, caches: &Caches, claim_q: &Arc<WorkQueue<ObjectKey>>) {
    if let Some(r) = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) {
        claim_q.add(ObjectKey::new(
            r.namespace.as_deref().unwrap_or(""),
            r.name.as_deref().unwrap_or(""),
        ));
    }
    let name = pv.metadata.name.as_deref().unwrap_or("");
    let available = pv.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Available");
    for pvc in caches.claims.state() {
        let spec = pvc.spec.as_ref();
        let wants_it = spec.and_then(|s| s.volume_name.as_deref()) == Some(name);
        let unbound = spec
            .and_then(|s| s.volume_name.as_deref())
            .is_none_or(str::is_empty);
        if wants_it || (available && unbound) {
            claim_q.add(ObjectKey::of(pvc.as_ref()));
        }
    }
}

fn name_of<
    K: k8s_openapi::Metadata<Ty = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>,
>(
    o: &K,
) -> &str {
    o.metadata().name.as_deref().unwrap_or("")
}

fn annotation<'a>(ann: &'a Option<BTreeMap<String, String>>, k: &str) -> Option<&'a str> {
    ann.as_ref().and_then(|a| a.get(k)).map(String::as_str)
}

fn claim_phase(pvc: &PersistentVolumeClaim) -> &str {
    pvc.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

fn volume_phase(pv: &PersistentVolume) -> &str {
    pv.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

fn claim_ref(pv: &PersistentVolume) -> Option<&ObjectReference> {
    pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref())
}

fn volume_name(pvc: &PersistentVolumeClaim) -> &str {
    pvc.spec
        .as_ref()
        .and_then(|s| s.volume_name.as_deref())
        .unwrap_or("")
}

/// Whether the claim's class binds only once a pod uses it.
fn delays_binding(caches: &Caches, pvc: &PersistentVolumeClaim) -> bool {
    let class = claim_class(pvc);
    !class.is_empty()
        && caches
            .classes
            .get(&ObjectKey::new("", class))
            .and_then(|c| c.volume_binding_mode.clone())
            .as_deref()
            == Some("WaitForFirstConsumer")
}

async fn sync_claim(
    ctx: &Context,
    caches: &Caches,
    volume_q: &Arc<WorkQueue<ObjectKey>>,
    key: ObjectKey,
    pvc: Option<Arc<PersistentVolumeClaim>>,
) -> Result<Action> {
    let Some(pvc) = pvc else {
        caches
            .said
            .forget(&format!("{}/{}", key.namespace, key.name));
        return Ok(Action::Done);
    };
    caches.volumes.wait_until_ready().await;
    caches.classes.wait_until_ready().await;
    let completed = annotation(&pvc.metadata.annotations, BIND_COMPLETED).is_some();
    let vname = volume_name(&pvc).to_string();
    if !completed {
        let action = sync_unbound_claim(ctx, caches, &pvc, &vname).await?;
        if action == Action::Done {
            caches.said.forget(&claim_key(&pvc));
        }
        return Ok(action);
    }
    caches.said.forget(&claim_key(&pvc));
    // Bound before: the volume must still be there and still be this claim's.
    let Some(pv) = caches.volumes.get(&ObjectKey::new("", &vname)) else {
        if claim_phase(&pvc) != "Lost" {
            set_claim_status(ctx, &pvc, "Lost", None).await?;
            ctx.events.warning(
                reference(pvc.as_ref()),
                "ClaimLost",
                "Binding",
                "Bound claim has lost reference to PersistentVolume. Data on the volume is lost!"
                    .into(),
            );
        }
        return Ok(Action::Done);
    };
    match claim_ref(&pv) {
        None => {
            // The volume forgot its claim (a user edit): bind it back.
            bind(ctx, &pv, &pvc).await?;
        }
        Some(_) if volume::is_bound_to(&pv, &pvc) => {
            if claim_phase(&pvc) != "Bound" {
                set_claim_status(ctx, &pvc, "Bound", Some(&pv)).await?;
            }
            volume_q.add(ObjectKey::new("", &vname));
        }
        Some(_) => {
            if claim_phase(&pvc) != "Lost" {
                set_claim_status(ctx, &pvc, "Lost", None).await?;
                ctx.events.warning(
                    reference(pvc.as_ref()),
                    "ClaimMisbound",
                    "Binding",
                    "Two claims are bound to the same volume, this one is bound incorrectly".into(),
                );
            }
        }
    }
    Ok(Action::Done)
}

/// A claim not bound yet: bound now if a volume is there for it, else left Pending (and
/// looked at again after [`SYNC_PERIOD`]) saying why.
async fn sync_unbound_claim(
    ctx: &Context,
    caches: &Caches,
    pvc: &Arc<PersistentVolumeClaim>,
    vname: &str,
) -> Result<Action> {
    if pvc.metadata.deletion_timestamp.is_some() {
        return Ok(Action::Done);
    }
    let again = Action::RequeueAfter(SYNC_PERIOD);
    if !vname.is_empty() {
        // Promised to a volume by a user or the scheduler: bind if the volume agrees.
        let Some(pv) = caches.volumes.get(&ObjectKey::new("", vname)) else {
            pending(ctx, pvc).await?;
            return Ok(again);
        };
        match claim_ref(&pv) {
            None => bind(ctx, &pv, pvc).await?,
            Some(_) if volume::is_bound_to(&pv, pvc) => bind(ctx, &pv, pvc).await?,
            Some(_) => {
                caches.say(
                    ctx,
                    pvc,
                    true,
                    "FailedBinding",
                    "Binding",
                    format!("volume {vname:?} already bound to a different claim."),
                );
                pending(ctx, pvc).await?;
                return Ok(again);
            }
        }
        return Ok(Action::Done);
    }
    let delay = delays_binding(caches, pvc);
    let volumes = caches.volumes.state();
    let found = find_matching_volume(pvc, volumes.iter().map(|v| v.as_ref()), None, delay)
        .map(|v| Arc::new(v.clone()));
    if let Some(pv) = found {
        bind(ctx, &pv, pvc).await?;
        return Ok(Action::Done);
    }
    let selected = annotation(&pvc.metadata.annotations, SELECTED_NODE).is_some();
    let class = claim_class(pvc);
    if delay && !selected {
        let (reason, message) = match unscheduled_users(caches, pvc).as_slice() {
            [] => (
                "WaitForFirstConsumer",
                "waiting for first consumer to be created before binding".to_string(),
            ),
            [one] => (
                "WaitForPodScheduled",
                format!("waiting for pod {one} to be scheduled"),
            ),
            many => (
                "WaitForPodScheduled",
                format!("waiting for pods {} to be scheduled", many.join(",")),
            ),
        };
        caches.say(ctx, pvc, false, reason, "Binding", message);
    } else if !class.is_empty() {
        provision(ctx, caches, pvc, class).await?;
        return Ok(again);
    } else {
        caches.say(
            ctx,
            pvc,
            false,
            "FailedBinding",
            "Binding",
            "no persistent volumes available for this claim and no storage class is set".into(),
        );
    }
    pending(ctx, pvc).await?;
    Ok(again)
}

/// The pods not scheduled yet that use the claim (by name, sorted), as Kubernetes'
/// `findNonScheduledPodsByPVC` finds them: those naming it and those whose generic ephemeral
/// volume it is.
fn unscheduled_users(caches: &Caches, pvc: &PersistentVolumeClaim) -> Vec<String> {
    let ns = pvc.metadata.namespace.as_deref().unwrap_or("");
    let claim = pvc.metadata.name.as_deref().unwrap_or("");
    let mut names: Vec<String> = caches
        .pods
        .in_namespace(ns)
        .iter()
        .filter(|p| {
            p.spec
                .as_ref()
                .is_some_and(|s| s.node_name.as_deref().is_none_or(str::is_empty))
        })
        .filter(|p| {
            let pod_name = p.metadata.name.as_deref().unwrap_or("");
            p.spec
                .iter()
                .flat_map(|s| s.volumes.iter().flatten())
                .any(|v| {
                    v.persistent_volume_claim
                        .as_ref()
                        .is_some_and(|c| c.claim_name == claim)
                        || (v.ephemeral.is_some() && format!("{pod_name}-{}", v.name) == claim)
                })
        })
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    names.sort();
    names
}

/// Asks the class's provisioner for a volume, by annotating the claim.
async fn provision(
    ctx: &Context,
    caches: &Caches,
    pvc: &Arc<PersistentVolumeClaim>,
    class: &str,
) -> Result<()> {
    let Some(sc) = caches.classes.get(&ObjectKey::new("", class)) else {
        caches.say(
            ctx,
            pvc,
            true,
            "ProvisioningFailed",
            "Provisioning",
            format!("storageclass.storage.k8s.io {class:?} not found"),
        );
        return pending(ctx, pvc).await;
    };
    let provisioner = sc.provisioner.clone();
    if provisioner == NO_PROVISIONER {
        caches.say(
            ctx,
            pvc,
            true,
            "ProvisioningFailed",
            "Provisioning",
            format!("no volume plugin matched name: {provisioner}"),
        );
        return pending(ctx, pvc).await;
    }
    if annotation(&pvc.metadata.annotations, STORAGE_PROVISIONER) != Some(provisioner.as_str())
        || annotation(&pvc.metadata.annotations, BETA_STORAGE_PROVISIONER)
            != Some(provisioner.as_str())
    {
        let body = json!({"metadata": {
            "resourceVersion": pvc.metadata.resource_version,
            "annotations": {
                STORAGE_PROVISIONER: provisioner,
                BETA_STORAGE_PROVISIONER: provisioner,
            }
        }});
        if let Err(e) = claims_api(ctx, pvc)
            .patch(
                name_of(pvc.as_ref()),
                &PatchParams::default(),
                &Patch::Merge(body),
            )
            .await
        {
            // A conflict is a claim changed meanwhile: the next sync sees the new one.
            if !e.is_conflict() {
                caches.say(
                    ctx,
                    pvc,
                    true,
                    "ProvisioningFailed",
                    "Provisioning",
                    format!("Error saving claim: {e}"),
                );
            }
            return Err(e);
        }
    }
    caches.say(
        ctx,
        pvc,
        false,
        "ExternalProvisioning",
        "Provisioning",
        format!("Waiting for a volume to be created either by the external provisioner '{provisioner}' or manually by the system administrator. If volume creation is delayed, please verify that the provisioner is running and correctly registered."),
    );
    pending(ctx, pvc).await
}

fn claims_api(ctx: &Context, pvc: &PersistentVolumeClaim) -> Api<PersistentVolumeClaim> {
    Api::namespaced(
        ctx.client.clone(),
        pvc.metadata.namespace.as_deref().unwrap_or(""),
    )
}

fn volumes_api(ctx: &Context) -> Api<PersistentVolume> {
    Api::all(ctx.client.clone())
}

async fn pending(ctx: &Context, pvc: &PersistentVolumeClaim) -> Result<()> {
    if claim_phase(pvc) != "Pending" {
        set_claim_status(ctx, pvc, "Pending", None).await?;
    }
    Ok(())
}

/// Writes a claim's phase, and with a volume its capacity and access modes.
async fn set_claim_status(
    ctx: &Context,
    pvc: &PersistentVolumeClaim,
    phase: &str,
    pv: Option<&PersistentVolume>,
) -> Result<()> {
    let mut status = json!({"phase": phase});
    if let Some(spec) = pv.and_then(|p| p.spec.as_ref()) {
        status["accessModes"] = json!(spec.access_modes);
        status["capacity"] = json!(spec.capacity);
    }
    crate::write_status(&claims_api(ctx, pvc), name_of(pvc), status).await?;
    Ok(())
}

/// Writes a volume's phase and when it entered it.
async fn set_volume_phase(ctx: &Context, pv: &PersistentVolume, phase: &str) -> Result<()> {
    if volume_phase(pv) == phase {
        return Ok(());
    }
    let status = json!({"phase": phase, "lastPhaseTransitionTime": now()});
    crate::write_status(&volumes_api(ctx), name_of(pv), status).await?;
    Ok(())
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Binds `pv` and `pvc` to each other: the volume's claimRef (conditional on the cached
/// version, so a volume changed meanwhile is not taken twice), its phase, then the claim's
/// volumeName and annotations, then its status.
async fn bind(ctx: &Context, pv: &PersistentVolume, pvc: &PersistentVolumeClaim) -> Result<()> {
    let pv_name = name_of(pv).to_string();
    let mut pv = pv.clone();
    let uid_known = claim_ref(&pv)
        .and_then(|r| r.uid.as_deref())
        .is_some_and(|u| !u.is_empty());
    let wanted_ref = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("PersistentVolumeClaim".into()),
        name: pvc.metadata.name.clone(),
        namespace: pvc.metadata.namespace.clone(),
        uid: pvc.metadata.uid.clone(),
        resource_version: pvc.metadata.resource_version.clone(),
        field_path: None,
    };
    if !uid_known {
        let by_controller = claim_ref(&pv).is_none();
        let spec = pv.spec.get_or_insert_with(Default::default);
        spec.claim_ref = Some(wanted_ref);
        if by_controller {
            pv.metadata
                .annotations
                .get_or_insert_with(Default::default)
                .insert(BOUND_BY_CONTROLLER.into(), "yes".into());
        }
        pv = volumes_api(ctx)
            .replace(&pv_name, &PostParams::default(), &pv)
            .await?;
    }
    set_volume_phase(ctx, &pv, "Bound").await?;

    let completed = annotation(&pvc.metadata.annotations, BIND_COMPLETED).is_some();
    let named = volume_name(pvc) == pv_name;
    if !completed || !named {
        let mut ann = serde_json::Map::new();
        ann.insert(BIND_COMPLETED.into(), json!("yes"));
        if !named {
            ann.insert(BOUND_BY_CONTROLLER.into(), json!("yes"));
        }
        let body = json!({"metadata": {"resourceVersion": pvc.metadata.resource_version,
            "annotations": ann}, "spec": {"volumeName": pv_name}});
        claims_api(ctx, pvc)
            .patch(name_of(pvc), &PatchParams::default(), &Patch::Merge(body))
            .await?;
    }
    set_claim_status(ctx, pvc, "Bound", Some(&pv)).await?;
    Ok(())
}

async fn sync_volume_key(
    ctx: &Context,
    caches: &Caches,
    pv: Option<Arc<PersistentVolume>>,
) -> Result<Action> {
    let Some(pv) = pv else {
        return Ok(Action::Done);
    };
    caches.claims.wait_until_ready().await;
    sync_volume(ctx, caches, &pv).await?;
    Ok(Action::Done)
}

async fn sync_volume(ctx: &Context, caches: &Caches, pv: &PersistentVolume) -> Result<()> {
    let Some(r) = claim_ref(pv) else {
        return set_volume_phase(ctx, pv, "Available").await;
    };
    let ns = r.namespace.as_deref().unwrap_or("");
    let cname = r.name.as_deref().unwrap_or("");
    let uid = r.uid.as_deref().unwrap_or("");
    let mut claim = caches.claims.get(&ObjectKey::new(ns, cname));
    if claim.is_none() && !uid.is_empty() {
        // Not in the cache: perhaps just made. Ask the API server before releasing.
        let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), ns);
        claim = api.get_opt(cname).await?.map(Arc::new);
    }
    let claim = claim.filter(|c| uid.is_empty() || c.metadata.uid.as_deref() == Some(uid));
    let Some(claim) = claim else {
        if uid.is_empty() {
            // Promised by a user to a claim that does not exist yet.
            return set_volume_phase(ctx, pv, "Available").await;
        }
        return release(ctx, pv).await;
    };
    let bound_to = volume_name(&claim);
    let pv_name = name_of(pv);
    if bound_to.is_empty() {
        // The claim has not taken it yet; the claim's sync will (woken by this volume's
        // change). A volume promised to that very claim (its UID: a provisioner's, the
        // scheduler's) keeps its phase until then, so that no write races the bind; one
        // promised by name only is Available to it, as in Kubernetes.
        if uid.is_empty() && matches!(volume_phase(pv), "Pending" | "") {
            return set_volume_phase(ctx, pv, "Available").await;
        }
        return Ok(());
    }
    if bound_to == pv_name {
        return set_volume_phase(ctx, pv, "Bound").await;
    }
    // The claim took another volume: this one is free again.
    let mut pv = pv.clone();
    let by_controller = annotation(&pv.metadata.annotations, BOUND_BY_CONTROLLER).is_some();
    if let Some(spec) = pv.spec.as_mut() {
        if by_controller {
            spec.claim_ref = None;
        } else if let Some(r) = spec.claim_ref.as_mut() {
            r.uid = None;
        }
    }
    if let Some(a) = pv.metadata.annotations.as_mut() {
        a.remove(BOUND_BY_CONTROLLER);
    }
    let pv = volumes_api(ctx)
        .replace(pv_name, &PostParams::default(), &pv)
        .await?;
    set_volume_phase(ctx, &pv, "Available").await
}

/// The claim of a volume is gone: the volume is Released and its reclaim policy applies.
async fn release(ctx: &Context, pv: &PersistentVolume) -> Result<()> {
    if !matches!(volume_phase(pv), "Released" | "Failed") {
        set_volume_phase(ctx, pv, "Released").await?;
    }
    let policy = pv
        .spec
        .as_ref()
        .and_then(|s| s.persistent_volume_reclaim_policy.as_deref())
        .unwrap_or("Retain");
    match policy {
        "Delete" => {
            if let Some(p) = annotation(&pv.metadata.annotations, PROVISIONED_BY) {
                // The provisioner that made it deletes it (and then the object).
                tracing::debug!(
                    volume = name_of(pv),
                    provisioner = p,
                    "left to its provisioner"
                );
                return Ok(());
            }
            if pv.metadata.deletion_timestamp.is_none() {
                match volumes_api(ctx)
                    .delete(name_of(pv), &DeleteParams::default())
                    .await
                {
                    Ok(_) => {}
                    Err(e) if e.is_not_found() => {}
                    Err(e) => return Err(e),
                }
            }
        }
        "Recycle" if volume_phase(pv) != "Failed" => {
            set_volume_phase(ctx, pv, "Failed").await?;
            ctx.events.warning(
                reference(pv),
                "VolumeFailedRecycle",
                "Recycling",
                "No recycler plugin found for the volume!".into(),
            );
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(uid: &str) -> PersistentVolumeClaim {
        serde_json::from_value(json!({"metadata": {"name": "data", "namespace": "ns", "uid": uid}}))
            .unwrap()
    }

    #[test]
    fn the_same_event_is_said_once_per_sync_period() {
        let said = Said::default();
        let (c, t0) = (claim("u1"), Instant::now());
        let msg = "waiting for first consumer to be created before binding";
        assert!(said.may_say_at(&c, false, "WaitForFirstConsumer", msg, t0));
        // Every other look within the period says nothing.
        for s in 1..15 {
            let at = t0 + Duration::from_secs(s);
            assert!(!said.may_say_at(&c, false, "WaitForFirstConsumer", msg, at));
        }
        // A period later it is said again, as Kubernetes' periodic sync says it.
        let t1 = t0 + SYNC_PERIOD;
        assert!(said.may_say_at(&c, false, "WaitForFirstConsumer", msg, t1));
        assert!(!said.may_say_at(&c, false, "WaitForFirstConsumer", msg, t1));
        // Something new is said at once; so is the old thing after it.
        let t2 = t1 + Duration::from_secs(1);
        let other = "waiting for pod web-0 to be scheduled";
        assert!(said.may_say_at(&c, false, "WaitForPodScheduled", other, t2));
        assert!(said.may_say_at(&c, false, "WaitForFirstConsumer", msg, t2));
        // Another claim of the same name (made anew) starts afresh, as does a forgotten one.
        assert!(said.may_say_at(&claim("u2"), false, "WaitForFirstConsumer", msg, t2));
        said.forget("ns/data");
        assert!(said.may_say_at(&claim("u2"), false, "WaitForFirstConsumer", msg, t2));
    }
}
