//! `skiff-apiserver`: parses flags, starts the server, stops it on SIGTERM.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tokio_util::sync::CancellationToken;

// The API server allocates and frees many small JSON values per request; mimalloc does that
// markedly faster than the system allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Skiff's API server: Kubernetes objects in etcd, served to kubectl and any Kubernetes client.
#[derive(Debug, Parser)]
#[command(name = "skiff-apiserver", version)]
struct Args {
    /// A YAML file of flag values (`secure-port: 6443`); flags on the command line win.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Comma-separated etcd endpoints.
    #[arg(long, value_delimiter = ',', default_value = "http://127.0.0.1:2379")]
    etcd_servers: Vec<String>,
    /// Key prefix for every object in etcd.
    #[arg(long, default_value = "/registry")]
    etcd_prefix: String,
    /// How often to compact etcd's history (a Go duration: 5m, 1m30s; 0 disables).
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    etcd_compaction_interval: Duration,
    /// Address to serve on.
    #[arg(long, default_value = "127.0.0.1")]
    bind_address: IpAddr,
    /// Port to serve HTTPS (REST) on.
    #[arg(long, default_value_t = 6443)]
    secure_port: u16,
    /// Address clients are told to use (defaults to the bind address).
    #[arg(long)]
    advertise_address: Option<IpAddr>,
    /// Directory for the cluster CA, serving certificate and admin kubeconfig.
    #[arg(long, default_value = "/var/lib/skiff/apiserver")]
    data_dir: PathBuf,
    /// CIDR that Service ClusterIPs come from.
    #[arg(long, default_value = "10.96.0.0/12")]
    service_cluster_ip_range: ipnet::IpNet,
    /// Port range that NodePorts come from.
    #[arg(long, default_value = "30000-32767", value_parser = parse_ports)]
    service_node_port_range: (u16, u16),
    /// CSV file of static bearer tokens: token,user,uid,"group1,group2".
    #[arg(long)]
    token_auth_file: Option<PathBuf>,
    /// Extra names or addresses for the serving certificate (repeatable).
    #[arg(long = "tls-san")]
    tls_sans: Vec<String>,
    /// Recent events kept per resource so watches can resume.
    #[arg(long, default_value_t = 10_000)]
    watch_cache_size: usize,
    /// How long to let in-flight requests finish on SIGTERM.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    shutdown_delay: Duration,
    /// Admission plugins to run besides the default ones (NamespaceLifecycle, ServiceAccount,
    /// Priority, DefaultTolerationSeconds), comma-separated; the order is Kubernetes' own
    /// whatever the order given.
    #[arg(long, value_delimiter = ',')]
    enable_admission_plugins: Vec<String>,
    /// Default admission plugins not to run, comma-separated.
    #[arg(long, value_delimiter = ',')]
    disable_admission_plugins: Vec<String>,
    /// tolerationSeconds of the toleration for node.kubernetes.io/not-ready:NoExecute given
    /// to every pod that has none (the DefaultTolerationSeconds admission).
    #[arg(long, default_value_t = 300)]
    default_not_ready_toleration_seconds: i64,
    /// tolerationSeconds of the toleration for node.kubernetes.io/unreachable:NoExecute given
    /// to every pod that has none.
    #[arg(long, default_value_t = 300)]
    default_unreachable_toleration_seconds: i64,
    /// Serve requests without credentials as user system:anonymous in group
    /// system:unauthenticated (authorized like any other user); false answers them 401.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    anonymous_auth: bool,
    /// Ordered list of authorizers, comma-separated: Node, RBAC, AlwaysAllow.
    #[arg(long, value_delimiter = ',', default_value = "Node,RBAC", value_parser = parse_mode)]
    authorization_mode: Vec<skiff_apiserver::rbac::Mode>,
    /// Whether bootstrap tokens (Secrets of type bootstrap.kubernetes.io/token in
    /// kube-system) authenticate, as system:bootstrap:ID in system:bootstrappers.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    enable_bootstrap_token_auth: bool,
    /// PEM file of the private key ServiceAccount tokens are signed with (ECDSA P-256/P-384
    /// or RSA); without it and --service-account-key-file, a key is generated into the data
    /// dir at first start and kept.
    #[arg(long)]
    service_account_signing_key_file: Option<PathBuf>,
    /// PEM file of public keys (or certificates, or private keys) that verify ServiceAccount
    /// tokens (repeatable); defaults to the signing key's.
    #[arg(long = "service-account-key-file")]
    service_account_key_files: Vec<PathBuf>,
    /// The issuer (`iss`) of ServiceAccount tokens (repeatable: the first names new tokens,
    /// any is accepted).
    #[arg(long = "service-account-issuer", default_value = skiff_apiserver::tokens::DEFAULT_ISSUER)]
    service_account_issuers: Vec<String>,
    /// Audiences the API accepts in tokens, comma-separated (default: the issuers).
    #[arg(long, value_delimiter = ',')]
    api_audiences: Vec<String>,
    /// The longest lifetime a TokenRequest may give a token (a Go duration); longer requests
    /// are shortened to it.
    #[arg(long, value_parser = parse_duration)]
    service_account_max_token_expiration: Option<Duration>,
    /// The key set URI in the OIDC discovery document (default:
    /// https://ADVERTISE-ADDRESS:PORT/openid/v1/jwks).
    #[arg(long)]
    service_account_jwks_uri: Option<String>,
    /// The audit policy (an audit.k8s.io/v1 Policy, YAML or JSON): which requests the audit
    /// log records, and how much of them.
    #[arg(long)]
    audit_policy_file: Option<PathBuf>,
    /// Where the audit log goes: a file, or - for standard output; without it (or without a
    /// policy) nothing is audited.
    #[arg(long)]
    audit_log_path: Option<String>,
    /// Days to keep rotated audit logs, by the time in their names (0: forever).
    #[arg(long, default_value_t = 0)]
    audit_log_maxage: u64,
    /// Rotated audit logs to keep (0: all).
    #[arg(long, default_value_t = 0)]
    audit_log_maxbackup: usize,
    /// Megabytes the audit log grows to before it is rotated (0: 100).
    #[arg(long, default_value_t = 0)]
    audit_log_maxsize: u64,
    /// Format of the audit log: json (one audit.k8s.io/v1 Event per line) or legacy (one line
    /// of text per event).
    #[arg(long, default_value = "json", value_parser = skiff_apiserver::audit::Format::parse)]
    audit_log_format: skiff_apiserver::audit::Format,
    /// How requests wait for their audit events: blocking (written by the request),
    /// blocking-strict (and a request whose first event cannot be written fails), or batch
    /// (buffered and written by a thread of their own; a full buffer drops events, counted).
    #[arg(long, default_value = "blocking", value_parser = skiff_apiserver::audit::Mode::parse)]
    audit_log_mode: skiff_apiserver::audit::Mode,
    /// Events the batch buffer holds before new ones are dropped (batch mode).
    #[arg(long, default_value_t = 10_000)]
    audit_log_batch_buffer_size: usize,
    /// Events written together at most (batch mode).
    #[arg(long, default_value_t = 1)]
    audit_log_batch_max_size: usize,
    /// How long a batch waits to fill up before it is written (batch mode; a Go duration).
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    audit_log_batch_max_wait: Duration,
    /// Whether audit events over the size limit lose their request and response bodies (and
    /// are dropped if still too large).
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    audit_log_truncate_enabled: bool,
    /// The largest audit event written when truncating is enabled, in bytes.
    #[arg(long, default_value_t = 102_400)]
    audit_log_truncate_max_event_size: usize,
    /// An EncryptionConfiguration file (apiserver.config.k8s.io/v1): how resources are
    /// encrypted at rest in etcd (identity, aescbc, aesgcm, secretbox, kms v2).
    #[arg(long)]
    encryption_provider_config: Option<PathBuf>,
    /// Re-read --encryption-provider-config when its contents change (checked every 2s); a bad
    /// new file keeps the configuration in force.
    #[arg(long, requires = "encryption_provider_config", num_args = 0..=1, default_missing_value = "true", default_value_t = false, action = clap::ArgAction::Set)]
    encryption_provider_config_automatic_reload: bool,
    /// The scheduler's health check, probed for `kubectl get componentstatuses`.
    #[arg(long, default_value = "http://127.0.0.1:10251/healthz")]
    scheduler_healthz_url: String,
    /// The controller manager's health check, probed for `kubectl get componentstatuses`.
    #[arg(long, default_value = "http://127.0.0.1:10252/healthz")]
    controller_manager_healthz_url: String,
    /// Log format: text or json.
    #[arg(long, default_value = "text")]
    log_format: String,
    /// Log verbosity, 0-5 (as klog's -v).
    #[arg(short = 'v', long = "v", default_value_t = 2)]
    verbosity: u8,
}

