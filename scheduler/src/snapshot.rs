//! The scheduler's view of the cluster: every node with the pods on it and what they use,
//! plus the indexes that keep a decision's cost independent of how many pods run.
//!
//! Filters and scores read a [`Snapshot`]; the scheduling loop adds each decision to it at
//! once ("assumes" the pod) so the next decision already sees it. Topology spreading and
//! pod (anti-)affinity ask "how many pods matching this selector are in each zone (or host)";
//! instead of walking every pod for every decision, the snapshot keeps, per selector a pod
//! has asked about, the nodes holding matching pods ([`Group`]), updated as pods come and go,
//! and, for every required anti-affinity term of a running pod, the nodes holding pods with
//! that term ([`AntiTerm`]). Node labels per topology key are interned into dense domain ids
//! ([`Topology`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    Node, Pod, PodAffinityTerm, PodSpec, PodStatus, Taint, TopologySpreadConstraint,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta,
};

use crate::resources::{pod_requests, Resources};
use crate::selector;

/// A hash map with a fast hasher, for the snapshot's indexes (rebuilt on every start, never
/// exposed).
pub type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Namespace name → its labels (for affinity terms' `namespaceSelector`).
pub type NamespaceMap = HashMap<String, BTreeMap<String, String>>;

/// A host port a pod claims: protocol, host IP ("0.0.0.0" for all) and port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort {
    /// TCP, UDP or SCTP.
    pub protocol: String,
    /// The host IP; "0.0.0.0" means every address.
    pub ip: String,
    /// The port.
    pub port: i32,
}

impl HostPort {
    /// Whether two claims collide (same protocol and port, overlapping addresses).
    pub fn conflicts(&self, other: &HostPort) -> bool {
        self.port == other.port
            && self.protocol == other.protocol
            && (self.ip == other.ip || self.ip == "0.0.0.0" || other.ip == "0.0.0.0")
    }
}

/// Which namespaces a pod affinity term (or a spread constraint) looks in.
#[derive(Debug, Clone, PartialEq)]
pub enum Scope {
    /// These namespaces.
    Names(Vec<String>),
    /// Every namespace (an empty `namespaceSelector`).
    All,
    /// The listed namespaces and those whose labels match the selector.
    Selected {
        /// Listed by name.
        names: Vec<String>,
        /// Chosen by labels.
        selector: LabelSelector,
    },
}

impl Scope {
    /// The scope of an affinity term written in a pod of namespace `owner`: its
    /// `namespaces` and `namespaceSelector`, or the owner's namespace when neither is set.
    pub fn of_term(term: &PodAffinityTerm, owner: &str) -> Self {
        let names = term.namespaces.clone().unwrap_or_default();
        match &term.namespace_selector {
            None if names.is_empty() => Scope::Names(vec![owner.to_string()]),
            None => Scope::Names(names),
            Some(s) if selector::is_empty(s) => Scope::All,
            Some(s) => Scope::Selected {
                names,
                selector: s.clone(),
            },
        }
    }

    /// Whether the namespace `ns` is in scope.
    pub fn contains(&self, ns: &str, namespaces: &NamespaceMap) -> bool {
        match self {
            Scope::Names(names) => names.iter().any(|n| n == ns),
            Scope::All => true,
            Scope::Selected { names, selector } => {
                names.iter().any(|n| n == ns)
                    || selector::matches(Some(selector), namespaces.get(ns))
            }
        }
    }
}

/// A set of pods: those in a namespace scope whose labels match a selector (an absent
/// selector matches nothing, as in Kubernetes). `key` names it canonically.
#[derive(Debug, Clone)]
pub struct PodSet {
    /// Canonical text of scope and selector; equal sets have equal keys.
    pub key: Arc<str>,
    /// The namespaces.
    pub scope: Scope,
    /// The label selector.
    pub selector: Option<LabelSelector>,
}

impl PodSet {
    /// The set of pods in `scope` matching `selector`.
    pub fn new(scope: Scope, selector: Option<LabelSelector>) -> Self {
        let sel = selector
            .as_ref()
            .map(|s| serde_json::to_string(s).unwrap_or_default())
            .unwrap_or_else(|| "none".into());
        let key = format!("{scope:?}|{sel}").into();
        PodSet {
            key,
            scope,
            selector,
        }
    }

    /// Whether `pod` is in the set.
    pub fn matches(&self, pod: &PodInfo, namespaces: &NamespaceMap) -> bool {
        self.selector.is_some()
            && self.scope.contains(&pod.namespace, namespaces)
            && selector::matches(self.selector.as_ref(), pod.labels())
    }

