//! ResourceQuota's rules: what an object uses of a quota, which quotas an object falls under,
//! and whether a write fits — the same answers for the API server's `ResourceQuota`
//! admission (which charges a write before it is stored) and the `resourcequota` controller
//! (which recounts what a namespace holds), as Kubernetes' quota evaluators give them.
//!
//! - Pods use `pods`, `count/pods`, `cpu`/`memory`/`ephemeral-storage` (their requests),
//!   `requests.*`, `limits.*`, hugepages and extended resources (`requests.<name>`). A pod's
//!   requests are its containers' sum or its largest init container (sidecars counted as
//!   Kubernetes counts them), whichever is larger, plus `spec.overhead`. Pods that finished
//!   (`Succeeded`, `Failed`) or were deleted longer ago than their grace period use nothing
//!   but `count/pods`.
//! - Services use `services`, `count/services`, `services.nodeports` and
//!   `services.loadbalancers`.
//! - PersistentVolumeClaims use `persistentvolumeclaims`, `requests.storage`, and the same per
//!   storage class (`<class>.storageclass.storage.k8s.io/requests.storage`).
//! - Any other resource uses `count/<plural>.<group>` (`count/<plural>` in the core group),
//!   and ConfigMaps, Secrets, ReplicationControllers and ResourceQuotas also their legacy
//!   names (`configmaps`, ...).
//!
//! Scopes (`Terminating`, `NotTerminating`, `BestEffort`, `NotBestEffort`, `PriorityClass`,
//! `CrossNamespacePodAffinity`, in `spec.scopes` or `spec.scopeSelector`) select pods; a
//! quota with any scope tracks nothing else.
//!
//! Everything here is a pure function of its arguments (the current time is one): no I/O.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{
    Container, PersistentVolumeClaim, Pod, ResourceQuota, ResourceQuotaSpec,
    ScopedResourceSelectorRequirement, Service,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as Wire;
use k8s_openapi::jiff::Timestamp;

use crate::qos::{self, QosClass};
use crate::quantity::{Format, Quantity};

/// Amounts by resource name (`pods`, `requests.cpu`, ...), ordered by name.
pub type ResourceList = BTreeMap<String, Quantity>;

/// `ResourceQuotaScope` names.
pub mod scope {
    /// Pods with `activeDeadlineSeconds` set.
    pub const TERMINATING: &str = "Terminating";
    /// Pods without `activeDeadlineSeconds`.
    pub const NOT_TERMINATING: &str = "NotTerminating";
    /// Pods of the `BestEffort` QoS class.
    pub const BEST_EFFORT: &str = "BestEffort";
    /// Pods of any other QoS class.
    pub const NOT_BEST_EFFORT: &str = "NotBestEffort";
    /// Pods by PriorityClass (with `scopeSelector` operators).
    pub const PRIORITY_CLASS: &str = "PriorityClass";
    /// Pods whose (anti-)affinity terms name other namespaces.
    pub const CROSS_NAMESPACE_POD_AFFINITY: &str = "CrossNamespacePodAffinity";
}

/// The suffix of storage-class-qualified claim resources
/// (`gold.storageclass.storage.k8s.io/requests.storage`).
pub const STORAGE_CLASS_SUFFIX: &str = ".storageclass.storage.k8s.io/";

/// The prefix quota gives requested resources (`requests.cpu`, `requests.example.com/gpu`).
const REQUESTS_PREFIX: &str = "requests.";
const HUGEPAGES_PREFIX: &str = "hugepages-";

/// The resources pods use, besides hugepages and extended resources.
const POD_RESOURCES: &[&str] = &[
    "count/pods",
    "cpu",
    "memory",
    "ephemeral-storage",
    "requests.cpu",
    "requests.memory",
    "requests.ephemeral-storage",
    "limits.cpu",
    "limits.memory",
    "limits.ephemeral-storage",
    "pods",
];

/// The resources Services use.
const SERVICE_RESOURCES: &[&str] = &[
    "count/services",
    "services",
    "services.nodeports",
    "services.loadbalancers",
];

/// The resources claims use, besides the storage-class-qualified ones.
const CLAIM_RESOURCES: &[&str] = &["persistentvolumeclaims", "requests.storage"];

/// The resources a pod's containers must state when a matching quota limits them (a rule
/// Kubernetes keeps for compatibility, for these six only).
const MUST_SPECIFY: &[&str] = &[
    "cpu",
    "memory",
    "requests.cpu",
    "requests.memory",
    "limits.cpu",
    "limits.memory",
];

/// Resources never charged: virtual ones that are not stored, and events.
const IGNORED: &[(&str, &str)] = &[
    ("", "bindings"),
    ("", "componentstatuses"),
    ("", "events"),
    ("events.k8s.io", "events"),
    ("authentication.k8s.io", "tokenreviews"),
    ("authentication.k8s.io", "selfsubjectreviews"),
    ("authorization.k8s.io", "subjectaccessreviews"),
    ("authorization.k8s.io", "selfsubjectaccessreviews"),
    ("authorization.k8s.io", "localsubjectaccessreviews"),
    ("authorization.k8s.io", "selfsubjectrulesreviews"),
];

/// The object count name of a resource: `count/pods`, `count/deployments.apps`.
pub fn object_count_name(group: &str, plural: &str) -> String {
    if group.is_empty() {
        format!("count/{plural}")
    } else {
        format!("count/{plural}.{group}")
    }
}

/// The name older quotas count a resource by (`configmaps`, `secrets`,
/// `replicationcontrollers`, `resourcequotas`), if it has one.
pub fn legacy_count_name(group: &str, plural: &str) -> Option<&'static str> {
    match (group, plural) {
        ("", "configmaps") => Some("configmaps"),
        ("", "secrets") => Some("secrets"),
        ("", "replicationcontrollers") => Some("replicationcontrollers"),
        ("", "resourcequotas") => Some("resourcequotas"),
        _ => None,
    }
}

/// Whether writes of a resource are never charged.
pub fn ignored(group: &str, plural: &str) -> bool {
    IGNORED.iter().any(|(g, p)| *g == group && *p == plural)
}

/// Whether a resource name is native to Kubernetes (no `/`, or in `kubernetes.io/`).
fn is_native(name: &str) -> bool {
    !name.contains('/') || name.contains("kubernetes.io/")
}

/// An extended resource a container may request (`example.com/gpu`).
fn is_extended(name: &str) -> bool {
    !is_native(name) && !name.starts_with(REQUESTS_PREFIX)
}

/// A quota name for an extended resource's requests (`requests.example.com/gpu`).
fn is_extended_quota_name(name: &str) -> bool {
    !is_native(name) && name.starts_with(REQUESTS_PREFIX)
}

