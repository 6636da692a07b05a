//! The watch cache: one etcd watch per resource type, fanned out to every client watch.
//!
//! The cache keeps the current objects (so `resourceVersion=0` lists never touch etcd) and a
//! window of recent events (so a client watch can resume from a recent resourceVersion). A
//! client watch takes the buffered events after its resourceVersion and subscribes to new ones
//! under one lock, so it can neither miss nor repeat an event. A client whose resourceVersion
//! is older than the window gets 410 Gone and re-lists, as with kube-apiserver.
//!
//! A value that cannot be read (not decrypted, or not an object) is never applied: the cache
//! drops what it held for that key, logs and remembers it ([`WatchCache::unreadable_under`]),
//! and carries on with the other keys.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use parking_lot::RwLock;
use std::time::Duration;

use etcd_client::{EventType as EtcdEventType, WatchOptions};
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use super::cached::{with_rv, Cached, Indexer};
use super::{Etcd, Unreadable};
use crate::error::{Error, Result};

/// What happened to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Created.
    Added,
    /// Changed.
    Modified,
    /// Deleted (the object is its last state).
    Deleted,
    /// No object change: the cache has reached this revision.
    Bookmark,
}

impl EventType {
    /// The word used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
            EventType::Bookmark => "BOOKMARK",
        }
    }
}

/// One change, shared by every watcher.
#[derive(Debug)]
pub struct Event {
    /// What happened.
    pub kind: EventType,
    /// The etcd key (empty for bookmarks).
    pub key: String,
    /// The revision of the change.
    pub rv: i64,
    /// The object after the change (before it, with the deletion's revision, for Deleted).
    pub object: Arc<Cached>,
    /// The object before the change, for Modified.
    pub prev: Option<Arc<Cached>>,
    /// The object as other versions of the resource show it (by `apiVersion`), converted
    /// once for all their watchers.
    views: parking_lot::Mutex<Vec<(String, View)>>,
}

/// An event's object in another version, once someone has converted it.
pub type View = Arc<tokio::sync::OnceCell<Arc<Cached>>>;

impl Event {
    /// An event.
    pub fn new(
        kind: EventType,
        key: String,
        rv: i64,
        object: Arc<Cached>,
        prev: Option<Arc<Cached>>,
    ) -> Self {
        Event {
            kind,
            key,
            rv,
            object,
            prev,
            views: Default::default(),
        }
    }

    /// The place for the object as `api_version` shows it: filled by the first of that
    /// version's watchers to convert it, read by the others.
    pub fn view(&self, api_version: &str) -> View {
        let mut views = self.views.lock();
        if let Some((_, v)) = views.iter().find(|(a, _)| a == api_version) {
            return v.clone();
        }
        let v = View::default();
        views.push((api_version.to_string(), v.clone()));
        v
    }

    /// The object's JSON, shared by every watcher.
    pub fn json(&self) -> &[u8] {
        &self.object.json
    }
}

struct Inner {
    /// The newest revision the cache reflects.
    rev: i64,
    /// Events after this revision are all in `history`.
    start_rev: i64,
    objects: BTreeMap<String, Arc<Cached>>,
    history: VecDeque<Arc<Event>>,
    tx: broadcast::Sender<Arc<Event>>,
}

/// The cache for one resource type.
pub struct WatchCache {
    index: Arc<dyn Indexer>,
    /// Objects this server just wrote, by key: their watch events need no decoding.
    hints: RwLock<std::collections::HashMap<String, Arc<Cached>>>,
    prefix: String,
    capacity: usize,
    /// Keys whose current value could not be read, and why.
    unreadable: RwLock<BTreeMap<String, String>>,
    inner: RwLock<Inner>,
    ready: watch::Sender<bool>,
    rev_tx: watch::Sender<i64>,
}

/// The start of a client watch: the events to send first, then the live feed.
pub struct Subscription {
    /// Events to deliver before any from `rx`.
    pub initial: Vec<Arc<Event>>,
    /// Later events.
    pub rx: broadcast::Receiver<Arc<Event>>,
    /// The revision the initial events bring the client to.
    pub rev: i64,
}

