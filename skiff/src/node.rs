//! This machine as a node, for `skiff server` and `skiff agent` alike: containerd, the kubelet,
//! the proxy and the CSI drivers (`skiff-csi`) as child processes, and on the way out the node's rules, routes and pods
//! removed.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::preflight::CNI_BIN_DIR;
use crate::supervisor::Supervisor;

/// How this machine runs as a node.
#[derive(Debug, Clone, clap::Args)]
pub struct NodeArgs {
    /// The pod sandbox image (default: REGISTRY/skiff/pause:1, which skiff server pushes).
    #[arg(long)]
    pub pause_image: Option<String>,
    /// This node's name (default: the host name).
    #[arg(long)]
    pub node_name: Option<String>,
    /// This node's address (default: the first non-loopback IPv4 address).
    #[arg(long)]
    pub node_ip: Option<String>,
    /// Labels for this node (`k=v,...`), e.g. `topology.kubernetes.io/zone=a`.
    #[arg(long, default_value = "")]
    pub node_labels: String,
    /// Taints for this node (`key=value:Effect,...`).
    #[arg(long, default_value = "")]
    pub register_with_taints: String,
    /// The pods' address range (the proxy masquerades what leaves it).
    #[arg(long, default_value = "10.244.0.0/16")]
    pub cluster_cidr: String,
    /// The cluster DNS address handed to pods.
    #[arg(long, default_value = "10.96.0.10")]
    pub cluster_dns: String,
    /// How the proxy writes rules: `nftables` or `iptables`.
    #[arg(long, default_value = "nftables", value_parser = ["nftables", "iptables"])]
    pub proxy_mode: String,
    /// The proxy's /healthz, /readyz and /metrics address.
    #[arg(long, default_value = "127.0.0.1:10249")]
    pub proxy_metrics_bind_address: SocketAddr,
    /// A flag for the kubelet, `NAME=VALUE` (given as `--NAME=VALUE`); repeatable.
    #[arg(long = "kubelet-arg")]
    pub kubelet_args: Vec<String>,
    /// A flag for the proxy, `NAME=VALUE` (given as `--NAME=VALUE`); repeatable.
    #[arg(long = "proxy-arg")]
    pub proxy_args: Vec<String>,
    /// Where node-local volumes (`local` StorageClass) are made (default: DATA_DIR/volumes).
    #[arg(long)]
    pub local_volume_path: Option<PathBuf>,
    /// A filesystem every node mounts at this same path: volumes of the `shared` StorageClass
    /// (`ReadWriteMany`) are made there. Without it there is no shared class.
    #[arg(long)]
    pub shared_volume_path: Option<PathBuf>,
}

/// `NAME=VALUE` (or `--NAME=VALUE`) as a flag.
fn flag(arg: &str) -> String {
    format!("--{}", arg.trim_start_matches('-'))
}

/// The node's credentials: the bootstrap kubeconfig (a bootstrap token) the kubelet asks for
/// its certificate with, the kubeconfig it then writes, and the proxy's.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The bootstrap token's kubeconfig.
    pub bootstrap_kubeconfig: PathBuf,
    /// The kubelet's `--kubeconfig` (written by its TLS bootstrap).
    pub kubelet_kubeconfig: PathBuf,
    /// The proxy's kubeconfig (`system:kube-proxy`).
    pub proxy_kubeconfig: PathBuf,
    /// The CSI provisioner's and resizer's kubeconfig (`system:skiff-csi`).
    pub csi_kubeconfig: PathBuf,
}

impl Identity {
    /// Joins with `token` at `server` (whose CA is `ca`): writes the bootstrap kubeconfig under
    /// `data_dir` and gets the proxy its certificate through a CSR (kept while valid); the
    /// kubelet gets its own when it starts.
    pub fn join(
        data_dir: &Path,
        server: &str,
        ca: &[u8],
        token: &crate::join::BootstrapToken,
        rt: &tokio::runtime::Handle,
    ) -> Result<Identity> {
        let bootstrap = data_dir.join("bootstrap-kubeconfig.yaml");
        crate::server::write_private(
            &bootstrap,
            crate::server::token_kubeconfig(server, ca, &token.to_string())?.as_bytes(),
        )?;
        let proxy = data_dir.join("proxy-kubeconfig.yaml");
        rt.block_on(crate::join::proxy_kubeconfig(
            &proxy,
            &bootstrap,
            Duration::from_secs(300),
        ))
        .context("getting the proxy's certificate")?;
        let csi = data_dir.join("csi-kubeconfig.yaml");
        rt.block_on(crate::join::csr_kubeconfig(
            &csi,
            &bootstrap,
            "system:skiff-csi",
            Duration::from_secs(300),
        ))
        .context("getting the CSI provisioner's certificate")?;
        Ok(Identity {
            bootstrap_kubeconfig: bootstrap,
            kubelet_kubeconfig: data_dir.join("kubelet-kubeconfig.yaml"),
            proxy_kubeconfig: proxy,
            csi_kubeconfig: csi,
        })
    }
}

