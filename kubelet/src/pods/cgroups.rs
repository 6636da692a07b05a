//! Resources → cgroups. Each pod gets a cgroup `<cgroup-root>/kubepods[/<qos>]/pod<uid>`
//! (Kubernetes' cgroupfs layout) as its sandbox's parent; the runtime applies each
//! container's CPU shares, CPU quota and memory limit below it. The kubelet removes the pod's
//! cgroup directories once its sandbox is gone.

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use skiff_proto::cri;
use skiff_rules::qos::{self, QosClass};
use skiff_rules::quantity;

/// The CFS period the kubelet uses for CPU limits (100 ms).
pub const CPU_PERIOD: i64 = 100_000;
const MIN_SHARES: i64 = 2;

/// A quantity in millis (CPU) or thousandths of a byte (memory), read exactly and rounded up;
/// `None` when absent or unparsable.
fn get(map: &Option<BTreeMap<String, Quantity>>, name: &str) -> Option<i64> {
    quantity::get(map.as_ref(), name)?
        .ok()
        .map(|q| q.milli_value())
}

/// Kubernetes' QoS class of a pod.
pub fn qos_class(pod: &Pod) -> QosClass {
    qos::of(pod)
}

/// The pod's cgroup, relative to every hierarchy's mount point.
pub fn pod_cgroup(cgroup_root: &str, pod: &Pod) -> String {
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    let root = cgroup_root.trim_end_matches('/');
    match qos_class(pod) {
        QosClass::Guaranteed => format!("{root}/kubepods/pod{uid}"),
        QosClass::Burstable => format!("{root}/kubepods/burstable/pod{uid}"),
        QosClass::BestEffort => format!("{root}/kubepods/besteffort/pod{uid}"),
    }
}

/// The cgroup settings of one container, as Kubernetes computes them: CPU shares from the
/// request (2 when none), quota from the limit, memory limit from the limit, and an OOM score
/// from the QoS class (never below the kubelet's own: lowering it is often not allowed).
pub fn container_resources(
    pod: &Pod,
    c: &Container,
    node_memory_bytes: i64,
) -> cri::LinuxContainerResources {
    let r = c.resources.clone().unwrap_or_default();
    let cpu_request = get(&r.requests, "cpu").or(get(&r.limits, "cpu"));
    let cpu_limit = get(&r.limits, "cpu");
    let mem_request = get(&r.requests, "memory")
        .or(get(&r.limits, "memory"))
        .map(|m| m / 1000);
    let mem_limit = get(&r.limits, "memory").map(|m| m / 1000);
    let shares = cpu_request
        .map(|m| (m * 1024 / 1000).max(MIN_SHARES))
        .unwrap_or(MIN_SHARES);
    let (period, quota) = match cpu_limit {
        Some(m) => (CPU_PERIOD, (m * CPU_PERIOD / 1000).max(1000)),
        None => (0, 0),
    };
    let oom = match qos_class(pod) {
        QosClass::Guaranteed => -997,
        QosClass::BestEffort => 1000,
        QosClass::Burstable => {
            let req = mem_request.unwrap_or(0);
            let adj = 1000 - 1000 * req / node_memory_bytes.max(1);
            adj.clamp(2, 999)
        }
    };
    cri::LinuxContainerResources {
        cpu_period: period,
        cpu_quota: quota,
        cpu_shares: shares,
        memory_limit_in_bytes: mem_limit.unwrap_or(0),
        oom_score_adj: oom.max(own_oom_score_adj()),
        ..Default::default()
    }
}

fn own_oom_score_adj() -> i64 {
    std::fs::read_to_string("/proc/self/oom_score_adj")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Removes the pod's cgroup (and its emptied QoS parents, never `kubepods` itself' parent)
/// from every mounted hierarchy. Cgroups still holding processes stay.
pub fn remove(cgroup: &str) {
    let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    for e in entries.flatten() {
        let hierarchy = e.path();
        let dir = hierarchy.join(cgroup.trim_start_matches('/'));
        if dir.is_dir() {
            remove_tree(&dir);
        }
    }
}

fn remove_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                remove_tree(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodSpec, ResourceRequirements};

    fn q(s: &str) -> Quantity {
        Quantity(s.into())
    }

    #[test]
    fn quantities_read_exactly() {
        let r = |v: &str| Some(BTreeMap::from([("cpu".to_string(), q(v))]));
        assert_eq!(get(&r("100m"), "cpu"), Some(100));
        assert_eq!(get(&r("16.1"), "cpu"), Some(16100));
        assert_eq!(get(&r("0.009"), "cpu"), get(&r("9m"), "cpu"));
        assert_eq!(get(&r("bogus"), "cpu"), None);
        assert_eq!(get(&None, "cpu"), None);
    }

    fn pod(requests: &[(&str, &str)], limits: &[(&str, &str)]) -> Pod {
        let m = |kv: &[(&str, &str)]| {
            (!kv.is_empty()).then(|| kv.iter().map(|(k, v)| (k.to_string(), q(v))).collect())
        };
        Pod {
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    resources: Some(ResourceRequirements {
                        requests: m(requests),
                        limits: m(limits),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn qos_and_settings() {
        let p = pod(&[], &[]);
        assert_eq!(qos_class(&p), QosClass::BestEffort);
        let r = container_resources(&p, &p.spec.as_ref().unwrap().containers[0], 1 << 30);
        assert_eq!(
            (r.cpu_shares, r.cpu_quota, r.memory_limit_in_bytes),
            (2, 0, 0)
        );
        assert_eq!(r.oom_score_adj, 1000);

        let p = pod(&[("cpu", "250m")], &[("cpu", "500m"), ("memory", "64Mi")]);
        assert_eq!(qos_class(&p), QosClass::Burstable);
        let r = container_resources(&p, &p.spec.as_ref().unwrap().containers[0], 1 << 30);
        assert_eq!(r.cpu_shares, 256);
        assert_eq!((r.cpu_period, r.cpu_quota), (100_000, 50_000));
        assert_eq!(r.memory_limit_in_bytes, 64 << 20);

        let p = pod(
            &[("cpu", "1"), ("memory", "1Gi")],
            &[("cpu", "1"), ("memory", "1Gi")],
        );
        assert_eq!(qos_class(&p), QosClass::Guaranteed);
        assert!(pod_cgroup("/", &p).starts_with("/kubepods/pod"));

        // Requests 9m within limits 0.009: the same amount, so Guaranteed.
        let p = pod(
            &[("cpu", "9m"), ("memory", "64Mi")],
            &[("cpu", "0.009"), ("memory", "64Mi")],
        );
        assert_eq!(qos_class(&p), QosClass::Guaranteed);
        let r = container_resources(&p, &p.spec.as_ref().unwrap().containers[0], 1 << 30);
        assert_eq!((r.cpu_shares, r.cpu_quota), (9, 1000));

        let p = pod(&[], &[("cpu", "16.1"), ("memory", "1Gi")]);
        let r = container_resources(&p, &p.spec.as_ref().unwrap().containers[0], 1 << 30);
        assert_eq!(r.cpu_quota, 1_610_000, "16.1 CPUs are 16100m, not 16101m");
    }
}
