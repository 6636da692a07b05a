//! PersistentVolumes and PersistentVolumeClaims end to end, against a real etcd, a real
//! skiff-apiserver and skiff-controller-manager's volume controllers, driven with the real
//! kubectl: both types created, defaulted and listed with kube's columns; malformed ones and
//! forbidden changes refused in Kubernetes' words; the default StorageClass given to a claim
//! that names none; a claim bound to the smallest fitting volume; claims no volume fits left
//! Pending with kube's events (no class, no provisioner, an external provisioner, waiting for
//! a consumer); a claim in use by a pod kept until the pod goes; `Retain` leaving a volume
//! Released and `Delete` removing it; growing a claim refused unless its class allows it, and
//! handed to the driver's resizer when it does.

use std::time::Duration;

use serde_json::Value;
use skiff_e2e::{eventually, table_row, Cluster, Daemon, Kubectl};

const WAIT: Duration = Duration::from_secs(30);

/// An API server and a controller manager running the volume controllers.
struct Env {
    cm: Daemon,
    c: Cluster,
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
                "--controllers=serviceaccount,persistentvolume-binder,persistentvolume-expander,pvc-protection,pv-protection",
            ],
        )
        .unwrap();
        Env { cm, c }
    }

    fn kubectl(&self) -> Kubectl {
        self.c.kubectl()
    }

    /// `.field` of an object, through kubectl's jsonpath.
    fn field(&self, what: &[&str], path: &str) -> String {
        let mut args = vec!["get"];
        args.extend(what);
        let jp = format!("-o=jsonpath={{{path}}}");
        args.push(&jp);
        self.kubectl().run(&args).stdout
    }

    async fn wait_field(&self, what: &[&str], path: &str, want: &str) {
        let got = eventually(WAIT, || (self.field(what, path) == want).then_some(())).await;
        assert!(
            got.is_some(),
            "{what:?} {path} never became {want:?} (is {:?})\n{}",
            self.field(what, path),
            self.cm.log()
        );
    }

    /// The messages of the events about `name` with `reason`.
    fn events(&self, name: &str, reason: &str) -> Vec<String> {
        let v = self.kubectl().json(&["get", "events"]);
        v["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["involvedObject"]["name"] == name && e["reason"] == reason)
            .map(|e| e["message"].as_str().unwrap_or("").to_string())
            .collect()
    }

    async fn wait_event(&self, name: &str, reason: &str) -> String {
        match eventually(WAIT, || self.events(name, reason).into_iter().next()).await {
            Some(m) => m,
            None => panic!(
                "no {reason} event for {name}\n{}",
                self.kubectl().ok(&["get", "events"])
            ),
        }
    }
}

fn pv(name: &str, size: &str, class: &str, policy: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: PersistentVolume
metadata: {{name: {name}, labels: {{size: "{size}"}}}}
spec:
  capacity: {{storage: {size}}}
  accessModes: [ReadWriteOnce]
  storageClassName: "{class}"
  persistentVolumeReclaimPolicy: {policy}
  hostPath: {{path: /tmp/skiff-volumes/{name}}}
"#
    )
}

fn pvc(name: &str, size: &str, class: Option<&str>) -> String {
    let class = class
        .map(|c| format!("  storageClassName: \"{c}\"\n"))
        .unwrap_or_default();
    format!(
        r#"
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: {name}}}
spec:
  accessModes: [ReadWriteOnce]
  resources: {{requests: {{storage: {size}}}}}
{class}"#
    )
}

