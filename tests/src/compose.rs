//! The docker-compose cluster (`deploy/cluster.sh`) for the cluster tests and the cluster
//! benchmark: brought up under a compose project, ports and Docker network of its own, and
//! removed (`deploy/cluster.sh down`) when the handle drops, even on failure. Driven as a user
//! drives it: the host's `kubectl` through the load-balanced address, `docker` for faults.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// What a cluster is brought up with.
pub struct Options {
    /// Where Skiff's binaries are (debug ones for the tests, release ones for the benchmark).
    pub bin_dir: PathBuf,
    /// The controller managers' `--node-monitor-grace-period`.
    pub node_monitor_grace: String,
    /// The API servers' default `tolerationSeconds` for a lost node's taints.
    pub toleration_seconds: u32,
}

impl Default for Options {
    /// The binaries of `SKIFF_BIN_DIR` (else `target/debug`), a 10 s node-monitor grace and
    /// 5 s tolerations: a lost node's pods are replaced within seconds.
    fn default() -> Self {
        Options {
            bin_dir: crate::bin_dir(),
            node_monitor_grace: "10s".into(),
            toleration_seconds: 5,
        }
    }
}

/// One compose cluster.
pub struct Cluster {
    /// The compose project (prefix of every container's name).
    pub project: String,
    env: Vec<(String, String)>,
    /// Its CA, certificates, kubeconfigs and the nodes' join token.
    pub state: PathBuf,
    /// Seconds from starting the control plane to three Ready nodes, as `up` measured it.
    pub up_seconds: f64,
}

/// The repository's root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A /24 in 172.30.20–219 that no route on this machine uses.
fn free_subnet() -> String {
    let routes = Command::new("ip")
        .args(["-4", "route", "show"])
        .output()
        .expect("ip route");
    let routes = String::from_utf8_lossy(&routes.stdout).into_owned();
    let start = std::process::id() % 200;
    (0..200)
        .map(|i| format!("172.30.{}", (start + i) % 200 + 20))
        .find(|p| !routes.contains(&format!("{p}.0/24")))
        .map(|p| format!("{p}.0/24"))
        .expect("no free 172.30.N.0/24")
}

impl Cluster {
    /// Builds the images and brings the cluster up (`deploy/cluster.sh up`): returns once all
    /// three nodes are Ready. Panics with the script's output and the containers' logs if not.
    pub fn up(options: Options) -> Cluster {
        let project = format!("skifftest{}", std::process::id());
        let state = repo().join("deploy/.state").join(&project);
        let env = vec![
            ("SKIFF_PROJECT".to_string(), project.clone()),
            ("SKIFF_API_PORT".into(), crate::free_port().to_string()),
            ("SKIFF_REGISTRY_PORT".into(), crate::free_port().to_string()),
            (
                "SKIFF_NODE_MONITOR_GRACE".into(),
                options.node_monitor_grace,
            ),
            (
                "SKIFF_TOLERATION_SECONDS".into(),
                options.toleration_seconds.to_string(),
            ),
            ("SKIFF_SUBNET".into(), free_subnet()),
            // Where the handle looks for it, whatever the caller's environment says.
            ("SKIFF_STATE".into(), state.display().to_string()),
            (
                "SKIFF_BIN_DIR".into(),
                options.bin_dir.display().to_string(),
            ),
        ];
        let mut c = Cluster {
            project,
            env,
            state,
            up_seconds: 0.0,
        };
        let out = c.script("up");
        assert!(
            out.status.success(),
            "deploy/cluster.sh up failed:\n{}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            c.logs()
        );
        c.up_seconds = std::fs::read_to_string(c.state.join("up-seconds"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0.0);
        c
    }

    fn script(&self, what: &str) -> Output {
        Command::new("bash")
            .arg(repo().join("deploy/cluster.sh"))
            .arg(what)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()
            .expect("bash deploy/cluster.sh")
    }

    fn kubectl_command(&self) -> Command {
        let mut cmd = Command::new("kubectl");
        cmd.arg(format!(
            "--kubeconfig={}",
            self.state.join("admin.kubeconfig").display()
        ));
        cmd
    }

    /// `kubectl ARGS` against the cluster: its output, or its error message.
    pub fn kubectl(&self, args: &[&str]) -> Result<String, String> {
        crate::stdout_or_stderr(self.kubectl_command().args(args))
    }

    /// `kubectl ARGS` against API server `service` alone, not through the load balancer: at
    /// its container's address on the cluster network, which this machine reaches over the
    /// network's bridge (its certificate is checked for the name `lb`, one of its SANs).
    pub fn kubectl_at(&self, service: &str, args: &[&str]) -> Result<String, String> {
        let ip = self.ip_of(service);
        crate::stdout_or_stderr(
            self.kubectl_command()
                .arg(format!("--server=https://{ip}:6443"))
                .arg("--tls-server-name=lb")
                .args(args),
        )
    }

    /// `kubectl ARGS` against API server `service` alone (as [`Cluster::kubectl_at`]) with
    /// bearer token `token` as the only credential.
    pub fn kubectl_token_at(
        &self,
        service: &str,
        token: &str,
        args: &[&str],
    ) -> Result<String, String> {
        let ip = self.ip_of(service);
        crate::stdout_or_stderr(
            Command::new("kubectl")
                .arg("--kubeconfig=/dev/null")
                .arg(format!("--server=https://{ip}:6443"))
                .arg("--tls-server-name=lb")
                .arg(format!(
                    "--certificate-authority={}",
                    self.state.join("pki/ca.crt").display()
                ))
                .arg(format!("--token={token}"))
                .args(args),
        )
    }

    /// `kubectl ARGS`, which must succeed.
    pub fn k(&self, args: &[&str]) -> String {
        self.kubectl(args)
            .unwrap_or_else(|e| panic!("kubectl {args:?}: {e}"))
    }

    /// `kubectl ARGS -o json`, parsed.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        serde_json::from_str(&self.k(&a)).expect("kubectl printed JSON")
    }

