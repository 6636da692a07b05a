//! Pods: the kubelet's part of their life. A manager watches the pods bound to this node and
//! gives each its own worker (one task per pod UID, see [`worker`]), so that work on one pod
//! never waits for another. A relist of the runtime every second (Kubernetes' "PLEG") wakes
//! the workers whose containers changed, and removes sandboxes that belong to no pod.

pub mod attach;
pub mod cgroups;
pub mod container;
pub mod csi;
pub mod dns;
pub mod env;
pub mod hooks;
pub mod images;
pub mod probes;
pub mod resize;
pub mod sandbox;
pub mod status;
pub mod tokens;
pub mod volumes;
pub mod worker;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Container, Pod};
use skiff_client::events::Recorder;
use skiff_client::informer::Informer;
use skiff_client::reflector::Change;
use skiff_client::{watcher, Api, Client};
use skiff_proto::cri;
use tokio::sync::{mpsc, watch, Notify};
use tokio_util::sync::CancellationToken;

use crate::cri::Runtime;

/// Labels the kubelet puts on sandboxes and containers (Kubernetes' own names), so that a
/// restarted kubelet finds what belongs to which pod.
pub mod labels {
    /// The pod's name.
    pub const POD_NAME: &str = "io.kubernetes.pod.name";
    /// The pod's namespace.
    pub const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
    /// The pod's UID.
    pub const POD_UID: &str = "io.kubernetes.pod.uid";
    /// The container's name.
    pub const CONTAINER_NAME: &str = "io.kubernetes.container.name";
    /// Annotation: a hash of the container's spec; a different hash means a changed spec.
    pub const CONTAINER_HASH: &str = "io.kubernetes.container.hash";
    /// Annotation: which restart of the container this is.
    pub const RESTART_COUNT: &str = "io.kubernetes.container.restartCount";
    /// Annotation: where the termination message file is inside the container.
    pub const TERMINATION_MESSAGE_PATH: &str = "io.kubernetes.container.terminationMessagePath";
    /// Annotation: the pod's grace period.
    pub const GRACE_PERIOD: &str = "io.kubernetes.pod.terminationGracePeriod";
}

/// What every pod worker needs to know about the node.
#[derive(Debug, Clone)]
pub struct PodConfig {
    /// The node's name.
    pub node_name: String,
    /// The node's IP address.
    pub node_ip: String,
    /// Pod state: volumes, hosts files, termination messages (`<root>/pods/<uid>`).
    pub root_dir: PathBuf,
    /// Container logs (`<dir>/<namespace>_<name>_<uid>/<container>/<restart>.log`).
    pub pod_logs_dir: PathBuf,
    /// The cluster DNS server(s) for `dnsPolicy: ClusterFirst`.
    pub cluster_dns: Vec<String>,
    /// The cluster's DNS domain.
    pub cluster_domain: String,
    /// The resolver configuration `dnsPolicy: Default` pods get.
    pub resolv_conf: PathBuf,
    /// The cgroup under which pod cgroups are made (`<root>/kubepods/...`).
    pub cgroup_root: String,
    /// The node's CPU, in millicores (resource limits default to it).
    pub node_cpu_millis: i64,
    /// The node's allocatable memory in bytes (resource limits default to it).
    pub node_memory_bytes: i64,
    /// How often a pod is looked at again with nothing happening (volumes refreshed).
    pub sync_frequency: Duration,
    /// The sysctls pods may set: the safe ones and `--allowed-unsafe-sysctls`.
    pub sysctls: skiff_rules::sysctl::Allowlist,
}

impl PodConfig {
    /// The directory of a pod's own state.
    pub fn pod_dir(&self, uid: &str) -> PathBuf {
        self.root_dir.join("pods").join(uid)
    }

    /// The directory of a pod's container logs.
    pub fn log_dir(&self, pod: &Pod) -> PathBuf {
        let m = &pod.metadata;
        self.pod_logs_dir.join(format!(
            "{}_{}_{}",
            m.namespace.as_deref().unwrap_or_default(),
            m.name.as_deref().unwrap_or_default(),
            m.uid.as_deref().unwrap_or_default()
        ))
    }
}

