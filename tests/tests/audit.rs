//! The audit log end to end: a real etcd and `skiff-apiserver` with `--audit-policy-file` and
//! `--audit-log-*`, requests made with the real kubectl under two token users (and the admin
//! impersonating one), a watch, a refused token and gRPC calls through the SDK; then the log
//! read line by line. Also: the log on standard output in batch mode, written out on SIGTERM;
//! rotation by size; and a bad policy refusing to start.

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use serde_json::{json, Value};
use skiff_client::{Api, Client, Config, ListParams, PostParams};
use skiff_e2e::{ApiServer, Etcd, Kubectl};

const ALICE: &str = "alice-token-0123456789";
const BOB: &str = "bob-token-0123456789";
/// A Secret's value that must never reach the log, in any encoding.
const PASSWORD: &str = "hunter2-never-logged";

const POLICY: &str = r#"
apiVersion: audit.k8s.io/v1
kind: Policy
rules:
  # Health checks and discovery documents are not worth a line.
  - level: None
    nonResourceURLs: ["/healthz*", "/readyz*", "/livez*", "/openapi*"]
  - level: None
    resources:
      - group: ""
        resources: ["configmaps"]
  # Asking for a Secret's bodies is ignored: Secrets are never logged beyond Metadata.
  - level: RequestResponse
    resources:
      - group: ""
        resources: ["secrets"]
        resourceNames: ["loud"]
  - level: Metadata
    resources:
      - group: ""
        resources: ["secrets"]
  - level: RequestResponse
    resources:
      - group: ""
        resources: ["pods", "pods/*"]
  - level: Metadata
"#;

fn write_tokens(dir: &Path) -> PathBuf {
    let tokens = dir.join("tokens.csv");
    std::fs::write(
        &tokens,
        format!("{ALICE},alice,1001\n{BOB},bob,1002,\"dev\"\n"),
    )
    .unwrap();
    tokens
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

/// Every event in the log so far (every line must be one).
fn events(log: &Path) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            assert_eq!(v["kind"], "Event", "{l}");
            assert_eq!(v["apiVersion"], "audit.k8s.io/v1", "{l}");
            v
        })
        .collect()
}

/// The events of requests matching `f`, grouped by audit id, in the order they started.
fn requests(events: &[Value], f: impl Fn(&Value) -> bool) -> Vec<Vec<Value>> {
    let mut out: Vec<Vec<Value>> = Vec::new();
    for e in events.iter().filter(|e| f(e)) {
        match out.iter_mut().find(|r| r[0]["auditID"] == e["auditID"]) {
            Some(r) => r.push(e.clone()),
            None => out.push(vec![e.clone()]),
        }
    }
    out
}

fn stages(r: &[Value]) -> Vec<&str> {
    r.iter().map(|e| e["stage"].as_str().unwrap()).collect()
}

fn is(e: &Value, user: &str, verb: &str, resource: &str) -> bool {
    e["user"]["username"] == user && e["verb"] == verb && e["objectRef"]["resource"] == resource
}

