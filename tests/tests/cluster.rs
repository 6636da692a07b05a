//! The docker-compose cluster (`deploy/cluster.sh`), brought up by the test under a project
//! name, ports and Docker network of its own and removed afterwards, even on failure: three
//! etcd members, two API servers behind a load balancer, two schedulers and two controller
//! managers electing leaders, a registry and three nodes in zones a, b and c, every component
//! under its own identity (the nodes' through CSRs). Checked as a
//! user sees it, then with faults — each recovery waited for with a deadline and its time
//! reported.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use skiff_e2e::compose::{deployment, zone_of, Cluster, Options};
use skiff_e2e::pki::TestCa;

/// Waits for namespace `ns`'s `default` ServiceAccount (pods are refused until it exists).
fn wait_for_default_account(c: &Cluster, ns: &str) {
    c.wait(
        &format!("the default ServiceAccount of {ns}"),
        Duration::from_secs(30),
        || {
            c.kubectl(&["get", "serviceaccount", "default", "-n", ns])
                .map(drop)
        },
    );
}

/// The SDK's `admission_validator` example runs as a pod behind a Service, its serving
/// certificate in a mounted Secret; a ValidatingWebhookConfiguration sends it the pods of
/// namespaces labelled `webhook=require-app`. Each API server calls it at the pod's IP (on
/// whichever node it landed), and a pod without the label is refused through the load
/// balancer with the webhook's message, as kubectl shows it. Removed afterwards.
fn a_validating_webhook_pod_guards_a_namespace(c: &Cluster) {
    const NS: &str = "webhooks";
    const NAME: &str = "require-app";
    const GUARDED: &str = "guarded";
    let bin = skiff_e2e::bin_dir().join("examples/admission_validator");
    assert!(
        bin.exists(),
        "{} is built (cargo build -p skiff-client --examples)",
        bin.display()
    );
    let image = c.push_image(
        &skiff::images::binary_image(&bin).unwrap(),
        "skiff/admission-validator",
        "1",
    );
    let ca = TestCa::new("cluster-test-webhook-ca");
    let (cert, key) = ca.serving(&[&format!("{NAME}.{NS}.svc")]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tls.crt"), cert).unwrap();
    std::fs::write(dir.path().join("tls.key"), key).unwrap();
    c.apply(
        &serde_json::json!({"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}},
            {"apiVersion": "v1", "kind": "Namespace",
             "metadata": {"name": GUARDED, "labels": {"webhook": NAME}}}]})
        .to_string(),
    );
    wait_for_default_account(c, NS);
    wait_for_default_account(c, GUARDED);
    c.k(&[
        "create",
        "secret",
        "tls",
        &format!("{NAME}-tls"),
        "-n",
        NS,
        &format!("--cert={}", dir.path().join("tls.crt").display()),
        &format!("--key={}", dir.path().join("tls.key").display()),
    ]);
    c.apply(
        &serde_json::json!({"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "Pod",
             "metadata": {"name": NAME, "namespace": NS, "labels": {"app": NAME}},
             "spec": {"terminationGracePeriodSeconds": 2, "containers": [{
                "name": "webhook", "image": image,
                "args": ["--required-label=app", "--cert-dir=/etc/webhook/certs", "--secure-port=8443"],
                "ports": [{"containerPort": 8443}],
                "readinessProbe": {"httpGet": {"scheme": "HTTPS", "path": "/healthz", "port": 8443},
                                   "periodSeconds": 1},
                "volumeMounts": [{"name": "certs", "mountPath": "/etc/webhook/certs", "readOnly": true}]}],
              "volumes": [{"name": "certs", "secret": {"secretName": format!("{NAME}-tls")}}]}},
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": NAME, "namespace": NS},
             "spec": {"selector": {"app": NAME}, "ports": [{"port": 443, "targetPort": 8443}]}}]})
        .to_string(),
    );
    c.wait(
        "the webhook's pod a ready endpoint of its Service",
        Duration::from_secs(120),
        || {
            let slices = c.json(&[
                "get",
                "endpointslices",
                "-n",
                NS,
                "-l",
                &format!("kubernetes.io/service-name={NAME}"),
            ]);
            let ready = slices["items"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
                .any(|e| e["conditions"]["ready"] == true);
            ready.then_some(()).ok_or(slices.to_string())
        },
    );
    let bundle = ca.bundle();
    c.apply(
        &serde_json::json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": NAME},
            "webhooks": [{
                "name": "require-app.example.skiff.dev",
                "clientConfig": {"service": {"namespace": NS, "name": NAME, "path": "/validate"},
                                 "caBundle": bundle},
                "rules": [{"operations": ["CREATE", "UPDATE"], "apiGroups": [""],
                           "apiVersions": ["v1"], "resources": ["pods"]}],
                "namespaceSelector": {"matchLabels": {"webhook": NAME}},
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "failurePolicy": "Fail",
                "timeoutSeconds": 5}]})
        .to_string(),
    );
    let denial = "admission webhook \"require-app.example.skiff.dev\" denied the request: \
                  pods must have the label \"app\"";
    let busybox = "--image=registry:5000/skiff/busybox";
    // Each API server on its own: a server-side dry run is refused by the webhook once that
    // server has the configuration and reaches the pod.
    for api in ["apiserver-1", "apiserver-2"] {
        c.wait(
            &format!("{api} calls the webhook"),
            Duration::from_secs(60),
            || match c.kubectl_at(
                api,
                &["run", "probe", "-n", GUARDED, busybox, "--dry-run=server"],
            ) {
                Err(e) if e.contains(denial) => Ok(()),
                other => Err(format!("{other:?}")),
            },
        );
    }
    // Through the load balancer, as a user: refused, and nothing stored; with the label,
    // created.
    let refused = c
        .kubectl(&[
            "run", "nolabel", "-n", GUARDED, busybox, "--", "sleep", "3600",
        ])
        .expect_err("a pod without the label is refused");
    assert_eq!(
        refused,
        format!("Error from server (Forbidden): {denial}\n")
    );
    let gone = c.kubectl(&["get", "pod", "nolabel", "-n", GUARDED]);
    assert!(
        gone.as_ref().is_err_and(|e| e.contains("NotFound")),
        "{gone:?}"
    );
    assert_eq!(
        c.k(&[
            "run",
            "labelled",
            "-n",
            GUARDED,
            busybox,
            "--labels=app=labelled",
            "--",
            "sleep",
            "3600"
        ]),
        "pod/labelled created"
    );
    c.k(&["delete", "validatingwebhookconfiguration", NAME]);
    c.k(&["delete", "namespace", GUARDED, NS, "--wait=false"]);
}

