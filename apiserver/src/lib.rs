//! Skiff's API server: Kubernetes objects stored in etcd and served over the Kubernetes REST
//! API, so that `kubectl` and any Kubernetes client work against it unchanged, and over
//! Skiff's gRPC API ([`grpc`]) on the same port.
//!
//! [`run`] starts it from a [`Config`] and serves until the shutdown token is cancelled.

//!
//! Layers, top down: [`server`] (the listener) → the doors ([`rest`], [`grpc`]) → the generic
//! [`store`] → [`admission`] and the per-type [`registry`] → [`storage`] (etcd and the watch
//! caches). What a request asks ([`request`]), its query ([`query`]) and the shared handler
//! state ([`state`]) are modules of their own, so that no layer reaches up.

pub mod admission;
pub mod apply;
pub mod audit;
pub mod auth;
pub mod certs;
pub mod crd;
pub mod encryption;
pub mod error;
pub mod grpc;
pub mod health;
pub mod metrics;
pub mod node_auth;
pub mod node_proxy;
pub mod openapi;
pub mod patch;
pub mod protobuf;
pub mod query;
pub mod rbac;
pub mod registry;
pub mod request;
pub mod rest;
pub mod selectors;
pub mod server;
pub mod state;
pub mod storage;
pub mod store;
pub mod strict;
pub mod tokens;
pub mod validation;
pub mod version;
pub mod webhook;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use tokio_util::sync::CancellationToken;

pub use error::{Error, Result};

/// How to run the API server.
#[derive(Debug, Clone)]
pub struct Config {
    /// etcd endpoints (`--etcd-servers`).
    pub etcd_servers: Vec<String>,
    /// Key prefix in etcd (`--etcd-prefix`).
    pub etcd_prefix: String,
    /// Address to listen on (`--bind-address`).
    pub bind_address: IpAddr,
    /// Port to listen on (`--secure-port`); 0 picks a free one.
    pub secure_port: u16,
    /// Address advertised to clients (`--advertise-address`).
    pub advertise_address: Option<IpAddr>,
    /// Where certificates and the admin kubeconfig live (`--data-dir`).
    pub data_dir: PathBuf,
    /// Service ClusterIP range (`--service-cluster-ip-range`).
    pub service_cluster_ip_range: IpNet,
    /// NodePort range (`--service-node-port-range`).
    pub service_node_port_range: (u16, u16),
    /// Static bearer tokens (`--token-auth-file`).
    pub token_auth_file: Option<PathBuf>,
    /// Extra names for the serving certificate (`--tls-san`).
    pub tls_sans: Vec<String>,
    /// Events kept per resource for resuming watches (`--watch-cache-size`).
    pub watch_cache_size: usize,
    /// How often etcd is compacted (`--etcd-compaction-interval`); zero disables.
    pub compaction_interval: Duration,
    /// How long in-flight requests may take to finish on shutdown.
    pub shutdown_grace: Duration,
    /// The admission chain (`--enable-admission-plugins`, `--disable-admission-plugins`, and
    /// the DefaultTolerationSeconds plugin's `--default-not-ready-toleration-seconds`,
    /// `--default-unreachable-toleration-seconds`).
    pub admission: admission::Config,
    /// Whether requests without credentials are served as `system:anonymous`
    /// (`--anonymous-auth`).
    pub anonymous_auth: bool,
    /// The authorizers, in order (`--authorization-mode`).
    pub authorization_modes: Vec<rbac::Mode>,
    /// Whether bootstrap tokens authenticate (`--enable-bootstrap-token-auth`).
    pub enable_bootstrap_token_auth: bool,
    /// ServiceAccount tokens: the signing and verifying keys, issuer, audiences and longest
    /// lifetime (`--service-account-*`, `--api-audiences`).
    pub service_accounts: tokens::Config,
    /// The audit policy and log (`--audit-policy-file`, `--audit-log-*`).
    pub audit: audit::Config,
    /// Encryption at rest: an `EncryptionConfiguration` file (`--encryption-provider-config`).
    pub encryption_provider_config: Option<PathBuf>,
    /// Whether that file is re-read when it changes
    /// (`--encryption-provider-config-automatic-reload`).
    pub encryption_provider_config_automatic_reload: bool,
    /// Where `componentstatuses` finds the scheduler's and controller manager's health
    /// checks (`--scheduler-healthz-url`, `--controller-manager-healthz-url`).
    pub components: registry::componentstatus::Components,
}

