//! The dependency graph: one node per object UID, with its owners (as its references name
//! them) and its dependents, built from the informers' changes as Kubernetes' graph builder
//! builds it. An owner named before it is seen gets a *virtual* node, which the collector
//! verifies against the API server; a verified absence arrives back here as a *virtual
//! delete*.
//!
//! Everything here is pure: each change says, through [`Effects`], what the collector should
//! look at next. Owners are matched by UID, name, kind and API group (not version: every
//! served version of a kind names the same objects).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

use super::{FOREGROUND, ORPHAN};
use crate::kinds::{group_of, GroupKind, Meta, MetaChange};

/// Where an object is: what an owner reference says of it, plus its namespace.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    /// `apiVersion`, as observed (or as referenced, for a virtual node).
    pub api_version: Arc<str>,
    /// `kind`.
    pub kind: Arc<str>,
    /// The namespace ("" when cluster-scoped; a virtual node takes its dependent's).
    pub namespace: String,
    /// The name.
    pub name: String,
    /// The UID.
    pub uid: String,
}

impl Identity {
    /// The identity of an observed object.
    pub fn of(m: &Meta) -> Identity {
        Identity {
            api_version: m.api_version.clone(),
            kind: m.kind.clone(),
            namespace: m.namespace.clone(),
            name: m.name.clone(),
            uid: m.uid.clone(),
        }
    }

    /// The identity an owner reference gives its owner, as seen from `namespace`.
    pub fn of_ref(r: &OwnerReference, namespace: &str) -> Identity {
        Identity {
            api_version: r.api_version.as_str().into(),
            kind: r.kind.as_str().into(),
            namespace: namespace.to_string(),
            name: r.name.clone(),
            uid: r.uid.clone(),
        }
    }

    /// Its group and kind.
    pub fn group_kind(&self) -> GroupKind {
        GroupKind::of(&self.api_version, &self.kind)
    }

    /// Whether `r` names this object: same UID, name, kind and group.
    pub fn named_by(&self, r: &OwnerReference) -> bool {
        r.uid == self.uid
            && r.name == self.name
            && r.kind == *self.kind
            && group_of(&r.api_version) == group_of(&self.api_version)
    }

    /// Whether both name the same object in the same place (versions aside).
    pub fn same(&self, other: &Identity) -> bool {
        self.key() == other.key()
    }

    /// What the absent-owner cache remembers it by.
    pub fn key(&self) -> AbsentKey {
        AbsentKey {
            group: group_of(&self.api_version).to_string(),
            kind: self.kind.to_string(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            uid: self.uid.clone(),
        }
    }
}

impl std::fmt::Display for Identity {
    /// As Kubernetes' collector prints an object reference.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "[{}/{}, namespace: {}, name: {}, uid: {}]",
            self.api_version, self.kind, self.namespace, self.name, self.uid
        )
    }
}

/// An owner known not to exist: its group, kind, name and UID, and the namespace it was
/// looked for in ("" for a cluster-scoped kind).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AbsentKey {
    group: String,
    kind: String,
    namespace: String,
    name: String,
    uid: String,
}

impl AbsentKey {
    /// The key of the owner `r` names, looked for in `namespace`.
    pub fn of_ref(r: &OwnerReference, namespace: &str) -> AbsentKey {
        Identity::of_ref(r, namespace).key()
    }
}

/// Owners recently found missing, so that their dependents need not look again: a
/// least-recently-used set of bounded size (Kubernetes keeps 500).
pub struct AbsentOwners {
    capacity: usize,
    tick: u64,
    entries: HashMap<AbsentKey, u64>,
    by_age: BTreeMap<u64, AbsentKey>,
}

impl AbsentOwners {
    /// A cache of at most `capacity` owners.
    pub fn new(capacity: usize) -> AbsentOwners {
        AbsentOwners {
            capacity: capacity.max(1),
            tick: 0,
            entries: HashMap::new(),
            by_age: BTreeMap::new(),
        }
    }

    fn touch(&mut self, key: &AbsentKey) -> bool {
        let Some(t) = self.entries.get_mut(key) else {
            return false;
        };
        self.by_age.remove(t);
        self.tick += 1;
        *t = self.tick;
        self.by_age.insert(self.tick, key.clone());
        true
    }

    /// Remembers `key` as absent.
    pub fn add(&mut self, key: AbsentKey) {
        if self.touch(&key) {
            return;
        }
        while self.entries.len() >= self.capacity {
            let Some((_, oldest)) = self.by_age.pop_first() else {
                break;
            };
            self.entries.remove(&oldest);
        }
        self.tick += 1;
        self.by_age.insert(self.tick, key.clone());
        self.entries.insert(key, self.tick);
    }

