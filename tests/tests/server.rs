//! `skiff server`, run as a user runs it — here inside a network namespace of its own, so its
//! etcd, API server and rules are private to the test: the node comes up Ready, a pod runs
//! and is reached through a Service, and SIGTERM stops every process and removes the rules
//! and pods.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use skiff_e2e::netns::NetNs;
use skiff_e2e::node::Images;

fn eventually<T>(what: &str, within: Duration, f: impl FnMut() -> Result<T, String>) -> T {
    skiff_e2e::eventually_ok(what, within, f, String::new)
}

/// `kubectl` inside the namespace.
fn kubectl(ns: &NetNs, kubeconfig: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.name,
            "kubectl",
            "--kubeconfig",
            kubeconfig,
        ])
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// The server process, stopped by its pid if the test ends early.
struct Server(Option<Child>);

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            skiff_e2e::stop_child(&mut c, Duration::from_secs(60));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skiff_server_runs_a_cluster_and_stops_clean() {
    let images = Images::start().unwrap();
    let ns = NetNs::new("server").unwrap();
    // Service addresses no rule catches are discarded, never routed off the machine.
    ns.discard_service_range("10.96.0.0/12").unwrap();
    let port = images.registry.port();
    let _registry = ns.forward(port, ([127, 0, 0, 1], port).into()).unwrap();
    let data = tempfile::tempdir().unwrap();
    let log = std::fs::File::create(data.path().join("server.out")).unwrap();
    let child = Command::new("nsenter")
        .arg(format!("--net=/var/run/netns/{}", ns.name))
        .arg(skiff_e2e::binary("skiff").unwrap())
        .arg("server")
        .arg(format!(
            "--data-dir={}",
            data.path().join("skiff").display()
        ))
        .arg(format!("--registry={}", images.registry.host))
        .arg(format!("--pause-image={}", images.pause))
        .args(["--node-name=solo", "--node-ip=10.99.0.1"])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut server = Server(Some(child));
    let kubeconfig = data.path().join("skiff/kubeconfig.yaml");
    let kc = kubeconfig.display().to_string();
    let out = || std::fs::read_to_string(data.path().join("server.out")).unwrap_or_default();
    eventually(
        "the server prints its KUBECONFIG line",
        Duration::from_secs(60),
        || {
            let o = out();
            o.contains(&format!("export KUBECONFIG={kc}"))
                .then_some(())
                .ok_or(o)
        },
    );
    eventually("the node Ready", Duration::from_secs(60), || {
        kubectl(
            &ns,
            &kc,
            &["wait", "--for=condition=Ready", "node/solo", "--timeout=5s"],
        )
    });

    // A workload, exposed, reached from the node.
    kubectl(
        &ns,
        &kc,
        &[
            "create",
            "deployment",
            "web",
            &format!("--image={}", images.busybox),
            "--port=8080",
            "--",
            "sh",
            "-c",
            "echo hello > /index.html && exec httpd -f -p 8080 -h /",
        ],
    )
    .unwrap();
    eventually("web rolled out", Duration::from_secs(90), || {
        kubectl(
            &ns,
            &kc,
            &["rollout", "status", "deployment/web", "--timeout=5s"],
        )
        .map_err(|e| {
            let pods = kubectl(&ns, &kc, &["describe", "pods"]).unwrap_or_default();
            let kubelet = std::fs::read_to_string(data.path().join("skiff/logs/skiff-kubelet.log"))
                .unwrap_or_default();
            let tail: String = kubelet
                .lines()
                .rev()
                .take(15)
                .collect::<Vec<_>>()
                .join("\n");
            format!("{e}\n{pods}\n--- kubelet (last lines first):\n{tail}")
        })
    });
    kubectl(
        &ns,
        &kc,
        &[
            "expose",
            "deployment",
            "web",
            "--port=80",
            "--target-port=8080",
        ],
    )
    .unwrap();
    let vip = kubectl(
        &ns,
        &kc,
        &["get", "service", "web", "-o", "jsonpath={.spec.clusterIP}"],
    )
    .unwrap();
    let got = eventually("the service answers", Duration::from_secs(30), || {
        ns.run(&[
            "busybox",
            "timeout",
            "5",
            "busybox",
            "wget",
            "-q",
            "-O",
            "-",
            &format!("http://{vip}/"),
        ])
        .map_err(|e| e.to_string())
    });
    assert_eq!(got.trim(), "hello");

    // SIGTERM: everything stops, and the node's rules and pods go with it.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = server.0.take().unwrap().wait().unwrap();
    assert!(
        status.success(),
        "skiff server exited with {status}:\n{}",
        out()
    );
    let o = out();
    for part in [
        "skiff-proxy",
        "skiff-kubelet",
        "containerd",
        "skiff-controller-manager",
        "skiff-scheduler",
        "skiff-apiserver",
        "etcd",
    ] {
        assert!(
            o.contains(&format!("stopped name=\"{part}\"")),
            "{part} not stopped:\n{o}"
        );
    }
    let tables = ns.run(&["nft", "list", "tables"]).unwrap();
    assert!(!tables.contains("skiff"), "{tables}");
    let data_dir = data.path().display().to_string();
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
