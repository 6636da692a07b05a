//! Pod and Service behaviours as Kubernetes v1.33 has them, through the real `kubectl`, the
//! REST API and a real node (a kubelet on a private containerd): Service ports defaulted
//! from `targetPort: 0`, environment variables (relaxed names, Service links), sidecars with
//! startup probes, `metadata.generation` and `status.observedGeneration`, sysctls and
//! read-only root filesystems.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use skiff_e2e::node::Node;
use skiff_e2e::{send, Cluster, Kubectl};

fn wait_pod(node: &Node, k: &Kubectl, name: &str, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    node.wait_blocking(
        &format!("pod {name}: {what}"),
        Duration::from_secs(90),
        || {
            let p = k.get_opt(&["pod", name]).unwrap_or(Value::Null);
            f(&p).then_some(p)
        },
    )
}

fn running(p: &Value) -> bool {
    p["status"]["phase"] == "Running"
}

/// The environment of the pod's first container, one `NAME=value` a line, as `env` prints it.
async fn env_of(node: &Node, pod: &Value) -> Vec<String> {
    let (code, out) = node.exec_in(pod, &["env"]).await;
    assert_eq!(code, 0, "{out}");
    out.lines().map(str::to_string).collect()
}

fn apply(k: &Kubectl, obj: &Value) {
    k.ok_input(&["apply", "-f", "-"], &obj.to_string());
}

#[tokio::test]
async fn service_target_port_zero_is_defaulted_to_the_port() {
    let c = Cluster::start().await.unwrap();
    let k = c.kubectl();
    // Through kubectl: a plain and a headless Service, as typed clients write them.
    for (name, cluster_ip) in [("plain", None), ("headless", Some("None"))] {
        let mut spec = json!({
            "selector": {"app": name},
            "ports": [
                {"name": "http", "port": 80, "targetPort": 0},
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 0}
            ]
        });
        if let Some(ip) = cluster_ip {
            spec["clusterIP"] = json!(ip);
        }
        apply(
            &k,
            &json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec}),
        );
        let svc = k.json(&["get", "service", name, "-o", "json"]);
        assert_eq!(svc["spec"]["ports"][0]["targetPort"], 80, "{svc}");
        assert_eq!(svc["spec"]["ports"][1]["targetPort"], 53, "{svc}");
    }
    let headless = k.json(&["get", "service", "headless", "-o", "json"]);
    assert_eq!(headless["spec"]["clusterIP"], "None");

    // Through the REST API: 0 and "" on create, and 0 again on an update.
    let http = c.api.client().unwrap();
    let url = c.api.url("/api/v1/namespaces/default/services");
    let (code, svc) = send(
        &http,
        Method::POST,
        url.clone(),
        Some(json!({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "raw"},
            "spec": {"ports": [
                {"name": "a", "port": 8080, "targetPort": 0},
                {"name": "b", "port": 9090, "targetPort": ""},
                {"name": "c", "port": 7070, "targetPort": "web"}
            ]}
        })),
    )
    .await;
    assert_eq!(code, 201, "{svc}");
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], 8080, "{svc}");
    assert_eq!(svc["spec"]["ports"][1]["targetPort"], 9090, "{svc}");
    assert_eq!(svc["spec"]["ports"][2]["targetPort"], "web", "{svc}");
    let mut update = svc.clone();
    update["spec"]["ports"] = json!([{"name": "a", "port": 8081, "targetPort": 0}]);
    let (code, svc) = send(&http, Method::PUT, format!("{url}/raw"), Some(update)).await;
    assert_eq!(code, 200, "{svc}");
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], 8081, "{svc}");
    // A negative target port is still refused, in Kubernetes' words.
    let (code, status) = send(
        &http,
        Method::POST,
        url,
        Some(json!({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "bad"},
            "spec": {"ports": [{"port": 80, "targetPort": -1}]}
        })),
    )
    .await;
    assert_eq!(code, 422, "{status}");
    assert_eq!(status["reason"], "Invalid");
    assert!(
        status["message"].as_str().unwrap().contains(
            "spec.ports[0].targetPort: Invalid value: -1: must be between 1 and 65535, inclusive"
        ),
        "{status}"
    );
}

