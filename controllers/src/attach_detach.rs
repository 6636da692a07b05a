//! The attach/detach controller (`attachdetach`): CSI volumes that need attaching get a
//! `VolumeAttachment` for each node that has a pod using them, and lose it when no pod there
//! needs them any more, as kube-controller-manager's attach/detach controller does with its CSI
//! plugin. The driver's external attacher does the attaching itself (`ControllerPublishVolume`)
//! and reports it in the attachment's status; the kubelet waits for that before mounting.
//!
//! One reconcile per node, level-triggered:
//!
//! 1. What the node's pods need: every claim of a pod bound to the node and not terminated,
//!    bound to a PersistentVolume with a `csi` source whose driver requires attaching (its
//!    CSIDriver says `attachRequired: true`, or there is no CSIDriver).
//! 2. A missing attachment is created, named `csi-<sha256(handle + driver + node)>`, with
//!    `spec.attacher` the driver and `spec.source.persistentVolumeName`.
//! 3. An attached one is listed in `node.status.volumesAttached` (as
//!    `kubernetes.io/csi/DRIVER^HANDLE`) and its pods get `SuccessfulAttachVolume`; one whose
//!    attacher reports an error, or that is not attached after two minutes, gets
//!    `FailedAttachVolume` on them.
//! 4. An attachment no pod needs is detached — dropped from `volumesAttached`, then deleted —
//!    once the kubelet no longer reports the volume in `node.status.volumesInUse`, or after six
//!    minutes (Kubernetes' `maxWaitForUnmountDuration`) if it keeps reporting it.
//!
//! Only attachments the controller would have made itself (the name matches the volume, the
//! driver and the node) are ever deleted: hand-made ones are left alone.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    Node, ObjectReference, PersistentVolume, PersistentVolumeClaim, Pod,
};
use k8s_openapi::api::storage::v1::{
    CSIDriver, VolumeAttachment, VolumeAttachmentSource, VolumeAttachmentSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::json;
use skiff_client::controller::{Action, Config as RunConfig, Controller};
use skiff_client::events::{reference, Recorder};
use skiff_client::reflector::{Change, ObjectKey, Store};
use skiff_client::{Api, PostParams};
use skiff_rules::attach::{attach_required, attachment_name, unique_volume_name};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::Context;

/// How long a volume the kubelet still reports in use is kept attached after its last pod
/// went (Kubernetes' `maxWaitForUnmountDuration`).
pub const MAX_WAIT_FOR_UNMOUNT: Duration = Duration::from_secs(6 * 60);
/// How long an attacher may take before the pods are told (Kubernetes' CSI attach timeout).
pub const ATTACH_TIMEOUT: Duration = Duration::from_secs(2 * 60);
/// How often an unchanged attach error is told again.
const REPEAT_ERROR: Duration = Duration::from_secs(30);
/// How soon to look again while something is under way that no watch event may announce.
const POLL: Duration = Duration::from_secs(5);

/// A CSI volume the pods of a node need attached there.
#[derive(Debug, Clone, PartialEq)]
pub struct Wanted {
    /// `kubernetes.io/csi/DRIVER^HANDLE`.
    pub unique: String,
    /// The driver.
    pub driver: String,
    /// The volume handle.
    pub handle: String,
    /// The PersistentVolume.
    pub pv: String,
    /// The pods that use it, for events.
    pub pods: Vec<ObjectReference>,
}

/// Whether a pod no longer needs its volumes: finished, or being deleted with no container
/// running (Kubernetes' `IsPodTerminated`).
pub fn terminated(pod: &Pod) -> bool {
    let status = pod.status.as_ref();
    if matches!(
        status.and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    ) {
        return true;
    }
    pod.metadata.deletion_timestamp.is_some()
        && status
            .and_then(|s| s.container_statuses.as_ref())
            .into_iter()
            .flatten()
            .all(|c| c.state.as_ref().is_none_or(|st| st.running.is_none()))
}

/// The claims a pod names: its `persistentVolumeClaim` volumes, and the `POD-VOLUME` claims of
/// its `ephemeral` ones.
fn claim_names(pod: &Pod) -> Vec<String> {
    let pod_name = pod.metadata.name.as_deref().unwrap_or("");
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter_map(|v| {
            if let Some(c) = &v.persistent_volume_claim {
                Some(c.claim_name.clone())
            } else {
                v.ephemeral
                    .as_ref()
                    .map(|_| format!("{pod_name}-{}", v.name))
            }
        })
        .collect()
}

/// What the pods on `node` need attached, by unique volume name. `claim`, `volume` and
/// `driver` look objects up (in caches).
pub fn wanted(
    node: &str,
    pods: &[Arc<Pod>],
    claim: impl Fn(&str, &str) -> Option<Arc<PersistentVolumeClaim>>,
    volume: impl Fn(&str) -> Option<Arc<PersistentVolume>>,
    driver: impl Fn(&str) -> Option<Arc<CSIDriver>>,
) -> BTreeMap<String, Wanted> {
    let mut out: BTreeMap<String, Wanted> = BTreeMap::new();
    for pod in pods {
        if pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) != Some(node) || terminated(pod) {
            continue;
        }
        let ns = pod.metadata.namespace.as_deref().unwrap_or("");
        for name in claim_names(pod) {
            let Some(pvc) = claim(ns, &name) else {
                continue;
            };
            if pvc.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Bound") {
                continue;
            }
            let Some(pv_name) = pvc.spec.as_ref().and_then(|s| s.volume_name.clone()) else {
                continue;
            };
            let Some(pv) = volume(&pv_name) else { continue };
            let Some(csi) = pv.spec.as_ref().and_then(|s| s.csi.as_ref()) else {
                continue;
            };
            if !attach_required(driver(&csi.driver).as_deref()) {
                continue;
            }
            let unique = unique_volume_name(&csi.driver, &csi.volume_handle);
            let w = out.entry(unique.clone()).or_insert_with(|| Wanted {
                unique,
                driver: csi.driver.clone(),
                handle: csi.volume_handle.clone(),
                pv: pv_name.clone(),
                pods: Vec::new(),
            });
            let r = reference(pod.as_ref());
            if !w.pods.contains(&r) {
                w.pods.push(r);
            }
        }
    }
    out
}

