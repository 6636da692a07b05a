//! `skiff-scheduler-bench`: the scheduler measured two ways.
//!
//! In-process, with no API I/O: 5,000 nodes in three zones, 1,000 pods already running, then
//! 10,000 pending pods scheduled one by one (each decision assumed into the snapshot, as the
//! real loop does): decisions/s and per-pod p50/p99 for the basic profile and for pods with
//! topology spread and anti-affinity, and a check of what the decisions did.
//!
//! End to end (skipped with `--in-process-only`; `--e2e-only` runs just this half): a private etcd and a release
//! `skiff-apiserver` on loopback, 5,000 hollow nodes registered, 1,000 pods bound straight
//! through the `binding` subresource by 64 clients (the API server's raw bind ceiling), then a
//! `skiff-scheduler` process and 10,000 new pods created by 64 clients: pods/s from the first
//! create to the last pod seen bound. Then 9,000 more pods (20,000 in all) and the scheduler's
//! resident memory.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use serde_json::json;
use skiff_e2e::bench::percentile;
use skiff_scheduler::config::SchedulerConfig;
use skiff_scheduler::framework::Profile;
use skiff_scheduler::snapshot::{NodeInfo, PodInfo, Snapshot};

const NODES: usize = 5000;
const RUNNING: usize = 1000;
const PENDING: usize = 10_000;

fn nodes() -> Vec<NodeInfo> {
    (0..NODES)
        .map(|i| {
            let n: Node = serde_json::from_value(json!({
                "metadata": {"name": format!("node-{i}"), "labels": {
                    "kubernetes.io/hostname": format!("node-{i}"),
                    "topology.kubernetes.io/zone": format!("zone-{}", i % 3)}},
                "status": {"allocatable": {"cpu": "32", "memory": "256Gi", "pods": "110"}},
            }))
            .expect("node");
            NodeInfo::new(Arc::new(n))
        })
        .collect()
}

fn pod(name: &str, app: &str, spec_extra: serde_json::Value) -> PodInfo {
    let mut spec = json!({"containers": [{"name": "c", "image": "registry.local/app:1",
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]});
    if let Some(o) = spec_extra.as_object() {
        for (k, v) in o {
            spec[k] = v.clone();
        }
    }
    let p: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "bench", "labels": {"app": app},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": app, "uid": app, "controller": true}]},
        "spec": spec,
    }))
    .expect("pod");
    PodInfo::new(Arc::new(p))
}

/// Schedules `pods` into `nodes`, returning (decisions/s, p50, p99, unschedulable).
fn run(
    profile: &Profile,
    snap: &mut Snapshot,
    pods: Vec<PodInfo>,
) -> (f64, Duration, Duration, usize) {
    let mut lat = Vec::with_capacity(pods.len());
    let mut failed = 0;
    let start = Instant::now();
    for (i, p) in pods.into_iter().enumerate() {
        let t = Instant::now();
        let start = i % snap.nodes.len();
        match profile.schedule(&p, snap, start) {
            Ok(place) => snap.assume(place.node, Arc::new(p)),
            Err(_) => failed += 1,
        }
        lat.push(t.elapsed());
    }
    let took = start.elapsed();
    lat.sort();
    (
        lat.len() as f64 / took.as_secs_f64(),
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        failed,
    )
}

/// What the decisions did to the cluster: the largest zone skew within one scheduled app,
/// the most pods of one app on a node, and how many nodes ask for more than they have.
fn check(snap: &Snapshot) -> (i64, usize, usize) {
    let mut zones: HashMap<String, [i64; 3]> = HashMap::new();
    let mut stacked = 0;
    let mut over = 0;
    for (i, n) in snap.nodes.iter().enumerate() {
        let (r, a) = (&n.requested, &n.allocatable);
        if r.milli_cpu > a.milli_cpu || r.memory > a.memory || r.pods > a.pods {
            over += 1;
        }
        let mut per_app: HashMap<&str, usize> = HashMap::new();
        for p in &n.pods {
            let app = p
                .labels()
                .and_then(|l| l.get("app"))
                .map(String::as_str)
                .unwrap_or("");
            if app.starts_with("app-") {
                zones.entry(app.to_string()).or_default()[i % 3] += 1;
                *per_app.entry(app).or_default() += 1;
            }
        }
        stacked = stacked.max(per_app.values().copied().max().unwrap_or(0));
    }
    let skew = zones
        .values()
        .map(|z| z.iter().max().unwrap_or(&0) - z.iter().min().unwrap_or(&0))
        .max()
        .unwrap_or(0);
    (skew, stacked, over)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let in_process_only = std::env::args().any(|a| a == "--in-process-only");
    let e2e_only = std::env::args().any(|a| a == "--e2e-only");
    if !e2e_only {
        in_process()?;
    }
    if !in_process_only {
        e2e::run().await?;
    }
    Ok(())
}

