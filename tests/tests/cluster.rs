//! The docker-compose cluster (`deploy/cluster.sh`), brought up by the test under a project
//! name, ports and Docker network of its own and removed afterwards, even on failure: three
//! etcd members, two API servers behind a load balancer, two schedulers and two controller
//! managers electing leaders, a registry and three nodes in zones a, b and c. Checked as a
//! user sees it, then with faults — each recovery waited for with a deadline and its time
//! reported.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

/// One compose cluster; `deploy/cluster.sh down` when dropped.
struct Cluster {
    project: String,
    env: Vec<(String, String)>,
    state: PathBuf,
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A /24 in 172.30–172.31 that no route on this machine uses.
fn free_subnet() -> String {
    let routes = Command::new("ip")
        .args(["-4", "route", "show"])
        .output()
        .unwrap();
    let routes = String::from_utf8_lossy(&routes.stdout).into_owned();
    let start = std::process::id() % 200;
    (0..200)
        .map(|i| format!("172.30.{}", (start + i) % 200 + 20))
        .find(|p| !routes.contains(&format!("{p}.0/24")))
        .map(|p| format!("{p}.0/24"))
        .expect("no free 172.30.N.0/24")
}

impl Cluster {
    fn up() -> Cluster {
        let project = format!("skifftest{}", std::process::id());
        let state = repo().join("deploy/.state").join(&project);
        let env = vec![
            ("SKIFF_PROJECT".to_string(), project.clone()),
            ("SKIFF_API_PORT".into(), skiff_e2e::free_port().to_string()),
            (
                "SKIFF_REGISTRY_PORT".into(),
                skiff_e2e::free_port().to_string(),
            ),
            ("SKIFF_NODE_MONITOR_GRACE".into(), "10s".into()),
            ("SKIFF_SUBNET".into(), free_subnet()),
            (
                "SKIFF_BIN_DIR".into(),
                skiff_e2e::bin_dir().display().to_string(),
            ),
        ];
        let c = Cluster {
            project,
            env,
            state,
        };
        let out = c.script("up");
        assert!(
            out.status.success(),
            "deploy/cluster.sh up failed:\n{}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            c.logs()
        );
        c
    }

    fn script(&self, what: &str) -> std::process::Output {
        Command::new("bash")
            .arg(repo().join("deploy/cluster.sh"))
            .arg(what)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap()
    }

