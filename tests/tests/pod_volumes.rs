//! PersistentVolumeClaims in pods on a real node: etcd, the API server, the controller
//! manager's volume binder, a kubelet on a private containerd, and the `skiff-csi` shared
//! driver registering itself through the kubelet's plugin registration socket and
//! provisioning the claim. The node's CSINode lists the driver; one pod writes through the
//! claim and another reads it; a read-only mount refuses writes; a subPath lands inside the
//! volume; the pod's fsGroup owns the volume; a pod whose claim is missing is not started and
//! says why; a deleted pod's publish directory goes while the data stays. With the `local`
//! driver, a kubelet restarted under pods with published volumes leaves them running and
//! mounted once, and cleans up after a pod deleted while it was away.

use std::path::Path;

use serde_json::{json, Value};
use skiff_e2e::node::Node;
use skiff_e2e::{Cluster, Daemon, Kubectl};

async fn ready(node: &Node, k: &Kubectl, name: &str) -> Value {
    node.wait_for(k, &format!("pod {name} Ready"), || {
        let p = k.get_opt(&["pod", name])?;
        let ok = p["status"]["conditions"]
            .as_array()?
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        ok.then_some(p)
    })
    .await
}

async fn sh(node: &Node, pod: &Value, script: &str) -> String {
    let (code, out) = node.exec_in(pod, &["sh", "-c", script]).await;
    assert_eq!(code, 0, "{script}: {out}");
    out
}

fn pod(node: &Node, name: &str, claim: &str, mount: Value, extra: Value) -> Value {
    let mut p = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "nodeName": "node-a",
            "automountServiceAccountToken": false,
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "main", "image": node.images.busybox,
                "command": ["sleep", "3600"], "volumeMounts": [mount]}],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]
        }
    });
    if let (Some(spec), Some(extra)) = (p["spec"].as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    p
}

