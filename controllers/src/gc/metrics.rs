//! The collector's Prometheus metrics, named as kube-controller-manager names them:
//! `garbagecollector_controller_resources_sync_error_total`, and the work-queue metrics of its
//! two queues (`workqueue_adds_total`, `workqueue_retries_total`, `workqueue_depth`, labelled
//! `name="garbage_collector_attempt_to_delete"` and `"garbage_collector_attempt_to_orphan"`).
//! One set per process, as Kubernetes registers them once ([`register`]).

use std::hash::Hash;
use std::sync::{Arc, LazyLock};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use skiff_client::controller::WorkQueue;

/// The attempt-to-delete queue's name.
pub const ATTEMPT_TO_DELETE: &str = "garbage_collector_attempt_to_delete";
/// The attempt-to-orphan queue's name.
pub const ATTEMPT_TO_ORPHAN: &str = "garbage_collector_attempt_to_orphan";

/// Which queue.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    /// The queue's name.
    pub name: String,
}

/// The metrics.
#[derive(Default)]
pub struct Metrics {
    /// `garbagecollector_controller_resources_sync_error_total`: kinds that could not be
    /// listed within the sync period.
    pub resources_sync_error: Counter,
    /// `workqueue_adds_total`.
    pub adds: Family<QueueLabels, Counter>,
    /// `workqueue_retries_total`.
    pub retries: Family<QueueLabels, Counter>,
    /// `workqueue_depth`.
    pub depth: Family<QueueLabels, Gauge>,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::default);

/// The process's collector metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

/// Registers the collector's metrics (and creates both queues' series, so they show from
/// the start).
pub fn register(r: &mut Registry) {
    let m = metrics();
    for name in [ATTEMPT_TO_DELETE, ATTEMPT_TO_ORPHAN] {
        let l = QueueLabels { name: name.into() };
        let _ = m.adds.get_or_create(&l);
        let _ = m.retries.get_or_create(&l);
        let _ = m.depth.get_or_create(&l);
    }
    r.register(
        "garbagecollector_controller_resources_sync_error",
        "Number of garbage collector resources sync errors",
        m.resources_sync_error.clone(),
    );
    r.register(
        "workqueue_adds",
        "Total number of adds handled by workqueue",
        m.adds.clone(),
    );
    r.register(
        "workqueue_retries",
        "Total number of retries handled by workqueue",
        m.retries.clone(),
    );
    r.register(
        "workqueue_depth",
        "Current depth of workqueue",
        m.depth.clone(),
    );
}

/// A work queue that counts what goes through it.
pub struct Queue<T> {
    inner: Arc<WorkQueue<T>>,
    adds: Counter,
    retries: Counter,
    depth: Gauge,
}

impl<T: Clone + Eq + Hash + Send + Sync + 'static> Queue<T> {
    /// `inner`, counted as `name`.
    pub fn new(name: &str, inner: Arc<WorkQueue<T>>) -> Queue<T> {
        let m = metrics();
        let l = QueueLabels { name: name.into() };
        Queue {
            inner,
            adds: m.adds.get_or_create(&l).clone(),
            retries: m.retries.get_or_create(&l).clone(),
            depth: m.depth.get_or_create(&l).clone(),
        }
    }

    fn measure(&self) {
        self.depth.set(self.inner.len() as i64);
    }

    /// Queues `key` unless it is already waiting.
    pub fn add(&self, key: T) {
        self.inner.add(key);
        self.measure();
    }

    /// Queues `key` after its next back-off delay.
    pub fn add_rate_limited(&self, key: T) {
        self.retries.inc();
        self.inner.add_rate_limited(key);
    }

    /// Queues `key` after `delay`.
    pub fn add_after(&self, key: T, delay: std::time::Duration) {
        self.retries.inc();
        self.inner.add_after(key, delay);
    }

    /// The next key; `None` once shut down. Each key taken was added once: that is what
    /// `workqueue_adds_total` counts.
    pub async fn get(&self) -> Option<T> {
        let key = self.inner.get().await;
        if key.is_some() {
            self.adds.inc();
        }
        self.measure();
        key
    }

    /// Marks `key` handled.
    pub fn done(&self, key: &T) {
        self.inner.done(key);
        self.measure();
    }

    /// Clears `key`'s failures.
    pub fn forget(&self, key: &T) {
        self.inner.forget(key);
    }

    /// Stops handing out keys.
    pub fn shut_down(&self) {
        self.inner.shut_down();
    }
}
