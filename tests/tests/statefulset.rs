//! StatefulSets and ControllerRevisions with the real `kubectl`: `skiff-controller-manager`
//! and the scheduler against a real etcd and API server. Hollow nodes stand in for kubelets
//! where only the order of pods matters; a real node (containerd, a readiness probe) shows
//! that `OrderedReady` waits for each pod to be Ready. Claims are asserted as objects and as
//! the pods' volumes.

use std::time::Duration;

use serde_json::Value;
use skiff_client::Client;
use skiff_e2e::node::Node;
use skiff_e2e::{hollow, Cluster, Daemon, Kubectl};
use tokio_util::sync::CancellationToken;

struct Env {
    cm: Daemon,
    _scheduler: Daemon,
    stop: CancellationToken,
    c: Cluster,
}

impl Env {
    /// A control plane with a scheduler, a controller manager and `nodes` hollow nodes.
    async fn start(nodes: usize) -> Env {
        let c = Cluster::start().await.unwrap();
        let stop = CancellationToken::new();
        if nodes > 0 {
            let client =
                Client::new(skiff_client::Config::from_kubeconfig(&c.api.kubeconfig).unwrap())
                    .unwrap();
            let spec = hollow::Spec {
                count: nodes,
                lease_renew: Duration::from_secs(1),
                ..hollow::Spec::default()
            };
            hollow::register(&client, &spec).await.unwrap();
            tokio::spawn(hollow::run_pods(client.clone(), spec.clone(), stop.clone()));
            tokio::spawn(hollow::renew_leases(client, spec, stop.clone()));
        }
        let scheduler = Daemon::start(
            "skiff-scheduler",
            &c.api,
            &["--port=0", "--leader-elect=false"],
        )
        .unwrap();
        let cm = Daemon::start(
            "skiff-controller-manager",
            &c.api,
            &["--port=0", "--leader-elect=false", "--kube-api-qps=0"],
        )
        .unwrap();
        Env {
            cm,
            _scheduler: scheduler,
            stop,
            c,
        }
    }

    fn kubectl(&self) -> Kubectl {
        self.c.kubectl()
    }

    /// Waits until `f` holds for what `kubectl get WHAT -o json` prints.
    async fn until(&self, what: &[&str], f: impl Fn(&Value) -> bool) -> Value {
        let within = Duration::from_secs(60);
        self.kubectl()
            .get_until(within, what, f)
            .await
            .unwrap_or_else(|last| {
                panic!(
                    "{what:?} did not get there within {within:?}; last seen:\n{last:#}\ncontroller manager log:\n{}",
                    self.cm.log()
                )
            })
    }

