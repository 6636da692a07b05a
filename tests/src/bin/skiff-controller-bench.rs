//! `skiff-controller-bench`: the controller manager at scale, on hollow nodes.
//!
//! A private etcd and a release `skiff-apiserver` on loopback, 120 hollow nodes (110 pods
//! each) whose pods turn `Running` as soon as they are bound. First the API server's raw
//! create ceiling: 10,000 pods created by 64 clients (and deleted again). Then a release
//! `skiff-controller-manager` (client QPS limits raised, as for any load test):
//! - a ReplicaSet of 10,000 replicas with no scheduler yet, so that pod creation is all the
//!   server does: the controller's creates per second next to the raw ceiling (then the
//!   ReplicaSet is deleted and its pods with it);
//!
//! then a release `skiff-scheduler` as well, and:
//! - a ReplicaSet of 10,000 replicas: time until all its pods exist, are bound and are
//!   `Running`, everything happening at once;
//! - a Deployment of 1,000 replicas rolled to a new image (the default 25% surge and
//!   unavailability): time until the rollout is complete, and the fewest available replicas
//!   the Deployment reported meanwhile;
//! - the controller manager's resident memory with those 11,000 pods.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use serde_json::json;
use skiff_client::{Api, Client, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use skiff_e2e::bench::{fan_out, rss_kib, status_kib, PodProgress, Stage};
use skiff_e2e::{hollow, ApiServer, Daemon, Etcd};
use tokio_util::sync::CancellationToken;

const NODES: usize = 120;
const REPLICAS: usize = 10_000;
const ROLLING: usize = 1_000;
const CLIENTS: usize = 64;

fn template(app: &str, image: &str) -> serde_json::Value {
    json!({
        "metadata": {"labels": {"app": app}},
        "spec": {"containers": [{"name": "c", "image": image,
            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]},
    })
}

async fn namespace(client: &Client, name: &str) -> anyhow::Result<()> {
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}}))?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await?;
    Ok(())
}

/// Starts a release daemon and waits for `ready` in its log.
async fn start(name: &str, api: &ApiServer, args: &[&str], ready: &str) -> anyhow::Result<Daemon> {
    let mut d = Daemon::start(name, api, args)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !d.log().contains(ready) {
        if Instant::now() > deadline {
            let log = d.log();
            d.stop();
            bail!("{name} did not start: {log}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(d)
}

/// The raw ceiling: `REPLICAS` pods no scheduler or controller looks at, created by `CLIENTS`
/// clients; then deleted again. Returns creates per second.
async fn raw_ceiling(client: &Client) -> anyhow::Result<f64> {
    namespace(client, "raw").await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "raw");
    let p = pods.clone();
    let took = fan_out(CLIENTS, REPLICAS, move |i| {
        let p = p.clone();
        async move {
            let mut pod = template("raw", "registry.local/app:1");
            pod["metadata"]["name"] = json!(format!("raw-{i}"));
            pod["spec"]["schedulerName"] = json!("nobody");
            p.create(&PostParams::default(), &serde_json::from_value(pod)?)
                .await?;
            Ok(())
        }
    })
    .await?;
    let p = pods.clone();
    fan_out(CLIENTS, REPLICAS, move |i| {
        let p = p.clone();
        async move {
            p.delete(
                &format!("raw-{i}"),
                &DeleteParams {
                    grace_period_seconds: Some(0),
                    ..Default::default()
                },
            )
            .await?;
            Ok(())
        }
    })
    .await?;
    Ok(REPLICAS as f64 / took.as_secs_f64())
}

fn replica_set(name: &str, replicas: usize) -> anyhow::Result<ReplicaSet> {
    Ok(serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
            "template": template(name, "registry.local/app:1")},
    }))?)
}

