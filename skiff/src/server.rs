//! `skiff server`: a whole cluster on this machine — etcd (a child process unless
//! `--etcd-servers` is given), a local image registry (unless `--registry` names one) holding
//! the pause, example and cluster DNS images built here, the API server, scheduler and
//! controller manager, this machine as a node (containerd, the kubelet, the proxy) and the
//! cluster DNS as a Deployment — until SIGTERM, which stops it all and removes its pods and
//! rules. Other machines join as nodes with `skiff agent` and the token it writes.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use skiff_rules::Kubeconfig;

use crate::join::{self, BootstrapToken};
use crate::node::{self, NodeArgs};
use crate::supervisor::Supervisor;
use crate::{addons, images, preflight};

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
    /// The address the API server listens on (`0.0.0.0` or this machine's address for
    /// `skiff agent`s to join).
    #[arg(long, default_value = "127.0.0.1")]
    pub bind_address: IpAddr,
    /// The API server's port.
    #[arg(long, default_value_t = 6443)]
    pub https_port: u16,
    /// More names or addresses for the API server's certificate.
    #[arg(long = "tls-san")]
    pub tls_sans: Vec<String>,
    /// A registry to pull workload images from (default: one started here).
    #[arg(long)]
    pub registry: Option<String>,
    /// Where the registry started here listens; images are named by this address
    /// (`ADDRESS/skiff/httpd`), so with agents it must be one they reach too.
    #[arg(long, default_value = "127.0.0.1:5000")]
    pub registry_address: SocketAddr,
    /// The Services' address range.
    #[arg(long, default_value = "10.96.0.0/12")]
    pub service_cluster_ip_range: String,
    /// How long the join token (`DATA_DIR/node-token`, a bootstrap token) stays valid after
    /// each start of the server (`0`: for ever). `skiff token create` makes more.
    #[arg(long, default_value = "24h", value_parser = skiff_rules::duration::parse)]
    pub token_ttl: Duration,
    /// Parts not to run: `dns` (the cluster DNS).
    #[arg(long, value_delimiter = ',', value_parser = ["dns"])]
    pub disable: Vec<String>,
    /// Encrypt Secrets in etcd with KMS v2 envelope encryption through the `skiff-kms` plugin
    /// this server runs (keys in DATA-DIR/kms); `--secrets-encryption=false` stores them as
    /// they come.
    #[arg(long, default_value_t = true, num_args = 0..=1, default_missing_value = "true",
          action = clap::ArgAction::Set)]
    pub secrets_encryption: bool,
    /// This machine as a node.
    #[command(flatten)]
    pub node: NodeArgs,
}

/// This directory's copy of Skiff's binaries.
pub fn bin_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("finding the skiff binary")?;
    Ok(exe
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".")))
}