/// A Go duration (`5m`, `1m30s`, `500ms`), as Kubernetes' flags take them.
fn parse_duration(s: &str) -> Result<Duration, String> {
    skiff_rules::duration::parse(s).map_err(|e| e.to_string())
}

fn parse_mode(s: &str) -> Result<skiff_apiserver::rbac::Mode, String> {
    skiff_apiserver::rbac::Mode::parse(s)
}

fn parse_ports(s: &str) -> Result<(u16, u16), String> {
    skiff_apiserver::registry::service::allocator::parse_port_range(s)
        .ok_or_else(|| format!("invalid port range {s:?} (want LOW-HIGH)"))
}

/// Flags from `--config`, placed before the command line's so the command line wins.
fn args_with_config() -> anyhow::Result<Vec<String>> {
    let argv: Vec<String> = std::env::args().collect();
    let mut path = None;
    for (i, a) in argv.iter().enumerate() {
        if let Some(p) = a.strip_prefix("--config=") {
            path = Some(p.to_string());
        } else if a == "--config" {
            path = argv.get(i + 1).cloned();
        }
    }
    let Some(path) = path else { return Ok(argv) };
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading config file {path}"))?;
    let map: serde_norway::Mapping =
        serde_norway::from_str(&text).with_context(|| format!("parsing config file {path}"))?;
    let mut out = vec![argv[0].clone()];
    for (k, v) in map {
        let k = k
            .as_str()
            .with_context(|| format!("{path}: keys must be flag names"))?
            .to_string();
        let values: Vec<String> = match v {
            serde_norway::Value::Sequence(s) => {
                s.iter().map(yaml_scalar).collect::<anyhow::Result<_>>()?
            }
            other => vec![yaml_scalar(&other)?],
        };
        for val in values {
            out.push(format!("--{k}={val}"));
        }
    }
    out.extend(argv.into_iter().skip(1));
    Ok(out)
}

