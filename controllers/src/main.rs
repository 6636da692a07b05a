//! `skiff-controller-manager`: parses flags, elects a leader if asked, and runs the
//! controllers until SIGTERM.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use skiff_client::leader::{self, LeaderElector, Outcome};
use skiff_client::Client;
use skiff_controllers::{Config, Context};
use skiff_http::daemon;
use skiff_rules::duration::parse as parse_duration;
use tokio_util::sync::CancellationToken;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Skiff's controller manager: keeps ReplicaSets, Deployments and the rest as declared.
#[derive(Debug, Parser)]
#[command(name = "skiff-controller-manager", version)]
struct Args {
    /// The kubeconfig to reach the API server with (default: $KUBECONFIG, ~/.kube/config).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Controllers to run: `*` for all, `name` to add one, `-name` to leave one out.
    #[arg(long, value_delimiter = ',', default_value = "*")]
    controllers: Vec<String>,
    /// Elect one active replica on the Lease `kube-system/<leader-elect-resource-name>`.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    leader_elect: bool,
    /// The Lease's name (kube-controller-manager's, so tools that look for the leader find it).
    #[arg(long, default_value = "kube-controller-manager")]
    leader_elect_resource_name: String,
    /// The Lease's namespace.
    #[arg(long, default_value = "kube-system")]
    leader_elect_resource_namespace: String,
    /// How long a leader's Lease holds without renewal.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    leader_elect_lease_duration: Duration,
    /// How long the leader keeps trying to renew before giving up.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    leader_elect_renew_deadline: Duration,
    /// How often candidates try to acquire or renew.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    leader_elect_retry_period: Duration,
    /// ReplicaSets reconciled at once.
    #[arg(long, default_value_t = 5)]
    concurrent_replicaset_syncs: usize,
    /// ReplicationControllers reconciled at once.
    #[arg(long, default_value_t = 5)]
    concurrent_rc_syncs: usize,
    /// Deployments reconciled at once.
    #[arg(long, default_value_t = 5)]
    concurrent_deployment_syncs: usize,
    /// DaemonSets reconciled at once.
    #[arg(long, default_value_t = 2)]
    concurrent_daemonset_syncs: usize,
    /// StatefulSets reconciled at once.
    #[arg(long, default_value_t = 5)]
    concurrent_statefulset_syncs: usize,
    /// Services whose endpoints are written at once.
    #[arg(long, default_value_t = 5)]
    concurrent_service_endpoint_syncs: usize,
    /// Jobs reconciled at once.
    #[arg(long, default_value_t = 5)]
    concurrent_job_syncs: usize,
    /// Objects the garbage collector handles at once.
    #[arg(long, default_value_t = 20)]
    concurrent_gc_syncs: usize,
    /// Namespaces emptied at once.
    #[arg(long, default_value_t = 10)]
    concurrent_namespace_syncs: usize,
    /// Pods whose generic ephemeral volumes' claims are made at once.
    #[arg(long = "concurrent-ephemeralvolume-syncs", default_value_t = 5)]
    concurrent_ephemeral_volume_syncs: usize,
    /// Give every node a pod CIDR from --cluster-cidr.
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    allocate_node_cidrs: bool,
    /// The cluster's pod network, e.g. 10.244.0.0/16.
    #[arg(long)]
    cluster_cidr: Option<String>,
    /// The prefix length of each node's pod CIDR.
    #[arg(long, default_value_t = 24)]
    node_cidr_mask_size: u8,
    /// Addresses for LoadBalancer Services, one each (e.g. 192.0.2.0/28); without it they
    /// get the Ready nodes' addresses.
    #[arg(long)]
    service_lb_pool: Option<String>,
    /// How long a node may go without a heartbeat before it is marked unreachable.
    #[arg(long, default_value = "40s", value_parser = parse_duration)]
    node_monitor_grace_period: Duration,
    /// How often nodes' heartbeats are checked.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    node_monitor_period: Duration,
    /// The cluster CA bundle (PEM) published as `ca.crt` in every namespace's
    /// `kube-root-ca.crt` ConfigMap (default: the CA of the kubeconfig's cluster).
    #[arg(long)]
    root_ca_file: Option<PathBuf>,
    /// Requests per second to the API server (0: no limit).
    #[arg(long, default_value_t = 20.0)]
    kube_api_qps: f32,
    /// Burst of requests to the API server.
    #[arg(long, default_value_t = 30)]
    kube_api_burst: u32,
    /// Address for /healthz, /readyz and /metrics.
    #[arg(long, default_value = "127.0.0.1")]
    bind_address: IpAddr,
    /// Port for /healthz, /readyz and /metrics (0 picks a free one).
    #[arg(long, default_value_t = 10252)]
    port: u16,
    /// The PEM CA certificate that signs approved CertificateSigningRequests of the
    /// kube-apiserver-client signers (with --cluster-signing-key-file; without both, none are
    /// signed).
    #[arg(long, requires = "cluster_signing_key_file")]
    cluster_signing_cert_file: Option<PathBuf>,
    /// The PEM key of --cluster-signing-cert-file.
    #[arg(long, requires = "cluster_signing_cert_file")]
    cluster_signing_key_file: Option<PathBuf>,
    /// The longest lifetime of a signed certificate (a request's spec.expirationSeconds may
    /// ask for less).
    #[arg(long, default_value = "8760h", value_parser = parse_duration)]
    cluster_signing_duration: Duration,
    /// How often every ResourceQuota's usage is recounted.
    #[arg(long, default_value = "5m0s", value_parser = parse_duration)]
    resource_quota_sync_period: Duration,
    /// ResourceQuotas recounted at once.
    #[arg(long, default_value_t = 5)]
    concurrent_resource_quota_syncs: usize,
    #[command(flatten)]
    log: daemon::LogFlags,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    args.log.init();
    for c in &args.controllers {
        let name = c.trim_start_matches('-');
        if name != "*" && !skiff_controllers::CONTROLLERS.contains(&name) {
            anyhow::bail!(
                "--controllers: unknown controller {name:?} (known: {})",
                skiff_controllers::CONTROLLERS.join(", ")
            );
        }
    }
    let node_ipam = match (args.allocate_node_cidrs, &args.cluster_cidr) {
        (false, _) => None,
        (true, None) => anyhow::bail!("--allocate-node-cidrs needs --cluster-cidr"),
        (true, Some(c)) => {
            let cluster_cidr: skiff_controllers::nodeipam::Cidr = c
                .parse()
                .map_err(|e: String| anyhow::anyhow!("--cluster-cidr: {e}"))?;
            if args.node_cidr_mask_size > 32
                || cluster_cidr.subnet(args.node_cidr_mask_size, 0).is_none()
            {
                anyhow::bail!(
                    "--node-cidr-mask-size={} does not fit in --cluster-cidr={c}",
                    args.node_cidr_mask_size
                );
            }
            Some(skiff_controllers::nodeipam::Config {
                cluster_cidr,
                mask: args.node_cidr_mask_size,
            })
        }
    };
    let service_lb_pool = args
        .service_lb_pool
        .as_deref()
        .map(|p| {
            p.parse::<skiff_controllers::nodeipam::Cidr>()
                .map_err(|e| anyhow::anyhow!("--service-lb-pool: {e}"))
        })
        .transpose()?;
    let csr_signer = match (
        &args.cluster_signing_cert_file,
        &args.cluster_signing_key_file,
    ) {
        (Some(c), Some(k)) => {
            let read = |p: &PathBuf, flag: &str| {
                std::fs::read_to_string(p)
                    .map_err(|e| anyhow::anyhow!("{flag} {}: {e}", p.display()))
            };
            Some(skiff_controllers::csr_signing::Signer::new(
                &read(c, "--cluster-signing-cert-file")?,
                &read(k, "--cluster-signing-key-file")?,
                args.cluster_signing_duration,
            )?)
        }
        _ => None,
    };
    let mut client_config = match &args.kubeconfig {
        Some(k) => skiff_client::Config::from_kubeconfig(k)?,
        None => skiff_client::Config::infer()?,
    };
    client_config.qps = args.kube_api_qps;
    client_config.burst = args.kube_api_burst;
    let root_ca = match &args.root_ca_file {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .map_err(|e| anyhow::anyhow!("--root-ca-file {}: {e}", p.display()))?,
        ),
        None => client_config
            .ca_pem
            .as_ref()
            .map(|pem| String::from_utf8_lossy(pem).into_owned()),
    };
    let client = Client::new(client_config)?;
    let config = Config {
        controllers: args.controllers.clone(),
        concurrent_replicaset_syncs: args.concurrent_replicaset_syncs.max(1),
        concurrent_rc_syncs: args.concurrent_rc_syncs.max(1),
        concurrent_deployment_syncs: args.concurrent_deployment_syncs.max(1),
        concurrent_daemonset_syncs: args.concurrent_daemonset_syncs.max(1),
        concurrent_statefulset_syncs: args.concurrent_statefulset_syncs.max(1),
        concurrent_service_endpoint_syncs: args.concurrent_service_endpoint_syncs.max(1),
        concurrent_job_syncs: args.concurrent_job_syncs.max(1),
        concurrent_gc_syncs: args.concurrent_gc_syncs.max(1),
        concurrent_namespace_syncs: args.concurrent_namespace_syncs.max(1),
        concurrent_ephemeral_volume_syncs: args.concurrent_ephemeral_volume_syncs.max(1),
        node_ipam,
        node_lifecycle: skiff_controllers::nodelifecycle::Config {
            grace: args.node_monitor_grace_period,
            period: args.node_monitor_period.max(Duration::from_millis(100)),
        },
        service_lb: skiff_controllers::servicelb::Config {
            pool: service_lb_pool,
        },
        root_ca,
        csr_signer,
        resource_quota: skiff_controllers::resourcequota::Config {
            sync_period: args.resource_quota_sync_period,
            concurrency: args.concurrent_resource_quota_syncs.max(1),
        },
    };

    let shutdown = CancellationToken::new();
    daemon::cancel_on_signal(shutdown.clone());
    let leading = CancellationToken::new();
    let mut registry = prometheus_client::registry::Registry::default();
    client.register_metrics(&mut registry);
    skiff_controllers::gc::register_metrics(&mut registry);
    let health = daemon::serve_health(
        SocketAddr::new(args.bind_address, args.port),
        registry,
        leading.clone(),
        "not leading",
        shutdown.clone(),
    )
    .await?;
    tracing::info!(%health, "serving /healthz, /readyz and /metrics");

    let work_client = client.clone();
    let work = move |token: CancellationToken| async move {
        leading.cancel();
        tracing::info!("running controllers");
        let ctx = Context::new(work_client, config, token.clone());
        skiff_controllers::run(ctx, token).await;
    };
    if !args.leader_elect {
        work(shutdown.clone()).await;
        return Ok(());
    }
    let mut lc = leader::Config::new(
        &args.leader_elect_resource_namespace,
        &args.leader_elect_resource_name,
        &leader::default_identity(),
    );
    lc.lease_duration = args.leader_elect_lease_duration;
    lc.renew_deadline = args.leader_elect_renew_deadline;
    lc.retry_period = args.leader_elect_retry_period;
    match LeaderElector::new(client, lc).run(shutdown, work).await {
        Outcome::Shutdown => Ok(()),
        Outcome::Lost => {
            tracing::error!("lost leadership; exiting");
            std::process::exit(1)
        }
    }
}
