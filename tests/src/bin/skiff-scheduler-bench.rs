//! `skiff-scheduler-bench`: the scheduler's decisions in-process, with no API I/O: 5,000
//! nodes in three zones, 1,000 pods already running, then 10,000 pending pods scheduled one
//! by one (each decision assumed into the snapshot, as the real loop does). Prints a Markdown
//! table of decisions/s and per-pod p50/p99 for the basic profile and for pods with topology
//! spread and anti-affinity.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use serde_json::json;
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

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
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

fn main() -> anyhow::Result<()> {
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