/// What the node's processes are given.
pub struct Node<'a> {
    /// How it runs.
    pub args: &'a NodeArgs,
    /// Skiff's binaries.
    pub bin: &'a Path,
    /// The data directory (containerd and the kubelet keep theirs under it).
    pub data_dir: &'a Path,
    /// Where the processes' logs go.
    pub logs: &'a Path,
    /// The node's credentials.
    pub identity: &'a Identity,
    /// The registry pods' images come from (`HOST:PORT`, plain HTTP).
    pub registry: &'a str,
    /// The pod CIDR to use when the control plane assigns none.
    pub pod_cidr: Option<String>,
}

/// The OCI runtimes a node offers pods, as CRI runtime handlers named after them (a
/// RuntimeClass's `handler`): `runc`, the default, and `crun` where it is installed.
pub const RUNTIMES: &[&str] = &["runc", "crun"];

/// The runtime handlers this machine can offer: those of [`RUNTIMES`] on `PATH` that can run
/// containers here, each with the binary's path.
pub fn runtime_handlers() -> Vec<(&'static str, PathBuf)> {
    let hybrid_v2 = std::fs::read_to_string("/sys/fs/cgroup/unified/cgroup.controllers").ok();
    RUNTIMES
        .iter()
        .filter(|r| **r != "crun" || crun_runs(hybrid_v2.as_deref()))
        .filter_map(|r| Some((*r, crate::preflight::which(r)?)))
        .collect()
}

/// Whether crun can make containers given the controllers of the cgroup v2 hierarchy mounted
/// beside v1 ones (`None`: no such hybrid mount). crun refuses a hybrid machine whose v2
/// hierarchy has controllers (`cgroups in hybrid mode not supported, drop all controllers from
/// cgroupv2`), as on hosts that leave `hugetlb` to v2; runc works there.
fn crun_runs(hybrid_v2_controllers: Option<&str>) -> bool {
    hybrid_v2_controllers.is_none_or(|c| c.trim().is_empty())
}

/// The containerd configuration: its own root, state and socket under `dir`, CNI from
/// `net.d` there, `registry` trusted over plain HTTP, and a CRI runtime per handler of
/// [`runtime_handlers`] (each through containerd's runc shim, with its own state root under
/// `dir`; `runc` is the default). `restrict_oom_score_adj` keeps sandboxes from asking for a
/// lower OOM score than containerd's own, which hosts that deny negative scores (some
/// container hosts and sandboxes do) would refuse.
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
    let mut config = format!(
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
"#,
        d = dir.display()
    );
    for (name, binary) in runtime_handlers() {
        config.push_str(&runtime_section(dir, name, &binary));
    }
    std::fs::write(dir.join("config.toml"), config)?;
    Ok(())
}

/// The CRI runtime `name`, running `binary` through containerd's runc shim.
fn runtime_section(dir: &Path, name: &str, binary: &Path) -> String {
    let table = format!("plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.{name}");
    format!(
        "    [{table}]\n      runtime_type = \"io.containerd.runc.v2\"\n      [{table}.options]\n        BinaryName = \"{}\"\n        Root = \"{}\"\n",
        binary.display(),
        dir.join(name).display()
    )
}

/// The node-local CSI driver (a `skiff-csi` process per node).
pub const LOCAL_CSI: &str = "local.csi.skiff.dev";
/// The shared CSI driver (a `skiff-csi` process per node when a shared path is configured).
pub const SHARED_CSI: &str = "shared.csi.skiff.dev";

fn containerd_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("containerd")
}

