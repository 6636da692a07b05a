//! The informer cache: a [`Store`] that mirrors what a [`crate::watcher()`] reports, with
//! indexes, read through cheap `Arc` handles.
//!
//! A [`Writer`] owns the store's contents; [`reflector`] feeds it from a watcher stream.
//! During a (re-)list the new objects collect in a buffer that replaces the old view in
//! one swap at [`Event::InitDone`], so readers never see half a list.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use parking_lot::RwLock;

use crate::error::Result;
use crate::resource::Resource;
use crate::watcher::Event;

/// Identifies an object: its namespace (empty when cluster-scoped) and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    /// The namespace, "" for cluster-scoped objects.
    pub namespace: String,
    /// The name.
    pub name: String,
}

impl ObjectKey {
    /// The key of `obj`.
    pub fn of<K: Resource>(obj: &K) -> Self {
        let m = obj.meta();
        ObjectKey {
            namespace: m.namespace.clone().unwrap_or_default(),
            name: m.name.clone().unwrap_or_default(),
        }
    }

    /// A key from its parts.
    pub fn new(namespace: &str, name: &str) -> Self {
        ObjectKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.namespace.is_empty() {
            f.write_str(&self.name)
        } else {
            write!(f, "{}/{}", self.namespace, self.name)
        }
    }
}

/// What changed in a store, as subscribers of a shared informer see it.
#[derive(Debug)]
pub enum Change<K> {
    /// An object was created or changed; this is its new state.
    Applied(Arc<K>),
    /// An object was deleted; this was its last state.
    Deleted(Arc<K>),
    /// The store was replaced by a fresh list (or the subscriber fell behind): look at
    /// the whole store again.
    Resynced,
}

impl<K> Clone for Change<K> {
    fn clone(&self) -> Self {
        match self {
            Change::Applied(o) => Change::Applied(o.clone()),
            Change::Deleted(o) => Change::Deleted(o.clone()),
            Change::Resynced => Change::Resynced,
        }
    }
}

/// An index function: the index values an object is filed under.
pub type IndexFn<K> = Arc<dyn Fn(&K) -> Vec<String> + Send + Sync>;

/// Index functions that most programs need.
pub mod indexers {
    use super::*;

    /// Files every object under its namespace.
    pub fn namespace<K: Resource>() -> IndexFn<K> {
        Arc::new(|o: &K| o.meta().namespace.clone().into_iter().collect())
    }

    /// Files pods under the node they are bound to (unbound pods under nothing).
    pub fn pod_node_name() -> IndexFn<Pod> {
        Arc::new(|p: &Pod| {
            p.spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .filter(|n| !n.is_empty())
                .into_iter()
                .collect()
        })
    }
}

/// The index name under which [`indexers::namespace`] is installed by default.
pub const NAMESPACE_INDEX: &str = "namespace";

struct Snapshot<K> {
    objects: HashMap<ObjectKey, Arc<K>>,
    /// index name → value → keys.
    indexes: HashMap<String, HashMap<String, BTreeSet<ObjectKey>>>,
}

impl<K> Snapshot<K> {
    fn new(indexers: &HashMap<String, IndexFn<K>>) -> Self {
        Snapshot {
            objects: HashMap::new(),
            indexes: indexers
                .keys()
                .map(|n| (n.clone(), HashMap::new()))
                .collect(),
        }
    }

    fn insert(&mut self, indexers: &HashMap<String, IndexFn<K>>, key: ObjectKey, obj: Arc<K>) {
        self.remove(indexers, &key);
        for (name, f) in indexers {
            let idx = self.indexes.entry(name.clone()).or_default();
            for v in f(&obj) {
                idx.entry(v).or_default().insert(key.clone());
            }
        }
        self.objects.insert(key, obj);
    }

    fn remove(&mut self, indexers: &HashMap<String, IndexFn<K>>, key: &ObjectKey) {
        let Some(old) = self.objects.remove(key) else {
            return;
        };
        for (name, f) in indexers {
            if let Some(idx) = self.indexes.get_mut(name) {
                for v in f(&old) {
                    if let Some(keys) = idx.get_mut(&v) {
                        keys.remove(key);
                        if keys.is_empty() {
                            idx.remove(&v);
                        }
                    }
                }
            }
        }
    }
}

