//! Role-based access control end to end: users from client certificates and static tokens,
//! roles and bindings made with the real kubectl, the exact 403s of both doors, privilege
//! escalation refused, `kubectl auth can-i` / `whoami`, impersonation, anonymous access and
//! the bootstrap policy.

use std::path::{Path, PathBuf};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Secret};
use serde_json::{json, Value};
use skiff_client::proto::resources_client::ResourcesClient;
use skiff_client::{proto, Api, Client, Config, ListParams, WatchParams};
use skiff_e2e::{ApiServer, Etcd, Kubectl};

const ALICE: &str = "alice-token-0123456789";
const BOB: &str = "bob-token-0123456789";

/// An API server with two token users (alice, bob in group `dev`).
async fn server(dir: &Path, extra: &[&str]) -> (Etcd, ApiServer) {
    let tokens = dir.join("tokens.csv");
    std::fs::write(
        &tokens,
        format!("{ALICE},alice,1001\n{BOB},bob,1002,\"dev\"\n"),
    )
    .unwrap();
    let etcd = Etcd::start().unwrap();
    let mut args = vec![format!("--token-auth-file={}", tokens.display())];
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let api = ApiServer::start_with(&etcd, &args).await.unwrap();
    (etcd, api)
}

/// A kubeconfig for `token` against `api`.
fn token_kubeconfig(api: &ApiServer, dir: &Path, user: &str, token: &str) -> PathBuf {
    let ca = std::fs::read(api.data_dir.join("ca.crt")).unwrap();
    let kc = skiff_rules::Kubeconfig::single("skiff", &api.url(""))
        .with_certificate_authority(&ca)
        .with_token(token)
        .with_user_name(user);
    let p = dir.join(format!("{user}.kubeconfig"));
    std::fs::write(&p, kc.to_yaml().unwrap()).unwrap();
    p
}

/// A kubeconfig with a client certificate for `user` in `groups`, signed by the cluster CA.
fn cert_kubeconfig(api: &ApiServer, dir: &Path, user: &str, groups: &[&str]) -> PathBuf {
    let pki_dir = dir.join(format!("pki-{user}"));
    std::fs::create_dir_all(&pki_dir).unwrap();
    for f in ["ca.crt", "ca.key"] {
        std::fs::copy(api.data_dir.join(f), pki_dir.join(f)).unwrap();
    }
    let url = api.url("");
    let pki =
        skiff_apiserver::certs::Pki::load_or_create(&pki_dir, &["localhost".into()], &url).unwrap();
    let (cert, key) = pki.issue_client(user, groups).unwrap();
    let ca = std::fs::read_to_string(api.data_dir.join("ca.crt")).unwrap();
    let kc = skiff_apiserver::certs::kubeconfig(&url, &ca, &cert, &key, user).unwrap();
    let p = dir.join(format!("{user}-cert.kubeconfig"));
    std::fs::write(&p, kc).unwrap();
    p
}

fn sdk(kubeconfig: &Path) -> Client {
    Client::new(Config::from_kubeconfig(kubeconfig).unwrap()).unwrap()
}

fn grpc_message(e: skiff_client::Error) -> (tonic::Code, String) {
    match e {
        skiff_client::Error::Api(a) => (a.grpc_code, a.message),
        other => panic!("not an API error: {other}"),
    }
}

