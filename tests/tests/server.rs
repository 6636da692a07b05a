//! `skiff server` and `skiff agent`, run as a user runs them — each inside a network namespace
//! of its own on a LAN the test makes, so etcd, the API server, the registry and the rules
//! are private to the test. The server builds and pushes its own images and starts the
//! cluster DNS; the agent joins with the server's bootstrap token (both nodes get their
//! certificates through CSRs); a Deployment of the example web
//! image is reached through a Service by name from a pod on the agent's node, `kubectl logs`
//! and `exec` reach pods on both nodes; SIGTERM stops every process and removes the rules,
//! routes and pods.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use skiff_e2e::allinone::{kubectl, Skiff};
use skiff_e2e::netnode::Lan;
use skiff_e2e::netns::NetNs;

fn eventually<T>(what: &str, within: Duration, f: impl FnMut() -> Result<T, String>) -> T {
    skiff_e2e::eventually_ok(what, within, f, String::new)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skiff_server_and_agent_run_a_cluster_and_stop_clean() {
    let lan = Lan::new().unwrap();
    let (server_ns, agent_ns) = (NetNs::new("server").unwrap(), NetNs::new("agent").unwrap());
    let server_ip = lan.join(&server_ns, 1).unwrap();
    let agent_ip = lan.join(&agent_ns, 2).unwrap();
    for ns in [&server_ns, &agent_ns] {
        // Service addresses no rule catches are discarded, never routed off the machine.
        ns.discard_service_range("10.96.0.0/12").unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let registry = format!("{server_ip}:5000");
    let mut server = Skiff::start(
        &server_ns,
        dir.path(),
        "server",
        &[
            "--bind-address=0.0.0.0".into(),
            format!("--registry-address={registry}"),
            "--node-name=main".into(),
            format!("--node-ip={server_ip}"),
            "--node-labels=topology.kubernetes.io/zone=a".into(),
        ],
    );
    let kc = dir
        .path()
        .join("server/kubeconfig.yaml")
        .display()
        .to_string();
    let o = eventually(
        "the server prints its KUBECONFIG line",
        Duration::from_secs(90),
        || {
            let o = server.out();
            o.contains(&format!("export KUBECONFIG={kc}"))
                .then_some(o.clone())
                .ok_or(o)
        },
    );
    assert!(
        o.contains(&format!("{registry}/skiff/httpd:latest")),
        "the example image is not announced:\n{o}"
    );
    let server_url = format!("https://{server_ip}:6443");
    assert!(o.contains(&format!("--server={server_url}")), "{o}");

    // Bad tokens are refused by name, before anything starts: a token that is not one, a CA
    // hash that is not the server's (the CA is not trusted, the token never sent), and a
    // well-formed bootstrap token the server does not know (refused by the API server).
    let refused = |token: &str| {
        let out = Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/{}", agent_ns.name))
            .arg(skiff_e2e::binary("skiff").unwrap())
            .args(["agent", &format!("--server={server_url}")])
            .arg(format!("--token={token}"))
            .arg(format!("--data-dir={}", dir.path().join("bad").display()))
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let zeros = "0".repeat(64);
    let token = std::fs::read_to_string(dir.path().join("server/node-token")).unwrap();
    let (hash, secret) = token.trim().split_once("::").unwrap();
    let said = refused(&format!("{hash}::wrong"));
    assert!(said.contains("ID.SECRET"), "{said}");
    let said = refused(&format!("{zeros}::{secret}"));
    assert!(said.contains("does not match the join token"), "{said}");
    let said = refused(&format!("{hash}::abcdef.0123456789abcdef"));
    assert!(said.contains("refused the join token"), "{said}");

    let token_file = dir.path().join("token");
    std::fs::write(&token_file, &token).unwrap();
    let mut agent = Skiff::start(
        &agent_ns,
        dir.path(),
        "agent",
        &[
            format!("--server={server_url}"),
            format!("--token-file={}", token_file.display()),
            "--node-name=worker".into(),
            format!("--node-ip={agent_ip}"),
            "--node-labels=topology.kubernetes.io/zone=b".into(),
        ],
    );
    let k = |args: &[&str]| kubectl(&server_ns, &kc, args);
    for node in ["main", "worker"] {
        eventually(&format!("{node} Ready"), Duration::from_secs(90), || {
            k(&[
                "wait",
                "--for=condition=Ready",
                &format!("node/{node}"),
                "--timeout=5s",
            ])
            .map_err(|e| {
                format!(
                    "{e}\n{}\n--- agent kubelet:\n{}",
                    k(&["describe", "node", node]).unwrap_or_default(),
                    agent.log("skiff-kubelet")
                )
            })
        });
    }
    // Secrets are encrypted at rest through the server's KMS plugin, and rotate as Kubernetes
    // documents it: a new key made primary, every Secret written again, the old key removed.
    let in_server = |program: &Path, args: &[&str]| -> String {
        let out = Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/{}", server_ns.name))
            .arg(program)
            .args(args)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{} {args:?}: {text}{}",
            program.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        text
    };
    let skiff_bin = skiff_e2e::binary("skiff").unwrap();
    let data_dir = format!("--data-dir={}", dir.path().join("server").display());
    let secrets = |args: &[&str]| {
        let mut a = vec!["secrets-encrypt"];
        a.extend_from_slice(args);
        a.push(&data_dir);
        in_server(&skiff_bin, &a)
    };
    let stored = || {
        in_server(
            Path::new("etcdctl"),
            &[
                "get",
                "/registry/secrets/default/at-rest",
                "--print-value-only",
            ],
        )
    };
    k(&[
        "create",
        "secret",
        "generic",
        "at-rest",
        "--from-literal=password=hunter2-server",
    ])
    .unwrap();
    let before = stored();
    assert!(before.starts_with("k8s:enc:kms:v2:skiff-kms:"), "{before}");
    assert!(!before.contains("hunter2-server"), "{before}");
    let status = secrets(&["status"]);
    assert!(status.contains("Encryption Status: Enabled"), "{status}");
    let old_key = status
        .lines()
        .find_map(|l| l.strip_prefix("Primary key: "))
        .unwrap()
        .trim()
        .to_string();
    assert!(before.contains(&old_key), "{before}");
    let rotated = secrets(&["rotate"]);
    let new_key = rotated
        .lines()
        .find_map(|l| l.strip_prefix("new primary key: "))
        .unwrap_or_else(|| panic!("{rotated}"))
        .trim()
        .to_string();
    let re = secrets(&["reencrypt", "--prune"]);
    assert!(re.contains(&format!("removed key {old_key}")), "{re}");
    let after = stored();
    assert!(
        after.contains(&new_key) && !after.contains(&old_key),
        "{after}"
    );
    assert_eq!(
        k(&[
            "get",
            "secret",
            "at-rest",
            "-o",
            "jsonpath={.data.password}"
        ])
        .unwrap(),
        "aHVudGVyMi1zZXJ2ZXI="
    );
    let status = secrets(&["status"]);
    assert!(!status.contains(&old_key), "{status}");

    // Both nodes joined through CSRs from their bootstrap token, approved and issued: the
    // kubelets' (`system:node:NAME`), and under the client signer the proxies'
    // (`system:kube-proxy`) and the CSI drivers' (`system:skiff-csi`).
    let csrs = k(&[
        "get",
        "csr",
        "-o",
        "jsonpath={range .items[*]}{.spec.signerName} {.spec.username} {.status.conditions[0].type} {.status.certificate}{\"\\n\"}{end}",
    ])
    .unwrap();
    for (signer, per_node) in [
        ("kubernetes.io/kube-apiserver-client-kubelet", 1),
        ("kubernetes.io/kube-apiserver-client", 2),
    ] {
        let joined = csrs
            .lines()
            .filter(|l| l.starts_with(&format!("{signer} system:bootstrap:")))
            .filter(|l| {
                l.split(' ').nth(2) == Some("Approved")
                    && l.split(' ').nth(3).is_some_and(|c| !c.is_empty())
            })
            .count();
        assert_eq!(joined, 2 * per_node, "{signer}:\n{csrs}");
    }
    eventually(
        "the cluster DNS rolled out",
        Duration::from_secs(90),
        || {
            k(&[
                "-n",
                "kube-system",
                "rollout",
                "status",
                "deployment/skiff-dns",
                "--timeout=5s",
            ])
            .map_err(|e| {
                format!(
                    "{e}\n{}",
                    k(&["-n", "kube-system", "describe", "pods"]).unwrap_or_default()
                )
            })
        },
    );

    // The README's first steps: the example image from the server's own registry.
    let image = format!("{registry}/skiff/httpd");
    k(&[
        "create",
        "deployment",
        "web",
        &format!("--image={image}"),
        "--replicas=3",
    ])
    .unwrap();
    eventually("web rolled out", Duration::from_secs(90), || {
        k(&["rollout", "status", "deployment/web", "--timeout=5s"]).map_err(|e| {
            format!(
                "{e}\n{}\n--- server kubelet:\n{}\n--- agent kubelet:\n{}",
                k(&["describe", "pods"]).unwrap_or_default(),
                server.log("skiff-kubelet"),
                agent.log("skiff-kubelet")
            )
        })
    });
    k(&["expose", "deployment", "web", "--port=80"]).unwrap();
    let wide = k(&["get", "pods", "-o", "wide"]).unwrap();
    assert_eq!(
        wide.lines().filter(|l| l.starts_with("web-")).count(),
        3,
        "{wide}"
    );

    // A client pod on the agent's node reaches the service by name, through the cluster DNS
    // on the server's node.
    k(&[
        "run",
        "client",
        &format!("--image={registry}/skiff/busybox"),
        "--overrides={\"spec\":{\"nodeName\":\"worker\"}}",
        "--",
        "sleep",
        "3600",
    ])
    .unwrap();
    eventually("client Ready", Duration::from_secs(60), || {
        k(&[
            "wait",
            "--for=condition=Ready",
            "pod/client",
            "--timeout=5s",
        ])
    });
    let page = eventually(
        "web reached by name from worker",
        Duration::from_secs(30),
        || {
            k(&[
                "exec",
                "client",
                "--",
                "timeout",
                "5",
                "wget",
                "-q",
                "-O",
                "-",
                "http://web/",
            ])
        },
    );
    assert!(page.starts_with("Hello from Skiff: pod web-"), "{page}");

    // kubectl logs and exec reach pods on both nodes.
    let pods = k(&[
        "get",
        "pods",
        "-o",
        "jsonpath={range .items[*]}{.metadata.name} {.spec.nodeName}{\"\\n\"}{end}",
    ])
    .unwrap();
    for node in ["main", "worker"] {
        let pod = pods
            .lines()
            .find(|l| l.ends_with(&format!(" {node}")))
            .and_then(|l| l.split(' ').next())
            .unwrap_or_else(|| panic!("no pod on {node}:\n{pods}"));
        let host = k(&["exec", pod, "--", "hostname"]).unwrap();
        assert_eq!(host, pod);
    }
    // The web pods log each request (busybox httpd -vv); the one that answered logged it.
    let logs = k(&["logs", "-l", "app=web", "--prefix"]).unwrap();
    assert!(logs.contains("url:/"), "{logs}");

    // SIGTERM to the agent, then the server: everything stops, rules and pods go.
    let status = agent.terminate();
    assert!(
        status.success(),
        "skiff agent exited with {status}:\n{}",
        agent.out()
    );
    agent.assert_stopped_clean(&["skiff-proxy", "skiff-kubelet", "containerd"]);
    let status = server.terminate();
    assert!(
        status.success(),
        "skiff server exited with {status}:\n{}",
        server.out()
    );
    server.assert_stopped_clean(&[
        "skiff-proxy",
        "skiff-kubelet",
        "containerd",
        "skiff-controller-manager",
        "skiff-scheduler",
        "skiff-apiserver",
        "registry",
        "etcd",
    ]);
    for ns in [&server_ns, &agent_ns] {
        let tables = ns.run(&["nft", "list", "tables"]).unwrap();
        assert!(!tables.contains("skiff"), "{tables}");
        let routes = ns
            .run(&["ip", "route", "show", "root", "10.244.0.0/16"])
            .unwrap();
        assert!(!routes.contains(" via "), "pod routes left: {routes}");
    }
}