/// Waits until `kubectl` (as some user) may `verb resource`: RBAC sees new bindings through
/// its watch cache.
fn wait_allowed(k: &Kubectl, verb: &str, resource: &str) {
    for _ in 0..100 {
        if k.run(&["auth", "can-i", verb, resource]).stdout.trim() == "yes" {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("still not allowed to {verb} {resource}");
}

#[tokio::test]
async fn the_log_records_who_did_what_through_both_doors() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, POLICY).unwrap();
    let log = dir.path().join("logs/audit.log");
    let etcd = Etcd::start().unwrap();
    let api = ApiServer::start_with(
        &etcd,
        &[
            &format!("--token-auth-file={}", write_tokens(dir.path()).display()),
            &format!("--audit-policy-file={}", policy.display()),
            &format!("--audit-log-path={}", log.display()),
        ],
    )
    .await
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&log).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let admin = api.kubectl();
    let alice_kc = token_kubeconfig(&api, dir.path(), "alice", ALICE);
    let alice = Kubectl::new(&alice_kc);
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
        "dev-view",
        "--clusterrole=view",
        "--group=dev",
    ]);
    wait_allowed(&alice, "create", "secrets");
    wait_allowed(&bob, "list", "pods");

    // alice: a pod, two Secrets, a ConfigMap (not logged at all).
    alice.ok(&["run", "web", "--image=registry.local/busybox:1"]);
    alice.ok(&[
        "create",
        "secret",
        "generic",
        "s1",
        &format!("--from-literal=password={PASSWORD}"),
    ]);
    alice.ok(&[
        "create",
        "secret",
        "generic",
        "loud",
        &format!("--from-literal=password={PASSWORD}"),
    ]);
    assert!(alice
        .ok(&["get", "secret", "s1", "-o", "yaml"])
        .contains("password:"));
    alice.ok(&["get", "secret", "loud", "-o", "json"]);
    alice.ok(&["create", "configmap", "c1", "--from-literal=k=v"]);
    // bob: reads pods, is refused a Secret and a delete.
    assert!(bob.ok(&["get", "pods"]).contains("web"));
    let err = bob.fails(&["get", "secret", "s1"]);
    assert!(err.contains("forbidden"), "{err}");
    bob.fails(&["delete", "pod", "web"]);
    // The admin acting as bob.
    assert!(admin
        .ok(&["get", "pods", "--as=bob", "--as-group=dev"])
        .contains("web"));
    // A watch that ends after a second.
    let http = api.anonymous_client().unwrap();
    let r = http
        .get(api.url("/api/v1/namespaces/default/pods?watch=1&timeoutSeconds=1&resourceVersion=0"))
        .bearer_auth(ALICE)
        .header("user-agent", "audit-test/1.0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let watch_id = r.headers()["audit-id"].to_str().unwrap().to_string();
    let _ = r.bytes().await.unwrap();
    // A refused token, and a client that names its own audit id.
    let r = http
        .get(api.url("/api/v1/namespaces/default/pods"))
        .bearer_auth("not-a-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .get(api.url("/api/v1/namespaces/default/pods/web"))
        .bearer_auth(ALICE)
        .header("audit-id", "my-own-id")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["audit-id"], "my-own-id");
    // The other door: alice lists and creates pods through the SDK.
    let pods: Api<Pod> = Api::namespaced(
        Client::new(Config::from_kubeconfig(&alice_kc).unwrap()).unwrap(),
        "default",
    );
    assert_eq!(
        pods.list(&ListParams::default()).await.unwrap().items.len(),
        1
    );
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "grpc-pod", "namespace": "default"},
        "spec": {"containers": [{"name": "c", "image": "registry.local/busybox:1"}]},
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();

    let all = events(&log);
    let text = std::fs::read_to_string(&log).unwrap();

    // Secrets: Metadata whatever the policy asks, and the value nowhere, in any encoding.
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(PASSWORD);
    assert!(!text.contains(PASSWORD) && !text.contains(&b64));
    let secrets = requests(&all, |e| e["objectRef"]["resource"] == "secrets");
    assert!(secrets.len() >= 5, "{secrets:#?}");
    for r in &secrets {
        for e in r {
            assert_eq!(e["level"], "Metadata", "{e}");
            assert!(e.get("requestObject").is_none() && e.get("responseObject").is_none());
        }
    }
    let created = requests(&all, |e| is(e, "alice", "create", "secrets"));
    assert_eq!(created.len(), 2);
    for (r, name) in created.iter().zip(["s1", "loud"]) {
        assert_eq!(stages(r), ["RequestReceived", "ResponseComplete"]);
        // The name is known at the end (from the body), not at the start.
        assert!(r[0]["objectRef"].get("name").is_none(), "{}", r[0]);
        assert_eq!(r[1]["objectRef"]["name"], name);
        assert_eq!(r[1]["responseStatus"]["code"], 201);
        assert_eq!(
            r[1]["annotations"]["authorization.k8s.io/decision"],
            "allow"
        );
        assert_eq!(
            r[1]["annotations"]["authorization.k8s.io/reason"],
            r#"RBAC: allowed by RoleBinding "alice-edit/default" of ClusterRole "edit" to User "alice""#
        );
    }

    // Pods at RequestResponse: alice's create with both bodies.
    let created = requests(&all, |e| {
        is(e, "alice", "create", "pods") && e["requestURI"].as_str().unwrap().starts_with("/api")
    });
    assert_eq!(created.len(), 1, "{created:#?}");
    let r = &created[0];
    assert_eq!(stages(r), ["RequestReceived", "ResponseComplete"]);
    let done = &r[1];
    assert_eq!(done["level"], "RequestResponse");
    assert!(done["requestURI"]
        .as_str()
        .unwrap()
        .starts_with("/api/v1/namespaces/default/pods"));
    assert_eq!(
        done["objectRef"],
        json!({"resource": "pods", "namespace": "default", "name": "web", "apiVersion": "v1"})
    );
    assert_eq!(done["user"]["username"], "alice");
    assert_eq!(done["user"]["uid"], "1001");
    assert_eq!(done["user"]["groups"], json!(["system:authenticated"]));
    assert_eq!(done["sourceIPs"], json!(["127.0.0.1"]));
    assert!(done["userAgent"].as_str().unwrap().starts_with("kubectl/"));
    assert_eq!(done["responseStatus"], json!({"metadata": {}, "code": 201}));
    assert_eq!(done["requestObject"]["metadata"]["name"], "web");
    assert_eq!(done["responseObject"]["metadata"]["name"], "web");
    assert!(done["responseObject"]["metadata"]["uid"].is_string());
    assert!(r[0].get("requestObject").is_none());
    let received = r[0]["requestReceivedTimestamp"].as_str().unwrap();
    assert_eq!(received, done["requestReceivedTimestamp"]);
    assert_eq!(received, r[0]["stageTimestamp"]);
    // Microseconds, UTC.
    assert_eq!(
        received.len(),
        "2025-01-01T00:00:00.000000Z".len(),
        "{received}"
    );
    assert!(done["stageTimestamp"].as_str().unwrap() >= received);

    // bob's list: allowed through his group's binding, the Table kubectl asked for recorded.
    let listed = requests(&all, |e| is(e, "bob", "list", "pods"));
    assert_eq!(listed.len(), 1);
    let done = &listed[0][1];
    assert_eq!(done["responseStatus"]["code"], 200);
    assert_eq!(
        done["annotations"]["authorization.k8s.io/reason"],
        r#"RBAC: allowed by RoleBinding "dev-view/default" of ClusterRole "view" to Group "dev""#
    );
    assert_eq!(done["responseObject"]["kind"], "Table");
    // bob's refusals: forbid, with kube-apiserver's status.
    let refused = requests(&all, |e| is(e, "bob", "get", "secrets"));
    assert_eq!(refused.len(), 1);
    let done = &refused[0][1];
    assert_eq!(
        done["annotations"]["authorization.k8s.io/decision"],
        "forbid"
    );
    assert_eq!(done["annotations"]["authorization.k8s.io/reason"], "");
    assert_eq!(done["responseStatus"]["code"], 403);
    assert_eq!(done["responseStatus"]["status"], "Failure");
    assert_eq!(done["responseStatus"]["reason"], "Forbidden");
    assert_eq!(
        done["responseStatus"]["message"],
        r#"secrets "s1" is forbidden: User "bob" cannot get resource "secrets" in API group "" in the namespace "default""#
    );
    let refused = requests(&all, |e| is(e, "bob", "delete", "pods"));
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0][1]["responseStatus"]["code"], 403);
    // The Status of a refusal is the response body at RequestResponse.
    assert_eq!(refused[0][1]["responseObject"]["reason"], "Forbidden");

    // ConfigMaps and health checks: nothing.
    assert!(!all
        .iter()
        .any(|e| e["objectRef"]["resource"] == "configmaps"));
    assert!(!all
        .iter()
        .any(|e| e["requestURI"].as_str().unwrap().starts_with("/readyz")));
    // Discovery falls to the last rule.
    let path = |e: &Value| {
        let uri = e["requestURI"].as_str().unwrap();
        uri.split('?').next().unwrap().to_string()
    };
    assert!(
        all.iter()
            .any(|e| path(e) == "/api" && e["level"] == "Metadata" && e.get("objectRef").is_none()),
        "{}",
        all.iter().map(path).collect::<Vec<_>>().join("\n")
    );

    // Impersonation: the admin's own name, and bob's.
    let imp = requests(&all, |e| is(e, "skiff-admin", "list", "pods"));
    assert_eq!(imp.len(), 1, "{imp:#?}");
    let done = &imp[0][1];
    assert_eq!(done["impersonatedUser"]["username"], "bob");
    assert_eq!(
        done["impersonatedUser"]["groups"],
        json!(["dev", "system:authenticated"])
    );
    assert!(imp[0][0].get("impersonatedUser").is_none());
    assert!(done["user"]["groups"]
        .as_array()
        .unwrap()
        .contains(&json!("system:masters")));

    // The watch: started, then complete, under the id the response named.
    let watch = requests(&all, |e| e["auditID"] == watch_id.as_str());
    assert_eq!(watch.len(), 1);
    let w = &watch[0];
    assert_eq!(
        stages(w),
        ["RequestReceived", "ResponseStarted", "ResponseComplete"]
    );
    assert_eq!(w[0]["verb"], "watch");
    assert_eq!(w[0]["userAgent"], "audit-test/1.0");
    assert_eq!(w[1]["responseStatus"]["code"], 200);
    assert_eq!(w[2]["responseStatus"]["code"], 200);
    assert!(w.iter().all(|e| e.get("responseObject").is_none()));

    // The refused token: one event, no user.
    let unauthenticated: Vec<&Value> = all
        .iter()
        .filter(|e| e["responseStatus"]["code"] == 401)
        .collect();
    assert_eq!(unauthenticated.len(), 1, "{unauthenticated:#?}");
    let e = unauthenticated[0];
    assert_eq!(e["stage"], "ResponseStarted");
    assert_eq!(e["user"], json!({}));
    assert_eq!(
        e["responseStatus"]["message"],
        "Authentication failed, attempted: bearer"
    );
    assert_eq!(e["verb"], "list");
    // The client's own id.
    let own = requests(&all, |e| e["auditID"] == "my-own-id");
    assert_eq!(own.len(), 1);
    assert_eq!(own[0][0]["objectRef"]["name"], "web");

    // gRPC: the method's path, the caller, the connection's address; bodies at
    // RequestResponse.
    let grpc_list = requests(&all, |e| {
        e["requestURI"] == "/skiff.v1.Resources/List" && e["user"]["username"] == "alice"
    });
    assert_eq!(grpc_list.len(), 1, "{grpc_list:#?}");
    let done = &grpc_list[0][1];
    assert_eq!(
        stages(&grpc_list[0]),
        ["RequestReceived", "ResponseComplete"]
    );
    assert_eq!(done["verb"], "list");
    assert_eq!(
        done["objectRef"],
        json!({"resource": "pods", "namespace": "default", "apiVersion": "v1"})
    );
    assert_eq!(done["sourceIPs"], json!(["127.0.0.1"]));
    assert_eq!(done["responseStatus"]["code"], 200);
    assert_eq!(done["responseObject"]["kind"], "PodList");
    assert_eq!(
        done["responseObject"]["items"][0]["metadata"]["name"],
        "web"
    );
    assert_eq!(
        done["annotations"]["authorization.k8s.io/reason"],
        r#"RBAC: allowed by RoleBinding "alice-edit/default" of ClusterRole "edit" to User "alice""#
    );
    let grpc_create = requests(&all, |e| e["requestURI"] == "/skiff.v1.Resources/Create");
    assert_eq!(grpc_create.len(), 1);
    let done = &grpc_create[0][1];
    assert_eq!(done["objectRef"]["name"], "grpc-pod");
    assert_eq!(done["requestObject"]["metadata"]["name"], "grpc-pod");
    assert_eq!(done["responseObject"]["metadata"]["name"], "grpc-pod");
    assert!(!done["userAgent"].as_str().unwrap_or("").is_empty());

    // Every request's stages share one id and come in order.
    for r in requests(&all, |_| true) {
        let s = stages(&r);
        assert!(
            matches!(
                s.as_slice(),
                ["RequestReceived", "ResponseComplete"]
                    | ["RequestReceived", "ResponseStarted", "ResponseComplete"]
                    | ["ResponseStarted"]
            ),
            "{r:#?}"
        );
    }

    // The metrics count what was written.
    let metrics = api
        .client()
        .unwrap()
        .get(api.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let counted: usize = metrics
        .lines()
        .find_map(|l| l.strip_prefix("apiserver_audit_event_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(counted >= all.len(), "{counted} < {}", all.len());
    assert!(metrics.contains("apiserver_audit_level_total{level=\"None\"}"));
}

#[tokio::test]
async fn the_log_goes_to_stdout_and_batches_are_written_out_on_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Metadata\n  verbs: [create]\n",
    )
    .unwrap();
    let etcd = Etcd::start().unwrap();
    let mut api = ApiServer::start_with(
        &etcd,
        &[
            &format!("--audit-policy-file={}", policy.display()),
            "--audit-log-path=-",
            "--audit-log-mode=batch",
            "--audit-log-batch-max-size=100",
            "--audit-log-batch-max-wait=30s",
        ],
    )
    .await
    .unwrap();
    let admin = api.kubectl();
    for i in 0..5 {
        admin.ok(&["create", "namespace", &format!("ns-{i}")]);
    }
    // Held back for up to 30 s to fill a batch, then written out at SIGTERM.
    assert!(api.terminate().unwrap().success());
    let created: Vec<Value> = api
        .log()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["kind"] == "Event" && e["stage"] == "ResponseComplete")
        .collect();
    let names: Vec<&str> = created
        .iter()
        .map(|e| e["objectRef"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["ns-0", "ns-1", "ns-2", "ns-3", "ns-4"],
        "{}",
        api.log()
    );
    assert!(created.iter().all(|e| e["verb"] == "create"));
}

