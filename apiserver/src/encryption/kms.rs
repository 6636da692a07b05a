//! The KMS v2 provider: envelope encryption as kube-apiserver does it.
//!
//! The server generates a data key (a 32-byte seed; each value derives its own AES-256-GCM key
//! from it with HKDF and 32 random bytes stored beside it), has the plugin encrypt the seed
//! once, and encrypts every write locally with it: a write costs no call to the plugin. A
//! value is stored as `k8s:enc:kms:v2:NAME:` and a protobuf `EncryptedObject` — the encrypted
//! data, the key id, the encrypted seed, the plugin's annotations and the seed's type —
//! byte for byte the shape kube-apiserver writes.
//!
//! The plugin's `Status` is polled (every [`HEALTHY_POLL`], every [`UNHEALTHY_POLL`] while it
//! fails; kube-apiserver polls every minute and every 10 s). When its key id changes, a new
//! seed is generated and encrypted under the new key; values under the old id read as stale.
//! Decrypted seeds are cached by their encrypted form (bounded), so a value whose seed is
//! cached reads without the plugin. Writes need a plugin that answered its last `Status`:
//! unlike kube-apiserver, which keeps writing with its current seed for up to three minutes of
//! plugin failure, a plugin seen down stops writes at once.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use prost::Message;
use skiff_proto::kms as pb;

use super::cipher::{DataKey, Gcm};
use super::metrics::{Metrics, FROM_STORAGE, TO_STORAGE};

/// How often a healthy plugin's `Status` is asked.
pub const HEALTHY_POLL: Duration = Duration::from_secs(5);
/// How often a failing plugin's `Status` is asked.
pub const UNHEALTHY_POLL: Duration = Duration::from_secs(1);
/// How long a health answer is reused before `Status` is asked again (ok / failed).
const CHECK_TTL_OK: Duration = Duration::from_secs(2);
const CHECK_TTL_FAILED: Duration = Duration::from_millis(500);
/// Decrypted data keys kept per provider.
pub const DEK_CACHE_CAPACITY: usize = 4096;
/// The stored value's prefix before the provider's name.
pub const PREFIX: &str = "k8s:enc:kms:v2:";

const KEY_ID_MAX: usize = 1024;
const DEK_SOURCE_MAX: usize = 1024;
const ANNOTATIONS_MAX: usize = 32 * 1024;

/// `EncryptedDEKSourceType`: the seed or key's plaintext is an AES-GCM key.
pub const AES_GCM_KEY: i32 = 0;
/// `EncryptedDEKSourceType`: the plaintext is an HKDF-SHA256 seed.
pub const HKDF_SHA256_XNONCE_AES_GCM_SEED: i32 = 1;

/// Kubernetes' `EncryptedObject` (`k8s.io/apiserver/pkg/storage/value/encrypt/envelope/kmsv2/v2`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct EncryptedObject {
    /// The value encrypted with the data key.
    #[prost(bytes = "vec", tag = "1")]
    pub encrypted_data: Vec<u8>,
    /// The id of the plugin's key that encrypted the data key.
    #[prost(string, tag = "2")]
    pub key_id: String,
    /// The data key (or seed), encrypted by the plugin.
    #[prost(bytes = "vec", tag = "3")]
    pub encrypted_dek_source: Vec<u8>,
    /// The plugin's annotations.
    #[prost(btree_map = "string, bytes", tag = "4")]
    pub annotations: BTreeMap<String, Vec<u8>>,
    /// What the data key's plaintext is.
    #[prost(int32, tag = "5")]
    pub encrypted_dek_source_type: i32,
}

/// Why a KMS operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum KmsError {
    /// A call to the plugin failed (`rpc error: code = … desc = …`, as Go's gRPC prints it).
    #[error("rpc error: code = {code} desc = {message}")]
    Rpc {
        /// The gRPC code's name.
        code: String,
        /// The plugin's message.
        message: String,
    },
    /// The provider may not write now.
    #[error("kms provider {name:?} is unavailable: {reason}")]
    Unavailable {
        /// The provider.
        name: String,
        /// Its last health failure.
        reason: String,
    },
    /// A stored value or a plugin's answer broke the format's rules.
    #[error("{0}")]
    Invalid(String),
    /// The data key could not open (or seal) the value.
    #[error(transparent)]
    Cipher(#[from] super::cipher::CipherError),
}

