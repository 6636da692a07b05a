//! CustomResourceDefinitions whose versions are converted by a webhook, end to end: a real
//! etcd and skiff-apiserver, the real kubectl, and a conversion webhook served over HTTPS on
//! loopback by the test itself (reached by `url`, and through a Service without a selector
//! whose EndpointSlice points at it). The webhook renames `spec.size` (v1, the storage
//! version) to `spec.replicas` (v2) and back, counts what it is sent, and can be told to
//! answer wrongly or to go away.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use reqwest::Method;
use serde_json::{json, Value};
use skiff_e2e::pki::TestCa;
use skiff_e2e::{collect_events, send, watch_events, Cluster, Kubectl};
use tokio_util::sync::CancellationToken;

/// How the test webhook answers.
const CONVERT: u8 = 0;
/// One object fewer than it was sent.
const WRONG_COUNT: u8 = 1;
/// Another request's uid.
const WRONG_UID: u8 = 2;

/// The test's conversion webhook.
struct Converter {
    addr: SocketAddr,
    /// The CA bundle that verifies it (the PEM of the CA that signed its certificate).
    ca: String,
    mode: Arc<AtomicU8>,
    /// Reviews and objects received.
    reviews: Arc<AtomicUsize>,
    objects: Arc<AtomicUsize>,
    stop: CancellationToken,
}

impl Converter {
    /// Serves on a free loopback port, with a certificate for 127.0.0.1 and for the Service
    /// `converter.default.svc`.
    async fn start() -> Converter {
        let test_ca = TestCa::new("conversion-test-ca");
        let ca = test_ca.pem.clone();
        let tls = test_ca.server_config(&["converter.default.svc", "127.0.0.1"]);
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let c = Converter {
            addr,
            ca,
            mode: Arc::default(),
            reviews: Arc::default(),
            objects: Arc::default(),
            stop: CancellationToken::new(),
        };
        let (mode, reviews, objects, stop) = (
            c.mode.clone(),
            c.reviews.clone(),
            c.objects.clone(),
            c.stop.clone(),
        );
        tokio::spawn(async move {
            loop {
                let (tcp, _) = tokio::select! {
                    _ = stop.cancelled() => return,
                    a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
                };
                let (acceptor, mode, reviews, objects, stop) = (
                    acceptor.clone(),
                    mode.clone(),
                    reviews.clone(),
                    objects.clone(),
                    stop.clone(),
                );
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |req| {
                        answer(req, mode.clone(), reviews.clone(), objects.clone())
                    });
                    let builder = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    );
                    let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(tls), service);
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        _ = conn => {}
                    }
                });
            }
        });
        c
    }

    /// `caBundle` as the definition carries it.
    fn ca_bundle(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(&self.ca)
    }

    /// Reviews and objects received so far.
    fn counts(&self) -> (usize, usize) {
        (
            self.reviews.load(Ordering::SeqCst),
            self.objects.load(Ordering::SeqCst),
        )
    }
}

impl Drop for Converter {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Answers a ConversionReview.
async fn answer(
    req: hyper::Request<Incoming>,
    mode: Arc<AtomicU8>,
    reviews: Arc<AtomicUsize>,
    objects: Arc<AtomicUsize>,
) -> Result<hyper::Response<Full<Bytes>>, std::convert::Infallible> {
    let body = req.into_body().collect().await.map(|b| b.to_bytes());
    let review: Value = body
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    let request = &review["request"];
    let desired = request["desiredAPIVersion"].as_str().unwrap_or("");
    let mut converted: Vec<Value> = request["objects"].as_array().cloned().unwrap_or_default();
    reviews.fetch_add(1, Ordering::SeqCst);
    objects.fetch_add(converted.len(), Ordering::SeqCst);
    for o in &mut converted {
        let (from, to) = if desired.ends_with("/v2") {
            ("size", "replicas")
        } else {
            ("replicas", "size")
        };
        if let Some(spec) = o.get_mut("spec").and_then(Value::as_object_mut) {
            if let Some(v) = spec.remove(from) {
                spec.insert(to.into(), v);
            }
        }
        o["apiVersion"] = json!(desired);
    }
    let mut uid = request["uid"].clone();
    match mode.load(Ordering::SeqCst) {
        WRONG_COUNT => {
            converted.pop();
        }
        WRONG_UID => uid = json!("not-the-request"),
        _ => {}
    }
    let out = json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "ConversionReview",
        "response": {"uid": uid, "result": {"status": "Success"}, "convertedObjects": converted},
    });
    Ok(hyper::Response::builder()
        .header("Content-Type", "application/json")
        .body(Full::new(Bytes::from(out.to_string())))
        .unwrap())
}

