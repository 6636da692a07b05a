//! `skiff-encryption-bench`: what encryption at rest costs. The admin creates Secrets and
//! reads them back against a private etcd and `skiff-apiserver`, once storing them as they
//! are (identity: no `--encryption-provider-config`) and once with KMS v2 envelope encryption
//! through a real `skiff-kms` plugin. The two alternate, each going first in every other round,
//! so that the machine's drift shows as spread rather than as a difference; the table gives
//! the median of the rounds and their range. Prints a Markdown table.
//!
//! Run it with release binaries: `SKIFF_BIN_DIR=target/release target/release/skiff-encryption-bench`.
//! Every load loop is bounded in count and time and stops by itself; all traffic is loopback.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde_json::{json, Value};
use skiff_e2e::bench::{creates_per_second, median_range, percentile};
use skiff_e2e::kms::KmsPlugin;
use skiff_e2e::{ApiServer, Etcd};

const LEVELS: &[usize] = &[1, 8, 64];
const CREATES: usize = 2000;
const GETS: usize = 2000;
const ROUNDS: usize = 6;

fn secret(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": "bench", "labels": {"app": "bench"}},
        "type": "Opaque",
        "data": {
            "username": "YWRtaW5pc3RyYXRvcg==",
            "password": "c3VwZXItc2VjcmV0LXBhc3N3b3JkLTAxMjM0NTY3ODk=",
            "token": "ZXlKaGJHY2lPaUpTVXpJMU5pSXNJbXRwWkNJNklrRkNRMFFpZlEuZXlKemRXSWlPaUppWlc1amFDSjk=",
        },
    })
}

/// One run's figures: creates/s per level, and GET p50/p99.
struct Figures {
    creates: Vec<f64>,
    get_p50: Duration,
    get_p99: Duration,
}

async fn run(kms: bool, round: usize) -> Result<Figures> {
    let dir = tempfile::tempdir()?;
    let etcd = Etcd::start()?;
    let plugin = if kms { Some(KmsPlugin::start()?) } else { None };
    let mut flags = Vec::new();
    if let Some(p) = &plugin {
        let config = dir.path().join("encryption.yaml");
        std::fs::write(
            &config,
            format!(
                "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n  - kms: {{apiVersion: v2, name: bench, endpoint: '{}', timeout: 3s}}\n  - identity: {{}}\n",
                p.endpoint()
            ),
        )?;
        flags.push(format!("--encryption-provider-config={}", config.display()));
    }
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let api = ApiServer::start_with(&etcd, &flags).await?;
    let admin = api.client()?;
    let r = admin
        .post(api.url("/api/v1/namespaces"))
        .json(&json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}}))
        .send()
        .await?;
    if !r.status().is_success() {
        bail!("creating the namespace: {}", r.status());
    }
    let secrets = api.url("/api/v1/namespaces/bench/secrets");
    let mut figures = Figures {
        creates: Vec::new(),
        get_p50: Duration::ZERO,
        get_p99: Duration::ZERO,
    };
    for &clients in LEVELS {
        let (admin, secrets, prefix) = (
            admin.clone(),
            secrets.clone(),
            format!("r{round}-c{clients}"),
        );
        figures.creates.push(
            creates_per_second(clients, CREATES, move |i| {
                admin.post(&secrets).json(&secret(&format!("{prefix}-{i}")))
            })
            .await,
        );
    }
    let mut gets = Vec::with_capacity(GETS);
    for n in 0..GETS {
        let t = Instant::now();
        let r = admin
            .get(format!("{secrets}/r{round}-c1-{}", n % 1000))
            .send()
            .await?;
        let status = r.status();
        let _ = r.bytes().await?;
        if status != 200 {
            bail!("GET answered {status} (kms: {kms})");
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
    let mut results: Vec<Vec<Figures>> = vec![Vec::new(), Vec::new()];
    for round in 0..ROUNDS {
        let order: [usize; 2] = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for m in order {
            results[m].push(run(m == 1, round).await?);
        }
    }
    // Median (range) of one figure over the rounds of mode `m`.
    let summary = |f: &dyn Fn(&Figures) -> f64, m: usize, digits: usize| {
        median_range(results[m].iter().map(f), digits)
    };
    println!(
        "| measure, median (range) of {ROUNDS} runs each | identity (no encryption) | KMS v2 envelope (`skiff-kms`) | KMS v2 / identity |"
    );
    println!("|---|---|---|---|");
    for (i, clients) in LEVELS.iter().enumerate() {
        let (a, at) = summary(&|f| f.creates[i], 0, 0);
        let (k, kt) = summary(&|f| f.creates[i], 1, 0);
        println!(
            "| secret creates/s, {clients} client(s) | {at} | {kt} | {:.2}× |",
            k / a
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
        let (k, kt) = summary(pick, 1, 2);
        println!(
            "| GET one secret, {name} ms ({GETS} sequential) | {at} | {kt} | {:.2}× |",
            k / a
        );
    }
    Ok(())
}
