//! Watch: a client's filtered view of its resource's watch cache, from a resourceVersion or
//! from the current state, with bookmarks.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::update::{requested_rv, too_new};
use super::GenericStore;
use crate::error::Result;
use crate::registry::Resource;
use crate::request::WatchOpts;
use crate::storage::cached::Cached;
use crate::storage::watch_cache::{Event, EventType, Subscription};

/// A filtered client watch.
pub struct Watch {
    sub: Subscription,
    /// What the client gets before live events, in its version.
    initial: VecDeque<WatchItem>,
    resource: Resource,
    namespace: Option<String>,
    opts: WatchOpts,
    initial_end_pending: bool,
    last_rv: i64,
    /// Whether the initial events have been delivered.
    caught_up: bool,
}

/// One event for a client.
#[derive(Debug, Clone)]
pub struct WatchItem {
    /// ADDED, MODIFIED, DELETED, BOOKMARK.
    pub kind: EventType,
    /// The object (for bookmarks: only kind, apiVersion and resourceVersion).
    pub object: Arc<Cached>,
    /// The underlying event, whose serialization is shared between watchers.
    pub event: Option<Arc<Event>>,
}

impl Watch {
    fn matches(&self, obj: &Cached) -> bool {
        let key_ok = match &self.namespace {
            Some(ns) => obj.namespace == *ns,
            None => true,
        };
        key_ok && self.opts.labels.matches_cached(obj) && self.opts.fields.matches_cached(obj)
    }

    fn bookmark(&self, rv: i64, initial_end: bool) -> WatchItem {
        let mut meta = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        WatchItem {
            kind: EventType::Bookmark,
            object: Arc::new(Cached::from_value(
                &*self.resource,
                &json!({
                    "kind": self.resource.kind,
                    "apiVersion": self.resource.api_version(),
                    "metadata": meta,
                }),
                rv,
            )),
            event: None,
        }
    }

    fn filter(&mut self, ev: Arc<Event>, initial: bool) -> Option<WatchItem> {
        if ev.kind == EventType::Bookmark {
            // A bookmark at the revision the client already has is still progress news.
            if ev.rv < self.last_rv || !self.caught_up {
                return None;
            }
            self.last_rv = ev.rv;
            return self.opts.bookmarks.then(|| self.bookmark(ev.rv, false));
        }
        // Initial events come in key order, not revision order; live ones are deduplicated
        // against what the client has already been brought to.
        if !initial {
            if ev.rv <= self.last_rv {
                return None;
            }
            self.last_rv = ev.rv;
        }
        let now = self.matches(&ev.object);
        let kind = match ev.kind {
            EventType::Modified => {
                let before = ev.prev.as_ref().is_some_and(|p| self.matches(p));
                match (before, now) {
                    (true, true) => EventType::Modified,
                    (false, true) => EventType::Added,
                    (true, false) => EventType::Deleted,
                    (false, false) => return None,
                }
            }
            k if now => k,
            _ => return None,
        };
        Some(WatchItem {
            kind,
            object: ev.object.clone(),
            event: Some(ev),
        })
    }

    /// The next event before `deadline`, or None when the deadline passes, `shutdown` is
    /// cancelled or the feed closes: the end of a client's watch stream.
    pub async fn next_before(
        &mut self,
        shutdown: &tokio_util::sync::CancellationToken,
        deadline: tokio::time::Instant,
    ) -> Option<WatchItem> {
        tokio::select! {
            _ = shutdown.cancelled() => None,
            _ = tokio::time::sleep_until(deadline) => None,
            item = self.next() => item,
        }
    }