struct Shared<K> {
    indexers: HashMap<String, IndexFn<K>>,
    snapshot: RwLock<Snapshot<K>>,
    ready: tokio::sync::watch::Sender<bool>,
}

/// A read handle on the cache: cheap to clone, never blocks for long (readers take a
/// short read lock and leave with `Arc`s).
pub struct Store<K> {
    shared: Arc<Shared<K>>,
}

impl<K> Clone for Store<K> {
    fn clone(&self) -> Self {
        Store {
            shared: self.shared.clone(),
        }
    }
}

/// The one writer of a [`Store`].
pub struct Writer<K> {
    shared: Arc<Shared<K>>,
    /// The list being received, swapped in at `InitDone`.
    buffer: Option<Snapshot<K>>,
}

impl<K: Resource> Default for Writer<K> {
    fn default() -> Self {
        Self::new(HashMap::new())
    }
}

impl<K: Resource> Writer<K> {
    /// A writer with the namespace index plus `indexers` (name → function).
    pub fn new(mut indexers: HashMap<String, IndexFn<K>>) -> Self {
        indexers
            .entry(NAMESPACE_INDEX.to_string())
            .or_insert_with(indexers::namespace::<K>);
        let (ready, _) = tokio::sync::watch::channel(false);
        let snapshot = RwLock::new(Snapshot::new(&indexers));
        Writer {
            shared: Arc::new(Shared {
                indexers,
                snapshot,
                ready,
            }),
            buffer: None,
        }
    }

    /// Adds an index (before the writer sees any event).
    pub fn with_index(self, name: &str, f: IndexFn<K>) -> Self {
        let mut indexers = Arc::try_unwrap(self.shared)
            .ok()
            .expect("indexes are added before the store is shared")
            .indexers;
        indexers.insert(name.to_string(), f);
        Writer::new(indexers)
    }

    /// A read handle.
    pub fn store(&self) -> Store<K> {
        Store {
            shared: self.shared.clone(),
        }
    }

    /// Applies one watcher event, and says what changed for readers. The store keeps the
    /// event's object itself (no copy).
    pub fn apply(&mut self, event: Event<K>) -> Option<Change<K>> {
        let ix = &self.shared.indexers;
        match event {
            Event::Init => {
                self.buffer = Some(Snapshot::new(ix));
                None
            }
            Event::InitApply(o) => {
                let buf = self.buffer.get_or_insert_with(|| Snapshot::new(ix));
                buf.insert(ix, ObjectKey::of(&o), Arc::new(o));
                None
            }
            Event::InitDone => {
                let fresh = self.buffer.take().unwrap_or_else(|| Snapshot::new(ix));
                *self.shared.snapshot.write() = fresh;
                self.shared.ready.send_replace(true);
                Some(Change::Resynced)
            }
            Event::Apply(o) => {
                let key = ObjectKey::of(&o);
                let obj = Arc::new(o);
                self.shared.snapshot.write().insert(ix, key, obj.clone());
                Some(Change::Applied(obj))
            }
            Event::Delete(o) => {
                let key = ObjectKey::of(&o);
                self.shared.snapshot.write().remove(ix, &key);
                Some(Change::Deleted(Arc::new(o)))
            }
        }
    }
}

impl<K: Resource> Store<K> {
    /// The object with this key.
    pub fn get(&self, key: &ObjectKey) -> Option<Arc<K>> {
        self.shared.snapshot.read().objects.get(key).cloned()
    }

    /// Every object.
    pub fn state(&self) -> Vec<Arc<K>> {
        self.shared
            .snapshot
            .read()
            .objects
            .values()
            .cloned()
            .collect()
    }

    /// Every key.
    pub fn keys(&self) -> Vec<ObjectKey> {
        self.shared
            .snapshot
            .read()
            .objects
            .keys()
            .cloned()
            .collect()
    }

    /// How many objects the store holds.
    pub fn len(&self) -> usize {
        self.shared.snapshot.read().objects.len()
    }