    /// Whether `key` is known absent.
    pub fn has(&mut self, key: &AbsentKey) -> bool {
        self.touch(key)
    }

    /// How many owners it remembers.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it remembers none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// What the attempt-to-delete queue holds: a node's UID, and whether it was virtual when
/// queued (one observed since is left to what its observation queued).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Item {
    /// The node's UID.
    pub uid: String,
    /// Whether it was virtual when queued.
    pub virtual_node: bool,
}

/// What a change asks the collector to do next.
#[derive(Debug, Default, PartialEq)]
pub struct Effects {
    /// Nodes to attempt to delete.
    pub attempt_to_delete: Vec<Item>,
    /// Nodes to attempt to delete after their back-off.
    pub attempt_to_delete_later: Vec<Item>,
    /// Owners whose dependents are to be orphaned (UIDs).
    pub attempt_to_orphan: Vec<String>,
    /// Dependents naming an owner that lives in another namespace, and that reference.
    pub invalid_namespace: Vec<(Identity, OwnerReference)>,
}

impl Effects {
    fn delete(&mut self, n: &Node) {
        self.attempt_to_delete.push(n.item());
    }
}

/// One object, as the graph knows it.
#[derive(Debug, Clone)]
pub struct Node {
    /// Where it is.
    pub identity: Identity,
    /// The UIDs of the objects whose references name it.
    pub dependents: HashSet<String>,
    /// Its owner references, as last observed.
    pub owners: Vec<OwnerReference>,
    /// Deleted in the foreground: seen deleting with the `foregroundDeletion` finalizer.
    pub deleting_dependents: bool,
    /// Seen deleting with the `orphan` finalizer.
    pub orphaning: bool,
    /// Seen with a `deletionTimestamp`.
    pub being_deleted: bool,
    /// Seen through an informer (not only named by a dependent).
    pub observed: bool,
}

impl Node {
    fn item(&self) -> Item {
        Item {
            uid: self.identity.uid.clone(),
            virtual_node: !self.observed,
        }
    }
}

fn has(m: &Meta, finalizer: &str) -> bool {
    m.finalizers.iter().any(|f| f == finalizer)
}

/// The graph: every followed object and every owner they name.
pub struct Graph {
    nodes: HashMap<String, Node>,
    /// Owners known not to exist.
    pub absent: AbsentOwners,
}

impl Default for Graph {
    fn default() -> Self {
        Graph {
            nodes: HashMap::new(),
            absent: AbsentOwners::new(500),
        }
    }
}

impl Graph {
    /// The node of `uid`.
    pub fn node(&self, uid: &str) -> Option<&Node> {
        self.nodes.get(uid)
    }

    /// How many nodes it holds (virtual ones included).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The dependents of `uid`.
    pub fn dependents(&self, uid: &str) -> Vec<Node> {
        let Some(n) = self.nodes.get(uid) else {
            return Vec::new();
        };
        n.dependents
            .iter()
            .filter_map(|d| self.nodes.get(d).cloned())
            .collect()
    }

    /// The dependents of `uid` whose reference to it has `blockOwnerDeletion`: those a
    /// foreground deletion of it waits for.
    pub fn blocking_dependents(&self, uid: &str) -> Vec<Node> {
        let mut deps = self.dependents(uid);
        deps.retain(|d| {
            d.owners
                .iter()
                .any(|r| r.uid == uid && r.block_owner_deletion == Some(true))
        });
        deps
    }

    /// The virtual nodes of `gk`: owners to verify again once the kind is served.
    pub fn virtual_of(&self, gk: &GroupKind) -> Vec<Item> {
        self.nodes
            .values()
            .filter(|n| !n.observed && n.identity.group_kind() == *gk)
            .map(Node::item)
            .collect()
    }

    /// Applies one change to the objects of `gk`.
    pub fn apply(&mut self, gk: &GroupKind, change: MetaChange) -> Effects {
        let mut fx = Effects::default();
        match change {
            MetaChange::Applied(m) => self.observe(m, &mut fx),
            MetaChange::Deleted(m) => self.observe_deleted(&m, &mut fx),
            MetaChange::Resynced(all) => self.resync(gk, all, &mut fx),
        }
        fx
    }

    /// Forgets every observed object of `gk` (its kind is no longer served), as deleted.
    pub fn drop_kind(&mut self, gk: &GroupKind) -> Effects {
        let mut fx = Effects::default();
        self.resync(gk, Vec::new(), &mut fx);
        fx
    }