impl Node<'_> {
    /// Starts containerd, waits for its socket, then starts the kubelet and the proxy.
    pub fn start(&self, sup: &mut Supervisor) -> Result<()> {
        let ctrd = containerd_dir(self.data_dir);
        let pause = self
            .args
            .pause_image
            .clone()
            .unwrap_or_else(|| format!("{}/skiff/pause:1", self.registry));
        containerd_config(&ctrd, &pause, self.registry)?;
        let socket = ctrd.join("containerd.sock");
        let _ = std::fs::remove_file(&socket);
        sup.start(
            "containerd",
            Command::new("containerd")
                .arg("--config")
                .arg(ctrd.join("config.toml")),
            self.logs,
        )?;
        sup.wait_for("containerd", Duration::from_secs(30), || socket.exists())?;
        let id = self.identity;
        let a = self.args;
        let mut kubelet = Command::new(self.bin.join("skiff-kubelet"));
        kubelet
            .arg(format!("--kubeconfig={}", id.kubelet_kubeconfig.display()))
            .arg(format!(
                "--bootstrap-kubeconfig={}",
                id.bootstrap_kubeconfig.display()
            ))
            .arg(format!(
                "--cert-dir={}",
                self.data_dir.join("kubelet").join("pki").display()
            ))
            .arg(format!(
                "--container-runtime-endpoint=unix://{}",
                socket.display()
            ))
            .arg(format!(
                "--root-dir={}",
                self.data_dir.join("kubelet").display()
            ))
            .arg(format!("--cni-conf-dir={}", ctrd.join("net.d").display()))
            .arg(format!("--cluster-dns={}", a.cluster_dns));
        if let Some(c) = &self.pod_cidr {
            kubelet.arg(format!("--pod-cidr={c}"));
        }
        if let Some(n) = &a.node_name {
            kubelet.arg(format!("--node-name={n}"));
        }
        if let Some(ip) = &a.node_ip {
            kubelet.arg(format!("--node-ip={ip}"));
        }
        if !a.node_labels.is_empty() {
            kubelet.arg(format!("--node-labels={}", a.node_labels));
        }
        if !a.register_with_taints.is_empty() {
            kubelet.arg(format!("--register-with-taints={}", a.register_with_taints));
        }
        kubelet.args(a.kubelet_args.iter().map(|f| flag(f)));
        sup.start("skiff-kubelet", &mut kubelet, self.logs)?;
        let mut proxy = Command::new(self.bin.join("skiff-proxy"));
        proxy
            .arg(format!("--kubeconfig={}", id.proxy_kubeconfig.display()))
            .arg(format!("--cluster-cidr={}", a.cluster_cidr))
            .arg(format!("--proxy-mode={}", a.proxy_mode))
            .arg("--pod-routes=true")
            .arg(format!(
                "--metrics-bind-address={}",
                a.proxy_metrics_bind_address
            ));
        if let Some(n) = &a.node_name {
            proxy.arg(format!("--hostname-override={n}"));
        }
        proxy.args(a.proxy_args.iter().map(|f| flag(f)));
        sup.start("skiff-proxy", &mut proxy, self.logs)?;
        let node_name = match &a.node_name {
            Some(n) => n.clone(),
            None => nix::unistd::gethostname()?.to_string_lossy().to_lowercase(),
        };
        let local = a
            .local_volume_path
            .clone()
            .unwrap_or_else(|| self.data_dir.join("volumes"));
        let drivers = std::iter::once((LOCAL_CSI, local, 9809))
            .chain(a.shared_volume_path.clone().map(|p| (SHARED_CSI, p, 9810)));
        for (driver, path, port) in drivers {
            let mut csi = Command::new(self.bin.join("skiff-csi"));
            csi.arg(format!("--driver={driver}"))
                .arg(format!("--node-id={node_name}"))
                .arg(format!("--data-dir={}", path.display()))
                .arg(format!(
                    "--kubelet-root-dir={}",
                    self.data_dir.join("kubelet").display()
                ))
                .arg(format!("--kubeconfig={}", id.csi_kubeconfig.display()))
                .arg(format!("--http-endpoint=127.0.0.1:{port}"));
            if driver == LOCAL_CSI {
                // Its CSIDriver says storageCapacity: the scheduler wants each node's space.
                csi.arg("--enable-capacity");
            }
            sup.start(driver, &mut csi, self.logs)?;
        }
        Ok(())
    }
}

impl NodeArgs {
    /// The bridge the kubelet attaches pods to (its `--cni-bridge`, default `cni0`).
    pub fn cni_bridge(&self) -> String {
        self.kubelet_args
            .iter()
            .find_map(|f| flag(f).strip_prefix("--cni-bridge=").map(str::to_string))
            .unwrap_or_else(|| "cni0".into())
    }
}

/// Stops the node: the proxy (then its rules and routes removed), the kubelet, every pod
/// through CRI, containerd, and then the pod network the CNI plugins left: the `bridge` and
/// their `CNI-` iptables chains (as `k3s-killall.sh` does), so nothing of the node remains.
pub fn stop(
    sup: &mut Supervisor,
    bin: &Path,
    data_dir: &Path,
    bridge: &str,
    rt: &tokio::runtime::Handle,
) {
    sup.stop("skiff-proxy", Duration::from_secs(10));
    let cleanup = Command::new(bin.join("skiff-proxy"))
        .arg("--cleanup")
        .status();
    if !cleanup.is_ok_and(|s| s.success()) {
        tracing::warn!("skiff-proxy --cleanup failed; rules may remain");
    }
    sup.stop("skiff-kubelet", Duration::from_secs(30));
    // After the kubelet, which unpublishes the volumes of the pods it stops.
    for driver in [SHARED_CSI, LOCAL_CSI] {
        sup.stop(driver, Duration::from_secs(10));
    }
    let socket = containerd_dir(data_dir).join("containerd.sock");
    if socket.exists() {
        if let Err(e) = rt.block_on(remove_sandboxes(&socket)) {
            tracing::warn!(error = %e, "removing the pods failed");
        }
    }
    sup.stop("containerd", Duration::from_secs(10));
    remove_pod_network(bridge);
}

