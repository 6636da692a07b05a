//! Image volumes on a real node: an OCI image from the registry, named in `volumes[].image`,
//! mounted read-only into a container, its files readable and not writable; and the rules the
//! API server applies to such volumes.

use serde_json::json;
use skiff::images::{Entry, ImageSpec};
use skiff_e2e::node::Node;
use skiff_e2e::Cluster;

/// An image of data alone: no program in it.
fn data_image() -> ImageSpec {
    ImageSpec {
        files: vec![
            Entry::Dir("models".into()),
            Entry::File(
                "models/weights.txt".into(),
                b"weights from an image\n".to_vec(),
                0o644,
            ),
            Entry::File("README".into(), b"read me\n".to_vec(), 0o600),
        ],
        entrypoint: vec![],
        cmd: vec![],
        env: vec![],
        ports: vec![],
    }
}

#[tokio::test]
async fn an_image_is_mounted_read_only() {
    let c = Cluster::start().await.unwrap();
    let node = Node::start(&c.api.kubeconfig, "node-a", &[]).unwrap();
    let k = c.kubectl();
    let data = node
        .images
        .registry
        .push(&data_image(), "test/data:1")
        .unwrap();
    let pod = |name: &str, mount: serde_json::Value| {
        json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {
                "nodeName": "node-a",
                "terminationGracePeriodSeconds": 1,
                "volumes": [{"name": "data", "image": {"reference": data}}],
                "containers": [{"name": "c", "image": node.images.busybox,
                    "command": ["sleep", "3600"], "volumeMounts": [mount]}]
            }
        })
        .to_string()
    };

    // subPath is not allowed with an image volume in Kubernetes 1.33.
    let r = k.run_with_input(
        &["apply", "-f", "-"],
        &pod(
            "sub",
            json!({"name": "data", "mountPath": "/data", "subPath": "models"}),
        ),
    );
    assert!(!r.status.success());
    assert!(
        r.stderr.contains(
            "spec.containers[0].volumeMounts[0].subPath: Invalid value: \"models\": not allowed in image volume sources"
        ),
        "{}",
        r.stderr
    );
    let no_ref = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "noref"},
        "spec": {"volumes": [{"name": "data", "image": {"pullPolicy": "Sometimes"}}],
            "containers": [{"name": "c", "image": "busybox:1"}]}});
    let r = k.run_with_input(&["apply", "-f", "-"], &no_ref.to_string());
    assert!(!r.status.success());
    assert!(
        r.stderr
            .contains("spec.volumes[0].image.reference: Required value"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr
            .contains("spec.volumes[0].image.pullPolicy: Unsupported value: \"Sometimes\""),
        "{}",
        r.stderr
    );

    k.ok_input(
        &["apply", "-f", "-"],
        &pod("reader", json!({"name": "data", "mountPath": "/data"})),
    );
    let p = k.json(&["get", "pod", "reader"]);
    // The pull policy defaults as a container image's does.
    assert_eq!(
        p["spec"]["volumes"][0]["image"]["pullPolicy"],
        "IfNotPresent"
    );
    let running = node
        .wait_for(&k, "pod reader running", || {
            let p = k.get_opt(&["pod", "reader"])?;
            p["status"]["containerStatuses"][0]["state"]["running"]
                .is_object()
                .then_some(p)
        })
        .await;
    let (code, out) = node
        .exec_in(&running, &["cat", "/data/models/weights.txt"])
        .await;
    assert_eq!((code, out.as_str()), (0, "weights from an image\n"));
    let (_, mode) = node
        .exec_in(&running, &["stat", "-c", "%a", "/data/README"])
        .await;
    assert_eq!(mode.trim(), "600");
    // Read-only: no new file, no change to what the image holds.
    let (code, out) = node
        .exec_in(&running, &["sh", "-c", "echo x > /data/new"])
        .await;
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("Read-only file system"), "{out}");
    let (code, _) = node
        .exec_in(
            &running,
            &["sh", "-c", "echo x >> /data/models/weights.txt"],
        )
        .await;
    assert_ne!(code, 0);
    let (_, mounts) = node.exec_in(&running, &["cat", "/proc/mounts"]).await;
    let line = mounts
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("/data"))
        .unwrap_or_else(|| panic!("/data mounted:\n{mounts}"));
    assert!(
        line.split_whitespace()
            .nth(3)
            .unwrap()
            .split(',')
            .any(|o| o == "ro"),
        "{line}"
    );
}
