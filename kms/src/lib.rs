//! `skiff-kms`: Skiff's KMS v2 plugin, the local stand-in for a cloud KMS.
//!
//! It serves the Kubernetes KMS v2 API (`v2.KeyManagementService`: `Status`, `Encrypt`,
//! `Decrypt`) on a unix socket. Its key-encryption keys live in a file of its own
//! ([`keys`]): `Encrypt` seals with the primary key and answers its id, `Decrypt` opens with
//! the key the request names, and `Status` answers the primary's id, so that the API server
//! notices a rotation and moves to a new data key. The file is re-read every
//! [`KEYS_POLL`]: `skiff-kms rotate` and `remove-key` take effect without a restart.

pub mod keys;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use skiff_proto::kms as pb;
use tokio_util::sync::CancellationToken;

use keys::{Keys, Sealer};

/// How often the keys file is checked for changes.
pub const KEYS_POLL: Duration = Duration::from_secs(1);
/// The largest plaintext `Encrypt` takes (data keys are 32 bytes).
const MAX_PLAINTEXT: usize = 64 * 1024;

/// Why the plugin could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The keys file is unusable.
    #[error(transparent)]
    Keys(#[from] keys::KeysError),
    /// `--listen` is not `unix:///path`.
    #[error("--listen {0:?}: only unix:///path endpoints are supported")]
    Endpoint(String),
    /// Another process serves the socket.
    #[error("{0}: another process is serving on this socket")]
    InUse(PathBuf),
    /// The socket could not be made.
    #[error("listening on {path}: {source}")]
    Listen {
        /// The socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The socket path of a `unix:///path` endpoint.
pub fn socket_path(endpoint: &str) -> Result<PathBuf, StartError> {
    match endpoint.strip_prefix("unix://") {
        Some(p) if !p.is_empty() => Ok(PathBuf::from(p)),
        _ => Err(StartError::Endpoint(endpoint.to_string())),
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Op {
    method: &'static str,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Method {
    method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    status: &'static str,
}

/// The plugin's metrics.
pub struct Metrics {
    operations: Family<Op, Counter>,
    latency: Family<Method, Histogram>,
    keys: Gauge,
    reloads: Family<Outcome, Counter>,
}

impl Metrics {
    fn new() -> Self {
        Metrics {
            operations: Family::default(),
            latency: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(1e-5, 2.0, 16))
            }),
            keys: Gauge::default(),
            reloads: Family::default(),
        }
    }

    /// Adds the metrics to `r`.
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "skiff_kms_operations",
            "KMS calls served, by method and gRPC code",
            self.operations.clone(),
        );
        r.register(
            "skiff_kms_operation_duration_seconds",
            "Time to serve a KMS call",
            self.latency.clone(),
        );
        r.register(
            "skiff_kms_keys",
            "Key-encryption keys loaded",
            self.keys.clone(),
        );
        r.register(
            "skiff_kms_key_reloads",
            "Reloads of the keys file after it changed, by outcome",
            self.reloads.clone(),
        );
    }
}

/// The keys in force and what the file on disk last looked like.
struct State {
    keys: Keys,
    /// The file's bytes when last read (a change triggers a reload).
    seen: Vec<u8>,
    /// Why the file on disk is not usable, if it is not (the keys loaded before still serve).
    problem: Option<String>,
}

/// The plugin: keys, and the gRPC service over them.
pub struct Plugin {
    path: PathBuf,
    state: RwLock<State>,
    metrics: Arc<Metrics>,
}

