//! Two real nodes, each in a network namespace of its own (containerd, kubelet and
//! skiff-proxy inside), on a LAN the test sits on too; the control plane (etcd, API server,
//! scheduler, controller manager) in the test's namespace; the cluster DNS running in the
//! cluster as a Deployment behind `kube-system/kube-dns`. What a user of a real cluster
//! sees: pods reaching each other across nodes by pod IP, by Service and by name; `kubectl
//! expose` giving working ClusterIP, NodePort and LoadBalancer services; traffic policies;
//! `kubectl exec` and `logs` on every node.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use skiff::{addons, images};
use skiff_e2e::netnode::{Lan, NetNode, CLUSTER_DNS};
use skiff_e2e::node::Images;
use skiff_e2e::{eventually_ok as eventually, Cluster, Daemon, Kubectl};

/// `kubectl exec POD -- args`: its output, or what went wrong.
fn exec(k: &Kubectl, pod: &str, args: &[&str]) -> Result<String, String> {
    let mut full = vec!["exec", pod, "--"];
    full.extend_from_slice(args);
    let r = k.run(&full);
    if r.status.success() {
        Ok(r.stdout.trim().to_string())
    } else {
        Err(format!("{}{}", r.stdout, r.stderr))
    }
}

/// An HTTP GET from this (the test's) namespace, a client outside the cluster on the LAN.
fn get_from_lan(url: &str) -> Result<String, String> {
    // (Not wget's own -T: this busybox's wget crashes with it.)
    skiff_e2e::stdout_or_stderr(
        Command::new("busybox").args(["timeout", "5", "busybox", "wget", "-q", "-O", "-", url]),
    )
}

/// `/cgi-bin/who` from the LAN: the pod that answered and the client address it saw (which
/// busybox httpd gives as an IPv4-mapped IPv6 address).
fn who_from_lan(url: &str) -> Result<(String, String), String> {
    let got = get_from_lan(url)?;
    let (pod, addr) = got.split_once(' ').ok_or(got.clone())?;
    let addr = addr.trim_matches(['[', ']']).trim_start_matches("::ffff:");
    Ok((pod.to_string(), addr.to_string()))
}

/// Asks `ask` eight times until every answer is `want` (and nothing failed).
fn only_answer<T: Ord + std::fmt::Debug>(
    what: &str,
    want: T,
    mut ask: impl FnMut() -> Result<T, String>,
    logs: impl Fn() -> String,
) {
    eventually(
        what,
        Duration::from_secs(10),
        || {
            let seen: Vec<Result<T, String>> = (0..8).map(|_| ask()).collect();
            seen.iter()
                .all(|s| s.as_ref() == Ok(&want))
                .then_some(())
                .ok_or(format!("{seen:?}"))
        },
        logs,
    );
}