    /// A re-list: what is no longer listed is deleted; the rest is observed anew.
    fn resync(&mut self, gk: &GroupKind, all: Vec<Meta>, fx: &mut Effects) {
        let listed: HashSet<&str> = all.iter().map(|m| m.uid.as_str()).collect();
        let gone: Vec<Identity> = self
            .nodes
            .values()
            .filter(|n| {
                n.observed
                    && n.identity.group_kind() == *gk
                    && !listed.contains(n.identity.uid.as_str())
            })
            .map(|n| n.identity.clone())
            .collect();
        for id in gone {
            self.remove_node(&id.uid, &id, fx);
        }
        for m in all {
            self.observe(m, fx);
        }
    }

    /// An object added or changed, as an informer reports it.
    pub fn observe(&mut self, m: Meta, fx: &mut Effects) {
        let observed = Identity::of(&m);
        let uid = m.uid.clone();
        let deleting_dependents = m.deleting && has(&m, FOREGROUND);
        let orphaning = m.deleting && has(&m, ORPHAN);
        let Some(existing) = self.nodes.get_mut(&uid) else {
            let node = Node {
                identity: observed,
                dependents: HashSet::new(),
                owners: m.owners.clone(),
                deleting_dependents,
                orphaning,
                being_deleted: m.deleting,
                observed: true,
            };
            self.nodes.insert(uid.clone(), node);
            self.add_dependent_to_owners(&uid, &m.owners, fx);
            self.transitions(&uid, false, false, deleting_dependents, orphaning, fx);
            return;
        };
        if !existing.observed && !existing.identity.same(&observed) {
            // A virtual node seen at last, elsewhere than named: dependents that named it
            // otherwise may name an owner that does not exist.
            let deps: Vec<String> = existing.dependents.iter().cloned().collect();
            let (_, mismatched) = self.partition(&deps, &observed);
            for d in mismatched {
                let dep = &self.nodes[&d];
                if !observed.namespace.is_empty() && dep.identity.namespace != observed.namespace {
                    if let Some(r) = dep.owners.iter().find(|r| r.uid == uid) {
                        fx.invalid_namespace.push((dep.identity.clone(), r.clone()));
                    }
                }
                fx.delete(dep);
            }
        }
        let Some(existing) = self.nodes.get_mut(&uid) else {
            return;
        };
        existing.observed = true;
        // The version it is followed at (or kind) may differ from what named it.
        existing.identity = observed;
        let (was_deleting_dependents, was_orphaning) =
            (existing.deleting_dependents, existing.orphaning);
        let old = std::mem::take(&mut existing.owners);
        existing.owners = m.owners.clone();
        if m.deleting {
            existing.being_deleted = true;
        }
        existing.orphaning = orphaning;
        let (added, removed, changed) = diff_references(&old, &m.owners);
        if !added.is_empty() || !removed.is_empty() || !changed.is_empty() {
            self.add_unblocked_owners(&removed, &changed, fx);
            self.add_dependent_to_owners(&uid, &added, fx);
            for r in &removed {
                if let Some(o) = self.nodes.get_mut(&r.uid) {
                    o.dependents.remove(&uid);
                }
            }
        }
        self.transitions(
            &uid,
            was_deleting_dependents,
            was_orphaning,
            deleting_dependents,
            orphaning,
            fx,
        );
    }

    /// Queues what starts waiting: an owner whose dependents are to be orphaned, or one
    /// deleted in the foreground (with its dependents).
    fn transitions(
        &mut self,
        uid: &str,
        was_deleting_dependents: bool,
        was_orphaning: bool,
        deleting_dependents: bool,
        orphaning: bool,
        fx: &mut Effects,
    ) {
        if orphaning && !was_orphaning {
            fx.attempt_to_orphan.push(uid.to_string());
            return;
        }
        if deleting_dependents && !was_deleting_dependents {
            let Some(n) = self.nodes.get_mut(uid) else {
                return;
            };
            n.deleting_dependents = true;
            let item = n.item();
            let deps: Vec<String> = n.dependents.iter().cloned().collect();
            for d in deps {
                if let Some(dep) = self.nodes.get(&d) {
                    fx.delete(dep);
                }
            }
            fx.attempt_to_delete.push(item);
        }
    }

