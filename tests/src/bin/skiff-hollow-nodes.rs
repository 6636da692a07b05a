//! `skiff-hollow-nodes`: registers N fake nodes, keeps their leases fresh and marks pods bound
//! to them Running (see `skiff_e2e::hollow`), until SIGTERM. For exercising the control
//! plane at thousands of nodes on one machine.

use std::time::Duration;

use clap::Parser;
use skiff_client::Client;
use skiff_e2e::hollow::{self, Spec};
use tokio_util::sync::CancellationToken;

/// Fake nodes for scale tests.
#[derive(Debug, Parser)]
#[command(name = "skiff-hollow-nodes", version)]
struct Args {
    /// The kubeconfig to reach the API server with (default: $KUBECONFIG, ~/.kube/config).
    #[arg(long)]
    kubeconfig: Option<std::path::PathBuf>,
    /// How many nodes.
    #[arg(long, default_value_t = 10)]
    nodes: usize,
    /// Node names are `<prefix>-<n>`.
    #[arg(long, default_value = "hollow")]
    prefix: String,
    /// CPU capacity of each node.
    #[arg(long, default_value = "32")]
    cpu: String,
    /// Memory capacity of each node.
    #[arg(long, default_value = "256Gi")]
    memory: String,
    /// Pods per node.
    #[arg(long, default_value_t = 110)]
    max_pods: u32,
    /// Zones, assigned round-robin (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "zone-a,zone-b,zone-c")]
    zones: Vec<String>,
    /// Extra node labels, `key=value` (comma-separated).
    #[arg(long, value_delimiter = ',')]
    node_labels: Vec<String>,
    /// Seconds between lease renewals (0: none).
    #[arg(long, default_value_t = 10)]
    lease_renew_seconds: u64,
    /// API writes in flight at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter("info")
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    let mut labels = std::collections::BTreeMap::new();
    for l in &args.node_labels {
        let (k, v) = l
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--node-labels: {l:?} is not key=value"))?;
        labels.insert(k.to_string(), v.to_string());
    }
    let spec = Spec {
        count: args.nodes,
        prefix: args.prefix,
        cpu: args.cpu,
        memory: args.memory,
        pods: args.max_pods,
        zones: args.zones,
        labels,
        lease_renew: Duration::from_secs(args.lease_renew_seconds),
        concurrency: args.concurrency,
    };
    let mut cfg = match &args.kubeconfig {
        Some(k) => skiff_client::Config::from_kubeconfig(k)?,
        None => skiff_client::Config::infer()?,
    };
    cfg.qps = 0.0;
    let client = Client::new(cfg)?;
    hollow::register(&client, &spec).await?;
    tracing::info!(nodes = spec.count, "hollow nodes registered");
    let shutdown = CancellationToken::new();
    tokio::spawn(hollow::renew_leases(
        client.clone(),
        spec.clone(),
        shutdown.clone(),
    ));
    let pods = tokio::spawn(hollow::run_pods(client, spec, shutdown.clone()));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    shutdown.cancel();
    let _ = pods.await;
    Ok(())
}
