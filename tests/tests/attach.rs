//! Volume attachment on a real node: etcd, the API server, the controller manager's volume
//! binder and attach/detach controller, a kubelet on a private containerd, and
//! `skiff-csi-attach-driver` — a CSI driver that needs its volumes attached (as a cloud-disk
//! driver does), registered through the kubelet's plugin registration socket, with
//! `skiff-csi`'s external attacher beside it and every CSI call it serves written to a file.
//!
//! A pod's claim on that driver gets a VolumeAttachment named as Kubernetes names it, attached
//! through `ControllerPublishVolume` with the node's CSI id; the node lists the volume as
//! attached and in use; the kubelet stages and publishes it only after that, with the
//! attachment's metadata as publish context; deleting the pod detaches it
//! (`ControllerUnpublishVolume`, the attachment gone, nothing attached). A driver that fails
//! `ControllerPublishVolume` keeps its pod waiting with `FailedAttachVolume` and `FailedMount`
//! events carrying the driver's error. A VolumeAttachment made by hand is left alone.

use std::path::Path;

use serde_json::{json, Value};
use skiff_e2e::node::Node;
use skiff_e2e::{Cluster, Daemon, Kubectl};

const DRIVER: &str = "attach.csi.test.skiff.dev";
const FAILING: &str = "failing.csi.test.skiff.dev";

/// The calls a driver recorded, in order.
fn calls(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn position(calls: &[Value], call: &str) -> Option<usize> {
    calls.iter().position(|c| c["call"] == call)
}

/// Kubernetes' VolumeAttachment name: csi-<sha256(handle + driver + node)>.
fn attachment_name(handle: &str, driver: &str, node: &str) -> String {
    skiff_rules::attach::attachment_name(handle, driver, node)
}

fn driver(c: &Cluster, root: &Path, name: &str, dir: &Path, extra: &[&str]) -> Daemon {
    let mut args = vec![
        format!("--name={name}"),
        "--node-id=i-0node-a".to_string(),
        format!("--kubelet-root-dir={}", root.display()),
        format!("--data-dir={}", dir.join("volumes").display()),
        format!("--calls={}", dir.join("calls.jsonl").display()),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Daemon::start("skiff-csi-attach-driver", &c.api, &args).unwrap()
}

/// A PersistentVolume of `driver` with handle `handle`, and a claim bound to it by name.
fn volume_and_claim(name: &str, driver: &str, handle: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": format!("pv-{name}")},
         "spec": {"capacity": {"storage": "1Mi"}, "accessModes": ["ReadWriteOnce"],
                  "storageClassName": "", "persistentVolumeReclaimPolicy": "Retain",
                  "csi": {"driver": driver, "volumeHandle": handle,
                          "volumeAttributes": {"tier": "fast"}}}},
        {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name},
         "spec": {"storageClassName": "", "volumeName": format!("pv-{name}"),
                  "accessModes": ["ReadWriteOnce"],
                  "resources": {"requests": {"storage": "1Mi"}}}}
    ]})
}

fn pod(node: &Node, name: &str, claim: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "nodeName": "node-a",
            "automountServiceAccountToken": false,
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "main", "image": node.images.busybox,
                "command": ["sh", "-c", "echo written > /data/proof && sleep 3600"],
                "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]
        }
    })
}

fn event(k: &Kubectl, pod: &str, reason: &str) -> Option<Value> {
    let ev = k.get_opt(&[
        "events",
        &format!("--field-selector=involvedObject.name={pod}"),
    ])?;
    ev["items"]
        .as_array()?
        .iter()
        .find(|e| e["reason"] == reason)
        .cloned()
}

