//! Hollow nodes: fake nodes that register, keep their leases fresh and make the pods bound to
//! them look like they run (phase `Running`, `Ready`, a pod IP) — and finish graceful
//! deletions as a kubelet would — so the scheduler, controllers and API server can be
//! exercised at thousands of nodes on one machine. Nothing is started for real.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use serde_json::json;
use skiff_client::informer::Informer;
use skiff_client::reflector::Change;
use skiff_client::{watcher, Api, Client, DeleteParams, Patch, PatchParams, PostParams};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// What the hollow nodes look like.
#[derive(Debug, Clone)]
pub struct Spec {
    /// How many nodes.
    pub count: usize,
    /// Node names are `<prefix>-<n>`.
    pub prefix: String,
    /// CPU capacity (a quantity).
    pub cpu: String,
    /// Memory capacity.
    pub memory: String,
    /// Pod capacity.
    pub pods: u32,
    /// Zones, assigned round-robin as `topology.kubernetes.io/zone`.
    pub zones: Vec<String>,
    /// Extra labels for every node.
    pub labels: BTreeMap<String, String>,
    /// How often each node renews its lease (0: never).
    pub lease_renew: Duration,
    /// Status writes in flight at once.
    pub concurrency: usize,
}

impl Default for Spec {
    fn default() -> Self {
        Spec {
            count: 10,
            prefix: "hollow".into(),
            cpu: "32".into(),
            memory: "256Gi".into(),
            pods: 110,
            zones: vec!["zone-a".into(), "zone-b".into(), "zone-c".into()],
            labels: BTreeMap::new(),
            lease_renew: Duration::from_secs(10),
            concurrency: 32,
        }
    }
}

fn now() -> String {
    skiff_client::time::now_rfc3339()
}

/// The name of node `i`.
pub fn node_name(spec: &Spec, i: usize) -> String {
    format!("{}-{i}", spec.prefix)
}

/// Registers the nodes (existing ones are updated) with Ready status.
pub async fn register(client: &Client, spec: &Spec) -> anyhow::Result<()> {
    let nodes: Api<Node> = Api::cluster(client.clone());
    let sem = Arc::new(Semaphore::new(spec.concurrency.max(1)));
    let mut tasks = Vec::new();
    for i in 0..spec.count {
        let name = node_name(spec, i);
        let zone = spec
            .zones
            .get(i % spec.zones.len().max(1))
            .cloned()
            .unwrap_or_default();
        let mut labels = spec.labels.clone();
        labels.insert("kubernetes.io/hostname".into(), name.clone());
        labels.insert("kubernetes.io/os".into(), "linux".into());
        labels.insert("type".into(), "hollow".into());
        if !zone.is_empty() {
            labels.insert("topology.kubernetes.io/zone".into(), zone);
        }
        let node: Node =
            serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}}))?;
        let status = json!({"status": {
            "capacity": {"cpu": spec.cpu, "memory": spec.memory, "pods": spec.pods.to_string()},
            "allocatable": {"cpu": spec.cpu, "memory": spec.memory, "pods": spec.pods.to_string()},
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                "message": "hollow node is posting ready status",
                "lastHeartbeatTime": now(), "lastTransitionTime": now()}],
            "addresses": [{"type": "Hostname", "address": name}],
            "nodeInfo": {"kubeletVersion": "v1.33.0-hollow", "operatingSystem": "linux", "architecture": "amd64",
                "containerRuntimeVersion": "hollow://1", "kernelVersion": "", "osImage": "hollow",
                "kubeProxyVersion": "", "machineID": "", "systemUUID": "", "bootID": ""},
        }});
        let nodes = nodes.clone();
        let permit = sem.clone().acquire_owned().await?;
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            match nodes.create(&PostParams::default(), &node).await {
                Ok(_) => {}
                Err(e) if e.is_already_exists() => {}
                Err(e) => return Err(anyhow::anyhow!("registering {name}: {e}")),
            }
            nodes
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
                .await
                .map_err(|e| anyhow::anyhow!("status of {name}: {e}"))?;
            Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

