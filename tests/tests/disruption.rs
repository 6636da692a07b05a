//! Disruption budgets end to end: the disruption controller computing a PodDisruptionBudget's
//! status from real pods, the eviction subresource refusing with 429 and kube's words when a
//! budget is spent (with `Retry-After` only when kube names a delay; 500 for two budgets), dry
//! runs and finished pods; `kubectl drain` of a real node whose Deployment or StatefulSet is
//! under `maxUnavailable: 1`, seen never to lose two pods at once; and ephemeral containers:
//! refused on create and in templates, added only through `pods/ephemeralcontainers`, and
//! `kubectl debug` into a running pod.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use skiff_e2e::node::{Node, SecondNode};
use skiff_e2e::{eventually_ok, send, table_row, Cluster, Daemon, Kubectl};

const NS: &str = "/api/v1/namespaces/default";

fn pod_path(name: &str) -> String {
    format!("{NS}/pods/{name}")
}

/// A pod (no node: nothing runs it) made Running and Ready through its status.
async fn ready_pod(c: &Cluster, http: &reqwest::Client, name: &str, labels: Value, ready: bool) {
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "app", "image": "busybox"}]}});
    let (code, body) = send(
        http,
        Method::POST,
        c.api.url(&format!("{NS}/pods")),
        Some(pod),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    let status = json!({"status": {"phase": "Running", "conditions": [
        {"type": "Ready", "status": if ready { "True" } else { "False" },
         "lastTransitionTime": "2024-01-01T00:00:00Z"}]}});
    let resp = http
        .patch(c.api.url(&format!("{}/status", pod_path(name))))
        .header("Content-Type", "application/merge-patch+json")
        .body(status.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status().as_u16(),
        200,
        "{}",
        resp.text().await.unwrap()
    );
}

async fn evict(c: &Cluster, http: &reqwest::Client, name: &str, dry_run: bool) -> (u16, Value) {
    let (code, _, body) = evict_raw(c, http, name, dry_run).await;
    (code, body)
}

/// An eviction's status code, `Retry-After` header and body.
async fn evict_raw(
    c: &Cluster,
    http: &reqwest::Client,
    name: &str,
    dry_run: bool,
) -> (u16, Option<String>, Value) {
    let mut body = json!({"apiVersion": "policy/v1", "kind": "Eviction",
        "metadata": {"name": name, "namespace": "default"}});
    if dry_run {
        body["deleteOptions"] = json!({"dryRun": ["All"]});
    }
    let resp = http
        .post(c.api.url(&format!("{}/eviction", pod_path(name))))
        .json(&body)
        .send()
        .await
        .unwrap();
    let code = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get("Retry-After")
        .map(|v| v.to_str().unwrap_or("<not text>").to_string());
    (code, retry_after, resp.json().await.unwrap())
}

fn pdb_status(k: &Kubectl, name: &str) -> Value {
    k.json(&["get", "pdb", name, "-o", "json"])["status"].clone()
}

/// Waits until the budget's status has `want` for each of its keys.
fn wait_status(k: &Kubectl, name: &str, want: Value, cm: &Daemon) -> Value {
    eventually_ok(
        &format!("pdb {name} status {want}"),
        Duration::from_secs(30),
        || {
            let st = pdb_status(k, name);
            let ok = want
                .as_object()
                .unwrap()
                .iter()
                .all(|(key, v)| st.get(key) == Some(v));
            if ok {
                Ok(st)
            } else {
                Err(st.to_string())
            }
        },
        || cm.log(),
    )
}