#[tokio::test]
async fn volumes_and_claims_are_defaulted_validated_and_listed() {
    let c = Cluster::start().await.unwrap();
    let k = c.kubectl();
    k.ok_input(&["create", "-f", "-"], &pv("pv-a", "1536Mi", "", "Retain"));
    let mut spec = pv("pv-b", "1Gi", "fast", "Delete");
    spec = spec.replace("  persistentVolumeReclaimPolicy: Delete\n", "");
    k.ok_input(&["create", "-f", "-"], &spec);
    k.ok_input(&["create", "-f", "-"], &pvc("data", "1Gi", Some("fast")));

    // Kubernetes' defaults, the protection finalizers and the first phases.
    let v = k.json(&["get", "pv", "pv-b"]);
    assert_eq!(v["spec"]["persistentVolumeReclaimPolicy"], "Retain");
    assert_eq!(v["spec"]["volumeMode"], "Filesystem");
    assert_eq!(v["status"]["phase"], "Pending");
    assert_eq!(
        v["metadata"]["finalizers"],
        serde_json::json!(["kubernetes.io/pv-protection"])
    );
    let claim = k.json(&["get", "pvc", "data"]);
    assert_eq!(claim["spec"]["volumeMode"], "Filesystem");
    assert_eq!(claim["status"]["phase"], "Pending");
    assert_eq!(
        claim["metadata"]["finalizers"],
        serde_json::json!(["kubernetes.io/pvc-protection"])
    );

    // kubectl's columns.
    let out = k.ok(&["get", "pv"]);
    let (header, row) = table_row(&out, "pv-a");
    assert_eq!(
        header,
        [
            "NAME",
            "CAPACITY",
            "ACCESS",
            "MODES",
            "RECLAIM",
            "POLICY",
            "STATUS",
            "CLAIM",
            "STORAGECLASS",
            "VOLUMEATTRIBUTESCLASS",
            "REASON",
            "AGE"
        ]
    );
    assert_eq!(
        row[..6],
        ["pv-a", "1536Mi", "RWO", "Retain", "Pending", "<unset>"]
    );
    let out = k.ok(&["get", "pvc"]);
    let (header, row) = table_row(&out, "data");
    assert_eq!(
        header,
        [
            "NAME",
            "STATUS",
            "VOLUME",
            "CAPACITY",
            "ACCESS",
            "MODES",
            "STORAGECLASS",
            "VOLUMEATTRIBUTESCLASS",
            "AGE"
        ]
    );
    assert_eq!(row[..4], ["data", "Pending", "fast", "<unset>"]);
    let wide = k.ok(&["get", "pvc", "-o", "wide"]);
    assert!(
        wide.contains("VOLUMEMODE") && wide.contains("Filesystem"),
        "{wide}"
    );
    // Short names, and the field selector kube's claims answer.
    assert!(k.ok(&["get", "pv", "pv-a"]).contains("pv-a"));
    let out = k.ok(&["get", "pvc", "--field-selector", "metadata.name=data"]);
    assert!(out.contains("data"), "{out}");

    // Malformed volumes and claims, in Kubernetes' words.
    let bad_pv = r#"
apiVersion: v1
kind: PersistentVolume
metadata: {name: bad}
spec:
  capacity: {storage: "0"}
  accessModes: [Sometimes]
  local: {path: /data}
"#;
    let e = k.run_with_input(&["create", "-f", "-"], bad_pv).stderr;
    for want in [
        "The PersistentVolume \"bad\" is invalid:",
        "spec.accessModes: Unsupported value: \"Sometimes\": supported values: \"ReadOnlyMany\", \"ReadWriteMany\", \"ReadWriteOnce\", \"ReadWriteOncePod\"",
        "spec.capacity[storage]: Invalid value: \"0\": must be greater than zero",
        "spec.nodeAffinity: Required value: Local volume requires node affinity",
    ] {
        assert!(e.contains(want), "missing {want:?} in:\n{e}");
    }
    let no_source = "apiVersion: v1\nkind: PersistentVolume\nmetadata: {name: bad}\nspec: {}\n";
    let e = k.run_with_input(&["create", "-f", "-"], no_source).stderr;
    for want in [
        "spec.accessModes: Required value",
        "spec.capacity: Required value",
        "spec: Required value: must specify a volume type",
    ] {
        assert!(e.contains(want), "missing {want:?} in:\n{e}");
    }
    let two = pv("bad", "1Gi", "", "Retain").replace(
        "hostPath:",
        "nfs: {server: nfs.example.com, path: /exports}\n  hostPath:",
    );
    let e = k.run_with_input(&["create", "-f", "-"], &two).stderr;
    assert!(
        e.contains("spec.nfs: Forbidden: may not specify more than 1 volume type"),
        "{e}"
    );
    let bad_claim = "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: bad}\nspec: {volumeMode: Raw}\n";
    let e = k.run_with_input(&["create", "-f", "-"], bad_claim).stderr;
    for want in [
        "The PersistentVolumeClaim \"bad\" is invalid:",
        "spec.accessModes: Required value: at least 1 access mode is required",
        "spec.resources[storage]: Required value",
        "spec.volumeMode: Unsupported value: \"Raw\": supported values: \"Block\", \"Filesystem\"",
    ] {
        assert!(e.contains(want), "missing {want:?} in:\n{e}");
    }
    assert!(k.run(&["get", "pvc", "bad"]).stderr.contains("NotFound"));

    // A claim's spec is fixed, and an unbound claim cannot grow.
    let e = k.fails(&[
        "patch",
        "pvc",
        "data",
        "--type=merge",
        "-p",
        r#"{"spec":{"accessModes":["ReadWriteMany"]}}"#,
    ]);
    assert!(
        e.contains("spec: Forbidden: spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims"),
        "{e}"
    );
    let e = k.fails(&[
        "patch",
        "pvc",
        "data",
        "--type=merge",
        "-p",
        r#"{"spec":{"resources":{"requests":{"storage":"2Gi"}}}}"#,
    ]);
    assert!(e.contains("spec is immutable after creation"), "{e}");
    // A volume's source is fixed; its capacity is not.
    let e = k.fails(&[
        "patch",
        "pv",
        "pv-a",
        "--type=merge",
        "-p",
        r#"{"spec":{"hostPath":{"path":"/elsewhere"}}}"#,
    ]);
    assert!(
        e.contains("spec.persistentvolumesource: Forbidden: spec.persistentvolumesource is immutable after creation"),
        "{e}"
    );
    k.ok(&[
        "patch",
        "pv",
        "pv-a",
        "--type=merge",
        "-p",
        r#"{"spec":{"capacity":{"storage":"2Gi"}}}"#,
    ]);
    // The status subresource changes the status alone.
    k.ok(&[
        "patch",
        "pvc",
        "data",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"phase":"Lost"},"spec":{"volumeName":"nope"}}"#,
    ]);
    let claim = k.json(&["get", "pvc", "data"]);
    assert_eq!(claim["status"]["phase"], "Lost");
    assert!(claim["spec"].get("volumeName").is_none(), "{claim}");
}

