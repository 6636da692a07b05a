//! Skiff's controllers: each keeps one kind of declaration true by watching it (and what it
//! owns) through shared informers and writing back through the API, as kube-controller-manager
//! does. One file per controller; what several share lives in [`owners`] (controller
//! references, adoption, owned-object changes), [`pods`] (pods from templates, readiness,
//! deletion order) and [`expectations`] (writes not yet seen in the cache).

pub mod attach_detach;
pub mod clock;
pub mod clusterrole_aggregation;
pub mod cronjob;
pub mod csr_approval;
pub mod csr_signing;
pub mod daemonset;
pub mod deployment;
pub mod disruption;
pub mod endpointslice;
pub mod ephemeral;
pub mod expectations;
pub mod gc;
pub mod history;
pub mod job;
pub mod kinds;
pub mod namespace;
pub mod nodeipam;
pub mod nodelifecycle;
pub mod owners;
pub mod persistentvolume_binder;
pub mod pods;
pub mod pv_protection;
pub mod pvc_protection;
pub mod replicaset;
pub mod replicationcontroller;
pub mod resourcequota;
pub mod rootca;
pub mod served;
pub mod serviceaccount;
pub mod servicelb;
pub mod statefulset;
pub mod volume_expander;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use skiff_client::events::Recorder;
use skiff_client::informer::{Informer, InformerFactory};
use skiff_client::reflector::IndexFn;
use skiff_client::{watcher, Client};
use tokio_util::sync::CancellationToken;

/// Every controller this manager runs, by the names `--controllers` takes.
pub const CONTROLLERS: &[&str] = &[
    "replicaset",
    "replicationcontroller",
    "deployment",
    "disruption",
    "cronjob",
    "daemonset",
    "statefulset",
    "endpointslice",
    "garbagecollector",
    "job",
    "namespace",
    "nodeipam",
    "nodelifecycle",
    "serviceaccount",
    "servicelb",
    "root-ca-cert-publisher",
    "csrapproving",
    "csrsigning",
    "clusterrole-aggregation",
    "resourcequota",
    "persistentvolume-binder",
    "persistentvolume-expander",
    "pvc-protection",
    "pv-protection",
    "attachdetach",
    "ephemeral-volume",
];

/// What the controllers are configured with (kube-controller-manager's flags).
#[derive(Debug, Clone)]
pub struct Config {
    /// Controllers to run (`*` for all, `-name` to leave one out), as `--controllers`.
    pub controllers: Vec<String>,
    /// ReplicaSets reconciled at once.
    pub concurrent_replicaset_syncs: usize,
    /// ReplicationControllers reconciled at once.
    pub concurrent_rc_syncs: usize,
    /// Deployments reconciled at once.
    pub concurrent_deployment_syncs: usize,
    /// DaemonSets reconciled at once.
    pub concurrent_daemonset_syncs: usize,
    /// StatefulSets reconciled at once.
    pub concurrent_statefulset_syncs: usize,
    /// Services whose endpoints are written at once.
    pub concurrent_service_endpoint_syncs: usize,
    /// Jobs reconciled at once.
    pub concurrent_job_syncs: usize,
    /// Objects the garbage collector handles at once.
    pub concurrent_gc_syncs: usize,
    /// Namespaces emptied at once.
    pub concurrent_namespace_syncs: usize,
    /// Pods whose generic ephemeral volumes' claims are made at once.
    pub concurrent_ephemeral_volume_syncs: usize,
    /// Pod CIDRs for nodes (`--allocate-node-cidrs` with `--cluster-cidr`), if asked for.
    pub node_ipam: Option<nodeipam::Config>,
    /// Node health monitoring.
    pub node_lifecycle: nodelifecycle::Config,
    /// The built-in service load balancer.
    pub service_lb: servicelb::Config,
    /// The cluster CA (PEM) published in every namespace's `kube-root-ca.crt` ConfigMap
    /// (`--root-ca-file`, else the CA the API server is trusted with); none: not published.
    pub root_ca: Option<String>,
    /// The cluster CA that signs approved CSRs (`--cluster-signing-cert-file`,
    /// `--cluster-signing-key-file`); without it nothing is signed.
    pub csr_signer: Option<csr_signing::Signer>,
    /// The resource quota controller's sync period and concurrency.
    pub resource_quota: resourcequota::Config,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            controllers: vec!["*".into()],
            concurrent_replicaset_syncs: 5,
            concurrent_rc_syncs: 5,
            concurrent_deployment_syncs: 5,
            concurrent_daemonset_syncs: 2,
            concurrent_statefulset_syncs: 5,
            concurrent_service_endpoint_syncs: 5,
            concurrent_job_syncs: 5,
            concurrent_gc_syncs: 20,
            concurrent_namespace_syncs: 10,
            concurrent_ephemeral_volume_syncs: 5,
            node_ipam: None,
            node_lifecycle: nodelifecycle::Config {
                grace: Duration::from_secs(40),
                period: Duration::from_secs(5),
            },
            service_lb: servicelb::Config::default(),
            root_ca: None,
            csr_signer: None,
            resource_quota: resourcequota::Config::default(),
        }
    }
}