/// The Widget definition: v1 (stored) has `spec.size`, v2 has `spec.replicas`; converted by
/// the webhook `client_config` names.
fn widgets(client_config: Value) -> Value {
    let version = |name: &str, field: &str, storage: bool| {
        json!({
            "name": name, "served": true, "storage": storage,
            "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                "spec": {"type": "object", "properties": {field: {"type": "integer"}}},
            }}},
            "additionalPrinterColumns": [{"name": "Count", "type": "integer", "jsonPath": format!(".spec.{field}")}],
        })
    };
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Namespaced",
            "names": {"plural": "widgets", "kind": "Widget"},
            "conversion": {"strategy": "Webhook", "webhook": {
                "conversionReviewVersions": ["v1"],
                "clientConfig": client_config,
            }},
            "versions": [version("v1", "size", true), version("v2", "replicas", false)],
        },
    })
}

fn define(k: &Kubectl, crd: &Value) {
    k.ok_input(&["create", "-f", "-"], &crd.to_string());
    k.ok(&[
        "wait",
        "--for=condition=Established",
        "crd/widgets.example.com",
        "--timeout=30s",
    ]);
}

fn widget_v1(name: &str, size: i64) -> String {
    json!({"apiVersion": "example.com/v1", "kind": "Widget",
           "metadata": {"name": name, "namespace": "default"}, "spec": {"size": size}})
    .to_string()
}

/// What etcd holds for a Widget in `default`.
async fn stored(c: &Cluster, name: &str) -> Value {
    let mut etcd = etcd_client::Client::connect([c.etcd.endpoint.as_str()], None)
        .await
        .unwrap();
    let resp = etcd
        .get(
            format!("/registry/example.com/widgets/default/{name}"),
            None,
        )
        .await
        .unwrap();
    let kv = resp.kvs().first().expect("the widget is stored");
    serde_json::from_slice(kv.value()).unwrap()
}

