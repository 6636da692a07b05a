//! Stateful workloads on `skiff server` and `skiff agent` as a user runs them (each in a
//! network namespace of its own): the default `local` StorageClass provisions through the
//! node's `skiff-csi` driver on the node the scheduler chose, the kubelet mounts the claims,
//! and a StatefulSet of 3 keeps each pod's data across a scale down and up and a deleted pod
//! (each pod named in the cluster DNS through its headless Service);
//! a `Retain` class keeps a deleted claim's directory while `Delete` removes it; `kubectl
//! debug node/NAME` runs its debugging pod on the node.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use skiff_e2e::allinone::{kubectl, Skiff};
use skiff_e2e::netnode::Lan;
use skiff_e2e::netns::NetNs;

fn eventually<T>(what: &str, within: Duration, f: impl FnMut() -> Result<T, String>) -> T {
    skiff_e2e::eventually_ok(what, within, f, String::new)
}

/// The directory `skiff-csi` keeps a local volume in, on whichever node holds it.
fn volume_dir(nodes: &[(&str, &Skiff)], pv: &Value) -> PathBuf {
    let handle = pv["spec"]["csi"]["volumeHandle"].as_str().unwrap();
    let (name, node) = handle.split_once('@').unwrap();
    let skiff = nodes.iter().find(|(n, _)| *n == node).unwrap().1;
    skiff.data.join("volumes").join(name)
}

const STATEFULSET: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: kv}
spec:
  clusterIP: None
  selector: {app: kv}
  ports: [{port: 80}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: kv}
