//! `skiff-controller-manager` against a real etcd, API server and scheduler, with hollow nodes
//! standing in for kubelets (pods bound to them turn Running and Ready): ReplicaSets and
//! Deployments driven with the real `kubectl`.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use skiff_client::reflector::Change;
use skiff_client::{watcher, Api, Client};
use skiff_e2e::{eventually, hollow, Cluster, Daemon, Kubectl};
use tokio_util::sync::CancellationToken;

/// A control plane with a scheduler, a controller manager and hollow nodes.
struct Env {
    cm: Daemon,
    _scheduler: Daemon,
    stop: CancellationToken,
    client: Client,
    c: Cluster,
}

impl Env {
    async fn start(nodes: usize) -> Env {
        Env::start_with(
            nodes,
            &["--port=0", "--leader-elect=false", "--kube-api-qps=0"],
        )
        .await
    }

    async fn start_with(nodes: usize, cm_args: &[&str]) -> Env {
        let c = Cluster::start().await.unwrap();
        let client =
            Client::new(skiff_client::Config::from_kubeconfig(&c.api.kubeconfig).unwrap()).unwrap();
        let spec = hollow::Spec {
            count: nodes,
            lease_renew: Duration::from_secs(1),
            ..hollow::Spec::default()
        };
        hollow::register(&client, &spec).await.unwrap();
        let stop = CancellationToken::new();
        tokio::spawn(hollow::run_pods(client.clone(), spec.clone(), stop.clone()));
        tokio::spawn(hollow::renew_leases(client.clone(), spec, stop.clone()));
        let scheduler = Daemon::start(
            "skiff-scheduler",
            &c.api,
            &["--port=0", "--leader-elect=false"],
        )
        .unwrap();
        let cm = Daemon::start("skiff-controller-manager", &c.api, cm_args).unwrap();
        Env {
            cm,
            _scheduler: scheduler,
            stop,
            client,
            c,
        }
    }

    fn kubectl(&self) -> Kubectl {
        self.c.kubectl()
    }