    /// Makes `uid` a dependent of each owner `refs` name, creating virtual nodes for owners
    /// not seen yet (to be verified), and queues `uid` itself if a reference may be wrong.
    fn add_dependent_to_owners(&mut self, uid: &str, refs: &[OwnerReference], fx: &mut Effects) {
        let dependent = self.nodes[uid].identity.clone();
        let mut suspicious = false;
        for r in refs {
            let Some(owner) = self.nodes.get_mut(&r.uid) else {
                let mut node = Node {
                    identity: Identity::of_ref(r, &dependent.namespace),
                    dependents: HashSet::new(),
                    owners: Vec::new(),
                    deleting_dependents: false,
                    orphaning: false,
                    being_deleted: false,
                    observed: false,
                };
                node.dependents.insert(uid.to_string());
                fx.delete(&node);
                self.nodes.insert(r.uid.clone(), node);
                continue;
            };
            owner.dependents.insert(uid.to_string());
            if suspicious {
                continue;
            }
            let owner_namespaced = !owner.identity.namespace.is_empty();
            if owner_namespaced && owner.identity.namespace != dependent.namespace {
                if owner.observed {
                    fx.invalid_namespace.push((dependent.clone(), r.clone()));
                }
                suspicious = true;
            } else if !owner.identity.named_by(r) {
                suspicious = true;
            } else if !owner_namespaced
                && owner.identity.namespace != dependent.namespace
                && !owner.observed
            {
                // A virtual cluster-scoped owner named from a namespace: it may be a
                // namespaced kind's missing object.
                suspicious = true;
            }
        }
        if suspicious {
            fx.attempt_to_delete.push(Item {
                uid: uid.to_string(),
                virtual_node: false,
            });
        }
    }

    /// Owners a removed or no longer blocking reference may have been holding up.
    fn add_unblocked_owners(
        &self,
        removed: &[OwnerReference],
        changed: &[(OwnerReference, OwnerReference)],
        fx: &mut Effects,
    ) {
        let blocked = |r: &OwnerReference| r.block_owner_deletion == Some(true);
        let unblocked = removed.iter().filter(|r| blocked(r)).chain(
            changed
                .iter()
                .filter(|(old, new)| blocked(old) && !blocked(new))
                .map(|(_, new)| new),
        );
        for r in unblocked {
            if let Some(o) = self.nodes.get(&r.uid) {
                fx.delete(o);
            }
        }
    }

    /// An object deleted, as an informer reports it.
    pub fn observe_deleted(&mut self, m: &Meta, fx: &mut Effects) {
        if self.nodes.contains_key(&m.uid) {
            self.remove_node(&m.uid, &Identity::of(m), fx);
        }
    }

    /// The collector found that `deleted` does not exist (not found, or another UID under
    /// its name).
    pub fn virtual_delete(&mut self, deleted: &Identity, fx: &mut Effects) {
        let Some(existing) = self.nodes.get(&deleted.uid) else {
            return;
        };
        let deps: Vec<String> = existing.dependents.iter().cloned().collect();
        let mut remove = true;
        if !existing.observed {
            // Its dependents may not agree on where it is: only those that named it where
            // it was looked for learn it is missing.
            let (matching, mismatched) = self.partition(&deps, deleted);
            if !mismatched.is_empty() {
                remove = false;
                if !matching.is_empty() {
                    self.absent.add(deleted.key());
                    for d in &matching {
                        fx.delete(&self.nodes[d]);
                    }
                }
                if self.nodes[&deleted.uid].identity.same(deleted) {
                    let mismatched: Vec<&Node> =
                        mismatched.iter().map(|d| &self.nodes[d]).collect();
                    let other = alternate_identity(&mismatched, deleted);
                    if let (Some(other), Some(n)) = (other, self.nodes.get_mut(&deleted.uid)) {
                        n.identity = other;
                        fx.attempt_to_delete_later.push(n.item());
                    }
                }
            }
        } else if !existing.identity.same(deleted) {
            // Observed elsewhere than looked for: only the dependents that named it there
            // name a missing owner.
            remove = false;
            let (matching, _) = self.partition(&deps, deleted);
            if !matching.is_empty() {
                self.absent.add(deleted.key());
                for d in &matching {
                    fx.delete(&self.nodes[d]);
                }
            }
        }
        if remove {
            self.remove_node(&deleted.uid, deleted, fx);
        }
    }

    /// Removes `uid`; its dependents are to be looked at (their owner is gone), and so are
    /// its owners deleted in the foreground (they may have been waiting for it).
    fn remove_node(&mut self, uid: &str, as_deleted: &Identity, fx: &mut Effects) {
        let Some(node) = self.nodes.remove(uid) else {
            return;
        };
        for r in &node.owners {
            if let Some(o) = self.nodes.get_mut(&r.uid) {
                o.dependents.remove(uid);
            }
        }
        if !node.dependents.is_empty() {
            self.absent.add(as_deleted.key());
        }
        let mut deps: Vec<&String> = node.dependents.iter().collect();
        deps.sort();
        for d in deps {
            if let Some(dep) = self.nodes.get(d) {
                fx.delete(dep);
            }
        }
        for r in &node.owners {
            if let Some(o) = self.nodes.get(&r.uid).filter(|o| o.deleting_dependents) {
                fx.delete(o);
            }
        }
    }