/// What a write is, as quota sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// A create.
    Create,
    /// An update or patch.
    Update,
}

/// The object being measured.
#[derive(Debug, Clone, Copy)]
pub enum Item<'a> {
    /// A pod.
    Pod(&'a Pod),
    /// A Service.
    Service(&'a Service),
    /// A PersistentVolumeClaim.
    Claim(&'a PersistentVolumeClaim),
    /// An object of any other resource (only counted).
    Object,
}

/// What measures a resource's usage: one per group and resource, as Kubernetes' evaluators.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Evaluator {
    /// Pods: compute resources and counts.
    Pods,
    /// Services: counts, node ports and load balancers.
    Services,
    /// PersistentVolumeClaims: counts and storage.
    Claims,
    /// Objects of any other resource: counted.
    Count {
        /// The API group ("" for core).
        group: String,
        /// The plural resource name.
        plural: String,
    },
}

impl Evaluator {
    /// The evaluator of a resource.
    pub fn for_resource(group: &str, plural: &str) -> Evaluator {
        match (group, plural) {
            ("", "pods") => Evaluator::Pods,
            ("", "services") => Evaluator::Services,
            ("", "persistentvolumeclaims") => Evaluator::Claims,
            _ => Evaluator::Count {
                group: group.into(),
                plural: plural.into(),
            },
        }
    }

    /// The evaluator that measures a quota resource name, if any does (`storage`, say, is
    /// a valid name nothing measures).
    pub fn for_name(name: &str) -> Option<Evaluator> {
        if CLAIM_RESOURCES.contains(&name)
            || name == "count/persistentvolumeclaims"
            || storage_class_resource(name).is_some()
        {
            return Some(Evaluator::Claims);
        }
        if SERVICE_RESOURCES.contains(&name) {
            return Some(Evaluator::Services);
        }
        if POD_RESOURCES.contains(&name)
            || name.starts_with(HUGEPAGES_PREFIX)
            || name.starts_with("requests.hugepages-")
            || is_extended_quota_name(name)
        {
            return Some(Evaluator::Pods);
        }
        match name {
            "configmaps" | "secrets" | "replicationcontrollers" | "resourcequotas" => {
                return Some(Evaluator::Count {
                    group: String::new(),
                    plural: name.into(),
                })
            }
            _ => {}
        }
        let counted = name.strip_prefix("count/")?;
        let (plural, group) = counted.split_once('.').unwrap_or((counted, ""));
        if plural.is_empty() {
            return None;
        }
        Some(Evaluator::for_resource(group, plural))
    }

    /// Whether a write of this resource can change what quotas hold: creates, and updates of
    /// Services and claims (whose usage can change); never writes through subresources.
    pub fn handles(&self, op: Operation) -> bool {
        match self {
            Evaluator::Services | Evaluator::Claims => true,
            Evaluator::Pods | Evaluator::Count { .. } => op == Operation::Create,
        }
    }

    /// The names among `names` this evaluator measures.
    pub fn matching<'n>(&self, names: impl IntoIterator<Item = &'n str>) -> Vec<String> {
        names
            .into_iter()
            .filter(|n| Evaluator::for_name(n).as_ref() == Some(self))
            .map(String::from)
            .collect()
    }

    /// What `item` uses, as of `now`.
    pub fn usage(&self, item: Item<'_>, now: Timestamp) -> ResourceList {
        match (self, item) {
            (Evaluator::Pods, Item::Pod(p)) => pod_usage(p, now),
            (Evaluator::Services, Item::Service(s)) => service_usage(s),
            (Evaluator::Claims, Item::Claim(c)) => claim_usage(c),
            (Evaluator::Count { group, plural }, _) => count_usage(group, plural),
            // A resource measured with the wrong kind of object: it is at least one object.
            (Evaluator::Pods, _) => count_usage("", "pods"),
            (Evaluator::Services, _) => count_usage("", "services"),
            (Evaluator::Claims, _) => count_usage("", "persistentvolumeclaims"),
        }
    }

    /// Whether `item` falls under one scope selector. Only pods do.
    pub fn matches_scope(&self, sel: &ScopedResourceSelectorRequirement, item: Item<'_>) -> bool {
        match (self, item) {
            (Evaluator::Pods, Item::Pod(p)) => pod_matches_scope(sel, p),
            _ => false,
        }
    }

    /// Whether a quota covers `item`: its `status.hard` names something this evaluator
    /// measures, and `item` falls under every scope of the quota.
    pub fn matches(&self, quota: &ResourceQuota, item: Item<'_>) -> bool {
        let hard = status_hard(quota);
        if self.matching(hard.keys().map(String::as_str)).is_empty() {
            return false;
        }
        quota
            .spec
            .as_ref()
            .map(scope_selectors)
            .unwrap_or_default()
            .iter()
            .all(|s| self.matches_scope(s, item))
    }

    /// Checks what a matching quota demands of the object beyond fitting: a pod's containers
    /// must state the CPU and memory requests and limits the quota limits. The error reads
    /// as Kubernetes words it (`must specify limits.cpu for: web; requests.cpu for: web`).
    pub fn constraints(&self, required: &[String], item: Item<'_>) -> Result<(), String> {
        let (Evaluator::Pods, Item::Pod(pod)) = (self, item) else {
            return Ok(());
        };
        let required: BTreeSet<&str> = required
            .iter()
            .map(String::as_str)
            .filter(|r| MUST_SPECIFY.contains(r))
            .collect();
        if required.is_empty() {
            return Ok(());
        }
        let mut missing: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        let spec = pod.spec.as_ref();
        let containers = spec
            .map(|s| s.containers.iter())
            .into_iter()
            .flatten()
            .chain(
                spec.and_then(|s| s.init_containers.as_ref())
                    .into_iter()
                    .flatten(),
            );
        for c in containers {
            let (requests, limits) = container_lists(c);
            let have = compute_usage(&requests, &limits);
            for r in &required {
                if !have.contains_key(*r) {
                    missing.entry(r).or_default().insert(c.name.as_str());
                }
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        let parts: Vec<String> = missing
            .iter()
            .map(|(r, names)| {
                let names: Vec<&str> = names.iter().copied().collect();
                format!("{r} for: {}", names.join(","))
            })
            .collect();
        Err(format!("must specify {}", parts.join("; ")))
    }
}

/// The resource a storage-class-qualified name limits (`requests.storage` of
/// `gold.storageclass.storage.k8s.io/requests.storage`), if it is one.
fn storage_class_resource(name: &str) -> Option<&str> {
    let (_, resource) = name.split_once(STORAGE_CLASS_SUFFIX)?;
    CLAIM_RESOURCES.contains(&resource).then_some(resource)
}

/// A quota's scopes and scope selector as one list of requirements (a scope in `scopes`
/// is `Exists` of that scope).
pub fn scope_selectors(spec: &ResourceQuotaSpec) -> Vec<ScopedResourceSelectorRequirement> {
    let mut out: Vec<ScopedResourceSelectorRequirement> = spec
        .scopes
        .iter()
        .flatten()
        .map(|s| ScopedResourceSelectorRequirement {
            scope_name: s.clone(),
            operator: "Exists".into(),
            values: None,
        })
        .collect();
    if let Some(sel) = &spec.scope_selector {
        out.extend(sel.match_expressions.iter().flatten().cloned());
    }
    out
}

/// A wire resource list, read exactly; malformed quantities are left out (validation refuses
/// them before they are stored).
pub fn parse_list(map: Option<&BTreeMap<String, Wire>>) -> ResourceList {
    map.into_iter()
        .flatten()
        .filter_map(|(k, v)| Quantity::try_from(v).ok().map(|q| (k.clone(), q)))
        .collect()
}

/// A resource list on the wire, each quantity in canonical form.
pub fn to_wire(list: &ResourceList) -> BTreeMap<String, Wire> {
    list.iter().map(|(k, v)| (k.clone(), v.to_wire())).collect()
}

/// A quota's `status.hard`.
pub fn status_hard(quota: &ResourceQuota) -> ResourceList {
    parse_list(quota.status.as_ref().and_then(|s| s.hard.as_ref()))
}

/// A quota's `status.used`.
pub fn status_used(quota: &ResourceQuota) -> ResourceList {
    parse_list(quota.status.as_ref().and_then(|s| s.used.as_ref()))
}

/// The sum, or the larger of the two where it would not fit (about 10^29 units: no limit
/// can tell the difference).
fn sum(a: Quantity, b: Quantity) -> Quantity {
    a.checked_add(b).unwrap_or(a.max(b))
}

/// `a + b`, name by name (a name in only one is taken as it is).
pub fn add(a: &ResourceList, b: &ResourceList) -> ResourceList {
    let mut out = a.clone();
    for (k, v) in b {
        let e = out.entry(k.clone()).or_insert(Quantity::ZERO);
        *e = sum(*e, *v);
    }
    out
}

/// `a - b` for the names of `a`, never below zero.
pub fn subtract_non_negative(a: &ResourceList, b: &ResourceList) -> ResourceList {
    a.iter()
        .map(|(k, v)| {
            let d = match b.get(k) {
                Some(x) => v.checked_sub(*x).unwrap_or(Quantity::ZERO),
                None => *v,
            };
            let d = if d.signum() < 0 { Quantity::ZERO } else { d };
            (k.clone(), d)
        })
        .collect()
}

/// The entries of `list` whose names are in `names`.
pub fn mask<'n>(list: &ResourceList, names: impl IntoIterator<Item = &'n str>) -> ResourceList {
    names
        .into_iter()
        .filter_map(|n| list.get(n).map(|v| (n.to_string(), *v)))
        .collect()
}

/// `list` without its zero entries.
pub fn remove_zeros(list: &ResourceList) -> ResourceList {
    list.iter()
        .filter(|(_, v)| !v.is_zero())
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

/// Whether every entry of `a` is at most the same entry of `b` (names `b` lacks are not
/// limited), and the names that exceed.
pub fn less_than_or_equal(a: &ResourceList, b: &ResourceList) -> (bool, Vec<String>) {
    let exceeded: Vec<String> = a
        .iter()
        .filter(|(k, v)| b.get(*k).is_some_and(|limit| *v > limit))
        .map(|(k, _)| k.clone())
        .collect();
    (exceeded.is_empty(), exceeded)
}

/// Whether two lists hold the same amounts (formats aside).
pub fn equals(a: &ResourceList, b: &ResourceList) -> bool {
    a == b
}

/// `cpu=1,pods=2`, sorted by name, as quota errors print resource lists.
pub fn pretty(list: &ResourceList) -> String {
    list.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn one() -> Quantity {
    Quantity::from_value(1, Format::DecimalSI)
}

/// What one object of a resource uses: its object count (and legacy name).
pub fn count_usage(group: &str, plural: &str) -> ResourceList {
    let mut out = ResourceList::new();
    out.insert(object_count_name(group, plural), one());
    if let Some(alias) = legacy_count_name(group, plural) {
        out.insert(alias.into(), one());
    }
    out
}

/// What a Service uses: one service, its node ports (NodePort and LoadBalancer Services;
/// for a LoadBalancer with `allocateLoadBalancerNodePorts: false`, only the ports that name
/// one), and one load balancer.
pub fn service_usage(svc: &Service) -> ResourceList {
    let mut out = ResourceList::new();
    out.insert("count/services".into(), one());
    out.insert("services".into(), one());
    let spec = svc.spec.as_ref();
    let ports = spec.and_then(|s| s.ports.as_ref());
    let n = |count: usize| Quantity::from_value(count as i64, Format::DecimalSI);
    let (node_ports, lbs) = match spec.and_then(|s| s.type_.as_deref()) {
        Some("NodePort") => (n(ports.map_or(0, Vec::len)), Quantity::ZERO),
        Some("LoadBalancer") => {
            let explicit_only =
                spec.and_then(|s| s.allocate_load_balancer_node_ports) == Some(false);
            let count = if explicit_only {
                ports
                    .into_iter()
                    .flatten()
                    .filter(|p| p.node_port.unwrap_or(0) != 0)
                    .count()
            } else {
                ports.map_or(0, Vec::len)
            };
            (n(count), one())
        }
        _ => (Quantity::ZERO, Quantity::ZERO),
    };
    out.insert("services.nodeports".into(), node_ports);
    out.insert("services.loadbalancers".into(), lbs);
    out
}

/// A claim's storage class: the beta annotation, else `spec.storageClassName`.
fn claim_class(pvc: &PersistentVolumeClaim) -> Option<&str> {
    if let Some(c) = pvc
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("volume.beta.kubernetes.io/storage-class"))
    {
        return Some(c.as_str());
    }
    pvc.spec
        .as_ref()
        .and_then(|s| s.storage_class_name.as_deref())
}

/// Whole units, rounded up: storage is charged in bytes.
fn round_up(q: Quantity) -> Quantity {
    let whole = Quantity::from_value(q.value(), q.format());
    if whole == q {
        q
    } else {
        whole
    }
}

/// What a claim uses: one claim, its requested storage (or the allocated storage, when
/// larger), both also per storage class.
pub fn claim_usage(pvc: &PersistentVolumeClaim) -> ResourceList {
    let mut out = ResourceList::new();
    out.insert("persistentvolumeclaims".into(), one());
    out.insert("count/persistentvolumeclaims".into(), one());
    let class = claim_class(pvc).filter(|c| !c.is_empty());
    if let Some(c) = class {
        out.insert(
            format!("{c}{STORAGE_CLASS_SUFFIX}persistentvolumeclaims"),
            one(),
        );
    }
    let requested = pvc
        .spec
        .as_ref()
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .and_then(|q| Quantity::try_from(q).ok())
        .map(round_up);
    let allocated = pvc
        .status
        .as_ref()
        .and_then(|s| s.allocated_resources.as_ref())
        .and_then(|r| r.get("storage"))
        .and_then(|q| Quantity::try_from(q).ok());
    let storage = match (requested, allocated) {
        (Some(r), Some(a)) if a > r => Some(round_up(a)),
        (r, _) => r,
    };
    if let Some(s) = storage {
        out.insert("requests.storage".into(), s);
        if let Some(c) = class {
            out.insert(format!("{c}{STORAGE_CLASS_SUFFIX}requests.storage"), s);
        }
    }
    out
}

/// Whether a pod still counts for compute quota at `now`: not finished, and not deleted
/// longer ago than its grace period (a pod stuck terminating on a lost node must not hold
/// its namespace's quota).
pub fn pod_counts(pod: &Pod, now: Timestamp) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Succeeded") | Some("Failed")) {
        return false;
    }
    if let (Some(deleted), Some(grace)) = (
        pod.metadata.deletion_timestamp.as_ref(),
        pod.metadata.deletion_grace_period_seconds,
    ) {
        let deadline = deleted.0.as_nanosecond() + i128::from(grace) * 1_000_000_000;
        if now.as_nanosecond() > deadline {
            return false;
        }
    }
    true
}

