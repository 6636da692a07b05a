//! The scheduler's Prometheus metrics, named as kube-scheduler names them.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// `result` and `profile` of a scheduling attempt.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AttemptLabels {
    /// `scheduled`, `unschedulable` or `error`.
    pub result: String,
    /// The profile's scheduler name.
    pub profile: String,
}

/// Which part of the queue.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    /// `active`, `backoff` or `unschedulable`.
    pub queue: String,
}

/// The metrics.
pub struct Metrics {
    /// `scheduler_schedule_attempts_total`.
    pub attempts: Family<AttemptLabels, Counter>,
    /// `scheduler_scheduling_attempt_duration_seconds`.
    pub attempt_duration: Histogram,
    /// `scheduler_pending_pods`.
    pub pending: Family<QueueLabels, Gauge>,
    /// `scheduler_preemption_attempts_total`.
    pub preemptions: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            attempts: Family::default(),
            attempt_duration: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            pending: Family::default(),
            preemptions: Counter::default(),
        }
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "scheduler_schedule_attempts",
            "Scheduling attempts by result and profile",
            self.attempts.clone(),
        );
        r.register(
            "scheduler_scheduling_attempt_duration_seconds",
            "How long one scheduling decision took (no API I/O)",
            self.attempt_duration.clone(),
        );
        r.register(
            "scheduler_pending_pods",
            "Pending pods by queue",
            self.pending.clone(),
        );
        r.register(
            "scheduler_preemption_attempts",
            "Preemptions started",
            self.preemptions.clone(),
        );
    }

    /// Counts one attempt.
    pub fn attempt(&self, result: &str, profile: &str, took: std::time::Duration) {
        self.attempts
            .get_or_create(&AttemptLabels {
                result: result.into(),
                profile: profile.into(),
            })
            .inc();
        self.attempt_duration.observe(took.as_secs_f64());
    }

    /// Sets the queue sizes.
    pub fn queue(&self, active: usize, backoff: usize, unschedulable: usize) {
        for (q, n) in [
            ("active", active),
            ("backoff", backoff),
            ("unschedulable", unschedulable),
        ] {
            self.pending
                .get_or_create(&QueueLabels { queue: q.into() })
                .set(n as i64);
        }
    }
}