    /// Splits `deps` into those whose references name `owner` as it is, and those that
    /// name its UID otherwise (or from another namespace than a namespaced owner's). One
    /// naming it both ways is in both.
    fn partition(&self, deps: &[String], owner: &Identity) -> (Vec<String>, Vec<String>) {
        let namespaced = !owner.namespace.is_empty();
        let (mut matching, mut mismatched) = (Vec::new(), Vec::new());
        let mut sorted: Vec<&String> = deps.iter().collect();
        sorted.sort();
        for d in sorted {
            let Some(dep) = self.nodes.get(d) else {
                continue;
            };
            let (mut matched, mut mismatch) = (false, false);
            if namespaced && owner.namespace != dep.identity.namespace {
                mismatch = true;
            } else {
                for r in dep.owners.iter().filter(|r| r.uid == owner.uid) {
                    if owner.named_by(r) {
                        matched = true;
                    } else {
                        mismatch = true;
                    }
                }
            }
            if matched {
                matching.push(d.clone());
            }
            if mismatch {
                mismatched.push(d.clone());
            }
        }
        (matching, mismatched)
    }
}

/// Kind, apiVersion, namespace, name, UID: the order alternative identities are tried in.
fn order_key(i: &Identity) -> (&str, &str, &str, &str, &str) {
    (&i.kind, &i.api_version, &i.namespace, &i.name, &i.uid)
}

/// Another place `deps` say the owner `absent` (verified missing) may be: the first after
/// `absent` in [`order_key`]'s order, else the first.
fn alternate_identity(deps: &[&Node], absent: &Identity) -> Option<Identity> {
    let cluster_scoped = absent.namespace.is_empty();
    let mut seen: HashSet<AbsentKey> = HashSet::from([absent.key()]);
    let mut first: Option<Identity> = None;
    let mut first_after: Option<Identity> = None;
    for dep in deps {
        for r in dep.owners.iter().filter(|r| r.uid == absent.uid) {
            if absent.named_by(r) && (cluster_scoped || absent.namespace == dep.identity.namespace)
            {
                continue;
            }
            let mut candidate = Identity::of_ref(r, &dep.identity.namespace);
            if cluster_scoped && candidate.group_kind() == absent.group_kind() {
                // That kind is known cluster-scoped.
                candidate.namespace.clear();
            }
            if !seen.insert(candidate.key()) {
                continue;
            }
            if first
                .as_ref()
                .is_none_or(|f| order_key(&candidate) < order_key(f))
            {
                first = Some(candidate.clone());
            }
            if order_key(absent) < order_key(&candidate)
                && first_after
                    .as_ref()
                    .is_none_or(|f| order_key(&candidate) < order_key(f))
            {
                first_after = Some(candidate);
            }
        }
    }
    first_after.or(first)
}

/// References added, removed and changed (old, new) between two lists, matched by UID.
type ReferenceDiff = (
    Vec<OwnerReference>,
    Vec<OwnerReference>,
    Vec<(OwnerReference, OwnerReference)>,
);

