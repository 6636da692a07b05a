//! The proxy's nf_tables table: what it should hold for a set of service ports
//! ([`Desired`]), written whole in one transaction ([`full`]) or as the difference from what
//! was written last ([`diff`]). See the crate documentation for why it is shaped so.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use crate::model::ServicePort;
use crate::nft::expr::{self, Data, Expr, Verdict, REG32_0, REG_VERDICT};
use crate::nft::{types, Element, Hook, Set, Writer};

/// The table's name (family `ip`).
pub const TABLE: &str = "skiff";
/// The packet-mark bit that asks for masquerading (kube-proxy's).
pub const MASQUERADE_MARK: u32 = 0x4000;

const SERVICE_IPS: &str = "service-ips";
const NODE_PORTS: &str = "node-ports";
const BACKENDS: &str = "backends";
const NO_ENDPOINTS: &str = "no-endpoint-services";
const NO_ENDPOINT_NODE_PORTS: &str = "no-endpoint-node-ports";
const HAIRPIN: &str = "hairpin";
const AFFINITY: &str = "affinity";
const AFFINITY_VALID: &str = "affinity-endpoints";

/// How the proxy is set up.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// The pods' address range: traffic to a ClusterIP from outside it is masqueraded.
    pub cluster_cidr: Option<(Ipv4Addr, u8)>,
}

/// The kinds of traffic a service address receives, each with its own chains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// To a ClusterIP.
    Cluster,
    /// To a load-balancer address, masqueraded (`externalTrafficPolicy: Cluster`).
    External,
    /// To a load-balancer address, client address kept (`Local`).
    Local,
    /// To a node port, masqueraded.
    NodePort,
    /// To a node port, client address kept.
    NodePortLocal,
}

impl Kind {
    /// Its name in chain names (`cluster`, `nodeport-local`, ...).
    pub fn prefix(self) -> &'static str {
        match self {
            Kind::Cluster => "cluster",
            Kind::External => "external",
            Kind::Local => "local",
            Kind::NodePort => "nodeport",
            Kind::NodePortLocal => "nodeport-local",
        }
    }

    fn node_port(self) -> bool {
        matches!(self, Kind::NodePort | Kind::NodePortLocal)
    }
}

/// A pick chain: the kind of traffic, the endpoint count, and the client-IP affinity
/// timeout in seconds if the service has one.
pub type Pick = (Kind, usize, Option<u32>);

/// The chain that spreads traffic of `kind` over `n` endpoints (keeping each client on one
/// endpoint for `affinity` seconds, when given).
pub fn pick_chain((kind, n, affinity): Pick) -> String {
    match affinity {
        None => format!("{}-{n}", kind.prefix()),
        Some(t) => format!("{}-{n}-affinity-{t}", kind.prefix()),
    }
}

/// Everything the table should hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    /// `daddr . proto . dport` → the pick chain.
    pub service_ips: BTreeMap<Vec<u8>, String>,
    /// `proto . dport` → the pick chain.
    pub node_ports: BTreeMap<Vec<u8>, String>,
    /// `daddr . proto . dport . index` → `endpoint address . port` (`daddr` is 0.0.0.0 for
    /// node ports).
    pub backends: BTreeMap<Vec<u8>, Vec<u8>>,
    /// `daddr . proto . dport` with no endpoint: rejected.
    pub no_endpoints: BTreeSet<Vec<u8>>,
    /// `proto . dport` of node ports with no endpoint: rejected.
    pub no_endpoint_node_ports: BTreeSet<Vec<u8>>,
    /// `endpoint . endpoint` of this node's endpoints: a pod reaching itself through a
    /// service is masqueraded.
    pub hairpin: BTreeSet<Vec<u8>>,
    /// `daddr . proto . dport . endpoint address . port` of services with client-IP
    /// affinity: a remembered endpoint is used only while it is still one of the service's.
    pub affinity_endpoints: BTreeSet<Vec<u8>>,
    /// The pick chains in use.
    pub chains: BTreeSet<Pick>,
}

fn proto_port(proto: u8, port: u16) -> Vec<u8> {
    let mut k = vec![proto, 0, 0, 0];
    k.extend_from_slice(&port.to_be_bytes());
    k.extend_from_slice(&[0, 0]);
    k
}

/// The `hairpin` elements of `ports`: each of this node's endpoints, `address . address`.
pub fn hairpin_keys(ports: &[ServicePort]) -> BTreeSet<Vec<u8>> {
    ports
        .iter()
        .flat_map(|p| &p.local_endpoints)
        .map(|e| {
            let mut k = e.ip.octets().to_vec();
            k.extend_from_slice(&e.ip.octets());
            k
        })
        .collect()
}