fn container_lists(c: &Container) -> (ResourceList, ResourceList) {
    let r = c.resources.as_ref();
    (
        parse_list(r.and_then(|r| r.requests.as_ref())),
        parse_list(r.and_then(|r| r.limits.as_ref())),
    )
}

fn add_into(list: &mut ResourceList, other: &ResourceList) {
    for (k, v) in other {
        let e = list.entry(k.clone()).or_insert(Quantity::ZERO);
        *e = sum(*e, *v);
    }
}

fn max_into(list: &mut ResourceList, other: &ResourceList) {
    for (k, v) in other {
        match list.get(k) {
            Some(have) if have >= v => {}
            _ => {
                list.insert(k.clone(), *v);
            }
        }
    }
}

/// A pod's requests (`limits == false`) or limits, aggregated as Kubernetes does for
/// scheduling and quota: the containers' sum and every restartable (sidecar) init
/// container's, or, when larger, what any init container needs while it runs (itself plus
/// the sidecars started before it).
fn aggregate(pod: &Pod, limits: bool) -> ResourceList {
    let pick = |c: &Container| {
        let (r, l) = container_lists(c);
        if limits {
            l
        } else {
            r
        }
    };
    let Some(spec) = pod.spec.as_ref() else {
        return ResourceList::new();
    };
    let mut result = ResourceList::new();
    for c in &spec.containers {
        add_into(&mut result, &pick(c));
    }
    let mut sidecars = ResourceList::new();
    let mut init_peak = ResourceList::new();
    for c in spec.init_containers.iter().flatten() {
        let own = pick(c);
        let running = if c.restart_policy.as_deref() == Some("Always") {
            add_into(&mut result, &own);
            add_into(&mut sidecars, &own);
            sidecars.clone()
        } else {
            add(&own, &sidecars)
        };
        max_into(&mut init_peak, &running);
    }
    max_into(&mut result, &init_peak);
    result
}

