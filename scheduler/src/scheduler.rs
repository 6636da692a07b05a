//! The scheduling loop: informers keep a cache of nodes and the pods on them and feed pending
//! pods into the queue; one loop takes the best pod, runs its profile over the cache,
//! *assumes* the decision in the cache at once (so the next pod already sees it) and binds in
//! the background. A failed bind forgets the assumption and requeues the pod with back-off; a
//! pod that fits nowhere gets `PodScheduled=False/Unschedulable` with Kubernetes' message and a
//! `FailedScheduling` event, and waits for the cluster to change. A pod's priority is its
//! `spec.priority`, which the API server sets from `priorityClassName` when the pod is created.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::{CSIDriver, CSINode, CSIStorageCapacity, StorageClass};
use parking_lot::Mutex;
use serde_json::json;
use skiff_client::events::{reference, Recorder};
use skiff_client::informer::{Informer, InformerFactory};
use skiff_client::reflector::Change;
use skiff_client::watcher::{self, watcher, Event};
use skiff_client::{Api, Client, Object, Patch, PatchParams};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::framework::{FitError, Profile};
use crate::prebind::Reserved;
use crate::preemption::priority;
use crate::queue::SchedulingQueue;
use crate::snapshot::{PodInfo, Snapshot};
use crate::volumes::Cached;

fn key_of(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or(""),
        pod.metadata.name.as_deref().unwrap_or("")
    )
}

fn bound_node(pod: &Pod) -> Option<&str> {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
}

fn terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded") | Some("Failed")
    )
}

/// Everything the loop shares with its informer handlers and bind tasks.
struct Shared {
    /// The nodes with the pods bound or assumed on them.
    cache: Mutex<Snapshot>,
    queue: Mutex<SchedulingQueue>,
    wake: Notify,
    profiles: Vec<Profile>,
    /// Pods waiting for a node (whole; placed pods live on in the snapshot, slimmed).
    pending: Mutex<HashMap<String, Arc<Pod>>>,
    client: Client,
    events: Recorder,
    metrics: Arc<crate::metrics::Metrics>,
    /// Round-robin start of the node search.
    next_start: AtomicUsize,
    /// Ticks whenever a storage object changes (PreBind waits on it).
    volume_changes: tokio::sync::watch::Sender<u64>,
}

impl Shared {
    fn profile(&self, pod: &Pod) -> Option<&Profile> {
        let name = pod
            .spec
            .as_ref()
            .and_then(|s| s.scheduler_name.as_deref())
            .unwrap_or("default-scheduler");
        self.profiles.iter().find(|p| p.scheduler_name == name)
    }

    /// Brings one pod's state into the cache and queue.
    fn pod_changed(&self, pod: Arc<Pod>) {
        let key = key_of(&pod);
        match bound_node(&pod).map(str::to_string) {
            Some(node) if !terminal(&pod) => {
                self.pending.lock().remove(&key);
                self.queue.lock().remove(&key);
                let info = Arc::new(PodInfo::new(pod).placed());
                self.cache.lock().add_pod(&node, info);
            }
            Some(_) => {
                self.pending.lock().remove(&key);
                self.cache.lock().remove_pod(&key);
                let mut q = self.queue.lock();
                q.remove(&key);
                q.cluster_changed(Instant::now());
            }
            None => {
                if pod.metadata.deletion_timestamp.is_some() || self.profile(&pod).is_none() {
                    self.pending.lock().remove(&key);
                    self.queue.lock().remove(&key);
                    return;
                }
                let prio = priority(&pod);
                self.pending.lock().insert(key.clone(), pod);
                // An assumed pod stays assumed until its binding shows up.
                if self.cache.lock().node_of(&key).is_some() {
                    return;
                }
                self.queue.lock().add(&key, prio, Instant::now());
                self.wake.notify_one();
            }
        }
    }

