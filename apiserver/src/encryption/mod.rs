//! Encryption at rest, configured as kube-apiserver's (`--encryption-provider-config`, an
//! `EncryptionConfiguration`; `--encryption-provider-config-automatic-reload`).
//!
//! Storage asks [`Encryption::write`] for the bytes to put under an etcd key and
//! [`Encryption::read`] for the plaintext of what it got back; the etcd key is the additional
//! authenticated data, so a value copied under another key does not decrypt. Each resource
//! (`secrets`, `deployments.apps`) is matched to its providers as Kubernetes matches it: the
//! resource itself, else `*.GROUP`, else `*.*`; a resource no rule names is stored as it is.
//! The first provider encrypts, every one decrypts values that carry its prefix, and a value
//! read by any but the first is *stale*: storage then rewrites it even when an update changed
//! nothing, which is how `kubectl get secrets -A -o json | kubectl replace -f -` re-encrypts.
//!
//! With automatic reload the file is read every [`RELOAD_POLL`] (kube-apiserver: every
//! minute); a new file takes effect once it validates and its KMS plugins answer, and a bad
//! one keeps the configuration in force, is logged and counted.
//!
//! This module is a leaf: it knows etcd keys and bytes, nothing of the store.

pub mod cipher;
pub mod config;
pub mod kms;
pub mod metrics;
pub mod providers;

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use tokio_util::sync::CancellationToken;

pub use config::ConfigError;
pub use metrics::Metrics;
pub use providers::TransformError;

use config::{EncryptionConfiguration, GroupResource, KmsConfiguration};
use kms::{KmsProvider, KmsService};
use providers::{Chain, Provider, ENCRYPTED_PREFIX};

/// How often the configuration file is checked for changes with automatic reload on.
pub const RELOAD_POLL: Duration = Duration::from_secs(2);
/// How long a reloaded configuration's KMS plugins have to answer before the reload fails
/// (kube-apiserver's minimum).
const NEW_PLUGIN_GRACE: Duration = if cfg!(test) {
    Duration::from_millis(300)
} else {
    Duration::from_secs(10)
};

/// Makes the client of a configured KMS plugin.
pub type KmsFactory = Arc<
    dyn Fn(&KmsConfiguration, Arc<Metrics>) -> Result<Arc<dyn KmsService>, String> + Send + Sync,
>;

/// The providers in force: which chain serves which resource.
#[derive(Default)]
struct Snapshot {
    exact: HashMap<GroupResource, Arc<Chain>>,
    by_group: HashMap<String, Arc<Chain>>,
    any: Option<Arc<Chain>>,
    kms: Vec<Arc<KmsProvider>>,
}

impl Snapshot {
    fn lookup(&self, resource: &str) -> Option<Arc<Chain>> {
        if self.exact.is_empty() && self.by_group.is_empty() && self.any.is_none() {
            return None;
        }
        let gr = GroupResource::parse(resource);
        self.exact
            .get(&gr)
            .or_else(|| self.by_group.get(&gr.group))
            .or(self.any.as_ref())
            .cloned()
    }
}

/// Encryption at rest for every resource. Cheap to share.
pub struct Encryption {
    path: Option<String>,
    reload: bool,
    current: RwLock<Arc<Snapshot>>,
    hash: Mutex<String>,
    metrics: Arc<Metrics>,
    factory: KmsFactory,
    pollers: Mutex<HashMap<String, CancellationToken>>,
}

/// The production factory: gRPC over the configured unix socket.
fn grpc_factory() -> KmsFactory {
    Arc::new(|c: &KmsConfiguration, m: Arc<Metrics>| {
        kms::GrpcKms::new(c.socket_path(), c.timeout(), &c.name, m)
            .map(|k| Arc::new(k) as Arc<dyn KmsService>)
            .map_err(|e| {
                format!(
                    "could not configure KMSv2-Plugin's probe {:?}, error: {e}",
                    c.name
                )
            })
    })
}

fn kms_identity(c: &KmsConfiguration) -> String {
    format!("{}\0{}\0{:?}", c.name, c.endpoint, c.timeout())
}

