//! `skiff-kubelet-bench`: pod start-up on one node, against the runtime's own floor.
//!
//! A private etcd, a release `skiff-apiserver`, a private containerd pulling from a local
//! registry and a release `skiff-kubelet` on a bridge network of its own, all on this machine.
//! With the image already present:
//!
//! - the runtime floor: 30 pods' worth of sandbox + container started directly through CRI, all
//!   at once (each pod: `RunPodSandbox`, `CreateContainer`, `StartContainer`);
//! - the kubelet: 30 pods created at once through the API (bound to the node, so no scheduler is
//!   involved), each timed from its create call to the moment a watch sees it `Ready`;
//! - both again one pod at a time (10 pods), with nothing competing for the cores;
//! - the kubelet's resident memory with 100 pods running.
//!
//! Every wait is bounded; everything stops when the benchmark ends.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use parking_lot::Mutex;
use serde_json::json;
use skiff_client::{watcher, Api, Client, PostParams};
use skiff_e2e::bench::{percentile, rss_kib};
use skiff_e2e::node::Node;
use skiff_e2e::{ApiServer, Etcd};
use skiff_proto::cri;

const PODS: usize = 30;
const MANY: usize = 100;
const SERIAL: usize = 10;
const NS: &str = "bench";

fn ms(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1000.0)
}

/// Starts `n` sandboxes with one container each straight through CRI, all at once; returns
/// each pod's start-up time.
async fn runtime_floor(node: &Node, image: &str, n: usize) -> anyhow::Result<Vec<Duration>> {
    let logs = tempfile::tempdir()?;
    let mut tasks = Vec::new();
    for i in 0..n {
        let mut rt = node.ctrd.cri()?;
        let image = image.to_string();
        let log_dir = logs.path().join(i.to_string()).display().to_string();
        tasks.push(tokio::spawn(async move {
            let start = Instant::now();
            let config = cri::PodSandboxConfig {
                metadata: Some(cri::PodSandboxMetadata {
                    name: format!("floor-{i}"),
                    uid: format!("floor-uid-{i}"),
                    namespace: "floor".into(),
                    attempt: 0,
                }),
                hostname: format!("floor-{i}"),
                log_directory: log_dir,
                linux: Some(Default::default()),
                ..Default::default()
            };
            let id = rt
                .runtime
                .run_pod_sandbox(cri::RunPodSandboxRequest {
                    config: Some(config.clone()),
                    runtime_handler: String::new(),
                })
                .await?
                .into_inner()
                .pod_sandbox_id;
            let c = rt
                .runtime
                .create_container(cri::CreateContainerRequest {
                    pod_sandbox_id: id.clone(),
                    config: Some(cri::ContainerConfig {
                        metadata: Some(cri::ContainerMetadata {
                            name: "app".into(),
                            attempt: 0,
                        }),
                        image: Some(cri::ImageSpec {
                            image,
                            ..Default::default()
                        }),
                        command: vec!["sleep".into(), "3600".into()],
                        log_path: "app/0.log".into(),
                        linux: Some(Default::default()),
                        ..Default::default()
                    }),
                    sandbox_config: Some(config),
                })
                .await?
                .into_inner()
                .container_id;
            rt.runtime
                .start_container(cri::StartContainerRequest { container_id: c })
                .await?;
            anyhow::Ok((start.elapsed(), id))
        }));
    }
    let mut times = Vec::new();
    let mut ids = Vec::new();
    for t in tasks {
        let (d, id) = t.await??;
        times.push(d);
        ids.push(id);
    }
    let mut rt = node.ctrd.cri()?;
    for id in ids {
        rt.runtime
            .stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: id.clone(),
            })
            .await?;
        rt.runtime
            .remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: id })
            .await?;
    }
    Ok(times)
}

/// When each pod of the namespace was first seen Ready.
#[derive(Clone, Default)]
struct ReadyTimes(Arc<Mutex<HashMap<String, Instant>>>);

impl ReadyTimes {
    fn watch(client: &Client) -> ReadyTimes {
        let t = ReadyTimes::default();
        let seen = t.0.clone();
        let stream = watcher(
            Api::<Pod>::namespaced(client.clone(), NS),
            watcher::Config::default(),
        );
        tokio::spawn(async move {
            futures::pin_mut!(stream);
            while let Some(ev) = stream.next().await {
                let pod = match ev {
                    Ok(watcher::Event::Apply(p)) | Ok(watcher::Event::InitApply(p)) => p,
                    _ => continue,
                };
                let ready = pod
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
                if ready {
                    seen.lock()
                        .entry(pod.metadata.name.clone().unwrap_or_default())
                        .or_insert_with(Instant::now);
                }
            }
        });
        t
    }

    async fn wait(&self, names: &[String], within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            let n = {
                let g = self.0.lock();
                names.iter().filter(|n| g.contains_key(*n)).count()
            };
            if n == names.len() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("only {n} of {} pods Ready within {within:?}", names.len());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn pod(name: &str, image: &str) -> anyhow::Result<Pod> {
    Ok(serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "nodeName": "bench-node",
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "app", "image": image, "imagePullPolicy": "IfNotPresent",
                            "command": ["sleep", "3600"]}]
        }
    }))?)
}

