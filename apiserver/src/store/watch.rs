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
    initial: VecDeque<Arc<Event>>,
    resource: Resource,
    namespace: Option<String>,
    opts: WatchOpts,
    initial_end_pending: bool,
    last_rv: i64,
    /// The resourceVersion the watch resumes after (None: starts from the current state).
    from: Option<i64>,
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
        if self.resource.storage_version.is_some() {
            // Another version's watchers share the event; this one's needs its own bytes.
            return Some(WatchItem {
                kind,
                object: super::cached_in_version(&self.resource, ev.object.clone()),
                event: None,
            });
        }
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

    /// The next event, or None when the cache closed the feed (the client must re-watch).
    pub async fn next(&mut self) -> Option<WatchItem> {
        loop {
            if let Some(ev) = self.initial.pop_front() {
                // The current state comes in key order; replayed history is in revision order
                // and is deduplicated like live events.
                if let Some(item) = self.filter(ev, self.from.is_none()) {
                    return Some(item);
                }
                continue;
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
                        return Some(item);
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
        let initial = std::mem::take(&mut sub.initial).into();
        let last_rv = from.unwrap_or(0);
        Ok(Watch {
            initial,
            initial_end_pending: opts.send_initial_events && opts.bookmarks,
            resource: r.clone(),
            namespace: if r.namespaced {
                ns.map(String::from)
            } else {
                None
            },
            last_rv,
            from,
            caught_up: false,
            opts,
            sub,
        })
    }
}