/// Renews one lease per node in `kube-node-lease` every `spec.lease_renew` until `shutdown`.
pub async fn renew_leases(client: Client, spec: Spec, shutdown: CancellationToken) {
    if spec.lease_renew.is_zero() {
        return;
    }
    let leases: Api<Lease> = Api::namespaced(client, "kube-node-lease");
    loop {
        for i in 0..spec.count {
            if shutdown.is_cancelled() {
                return;
            }
            let name = node_name(&spec, i);
            let patch = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": name},
                "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": skiff_client::time::now_micro()}});
            let _ = leases
                .patch(
                    &name,
                    &PatchParams::apply("hollow-node").force(),
                    &Patch::Apply(patch),
                )
                .await;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(spec.lease_renew) => {}
        }
    }
}

/// Makes pods bound to the hollow nodes look like they run, and finishes their graceful
/// deletion, until `shutdown`.
pub async fn run_pods(client: Client, spec: Spec, shutdown: CancellationToken) {
    let prefix = format!("{}-", spec.prefix);
    let informer = Informer::spawn(
        Api::<Pod>::all(client.clone()),
        watcher::Config::default().strip_managed_fields(),
        Default::default(),
        shutdown.clone(),
    );
    let sem = Arc::new(Semaphore::new(spec.concurrency.max(1)));
    let mut changes = informer.subscribe().boxed();
    let handle = |pod: Arc<Pod>| {
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        if !node.starts_with(&prefix) {
            return;
        }
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let sem = sem.clone();
        if pod.metadata.deletion_timestamp.is_some() {
            tokio::spawn(async move {
                let _p = sem.acquire_owned().await;
                let _ = api
                    .delete(
                        &name,
                        &DeleteParams {
                            grace_period_seconds: Some(0),
                            ..Default::default()
                        },
                    )
                    .await;
            });
            return;
        }
        let phase = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .unwrap_or("");
        if phase == "Running" || phase == "Succeeded" || phase == "Failed" {
            return;
        }
        let ip = {
            let h = name
                .bytes()
                .fold(0u32, |a, b| a.wrapping_mul(31).wrapping_add(u32::from(b)));
            format!(
                "10.{}.{}.{}",
                200 + (h >> 16) % 50,
                (h >> 8) % 256,
                h % 254 + 1
            )
        };
        let t = now();
        let containers: Vec<serde_json::Value> = pod
            .spec
            .as_ref()
            .map(|s| s.containers.iter().map(|c| json!({"name": c.name, "image": c.image, "imageID": "",
                "ready": true, "restartCount": 0, "started": true, "state": {"running": {"startedAt": t}}})).collect())
            .unwrap_or_default();
        let patch = json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "hostIP": "10.255.0.1",
            "startTime": t, "containerStatuses": containers, "conditions": [
                {"type": "Initialized", "status": "True", "lastTransitionTime": t},
                {"type": "Ready", "status": "True", "lastTransitionTime": t},
                {"type": "ContainersReady", "status": "True", "lastTransitionTime": t}]}});
        tokio::spawn(async move {
            let _p = sem.acquire_owned().await;
            let _ = api
                .patch_status(&name, &PatchParams::default(), &Patch::Strategic(patch))
                .await;
        });
    };
    informer.store().wait_until_ready().await;
    for p in informer.store().state() {
        handle(p);
    }
    loop {
        let c = tokio::select! {
            _ = shutdown.cancelled() => return,
            c = changes.next() => c,
        };
        match c {
            Some(Change::Applied(p)) => handle(p),
            Some(Change::Resynced) => {
                for p in informer.store().state() {
                    handle(p);
                }
            }
            Some(Change::Deleted(_)) => {}
            None => return,
        }
    }
}