#[tokio::test]
async fn users_get_only_what_their_roles_grant() {
    let dir = tempfile::tempdir().unwrap();
    let (_etcd, api) = server(dir.path(), &[]).await;
    let admin = api.kubectl();
    let alice = Kubectl::new(&token_kubeconfig(&api, dir.path(), "alice", ALICE));
    admin.ok(&["create", "secret", "generic", "s1", "--from-literal=k=v"]);
    admin.ok(&["run", "web", "--image=busybox"]);

    // Nothing is granted: the exact 403 of kube-apiserver, on both doors.
    let err = alice.fails(&["get", "pods"]);
    assert!(
        err.contains(r#"pods is forbidden: User "alice" cannot list resource "pods" in API group "" in the namespace "default""#),
        "{err}"
    );
    let pods: Api<Pod> = Api::namespaced(
        sdk(&token_kubeconfig(&api, dir.path(), "alice", ALICE)),
        "default",
    );
    let (code, msg) = grpc_message(pods.list(&ListParams::default()).await.unwrap_err());
    assert_eq!(code, tonic::Code::PermissionDenied);
    assert_eq!(
        msg,
        r#"pods is forbidden: User "alice" cannot list resource "pods" in API group "" in the namespace "default""#
    );
    let err = alice.fails(&["get", "nodes"]);
    assert!(
        err.contains(r#"nodes is forbidden: User "alice" cannot list resource "nodes" in API group "" at the cluster scope"#),
        "{err}"
    );
    let err = alice.fails(&["get", "deployments"]);
    assert!(
        err.contains(r#"deployments.apps is forbidden: User "alice" cannot list resource "deployments" in API group "apps" in the namespace "default""#),
        "{err}"
    );

    // Bound to view: pods yes, secrets no, whichever verb and door.
    admin.ok(&[
        "create",
        "rolebinding",
        "alice-view",
        "--clusterrole=view",
        "--user=alice",
    ]);
    assert!(alice.ok(&["get", "pods"]).contains("web"));
    assert!(alice
        .ok(&["get", "pod", "web", "-o", "name"])
        .contains("pod/web"));
    assert_eq!(
        pods.list(&ListParams::default()).await.unwrap().items.len(),
        1
    );
    let err = alice.fails(&["get", "secret", "s1"]);
    assert!(
        err.contains(r#"secrets "s1" is forbidden: User "alice" cannot get resource "secrets" in API group "" in the namespace "default""#),
        "{err}"
    );
    alice.fails(&["get", "secrets"]);
    let err = alice.fails(&["get", "secrets", "--watch", "--request-timeout=5s"]);
    assert!(err.contains("secrets is forbidden"), "{err}");
    let alice_http = reqwest_with_token(&api, ALICE);
    for path in [
        "/api/v1/namespaces/default/secrets",
        "/api/v1/namespaces/default/secrets/s1",
        "/api/v1/namespaces/default/secrets?watch=1",
        "/api/v1/secrets",
    ] {
        let r = alice_http.get(api.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 403, "{path}");
        let s: Value = r.json().await.unwrap();
        assert_eq!(s["reason"], "Forbidden");
        assert!(!s["message"].as_str().unwrap().contains("k=v"));
    }
    let secrets: Api<Secret> = Api::namespaced(
        sdk(&token_kubeconfig(&api, dir.path(), "alice", ALICE)),
        "default",
    );
    let (code, msg) = grpc_message(secrets.get("s1").await.unwrap_err());
    assert_eq!(code, tonic::Code::PermissionDenied);
    assert_eq!(
        msg,
        r#"secrets "s1" is forbidden: User "alice" cannot get resource "secrets" in API group "" in the namespace "default""#
    );
    assert_eq!(
        grpc_message(secrets.list(&ListParams::default()).await.unwrap_err()).0,
        tonic::Code::PermissionDenied
    );
    let watched = match secrets.watch(&WatchParams::default(), "0").await {
        Ok(mut s) => s.next().await.map(|r| r.is_err()).unwrap_or(true),
        Err(_) => true,
    };
    assert!(watched, "a watch of secrets is refused");
    // Another namespace: nothing.
    admin.ok(&["create", "namespace", "other"]);
    alice.fails(&["get", "pods", "-n", "other"]);

    // A client certificate user with a group bound cluster-wide.
    let carol = Kubectl::new(&cert_kubeconfig(&api, dir.path(), "carol", &["auditors"]));
    carol.fails(&["get", "pods", "-A"]);
    admin.ok(&[
        "create",
        "clusterrolebinding",
        "auditors-view",
        "--clusterrole=view",
        "--group=auditors",
    ]);
    assert!(carol.ok(&["get", "pods", "-A"]).contains("web"));
    assert!(carol
        .fails(&["delete", "pod", "web"])
        .contains("cannot delete resource"));

    // A binding to a missing role is accepted and grants nothing.
    admin.ok(&[
        "create",
        "rolebinding",
        "ghost",
        "--clusterrole=no-such-role",
        "--user=dave",
    ]);
    let dave = Kubectl::new(&token_kubeconfig(&api, dir.path(), "dave", ALICE));
    // (dave's kubeconfig carries alice's token: the binding to dave changes nothing for her.)
    alice.fails(&["delete", "pod", "web"]);
    drop(dave);

    // Roles and bindings print as kubectl prints them against kube-apiserver.
    let out = admin.ok(&["get", "rolebindings", "-o", "wide"]);
    let head = out.lines().next().unwrap();
    for col in ["NAME", "ROLE", "AGE", "USERS", "GROUPS", "SERVICEACCOUNTS"] {
        assert!(head.contains(col), "{out}");
    }
    assert!(out.contains("ClusterRole/view"), "{out}");
    let out = admin.ok(&["get", "clusterroles"]);
    assert!(out.lines().next().unwrap().contains("CREATED AT"), "{out}");
    for role in [
        "cluster-admin",
        "admin",
        "edit",
        "view",
        "system:basic-user",
        "system:node",
    ] {
        assert!(
            out.lines().any(|l| l.starts_with(&format!("{role} "))),
            "{role}: {out}"
        );
    }
}

/// An HTTPS client that trusts the cluster CA and sends `token` with every request.
struct TokenClient {
    client: reqwest::Client,
    token: String,
}

impl TokenClient {
    fn get(&self, url: String) -> reqwest::RequestBuilder {
        self.client.get(url).bearer_auth(&self.token)
    }
}

fn reqwest_with_token(api: &ApiServer, token: &str) -> TokenClient {
    TokenClient {
        client: api.anonymous_client().unwrap(),
        token: token.into(),
    }
}

#[tokio::test]
async fn can_i_whoami_and_impersonation() {
    let dir = tempfile::tempdir().unwrap();
    let (_etcd, api) = server(dir.path(), &[]).await;
    let admin = api.kubectl();
    let alice = Kubectl::new(&token_kubeconfig(&api, dir.path(), "alice", ALICE));

    let r = admin.run(&["auth", "can-i", "create", "pods", "--as", "alice"]);
    assert_eq!(r.stdout.trim(), "no");
    assert_eq!(r.status.code(), Some(1));
    let r = admin.run(&["auth", "can-i", "create", "pods"]);
    assert_eq!(r.stdout.trim(), "yes");
    assert_eq!(r.status.code(), Some(0));
    admin.ok(&[
        "create",
        "rolebinding",
        "alice-edit",
        "--clusterrole=edit",
        "--user=alice",
    ]);
    assert_eq!(
        admin
            .ok(&["auth", "can-i", "create", "pods", "--as", "alice"])
            .trim(),
        "yes"
    );
    let r = admin.run(&[
        "auth",
        "can-i",
        "create",
        "pods",
        "--as",
        "alice",
        "-n",
        "kube-system",
    ]);
    assert_eq!((r.stdout.trim(), r.status.code()), ("no", Some(1)));
    assert_eq!(alice.ok(&["auth", "can-i", "get", "secrets"]).trim(), "yes");
    assert_eq!(
        alice
            .run(&["auth", "can-i", "create", "roles"])
            .stdout
            .trim(),
        "no"
    );
    assert_eq!(
        alice.ok(&["auth", "can-i", "get", "/healthz"]).trim(),
        "yes"
    );
    // By group: bob is in dev.
    admin.ok(&[
        "create",
        "clusterrolebinding",
        "dev-view",
        "--clusterrole=view",
        "--group=dev",
    ]);
    assert_eq!(
        admin
            .ok(&[
                "auth",
                "can-i",
                "list",
                "pods",
                "-A",
                "--as",
                "someone",
                "--as-group",
                "dev"
            ])
            .trim(),
        "yes"
    );
    let list = alice.ok(&["auth", "can-i", "--list"]);
    assert!(list.lines().next().unwrap().contains("Resources"), "{list}");
    assert!(
        list.contains("selfsubjectaccessreviews.authorization.k8s.io"),
        "{list}"
    );
    assert!(
        list.lines()
            .any(|l| l.starts_with("pods ") && l.contains("create")),
        "{list}"
    );
    let list = admin.ok(&["auth", "can-i", "--list", "--as", "alice", "-n", "other"]);
    assert!(!list.lines().any(|l| l.starts_with("pods ")), "{list}");

    let who = alice.ok(&["auth", "whoami"]);
    assert!(
        who.contains("alice") && who.contains("system:authenticated"),
        "{who}"
    );
    assert!(who.contains("1001"), "{who}");
    let who = admin.ok(&["auth", "whoami", "--as", "bob", "--as-group", "dev"]);
    assert!(who.contains("bob") && who.contains("dev"), "{who}");

    // Impersonation needs the impersonate verb.
    let err = alice.fails(&["get", "pods", "--as", "bob"]);
    assert!(
        err.contains(r#"users "bob" is forbidden: User "alice" cannot impersonate resource "users" in API group "" at the cluster scope"#),
        "{err}"
    );
    admin.ok(&[
        "create",
        "clusterrole",
        "impersonator",
        "--verb=impersonate",
        "--resource=users",
        "--resource-name=bob",
    ]);
    admin.ok(&[
        "create",
        "clusterrolebinding",
        "alice-impersonates",
        "--clusterrole=impersonator",
        "--user=alice",
    ]);
    // As bob (group dev is not asked for, so only bob's own rights apply: none in default).
    let err = alice.fails(&["get", "pods", "--as", "bob"]);
    assert!(
        err.contains(r#"User "bob" cannot list resource "pods""#),
        "{err}"
    );
    let err = alice.fails(&["get", "pods", "--as", "bob", "--as-group", "dev"]);
    assert!(
        err.contains(
            r#"groups "dev" is forbidden: User "alice" cannot impersonate resource "groups""#
        ),
        "{err}"
    );
    alice.fails(&["get", "pods", "--as", "carl"]);

    // The gRPC door takes the same headers as metadata, with the same answers.
    let mut cfg = Config::from_kubeconfig(&api.kubeconfig).unwrap();
    cfg.identity = None;
    cfg.token = Some(ALICE.into());
    let c = Client::new(cfg.clone()).unwrap();
    let pods: Api<Pod> = Api::namespaced(c, "default");
    assert!(pods.list(&ListParams::default()).await.is_ok());
    let channel = tonic::transport::Channel::from_shared(api.url(""))
        .unwrap()
        .tls_config(
            tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(cfg.ca_pem.unwrap())),
        )
        .unwrap()
        .connect()
        .await
        .unwrap();
    let grpc_list_as = |headers: &'static [(&'static str, &'static str)]| {
        let channel = channel.clone();
        async move {
            let mut c =
                ResourcesClient::with_interceptor(channel, move |mut r: tonic::Request<()>| {
                    r.metadata_mut()
                        .insert("authorization", format!("Bearer {ALICE}").parse().unwrap());
                    for (k, v) in headers {
                        r.metadata_mut().append(*k, v.parse().unwrap());
                    }
                    Ok(r)
                });
            c.list(proto::ListRequest {
                resource: Some(proto::ResourceRef {
                    version: "v1".into(),
                    resource: "pods".into(),
                    namespace: "default".into(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .map(|_| ())
            .map_err(|s| (s.code(), s.message().to_string()))
        }
    };
    assert_eq!(grpc_list_as(&[]).await, Ok(()));
    let (code, msg) = grpc_list_as(&[("impersonate-user", "bob")])
        .await
        .unwrap_err();
    assert_eq!(code, tonic::Code::PermissionDenied);
    assert_eq!(
        msg,
        r#"pods is forbidden: User "bob" cannot list resource "pods" in API group "" in the namespace "default""#
    );
    let (code, msg) = grpc_list_as(&[("impersonate-user", "bob"), ("impersonate-group", "dev")])
        .await
        .unwrap_err();
    assert_eq!(code, tonic::Code::PermissionDenied);
    assert!(
        msg.contains(
            r#"groups "dev" is forbidden: User "alice" cannot impersonate resource "groups""#
        ),
        "{msg}"
    );
    let (code, msg) = grpc_list_as(&[("impersonate-user", "carl")])
        .await
        .unwrap_err();
    assert_eq!(code, tonic::Code::PermissionDenied);
    assert!(
        msg.contains(
            r#"users "carl" is forbidden: User "alice" cannot impersonate resource "users""#
        ),
        "{msg}"
    );

    // SubjectAccessReview needs its own right and answers for anyone.
    let sar = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
        "spec": {"user": "alice", "resourceAttributes": {"verb": "delete", "resource": "pods", "namespace": "default"}}});
    let out = admin.ok_input(&["create", "-f", "-", "-o", "json"], &sar.to_string());
    let out: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(out["status"]["allowed"], true, "{out}");
    let err = alice.run_with_input(&["create", "-f", "-", "-o", "json"], &sar.to_string());
    assert!(
        err.stderr
            .contains("cannot create resource \"subjectaccessreviews\""),
        "{}",
        err.stderr
    );
    // Malformed reviews are refused naming the field; other verbs are not served.
    let bad = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview", "spec": {}});
    let r = alice.run_with_input(&["create", "-f", "-"], &bad.to_string());
    assert!(
        r.stderr.contains("spec.resourceAttributes: Invalid value"),
        "{}",
        r.stderr
    );
    let r = api
        .client()
        .unwrap()
        .get(api.url("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    // Someone not allowed to list them is refused before that.
    let http = reqwest_with_token(&api, ALICE);
    let r = http
        .get(api.url("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}

#[tokio::test]
async fn escalation_needs_escalate_or_bind() {
    let dir = tempfile::tempdir().unwrap();
    let (_etcd, api) = server(dir.path(), &[]).await;
    let admin = api.kubectl();
    let alice = Kubectl::new(&token_kubeconfig(&api, dir.path(), "alice", ALICE));
    admin.ok(&[
        "create",
        "role",
        "rbac-manager",
        "--verb=create,update,get,list",
        "--resource=roles,rolebindings",
    ]);
    admin.ok(&[
        "create",
        "rolebinding",
        "alice-rbac",
        "--role=rbac-manager",
        "--user=alice",
    ]);
    admin.ok(&[
        "create",
        "rolebinding",
        "alice-view",
        "--clusterrole=view",
        "--user=alice",
    ]);

    // A role with rules alice holds: fine. With more: refused, naming what is missing.
    alice.ok(&[
        "create",
        "role",
        "pod-reader",
        "--verb=get,list",
        "--resource=pods",
    ]);
    let err = alice.fails(&[
        "create",
        "role",
        "secret-reader",
        "--verb=get",
        "--resource=secrets",
    ]);
    assert!(
        err.contains(r#"roles.rbac.authorization.k8s.io "secret-reader" is forbidden: user "alice" (groups=["system:authenticated"]) is attempting to grant RBAC permissions not currently held:"#),
        "{err}"
    );
    assert!(
        err.contains(r#"{APIGroups:[""], Resources:["secrets"], Verbs:["get"]}"#),
        "{err}"
    );
    // Binding a role alice does not hold all of: refused; one she holds: fine.
    let err = alice.fails(&[
        "create",
        "rolebinding",
        "bob-edit",
        "--clusterrole=edit",
        "--user=bob",
    ]);
    assert!(
        err.contains(
            r#"rolebindings.rbac.authorization.k8s.io "bob-edit" is forbidden: user "alice""#
        ),
        "{err}"
    );
    alice.ok(&[
        "create",
        "rolebinding",
        "bob-pods",
        "--role=pod-reader",
        "--user=bob",
    ]);

    // With escalate, and with bind, she may.
    admin.ok(&[
        "create",
        "role",
        "escalator",
        "--verb=escalate",
        "--resource=roles",
    ]);
    admin.ok(&[
        "create",
        "rolebinding",
        "alice-escalate",
        "--role=escalator",
        "--user=alice",
    ]);
    alice.ok(&[
        "create",
        "role",
        "secret-reader",
        "--verb=get",
        "--resource=secrets",
    ]);
    admin.ok(&[
        "create",
        "clusterrole",
        "edit-binder",
        "--verb=bind",
        "--resource=clusterroles",
        "--resource-name=edit",
    ]);
    admin.ok(&[
        "create",
        "rolebinding",
        "alice-bind",
        "--clusterrole=edit-binder",
        "--user=alice",
    ]);
    alice.ok(&[
        "create",
        "rolebinding",
        "bob-edit",
        "--clusterrole=edit",
        "--user=bob",
    ]);
    let bob = Kubectl::new(&token_kubeconfig(&api, dir.path(), "bob", BOB));
    assert!(bob
        .ok(&["auth", "can-i", "create", "deployments"])
        .contains("yes"));
}

#[tokio::test]
async fn malformed_rbac_objects_are_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let (_etcd, api) = server(dir.path(), &[]).await;
    let admin = api.kubectl();
    let cases = [
        (
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "r"},
                "rules": [{"apiGroups": [""], "resources": ["pods"]}]}),
            "rules[0].verbs: Required value",
        ),
        (
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "r"},
                "rules": [{"verbs": ["get"], "nonResourceURLs": ["/x"]}]}),
            "namespaced rules cannot apply to non-resource URLs",
        ),
        (
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "b"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "x"}}),
            "roleRef.kind: Unsupported value: \"Role\"",
        ),
        (
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "b"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
                "subjects": [{"kind": "ServiceAccount", "name": "sa"}]}),
            "subjects[0].namespace: Required value",
        ),
    ];
    for (obj, want) in cases {
        let r = admin.run_with_input(&["create", "-f", "-"], &obj.to_string());
        assert!(!r.status.success());
        assert!(r.stderr.contains(want), "{want}: {}", r.stderr);
        assert!(r.stderr.contains("is invalid"), "{}", r.stderr);
    }
    admin.ok(&[
        "create",
        "rolebinding",
        "b",
        "--clusterrole=view",
        "--user=x",
    ]);
    let r = admin.run(&[
        "patch",
        "rolebinding",
        "b",
        "--type=merge",
        "-p",
        r#"{"roleRef":{"name":"edit"}}"#,
    ]);
    assert!(r.stderr.contains("cannot change roleRef"), "{}", r.stderr);
}

#[tokio::test]
async fn anonymous_requests_reach_only_public_paths() {
    let dir = tempfile::tempdir().unwrap();
    let (etcd, api) = server(dir.path(), &[]).await;
    let anon = api.anonymous_client().unwrap();
    for path in ["/healthz", "/livez", "/readyz", "/version", "/healthz/etcd"] {
        let r = anon.get(api.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    let r = anon.get(api.url("/api")).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let s: Value = r.json().await.unwrap();
    assert_eq!(
        s["message"],
        r#"forbidden: User "system:anonymous" cannot get path "/api""#
    );
    let r = anon
        .get(api.url("/api/v1/namespaces/default/pods"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let s: Value = r.json().await.unwrap();
    assert_eq!(
        s["message"],
        r#"pods is forbidden: User "system:anonymous" cannot list resource "pods" in API group "" in the namespace "default""#
    );
    // A bad token is 401, never anonymous.
    let bad = reqwest_with_token(&api, "nope");
    assert_eq!(
        bad.get(api.url("/healthz")).send().await.unwrap().status(),
        401
    );

    // Without anonymous access, no credentials is 401 everywhere.
    let closed = ApiServer::start_with(&etcd, &["--anonymous-auth=false"])
        .await
        .unwrap();
    let anon = closed.anonymous_client().unwrap();
    for path in ["/healthz", "/version", "/api"] {
        assert_eq!(
            anon.get(closed.url(path)).send().await.unwrap().status(),
            401,
            "{path}"
        );
    }
}

#[tokio::test]
async fn bootstrap_policy_is_reconciled_and_aggregated() {
    let dir = tempfile::tempdir().unwrap();
    let (_etcd, mut api) = server(dir.path(), &[]).await;
    let admin = api.kubectl();
    // A user's change to a bootstrap role survives a restart only with autoupdate=false;
    // a removed rule is put back otherwise.
    admin.ok(&[
        "patch",
        "clusterrole",
        "system:basic-user",
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/rules/0"}]"#,
    ]);
    admin.ok(&["delete", "clusterrolebinding", "system:discovery"]);
    admin.ok(&[
        "annotate",
        "clusterrole",
        "system:node-proxier",
        "--overwrite",
        "rbac.authorization.kubernetes.io/autoupdate=false",
    ]);
    admin.ok(&[
        "patch",
        "clusterrole",
        "system:node-proxier",
        "--type=merge",
        "-p",
        r#"{"rules":[]}"#,
    ]);
    api.restart().await.unwrap();
    let admin = api.kubectl();
    let basic = admin.json(&["get", "clusterrole", "system:basic-user"]);
    assert!(
        basic["rules"]
            .to_string()
            .contains("selfsubjectaccessreviews"),
        "{basic}"
    );
    admin.ok(&["get", "clusterrolebinding", "system:discovery"]);
    let proxier = admin.json(&["get", "clusterrole", "system:node-proxier"]);
    assert!(
        proxier
            .get("rules")
            .is_none_or(|r| r.as_array().unwrap().is_empty()),
        "{proxier}"
    );
    let view = admin.json(&["get", "clusterrole", "view"]);
    assert_eq!(
        view["aggregationRule"]["clusterRoleSelectors"][0]["matchLabels"]
            ["rbac.authorization.k8s.io/aggregate-to-view"],
        "true"
    );
}

#[tokio::test]
async fn aggregated_roles_follow_labelled_roles() {
    let dir = tempfile::tempdir().unwrap();
    let (_etcd, api) = server(dir.path(), &[]).await;
    let admin = api.kubectl();
    admin.ok_input(
        &["apply", "-f", "-"],
        r#"{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "widgets-view", "labels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}},
            "rules": [{"apiGroups": ["example.com"], "resources": ["widgets"], "verbs": ["get", "list"]}]}"#,
    );
    // The controller manager under its own identity, with only its bootstrap role.
    let kubeconfig = cert_kubeconfig(&api, dir.path(), "system:kube-controller-manager", &[]);
    // Stopped when the test ends, even when it fails.
    struct Stopped(std::process::Child);
    impl Drop for Stopped {
        fn drop(&mut self) {
            skiff_e2e::stop_child(&mut self.0, std::time::Duration::from_secs(5));
        }
    }
    let cm = std::process::Command::new(skiff_e2e::binary("skiff-controller-manager").unwrap())
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .arg("--controllers=clusterrole-aggregation")
        .arg("--leader-elect=false")
        .arg("--port=0")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("cm.log")).unwrap())
        .spawn()
        .unwrap();
    let cm = Stopped(cm);
    let has_widgets = |role: &str| {
        admin
            .json(&["get", "clusterrole", role])
            .get("rules")
            .is_some_and(|r| r.to_string().contains("widgets"))
    };
    // view selects widgets-view; edit and admin select view.
    for role in ["view", "edit", "admin"] {
        let ok = skiff_e2e::eventually(std::time::Duration::from_secs(30), || {
            has_widgets(role).then_some(())
        })
        .await;
        assert!(
            ok.is_some(),
            "{role} did not aggregate widgets-view; controller manager log:\n{}",
            std::fs::read_to_string(dir.path().join("cm.log")).unwrap_or_default()
        );
    }
    // A user bound to view now reads widgets (RBAC knows no resource by name).
    let alice = Kubectl::new(&token_kubeconfig(&api, dir.path(), "alice", ALICE));
    admin.ok(&[
        "create",
        "rolebinding",
        "alice-view",
        "--clusterrole=view",
        "--user=alice",
    ]);
    let ssar = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": {"group": "example.com", "resource": "widgets", "verb": "list", "namespace": "default"}}});
    let out = alice.ok_input(&["create", "-f", "-", "-o", "json"], &ssar.to_string());
    let out: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(out["status"]["allowed"], true, "{out}");
    // A role that leaves the selection leaves the aggregate.
    admin.ok(&[
        "label",
        "clusterrole",
        "widgets-view",
        "rbac.authorization.k8s.io/aggregate-to-view-",
    ]);
    let gone = skiff_e2e::eventually(std::time::Duration::from_secs(30), || {
        (!has_widgets("view")).then_some(())
    })
    .await;
    assert!(gone.is_some());
    drop(cm);
}

#[tokio::test]
async fn debugging_a_pod_is_granted_apart_from_edit() {
    let dir = tempfile::tempdir().unwrap();
    let (_etcd, api) = server(dir.path(), &[]).await;
    let admin = api.kubectl();
    admin.ok(&["run", "web", "--image=busybox"]);
    let alice = Kubectl::new(&token_kubeconfig(&api, dir.path(), "alice", ALICE));
    let bob = Kubectl::new(&token_kubeconfig(&api, dir.path(), "bob", BOB));
    admin.ok(&[
        "create",
        "rolebinding",
        "alice-edit",
        "--clusterrole=edit",
        "--user=alice",
    ]);
    admin.ok(&[
        "create",
        "rolebinding",
        "bob-view",
        "--clusterrole=view",
        "--user=bob",
    ]);
    let can_debug = |user: &str| {
        admin
            .run(&[
                "auth",
                "can-i",
                "patch",
                "pods",
                "--subresource=ephemeralcontainers",
                "--as",
                user,
            ])
            .stdout
            .trim()
            .to_string()
    };
    let forbidden = |user: &str| {
        format!(
            r#"pods "web" is forbidden: User "{user}" cannot patch resource "pods/ephemeralcontainers" in API group "" in the namespace "default""#
        )
    };
    // As in Kubernetes, no aggregated role grants `pods/ephemeralcontainers`, not even
    // `admin`: a container added to a running pod never went through the admission a pod's
    // create did, so it is a power granted on purpose.
    admin.ok(&[
        "create",
        "rolebinding",
        "carol-admin",
        "--clusterrole=admin",
        "--user=carol",
    ]);
    for user in ["alice", "bob", "carol"] {
        assert_eq!(can_debug(user), "no", "{user}");
    }
    for (k, user) in [(&alice, "alice"), (&bob, "bob")] {
        let err = k.fails(&["debug", "web", "--image=busybox", "-c", "dbg"]);
        assert!(err.contains(&forbidden(user)), "{err}");
    }
    // The documented way to grant it to every editor: a role labelled to join `edit`.
    admin.ok_input(
        &["apply", "-f", "-"],
        r#"{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "debug-pods", "labels": {"rbac.authorization.k8s.io/aggregate-to-edit": "true"}},
            "rules": [{"apiGroups": [""], "resources": ["pods/ephemeralcontainers"], "verbs": ["patch", "update"]}]}"#,
    );
    let cm = skiff_e2e::Daemon::start(
        "skiff-controller-manager",
        &api,
        &[
            "--port=0",
            "--controllers=clusterrole-aggregation",
            "--leader-elect=false",
        ],
    )
    .unwrap();
    // edit takes the new role in, and admin, which aggregates edit, after it.
    let granted = skiff_e2e::eventually(std::time::Duration::from_secs(30), || {
        (can_debug("alice") == "yes" && can_debug("carol") == "yes").then_some(())
    })
    .await;
    assert!(granted.is_some(), "{}", cm.log());
    alice.ok(&["debug", "web", "--image=busybox", "-c", "dbg"]);
    let pod = admin.json(&["get", "pod", "web", "-o", "json"]);
    assert_eq!(
        pod["spec"]["ephemeralContainers"][0]["name"], "dbg",
        "{pod}"
    );
    // view is not edit: bob still may not.
    let err = bob.fails(&["debug", "web", "--image=busybox", "-c", "dbg2"]);
    assert!(err.contains(&forbidden("bob")), "{err}");
}