#[tokio::test]
async fn the_log_rotates_by_size_and_keeps_its_backups() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: RequestResponse\n  resources: [{group: '', resources: [configmaps]}]\n",
    )
    .unwrap();
    let log = dir.path().join("audit.log");
    let etcd = Etcd::start().unwrap();
    let api = ApiServer::start_with(
        &etcd,
        &[
            &format!("--audit-policy-file={}", policy.display()),
            &format!("--audit-log-path={}", log.display()),
            "--audit-log-maxsize=1",
            "--audit-log-maxbackup=2",
        ],
    )
    .await
    .unwrap();
    let admin = api.client().unwrap();
    // Each create's last event holds the 300 kB body twice: one event to a file at most.
    for i in 0..5 {
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": format!("big-{i}")},
                        "data": {"k": "x".repeat(300_000)}});
        let r = admin
            .post(api.url("/api/v1/namespaces/default/configmaps"))
            .json(&cm)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    let mut backups: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("audit-"))
        .collect();
    backups.sort();
    assert_eq!(backups.len(), 2, "{backups:?}");
    for b in &backups {
        // audit-2006-01-02T15-04-05.000.log
        let stamp = b
            .strip_prefix("audit-")
            .and_then(|s| s.strip_suffix(".log"))
            .unwrap();
        assert!(
            chrono::NaiveDateTime::parse_from_str(stamp, "%Y-%m-%dT%H-%M-%S%.3f").is_ok(),
            "{b}"
        );
        let path = dir.path().join(b);
        assert!(std::fs::metadata(&path).unwrap().len() <= 1024 * 1024);
        // Whole events only, never one cut across files.
        assert!(!events(&path).is_empty());
    }
    let current = events(&log);
    assert!(!current.is_empty());
    let last = current.last().unwrap();
    assert_eq!(last["objectRef"]["name"], "big-4");
    assert_eq!(last["stage"], "ResponseComplete");
}