/// A VolumeAttachment of the node that the controller manages.
#[derive(Debug, Clone, PartialEq)]
pub struct Managed {
    /// Its name.
    pub name: String,
    /// The volume's unique name.
    pub unique: String,
    /// `status.attached`.
    pub attached: bool,
    /// Being deleted.
    pub deleting: bool,
    /// `status.attachError.message`.
    pub error: Option<String>,
    /// How long ago it was created.
    pub age: Duration,
}

/// The attachments of `node` the controller would have made itself: of a PersistentVolume
/// with a CSI source, named after that volume, its driver and the node.
pub fn managed(
    node: &str,
    attachments: &[Arc<VolumeAttachment>],
    volume: impl Fn(&str) -> Option<Arc<PersistentVolume>>,
) -> Vec<Managed> {
    let now = skiff_client::time::now().as_second();
    attachments
        .iter()
        .filter(|va| va.spec.node_name == node)
        .filter_map(|va| {
            let pv = volume(va.spec.source.persistent_volume_name.as_deref()?)?;
            let csi = pv.spec.as_ref()?.csi.as_ref()?;
            let name = va.metadata.name.clone()?;
            if name != attachment_name(&csi.volume_handle, &csi.driver, node) {
                return None;
            }
            let status = va.status.as_ref();
            let age = va
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| Duration::from_secs(u64::try_from(now - t.0.as_second()).unwrap_or(0)))
                .unwrap_or_default();
            Some(Managed {
                name,
                unique: unique_volume_name(&csi.driver, &csi.volume_handle),
                attached: status.is_some_and(|s| s.attached),
                deleting: va.metadata.deletion_timestamp.is_some(),
                error: status
                    .and_then(|s| s.attach_error.as_ref())
                    .and_then(|e| e.message.clone()),
                age,
            })
        })
        .collect()
}

