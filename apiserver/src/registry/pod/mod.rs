//! Pods: defaults, validation, the update rules for a running pod, graceful deletion,
//! kubectl's columns, and the `binding`, `eviction`, `ephemeralcontainers` and `resize`
//! subresources.

mod binding;
mod ephemeral;
mod eviction;
mod resize;

use std::collections::{BTreeMap, HashSet};

use k8s_openapi::api::core::v1::{Container, Pod, PodSecurityContext, PodSpec, PodStatus, Probe};
use serde_json::{json, Value};
use skiff_rules::Quantity;

use super::{col, i, s, Builtin, Column, Typed};
use crate::error::Cause;
use crate::validation as v;

/// The pods resource.
pub static INFO: Builtin = Builtin {
    group: "",
    version: "v1",
    kind: "Pod",
    plural: "pods",
    singular: "pod",
    short_names: &["po"],
    categories: &["all"],
    namespaced: true,
    subresources: &[
        ("status", &super::subresource::STATUS),
        ("binding", &BINDING),
        ("eviction", &EVICTION),
        ("ephemeralcontainers", &EPHEMERAL_CONTAINERS),
        ("resize", &RESIZE),
        ("log", &super::subresource::LOG),
        ("exec", &super::subresource::EXEC),
        ("attach", &super::subresource::ATTACH),
        ("portforward", &super::subresource::PORTFORWARD),
        ("proxy", &super::subresource::POD_PROXY),
    ],
    selectable: &[
        "spec.nodeName",
        "spec.restartPolicy",
        "spec.schedulerName",
        "spec.serviceAccountName",
        "spec.hostNetwork",
        "status.phase",
        "status.podIP",
        "status.nominatedNodeName",
    ],
    has_generation: true,
    strategy: &STRATEGY,
    schema: super::schema_of::<Pod>,
};

static STRATEGY: Typed<Pod> = Typed {
    status: true,
    defaults,
    validate,
    validate_update,
    validate_create,
    prepare_create,
    grace_period,
    return_deleted_object: true,
    ..Typed::new(columns, cells)
};

use binding::BINDING;
use ephemeral::EPHEMERAL_CONTAINERS;
use eviction::EVICTION;
use resize::RESIZE;

/// How long a deleted pod has to stop: what the delete asked for, else the pod's own
/// `terminationGracePeriodSeconds`, else 30 s. A pod that never ran on a node, or has
/// finished, has nothing to stop and goes at once.
fn grace_period(pod: &Value, requested: Option<i64>) -> i64 {
    let node = s(pod, "/spec/nodeName");
    let phase = s(pod, "/status/phase");
    if node.is_empty() || phase == "Succeeded" || phase == "Failed" {
        return 0;
    }
    requested
        .or_else(|| {
            pod.pointer("/spec/terminationGracePeriodSeconds")
                .and_then(Value::as_i64)
        })
        .unwrap_or(30)
        .max(0)
}

fn prepare_create(obj: &mut Value) {
    if let Some(o) = obj.as_object_mut() {
        o.insert("status".into(), json!({"phase": "Pending"}));
    }
}

/// Fills in a probe's defaults as Kubernetes does, where a field is unset or 0: a 1 s
/// timeout, a 10 s period, one success, three failures; an HTTP probe's `/` over `HTTP`.
fn default_probe(p: &mut Probe) {
    for (field, default) in [
        (&mut p.timeout_seconds, 1),
        (&mut p.period_seconds, 10),
        (&mut p.success_threshold, 1),
        (&mut p.failure_threshold, 3),
    ] {
        if field.unwrap_or(0) == 0 {
            *field = Some(default);
        }
    }
    if let Some(h) = p.http_get.as_mut() {
        if h.path.as_deref().unwrap_or("").is_empty() {
            h.path = Some("/".into());
        }
        if h.scheme.as_deref().unwrap_or("").is_empty() {
            h.scheme = Some("HTTP".into());
        }
    }
}