    /// A live event's object in this watch's version: converted once for every watcher of
    /// the version (the event keeps the result), not once per watcher.
    async fn in_version(&self, item: WatchItem) -> Result<WatchItem> {
        let Some(convert) = &self.resource.convert else {
            return Ok(item);
        };
        let Some(ev) = &item.event else {
            return Ok(item);
        };
        if item.object.json.is_empty() || convert.is_current(&item.object.json) {
            return Ok(item);
        }
        let view = ev.view(self.resource.api_version());
        let object = view
            .get_or_try_init(|| async {
                let mut one = [item.object.clone()];
                super::cached_in_version(&self.resource, &mut one).await?;
                let [object] = one;
                Ok::<_, crate::error::Error>(object)
            })
            .await?
            .clone();
        // The event's own bytes are another version's.
        Ok(WatchItem {
            kind: item.kind,
            object,
            event: None,
        })
    }

    /// The next event, or None when the cache closed the feed (the client must re-watch), or
    /// when an event cannot be converted to this watch's version (the client's re-watch then
    /// fails with the conversion's error).
    pub async fn next(&mut self) -> Option<WatchItem> {
        loop {
            if let Some(item) = self.initial.pop_front() {
                return Some(item);
            }
            if !self.caught_up {
                self.caught_up = true;
                self.last_rv = self.last_rv.max(self.sub.rev);
            }
            if self.initial_end_pending {
                self.initial_end_pending = false;
                return Some(self.bookmark(self.last_rv, true));
            }
            match self.sub.rx.recv().await {
                Ok(ev) => {
                    if let Some(item) = self.filter(ev, false) {
                        return match self.in_version(item).await {
                            Ok(item) => Some(item),
                            Err(e) => {
                                tracing::warn!(resource = %self.resource.group_resource(), version = %self.resource.version, error = %e, "ending a watch: an event could not be converted");
                                None
                            }
                        };
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return None,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

impl GenericStore {
    /// Starts a watch.
    pub async fn watch(&self, r: &Resource, ns: Option<&str>, opts: WatchOpts) -> Result<Watch> {
        let cache = self.cache(r);
        cache.wait_ready().await;
        let rv = requested_rv(opts.resource_version.as_deref())?;
        let from = match rv {
            // Unset: the current state first, at least as fresh as a read from etcd now
            // (a client that just wrote must see its write among the initial events).
            None => {
                let current = self.etcd.current_revision().await?;
                cache
                    .reach(&self.etcd, current, Duration::from_secs(3))
                    .await;
                None
            }
            // "0": the current state first, from whatever the cache holds.
            Some(0) => None,
            Some(n) if opts.send_initial_events => {
                cache.reach(&self.etcd, n, Duration::from_secs(3)).await;
                None
            }
            Some(n) => {
                if !cache.reach(&self.etcd, n, Duration::from_secs(3)).await {
                    return Err(too_new(n, cache.rev()));
                }
                Some(n)
            }
        };
        let sub = cache.subscribe(from)?;
        let mut sub = sub;
        let events = std::mem::take(&mut sub.initial);
        let last_rv = from.unwrap_or(0);
        let mut w = Watch {
            initial: VecDeque::new(),
            initial_end_pending: opts.send_initial_events && opts.bookmarks,
            resource: r.clone(),
            namespace: if r.namespaced {
                ns.map(String::from)
            } else {
                None
            },
            last_rv,
            caught_up: false,
            opts,
            sub,
        };
        // The current state comes in key order; replayed history is in revision order and is
        // deduplicated like live events. What the client gets of it is converted here, in one
        // conversion, so that a failure fails the request rather than the stream.
        let initial = from.is_none();
        let mut items: Vec<WatchItem> = events
            .into_iter()
            .filter_map(|ev| w.filter(ev, initial))
            .collect();
        if r.convert.is_some() {
            let mut objects: Vec<Arc<Cached>> = items.iter().map(|i| i.object.clone()).collect();
            super::cached_in_version(r, &mut objects).await?;
            for (item, object) in items.iter_mut().zip(objects) {
                if !Arc::ptr_eq(&item.object, &object) {
                    item.object = object;
                    item.event = None;
                }
            }
        }
        w.initial = items.into();
        Ok(w)
    }
}
