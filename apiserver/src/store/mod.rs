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
    /// What stops the watch cache of each resource served at run time, by `plural.group`, and
    /// the selectable fields it indexes.
    stoppers:
        parking_lot::Mutex<HashMap<String, (tokio_util::sync::CancellationToken, Vec<String>)>>,
    /// Bumped whenever what is served changes (discovery and OpenAPI follow it).
    generation: std::sync::atomic::AtomicU64,
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
            stoppers: Default::default(),
            generation: Default::default(),
            admission,
            metrics,
        }
    }

    /// Starts serving a resource: returns it, and its watch cache, which the caller runs.
    pub fn serve(&self, info: ResourceInfo) -> (Resource, Arc<WatchCache>) {
        let r: Resource = Arc::new(info);
        self.etcd.serve_resource(&r.storage, r.group_resource());
        let cache = WatchCache::new(r.clone(), r.prefix(self.etcd.prefix()), self.cache_capacity);
        self.caches
            .write()
            .insert(r.group_resource().to_string(), cache.clone());
        let mut list = self.resources.write();
        list.retain(|x| x.group_resource() != r.group_resource() || x.version != r.version);
        list.push(r.clone());
        self.bump();
        (r, cache)
    }

    /// Serves a type defined at run time in every version of `versions` (in discovery
    /// order; all share one storage directory and one watch cache, which runs until the type
    /// is unserved or `shutdown`). What was served of the type before is replaced; the watch
    /// cache is kept when the storage directory is the same.
    pub fn serve_dynamic(
        &self,
        versions: Vec<ResourceInfo>,
        shutdown: &tokio_util::sync::CancellationToken,
    ) -> Vec<Resource> {
        let Some(first) = versions.first() else {
            return Vec::new();
        };
        let gr = first.group_resource().to_string();
        let dir = first.storage.clone();
        let served: Vec<Resource> = versions.into_iter().map(Arc::new).collect();
        // The cache indexes the selectable fields: a change of them needs a new one.
        let keep_cache = self
            .caches
            .read()
            .get(&gr)
            .is_some_and(|c| c.prefix() == served[0].prefix(self.etcd.prefix()))
            && self
                .stoppers
                .lock()
                .get(&gr)
                .is_some_and(|(_, fields)| *fields == served[0].selectable);
        if !keep_cache {
            self.stop_cache(&gr);
            self.etcd.serve_resource(&dir, &gr);
            let r = served[0].clone();
            let cache =
                WatchCache::new(r.clone(), r.prefix(self.etcd.prefix()), self.cache_capacity);
            let stop = shutdown.child_token();
            tokio::spawn(cache.clone().run(self.etcd.clone(), stop.clone()));
            self.caches.write().insert(gr.clone(), cache);
            self.stoppers
                .lock()
                .insert(gr.clone(), (stop, r.selectable.clone()));
        }
        let mut list = self.resources.write();
        list.retain(|x| x.group_resource() != gr);
        list.extend(served.iter().cloned());
        self.bump();
        served
    }

    /// Stops serving a type defined at run time (every version), and its watch cache.
    pub fn unserve(&self, group_resource: &str) {
        let removed = {
            let mut list = self.resources.write();
            let before = list.len();
            let mut dir = None;
            list.retain(|x| {
                let hit = x.group_resource() == group_resource;
                if hit {
                    dir = Some(x.storage.clone());
                }
                !hit
            });
            (list.len() != before).then_some(dir).flatten()
        };
        if let Some(dir) = removed {
            self.stop_cache(group_resource);
            self.etcd.unserve_resource(&dir);
            self.bump();
        }
    }

    fn stop_cache(&self, group_resource: &str) {
        if let Some((stop, _)) = self.stoppers.lock().remove(group_resource) {
            stop.cancel();
        }
        self.caches.write().remove(group_resource);
    }

    fn bump(&self) {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// A number that changes whenever what is served changes.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::SeqCst)
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
            // A type defined at run time may go while a request on it is under way: that
            // request sees an empty cache.
            .unwrap_or_else(|| self.never_stored.clone())
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
    fn hint(&self, r: &ResourceInfo, key: &str, stored: &Value, bytes: &[u8], rev: i64) {
        let cached = Cached::new(r, stored, with_rv(bytes, rev), rev);
        self.cache(r).hint(key, Arc::new(cached));
    }

    fn key(&self, r: &ResourceInfo, ns: Option<&str>, name: &str) -> String {
        r.key(self.etcd.prefix(), ns, name)
    }

    /// Reads one object (consistently, from etcd).
    pub async fn get(&self, r: &ResourceInfo, ns: Option<&str>, name: &str) -> Result<Value> {
        self.get_stored(r, ns, name).await.map(|s| s.value)
    }

    /// Reads what etcd holds under `key`, in `r`'s version.
    async fn read(&self, r: &ResourceInfo, key: &str) -> Result<Option<Stored>> {
        let mut stored = self.etcd.get(key).await?;
        if let Some(s) = &mut stored {
            in_version(r, &mut s.value).await?;
        }
        Ok(stored)
    }

    /// Reads an object as its JSON bytes (with `resourceVersion`), without decoding it.
    pub async fn get_json(
        &self,
        r: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
    ) -> Result<bytes::Bytes> {
        if r.convert.is_some() {
            let v = self.get(r, ns, name).await?;
            return Ok(bytes::Bytes::from(
                serde_json::to_vec(&v).unwrap_or_default(),
            ));
        }
        let (raw, rv) = self
            .etcd
            .get_raw(&self.key(r, ns, name))
            .await?
            .ok_or_else(|| Error::not_found(r.group_resource(), name))?;
        Ok(with_rv(&raw, rv))
    }

    async fn get_stored(&self, r: &ResourceInfo, ns: Option<&str>, name: &str) -> Result<Stored> {
        self.read(r, &self.key(r, ns, name))
            .await?
            .ok_or_else(|| Error::not_found(r.group_resource(), name))
    }
}