    /// Whether the store holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The objects filed under `value` in the index `index` (empty for an unknown index).
    pub fn by_index(&self, index: &str, value: &str) -> Vec<Arc<K>> {
        let snap = self.shared.snapshot.read();
        snap.indexes
            .get(index)
            .and_then(|i| i.get(value))
            .map(|keys| {
                keys.iter()
                    .filter_map(|k| snap.objects.get(k).cloned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The objects in one namespace.
    pub fn in_namespace(&self, ns: &str) -> Vec<Arc<K>> {
        self.by_index(NAMESPACE_INDEX, ns)
    }

    /// Whether the first list has arrived.
    pub fn is_ready(&self) -> bool {
        *self.shared.ready.borrow()
    }

    /// Waits until the first list has arrived.
    pub async fn wait_until_ready(&self) {
        let mut rx = self.shared.ready.subscribe();
        // The sender lives as long as the store, so this only ends when ready.
        let _ = rx.wait_for(|r| *r).await;
    }
}

/// Applies every event of `stream` to `writer` and passes it on.
pub fn reflector<K, S>(mut writer: Writer<K>, stream: S) -> impl Stream<Item = Result<Event<K>>>
where
    K: Resource,
    S: Stream<Item = Result<Event<K>>>,
{
    stream.map(move |ev| {
        if let Ok(e) = &ev {
            writer.apply(e.clone());
        }
        ev
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod(ns: &str, name: &str, node: Option<&str>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                namespace: Some(ns.into()),
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: node.map(String::from),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn relist_swaps_atomically_and_indexes_follow() {
        let mut w = Writer::<Pod>::default().with_index("node", indexers::pod_node_name());
        let s = w.store();
        assert!(!s.is_ready());
        w.apply(Event::Init);
        w.apply(Event::InitApply(pod("a", "p1", Some("n1"))));
        w.apply(Event::InitApply(pod("b", "p2", Some("n1"))));
        // Until InitDone readers see the old (empty) view.
        assert_eq!(s.len(), 0);
        w.apply(Event::InitDone);
        assert!(s.is_ready());
        assert_eq!(s.len(), 2);
        assert_eq!(s.by_index("node", "n1").len(), 2);
        assert_eq!(s.in_namespace("a").len(), 1);
        // A move between nodes re-files the pod.
        w.apply(Event::Apply(pod("a", "p1", Some("n2"))));
        assert_eq!(s.by_index("node", "n1").len(), 1);
        assert_eq!(s.by_index("node", "n2").len(), 1);
        w.apply(Event::Delete(pod("b", "p2", Some("n1"))));
        assert!(s.by_index("node", "n1").is_empty());
        assert!(s.get(&ObjectKey::new("b", "p2")).is_none());
        // A re-list replaces everything, including objects deleted while disconnected.
        w.apply(Event::Init);
        w.apply(Event::InitApply(pod("c", "p3", None)));
        w.apply(Event::InitDone);
        assert_eq!(s.keys(), vec![ObjectKey::new("c", "p3")]);
        assert!(s.by_index("node", "n2").is_empty());
        assert!(s.by_index("nope", "x").is_empty());
    }

    #[test]
    fn dynamic_objects_are_cached_by_namespace_and_name() {
        use crate::dynamic::{ApiResource, DynamicObject};
        let widgets = ApiResource::namespaced("example.skiff.dev", "v1", "Widget", "widgets");
        let w = |ns: &str, name: &str, n: i64| {
            DynamicObject::new(name, &widgets)
                .within(ns)
                .data(serde_json::json!({"spec": {"replicas": n}}))
        };
        let mut writer = Writer::<DynamicObject>::default();
        let s = writer.store();
        writer.apply(Event::Init);
        writer.apply(Event::InitApply(w("a", "w1", 1)));
        writer.apply(Event::InitDone);
        writer.apply(Event::Apply(w("a", "w1", 2)));
        writer.apply(Event::Apply(w("b", "w1", 3)));
        let got = s.get(&ObjectKey::new("a", "w1")).unwrap();
        assert_eq!(got.data["spec"]["replicas"], 2);
        assert_eq!(s.in_namespace("b").len(), 1);
        let key = ObjectKey::of(&w("b", "w1", 0));
        assert_eq!(key.to_string(), "b/w1");
    }
}