impl Desired {
    /// Elements in all the sets and maps (those the packets add aside).
    pub fn elements(&self) -> usize {
        self.service_ips.len()
            + self.node_ports.len()
            + self.backends.len()
            + self.no_endpoints.len()
            + self.no_endpoint_node_ports.len()
            + self.hairpin.len()
            + self.affinity_endpoints.len()
    }

    /// What `ports` need.
    pub fn build(ports: &[ServicePort]) -> Desired {
        let mut d = Desired::default();
        d.add(ports);
        d
    }

    /// Adds what `ports` need.
    pub fn add(&mut self, ports: &[ServicePort]) {
        let d = self;
        for p in ports {
            for ip in &p.cluster_ips {
                d.address(*ip, p, p.port, Kind::Cluster, &p.cluster_endpoints);
            }
            let (lb_kind, np_kind) = if p.external_local {
                (Kind::Local, Kind::NodePortLocal)
            } else {
                (Kind::External, Kind::NodePort)
            };
            for ip in &p.load_balancer_ips {
                d.address(*ip, p, p.port, lb_kind, &p.external_endpoints);
            }
            if let Some(np) = p.node_port {
                d.address(Ipv4Addr::UNSPECIFIED, p, np, np_kind, &p.external_endpoints);
            }
        }
        d.hairpin.extend(hairpin_keys(ports));
    }

    /// Traffic of `kind` to `ip` (0.0.0.0 for a node port) and `p`'s protocol and port.
    fn address(
        &mut self,
        ip: Ipv4Addr,
        p: &ServicePort,
        port: u16,
        kind: Kind,
        eps: &[crate::model::Endpoint],
    ) {
        let proto = p.proto;
        let key = expr::addr_proto_port(ip, proto, port);
        if eps.is_empty() {
            if kind.node_port() {
                self.no_endpoint_node_ports.insert(proto_port(proto, port));
            } else {
                self.no_endpoints.insert(key);
            }
            return;
        }
        let pick = (kind, eps.len(), p.affinity_timeout);
        let chain = pick_chain(pick);
        self.chains.insert(pick);
        for (i, e) in eps.iter().enumerate() {
            let mut k = key.clone();
            k.extend_from_slice(&(i as u32).to_ne_bytes());
            self.backends.insert(k, expr::addr_port(e.ip, e.port));
            if p.affinity_timeout.is_some() {
                let mut k = key.clone();
                k.extend(expr::addr_port(e.ip, e.port));
                self.affinity_endpoints.insert(k);
            }
        }
        if kind.node_port() {
            self.node_ports.insert(proto_port(proto, port), chain);
        } else {
            self.service_ips.insert(key, chain);
        }
    }
}

/// The table's sets and maps.
pub fn sets() -> [Set; 8] {
    let addr_proto_port =
        types::concat(&[types::IPV4_ADDR, types::INET_PROTO, types::INET_SERVICE]);
    let proto_port = types::concat(&[types::INET_PROTO, types::INET_SERVICE]);
    [
        Set {
            name: SERVICE_IPS.into(),
            key_type: addr_proto_port,
            key_len: 12,
            data: Some((types::KERNEL_VERDICT, 0)),
            timeout_ms: None,
        },
        Set {
            name: NODE_PORTS.into(),
            key_type: proto_port,
            key_len: 8,
            data: Some((types::KERNEL_VERDICT, 0)),
            timeout_ms: None,
        },
        Set {
            name: BACKENDS.into(),
            key_type: types::concat(&[
                types::IPV4_ADDR,
                types::INET_PROTO,
                types::INET_SERVICE,
                types::MARK,
            ]),
            key_len: 16,
            data: Some((types::concat(&[types::IPV4_ADDR, types::INET_SERVICE]), 8)),
            timeout_ms: None,
        },
        Set {
            name: NO_ENDPOINTS.into(),
            key_type: addr_proto_port,
            key_len: 12,
            data: None,
            timeout_ms: None,
        },
        Set {
            name: NO_ENDPOINT_NODE_PORTS.into(),
            key_type: proto_port,
            key_len: 8,
            data: None,
            timeout_ms: None,
        },
        Set {
            name: HAIRPIN.into(),
            key_type: types::concat(&[types::IPV4_ADDR, types::IPV4_ADDR]),
            key_len: 8,
            data: None,
            timeout_ms: None,
        },
        // Client-IP affinity, written by the packets themselves: `saddr . daddr . proto .
        // dport` → the endpoint, each element with its service's timeout.
        Set {
            name: AFFINITY.into(),
            key_type: types::concat(&[
                types::IPV4_ADDR,
                types::IPV4_ADDR,
                types::INET_PROTO,
                types::INET_SERVICE,
            ]),
            key_len: 16,
            data: Some((types::concat(&[types::IPV4_ADDR, types::INET_SERVICE]), 8)),
            timeout_ms: Some(10_800_000),
        },
        Set {
            name: AFFINITY_VALID.into(),
            key_type: types::concat(&[
                types::IPV4_ADDR,
                types::INET_PROTO,
                types::INET_SERVICE,
                types::IPV4_ADDR,
                types::INET_SERVICE,
            ]),
            key_len: 20,
            data: None,
            timeout_ms: None,
        },
    ]
}