    /// After a (re-)list: forgets the pods that are gone.
    fn keep_only(&self, listed: &HashSet<String>) {
        let gone: Vec<String> = self
            .pending
            .lock()
            .keys()
            .filter(|k| !listed.contains(*k))
            .cloned()
            .collect();
        let placed_gone: Vec<String> = self
            .cache
            .lock()
            .pod_keys()
            .filter(|k| !listed.contains(*k))
            .cloned()
            .collect();
        if gone.is_empty() && placed_gone.is_empty() {
            return;
        }
        for key in gone {
            self.pending.lock().remove(&key);
            self.queue.lock().remove(&key);
        }
        let mut cache = self.cache.lock();
        for key in placed_gone {
            cache.remove_pod(&key);
        }
        drop(cache);
        self.queue.lock().cluster_changed(Instant::now());
        self.wake.notify_one();
    }

    fn pod_deleted(&self, pod: &Pod) {
        let key = key_of(pod);
        self.pending.lock().remove(&key);
        self.cache.lock().remove_pod(&key);
        let mut q = self.queue.lock();
        q.remove(&key);
        q.cluster_changed(Instant::now());
        drop(q);
        self.wake.notify_one();
    }
}

/// Runs the scheduler until `shutdown`.
pub async fn run(
    client: Client,
    profiles: Vec<Profile>,
    events: Recorder,
    metrics: Arc<crate::metrics::Metrics>,
    shutdown: CancellationToken,
) {
    let factory = InformerFactory::new(client.clone(), shutdown.clone());
    let nodes = factory.informer::<Node>();
    let ns_informer = factory.informer::<Namespace>();
    let shared = Arc::new(Shared {
        cache: Mutex::new(Snapshot::default()),
        queue: Mutex::new(SchedulingQueue::new()),
        wake: Notify::new(),
        profiles,
        pending: Mutex::new(HashMap::new()),
        client,
        events,
        metrics,
        next_start: AtomicUsize::new(0),
        volume_changes: tokio::sync::watch::Sender::new(0),
    });
    // Storage objects only when a profile binds volumes: without them nothing reads them.
    if shared.profiles.iter().any(|p| p.volume_binding.is_some()) {
        follow_volumes::<PersistentVolume>(&factory, &shared, &shutdown).await;
        follow_volumes::<PersistentVolumeClaim>(&factory, &shared, &shutdown).await;
        follow_volumes::<StorageClass>(&factory, &shared, &shutdown).await;
        follow_volumes::<CSINode>(&factory, &shared, &shutdown).await;
        follow_volumes::<CSIDriver>(&factory, &shared, &shutdown).await;
        follow_volumes::<CSIStorageCapacity>(&factory, &shared, &shutdown).await;
    }
    nodes.store().wait_until_ready().await;
    ns_informer.store().wait_until_ready().await;

    // Namespace labels for namespaceSelector.
    let sync_namespaces = {
        let store = ns_informer.store();
        let shared = shared.clone();
        move || {
            let map = store
                .state()
                .into_iter()
                .map(|n| {
                    (
                        n.metadata.name.clone().unwrap_or_default(),
                        n.metadata.labels.clone().unwrap_or_default(),
                    )
                })
                .collect();
            shared.cache.lock().set_namespaces(map);
        }
    };
    sync_namespaces();
    {
        let mut changes = ns_informer.subscribe().boxed();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            while let Some(_c) = tokio::select! {
                _ = shutdown.cancelled() => None,
                c = changes.next() => c,
            } {
                sync_namespaces();
            }
        });
    }

    // Nodes first, then pods, from the caches; then follow changes.
    {
        let mut cache = shared.cache.lock();
        for n in nodes.store().state() {
            cache.upsert_node(n);
        }
    }
    spawn_node_handler(shared.clone(), nodes.clone(), shutdown.clone());
    let listed = spawn_pod_handler(shared.clone(), shutdown.clone());
    tokio::select! {
        _ = shutdown.cancelled() => return,
        _ = listed => {}
    }

    tracing::info!(nodes = shared.cache.lock().nodes.len(), "scheduler started");
    loop {
        let next = {
            let mut q = shared.queue.lock();
            let due = q.tick(Instant::now());
            let (a, b, u) = q.counts();
            shared.metrics.queue(a, b, u);
            (q.pop(), due)
        };
        let key = match next {
            (Some(k), _) => k,
            (None, due) => {
                let wait = due
                    .map(|d| d.saturating_duration_since(Instant::now()))
                    .unwrap_or(Duration::from_secs(1))
                    .min(Duration::from_secs(1));
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = shared.wake.notified() => {}
                    _ = tokio::time::sleep(wait) => {}
                }
                continue;
            }
        };
        schedule_one(&shared, &key);
    }
    tracing::info!("scheduler stopped");
}