/// Fills in a container's defaults.
pub fn default_container(c: &mut Container) {
    for p in [
        c.liveness_probe.as_mut(),
        c.readiness_probe.as_mut(),
        c.startup_probe.as_mut(),
    ]
    .into_iter()
    .flatten()
    {
        default_probe(p);
    }
    if c.image_pull_policy.is_none() {
        let image = c.image.clone().unwrap_or_default();
        let last = image.rsplit('/').next().unwrap_or("");
        let tag = if last.contains('@') {
            Some("digest")
        } else {
            last.split_once(':').map(|(_, t)| t)
        };
        c.image_pull_policy = Some(match tag {
            None | Some("latest") => "Always".into(),
            Some(_) => "IfNotPresent".into(),
        });
    }
    c.termination_message_path
        .get_or_insert_with(|| "/dev/termination-log".into());
    c.termination_message_policy
        .get_or_insert_with(|| "File".into());
    for p in c.ports.iter_mut().flatten() {
        p.protocol.get_or_insert_with(|| "TCP".into());
    }
    if let Some(r) = c.resources.as_mut() {
        // Limits without requests: the requests default to the limits.
        if let Some(limits) = r.limits.clone() {
            let req = r.requests.get_or_insert_with(BTreeMap::new);
            for (k, q) in limits {
                req.entry(k).or_insert(q);
            }
        }
    }
}

/// An ephemeral container's defaults: those of any container it can have.
fn default_ephemeral(c: &mut k8s_openapi::api::core::v1::EphemeralContainer) {
    let mut as_container = Container {
        name: c.name.clone(),
        image: c.image.clone(),
        image_pull_policy: c.image_pull_policy.clone(),
        termination_message_path: c.termination_message_path.clone(),
        termination_message_policy: c.termination_message_policy.clone(),
        ..Default::default()
    };
    default_container(&mut as_container);
    c.image_pull_policy = as_container.image_pull_policy;
    c.termination_message_path = as_container.termination_message_path;
    c.termination_message_policy = as_container.termination_message_policy;
}

/// Fills in a pod spec's defaults (shared with the pod templates of workloads).
pub fn default_spec(spec: &mut PodSpec) {
    spec.restart_policy.get_or_insert_with(|| "Always".into());
    spec.dns_policy.get_or_insert_with(|| "ClusterFirst".into());
    spec.scheduler_name
        .get_or_insert_with(|| "default-scheduler".into());
    spec.termination_grace_period_seconds.get_or_insert(30);
    spec.security_context
        .get_or_insert_with(PodSecurityContext::default);
    for c in spec.containers.iter_mut() {
        default_container(c);
    }
    for c in spec.init_containers.iter_mut().flatten() {
        default_container(c);
    }
    for c in spec.ephemeral_containers.iter_mut().flatten() {
        default_ephemeral(c);
    }
    for vol in spec.volumes.iter_mut().flatten() {
        if let Some(cm) = vol.config_map.as_mut() {
            cm.default_mode.get_or_insert(0o644);
        }
        if let Some(sec) = vol.secret.as_mut() {
            sec.default_mode.get_or_insert(0o644);
        }
        if let Some(img) = vol.image.as_mut() {
            // As a container's image: `Always` for `:latest` (or no tag), else `IfNotPresent`.
            let mut probe = Container {
                image: img.reference.clone(),
                image_pull_policy: img.pull_policy.clone(),
                ..Default::default()
            };
            default_container(&mut probe);
            img.pull_policy = probe.image_pull_policy;
        }
    }
}

fn defaults(pod: &mut Pod) {
    let Some(spec) = pod.spec.as_mut() else {
        return;
    };
    default_spec(spec);
    spec.enable_service_links.get_or_insert(true);
    if spec.service_account_name.is_none() {
        spec.service_account_name = spec.service_account.clone().or(Some("default".into()));
    }
    spec.service_account = spec.service_account_name.clone();
    let qos = skiff_rules::qos::compute(spec).as_str();
    let status = pod.status.get_or_insert_with(PodStatus::default);
    status.qos_class.get_or_insert_with(|| qos.into());
}

