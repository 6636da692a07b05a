//! The node: registering its `Node` object, keeping its status true (capacity, allocatable,
//! conditions, addresses, node info, the CSI volumes in use) and its heartbeat `Lease` in
//! `kube-node-lease` fresh. `status.volumesAttached` is the attach/detach controller's: the
//! kubelet carries it over unchanged.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeSpec, NodeStatus,
    NodeSystemInfo, Taint,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use skiff_client::{Api, Client, PostParams};
use tokio_util::sync::CancellationToken;

use crate::cri::Runtime;

/// How the node describes itself.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The node's name.
    pub name: String,
    /// Extra labels (`--node-labels`).
    pub labels: BTreeMap<String, String>,
    /// Taints to register with (`--register-with-taints`).
    pub taints: Vec<Taint>,
    /// The pod CIDR to use when the control plane assigns none (`--pod-cidr`).
    pub pod_cidr: Option<String>,
    /// The node's address (`--node-ip`; default: the first non-loopback IPv4 address).
    pub node_ip: Option<String>,
    /// The kubelet's HTTPS port, published in `status.daemonEndpoints`.
    pub port: u16,
    /// `pods` capacity (`--max-pods`).
    pub max_pods: u32,
    /// Where the kubelet keeps its state (disk capacity and pressure are measured here).
    pub root_dir: PathBuf,
    /// How often the lease is renewed.
    pub lease_renew: Duration,
    /// How often the status is checked (written when it changed, or every `status_report`).
    pub status_update: Duration,
    /// How often an unchanged status is written anyway.
    pub status_report: Duration,
}

/// Parses `--node-labels=k=v,k2=v2`.
pub fn parse_labels(s: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("invalid label {part:?}: want key=value"))?;
        if k.is_empty() {
            return Err(format!("invalid label {part:?}: empty key"));
        }
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

/// Parses `--register-with-taints=key=value:Effect,key2:Effect`.
pub fn parse_taints(s: &str) -> Result<Vec<Taint>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (kv, effect) = part
            .rsplit_once(':')
            .ok_or_else(|| format!("invalid taint {part:?}: want key[=value]:Effect"))?;
        if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
            return Err(format!(
                "invalid taint effect {effect:?} in {part:?}: want NoSchedule, PreferNoSchedule or NoExecute"
            ));
        }
        let (key, value) = match kv.split_once('=') {
            Some((k, v)) => (k, Some(v.to_string())),
            None => (kv, None),
        };
        if key.is_empty() {
            return Err(format!("invalid taint {part:?}: empty key"));
        }
        out.push(Taint {
            key: key.to_string(),
            value,
            effect: effect.to_string(),
            time_added: None,
        });
    }
    Ok(out)
}

/// What the machine has, measured.
#[derive(Debug, Clone, PartialEq)]
struct Machine {
    cpus: usize,
    memory_bytes: u64,
    memory_available: u64,
    disk_bytes: u64,
    disk_available: u64,
    pids: u64,
    pid_max: u64,
}

fn meminfo(field: &str) -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .unwrap_or(0)
}

impl Machine {
    fn measure(root_dir: &std::path::Path) -> Machine {
        let (disk_bytes, disk_available) = nix::sys::statvfs::statvfs(root_dir)
            .map(|s| {
                let f = s.fragment_size();
                (s.blocks() * f, s.blocks_available() * f)
            })
            .unwrap_or((0, 0));
        let pids = std::fs::read_dir("/proc")
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter(|e| {
                        e.file_name()
                            .to_str()
                            .is_some_and(|n| n.parse::<u32>().is_ok())
                    })
                    .count() as u64
            })
            .unwrap_or(0);
        let pid_max = std::fs::read_to_string("/proc/sys/kernel/pid_max")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(32768);
        Machine {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_bytes: meminfo("MemTotal:"),
            memory_available: meminfo("MemAvailable:"),
            disk_bytes,
            disk_available,
            pids,
            pid_max,
        }
    }
}

/// Kubernetes' default hard eviction threshold for memory: allocatable is capacity less this.
const EVICTION_MEMORY: u64 = 100 << 20;

/// The node's CPU in millicores and its allocatable memory in bytes.
pub fn allocatable_cpu_memory(root_dir: &std::path::Path) -> (i64, i64) {
    let m = Machine::measure(root_dir);
    (
        m.cpus as i64 * 1000,
        m.memory_bytes.saturating_sub(EVICTION_MEMORY) as i64,
    )
}