#[tokio::test]
async fn environment_relaxed_names_and_service_links() {
    let c = Cluster::start().await.unwrap();
    let node = Node::start(&c.api.kubeconfig, "node-a", &[]).unwrap();
    let k = c.kubectl();
    let image = node.images.busybox.clone();
    // Services of the pod's namespace: one with a cluster IP, a headless one and an
    // ExternalName one (neither of which has variables).
    for svc in [
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web-svc"},
        "spec": {"selector": {"app": "web"}, "ports": [
            {"name": "http", "port": 80, "targetPort": 8080},
            {"name": "dns-udp", "port": 53, "protocol": "UDP"}
        ]}}),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "headless"},
            "spec": {"clusterIP": "None", "selector": {"app": "db"}, "ports": [{"port": 5432}]}}),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "ext"},
            "spec": {"type": "ExternalName", "externalName": "example.com"}}),
    ] {
        apply(&k, &svc);
    }
    let web_ip = k.ok(&["get", "svc", "web-svc", "-o", "jsonpath={.spec.clusterIP}"]);
    let master_ip = k.ok(&[
        "get",
        "svc",
        "kubernetes",
        "-n",
        "default",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    k.ok(&[
        "create",
        "configmap",
        "relaxed",
        "--from-literal=1-foo=one",
        "--from-literal=a.b=dotted",
        "--from-literal=-x=dash",
    ]);
    let pod = |name: &str, links: bool| {
        json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {
                "nodeName": "node-a",
                "enableServiceLinks": links,
                "terminationGracePeriodSeconds": 0,
                "containers": [{
                    "name": "c", "image": image, "command": ["sleep", "3600"],
                    "envFrom": [
                        {"configMapRef": {"name": "relaxed"}},
                        {"configMapRef": {"name": "relaxed"}, "prefix": "$_"}
                    ],
                    "env": [
                        {"name": "2-bar", "value": "two"},
                        {"name": "x:y", "value": "$(1-foo) and $(WEB_SVC_SERVICE_PORT)"}
                    ]
                }]
            }
        })
    };
    apply(&k, &pod("links", true));
    apply(&k, &pod("nolinks", false));

    let p = wait_pod(&node, &k, "links", "Running", running);
    let env = env_of(&node, &p).await;
    let has = |want: &str| env.iter().any(|l| l == want);
    let mut wants = vec![
        // envFrom and env with names the relaxed rule allows.
        "1-foo=one".to_string(),
        "a.b=dotted".into(),
        "-x=dash".into(),
        "$_1-foo=one".into(),
        "$_-x=dash".into(),
        "2-bar=two".into(),
        "x:y=one and 80".into(),
        // The API server's Service.
        format!("KUBERNETES_SERVICE_HOST={master_ip}"),
        "KUBERNETES_SERVICE_PORT=443".into(),
    ];
    // The namespace's Service, every variable Kubernetes gives.
    wants.extend([
        format!("WEB_SVC_SERVICE_HOST={web_ip}"),
        "WEB_SVC_SERVICE_PORT=80".into(),
        "WEB_SVC_SERVICE_PORT_HTTP=80".into(),
        "WEB_SVC_SERVICE_PORT_DNS_UDP=53".into(),
        format!("WEB_SVC_PORT=tcp://{web_ip}:80"),
        format!("WEB_SVC_PORT_80_TCP=tcp://{web_ip}:80"),
        "WEB_SVC_PORT_80_TCP_PROTO=tcp".into(),
        "WEB_SVC_PORT_80_TCP_PORT=80".into(),
        format!("WEB_SVC_PORT_80_TCP_ADDR={web_ip}"),
        format!("WEB_SVC_PORT_53_UDP=udp://{web_ip}:53"),
        "WEB_SVC_PORT_53_UDP_PROTO=udp".into(),
        "WEB_SVC_PORT_53_UDP_PORT=53".into(),
        format!("WEB_SVC_PORT_53_UDP_ADDR={web_ip}"),
    ]);
    for want in &wants {
        assert!(has(want), "{want} missing from:\n{}", env.join("\n"));
    }
    for absent in ["HEADLESS_", "EXT_"] {
        assert!(
            !env.iter().any(|l| l.starts_with(absent)),
            "{absent}* in:\n{}",
            env.join("\n")
        );
    }
    // No warning about skipped keys: every key is a valid name.
    let reasons = k.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=links",
        "-o",
        "jsonpath={.items[*].reason}",
    ]);
    assert!(
        !reasons.contains("InvalidEnvironmentVariableNames"),
        "{reasons}"
    );

    // `enableServiceLinks: false`: the API server's Service only.
    let p = wait_pod(&node, &k, "nolinks", "Running", running);
    let env = env_of(&node, &p).await;
    assert!(
        env.iter()
            .any(|l| *l == format!("KUBERNETES_SERVICE_HOST={master_ip}")),
        "{}",
        env.join("\n")
    );
    assert!(
        !env.iter().any(|l| l.starts_with("WEB_SVC_")),
        "{}",
        env.join("\n")
    );
    // Its reference to a Service variable stays as written.
    assert!(
        env.iter()
            .any(|l| l == "x:y=one and $(WEB_SVC_SERVICE_PORT)"),
        "{}",
        env.join("\n")
    );

    // The API refuses what the relaxed rule does not allow, in Kubernetes' words.
    let bad = json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bad-env"},
        "spec": {"containers": [{
            "name": "c", "image": image,
            "env": [{"name": "a=b", "value": "x"}, {"name": "caf\u{e9}", "value": "x"}],
            "envFrom": [{"configMapRef": {"name": "relaxed"}, "prefix": "p="}]
        }]}
    });
    let http = c.api.client().unwrap();
    let (code, status) = send(
        &http,
        Method::POST,
        c.api.url("/api/v1/namespaces/default/pods"),
        Some(bad),
    )
    .await;
    assert_eq!(code, 422, "{status}");
    let msg = status["message"].as_str().unwrap();
    let rule = "a valid environment variable name must consist only of printable ASCII characters other than '='";
    for want in [
        format!("spec.containers[0].env[0].name: Invalid value: \"a=b\": {rule}"),
        format!("spec.containers[0].env[1].name: Invalid value: \"caf\u{e9}\": {rule}"),
        format!("spec.containers[0].envFrom[0].prefix: Invalid value: \"p=\": {rule}"),
    ] {
        assert!(msg.contains(&want), "{want} not in {msg}");
    }
}

