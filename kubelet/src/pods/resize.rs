//! In-place resize of a running pod's CPU and memory, as Kubernetes 1.33's kubelet does it.
//!
//! The kubelet keeps, per container, the resources it *allocated* (admitted on the node) and,
//! per running container instance, the resources it *actuated* (applied to the cgroup). When
//! the pod's spec asks for other resources (through `pods/resize`), the new ones are allocated
//! if the node can hold them — else the pod gets the `PodResizePending` condition, `Infeasible`
//! (more than the node has at all) or `Deferred` (more than is free now, tried again later).
//! Allocated resources are then applied: through CRI `UpdateContainerResources`, or by
//! restarting the container when its `resizePolicy` says `RestartContainer` for a changed
//! resource. While allocated and actuated differ the pod has `PodResizeInProgress` (reason
//! `Error` when applying failed). Container statuses report `resources` (as applied) and
//! `allocatedResources` (the allocated requests).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Container, Pod, PodCondition, PodStatus, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use parking_lot::Mutex;
use skiff_rules::quantity;

use super::container::Instance;

/// The condition of a resize the kubelet has not allocated yet.
pub const PENDING: &str = "PodResizePending";
/// The condition of a resize allocated but not yet applied to every container.
pub const IN_PROGRESS: &str = "PodResizeInProgress";

/// CPU (millicores) and memory (bytes) requests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    /// CPU in millicores.
    pub cpu_millis: i64,
    /// Memory in bytes.
    pub memory: i64,
}

/// What every pod on the node has been allocated, by pod UID: the "used" side of a resize's
/// fit check.
#[derive(Clone, Default)]
pub struct Ledger(Arc<Mutex<HashMap<String, Totals>>>);

impl Ledger {
    fn record(&self, uid: &str, t: Totals) {
        self.0.lock().insert(uid.to_string(), t);
    }

    /// Drops a pod that is gone from the node.
    pub fn forget(&self, uid: &str) {
        self.0.lock().remove(uid);
    }

    fn others(&self, uid: &str) -> Totals {
        let m = self.0.lock();
        m.iter()
            .filter(|(k, _)| k.as_str() != uid)
            .fold(Totals::default(), |a, (_, t)| Totals {
                cpu_millis: a.cpu_millis + t.cpu_millis,
                memory: a.memory + t.memory,
            })
    }
}

/// A quantity of `r` in millis, rounded up; `None` when absent or unparsable.
fn milli(r: Option<&BTreeMap<String, Quantity>>, name: &str) -> Option<i64> {
    quantity::get(r, name)?.ok().map(|q| q.milli_value())
}

/// A container's CPU and memory requests.
fn requests(r: &ResourceRequirements) -> Totals {
    Totals {
        cpu_millis: milli(r.requests.as_ref(), "cpu").unwrap_or(0),
        memory: milli(r.requests.as_ref(), "memory").unwrap_or(0) / 1000,
    }
}

fn sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

/// Whether a container's resources can be resized in place: regular containers and sidecars.
fn resizable(pod: &Pod) -> impl Iterator<Item = &Container> {
    let spec = pod.spec.as_ref();
    spec.into_iter()
        .flat_map(|s| s.init_containers.iter().flatten().filter(|c| sidecar(c)))
        .chain(spec.into_iter().flat_map(|s| s.containers.iter()))
}

/// The pod's effective requests (kube's `GetResourceRequest`, without overhead): the regular
/// containers and sidecars together, or the largest init container with the sidecars started
/// before it, whichever is more.
fn pod_requests(pod: &Pod, of: impl Fn(&Container) -> ResourceRequirements) -> Totals {
    let Some(spec) = pod.spec.as_ref() else {
        return Totals::default();
    };
    let mut sidecars = Totals::default();
    let mut init_peak = Totals::default();
    for c in spec.init_containers.iter().flatten() {
        let r = requests(&of(c));
        if sidecar(c) {
            sidecars.cpu_millis += r.cpu_millis;
            sidecars.memory += r.memory;
        } else {
            init_peak.cpu_millis = init_peak.cpu_millis.max(sidecars.cpu_millis + r.cpu_millis);
            init_peak.memory = init_peak.memory.max(sidecars.memory + r.memory);
        }
    }
    let mut total = sidecars;
    for c in &spec.containers {
        let r = requests(&of(c));
        total.cpu_millis += r.cpu_millis;
        total.memory += r.memory;
    }
    Totals {
        cpu_millis: total.cpu_millis.max(init_peak.cpu_millis),
        memory: total.memory.max(init_peak.memory),
    }
}