fn validate_container(
    f: &str,
    c: &Container,
    volumes: &HashSet<String>,
    pod_restart: Option<&str>,
    out: &mut Vec<Cause>,
) {
    if let Some(p) = &c.resize_policy {
        resize::validate_policies(f, p, pod_restart, out);
    }
    if c.name.is_empty() {
        out.push(Cause::required(format!("{f}.name")));
    } else {
        v::label_name(&format!("{f}.name"), &c.name, out);
    }
    if c.image.as_deref().unwrap_or("").trim().is_empty() {
        out.push(Cause::required(format!("{f}.image")));
    }
    v::one_of(
        &format!("{f}.imagePullPolicy"),
        c.image_pull_policy.as_deref(),
        &["Always", "IfNotPresent", "Never"],
        out,
    );
    v::one_of(
        &format!("{f}.terminationMessagePolicy"),
        c.termination_message_policy.as_deref(),
        &["File", "FallbackToLogsOnError"],
        out,
    );
    let mut port_names = HashSet::new();
    for (n, p) in c.ports.iter().flatten().enumerate() {
        let pf = format!("{f}.ports[{n}]");
        v::port(&format!("{pf}.containerPort"), p.container_port, out);
        if let Some(hp) = p.host_port {
            if hp != 0 {
                v::port(&format!("{pf}.hostPort"), hp, out);
            }
        }
        v::protocol(&format!("{pf}.protocol"), p.protocol.as_deref(), out);
        if let Some(name) = &p.name {
            if name.len() > 15
                || !v::is_dns1123_label(name)
                || !name.bytes().any(|b| b.is_ascii_lowercase())
            {
                out.push(Cause::invalid(
                    format!("{pf}.name"),
                    &json!(name),
                    "must be no more than 15 characters, contain only lowercase alphanumeric characters or '-', contain at least one letter and not start or end with '-'",
                ));
            } else if !port_names.insert(name.clone()) {
                out.push(Cause::duplicate(format!("{pf}.name"), &json!(name)));
            }
        }
    }
    for (n, e) in c.env.iter().flatten().enumerate() {
        if e.name.is_empty() {
            out.push(Cause::required(format!("{f}.env[{n}].name")));
        } else {
            relaxed_env_name(&format!("{f}.env[{n}].name"), &e.name, out);
        }
        if e.value.is_some() && e.value_from.is_some() {
            out.push(Cause::invalid(
                format!("{f}.env[{n}].valueFrom"),
                &json!(""),
                "may not be specified when `value` is not empty",
            ));
        }
    }
    for (n, e) in c.env_from.iter().flatten().enumerate() {
        if let Some(p) = e.prefix.as_deref().filter(|p| !p.is_empty()) {
            relaxed_env_name(&format!("{f}.envFrom[{n}].prefix"), p, out);
        }
    }
    if let Some(r) = &c.resources {
        v::quantities(&format!("{f}.resources.requests"), r.requests.as_ref(), out);
        v::quantities(&format!("{f}.resources.limits"), r.limits.as_ref(), out);
        if let (Some(req), Some(lim)) = (&r.requests, &r.limits) {
            for (k, q) in req {
                let Some(l) = lim.get(k) else { continue };
                if let (Ok(a), Ok(b)) = (Quantity::try_from(q), Quantity::try_from(l)) {
                    if a > b {
                        out.push(Cause::invalid(
                            format!("{f}.resources.requests"),
                            &json!(q.0),
                            format!("must be less than or equal to {k} limit of {}", l.0),
                        ));
                    }
                }
            }
        }
    }
    for (n, m) in c.volume_mounts.iter().flatten().enumerate() {
        if m.name.is_empty() {
            out.push(Cause::required(format!("{f}.volumeMounts[{n}].name")));
        } else if !volumes.contains(&m.name) {
            out.push(Cause {
                kind: crate::error::CauseKind::Invalid,
                field: format!("{f}.volumeMounts[{n}].name"),
                message: format!("\"{}\": not found", m.name),
            });
        }
        if m.mount_path.is_empty() {
            out.push(Cause::required(format!("{f}.volumeMounts[{n}].mountPath")));
        }
    }
}