fn in_process() -> anyhow::Result<()> {
    let profiles = SchedulerConfig::default().profiles()?;
    let profile = &profiles[0];
    let mut report = String::from(
        "| workload (5,000 nodes, 1,000 running pods, 10,000 scheduled) | decisions/s | p50 | p99 | unschedulable | largest zone skew in an app | most pods of an app on one node | over-committed nodes |\n|---|---|---|---|---|---|---|---|\n",
    );
    let ms = |d: Duration| format!("{:.3} ms", d.as_secs_f64() * 1000.0);

    for (what, extra) in [
        ("basic: resources, taints, affinity checks; controller pods spread softly by default", json!({})),
        (
            "topology spread (zone, maxSkew 1, DoNotSchedule) + anti-affinity (one per host within the app)",
            json!({
                "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                    "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "APP"}}}],
                "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                    {"labelSelector": {"matchLabels": {"app": "APP"}}, "topologyKey": "kubernetes.io/hostname"}]}},
            }),
        ),
    ] {
        let mut ns = nodes();
        // 1,000 running pods in 100 apps of 10.
        for i in 0..RUNNING {
            let n = i % NODES;
            ns[n].add_pod(Arc::new(pod(&format!("run-{i}"), &format!("run-{}", i / 10), json!({}))));
        }
        // Pending pods in apps of 50 (so anti-affinity one-per-host is satisfiable).
        let pods: Vec<PodInfo> = (0..PENDING)
            .map(|i| {
                let app = format!("app-{}", i / 50);
                let spec = serde_json::from_str(&extra.to_string().replace("APP", &app)).expect("json");
                pod(&format!("p-{i}"), &app, spec)
            })
            .collect();
        let mut snap = Snapshot::from_nodes(ns);
        let (rate, p50, p99, failed) = run(profile, &mut snap, pods);
        let (skew, stacked, over) = check(&snap);
        report.push_str(&format!(
            "| {what} | {rate:.0} | {} | {} | {failed} | {skew} | {stacked} | {over} |\n",
            ms(p50),
            ms(p99)
        ));
    }
    println!("{report}");
    Ok(())
}

mod e2e {
    //! The end-to-end half: real API server, real scheduler process, hollow nodes.

    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    use anyhow::{bail, Context};
    use k8s_openapi::api::core::v1::{Namespace, Pod};
    use serde_json::json;
    use skiff_client::{Api, Client, PostParams};
    use skiff_e2e::bench::{fan_out, rss_kib, status_kib, PodProgress, Stage};
    use skiff_e2e::{hollow, ApiServer, Etcd};

    const NODES: usize = 5000;
    const RUNNING: usize = 1000;
    const PENDING: usize = 10_000;
    const MORE: usize = 9000;
    const CLIENTS: usize = 64;
    const NS: &str = "bench";

