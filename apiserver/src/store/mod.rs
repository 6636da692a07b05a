//! The generic store: every verb (get, list, watch, create, update, patch, delete) implemented
//! once for every resource, over etcd and one watch cache per resource. It knows no resource
//! by name: what differs between types comes from their strategy and subresources
//! ([`crate::registry`]), and what a request must pass besides from the admission chain
//! ([`crate::admission`]). One file per verb.

mod create;
mod delete;
mod list;
mod objects;
mod subresource;
mod update;
mod watch;
mod write;

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;
use serde_json::Value;

pub use subresource::no_such_subresource;
pub use watch::{Watch, WatchItem};

use crate::admission::Chain;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::registry::{Resource, ResourceInfo};
use crate::storage::cached::{with_rv, Cached};
use crate::storage::watch_cache::WatchCache;
use crate::storage::{Etcd, Stored};

/// The store.
pub struct GenericStore {
    /// etcd.
    pub etcd: Etcd,
    /// What is served, in discovery order.
    resources: RwLock<Vec<Resource>>,
    /// One watch cache per served resource, by `plural.group`.
    caches: RwLock<HashMap<String, Arc<WatchCache>>>,
    /// An empty cache standing for every resource that is never stored (create-only ones),
    /// so that code walking every resource's cache finds nothing there.
    never_stored: Arc<WatchCache>,
    cache_capacity: usize,
    admission: Chain,
    /// Metrics.
    pub metrics: Arc<Metrics>,
}

impl GenericStore {
    /// A store serving nothing yet.
    pub fn new(etcd: Etcd, admission: Chain, metrics: Arc<Metrics>, cache_capacity: usize) -> Self {
        GenericStore {
            etcd,
            resources: RwLock::new(Vec::new()),
            caches: RwLock::new(HashMap::new()),
            never_stored: WatchCache::new(
                Arc::new(crate::storage::cached::NoFields),
                String::new(),
                0,
            ),
            cache_capacity,
            admission,
            metrics,
        }
    }

    /// Starts serving a resource: returns it, and its watch cache, which the caller runs.
    pub fn serve(&self, info: ResourceInfo) -> (Resource, Arc<WatchCache>) {
        let r: Resource = Arc::new(info);
        self.etcd.serve_resource(&r.plural, r.group_resource());
        let cache = WatchCache::new(r.clone(), r.prefix(self.etcd.prefix()), self.cache_capacity);
        self.caches
            .write()
            .insert(r.group_resource().to_string(), cache.clone());
        let mut list = self.resources.write();
        list.retain(|x| x.group_resource() != r.group_resource() || x.version != r.version);
        list.push(r.clone());
        (r, cache)
    }

    /// Starts serving a resource that is never stored (`create_only`): no etcd watch, no
    /// cache of its own.
    pub fn serve_unstored(&self, info: ResourceInfo) -> Resource {
        let r: Resource = Arc::new(info);
        let mut list = self.resources.write();
        list.retain(|x| x.group_resource() != r.group_resource() || x.version != r.version);
        list.push(r.clone());
        r
    }

    /// Every served resource, in discovery order.
    pub fn resources(&self) -> Vec<Resource> {
        self.resources.read().clone()
    }

    /// A served resource by group, version and plural name.
    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<Resource> {
        self.resources
            .read()
            .iter()
            .find(|r| r.group == group && r.version == version && r.plural == plural)
            .cloned()
    }

    /// The watch cache of a served resource.
    pub fn cache(&self, r: &ResourceInfo) -> Arc<WatchCache> {
        if r.create_only.is_some() {
            return self.never_stored.clone();
        }
        self.caches
            .read()
            .get(r.group_resource())
            .cloned()
            .expect("every stored resource has a watch cache")
    }

    /// Every watch cache.
    pub fn caches(&self) -> Vec<Arc<WatchCache>> {
        self.caches.read().values().cloned().collect()
    }

    /// The admission chain.
    pub fn admission(&self) -> &Chain {
        &self.admission
    }

    /// Tells the resource's watch cache what was just written, so its watch event needs no
    /// decoding.
    fn hint(&self, r: &ResourceInfo, key: &str, value: &Value, stored: &[u8], rev: i64) {
        let cached = Cached::new(r, value, with_rv(stored, rev), rev);
        self.cache(r).hint(key, Arc::new(cached));
    }

    fn key(&self, r: &ResourceInfo, ns: Option<&str>, name: &str) -> String {
        r.key(self.etcd.prefix(), ns, name)
    }

    /// Reads one object (consistently, from etcd).
    pub async fn get(&self, r: &ResourceInfo, ns: Option<&str>, name: &str) -> Result<Value> {
        self.get_stored(r, ns, name).await.map(|s| s.value)
    }

    /// Reads an object as its JSON bytes (with `resourceVersion`), without decoding it.
    pub async fn get_json(
        &self,
        r: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
    ) -> Result<bytes::Bytes> {
        let (raw, rv) = self
            .etcd
            .get_raw(&self.key(r, ns, name))
            .await?
            .ok_or_else(|| Error::not_found(r.group_resource(), name))?;
        Ok(with_rv(&raw, rv))
    }

    async fn get_stored(&self, r: &ResourceInfo, ns: Option<&str>, name: &str) -> Result<Stored> {
        self.etcd
            .get(&self.key(r, ns, name))
            .await?
            .ok_or_else(|| Error::not_found(r.group_resource(), name))
    }
}