#[tokio::test]
async fn claims_bind_to_the_smallest_fitting_volume_and_are_released() {
    let env = Env::start().await;
    let k = env.kubectl();
    let classes = r#"
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: manual
  annotations: {storageclass.kubernetes.io/is-default-class: "true"}
provisioner: kubernetes.io/no-provisioner
"#;
    k.ok_input(&["create", "-f", "-"], classes);
    for (name, size, policy) in [
        ("pv-big", "5Gi", "Retain"),
        ("pv-mid", "2Gi", "Retain"),
        ("pv-small", "1Gi", "Retain"),
        ("pv-gone", "3Gi", "Delete"),
    ] {
        k.ok_input(&["create", "-f", "-"], &pv(name, size, "manual", policy));
    }
    for name in ["pv-big", "pv-mid", "pv-small", "pv-gone"] {
        env.wait_field(&["pv", name], ".status.phase", "Available")
            .await;
    }

    // No class named: the default class is given, and the smallest volume that fits bound.
    k.ok_input(&["create", "-f", "-"], &pvc("data", "1500Mi", None));
    assert_eq!(
        env.field(&["pvc", "data"], ".spec.storageClassName"),
        "manual"
    );
    env.wait_field(&["pvc", "data"], ".status.phase", "Bound")
        .await;
    let out = k.ok(&["get", "pvc", "data"]);
    let (_, row) = table_row(&out, "data");
    assert_eq!(
        row[..6],
        ["data", "Bound", "pv-mid", "2Gi", "RWO", "manual"]
    );
    let claim = k.json(&["get", "pvc", "data"]);
    assert_eq!(
        claim["metadata"]["annotations"]["pv.kubernetes.io/bind-completed"],
        "yes"
    );
    assert_eq!(
        claim["metadata"]["annotations"]["pv.kubernetes.io/bound-by-controller"],
        "yes"
    );
    env.wait_field(&["pv", "pv-mid"], ".status.phase", "Bound")
        .await;
    let out = k.ok(&["get", "pv", "pv-mid"]);
    let (_, row) = table_row(&out, "pv-mid");
    assert_eq!(
        row[..6],
        ["pv-mid", "2Gi", "RWO", "Retain", "Bound", "default/data"]
    );
    assert_eq!(
        env.field(&["pv", "pv-mid"], ".spec.claimRef.uid"),
        claim["metadata"]["uid"].as_str().unwrap()
    );

    // Claims no volume fits stay Pending and say why.
    k.ok_input(&["create", "-f", "-"], &pvc("huge", "100Gi", None));
    let m = env.wait_event("huge", "ProvisioningFailed").await;
    assert_eq!(
        m,
        "no volume plugin matched name: kubernetes.io/no-provisioner"
    );
    k.ok_input(&["create", "-f", "-"], &pvc("classless", "1Gi", Some("")));
    let m = env.wait_event("classless", "FailedBinding").await;
    assert_eq!(
        m,
        "no persistent volumes available for this claim and no storage class is set"
    );
    assert_eq!(env.field(&["pvc", "classless"], ".status.phase"), "Pending");

    // A class whose provisioner is a driver: the claim is handed to it.
    let csi = r#"
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: csi}
provisioner: csi.example.com
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: later}
provisioner: csi.example.com
volumeBindingMode: WaitForFirstConsumer
"#;
    k.ok_input(&["create", "-f", "-"], csi);
    k.ok_input(&["create", "-f", "-"], &pvc("dynamic", "1Gi", Some("csi")));
    let m = env.wait_event("dynamic", "ExternalProvisioning").await;
    assert_eq!(m, "Waiting for a volume to be created either by the external provisioner 'csi.example.com' or manually by the system administrator. If volume creation is delayed, please verify that the provisioner is running and correctly registered.");
    let ann = k.json(&["get", "pvc", "dynamic"])["metadata"]["annotations"].clone();
    assert_eq!(
        ann["volume.kubernetes.io/storage-provisioner"],
        "csi.example.com"
    );
    assert_eq!(
        ann["volume.beta.kubernetes.io/storage-provisioner"],
        "csi.example.com"
    );
    // Waiting for a consumer: nothing is provisioned until the scheduler picks a node.
    k.ok_input(
        &["create", "-f", "-"],
        &pvc("waiting", "1Gi", Some("later")),
    );
    let m = env.wait_event("waiting", "WaitForFirstConsumer").await;
    assert_eq!(m, "waiting for first consumer to be created before binding");
    let ann = k.json(&["get", "pvc", "waiting"])["metadata"]["annotations"].clone();
    assert!(
        ann.get("volume.kubernetes.io/storage-provisioner")
            .is_none(),
        "{ann}"
    );
    // The scheduler's choice of node lets the provisioner make it.
    k.ok(&[
        "annotate",
        "pvc",
        "waiting",
        "volume.kubernetes.io/selected-node=node-1",
    ]);
    env.wait_field(
        &["pvc", "waiting"],
        ".metadata.annotations.volume\\.kubernetes\\.io/storage-provisioner",
        "csi.example.com",
    )
    .await;

    // A pre-bound claim gets the volume it names, however big.
    let pre = pvc("pinned", "1Gi", None).replace("spec:\n", "spec:\n  volumeName: pv-big\n");
    k.ok_input(&["create", "-f", "-"], &pre);
    env.wait_field(&["pvc", "pinned"], ".status.phase", "Bound")
        .await;
    assert_eq!(
        env.field(&["pvc", "pinned"], ".status.capacity.storage"),
        "5Gi"
    );

    // Growing a claim its class does not allow to grow is refused.
    let e = k.fails(&[
        "patch",
        "pvc",
        "data",
        "--type=merge",
        "-p",
        r#"{"spec":{"resources":{"requests":{"storage":"2Gi"}}}}"#,
    ]);
    assert!(e.contains("persistentvolumeclaims \"data\" is forbidden: only dynamically provisioned pvc can be resized and the storageclass that provisions the pvc must support resize"), "{e}");
    // And shrinking any claim.
    let e = k.fails(&[
        "patch",
        "pvc",
        "data",
        "--type=merge",
        "-p",
        r#"{"spec":{"resources":{"requests":{"storage":"1Gi"}}}}"#,
    ]);
    assert!(
        e.contains("field can not be less than previous value"),
        "{e}"
    );

    // A pod using the claim holds its deletion until the pod goes.
    let pod = r#"