impl Config {
    /// A configuration with Kubernetes' defaults for everything but etcd and the data dir.
    pub fn new(etcd_servers: Vec<String>, data_dir: PathBuf) -> Self {
        Config {
            etcd_servers,
            etcd_prefix: "/registry".into(),
            bind_address: IpAddr::from([127, 0, 0, 1]),
            secure_port: 6443,
            advertise_address: None,
            data_dir,
            service_cluster_ip_range: "10.96.0.0/12".parse().expect("valid CIDR"),
            service_node_port_range: (30000, 32767),
            token_auth_file: None,
            tls_sans: Vec::new(),
            watch_cache_size: 10_000,
            compaction_interval: Duration::from_secs(300),
            shutdown_grace: Duration::from_secs(10),
            admission: admission::Config::default(),
            anonymous_auth: true,
            authorization_modes: vec![rbac::Mode::Node, rbac::Mode::Rbac],
            enable_bootstrap_token_auth: true,
            service_accounts: tokens::Config::default(),
            audit: audit::Config::default(),
            encryption_provider_config: None,
            encryption_provider_config_automatic_reload: false,
            components: registry::componentstatus::Components::default(),
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Certificates could not be made or read.
    #[error(transparent)]
    Certs(#[from] certs::CertError),
    /// The TLS configuration was refused.
    #[error("TLS configuration: {0}")]
    Tls(String),
    /// The token file is malformed.
    #[error(transparent)]
    Tokens(#[from] auth::TokenFileError),
    /// The admission flags name plugins that cannot run.
    #[error(transparent)]
    Admission(#[from] admission::ConfigError),
    /// The ServiceAccount token keys or flags were refused.
    #[error(transparent)]
    ServiceAccountTokens(#[from] tokens::ConfigError),
    /// The encryption provider configuration was refused.
    #[error("encryption provider configuration {path}: {source}")]
    Encryption {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: encryption::ConfigError,
    },
    /// etcd could not be reached.
    #[error("connecting to etcd at {endpoints:?}: {source}")]
    Etcd {
        /// The endpoints tried.
        endpoints: Vec<String>,
        /// Why.
        #[source]
        source: Error,
    },
    /// The listening socket could not be opened.
    #[error("listening on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The audit policy or log was refused.
    #[error(transparent)]
    Audit(#[from] audit::ConfigError),
    /// Creating the default namespaces failed.
    #[error("bootstrapping the cluster objects: {0}")]
    Bootstrap(#[source] Error),
}

/// A started server: its address, and the task serving it.
pub struct Running {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The admin kubeconfig.
    pub admin_kubeconfig: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Waits until the server has shut down and drained.
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

/// Starts the server; it runs until `shutdown` is cancelled.
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running, StartError> {
    let rbac = rbac::Rbac::new();
    let chain = admission::Chain::new(&config.admission)?;
    let escalation = rbac::escalation::Escalation::new(rbac.clone(), chain.authorizer());
    let chain = chain.with_internal(escalation);
    let encryption_metrics = Arc::new(encryption::Metrics::new());
    let metrics = Arc::new(metrics::Metrics::new_with(|r| {
        encryption_metrics.register(r);
        chain.register_metrics(r);
    }));
    let encryption = match &config.encryption_provider_config {
        // (Automatic reload without a file is refused by the flags.)
        None => encryption::Encryption::none(encryption_metrics),
        Some(path) => {
            let path = path.display().to_string();
            let reload = config.encryption_provider_config_automatic_reload;
            let e = encryption::Encryption::load(&path, reload, encryption_metrics)
                .await
                .map_err(|source| StartError::Encryption { path, source })?;
            e.start(&shutdown);
            e
        }
    };
    let auditor = config.audit.build(metrics.clone())?;
    let connect_host = match config.advertise_address {
        Some(a) => a,
        None if config.bind_address.is_unspecified() => IpAddr::from([127, 0, 0, 1]),
        None => config.bind_address,
    };

    let addr = SocketAddr::new(config.bind_address, config.secure_port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| StartError::Bind { addr, source })?;
    let advertise = SocketAddr::new(connect_host, addr.port()).to_string();

    let ranges = registry::service::allocator::Ranges {
        service_cidr: config.service_cluster_ip_range,
        node_ports: config.service_node_port_range,
    };
    let mut sans = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "kubernetes".to_string(),
        "kubernetes.default".to_string(),
        "kubernetes.default.svc".to_string(),
        "kubernetes.default.svc.cluster.local".to_string(),
        ranges.first_ip().to_string(),
        connect_host.to_string(),
    ];
    if !config.bind_address.is_unspecified() {
        sans.push(config.bind_address.to_string());
    }
    sans.extend(config.tls_sans.iter().cloned());
    sans.dedup();
    let server_url = format!("https://{advertise}");
    let pki = certs::Pki::load_or_create(&config.data_dir, &sans, &server_url)?;
    let tls = server::tls_config(&pki).map_err(|e| StartError::Tls(e.to_string()))?;
    let sa_tokens = Arc::new(tokens::Tokens::new(
        &config.service_accounts,
        &config.data_dir,
    )?);
    let mut authn = auth::Authenticator::new().anonymous(config.anonymous_auth);
    if let Some(path) = &config.token_auth_file {
        authn = authn.with_tokens(Arc::new(auth::tokenfile::TokenFile::load(path)?));
    }

    // etcd may come up after us (compose, systemd): keep trying for a while.
    let backoff =
        skiff_rules::Backoff::exponential(Duration::from_millis(200), Duration::from_secs(3));
    let mut attempt = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let etcd = loop {
        match storage::Etcd::connect(&config.etcd_servers, &config.etcd_prefix, metrics.clone())
            .await
        {
            Ok(s) => match s.current_revision().await {
                Ok(_) => break s.with_encryption(encryption.clone()),
                Err(e) if tokio::time::Instant::now() > deadline => {
                    return Err(StartError::Etcd {
                        endpoints: config.etcd_servers.clone(),
                        source: e,
                    })
                }
                Err(_) => {}
            },
            Err(e) if tokio::time::Instant::now() > deadline => {
                return Err(StartError::Etcd {
                    endpoints: config.etcd_servers.clone(),
                    source: e,
                })
            }
            Err(e) => tracing::warn!(error = %e, "etcd not reachable yet; retrying"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Err(StartError::Etcd { endpoints: config.etcd_servers.clone(), source: Error::internal("shut down while connecting") }),
            _ = tokio::time::sleep(backoff.delay(attempt)) => {}
        }
        attempt += 1;
    };

    let store = store::GenericStore::new(etcd, chain, metrics.clone(), config.watch_cache_size);
    for info in registry::served(&ranges) {
        let info = registry::serviceaccount_token::with_token(info, &sa_tokens);
        let (_, cache) = store.serve(info);
        tokio::spawn(cache.run(store.etcd.clone(), shutdown.clone()));
    }
    for info in registry::review::served() {
        store.serve_unstored(info);
    }
    store.serve_unstored(
        registry::componentstatus::info(store.etcd.clone(), config.components.clone())
            .map_err(|e| StartError::Tls(e.to_string()))?,
    );
    // ServiceAccount tokens are checked against the objects they name, in the watch caches.
    let lookup = |plural: &str| {
        let r = store
            .find("", "v1", plural)
            .expect("a core resource is served");
        auth::authn::cached(store.cache(&r), r.prefix(store.etcd.prefix()))
    };
    authn = authn.with_audiences(sa_tokens.api_audiences().to_vec());
    authn = authn.with_tokens(Arc::new(tokens::ServiceAccountTokens::new(
        sa_tokens.clone(),
        lookup("serviceaccounts"),
        lookup("pods"),
        lookup("secrets"),
    )));
    let kubelets = node_proxy::Kubelets::new(&pki).map_err(|e| StartError::Tls(e.to_string()))?;
    if config.enable_bootstrap_token_auth {
        let secrets = store.find("", "v1", "secrets").expect("secrets are served");
        let source =
            auth::authn::cached(store.cache(&secrets), secrets.prefix(store.etcd.prefix()));
        authn = authn.with_tokens(Arc::new(node_auth::BootstrapTokens::new(source)));
    }
    rbac.attach(&store);
    // The Node authorizer goes in the slot `Mode::Node` names (None: none yet).
    let node_authorizer = node_authorizer(&store);
    let authz: Arc<dyn auth::Authorizer> = Arc::new(rbac::authorizers(
        &config.authorization_modes,
        &rbac,
        node_authorizer,
    ));
    store.admission().set_authorizer(authz.clone());
    let state = Arc::new(state::State {
        store,
        authn,
        authz,
        metrics,
        shutdown: shutdown.clone(),
        advertise,
        openapi: openapi::Docs::default(),
        kubelets,
        service_account_tokens: sa_tokens,
        audit: auditor.clone(),
    });
    for cache in state.store.caches() {
        cache.wait_ready().await;
    }
    server::bootstrap(
        &state,
        &ranges.first_ip().to_string(),
        addr.port(),
        &connect_host.to_string(),
    )
    .await
    .map_err(StartError::Bootstrap)?;
    rbac::bootstrap::reconcile(&state.store)
        .await
        .map_err(StartError::Bootstrap)?;
    tokio::spawn(server::compaction_loop(
        state.clone(),
        config.compaction_interval,
        shutdown.clone(),
    ));
    // The policies' type checking belongs to their plugin, as in kube-apiserver: with the
    // plugin off, nothing writes their status.
    let policies_on = state
        .store
        .admission()
        .names()
        .contains(&"ValidatingAdmissionPolicy");
    if let Some(policies) = state
        .store
        .find(admission::policy::GROUP, "v1", admission::policy::POLICIES)
        .filter(|_| policies_on)
    {
        tokio::spawn(admission::policy::status::run(
            state.clone(),
            |s: &state::State| &s.store as &dyn registry::Objects,
            state.store.cache(&policies),
            shutdown.clone(),
        ));
    }
    let (synced, crds_served) = tokio::sync::oneshot::channel();
    tokio::spawn(crd::run(state.clone(), shutdown.clone(), synced));
    let _ = tokio::time::timeout(Duration::from_secs(30), crds_served).await;
    {
        let state = state.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let opts = request::WriteOpts::internal(server::MANAGER);
            registry::namespace::finalize_empty(&state.store, shutdown, opts).await
        });
    }

    tracing::info!(%addr, kubeconfig = %pki.admin_kubeconfig.display(), "serving the Kubernetes API");
    let grace = config.shutdown_grace;
    let task = tokio::spawn(async move {
        server::serve(listener, Arc::new(tls), state, shutdown, grace).await;
        // Events still buffered are written before the process goes.
        if let Some(a) = auditor {
            let _ = tokio::task::spawn_blocking(move || a.shutdown(Duration::from_secs(10))).await;
        }
    });
    Ok(Running {
        addr,
        admin_kubeconfig: pki.admin_kubeconfig.clone(),
        task,
    })
}

/// Kubernetes' Node authorizer over the pods (and claims) the watch caches hold.
fn node_authorizer(store: &store::GenericStore) -> Option<Box<dyn auth::Authorizer>> {
    let pods = store.find("", "v1", "pods")?;
    let node_field = pods.selectable.iter().position(|f| f == "spec.nodeName")?;
    let claims = store
        .find("", "v1", "persistentvolumeclaims")
        .map(|c| (store.cache(&c), c.prefix(store.etcd.prefix())));
    let index = node_auth::authorizer::CachedPods::new(
        store.cache(&pods),
        pods.prefix(store.etcd.prefix()),
        node_field,
        claims,
    );
    Some(Box::new(node_auth::NodeAuthorizer::new(Arc::new(index))))
}
