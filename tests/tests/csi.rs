//! Skiff's CSI driver and its external provisioner end to end: a real etcd, skiff-apiserver,
//! skiff-controller-manager's volume controllers and the `skiff-csi` binary serving
//! `local.csi.skiff.dev` for the node `node-1` over its real socket, driven with kubectl.
//!
//! A claim of a `WaitForFirstConsumer` class whose selected node is `node-1` gets a
//! PersistentVolume `pvc-<uid>` pre-bound to it, with the node affinity of the volume's
//! topology and a directory under the driver's data path; a claim selected for another node is
//! left to that node; a claim the driver cannot serve (`ReadWriteMany` on a node-local class)
//! gets `ProvisioningFailed` with the driver's gRPC error. Deleting a claim of a `Delete` class
//! removes the volume, its directory and the PersistentVolume; of a `Retain` class leaves both.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use skiff_e2e::{eventually, ApiServer, Cluster, Daemon, Kubectl};

const WAIT: Duration = Duration::from_secs(60);

const CLASSES: &str = r#"
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: local}
provisioner: local.csi.skiff.dev
reclaimPolicy: Delete
volumeBindingMode: WaitForFirstConsumer
allowVolumeExpansion: true
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: local-retain}
provisioner: local.csi.skiff.dev
reclaimPolicy: Retain
volumeBindingMode: WaitForFirstConsumer
"#;

fn claim(name: &str, class: &str, node: &str, mode: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: {name}
  annotations: {{volume.kubernetes.io/selected-node: {node}}}
spec:
  storageClassName: {class}
  accessModes: [{mode}]
  resources: {{requests: {{storage: 64Mi}}}}
"#
    )
}

/// A kubeconfig with a client certificate for `user`, signed by the cluster CA.
fn cert_kubeconfig(api: &ApiServer, dir: &Path, user: &str) -> PathBuf {
    let pki_dir = dir.join("pki");
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
    let p = dir.join("csi.kubeconfig");
    std::fs::write(&p, kc).unwrap();
    p
}

struct Env {
    csi: Daemon,
    cm: Daemon,
    c: Cluster,
    dir: tempfile::TempDir,
    /// The driver's own identity, `system:skiff-csi`.
    kubeconfig: PathBuf,
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
                "--controllers=persistentvolume-binder,pvc-protection,pv-protection",
            ],
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let data = format!("--data-dir={}", dir.path().join("volumes").display());
        let root = format!(
            "--kubelet-root-dir={}",
            dir.path().join("kubelet").display()
        );
        let kubeconfig = cert_kubeconfig(&c.api, dir.path(), "system:skiff-csi");
        let csi = Daemon::start_as(
            "skiff-csi",
            &kubeconfig,
            &[
                "--driver=local.csi.skiff.dev",
                "--node-id=node-1",
                &data,
                &root,
                "--http-endpoint=127.0.0.1:0",
            ],
        )
        .unwrap();
        Env {
            csi,
            cm,
            c,
            dir,
            kubeconfig,
        }
    }

    fn kubectl(&self) -> Kubectl {
        self.c.kubectl()
    }

    fn logs(&self) -> String {
        format!(
            "--- skiff-csi:\n{}\n--- controller manager:\n{}",
            self.csi.log(),
            self.cm.log()
        )
    }

    fn get(&self, what: &[&str]) -> Option<Value> {
        let mut args = vec!["get"];
        args.extend(what);
        args.push("-o=json");
        let r = self.kubectl().run(&args);
        r.status
            .success()
            .then(|| serde_json::from_str(&r.stdout).ok())
            .flatten()
    }

    async fn wait<T>(&self, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
        match eventually(WAIT, &mut f).await {
            Some(v) => v,
            None => panic!("{what} did not happen\n{}", self.logs()),
        }
    }

    fn uid(&self, claim: &str) -> String {
        self.get(&["pvc", claim]).unwrap()["metadata"]["uid"]
            .as_str()
            .unwrap()
            .to_string()
    }

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

    fn volume_dir(&self, pv: &str) -> std::path::PathBuf {
        self.dir.path().join("volumes").join(pv)
    }
}

