//! The scheduler's volume plugins end to end, against a real etcd, skiff-apiserver,
//! skiff-scheduler and skiff-controller-manager's PV binder, with Node objects standing in
//! for kubelets (scheduling needs none), objects made with the real kubectl:
//! a pod whose `Immediate` claim is unbound, or whose claim does not exist, stays Pending with
//! kube's message; a `WaitForFirstConsumer` claim with a local volume on one node only takes
//! the pod to that node and binds to that volume; a claim to provision gets
//! `volume.kubernetes.io/selected-node` = the chosen node and the pod waits in PreBind; a
//! bound volume's node affinity steers its pod; a `ReadWriteOncePod` claim serves one pod;
//! a CSINode's attach limit keeps a second volume off a full node.
//!
//! Then with two real nodes, each running the local driver (`skiff-csi`) on a tmpfs of its
//! own and publishing CSIStorageCapacity: a claim too big for one node's published capacity
//! is provisioned on the other; and when a node's space goes after it was published, the
//! driver's `RESOURCE_EXHAUSTED` resets the claim's selected node and the pod lands on the
//! node with room.

use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use serde_json::{json, Value};
use skiff_client::{Api, Client, Patch, PatchParams, PostParams};
use skiff_e2e::node::Node as TestNode;
use skiff_e2e::{eventually, Cluster, Daemon, Kubectl, Tmpfs};

const WAIT: Duration = Duration::from_secs(30);

/// API server, scheduler and the PV binder.
struct Env {
    c: Cluster,
    sched: Daemon,
    cm: Daemon,
}

impl Env {
    async fn start() -> Env {
        let c = Cluster::start().await.unwrap();
        let client = Client::from_kubeconfig(&c.api.kubeconfig).unwrap();
        for n in ["a", "b"] {
            add_node(&client, n).await;
        }
        let cm = Daemon::start(
            "skiff-controller-manager",
            &c.api,
            &[
                "--port=0",
                "--leader-elect=false",
                "--kube-api-qps=0",
                "--controllers=serviceaccount,persistentvolume-binder",
            ],
        )
        .unwrap();
        let sched = Daemon::start(
            "skiff-scheduler",
            &c.api,
            &["--port=0", "--leader-elect=false"],
        )
        .unwrap();
        Env { c, sched, cm }
    }

    fn kubectl(&self) -> Kubectl {
        self.c.kubectl()
    }

    fn apply(&self, items: Vec<Value>) {
        let list = json!({"apiVersion": "v1", "kind": "List", "items": items});
        self.kubectl()
            .ok_input(&["apply", "-f", "-"], &list.to_string());
    }

    fn field(&self, what: &[&str], path: &str) -> String {
        let mut args = vec!["get"];
        args.extend(what);
        let jp = format!("-o=jsonpath={{{path}}}");
        args.push(&jp);
        self.kubectl().run(&args).stdout
    }

    fn logs(&self) -> String {
        format!(
            "scheduler:\n{}\ncontroller-manager:\n{}",
            self.sched.log(),
            self.cm.log()
        )
    }

    async fn wait_field(&self, what: &[&str], path: &str, want: &str) {
        let got = eventually(WAIT, || (self.field(what, path) == want).then_some(())).await;
        assert!(
            got.is_some(),
            "{what:?} {path} never became {want:?} (is {:?})\n{}",
            self.field(what, path),
            self.logs()
        );
    }

    /// The pod's `PodScheduled=False` message, once there is one.
    async fn unschedulable(&self, pod: &str) -> String {
        let path = ".status.conditions[?(@.type==\"PodScheduled\")].message";
        let got = eventually(WAIT, || {
            Some(self.field(&["pod", pod], path)).filter(|m| !m.is_empty())
        })
        .await;
        got.unwrap_or_else(|| panic!("{pod} never reported why\n{}", self.logs()))
    }

    /// Whether `kubectl describe` shows a FailedScheduling event with `message`.
    async fn wait_event(&self, pod: &str, message: &str) {
        let got = eventually(WAIT, || {
            let d = self.kubectl().ok(&["describe", "pod", pod]);
            (d.contains("FailedScheduling") && d.contains(message)).then_some(())
        })
        .await;
        assert!(
            got.is_some(),
            "no FailedScheduling event for {pod}: {message}"
        );
    }
}

