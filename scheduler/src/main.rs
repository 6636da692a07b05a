//! `skiff-scheduler`: parses flags and the configuration file, elects a leader if asked, and
//! runs the scheduler until SIGTERM.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use skiff_client::events::Recorder;
use skiff_client::leader::{self, LeaderElector, Outcome};
use skiff_client::Client;
use skiff_http::daemon;
use skiff_scheduler::config::{parse_duration, SchedulerConfig};
use tokio_util::sync::CancellationToken;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Skiff's scheduler: binds pending pods to nodes.
#[derive(Debug, Parser)]
#[command(name = "skiff-scheduler", version)]
struct Args {
    /// The kubeconfig to reach the API server with (default: $KUBECONFIG, ~/.kube/config).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// A KubeSchedulerConfiguration file (profiles, plugins, weights, leader election).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Elect a leader among replicas (overrides the configuration file); `--leader-elect`
    /// alone means true, as with kube-scheduler.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    leader_elect: Option<bool>,
    /// The leader's Lease name (overrides `leaderElection.resourceName`, `kube-scheduler`).
    #[arg(long)]
    leader_elect_resource_name: Option<String>,
    /// The leader's Lease namespace (overrides `leaderElection.resourceNamespace`,
    /// `kube-system`).
    #[arg(long)]
    leader_elect_resource_namespace: Option<String>,
    /// How long a leader's Lease holds without renewal (overrides
    /// `leaderElection.leaseDuration`).
    #[arg(long)]
    leader_elect_lease_duration: Option<String>,
    /// How long the leader keeps trying to renew before giving up (overrides
    /// `leaderElection.renewDeadline`).
    #[arg(long)]
    leader_elect_renew_deadline: Option<String>,
    /// How often candidates try to acquire or renew (overrides `leaderElection.retryPeriod`).
    #[arg(long)]
    leader_elect_retry_period: Option<String>,
    /// Address for /healthz, /readyz and /metrics.
    #[arg(long, default_value = "127.0.0.1")]
    bind_address: IpAddr,
    /// Port for /healthz, /readyz and /metrics (0 picks a free one).
    #[arg(long, default_value_t = 10251)]
    port: u16,
    /// Requests per second to the API server (overrides `clientConnection.qps`).
    #[arg(long)]
    kube_api_qps: Option<f32>,
    /// Burst of requests to the API server (overrides `clientConnection.burst`).
    #[arg(long)]
    kube_api_burst: Option<u32>,
    #[command(flatten)]
    log: daemon::LogFlags,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    args.log.init();
    let config = match &args.config {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            SchedulerConfig::from_yaml(&text)?
        }
        None => SchedulerConfig::default(),
    };
    let profiles = config.profiles()?;
    let cc = &config.client_connection;
    let kubeconfig = args
        .kubeconfig
        .clone()
        .or_else(|| (!cc.kubeconfig.is_empty()).then(|| PathBuf::from(&cc.kubeconfig)));
    let mut client_config = match &kubeconfig {
        Some(k) => skiff_client::Config::from_kubeconfig(k)?,
        None => skiff_client::Config::infer()?,
    };
    client_config.qps = args.kube_api_qps.unwrap_or(cc.qps);
    client_config.burst = args.kube_api_burst.unwrap_or(cc.burst);
    let client = Client::new(client_config)?;

    let shutdown = CancellationToken::new();
    let ready = CancellationToken::new();
    let addr = SocketAddr::new(args.bind_address, args.port);
    let metrics = std::sync::Arc::new(skiff_scheduler::metrics::Metrics::default());
    let events = Recorder::new(
        client.clone(),
        "default-scheduler",
        &leader::default_identity(),
    );
    let mut registry = prometheus_client::registry::Registry::default();
    client.register_metrics(&mut registry);
    events.register_metrics(&mut registry);
    metrics.register(&mut registry);
    let health = daemon::serve_health(
        addr,
        registry,
        ready.clone(),
        "not scheduling",
        shutdown.clone(),
    )
    .await?;
    tracing::info!(%health, "serving /healthz, /readyz and /metrics");

    daemon::cancel_on_signal(shutdown.clone());

    let mut le = config.leader_election.clone();
    let overrides = [
        (&args.leader_elect_resource_name, &mut le.resource_name),
        (
            &args.leader_elect_resource_namespace,
            &mut le.resource_namespace,
        ),
        (&args.leader_elect_lease_duration, &mut le.lease_duration),
        (&args.leader_elect_renew_deadline, &mut le.renew_deadline),
        (&args.leader_elect_retry_period, &mut le.retry_period),
    ];
    for (flag, field) in overrides {
        if let Some(v) = flag {
            *field = v.clone();
        }
    }
    let elect = args.leader_elect.unwrap_or(le.leader_elect);
    let work_client = client.clone();
    let work = move |token: CancellationToken| async move {
        ready.cancel();
        skiff_scheduler::scheduler::run(work_client, profiles, events, metrics, token).await;
    };
    if !elect {
        work(shutdown.clone()).await;
        return Ok(());
    }
    let mut lc = leader::Config::new(
        &le.resource_namespace,
        &le.resource_name,
        &leader::default_identity(),
    );
    lc.lease_duration = parse_duration(&le.lease_duration)?;
    lc.renew_deadline = parse_duration(&le.renew_deadline)?;
    lc.retry_period = parse_duration(&le.retry_period)?;
    match LeaderElector::new(client, lc).run(shutdown, work).await {
        Outcome::Shutdown => Ok(()),
        Outcome::Lost => {
            tracing::error!("lost leadership; exiting");
            std::process::exit(1)
        }
    }
}
