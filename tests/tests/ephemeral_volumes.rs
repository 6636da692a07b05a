//! Generic ephemeral volumes end to end on a real node: etcd, the API server, the scheduler,
//! the controller manager's `ephemeral-volume` controller with the volume controllers and the
//! garbage collector, a kubelet on a private containerd, and `skiff-csi` serving
//! `local.csi.skiff.dev` for the node over its real socket.
//!
//! A pod with an `ephemeral.volumeClaimTemplate` gets the claim `<pod>-<volume>` (the
//! template's labels, annotations and spec, controlled by the pod), which is provisioned on the
//! node the scheduler chose; the pod runs and writes into it; deleting the pod deletes the
//! claim (garbage collection) and, with the class's `Delete`, the volume and its directory. A
//! claim of that name the pod does not own is left alone, and the pod is not started, with
//! Kubernetes' words. The controller's own role, `system:controller:ephemeral-volume-controller`,
//! grants what Kubernetes' does.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use skiff_e2e::node::Node;
use skiff_e2e::{eventually, Cluster, Daemon, Kubectl};

const WAIT: Duration = Duration::from_secs(60);

/// The messages of the events about `name` with `reason`.
fn events(k: &Kubectl, name: &str, reason: &str) -> Vec<String> {
    k.get_opt(&["events"])
        .and_then(|v| v["items"].as_array().cloned())
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e["involvedObject"]["name"] == name && e["reason"] == reason)
        .filter_map(|e| e["message"].as_str().map(String::from))
        .collect()
}

struct Env {
    node: Node,
    cm: Daemon,
    csi: Daemon,
    _scheduler: Daemon,
    c: Cluster,
    data: tempfile::TempDir,
}

impl Env {
    async fn start() -> Env {
        let c = Cluster::start().await.unwrap();
        let cm = Daemon::start(
            "skiff-controller-manager",
            &c.api,
            &[
                "--port=0",
                "--leader-elect=false",
                "--kube-api-qps=0",
                "--controllers=serviceaccount,ephemeral-volume,persistentvolume-binder,pvc-protection,pv-protection,garbagecollector",
            ],
        )
        .unwrap();
        let scheduler = Daemon::start(
            "skiff-scheduler",
            &c.api,
            &["--port=0", "--leader-elect=false"],
        )
        .unwrap();
        let node = Node::start(&c.api.kubeconfig, "node-a", &[]).unwrap();
        let data = tempfile::tempdir().unwrap();
        let csi = Daemon::start(
            "skiff-csi",
            &c.api,
            &[
                "--driver=local.csi.skiff.dev",
                "--node-id=node-a",
                &format!("--data-dir={}", data.path().display()),
                &format!("--kubelet-root-dir={}", node.kubelet.root_dir.display()),
                "--http-endpoint=127.0.0.1:0",
            ],
        )
        .unwrap();
        Env {
            node,
            cm,
            csi,
            _scheduler: scheduler,
            c,
            data,
        }
    }

    fn kubectl(&self) -> Kubectl {
        self.c.kubectl()
    }

    async fn wait<T>(&self, what: &str, f: impl FnMut() -> Option<T>) -> T {
        match eventually(WAIT, f).await {
            Some(v) => v,
            None => panic!(
                "{what}; events:\n{}\n--- controller manager:\n{}\n--- skiff-csi:\n{}\n--- kubelet:\n{}",
                self.kubectl().run(&["get", "events", "-A"]).stdout,
                self.cm.log(),
                self.csi.log(),
                self.node.kubelet.log()
            ),
        }
    }
}

fn pod(image: &str, name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "automountServiceAccountToken": false,
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "main", "image": image,
                "command": ["sleep", "3600"],
                "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}]}],
            "volumes": [{"name": "scratch", "ephemeral": {"volumeClaimTemplate": {
                "metadata": {"labels": {"type": "scratch"},
                             "annotations": {"example.com/purpose": "cache"}},
                "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "local",
                         "resources": {"requests": {"storage": "64Mi"}}}}}}]
        }
    })
}

