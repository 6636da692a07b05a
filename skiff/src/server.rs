//! `skiff server`: a whole cluster on this machine — etcd (a child process unless
//! `--etcd-servers` is given), a local image registry (unless `--registry` names one), the
//! API server, scheduler and controller manager, and this machine as a node (containerd, the
//! kubelet, the proxy) — until SIGTERM, which stops it all and removes its pods and rules.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::preflight::{self, CNI_BIN_DIR};
use crate::supervisor::Supervisor;

/// How the cluster is set up.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// Where everything the cluster keeps lives.
    #[arg(long, default_value = "/var/lib/skiff")]
    pub data_dir: PathBuf,
    /// An etcd to use (default: an etcd started as a child process, its data in the data
    /// directory).
    #[arg(long, value_delimiter = ',')]
    pub etcd_servers: Vec<String>,
    /// The port of the child etcd's client address on loopback (the next port is its peer
    /// port).
    #[arg(long, default_value_t = 2379)]
    pub etcd_port: u16,
    /// The address the API server listens on.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind_address: IpAddr,
    /// The API server's port.
    #[arg(long, default_value_t = 6443)]
    pub https_port: u16,
    /// A registry to pull workload images from (default: one started here).
    #[arg(long)]
    pub registry: Option<String>,
    /// Where the registry started here listens.
    #[arg(long, default_value = "127.0.0.1:5000")]
    pub registry_address: SocketAddr,
    /// The pod sandbox image (default: REGISTRY/skiff/pause:1).
    #[arg(long)]
    pub pause_image: Option<String>,
    /// This node's name (default: the host name).
    #[arg(long)]
    pub node_name: Option<String>,
    /// This node's address (default: the first non-loopback IPv4 address).
    #[arg(long)]
    pub node_ip: Option<String>,
    /// Labels for this node (`k=v,...`).
    #[arg(long, default_value = "")]
    pub node_labels: String,
    /// The pods' address range; this node gets its first /24.
    #[arg(long, default_value = "10.244.0.0/16")]
    pub cluster_cidr: String,
    /// The Services' address range.
    #[arg(long, default_value = "10.96.0.0/12")]
    pub service_cluster_ip_range: String,
    /// The cluster DNS address handed to pods.
    #[arg(long, default_value = "10.96.0.10")]
    pub cluster_dns: String,
    /// How the proxy writes rules: `nftables` or `iptables`.
    #[arg(long, default_value = "nftables", value_parser = ["nftables", "iptables"])]
    pub proxy_mode: String,
    /// The proxy's /healthz, /readyz and /metrics address.
    #[arg(long, default_value = "127.0.0.1:10249")]
    pub proxy_metrics_bind_address: SocketAddr,
}

/// The pieces' directories under the data directory.
struct Dirs {
    root: PathBuf,
}

impl Dirs {
    fn of(&self, part: &str) -> PathBuf {
        self.root.join(part)
    }
}

/// This directory's copy of Skiff's binaries.
pub fn bin_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("finding the skiff binary")?;
    Ok(exe
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".")))
}