fn status_of<'a>(pod: &'a Value, field: &str, name: &str) -> &'a Value {
    pod["status"][field]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == name))
        .unwrap_or(&Value::Null)
}

#[tokio::test]
async fn sidecar_startup_probe_and_init_container_statuses() {
    let c = Cluster::start().await.unwrap();
    let node = Node::start(&c.api.kubeconfig, "node-a", &[]).unwrap();
    let k = c.kubectl();
    let image = node.images.busybox.clone();
    // The sidecar's startup probe fails twice, then passes: with `failureThreshold: 3` it
    // is never restarted. (Given as 0, as some typed clients write an unset field: the
    // API server defaults it to 3, as Kubernetes does.)
    let probe = "n=$(cat /tmp/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > /tmp/n; [ $n -ge 3 ]";
    apply(
        &k,
        &json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "sidecar"},
            "spec": {
                "nodeName": "node-a",
                "terminationGracePeriodSeconds": 0,
                "initContainers": [
                    {"name": "setup", "image": image, "command": ["sleep", "6"]},
                    {"name": "proxy", "image": image, "restartPolicy": "Always",
                     "command": ["sleep", "3600"],
                     "startupProbe": {"exec": {"command": ["sh", "-c", probe]},
                        "periodSeconds": 1, "failureThreshold": 0, "timeoutSeconds": 0}}
                ],
                "containers": [{"name": "app", "image": image, "command": ["sleep", "3600"]}]
            }
        }),
    );

    // While the first init container runs: it is started but not ready, and the sidecar and
    // the app container wait with `PodInitializing`.
    let p = wait_pod(&node, &k, "sidecar", "setup running", |p| {
        status_of(p, "initContainerStatuses", "setup")["state"]["running"].is_object()
    });
    assert_eq!(
        p["spec"]["initContainers"][1]["startupProbe"],
        json!({"exec": {"command": ["sh", "-c", probe]}, "periodSeconds": 1,
            "failureThreshold": 3, "timeoutSeconds": 1, "successThreshold": 1}),
        "the probe's defaults"
    );
    let setup = status_of(&p, "initContainerStatuses", "setup");
    assert_eq!(
        (setup["ready"].clone(), setup["started"].clone()),
        (json!(false), json!(true)),
        "{setup}"
    );
    let proxy = status_of(&p, "initContainerStatuses", "proxy");
    assert_eq!(
        proxy["state"]["waiting"]["reason"], "PodInitializing",
        "{proxy}"
    );
    assert_eq!(
        (proxy["ready"].clone(), proxy["started"].clone()),
        (json!(false), json!(false)),
        "{proxy}"
    );
    let app = status_of(&p, "containerStatuses", "app");
    assert_eq!(
        app["state"]["waiting"]["reason"], "PodInitializing",
        "{app}"
    );
    assert_eq!(p["status"]["phase"], "Pending");
    let initialized = p["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Initialized")
        .unwrap();
    assert_eq!(initialized["status"], "False");
    assert_eq!(initialized["reason"], "ContainersNotInitialized");

    // Then: the sidecar started after its third probe, never restarted; the completed init
    // container ready (and no longer started); the pod Ready.
    let p = wait_pod(&node, &k, "sidecar", "Ready", |p| {
        p["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
    });
    let proxy = status_of(&p, "initContainerStatuses", "proxy");
    assert!(proxy["state"]["running"].is_object(), "{proxy}");
    assert_eq!(proxy["restartCount"], 0, "{proxy}");
    assert_eq!(
        (proxy["ready"].clone(), proxy["started"].clone()),
        (json!(true), json!(true)),
        "{proxy}"
    );
    let setup = status_of(&p, "initContainerStatuses", "setup");
    assert_eq!(
        setup["state"]["terminated"]["reason"], "Completed",
        "{setup}"
    );
    assert_eq!(
        (setup["ready"].clone(), setup["started"].clone()),
        (json!(true), json!(false)),
        "{setup}"
    );
    let app = status_of(&p, "containerStatuses", "app");
    assert_eq!(
        (app["ready"].clone(), app["started"].clone()),
        (json!(true), json!(true)),
        "{app}"
    );
    let (code, n) = node
        .exec_in(
            &json!({"status": {"containerStatuses": [{"containerID": proxy["containerID"]}]}}),
            &["cat", "/tmp/n"],
        )
        .await;
    assert_eq!((code, n.trim()), (0, "3"), "the probe ran three times");

    // Two failures as `Unhealthy` events, no `Killing`.
    let events = k.json(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=sidecar",
        "-o",
        "json",
    ]);
    let events = events["items"].as_array().unwrap();
    let failures: i64 = events
        .iter()
        .filter(|e| {
            e["reason"] == "Unhealthy"
                && e["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("Startup probe failed"))
        })
        .map(|e| e["count"].as_i64().unwrap_or(1))
        .sum();
    assert_eq!(failures, 2, "{events:?}");
    assert!(
        !events.iter().any(|e| e["reason"] == "Killing"),
        "{events:?}"
    );
}