    fn kubectl(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new("kubectl")
            .arg(format!(
                "--kubeconfig={}",
                self.state.join("admin.kubeconfig").display()
            ))
            .args(args)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    fn k(&self, args: &[&str]) -> String {
        self.kubectl(args)
            .unwrap_or_else(|e| panic!("kubectl {args:?}: {e}"))
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        serde_json::from_str(&self.k(&a)).unwrap()
    }

    /// The container of compose service `service`.
    fn container(&self, service: &str) -> String {
        format!("{}_{service}_1", self.project)
    }

    fn docker(&self, args: &[&str]) {
        let out = Command::new("docker").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "docker {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The last lines of every container's log, for a failure's message.
    fn logs(&self) -> String {
        let out = Command::new("docker-compose")
            .args(["-p", &self.project, "-f"])
            .arg(repo().join("deploy/docker-compose.yml"))
            .args(["logs", "--tail=15", "--no-color"])
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output();
        out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    /// Waits for `f` to say yes within `within`; returns the time it took.
    fn wait(
        &self,
        what: &str,
        within: Duration,
        mut f: impl FnMut() -> Result<(), String>,
    ) -> Duration {
        let start = Instant::now();
        let mut last = String::new();
        while start.elapsed() < within {
            match f() {
                Ok(()) => return start.elapsed(),
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        panic!("{what} within {within:?}; last: {last}\n{}", self.logs());
    }

    /// Pods of `app` by node (running ones, not being deleted).
    fn pods_by_node(&self, app: &str) -> Vec<(String, String)> {
        let pods = self.json(&["get", "pods", "-l", &format!("app={app}")]);
        pods["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .filter(|p| p["status"]["phase"] == "Running")
            .map(|p| {
                (
                    p["metadata"]["name"].as_str().unwrap().to_string(),
                    p["spec"]["nodeName"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    }

    /// Node `node`'s Ready condition: `True`, `False` or `Unknown`.
    fn ready(&self, node: &str) -> String {
        self.k(&[
            "get",
            "node",
            node,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ])
    }

    /// Whether six web pods run, none of them on `node`.
    fn six_web_pods_off(&self, node: &str) -> Result<(), String> {
        let pods = self.pods_by_node("web");
        let elsewhere = pods.iter().filter(|(_, n)| n != node).count();
        (elsewhere == 6).then_some(()).ok_or(format!("{pods:?}"))
    }

    /// The holder of Lease `kube-system/NAME` (`HOST_xxxxxxxx`), as its host.
    fn leader(&self, lease: &str) -> String {
        let holder = self.k(&[
            "-n",
            "kube-system",
            "get",
            "lease",
            lease,
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ]);
        holder
            .rsplit_once('_')
            .map(|(h, _)| h.to_string())
            .unwrap_or(holder)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let out = self.script("down");
        if !out.status.success() {
            eprintln!(
                "deploy/cluster.sh down: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

fn deployment(name: &str, image: &str, replicas: u32, spread: bool) -> String {
    let constraints = if spread {
        // A lost zone (its node tainted unreachable) is no domain, so its pods can be
        // replaced in the others; a rollout spreads the new revision's pods by themselves.
        serde_json::json!([{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                             "whenUnsatisfiable": "DoNotSchedule",
                             "nodeTaintsPolicy": "Honor",
                             "matchLabelKeys": ["pod-template-hash"],
                             "labelSelector": {"matchLabels": {"app": name}}}])
    } else {
        serde_json::json!([])
    };
    serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "topologySpreadConstraints": constraints,
                    // Evicted soon after their node is lost, so the test sees replacements
                    // within seconds (the default is 300 s).
                    "tolerations": [
                        {"key": "node.kubernetes.io/unreachable", "operator": "Exists",
                         "effect": "NoExecute", "tolerationSeconds": 5},
                        {"key": "node.kubernetes.io/not-ready", "operator": "Exists",
                         "effect": "NoExecute", "tolerationSeconds": 5},
                    ],
                    "containers": [{"name": "web", "image": image}],
                },
            },
        },
    })
    .to_string()
}

fn apply(c: &Cluster, manifest: &str) {
    let mut child = Command::new("kubectl")
        .arg(format!(
            "--kubeconfig={}",
            c.state.join("admin.kubeconfig").display()
        ))
        .args(["apply", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(manifest.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn zone_of(node: &str) -> &str {
    node.strip_prefix("node-").unwrap_or(node)
}

#[test]
fn compose_cluster_spreads_serves_and_recovers_from_faults() {
    let c = Cluster::up();
    let up = std::fs::read_to_string(c.state.join("up-seconds")).unwrap_or_default();
    eprintln!("up → three nodes Ready: {} s", up.trim());
    let nodes = c.json(&["get", "nodes"]);
    let zones: Vec<String> = nodes["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            n["metadata"]["labels"]["topology.kubernetes.io/zone"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    assert_eq!(zones, ["a", "b", "c"]);

    // Six replicas, spread over the zones: two in each.
    let image = "registry:5000/skiff/httpd";
    apply(&c, &deployment("web", image, 6, true));
    let rollout = c.wait("web's 6 replicas Running", Duration::from_secs(120), || {
        let pods = c.pods_by_node("web");
        (pods.len() == 6).then_some(()).ok_or(format!("{pods:?}"))
    });
    eprintln!("6 replicas Running across 3 nodes in {rollout:?}");
    for zone in ["a", "b", "c"] {
        let n = c
            .pods_by_node("web")
            .iter()
            .filter(|(_, node)| zone_of(node) == zone)
            .count();
        assert_eq!(n, 2, "zone {zone}: {:?}", c.pods_by_node("web"));
    }

    // A pod on node a reaches a Service whose pods are on nodes b and c, by name.
    apply(
        &c,
        &serde_json::json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "bc"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "bc"}},
                "template": {"metadata": {"labels": {"app": "bc"}},
                    "spec": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [{"matchExpressions": [{"key": "topology.kubernetes.io/zone",
                            "operator": "In", "values": ["b", "c"]}]}]}}},
                        "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                            "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "bc"}}}],
                        "containers": [{"name": "web", "image": image}]}}}})
        .to_string(),
    );
    c.k(&["expose", "deployment", "bc", "--port=80"]);
    c.k(&[
        "run",
        "client",
        "--image=registry:5000/skiff/busybox",
        "--overrides={\"spec\":{\"nodeName\":\"node-a\"}}",
        "--",
        "sleep",
        "3600",
    ]);
    c.wait("client and bc Ready", Duration::from_secs(120), || {
        c.kubectl(&[
            "wait",
            "--for=condition=Ready",
            "pod/client",
            "--timeout=2s",
        ])?;
        let bc = c.pods_by_node("bc");
        let mut zones: Vec<&str> = bc.iter().map(|(_, n)| zone_of(n)).collect();
        zones.sort();
        (zones == ["b", "c"]).then_some(()).ok_or(format!("{bc:?}"))
    });
    let mut answered = std::collections::BTreeSet::new();
    c.wait(
        "both bc pods answer by name from node a",
        Duration::from_secs(60),
        || {
            let page = c.kubectl(&[
                "exec",
                "client",
                "--",
                "timeout",
                "5",
                "wget",
                "-q",
                "-O",
                "-",
                "http://bc.default.svc.cluster.local/",
            ])?;
            answered.insert(page.trim().to_string());
            (answered.len() == 2)
                .then_some(())
                .ok_or(format!("{answered:?}"))
        },
    );

    // kubectl logs and exec reach pods on every node.
    for (pod, node) in c.pods_by_node("web") {
        assert_eq!(
            c.k(&["exec", &pod, "--", "hostname"]),
            pod,
            "exec on {node}"
        );
        c.k(&["logs", &pod]);
    }

    // The leading scheduler and controller manager killed: the standbys take over, and
    // scheduling and the controllers go on.
    let scheduler = c.leader("skiff-scheduler");
    let cm = c.leader("skiff-controller-manager");
    assert!(scheduler.starts_with("scheduler-"), "{scheduler}");
    assert!(cm.starts_with("controller-manager-"), "{cm}");
    c.docker(&["kill", &c.container(&scheduler)]);
    c.docker(&["kill", &c.container(&cm)]);
    let takeover = c.wait("the standbys to lead", Duration::from_secs(60), || {
        let (s, m) = (
            c.leader("skiff-scheduler"),
            c.leader("skiff-controller-manager"),
        );
        (s != scheduler && m != cm)
            .then_some(())
            .ok_or(format!("{s} {m}"))
    });
    eprintln!("standby scheduler and controller manager lead after {takeover:?}");
    c.k(&["scale", "deployment", "web", "--replicas=9"]);
    c.wait(
        "web scaled to 9 by the new leaders",
        Duration::from_secs(90),
        || {
            let n = c.pods_by_node("web").len();
            (n == 9).then_some(()).ok_or(format!("{n} running"))
        },
    );
    c.docker(&["start", &c.container(&scheduler)]);
    c.docker(&["start", &c.container(&cm)]);

    // One etcd member stopped: reads and writes go on.
    c.docker(&["stop", &c.container("etcd-2")]);
    c.k(&[
        "create",
        "configmap",
        "during-etcd-fault",
        "--from-literal=k=v",
    ]);
    assert_eq!(
        c.k(&[
            "get",
            "configmap",
            "during-etcd-fault",
            "-o",
            "jsonpath={.data.k}"
        ]),
        "v"
    );
    c.docker(&["start", &c.container("etcd-2")]);

    // One API server stopped: kubectl through the load-balanced address keeps working.
    c.docker(&["stop", &c.container("apiserver-1")]);
    for i in 0..10 {
        c.k(&[
            "create",
            "configmap",
            &format!("during-api-fault-{i}"),
            "--from-literal=k=v",
        ]);
        c.k(&["get", "nodes"]);
    }
    c.docker(&["start", &c.container("apiserver-1")]);

    // Node b cut off from the network and healed: its pods are replaced elsewhere, and once
    // it is back the cluster converges to 6 pods, each running once.
    c.k(&["scale", "deployment", "web", "--replicas=6"]);
    c.wait("web back to 6", Duration::from_secs(60), || {
        let n = c.pods_by_node("web").len();
        (n == 6).then_some(()).ok_or(format!("{n} running"))
    });
    let network = format!("{}_cluster", c.project);
    let node_b = c.container("node-b");
    let ip_b = {
        let out = Command::new("docker")
            .args([
                "inspect",
                "-f",
                &format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}"),
                &node_b,
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    c.docker(&["network", "disconnect", &network, &node_b]);
    let cut = c.wait("node-b NotReady", Duration::from_secs(60), || {
        let s = c.ready("node-b");
        (s != "True").then_some(()).ok_or(s)
    });
    let replaced = c.wait(
        "node-b's pods replaced on a and c",
        Duration::from_secs(90),
        || c.six_web_pods_off("node-b"),
    );
    eprintln!("partition: node-b NotReady after {cut:?}, its pods replaced {replaced:?} later");
    c.docker(&["network", "connect", "--ip", &ip_b, &network, &node_b]);
    c.wait(
        "node-b Ready again, 6 web pods each once",
        Duration::from_secs(120),
        || {
            let s = c.ready("node-b");
            let pods = c.json(&["get", "pods", "-l", "app=web"]);
            let all = pods["items"].as_array().unwrap().len();
            (s == "True" && all == 6)
                .then_some(())
                .ok_or(format!("ready={s} pods={all}"))
        },
    );

    // Node c stopped: NotReady, its pods replaced on the others; the time is reported.
    let stopped = Instant::now();
    c.docker(&["stop", &c.container("node-c")]);
    c.wait("node-c's pods replaced", Duration::from_secs(120), || {
        c.six_web_pods_off("node-c")
    });
    eprintln!(
        "node loss: node-c's pods Running elsewhere {:?} after it stopped",
        stopped.elapsed()
    );
    let s = c.ready("node-c");
    assert_ne!(s, "True");
}
