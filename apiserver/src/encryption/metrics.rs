//! Encryption at rest's metrics, under kube-apiserver's names: transformations by resource,
//! direction, provider prefix and outcome; KMS v2 calls, key ids (as hashes) and the data-key
//! cache; and the automatic reload of the configuration.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Transformation {
    resource: String,
    transformation_type: &'static str,
    transformer_prefix: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransformationLatency {
    transformation_type: &'static str,
    transformer_prefix: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KeyIdUse {
    transformation_type: &'static str,
    provider_name: String,
    key_id_hash: String,
    apiserver_id_hash: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KeyIdStatus {
    provider_name: String,
    key_id_hash: String,
    apiserver_id_hash: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KmsCall {
    provider_name: String,
    method_name: String,
    grpc_status_code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Provider {
    provider_name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reload {
    status: &'static str,
    apiserver_id_hash: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConfigInfo {
    apiserver_id_hash: String,
    hash: String,
}

/// `from_storage` (decryption) or `to_storage` (encryption).
pub const FROM_STORAGE: &str = "from_storage";
/// See [`FROM_STORAGE`].
pub const TO_STORAGE: &str = "to_storage";

/// The metrics, registered once into the server's registry.
pub struct Metrics {
    apiserver_id_hash: String,
    /// Key ids' hashes, so that each value read or written does not hash its key id again.
    key_id_hashes: parking_lot::Mutex<std::collections::HashMap<String, String>>,
    transformations: Family<Transformation, Counter>,
    transformation_latency: Family<TransformationLatency, Histogram>,
    cache_misses: Counter,
    key_generation: Histogram,
    key_generation_failures: Counter,
    key_id_total: Family<KeyIdUse, Counter>,
    key_id_last: Family<KeyIdUse, Gauge<f64, std::sync::atomic::AtomicU64>>,
    key_id_status_last: Family<KeyIdStatus, Gauge<f64, std::sync::atomic::AtomicU64>>,
    kms_latency: Family<KmsCall, Histogram>,
    dek_cache_size: Family<Provider, Gauge>,
    dek_cache_fill: Gauge<f64, std::sync::atomic::AtomicU64>,
    reloads: Family<Reload, Counter>,
    reload_last: Family<Reload, Gauge<f64, std::sync::atomic::AtomicU64>>,
    config_info: Family<ConfigInfo, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// `sha256:HEX` of a string (key ids and the server's identity are only ever shown hashed).
pub fn hash(s: &str) -> String {
    if s.is_empty() {
        return String::new();
    }
    super::config::content_hash(s.as_bytes())
}

fn now_seconds() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl Metrics {
    /// Fresh metrics, labelled with a new identity for this server (`apiserver-UUID`).
    pub fn new() -> Self {
        let id = format!("apiserver-{}", uuid::Uuid::new_v4());
        Metrics {
            apiserver_id_hash: hash(&id),
            key_id_hashes: Default::default(),
            transformations: Family::default(),
            transformation_latency: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(5e-6, 2.0, 25))
            }),
            cache_misses: Counter::default(),
            key_generation: Histogram::new(exponential_buckets(5e-6, 2.0, 14)),
            key_generation_failures: Counter::default(),
            key_id_total: Family::default(),
            key_id_last: Family::default(),
            key_id_status_last: Family::default(),
            kms_latency: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0001, 2.0, 15))
            }),
            dek_cache_size: Family::default(),
            dek_cache_fill: Gauge::default(),
            reloads: Family::default(),
            reload_last: Family::default(),
            config_info: Family::default(),
        }
    }

    /// Adds every metric to `r`.
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "apiserver_storage_transformation_operations",
            "Total number of transformations (from_storage: decryption, to_storage: encryption), by resource, provider prefix and status (OK, or why it failed)",
            self.transformations.clone(),
        );
        r.register(
            "apiserver_storage_transformation_duration_seconds",
            "Latencies in seconds of value transformation operations",
            self.transformation_latency.clone(),
        );
        r.register(
            "apiserver_storage_envelope_transformation_cache_misses",
            "Total number of cache misses while accessing key decryption key(KEK)",
            self.cache_misses.clone(),
        );
        r.register(
            "apiserver_storage_data_key_generation_duration_seconds",
            "Latencies in seconds of data encryption key(DEK) generation operations",
            self.key_generation.clone(),
        );
        r.register(
            "apiserver_storage_data_key_generation_failures",
            "Total number of failed data encryption key(DEK) generation operations",
            self.key_generation_failures.clone(),
        );
        r.register(
            "apiserver_envelope_encryption_key_id_hash",
            "Number of times a keyID is used split by transformation type, provider, and apiserver identity",
            self.key_id_total.clone(),
        );
        r.register(
            "apiserver_envelope_encryption_key_id_hash_last_timestamp_seconds",
            "The last time in seconds when a keyID was used",
            self.key_id_last.clone(),
        );
        r.register(
            "apiserver_envelope_encryption_key_id_hash_status_last_timestamp_seconds",
            "The last time in seconds when a keyID was returned by the Status RPC call",
            self.key_id_status_last.clone(),
        );
        r.register(
            "apiserver_envelope_encryption_kms_operations_latency_seconds",
            "KMS operation duration with gRPC error code status total",
            self.kms_latency.clone(),
        );
        r.register(
            "apiserver_envelope_encryption_dek_source_cache_size",
            "Number of records in data encryption key (DEK) source cache",
            self.dek_cache_size.clone(),
        );
        r.register(
            "apiserver_envelope_encryption_dek_cache_fill_percent",
            "Percent of the cache slots currently occupied by cached DEKs",
            self.dek_cache_fill.clone(),
        );
        r.register(
            "apiserver_encryption_config_controller_automatic_reloads",
            "Total number of reload successes and failures of encryption configuration split by apiserver identity",
            self.reloads.clone(),
        );
        r.register(
            "apiserver_encryption_config_controller_automatic_reload_last_timestamp_seconds",
            "Timestamp of the last successful or failed automatic reload of encryption configuration split by apiserver identity",
            self.reload_last.clone(),
        );
        r.register(
            "apiserver_encryption_config_controller_last_config",
            "Information about the last applied encryption configuration with hash as label, split by apiserver identity",
            self.config_info.clone(),
        );
    }

    /// One transformation: `status` is `OK` or why it failed.
    pub fn transformation(
        &self,
        resource: &str,
        kind: &'static str,
        prefix: &str,
        took: Duration,
        status: &str,
    ) {
        let prefix = if prefix.is_empty() {
            "identity"
        } else {
            prefix
        };
        self.transformations
            .get_or_create(&Transformation {
                resource: resource.to_string(),
                transformation_type: kind,
                transformer_prefix: prefix.to_string(),
                status: status.to_string(),
            })
            .inc();
        if status == "OK" {
            self.transformation_latency
                .get_or_create(&TransformationLatency {
                    transformation_type: kind,
                    transformer_prefix: prefix.to_string(),
                })
                .observe(took.as_secs_f64());
        }
    }

    /// A data key the cache did not have.
    pub fn cache_miss(&self) {
        self.cache_misses.inc();
    }

    /// A data key generated (or not).
    pub fn key_generation(&self, took: Duration, ok: bool) {
        if ok {
            self.key_generation.observe(took.as_secs_f64());
        } else {
            self.key_generation_failures.inc();
        }
    }

    fn key_id_hash(&self, key_id: &str) -> String {
        let mut cache = self.key_id_hashes.lock();
        if let Some(h) = cache.get(key_id) {
            return h.clone();
        }
        if cache.len() >= 1024 {
            cache.clear();
        }
        let h = hash(key_id);
        cache.insert(key_id.to_string(), h.clone());
        h
    }

    /// A value written or read under a KMS key id.
    pub fn key_id_used(&self, kind: &'static str, provider: &str, key_id: &str) {
        let labels = KeyIdUse {
            transformation_type: kind,
            provider_name: provider.to_string(),
            key_id_hash: self.key_id_hash(key_id),
            apiserver_id_hash: self.apiserver_id_hash.clone(),
        };
        self.key_id_total.get_or_create(&labels).inc();
        self.key_id_last.get_or_create(&labels).set(now_seconds());
    }

    /// A key id a plugin's Status answered.
    pub fn key_id_status(&self, provider: &str, key_id: &str) {
        self.key_id_status_last
            .get_or_create(&KeyIdStatus {
                provider_name: provider.to_string(),
                key_id_hash: hash(key_id),
                apiserver_id_hash: self.apiserver_id_hash.clone(),
            })
            .set(now_seconds());
    }

    /// One call to a plugin (`code`: the gRPC status code's name).
    pub fn kms_call(&self, provider: &str, method: &str, took: Duration, code: &str) {
        self.kms_latency
            .get_or_create(&KmsCall {
                provider_name: provider.to_string(),
                method_name: method.to_string(),
                grpc_status_code: code.to_string(),
            })
            .observe(took.as_secs_f64());
    }

    /// How many data keys a provider's cache holds, out of `capacity`.
    pub fn dek_cache(&self, provider: &str, size: usize, capacity: usize) {
        self.dek_cache_size
            .get_or_create(&Provider {
                provider_name: provider.to_string(),
            })
            .set(size as i64);
        self.dek_cache_fill
            .set(100.0 * size as f64 / capacity.max(1) as f64);
    }

    /// An automatic reload that succeeded (with the new file's hash) or failed.
    pub fn reload(&self, ok: bool, config_hash: Option<&str>) {
        let status = if ok { "success" } else { "failure" };
        let labels = Reload {
            status,
            apiserver_id_hash: self.apiserver_id_hash.clone(),
        };
        self.reloads.get_or_create(&labels).inc();
        self.reload_last.get_or_create(&labels).set(now_seconds());
        if let Some(h) = config_hash {
            self.config_loaded(h);
        }
    }

    /// The configuration in force has this hash.
    pub fn config_loaded(&self, config_hash: &str) {
        self.config_info.clear();
        self.config_info
            .get_or_create(&ConfigInfo {
                apiserver_id_hash: self.apiserver_id_hash.clone(),
                hash: config_hash.to_string(),
            })
            .set(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_kubernetes_own() {
        let m = Metrics::new();
        let mut r = Registry::default();
        m.register(&mut r);
        m.transformation(
            "secrets",
            TO_STORAGE,
            "k8s:enc:kms:v2:a:",
            Duration::ZERO,
            "OK",
        );
        m.reload(false, None);
        m.key_id_used(FROM_STORAGE, "a", "key-1");
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &r).unwrap();
        for name in [
            "apiserver_storage_transformation_operations_total{resource=\"secrets\",transformation_type=\"to_storage\",transformer_prefix=\"k8s:enc:kms:v2:a:\",status=\"OK\"} 1",
            "apiserver_encryption_config_controller_automatic_reloads_total{status=\"failure\"",
            "apiserver_envelope_encryption_key_id_hash_total{transformation_type=\"from_storage\",provider_name=\"a\",key_id_hash=\"sha256:",
        ] {
            assert!(text.contains(name), "{name} missing from\n{text}");
        }
        assert!(!text.contains("key-1"), "key ids are shown hashed");
    }
}