    /// A label every member must carry, used to find the sets a pod may belong to.
    fn index_label(&self) -> Option<(&str, &str)> {
        self.selector
            .as_ref()?
            .match_labels
            .as_ref()?
            .iter()
            .next()
            .map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// A topology spread constraint, read once from the pod (or Kubernetes' defaults for a
/// controller's pods).
#[derive(Debug, Clone)]
pub struct SpreadConstraint {
    /// `maxSkew`.
    pub max_skew: i64,
    /// `topologyKey`.
    pub topology_key: String,
    /// `whenUnsatisfiable: DoNotSchedule` (a filter) rather than `ScheduleAnyway` (a score).
    pub hard: bool,
    /// `minDomains` (1 when unset).
    pub min_domains: usize,
    /// The pods that count: the pod's namespace and `labelSelector`.
    pub set: PodSet,
    /// Whether the pod itself matches (it adds one to the domain it lands in).
    pub self_match: bool,
    /// `nodeAffinityPolicy: Honor` (the default): nodes outside the pod's node selector and
    /// required node affinity are no domain.
    pub honor_affinity: bool,
    /// `nodeTaintsPolicy: Honor` (default `Ignore`): nodes with a `NoSchedule` or `NoExecute`
    /// taint the pod does not tolerate are no domain.
    pub honor_taints: bool,
}

/// A pod affinity or anti-affinity term, read once from the pod.
#[derive(Debug, Clone)]
pub struct AffinityTerm {
    /// The pods the term selects.
    pub set: PodSet,
    /// `topologyKey`.
    pub topology_key: String,
    /// The weight of a preferred term (0 for a required one).
    pub weight: i64,
    /// Canonical key of set and topology key.
    pub key: Arc<str>,
}

impl AffinityTerm {
    fn new(term: &PodAffinityTerm, owner: &str, weight: i64) -> Self {
        let set = PodSet::new(Scope::of_term(term, owner), term.label_selector.clone());
        let key = format!("{}|{}", set.key, term.topology_key).into();
        AffinityTerm {
            set,
            topology_key: term.topology_key.clone(),
            weight,
            key,
        }
    }
}

/// A pod's inter-pod affinity terms, by kind.
#[derive(Debug, Clone, Default)]
pub struct AffinityTerms {
    /// Required affinity.
    pub required: Vec<AffinityTerm>,
    /// Required anti-affinity.
    pub required_anti: Vec<AffinityTerm>,
    /// Preferred affinity (with weights).
    pub preferred: Vec<AffinityTerm>,
    /// Preferred anti-affinity (with weights).
    pub preferred_anti: Vec<AffinityTerm>,
}

impl AffinityTerms {
    fn of(pod: &Pod, ns: &str) -> Self {
        let Some(a) = pod.spec.as_ref().and_then(|s| s.affinity.as_ref()) else {
            return Self::default();
        };
        let mut t = AffinityTerms::default();
        if let Some(pa) = &a.pod_affinity {
            for r in pa
                .required_during_scheduling_ignored_during_execution
                .iter()
                .flatten()
            {
                t.required.push(AffinityTerm::new(r, ns, 0));
            }
            for w in pa
                .preferred_during_scheduling_ignored_during_execution
                .iter()
                .flatten()
            {
                t.preferred.push(AffinityTerm::new(
                    &w.pod_affinity_term,
                    ns,
                    i64::from(w.weight),
                ));
            }
        }
        if let Some(pa) = &a.pod_anti_affinity {
            for r in pa
                .required_during_scheduling_ignored_during_execution
                .iter()
                .flatten()
            {
                t.required_anti.push(AffinityTerm::new(r, ns, 0));
            }
            for w in pa
                .preferred_during_scheduling_ignored_during_execution
                .iter()
                .flatten()
            {
                t.preferred_anti.push(AffinityTerm::new(
                    &w.pod_affinity_term,
                    ns,
                    i64::from(w.weight),
                ));
            }
        }
        t
    }

    /// Every term, of every kind.
    pub fn all(&self) -> impl Iterator<Item = &AffinityTerm> {
        self.required
            .iter()
            .chain(&self.required_anti)
            .chain(&self.preferred)
            .chain(&self.preferred_anti)
    }
}

/// Kubernetes' default constraints for pods that set none but belong to a controller
/// (a ReplicaSet, StatefulSet, Job ...): spread softly over hosts (skew 3) and zones (skew 5),
/// counting the pods that carry the same labels.
fn default_constraints(pod: &Pod) -> Vec<TopologySpreadConstraint> {
    let controlled = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true));
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    if !controlled || labels.is_empty() {
        return Vec::new();
    }
    let selector = LabelSelector {
        match_labels: Some(labels),
        match_expressions: None,
    };
    [
        ("kubernetes.io/hostname", 3),
        ("topology.kubernetes.io/zone", 5),
    ]
    .into_iter()
    .map(|(key, skew)| TopologySpreadConstraint {
        max_skew: skew,
        topology_key: key.into(),
        when_unsatisfiable: "ScheduleAnyway".into(),
        label_selector: Some(selector.clone()),
        ..Default::default()
    })
    .collect()
}

