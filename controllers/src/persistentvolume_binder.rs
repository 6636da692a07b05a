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

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
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

type Result<T, E = skiff_client::Error> = std::result::Result<T, E>;

/// The caches the binder reads.
#[derive(Clone)]
struct Caches {
    volumes: Store<PersistentVolume>,
    claims: Store<PersistentVolumeClaim>,
    classes: Store<StorageClass>,
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
    _key: ObjectKey,
    pvc: Option<Arc<PersistentVolumeClaim>>,
) -> Result<Action> {
    let Some(pvc) = pvc else {
        return Ok(Action::Done);
    };
    caches.volumes.wait_until_ready().await;
    caches.classes.wait_until_ready().await;
    let completed = annotation(&pvc.metadata.annotations, BIND_COMPLETED).is_some();
    let vname = volume_name(&pvc).to_string();
    if !completed {
        return sync_unbound_claim(ctx, caches, &pvc, &vname).await;
    }
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

async fn sync_unbound_claim(
    ctx: &Context,
    caches: &Caches,
    pvc: &Arc<PersistentVolumeClaim>,
    vname: &str,
) -> Result<Action> {
    if pvc.metadata.deletion_timestamp.is_some() {
        return Ok(Action::Done);
    }
    if !vname.is_empty() {
        // Promised to a volume by a user or the scheduler: bind if the volume agrees.
        let Some(pv) = caches.volumes.get(&ObjectKey::new("", vname)) else {
            pending(ctx, pvc).await?;
            return Ok(Action::Done);
        };
        match claim_ref(&pv) {
            None => bind(ctx, &pv, pvc).await?,
            Some(_) if volume::is_bound_to(&pv, pvc) => bind(ctx, &pv, pvc).await?,
            Some(_) => {
                ctx.events.warning(
                    reference(pvc.as_ref()),
                    "FailedBinding",
                    "Binding",
                    format!("volume {vname:?} already bound to a different claim."),
                );
                pending(ctx, pvc).await?;
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
        ctx.events.normal(
            reference(pvc.as_ref()),
            "WaitForFirstConsumer",
            "Binding",
            "waiting for first consumer to be created before binding".into(),
        );
    } else if !class.is_empty() {
        provision(ctx, caches, pvc, class).await?;
        return Ok(Action::Done);
    } else {
        ctx.events.normal(
            reference(pvc.as_ref()),
            "FailedBinding",
            "Binding",
            "no persistent volumes available for this claim and no storage class is set".into(),
        );
    }
    pending(ctx, pvc).await?;
    Ok(Action::Done)
}

/// Asks the class's provisioner for a volume, by annotating the claim.
async fn provision(
    ctx: &Context,
    caches: &Caches,
    pvc: &Arc<PersistentVolumeClaim>,
    class: &str,
) -> Result<()> {
    let Some(sc) = caches.classes.get(&ObjectKey::new("", class)) else {
        ctx.events.warning(
            reference(pvc.as_ref()),
            "ProvisioningFailed",
            "Provisioning",
            format!("storageclass.storage.k8s.io {class:?} not found"),
        );
        return pending(ctx, pvc).await;
    };
    let provisioner = sc.provisioner.clone();
    if provisioner == NO_PROVISIONER {
        ctx.events.warning(
            reference(pvc.as_ref()),
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
        claims_api(ctx, pvc)
            .patch(
                name_of(pvc.as_ref()),
                &PatchParams::default(),
                &Patch::Merge(body),
            )
            .await?;
    }
    ctx.events.normal(
        reference(pvc.as_ref()),
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
        // The claim has not taken it yet; the claim's sync will.
        if volume_phase(pv) == "Pending" || volume_phase(pv).is_empty() {
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