/// An environment variable name (or `envFrom` prefix) under Kubernetes' relaxed rule, on by
/// default since v1.32: printable ASCII other than `=`.
fn relaxed_env_name(f: &str, name: &str, out: &mut Vec<Cause>) {
    if !name
        .bytes()
        .all(|b| (b' '..=b'~').contains(&b) && b != b'=')
    {
        out.push(Cause::invalid(
            f,
            &json!(name),
            "a valid environment variable name must consist only of printable ASCII characters other than '='",
        ));
    }
}

/// Validates a pod template's spec at `f` (kube's `ValidatePodTemplateSpec`): a pod's rules,
/// and no ephemeral containers, which only a running pod can be given.
pub fn validate_spec(f: &str, spec: &PodSpec, out: &mut Vec<Cause>) {
    validate_pod_spec(f, spec, out);
    if spec
        .ephemeral_containers
        .as_ref()
        .is_some_and(|e| !e.is_empty())
    {
        out.push(Cause::forbidden(
            format!("{f}.ephemeralContainers"),
            "ephemeral containers not allowed in pod template",
        ));
    }
}

/// Validates a pod spec at `f`.
fn validate_pod_spec(f: &str, spec: &PodSpec, out: &mut Vec<Cause>) {
    let mut volumes = HashSet::new();
    let mut image_volumes = HashSet::new();
    for (n, vol) in spec.volumes.iter().flatten().enumerate() {
        if let Some(img) = &vol.image {
            let imf = format!("{f}.volumes[{n}].image");
            if img.reference.as_deref().unwrap_or("").is_empty() {
                out.push(Cause::required(format!("{imf}.reference")));
            }
            v::one_of(
                &format!("{imf}.pullPolicy"),
                img.pull_policy.as_deref(),
                &["Always", "IfNotPresent", "Never"],
                out,
            );
            image_volumes.insert(vol.name.clone());
        }
        let vf = format!("{f}.volumes[{n}].name");
        if vol.name.is_empty() {
            out.push(Cause::required(vf));
        } else if !v::is_dns1123_label(&vol.name) {
            v::label_name(&vf, &vol.name, out);
        } else if !volumes.insert(vol.name.clone()) {
            out.push(Cause::duplicate(vf, &json!(vol.name)));
        }
    }
    if spec.containers.is_empty() {
        out.push(Cause::required(format!("{f}.containers")));
    }
    let mut names = HashSet::new();
    let all = spec
        .init_containers
        .iter()
        .flatten()
        .enumerate()
        .map(|(n, c)| (format!("{f}.initContainers[{n}]"), c))
        .chain(
            spec.containers
                .iter()
                .enumerate()
                .map(|(n, c)| (format!("{f}.containers[{n}]"), c)),
        );
    for (cf, c) in all {
        validate_container(&cf, c, &volumes, spec.restart_policy.as_deref(), out);
        // Kubernetes 1.33 mounts an image volume whole.
        for (i, m) in c.volume_mounts.iter().flatten().enumerate() {
            if !image_volumes.contains(&m.name) {
                continue;
            }
            for (field, value) in [("subPath", &m.sub_path), ("subPathExpr", &m.sub_path_expr)] {
                if let Some(value) = value.as_deref().filter(|s| !s.is_empty()) {
                    out.push(Cause::invalid(
                        format!("{cf}.volumeMounts[{i}].{field}"),
                        &json!(value),
                        "not allowed in image volume sources",
                    ));
                }
            }
        }
        if !c.name.is_empty() && !names.insert(c.name.clone()) {
            out.push(Cause::duplicate(format!("{cf}.name"), &json!(c.name)));
        }
    }
    v::one_of(
        &format!("{f}.restartPolicy"),
        spec.restart_policy.as_deref(),
        &["Always", "OnFailure", "Never"],
        out,
    );
    v::one_of(
        &format!("{f}.dnsPolicy"),
        spec.dns_policy.as_deref(),
        &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"],
        out,
    );
    if let Some(g) = spec.termination_grace_period_seconds {
        v::non_negative(&format!("{f}.terminationGracePeriodSeconds"), Some(g), out);
    }
    if let Some(d) = spec.active_deadline_seconds {
        if d <= 0 {
            out.push(Cause::invalid(
                format!("{f}.activeDeadlineSeconds"),
                &json!(d),
                "must be between 1 and 2147483647, inclusive",
            ));
        }
    }
    if let Some(ns) = &spec.node_selector {
        v::labels(&format!("{f}.nodeSelector"), Some(ns), out);
    }
    for (n, t) in spec.tolerations.iter().flatten().enumerate() {
        let tf = format!("{f}.tolerations[{n}]");
        v::one_of(
            &format!("{tf}.operator"),
            t.operator.as_deref(),
            &["Equal", "Exists"],
            out,
        );
        v::one_of(
            &format!("{tf}.effect"),
            t.effect.as_deref().filter(|e| !e.is_empty()),
            &["NoSchedule", "PreferNoSchedule", "NoExecute"],
            out,
        );
        if t.operator.as_deref() == Some("Exists")
            && t.value.as_deref().is_some_and(|v| !v.is_empty())
        {
            out.push(Cause::invalid(
                format!("{tf}.operator"),
                &json!(t.value),
                "value must be empty when `operator` is 'Exists'",
            ));
        }
    }
    if let Some(h) = &spec.hostname {
        v::label_name(&format!("{f}.hostname"), h, out);
    }
    validate_sysctls(f, spec, out);
}

