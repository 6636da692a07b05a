//! `skiff-scheduler` against a real etcd and API server: pods get bound, spread over nodes,
//! a pod that fits nowhere says why and is scheduled once a node appears.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Node, Pod};
use serde_json::json;
use skiff_client::{Api, Client, ListParams, Patch, PatchParams, PostParams};
use skiff_e2e::{Cluster, Daemon};

/// A `skiff-scheduler` process, stopped when dropped.
struct Scheduler(Daemon);

impl Scheduler {
    fn start(c: &Cluster, extra: &[&str]) -> Scheduler {
        let args: Vec<&str> = ["--port=0", "--leader-elect=false"]
            .into_iter()
            .chain(extra.iter().copied())
            .collect();
        Scheduler(Daemon::start("skiff-scheduler", &c.api, &args).unwrap())
    }

    fn log(&self) -> String {
        self.0.log()
    }
}

async fn add_node(client: &Client, name: &str, cpu: &str, zone: &str) {
    let nodes: Api<Node> = Api::cluster(client.clone());
    let n: Node = serde_json::from_value(json!({"metadata": {"name": name, "labels": {
        "kubernetes.io/hostname": name, "topology.kubernetes.io/zone": zone}}}))
    .unwrap();
    nodes.create(&PostParams::default(), &n).await.unwrap();
    let status = json!({"status": {
        "capacity": {"cpu": cpu, "memory": "8Gi", "pods": "110"},
        "allocatable": {"cpu": cpu, "memory": "8Gi", "pods": "110"},
        "conditions": [{"type": "Ready", "status": "True"}]}});
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Merge(status))
        .await
        .unwrap();
}