/// Creates `names` all at once; returns when each create call began.
async fn create_all(
    pods: &Api<Pod>,
    names: &[String],
    image: &str,
) -> anyhow::Result<HashMap<String, Instant>> {
    let mut tasks = Vec::new();
    for name in names {
        let (pods, p) = (pods.clone(), pod(name, image)?);
        let name = name.clone();
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            pods.create(&PostParams::default(), &p).await?;
            anyhow::Ok((name, t))
        }));
    }
    let mut out = HashMap::new();
    for t in tasks {
        let (n, at) = t.await??;
        out.insert(n, at);
    }
    Ok(out)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let etcd = Etcd::start()?;
    let api = ApiServer::start(&etcd).await?;
    let node = Node::start(&api.kubeconfig, "bench-node", &["--v=1"])?;
    let mut cfg = skiff_client::Config::from_kubeconfig(&api.kubeconfig)?;
    cfg.qps = 0.0;
    let client = Client::new(cfg)?;
    let image = node.images.busybox.clone();
    let mut rt = node.ctrd.cri()?;
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
    // The node must be Ready (CNI written, lease held) before pods are timed.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n = Api::<k8s_openapi::api::core::v1::Node>::all(client.clone())
            .get_opt("bench-node")
            .await?;
        let ready = n
            .and_then(|n| n.status?.conditions)
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        if ready {
            break;
        }
        if Instant::now() > deadline {
            bail!("the node did not become Ready: {}", node.kubelet.log());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": NS}}))?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let ready = ReadyTimes::watch(&client);

    // Warm-up: one pod through each path, not counted.
    runtime_floor(&node, &image, 1).await?;
    let warm = vec!["warm-up".to_string()];
    create_all(&pods, &warm, &image).await?;
    ready.wait(&warm, Duration::from_secs(60)).await?;

    let mut floor = runtime_floor(&node, &image, PODS).await?;
    floor.sort();

    let names: Vec<String> = (0..PODS).map(|i| format!("p-{i}")).collect();
    let created = create_all(&pods, &names, &image).await?;
    ready
        .wait(&names, Duration::from_secs(120))
        .await
        .with_context(|| node.kubelet.log())?;
    let mut startup: Vec<Duration> = {
        let seen = ready.0.lock();
        names
            .iter()
            .map(|n| seen[n].duration_since(created[n]))
            .collect()
    };
    startup.sort();

    // One at a time: the same, with no other pod competing for the two cores.
    let mut floor_one = Vec::new();
    for _ in 0..SERIAL {
        floor_one.extend(runtime_floor(&node, &image, 1).await?);
    }
    floor_one.sort();
    let mut one = Vec::new();
    for i in 0..SERIAL {
        let n = vec![format!("s-{i}")];
        let created = create_all(&pods, &n, &image).await?;
        ready.wait(&n, Duration::from_secs(60)).await?;
        let seen = ready.0.lock()[&n[0]];
        one.push(seen.duration_since(created[&n[0]]));
    }
    one.sort();

    let many: Vec<String> = (0..MANY - PODS - SERIAL - 1)
        .map(|i| format!("m-{i}"))
        .collect();
    create_all(&pods, &many, &image).await?;
    ready
        .wait(&many, Duration::from_secs(300))
        .await
        .with_context(|| node.kubelet.log())?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let pid = node.kubelet.pid().context("the kubelet is not running")?;
    let rss = rss_kib(pid) as f64 / 1024.0;

    let (f50, f99, k50, k99) = (
        percentile(&floor, 0.5),
        percentile(&floor, 0.99),
        percentile(&startup, 0.5),
        percentile(&startup, 0.99),
    );
    let over50 = k50.saturating_sub(f50);
    println!("One node (release skiff-kubelet, containerd {}, runc, bridge CNI), image present, {PODS} pods at once.", rt_version(&node).await);
    println!();
    println!("| measure | p50 ms | p99 ms | target |");
    println!("|---|---|---|---|");
    println!(
        "| runtime floor: sandbox + container straight through CRI | {} | {} | — |",
        ms(f50),
        ms(f99)
    );
    println!(
        "| kubelet: pod created → seen `Ready` through a watch | {} | {} | p50 ≤ 400, p99 ≤ 1000 |",
        ms(k50),
        ms(k99)
    );
    println!(
        "| kubelet over the floor (p50) | {} | — | ≤ 50 |",
        ms(over50)
    );
    let (o50, o99, g50, g99) = (
        percentile(&floor_one, 0.5),
        percentile(&floor_one, 0.99),
        percentile(&one, 0.5),
        percentile(&one, 0.99),
    );
    println!(
        "| runtime floor, one pod at a time ({SERIAL} pods) | {} | {} | — |",
        ms(o50),
        ms(o99)
    );
    println!(
        "| kubelet, one pod at a time ({SERIAL} pods) | {} | {} | p50 ≤ 400, p99 ≤ 1000 |",
        ms(g50),
        ms(g99)
    );
    println!(
        "| kubelet over the floor, one at a time (p50) | {} | — | ≤ 50 |",
        ms(g50.saturating_sub(o50))
    );
    println!();
    println!("| measure | result | target |");
    println!("|---|---|---|");
    println!("| skiff-kubelet RSS with {MANY} pods running | {rss:.1} MiB | ≤ 40 MiB |");
    Ok(())
}

async fn rt_version(node: &Node) -> String {
    match node.ctrd.cri() {
        Ok(rt) => rt.version().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}
