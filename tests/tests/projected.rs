//! Projected volumes on a real node: etcd, the API server, a kubelet on a private containerd.
//! The files a container sees (configMap, secret and downward API sources, with their modes,
//! laid out by the atomic writer), a service-account token the kubelet asked for through
//! TokenRequest bound to the pod, and the SDK's in-cluster configuration reading the very
//! directory the kubelet wrote.

use std::time::{Duration, Instant};

use base64::Engine;
use k8s_openapi::api::core::v1::Pod;
use serde_json::{json, Value};
use skiff_e2e::node::Node;
use skiff_e2e::{Cluster, Kubectl};

/// Waits until `f` returns `Some`, failing with `what`, the pod events and the kubelet's log.
fn wait<T>(
    node: &Node,
    k: &Kubectl,
    what: &str,
    within: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{what} within {within:?}; events:\n{}\nkubelet log:\n{}",
            k.run(&["get", "events"]).stdout,
            node.kubelet.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn wait_ready(node: &Node, k: &Kubectl, name: &str) -> Value {
    wait(
        node,
        k,
        &format!("pod {name} Ready"),
        Duration::from_secs(60),
        || {
            let r = k.run(&["get", "pod", name, "-o", "json"]);
            let p: Value = serde_json::from_str(&r.stdout).ok()?;
            let ready = p["status"]["conditions"]
                .as_array()?
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            ready.then_some(p)
        },
    )
}

async fn cat(node: &Node, pod: &Value, path: &str) -> String {
    let (code, out) = node.exec_in(pod, &["cat", path]).await;
    assert_eq!(code, 0, "cat {path}: {out}");
    out
}

async fn mode(node: &Node, pod: &Value, path: &str) -> String {
    let (code, out) = node.exec_in(pod, &["stat", "-L", "-c", "%a", path]).await;
    assert_eq!(code, 0, "stat {path}: {out}");
    out.trim().to_string()
}

/// A client with the in-cluster configuration of `dir`.
fn pods_client(dir: &std::path::Path, port: &str) -> skiff_client::Client {
    skiff_client::Client::new(
        skiff_client::Config::in_cluster_from("127.0.0.1", port, dir).unwrap(),
    )
    .unwrap()
}

/// The claims of a JWT (its payload, decoded; the signature is not checked here).
fn claims(jwt: &str) -> Value {
    let parts: Vec<&str> = jwt.trim().split('.').collect();
    assert_eq!(parts.len(), 3, "not a JWT: {jwt}");
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(parts[1].trim_end_matches('='))
        .unwrap();
    serde_json::from_slice(&payload).unwrap()
}

fn data(k: &Kubectl) {
    k.ok(&[
        "create",
        "configmap",
        "settings",
        "--from-literal=color=blue",
        "--from-literal=size=large",
    ]);
    k.ok(&[
        "create",
        "secret",
        "generic",
        "creds",
        "--from-literal=password=s3cret",
        "--from-literal=user=admin",
    ]);
}

#[tokio::test]
async fn configmap_secret_and_downward_api_sources_with_their_modes() {
    let c = Cluster::start().await.unwrap();
    let node = Node::start(&c.api.kubeconfig, "node-a", &[]).unwrap();
    let k = c.kubectl();
    data(&k);
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "reader", "labels": {"app": "reader"},
            "annotations": {"note": "hello"}},
        "spec": {
            "nodeName": "node-a",
            "automountServiceAccountToken": false,
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "main", "image": node.images.busybox, "command": ["sleep", "3600"],
                "resources": {"limits": {"memory": "32Mi"}},
                "volumeMounts": [
                    {"name": "all", "mountPath": "/all"},
                    {"name": "cm", "mountPath": "/cm"},
                    {"name": "sec", "mountPath": "/sec"},
                    {"name": "info", "mountPath": "/info"}
                ]
            }],
            "volumes": [
                {"name": "all", "projected": {"defaultMode": 0o440, "sources": [
                    {"configMap": {"name": "settings",
                        "items": [{"key": "color", "path": "config/color", "mode": 0o444}]}},
                    {"secret": {"name": "creds"}},
                    {"downwardAPI": {"items": [
                        {"path": "pod/name", "fieldRef": {"fieldPath": "metadata.name"}},
                        {"path": "pod/namespace", "fieldRef": {"fieldPath": "metadata.namespace"}},
                        {"path": "pod/uid", "fieldRef": {"fieldPath": "metadata.uid"}},
                        {"path": "pod/labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                        {"path": "pod/note", "fieldRef": {"fieldPath": "metadata.annotations['note']"}},
                        {"path": "mem", "resourceFieldRef": {"containerName": "main",
                            "resource": "limits.memory", "divisor": "1Mi"}}
                    ]}},
                    {"configMap": {"name": "not-there", "optional": true}},
                    {"secret": {"name": "not-there-either", "optional": true}}
                ]}},
                {"name": "cm", "configMap": {"name": "settings", "defaultMode": 0o600,
                    "items": [{"key": "size", "path": "size"}]}},
                {"name": "sec", "secret": {"secretName": "creds", "defaultMode": 0o400}},
                {"name": "info", "downwardAPI": {"items": [
                    {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}, "mode": 0o400}
                ]}}
            ]
        }
    });
    k.ok_input(&["apply", "-f", "-"], &pod.to_string());
    let pod = wait_ready(&node, &k, "reader");
    let uid = pod["metadata"]["uid"].as_str().unwrap().to_string();

    // The projected volume: every source's files, each with its mode.
    assert_eq!(cat(&node, &pod, "/all/config/color").await, "blue");
    assert_eq!(cat(&node, &pod, "/all/password").await, "s3cret");
    assert_eq!(cat(&node, &pod, "/all/user").await, "admin");
    assert_eq!(cat(&node, &pod, "/all/pod/name").await, "reader");
    assert_eq!(cat(&node, &pod, "/all/pod/namespace").await, "default");
    assert_eq!(cat(&node, &pod, "/all/pod/uid").await, uid);
    assert_eq!(cat(&node, &pod, "/all/pod/labels").await, "app=\"reader\"");
    assert_eq!(cat(&node, &pod, "/all/pod/note").await, "hello");
    assert_eq!(cat(&node, &pod, "/all/mem").await, "32");
    assert_eq!(mode(&node, &pod, "/all/config/color").await, "444");
    assert_eq!(mode(&node, &pod, "/all/password").await, "440");
    assert_eq!(mode(&node, &pod, "/all/pod/name").await, "440");
    // The plain kinds follow the same rules.
    assert_eq!(cat(&node, &pod, "/cm/size").await, "large");
    assert_eq!(mode(&node, &pod, "/cm/size").await, "600");
    let (code, _) = node.exec_in(&pod, &["cat", "/cm/color"]).await;
    assert_ne!(code, 0, "only the listed item is projected");
    assert_eq!(cat(&node, &pod, "/sec/password").await, "s3cret");
    assert_eq!(mode(&node, &pod, "/sec/user").await, "400");
    assert_eq!(cat(&node, &pod, "/info/labels").await, "app=\"reader\"");
    assert_eq!(mode(&node, &pod, "/info/labels").await, "400");

    // The API server's Service reaches every container as in-cluster clients expect it.
    let ip = k.ok(&[
        "get",
        "service",
        "kubernetes",
        "-n",
        "default",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    let (_, env) = node.exec_in(&pod, &["env"]).await;
    for want in [
        format!("KUBERNETES_SERVICE_HOST={}", ip.trim()),
        "KUBERNETES_SERVICE_PORT=443".to_string(),
        "KUBERNETES_SERVICE_PORT_HTTPS=443".to_string(),
        format!("KUBERNETES_PORT=tcp://{}:443", ip.trim()),
    ] {
        assert!(
            env.lines().any(|l| l == want),
            "{want} missing from:\n{env}"
        );
    }

    // The atomic writer's layout: visible names link through ..data to a timestamped
    // directory.
    let (_, link) = node.exec_in(&pod, &["readlink", "/all/config"]).await;
    assert_eq!(link.trim(), "..data/config");
    let (_, first) = node.exec_in(&pod, &["readlink", "/all/..data"]).await;
    let first = first.trim().to_string();
    assert!(first.starts_with("..20"), "{first}");
    // Projected volumes are read-only to the container.
    let (code, _) = node.exec_in(&pod, &["sh", "-c", "echo x > /all/new"]).await;
    assert_ne!(code, 0);

    // An update reaches the volume as a new data directory.
    k.ok(&[
        "patch",
        "configmap",
        "settings",
        "--type=merge",
        "-p",
        r#"{"data":{"color":"green"}}"#,
    ]);
    let mut waited = 0;
    while cat(&node, &pod, "/all/config/color").await != "green" {
        waited += 1;
        assert!(
            waited < 150,
            "the configMap update in the volume; kubelet log:\n{}",
            node.kubelet.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, second) = node.exec_in(&pod, &["readlink", "/all/..data"]).await;
    assert_ne!(second.trim(), first);
    let (_, listing) = node.exec_in(&pod, &["ls", "-a", "/all"]).await;
    assert!(
        !listing.lines().any(|l| l == first),
        "the old data directory is gone: {listing}"
    );
    assert_eq!(mode(&node, &pod, "/all/config/color").await, "444");

    // A source that is neither there nor optional fails the mount, as FailedMount.
    k.ok_input(
        &["apply", "-f", "-"],
        &json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "missing"},
            "spec": {
                "nodeName": "node-a",
                "automountServiceAccountToken": false,
                "containers": [{"name": "main", "image": node.images.busybox,
                    "command": ["sleep", "3600"],
                    "volumeMounts": [{"name": "all", "mountPath": "/all"}]}],
                "volumes": [{"name": "all", "projected": {"sources": [
                    {"configMap": {"name": "settings"}},
                    {"secret": {"name": "absent"}}
                ]}}]
            }
        })
        .to_string(),
    );
    let message = wait(
        &node,
        &k,
        "a FailedMount event",
        Duration::from_secs(30),
        || {
            let ev = k.json(&[
                "get",
                "events",
                "--field-selector=involvedObject.name=missing,reason=FailedMount",
                "-o",
                "json",
            ]);
            ev["items"][0]["message"].as_str().map(String::from)
        },
    );
    assert_eq!(
        message,
        "MountVolume.SetUp failed for volume \"all\" : secret \"absent\" not found"
    );
}

