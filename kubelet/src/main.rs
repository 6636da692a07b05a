//! `skiff-kubelet`: parses flags, connects to the API server and the container runtime, and
//! runs the node agent until SIGTERM.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use skiff_http::daemon;
use skiff_kubelet::{cri, node, Kubelet};
use skiff_rules::duration::parse as parse_duration;
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
    /// The kubelet's HTTPS port (logs, exec), published in the node status (0 picks a free
    /// one).
    #[arg(long, default_value_t = 10250)]
    port: u16,
    /// The address the kubelet's HTTPS server listens on.
    #[arg(long, default_value = "0.0.0.0")]
    address: IpAddr,
    /// The CA whose client certificates the HTTPS server accepts (default: the cluster CA of
    /// the kubeconfig).
    #[arg(long)]
    client_ca_file: Option<PathBuf>,
    /// The HTTPS server's certificate (default: a self-signed one made at start).
    #[arg(long, requires = "tls_private_key_file")]
    tls_cert_file: Option<PathBuf>,
    /// The key of --tls-cert-file.
    #[arg(long, requires = "tls_cert_file")]
    tls_private_key_file: Option<PathBuf>,
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
    /// Where container logs are kept (default: <root-dir>/pod-logs).
    #[arg(long)]
    pod_logs_dir: Option<PathBuf>,
    /// The cluster DNS server address(es) pods with dnsPolicy ClusterFirst use: ip,...
    #[arg(long, value_delimiter = ',')]
    cluster_dns: Vec<String>,
    /// The cluster's DNS domain, searched by pods.
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    /// The resolver configuration pods with dnsPolicy Default get.
    #[arg(long, default_value = "/etc/resolv.conf")]
    resolv_conf: PathBuf,
    /// The cgroup pods' cgroups are made under.
    #[arg(long, default_value = "/")]
    cgroup_root: String,
    /// How often each pod is looked at again with nothing happening (and its configMap,
    /// secret and downwardAPI volumes refreshed), e.g. 1m.
    #[arg(long, default_value = "1m", value_parser = parse_duration)]
    sync_frequency: Duration,
    /// Unsafe sysctls (or patterns ending in `*`) pods may set besides the safe ones: name,...
    #[arg(long, value_delimiter = ',')]
    allowed_unsafe_sysctls: Vec<String>,
    /// A kubeconfig whose credentials (a bootstrap token) may ask for a client certificate
    /// when --kubeconfig has no valid one; --kubeconfig is then written to use it.
    #[arg(long, requires = "kubeconfig")]
    bootstrap_kubeconfig: Option<PathBuf>,
    /// Where the client certificate and key are kept (`kubelet-client-current.pem`;
    /// default: <root-dir>/pki).
    #[arg(long)]
    cert_dir: Option<PathBuf>,
    /// Renew the client certificate (one kept in --cert-dir) before it expires.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    rotate_certificates: bool,
    #[command(flatten)]
    log: daemon::LogFlags,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    args.log.init();
    let sysctls = skiff_rules::sysctl::Allowlist::new(
        &args
            .allowed_unsafe_sysctls
            .iter()
            .filter(|s| !s.is_empty())
            .cloned()
            .collect::<Vec<_>>(),
    )
    .context("--allowed-unsafe-sysctls")?;
    // HTTPS probes and hooks.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let name = match args.node_name.clone() {
        Some(n) => n,
        None => nix::unistd::gethostname()?.to_string_lossy().to_lowercase(),
    };
    let labels = node::parse_labels(&args.node_labels).map_err(anyhow::Error::msg)?;
    let taints = node::parse_taints(&args.register_with_taints).map_err(anyhow::Error::msg)?;
    std::fs::create_dir_all(&args.root_dir)
        .with_context(|| format!("creating --root-dir {}", args.root_dir.display()))?;
    let shutdown = CancellationToken::new();
    daemon::cancel_on_signal(shutdown.clone());
    // The node's identity comes first: nothing else runs until the kubelet has one.
    let (client_config, managed, bootstrap) = match &args.kubeconfig {
        Some(p) => {
            let b = skiff_kubelet::bootstrap::Bootstrap {
                kubeconfig: p.clone(),
                bootstrap_kubeconfig: args.bootstrap_kubeconfig.clone(),
                cert_dir: args
                    .cert_dir
                    .clone()
                    .unwrap_or_else(|| args.root_dir.join("pki")),
                node_name: name.clone(),
            };
            let id = match b.identity(&shutdown).await {
                // SIGTERM while waiting for a certificate: nothing was started.
                Err(skiff_kubelet::bootstrap::BootstrapError::Stopped) => return Ok(()),
                r => r?,
            };
            (id.config, id.managed, Some(b))
        }
        None => (skiff_client::Config::infer()?, None, None),
    };
    let client_ca_pem = match &args.client_ca_file {
        Some(p) => {
            std::fs::read(p).with_context(|| format!("reading --client-ca-file {}", p.display()))?
        }
        None => client_config.ca_pem.clone().ok_or_else(|| {
            anyhow::anyhow!("the kubeconfig has no cluster CA: give --client-ca-file")
        })?,
    };
    let serving_cert = match (&args.tls_cert_file, &args.tls_private_key_file) {
        (Some(c), Some(k)) => Some((
            std::fs::read(c).with_context(|| format!("reading --tls-cert-file {}", c.display()))?,
            std::fs::read(k)
                .with_context(|| format!("reading --tls-private-key-file {}", k.display()))?,
        )),
        _ => None,
    };
    let client = skiff_client::Client::new(client_config)?;
    if let (true, Some((cert, _)), Some(b)) = (args.rotate_certificates, managed, bootstrap) {
        let (client, shutdown) = (client.clone(), shutdown.clone());
        tokio::spawn(async move { b.rotate(client, cert, shutdown).await });
    }
    let runtime = cri::Runtime::connect(&args.container_runtime_endpoint)?;
    for ip in &args.cluster_dns {
        ip.parse::<IpAddr>()
            .map_err(|_| anyhow::anyhow!("--cluster-dns: {ip:?} is not an IP address"))?;
    }
    if !args.cgroup_root.starts_with('/') {
        anyhow::bail!(
            "--cgroup-root must be an absolute cgroup path, got {:?}",
            args.cgroup_root
        );
    }
    let node_ip = args
        .node_ip
        .clone()
        .or_else(node::default_node_ip)
        .unwrap_or_else(|| "127.0.0.1".into());
    let (node_cpu_millis, node_memory_bytes) = node::allocatable_cpu_memory(&args.root_dir);
    let server_names = vec![
        name.clone(),
        node_ip.clone(),
        "localhost".into(),
        "127.0.0.1".into(),
    ];
    let pods = skiff_kubelet::pods::PodConfig {
        node_name: name.clone(),
        node_ip: node_ip.clone(),
        root_dir: args.root_dir.clone(),
        pod_logs_dir: args
            .pod_logs_dir
            .clone()
            .unwrap_or_else(|| args.root_dir.join("pod-logs")),
        cluster_dns: args.cluster_dns.clone(),
        cluster_domain: args.cluster_domain.clone(),
        resolv_conf: args.resolv_conf.clone(),
        cgroup_root: args.cgroup_root.clone(),
        node_cpu_millis,
        node_memory_bytes,
        sync_frequency: args.sync_frequency,
        sysctls,
    };
    let server_addr = skiff_kubelet::server::serve(
        skiff_kubelet::server::ServerConfig {
            addr: SocketAddr::new(args.address, args.port),
            client_ca_pem,
            cert: serving_cert,
            names: server_names,
        },
        std::sync::Arc::new(pods.clone()),
        runtime.clone(),
        shutdown.clone(),
    )
    .await
    .with_context(|| format!("serving HTTPS on {}:{}", args.address, args.port))?;
    let kubelet = Kubelet {
        client,
        runtime,
        node: node::NodeConfig {
            name: name.clone(),
            labels,
            taints,
            pod_cidr: args.pod_cidr.clone(),
            node_ip: Some(node_ip.clone()),
            port: server_addr.port(),
            max_pods: args.max_pods,
            root_dir: args.root_dir.clone(),
            lease_renew: args.node_lease_renew_interval,
            status_update: args.node_status_update_frequency,
            status_report: args.node_status_report_frequency,
        },
        cni_conf_dir: args.cni_conf_dir.clone(),
        cni_bridge: args.cni_bridge.clone(),
        pods,
    };

    let ready = CancellationToken::new();
    let addr = daemon::serve_health(
        SocketAddr::new(args.healthz_bind_address, args.healthz_port),
        prometheus_client::registry::Registry::default(),
        ready.clone(),
        "registering",
        shutdown.clone(),
    )
    .await?;
    tracing::info!(node = %name, health = %addr, server = %server_addr, "kubelet starting");
    kubelet.run(ready, shutdown).await?;
    tracing::info!("kubelet stopped");
    Ok(())
}
