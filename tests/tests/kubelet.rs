//! The kubelet against real parts: etcd, the API server, a private containerd pulling from a
//! local registry, CNI plugins, and `kubectl` reading what the kubelet reports.

use std::process::Command;
use std::time::{Duration, Instant};

use skiff_e2e::node::Node;
use skiff_e2e::Cluster;

fn wait_for(what: &str, within: Duration, mut f: impl FnMut() -> bool, log: impl Fn() -> String) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "{what} within {within:?}; kubelet log:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test]
async fn registers_a_ready_node_with_its_labels_taints_and_lease() {
    let c = Cluster::start().await.unwrap();
    let node = Node::start(
        &c.api.kubeconfig,
        "node-a",
        &[
            "--node-labels=topology.kubernetes.io/zone=zone-a,tier=web",
            "--register-with-taints=dedicated=web:NoSchedule",
            "--max-pods=50",
        ],
    )
    .unwrap();
    let (k, ctrd, net) = (&node.kubelet, &node.ctrd, &node.net);
    let kubectl = c.kubectl();
    wait_for(
        "node-a Ready",
        Duration::from_secs(30),
        || {
            kubectl
                .run(&[
                    "get",
                    "node",
                    "node-a",
                    "-o",
                    "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
                ])
                .stdout
                == "True"
        },
        || k.log(),
    );
    let node = kubectl.json(&["get", "node", "node-a", "-o", "json"]);
    let labels = &node["metadata"]["labels"];
    assert_eq!(labels["kubernetes.io/hostname"], "node-a");
    assert_eq!(labels["kubernetes.io/os"], "linux");
    assert_eq!(labels["kubernetes.io/arch"], "amd64");
    assert_eq!(labels["topology.kubernetes.io/zone"], "zone-a");
    assert_eq!(labels["tier"], "web");
    assert_eq!(
        node["spec"]["taints"],
        serde_json::json!([{"key": "dedicated", "value": "web", "effect": "NoSchedule"}])
    );
    assert_eq!(node["spec"]["podCIDR"], net.subnet.as_str());
    let status = &node["status"];
    assert_eq!(status["capacity"]["pods"], "50");
    let cpus = std::thread::available_parallelism()
        .unwrap()
        .get()
        .to_string();
    assert_eq!(status["capacity"]["cpu"], cpus.as_str());
    assert!(status["allocatable"]["memory"]
        .as_str()
        .unwrap()
        .ends_with("Ki"));
    let types: Vec<&str> = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        ["MemoryPressure", "DiskPressure", "PIDPressure", "Ready"]
    );
    let ready = &status["conditions"][3];
    assert_eq!(
        (ready["reason"].as_str(), ready["message"].as_str()),
        (
            Some("KubeletReady"),
            Some("kubelet is posting ready status")
        )
    );
    assert!(status["nodeInfo"]["containerRuntimeVersion"]
        .as_str()
        .unwrap()
        .starts_with("containerd://"));
    // The HTTPS server's port (a free one here, --port=0), where the API server reaches it.
    let port = status["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_i64()
        .unwrap();
    assert!(port > 0 && port != 10250, "{port}");
    // It answers only clients with a certificate from the cluster CA.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let anonymous = reqwest::Client::builder()
        .tls_danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let r = anonymous
        .get(format!(
            "https://127.0.0.1:{port}/containerLogs/default/x/y"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let addresses = status["addresses"].as_array().unwrap();
    assert!(addresses
        .iter()
        .any(|a| a["type"] == "InternalIP" && a["address"] == "127.0.0.1"));
    assert!(addresses
        .iter()
        .any(|a| a["type"] == "Hostname" && a["address"] == "node-a"));

    // The pod network configuration containerd reads: the node's CIDR on the given bridge.
    let conf: serde_json::Value = serde_json::from_slice(
        &std::fs::read(ctrd.cni_conf_dir.join("10-skiff.conflist")).unwrap(),
    )
    .unwrap();
    assert_eq!(conf["plugins"][0]["bridge"], net.bridge.as_str());
    assert_eq!(
        conf["plugins"][0]["ipam"]["ranges"][0][0]["subnet"],
        net.subnet.as_str()
    );

    // The heartbeat lease, owned by the node, renewed.
    let lease = |k: &skiff_e2e::Kubectl| {
        k.json(&[
            "get",
            "lease",
            "node-a",
            "-n",
            "kube-node-lease",
            "-o",
            "json",
        ])
    };
    let first = lease(&kubectl);
    assert_eq!(first["spec"]["holderIdentity"], "node-a");
    assert_eq!(first["metadata"]["ownerReferences"][0]["kind"], "Node");
    assert_eq!(
        first["metadata"]["ownerReferences"][0]["uid"],
        node["metadata"]["uid"]
    );
    let renewed = first["spec"]["renewTime"].clone();
    wait_for(
        "the lease renewed",
        Duration::from_secs(10),
        || lease(&kubectl)["spec"]["renewTime"] != renewed,
        || k.log(),
    );
}

#[test]
fn bad_flags_are_named() {
    let out = Command::new(skiff_e2e::binary("skiff-kubelet").unwrap())
        .args(["--register-with-taints=a=b:Sometimes", "--node-name=x"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid taint effect \"Sometimes\""), "{err}");
    let out = Command::new(skiff_e2e::binary("skiff-kubelet").unwrap())
        .args([
            "--container-runtime-endpoint=tcp://1.2.3.4:1",
            "--node-name=x",
            "--kubeconfig=/nonexistent",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
}