impl Config {
    /// Whether `name` is enabled by `--controllers` (`*` enables all not named `-name`).
    pub fn enabled(&self, name: &str) -> bool {
        let mut on = false;
        for c in &self.controllers {
            if c == name {
                return true;
            }
            if c.strip_prefix('-') == Some(name) {
                return false;
            }
            if c == "*" {
                on = true;
            }
        }
        on
    }
}

/// What every controller shares: the client, one informer per resource, the event recorder.
pub struct Context {
    /// The API client.
    pub client: Client,
    /// Shared informers: one watch per resource for all controllers.
    pub informers: InformerFactory,
    /// Events for `kubectl describe`.
    pub events: Recorder,
    /// The configuration.
    pub config: Config,
    /// When everything stops.
    shutdown: CancellationToken,
    /// The served kinds, once a controller asks for them.
    served: std::sync::OnceLock<Arc<served::Served>>,
}

impl Context {
    /// A context whose informers run until `shutdown`.
    pub fn new(client: Client, config: Config, shutdown: CancellationToken) -> Arc<Self> {
        let events = Recorder::new(
            client.clone(),
            "skiff-controller-manager",
            &skiff_client::leader::default_identity(),
        );
        Arc::new(Context {
            informers: InformerFactory::new(client.clone(), shutdown.clone()),
            client,
            events,
            config,
            shutdown,
            served: std::sync::OnceLock::new(),
        })
    }

    /// The kinds the API server serves, custom resources' included, kept current from the
    /// first call on (shared by the garbage collector and the namespace controller).
    pub fn served(&self) -> Arc<served::Served> {
        self.served
            .get_or_init(|| {
                served::Served::start(
                    self.client.clone(),
                    self.informers.informer(),
                    self.shutdown.clone(),
                )
            })
            .clone()
    }

    /// The shared informer of `K`s indexed by controller (owner UID) and, for those no
    /// controller owns, by namespace. Every controller asks for owned kinds through here, so
    /// whichever asks first creates the informer with these indexes.
    pub fn owned<K: skiff_client::Object>(&self) -> Informer<K> {
        let indexers: std::collections::HashMap<String, IndexFn<K>> = [
            (
                owners::CONTROLLER_INDEX.to_string(),
                owners::controller_index::<K>(),
            ),
            (
                owners::ORPHAN_INDEX.to_string(),
                owners::orphan_index::<K>(),
            ),
        ]
        .into_iter()
        .collect();
        self.informers.informer_with(
            None,
            watcher::Config::default().strip_managed_fields(),
            indexers,
        )
    }

    /// The shared pod informer (see [`Context::owned`]).
    pub fn pods(&self) -> Informer<Pod> {
        self.owned()
    }

    /// The shared ReplicaSet informer (see [`Context::owned`]).
    pub fn replicasets(&self) -> Informer<ReplicaSet> {
        self.owned()
    }
}