async fn add_node(client: &Client, name: &str) {
    let nodes: Api<Node> = Api::cluster(client.clone());
    let n: Node = serde_json::from_value(
        json!({"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}}}),
    )
    .unwrap();
    nodes.create(&PostParams::default(), &n).await.unwrap();
    let status = json!({"status": {
        "capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"},
        "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
        "conditions": [{"type": "Ready", "status": "True"}]}});
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Merge(status))
        .await
        .unwrap();
}

fn class(name: &str, provisioner: &str, mode: &str) -> Value {
    json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": name},
        "provisioner": provisioner, "volumeBindingMode": mode})
}

fn claim(name: &str, class: &str, mode: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name},
        "spec": {"accessModes": [mode], "storageClassName": class,
            "resources": {"requests": {"storage": "1Gi"}}}})
}

/// A volume reachable from `host` only, of `class`, optionally promised to `claim`.
fn local_pv(name: &str, host: &str, class: &str, claim: Option<&str>, mode: &str) -> Value {
    let mut v = json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": name},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": [mode],
            "storageClassName": class, "local": {"path": format!("/data/{name}")},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": [host]}]}]}}}});
    if let Some(c) = claim {
        v["spec"]["claimRef"] = json!({"namespace": "default", "name": c});
    }
    v
}

fn csi_pv(name: &str, claim: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": name},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
            "storageClassName": "", "csi": {"driver": "csi.example.com", "volumeHandle": name},
            "claimRef": {"namespace": "default", "name": claim}}})
}

fn pod(name: &str, claims: &[&str], node: Option<&str>) -> Value {
    let vols: Vec<Value> = claims
        .iter()
        .map(|c| json!({"name": c, "persistentVolumeClaim": {"claimName": c}}))
        .collect();
    let mut v = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": "busybox"}], "volumes": vols}});
    if let Some(n) = node {
        v["spec"]["nodeSelector"] = json!({"kubernetes.io/hostname": n});
    }
    v
}

#[tokio::test]
async fn claims_decide_where_pods_go_and_when() {
    let env = Env::start().await;
    env.apply(vec![
        class("now", "example.com/nobody", "Immediate"),
        class(
            "local",
            "kubernetes.io/no-provisioner",
            "WaitForFirstConsumer",
        ),
        class("fast", "example.com/dynamic", "WaitForFirstConsumer"),
        claim("imm", "now", "ReadWriteOnce"),
        claim("data", "local", "ReadWriteOnce"),
        claim("dyn", "fast", "ReadWriteOnce"),
        local_pv("pv-b", "b", "local", None, "ReadWriteOnce"),
        local_pv("pv-a", "a", "", Some("pinned"), "ReadWriteOnce"),
        claim("pinned", "", "ReadWriteOnce"),
    ]);
    // The binder binds the pre-promised volume; an Immediate claim nobody provisions stays
    // Pending.
    env.wait_field(&["pvc", "pinned"], ".status.phase", "Bound")
        .await;
    env.wait_field(&["pv", "pv-b"], ".status.phase", "Available")
        .await;

    env.apply(vec![
        pod("p-imm", &["imm"], None),
        pod("p-missing", &["nope"], None),
        pod("p-local", &["data"], None),
        pod("p-dyn", &["dyn"], Some("a")),
        pod("p-pinned", &["pinned"], None),
    ]);

    let m = env.unschedulable("p-imm").await;
    assert_eq!(
        m,
        "0/2 nodes are available: pod has unbound immediate PersistentVolumeClaims.",
        "{}",
        env.logs()
    );
    env.wait_event("p-imm", "pod has unbound immediate PersistentVolumeClaims")
        .await;
    let m = env.unschedulable("p-missing").await;
    assert_eq!(
        m,
        "0/2 nodes are available: persistentvolumeclaim \"nope\" not found."
    );

    // The local volume exists on b only: the pod goes there and its claim binds to it.
    env.wait_field(&["pod", "p-local"], ".spec.nodeName", "b")
        .await;
    assert_eq!(env.field(&["pv", "pv-b"], ".spec.claimRef.name"), "data");
    env.wait_field(&["pvc", "data"], ".spec.volumeName", "pv-b")
        .await;
    env.wait_field(&["pvc", "data"], ".status.phase", "Bound")
        .await;

    // A claim to provision is given the node; the pod waits for the volume (nobody makes
    // it here) instead of being bound.
    env.wait_field(
        &["pvc", "dyn"],
        ".metadata.annotations.volume\\.kubernetes\\.io/selected-node",
        "a",
    )
    .await;
    assert_eq!(env.field(&["pod", "p-dyn"], ".spec.nodeName"), "");

    // A bound volume's node affinity steers its pod.
    env.wait_field(&["pod", "p-pinned"], ".spec.nodeName", "a")
        .await;

    // The missing claim appears (bound by then): the pod is scheduled.
    env.apply(vec![
        local_pv("pv-nope", "b", "", Some("nope"), "ReadWriteOnce"),
        claim("nope", "", "ReadWriteOnce"),
    ]);
    env.wait_field(&["pod", "p-missing"], ".spec.nodeName", "b")
        .await;
}

