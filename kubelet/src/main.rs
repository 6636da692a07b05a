//! `skiff-kubelet`: parses flags, connects to the API server and the container runtime, and
//! runs the node agent until SIGTERM.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use axum::routing::get;
use clap::Parser;
use skiff_kubelet::{cri, node, Kubelet};
use tokio_util::sync::CancellationToken;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Skiff's kubelet: the node agent.
#[derive(Debug, Parser)]
#[command(name = "skiff-kubelet", version)]
struct Args {
    /// The kubeconfig to reach the API server with (default: $KUBECONFIG, ~/.kube/config).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// The node's name (default: the host name).
    #[arg(long)]
    node_name: Option<String>,
    /// The CRI endpoint of the container runtime.
    #[arg(long, default_value = "unix:///run/containerd/containerd.sock")]
    container_runtime_endpoint: String,
    /// Where the kubelet keeps its state.
    #[arg(long, default_value = "/var/lib/skiff-kubelet")]
    root_dir: PathBuf,
    /// Labels to register the node with: key=value,...
    #[arg(long, default_value = "")]
    node_labels: String,
    /// Taints to register the node with: key=value:Effect,...
    #[arg(long, default_value = "")]
    register_with_taints: String,
    /// The pod CIDR when the control plane assigns none.
    #[arg(long)]
    pod_cidr: Option<String>,
    /// The node's IP address (default: the first non-loopback IPv4 address).
    #[arg(long)]
    node_ip: Option<String>,
    /// The CNI configuration directory the container runtime reads.
    #[arg(long, default_value = "/etc/cni/net.d")]
    cni_conf_dir: PathBuf,
    /// The bridge pods attach to.
    #[arg(long, default_value = "cni0")]
    cni_bridge: String,
    /// Maximum pods on this node.
    #[arg(long, default_value_t = 110)]
    max_pods: u32,
    /// The kubelet's HTTPS port (logs, exec), published in the node status.
    #[arg(long, default_value_t = 10250)]
    port: u16,
    /// Address for /healthz, /readyz and /metrics.
    #[arg(long, default_value = "127.0.0.1")]
    healthz_bind_address: IpAddr,
    /// Port for /healthz, /readyz and /metrics (0 picks a free one).
    #[arg(long, default_value_t = 10248)]
    healthz_port: u16,
    /// How often the node's lease is renewed, e.g. 10s.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    node_lease_renew_interval: Duration,
    /// How often the node status is checked and written if it changed.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    node_status_update_frequency: Duration,
    /// How often an unchanged node status is written anyway.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    node_status_report_frequency: Duration,
    /// Log verbosity (0-5).
    #[arg(short = 'v', long = "v", default_value_t = 2)]
    verbosity: u8,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().map_err(|_| format!("invalid duration {s:?}"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" | "" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!("invalid duration {s:?}: use ms, s, m or h")),
    }
}

fn init_tracing(verbosity: u8) {
    let level = match verbosity {
        0 => "error",
        1 => "warn",
        2 => "info",
        3 | 4 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_tracing(args.verbosity);
    let name = match args.node_name.clone() {
        Some(n) => n,
        None => nix::unistd::gethostname()?.to_string_lossy().to_lowercase(),
    };
    let labels = node::parse_labels(&args.node_labels).map_err(anyhow::Error::msg)?;
    let taints = node::parse_taints(&args.register_with_taints).map_err(anyhow::Error::msg)?;
    std::fs::create_dir_all(&args.root_dir)
        .with_context(|| format!("creating --root-dir {}", args.root_dir.display()))?;
    let client = skiff_client::Client::from_kubeconfig_or_default(args.kubeconfig.as_deref())?;
    let runtime = cri::Runtime::connect(&args.container_runtime_endpoint)?;
    let kubelet = Kubelet {
        client,
        runtime,
        node: node::NodeConfig {
            name: name.clone(),
            labels,
            taints,
            pod_cidr: args.pod_cidr.clone(),
            node_ip: args.node_ip.clone(),
            port: args.port,
            max_pods: args.max_pods,
            root_dir: args.root_dir.clone(),
            lease_renew: args.node_lease_renew_interval,
            status_update: args.node_status_update_frequency,
            status_report: args.node_status_report_frequency,
        },
        cni_conf_dir: args.cni_conf_dir.clone(),
        cni_bridge: args.cni_bridge.clone(),
    };

    let shutdown = CancellationToken::new();
    let ready = CancellationToken::new();
    let addr = serve_health(
        SocketAddr::new(args.healthz_bind_address, args.healthz_port),
        ready.clone(),
        shutdown.clone(),
    )
    .await?;
    tracing::info!(node = %name, health = %addr, "kubelet starting");
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("shutting down");
        stop.cancel();
    });
    kubelet.run(ready, shutdown).await?;
    tracing::info!("kubelet stopped");
    Ok(())
}

/// `/healthz`, `/readyz` (200 once the node is registered) and `/metrics`.
async fn serve_health(
    addr: SocketAddr,
    ready: CancellationToken,
    shutdown: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let registry = std::sync::Arc::new(prometheus_client::registry::Registry::default());
    let app = axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/livez", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.clone();
                async move {
                    if ready.is_cancelled() {
                        (axum::http::StatusCode::OK, "ok")
                    } else {
                        (axum::http::StatusCode::SERVICE_UNAVAILABLE, "registering")
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let registry = registry.clone();
                async move {
                    let mut text = String::new();
                    let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
                    text
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
    });
    Ok(bound)
}