fn yaml_scalar(v: &serde_norway::Value) -> anyhow::Result<String> {
    Ok(match v {
        serde_norway::Value::String(s) => s.clone(),
        serde_norway::Value::Number(n) => n.to_string(),
        serde_norway::Value::Bool(b) => b.to_string(),
        other => anyhow::bail!("config values must be scalars or lists, got {other:?}"),
    })
}

fn init_logging(format: &str, verbosity: u8) {
    let level = match verbosity {
        0 => "warn",
        1 | 2 => "info",
        3 | 4 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!(
            "{level},h2=warn,hyper=warn,tonic=warn,tower=warn"
        ))
    });
    // Colours only on a terminal: logs written to files stay plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse_from(args_with_config()?);
    init_logging(&args.log_format, args.verbosity);
    let mut config = skiff_apiserver::Config::new(args.etcd_servers, args.data_dir);
    config.etcd_prefix = args.etcd_prefix;
    config.bind_address = args.bind_address;
    config.secure_port = args.secure_port;
    config.advertise_address = args.advertise_address;
    config.service_cluster_ip_range = args.service_cluster_ip_range;
    config.service_node_port_range = args.service_node_port_range;
    config.token_auth_file = args.token_auth_file;
    config.tls_sans = args.tls_sans;
    config.watch_cache_size = args.watch_cache_size;
    config.compaction_interval = args.etcd_compaction_interval;
    config.shutdown_grace = args.shutdown_delay;
    config.anonymous_auth = args.anonymous_auth;
    config.authorization_modes = args.authorization_mode;
    config.admission = skiff_apiserver::admission::Config {
        enable: args.enable_admission_plugins,
        disable: args.disable_admission_plugins,
        default_tolerations: skiff_apiserver::admission::DefaultTolerations {
            not_ready_seconds: args.default_not_ready_toleration_seconds,
            unreachable_seconds: args.default_unreachable_toleration_seconds,
        },
    };
    config.enable_bootstrap_token_auth = args.enable_bootstrap_token_auth;
    config.encryption_provider_config = args.encryption_provider_config;
    config.encryption_provider_config_automatic_reload =
        args.encryption_provider_config_automatic_reload;
    config.components = skiff_apiserver::registry::componentstatus::Components {
        scheduler: args.scheduler_healthz_url,
        controller_manager: args.controller_manager_healthz_url,
    };
    config.service_accounts = skiff_apiserver::tokens::Config {
        signing_key_file: args.service_account_signing_key_file,
        key_files: args.service_account_key_files,
        issuers: args.service_account_issuers,
        api_audiences: args.api_audiences,
        max_token_expiration: args.service_account_max_token_expiration,
        jwks_uri: args.service_account_jwks_uri,
    };
    config.audit = skiff_apiserver::audit::Config {
        policy_file: args.audit_policy_file,
        log_path: args.audit_log_path,
        max_age_days: args.audit_log_maxage,
        max_backups: args.audit_log_maxbackup,
        max_size_mb: args.audit_log_maxsize,
        format: args.audit_log_format,
        mode: args.audit_log_mode,
        batch: skiff_apiserver::audit::Batch {
            buffer_size: args.audit_log_batch_buffer_size,
            max_size: args.audit_log_batch_max_size,
            max_wait: args.audit_log_batch_max_wait,
        },
        truncate: args.audit_log_truncate_enabled,
        max_event_size: args.audit_log_truncate_max_event_size,
    };

    let shutdown = CancellationToken::new();
    let signals = shutdown.clone();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
        }
        signals.cancel();
    });
    let running = skiff_apiserver::start(config, shutdown)
        .await
        .context("starting skiff-apiserver")?;
    running.wait().await;
    tracing::info!("stopped");
    Ok(())
}