#[tokio::test]
async fn pod_generation_counts_spec_changes_and_the_start_of_a_graceful_deletion() {
    let c = Cluster::start().await.unwrap();
    let k = c.kubectl();
    // Bound to a node that never runs it, so its graceful deletion stays pending.
    apply(
        &k,
        &json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "gen"},
            "spec": {"nodeName": "elsewhere", "terminationGracePeriodSeconds": 600,
                "containers": [{"name": "c", "image": "registry.example/app:1"}]}
        }),
    );
    let generation = || k.ok(&["get", "pod", "gen", "-o", "jsonpath={.metadata.generation}"]);
    assert_eq!(generation(), "1");
    // Metadata is no spec change.
    k.ok(&["label", "pod", "gen", "tier=web"]);
    k.ok(&["annotate", "pod", "gen", "note=x"]);
    assert_eq!(generation(), "1");
    // Nor is the status.
    let http = c.api.client().unwrap();
    let url = c.api.url("/api/v1/namespaces/default/pods/gen/status");
    let mut pod = k.json(&["get", "pod", "gen", "-o", "json"]);
    pod["status"]["message"] = json!("hello");
    let (code, body) = send(&http, Method::PUT, url, Some(pod)).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["metadata"]["generation"], 1);
    // Spec changes are.
    k.ok(&["set", "image", "pod/gen", "c=registry.example/app:2"]);
    assert_eq!(generation(), "2");
    k.ok(&[
        "patch",
        "pod",
        "gen",
        "-p",
        r#"{"spec":{"activeDeadlineSeconds":3600}}"#,
    ]);
    assert_eq!(generation(), "3");
    // So is the start of a graceful deletion, once.
    k.ok(&["delete", "pod", "gen", "--wait=false"]);
    let pod = k.json(&["get", "pod", "gen", "-o", "json"]);
    assert!(pod["metadata"]["deletionTimestamp"].is_string(), "{pod}");
    assert_eq!(pod["metadata"]["deletionGracePeriodSeconds"], 600);
    assert_eq!(pod["metadata"]["generation"], 4);
    k.ok(&["delete", "pod", "gen", "--wait=false", "--grace-period=300"]);
    let pod = k.json(&["get", "pod", "gen", "-o", "json"]);
    assert_eq!(pod["metadata"]["deletionGracePeriodSeconds"], 300);
    assert_eq!(pod["metadata"]["generation"], 4);
    // No kubelet runs it, so nothing has observed any generation.
    assert!(pod["status"].get("observedGeneration").is_none(), "{pod}");
}