/// A pod's sysctls, as Kubernetes validates them: well-formed names, each once, and none of
/// a namespace the pod shares with the host.
fn validate_sysctls(f: &str, spec: &PodSpec, out: &mut Vec<Cause>) {
    use skiff_rules::sysctl;
    let sysctls = spec
        .security_context
        .as_ref()
        .and_then(|s| s.sysctls.as_ref());
    let mut names = HashSet::new();
    for (n, s) in sysctls.into_iter().flatten().enumerate() {
        let nf = format!("{f}.securityContext.sysctls[{n}].name");
        if s.name.is_empty() {
            out.push(Cause::required(&nf));
        } else if !sysctl::is_valid_name(&s.name) {
            out.push(Cause::invalid(
                &nf,
                &json!(s.name),
                format!(
                    "must have at most {} characters and match regex {}",
                    sysctl::MAX_LENGTH,
                    sysctl::NAME_FMT
                ),
            ));
        } else if !names.insert(s.name.clone()) {
            out.push(Cause::duplicate(&nf, &json!(s.name)));
        }
        let host = match sysctl::namespace(&s.name) {
            Some(sysctl::Namespace::Net) if spec.host_network == Some(true) => Some("hostNetwork"),
            Some(sysctl::Namespace::Ipc) if spec.host_ipc == Some(true) => Some("hostIPC"),
            _ => None,
        };
        if let Some(h) = host {
            out.push(Cause::invalid(
                &nf,
                &json!(s.name),
                format!("may not be specified when '{h}' is true"),
            ));
        }
    }
}

fn validate(pod: &Pod) -> Vec<Cause> {
    let mut out = Vec::new();
    match &pod.spec {
        None => out.push(Cause::required("spec")),
        Some(spec) => validate_pod_spec("spec", spec, &mut out),
    }
    if pod.spec.as_ref().is_some_and(|s| {
        s.ephemeral_containers
            .as_ref()
            .is_some_and(|e| !e.is_empty())
    }) {
        if let Ok(v) = serde_json::to_value(pod) {
            ephemeral::validate("spec", &v, &mut out);
        }
    }
    out
}

/// What a new pod may not have (kube's `ValidatePodCreate`): ephemeral containers are added to
/// a running pod through `pods/ephemeralcontainers`, never created with it.
fn validate_create(pod: &Pod) -> Vec<Cause> {
    let ephemeral = pod
        .spec
        .as_ref()
        .and_then(|s| s.ephemeral_containers.as_ref());
    if ephemeral.is_some_and(|e| !e.is_empty()) {
        vec![Cause::forbidden(
            "spec.ephemeralContainers",
            "cannot be set on create",
        )]
    } else {
        Vec::new()
    }
}