impl KmsError {
    /// The gRPC code, or `unknown-non-grpc`, as the metrics label it.
    pub fn code(&self) -> &str {
        match self {
            KmsError::Rpc { code, .. } => code,
            _ => "unknown-non-grpc",
        }
    }
}

/// A plugin's answers, as the provider needs them: behind a trait so that the provider's
/// logic can be tested with a recording fake.
#[async_trait::async_trait]
pub trait KmsService: Send + Sync {
    /// `Status`.
    async fn status(&self) -> Result<pb::StatusResponse, KmsError>;
    /// `Encrypt`.
    async fn encrypt(&self, uid: &str, plaintext: &[u8]) -> Result<pb::EncryptResponse, KmsError>;
    /// `Decrypt`.
    async fn decrypt(&self, uid: &str, req: &EncryptedObject) -> Result<Vec<u8>, KmsError>;
}

/// The plugin over its unix socket (gRPC, with the configured timeout per call).
pub struct GrpcKms {
    client:
        pb::key_management_service_client::KeyManagementServiceClient<tonic::transport::Channel>,
    timeout: Duration,
    name: String,
    metrics: Arc<Metrics>,
}

impl GrpcKms {
    /// A client of the socket at `path`; it connects on first use and again after failures,
    /// so the plugin may start after the server.
    pub fn new(
        path: &str,
        timeout: Duration,
        name: &str,
        metrics: Arc<Metrics>,
    ) -> Result<Self, KmsError> {
        let path = std::path::PathBuf::from(path);
        let endpoint = tonic::transport::Endpoint::from_static("http://localhost")
            .connect_timeout(timeout)
            .timeout(timeout);
        let channel =
            endpoint.connect_with_connector_lazy(tower::service_fn(move |_: http::Uri| {
                let path = path.clone();
                async move {
                    let stream = tokio::net::UnixStream::connect(path).await?;
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
                }
            }));
        Ok(GrpcKms {
            client: pb::key_management_service_client::KeyManagementServiceClient::new(channel),
            timeout,
            name: name.to_string(),
            metrics,
        })
    }

    async fn call<T>(
        &self,
        method: &str,
        f: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, KmsError> {
        let start = Instant::now();
        let r = match tokio::time::timeout(self.timeout, f).await {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(s)) => Err(KmsError::Rpc {
                code: format!("{:?}", s.code()),
                message: s.message().to_string(),
            }),
            Err(_) => Err(KmsError::Rpc {
                code: "DeadlineExceeded".into(),
                message: "context deadline exceeded".into(),
            }),
        };
        let code = match &r {
            Ok(_) => "OK",
            Err(e) => e.code(),
        };
        self.metrics.kms_call(
            &self.name,
            &format!("/v2.KeyManagementService/{method}"),
            start.elapsed(),
            code,
        );
        r
    }
}

#[async_trait::async_trait]
impl KmsService for GrpcKms {
    async fn status(&self) -> Result<pb::StatusResponse, KmsError> {
        let mut c = self.client.clone();
        self.call("Status", c.status(pb::StatusRequest {})).await
    }

    async fn encrypt(&self, uid: &str, plaintext: &[u8]) -> Result<pb::EncryptResponse, KmsError> {
        let mut c = self.client.clone();
        let req = pb::EncryptRequest {
            plaintext: plaintext.to_vec(),
            uid: uid.to_string(),
        };
        self.call("Encrypt", c.encrypt(req)).await
    }

    async fn decrypt(&self, uid: &str, o: &EncryptedObject) -> Result<Vec<u8>, KmsError> {
        let mut c = self.client.clone();
        let req = pb::DecryptRequest {
            ciphertext: o.encrypted_dek_source.clone(),
            uid: uid.to_string(),
            key_id: o.key_id.clone(),
            annotations: o.annotations.clone().into_iter().collect(),
        };
        self.call("Decrypt", c.decrypt(req))
            .await
            .map(|r| r.plaintext)
    }
}