#[tokio::test]
async fn the_kubelet_reports_the_generation_it_acted_on() {
    let c = Cluster::start().await.unwrap();
    let node = Node::start(&c.api.kubeconfig, "node-a", &[]).unwrap();
    let k = c.kubectl();
    apply(
        &k,
        &json!({
            "apiVersion": "v1", "kind": "Pod",
            // Held by a finalizer, so it is still there to read once the kubelet is done.
            "metadata": {"name": "seen", "finalizers": ["example.com/hold"]},
            "spec": {"nodeName": "node-a", "terminationGracePeriodSeconds": 30,
                "containers": [{"name": "c", "image": node.images.busybox,
                    "command": ["sleep", "3600"]}]}
        }),
    );
    let observed = |want: i64| {
        let k = &k;
        move || {
            let pod = k.json(&["get", "pod", "seen"]);
            (pod["status"]["observedGeneration"] == want).then_some(pod)
        }
    };
    let pod = node.wait_for(&k, "observedGeneration 1", observed(1)).await;
    assert_eq!(pod["metadata"]["generation"], 1, "{pod}");
    // A spec change is a new generation, and the kubelet says when it has seen it.
    k.ok(&[
        "patch",
        "pod",
        "seen",
        "-p",
        r#"{"spec":{"activeDeadlineSeconds":3600}}"#,
    ]);
    node.wait_for(&k, "observedGeneration 2", observed(2)).await;
    // So is the start of a graceful deletion, which the kubelet acts on by stopping the pod.
    k.ok(&["delete", "pod", "seen", "--wait=false"]);
    let pod = node.wait_for(&k, "observedGeneration 3", observed(3)).await;
    assert!(pod["metadata"]["deletionTimestamp"].is_string(), "{pod}");
    k.ok(&[
        "patch",
        "pod",
        "seen",
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
    ]);
}

