//! `skiff-proxy`: keeps this node's kernel rules in step with the cluster's Services and
//! EndpointSlices, and its routes with the other nodes' pod CIDRs, until SIGTERM.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use skiff_client::Client;
use skiff_http::daemon;
use skiff_proxy::iptables::{self, Iptables};
use skiff_proxy::metrics::Metrics;
use skiff_proxy::nft::netlink::Socket;
use skiff_proxy::proxier::{self, Program, Proxier};
use skiff_proxy::{routes, rules};
use skiff_rules::duration::parse as parse_duration;
use tokio_util::sync::CancellationToken;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Skiff's service proxy: makes Service addresses and node ports reach pod endpoints.
#[derive(Debug, Parser)]
#[command(name = "skiff-proxy", version)]
struct Args {
    /// The kubeconfig to reach the API server with (default: $KUBECONFIG, ~/.kube/config).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// This node's name (default: the host name, lower-cased).
    #[arg(long)]
    hostname_override: Option<String>,
    /// How rules are written: `nftables` (one nf_tables table over netlink) or `iptables`
    /// (chains through iptables-restore, for hosts without nf_tables).
    #[arg(long, default_value = "nftables", value_parser = ["nftables", "iptables"])]
    proxy_mode: String,
    /// The pods' address range: traffic to a ClusterIP from outside it is masqueraded, and
    /// pod traffic leaving it goes out with the node's address.
    #[arg(long)]
    cluster_cidr: Option<String>,
    /// Route every other node's pod CIDR to its InternalIP.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pod_routes: bool,
    /// How often the whole table is rewritten (changes are written as they come).
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    sync_period: Duration,
    /// Remove the rules (of both modes) and routes the proxy wrote, and exit.
    #[arg(long)]
    cleanup: bool,
    /// Address and port for /healthz, /readyz and /metrics (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:10249")]
    metrics_bind_address: SocketAddr,
    /// Requests per second to the API server.
    #[arg(long, default_value_t = 50.0)]
    kube_api_qps: f32,
    /// Burst of requests to the API server.
    #[arg(long, default_value_t = 100)]
    kube_api_burst: u32,
    #[command(flatten)]
    log: daemon::LogFlags,
}

/// `10.244.0.0/16` as an address and a prefix length.
fn parse_cidr(s: &str) -> anyhow::Result<(Ipv4Addr, u8)> {
    let (ip, len) = s.split_once('/').with_context(|| {
        format!("--cluster-cidr {s:?}: expected an IPv4 CIDR such as 10.244.0.0/16")
    })?;
    let ip: Ipv4Addr = ip
        .parse()
        .with_context(|| format!("--cluster-cidr {s:?}: {ip:?} is not an IPv4 address"))?;
    let len: u8 = len
        .parse()
        .ok()
        .filter(|l| *l <= 32)
        .with_context(|| format!("--cluster-cidr {s:?}: the prefix length must be 0 to 32"))?;
    Ok((ip, len))
}

/// Writes a sysctl, saying so when it cannot.
fn sysctl(path: &str, value: &str) {
    match std::fs::read_to_string(path) {
        Ok(v) if v.trim() == value => {}
        Ok(_) => {
            if let Err(e) = std::fs::write(path, value) {
                tracing::warn!(path, error = %e, "could not set");
            } else {
                tracing::info!(path, value, "set");
            }
        }
        Err(e) => tracing::warn!(path, error = %e, "not available"),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    args.log.init();
    let cluster_cidr = args.cluster_cidr.as_deref().map(parse_cidr).transpose()?;
    if args.cleanup {
        // Both modes' rules, as kube-proxy's --cleanup does; a host may lack either.
        let nft = Socket::open()
            .map_err(anyhow::Error::from)
            .and_then(|sock| Ok(rules::cleanup().commit(&sock)?));
        let ipt = iptables::cleanup(&iptables::Commands::default());
        match (&nft, &ipt) {
            (Err(n), Err(i)) => bail!("removing the rules: nftables: {n}; iptables: {i}"),
            (Err(e), _) if args.proxy_mode == "nftables" => bail!("removing the rules: {e}"),
            (_, Err(e)) if args.proxy_mode == "iptables" => bail!("removing the rules: {e}"),
            _ => {}
        }
        routes::apply(&Default::default()).context("removing the pod routes")?;
        tracing::info!("rules and routes removed");
        return Ok(());
    }
    let node = match &args.hostname_override {
        Some(n) if !n.is_empty() => n.clone(),
        Some(_) => bail!("--hostname-override must not be empty"),
        None => nix::unistd::gethostname()?.to_string_lossy().to_lowercase(),
    };
    let mut client_config = match &args.kubeconfig {
        Some(k) => skiff_client::Config::from_kubeconfig(k)?,
        None => skiff_client::Config::infer()?,
    };
    client_config.qps = args.kube_api_qps;
    client_config.burst = args.kube_api_burst;
    let client = Client::new(client_config)?;

    // Forwarding for pods and services; bridged pod-to-pod traffic through the IP hooks, so
    // a DNAT-ed connection's replies are translated back.
    sysctl("/proc/sys/net/ipv4/ip_forward", "1");
    sysctl("/proc/sys/net/bridge/bridge-nf-call-iptables", "1");

    let cfg = rules::Config { cluster_cidr };
    let program: Box<dyn Program> = if args.proxy_mode == "iptables" {
        Box::new(Iptables::new(cfg, &node, iptables::Commands::default()))
    } else {
        let sock = Socket::open().context("opening the nf_tables netlink socket")?;
        Box::new(Proxier::new(cfg, &node, sock))
    };

    let shutdown = CancellationToken::new();
    let ready = CancellationToken::new();
    let metrics = Arc::new(Metrics::default());
    let mut registry = prometheus_client::registry::Registry::default();
    client.register_metrics(&mut registry);
    metrics.register(&mut registry);
    let healthy = metrics.healthy.clone();
    let health = daemon::serve_health_checked(
        args.metrics_bind_address,
        registry,
        Arc::new(move || {
            if healthy.load(Ordering::Relaxed) {
                Ok(())
            } else {
                Err("the rules are not in place".into())
            }
        }),
        ready.clone(),
        "the rules are not in place yet",
        shutdown.clone(),
    )
    .await?;
    tracing::info!(%health, node, mode = %args.proxy_mode, "serving /healthz, /readyz and /metrics");
    daemon::cancel_on_signal(shutdown.clone());

    if args.pod_routes {
        tokio::spawn(routes::run(client.clone(), node.clone(), shutdown.clone()));
    }
    let on_sync = move |r: &Result<proxier::Sync, _>| {
        metrics.observe(r);
        match r {
            Ok(s) => {
                ready.cancel();
                let (build_ms, kernel_ms) =
                    (s.build.as_secs_f64() * 1e3, s.kernel.as_secs_f64() * 1e3);
                if s.full {
                    tracing::info!(
                        build_ms,
                        kernel_ms,
                        rules = s.rules,
                        elements = s.elements,
                        "rules written"
                    );
                } else {
                    tracing::debug!(build_ms, kernel_ms, messages = s.messages, "rules updated");
                }
            }
            Err(e) => tracing::error!(error = %e, "writing the rules failed; retrying"),
        }
    };
    proxier::run(client, program, args.sync_period, shutdown, on_sync).await;
    // The rules stay, so that services keep working while the proxy restarts.
    tracing::info!("stopped; the rules stay in place (--cleanup removes them)");
    Ok(())
}