#[tokio::test]
async fn read_write_once_pod_claims_and_attach_limits() {
    let env = Env::start().await;
    let csi_node = |name: &str| {
        json!({"apiVersion": "storage.k8s.io/v1", "kind": "CSINode", "metadata": {"name": name},
            "spec": {"drivers": [{"name": "csi.example.com", "nodeID": name,
                "allocatable": {"count": 1}}]}})
    };
    env.apply(vec![
        local_pv("pv-solo", "a", "", Some("solo"), "ReadWriteOncePod"),
        claim("solo", "", "ReadWriteOncePod"),
        csi_pv("pv-x", "x"),
        claim("x", "", "ReadWriteOnce"),
        csi_pv("pv-y", "y"),
        claim("y", "", "ReadWriteOnce"),
        csi_node("a"),
        csi_node("b"),
    ]);
    for c in ["solo", "x", "y"] {
        env.wait_field(&["pvc", c], ".status.phase", "Bound").await;
    }
    env.apply(vec![pod("first", &["solo"], None)]);
    env.wait_field(&["pod", "first"], ".spec.nodeName", "a")
        .await;
    env.apply(vec![pod("second", &["solo"], None)]);
    let m = env.unschedulable("second").await;
    assert_eq!(
        m,
        "0/2 nodes are available: 2 node has pod using PersistentVolumeClaim with the same name and ReadWriteOncePod access mode.",
        "{}",
        env.logs()
    );
    // The first pod goes: the claim is free again.
    env.kubectl()
        .ok(&["delete", "pod", "first", "--grace-period=0", "--force"]);
    env.wait_field(&["pod", "second"], ".spec.nodeName", "a")
        .await;

    // Node a's driver attaches one volume: the second CSI volume cannot go there.
    env.apply(vec![pod("cx", &["x"], Some("b"))]);
    env.wait_field(&["pod", "cx"], ".spec.nodeName", "b").await;
    env.apply(vec![pod("cy", &["y"], Some("b"))]);
    let m = env.unschedulable("cy").await;
    assert_eq!(
        m,
        "0/2 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, 1 node(s) exceed max volume count.",
        "{}",
        env.logs()
    );
    // Without the selector it fits on a.
    env.kubectl()
        .ok(&["delete", "pod", "cy", "--grace-period=0", "--force"]);
    env.apply(vec![pod("cy2", &["y"], None)]);
    env.wait_field(&["pod", "cy2"], ".spec.nodeName", "a").await;
}

/// The CSIStorageCapacity of the local driver published by `node`, once there is one.
fn published(k: &Kubectl, node: &str) -> Option<Value> {
    let v = k.json(&[
        "get",
        "csistoragecapacities",
        "-n",
        "kube-system",
        "-l",
        &format!("csi.storage.k8s.io/managed-by=external-provisioner-{node}"),
    ]);
    let items = v["items"].as_array()?;
    (items.len() == 1).then(|| items[0].clone())
}

fn bytes(q: &Value) -> u64 {
    let q: skiff_rules::Quantity = q.as_str().unwrap_or("?").parse().unwrap();
    q.value() as u64
}