/// What one reconcile of a node does.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Attachments to create.
    pub create: Vec<Wanted>,
    /// Attachments to delete (by name), after `report` is written.
    pub detach: Vec<String>,
    /// `node.status.volumesAttached`, by unique name, sorted.
    pub report: Vec<String>,
    /// Volumes newly attached (for `SuccessfulAttachVolume`).
    pub attached: Vec<Wanted>,
    /// Volumes whose attaching failed, with why (for `FailedAttachVolume`).
    pub failed: Vec<(Wanted, String)>,
    /// When to look again, if something is under way.
    pub again: Option<Duration>,
}

/// Decides what to do on a node. `reported` is its current `volumesAttached`, `in_use` its
/// `volumesInUse`; `unmount_waits` remembers since when each volume no pod needs has been
/// waiting for the kubelet to let go of it (updated here).
pub fn plan(
    wanted: &BTreeMap<String, Wanted>,
    managed: &[Managed],
    reported: &BTreeSet<String>,
    in_use: &BTreeSet<String>,
    unmount_waits: &mut HashMap<String, Instant>,
    now: Instant,
) -> Plan {
    let mut p = Plan::default();
    let soon = |p: &mut Plan, d: Duration| {
        p.again = Some(p.again.map_or(d, |a| a.min(d)));
    };
    let by_unique: HashMap<&str, &Managed> =
        managed.iter().map(|m| (m.unique.as_str(), m)).collect();
    let mut report = BTreeSet::new();
    for (unique, w) in wanted {
        unmount_waits.remove(unique);
        match by_unique.get(unique.as_str()) {
            None => {
                p.create.push(w.clone());
                soon(&mut p, POLL);
            }
            // Detached under the pods (by hand): made again once it is gone.
            Some(m) if m.deleting => soon(&mut p, POLL),
            Some(m) if m.attached => {
                report.insert(unique.clone());
                if !reported.contains(unique) {
                    p.attached.push(w.clone());
                }
            }
            Some(m) => {
                if let Some(e) = &m.error {
                    p.failed.push((w.clone(), e.clone()));
                } else if m.age >= ATTACH_TIMEOUT {
                    p.failed.push((
                        w.clone(),
                        format!(
                            "timed out waiting for external-attacher of {} CSI driver to attach volume {}",
                            w.driver, w.handle
                        ),
                    ));
                }
                soon(&mut p, POLL);
            }
        }
    }
    for m in managed {
        if wanted.contains_key(&m.unique) || m.deleting {
            continue;
        }
        if in_use.contains(&m.unique) {
            let since = *unmount_waits.entry(m.unique.clone()).or_insert(now);
            let waited = now.saturating_duration_since(since);
            if waited < MAX_WAIT_FOR_UNMOUNT {
                if m.attached {
                    report.insert(m.unique.clone());
                }
                soon(
                    &mut p,
                    (MAX_WAIT_FOR_UNMOUNT - waited).min(Duration::from_secs(30)),
                );
                continue;
            }
            tracing::warn!(attachment = %m.name, "the kubelet still reports the volume in use after {MAX_WAIT_FOR_UNMOUNT:?}: detaching it anyway");
        }
        unmount_waits.remove(&m.unique);
        p.detach.push(m.name.clone());
    }
    p.report = report.into_iter().collect();
    p
}

/// The controller's memory between reconciles.
#[derive(Default)]
struct Memory {
    /// Per node, since when each unneeded volume has waited for the kubelet.
    unmount_waits: HashMap<String, HashMap<String, Instant>>,
    /// Per (node, unique name), the last attach error told and when.
    told: HashMap<(String, String), (String, Instant)>,
}

