//! skiff-proxy against the real kernel, in network namespaces the tests create themselves.

use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::time::Duration;

use skiff_e2e::netns::NetNs;
use skiff_proxy::nft::expr::{self, Data, Expr, Verdict, REG32_0, REG_VERDICT};
use skiff_proxy::nft::netlink::Socket;
use skiff_proxy::nft::{Element, Hook, Writer};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 1);
const BACKEND: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

/// The shape of the proxy's rules: a verdict map from address . protocol . port to a chain
/// that picks one of N endpoints at random through one map of all backends.
fn table() -> Writer {
    let mut w = Writer::new("skiff");
    w.add_table();
    // The proxy's own set definitions, by name.
    for set in skiff_proxy::rules::sets() {
        if set.name == "service-ips" || set.name == "backends" {
            w.add_set(&set);
        }
    }
    let backends: Vec<Element> = (0..2u32)
        .map(|i| {
            let mut key = expr::addr_proto_port(VIP, 6, 80);
            key.extend_from_slice(&i.to_ne_bytes());
            Element {
                key,
                data: Some(Data::Value(expr::addr_port(BACKEND, 8080))),
            }
        })
        .collect();
    w.add_elements("backends", &backends);
    w.add_chain("pick-2", None);
    w.add_rule(
        "pick-2",
        &[
            expr::ip_daddr(REG32_0),
            expr::l4proto(REG32_0 + 1),
            expr::th_dport(REG32_0 + 2),
            Expr::Numgen {
                dreg: REG32_0 + 3,
                modulus: 2,
            },
            Expr::Lookup {
                set: "backends".into(),
                sreg: REG32_0,
                dreg: Some(REG32_0 + 4),
                inverse: false,
            },
            Expr::Dnat {
                addr: REG32_0 + 4,
                port: Some(REG32_0 + 5),
            },
        ],
    );
    w.add_elements(
        "service-ips",
        &[Element {
            key: expr::addr_proto_port(VIP, 6, 80),
            data: Some(Data::Verdict(Verdict::Goto("pick-2".into()))),
        }],
    );
    w.add_chain(
        "nat-output",
        Some(Hook {
            hook: 3,
            priority: -100,
            kind: "nat",
        }),
    );
    w.add_rule(
        "nat-output",
        &[
            expr::ip_daddr(REG32_0),
            expr::l4proto(REG32_0 + 1),
            expr::th_dport(REG32_0 + 2),
            Expr::Lookup {
                set: "service-ips".into(),
                sreg: REG32_0,
                dreg: Some(REG_VERDICT),
                inverse: false,
            },
        ],
    );
    w
}

