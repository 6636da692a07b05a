//! `skiff-authz-bench`: what authorization costs. The same user (a bearer token) creates pods
//! and reads them back against a private etcd and `skiff-apiserver`, once with
//! `--authorization-mode=AlwaysAllow` and once with the default `Node,RBAC` (the user holding
//! `edit` in the namespace through a RoleBinding, among 200 other bindings, as a real
//! cluster's policy would have). The two alternate, each going first in every other round, so
//! that the machine's drift shows as spread rather than as a difference; the table gives the
//! median of the rounds and their range. Prints a Markdown table.
//!
//! Run it with release binaries: `SKIFF_BIN_DIR=target/release target/release/skiff-authz-bench`.
//! Every load loop is bounded in count and time and stops by itself; all traffic is loopback.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde_json::{json, Value};
use skiff_e2e::bench::{creates_per_second, median_range, percentile};
use skiff_e2e::{ApiServer, Etcd};

const TOKEN: &str = "bench-token-0123456789";
const LEVELS: &[usize] = &[1, 8, 64];
const CREATES: usize = 2000;
const GETS: usize = 2000;
const ROUNDS: usize = 6;

fn pod(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "bench", "labels": {"app": "bench"}},
        "spec": {"containers": [{"name": "c", "image": "registry.local/skiff/busybox:1",
                                 "command": ["sleep", "3600"]}]},
    })
}

/// One run's figures: creates/s per level, and GET p50/p99.
struct Figures {
    creates: Vec<f64>,
    get_p50: Duration,
    get_p99: Duration,
}

async fn run(mode: &str, round: usize) -> Result<Figures> {
    let dir = tempfile::tempdir()?;
    let tokens = dir.path().join("tokens.csv");
    std::fs::write(&tokens, format!("{TOKEN},bench,1000,\"bench-users\"\n"))?;
    let etcd = Etcd::start()?;
    let api = ApiServer::start_with(
        &etcd,
        &[
            &format!("--token-auth-file={}", tokens.display()),
            &format!("--authorization-mode={mode}"),
        ],
    )
    .await?;
    let admin = api.client()?;
    let user = api.anonymous_client()?;
    let post = |path: &str, body: Value| {
        let admin = admin.clone();
        let url = api.url(path);
        async move {
            let r = admin.post(url).json(&body).send().await?;
            if !r.status().is_success() {
                bail!("{}: {}", r.status(), r.text().await.unwrap_or_default());
            }
            Ok(())
        }
    };
    post(
        "/api/v1/namespaces",
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}}),
    )
    .await?;
    // The policy a cluster in use has: bindings for many other users and groups.
    for i in 0..100 {
        post(
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                   "metadata": {"name": format!("other-{i}")},
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
                   "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": format!("user-{i}")}]}),
        )
        .await?;
        post(
            "/apis/rbac.authorization.k8s.io/v1/namespaces/bench/rolebindings",
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                   "metadata": {"name": format!("other-{i}")},
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
                   "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": format!("group-{i}")}]}),
        )
        .await?;
    }
    post(
        "/apis/rbac.authorization.k8s.io/v1/namespaces/bench/rolebindings",
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": "bench-edit"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
               "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "bench"}]}),
    )
    .await?;
    let pods = api.url("/api/v1/namespaces/bench/pods");
    // The binding reaches the authorizer through the watch cache: wait until it does.
    let deadline = Instant::now() + Duration::from_secs(10);
    while user.get(&pods).bearer_auth(TOKEN).send().await?.status() != 200 {
        if Instant::now() > deadline {
            bail!("user bench still cannot list pods in {mode}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut figures = Figures {
        creates: Vec::new(),
        get_p50: Duration::ZERO,
        get_p99: Duration::ZERO,
    };
    for &clients in LEVELS {
        let (user, pods, prefix) = (user.clone(), pods.clone(), format!("r{round}-c{clients}"));
        figures.creates.push(
            creates_per_second(clients, CREATES, move |i| {
                user.post(&pods)
                    .bearer_auth(TOKEN)
                    .json(&pod(&format!("{prefix}-{i}")))
            })
            .await,
        );
    }
    let mut gets = Vec::with_capacity(GETS);
    for n in 0..GETS {
        let t = Instant::now();
        let r = user
            .get(format!("{pods}/r{round}-c1-{}", n % 1000))
            .bearer_auth(TOKEN)
            .send()
            .await?;
        let status = r.status();
        let _ = r.bytes().await?;
        if status != 200 {
            bail!("GET answered {status} in {mode}");
        }
        gets.push(t.elapsed());
    }
    gets.sort();
    figures.get_p50 = percentile(&gets, 0.5);
    figures.get_p99 = percentile(&gets, 0.99);
    Ok(figures)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<()> {
    let modes = ["AlwaysAllow", "Node,RBAC"];
    let mut results: Vec<Vec<Figures>> = vec![Vec::new(), Vec::new()];
    for round in 0..ROUNDS {
        let order: [usize; 2] = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for m in order {
            results[m].push(run(modes[m], round).await?);
        }
    }
    // Median (range) of one figure over the rounds of mode `m`.
    let summary = |f: &dyn Fn(&Figures) -> f64, m: usize, digits: usize| {
        median_range(results[m].iter().map(f), digits)
    };
    println!(
        "| measure, median (range) of {ROUNDS} runs each | `--authorization-mode=AlwaysAllow` | `Node,RBAC` (RoleBinding to `edit`, 201 bindings) | RBAC / AlwaysAllow |"
    );
    println!("|---|---|---|---|");
    for (i, clients) in LEVELS.iter().enumerate() {
        let (a, at) = summary(&|f| f.creates[i], 0, 0);
        let (r, rt) = summary(&|f| f.creates[i], 1, 0);
        println!(
            "| pod creates/s, {clients} client(s) | {at} | {rt} | {:.2}× |",
            r / a
        );
    }
    let ms_of = |d: Duration| d.as_secs_f64() * 1000.0;
    for (name, pick) in [
        (
            "p50",
            &(|f: &Figures| ms_of(f.get_p50)) as &dyn Fn(&Figures) -> f64,
        ),
        ("p99", &|f: &Figures| ms_of(f.get_p99)),
    ] {
        let (a, at) = summary(pick, 0, 2);
        let (r, rt) = summary(pick, 1, 2);
        println!(
            "| GET one pod, {name} ms ({GETS} sequential) | {at} | {rt} | {:.2}× |",
            r / a
        );
    }
    Ok(())
}
