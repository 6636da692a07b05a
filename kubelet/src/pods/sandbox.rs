//! A pod's sandbox: its network (CNI through the runtime, or the node's for `hostNetwork`),
//! hostname, DNS, host ports, shared namespaces and cgroup parent, and the runtime handler
//! that runs it (its RuntimeClass's).

use std::collections::HashMap;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::node::v1::RuntimeClass;
use skiff_client::informer::Informer;
use skiff_client::reflector::{ObjectKey, Store};
use skiff_client::{watcher, Api, Client};
use skiff_proto::cri;
use tokio_util::sync::CancellationToken;

use super::{cgroups, dns, labels, PodConfig};
use crate::cri::{Result, Runtime};

/// A sandbox the pod has.
#[derive(Debug, Clone)]
pub struct Sandbox {
    /// The runtime's id.
    pub id: String,
    /// Its IPs (the node's for a host network pod).
    pub ips: Vec<String>,
    /// The configuration it was made with (containers are created with it).
    pub config: cri::PodSandboxConfig,
}

/// The labels identifying `pod`'s sandboxes and containers.
pub fn pod_labels(pod: &Pod) -> HashMap<String, String> {
    let m = &pod.metadata;
    let mut l: HashMap<String, String> = m.labels.clone().unwrap_or_default().into_iter().collect();
    l.insert(labels::POD_NAME.into(), m.name.clone().unwrap_or_default());
    l.insert(
        labels::POD_NAMESPACE.into(),
        m.namespace.clone().unwrap_or_default(),
    );
    l.insert(labels::POD_UID.into(), m.uid.clone().unwrap_or_default());
    l
}

/// Whether the pod uses the node's network.
pub fn host_network(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false)
}

/// The sandbox configuration of `pod`, attempt `attempt`.
pub fn config(pod: &Pod, attempt: u32, cfg: &PodConfig) -> cri::PodSandboxConfig {
    let m = &pod.metadata;
    let spec = pod.spec.clone().unwrap_or_default();
    let ns_mode = |on: Option<bool>| {
        if on.unwrap_or(false) {
            cri::NamespaceMode::Node as i32
        } else {
            cri::NamespaceMode::Pod as i32
        }
    };
    let pid = if spec.host_pid.unwrap_or(false) {
        cri::NamespaceMode::Node as i32
    } else if spec.share_process_namespace.unwrap_or(false) {
        cri::NamespaceMode::Pod as i32
    } else {
        cri::NamespaceMode::Container as i32
    };
    let psc = spec.security_context.clone().unwrap_or_default();
    let privileged = super::all_containers(pod).any(|c| {
        c.security_context
            .as_ref()
            .and_then(|s| s.privileged)
            .unwrap_or(false)
    });
    let port_mappings = spec
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .filter(|p| p.host_port.unwrap_or(0) > 0)
        .map(|p| cri::PortMapping {
            protocol: match p.protocol.as_deref() {
                Some("UDP") => cri::Protocol::Udp as i32,
                Some("SCTP") => cri::Protocol::Sctp as i32,
                _ => cri::Protocol::Tcp as i32,
            },
            container_port: p.container_port,
            host_port: p.host_port.unwrap_or(0),
            host_ip: p.host_ip.clone().unwrap_or_default(),
        })
        .collect();
    let mut annotations: HashMap<String, String> = m
        .annotations
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    annotations.insert(
        labels::GRACE_PERIOD.into(),
        spec.termination_grace_period_seconds
            .unwrap_or(30)
            .to_string(),
    );
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: m.name.clone().unwrap_or_default(),
            uid: m.uid.clone().unwrap_or_default(),
            namespace: m.namespace.clone().unwrap_or_default(),
            attempt,
        }),
        hostname: if host_network(pod) {
            String::new()
        } else {
            dns::hostname(pod)
        },
        log_directory: cfg.log_dir(pod).to_string_lossy().into_owned(),
        dns_config: Some(dns::sandbox_dns(pod, cfg)),
        port_mappings,
        labels: pod_labels(pod),
        annotations,
        linux: Some(cri::LinuxPodSandboxConfig {
            cgroup_parent: cgroups::pod_cgroup(&cfg.cgroup_root, pod),
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(cri::NamespaceOption {
                    network: ns_mode(spec.host_network),
                    pid,
                    ipc: ns_mode(spec.host_ipc),
                    target_id: String::new(),
                }),
                run_as_user: psc.run_as_user.map(|v| cri::Int64Value { value: v }),
                run_as_group: psc.run_as_group.map(|v| cri::Int64Value { value: v }),
                supplemental_groups: psc.supplemental_groups.clone().unwrap_or_default(),
                privileged,
                ..Default::default()
            }),
            sysctls: psc
                .sysctls
                .iter()
                .flatten()
                .map(|s| (s.name.clone(), s.value.clone()))
                .collect(),
            ..Default::default()
        }),
    }
}

