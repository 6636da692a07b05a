//! Nodes join through a bootstrap token and a CertificateSigningRequest: the real kubelet, given
//! only a bootstrap kubeconfig, asks for its certificate and does nothing else until the
//! controller manager has approved (`csrapproving`) and signed (`csrsigning`) it, then
//! registers as `system:node:NAME` and renews its certificate before it expires, with a
//! request of its own, without a restart. Requests that are not a node's (or the proxy's) wait
//! for a human, and what a human approves but the signer may not issue fails.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use skiff::join::BootstrapToken;
use skiff_e2e::node::Node;
use skiff_e2e::{eventually_ok, ApiServer, Daemon, Etcd, Kubectl};

fn eventually<T>(what: &str, within: Duration, f: impl FnMut() -> Result<T, String>) -> T {
    eventually_ok(what, within, f, String::new)
}

/// Applies `objects` as the administrator.
fn apply(k: &Kubectl, objects: Vec<Value>) {
    let list = json!({"apiVersion": "v1", "kind": "List", "items": objects});
    k.ok_input(&["apply", "-f", "-"], &list.to_string());
}

/// The join bindings and a bootstrap token valid for an hour; its bootstrap kubeconfig.
fn bootstrap(api: &ApiServer, k: &Kubectl, dir: &Path) -> (BootstrapToken, std::path::PathBuf) {
    let token = BootstrapToken::generate();
    let mut objects = skiff::addons::join_rbac();
    objects.push(token.secret_object(Some(chrono::Utc::now() + chrono::Duration::hours(1))));
    apply(k, objects);
    let ca = std::fs::read(api.data_dir.join("ca.crt")).unwrap();
    let server = format!("https://127.0.0.1:{}", api.port);
    let path = dir.join("bootstrap.kubeconfig");
    std::fs::write(
        &path,
        skiff::server::token_kubeconfig(&server, &ca, &token.to_string()).unwrap(),
    )
    .unwrap();
    (token, path)
}

/// The controller manager running only the CSR controllers, signing with the cluster CA.
fn signer(api: &ApiServer, duration: &str) -> Daemon {
    let d = &api.data_dir;
    Daemon::start(
        "skiff-controller-manager",
        api,
        &[
            "--controllers=csrapproving,csrsigning",
            "--leader-elect=false",
            "--port=0",
            &format!("--cluster-signing-cert-file={}", d.join("ca.crt").display()),
            &format!("--cluster-signing-key-file={}", d.join("ca.key").display()),
            &format!("--cluster-signing-duration={duration}"),
        ],
    )
    .unwrap()
}

/// `signer requestor condition issued` of every CSR, one line each.
fn csrs(k: &Kubectl) -> Vec<(String, String, String, String, bool)> {
    let list = k.json(&["get", "csr"]);
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let cond = c["status"]["conditions"]
                .as_array()
                .and_then(|cs| cs.last())
                .map(|c| c["type"].as_str().unwrap_or_default().to_string())
                .unwrap_or_default();
            (
                c["metadata"]["name"].as_str().unwrap().to_string(),
                c["spec"]["signerName"].as_str().unwrap().to_string(),
                c["spec"]["username"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                cond,
                c["status"]["certificate"]
                    .as_str()
                    .is_some_and(|s| !s.is_empty()),
            )
        })
        .collect()
}