    /// The StatefulSet's pods (not being deleted), by name.
    async fn pods_become(&self, sel: &str, f: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let v = self.until(&["pods", "-l", sel], |v| f(&active(v))).await;
        active(&v)
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn active(v: &Value) -> Vec<Value> {
    let mut a: Vec<Value> = v["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .collect();
    a.sort_by_key(name);
    a
}

/// Runs kubectl with `stdin`, which must fail; its error output.
fn fails_input(k: &Kubectl, args: &[&str], stdin: &str) -> String {
    let r = k.run_with_input(args, stdin);
    assert!(
        !r.status.success(),
        "kubectl {args:?} should have failed: {}",
        r.stdout
    );
    r.stderr
}

fn name(p: &Value) -> String {
    p["metadata"]["name"].as_str().unwrap_or("").to_string()
}

fn names(ps: &[Value]) -> Vec<String> {
    ps.iter().map(name).collect()
}

fn ready(p: &Value) -> bool {
    p["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

fn image(p: &Value) -> &str {
    p["spec"]["containers"][0]["image"].as_str().unwrap_or("")
}

fn sts(name: &str, extra: &str) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: {name}}}
spec:
  serviceName: {name}
  replicas: 3
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec: {{containers: [{{name: c, image: "busybox:v1"}}]}}
{extra}"#
    )
}

const CLAIMS: &str = r#"  volumeClaimTemplates:
  - metadata: {name: data}
    spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
"#;

/// `n` volumes of no class for the claims to bind to (the scheduler places a pod only once
/// its claims are bound, and nothing here provisions).
fn volumes(n: usize) -> String {
    (0..n)
        .map(|i| {
            format!(
                "apiVersion: v1\nkind: PersistentVolume\nmetadata: {{name: vol-{i}}}\nspec: {{capacity: {{storage: 1Gi}}, accessModes: [ReadWriteOnce], hostPath: {{path: /tmp/vol-{i}}}}}\n"
            )
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

fn headless(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec: {{clusterIP: None, selector: {{app: {name}}}, ports: [{{port: 80}}]}}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stable_names_claims_scaling_and_identity() {
    let env = Env::start(2).await;
    let k = env.kubectl();
    k.ok_input(&["apply", "-f", "-"], &volumes(8));
    k.ok_input(&["apply", "-f", "-"], &headless("web"));
    k.ok_input(&["apply", "-f", "-"], &sts("web", CLAIMS));
    let out = k.ok(&["rollout", "status", "statefulset/web", "--timeout=60s"]);
    assert!(
        out.contains("partitioned roll out complete: 3 new pods have been updated"),
        "{out}"
    );
    let pods = env
        .pods_become("app=web", |a| a.len() == 3 && a.iter().all(ready))
        .await;
    assert_eq!(names(&pods), ["web-0", "web-1", "web-2"]);

    // Created in order: each pod after the one before it.
    let created = |p: &Value| {
        p["metadata"]["creationTimestamp"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(created(&pods[0]) <= created(&pods[1]) && created(&pods[1]) <= created(&pods[2]));
    for (i, p) in pods.iter().enumerate() {
        let labels = &p["metadata"]["labels"];
        assert_eq!(labels["statefulset.kubernetes.io/pod-name"], name(p));
        assert_eq!(labels["apps.kubernetes.io/pod-index"], i.to_string());
        assert!(labels["controller-revision-hash"]
            .as_str()
            .unwrap()
            .starts_with("web-"));
        assert_eq!(p["spec"]["hostname"], name(p));
        assert_eq!(p["spec"]["subdomain"], "web");
        let vols = p["spec"]["volumes"].as_array().unwrap();
        assert!(
            vols.iter().any(|v| v["name"] == "data"
                && v["persistentVolumeClaim"]["claimName"] == format!("data-web-{i}")),
            "{vols:?}"
        );
    }
    // One claim per ordinal, from the template.
    let claims = k.json(&["get", "pvc"]);
    let mut cn = names(&active(&claims));
    cn.sort();
    assert_eq!(cn, ["data-web-0", "data-web-1", "data-web-2"]);
    assert_eq!(
        claims["items"][0]["spec"]["resources"]["requests"]["storage"],
        "1Gi"
    );
    assert_eq!(claims["items"][0]["metadata"]["labels"]["app"], "web");
    let events = k.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=web",
    ]);
    assert!(
        events.contains("create Pod web-0 in StatefulSet web successful"),
        "{events}"
    );
    assert!(
        events.contains("create Claim data-web-0 Pod web-0 in StatefulSet web success"),
        "{events}"
    );

    // kubectl's columns and short name.
    let table = k.ok(&["get", "sts", "-o", "wide"]);
    let head: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(head, ["NAME", "READY", "AGE", "CONTAINERS", "IMAGES"]);
    assert!(table.lines().nth(1).unwrap().contains("3/3"), "{table}");

    // The EndpointSlice of the headless Service names each pod (what cluster DNS answers
    // `web-0.web.NS.svc.cluster.local` from).
    env.until(
        &["endpointslices", "-l", "kubernetes.io/service-name=web"],
        |v| {
            let hosts: Vec<&str> = v["items"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|s| s["endpoints"].as_array().into_iter().flatten())
                .filter_map(|e| e["hostname"].as_str())
                .collect();
            ["web-0", "web-1", "web-2"]
                .iter()
                .all(|h| hosts.contains(h))
        },
    )
    .await;

    // A deleted pod comes back under its name, with its claim.
    let uid = pods[1]["metadata"]["uid"].clone();
    k.ok(&["delete", "pod", "web-1", "--wait=false"]);
    let pods = env
        .pods_become("app=web", |a| {
            a.len() == 3 && a[1]["metadata"]["uid"] != uid && a.iter().all(ready)
        })
        .await;
    assert_eq!(names(&pods), ["web-0", "web-1", "web-2"]);
    assert_eq!(
        pods[1]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"],
        "data-web-1"
    );
    assert_eq!(active(&k.json(&["get", "pvc"])).len(), 3, "no new claim");

    // Scale down: the highest ordinal goes, its claim stays (whenScaled: Retain).
    k.ok(&["scale", "sts", "web", "--replicas=1"]);
    let pods = env.pods_become("app=web", |a| a.len() == 1).await;
    assert_eq!(names(&pods), ["web-0"]);
    assert_eq!(active(&k.json(&["get", "pvc"])).len(), 3);
    let events = k.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=web",
    ]);
    assert!(
        events.contains("delete Pod web-2 in StatefulSet web successful"),
        "{events}"
    );
    // Up again: the same names on the same claims.
    k.ok(&["scale", "sts", "web", "--replicas=3"]);
    let pods = env
        .pods_become("app=web", |a| a.len() == 3 && a.iter().all(ready))
        .await;
    assert_eq!(
        pods[2]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"],
        "data-web-2"
    );
    let s = env
        .until(&["sts", "web"], |s| s["status"]["readyReplicas"] == 3)
        .await;
    assert_eq!(s["status"]["replicas"], 3);
    assert_eq!(s["status"]["currentReplicas"], 3);
    assert_eq!(s["status"]["updatedReplicas"], 3);
    assert_eq!(s["status"]["availableReplicas"], 3);
    assert_eq!(
        s["status"]["currentRevision"],
        s["status"]["updateRevision"]
    );

    // whenScaled: Delete — a scaled-away ordinal's claim is owned by its pod and goes with it.
    k.ok(&[
        "patch",
        "sts",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"persistentVolumeClaimRetentionPolicy":{"whenScaled":"Delete"}}}"#,
    ]);
    k.ok(&["scale", "sts", "web", "--replicas=2"]);
    env.pods_become("app=web", |a| a.len() == 2).await;
    env.until(&["pvc"], |v| {
        let n = names(&active(v));
        n.len() == 2 && !n.contains(&"data-web-2".to_string())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordinals_start_numbers_pods_and_claims_from_it() {
    let env = Env::start(2).await;
    let k = env.kubectl();
    k.ok_input(&["apply", "-f", "-"], &volumes(5));
    k.ok_input(&["apply", "-f", "-"], &headless("shard"));
    let extra = format!("  ordinals: {{start: 5}}\n{CLAIMS}");
    // Another template's revision holds the name the set's first revision would get: the
    // controller counts a collision and takes the next name, leaving that one alone.
    let dry = k.run_with_input(
        &["create", "--dry-run=server", "-o", "json", "-f", "-"],
        &sts("shard", &extra),
    );
    let dry: Value = serde_json::from_str(&dry.stdout).expect("a dry-run StatefulSet");
    let template: k8s_openapi::api::core::v1::PodTemplateSpec =
        serde_json::from_value(dry["spec"]["template"].clone()).unwrap();
    let taken = format!(
        "shard-{}",
        skiff_controllers::history::hash(&template, None)
    );
    let squatter = serde_json::json!({"apiVersion": "apps/v1", "kind": "ControllerRevision",
        "metadata": {"name": taken}, "revision": 1,
        "data": {"spec": {"template": {"$patch": "replace",
            "spec": {"containers": [{"name": "other", "image": "other"}]}}}}});
    k.ok_input(&["create", "-f", "-"], &squatter.to_string());
    k.ok_input(&["apply", "-f", "-"], &sts("shard", &extra));
    let s = env
        .until(&["sts", "shard"], |s| s["status"]["collisionCount"] == 1)
        .await;
    assert_eq!(
        s["status"]["updateRevision"],
        format!(
            "shard-{}",
            skiff_controllers::history::hash(&template, Some(1))
        )
    );
    let kept = k.json(&["get", "controllerrevision", &taken]);
    assert_eq!(kept["data"], squatter["data"]);
    assert!(kept["metadata"]["ownerReferences"].is_null(), "{kept}");
    let pods = env
        .pods_become("app=shard", |a| a.len() == 3 && a.iter().all(ready))
        .await;
    assert_eq!(names(&pods), ["shard-5", "shard-6", "shard-7"]);
    for (p, i) in pods.iter().zip(5..) {
        assert_eq!(
            p["metadata"]["labels"]["apps.kubernetes.io/pod-index"],
            i.to_string()
        );
        assert_eq!(p["spec"]["hostname"], format!("shard-{i}"));
        assert_eq!(
            p["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"],
            format!("data-shard-{i}")
        );
    }
    let mut claims = names(&active(&k.json(&["get", "pvc"])));
    claims.sort();
    assert_eq!(claims, ["data-shard-5", "data-shard-6", "data-shard-7"]);

    // Scaling down removes the highest ordinal, counted from the start.
    k.ok(&["scale", "sts", "shard", "--replicas=2"]);
    let pods = env.pods_become("app=shard", |a| a.len() == 2).await;
    assert_eq!(names(&pods), ["shard-5", "shard-6"]);

    // A new start: the ordinals outside the range go, the new ones come.
    k.ok(&[
        "patch",
        "sts",
        "shard",
        "--type=merge",
        "-p",
        r#"{"spec":{"ordinals":{"start":0}}}"#,
    ]);
    let pods = env
        .pods_become("app=shard", |a| {
            names(a) == ["shard-0", "shard-1"] && a.iter().all(ready)
        })
        .await;
    assert_eq!(
        pods[0]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"],
        "data-shard-0"
    );
    let s = env
        .until(&["sts", "shard"], |s| s["status"]["readyReplicas"] == 2)
        .await;
    assert_eq!(s["status"]["replicas"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_partitioned_rolling_update_on_delete_and_rollout_history() {
    let env = Env::start(2).await;
    let k = env.kubectl();
    k.ok_input(
        &["apply", "-f", "-"],
        &sts("db", "  podManagementPolicy: Parallel\n  replicas: 4\n")
            .replace("  replicas: 3\n", ""),
    );
    env.pods_become("app=db", |a| a.len() == 4 && a.iter().all(ready))
        .await;
    let s = k.json(&["get", "sts", "db"]);
    assert_eq!(s["spec"]["podManagementPolicy"], "Parallel");
    assert_eq!(s["spec"]["updateStrategy"]["rollingUpdate"]["partition"], 0);
    assert_eq!(s["spec"]["revisionHistoryLimit"], 10);
    assert_eq!(
        s["spec"]["persistentVolumeClaimRetentionPolicy"]["whenDeleted"],
        "Retain"
    );

    // Partition 2: only ordinals 2 and 3 move to the new template.
    k.ok(&[
        "patch",
        "sts",
        "db",
        "-p",
        r#"{"spec":{"updateStrategy":{"rollingUpdate":{"partition":2}}}}"#,
    ]);
    k.ok(&["set", "image", "sts/db", "c=busybox:v2"]);
    let pods = env
        .pods_become("app=db", |a| {
            a.len() == 4
                && a.iter().all(ready)
                && a.iter().filter(|p| image(p) == "busybox:v2").count() == 2
        })
        .await;
    assert_eq!(
        pods.iter().map(image).collect::<Vec<_>>(),
        ["busybox:v1", "busybox:v1", "busybox:v2", "busybox:v2"]
    );
    let out = k.ok(&["rollout", "status", "sts/db", "--timeout=60s"]);
    assert!(
        out.contains("partitioned roll out complete: 2 new pods have been updated"),
        "{out}"
    );
    let s = k.json(&["get", "sts", "db"]);
    assert_ne!(
        s["status"]["currentRevision"],
        s["status"]["updateRevision"]
    );
    assert_eq!(s["status"]["updatedReplicas"], 2);
    // Partition 0: the rest follow.
    k.ok(&[
        "patch",
        "sts",
        "db",
        "-p",
        r#"{"spec":{"updateStrategy":{"rollingUpdate":{"partition":0}}}}"#,
    ]);
    let out = k.ok(&["rollout", "status", "sts/db", "--timeout=60s"]);
    assert!(
        out.contains("partitioned roll out complete: 4 new pods have been updated"),
        "{out}"
    );
    env.pods_become("app=db", |a| {
        a.len() == 4 && a.iter().all(|p| image(p) == "busybox:v2" && ready(p))
    })
    .await;

    // History and undo: back to v1, as revision 3.
    let revs = k.json(&["get", "controllerrevisions", "-l", "app=db"]);
    assert_eq!(revs["items"].as_array().unwrap().len(), 2, "{revs:#}");
    let table = k.ok(&["get", "controllerrevisions"]);
    let head: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(head, ["NAME", "CONTROLLER", "REVISION", "AGE"]);
    assert!(table.contains("statefulset.apps/db"), "{table}");
    let hist = k.ok(&["rollout", "history", "sts/db"]);
    assert!(hist.contains("1 ") && hist.contains("2 "), "{hist}");
    let r1 = k.ok(&["rollout", "history", "sts/db", "--revision=1"]);
    assert!(r1.contains("busybox:v1"), "{r1}");
    k.ok(&["rollout", "undo", "sts/db"]);
    k.ok(&["rollout", "status", "sts/db", "--timeout=60s"]);
    env.pods_become("app=db", |a| {
        a.len() == 4 && a.iter().all(|p| image(p) == "busybox:v1" && ready(p))
    })
    .await;
    let hist = k.ok(&["rollout", "history", "sts/db"]);
    assert!(
        hist.contains("2 ") && hist.contains("3 ") && !hist.contains("\n1 "),
        "{hist}"
    );

    // OnDelete: a new template waits for a pod to be deleted.
    k.ok(&[
        "patch",
        "sts",
        "db",
        "--type=merge",
        "-p",
        r#"{"spec":{"updateStrategy":{"type":"OnDelete","rollingUpdate":null}}}"#,
    ]);
    k.ok(&["set", "image", "sts/db", "c=busybox:v3"]);
    env.until(&["sts", "db"], |s| {
        s["status"]["observedGeneration"] == s["metadata"]["generation"]
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pods = active(&k.json(&["get", "pods", "-l", "app=db"]));
    assert!(
        pods.iter().all(|p| image(p) == "busybox:v1"),
        "OnDelete waits"
    );
    k.ok(&["delete", "pod", "db-3", "--wait=false"]);
    env.pods_become("app=db", |a| {
        a.len() == 4
            && image(&a[3]) == "busybox:v3"
            && a[..3].iter().all(|p| image(p) == "busybox:v1")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemonset_rollout_history_and_undo() {
    let env = Env::start(2).await;
    let k = env.kubectl();
    let ds = r#"
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec: {containers: [{name: c, image: "agent:v1"}]}
"#;
    k.ok_input(&["apply", "-f", "-"], ds);
    k.ok(&["rollout", "status", "ds/agent", "--timeout=60s"]);
    k.ok(&["set", "image", "ds/agent", "c=agent:v2"]);
    let out = k.ok(&["rollout", "status", "ds/agent", "--timeout=60s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
    let revs = env
        .until(&["controllerrevisions", "-l", "app=agent"], |v| {
            v["items"].as_array().is_some_and(|a| a.len() == 2)
        })
        .await;
    let pods = env
        .pods_become("app=agent", |a| {
            a.len() == 2 && a.iter().all(|p| image(p) == "agent:v2")
        })
        .await;
    // Pods carry the revision's hash; the revision is named DS-HASH.
    let hash = pods[0]["metadata"]["labels"]["controller-revision-hash"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(revs["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["metadata"]["name"] == format!("agent-{hash}") && r["revision"] == 2));
    let hist = k.ok(&["rollout", "history", "ds/agent"]);
    assert!(hist.contains("1 ") && hist.contains("2 "), "{hist}");
    k.ok(&["rollout", "undo", "ds/agent", "--to-revision=1"]);
    k.ok(&["rollout", "status", "ds/agent", "--timeout=60s"]);
    env.pods_become("app=agent", |a| {
        a.len() == 2 && a.iter().all(|p| image(p) == "agent:v1")
    })
    .await;
    let hist = k.ok(&["rollout", "history", "ds/agent"]);
    assert!(hist.contains("2 ") && hist.contains("3 "), "{hist}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_statefulsets_are_refused_with_kubes_words() {
    let c = Cluster::start().await.unwrap();
    let k = c.kubectl();
    let err = fails_input(
        &k,
        &["apply", "-f", "-"],
        &sts("bad", "").replace("matchLabels: {app: bad}}", "matchLabels: {app: other}}"),
    );
    assert!(
        err.contains("spec.template.metadata.labels: Invalid value: ")
            && err.contains("`selector` does not match template `labels`"),
        "{err}"
    );
    assert!(
        err.contains("The StatefulSet \"bad\" is invalid: "),
        "{err}"
    );
    let err = fails_input(
        &k,
        &["apply", "-f", "-"],
        &sts("bad", "  podManagementPolicy: Sometimes\n"),
    );
    assert!(err.contains("spec.podManagementPolicy: Invalid value: \"Sometimes\": must be 'OrderedReady' or 'Parallel'"), "{err}");

    k.ok_input(&["apply", "-f", "-"], &sts("web", CLAIMS));
    let err = k.fails(&[
        "patch",
        "sts",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"serviceName":"other"}}"#,
    ]);
    assert!(err.contains("spec: Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden"), "{err}");
    // The status code itself: 422 Invalid.
    let http = c.api.client().unwrap();
    let resp = http
        .patch(
            c.api
                .url("/apis/apps/v1/namespaces/default/statefulsets/web"),
        )
        .header("Content-Type", "application/merge-patch+json")
        .body(r#"{"spec":{"volumeClaimTemplates":[]}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 422);
    let st: Value = resp.json().await.unwrap();
    assert_eq!(st["reason"], "Invalid");
    assert_eq!(st["details"]["causes"][0]["field"], "spec");
    // A revision's data never changes.
    k.ok_input(
        &["apply", "-f", "-"],
        "apiVersion: apps/v1\nkind: ControllerRevision\nmetadata: {name: r1}\nrevision: 1\ndata: {spec: {a: 1}}\n",
    );
    let err = k.fails(&[
        "patch",
        "controllerrevision",
        "r1",
        "--type=merge",
        "-p",
        r#"{"data":{"spec":{"a":2}}}"#,
    ]);
    assert!(
        err.contains("data: Invalid value") || err.contains("field is immutable"),
        "{err}"
    );
    let err = fails_input(&k,
        &["apply", "-f", "-"],
        "apiVersion: apps/v1\nkind: ControllerRevision\nmetadata: {name: r2}\nrevision: -1\ndata: {}\n",
    );
    assert!(
        err.contains("revision: Invalid value: -1: must be greater than or equal to 0"),
        "{err}"
    );
    // kubectl explain knows the type.
    let ex = k.ok(&["explain", "statefulset.spec.podManagementPolicy"]);
    assert!(ex.contains("podManagementPolicy"), "{ex}");
}

/// On a real node, `OrderedReady` starts each pod only once the one before is Ready: the
/// readiness probe passes a few seconds after each container starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_ready_waits_for_readiness_on_a_real_node() {
    let env = Env::start(0).await;
    let node = Node::start(&env.c.api.kubeconfig, "node-a", &[]).unwrap();
    let k = env.kubectl();
    let image = node.images.busybox.clone();
    let yaml = format!(
        r#"
apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: slow}}
spec:
  serviceName: slow
  replicas: 2
  selector: {{matchLabels: {{app: slow}}}}
  template:
    metadata: {{labels: {{app: slow}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: c
        image: "{image}"
        command: [sh, -c, "sleep 2; touch /tmp/ready; exec sleep 3600"]
        readinessProbe:
          exec: {{command: [cat, /tmp/ready]}}
          periodSeconds: 1
"#
    );
    k.ok_input(&["apply", "-f", "-"], &yaml);
    // While slow-0 runs but is not Ready yet, slow-1 does not exist.
    let first = env
        .until(&["pod", "slow-0"], |p| p["status"]["phase"] == "Running")
        .await;
    if !ready(&first) {
        assert!(
            !k.run(&["get", "pod", "slow-1"]).status.success(),
            "slow-1 started before slow-0 was Ready"
        );
    }
    let pods = env
        .pods_become("app=slow", |a| a.len() == 2 && a.iter().all(ready))
        .await;
    let ready_at = pods[0]["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap()["lastTransitionTime"]
        .as_str()
        .unwrap()
        .to_string();
    let created = pods[1]["metadata"]["creationTimestamp"].as_str().unwrap();
    assert!(
        created >= ready_at.as_str(),
        "slow-1 created at {created}, slow-0 Ready at {ready_at}; kubelet log:\n{}",
        node.kubelet.log()
    );
    assert_eq!(pods[1]["spec"]["hostname"], "slow-1");
    // Scale down removes the highest ordinal first.
    k.ok(&["scale", "sts", "slow", "--replicas=1"]);
    let left = env.pods_become("app=slow", |a| a.len() == 1).await;
    assert_eq!(names(&left), ["slow-0"]);
    k.ok(&["delete", "sts", "slow"]);
    env.pods_become("app=slow", |a| a.is_empty()).await;
}