/// Waits for the provisioned PV of `claim` and checks what the provisioner wrote in it.
async fn provisioned(env: &Env, claim: &str, policy: &str) -> String {
    let pv = format!("pvc-{}", env.uid(claim));
    let v = env
        .wait(&format!("a volume for {claim}"), || env.get(&["pv", &pv]))
        .await;
    let spec = &v["spec"];
    assert_eq!(
        v["metadata"]["annotations"]["pv.kubernetes.io/provisioned-by"],
        "local.csi.skiff.dev"
    );
    assert_eq!(spec["claimRef"]["name"], claim);
    assert_eq!(spec["claimRef"]["uid"], env.uid(claim));
    assert_eq!(spec["persistentVolumeReclaimPolicy"], policy);
    assert_eq!(spec["capacity"]["storage"], "64Mi");
    assert_eq!(spec["csi"]["driver"], "local.csi.skiff.dev");
    assert_eq!(spec["csi"]["volumeHandle"], format!("{pv}@node-1"));
    let term = &spec["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0];
    assert_eq!(term["key"], "topology.local.csi.skiff.dev/node");
    assert_eq!(term["operator"], "In");
    assert_eq!(term["values"], serde_json::json!(["node-1"]));
    assert!(env.volume_dir(&pv).join("data").is_dir());
    pv
}

async fn bound(env: &Env, claim: &str) {
    env.wait(&format!("{claim} bound"), || {
        env.get(&["pvc", claim])
            .filter(|c| c["status"]["phase"] == "Bound")
    })
    .await;
}

#[tokio::test]
async fn claims_get_node_local_volumes_and_give_them_back_as_their_class_says() {
    let env = Env::start().await;
    let k = env.kubectl();
    k.ok_input(&["apply", "-f", "-"], CLASSES);
    // The driver's identity reaches volumes and claims, not the rest of the cluster.
    let csi = Kubectl::new(&env.kubeconfig);
    csi.ok(&["get", "pv"]);
    let refused = csi.fails(&["get", "secrets", "-A"]);
    assert!(
        refused.contains(r#"User "system:skiff-csi" cannot list resource "secrets""#),
        "{refused}"
    );
    let refused = csi.fails(&["create", "configmap", "x", "--from-literal=a=b"]);
    assert!(
        refused.contains(r#"User "system:skiff-csi" cannot create resource "configmaps""#),
        "{refused}"
    );

    // One for another node first: this node's provisioner leaves it alone.
    k.ok_input(
        &["apply", "-f", "-"],
        &claim("elsewhere", "local", "node-2", "ReadWriteOnce"),
    );
    k.ok_input(
        &["apply", "-f", "-"],
        &claim("data", "local", "node-1", "ReadWriteOnce"),
    );
    let pv = provisioned(&env, "data", "Delete").await;
    bound(&env, "data").await;
    let ok = env
        .wait("ProvisioningSucceeded", || {
            env.events("data", "ProvisioningSucceeded")
                .into_iter()
                .next()
        })
        .await;
    assert_eq!(ok, format!("Successfully provisioned volume {pv}"));
    assert!(env
        .get(&["pv", &format!("pvc-{}", env.uid("elsewhere"))])
        .is_none());

    // What the driver cannot serve is reported with its error.
    k.ok_input(
        &["apply", "-f", "-"],
        &claim("shared", "local", "node-1", "ReadWriteMany"),
    );
    let failed = env
        .wait("ProvisioningFailed", || {
            env.events("shared", "ProvisioningFailed")
                .into_iter()
                .next()
        })
        .await;
    assert!(
        failed.starts_with("failed to provision volume with StorageClass \"local\": rpc error: code = InvalidArgument"),
        "{failed}"
    );
    assert!(env
        .get(&["pv", &format!("pvc-{}", env.uid("shared"))])
        .is_none());

    // Retain keeps the volume and its directory once the claim is gone.
    k.ok_input(
        &["apply", "-f", "-"],
        &claim("kept", "local-retain", "node-1", "ReadWriteOnce"),
    );
    let kept = provisioned(&env, "kept", "Retain").await;
    bound(&env, "kept").await;
    std::fs::write(env.volume_dir(&kept).join("data/file"), b"precious").unwrap();
    k.ok(&["delete", "pvc", "kept", "--wait=true"]);
    env.wait("the retained volume Released", || {
        env.get(&["pv", &kept])
            .filter(|v| v["status"]["phase"] == "Released")
    })
    .await;

    // Delete removes the directory, then the PersistentVolume.
    k.ok(&["delete", "pvc", "data", "--wait=true"]);
    env.wait("the deleted volume gone", || {
        env.get(&["pv", &pv]).is_none().then_some(())
    })
    .await;
    assert!(!env.volume_dir(&pv).exists(), "the directory is removed");
    let still = env.get(&["pv", &kept]).expect("the retained volume stays");
    assert_eq!(still["status"]["phase"], "Released");
    assert_eq!(
        std::fs::read(env.volume_dir(&kept).join("data/file")).unwrap(),
        b"precious"
    );
    assert!(Path::new(&env.volume_dir(&kept)).is_dir());
}