/// Keeps one kind of storage object in the cache's [`crate::volumes::VolumeCache`]; a change
/// may make pending pods schedulable, so it requeues them and wakes PreBind's waiters.
async fn follow_volumes<K: Object + Cached>(
    factory: &InformerFactory,
    shared: &Arc<Shared>,
    shutdown: &CancellationToken,
) {
    let informer = factory.informer::<K>();
    let mut changes = informer.subscribe().boxed();
    let store = informer.store();
    tokio::select! {
        _ = shutdown.cancelled() => return,
        _ = store.wait_until_ready() => {}
    }
    K::reset(&mut shared.cache.lock().volumes, store.state());
    let shared = shared.clone();
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        loop {
            let c = tokio::select! {
                _ = shutdown.cancelled() => return,
                c = changes.next() => c,
            };
            {
                let mut cache = shared.cache.lock();
                match c {
                    Some(Change::Applied(o)) => K::apply(&mut cache.volumes, o),
                    Some(Change::Deleted(o)) => K::delete(&mut cache.volumes, &o),
                    Some(Change::Resynced) => K::reset(&mut cache.volumes, store.state()),
                    None => return,
                }
            }
            shared.volume_changes.send_modify(|v| *v += 1);
            shared.queue.lock().cluster_changed(Instant::now());
            shared.wake.notify_one();
        }
    });
}

fn spawn_node_handler(shared: Arc<Shared>, nodes: Informer<Node>, shutdown: CancellationToken) {
    let mut changes = nodes.subscribe().boxed();
    tokio::spawn(async move {
        loop {
            let c = tokio::select! {
                _ = shutdown.cancelled() => return,
                c = changes.next() => c,
            };
            match c {
                Some(Change::Applied(n)) => shared.cache.lock().upsert_node(n),
                Some(Change::Deleted(n)) => shared
                    .cache
                    .lock()
                    .remove_node(n.metadata.name.as_deref().unwrap_or("")),
                Some(Change::Resynced) => {
                    let mut cache = shared.cache.lock();
                    let names: std::collections::HashSet<String> = nodes
                        .store()
                        .state()
                        .iter()
                        .map(|n| n.metadata.name.clone().unwrap_or_default())
                        .collect();
                    let gone: Vec<String> = cache
                        .nodes
                        .iter()
                        .filter(|n| !names.contains(&n.name))
                        .map(|n| n.name.clone())
                        .collect();
                    for g in gone {
                        cache.remove_node(&g);
                    }
                    for n in nodes.store().state() {
                        cache.upsert_node(n);
                    }
                }
                None => return,
            }
            shared.queue.lock().cluster_changed(Instant::now());
            shared.wake.notify_one();
        }
    });
}

/// Follows every pod: pending ones wait in `pending` and the queue, placed ones are counted in
/// the snapshot. The receiver fires once the first full list has been taken in.
fn spawn_pod_handler(
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) -> tokio::sync::oneshot::Receiver<()> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let api = Api::<Pod>::all(shared.client.clone());
    // One task drains the watch as fast as it arrives; another applies what it read, which
    // waits on the cache lock while decisions are being made. A watch left unread would fall
    // behind on the server and be cut off.
    let (events, mut read) = tokio::sync::mpsc::unbounded_channel();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let stream = watcher(api, watcher::Config::default().strip_managed_fields());
        futures::pin_mut!(stream);
        loop {
            let ev = tokio::select! {
                _ = stop.cancelled() => return,
                ev = stream.next() => ev,
            };
            match ev {
                Some(Ok(ev)) => {
                    if events.send(ev).is_err() {
                        return;
                    }
                }
                Some(Err(e)) => tracing::warn!(error = %e, "pod watch failed; retrying"),
                None => return,
            }
        }
    });
    tokio::spawn(async move {
        let mut listed: Option<HashSet<String>> = None;
        let mut first = Some(tx);
        loop {
            let ev = tokio::select! {
                _ = shutdown.cancelled() => return,
                ev = read.recv() => ev,
            };
            match ev {
                Some(Event::Init) => listed = Some(HashSet::new()),
                Some(Event::InitApply(p)) => {
                    if let Some(l) = listed.as_mut() {
                        l.insert(key_of(&p));
                    }
                    shared.pod_changed(Arc::new(p));
                }
                Some(Event::InitDone) => {
                    if let Some(l) = listed.take() {
                        shared.keep_only(&l);
                    }
                    if let Some(tx) = first.take() {
                        let _ = tx.send(());
                    }
                }
                Some(Event::Apply(p)) => shared.pod_changed(Arc::new(p)),
                Some(Event::Delete(p)) => shared.pod_deleted(&p),
                None => return,
            }
        }
    });
    rx
}