/// The web server: answers `/` with its pod name and `/cgi-bin/who` with its pod name and
/// the client address it sees.
fn web_deployment(image: &str) -> Value {
    let script = "mkdir -p /www/cgi-bin && echo \"$POD_NAME\" > /www/index.html && \
        printf '%s\\n' '#!/bin/sh' 'echo Content-Type: text/plain' 'echo' \
        'echo \"$POD_NAME $REMOTE_ADDR\"' > /www/cgi-bin/who && chmod +x /www/cgi-bin/who && \
        echo \"serving $POD_NAME\" && exec httpd -f -p 8080 -h /www";
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    // One on each node.
                    "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                        {"labelSelector": {"matchLabels": {"app": "web"}},
                         "topologyKey": "kubernetes.io/hostname"}]}},
                    "containers": [{
                        "name": "web", "image": image,
                        "command": ["sh", "-c", script],
                        "env": [{"name": "POD_NAME",
                                 "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                        "ports": [{"containerPort": 8080}],
                        "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
                    }],
                },
            },
        },
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pods_on_two_nodes_reach_each_other_by_pod_ip_service_and_name() {
    // Pods run as their ServiceAccounts, as in any cluster: the cluster DNS reads the API with
    // its own token.
    let c = Cluster::start_with(&["--enable-admission-plugins=ServiceAccount"])
        .await
        .unwrap();
    let images = Images::start().unwrap();
    let _scheduler = Daemon::start("skiff-scheduler", &c.api, &["--port=0"]).unwrap();
    let _controllers = Daemon::start("skiff-controller-manager", &c.api, &[]).unwrap();
    let lan = Lan::new().unwrap();
    let a = NetNode::start(
        &c.api,
        &images,
        &lan,
        "node-a",
        1,
        &["--node-labels=topology.kubernetes.io/zone=a"],
    )
    .unwrap();
    let b = NetNode::start(
        &c.api,
        &images,
        &lan,
        "node-b",
        2,
        &["--node-labels=topology.kubernetes.io/zone=b"],
    )
    .unwrap();
    let logs = || format!("{}\n{}", a.logs(), b.logs());
    let k = c.kubectl();
    eventually(
        "both nodes Ready",
        Duration::from_secs(60),
        || {
            let r = k.run(&[
                "wait",
                "--for=condition=Ready",
                "node/node-a",
                "node/node-b",
                "--timeout=5s",
            ]);
            r.status.success().then_some(()).ok_or(r.stderr)
        },
        logs,
    );
    for n in [&a, &b] {
        let node = k.json(&["get", "node", &n.name, "-o", "json"]);
        assert_eq!(node["spec"]["podCIDR"], n.pod_cidr.as_str());
        let ips: Vec<&str> = node["status"]["addresses"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["type"] == "InternalIP")
            .filter_map(|a| a["address"].as_str())
            .collect();
        assert_eq!(ips, [n.ip.as_str()]);
    }

    // The cluster DNS, from an image of the skiff-dns binary pushed to the registry.
    let dns_binary = skiff_e2e::binary("skiff-dns").unwrap();
    let dns_image = images
        .registry
        .push(&images::binary_image(&dns_binary).unwrap(), "skiff/dns:1")
        .unwrap();
    // It runs as its ServiceAccount, reaching the API server where node-a's kubeconfig does.
    let server = skiff_client::Config::from_kubeconfig_str(&a.kubeconfig_text().unwrap(), None)
        .unwrap()
        .server;
    for item in addons::cluster_dns(&dns_image, CLUSTER_DNS, &server) {
        k.ok_input(&["apply", "-f", "-"], &item.to_string());
    }
    k.ok_input(
        &["apply", "-f", "-"],
        &web_deployment(&images.busybox).to_string(),
    );
    k.ok_input(
        &["apply", "-f", "-"],
        &json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "client"},
            "spec": {"nodeSelector": {"kubernetes.io/hostname": "node-a"},
                     "terminationGracePeriodSeconds": 0,
                     "containers": [{"name": "c", "image": images.busybox,
                                     "command": ["sleep", "3600"]}]}})
        .to_string(),
    );
    for (what, args) in [
        (
            "web rolled out",
            &["rollout", "status", "deployment/web", "--timeout=5s"][..],
        ),
        (
            "skiff-dns rolled out",
            &[
                "rollout",
                "status",
                "-n",
                "kube-system",
                "deployment/skiff-dns",
                "--timeout=5s",
            ],
        ),
        (
            "the client Ready",
            &[
                "wait",
                "--for=condition=Ready",
                "pod/client",
                "--timeout=5s",
            ],
        ),
    ] {
        eventually(
            what,
            Duration::from_secs(120),
            || {
                let r = k.run(args);
                r.status.success().then_some(()).ok_or(r.stderr)
            },
            logs,
        );
    }

    // One web pod on each node.
    let pods = k.json(&["get", "pods", "-l", "app=web", "-o", "json"]);
    let web: BTreeMap<String, (String, String)> = pods["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["spec"]["nodeName"].as_str().unwrap().to_string(),
                (
                    p["metadata"]["name"].as_str().unwrap().to_string(),
                    p["status"]["podIP"].as_str().unwrap().to_string(),
                ),
            )
        })
        .collect();
    assert_eq!(
        web.keys().map(String::as_str).collect::<Vec<_>>(),
        ["node-a", "node-b"],
        "{pods}"
    );
    let (web_a, ip_a) = &web["node-a"];
    let (web_b, ip_b) = &web["node-b"];
    assert!(ip_a.starts_with("10.244.1.") && ip_b.starts_with("10.244.2."));

    // By pod IP, across nodes, both ways (the proxies route each other's pod CIDRs).
    let url = |host: &str, port: u16, path: &str| format!("http://{host}:{port}{path}");
    let wget =
        |pod: &str, url: &str| exec(&k, pod, &["timeout", "5", "wget", "-q", "-O", "-", url]);
    let got = eventually(
        "node-a's client reaches node-b's pod by its IP",
        Duration::from_secs(20),
        || wget("client", &url(ip_b, 8080, "/")),
        logs,
    );
    assert_eq!(&got, web_b);
    assert_eq!(&wget(web_b, &url(ip_a, 8080, "/")).unwrap(), web_a);
    // Without address translation: node-b's pod sees the client pod's own address.
    let client_ip = k.ok(&["get", "pod", "client", "-o", "jsonpath={.status.podIP}"]);
    assert_eq!(
        wget("client", &url(ip_b, 8080, "/cgi-bin/who")).unwrap(),
        format!("{web_b} [::ffff:{client_ip}]")
    );

    // kubectl exposes the Deployment: a ClusterIP service spread over both nodes' pods.
    k.ok(&[
        "expose",
        "deployment",
        "web",
        "--port=80",
        "--target-port=8080",
    ]);
    let vip = k.ok(&["get", "service", "web", "-o", "jsonpath={.spec.clusterIP}"]);
    let both: BTreeSet<String> = [web_a.clone(), web_b.clone()].into();
    eventually(
        "the service reaches both pods",
        Duration::from_secs(20),
        || {
            let seen: BTreeSet<String> = (0..12)
                .filter_map(|_| wget("client", &url(&vip, 80, "/")).ok())
                .collect();
            (seen == both).then_some(()).ok_or(format!("{seen:?}"))
        },
        logs,
    );

    // Names, through skiff-dns behind kube-dns: the full name, the short one through the
    // pod's search path, and NXDOMAIN for a name that does not exist.
    let looked_up = eventually(
        "the client resolves web.default.svc.cluster.local",
        Duration::from_secs(30),
        || {
            let out = exec(&k, "client", &["nslookup", "web.default.svc.cluster.local"])?;
            out.contains(&vip).then_some(out.clone()).ok_or(out)
        },
        logs,
    );
    assert!(looked_up.contains(CLUSTER_DNS), "{looked_up}");
    // From the other node too: one of the two asks a DNS server on its own node, the other
    // one across the LAN.
    let from_b = eventually(
        "node-b's pod resolves the name",
        Duration::from_secs(10),
        || exec(&k, web_b, &["nslookup", "web.default.svc.cluster.local"]),
        logs,
    );
    assert!(from_b.contains(&vip), "{from_b}");
    for name in ["web.default.svc.cluster.local", "web"] {
        let got = eventually(
            &format!("wget http://{name}/ from the client"),
            Duration::from_secs(10),
            || wget("client", &format!("http://{name}/")),
            logs,
        );
        assert!(both.contains(&got), "{got}");
    }
    let missing = exec(
        &k,
        "client",
        &["nslookup", "nope.default.svc.cluster.local"],
    )
    .unwrap_err();
    assert!(missing.contains("NXDOMAIN"), "{missing}");

    // internalTrafficPolicy: Local keeps the client's traffic on its own node.
    k.ok(&[
        "patch",
        "service",
        "web",
        "-p",
        r#"{"spec":{"internalTrafficPolicy":"Local"}}"#,
    ]);
    only_answer(
        "only node-a's pod answers node-a's client",
        web_a.clone(),
        || wget("client", &url(&vip, 80, "/")),
        logs,
    );

    // NodePort, reached from the LAN on either node's address: with the default policy the
    // client's address is masqueraded; with externalTrafficPolicy Local only the node's
    // own pod answers, and it sees the client's real address.
    k.ok(&[
        "expose",
        "deployment",
        "web",
        "--name=web-np",
        "--port=80",
        "--target-port=8080",
        "--type=NodePort",
    ]);
    let node_port = k.ok(&[
        "get",
        "service",
        "web-np",
        "-o",
        "jsonpath={.spec.ports[0].nodePort}",
    ]);
    let node_port: u16 = node_port.parse().unwrap();
    let client = lan.address();
    for n in [&a, &b] {
        let (pod, seen_from) = eventually(
            &format!("the node port answers on {}", n.name),
            Duration::from_secs(20),
            || who_from_lan(&url(&n.ip, node_port, "/cgi-bin/who")),
            logs,
        );
        assert!(both.contains(&pod), "{pod}");
        assert!(seen_from.starts_with("10.244.") || seen_from.starts_with(&lan.prefix));
        assert_ne!(seen_from, client, "masqueraded under the Cluster policy");
    }
    k.ok(&[
        "patch",
        "service",
        "web-np",
        "-p",
        r#"{"spec":{"externalTrafficPolicy":"Local"}}"#,
    ]);
    for (n, own) in [(&a, web_a), (&b, web_b)] {
        only_answer(
            &format!("only {}'s pod answers, seeing the client", n.name),
            (own.clone(), client.clone()),
            || who_from_lan(&url(&n.ip, node_port, "/cgi-bin/who")),
            logs,
        );
    }

    // LoadBalancer: the built-in load balancer publishes the nodes' addresses, and the port
    // answers on them.
    k.ok(&[
        "expose",
        "deployment",
        "web",
        "--name=web-lb",
        "--port=8000",
        "--target-port=8080",
        "--type=LoadBalancer",
    ]);
    let ingress = eventually(
        "web-lb gets the nodes' addresses",
        Duration::from_secs(20),
        || {
            let out = k.ok(&[
                "get",
                "service",
                "web-lb",
                "-o",
                "jsonpath={.status.loadBalancer.ingress[*].ip}",
            ]);
            let ips: BTreeSet<String> = out.split_whitespace().map(str::to_string).collect();
            (ips == [a.ip.clone(), b.ip.clone()].into())
                .then_some(ips)
                .ok_or(out)
        },
        logs,
    );
    for ip in &ingress {
        let got = eventually(
            &format!("the load balancer answers on {ip}:8000"),
            Duration::from_secs(20),
            || get_from_lan(&url(ip, 8000, "/")),
            logs,
        );
        assert!(both.contains(&got), "{got}");
    }

    // kubectl reaches the kubelets of both nodes.
    for pod in [web_a, web_b] {
        let log = k.ok(&["logs", pod]);
        assert!(log.contains(&format!("serving {pod}")), "{log}");
        assert_eq!(exec(&k, pod, &["cat", "/www/index.html"]).unwrap(), *pod);
    }
}
