//! The controller runner: a work queue keyed by object, de-duplicated, with rate-limited
//! requeues and bounded concurrency, fed by a shared informer, stopped gracefully.
//!
//! A key is never handled by two workers at once: a key added while it is being handled
//! is queued again once its worker is done (client-go's work queue semantics).

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::informer::Informer;
use crate::reflector::{Change, ObjectKey, Store};
use crate::resource::Resource;

struct QueueState<T> {
    queue: VecDeque<T>,
    /// Keys waiting to be handled (queued, or re-added while being handled).
    dirty: HashSet<T>,
    /// Keys a worker is handling.
    processing: HashSet<T>,
    /// Consecutive failures per key, for the requeue back-off.
    failures: HashMap<T, u32>,
    shut_down: bool,
}

/// A de-duplicating work queue with delayed and rate-limited adds.
pub struct WorkQueue<T> {
    state: Mutex<QueueState<T>>,
    notify: Notify,
    backoff: Backoff,
}

impl<T: Clone + Eq + Hash + Send + Sync + 'static> WorkQueue<T> {
    /// A queue whose failed keys come back after `backoff`'s delays.
    pub fn new(backoff: Backoff) -> Arc<Self> {
        Arc::new(WorkQueue {
            state: Mutex::new(QueueState {
                queue: VecDeque::new(),
                dirty: HashSet::new(),
                processing: HashSet::new(),
                failures: HashMap::new(),
                shut_down: false,
            }),
            notify: Notify::new(),
            backoff,
        })
    }

    /// Queues `key` unless it is already waiting.
    pub fn add(&self, key: T) {
        let mut s = self.state.lock();
        if s.shut_down || !s.dirty.insert(key.clone()) {
            return;
        }
        if !s.processing.contains(&key) {
            s.queue.push_back(key);
            drop(s);
            self.notify.notify_one();
        }
    }

    /// Queues `key` after `delay`.
    pub fn add_after(self: &Arc<Self>, key: T, delay: Duration) {
        if delay.is_zero() {
            return self.add(key);
        }
        let q = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if let Some(q) = q.upgrade() {
                q.add(key);
            }
        });
    }

    /// Queues `key` after its next back-off delay (it failed again).
    pub fn add_rate_limited(self: &Arc<Self>, key: T) {
        let attempt = {
            let mut s = self.state.lock();
            let n = s.failures.entry(key.clone()).or_insert(0);
            *n += 1;
            *n - 1
        };
        let delay = crate::backoff::jitter(self.backoff.step(attempt));
        self.add_after(key, delay);
    }

    /// Clears `key`'s failure count (it succeeded).
    pub fn forget(&self, key: &T) {
        self.state.lock().failures.remove(key);
    }

    /// How many times in a row `key` has failed.
    pub fn failures(&self, key: &T) -> u32 {
        self.state.lock().failures.get(key).copied().unwrap_or(0)
    }

    /// The next key to handle; `None` once the queue is shut down.
    pub async fn get(&self) -> Option<T> {
        loop {
            let notified = self.notify.notified();
            {
                let mut s = self.state.lock();
                if s.shut_down {
                    return None;
                }
                if let Some(k) = s.queue.pop_front() {
                    s.dirty.remove(&k);
                    s.processing.insert(k.clone());
                    return Some(k);
                }
            }
            notified.await;
        }
    }

    /// Marks `key` handled; if it was added meanwhile it is queued again.
    pub fn done(&self, key: &T) {
        let mut s = self.state.lock();
        s.processing.remove(key);
        if s.dirty.contains(key) {
            s.queue.push_back(key.clone());
            drop(s);
            self.notify.notify_one();
        }
    }

    /// Keys waiting.
    pub fn len(&self) -> usize {
        self.state.lock().queue.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stops handing out keys; workers finish what they hold.
    pub fn shut_down(&self) {
        self.state.lock().shut_down = true;
        self.notify.notify_waiters();
    }
}

/// What to do after a reconcile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Nothing until the object changes again.
    Done,
    /// Look again after this long (periodic checks, waiting on something else).
    RequeueAfter(Duration),
}

/// How a controller runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Reconciles running at once (never two for one key).
    pub concurrency: usize,
    /// Requeue delays after failures.
    pub backoff: Backoff,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            concurrency: 4,
            backoff: Backoff::new(Duration::from_millis(5), Duration::from_secs(1000)),
        }
    }
}

/// A controller over one resource: every change of an object queues its key, and workers
/// call `reconcile` with the key and the object's cached state (`None` once deleted).
pub struct Controller<K> {
    informer: Informer<K>,
    queue: Arc<WorkQueue<ObjectKey>>,
    config: Config,
}