#[tokio::test]
async fn generic_ephemeral_volumes_live_and_die_with_their_pod() {
    let env = Env::start().await;
    let k = env.kubectl();
    env.wait("the CSINode lists the driver", || {
        let c = k.get_opt(&["csinode", "node-a"])?;
        (c["spec"]["drivers"][0]["name"] == "local.csi.skiff.dev").then_some(())
    })
    .await;
    k.ok_input(
        &["apply", "-f", "-"],
        &json!({"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "storage.k8s.io/v1", "kind": "CSIDriver",
             "metadata": {"name": "local.csi.skiff.dev"},
             "spec": {"attachRequired": false, "podInfoOnMount": true, "fsGroupPolicy": "File"}},
            {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
             "metadata": {"name": "local"}, "provisioner": "local.csi.skiff.dev",
             "volumeBindingMode": "WaitForFirstConsumer", "reclaimPolicy": "Delete"}
        ]})
        .to_string(),
    );
    env.wait("the default ServiceAccount", || {
        k.get_opt(&["serviceaccount", "default"]).map(|_| ())
    })
    .await;

    // The pod's claim is made from the template, owned by the pod.
    let image = env.node.images.busybox.clone();
    k.ok_input(&["create", "-f", "-"], &pod(&image, "cache").to_string());
    let claim = env
        .wait("the claim cache-scratch", || {
            k.get_opt(&["pvc", "cache-scratch"])
        })
        .await;
    let p = k.get_opt(&["pod", "cache"]).unwrap();
    let owner = &claim["metadata"]["ownerReferences"];
    assert_eq!(
        owner,
        &json!([{"apiVersion": "v1", "kind": "Pod", "name": "cache",
                 "uid": p["metadata"]["uid"], "controller": true, "blockOwnerDeletion": true}])
    );
    assert_eq!(claim["metadata"]["labels"], json!({"type": "scratch"}));
    assert_eq!(
        claim["metadata"]["annotations"]["example.com/purpose"],
        "cache"
    );
    assert_eq!(claim["spec"]["storageClassName"], "local");
    assert_eq!(claim["spec"]["resources"]["requests"]["storage"], "64Mi");

    // Provisioned on the node the scheduler chose; the pod runs and writes into it.
    let pv = env
        .wait("the claim bound", || {
            let c = k.get_opt(&["pvc", "cache-scratch"])?;
            (c["status"]["phase"] == "Bound")
                .then(|| c["spec"]["volumeName"].as_str().map(String::from))?
        })
        .await;
    let claim = k.get_opt(&["pvc", "cache-scratch"]).unwrap();
    assert_eq!(
        claim["metadata"]["annotations"]["volume.kubernetes.io/selected-node"],
        "node-a"
    );
    let running = env
        .wait("the pod Ready", || {
            let p = k.get_opt(&["pod", "cache"])?;
            p["status"]["conditions"]
                .as_array()?
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
                .then_some(p)
        })
        .await;
    assert_eq!(running["spec"]["nodeName"], "node-a");
    let (code, out) = env
        .node
        .exec_in(
            &running,
            &["sh", "-c", "echo kept > /scratch/file && cat /scratch/file"],
        )
        .await;
    assert_eq!((code, out.trim()), (0, "kept"));
    let dir = env.data.path().join(&pv);
    assert_eq!(
        std::fs::read_to_string(dir.join("data/file")).unwrap(),
        "kept\n"
    );

    // The pod goes: the garbage collector takes its claim, and Delete the volume and its data.
    k.ok(&["delete", "pod", "cache", "--wait=true"]);
    env.wait("the claim collected", || {
        k.get_opt(&["pvc", "cache-scratch"]).is_none().then_some(())
    })
    .await;
    env.wait("the volume deleted", || {
        k.get_opt(&["pv", &pv]).is_none().then_some(())
    })
    .await;
    assert!(!Path::new(&dir).exists(), "{} removed", dir.display());

    // A claim of that name the pod does not own: never taken over, and the pod is not started.
    k.ok_input(
        &["create", "-f", "-"],
        &json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "metadata": {"name": "other-scratch"},
                "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "local",
                         "resources": {"requests": {"storage": "64Mi"}}}})
        .to_string(),
    );
    k.ok_input(&["create", "-f", "-"], &pod(&image, "other").to_string());
    let m = env
        .wait("a FailedBinding event on the pod", || {
            events(&k, "other", "FailedBinding").into_iter().next()
        })
        .await;
    assert_eq!(
        m,
        "ephemeral volume scratch: PVC default/other-scratch was not created for pod default/other (pod is not owner)"
    );
    let m = env
        .wait("a FailedScheduling event on the pod", || {
            events(&k, "other", "FailedScheduling").into_iter().next()
        })
        .await;
    assert!(
        m.contains(
            "PVC default/other-scratch was not created for pod default/other (pod is not owner)"
        ),
        "{m}"
    );
    let other = k.get_opt(&["pod", "other"]).unwrap();
    assert_eq!(other["status"]["phase"], "Pending");
    assert!(other["spec"]["nodeName"].is_null(), "{other}");
    let theirs = k.get_opt(&["pvc", "other-scratch"]).unwrap();
    assert!(theirs["metadata"]["ownerReferences"].is_null(), "{theirs}");
    assert_eq!(theirs["metadata"]["labels"], Value::Null);

    // The claim made way: the pod's own claim is made and the pod runs.
    k.ok(&["delete", "pvc", "other-scratch", "--wait=true"]);
    env.wait("the pod's own claim", || {
        let c = k.get_opt(&["pvc", "other-scratch"])?;
        (c["metadata"]["ownerReferences"][0]["name"] == "other").then_some(())
    })
    .await;
    env.wait("the pod running", || {
        let p = k.get_opt(&["pod", "other"])?;
        (p["status"]["phase"] == "Running").then_some(())
    })
    .await;
}

