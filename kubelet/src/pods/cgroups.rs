//! Resources → cgroups. Each pod gets a cgroup `<cgroup-root>/kubepods[/<qos>]/pod<uid>`
//! (Kubernetes' cgroupfs layout) as its sandbox's parent; the runtime applies each
//! container's CPU shares, CPU quota and memory limit below it. The kubelet removes the pod's
//! cgroup directories once its sandbox is gone.

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use skiff_proto::cri;

/// The CFS period the kubelet uses for CPU limits (100 ms).
pub const CPU_PERIOD: i64 = 100_000;
const MIN_SHARES: i64 = 2;

/// A quantity in millis (CPU) or units (memory), rounded up; `None` when unparsable.
pub fn milli_value(q: &Quantity) -> Option<i64> {
    let s = q.0.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    let (mantissa, exp10): (&str, i32) = match suffix {
        "" => (num, 0),
        "m" => (num, -3),
        "k" => (num, 3),
        "M" => (num, 6),
        "G" => (num, 9),
        "T" => (num, 12),
        "P" => (num, 15),
        "E" => (num, 18),
        "n" => (num, -9),
        "u" => (num, -6),
        "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" => {
            let shift = match suffix {
                "Ki" => 10,
                "Mi" => 20,
                "Gi" => 30,
                "Ti" => 40,
                "Pi" => 50,
                _ => 60,
            };
            let v: f64 = num.parse().ok()?;
            return Some((v * (1u64 << shift) as f64 * 1000.0).ceil() as i64);
        }
        e if e.starts_with(['e', 'E']) => (num, e[1..].parse().ok()?),
        _ => return None,
    };
    let v: f64 = mantissa.parse().ok()?;
    Some((v * 10f64.powi(exp10 + 3)).ceil() as i64)
}

/// A quantity's value in whole units, rounded up.
pub fn value(q: &Quantity) -> Option<i64> {
    milli_value(q).map(|m| (m + 999).div_euclid(1000))
}

fn get(map: &Option<BTreeMap<String, Quantity>>, name: &str) -> Option<i64> {
    map.as_ref()?.get(name).and_then(milli_value)
}

/// Kubernetes' QoS class of a pod: `Guaranteed`, `Burstable` or `BestEffort`.
pub fn qos_class(pod: &Pod) -> &'static str {
    let Some(spec) = pod.spec.as_ref() else {
        return "BestEffort";
    };
    let all = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten());
    let mut any = false;
    let mut guaranteed = true;
    for c in all {
        let r = c.resources.clone().unwrap_or_default();
        for name in ["cpu", "memory"] {
            let req = get(&r.requests, name).or(get(&r.limits, name));
            let lim = get(&r.limits, name);
            if req.is_some() || lim.is_some() {
                any = true;
            }
            if lim.is_none() || req != lim {
                guaranteed = false;
            }
        }
    }
    match (any, guaranteed) {
        (false, _) => "BestEffort",
        (true, true) => "Guaranteed",
        (true, false) => "Burstable",
    }
}

/// The pod's cgroup, relative to every hierarchy's mount point.
pub fn pod_cgroup(cgroup_root: &str, pod: &Pod) -> String {
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    let root = cgroup_root.trim_end_matches('/');
    match qos_class(pod) {
        "Guaranteed" => format!("{root}/kubepods/pod{uid}"),
        "Burstable" => format!("{root}/kubepods/burstable/pod{uid}"),
        _ => format!("{root}/kubepods/besteffort/pod{uid}"),
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
        "Guaranteed" => -997,
        "BestEffort" => 1000,
        _ => {
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
    fn quantities() {
        assert_eq!(milli_value(&q("100m")), Some(100));
        assert_eq!(milli_value(&q("1")), Some(1000));
        assert_eq!(milli_value(&q("0.5")), Some(500));
        assert_eq!(value(&q("64Mi")), Some(64 << 20));
        assert_eq!(value(&q("1G")), Some(1_000_000_000));
        assert_eq!(value(&q("1e3")), Some(1000));
        assert_eq!(milli_value(&q("bogus")), None);
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
        assert_eq!(qos_class(&p), "BestEffort");
        let r = container_resources(&p, &p.spec.as_ref().unwrap().containers[0], 1 << 30);
        assert_eq!(
            (r.cpu_shares, r.cpu_quota, r.memory_limit_in_bytes),
            (2, 0, 0)
        );
        assert_eq!(r.oom_score_adj, 1000);

        let p = pod(&[("cpu", "250m")], &[("cpu", "500m"), ("memory", "64Mi")]);
        assert_eq!(qos_class(&p), "Burstable");
        let r = container_resources(&p, &p.spec.as_ref().unwrap().containers[0], 1 << 30);
        assert_eq!(r.cpu_shares, 256);
        assert_eq!((r.cpu_period, r.cpu_quota), (100_000, 50_000));
        assert_eq!(r.memory_limit_in_bytes, 64 << 20);

        let p = pod(
            &[("cpu", "1"), ("memory", "1Gi")],
            &[("cpu", "1"), ("memory", "1Gi")],
        );
        assert_eq!(qos_class(&p), "Guaranteed");
        assert!(pod_cgroup("/", &p).starts_with("/kubepods/pod"));
    }
}