/// `daddr . l4proto . dport` into the first three 32-bit registers.
fn load_dest() -> [Expr; 3] {
    [
        expr::ip_daddr(REG32_0),
        expr::l4proto(REG32_0 + 1),
        expr::th_dport(REG32_0 + 2),
    ]
}

/// `l4proto . dport` into the first two 32-bit registers.
fn load_proto_port() -> [Expr; 2] {
    [expr::l4proto(REG32_0), expr::th_dport(REG32_0 + 1)]
}

fn lookup(set: &str, sreg: u32, dreg: Option<u32>) -> Expr {
    Expr::Lookup {
        set: set.into(),
        sreg,
        dreg,
        inverse: false,
    }
}

/// `fib daddr type local`.
fn to_local_address() -> [Expr; 2] {
    [
        Expr::FibDaddrType { dreg: REG32_0 + 8 },
        Expr::Cmp {
            sreg: REG32_0 + 8,
            op: expr::EQ,
            data: 2u32.to_ne_bytes().to_vec(), // RTN_LOCAL
        },
    ]
}

/// The protocol loaded into `reg` is TCP.
fn is_tcp(reg: u32) -> Expr {
    Expr::Cmp {
        sreg: reg,
        op: expr::EQ,
        data: vec![crate::model::TCP],
    }
}

/// `reg & bits != 0`, for host-order 32-bit values.
fn has_bits(reg: u32, bits: u32) -> [Expr; 2] {
    [
        Expr::Bitwise {
            sreg: reg,
            dreg: reg,
            mask: bits.to_ne_bytes().to_vec(),
            xor: vec![0; 4],
        },
        Expr::Cmp {
            sreg: reg,
            op: expr::NEQ,
            data: 0u32.to_ne_bytes().to_vec(),
        },
    ]
}

/// The rules of a pick chain.
fn pick_rules((kind, n, affinity): Pick, cfg: &Config) -> Vec<Vec<Expr>> {
    let mut rules = Vec::new();
    match kind {
        Kind::Cluster => {
            if let Some((net, len)) = cfg.cluster_cidr {
                let mut r = vec![expr::ip_saddr(REG32_0)];
                r.extend(expr::prefix(REG32_0, net, len, false));
                r.extend(expr::set_mark_bits(MASQUERADE_MARK));
                rules.push(r);
            }
        }
        Kind::External | Kind::NodePort => rules.push(expr::set_mark_bits(MASQUERADE_MARK)),
        Kind::Local | Kind::NodePortLocal => {}
    }
    // Registers: saddr, then the service's `daddr . proto . dport` (daddr 0.0.0.0 for a
    // node port), then an index or the chosen endpoint's `address . port`.
    let load = || {
        let mut r = vec![expr::ip_saddr(REG32_0)];
        if kind.node_port() {
            r.push(Expr::Immediate {
                dreg: REG32_0 + 1,
                data: Data::Value(vec![0; 4]),
            });
        } else {
            r.push(expr::ip_daddr(REG32_0 + 1));
        }
        r.push(expr::l4proto(REG32_0 + 2));
        r.push(expr::th_dport(REG32_0 + 3));
        r
    };
    let dnat = Expr::Dnat {
        addr: REG32_0 + 4,
        port: Some(REG32_0 + 5),
    };
    let timeout_ms = affinity.map(|t| u64::from(t) * 1000);
    if affinity.is_some() {
        // A client seen lately goes where it went before, while that endpoint remains.
        let mut r = load();
        r.push(lookup(AFFINITY, REG32_0, Some(REG32_0 + 4)));
        r.push(lookup(AFFINITY_VALID, REG32_0 + 1, None));
        r.push(Expr::Dynset {
            op: expr::DYNSET_UPDATE,
            set: AFFINITY.into(),
            sreg_key: REG32_0,
            sreg_data: Some(REG32_0 + 4),
            timeout_ms,
        });
        r.push(dnat.clone());
        rules.push(r);
    }
    let mut r = load();
    r.push(Expr::Numgen {
        dreg: REG32_0 + 4,
        modulus: n as u32,
    });
    r.push(lookup(BACKENDS, REG32_0 + 1, Some(REG32_0 + 4)));
    if affinity.is_some() {
        // Forget an endpoint that is gone, and remember the new one. (The kernel wants data
        // registers for any change to a map, a deletion too; they are not used.)
        r.push(Expr::Dynset {
            op: expr::DYNSET_DELETE,
            set: AFFINITY.into(),
            sreg_key: REG32_0,
            sreg_data: Some(REG32_0 + 4),
            timeout_ms: None,
        });
        r.push(Expr::Dynset {
            op: expr::DYNSET_ADD,
            set: AFFINITY.into(),
            sreg_key: REG32_0,
            sreg_data: Some(REG32_0 + 4),
            timeout_ms,
        });
    }
    r.push(dnat);
    rules.push(r);
    rules
}