fn listening(addr: SocketAddr) -> impl FnMut() -> bool {
    move || TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
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

/// Writes a file only its owner reads.
pub fn write_private(path: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(data)?;
    Ok(())
}

/// The hex SHA-256 of the cluster CA's PEM, as join tokens carry it.
pub fn ca_hash(ca_pem: &[u8]) -> String {
    use sha2::Digest;
    format!("{:x}", sha2::Sha256::digest(ca_pem))
}

/// A kubeconfig for `server` with the CA and a bearer token.
pub fn token_kubeconfig(server: &str, ca_pem: &[u8], token: &str) -> Result<String> {
    Ok(Kubeconfig::single("skiff", server)
        .with_certificate_authority(ca_pem)
        .with_token(token)
        .to_yaml()?)
}

/// Runs the cluster until `stop` says so; returns an error when a part fails. `rt` runs the
/// asynchronous work (pushing images, applying the cluster's add-ons, removing pods on the
/// way out).
pub fn run(args: &ServerArgs, rt: &tokio::runtime::Handle, stop: &dyn Fn() -> bool) -> Result<()> {
    let bin = bin_dir()?;
    preflight::require(
        &preflight::Needs {
            etcd: args.etcd_servers.is_empty(),
            registry: args.registry.is_none(),
            iptables: args.node.proxy_mode == "iptables",
            control_plane: true,
            bin_dir: bin.clone(),
        },
        "skiff server",
    )?;
    let node_cidr = first_node_cidr(&args.node.cluster_cidr)?;
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let mut sup = Supervisor::default();
    let result = start_and_wait(args, &bin, &node_cidr, rt, &mut sup, stop);
    tracing::info!("stopping");
    // The node first (its pods and rules go with it), then the control plane.
    node::stop(&mut sup, &bin, &args.data_dir, &args.node.cni_bridge(), rt);
    sup.stop_all(Duration::from_secs(10));
    result
}

/// Where agents and the cluster's own pods reach the API server.
fn advertised(args: &ServerArgs) -> IpAddr {
    if !args.bind_address.is_unspecified() {
        return args.bind_address;
    }
    args.node
        .node_ip
        .as_deref()
        .and_then(|ip| ip.parse().ok())
        .or_else(|| skiff_kubelet::node::default_node_ip()?.parse().ok())
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

fn start_and_wait(
    args: &ServerArgs,
    bin: &Path,
    node_cidr: &str,
    rt: &tokio::runtime::Handle,
    sup: &mut Supervisor,
    stop: &dyn Fn() -> bool,
) -> Result<()> {
    let data = &args.data_dir;
    let logs = data.join("logs");
    // etcd.
    let etcd_servers = if args.etcd_servers.is_empty() {
        let (client, peer) = (args.etcd_port, args.etcd_port + 1);
        let url = |p: u16| format!("http://127.0.0.1:{p}");
        sup.start(
            "etcd",
            Command::new("etcd")
                .arg("--name=skiff")
                .arg(format!("--data-dir={}", data.join("etcd").display()))
                .arg(format!("--listen-client-urls={}", url(client)))
                .arg(format!("--advertise-client-urls={}", url(client)))
                .arg(format!("--listen-peer-urls={}", url(peer)))
                .arg(format!("--initial-advertise-peer-urls={}", url(peer)))
                .arg(format!("--initial-cluster=skiff={}", url(peer)))
                .arg("--log-level=warn"),
            &logs,
        )?;
        sup.wait_for(
            "etcd to listen",
            Duration::from_secs(30),
            listening(SocketAddr::from(([127, 0, 0, 1], client))),
        )?;
        vec![url(client)]
    } else {
        args.etcd_servers.clone()
    };
    // The registry, and the images the cluster itself needs.
    let registry = match &args.registry {
        Some(r) => r.clone(),
        None => {
            let dir = data.join("registry");
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
                &logs,
            )?;
            let mut addr = args.registry_address;
            if addr.ip().is_unspecified() {
                addr.set_ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
            }
            sup.wait_for(
                "the registry to listen",
                Duration::from_secs(30),
                listening(addr),
            )?;
            args.registry_address.to_string()
        }
    };
    let pushed = rt.block_on(images::push_all(&registry, bin))?;
    // The control plane.
    let server_dir = data.join("server");
    let advertise = advertised(args);
    let mut apiserver = Command::new(bin.join("skiff-apiserver"));
    apiserver
        .arg(format!("--etcd-servers={}", etcd_servers.join(",")))
        .arg(format!("--bind-address={}", args.bind_address))
        .arg(format!("--secure-port={}", args.https_port))
        .arg(format!("--data-dir={}", server_dir.display()))
        .arg(format!(
            "--service-cluster-ip-range={}",
            args.service_cluster_ip_range
        ))
        .arg(format!("--tls-san={advertise}"));
    for san in &args.tls_sans {
        apiserver.arg(format!("--tls-san={san}"));
    }
    if args.secrets_encryption {
        apiserver.args(crate::secrets::start(sup, bin, data, &logs)?);
    }
    sup.start("skiff-apiserver", &mut apiserver, &logs)?;
    let admin = server_dir.join("admin.kubeconfig");
    let local_api = SocketAddr::new(
        if args.bind_address.is_unspecified() {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            args.bind_address
        },
        args.https_port,
    );
    let mut api_up = listening(local_api);
    sup.wait_for("the API server", Duration::from_secs(60), || {
        admin.exists() && api_up()
    })?;
    let ca = std::fs::read(server_dir.join("ca.crt")).context("reading the cluster CA")?;
    let server_url = format!("https://{}", SocketAddr::new(advertise, args.https_port));
    let local_url = format!("https://{local_api}");
    // The join token: a bootstrap token, the same across restarts, valid --token-ttl from now.
    let token_path = data.join("node-token");
    let token = std::fs::read_to_string(&token_path)
        .ok()
        .and_then(|t| t.parse::<crate::agent::Token>().ok())
        .filter(|t| t.ca_hash == ca_hash(&ca))
        .map(|t| t.token)
        .unwrap_or_else(BootstrapToken::generate);
    // What runs in the cluster: how agents find the CA and may join, and the cluster DNS.
    let mut objects = vec![addons::cluster_info(&server_url, &ca)?];
    objects.extend(addons::join_rbac());
    if !args.disable.iter().any(|d| d == "dns") {
        objects.extend(addons::cluster_dns(
            &pushed.dns,
            &args.node.cluster_dns,
            &server_url,
        ));
    }
    objects.extend(addons::storage(args.node.shared_volume_path.is_some()));
    let handlers: Vec<&str> = crate::node::runtime_handlers()
        .into_iter()
        .map(|(h, _)| h)
        .collect();
    objects.extend(addons::runtime_classes(&handlers));
    rt.block_on(addons::apply(&admin, &objects))?;
    rt.block_on(join::publish_token(&admin, &token, args.token_ttl))?;
    write_private(&token_path, format!("{}::{token}", ca_hash(&ca)).as_bytes())?;
    // The scheduler and the controller manager, each under its own identity.
    let scheduler_kc = server_dir.join("scheduler.kubeconfig");
    join::component_kubeconfig(
        &scheduler_kc,
        &server_dir,
        &local_url,
        "system:kube-scheduler",
    )?;
    let cm_kc = server_dir.join("controller-manager.kubeconfig");
    join::component_kubeconfig(
        &cm_kc,
        &server_dir,
        &local_url,
        "system:kube-controller-manager",
    )?;
    sup.start(
        "skiff-scheduler",
        Command::new(bin.join("skiff-scheduler"))
            .arg(format!("--kubeconfig={}", scheduler_kc.display())),
        &logs,
    )?;
    sup.start(
        "skiff-controller-manager",
        Command::new(bin.join("skiff-controller-manager"))
            .arg(format!("--kubeconfig={}", cm_kc.display()))
            .arg("--allocate-node-cidrs=true")
            .arg(format!("--cluster-cidr={}", args.node.cluster_cidr))
            .arg("--node-cidr-mask-size=24")
            .arg(format!(
                "--root-ca-file={}",
                server_dir.join("ca.crt").display()
            ))
            .arg(format!(
                "--cluster-signing-cert-file={}",
                server_dir.join("ca.crt").display()
            ))
            .arg(format!(
                "--cluster-signing-key-file={}",
                server_dir.join("ca.key").display()
            )),
        &logs,
    )?;
    // This machine as a node, joining as any agent does.
    let identity = node::Identity::join(data, &local_url, &ca, &token, rt)?;
    node::Node {
        args: &args.node,
        bin,
        data_dir: data,
        logs: &logs,
        identity: &identity,
        registry: &registry,
        pod_cidr: Some(node_cidr.to_string()),
    }
    .start(sup)?;

    let user_kubeconfig = data.join("kubeconfig.yaml");
    std::fs::copy(&admin, &user_kubeconfig)?;
    println!("Skiff is running. Point kubectl at it with:");
    println!("  export KUBECONFIG={}", user_kubeconfig.display());
    println!(
        "Example images: {} and {} (push your own to {registry}).",
        pushed.httpd, pushed.busybox
    );
    println!(
        "Join another machine as a node: skiff agent --server={server_url} --token-file=FILE (FILE a copy of {})",
        data.join("node-token").display()
    );
    println!("Logs: {}", logs.display());
    sup.watch_until(stop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_kubeconfigs_read_back_as_written() {
        let text = token_kubeconfig("https://10.0.0.1:6443", b"CA PEM", "id.se: cret").unwrap();
        let c = skiff_client::Config::from_kubeconfig_str(&text, None).unwrap();
        assert_eq!(c.server, "https://10.0.0.1:6443");
        assert_eq!(c.ca_pem.as_deref(), Some(&b"CA PEM"[..]));
        assert_eq!(c.token.as_deref(), Some("id.se: cret"), "{text}");
    }

    #[test]
    fn the_node_gets_the_first_24_of_the_cluster_range() {
        assert_eq!(first_node_cidr("10.244.0.0/16").unwrap(), "10.244.0.0/24");
        let err = first_node_cidr("10.244.0.0/28").unwrap_err().to_string();
        assert!(err.contains("/24 or wider"), "{err}");
        let err = first_node_cidr("10.244.0.0").unwrap_err().to_string();
        assert!(err.contains("expected an IPv4 CIDR"), "{err}");
    }
}