    /// Waits until `f` holds for the JSON `kubectl get -o json` gives for `what`.
    async fn until(
        &self,
        within: Duration,
        what: &[&str],
        f: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
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
}

impl Drop for Env {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn items(v: &serde_json::Value) -> Vec<serde_json::Value> {
    v["items"].as_array().cloned().unwrap_or_default()
}

fn active(v: &serde_json::Value) -> Vec<serde_json::Value> {
    items(v)
        .into_iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .collect()
}

fn ready(p: &serde_json::Value) -> bool {
    p["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

fn owner(p: &serde_json::Value) -> String {
    p["metadata"]["ownerReferences"][0]["name"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

const RS: &str = r#"
apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: web}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: c, image: busybox}]}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicaset_keeps_its_replicas_adopts_orphans_and_releases_strays() {
    let env = Env::start(3).await;
    let k = env.kubectl();
    k.ok_input(&["apply", "-f", "-"], RS);
    let pods = env
        .until(Duration::from_secs(30), &["pods", "-l", "app=web"], |v| {
            let a = active(v);
            a.len() == 3 && a.iter().all(ready)
        })
        .await;
    for p in items(&pods) {
        assert_eq!(owner(&p), "web");
        assert_eq!(p["metadata"]["ownerReferences"][0]["controller"], true);
        assert!(p["metadata"]["name"].as_str().unwrap().starts_with("web-"));
    }
    env.until(Duration::from_secs(30), &["rs", "web"], |rs| {
        rs["status"]["replicas"] == 3
            && rs["status"]["readyReplicas"] == 3
            && rs["status"]["availableReplicas"] == 3
            && rs["status"]["fullyLabeledReplicas"] == 3
            && rs["status"]["observedGeneration"] == 1
    })
    .await;

    // A deleted pod is replaced.
    let victim = items(&pods)[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    k.ok(&["delete", "pod", &victim, "--wait=false"]);
    env.until(Duration::from_secs(30), &["pods", "-l", "app=web"], |v| {
        let a = active(v);
        a.len() == 3 && a.iter().all(|p| p["metadata"]["name"] != victim.as_str())
    })
    .await;

    // An orphan that matches is adopted, and then one pod too many is deleted.
    k.ok_input(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Pod\nmetadata: {name: stray, labels: {app: web}}\nspec: {containers: [{name: c, image: busybox}]}\n",
    );
    env.until(Duration::from_secs(30), &["pods", "-l", "app=web"], |v| {
        let a = active(v);
        a.len() == 3 && a.iter().all(|p| owner(p) == "web")
    })
    .await;

    // A pod whose labels stop matching is released (no owner) and replaced.
    let pods = k.json(&["get", "pods", "-l", "app=web"]);
    let released = active(&pods)[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    k.ok(&["label", "pod", &released, "app=other", "--overwrite"]);
    let p = env
        .until(Duration::from_secs(30), &["pod", &released], |p| {
            p["metadata"]["ownerReferences"].is_null()
                || p["metadata"]["ownerReferences"]
                    .as_array()
                    .is_some_and(|a| a.is_empty())
        })
        .await;
    assert_eq!(p["metadata"]["labels"]["app"], "other");
    env.until(Duration::from_secs(30), &["pods", "-l", "app=web"], |v| {
        active(v).len() == 3
    })
    .await;

    // kubectl scale goes through the scale subresource, both ways.
    k.ok(&["scale", "rs", "web", "--replicas=5"]);
    env.until(Duration::from_secs(30), &["rs", "web"], |rs| {
        rs["status"]["readyReplicas"] == 5 && rs["status"]["observedGeneration"] == 2
    })
    .await;
    k.ok(&["scale", "rs", "web", "--replicas=1"]);
    env.until(Duration::from_secs(30), &["pods", "-l", "app=web"], |v| {
        active(v).len() == 1
    })
    .await;
    env.until(Duration::from_secs(30), &["rs", "web"], |rs| {
        rs["status"]["replicas"] == 1 && rs["status"]["readyReplicas"] == 1
    })
    .await;

    // What happened is in the events kubectl describe shows.
    let described = k.ok(&["describe", "rs", "web"]);
    assert!(described.contains("SuccessfulCreate"), "{described}");
    assert!(described.contains("SuccessfulDelete"), "{described}");

    // A template the selector does not match is refused, and the stored set is unchanged.
    let bad = RS.replace(
        "labels: {app: web}}\n    spec",
        "labels: {app: db}}\n    spec",
    );
    assert_ne!(bad, RS);
    let r = k.run_with_input(&["replace", "-f", "-"], &bad);
    assert!(!r.status.success(), "{}", r.stdout);
    assert!(
        r.stderr
            .contains("`selector` does not match template `labels`"),
        "{}",
        r.stderr
    );
    let rs = k.json(&["get", "rs", "web"]);
    assert_eq!(rs["spec"]["template"]["metadata"]["labels"]["app"], "web");
    assert_eq!(rs["spec"]["replicas"], 1);
}

/// Watches the pods labelled `selector` and, after every change, records what `measure`
/// says of all of them; `stop()` returns the records.
struct Watch {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Vec<usize>>,
}

impl Watch {
    fn start(
        client: &Client,
        selector: &str,
        measure: fn(&[std::sync::Arc<Pod>]) -> usize,
    ) -> Watch {
        let stop = CancellationToken::new();
        let informer = skiff_client::informer::Informer::spawn(
            Api::<Pod>::namespaced(client.clone(), "default"),
            watcher::Config::default().labels(selector),
            Default::default(),
            stop.clone(),
        );
        let token = stop.clone();
        let task = tokio::spawn(async move {
            let store = informer.store();
            let changes = informer.subscribe();
            futures::pin_mut!(changes);
            store.wait_until_ready().await;
            let mut seen = vec![measure(&store.state())];
            loop {
                tokio::select! {
                    _ = token.cancelled() => return seen,
                    c = changes.next() => match c {
                        Some(Change::Applied(_) | Change::Deleted(_) | Change::Resynced) => {
                            seen.push(measure(&store.state()));
                        }
                        None => return seen,
                    }
                }
            }
        });
        Watch { stop, task }
    }

    async fn stop(self) -> Vec<usize> {
        self.stop.cancel();
        self.task.await.unwrap()
    }
}

fn ready_serving(pods: &[std::sync::Arc<Pod>]) -> usize {
    pods.iter()
        .filter(|p| {
            p.metadata.deletion_timestamp.is_none()
                && p.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .count()
}

/// How many pod templates (images) exist at once among pods not finished, terminating ones
/// included.
fn templates_alive(pods: &[std::sync::Arc<Pod>]) -> usize {
    pods.iter()
        .filter_map(|p| p.spec.as_ref()?.containers.first()?.image.clone())
        .collect::<BTreeSet<_>>()
        .len()
}

const DEPLOY: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 4
  selector: {matchLabels: {app: web}}
  strategy: {type: RollingUpdate, rollingUpdate: {maxSurge: 1, maxUnavailable: 1}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: c, image: "busybox:v1"}]}
"#;

fn rs_of(env: &Env, selector: &str) -> Vec<serde_json::Value> {
    items(&env.kubectl().json(&["get", "rs", "-l", selector]))
}

fn image_of(rs: &serde_json::Value) -> String {
    rs["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_rolls_out_rolls_back_scales_pauses_and_restarts() {
    let env = Env::start(4).await;
    let k = env.kubectl();
    k.ok_input(&["apply", "-f", "-"], DEPLOY);
    let out = k.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
    let rs = rs_of(&env, "app=web");
    assert_eq!(rs.len(), 1);
    assert_eq!(
        rs[0]["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "1"
    );
    let hash = rs[0]["metadata"]["labels"]["pod-template-hash"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(rs[0]["metadata"]["name"], format!("web-{hash}"));
    let d = k.json(&["get", "deployment", "web"]);
    assert_eq!(d["status"]["availableReplicas"], 4);
    assert_eq!(d["status"]["updatedReplicas"], 4);
    let conds = d["status"]["conditions"].as_array().unwrap();
    assert!(conds
        .iter()
        .any(|c| c["type"] == "Available" && c["status"] == "True"));
    assert!(conds
        .iter()
        .any(|c| c["type"] == "Progressing" && c["reason"] == "NewReplicaSetAvailable"));

    // A rolling update never has fewer than replicas - maxUnavailable ready pods.
    let watch = Watch::start(&env.client, "app=web", ready_serving);
    k.ok(&["set", "image", "deployment/web", "c=busybox:v2"]);
    let out = k.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
    let seen = watch.stop().await;
    let low = seen.iter().copied().min().unwrap();
    assert!(
        low >= 3,
        "ready pods fell to {low} during the rollout: {seen:?}"
    );
    assert!(seen.len() > 4, "the watch saw the rollout: {seen:?}");
    let pods = env
        .until(Duration::from_secs(30), &["pods", "-l", "app=web"], |v| {
            items(v).len() == 4
        })
        .await;
    assert!(items(&pods)
        .iter()
        .all(|p| p["spec"]["containers"][0]["image"] == "busybox:v2"));
    let rs = rs_of(&env, "app=web");
    assert_eq!(rs.len(), 2);
    let described = k.ok(&["describe", "deployment", "web"]);
    assert!(described.contains("ScalingReplicaSet"), "{described}");
    let history = k.ok(&["rollout", "history", "deployment/web"]);
    assert!(history.contains('1') && history.contains('2'), "{history}");

    // Undo goes back to the first template, whose ReplicaSet becomes revision 3.
    k.ok(&["rollout", "undo", "deployment/web"]);
    k.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    let rs = rs_of(&env, "app=web");
    assert_eq!(
        rs.len(),
        2,
        "undo reuses the old ReplicaSet: {:#}\n{:#}",
        serde_json::Value::Array(rs.clone()),
        k.json(&["get", "deployment", "web"])
    );
    let v1 = rs.iter().find(|r| image_of(r) == "busybox:v1").unwrap();
    assert_eq!(
        v1["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "3"
    );
    assert_eq!(
        v1["metadata"]["annotations"]["deployment.kubernetes.io/revision-history"],
        "1"
    );
    assert_eq!(v1["spec"]["replicas"], 4);
    let d = k.json(&["get", "deployment", "web"]);
    assert_eq!(
        d["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "3"
    );

    // kubectl scale.
    k.ok(&["scale", "deployment", "web", "--replicas=6"]);
    env.until(Duration::from_secs(30), &["deployment", "web"], |d| {
        d["status"]["availableReplicas"] == 6 && d["status"]["updatedReplicas"] == 6
    })
    .await;

    // Paused: template changes wait; resumed: they roll out.
    k.ok(&["rollout", "pause", "deployment/web"]);
    k.ok(&["set", "image", "deployment/web", "c=busybox:v3"]);
    env.until(Duration::from_secs(30), &["deployment", "web"], |d| {
        d["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Progressing" && c["reason"] == "DeploymentPaused")
        })
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(rs_of(&env, "app=web")
        .iter()
        .all(|r| image_of(r) != "busybox:v3"));
    k.ok(&["rollout", "resume", "deployment/web"]);
    k.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    assert!(rs_of(&env, "app=web")
        .iter()
        .any(|r| image_of(r) == "busybox:v3" && r["spec"]["replicas"] == 6));

    // restart: a new ReplicaSet with the restartedAt annotation replaces every pod.
    let before: BTreeSet<String> = items(&k.json(&["get", "pods", "-l", "app=web"]))
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    k.ok(&["rollout", "restart", "deployment/web"]);
    k.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    let pods = env
        .until(Duration::from_secs(30), &["pods", "-l", "app=web"], |v| {
            items(v).len() == 6
        })
        .await;
    assert!(items(&pods)
        .iter()
        .all(|p| !before.contains(p["metadata"]["name"].as_str().unwrap())));
    assert!(items(&pods).iter().all(|p| {
        p["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"].is_string()
    }));

    // revisionHistoryLimit prunes old, empty ReplicaSets.
    k.ok(&[
        "patch",
        "deployment",
        "web",
        "-p",
        r#"{"spec":{"revisionHistoryLimit":1}}"#,
    ]);
    env.until(Duration::from_secs(30), &["rs", "-l", "app=web"], |v| {
        items(v).len() == 2
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recreate_proportional_scaling_and_progress_deadline() {
    let env = Env::start(4).await;
    let k = env.kubectl();

    // Recreate: no new pod while an old one exists.
    k.ok_input(
        &["apply", "-f", "-"],
        &DEPLOY
            .replace("name: web", "name: re")
            .replace("app: web", "app: re")
            .replace(
                "{type: RollingUpdate, rollingUpdate: {maxSurge: 1, maxUnavailable: 1}}",
                "{type: Recreate}",
            ),
    );
    k.ok(&["rollout", "status", "deployment/re", "--timeout=60s"]);
    let watch = Watch::start(&env.client, "app=re", templates_alive);
    k.ok(&["set", "image", "deployment/re", "c=busybox:v2"]);
    k.ok(&["rollout", "status", "deployment/re", "--timeout=60s"]);
    env.until(Duration::from_secs(30), &["pods", "-l", "app=re"], |v| {
        items(v).len() == 4
            && items(v)
                .iter()
                .all(|p| p["spec"]["containers"][0]["image"] == "busybox:v2")
    })
    .await;
    let seen = watch.stop().await;
    assert!(
        seen.iter().all(|n| *n <= 1),
        "old and new pods together: {seen:?}"
    );

    // A rollout that cannot progress (its pods fit no node) runs into its deadline, and a
    // scale-up meanwhile is spread over both ReplicaSets in proportion.
    k.ok_input(
        &["apply", "-f", "-"],
        &DEPLOY
            .replace("name: web", "name: stuck")
            .replace("app: web", "app: stuck")
            .replace("replicas: 4", "replicas: 10\n  progressDeadlineSeconds: 3")
            .replace(
                "{maxSurge: 1, maxUnavailable: 1}",
                "{maxSurge: 3, maxUnavailable: 2}",
            ),
    );
    k.ok(&["rollout", "status", "deployment/stuck", "--timeout=60s"]);
    k.ok(&[
        "patch",
        "deployment",
        "stuck",
        "-p",
        r#"{"spec":{"template":{"spec":{"nodeSelector":{"nowhere":"true"}}}}}"#,
    ]);
    let r = k.run(&["rollout", "status", "deployment/stuck", "--timeout=60s"]);
    assert!(!r.status.success());
    assert!(
        r.stderr.contains("exceeded its progress deadline"),
        "{}",
        r.stderr
    );
    let d = k.json(&["get", "deployment", "stuck"]);
    let p = d["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Progressing")
        .unwrap()
        .clone();
    assert_eq!(
        (p["status"].as_str(), p["reason"].as_str()),
        (Some("False"), Some("ProgressDeadlineExceeded"))
    );
    let sizes = |env: &Env| -> (i64, i64) {
        let rs = rs_of(env, "app=stuck");
        let new = rs
            .iter()
            .find(|r| !r["spec"]["template"]["spec"]["nodeSelector"].is_null())
            .unwrap();
        let old = rs
            .iter()
            .find(|r| r["spec"]["template"]["spec"]["nodeSelector"].is_null())
            .unwrap();
        (
            old["spec"]["replicas"].as_i64().unwrap(),
            new["spec"]["replicas"].as_i64().unwrap(),
        )
    };
    let (old, new) = sizes(&env);
    // 13 pods at most (maxSurge 3), 8 available at least (maxUnavailable 2): the old set
    // gives up 2, the new one grows to what the surge leaves (as Kubernetes does).
    assert_eq!(
        (old, new),
        (8, 5),
        "10 replicas, maxSurge 3, maxUnavailable 2"
    );
    // 20 replicas + maxSurge 3 = 23 pods, shared 8:5 as the sets stood.
    k.ok(&["scale", "deployment", "stuck", "--replicas=20"]);
    let got = eventually(Duration::from_secs(30), || {
        let (o, n) = sizes(&env);
        (o + n == 23).then_some((o, n))
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "not scaled proportionally: {:?}\n{}",
            sizes(&env),
            env.cm.log()
        )
    });
    assert!(got.0 > old && got.1 > new, "both grow: {got:?}");
}

async fn http_status(addr: &str, path: &str) -> u16 {
    let _ = rustls::crypto::ring::default_provider().install_default();
    match reqwest::Client::new()
        .get(format!("http://{addr}{path}"))
        .send()
        .await
    {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_fails_over_without_duplicate_pods() {
    let (p1, p2) = (skiff_e2e::free_port(), skiff_e2e::free_port());
    let le = [
        "--leader-elect=true",
        "--leader-elect-lease-duration=4s",
        "--leader-elect-renew-deadline=3s",
        "--leader-elect-retry-period=500ms",
        "--kube-api-qps=0",
    ];
    let mut env = Env::start_with(
        3,
        &[&[format!("--port={p1}").as_str()][..], &le[..]].concat(),
    )
    .await;
    let (a1, a2) = (format!("127.0.0.1:{p1}"), format!("127.0.0.1:{p2}"));
    let mut ok = false;
    for _ in 0..100 {
        if http_status(&a1, "/readyz").await == 200 {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        ok,
        "the first controller manager never led:\n{}",
        env.cm.log()
    );
    assert_eq!(http_status(&a1, "/healthz").await, 200);
    assert_eq!(http_status(&a1, "/metrics").await, 200);
    let mut second = Daemon::start(
        "skiff-controller-manager",
        &env.c.api,
        &[&[format!("--port={p2}").as_str()][..], &le[..]].concat(),
    )
    .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(http_status(&a2, "/healthz").await, 200);
    assert_eq!(http_status(&a2, "/readyz").await, 503, "only one leads");

    let k = env.kubectl();
    k.ok_input(&["apply", "-f", "-"], RS);
    env.until(Duration::from_secs(30), &["rs", "web"], |rs| {
        rs["status"]["readyReplicas"] == 3
    })
    .await;
    // The leader dies without a word; the other takes over within the lease.
    env.cm.kill();
    k.ok(&["scale", "rs", "web", "--replicas=6"]);
    let mut took_over = false;
    for _ in 0..200 {
        if http_status(&a2, "/readyz").await == 200 {
            took_over = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(took_over, "no fail-over:\n{}", second.log());
    env.until(Duration::from_secs(30), &["rs", "web"], |rs| {
        rs["status"]["readyReplicas"] == 6
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pods = k.json(&["get", "pods", "-l", "app=web"]);
    assert_eq!(items(&pods).len(), 6, "no duplicates: {pods:#}");

    // SIGTERM: a clean exit.
    let pid = second.pid().unwrap();
    second.stop();
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}/status")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/status"))
                .unwrap_or_default()
                .contains("State:\tZ")
    );
    assert!(second.log().contains("shutting down"), "{}", second.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_controllers_are_refused_by_name() {
    let c = Cluster::start().await.unwrap();
    let bad = Daemon::start(
        "skiff-controller-manager",
        &c.api,
        &["--port=0", "--controllers=replicaset,nosuch"],
    )
    .unwrap();
    let said = eventually(Duration::from_secs(10), || {
        bad.log().contains("unknown controller").then_some(())
    })
    .await;
    assert!(said.is_some(), "{}", bad.log());
    assert!(bad.log().contains("\"nosuch\""), "{}", bad.log());
}

fn deployment(name: &str, ns: &str) -> String {
    DEPLOY
        .replace("name: web}", &format!("name: {name}, namespace: {ns}}}"))
        .replace("app: web", &format!("app: {name}"))
        .replace("replicas: 4", "replicas: 3")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_collection_namespaces_and_service_accounts() {
    let env = Env::start(3).await;
    let k = env.kubectl();

    // Every namespace gets a default ServiceAccount, again if it is deleted.
    k.ok(&["create", "namespace", "team"]);
    env.until(
        Duration::from_secs(30),
        &["serviceaccount", "default", "-n", "team"],
        |_| true,
    )
    .await;
    k.ok(&["delete", "serviceaccount", "default", "-n", "team"]);
    env.until(
        Duration::from_secs(30),
        &["serviceaccount", "default", "-n", "team"],
        |sa| sa["metadata"]["deletionTimestamp"].is_null(),
    )
    .await;

    // Background (kubectl's default): the Deployment goes, then its ReplicaSet and pods.
    for d in ["bg", "fg", "orph"] {
        k.ok_input(&["apply", "-f", "-"], &deployment(d, "default"));
    }
    for d in ["bg", "fg", "orph"] {
        k.ok(&[
            "rollout",
            "status",
            &format!("deployment/{d}"),
            "--timeout=60s",
        ]);
    }
    k.ok(&["delete", "deployment", "bg"]);
    env.until(Duration::from_secs(30), &["rs,pods", "-l", "app=bg"], |v| {
        items(v).is_empty()
    })
    .await;

    // Foreground: the Deployment stays, deleting, until its dependents are gone (a finalizer
    // on one pod holds them here for a while).
    let held = active(&k.json(&["get", "pods", "-l", "app=fg"]))[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    k.ok(&[
        "patch",
        "pod",
        &held,
        "-p",
        r#"{"metadata":{"finalizers":["example.com/hold"]}}"#,
    ]);
    k.ok(&[
        "delete",
        "deployment",
        "fg",
        "--cascade=foreground",
        "--wait=false",
    ]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let d = k.json(&["get", "deployment", "fg"]);
    assert!(d["metadata"]["deletionTimestamp"].is_string(), "{d:#}");
    assert!(d["metadata"]["finalizers"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f == "foregroundDeletion"));
    let rs = rs_of(&env, "app=fg");
    assert_eq!(rs.len(), 1, "the ReplicaSet waits for its pod");
    assert!(rs[0]["metadata"]["deletionTimestamp"].is_string());
    let pods = items(&k.json(&["get", "pods", "-l", "app=fg"]));
    assert_eq!(pods.len(), 1, "only the held pod is left: {pods:?}");
    k.ok(&[
        "patch",
        "pod",
        &held,
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);
    env.until(
        Duration::from_secs(30),
        &["deployments,rs,pods", "-l", "app=fg"],
        |v| items(v).is_empty(),
    )
    .await;
    let r = k.run(&["get", "deployment", "fg"]);
    assert!(r.stderr.contains("NotFound"), "{}", r.stderr);

    // Orphan: the ReplicaSet and pods stay, without an owner.
    k.ok(&["delete", "deployment", "orph", "--cascade=orphan"]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rs = rs_of(&env, "app=orph");
    assert_eq!(
        rs.len(),
        1,
        "{}\n{}",
        k.ok(&["get", "rs,pods", "-A", "--show-labels"]),
        env.cm.log()
    );
    assert!(
        rs[0]["metadata"]["ownerReferences"]
            .as_array()
            .is_none_or(|a| a.is_empty()),
        "{:#}",
        rs[0]
    );
    assert_eq!(active(&k.json(&["get", "pods", "-l", "app=orph"])).len(), 3);

    // An object whose only owner never existed is collected; a reference to a missing owner
    // beside a live one is dropped.
    let owner = k.json(&["get", "rs", "-l", "app=orph"])["items"][0].clone();
    let live = format!(
        "{{apiVersion: apps/v1, kind: ReplicaSet, name: {}, uid: {}}}",
        owner["metadata"]["name"].as_str().unwrap(),
        owner["metadata"]["uid"].as_str().unwrap()
    );
    let ghost =
        "{apiVersion: v1, kind: ConfigMap, name: ghost, uid: 00000000-0000-0000-0000-000000000000}";
    k.ok_input(
        &["apply", "-f", "-"],
        &format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: lonely, ownerReferences: [{ghost}]}}\n---\n\
             apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: shared, ownerReferences: [{ghost}, {live}]}}\n"
        ),
    );
    env.until(Duration::from_secs(30), &["configmap", "shared"], |cm| {
        cm["metadata"]["ownerReferences"]
            .as_array()
            .is_some_and(|a| a.len() == 1 && a[0]["kind"] == "ReplicaSet")
    })
    .await;
    let gone = eventually(Duration::from_secs(30), || {
        k.run(&["get", "configmap", "lonely"])
            .stderr
            .contains("NotFound")
            .then_some(())
    })
    .await;
    assert!(
        gone.is_some(),
        "the orphaned ConfigMap stayed:\n{}",
        env.cm.log()
    );

    // Deleting a namespace empties it, then removes it; kubectl waits for that.
    k.ok_input(&["apply", "-f", "-"], &deployment("app", "team"));
    k.ok(&[
        "create",
        "configmap",
        "settings",
        "-n",
        "team",
        "--from-literal=a=b",
    ]);
    k.ok(&[
        "create",
        "secret",
        "generic",
        "token",
        "-n",
        "team",
        "--from-literal=t=s",
    ]);
    k.ok(&[
        "create",
        "service",
        "clusterip",
        "app",
        "-n",
        "team",
        "--tcp=80:8080",
    ]);
    k.ok(&[
        "rollout",
        "status",
        "deployment/app",
        "-n",
        "team",
        "--timeout=60s",
    ]);
    let out = k.ok(&["delete", "namespace", "team", "--timeout=60s"]);
    assert!(out.contains("deleted"), "{out}");
    let r = k.run(&["get", "namespace", "team"]);
    assert!(r.stderr.contains("NotFound"), "{}", r.stderr);
    // Re-created, it starts empty.
    k.ok(&["create", "namespace", "team"]);
    let left = k.json(&[
        "get",
        "deployments,rs,pods,configmaps,secrets,services",
        "-n",
        "team",
    ]);
    let names: Vec<_> = items(&left)
        .iter()
        .map(|o| o["metadata"]["name"].clone())
        .collect();
    assert!(
        names.iter().all(|n| n
            .as_str()
            .is_some_and(|n| n.starts_with("kube-root-ca") || n == "default")),
        "{names:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_slices_and_endpoints_follow_the_pods() {
    let env = Env::start(3).await;
    let k = env.kubectl();
    k.ok_input(
        &["apply", "-f", "-"],
        &deployment("web", "default").replace(
            "containers: [{name: c, image: \"busybox:v1\"}]",
            "containers: [{name: c, image: \"busybox:v1\", ports: [{name: http, containerPort: 8080}]}]",
        ),
    );
    k.ok_input(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  selector: {app: web}\n  ports: [{port: 80, targetPort: http}]\n",
    );
    k.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    let slices = env
        .until(
            Duration::from_secs(30),
            &["endpointslices", "-l", "kubernetes.io/service-name=web"],
            |v| {
                let i = items(v);
                i.len() == 1
                    && i[0]["endpoints"].as_array().is_some_and(|e| {
                        e.len() == 3 && e.iter().all(|e| e["conditions"]["ready"] == true)
                    })
            },
        )
        .await;
    let s = &items(&slices)[0];
    assert_eq!(s["addressType"], "IPv4");
    assert_eq!(
        s["ports"][0]["port"], 8080,
        "the named target port is resolved: {s:#}"
    );
    assert_eq!(s["ports"][0]["protocol"], "TCP");
    assert_eq!(
        s["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"],
        "endpointslice-controller.k8s.io"
    );
    assert_eq!(s["metadata"]["ownerReferences"][0]["kind"], "Service");
    for e in s["endpoints"].as_array().unwrap() {
        assert!(e["nodeName"].as_str().unwrap().starts_with("hollow-"));
        assert!(e["zone"].as_str().unwrap().starts_with("zone-"));
        assert_eq!(e["targetRef"]["kind"], "Pod");
        assert_eq!(e["conditions"]["terminating"], false);
    }
    let ep = env
        .until(Duration::from_secs(30), &["endpoints", "web"], |e| {
            e["subsets"][0]["addresses"]
                .as_array()
                .is_some_and(|a| a.len() == 3)
        })
        .await;
    assert_eq!(ep["subsets"][0]["ports"][0]["port"], 8080);

    // A pod whose named port is another number lands in a slice of its own.
    k.ok_input(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Pod\nmetadata: {name: odd, labels: {app: web}}\nspec:\n  containers: [{name: c, image: busybox, ports: [{name: http, containerPort: 9090}]}]\n",
    );
    env.until(
        Duration::from_secs(30),
        &["endpointslices", "-l", "kubernetes.io/service-name=web"],
        |v| {
            let ports: BTreeSet<i64> = items(v)
                .iter()
                .filter_map(|s| s["ports"][0]["port"].as_i64())
                .collect();
            ports == BTreeSet::from([8080, 9090])
        },
    )
    .await;
    k.ok(&["delete", "pod", "odd"]);

    // Scaling down takes endpoints away; a pod that stops matching leaves.
    k.ok(&["scale", "deployment", "web", "--replicas=1"]);
    env.until(
        Duration::from_secs(30),
        &["endpointslices", "-l", "kubernetes.io/service-name=web"],
        |v| {
            let i = items(v);
            i.len() == 1 && i[0]["endpoints"].as_array().is_some_and(|e| e.len() == 1)
        },
    )
    .await;
    env.until(Duration::from_secs(30), &["endpoints", "web"], |e| {
        e["subsets"][0]["addresses"]
            .as_array()
            .is_some_and(|a| a.len() == 1)
    })
    .await;

    // A service without a selector is left to its user.
    k.ok_input(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Service\nmetadata: {name: manual}\nspec:\n  ports: [{port: 80}]\n",
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(items(&k.json(&[
        "get",
        "endpointslices",
        "-l",
        "kubernetes.io/service-name=manual"
    ]))
    .is_empty());

    // Deleting the service removes its slices and its Endpoints.
    k.ok(&["delete", "service", "web"]);
    env.until(
        Duration::from_secs(30),
        &["endpointslices", "-l", "kubernetes.io/service-name=web"],
        |v| items(v).is_empty(),
    )
    .await;
    let gone = eventually(Duration::from_secs(30), || {
        k.run(&["get", "endpoints", "web"])
            .stderr
            .contains("NotFound")
            .then_some(())
    })
    .await;
    assert!(gone.is_some(), "{}", env.cm.log());
}

/// Registers `count` hollow nodes named `<prefix>-N` that renew their leases and run their
/// pods until `stop`.
async fn hollow_nodes(
    client: &Client,
    prefix: &str,
    count: usize,
    stop: &CancellationToken,
) -> hollow::Spec {
    let spec = hollow::Spec {
        count,
        prefix: prefix.into(),
        lease_renew: Duration::from_secs(1),
        ..hollow::Spec::default()
    };
    hollow::register(client, &spec).await.unwrap();
    tokio::spawn(hollow::run_pods(client.clone(), spec.clone(), stop.clone()));
    tokio::spawn(hollow::renew_leases(
        client.clone(),
        spec.clone(),
        stop.clone(),
    ));
    spec
}

const SPREAD: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: spread}
spec:
  replicas: 4
  selector: {matchLabels: {app: spread}}
  template:
    metadata: {labels: {app: spread}}
    spec:
      containers: [{name: c, image: busybox}]
      affinity:
        podAntiAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
          - {labelSelector: {matchLabels: {app: spread}}, topologyKey: kubernetes.io/hostname}
      tolerations:
      - {key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 2}
"#;

fn node_of(p: &serde_json::Value) -> String {
    p["spec"]["nodeName"].as_str().unwrap_or("").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_nodes_are_tainted_their_pods_replaced_and_cidrs_allocated() {
    let env = Env::start_with(
        3,
        &[
            "--port=0",
            "--leader-elect=false",
            "--kube-api-qps=0",
            "--allocate-node-cidrs",
            "--cluster-cidr=10.244.0.0/16",
            "--node-cidr-mask-size=24",
            "--node-monitor-grace-period=3s",
            "--node-monitor-period=500ms",
        ],
    )
    .await;
    let k = env.kubectl();
    let lost = CancellationToken::new();
    let lost_spec = hollow_nodes(&env.client, "lost", 1, &lost).await;

    // Every node gets its own /24 of the cluster CIDR.
    let nodes = env
        .until(Duration::from_secs(30), &["nodes"], |v| {
            let i = items(v);
            i.len() == 4 && i.iter().all(|n| n["spec"]["podCIDR"].is_string())
        })
        .await;
    let cidrs: BTreeSet<String> = items(&nodes)
        .iter()
        .map(|n| n["spec"]["podCIDR"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(cidrs.len(), 4, "distinct: {cidrs:?}");
    assert!(
        cidrs
            .iter()
            .all(|c| c.starts_with("10.244.") && c.ends_with(".0/24")),
        "{cidrs:?}"
    );
    assert!(items(&nodes)
        .iter()
        .all(|n| n["spec"]["podCIDRs"][0] == n["spec"]["podCIDR"]));

    // One pod per node, one of them on the node about to be lost.
    k.ok_input(&["apply", "-f", "-"], SPREAD);
    k.ok(&["rollout", "status", "deployment/spread", "--timeout=60s"]);
    let pods = k.json(&["get", "pods", "-l", "app=spread"]);
    let victim = items(&pods)
        .into_iter()
        .find(|p| node_of(p) == "lost-0")
        .expect("a pod on lost-0")["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let spare_stop = CancellationToken::new();
    hollow_nodes(&env.client, "spare", 1, &spare_stop).await;
    let spare = env
        .until(Duration::from_secs(30), &["node", "spare-0"], |n| {
            n["spec"]["podCIDR"].is_string()
        })
        .await;
    let spare_cidr = spare["spec"]["podCIDR"].as_str().unwrap().to_string();
    assert!(!cidrs.contains(&spare_cidr));

    // The node stops renewing its lease: Unknown, tainted, its pod evicted after its 2 s
    // toleration and replaced on the spare node.
    lost.cancel();
    let n = env
        .until(Duration::from_secs(30), &["node", "lost-0"], |n| {
            let taints = n["spec"]["taints"].as_array().cloned().unwrap_or_default();
            n["status"]["conditions"].as_array().is_some_and(|cs| {
                cs.iter().any(|c| {
                    c["type"] == "Ready"
                        && c["status"] == "Unknown"
                        && c["reason"] == "NodeStatusUnknown"
                })
            }) && ["NoSchedule", "NoExecute"].iter().all(|e| {
                taints
                    .iter()
                    .any(|t| t["key"] == "node.kubernetes.io/unreachable" && t["effect"] == *e)
            })
        })
        .await;
    assert!(n["spec"]["taints"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["timeAdded"].is_string()));
    env.until(Duration::from_secs(30), &["pod", &victim], |p| {
        p["metadata"]["deletionTimestamp"].is_string()
    })
    .await;
    env.until(
        Duration::from_secs(60),
        &["pods", "-l", "app=spread"],
        |v| {
            let a = active(v);
            a.len() == 4 && a.iter().all(ready) && a.iter().any(|p| node_of(p) == "spare-0")
        },
    )
    .await;
    let described = k.ok(&["describe", "pod", &victim]);
    assert!(described.contains("TaintManagerEviction"), "{described}");

    // It comes back: ready again, untainted, and its kubelet finishes the evicted pod.
    let back = CancellationToken::new();
    hollow_nodes(&env.client, "lost", 1, &back).await;
    let _ = lost_spec;
    env.until(Duration::from_secs(30), &["node", "lost-0"], |n| {
        n["spec"]["taints"].as_array().is_none_or(|t| t.is_empty())
            && n["status"]["conditions"].as_array().is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
    })
    .await;
    let gone = eventually(Duration::from_secs(30), || {
        k.run(&["get", "pod", &victim])
            .stderr
            .contains("NotFound")
            .then_some(())
    })
    .await;
    assert!(gone.is_some());

    // A deleted node's CIDR is handed out again.
    spare_stop.cancel();
    k.ok(&["delete", "node", "spare-0"]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let again = CancellationToken::new();
    hollow_nodes(&env.client, "again", 1, &again).await;
    let a = env
        .until(Duration::from_secs(30), &["node", "again-0"], |n| {
            n["spec"]["podCIDR"].is_string()
        })
        .await;
    assert_eq!(a["spec"]["podCIDR"], spare_cidr.as_str());
    back.cancel();
    again.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_ipam_flags_are_checked() {
    let c = Cluster::start().await.unwrap();
    for (args, says) in [
        (
            vec!["--allocate-node-cidrs"],
            "--allocate-node-cidrs needs --cluster-cidr",
        ),
        (
            vec!["--allocate-node-cidrs", "--cluster-cidr=10.244.0.0"],
            "invalid IPv4 CIDR",
        ),
        (
            vec![
                "--allocate-node-cidrs",
                "--cluster-cidr=10.244.0.0/24",
                "--node-cidr-mask-size=16",
            ],
            "does not fit",
        ),
    ] {
        let mut full = vec!["--port=0"];
        full.extend(args);
        let d = Daemon::start("skiff-controller-manager", &c.api, &full).unwrap();
        let said = eventually(Duration::from_secs(10), || {
            d.log().contains(says).then_some(())
        })
        .await;
        assert!(said.is_some(), "{full:?}: {}", d.log());
    }
}

const AGENT: &str = r#"
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec: {containers: [{name: c, image: "agent:v1"}]}
"#;

fn image(p: &serde_json::Value) -> &str {
    p["spec"]["containers"][0]["image"].as_str().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemonset_runs_one_pod_per_eligible_node_and_rolls() {
    let env = Env::start(3).await;
    let k = env.kubectl();
    k.ok_input(&["apply", "-f", "-"], AGENT);
    let out = k.ok(&["rollout", "status", "daemonset/agent", "--timeout=60s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
    let pods = k.json(&["get", "pods", "-l", "app=agent"]);
    let placed: BTreeSet<String> = active(&pods).iter().map(node_of).collect();
    assert_eq!(
        placed,
        BTreeSet::from(["hollow-0".into(), "hollow-1".into(), "hollow-2".into()])
    );
    let ds = k.json(&["get", "ds", "agent"]);
    assert_eq!(ds["status"]["desiredNumberScheduled"], 3);
    assert_eq!(ds["status"]["numberReady"], 3);
    assert_eq!(ds["status"]["updatedNumberScheduled"], 3);
    let p = &active(&pods)[0];
    assert!(p["spec"]["tolerations"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["key"] == "node.kubernetes.io/unreachable"));
    assert_eq!(
        p["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            ["nodeSelectorTerms"][0]["matchFields"][0]["key"],
        "metadata.name"
    );

    // A new node gets one; a node that goes loses it.
    let late = CancellationToken::new();
    hollow_nodes(&env.client, "late", 1, &late).await;
    env.until(Duration::from_secs(30), &["pods", "-l", "app=agent"], |v| {
        let a = active(v);
        a.len() == 4 && a.iter().any(|p| node_of(p) == "late-0") && a.iter().all(ready)
    })
    .await;
    late.cancel();
    k.ok(&["delete", "node", "late-0"]);
    env.until(Duration::from_secs(30), &["pods", "-l", "app=agent"], |v| {
        active(v).len() == 3 && active(v).iter().all(|p| node_of(p) != "late-0")
    })
    .await;

    // nodeSelector: pods follow the label; a NoSchedule taint keeps new pods off but lets the
    // running one stay.
    k.ok_input(
        &["apply", "-f", "-"],
        &AGENT.replace("agent", "edge").replace(
            "spec: {containers",
            "spec: {nodeSelector: {role: edge}, containers",
        ),
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(active(&k.json(&["get", "pods", "-l", "app=edge"])).is_empty());
    k.ok(&["label", "node", "hollow-1", "role=edge"]);
    env.until(Duration::from_secs(30), &["pods", "-l", "app=edge"], |v| {
        let a = active(v);
        a.len() == 1 && node_of(&a[0]) == "hollow-1"
    })
    .await;
    k.ok(&["taint", "node", "hollow-1", "dedicated=db:NoSchedule"]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        active(&k.json(&["get", "pods", "-l", "app=edge"])).len(),
        1,
        "NoSchedule does not evict"
    );
    k.ok(&["label", "node", "hollow-1", "role-"]);
    env.until(Duration::from_secs(30), &["pods", "-l", "app=edge"], |v| {
        active(v).is_empty()
    })
    .await;
    k.ok(&["taint", "node", "hollow-1", "dedicated=db:NoSchedule-"]);

    // RollingUpdate, one node at a time at most.
    let watch = Watch::start(&env.client, "app=agent", ready_serving);
    k.ok(&["set", "image", "daemonset/agent", "c=agent:v2"]);
    k.ok(&["rollout", "status", "daemonset/agent", "--timeout=60s"]);
    env.until(Duration::from_secs(30), &["pods", "-l", "app=agent"], |v| {
        let a = active(v);
        a.len() == 3 && a.iter().all(|p| image(p) == "agent:v2")
    })
    .await;
    let seen = watch.stop().await;
    assert!(
        seen.iter().skip(1).all(|n| *n >= 2),
        "more than one node without an agent: {seen:?}"
    );

    // OnDelete: a new template waits until a pod is deleted.
    k.ok(&[
        "patch",
        "ds",
        "agent",
        "-p",
        r#"{"spec":{"updateStrategy":{"type":"OnDelete","rollingUpdate":null}}}"#,
    ]);
    k.ok(&["set", "image", "daemonset/agent", "c=agent:v3"]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pods = k.json(&["get", "pods", "-l", "app=agent"]);
    assert!(active(&pods).iter().all(|p| image(p) == "agent:v2"));
    let one = active(&pods)[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    k.ok(&["delete", "pod", &one]);
    env.until(Duration::from_secs(30), &["pods", "-l", "app=agent"], |v| {
        let a = active(v);
        a.len() == 3 && a.iter().filter(|p| image(p) == "agent:v3").count() == 1
    })
    .await;
}

/// What a kubelet does when a job's container exits: the pod's final phase and exit code.
fn finish(k: &Kubectl, pod: &str, code: i32) {
    let phase = if code == 0 { "Succeeded" } else { "Failed" };
    let now = skiff_client::time::now_rfc3339();
    let body = serde_json::json!({"status": {"phase": phase, "conditions": [{"type": "Ready", "status": "False"}],
        "containerStatuses": [{"name": "c", "image": "busybox", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": code, "reason": if code == 0 { "Completed" } else { "Error" },
                "startedAt": now, "finishedAt": now}}}]}});
    k.ok(&[
        "patch",
        "pod",
        pod,
        "--subresource=status",
        "--type=merge",
        "-p",
        &body.to_string(),
    ]);
}

fn job_yaml(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: batch/v1\nkind: Job\nmetadata: {{name: {name}}}\nspec:\n{spec}\n  template:\n    spec: {{restartPolicy: Never, containers: [{{name: c, image: busybox}}]}}\n"
    )
}

/// The job's running pods, once there are `n` of them, all Running.
async fn running(env: &Env, job: &str, n: usize) -> Vec<serde_json::Value> {
    let v = env
        .until(
            Duration::from_secs(60),
            &["pods", "-l", &format!("job-name={job}")],
            |v| {
                let r: Vec<_> = active(v)
                    .into_iter()
                    .filter(|p| p["status"]["phase"] == "Running")
                    .collect();
                r.len() == n
            },
        )
        .await;
    active(&v)
        .into_iter()
        .filter(|p| p["status"]["phase"] == "Running")
        .collect()
}

fn name(p: &serde_json::Value) -> String {
    p["metadata"]["name"].as_str().unwrap_or("").to_string()
}

fn condition(j: &serde_json::Value, t: &str) -> Option<serde_json::Value> {
    j["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == t)
        .cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_run_to_completion_in_parallel_and_by_index() {
    let env = Env::start(3).await;
    let k = env.kubectl();
    k.ok_input(
        &["apply", "-f", "-"],
        &job_yaml("count", "  completions: 3\n  parallelism: 2"),
    );
    let first = running(&env, "count", 2).await;
    assert!(first
        .iter()
        .all(|p| p["metadata"]["finalizers"][0] == "batch.kubernetes.io/job-tracking"));
    for p in &first {
        finish(&k, &name(p), 0);
    }
    let third = running(&env, "count", 1).await;
    assert!(first.iter().all(|p| name(p) != name(&third[0])));
    finish(&k, &name(&third[0]), 0);
    let out = k.ok(&[
        "wait",
        "--for=condition=complete",
        "job/count",
        "--timeout=30s",
    ]);
    assert!(out.contains("condition met"), "{out}");
    let j = k.json(&["get", "job", "count"]);
    assert_eq!(j["status"]["succeeded"], 3);
    assert!(j["status"]["completionTime"].is_string());
    let pods = items(&k.json(&["get", "pods", "-l", "job-name=count"]));
    assert_eq!(pods.len(), 3, "finished pods stay for their logs");
    assert!(pods.iter().all(|p| p["metadata"]["finalizers"]
        .as_array()
        .is_none_or(|f| f.is_empty())));
    assert!(k.ok(&["describe", "job", "count"]).contains("Completed"));

    // Indexed: one pod per index, told its index.
    k.ok_input(
        &["apply", "-f", "-"],
        &job_yaml(
            "idx",
            "  completions: 3\n  parallelism: 3\n  completionMode: Indexed",
        ),
    );
    let pods = running(&env, "idx", 3).await;
    let mut idx: Vec<String> = pods
        .iter()
        .map(|p| {
            p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    idx.sort();
    assert_eq!(idx, ["0", "1", "2"]);
    for p in &pods {
        let i = p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]
            .as_str()
            .unwrap();
        assert_eq!(p["spec"]["hostname"], format!("idx-{i}"));
        assert!(p["spec"]["containers"][0]["env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "JOB_COMPLETION_INDEX" && e["value"] == i));
    }
    let by_index = |i: &str| {
        name(
            pods.iter()
                .find(|p| {
                    p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"] == i
                })
                .unwrap(),
        )
    };
    finish(&k, &by_index("1"), 0);
    env.until(Duration::from_secs(30), &["job", "idx"], |j| {
        j["status"]["completedIndexes"] == "1"
    })
    .await;
    finish(&k, &by_index("0"), 0);
    finish(&k, &by_index("2"), 0);
    let j = env
        .until(Duration::from_secs(30), &["job", "idx"], |j| {
            condition(j, "Complete").is_some_and(|c| c["status"] == "True")
        })
        .await;
    assert_eq!(j["status"]["completedIndexes"], "0-2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_fail_by_back_off_limit_deadline_and_policy_and_suspend_and_expire() {
    let env = Env::start(3).await;
    let k = env.kubectl();

    // backoffLimit 1: two failures fail the job, the second pod after a back-off.
    k.ok_input(
        &["apply", "-f", "-"],
        &job_yaml("flaky", "  backoffLimit: 1"),
    );
    let p = running(&env, "flaky", 1).await;
    finish(&k, &name(&p[0]), 1);
    let again = running(&env, "flaky", 1).await;
    assert_ne!(name(&again[0]), name(&p[0]));
    let j = k.json(&["get", "job", "flaky"]);
    assert_eq!(j["status"]["failed"], 1);
    finish(&k, &name(&again[0]), 1);
    let j = env
        .until(Duration::from_secs(30), &["job", "flaky"], |j| {
            condition(j, "Failed").is_some()
        })
        .await;
    assert_eq!(
        condition(&j, "Failed").unwrap()["reason"],
        "BackoffLimitExceeded"
    );
    assert_eq!(j["status"]["failed"], 2);

    // podFailurePolicy: exit 3 is ignored (not counted, retried at once), exit 42 fails the job.
    k.ok_input(
        &["apply", "-f", "-"],
        &job_yaml(
            "policy",
            "  backoffLimit: 0\n  podFailurePolicy:\n    rules:\n    - {action: Ignore, onExitCodes: {operator: In, values: [3]}}\n    - {action: FailJob, onExitCodes: {operator: In, values: [42]}}",
        ),
    );
    let p = running(&env, "policy", 1).await;
    finish(&k, &name(&p[0]), 3);
    let p2 = running(&env, "policy", 1).await;
    assert_ne!(name(&p2[0]), name(&p[0]));
    assert!(
        k.json(&["get", "job", "policy"])["status"]["failed"]
            .as_i64()
            .unwrap_or(0)
            == 0
    );
    finish(&k, &name(&p2[0]), 42);
    let j = env
        .until(Duration::from_secs(30), &["job", "policy"], |j| {
            condition(j, "Failed").is_some()
        })
        .await;
    assert_eq!(
        condition(&j, "Failed").unwrap()["reason"],
        "PodFailurePolicy"
    );

    // activeDeadlineSeconds: running too long fails it and stops its pods.
    k.ok_input(
        &["apply", "-f", "-"],
        &job_yaml("slow", "  activeDeadlineSeconds: 2"),
    );
    running(&env, "slow", 1).await;
    let j = env
        .until(Duration::from_secs(30), &["job", "slow"], |j| {
            condition(j, "Failed").is_some()
        })
        .await;
    assert_eq!(
        condition(&j, "Failed").unwrap()["reason"],
        "DeadlineExceeded"
    );
    env.until(
        Duration::from_secs(30),
        &["pods", "-l", "job-name=slow"],
        |v| active(v).is_empty(),
    )
    .await;

    // suspend: nothing runs until resumed.
    k.ok_input(&["apply", "-f", "-"], &job_yaml("later", "  suspend: true"));
    let j = env
        .until(Duration::from_secs(30), &["job", "later"], |j| {
            condition(j, "Suspended").is_some_and(|c| c["status"] == "True")
        })
        .await;
    assert!(j["status"]["startTime"].is_null());
    assert!(items(&k.json(&["get", "pods", "-l", "job-name=later"])).is_empty());
    k.ok(&[
        "patch",
        "job",
        "later",
        "-p",
        r#"{"spec":{"suspend":false}}"#,
    ]);
    running(&env, "later", 1).await;
    let j = k.json(&["get", "job", "later"]);
    assert_eq!(condition(&j, "Suspended").unwrap()["status"], "False");

    // ttlSecondsAfterFinished: the job and its pods go after it completes.
    k.ok_input(
        &["apply", "-f", "-"],
        &job_yaml("brief", "  ttlSecondsAfterFinished: 1"),
    );
    let p = running(&env, "brief", 1).await;
    finish(&k, &name(&p[0]), 0);
    let gone = eventually(Duration::from_secs(30), || {
        k.run(&["get", "job", "brief"])
            .stderr
            .contains("NotFound")
            .then_some(())
    })
    .await;
    assert!(gone.is_some(), "{}", env.cm.log());
    env.until(
        Duration::from_secs(30),
        &["pods", "-l", "job-name=brief"],
        |v| items(v).is_empty(),
    )
    .await;
}

/// The CronJob controller, run in this process on a clock the test moves.
struct CronController {
    clock: skiff_controllers::clock::Clock,
    stop: CancellationToken,
}

impl CronController {
    fn start(env: &Env, at: chrono::DateTime<chrono::Utc>) -> CronController {
        let clock = skiff_controllers::clock::Clock::manual(at);
        let stop = CancellationToken::new();
        let mut cfg = skiff_client::Config::from_kubeconfig(&env.c.api.kubeconfig).unwrap();
        cfg.qps = 0.0;
        let ctx = skiff_controllers::Context::new(
            Client::new(cfg).unwrap(),
            skiff_controllers::Config::default(),
            stop.clone(),
        );
        tokio::spawn(skiff_controllers::cronjob::run(
            ctx,
            clock.clone(),
            stop.clone(),
        ));
        CronController { clock, stop }
    }
}

impl Drop for CronController {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn cronjob_yaml(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: batch/v1\nkind: CronJob\nmetadata: {{name: {name}}}\nspec:\n{spec}\n  jobTemplate:\n    spec:\n      template:\n        spec: {{restartPolicy: Never, containers: [{{name: c, image: busybox}}]}}\n"
    )
}

/// The names of the jobs a CronJob owns.
fn jobs_of(k: &Kubectl, cj: &str) -> Vec<String> {
    let mut v: Vec<String> = items(&k.json(&["get", "jobs"]))
        .iter()
        .filter(|j| {
            j["metadata"]["ownerReferences"][0]["name"] == cj
                && j["metadata"]["deletionTimestamp"].is_null()
        })
        .map(name)
        .collect();
    v.sort();
    v
}

async fn jobs_become(env: &Env, cj: &str, f: impl Fn(&[String]) -> bool) -> Vec<String> {
    let k = env.kubectl();
    let mut last = Vec::new();
    let got = eventually(Duration::from_secs(30), || {
        last = jobs_of(&k, cj);
        f(&last).then(|| last.clone())
    })
    .await;
    got.unwrap_or_else(|| panic!("jobs of {cj}: {last:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cronjobs_fire_on_schedule_with_their_policies() {
    use chrono::{DurationRound, TimeZone};
    let env = Env::start_with(
        3,
        &[
            "--port=0",
            "--leader-elect=false",
            "--kube-api-qps=0",
            "--controllers=*,-cronjob",
        ],
    )
    .await;
    let k = env.kubectl();
    let now = chrono::Utc::now();
    let cron = CronController::start(&env, now);
    let five = chrono::Duration::minutes(5);
    let b1 = now.duration_trunc(five).unwrap() + five;
    let at = |t: chrono::DateTime<chrono::Utc>| t + chrono::Duration::seconds(1);
    let minutes = |t: chrono::DateTime<chrono::Utc>| t.timestamp() / 60;

    // Bad schedules are refused by the API server.
    let r = k.run_with_input(
        &["apply", "-f", "-"],
        &cronjob_yaml("bad", "  schedule: \"every tuesday\""),
    );
    assert!(!r.status.success());
    assert!(
        r.stderr.contains("unparseable cron schedule"),
        "{}",
        r.stderr
    );

    k.ok_input(
        &["apply", "-f", "-"],
        &cronjob_yaml(
            "tick",
            "  schedule: \"*/5 * * * *\"\n  successfulJobsHistoryLimit: 2",
        ),
    );
    k.ok_input(
        &["apply", "-f", "-"],
        &cronjob_yaml(
            "solo",
            "  schedule: \"*/5 * * * *\"\n  concurrencyPolicy: Forbid",
        ),
    );
    k.ok_input(
        &["apply", "-f", "-"],
        &cronjob_yaml(
            "swap",
            "  schedule: \"*/5 * * * *\"\n  concurrencyPolicy: Replace",
        ),
    );
    k.ok_input(
        &["apply", "-f", "-"],
        &cronjob_yaml(
            "late",
            "  schedule: \"*/5 * * * *\"\n  suspend: true\n  startingDeadlineSeconds: 60",
        ),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(jobs_of(&k, "tick").is_empty(), "nothing before its time");

    // First time: one job each, named by the scheduled minute.
    cron.clock.set(at(b1));
    let tick = jobs_become(&env, "tick", |j| j.len() == 1).await;
    assert_eq!(tick[0], format!("tick-{}", minutes(b1)));
    jobs_become(&env, "solo", |j| j.len() == 1).await;
    let swap1 = jobs_become(&env, "swap", |j| j.len() == 1).await;
    let cj = env
        .until(Duration::from_secs(30), &["cronjob", "tick"], |c| {
            c["status"]["active"]
                .as_array()
                .is_some_and(|a| a.len() == 1)
        })
        .await;
    let scheduled =
        chrono::DateTime::parse_from_rfc3339(cj["status"]["lastScheduleTime"].as_str().unwrap())
            .unwrap();
    assert_eq!(scheduled, b1);
    let j = k.json(&["get", "job", &tick[0]]);
    let ann = chrono::DateTime::parse_from_rfc3339(
        j["metadata"]["annotations"]["batch.kubernetes.io/cronjob-scheduled-timestamp"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(ann, b1);
    assert!(jobs_of(&k, "late").is_empty(), "suspended");

    // It finishes: no longer active, and its success is recorded.
    let p = running(&env, &tick[0], 1).await;
    finish(&k, &name(&p[0]), 0);
    env.until(Duration::from_secs(30), &["cronjob", "tick"], |c| {
        c["status"]["active"].is_null() && c["status"]["lastSuccessfulTime"].is_string()
    })
    .await;

    // Second time: Forbid waits for the running one, Replace replaces it.
    let b2 = b1 + five;
    cron.clock.set(at(b2));
    jobs_become(&env, "tick", |j| j.len() == 2).await;
    let swap2 = jobs_become(&env, "swap", |j| j.len() == 1 && j[0] != swap1[0]).await;
    assert_eq!(swap2[0], format!("swap-{}", minutes(b2)));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(jobs_of(&k, "solo").len(), 1, "Forbid: the first still runs");
    assert!(k
        .ok(&["describe", "cronjob", "solo"])
        .contains("JobAlreadyActive"));

    // History: only the last two successful jobs stay.
    let p = running(&env, &format!("tick-{}", minutes(b2)), 1).await;
    finish(&k, &name(&p[0]), 0);
    let b3 = b2 + five;
    cron.clock.set(at(b3));
    let third = format!("tick-{}", minutes(b3));
    let p = running(&env, &third, 1).await;
    finish(&k, &name(&p[0]), 0);
    let kept = jobs_become(&env, "tick", |j| j.len() == 2 && !j.contains(&tick[0])).await;
    assert!(kept.contains(&third));

    // Resumed three minutes after a scheduled time with a 60 s starting deadline: that time is
    // missed; the next one runs.
    cron.clock.set(b3 + chrono::Duration::minutes(3));
    tokio::time::sleep(Duration::from_millis(500)).await;
    k.ok(&[
        "patch",
        "cronjob",
        "late",
        "-p",
        r#"{"spec":{"suspend":false}}"#,
    ]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(jobs_of(&k, "late").is_empty(), "too late to start");
    let b4 = b3 + five;
    cron.clock.set(at(b4));
    let late = jobs_become(&env, "late", |j| j.len() == 1).await;
    assert_eq!(late[0], format!("late-{}", minutes(b4)));

    // A time zone: 09:00 in Tokyo is midnight UTC.
    k.ok_input(
        &["apply", "-f", "-"],
        &cronjob_yaml("tz", "  schedule: \"0 9 * * *\"\n  timeZone: Asia/Tokyo"),
    );
    let day = (b4 + chrono::Duration::days(1)).date_naive();
    let midnight = chrono::Utc.from_utc_datetime(&day.and_hms_opt(0, 0, 0).unwrap());
    cron.clock.set(at(midnight));
    let tz = jobs_become(&env, "tz", |j| j.len() == 1).await;
    let j = k.json(&["get", "job", &tz[0]]);
    let ann = j["metadata"]["annotations"]["batch.kubernetes.io/cronjob-scheduled-timestamp"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(ann.ends_with("T09:00:00+09:00"), "{ann}");
}
