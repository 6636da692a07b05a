//! One container of a pod in the runtime: its configuration (command, args, environment,
//! working directory, mounts, cgroup resources, security context, log path, termination
//! message file) and the runtime calls that create, start, stop and inspect it.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::path::PathBuf;

use k8s_openapi::api::core::v1::{Container, Pod};
use skiff_proto::cri;

use super::env::ConfigError;
use super::volumes::Ready;
use super::{cgroups, labels, sandbox, PodConfig};
use crate::cri::{Result, Runtime};

/// A hash of a container's spec: a container whose hash differs from its running instance's
/// was changed (in practice: its image) and is restarted. Its resources are left out: they
/// change in place (see [`super::resize`]).
pub fn spec_hash(c: &Container) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let mut c = c.clone();
    c.resources = None;
    c.resize_policy = None;
    serde_json::to_string(&c).unwrap_or_default().hash(&mut h);
    format!("{:x}", h.finish())
}

/// Where a container instance's termination message is kept on the node.
pub fn termination_message_file(cfg: &PodConfig, uid: &str, name: &str, restart: u32) -> PathBuf {
    cfg.pod_dir(uid)
        .join("containers")
        .join(name)
        .join(restart.to_string())
}

/// Everything a container's configuration is made from.
pub struct Inputs<'a> {
    /// The pod.
    pub pod: &'a Pod,
    /// The container.
    pub container: &'a Container,
    /// Which restart of it this is.
    pub restart: u32,
    /// Its resolved environment.
    pub env: Vec<(String, String)>,
    /// The pod's volumes.
    pub volumes: &'a BTreeMap<String, Ready>,
    /// The pod's hosts file, mounted at `/etc/hosts`.
    pub hosts_file: Option<PathBuf>,
    /// The sandbox's namespaces, which the container joins.
    pub namespaces: Option<cri::NamespaceOption>,
    /// The node's settings.
    pub config: &'a PodConfig,
}