/// Whether six web pods run, none of them on `node`.
/// A `ReadWriteMany` claim of the `shared` class (the nodes' common Docker volume, through the
/// `shared.csi.skiff.dev` driver): a pod on node-a writes, a pod on node-b reads it and
/// writes back, and node-a's pod reads that.
fn a_shared_claim_is_read_and_written_on_two_nodes(c: &Cluster) {
    c.apply(
        &serde_json::json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": "common"},
            "spec": {"storageClassName": "shared", "accessModes": ["ReadWriteMany"],
                     "resources": {"requests": {"storage": "8Mi"}}}})
        .to_string(),
    );
    let pod = |name: &str, node: &str| {
        serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"nodeSelector": {"kubernetes.io/hostname": node},
                     "terminationGracePeriodSeconds": 1,
                     "containers": [{"name": "c", "image": "registry:5000/skiff/busybox",
                        "command": ["sleep", "3600"],
                        "volumeMounts": [{"name": "d", "mountPath": "/shared"}]}],
                     "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "common"}}]}})
        .to_string()
    };
    c.apply(&pod("rwx-a", "node-a"));
    c.apply(&pod("rwx-b", "node-b"));
    for p in ["rwx-a", "rwx-b"] {
        c.wait(&format!("{p} Ready"), Duration::from_secs(90), || {
            c.kubectl(&[
                "wait",
                "--for=condition=Ready",
                &format!("pod/{p}"),
                "--timeout=5s",
            ])
            .map(|_| ())
        });
    }
    let claim = c.json(&["get", "pvc", "common"]);
    assert_eq!(claim["status"]["phase"], "Bound", "{claim}");
    assert_eq!(claim["status"]["accessModes"][0], "ReadWriteMany");
    c.k(&[
        "exec",
        "rwx-a",
        "--",
        "sh",
        "-c",
        "echo from-a > /shared/note",
    ]);
    assert_eq!(
        c.k(&["exec", "rwx-b", "--", "cat", "/shared/note"]),
        "from-a"
    );
    c.k(&[
        "exec",
        "rwx-b",
        "--",
        "sh",
        "-c",
        "echo from-b >> /shared/note",
    ]);
    assert_eq!(
        c.k(&["exec", "rwx-a", "--", "cat", "/shared/note"]),
        "from-a\nfrom-b"
    );
    c.k(&["delete", "pod", "rwx-a", "rwx-b", "--wait=false"]);
}

