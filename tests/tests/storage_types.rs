//! The storage.k8s.io/v1 types end to end, against a real etcd and a real skiff-apiserver,
//! driven with the real kubectl: StorageClasses, CSIDrivers, CSINodes, VolumeAttachments and
//! CSIStorageCapacities created, defaulted, listed with kube's columns (a default class marked
//! `(default)`), discovered and explained; malformed ones and changes to immutable fields
//! refused in Kubernetes' words; a VolumeAttachment's `status` subresource.

use reqwest::Method;
use serde_json::{json, Value};
use skiff_e2e::{send, table_row, Cluster};

const OBJECTS: &str = r#"
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: fast
  annotations: {storageclass.kubernetes.io/is-default-class: "true"}
provisioner: csi.example.com
parameters: {type: ssd}
allowVolumeExpansion: true
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: slow
provisioner: csi.example.com
reclaimPolicy: Retain
volumeBindingMode: WaitForFirstConsumer
---
apiVersion: storage.k8s.io/v1
kind: CSIDriver
metadata:
  name: csi.example.com
spec:
  tokenRequests: [{audience: vault}]
---
apiVersion: storage.k8s.io/v1
kind: CSINode
metadata:
  name: node-1
spec:
  drivers:
  - {name: csi.example.com, nodeID: node-1, topologyKeys: [topology.example.com/zone]}
---
apiVersion: storage.k8s.io/v1
kind: VolumeAttachment
metadata:
  name: attach-1
spec:
  attacher: csi.example.com
  nodeName: node-1
  source: {persistentVolumeName: pv-1}
---
apiVersion: storage.k8s.io/v1
kind: CSIStorageCapacity
metadata:
  name: cap-1
  namespace: default
storageClassName: fast
capacity: 10Gi
nodeTopology:
  matchLabels: {topology.example.com/zone: a}
"#;

