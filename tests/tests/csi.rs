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
//!
//! With `--enable-capacity` on a 64 MiB tmpfs: one CSIStorageCapacity per late-binding class
//! of the driver (none for an `Immediate` class or another provisioner's), with Kubernetes'
//! labels, the node's topology, the Node as owner and the filesystem's free space, which it
//! follows; a deleted class's object goes, one deleted by hand comes back, a restart keeps
//! the same object, and deleting the Node collects them. Bad capacity flags refuse to start.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use skiff_e2e::{eventually, ApiServer, Cluster, Daemon, Kubectl, Tmpfs};

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
    /// Where the driver makes volumes.
    data: PathBuf,
    /// `skiff-csi`'s flags.
    args: Vec<String>,
    /// The driver's own identity, `system:skiff-csi`.
    kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
}

impl Env {
    async fn start() -> Env {
        Env::start_with(None, &[]).await
    }

    /// With the driver's volumes under `data` (default: a temporary directory) and `extra`
    /// flags.
    async fn start_with(data: Option<&Path>, extra: &[&str]) -> Env {
        let c = Cluster::start().await.unwrap();
        let cm = Daemon::start(
            "skiff-controller-manager",
            &c.api,
            &[
                "--port=0",
                "--leader-elect=false",
                "--kube-api-qps=0",
                "--controllers=persistentvolume-binder,pvc-protection,pv-protection,garbagecollector",
            ],
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let data = data.map_or_else(|| dir.path().join("volumes"), Path::to_path_buf);
        let mut args = vec![
            "--driver=local.csi.skiff.dev".to_string(),
            "--node-id=node-1".into(),
            format!("--data-dir={}", data.display()),
            format!(
                "--kubelet-root-dir={}",
                dir.path().join("kubelet").display()
            ),
            "--http-endpoint=127.0.0.1:0".into(),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        let kubeconfig = cert_kubeconfig(&c.api, dir.path(), "system:skiff-csi");
        let csi = Env::start_csi(&kubeconfig, &args);
        Env {
            csi,
            cm,
            c,
            data,
            args,
            kubeconfig,
            _dir: dir,
        }
    }

    fn start_csi(kubeconfig: &Path, args: &[String]) -> Daemon {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Daemon::start_as("skiff-csi", kubeconfig, &args).unwrap()
    }

    /// Stops `skiff-csi` (SIGTERM) and starts it again with the same flags.
    fn restart_csi(&mut self) {
        self.csi.stop();
        self.csi = Env::start_csi(&self.kubeconfig, &self.args);
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
        self.data.join(pv)
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

/// The CSIStorageCapacity objects of the local driver in `kube-system`.
fn capacities(env: &Env) -> Vec<Value> {
    let v = env.kubectl().json(&[
        "get",
        "csistoragecapacities",
        "-n",
        "kube-system",
        "-l",
        "csi.storage.k8s.io/drivername=local.csi.skiff.dev",
    ]);
    v["items"].as_array().cloned().unwrap_or_default()
}

/// The object of `class`, when there is exactly one.
fn capacity_of(env: &Env, class: &str) -> Option<Value> {
    let mut of: Vec<Value> = capacities(env)
        .into_iter()
        .filter(|c| c["storageClassName"] == class)
        .collect();
    (of.len() == 1).then(|| of.remove(0))
}

fn bytes(q: &Value) -> u64 {
    let q: skiff_rules::Quantity = q.as_str().unwrap_or("?").parse().unwrap();
    q.value() as u64
}

#[tokio::test]
async fn capacity_is_published_per_class_from_the_nodes_free_space() {
    let fs = Tmpfs::mount("64m").unwrap();
    let mut env = Env::start_with(
        Some(fs.path()),
        &["--enable-capacity", "--capacity-poll-interval=1s"],
    )
    .await;
    let k = env.kubectl();
    // The Node owns its capacity objects: nothing is published before it exists.
    k.ok_input(
        &["apply", "-f", "-"],
        r#"{"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-1",
            "labels": {"topology.local.csi.skiff.dev/node": "node-1"}}}"#,
    );
    let node_uid = env.get(&["node", "node-1"]).unwrap()["metadata"]["uid"].clone();
    k.ok_input(&["apply", "-f", "-"], CLASSES);
    k.ok_input(
        &["apply", "-f", "-"],
        r#"
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: local-now}
provisioner: local.csi.skiff.dev
volumeBindingMode: Immediate
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: elsewhere}
provisioner: example.com/other
volumeBindingMode: WaitForFirstConsumer
"#,
    );