impl Plugin {
    /// Loads the keys file (creating it with one key if absent).
    pub fn open(path: &Path) -> Result<Arc<Plugin>, StartError> {
        let keys = keys::load_or_create(path)?;
        let seen = std::fs::read(path).unwrap_or_default();
        let metrics = Arc::new(Metrics::new());
        metrics.keys.set(keys.keys.len() as i64);
        Ok(Arc::new(Plugin {
            path: path.to_path_buf(),
            state: RwLock::new(State {
                keys,
                seen,
                problem: None,
            }),
            metrics,
        }))
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The primary key's id.
    pub fn primary(&self) -> String {
        self.state.read().keys.primary.clone()
    }

    /// Why the keys file on disk is not usable, if it is not.
    pub fn problem(&self) -> Option<String> {
        self.state.read().problem.clone()
    }

    /// Reads the keys file again if it changed: a valid file replaces the keys, an invalid one
    /// is reported (and the keys loaded before go on serving).
    pub fn reload(&self) {
        let data = std::fs::read(&self.path);
        let mut st = self.state.write();
        let data = match data {
            Ok(d) => d,
            Err(e) => {
                let p = format!("keys file {}: {e}", self.path.display());
                if st.problem.as_deref() != Some(p.as_str()) {
                    tracing::error!(error = %p, "cannot read the keys file; serving the keys loaded before");
                    self.metrics
                        .reloads
                        .get_or_create(&Outcome { status: "failure" })
                        .inc();
                    st.problem = Some(p);
                }
                return;
            }
        };
        if data == st.seen {
            return;
        }
        st.seen = data.clone();
        match Keys::parse(&self.path, &data) {
            Ok(keys) => {
                tracing::info!(primary = %keys.primary, keys = keys.keys.len(), "loaded the keys file");
                self.metrics.keys.set(keys.keys.len() as i64);
                self.metrics
                    .reloads
                    .get_or_create(&Outcome { status: "success" })
                    .inc();
                st.keys = keys;
                st.problem = None;
            }
            Err(e) => {
                tracing::error!(error = %e, "the keys file is not valid; serving the keys loaded before");
                self.metrics
                    .reloads
                    .get_or_create(&Outcome { status: "failure" })
                    .inc();
                st.problem = Some(e.to_string());
            }
        }
    }

    fn record<T>(&self, method: &'static str, start: Instant, r: &Result<T, tonic::Status>) {
        let code = match r {
            Ok(_) => "OK".to_string(),
            Err(s) => format!("{:?}", s.code()),
        };
        self.metrics
            .operations
            .get_or_create(&Op { method, code })
            .inc();
        self.metrics
            .latency
            .get_or_create(&Method { method })
            .observe(start.elapsed().as_secs_f64());
    }
}

/// The gRPC service over a [`Plugin`].
#[derive(Clone)]
pub struct Service(pub Arc<Plugin>);

#[tonic::async_trait]
impl pb::key_management_service_server::KeyManagementService for Service {
    async fn status(
        &self,
        _req: tonic::Request<pb::StatusRequest>,
    ) -> Result<tonic::Response<pb::StatusResponse>, tonic::Status> {
        let start = Instant::now();
        let st = self.0.state.read();
        let healthz = match &st.problem {
            None => "ok".to_string(),
            Some(p) => format!("{p} (serving the keys loaded before)"),
        };
        let r = Ok(pb::StatusResponse {
            version: "v2".into(),
            healthz,
            key_id: st.keys.primary.clone(),
        });
        drop(st);
        self.0.record("Status", start, &r);
        r.map(tonic::Response::new)
    }

    async fn encrypt(
        &self,
        req: tonic::Request<pb::EncryptRequest>,
    ) -> Result<tonic::Response<pb::EncryptResponse>, tonic::Status> {
        let start = Instant::now();
        let req = req.into_inner();
        let r = (|| {
            if req.plaintext.is_empty() || req.plaintext.len() > MAX_PLAINTEXT {
                return Err(tonic::Status::invalid_argument(format!(
                    "the plaintext must be 1 to {MAX_PLAINTEXT} bytes, not {}",
                    req.plaintext.len()
                )));
            }
            let key = {
                let st = self.0.state.read();
                st.keys
                    .get(&st.keys.primary)
                    .cloned()
                    .ok_or_else(|| tonic::Status::internal("the primary key is missing"))?
            };
            let ciphertext = Sealer::seal(&key, &req.plaintext).map_err(tonic::Status::internal)?;
            tracing::debug!(uid = %req.uid, key_id = %key.id, "encrypt");
            Ok(pb::EncryptResponse {
                ciphertext,
                key_id: key.id,
                annotations: Default::default(),
            })
        })();
        self.0.record("Encrypt", start, &r);
        r.map(tonic::Response::new)
    }

    async fn decrypt(
        &self,
        req: tonic::Request<pb::DecryptRequest>,
    ) -> Result<tonic::Response<pb::DecryptResponse>, tonic::Status> {
        let start = Instant::now();
        let req = req.into_inner();
        let r = (|| {
            let key = self
                .0
                .state
                .read()
                .keys
                .get(&req.key_id)
                .cloned()
                .ok_or_else(|| {
                    tonic::Status::not_found(format!("unknown key id {:?}", req.key_id))
                })?;
            let plaintext = Sealer::open(&key, &req.ciphertext).map_err(|e| {
                tonic::Status::invalid_argument(format!("decrypting with key {:?}: {e}", key.id))
            })?;
            tracing::debug!(uid = %req.uid, key_id = %key.id, "decrypt");
            Ok(pb::DecryptResponse { plaintext })
        })();
        self.0.record("Decrypt", start, &r);
        r.map(tonic::Response::new)
    }
}

/// Binds the socket: a stale file left by a dead process is replaced, a live one is an error.
/// The socket is made mode 0600, its directory if missing 0700.
pub fn bind(path: &Path) -> Result<tokio::net::UnixListener, StartError> {
    use std::os::unix::fs::PermissionsExt;
    let listen_err = |source| StartError::Listen {
        path: path.to_path_buf(),
        source,
    };
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(StartError::InUse(path.to_path_buf()));
        }
        tracing::info!(socket = %path.display(), "replacing a stale socket");
        std::fs::remove_file(path).map_err(listen_err)?;
    }
    if let Some(dir) = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty() && !d.exists())
    {
        std::fs::create_dir_all(dir).map_err(listen_err)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(listen_err)?;
    }
    let listener = tokio::net::UnixListener::bind(path).map_err(listen_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(listen_err)?;
    Ok(listener)
}

