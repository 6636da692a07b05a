//! Prometheus metrics, served at `/metrics` in the text exposition format.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    verb: String,
    resource: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LatencyLabels {
    verb: String,
    resource: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EtcdLabels {
    operation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResourceLabels {
    resource: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginLabels {
    plugin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LevelLabels {
    level: String,
}

/// The audit levels, in the order of `Metrics::audit_levels`.
const AUDIT_LEVELS: [&str; 4] = ["None", "Metadata", "Request", "RequestResponse"];

/// The API server's metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<LatencyLabels, Histogram>,
    etcd_latency: Family<EtcdLabels, Histogram>,
    etcd_errors: Family<EtcdLabels, Counter>,
    watchers: Family<ResourceLabels, Gauge>,
    audit_events: Counter,
    audit_errors: Family<PluginLabels, Counter>,
    audit_levels: [Counter; 4],
    audit_rejected: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        Self::new_with(|_| {})
    }

    /// Registers every metric, and what `extra` adds (metrics other modules keep).
    pub fn new_with(extra: impl FnOnce(&mut Registry)) -> Self {
        let mut registry = Registry::default();
        extra(&mut registry);
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "apiserver_request",
            "Requests by verb, resource and HTTP code",
            requests.clone(),
        );
        let latency = Family::<LatencyLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        registry.register(
            "apiserver_request_duration_seconds",
            "Request latency by verb and resource (watches excluded)",
            latency.clone(),
        );
        let etcd_latency = Family::<EtcdLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 14))
        });
        registry.register(
            "etcd_request_duration_seconds",
            "etcd request latency by operation",
            etcd_latency.clone(),
        );
        let etcd_errors = Family::<EtcdLabels, Counter>::default();
        registry.register(
            "etcd_request_errors",
            "Failed etcd requests",
            etcd_errors.clone(),
        );
        let watchers = Family::<ResourceLabels, Gauge>::default();
        registry.register(
            "apiserver_registered_watchers",
            "Open client watches by resource",
            watchers.clone(),
        );
        // The audit metrics, named as kube-apiserver names them.
        let audit_events = Counter::default();
        registry.register(
            "apiserver_audit_event",
            "Counter of audit events generated and sent to the audit backend.",
            audit_events.clone(),
        );
        let audit_errors = Family::<PluginLabels, Counter>::default();
        registry.register(
            "apiserver_audit_error",
            "Counter of audit events that failed to be audited properly. Plugin identifies the plugin affected by the error.",
            audit_errors.clone(),
        );
        let levels = Family::<LevelLabels, Counter>::default();
        registry.register(
            "apiserver_audit_level",
            "Counter of policy levels for audit events (1 per request).",
            levels.clone(),
        );
        let audit_levels = AUDIT_LEVELS.map(|l| {
            levels
                .get_or_create(&LevelLabels {
                    level: l.to_string(),
                })
                .clone()
        });
        let audit_rejected = Counter::default();
        registry.register(
            "apiserver_audit_requests_rejected",
            "Counter of apiserver requests rejected due to an error in audit logging backend.",
            audit_rejected.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
            etcd_latency,
            etcd_errors,
            watchers,
            audit_events,
            audit_errors,
            audit_levels,
            audit_rejected,
        }
    }

    /// Counts one finished request.
    pub fn observe_request(&self, verb: &str, resource: &str, code: u16, took: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                verb: verb.to_string(),
                resource: resource.to_string(),
                code: code.to_string(),
            })
            .inc();
        if verb != "WATCH" {
            self.latency
                .get_or_create(&LatencyLabels {
                    verb: verb.into(),
                    resource: resource.into(),
                })
                .observe(took.as_secs_f64());
        }
    }

    /// Times one etcd request.
    pub fn observe_etcd(&self, operation: &str, took: Duration, ok: bool) {
        let labels = EtcdLabels {
            operation: operation.to_string(),
        };
        self.etcd_latency
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
        if !ok {
            self.etcd_errors.get_or_create(&labels).inc();
        }
    }

    /// A watch opened (+1) or closed (-1).
    pub fn watchers(&self, resource: &str, delta: i64) {
        self.watchers
            .get_or_create(&ResourceLabels {
                resource: resource.to_string(),
            })
            .inc_by(delta);
    }

    /// One audit event sent to the backend.
    pub fn audit_event(&self) {
        self.audit_events.inc();
    }

    /// `events` audit events lost in `plugin` (`log`, `buffered`, `truncate`).
    pub fn audit_error(&self, plugin: &str, events: u64) {
        self.audit_errors
            .get_or_create(&PluginLabels {
                plugin: plugin.to_string(),
            })
            .inc_by(events);
    }

    /// The audit level the policy gave one request (`None`, `Metadata`, ...).
    pub fn audit_level(&self, level: &str) {
        if let Some(i) = AUDIT_LEVELS.iter().position(|l| *l == level) {
            self.audit_levels[i].inc();
        }
    }

    /// A request refused because its audit event could not be written.
    pub fn audit_rejected(&self) {
        self.audit_rejected.inc();
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Counts one open client watch in `apiserver_registered_watchers` for as long as it lives.
pub struct WatchGauge {
    metrics: std::sync::Arc<Metrics>,
    resource: String,
}

impl WatchGauge {
    /// Counts a watch on `resource` until dropped.
    pub fn new(metrics: &std::sync::Arc<Metrics>, resource: &str) -> Self {
        metrics.watchers(resource, 1);
        WatchGauge {
            metrics: metrics.clone(),
            resource: resource.to_string(),
        }
    }
}

impl Drop for WatchGauge {
    fn drop(&mut self) {
        self.metrics.watchers(&self.resource, -1);
    }
}