impl<K: Resource> Controller<K> {
    /// A controller fed by `informer`.
    pub fn new(informer: Informer<K>, config: Config) -> Self {
        let queue = WorkQueue::new(config.backoff.clone());
        Controller {
            informer,
            queue,
            config,
        }
    }

    /// The queue, to add keys from other sources (owned objects, timers).
    pub fn queue(&self) -> Arc<WorkQueue<ObjectKey>> {
        self.queue.clone()
    }

    /// The informer's cache.
    pub fn store(&self) -> Store<K> {
        self.informer.store()
    }

    /// Like [`Controller::run`] for a controller with nothing to do about deleted objects:
    /// `reconcile` gets each object still in the cache, and a key whose object is gone is done.
    pub async fn run_present<F, Fut, E>(self, reconcile: F, shutdown: CancellationToken)
    where
        F: Fn(Arc<K>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Action, E>> + Send + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        let reconcile = Arc::new(reconcile);
        self.run(
            move |_, obj: Option<Arc<K>>| {
                let reconcile = reconcile.clone();
                async move {
                    match obj {
                        Some(o) => reconcile(o).await,
                        None => Ok(Action::Done),
                    }
                }
            },
            shutdown,
        )
        .await
    }

    /// Runs until `shutdown`, then lets running reconciles finish.
    pub async fn run<F, Fut, E>(self, reconcile: F, shutdown: CancellationToken)
    where
        F: Fn(ObjectKey, Option<Arc<K>>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Action, E>> + Send + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        let store = self.informer.store();
        let queue = self.queue.clone();
        let changes = self.informer.subscribe();
        let feed = {
            let queue = queue.clone();
            let store = store.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                futures::pin_mut!(changes);
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = store.wait_until_ready() => {}
                }
                for k in store.keys() {
                    queue.add(k);
                }
                loop {
                    let c = tokio::select! {
                        _ = shutdown.cancelled() => return,
                        c = changes.next() => c,
                    };
                    match c {
                        Some(Change::Applied(o)) | Some(Change::Deleted(o)) => {
                            queue.add(ObjectKey::of(o.as_ref()))
                        }
                        Some(Change::Resynced) => {
                            for k in store.keys() {
                                queue.add(k);
                            }
                        }
                        None => return,
                    }
                }
            })
        };
        let reconcile = Arc::new(reconcile);
        let resource: Arc<str> = self.informer.resource().into();
        let mut workers = Vec::new();
        for _ in 0..self.config.concurrency.max(1) {
            let queue = queue.clone();
            let store = store.clone();
            let reconcile = reconcile.clone();
            let resource = resource.clone();
            workers.push(tokio::spawn(async move {
                while let Some(key) = queue.get().await {
                    let obj = store.get(&key);
                    match reconcile(key.clone(), obj).await {
                        Ok(Action::Done) => queue.forget(&key),
                        Ok(Action::RequeueAfter(d)) => {
                            queue.forget(&key);
                            queue.add_after(key.clone(), d);
                        }
                        Err(e) => {
                            tracing::warn!(resource = &*resource, key = %key, error = %e, "reconcile failed; requeued");
                            queue.add_rate_limited(key.clone());
                        }
                    }
                    queue.done(&key);
                }
            }));
        }
        shutdown.cancelled().await;
        queue.shut_down();
        let _ = feed.await;
        for w in workers {
            let _ = w.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn deduplicates_and_never_hands_one_key_to_two_workers() {
        let q = WorkQueue::new(Backoff::default());
        q.add("a");
        q.add("a");
        q.add("b");
        assert_eq!(q.len(), 2);
        let first = q.get().await.unwrap();
        assert_eq!(first, "a");
        // Re-added while being handled: held back until done.
        q.add("a");
        assert_eq!(q.get().await, Some("b"));
        assert!(q.is_empty());
        q.done(&"a");
        assert_eq!(q.get().await, Some("a"));
        q.done(&"a");
        q.done(&"b");
        assert!(q.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn failures_back_off_and_forget_resets() {
        let q = WorkQueue::new(Backoff::new(
            Duration::from_millis(100),
            Duration::from_secs(10),
        ));
        q.add_rate_limited("k");
        q.add_rate_limited("k");
        assert_eq!(q.failures(&"k"), 2);
        assert!(q.is_empty());
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(q.get().await, Some("k"));
        q.forget(&"k");
        assert_eq!(q.failures(&"k"), 0);
    }

    #[tokio::test]
    async fn shut_down_wakes_waiting_workers() {
        let q: Arc<WorkQueue<u32>> = WorkQueue::new(Backoff::default());
        let q2 = q.clone();
        let w = tokio::spawn(async move { q2.get().await });
        tokio::task::yield_now().await;
        q.shut_down();
        assert_eq!(w.await.unwrap(), None);
        q.add(1);
        assert!(q.is_empty());
    }
}
