//! `pods/resize`: the one way to change a running pod's CPU and memory (in-place pod vertical
//! scaling, beta and on by default in Kubernetes 1.33). A write through it changes the
//! containers' `resources` and `resizePolicy` alone, as kube's `podResizeStrategy` and
//! `ValidatePodResize` allow; the node's kubelet then applies the new values.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, ContainerResizePolicy, Pod, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as Q;
use serde_json::{json, Value};
use skiff_rules::Quantity;

use crate::error::Cause;
use crate::registry::subresource::Subresource;

/// The `resize` handler.
pub static RESIZE: Resize = Resize;

/// The `resize` subresource.
pub struct Resize;

/// The subresource's name (what the store and admission see).
const SUB: &str = "resize";

/// The resources a resize policy may name.
const RESIZABLE: &[&str] = &["cpu", "memory"];
/// The restart policies of a resize policy.
const POLICIES: &[&str] = &["NotRequired", "RestartContainer"];

/// Whether an init container is a sidecar (`restartPolicy: Always`).
fn sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

/// The rules for a container's `resizePolicy` (kube's `validateResizePolicy`), on create and
/// update alike.
pub fn validate_policies(
    f: &str,
    policies: &[ContainerResizePolicy],
    pod_restart: Option<&str>,
    out: &mut Vec<Cause>,
) {
    let f = format!("{f}.resizePolicy");
    let mut seen = Vec::new();
    for (n, p) in policies.iter().enumerate() {
        if seen.contains(&p.resource_name.as_str()) {
            out.push(Cause::duplicate(
                format!("{f}[{n}]"),
                &json!(p.resource_name),
            ));
        }
        seen.push(p.resource_name.as_str());
        match p.resource_name.as_str() {
            "cpu" | "memory" => {}
            "" => out.push(Cause::required(f.clone())),
            other => out.push(Cause::not_supported(f.clone(), other, RESIZABLE)),
        }
        match p.restart_policy.as_str() {
            "NotRequired" | "RestartContainer" => {}
            "" => out.push(Cause::required(f.clone())),
            other => out.push(Cause::not_supported(f.clone(), other, POLICIES)),
        }
        if pod_restart == Some("Never") && p.restart_policy != "NotRequired" {
            out.push(Cause::invalid(
                f.clone(),
                &json!(p.restart_policy),
                "must be 'NotRequired' when `restartPolicy` is 'Never'",
            ));
        }
    }
}

/// The stored pod with the containers' resources and resize policies taken from `new`, as
/// kube's `dropNonResizeUpdates`: a list whose names differ from the stored one's is taken
/// whole, for validation to refuse.
fn merge(new: &Value, old: &Value) -> Value {
    let mut next = old.clone();
    for f in ["name", "namespace", "resourceVersion", "uid"] {
        if let Some(v) = new.pointer(&format!("/metadata/{f}")) {
            next["metadata"][f] = v.clone();
        }
    }
    for list in ["containers", "initContainers"] {
        let Some(n) = new
            .pointer(&format!("/spec/{list}"))
            .and_then(Value::as_array)
        else {
            continue;
        };
        let Some(o) = next
            .pointer_mut(&format!("/spec/{list}"))
            .and_then(Value::as_array_mut)
        else {
            continue;
        };
        let same_names =
            n.len() == o.len() && n.iter().zip(o.iter()).all(|(a, b)| a["name"] == b["name"]);
        if !same_names {
            *o = n.clone();
            continue;
        }
        for (oc, nc) in o.iter_mut().zip(n) {
            for field in ["resources", "resizePolicy"] {
                match nc.get(field) {
                    Some(v) if !v.is_null() => oc[field] = v.clone(),
                    _ => {
                        oc.as_object_mut().map(|m| m.remove(field));
                    }
                }
            }
        }
    }
    next
}

/// Whether `new` lacks a resource `old` has.
fn removed(new: &Option<BTreeMap<String, Q>>, old: &Option<BTreeMap<String, Q>>) -> bool {
    let empty = BTreeMap::new();
    let new = new.as_ref().unwrap_or(&empty);
    old.iter().flatten().any(|(k, _)| !new.contains_key(k))
}