const BROADCAST_CAPACITY: usize = 16 * 1024;

/// How long to wait before listing or watching etcd again after a failure.
const RETRY: skiff_rules::Backoff =
    skiff_rules::Backoff::exponential(Duration::from_millis(100), Duration::from_secs(5));

impl WatchCache {
    /// A cache of the objects under `prefix` (ending in `/`), indexed by `index`, keeping
    /// `capacity` recent events.
    pub fn new(index: Arc<dyn Indexer>, prefix: String, capacity: usize) -> Arc<Self> {
        let (tx, _) = broadcast::channel(BROADCAST_CAPACITY);
        let (ready, _) = watch::channel(false);
        let (rev_tx, _) = watch::channel(0);
        Arc::new(WatchCache {
            index,
            hints: RwLock::new(std::collections::HashMap::new()),
            prefix,
            capacity,
            unreadable: RwLock::new(BTreeMap::new()),
            inner: RwLock::new(Inner {
                rev: 0,
                start_rev: 0,
                objects: BTreeMap::new(),
                history: VecDeque::new(),
                tx,
            }),
            ready,
            rev_tx,
        })
    }

    /// The etcd key prefix it mirrors.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Whether the first list has completed.
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Waits until the first list has completed.
    pub async fn wait_ready(&self) {
        let mut rx = self.ready.subscribe();
        let _ = rx.wait_for(|r| *r).await;
    }

    /// Waits until the cache reflects at least `rev`, for up to `timeout`.
    async fn wait_for_rev(&self, rev: i64, timeout: Duration) -> bool {
        let mut rx = self.rev_tx.subscribe();
        let ok = matches!(
            tokio::time::timeout(timeout, rx.wait_for(|r| *r >= rev)).await,
            Ok(Ok(_))
        );
        ok
    }

    /// The newest revision the cache reflects.
    pub fn rev(&self) -> i64 {
        self.read().rev
    }

