//! The shared driver's provisioner and resizer held by one node at a time: two `skiff-csi`
//! processes for `shared.csi.skiff.dev` (nodes `node-a` and `node-b`, one shared directory)
//! with the API server and the controller manager's volume controllers. The first holds both
//! Leases, named as the CSI sidecars name them, and alone provisions and grows claims (events
//! carry the instance); killed (SIGKILL, so nothing is released), the other takes both over
//! once the Lease expires and serves the next claims; stopped (SIGTERM), it releases them and
//! a restarted first takes over at once. A claim grown goes through the external-resizer's
//! states to a larger `status.capacity`, and one grown past the free space is refused with
//! the driver's error and keeps its size.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use skiff_e2e::{eventually, Cluster, Daemon, Kubectl};

const WAIT: Duration = Duration::from_secs(60);
/// The Lease timings given to both instances.
const LEASE: Duration = Duration::from_secs(6);
const RETRY: Duration = Duration::from_secs(1);

async fn wait_for<T>(k: &Kubectl, logs: &[&Daemon], what: &str, f: impl FnMut() -> Option<T>) -> T {
    match eventually(WAIT, f).await {
        Some(v) => v,
        None => {
            let logs: Vec<String> = logs.iter().map(|d| d.log()).collect();
            panic!(
                "{what}; events:\n{}\nlogs:\n{}",
                k.run(&["get", "events", "-A"]).stdout,
                logs.join("\n----\n")
            )
        }
    }
}

/// Who holds Lease `kube-system/name`.
fn holder(k: &Kubectl, name: &str) -> Option<String> {
    let l = k.get_opt(&["lease", "-n", "kube-system", name])?;
    l["spec"]["holderIdentity"].as_str().map(String::from)
}

const LEASES: [&str; 2] = [
    "shared-csi-skiff-dev",
    "external-resizer-shared-csi-skiff-dev",
];

fn both_held_by(k: &Kubectl, who: &str) -> bool {
    LEASES.iter().all(|l| holder(k, l).as_deref() == Some(who))
}

fn csi(c: &Cluster, node: &str, shared: &Path, root: &Path) -> Daemon {
    Daemon::start(
        "skiff-csi",
        &c.api,
        &[
            "--driver=shared.csi.skiff.dev",
            &format!("--node-id={node}"),
            &format!("--data-dir={}", shared.display()),
            &format!("--kubelet-root-dir={}", root.display()),
            "--register=false",
            "--http-endpoint=127.0.0.1:0",
            &format!("--leader-election-lease-duration={}s", LEASE.as_secs()),
            "--leader-election-renew-deadline=4s",
            &format!("--leader-election-retry-period={}s", RETRY.as_secs()),
        ],
    )
    .unwrap()
}

fn claim(name: &str) -> String {
    json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name},
        "spec": {"storageClassName": "shared", "accessModes": ["ReadWriteMany"],
                 "resources": {"requests": {"storage": "1Mi"}}}})
    .to_string()
}