/// Runs the controller until `shutdown`.
pub async fn run(ctx: Arc<Context>, shutdown: CancellationToken) {
    let nodes = ctx.informers.informer::<Node>();
    let pods = ctx.pods();
    let claims = ctx.informers.informer::<PersistentVolumeClaim>();
    let volumes = ctx.informers.informer::<PersistentVolume>();
    let drivers = ctx.informers.informer::<CSIDriver>();
    let attachments = ctx.informers.informer::<VolumeAttachment>();
    let ctrl = Controller::new(nodes.clone(), RunConfig::default());
    let node_key = |n: &str| ObjectKey::new("", n);
    {
        let queue = ctrl.queue();
        crate::spawn_each(pods.subscribe(), shutdown.clone(), move |c| {
            if let Change::Applied(p) | Change::Deleted(p) = c {
                if claim_names(&p).is_empty() {
                    return;
                }
                if let Some(n) = p.spec.as_ref().and_then(|s| s.node_name.as_deref()) {
                    queue.add(node_key(n));
                }
            }
        });
    }
    {
        let queue = ctrl.queue();
        crate::spawn_each(attachments.subscribe(), shutdown.clone(), move |c| {
            if let Change::Applied(a) | Change::Deleted(a) = c {
                queue.add(node_key(&a.spec.node_name));
            }
        });
    }
    {
        // A claim bound (or a volume changed) may complete what a pod needs.
        let (queue, pod_store) = (ctrl.queue(), pods.store());
        crate::spawn_each(claims.subscribe(), shutdown.clone(), move |c| {
            if let Change::Applied(pvc) = c {
                let ns = pvc.metadata.namespace.as_deref().unwrap_or("");
                let name = pvc.metadata.name.as_deref().unwrap_or("");
                for p in pod_store.in_namespace(ns) {
                    if claim_names(&p).iter().any(|c| c == name) {
                        if let Some(n) = p.spec.as_ref().and_then(|s| s.node_name.as_deref()) {
                            queue.add(node_key(n));
                        }
                    }
                }
            }
        });
    }
    {
        let (queue, node_store) = (ctrl.queue(), nodes.store());
        crate::spawn_each(drivers.subscribe(), shutdown.clone(), move |c| {
            if !matches!(c, Change::Resynced) {
                for k in node_store.keys() {
                    queue.add(k);
                }
            }
        });
    }
    let events = Recorder::new(
        ctx.client.clone(),
        "attachdetach-controller",
        &skiff_client::leader::default_identity(),
    );
    let state = Arc::new(Shared {
        ctx: ctx.clone(),
        pods: pods.store(),
        claims: claims.store(),
        volumes: volumes.store(),
        drivers: drivers.store(),
        attachments: attachments.store(),
        events,
        memory: parking_lot::Mutex::new(Memory::default()),
    });
    ctrl.run(
        move |key, node| {
            let state = state.clone();
            async move { state.reconcile(&key.name, node.as_deref()).await }
        },
        shutdown,
    )
    .await;
}

struct Shared {
    ctx: Arc<Context>,
    pods: Store<Pod>,
    claims: Store<PersistentVolumeClaim>,
    volumes: Store<PersistentVolume>,
    drivers: Store<CSIDriver>,
    attachments: Store<VolumeAttachment>,
    events: Recorder,
    memory: parking_lot::Mutex<Memory>,
}