/// The pod's sandboxes known to the runtime, newest first.
pub async fn list(runtime: &Runtime, uid: &str) -> Result<Vec<cri::PodSandbox>> {
    let mut items = runtime
        .runtime
        .clone()
        .list_pod_sandbox(cri::ListPodSandboxRequest {
            filter: Some(cri::PodSandboxFilter {
                label_selector: HashMap::from([(labels::POD_UID.to_string(), uid.to_string())]),
                ..Default::default()
            }),
        })
        .await?
        .into_inner()
        .items;
    items.sort_by_key(|s| std::cmp::Reverse(s.created_at));
    Ok(items)
}

/// The IPs of `pod`'s sandbox `id`: the node's for a host network pod, else what the
/// runtime's CNI gave it.
pub async fn pod_ips(runtime: &Runtime, pod: &Pod, id: &str, node_ip: &str) -> Result<Vec<String>> {
    if host_network(pod) {
        return Ok(vec![node_ip.to_string()]);
    }
    ips(runtime, id).await
}

/// The IPs of a sandbox.
pub async fn ips(runtime: &Runtime, id: &str) -> Result<Vec<String>> {
    let s = runtime
        .runtime
        .clone()
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: id.to_string(),
            verbose: false,
        })
        .await?
        .into_inner();
    Ok(s.status
        .and_then(|s| s.network)
        .map(|n| {
            std::iter::once(n.ip)
                .chain(n.additional_ips.into_iter().map(|i| i.ip))
                .filter(|ip| !ip.is_empty())
                .collect()
        })
        .unwrap_or_default())
}

/// Why a pod's runtime handler is not known.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// The pod names a RuntimeClass that does not exist (worded as Kubernetes' lister says it).
    #[error("runtimeclass.node.k8s.io {0:?} not found")]
    NotFound(String),
    /// The API server could not be asked.
    #[error("failed to lookup RuntimeClass {name}: {source}")]
    Lookup {
        /// The class.
        name: String,
        /// Why.
        #[source]
        source: skiff_client::Error,
    },
}

/// The RuntimeClasses pods name, cached by an informer, to find the handler that runs a
/// pod's sandbox. Cheap to clone.
#[derive(Clone)]
pub struct RuntimeClasses {
    api: Api<RuntimeClass>,
    store: Store<RuntimeClass>,
}

impl RuntimeClasses {
    /// Watches RuntimeClasses until `shutdown`.
    pub fn spawn(client: Client, shutdown: CancellationToken) -> Self {
        let api: Api<RuntimeClass> = Api::all(client);
        let informer = Informer::spawn(
            api.clone(),
            watcher::Config::default().strip_managed_fields(),
            HashMap::new(),
            shutdown,
        );
        RuntimeClasses {
            api,
            store: informer.store(),
        }
    }

    /// The CRI runtime handler for `pod`: its RuntimeClass's `handler`, or "" (the runtime's
    /// default) for a pod that names none. A class the cache lacks (not yet seen, or the cache
    /// still filling) is asked of the API server before it counts as missing.
    pub async fn handler(&self, pod: &Pod) -> Result<String, HandlerError> {
        let Some(name) = pod
            .spec
            .as_ref()
            .and_then(|s| s.runtime_class_name.as_deref())
            .filter(|n| !n.is_empty())
        else {
            return Ok(String::new());
        };
        if let Some(rc) = self.store.get(&ObjectKey::new("", name)) {
            return Ok(rc.handler.clone());
        }
        match self.api.get(name).await {
            Ok(rc) => Ok(rc.handler),
            Err(e) if e.is_not_found() => Err(HandlerError::NotFound(name.to_string())),
            Err(source) => Err(HandlerError::Lookup {
                name: name.to_string(),
                source,
            }),
        }
    }
}

/// A runtime call's failure as Kubernetes' kubelet words it (Go's gRPC error text:
/// `rpc error: code = Unknown desc = ...`), for events.
pub fn rpc_error(e: &crate::cri::Error) -> String {
    match e {
        crate::cri::Error::Call(s) => {
            format!("rpc error: code = {:?} desc = {}", s.code(), s.message())
        }
        other => other.to_string(),
    }
}

/// Starts a sandbox with the runtime's `handler` ("" for its default).
pub async fn run(
    runtime: &Runtime,
    config: cri::PodSandboxConfig,
    handler: &str,
) -> Result<String> {
    Ok(runtime
        .runtime
        .clone()
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: handler.to_string(),
        })
        .await?
        .into_inner()
        .pod_sandbox_id)
}

/// Stops a sandbox: its containers are killed and its network torn down (the IP released).
pub async fn stop(runtime: &Runtime, id: &str) -> Result<()> {
    runtime
        .runtime
        .clone()
        .stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: id.to_string(),
        })
        .await?;
    Ok(())
}

/// Stops and removes a sandbox and its containers.
pub async fn remove(runtime: &Runtime, id: &str) -> Result<()> {
    stop(runtime, id).await?;
    runtime
        .runtime
        .clone()
        .remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: id.to_string(),
        })
        .await?;
    Ok(())
}