#[tokio::test]
async fn the_controllers_role_grants_what_kubernetes_grants() {
    let c = Cluster::start().await.unwrap();
    let k = c.kubectl();
    let sa = "--as=system:serviceaccount:kube-system:ephemeral-volume-controller";
    let can = |verb: &str, what: &str| {
        let mut args = vec!["auth", "can-i", verb, sa, "-n", "default"];
        // kubectl reads `pods/finalizers` as a pod named `finalizers`.
        let sub;
        match what.split_once('/') {
            Some((resource, subresource)) => {
                sub = format!("--subresource={subresource}");
                args.extend([resource, sub.as_str()]);
            }
            None => args.push(what),
        }
        k.run(&args).stdout.trim().to_string()
    };
    for (verb, what) in [
        ("get", "pods"),
        ("list", "pods"),
        ("watch", "pods"),
        ("update", "pods/finalizers"),
        ("create", "persistentvolumeclaims"),
        ("watch", "persistentvolumeclaims"),
        ("create", "events"),
        ("patch", "events.events.k8s.io"),
    ] {
        assert_eq!(can(verb, what), "yes", "{verb} {what}");
    }
    for (verb, what) in [
        ("delete", "persistentvolumeclaims"),
        ("update", "persistentvolumeclaims"),
        ("create", "pods"),
        ("get", "secrets"),
        ("get", "persistentvolumes"),
    ] {
        assert_eq!(can(verb, what), "no", "{verb} {what}");
    }
    let role = k.json(&[
        "get",
        "clusterrolebinding",
        "system:controller:ephemeral-volume-controller",
    ]);
    assert_eq!(
        role["subjects"],
        json!([{"kind": "ServiceAccount", "name": "ephemeral-volume-controller",
                "namespace": "kube-system"}])
    );
    assert_eq!(
        role["roleRef"]["name"],
        "system:controller:ephemeral-volume-controller"
    );
}