/// kube's `validateContainerResize`: nothing removed, and memory limits lowered or added only
/// with a restart.
fn validate_container_resize(
    f: &str,
    new: &ResourceRequirements,
    old: &ResourceRequirements,
    policies: &[ContainerResizePolicy],
    out: &mut Vec<Cause>,
) {
    if removed(&new.requests, &old.requests) {
        out.push(Cause::forbidden(
            format!("{f}.requests"),
            "resource requests cannot be removed",
        ));
    }
    if removed(&new.limits, &old.limits) {
        out.push(Cause::forbidden(
            format!("{f}.limits"),
            "resource limits cannot be removed",
        ));
    }
    let mem_policy = policies
        .iter()
        .find(|p| p.resource_name == "memory")
        .map(|p| p.restart_policy.as_str())
        .unwrap_or("");
    if mem_policy != "NotRequired" && !mem_policy.is_empty() {
        return;
    }
    let limit = |r: &ResourceRequirements| {
        r.limits
            .as_ref()
            .and_then(|l| l.get("memory"))
            .and_then(|q| Quantity::try_from(q).ok())
    };
    match (limit(new), limit(old)) {
        (Some(n), Some(o)) if n < o => out.push(Cause::forbidden(
            format!("{f}.limits[memory]"),
            "memory limits cannot be decreased unless resizePolicy is RestartContainer",
        )),
        (Some(_), None) => out.push(Cause::forbidden(
            format!("{f}.limits[memory]"),
            "memory limits cannot be added unless resizePolicy is RestartContainer",
        )),
        _ => {}
    }
}

/// `c` with its CPU and memory as in `old` (kube's `dropCPUMemoryResourcesFromContainer`): what
/// must then equal `old` when nothing else changed.
fn without_cpu_memory(c: &Container, old: &Container) -> Container {
    let mut c = c.clone();
    let keep = |new: Option<BTreeMap<String, Q>>, old: &Option<BTreeMap<String, Q>>| {
        let old = old.as_ref()?;
        let mut m = new.unwrap_or_default();
        m.remove("cpu");
        m.remove("memory");
        for k in RESIZABLE {
            if let Some(q) = old.get(*k) {
                m.insert(k.to_string(), q.clone());
            }
        }
        Some(m)
    };
    let r = c.resources.take().unwrap_or_default();
    let o = old.resources.clone().unwrap_or_default();
    let munged = ResourceRequirements {
        limits: keep(r.limits, &o.limits),
        requests: keep(r.requests, &o.requests),
        ..Default::default()
    };
    c.resources = Some(munged);
    c
}

/// Resources as kube compares them: absent and empty lists are the same.
fn normal(mut c: Container) -> Container {
    let r = c.resources.take().unwrap_or_default();
    let norm = |m: Option<BTreeMap<String, Q>>| m.filter(|m| !m.is_empty());
    let r = ResourceRequirements {
        limits: norm(r.limits),
        requests: norm(r.requests),
        claims: r.claims.filter(|c| !c.is_empty()),
    };
    c.resources = (r != ResourceRequirements::default()).then_some(r);
    c.resize_policy = c.resize_policy.filter(|p| !p.is_empty());
    c
}

/// Whether the node runs the pod's containers with resize support: its running containers
/// report their resources (kube's `isPodResizeRequestSupported`).
fn node_supports_resize(pod: &Pod) -> bool {
    let statuses = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref());
    match statuses
        .into_iter()
        .flatten()
        .find(|s| s.state.as_ref().is_some_and(|st| st.running.is_some()))
    {
        Some(s) => s.resources.is_some(),
        None => true,
    }
}

