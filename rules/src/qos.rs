//! A pod's quality-of-service class, as Kubernetes' `ComputePodQOS` derives it from the CPU
//! and memory requests and limits of its containers and init containers.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as Wire;

use crate::quantity::Quantity;

/// Kubernetes' QoS classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QosClass {
    /// Every container limits both CPU and memory, with requests equal to limits.
    Guaranteed,
    /// Some requests or limits, but not `Guaranteed`.
    Burstable,
    /// No CPU or memory requests or limits at all.
    BestEffort,
}

impl QosClass {
    /// The name pod status carries (`Guaranteed`, `Burstable`, `BestEffort`).
    pub fn as_str(self) -> &'static str {
        match self {
            QosClass::Guaranteed => "Guaranteed",
            QosClass::Burstable => "Burstable",
            QosClass::BestEffort => "BestEffort",
        }
    }
}

impl std::fmt::Display for QosClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The resources QoS looks at.
const COMPUTE: [&str; 2] = ["cpu", "memory"];

/// The positive quantity `map[name]`, if any (malformed ones are left out: validation refuses
/// them before a pod exists).
fn positive(map: Option<&BTreeMap<String, Wire>>, name: &str) -> Option<Quantity> {
    map?.get(name)
        .and_then(|q| Quantity::try_from(q).ok())
        .filter(|q| q.signum() > 0)
}

/// The QoS class of a pod spec. Requests default to limits (as the API server defaults them),
/// then requests and limits are summed over all containers: `Guaranteed` needs a CPU and a
/// memory limit on every container and the summed requests equal to the summed limits.
pub fn compute(spec: &PodSpec) -> QosClass {
    let containers = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten());
    compute_for(containers)
}

/// [`compute`] over any list of containers.
pub fn compute_for<'c>(containers: impl IntoIterator<Item = &'c Container>) -> QosClass {
    let mut requests: BTreeMap<&str, Quantity> = BTreeMap::new();
    let mut limits: BTreeMap<&str, Quantity> = BTreeMap::new();
    let mut guaranteed = true;
    for c in containers {
        let r = c.resources.as_ref();
        let req_map = r.and_then(|r| r.requests.as_ref());
        let lim_map = r.and_then(|r| r.limits.as_ref());
        let mut limited = 0;
        for name in COMPUTE {
            let limit = positive(lim_map, name);
            let request = if req_map.is_some_and(|m| m.contains_key(name)) {
                positive(req_map, name)
            } else {
                limit
            };
            if let Some(q) = request {
                let sum = requests.entry(name).or_default();
                *sum = sum.checked_add(q).unwrap_or(*sum);
            }
            if let Some(q) = limit {
                limited += 1;
                let sum = limits.entry(name).or_default();
                *sum = sum.checked_add(q).unwrap_or(*sum);
            }
        }
        if limited < COMPUTE.len() {
            guaranteed = false;
        }
    }
    if requests.is_empty() && limits.is_empty() {
        return QosClass::BestEffort;
    }
    let equal = requests.iter().all(|(k, r)| limits.get(k) == Some(r));
    if guaranteed && equal && requests.len() == limits.len() {
        QosClass::Guaranteed
    } else {
        QosClass::Burstable
    }
}

/// The QoS class of a pod ([`compute`] on its spec; `BestEffort` without one).
pub fn of(pod: &Pod) -> QosClass {
    pod.spec.as_ref().map_or(QosClass::BestEffort, compute)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(containers: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"spec": {"containers": containers}})).unwrap()
    }

    fn one(requests: serde_json::Value, limits: serde_json::Value) -> Pod {
        pod(json!([{"name": "c", "resources": {"requests": requests, "limits": limits}}]))
    }

    #[test]
    fn classes() {
        assert_eq!(of(&pod(json!([{"name": "c"}]))), QosClass::BestEffort);
        assert_eq!(of(&Pod::default()), QosClass::BestEffort);
        assert_eq!(
            of(&one(
                json!({"cpu": "250m"}),
                json!({"cpu": "500m", "memory": "64Mi"})
            )),
            QosClass::Burstable
        );
        assert_eq!(
            of(&one(
                json!({"cpu": "1", "memory": "1Gi"}),
                json!({"cpu": "1", "memory": "1Gi"})
            )),
            QosClass::Guaranteed
        );
        // Requests default to limits.
        assert_eq!(
            of(&one(json!({}), json!({"cpu": "1", "memory": "1Gi"}))),
            QosClass::Guaranteed
        );
        // A memory limit alone is not enough.
        assert_eq!(
            of(&one(json!({}), json!({"memory": "1Gi"}))),
            QosClass::Burstable
        );
        // Other resources do not count.
        assert_eq!(
            of(&one(json!({"ephemeral-storage": "1Gi"}), json!({}))),
            QosClass::BestEffort
        );
        // Zero requests and limits are no requests or limits.
        assert_eq!(
            of(&one(json!({"cpu": "0"}), json!({}))),
            QosClass::BestEffort
        );
    }

    #[test]
    fn compares_exactly() {
        assert_eq!(
            of(&one(
                json!({"cpu": "9m", "memory": "1Gi"}),
                json!({"cpu": "0.009", "memory": "1024Mi"})
            )),
            QosClass::Guaranteed
        );
        assert_eq!(
            of(&one(
                json!({"cpu": "16.1", "memory": "1G"}),
                json!({"cpu": "16100m", "memory": "1000M"})
            )),
            QosClass::Guaranteed
        );
    }

    #[test]
    fn every_container_counts_including_init_containers() {
        let both = json!({"cpu": "1", "memory": "1Gi"});
        let p = pod(json!([
            {"name": "a", "resources": {"limits": both}},
            {"name": "b"}
        ]));
        assert_eq!(of(&p), QosClass::Burstable);
        let mut p = pod(json!([{"name": "a", "resources": {"limits": both}}]));
        assert_eq!(of(&p), QosClass::Guaranteed);
        p.spec.as_mut().unwrap().init_containers = Some(vec![serde_json::from_value(
            json!({"name": "i", "resources": {"requests": {"cpu": "100m"}}}),
        )
        .unwrap()]);
        assert_eq!(of(&p), QosClass::Burstable);
    }
}