fn spread_constraints(pod: &Pod, ns: &str) -> Vec<SpreadConstraint> {
    let own = pod
        .spec
        .as_ref()
        .and_then(|s| s.topology_spread_constraints.as_deref())
        .unwrap_or(&[]);
    let defaults;
    let all = if own.is_empty() {
        defaults = default_constraints(pod);
        &defaults[..]
    } else {
        own
    };
    all.iter()
        .map(|c| {
            let narrowed = with_match_label_keys(c, pod);
            SpreadConstraint {
                max_skew: i64::from(c.max_skew),
                topology_key: c.topology_key.clone(),
                hard: c.when_unsatisfiable == "DoNotSchedule",
                min_domains: c.min_domains.unwrap_or(1).max(1) as usize,
                self_match: selector::matches(narrowed.as_ref(), pod.metadata.labels.as_ref()),
                set: PodSet::new(Scope::Names(vec![ns.to_string()]), narrowed),
                honor_affinity: c.node_affinity_policy.as_deref() != Some("Ignore"),
                honor_taints: c.node_taints_policy.as_deref() == Some("Honor"),
            }
        })
        .collect()
}

/// The constraint's `labelSelector` narrowed by `matchLabelKeys`: for each key the pod has a
/// label of, only pods with the same value count (so a Deployment's rollout spreads the new
/// ReplicaSet's pods by `pod-template-hash`, not the old and new together). With no
/// `labelSelector` no pod counts, as in Kubernetes.
fn with_match_label_keys(c: &TopologySpreadConstraint, pod: &Pod) -> Option<LabelSelector> {
    let keys = c.match_label_keys.as_deref().unwrap_or(&[]);
    let mut selector = c.label_selector.clone()?;
    let labels = pod.metadata.labels.as_ref();
    for key in keys {
        if let Some(value) = labels.and_then(|l| l.get(key)) {
            selector
                .match_expressions
                .get_or_insert_with(Vec::new)
                .push(LabelSelectorRequirement {
                    key: key.clone(),
                    operator: "In".into(),
                    values: Some(vec![value.clone()]),
                });
        }
    }
    Some(selector)
}

/// A pod with what the scheduler needs of it worked out once.
#[derive(Debug, Clone)]
pub struct PodInfo {
    /// The pod.
    pub pod: Arc<Pod>,
    /// `namespace/name`.
    pub key: String,
    /// Its namespace.
    pub namespace: String,
    /// What it asks of a node.
    pub requests: Resources,
    /// The host ports it claims.
    pub host_ports: Vec<HostPort>,
    /// Being deleted (`deletionTimestamp` set): spreading no longer counts it.
    pub terminating: bool,
    /// Its topology spread constraints (or the defaults for a controller's pod).
    pub spread: Vec<SpreadConstraint>,
    /// Its inter-pod affinity terms.
    pub affinity: AffinityTerms,
}

impl PodInfo {
    /// Works out what the scheduler needs of `pod`.
    pub fn new(pod: Arc<Pod>) -> Self {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let key = format!("{namespace}/{}", pod.metadata.name.as_deref().unwrap_or(""));
        let mut host_ports = Vec::new();
        if let Some(spec) = pod.spec.as_ref() {
            let containers = spec
                .containers
                .iter()
                .chain(spec.init_containers.iter().flatten());
            for c in containers {
                for p in c.ports.iter().flatten() {
                    if let Some(hp) = p.host_port.filter(|p| *p > 0) {
                        host_ports.push(HostPort {
                            protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                            ip: p
                                .host_ip
                                .clone()
                                .filter(|i| !i.is_empty())
                                .unwrap_or_else(|| "0.0.0.0".into()),
                            port: hp,
                        });
                    }
                }
            }
        }
        PodInfo {
            requests: pod_requests(&pod),
            terminating: pod.metadata.deletion_timestamp.is_some(),
            spread: spread_constraints(&pod, &namespace),
            affinity: AffinityTerms::of(&pod, &namespace),
            key,
            namespace,
            host_ports,
            pod,
        }
    }

    /// The same pod as the snapshot keeps it once placed: what other pods' scheduling reads
    /// of it (identity, labels, priority, phase, requests, ports, required anti-affinity),
    /// without the rest of the object, its own spreading constraints and the affinity terms
    /// that only matter while it is being placed.
    pub fn placed(mut self) -> Self {
        // Of the object itself only what identifies the pod, its labels and priority remain:
        // a running pod's containers, volumes and statuses are most of its memory.
        let m = &self.pod.metadata;
        let spec = self.pod.spec.as_ref();
        self.pod = Arc::new(Pod {
            metadata: ObjectMeta {
                name: m.name.clone(),
                namespace: m.namespace.clone(),
                uid: m.uid.clone(),
                resource_version: m.resource_version.clone(),
                labels: m.labels.clone(),
                deletion_timestamp: m.deletion_timestamp.clone(),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: spec.and_then(|s| s.node_name.clone()),
                scheduler_name: spec.and_then(|s| s.scheduler_name.clone()),
                priority: spec.and_then(|s| s.priority),
                // Volume plugins count the claims and CSI volumes of placed pods.
                volumes: spec
                    .and_then(|s| s.volumes.as_ref())
                    .map(|vs| {
                        vs.iter()
                            .filter(|v| {
                                v.persistent_volume_claim.is_some()
                                    || v.ephemeral.is_some()
                                    || v.csi.is_some()
                            })
                            .cloned()
                            .collect::<Vec<_>>()
                    })
                    .filter(|vs| !vs.is_empty()),
                ..Default::default()
            }),
            status: self.pod.status.as_ref().map(|s| PodStatus {
                phase: s.phase.clone(),
                ..Default::default()
            }),
        });
        self.spread = Vec::new();
        self.affinity.required = Vec::new();
        self.affinity.preferred = Vec::new();
        self.affinity.preferred_anti = Vec::new();
        self
    }

    /// The pod's spec.
    pub fn spec(&self) -> Option<&k8s_openapi::api::core::v1::PodSpec> {
        self.pod.spec.as_ref()
    }

    /// The pod's labels.
    pub fn labels(&self) -> Option<&BTreeMap<String, String>> {
        self.pod.metadata.labels.as_ref()
    }
}

