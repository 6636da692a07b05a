//! RuntimeClasses with the real `kubectl`: the type itself (columns, validation, the immutable
//! handler), the `RuntimeClass` admission plugin's changes to pods and its refusals in
//! Kubernetes' words, and on real nodes: a pod of a class with overhead and scheduling
//! constraints placed where the class says with its overhead counted by the scheduler, the
//! node's allocated resources and a ResourceQuota; the class's handler passed to the runtime;
//! and the events a pod gets when its handler or class is missing.

use std::time::Duration;

use serde_json::{json, Value};
use skiff_e2e::node::{Containerd, Node, SecondNode};
use skiff_e2e::{eventually, Cluster, Daemon, Kubectl};
use skiff_proto::cri;

fn apply(k: &Kubectl, obj: &Value) -> String {
    k.ok_input(&["apply", "-f", "-"], &obj.to_string())
}

fn create_fails(k: &Kubectl, obj: &Value) -> String {
    let r = k.run_with_input(&["create", "-f", "-"], &obj.to_string());
    assert!(
        !r.status.success(),
        "creating {obj} should have failed: {}",
        r.stdout
    );
    r.stderr.trim().to_string()
}

fn pod(name: &str, class: Option<&str>, image: &str, extra: Value) -> Value {
    let mut p = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"terminationGracePeriodSeconds": 1,
            "containers": [{"name": "c", "image": image, "command": ["sleep", "3600"]}]}});
    if let Some(c) = class {
        p["spec"]["runtimeClassName"] = json!(c);
    }
    if let (Some(spec), Some(more)) = (p["spec"].as_object_mut(), extra.as_object()) {
        for (k, v) in more {
            spec.insert(k.clone(), v.clone());
        }
    }
    p
}

/// The events about pod `name` with `reason`, once one's message contains `needle`.
async fn pod_event(k: &Kubectl, name: &str, reason: &str, needle: &str) -> Result<String, String> {
    let selector = format!("involvedObject.name={name},reason={reason}");
    let mut last = String::new();
    let found = eventually(Duration::from_secs(60), || {
        let list = k.json(&["get", "events", "--field-selector", &selector]);
        last = list.to_string();
        list["items"]
            .as_array()?
            .iter()
            .filter_map(|e| e["message"].as_str())
            .find(|m| m.contains(needle))
            .map(str::to_string)
    })
    .await;
    found.ok_or(last)
}

