//! The garbage collector and the namespace controller of `skiff-controller-manager` (running
//! as `system:kube-controller-manager`, with only its bootstrap role) over a custom resource
//! whose CustomResourceDefinition the test creates, deletes and creates again, driven with
//! the real `kubectl`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use skiff_e2e::{eventually, ApiServer, Cluster, Daemon, Kubectl};

/// Gadgets, served at two versions (stored at `v1`).
const CRD: &str = r#"{
  "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
  "metadata": {"name": "gadgets.gc.skiff.dev"},
  "spec": {
    "group": "gc.skiff.dev", "scope": "Namespaced",
    "names": {"kind": "Gadget", "plural": "gadgets", "singular": "gadget", "listKind": "GadgetList"},
    "versions": [
      {"name": "v1beta1", "served": true, "storage": false,
       "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}},
      {"name": "v1", "served": true, "storage": true,
       "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}
    ]
  }
}"#;

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

/// An owner reference to the object `kubectl get` shows for `what`, as written at
/// `api_version` (which may be another served version than the one it was read at).
fn owner(k: &Kubectl, what: &[&str], api_version: &str, block: bool) -> Value {
    let mut args = vec!["get"];
    args.extend_from_slice(what);
    let o = k.json(&args);
    json!({
        "apiVersion": api_version,
        "kind": o["kind"],
        "name": o["metadata"]["name"],
        "uid": o["metadata"]["uid"],
        "blockOwnerDeletion": block,
    })
}

fn configmap(name: &str, owners: &[Value], finalizers: &[&str]) -> String {
    json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "ownerReferences": owners, "finalizers": finalizers},
        "data": {"k": "v"},
    })
    .to_string()
}

fn gadget(name: &str, ns: &str, owners: &[Value], finalizers: &[&str]) -> String {
    json!({
        "apiVersion": "gc.skiff.dev/v1", "kind": "Gadget",
        "metadata": {"name": name, "namespace": ns, "ownerReferences": owners,
                     "finalizers": finalizers},
        "spec": {"size": 1},
    })
    .to_string()
}

struct Env {
    c: Cluster,
    cm: Daemon,
    _dir: tempfile::TempDir,
}

impl Env {
    fn kubectl(&self) -> Kubectl {
        self.c.kubectl()
    }

    /// Waits until `kubectl get what` answers NotFound.
    async fn until_gone(&self, what: &[&str]) {
        let k = self.kubectl();
        let mut args = vec!["get"];
        args.extend_from_slice(what);
        let gone = eventually(Duration::from_secs(30), || {
            k.run(&args).stderr.contains("NotFound").then_some(())
        })
        .await;
        assert!(
            gone.is_some(),
            "{what:?} is still there: {}\ncontroller manager log:\n{}",
            k.run(&["get", what[0], what[1], "-o", "yaml"]).stdout,
            self.cm.log()
        );
    }

    /// Waits until `f` holds for what `kubectl get what -o json` shows.
    async fn until(&self, what: &[&str], f: impl Fn(&Value) -> bool) -> Value {
        let k = self.kubectl();
        let mut args = vec!["get"];
        args.extend_from_slice(what);
        args.extend_from_slice(&["-o", "json"]);
        let mut last = Value::Null;
        let got = eventually(Duration::from_secs(30), || {
            let r = k.run(&args);
            last = serde_json::from_str(&r.stdout).ok()?;
            f(&last).then(|| last.clone())
        })
        .await;
        got.unwrap_or_else(|| {
            panic!(
                "{what:?} did not get there; last seen:\n{last:#}\ncontroller manager log:\n{}",
                self.cm.log()
            )
        })
    }