/// The node's address when `--node-ip` is not given, chosen as Kubernetes' kubelet does: the
/// first IPv4 address the hostname resolves to that is not loopback; else the address of the
/// interface holding the default route; else the first global IPv4 address of an interface
/// that is not a bridge of pods or containers. Worked out once at start: the pod bridge this
/// node creates later must never become its address.
pub fn default_node_ip() -> Option<String> {
    let hostname = nix::unistd::gethostname().ok()?;
    let resolved = std::net::ToSocketAddrs::to_socket_addrs(&(hostname.to_str()?, 0))
        .into_iter()
        .flatten()
        .map(|a| a.ip())
        .find(|ip| ip.is_ipv4() && !ip.is_loopback() && !ip.is_unspecified());
    if let Some(ip) = resolved {
        return Some(ip.to_string());
    }
    let addrs: Vec<(String, std::net::Ipv4Addr)> = nix::ifaddrs::getifaddrs()
        .ok()?
        .filter_map(|a| Some((a.interface_name.clone(), a.address?.as_sockaddr_in()?.ip())))
        .filter(|(_, ip)| !ip.is_loopback() && !ip.is_link_local())
        .collect();
    let default_if = default_route_interface(&read_trim("/proc/net/route"));
    default_if
        .and_then(|name| addrs.iter().find(|(i, _)| *i == name))
        .or_else(|| addrs.iter().find(|(i, _)| !is_container_bridge(i)))
        .map(|(_, ip)| ip.to_string())
}

/// The interface of the IPv4 default route in a `/proc/net/route` table.
fn default_route_interface(table: &str) -> Option<String> {
    table.lines().skip(1).find_map(|l| {
        let cols: Vec<&str> = l.split_whitespace().collect();
        (cols.len() > 7 && cols[1] == "00000000" && cols[7] == "00000000")
            .then(|| cols[0].to_string())
    })
}

/// Interfaces whose addresses are never a node's: pod and container bridges and veths.
fn is_container_bridge(name: &str) -> bool {
    ["cni", "docker", "br-", "veth", "skiff"]
        .iter()
        .any(|p| name.starts_with(p))
}

fn os_image() -> String {
    std::fs::read_to_string("/etc/os-release")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_else(|| "Linux".into())
}

