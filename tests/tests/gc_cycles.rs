//! The garbage collector of `skiff-controller-manager` (running as
//! `system:kube-controller-manager`) through what Kubernetes' collector handles at the edges:
//! three pods owning each other in a circle, deleted in the foreground, in the background and
//! orphaning; owner references that dangle (an owner that never existed, or the right name
//! with another UID); and its metrics on the controller manager's `/metrics`, sync errors
//! included when a kind cannot be listed. Driven with the real `kubectl`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use skiff_e2e::{eventually, ApiServer, Cluster, Daemon, Kubectl};

/// How long the collector gets to act (its normal latency is well under a second).
const WAIT: Duration = Duration::from_secs(30);

/// A kubeconfig with a client certificate for `user` from the cluster CA.
fn cert_kubeconfig(api: &ApiServer, dir: &Path, user: &str) -> PathBuf {
    let pki_dir = dir.join(format!("pki-{user}"));
    std::fs::create_dir_all(&pki_dir).unwrap();
    for f in ["ca.crt", "ca.key"] {
        std::fs::copy(api.data_dir.join(f), pki_dir.join(f)).unwrap();
    }
    let url = api.url("");
    let pki =
        skiff_apiserver::certs::Pki::load_or_create(&pki_dir, &["localhost".into()], &url).unwrap();
    let (cert, key) = pki.issue_client(user, &[]).unwrap();
    let ca = std::fs::read_to_string(api.data_dir.join("ca.crt")).unwrap();
    let kc = skiff_apiserver::certs::kubeconfig(&url, &ca, &cert, &key, user).unwrap();
    let p = dir.join(format!("{user}.kubeconfig"));
    std::fs::write(&p, kc).unwrap();
    p
}

/// A controller manager running `controllers` as `user`.
fn controller_manager(api: &ApiServer, dir: &Path, user: &str, controllers: &str) -> Daemon {
    let kubeconfig = cert_kubeconfig(api, dir, user);
    Daemon::start_as(
        "skiff-controller-manager",
        &kubeconfig,
        &[
            "--port=0",
            "--leader-elect=false",
            "--kube-api-qps=0",
            &format!("--controllers={controllers}"),
        ],
    )
    .unwrap()
}

/// The address of `/metrics` the daemon logged.
async fn health_addr(d: &Daemon) -> String {
    let found = eventually(WAIT, || {
        d.log()
            .split("health=")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .map(String::from)
    })
    .await;
    found.unwrap_or_else(|| panic!("no health address logged:\n{}", d.log()))
}

async fn scrape(addr: &str) -> String {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Waits (up to `within`) until `series` on `addr`'s `/metrics` satisfies `f`; its value
/// then.
async fn until_metric(addr: &str, series: &str, within: Duration, f: impl Fn(f64) -> bool) -> f64 {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let text = scrape(addr).await;
        match value(&text, series) {
            Some(v) if f(v) => return v,
            _ if tokio::time::Instant::now() > deadline => {
                panic!("{series} never got there:\n{text}")
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// The value of `series` (a metric name with its labels, as exposed) in `text`.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter_map(|l| l.rsplit_once(' '))
        .find(|(s, _)| *s == series)
        .and_then(|(_, v)| v.parse().ok())
}

const SYNC_ERRORS: &str = "garbagecollector_controller_resources_sync_error_total";
const DELETE_ADDS: &str = r#"workqueue_adds_total{name="garbage_collector_attempt_to_delete"}"#;
const ORPHAN_ADDS: &str = r#"workqueue_adds_total{name="garbage_collector_attempt_to_orphan"}"#;

fn pod(name: &str) -> String {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    })
    .to_string()
}

fn configmap(name: &str, owners: &[Value]) -> String {
    json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "ownerReferences": owners},
        "data": {"k": "v"},
    })
    .to_string()
}

/// A controlling, blocking reference to `kind` `name` with `uid`.
fn reference(kind: &str, name: &str, uid: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": kind, "name": name, "uid": uid,
        "controller": true, "blockOwnerDeletion": true,
    })
}