/// Why a resize cannot be allocated now: `(reason, message)` as Kubernetes words them.
fn refusal(want: Totals, others: Totals, capacity: Totals) -> Option<(String, String)> {
    if want.memory > capacity.memory {
        return Some((
            "Infeasible".into(),
            format!(
                "Node didn't have enough capacity: memory, requested: {}, capacity: {}",
                want.memory, capacity.memory
            ),
        ));
    }
    if want.cpu_millis > capacity.cpu_millis {
        return Some((
            "Infeasible".into(),
            format!(
                "Node didn't have enough capacity: cpu, requested: {}, capacity: {}",
                want.cpu_millis, capacity.cpu_millis
            ),
        ));
    }
    if others.cpu_millis + want.cpu_millis > capacity.cpu_millis {
        return Some((
            "Deferred".into(),
            format!(
                "Node didn't have enough resource: cpu, requested: {}, used: {}, capacity: {}",
                want.cpu_millis, others.cpu_millis, capacity.cpu_millis
            ),
        ));
    }
    if others.memory + want.memory > capacity.memory {
        return Some((
            "Deferred".into(),
            format!(
                "Node didn't have enough resource: memory, requested: {}, used: {}, capacity: {}",
                want.memory, others.memory, capacity.memory
            ),
        ));
    }
    None
}

/// What to do to a running container so that it runs with its allocated resources.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Apply them to its cgroup in place.
    Update {
        /// The container instance.
        id: String,
        /// The container with its allocated resources.
        container: Box<Container>,
    },
    /// Restart it (its `resizePolicy` asks for it).
    Restart {
        /// The container instance.
        id: String,
        /// The container's name.
        name: String,
    },
}

/// The resources that differ between two requirements (`cpu`, `memory`).
fn changed(a: &ResourceRequirements, b: &ResourceRequirements) -> Vec<&'static str> {
    ["cpu", "memory"]
        .into_iter()
        .filter(|k| {
            milli(a.requests.as_ref(), k) != milli(b.requests.as_ref(), k)
                || milli(a.limits.as_ref(), k) != milli(b.limits.as_ref(), k)
        })
        .collect()
}

/// One pod's resize state, owned by its worker.
#[derive(Debug, Default)]
pub struct Resizes {
    /// Allocated resources by container name.
    allocated: HashMap<String, ResourceRequirements>,
    /// Applied resources by container instance id.
    actuated: HashMap<String, ResourceRequirements>,
    /// Why the spec's resources are not allocated: `(reason, message)`.
    pending: Option<(String, String)>,
    /// The last failure to apply allocated resources.
    error: Option<String>,
    /// Some container runs with other resources than allocated.
    in_progress: bool,
    /// The resize conditions as last reported (their times are kept while they hold).
    conditions: Vec<PodCondition>,
}

impl Resizes {
    /// The allocated resources of container `c` (its spec's until first allocated).
    fn allocated_of(&self, c: &Container) -> ResourceRequirements {
        self.allocated
            .get(&c.name)
            .cloned()
            .unwrap_or_else(|| c.resources.clone().unwrap_or_default())
    }

    /// Container `c` as the kubelet runs it: with its allocated resources.
    pub fn allocated_container(&self, c: &Container) -> Container {
        let mut c = c.clone();
        if self.allocated.contains_key(&c.name) {
            c.resources = Some(self.allocated_of(&c)).filter(|r| *r != Default::default());
        }
        c
    }