#[tokio::test]
async fn runtime_classes_are_served_validated_and_admitted_as_kubernetes_does() {
    let c = Cluster::start().await.unwrap();
    let k = c.kubectl();

    // The type: served in node.k8s.io/v1, cluster-scoped, printed with its handler.
    let resources = k.ok(&["api-resources", "--api-group=node.k8s.io"]);
    let row = resources
        .lines()
        .find(|l| l.starts_with("runtimeclasses"))
        .unwrap_or_else(|| panic!("no runtimeclasses in:\n{resources}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        cols,
        ["runtimeclasses", "node.k8s.io/v1", "false", "RuntimeClass"]
    );
    apply(
        &k,
        &json!({"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass",
            "metadata": {"name": "fast"}, "handler": "crun",
            "overhead": {"podFixed": {"cpu": "250m", "memory": "64Mi"}},
            "scheduling": {"nodeSelector": {"runtime": "fast"},
                "tolerations": [{"key": "runtime", "operator": "Equal", "value": "fast",
                    "effect": "NoSchedule"}]}}),
    );
    let table = k.ok(&["get", "runtimeclass", "fast"]);
    let mut lines = table.lines();
    let head: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(head, ["NAME", "HANDLER", "AGE"]);
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(row[..2], ["fast", "crun"]);

    // Validation, with Kubernetes' messages.
    let bad = create_fails(
        &k,
        &json!({"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass",
            "metadata": {"name": "bad"}, "handler": "Not_A_Label",
            "overhead": {"podFixed": {"cpu": "-1"}},
            "scheduling": {"tolerations": [{"operator": "Equal", "value": "x"}]}}),
    );
    for want in [
        "The RuntimeClass \"bad\" is invalid: ",
        "handler: Invalid value: \"Not_A_Label\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-'",
        "overhead.limits[cpu]: Invalid value: \"-1\": must be greater than or equal to 0",
        "scheduling.tolerations[0].operator: Invalid value: \"Equal\": operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
    ] {
        assert!(bad.contains(want), "{want:?} not in:\n{bad}");
    }
    // The handler is fixed; the rest may change.
    let changed = k.run(&[
        "patch",
        "runtimeclass",
        "fast",
        "--type=merge",
        "-p",
        r#"{"handler": "runc"}"#,
    ]);
    assert_eq!(
        changed.stderr.trim(),
        "The RuntimeClass \"fast\" is invalid: handler: Invalid value: \"runc\": field is immutable"
    );
    k.ok(&["label", "runtimeclass", "fast", "tier=gold"]);

    // Admission: the class's overhead, node selector and tolerations on the pod.
    apply(
        &k,
        &pod(
            "web",
            Some("fast"),
            "busybox",
            json!({"nodeSelector": {"disk": "ssd"},
                "tolerations": [{"key": "gpu", "operator": "Exists"}]}),
        ),
    );
    let p = k.json(&["get", "pod", "web"]);
    assert_eq!(
        p["spec"]["overhead"],
        json!({"cpu": "250m", "memory": "64Mi"})
    );
    assert_eq!(
        p["spec"]["nodeSelector"],
        json!({"disk": "ssd", "runtime": "fast"})
    );
    let tolerations = p["spec"]["tolerations"].as_array().unwrap();
    assert!(tolerations.contains(&json!({"key": "gpu", "operator": "Exists"})));
    assert!(tolerations.contains(
        &json!({"key": "runtime", "operator": "Equal", "value": "fast", "effect": "NoSchedule"})
    ));

    // Refusals, worded as kube-apiserver words them.
    assert_eq!(
        create_fails(&k, &pod("gone", Some("nowhere"), "busybox", json!({}))),
        "Error from server (Forbidden): error when creating \"STDIN\": pods \"gone\" is forbidden: pod rejected: RuntimeClass \"nowhere\" not found"
    );
    assert_eq!(
        create_fails(
            &k,
            &pod("over", Some("fast"), "busybox", json!({"overhead": {"cpu": "1"}}))
        ),
        "Error from server (Forbidden): error when creating \"STDIN\": pods \"over\" is forbidden: pod rejected: Pod's Overhead doesn't match RuntimeClass's defined Overhead"
    );
    assert_eq!(
        create_fails(
            &k,
            &pod("clash", Some("fast"), "busybox",
                json!({"nodeSelector": {"runtime": "slow"}}))
        ),
        "Error from server (Forbidden): error when creating \"STDIN\": pods \"clash\" is forbidden: conflict: runtimeClass.scheduling.nodeSelector[runtime] = fast; pod.spec.nodeSelector[runtime] = slow"
    );
    assert_eq!(
        create_fails(
            &k,
            &pod("bare", None, "busybox", json!({"overhead": {"cpu": "1"}}))
        ),
        "Error from server (Forbidden): error when creating \"STDIN\": pods \"bare\" is forbidden: pod rejected: Pod Overhead set without corresponding RuntimeClass defined Overhead"
    );
    // The same overhead as the class's, written otherwise, is accepted.
    apply(
        &k,
        &pod(
            "same",
            Some("fast"),
            "busybox",
            json!({"overhead": {"cpu": "0.25", "memory": "64Mi"}}),
        ),
    );
    for name in ["gone", "over", "clash", "bare"] {
        assert!(
            !k.run(&["get", "pod", name]).status.success(),
            "{name} was stored"
        );
    }
}

/// The runtime handler of the pod's sandbox, as the runtime reports it.
async fn sandbox_handler(ctrd: &Containerd, uid: &str) -> String {
    let mut rt = ctrd.cri().unwrap();
    let sandboxes = rt
        .runtime
        .list_pod_sandbox(cri::ListPodSandboxRequest {
            filter: Some(cri::PodSandboxFilter {
                label_selector: [("io.kubernetes.pod.uid".to_string(), uid.to_string())].into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .items;
    let id = sandboxes.first().expect("the pod has a sandbox").id.clone();
    rt.runtime
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: id,
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap()
        .runtime_handler
}

/// Millicores of a quantity as the API prints CPU (`350m`, `2`).
fn millicores(q: &str) -> i64 {
    match q.strip_suffix('m') {
        Some(m) => m.parse().unwrap(),
        None => q.parse::<i64>().unwrap() * 1000,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_class_places_its_pods_runs_them_with_its_handler_and_counts_their_overhead() {
    let c = Cluster::start().await.unwrap();
    let _scheduler = Daemon::start("skiff-scheduler", &c.api, &["--port=0"]).unwrap();
    let _cm = Daemon::start("skiff-controller-manager", &c.api, &["--port=0"]).unwrap();
    let k = c.kubectl();
    // node-a has the fast runtime and keeps everything else off; node-b is plain.
    let a = Node::start(
        &c.api.kubeconfig,
        "node-a",
        &[
            "--node-labels=runtime=fast",
            "--register-with-taints=runtime=fast:NoSchedule",
        ],
    )
    .unwrap();
    let b = SecondNode::start(
        &c.api.kubeconfig,
        &a,
        "node-b",
        &["--node-labels=runtime=plain"],
    )
    .unwrap();
    let image = a.images.busybox.clone();
    k.get_until(Duration::from_secs(60), &["nodes"], |l| {
        l["items"].as_array().is_some_and(|n| {
            n.len() == 2
                && n.iter().all(|n| {
                    n["status"]["conditions"].as_array().is_some_and(|cs| {
                        cs.iter()
                            .any(|c| c["type"] == "Ready" && c["status"] == "True")
                    })
                })
        })
    })
    .await
    .expect("two Ready nodes");
    apply(
        &k,
        &json!({"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass",
            "metadata": {"name": "fast"}, "handler": "runc",
            "overhead": {"podFixed": {"cpu": "250m", "memory": "64Mi"}},
            "scheduling": {"nodeSelector": {"runtime": "fast"},
                "tolerations": [{"key": "runtime", "operator": "Equal", "value": "fast",
                    "effect": "NoSchedule"}]}}),
    );
    apply(
        &k,
        &json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "compute"},
            "spec": {"hard": {"requests.cpu": "1000", "requests.memory": "10Gi",
                "limits.cpu": "1000", "pods": "10"}}}),
    );
    k.get_until(
        Duration::from_secs(30),
        &["resourcequota", "compute"],
        |q| !q["status"]["hard"].is_null(),
    )
    .await
    .expect("the quota controller fills in the quota's status");

    let mut web = pod("web", Some("fast"), &image, json!({}));
    web["spec"]["containers"][0]["resources"] =
        json!({"requests": {"cpu": "100m", "memory": "32Mi"}, "limits": {"cpu": "200m"}});
    apply(&k, &web);
    let running = k
        .get_until(Duration::from_secs(90), &["pod", "web"], |p| {
            p["status"]["phase"] == "Running"
        })
        .await
        .unwrap_or_else(|p| {
            panic!(
                "web runs: {p}\nnode-a kubelet:\n{}\ncontainerd:\n{}",
                a.kubelet.log(),
                a.ctrd.log()
            )
        });
    // Where the class says, on its handler.
    assert_eq!(running["spec"]["nodeName"], "node-a");
    let uid = running["metadata"]["uid"].as_str().unwrap();
    assert_eq!(sandbox_handler(&a.ctrd, uid).await, "runc");
    let (code, out) = a.exec_in(&running, &["sh", "-c", "echo hello"]).await;
    assert_eq!((code, out.trim()), (0, "hello"));

    // The overhead counted: the quota's use, and the node's allocated resources.
    let q = k
        .get_until(
            Duration::from_secs(30),
            &["resourcequota", "compute"],
            |q| q["status"]["used"]["pods"] == "1",
        )
        .await
        .expect("the pod is charged to the quota");
    let used = &q["status"]["used"];
    assert_eq!(millicores(used["requests.cpu"].as_str().unwrap()), 350);
    assert_eq!(millicores(used["limits.cpu"].as_str().unwrap()), 450);
    assert_eq!(used["requests.memory"], "96Mi");
    let described = k.ok(&["describe", "node", "node-a"]);
    let allocated = described
        .split("Allocated resources:")
        .nth(1)
        .unwrap_or_else(|| panic!("no allocated resources in:\n{described}"));
    let cpu: Vec<&str> = allocated
        .lines()
        .find(|l| l.trim_start().starts_with("cpu"))
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(cpu[1], "350m", "{allocated}");
    assert_eq!(cpu[3], "450m", "{allocated}");

    // The scheduler counts the overhead too: requests that would fit node-a alone do not fit
    // with the class's overhead on top.
    let node = k.json(&["get", "node", "node-a"]);
    let allocatable = millicores(node["status"]["allocatable"]["cpu"].as_str().unwrap());
    let mut big = pod("big", Some("fast"), &image, json!({}));
    let cpu = format!("{}m", allocatable - 350 - 100);
    big["spec"]["containers"][0]["resources"] =
        json!({"requests": {"cpu": cpu, "memory": "16Mi"}, "limits": {"cpu": cpu}});
    apply(&k, &big);
    let message = pod_event(&k, "big", "FailedScheduling", "Insufficient cpu")
        .await
        .unwrap_or_else(|e| panic!("no FailedScheduling for big: {e}"));
    assert!(
        message.starts_with("0/2 nodes are available: "),
        "{message}"
    );
    k.ok(&["delete", "pod", "big", "--wait=false"]);

    // A pod of no class runs on the runtime's default, away from node-a's taint.
    let mut plain = pod("plain", None, &image, json!({}));
    plain["spec"]["containers"][0]["resources"] =
        json!({"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"cpu": "10m"}});
    apply(&k, &plain);
    let p = k
        .get_until(Duration::from_secs(90), &["pod", "plain"], |p| {
            p["status"]["phase"] == "Running"
        })
        .await
        .unwrap_or_else(|p| panic!("plain runs: {p}\n{}", b.kubelet.log()));
    assert_eq!(p["spec"]["nodeName"], "node-b");
    assert_eq!(
        sandbox_handler(&b.ctrd, p["metadata"]["uid"].as_str().unwrap()).await,
        ""
    );
}

#[tokio::test]
async fn a_missing_handler_or_class_is_a_pod_event() {
    // Without the admission plugin, so that a pod naming a missing class reaches the node.
    let c = Cluster::start_with(&["--disable-admission-plugins=RuntimeClass"])
        .await
        .unwrap();
    let k = c.kubectl();
    let node = Node::start(&c.api.kubeconfig, "node-a", &[]).unwrap();
    let image = node.images.busybox.clone();
    apply(
        &k,
        &json!({"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass",
            "metadata": {"name": "kata"}, "handler": "kata"}),
    );
    let mut p = pod("odd", Some("kata"), &image, json!({}));
    p["spec"]["nodeName"] = json!("node-a");
    apply(&k, &p);
    let message = pod_event(&k, "odd", "FailedCreatePodSandBox", "kata")
        .await
        .unwrap_or_else(|e| panic!("no event for odd: {e}\n{}", node.kubelet.log()));
    assert_eq!(
        message,
        "Failed to create pod sandbox: rpc error: code = Unknown desc = failed to get sandbox runtime: no runtime for \"kata\" is configured"
    );
    let mut p = pod("lost", Some("nowhere"), &image, json!({}));
    p["spec"]["nodeName"] = json!("node-a");
    apply(&k, &p);
    let message = pod_event(&k, "lost", "FailedCreatePodSandBox", "nowhere")
        .await
        .unwrap_or_else(|e| panic!("no event for lost: {e}\n{}", node.kubelet.log()));
    assert_eq!(
        message,
        "Failed to create pod sandbox: runtimeclass.node.k8s.io \"nowhere\" not found"
    );
    // Neither pod got further than that.
    for name in ["odd", "lost"] {
        let p = k.json(&["get", "pod", name]);
        assert_eq!(p["status"]["phase"], "Pending", "{p}");
    }
    // Once its class exists, the pod starts.
    apply(
        &k,
        &json!({"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass",
            "metadata": {"name": "nowhere"}, "handler": "runc"}),
    );
    k.get_until(Duration::from_secs(120), &["pod", "lost"], |p| {
        p["status"]["phase"] == "Running"
    })
    .await
    .unwrap_or_else(|p| {
        panic!(
            "lost runs once its class exists: {p}\n{}",
            node.kubelet.log()
        )
    });
}