/// What a worker shares with the rest of the kubelet.
#[derive(Clone)]
pub struct Shared {
    /// The API client.
    pub client: Client,
    /// The container runtime.
    pub runtime: Runtime,
    /// The node's settings.
    pub config: Arc<PodConfig>,
    /// Events about pods.
    pub recorder: Recorder,
    /// Image pulls and their back-off.
    pub images: images::Puller,
    /// The pods' service-account tokens.
    pub tokens: tokens::Manager,
    /// Persistent volume claims: mounted through CSI drivers, or as local paths.
    pub claims: csi::Mounter,
    /// The RuntimeClasses pods name (their sandboxes' runtime handlers).
    pub runtime_classes: sandbox::RuntimeClasses,
    /// What each pod on the node has been allocated (for in-place resizes).
    pub allocations: resize::Ledger,
}

struct Handle {
    updates: watch::Sender<Arc<Pod>>,
    poke: Arc<Notify>,
    gone: CancellationToken,
}

/// Runs the pods bound to the node until `shutdown`. Containers keep running when the kubelet
/// stops; the next kubelet adopts them.
pub async fn run(shared: Shared, shutdown: CancellationToken) {
    let api: Api<Pod> = Api::all(shared.client.clone());
    let informer = Informer::spawn(
        api,
        watcher::Config::default()
            .fields(&format!("spec.nodeName={}", shared.config.node_name))
            .strip_managed_fields(),
        HashMap::new(),
        shutdown.clone(),
    );
    let store = informer.store();
    let changes = informer.subscribe();
    futures::pin_mut!(changes);
    tokio::select! {
        _ = shutdown.cancelled() => return,
        _ = store.wait_until_ready() => {}
    }
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<String>();
    let mut workers: HashMap<String, Handle> = HashMap::new();
    let spawn = |pod: Arc<Pod>, workers: &mut HashMap<String, Handle>| {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        if let Some(h) = workers.get(&uid) {
            h.updates.send_replace(pod);
            return;
        }
        let (tx, rx) = watch::channel(pod);
        let poke = Arc::new(Notify::new());
        let gone = CancellationToken::new();
        let w = worker::Worker::new(shared.clone(), rx, poke.clone(), gone.clone());
        let done = done_tx.clone();
        let stop = shutdown.clone();
        let id = uid.clone();
        tokio::spawn(async move {
            w.run(stop).await;
            let _ = done.send(id);
        });
        workers.insert(
            uid,
            Handle {
                updates: tx,
                poke,
                gone,
            },
        );
    };
    for pod in store.state() {
        spawn(pod, &mut workers);
    }
    let mut relist = tokio::time::interval(Duration::from_secs(1));
    relist.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seen: HashMap<String, String> = HashMap::new();
    let mut housekeeping = tokio::time::interval(Duration::from_secs(10));
    housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            c = changes.next() => match c {
                Some(Change::Applied(pod)) => spawn(pod, &mut workers),
                Some(Change::Deleted(pod)) => {
                    let uid = pod.metadata.uid.clone().unwrap_or_default();
                    if let Some(h) = workers.get(&uid) {
                        h.updates.send_replace(pod);
                        h.gone.cancel();
                    }
                }
                Some(Change::Resynced) => {
                    let live: HashSet<String> = store
                        .state()
                        .iter()
                        .filter_map(|p| p.metadata.uid.clone())
                        .collect();
                    for (uid, h) in &workers {
                        if !live.contains(uid) {
                            h.gone.cancel();
                        }
                    }
                    for pod in store.state() {
                        spawn(pod, &mut workers);
                    }
                }
                None => break,
            },
            Some(uid) = done_rx.recv() => {
                workers.remove(&uid);
                shared.tokens.forget(&uid);
                seen.remove(&uid);
            }
            _ = relist.tick() => {
                relist_once(&shared.runtime, &workers, &mut seen).await;
            }
            _ = housekeeping.tick() => {
                remove_orphaned_volumes(&shared, &workers).await;
            }
        }
    }
}