apiVersion: v1
kind: Pod
metadata: {name: user}
spec:
  nodeName: node-1
  automountServiceAccountToken: false
  containers: [{name: c, image: busybox, volumeMounts: [{name: d, mountPath: /data}]}]
  volumes: [{name: d, persistentVolumeClaim: {claimName: data}}]
"#;
    eventually(WAIT, || {
        k.run(&["get", "serviceaccount", "default"])
            .status
            .success()
            .then_some(())
    })
    .await
    .expect("the default ServiceAccount");
    k.ok_input(&["create", "-f", "-"], pod);
    k.ok(&["delete", "pvc", "data", "--wait=false"]);
    env.wait_field(
        &["pvc", "data"],
        ".metadata.finalizers[0]",
        "kubernetes.io/pvc-protection",
    )
    .await;
    assert!(!env
        .field(&["pvc", "data"], ".metadata.deletionTimestamp")
        .is_empty());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let out = k.ok(&["get", "pvc", "data"]);
    assert_eq!(table_row(&out, "data").1[1], "Terminating");
    k.ok(&["delete", "pod", "user", "--grace-period=0", "--force"]);
    let gone = eventually(WAIT, || {
        k.run(&["get", "pvc", "data"])
            .stderr
            .contains("NotFound")
            .then_some(())
    })
    .await;
    assert!(
        gone.is_some(),
        "claim kept after its pod went\n{}",
        env.cm.log()
    );
    // Its volume is Released and, with Retain, kept.
    env.wait_field(&["pv", "pv-mid"], ".status.phase", "Released")
        .await;
    assert_eq!(env.field(&["pv", "pv-mid"], ".spec.claimRef.name"), "data");
    // A Released volume is not bound again.
    k.ok_input(&["create", "-f", "-"], &pvc("next", "2Gi", None));
    env.wait_field(&["pvc", "next"], ".status.phase", "Bound")
        .await;
    assert_eq!(env.field(&["pvc", "next"], ".spec.volumeName"), "pv-gone");

    // A bound volume being deleted stays while its claim holds it; with Delete it goes once
    // the claim does.
    k.ok(&["delete", "pv", "pv-gone", "--wait=false"]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let out = k.ok(&["get", "pv", "pv-gone"]);
    assert_eq!(table_row(&out, "pv-gone").1[4], "Terminating");
    k.ok(&["delete", "pvc", "next"]);
    let gone = eventually(WAIT, || {
        k.run(&["get", "pv", "pv-gone"])
            .stderr
            .contains("NotFound")
            .then_some(())
    })
    .await;
    assert!(gone.is_some(), "Delete volume kept\n{}", env.cm.log());
}