/// The instances that recorded events of `reason` about claim `name`.
fn reporters(k: &Kubectl, name: &str, reason: &str) -> Vec<String> {
    let ev = k
        .get_opt(&[
            "events",
            &format!("--field-selector=involvedObject.name={name},reason={reason}"),
        ])
        .unwrap_or_default();
    let mut out: Vec<String> = ev["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["reportingInstance"].as_str().map(String::from))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Waits for claim `name` to be bound and returns its volume's name.
async fn bound(k: &Kubectl, logs: &[&Daemon], name: &str) -> String {
    wait_for(k, logs, &format!("claim {name} bound"), || {
        let c = k.get_opt(&["pvc", name])?;
        (c["status"]["phase"] == "Bound")
            .then(|| c["spec"]["volumeName"].as_str().map(String::from))?
    })
    .await
}

/// Grows claim `name` to `size` and waits for its `status.capacity` to say so.
async fn grow(k: &Kubectl, logs: &[&Daemon], name: &str, size: &str) -> Value {
    k.ok(&[
        "patch",
        "pvc",
        name,
        "-p",
        &json!({"spec": {"resources": {"requests": {"storage": size}}}}).to_string(),
    ]);
    wait_for(k, logs, &format!("claim {name} grown to {size}"), || {
        let c = k.get_opt(&["pvc", name])?;
        (c["status"]["capacity"]["storage"] == size).then_some(c)
    })
    .await
}

#[tokio::test]
async fn one_leader_provisions_and_resizes_and_the_other_takes_over() {
    let c = Cluster::start().await.unwrap();
    let cm = Daemon::start(
        "skiff-controller-manager",
        &c.api,
        &[
            "--port=0",
            "--leader-elect=false",
            "--controllers=persistentvolume-binder,persistentvolume-expander,pvc-protection,pv-protection",
        ],
    )
    .unwrap();
    let k = c.kubectl();
    let shared = tempfile::tempdir().unwrap();
    let (root_a, root_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    k.ok_input(
        &["apply", "-f", "-"],
        &json!({"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "storage.k8s.io/v1", "kind": "CSIDriver",
             "metadata": {"name": "shared.csi.skiff.dev"},
             "spec": {"attachRequired": false, "fsGroupPolicy": "File"}},
            {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
             "metadata": {"name": "shared"}, "provisioner": "shared.csi.skiff.dev",
             "volumeBindingMode": "Immediate", "reclaimPolicy": "Delete",
             "allowVolumeExpansion": true},
        ]})
        .to_string(),
    );

    // node-a starts first and takes both Leases; node-b waits as a candidate.
    let mut a = csi(&c, "node-a", shared.path(), root_a.path());
    wait_for(&k, &[&a], "node-a holds both Leases", || {
        both_held_by(&k, "node-a").then_some(())
    })
    .await;
    let mut b = csi(&c, "node-b", shared.path(), root_b.path());
    let lease = k
        .get_opt(&["lease", "-n", "kube-system", LEASES[0]])
        .unwrap();
    assert_eq!(lease["spec"]["leaseDurationSeconds"], LEASE.as_secs());

    // The leader provisions, alone.
    k.ok_input(&["apply", "-f", "-"], &claim("one"));
    let logs = [&a, &b, &cm];
    let pv_one = bound(&k, &logs, "one").await;
    assert_eq!(reporters(&k, "one", "ProvisioningSucceeded"), ["node-a"]);
    assert_eq!(reporters(&k, "one", "Provisioning"), ["node-a"]);
    let pv = k.get_opt(&["pv", &pv_one]).unwrap();
    assert_eq!(
        pv["metadata"]["annotations"]["pv.kubernetes.io/provisioned-by"],
        "shared.csi.skiff.dev"
    );
    assert!(shared.path().join(&pv_one).join("data").is_dir());

    // The leader grows a claim, through the external-resizer's states.
    let one = grow(&k, &logs, "one", "2Mi").await;
    let status = &one["status"];
    assert_eq!(status["allocatedResources"]["storage"], "2Mi", "{one}");
    assert!(status["allocatedResourceStatuses"].is_null(), "{one}");
    let resize_conditions: Vec<&Value> = status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| {
            [
                "Resizing",
                "FileSystemResizePending",
                "ControllerResizeError",
            ]
            .contains(&c["type"].as_str().unwrap_or_default())
        })
        .collect();
    assert!(resize_conditions.is_empty(), "{one}");
    assert_eq!(
        one["metadata"]["annotations"]["volume.kubernetes.io/node-expansion-not-required"],
        "true"
    );
    assert_eq!(
        one["metadata"]["annotations"]["volume.kubernetes.io/storage-resizer"],
        "shared.csi.skiff.dev"
    );
    let pv = k.get_opt(&["pv", &pv_one]).unwrap();
    assert_eq!(pv["spec"]["capacity"]["storage"], "2Mi");
    assert_eq!(reporters(&k, "one", "Resizing"), ["node-a"]);
    assert_eq!(reporters(&k, "one", "VolumeResizeSuccessful"), ["node-a"]);
    let record = std::fs::read_to_string(shared.path().join(&pv_one).join("volume.json")).unwrap();
    assert!(record.contains(&(2u64 << 20).to_string()), "{record}");

    // The leader dies without releasing: the other takes both Leases once they expire.
    a.kill();
    let killed = Instant::now();
    wait_for(&k, &[&b], "node-b holds both Leases", || {
        both_held_by(&k, "node-b").then_some(())
    })
    .await;
    let took = killed.elapsed();
    assert!(
        took <= LEASE + 4 * RETRY + Duration::from_secs(3),
        "taken over after {took:?}"
    );
    let lease = k
        .get_opt(&["lease", "-n", "kube-system", LEASES[0]])
        .unwrap();
    assert!(
        lease["spec"]["leaseTransitions"].as_i64().unwrap() >= 1,
        "{lease}"
    );

    // The new leader provisions and grows the next claim.
    k.ok_input(&["apply", "-f", "-"], &claim("two"));
    let logs = [&b, &cm];
    bound(&k, &logs, "two").await;
    assert_eq!(reporters(&k, "two", "ProvisioningSucceeded"), ["node-b"]);
    grow(&k, &logs, "two", "3Mi").await;
    assert_eq!(reporters(&k, "two", "VolumeResizeSuccessful"), ["node-b"]);

    // A claim grown past the free space: the driver refuses, the claim keeps its size and
    // says what is under way.
    k.ok(&[
        "patch",
        "pvc",
        "one",
        "-p",
        r#"{"spec":{"resources":{"requests":{"storage":"1Pi"}}}}"#,
    ]);
    let failed = wait_for(&k, &logs, "a VolumeResizeFailed event", || {
        let ev = k.get_opt(&[
            "events",
            "--field-selector=involvedObject.name=one,reason=VolumeResizeFailed",
        ])?;
        ev["items"][0]["message"].as_str().map(String::from)
    })
    .await;
    assert!(
        failed.starts_with(&format!(
            "resize volume \"{pv_one}\" by resizer \"shared.csi.skiff.dev\" failed: rpc error: code = ResourceExhausted desc = "
        )),
        "{failed}"
    );
    let one = k.get_opt(&["pvc", "one"]).unwrap();
    assert_eq!(one["status"]["capacity"]["storage"], "2Mi", "{one}");
    assert_eq!(
        one["status"]["allocatedResources"]["storage"], "1Pi",
        "{one}"
    );
    assert_eq!(
        one["status"]["allocatedResourceStatuses"]["storage"], "ControllerResizeInProgress",
        "{one}"
    );
    assert!(
        one["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "Resizing" && c["status"] == "True"),
        "{one}"
    );
    assert_eq!(
        k.get_opt(&["pv", &pv_one]).unwrap()["spec"]["capacity"]["storage"],
        "2Mi"
    );

    // node-a comes back as a candidate; node-b stopped (SIGTERM) releases both Leases and
    // node-a takes them well before they would have expired.
    let mut a = csi(&c, "node-a", shared.path(), root_a.path());
    b.stop();
    let stopped = Instant::now();
    wait_for(&k, &[&a], "node-a holds both Leases again", || {
        both_held_by(&k, "node-a").then_some(())
    })
    .await;
    assert!(
        stopped.elapsed() < LEASE,
        "released Leases taken after {:?}",
        stopped.elapsed()
    );
    assert!(b.log().contains("released the lease"), "{}", b.log());

    // Deleting a claim deletes its volume, through the leader.
    k.ok(&["delete", "pvc", "two", "--wait=false"]);
    wait_for(&k, &[&a, &cm], "claim two's volume deleted", || {
        (k.get_opt(&["pvc", "two"]).is_none()
            && std::fs::read_dir(shared.path())
                .into_iter()
                .flatten()
                .count()
                == 1)
            .then_some(())
    })
    .await;
    a.stop();
}