/// One look at every sandbox and container: wakes workers whose pods changed and removes
/// sandboxes of pods this kubelet has no worker for (deleted while it was away).
async fn relist_once(
    runtime: &Runtime,
    workers: &HashMap<String, Handle>,
    seen: &mut HashMap<String, String>,
) {
    let mut rt = runtime.runtime.clone();
    let (Ok(sandboxes), Ok(containers)) = (
        rt.list_pod_sandbox(cri::ListPodSandboxRequest::default())
            .await,
        rt.list_containers(cri::ListContainersRequest::default())
            .await,
    ) else {
        return;
    };
    let mut by_pod: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for s in &sandboxes.get_ref().items {
        if let Some(uid) = s.labels.get(labels::POD_UID) {
            by_pod
                .entry(uid.clone())
                .or_default()
                .push(format!("s{}:{}", s.id, s.state));
        }
    }
    for c in &containers.get_ref().containers {
        if let Some(uid) = c.labels.get(labels::POD_UID) {
            by_pod
                .entry(uid.clone())
                .or_default()
                .push(format!("c{}:{}", c.id, c.state));
        }
    }
    for (uid, mut parts) in by_pod {
        parts.sort();
        let print = parts.join(",");
        match workers.get(&uid) {
            Some(h) => {
                if seen.get(&uid) != Some(&print) {
                    seen.insert(uid.clone(), print);
                    h.poke.notify_one();
                }
            }
            None => {
                for s in sandboxes
                    .get_ref()
                    .items
                    .iter()
                    .filter(|s| s.labels.get(labels::POD_UID) == Some(&uid))
                {
                    tracing::info!(pod_uid = %uid, sandbox = %s.id, "removing a sandbox of a pod that no longer exists");
                    if let Err(e) = sandbox::remove(runtime, &s.id).await {
                        tracing::warn!(sandbox = %s.id, error = %e, "removing an orphaned sandbox");
                    }
                }
            }
        }
    }
}

/// Tears down the volumes of pods this kubelet has no worker for (deleted while it was away),
/// then their directories, as Kubernetes' kubelet cleans up orphaned pod directories.
async fn remove_orphaned_volumes(shared: &Shared, workers: &HashMap<String, Handle>) {
    let pods = shared.config.root_dir.join("pods");
    let orphans: Vec<String> = std::fs::read_dir(&pods)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(String::from))
        .filter(|uid| !workers.contains_key(uid))
        .collect();
    for uid in orphans {
        match shared.claims.teardown(&shared.config, &uid).await {
            Ok(()) => {
                tracing::info!(pod_uid = %uid, "removing the volumes of a pod that no longer exists");
                volumes::teardown(&shared.config, &uid);
            }
            Err(e) => {
                tracing::warn!(pod_uid = %uid, error = %e, "tearing down the volumes of a pod that no longer exists")
            }
        }
    }
}

/// Every container of the pod: init containers, then the others.
pub fn all_containers(pod: &Pod) -> impl Iterator<Item = &Container> {
    let spec = pod.spec.as_ref();
    spec.and_then(|s| s.init_containers.as_ref())
        .into_iter()
        .flatten()
        .chain(spec.map(|s| s.containers.iter()).into_iter().flatten())
}

/// The pod's ephemeral containers as containers (the fields they share; what they may not
/// have, validation keeps out), and the container each targets, if any.
pub fn ephemeral_containers(pod: &Pod) -> Vec<(Container, Option<String>)> {
    pod.spec
        .as_ref()
        .and_then(|s| s.ephemeral_containers.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let c = serde_json::to_value(e)
                .and_then(serde_json::from_value::<Container>)
                .ok()?;
            Some((c, e.target_container_name.clone().filter(|t| !t.is_empty())))
        })
        .collect()
}

/// `namespace/name` of a pod, for logs and messages.
pub fn pod_key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}