struct Env {
    c: Cluster,
    cm: Daemon,
    _dir: tempfile::TempDir,
}

impl Env {
    async fn start() -> Env {
        let c = Cluster::start().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cm = controller_manager(
            &c.api,
            dir.path(),
            "system:kube-controller-manager",
            "garbagecollector,serviceaccount",
        );
        let env = Env { c, cm, _dir: dir };
        // Pods need the namespace's default ServiceAccount.
        let k = env.kubectl();
        let sa = eventually(WAIT, || k.get_opt(&["serviceaccount", "default"])).await;
        assert!(sa.is_some(), "no default ServiceAccount:\n{}", env.cm.log());
        env
    }

    fn kubectl(&self) -> Kubectl {
        self.c.kubectl()
    }

    fn uid(&self, what: &[&str]) -> String {
        let mut args = vec!["get"];
        args.extend_from_slice(what);
        let o = self.kubectl().json(&args);
        o["metadata"]["uid"].as_str().unwrap().to_string()
    }

    /// Three pods owning each other in a circle: `names[0]` owned by `names[2]`, `names[1]`
    /// by `names[0]`, `names[2]` by `names[1]`. Their UIDs, in that order.
    fn cycle(&self, names: [&str; 3]) -> [String; 3] {
        let k = self.kubectl();
        for n in names {
            k.ok_input(&["create", "-f", "-"], &pod(n));
        }
        let uids = names.map(|n| self.uid(&["pod", n]));
        for i in 0..3 {
            let owner = (i + 2) % 3;
            let patch = json!({"metadata": {"ownerReferences": [
                reference("Pod", names[owner], &uids[owner])
            ]}});
            k.ok(&[
                "patch",
                "pod",
                names[i],
                "--type=merge",
                "-p",
                &patch.to_string(),
            ]);
        }
        uids
    }

    /// Waits until every one of `what` (kind, name) answers NotFound.
    async fn until_gone(&self, what: &[(&str, &str)]) {
        let k = self.kubectl();
        let gone = eventually(WAIT, || {
            what.iter()
                .all(|(kind, name)| k.run(&["get", kind, name]).stderr.contains("NotFound"))
                .then_some(())
        })
        .await;
        if gone.is_none() {
            let left: Vec<String> = what
                .iter()
                .map(|(kind, name)| k.run(&["get", kind, name, "-o", "yaml"]).stdout)
                .collect();
            panic!(
                "{what:?} are not all gone:\n{}\ncontroller manager log:\n{}",
                left.join("\n---\n"),
                self.cm.log()
            );
        }
    }

    /// A ConfigMap whose owner never existed, waited for until collected: once it is, the
    /// collector has had its turn at everything queued before.
    async fn sentinel(&self, name: &str) {
        let ghost = reference(
            "ConfigMap",
            "never-there",
            "5a3f0c52-0000-4000-8000-00000000dead",
        );
        self.kubectl()
            .ok_input(&["create", "-f", "-"], &configmap(name, &[ghost]));
        self.until_gone(&[("configmap", name)]).await;
    }