#[test]
fn netlink_batches_program_rules_that_carry_traffic_and_refuse_atomically() {
    let ns = NetNs::new("nft").unwrap();
    // A local address for the backend, and the service range routed into a veth (whatever no
    // rule catches is discarded there).
    for cmd in [
        &[
            "ip", "link", "add", "svc0", "type", "veth", "peer", "name", "svc1",
        ][..],
        &["ip", "addr", "add", &format!("{BACKEND}/24"), "dev", "svc0"],
        &["ip", "link", "set", "svc0", "up"],
        &["ip", "link", "set", "svc1", "up"],
        &["ip", "route", "add", "10.96.0.0/16", "dev", "svc0"],
    ] {
        ns.run(cmd).unwrap();
    }
    ns.enter(|| table().commit(&Socket::open().unwrap()))
        .unwrap()
        .unwrap();
    let listed = ns.run(&["nft", "list", "table", "ip", "skiff"]).unwrap();
    for want in [
        "type ipv4_addr . inet_proto . inet_service : verdict",
        "10.96.0.1 . tcp . 80 : goto pick-2",
        "dnat ip to ip daddr . meta l4proto . th dport . numgen random mod 2 map @backends",
        "type nat hook output priority -100",
        "ip daddr . meta l4proto . th dport vmap @service-ips",
    ] {
        assert!(listed.contains(want), "{want:?} missing from:\n{listed}");
    }

    // A connection to the service address reaches the backend.
    let mut server = ns
        .command(Path::new("busybox"))
        .args(["nc", "-l", "-p", "8080", "-e", "echo", "hello-from-backend"])
        .spawn()
        .unwrap();
    let mut answer = None;
    for _ in 0..50 {
        if let Ok(out) = ns.run(&["busybox", "nc", "-w", "2", &VIP.to_string(), "80"]) {
            answer = Some(out);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(answer.as_deref(), Some("hello-from-backend\n"));

    // A batch with one bad message (a jump to a chain that does not exist) is refused as a
    // whole: the error names the message, and nothing of the batch is applied.
    let err = ns
        .enter(|| {
            let mut w = Writer::new("skiff");
            w.add_chain("extra", None);
            w.add_rule(
                "extra",
                &[Expr::Immediate {
                    dreg: REG_VERDICT,
                    data: Data::Verdict(Verdict::Jump("missing".into())),
                }],
            );
            w.commit(&Socket::open().unwrap())
        })
        .unwrap()
        .unwrap_err();
    assert!(err.to_string().contains("a rule in chain extra"), "{err}");
    let after = ns.run(&["nft", "list", "table", "ip", "skiff"]).unwrap();
    assert_eq!(after, listed);
}

/// A node namespace with a bridge (10.1.0.1/24) and two pod namespaces on it, each with a
/// server on port 8080 that answers every connection with its own name and one on port 8081
/// that echoes what it receives; the service range routed into a veth that discards what no
/// rule catches.
struct Net {
    node: NetNs,
    pods: Vec<(NetNs, Vec<std::process::Child>)>,
}

impl Net {
    fn start() -> Net {
        let node = NetNs::new("node").unwrap();
        for cmd in [
            &["ip", "link", "add", "br0", "type", "bridge"][..],
            &["ip", "addr", "add", "10.1.0.1/24", "dev", "br0"],
            &["ip", "link", "set", "br0", "up"],
            &["sysctl", "-qw", "net.ipv4.ip_forward=1"],
            // Bridged traffic between two pods passes the IP hooks, so that a reply to a
            // DNAT-ed connection is translated back (what kube-proxy also requires).
            &["sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1"],
        ] {
            node.run(cmd).unwrap();
        }
        node.discard_service_range("10.96.0.0/12").unwrap();
        let mut pods = Vec::new();
        for (i, name) in ["p1", "p2"].into_iter().enumerate() {
            let pod = NetNs::new(name).unwrap();
            let (host, inner) = (format!("veth-{name}"), format!("eth-{name}"));
            node.run(&[
                "ip", "link", "add", &host, "type", "veth", "peer", "name", &inner,
            ])
            .unwrap();
            node.run(&["ip", "link", "set", &inner, "netns", &pod.name])
                .unwrap();
            node.run(&["ip", "link", "set", &host, "master", "br0"])
                .unwrap();
            node.run(&["ip", "link", "set", &host, "up"]).unwrap();
            // As the bridge CNI plugin's hairpinMode does: a frame may leave by the port it
            // came in, so a pod can reach itself through a service.
            node.run(&[
                "ip",
                "link",
                "set",
                &host,
                "type",
                "bridge_slave",
                "hairpin",
                "on",
            ])
            .unwrap();
            let addr = format!("10.1.0.{}/24", i + 2);
            for cmd in [
                &["ip", "addr", "add", &addr, "dev", &inner][..],
                &["ip", "link", "set", &inner, "up"],
                &["ip", "route", "add", "default", "via", "10.1.0.1"],
            ] {
                pod.run(cmd).unwrap();
            }
            let servers = [
                ["nc", "-ll", "-p", "8080", "-e", "echo", name],
                ["nc", "-ll", "-p", "8081", "-e", "cat", ""],
            ]
            .iter()
            .map(|args| {
                // In a process group of its own: the per-connection processes it starts
                // are stopped with it.
                pod.command(Path::new("busybox"))
                    .args(args.iter().filter(|a| !a.is_empty()))
                    .process_group(0)
                    .spawn()
                    .unwrap()
            })
            .collect();
            pods.push((pod, servers));
        }
        // The servers answer directly before anything is proxied to them.
        for addr in ["10.1.0.2", "10.1.0.3"] {
            let mut ok = false;
            for _ in 0..50 {
                if Net::connect(&node, addr, 8080).is_ok() {
                    ok = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            assert!(ok, "the server at {addr} never answered");
        }
        Net { node, pods }
    }

    /// Connects from `from` to `addr:port`: what the server said, or the error.
    fn connect(from: &NetNs, addr: &str, port: u16) -> Result<String, String> {
        from.run(&["busybox", "nc", "-w", "2", addr, &port.to_string()])
            .map(|s| s.trim().to_string())
            .map_err(|e| e.to_string())
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for server in self.pods.iter_mut().flat_map(|(_, s)| s) {
            let group = nix::unistd::Pid::from_raw(server.id() as i32);
            let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
            let _ = server.wait();
        }
    }
}

fn web(endpoints: &[[u8; 4]]) -> Vec<skiff_proxy::model::ServicePort> {
    let eps: Vec<skiff_proxy::model::Endpoint> = endpoints
        .iter()
        .map(|ip| skiff_proxy::model::Endpoint {
            ip: Ipv4Addr::from(*ip),
            port: 8080,
        })
        .collect();
    vec![skiff_proxy::model::ServicePort {
        name: "default/web:80".into(),
        proto: 6,
        cluster_ips: vec![Ipv4Addr::new(10, 96, 0, 10)],
        port: 80,
        node_port: Some(30080),
        load_balancer_ips: vec![],
        affinity_timeout: None,
        external_local: false,
        cluster_endpoints: eps.clone(),
        external_endpoints: eps.clone(),
        local_endpoints: eps,
    }]
}

/// The iptables commands of a host without nf_tables: the legacy ones (the kernel's
/// `ip_tables`, not `nf_tables`), in a directory of their own under the usual names.
fn legacy_iptables() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let multi = std::fs::canonicalize("/usr/sbin/iptables-legacy").unwrap();
    for name in ["iptables", "iptables-save", "iptables-restore"] {
        // xtables-legacy-multi does what its name says.
        std::os::unix::fs::symlink(&multi, dir.path().join(name)).unwrap();
    }
    dir
}

fn legacy_commands(dir: &Path) -> skiff_proxy::iptables::Commands {
    let at = |n: &str| dir.join(n).display().to_string();
    skiff_proxy::iptables::Commands {
        iptables: at("iptables"),
        save: at("iptables-save"),
        restore: at("iptables-restore"),
    }
}

/// Spread, changes, hairpin, rejection and client-IP affinity, with the rules written by
/// `program` (in the node's namespace) as the proxy writes them: whole, then by service.
fn services_follow_their_endpoints(net: &Net, program: &mut dyn skiff_proxy::proxier::Program) {
    let key = skiff_client::reflector::ObjectKey::new("default", "web");
    let mut write = |ports: Vec<skiff_proxy::model::ServicePort>, full: bool| {
        let changes = vec![(key.clone(), ports)];
        net.node
            .enter(|| {
                if full {
                    program.full(changes)
                } else {
                    program.update(changes)
                }
            })
            .unwrap()
            .unwrap();
    };
    write(web(&[[10, 1, 0, 2], [10, 1, 0, 3]]), true);

    // From the node, connections to the ClusterIP reach both endpoints.
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..30 {
        let got = Net::connect(&net.node, "10.96.0.10", 80).unwrap();
        *seen.entry(got).or_insert(0) += 1;
    }
    assert_eq!(seen.keys().collect::<Vec<_>>(), ["p1", "p2"], "{seen:?}");

    // From a pod, to a service whose endpoint is the other pod: by ClusterIP, and by node
    // port on the node's address.
    let (p1, _) = &net.pods[0];
    write(web(&[[10, 1, 0, 3]]), false);
    for _ in 0..5 {
        assert_eq!(Net::connect(p1, "10.96.0.10", 80).unwrap(), "p2");
        assert_eq!(Net::connect(p1, "10.1.0.1", 30080).unwrap(), "p2");
    }

    // The endpoint replaced: traffic goes to the new one only.
    write(web(&[[10, 1, 0, 2]]), false);
    for _ in 0..10 {
        assert_eq!(Net::connect(&net.node, "10.96.0.10", 80).unwrap(), "p1");
    }
    // Hairpin: p1 reaches its own service and lands back on itself, by ClusterIP and by node
    // port.
    for _ in 0..5 {
        assert_eq!(Net::connect(p1, "10.96.0.10", 80).unwrap(), "p1");
        assert_eq!(Net::connect(p1, "10.1.0.1", 30080).unwrap(), "p1");
    }

    // No endpoint at all: the connection is refused at once, not left to time out.
    write(web(&[]), false);
    let start = std::time::Instant::now();
    let err = Net::connect(&net.node, "10.96.0.10", 80).unwrap_err();
    assert!(err.contains("refused"), "{err}");
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    let err = Net::connect(p1, "10.1.0.1", 30080).unwrap_err();
    assert!(err.contains("refused"), "{err}");

    // And back; then the service is gone altogether, and then written whole again.
    write(web(&[[10, 1, 0, 2], [10, 1, 0, 3]]), false);
    assert!(["p1", "p2"].contains(&Net::connect(&net.node, "10.96.0.10", 80).unwrap().as_str()));
    write(vec![], false);
    assert!(Net::connect(&net.node, "10.96.0.10", 80).is_err());
    write(web(&[[10, 1, 0, 2], [10, 1, 0, 3]]), true);
    assert!(["p1", "p2"].contains(&Net::connect(&net.node, "10.96.0.10", 80).unwrap().as_str()));

    // Client-IP affinity: each client stays with one endpoint, by ClusterIP and node port.
    let with_affinity = |eps: &[[u8; 4]]| {
        let mut ports = web(eps);
        ports[0].affinity_timeout = Some(60);
        ports
    };
    write(with_affinity(&[[10, 1, 0, 2], [10, 1, 0, 3]]), false);
    let stays = |from: &NetNs, addr: &str, port: u16| {
        let first = Net::connect(from, addr, port).unwrap();
        for _ in 0..15 {
            assert_eq!(
                Net::connect(from, addr, port).unwrap(),
                first,
                "{addr}:{port}"
            );
        }
        first
    };
    let chosen = stays(p1, "10.96.0.10", 80);
    stays(&net.node, "10.96.0.10", 80);
    stays(p1, "10.1.0.1", 30080);
    // The chosen endpoint goes: the client moves to the other and stays there, also once
    // the first is back.
    let (remaining, other_ip) = if chosen == "p1" {
        ("p2", [10, 1, 0, 3])
    } else {
        ("p1", [10, 1, 0, 2])
    };
    write(with_affinity(&[other_ip]), false);
    assert_eq!(stays(p1, "10.96.0.10", 80), remaining);
    write(with_affinity(&[[10, 1, 0, 2], [10, 1, 0, 3]]), false);
    assert_eq!(stays(p1, "10.96.0.10", 80), remaining);
    // Without affinity again, connections spread once more.
    write(web(&[[10, 1, 0, 2], [10, 1, 0, 3]]), false);
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..30 {
        seen.insert(Net::connect(p1, "10.96.0.10", 80).unwrap());
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
}

fn test_cfg() -> skiff_proxy::rules::Config {
    skiff_proxy::rules::Config {
        cluster_cidr: Some((Ipv4Addr::new(10, 1, 0, 0), 16)),
    }
}

#[test]
fn services_spread_over_endpoints_follow_changes_and_reject_without_any() {
    let net = Net::start();
    let sock = net.node.enter(Socket::open).unwrap().unwrap();
    let mut program = skiff_proxy::proxier::Proxier::new(test_cfg(), "node-a", sock);
    services_follow_their_endpoints(&net, &mut program);
}

#[test]
fn iptables_mode_without_nftables_behaves_the_same() {
    let net = Net::start();
    let legacy = legacy_iptables();
    let cmds = legacy_commands(legacy.path());
    let mut program = skiff_proxy::iptables::Iptables::new(test_cfg(), "node-a", cmds.clone());
    services_follow_their_endpoints(&net, &mut program);
    // The rules are iptables chains: nothing in nf_tables.
    let tables = net.node.run(&["nft", "list", "tables"]).unwrap();
    assert!(!tables.contains("skiff"), "{tables}");
    let saved = net.node.run(&[cmds.save.as_str(), "-t", "nat"]).unwrap();
    assert!(saved.contains(":SKIFF-SERVICES"), "{saved}");
    // Cleaning up removes every chain and jump, and the service address leads nowhere.
    net.node
        .enter(|| skiff_proxy::iptables::cleanup(&cmds))
        .unwrap()
        .unwrap();
    for table in ["nat", "filter"] {
        let saved = net.node.run(&[cmds.save.as_str(), "-t", table]).unwrap();
        assert!(!saved.contains("SKIFF"), "{saved}");
    }
    assert!(Net::connect(&net.node, "10.96.0.10", 80).is_err());
}

/// An EndpointSlice of `web` with these pod addresses, port 8080.
fn web_slice(ips: &[&str]) -> serde_json::Value {
    let endpoints: Vec<serde_json::Value> = ips
        .iter()
        .map(|ip| serde_json::json!({"addresses": [ip], "conditions": {"ready": true}}))
        .collect();
    serde_json::json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "web-1", "namespace": "default",
            "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4", "ports": [{"name": "80-8080", "port": 8080, "protocol": "TCP"}],
        "endpoints": endpoints})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxier_follows_services_and_endpoint_slices_from_the_api_server() {
    use skiff_proxy::proxier::{run, Proxier};
    use skiff_proxy::rules::Config;
    let c = skiff_e2e::Cluster::start().await.unwrap();
    let net = Net::start();
    let k = c.kubectl();
    k.ok(&["create", "service", "clusterip", "web", "--tcp=80:8080"]);
    let vip = k.ok(&["get", "service", "web", "-o", "jsonpath={.spec.clusterIP}"]);
    k.ok_input(
        &["apply", "-f", "-"],
        &web_slice(&["10.1.0.2", "10.1.0.3"]).to_string(),
    );

    // The proxier: its netlink socket in the node's namespace, its API client here.
    let sock = net.node.enter(Socket::open).unwrap().unwrap();
    let cfg = Config {
        cluster_cidr: Some((Ipv4Addr::new(10, 1, 0, 0), 16)),
    };
    let client = skiff_client::Client::new(
        skiff_client::Config::from_kubeconfig(&c.api.kubeconfig).unwrap(),
    )
    .unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    let (tx, mut syncs) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(run(
        client,
        Box::new(Proxier::new(cfg, "node-a", sock)),
        Duration::from_secs(3600),
        stop.clone(),
        move |r| {
            let _ = tx.send(r.as_ref().map(|s| s.full).map_err(|e| e.to_string()));
        },
    ));
    assert_eq!(
        syncs.recv().await.unwrap(),
        Ok(true),
        "the first sync writes the whole table"
    );

    let node = &net.node;
    let spread = |n: usize| {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..n {
            seen.insert(Net::connect(node, &vip, 80).unwrap_or_else(|e| e));
        }
        seen
    };
    assert_eq!(spread(20).into_iter().collect::<Vec<_>>(), ["p1", "p2"]);

    // An endpoint removed through the API: gone from the rules within a second, by
    // incremental syncs only.
    let t = std::time::Instant::now();
    k.ok_input(&["apply", "-f", "-"], &web_slice(&["10.1.0.3"]).to_string());
    loop {
        if spread(10).into_iter().collect::<Vec<_>>() == ["p2"] {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "still sent to p1 after {:?}",
            t.elapsed()
        );
    }
    while let Ok(r) = syncs.try_recv() {
        assert_eq!(r, Ok(false), "only incremental syncs after the first");
    }

    // No endpoints: refused.
    k.ok_input(&["apply", "-f", "-"], &web_slice(&[]).to_string());
    let t = std::time::Instant::now();
    loop {
        match Net::connect(node, &vip, 80) {
            Err(e) if e.contains("refused") => break,
            other => assert!(t.elapsed() < Duration::from_secs(2), "{other:?}"),
        }
    }
}

/// A connection held open: lines written to it come back from the echo server.
struct Held {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Held {
    fn open(from: &NetNs, addr: &str, port: u16) -> Held {
        use std::io::BufRead;
        let mut child = from
            .command(Path::new("busybox"))
            .args(["nc", addr, &port.to_string()])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let out = std::io::BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in out.lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Held {
            child,
            stdin,
            lines,
        }
    }

    /// Sends a line; what came back within five seconds.
    fn echo(&mut self, line: &str) -> Result<String, String> {
        use std::io::Write;
        writeln!(self.stdin, "{line}").map_err(|e| e.to_string())?;
        self.lines
            .recv_timeout(Duration::from_secs(5))
            .map_err(|e| format!("no echo of {line:?}: {e}"))
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `skiff-proxy` in the node's namespace, reaching the API server through a relay.
struct ProxyProcess {
    child: std::process::Child,
}

impl ProxyProcess {
    fn start(net: &Net, kubeconfig: &Path, extra: &[&str]) -> ProxyProcess {
        Self::start_with(net, kubeconfig, extra, None)
    }

    /// Started with `bin_dir` first on its `PATH`.
    fn start_with(
        net: &Net,
        kubeconfig: &Path,
        extra: &[&str],
        bin_dir: Option<&Path>,
    ) -> ProxyProcess {
        let bin = skiff_e2e::binary("skiff-proxy").unwrap();
        let mut cmd = net.node.command(&bin);
        cmd.arg(format!("--kubeconfig={}", kubeconfig.display()))
            .args(["--hostname-override=node-a", "--cluster-cidr=10.1.0.0/16"])
            .args(extra);
        if let Some(dir) = bin_dir {
            let path = std::env::var("PATH").unwrap_or_default();
            cmd.env("PATH", format!("{}:{path}", dir.display()));
        }
        ProxyProcess {
            child: cmd.spawn().unwrap(),
        }
    }

    /// Stops it with SIGTERM; whether it exited cleanly.
    fn stop(mut self) -> bool {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let status = self.child.wait().unwrap();
        status.success()
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A kubeconfig for components in the node's namespace.
fn relayed_kubeconfig(
    c: &skiff_e2e::Cluster,
    net: &Net,
) -> (std::path::PathBuf, skiff_e2e::netns::Forward) {
    skiff_e2e::netns::relayed_kubeconfig(&c.api, &net.node).unwrap()
}

/// GETs a path of the proxy's health and metrics server (in the node's namespace).
fn proxy_http(net: &Net, path: &str) -> Result<String, String> {
    net.node
        .run(&[
            "busybox",
            "wget",
            "-q",
            "-O",
            "-",
            &format!("http://127.0.0.1:10249{path}"),
        ])
        .map_err(|e| e.to_string())
}

/// Once the proxy serves `vip:80`, connections from `from` reach both pods.
fn spreads_over_both_pods(from: &NetNs, vip: &str) {
    eventually("the proxy serves the service", || {
        Net::connect(from, vip, 80).ok()
    });
    let seen: std::collections::BTreeSet<String> = (0..20)
        .map(|_| Net::connect(from, vip, 80).unwrap())
        .collect();
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), ["p1", "p2"]);
}

fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let t = std::time::Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(t.elapsed() < Duration::from_secs(15), "{what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skiff_proxy_serves_services_survives_restarts_routes_pod_cidrs_and_cleans_up() {
    let c = skiff_e2e::Cluster::start().await.unwrap();
    let net = Net::start();
    let (kubeconfig, _relay) = relayed_kubeconfig(&c, &net);
    let k = c.kubectl();
    k.ok(&[
        "create",
        "service",
        "clusterip",
        "web",
        "--tcp=80:8080",
        "--tcp=81:8081",
    ]);
    let vip = k.ok(&["get", "service", "web", "-o", "jsonpath={.spec.clusterIP}"]);
    let mut slice = web_slice(&["10.1.0.2", "10.1.0.3"]);
    slice["ports"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"name": "81-8081", "port": 8081, "protocol": "TCP"}));
    k.ok_input(&["apply", "-f", "-"], &slice.to_string());

    let proxy = ProxyProcess::start(&net, &kubeconfig, &[]);
    let node = &net.node;
    spreads_over_both_pods(node, &vip);
    assert_eq!(proxy_http(&net, "/healthz").unwrap(), "ok");
    assert_eq!(proxy_http(&net, "/readyz").unwrap(), "ok");
    let metrics = proxy_http(&net, "/metrics").unwrap();
    for m in [
        "kubeproxy_sync_proxy_rules_duration_seconds_count",
        "kubeproxy_sync_full_proxy_rules_duration_seconds_count 1",
        "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
        "skiff_proxy_rules",
        "skiff_proxy_set_elements",
    ] {
        assert!(metrics.contains(m), "{m} missing from:\n{metrics}");
    }

    // An established connection lives through the proxy's restart (which rewrites the
    // whole table).
    let (p1, _) = &net.pods[0];
    let mut held = Held::open(p1, &vip, 81);
    assert_eq!(held.echo("before").unwrap(), "before");
    assert!(proxy.stop(), "the proxy exits cleanly on SIGTERM");
    assert_eq!(
        held.echo("while stopped").unwrap(),
        "while stopped",
        "the rules stay while the proxy is down"
    );
    let proxy = ProxyProcess::start(&net, &kubeconfig, &[]);
    eventually("the restarted proxy is ready", || {
        proxy_http(&net, "/readyz").ok()
    });
    assert_eq!(held.echo("after").unwrap(), "after");
    assert_eq!(
        Net::connect(node, &vip, 80).map(|s| s.starts_with('p')),
        Ok(true)
    );

    // Pod routes: another node's pod CIDR goes to its InternalIP; this node's own does not;
    // a node that goes takes its route along.
    for (name, cidr, ip) in [
        ("node-a", "10.1.0.0/24", "10.1.0.1"),
        ("node-b", "10.2.0.0/24", "10.1.0.3"),
    ] {
        k.ok_input(
            &["create", "-f", "-"],
            &serde_json::json!({"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": name}, "spec": {"podCIDR": cidr}})
            .to_string(),
        );
        k.ok(&[
            "patch",
            "node",
            name,
            "--subresource=status",
            "--type=merge",
            "-p",
            &serde_json::json!({"status": {"addresses": [{"type": "InternalIP", "address": ip}]}})
                .to_string(),
        ]);
    }
    let routes = || node.run(&["ip", "route", "show", "proto", "83"]).unwrap();
    eventually("node-b's pod CIDR is routed", || {
        routes().contains("10.2.0.0/24 via 10.1.0.3").then_some(())
    });
    assert!(!routes().contains("10.1.0.0/24 via"), "{}", routes());
    k.ok(&["delete", "node", "node-b"]);
    eventually("node-b's route is removed", || {
        routes().trim().is_empty().then_some(())
    });

    // --cleanup removes the table: the service address no longer leads anywhere.
    assert!(proxy.stop());
    let out = net
        .node
        .command(&skiff_e2e::binary("skiff-proxy").unwrap())
        .arg("--cleanup")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tables = node.run(&["nft", "list", "tables"]).unwrap();
    assert!(!tables.contains("skiff"), "{tables}");
    assert!(Net::connect(node, &vip, 80).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skiff_proxy_in_iptables_mode_follows_the_api_server_survives_restarts_and_cleans_up() {
    let c = skiff_e2e::Cluster::start().await.unwrap();
    let net = Net::start();
    let (kubeconfig, _relay) = relayed_kubeconfig(&c, &net);
    // A host without nf_tables: the legacy iptables commands under the usual names.
    let legacy = legacy_iptables();
    let cmds = legacy_commands(legacy.path());
    let k = c.kubectl();
    k.ok(&[
        "create",
        "service",
        "nodeport",
        "web",
        "--tcp=80:8080",
        "--node-port=30080",
    ]);
    k.ok(&["create", "service", "clusterip", "echo", "--tcp=81:8081"]);
    let vip = k.ok(&["get", "service", "web", "-o", "jsonpath={.spec.clusterIP}"]);
    let echo_vip = k.ok(&["get", "service", "echo", "-o", "jsonpath={.spec.clusterIP}"]);
    k.ok_input(
        &["apply", "-f", "-"],
        &web_slice(&["10.1.0.2", "10.1.0.3"]).to_string(),
    );
    let mut echo = web_slice(&["10.1.0.2"]);
    echo["metadata"]["name"] = "echo-1".into();
    echo["metadata"]["labels"]["kubernetes.io/service-name"] = "echo".into();
    echo["ports"] = serde_json::json!([{"name": "81-8081", "port": 8081, "protocol": "TCP"}]);
    k.ok_input(&["apply", "-f", "-"], &echo.to_string());

    let args = ["--proxy-mode=iptables"];
    let proxy = ProxyProcess::start_with(&net, &kubeconfig, &args, Some(legacy.path()));
    let node = &net.node;
    spreads_over_both_pods(node, &vip);
    let (p1, _) = &net.pods[0];
    assert!(Net::connect(p1, "10.1.0.1", 30080)
        .unwrap()
        .starts_with('p'));
    assert_eq!(proxy_http(&net, "/healthz").unwrap(), "ok");
    let metrics = proxy_http(&net, "/metrics").unwrap();
    assert!(
        metrics.contains("kubeproxy_sync_full_proxy_rules_duration_seconds_count 1"),
        "{metrics}"
    );

    // A change at the API server: one endpoint left, then none (refused).
    k.ok_input(&["apply", "-f", "-"], &web_slice(&["10.1.0.3"]).to_string());
    eventually("only p2 is left", || {
        (0..10)
            .all(|_| Net::connect(node, &vip, 80).as_deref() == Ok("p2"))
            .then_some(())
    });
    k.ok_input(&["apply", "-f", "-"], &web_slice(&[]).to_string());
    eventually("the service without endpoints refuses", || {
        Net::connect(node, &vip, 80)
            .err()
            .filter(|e| e.contains("refused"))
    });
    let tables = node.run(&["nft", "list", "tables"]).unwrap();
    assert!(!tables.contains("skiff"), "nothing in nf_tables: {tables}");

    // An established connection lives through the proxy's restart (a full rewrite).
    let (p2, _) = &net.pods[1];
    let mut held = Held::open(p2, &echo_vip, 81);
    assert_eq!(held.echo("before").unwrap(), "before");
    assert!(proxy.stop(), "the proxy exits cleanly on SIGTERM");
    assert_eq!(held.echo("while stopped").unwrap(), "while stopped");
    let proxy = ProxyProcess::start_with(&net, &kubeconfig, &args, Some(legacy.path()));
    eventually("the restarted proxy is ready", || {
        proxy_http(&net, "/readyz").ok()
    });
    assert_eq!(held.echo("after").unwrap(), "after");

    // --cleanup removes every chain (and the nftables table, were there one).
    assert!(proxy.stop());
    let out = net
        .node
        .command(&skiff_e2e::binary("skiff-proxy").unwrap())
        .args(["--cleanup", "--proxy-mode=iptables"])
        .env(
            "PATH",
            format!(
                "{}:{}",
                legacy.path().display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for table in ["nat", "filter"] {
        let saved = node.run(&[cmds.save.as_str(), "-t", table]).unwrap();
        assert!(!saved.contains("SKIFF"), "{saved}");
    }
    assert!(Net::connect(node, &echo_vip, 81).is_err());
}

/// A Node with this InternalIP, Ready.
fn ready_node(k: &skiff_e2e::Kubectl, name: &str, ip: &str) {
    k.ok_input(
        &["create", "-f", "-"],
        &serde_json::json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}})
            .to_string(),
    );
    k.ok(&[
        "patch", "node", name, "--subresource=status", "--type=merge", "-p",
        &serde_json::json!({"status": {
            "addresses": [{"type": "InternalIP", "address": ip}],
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                "lastHeartbeatTime": "2026-01-01T00:00:00Z", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}})
        .to_string(),
    ]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_balancer_services_get_node_or_pool_addresses_that_reach_endpoints() {
    let c = skiff_e2e::Cluster::start().await.unwrap();
    let net = Net::start();
    let (kubeconfig, _relay) = relayed_kubeconfig(&c, &net);
    let k = c.kubectl();
    ready_node(&k, "node-a", "10.1.0.1");
    let cm = skiff_e2e::Daemon::start(
        "skiff-controller-manager",
        &c.api,
        &[
            "--leader-elect=false",
            "--port=0",
            "--controllers=servicelb",
        ],
    )
    .unwrap();
    let _proxy = ProxyProcess::start(&net, &kubeconfig, &[]);
    k.ok(&["create", "service", "loadbalancer", "web", "--tcp=80:8080"]);
    k.ok_input(
        &["apply", "-f", "-"],
        &web_slice(&["10.1.0.2", "10.1.0.3"]).to_string(),
    );

    // The node's address is published, and the port answers there, from a pod and from
    // the node; so does the node port.
    let ingress = || {
        k.ok(&[
            "get",
            "service",
            "web",
            "-o",
            "jsonpath={.status.loadBalancer.ingress[*].ip}",
        ])
    };
    eventually("the node's address is published", || {
        (ingress() == "10.1.0.1").then_some(())
    });
    let (p1, _) = &net.pods[0];
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..20 {
        seen.insert(eventually("the load balancer answers", || {
            Net::connect(p1, "10.1.0.1", 80).ok()
        }));
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), ["p1", "p2"]);
    let node_port = k.ok(&[
        "get",
        "service",
        "web",
        "-o",
        "jsonpath={.spec.ports[0].nodePort}",
    ]);
    assert!(
        Net::connect(&net.node, "10.1.0.1", node_port.parse().unwrap())
            .unwrap()
            .starts_with('p')
    );
    let events = k.ok(&[
        "get",
        "events",
        "--field-selector=involvedObject.name=web",
        "-o",
        "jsonpath={.items[*].reason}",
    ]);
    assert!(events.contains("EnsuredLoadBalancer"), "{events}");

    // A second Ready node's address is added.
    ready_node(&k, "node-b", "10.1.0.9");
    eventually("both nodes' addresses are published", || {
        (ingress() == "10.1.0.1 10.1.0.9").then_some(())
    });

    // No longer a load balancer: the address goes, and the port with it.
    k.ok(&[
        "patch",
        "service",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"type":"ClusterIP"}}"#,
    ]);
    eventually("the address is withdrawn", || {
        ingress().is_empty().then_some(())
    });
    eventually("the port is closed", || {
        Net::connect(p1, "10.1.0.1", 80).is_err().then_some(())
    });

    // With a pool: each service gets an address of its own (the first usable one, then
    // the next), or the one it asks for; one outside the pool is refused with an event.
    drop(cm);
    let _cm = skiff_e2e::Daemon::start(
        "skiff-controller-manager",
        &c.api,
        &[
            "--leader-elect=false",
            "--port=0",
            "--controllers=servicelb",
            "--service-lb-pool=192.0.2.0/29",
        ],
    )
    .unwrap();
    net.node
        .run(&["ip", "route", "add", "192.0.2.0/29", "dev", "svc0"])
        .unwrap();
    k.ok(&[
        "patch",
        "service",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"type":"LoadBalancer"}}"#,
    ]);
    eventually("web gets the pool's first address", || {
        (ingress() == "192.0.2.1").then_some(())
    });
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..20 {
        seen.insert(eventually("the pool address answers", || {
            Net::connect(&net.node, "192.0.2.1", 80).ok()
        }));
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), ["p1", "p2"]);
    k.ok(&[
        "create",
        "service",
        "loadbalancer",
        "second",
        "--tcp=80:8080",
    ]);
    let second = || {
        k.ok(&[
            "get",
            "service",
            "second",
            "-o",
            "jsonpath={.status.loadBalancer.ingress[*].ip}",
        ])
    };
    eventually("the second gets the next address", || {
        (second() == "192.0.2.2").then_some(())
    });
    k.ok_input(
        &["apply", "-f", "-"],
        &serde_json::json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "wants", "namespace": "default"},
            "spec": {"type": "LoadBalancer", "loadBalancerIP": "198.51.100.7",
                "ports": [{"port": 80, "targetPort": 8080}]}})
        .to_string(),
    );
    eventually(
        "a request outside the pool is refused with an event",
        || {
            k.ok(&[
                "get",
                "events",
                "--field-selector=involvedObject.name=wants",
                "-o",
                "jsonpath={.items[*].message}",
            ])
            .contains("not in the pool")
            .then_some(())
        },
    );
    assert_eq!(
        k.ok(&[
            "get",
            "service",
            "wants",
            "-o",
            "jsonpath={.status.loadBalancer.ingress}"
        ]),
        ""
    );
}