/// The container's runtime configuration.
pub fn config(i: Inputs<'_>) -> Result<cri::ContainerConfig, ConfigError> {
    let c = i.container;
    let pod = i.pod;
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let vars: BTreeMap<String, String> = i.env.iter().cloned().collect();
    let expand = |v: &Option<Vec<String>>| {
        v.iter()
            .flatten()
            .map(|s| super::env::expand(s, &vars))
            .collect::<Vec<_>>()
    };
    let mut mounts = Vec::new();
    for vm in c.volume_mounts.iter().flatten() {
        let v = i.volumes.get(&vm.name).ok_or_else(|| {
            ConfigError(format!(
                "cannot find volume {:?} to mount into container {:?}",
                vm.name, c.name
            ))
        })?;
        let mut host = v.host_path.clone();
        let sub = vm.sub_path.clone().filter(|s| !s.is_empty()).or_else(|| {
            vm.sub_path_expr
                .as_ref()
                .map(|e| super::env::expand(e, &vars))
        });
        if let Some(sub) = sub {
            if sub.starts_with('/') || sub.split('/').any(|p| p == "..") {
                return Err(ConfigError(format!(
                    "subPath {sub:?} must be a relative path without '..'"
                )));
            }
            host = host.join(&sub);
            if !host.exists() {
                std::fs::create_dir_all(&host).map_err(|e| {
                    ConfigError(format!("creating subPath {}: {e}", host.display()))
                })?;
            }
        }
        mounts.push(cri::Mount {
            container_path: vm.mount_path.clone(),
            host_path: host.to_string_lossy().into_owned(),
            readonly: vm.read_only.unwrap_or(false) || v.read_only,
            selinux_relabel: false,
            propagation: match vm.mount_propagation.as_deref() {
                Some("HostToContainer") => cri::MountPropagation::PropagationHostToContainer,
                Some("Bidirectional") => cri::MountPropagation::PropagationBidirectional,
                _ => cri::MountPropagation::PropagationPrivate,
            } as i32,
        });
    }
    fn mounted(mounts: &[cri::Mount], p: &str) -> bool {
        mounts.iter().any(|m| m.container_path == p)
    }
    if let Some(h) = &i.hosts_file {
        if !mounted(&mounts, "/etc/hosts") {
            mounts.push(cri::Mount {
                container_path: "/etc/hosts".into(),
                host_path: h.to_string_lossy().into_owned(),
                ..Default::default()
            });
        }
    }
    let msg_path = c
        .termination_message_path
        .clone()
        .unwrap_or_else(|| "/dev/termination-log".into());
    if !msg_path.is_empty() && !mounted(&mounts, &msg_path) {
        let file = termination_message_file(i.config, &uid, &c.name, i.restart);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| ConfigError(format!("creating {}: {e}", parent.display())))?;
        }
        std::fs::write(&file, b"")
            .map_err(|e| ConfigError(format!("creating {}: {e}", file.display())))?;
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666));
        mounts.push(cri::Mount {
            container_path: msg_path.clone(),
            host_path: file.to_string_lossy().into_owned(),
            ..Default::default()
        });
    }
    let psc = pod
        .spec
        .as_ref()
        .and_then(|s| s.security_context.clone())
        .unwrap_or_default();
    let sc = c.security_context.clone().unwrap_or_default();
    let privileged = sc.privileged.unwrap_or(false);
    let run_as_user = sc.run_as_user.or(psc.run_as_user);
    let run_as_group = sc.run_as_group.or(psc.run_as_group);
    let mut groups = psc.supplemental_groups.clone().unwrap_or_default();
    if let Some(g) = psc.fs_group {
        groups.push(g);
    }
    let caps = sc.capabilities.clone().unwrap_or_default();
    let mut annotations = HashMap::from([
        (labels::CONTAINER_HASH.to_string(), spec_hash(c)),
        (labels::RESTART_COUNT.to_string(), i.restart.to_string()),
        (labels::TERMINATION_MESSAGE_PATH.to_string(), msg_path),
    ]);
    annotations.extend(
        pod.metadata
            .annotations
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter(|(k, _)| !k.starts_with("io.kubernetes.")),
    );
    let mut container_labels = sandbox::pod_labels(pod);
    container_labels.insert(labels::CONTAINER_NAME.into(), c.name.clone());
    Ok(cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: c.name.clone(),
            attempt: i.restart,
        }),
        image: Some(cri::ImageSpec {
            image: c.image.clone().unwrap_or_default(),
            ..Default::default()
        }),
        command: expand(&c.command),
        args: expand(&c.args),
        working_dir: c.working_dir.clone().unwrap_or_default(),
        envs: i
            .env
            .into_iter()
            .map(|(key, value)| cri::KeyValue { key, value })
            .collect(),
        mounts,
        devices: Vec::new(),
        labels: container_labels,
        annotations,
        log_path: format!("{}/{}.log", c.name, i.restart),
        stdin: c.stdin.unwrap_or(false),
        stdin_once: c.stdin_once.unwrap_or(false),
        tty: c.tty.unwrap_or(false),
        linux: Some(cri::LinuxContainerConfig {
            resources: Some(cgroups::container_resources(
                pod,
                c,
                i.config.node_memory_bytes,
            )),
            security_context: Some(cri::LinuxContainerSecurityContext {
                capabilities: Some(cri::Capability {
                    add_capabilities: caps.add.unwrap_or_default(),
                    drop_capabilities: caps.drop.unwrap_or_default(),
                }),
                privileged,
                namespace_options: i.namespaces,
                run_as_user: run_as_user.map(|v| cri::Int64Value { value: v }),
                run_as_group: run_as_group.map(|v| cri::Int64Value { value: v }),
                readonly_rootfs: sc.read_only_root_filesystem.unwrap_or(false),
                supplemental_groups: groups,
                no_new_privs: sc.allow_privilege_escalation == Some(false),
                ..Default::default()
            }),
        }),
    })
}

/// One container instance of the pod as the runtime reports it.
#[derive(Debug, Clone)]
pub struct Instance {
    /// The runtime's view.
    pub status: cri::ContainerStatus,
    /// Which restart it is (from its annotation, else its attempt).
    pub restart: u32,
    /// The spec hash it was made from.
    pub hash: String,
}

impl Instance {
    /// The container's name.
    pub fn name(&self) -> &str {
        self.status
            .metadata
            .as_ref()
            .map(|m| m.name.as_str())
            .unwrap_or_default()
    }

    /// Its state.
    pub fn state(&self) -> cri::ContainerState {
        cri::ContainerState::try_from(self.status.state)
            .unwrap_or(cri::ContainerState::ContainerUnknown)
    }

    /// Whether it is running.
    pub fn running(&self) -> bool {
        self.state() == cri::ContainerState::ContainerRunning
    }

    /// Whether it has exited.
    pub fn exited(&self) -> bool {
        self.state() == cri::ContainerState::ContainerExited
    }
}

