//! `skiff-audit-bench`: what the audit log costs. The same user (a bearer token holding `edit`
//! in its namespace) creates pods and reads them back against a private etcd and
//! `skiff-apiserver`, with no audit log, and with every request audited at `Metadata` into a
//! file — written by the requests themselves (`--audit-log-mode=blocking`, the default) and
//! through the buffer (`batch`). The configurations take turns, a different one going first in
//! each round, so that the machine's drift shows as spread rather than as a difference; the
//! table gives the median of the rounds and their range. Prints a Markdown table.
//!
//! Run it with release binaries:
//! `SKIFF_BIN_DIR=target/release target/release/skiff-audit-bench [--rounds N]`.
//! Every load loop is bounded in count and time and stops by itself; all traffic is loopback.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::Parser;
use serde_json::{json, Value};
use skiff_e2e::bench::{creates_per_second, median_range, percentile};
use skiff_e2e::{ApiServer, Etcd};

const TOKEN: &str = "bench-token-0123456789";
const LEVELS: &[usize] = &[1, 8, 64];
const CREATES: usize = 2000;
const GETS: usize = 2000;
const POLICY: &str = "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Metadata\n";

#[derive(Parser)]
#[command(about = "What the audit log costs: request throughput with and without it")]
struct Args {
    /// Rounds; each runs every configuration once.
    #[arg(long, default_value_t = 6)]
    rounds: usize,
}

/// A configuration under test.
#[derive(Clone, Copy)]
struct Setup {
    name: &'static str,
    /// `--audit-log-mode`, or no audit log at all.
    mode: Option<&'static str>,
}

const SETUPS: [Setup; 3] = [
    Setup {
        name: "no audit log",
        mode: None,
    },
    Setup {
        name: "`Metadata`, `blocking`",
        mode: Some("blocking"),
    },
    Setup {
        name: "`Metadata`, `batch`",
        mode: Some("batch"),
    },
];

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

async fn run(setup: Setup, round: usize) -> Result<Figures> {
    let dir = tempfile::tempdir()?;
    let tokens = dir.path().join("tokens.csv");
    std::fs::write(&tokens, format!("{TOKEN},bench,1000,\"bench-users\"\n"))?;
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, POLICY)?;
    let log = dir.path().join("audit.log");
    let mut args = vec![format!("--token-auth-file={}", tokens.display())];
    if let Some(mode) = setup.mode {
        args.push(format!("--audit-policy-file={}", policy.display()));
        args.push(format!("--audit-log-path={}", log.display()));
        args.push(format!("--audit-log-mode={mode}"));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let etcd = Etcd::start()?;
    let api = ApiServer::start_with(&etcd, &args).await?;
    let admin = api.client()?;
    let user = api.anonymous_client()?;
    for (path, body) in [
        (
            "/api/v1/namespaces",
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}}),
        ),
        (
            "/apis/rbac.authorization.k8s.io/v1/namespaces/bench/rolebindings",
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                   "metadata": {"name": "bench-edit"},
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
                   "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "bench"}]}),
        ),
    ] {
        let r = admin.post(api.url(path)).json(&body).send().await?;
        if !r.status().is_success() {
            bail!("{}: {}", r.status(), r.text().await.unwrap_or_default());
        }
    }
    let pods = api.url("/api/v1/namespaces/bench/pods");
    // The binding reaches the authorizer through the watch cache: wait until it does.
    let deadline = Instant::now() + Duration::from_secs(10);
    while user.get(&pods).bearer_auth(TOKEN).send().await?.status() != 200 {
        if Instant::now() > deadline {
            bail!("user bench still cannot list pods ({})", setup.name);
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
            bail!("GET answered {status} ({})", setup.name);
        }
        gets.push(t.elapsed());
    }
    gets.sort();
    figures.get_p50 = percentile(&gets, 0.5);
    figures.get_p99 = percentile(&gets, 0.99);
    if setup.mode.is_some() {
        // The log must hold what was asked for: two events a request. (Stopping the server
        // writes out what batch mode still holds.)
        drop(api);
        let lines = std::fs::read_to_string(&log)?.lines().count();
        eprintln!("round {round}, {}: {lines} audit events", setup.name);
        if lines < 2 * GETS {
            bail!("only {lines} audit events were written ({})", setup.name);
        }
    }
    Ok(figures)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<()> {
    let args = Args::parse();
    let rounds = args.rounds.max(1);
    let n = SETUPS.len();
    let mut results: Vec<Vec<Figures>> = (0..n).map(|_| Vec::new()).collect();
    for round in 0..rounds {
        for k in 0..n {
            let m = (round + k) % n;
            results[m].push(run(SETUPS[m], round).await?);
        }
    }
    // Median (range) of one figure over the rounds of setup `m`.
    let summary = |f: &dyn Fn(&Figures) -> f64, m: usize, digits: usize| {
        median_range(results[m].iter().map(f), digits)
    };
    let names: Vec<&str> = SETUPS.iter().map(|s| s.name).collect();
    println!(
        "| measure, median (range) of {rounds} runs each | {} | blocking / none | batch / none |",
        names.join(" | ")
    );
    println!("|---|---|---|---|---|---|");
    let row = |label: String, pick: &dyn Fn(&Figures) -> f64, digits: usize| {
        let cells: Vec<(f64, String)> = (0..n).map(|m| summary(pick, m, digits)).collect();
        println!(
            "| {label} | {} | {:.2}× | {:.2}× |",
            cells
                .iter()
                .map(|c| c.1.as_str())
                .collect::<Vec<_>>()
                .join(" | "),
            cells[1].0 / cells[0].0,
            cells[2].0 / cells[0].0
        );
    };
    for (i, clients) in LEVELS.iter().enumerate() {
        row(
            format!("pod creates/s, {clients} client(s)"),
            &|f| f.creates[i],
            0,
        );
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    row(
        format!("GET one pod, p50 ms ({GETS} sequential)"),
        &|f| ms(f.get_p50),
        2,
    );
    row(
        format!("GET one pod, p99 ms ({GETS} sequential)"),
        &|f| ms(f.get_p99),
        2,
    );
    Ok(())
}