/// kube's `ValidatePodResize`, past the pod's own validation.
fn validate_resize(new: &Pod, old: &Pod, out: &mut Vec<Cause>) {
    let (Some(ns), Some(os)) = (&new.spec, &old.spec) else {
        return;
    };
    let pod_level = |p: &k8s_openapi::api::core::v1::PodSpec| {
        p.resources.as_ref().is_some_and(|r| {
            r.requests.as_ref().map_or(0, BTreeMap::len)
                + r.limits.as_ref().map_or(0, BTreeMap::len)
                > 0
        })
    };
    if pod_level(os) || pod_level(ns) {
        *out = vec![Cause::forbidden(
            "",
            "pods with pod-level resources cannot be resized",
        )];
        return;
    }
    if old
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key("kubernetes.io/config.mirror"))
    {
        *out = vec![Cause::forbidden("", "static pods cannot be resized")];
        return;
    }
    if os.os.as_ref().is_some_and(|o| o.name == "windows") {
        *out = vec![Cause::forbidden("", "windows pods cannot be resized")];
        return;
    }
    let old_qos = old
        .status
        .as_ref()
        .and_then(|s| s.qos_class.clone())
        .unwrap_or_else(|| skiff_rules::qos::compute(os).as_str().to_string());
    if old_qos != skiff_rules::qos::compute(ns).as_str() {
        let shown = new
            .status
            .as_ref()
            .and_then(|s| s.qos_class.clone())
            .unwrap_or_default();
        out.push(Cause::invalid(
            "spec",
            &json!(shown),
            "Pod QOS Class may not change as a result of resizing",
        ));
    }
    if !node_supports_resize(old) {
        out.push(Cause::forbidden(
            "spec",
            "Pod running on node without support for resize",
        ));
    }
    let same_shape = |n: &[Container], o: &[Container]| n.len() == o.len();
    let (n_init, o_init) = (
        ns.init_containers.clone().unwrap_or_default(),
        os.init_containers.clone().unwrap_or_default(),
    );
    if !same_shape(&ns.containers, &os.containers) || !same_shape(&n_init, &o_init) {
        out.push(Cause::forbidden(
            "spec",
            "only cpu and memory resources are mutable",
        ));
        return;
    }
    let reqs = |c: &Container| c.resources.clone().unwrap_or_default();
    let policies = |c: &Container| c.resize_policy.clone().unwrap_or_default();
    for (ix, (n, o)) in n_init.iter().zip(&o_init).enumerate() {
        if sidecar(o) {
            validate_container_resize(
                &format!("spec.initContainers[{ix}].resources"),
                &reqs(n),
                &reqs(o),
                &policies(n),
                out,
            );
        }
    }
    for (ix, (n, o)) in ns.containers.iter().zip(&os.containers).enumerate() {
        validate_container_resize(
            &format!("spec.containers[{ix}].resources"),
            &reqs(n),
            &reqs(o),
            &policies(n),
            out,
        );
    }
    let mut munged = ns.clone();
    for (c, o) in munged.containers.iter_mut().zip(&os.containers) {
        *c = without_cpu_memory(c, o);
        if normal(c.clone()) != normal(o.clone()) {
            out.push(Cause::forbidden(
                "spec",
                "only cpu and memory resources are mutable",
            ));
        }
    }
    for (c, o) in munged.init_containers.iter_mut().flatten().zip(&o_init) {
        if sidecar(c) {
            *c = without_cpu_memory(c, o);
            if normal(c.clone()) != normal(o.clone()) {
                out.push(Cause::forbidden(
                    "spec",
                    "only cpu and memory resources for sidecar containers are mutable",
                ));
            }
        } else if normal(c.clone()) != normal(o.clone()) {
            out.push(Cause::forbidden(
                "spec",
                "resources for non-sidecar init containers are immutable",
            ));
        }
    }
    if !out.is_empty() {
        return;
    }
    let norm_spec = |s: &k8s_openapi::api::core::v1::PodSpec| {
        let mut s = s.clone();
        s.containers = s.containers.into_iter().map(normal).collect();
        s.init_containers = s
            .init_containers
            .map(|l| l.into_iter().map(normal).collect());
        s
    };
    if norm_spec(&munged) != norm_spec(os) {
        out.push(Cause::forbidden(
            "spec",
            "only cpu and memory resources are mutable",
        ));
    }
}