/// Runs every enabled controller until `shutdown`.
pub async fn run(ctx: Arc<Context>, shutdown: CancellationToken) {
    // Owned kinds first, so that their informers carry the indexes controllers rely on.
    let _ = (
        ctx.pods(),
        ctx.replicasets(),
        ctx.owned::<k8s_openapi::api::core::v1::ReplicationController>(),
        ctx.owned::<k8s_openapi::api::batch::v1::Job>(),
        ctx.owned::<k8s_openapi::api::apps::v1::ControllerRevision>(),
    );
    let mut tasks = tokio::task::JoinSet::new();
    if ctx.config.enabled("replicaset") {
        tasks.spawn(replicaset::run(ctx.clone(), shutdown.clone()));
    }
    if ctx.config.enabled("replicationcontroller") {
        tasks.spawn(replicationcontroller::run(ctx.clone(), shutdown.clone()));
    }
    if ctx.config.enabled("deployment") {
        tasks.spawn(deployment::run(ctx.clone(), shutdown.clone()));
    }
    if ctx.config.enabled("disruption") {
        tasks.spawn(disruption::run(ctx.clone(), shutdown.clone()));
    }
    if ctx.config.enabled("daemonset") {
        tasks.spawn(daemonset::run(ctx.clone(), shutdown.clone()));
    }
    if ctx.config.enabled("statefulset") {
        tasks.spawn(statefulset::run(ctx.clone(), shutdown.clone()));
    }
    if ctx.config.enabled("endpointslice") {
        tasks.spawn(endpointslice::run(ctx.clone(), shutdown.clone()));
    }
    if ctx.config.enabled("garbagecollector") {
        tasks.spawn(gc::run(ctx.clone(), shutdown.clone()));
    }
    if ctx.config.enabled("cronjob") {
        tasks.spawn(cronjob::run(
            ctx.clone(),
            clock::Clock::system(),
            shutdown.clone(),
        ));
    }
    if ctx.config.enabled("job") {
        tasks.spawn(job::run(ctx.clone(), shutdown.clone()));
    }
    if ctx.config.enabled("namespace") {
        tasks.spawn(namespace::run(ctx.clone(), shutdown.clone()));
    }
    if let (true, Some(c)) = (ctx.config.enabled("nodeipam"), ctx.config.node_ipam.clone()) {
        tasks.spawn(nodeipam::run(ctx.clone(), c, shutdown.clone()));
    }
    if ctx.config.enabled("nodelifecycle") {
        let c = ctx.config.node_lifecycle.clone();
        tasks.spawn(nodelifecycle::run(ctx.clone(), c, shutdown.clone()));
    }
    if ctx.config.enabled("serviceaccount") {
        tasks.spawn(serviceaccount::run(ctx.clone(), shutdown.clone()));
    }
    if ctx.config.enabled("servicelb") {
        let c = ctx.config.service_lb.clone();
        tasks.spawn(servicelb::run(ctx.clone(), c, shutdown.clone()));
    }
    if let (true, Some(ca)) = (
        ctx.config.enabled("root-ca-cert-publisher"),
        ctx.config.root_ca.clone(),
    ) {
        tasks.spawn(rootca::run(ctx.clone(), ca, shutdown.clone()));
    }
    if ctx.config.enabled("csrapproving") {
        tasks.spawn(csr_approval::run(ctx.clone(), shutdown.clone()));
    }
    if let (true, Some(s)) = (
        ctx.config.enabled("csrsigning"),
        ctx.config.csr_signer.clone(),
    ) {
        tasks.spawn(csr_signing::run(ctx.clone(), s, shutdown.clone()));
    }
    if ctx.config.enabled("clusterrole-aggregation") {
        tasks.spawn(clusterrole_aggregation::run(ctx.clone(), shutdown.clone()));
    }
    if ctx.config.enabled("resourcequota") {
        let c = ctx.config.resource_quota.clone();
        tasks.spawn(resourcequota::run(ctx.clone(), c, shutdown.clone()));
    }
    if ctx.config.enabled("persistentvolume-binder") {
        tasks.spawn(persistentvolume_binder::run(ctx.clone(), shutdown.clone()));
    }
    if ctx.config.enabled("persistentvolume-expander") {
        tasks.spawn(volume_expander::run(ctx.clone(), shutdown.clone()));
    }
    if ctx.config.enabled("pvc-protection") {
        tasks.spawn(pvc_protection::run(ctx.clone(), shutdown.clone()));
    }
    if ctx.config.enabled("pv-protection") {
        tasks.spawn(pv_protection::run(ctx.clone(), shutdown.clone()));
    }
    if ctx.config.enabled("attachdetach") {
        tasks.spawn(attach_detach::run(ctx.clone(), shutdown.clone()));
    }
    if ctx.config.enabled("ephemeral-volume") {
        tasks.spawn(ephemeral::run(ctx.clone(), shutdown.clone()));
    }
    while tasks.join_next().await.is_some() {}
}

/// Calls `f` with every item of `stream`, in a task of its own, until `shutdown` or the
/// stream's end: how controllers turn other objects' changes into keys to look at.
pub fn spawn_each<T, S, F>(stream: S, shutdown: CancellationToken, mut f: F)
where
    T: Send + 'static,
    S: futures::Stream<Item = T> + Send + 'static,
    F: FnMut(T) + Send + 'static,
{
    use futures::StreamExt;
    tokio::spawn(async move {
        futures::pin_mut!(stream);
        loop {
            let item = tokio::select! {
                _ = shutdown.cancelled() => return,
                item = stream.next() => item,
            };
            match item {
                Some(i) => f(i),
                None => return,
            }
        }
    });
}

/// Merge-patches `status` into the status of `name`; `None` when the object is gone (its
/// controller then has nothing left to report).
pub async fn write_status<K: skiff_client::Object>(
    api: &skiff_client::Api<K>,
    name: &str,
    status: serde_json::Value,
) -> Result<Option<K>, skiff_client::Error> {
    let body = serde_json::json!({ "status": status });
    match api
        .patch_status(
            name,
            &skiff_client::PatchParams::default(),
            &skiff_client::Patch::Merge(body),
        )
        .await
    {
        Ok(o) => Ok(Some(o)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// How long a controller waits before looking at something again when nothing else will
/// wake it (a safety net, not the normal path).
pub const RESYNC: Duration = Duration::from_secs(300);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controllers_flag_like_kubernetes() {
        let c = |v: &[&str]| Config {
            controllers: v.iter().map(|s| s.to_string()).collect(),
            ..Config::default()
        };
        assert!(c(&["*"]).enabled("replicaset"));
        assert!(!c(&["*", "-replicaset"]).enabled("replicaset"));
        assert!(c(&["replicaset"]).enabled("replicaset"));
        assert!(!c(&["deployment"]).enabled("replicaset"));
    }
}