    /// Allocates what the spec asks for when the node can hold it (else notes why not), and
    /// records the pod's allocation in `ledger`.
    pub fn allocate(&mut self, pod: &Pod, uid: &str, ledger: &Ledger, capacity: Totals) {
        for c in resizable(pod) {
            self.allocated
                .entry(c.name.clone())
                .or_insert_with(|| c.resources.clone().unwrap_or_default());
        }
        let differs = resizable(pod).any(|c| {
            !changed(
                &c.resources.clone().unwrap_or_default(),
                &self.allocated_of(c),
            )
            .is_empty()
        });
        self.pending = None;
        if differs {
            let want = pod_requests(pod, |c| c.resources.clone().unwrap_or_default());
            match refusal(want, ledger.others(uid), capacity) {
                Some(why) => self.pending = Some(why),
                None => {
                    for c in resizable(pod) {
                        self.allocated
                            .insert(c.name.clone(), c.resources.clone().unwrap_or_default());
                    }
                }
            }
        }
        ledger.record(uid, pod_requests(pod, |c| self.allocated_of(c)));
    }

    /// Notes that instance `id` was made with `c`'s resources.
    pub fn started(&mut self, id: &str, c: &Container) {
        self.actuated
            .insert(id.to_string(), c.resources.clone().unwrap_or_default());
    }

    /// Notes that instance `id` now runs with `c`'s resources.
    pub fn applied(&mut self, id: &str, c: &Container) {
        self.started(id, c);
        self.error = None;
    }

    /// Notes a failure to apply resources.
    pub fn failed(&mut self, message: String) {
        self.error = Some(message);
    }

    /// What to do so that every running resizable container runs with its allocated
    /// resources. A container the kubelet did not start itself (adopted after a restart) has
    /// them applied once.
    pub fn actions(
        &mut self,
        pod: &Pod,
        instances: &HashMap<String, Vec<Instance>>,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        let running: Vec<String> = instances
            .values()
            .filter_map(|l| l.first())
            .filter(|l| l.running())
            .map(|l| l.status.id.clone())
            .collect();
        self.actuated.retain(|id, _| running.contains(id));
        for c in resizable(pod) {
            let Some(l) = instances
                .get(&c.name)
                .and_then(|l| l.first())
                .filter(|l| l.running())
            else {
                continue;
            };
            let want = self.allocated_of(c);
            let id = l.status.id.clone();
            match self.actuated.get(&id) {
                Some(have) if changed(have, &want).is_empty() => {}
                Some(have) => {
                    let restart = changed(have, &want).iter().any(|r| {
                        c.resize_policy.iter().flatten().any(|p| {
                            p.resource_name == *r && p.restart_policy == "RestartContainer"
                        })
                    });
                    out.push(if restart {
                        Action::Restart {
                            id,
                            name: c.name.clone(),
                        }
                    } else {
                        Action::Update {
                            id,
                            container: Box::new(self.allocated_container(c)),
                        }
                    });
                }
                None => out.push(Action::Update {
                    id,
                    container: Box::new(self.allocated_container(c)),
                }),
            }
        }
        self.in_progress = !out.is_empty();
        out
    }

    /// Adds the containers' `resources` and `allocatedResources` and the resize conditions to a
    /// status the kubelet computed.
    pub fn report(
        &mut self,
        status: &mut PodStatus,
        pod: &Pod,
        instances: &HashMap<String, Vec<Instance>>,
    ) {
        let specs: HashMap<&str, &Container> =
            resizable(pod).map(|c| (c.name.as_str(), c)).collect();
        let lists = [
            status.container_statuses.as_mut(),
            status.init_container_statuses.as_mut(),
        ];
        for cs in lists.into_iter().flatten().flatten() {
            let Some(c) = specs.get(cs.name.as_str()) else {
                continue;
            };
            let allocated = self.allocated_of(c);
            let applied = instances
                .get(&cs.name)
                .and_then(|l| l.first())
                .filter(|l| l.running())
                .and_then(|l| self.actuated.get(&l.status.id))
                .cloned()
                .unwrap_or_else(|| allocated.clone());
            cs.resources = Some(ResourceRequirements {
                claims: None,
                ..applied
            });
            cs.allocated_resources = allocated.requests.filter(|r| !r.is_empty());
        }
        let now = skiff_client::time::now_time();
        let mut next = Vec::new();
        if let Some((reason, message)) = &self.pending {
            next.push(self.condition(PENDING, Some(reason.as_str()), Some(message.as_str()), &now));
        }
        if self.in_progress || self.error.is_some() {
            let (reason, message) = match &self.error {
                Some(m) => (Some("Error"), Some(m.as_str())),
                None => (None, None),
            };
            next.push(self.condition(IN_PROGRESS, reason, message, &now));
        }
        self.conditions = next.clone();
        let conditions = status.conditions.get_or_insert_with(Vec::new);
        conditions.retain(|c| c.type_ != PENDING && c.type_ != IN_PROGRESS);
        conditions.extend(next);
    }