#[async_trait::async_trait]
impl Subresource for Resize {
    fn verbs(&self) -> &'static [&'static str] {
        &["get", "patch", "update"]
    }

    fn prepare_update(&self, new: &Value, old: &Value) -> Option<Value> {
        Some(merge(new, old))
    }

    fn validate_update(&self, new: &Value, old: &Value) -> Option<Vec<Cause>> {
        let mut out = Vec::new();
        let (new, old) = match (
            serde_json::from_value::<Pod>(new.clone()),
            serde_json::from_value::<Pod>(old.clone()),
        ) {
            (Ok(n), Ok(o)) => (n, o),
            (Err(e), _) | (_, Err(e)) => {
                return Some(vec![Cause::invalid("spec", &Value::Null, e.to_string())])
            }
        };
        out.extend((super::STRATEGY.validate)(&new));
        validate_resize(&new, &old, &mut out);
        Some(out)
    }

    fn object_view(&self) -> Option<&'static str> {
        Some(SUB)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(resources: Value) -> Value {
        json!({"metadata": {"name": "p", "namespace": "d", "uid": "u"},
            "spec": {"restartPolicy": "Always",
                "containers": [{"name": "c", "image": "busybox", "resources": resources}]},
            "status": {"qosClass": "Burstable", "containerStatuses": [{"name": "c",
                "image": "busybox", "imageID": "", "ready": true, "restartCount": 0,
                "state": {"running": {}}, "resources": resources}]}})
    }

    fn texts(new: &Value, old: &Value) -> Vec<String> {
        let next = RESIZE.prepare_update(new, old).unwrap();
        RESIZE
            .validate_update(&next, old)
            .unwrap()
            .iter()
            .map(Cause::text)
            .collect()
    }

    #[test]
    fn cpu_and_memory_change_and_nothing_else() {
        let old = pod(json!({"requests": {"cpu": "100m", "memory": "32Mi"},
            "limits": {"cpu": "200m", "memory": "64Mi"}}));
        let new = pod(json!({"requests": {"cpu": "300m", "memory": "32Mi"},
            "limits": {"cpu": "400m", "memory": "128Mi"}}));
        assert!(texts(&new, &old).is_empty(), "{:?}", texts(&new, &old));
        let mut sneaky = new.clone();
        sneaky["spec"]["containers"][0]["image"] = json!("evil");
        sneaky["metadata"]["labels"] = json!({"a": "b"});
        let next = RESIZE.prepare_update(&sneaky, &old).unwrap();
        assert_eq!(next["spec"]["containers"][0]["image"], "busybox");
        assert_eq!(
            next["spec"]["containers"][0]["resources"]["limits"]["cpu"],
            "400m"
        );
        assert!(next["metadata"].get("labels").is_none());
        let eph = pod(
            json!({"requests": {"cpu": "100m", "ephemeral-storage": "1Gi"},
            "limits": {"cpu": "200m", "memory": "64Mi"}}),
        );
        assert!(texts(&eph, &old)
            .contains(&"spec: Forbidden: only cpu and memory resources are mutable".to_string()));
    }

    #[test]
    fn refusals_use_kubes_words() {
        let old = pod(json!({"requests": {"cpu": "100m", "memory": "32Mi"},
            "limits": {"cpu": "200m", "memory": "64Mi"}}));
        let guaranteed = pod(json!({"requests": {"cpu": "200m", "memory": "64Mi"},
            "limits": {"cpu": "200m", "memory": "64Mi"}}));
        assert_eq!(
            texts(&guaranteed, &old),
            ["spec: Invalid value: \"Burstable\": Pod QOS Class may not change as a result of resizing"]
        );
        let no_limits = pod(json!({"requests": {"cpu": "100m", "memory": "32Mi"}}));
        let t = texts(&no_limits, &old);
        assert!(
            t.contains(&"spec.containers[0].resources.limits: Forbidden: resource limits cannot be removed".to_string()),
            "{t:?}"
        );
        let lower = pod(json!({"requests": {"cpu": "100m", "memory": "32Mi"},
            "limits": {"cpu": "200m", "memory": "48Mi"}}));
        assert_eq!(
            texts(&lower, &old),
            ["spec.containers[0].resources.limits[memory]: Forbidden: memory limits cannot be decreased unless resizePolicy is RestartContainer"]
        );
        // With a restart it may; the policy itself stays as created.
        let policy = json!([{"resourceName": "memory", "restartPolicy": "RestartContainer"}]);
        let (mut restart, mut old_restart) = (lower.clone(), old.clone());
        restart["spec"]["containers"][0]["resizePolicy"] = policy.clone();
        old_restart["spec"]["containers"][0]["resizePolicy"] = policy;
        assert!(texts(&restart, &old_restart).is_empty());
        assert!(texts(&restart, &old)
            .contains(&"spec: Forbidden: only cpu and memory resources are mutable".to_string()));
    }

    #[test]
    fn resize_policies_are_checked() {
        let policies: Vec<ContainerResizePolicy> = serde_json::from_value(json!([
            {"resourceName": "cpu", "restartPolicy": "RestartContainer"},
            {"resourceName": "cpu", "restartPolicy": "NotRequired"},
            {"resourceName": "gpu", "restartPolicy": "Sometimes"}]))
        .unwrap();
        let mut out = Vec::new();
        validate_policies("spec.containers[0]", &policies, Some("Never"), &mut out);
        let t: Vec<String> = out.iter().map(Cause::text).collect();
        assert_eq!(
            t,
            [
                "spec.containers[0].resizePolicy: Invalid value: \"RestartContainer\": must be 'NotRequired' when `restartPolicy` is 'Never'",
                "spec.containers[0].resizePolicy[1]: Duplicate value: \"cpu\"",
                "spec.containers[0].resizePolicy: Unsupported value: \"gpu\": supported values: \"cpu\", \"memory\"",
                "spec.containers[0].resizePolicy: Unsupported value: \"Sometimes\": supported values: \"NotRequired\", \"RestartContainer\"",
                "spec.containers[0].resizePolicy: Invalid value: \"Sometimes\": must be 'NotRequired' when `restartPolicy` is 'Never'",
            ]
        );
    }
}