spec:
  serviceName: kv
  replicas: 3
  podManagementPolicy: Parallel
  selector: {matchLabels: {app: kv}}
  template:
    metadata: {labels: {app: kv}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: kv
        image: IMAGE
        command: ["sh", "-c", "[ -f /data/who ] || hostname > /data/who; echo start >> /data/starts; exec httpd -f -p 80 -h /data"]
        volumeMounts: [{name: data, mountPath: /data}]
  volumeClaimTemplates:
  - metadata: {name: data}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 16Mi}}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statefulset_claims_keep_their_data_on_server_and_agent() {
    let lan = Lan::new().unwrap();
    let (server_ns, agent_ns) = (
        NetNs::new("sts-srv").unwrap(),
        NetNs::new("sts-agt").unwrap(),
    );
    let server_ip = lan.join(&server_ns, 1).unwrap();
    let agent_ip = lan.join(&agent_ns, 2).unwrap();
    for ns in [&server_ns, &agent_ns] {
        ns.discard_service_range("10.96.0.0/12").unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let registry = format!("{server_ip}:5000");
    let server = Skiff::start(
        &server_ns,
        dir.path(),
        "server",
        &[
            "--bind-address=0.0.0.0".into(),
            format!("--registry-address={registry}"),
            "--node-name=main".into(),
            format!("--node-ip={server_ip}"),
        ],
    );
    let kc = dir
        .path()
        .join("server/kubeconfig.yaml")
        .display()
        .to_string();
    eventually("the server is up", Duration::from_secs(90), || {
        let o = server.out();
        o.contains(&format!("export KUBECONFIG={kc}"))
            .then_some(())
            .ok_or(o)
    });
    let token_file = dir.path().join("token");
    std::fs::copy(dir.path().join("server/node-token"), &token_file).unwrap();
    let agent = Skiff::start(
        &agent_ns,
        dir.path(),
        "agent",
        &[
            format!("--server=https://{server_ip}:6443"),
            format!("--token-file={}", token_file.display()),
            "--node-name=worker".into(),
            format!("--node-ip={agent_ip}"),
        ],
    );
    let k = |args: &[&str]| kubectl(&server_ns, &kc, args);
    let json = |args: &[&str]| -> Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        serde_json::from_str(&k(&a).unwrap()).unwrap()
    };
    let volume_of = |claim: &str| -> Value {
        let c = json(&["get", "pvc", claim]);
        json(&["get", "pv", c["spec"]["volumeName"].as_str().unwrap()])
    };
    // Both nodes are Ready and list the local driver in their CSINode.
    for node in ["main", "worker"] {
        eventually(
            &format!("{node} Ready with the local driver"),
            Duration::from_secs(90),
            || {
                k(&[
                    "wait",
                    "--for=condition=Ready",
                    &format!("node/{node}"),
                    "--timeout=5s",
                ])?;
                let drivers = k(&[
                    "get",
                    "csinode",
                    node,
                    "-o",
                    "jsonpath={.spec.drivers[*].name}",
                ])?;
                drivers
                    .contains("local.csi.skiff.dev")
                    .then_some(())
                    .ok_or_else(|| format!("{drivers}\n{}", agent.log("skiff-kubelet")))
            },
        );
    }
    let classes = k(&["get", "storageclass"]).unwrap();
    assert!(classes.contains("local (default)"), "{classes}");

    let image = format!("{registry}/skiff/busybox");
    let manifest = STATEFULSET.replace("IMAGE", &image);
    let path = dir.path().join("kv.yaml");
    std::fs::write(&path, manifest).unwrap();
    let apply = || {
        skiff_e2e::stdout_or_stderr(
            std::process::Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &server_ns.name,
                    "kubectl",
                    "--kubeconfig",
                    &kc,
                ])
                .args(["apply", "-f"])
                .arg(&path),
        )
    };
    apply().unwrap();
    let rollout = |what: &str| {
        eventually(what, Duration::from_secs(120), || {
            k(&["rollout", "status", "statefulset/kv", "--timeout=5s"]).map_err(|e| {
                format!(
                    "{e}\n{}\n{}",
                    k(&["get", "pods,pvc,pv", "-o", "wide"]).unwrap_or_default(),
                    k(&["get", "events", "--sort-by=.lastTimestamp"]).unwrap_or_default()
                )
            })
        })
    };
    rollout("3 kv pods Ready");

    // Each claim is bound to a volume of the node its pod was placed on (WaitForFirstConsumer),
    // and each pod wrote its own name into its volume.
    let nodes = [("main", &server), ("worker", &agent)];
    let mut pod_nodes = Vec::new();
    for i in 0..3 {
        let pod = json(&["get", "pod", &format!("kv-{i}")]);
        let node = pod["spec"]["nodeName"].as_str().unwrap().to_string();
        let claim = json(&["get", "pvc", &format!("data-kv-{i}")]);
        assert_eq!(claim["status"]["phase"], "Bound", "{claim}");
        assert_eq!(
            claim["metadata"]["annotations"]["volume.kubernetes.io/selected-node"],
            node.as_str()
        );
        let pv = json(&["get", "pv", claim["spec"]["volumeName"].as_str().unwrap()]);
        let terms = &pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"];
        assert_eq!(
            terms[0]["matchExpressions"][0]["values"][0],
            node.as_str(),
            "{pv}"
        );
        let dir = volume_dir(&nodes, &pv);
        let who = std::fs::read_to_string(dir.join("data/who")).unwrap();
        assert_eq!(who.trim(), format!("kv-{i}"));
        assert_eq!(
            k(&["exec", &format!("kv-{i}"), "--", "cat", "/data/who"]).unwrap(),
            format!("kv-{i}")
        );
        pod_nodes.push(node);
    }

    // Each pod has its own name in the cluster DNS, through the headless Service.
    let ip0 = json(&["get", "pod", "kv-0"])["status"]["podIP"]
        .as_str()
        .unwrap()
        .to_string();
    eventually(
        "kv-0.kv.default.svc.cluster.local resolves from kv-1",
        Duration::from_secs(60),
        || {
            let out = k(&[
                "exec",
                "kv-1",
                "--",
                "nslookup",
                "kv-0.kv.default.svc.cluster.local",
            ])?;
            out.contains(&ip0).then_some(()).ok_or(out)
        },
    );

    // Scaled down to 1 and back up to 3: kv-1 and kv-2 come back on their own claims, on the
    // node their volume lives on, and find what they wrote.
    k(&["scale", "statefulset/kv", "--replicas=1"]).unwrap();
    eventually("kv-1 and kv-2 gone", Duration::from_secs(60), || {
        let pods = k(&["get", "pods", "-l", "app=kv", "-o", "name"])?;
        (pods.trim() == "pod/kv-0").then_some(()).ok_or(pods)
    });
    assert_eq!(
        k(&["get", "pvc", "-o", "name"]).unwrap().lines().count(),
        3,
        "the claims of scaled-down pods are kept"
    );
    k(&["scale", "statefulset/kv", "--replicas=3"]).unwrap();
    rollout("kv scaled back to 3");
    for (i, node) in pod_nodes.iter().enumerate().skip(1) {
        let pod = json(&["get", "pod", &format!("kv-{i}")]);
        assert_eq!(pod["spec"]["nodeName"], node.as_str());
        let starts = k(&["exec", &format!("kv-{i}"), "--", "cat", "/data/starts"]).unwrap();
        assert_eq!(starts.lines().count(), 2, "{starts}");
        assert_eq!(
            k(&["exec", &format!("kv-{i}"), "--", "cat", "/data/who"]).unwrap(),
            format!("kv-{i}")
        );
    }
    // A deleted pod comes back with the same name on the same claim.
    let uid = json(&["get", "pod", "kv-0"])["metadata"]["uid"].clone();
    k(&["delete", "pod", "kv-0", "--wait=false"]).unwrap();
    eventually("kv-0 replaced", Duration::from_secs(60), || {
        let p = k(&["get", "pod", "kv-0", "-o", "jsonpath={.metadata.uid}"])?;
        (p != uid.as_str().unwrap()).then_some(()).ok_or(p)
    });
    rollout("kv-0 back");
    let starts = k(&["exec", "kv-0", "--", "cat", "/data/starts"]).unwrap();
    assert_eq!(starts.lines().count(), 2, "{starts}");

    // A claim in use is not deleted while its pod runs (pvc-protection); once the StatefulSet
    // is scaled down past it, it goes, and with the class's `Delete` policy so does its
    // directory.
    let pv2 = volume_of("data-kv-2");
    let dir2 = volume_dir(&nodes, &pv2);
    k(&["delete", "pvc", "data-kv-2", "--wait=false"]).unwrap();
    let claim = json(&["get", "pvc", "data-kv-2"]);
    assert!(
        claim["metadata"]["deletionTimestamp"].is_string(),
        "{claim}"
    );
    assert!(dir2.join("data/who").exists());
    k(&["scale", "statefulset/kv", "--replicas=2"]).unwrap();
    eventually(
        "data-kv-2 and its volume deleted",
        Duration::from_secs(60),
        || {
            let left = k(&["get", "pvc,pv", "-o", "name"])?;
            (!left.contains("data-kv-2")
                && !left.contains(pv2["metadata"]["name"].as_str().unwrap())
                && !dir2.exists())
            .then_some(())
            .ok_or(left)
        },
    );

    // A `Retain` class: the claim deleted leaves the volume Released and its data in place.
    let retain = format!(
        r#"
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {{name: keep}}
provisioner: local.csi.skiff.dev
reclaimPolicy: Retain
volumeBindingMode: WaitForFirstConsumer
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: kept}}
spec:
  storageClassName: keep
  accessModes: [ReadWriteOnce]
  resources: {{requests: {{storage: 8Mi}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: writer}}
spec:
  restartPolicy: Never
  containers:
  - name: w
    image: {image}
    command: ["sh", "-c", "echo kept > /data/file"]
    volumeMounts: [{{name: d, mountPath: /data}}]
  volumes: [{{name: d, persistentVolumeClaim: {{claimName: kept}}}}]
"#
    );
    std::fs::write(&path, retain).unwrap();
    apply().unwrap();
    eventually("writer Succeeded", Duration::from_secs(60), || {
        let phase = k(&["get", "pod", "writer", "-o", "jsonpath={.status.phase}"])?;
        (phase == "Succeeded").then_some(()).ok_or(phase)
    });
    let pv = volume_of("kept");
    assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Retain");
    let kept_dir = volume_dir(&nodes, &pv);
    k(&["delete", "pod", "writer"]).unwrap();
    k(&["delete", "pvc", "kept"]).unwrap();
    let name = pv["metadata"]["name"].as_str().unwrap().to_string();
    eventually("the kept volume Released", Duration::from_secs(60), || {
        let phase = k(&["get", "pv", &name, "-o", "jsonpath={.status.phase}"])?;
        (phase == "Released").then_some(()).ok_or(phase)
    });
    assert_eq!(
        std::fs::read_to_string(kept_dir.join("data/file")).unwrap(),
        "kept\n"
    );

    // kubectl debug node/NAME: its pod runs on that node with the node's root at /host.
    let out = k(&[
        "debug",
        "node/worker",
        &format!("--image={image}"),
        "--",
        "sh",
        "-c",
        "ls /host/proc/1 >/dev/null && echo host-root-seen",
    ])
    .unwrap();
    let pod = out
        .lines()
        .find_map(|l| l.strip_prefix("Creating debugging pod "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("{out}"))
        .to_string();
    eventually(
        "the node debugging pod's output",
        Duration::from_secs(60),
        || {
            let logs = k(&["logs", &pod])?;
            logs.contains("host-root-seen").then_some(()).ok_or(logs)
        },
    );
    let debug_pod = json(&["get", "pod", &pod]);
    assert_eq!(debug_pod["spec"]["nodeName"], "worker");
    assert_eq!(debug_pod["spec"]["hostNetwork"], true);
}