/// `busybox nslookup` in a namespace: what it printed. (It exits non-zero when any of the
/// names it tried along the search path is unknown, even once one was found.)
fn nslookup(ns: &NetNs, args: &[&str]) -> String {
    let out = ns
        .command(Path::new("busybox"))
        .arg("nslookup")
        .args(args)
        .output()
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_dns_answers_pods_through_the_kube_dns_service() {
    let c = skiff_e2e::Cluster::start().await.unwrap();
    let net = Net::start();
    let (kubeconfig, _relay) = relayed_kubeconfig(&c, &net);
    let k = c.kubectl();
    // The DNS server on the node's address, behind kube-system/kube-dns at 10.96.0.10, as
    // the kubelets' --cluster-dns gives it to pods.
    k.ok_input(
        &["create", "-f", "-"],
        &serde_json::json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kube-dns", "namespace": "kube-system"},
            "spec": {"clusterIP": "10.96.0.10", "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP"},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]}})
        .to_string(),
    );
    k.ok_input(
        &["create", "-f", "-"],
        &serde_json::json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "kube-dns-1", "namespace": "kube-system",
                "labels": {"kubernetes.io/service-name": "kube-dns"}},
            "addressType": "IPv4",
            "ports": [{"name": "dns", "port": 53, "protocol": "UDP"},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP"}],
            "endpoints": [{"addresses": ["10.1.0.1"], "conditions": {"ready": true}}]})
        .to_string(),
    );
    k.ok_input(
        &["create", "-f", "-"],
        &serde_json::json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]}})
        .to_string(),
    );
    let vip = k.ok(&["get", "service", "web", "-o", "jsonpath={.spec.clusterIP}"]);
    let mut slice = web_slice(&["10.1.0.2", "10.1.0.3"]);
    slice["ports"][0]["name"] = "http".into();
    k.ok_input(&["apply", "-f", "-"], &slice.to_string());
    // A headless service whose one endpoint has a hostname.
    k.ok_input(
        &["create", "-f", "-"],
        &serde_json::json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "db", "namespace": "default"},
            "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}})
        .to_string(),
    );
    let db_slice = |ip: &str| {
        serde_json::json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "db-1", "namespace": "default",
                "labels": {"kubernetes.io/service-name": "db"}},
            "addressType": "IPv4",
            "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}],
            "endpoints": [{"addresses": [ip], "hostname": "db-0", "conditions": {"ready": true}}]})
        .to_string()
    };
    k.ok_input(&["apply", "-f", "-"], &db_slice("10.1.0.3"));

    let _proxy = ProxyProcess::start(&net, &kubeconfig, &[]);
    let mut dns = net
        .node
        .command(&skiff_e2e::binary("skiff-dns").unwrap())
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .args([
            "--dns-bind-address=10.1.0.1:53",
            "--metrics-bind-address=127.0.0.1:9153",
        ])
        .spawn()
        .unwrap();
    let _dns = scopeguard(move || {
        let _ = dns.kill();
        let _ = dns.wait();
    });
    let (p1, _) = &net.pods[0];
    p1.resolv_conf(
        "search default.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n",
    )
    .unwrap();

    // A short name resolves through the search path, from inside the pod, to the ClusterIP.
    let out = eventually("nslookup web answers", || {
        Some(nslookup(p1, &["web"])).filter(|o| o.contains("Address: 10."))
    });
    assert!(
        out.contains(&format!(
            "Name:\tweb.default.svc.cluster.local\nAddress: {vip}\n"
        )),
        "{out}"
    );
    // And by name the service answers.
    // (glibc sends the A and AAAA questions at once from one socket; through DNAT one of the
    // pair may be lost to conntrack's race and retried only after seconds, as on any
    // Kubernetes node: hence more than one try.)
    let by_name = eventually("the service answers by name", || {
        p1.run(&[
            "busybox",
            "nc",
            "-w",
            "3",
            "web.default.svc.cluster.local",
            "80",
        ])
        .ok()
    });
    assert!(by_name.trim().starts_with('p'), "{by_name}");
    // Headless: the endpoint's own address, also by its hostname; SRV for the named port.
    let out = nslookup(p1, &["db"]);
    assert!(
        out.contains("Name:\tdb.default.svc.cluster.local\nAddress: 10.1.0.3\n"),
        "{out}"
    );
    let out = nslookup(p1, &["db-0.db.default.svc.cluster.local"]);
    assert!(
        out.contains("Name:\tdb-0.db.default.svc.cluster.local\nAddress: 10.1.0.3\n"),
        "{out}"
    );
    let out = nslookup(
        p1,
        &["-type=SRV", "_http._tcp.web.default.svc.cluster.local"],
    );
    assert!(out.contains("80 web.default.svc.cluster.local"), "{out}");
    // Unknown names: NXDOMAIN, and no address.
    let out = nslookup(p1, &["nope.default.svc.cluster.local"]);
    assert!(
        out.contains("NXDOMAIN") && !out.contains("Address: 10."),
        "{out}"
    );
    // A change is answered at once.
    k.ok_input(&["apply", "-f", "-"], &db_slice("10.1.0.2"));
    let t = std::time::Instant::now();
    eventually("the new address is answered", || {
        Some(nslookup(p1, &["db.default.svc.cluster.local"]))
            .filter(|o| o.contains("Address: 10.1.0.2"))
    });
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    let metrics = net
        .node
        .run(&[
            "busybox",
            "wget",
            "-q",
            "-O",
            "-",
            "http://127.0.0.1:9153/metrics",
        ])
        .unwrap();
    assert!(
        metrics.contains("coredns_dns_requests_total{proto=\"udp\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("rcode=\"NXDOMAIN\""), "{metrics}");
}

/// Runs `f` when dropped.
fn scopeguard(f: impl FnOnce()) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}