/// The data key writes use, and what is stored beside each value it encrypts.
struct WriteKey {
    key: DataKey,
    key_id: String,
    encrypted_dek_source: Vec<u8>,
    annotations: BTreeMap<String, Vec<u8>>,
    source_type: i32,
}

/// The last health answer.
#[derive(Clone)]
struct Checked {
    at: Instant,
    result: Result<(), String>,
}

/// Decrypted data keys by their cache key, least recently used evicted.
struct DekCache {
    map: HashMap<Vec<u8>, (Arc<DataKey>, u64)>,
    tick: u64,
    capacity: usize,
}

impl DekCache {
    fn get(&mut self, k: &[u8]) -> Option<Arc<DataKey>> {
        self.tick += 1;
        let tick = self.tick;
        self.map.get_mut(k).map(|e| {
            e.1 = tick;
            e.0.clone()
        })
    }

    fn insert(&mut self, k: Vec<u8>, v: Arc<DataKey>) {
        self.tick += 1;
        if self.map.len() >= self.capacity && !self.map.contains_key(&k) {
            if let Some(oldest) = self
                .map
                .iter()
                .min_by_key(|(_, (_, t))| *t)
                .map(|(k, _)| k.clone())
            {
                self.map.remove(&oldest);
            }
        }
        self.map.insert(k, (v, self.tick));
    }
}

/// One configured `kms` provider (`apiVersion: v2`).
pub struct KmsProvider {
    name: String,
    prefix: String,
    service: Arc<dyn KmsService>,
    write: RwLock<Option<Arc<WriteKey>>>,
    checked: RwLock<Option<Checked>>,
    cache: Mutex<DekCache>,
    metrics: Arc<Metrics>,
    /// What identifies the configuration it was built from (name, endpoint, timeout), so that a
    /// reload keeping the same provider keeps its keys.
    pub(super) identity: String,
}

/// The cache key of a data key: type, encrypted source, key id and annotations, each
/// length-prefixed (Kubernetes' `generateCacheKey` layout).
fn cache_key(
    source_type: i32,
    source: &[u8],
    key_id: &str,
    annotations: &BTreeMap<String, Vec<u8>>,
) -> Vec<u8> {
    let mut b = Vec::with_capacity(8 + source.len() + key_id.len());
    b.extend_from_slice(&(source_type as u32).to_be_bytes());
    for part in [source, key_id.as_bytes()] {
        b.extend_from_slice(&(part.len() as u16).to_be_bytes());
        b.extend_from_slice(part);
    }
    if !annotations.is_empty() {
        b.extend_from_slice(&(annotations.len() as u32).to_be_bytes());
        for (k, v) in annotations {
            for part in [k.as_bytes(), v.as_slice()] {
                b.extend_from_slice(&(part.len() as u16).to_be_bytes());
                b.extend_from_slice(part);
            }
        }
    }
    b
}

/// The rules Kubernetes holds an `EncryptedObject` to, on write and on read.
fn validate(o: &EncryptedObject) -> Result<(), KmsError> {
    let bad = |s: String| Err(KmsError::Invalid(s));
    if o.encrypted_dek_source_type != AES_GCM_KEY
        && o.encrypted_dek_source_type != HKDF_SHA256_XNONCE_AES_GCM_SEED
    {
        return bad(format!(
            "unknown encryptedDEKSourceType: {}",
            o.encrypted_dek_source_type
        ));
    }
    if o.encrypted_data.is_empty() {
        return bad("encrypted data is empty".into());
    }
    validate_answer(&o.key_id, &o.encrypted_dek_source, &o.annotations)
}

fn validate_key_id(key_id: &str) -> Result<(), KmsError> {
    if key_id.is_empty() {
        return Err(KmsError::Invalid(
            "failed to validate key id: keyID is empty".into(),
        ));
    }
    if key_id.len() > KEY_ID_MAX {
        return Err(KmsError::Invalid(format!(
            "failed to validate key id: keyID is {} bytes, which exceeds the max size of {KEY_ID_MAX}",
            key_id.len()
        )));
    }
    Ok(())
}