#[tokio::test]
async fn storage_types_are_defaulted_listed_and_discovered() {
    let c = Cluster::start().await.unwrap();
    let k = c.kubectl();
    let out = k.ok_input(&["create", "-f", "-"], OBJECTS);
    for want in [
        "storageclass.storage.k8s.io/fast created",
        "csidriver.storage.k8s.io/csi.example.com created",
        "csinode.storage.k8s.io/node-1 created",
        "volumeattachment.storage.k8s.io/attach-1 created",
        "csistoragecapacity.storage.k8s.io/cap-1 created",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }

    // Kubernetes' defaults.
    let sc = k.json(&["get", "sc", "fast"]);
    assert_eq!(sc["reclaimPolicy"], "Delete", "{sc:#}");
    assert_eq!(sc["volumeBindingMode"], "Immediate", "{sc:#}");
    assert!(sc["metadata"].get("namespace").is_none(), "{sc:#}");
    let d = k.json(&["get", "csidriver", "csi.example.com"]);
    let spec = &d["spec"];
    assert_eq!(spec["attachRequired"], true, "{d:#}");
    assert_eq!(spec["podInfoOnMount"], false);
    assert_eq!(spec["storageCapacity"], false);
    assert_eq!(spec["fsGroupPolicy"], "ReadWriteOnceWithFSType");
    assert_eq!(spec["requiresRepublish"], false);
    assert_eq!(spec["seLinuxMount"], false);
    assert_eq!(spec["volumeLifecycleModes"], json!(["Persistent"]));

    // kube-apiserver's columns.
    let out = k.ok(&["get", "sc"]);
    let (header, row) = table_row(&out, "fast");
    assert_eq!(
        header,
        [
            "NAME",
            "PROVISIONER",
            "RECLAIMPOLICY",
            "VOLUMEBINDINGMODE",
            "ALLOWVOLUMEEXPANSION",
            "AGE"
        ],
        "{out}"
    );
    assert_eq!(
        row[..6],
        [
            "fast",
            "(default)",
            "csi.example.com",
            "Delete",
            "Immediate",
            "true"
        ],
        "{out}"
    );
    let (_, row) = table_row(&out, "slow");
    assert_eq!(
        row[..5],
        [
            "slow",
            "csi.example.com",
            "Retain",
            "WaitForFirstConsumer",
            "false"
        ],
        "{out}"
    );
    let out = k.ok(&["get", "csidrivers"]);
    let (header, row) = table_row(&out, "csi.example.com");
    assert_eq!(
        header,
        [
            "NAME",
            "ATTACHREQUIRED",
            "PODINFOONMOUNT",
            "STORAGECAPACITY",
            "TOKENREQUESTS",
            "REQUIRESREPUBLISH",
            "MODES",
            "AGE"
        ],
        "{out}"
    );
    assert_eq!(
        row[1..7],
        ["true", "false", "false", "vault", "false", "Persistent"],
        "{out}"
    );
    let out = k.ok(&["get", "csinodes"]);
    let (header, row) = table_row(&out, "node-1");
    assert_eq!(header, ["NAME", "DRIVERS", "AGE"], "{out}");
    assert_eq!(row[1], "1", "{out}");
    let out = k.ok(&["get", "volumeattachments"]);
    let (header, row) = table_row(&out, "attach-1");
    assert_eq!(
        header,
        ["NAME", "ATTACHER", "PV", "NODE", "ATTACHED", "AGE"],
        "{out}"
    );
    assert_eq!(
        row[1..5],
        ["csi.example.com", "pv-1", "node-1", "false"],
        "{out}"
    );
    let out = k.ok(&["get", "csistoragecapacities", "-n", "default"]);
    let (header, row) = table_row(&out, "cap-1");
    assert_eq!(
        header,
        ["NAME", "STORAGECLASSNAME", "CAPACITY", "AGE"],
        "{out}"
    );
    assert_eq!(row[1..3], ["fast", "10Gi"], "{out}");

    // The status subresource: an attacher reports, the spec stays.
    k.ok(&[
        "patch",
        "volumeattachment",
        "attach-1",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"attached":true,"attachmentMetadata":{"devicePath":"/dev/xvdb"}}}"#,
    ]);
    let a = k.json(&["get", "volumeattachment", "attach-1"]);
    assert_eq!(a["status"]["attached"], true, "{a:#}");
    assert_eq!(a["spec"]["nodeName"], "node-1");

    // Discovery: four cluster-scoped kinds and one namespaced; `sc` is StorageClass's.
    let out = k.ok(&[
        "api-resources",
        "--api-group=storage.k8s.io",
        "--no-headers",
    ]);
    let mut rows: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    rows.sort();
    assert_eq!(
        rows,
        vec![
            vec!["csidrivers", "storage.k8s.io/v1", "false", "CSIDriver"],
            vec!["csinodes", "storage.k8s.io/v1", "false", "CSINode"],
            vec![
                "csistoragecapacities",
                "storage.k8s.io/v1",
                "true",
                "CSIStorageCapacity"
            ],
            vec![
                "storageclasses",
                "sc",
                "storage.k8s.io/v1",
                "false",
                "StorageClass"
            ],
            vec![
                "volumeattachments",
                "storage.k8s.io/v1",
                "false",
                "VolumeAttachment"
            ],
        ],
        "{out}"
    );

    // kubectl explain, from the published OpenAPI.
    let out = k.ok(&["explain", "storageclass.volumeBindingMode"]);
    assert!(out.contains("GROUP:      storage.k8s.io"), "{out}");
    assert!(out.contains("volumeBindingMode"), "{out}");
    let out = k.ok(&["explain", "csidriver.spec"]);
    assert!(out.contains("fsGroupPolicy"), "{out}");
}