fn wait_for(
    what: &str,
    within: Duration,
    sup: &mut Supervisor,
    mut ok: impl FnMut() -> bool,
) -> Result<()> {
    let deadline = Instant::now() + within;
    while !ok() {
        if let Some((name, status)) = sup.exited() {
            bail!(
                "{name} exited ({status}) while waiting for {what}:\n{}",
                sup.log_tail(&name)
            );
        }
        if Instant::now() > deadline {
            bail!("{what} did not happen within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

fn listening(addr: SocketAddr) -> impl FnMut() -> bool {
    move || TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// The containerd configuration: its own root, state and socket under `dir`, CNI from
/// `net.d` there, `registry` trusted over plain HTTP. `restrict_oom_score_adj` keeps
/// sandboxes from asking for a lower OOM score than containerd's own, which hosts that deny
/// negative scores (some container hosts and sandboxes do) would refuse.
pub fn containerd_config(dir: &Path, pause: &str, registry: &str) -> Result<()> {
    let hosts = dir.join("certs.d").join(registry);
    std::fs::create_dir_all(&hosts)?;
    std::fs::write(
        hosts.join("hosts.toml"),
        format!(
            "server = \"http://{registry}\"\n\n[host.\"http://{registry}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
        ),
    )?;
    std::fs::create_dir_all(dir.join("net.d"))?;
    let config = format!(
        r#"version = 2
root = "{d}/root"
state = "{d}/state"
[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"
[debug]
  level = "warn"
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{d}/net.d"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{d}/certs.d"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = "{d}/runc"
"#,
        d = dir.display()
    );
    std::fs::write(dir.join("config.toml"), config)?;
    Ok(())
}

/// The first /24 of `cidr` (`10.244.0.0/16` → `10.244.0.0/24`).
fn first_node_cidr(cidr: &str) -> Result<String> {
    let (ip, len) = cidr
        .split_once('/')
        .with_context(|| format!("--cluster-cidr {cidr:?}: expected an IPv4 CIDR"))?;
    let ip: Ipv4Addr = ip
        .parse()
        .with_context(|| format!("--cluster-cidr {cidr:?}: {ip:?} is not an IPv4 address"))?;
    len.parse::<u8>()
        .ok()
        .filter(|l| *l <= 24)
        .with_context(|| format!("--cluster-cidr {cidr:?}: the prefix must be /24 or wider"))?;
    Ok(format!("{ip}/24"))
}

/// Runs the cluster until `stop` says so; returns an error when a part fails. `rt` runs the
/// little asynchronous work there is (removing pods through CRI on the way out).
pub fn run(args: &ServerArgs, rt: &tokio::runtime::Handle, stop: &dyn Fn() -> bool) -> Result<()> {
    let bin = bin_dir()?;
    let problems = preflight::check(&preflight::Needs {
        etcd: args.etcd_servers.is_empty(),
        registry: args.registry.is_none(),
        iptables: args.proxy_mode == "iptables",
        bin_dir: bin.clone(),
    });
    if !problems.is_empty() {
        let list: Vec<String> = problems.iter().map(|p| format!("  - {p}")).collect();
        bail!(
            "this machine is not ready for skiff server:\n{}",
            list.join("\n")
        );
    }
    let node_cidr = first_node_cidr(&args.cluster_cidr)?;
    let dirs = Dirs {
        root: args.data_dir.clone(),
    };
    std::fs::create_dir_all(&dirs.root)
        .with_context(|| format!("creating {}", dirs.root.display()))?;
    let logs = dirs.of("logs");
    let mut sup = Supervisor::default();
    let result = start_and_wait(args, &bin, &dirs, &logs, &node_cidr, &mut sup, stop);
    tracing::info!("stopping");
    // The node first (its pods and rules go with it), then the control plane.
    sup.stop("skiff-proxy", Duration::from_secs(10));
    let cleanup = Command::new(bin.join("skiff-proxy"))
        .arg("--cleanup")
        .status();
    if !cleanup.is_ok_and(|s| s.success()) {
        tracing::warn!("skiff-proxy --cleanup failed; rules may remain");
    }
    sup.stop("skiff-kubelet", Duration::from_secs(30));
    remove_pods(rt, &dirs.of("containerd").join("containerd.sock"));
    sup.stop_all(Duration::from_secs(10));
    result
}

/// Stops and removes every pod sandbox of the node's containerd (their containers, mounts
/// and network namespaces go with them).
fn remove_pods(rt: &tokio::runtime::Handle, socket: &Path) {
    if !socket.exists() {
        return;
    }
    if let Err(e) = rt.block_on(remove_sandboxes(socket)) {
        tracing::warn!(error = %e, "removing the pods failed");
    }
}

/// Stops and removes every pod sandbox of the containerd listening on `socket`.
pub async fn remove_sandboxes(socket: &Path) -> Result<()> {
    let mut cri = skiff_kubelet::cri::Runtime::connect(&format!("unix://{}", socket.display()))?;
    let list = cri
        .runtime
        .list_pod_sandbox(skiff_proto::cri::ListPodSandboxRequest::default())
        .await?
        .into_inner();
    for s in list.items {
        cri.runtime
            .stop_pod_sandbox(skiff_proto::cri::StopPodSandboxRequest {
                pod_sandbox_id: s.id.clone(),
            })
            .await?;
        cri.runtime
            .remove_pod_sandbox(skiff_proto::cri::RemovePodSandboxRequest {
                pod_sandbox_id: s.id,
            })
            .await?;
    }
    Ok(())
}

fn start_and_wait(
    args: &ServerArgs,
    bin: &Path,
    dirs: &Dirs,
    logs: &Path,
    node_cidr: &str,
    sup: &mut Supervisor,
    stop: &dyn Fn() -> bool,
) -> Result<()> {
    // etcd.
    let etcd_servers = if args.etcd_servers.is_empty() {
        let (client, peer) = (args.etcd_port, args.etcd_port + 1);
        let url = |p: u16| format!("http://127.0.0.1:{p}");
        sup.start(
            "etcd",
            Command::new("etcd")
                .arg("--name=skiff")
                .arg(format!("--data-dir={}", dirs.of("etcd").display()))
                .arg(format!("--listen-client-urls={}", url(client)))
                .arg(format!("--advertise-client-urls={}", url(client)))
                .arg(format!("--listen-peer-urls={}", url(peer)))
                .arg(format!("--initial-advertise-peer-urls={}", url(peer)))
                .arg(format!("--initial-cluster=skiff={}", url(peer)))
                .arg("--log-level=warn"),
            logs,
        )?;
        wait_for(
            "etcd to listen",
            Duration::from_secs(30),
            sup,
            listening(SocketAddr::from(([127, 0, 0, 1], client))),
        )?;
        vec![url(client)]
    } else {
        args.etcd_servers.clone()
    };
    // The registry.
    let registry = match &args.registry {
        Some(r) => r.clone(),
        None => {
            let dir = dirs.of("registry");
            std::fs::create_dir_all(&dir)?;
            let config = dir.join("config.yml");
            std::fs::write(
                &config,
                format!(
                    "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {}\n",
                    dir.join("data").display(),
                    args.registry_address
                ),
            )?;
            sup.start(
                "registry",
                Command::new("docker-registry").arg("serve").arg(&config),
                logs,
            )?;
            wait_for(
                "the registry to listen",
                Duration::from_secs(30),
                sup,
                listening(args.registry_address),
            )?;
            args.registry_address.to_string()
        }
    };
    // The control plane.
    let server_dir = dirs.of("server");
    sup.start(
        "skiff-apiserver",
        Command::new(bin.join("skiff-apiserver"))
            .arg(format!("--etcd-servers={}", etcd_servers.join(",")))
            .arg(format!("--bind-address={}", args.bind_address))
            .arg(format!("--secure-port={}", args.https_port))
            .arg(format!("--data-dir={}", server_dir.display()))
            .arg(format!(
                "--service-cluster-ip-range={}",
                args.service_cluster_ip_range
            )),
        logs,
    )?;
    let admin = server_dir.join("admin.kubeconfig");
    let api = SocketAddr::new(
        if args.bind_address.is_unspecified() {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            args.bind_address
        },
        args.https_port,
    );
    let mut api_up = listening(api);
    wait_for("the API server", Duration::from_secs(60), sup, || {
        admin.exists() && api_up()
    })?;
    let kubeconfig = format!("--kubeconfig={}", admin.display());
    sup.start(
        "skiff-scheduler",
        Command::new(bin.join("skiff-scheduler")).arg(&kubeconfig),
        logs,
    )?;
    sup.start(
        "skiff-controller-manager",
        Command::new(bin.join("skiff-controller-manager"))
            .arg(&kubeconfig)
            .arg(format!("--cluster-cidr={}", args.cluster_cidr))
            .arg("--node-cidr-mask-size=24"),
        logs,
    )?;
    // This machine as a node.
    let ctrd = dirs.of("containerd");
    let pause = args
        .pause_image
        .clone()
        .unwrap_or_else(|| format!("{registry}/skiff/pause:1"));
    containerd_config(&ctrd, &pause, &registry)?;
    let socket = ctrd.join("containerd.sock");
    let _ = std::fs::remove_file(&socket);
    sup.start(
        "containerd",
        Command::new("containerd")
            .arg("--config")
            .arg(ctrd.join("config.toml")),
        logs,
    )?;
    wait_for("containerd", Duration::from_secs(30), sup, || {
        socket.exists()
    })?;
    let mut kubelet = Command::new(bin.join("skiff-kubelet"));
    kubelet
        .arg(&kubeconfig)
        .arg(format!(
            "--container-runtime-endpoint=unix://{}",
            socket.display()
        ))
        .arg(format!("--root-dir={}", dirs.of("kubelet").display()))
        .arg(format!("--cni-conf-dir={}", ctrd.join("net.d").display()))
        .arg(format!("--pod-cidr={node_cidr}"))
        .arg(format!("--cluster-dns={}", args.cluster_dns));
    if let Some(n) = &args.node_name {
        kubelet.arg(format!("--node-name={n}"));
    }
    if let Some(ip) = &args.node_ip {
        kubelet.arg(format!("--node-ip={ip}"));
    }
    if !args.node_labels.is_empty() {
        kubelet.arg(format!("--node-labels={}", args.node_labels));
    }
    sup.start("skiff-kubelet", &mut kubelet, logs)?;
    let mut proxy = Command::new(bin.join("skiff-proxy"));
    proxy
        .arg(&kubeconfig)
        .arg(format!("--cluster-cidr={}", args.cluster_cidr))
        .arg(format!("--proxy-mode={}", args.proxy_mode))
        .arg(format!(
            "--metrics-bind-address={}",
            args.proxy_metrics_bind_address
        ));
    if let Some(n) = &args.node_name {
        proxy.arg(format!("--hostname-override={n}"));
    }
    sup.start("skiff-proxy", &mut proxy, logs)?;

    let user_kubeconfig = dirs.of("kubeconfig.yaml");
    std::fs::copy(&admin, &user_kubeconfig)?;
    println!("Skiff is running. Point kubectl at it with:");
    println!("  export KUBECONFIG={}", user_kubeconfig.display());
    println!(
        "Images for pods: push them to {registry}. Logs: {}",
        logs.display()
    );

    while !stop() {
        if let Some((name, status)) = sup.exited() {
            bail!("{name} exited ({status}):\n{}", sup.log_tail(&name));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_gets_the_first_24_of_the_cluster_range() {
        assert_eq!(first_node_cidr("10.244.0.0/16").unwrap(), "10.244.0.0/24");
        let err = first_node_cidr("10.244.0.0/28").unwrap_err().to_string();
        assert!(err.contains("/24 or wider"), "{err}");
        let err = first_node_cidr("10.244.0.0").unwrap_err().to_string();
        assert!(err.contains("expected an IPv4 CIDR"), "{err}");
    }
}