/// One scheduling attempt for the pod `key`.
fn schedule_one(shared: &Arc<Shared>, key: &str) {
    let Some(pod) = shared.pending.lock().get(key).cloned() else {
        shared.queue.lock().done(key);
        return;
    };
    if bound_node(&pod).is_some() || pod.metadata.deletion_timestamp.is_some() {
        shared.queue.lock().done(key);
        return;
    }
    let Some(profile) = shared.profile(&pod) else {
        shared.queue.lock().done(key);
        return;
    };
    let started = Instant::now();
    let info = Arc::new(PodInfo::new(pod.clone()));
    let decision = {
        let mut cache = shared.cache.lock();
        // A room held for this pod by an earlier preemption is released before it looks again.
        cache.remove_pod(key);
        let start = shared.next_start.fetch_add(1, Ordering::Relaxed) % cache.nodes.len().max(1);
        profile
            .schedule(&info, &mut cache, start)
            .map(|p| cache.nodes[p.node].name.clone())
    };
    match decision {
        Ok(node) => {
            // Assume (Reserve), then bind in the background.
            let reserved = {
                let mut cache = shared.cache.lock();
                let reserved = match profile.volume_binding {
                    Some(_) if crate::volumes::uses_claims(&pod) => {
                        crate::prebind::reserve(&mut cache, &pod, &node)
                    }
                    _ => Ok(None),
                };
                if reserved.is_ok() {
                    cache.add_pod(&node, info);
                }
                reserved
            };
            let reserved = match reserved {
                Ok(r) => r,
                Err(e) => {
                    // The claims changed between Filter and Reserve: look again later.
                    tracing::debug!(pod = %key, %node, error = %e, "volumes no longer fit");
                    shared
                        .queue
                        .lock()
                        .retry_later(key, priority(&pod), Instant::now());
                    return;
                }
            };
            shared
                .metrics
                .attempt("scheduled", &profile.scheduler_name, started.elapsed());
            shared.queue.lock().done(key);
            let timeout = profile
                .volume_binding
                .unwrap_or(crate::config::DEFAULT_BIND_TIMEOUT);
            let shared = shared.clone();
            let key = key.to_string();
            tokio::spawn(async move { bind(shared, key, pod, node, reserved, timeout).await });
        }
        Err(fit) => {
            shared
                .metrics
                .attempt("unschedulable", &profile.scheduler_name, started.elapsed());
            let prio = priority(&pod);
            let preemption = if prio > 0 && crate::preemption::may_preempt(&info) {
                let mut cache = shared.cache.lock();
                let found = crate::preemption::find(profile, &info, prio, &cache, &fit);
                found.map(|p| {
                    shared.metrics.preemptions.inc();
                    let node = cache.nodes[p.node].name.clone();
                    // Hold the room: pods scheduled meanwhile must not take it.
                    cache.add_pod(&node, info.clone());
                    (node, p.victims)
                })
            } else {
                None
            };
            shared.queue.lock().unschedulable(key, Instant::now());
            let shared = shared.clone();
            tokio::spawn(async move {
                if let Some((node, victims)) = preemption {
                    preempt(&shared, &pod, &node, victims).await;
                }
                report_unschedulable(shared, pod, fit).await
            });
        }
    }
}

/// Forgets the pod's assumed placement and volume bindings.
fn unreserve(shared: &Shared, key: &str, reserved: Option<&Reserved>) {
    let mut cache = shared.cache.lock();
    cache.remove_pod(key);
    if let Some(r) = reserved {
        crate::prebind::unreserve(&mut cache, r);
    }
}