fn validate_answer(
    key_id: &str,
    source: &[u8],
    annotations: &BTreeMap<String, Vec<u8>>,
) -> Result<(), KmsError> {
    let bad = |s: String| Err(KmsError::Invalid(s));
    if source.is_empty() {
        return bad(
            "failed to validate encrypted DEK source: encrypted DEK source is empty".into(),
        );
    }
    if source.len() > DEK_SOURCE_MAX {
        return bad(format!("failed to validate encrypted DEK source: encrypted DEK source is {} bytes, which exceeds the max size of {DEK_SOURCE_MAX}", source.len()));
    }
    validate_key_id(key_id)?;
    let mut total = 0;
    for (k, v) in annotations {
        if !is_dns_subdomain(k) {
            return bad(format!("failed to validate annotations: annotations: Invalid value: {k:?}: should be a domain with at least two segments separated by dots"));
        }
        total += k.len() + v.len();
    }
    if total > ANNOTATIONS_MAX {
        return bad(format!("failed to validate annotations: total size of annotations is {total}, which exceeds the max size of {ANNOTATIONS_MAX}"));
    }
    Ok(())
}

fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').count() >= 2
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

impl KmsProvider {
    /// A provider named `name` over `service`; it has no data key until its first check.
    pub fn new(
        name: &str,
        service: Arc<dyn KmsService>,
        metrics: Arc<Metrics>,
        identity: String,
    ) -> Self {
        KmsProvider {
            name: name.to_string(),
            prefix: format!("{PREFIX}{name}:"),
            service,
            write: RwLock::new(None),
            checked: RwLock::new(None),
            cache: Mutex::new(DekCache {
                map: HashMap::new(),
                tick: 0,
                capacity: DEK_CACHE_CAPACITY,
            }),
            metrics,
            identity,
        }
    }

    /// The provider's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `k8s:enc:kms:v2:NAME:`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The key id writes use now, if any.
    pub fn key_id(&self) -> Option<String> {
        self.write.read().as_ref().map(|w| w.key_id.clone())
    }

    /// Whether the plugin is healthy: the last answer if recent, else a fresh `Status` (which
    /// also moves writes to a new data key when the plugin's key id changed).
    pub async fn check(&self) -> Result<(), String> {
        if let Some(c) = self.checked.read().clone() {
            let ttl = if c.result.is_ok() {
                CHECK_TTL_OK
            } else {
                CHECK_TTL_FAILED
            };
            if c.at.elapsed() < ttl {
                return c.result;
            }
        }
        self.probe().await
    }

    /// Asks the plugin's `Status` now.
    pub async fn probe(&self) -> Result<(), String> {
        let result = match self.service.status().await {
            Err(e) => Err(format!(
                "failed to perform status section of the healthz check for KMS Provider {}, error: {e}",
                self.name
            )),
            Ok(s) => {
                let mut errs = Vec::new();
                if s.healthz != "ok" {
                    errs.push(format!("got unexpected healthz status: {}", s.healthz));
                }
                if s.version != "v2" && s.version != "v2beta1" {
                    errs.push(format!("expected KMSv2 API version v2, got {}", s.version));
                }
                match validate_key_id(&s.key_id) {
                    Err(e) => errs.push(format!(
                        "got invalid KMSv2 KeyID hash {:?}: {e}",
                        super::metrics::hash(&s.key_id)
                    )),
                    Ok(()) => {
                        // Recorded once writes use the key (or failed to move to it), so that a
                        // new key id in the metrics means new writes are under it.
                        let rotated = self.rotate_if_changed(&s.key_id).await;
                        self.metrics.key_id_status(&self.name, &s.key_id);
                        if let Err(e) = rotated {
                            errs.push(e);
                        }
                    }
                }
                if errs.is_empty() {
                    Ok(())
                } else {
                    let joined = if errs.len() == 1 {
                        errs.remove(0)
                    } else {
                        format!("[{}]", errs.join(", "))
                    };
                    Err(format!(
                        "kmsv2 Provider {} is not healthy, error: {joined}",
                        self.name
                    ))
                }
            }
        };
        if let Err(e) = &result {
            tracing::warn!(provider = %self.name, error = %e, "kms plugin failed health check probe");
        }
        *self.checked.write() = Some(Checked {
            at: Instant::now(),
            result: result.clone(),
        });
        result
    }