    /// The object, which must exist and not be deleting.
    fn kept(&self, what: &[&str]) -> Value {
        let mut args = vec!["get"];
        args.extend_from_slice(what);
        let o = self.kubectl().json(&args);
        assert!(
            o["metadata"]["deletionTimestamp"].is_null(),
            "{what:?} is being deleted: {o:#}\n{}",
            self.cm.log()
        );
        o
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ownership_cycles_and_dangling_references_are_collected() {
    let env = Env::start().await;
    let k = env.kubectl();
    let addr = health_addr(&env.cm).await;

    // Foreground: the deleted pod waits for its dependent, which waits for its own, which
    // waits for the first — a cycle the collector breaks, as Kubernetes' does.
    env.cycle(["fg-a", "fg-b", "fg-c"]);
    k.ok(&[
        "delete",
        "pod",
        "fg-a",
        "--cascade=foreground",
        "--wait=false",
    ]);
    env.until_gone(&[("pod", "fg-a"), ("pod", "fg-b"), ("pod", "fg-c")])
        .await;

    // Background: the pod goes at once, then each dependent whose owner is gone.
    env.cycle(["bg-a", "bg-b", "bg-c"]);
    k.ok(&["delete", "pod", "bg-a"]);
    env.until_gone(&[("pod", "bg-a"), ("pod", "bg-b"), ("pod", "bg-c")])
        .await;

    // Orphaning: the others stay, only the references to the deleted pod removed.
    let [_, y, _] = env.cycle(["or-x", "or-y", "or-z"]);
    let before =
        value(&scrape(&addr).await, ORPHAN_ADDS).unwrap_or_else(|| panic!("no {ORPHAN_ADDS}"));
    k.ok(&["delete", "pod", "or-x", "--cascade=orphan"]);
    env.until_gone(&[("pod", "or-x")]).await;
    env.sentinel("after-orphaning").await;
    let or_y = env.kept(&["pod", "or-y"]);
    assert!(
        or_y["metadata"]["ownerReferences"]
            .as_array()
            .is_none_or(|refs| refs.is_empty()),
        "or-y keeps no reference to or-x: {or_y:#}"
    );
    let or_z = env.kept(&["pod", "or-z"]);
    assert_eq!(
        or_z["metadata"]["ownerReferences"],
        json!([reference("Pod", "or-y", &y)]),
        "or-z is still owned by or-y"
    );

    // Dangling references: an owner that never existed, and the right name with another
    // UID. A dependent with a live owner besides only lets go of the dangling reference.
    k.ok_input(&["create", "-f", "-"], &configmap("real", &[]));
    let real = env.uid(&["configmap", "real"]);
    let never = reference(
        "ConfigMap",
        "never-existed",
        "0b6f3f2e-1111-4111-8111-000000000001",
    );
    let wrong_uid = reference("ConfigMap", "real", "0b6f3f2e-1111-4111-8111-000000000002");
    let live = reference("ConfigMap", "real", &real);
    k.ok_input(
        &["create", "-f", "-"],
        &configmap("of-nothing", std::slice::from_ref(&never)),
    );
    k.ok_input(
        &["create", "-f", "-"],
        &configmap("of-wrong-uid", &[wrong_uid]),
    );
    k.ok_input(
        &["create", "-f", "-"],
        &configmap("of-both", &[never, live.clone()]),
    );
    env.until_gone(&[("configmap", "of-nothing"), ("configmap", "of-wrong-uid")])
        .await;
    let both = eventually(WAIT, || {
        let o = k.json(&["get", "configmap", "of-both"]);
        (o["metadata"]["ownerReferences"] == json!([live])).then_some(o)
    })
    .await;
    assert!(
        both.is_some(),
        "of-both still names its dangling owner: {:#}\n{}",
        k.json(&["get", "configmap", "of-both"]),
        env.cm.log()
    );
    env.kept(&["configmap", "of-both"]);
    env.kept(&["configmap", "real"]);
    // An owner named from another namespace does not exist there: the dependent goes, and
    // an event says why.
    k.ok(&["create", "namespace", "other"]);
    let cross = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "cross", "namespace": "other", "ownerReferences": [live]},
    });
    k.ok_input(&["create", "-f", "-"], &cross.to_string());
    let gone = eventually(WAIT, || {
        k.run(&["get", "configmap", "cross", "-n", "other"])
            .stderr
            .contains("NotFound")
            .then_some(())
    })
    .await;
    assert!(
        gone.is_some(),
        "other/cross is still there:\n{}",
        env.cm.log()
    );
    let expected = format!(
        "ownerRef [v1/ConfigMap, namespace: other, name: real, uid: {real}] \
         does not exist in namespace \"other\""
    );
    let event = eventually(WAIT, || {
        let events = k.json(&["get", "events", "-n", "other", "-o", "json"]);
        events["items"]
            .as_array()?
            .iter()
            .find(|e| e["reason"] == "OwnerRefInvalidNamespace")
            .cloned()
    })
    .await
    .unwrap_or_else(|| panic!("no OwnerRefInvalidNamespace event:\n{}", env.cm.log()));
    assert_eq!(event["type"], "Warning", "{event:#}");
    assert_eq!(event["message"], expected.as_str(), "{event:#}");
    assert_eq!(event["involvedObject"]["name"], "cross", "{event:#}");

    // The metrics: everything synced, both queues at work.
    let text = scrape(&addr).await;
    assert_eq!(value(&text, SYNC_ERRORS), Some(0.0), "{text}");
    assert!(value(&text, DELETE_ADDS).is_some_and(|n| n > 0.0), "{text}");
    // The orphaning was seen through the attempt-to-orphan queue (the API server had done
    // the work by the time the collector looked).
    until_metric(&addr, ORPHAN_ADDS, WAIT, |n| n > before).await;
    let log = env.cm.log();
    assert!(!log.contains("forbidden"), "{log}");
}

