//! Node identities end to end, with the real kubectl against a real skiff-apiserver on real
//! etcd: nodes authenticated by client certificates from the cluster CA read only what their
//! pods use and write only their own objects (the Node authorizer and NodeRestriction), a
//! bootstrap token Secret authenticates as `system:bootstrap:ID`, and CertificateSigningRequests
//! are created, listed, approved, denied and issued.
//!
//! The servers run with `--authorization-mode=Node` (no RBAC yet): whatever the Node
//! authorizer does not allow is refused, so its refusals show here as 403s; the admin is in
//! `system:masters` and passes before any authorizer.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use k8s_openapi::api::core::v1::Secret;
use serde_json::{json, Value};
use skiff_client::{Api, Client, Config, ListParams};
use skiff_e2e::{ApiServer, Etcd, Kubectl};

const NS: &str = "default";

/// A client certificate (CN `user`, O `groups`) from the server's CA, as a kubeconfig.
fn identity(api: &ApiServer, dir: &Path, user: &str, groups: &[&str]) -> PathBuf {
    let ca_cert = std::fs::read_to_string(api.data_dir.join("ca.crt")).unwrap();
    let ca_key = std::fs::read_to_string(api.data_dir.join("ca.key")).unwrap();
    let issuer =
        rcgen::Issuer::from_ca_cert_pem(&ca_cert, rcgen::KeyPair::from_pem(&ca_key).unwrap())
            .unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, user);
    for g in groups {
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, *g);
    }
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, &issuer).unwrap();
    let kc = skiff_rules::Kubeconfig::single("skiff", &api.url(""))
        .with_certificate_authority(ca_cert.as_bytes())
        .with_client_certificate(cert.pem().as_bytes(), key.serialize_pem().as_bytes())
        .with_user_name(user)
        .to_yaml()
        .unwrap();
    let path = dir.join(format!("{}.kubeconfig", user.replace(':', "-")));
    std::fs::write(&path, kc).unwrap();
    path
}

fn node_identity(api: &ApiServer, dir: &Path, node: &str) -> PathBuf {
    identity(api, dir, &format!("system:node:{node}"), &["system:nodes"])
}

/// A PEM certificate request for `cn` in `org`.
fn csr_pem(cn: &str, org: &str) -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, org);
    params.serialize_request(&key).unwrap().pem().unwrap()
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// Sends a request with a bearer token (or none), trusting the cluster CA.
async fn with_token(
    api: &ApiServer,
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let client = api.anonymous_client().unwrap();
    let mut req = client.request(method, api.url(path)).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let code = resp.status().as_u16();
    (code, resp.json().await.unwrap_or(Value::Null))
}

/// Sends a request with the identity of a kubeconfig.
async fn as_user(
    kubeconfig: &Path,
    api: &ApiServer,
    method: reqwest::Method,
    path: &str,
    patch: Option<Value>,
) -> (u16, Value) {
    let client = skiff_e2e::client_from_kubeconfig(kubeconfig, true).unwrap();
    let mut req = client.request(method, api.url(path));
    if let Some(p) = patch {
        req = req
            .header("Content-Type", "application/merge-patch+json")
            .body(p.to_string());
    }
    let resp = req.send().await.unwrap();
    let code = resp.status().as_u16();
    (code, resp.json().await.unwrap_or(Value::Null))
}

fn message(v: &Value) -> &str {
    v["message"].as_str().unwrap_or("")
}

const POD_WITH_REFS: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: p1}
spec:
  nodeName: n1
  containers:
  - name: c
    image: busybox
    envFrom: [{configMapRef: {name: cm1}}]
  volumes:
  - {name: s, secret: {secretName: s1}}
---
apiVersion: v1
kind: Pod
metadata: {name: p2}
spec:
  nodeName: n2
  containers:
  - name: c
    image: busybox
  volumes:
  - {name: s, secret: {secretName: s2}}
---
apiVersion: v1
kind: Node
metadata: {name: n1}
---
apiVersion: v1
kind: Node
metadata: {name: n2}
"#;