#[tokio::test]
async fn volumes_are_attached_before_use_and_detached_after() {
    let c = Cluster::start().await.unwrap();
    let _cm = Daemon::start(
        "skiff-controller-manager",
        &c.api,
        &[
            "--port=0",
            "--leader-elect=false",
            "--controllers=serviceaccount,persistentvolume-binder,pvc-protection,pv-protection,attachdetach",
        ],
    )
    .unwrap();
    let node = Node::start(&c.api.kubeconfig, "node-a", &[]).unwrap();
    let k = c.kubectl();
    let root = node.kubelet.root_dir.clone();
    let dir = tempfile::tempdir().unwrap();
    let _driver = driver(&c, &root, DRIVER, &dir.path().join("ok"), &["--stage"]);
    let _failing = driver(
        &c,
        &root,
        FAILING,
        &dir.path().join("failing"),
        &["--fail-publish=the disk is attached to another instance"],
    );
    let calls_ok = dir.path().join("ok/calls.jsonl");
    let calls_failing = dir.path().join("failing/calls.jsonl");

    // Both drivers register; the CSINode carries their own id for the node.
    let csinode = node
        .wait_for(&k, "the CSINode lists both drivers", || {
            let c = k.get_opt(&["csinode", "node-a"])?;
            (c["spec"]["drivers"].as_array()?.len() == 2).then_some(c)
        })
        .await;
    assert_eq!(csinode["spec"]["drivers"][0]["nodeID"], "i-0node-a");

    // No CSIDriver object for the first driver: attaching is required, as in Kubernetes. The
    // failing one says so explicitly.
    k.ok_input(
        &["apply", "-f", "-"],
        &json!({"apiVersion": "storage.k8s.io/v1", "kind": "CSIDriver",
            "metadata": {"name": FAILING}, "spec": {"attachRequired": true}})
        .to_string(),
    );
    k.ok_input(
        &["apply", "-f", "-"],
        &volume_and_claim("disk", DRIVER, "vol-1").to_string(),
    );
    k.ok_input(
        &["apply", "-f", "-"],
        &volume_and_claim("broken", FAILING, "vol-2").to_string(),
    );
    node.wait_for(&k, "both claims bound", || {
        let a = k.get_opt(&["pvc", "disk"])?;
        let b = k.get_opt(&["pvc", "broken"])?;
        (a["status"]["phase"] == "Bound" && b["status"]["phase"] == "Bound").then_some(())
    })
    .await;

    // A VolumeAttachment made by hand for the node: never the controller's to delete.
    k.ok_input(
        &["apply", "-f", "-"],
        &json!({"apiVersion": "storage.k8s.io/v1", "kind": "VolumeAttachment",
            "metadata": {"name": "by-hand"},
            "spec": {"attacher": "other.example.com", "nodeName": "node-a",
                     "source": {"persistentVolumeName": "pv-disk"}}})
        .to_string(),
    );

    k.ok_input(
        &["apply", "-f", "-"],
        &pod(&node, "app", "disk").to_string(),
    );
    let va_name = attachment_name("vol-1", DRIVER, "node-a");
    let va = node
        .wait_for(&k, "the VolumeAttachment attached", || {
            let va = k.get_opt(&["volumeattachment", &va_name])?;
            (va["status"]["attached"] == true).then_some(va)
        })
        .await;
    assert_eq!(va["spec"]["attacher"], DRIVER);
    assert_eq!(va["spec"]["nodeName"], "node-a");
    assert_eq!(va["spec"]["source"]["persistentVolumeName"], "pv-disk");
    assert_eq!(
        va["status"]["attachmentMetadata"],
        json!({"devicePath": "/dev/test/vol-1", "attachedTo": "i-0node-a"})
    );
    assert_eq!(
        va["metadata"]["finalizers"],
        json!(["external-attacher/attach-csi-test-skiff-dev"])
    );
    // `kubectl get volumeattachments` shows it attached.
    let table = k.ok(&["get", "volumeattachments"]);
    let row = table.lines().find(|l| l.starts_with(&va_name)).unwrap();
    assert!(
        row.contains(DRIVER)
            && row.contains("pv-disk")
            && row.contains("node-a")
            && row.contains("true"),
        "{table}"
    );

    let unique = format!("kubernetes.io/csi/{DRIVER}^vol-1");
    let n = node
        .wait_for(&k, "the node lists the volume attached and in use", || {
            let n = k.get_opt(&["node", "node-a"])?;
            let attached =
                n["status"]["volumesAttached"] == json!([{"name": unique, "devicePath": ""}]);
            let in_use = n["status"]["volumesInUse"]
                .as_array()
                .is_some_and(|v| v.contains(&json!(unique)));
            (attached && in_use).then_some(n)
        })
        .await;
    assert!(n["status"]["volumesAttached"].as_array().unwrap().len() == 1);

    // The pod runs on the attached volume; the attach came first, and its metadata reached
    // the node's staging and publishing.
    let app = node
        .wait_for(&k, "the pod Running", || {
            let p = k.get_opt(&["pod", "app"])?;
            (p["status"]["phase"] == "Running").then_some(p)
        })
        .await;
    let (code, out) = node.exec_in(&app, &["sh", "-c", "cat /data/proof"]).await;
    assert_eq!((code, out.trim()), (0, "written"));
    assert!(dir.path().join("ok/volumes/vol-1/proof").is_file());
    let seen = calls(&calls_ok);
    let publish = position(&seen, "ControllerPublishVolume").expect("ControllerPublishVolume");
    let stage = position(&seen, "NodeStageVolume").expect("NodeStageVolume");
    let node_publish = position(&seen, "NodePublishVolume").expect("NodePublishVolume");
    assert!(publish < stage && stage < node_publish, "{seen:#?}");
    assert_eq!(seen[publish]["node_id"], "i-0node-a");
    assert_eq!(seen[publish]["volume_id"], "vol-1");
    assert_eq!(seen[publish]["volume_context"], json!({"tier": "fast"}));
    let context = json!({"devicePath": "/dev/test/vol-1", "attachedTo": "i-0node-a"});
    assert_eq!(seen[stage]["publish_context"], context);
    assert_eq!(seen[node_publish]["publish_context"], context);
    let ok = event(&k, "app", "SuccessfulAttachVolume").expect("SuccessfulAttachVolume");
    assert_eq!(
        ok["message"],
        "AttachVolume.Attach succeeded for volume \"pv-disk\" "
    );
    assert_eq!(ok["source"]["component"], "attachdetach-controller");

    // The failing driver: the attachment records the driver's error, the pod waits and says
    // why, and the node never stages or publishes the volume.
    k.ok_input(
        &["apply", "-f", "-"],
        &pod(&node, "stuck", "broken").to_string(),
    );
    let failed = node
        .wait_for(&k, "FailedAttachVolume on the stuck pod", || {
            event(&k, "stuck", "FailedAttachVolume")
        })
        .await;
    let why = "rpc error: code = Internal desc = the disk is attached to another instance";
    assert_eq!(
        failed["message"],
        format!("AttachVolume.Attach failed for volume \"pv-broken\" : {why}")
    );
    assert_eq!(failed["type"], "Warning");
    let mount = node
        .wait_for(&k, "FailedMount on the stuck pod", || {
            event(&k, "stuck", "FailedMount")
        })
        .await;
    assert_eq!(
        mount["message"],
        format!("MountVolume.WaitForAttach failed for volume \"pv-broken\" : {why}")
    );
    let stuck_va = k
        .get_opt(&[
            "volumeattachment",
            &attachment_name("vol-2", FAILING, "node-a"),
        ])
        .unwrap();
    assert_eq!(stuck_va["status"]["attached"], false);
    assert_eq!(stuck_va["status"]["attachError"]["message"], why);
    let stuck = k.get_opt(&["pod", "stuck"]).unwrap();
    assert_eq!(stuck["status"]["phase"], "Pending");
    let seen = calls(&calls_failing);
    assert!(
        position(&seen, "ControllerPublishVolume").is_some(),
        "{seen:#?}"
    );
    assert!(position(&seen, "NodePublishVolume").is_none(), "{seen:#?}");
    let n = k.get_opt(&["node", "node-a"]).unwrap();
    assert_eq!(n["status"]["volumesAttached"].as_array().unwrap().len(), 1);

    // Deleting the pods detaches: unpublished on the node first, then unpublished from it by
    // the attacher; the attachments and the node's lists empty.
    k.ok(&["delete", "pod", "app", "stuck", "--wait=true"]);
    node.wait_for(&k, "both attachments gone", || {
        let list = k.get_opt(&["volumeattachments"])?;
        let names: Vec<&str> = list["items"]
            .as_array()?
            .iter()
            .filter_map(|v| v["metadata"]["name"].as_str())
            .collect();
        (names == ["by-hand"]).then_some(())
    })
    .await;
    let seen = calls(&calls_ok);
    let unpublish = position(&seen, "NodeUnpublishVolume").expect("NodeUnpublishVolume");
    let unstage = position(&seen, "NodeUnstageVolume").expect("NodeUnstageVolume");
    let detach = position(&seen, "ControllerUnpublishVolume").expect("ControllerUnpublishVolume");
    assert!(unpublish < unstage && unstage < detach, "{seen:#?}");
    assert_eq!(seen[detach]["node_id"], "i-0node-a");
    assert_eq!(seen[detach]["volume_id"], "vol-1");
    assert!(
        position(&calls(&calls_failing), "ControllerUnpublishVolume").is_some(),
        "the failed attachment is unpublished too"
    );
    node.wait_for(&k, "the node lists nothing attached or in use", || {
        let n = k.get_opt(&["node", "node-a"])?;
        (n["status"]["volumesAttached"].is_null() && n["status"]["volumesInUse"].is_null())
            .then_some(())
    })
    .await;
    // The data stays on the volume; the hand-made attachment is untouched.
    assert!(dir.path().join("ok/volumes/vol-1/proof").is_file());
    let by_hand = k.get_opt(&["volumeattachment", "by-hand"]).unwrap();
    assert!(by_hand["metadata"]["deletionTimestamp"].is_null());
}
