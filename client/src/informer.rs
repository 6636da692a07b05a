//! Shared informers: one watch and one cache per resource, however many parts of a program
//! use it.
//!
//! An [`Informer`] runs a [`crate::watcher()`] into a [`Store`] and tells subscribers what
//! changed. An [`InformerFactory`] hands out one informer per resource, namespace and
//! selector, so a scheduler's queue and its cache (say) share one watch.

use std::any::{Any, TypeId};
use std::collections::HashMap;

use futures::{Stream, StreamExt};
use parking_lot::Mutex;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::api::{Api, Object};
use crate::client::Client;
use crate::reflector::{Change, IndexFn, Store, Writer};
use crate::watcher::{self, watcher};

/// Changes buffered per subscriber before it is told to resync instead.
const SUBSCRIBER_BUFFER: usize = 4096;

/// A running list+watch feeding a cache, shared by clones.
pub struct Informer<K> {
    store: Store<K>,
    changes: broadcast::Sender<Change<K>>,
}

impl<K> Clone for Informer<K> {
    fn clone(&self) -> Self {
        Informer {
            store: self.store.clone(),
            changes: self.changes.clone(),
        }
    }
}

impl<K: Object> Informer<K> {
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
                        tracing::warn!(resource = K::URL_PATH_SEGMENT, error = %e, "informer watch failed; retrying");
                    }
                    None => break,
                }
            }
        });
        Informer { store, changes }
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

type FactoryKey = (TypeId, Option<String>, Option<String>, Option<String>, bool);

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
        let key = (
            TypeId::of::<K>(),
            namespace.map(String::from),
            config.label_selector.clone(),
            config.field_selector.clone(),
            config.strip_managed_fields,
        );
        let mut map = self.informers.lock();
        if let Some(i) = map.get(&key).and_then(|b| b.downcast_ref::<Informer<K>>()) {
            return i.clone();
        }
        let api = Api::<K>::all(self.client.clone());
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