fn hook(hook: u32, priority: i32, kind: &'static str) -> Option<Hook> {
    Some(Hook {
        hook,
        priority,
        kind,
    })
}

fn add_pick_chain(w: &mut Writer, pick: Pick, cfg: &Config) {
    let name = pick_chain(pick);
    w.add_chain(&name, None);
    for r in pick_rules(pick, cfg) {
        w.add_rule(&name, &r);
    }
}

fn elements(m: &BTreeMap<Vec<u8>, Vec<u8>>) -> Vec<Element> {
    m.iter()
        .map(|(k, v)| Element {
            key: k.clone(),
            data: Some(Data::Value(v.clone())),
        })
        .collect()
}

fn verdict_elements(m: &BTreeMap<Vec<u8>, String>) -> Vec<Element> {
    m.iter()
        .map(|(k, c)| Element {
            key: k.clone(),
            data: Some(Data::Verdict(Verdict::Goto(c.clone()))),
        })
        .collect()
}

fn keys<'a>(s: impl IntoIterator<Item = &'a Vec<u8>>) -> Vec<Element> {
    s.into_iter()
        .map(|k| Element {
            key: k.clone(),
            data: None,
        })
        .collect()
}

/// Removes Skiff's table, and with it every rule the proxy wrote (nothing if there is none).
pub fn cleanup() -> Writer {
    let mut w = Writer::new(TABLE);
    w.add_table();
    w.delete_table();
    w
}

/// The whole table, replacing whatever Skiff's table held, in one transaction.
pub fn full(d: &Desired, cfg: &Config) -> Writer {
    let mut w = Writer::new(TABLE);
    // Make sure it exists, so that deleting it cannot fail, then build it anew.
    w.add_table();
    w.delete_table();
    w.add_table();
    for s in sets() {
        w.add_set(&s);
    }
    // The endpoints go in before the rules that look them up, so that each element is not
    // checked against every such rule.
    w.add_elements(BACKENDS, &elements(&d.backends));
    w.add_elements(AFFINITY_VALID, &keys(&d.affinity_endpoints));
    for pick in &d.chains {
        add_pick_chain(&mut w, *pick, cfg);
    }
    w.add_elements(SERVICE_IPS, &verdict_elements(&d.service_ips));
    w.add_elements(NODE_PORTS, &verdict_elements(&d.node_ports));
    w.add_elements(NO_ENDPOINTS, &keys(&d.no_endpoints));
    w.add_elements(NO_ENDPOINT_NODE_PORTS, &keys(&d.no_endpoint_node_ports));
    w.add_elements(HAIRPIN, &keys(&d.hairpin));
    base_chains(&mut w, cfg);
    w
}

