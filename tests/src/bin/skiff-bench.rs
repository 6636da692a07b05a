//! `skiff-bench`: measures skiff-apiserver on this machine against a private etcd, and raw
//! etcd transactions of the same size as the physical ceiling. Prints a Markdown report.
//!
//! Run it with release binaries: `scripts/bench` (which also writes BENCHMARKS.md).
//! Every load loop is bounded in count and time and stops by itself; all traffic is loopback.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use serde_json::{json, Value};
use skiff_e2e::{ApiServer, Etcd};

fn pod(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "bench", "labels": {"app": "bench", "tier": "load"}},
        "spec": {"containers": [{"name": "c", "image": "registry.local/skiff/busybox:1",
                                 "command": ["sleep", "3600"],
                                 "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]},
    })
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

struct Level {
    clients: usize,
    per_sec: f64,
    p50: Duration,
    p99: Duration,
}

/// Runs `total` operations over `clients` workers (or stops at `limit`), timing each.
async fn run_load<F, Fut>(clients: usize, total: usize, limit: Duration, op: F) -> Level
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let op = Arc::new(op);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let op = op.clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= total || start.elapsed() > limit {
                    break;
                }
                let t = Instant::now();
                if op(i).await {
                    lat.push(t.elapsed());
                }
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap_or_default());
    }
    let took = start.elapsed();
    all.sort();
    Level {
        clients,
        per_sec: all.len() as f64 / took.as_secs_f64(),
        p50: percentile(&all, 0.5),
        p99: percentile(&all, 0.99),
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .map(|l| l.to_string())
        })
        .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<()> {
    let levels = [1usize, 8, 64];
    let per_level = 3000usize;
    let limit = Duration::from_secs(30);
    let mut report = String::new();

    // --- raw etcd: the same transaction the API server does for a create ---
    let etcd = Etcd::start()?;
    let raw_payload = Arc::new(serde_json::to_vec(&pod("x"))?);
    let mut raw = Vec::new();
    for &clients in &levels {
        let client =
            etcd_client::Client::connect([etcd.endpoint.trim_start_matches("http://")], None)
                .await?;
        let payload = raw_payload.clone();
        let level = run_load(clients, per_level, limit, move |i| {
            let mut kv = client.kv_client();
            let payload = payload.clone();
            async move {
                let key = format!("/bench/{clients}/{i}");
                let txn = Txn::new()
                    .when([Compare::version(key.as_str(), CompareOp::Equal, 0)])
                    .and_then([TxnOp::put(key.as_str(), payload.as_slice(), None)]);
                kv.txn(txn).await.is_ok()
            }
        })
        .await;
        raw.push(level);
    }
    drop(etcd);

    // --- the API server ---
    let etcd = Etcd::start()?;
    let api = ApiServer::start(&etcd).await?;
    let pid = api.pid().context("apiserver pid")?;
    let client = api.client()?;
    let url = api.url("/api/v1/namespaces");
    client
        .post(&url)
        .json(&json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}}))
        .send()
        .await?;
    let pods_url = Arc::new(api.url("/api/v1/namespaces/bench/pods"));
    let mut creates = Vec::new();
    for &clients in &levels {
        let c = client.clone();
        let u = pods_url.clone();
        let level = run_load(clients, per_level, limit, move |i| {
            let c = c.clone();
            let u = u.clone();
            async move {
                matches!(c.post(u.as_str()).json(&pod(&format!("c{clients}-{i}"))).send().await, Ok(r) if r.status() == 201)
            }
        })
        .await;
        creates.push(level);
    }

    // GET latency.
    let mut gets = Vec::new();
    for n in 0..2000 {
        let t = Instant::now();
        let r = client
            .get(format!("{}/c1-{}", pods_url, n % 1000))
            .send()
            .await?;
        let _ = r.bytes().await?;
        gets.push(t.elapsed());
    }
    gets.sort();

    // Fill to 10,000 pods, then LIST them from the watch cache.
    let list: Value = client
        .get(format!("{}?limit=1", pods_url))
        .send()
        .await?
        .json()
        .await?;
    let existing = list["metadata"]["remainingItemCount"].as_u64().unwrap_or(0) as usize + 1;
    let fill = 10_000usize.saturating_sub(existing);
    {
        let c = client.clone();
        let u = pods_url.clone();
        run_load(64, fill, Duration::from_secs(120), move |i| {
            let c = c.clone();
            let u = u.clone();
            async move {
                c.post(u.as_str())
                    .json(&pod(&format!("fill-{i}")))
                    .send()
                    .await
                    .is_ok()
            }
        })
        .await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut lists = Vec::new();
    let mut count = 0;
    for _ in 0..7 {
        let t = Instant::now();
        let body = client
            .get(format!("{}?resourceVersion=0", pods_url))
            .send()
            .await?
            .bytes()
            .await?;
        lists.push(t.elapsed());
        let v: Value = serde_json::from_slice(&body)?;
        count = v["items"].as_array().map(|a| a.len()).unwrap_or(0);
    }
    lists.sort();
    let rss_10k = rss_kib(pid);

    // Fan-out: one write reaching 1,000 watchers (HTTP/2 streams over 10 connections).
    let watchers = 1000usize;
    let mut conns = Vec::new();
    for _ in 0..10 {
        conns.push(api.client()?);
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    let mut handles = Vec::new();
    let fan_url =
        api.url("/api/v1/namespaces/bench/configmaps?watch=1&resourceVersion=0&timeoutSeconds=120");
    for n in 0..watchers {
        let c = conns[n % conns.len()].clone();
        let tx = tx.clone();
        let u = fan_url.clone();
        handles.push(tokio::spawn(async move {
            let Ok(resp) = c.get(u).send().await else {
                return;
            };
            let mut events = skiff_e2e::watch_events(resp);
            while let Some(v) = events.recv().await {
                let name = v["object"]["metadata"]["name"]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                if tx.send((name, Instant::now())).is_err() {
                    return;
                }
            }
        }));
    }
    drop(tx);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let open: u64 = {
        let m = client.get(api.url("/metrics")).send().await?.text().await?;
        m.lines()
            .filter(|l| l.starts_with("apiserver_registered_watchers{") && l.contains("configmaps"))
            .filter_map(|l| {
                l.split_whitespace()
                    .last()
                    .and_then(|v| v.parse::<f64>().ok())
            })
            .sum::<f64>() as u64
    };
    let cm_url = api.url("/api/v1/namespaces/bench/configmaps");
    let mut fan = Vec::new();
    for round in 0..5 {
        let name = format!("fan-{round}");
        let t0 = Instant::now();
        client
            .post(&cm_url)
            .json(&json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}}))
            .send()
            .await?;
        let mut got = 0;
        let deadline = Instant::now() + Duration::from_secs(10);
        while got < open as usize && Instant::now() < deadline {
            match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
                Ok(Some((n, at))) if n == name => {
                    fan.push(at.duration_since(t0));
                    got += 1;
                }
                Ok(Some(_)) => {}
                _ => break,
            }
        }
    }
    fan.sort();
    for h in handles {
        h.abort();
    }

    // --- report ---
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    report.push_str(&format!(
        "Machine: {cores} cores ({cpu}), etcd on the same machine (fsync on).\n\n"
    ));
    report.push_str("| clients | raw etcd txn/s | p50 ms | p99 ms | pod creates/s | p50 ms | p99 ms | creates / raw |\n|---|---|---|---|---|---|---|---|\n");
    for (r, c) in raw.iter().zip(creates.iter()) {
        report.push_str(&format!(
            "| {} | {:.0} | {} | {} | {:.0} | {} | {} | {:.0}% |\n",
            r.clients,
            r.per_sec,
            ms(r.p50),
            ms(r.p99),
            c.per_sec,
            ms(c.p50),
            ms(c.p99),
            100.0 * c.per_sec / r.per_sec.max(1.0)
        ));
    }
    report.push_str("\n| measure | result | target |\n|---|---|---|\n");
    report.push_str(&format!(
        "| GET one pod, p50 / p99 (2,000 sequential) | {} / {} ms | p99 ≤ 2 ms |\n",
        ms(percentile(&gets, 0.5)),
        ms(percentile(&gets, 0.99))
    ));
    report.push_str(&format!("| LIST {count} pods from the watch cache (`resourceVersion=0`), median of 7 | {} ms | ≤ 100 ms |\n", ms(percentile(&lists, 0.5))));
    report.push_str(&format!(
        "| one write reaching {open} watchers, p50 / p99 over {} deliveries | {} / {} ms | p99 ≤ 50 ms |\n",
        fan.len(),
        ms(percentile(&fan, 0.5)),
        ms(percentile(&fan, 0.99))
    ));
    report.push_str(&format!(
        "| apiserver RSS holding {count} pods | {:.0} MiB | ≤ 150 MiB |\n",
        rss_10k as f64 / 1024.0
    ));
    println!("{report}");
    Ok(())
}