    /// Generates a new seed under `key_id` unless writes already use that key id.
    async fn rotate_if_changed(&self, key_id: &str) -> Result<(), String> {
        let current = self.write.read().clone();
        if current.as_ref().is_some_and(|w| w.key_id == key_id) {
            return Ok(());
        }
        let start = Instant::now();
        let generated = DataKey::generate_seed();
        self.metrics
            .key_generation(start.elapsed(), generated.is_ok());
        let (key, plaintext) =
            generated.map_err(|e| format!("failed to generate a data key: {e}"))?;
        let uid = uuid::Uuid::new_v4().to_string();
        let resp = self.service.encrypt(&uid, &plaintext).await.map_err(|e| {
            format!("failed to rotate DEK uid={uid:?}: failed to encrypt DEK, error: {e}")
        })?;
        let annotations: BTreeMap<String, Vec<u8>> = resp.annotations.into_iter().collect();
        validate_answer(&resp.key_id, &resp.ciphertext, &annotations)
            .map_err(|e| format!("failed to rotate DEK uid={uid:?}: {e}"))?;
        if resp.key_id != key_id {
            return Err(format!(
                "failed to rotate DEK uid={uid:?}: statusKeyIDHash={:?}, encryptKeyIDHash={:?}",
                super::metrics::hash(key_id),
                super::metrics::hash(&resp.key_id)
            ));
        }
        let key = Arc::new(key);
        let ck = cache_key(
            HKDF_SHA256_XNONCE_AES_GCM_SEED,
            &resp.ciphertext,
            &resp.key_id,
            &annotations,
        );
        self.remember(ck, key.clone());
        tracing::info!(
            provider = %self.name,
            new_key_id_hash = %super::metrics::hash(&resp.key_id),
            old_key_id_hash = %current.as_ref().map(|w| super::metrics::hash(&w.key_id)).unwrap_or_default(),
            "kms: new data encryption key"
        );
        *self.write.write() = Some(Arc::new(WriteKey {
            key: DataKey::clone(&key),
            key_id: resp.key_id,
            encrypted_dek_source: resp.ciphertext,
            annotations,
            source_type: HKDF_SHA256_XNONCE_AES_GCM_SEED,
        }));
        Ok(())
    }

    fn remember(&self, ck: Vec<u8>, key: Arc<DataKey>) {
        let mut c = self.cache.lock();
        c.insert(ck, key);
        let size = c.map.len();
        drop(c);
        self.metrics.dek_cache(&self.name, size, DEK_CACHE_CAPACITY);
    }