/// The CN of the certificate in a kubelet's `kubelet-client-current.pem`, and the PEM.
fn current_cert(root_dir: &Path) -> Option<String> {
    let pem = std::fs::read_to_string(root_dir.join("pki/kubelet-client-current.pem")).ok()?;
    skiff_kubelet::bootstrap::split_pem(&pem).map(|(c, _)| c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubelet_joins_with_a_bootstrap_token_and_renews_its_certificate() {
    let etcd = Etcd::start().unwrap();
    let api = ApiServer::start(&etcd).await.unwrap();
    let k = api.kubectl();
    let dir = tempfile::tempdir().unwrap();
    let (token, bootstrap_kc) = bootstrap(&api, &k, dir.path());
    let kubelet_kc = dir.path().join("kubelet.kubeconfig");

    // The kubelet starts before anything approves: it asks, and waits, and registers nothing.
    let node = Node::start(
        &kubelet_kc,
        "joiner",
        &[&format!(
            "--bootstrap-kubeconfig={}",
            bootstrap_kc.display()
        )],
    )
    .unwrap();
    let requestor = format!("system:bootstrap:{}", token.id);
    let first = eventually("the kubelet's request", Duration::from_secs(60), || {
        csrs(&k)
            .into_iter()
            .find(|c| c.2 == requestor)
            .ok_or_else(|| node.kubelet.log())
    });
    assert_eq!(first.1, "kubernetes.io/kube-apiserver-client-kubelet");
    assert_eq!((first.3.as_str(), first.4), ("", false), "{first:?}");
    assert!(first.0.starts_with("csr-"), "{first:?}");
    let r = k.run(&["get", "node", "joiner"]);
    assert!(!r.status.success(), "registered without an identity");
    assert!(!kubelet_kc.exists());
    let printed = k.ok(&["get", "csr", &first.0]);
    assert!(printed.contains("Pending"), "{printed}");

    // The controller manager approves and signs; the kubelet registers as itself.
    let mut cm = signer(&api, "60s");
    eventually("the node registered", Duration::from_secs(60), || {
        let r = k.run(&["get", "node", "joiner"]);
        r.status
            .success()
            .then_some(())
            .ok_or_else(|| format!("{}\n{}\n{}", r.stderr, node.kubelet.log(), cm.log()))
    });
    let csr = k.json(&["get", "csr", &first.0]);
    let cond = &csr["status"]["conditions"][0];
    assert_eq!(cond["type"], "Approved");
    assert_eq!(cond["reason"], "AutoApproved");
    let printed = k.ok(&["get", "csr", &first.0]);
    assert!(printed.contains("Approved,Issued"), "{printed}");
    let me = Kubectl::new(&kubelet_kc);
    let who = me.json(&["auth", "whoami"]);
    assert_eq!(who["status"]["userInfo"]["username"], "system:node:joiner");
    let groups = who["status"]["userInfo"]["groups"].to_string();
    assert!(groups.contains("system:nodes"), "{groups}");
    let cert = current_cert(&node.kubelet.root_dir).unwrap();

    // A 60 s certificate is renewed after 42 to 54 s, by the node itself, and the kubelet goes
    // on with the new one without a restart.
    let pid = node.kubelet.pid();
    let renewal = eventually("a renewal", Duration::from_secs(90), || {
        csrs(&k)
            .into_iter()
            .find(|c| c.2 == "system:node:joiner" && c.4)
            .ok_or_else(|| format!("{:?}\n{}", csrs(&k), node.kubelet.log()))
    });
    assert_eq!(renewal.3, "Approved", "{renewal:?}");
    eventually("the kubelet switched", Duration::from_secs(30), || {
        let log = node.kubelet.log();
        (log.contains("rotated the client certificate")
            && current_cert(&node.kubelet.root_dir).is_some_and(|c| c != cert))
        .then_some(())
        .ok_or(log)
    });
    assert_eq!(node.kubelet.pid(), pid);
    // Its heartbeat goes on under the new certificate (the old one expires meanwhile).
    let renewed_at = |k: &Kubectl| {
        k.json(&["-n", "kube-node-lease", "get", "lease", "joiner"])["spec"]["renewTime"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let before = renewed_at(&k);
    eventually("the lease renewed", Duration::from_secs(30), || {
        (renewed_at(&k) != before)
            .then_some(())
            .ok_or_else(|| node.kubelet.log())
    });
    let who = me.json(&["auth", "whoami"]);
    assert_eq!(who["status"]["userInfo"]["username"], "system:node:joiner");
    cm.stop();
}

/// A CSR object for `cn` / `orgs` from the signer `signer`.
fn csr_object(name: &str, signer: &str, cn: &str, orgs: &[&str], usages: &[&str]) -> Value {
    use base64::Engine;
    let (_, request) = skiff_kubelet::bootstrap::new_request_for(cn, orgs).unwrap();
    json!({"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
           "metadata": {"name": name},
           "spec": {"signerName": signer,
                    "request": base64::engine::general_purpose::STANDARD.encode(request),
                    "usages": usages}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_node_and_proxy_requests_are_approved_by_themselves() {
    let etcd = Etcd::start().unwrap();
    let api = ApiServer::start(&etcd).await.unwrap();
    let admin = api.kubectl();
    let dir = tempfile::tempdir().unwrap();
    let (_token, bootstrap_kc) = bootstrap(&api, &admin, dir.path());
    let _cm = signer(&api, "8760h");
    let joiner = Kubectl::new(&bootstrap_kc);
    const KUBELET: &str = "kubernetes.io/kube-apiserver-client-kubelet";
    const CLIENT: &str = "kubernetes.io/kube-apiserver-client";
    let usages = ["digital signature", "client auth"];
    // With the bootstrap token: requests nobody approves by themselves, then a good one.
    for (name, signer, cn, orgs, usages) in [
        (
            "masters",
            KUBELET,
            "system:node:n1",
            &["system:masters"][..],
            &usages[..],
        ),
        (
            "no-node",
            KUBELET,
            "alice",
            &["system:nodes"][..],
            &usages[..],
        ),
        (
            "serving",
            KUBELET,
            "system:node:n1",
            &["system:nodes"][..],
            &["digital signature", "server auth"][..],
        ),
        (
            "scheduler",
            CLIENT,
            "system:kube-scheduler",
            &[][..],
            &usages[..],
        ),
        ("proxy", CLIENT, "system:kube-proxy", &[][..], &usages[..]),
        (
            "node",
            KUBELET,
            "system:node:n1",
            &["system:nodes"][..],
            &usages[..],
        ),
    ] {
        joiner.ok_input(
            &["create", "-f", "-"],
            &csr_object(name, signer, cn, orgs, usages).to_string(),
        );
    }
    let state = |name: &str| {
        csrs(&admin)
            .into_iter()
            .find(|c| c.0 == name)
            .map(|c| (c.3, c.4))
            .unwrap()
    };
    for name in ["proxy", "node"] {
        eventually(&format!("{name} issued"), Duration::from_secs(60), || {
            let s = state(name);
            (s == ("Approved".to_string(), true))
                .then_some(())
                .ok_or(format!("{s:?}"))
        });
    }
    for name in ["masters", "no-node", "serving", "scheduler"] {
        assert_eq!(state(name), (String::new(), false), "{name}");
    }
    // A human decides: approved, the signer still refuses what it may not issue; denied,
    // nothing is issued.
    admin.ok(&["certificate", "approve", "masters"]);
    eventually("masters failed", Duration::from_secs(60), || {
        let c = admin.json(&["get", "csr", "masters"]);
        let failed = c["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == "Failed")
            .cloned();
        failed.ok_or(c.to_string())
    });
    let c = admin.json(&["get", "csr", "masters"]);
    assert!(c["status"]["certificate"].is_null(), "{c}");
    let reason = c["status"]["conditions"].to_string();
    assert!(reason.contains("SignerValidationFailure"), "{reason}");
    admin.ok(&["certificate", "deny", "scheduler"]);
    let c = admin.json(&["get", "csr", "scheduler"]);
    assert_eq!(c["status"]["conditions"][0]["type"], "Denied");
    assert!(c["status"]["certificate"].is_null(), "{c}");
    // The bootstrap token may not approve anything itself.
    let r = joiner.run(&["certificate", "approve", "no-node"]);
    assert!(!r.status.success(), "{}", r.stdout);
    assert!(r.stderr.contains("forbidden"), "{}", r.stderr);
    // The proxy's certificate is issued to system:kube-proxy, by the cluster CA.
    let c = admin.json(&["get", "csr", "proxy"]);
    use base64::Engine;
    let pem = base64::engine::general_purpose::STANDARD
        .decode(c["status"]["certificate"].as_str().unwrap())
        .unwrap();
    let (nb, na) = skiff_kubelet::bootstrap::lifetime(&pem).unwrap();
    assert_eq!((na - nb).whole_hours(), 8760);
}
