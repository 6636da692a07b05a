//! Admission webhooks end to end: a real etcd, a real skiff-apiserver, the real kubectl, and an
//! HTTPS webhook server inside the test (its certificates made per test), reached by URL or
//! through a Service without selector whose hand-made EndpointSlice points at it. Denials,
//! mutations (with the type's defaults), reinvocation, failure policies, timeouts, selectors
//! and match conditions, dry run, warnings, metrics, and a write through the gRPC door.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use reqwest::Method;
use serde_json::{json, Value};
use skiff_e2e::pki::TestCa;
use skiff_e2e::{send, Cluster};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the test server answers for one review: the `response` fields (uid and the envelope
/// are added), after an optional delay.
type Handler = Arc<dyn Fn(&str, &Value) -> (Duration, Value) + Send + Sync>;

/// An HTTPS webhook server on loopback, counting the reviews it gets by path.
struct HookServer {
    addr: SocketAddr,
    ca_pem: String,
    reviews: Arc<parking_lot::Mutex<Vec<(String, Value)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HookServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HookServer {
    async fn start(handler: Handler) -> HookServer {
        let ca = TestCa::new("webhook-test-ca");
        let ca_pem = ca.pem.clone();
        let tls = ca.server_config(&["hook.hooks.svc", "127.0.0.1"]);
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let reviews: Arc<parking_lot::Mutex<Vec<(String, Value)>>> = Arc::default();
        let seen = reviews.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, handler, seen) = (acceptor.clone(), handler.clone(), seen.clone());
                tokio::spawn(async move {
                    let Ok(mut s) = acceptor.accept(tcp).await else {
                        return;
                    };
                    // One request per connection: headers, then Content-Length bytes of body.
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 8192];
                    let head_end = loop {
                        let Ok(n) = s.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                    let len: usize = head
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse().ok())?
                        })
                        .unwrap_or(0);
                    while buf.len() < head_end + len {
                        let Ok(n) = s.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                    }
                    let target = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                    let path = target.split('?').next().unwrap_or("/").to_string();
                    let review: Value =
                        serde_json::from_slice(&buf[head_end..head_end + len]).unwrap_or_default();
                    seen.lock().push((target.clone(), review.clone()));
                    let (delay, mut response) = handler(&path, &review["request"]);
                    tokio::time::sleep(delay).await;
                    response["uid"] = review["request"]["uid"].clone();
                    let body = serde_json::to_vec(&json!({
                        "apiVersion": review["apiVersion"],
                        "kind": "AdmissionReview",
                        "response": response,
                    }))
                    .unwrap();
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = s.write_all(head.as_bytes()).await;
                    let _ = s.write_all(&body).await;
                    let _ = s.shutdown().await;
                });
            }
        });
        HookServer {
            addr,
            ca_pem,
            reviews,
            task,
        }
    }

    fn ca_bundle(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(&self.ca_pem)
    }

    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.addr.port())
    }

    /// The requests reviewed at `path`.
    fn reviewed(&self, path: &str) -> Vec<Value> {
        self.reviews
            .lock()
            .iter()
            .filter(|(t, _)| t.split('?').next() == Some(path))
            .map(|(_, r)| r["request"].clone())
            .collect()
    }
}

/// Runs kubectl with input expecting failure; returns stderr.
fn fails_input(k: &skiff_e2e::Kubectl, args: &[&str], input: &str) -> String {
    let r = k.run_with_input(args, input);
    assert!(
        !r.status.success(),
        "kubectl {args:?} should have failed: {r:?}"
    );
    r.stderr
}

fn allow() -> Value {
    json!({"allowed": true})
}

fn patch(ops: Value) -> Value {
    json!({
        "allowed": true,
        "patchType": "JSONPatch",
        "patch": base64::engine::general_purpose::STANDARD.encode(ops.to_string()),
    })
}