fn read_trim(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn condition(type_: &str, ok: bool, reason: &str, message: &str) -> NodeCondition {
    NodeCondition {
        type_: type_.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        ..Default::default()
    }
}

/// The node agent's view of its node.
pub struct NodeAgent {
    client: Client,
    config: NodeConfig,
    runtime: Runtime,
    in_use: Option<crate::pods::attach::InUse>,
}

impl NodeAgent {
    /// An agent for `config`, reading the runtime's health from `runtime`.
    pub fn new(client: Client, config: NodeConfig, runtime: Runtime) -> Self {
        NodeAgent {
            client,
            config,
            runtime,
            in_use: None,
        }
    }

    /// Reports these volumes in `status.volumesInUse`, written as soon as they change.
    pub fn with_volumes_in_use(mut self, in_use: crate::pods::attach::InUse) -> Self {
        self.in_use = Some(in_use);
        self
    }

    /// Adds what the status carries beyond the measurements: the volumes in use (this
    /// kubelet's) and the volumes attached (the attach/detach controller's, from `current`).
    fn with_volumes(&self, mut status: NodeStatus, current: Option<&NodeStatus>) -> NodeStatus {
        status.volumes_attached = current.and_then(|c| c.volumes_attached.clone());
        let in_use = self.in_use.as_ref().map(|u| u.list()).unwrap_or_default();
        status.volumes_in_use = (!in_use.is_empty()).then_some(in_use);
        status
    }

    fn labels(&self) -> BTreeMap<String, String> {
        let mut l = BTreeMap::from([
            (
                "kubernetes.io/hostname".to_string(),
                self.config.name.clone(),
            ),
            ("kubernetes.io/os".to_string(), "linux".to_string()),
            ("kubernetes.io/arch".to_string(), arch().to_string()),
            ("beta.kubernetes.io/os".to_string(), "linux".to_string()),
            ("beta.kubernetes.io/arch".to_string(), arch().to_string()),
        ]);
        l.extend(self.config.labels.clone());
        l
    }

    /// The status as measured now; `Ready` from the runtime's own conditions.
    async fn status(&self) -> NodeStatus {
        let m = Machine::measure(&self.config.root_dir);
        let q = |s: String| Quantity(s);
        let capacity = BTreeMap::from([
            ("cpu".to_string(), q(m.cpus.to_string())),
            (
                "memory".to_string(),
                q(format!("{}Ki", m.memory_bytes / 1024)),
            ),
            (
                "ephemeral-storage".to_string(),
                q(format!("{}Ki", m.disk_bytes / 1024)),
            ),
            ("pods".to_string(), q(self.config.max_pods.to_string())),
        ]);
        let mut allocatable = capacity.clone();
        allocatable.insert(
            "memory".into(),
            q(format!(
                "{}Ki",
                m.memory_bytes.saturating_sub(EVICTION_MEMORY) / 1024
            )),
        );
        // The default nodefs eviction threshold keeps 10% of the disk free.
        allocatable.insert(
            "ephemeral-storage".into(),
            q(format!("{}", m.disk_bytes / 10 * 9)),
        );
        let (ready, ready_msg, runtime_version) =
            match (self.runtime.status().await, self.runtime.version().await) {
                (Ok(conds), Ok(version)) => {
                    let failing: Vec<String> = conds
                        .iter()
                        .filter(|c| !c.status)
                        .map(|c| {
                            format!(
                                "{}=false reason:{} message:{}",
                                c.r#type, c.reason, c.message
                            )
                        })
                        .collect();
                    if failing.is_empty() {
                        (true, "kubelet is posting ready status".to_string(), version)
                    } else {
                        (
                            false,
                            format!("container runtime not ready: {}", failing.join(", ")),
                            version,
                        )
                    }
                }
                (Err(e), _) | (_, Err(e)) => (
                    false,
                    format!("container runtime is down: {e}"),
                    String::new(),
                ),
            };
        let memory_pressure = m.memory_available < EVICTION_MEMORY;
        let disk_pressure = m.disk_bytes > 0 && m.disk_available < m.disk_bytes / 10;
        let pid_pressure = m.pids * 10 > m.pid_max * 9;
        let conditions = vec![
            if memory_pressure {
                condition(
                    "MemoryPressure",
                    true,
                    "KubeletHasInsufficientMemory",
                    "kubelet has insufficient memory available",
                )
            } else {
                condition(
                    "MemoryPressure",
                    false,
                    "KubeletHasSufficientMemory",
                    "kubelet has sufficient memory available",
                )
            },
            if disk_pressure {
                condition(
                    "DiskPressure",
                    true,
                    "KubeletHasDiskPressure",
                    "kubelet has disk pressure",
                )
            } else {
                condition(
                    "DiskPressure",
                    false,
                    "KubeletHasNoDiskPressure",
                    "kubelet has no disk pressure",
                )
            },
            if pid_pressure {
                condition(
                    "PIDPressure",
                    true,
                    "KubeletHasInsufficientPID",
                    "kubelet has insufficient PID available",
                )
            } else {
                condition(
                    "PIDPressure",
                    false,
                    "KubeletHasSufficientPID",
                    "kubelet has sufficient PID available",
                )
            },
            if ready {
                condition("Ready", true, "KubeletReady", &ready_msg)
            } else {
                condition("Ready", false, "KubeletNotReady", &ready_msg)
            },
        ];
        let ip = self.config.node_ip.clone();
        let mut addresses: Vec<NodeAddress> = ip
            .into_iter()
            .map(|a| NodeAddress {
                type_: "InternalIP".into(),
                address: a,
            })
            .collect();
        addresses.push(NodeAddress {
            type_: "Hostname".into(),
            address: self.config.name.clone(),
        });
        NodeStatus {
            capacity: Some(capacity),
            allocatable: Some(allocatable),
            conditions: Some(conditions),
            addresses: Some(addresses),
            daemon_endpoints: Some(NodeDaemonEndpoints {
                kubelet_endpoint: Some(DaemonEndpoint {
                    port: self.config.port as i32,
                }),
            }),
            node_info: Some(NodeSystemInfo {
                architecture: arch().into(),
                boot_id: read_trim("/proc/sys/kernel/random/boot_id"),
                container_runtime_version: runtime_version,
                kernel_version: nix::sys::utsname::uname()
                    .map(|u| u.release().to_string_lossy().into_owned())
                    .unwrap_or_default(),
                kube_proxy_version: String::new(),
                kubelet_version: crate::KUBELET_VERSION.into(),
                machine_id: read_trim("/etc/machine-id"),
                operating_system: "linux".into(),
                os_image: os_image(),
                system_uuid: read_trim("/sys/class/dmi/id/product_uuid"),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// Creates the Node, or adopts the one already there (adding this kubelet's labels);
    /// returns it as stored with its status written.
    pub async fn register(&self) -> skiff_client::Result<Node> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let node = Node {
            metadata: ObjectMeta {
                name: Some(self.config.name.clone()),
                labels: Some(self.labels()),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                pod_cidr: self.config.pod_cidr.clone(),
                pod_cidrs: self.config.pod_cidr.clone().map(|c| vec![c]),
                taints: (!self.config.taints.is_empty()).then(|| self.config.taints.clone()),
                ..Default::default()
            }),
            // As Kubernetes' kubelet registers: with its capacity and conditions, so the
            // scheduler never sees the node without room for pods.
            status: Some(self.stamp(self.status().await, None)),
        };
        let mut stored = match nodes.create(&PostParams::default(), &node).await {
            Ok(n) => {
                tracing::info!(node = %self.config.name, "registered the node");
                n
            }
            Err(e) if e.is_already_exists() => {
                let patch = serde_json::json!({"metadata": {"labels": self.labels()}});
                let n = nodes
                    .patch(
                        &self.config.name,
                        &skiff_client::PatchParams::default(),
                        &skiff_client::Patch::Merge(&patch),
                    )
                    .await?;
                tracing::info!(node = %self.config.name, "the node was registered already; adopted it");
                n
            }
            Err(e) => return Err(e),
        };
        // The control plane may change the Node meanwhile (its pod CIDR, taints): on a
        // conflict, read it again and write the status onto the newer one.
        let mut attempts = 0;
        loop {
            let measured = self.with_volumes(self.status().await, stored.status.as_ref());
            stored.status = Some(self.stamp(measured, None));
            match nodes
                .replace_status(&self.config.name, &PostParams::default(), &stored)
                .await
            {
                Err(e) if e.is_conflict() && attempts < 10 => {
                    attempts += 1;
                    stored = nodes.get(&self.config.name).await?;
                }
                result => return result,
            }
        }
    }

    /// Fills condition times: heartbeat now, transition kept from `old` when the status held.
    fn stamp(&self, mut status: NodeStatus, old: Option<&NodeStatus>) -> NodeStatus {
        let now = skiff_client::time::now_time();
        for c in status.conditions.iter_mut().flatten() {
            c.last_heartbeat_time = Some(now.clone());
            let prev = old
                .and_then(|o| o.conditions.as_ref())
                .and_then(|cs| cs.iter().find(|p| p.type_ == c.type_));
            c.last_transition_time = match prev {
                Some(p) if p.status == c.status => p.last_transition_time.clone(),
                _ => Some(now.clone()),
            };
        }
        status
    }

    /// The pod CIDR the node has (the control plane's, else `--pod-cidr`).
    pub async fn pod_cidr(&self) -> Option<String> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        nodes
            .get_opt(&self.config.name)
            .await
            .ok()
            .flatten()
            .and_then(|n| n.spec?.pod_cidr)
            .or_else(|| self.config.pod_cidr.clone())
    }

    /// Writes the status when it changed (ignoring heartbeat times) or every `status_report`,
    /// checking every `status_update`, until `shutdown`.
    pub async fn keep_status(&self, shutdown: CancellationToken) {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let mut last_written = tokio::time::Instant::now();
        let mut tick = tokio::time::interval(self.config.status_update);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut volumes = self.in_use.as_ref().map(|u| u.subscribe());
        let mut again = false;
        loop {
            if !again {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                    Some(Ok(())) = async {
                        match volumes.as_mut() {
                            Some(v) => Some(v.changed().await),
                            None => None,
                        }
                    } => {}
                }
            }
            again = false;
            let status = self.status().await;
            let current = match nodes.get(&self.config.name).await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %e, "reading the node");
                    continue;
                }
            };
            let old = current.status.clone().unwrap_or_default();
            let status = self.with_volumes(status, Some(&old));
            let due = last_written.elapsed() >= self.config.status_report;
            if !due && same_status(&old, &status) {
                if let Some(u) = &self.in_use {
                    u.reported(old.volumes_in_use.as_deref().unwrap_or_default());
                }
                continue;
            }
            let in_use = status.volumes_in_use.clone().unwrap_or_default();
            let mut next = current;
            next.status = Some(self.stamp(status, Some(&old)));
            match nodes
                .replace_status(&self.config.name, &PostParams::default(), &next)
                .await
            {
                Ok(_) => {
                    last_written = tokio::time::Instant::now();
                    if let Some(u) = &self.in_use {
                        u.reported(&in_use);
                    }
                }
                // Another writer (the attach/detach controller) came first: write onto its
                // version at once rather than a tick later.
                Err(e) if e.is_conflict() => again = true,
                Err(e) => tracing::warn!(error = %e, "writing the node status"),
            }
        }
    }

    /// Renews the node's Lease in `kube-node-lease` every `lease_renew` until `shutdown`.
    pub async fn keep_lease(&self, node_uid: String, shutdown: CancellationToken) {
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), "kube-node-lease");
        let mut tick = tokio::time::interval(self.config.lease_renew);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            if let Err(e) = self.renew(&leases, &node_uid).await {
                tracing::warn!(error = %e, "renewing the node lease");
            }
        }
    }

    async fn renew(&self, leases: &Api<Lease>, node_uid: &str) -> skiff_client::Result<()> {
        let now = skiff_client::time::now_micro();
        let duration = (self.config.lease_renew.as_secs() * 4).max(1) as i32;
        match leases.get_opt(&self.config.name).await? {
            Some(mut l) => {
                let spec = l.spec.get_or_insert_with(Default::default);
                spec.holder_identity = Some(self.config.name.clone());
                spec.lease_duration_seconds = Some(duration);
                spec.renew_time = Some(now);
                leases
                    .replace(&self.config.name, &PostParams::default(), &l)
                    .await?;
            }
            None => {
                let l = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.config.name.clone()),
                        namespace: Some("kube-node-lease".into()),
                        owner_references: Some(vec![OwnerReference {
                            api_version: "v1".into(),
                            kind: "Node".into(),
                            name: self.config.name.clone(),
                            uid: node_uid.to_string(),
                            ..Default::default()
                        }]),
                        ..Default::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.config.name.clone()),
                        lease_duration_seconds: Some(duration),
                        renew_time: Some(now),
                        ..Default::default()
                    }),
                };
                leases.create(&PostParams::default(), &l).await?;
            }
        }
        Ok(())
    }
}