    /// `kubectl apply -f -` of `manifest`, which must succeed.
    pub fn apply(&self, manifest: &str) {
        let mut child = self
            .kubectl_command()
            .args(["apply", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(manifest.as_bytes())
            .expect("manifest written");
        let out = child.wait_with_output().expect("kubectl apply");
        assert!(
            out.status.success(),
            "kubectl apply: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The container of compose service `service`.
    pub fn container(&self, service: &str) -> String {
        format!("{}_{service}_1", self.project)
    }

    /// The address of compose service `service`'s container on the cluster's network.
    pub fn ip_of(&self, service: &str) -> String {
        let network = self.network();
        self.docker(&[
            "inspect",
            "-f",
            &format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}"),
            &self.container(service),
        ])
    }

    /// Pushes `image` to the cluster's registry as `repository:tag`; returns the name pods
    /// give it (`registry:5000/REPOSITORY:TAG`).
    pub fn push_image(
        &self,
        image: &skiff::images::ImageSpec,
        repository: &str,
        tag: &str,
    ) -> String {
        let port = self
            .env
            .iter()
            .find(|(k, _)| k == "SKIFF_REGISTRY_PORT")
            .map(|(_, v)| v.clone())
            .expect("the registry's port is set");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        rt.block_on(image.push(&format!("127.0.0.1:{port}"), repository, tag))
            .unwrap_or_else(|e| panic!("pushing {repository}:{tag}: {e:#}"));
        format!("registry:5000/{repository}:{tag}")
    }

    /// The cluster's Docker network.
    pub fn network(&self) -> String {
        format!("{}_cluster", self.project)
    }

    /// `docker ARGS`, which must succeed; its output.
    pub fn docker(&self, args: &[&str]) -> String {
        let out = Command::new("docker").args(args).output().expect("docker");
        assert!(
            out.status.success(),
            "docker {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// `GET /` over plain HTTP to `addr` (`IP:PORT`) from inside compose service `service`'s
    /// container, as that container's own network sees it (bash's `/dev/tcp`, so the image
    /// needs no HTTP client): the response's body, or why there is none. Gives up after 5 s.
    pub fn http_get_from(&self, service: &str, addr: &str) -> Result<String, String> {
        let (host, port) = addr
            .rsplit_once(':')
            .ok_or_else(|| format!("{addr}: expected IP:PORT"))?;
        let script = format!(
            "exec 3<>/dev/tcp/{host}/{port} && printf 'GET / HTTP/1.0\\r\\n\\r\\n' >&3 && cat <&3"
        );
        let out = Command::new("docker")
            .args([
                "exec",
                &self.container(service),
                "timeout",
                "5",
                "bash",
                "-c",
            ])
            .arg(script)
            .output()
            .map_err(|e| format!("docker exec: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            return Err(format!(
                "{service} → {addr}: exit {}: {}{}",
                out.status,
                text,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        match text.split_once("\r\n\r\n") {
            Some((head, body)) if head.starts_with("HTTP/1.") => Ok(body.trim().to_string()),
            _ => Err(format!(
                "{service} → {addr}: not an HTTP response: {text:?}"
            )),
        }
    }

    /// Everything compose service `service`'s container has logged (stdout and stderr).
    pub fn docker_logs(&self, service: &str) -> String {
        let out = Command::new("docker")
            .args(["logs", &self.container(service)])
            .output()
            .expect("docker logs");
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// The last lines of every container's log, for a failure's message.
    pub fn logs(&self) -> String {
        let out = Command::new("docker-compose")
            .args(["-p", &self.project, "-f"])
            .arg(repo().join("deploy/docker-compose.yml"))
            .args(["logs", "--tail=15", "--no-color"])
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output();
        out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    /// Waits for `f` to say yes within `within` ([`crate::eventually_ok`]); returns the time
    /// it took. Panics with the last answer and the containers' logs when time runs out.
    pub fn wait(
        &self,
        what: &str,
        within: Duration,
        f: impl FnMut() -> Result<(), String>,
    ) -> Duration {
        let start = Instant::now();
        crate::eventually_ok(what, within, f, || self.logs());
        start.elapsed()
    }

    /// Pods labelled `app=APP` that are not being deleted and whose phase is Running, with
    /// their nodes and whether they are Ready.
    pub fn running(&self, app: &str) -> Vec<RunningPod> {
        let pods = self.json(&["get", "pods", "-l", &format!("app={app}")]);
        pods["items"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .filter(|p| p["status"]["phase"] == "Running")
            .map(|p| RunningPod {
                name: p["metadata"]["name"].as_str().unwrap_or("").to_string(),
                node: p["spec"]["nodeName"].as_str().unwrap_or("").to_string(),
                ip: p["status"]["podIP"].as_str().unwrap_or("").to_string(),
                ready: p["status"]["conditions"].as_array().is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                }),
            })
            .collect()
    }

    /// Node `node`'s Ready condition: `True`, `False` or `Unknown`.
    pub fn ready(&self, node: &str) -> String {
        self.k(&[
            "get",
            "node",
            node,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ])
    }

    /// The holder of Lease `kube-system/NAME` (`HOST_xxxxxxxx`), as its host.
    pub fn leader(&self, lease: &str) -> String {
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

    /// The processes of compose service `service`'s container: command name and resident
    /// memory in KiB.
    pub fn processes(&self, service: &str) -> Vec<(String, u64)> {
        let out = self.docker(&["top", &self.container(service), "-eo", "pid,rss,comm"]);
        out.lines()
            .skip(1)
            .filter_map(|l| {
                let mut cols = l.split_whitespace();
                let (_pid, rss, comm) = (cols.next()?, cols.next()?, cols.next()?);
                Some((comm.to_string(), rss.parse().ok()?))
            })
            .collect()
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

/// A pod as [`Cluster::running`] reports it.
#[derive(Debug, Clone)]
pub struct RunningPod {
    /// Its name.
    pub name: String,
    /// The node it runs on.
    pub node: String,
    /// Its IP (`status.podIP`).
    pub ip: String,
    /// Whether its Ready condition is True.
    pub ready: bool,
}

/// A Deployment of `replicas` pods labelled `app=NAME` running `image`, optionally spread
/// over zones (`maxSkew` 1, `DoNotSchedule`, a lost zone's node left out by
/// `nodeTaintsPolicy: Honor`), ready when httpd answers. How soon its pods leave a lost node
/// is the cluster's setting ([`Options::toleration_seconds`]).
pub fn deployment(name: &str, image: &str, replicas: u32, spread: bool) -> String {
    let constraints = if spread {
        // A rollout spreads the new revision's pods by themselves (matchLabelKeys).
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
                    "containers": [{"name": "web", "image": image,
                        "readinessProbe": {"httpGet": {"path": "/", "port": 80},
                                           "periodSeconds": 1}}],
                },
            },
        },
    })
    .to_string()
}

/// The zone of one of the cluster's nodes (`node-a` is in zone `a`).
pub fn zone_of(node: &str) -> &str {
    node.strip_prefix("node-").unwrap_or(node)
}