/// A node and the pods on it.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    /// The node.
    pub node: Arc<Node>,
    /// Its name.
    pub name: String,
    /// `spec.unschedulable` (cordoned).
    pub unschedulable: bool,
    /// What pods may use (`status.allocatable`, else `status.capacity`).
    pub allocatable: Resources,
    /// What the pods on it (including assumed ones) ask for.
    pub requested: Resources,
    /// The pods on it.
    pub pods: Vec<Arc<PodInfo>>,
    /// Host ports in use.
    pub used_ports: Vec<HostPort>,
    /// Images the node holds: every name of each, with the image's size in bytes.
    pub images: HashMap<String, i64>,
}

impl NodeInfo {
    /// A node with no pods yet.
    pub fn new(node: Arc<Node>) -> Self {
        let status = node.status.as_ref();
        let allocatable = Resources::from_list(
            status
                .and_then(|s| s.allocatable.as_ref())
                .or_else(|| status.and_then(|s| s.capacity.as_ref())),
        );
        let images = status
            .and_then(|s| s.images.as_ref())
            .into_iter()
            .flatten()
            .flat_map(|i| {
                let size = i.size_bytes.unwrap_or(0);
                i.names.iter().flatten().map(move |n| (n.clone(), size))
            })
            .collect();
        NodeInfo {
            name: node.metadata.name.clone().unwrap_or_default(),
            unschedulable: node
                .spec
                .as_ref()
                .and_then(|s| s.unschedulable)
                .unwrap_or(false),
            node,
            allocatable,
            requested: Resources::default(),
            pods: Vec::new(),
            used_ports: Vec::new(),
            images,
        }
    }

    /// The node's taints.
    pub fn taints(&self) -> &[Taint] {
        self.node
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_deref())
            .unwrap_or(&[])
    }

    /// The node's label `key`.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.node
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(key))
            .map(String::as_str)
    }

    /// Counts a pod on this node.
    pub fn add_pod(&mut self, pod: Arc<PodInfo>) {
        self.requested.add(&pod.requests);
        self.used_ports.extend(pod.host_ports.iter().cloned());
        self.pods.push(pod);
    }

    /// Stops counting the pod `key`, returning it when it was here.
    pub fn remove_pod(&mut self, key: &str) -> Option<Arc<PodInfo>> {
        let i = self.pods.iter().position(|p| p.key == key)?;
        let pod = self.pods.swap_remove(i);
        self.requested.sub(&pod.requests);
        for hp in &pod.host_ports {
            if let Some(j) = self.used_ports.iter().position(|u| u == hp) {
                self.used_ports.swap_remove(j);
            }
        }
        Some(pod)
    }
}

/// A domain id for nodes without the topology label.
pub const NO_DOMAIN: u32 = u32::MAX;

/// One topology key's domains: each node's domain as a dense id.
#[derive(Debug, Default)]
pub struct Topology {
    /// Per node (by index in the snapshot): its domain, or [`NO_DOMAIN`].
    pub domain_of: Vec<u32>,
    ids: Map<String, u32>,
    names: Vec<String>,
    nodes_in: Vec<u32>,
    live: usize,
}

impl Topology {
    /// How many domains have at least one node.
    pub fn domains(&self) -> usize {
        self.live
    }

    /// How many ids have been handed out (an upper bound for dense per-domain arrays).
    pub fn ids(&self) -> usize {
        self.names.len()
    }

    /// The label value of domain `id`.
    pub fn name(&self, id: u32) -> &str {
        self.names
            .get(id as usize)
            .map(String::as_str)
            .unwrap_or("")
    }

