//! Resource amounts and what a pod asks for, counted as Kubernetes counts them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use skiff_rules::quantity::Quantity as Exact;

/// Amounts of every resource the scheduler accounts for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    /// CPU in millicores.
    pub milli_cpu: i64,
    /// Memory in bytes.
    pub memory: i64,
    /// Ephemeral storage in bytes.
    pub ephemeral_storage: i64,
    /// Pods (a node's capacity; a pod counts as 1).
    pub pods: i64,
    /// Extended resources (`example.com/gpu`, `hugepages-2Mi`, ...) in whole units.
    pub scalar: BTreeMap<String, i64>,
}

/// The resource names with their own fields.
pub const CPU: &str = "cpu";
/// Memory.
pub const MEMORY: &str = "memory";
/// Ephemeral storage.
pub const EPHEMERAL_STORAGE: &str = "ephemeral-storage";
/// Pods.
pub const PODS: &str = "pods";

impl Resources {
    /// Reads a `ResourceList` (capacity, allocatable, requests). Unreadable quantities count
    /// as zero: the API server validates them before they get here.
    pub fn from_list(list: Option<&BTreeMap<String, Quantity>>) -> Self {
        let mut r = Resources::default();
        for (name, q) in list.into_iter().flatten() {
            r.set(name, q);
        }
        r
    }

    fn set(&mut self, name: &str, q: &Quantity) {
        let q = Exact::try_from(q).unwrap_or_default();
        match name {
            CPU => self.milli_cpu = q.milli_value(),
            MEMORY => self.memory = q.value(),
            EPHEMERAL_STORAGE => self.ephemeral_storage = q.value(),
            PODS => self.pods = q.value(),
            other => {
                self.scalar.insert(other.to_string(), q.value());
            }
        }
    }

    /// Adds `other` to these amounts.
    pub fn add(&mut self, other: &Resources) {
        self.milli_cpu += other.milli_cpu;
        self.memory += other.memory;
        self.ephemeral_storage += other.ephemeral_storage;
        self.pods += other.pods;
        for (k, v) in &other.scalar {
            *self.scalar.entry(k.clone()).or_default() += v;
        }
    }

    /// Subtracts `other` from these amounts.
    pub fn sub(&mut self, other: &Resources) {
        self.milli_cpu -= other.milli_cpu;
        self.memory -= other.memory;
        self.ephemeral_storage -= other.ephemeral_storage;
        self.pods -= other.pods;
        for (k, v) in &other.scalar {
            *self.scalar.entry(k.clone()).or_default() -= v;
        }
    }

    /// Each amount the larger of the two.
    pub fn max(&mut self, other: &Resources) {
        self.milli_cpu = self.milli_cpu.max(other.milli_cpu);
        self.memory = self.memory.max(other.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(other.ephemeral_storage);
        self.pods = self.pods.max(other.pods);
        for (k, v) in &other.scalar {
            let e = self.scalar.entry(k.clone()).or_default();
            *e = (*e).max(*v);
        }
    }

    /// An extended resource's amount.
    pub fn scalar(&self, name: &str) -> i64 {
        self.scalar.get(name).copied().unwrap_or(0)
    }
}

fn container_requests(c: &Container) -> Resources {
    let res = c.resources.as_ref();
    let mut r = Resources::from_list(res.and_then(|r| r.requests.as_ref()));
    // A limit without a request means a request of the limit (API defaulting; repeated here
    // for objects that did not go through it).
    if let Some(limits) = res.and_then(|r| r.limits.as_ref()) {
        let requests = res.and_then(|r| r.requests.as_ref());
        for (name, q) in limits {
            if !requests.is_some_and(|rq| rq.contains_key(name)) {
                r.set(name, q);
            }
        }
    }
    r
}

/// What a pod asks of a node, as Kubernetes computes it: the larger of (the app containers
/// plus restartable init containers, "sidecars") and each regular init container (plus the
/// sidecars started before it), then the pod overhead; `pods` is 1.
pub fn pod_requests(pod: &Pod) -> Resources {
    let Some(spec) = pod.spec.as_ref() else {
        return Resources {
            pods: 1,
            ..Default::default()
        };
    };
    let mut total = Resources::default();
    for c in &spec.containers {
        total.add(&container_requests(c));
    }
    let mut sidecars = Resources::default();
    let mut init_peak = Resources::default();
    for c in spec.init_containers.iter().flatten() {
        let req = container_requests(c);
        if c.restart_policy.as_deref() == Some("Always") {
            sidecars.add(&req);
            init_peak.max(&sidecars);
        } else {
            let mut during = sidecars.clone();
            during.add(&req);
            init_peak.max(&during);
        }
    }
    total.add(&sidecars);
    total.max(&init_peak);
    if let Some(overhead) = spec.overhead.as_ref() {
        total.add(&Resources::from_list(Some(overhead)));
    }
    total.pods = 1;
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn lists_read_exactly() {
        let list: BTreeMap<String, Quantity> = [
            ("cpu", "16.1"),
            ("memory", "1.5Gi"),
            ("pods", "110"),
            ("example.com/gpu", "bogus"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), Quantity(v.into())))
        .collect();
        let r = Resources::from_list(Some(&list));
        assert_eq!((r.milli_cpu, r.memory, r.pods), (16100, 3 << 29, 110));
        assert_eq!(r.scalar("example.com/gpu"), 0, "unreadable counts as zero");
    }

    #[test]
    fn containers_add_up_init_containers_peak_and_overhead_adds() {
        let p = pod(json!({"spec": {
            "containers": [
                {"name": "a", "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}},
                {"name": "b", "resources": {"requests": {"cpu": "200m", "example.com/gpu": "1"}}},
            ],
            "initContainers": [
                {"name": "i", "resources": {"requests": {"cpu": "500m", "memory": "32Mi"}}},
            ],
            "overhead": {"cpu": "10m"},
        }}));
        let r = pod_requests(&p);
        assert_eq!(
            r.milli_cpu, 510,
            "init container peak beats the sum, then overhead"
        );
        assert_eq!(r.memory, 64 << 20);
        assert_eq!(r.scalar("example.com/gpu"), 1);
        assert_eq!(r.pods, 1);
    }

    #[test]
    fn sidecars_run_alongside_and_count_for_later_init_containers() {
        let p = pod(json!({"spec": {
            "containers": [{"name": "app", "resources": {"requests": {"cpu": "100m"}}}],
            "initContainers": [
                {"name": "proxy", "restartPolicy": "Always", "resources": {"requests": {"cpu": "200m"}}},
                {"name": "migrate", "resources": {"requests": {"cpu": "250m"}}},
            ],
        }}));
        // app + proxy = 300m; proxy + migrate = 450m during init.
        assert_eq!(pod_requests(&p).milli_cpu, 450);
    }

    #[test]
    fn limits_stand_in_for_missing_requests() {
        let p = pod(json!({"spec": {"containers": [
            {"name": "a", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "250m"}}},
        ]}}));
        let r = pod_requests(&p);
        assert_eq!((r.milli_cpu, r.memory), (250, 1 << 30));
    }
}
