//! Node-side test support: a local image registry on loopback (Debian's `docker-registry`),
//! the test images built here and pushed into it (the project's pause image, and a busybox
//! image from Debian's `busybox-static`), and a private containerd with its own config,
//! socket, root, state, runc root and CNI directories.
//!
//! Everything is stopped when its handle drops, including when a test panics: the containerd's
//! pod sandboxes are stopped and removed through CRI first (so runc, the shims, mounts and the
//! CNI network namespaces go with them), then the daemon itself by its process id.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use skiff::images::{self, ImageSpec};
use skiff_kubelet::cri::Runtime;

use crate::{free_port, stop_child};

/// A plain-HTTP registry on a free loopback port, storing into a temporary directory.
pub struct Registry {
    child: Option<Child>,
    /// `127.0.0.1:PORT`.
    pub host: String,
    dir: tempfile::TempDir,
}

impl Registry {
    /// Starts the registry and waits until it answers.
    pub fn start() -> Result<Registry> {
        let dir = tempfile::tempdir()?;
        let host = format!("127.0.0.1:{}", free_port());
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
                 http:\n  addr: {host}\n",
                dir.path().join("data").display()
            ),
        )?;
        let log = std::fs::File::create(dir.path().join("registry.log"))?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(log.try_clone()?)
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .context("starting docker-registry (install Debian's docker-registry)")?;
        let r = Registry {
            child: Some(child),
            host,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&r.host).is_err() {
            if Instant::now() > deadline {
                bail!("the registry did not listen on {}", r.host);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(r)
    }

    /// Pushes `image` as `name:tag`; returns the full reference.
    pub fn push(&self, image: &ImageSpec, name_tag: &str) -> Result<String> {
        let (name, tag) = name_tag
            .rsplit_once(':')
            .with_context(|| format!("{name_tag:?}: expected NAME:TAG"))?;
        // A runtime of its own, on a thread of its own: callers may be inside one already.
        std::thread::scope(|s| {
            s.spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?
                    .block_on(image.push(&self.host, name, tag))
            })
            .join()
            .expect("the push thread panicked")
        })
    }

    /// Its port on loopback.
    pub fn port(&self) -> u16 {
        self.host
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("the registry's host is 127.0.0.1:PORT")
    }

    /// The registry's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            stop_child(&mut c, Duration::from_secs(10));
        }
    }
}

/// A registry holding the test images.
pub struct Images {
    /// The registry.
    pub registry: Registry,
    /// The pause image reference.
    pub pause: String,
    /// The busybox image reference.
    pub busybox: String,
}

impl Images {
    /// Starts a registry and pushes the pause and busybox images into it.
    pub fn start() -> Result<Images> {
        let registry = Registry::start()?;
        let pause = registry.push(&images::pause_image(), "skiff/pause:1")?;
        let busybox = registry.push(&images::busybox_image()?, "test/busybox:1")?;
        Ok(Images {
            registry,
            pause,
            busybox,
        })
    }
}

/// A command for `program`, run in network namespace `netns` when given (entering that alone,
/// so mounts such as the cgroup tree look as they do outside).
pub fn in_netns(netns: Option<&str>, program: &Path) -> Command {
    match netns {
        Some(ns) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net=/var/run/netns/{ns}")).arg(program);
            c
        }
        None => Command::new(program),
    }
}