#[tokio::test]
async fn sysctls_validated_admitted_by_the_kubelet_and_set_in_the_sandbox() {
    let c = Cluster::start().await.unwrap();
    let http = c.api.client().unwrap();
    let url = c.api.url("/api/v1/namespaces/default/pods");
    // Malformed, duplicate, and a network sysctl in a pod on the host's network: refused
    // with kube-apiserver's 422.
    let (code, status) = send(
        &http,
        Method::POST,
        url.clone(),
        Some(json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bad-sysctls"},
            "spec": {"hostNetwork": true, "containers": [{"name": "c", "image": "x:1"}],
                "securityContext": {"sysctls": [
                    {"name": "Kernel.Shm", "value": "1"},
                    {"name": "kernel.shm_rmid_forced", "value": "1"},
                    {"name": "kernel.shm_rmid_forced", "value": "0"},
                    {"name": "net.ipv4.tcp_syncookies", "value": "1"},
                    {"name": "", "value": "1"}
                ]}}
        })),
    )
    .await;
    assert_eq!(code, 422, "{status}");
    let msg = status["message"].as_str().unwrap();
    let f = "spec.securityContext.sysctls";
    for want in [
        format!(
            r#"{f}[0].name: Invalid value: "Kernel.Shm": must have at most 253 characters and match regex ([a-z0-9]([-_a-z0-9]*[a-z0-9])?[\./])*[a-z0-9]([-_a-z0-9]*[a-z0-9])?"#
        ),
        format!(r#"{f}[2].name: Duplicate value: "kernel.shm_rmid_forced""#),
        format!(
            r#"{f}[3].name: Invalid value: "net.ipv4.tcp_syncookies": may not be specified when 'hostNetwork' is true"#
        ),
        format!("{f}[4].name: Required value"),
    ] {
        assert!(msg.contains(&want), "{want}\nnot in {msg}");
    }

    // A kubelet refusing to start on a sysctl no pod has its own copy of.
    let out = std::process::Command::new(skiff_e2e::binary("skiff-kubelet").unwrap())
        .arg("--allowed-unsafe-sysctls=kernel.hostname")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(r#"the sysctls "kernel.hostname" are not known to be namespaced"#),
        "{err}"
    );

    let node = Node::start(
        &c.api.kubeconfig,
        "node-a",
        &["--allowed-unsafe-sysctls=kernel.msg*,net.core.somaxconn"],
    )
    .unwrap();
    let k = c.kubectl();
    let image = node.images.busybox.clone();
    let pod = |name: &str, sysctls: Value| {
        json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"nodeName": "node-a", "terminationGracePeriodSeconds": 0,
                "securityContext": {"sysctls": sysctls},
                "containers": [{"name": "c", "image": image, "command": ["sleep", "3600"]}]}
        })
    };
    // Safe sysctls and the unsafe ones the kubelet allows reach the pod's namespaces.
    apply(
        &k,
        &pod(
            "tuned",
            json!([
                {"name": "kernel.shm_rmid_forced", "value": "1"},
                {"name": "net.ipv4.tcp_syncookies", "value": "0"},
                {"name": "kernel.msgmax", "value": "12345"},
                {"name": "net/core/somaxconn", "value": "321"}
            ]),
        ),
    );
    // One it does not allow: the pod is rejected before anything of it runs.
    apply(
        &k,
        &pod(
            "refused",
            json!([{"name": "kernel.sem", "value": "250 32000 32 128"}]),
        ),
    );

    let p = wait_pod(&node, &k, "tuned", "Running", running);
    for (file, want) in [
        ("/proc/sys/kernel/shm_rmid_forced", "1"),
        ("/proc/sys/net/ipv4/tcp_syncookies", "0"),
        ("/proc/sys/kernel/msgmax", "12345"),
        ("/proc/sys/net/core/somaxconn", "321"),
    ] {
        let (code, got) = node.exec_in(&p, &["cat", file]).await;
        assert_eq!((code, got.trim()), (0, want), "{file}");
    }

    let p = wait_pod(&node, &k, "refused", "Failed", |p| {
        p["status"]["phase"] == "Failed"
    });
    assert_eq!(p["status"]["reason"], "SysctlForbidden", "{p}");
    assert_eq!(
        p["status"]["message"],
        r#"Pod was rejected: forbidden sysctl: "kernel.sem" not allowlisted"#
    );
    assert!(p["status"].get("containerStatuses").is_none(), "{p}");
    let events = k.json(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=refused",
        "-o",
        "json",
    ]);
    assert!(
        events["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["reason"] == "SysctlForbidden"
                && e["type"] == "Warning"
                && e["message"] == r#"forbidden sysctl: "kernel.sem" not allowlisted"#),
        "{events}"
    );
    let get = k.ok(&["get", "pod", "refused"]);
    assert!(get.contains("SysctlForbidden"), "{get}");
    // Deleting it works as for any finished pod.
    k.ok(&["delete", "pod", "refused", "--timeout=60s"]);
}