fn pod(name: &str, cpu: &str) -> Pod {
    serde_json::from_value(json!({"metadata": {"name": name, "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "c", "image": "busybox", "resources": {"requests": {"cpu": cpu}}}]}}))
    .unwrap()
}

/// Node name per pod, once every listed pod is bound (or after `within`).
async fn placements(
    pods: &Api<Pod>,
    names: &[String],
    within: Duration,
) -> BTreeMap<String, String> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let list = pods.list(&ListParams::default()).await.unwrap();
        let placed: BTreeMap<String, String> = list
            .items
            .iter()
            .filter_map(|p| {
                let node = p.spec.as_ref()?.node_name.clone()?;
                Some((p.metadata.name.clone()?, node))
            })
            .filter(|(n, _)| names.contains(n))
            .collect();
        if placed.len() == names.len() || tokio::time::Instant::now() > deadline {
            return placed;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn binds_spreads_explains_and_retries_when_a_node_appears() {
    let c = Cluster::start().await.unwrap();
    let client = Client::from_kubeconfig(&c.api.kubeconfig).unwrap();
    for (i, zone) in ["z1", "z2", "z3"].iter().enumerate() {
        add_node(&client, &format!("node-{i}"), "4", zone).await;
    }
    let sched = Scheduler::start(&c, &[]);
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let names: Vec<String> = (0..6).map(|i| format!("web-{i}")).collect();
    for n in &names {
        pods.create(&PostParams::default(), &pod(n, "500m"))
            .await
            .unwrap();
    }
    let placed = placements(&pods, &names, Duration::from_secs(30)).await;
    assert_eq!(placed.len(), 6, "all bound: {placed:?}\n{}", sched.log());
    let mut per_node: BTreeMap<&str, usize> = BTreeMap::new();
    for n in placed.values() {
        *per_node.entry(n.as_str()).or_default() += 1;
    }
    assert_eq!(
        per_node.values().copied().collect::<Vec<_>>(),
        vec![2, 2, 2],
        "LeastAllocated spreads: {per_node:?}"
    );
    // Health and metrics on the scheduler's own port.
    let log = sched.log();
    let addr = log
        .split("health=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no health address in the log:\n{log}"))
        .to_string();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    let ready = http
        .get(format!("http://{addr}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let metrics = http
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("scheduler_schedule_attempts_total{result=\"scheduled\",profile=\"default-scheduler\"} 6"),
        "{metrics}"
    );
    assert!(
        metrics.contains("skiff_client_requests_total{"),
        "client metrics too"
    );
    let bound = pods.get("web-0").await.unwrap();
    let cond = bound.status.unwrap().conditions.unwrap();
    assert!(cond
        .iter()
        .any(|c| c.type_ == "PodScheduled" && c.status == "True"));

    // Too big for any node: stays pending, says why, with an event.
    pods.create(&PostParams::default(), &pod("huge", "6"))
        .await
        .unwrap();
    let mut message = String::new();
    for _ in 0..100 {
        let p = pods.get("huge").await.unwrap();
        if let Some(c) = p
            .status
            .and_then(|s| s.conditions)
            .and_then(|cs| cs.into_iter().find(|c| c.type_ == "PodScheduled"))
        {
            assert_eq!(
                (c.status.as_str(), c.reason.as_deref()),
                ("False", Some("Unschedulable"))
            );
            message = c.message.unwrap_or_default();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        message,
        "0/3 nodes are available: 3 Insufficient cpu.",
        "{}",
        sched.log()
    );
    // Events are written in the background after the condition: wait for them.
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let failed = |evs: &[Event]| {
        evs.iter().any(|e| {
            e.reason.as_deref() == Some("FailedScheduling")
                && e.involved_object.name.as_deref() == Some("huge")
        })
    };
    let mut evs = Vec::new();
    for _ in 0..100 {
        evs = events.list(&ListParams::default()).await.unwrap().items;
        if failed(&evs) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(failed(&evs));
    assert!(evs.iter().any(|e| e.reason.as_deref() == Some("Scheduled")
        && e.message
            .as_deref()
            .is_some_and(|m| m.starts_with("Successfully assigned default/web-"))));
    let ui = c.kubectl().ok(&["describe", "pod", "huge"]);
    assert!(ui.contains("FailedScheduling"), "{ui}");

    // A node big enough appears: the pod is scheduled there.
    add_node(&client, "big", "8", "z1").await;
    let placed = placements(&pods, &["huge".to_string()], Duration::from_secs(30)).await;
    assert_eq!(
        placed.get("huge").map(String::as_str),
        Some("big"),
        "{}",
        sched.log()
    );
}

#[tokio::test]
async fn only_the_leader_schedules_and_the_other_takes_over() {
    let c = Cluster::start().await.unwrap();
    let client = Client::from_kubeconfig(&c.api.kubeconfig).unwrap();
    add_node(&client, "node-0", "8", "z1").await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("scheduler.yaml");
    std::fs::write(
        &config,
        "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\n\
         leaderElection: {leaderElect: true, leaseDuration: 4s, renewDeadline: 3s, retryPeriod: 500ms,\n\
         resourceNamespace: kube-system, resourceName: skiff-scheduler}\n",
    )
    .unwrap();
    let cfg = format!("--config={}", config.display());
    let spawn = |c: &Cluster| {
        Scheduler(Daemon::start("skiff-scheduler", &c.api, &["--port=0", &cfg]).unwrap())
    };
    let mut replicas = vec![spawn(&c), spawn(&c)];
    let leads = |s: &Scheduler| s.log().contains("scheduler started");
    for _ in 0..200 {
        if replicas.iter().any(leads) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let first: Vec<String> = (0..4).map(|i| format!("a-{i}")).collect();
    for n in &first {
        pods.create(&PostParams::default(), &pod(n, "100m"))
            .await
            .unwrap();
    }
    assert_eq!(
        placements(&pods, &first, Duration::from_secs(20))
            .await
            .len(),
        4
    );
    let leading: Vec<usize> = (0..2).filter(|i| leads(&replicas[*i])).collect();
    assert_eq!(leading.len(), 1, "exactly one replica schedules");

    // The leader dies without releasing the lease: the other takes over once it expires.
    let mut leader = replicas.remove(leading[0]);
    leader.0.kill();
    let follower = &replicas[0];
    let second: Vec<String> = (0..3).map(|i| format!("b-{i}")).collect();
    for n in &second {
        pods.create(&PostParams::default(), &pod(n, "100m"))
            .await
            .unwrap();
    }
    let placed = placements(&pods, &second, Duration::from_secs(20)).await;
    assert_eq!(
        placed.len(),
        3,
        "the follower took over:\n{}",
        follower.log()
    );
    assert!(leads(follower));
}

#[tokio::test]
async fn a_higher_priority_pod_preempts_the_least_it_must() {
    let c = Cluster::start().await.unwrap();
    let client = Client::from_kubeconfig(&c.api.kubeconfig).unwrap();
    add_node(&client, "only", "2", "z1").await;
    c.kubectl().ok_input(
        &["apply", "-f", "-"],
        "apiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata: {name: high}\nvalue: 1000\n---\n\
         apiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata: {name: low}\nvalue: 10\n",
    );
    let sched = Scheduler::start(&c, &[]);
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let with = |name: &str, class: &str| -> Pod {
        let mut p = pod(name, "1");
        let spec = p.spec.as_mut().unwrap();
        spec.priority_class_name = Some(class.into());
        spec.termination_grace_period_seconds = Some(0);
        p
    };
    let low: Vec<String> = vec!["low-0".into(), "low-1".into()];
    for n in &low {
        pods.create(&PostParams::default(), &with(n, "low"))
            .await
            .unwrap();
    }
    assert_eq!(
        placements(&pods, &low, Duration::from_secs(20)).await.len(),
        2,
        "{}",
        sched.log()
    );

    pods.create(&PostParams::default(), &with("urgent", "high"))
        .await
        .unwrap();
    let placed = placements(&pods, &["urgent".to_string()], Duration::from_secs(30)).await;
    assert_eq!(
        placed.get("urgent").map(String::as_str),
        Some("only"),
        "{}",
        sched.log()
    );
    let left: Vec<String> = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    assert_eq!(
        left.len(),
        2,
        "exactly one low-priority pod was evicted: {left:?}"
    );
    assert!(left.contains(&"urgent".to_string()));
    let events: Api<Event> = Api::namespaced(client, "default");
    let evs = events.list(&ListParams::default()).await.unwrap().items;
    assert!(
        evs.iter().any(|e| e.reason.as_deref() == Some("Preempted")),
        "a Preempted event"
    );
}

fn pod_json(v: serde_json::Value) -> Pod {
    serde_json::from_value(v).unwrap()
}

async fn unschedulable_message(pods: &Api<Pod>, name: &str) -> String {
    for _ in 0..100 {
        let p = pods.get(name).await.unwrap();
        if let Some(c) = p.status.and_then(|s| s.conditions).and_then(|cs| {
            cs.into_iter()
                .find(|c| c.type_ == "PodScheduled" && c.status == "False")
        }) {
            return c.message.unwrap_or_default();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    String::new()
}

#[tokio::test]
async fn placement_features_on_hollow_nodes() {
    let c = Cluster::start().await.unwrap();
    let client = Client::from_kubeconfig(&c.api.kubeconfig).unwrap();
    let spec = skiff_e2e::hollow::Spec {
        count: 6,
        cpu: "4".into(),
        memory: "16Gi".into(),
        lease_renew: Duration::ZERO,
        ..Default::default()
    };
    skiff_e2e::hollow::register(&client, &spec).await.unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    tokio::spawn(skiff_e2e::hollow::run_pods(
        client.clone(),
        spec.clone(),
        shutdown.clone(),
    ));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("scheduler.yaml");
    std::fs::write(
        &config,
        r#"apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
profiles:
- schedulerName: default-scheduler
- schedulerName: binpack
  pluginConfig:
  - name: NodeResourcesFit
    args: {scoringStrategy: {type: MostAllocated}}
"#,
    )
    .unwrap();
    let sched = Scheduler::start(&c, &[&format!("--config={}", config.display())]);
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let small = |name: &str, extra: serde_json::Value| {
        let mut v = json!({"metadata": {"name": name, "labels": {"app": name.split('-').next().unwrap()}},
            "spec": {"containers": [{"name": "c", "image": "busybox", "resources": {"requests": {"cpu": "1"}}}]}});
        if let Some(o) = extra.as_object() {
            for (k, val) in o {
                v["spec"][k] = val.clone();
            }
        }
        pod_json(v)
    };

    // Binpack: three 1-CPU pods share one node.
    let names: Vec<String> = (0..3).map(|i| format!("pack-{i}")).collect();
    for n in &names {
        pods.create(
            &PostParams::default(),
            &small(n, json!({"schedulerName": "binpack"})),
        )
        .await
        .unwrap();
        placements(&pods, std::slice::from_ref(n), Duration::from_secs(20)).await;
    }
    let placed = placements(&pods, &names, Duration::from_secs(20)).await;
    let distinct: std::collections::BTreeSet<&String> = placed.values().collect();
    assert_eq!(
        distinct.len(),
        1,
        "binpack packs: {placed:?}\n{}",
        sched.log()
    );
    // The hollow node made them Running.
    let mut running = false;
    for _ in 0..100 {
        let p = pods.get("pack-0").await.unwrap();
        if p.status.and_then(|s| s.phase).as_deref() == Some("Running") {
            running = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(running, "hollow nodes run their pods");
    for n in &names {
        pods.delete(n, &Default::default()).await.unwrap();
    }
    for _ in 0..100 {
        if pods
            .list(&ListParams::default().labels("app=pack"))
            .await
            .unwrap()
            .items
            .is_empty()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Zone spreading: nine pods, maxSkew 1 over three zones → three per zone.
    let spread = json!({"topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
        "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "zonal"}}}],
        "containers": [{"name": "c", "image": "busybox", "resources": {"requests": {"cpu": "100m"}}}]});
    let names: Vec<String> = (0..9).map(|i| format!("zonal-{i}")).collect();
    for n in &names {
        pods.create(&PostParams::default(), &small(n, spread.clone()))
            .await
            .unwrap();
    }
    let placed = placements(&pods, &names, Duration::from_secs(30)).await;
    assert_eq!(placed.len(), 9, "{}", sched.log());
    let nodes: Api<Node> = Api::cluster(client.clone());
    let mut per_zone: BTreeMap<String, usize> = BTreeMap::new();
    for node in placed.values() {
        let n = nodes.get(node).await.unwrap();
        let zone = n.metadata.labels.unwrap()["topology.kubernetes.io/zone"].clone();
        *per_zone.entry(zone).or_default() += 1;
    }
    assert_eq!(
        per_zone.values().copied().collect::<Vec<_>>(),
        vec![3, 3, 3],
        "{per_zone:?}"
    );

    // Anti-affinity: one per host; the seventh and eighth wait and say why.
    let anti = json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "solo"}}, "topologyKey": "kubernetes.io/hostname"}]}},
        "containers": [{"name": "c", "image": "busybox", "resources": {"requests": {"cpu": "100m"}}}]});
    let names: Vec<String> = (0..8).map(|i| format!("solo-{i}")).collect();
    for n in &names {
        pods.create(&PostParams::default(), &small(n, anti.clone()))
            .await
            .unwrap();
    }
    let placed = placements(&pods, &names, Duration::from_secs(10)).await;
    assert_eq!(placed.len(), 6, "{placed:?}");
    assert_eq!(
        placed
            .values()
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        6,
        "one per host"
    );
    let waiting = names.iter().find(|n| !placed.contains_key(*n)).unwrap();
    assert_eq!(
        unschedulable_message(&pods, waiting).await,
        "0/6 nodes are available: 6 node(s) didn't match pod anti-affinity rules."
    );

    // Taints: a tainted node takes only pods that tolerate the taint.
    nodes
        .patch(
            "hollow-0",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"taints": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]}})),
        )
        .await
        .unwrap();
    let pinned = json!({"nodeSelector": {"kubernetes.io/hostname": "hollow-0"},
        "containers": [{"name": "c", "image": "busybox"}]});
    pods.create(&PostParams::default(), &small("db-plain", pinned.clone()))
        .await
        .unwrap();
    let msg = unschedulable_message(&pods, "db-plain").await;
    assert!(
        msg.starts_with("0/6 nodes are available: 1 node(s) had untolerated taint {dedicated: db}, 5 node(s) didn't match Pod's node affinity/selector."),
        "{msg}"
    );
    let mut tolerant = pinned;
    tolerant["tolerations"] =
        json!([{"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoSchedule"}]);
    pods.create(&PostParams::default(), &small("db-ok", tolerant))
        .await
        .unwrap();
    let placed = placements(&pods, &["db-ok".to_string()], Duration::from_secs(20)).await;
    assert_eq!(placed.get("db-ok").map(String::as_str), Some("hollow-0"));
    shutdown.cancel();
}