/// Every built-in group but `coordination.k8s.io` (Leases), and no custom one: the collector
/// of a controller manager running as this cannot list Leases, nor the Gadgets below.
const WITHOUT_LEASES: &str = r#"{
  "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
  "metadata": {"name": "gc-without-leases"},
  "rules": [
    {"apiGroups": ["", "apps", "batch", "certificates.k8s.io", "discovery.k8s.io",
                   "rbac.authorization.k8s.io", "scheduling.k8s.io", "storage.k8s.io",
                   "apiextensions.k8s.io"],
     "resources": ["*"], "verbs": ["get", "list", "watch", "patch", "update", "delete"]},
    {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]}
  ]
}"#;

const CRD: &str = r#"{
  "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
  "metadata": {"name": "gadgets.gc.skiff.dev"},
  "spec": {
    "group": "gc.skiff.dev", "scope": "Namespaced",
    "names": {"kind": "Gadget", "plural": "gadgets", "singular": "gadget", "listKind": "GadgetList"},
    "versions": [{"name": "v1", "served": true, "storage": true,
      "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]
  }
}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kinds_that_cannot_be_listed_count_sync_errors_and_collecting_goes_on() {
    let c = Cluster::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let k = c.kubectl();
    k.ok_input(&["create", "-f", "-"], WITHOUT_LEASES);
    k.ok(&[
        "create",
        "clusterrolebinding",
        "gc-without-leases",
        "--clusterrole=gc-without-leases",
        "--user=gc-without-leases",
    ]);
    let cm = controller_manager(&c.api, dir.path(), "gc-without-leases", "garbagecollector");
    let addr = health_addr(&cm).await;
    // A kind that joins and cannot be listed either.
    k.ok_input(&["create", "-f", "-"], CRD);
    k.ok(&[
        "wait",
        "--for=condition=Established",
        "crd/gadgets.gc.skiff.dev",
        "--timeout=30s",
    ]);
    let ghost = reference(
        "ConfigMap",
        "never-there",
        "5a3f0c52-2222-4222-8222-00000000dead",
    );
    k.ok_input(&["create", "-f", "-"], &configmap("of-nothing", &[ghost]));

    // Leases are not listed within the sync period: one error, and collecting starts
    // anyway; the Gadgets, not listed within theirs after they joined: another.
    // (The collector waits 30 s for a kind's first list.)
    let errors = until_metric(&addr, SYNC_ERRORS, 2 * WAIT, |n| n >= 2.0).await;
    assert_eq!(errors, 2.0);
    let gone = eventually(WAIT, || {
        k.run(&["get", "configmap", "of-nothing"])
            .stderr
            .contains("NotFound")
            .then_some(())
    })
    .await;
    assert!(gone.is_some(), "not collected:\n{}", cm.log());
    let log = cm.log();
    assert!(
        log.contains("not all resource monitors could be synced, proceeding anyways"),
        "{log}"
    );
}