#[tokio::test]
async fn a_node_reads_only_what_its_pods_use_and_writes_only_its_own() {
    let etcd = Etcd::start().unwrap();
    let api = ApiServer::start_with(&etcd, &["--authorization-mode=Node"])
        .await
        .unwrap();
    let admin = api.kubectl();
    for s in ["s1", "s2", "s3"] {
        admin.ok(&["create", "secret", "generic", s, "--from-literal=k=v"]);
    }
    admin.ok(&["create", "configmap", "cm1", "--from-literal=k=v"]);
    admin.ok_input(&["apply", "-f", "-"], POD_WITH_REFS);
    let dir = tempfile::tempdir().unwrap();
    let n1_config = node_identity(&api, dir.path(), "n1");
    let get = reqwest::Method::GET;
    let read = |path: &'static str| as_user(&n1_config, &api, reqwest::Method::GET, path, None);

    // What p1 (bound to n1) uses; the pods watch cache may trail the write a moment. (The
    // node's requests go straight to the REST door: without RBAC a node may not read the
    // discovery documents kubectl starts with.)
    let mut first = (0, Value::Null);
    for _ in 0..100 {
        first = read("/api/v1/namespaces/default/secrets/s1").await;
        if first.0 == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(first.0, 200, "{}", first.1);
    for ok in [
        "/api/v1/namespaces/default/configmaps/cm1",
        "/api/v1/namespaces/default/pods/p1",
        "/api/v1/nodes/n1",
    ] {
        let (code, body) = read(ok).await;
        assert_eq!(code, 200, "{ok}: {body}");
    }

    // Another node's pod's secret, a secret no pod uses, all secrets, another node.
    let no_rel = "no relationship found between node 'n1' and this object";
    let refused = [
        ("/api/v1/namespaces/default/secrets/s2", format!("secrets \"s2\" is forbidden: User \"system:node:n1\" cannot get resource \"secrets\" in API group \"\" in the namespace \"default\": {no_rel}")),
        ("/api/v1/namespaces/default/secrets/s3", format!("secrets \"s3\" is forbidden: User \"system:node:n1\" cannot get resource \"secrets\" in API group \"\" in the namespace \"default\": {no_rel}")),
        ("/api/v1/namespaces/default/secrets", "secrets is forbidden: User \"system:node:n1\" cannot list resource \"secrets\" in API group \"\" in the namespace \"default\": No Object name found".to_string()),
        ("/api/v1/secrets", "secrets is forbidden: User \"system:node:n1\" cannot list resource \"secrets\" in API group \"\" at the cluster scope: can only read namespaced object of this type".to_string()),
        ("/api/v1/namespaces/default/pods/p2", format!("pods \"p2\" is forbidden: User \"system:node:n1\" cannot get resource \"pods\" in API group \"\" in the namespace \"default\": {no_rel}")),
        ("/api/v1/nodes/n2", "nodes \"n2\" is forbidden: User \"system:node:n1\" cannot get resource \"nodes\" in API group \"\" at the cluster scope: node 'n1' cannot read 'n2', only its own Node object".to_string()),
    ];
    for (path, want) in refused {
        let (code, body) = read(path).await;
        assert_eq!(code, 403, "{path}: {body}");
        assert_eq!(message(&body), want, "{path}");
    }

    // REST list and watch: one named object only, as kubelets ask for it.
    let secrets = "/api/v1/namespaces/default/secrets";
    for (query, want) in [
        ("?fieldSelector=metadata.name%3Ds1", 200),
        ("?fieldSelector=metadata.name%3Ds2", 403),
        ("", 403),
        ("?watch=1&fieldSelector=metadata.name%3Ds2", 403),
        ("?watch=1", 403),
    ] {
        let (code, body) = as_user(
            &n1_config,
            &api,
            get.clone(),
            &format!("{secrets}{query}"),
            None,
        )
        .await;
        assert_eq!(code, want, "{query}: {body}");
        if want == 200 {
            let names: Vec<&str> = body["items"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|i| i["metadata"]["name"].as_str())
                .collect();
            assert_eq!(names, vec!["s1"]);
        }
    }
    let (code, _) = as_user(
        &n1_config,
        &api,
        get.clone(),
        &format!("{secrets}?watch=1&fieldSelector=metadata.name%3Ds1&timeoutSeconds=1"),
        None,
    )
    .await;
    assert_eq!(code, 200);
    let (code, body) = as_user(
        &n1_config,
        &api,
        get.clone(),
        "/api/v1/pods?fieldSelector=spec.nodeName%3Dn1",
        None,
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["items"].as_array().unwrap().len(), 1);
    let (code, body) = as_user(
        &n1_config,
        &api,
        get.clone(),
        "/api/v1/pods?fieldSelector=spec.nodeName%3Dn2",
        None,
    )
    .await;
    assert_eq!(code, 403, "{body}");
    assert!(
        message(&body).ends_with("can only list/watch pods with spec.nodeName field selector"),
        "{body}"
    );

    // The gRPC door, through the SDK.
    let client = Client::new(Config::from_kubeconfig(&n1_config).unwrap()).unwrap();
    let sdk: Api<Secret> = Api::namespaced(client, NS);
    assert_eq!(
        sdk.get("s1").await.unwrap().metadata.name.as_deref(),
        Some("s1")
    );
    let err = sdk.get("s2").await.unwrap_err().to_string();
    assert!(
        err.contains(no_rel) && err.contains("PermissionDenied"),
        "{err}"
    );
    let err = sdk
        .list(&ListParams::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("No Object name found"), "{err}");
    let only = sdk
        .list(&ListParams::default().fields("metadata.name=s1"))
        .await
        .unwrap();
    assert_eq!(only.items.len(), 1);
    assert!(sdk
        .list(&ListParams::default().fields("metadata.name=s2"))
        .await
        .is_err());

    // Its own Node, not another's, and no steering labels.
    let patch = reqwest::Method::PATCH;
    let (code, body) = as_user(
        &n1_config,
        &api,
        patch.clone(),
        "/api/v1/nodes/n1",
        Some(json!({"metadata": {"labels": {"team": "a"}}})),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = as_user(
        &n1_config,
        &api,
        patch.clone(),
        "/api/v1/nodes/n2",
        Some(json!({"metadata": {"labels": {"team": "a"}}})),
    )
    .await;
    assert_eq!(code, 403, "{body}");
    assert_eq!(
        message(&body),
        "nodes \"n2\" is forbidden: node \"n1\" is not allowed to modify node \"n2\""
    );
    let (code, body) = as_user(
        &n1_config,
        &api,
        patch.clone(),
        "/api/v1/nodes/n1",
        Some(json!({"metadata": {"labels": {"node-restriction.kubernetes.io/x": "y"}}})),
    )
    .await;
    assert_eq!(code, 403, "{body}");
    assert_eq!(
        message(&body),
        "nodes \"n1\" is forbidden: is not allowed to modify labels: node-restriction.kubernetes.io/x"
    );
    let labels = admin.json(&["get", "node", "n1"]);
    assert_eq!(labels["metadata"]["labels"]["team"], "a");
    assert!(labels["metadata"]["labels"]
        .get("node-restriction.kubernetes.io/x")
        .is_none());

    // Its pods' status only.
    let status = json!({"status": {"message": "running here"}});
    let (code, body) = as_user(
        &n1_config,
        &api,
        patch.clone(),
        "/api/v1/namespaces/default/pods/p1/status",
        Some(status.clone()),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["status"]["message"], "running here");
    let (code, body) = as_user(
        &n1_config,
        &api,
        patch.clone(),
        "/api/v1/namespaces/default/pods/p2/status",
        Some(status),
    )
    .await;
    assert_eq!(code, 403, "{body}");
    assert_eq!(message(&body), "pods \"p2\" is forbidden: node \"n1\" can only update pod status for pods with spec.nodeName set to itself");

    // A user that is not a node gets nothing from the Node authorizer.
    let alice = identity(&api, dir.path(), "alice", &[]);
    let (code, body) = as_user(
        &alice,
        &api,
        get,
        "/api/v1/namespaces/default/secrets/s1",
        None,
    )
    .await;
    assert_eq!(code, 403, "{body}");
    assert_eq!(
        message(&body),
        "secrets \"s1\" is forbidden: User \"alice\" cannot get resource \"secrets\" in API group \"\" in the namespace \"default\""
    );
}

/// Creates a bootstrap token Secret with kubectl.
fn bootstrap_secret(admin: &Kubectl, id: &str, secret: &str, expiration: &str) {
    admin.ok(&[
        "create",
        "secret",
        "generic",
        &format!("bootstrap-token-{id}"),
        "-n",
        "kube-system",
        "--type=bootstrap.kubernetes.io/token",
        &format!("--from-literal=token-id={id}"),
        &format!("--from-literal=token-secret={secret}"),
        &format!("--from-literal=expiration={expiration}"),
        "--from-literal=usage-bootstrap-authentication=true",
        "--from-literal=auth-extra-groups=system:bootstrappers:worker",
    ]);
}

#[tokio::test]
async fn bootstrap_tokens_authenticate_as_their_bootstrap_user() {
    let etcd = Etcd::start().unwrap();
    let api = ApiServer::start_with(&etcd, &["--authorization-mode=Node"])
        .await
        .unwrap();
    let admin = api.kubectl();
    bootstrap_secret(&admin, "abcdef", "0123456789abcdef", "2999-01-01T00:00:00Z");
    bootstrap_secret(&admin, "oldtok", "0123456789abcdef", "2001-01-01T00:00:00Z");
    let get = reqwest::Method::GET;
    let pods = "/api/v1/namespaces/default/pods";
    // The secrets watch cache may trail the write a moment: the token then is 401.
    let mut last = (0, Value::Null);
    for _ in 0..100 {
        last = with_token(&api, get.clone(), pods, "abcdef.0123456789abcdef", None).await;
        if last.0 != 401 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Authenticated, and refused by the Node authorizer (no RBAC here): the refusal names
    // the bootstrap user.
    assert_eq!(last.0, 403, "{}", last.1);
    assert_eq!(
        message(&last.1),
        "pods is forbidden: User \"system:bootstrap:abcdef\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\""
    );
    for bad in [
        "abcdef.0123456789abcdee",
        "oldtok.0123456789abcdef",
        "nosuch.0123456789abcdef",
        "abcdef",
    ] {
        let (code, body) = with_token(&api, get.clone(), pods, bad, None).await;
        assert_eq!(code, 401, "{bad}: {body}");
    }
    // Deleting the Secret revokes the token.
    admin.ok(&[
        "delete",
        "secret",
        "-n",
        "kube-system",
        "bootstrap-token-abcdef",
    ]);
    let mut code = 0;
    for _ in 0..100 {
        code = with_token(&api, get.clone(), pods, "abcdef.0123456789abcdef", None)
            .await
            .0;
        if code == 401 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(code, 401);
}

#[tokio::test]
async fn certificate_signing_requests_are_created_approved_denied_and_issued() {
    let etcd = Etcd::start().unwrap();
    // AlwaysAllow after Node: a bootstrap token may then create CSRs (RBAC would grant it
    // through system:node-bootstrapper).
    let api = ApiServer::start_with(&etcd, &["--authorization-mode=Node,AlwaysAllow"])
        .await
        .unwrap();
    let admin = api.kubectl();
    bootstrap_secret(&admin, "abcdef", "0123456789abcdef", "2999-01-01T00:00:00Z");
    let token = "abcdef.0123456789abcdef";
    let csr = |name: &str, cn: &str| {
        json!({
            "apiVersion": "certificates.k8s.io/v1",
            "kind": "CertificateSigningRequest",
            "metadata": {"name": name},
            "spec": {
                "request": b64(&csr_pem(cn, "system:nodes")),
                "signerName": "kubernetes.io/kube-apiserver-client-kubelet",
                "usages": ["digital signature", "client auth"],
                "expirationSeconds": 86400,
                "username": "forged",
            },
        })
    };
    let path = "/apis/certificates.k8s.io/v1/certificatesigningrequests";
    let mut created = (0, Value::Null);
    for _ in 0..100 {
        created = with_token(
            &api,
            reqwest::Method::POST,
            path,
            token,
            Some(csr("node-csr-a", "system:node:n1")),
        )
        .await;
        if created.0 != 401 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(created.0, 201, "{}", created.1);
    assert_eq!(created.1["spec"]["username"], "system:bootstrap:abcdef");
    assert_eq!(
        created.1["spec"]["groups"],
        json!([
            "system:bootstrappers",
            "system:bootstrappers:worker",
            "system:authenticated"
        ])
    );
    let (code, body) = with_token(
        &api,
        reqwest::Method::POST,
        path,
        token,
        Some(csr("node-csr-b", "system:node:n2")),
    )
    .await;
    assert_eq!(code, 201, "{body}");

    let table = admin.ok(&["get", "csr"]);
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "AGE",
            "SIGNERNAME",
            "REQUESTOR",
            "REQUESTEDDURATION",
            "CONDITION"
        ]
    );
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(row[0], "node-csr-a");
    assert_eq!(
        row[2..],
        [
            "kubernetes.io/kube-apiserver-client-kubelet",
            "system:bootstrap:abcdef",
            "24h",
            "Pending"
        ]
    );

    let out = admin.ok(&["certificate", "approve", "node-csr-a"]);
    assert!(
        out.contains("certificatesigningrequest.certificates.k8s.io/node-csr-a approved"),
        "{out}"
    );
    let out = admin.ok(&["certificate", "deny", "node-csr-b"]);
    assert!(out.contains("node-csr-b denied"), "{out}");
    let a = admin.json(&["get", "csr", "node-csr-a"]);
    assert_eq!(a["status"]["conditions"][0]["type"], "Approved");
    assert_eq!(a["status"]["conditions"][0]["reason"], "KubectlApprove");
    assert!(a["status"]["conditions"][0]["lastTransitionTime"].is_string());
    // The spec stays as created.
    assert_eq!(a["spec"]["username"], "system:bootstrap:abcdef");

    // The signer's write: a certificate through status.
    let ca_cert = std::fs::read_to_string(api.data_dir.join("ca.crt")).unwrap();
    let mut signed = a.clone();
    signed["status"]["certificate"] = json!(b64(&ca_cert));
    let client = api.client().unwrap();
    let resp = client
        .put(api.url(&format!("{path}/node-csr-a/status")))
        .json(&signed)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status().as_u16(),
        200,
        "{}",
        resp.text().await.unwrap()
    );
    // Status may not approve; approval may not issue.
    let mut approve_b = admin.json(&["get", "csr", "node-csr-b"]);
    approve_b["status"]["conditions"] = json!([{"type": "Approved", "status": "True"}]);
    let resp = client
        .put(api.url(&format!("{path}/node-csr-b/status")))
        .json(&approve_b)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 422);
    let body: Value = resp.json().await.unwrap();
    assert!(
        message(&body).contains(
            "status.conditions: Forbidden: updates may not add a condition of type \"Approved\""
        ),
        "{body}"
    );

    let table = admin.ok(&["get", "csr"]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("node-csr-a") && l.trim_end().ends_with("Approved,Issued")),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("node-csr-b") && l.trim_end().ends_with("Denied")),
        "{table}"
    );

    // A request that is no PEM certificate request, and one of the server's limits.
    let mut bad = csr("bad", "x");
    bad["spec"]["request"] = json!(b64("not a certificate request"));
    let err = admin.run_with_input(&["create", "-f", "-"], &bad.to_string());
    assert!(!err.status.success());
    assert!(
        err.stderr.contains(
            "The CertificateSigningRequest \"bad\" is invalid: spec.request: Invalid value"
        ) && err
            .stderr
            .contains("PEM block type must be CERTIFICATE REQUEST"),
        "{}",
        err.stderr
    );
    let mut short = csr("short", "x");
    short["spec"]["expirationSeconds"] = json!(60);
    let (code, body) = with_token(&api, reqwest::Method::POST, path, token, Some(short)).await;
    assert_eq!(code, 422, "{body}");
    assert!(message(&body).contains("spec.expirationSeconds: Invalid value: 60: may not specify a duration less than 600 seconds (10 minutes)"), "{body}");
}