#[tokio::test]
async fn claims_of_expandable_classes_grow_through_the_driver() {
    let env = Env::start().await;
    let k = env.kubectl();
    let objs = r#"
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: grow}
provisioner: csi.example.com
allowVolumeExpansion: true
---
apiVersion: v1
kind: PersistentVolume
metadata:
  name: pv-csi
  annotations: {pv.kubernetes.io/provisioned-by: csi.example.com}
spec:
  capacity: {storage: 1Gi}
  accessModes: [ReadWriteOnce]
  storageClassName: grow
  persistentVolumeReclaimPolicy: Delete
  csi: {driver: csi.example.com, volumeHandle: vol-1}
"#;
    k.ok_input(&["create", "-f", "-"], objs);
    k.ok_input(&["create", "-f", "-"], &pvc("data", "1Gi", Some("grow")));
    env.wait_field(&["pvc", "data"], ".status.phase", "Bound")
        .await;
    k.ok(&[
        "patch",
        "pvc",
        "data",
        "--type=merge",
        "-p",
        r#"{"spec":{"resources":{"requests":{"storage":"3Gi"}}}}"#,
    ]);
    env.wait_field(
        &["pvc", "data"],
        ".metadata.annotations.volume\\.kubernetes\\.io/storage-resizer",
        "csi.example.com",
    )
    .await;
    // The claim's capacity is the driver's to grow.
    assert_eq!(
        env.field(&["pvc", "data"], ".status.capacity.storage"),
        "1Gi"
    );

    // A provisioned volume with Delete is Released and left to its provisioner.
    k.ok(&["delete", "pvc", "data"]);
    env.wait_field(&["pv", "pv-csi"], ".status.phase", "Released")
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let v: Value = k.json(&["get", "pv", "pv-csi"]);
    assert!(v["metadata"].get("deletionTimestamp").is_none(), "{v}");
}

