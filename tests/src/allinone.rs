//! `skiff server` and `skiff agent` run as a user runs them, each inside a network namespace
//! of the test's own ([`crate::netns`]): the process handle, its output and component logs,
//! and `kubectl` inside a namespace.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::netns::NetNs;
use crate::node::remove_cgroup_tree;

/// `kubectl` inside the namespace.
pub fn kubectl(ns: &NetNs, kubeconfig: &str, args: &[&str]) -> Result<String, String> {
    crate::stdout_or_stderr(
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns.name,
                "kubectl",
                "--kubeconfig",
                kubeconfig,
            ])
            .args(args),
    )
}

/// `skiff server` or `skiff agent` in a namespace, stopped by its pid if the test ends early;
/// its pods' cgroups (under a root of its own) removed after.
pub struct Skiff {
    child: Option<Child>,
    out: PathBuf,
    /// Its `--data-dir`.
    pub data: PathBuf,
    cgroup_root: String,
}

impl Skiff {
    /// Starts `skiff WHAT` (`server` or `agent`) in `ns` with its data under `dir/WHAT`.
    pub fn start(ns: &NetNs, dir: &Path, what: &str, args: &[String]) -> Skiff {
        let data = dir.join(what);
        let out = dir.join(format!("{what}.out"));
        let log = std::fs::File::create(&out).unwrap();
        let cgroup_root = format!("/skiff-test-{}-{what}", std::process::id());
        let child = Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/{}", ns.name))
            .arg(crate::binary("skiff").unwrap())
            .arg(what)
            .arg(format!("--data-dir={}", data.display()))
            .arg(format!("--kubelet-arg=cgroup-root={cgroup_root}"))
            .args(args)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        Skiff {
            child: Some(child),
            out,
            data,
            cgroup_root,
        }
    }

    /// What it printed.
    pub fn out(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// The last lines of one component's log (`skiff-kubelet`, ...).
    pub fn log(&self, part: &str) -> String {
        let text =
            std::fs::read_to_string(self.data.join(format!("logs/{part}.log"))).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// SIGTERM, and the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        child.wait().unwrap()
    }

    /// What it said it stopped, and that nothing of it is left running or mounted.
    pub fn assert_stopped_clean(&self, parts: &[&str]) {
        let o = self.out();
        for part in parts {
            assert!(
                o.contains(&format!("stopped name=\"{part}\"")),
                "{part} not stopped:\n{o}"
            );
        }
        let data_dir = self.data.display().to_string();
        let left: Vec<String> = std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok())
            .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .filter(|c| c.contains(&data_dir))
            .collect();
        assert!(left.is_empty(), "processes left behind: {left:?}");
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(!mounts.contains(&data_dir), "mounts left behind");
    }
}

impl Drop for Skiff {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            crate::stop_child(&mut c, Duration::from_secs(60));
        }
        remove_cgroup_tree(&self.cgroup_root);
    }
}