fn six_web_pods_off(c: &Cluster, node: &str) -> Result<(), String> {
    let pods = c.running("web");
    let elsewhere = pods.iter().filter(|p| p.node != node).count();
    (elsewhere == 6).then_some(()).ok_or(format!("{pods:?}"))
}

#[test]
fn compose_cluster_spreads_serves_and_recovers_from_faults() {
    let c = Cluster::up(Options::default());
    eprintln!("up → three nodes Ready: {:.1} s", c.up_seconds);
    let nodes = c.json(&["get", "nodes"]);
    let zones: Vec<String> = nodes["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            n["metadata"]["labels"]["topology.kubernetes.io/zone"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    assert_eq!(zones, ["a", "b", "c"]);
    // Each node joined with the bootstrap token through CSRs, approved and issued: its
    // kubelet's (`system:node:NAME`), and its proxy's (`system:kube-proxy`) and CSI
    // drivers' (`system:skiff-csi`) under the client signer.
    let csrs = c.json(&["get", "csr"]);
    for (signer, per_node) in [
        ("kubernetes.io/kube-apiserver-client-kubelet", 1),
        ("kubernetes.io/kube-apiserver-client", 2),
    ] {
        let issued = csrs["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["spec"]["signerName"] == signer)
            .filter(|r| {
                r["spec"]["username"]
                    .as_str()
                    .is_some_and(|u| u.starts_with("system:bootstrap:"))
            })
            .filter(|r| r["status"]["conditions"][0]["type"] == "Approved")
            .filter(|r| r["status"]["certificate"].is_string())
            .count();
        assert_eq!(issued, 3 * per_node, "{signer}: {csrs}");
    }

    // A ServiceAccount token made through the load balancer is good at either API server
    // (they sign and check with one key), as the pods' tokens must be.
    let token = c.k(&["create", "token", "default"]);
    for api in ["apiserver-1", "apiserver-2"] {
        let who = c
            .kubectl_token_at(
                api,
                &token,
                &[
                    "auth",
                    "whoami",
                    "-o",
                    "jsonpath={.status.userInfo.username}",
                ],
            )
            .unwrap_or_else(|e| panic!("the token at {api}: {e}"));
        assert_eq!(who, "system:serviceaccount:default:default", "{api}");
    }

    // Secrets are encrypted in etcd through each API server's KMS plugin (same keys), and
    // read back in clear through the load balancer, whichever API server answers.
    c.k(&[
        "create",
        "secret",
        "generic",
        "at-rest",
        "--from-literal=password=hunter2-cluster",
    ]);
    let stored = c.docker(&[
        "exec",
        &c.container("etcd-1"),
        "etcdctl",
        "get",
        "/registry/secrets/default/at-rest",
        "--print-value-only",
    ]);
    assert!(stored.starts_with("k8s:enc:kms:v2:skiff-kms:"), "{stored}");
    assert!(!stored.contains("hunter2-cluster"), "{stored}");
    for _ in 0..4 {
        let s = c.json(&["get", "secret", "at-rest"]);
        assert_eq!(s["data"]["password"], "aHVudGVyMi1jbHVzdGVy", "{s}");
    }

    // Six replicas, spread over the zones: two in each.
    let image = "registry:5000/skiff/httpd";
    c.apply(&deployment("web", image, 6, true));
    let rollout = c.wait("web's 6 replicas Running", Duration::from_secs(120), || {
        let pods = c.running("web");
        (pods.len() == 6).then_some(()).ok_or(format!("{pods:?}"))
    });
    eprintln!("6 replicas Running across 3 nodes in {rollout:?}");
    for zone in ["a", "b", "c"] {
        let n = c
            .running("web")
            .iter()
            .filter(|p| zone_of(&p.node) == zone)
            .count();
        assert_eq!(n, 2, "zone {zone}: {:?}", c.running("web"));
    }

    // A pod on node a reaches a Service whose pods are on nodes b and c, by name.
    c.apply(
        &serde_json::json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "bc"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "bc"}},
                "template": {"metadata": {"labels": {"app": "bc"}},
                    "spec": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [{"matchExpressions": [{"key": "topology.kubernetes.io/zone",
                            "operator": "In", "values": ["b", "c"]}]}]}}},
                        "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                            "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "bc"}}}],
                        "containers": [{"name": "web", "image": image}]}}}})
        .to_string(),
    );
    c.k(&["expose", "deployment", "bc", "--port=80"]);
    c.k(&[
        "run",
        "client",
        "--image=registry:5000/skiff/busybox",
        "--overrides={\"spec\":{\"nodeName\":\"node-a\"}}",
        "--",
        "sleep",
        "3600",
    ]);
    c.wait("client and bc Ready", Duration::from_secs(120), || {
        c.kubectl(&[
            "wait",
            "--for=condition=Ready",
            "pod/client",
            "--timeout=2s",
        ])?;
        let bc = c.running("bc");
        let mut zones: Vec<&str> = bc.iter().map(|p| zone_of(&p.node)).collect();
        zones.sort();
        (zones == ["b", "c"]).then_some(()).ok_or(format!("{bc:?}"))
    });
    let bc_pods: BTreeSet<String> = c
        .running("bc")
        .into_iter()
        .map(|p| format!("Hello from Skiff: pod {}", p.name))
        .collect();
    let mut answered = BTreeSet::new();
    c.wait(
        "both bc pods answer by name from node a",
        Duration::from_secs(60),
        || {
            let page = c.kubectl(&[
                "exec",
                "client",
                "--",
                "timeout",
                "5",
                "wget",
                "-q",
                "-O",
                "-",
                "http://bc.default.svc.cluster.local/",
            ])?;
            answered.insert(page.trim().to_string());
            (answered == bc_pods)
                .then_some(())
                .ok_or(format!("{answered:?}"))
        },
    );

    // Both API servers reach pods on every node by their own IPs (as they reach webhooks
    // behind Services, at their endpoints) and Services by their ClusterIPs, through the
    // proxy that runs in each API server's container.
    let bc_ip = c.k(&["get", "service", "bc", "-o", "jsonpath={.spec.clusterIP}"]);
    for api in ["apiserver-1", "apiserver-2"] {
        c.wait(
            &format!("{api} reaches a web pod on every node and bc's ClusterIP"),
            Duration::from_secs(30),
            || {
                let mut nodes = BTreeSet::new();
                for p in c.running("web") {
                    let page = c.http_get_from(api, &format!("{}:80", p.ip))?;
                    if page != format!("Hello from Skiff: pod {}", p.name) {
                        return Err(format!("{} on {}: {page:?}", p.ip, p.node));
                    }
                    nodes.insert(p.node);
                }
                if nodes.len() != 3 {
                    return Err(format!("web pods on {nodes:?} only"));
                }
                let page = c.http_get_from(api, &format!("{bc_ip}:80"))?;
                bc_pods
                    .contains(&page)
                    .then_some(())
                    .ok_or(format!("bc at {bc_ip}: {page:?}"))
            },
        );
    }
    a_validating_webhook_pod_guards_a_namespace(&c);
    a_shared_claim_is_read_and_written_on_two_nodes(&c);

    // kubectl logs and exec reach pods on every node: each web pod's log shows the
    // readiness probes' requests, and the bc pods' logs the client's.
    let mut reached = BTreeSet::new();
    for p in c.running("web").into_iter().chain(c.running("bc")) {
        assert_eq!(
            c.k(&["exec", &p.name, "--", "hostname"]),
            p.name,
            "exec on {}",
            p.node
        );
        let log = c.k(&["logs", &p.name]);
        assert!(
            log.contains("url:/"),
            "logs of {} on {}: {log:?}",
            p.name,
            p.node
        );
        reached.insert(p.node);
    }
    assert_eq!(reached.len(), 3, "{reached:?}");

    // The leading scheduler and controller manager killed: the standbys take over, and
    // scheduling and the controllers go on.
    let scheduler = c.leader("kube-scheduler");
    let cm = c.leader("kube-controller-manager");
    assert!(scheduler.starts_with("scheduler-"), "{scheduler}");
    assert!(cm.starts_with("controller-manager-"), "{cm}");
    c.docker(&["kill", &c.container(&scheduler)]);
    c.docker(&["kill", &c.container(&cm)]);
    let takeover = c.wait("the standbys to lead", Duration::from_secs(60), || {
        let (s, m) = (
            c.leader("kube-scheduler"),
            c.leader("kube-controller-manager"),
        );
        (s != scheduler && m != cm)
            .then_some(())
            .ok_or(format!("{s} {m}"))
    });
    eprintln!("standby scheduler and controller manager lead after {takeover:?}");
    c.k(&["scale", "deployment", "web", "--replicas=9"]);
    c.wait(
        "web scaled to 9 by the new leaders",
        Duration::from_secs(90),
        || {
            let n = c.running("web").len();
            (n == 9).then_some(()).ok_or(format!("{n} running"))
        },
    );
    c.docker(&["start", &c.container(&scheduler)]);
    c.docker(&["start", &c.container(&cm)]);

    // One etcd member stopped: reads and writes go on.
    c.docker(&["stop", &c.container("etcd-2")]);
    c.k(&[
        "create",
        "configmap",
        "during-etcd-fault",
        "--from-literal=k=v",
    ]);
    assert_eq!(
        c.k(&[
            "get",
            "configmap",
            "during-etcd-fault",
            "-o",
            "jsonpath={.data.k}"
        ]),
        "v"
    );
    c.docker(&["start", &c.container("etcd-2")]);

    // One API server stopped: kubectl through the load-balanced address keeps working.
    c.docker(&["stop", &c.container("apiserver-1")]);
    let during = Instant::now();
    for i in 0..10 {
        c.k(&[
            "create",
            "configmap",
            &format!("during-api-fault-{i}"),
            "--from-literal=k=v",
        ]);
        c.k(&["get", "nodes"]);
    }
    eprintln!(
        "one API server stopped: 10 creates and 10 lists through the load balancer in {:?}",
        during.elapsed()
    );
    // It stopped gracefully, its proxy's rules and routes removed on the way out.
    assert_eq!(
        c.docker(&[
            "inspect",
            "-f",
            "{{.State.ExitCode}}",
            &c.container("apiserver-1")
        ]),
        "0"
    );
    let log = c.docker_logs("apiserver-1");
    assert!(log.contains("rules and routes removed"), "{log}");
    c.docker(&["start", &c.container("apiserver-1")]);

    // Node b cut off from the network and healed: its pods are replaced elsewhere, and once
    // it is back the cluster converges to 6 pods, each running once.
    c.k(&["scale", "deployment", "web", "--replicas=6"]);
    c.wait("web back to 6", Duration::from_secs(60), || {
        let n = c.running("web").len();
        (n == 6).then_some(()).ok_or(format!("{n} running"))
    });
    let network = c.network();
    let node_b = c.container("node-b");
    let ip_b = c.docker(&[
        "inspect",
        "-f",
        &format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}"),
        &node_b,
    ]);
    c.docker(&["network", "disconnect", &network, &node_b]);
    let cut = c.wait("node-b NotReady", Duration::from_secs(60), || {
        let s = c.ready("node-b");
        (s != "True").then_some(()).ok_or(s)
    });
    let replaced = c.wait(
        "node-b's pods replaced on a and c",
        Duration::from_secs(90),
        || six_web_pods_off(&c, "node-b"),
    );
    eprintln!("partition: node-b NotReady after {cut:?}, its pods replaced {replaced:?} later");
    c.docker(&["network", "connect", "--ip", &ip_b, &network, &node_b]);
    c.wait(
        "node-b Ready again, 6 web pods each once",
        Duration::from_secs(120),
        || {
            let s = c.ready("node-b");
            let pods = c.json(&["get", "pods", "-l", "app=web"]);
            let all = pods["items"].as_array().unwrap().len();
            (s == "True" && all == 6)
                .then_some(())
                .ok_or(format!("ready={s} pods={all}"))
        },
    );

    // Node c stopped: NotReady, its pods replaced on the others; the time is reported.
    let stopped = Instant::now();
    c.docker(&["stop", &c.container("node-c")]);
    c.wait("node-c NotReady", Duration::from_secs(60), || {
        let s = c.ready("node-c");
        (s != "True").then_some(()).ok_or(s)
    });
    let not_ready = stopped.elapsed();
    c.wait("node-c's pods replaced", Duration::from_secs(120), || {
        six_web_pods_off(&c, "node-c")
    });
    eprintln!(
        "node loss: node-c NotReady {not_ready:?} and its pods Running elsewhere {:?} after it stopped",
        stopped.elapsed()
    );
}