fn diff_references(old: &[OwnerReference], new: &[OwnerReference]) -> ReferenceDiff {
    let by_uid: HashMap<&str, &OwnerReference> = old.iter().map(|r| (r.uid.as_str(), r)).collect();
    let mut left: HashSet<&str> = by_uid.keys().copied().collect();
    let (mut added, mut changed) = (Vec::new(), Vec::new());
    for r in new {
        match by_uid.get(r.uid.as_str()) {
            Some(o) if left.remove(r.uid.as_str()) => {
                if *o != r {
                    changed.push(((*o).clone(), r.clone()));
                }
            }
            Some(_) => {}
            None => added.push(r.clone()),
        }
    }
    let removed = old
        .iter()
        .filter(|r| left.remove(r.uid.as_str()))
        .cloned()
        .collect();
    (added, removed, changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const WIDGETS: &str = "example.skiff.dev/v1";

    fn owner_ref(uid: &str, block: bool) -> OwnerReference {
        OwnerReference {
            api_version: "v1".into(),
            kind: "Pod".into(),
            name: uid.into(),
            uid: uid.into(),
            controller: Some(true),
            block_owner_deletion: Some(block),
        }
    }

    fn meta(kind: (&str, &str), uid: &str, owners: &[&str]) -> Meta {
        Meta {
            api_version: kind.0.into(),
            kind: kind.1.into(),
            namespace: "default".into(),
            name: uid.into(),
            uid: uid.into(),
            owners: owners.iter().map(|o| owner_ref(o, true)).collect(),
            finalizers: Vec::new(),
            deleting: false,
            resource_version: "1".into(),
        }
    }

    fn pod(uid: &str, owners: &[&str]) -> Meta {
        meta(("v1", "Pod"), uid, owners)
    }

    fn deleting(mut m: Meta, finalizer: &str) -> Meta {
        m.deleting = true;
        m.finalizers = vec![finalizer.into()];
        m
    }

    fn pods() -> GroupKind {
        GroupKind::of("v1", "Pod")
    }

    fn item(uid: &str, virtual_node: bool) -> Item {
        Item {
            uid: uid.into(),
            virtual_node,
        }
    }

    fn uids(mut items: Vec<Item>) -> Vec<String> {
        items.sort();
        items.into_iter().map(|i| i.uid).collect()
    }

    fn sorted_uids(nodes: Vec<Node>) -> Vec<String> {
        let mut v: Vec<String> = nodes.into_iter().map(|n| n.identity.uid).collect();
        v.sort();
        v
    }

    #[test]
    fn an_owner_not_seen_yet_is_a_virtual_node_to_verify() {
        let mut g = Graph::default();
        let fx = g.apply(&pods(), MetaChange::Applied(pod("p", &["rs"])));
        assert_eq!(fx.attempt_to_delete, vec![item("rs", true)]);
        let rs = g.node("rs").unwrap();
        assert!(!rs.observed);
        assert_eq!(
            rs.identity.namespace, "default",
            "its dependent's namespace"
        );
        assert_eq!(sorted_uids(g.dependents("rs")), vec!["p"]);
        // Seen at last, as its dependent named it: nothing to look at.
        let fx = g.apply(&pods(), MetaChange::Applied(pod("rs", &[])));
        assert_eq!(fx, Effects::default());
        assert!(g.node("rs").unwrap().observed);
        // An owner seen first: its dependents join it quietly.
        g.apply(&pods(), MetaChange::Applied(pod("o", &[])));
        let fx = g.apply(&pods(), MetaChange::Applied(pod("d", &["o"])));
        assert_eq!(fx, Effects::default());
    }

    #[test]
    fn a_missing_owner_verified_wakes_its_dependents() {
        let mut g = Graph::default();
        g.apply(&pods(), MetaChange::Applied(pod("p1", &["ghost"])));
        g.apply(&pods(), MetaChange::Applied(pod("p2", &["ghost"])));
        let ghost = g.node("ghost").unwrap().identity.clone();
        let mut fx = Effects::default();
        g.virtual_delete(&ghost, &mut fx);
        assert_eq!(uids(fx.attempt_to_delete), vec!["p1", "p2"]);
        assert!(g.node("ghost").is_none());
        assert!(g.absent.has(&ghost.key()), "remembered as absent");
    }

    #[test]
    fn a_deleted_owner_wakes_its_dependents_and_waiting_owners() {
        let mut g = Graph::default();
        g.apply(&pods(), MetaChange::Applied(pod("rs", &[])));
        g.apply(&pods(), MetaChange::Applied(pod("p1", &["rs"])));
        g.apply(&pods(), MetaChange::Applied(pod("p2", &["rs"])));
        let fx = g.apply(&pods(), MetaChange::Deleted(pod("rs", &[])));
        assert_eq!(uids(fx.attempt_to_delete), vec!["p1", "p2"]);
        // An owner deleted in the foreground is looked at when a dependent goes.
        g.apply(
            &pods(),
            MetaChange::Applied(deleting(pod("fg", &[]), FOREGROUND)),
        );
        g.apply(&pods(), MetaChange::Applied(pod("d", &["fg"])));
        let fx = g.apply(&pods(), MetaChange::Deleted(pod("d", &["fg"])));
        assert_eq!(fx.attempt_to_delete, vec![item("fg", false)]);
    }

    #[test]
    fn foreground_deletion_starts_once_and_wakes_the_dependents() {
        let mut g = Graph::default();
        g.apply(&pods(), MetaChange::Applied(pod("o", &[])));
        g.apply(&pods(), MetaChange::Applied(pod("d", &["o"])));
        let fx = g.apply(
            &pods(),
            MetaChange::Applied(deleting(pod("o", &[]), FOREGROUND)),
        );
        assert_eq!(uids(fx.attempt_to_delete), vec!["d", "o"]);
        assert!(g.node("o").unwrap().deleting_dependents);
        assert_eq!(sorted_uids(g.blocking_dependents("o")), vec!["d"]);
        // Seen again (a re-list): no transition.
        let fx = g.apply(
            &pods(),
            MetaChange::Resynced(vec![deleting(pod("o", &[]), FOREGROUND), pod("d", &["o"])]),
        );
        assert_eq!(fx, Effects::default());
        // Orphaning starts likewise, on its own queue.
        g.apply(&pods(), MetaChange::Applied(pod("x", &[])));
        let fx = g.apply(
            &pods(),
            MetaChange::Applied(deleting(pod("x", &[]), ORPHAN)),
        );
        assert_eq!(fx.attempt_to_orphan, vec!["x".to_string()]);
        assert!(fx.attempt_to_delete.is_empty());
    }

    #[test]
    fn a_reference_let_go_or_unblocked_wakes_its_owner() {
        let mut g = Graph::default();
        g.apply(&pods(), MetaChange::Applied(pod("a", &[])));
        g.apply(&pods(), MetaChange::Applied(pod("b", &[])));
        g.apply(&pods(), MetaChange::Applied(pod("d", &["a", "b"])));
        let mut d = pod("d", &["a", "b"]);
        d.owners[1].block_owner_deletion = Some(false);
        let fx = g.apply(&pods(), MetaChange::Applied(d));
        assert_eq!(fx.attempt_to_delete, vec![item("b", false)]);
        assert!(g.blocking_dependents("b").is_empty());
        assert_eq!(sorted_uids(g.dependents("b")), vec!["d"]);
        let fx = g.apply(&pods(), MetaChange::Applied(pod("d", &[])));
        assert_eq!(fx.attempt_to_delete, vec![item("a", false)]);
        assert!(g.dependents("a").is_empty() && g.dependents("b").is_empty());
    }

    #[test]
    fn a_cycle_is_a_graph_like_any_other() {
        // a owned by c, b by a, c by b.
        let mut g = Graph::default();
        for (uid, owner) in [("a", "c"), ("b", "a"), ("c", "b")] {
            g.apply(&pods(), MetaChange::Applied(pod(uid, &[owner])));
        }
        assert!(g.nodes.values().all(|n| n.observed));
        assert_eq!(sorted_uids(g.blocking_dependents("a")), vec!["b"]);
        assert_eq!(sorted_uids(g.blocking_dependents("c")), vec!["a"]);
        let fx = g.apply(
            &pods(),
            MetaChange::Applied(deleting(pod("a", &["c"]), FOREGROUND)),
        );
        assert_eq!(uids(fx.attempt_to_delete), vec!["a", "b"]);
    }

    #[test]
    fn a_re_list_deletes_what_is_no_longer_listed() {
        let mut g = Graph::default();
        g.apply(&pods(), MetaChange::Applied(pod("keep", &[])));
        g.apply(&pods(), MetaChange::Applied(pod("gone", &[])));
        g.apply(&pods(), MetaChange::Applied(pod("dep", &["gone"])));
        // A virtual owner of the same kind is not listed, and stays.
        g.apply(&pods(), MetaChange::Applied(pod("dep2", &["virtual"])));
        let fx = g.apply(
            &pods(),
            MetaChange::Resynced(vec![
                pod("keep", &[]),
                pod("dep", &["gone"]),
                pod("dep2", &["virtual"]),
            ]),
        );
        assert_eq!(uids(fx.attempt_to_delete), vec!["dep"]);
        assert!(g.node("gone").is_none());
        assert!(g.node("virtual").is_some_and(|n| !n.observed));
    }

    #[test]
    fn custom_kinds_are_nodes_like_any_other() {
        let widgets = GroupKind::of(WIDGETS, "Widget");
        let widget = |uid: &str| meta((WIDGETS, "Widget"), uid, &[]);
        let of_widget = |uid: &str, version: &str| OwnerReference {
            api_version: format!("example.skiff.dev/{version}"),
            kind: "Widget".into(),
            ..owner_ref(uid, true)
        };
        let mut g = Graph::default();
        g.apply(&widgets, MetaChange::Applied(widget("w1")));
        let mut w2 = widget("w2");
        w2.owners = vec![owner_ref("cm", false)];
        g.apply(&widgets, MetaChange::Applied(w2.clone()));
        g.apply(&pods(), MetaChange::Applied(pod("cm", &[])));
        // Named at another served version: the same owner, nothing to look at.
        let mut owned = pod("owned", &[]);
        owned.owners = vec![of_widget("w1", "v1beta1")];
        let fx = g.apply(&pods(), MetaChange::Applied(owned));
        assert_eq!(fx, Effects::default());
        assert_eq!(sorted_uids(g.dependents("w1")), vec!["owned"]);
        assert_eq!(sorted_uids(g.dependents("cm")), vec!["w2"]);
        // A re-list of Widgets (at another version, same group) forgets w1 only.
        w2.api_version = "example.skiff.dev/v1beta1".into();
        let fx = g.apply(&widgets, MetaChange::Resynced(vec![w2]));
        assert_eq!(uids(fx.attempt_to_delete), vec!["owned"]);
        assert!(g.node("w1").is_none());
        assert_eq!(
            &*g.node("w2").unwrap().identity.api_version,
            "example.skiff.dev/v1beta1"
        );
        // The kind no longer served: its nodes go, as deleted.
        let fx = g.drop_kind(&widgets);
        assert!(fx.attempt_to_delete.is_empty(), "w2 owned nothing");
        assert!(g.dependents("cm").is_empty());
        assert!(g.node("cm").is_some());
        // Owners of a kind not seen stay virtual, to verify once it is served.
        let mut later = pod("later", &[]);
        later.owners = vec![of_widget("w9", "v1")];
        g.apply(&pods(), MetaChange::Applied(later));
        assert_eq!(g.virtual_of(&widgets), vec![item("w9", true)]);
    }

    #[test]
    fn references_naming_an_owner_otherwise_are_looked_at() {
        let mut g = Graph::default();
        g.apply(&pods(), MetaChange::Applied(pod("o", &[])));
        // Right UID, wrong name.
        let mut d = pod("d", &[]);
        d.owners = vec![OwnerReference {
            name: "not-o".into(),
            ..owner_ref("o", true)
        }];
        let fx = g.apply(&pods(), MetaChange::Applied(d));
        assert_eq!(fx.attempt_to_delete, vec![item("d", false)]);
        // An owner in another namespace is wrong for sure: an event says so.
        let mut elsewhere = pod("e", &["o"]);
        elsewhere.namespace = "other".into();
        let fx = g.apply(&pods(), MetaChange::Applied(elsewhere));
        assert_eq!(fx.attempt_to_delete, vec![item("e", false)]);
        assert_eq!(fx.invalid_namespace.len(), 1);
        assert_eq!(fx.invalid_namespace[0].0.namespace, "other");
    }

    #[test]
    fn a_virtual_owner_named_two_ways_is_verified_each_way() {
        let mut g = Graph::default();
        g.apply(&pods(), MetaChange::Applied(pod("d1", &["o"])));
        let mut d2 = pod("d2", &[]);
        d2.owners = vec![OwnerReference {
            name: "other-name".into(),
            ..owner_ref("o", true)
        }];
        let fx = g.apply(&pods(), MetaChange::Applied(d2));
        assert_eq!(fx.attempt_to_delete, vec![item("d2", false)]);
        let first = g.node("o").unwrap().identity.clone();
        let mut fx = Effects::default();
        g.virtual_delete(&first, &mut fx);
        // d1 named it as verified missing; d2 names it otherwise: that is tried next.
        assert_eq!(fx.attempt_to_delete, vec![item("d1", false)]);
        assert_eq!(fx.attempt_to_delete_later, vec![item("o", true)]);
        let o = g.node("o").unwrap();
        assert_eq!(o.identity.name, "other-name");
        assert!(g.absent.has(&first.key()));
    }

    #[test]
    fn an_observed_node_survives_a_virtual_delete_elsewhere() {
        let mut g = Graph::default();
        g.apply(&pods(), MetaChange::Applied(pod("o", &[])));
        let mut d = pod("d", &[]);
        d.owners = vec![OwnerReference {
            name: "wrong".into(),
            ..owner_ref("o", true)
        }];
        g.apply(&pods(), MetaChange::Applied(d));
        let looked_for = Identity {
            name: "wrong".into(),
            ..g.node("o").unwrap().identity.clone()
        };
        let mut fx = Effects::default();
        g.virtual_delete(&looked_for, &mut fx);
        assert!(g.node("o").is_some_and(|n| n.observed));
        assert_eq!(fx.attempt_to_delete, vec![item("d", false)]);
    }

    #[test]
    fn absent_owners_are_remembered_least_recently_used_first_out() {
        let key = |u: &str| AbsentKey::of_ref(&owner_ref(u, false), "default");
        let mut a = AbsentOwners::new(2);
        a.add(key("1"));
        a.add(key("2"));
        assert!(a.has(&key("1")), "1 used last now");
        a.add(key("3"));
        assert!(a.has(&key("1")) && a.has(&key("3")));
        assert!(!a.has(&key("2")));
        assert_eq!(a.len(), 2);
        // Versions of a kind are one owner.
        let v1 = OwnerReference {
            api_version: "apps/v1".into(),
            ..owner_ref("x", false)
        };
        let v2 = OwnerReference {
            api_version: "apps/v1beta2".into(),
            ..owner_ref("x", false)
        };
        a.add(AbsentKey::of_ref(&v1, ""));
        assert!(a.has(&AbsentKey::of_ref(&v2, "")));
        assert!(!a.has(&AbsentKey::of_ref(&v2, "default")));
    }

    #[test]
    fn references_are_compared_by_uid() {
        let (a, b, c) = (
            owner_ref("a", true),
            owner_ref("b", true),
            owner_ref("c", true),
        );
        let b2 = owner_ref("b", false);
        let (added, removed, changed) =
            diff_references(&[a.clone(), b.clone()], &[b2.clone(), c.clone()]);
        assert_eq!(added, vec![c]);
        assert_eq!(removed, vec![a]);
        assert_eq!(changed, vec![(b, b2)]);
    }
}
