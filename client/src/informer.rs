//! Shared informers: one watch and one cache per resource, however many parts of a program
//! use it.
//!
//! An [`Informer`] runs a [`crate::watcher()`] into a [`Store`] and tells subscribers what
//! changed. An [`InformerFactory`] hands out one informer per resource, namespace and
//! selector, so a scheduler's queue and its cache (say) share one watch.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use parking_lot::Mutex;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::api::{Api, Object};
use crate::client::Client;
use crate::reflector::{Change, IndexFn, Store, Writer};
use crate::resource::Resource;
use crate::watcher::{self, watcher};

/// Changes buffered per subscriber before it is told to resync instead.
const SUBSCRIBER_BUFFER: usize = 4096;

/// A running list+watch feeding a cache, shared by clones.
pub struct Informer<K> {
    store: Store<K>,
    changes: broadcast::Sender<Change<K>>,
    /// The resource's plural, for logs.
    resource: Arc<str>,
}

impl<K> Clone for Informer<K> {
    fn clone(&self) -> Self {
        Informer {
            store: self.store.clone(),
            changes: self.changes.clone(),
            resource: self.resource.clone(),
        }
    }
}

impl<K: Resource> Informer<K> {
    /// Starts an informer on `api` until `shutdown`; `indexers` are added to the store's
    /// default namespace index.
    pub fn spawn(
        api: Api<K>,
        config: watcher::Config,
        indexers: HashMap<String, IndexFn<K>>,
        shutdown: CancellationToken,
    ) -> Self {
        let mut writer = Writer::new(indexers);
        let store = writer.store();
        let (changes, _) = broadcast::channel(SUBSCRIBER_BUFFER);
        let tx = changes.clone();
        let resource: Arc<str> = api.plural().into();
        let name = resource.clone();
        tokio::spawn(async move {
            let stream = watcher(api, config);
            futures::pin_mut!(stream);
            loop {
                let ev = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    ev = stream.next() => ev,
                };
                match ev {
                    Some(Ok(ev)) => {
                        if let Some(change) = writer.apply(ev) {
                            let _ = tx.send(change);
                        }
                    }
                    Some(Err(e)) => {
                        tracing::warn!(resource = &*name, error = %e, "informer watch failed; retrying");
                    }
                    None => break,
                }
            }
        });
        Informer {
            store,
            changes,
            resource,
        }
    }

    /// The resource's plural (`configmaps`, `widgets`).
    pub fn resource(&self) -> &str {
        &self.resource
    }

    /// The cache.
    pub fn store(&self) -> Store<K> {
        self.store.clone()
    }

    /// Changes from now on. A subscriber that falls too far behind gets
    /// [`Change::Resynced`] in place of what it missed.
    pub fn subscribe(&self) -> impl Stream<Item = Change<K>> + Send + 'static {
        let rx = self.changes.subscribe();
        futures::stream::unfold(rx, |mut rx| async move {
            match rx.recv().await {
                Ok(c) => Some((c, rx)),
                Err(broadcast::error::RecvError::Lagged(_)) => Some((Change::Resynced, rx)),
                Err(broadcast::error::RecvError::Closed) => None,
            }
        })
    }
}

/// What tells informers apart: the object type, the resource (`group/version/plural`, which
/// differs between dynamic resources of one type), the namespace, the selectors and whether
/// managed fields are kept.
type FactoryKey = (
    TypeId,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    bool,
);

/// Hands out one shared [`Informer`] per resource, namespace and selectors.
pub struct InformerFactory {
    client: Client,
    shutdown: CancellationToken,
    informers: Mutex<HashMap<FactoryKey, Box<dyn Any + Send + Sync>>>,
}

impl InformerFactory {
    /// A factory whose informers run until `shutdown`.
    pub fn new(client: Client, shutdown: CancellationToken) -> Self {
        InformerFactory {
            client,
            shutdown,
            informers: Mutex::new(HashMap::new()),
        }
    }

    /// The shared informer for every `K` in every namespace, with managed fields stripped
    /// (see [`watcher::Config::strip_managed_fields`]).
    pub fn informer<K: Object>(&self) -> Informer<K> {
        let config = watcher::Config::default().strip_managed_fields();
        self.informer_with(None, config, HashMap::new())
    }

    /// The shared informer for `K` in `namespace` (all when `None`) with the selectors of
    /// `config`. `indexers` apply when this call starts the informer.
    pub fn informer_with<K: Object>(
        &self,
        namespace: Option<&str>,
        config: watcher::Config,
        indexers: HashMap<String, IndexFn<K>>,
    ) -> Informer<K> {
        self.informer_for(&(), namespace, config, indexers)
    }

    /// The shared informer for the resource `dyntype` names (an
    /// [`crate::dynamic::ApiResource`] for [`crate::dynamic::DynamicObject`]s), in
    /// `namespace` (all when `None`) with the selectors of `config`. `indexers` apply when
    /// this call starts the informer.
    pub fn informer_for<K: Resource>(
        &self,
        dyntype: &K::DynamicType,
        namespace: Option<&str>,
        config: watcher::Config,
        indexers: HashMap<String, IndexFn<K>>,
    ) -> Informer<K> {
        let key = (
            TypeId::of::<K>(),
            format!(
                "{}/{}/{}",
                K::group(dyntype),
                K::version(dyntype),
                K::plural(dyntype)
            ),
            namespace.map(String::from),
            config.label_selector.clone(),
            config.field_selector.clone(),
            config.strip_managed_fields,
        );
        let mut map = self.informers.lock();
        if let Some(i) = map.get(&key).and_then(|b| b.downcast_ref::<Informer<K>>()) {
            return i.clone();
        }
        let api = Api::<K>::all_with(self.client.clone(), dyntype);
        let api = match namespace {
            Some(ns) => api.in_namespace(ns),
            None => api,
        };
        let inf = Informer::spawn(api, config, indexers, self.shutdown.clone());
        map.insert(key, Box::new(inf.clone()));
        inf
    }

    /// How many distinct informers (watches) the factory runs.
    pub fn len(&self) -> usize {
        self.informers.lock().len()
    }

    /// Whether the factory runs none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dynamic::{ApiResource, DynamicObject};
    use k8s_openapi::api::core::v1::ConfigMap;

    #[tokio::test]
    async fn one_informer_per_resource_even_of_one_type() {
        let client = Client::new(crate::Config::new("https://127.0.0.1:1")).unwrap();
        let shutdown = CancellationToken::new();
        let f = InformerFactory::new(client, shutdown.clone());
        let widgets = ApiResource::namespaced("example.skiff.dev", "v1", "Widget", "widgets");
        let gadgets = ApiResource::namespaced("example.skiff.dev", "v1", "Gadget", "gadgets");
        let cfg = watcher::Config::default;
        let w = f.informer_for::<DynamicObject>(&widgets, None, cfg(), HashMap::new());
        f.informer_for::<DynamicObject>(&widgets, None, cfg(), HashMap::new());
        assert_eq!(f.len(), 1, "asked twice, started once");
        let g = f.informer_for::<DynamicObject>(&gadgets, None, cfg(), HashMap::new());
        assert_eq!(f.len(), 2);
        assert_eq!((w.resource(), g.resource()), ("widgets", "gadgets"));
        // Typed and dynamic informers of one resource are different caches of different types.
        f.informer_with::<ConfigMap>(None, cfg(), HashMap::new());
        let cms = ApiResource::erase::<ConfigMap>(&());
        f.informer_for::<DynamicObject>(&cms, None, cfg(), HashMap::new());
        assert_eq!(f.len(), 4);
        shutdown.cancel();
    }
}