/// Whether two statuses agree in everything but heartbeat and transition times.
fn same_status(a: &NodeStatus, b: &NodeStatus) -> bool {
    let strip = |s: &NodeStatus| {
        let mut s = s.clone();
        for c in s.conditions.iter_mut().flatten() {
            c.last_heartbeat_time = None;
            c.last_transition_time = None;
        }
        s
    };
    strip(a) == strip(b)
}

fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    #[test]
    fn the_default_route_names_the_node_interface_and_bridges_never_do() {
        let table = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\n\
            cni0\t0001F40A\t00000000\t0001\t0\t0\t0\t00FFFFFF\n\
            eth0\t00000000\t0100A8C0\t0003\t0\t0\t0\t00000000\n";
        assert_eq!(default_route_interface(table).as_deref(), Some("eth0"));
        let no_default = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\n\
            eth0\t00001EAC\t00000000\t0001\t0\t0\t0\t00FFFFFF\n";
        assert_eq!(default_route_interface(no_default), None);
        assert!(is_container_bridge("cni0"));
        assert!(is_container_bridge("skiff-discard"));
        assert!(!is_container_bridge("eth0"));
        assert!(!is_container_bridge("ens3"));
    }

    #[test]
    fn labels_and_taints_parse_as_kubelet_flags_do() {
        let l = parse_labels("topology.kubernetes.io/zone=a, tier=web").unwrap();
        assert_eq!(l["topology.kubernetes.io/zone"], "a");
        assert_eq!(l["tier"], "web");
        assert!(parse_labels("novalue").unwrap_err().contains("key=value"));
        let t = parse_taints("dedicated=gpu:NoSchedule,spot:PreferNoSchedule").unwrap();
        assert_eq!(
            (
                t[0].key.as_str(),
                t[0].value.as_deref(),
                t[0].effect.as_str()
            ),
            ("dedicated", Some("gpu"), "NoSchedule")
        );
        assert_eq!((t[1].key.as_str(), t[1].value.as_deref()), ("spot", None));
        assert!(parse_taints("a=b:Sometimes")
            .unwrap_err()
            .contains("effect"));
        assert!(parse_taints("a=b").unwrap_err().contains("Effect"));
    }

    #[test]
    fn heartbeat_times_do_not_make_a_status_different() {
        let c = |t: i64| NodeCondition {
            type_: "Ready".into(),
            status: "True".into(),
            last_heartbeat_time: Some(Time(k8s_openapi::jiff::Timestamp::from_second(t).unwrap())),
            ..Default::default()
        };
        let a = NodeStatus {
            conditions: Some(vec![c(1)]),
            ..Default::default()
        };
        let mut b = NodeStatus {
            conditions: Some(vec![c(2)]),
            ..Default::default()
        };
        assert!(same_status(&a, &b));
        b.conditions.as_mut().unwrap()[0].status = "False".into();
        assert!(!same_status(&a, &b));
    }
}