fn path(version: &str, name: &str) -> String {
    format!("/apis/example.com/{version}/namespaces/default/widgets/{name}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_by_url_converts_reads_and_writes_between_versions() {
    let c = Cluster::start().await.unwrap();
    let k = c.kubectl();
    let hook = Converter::start().await;
    define(
        &k,
        &widgets(json!({
            "url": format!("https://127.0.0.1:{}/convert", hook.addr.port()),
            "caBundle": hook.ca_bundle(),
        })),
    );
    let client = c.api.client().unwrap();

    // Created in v1, the storage version: nothing to convert.
    k.ok_input(&["create", "-f", "-"], &widget_v1("a", 3));
    assert_eq!(hook.counts(), (0, 0));
    let v1 = k.json(&["get", "widgets.v1.example.com", "a", "-o", "json"]);
    assert_eq!(v1["spec"], json!({"size": 3}));
    assert_eq!(hook.counts(), (0, 0), "v1 is read as stored");

    // Read as v2: converted by the webhook.
    let v2 = k.json(&["get", "widgets.v2.example.com", "a", "-o", "json"]);
    assert_eq!(v2["apiVersion"], "example.com/v2");
    assert_eq!(v2["spec"], json!({"replicas": 3}));
    assert_eq!(v2["metadata"]["uid"], v1["metadata"]["uid"]);
    assert_eq!(hook.counts().0, 1);
    let table = k.ok(&["get", "widgets.v2.example.com"]);
    assert!(
        table.contains("NAME") && table.contains("COUNT") && table.contains('3'),
        "{table}"
    );

    // A list page goes in one review.
    k.ok_input(&["create", "-f", "-"], &widget_v1("b", 4));
    k.ok_input(&["create", "-f", "-"], &widget_v1("c", 5));
    let before = hook.counts();
    let (code, list) = send(
        &client,
        Method::GET,
        c.api.url("/apis/example.com/v2/namespaces/default/widgets"),
        None,
    )
    .await;
    assert_eq!(code, 200, "{list}");
    let replicas: Vec<Value> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["spec"]["replicas"].clone())
        .collect();
    assert_eq!(replicas, [json!(3), json!(4), json!(5)]);
    assert_eq!(list["apiVersion"], "example.com/v2");
    let after = hook.counts();
    assert_eq!(
        (after.0 - before.0, after.1 - before.1),
        (1, 3),
        "one review of three objects"
    );

    // A watch of v2: the current state, then changes, all in v2.
    let resp = client
        .get(
            c.api
                .url("/apis/example.com/v2/namespaces/default/widgets?watch=1&timeoutSeconds=30"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut events = watch_events(resp);
    let initial = collect_events(&mut events, 3, Duration::from_secs(10)).await;
    assert_eq!(initial.len(), 3, "{initial:?}");
    assert!(initial
        .iter()
        .all(|e| e["type"] == "ADDED" && e["object"]["apiVersion"] == "example.com/v2"));

    // Updated through v2: stored as v1, seen by the watch as v2.
    let patched = client
        .patch(c.api.url(&path("v2", "a")))
        .header("Content-Type", "application/merge-patch+json")
        .body(json!({"spec": {"replicas": 7}}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 200);
    let patched: Value = patched.json().await.unwrap();
    assert_eq!(patched["apiVersion"], "example.com/v2");
    assert_eq!(patched["spec"], json!({"replicas": 7}));
    let modified = collect_events(&mut events, 1, Duration::from_secs(10)).await;
    assert_eq!(modified.len(), 1);
    assert_eq!(modified[0]["type"], "MODIFIED");
    assert_eq!(modified[0]["object"]["spec"], json!({"replicas": 7}));
    let etcd = stored(&c, "a").await;
    assert_eq!(etcd["apiVersion"], "example.com/v1");
    assert_eq!(etcd["spec"], json!({"size": 7}));
    let v1 = k.json(&["get", "widgets.v1.example.com", "a", "-o", "json"]);
    assert_eq!(v1["spec"], json!({"size": 7}));

    // Created through v2: stored as v1.
    k.ok_input(
        &["create", "-f", "-"],
        &json!({"apiVersion": "example.com/v2", "kind": "Widget",
                "metadata": {"name": "d", "namespace": "default"}, "spec": {"replicas": 9}})
        .to_string(),
    );
    assert_eq!(stored(&c, "d").await["spec"], json!({"size": 9}));

    // Wrong answers are refused with kube-apiserver's words.
    hook.mode.store(WRONG_COUNT, Ordering::SeqCst);
    let (code, status) = send(&client, Method::GET, c.api.url(&path("v2", "b")), None).await;
    assert_eq!(code, 500, "{status}");
    assert_eq!(
        status["message"],
        "conversion webhook for example.com/v1, Kind=Widget returned 0 objects, expected 1"
    );
    hook.mode.store(WRONG_UID, Ordering::SeqCst);
    let err = k.fails(&["get", "widgets.v2.example.com", "b"]);
    assert!(
        err.contains(
            "Error from server: conversion webhook for example.com/v1, Kind=Widget failed: expected response.uid="
        ),
        "{err}"
    );
    hook.mode.store(CONVERT, Ordering::SeqCst);

    // The webhook gone: every read of v2 fails (the objects are stored as v1), v1 reads on,
    // and writes through v2 store nothing.
    drop(events);
    let port = hook.addr.port();
    drop(hook);
    let (code, status) = send(&client, Method::GET, c.api.url(&path("v2", "b")), None).await;
    assert_eq!(code, 500, "{status}");
    let message = status["message"].as_str().unwrap();
    assert!(
        message.starts_with("conversion webhook for example.com/v1, Kind=Widget failed: ")
            && message.contains(&port.to_string()),
        "{message}"
    );
    assert!(status.get("reason").is_none(), "{status}");
    let (code, _) = send(
        &client,
        Method::GET,
        c.api.url("/apis/example.com/v2/namespaces/default/widgets"),
        None,
    )
    .await;
    assert_eq!(code, 500);
    let (code, _) = send(
        &client,
        Method::GET,
        c.api
            .url("/apis/example.com/v2/namespaces/default/widgets?watch=1"),
        None,
    )
    .await;
    assert_eq!(code, 500, "a watch fails before it starts");
    let v1 = k.json(&["get", "widgets.v1.example.com", "-o", "json"]);
    assert_eq!(v1["items"].as_array().unwrap().len(), 4);
    let (code, status) = send(
        &client,
        Method::POST,
        c.api.url("/apis/example.com/v2/namespaces/default/widgets"),
        Some(json!({"apiVersion": "example.com/v2", "kind": "Widget",
                    "metadata": {"name": "e"}, "spec": {"replicas": 1}})),
    )
    .await;
    assert_eq!(code, 500, "{status}");
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .starts_with("conversion webhook for example.com/v2, Kind=Widget failed: "),
        "{status}"
    );
    k.fails(&["get", "widgets.v1.example.com", "e"]);
    // Kubernetes reports such failures to the request only: the definition stays Established.
    let crd = k.json(&["get", "crd", "widgets.example.com", "-o", "json"]);
    let established = crd["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["type"] == "Established" && c["status"] == "True");
    assert!(established, "{crd:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_behind_a_service_is_reached_through_its_endpoint_slice() {
    let c = Cluster::start().await.unwrap();
    let k = c.kubectl();
    let hook = Converter::start().await;
    // A Service without a selector, and its EndpointSlice made by hand.
    k.ok_input(
        &["create", "-f", "-"],
        &json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "converter", "namespace": "default"},
                "spec": {"ports": [{"name": "https", "port": 443, "targetPort": hook.addr.port()}]}})
        .to_string(),
    );
    k.ok_input(
        &["create", "-f", "-"],
        &json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": "converter-1", "namespace": "default",
                             "labels": {"kubernetes.io/service-name": "converter"}},
                "addressType": "IPv4",
                "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": true}}],
                "ports": [{"name": "https", "port": hook.addr.port(), "protocol": "TCP"}]})
        .to_string(),
    );
    define(
        &k,
        &widgets(json!({
            "service": {"namespace": "default", "name": "converter", "path": "/convert"},
            "caBundle": hook.ca_bundle(),
        })),
    );
    let crd = k.json(&["get", "crd", "widgets.example.com", "-o", "json"]);
    assert_eq!(
        crd["spec"]["conversion"]["webhook"]["clientConfig"]["service"]["port"], 443,
        "the port defaults to 443"
    );
    k.ok_input(&["create", "-f", "-"], &widget_v1("a", 2));
    let v2 = k.json(&["get", "widgets.v2.example.com", "a", "-o", "json"]);
    assert_eq!(v2["spec"], json!({"replicas": 2}));
    assert_eq!(hook.counts(), (1, 1));

    // A bad caBundle once established is refused, in kube's words.
    let err = k.fails(&[
        "patch",
        "crd",
        "widgets.example.com",
        "--type=merge",
        "-p",
        r#"{"spec":{"conversion":{"webhook":{"clientConfig":{"caBundle":"anVuaw=="}}}}}"#,
    ]);
    assert!(
        err.contains("spec.conversion.webhookClientConfig.caBundle: Invalid value: []byte{0x6a, 0x75, 0x6e, 0x6b}: unable to load root certificates: unable to parse bytes as PEM block"),
        "{err}"
    );
}