/// Serves the plugin on `listener` (at `path`) until `shutdown`, re-reading the keys file
/// every [`KEYS_POLL`]; removes the socket when done.
pub async fn serve(
    plugin: Arc<Plugin>,
    listener: tokio::net::UnixListener,
    path: PathBuf,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    {
        let plugin = plugin.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(KEYS_POLL) => plugin.reload(),
                }
            }
        });
    }
    let incoming = futures::stream::unfold(listener, |l| async move {
        let r = l.accept().await.map(|(s, _)| s);
        Some((r, l))
    });
    let r = tonic::transport::Server::builder()
        .add_service(
            pb::key_management_service_server::KeyManagementServiceServer::new(Service(plugin)),
        )
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled())
        .await;
    let _ = std::fs::remove_file(&path);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn client(
        path: &Path,
    ) -> pb::key_management_service_client::KeyManagementServiceClient<tonic::transport::Channel>
    {
        let path = path.to_path_buf();
        let channel = tonic::transport::Endpoint::from_static("http://localhost")
            .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
                let path = path.clone();
                async move {
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                        tokio::net::UnixStream::connect(path).await?,
                    ))
                }
            }))
            .await
            .unwrap();
        pb::key_management_service_client::KeyManagementServiceClient::new(channel)
    }

    #[tokio::test]
    async fn encrypts_with_the_primary_decrypts_with_any_and_follows_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let keys_path = dir.path().join("keys.json");
        let sock = dir.path().join("kms.sock");
        let plugin = Plugin::open(&keys_path).unwrap();
        let listener = bind(&sock).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(
            matches!(bind(&sock), Err(StartError::InUse(_))),
            "a live socket is not taken over"
        );
        let stop = CancellationToken::new();
        let task = tokio::spawn(serve(plugin.clone(), listener, sock.clone(), stop.clone()));
        let mut c = client(&sock).await;
        let s = c.status(pb::StatusRequest {}).await.unwrap().into_inner();
        assert_eq!((s.version.as_str(), s.healthz.as_str()), ("v2", "ok"));
        let first = s.key_id;
        let e = c
            .encrypt(pb::EncryptRequest {
                plaintext: b"dek".to_vec(),
                uid: "u".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(e.key_id, first);
        // Rotation through the file, as `skiff-kms rotate` does it.
        let mut keys = keys::load(&keys_path).unwrap();
        let second = keys.rotate().unwrap();
        keys::save(&keys_path, &keys).unwrap();
        plugin.reload();
        let s = c.status(pb::StatusRequest {}).await.unwrap().into_inner();
        assert_eq!(s.key_id, second);
        let d = c
            .decrypt(pb::DecryptRequest {
                ciphertext: e.ciphertext.clone(),
                uid: "u".into(),
                key_id: first.clone(),
                annotations: Default::default(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(d.plaintext, b"dek");
        // An unknown key id is named.
        let err = c
            .decrypt(pb::DecryptRequest {
                ciphertext: e.ciphertext.clone(),
                uid: "u".into(),
                key_id: "nope".into(),
                annotations: Default::default(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound);
        assert!(err.message().contains("\"nope\""));
        // A broken file is reported by Status, and the keys in force go on serving.
        std::fs::write(&keys_path, b"{").unwrap();
        plugin.reload();
        let s = c.status(pb::StatusRequest {}).await.unwrap().into_inner();
        assert!(s.healthz.starts_with("keys file"), "{}", s.healthz);
        assert_eq!(s.key_id, second);
        // Empty plaintext is refused.
        let err = c
            .encrypt(pb::EncryptRequest {
                plaintext: vec![],
                uid: "u".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        stop.cancel();
        task.await.unwrap().unwrap();
        assert!(!sock.exists(), "the socket is removed on shutdown");
    }

    #[tokio::test]
    async fn a_stale_socket_file_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("kms.sock");
        drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
        assert!(sock.exists());
        bind(&sock).unwrap();
    }
}