/// A pod's total requests, with `spec.overhead` added.
pub fn pod_requests(pod: &Pod) -> ResourceList {
    let mut reqs = aggregate(pod, false);
    let overhead = parse_list(pod.spec.as_ref().and_then(|s| s.overhead.as_ref()));
    add_into(&mut reqs, &overhead);
    reqs
}

/// A pod's total limits, with `spec.overhead` added to every non-zero limit.
pub fn pod_limits(pod: &Pod) -> ResourceList {
    let mut limits = aggregate(pod, true);
    let overhead = parse_list(pod.spec.as_ref().and_then(|s| s.overhead.as_ref()));
    for (k, v) in overhead {
        if let Some(l) = limits.get_mut(&k) {
            if !l.is_zero() {
                *l = sum(*l, v);
            }
        }
    }
    limits
}

/// The quota names of a set of requests and limits (one container's or a pod's total).
fn compute_usage(requests: &ResourceList, limits: &ResourceList) -> ResourceList {
    let mut out = ResourceList::new();
    out.insert("pods".into(), one());
    for r in ["cpu", "memory", "ephemeral-storage"] {
        if let Some(q) = requests.get(r) {
            out.insert(r.into(), *q);
            out.insert(format!("{REQUESTS_PREFIX}{r}"), *q);
        }
        if let Some(q) = limits.get(r) {
            out.insert(format!("limits.{r}"), *q);
        }
    }
    for (k, q) in requests {
        if k.starts_with(HUGEPAGES_PREFIX) {
            out.insert(k.clone(), *q);
            out.insert(format!("{REQUESTS_PREFIX}{k}"), *q);
        } else if is_extended(k) {
            out.insert(format!("{REQUESTS_PREFIX}{k}"), *q);
        }
    }
    out
}

/// What a pod uses at `now`: always `count/pods`; while it counts (see [`pod_counts`]), also
/// `pods` and its compute resources.
pub fn pod_usage(pod: &Pod, now: Timestamp) -> ResourceList {
    let mut out = ResourceList::new();
    out.insert("count/pods".into(), one());
    if !pod_counts(pod, now) {
        return out;
    }
    add_into(
        &mut out,
        &compute_usage(&pod_requests(pod), &pod_limits(pod)),
    );
    out
}

fn cross_namespace_affinity(pod: &Pod) -> bool {
    let Some(aff) = pod.spec.as_ref().and_then(|s| s.affinity.as_ref()) else {
        return false;
    };
    let cross = |t: &k8s_openapi::api::core::v1::PodAffinityTerm| {
        t.namespaces.as_ref().is_some_and(|n| !n.is_empty()) || t.namespace_selector.is_some()
    };
    let a = aff.pod_affinity.as_ref().is_some_and(|a| {
        a.required_during_scheduling_ignored_during_execution
            .iter()
            .flatten()
            .any(cross)
            || a.preferred_during_scheduling_ignored_during_execution
                .iter()
                .flatten()
                .any(|w| cross(&w.pod_affinity_term))
    });
    let anti = aff.pod_anti_affinity.as_ref().is_some_and(|a| {
        a.required_during_scheduling_ignored_during_execution
            .iter()
            .flatten()
            .any(cross)
            || a.preferred_during_scheduling_ignored_during_execution
                .iter()
                .flatten()
                .any(|w| cross(&w.pod_affinity_term))
    });
    a || anti
}