#[tokio::test]
async fn budgets_are_computed_and_evictions_respect_them() {
    let c = Cluster::start().await.unwrap();
    let k = c.kubectl();
    let http = c.api.client().unwrap();

    // Bad budgets are refused as kube-apiserver refuses them.
    let bad = json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": "bad"},
        "spec": {"minAvailable": 1, "maxUnavailable": "150%",
                 "unhealthyPodEvictionPolicy": "Never"}});
    let (code, body) = send(
        &http,
        Method::POST,
        c.api
            .url("/apis/policy/v1/namespaces/default/poddisruptionbudgets"),
        Some(bad),
    )
    .await;
    assert_eq!(code, 422, "{body}");
    let msg = body["message"].as_str().unwrap();
    assert!(
        msg.starts_with("PodDisruptionBudget.policy \"bad\" is invalid: "),
        "{msg}"
    );
    assert!(
        msg.contains("minAvailable and maxUnavailable cannot be both set"),
        "{msg}"
    );
    assert!(
        msg.contains("spec.maxUnavailable: Invalid value: \"150%\": must not be greater than 100%"),
        "{msg}"
    );
    assert!(msg.contains("spec.unhealthyPodEvictionPolicy: Unsupported value: \"Never\": supported values: \"AlwaysAllow\", \"IfHealthyBudget\""), "{msg}");

    for n in ["db-0", "db-1", "db-2"] {
        ready_pod(&c, &http, n, json!({"app": "db"}), true).await;
    }
    k.ok(&[
        "create",
        "pdb",
        "db",
        "--selector=app=db",
        "--min-available=3",
    ]);
    // No controller has seen the budget yet: kube's 429 asking to come back in 10 seconds, in
    // the body and in `Retry-After`.
    let (code, retry_after, body) = evict_raw(&c, &http, "db-0", false).await;
    assert_eq!(code, 429, "{body}");
    assert_eq!(retry_after.as_deref(), Some("10"));
    assert_eq!(
        body["message"],
        "Cannot evict pod as it would violate the pod's disruption budget."
    );
    assert_eq!(
        body["details"],
        json!({"retryAfterSeconds": 10, "causes": [{"reason": "DisruptionBudget",
            "message": "The disruption budget db is still being processed by the server."}]})
    );
    let cm = Daemon::start(
        "skiff-controller-manager",
        &c.api,
        &["--port=0", "--controllers=disruption"],
    )
    .unwrap();
    let st = wait_status(
        &k,
        "db",
        json!({"currentHealthy": 3, "desiredHealthy": 3, "expectedPods": 3,
               "disruptionsAllowed": 0, "observedGeneration": 1}),
        &cm,
    );
    let cond = &st["conditions"][0];
    assert_eq!(
        (&cond["type"], &cond["status"], &cond["reason"]),
        (
            &json!("DisruptionAllowed"),
            &json!("False"),
            &json!("InsufficientPods")
        )
    );
    let (header, row) = table_row(&k.ok(&["get", "pdb"]), "db");
    assert_eq!(
        header,
        [
            "NAME",
            "MIN",
            "AVAILABLE",
            "MAX",
            "UNAVAILABLE",
            "ALLOWED",
            "DISRUPTIONS",
            "AGE"
        ]
    );
    assert_eq!(&row[1..4], ["3", "N/A", "0"]);

    // A spent budget: 429 with kube's message and cause, and no delay to wait (kube's
    // `NewTooManyRequests(..., 0)`: no `retryAfterSeconds`, no `Retry-After`); the pod stays.
    let (code, retry_after, body) = evict_raw(&c, &http, "db-0", false).await;
    assert_eq!(code, 429, "{body}");
    assert_eq!(retry_after, None);
    assert_eq!(body["reason"], "TooManyRequests");
    assert_eq!(
        body["message"],
        "Cannot evict pod as it would violate the pod's disruption budget."
    );
    assert_eq!(
        body["details"],
        json!({"causes": [{"reason": "DisruptionBudget",
               "message": "The disruption budget db needs 3 healthy pods and has 3 currently"}]})
    );
    k.ok(&["get", "pod", "db-0"]);

    // A finished pod goes whatever the budget says.
    ready_pod(&c, &http, "db-done", json!({"app": "db"}), true).await;
    let resp = http
        .patch(c.api.url(&format!("{}/status", pod_path("db-done"))))
        .header("Content-Type", "application/merge-patch+json")
        .body(json!({"status": {"phase": "Succeeded"}}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let (code, body) = evict(&c, &http, "db-done", false).await;
    assert_eq!(code, 201, "{body}");
    assert!(k
        .run(&["get", "pod", "db-done"])
        .stderr
        .contains("NotFound"));

    // Room for one: a dry run takes nothing; a real eviction takes it and is recorded.
    k.ok(&[
        "patch",
        "pdb",
        "db",
        "--type=merge",
        "-p",
        r#"{"spec":{"minAvailable":2}}"#,
    ]);
    wait_status(
        &k,
        "db",
        json!({"disruptionsAllowed": 1, "desiredHealthy": 2, "observedGeneration": 2}),
        &cm,
    );
    let (code, body) = evict(&c, &http, "db-0", true).await;
    assert_eq!(code, 201, "{body}");
    k.ok(&["get", "pod", "db-0"]);
    assert_eq!(pdb_status(&k, "db")["disruptionsAllowed"], 1);
    let (code, body) = evict(&c, &http, "db-0", false).await;
    assert_eq!(code, 201, "{body}");
    assert!(k.run(&["get", "pod", "db-0"]).stderr.contains("NotFound"));
    let (code, body) = evict(&c, &http, "db-1", false).await;
    assert_eq!(code, 429, "{body}");
    assert_eq!(
        body["details"]["causes"][0]["message"],
        "The disruption budget db needs 2 healthy pods and has 2 currently"
    );
    wait_status(
        &k,
        "db",
        json!({"currentHealthy": 2, "expectedPods": 2, "disruptionsAllowed": 0}),
        &cm,
    );

    // An unready pod under `AlwaysAllow` goes even when the budget is spent.
    ready_pod(&c, &http, "db-sick", json!({"app": "db"}), false).await;
    k.ok(&[
        "patch",
        "pdb",
        "db",
        "--type=merge",
        "-p",
        r#"{"spec":{"minAvailable":2,"unhealthyPodEvictionPolicy":"AlwaysAllow"}}"#,
    ]);
    wait_status(&k, "db", json!({"observedGeneration": 3}), &cm);
    let (code, body) = evict(&c, &http, "db-sick", false).await;
    assert_eq!(code, 201, "{body}");

    // Two budgets over one pod: kube's 500.
    k.ok(&[
        "create",
        "pdb",
        "db-too",
        "--selector=app=db",
        "--max-unavailable=1",
    ]);
    // The eviction reads budgets from the watch cache: wait until it holds the new one.
    let mut last = (0, Value::Null);
    for _ in 0..100 {
        last = evict(&c, &http, "db-2", true).await;
        if last.0 == 500 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(last.0, 500, "{}", last.1);
    let (code, body) = evict(&c, &http, "db-2", false).await;
    assert_eq!(code, 500, "{body}");
    assert_eq!(
        body["message"],
        "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support."
    );
    // A Status of kube's own making: no reason, no details.
    assert_eq!(body.get("reason"), None, "{body}");
    assert_eq!(body.get("details"), None, "{body}");
    k.ok(&["get", "pod", "db-2"]);
}

#[tokio::test]
async fn ephemeral_container_updates_only_add_and_are_validated() {
    let c = Cluster::start().await.unwrap();
    let http = c.api.client().unwrap();
    // A pod is never created with one (kube's `ValidatePodCreate`).
    let with_one = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "early"},
        "spec": {"containers": [{"name": "app", "image": "busybox"}],
            "ephemeralContainers": [{"name": "dbg", "image": "busybox"}]}});
    let (code, body) = send(
        &http,
        Method::POST,
        c.api.url(&format!("{NS}/pods")),
        Some(with_one),
    )
    .await;
    assert_eq!(code, 422, "{body}");
    assert_eq!(
        body["message"],
        "Pod \"early\" is invalid: spec.ephemeralContainers: Forbidden: cannot be set on create"
    );
    // Nor is a pod template (kube's `ValidatePodTemplateSpec`).
    let deploy = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
        "spec": {"selector": {"matchLabels": {"app": "d"}},
            "template": {"metadata": {"labels": {"app": "d"}},
                "spec": {"containers": [{"name": "app", "image": "busybox"}],
                    "ephemeralContainers": [{"name": "dbg", "image": "busybox"}]}}}});
    let (code, body) = send(
        &http,
        Method::POST,
        c.api.url("/apis/apps/v1/namespaces/default/deployments"),
        Some(deploy),
    )
    .await;
    assert_eq!(code, 422, "{body}");
    assert_eq!(
        body["message"],
        "Deployment.apps \"d\" is invalid: spec.template.spec.ephemeralContainers: Forbidden: ephemeral containers not allowed in pod template"
    );
    ready_pod(&c, &http, "web", json!({"app": "web"}), true).await;
    let url = c
        .api
        .url(&format!("{}/ephemeralcontainers", pod_path("web")));
    let (code, pod) = send(&http, Method::GET, url.clone(), None).await;
    assert_eq!(code, 200, "{pod}");
    assert_eq!(pod["kind"], "Pod");

    let with = |pod: &Value, list: Value| {
        let mut p = pod.clone();
        p["spec"]["ephemeralContainers"] = list;
        p
    };
    // An addition is stored, defaulted; other changes in the same write are ignored.
    let mut added = with(
        &pod,
        json!([{"name": "dbg", "image": "busybox", "stdin": true, "tty": true}]),
    );
    added["spec"]["containers"][0]["image"] = json!("other");
    let (code, stored) = send(&http, Method::PUT, url.clone(), Some(added)).await;
    assert_eq!(code, 200, "{stored}");
    assert_eq!(stored["spec"]["containers"][0]["image"], "busybox");
    let dbg = &stored["spec"]["ephemeralContainers"][0];
    assert_eq!(dbg["terminationMessagePolicy"], "File");
    assert_eq!(dbg["imagePullPolicy"], "Always");

    // Through the pod itself they may not change: neither removed by a PUT nor added by a
    // patch (kube's `ValidatePodUpdate`: the spec may not change but for images and a few
    // more).
    let mut main = stored.clone();
    main["spec"]["ephemeralContainers"] = json!([]);
    let (code, body) = send(&http, Method::PUT, c.api.url(&pod_path("web")), Some(main)).await;
    assert_eq!(code, 422, "{body}");
    let refused = "Pod \"web\" is invalid: spec: Forbidden: pod updates may not change fields other than `spec.containers[*].image`";
    assert!(
        body["message"].as_str().unwrap().starts_with(refused),
        "{body}"
    );
    let resp = http
        .patch(c.api.url(&pod_path("web")))
        .header("Content-Type", "application/strategic-merge-patch+json")
        .body(
            json!({"spec": {"ephemeralContainers": [{"name": "sneaky", "image": "busybox"}]}})
                .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 422);
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["message"].as_str().unwrap().starts_with(refused),
        "{body}"
    );

    let mut changed = dbg.clone();
    changed["image"] = json!("other");
    let cases = [
        (
            with(&stored, json!([])),
            "Pod \"web\" is invalid: spec.ephemeralContainers: Forbidden: existing ephemeral containers \"dbg\" may not be removed\n",
        ),
        (
            with(&stored, json!([changed])),
            "Pod \"web\" is invalid: spec.ephemeralContainers: Forbidden: existing ephemeral containers \"dbg\" may not be changed\n",
        ),
        (
            with(
                &stored,
                json!([dbg.clone(), {"name": "app", "image": "busybox",
                    "terminationMessagePolicy": "File"}]),
            ),
            "Pod \"web\" is invalid: spec.ephemeralContainers[1].name: Duplicate value: \"app\"",
        ),
        (
            with(
                &stored,
                json!([dbg.clone(), {"name": "x", "image": "busybox",
                    "ports": [{"containerPort": 80}]}]),
            ),
            "Pod \"web\" is invalid: spec.ephemeralContainers[1].ports: Forbidden: cannot be set for an Ephemeral Container",
        ),
        (
            with(
                &stored,
                json!([dbg.clone(), {"name": "x", "image": "busybox",
                    "targetContainerName": "nope"}]),
            ),
            "Pod \"web\" is invalid: spec.ephemeralContainers[1].targetContainerName: Not found: \"nope\"",
        ),
    ];
    for (body, want) in cases {
        let (code, got) = send(&http, Method::PUT, url.clone(), Some(body)).await;
        assert_eq!(code, 422, "{got}");
        assert_eq!(got["reason"], "Invalid");
        assert_eq!(got["message"], want);
    }
    // A strategic-merge patch adds one, as kubectl debug sends it.
    let resp = http
        .patch(url.clone())
        .header("Content-Type", "application/strategic-merge-patch+json")
        .body(
            json!({"spec": {"ephemeralContainers": [{"name": "dbg2", "image": "busybox"}]}})
                .to_string(),
        )
        .send()
        .await
        .unwrap();
    let code = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(code, 200, "{body}");
    let names: Vec<&str> = body["spec"]["ephemeralContainers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["dbg", "dbg2"]);
}