/// A private containerd: its own config, socket, root and state, runc root, CNI config
/// directory and host-local IPAM store; pulls from the test registry over plain HTTP.
pub struct Containerd {
    child: Option<Child>,
    /// The network namespace it runs in (`None`: the test's own).
    netns: Option<String>,
    /// The temporary directory everything lives in.
    pub dir: PathBuf,
    /// The gRPC socket.
    pub socket: PathBuf,
    /// The CNI configuration directory containerd reads (the kubelet writes it).
    pub cni_conf_dir: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Containerd {
    /// Starts containerd with `pause` as the sandbox image, trusting `registry` over HTTP.
    pub fn start(pause: &str, registry: &str) -> Result<Containerd> {
        Self::start_in(pause, registry, None)
    }

    /// The same, run inside the network namespace `netns` (which is where it wires pods:
    /// their bridge and routes are made there).
    pub fn start_in(pause: &str, registry: &str, netns: Option<&str>) -> Result<Containerd> {
        let tmp = tempfile::Builder::new().prefix("ctrd").tempdir()?;
        let dir = tmp.path().to_path_buf();
        let socket = dir.join("containerd.sock");
        let cni_conf_dir = dir.join("net.d");
        // The configuration `skiff server` gives its node's containerd.
        skiff::node::containerd_config(&dir, pause, registry)?;
        let mut c = Containerd {
            child: None,
            netns: netns.map(str::to_string),
            dir,
            socket,
            cni_conf_dir,
            _tmp: tmp,
        };
        c.spawn()?;
        Ok(c)
    }

    fn spawn(&mut self) -> Result<()> {
        let _ = std::fs::remove_file(&self.socket);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("containerd.log"))?;
        let child = in_netns(self.netns.as_deref(), Path::new("containerd"))
            .arg("--config")
            .arg(self.dir.join("config.toml"))
            .stdout(log.try_clone()?)
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .context("starting containerd (install Debian's containerd and runc)")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.socket.exists() {
            if let Some(ch) = self.child.as_mut() {
                if let Ok(Some(s)) = ch.try_wait() {
                    bail!("containerd exited with {s}: {}", self.log());
                }
            }
            if Instant::now() > deadline {
                bail!("containerd did not start: {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Restarts the daemon alone (SIGTERM by pid, then the same configuration): containers
    /// and their shims keep running, as on a real node.
    pub fn restart(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child, Duration::from_secs(10));
        }
        self.spawn()
    }

    /// `unix://<socket>`, for `--container-runtime-endpoint`.
    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// The containerd log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
    }

    /// A CRI client of this containerd.
    pub fn cri(&self) -> Result<Runtime> {
        Ok(Runtime::connect(&self.endpoint())?)
    }

    /// Stops and removes every pod sandbox through CRI (their containers go with them).
    pub async fn remove_all_sandboxes(&self) -> Result<()> {
        skiff::node::remove_sandboxes(&self.socket).await
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Containerd {
    /// Removes every sandbox, stops the daemon and its shims and unmounts what is left.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // Sandboxes first, through CRI, on a runtime of its own (this may run inside one).
        let socket = self.socket.clone();
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                let _ = rt.block_on(async {
                    tokio::time::timeout(
                        Duration::from_secs(60),
                        skiff::node::remove_sandboxes(&socket),
                    )
                    .await
                });
            }
        })
        .join();
        stop_child(&mut child, Duration::from_secs(10));
        // Shims this containerd started outlive it by design: stop the ones serving its
        // socket, by their pids.
        for pid in shims_of(&self.socket) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        // Whatever is still mounted under its root (a killed test can leave rootfs mounts).
        if let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") {
            let root = self.dir.to_string_lossy().to_string();
            let mut points: Vec<&str> = mounts
                .lines()
                .filter_map(|l| l.split_whitespace().nth(1))
                .filter(|p| p.starts_with(&root))
                .collect();
            points.sort_by_key(|p| std::cmp::Reverse(p.len()));
            for p in points {
                let _ = nix::mount::umount2(p, nix::mount::MntFlags::MNT_DETACH);
            }
        }
    }
}

/// Stops and removes every pod sandbox of the containerd on `socket`.
/// The pids of containerd shims started for the containerd on `socket`.
fn shims_of(socket: &Path) -> Vec<i32> {
    let needle = socket.to_string_lossy().to_string();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let args: Vec<String> = c
                    .split(|b| *b == 0)
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect();
                args.first().is_some_and(|a| a.contains("containerd-shim"))
                    && args.iter().any(|a| a == &needle)
            })
        })
        .collect()
}

/// A pod network for one test: a bridge of its own and a /24 no other test on this machine
/// uses. The bridge is deleted when this drops.
pub struct TestNetwork {
    /// The bridge's name.
    pub bridge: String,
    /// The subnet, `10.250.N.0/24`.
    pub subnet: String,
    third: u8,
}

impl TestNetwork {
    /// Picks a bridge name and a subnet not routed on this machine yet.
    #[allow(clippy::new_without_default)]
    pub fn new() -> TestNetwork {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let routes = Command::new("ip")
            .args(["-4", "route", "show"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let start = std::process::id().wrapping_mul(31);
        for _ in 0..256 {
            let n = start.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed)) % 250 + 1;
            let subnet = format!("10.250.{n}.0/24");
            if !routes.contains(&subnet) {
                return TestNetwork {
                    bridge: format!("skt{n}x{}", std::process::id() % 10_000),
                    subnet,
                    third: n as u8,
                };
            }
        }
        panic!("no free 10.250.N.0/24 subnet for a test network");
    }