/// The fields of a running pod's spec that an update may change, as kube-apiserver allows.
fn validate_update(new: &Pod, old: &Pod) -> Vec<Cause> {
    let (Some(ns), Some(os)) = (&new.spec, &old.spec) else {
        return vec![];
    };
    let mut out = Vec::new();
    let mut probe = ns.clone();
    for (c, o) in probe.containers.iter_mut().zip(os.containers.iter()) {
        c.image = o.image.clone();
    }
    for (c, o) in probe
        .init_containers
        .iter_mut()
        .flatten()
        .zip(os.init_containers.iter().flatten())
    {
        c.image = o.image.clone();
    }
    probe.active_deadline_seconds = os.active_deadline_seconds;
    // Tolerations may only be added.
    let old_tol = os.tolerations.clone().unwrap_or_default();
    let new_tol = ns.tolerations.clone().unwrap_or_default();
    if old_tol.iter().all(|t| new_tol.contains(t)) {
        probe.tolerations = os.tolerations.clone();
    }
    if os.termination_grace_period_seconds.is_some_and(|g| g < 0) {
        probe.termination_grace_period_seconds = os.termination_grace_period_seconds;
    }
    // nodeName is set once, by binding.
    if os.node_name.is_none() {
        probe.node_name = os.node_name.clone();
    }
    if &probe != os {
        out.push(Cause::forbidden(
            "spec",
            "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
        ));
    }
    if let (Some(nd), Some(od)) = (ns.active_deadline_seconds, os.active_deadline_seconds) {
        if nd > od {
            out.push(Cause::invalid(
                "spec.activeDeadlineSeconds",
                &json!(nd),
                "must be less than or equal to previous value",
            ));
        }
    }
    out
}

fn columns() -> Vec<Column> {
    vec![
        col("Name", "string", 0, "Name must be unique within a namespace."),
        col("Ready", "string", 0, "The aggregate readiness state of this pod for accepting traffic."),
        col("Status", "string", 0, "The aggregate status of the containers in this pod."),
        col("Restarts", "string", 0, "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted."),
        col("Age", "string", 0, "CreationTimestamp is a timestamp representing the server time when this object was created."),
        col("IP", "string", 1, "IP address allocated to the pod. Routable at least within the cluster."),
        col("Node", "string", 1, "NodeName is a request to schedule this pod onto a specific node."),
        col("Nominated Node", "string", 1, "nominatedNodeName is set only when this pod preempts other pods on the node."),
        col("Readiness Gates", "string", 1, "If specified, all readiness gates will be evaluated for pod readiness."),
    ]
}

/// The STATUS column, following kubectl's rules for the pod's phase, reason and container states.
pub fn display_status(pod: &Value) -> String {
    let mut reason = s(pod, "/status/phase");
    let r = s(pod, "/status/reason");
    if !r.is_empty() {
        reason = r;
    }
    let empty = Vec::new();
    let init_specs = pod
        .pointer("/spec/initContainers")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    let init_statuses = pod
        .pointer("/status/initContainerStatuses")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    let mut initializing = false;
    for (n, cs) in init_statuses.iter().enumerate() {
        if cs
            .pointer("/state/terminated/exitCode")
            .and_then(Value::as_i64)
            == Some(0)
        {
            continue;
        }
        if cs.pointer("/state/terminated").is_some() {
            let tr = s(cs, "/state/terminated/reason");
            reason = if tr.is_empty() {
                format!("Init:ExitCode:{}", i(cs, "/state/terminated/exitCode"))
            } else {
                format!("Init:{tr}")
            };
        } else {
            let wr = s(cs, "/state/waiting/reason");
            reason = if !wr.is_empty() && wr != "PodInitializing" {
                format!("Init:{wr}")
            } else {
                format!("Init:{n}/{}", init_specs.len())
            };
        }
        initializing = true;
        break;
    }
    if !initializing {
        let statuses = pod
            .pointer("/status/containerStatuses")
            .and_then(Value::as_array)
            .unwrap_or(&empty);
        let mut has_running = false;
        for cs in statuses.iter().rev() {
            let wr = s(cs, "/state/waiting/reason");
            let tr = s(cs, "/state/terminated/reason");
            if !wr.is_empty() {
                reason = wr;
            } else if !tr.is_empty() {
                reason = tr;
            } else if cs.pointer("/state/terminated").is_some() {
                let sig = i(cs, "/state/terminated/signal");
                reason = if sig != 0 {
                    format!("Signal:{sig}")
                } else {
                    format!("ExitCode:{}", i(cs, "/state/terminated/exitCode"))
                };
            } else if cs.get("ready").and_then(Value::as_bool) == Some(true)
                && cs.pointer("/state/running").is_some()
            {
                has_running = true;
            }
        }
        if reason == "Completed" && has_running {
            reason = "Running".into();
        }
    }
    if pod.pointer("/metadata/deletionTimestamp").is_some() {
        reason = if s(pod, "/status/reason") == "NodeLost" {
            "Unknown".into()
        } else {
            "Terminating".into()
        };
    }
    reason
}