async fn bind(
    shared: Arc<Shared>,
    key: String,
    pod: Arc<Pod>,
    node: String,
    reserved: Option<Reserved>,
    bind_timeout: Duration,
) {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    if let Some(r) = reserved.as_ref() {
        let changes = shared.volume_changes.subscribe();
        let check = || crate::prebind::all_bound(&shared.cache.lock().volumes, r);
        let done = crate::prebind::pre_bind(&shared.client, r, check, changes, bind_timeout).await;
        if let Err(e) = done {
            let message = format!("running PreBind plugin \"VolumeBinding\": {e}");
            tracing::warn!(pod = %key, %node, error = %message, "volume binding failed");
            unreserve(&shared, &key, Some(r));
            shared
                .queue
                .lock()
                .retry_later(&key, priority(&pod), Instant::now());
            shared.wake.notify_one();
            report_failure(shared, pod, "SchedulerError", message).await;
            return;
        }
    }
    let api: Api<Pod> = Api::namespaced(shared.client.clone(), &ns);
    match api.bind(&name, &node).await {
        Ok(()) => {
            tracing::debug!(pod = %key, %node, "bound");
            shared.events.normal(
                reference(&*pod),
                "Scheduled",
                "Binding",
                format!("Successfully assigned {key} to {node}"),
            );
        }
        Err(e) => {
            tracing::warn!(pod = %key, %node, error = %e, "binding failed; retrying");
            unreserve(&shared, &key, reserved.as_ref());
            if !e.is_not_found() {
                shared
                    .queue
                    .lock()
                    .retry_later(&key, priority(&pod), Instant::now());
            }
            shared.wake.notify_one();
        }
    }
}

/// Nominates `node` for the pod and deletes the victims gracefully.
async fn preempt(shared: &Arc<Shared>, pod: &Arc<Pod>, node: &str, victims: Vec<Arc<PodInfo>>) {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(shared.client.clone(), &ns);
    let patch = json!({"status": {"nominatedNodeName": node}});
    if let Err(e) = api
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(patch))
        .await
    {
        tracing::debug!(pod = %name, error = %e, "could not set nominatedNodeName");
    }
    for v in victims {
        let vns = v.pod.metadata.namespace.clone().unwrap_or_default();
        let vname = v.pod.metadata.name.clone().unwrap_or_default();
        tracing::info!(preemptor = %format!("{ns}/{name}"), victim = %v.key, %node, "preempting");
        let vapi: Api<Pod> = Api::namespaced(shared.client.clone(), &vns);
        match vapi.delete(&vname, &Default::default()).await {
            Ok(_) => shared.events.normal(
                reference(&*v.pod),
                "Preempted",
                "Preempting",
                format!(
                    "Preempted by pod {} on node {node}",
                    pod.metadata.uid.as_deref().unwrap_or(&name)
                ),
            ),
            Err(e) if e.is_not_found() => {}
            Err(e) => tracing::warn!(victim = %v.key, error = %e, "could not preempt"),
        }
    }
}

async fn report_unschedulable(shared: Arc<Shared>, pod: Arc<Pod>, fit: FitError) {
    report_failure(shared, pod, "Unschedulable", fit.to_string()).await
}

/// `PodScheduled=False` with `reason` and `message` (once), and a `FailedScheduling` event.
async fn report_failure(shared: Arc<Shared>, pod: Arc<Pod>, reason: &str, message: String) {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(shared.client.clone(), &ns);
    let already = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                c.type_ == "PodScheduled"
                    && c.status == "False"
                    && c.message.as_deref() == Some(message.as_str())
            })
        });
    if !already {
        let patch = json!({"status": {"conditions": [{
            "type": "PodScheduled",
            "status": "False",
            "reason": reason,
            "message": message,
            "lastProbeTime": null,
            "lastTransitionTime": skiff_client::time::now_rfc3339(),
        }]}});
        if let Err(e) = api
            .patch_status(&name, &PatchParams::default(), &Patch::Strategic(patch))
            .await
        {
            tracing::debug!(pod = %name, error = %e, "could not record PodScheduled=False");
        }
    }
    shared
        .events
        .warning(reference(&*pod), "FailedScheduling", "Scheduling", message);
}