    fn assign(&mut self, node: usize, value: Option<&str>) {
        if node == self.domain_of.len() {
            self.domain_of.push(NO_DOMAIN);
        }
        let old = self.domain_of[node];
        if old != NO_DOMAIN {
            self.nodes_in[old as usize] -= 1;
            if self.nodes_in[old as usize] == 0 {
                self.live -= 1;
            }
        }
        let new = match value {
            None => NO_DOMAIN,
            Some(v) => match self.ids.get(v) {
                Some(&id) => id,
                None => {
                    let id = self.names.len() as u32;
                    self.ids.insert(v.to_string(), id);
                    self.names.push(v.to_string());
                    self.nodes_in.push(0);
                    id
                }
            },
        };
        if new != NO_DOMAIN {
            self.nodes_in[new as usize] += 1;
            if self.nodes_in[new as usize] == 1 {
                self.live += 1;
            }
        }
        self.domain_of[node] = new;
    }
}

/// How many pods of a set one node holds.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Count {
    /// All of them.
    pub all: u32,
    /// Those not being deleted.
    pub live: u32,
}

/// The nodes holding pods of one [`PodSet`].
#[derive(Debug)]
pub struct Group {
    /// The set.
    pub set: PodSet,
    /// Node index → how many of its pods are in the set (only nodes with some).
    pub nodes: Map<u32, Count>,
    last_used: u64,
}

/// The nodes holding pods that carry one required anti-affinity term.
#[derive(Debug)]
pub struct AntiTerm {
    /// The term.
    pub term: AffinityTerm,
    /// Node index → how many of its pods carry the term.
    pub nodes: Map<u32, u32>,
}

/// Finds the sets a pod may belong to by one of their required labels.
#[derive(Debug, Default)]
struct SetIndex {
    by_label: Map<String, Map<String, Vec<Arc<str>>>>,
    unindexed: Vec<Arc<str>>,
}

impl SetIndex {
    fn insert(&mut self, set: &PodSet, key: Arc<str>) {
        match set.index_label() {
            Some((k, v)) => self
                .by_label
                .entry(k.to_string())
                .or_default()
                .entry(v.to_string())
                .or_default()
                .push(key),
            None => self.unindexed.push(key),
        }
    }

    fn remove(&mut self, set: &PodSet, key: &str) {
        let list = match set.index_label() {
            Some((k, v)) => self.by_label.get_mut(k).and_then(|m| m.get_mut(v)),
            None => Some(&mut self.unindexed),
        };
        if let Some(list) = list {
            list.retain(|x| &**x != key);
        }
    }

    fn candidates<'a>(
        &'a self,
        labels: Option<&'a BTreeMap<String, String>>,
    ) -> impl Iterator<Item = &'a Arc<str>> + 'a {
        labels
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| self.by_label.get(k)?.get(v))
            .flatten()
            .chain(self.unindexed.iter())
    }
}

/// Groups unused for this many decisions are dropped (checked every `SWEEP_EVERY`).
const IDLE_DECISIONS: u64 = 50_000;
const SWEEP_EVERY: u64 = 4096;

/// Every node with its pods, and the indexes over them.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// The nodes, in a stable order (an index stays valid until a node is removed).
    pub nodes: Vec<NodeInfo>,
    index: Map<String, usize>,
    /// Pod key → the node it is counted on.
    pod_node: Map<String, String>,
    namespaces: NamespaceMap,
    topologies: Map<String, Topology>,
    groups: Map<Arc<str>, Group>,
    group_index: SetIndex,
    anti: Map<Arc<str>, AntiTerm>,
    anti_index: SetIndex,
    /// Image name → how many nodes hold it.
    image_nodes: Map<String, u32>,
    /// Label key → value → the counted pods carrying it (to count a new group quickly).
    pods_by_label: Map<String, Map<String, Map<String, Arc<PodInfo>>>>,
    tick: u64,
    /// The storage objects volume plugins read.
    pub volumes: crate::volumes::VolumeCache,
}

impl Snapshot {
    /// A snapshot of `nodes` and the pods already counted on them.
    pub fn from_nodes(nodes: Vec<NodeInfo>) -> Self {
        let mut snap = Snapshot::default();
        for mut n in nodes {
            let pods = std::mem::take(&mut n.pods);
            let name = n.name.clone();
            snap.upsert_node(n.node);
            for p in pods {
                snap.add_pod(&name, p);
            }
        }
        snap
    }

    /// The index of the node `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    /// Adds or replaces a node, keeping the pods counted on it.
    pub fn upsert_node(&mut self, node: Arc<Node>) {
        let name = node.metadata.name.clone().unwrap_or_default();
        let mut fresh = NodeInfo::new(node);
        let i = match self.index.get(&name) {
            Some(&i) => {
                for p in std::mem::take(&mut self.nodes[i].pods) {
                    fresh.add_pod(p);
                }
                count_images(&mut self.image_nodes, &self.nodes[i], -1);
                self.nodes[i] = fresh;
                i
            }
            None => {
                let i = self.nodes.len();
                self.index.insert(name, i);
                self.nodes.push(fresh);
                i
            }
        };
        count_images(&mut self.image_nodes, &self.nodes[i], 1);
        for (key, topo) in &mut self.topologies {
            topo.assign(i, self.nodes[i].label(key));
        }
    }

