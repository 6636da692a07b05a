//! The connection to the API server: one HTTP/2 channel (TLS with the cluster CA, the client
//! certificate or a bearer token), a client-side rate limit, and a span and metrics for
//! every call.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use skiff_proto::v1 as pb;
use skiff_proto::v1::resources_client::ResourcesClient;
use skiff_proto::v1::server_client::ServerClient;
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tracing::Instrument;

use crate::config::{Config, TokenSource};
use crate::error::{Error, Result};

/// HTTP/2 receive window per stream.
pub const STREAM_WINDOW: u32 = 4 * 1024 * 1024;
/// HTTP/2 receive window per connection.
pub const CONNECTION_WINDOW: u32 = 8 * 1024 * 1024;

/// A handle on the API server, cheap to clone and share between tasks.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    /// Replaced whole when the client certificate changes ([`Client::set_identity`]): calls
    /// made after use the new one, calls and watches already running finish on the old.
    channel: parking_lot::RwLock<Channel>,
    /// What the channel was made from, to make it again with another identity.
    config: Config,
    token: Option<MetadataValue<tonic::metadata::Ascii>>,
    /// A token read from a file, read again as it is renewed; `token` is unused then.
    token_file: Option<TokenSource>,
    limiter: Option<DefaultDirectRateLimiter>,
    metrics: ClientMetrics,
    namespace: String,
    timeout: Duration,
    server: String,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("server", &self.inner.server)
            .finish()
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    verb: String,
    resource: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerbLabels {
    verb: String,
}

/// The client's request metrics.
#[derive(Clone)]
struct ClientMetrics {
    requests: Family<CallLabels, Counter>,
    latency: Family<VerbLabels, Histogram>,
    throttled: Counter,
}

impl ClientMetrics {
    fn new() -> Self {
        ClientMetrics {
            requests: Family::default(),
            latency: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0005, 2.0, 16))
            }),
            throttled: Counter::default(),
        }
    }
}

impl Client {
    /// Connects with the current context of a kubeconfig file.
    pub fn from_kubeconfig(path: impl AsRef<std::path::Path>) -> Result<Self> {
        Self::new(Config::from_kubeconfig(path)?)
    }

    /// Connects with the kubeconfig `kubectl` would use: `$KUBECONFIG`, else
    /// `~/.kube/config`.
    pub fn try_default() -> Result<Self> {
        Self::new(Config::infer()?)
    }

    /// Connects with `kubeconfig` when given (a program's `--kubeconfig` flag), else as
    /// [`Client::try_default`] does.
    pub fn from_kubeconfig_or_default(kubeconfig: Option<&std::path::Path>) -> Result<Self> {
        match kubeconfig {
            Some(k) => Self::from_kubeconfig(k),
            None => Self::try_default(),
        }
    }

    /// Connects with an explicit configuration. The connection is made on first use and
    /// re-made whenever it breaks.
    pub fn new(config: Config) -> Result<Self> {
        let token_file = config
            .token_file
            .as_ref()
            .and(TokenSource::from_config(&config));
        Self::with_token_source(config, token_file)
    }

    fn with_token_source(config: Config, token_file: Option<TokenSource>) -> Result<Self> {
        let endpoint = endpoint(&config)?;
        let bearer = |t: &str| -> Result<MetadataValue<tonic::metadata::Ascii>> {
            format!("Bearer {t}")
                .parse()
                .map_err(|_| Error::Kubeconfig("the token is not valid ASCII".into()))
        };
        let token = match (&token_file, &config.token) {
            (Some(src), _) => {
                bearer(&src.token())?;
                None
            }
            (None, Some(t)) => Some(bearer(t)?),
            (None, None) => None,
        };
        let limiter = match (config.qps > 0.0, NonZeroU32::new(config.burst.max(1))) {
            (true, Some(burst)) => {
                let period = Duration::from_secs_f64(1.0 / f64::from(config.qps));
                Quota::with_period(period).map(|q| RateLimiter::direct(q.allow_burst(burst)))
            }
            _ => None,
        };
        Ok(Client {
            inner: Arc::new(Inner {
                channel: parking_lot::RwLock::new(endpoint.connect_lazy()),
                token,
                token_file,
                limiter,
                metrics: ClientMetrics::new(),
                namespace: config.namespace.clone(),
                timeout: config.timeout,
                server: config.server.clone(),
                config,
            }),
        })
    }

    /// Switches every clone of this client to another client certificate and key (PEM), as
    /// a kubelet does when it rotates its certificate: requests made from now on present the
    /// new one; those already running, watches included, finish on their connection.
    pub fn set_identity(&self, cert_pem: &[u8], key_pem: &[u8]) -> Result<()> {
        let mut config = self.inner.config.clone();
        config.identity = Some((cert_pem.to_vec(), key_pem.to_vec()));
        let channel = endpoint(&config)?.connect_lazy();
        *self.inner.channel.write() = channel;
        Ok(())
    }

    /// The namespace of the kubeconfig's context (`default` when it names none).
    pub fn default_namespace(&self) -> &str {
        &self.inner.namespace
    }

    /// Registers the client's request metrics (`skiff_client_requests_total`,
    /// `skiff_client_request_duration_seconds`, `skiff_client_rate_limited_total`).
    pub fn register_metrics(&self, registry: &mut Registry) {
        let m = &self.inner.metrics;
        registry.register(
            "skiff_client_requests",
            "API requests by verb, resource and result",
            m.requests.clone(),
        );
        registry.register(
            "skiff_client_request_duration_seconds",
            "API request latency by verb",
            m.latency.clone(),
        );
        registry.register(
            "skiff_client_rate_limited",
            "Requests that waited for the client-side rate limit",
            m.throttled.clone(),
        );
    }

