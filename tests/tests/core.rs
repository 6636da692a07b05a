//! The API server's core against a real etcd and a real skiff-apiserver: the admission chain
//! (its plugins, its flags, its refusals), every subresource through both doors, malformed
//! requests that must neither panic the server nor store anything, and orphaning that keeps
//! what others changed meanwhile.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use skiff_client::proto::resources_client::ResourcesClient;
use skiff_client::proto::{self as pb};
use skiff_client::Config;
use skiff_e2e::{send, ApiServer, Cluster, Etcd};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A request with a body of any bytes and content type.
async fn send_raw(
    c: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    content_type: &str,
    body: Vec<u8>,
) -> (u16, Value) {
    let resp = c
        .request(method, url)
        .header("Content-Type", content_type)
        .body(body)
        .send()
        .await
        .expect("request sent");
    let code = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (
        code,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn pod(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
           "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}})
}

async fn grpc(c: &Cluster) -> ResourcesClient<tonic::transport::Channel> {
    let cfg = Config::from_kubeconfig(&c.api.kubeconfig).unwrap();
    let (cert, key) = cfg.identity.unwrap();
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(cfg.ca_pem.unwrap()))
        .identity(tonic::transport::Identity::from_pem(cert, key));
    ResourcesClient::new(
        tonic::transport::Channel::from_shared(c.api.url(""))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
            .unwrap(),
    )
}

fn resource(group: &str, resource: &str, namespace: &str) -> Option<pb::ResourceRef> {
    Some(pb::ResourceRef {
        group: group.into(),
        version: "v1".into(),
        resource: resource.into(),
        namespace: namespace.into(),
    })
}

fn object(api_version: &str, kind: &str, v: &Value) -> Option<pb::Object> {
    Some(pb::Object {
        api_version: api_version.into(),
        kind: kind.into(),
        json: serde_json::to_vec(v).unwrap().into(),
    })
}

fn decoded(o: Option<pb::Object>) -> Value {
    serde_json::from_slice(&o.expect("an object").json).unwrap()
}

/// The Kubernetes `Status` a gRPC error carries.
fn grpc_status(e: &tonic::Status) -> Value {
    let s = pb::Status::from_details(e.details()).expect("the Status in the details");
    serde_json::from_slice(&s.json).unwrap()
}

#[tokio::test]
async fn admission_plugins_default_refuse_and_switch_off() {
    let c = Cluster::start().await.unwrap();
    let k = c.kubectl();

    // The system PriorityClasses exist as objects, and pods take their priority from them.
    let classes = k.ok(&["get", "priorityclasses", "-o", "name"]);
    assert!(
        classes.contains("system-node-critical") && classes.contains("system-cluster-critical"),
        "{classes}"
    );
    k.ok(&["create", "priorityclass", "high", "--value=1000"]);
    let mut p = pod("classy");
    p["spec"]["priorityClassName"] = json!("high");
    k.ok_input(&["create", "-f", "-"], &p.to_string());
    let got = k.json(&["get", "pod", "classy"]);
    assert_eq!(got["spec"]["priority"], 1000);
    assert_eq!(got["spec"]["preemptionPolicy"], "PreemptLowerPriority");
    let plain = {
        k.ok_input(&["create", "-f", "-"], &pod("plain").to_string());
        k.json(&["get", "pod", "plain"])
    };
    assert_eq!(plain["spec"]["priority"], 0);

    // Refusals, as kube-apiserver words them; dry runs are admitted the same way.
    let mut p = pod("nope");
    p["spec"]["priorityClassName"] = json!("missing");
    for extra in [&[][..], &["--dry-run=server"][..]] {
        let mut args = vec!["create", "-f", "-"];
        args.extend(extra);
        let r = k.run_with_input(&args, &p.to_string());
        assert!(!r.status.success());
        assert!(
            r.stderr.contains(
                "pods \"nope\" is forbidden: no PriorityClass with name missing was found"
            ),
            "{}",
            r.stderr
        );
    }
    let mut p = pod("lying");
    p["spec"]["priorityClassName"] = json!("high");
    p["spec"]["priority"] = json!(7);
    let err = k
        .run_with_input(&["create", "-f", "-"], &p.to_string())
        .stderr;
    assert!(
        err.contains("the integer value of priority (7) must not be provided in pod spec"),
        "{err}"
    );
    k.ok(&[
        "create",
        "priorityclass",
        "normal",
        "--value=10",
        "--global-default",
    ]);
    let err = k.fails(&[
        "create",
        "priorityclass",
        "other",
        "--value=5",
        "--global-default",
    ]);
    assert!(
        err.contains(
            "PriorityClass normal is already marked as default. Only one default can exist"
        ),
        "{err}"
    );
    k.ok_input(&["create", "-f", "-"], &pod("defaulted").to_string());
    let got = k.json(&["get", "pod", "defaulted"]);
    assert_eq!(
        (&got["spec"]["priority"], &got["spec"]["priorityClassName"]),
        (&json!(10), &json!("normal"))
    );

    // NamespaceLifecycle: the system namespaces stay; nothing is created where no namespace is.
    for ns in ["default", "kube-system", "kube-public"] {
        let err = k.fails(&["delete", "namespace", ns]);
        assert!(
            err.contains(&format!(
                "namespaces \"{ns}\" is forbidden: this namespace may not be deleted"
            )),
            "{err}"
        );
    }
    let err = k.fails(&["create", "configmap", "x", "-n", "nowhere"]);
    assert!(err.contains("namespaces \"nowhere\" not found"), "{err}");

    // A terminating namespace (held by an object's finalizer) takes nothing new, through
    // either door; the gRPC door says FAILED_PRECONDITION with the same Status.
    k.ok(&["create", "namespace", "going"]);
    k.ok_input(
        &["create", "-f", "-"],
        &json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "held", "namespace": "going", "finalizers": ["example.com/hold"]}})
        .to_string(),
    );
    k.ok(&["delete", "namespace", "going", "--wait=false"]);
    let err = k.fails(&["create", "configmap", "late", "-n", "going"]);
    assert!(
        err.contains("configmaps \"late\" is forbidden: unable to create new content in namespace going because it is being terminated"),
        "{err}"
    );
    let mut raw = grpc(&c).await;
    let e = raw
        .create(pb::CreateRequest {
            resource: resource("", "configmaps", "going"),
            object: object("v1", "ConfigMap", &json!({"metadata": {"name": "late"}})),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    assert_eq!(
        grpc_status(&e)["details"]["causes"][0]["reason"],
        "NamespaceTerminating"
    );
    // What is there may still change, and go.
    k.ok(&[
        "patch",
        "configmap",
        "held",
        "-n",
        "going",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);

    // Switched off by flag: the same pod is created, and gets no priority.
    let off = ApiServer::start_with(
        &c.etcd,
        &["--disable-admission-plugins=Priority,PodSecurity"],
    )
    .await
    .unwrap();
    let mut p = pod("unchecked");
    p["spec"]["priorityClassName"] = json!("missing");
    off.kubectl()
        .ok_input(&["create", "-f", "-"], &p.to_string());
    let got = off.kubectl().json(&["get", "pod", "unchecked"]);
    assert!(got["spec"].get("priority").is_none(), "{got}");
}

#[tokio::test]
async fn admission_flags_that_cannot_run_are_refused_at_start() {
    let etcd = Etcd::start().unwrap();
    for (flag, says) in [
        (
            "--enable-admission-plugins=Bogus",
            "enable-admission-plugins plugin \"Bogus\" is unknown",
        ),
        (
            "--disable-admission-plugins=Bogus",
            "disable-admission-plugins plugin \"Bogus\" is unknown",
        ),
        (
            "--enable-admission-plugins=PodSecurity",
            "enable-admission-plugins plugin \"PodSecurity\" is not implemented",
        ),
    ] {
        let err = match ApiServer::start_with(&etcd, &[flag]).await {
            Ok(_) => panic!("{flag} was accepted"),
            Err(e) => format!("{e:#}"),
        };
        assert!(err.contains(says), "{flag}: {err}");
    }
}

#[tokio::test]
async fn every_subresource_through_both_doors() {
    let c = Cluster::start().await.unwrap();
    let cl = c.api.client().unwrap();
    let k = c.kubectl();
    let mut raw = grpc(&c).await;
    let deploy = |name: &str| {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
               "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                        "template": {"metadata": {"labels": {"app": name}},
                                     "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}})
    };
    let deploys = c.api.url("/apis/apps/v1/namespaces/default/deployments");
    for name in ["rest", "grpc"] {
        let (code, body) = send(
            &cl,
            reqwest::Method::POST,
            deploys.clone(),
            Some(deploy(name)),
        )
        .await;
        assert_eq!(code, 201, "{body}");
    }
    let replicas = |name: &str| k.json(&["get", "deployment", name])["spec"]["replicas"].clone();

    // scale: GET, PUT, PATCH — REST.
    let scale_url = format!("{deploys}/rest/scale");
    let (code, scale) = send(&cl, reqwest::Method::GET, scale_url.clone(), None).await;
    assert_eq!(
        (code, &scale["kind"], &scale["spec"]["replicas"]),
        (200, &json!("Scale"), &json!(1))
    );
    assert_eq!(scale["status"]["selector"], "app=rest");
    let mut put = scale.clone();
    put["spec"]["replicas"] = json!(3);
    let (code, body) = send(
        &cl,
        reqwest::Method::PUT,
        scale_url.clone(),
        Some(put.clone()),
    )
    .await;
    assert_eq!(
        (code, &body["spec"]["replicas"]),
        (200, &json!(3)),
        "{body}"
    );
    assert_eq!(replicas("rest"), 3);
    // The Scale's resourceVersion is a precondition.
    let (code, body) = send(&cl, reqwest::Method::PUT, scale_url.clone(), Some(put)).await;
    assert_eq!(code, 409, "{body}");
    let patched = cl
        .patch(&scale_url)
        .header("Content-Type", "application/merge-patch+json")
        .body(r#"{"spec":{"replicas":4}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 200);
    assert_eq!(replicas("rest"), 4);
    let mut bad = scale.clone();
    bad["spec"]["replicas"] = json!(-1);
    bad["metadata"]["resourceVersion"] = json!(null);
    let (code, body) = send(&cl, reqwest::Method::PUT, scale_url.clone(), Some(bad)).await;
    assert_eq!(code, 422, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("spec.replicas"),
        "{body}"
    );
    k.ok(&["scale", "deployment", "rest", "--replicas=2"]);
    assert_eq!(replicas("rest"), 2);
    // kubectl prints a Scale as kube-apiserver's table has it.
    let printed = k.ok(&["get", "deployment", "rest", "--subresource=scale"]);
    let header: Vec<&str> = printed.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "DESIRED", "AVAILABLE"], "{printed}");
    assert!(
        printed.contains("rest ") && printed.contains(" 2 "),
        "{printed}"
    );

    // scale — gRPC.
    let apps = |ns: &str| resource("apps", "deployments", ns);
    let got = raw
        .get(pb::GetRequest {
            resource: apps("default"),
            name: "grpc".into(),
            subresource: "scale".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (got.api_version.as_str(), got.kind.as_str()),
        ("autoscaling/v1", "Scale")
    );
    let mut scale = decoded(Some(got));
    scale["spec"]["replicas"] = json!(5);
    let w = raw
        .update(pb::UpdateRequest {
            resource: apps("default"),
            object: object("autoscaling/v1", "Scale", &scale),
            subresource: "scale".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(decoded(w.object)["spec"]["replicas"], 5);
    assert_eq!(replicas("grpc"), 5);
    raw.patch(pb::PatchRequest {
        resource: apps("default"),
        name: "grpc".into(),
        r#type: pb::PatchType::Merge as i32,
        patch: br#"{"spec":{"replicas":6}}"#.to_vec().into(),
        subresource: "scale".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(replicas("grpc"), 6);

    // status: written through the subresource, the spec stays — both doors.
    let status_url = format!("{deploys}/rest/status");
    let (code, current) = send(&cl, reqwest::Method::GET, status_url.clone(), None).await;
    assert_eq!(code, 200);
    let mut next = current.clone();
    next["status"] = json!({"observedGeneration": 9, "replicas": 2});
    next["spec"]["replicas"] = json!(99);
    let (code, body) = send(&cl, reqwest::Method::PUT, status_url.clone(), Some(next)).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        (
            &body["status"]["observedGeneration"],
            &body["spec"]["replicas"]
        ),
        (&json!(9), &json!(2))
    );
    let current = decoded(Some(
        raw.get(pb::GetRequest {
            resource: apps("default"),
            name: "grpc".into(),
            subresource: "status".into(),
        })
        .await
        .unwrap()
        .into_inner(),
    ));
    let mut next = current.clone();
    next["status"] = json!({"observedGeneration": 7});
    let w = raw
        .update(pb::UpdateRequest {
            resource: apps("default"),
            object: object("apps/v1", "Deployment", &next),
            subresource: "status".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(decoded(w.object)["status"]["observedGeneration"], 7);
    raw.patch(pb::PatchRequest {
        resource: apps("default"),
        name: "grpc".into(),
        r#type: pb::PatchType::Merge as i32,
        patch: br#"{"status":{"observedGeneration":8}}"#.to_vec().into(),
        subresource: "status".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(
        k.json(&["get", "deployment", "grpc"])["status"]["observedGeneration"],
        8
    );

    // A subresource a resource does not have is 404 on both doors.
    let (code, _) = send(
        &cl,
        reqwest::Method::GET,
        c.api.url("/api/v1/namespaces/default/configmaps/x/scale"),
        None,
    )
    .await;
    assert_eq!(code, 404);
    let e = raw
        .get(pb::GetRequest {
            resource: resource("", "configmaps", "default"),
            name: "x".into(),
            subresource: "scale".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);

    // binding — REST, the legacy bindings path, and gRPC (Create with a subresource, and Bind).
    let pods = c.api.url("/api/v1/namespaces/default/pods");
    for name in ["b-rest", "b-legacy", "b-grpc", "b-bind", "e-rest", "e-grpc"] {
        let (code, body) = send(&cl, reqwest::Method::POST, pods.clone(), Some(pod(name))).await;
        assert_eq!(code, 201, "{body}");
    }
    let binding = |pod: &str, node: &str| {
        json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": pod},
               "target": {"kind": "Node", "name": node}})
    };
    let (code, body) = send(
        &cl,
        reqwest::Method::POST,
        format!("{pods}/b-rest/binding"),
        Some(binding("b-rest", "n1")),
    )
    .await;
    assert_eq!((code, &body["status"]), (201, &json!("Success")), "{body}");
    let (code, body) = send(
        &cl,
        reqwest::Method::POST,
        c.api.url("/api/v1/namespaces/default/bindings"),
        Some(binding("b-legacy", "n1")),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    let w = raw
        .create(pb::CreateRequest {
            resource: resource("", "pods", "default"),
            object: object("v1", "Binding", &binding("b-grpc", "n2")),
            name: "b-grpc".into(),
            subresource: "binding".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(decoded(w.object)["status"], "Success");
    raw.bind(pb::BindRequest {
        namespace: "default".into(),
        pod: "b-bind".into(),
        node: "n2".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    for (p, node) in [
        ("b-rest", "n1"),
        ("b-legacy", "n1"),
        ("b-grpc", "n2"),
        ("b-bind", "n2"),
    ] {
        let got = k.json(&["get", "pod", p]);
        assert_eq!(got["spec"]["nodeName"], node, "{p}");
    }
    // Bound once: a second binding conflicts on both doors.
    let (code, body) = send(
        &cl,
        reqwest::Method::POST,
        format!("{pods}/b-rest/binding"),
        Some(binding("b-rest", "n2")),
    )
    .await;
    assert_eq!(code, 409, "{body}");
    let e = raw
        .create(pb::CreateRequest {
            resource: resource("", "pods", "default"),
            object: object("v1", "Binding", &binding("b-grpc", "n1")),
            name: "b-grpc".into(),
            subresource: "binding".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Aborted);

    // eviction — REST and gRPC: the pod goes (unscheduled, so at once).
    let eviction = |pod: &str| json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": pod}});
    let (code, body) = send(
        &cl,
        reqwest::Method::POST,
        format!("{pods}/e-rest/eviction"),
        Some(eviction("e-rest")),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    raw.create(pb::CreateRequest {
        resource: resource("", "pods", "default"),
        object: object("policy/v1", "Eviction", &eviction("e-grpc")),
        name: "e-grpc".into(),
        subresource: "eviction".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    for p in ["e-rest", "e-grpc"] {
        let err = k.fails(&["get", "pod", p]);
        assert!(err.contains("not found"), "{p}: {err}");
    }

    // finalize — REST and gRPC: a terminating namespace's finalizers go, and it with them.
    for ns in ["fin-rest", "fin-grpc"] {
        k.ok(&["create", "namespace", ns]);
        k.ok_input(
            &["create", "-f", "-"],
            &json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": "held", "namespace": ns, "finalizers": ["example.com/hold"]}})
            .to_string(),
        );
        k.ok(&["delete", "namespace", ns, "--wait=false"]);
    }
    let mut ns = k.json(&["get", "namespace", "fin-rest"]);
    assert_eq!(ns["status"]["phase"], "Terminating");
    ns["spec"]["finalizers"] = json!([]);
    let (code, body) = send(
        &cl,
        reqwest::Method::PUT,
        c.api.url("/api/v1/namespaces/fin-rest/finalize"),
        Some(ns),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let mut ns = k.json(&["get", "namespace", "fin-grpc"]);
    ns["spec"]["finalizers"] = json!([]);
    raw.update(pb::UpdateRequest {
        resource: resource("", "namespaces", ""),
        object: object("v1", "Namespace", &ns),
        subresource: "finalize".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    // With its finalizers gone, a terminating namespace is removed at once.
    for ns in ["fin-rest", "fin-grpc"] {
        let err = k.fails(&["get", "namespace", ns]);
        assert!(err.contains("not found"), "{ns}: {err}");
    }
}

/// A TLS connection to the server that sends `request` as raw bytes and returns what comes
/// back (empty if the connection dropped).
async fn raw_exchange(api: &ApiServer, request: &[u8]) -> String {
    let cfg = Config::from_kubeconfig(&api.kubeconfig).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    let pem = cfg.ca_pem.unwrap();
    let der = rustls::pki_types::CertificateDer::from_pem_slice(&pem).unwrap();
    roots.add(der).unwrap();
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", api.port))
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut s = connector.connect(name, tcp).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

use rustls::pki_types::pem::PemObject;

#[tokio::test]
async fn malformed_requests_are_refused_and_the_server_keeps_serving() {
    let c = Cluster::start().await.unwrap();
    let cl = c.api.client().unwrap();
    c.kubectl().ok(&["create", "namespace", "junk"]);

    // Raw bytes in the query and path, from an anonymous caller: a Status, not a dropped
    // connection.
    for target in [
        &b"/api/v1/pods?a=%1\xc3\xa9"[..],
        b"/api/v1/pods?labelSelector=%ZZ&fieldSelector=%",
        b"/api/v1/namespaces/%1\xc3\xa9/pods",
        b"/api/v1/namespaces/junk/pods/%ff%fe",
        b"/apis/%c3/%28/x",
    ] {
        let mut req = b"GET ".to_vec();
        req.extend_from_slice(target);
        req.extend_from_slice(b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let answer = raw_exchange(&c.api, &req).await;
        assert!(
            answer.starts_with("HTTP/1.1 401")
                || answer.starts_with("HTTP/1.1 400")
                || answer.starts_with("HTTP/1.1 403"),
            "{}: {answer:?}",
            String::from_utf8_lossy(target)
        );
    }

    let pods = c.api.url("/api/v1/namespaces/junk/pods");
    let one = format!("{pods}/p");
    let (code, _) = send(&cl, reqwest::Method::POST, pods.clone(), Some(pod("p"))).await;
    assert_eq!(code, 201);
    let cases: Vec<(reqwest::Method, String, &str, Vec<u8>, u16)> = vec![
        (reqwest::Method::POST, pods.clone(), "application/json", b"{nope".to_vec(), 400),
        (reqwest::Method::POST, pods.clone(), "application/json", b"[1,2]".to_vec(), 400),
        (reqwest::Method::POST, pods.clone(), "application/json", b"".to_vec(), 400),
        (reqwest::Method::POST, pods.clone(), "application/json", vec![0xff, 0xfe, 0x00], 400),
        (reqwest::Method::POST, pods.clone(), "application/yaml", b"a: [1, 2\n".to_vec(), 400),
        (reqwest::Method::POST, pods.clone(), "application/vnd.kubernetes.protobuf", b"k8s\x00\xff\xff\xff".to_vec(), 400),
        (reqwest::Method::POST, pods.clone(), "text/plain", b"{}".to_vec(), 415),
        (reqwest::Method::POST, pods.clone(), "application/json",
            json!({"metadata": {"generateName": "é".repeat(59)}, "spec": {"containers": [{"name": "c", "image": "x"}]}}).to_string().into_bytes(), 422),
        (reqwest::Method::POST, pods.clone(), "application/json",
            br#"{"metadata":{"name":"q","labels":"not a map"},"spec":{}}"#.to_vec(), 400),
        (reqwest::Method::POST, pods.clone(), "application/json",
            br#"{"metadata":{"name":"q"},"spec":{"containers":[{"name":"c","image":"x","resources":{"requests":{"cpu":"1.2.3"}}}]}}"#.to_vec(), 422),
        (reqwest::Method::PATCH, one.clone(), "application/json-patch+json", b"{}".to_vec(), 400),
        (reqwest::Method::PATCH, one.clone(), "application/merge-patch+json", b"{bad".to_vec(), 400),
        (reqwest::Method::PATCH, one.clone(), "application/strategic-merge-patch+json", b"\"x\"".to_vec(), 400),
        (reqwest::Method::PATCH, one.clone(), "application/apply-patch+yaml", b":\n- [".to_vec(), 400),
        (reqwest::Method::PATCH, one.clone(), "application/xml", b"<x/>".to_vec(), 415),
        (reqwest::Method::GET, format!("{pods}?labelSelector=a%20in%20(b"), "application/json", Vec::new(), 400),
        (reqwest::Method::GET, format!("{pods}?fieldSelector=spec.bogus=1"), "application/json", Vec::new(), 400),
        (reqwest::Method::GET, format!("{pods}?limit=x"), "application/json", Vec::new(), 400),
        (reqwest::Method::GET, format!("{pods}?limit=1&continue=!!"), "application/json", Vec::new(), 400),
        (reqwest::Method::GET, format!("{pods}?resourceVersion=-5"), "application/json", Vec::new(), 400),
        (reqwest::Method::DELETE, one.clone(), "application/json", br#"{"propagationPolicy":"Sideways"}"#.to_vec(), 422),
    ];
    for (method, url, ct, body, want) in cases {
        let shown = String::from_utf8_lossy(&body).into_owned();
        let (code, status) = send_raw(&cl, method.clone(), url.clone(), ct, body).await;
        assert_eq!(code, want, "{method} {url} ({ct}) {shown}: {status}");
        assert_eq!(status["kind"], "Status", "{method} {url}: {status}");
        assert_eq!(status["code"], want);
    }

    // Patches that decode but cannot apply.
    for (ct, body, want) in [
        (
            "application/json-patch+json",
            r#"[{"op":"frobnicate","path":"/x"}]"#,
            400,
        ),
        (
            "application/json-patch+json",
            r#"[{"op":"remove","path":"/spec/nope"}]"#,
            422,
        ),
        (
            "application/json-patch+json",
            r#"[{"op":"replace","path":"/spec/containers","value":"x"}]"#,
            400,
        ),
        (
            "application/merge-patch+json",
            r#"{"spec":{"containers":"x"}}"#,
            400,
        ),
        (
            "application/strategic-merge-patch+json",
            r#"{"spec":{"containers":[{"$patch":"bogus"}]}}"#,
            400,
        ),
        (
            "application/merge-patch+json",
            r#"{"metadata":{"name":"other"}}"#,
            400,
        ),
    ] {
        let (code, status) = send_raw(
            &cl,
            reqwest::Method::PATCH,
            one.clone(),
            ct,
            body.as_bytes().to_vec(),
        )
        .await;
        assert_eq!(code, want, "{ct} {body}: {status}");
        assert_eq!(status["kind"], "Status");
    }

    // A body over the limit, worded as kube-apiserver words it.
    let big = vec![b' '; 3 * 1024 * 1024 + 10];
    let (code, status) = send_raw(
        &cl,
        reqwest::Method::POST,
        pods.clone(),
        "application/json",
        big,
    )
    .await;
    assert_eq!(code, 413);
    assert_eq!(
        status["message"],
        "Request entity too large: limit is 3145728"
    );

    // The server still serves, and stored nothing but the one good pod, unchanged.
    let (code, _) = send(&cl, reqwest::Method::GET, c.api.url("/readyz"), None).await;
    assert_eq!(code, 200);
    let (code, list) = send(&cl, reqwest::Method::GET, pods.clone(), None).await;
    assert_eq!(code, 200);
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["p"]);
    let stored = &list["items"][0];
    assert_eq!(stored["spec"]["containers"][0]["image"], "busybox:1.36");
    assert_eq!(
        stored["metadata"]["resourceVersion"],
        list["items"][0]["metadata"]["resourceVersion"]
    );
    let (code, got) = send(&cl, reqwest::Method::GET, one, None).await;
    assert_eq!((code, &got["metadata"]["generation"]), (200, &json!(1)));
}

#[tokio::test]
async fn orphaning_keeps_an_owner_added_meanwhile() {
    use skiff_apiserver::request::{DeleteOpts, Propagation, WriteOpts};
    use skiff_apiserver::{admission, metrics, registry, storage, store};

    let etcd = Etcd::start().unwrap();
    let etcd_store = storage::Etcd::connect(
        std::slice::from_ref(&etcd.endpoint),
        "/registry",
        Arc::new(metrics::Metrics::new()),
    )
    .await
    .unwrap();
    let s = store::GenericStore::new(
        etcd_store.clone(),
        admission::Chain::new(&admission::Config::default()).unwrap(),
        Arc::new(metrics::Metrics::new()),
        100,
    );
    let ranges = registry::service::allocator::Ranges {
        service_cidr: "10.96.0.0/12".parse().unwrap(),
        node_ports: (30000, 32767),
    };
    let mut caches = Vec::new();
    for info in registry::served(&ranges) {
        caches.push(s.serve(info).1);
    }
    let find = |plural: &str| s.find("", "v1", plural).unwrap();
    let opts = WriteOpts::internal("test");
    s.create(
        &find("namespaces"),
        None,
        json!({"metadata": {"name": "default"}}),
        &opts,
    )
    .await
    .unwrap();
    let cms = find("configmaps");
    let owner = s
        .create(
            &cms,
            Some("default"),
            json!({"metadata": {"name": "owner"}}),
            &opts,
        )
        .await
        .unwrap()
        .object;
    let other = s
        .create(
            &cms,
            Some("default"),
            json!({"metadata": {"name": "other"}}),
            &opts,
        )
        .await
        .unwrap()
        .object;
    let reference = |o: &Value| {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "name": o["metadata"]["name"],
               "uid": o["metadata"]["uid"]})
    };
    s.create(
        &cms,
        Some("default"),
        json!({"metadata": {"name": "dependent", "ownerReferences": [reference(&owner)]}}),
        &opts,
    )
    .await
    .unwrap();
    // The caches see the dependent owned by `owner` alone, and then stop following etcd.
    for cache in &caches {
        cache.list_all(&etcd_store).await.unwrap();
    }
    // Meanwhile someone adds a second owner: the caches do not see it.
    s.patch(
        &cms,
        Some("default"),
        "dependent",
        skiff_apiserver::patch::PatchType::Merge,
        &json!({"metadata": {"ownerReferences": [reference(&owner), reference(&other)]}}),
        None,
        &opts,
    )
    .await
    .unwrap();
    let gone = s
        .delete(
            &cms,
            Some("default"),
            "owner",
            &DeleteOpts {
                propagation: Some(Propagation::Orphan),
                user: opts.user.clone(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(matches!(gone, skiff_apiserver::request::Deleted::Gone(_)));
    let dependent = s.get(&cms, Some("default"), "dependent").await.unwrap();
    assert_eq!(
        dependent["metadata"]["ownerReferences"],
        json!([reference(&other)]),
        "the owner added meanwhile stays; only the deleted one goes"
    );
}