/// The events about `name` with `reason`, as objects (their `count` and timestamps).
fn event_objects(k: &Kubectl, name: &str, reason: &str) -> Vec<Value> {
    let v = k.json(&["get", "events"]);
    v["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["involvedObject"]["name"] == name && e["reason"] == reason)
        .cloned()
        .collect()
}

/// Asserts that `name`'s one `reason` event was said at most once per the binder's 15 s sync
/// period since it was first said (Kubernetes' binder repeats it each period, no more).
fn said_once_per_period(k: &Kubectl, name: &str, reason: &str, log: &str) {
    let evs = event_objects(k, name, reason);
    assert_eq!(evs.len(), 1, "one {reason} event for {name}: {evs:#?}");
    let first =
        chrono::DateTime::parse_from_rfc3339(evs[0]["firstTimestamp"].as_str().unwrap()).unwrap();
    let elapsed = (chrono::Utc::now() - first.to_utc()).num_seconds().max(0);
    let allowed = 1 + elapsed / 15 + 1;
    let count = evs[0]["count"].as_i64().unwrap_or(1);
    assert!(
        count <= allowed,
        "{reason} for {name} said {count} times in {elapsed} s\n{log}"
    );
}

#[tokio::test]
async fn pending_claims_say_why_once_per_sync_period_and_provisioned_volumes_bind_at_once() {
    let env = Env::start().await;
    let k = env.kubectl();
    k.ok_input(
        &["create", "-f", "-"],
        r#"
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: csi}
provisioner: csi.example.com
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: later}
provisioner: csi.example.com
volumeBindingMode: WaitForFirstConsumer
"#,
    );
    k.ok_input(
        &["create", "-f", "-"],
        &pvc("waiting", "1Gi", Some("later")),
    );
    k.ok_input(&["create", "-f", "-"], &pvc("dynamic", "1Gi", Some("csi")));
    env.wait_event("waiting", "WaitForFirstConsumer").await;
    env.wait_event("dynamic", "ExternalProvisioning").await;

    // Much for the binder to look at: every volume that comes (and turns Available) wakes
    // every unbound claim, and so does every change of the claims themselves.
    let many: Vec<String> = (0..12)
        .map(|i| pv(&format!("other-{i}"), "1Gi", "elsewhere", "Retain"))
        .collect();
    k.ok_input(&["create", "-f", "-"], &many.join("---\n"));
    for i in 0..12 {
        env.wait_field(&["pv", &format!("other-{i}")], ".status.phase", "Available")
            .await;
    }
    for i in 0..5 {
        k.ok(&[
            "annotate",
            "pvc",
            "waiting",
            "dynamic",
            &format!("touch={i}"),
            "--overwrite",
        ]);
    }
    // The claims went on: the binder looked at them after the last change.
    env.wait_field(&["pvc", "waiting"], ".status.phase", "Pending")
        .await;
    let log = env.cm.log();
    said_once_per_period(&k, "waiting", "WaitForFirstConsumer", &log);
    said_once_per_period(&k, "dynamic", "ExternalProvisioning", &log);

    // A pod waiting for the scheduler changes what a claim waits for, said at once.
    eventually(WAIT, || {
        k.run(&["get", "serviceaccount", "default"])
            .status
            .success()
            .then_some(())
    })
    .await
    .expect("the default ServiceAccount");
    k.ok_input(
        &["create", "-f", "-"],
        r#"
apiVersion: v1
kind: Pod
metadata: {name: consumer}
spec:
  automountServiceAccountToken: false
  containers: [{name: c, image: busybox}]
  volumes: [{name: d, persistentVolumeClaim: {claimName: waiting}}]
"#,
    );
    k.ok(&["annotate", "pvc", "waiting", "touch=pod", "--overwrite"]);
    let m = env.wait_event("waiting", "WaitForPodScheduled").await;
    assert_eq!(m, "waiting for pod consumer to be scheduled");

    // The external provisioner's volume, pre-bound to the claim: one sync of the claim binds
    // both, and the volume goes from Pending to Bound without being offered to anyone else.
    let claim = k.json(&["get", "pvc", "dynamic"]);
    let uid = claim["metadata"]["uid"].as_str().unwrap();
    let list: Value = k.json(&["get", "pv"]);
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let resp = env
        .c
        .api
        .client()
        .unwrap()
        .get(env.c.api.url(&format!(
            "/api/v1/persistentvolumes?watch=1&resourceVersion={rv}&fieldSelector=metadata.name=pvc-dynamic"
        )))
        .send()
        .await
        .unwrap();
    let mut watch = skiff_e2e::watch_events(resp);
    let started = std::time::Instant::now();
    k.ok_input(
        &["create", "-f", "-"],
        &format!(
            r#"
apiVersion: v1
kind: PersistentVolume
metadata:
  name: pvc-dynamic
  annotations: {{pv.kubernetes.io/provisioned-by: csi.example.com}}
spec:
  capacity: {{storage: 1Gi}}
  accessModes: [ReadWriteOnce]
  storageClassName: csi
  persistentVolumeReclaimPolicy: Delete
  claimRef: {{kind: PersistentVolumeClaim, namespace: default, name: dynamic, uid: {uid}}}
  csi: {{driver: csi.example.com, volumeHandle: dynamic-1}}
"#
        ),
    );
    env.wait_field(&["pvc", "dynamic"], ".status.phase", "Bound")
        .await;
    let took = started.elapsed();
    env.wait_field(&["pv", "pvc-dynamic"], ".status.phase", "Bound")
        .await;
    let seen = skiff_e2e::collect_events(&mut watch, 100, Duration::from_millis(500)).await;
    let phases: Vec<&str> = seen
        .iter()
        .filter_map(|e| e["object"]["status"]["phase"].as_str())
        .collect();
    assert_eq!(phases.first(), Some(&"Pending"), "{phases:?}");
    assert_eq!(phases.last(), Some(&"Bound"), "{phases:?}");
    assert!(!phases.contains(&"Available"), "{phases:?}");
    assert!(took < Duration::from_secs(5), "bound after {took:?}");
    let claim = k.json(&["get", "pvc", "dynamic"]);
    assert_eq!(claim["spec"]["volumeName"], "pvc-dynamic");
    assert_eq!(
        claim["metadata"]["annotations"]["pv.kubernetes.io/bind-completed"],
        "yes"
    );
    assert_eq!(claim["status"]["capacity"]["storage"], "1Gi");
    // Bound: nothing more is said about it.
    assert!(event_objects(&k, "dynamic", "FailedBinding").is_empty());
}