    /// The server's version.
    pub async fn version(&self) -> Result<pb::VersionInfo> {
        self.call(
            "get",
            "version",
            pb::VersionRequest {},
            |mut c, r| async move { c.version(r).await },
        )
        .await
    }

    pub(crate) fn resources(&self) -> ResourcesClient<Channel> {
        ResourcesClient::new(self.inner.channel.read().clone())
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX)
    }

    fn server(&self) -> ServerClient<Channel> {
        ServerClient::new(self.inner.channel.read().clone())
    }

    /// Wraps a message with credentials and the call deadline.
    pub(crate) fn request<T>(&self, msg: T, deadline: bool) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        if let Some(t) = &self.inner.token {
            r.metadata_mut().insert("authorization", t.clone());
        } else if let Some(src) = &self.inner.token_file {
            // The current token, as the file holds it after a renewal.
            match format!("Bearer {}", src.token()).parse() {
                Ok(v) => {
                    r.metadata_mut().insert("authorization", v);
                }
                Err(_) => tracing::warn!("the token file holds a token that is not valid ASCII"),
            }
        }
        if deadline {
            r.set_timeout(self.inner.timeout);
        }
        r
    }

    /// Waits for the client-side rate limit.
    pub(crate) async fn throttle(&self) {
        if let Some(l) = &self.inner.limiter {
            if l.check().is_err() {
                self.inner.metrics.throttled.inc();
                l.until_ready().await;
            }
        }
    }

    /// Records one finished call.
    pub(crate) fn observe(&self, verb: &str, resource: &str, code: tonic::Code, took: Duration) {
        let m = &self.inner.metrics;
        m.requests
            .get_or_create(&CallLabels {
                verb: verb.into(),
                resource: resource.into(),
                code: format!("{code:?}"),
            })
            .inc();
        m.latency
            .get_or_create(&VerbLabels { verb: verb.into() })
            .observe(took.as_secs_f64());
    }

    async fn call<T, R, F, Fut>(&self, verb: &str, resource: &str, msg: T, f: F) -> Result<R>
    where
        F: FnOnce(ServerClient<Channel>, tonic::Request<T>) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<tonic::Response<R>, tonic::Status>>,
    {
        let call = f(self.server(), self.request(msg, true));
        self.unary(verb, resource, "", call).await
    }

    /// Runs one unary call (not yet started): waits for the rate limit, then runs it in a
    /// span and records its outcome.
    pub(crate) async fn unary<R, Fut>(
        &self,
        verb: &str,
        resource: &str,
        namespace: &str,
        call: Fut,
    ) -> Result<R>
    where
        Fut: std::future::Future<Output = std::result::Result<tonic::Response<R>, tonic::Status>>,
    {
        self.throttle().await;
        let start = Instant::now();
        let span = tracing::debug_span!("skiff.request", verb, resource, namespace);
        let result = call.instrument(span).await;
        let code = result
            .as_ref()
            .map(|_| tonic::Code::Ok)
            .unwrap_or_else(|s| s.code());
        self.observe(verb, resource, code, start.elapsed());
        Ok(result?.into_inner())
    }
}

/// The endpoint `config` describes: its server, TLS with its CA and client certificate.
fn endpoint(config: &Config) -> Result<Endpoint> {
    let mut endpoint = Endpoint::from_shared(config.server.clone())
        .map_err(|e| Error::Kubeconfig(format!("server {:?}: {e}", config.server)))?
        .connect_timeout(Duration::from_secs(10))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20))
        .keep_alive_while_idle(true)
        // HTTP/2's default 64 KiB windows throttle large lists and busy watches.
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW);
    if config.server.starts_with("https://") {
        let mut tls = ClientTlsConfig::new();
        if let Some(ca) = &config.ca_pem {
            tls = tls.ca_certificate(Certificate::from_pem(ca));
        }
        if let Some((cert, key)) = &config.identity {
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        endpoint = endpoint.tls_config(tls)?;
    }
    Ok(endpoint)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bearer(c: &Client) -> Option<String> {
        c.request((), false)
            .metadata()
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_string())
    }

    #[tokio::test]
    async fn each_request_carries_the_current_token_of_a_rotated_file() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("token");
        std::fs::write(&path, "one").unwrap();
        let mut config = Config::new("https://127.0.0.1:1");
        config.token = Some("one".into());
        config.token_file = Some(path.clone());
        // Read again on every request, so that the rotation shows at once.
        let source = TokenSource::file(&path, "one".into(), Duration::ZERO);
        let c = Client::with_token_source(config.clone(), Some(source)).unwrap();
        assert_eq!(bearer(&c).as_deref(), Some("Bearer one"));
        std::fs::write(d.path().join("new"), "two\n").unwrap();
        std::fs::rename(d.path().join("new"), &path).unwrap();
        assert_eq!(bearer(&c).as_deref(), Some("Bearer two"));
        assert_eq!(bearer(&c.clone()).as_deref(), Some("Bearer two"));
        // With the default period the reading the configuration made holds for a minute.
        let c = Client::new(config).unwrap();
        assert_eq!(bearer(&c).as_deref(), Some("Bearer one"));
        // A fixed token is sent as it is; no token, no header.
        let mut fixed = Config::new("https://127.0.0.1:1");
        fixed.token = Some("abc".into());
        assert_eq!(
            bearer(&Client::new(fixed).unwrap()).as_deref(),
            Some("Bearer abc")
        );
        assert_eq!(
            bearer(&Client::new(Config::new("https://127.0.0.1:1")).unwrap()),
            None
        );
    }
}