fn cells(pod: &Value) -> Vec<Value> {
    let empty = Vec::new();
    let specs = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    let statuses = pod
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    let ready = statuses
        .iter()
        .filter(|c| c.get("ready").and_then(Value::as_bool) == Some(true))
        .count();
    let mut restarts = 0;
    let mut last_restart: Option<String> = None;
    for cs in statuses {
        restarts += i(cs, "/restartCount");
        let t = s(cs, "/lastState/terminated/finishedAt");
        if !t.is_empty() && last_restart.as_ref().is_none_or(|l| &t > l) {
            last_restart = Some(t);
        }
    }
    let restarts = match last_restart {
        Some(t) if restarts > 0 => format!("{restarts} ({} ago)", super::since(&t)),
        _ => restarts.to_string(),
    };
    let or_none = |x: String| {
        if x.is_empty() {
            "<none>".to_string()
        } else {
            x
        }
    };
    let gates = pod
        .pointer("/spec/readinessGates")
        .and_then(Value::as_array)
        .map(|g| g.len())
        .unwrap_or(0);
    let gates = if gates == 0 {
        "<none>".to_string()
    } else {
        format!("0/{gates}")
    };
    vec![
        super::name(pod),
        json!(format!("{ready}/{}", specs.len())),
        json!(display_status(pod)),
        json!(restarts),
        super::age(pod),
        json!(or_none(s(pod, "/status/podIP"))),
        json!(or_none(s(pod, "/spec/nodeName"))),
        json!(or_none(s(pod, "/status/nominatedNodeName"))),
        json!(gates),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{Rejection, Strategy};

    /// Defaults, then validation, as a write goes through them.
    fn admit(obj: Value, old: Option<&Value>) -> Result<Value, Rejection> {
        let value = STRATEGY.default(obj)?.value;
        STRATEGY.validate(&value, old)?;
        Ok(value)
    }

    #[test]
    fn grace_periods() {
        let running = json!({"spec": {"nodeName": "n", "terminationGracePeriodSeconds": 5},
            "status": {"phase": "Running"}});
        assert_eq!(grace_period(&running, None), 5);
        assert_eq!(grace_period(&running, Some(0)), 0);
        assert_eq!(grace_period(&json!({"spec": {"nodeName": "n"}}), None), 30);
        assert_eq!(
            grace_period(&json!({"spec": {}}), Some(10)),
            0,
            "never scheduled"
        );
        let done = json!({"spec": {"nodeName": "n"}, "status": {"phase": "Succeeded"}});
        assert_eq!(grace_period(&done, None), 0);
    }

    #[test]
    fn defaults_are_filled() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a"},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
        let out = admit(pod, None).unwrap();
        assert_eq!(out["spec"]["restartPolicy"], "Always");
        assert_eq!(out["spec"]["containers"][0]["imagePullPolicy"], "Always");
        // The lost-node tolerations come from admission on create, not from defaults.
        assert!(out["spec"]["tolerations"].is_null());
        assert_eq!(out["status"]["qosClass"], "BestEffort");
    }

    #[test]
    fn missing_image_and_bad_name_are_invalid() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a"},
            "spec": {"containers": [{"name": "C_1"}]}});
        let Err(Rejection::Invalid(causes)) = admit(pod, None) else {
            panic!()
        };
        let fields: Vec<_> = causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(
            fields,
            vec!["spec.containers[0].name", "spec.containers[0].image"]
        );
    }

    #[test]
    fn only_image_may_change() {
        let base = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a"},
            "spec": {"containers": [{"name": "c", "image": "a:1"}]}});
        let old = admit(base.clone(), None).unwrap();
        let mut img = old.clone();
        img["spec"]["containers"][0]["image"] = json!("a:2");
        assert!(admit(img, Some(&old)).is_ok());
        let mut port = old.clone();
        port["spec"]["containers"][0]["ports"] = json!([{"containerPort": 80}]);
        assert!(admit(port, Some(&old)).is_err());
    }

    #[test]
    fn ephemeral_containers_come_only_through_their_subresource() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a"},
            "spec": {"containers": [{"name": "c", "image": "i"}],
                "ephemeralContainers": [{"name": "dbg", "image": "i"}]}});
        let Err(Rejection::Invalid(causes)) = admit(pod.clone(), None) else {
            panic!("a pod created with ephemeral containers is refused")
        };
        let texts: Vec<String> = causes.iter().map(Cause::text).collect();
        assert_eq!(
            texts,
            ["spec.ephemeralContainers: Forbidden: cannot be set on create"]
        );
        // An empty list is no ephemeral container.
        let mut empty = pod.clone();
        empty["spec"]["ephemeralContainers"] = json!([]);
        assert!(admit(empty, None).is_ok());
        // Through the pod itself, an update may neither add nor remove one.
        let mut plain = pod.clone();
        plain["spec"]
            .as_object_mut()
            .unwrap()
            .remove("ephemeralContainers");
        let old = admit(plain.clone(), None).unwrap();
        let Err(Rejection::Invalid(causes)) = admit(pod, Some(&old)) else {
            panic!("adding one through the pod is refused")
        };
        assert!(causes[0]
            .text()
            .starts_with("spec: Forbidden: pod updates may not change fields other than"));
    }

    #[test]
    fn templates_have_no_ephemeral_containers() {
        let spec: PodSpec = serde_json::from_value(json!({
            "containers": [{"name": "c", "image": "i"}],
            "ephemeralContainers": [{"name": "dbg", "image": "i"}]}))
        .unwrap();
        let mut out = Vec::new();
        validate_spec("spec.template.spec", &spec, &mut out);
        let texts: Vec<String> = out.iter().map(Cause::text).collect();
        assert_eq!(
            texts,
            ["spec.template.spec.ephemeralContainers: Forbidden: ephemeral containers not allowed in pod template"]
        );
    }

    #[test]
    fn quantities_compare_exactly() {
        // Requests of 9m with limits of 0.009 CPU are equal, not requests over limits, and
        // with memory the same the pod is Guaranteed.
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a"},
            "spec": {"containers": [{"name": "c", "image": "i", "resources": {
                "requests": {"cpu": "9m", "memory": "1Gi"},
                "limits": {"cpu": "0.009", "memory": "1024Mi"}}}]}});
        let out = admit(pod, None).unwrap();
        assert_eq!(out["status"]["qosClass"], "Guaranteed");
        let over = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a"},
            "spec": {"containers": [{"name": "c", "image": "i", "resources": {
                "requests": {"cpu": "10m"}, "limits": {"cpu": "0.009"}}}]}});
        let Err(Rejection::Invalid(causes)) = admit(over, None) else {
            panic!("requests over limits are refused")
        };
        assert!(causes[0]
            .text()
            .contains("must be less than or equal to cpu limit of 0.009"));
    }

    #[test]
    fn status_column() {
        let pod = json!({"status": {"phase": "Pending", "containerStatuses": [
            {"name": "c", "ready": false, "state": {"waiting": {"reason": "ImagePullBackOff"}}}]}});
        assert_eq!(display_status(&pod), "ImagePullBackOff");
        let pod = json!({"metadata": {"deletionTimestamp": "x"}, "status": {"phase": "Running"}});
        assert_eq!(display_status(&pod), "Terminating");
    }
}
