//! The proxy's Prometheus metrics, named as kube-proxy names them where it has them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::proxier::Error;
use crate::proxier::Sync;

/// What the proxy reports.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// `kubeproxy_sync_proxy_rules_duration_seconds`: every sync, build and kernel.
    pub sync_duration: Histogram,
    /// `kubeproxy_sync_full_proxy_rules_duration_seconds`: full syncs.
    pub full_sync_duration: Histogram,
    /// `kubeproxy_sync_proxy_rules_last_timestamp_seconds`: the last successful sync.
    pub last_sync: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// `skiff_proxy_rules`: rules in the table.
    pub rules: Gauge,
    /// `skiff_proxy_set_elements`: elements of the table's sets and maps.
    pub elements: Gauge,
    /// `skiff_proxy_sync_failures_total`.
    pub failures: Counter,
    /// Whether the last sync succeeded (`/healthz`).
    pub healthy: Arc<AtomicBool>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            sync_duration: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            full_sync_duration: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            last_sync: Gauge::default(),
            rules: Gauge::default(),
            elements: Gauge::default(),
            failures: Counter::default(),
            healthy: Arc::new(AtomicBool::new(false)),
        }
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "kubeproxy_sync_proxy_rules_duration_seconds",
            "Time to work out and apply the rules, per sync",
            self.sync_duration.clone(),
        );
        r.register(
            "kubeproxy_sync_full_proxy_rules_duration_seconds",
            "Time to work out and apply the whole table",
            self.full_sync_duration.clone(),
        );
        r.register(
            "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
            "When the rules were last applied (Unix time)",
            self.last_sync.clone(),
        );
        r.register(
            "skiff_proxy_rules",
            "Rules in the table",
            self.rules.clone(),
        );
        r.register(
            "skiff_proxy_set_elements",
            "Elements of the table's sets and maps",
            self.elements.clone(),
        );
        r.register(
            "skiff_proxy_sync_failures",
            "Syncs the kernel refused",
            self.failures.clone(),
        );
    }

    /// Records one sync.
    pub fn observe(&self, result: &Result<Sync, Error>) {
        match result {
            Ok(s) => {
                let secs = (s.build + s.kernel).as_secs_f64();
                self.sync_duration.observe(secs);
                if s.full {
                    self.full_sync_duration.observe(secs);
                }
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                self.last_sync.set(now.as_secs_f64());
                self.rules.set(s.rules as i64);
                self.elements.set(s.elements as i64);
                self.healthy.store(true, Ordering::Relaxed);
            }
            Err(_) => {
                self.failures.inc();
                self.healthy.store(false, Ordering::Relaxed);
            }
        }
    }
}
