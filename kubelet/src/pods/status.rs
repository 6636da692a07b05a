//! A pod's status as the kubelet reports it: phase, conditions, container statuses (state with
//! reasons and exit codes, ready, started, restarts, image, imageID, containerID, lastState),
//! IPs and start time — computed from what the runtime says and what the worker knows, with
//! condition transition times kept while a condition holds.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::Value;

use super::container::Instance;
use super::probes::Results;

/// Everything a status is computed from.
pub struct Snapshot<'a> {
    /// The pod as last seen.
    pub pod: &'a Pod,
    /// The sandbox is running (with its network).
    pub sandbox_ready: bool,
    /// The pod's IPs.
    pub pod_ips: &'a [String],
    /// The node's IP.
    pub host_ip: &'a str,
    /// Container instances by name, newest first.
    pub instances: &'a HashMap<String, Vec<Instance>>,
    /// Why a container waits (image pull, back-off, configuration errors), by name.
    pub waiting: &'a HashMap<String, (String, String)>,
    /// Probe results by container id.
    pub probes: &'a dyn Fn(&str, &Container) -> Results,
    /// Termination messages by container id.
    pub messages: &'a HashMap<String, String>,
    /// All init containers have completed (sidecars: started).
    pub initialized: bool,
    /// The pod is finished with this phase.
    pub terminal: Option<&'static str>,
    /// The pod-level reason and message (e.g. `DeadlineExceeded`).
    pub reason: Option<(String, String)>,
    /// When the kubelet first took the pod on.
    pub start_time: &'a Time,
}

fn time_of(ns: i64) -> Option<Time> {
    if ns <= 0 {
        return None;
    }
    let ts = k8s_openapi::jiff::Timestamp::from_nanosecond(ns as i128).ok()?;
    // Kubernetes' status times have second precision.
    Some(Time(
        k8s_openapi::jiff::Timestamp::from_second(ts.as_second()).ok()?,
    ))
}

fn terminated(i: &Instance, messages: &HashMap<String, String>) -> ContainerStateTerminated {
    let s = &i.status;
    let message = messages
        .get(&s.id)
        .cloned()
        .filter(|m| !m.is_empty())
        .or_else(|| Some(s.message.clone()).filter(|m| !m.is_empty()));
    ContainerStateTerminated {
        container_id: Some(format!("containerd://{}", s.id)),
        exit_code: s.exit_code,
        finished_at: time_of(s.finished_at),
        message,
        reason: Some(if s.reason.is_empty() {
            if s.exit_code == 0 {
                "Completed"
            } else {
                "Error"
            }
            .to_string()
        } else {
            s.reason.clone()
        }),
        signal: None,
        started_at: time_of(s.started_at),
    }
}

fn waiting(reason: &str, message: Option<&str>) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.into()),
            message: message.filter(|m| !m.is_empty()).map(String::from),
        }),
        ..Default::default()
    }
}