#[tokio::test]
async fn a_bad_policy_or_log_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Everything\n",
    )
    .unwrap();
    let etcd = Etcd::start().unwrap();
    let err = ApiServer::start_with(
        &etcd,
        &[
            &format!("--audit-policy-file={}", policy.display()),
            "--audit-log-path=-",
        ],
    )
    .await
    .err()
    .expect("a bad policy refuses to start");
    let err = format!("{err:#}");
    assert!(
        err.contains(&format!(
            "loading audit policy file: rules[0].level: Unsupported value: \"Everything\": supported values: \"None\", \"Metadata\", \"Request\", \"RequestResponse\": from file {}",
            policy.display()
        )),
        "{err}"
    );

    std::fs::write(&policy, "apiVersion: audit.k8s.io/v1\nkind: Policy\n").unwrap();
    let err = ApiServer::start_with(
        &etcd,
        &[
            &format!("--audit-policy-file={}", policy.display()),
            "--audit-log-path=-",
        ],
    )
    .await
    .err()
    .expect("a policy without rules refuses to start");
    assert!(
        format!("{err:#}").contains("loaded illegal policy with 0 rules"),
        "{err:#}"
    );

    std::fs::write(
        &policy,
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: None\n",
    )
    .unwrap();
    let blocked = dir.path().join("file");
    std::fs::write(&blocked, "").unwrap();
    let err = ApiServer::start_with(
        &etcd,
        &[
            &format!("--audit-policy-file={}", policy.display()),
            &format!("--audit-log-path={}/audit.log", blocked.display()),
        ],
    )
    .await
    .err()
    .expect("an unwritable log refuses to start");
    assert!(
        format!("{err:#}").contains("opening the audit log"),
        "{err:#}"
    );

    let err = ApiServer::start_with(&etcd, &["--audit-log-mode=async"])
        .await
        .err()
        .expect("an unknown mode refuses to start");
    assert!(
        format!("{err:#}").contains("allowed modes are \"batch,blocking,blocking-strict\""),
        "{err:#}"
    );
}