    /// Removes a node (its pods stop counting anywhere).
    pub fn remove_node(&mut self, name: &str) {
        let Some(&i) = self.index.get(name) else {
            return;
        };
        let keys: Vec<String> = self.nodes[i].pods.iter().map(|p| p.key.clone()).collect();
        for k in keys {
            self.remove_pod(&k);
        }
        self.index.remove(name);
        count_images(&mut self.image_nodes, &self.nodes[i], -1);
        for topo in self.topologies.values_mut() {
            topo.assign(i, None);
            topo.domain_of.swap_remove(i);
        }
        self.nodes.swap_remove(i);
        let last = self.nodes.len();
        if i < last {
            // The last node moved into slot `i`.
            self.index.insert(self.nodes[i].name.clone(), i);
            let (from, to) = (last as u32, i as u32);
            for g in self.groups.values_mut() {
                if let Some(c) = g.nodes.remove(&from) {
                    g.nodes.insert(to, c);
                }
            }
            for t in self.anti.values_mut() {
                if let Some(c) = t.nodes.remove(&from) {
                    t.nodes.insert(to, c);
                }
            }
        }
    }

    /// Counts `pod` on `node` (moving it if it was counted elsewhere); false when there is
    /// no such node.
    pub fn add_pod(&mut self, node: &str, pod: Arc<PodInfo>) -> bool {
        self.remove_pod(&pod.key);
        match self.index.get(node) {
            Some(&i) => {
                self.assume(i, pod);
                true
            }
            None => false,
        }
    }

    /// Counts `pod` on the node at index `i` (which it must not be counted on yet).
    pub fn assume(&mut self, i: usize, pod: Arc<PodInfo>) {
        let at = i as u32;
        for key in self.group_index.candidates(pod.labels()) {
            if let Some(g) = self.groups.get_mut(key) {
                if g.set.matches(&pod, &self.namespaces) {
                    let c = g.nodes.entry(at).or_default();
                    c.all += 1;
                    c.live += u32::from(!pod.terminating);
                }
            }
        }
        for term in &pod.affinity.required_anti {
            let entry = self.anti.entry(term.key.clone()).or_insert_with(|| {
                self.anti_index.insert(&term.set, term.key.clone());
                AntiTerm {
                    term: term.clone(),
                    nodes: Map::default(),
                }
            });
            *entry.nodes.entry(at).or_default() += 1;
            if !self.topologies.contains_key(&term.topology_key) {
                let topo = build_topology(&self.nodes, &term.topology_key);
                self.topologies.insert(term.topology_key.clone(), topo);
            }
        }
        for (k, v) in pod.labels().into_iter().flatten() {
            self.pods_by_label
                .entry(k.clone())
                .or_default()
                .entry(v.clone())
                .or_default()
                .insert(pod.key.clone(), pod.clone());
        }
        self.pod_node
            .insert(pod.key.clone(), self.nodes[i].name.clone());
        self.nodes[i].add_pod(pod);
    }

    /// Stops counting the pod `key`.
    pub fn remove_pod(&mut self, key: &str) {
        let Some(node) = self.pod_node.remove(key) else {
            return;
        };
        let Some(&i) = self.index.get(&node) else {
            return;
        };
        let Some(pod) = self.nodes[i].remove_pod(key) else {
            return;
        };
        for (k, v) in pod.labels().into_iter().flatten() {
            if let Some(values) = self.pods_by_label.get_mut(k) {
                if let Some(pods) = values.get_mut(v) {
                    pods.remove(key);
                    if pods.is_empty() {
                        values.remove(v);
                    }
                }
                if values.is_empty() {
                    self.pods_by_label.remove(k);
                }
            }
        }
        let at = i as u32;
        for gk in self.group_index.candidates(pod.labels()) {
            if let Some(g) = self.groups.get_mut(gk) {
                if g.set.matches(&pod, &self.namespaces) {
                    if let Some(c) = g.nodes.get_mut(&at) {
                        c.all = c.all.saturating_sub(1);
                        c.live = c.live.saturating_sub(u32::from(!pod.terminating));
                        if c.all == 0 {
                            g.nodes.remove(&at);
                        }
                    }
                }
            }
        }
        for term in &pod.affinity.required_anti {
            if let Some(t) = self.anti.get_mut(&term.key) {
                if let Some(n) = t.nodes.get_mut(&at) {
                    *n -= 1;
                    if *n == 0 {
                        t.nodes.remove(&at);
                    }
                }
                if t.nodes.is_empty() {
                    self.anti_index.remove(&term.set, &term.key);
                    self.anti.remove(&term.key);
                }
            }
        }
    }

    /// The node a pod is counted on.
    pub fn node_of(&self, key: &str) -> Option<&str> {
        self.pod_node.get(key).map(String::as_str)
    }