/// Whether a pod falls under one scope requirement.
pub fn pod_matches_scope(sel: &ScopedResourceSelectorRequirement, pod: &Pod) -> bool {
    let spec = pod.spec.as_ref();
    let terminating = spec
        .and_then(|s| s.active_deadline_seconds)
        .is_some_and(|d| d >= 0);
    let best_effort = || spec.is_some_and(|s| qos::compute(s) == QosClass::BestEffort);
    match sel.scope_name.as_str() {
        scope::TERMINATING => terminating,
        scope::NOT_TERMINATING => !terminating,
        scope::BEST_EFFORT => best_effort(),
        scope::NOT_BEST_EFFORT => !best_effort(),
        scope::PRIORITY_CLASS => {
            let class = spec
                .and_then(|s| s.priority_class_name.as_deref())
                .filter(|c| !c.is_empty());
            let values = sel.values.as_deref().unwrap_or(&[]);
            match sel.operator.as_str() {
                "Exists" => class.is_some(),
                "DoesNotExist" => class.is_none(),
                "In" => class.is_some_and(|c| values.iter().any(|v| v == c)),
                "NotIn" => !class.is_some_and(|c| values.iter().any(|v| v == c)),
                _ => false,
            }
        }
        scope::CROSS_NAMESPACE_POD_AFFINITY => cross_namespace_affinity(pod),
        _ => false,
    }
}

/// Whether a quota with `scopes` scope requirements counts `item`.
pub fn matches_scopes(
    evaluator: &Evaluator,
    scopes: &[ScopedResourceSelectorRequirement],
    item: Item<'_>,
) -> bool {
    scopes.iter().all(|s| evaluator.matches_scope(s, item))
}

/// Why a write was refused; the text follows `<resource> "<name>" is forbidden: `.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refusal(pub String);

/// A write's charge to one quota.
#[derive(Debug, Clone, PartialEq)]
pub struct Charge {
    /// The quota's index in the list given.
    pub index: usize,
    /// What the write adds, for the names the quota limits.
    pub requested: ResourceList,
}

/// A write, as quota admission checks it.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// Create or update.
    pub operation: Operation,
    /// The resource's evaluator.
    pub evaluator: &'a Evaluator,
    /// The object as it would be stored.
    pub item: Item<'a>,
    /// The stored object, on update.
    pub old: Option<Item<'a>>,
    /// The current time.
    pub now: Timestamp,
}

/// Adds `requested` to a quota's usage if it fits: the new `status.used`, or the refusal
/// (`exceeded quota: NAME, requested: pods=1, used: pods=2, limited: pods=2`).
pub fn charge(
    name: &str,
    hard: &ResourceList,
    used: &ResourceList,
    requested: &ResourceList,
) -> Result<ResourceList, Refusal> {
    let new_used = add(used, requested);
    let masked = mask(&new_used, requested.keys().map(String::as_str));
    let (ok, exceeded) = less_than_or_equal(&masked, hard);
    if ok {
        return Ok(new_used);
    }
    let names = || exceeded.iter().map(String::as_str);
    Err(Refusal(format!(
        "exceeded quota: {name}, requested: {}, used: {}, limited: {}",
        pretty(&mask(requested, names())),
        pretty(&mask(used, names())),
        pretty(&mask(hard, names())),
    )))
}

fn quota_name(q: &ResourceQuota) -> &str {
    q.metadata.name.as_deref().unwrap_or("")
}

/// Checks a write against a namespace's quotas, as Kubernetes' quota admission does: each
/// quota that covers the object must find it stating what it demands (see
/// [`Evaluator::constraints`]), must know its own usage of what it limits, and must have
/// room for what the write adds. On success, what to charge each quota (only those whose
/// usage changes).
pub fn check(quotas: &[ResourceQuota], req: &Request<'_>) -> Result<Vec<Charge>, Refusal> {
    let charges = plan(quotas, req)?;
    for c in &charges {
        let q = &quotas[c.index];
        charge(
            quota_name(q),
            &status_hard(q),
            &status_used(q),
            &c.requested,
        )?;
    }
    Ok(charges)
}

/// [`check`] but for the limits themselves: what the write would charge each quota, leaving
/// whether it fits to [`charge`] against the quota as stored when the charge is made.
pub fn plan(quotas: &[ResourceQuota], req: &Request<'_>) -> Result<Vec<Charge>, Refusal> {
    let ev = req.evaluator;
    if !ev.handles(req.operation) {
        return Ok(Vec::new());
    }
    let mut interesting = Vec::new();
    for (i, q) in quotas.iter().enumerate() {
        if !ev.matches(q, req.item) {
            continue;
        }
        let hard = status_hard(q);
        let restricted = ev.matching(hard.keys().map(String::as_str));
        ev.constraints(&restricted, req.item)
            .map_err(|e| Refusal(format!("failed quota: {}: {e}", quota_name(q))))?;
        let used = status_used(q);
        if restricted.iter().any(|r| !used.contains_key(r)) {
            let mut names = restricted.clone();
            names.sort();
            return Err(Refusal(format!(
                "status unknown for quota: {}, resources: {}",
                quota_name(q),
                names.join(",")
            )));
        }
        interesting.push(i);
    }
    if interesting.is_empty() {
        return Ok(Vec::new());
    }
    let usage = ev.usage(req.item, req.now);
    let negative: Vec<&str> = usage
        .iter()
        .filter(|(_, v)| v.signum() < 0)
        .map(|(k, _)| k.as_str())
        .collect();
    if !negative.is_empty() {
        return Err(Refusal(format!(
            "quota usage is negative for resource(s): {}",
            negative.join(",")
        )));
    }
    // An update is charged what it adds to what the stored object used, for the quotas
    // that covered the stored object too.
    let delta_on_update = match (req.operation, req.old) {
        (Operation::Update, Some(old)) => {
            Some((subtract_non_negative(&usage, &ev.usage(old, req.now)), old))
        }
        _ => None,
    };
    let mut charges = Vec::new();
    for i in interesting {
        let q = &quotas[i];
        let delta = match &delta_on_update {
            Some((d, old)) if ev.matches(q, *old) => d.clone(),
            _ => usage.clone(),
        };
        let delta = remove_zeros(&delta);
        let hard = status_hard(q);
        let requested = mask(&delta, hard.keys().map(String::as_str));
        if requested.is_empty() {
            continue;
        }
        charges.push(Charge {
            index: i,
            requested,
        });
    }
    Ok(charges)
}