// A resource with a conversion (a custom resource served in several versions, events.k8s.io's
// view of core events) keeps one stored form; each served version reads and writes it as its
// own.

/// What a write stores for `obj`: its stored form (where the resource converts) and that
/// form's bytes.
async fn encode_for(r: &ResourceInfo, obj: &Value) -> Result<Encoded> {
    match &r.convert {
        Some(c) => {
            let mut stored = [obj.clone()];
            c.to_stored(&mut stored).await?;
            let [stored] = stored;
            let bytes = crate::storage::encode(&stored);
            Ok(Encoded {
                bytes,
                stored: Some(stored),
            })
        }
        None => Ok(Encoded {
            bytes: crate::storage::encode(obj),
            stored: None,
        }),
    }
}

/// An object ready to be written.
struct Encoded {
    /// The bytes to store.
    bytes: Vec<u8>,
    /// The stored form, when it is not the object itself.
    stored: Option<Value>,
}

impl Encoded {
    /// The object as stored, given the object as written.
    fn stored<'a>(&'a self, written: &'a Value) -> &'a Value {
        self.stored.as_ref().unwrap_or(written)
    }
}

/// What a write answers with: the object as written at `rev`, or — where the conversion does
/// not round-trip (a webhook's) — the stored form read back in `r`'s version, as
/// kube-apiserver decodes what it stored.
async fn written_as(
    r: &ResourceInfo,
    written: &mut Value,
    encoded: Encoded,
    rev: i64,
) -> Result<()> {
    if let (Some(c), Some(mut stored)) = (&r.convert, encoded.stored) {
        if !c.round_trips() {
            in_version(r, &mut stored).await?;
            *written = stored;
        }
    }
    crate::storage::set_rv(written, rev);
    Ok(())
}

/// A stored object as `r`'s version shows it.
pub(crate) async fn in_version(r: &ResourceInfo, obj: &mut Value) -> Result<()> {
    if let Some(c) = &r.convert {
        c.to_served(std::slice::from_mut(obj)).await?;
    }
    Ok(())
}

/// Cached objects as `r`'s version shows them: those not in it already are converted, all in
/// one conversion (one call, for a conversion that calls out).
pub(crate) async fn cached_in_version(r: &ResourceInfo, items: &mut [Arc<Cached>]) -> Result<()> {
    let Some(convert) = &r.convert else {
        return Ok(());
    };
    let mut at = Vec::new();
    let mut values = Vec::new();
    for (i, c) in items.iter().enumerate() {
        if c.json.is_empty() || convert.is_current(&c.json) {
            continue;
        }
        let Ok(v) = serde_json::from_slice::<Value>(&c.json) else {
            continue;
        };
        at.push(i);
        values.push(v);
    }
    if values.is_empty() {
        return Ok(());
    }
    convert.to_served(&mut values).await?;
    for (i, v) in at.into_iter().zip(values) {
        items[i] = Arc::new(Cached::from_value(r, &v, items[i].rv));
    }
    Ok(())
}