/// A pod writing its name into the claim `claim`, preferring `node` when given.
fn writer(name: &str, claim: &str, image: &str, prefer: Option<&str>) -> Value {
    let mut p = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {
            "automountServiceAccountToken": false,
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "c", "image": image,
                "command": ["sh", "-c", format!("echo {name} > /data/who; sleep 3600")],
                "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]}});
    if let Some(n) = prefer {
        p["spec"]["affinity"] = json!({"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 100, "preference": {"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": [n]}]}}]}});
    }
    p
}

fn sized_claim(name: &str, size: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "local",
            "resources": {"requests": {"storage": size}}}})
}

async fn wait_for<T>(what: &str, logs: &dyn Fn() -> String, f: impl FnMut() -> Option<T>) -> T {
    match eventually(Duration::from_secs(90), f).await {
        Some(v) => v,
        None => panic!("{what} did not happen\n{}", logs()),
    }
}

/// Two real nodes (kubelet, containerd), each with the local driver `skiff-csi` registered
/// through its kubelet and publishing capacity from a tmpfs of its own: `node-a` 64 MiB,
/// `node-b` 256 MiB. A claim of 100 MiB goes to `node-b`, the one with room. Then `node-a`
/// fills up behind its published capacity: a pod preferring it is scheduled there, the
/// driver answers `RESOURCE_EXHAUSTED`, the provisioner resets the claim's selected node, and
/// the pod is scheduled again onto `node-b`.
#[tokio::test]
async fn published_capacity_places_claims_and_a_full_node_gives_its_claim_back() {
    let fs_a = Tmpfs::mount("64m").unwrap();
    let fs_b = Tmpfs::mount("256m").unwrap();
    let c = Cluster::start().await.unwrap();
    let cm = Daemon::start(
        "skiff-controller-manager",
        &c.api,
        &[
            "--port=0",
            "--leader-elect=false",
            "--kube-api-qps=0",
            "--controllers=serviceaccount,persistentvolume-binder,pvc-protection,pv-protection",
        ],
    )
    .unwrap();
    let sched = Daemon::start(
        "skiff-scheduler",
        &c.api,
        &["--port=0", "--leader-elect=false"],
    )
    .unwrap();
    let a = TestNode::start(&c.api.kubeconfig, "node-a", &[]).unwrap();
    let b = TestNode::start(&c.api.kubeconfig, "node-b", &[]).unwrap();
    let mut drivers = Vec::new();
    for (node, name, fs) in [(&a, "node-a", &fs_a), (&b, "node-b", &fs_b)] {
        drivers.push(
            Daemon::start(
                "skiff-csi",
                &c.api,
                &[
                    "--driver=local.csi.skiff.dev",
                    &format!("--node-id={name}"),
                    &format!("--data-dir={}", fs.path().display()),
                    &format!("--kubelet-root-dir={}", node.kubelet.root_dir.display()),
                    "--http-endpoint=127.0.0.1:0",
                    "--enable-capacity",
                    // Only what the test does refreshes the objects.
                    "--capacity-poll-interval=1h",
                ],
            )
            .unwrap(),
        );
    }
    let k = c.kubectl();
    let logs = || {
        format!(
            "events:\n{}\nscheduler:\n{}\ncsi node-a:\n{}\ncsi node-b:\n{}\ncontroller-manager:\n{}",
            k.run(&["get", "events", "-o", "wide"]).stdout,
            sched.log(),
            drivers[0].log(),
            drivers[1].log(),
            cm.log()
        )
    };
    let list: Vec<Value> = skiff::addons::storage(false);
    k.ok_input(
        &["apply", "-f", "-"],
        &json!({"apiVersion": "v1", "kind": "List", "items": list}).to_string(),
    );

    // Each node publishes its own free space for the default class.
    for (node, size) in [("node-a", 64u64 << 20), ("node-b", 256 << 20)] {
        let cap = wait_for(&format!("{node}'s capacity"), &logs, || {
            published(&k, node).filter(|c| bytes(&c["capacity"]) == size)
        })
        .await;
        assert_eq!(cap["storageClassName"], "local");
        assert_eq!(
            cap["nodeTopology"]["matchLabels"]["topology.local.csi.skiff.dev/node"],
            node
        );
        assert_eq!(cap["metadata"]["ownerReferences"][0]["name"], node);
    }
    wait_for("the default ServiceAccount", &logs, || {
        let r = k.run(&["get", "serviceaccount", "default", "-o", "json"]);
        r.status.success().then(|| json!({}))
    })
    .await;

    // 100 MiB fits node-b only.
    let image = b.images.busybox.clone();
    k.ok_input(
        &["apply", "-f", "-"],
        &json!({"apiVersion": "v1", "kind": "List", "items": [
            sized_claim("big", "100Mi"), writer("big", "big", &image, None)]})
        .to_string(),
    );
    let pod = wait_for("pod big running", &logs, || {
        let p = k.json(&["get", "pod", "big"]);
        (p["status"]["phase"] == "Running").then_some(p)
    })
    .await;
    assert_eq!(pod["spec"]["nodeName"], "node-b");
    let claim = k.json(&["get", "pvc", "big"]);
    assert_eq!(
        claim["metadata"]["annotations"]["volume.kubernetes.io/selected-node"],
        "node-b"
    );
    let pv = claim["spec"]["volumeName"].as_str().unwrap().to_string();
    assert_eq!(
        std::fs::read_to_string(fs_b.path().join(&pv).join("data/who")).unwrap_or_default(),
        "big\n"
    );
    let why = k.ok(&["describe", "pod", "big"]);
    assert!(!why.contains("FailedScheduling"), "{why}");

    // node-a fills up behind its published 64 MiB.
    fs_a.fill("someone-else", 40 << 20);
    let free_a = fs_a.available();
    assert_eq!(
        bytes(&published(&k, "node-a").unwrap()["capacity"]),
        64 << 20,
        "not refreshed yet"
    );
    k.ok_input(
        &["apply", "-f", "-"],
        &json!({"apiVersion": "v1", "kind": "List", "items": [
            sized_claim("mid", "32Mi"), writer("mid", "mid", &image, Some("node-a"))]})
        .to_string(),
    );
    let failed = wait_for("ProvisioningFailed on node-a", &logs, || {
        let e = k.json(&[
            "get",
            "events",
            "--field-selector=involvedObject.name=mid,reason=ProvisioningFailed",
        ]);
        e["items"].as_array()?.first().cloned()
    })
    .await;
    let message = failed["message"].as_str().unwrap_or("");
    assert!(
        message.starts_with(
            "failed to provision volume with StorageClass \"local\": rpc error: code = ResourceExhausted desc = "
        ),
        "{message}"
    );
    wait_for("the scheduler to see the selected node reset", &logs, || {
        let e = k.json(&[
            "get",
            "events",
            "--field-selector=involvedObject.name=mid,reason=FailedScheduling",
        ]);
        e["items"].as_array()?.iter().find(|e| {
            e["message"].as_str().is_some_and(|m| {
                m.contains("running PreBind plugin \"VolumeBinding\": binding volumes: selectedNode annotation reset for PVC \"mid\"")
            })
        }).cloned()
    })
    .await;
    let pod = wait_for("pod mid running elsewhere", &logs, || {
        let p = k.json(&["get", "pod", "mid"]);
        (p["status"]["phase"] == "Running").then_some(p)
    })
    .await;
    assert_eq!(pod["spec"]["nodeName"], "node-b", "{}", logs());
    let claim = k.json(&["get", "pvc", "mid"]);
    assert_eq!(
        claim["metadata"]["annotations"]["volume.kubernetes.io/selected-node"],
        "node-b"
    );
    let pv = claim["spec"]["volumeName"].as_str().unwrap().to_string();
    assert_eq!(
        std::fs::read_to_string(fs_b.path().join(&pv).join("data/who")).unwrap_or_default(),
        "mid\n"
    );
    // The failure refreshed node-a's capacity.
    wait_for("node-a's capacity refreshed", &logs, || {
        published(&k, "node-a").filter(|c| bytes(&c["capacity"]) == free_a)
    })
    .await;
    assert!(!fs_a.path().join(&pv).exists(), "nothing left on node-a");
}