    /// Replaces the namespaces' labels; sets chosen by namespace labels are recounted.
    pub fn set_namespaces(&mut self, namespaces: NamespaceMap) {
        if namespaces == self.namespaces {
            return;
        }
        self.namespaces = namespaces;
        let stale: Vec<Arc<str>> = self
            .groups
            .iter()
            .filter(|(_, g)| matches!(g.set.scope, Scope::Selected { .. }))
            .map(|(k, _)| k.clone())
            .collect();
        for k in stale {
            if let Some(g) = self.groups.remove(&k) {
                self.group_index.remove(&g.set, &k);
            }
        }
    }

    /// The namespaces' labels.
    pub fn namespaces(&self) -> &NamespaceMap {
        &self.namespaces
    }

    /// Makes sure the indexes `pod`'s constraints and terms ask about exist. Call before the
    /// plugins look at the pod: [`Snapshot::group`] and [`Snapshot::topology`] answer only
    /// what was prepared.
    pub fn prepare(&mut self, pod: &PodInfo) {
        self.tick += 1;
        let sets = pod
            .spread
            .iter()
            .map(|c| (&c.set, &c.topology_key))
            .chain(pod.affinity.all().map(|t| (&t.set, &t.topology_key)));
        for (set, topology_key) in sets {
            if !self.topologies.contains_key(topology_key) {
                let topo = build_topology(&self.nodes, topology_key);
                self.topologies.insert(topology_key.clone(), topo);
            }
            match self.groups.get_mut(&set.key) {
                Some(g) => g.last_used = self.tick,
                None => {
                    let mut nodes: Map<u32, Count> = Map::default();
                    let mut count = |i: usize, p: &PodInfo| {
                        if set.matches(p, &self.namespaces) {
                            let c = nodes.entry(i as u32).or_default();
                            c.all += 1;
                            c.live += u32::from(!p.terminating);
                        }
                    };
                    match set.index_label() {
                        // Only pods carrying the set's first required label can match.
                        Some((k, v)) => {
                            let pods = self.pods_by_label.get(k).and_then(|m| m.get(v));
                            for p in pods.into_iter().flat_map(|m| m.values()) {
                                let node = self.pod_node.get(&p.key);
                                if let Some(&i) = node.and_then(|n| self.index.get(n)) {
                                    count(i, p);
                                }
                            }
                        }
                        None => {
                            for (i, n) in self.nodes.iter().enumerate() {
                                for p in &n.pods {
                                    count(i, p);
                                }
                            }
                        }
                    }
                    self.group_index.insert(set, set.key.clone());
                    self.groups.insert(
                        set.key.clone(),
                        Group {
                            set: set.clone(),
                            nodes,
                            last_used: self.tick,
                        },
                    );
                }
            }
        }
        if self.tick % SWEEP_EVERY == 0 {
            let tick = self.tick;
            let idle: Vec<Arc<str>> = self
                .groups
                .iter()
                .filter(|(_, g)| tick - g.last_used > IDLE_DECISIONS)
                .map(|(k, _)| k.clone())
                .collect();
            for k in idle {
                if let Some(g) = self.groups.remove(&k) {
                    self.group_index.remove(&g.set, &k);
                }
            }
        }
    }

    /// The nodes holding pods of `set` (after [`Snapshot::prepare`] for a pod that uses it).
    pub fn group(&self, set: &PodSet) -> Option<&Group> {
        self.groups.get(&set.key)
    }

    /// The domains of a topology key (after [`Snapshot::prepare`] for a pod that uses it).
    pub fn topology(&self, key: &str) -> Option<&Topology> {
        self.topologies.get(key)
    }

    /// Running pods' required anti-affinity terms that select `pod`.
    pub fn anti_terms_selecting<'a>(
        &'a self,
        pod: &'a PodInfo,
    ) -> impl Iterator<Item = &'a AntiTerm> + 'a {
        self.anti_index
            .candidates(pod.labels())
            .filter_map(|k| self.anti.get(k))
            .filter(|t| t.term.set.matches(pod, &self.namespaces))
    }

    /// On how many nodes the image `name` is present.
    pub fn image_nodes(&self, name: &str) -> u32 {
        self.image_nodes.get(name).copied().unwrap_or(0)
    }

    /// The keys of the pods counted.
    pub fn pod_keys(&self) -> impl Iterator<Item = &String> {
        self.pod_node.keys()
    }

    /// How many pods are counted.
    pub fn pod_count(&self) -> usize {
        self.pod_node.len()
    }
}

fn build_topology(nodes: &[NodeInfo], key: &str) -> Topology {
    let mut t = Topology::default();
    for (i, n) in nodes.iter().enumerate() {
        t.assign(i, n.label(key));
    }
    t
}