/// A ReplicaSet of `REPLICAS` with nothing but the controller at work: the time until all its
/// pods exist. The ReplicaSet and its pods are deleted again.
async fn creation_only(client: &Client) -> anyhow::Result<Duration> {
    namespace(client, "solo").await?;
    let progress = PodProgress::watch(client, "solo");
    let api: Api<ReplicaSet> = Api::namespaced(client.clone(), "solo");
    let start = Instant::now();
    api.create(&PostParams::default(), &replica_set("solo", REPLICAS)?)
        .await?;
    let took = progress
        .wait(Stage::Created, REPLICAS, Duration::from_secs(600))
        .await?
        - start;
    api.delete("solo", &DeleteParams::default()).await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "solo");
    let deadline = Instant::now() + Duration::from_secs(600);
    while !pods
        .list(&ListParams::default().limit(1))
        .await?
        .items
        .is_empty()
    {
        if Instant::now() > deadline {
            bail!("the ReplicaSet's pods were not deleted");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(took)
}

struct ReplicaSetRun {
    created: Duration,
    bound: Duration,
    running: Duration,
    ready: Duration,
}

/// A ReplicaSet of `REPLICAS` with the scheduler and the hollow nodes at work as well.
async fn replicaset(client: &Client) -> anyhow::Result<ReplicaSetRun> {
    namespace(client, "rs").await?;
    let progress = PodProgress::watch(client, "rs");
    let api: Api<ReplicaSet> = Api::namespaced(client.clone(), "rs");
    let start = Instant::now();
    api.create(&PostParams::default(), &replica_set("big", REPLICAS)?)
        .await?;
    let within = Duration::from_secs(900);
    let created = progress.wait(Stage::Created, REPLICAS, within).await? - start;
    let bound = progress.wait(Stage::Bound, REPLICAS, within).await? - start;
    let running = progress.wait(Stage::Running, REPLICAS, within).await? - start;
    let deadline = start + within;
    loop {
        let s = api.get("big").await?.status.unwrap_or_default();
        if s.ready_replicas.unwrap_or(0) as usize == REPLICAS {
            break;
        }
        if Instant::now() > deadline {
            bail!("the ReplicaSet's status never counted {REPLICAS} ready: {s:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(ReplicaSetRun {
        created,
        bound,
        running,
        ready: start.elapsed(),
    })
}

/// Waits until the Deployment's status says its latest generation is rolled out; returns
/// the fewest available replicas it reported on the way.
async fn rolled_out(api: &Api<Deployment>, within: Duration) -> anyhow::Result<i32> {
    let deadline = Instant::now() + within;
    let mut fewest = i32::MAX;
    loop {
        let d = api.get("web").await?;
        let generation = d.metadata.generation.unwrap_or(0);
        let s = d.status.unwrap_or_default();
        let available = s.available_replicas.unwrap_or(0);
        fewest = fewest.min(available);
        let n = ROLLING as i32;
        if s.observed_generation.unwrap_or(0) >= generation
            && s.updated_replicas.unwrap_or(0) == n
            && s.replicas.unwrap_or(0) == n
            && available == n
        {
            return Ok(fewest);
        }
        if Instant::now() > deadline {
            bail!("the Deployment did not roll out within {within:?}: {s:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn rolling_update(client: &Client) -> anyhow::Result<(Duration, Duration, i32)> {
    namespace(client, "deploy").await?;
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"replicas": ROLLING, "selector": {"matchLabels": {"app": "web"}},
            "template": template("web", "registry.local/web:1")},
    }))?;
    let api: Api<Deployment> = Api::namespaced(client.clone(), "deploy");
    let start = Instant::now();
    api.create(&PostParams::default(), &d).await?;
    rolled_out(&api, Duration::from_secs(600)).await?;
    let first = start.elapsed();
    let start = Instant::now();
    api.patch(
        "web",
        &PatchParams::default(),
        &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [
            {"name": "c", "image": "registry.local/web:2"}]}}}})),
    )
    .await?;
    let fewest = rolled_out(&api, Duration::from_secs(600)).await?;
    Ok((first, start.elapsed(), fewest))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let etcd = Etcd::start()?;
    let api = ApiServer::start(&etcd).await?;
    let mut cfg = skiff_client::Config::from_kubeconfig(&api.kubeconfig)?;
    cfg.qps = 0.0;
    let client = Client::new(cfg)?;

    let spec = hollow::Spec {
        count: NODES,
        concurrency: CLIENTS,
        ..Default::default()
    };
    hollow::register(&client, &spec).await?;
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    tokio::spawn(hollow::renew_leases(
        client.clone(),
        spec.clone(),
        stop.clone(),
    ));
    tokio::spawn(hollow::run_pods(client.clone(), spec.clone(), stop.clone()));

    let ceiling = raw_ceiling(&client).await.context("raw create ceiling")?;

    let mut cm = start(
        "skiff-controller-manager",
        &api,
        &[
            "--leader-elect=false",
            "--port=0",
            "--kube-api-qps=5000",
            "--kube-api-burst=10000",
        ],
        "running controllers",
    )
    .await?;
    let pid = cm.pid().context("controller manager pid")?;
    let rss_idle = rss_kib(pid);

    let dir = tempfile::tempdir()?;
    let result = async {
        let solo = creation_only(&client)
            .await
            .context("ReplicaSet without a scheduler")?;
        let config = dir.path().join("scheduler.yaml");
        std::fs::write(
            &config,
            "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\n\
             clientConnection: {qps: 5000, burst: 10000}\n",
        )?;
        let scheduler = start(
            "skiff-scheduler",
            &api,
            &[
                &format!("--config={}", config.display()),
                "--leader-elect=false",
                "--port=0",
            ],
            "scheduler started",
        )
        .await?;
        let rs = replicaset(&client).await.context("ReplicaSet")?;
        let rss_rs = rss_kib(pid);
        let rolling = rolling_update(&client).await.context("rolling update")?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        drop(scheduler);
        Ok::<_, anyhow::Error>((
            solo,
            rs,
            rss_rs,
            rolling,
            rss_kib(pid),
            status_kib(pid, "VmHWM:"),
        ))
    }
    .await;
    if result.is_err() {
        let log = cm.log();
        eprintln!(
            "controller manager log tail:\n{}",
            log.lines().rev().take(30).collect::<Vec<_>>().join("\n")
        );
    }
    cm.stop();
    let (solo, rs, rss_rs, (first, rolled, fewest), rss_end, peak) = result?;

    let s = |d: Duration| format!("{:.1} s", d.as_secs_f64());
    let mib = |k: u64| format!("{:.0} MiB", k as f64 / 1024.0);
    let rate = REPLICAS as f64 / solo.as_secs_f64();
    let busy_rate = REPLICAS as f64 / rs.created.as_secs_f64();
    println!("| measure ({NODES} hollow nodes) | result | target |");
    println!("|---|---|---|");
    println!(
        "| raw create ceiling: {REPLICAS} pods created by {CLIENTS} clients | {ceiling:.0} pods/s | |"
    );
    println!(
        "| ReplicaSet of {REPLICAS}, no scheduler running: all pods created | {} (**{rate:.0} pods/s, {:.0}% of the ceiling**) | ≥ 70% |",
        s(solo),
        rate / ceiling * 100.0
    );
    println!(
        "| ReplicaSet of {REPLICAS} with the scheduler and nodes at work: all pods created ({busy_rate:.0} pods/s) / all scheduled / all `Running` / status counts all ready | {} / {} / {} / **{}** | |",
        s(rs.created),
        s(rs.bound),
        s(rs.running),
        s(rs.ready)
    );
    println!(
        "| Deployment of {ROLLING}: created to rolled out | {} | |",
        s(first)
    );
    println!(
        "| Deployment of {ROLLING}: rolling update (25% surge, 25% unavailable) to complete | **{}**, fewest available {fewest} | fewest ≥ {} |",
        s(rolled),
        ROLLING * 3 / 4
    );
    println!(
        "| controller-manager RSS: idle / {REPLICAS} pods / {} pods after the rollout (peak) | {} / {} / **{}** ({}) | |",
        REPLICAS + ROLLING,
        mib(rss_idle),
        mib(rss_rs),
        mib(rss_end),
        mib(peak)
    );
    Ok(())
}