impl Encryption {
    /// No configuration: every value is stored as it is (and an encrypted one found in etcd
    /// is refused rather than read as garbage).
    pub fn none(metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Encryption {
            path: None,
            reload: false,
            current: RwLock::new(Arc::new(Snapshot::default())),
            hash: Mutex::new(String::new()),
            metrics,
            factory: grpc_factory(),
            pollers: Mutex::new(HashMap::new()),
        })
    }

    /// Reads, validates and builds the configuration at `path`, asking each KMS plugin once for
    /// its key (a plugin that does not answer yet is asked again in the background by
    /// [`Encryption::start`]).
    pub async fn load(
        path: &str,
        reload: bool,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>, ConfigError> {
        Self::load_with(path, reload, metrics, grpc_factory()).await
    }

    /// [`Encryption::load`] with another way to reach KMS plugins.
    pub async fn load_with(
        path: &str,
        reload: bool,
        metrics: Arc<Metrics>,
        factory: KmsFactory,
    ) -> Result<Arc<Self>, ConfigError> {
        let (config, hash) = config::load(path, reload)?;
        let enc = Encryption {
            path: Some(path.to_string()),
            reload,
            current: RwLock::new(Arc::new(Snapshot::default())),
            hash: Mutex::new(hash.clone()),
            metrics,
            factory,
            pollers: Mutex::new(HashMap::new()),
        };
        let snapshot = enc.build(&config).map_err(ConfigError::Build)?;
        for p in &snapshot.kms {
            if let Err(e) = p.probe().await {
                tracing::warn!(provider = %p.name(), error = %e, "kms plugin not ready at start; retrying in the background");
            }
        }
        *enc.current.write() = Arc::new(snapshot);
        enc.metrics.config_loaded(&hash);
        Ok(Arc::new(enc))
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Whether anything is configured.
    pub fn configured(&self) -> bool {
        self.path.is_some()
    }

    /// Starts polling the KMS plugins and, with automatic reload, the file, until `shutdown`.
    pub fn start(self: &Arc<Self>, shutdown: &CancellationToken) {
        let kms = self.current.read().kms.clone();
        self.poll_plugins(&kms, shutdown);
        if self.reload {
            let me = self.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move { me.reload_loop(shutdown).await });
        }
    }

    fn poll_plugins(&self, kms: &[Arc<KmsProvider>], shutdown: &CancellationToken) {
        let mut pollers = self.pollers.lock();
        let keep: Vec<&str> = kms.iter().map(|p| p.identity.as_str()).collect();
        pollers.retain(|id, stop| {
            let live = keep.contains(&id.as_str());
            if !live {
                stop.cancel();
            }
            live
        });
        for p in kms {
            if pollers.contains_key(&p.identity) {
                continue;
            }
            let stop = shutdown.child_token();
            pollers.insert(p.identity.clone(), stop.clone());
            let p = p.clone();
            tokio::spawn(async move {
                loop {
                    let wait = if p.probe().await.is_ok() {
                        kms::HEALTHY_POLL
                    } else {
                        kms::UNHEALTHY_POLL
                    };
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            });
        }
    }

    /// Builds the providers of `config`, keeping the KMS providers of the configuration in force
    /// whose name, endpoint and timeout are unchanged (and so their keys).
    fn build(&self, config: &EncryptionConfiguration) -> Result<Snapshot, String> {
        let existing: HashMap<String, Arc<KmsProvider>> = self
            .current
            .read()
            .kms
            .iter()
            .map(|p| (p.identity.clone(), p.clone()))
            .collect();
        let mut kms: Vec<Arc<KmsProvider>> = Vec::new();
        let mut make_kms = |c: &KmsConfiguration| -> Result<Arc<KmsProvider>, String> {
            let id = kms_identity(c);
            if let Some(p) = kms.iter().find(|p| p.identity == id) {
                return Ok(p.clone());
            }
            let p = match existing.get(&id) {
                Some(p) => p.clone(),
                None => {
                    let service = (self.factory)(c, self.metrics.clone())?;
                    Arc::new(KmsProvider::new(&c.name, service, self.metrics.clone(), id))
                }
            };
            kms.push(p.clone());
            Ok(p)
        };
        // Resources named in several lists get the providers of each, in order (as Kubernetes
        // appends them).
        let mut order: Vec<GroupResource> = Vec::new();
        let mut lists: HashMap<GroupResource, Vec<Arc<Provider>>> = HashMap::new();
        for rc in &config.resources {
            let mut providers = Vec::new();
            for p in &rc.providers {
                providers.push(Arc::new(Provider::build(p, &mut make_kms)?));
            }
            for res in &rc.resources {
                let gr = GroupResource::parse(res);
                let group_rule = GroupResource {
                    group: gr.group.clone(),
                    resource: "*".into(),
                };
                let any = GroupResource {
                    group: "*".into(),
                    resource: "*".into(),
                };
                for masking in [group_rule, any] {
                    if lists.contains_key(&masking) {
                        return Err(format!(
                            "resource {:?} is masked by earlier rule {:?}",
                            gr.yaml(),
                            masking.yaml()
                        ));
                    }
                }
                if !lists.contains_key(&gr) {
                    order.push(gr.clone());
                }
                lists
                    .entry(gr)
                    .or_default()
                    .extend(providers.iter().cloned());
            }
        }
        let mut s = Snapshot::default();
        for gr in order {
            let chain = Arc::new(Chain::new(lists.remove(&gr).unwrap_or_default()));
            if gr.is_any() {
                s.any = Some(chain);
            } else if gr.resource == "*" {
                s.by_group.insert(gr.group, chain);
            } else {
                s.exact.insert(gr, chain);
            }
        }
        s.kms = kms;
        Ok(s)
    }

    /// The bytes to store for `plaintext` of `resource` (`secrets`, `deployments.apps`) under
    /// etcd key `key`.
    pub fn write(
        &self,
        resource: &str,
        key: &str,
        plaintext: Vec<u8>,
    ) -> Result<Vec<u8>, TransformError> {
        let chain = self.current.read().lookup(resource);
        match chain {
            None => Ok(plaintext),
            Some(c) => c.write(resource, plaintext, key.as_bytes(), &self.metrics),
        }
    }

    /// The plaintext of what etcd holds under `key` for `resource`, and whether it is stale.
    pub async fn read<'a>(
        &self,
        resource: &str,
        key: &str,
        data: &'a [u8],
    ) -> Result<(Cow<'a, [u8]>, bool), TransformError> {
        let chain = self.current.read().lookup(resource);
        match chain {
            None if data.starts_with(ENCRYPTED_PREFIX) => Err(TransformError::EncryptedData),
            None => Ok((Cow::Borrowed(data), false)),
            Some(c) => c
                .read(resource, data, key.as_bytes(), &self.metrics)
                .await
                .map(|(v, stale)| (Cow::Owned(v), stale)),
        }
    }

    /// Whether the `kms-providers` health check exists: with KMS providers configured, or
    /// automatic reload on (as kube-apiserver has it).
    pub fn has_health_check(&self) -> bool {
        self.reload || !self.current.read().kms.is_empty()
    }

    /// The `kms-providers` check: every KMS plugin answers `Status` healthy.
    pub async fn health(&self) -> Result<(), String> {
        let kms = self.current.read().kms.clone();
        let mut errs = Vec::new();
        for (i, p) in kms.iter().enumerate() {
            if let Err(e) = p.check().await {
                errs.push(format!("kms-provider-{i}: {e}"));
            }
        }
        match errs.len() {
            0 => Ok(()),
            1 => Err(errs.remove(0)),
            _ => Err(format!("[{}]", errs.join(", "))),
        }
    }

    /// The hash of the configuration file in force.
    pub fn config_hash(&self) -> String {
        self.hash.lock().clone()
    }

    async fn reload_loop(self: Arc<Self>, shutdown: CancellationToken) {
        const RETRY: skiff_rules::Backoff =
            skiff_rules::Backoff::exponential(RELOAD_POLL, Duration::from_secs(60));
        let Some(path) = self.path.clone() else {
            return;
        };
        let mut failures = 0;
        let mut retry_at = Instant::now();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(RELOAD_POLL) => {}
            }
            let data = tokio::fs::read(&path).await;
            let hash = match &data {
                Ok(d) => config::content_hash(d),
                Err(_) => String::new(),
            };
            if hash == self.config_hash() {
                failures = 0;
                continue;
            }
            if Instant::now() < retry_at {
                continue;
            }
            let result = match data {
                Ok(d) => self.reload_from(&path, &d, &shutdown).await,
                Err(e) => Err(format!(
                    "error reading encryption provider configuration file {path:?}: {e}"
                )),
            };
            match result {
                Ok(()) => {
                    failures = 0;
                    *self.hash.lock() = hash.clone();
                    self.metrics.reload(true, Some(&hash));
                    tracing::info!(file = %path, %hash, "loaded a new encryption configuration");
                }
                Err(e) => {
                    self.metrics.reload(false, None);
                    tracing::error!(file = %path, error = %e, "error processing encryption config file; the configuration in force stays");
                    retry_at = Instant::now() + RETRY.delay(failures);
                    failures += 1;
                }
            }
        }
    }

    /// Swaps in the configuration `data` once it validates and its KMS plugins answer.
    async fn reload_from(
        &self,
        path: &str,
        data: &[u8],
        shutdown: &CancellationToken,
    ) -> Result<(), String> {
        let config = config::parse(path, data, true).map_err(|e| e.to_string())?;
        let snapshot = self
            .build(&config)
            .map_err(|e| ConfigError::Build(e).to_string())?;
        let deadline = tokio::time::Instant::now() + NEW_PLUGIN_GRACE;
        for p in &snapshot.kms {
            loop {
                match p.probe().await {
                    Ok(()) => break,
                    Err(e) if tokio::time::Instant::now() >= deadline => {
                        return Err(format!("health check for new transformers failed: {e}"))
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        }
        let kms = snapshot.kms.clone();
        *self.current.write() = Arc::new(snapshot);
        self.poll_plugins(&kms, shutdown);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kms::tests::FakeKms;
    use std::io::Write;

    const HEAD: &str = "kind: EncryptionConfiguration\napiVersion: apiserver.config.k8s.io/v1\n";

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    fn factory(kms: Arc<FakeKms>) -> KmsFactory {
        Arc::new(move |_: &KmsConfiguration, _| Ok(kms.clone() as Arc<dyn KmsService>))
    }

    fn cbc_key() -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode([3u8; 32])
    }

    #[tokio::test]
    async fn resources_match_exactly_then_by_group_then_any() {
        let f = file(&format!(
            "{HEAD}resources:
- resources: [secrets]
  providers: [{{aescbc: {{keys: [{{name: a, secret: {k}}}]}}}}]
- resources: ['*.apps']
  providers: [{{secretbox: {{keys: [{{name: b, secret: {k}}}]}}}}]
- resources: ['*.*']
  providers: [{{aesgcm: {{keys: [{{name: c, secret: {k}}}]}}}}]
",
            k = cbc_key()
        ));
        let e = Encryption::load(f.path().to_str().unwrap(), false, Arc::new(Metrics::new()))
            .await
            .unwrap();
        let w = |r: &str| e.write(r, "/registry/x/y", b"{}".to_vec()).unwrap();
        assert!(w("secrets").starts_with(b"k8s:enc:aescbc:v1:a:"));
        assert!(w("deployments.apps").starts_with(b"k8s:enc:secretbox:v1:b:"));
        assert!(w("configmaps").starts_with(b"k8s:enc:aesgcm:v1:c:"));
        assert!(
            !e.has_health_check(),
            "no KMS, no reload: no kms-providers check"
        );
        let v = w("secrets");
        let (plain, stale) = e.read("secrets", "/registry/x/y", &v).await.unwrap();
        assert_eq!((plain.as_ref(), stale), (b"{}".as_slice(), false));
    }

    #[tokio::test]
    async fn unconfigured_resources_pass_through_and_refuse_encrypted_data() {
        let e = Encryption::none(Arc::new(Metrics::new()));
        assert_eq!(e.write("secrets", "/k", b"{}".to_vec()).unwrap(), b"{}");
        let (v, stale) = e.read("secrets", "/k", b"{}").await.unwrap();
        assert!(matches!(v, Cow::Borrowed(_)) && !stale);
        assert!(e
            .read("secrets", "/k", b"k8s:enc:aescbc:v1:a:xxxx")
            .await
            .is_err());
    }

    #[tokio::test]
    async fn a_masked_rule_is_refused() {
        let f = file(&format!(
            "{HEAD}resources:
- resources: ['*.']
  providers: [{{identity: {{}}}}]
- resources: [secrets]
  providers: [{{identity: {{}}}}]
"
        ));
        let err = Encryption::load(f.path().to_str().unwrap(), false, Arc::new(Metrics::new()))
            .await
            .err()
            .unwrap()
            .to_string();
        assert_eq!(
            err,
            "error while building transformers: resource \"secrets\" is masked by earlier rule \"*.\""
        );
    }

    #[tokio::test]
    async fn reload_swaps_good_files_and_keeps_the_old_one_on_bad_ones() {
        let kms = FakeKms::new("k1");
        let text = |first: &str| {
            format!(
                "{HEAD}resources:
- resources: [secrets]
  providers:
  {first}
  - kms: {{apiVersion: v2, name: p, endpoint: 'unix:///nowhere.sock'}}
  - identity: {{}}
"
            )
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("enc.yaml");
        std::fs::write(&path, text("")).unwrap();
        let m = Arc::new(Metrics::new());
        let e = Encryption::load_with(path.to_str().unwrap(), true, m, factory(kms.clone()))
            .await
            .unwrap();
        assert!(e.has_health_check());
        e.health().await.unwrap();
        let v = e.write("secrets", "/k", b"{}".to_vec()).unwrap();
        assert!(v.starts_with(b"k8s:enc:kms:v2:p:"));
        let shutdown = CancellationToken::new();
        // A bad file: the configuration in force stays.
        e.reload_from(path.to_str().unwrap(), b"kind: Nope", &shutdown)
            .await
            .unwrap_err();
        assert!(e
            .write("secrets", "/k", b"{}".to_vec())
            .unwrap()
            .starts_with(b"k8s:enc:kms:v2:p:"));
        // A new aescbc key first: new writes use it, KMS values still read, stale, and the
        // KMS provider (same name, endpoint, timeout) keeps its data key.
        let good = text(&format!(
            "- aescbc: {{keys: [{{name: new, secret: {}}}]}}",
            cbc_key()
        ));
        e.reload_from(path.to_str().unwrap(), good.as_bytes(), &shutdown)
            .await
            .unwrap();
        let w = e.write("secrets", "/k", b"{}".to_vec()).unwrap();
        assert!(w.starts_with(b"k8s:enc:aescbc:v1:new:"));
        let (plain, stale) = e.read("secrets", "/k", &v).await.unwrap();
        assert_eq!((plain.as_ref(), stale), (b"{}".as_slice(), true));
        assert_eq!(kms.encrypts.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(kms.decrypts.load(std::sync::atomic::Ordering::SeqCst), 0);
        shutdown.cancel();
    }

    #[tokio::test]
    async fn a_reload_whose_plugin_is_down_fails() {
        let kms = FakeKms::new("k1");
        let f = file(&format!(
            "{HEAD}resources:\n- resources: [secrets]\n  providers: [{{identity: {{}}}}]\n"
        ));
        let e = Encryption::load_with(
            f.path().to_str().unwrap(),
            true,
            Arc::new(Metrics::new()),
            factory(kms.clone()),
        )
        .await
        .unwrap();
        e.health().await.unwrap();
        kms.down.store(true, std::sync::atomic::Ordering::SeqCst);
        let text = format!(
            "{HEAD}resources:\n- resources: [secrets]\n  providers: [{{kms: {{apiVersion: v2, name: p, endpoint: 'unix:///x.sock', timeout: 1s}}}}]\n"
        );
        let r = e
            .reload_from("f", text.as_bytes(), &CancellationToken::new())
            .await
            .unwrap_err();
        assert!(
            r.starts_with("health check for new transformers failed"),
            "{r}"
        );
        assert_eq!(e.write("secrets", "/k", b"{}".to_vec()).unwrap(), b"{}");
    }
}