#[tokio::test]
async fn read_only_root_filesystem_refuses_writes_but_volumes_stay_writable() {
    let c = Cluster::start().await.unwrap();
    let node = Node::start(&c.api.kubeconfig, "node-a", &[]).unwrap();
    let k = c.kubectl();
    let image = node.images.busybox.clone();
    apply(
        &k,
        &json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "ro"},
            "spec": {
                "nodeName": "node-a",
                "terminationGracePeriodSeconds": 0,
                "volumes": [{"name": "scratch", "emptyDir": {}}],
                "containers": [{
                    "name": "c", "image": image, "command": ["sleep", "3600"],
                    // Root, so that only the read-only root can refuse the write.
                    "securityContext": {"readOnlyRootFilesystem": true, "runAsUser": 0},
                    "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}]
                }, {
                    "name": "privileged", "image": image, "command": ["sleep", "3600"],
                    "securityContext": {"readOnlyRootFilesystem": true, "privileged": true}
                }]
            }
        }),
    );
    let p = wait_pod(&node, &k, "ro", "Running", running);
    let privileged = json!({"status": {"containerStatuses": [
        status_of(&p, "containerStatuses", "privileged")
    ]}});
    let (code, out) = node
        .exec_in(&privileged, &["sh", "-c", "echo x > /x"])
        .await;
    assert_ne!(
        code, 0,
        "a write to / of a privileged container succeeded: {out}"
    );
    let (code, out) = node.exec_in(&p, &["sh", "-c", "echo x > /x"]).await;
    assert_ne!(code, 0, "a write to / succeeded: {out}");
    assert!(out.contains("Read-only file system"), "{out}");
    let (code, out) = node.exec_in(&p, &["sh", "-c", "echo x > /tmp/x"]).await;
    assert_ne!(code, 0, "a write to /tmp succeeded: {out}");
    let (code, out) = node
        .exec_in(&p, &["sh", "-c", "echo x > /scratch/x && cat /scratch/x"])
        .await;
    assert_eq!((code, out.as_str()), (0, "x\n"));
    // The termination message file stays writable too.
    let (code, out) = node
        .exec_in(&p, &["sh", "-c", "echo bye > /dev/termination-log"])
        .await;
    assert_eq!(code, 0, "{out}");
    // The runtime's spec for the container says so.
    let id = p["status"]["containerStatuses"][0]["containerID"]
        .as_str()
        .unwrap()
        .trim_start_matches("containerd://")
        .to_string();
    let spec_file = walk(&node.ctrd.dir.join("state"))
        .into_iter()
        .find(|f| f.ends_with(format!("{id}/config.json")))
        .expect("the container's OCI spec");
    let spec: Value = serde_json::from_slice(&std::fs::read(spec_file).unwrap()).unwrap();
    assert_eq!(spec["root"]["readonly"], true, "{}", spec["root"]);
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(path),
                Ok(t) if t.is_file() => out.push(path),
                _ => {}
            }
        }
    }
    out
}