/// The test's handlers: `/deny` refuses objects without a `team` label, `/warn` allows with a
/// warning and an audit annotation, `/sidecar` injects a container and a label, `/late` adds
/// a label, `/slow` answers after 5 s, every other path allows.
fn handlers() -> Handler {
    Arc::new(|path: &str, req: &Value| {
        let labels = req["object"]["metadata"]["labels"].clone();
        match path {
            "/deny" if labels.get("team").is_none() => (
                Duration::ZERO,
                json!({"allowed": false, "status": {"code": 403, "reason": "Forbidden",
                       "message": "objects need a team label"}}),
            ),
            "/warn" => (
                Duration::ZERO,
                json!({"allowed": true, "warnings": ["this namespace is watched"],
                       "auditAnnotations": {"checked": "yes"}}),
            ),
            "/sidecar" => {
                let mut ops = vec![json!({"op": "add", "path": "/spec/containers/-",
                    "value": {"name": "proxy", "image": "proxy:1"}})];
                ops.push(if labels.is_object() {
                    json!({"op": "add", "path": "/metadata/labels/injected", "value": "yes"})
                } else {
                    json!({"op": "add", "path": "/metadata/labels", "value": {"injected": "yes"}})
                });
                (Duration::ZERO, patch(json!(ops)))
            }
            "/late" => (
                Duration::ZERO,
                patch(json!([{"op": "add", "path": "/metadata/labels/late", "value": "yes"}])),
            ),
            "/slow" => (Duration::from_secs(5), allow()),
            _ => (Duration::ZERO, allow()),
        }
    })
}

/// A webhook entry with a URL client config.
fn url_hook(name: &str, server: &HookServer, path: &str, extra: Value) -> Value {
    let mut w = json!({
        "name": name,
        "clientConfig": {"url": server.url(path), "caBundle": server.ca_bundle()},
        "rules": [{"operations": ["CREATE", "UPDATE"], "apiGroups": [""], "apiVersions": ["v1"],
                   "resources": ["configmaps"]}],
        "sideEffects": "None",
        "admissionReviewVersions": ["v1"],
    });
    if let (Some(w), Some(e)) = (w.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            w.insert(k.clone(), v.clone());
        }
    }
    w
}

async fn configure(c: &Cluster, kind: &str, name: &str, hooks: Vec<Value>) {
    let plural = match kind {
        "Mutating" => "mutatingwebhookconfigurations",
        _ => "validatingwebhookconfigurations",
    };
    let (code, body) = send(
        &c.api.client().unwrap(),
        Method::POST,
        c.api
            .url(&format!("/apis/admissionregistration.k8s.io/v1/{plural}")),
        Some(json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": format!("{kind}WebhookConfiguration"),
            "metadata": {"name": name},
            "webhooks": hooks,
        })),
    )
    .await;
    assert_eq!(code, 201, "{body:#}");
    // The configuration reaches the watch cache the plugins read.
    tokio::time::sleep(Duration::from_millis(300)).await;
}