    /// The stored form of `plaintext` after the prefix: an encoded `EncryptedObject`.
    pub fn encrypt(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, KmsError> {
        if let Some(Checked {
            result: Err(reason),
            ..
        }) = self.checked.read().clone()
        {
            return Err(KmsError::Unavailable {
                name: self.name.clone(),
                reason,
            });
        }
        let Some(w) = self.write.read().clone() else {
            return Err(KmsError::Unavailable {
                name: self.name.clone(),
                reason: "no data encryption key yet: the plugin has not answered".into(),
            });
        };
        let o = EncryptedObject {
            encrypted_data: w.key.seal(plaintext, aad)?,
            key_id: w.key_id.clone(),
            encrypted_dek_source: w.encrypted_dek_source.clone(),
            annotations: w.annotations.clone(),
            encrypted_dek_source_type: w.source_type,
        };
        validate(&o)?;
        self.metrics.key_id_used(TO_STORAGE, &self.name, &w.key_id);
        Ok(o.encode_to_vec())
    }

    /// The plaintext of a stored value after the prefix, and whether it is stale (written
    /// under another key id, or another kind of data key, than writes use now).
    pub async fn decrypt(&self, data: &[u8], aad: &[u8]) -> Result<(Vec<u8>, bool), KmsError> {
        let o = EncryptedObject::decode(data).map_err(|e| {
            KmsError::Invalid(format!("failed to decode the encrypted object: {e}"))
        })?;
        validate(&o)?;
        let ck = cache_key(
            o.encrypted_dek_source_type,
            &o.encrypted_dek_source,
            &o.key_id,
            &o.annotations,
        );
        let cached = self.cache.lock().get(&ck);
        let key = match cached {
            Some(k) => k,
            None => {
                self.metrics.cache_miss();
                let uid = uuid::Uuid::new_v4().to_string();
                let plain =
                    self.service.decrypt(&uid, &o).await.map_err(|e| {
                        KmsError::Invalid(format!("failed to decrypt DEK, error: {e}"))
                    })?;
                let key = if o.encrypted_dek_source_type == HKDF_SHA256_XNONCE_AES_GCM_SEED {
                    DataKey::seed(&plain)?
                } else {
                    DataKey::Key(Gcm::new(&plain)?)
                };
                let key = Arc::new(key);
                self.remember(ck, key.clone());
                key
            }
        };
        let out = key.open(&o.encrypted_data, aad)?;
        self.metrics
            .key_id_used(FROM_STORAGE, &self.name, &o.key_id);
        let stale = match self.write.read().as_ref() {
            Some(w) => w.key_id != o.key_id || w.source_type != o.encrypted_dek_source_type,
            None => true,
        };
        Ok((out, stale))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::encryption::cipher::tests::unhex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A plugin in memory: "encrypts" by XOR with its key id's first byte, counts calls, and
    /// can be taken down.
    pub struct FakeKms {
        pub key_id: Mutex<String>,
        pub down: std::sync::atomic::AtomicBool,
        pub encrypts: AtomicUsize,
        pub decrypts: AtomicUsize,
    }

    impl FakeKms {
        pub fn new(key_id: &str) -> Arc<Self> {
            Arc::new(FakeKms {
                key_id: Mutex::new(key_id.into()),
                down: Default::default(),
                encrypts: AtomicUsize::new(0),
                decrypts: AtomicUsize::new(0),
            })
        }

        fn check_up(&self) -> Result<(), KmsError> {
            if self.down.load(Ordering::SeqCst) {
                return Err(KmsError::Rpc {
                    code: "Unavailable".into(),
                    message: "connection refused".into(),
                });
            }
            Ok(())
        }
    }

    fn xor(data: &[u8], k: &str) -> Vec<u8> {
        let b = k.as_bytes()[0];
        data.iter().map(|x| x ^ b).collect()
    }

    #[async_trait::async_trait]
    impl KmsService for FakeKms {
        async fn status(&self) -> Result<pb::StatusResponse, KmsError> {
            self.check_up()?;
            Ok(pb::StatusResponse {
                version: "v2".into(),
                healthz: "ok".into(),
                key_id: self.key_id.lock().clone(),
            })
        }
        async fn encrypt(
            &self,
            _uid: &str,
            plaintext: &[u8],
        ) -> Result<pb::EncryptResponse, KmsError> {
            self.check_up()?;
            self.encrypts.fetch_add(1, Ordering::SeqCst);
            let id = self.key_id.lock().clone();
            Ok(pb::EncryptResponse {
                ciphertext: xor(plaintext, &id),
                key_id: id,
                annotations: Default::default(),
            })
        }
        async fn decrypt(&self, _uid: &str, o: &EncryptedObject) -> Result<Vec<u8>, KmsError> {
            self.check_up()?;
            self.decrypts.fetch_add(1, Ordering::SeqCst);
            Ok(xor(&o.encrypted_dek_source, &o.key_id))
        }
    }

    const AAD: &[u8] = b"/registry/secrets/default/s1";
    const PLAIN: &[u8] = br#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"s1","namespace":"default"},"data":{"k":"dg=="}}"#;

    fn provider(kms: &Arc<FakeKms>) -> KmsProvider {
        KmsProvider::new("p", kms.clone(), Arc::new(Metrics::new()), String::new())
    }

    #[tokio::test]
    async fn one_plugin_call_per_data_key_not_per_write() {
        let kms = FakeKms::new("k1");
        let p = provider(&kms);
        assert!(
            matches!(p.encrypt(PLAIN, AAD), Err(KmsError::Unavailable { .. })),
            "no key before the first check"
        );
        p.check().await.unwrap();
        let mut stored = Vec::new();
        for _ in 0..50 {
            stored.push(p.encrypt(PLAIN, AAD).unwrap());
        }
        assert_eq!(kms.encrypts.load(Ordering::SeqCst), 1);
        for s in &stored {
            let (out, stale) = p.decrypt(s, AAD).await.unwrap();
            assert_eq!((out.as_slice(), stale), (PLAIN, false));
        }
        assert_eq!(
            kms.decrypts.load(Ordering::SeqCst),
            0,
            "its own key is cached"
        );
        // The value names its key path: moved elsewhere, it does not open.
        assert!(p
            .decrypt(&stored[0], b"/registry/secrets/default/other")
            .await
            .is_err());
        let o = EncryptedObject::decode(stored[0].as_slice()).unwrap();
        assert_eq!(o.key_id, "k1");
        assert_eq!(o.encrypted_dek_source_type, HKDF_SHA256_XNONCE_AES_GCM_SEED);
        assert_eq!(o.encrypted_data.len(), 32 + 12 + PLAIN.len() + 16);
    }

    #[tokio::test]
    async fn a_new_key_id_means_a_new_data_key_and_old_values_read_stale() {
        let kms = FakeKms::new("k1");
        let p = provider(&kms);
        p.probe().await.unwrap();
        let old = p.encrypt(PLAIN, AAD).unwrap();
        *kms.key_id.lock() = "k2".into();
        p.probe().await.unwrap();
        assert_eq!(p.key_id().as_deref(), Some("k2"));
        assert_eq!(kms.encrypts.load(Ordering::SeqCst), 2);
        let new = p.encrypt(PLAIN, AAD).unwrap();
        assert!(!p.decrypt(&new, AAD).await.unwrap().1);
        assert!(
            p.decrypt(&old, AAD).await.unwrap().1,
            "under the old key id: stale"
        );
    }

    #[tokio::test]
    async fn plugin_down_stops_writes_but_cached_keys_still_read() {
        let kms = FakeKms::new("k1");
        let p = provider(&kms);
        p.probe().await.unwrap();
        let v = p.encrypt(PLAIN, AAD).unwrap();
        kms.down.store(true, Ordering::SeqCst);
        let e = p.probe().await.unwrap_err();
        assert!(e.contains("KMS Provider p"), "{e}");
        let w = p.encrypt(PLAIN, AAD).unwrap_err().to_string();
        assert!(w.starts_with("kms provider \"p\" is unavailable"), "{w}");
        assert_eq!(p.decrypt(&v, AAD).await.unwrap().0, PLAIN);
        // A value whose key is not cached needs the plugin.
        let other = provider(&kms);
        let e = other.decrypt(&v, AAD).await.unwrap_err().to_string();
        assert!(
            e.contains("failed to decrypt DEK") && e.contains("Unavailable"),
            "{e}"
        );
        kms.down.store(false, Ordering::SeqCst);
        p.probe().await.unwrap();
        assert!(p.encrypt(PLAIN, AAD).is_ok());
        assert_eq!(other.decrypt(&v, AAD).await.unwrap().0, PLAIN);
        assert_eq!(kms.decrypts.load(Ordering::SeqCst), 1);
    }

    /// An `EncryptedObject` encoded by hand, field by field, as protobuf lays it out.
    fn encoded(data: &[u8], key_id: &str, source: &[u8], source_type: u8) -> Vec<u8> {
        let mut b = Vec::new();
        let field = |b: &mut Vec<u8>, tag: u8, v: &[u8]| {
            b.push(tag);
            let mut n = v.len();
            while n >= 0x80 {
                b.push((n as u8) | 0x80);
                n >>= 7;
            }
            b.push(n as u8);
            b.extend_from_slice(v);
        };
        field(&mut b, 0x0a, data);
        field(&mut b, 0x12, key_id.as_bytes());
        field(&mut b, 0x1a, source);
        if source_type != 0 {
            b.extend_from_slice(&[0x28, source_type]);
        }
        b
    }

    #[tokio::test]
    async fn reads_values_built_the_way_kubernetes_builds_them() {
        // The data below were made with Python's `cryptography`: for the seed type, the
        // AES-256-GCM key is HKDF-SHA256-Expand(seed, info) and the data `info ‖ nonce ‖
        // ciphertext ‖ tag`; for the key type, `nonce ‖ ciphertext ‖ tag` under the key
        // itself. The additional data is the etcd key.
        let kms = FakeKms::new("k1");
        let p = provider(&kms);
        p.probe().await.unwrap();
        let seed: Vec<u8> = (1..=32).collect();
        let seed_data = unhex("969798999a9b9c9d9e9fa0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5c8c9cacbcccdcecfd0d1d2d3925bb2a4d345019244d3050d38a3a97ae2ad22bb3ee257ef2906ff7f01d9ff8594b823e90f286920dbd1197552d762f815fb4bf78cc2c8a34be1ffafbd468062e06b7d6a26e203a8878b034c6f284e755fee5486dc4d18567b41b3c484e0f8591fe1f3f4b2c3cc50972bebc212aeac13c576fcb444d2");
        let v = encoded(&seed_data, "k1", &xor(&seed, "k1"), 1);
        assert_eq!(
            EncryptedObject::decode(v.as_slice())
                .unwrap()
                .encode_to_vec(),
            v,
            "same bytes as prost writes"
        );
        assert_eq!(p.decrypt(&v, AAD).await.unwrap(), (PLAIN.to_vec(), false));
        let dek: Vec<u8> = (60..92).collect();
        let key_data = unhex("c8c9cacbcccdcecfd0d1d2d3bb87dd141217e8f6245fc28eff0f746a7e35d8a0caeb525d5d529522c171fe965a39ceec27a5e1c2e21915f7797f31e0891a01fb84f7f0c4e51d68061d19a8c67ba54e2cf705d99a35d66bf822d94d98772bdd474274307e25840246a572457abc7a7dbd4ca488ba588cc643eb440f243e518e3e93db");
        let v = encoded(&key_data, "k1", &xor(&dek, "k1"), 0);
        assert_eq!(
            p.decrypt(&v, AAD).await.unwrap(),
            (PLAIN.to_vec(), true),
            "a key-type value is stale: writes use seeds"
        );
    }

    #[tokio::test]
    async fn malformed_objects_are_errors() {
        let kms = FakeKms::new("k1");
        let p = provider(&kms);
        p.probe().await.unwrap();
        for bad in [
            vec![0xff, 0xff, 0xff],
            encoded(b"", "k1", b"x", 1),
            encoded(b"x", "", b"x", 1),
            encoded(b"x", "k1", b"", 1),
            encoded(b"x", "k1", b"x", 7),
            encoded(b"short", "k1", b"x", 1),
        ] {
            assert!(p.decrypt(&bad, AAD).await.is_err());
        }
    }

    #[test]
    fn the_cache_is_bounded() {
        let mut c = DekCache {
            map: HashMap::new(),
            tick: 0,
            capacity: 2,
        };
        let k = || Arc::new(DataKey::seed(&[0u8; 32]).unwrap());
        c.insert(b"a".to_vec(), k());
        c.insert(b"b".to_vec(), k());
        assert!(c.get(b"a").is_some());
        c.insert(b"c".to_vec(), k());
        assert!(c.get(b"b").is_none(), "the least recently used went");
        assert!(c.get(b"a").is_some() && c.get(b"c").is_some());
    }
}