    /// A resize condition, keeping its times while its reason and message stay the same.
    fn condition(
        &self,
        type_: &str,
        reason: Option<&str>,
        message: Option<&str>,
        now: &Time,
    ) -> PodCondition {
        let prev = self.conditions.iter().find(|c| c.type_ == type_);
        let same =
            prev.is_some_and(|p| p.reason.as_deref() == reason && p.message.as_deref() == message);
        let (probe, transition) = match prev {
            Some(p) if same => (p.last_probe_time.clone(), p.last_transition_time.clone()),
            Some(p) if p.reason.as_deref() == reason => {
                (Some(now.clone()), p.last_transition_time.clone())
            }
            _ => (Some(now.clone()), Some(now.clone())),
        };
        PodCondition {
            type_: type_.to_string(),
            status: "True".into(),
            reason: reason.map(String::from),
            message: message.map(String::from),
            last_probe_time: probe,
            last_transition_time: transition,
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(cpu: &str, mem: &str) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p", "uid": "u"},
            "spec": {"containers": [{"name": "c", "image": "i", "resources": {
                "requests": {"cpu": cpu, "memory": mem}, "limits": {"cpu": cpu, "memory": mem}},
                "resizePolicy": [{"resourceName": "memory", "restartPolicy": "RestartContainer"}]}]}}))
        .unwrap()
    }

    const NODE: Totals = Totals {
        cpu_millis: 2000,
        memory: 1 << 30,
    };

    #[test]
    fn a_resize_is_allocated_when_it_fits() {
        let ledger = Ledger::default();
        let mut r = Resizes::default();
        r.allocate(&pod("500m", "64Mi"), "u", &ledger, NODE);
        assert_eq!(ledger.others("x").cpu_millis, 500);
        r.allocate(&pod("1", "64Mi"), "u", &ledger, NODE);
        assert!(r.pending.is_none());
        assert_eq!(ledger.others("x").cpu_millis, 1000);
        let c = r.allocated_container(&pod("1", "64Mi").spec.unwrap().containers[0]);
        assert_eq!(c.resources.unwrap().limits.unwrap()["cpu"].0, "1");
    }

    #[test]
    fn infeasible_and_deferred_resizes_wait() {
        let ledger = Ledger::default();
        ledger.record(
            "other",
            Totals {
                cpu_millis: 1500,
                memory: 0,
            },
        );
        let mut r = Resizes::default();
        r.allocate(&pod("500m", "64Mi"), "u", &ledger, NODE);
        r.allocate(&pod("3", "64Mi"), "u", &ledger, NODE);
        assert_eq!(
            r.pending,
            Some((
                "Infeasible".into(),
                "Node didn't have enough capacity: cpu, requested: 3000, capacity: 2000".into()
            ))
        );
        r.allocate(&pod("1", "64Mi"), "u", &ledger, NODE);
        assert_eq!(
            r.pending,
            Some((
                "Deferred".into(),
                "Node didn't have enough resource: cpu, requested: 1000, used: 1500, capacity: 2000"
                    .into()
            ))
        );
        // What runs keeps its allocation meanwhile.
        assert_eq!(ledger.others("x").cpu_millis, 2000);
        let mut status = PodStatus::default();
        r.report(&mut status, &pod("1", "64Mi"), &HashMap::new());
        let c = &status.conditions.unwrap()[0];
        assert_eq!(
            (c.type_.as_str(), c.reason.as_deref()),
            (PENDING, Some("Deferred"))
        );
    }

    #[test]
    fn changes_are_told_apart_exactly() {
        let a = pod("1", "64Mi").spec.unwrap().containers[0]
            .resources
            .clone()
            .unwrap();
        let b = pod("1000m", "65536Ki").spec.unwrap().containers[0]
            .resources
            .clone()
            .unwrap();
        assert!(changed(&a, &b).is_empty());
        let c = pod("1", "128Mi").spec.unwrap().containers[0]
            .resources
            .clone()
            .unwrap();
        assert_eq!(changed(&a, &c), ["memory"]);
    }
}