/// Removes the pods' bridge and the chains the CNI plugins made (`CNI-FORWARD` and
/// `CNI-ADMIN` from the firewall plugin, `CNI-HOSTPORT-*` from portmap) with the rules that
/// jump to them. Each pod's own rules went with its sandbox; these are what the plugins keep
/// for every pod.
fn remove_pod_network(bridge: &str) {
    let _ = Command::new("ip").args(["link", "delete", bridge]).output();
    for table in ["filter", "nat", "mangle"] {
        let Ok(out) = Command::new("iptables-save").args(["-t", table]).output() else {
            continue;
        };
        let text = String::from_utf8_lossy(&out.stdout);
        let (jumps, chains) = cni_rules(&text);
        for rule in jumps {
            let _ = Command::new("sh")
                .arg("-c")
                .arg(format!("iptables -t {table} -D {rule}"))
                .output();
        }
        for chain in chains.iter() {
            let _ = Command::new("iptables")
                .args(["-t", table, "-F", chain])
                .output();
        }
        for chain in chains {
            let _ = Command::new("iptables")
                .args(["-t", table, "-X", &chain])
                .output();
        }
    }
}

/// From one table of `iptables-save` output: the rules that jump to a `CNI-` chain from a
/// chain that is not one (as `-A` arguments, without the `-A`), and the `CNI-` chains.
fn cni_rules(save: &str) -> (Vec<String>, Vec<String>) {
    let chains: Vec<String> = save
        .lines()
        .filter_map(|l| l.strip_prefix(':'))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| c.starts_with("CNI-"))
        .map(str::to_string)
        .collect();
    let jumps = save
        .lines()
        .filter_map(|l| l.strip_prefix("-A "))
        .filter(|r| !r.starts_with("CNI-") && r.contains(" -j CNI-"))
        .map(str::to_string)
        .collect();
    (jumps, chains)
}

/// Stops and removes every pod sandbox of the containerd listening on `socket` (their
/// containers, mounts and network namespaces go with them).
pub async fn remove_sandboxes(socket: &Path) -> Result<()> {
    let mut cri = skiff_kubelet::cri::Runtime::connect(&format!("unix://{}", socket.display()))
        .context("connecting to containerd")?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crun_is_offered_only_where_it_runs() {
        assert!(crun_runs(None));
        assert!(crun_runs(Some("\n")));
        assert!(!crun_runs(Some("hugetlb\n")));
    }

    #[test]
    fn each_handler_is_a_runtime_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let section = runtime_section(dir.path(), "crun", Path::new("/usr/bin/crun"));
        assert!(section.contains("containerd.runtimes.crun]"), "{section}");
        assert!(
            section.contains("BinaryName = \"/usr/bin/crun\""),
            "{section}"
        );
        assert!(section.contains(&format!("Root = \"{}/crun\"", dir.path().display())));
    }

    #[test]
    fn cni_chains_and_the_jumps_to_them_are_found() {
        let save = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:CNI-ADMIN - [0:0]\n\
            :CNI-FORWARD - [0:0]\n:DOCKER-USER - [0:0]\n\
            -A FORWARD -m comment --comment \"CNI firewall plugin rules\" -j CNI-FORWARD\n\
            -A FORWARD -j DOCKER-USER\n\
            -A CNI-FORWARD -m comment --comment \"CNI firewall plugin admin overrides\" -j CNI-ADMIN\n\
            COMMIT\n";
        let (jumps, chains) = cni_rules(save);
        assert_eq!(
            jumps,
            ["FORWARD -m comment --comment \"CNI firewall plugin rules\" -j CNI-FORWARD"]
        );
        assert_eq!(chains, ["CNI-ADMIN", "CNI-FORWARD"]);
    }

    #[test]
    fn the_bridge_comes_from_the_kubelet_flags() {
        #[derive(clap::Parser)]
        struct Flags {
            #[command(flatten)]
            node: NodeArgs,
        }
        let mut a = <Flags as clap::Parser>::parse_from(["skiff"]).node;
        assert_eq!(a.cni_bridge(), "cni0");
        a.kubelet_args = vec!["cni-bridge=br-pods".into()];
        assert_eq!(a.cni_bridge(), "br-pods");
    }
}