/// The hooked chains: service dispatch in NAT prerouting and output, masquerading in NAT
/// postrouting, rejection of services without endpoints in the filter hooks.
fn base_chains(w: &mut Writer, cfg: &Config) {
    // Dispatch: service addresses, then node ports on this node's own addresses.
    for (name, h) in [("nat-prerouting", 0), ("nat-output", 3)] {
        w.add_chain(name, hook(h, -100, "nat"));
        let mut r = load_dest().to_vec();
        r.push(lookup(SERVICE_IPS, REG32_0, Some(REG_VERDICT)));
        w.add_rule(name, &r);
        let mut r = to_local_address().to_vec();
        r.extend(load_proto_port());
        r.push(lookup(NODE_PORTS, REG32_0, Some(REG_VERDICT)));
        w.add_rule(name, &r);
    }
    // Masquerading: what a pick chain marked, and a pod that reached itself.
    w.add_chain("nat-postrouting", hook(4, 100, "nat"));
    let mut r = vec![Expr::Meta {
        key: expr::META_MARK,
        dreg: REG32_0,
    }];
    r.extend(has_bits(REG32_0, MASQUERADE_MARK));
    r.push(Expr::Meta {
        key: expr::META_MARK,
        dreg: 1,
    });
    r.push(Expr::Bitwise {
        sreg: 1,
        dreg: 1,
        mask: (!MASQUERADE_MARK).to_ne_bytes().to_vec(),
        xor: vec![0; 4],
    });
    r.push(Expr::MetaSet {
        key: expr::META_MARK,
        sreg: 1,
    });
    r.push(Expr::Masquerade { fully_random: true });
    w.add_rule("nat-postrouting", &r);
    let mut r = vec![Expr::Ct {
        key: expr::CT_STATUS,
        dreg: REG32_0 + 2,
        original: false,
    }];
    r.extend(has_bits(REG32_0 + 2, 0x20)); // IPS_DST_NAT
    r.push(expr::ip_saddr(REG32_0));
    r.push(expr::ip_daddr(REG32_0 + 1));
    r.push(lookup(HAIRPIN, REG32_0, None));
    // To the service address the pod asked for (as kube-router does), so the reply comes
    // back through this node and the pod does not see a packet from its own address (which
    // it would drop). The bridge port must let frames out where they came in (the bridge
    // CNI plugin's `hairpinMode`).
    r.push(Expr::Ct {
        key: expr::CT_DST_IP,
        dreg: REG32_0 + 4,
        original: true,
    });
    r.push(Expr::Snat { addr: REG32_0 + 4 });
    w.add_rule("nat-postrouting", &r);
    // Pods reaching beyond the cluster's network leave with the node's address.
    if let Some((net, len)) = cfg.cluster_cidr {
        let mut r = vec![expr::ip_saddr(REG32_0)];
        r.extend(expr::prefix(REG32_0, net, len, true));
        r.push(expr::ip_daddr(REG32_0));
        r.extend(expr::prefix(REG32_0, net, len, false));
        r.push(Expr::Masquerade { fully_random: true });
        w.add_rule("nat-postrouting", &r);
    }
    // Rejection: a new connection to a service with no endpoint.
    for (name, h) in [
        ("filter-input", 1),
        ("filter-forward", 2),
        ("filter-output", 3),
    ] {
        w.add_chain(name, hook(h, -10, "filter"));
        let new_conn = || {
            let mut r = vec![Expr::Ct {
                key: expr::CT_STATE,
                dreg: REG32_0 + 8,
                original: false,
            }];
            r.extend(has_bits(REG32_0 + 8, 8)); // NEW
            r
        };
        // TCP gets a reset (connection refused at once), anything else ICMP unreachable.
        for tcp_reset in [true, false] {
            let mut r = new_conn();
            r.extend(load_dest());
            r.push(lookup(NO_ENDPOINTS, REG32_0, None));
            if tcp_reset {
                r.push(is_tcp(REG32_0 + 1));
            }
            r.push(Expr::Reject { tcp_reset });
            w.add_rule(name, &r);
            if h == 1 {
                let mut r = new_conn();
                r.extend(to_local_address());
                r.extend(load_proto_port());
                r.push(lookup(NO_ENDPOINT_NODE_PORTS, REG32_0, None));
                if tcp_reset {
                    r.push(is_tcp(REG32_0));
                }
                r.push(Expr::Reject { tcp_reset });
                w.add_rule(name, &r);
            }
        }
    }
}