fn count_images(counts: &mut Map<String, u32>, node: &NodeInfo, delta: i32) {
    for name in node.images.keys() {
        if delta > 0 {
            *counts.entry(name.clone()).or_default() += 1;
        } else if let Some(c) = counts.get_mut(name) {
            *c -= 1;
            if *c == 0 {
                counts.remove(name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, zone: &str) -> Arc<Node> {
        Arc::new(
            serde_json::from_value(json!({"metadata": {"name": name, "labels": {"zone": zone}}}))
                .unwrap(),
        )
    }

    fn pod(name: &str, app: &str, anti: bool) -> Arc<PodInfo> {
        let mut spec = json!({"containers": []});
        if anti {
            spec["affinity"] = json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": {"app": app}}, "topologyKey": "zone"}]}});
        }
        let p: Pod = serde_json::from_value(
            json!({"metadata": {"name": name, "namespace": "d", "labels": {"app": app}}, "spec": spec}),
        )
        .unwrap();
        Arc::new(PodInfo::new(Arc::new(p)))
    }

    fn web_set() -> PodSet {
        PodSet::new(
            Scope::Names(vec!["d".into()]),
            Some(serde_json::from_value(json!({"matchLabels": {"app": "web"}})).unwrap()),
        )
    }

    /// A pod whose spread constraint asks about `app=web` pods over zones.
    fn asker() -> PodInfo {
        let p: Pod = serde_json::from_value(json!({"metadata": {"name": "q", "namespace": "d"},
            "spec": {"containers": [], "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone",
            "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "web"}}}]}}))
        .unwrap();
        PodInfo::new(Arc::new(p))
    }

    #[test]
    fn groups_follow_pods_and_nodes() {
        let mut s = Snapshot::default();
        for (n, z) in [("a", "z1"), ("b", "z1"), ("c", "z2")] {
            s.upsert_node(node(n, z));
        }
        s.add_pod("a", pod("w1", "web", false));
        s.prepare(&asker());
        let counts = |s: &Snapshot| {
            let mut v: Vec<(String, u32)> = s
                .group(&web_set())
                .unwrap()
                .nodes
                .iter()
                .map(|(i, c)| (s.nodes[*i as usize].name.clone(), c.live))
                .collect();
            v.sort();
            v
        };
        assert_eq!(counts(&s), vec![("a".into(), 1)]);
        s.add_pod("c", pod("w2", "web", false));
        s.add_pod("c", pod("db", "db", false));
        assert_eq!(counts(&s), vec![("a".into(), 1), ("c".into(), 1)]);
        // Moving a pod, removing one, removing a node (the last node moves into its slot).
        s.add_pod("b", pod("w1", "web", false));
        assert_eq!(counts(&s), vec![("b".into(), 1), ("c".into(), 1)]);
        s.remove_node("a");
        assert_eq!(s.index_of("c"), Some(0));
        assert_eq!(counts(&s), vec![("b".into(), 1), ("c".into(), 1)]);
        s.remove_pod("d/w2");
        assert_eq!(counts(&s), vec![("b".into(), 1)]);
        let zones = s.topology("zone").unwrap();
        assert_eq!(zones.domains(), 2);
        assert_eq!(zones.name(zones.domain_of[s.index_of("c").unwrap()]), "z2");
        // Relabelling a node moves it to another domain.
        s.upsert_node(node("c", "z1"));
        assert_eq!(s.topology("zone").unwrap().domains(), 1);
    }

    #[test]
    fn a_placed_pod_keeps_what_placing_others_reads() {
        let p: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "d", "uid": "u1", "labels": {"app": "web"},
                "annotations": {"big": "x"}},
            "spec": {"nodeName": "n1", "priority": 7,
                "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                    {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "zone"}]}},
                "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone",
                    "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "web"}}}],
                "containers": [{"name": "c", "image": "i", "env": [{"name": "A", "value": "b"}],
                    "ports": [{"containerPort": 80, "hostPort": 8080}],
                    "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}]},
            "status": {"phase": "Running", "podIP": "10.0.0.1"},
        }))
        .unwrap();
        let full = PodInfo::new(Arc::new(p));
        let placed = full.clone().placed();
        assert_eq!(placed.requests, full.requests);
        assert_eq!(placed.host_ports, full.host_ports);
        assert_eq!(placed.affinity.required_anti.len(), 1);
        assert!(placed.spread.is_empty());
        assert_eq!(placed.labels(), full.labels());
        assert_eq!(placed.pod.metadata.uid.as_deref(), Some("u1"));
        assert_eq!(placed.spec().unwrap().priority, Some(7));
        assert!(placed.spec().unwrap().containers.is_empty());
        assert!(placed.pod.metadata.annotations.is_none());
        let mut s = Snapshot::default();
        s.upsert_node(node("n1", "z1"));
        s.add_pod("n1", Arc::new(placed));
        assert_eq!(s.anti_terms_selecting(&full).count(), 1);
    }

    #[test]
    fn anti_affinity_terms_are_found_by_the_pods_they_select() {
        let mut s = Snapshot::default();
        s.upsert_node(node("a", "z1"));
        s.add_pod("a", pod("w1", "web", true));
        let web = pod("w2", "web", false);
        let db = pod("d1", "db", false);
        assert_eq!(s.anti_terms_selecting(&web).count(), 1);
        assert_eq!(s.anti_terms_selecting(&db).count(), 0);
        s.remove_pod("d/w1");
        assert_eq!(s.anti_terms_selecting(&web).count(), 0);
    }
}