    fn read(&self) -> parking_lot::RwLockReadGuard<'_, Inner> {
        self.inner.read()
    }

    fn write(&self) -> parking_lot::RwLockWriteGuard<'_, Inner> {
        self.inner.write()
    }

    /// The objects whose keys start with `prefix`, and the revision they are current at.
    pub fn list(
        &self,
        prefix: &str,
        mut keep: impl FnMut(&Cached) -> bool,
    ) -> (Vec<Arc<Cached>>, i64) {
        let inner = self.read();
        let items = inner
            .objects
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .filter(|(_, v)| keep(v))
            .map(|(_, v)| v.clone())
            .collect();
        (items, inner.rev)
    }

    /// Offers the cache an object this server has just written at `c.rv`, so that the watch
    /// event for that write is applied without decoding it again.
    pub fn hint(&self, key: &str, c: Arc<Cached>) {
        if c.rv <= self.rev() {
            return;
        }
        let mut h = self.hints.write();
        if h.len() > 10_000 {
            h.clear();
        }
        h.insert(key.to_string(), c);
    }

    fn take_hint(&self, key: &str, rev: i64) -> Option<Arc<Cached>> {
        let mut h = self.hints.write();
        match h.remove(key) {
            Some(c) if c.rv == rev => Some(c),
            Some(c) if c.rv > rev => {
                h.insert(key.to_string(), c);
                None
            }
            _ => None,
        }
    }

    /// The keys under `prefix` whose current value could not be read.
    pub fn unreadable_under(&self, prefix: &str) -> Vec<Unreadable> {
        let u = self.unreadable.read();
        if u.is_empty() {
            return Vec::new();
        }
        u.range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, r)| Unreadable {
                key: k.clone(),
                reason: r.clone(),
            })
            .collect()
    }

    /// Notes that `key`'s value could not be read: what the cache held for it goes (without an
    /// event: the object was not deleted), and lists say it is left out.
    fn mark_unreadable(&self, key: &str, rev: i64, reason: String) {
        tracing::error!(key, rev, error = %reason, "a stored value could not be read; leaving it out of the watch cache");
        self.unreadable.write().insert(key.to_string(), reason);
        self.write().objects.remove(key);
        // The cache has seen this revision all the same.
        self.apply(Event::new(
            EventType::Bookmark,
            String::new(),
            rev,
            Arc::new(Cached::empty()),
            None,
        ));
    }

    /// Whether any object's key starts with `prefix`.
    pub fn any_under(&self, prefix: &str) -> bool {
        let inner = self.read();
        inner
            .objects
            .range(prefix.to_string()..)
            .next()
            .is_some_and(|(k, _)| k.starts_with(prefix))
    }

    /// One object by key.
    pub fn get(&self, key: &str) -> Option<Arc<Cached>> {
        self.read().objects.get(key).cloned()
    }

    /// Starts a client watch after `from` (None: the current state as ADDED events first).
    pub fn subscribe(&self, from: Option<i64>) -> Result<Subscription> {
        let inner = self.read();
        let rx = inner.tx.subscribe();
        match from {
            None => {
                let initial = inner
                    .objects
                    .iter()
                    .map(|(k, v)| {
                        Arc::new(Event::new(
                            EventType::Added,
                            k.clone(),
                            v.rv,
                            v.clone(),
                            None,
                        ))
                    })
                    .collect();
                Ok(Subscription {
                    initial,
                    rx,
                    rev: inner.rev,
                })
            }
            Some(rv) if rv < inner.start_rev => Err(Error::gone(format!(
                "too old resource version: {rv} ({})",
                inner.start_rev + 1
            ))),
            Some(rv) => {
                // History is in revision order; skip what the client has seen.
                let skip = inner.history.partition_point(|e| e.rv <= rv);
                let initial = inner.history.iter().skip(skip).cloned().collect();
                Ok(Subscription {
                    initial,
                    rx,
                    rev: inner.rev.max(rv),
                })
            }
        }
    }

    /// Replaces the whole state after a (re-)list at `rev`. Open client watches are closed:
    /// they cannot know what changed in between, and will re-list.
    fn reset(&self, objects: BTreeMap<String, Arc<Cached>>, rev: i64) {
        let mut inner = self.write();
        inner.objects = objects;
        inner.history.clear();
        inner.rev = rev;
        inner.start_rev = rev;
        let (tx, _) = broadcast::channel(BROADCAST_CAPACITY);
        inner.tx = tx;
        drop(inner);
        self.rev_tx.send_replace(rev);
        self.ready.send_replace(true);
    }

    fn apply(&self, event: Event) {
        let event = Arc::new(event);
        let mut inner = self.write();
        if event.rv <= inner.rev {
            // The cache was moved past this revision after etcd showed that nothing under the
            // prefix changed up to it (see `catch_up`): the change is already reflected.
            tracing::debug!(prefix = %self.prefix, rv = event.rv, cache_rev = inner.rev, "skipping an event the cache is past");
            return;
        }
        match event.kind {
            EventType::Added | EventType::Modified => {
                inner
                    .objects
                    .insert(event.key.clone(), event.object.clone());
            }
            EventType::Deleted => {
                inner.objects.remove(&event.key);
            }
            EventType::Bookmark => {}
        }
        inner.rev = inner.rev.max(event.rv);
        if event.kind != EventType::Bookmark {
            inner.history.push_back(event.clone());
            while inner.history.len() > self.capacity {
                if let Some(old) = inner.history.pop_front() {
                    inner.start_rev = old.rv;
                }
            }
        }
        let rev = inner.rev;
        let _ = inner.tx.send(event);
        drop(inner);
        self.rev_tx.send_replace(rev);
    }

    /// Moves the cache to etcd's current revision when nothing under its prefix changed since
    /// the revision it reflects; returns whether the cache is now current.
    ///
    /// etcd's progress notifications cannot be trusted for this: etcd before 3.4.25 / 3.5.8
    /// answers a progress request with its current revision even while this watch still has
    /// older events to deliver, and moving the cache past them would make every client watch
    /// skip them. Instead one transaction reads, at a single revision, whether any key under the
    /// prefix was written after the cache's revision and how many keys there are: none written
    /// and the same count as the cache holds means etcd's state at that revision is the cache's.
    pub async fn catch_up(&self, store: &Etcd) -> Result<bool> {
        // Unreadable keys are in etcd's count but not among the objects.
        let (rev, len) = {
            let inner = self.read();
            (
                inner.rev,
                inner.objects.len() + self.unreadable.read().len(),
            )
        };
        let quiet = store.quiet_since(&self.prefix, rev).await?;
        if quiet.rev <= rev {
            return Ok(true);
        }
        if quiet.changed || quiet.count != len as i64 {
            return Ok(false);
        }
        let unreadable = self.unreadable.read().len();
        let mut inner = self.write();
        if inner.rev != rev || inner.objects.len() + unreadable != len {
            // Events arrived meanwhile; the next round decides.
            return Ok(inner.rev >= quiet.rev);
        }
        inner.rev = quiet.rev;
        let _ = inner.tx.send(Arc::new(Event::new(
            EventType::Bookmark,
            String::new(),
            quiet.rev,
            Arc::new(Cached::empty()),
            None,
        )));
        drop(inner);
        self.rev_tx.send_replace(quiet.rev);
        Ok(true)
    }

    /// Waits until the cache reflects at least `rev`: at once if it does or can show etcd had
    /// no changes for it since, else as its events arrive, for up to `timeout`.
    pub async fn reach(&self, store: &Etcd, rev: i64, timeout: Duration) -> bool {
        if self.rev() >= rev {
            return true;
        }
        if matches!(self.catch_up(store).await, Ok(true)) && self.rev() >= rev {
            return true;
        }
        self.wait_for_rev(rev, timeout).await
    }

    /// Sends a bookmark at the current revision to every watcher.
    fn bookmark(&self) {
        let inner = self.read();
        let _ = inner.tx.send(Arc::new(Event::new(
            EventType::Bookmark,
            String::new(),
            inner.rev,
            Arc::new(Cached::empty()),
            None,
        )));
    }

    /// Keeps the cache in step with etcd until `shutdown`.
    pub async fn run(self: Arc<Self>, store: Etcd, shutdown: CancellationToken) {
        let mut failures = 0;
        let mut need_list = true;
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            if need_list {
                match self.list_all(&store).await {
                    Ok(()) => {
                        need_list = false;
                        failures = 0;
                    }
                    Err(e) => {
                        tracing::warn!(prefix = %self.prefix, error = %e, "watch cache list failed");
                        if sleep_or_stop(&shutdown, RETRY.delay(failures)).await {
                            return;
                        }
                        failures += 1;
                        continue;
                    }
                }
            }
            match self.follow(&store, &shutdown).await {
                Follow::Stopped => return,
                Follow::Compacted => need_list = true,
                Follow::Broken(e) => {
                    tracing::warn!(prefix = %self.prefix, error = %e, "etcd watch broke; resuming");
                    if sleep_or_stop(&shutdown, RETRY.delay(failures)).await {
                        return;
                    }
                    failures += 1;
                }
            }
        }
    }

    /// Fills the cache from a list of everything under its prefix.
    pub async fn list_all(&self, store: &Etcd) -> Result<()> {
        let mut objects = BTreeMap::new();
        let mut unreadable = BTreeMap::new();
        let mut start: Option<String> = None;
        let mut rev = 0;
        loop {
            let page = store
                .list(&self.prefix, start.as_deref(), rev, 10_000)
                .await?;
            rev = page.rev;
            for u in page.unreadable {
                tracing::error!(key = %u.key, error = %u.reason, "a stored value could not be read; leaving it out of the watch cache");
                unreadable.insert(u.key, u.reason);
            }
            for item in page.items {
                let json = with_rv(&item.raw, item.rv);
                let c = Cached::new(&*self.index, &item.value, json, item.rv);
                objects.insert(item.key, Arc::new(c));
            }
            match page.next_key {
                Some(k) => start = Some(k),
                None => break,
            }
        }
        tracing::debug!(prefix = %self.prefix, count = objects.len(), rev, "watch cache listed");
        *self.unreadable.write() = unreadable;
        self.reset(objects, rev);
        Ok(())
    }

    async fn follow(&self, store: &Etcd, shutdown: &CancellationToken) -> Follow {
        let from = self.rev() + 1;
        let opts = WatchOptions::new()
            .with_prefix()
            .with_prev_key()
            .with_start_revision(from);
        let mut client = store.watch_client();
        let mut stream = match client.watch(self.prefix.as_str(), Some(opts)).await {
            Ok(s) => s,
            Err(e) => return Follow::Broken(e.to_string()),
        };
        // Every 5 s: a quiet prefix is caught up with etcd's revision (so consistent reads
        // need not wait for events that will not come), and watchers get a bookmark.
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut busy = false;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Follow::Stopped,
                _ = tick.tick() => {
                    if !busy {
                        if let Err(e) = self.catch_up(store).await {
                            tracing::debug!(prefix = %self.prefix, error = %e, "catching up failed");
                        }
                    }
                    busy = false;
                    self.bookmark();
                }
                msg = stream.message() => {
                    let resp = match msg {
                        Ok(Some(r)) => r,
                        Ok(None) => return Follow::Broken("watch stream ended".into()),
                        Err(e) => return Follow::Broken(e.to_string()),
                    };
                    if resp.compact_revision() > 0 {
                        return Follow::Compacted;
                    }
                    if resp.canceled() {
                        return Follow::Broken(format!("watch canceled: {}", resp.cancel_reason()));
                    }
                    busy |= !resp.events().is_empty();
                    for ev in resp.events() {
                        match self.convert(store, ev).await {
                            Ok(Some(e)) => self.apply(e),
                            Ok(None) => {}
                            Err((key, rev, e)) => self.mark_unreadable(&key, rev, e.to_string()),
                        }
                    }
                }
            }
        }
    }

    /// The cache's event for an etcd event; `Err` with the key and revision when its value
    /// cannot be read.
    async fn convert(
        &self,
        store: &Etcd,
        ev: &etcd_client::Event,
    ) -> Result<Option<Event>, (String, i64, Error)> {
        let Some(kv) = ev.kv() else { return Ok(None) };
        let key = String::from_utf8_lossy(kv.key()).into_owned();
        let rev = kv.mod_revision();
        let fail = |e: Error| (key.clone(), rev, e);
        match ev.event_type() {
            EtcdEventType::Put => {
                let object = match self.take_hint(&key, rev) {
                    Some(c) => c,
                    None => {
                        let stored = store
                            .decode_value(&key, kv.value(), rev)
                            .await
                            .map_err(fail)?;
                        let json = with_rv(&stored.raw, rev);
                        Arc::new(Cached::new(&*self.index, &stored.value, json, rev))
                    }
                };
                self.forget_unreadable(&key);
                // The previous state is what the cache holds (or, after a re-list, what etcd
                // sent along, when it can be read).
                let prev = match self.get(&key) {
                    Some(p) => Some(p),
                    None => match ev.prev_kv() {
                        Some(p) => store
                            .decode_value(&key, p.value(), p.mod_revision())
                            .await
                            .ok()
                            .map(|old| {
                                Arc::new(Cached::new(
                                    &*self.index,
                                    &old.value,
                                    with_rv(&old.raw, p.mod_revision()),
                                    p.mod_revision(),
                                ))
                            }),
                        None => None,
                    },
                };
                let kind = if kv.create_revision() == kv.mod_revision() {
                    EventType::Added
                } else {
                    EventType::Modified
                };
                Ok(Some(Event::new(kind, key, rev, object, prev)))
            }
            EtcdEventType::Delete => {
                self.forget_unreadable(&key);
                // The last state: the cache's copy (no decryption), else what etcd sent along.
                let last = match self.get(&key) {
                    Some(c) => {
                        let mut v = c.value();
                        super::set_rv(&mut v, rev);
                        Cached::from_value(&*self.index, &v, rev)
                    }
                    None => match ev.prev_kv() {
                        Some(p) => match store.decode_value(&key, p.value(), rev).await {
                            Ok(old) => {
                                Cached::new(&*self.index, &old.value, with_rv(&old.raw, rev), rev)
                            }
                            // Never readable: nobody was shown it, so nobody is told it went.
                            Err(_) => return Ok(None),
                        },
                        None => return Ok(None),
                    },
                };
                Ok(Some(Event::new(
                    EventType::Deleted,
                    key,
                    rev,
                    Arc::new(last),
                    None,
                )))
            }
        }
    }

    fn forget_unreadable(&self, key: &str) {
        if self.unreadable.read().contains_key(key) {
            self.unreadable.write().remove(key);
        }
    }
}