/// Ready pods (not being deleted) of `app`, as a watch sees them.
fn available(pods: &BTreeMap<String, Value>) -> usize {
    pods.values()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .filter(|p| {
            p["status"]["conditions"].as_array().is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
        })
        .count()
}

/// Watches the pods labelled `app=kv` and keeps the fewest Ready at any moment, counted from
/// when all three were first Ready. Pods are keyed by name: a StatefulSet's replacement comes
/// back under the name its predecessor had, after that one's `DELETED`, so a name missing
/// from the map is a pod down.
struct ReadyWatch {
    child: std::process::Child,
    seen: Arc<Mutex<BTreeMap<String, Value>>>,
    low: Arc<Mutex<Option<usize>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ReadyWatch {
    fn start(k: &Kubectl) -> ReadyWatch {
        let seen: Arc<Mutex<BTreeMap<String, Value>>> = Arc::default();
        let low: Arc<Mutex<Option<usize>>> = Arc::default();
        let mut child = k.spawn(&[
            "get",
            "pods",
            "-l",
            "app=kv",
            "-w",
            "-o",
            "json",
            "--output-watch-events",
        ]);
        let stdout = child.stdout.take().unwrap();
        let thread = {
            let (seen, low) = (seen.clone(), low.clone());
            std::thread::spawn(move || {
                let stream = serde_json::Deserializer::from_reader(stdout).into_iter::<Value>();
                for ev in stream.map_while(Result::ok) {
                    let name = ev["object"]["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string();
                    let mut pods = seen.lock();
                    if ev["type"] == "DELETED" {
                        pods.remove(&name);
                    } else {
                        pods.insert(name, ev["object"].clone());
                    }
                    let n = available(&pods);
                    let mut l = low.lock();
                    match *l {
                        Some(m) => *l = Some(m.min(n)),
                        None if n == 3 => *l = Some(n),
                        None => {}
                    }
                }
            })
        };
        ReadyWatch {
            child,
            seen,
            low,
            thread: Some(thread),
        }
    }

    /// Stops the watch and answers the fewest pods seen Ready.
    fn fewest(mut self) -> Option<usize> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        *self.low.lock()
    }
}

/// Two real nodes; `workload` (three replicas labelled `app=kv`) all on node-a under a budget
/// of `maxUnavailable: 1`; then `kubectl drain node-a`. Asserts that kubectl met the budget's
/// 429 and retried, that the drain finished, that a watch never saw fewer than two pods Ready,
/// and answers the pods' names once all three run on node-b.
async fn drain_under_a_budget(workload: Value) -> BTreeSet<String> {
    let c = Cluster::start().await.unwrap();
    let _scheduler = Daemon::start("skiff-scheduler", &c.api, &["--port=0"]).unwrap();
    let cm = Daemon::start("skiff-controller-manager", &c.api, &["--port=0"]).unwrap();
    let a = Node::start(&c.api.kubeconfig, "node-a", &[]).unwrap();
    let b = SecondNode::start(&c.api.kubeconfig, &a, "node-b", &[]).unwrap();
    let k = c.kubectl();
    let logs = || {
        format!(
            "controller-manager:\n{}\nnode-a:\n{}\nnode-b:\n{}",
            cm.log(),
            a.kubelet.log(),
            b.kubelet.log()
        )
    };
    for n in ["node-a", "node-b"] {
        eventually_ok(
            &format!("{n} registered"),
            Duration::from_secs(30),
            || {
                k.run(&["get", "node", n])
                    .status
                    .success()
                    .then_some(())
                    .ok_or_default()
            },
            logs,
        );
    }
    // Every replica starts on node-a.
    k.ok(&["cordon", "node-b"]);
    let mut workload = workload;
    workload["spec"]["template"]["spec"]["containers"][0]["image"] = json!(a.images.busybox);
    k.ok_input(&["apply", "-f", "-"], &workload.to_string());
    k.ok(&[
        "create",
        "pdb",
        "kv",
        "--selector=app=kv",
        "--max-unavailable=1",
    ]);
    eventually_ok(
        "three kv pods ready and the budget allowing one",
        Duration::from_secs(120),
        || {
            let st = pdb_status(&k, "kv");
            (st["currentHealthy"] == 3 && st["disruptionsAllowed"] == 1)
                .then_some(())
                .ok_or(st.to_string())
        },
        logs,
    );
    k.ok(&["uncordon", "node-b"]);

    // Watch readiness from here on.
    let watch = ReadyWatch::start(&k);
    eventually_ok(
        "the watch to list the three pods",
        Duration::from_secs(20),
        || {
            (available(&watch.seen.lock()) == 3)
                .then_some(())
                .ok_or_default()
        },
        logs,
    );

    let drain = k.run(&[
        "drain",
        "node-a",
        "--ignore-daemonsets",
        "--delete-emptydir-data",
        "--timeout=180s",
    ]);
    assert!(
        drain.status.success(),
        "{}\n{}\n{}",
        drain.stdout,
        drain.stderr,
        logs()
    );
    // kubectl met the budget's 429 and tried again.
    assert!(
        drain
            .stderr
            .contains("Cannot evict pod as it would violate the pod's disruption budget."),
        "{}\n{}",
        drain.stdout,
        drain.stderr
    );
    assert!(
        drain.stdout.contains("node/node-a drained"),
        "{}",
        drain.stdout
    );
    let names = eventually_ok(
        "three kv pods ready on node-b",
        Duration::from_secs(60),
        || {
            let pods = k.json(&["get", "pods", "-l", "app=kv", "-o", "json"]);
            let items = pods["items"].as_array().unwrap();
            let on_b = items.iter().all(|p| p["spec"]["nodeName"] == "node-b");
            let ready = items
                .iter()
                .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
                .filter(|p| {
                    p["status"]["conditions"].as_array().is_some_and(|cs| {
                        cs.iter()
                            .any(|c| c["type"] == "Ready" && c["status"] == "True")
                    })
                })
                .count();
            let names: BTreeSet<String> = items
                .iter()
                .map(|p| p["metadata"]["name"].as_str().unwrap_or("").to_string())
                .collect();
            (items.len() == 3 && on_b && ready == 3)
                .then_some(names)
                .ok_or(pods.to_string())
        },
        logs,
    );
    let fewest = watch.fewest();
    assert!(
        fewest.is_some_and(|n| n >= 2),
        "two kv pods were down at once ({fewest:?} ready)"
    );
    names
}

/// The pod template both workloads run: a process that sleeps, stopped within a second.
fn kv_template() -> Value {
    json!({"metadata": {"labels": {"app": "kv"}},
        "spec": {"terminationGracePeriodSeconds": 1,
            "containers": [{"name": "kv", "image": "", "command": ["sleep", "3600"]}]}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn drain_evicts_through_the_budget_and_never_takes_two_at_once() {
    let deploy = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "kv"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "kv"}},
            "template": kv_template()}});
    drain_under_a_budget(deploy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn drain_moves_a_statefulset_one_pod_at_a_time() {
    let sts = json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "kv"},
        "spec": {"replicas": 3, "serviceName": "kv",
            "selector": {"matchLabels": {"app": "kv"}},
            "template": kv_template()}});
    // Each pod came back on node-b under its own stable name.
    let names = drain_under_a_budget(sts).await;
    assert_eq!(
        names,
        BTreeSet::from(["kv-0", "kv-1", "kv-2"].map(String::from))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubectl_debug_runs_a_container_in_a_running_pod() {
    let c = Cluster::start().await.unwrap();
    let node = Node::start(&c.api.kubeconfig, "node-a", &[]).unwrap();
    let k = c.kubectl();
    let image = node.images.busybox.clone();
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "app"},
        "spec": {"nodeName": "node-a", "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "main", "image": image, "command": ["sleep", "3600"]}]}});
    k.ok_input(&["apply", "-f", "-"], &pod.to_string());
    let logs = || node.kubelet.log();
    eventually_ok(
        "pod app running",
        Duration::from_secs(60),
        || {
            let p = k.json(&["get", "pod", "app", "-o", "json"]);
            (p["status"]["phase"] == "Running")
                .then_some(())
                .ok_or(p.to_string())
        },
        logs,
    );
    // Without attaching: the container runs its command once; its output is in its log.
    k.ok(&[
        "debug",
        "app",
        "--image",
        &image,
        "-c",
        "dbg",
        "--target=main",
        "--",
        "sh",
        "-c",
        "echo debug-ran; ps",
    ]);
    let out = eventually_ok(
        "the debug container's output",
        Duration::from_secs(60),
        || {
            let r = k.run(&["logs", "app", "-c", "dbg"]);
            r.stdout
                .contains("debug-ran")
                .then_some(r.stdout.clone())
                .ok_or(r.stderr)
        },
        logs,
    );
    // It shares the target's process namespace: `sleep 3600` is among its processes.
    assert!(out.contains("sleep 3600"), "{out}");
    let p = k.json(&["get", "pod", "app", "-o", "json"]);
    let st = &p["status"]["ephemeralContainerStatuses"][0];
    assert_eq!(st["name"], "dbg", "{p}");
    // Attached: kubectl waits for it to run, and what it is told to do comes back while the
    // session is open (a line sent before the stream is up may be lost, so it is sent again).
    let mut attach = k.spawn_interactive(&[
        "debug", "app", "-i", "--image", &image, "-c", "shell", "--", "sh",
    ]);
    let mut stdin = attach.stdin.take().unwrap();
    let stdout = attach.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut got = Vec::new();
    while !got.iter().any(|l: &String| l == "attached-42") && std::time::Instant::now() < deadline {
        use std::io::Write;
        let _ = stdin.write_all(b"echo attached-$((40+2))\n");
        let _ = stdin.flush();
        while let Ok(l) = rx.recv_timeout(Duration::from_millis(500)) {
            got.push(l);
        }
    }
    skiff_e2e::stop_child(&mut attach, Duration::from_secs(2));
    assert!(
        got.iter().any(|l| l == "attached-42"),
        "{got:?}\n{}",
        logs()
    );
    // The main container ran on, undisturbed.
    let p = k.json(&["get", "pod", "app", "-o", "json"]);
    assert_eq!(p["status"]["containerStatuses"][0]["restartCount"], 0);
}

trait OkOrDefault<T> {
    fn ok_or_default(self) -> Result<T, String>;
}

impl<T> OkOrDefault<T> for Option<T> {
    fn ok_or_default(self) -> Result<T, String> {
        self.ok_or_else(|| "not yet".to_string())
    }
}