    fn pod(name: &str, scheduler: &str) -> Pod {
        let app = name.rsplit_once('-').map(|(a, _)| a).unwrap_or(name);
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": NS, "labels": {"app": app},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": app,
                    "uid": format!("uid-{app}"), "controller": true}]},
            "spec": {"schedulerName": scheduler, "containers": [{"name": "c", "image": "registry.local/app:1",
                "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]},
        }))
        .expect("pod")
    }

    /// Creates `total` pods named by `name(i)` for `scheduler`, over `CLIENTS` clients.
    async fn create_pods(
        pods: &Api<Pod>,
        total: usize,
        name: fn(usize) -> String,
        scheduler: &'static str,
    ) -> anyhow::Result<Duration> {
        let p = pods.clone();
        fan_out(CLIENTS, total, move |i| {
            let p = p.clone();
            async move {
                p.create(&PostParams::default(), &pod(&name(i), scheduler))
                    .await?;
                Ok(())
            }
        })
        .await
    }

    pub async fn run() -> anyhow::Result<()> {
        let etcd = Etcd::start()?;
        let api = ApiServer::start(&etcd).await?;
        let mut cfg = skiff_client::Config::from_kubeconfig(&api.kubeconfig)?;
        cfg.qps = 0.0;
        let client = Client::new(cfg)?;

        let spec = hollow::Spec {
            count: NODES,
            lease_renew: Duration::ZERO,
            concurrency: CLIENTS,
            ..Default::default()
        };
        let t = Instant::now();
        hollow::register(&client, &spec).await?;
        let registered = t.elapsed();
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": NS}}))?;
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await?;
        let pods: Api<Pod> = Api::namespaced(client.clone(), NS);

        // The raw bind ceiling: pods no scheduler looks at, bound directly.
        create_pods(&pods, RUNNING, |i| format!("run-{}-{i}", i / 10), "nobody").await?;
        let p = pods.clone();
        let spec2 = spec.clone();
        let bind_took = fan_out(CLIENTS, RUNNING, move |i| {
            let (p, node) = (p.clone(), hollow::node_name(&spec2, i % NODES));
            async move {
                p.bind(&format!("run-{}-{i}", i / 10), &node).await?;
                Ok(())
            }
        })
        .await?;
        let ceiling = RUNNING as f64 / bind_took.as_secs_f64();

        // The scheduler.
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("scheduler.yaml");
        std::fs::write(
            &config,
            "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\n\
             clientConnection: {qps: 5000, burst: 10000}\n",
        )?;
        let log_path = dir.path().join("scheduler.log");
        let log = std::fs::File::create(&log_path)?;
        let mut sched = Command::new(skiff_e2e::binary("skiff-scheduler")?)
            .arg(format!("--kubeconfig={}", api.kubeconfig.display()))
            .arg(format!("--config={}", config.display()))
            .args(["--leader-elect=false", "--port=0", "--v=2"])
            .stdout(log.try_clone()?)
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .context("starting skiff-scheduler")?;
        let pid = sched.id();
        let result = async {
            let deadline = Instant::now() + Duration::from_secs(60);
            while !std::fs::read_to_string(&log_path)?.contains("scheduler started") {
                if Instant::now() > deadline || sched.try_wait()?.is_some() {
                    bail!(
                        "the scheduler did not start: {}",
                        std::fs::read_to_string(&log_path)?
                    );
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let bound = PodProgress::watch(&client, NS);
            bound
                .wait(Stage::Bound, RUNNING, Duration::from_secs(60))
                .await?;
            let rss_start = rss_kib(pid);

            let start = Instant::now();
            let created = create_pods(
                &pods,
                PENDING,
                |i| format!("app-{}-{i}", i / 50),
                "default-scheduler",
            )
            .await?;
            let last = bound
                .wait(Stage::Bound, RUNNING + PENDING, Duration::from_secs(600))
                .await?;
            let e2e = last.duration_since(start);
            let rss_mid = rss_kib(pid);

            create_pods(
                &pods,
                MORE,
                |i| format!("more-{}-{i}", i / 50),
                "default-scheduler",
            )
            .await?;
            bound
                .wait(
                    Stage::Bound,
                    RUNNING + PENDING + MORE,
                    Duration::from_secs(600),
                )
                .await?;
            tokio::time::sleep(Duration::from_secs(2)).await;
            let (rss, peak) = (rss_kib(pid), status_kib(pid, "VmHWM:"));
            Ok::<_, anyhow::Error>((created, e2e, [rss_start, rss_mid, rss], peak))
        }
        .await;
        // Stop the scheduler by its pid (SIGTERM, then wait).
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = sched.wait();
        if result.is_err() {
            // Which pods were left, and what the scheduler said of them.
            let list = pods.list(&Default::default()).await?;
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            for p in list
                .items
                .iter()
                .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_none())
                .take(10)
            {
                let name = p.metadata.name.clone().unwrap_or_default();
                eprintln!("unbound: {name} {:?}", p.status);
                for l in log.lines().filter(|l| l.contains(&name)) {
                    eprintln!("  {l}");
                }
            }
            eprintln!(
                "scheduler log tail: {}",
                log.lines().rev().take(20).collect::<Vec<_>>().join("\n")
            );
        }
        let (created, e2e, rss, peak) = result?;
        let [rss_start, rss_mid, rss] = rss;
        let rate = PENDING as f64 / e2e.as_secs_f64();
        let mib = |k: u64| format!("{:.0} MiB", k as f64 / 1024.0);
        println!("| measure (5,000 hollow nodes) | result | target |");
        println!("|---|---|---|");
        println!(
            "| register {NODES} hollow nodes (create + status, {CLIENTS} clients) | {:.1} s | |",
            registered.as_secs_f64()
        );
        println!(
            "| raw bind ceiling: {RUNNING} pods bound through `pods/binding` by {CLIENTS} clients | {ceiling:.0} binds/s | |"
        );
        println!(
            "| end to end: {PENDING} pods ({CLIENTS} clients creating, {:.0} creates/s) from first create to last bound, {RUNNING} already running | **{rate:.0} pods/s** ({:.1} s) | ≥ 1,000 pods/s or ≥ 90% of the ceiling ({:.0}), whichever is lower |",
            PENDING as f64 / created.as_secs_f64(),
            e2e.as_secs_f64(),
            ceiling * 0.9
        );
        println!(
            "| scheduler RSS with {NODES} nodes and {RUNNING} / {} pods | {} / {} | |",
            RUNNING + PENDING,
            mib(rss_start),
            mib(rss_mid),
        );
        println!(
            "| scheduler RSS with {NODES} nodes and {} pods (peak) | **{}** ({}) | ≤ 200 MiB |",
            RUNNING + PENDING + MORE,
            mib(rss),
            mib(peak)
        );
        Ok(())
    }
}