enum Follow {
    Stopped,
    Compacted,
    Broken(String),
}

/// Sleeps, returning true if shutdown came first.
async fn sleep_or_stop(shutdown: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => true,
        _ = tokio::time::sleep(d) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(name: &str, rv: i64) -> Arc<Cached> {
        Arc::new(Cached::from_value(
            &crate::storage::cached::NoFields,
            &json!({"metadata": {"name": name, "resourceVersion": rv.to_string()}}),
            rv,
        ))
    }

    fn cache(capacity: usize) -> Arc<WatchCache> {
        WatchCache::new(
            Arc::new(crate::storage::cached::NoFields),
            "/r/x/".into(),
            capacity,
        )
    }

    fn ev(kind: EventType, name: &str, rv: i64) -> Event {
        Event::new(kind, format!("/r/x/{name}"), rv, obj(name, rv), None)
    }

    #[test]
    fn resume_replays_only_newer_events_then_live() {
        let c = cache(3);
        c.reset(BTreeMap::new(), 10);
        c.apply(ev(EventType::Added, "a", 11));
        c.apply(ev(EventType::Added, "b", 12));
        let mut sub = c.subscribe(Some(11)).unwrap();
        assert_eq!(
            sub.initial.iter().map(|e| e.rv).collect::<Vec<_>>(),
            vec![12]
        );
        c.apply(ev(EventType::Deleted, "a", 13));
        let live = sub.rx.try_recv().unwrap();
        assert_eq!((live.kind, live.rv), (EventType::Deleted, 13));
        assert_eq!(c.list("/r/x/", |_| true).0.len(), 1);
    }

    #[test]
    fn hints_are_taken_once_at_their_revision() {
        let c = cache(10);
        c.reset(BTreeMap::new(), 10);
        c.hint("/r/x/a", obj("a", 12));
        assert!(
            c.take_hint("/r/x/a", 11).is_none(),
            "an older event does not take a newer hint"
        );
        assert_eq!(c.take_hint("/r/x/a", 12).map(|h| h.rv), Some(12));
        assert!(c.take_hint("/r/x/a", 12).is_none(), "taken once");
        // A hint for a revision the cache has already applied is dropped.
        c.hint("/r/x/b", obj("b", 9));
        assert!(c.take_hint("/r/x/b", 9).is_none());
    }

    #[test]
    fn too_old_is_gone() {
        let c = cache(2);
        c.reset(BTreeMap::new(), 10);
        for rv in 11..=14 {
            c.apply(ev(EventType::Added, &format!("o{rv}"), rv));
        }
        // Only 13 and 14 remain: resuming after 12 is fine, after 11 is not.
        assert!(c.subscribe(Some(12)).is_ok());
        let err = c.subscribe(Some(11)).err().unwrap();
        assert_eq!(err.code(), 410);
    }

    #[test]
    fn fresh_watch_starts_with_current_state() {
        let c = cache(10);
        let mut m = BTreeMap::new();
        m.insert("/r/x/a".to_string(), obj("a", 5));
        c.reset(m, 7);
        let sub = c.subscribe(None).unwrap();
        assert_eq!(sub.initial.len(), 1);
        assert_eq!(sub.initial[0].kind, EventType::Added);
        assert_eq!(sub.rev, 7);
    }
}
