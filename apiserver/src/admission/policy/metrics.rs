//! `apiserver_validating_admission_policy_check_total` and `_check_duration_seconds`, with
//! Kubernetes' labels (`policy`, `policy_binding`, `error_type`, `enforcement_action`) and
//! buckets.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Labels {
    policy: String,
    policy_binding: String,
    error_type: String,
    enforcement_action: String,
}

/// The policy check metrics of this process (as Kubernetes', which live in its global
/// registry): every policy plugin counts into them.
pub fn global() -> std::sync::Arc<Metrics> {
    static METRICS: std::sync::LazyLock<std::sync::Arc<Metrics>> =
        std::sync::LazyLock::new(Default::default);
    METRICS.clone()
}

/// The policy check metrics.
pub struct Metrics {
    checks: Family<Labels, Counter>,
    latency: Family<Labels, Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            checks: Family::default(),
            latency: Family::new_with_constructor(|| {
                Histogram::new([0.0000005, 0.001, 0.01, 0.1, 1.0])
            }),
        }
    }
}

/// What was done with a check (`enforcement_action`).
#[derive(Debug, Clone, Copy)]
pub enum Enforcement {
    /// Admitted (an error the failurePolicy ignored).
    Allow,
    /// Refused.
    Deny,
    /// An audit annotation was written.
    Audit,
    /// A warning was sent.
    Warn,
}

impl Metrics {
    /// Adds the metrics to `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "apiserver_validating_admission_policy_check",
            "Validation admission policy check total, labeled by policy and further identified by binding and enforcement action taken.",
            self.checks.clone(),
        );
        registry.register(
            "apiserver_validating_admission_policy_check_duration_seconds",
            "Validation admission latency for individual validation expressions in seconds, labeled by policy and further including binding and enforcement action taken.",
            self.latency.clone(),
        );
    }

    /// Counts one check.
    pub fn observe(
        &self,
        policy: &str,
        binding: &str,
        error_type: &str,
        action: Enforcement,
        took: Duration,
    ) {
        let labels = Labels {
            policy: policy.to_owned(),
            policy_binding: binding.to_owned(),
            error_type: error_type.to_owned(),
            enforcement_action: match action {
                Enforcement::Allow => "allow",
                Enforcement::Deny => "deny",
                Enforcement::Audit => "audit",
                Enforcement::Warn => "warn",
            }
            .to_owned(),
        };
        self.checks.get_or_create(&labels).inc();
        self.latency
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_with_kubernetes_names_and_labels() {
        let m = Metrics::default();
        let mut r = Registry::default();
        m.register(&mut r);
        m.observe(
            "p",
            "b",
            "no_error",
            Enforcement::Deny,
            Duration::from_millis(2),
        );
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &r).unwrap();
        assert!(out.contains(
            "apiserver_validating_admission_policy_check_total{policy=\"p\",policy_binding=\"b\",error_type=\"no_error\",enforcement_action=\"deny\"} 1"
        ), "{out}");
        assert!(out.contains("apiserver_validating_admission_policy_check_duration_seconds_bucket{le=\"0.01\",policy=\"p\""), "{out}");
    }
}
