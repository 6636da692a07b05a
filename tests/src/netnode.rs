//! Real nodes, each in a network namespace of its own — containerd, the kubelet and
//! `skiff-proxy` inside, as on a machine of its own — joined by a LAN: a bridge in the test's
//! namespace with an address of its own, from which the test (and the API server, reaching
//! the kubelets) sees the nodes as a client outside the cluster would.
//!
//! Each node reaches the API server and the image registry through relays on its loopback;
//! its service range is routed into an interface that discards what no rule catches.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::netns::{Forward, NetNs};
use crate::node::{remove_cgroup_tree, Containerd, Images, Kubelet};
use crate::{stop_child, ApiServer};

/// The pods' address range across the nodes; node `i` gets `10.244.i.0/24`.
pub const CLUSTER_CIDR: &str = "10.244.0.0/16";
/// The cluster DNS address the kubelets hand to pods.
pub const CLUSTER_DNS: &str = "10.96.0.10";

/// The LAN: a bridge in a namespace of its own (so that the machine's own firewall, which
/// may drop forwarded traffic, never sees frames between nodes), on a /24 (`172.31.N.0/24`);
/// the test's namespace joins it at `.254`.
pub struct Lan {
    /// The test's interface on it.
    pub interface: String,
    /// `172.31.N`.
    pub prefix: String,
    /// The namespace with the bridge `lan0`.
    pub ns: NetNs,
}

impl Lan {
    /// A LAN on a /24 no route on this machine uses yet.
    pub fn new() -> Result<Lan> {
        let routes = run(Command::new("ip").args(["-4", "route", "show"]))?;
        let start = std::process::id().wrapping_mul(17);
        for i in 0..250 {
            let n = (start.wrapping_add(i) % 250) + 1;
            let prefix = format!("172.31.{n}");
            if routes.contains(&format!("{prefix}.0/24")) {
                continue;
            }
            let lan = Lan {
                interface: format!("sklan{n}"),
                prefix,
                ns: NetNs::new("lan")?,
            };
            lan.ns
                .run(&["ip", "link", "add", "lan0", "type", "bridge"])?;
            lan.ns.run(&["ip", "link", "set", "lan0", "up"])?;
            // The test's own namespace is named by a process in it: this one.
            lan.attach("up0", &lan.interface, &std::process::id().to_string())?;
            run(Command::new("ip").args([
                "addr",
                "add",
                &format!("{}/24", lan.address()),
                "dev",
                &lan.interface,
            ]))?;
            run(Command::new("ip").args(["link", "set", &lan.interface, "up"]))?;
            return Ok(lan);
        }
        bail!("no free 172.31.N.0/24 for a test LAN")
    }

    /// Plugs a veth into the bridge: `port` on the bridge, `peer` in namespace `netns` (a
    /// name, or a process id).
    fn attach(&self, port: &str, peer: &str, netns: &str) -> Result<()> {
        self.ns.run(&[
            "ip", "link", "add", port, "type", "veth", "peer", "name", peer, "netns", netns,
        ])?;
        self.ns
            .run(&["ip", "link", "set", port, "master", "lan0"])?;
        self.ns.run(&["ip", "link", "set", port, "up"])?;
        Ok(())
    }

    /// Plugs namespace `ns` in as host `index` (1–250): its `eth0` gets `172.31.N.INDEX/24`,
    /// which is returned.
    pub fn join(&self, ns: &NetNs, index: u8) -> Result<String> {
        let ip = format!("{}.{index}", self.prefix);
        self.attach(&format!("port{index}"), "eth0", &ns.name)?;
        ns.run(&["ip", "addr", "add", &format!("{ip}/24"), "dev", "eth0"])?;
        ns.run(&["ip", "link", "set", "eth0", "up"])?;
        Ok(ip)
    }

    /// The test's own address on it.
    pub fn address(&self) -> String {
        format!("{}.254", self.prefix)
    }
}

fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("running {:?}", cmd.get_program()))?;
    if !out.status.success() {
        bail!(
            "{:?} {:?}: {}",
            cmd.get_program(),
            cmd.get_args().collect::<Vec<_>>(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// One node in a namespace of its own: its LAN address, pod CIDR, containerd, kubelet and
/// proxy. Stopped in reverse order when dropped: the proxy, the kubelet, every sandbox and
/// containerd, the node's cgroups, and last the namespace.
pub struct NetNode {
    /// The node's name.
    pub name: String,
    /// Its LAN address (its InternalIP).
    pub ip: String,
    /// Its pod CIDR.
    pub pod_cidr: String,
    /// The kubelet.
    pub kubelet: Kubelet,
    /// The containerd.
    pub ctrd: Containerd,
    proxy: Option<Child>,
    proxy_log: PathBuf,
    /// The kubeconfig components inside use (the API server through the relay).
    pub kubeconfig: PathBuf,
    _relays: Vec<Forward>,
    /// The namespace.
    pub ns: NetNs,
}

impl NetNode {
    /// Starts node number `index` (1–250) named `name` on `lan`, pulling from `images`'
    /// registry, for the cluster of `api`; `kubelet_args` are added to the kubelet's flags.
    pub fn start(
        api: &ApiServer,
        images: &Images,
        lan: &Lan,
        name: &str,
        index: u8,
        kubelet_args: &[&str],
    ) -> Result<NetNode> {
        let ns = NetNs::new(&format!("n{index}"))?;
        let pod_cidr = format!("10.244.{index}.0/24");
        // Its LAN interface, and the service range discarded unless a rule catches it.
        let ip = lan.join(&ns, index)?;
        ns.discard_service_range("10.96.0.0/12")?;
        let (kubeconfig, api_relay) = crate::netns::relayed_kubeconfig(api, &ns)?;
        let registry_port = images.registry.port();
        let registry_relay = ns.forward(registry_port, ([127, 0, 0, 1], registry_port).into())?;
        let ctrd = Containerd::start_in(&images.pause, &images.registry.host, Some(&ns.name))?;
        let mut args = vec![
            format!("--node-ip={ip}"),
            format!("--address={ip}"),
            "--port=10250".to_string(),
            "--healthz-port=0".to_string(),
            format!("--pod-cidr={pod_cidr}"),
            "--cni-bridge=cni0".to_string(),
            format!("--cluster-dns={CLUSTER_DNS}"),
        ];
        args.extend(kubelet_args.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let kubelet = Kubelet::start_in(&kubeconfig, &ctrd, name, &ns.name, &args)?;
        let proxy_log = kubelet.root_dir.with_file_name("proxy.log");
        let mut node = NetNode {
            name: name.to_string(),
            ip,
            pod_cidr,
            kubelet,
            ctrd,
            proxy: None,
            proxy_log,
            kubeconfig,
            _relays: vec![api_relay, registry_relay],
            ns,
        };
        node.start_proxy(&[])?;
        Ok(node)
    }

    /// Starts `skiff-proxy` in the node (with `extra` flags), stopping one that runs.
    pub fn start_proxy(&mut self, extra: &[&str]) -> Result<()> {
        self.stop_proxy();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.proxy_log)?;
        let child = self
            .ns
            .command(&crate::binary("skiff-proxy")?)
            .arg(format!("--kubeconfig={}", self.kubeconfig.display()))
            .arg(format!("--hostname-override={}", self.name))
            .arg(format!("--cluster-cidr={CLUSTER_CIDR}"))
            .args(extra)
            .stdout(log.try_clone()?)
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()?;
        self.proxy = Some(child);
        Ok(())
    }

    /// Stops the proxy (SIGTERM); its rules stay.
    pub fn stop_proxy(&mut self) {
        if let Some(mut c) = self.proxy.take() {
            stop_child(&mut c, Duration::from_secs(10));
        }
    }

    /// The proxy's log so far.
    pub fn proxy_log(&self) -> String {
        std::fs::read_to_string(&self.proxy_log).unwrap_or_default()
    }

    /// The kubeconfig's text, for a pod on the host network (the relay is at the same
    /// address in every node).
    pub fn kubeconfig_text(&self) -> Result<String> {
        Ok(std::fs::read_to_string(&self.kubeconfig)?)
    }

    /// Where the node's logs are, for a failing test's message.
    pub fn logs(&self) -> String {
        format!(
            "--- kubelet of {n}:\n{}\n--- proxy of {n}:\n{}",
            tail(&self.kubelet.log()),
            tail(&self.proxy_log()),
            n = self.name
        )
    }
}

fn tail(s: &str) -> &str {
    let start = s.len().saturating_sub(4000);
    let start = (start..s.len())
        .find(|i| s.is_char_boundary(*i))
        .unwrap_or(s.len());
    &s[start..]
}

impl Drop for NetNode {
    fn drop(&mut self) {
        self.stop_proxy();
        self.kubelet.stop();
        self.ctrd.stop();
        remove_cgroup_tree(&self.kubelet.cgroup_root);
    }
}
