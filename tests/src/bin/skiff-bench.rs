//! `skiff-bench`: measures skiff-apiserver on this machine against a private etcd, and raw
//! etcd transactions of the same size as the physical ceiling. Prints a Markdown report.
//!
//! Run it with release binaries: `scripts/bench` (which also writes BENCHMARKS.md).
//! Every load loop is bounded in count and time and stops by itself; all traffic is loopback.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use futures::StreamExt;
use serde_json::{json, Value};
use skiff_e2e::bench::{percentile, rss_kib};
use skiff_e2e::{ApiServer, Etcd};
use skiff_proto::v1 as pb;
use skiff_proto::v1::resources_client::ResourcesClient;

fn pod(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "bench", "labels": {"app": "bench", "tier": "load"}},
        "spec": {"containers": [{"name": "c", "image": "registry.local/skiff/busybox:1",
                                 "command": ["sleep", "3600"],
                                 "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]},
    })
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

/// Counts live heap bytes, for the informer memory figure.
#[global_allocator]
static ALLOC: cap::Cap<mimalloc::MiMalloc> = cap::Cap::new(mimalloc::MiMalloc, usize::MAX);

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<()> {
    // `--doors-only`: just the REST/gRPC comparison and the SDK figures (for quick iteration).
    let doors_only = std::env::args().any(|a| a == "--doors-only");
    let levels: &[usize] = if doors_only { &[] } else { &[1, 8, 64] };
    let per_level = 3000usize;
    let limit = Duration::from_secs(30);
    let mut report = String::new();

    // --- raw etcd: the same transaction the API server does for a create ---
    let etcd = Etcd::start()?;
    let raw_payload = Arc::new(serde_json::to_vec(&pod("x"))?);
    let mut raw = Vec::new();
    for &clients in levels {
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
    for &clients in levels {
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
    for n in 0..if doors_only { 0 } else { 2000 } {
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
    for _ in 0..if doors_only { 0 } else { 7 } {
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

    if doors_only {
        let doors = compare_doors(&api, &client, &pods_url).await?;
        let sdk = sdk_figures(&api).await?;
        for row in doors {
            println!("{row:?}");
        }
        for row in sdk {
            println!("{row:?}");
        }
        return Ok(());
    }

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

    // --- the two doors side by side: the same workloads over REST and over gRPC ---
    let doors = compare_doors(&api, &client, &pods_url).await?;
    let sdk = sdk_figures(&api).await?;

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
    report.push_str("\n### REST and gRPC side by side\n\n");
    report.push_str("Same server, same TLS, same objects; REST with JSON bodies (reqwest), gRPC with the generated stubs (tonic). Bodies are serialized per request on both sides and responses read in full but not decoded.\n\n");
    report.push_str("| workload | REST | gRPC | gRPC / REST |\n|---|---|---|---|\n");
    for row in &doors {
        report.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            row.0, row.1, row.2, row.3
        ));
    }
    report.push_str("\n### SDK\n\n| measure | result |\n|---|---|\n");
    for (k, v) in &sdk {
        report.push_str(&format!("| {k} | {v} |\n"));
    }
    println!("{report}");
    Ok(())
}

type Row = (String, String, String, String);

fn rate_row(what: &str, rest: &Level, grpc: &Level) -> Row {
    (
        what.to_string(),
        format!(
            "{:.0}/s (p50 {} ms, p99 {} ms)",
            rest.per_sec,
            ms(rest.p50),
            ms(rest.p99)
        ),
        format!(
            "{:.0}/s (p50 {} ms, p99 {} ms)",
            grpc.per_sec,
            ms(grpc.p50),
            ms(grpc.p99)
        ),
        format!("{:.2}×", grpc.per_sec / rest.per_sec.max(0.001)),
    )
}

fn latency_row(what: &str, rest: &[Duration], grpc: &[Duration]) -> Row {
    let (r50, r99) = (percentile(rest, 0.5), percentile(rest, 0.99));
    let (g50, g99) = (percentile(grpc, 0.5), percentile(grpc, 0.99));
    (
        what.to_string(),
        format!("p50 {} / p99 {} ms", ms(r50), ms(r99)),
        format!("p50 {} / p99 {} ms", ms(g50), ms(g99)),
        format!(
            "{:.2}× faster (p50)",
            r50.as_secs_f64() / g50.as_secs_f64().max(1e-9)
        ),
    )
}

/// A raw gRPC stub with the admin credentials.
async fn grpc_stub(api: &ApiServer) -> Result<ResourcesClient<tonic::transport::Channel>> {
    let cfg = skiff_client::Config::from_kubeconfig(&api.kubeconfig)?;
    let (cert, key) = cfg.identity.context("client certificate")?;
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(
            cfg.ca_pem.context("CA")?,
        ))
        .identity(tonic::transport::Identity::from_pem(cert, key));
    let channel = tonic::transport::Channel::from_shared(api.url(""))?
        .tls_config(tls)?
        .tcp_nodelay(true)
        .initial_stream_window_size(skiff_client::client::STREAM_WINDOW)
        .initial_connection_window_size(skiff_client::client::CONNECTION_WINDOW)
        .connect()
        .await?;
    Ok(ResourcesClient::new(channel).max_decoding_message_size(usize::MAX))
}

fn pods_ref(ns: &str) -> pb::ResourceRef {
    pb::ResourceRef {
        group: String::new(),
        version: "v1".into(),
        resource: "pods".into(),
        namespace: ns.into(),
    }
}

async fn compare_doors(
    api: &ApiServer,
    client: &reqwest::Client,
    pods_url: &str,
) -> Result<Vec<Row>> {
    let stub = grpc_stub(api).await?;
    let mut rows = Vec::new();
    client
        .post(api.url("/api/v1/namespaces"))
        .json(&json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "doors"}}))
        .send()
        .await?;
    let doors_url = Arc::new(api.url("/api/v1/namespaces/doors/pods"));
    for clients in [1usize, 8] {
        let c = client.clone();
        let u = doors_url.clone();
        let rest = run_load(clients, 2000, Duration::from_secs(30), move |i| {
            let c = c.clone();
            let u = u.clone();
            async move {
                let mut p = pod(&format!("rest-{clients}-{i}"));
                p["metadata"]["namespace"] = json!("doors");
                matches!(c.post(u.as_str()).json(&p).send().await, Ok(r) if r.status() == 201)
            }
        })
        .await;
        let s = stub.clone();
        let grpc = run_load(clients, 2000, Duration::from_secs(30), move |i| {
            let mut s = s.clone();
            async move {
                let mut p = pod(&format!("grpc-{clients}-{i}"));
                p["metadata"]["namespace"] = json!("doors");
                let req = pb::CreateRequest {
                    resource: Some(pods_ref("doors")),
                    object: Some(pb::Object {
                        api_version: "v1".into(),
                        kind: "Pod".into(),
                        json: serde_json::to_vec(&p).unwrap_or_default().into(),
                    }),
                    options: None,
                    ..Default::default()
                };
                s.create(req).await.is_ok()
            }
        })
        .await;
        rows.push(rate_row(
            &format!("create pods, {clients} client(s)"),
            &rest,
            &grpc,
        ));
    }

    // GET: 2,000 sequential reads of existing pods.
    let mut rest_gets = Vec::new();
    let mut grpc_gets = Vec::new();
    let mut s = stub.clone();
    for n in 0..2000 {
        let name = format!("fill-{}", n % 1000);
        let t = Instant::now();
        let _ = client
            .get(format!("{pods_url}/{name}"))
            .send()
            .await?
            .bytes()
            .await?;
        rest_gets.push(t.elapsed());
        let t = Instant::now();
        s.get(pb::GetRequest {
            resource: Some(pods_ref("bench")),
            name,
            ..Default::default()
        })
        .await?;
        grpc_gets.push(t.elapsed());
    }
    rest_gets.sort();
    grpc_gets.sort();
    rows.push(latency_row(
        "GET one pod (2,000 sequential)",
        &rest_gets,
        &grpc_gets,
    ));

    // LIST the 10,000 pods of `bench` from the watch cache.
    let mut rest_lists = Vec::new();
    let mut grpc_lists = Vec::new();
    for _ in 0..15 {
        let t = Instant::now();
        let _ = client
            .get(format!("{pods_url}?resourceVersion=0"))
            .send()
            .await?
            .bytes()
            .await?;
        rest_lists.push(t.elapsed());
        let t = Instant::now();
        s.list(pb::ListRequest {
            resource: Some(pods_ref("bench")),
            resource_version: "0".into(),
            ..Default::default()
        })
        .await?;
        grpc_lists.push(t.elapsed());
    }
    rest_lists.sort();
    grpc_lists.sort();
    rows.push(latency_row(
        "LIST 10,000 pods (`resourceVersion=0`), 15 runs each",
        &rest_lists,
        &grpc_lists,
    ));

    // WATCH: one client receiving every pod of `bench` as initial events.
    let total = s
        .list(pb::ListRequest {
            resource: Some(pods_ref("bench")),
            resource_version: "0".into(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .items
        .len();
    let t = Instant::now();
    let resp = client
        .get(format!(
            "{pods_url}?watch=1&resourceVersion=0&timeoutSeconds=60"
        ))
        .send()
        .await?;
    let mut events = skiff_e2e::watch_events(resp);
    let mut n = 0usize;
    while n < total {
        match tokio::time::timeout(Duration::from_secs(30), events.recv()).await {
            Ok(Some(_)) => n += 1,
            _ => break,
        }
    }
    let rest_watch = n as f64 / t.elapsed().as_secs_f64();
    drop(events);
    let t = Instant::now();
    let mut stream = s
        .watch(pb::WatchRequest {
            resource: Some(pods_ref("bench")),
            resource_version: "0".into(),
            timeout_seconds: 60,
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut g = 0usize;
    while g < total {
        match tokio::time::timeout(Duration::from_secs(30), stream.next()).await {
            Ok(Some(Ok(_))) => g += 1,
            _ => break,
        }
    }
    let grpc_watch = g as f64 / t.elapsed().as_secs_f64();
    rows.extend(typed_rows(api).await?);
    rows.push((
        format!("WATCH from `resourceVersion=0`: {n} / {g} initial events to one client"),
        format!("{rest_watch:.0} events/s (parsed as JSON lines)"),
        format!("{grpc_watch:.0} events/s"),
        format!("{:.2}×", grpc_watch / rest_watch.max(0.001)),
    ));
    Ok(rows)
}

/// What a Rust program gets in typed objects: kube-rs over REST against skiff-client over gRPC.
async fn typed_rows(api: &ApiServer) -> Result<Vec<Row>> {
    use k8s_openapi::api::core::v1::Pod;
    let kc = kube::config::Kubeconfig::read_from(&api.kubeconfig)?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    let kube_pods: kube::Api<Pod> = kube::Api::namespaced(kube::Client::try_from(cfg)?, "bench");
    let mut scfg = skiff_client::Config::from_kubeconfig(&api.kubeconfig)?;
    scfg.qps = 0.0;
    let skiff_pods: skiff_client::Api<Pod> =
        skiff_client::Api::namespaced(skiff_client::Client::new(scfg)?, "bench");
    let (mut kg, mut sg) = (Vec::new(), Vec::new());
    for n in 0..2000 {
        let name = format!("fill-{}", n % 1000);
        let t = Instant::now();
        kube_pods.get(&name).await?;
        kg.push(t.elapsed());
        let t = Instant::now();
        skiff_pods.get(&name).await?;
        sg.push(t.elapsed());
    }
    kg.sort();
    sg.sort();
    let (mut kl, mut sl) = (Vec::new(), Vec::new());
    for _ in 0..15 {
        let t = Instant::now();
        let l = kube_pods
            .list(&kube::api::ListParams::default().match_any())
            .await?;
        kl.push(t.elapsed());
        drop(l);
        let t = Instant::now();
        let l = skiff_pods
            .list(&skiff_client::ListParams {
                resource_version: Some("0".into()),
                ..Default::default()
            })
            .await?;
        sl.push(t.elapsed());
        drop(l);
    }
    kl.sort();
    sl.sort();
    Ok(vec![
        latency_row("typed GET into `Pod` (2,000 sequential): kube-rs over REST / skiff-client over gRPC", &kg, &sg),
        latency_row("typed LIST of 10,000 pods into `Pod`s (`resourceVersion=0`), 15 runs each: kube-rs over REST / skiff-client over gRPC", &kl, &sl),
    ])
}

/// SDK figures: how fast one watcher consumes typed events, and what an informer holding
/// 10,000 pods costs in memory (a separate process, the `pod_reflector` example).
async fn sdk_figures(api: &ApiServer) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut cfg = skiff_client::Config::from_kubeconfig(&api.kubeconfig)?;
    cfg.qps = 0.0;
    let client = skiff_client::Client::new(cfg)?;
    let pods: skiff_client::Api<k8s_openapi::api::core::v1::Pod> =
        skiff_client::Api::namespaced(client, "bench");

    let total = pods
        .list(&skiff_client::ListParams {
            resource_version: Some("0".into()),
            ..Default::default()
        })
        .await?
        .items
        .len();
    // Typed events, decoded into k8s-openapi Pods, as one watch consumer sees them.
    let t = Instant::now();
    let stream = pods
        .watch(
            &skiff_client::WatchParams {
                timeout_seconds: Some(60),
                ..Default::default()
            },
            "0",
        )
        .await?;
    futures::pin_mut!(stream);
    let mut n = 0usize;
    while n < total {
        match tokio::time::timeout(Duration::from_secs(30), stream.next()).await {
            Ok(Some(Ok(_))) => n += 1,
            _ => break,
        }
    }
    out.push((
        format!("`Api::watch` consuming {n} typed pod events (decoded into `Pod`)"),
        format!("{:.0} events/s", n as f64 / t.elapsed().as_secs_f64()),
    ));

    // A watcher's initial list + sync: 10,000 pods in pages of 500.
    let t = Instant::now();
    let stream = skiff_client::watcher(pods, skiff_client::watcher::Config::default());
    futures::pin_mut!(stream);
    let mut listed = 0usize;
    while let Ok(Some(ev)) = tokio::time::timeout(Duration::from_secs(60), stream.next()).await {
        match ev? {
            skiff_client::watcher::Event::InitApply(_) => listed += 1,
            skiff_client::watcher::Event::InitDone => break,
            _ => {}
        }
    }
    out.push((
        format!("`watcher` initial sync of {listed} pods (paged list, typed)"),
        format!("{} ms", ms(t.elapsed())),
    ));

    // Informer memory: live heap (counted by this process's allocator) of an informer cache
    // holding every pod of `bench`.
    for (what, strip) in [
        (
            "managed fields stripped (`InformerFactory`'s default)",
            true,
        ),
        ("managed fields kept", false),
    ] {
        let (n, bytes) = informer_heap(&api.kubeconfig, strip).await?;
        out.push((
            format!("informer cache heap, {what}: {n} pods"),
            format!(
                "{:.1} MiB → **{:.1} MiB per 10,000 pods**",
                bytes as f64 / 1048576.0,
                bytes as f64 / 1048576.0 * 10_000.0 / n.max(1) as f64
            ),
        ));
    }
    Ok(out)
}

/// Starts an informer on the pods of `bench`, waits for its cache, and returns how many pods it
/// holds and how many heap bytes that took.
async fn informer_heap(kubeconfig: &std::path::Path, strip: bool) -> Result<(usize, usize)> {
    let mut cfg = skiff_client::Config::from_kubeconfig(kubeconfig)?;
    cfg.qps = 0.0;
    let client = skiff_client::Client::new(cfg)?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = ALLOC.allocated();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let informer = skiff_client::informer::Informer::spawn(
        skiff_client::Api::<k8s_openapi::api::core::v1::Pod>::namespaced(client, "bench"),
        skiff_client::watcher::Config {
            strip_managed_fields: strip,
            ..Default::default()
        },
        Default::default(),
        shutdown.clone(),
    );
    let store = informer.store();
    tokio::time::timeout(Duration::from_secs(60), store.wait_until_ready()).await?;
    // Let the last page's buffers go.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let bytes = ALLOC.allocated().saturating_sub(before);
    let n = store.len();
    shutdown.cancel();
    Ok((n, bytes))
}