/// Depends on the `serviceaccounts/token` subresource (TokenRequest) and on the API server
/// authenticating ServiceAccount tokens.
#[tokio::test]
async fn a_projected_token_is_bound_to_the_pod_and_works_as_an_in_cluster_config() {
    let c = Cluster::start().await.unwrap();
    let node = Node::start(&c.api.kubeconfig, "node-a", &[]).unwrap();
    let k = c.kubectl();
    data(&k);
    k.ok(&["create", "serviceaccount", "robot"]);
    // The cluster CA, projected as a pod's kube-api-access volume projects it.
    let admin = skiff_client::Config::from_kubeconfig(&c.api.kubeconfig).unwrap();
    let ca = String::from_utf8(admin.ca_pem.clone().unwrap()).unwrap();
    k.ok_input(
        &["apply", "-f", "-"],
        &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cluster-ca"},
                "data": {"ca.crt": ca}})
        .to_string(),
    );
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "tokened"},
        "spec": {
            "nodeName": "node-a",
            "serviceAccountName": "robot",
            "automountServiceAccountToken": false,
            // Not root: the token, 0600, is given to the containers' user.
            "securityContext": {"runAsUser": 1000},
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "main", "image": node.images.busybox, "command": ["sleep", "3600"],
                "volumeMounts": [{"name": "identity", "mountPath": "/identity"}]
            }],
            "volumes": [{"name": "identity", "projected": {"sources": [
                {"serviceAccountToken": {"audience": "vault", "expirationSeconds": 7200,
                    "path": "vault-token"}},
                {"serviceAccountToken": {"path": "token"}},
                {"configMap": {"name": "cluster-ca", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"secret": {"name": "creds", "items": [{"key": "user", "path": "user"}]}},
                {"downwardAPI": {"items": [
                    {"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}
                ]}}
            ]}}]
        }
    });
    k.ok_input(&["apply", "-f", "-"], &pod.to_string());
    let pod = wait_ready(&node, &k, "tokened");
    let uid = pod["metadata"]["uid"].as_str().unwrap().to_string();

    // The token with the projection's audience and lifetime names the pod and its account.
    let jwt = cat(&node, &pod, "/identity/vault-token").await;
    let cl = claims(&jwt);
    assert_eq!(cl["aud"], json!(["vault"]), "{cl}");
    assert_eq!(cl["sub"], "system:serviceaccount:default:robot");
    let kio = &cl["kubernetes.io"];
    assert_eq!(kio["namespace"], "default");
    assert_eq!(kio["serviceaccount"]["name"], "robot");
    assert_eq!(kio["pod"]["name"], "tokened");
    assert_eq!(kio["pod"]["uid"], uid.as_str());
    assert_eq!(kio["node"]["name"], "node-a");
    assert_eq!(
        cl["exp"].as_i64().unwrap() - cl["iat"].as_i64().unwrap(),
        7200
    );
    assert_eq!(mode(&node, &pod, "/identity/vault-token").await, "600");
    let (_, owner) = node
        .exec_in(&pod, &["stat", "-L", "-c", "%u", "/identity/token"])
        .await;
    assert_eq!(owner.trim(), "1000");
    assert_eq!(mode(&node, &pod, "/identity/user").await, "644");
    // Without an audience: the API server's own, for the default hour.
    let api_token = cat(&node, &pod, "/identity/token").await;
    let cl = claims(&api_token);
    assert_eq!(
        cl["aud"],
        json!(["https://kubernetes.default.svc.cluster.local"]),
        "{cl}"
    );
    assert_eq!(
        cl["exp"].as_i64().unwrap() - cl["iat"].as_i64().unwrap(),
        3600
    );
    assert_eq!(cat(&node, &pod, "/identity/user").await, "admin");
    assert_eq!(cat(&node, &pod, "/identity/namespace").await, "default");
    assert_eq!(cat(&node, &pod, "/identity/ca.crt").await, ca);

    // The directory the kubelet wrote is an in-cluster configuration: the SDK reads it and
    // reaches the API server as the pod's ServiceAccount, with that account's rights.
    k.ok(&[
        "create",
        "role",
        "pod-reader",
        "--verb=get",
        "--resource=pods",
    ]);
    k.ok(&[
        "create",
        "rolebinding",
        "robot-reads-pods",
        "--role=pod-reader",
        "--serviceaccount=default:robot",
    ]);
    let dir = node
        .kubelet
        .root_dir
        .join("pods")
        .join(&uid)
        .join("volumes/kubernetes.io~projected/identity");
    let port = c.api.port.to_string();
    let config = skiff_client::Config::in_cluster_from("127.0.0.1", &port, &dir).unwrap();
    assert_eq!(config.namespace, "default");
    assert_eq!(config.token.as_deref(), Some(api_token.trim()));
    let client = skiff_client::Client::new(config).unwrap();
    let pods: skiff_client::Api<Pod> = skiff_client::Api::default_namespaced(client);
    let me = pods.get("tokened").await.unwrap();
    assert_eq!(me.metadata.uid.as_deref(), Some(uid.as_str()));
    let secrets: skiff_client::Api<k8s_openapi::api::core::v1::Secret> =
        skiff_client::Api::namespaced(pods_client(&dir, &port), "default");
    match secrets.get("creds").await.unwrap_err() {
        skiff_client::Error::Api(a) => assert_eq!(a.code, 403, "{a}"),
        other => panic!("reading a secret not granted: {other}"),
    }

    // Once the pod is gone its token stops working: it was bound to the pod.
    k.ok(&["delete", "pod", "tokened", "--wait=true"]);
    let e = pods.get("tokened").await.unwrap_err();
    match e {
        skiff_client::Error::Api(a) => assert_eq!(a.code, 401, "{a}"),
        other => panic!("a token of a deleted pod: {other}"),
    }
}