/// The pod's container instances in `sandbox_id`, by container name, newest first. Statuses of
/// exited containers do not change, so `cache` keeps them between calls.
pub async fn instances(
    runtime: &Runtime,
    uid: &str,
    sandbox_id: &str,
    cache: &mut HashMap<String, cri::ContainerStatus>,
) -> Result<HashMap<String, Vec<Instance>>> {
    let list = runtime
        .runtime
        .clone()
        .list_containers(cri::ListContainersRequest {
            filter: Some(cri::ContainerFilter {
                pod_sandbox_id: sandbox_id.to_string(),
                label_selector: HashMap::from([(labels::POD_UID.to_string(), uid.to_string())]),
                ..Default::default()
            }),
        })
        .await?
        .into_inner()
        .containers;
    let ids: std::collections::HashSet<&str> = list.iter().map(|c| c.id.as_str()).collect();
    cache.retain(|id, _| ids.contains(id.as_str()));
    let mut out: HashMap<String, Vec<Instance>> = HashMap::new();
    for c in &list {
        let cached = cache.get(&c.id).filter(|s| s.state == c.state).cloned();
        let status = match cached {
            Some(s) => s,
            None => {
                let mut tries = 0;
                let s = loop {
                    let s = match runtime
                        .runtime
                        .clone()
                        .container_status(cri::ContainerStatusRequest {
                            container_id: c.id.clone(),
                            verbose: false,
                        })
                        .await
                    {
                        Ok(r) => r.into_inner().status.unwrap_or_default(),
                        Err(s) if s.code() == tonic::Code::NotFound => break None,
                        Err(e) => return Err(e.into()),
                    };
                    // Killed (137) just now without a reason yet: the runtime may hear of
                    // the OOM kill a moment after the exit, and an exited status is kept for
                    // good, so it is asked again briefly before "Error" is believed.
                    let just_killed = s.state == cri::ContainerState::ContainerExited as i32
                        && s.exit_code == 137
                        && s.reason == "Error"
                        && std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map(|now| now.as_nanos() as i64 - s.finished_at < 2_000_000_000)
                            .unwrap_or(false);
                    if just_killed && tries < 3 {
                        tries += 1;
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                    break Some(s);
                };
                let Some(s) = s else { continue };
                cache.insert(c.id.clone(), s.clone());
                s
            }
        };
        let restart = c
            .annotations
            .get(labels::RESTART_COUNT)
            .and_then(|r| r.parse().ok())
            .unwrap_or_else(|| c.metadata.as_ref().map(|m| m.attempt).unwrap_or(0));
        let hash = c
            .annotations
            .get(labels::CONTAINER_HASH)
            .cloned()
            .unwrap_or_default();
        let name = c
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default();
        out.entry(name).or_default().push(Instance {
            status,
            restart,
            hash,
        });
    }
    for v in out.values_mut() {
        v.sort_by(|a, b| {
            b.restart
                .cmp(&a.restart)
                .then(b.status.created_at.cmp(&a.status.created_at))
        });
    }
    Ok(out)
}

/// Creates and starts a container; returns its id.
pub async fn create_and_start(
    runtime: &Runtime,
    sandbox: &sandbox::Sandbox,
    config: cri::ContainerConfig,
) -> Result<String> {
    let id = runtime
        .runtime
        .clone()
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: sandbox.id.clone(),
            config: Some(config),
            sandbox_config: Some(sandbox.config.clone()),
        })
        .await?
        .into_inner()
        .container_id;
    runtime
        .runtime
        .clone()
        .start_container(cri::StartContainerRequest {
            container_id: id.clone(),
        })
        .await?;
    Ok(id)
}

/// Stops a container: its stop signal, then SIGKILL after `grace_seconds`.
pub async fn stop(runtime: &Runtime, id: &str, grace_seconds: i64) -> Result<()> {
    match runtime
        .runtime
        .clone()
        .stop_container(cri::StopContainerRequest {
            container_id: id.to_string(),
            timeout: grace_seconds.max(0),
        })
        .await
    {
        Ok(_) => Ok(()),
        Err(s) if s.code() == tonic::Code::NotFound => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Removes a container.
pub async fn remove(runtime: &Runtime, id: &str) -> Result<()> {
    match runtime
        .runtime
        .clone()
        .remove_container(cri::RemoveContainerRequest {
            container_id: id.to_string(),
        })
        .await
    {
        Ok(_) => Ok(()),
        Err(s) if s.code() == tonic::Code::NotFound => Ok(()),
        Err(e) => Err(e.into()),
    }
}