#[tokio::test]
async fn claims_through_the_csi_driver_in_pods() {
    let c = Cluster::start().await.unwrap();
    let _cm = Daemon::start(
        "skiff-controller-manager",
        &c.api,
        &[
            "--port=0",
            "--leader-elect=false",
            "--controllers=serviceaccount,persistentvolume-binder,pvc-protection,pv-protection",
        ],
    )
    .unwrap();
    let node = Node::start(&c.api.kubeconfig, "node-a", &[]).unwrap();
    let k = c.kubectl();
    let data_dir = tempfile::tempdir().unwrap();
    let root = node.kubelet.root_dir.clone();
    let _driver = Daemon::start(
        "skiff-csi",
        &c.api,
        &[
            "--driver=shared.csi.skiff.dev",
            "--node-id=node-a",
            &format!("--data-dir={}", data_dir.path().display()),
            &format!("--kubelet-root-dir={}", root.display()),
            "--http-endpoint=127.0.0.1:0",
        ],
    )
    .unwrap();

    // The driver registers: the node's CSINode lists it, owned by the Node, and the node
    // carries its node ID.
    let csinode = node
        .wait_for(&k, "the CSINode lists the driver", || {
            let c = k.get_opt(&["csinode", "node-a"])?;
            (c["spec"]["drivers"][0]["name"] == "shared.csi.skiff.dev").then_some(c)
        })
        .await;
    assert_eq!(csinode["spec"]["drivers"][0]["nodeID"], "node-a");
    assert_eq!(csinode["metadata"]["ownerReferences"][0]["kind"], "Node");
    let n = k.get_opt(&["node", "node-a"]).unwrap();
    let ids: Value = serde_json::from_str(
        n["metadata"]["annotations"]["csi.volume.kubernetes.io/nodeid"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(ids, json!({"shared.csi.skiff.dev": "node-a"}));

    k.ok_input(
        &["apply", "-f", "-"],
        &json!({"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "storage.k8s.io/v1", "kind": "CSIDriver",
             "metadata": {"name": "shared.csi.skiff.dev"},
             "spec": {"attachRequired": false, "fsGroupPolicy": "File"}},
            {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
             "metadata": {"name": "shared"}, "provisioner": "shared.csi.skiff.dev",
             "volumeBindingMode": "Immediate", "reclaimPolicy": "Delete"},
            {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data"},
             "spec": {"storageClassName": "shared", "accessModes": ["ReadWriteMany"],
                      "resources": {"requests": {"storage": "1Mi"}}}}
        ]})
        .to_string(),
    );
    let pv = node
        .wait_for(&k, "the claim bound", || {
            let c = k.get_opt(&["pvc", "data"])?;
            (c["status"]["phase"] == "Bound")
                .then(|| c["spec"]["volumeName"].as_str().map(String::from))?
        })
        .await;

    // A writer with an fsGroup: the volume belongs to the group.
    let writer = pod(
        &node,
        "writer",
        "data",
        json!({"name": "data", "mountPath": "/data"}),
        json!({"securityContext": {"fsGroup": 1234}}),
    );
    k.ok_input(&["apply", "-f", "-"], &writer.to_string());
    let w = ready(&node, &k, "writer").await;
    sh(&node, &w, "echo hello > /data/greeting").await;
    assert_eq!(sh(&node, &w, "stat -c %g /data").await.trim(), "1234");
    assert_eq!(
        sh(&node, &w, "stat -c %g /data/greeting").await.trim(),
        "1234"
    );
    let uid = w["metadata"]["uid"].as_str().unwrap().to_string();
    let publish = root
        .join("pods")
        .join(&uid)
        .join("volumes/kubernetes.io~csi")
        .join(&pv)
        .join("mount");
    assert!(publish.is_dir(), "{} published", publish.display());

    // A reader through a read-only mount sees the file and cannot write.
    let reader = pod(
        &node,
        "reader",
        "data",
        json!({"name": "data", "mountPath": "/data", "readOnly": true}),
        json!({}),
    );
    k.ok_input(&["apply", "-f", "-"], &reader.to_string());
    let r = ready(&node, &k, "reader").await;
    assert_eq!(sh(&node, &r, "cat /data/greeting").await.trim(), "hello");
    let (code, out) = node
        .exec_in(&r, &["sh", "-c", "echo x > /data/other"])
        .await;
    assert_ne!(code, 0, "a write through a read-only mount: {out}");
    assert!(out.contains("Read-only file system"), "{out}");

    // A subPath is made inside the volume and is all the container sees.
    let sub = pod(
        &node,
        "sub",
        "data",
        json!({"name": "data", "mountPath": "/work", "subPath": "nested/dir"}),
        json!({}),
    );
    k.ok_input(&["apply", "-f", "-"], &sub.to_string());
    let s = ready(&node, &k, "sub").await;
    sh(&node, &s, "echo inside > /work/file").await;
    assert_eq!(
        sh(&node, &w, "cat /data/nested/dir/file").await.trim(),
        "inside"
    );
    assert_eq!(sh(&node, &s, "ls /work").await.trim(), "file");

    // A claim that does not exist: the pod is not started and the event says why.
    let missing = pod(
        &node,
        "orphan",
        "nope",
        json!({"name": "data", "mountPath": "/data"}),
        json!({}),
    );
    k.ok_input(&["apply", "-f", "-"], &missing.to_string());
    let msg = node
        .wait_for(&k, "a FailedMount event for the missing claim", || {
            let ev = k.get_opt(&["events", "--field-selector=involvedObject.name=orphan"])?;
            ev["items"]
                .as_array()?
                .iter()
                .find(|e| e["reason"] == "FailedMount")
                .and_then(|e| e["message"].as_str().map(String::from))
        })
        .await;
    assert!(
        msg.contains("error processing PVC default/nope: failed to fetch PVC from API server: persistentvolumeclaims \"nope\" not found"),
        "{msg}"
    );
    let o = k.get_opt(&["pod", "orphan"]).unwrap();
    assert_eq!(o["status"]["phase"], "Pending");
    assert!(o["status"]["containerStatuses"][0]["state"]["running"].is_null());

    // The writer goes: its publish directory goes with it, the data stays.
    k.ok(&["delete", "pod", "writer", "--wait=true"]);
    let pod_dir = root.join("pods").join(&uid);
    node.wait_for(&k, "the writer's publish directory removed", || {
        (!publish.exists() && !pod_dir.exists()).then_some(())
    })
    .await;
    assert_eq!(sh(&node, &r, "cat /data/greeting").await.trim(), "hello");
    assert!(data_dir_holds(data_dir.path(), "greeting"));

    // Tidy: no mount is left behind in the kubelet's directory.
    k.ok(&["delete", "pod", "reader", "sub", "orphan", "--wait=true"]);
    node.wait_for(&k, "every publish directory removed", || {
        let left = std::fs::read_dir(root.join("pods"))
            .into_iter()
            .flatten()
            .flatten()
            .count();
        (left == 0).then_some(())
    })
    .await;
}