    fn create_crd(&self) {
        let k = self.kubectl();
        k.ok_input(&["create", "-f", "-"], CRD);
        k.ok(&[
            "wait",
            "--for=condition=Established",
            "crd/gadgets.gc.skiff.dev",
            "--timeout=30s",
        ]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_resources_are_collected_and_emptied_with_their_namespace() {
    let c = Cluster::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = cert_kubeconfig(&c.api, dir.path(), "system:kube-controller-manager");
    let cm = Daemon::start_as(
        "skiff-controller-manager",
        &kubeconfig,
        &[
            "--port=0",
            "--leader-elect=false",
            "--kube-api-qps=0",
            "--controllers=garbagecollector,namespace",
        ],
    )
    .unwrap();
    let env = Env { c, cm, _dir: dir };
    let k = env.kubectl();
    env.create_crd();

    // Background: a ConfigMap owned by a Gadget goes after the Gadget. Its reference names
    // the other served version: owners are matched by group and kind.
    k.ok_input(&["create", "-f", "-"], &gadget("a", "default", &[], &[]));
    k.ok_input(&["create", "-f", "-"], &gadget("b", "default", &[], &[]));
    let of_a = owner(&k, &["gadget", "a"], "gc.skiff.dev/v1beta1", false);
    let of_b = owner(&k, &["gadget", "b"], "gc.skiff.dev/v1", false);
    k.ok_input(&["create", "-f", "-"], &configmap("of-a", &[of_a], &[]));
    k.ok_input(&["create", "-f", "-"], &configmap("of-b", &[of_b], &[]));
    k.ok(&["delete", "gadget", "a"]);
    env.until_gone(&["configmap", "of-a"]).await;
    let kept = k.json(&["get", "configmap", "of-b"]);
    assert!(kept["metadata"]["deletionTimestamp"].is_null(), "{kept:#}");

    // A Gadget owned by a ConfigMap goes with it.
    k.ok_input(&["create", "-f", "-"], &configmap("owner", &[], &[]));
    let cm_owner = owner(&k, &["configmap", "owner"], "v1", false);
    k.ok_input(
        &["create", "-f", "-"],
        &gadget("dep", "default", &[cm_owner], &[]),
    );
    k.ok(&["delete", "configmap", "owner"]);
    env.until_gone(&["gadget", "dep"]).await;

    // Foreground: the Gadget stays, deleting, until its blocking ConfigMap dependent is gone
    // (a finalizer holds that one here for a while).
    k.ok_input(&["create", "-f", "-"], &gadget("fg", "default", &[], &[]));
    let of_fg = owner(&k, &["gadget", "fg"], "gc.skiff.dev/v1", true);
    k.ok_input(
        &["create", "-f", "-"],
        &configmap("held", &[of_fg], &["example.com/hold"]),
    );
    k.ok(&[
        "delete",
        "gadget",
        "fg",
        "--cascade=foreground",
        "--wait=false",
    ]);
    env.until(&["configmap", "held"], |cm| {
        cm["metadata"]["deletionTimestamp"].is_string()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let g = k.json(&["get", "gadget", "fg"]);
    assert!(g["metadata"]["deletionTimestamp"].is_string(), "{g:#}");
    assert_eq!(g["metadata"]["finalizers"], json!(["foregroundDeletion"]));
    k.ok(&[
        "patch",
        "configmap",
        "held",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);
    env.until_gone(&["gadget", "fg"]).await;

    // Deleting a namespace deletes its Gadgets; one held by a finalizer holds the namespace,
    // which says so as Kubernetes does.
    k.ok(&["create", "namespace", "team"]);
    k.ok_input(&["create", "-f", "-"], &gadget("loose", "team", &[], &[]));
    k.ok_input(
        &["create", "-f", "-"],
        &gadget("stuck", "team", &[], &["example.com/hold"]),
    );
    k.ok(&["delete", "namespace", "team", "--wait=false"]);
    let ns = env
        .until(&["namespace", "team"], |ns| {
            ns["status"]["conditions"].as_array().is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "NamespaceFinalizersRemaining")
            })
        })
        .await;
    let message = |t: &str| {
        ns["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == t))
            .map(|c| c["message"].clone())
            .unwrap_or_default()
    };
    assert_eq!(
        message("NamespaceContentRemaining"),
        "Some resources are remaining: gadgets.gc.skiff.dev has 1 resource instances"
    );
    assert_eq!(
        message("NamespaceFinalizersRemaining"),
        "Some content in the namespace has finalizers remaining: example.com/hold in 1 resource instances"
    );
    let r = k.run(&["get", "gadget", "loose", "-n", "team"]);
    assert!(r.stderr.contains("NotFound"), "{}", r.stdout);
    k.ok(&[
        "patch",
        "gadget",
        "stuck",
        "-n",
        "team",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);
    env.until_gone(&["namespace", "team"]).await;
    // Re-created, it starts empty: nothing of the old one was left behind.
    k.ok(&["create", "namespace", "team"]);
    let left = k.json(&["get", "gadgets", "-n", "team"]);
    assert_eq!(left["items"], json!([]), "{left:#}");

    // The definition deleted: its Gadgets go, and with them what they own; the collector
    // stops following the kind.
    k.ok_input(&["create", "-f", "-"], &gadget("last", "default", &[], &[]));
    let of_last = owner(&k, &["gadget", "last"], "gc.skiff.dev/v1", false);
    k.ok_input(
        &["create", "-f", "-"],
        &configmap("of-last", &[of_last], &[]),
    );
    k.ok(&["delete", "crd", "gadgets.gc.skiff.dev", "--timeout=60s"]);
    env.until_gone(&["configmap", "of-last"]).await;
    let stopped = eventually(Duration::from_secs(30), || {
        env.cm
            .log()
            .contains("garbage collector no longer follows a kind")
            .then_some(())
    })
    .await;
    assert!(stopped.is_some(), "{}", env.cm.log());

    // Defined again, the kind is followed again.
    env.create_crd();
    k.ok_input(
        &["create", "-f", "-"],
        &gadget("again", "default", &[], &[]),
    );
    let of_again = owner(&k, &["gadget", "again"], "gc.skiff.dev/v1", false);
    k.ok_input(
        &["create", "-f", "-"],
        &configmap("of-again", &[of_again], &[]),
    );
    k.ok(&["delete", "gadget", "again"]);
    env.until_gone(&["configmap", "of-again"]).await;

    // Its bootstrap role let it do all of that.
    let log = env.cm.log();
    assert!(!log.contains("forbidden"), "{log}");
}
