//! skiff-cluster-bench: the docker-compose cluster (`deploy/cluster.sh`) as a user meets it,
//! from the binaries in `SKIFF_BIN_DIR` (release ones, in `scripts/bench`):
//!
//! - from `up` starting the control plane to all three nodes Ready (images already built);
//! - from `kubectl apply` of a 30-replica Deployment to all 30 pods Ready across the nodes;
//! - each component's resident memory with those pods running (control plane: three etcd
//!   members, two API servers, two schedulers, two controller managers; per node: the
//!   agent, containerd, the kubelet, the proxy), next to k3s's published figures;
//! - node loss: a node container killed (`docker kill`), until the node is NotReady and
//!   until its pods are Ready on the other nodes, with the controller managers'
//!   `--node-monitor-grace-period=10s` and the API servers'
//!   `--default-{not-ready,unreachable}-toleration-seconds=5`.
//!
//! Prints a Markdown report on stdout. The cluster is removed at the end, even on failure.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use skiff_e2e::compose::{deployment, Cluster, Options};

const REPLICAS: usize = 30;

/// Ready pods of `app` not on `avoid`.
fn ready_off(c: &Cluster, app: &str, avoid: &str) -> usize {
    c.running(app)
        .iter()
        .filter(|p| p.ready && p.node != avoid)
        .count()
}

/// A component's name for the report, from a process's command name (as `ps` shortens it).
fn component(comm: &str) -> Option<&'static str> {
    Some(match comm {
        "etcd" => "etcd",
        "skiff-apiserver" => "skiff-apiserver",
        "skiff-schedule" | "skiff-scheduler" => "skiff-scheduler",
        c if c.starts_with("skiff-controlle") => "skiff-controller-manager",
        "haproxy" => "haproxy (load balancer)",
        "docker-registry" => "docker-registry",
        "skiff" => "skiff agent (supervisor)",
        "containerd" => "containerd",
        "skiff-kubelet" => "skiff-kubelet",
        "skiff-proxy" => "skiff-proxy",
        c if c.starts_with("containerd-shim") => "containerd shims (one per pod)",
        _ => return None,
    })
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn main() {
    let started = Instant::now();
    // SKIFF_BIN_DIR's binaries, a 10 s grace and 5 s tolerations (the module doc).
    let c = Cluster::up(Options::default());
    eprintln!("cluster up ({:.1} s to Ready nodes)", c.up_seconds);
    // The cluster DNS is part of every cluster; wait for it before measuring the workload.
    c.wait("the cluster DNS", Duration::from_secs(120), || {
        c.kubectl(&[
            "-n",
            "kube-system",
            "rollout",
            "status",
            "deployment/skiff-dns",
            "--timeout=2s",
        ])
        .map(|_| ())
    });

    let t0 = Instant::now();
    c.apply(&deployment(
        "bench",
        "registry:5000/skiff/httpd",
        REPLICAS as u32,
        false,
    ));
    c.wait(
        "30 replicas Ready",
        Duration::from_secs(300),
        || match ready_off(&c, "bench", "") {
            n if n == REPLICAS => Ok(()),
            n => Err(format!("{n} Ready")),
        },
    );
    let rollout = t0.elapsed();
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for p in c.running("bench") {
        *per_node.entry(p.node).or_default() += 1;
    }
    eprintln!("30 replicas Ready in {rollout:?}: {per_node:?}");

    // Resident memory by component, summed over its replicas.
    let services = [
        "etcd-1",
        "etcd-2",
        "etcd-3",
        "apiserver-1",
        "apiserver-2",
        "scheduler-1",
        "scheduler-2",
        "controller-manager-1",
        "controller-manager-2",
        "lb",
        "registry",
        "node-a",
        "node-b",
        "node-c",
    ];
    let mut rss: BTreeMap<&str, (u64, u32)> = BTreeMap::new();
    let mut node_agent: BTreeMap<&str, u64> = BTreeMap::new();
    for s in services {
        for (comm, kib) in c.processes(s) {
            let Some(name) = component(&comm) else {
                continue;
            };
            let e = rss.entry(name).or_default();
            e.0 += kib;
            e.1 += 1;
            if s.starts_with("node-") && !name.starts_with("containerd shims") {
                *node_agent.entry(s).or_default() += kib;
            }
        }
    }
    let one = |name: &str| rss.get(name).map(|(k, n)| k / u64::from(*n)).unwrap_or(0);
    // A k3s-like server: one of each control-plane part (etcd, API server, scheduler,
    // controller manager) — k3s runs them in one process.
    let server = one("etcd")
        + one("skiff-apiserver")
        + one("skiff-scheduler")
        + one("skiff-controller-manager");
    let agent_max = node_agent.values().copied().max().unwrap_or(0);
    // The shims are the pods' share (one per pod), reported apart from the cluster's own.
    let shims = "containerd shims (one per pod)";
    let total: u64 = rss
        .iter()
        .filter(|(name, _)| **name != shims)
        .map(|(_, (k, _))| k)
        .sum();

    // Node loss: node-c killed.
    let lost = "node-c";
    let on_lost = c.running("bench").iter().filter(|p| p.node == lost).count();
    let killed = Instant::now();
    c.docker(&["kill", &c.container(lost)]);
    c.wait("node-c NotReady", Duration::from_secs(120), || {
        let s = c.ready(lost);
        (s != "True").then_some(()).ok_or(s)
    });
    let not_ready = killed.elapsed();
    c.wait(
        "node-c's pods Ready elsewhere",
        Duration::from_secs(300),
        || match ready_off(&c, "bench", lost) {
            n if n == REPLICAS => Ok(()),
            n => Err(format!("{n} Ready off {lost}")),
        },
    );
    let recovered = killed.elapsed();

    println!("| | |");
    println!("|---|---|");
    println!(
        "| `up`: control plane started → 3 nodes Ready | {:.1} s |",
        c.up_seconds
    );
    println!(
        "| `kubectl apply` of a 30-replica Deployment → 30 pods Ready ({}) | {:.1} s |",
        per_node
            .iter()
            .map(|(n, k)| format!("{n}: {k}"))
            .collect::<Vec<_>>()
            .join(", "),
        rollout.as_secs_f64()
    );
    println!(
        "| node loss (`docker kill` node-c, {on_lost} pods on it) → node NotReady | {:.1} s |",
        not_ready.as_secs_f64()
    );
    println!(
        "| node loss → all 30 pods Ready on the other nodes (grace 10 s, toleration 5 s) | {:.1} s |",
        recovered.as_secs_f64()
    );
    println!();
    println!("Resident memory with the 30 pods running (all replicas of a component summed):");
    println!();
    println!("| component | replicas (processes) | RSS |");
    println!("|---|---|---|");
    for (name, (kib, n)) in rss.iter().filter(|(name, _)| **name != shims) {
        println!("| {name} | {n} | {} |", mib(*kib));
    }
    println!(
        "| **the whole cluster** (control plane, registry, load balancer, 3 nodes' agents) | | **{}** |",
        mib(total)
    );
    if let Some((kib, n)) = rss.get(shims) {
        println!(
            "| and the pods' containerd shims, one per pod ({n}: the 30 and the DNS) | {n} | {} |",
            mib(*kib)
        );
    }
    println!();
    println!(
        "A k3s-shaped server (one etcd, API server, scheduler and controller manager): \
         **{}** against k3s's published ~1.6 GB; a node's agent (supervisor, containerd, \
         kubelet, proxy; the largest of the three): **{}** against k3s's ~275 MB.",
        mib(server),
        mib(agent_max)
    );
    eprintln!("done in {:?}", started.elapsed());
}