/// What changes `old` into `new`: element updates, and pick chains for new endpoint
/// counts. Chains no longer used stay until the next full sync.
pub fn diff(old: &Desired, new: &Desired, cfg: &Config) -> Writer {
    let mut w = Writer::new(TABLE);
    // Endpoints first: deletions (and changed values, which are deleted and added again).
    let gone: Vec<&Vec<u8>> = old
        .backends
        .iter()
        .filter(|(k, v)| new.backends.get(*k) != Some(v))
        .map(|(k, _)| k)
        .collect();
    w.delete_elements(BACKENDS, &keys(gone));
    let added: BTreeMap<Vec<u8>, Vec<u8>> = new
        .backends
        .iter()
        .filter(|(k, v)| old.backends.get(*k) != Some(v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    w.add_elements(BACKENDS, &elements(&added));
    for pick in new.chains.difference(&old.chains) {
        add_pick_chain(&mut w, *pick, cfg);
    }
    for (set, o, n) in [
        (SERVICE_IPS, &old.service_ips, &new.service_ips),
        (NODE_PORTS, &old.node_ports, &new.node_ports),
    ] {
        let gone: Vec<&Vec<u8>> = o
            .iter()
            .filter(|(k, v)| n.get(*k) != Some(v))
            .map(|(k, _)| k)
            .collect();
        w.delete_elements(set, &keys(gone));
        let added: BTreeMap<Vec<u8>, String> = n
            .iter()
            .filter(|(k, v)| o.get(*k) != Some(v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        w.add_elements(set, &verdict_elements(&added));
    }
    for (set, o, n) in [
        (NO_ENDPOINTS, &old.no_endpoints, &new.no_endpoints),
        (
            NO_ENDPOINT_NODE_PORTS,
            &old.no_endpoint_node_ports,
            &new.no_endpoint_node_ports,
        ),
        (HAIRPIN, &old.hairpin, &new.hairpin),
        (
            AFFINITY_VALID,
            &old.affinity_endpoints,
            &new.affinity_endpoints,
        ),
    ] {
        w.delete_elements(set, &keys(o.difference(n)));
        w.add_elements(set, &keys(n.difference(o)));
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Endpoint, TCP};

    fn port(eps: &[[u8; 4]]) -> ServicePort {
        ServicePort {
            name: "ns/web:80".into(),
            proto: TCP,
            cluster_ips: vec![Ipv4Addr::new(10, 96, 0, 10)],
            port: 80,
            node_port: Some(30080),
            load_balancer_ips: vec![],
            affinity_timeout: None,
            external_local: false,
            cluster_endpoints: eps
                .iter()
                .map(|ip| Endpoint {
                    ip: Ipv4Addr::from(*ip),
                    port: 8080,
                })
                .collect(),
            external_endpoints: eps
                .iter()
                .map(|ip| Endpoint {
                    ip: Ipv4Addr::from(*ip),
                    port: 8080,
                })
                .collect(),
            local_endpoints: vec![],
        }
    }

    #[test]
    fn a_service_goes_to_the_chain_for_its_endpoint_count() {
        let d = Desired::build(&[port(&[[10, 1, 0, 2], [10, 1, 0, 3]])]);
        let vip = expr::addr_proto_port(Ipv4Addr::new(10, 96, 0, 10), TCP, 80);
        assert_eq!(
            d.service_ips.get(&vip).map(String::as_str),
            Some("cluster-2")
        );
        assert_eq!(
            d.node_ports
                .get(&proto_port(TCP, 30080))
                .map(String::as_str),
            Some("nodeport-2")
        );
        assert_eq!(
            d.backends.len(),
            4,
            "two for the ClusterIP, two for the node port"
        );
        assert!(
            d.chains.contains(&(Kind::Cluster, 2, None))
                && d.chains.contains(&(Kind::NodePort, 2, None))
        );
        assert!(d.no_endpoints.is_empty());
        // Without endpoints: rejected, nothing to pick from.
        let d = Desired::build(&[port(&[])]);
        assert!(d.service_ips.is_empty() && d.backends.is_empty() && d.chains.is_empty());
        assert!(d.no_endpoints.contains(&vip));
        assert!(d.no_endpoint_node_ports.contains(&proto_port(TCP, 30080)));
    }

    #[test]
    fn a_diff_touches_only_what_changed() {
        let cfg = Config::default();
        let a = Desired::build(&[port(&[[10, 1, 0, 2], [10, 1, 0, 3]])]);
        assert!(diff(&a, &a, &cfg).is_empty());
        // One endpoint fewer: its two backend entries go, both addresses move to the
        // one-endpoint chains, which are created.
        let b = Desired::build(&[port(&[[10, 1, 0, 2]])]);
        let w = diff(&a, &b, &cfg);
        // delete backends, 2 new chains (+1 rule each, + the masquerade rule of the node
        // port chain), service-ips delete + add, node-ports delete + add.
        assert_eq!(w.len(), 1 + 2 * 2 + 1 + 2 + 2, "{}", w.len());
    }
}
