//! Network namespaces the tests create for themselves: each is a separate network stack
//! (interfaces, routes, firewall rules), so rules the tests program never touch the machine's
//! own. Deleted when the handle drops.

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{bail, Context, Result};

/// A named network namespace (`ip netns add`).
pub struct NetNs {
    /// Its name under `/var/run/netns`.
    pub name: String,
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

impl NetNs {
    /// Creates a fresh one, with its loopback up.
    pub fn new(what: &str) -> Result<NetNs> {
        let name = format!(
            "skiff-{what}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        ip(&["netns", "add", &name])?;
        let ns = NetNs { name };
        ns.run(&["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Runs a command inside it; returns its standard output, failing on a non-zero exit.
    pub fn run(&self, args: &[&str]) -> Result<String> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .output()
            .with_context(|| format!("running {args:?} in {}", self.name))?;
        if !out.status.success() {
            bail!(
                "{args:?} in {} failed: {}{}",
                self.name,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// A command that runs inside it (for processes the test starts and stops itself).
    pub fn command(&self, program: &std::path::Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// Routes `cidr` (a service range) into a veth pair of its own, up, so that traffic to a
    /// service address no rule catches is discarded there rather than routed anywhere.
    pub fn discard_service_range(&self, cidr: &str) -> Result<()> {
        for cmd in [
            &[
                "ip", "link", "add", "svc0", "type", "veth", "peer", "name", "svc1",
            ][..],
            &["ip", "link", "set", "svc0", "up"],
            &["ip", "link", "set", "svc1", "up"],
            &["ip", "route", "add", cidr, "dev", "svc0"],
        ] {
            self.run(cmd)?;
        }
        Ok(())
    }

    /// Runs `f` on a thread that has entered the namespace (sockets it opens stay there).
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        let path = format!("/var/run/netns/{}", self.name);
        std::thread::scope(|s| {
            s.spawn(|| {
                let fd = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
                nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET)
                    .with_context(|| format!("entering {path}"))?;
                Ok(f())
            })
            .join()
            .map_err(|_| anyhow::anyhow!("the thread in {path} panicked"))?
        })
    }

    /// Gives processes run in it (through `ip netns exec`) this `/etc/resolv.conf`.
    pub fn resolv_conf(&self, text: &str) -> Result<()> {
        let dir = format!("/etc/netns/{}", self.name);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {dir}"))?;
        std::fs::write(format!("{dir}/resolv.conf"), text)
            .with_context(|| format!("writing {dir}/resolv.conf"))
    }

    /// Relays TCP connections made to `127.0.0.1:port` inside the namespace to `to`, reached
    /// from the test's own namespace (so that a component started inside can reach a server
    /// the test runs on its loopback), until the returned guard drops.
    pub fn forward(&self, port: u16, to: std::net::SocketAddr) -> Result<Forward> {
        let listener = self
            .enter(|| std::net::TcpListener::bind(("127.0.0.1", port)))?
            .with_context(|| format!("listening on port {port} in {}", self.name))?;
        listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let task = tokio::spawn(async move {
            while let Ok((mut inside, _)) = listener.accept().await {
                tokio::spawn(async move {
                    if let Ok(mut outside) = tokio::net::TcpStream::connect(to).await {
                        let _ = tokio::io::copy_bidirectional(&mut inside, &mut outside).await;
                    }
                });
            }
        });
        Ok(Forward(task))
    }
}

/// A kubeconfig for components run inside `ns`: `api`'s admin credentials, the server reached
/// through a relay at 127.0.0.1:6443 in there (dropping the [`Forward`] stops it).
pub fn relayed_kubeconfig(
    api: &crate::ApiServer,
    ns: &NetNs,
) -> Result<(std::path::PathBuf, Forward)> {
    let relay = ns.forward(6443, ([127, 0, 0, 1], api.port).into())?;
    let kubeconfig = api.data_dir.join(format!("{}.kubeconfig", ns.name));
    let mut k = skiff_rules::Kubeconfig::from_yaml(&std::fs::read_to_string(&api.kubeconfig)?)?;
    k.set_server("https://127.0.0.1:6443");
    std::fs::write(&kubeconfig, k.to_yaml()?)?;
    Ok((kubeconfig, relay))
}

/// Stops a [`NetNs::forward`] relay when dropped.
pub struct Forward(tokio::task::JoinHandle<()>);

impl Drop for Forward {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(format!("/etc/netns/{}", self.name));
        let _ = ip(&["netns", "del", &self.name]);
    }
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip (iproute2)")?;
    if !out.status.success() {
        bail!("ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}
