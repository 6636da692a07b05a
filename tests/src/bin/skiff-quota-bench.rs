//! `skiff-quota-bench`: what the `ResourceQuota` admission costs a create. The admin creates
//! pods at 1, 8 and 64 clients against a private etcd and `skiff-apiserver`, once in a
//! namespace without quotas and once in a namespace whose ResourceQuota limits `pods` and
//! `count/pods` (high enough never to refuse), so that every create is checked and charged to
//! the quota's status before it is stored. All creates of a namespace then write one quota
//! object, conditionally on its resourceVersion, so concurrent creates queue on it. The two
//! alternate, each going first in every other round; the table gives the median of the rounds
//! and their range. Prints a Markdown table.
//!
//! Run it with release binaries: `SKIFF_BIN_DIR=target/release target/release/skiff-quota-bench`.
//! Every load loop is bounded in count and time and stops by itself; all traffic is loopback.

use anyhow::{bail, Result};
use serde_json::{json, Value};
use skiff_e2e::bench::{creates_per_second, median_range};
use skiff_e2e::{ApiServer, Etcd};

const LEVELS: &[usize] = &[1, 8, 64];
const CREATES: usize = 2000;
const ROUNDS: usize = 4;

fn pod(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "bench", "labels": {"app": "bench"}},
        "spec": {"containers": [{"name": "c", "image": "registry.local/skiff/busybox:1",
                                 "command": ["sleep", "3600"]}]},
    })
}

/// Creates/s per level, with or without a quota in the namespace.
async fn run(quota: bool, round: usize) -> Result<Vec<f64>> {
    let etcd = Etcd::start()?;
    let api = ApiServer::start(&etcd).await?;
    let admin = api.client()?;
    let send = |method: reqwest::Method, path: &str, body: Value| {
        let admin = admin.clone();
        let url = api.url(path);
        async move {
            let r = admin.request(method, url).json(&body).send().await?;
            if !r.status().is_success() {
                bail!("{}: {}", r.status(), r.text().await.unwrap_or_default());
            }
            Ok(r.json::<Value>().await?)
        }
    };
    send(
        reqwest::Method::POST,
        "/api/v1/namespaces",
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}}),
    )
    .await?;
    if quota {
        let hard = json!({"pods": "100000", "count/pods": "100000"});
        let mut q = send(
            reqwest::Method::POST,
            "/api/v1/namespaces/bench/resourcequotas",
            json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "pods"},
                   "spec": {"hard": hard}}),
        )
        .await?;
        // What the quota controller would write first: no controller runs here.
        q["status"] = json!({"hard": hard, "used": {"pods": "0", "count/pods": "0"}});
        send(
            reqwest::Method::PUT,
            "/api/v1/namespaces/bench/resourcequotas/pods/status",
            q,
        )
        .await?;
        // The quota reaches the admission through the watch cache (what a list at
        // resourceVersion 0 reads): wait until it is there with its status.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let cached = send(
                reqwest::Method::GET,
                "/api/v1/namespaces/bench/resourcequotas?resourceVersion=0",
                Value::Null,
            )
            .await?;
            if cached["items"][0]["status"]["used"]["pods"] == "0" {
                break;
            }
            if std::time::Instant::now() > deadline {
                bail!("the quota never reached the watch cache");
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        send(
            reqwest::Method::POST,
            "/api/v1/namespaces/bench/pods",
            pod(&format!("r{round}-probe")),
        )
        .await?;
        let q = send(
            reqwest::Method::GET,
            "/api/v1/namespaces/bench/resourcequotas/pods",
            Value::Null,
        );
        let used = q.await?["status"]["used"]["pods"].clone();
        if used != "1" {
            bail!("the quota did not charge the first pod: used {used}");
        }
    }
    let pods = api.url("/api/v1/namespaces/bench/pods");
    let mut out = Vec::new();
    for &clients in LEVELS {
        let (admin, pods, prefix) = (admin.clone(), pods.clone(), format!("r{round}-c{clients}"));
        out.push(
            creates_per_second(clients, CREATES, move |i| {
                admin.post(&pods).json(&pod(&format!("{prefix}-{i}")))
            })
            .await,
        );
    }
    if quota {
        let q = send(
            reqwest::Method::GET,
            "/api/v1/namespaces/bench/resourcequotas/pods",
            Value::Null,
        )
        .await?;
        let listed = send(
            reqwest::Method::GET,
            "/api/v1/namespaces/bench/pods",
            Value::Null,
        )
        .await?;
        let stored = listed["items"].as_array().map_or(0, Vec::len);
        if q["status"]["used"]["pods"] != json!(stored.to_string()) {
            bail!(
                "the quota counts {} pods, {stored} are stored",
                q["status"]["used"]["pods"]
            );
        }
    }
    Ok(out)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<()> {
    let mut results: [Vec<Vec<f64>>; 2] = [Vec::new(), Vec::new()];
    for round in 0..ROUNDS {
        let order: [usize; 2] = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for m in order {
            results[m].push(run(m == 1, round).await?);
        }
    }
    println!(
        "| pod creates/s, median (range) of {ROUNDS} runs each | no quota in the namespace | a ResourceQuota on `pods`, `count/pods` | with / without |"
    );
    println!("|---|---|---|---|");
    for (i, clients) in LEVELS.iter().enumerate() {
        let (a, at) = median_range(results[0].iter().map(|r| r[i]), 0);
        let (b, bt) = median_range(results[1].iter().map(|r| r[i]), 0);
        println!("| {clients} client(s) | {at} | {bt} | {:.2}× |", b / a);
    }
    Ok(())
}