/// One container's status. As the kubelet reports them, a regular init container is `ready`
/// once it has completed (exited 0) and never while it runs; every other container (sidecars
/// included) is `started` once running with its startup probe passed, and `ready` once its
/// readiness probe passes too.
fn container_status(
    snap: &Snapshot<'_>,
    c: &Container,
    default_reason: &str,
    run_to_completion: bool,
) -> ContainerStatus {
    let list = snap.instances.get(&c.name);
    let latest = list.and_then(|l| l.first());
    let previous = list.and_then(|l| l.get(1)).filter(|p| p.exited());
    let w = snap.waiting.get(&c.name);
    let mut last_state = None;
    let show_waiting = w.is_some() && !latest.is_some_and(|l| l.running());
    let (state, ready, started) = match (w, latest) {
        (Some((reason, msg)), latest) if show_waiting => {
            last_state = latest
                .filter(|l| l.exited())
                .or(previous)
                .map(|l| terminated(l, snap.messages));
            (waiting(reason, Some(msg)), false, false)
        }
        (_, Some(l)) => {
            last_state = previous.map(|p| terminated(p, snap.messages));
            if l.running() {
                let r = (snap.probes)(&l.status.id, c);
                (
                    ContainerState {
                        running: Some(ContainerStateRunning {
                            started_at: time_of(l.status.started_at),
                        }),
                        ..Default::default()
                    },
                    r.ready && r.started && !run_to_completion,
                    r.started,
                )
            } else if l.exited() {
                (
                    ContainerState {
                        terminated: Some(terminated(l, snap.messages)),
                        ..Default::default()
                    },
                    run_to_completion && l.status.exit_code == 0,
                    false,
                )
            } else if l.state() == skiff_proto::cri::ContainerState::ContainerCreated {
                (waiting("ContainerCreating", None), false, false)
            } else {
                (
                    ContainerState {
                        terminated: Some(ContainerStateTerminated {
                            exit_code: 137,
                            reason: Some("ContainerStatusUnknown".into()),
                            message: Some(
                                "The container could not be located when the pod was terminated"
                                    .into(),
                            ),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                    false,
                    false,
                )
            }
        }
        (_, None) => (waiting(default_reason, None), false, false),
    };
    let last_state = last_state.map(|t| ContainerState {
        terminated: Some(t),
        ..Default::default()
    });
    ContainerStatus {
        name: c.name.clone(),
        image: c.image.clone().unwrap_or_default(),
        image_id: latest
            .map(|l| l.status.image_ref.clone())
            .unwrap_or_default(),
        container_id: latest.map(|l| format!("containerd://{}", l.status.id)),
        ready,
        started: Some(started),
        restart_count: latest.map(|l| l.restart as i32).unwrap_or(0),
        state: Some(state),
        last_state: Some(last_state.unwrap_or_default()),
        ..Default::default()
    }
}

/// What a container's status counts as for the pod's phase.
enum Count {
    Running,
    Waiting,
    Succeeded,
    Failed,
}

fn count(s: &ContainerStatus) -> Count {
    let st = s.state.clone().unwrap_or_default();
    if st.running.is_some() {
        Count::Running
    } else if let Some(t) = st.terminated {
        if t.exit_code == 0 {
            Count::Succeeded
        } else {
            Count::Failed
        }
    } else if let Some(t) = s.last_state.as_ref().and_then(|l| l.terminated.as_ref()) {
        // Waiting to restart after having run: counts as stopped, as Kubernetes counts it.
        if t.exit_code == 0 {
            Count::Succeeded
        } else {
            Count::Failed
        }
    } else {
        Count::Waiting
    }
}

/// The pod's phase from its regular containers' statuses.
pub fn phase(
    restart_policy: &str,
    initialized: bool,
    statuses: &[ContainerStatus],
) -> &'static str {
    if !initialized {
        return "Pending";
    }
    let (mut running, mut waiting, mut succeeded, mut failed) = (0, 0, 0, 0);
    for s in statuses {
        match count(s) {
            Count::Running => running += 1,
            Count::Waiting => waiting += 1,
            Count::Succeeded => succeeded += 1,
            Count::Failed => failed += 1,
        }
    }
    if waiting > 0 {
        "Pending"
    } else if running > 0 {
        "Running"
    } else if succeeded + failed > 0 {
        match restart_policy {
            "Always" => "Running",
            "OnFailure" if failed > 0 => "Running",
            "Never" if failed > 0 => "Failed",
            _ => "Succeeded",
        }
    } else {
        "Pending"
    }
}

fn condition(type_: &str, ok: bool, reason: Option<&str>, message: Option<String>) -> PodCondition {
    PodCondition {
        type_: type_.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: (!ok).then(|| reason.map(String::from)).flatten(),
        message: (!ok).then_some(message).flatten(),
        ..Default::default()
    }
}

/// The pod's status.
pub fn compute(snap: &Snapshot<'_>) -> PodStatus {
    let spec = snap.pod.spec.clone().unwrap_or_default();
    let restart_policy = spec.restart_policy.as_deref().unwrap_or("Always");
    let init_statuses: Vec<ContainerStatus> = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| {
            let sidecar = c.restart_policy.as_deref() == Some("Always");
            container_status(snap, c, "PodInitializing", !sidecar)
        })
        .collect();
    // A container not made yet waits with `PodInitializing` in a pod with init containers
    // (until it is made, whether or not they are done), else `ContainerCreating`.
    let default_reason = if spec.init_containers.as_ref().is_some_and(|i| !i.is_empty()) {
        "PodInitializing"
    } else {
        "ContainerCreating"
    };
    let statuses: Vec<ContainerStatus> = spec
        .containers
        .iter()
        .map(|c| container_status(snap, c, default_reason, false))
        .collect();
    // Ephemeral containers are reported but count for neither phase nor readiness.
    let ephemeral_statuses: Vec<ContainerStatus> = super::ephemeral_containers(snap.pod)
        .iter()
        .map(|(c, _)| container_status(snap, c, default_reason, false))
        .collect();
    let phase = snap
        .terminal
        .unwrap_or_else(|| phase(restart_policy, snap.initialized, &statuses));
    // Sidecars count for readiness like regular containers.
    let sidecar_unready: Vec<String> = spec
        .init_containers
        .iter()
        .flatten()
        .zip(&init_statuses)
        .filter(|(c, s)| c.restart_policy.as_deref() == Some("Always") && !s.ready)
        .map(|(c, _)| c.name.clone())
        .collect();
    let unready: Vec<String> = statuses
        .iter()
        .filter(|s| !s.ready)
        .map(|s| s.name.clone())
        .chain(sidecar_unready)
        .collect();
    let uninitialized: Vec<String> = spec
        .init_containers
        .iter()
        .flatten()
        .zip(&init_statuses)
        .filter(|(c, s)| {
            let done = s
                .state
                .as_ref()
                .and_then(|st| st.terminated.as_ref())
                .is_some_and(|t| t.exit_code == 0);
            let sidecar_up =
                c.restart_policy.as_deref() == Some("Always") && s.started == Some(true);
            !(done || sidecar_up || snap.initialized)
        })
        .map(|(c, _)| c.name.clone())
        .collect();
    let finished = matches!(phase, "Succeeded" | "Failed");
    let containers_ready = unready.is_empty() && !finished;
    let gates_ok = spec.readiness_gates.iter().flatten().all(|g| {
        snap.pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == g.condition_type))
            .is_some_and(|c| c.status == "True")
    });
    let (ready_reason, ready_msg) = if finished {
        ("PodCompleted", None)
    } else {
        (
            "ContainersNotReady",
            Some(format!(
                "containers with unready status: [{}]",
                unready.join(" ")
            )),
        )
    };
    let mut conditions = vec![
        condition("PodReadyToStartContainers", snap.sandbox_ready, None, None),
        condition(
            "Initialized",
            uninitialized.is_empty(),
            Some(if finished {
                "PodCompleted"
            } else {
                "ContainersNotInitialized"
            }),
            Some(format!(
                "containers with incomplete status: [{}]",
                uninitialized.join(" ")
            )),
        ),
        if containers_ready && !gates_ok {
            condition(
                "Ready",
                false,
                Some("ReadinessGatesNotReady"),
                Some("the status of pod readiness gates is not \"True\"".into()),
            )
        } else {
            condition(
                "Ready",
                containers_ready,
                Some(ready_reason),
                ready_msg.clone(),
            )
        },
        condition(
            "ContainersReady",
            containers_ready,
            Some(ready_reason),
            ready_msg,
        ),
    ];
    let old_conditions = snap
        .pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let now = skiff_client::time::now_time();
    for c in &mut conditions {
        let prev = old_conditions.iter().find(|p| p.type_ == c.type_);
        c.last_transition_time = match prev {
            Some(p) if p.status == c.status => p.last_transition_time.clone(),
            _ => Some(now.clone()),
        };
    }
    // Conditions others own (PodScheduled, DisruptionTarget, readiness gates) stay as they are;
    // a pod bound without a scheduler is scheduled all the same, as kubelet reports it.
    if !old_conditions.iter().any(|c| c.type_ == "PodScheduled") {
        let mut c = condition("PodScheduled", true, None, None);
        c.last_transition_time = Some(snap.start_time.clone());
        conditions.push(c);
    }
    for c in old_conditions {
        if !conditions.iter().any(|x| x.type_ == c.type_) {
            conditions.push(c);
        }
    }
    let ips: Vec<PodIP> = snap
        .pod_ips
        .iter()
        .map(|ip| PodIP { ip: ip.clone() })
        .collect();
    PodStatus {
        phase: Some(phase.into()),
        conditions: Some(conditions),
        host_ip: Some(snap.host_ip.to_string()).filter(|s| !s.is_empty()),
        host_ips: (!snap.host_ip.is_empty()).then(|| {
            vec![HostIP {
                ip: snap.host_ip.to_string(),
            }]
        }),
        pod_ip: snap.pod_ips.first().cloned(),
        pod_ips: (!ips.is_empty()).then_some(ips),
        start_time: Some(snap.start_time.clone()),
        init_container_statuses: (!init_statuses.is_empty()).then_some(init_statuses),
        container_statuses: Some(statuses),
        ephemeral_container_statuses: (!ephemeral_statuses.is_empty())
            .then_some(ephemeral_statuses),
        reason: snap.reason.as_ref().map(|r| r.0.clone()),
        message: snap.reason.as_ref().map(|r| r.1.clone()),
        qos_class: Some(super::cgroups::qos_class(snap.pod).as_str().into()),
        observed_generation: snap.pod.metadata.generation,
        ..Default::default()
    }
}