/// A burst of pods, far more than fit, created all at once by many clients while nodes fill:
/// the scheduler binds exactly as many as the nodes hold, never more on any node, and says
/// why about the rest; deleting some lets as many waiting pods in, and no more.
#[tokio::test]
async fn a_burst_never_overcommits_a_node() {
    let c = Cluster::start().await.unwrap();
    let mut cfg = skiff_client::Config::from_kubeconfig(&c.api.kubeconfig).unwrap();
    cfg.qps = 0.0;
    let client = Client::new(cfg).unwrap();
    // 8 nodes of 2 CPUs: room for 32 pods of 500m.
    for i in 0..8 {
        add_node(&client, &format!("node-{i}"), "2", ["z1", "z2"][i % 2]).await;
    }
    let sched = Scheduler::start(&c, &["--kube-api-qps=1000", "--kube-api-burst=2000"]);
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let names: Vec<String> = (0..80).map(|i| format!("burst-{i}")).collect();
    let mut tasks = Vec::new();
    for chunk in names.chunks(10) {
        let (pods, chunk) = (pods.clone(), chunk.to_vec());
        tasks.push(tokio::spawn(async move {
            for n in chunk {
                pods.create(&PostParams::default(), &pod(&n, "500m"))
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Wait until 32 are bound and the rest have been found unschedulable.
    let settled = |list: &[Pod]| {
        let bound = list
            .iter()
            .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some())
            .count();
        let refused = list
            .iter()
            .filter(|p| {
                p.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| {
                        cs.iter().any(|c| {
                            c.type_ == "PodScheduled"
                                && c.reason.as_deref() == Some("Unschedulable")
                        })
                    })
            })
            .count();
        (bound, refused)
    };
    let check = |list: &[Pod]| {
        let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
        for p in list {
            if let Some(n) = p.spec.as_ref().and_then(|s| s.node_name.clone()) {
                *per_node.entry(n).or_default() += 1;
            }
        }
        for (node, n) in &per_node {
            assert!(
                *n <= 4,
                "{node} holds {n} pods of 500m with 2 CPUs: {per_node:?}"
            );
        }
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let list = loop {
        let list = pods.list(&ListParams::default()).await.unwrap().items;
        check(&list);
        if settled(&list) == (32, 48) {
            break list;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not settled: (bound, unschedulable) = {:?}\n{}",
            settled(&list),
            sched.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let message = list
        .iter()
        .filter_map(|p| p.status.as_ref()?.conditions.as_ref())
        .flatten()
        .find(|c| c.reason.as_deref() == Some("Unschedulable"))
        .and_then(|c| c.message.clone())
        .unwrap();
    assert_eq!(message, "0/8 nodes are available: 8 Insufficient cpu.");

    // Free room for 6: exactly 6 of the waiting pods get in, still none over capacity.
    let bound: Vec<String> = list
        .iter()
        .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some())
        .filter_map(|p| p.metadata.name.clone())
        .take(6)
        .collect();
    for n in &bound {
        pods.delete(
            n,
            &skiff_client::DeleteParams {
                grace_period_seconds: Some(0),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let list = pods.list(&ListParams::default()).await.unwrap().items;
        check(&list);
        let bound = settled(&list).0;
        assert_eq!(list.len(), 74);
        if bound == 32 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{bound} bound after freeing room\n{}",
            sched.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // And it stays that way.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let list = pods.list(&ListParams::default()).await.unwrap().items;
    check(&list);
    assert_eq!(settled(&list).0, 32);
}
