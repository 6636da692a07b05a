//! `skiff-stateful-bench`: how long stateful workloads take to come up.
//!
//! A private etcd, release `skiff-apiserver`, `skiff-scheduler` and `skiff-controller-manager`,
//! one node (release `skiff-kubelet` on a private containerd pulling from a local registry),
//! and release `skiff-csi` for the node-local driver (`WaitForFirstConsumer`, its provisioner
//! on the node) and the shared driver (`Immediate`, its provisioner under leader election),
//! all on this machine. With the image already present:
//!
//! - a 10-replica StatefulSet with one claim per pod, `Parallel` and then `OrderedReady`:
//!   from its create call until its status says 10 ready replicas;
//! - claim-to-bound latency for the `shared` class: 20 claims created at once, then 10 one at a
//!   time, each timed from its create call until it is seen `Bound`.
//!
//! Every wait is bounded; everything stops when the benchmark ends.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use serde_json::{json, Value};
use skiff_client::{Api, Client, PostParams};
use skiff_e2e::bench::percentile;
use skiff_e2e::node::Node;
use skiff_e2e::{ApiServer, Daemon, Etcd, Kubectl};
use skiff_proto::cri;

const REPLICAS: i32 = 10;
const CLAIMS: usize = 20;
const SERIAL: usize = 10;

fn ms(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1000.0)
}

/// Polls `f` every 20 ms until it says yes, for at most `within`.
async fn until<F, Fut>(what: &str, within: Duration, mut f: F) -> anyhow::Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let start = Instant::now();
    while start.elapsed() < within {
        if f().await? {
            return Ok(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("{what} not within {within:?}")
}

fn apply(k: &Kubectl, v: &Value) -> anyhow::Result<()> {
    let r = k.run_with_input(&["apply", "-f", "-"], &v.to_string());
    if !r.status.success() {
        bail!("kubectl apply: {}", r.stderr);
    }
    Ok(())
}

/// Creates a StatefulSet of `REPLICAS` with one 8 MiB claim each and times it to all Ready.
async fn statefulset(
    client: &Client,
    image: &str,
    name: &str,
    policy: &str,
) -> anyhow::Result<Duration> {
    let sts: StatefulSet = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": name},
        "spec": {
            "serviceName": name, "replicas": REPLICAS, "podManagementPolicy": policy,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {
                "terminationGracePeriodSeconds": 0, "automountServiceAccountToken": false,
                "containers": [{"name": "c", "image": image, "command": ["sleep", "3600"],
                                "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]}},
            "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {
                "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "8Mi"}}}}]
        }
    }))?;
    let api: Api<StatefulSet> = Api::namespaced(client.clone(), "default");
    let start = Instant::now();
    api.create(&PostParams::default(), &sts).await?;
    until(
        &format!("{name}: {REPLICAS} ready"),
        Duration::from_secs(300),
        || async {
            let s = api.get(name).await?;
            Ok(s.status.and_then(|s| s.ready_replicas) == Some(REPLICAS))
        },
    )
    .await?;
    Ok(start.elapsed())
}

fn claim(name: &str) -> anyhow::Result<PersistentVolumeClaim> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name},
        "spec": {"storageClassName": "shared", "accessModes": ["ReadWriteMany"],
                 "resources": {"requests": {"storage": "8Mi"}}}
    }))?)
}