#[tokio::test]
async fn malformed_storage_objects_and_immutable_changes_are_refused() {
    let c = Cluster::start().await.unwrap();
    let k = c.kubectl();
    let bad = r#"
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: bad
reclaimPolicy: Recycle
volumeBindingMode: Later
"#;
    let err = k.run_with_input(&["create", "-f", "-"], bad).stderr;
    for want in [
        r#"The StorageClass "bad" is invalid: "#,
        "provisioner: Required value",
        r#"reclaimPolicy: Unsupported value: "Recycle": supported values: "Delete", "Retain""#,
        r#"volumeBindingMode: Unsupported value: "Later": supported values: "Immediate", "WaitForFirstConsumer""#,
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
    assert!(k.run(&["get", "sc", "bad"]).stderr.contains("not found"));

    let bad = r#"
apiVersion: storage.k8s.io/v1
kind: CSIDriver
metadata:
  name: csi.example.com
spec:
  fsGroupPolicy: Always
  volumeLifecycleModes: [Forever]
"#;
    let err = k.run_with_input(&["create", "-f", "-"], bad).stderr;
    for want in [
        r#"The CSIDriver "csi.example.com" is invalid: "#,
        r#"spec.fsGroupPolicy: Unsupported value: "Always": supported values: "File", "None", "ReadWriteOnceWithFSType""#,
        r#"spec.volumeLifecycleModes: Unsupported value: "Forever": supported values: "Ephemeral", "Persistent""#,
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }

    let bad = r#"
apiVersion: storage.k8s.io/v1
kind: VolumeAttachment
metadata:
  name: a
spec:
  attacher: csi.example.com
  nodeName: node-1
  source: {}
"#;
    let err = k.run_with_input(&["create", "-f", "-"], bad).stderr;
    assert!(
        err.contains("spec.source: Required value: must specify exactly one of inlineVolumeSpec and persistentVolumeName"),
        "{err}"
    );

    // Immutable fields.
    k.ok_input(
        &["create", "-f", "-"],
        "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {name: fast}\nprovisioner: csi.example.com\n",
    );
    let err = k
        .run(&[
            "patch",
            "sc",
            "fast",
            "--type=merge",
            "-p",
            r#"{"provisioner":"other.example.com","volumeBindingMode":"WaitForFirstConsumer"}"#,
        ])
        .stderr;
    for want in [
        r#"The StorageClass "fast" is invalid: "#,
        "provisioner: Forbidden: updates to provisioner are forbidden.",
        "volumeBindingMode: Invalid value: \"WaitForFirstConsumer\": field is immutable",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
    // What may change does.
    k.ok(&[
        "patch",
        "sc",
        "fast",
        "--type=merge",
        "-p",
        r#"{"allowVolumeExpansion":true}"#,
    ]);
    assert_eq!(k.json(&["get", "sc", "fast"])["allowVolumeExpansion"], true);

    k.ok_input(
        &["create", "-f", "-"],
        "apiVersion: storage.k8s.io/v1\nkind: CSIDriver\nmetadata: {name: csi.example.com}\nspec: {}\n",
    );
    let err = k
        .run(&[
            "patch",
            "csidriver",
            "csi.example.com",
            "--type=merge",
            "-p",
            r#"{"spec":{"attachRequired":false}}"#,
        ])
        .stderr;
    assert!(
        err.contains("spec.attachedRequired: Invalid value: false: field is immutable"),
        "{err}"
    );
    k.ok(&[
        "patch",
        "csidriver",
        "csi.example.com",
        "--type=merge",
        "-p",
        r#"{"spec":{"podInfoOnMount":true}}"#,
    ]);

    // Through plain HTTPS: a 422 Invalid Status naming each field.
    let admin = c.api.client().unwrap();
    let body = json!({
        "apiVersion": "storage.k8s.io/v1",
        "kind": "CSIStorageCapacity",
        "metadata": {"name": "cap"},
        "storageClassName": "Fast",
        "capacity": "-1Gi",
    });
    let (code, status) = send(
        &admin,
        Method::POST,
        c.api
            .url("/apis/storage.k8s.io/v1/namespaces/default/csistoragecapacities"),
        Some(body),
    )
    .await;
    assert_eq!(code, 422, "{status:#}");
    assert_eq!(status["reason"], "Invalid");
    assert_eq!(status["details"]["kind"], "CSIStorageCapacity");
    assert_eq!(status["details"]["group"], "storage.k8s.io");
    let causes: Vec<(&str, &str)> = status["details"]["causes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c: &Value| (c["field"].as_str().unwrap(), c["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(
        causes,
        [
            ("storageClassName", "FieldValueInvalid"),
            ("capacity", "FieldValueInvalid")
        ],
        "{status:#}"
    );
}