/// Whether some volume's content under the driver's data directory holds `file`.
fn data_dir_holds(dir: &Path, file: &str) -> bool {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .any(|v| v.path().join("data").join(file).is_file())
}

/// Mount points under `dir`, by the kernel's mount table (the test shares the kubelet's mount
/// namespace), as often as they are mounted.
fn mounts_under(dir: &Path) -> Vec<String> {
    let want = dir.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| p.replace("\\040", " "))
        .filter(|p| p.starts_with(&want))
        .collect()
}

/// The publish directory of `pod`'s CSI volume `pv` under kubelet root `root`.
fn publish_dir(root: &Path, pod: &Value, pv: &str) -> std::path::PathBuf {
    root.join("pods")
        .join(pod["metadata"]["uid"].as_str().unwrap())
        .join("volumes/kubernetes.io~csi")
        .join(pv)
        .join("mount")
}

#[tokio::test]
async fn a_kubelet_restart_keeps_published_volumes_and_cleans_up_after_pods_gone_meanwhile() {
    let c = Cluster::start().await.unwrap();
    let _cm = Daemon::start(
        "skiff-controller-manager",
        &c.api,
        &[
            "--port=0",
            "--leader-elect=false",
            "--controllers=serviceaccount,persistentvolume-binder,pvc-protection,pv-protection",
        ],
    )
    .unwrap();
    let mut node = Node::start(&c.api.kubeconfig, "node-a", &[]).unwrap();
    let k = c.kubectl();
    let data_dir = tempfile::tempdir().unwrap();
    let root = node.kubelet.root_dir.clone();
    let _driver = Daemon::start(
        "skiff-csi",
        &c.api,
        &[
            "--driver=local.csi.skiff.dev",
            "--node-id=node-a",
            &format!("--data-dir={}", data_dir.path().display()),
            &format!("--kubelet-root-dir={}", root.display()),
            "--http-endpoint=127.0.0.1:0",
        ],
    )
    .unwrap();
    node.wait_for(&k, "the CSINode lists the local driver", || {
        let c = k.get_opt(&["csinode", "node-a"])?;
        (c["spec"]["drivers"][0]["name"] == "local.csi.skiff.dev").then_some(())
    })
    .await;
    // Claims of a WaitForFirstConsumer class, placed on this node as the scheduler would.
    let claim = |name: &str| {
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": name,
                "annotations": {"volume.kubernetes.io/selected-node": "node-a"}},
            "spec": {"storageClassName": "local", "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Mi"}}}})
    };
    k.ok_input(
        &["apply", "-f", "-"],
        &json!({"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "storage.k8s.io/v1", "kind": "CSIDriver",
             "metadata": {"name": "local.csi.skiff.dev"},
             "spec": {"attachRequired": false, "fsGroupPolicy": "File"}},
            {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
             "metadata": {"name": "local"}, "provisioner": "local.csi.skiff.dev",
             "volumeBindingMode": "WaitForFirstConsumer", "reclaimPolicy": "Delete"},
            claim("keep"), claim("gone"),
        ]})
        .to_string(),
    );
    let mount = json!({"name": "data", "mountPath": "/data"});
    for (name, claim) in [("keeper", "keep"), ("goner", "gone")] {
        k.ok_input(
            &["apply", "-f", "-"],
            &pod(&node, name, claim, mount.clone(), json!({})).to_string(),
        );
    }
    let keeper = ready(&node, &k, "keeper").await;
    let goner = ready(&node, &k, "goner").await;
    sh(&node, &keeper, "echo kept > /data/file").await;
    sh(&node, &goner, "echo gone > /data/file").await;
    let pv_of = |claim: &str| {
        k.get_opt(&["pvc", claim]).unwrap()["spec"]["volumeName"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (keep_pv, gone_pv) = (pv_of("keep"), pv_of("gone"));
    let keep_target = publish_dir(&root, &keeper, &keep_pv);
    let gone_target = publish_dir(&root, &goner, &gone_pv);
    let target_str = |p: &Path| p.to_string_lossy().into_owned();
    assert_eq!(
        mounts_under(&root.join("pods"))
            .iter()
            .filter(|m| **m == target_str(&keep_target))
            .count(),
        1
    );
    assert_eq!(mounts_under(&gone_target).len(), 1);
    let container = keeper["status"]["containerStatuses"][0]["containerID"].clone();

    // The kubelet stops (SIGTERM); meanwhile the goner is deleted for good.
    node.kubelet.stop();
    k.ok(&["delete", "pod", "goner", "--grace-period=0", "--force"]);
    assert!(k.get_opt(&["pod", "goner"]).is_none());
    assert_eq!(
        mounts_under(&gone_target).len(),
        1,
        "nothing unmounts while the kubelet is away"
    );
    node.kubelet.restart().unwrap();

    // The goner's volume is unpublished and its directory removed; its claim can go, and
    // with it (reclaim policy Delete) the volume's directory.
    let gone_dir = root
        .join("pods")
        .join(goner["metadata"]["uid"].as_str().unwrap());
    node.wait_for(
        &k,
        "the goner's volume unpublished and its directory removed",
        || (mounts_under(&gone_target).is_empty() && !gone_dir.exists()).then_some(()),
    )
    .await;
    k.ok(&["delete", "pvc", "gone", "--wait=false"]);
    node.wait_for(&k, "the goner's claim and volume deleted", || {
        (k.get_opt(&["pvc", "gone"]).is_none()
            && k.get_opt(&["pv", &gone_pv]).is_none()
            && !data_dir.path().join(&gone_pv).exists())
        .then_some(())
    })
    .await;

    // The keeper runs on, the same container, its volume mounted once and holding its data.
    let after = ready(&node, &k, "keeper").await;
    assert_eq!(
        after["status"]["containerStatuses"][0]["containerID"],
        container
    );
    assert_eq!(after["status"]["containerStatuses"][0]["restartCount"], 0);
    assert_eq!(sh(&node, &after, "cat /data/file").await.trim(), "kept");
    sh(&node, &after, "echo again >> /data/file").await;
    assert_eq!(
        mounts_under(&root.join("pods")),
        vec![target_str(&keep_target)],
        "only the keeper's volume is mounted, once"
    );
    let events = k.ok(&[
        "get",
        "events",
        "--field-selector=involvedObject.name=keeper",
    ]);
    assert!(!events.contains("FailedMount"), "{events}");

    // The keeper's claim, deleted while in use, waits for the pod; once the pod is deleted
    // its volume is unpublished, and the claim and the volume's directory go.
    k.ok(&["delete", "pvc", "keep", "--wait=false"]);
    let pvc = k.get_opt(&["pvc", "keep"]).unwrap();
    assert!(pvc["metadata"]["deletionTimestamp"].is_string(), "{pvc}");
    assert_eq!(
        sh(&node, &after, "cat /data/file").await.trim(),
        "kept\nagain"
    );
    k.ok(&["delete", "pod", "keeper", "--wait=true"]);
    node.wait_for(&k, "no mount left under the kubelet's pods", || {
        mounts_under(&root.join("pods")).is_empty().then_some(())
    })
    .await;
    node.wait_for(&k, "the keeper's claim and volume deleted", || {
        (k.get_opt(&["pvc", "keep"]).is_none()
            && k.get_opt(&["pv", &keep_pv]).is_none()
            && !data_dir.path().join(&keep_pv).exists())
        .then_some(())
    })
    .await;
}