/// The status of a pod the kubelet refused to run (its admission failed): `Failed` with the
/// reason and message, as the kubelet writes it, and nothing of containers that never were.
pub fn rejected(snap: &Snapshot<'_>) -> PodStatus {
    let old = snap.pod.status.clone().unwrap_or_default();
    PodStatus {
        phase: Some("Failed".into()),
        conditions: old.conditions,
        reason: snap.reason.as_ref().map(|r| r.0.clone()),
        message: snap.reason.as_ref().map(|r| r.1.clone()),
        qos_class: Some(super::cgroups::qos_class(snap.pod).as_str().into()),
        observed_generation: snap.pod.metadata.generation,
        ..Default::default()
    }
}

/// The fields of `status` the kubelet owns.
const OWNED: &[&str] = &[
    "phase",
    "conditions",
    "hostIP",
    "hostIPs",
    "podIP",
    "podIPs",
    "startTime",
    "initContainerStatuses",
    "containerStatuses",
    "ephemeralContainerStatuses",
    "reason",
    "message",
    "qosClass",
    "observedGeneration",
];

/// A merge patch setting the kubelet's part of the status to `status` (fields it no longer
/// has are removed).
pub fn patch(status: &PodStatus) -> Value {
    let mut v = serde_json::to_value(status).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        for k in OWNED {
            m.entry(k.to_string()).or_insert(Value::Null);
        }
    }
    serde_json::json!({ "status": v })
}