    /// Whether `ip` is in the subnet.
    pub fn contains(&self, ip: &str) -> bool {
        ip.starts_with(&format!("10.250.{}.", self.third))
    }

    /// Writes the kubelet's CNI configuration for this network into `conf_dir`, with IPAM
    /// state under `state_dir`.
    pub fn write_conflist(&self, conf_dir: &Path, state_dir: &Path) -> Result<()> {
        let conf =
            skiff_kubelet::cni::conflist(&self.bridge, &self.subnet, &state_dir.join("ipam"));
        skiff_kubelet::cni::write(conf_dir, &conf)?;
        Ok(())
    }
}

impl Drop for TestNetwork {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .stderr(Stdio::null())
            .status();
    }
}

/// A `skiff-kubelet` process on a private containerd and test network, stopped (SIGTERM, by
/// pid) when dropped. Its root directory, pod logs and cgroup root are its own.
pub struct Kubelet {
    child: Option<Child>,
    args: Vec<String>,
    netns: Option<String>,
    /// The kubelet's log (stdout and stderr).
    pub log_path: PathBuf,
    /// `--root-dir`.
    pub root_dir: PathBuf,
    /// `--cgroup-root`.
    pub cgroup_root: String,
    _root: tempfile::TempDir,
}

impl Kubelet {
    /// Starts a kubelet named `name` for the cluster of `kubeconfig`, with 1 s lease and status
    /// intervals, a 2 s sync period and `extra` flags.
    pub fn start(
        kubeconfig: &Path,
        ctrd: &Containerd,
        net: &TestNetwork,
        name: &str,
        extra: &[&str],
    ) -> Result<Kubelet> {
        let mut args = vec![
            format!("--cni-bridge={}", net.bridge),
            format!("--pod-cidr={}", net.subnet),
            "--healthz-port=0".into(),
            "--port=0".into(),
            "--address=127.0.0.1".into(),
            "--node-ip=127.0.0.1".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        Self::launch(kubeconfig, ctrd, name, None, args)
    }

    /// A kubelet inside network namespace `netns` (with its containerd there too), with
    /// exactly the network flags in `args` (`--node-ip`, `--address`, `--pod-cidr`, ...).
    pub fn start_in(
        kubeconfig: &Path,
        ctrd: &Containerd,
        name: &str,
        netns: &str,
        args: &[&str],
    ) -> Result<Kubelet> {
        let args = args.iter().map(|s| s.to_string()).collect();
        Self::launch(kubeconfig, ctrd, name, Some(netns), args)
    }

    fn launch(
        kubeconfig: &Path,
        ctrd: &Containerd,
        name: &str,
        netns: Option<&str>,
        extra: Vec<String>,
    ) -> Result<Kubelet> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let root = tempfile::Builder::new().prefix("kubelet").tempdir()?;
        let root_dir = root.path().join("state");
        let cgroup_root = format!(
            "/skiff-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut args = vec![
            format!("--kubeconfig={}", kubeconfig.display()),
            format!("--node-name={name}"),
            format!("--container-runtime-endpoint={}", ctrd.endpoint()),
            format!("--root-dir={}", root_dir.display()),
            format!("--cni-conf-dir={}", ctrd.cni_conf_dir.display()),
            format!("--cgroup-root={cgroup_root}"),
            "--node-lease-renew-interval=1s".into(),
            "--node-status-update-frequency=1s".into(),
            "--sync-frequency=2s".into(),
        ];
        args.extend(extra);
        let mut k = Kubelet {
            child: None,
            args,
            netns: netns.map(str::to_string),
            log_path: root.path().join("kubelet.log"),
            root_dir,
            cgroup_root,
            _root: root,
        };
        k.spawn()?;
        Ok(k)
    }

    fn spawn(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)?;
        let child = in_netns(self.netns.as_deref(), &crate::binary("skiff-kubelet")?)
            .args(&self.args)
            .stdout(log.try_clone()?)
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()?;
        self.child = Some(child);
        Ok(())
    }

    /// The kubelet's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The kubelet's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Stops the kubelet (SIGTERM); pods keep running.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            stop_child(&mut c, Duration::from_secs(10));
        }
    }

    /// Starts the kubelet again with the same flags and state.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        self.spawn()
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One test node: registry and images, a private containerd, a bridge network and a kubelet,
/// torn down in that order's reverse — the kubelet first, then every sandbox, the daemon and
/// the bridge, and last the node's cgroups.
pub struct Node {
    /// The kubelet.
    pub kubelet: Kubelet,
    /// The containerd.
    pub ctrd: Containerd,
    /// The pod network.
    pub net: TestNetwork,
    /// The registry and test images.
    pub images: Images,
}

