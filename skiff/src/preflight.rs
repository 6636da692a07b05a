//! Pre-flight checks: what `skiff server` needs from the machine, and, for what is missing,
//! how to get it on Debian.

use std::path::{Path, PathBuf};

/// One thing missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// What is missing.
    pub what: String,
    /// How to get it.
    pub fix: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.what, self.fix)
    }
}

/// What the checks look for.
#[derive(Debug, Clone)]
pub struct Needs {
    /// An etcd binary (the embedded etcd runs as a child process).
    pub etcd: bool,
    /// A registry binary (a local registry is started).
    pub registry: bool,
    /// Rules through iptables rather than nftables.
    pub iptables: bool,
    /// The control plane's binaries too (`skiff server`), not only the node's (`skiff agent`).
    pub control_plane: bool,
    /// Where Skiff's own binaries are.
    pub bin_dir: PathBuf,
}

/// The CNI plugins the kubelet's configuration uses.
pub const CNI_PLUGINS: [&str; 5] = ["bridge", "host-local", "portmap", "firewall", "loopback"];
/// Where Debian's containernetworking-plugins puts them.
pub const CNI_BIN_DIR: &str = "/usr/lib/cni";

/// Skiff's binaries a node runs (`skiff agent`, and `skiff server` for its own node).
pub const NODE_COMPONENTS: [&str; 3] = ["skiff-kubelet", "skiff-proxy", "skiff-csi"];
/// Skiff's binaries the control plane runs, or builds images of (`skiff server`).
pub const CONTROL_PLANE_COMPONENTS: [&str; 5] = [
    "skiff-apiserver",
    "skiff-kms",
    "skiff-scheduler",
    "skiff-controller-manager",
    "skiff-dns",
];

/// `name` on `PATH`, if there.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn apt(what: &str, package: &str) -> Problem {
    Problem {
        what: what.to_string(),
        fix: format!("install Debian's {package} (apt-get install {package})"),
    }
}

/// Everything missing for `needs` (empty: ready to go).
pub fn check(needs: &Needs) -> Vec<Problem> {
    let mut problems = Vec::new();
    for (cmd, package) in [("containerd", "containerd"), ("runc", "runc")] {
        if which(cmd).is_none() {
            problems.push(apt(&format!("{cmd} is not on PATH"), package));
        }
    }
    for plugin in CNI_PLUGINS {
        if !is_executable(&Path::new(CNI_BIN_DIR).join(plugin)) {
            problems.push(apt(
                &format!("the CNI plugin {CNI_BIN_DIR}/{plugin} is missing"),
                "containernetworking-plugins",
            ));
        }
    }
    // The CNI plugins (portmap, firewall) call iptables whatever the proxy's mode.
    if which("iptables").is_none() {
        problems.push(apt("iptables is not on PATH", "iptables"));
    }
    if needs.iptables {
        for cmd in ["iptables-save", "iptables-restore"] {
            if which(cmd).is_none() {
                problems.push(apt(&format!("{cmd} is not on PATH"), "iptables"));
            }
        }
    } else if !Path::new("/proc/net/netfilter").exists() && !nf_tables_loaded() {
        problems.push(Problem {
            what: "the kernel has no nf_tables".into(),
            fix: "load it (modprobe nf_tables), or run with --proxy-mode=iptables".into(),
        });
    }
    if which("ip").is_none() {
        problems.push(apt("ip is not on PATH", "iproute2"));
    }
    if needs.etcd && which("etcd").is_none() {
        problems.push(apt(
            "etcd is not on PATH (needed for the embedded etcd; or give --etcd-servers)",
            "etcd-server",
        ));
    }
    if needs.control_plane && !is_executable(Path::new(crate::images::BUSYBOX)) {
        problems.push(apt(
            "/bin/busybox is missing (the example images are built from it)",
            "busybox-static",
        ));
    }
    if needs.registry && which("docker-registry").is_none() {
        problems.push(apt(
            "docker-registry is not on PATH (needed for the local registry; or give --registry)",
            "docker-registry",
        ));
    }
    if !Path::new("/proc/sys/net/bridge").exists() {
        problems.push(Problem {
            what: "the kernel's bridge netfilter (br_netfilter) is not loaded".into(),
            fix: "load it: modprobe br_netfilter".into(),
        });
    }
    if !Path::new("/sys/fs/cgroup")
        .join("cgroup.controllers")
        .exists()
        && !Path::new("/sys/fs/cgroup/memory").exists()
    {
        problems.push(Problem {
            what: "no cgroup file system at /sys/fs/cgroup".into(),
            fix: "mount cgroups (cgroup v2 at /sys/fs/cgroup, or the v1 hierarchies)".into(),
        });
    }
    if !nix::unistd::Uid::effective().is_root() {
        problems.push(Problem {
            what: "not running as root".into(),
            fix: "run skiff server as root (it runs containers and programs the network)".into(),
        });
    }
    let control_plane = if needs.control_plane {
        &CONTROL_PLANE_COMPONENTS[..]
    } else {
        &[]
    };
    for c in NODE_COMPONENTS.iter().chain(control_plane) {
        if !is_executable(&needs.bin_dir.join(c)) {
            problems.push(Problem {
                what: format!("{c} is not in {}", needs.bin_dir.display()),
                fix: "build Skiff's binaries (cargo build --release --bins) and run skiff from the same directory".into(),
            });
        }
    }
    problems
}

/// Fails, listing everything missing, unless the machine has what `needs` asks; `what`
/// names the command for the message.
pub fn require(needs: &Needs, what: &str) -> anyhow::Result<()> {
    let problems = check(needs);
    if problems.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = problems.iter().map(|p| format!("  - {p}")).collect();
    anyhow::bail!("this machine is not ready for {what}:\n{}", list.join("\n"))
}

fn nf_tables_loaded() -> bool {
    std::fs::read_to_string("/proc/modules").is_ok_and(|m| m.contains("nf_tables"))
        || Path::new("/sys/module/nf_tables").exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_binaries_are_named_with_the_package_to_install() {
        let dir = tempfile::tempdir().unwrap();
        let problems = check(&Needs {
            etcd: false,
            registry: false,
            iptables: false,
            control_plane: true,
            bin_dir: dir.path().to_path_buf(),
        });
        // An empty directory holds none of Skiff's binaries.
        for c in NODE_COMPONENTS.iter().chain(&CONTROL_PLANE_COMPONENTS) {
            assert!(
                problems.iter().any(|p| p.what.starts_with(c)),
                "{c} not reported: {problems:?}"
            );
        }
        let shown = problems[problems.len() - 1].to_string();
        assert!(shown.contains("cargo build --release --bins"), "{shown}");
        assert_eq!(
            apt("etcd is not on PATH", "etcd-server").to_string(),
            "etcd is not on PATH: install Debian's etcd-server (apt-get install etcd-server)"
        );
    }
}