impl Shared {
    async fn reconcile(
        &self,
        node_name: &str,
        node: Option<&Node>,
    ) -> Result<Action, skiff_client::Error> {
        self.pods.wait_until_ready().await;
        self.claims.wait_until_ready().await;
        self.volumes.wait_until_ready().await;
        self.drivers.wait_until_ready().await;
        self.attachments.wait_until_ready().await;
        let pods = if node.is_some() {
            self.pods.state()
        } else {
            Vec::new()
        };
        let wanted = wanted(
            node_name,
            &pods,
            |ns, n| self.claims.get(&ObjectKey::new(ns, n)),
            |n| self.volumes.get(&ObjectKey::new("", n)),
            |n| self.drivers.get(&ObjectKey::new("", n)),
        );
        let managed = managed(node_name, &self.attachments.state(), |n| {
            self.volumes.get(&ObjectKey::new("", n))
        });
        let status = node.and_then(|n| n.status.as_ref());
        let reported: BTreeSet<String> = status
            .and_then(|s| s.volumes_attached.as_ref())
            .into_iter()
            .flatten()
            .map(|v| v.name.clone())
            .collect();
        let in_use: BTreeSet<String> = status
            .and_then(|s| s.volumes_in_use.clone())
            .unwrap_or_default()
            .into_iter()
            .collect();
        let plan = {
            let mut memory = self.memory.lock();
            let waits = memory
                .unmount_waits
                .entry(node_name.to_string())
                .or_default();
            let plan = plan(&wanted, &managed, &reported, &in_use, waits, Instant::now());
            if waits.is_empty() {
                memory.unmount_waits.remove(node_name);
            }
            plan
        };
        let api: Api<VolumeAttachment> = Api::all(self.ctx.client.clone());
        for w in &plan.create {
            let va = VolumeAttachment {
                metadata: ObjectMeta {
                    name: Some(attachment_name(&w.handle, &w.driver, node_name)),
                    ..Default::default()
                },
                spec: VolumeAttachmentSpec {
                    attacher: w.driver.clone(),
                    node_name: node_name.to_string(),
                    source: VolumeAttachmentSource {
                        persistent_volume_name: Some(w.pv.clone()),
                        inline_volume_spec: None,
                    },
                },
                status: None,
            };
            match api.create(&PostParams::default(), &va).await {
                Ok(_) => {
                    tracing::info!(node = node_name, volume = %w.unique, "attaching");
                }
                Err(e) if e.is_already_exists() => {}
                Err(e) => {
                    self.tell_failed(node_name, w, &e.to_string());
                    return Err(e);
                }
            }
        }
        if node.is_some() && plan.report != reported.iter().cloned().collect::<Vec<_>>() {
            let list: Vec<_> = plan
                .report
                .iter()
                .map(|u| json!({"name": u, "devicePath": ""}))
                .collect();
            let value = if list.is_empty() {
                serde_json::Value::Null
            } else {
                serde_json::Value::Array(list)
            };
            let nodes: Api<Node> = Api::all(self.ctx.client.clone());
            crate::write_status(&nodes, node_name, json!({ "volumesAttached": value })).await?;
        }
        for w in &plan.attached {
            self.memory
                .lock()
                .told
                .remove(&(node_name.to_string(), w.unique.clone()));
            for pod in &w.pods {
                self.events.normal(
                    pod.clone(),
                    "SuccessfulAttachVolume",
                    "Attach",
                    format!("AttachVolume.Attach succeeded for volume {:?} ", w.pv),
                );
            }
        }
        for (w, why) in &plan.failed {
            self.tell_failed(node_name, w, why);
        }
        for name in &plan.detach {
            match api.delete(name, &Default::default()).await {
                Ok(_) => tracing::info!(node = node_name, attachment = %name, "detaching"),
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        {
            let mut memory = self.memory.lock();
            memory
                .told
                .retain(|(n, u), _| n != node_name || wanted.contains_key(u));
        }
        Ok(match plan.again {
            Some(d) => Action::RequeueAfter(d),
            None => Action::Done,
        })
    }

    /// `FailedAttachVolume` on the volume's pods, unless the same was told just now.
    fn tell_failed(&self, node: &str, w: &Wanted, why: &str) {
        let key = (node.to_string(), w.unique.clone());
        {
            let mut memory = self.memory.lock();
            if let Some((last, at)) = memory.told.get(&key) {
                if last == why && at.elapsed() < REPEAT_ERROR {
                    return;
                }
            }
            memory.told.insert(key, (why.to_string(), Instant::now()));
        }
        for pod in &w.pods {
            self.events.warning(
                pod.clone(),
                "FailedAttachVolume",
                "Attach",
                format!("AttachVolume.Attach failed for volume {:?} : {why}", w.pv),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, node: &str, claim: &str) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
                "spec": {"nodeName": node, "containers": [],
                    "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": claim}}]},
                "status": {"phase": "Running"}
            }))
            .unwrap(),
        )
    }

    fn claim(name: &str, pv: &str, bound: bool) -> Arc<PersistentVolumeClaim> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "default"},
                "spec": {"volumeName": pv},
                "status": {"phase": if bound { "Bound" } else { "Pending" }}
            }))
            .unwrap(),
        )
    }

    fn volume(name: &str, driver: &str, handle: &str) -> Arc<PersistentVolume> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name},
                "spec": {"csi": {"driver": driver, "volumeHandle": handle}}
            }))
            .unwrap(),
        )
    }

    fn csidriver(name: &str, attach: bool) -> Arc<CSIDriver> {
        Arc::new(
            serde_json::from_value(json!({"metadata": {"name": name},
                "spec": {"attachRequired": attach}}))
            .unwrap(),
        )
    }

    fn world(pods: &[Arc<Pod>]) -> BTreeMap<String, Wanted> {
        let claims: HashMap<&str, Arc<PersistentVolumeClaim>> = [
            ("a", claim("a", "pv-a", true)),
            ("b", claim("b", "pv-b", true)),
            ("c", claim("c", "pv-c", true)),
            ("pending", claim("pending", "pv-a", false)),
        ]
        .into_iter()
        .collect();
        let volumes: HashMap<&str, Arc<PersistentVolume>> = [
            ("pv-a", volume("pv-a", "block.example.com", "vol-a")),
            ("pv-b", volume("pv-b", "local.csi.skiff.dev", "vol-b")),
            ("pv-c", volume("pv-c", "unknown.example.com", "vol-c")),
        ]
        .into_iter()
        .collect();
        let drivers: HashMap<&str, Arc<CSIDriver>> = [
            ("block.example.com", csidriver("block.example.com", true)),
            (
                "local.csi.skiff.dev",
                csidriver("local.csi.skiff.dev", false),
            ),
        ]
        .into_iter()
        .collect();
        wanted(
            "n1",
            pods,
            |_, n| claims.get(n).cloned(),
            |n| volumes.get(n).cloned(),
            |n| drivers.get(n).cloned(),
        )
    }

    #[test]
    fn only_bound_csi_volumes_needing_attach_on_this_node_are_wanted() {
        let w = world(&[
            pod("p1", "n1", "a"),
            pod("p2", "n1", "a"),
            pod("p3", "n1", "b"),
            pod("p4", "n1", "c"),
            pod("p5", "n2", "a"),
            pod("p6", "n1", "pending"),
            pod("p7", "n1", "missing"),
        ]);
        let keys: Vec<&str> = w.keys().map(String::as_str).collect();
        // attachRequired: false is left out; no CSIDriver at all means attach.
        assert_eq!(
            keys,
            [
                "kubernetes.io/csi/block.example.com^vol-a",
                "kubernetes.io/csi/unknown.example.com^vol-c"
            ]
        );
        let a = &w["kubernetes.io/csi/block.example.com^vol-a"];
        assert_eq!(a.pv, "pv-a");
        let pods: Vec<_> = a.pods.iter().map(|p| p.name.clone().unwrap()).collect();
        assert_eq!(pods, ["p1", "p2"]);
    }

    #[test]
    fn finished_and_deleted_pods_need_nothing() {
        let mut done = (*pod("p1", "n1", "a")).clone();
        done.status.as_mut().unwrap().phase = Some("Succeeded".into());
        assert!(terminated(&done));
        let mut deleting: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p2", "deletionTimestamp": "2024-01-01T00:00:00Z"},
            "spec": {"containers": []},
            "status": {"phase": "Running", "containerStatuses": [{"name": "c", "image": "i",
                "imageID": "", "ready": true, "restartCount": 0, "state": {"running": {}}}]}
        }))
        .unwrap();
        assert!(!terminated(&deleting), "a container still runs");
        deleting
            .status
            .as_mut()
            .unwrap()
            .container_statuses
            .as_mut()
            .unwrap()[0]
            .state = Some(Default::default());
        assert!(terminated(&deleting));
        assert!(world(&[Arc::new(done)]).is_empty());
    }

    fn m(unique: &str, attached: bool) -> Managed {
        Managed {
            name: format!("va-{unique}"),
            unique: unique.into(),
            attached,
            deleting: false,
            error: None,
            age: Duration::ZERO,
        }
    }

    fn want(unique: &str) -> Wanted {
        Wanted {
            unique: unique.into(),
            driver: "d".into(),
            handle: "h".into(),
            pv: "pv".into(),
            pods: vec![],
        }
    }

    #[test]
    fn missing_attachments_are_made_and_attached_ones_reported_once() {
        let wanted: BTreeMap<_, _> = [("u1".to_string(), want("u1"))].into_iter().collect();
        let mut waits = HashMap::new();
        let now = Instant::now();
        let none = BTreeSet::new();
        let p = plan(&wanted, &[], &none, &none, &mut waits, now);
        assert_eq!(p.create, vec![want("u1")]);
        assert!(p.report.is_empty());
        assert!(p.again.is_some());

        let p = plan(&wanted, &[m("u1", false)], &none, &none, &mut waits, now);
        assert!(p.create.is_empty() && p.attached.is_empty() && p.failed.is_empty());

        let p = plan(&wanted, &[m("u1", true)], &none, &none, &mut waits, now);
        assert_eq!(p.report, ["u1"]);
        assert_eq!(p.attached, vec![want("u1")]);
        assert_eq!(p.again, None);
        let reported: BTreeSet<String> = ["u1".to_string()].into();
        let p = plan(&wanted, &[m("u1", true)], &reported, &none, &mut waits, now);
        assert!(p.attached.is_empty(), "told once");
    }

    #[test]
    fn attach_errors_and_timeouts_are_failures() {
        let wanted: BTreeMap<_, _> = [("u1".to_string(), want("u1"))].into_iter().collect();
        let none = BTreeSet::new();
        let mut failing = m("u1", false);
        failing.error = Some("rpc error: code = Internal desc = no disk".into());
        let p = plan(
            &wanted,
            &[failing],
            &none,
            &none,
            &mut HashMap::new(),
            Instant::now(),
        );
        assert_eq!(p.failed[0].1, "rpc error: code = Internal desc = no disk");
        let mut slow = m("u1", false);
        slow.age = ATTACH_TIMEOUT;
        let p = plan(
            &wanted,
            &[slow],
            &none,
            &none,
            &mut HashMap::new(),
            Instant::now(),
        );
        assert_eq!(
            p.failed[0].1,
            "timed out waiting for external-attacher of d CSI driver to attach volume h"
        );
    }

    #[test]
    fn detach_waits_for_the_kubelet_to_let_go_or_six_minutes() {
        let wanted = BTreeMap::new();
        let mut waits = HashMap::new();
        let t0 = Instant::now();
        let in_use: BTreeSet<String> = ["u1".to_string()].into();
        let reported = in_use.clone();
        let p = plan(
            &wanted,
            &[m("u1", true)],
            &reported,
            &in_use,
            &mut waits,
            t0,
        );
        assert!(p.detach.is_empty());
        assert_eq!(p.report, ["u1"], "still reported while in use");
        let later = t0 + Duration::from_secs(60);
        let p = plan(
            &wanted,
            &[m("u1", true)],
            &reported,
            &in_use,
            &mut waits,
            later,
        );
        assert!(p.detach.is_empty());
        let p = plan(
            &wanted,
            &[m("u1", true)],
            &reported,
            &in_use,
            &mut waits,
            t0 + MAX_WAIT_FOR_UNMOUNT,
        );
        assert_eq!(p.detach, ["va-u1"]);
        assert!(
            p.report.is_empty(),
            "dropped from the report before the delete"
        );
        assert!(waits.is_empty());

        // Not in use: detached at once; one being deleted is left to finish.
        let none = BTreeSet::new();
        let p = plan(&wanted, &[m("u1", true)], &reported, &none, &mut waits, t0);
        assert_eq!(p.detach, ["va-u1"]);
        let mut going = m("u1", true);
        going.deleting = true;
        let p = plan(&wanted, &[going], &reported, &none, &mut waits, t0);
        assert!(p.detach.is_empty() && p.report.is_empty());
    }

    #[test]
    fn only_attachments_named_as_the_controller_names_them_are_managed() {
        let pv = volume("pv-a", "block.example.com", "vol-a");
        let va = |name: &str, node: &str| {
            Arc::new(
                serde_json::from_value::<VolumeAttachment>(json!({
                    "metadata": {"name": name},
                    "spec": {"attacher": "block.example.com", "nodeName": node,
                        "source": {"persistentVolumeName": "pv-a"}},
                    "status": {"attached": true}
                }))
                .unwrap(),
            )
        };
        let ours = attachment_name("vol-a", "block.example.com", "n1");
        let list = [va(&ours, "n1"), va("by-hand", "n1"), va(&ours, "n2")];
        let found = managed("n1", &list, |n| (n == "pv-a").then(|| pv.clone()));
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].name, ours);
        assert_eq!(found[0].unique, "kubernetes.io/csi/block.example.com^vol-a");
        assert!(found[0].attached);
    }
}