fn configmap_yaml(name: &str, labels: &[(&str, &str)]) -> String {
    let labels: BTreeMap<&str, &str> = labels.iter().copied().collect();
    json!({"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": name, "namespace": "default", "labels": labels},
           "data": {"k": "v"}})
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_validating_webhook_denies_with_its_message_and_warns() {
    let c = Cluster::start().await.unwrap();
    let server = HookServer::start(handlers()).await;
    configure(
        &c,
        "Validating",
        "deny",
        vec![
            url_hook("deny.example.com", &server, "/deny", json!({})),
            url_hook("warn.example.com", &server, "/warn", json!({})),
        ],
    )
    .await;
    let k = c.kubectl();

    let run = k.run_with_input(&["create", "-f", "-"], &configmap_yaml("nolabel", &[]));
    assert!(!run.status.success(), "{run:?}");
    assert!(
        run.stderr.contains(
            "admission webhook \"deny.example.com\" denied the request: objects need a team label"
        ),
        "{run:?}"
    );
    let run = k.run_with_input(
        &["create", "-f", "-"],
        &configmap_yaml("labelled", &[("team", "a")]),
    );
    assert!(run.status.success(), "{run:?}");
    assert!(
        run.stderr.contains("Warning: this namespace is watched"),
        "{run:?}"
    );

    // The request as Kubernetes sends it.
    let reviews = server.reviewed("/deny");
    let r = reviews.last().unwrap();
    assert_eq!(r["operation"], "CREATE");
    assert_eq!(
        r["kind"],
        json!({"group": "", "version": "v1", "kind": "ConfigMap"})
    );
    assert_eq!(
        r["resource"],
        json!({"group": "", "version": "v1", "resource": "configmaps"})
    );
    assert_eq!(r["requestKind"], r["kind"]);
    assert_eq!(r["namespace"], "default");
    assert_eq!(r["name"], "labelled");
    assert_eq!(r["userInfo"]["username"], "skiff-admin", "{r:#}");
    assert_eq!(
        r["userInfo"]["groups"],
        json!(["system:masters", "system:authenticated"])
    );
    assert_eq!(r["dryRun"], false);
    assert_eq!(r["options"]["kind"], "CreateOptions");
    assert_eq!(r["object"]["metadata"]["labels"]["team"], "a");
    assert!(r["oldObject"].is_null());
    let uid = r["uid"].as_str().unwrap();
    assert_eq!(uid.len(), 36, "{uid}");
    // The URL carries the timeout, as kube-apiserver adds it.
    assert!(server
        .reviews
        .lock()
        .iter()
        .all(|(t, _)| t.ends_with("?timeout=10s")));

    // An update shows the old object; webhook configurations themselves are never reviewed.
    let before = server.reviews.lock().len();
    k.ok(&["label", "configmap", "labelled", "extra=1"]);
    let r = server.reviewed("/deny").last().cloned().unwrap();
    assert_eq!(r["operation"], "UPDATE");
    assert_eq!(r["oldObject"]["metadata"]["labels"].get("extra"), None);
    assert_eq!(r["object"]["metadata"]["labels"]["extra"], "1");
    assert_eq!(r["options"]["kind"], "PatchOptions");
    assert_eq!(server.reviews.lock().len(), before + 2);
    k.ok(&[
        "label",
        "validatingwebhookconfiguration",
        "deny",
        "touched=yes",
    ]);
    assert_eq!(server.reviews.lock().len(), before + 2);

    // The metrics, named and labelled as kube-apiserver's.
    let text = c.api.metrics().await.unwrap();
    assert!(
        text.lines().any(
            |l| l.starts_with("apiserver_admission_webhook_rejection_count{")
                && l.contains("name=\"deny.example.com\"")
                && l.contains("error_type=\"no_error\"")
                && l.contains("rejection_code=\"403\"")
                && l.contains("type=\"validating\"")
        ),
        "{text}"
    );
    assert!(
        text.lines().any(
            |l| l.starts_with("apiserver_admission_webhook_request_total{")
                && l.contains("name=\"warn.example.com\"")
                && l.contains("code=\"200\"")
                && l.contains("rejected=\"false\"")
        ),
        "{text}"
    );
    assert!(text.contains("apiserver_admission_webhook_admission_duration_seconds_bucket{"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grpc_door_is_reviewed_too() {
    use skiff_client::{Api, Client, PostParams};
    let c = Cluster::start().await.unwrap();
    let server = HookServer::start(handlers()).await;
    configure(
        &c,
        "Validating",
        "deny",
        vec![url_hook("deny.example.com", &server, "/deny", json!({}))],
    )
    .await;
    let client = Client::from_kubeconfig(&c.api.kubeconfig).unwrap();
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(client, "default");
    let e = cms
        .create(&PostParams::default(), &skiff_e2e::configmap("grpc", "1"))
        .await
        .unwrap_err();
    let a = e.api().unwrap();
    assert_eq!(a.code, 403, "{e}");
    assert_eq!(
        a.message,
        "admission webhook \"deny.example.com\" denied the request: objects need a team label"
    );
    assert_eq!(server.reviewed("/deny").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mutating_webhook_behind_a_service_injects_a_sidecar_and_is_reinvoked() {
    let c = Cluster::start().await.unwrap();
    // `/sidecar-once` injects only into a pod that has no `injected` label yet.
    let server = HookServer::start(Arc::new(|path: &str, req: &Value| {
        let injected = req["object"]["metadata"]["labels"]
            .get("injected")
            .is_some();
        match path {
            "/sidecar-once" if !injected => handlers()("/sidecar", req),
            p => handlers()(p, req),
        }
    }))
    .await;
    let k = c.kubectl();
    k.ok(&["create", "namespace", "hooks"]);
    // A Service without selector, and the EndpointSlice that says where it is.
    k.ok_input(
        &["create", "-f", "-"],
        &json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "hook", "namespace": "hooks"},
                "spec": {"ports": [{"port": 443, "targetPort": server.addr.port()}]}})
        .to_string(),
    );
    k.ok_input(
        &["create", "-f", "-"],
        &json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": "hook-1", "namespace": "hooks",
                             "labels": {"kubernetes.io/service-name": "hook"}},
                "addressType": "IPv4",
                "ports": [{"port": server.addr.port(), "protocol": "TCP"}],
                "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": true}}]})
        .to_string(),
    );
    let via_service = |name: &str, path: &str, reinvoke: &str| {
        json!({
            "name": name,
            "clientConfig": {"service": {"namespace": "hooks", "name": "hook", "path": path},
                             "caBundle": server.ca_bundle()},
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                       "resources": ["pods"]}],
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "reinvocationPolicy": reinvoke,
        })
    };
    // Configurations run by name: the sidecar first (asking to be called again), then `late`.
    configure(
        &c,
        "Mutating",
        "a-sidecar",
        vec![via_service(
            "sidecar.example.com",
            "/sidecar-once",
            "IfNeeded",
        )],
    )
    .await;
    configure(
        &c,
        "Mutating",
        "b-late",
        vec![via_service("late.example.com", "/late", "Never")],
    )
    .await;

    k.ok_input(
        &["create", "-f", "-"],
        &json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
                "spec": {"containers": [{"name": "app", "image": "busybox"}]}})
        .to_string(),
    );
    let pod = k.json(&["get", "pod", "web"]);
    let containers = pod["spec"]["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 2, "{pod:#}");
    let proxy = &containers[1];
    assert_eq!(proxy["name"], "proxy");
    // The injected container got the defaults a container gets.
    assert_eq!(
        proxy["terminationMessagePath"], "/dev/termination-log",
        "{proxy:#}"
    );
    assert_eq!(proxy["imagePullPolicy"], "IfNotPresent", "{proxy:#}");
    assert_eq!(pod["metadata"]["labels"]["injected"], "yes");
    assert_eq!(pod["metadata"]["labels"]["late"], "yes");

    // The sidecar webhook saw the pod twice: the second time with `late`'s change.
    let seen = server.reviewed("/sidecar-once");
    assert_eq!(seen.len(), 2, "{seen:#?}");
    assert_eq!(seen[1]["object"]["metadata"]["labels"]["late"], "yes");
    assert_eq!(server.reviewed("/late").len(), 1);
    // Calls went to the Service's name, as the certificate says.
    let (target, _) = server.reviews.lock()[0].clone();
    assert!(target.starts_with("/sidecar-once?timeout=10s"), "{target}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_policies_and_timeouts() {
    let c = Cluster::start().await.unwrap();
    let server = HookServer::start(handlers()).await;
    let down = skiff_e2e::free_port();
    let down_url = format!("https://127.0.0.1:{down}/x");
    let dead = |name: &str, policy: &str, selector: &str| {
        json!({
            "name": name,
            "clientConfig": {"url": down_url, "caBundle": server.ca_bundle()},
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                       "resources": ["configmaps"]}],
            "objectSelector": {"matchLabels": {"case": selector}},
            "failurePolicy": policy,
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
        })
    };
    configure(
        &c,
        "Validating",
        "failures",
        vec![
            dead("ignored.example.com", "Ignore", "ignore"),
            dead("required.example.com", "Fail", "fail"),
            url_hook(
                "slow.example.com",
                &server,
                "/slow",
                json!({"timeoutSeconds": 2, "objectSelector": {"matchLabels": {"case": "slow"}}}),
            ),
        ],
    )
    .await;
    let k = c.kubectl();
    k.ok_input(
        &["create", "-f", "-"],
        &configmap_yaml("ignored", &[("case", "ignore")]),
    );
    let err = fails_input(
        &k,
        &["create", "-f", "-"],
        &configmap_yaml("refused", &[("case", "fail")]),
    );
    assert!(
        err.contains(&format!(
            "Internal error occurred: failed calling webhook \"required.example.com\": failed to call webhook: Post \"{down_url}?timeout=10s\": "
        )),
        "{err}"
    );

    // A webhook that answers too late fails within its timeout; requests it does not match
    // meanwhile go through at once.
    let slow_cm = configmap_yaml("slow", &[("case", "slow")]);
    let kk = c.kubectl();
    let started = Instant::now();
    let slow =
        tokio::task::spawn_blocking(move || kk.run_with_input(&["create", "-f", "-"], &slow_cm));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let quick = Instant::now();
    k.ok_input(&["create", "-f", "-"], &configmap_yaml("quick", &[]));
    assert!(
        quick.elapsed() < Duration::from_millis(1500),
        "{:?}",
        quick.elapsed()
    );
    let slow = slow.await.unwrap();
    let took = started.elapsed();
    assert!(!slow.status.success(), "{slow:?}");
    assert!(
        slow.stderr
            .contains("failed calling webhook \"slow.example.com\"")
            && slow.stderr.contains("context deadline exceeded"),
        "{slow:?}"
    );
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(4),
        "{took:?}"
    );

    let text = c.api.metrics().await.unwrap();
    assert!(
        text.lines().any(
            |l| l.starts_with("apiserver_admission_webhook_fail_open_count{")
                && l.contains("name=\"ignored.example.com\"")
                && l.ends_with(" 1")
        ),
        "{text}"
    );
    assert!(
        text.lines().any(
            |l| l.starts_with("apiserver_admission_webhook_rejection_count{")
                && l.contains("name=\"required.example.com\"")
                && l.contains("error_type=\"calling_webhook_error\"")
        ),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selectors_and_match_conditions_narrow_calls_and_dry_run_needs_no_side_effects() {
    let c = Cluster::start().await.unwrap();
    let server = HookServer::start(handlers()).await;
    let k = c.kubectl();
    k.ok(&["create", "namespace", "watched"]);
    k.ok(&["label", "namespace", "watched", "webhooks=on"]);
    k.ok(&["create", "namespace", "quiet"]);
    configure(
        &c,
        "Validating",
        "narrow",
        vec![
            url_hook(
                "ns.example.com",
                &server,
                "/ns",
                json!({"namespaceSelector": {"matchLabels": {"webhooks": "on"}}}),
            ),
            url_hook(
                "obj.example.com",
                &server,
                "/obj",
                json!({"objectSelector": {"matchExpressions": [{"key": "skip", "operator": "DoesNotExist"}]}}),
            ),
            url_hook(
                "cond.example.com",
                &server,
                "/cond",
                json!({"matchConditions": [{"name": "named-x", "expression": "object.metadata.name.startsWith('x')"}]}),
            ),
        ],
    )
    .await;
    // `sideEffects: Unknown` is refused by v1's validation; a configuration stored before
    // (under v1beta1) may still have it: written to storage directly here.
    let legacy = json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": "legacy", "uid": "5d6f2f1e-0000-4000-8000-000000000001",
                     "creationTimestamp": "2024-01-01T00:00:00Z"},
        "webhooks": [url_hook("effects.example.com", &server, "/effects",
            json!({"sideEffects": "Unknown", "objectSelector": {"matchLabels": {"effects": "yes"}},
                   "matchPolicy": "Equivalent", "failurePolicy": "Fail", "timeoutSeconds": 10,
                   "namespaceSelector": {}}))],
    });
    etcd_client::Client::connect([c.etcd.endpoint.clone()], None)
        .await
        .unwrap()
        .put(
            "/registry/validatingwebhookconfigurations/legacy",
            legacy.to_string(),
            None,
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let create = |ns: &str, name: &str, labels: Value| {
        k.ok_input(
            &["create", "-f", "-"],
            &json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": name, "namespace": ns, "labels": labels}})
            .to_string(),
        )
    };
    create("watched", "a", json!({}));
    create("quiet", "b", json!({}));
    create("quiet", "xb", json!({"skip": "1"}));
    assert_eq!(server.reviewed("/ns").len(), 1);
    assert_eq!(server.reviewed("/ns")[0]["name"], "a");
    assert_eq!(server.reviewed("/obj").len(), 2);
    assert_eq!(server.reviewed("/cond").len(), 1);
    assert_eq!(server.reviewed("/cond")[0]["name"], "xb");

    // Dry run: refused for a webhook with side effects, as kube-apiserver words it; nothing
    // is sent to it. Webhooks without side effects see `dryRun: true`.
    let dry = json!({"apiVersion": "v1", "kind": "ConfigMap",
                     "metadata": {"name": "dry", "namespace": "quiet", "labels": {"effects": "yes"}}})
    .to_string();
    let err = fails_input(&k, &["create", "--dry-run=server", "-f", "-"], &dry);
    assert!(
        err.contains("admission webhook \"effects.example.com\" does not support dry run"),
        "{err}"
    );
    assert!(server.reviewed("/effects").is_empty());
    let last = server.reviewed("/obj").last().cloned().unwrap();
    assert_eq!(last["dryRun"], true);
    assert_eq!(last["options"]["dryRun"], json!(["All"]));
    // Without dry run, it is called.
    k.ok_input(&["create", "-f", "-"], &dry);
    assert_eq!(server.reviewed("/effects").len(), 1);
}