/// Creates `claim` and times it to `Bound`.
async fn bound(api: Api<PersistentVolumeClaim>, name: String) -> anyhow::Result<Duration> {
    let start = Instant::now();
    api.create(&PostParams::default(), &claim(&name)?).await?;
    until(
        &format!("{name} bound"),
        Duration::from_secs(120),
        || async {
            let c = api.get(&name).await?;
            Ok(c.status.and_then(|s| s.phase).as_deref() == Some("Bound"))
        },
    )
    .await?;
    Ok(start.elapsed())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let etcd = Etcd::start()?;
    let api = ApiServer::start(&etcd).await?;
    let node = Node::start(&api.kubeconfig, "bench-node", &["--v=1"])?;
    let mut cfg = skiff_client::Config::from_kubeconfig(&api.kubeconfig)?;
    cfg.qps = 0.0;
    let client = Client::new(cfg)?;
    let k = api.kubectl();
    let _scheduler = Daemon::start("skiff-scheduler", &api, &["--leader-elect=false"])?;
    let _cm = Daemon::start(
        "skiff-controller-manager",
        &api,
        &["--port=0", "--leader-elect=false"],
    )?;
    let data = tempfile::tempdir()?;
    let root = node.kubelet.root_dir.display().to_string();
    let mut drivers = Vec::new();
    // The local driver publishes its capacity, as `skiff agent` runs it (its CSIDriver says
    // `storageCapacity: true`).
    for (driver, dir, capacity) in [
        ("local.csi.skiff.dev", "local", "--enable-capacity=true"),
        ("shared.csi.skiff.dev", "shared", "--enable-capacity=false"),
    ] {
        drivers.push(Daemon::start(
            "skiff-csi",
            &api,
            &[
                &format!("--driver={driver}"),
                "--node-id=bench-node",
                &format!("--data-dir={}", data.path().join(dir).display()),
                &format!("--kubelet-root-dir={root}"),
                "--http-endpoint=127.0.0.1:0",
                capacity,
            ],
        )?);
    }
    for obj in skiff::addons::storage(true) {
        apply(&k, &obj)?;
    }
    let mut rt = node.ctrd.cri()?;
    let image = node.images.busybox.clone();
    rt.images
        .pull_image(cri::PullImageRequest {
            image: Some(cri::ImageSpec {
                image: image.clone(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .context("pulling the test image")?;
    // The node must be Ready and list both drivers before anything is timed.
    let csinodes: Api<k8s_openapi::api::storage::v1::CSINode> = Api::all(client.clone());
    until(
        "the node lists both drivers",
        Duration::from_secs(60),
        || async {
            let n = csinodes.get_opt("bench-node").await?;
            Ok(n.is_some_and(|n| n.spec.drivers.len() == 2))
        },
    )
    .await?;
    let sa: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(client.clone(), "default");
    until(
        "the default ServiceAccount",
        Duration::from_secs(60),
        || async { Ok(sa.get_opt("default").await?.is_some()) },
    )
    .await?;

    let parallel = statefulset(&client, &image, "par", "Parallel").await?;
    let ordered = statefulset(&client, &image, "ord", "OrderedReady").await?;

    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "default");
    let mut tasks = Vec::new();
    for i in 0..CLAIMS {
        tasks.push(tokio::spawn(bound(claims.clone(), format!("many-{i}"))));
    }
    let mut many = Vec::new();
    for t in tasks {
        many.push(t.await??);
    }
    let mut serial = Vec::new();
    for i in 0..SERIAL {
        serial.push(bound(claims.clone(), format!("one-{i}")).await?);
    }

    many.sort();
    serial.sort();
    println!("| measure | result |");
    println!("|---|---|");
    println!(
        "| StatefulSet of {REPLICAS} with claims (`Parallel`), created → {REPLICAS} Ready | {} ms |",
        ms(parallel)
    );
    println!(
        "| StatefulSet of {REPLICAS} with claims (`OrderedReady`), created → {REPLICAS} Ready | {} ms |",
        ms(ordered)
    );
    println!(
        "| claim → Bound, {CLAIMS} at once (`shared`, Immediate): p50 / p99 | {} / {} ms |",
        ms(percentile(&many, 0.5)),
        ms(percentile(&many, 0.99))
    );
    println!(
        "| claim → Bound, one at a time ({SERIAL} claims): p50 / p99 | {} / {} ms |",
        ms(percentile(&serial, 0.5)),
        ms(percentile(&serial, 0.99))
    );
    drop(drivers);
    Ok(())
}