/// Reads the termination messages of exited containers (at most 4096 bytes each, as
/// Kubernetes), falling back to the log's tail for `FallbackToLogsOnError` failures.
pub fn termination_messages(
    containers: &BTreeMap<String, Container>,
    instances: &HashMap<String, Vec<Instance>>,
    file_of: impl Fn(&str, u32) -> std::path::PathBuf,
    log_of: impl Fn(&Instance) -> std::path::PathBuf,
) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for (name, list) in instances {
        let Some(c) = containers.get(name) else {
            continue;
        };
        for i in list.iter().filter(|i| i.exited()) {
            let mut msg = std::fs::read(file_of(name, i.restart))
                .map(|b| String::from_utf8_lossy(&b[..b.len().min(4096)]).into_owned())
                .unwrap_or_default();
            if msg.is_empty()
                && i.status.exit_code != 0
                && c.termination_message_policy.as_deref() == Some("FallbackToLogsOnError")
            {
                msg = log_tail(&log_of(i), 80, 2048);
            }
            if !msg.is_empty() {
                out.insert(i.status.id.clone(), msg);
            }
        }
    }
    out
}

/// The last `lines` lines (at most `bytes` bytes) of a CRI log file's messages.
fn log_tail(path: &std::path::Path, lines: usize, bytes: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let msgs: Vec<&str> = text
        .lines()
        .filter_map(|l| l.splitn(4, ' ').nth(3))
        .collect();
    let start = msgs.len().saturating_sub(lines);
    let mut s = msgs[start..].join("\n");
    if s.len() > bytes {
        let cut = s.len() - bytes;
        let cut = (cut..s.len())
            .find(|i| s.is_char_boundary(*i))
            .unwrap_or(s.len());
        s = s[cut..].to_string();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(state: ContainerState, last: Option<ContainerStateTerminated>) -> ContainerStatus {
        ContainerStatus {
            state: Some(state),
            last_state: Some(ContainerState {
                terminated: last,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn term(code: i32) -> ContainerState {
        ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: code,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn phases() {
        let running = ContainerState {
            running: Some(Default::default()),
            ..Default::default()
        };
        assert_eq!(phase("Always", false, &[]), "Pending");
        assert_eq!(
            phase("Always", true, &[st(running.clone(), None)]),
            "Running"
        );
        assert_eq!(phase("Never", true, &[st(term(0), None)]), "Succeeded");
        assert_eq!(phase("Never", true, &[st(term(1), None)]), "Failed");
        assert_eq!(phase("OnFailure", true, &[st(term(1), None)]), "Running");
        assert_eq!(phase("Always", true, &[st(term(0), None)]), "Running");
        // Waiting in back-off after a failure counts as stopped, not waiting.
        let backoff = waiting("CrashLoopBackOff", None);
        let last = ContainerStateTerminated {
            exit_code: 1,
            ..Default::default()
        };
        assert_eq!(
            phase("Always", true, &[st(backoff.clone(), Some(last))]),
            "Running"
        );
        assert_eq!(phase("Always", true, &[st(backoff, None)]), "Pending");
    }

    #[test]
    fn patch_clears_what_is_gone() {
        let p = patch(&PodStatus {
            phase: Some("Running".into()),
            ..Default::default()
        });
        assert_eq!(p["status"]["phase"], "Running");
        assert!(p["status"]["reason"].is_null());
        assert!(p["status"].as_object().unwrap().contains_key("reason"));
    }

    #[test]
    fn log_tail_reads_messages() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("0.log");
        std::fs::write(
            &f,
            "2024-01-01T00:00:00Z stdout F one\n2024-01-01T00:00:01Z stderr F two words\n",
        )
        .unwrap();
        assert_eq!(log_tail(&f, 80, 2048), "one\ntwo words");
        assert_eq!(log_tail(&f, 1, 2048), "two words");
    }
}