/// What every object of a namespace uses of a quota's `hard` resources, as the quota
/// controller recounts it: every name one `evaluator` measures starts at zero, then each of
/// `items` the quota's scopes select adds its usage.
pub fn usage_of<'a>(
    evaluator: &Evaluator,
    hard_names: &[String],
    scopes: &[ScopedResourceSelectorRequirement],
    items: impl IntoIterator<Item = Item<'a>>,
    now: Timestamp,
) -> ResourceList {
    let names = evaluator.matching(hard_names.iter().map(String::as_str));
    let mut out: ResourceList = names.iter().map(|n| (n.clone(), Quantity::ZERO)).collect();
    if names.is_empty() {
        return out;
    }
    for item in items {
        if matches_scopes(evaluator, scopes, item) {
            add_into(
                &mut out,
                &mask(
                    &evaluator.usage(item, now),
                    names.iter().map(String::as_str),
                ),
            );
        }
    }
    out
}

/// [`usage_of`] for objects only counted, given how many there are.
pub fn count_of(
    evaluator: &Evaluator,
    hard_names: &[String],
    scopes: &[ScopedResourceSelectorRequirement],
    count: usize,
) -> ResourceList {
    let names = evaluator.matching(hard_names.iter().map(String::as_str));
    let counted = if scopes.is_empty() { count } else { 0 };
    let n = Quantity::from_value(
        i64::try_from(counted).unwrap_or(i64::MAX),
        Format::DecimalSI,
    );
    names.into_iter().map(|name| (name, n)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ContainerStatus, PodSpec, PodStatus, ResourceQuotaStatus, ResourceRequirements,
        ScopeSelector, ServicePort, ServiceSpec,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    fn q(s: &str) -> Quantity {
        s.parse().unwrap()
    }

    fn list(pairs: &[(&str, &str)]) -> ResourceList {
        pairs.iter().map(|(k, v)| (k.to_string(), q(v))).collect()
    }

    fn wire(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, Wire>> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), Wire(v.to_string())))
                .collect(),
        )
    }

    fn container(name: &str, req: &[(&str, &str)], lim: &[(&str, &str)]) -> Container {
        Container {
            name: name.into(),
            resources: Some(ResourceRequirements {
                requests: if req.is_empty() { None } else { wire(req) },
                limits: if lim.is_empty() { None } else { wire(lim) },
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn pod(containers: Vec<Container>, init: Vec<Container>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("p".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers,
                init_containers: if init.is_empty() { None } else { Some(init) },
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn now() -> Timestamp {
        Timestamp::from_second(1_700_000_000).unwrap()
    }

    fn quota(name: &str, hard: &[(&str, &str)], used: &[(&str, &str)]) -> ResourceQuota {
        ResourceQuota {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(ResourceQuotaSpec {
                hard: wire(hard),
                ..Default::default()
            }),
            status: Some(ResourceQuotaStatus {
                hard: wire(hard),
                used: wire(used),
            }),
        }
    }

    #[test]
    fn names_find_their_evaluator() {
        assert_eq!(Evaluator::for_name("pods"), Some(Evaluator::Pods));
        assert_eq!(Evaluator::for_name("requests.cpu"), Some(Evaluator::Pods));
        assert_eq!(
            Evaluator::for_name("requests.example.com/gpu"),
            Some(Evaluator::Pods)
        );
        assert_eq!(Evaluator::for_name("hugepages-2Mi"), Some(Evaluator::Pods));
        assert_eq!(
            Evaluator::for_name("requests.storage"),
            Some(Evaluator::Claims)
        );
        assert_eq!(
            Evaluator::for_name("gold.storageclass.storage.k8s.io/requests.storage"),
            Some(Evaluator::Claims)
        );
        assert_eq!(
            Evaluator::for_name("services.nodeports"),
            Some(Evaluator::Services)
        );
        assert_eq!(
            Evaluator::for_name("configmaps"),
            Evaluator::for_name("count/configmaps")
        );
        assert_eq!(
            Evaluator::for_name("count/deployments.apps"),
            Some(Evaluator::Count {
                group: "apps".into(),
                plural: "deployments".into()
            })
        );
        assert_eq!(
            Evaluator::for_name("count/widgets.example.com"),
            Some(Evaluator::for_resource("example.com", "widgets"))
        );
        assert_eq!(Evaluator::for_name("count/pods"), Some(Evaluator::Pods));
        assert_eq!(Evaluator::for_name("storage"), None);
        assert_eq!(Evaluator::for_name("count/"), None);
        assert_eq!(
            object_count_name("apps", "deployments"),
            "count/deployments.apps"
        );
        assert_eq!(
            count_usage("", "secrets"),
            list(&[("count/secrets", "1"), ("secrets", "1")])
        );
    }

    #[test]
    fn pod_usage_counts_requests_limits_and_extended_resources() {
        let p = pod(
            vec![
                container(
                    "a",
                    &[
                        ("cpu", "100m"),
                        ("memory", "64Mi"),
                        ("example.com/gpu", "1"),
                    ],
                    &[("cpu", "200m"), ("memory", "128Mi")],
                ),
                container("b", &[("cpu", "400m")], &[]),
            ],
            vec![],
        );
        let u = pod_usage(&p, now());
        assert_eq!(u["pods"], q("1"));
        assert_eq!(u["count/pods"], q("1"));
        assert_eq!(u["cpu"], q("500m"));
        assert_eq!(u["requests.cpu"], q("500m"));
        assert_eq!(u["requests.memory"], q("64Mi"));
        assert_eq!(u["limits.cpu"], q("200m"));
        assert_eq!(u["limits.memory"], q("128Mi"));
        assert_eq!(u["requests.example.com/gpu"], q("1"));
        assert!(!u.contains_key("example.com/gpu"));
        assert_eq!(u["requests.cpu"].to_string(), "500m");
    }

    #[test]
    fn init_containers_sidecars_and_overhead_count_as_kubernetes_counts_them() {
        // max(sum of containers, largest init container).
        let mut p = pod(
            vec![
                container("a", &[("cpu", "100m")], &[]),
                container("b", &[("cpu", "100m")], &[]),
            ],
            vec![container(
                "init",
                &[("cpu", "500m"), ("memory", "1Gi")],
                &[],
            )],
        );
        assert_eq!(
            pod_requests(&p),
            list(&[("cpu", "500m"), ("memory", "1Gi")])
        );
        // A sidecar runs alongside everything after it.
        let mut sidecar = container("side", &[("cpu", "300m")], &[]);
        sidecar.restart_policy = Some("Always".into());
        p.spec.as_mut().unwrap().init_containers =
            Some(vec![sidecar, container("init", &[("cpu", "250m")], &[])]);
        // Containers 200m + sidecar 300m = 500m; the init container runs with the sidecar: 550m.
        assert_eq!(pod_requests(&p), list(&[("cpu", "550m")]));
        // Overhead adds to requests, and to limits only where a limit is set.
        let mut p = pod(
            vec![container("a", &[("cpu", "1")], &[("cpu", "2")])],
            vec![],
        );
        p.spec.as_mut().unwrap().overhead = wire(&[("cpu", "250m"), ("memory", "120Mi")]);
        assert_eq!(
            pod_requests(&p),
            list(&[("cpu", "1250m"), ("memory", "120Mi")])
        );
        assert_eq!(pod_limits(&p), list(&[("cpu", "2250m")]));
    }

    #[test]
    fn finished_and_long_deleted_pods_use_only_their_count() {
        let mut p = pod(vec![container("a", &[("cpu", "1")], &[])], vec![]);
        p.status = Some(PodStatus {
            phase: Some("Succeeded".into()),
            container_statuses: Some(vec![ContainerStatus::default()]),
            ..Default::default()
        });
        assert_eq!(pod_usage(&p, now()), list(&[("count/pods", "1")]));
        p.status = None;
        p.metadata.deletion_timestamp =
            Some(Time(Timestamp::from_second(1_700_000_000 - 60).unwrap()));
        p.metadata.deletion_grace_period_seconds = Some(30);
        assert_eq!(pod_usage(&p, now()), list(&[("count/pods", "1")]));
        p.metadata.deletion_grace_period_seconds = Some(120);
        assert_eq!(pod_usage(&p, now())["cpu"], q("1"));
    }

    #[test]
    fn services_use_node_ports_and_load_balancers() {
        let port = |n: Option<i32>| ServicePort {
            port: 80,
            node_port: n,
            ..Default::default()
        };
        let svc = |t: &str, alloc: Option<bool>| Service {
            spec: Some(ServiceSpec {
                type_: Some(t.into()),
                ports: Some(vec![port(None), port(Some(30001))]),
                allocate_load_balancer_node_ports: alloc,
                ..Default::default()
            }),
            ..Default::default()
        };
        let u = service_usage(&svc("ClusterIP", None));
        assert_eq!(u["services"], q("1"));
        assert_eq!(u["services.nodeports"], q("0"));
        assert_eq!(
            service_usage(&svc("NodePort", None))["services.nodeports"],
            q("2")
        );
        let lb = service_usage(&svc("LoadBalancer", Some(false)));
        assert_eq!(lb["services.loadbalancers"], q("1"));
        assert_eq!(lb["services.nodeports"], q("1"));
    }

    #[test]
    fn claims_use_storage_per_class_rounded_up() {
        let pvc = PersistentVolumeClaim {
            spec: Some(k8s_openapi::api::core::v1::PersistentVolumeClaimSpec {
                storage_class_name: Some("gold".into()),
                resources: Some(k8s_openapi::api::core::v1::VolumeResourceRequirements {
                    requests: wire(&[("storage", "1.5")]),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let u = claim_usage(&pvc);
        assert_eq!(u["persistentvolumeclaims"], q("1"));
        assert_eq!(u["requests.storage"], q("2"));
        assert_eq!(
            u["gold.storageclass.storage.k8s.io/requests.storage"],
            q("2")
        );
        assert_eq!(
            u["gold.storageclass.storage.k8s.io/persistentvolumeclaims"],
            q("1")
        );
    }

    #[test]
    fn scopes_select_pods() {
        let best_effort = pod(vec![container("a", &[], &[])], vec![]);
        let burstable = pod(vec![container("a", &[("cpu", "1")], &[])], vec![]);
        let exists = |s: &str| ScopedResourceSelectorRequirement {
            scope_name: s.into(),
            operator: "Exists".into(),
            values: None,
        };
        assert!(pod_matches_scope(&exists(scope::BEST_EFFORT), &best_effort));
        assert!(!pod_matches_scope(&exists(scope::BEST_EFFORT), &burstable));
        assert!(pod_matches_scope(
            &exists(scope::NOT_BEST_EFFORT),
            &burstable
        ));
        assert!(pod_matches_scope(
            &exists(scope::NOT_TERMINATING),
            &burstable
        ));
        let mut deadline = burstable.clone();
        deadline.spec.as_mut().unwrap().active_deadline_seconds = Some(30);
        assert!(pod_matches_scope(&exists(scope::TERMINATING), &deadline));
        let mut high = burstable.clone();
        high.spec.as_mut().unwrap().priority_class_name = Some("high".into());
        let pc = |op: &str, values: &[&str]| ScopedResourceSelectorRequirement {
            scope_name: scope::PRIORITY_CLASS.into(),
            operator: op.into(),
            values: Some(values.iter().map(|v| v.to_string()).collect()),
        };
        assert!(pod_matches_scope(&pc("In", &["high", "low"]), &high));
        assert!(!pod_matches_scope(&pc("In", &["high"]), &burstable));
        assert!(pod_matches_scope(&pc("NotIn", &["high"]), &burstable));
        assert!(!pod_matches_scope(&pc("NotIn", &["high"]), &high));
        assert!(pod_matches_scope(&exists(scope::PRIORITY_CLASS), &high));
        assert!(pod_matches_scope(&pc("DoesNotExist", &[]), &burstable));
        // Other objects fall under no scope.
        assert!(!Evaluator::for_resource("", "configmaps")
            .matches_scope(&exists(scope::BEST_EFFORT), Item::Object));
        let spec = ResourceQuotaSpec {
            scopes: Some(vec!["BestEffort".into()]),
            scope_selector: Some(ScopeSelector {
                match_expressions: Some(vec![pc("In", &["high"])]),
            }),
            ..Default::default()
        };
        assert_eq!(scope_selectors(&spec).len(), 2);
    }

    #[test]
    fn admission_refuses_what_exceeds_with_kubernetes_words() {
        let quotas = vec![quota("q", &[("pods", "2")], &[("pods", "2")])];
        let p = pod(vec![container("web", &[], &[])], vec![]);
        let ev = Evaluator::Pods;
        let req = Request {
            operation: Operation::Create,
            evaluator: &ev,
            item: Item::Pod(&p),
            old: None,
            now: now(),
        };
        assert_eq!(
            check(&quotas, &req).unwrap_err().0,
            "exceeded quota: q, requested: pods=1, used: pods=2, limited: pods=2"
        );
        // The plan leaves the limit to the charge.
        assert_eq!(
            plan(&quotas, &req).unwrap(),
            vec![Charge {
                index: 0,
                requested: list(&[("pods", "1")])
            }]
        );
        let quotas = vec![quota("q", &[("pods", "2")], &[("pods", "1")])];
        assert_eq!(
            check(&quotas, &req).unwrap(),
            vec![Charge {
                index: 0,
                requested: list(&[("pods", "1")])
            }]
        );
    }

    #[test]
    fn pods_must_state_what_a_quota_limits() {
        let quotas = vec![quota(
            "compute",
            &[("requests.cpu", "1"), ("limits.cpu", "2")],
            &[("requests.cpu", "0"), ("limits.cpu", "0")],
        )];
        let p = pod(vec![container("web", &[], &[])], vec![]);
        let ev = Evaluator::Pods;
        let req = Request {
            operation: Operation::Create,
            evaluator: &ev,
            item: Item::Pod(&p),
            old: None,
            now: now(),
        };
        assert_eq!(
            check(&quotas, &req).unwrap_err().0,
            "failed quota: compute: must specify limits.cpu for: web; requests.cpu for: web"
        );
    }

    #[test]
    fn quotas_without_usage_refuse_and_those_without_hard_are_ignored() {
        let ev = Evaluator::for_resource("", "configmaps");
        let req = Request {
            operation: Operation::Create,
            evaluator: &ev,
            item: Item::Object,
            old: None,
            now: now(),
        };
        let unknown = vec![quota("q", &[("count/configmaps", "10")], &[])];
        assert_eq!(
            check(&unknown, &req).unwrap_err().0,
            "status unknown for quota: q, resources: count/configmaps"
        );
        let mut fresh = quota("q", &[("count/configmaps", "10")], &[]);
        fresh.status = None;
        assert_eq!(check(&[fresh], &req).unwrap(), vec![]);
        // Not a resource the quota limits: nothing to charge.
        let other = vec![quota("q", &[("pods", "1")], &[("pods", "1")])];
        assert_eq!(check(&other, &req).unwrap(), vec![]);
        // Updates of counted objects are free.
        let upd = Request {
            operation: Operation::Update,
            ..req
        };
        let full = vec![quota("q", &[("configmaps", "1")], &[("configmaps", "1")])];
        assert_eq!(check(&full, &upd).unwrap(), vec![]);
        assert!(check(&full, &req).is_err());
    }

    #[test]
    fn scoped_quotas_charge_only_what_they_select() {
        let mut q = quota("be", &[("pods", "1")], &[("pods", "1")]);
        q.spec.as_mut().unwrap().scopes = Some(vec!["BestEffort".into()]);
        let burstable = pod(vec![container("a", &[("cpu", "1")], &[])], vec![]);
        let ev = Evaluator::Pods;
        let req = Request {
            operation: Operation::Create,
            evaluator: &ev,
            item: Item::Pod(&burstable),
            old: None,
            now: now(),
        };
        assert_eq!(check(std::slice::from_ref(&q), &req).unwrap(), vec![]);
        let best_effort = pod(vec![container("a", &[], &[])], vec![]);
        let req = Request {
            item: Item::Pod(&best_effort),
            ..req
        };
        assert!(check(&[q], &req).is_err());
    }

    #[test]
    fn service_updates_are_charged_what_they_add() {
        let mk = |t: &str| Service {
            spec: Some(ServiceSpec {
                type_: Some(t.into()),
                ports: Some(vec![ServicePort {
                    port: 80,
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let (old, new) = (mk("ClusterIP"), mk("NodePort"));
        let quotas = vec![quota(
            "svc",
            &[("services", "1"), ("services.nodeports", "1")],
            &[("services", "1"), ("services.nodeports", "0")],
        )];
        let ev = Evaluator::Services;
        let req = Request {
            operation: Operation::Update,
            evaluator: &ev,
            item: Item::Service(&new),
            old: Some(Item::Service(&old)),
            now: now(),
        };
        assert_eq!(
            check(&quotas, &req).unwrap(),
            vec![Charge {
                index: 0,
                requested: list(&[("services.nodeports", "1")])
            }]
        );
    }

    #[test]
    fn charges_recheck_against_fresh_usage() {
        let hard = list(&[("count/configmaps", "10")]);
        let used = list(&[("count/configmaps", "9")]);
        let req = list(&[("count/configmaps", "1")]);
        assert_eq!(
            charge("q", &hard, &used, &req).unwrap(),
            list(&[("count/configmaps", "10")])
        );
        let full = list(&[("count/configmaps", "10")]);
        assert_eq!(
            charge("q", &hard, &full, &req).unwrap_err().0,
            "exceeded quota: q, requested: count/configmaps=1, used: count/configmaps=10, limited: count/configmaps=10"
        );
    }

    #[test]
    fn list_arithmetic() {
        let a = list(&[("cpu", "500m"), ("pods", "1")]);
        let b = list(&[("cpu", "1500m"), ("memory", "1Gi")]);
        assert_eq!(
            add(&a, &b),
            list(&[("cpu", "2"), ("memory", "1Gi"), ("pods", "1")])
        );
        assert_eq!(add(&a, &b)["cpu"].to_string(), "2");
        assert_eq!(
            subtract_non_negative(&a, &b),
            list(&[("cpu", "0"), ("pods", "1")])
        );
        assert_eq!(
            remove_zeros(&subtract_non_negative(&a, &b)),
            list(&[("pods", "1")])
        );
        assert_eq!(less_than_or_equal(&b, &a), (false, vec!["cpu".to_string()]));
        assert_eq!(pretty(&a), "cpu=500m,pods=1");
        // A zero in DecimalSI takes the other operand's format.
        let z = list(&[("memory", "0")]);
        assert_eq!(add(&z, &b)["memory"].to_string(), "1Gi");
    }

    #[test]
    fn the_controller_counts_what_the_scopes_select() {
        let names = vec![
            "pods".to_string(),
            "requests.cpu".to_string(),
            "count/configmaps".to_string(),
        ];
        let a = pod(vec![container("a", &[("cpu", "1")], &[])], vec![]);
        let b = pod(vec![container("b", &[], &[])], vec![]);
        let all = usage_of(
            &Evaluator::Pods,
            &names,
            &[],
            [Item::Pod(&a), Item::Pod(&b)],
            now(),
        );
        assert_eq!(all, list(&[("pods", "2"), ("requests.cpu", "1")]));
        let be = [ScopedResourceSelectorRequirement {
            scope_name: "BestEffort".into(),
            operator: "Exists".into(),
            values: None,
        }];
        let scoped = usage_of(
            &Evaluator::Pods,
            &names,
            &be,
            [Item::Pod(&a), Item::Pod(&b)],
            now(),
        );
        assert_eq!(scoped, list(&[("pods", "1"), ("requests.cpu", "0")]));
        let cms = Evaluator::for_resource("", "configmaps");
        assert_eq!(
            count_of(&cms, &names, &[], 3),
            list(&[("count/configmaps", "3")])
        );
        assert_eq!(
            count_of(&cms, &names, &be, 3),
            list(&[("count/configmaps", "0")])
        );
    }
}