impl Node {
    /// Waits up to a minute for `f` to give a value; otherwise panics with `what`, the
    /// cluster's events and this node's kubelet log.
    pub async fn wait_for<T>(
        &self,
        k: &crate::Kubectl,
        what: &str,
        f: impl FnMut() -> Option<T>,
    ) -> T {
        match crate::eventually(Duration::from_secs(60), f).await {
            Some(v) => v,
            None => panic!(
                "{what}; events:\n{}\nkubelet log:\n{}",
                k.run(&["get", "events", "-A"]).stdout,
                self.kubelet.log()
            ),
        }
    }

    /// Waits up to `within` for `f` (tried every 200 ms on this thread) to give a value;
    /// otherwise panics with `what` and this node's kubelet log.
    pub fn wait_blocking<T>(
        &self,
        what: &str,
        within: Duration,
        mut f: impl FnMut() -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + within;
        loop {
            if let Some(v) = f() {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "{what} within {within:?}; kubelet log:\n{}",
                self.kubelet.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Runs `cmd` in the pod's first container through the runtime (what `kubectl exec`
    /// reaches): its exit code, and its stdout followed by its stderr.
    pub async fn exec_in(&self, pod: &serde_json::Value, cmd: &[&str]) -> (i32, String) {
        let id = pod["status"]["containerStatuses"][0]["containerID"]
            .as_str()
            .expect("the pod has a container")
            .trim_start_matches("containerd://")
            .to_string();
        let mut rt = self.ctrd.cri().expect("the node's CRI");
        let r = rt
            .runtime
            .exec_sync(skiff_proto::cri::ExecSyncRequest {
                container_id: id,
                cmd: cmd.iter().map(|s| s.to_string()).collect(),
                timeout: 10,
            })
            .await
            .expect("ExecSync")
            .into_inner();
        let mut out = String::from_utf8_lossy(&r.stdout).into_owned();
        out.push_str(&String::from_utf8_lossy(&r.stderr));
        (r.exit_code, out)
    }

    /// Starts a node named `name` for the cluster of `kubeconfig`.
    pub fn start(kubeconfig: &Path, name: &str, extra: &[&str]) -> Result<Node> {
        let images = Images::start()?;
        let ctrd = Containerd::start(&images.pause, &images.registry.host)?;
        let net = TestNetwork::new();
        let kubelet = Kubelet::start(kubeconfig, &ctrd, &net, name, extra)?;
        Ok(Node {
            kubelet,
            ctrd,
            net,
            images,
        })
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kubelet.stop();
        self.ctrd.stop();
        remove_cgroup_tree(&self.kubelet.cgroup_root);
    }
}

/// A second node for a test whose first is a [`Node`]: its own containerd, network and
/// kubelet, pulling from the first node's registry (so one image reference runs on both).
pub struct SecondNode {
    /// The kubelet.
    pub kubelet: Kubelet,
    /// The containerd.
    pub ctrd: Containerd,
    _net: TestNetwork,
}

impl SecondNode {
    /// Starts a node named `name` beside `first`, its kubelet given `extra` flags.
    pub fn start(
        kubeconfig: &Path,
        first: &Node,
        name: &str,
        extra: &[&str],
    ) -> Result<SecondNode> {
        let ctrd = Containerd::start(&first.images.pause, &first.images.registry.host)?;
        let net = TestNetwork::new();
        let kubelet = Kubelet::start(kubeconfig, &ctrd, &net, name, extra)?;
        Ok(SecondNode {
            kubelet,
            ctrd,
            _net: net,
        })
    }
}

impl Drop for SecondNode {
    fn drop(&mut self) {
        self.kubelet.stop();
        self.ctrd.stop();
        remove_cgroup_tree(&self.kubelet.cgroup_root);
    }
}

/// Kills whatever still runs in a cgroup tree (by pid: processes a failed clean-up left
/// behind), then removes the tree from every hierarchy.
pub fn remove_cgroup_tree(cgroup: &str) {
    let top = Path::new("/sys/fs/cgroup/pids").join(cgroup.trim_start_matches('/'));
    let mut stack = vec![top];
    while let Some(dir) = stack.pop() {
        if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
            for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(e.path());
            }
        }
    }
    std::thread::sleep(Duration::from_millis(100));
    skiff_kubelet::pods::cgroups::remove(cgroup);
}