    // One object per late-binding class of the driver; none for the Immediate class or
    // another provisioner's.
    let free = fs.available();
    env.wait("capacity of both classes", || {
        let cs = capacities(&env);
        let mut classes: Vec<_> = cs
            .iter()
            .map(|c| c["storageClassName"].as_str().unwrap_or("").to_string())
            .collect();
        classes.sort();
        (classes == ["local", "local-retain"]).then_some(())
    })
    .await;
    let local = capacity_of(&env, "local").unwrap();
    let meta = &local["metadata"];
    assert_eq!(meta["namespace"], "kube-system");
    assert_eq!(meta["generateName"], "csisc-");
    assert!(meta["name"].as_str().unwrap().starts_with("csisc-"));
    assert_eq!(
        meta["labels"],
        serde_json::json!({"csi.storage.k8s.io/drivername": "local.csi.skiff.dev",
            "csi.storage.k8s.io/managed-by": "external-provisioner-node-1"})
    );
    assert_eq!(
        meta["ownerReferences"],
        serde_json::json!([{"apiVersion": "v1", "kind": "Node", "name": "node-1",
            "uid": node_uid, "controller": true}])
    );
    assert_eq!(
        local["nodeTopology"],
        serde_json::json!({"matchLabels": {"topology.local.csi.skiff.dev/node": "node-1"}})
    );
    assert_eq!(bytes(&local["capacity"]), free, "{local}");
    assert_eq!(bytes(&local["maximumVolumeSize"]), free, "{local}");
    assert_eq!(free, 64 << 20, "an empty 64 MiB tmpfs");
    let listed = k.ok(&["get", "csistoragecapacities", "-n", "kube-system"]);
    let (header, row) = skiff_e2e::table_row(&listed, meta["name"].as_str().unwrap());
    assert_eq!(header, ["NAME", "STORAGECLASSNAME", "CAPACITY", "AGE"]);
    assert_eq!(row[1..3], ["local", "64Mi"]);

    // Its identity may keep these objects, and no more than it needs.
    let csi = Kubectl::new(&env.kubeconfig);
    for (verb, allowed) in [
        ("create", "yes"),
        ("update", "yes"),
        ("delete", "yes"),
        ("patch", "no"),
        ("deletecollection", "no"),
    ] {
        let r = csi.run(&[
            "auth",
            "can-i",
            verb,
            "csistoragecapacities.storage.k8s.io",
            "-n",
            "kube-system",
        ]);
        assert_eq!(r.stdout.trim(), allowed, "{verb}: {}", r.stderr);
    }

    // Space taken on the filesystem shows at the next poll.
    fs.fill("other-data", 16 << 20);
    let free = fs.available();
    assert!(free < 50 << 20);
    env.wait("the capacity to follow the free space", || {
        capacity_of(&env, "local").filter(|c| bytes(&c["capacity"]) == free)
    })
    .await;

    // A class that goes takes its object along.
    k.ok(&["delete", "storageclass", "local-retain"]);
    env.wait("the deleted class's object gone", || {
        (capacities(&env).len() == 1).then_some(())
    })
    .await;
    assert!(capacity_of(&env, "local").is_some());

    // An object deleted by someone else is made again.
    let name = capacity_of(&env, "local").unwrap()["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    k.ok(&["delete", "csistoragecapacities", "-n", "kube-system", &name]);
    let remade = env
        .wait("the object made again", || {
            capacity_of(&env, "local").filter(|c| c["metadata"]["name"] != name.as_str())
        })
        .await;
    let name = remade["metadata"]["name"].as_str().unwrap().to_string();

    // A restarted publisher finds its object by its labels and keeps it up to date: still
    // one, the same one, with the new free space.
    env.restart_csi();
    fs.fill("more-data", 8 << 20);
    let free = fs.available();
    env.wait("the restarted publisher's update", || {
        capacity_of(&env, "local").filter(|c| bytes(&c["capacity"]) == free)
    })
    .await;
    let cs = capacities(&env);
    assert_eq!(cs.len(), 1, "{cs:?}");
    assert_eq!(cs[0]["metadata"]["name"], name.as_str());

    // The objects go with their Node.
    k.ok(&["delete", "node", "node-1"]);
    env.wait("the objects collected with the Node", || {
        capacities(&env).is_empty().then_some(())
    })
    .await;
}

#[test]
fn capacity_flags_are_checked() {
    // A duration that is not one, and a zero one, refuse to start.
    for (flag, says) in [
        ("--capacity-poll-interval=soon", "invalid duration"),
        (
            "--capacity-poll-interval=0s",
            "--capacity-poll-interval must be greater than zero",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new(skiff_e2e::binary("skiff-csi").unwrap())
            .args([
                "--driver=local.csi.skiff.dev",
                "--node-id=node-1",
                &format!("--data-dir={}", dir.path().join("v").display()),
                &format!("--kubelet-root-dir={}", dir.path().join("k").display()),
                "--register=false",
                "--http-endpoint=127.0.0.1:0",
                "--enable-capacity",
                flag,
            ])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flag} accepted");
        assert!(stderr.contains(says), "{flag}: {stderr}");
    }
}
