//! What the proxy programs, worked out from Services and EndpointSlices: for each service
//! port, its addresses and the endpoints each kind of traffic goes to, chosen as kube-proxy
//! chooses them.

use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// IANA protocol numbers.
pub const TCP: u8 = 6;
/// UDP.
pub const UDP: u8 = 17;
/// SCTP.
pub const SCTP: u8 = 132;

/// One endpoint of a service port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Endpoint {
    /// Its address.
    pub ip: Ipv4Addr,
    /// Its port (the target port, resolved by name per endpoint).
    pub port: u16,
}

/// One port of one service, as the kernel rules need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    /// `namespace/name:port` (the port's name, or its number when unnamed), for logs.
    pub name: String,
    /// The protocol number.
    pub proto: u8,
    /// The ClusterIPs (IPv4 only).
    pub cluster_ips: Vec<Ipv4Addr>,
    /// The service port.
    pub port: u16,
    /// The node port, for NodePort and LoadBalancer services.
    pub node_port: Option<u16>,
    /// LoadBalancer ingress addresses.
    pub load_balancer_ips: Vec<Ipv4Addr>,
    /// `sessionAffinity: ClientIP`: its timeout in seconds.
    pub affinity_timeout: Option<u32>,
    /// `externalTrafficPolicy: Local`: external traffic keeps its client address and only
    /// goes to endpoints on this node.
    pub external_local: bool,
    /// Endpoints for traffic to the ClusterIPs (empty: it is rejected).
    pub cluster_endpoints: Vec<Endpoint>,
    /// Endpoints for traffic to node ports and load-balancer addresses.
    pub external_endpoints: Vec<Endpoint>,
    /// Endpoints on this node, and those whose node is unknown (hairpin traffic from them to
    /// themselves is masqueraded).
    pub local_endpoints: Vec<Endpoint>,
}

/// An endpoint as the slices describe it.
#[derive(Debug, Clone)]
struct Candidate {
    ep: Endpoint,
    ready: bool,
    serving: bool,
    terminating: bool,
    local: bool,
    /// No `nodeName`: it may be on this node.
    unplaced: bool,
}

/// kube-proxy's choice among candidates: the ready ones; when there are none, the ones
/// still serving while they terminate.
fn usable(cands: &[&Candidate]) -> Vec<Endpoint> {
    let mut ready: Vec<Endpoint> = cands
        .iter()
        .filter(|c| c.ready)
        .map(|c| c.ep.clone())
        .collect();
    if ready.is_empty() {
        ready = cands
            .iter()
            .filter(|c| c.serving && c.terminating)
            .map(|c| c.ep.clone())
            .collect();
    }
    ready.sort();
    ready.dedup();
    ready
}

fn proto_number(p: Option<&str>) -> Option<u8> {
    match p.unwrap_or("TCP") {
        "TCP" => Some(TCP),
        "UDP" => Some(UDP),
        "SCTP" => Some(SCTP),
        _ => None,
    }
}

/// The service ports of `svc` with endpoints from `slices` (the service's EndpointSlices),
/// seen from node `node`. Services without a ClusterIP (headless) and ExternalName services
/// have none.
pub fn service_ports(svc: &Service, slices: &[&EndpointSlice], node: &str) -> Vec<ServicePort> {
    let Some(spec) = svc.spec.as_ref() else {
        return Vec::new();
    };
    if spec.type_.as_deref() == Some("ExternalName") {
        return Vec::new();
    }
    let mut cluster_ips: Vec<Ipv4Addr> = spec
        .cluster_ips
        .iter()
        .flatten()
        .chain(spec.cluster_ip.iter())
        .filter_map(|ip| ip.parse().ok())
        .collect();
    cluster_ips.sort();
    cluster_ips.dedup();
    if cluster_ips.is_empty() {
        return Vec::new();
    }
    let exposed = matches!(spec.type_.as_deref(), Some("NodePort" | "LoadBalancer"));
    let load_balancer_ips: Vec<Ipv4Addr> = if spec.type_.as_deref() == Some("LoadBalancer") {
        svc.status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|i| i.ip.as_deref()?.parse().ok())
            .collect()
    } else {
        Vec::new()
    };
    let affinity_timeout = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
        spec.session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds)
            .map(|t| t.max(1) as u32)
            .unwrap_or(10_800)
    });
    let external_local = exposed && spec.external_traffic_policy.as_deref() == Some("Local");
    let internal_local = spec.internal_traffic_policy.as_deref() == Some("Local");
    let ns = svc.metadata.namespace.as_deref().unwrap_or("");
    let name = svc.metadata.name.as_deref().unwrap_or("");

    let mut out = Vec::new();
    for p in spec.ports.iter().flatten() {
        let Some(proto) = proto_number(p.protocol.as_deref()) else {
            continue;
        };
        let port_name = p.name.clone().unwrap_or_default();
        let mut cands = Vec::new();
        for slice in slices {
            if slice.address_type != "IPv4" {
                continue;
            }
            let Some(target) = slice.ports.iter().flatten().find(|sp| {
                sp.name.clone().unwrap_or_default() == port_name
                    && proto_number(sp.protocol.as_deref()) == Some(proto)
            }) else {
                continue;
            };
            let Some(port) = target.port.and_then(|p| u16::try_from(p).ok()) else {
                continue;
            };
            for e in &slice.endpoints {
                let Some(ip) = e.addresses.first().and_then(|a| a.parse().ok()) else {
                    continue;
                };
                let c = e.conditions.as_ref();
                let ready = c.and_then(|c| c.ready).unwrap_or(true);
                cands.push(Candidate {
                    ep: Endpoint { ip, port },
                    ready,
                    serving: c.and_then(|c| c.serving).unwrap_or(ready),
                    terminating: c.and_then(|c| c.terminating).unwrap_or(false),
                    local: e.node_name.as_deref() == Some(node),
                    unplaced: e.node_name.as_deref().unwrap_or("").is_empty(),
                });
            }
        }
        let all: Vec<&Candidate> = cands.iter().collect();
        let local: Vec<&Candidate> = cands.iter().filter(|c| c.local).collect();
        let cluster_endpoints = usable(if internal_local { &local } else { &all });
        let external_endpoints = if !exposed && load_balancer_ips.is_empty() {
            Vec::new()
        } else if external_local {
            usable(&local)
        } else {
            usable(&all)
        };
        // Hairpin candidates: this node's endpoints, and those of no known node (a slice
        // written by hand), which may be here too.
        let mut local_endpoints: Vec<Endpoint> = cands
            .iter()
            .filter(|c| c.local || c.unplaced)
            .map(|c| c.ep.clone())
            .collect();
        local_endpoints.sort();
        local_endpoints.dedup();
        let shown = if port_name.is_empty() {
            p.port.to_string()
        } else {
            port_name
        };
        out.push(ServicePort {
            name: format!("{ns}/{name}:{shown}"),
            proto,
            cluster_ips: cluster_ips.clone(),
            port: u16::try_from(p.port).unwrap_or(0),
            node_port: if exposed {
                p.node_port.and_then(|n| u16::try_from(n).ok())
            } else {
                None
            },
            load_balancer_ips: load_balancer_ips.clone(),
            affinity_timeout,
            external_local,
            cluster_endpoints,
            external_endpoints,
            local_endpoints,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(spec: serde_json::Value) -> Service {
        serde_json::from_value(
            json!({"metadata": {"name": "web", "namespace": "ns"}, "spec": spec}),
        )
        .unwrap()
    }

    fn slice(ports: serde_json::Value, endpoints: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(json!({"metadata": {"name": "web-x", "namespace": "ns"},
            "addressType": "IPv4", "ports": ports, "endpoints": endpoints}))
        .unwrap()
    }

    fn ep(ip: [u8; 4], port: u16) -> Endpoint {
        Endpoint {
            ip: Ipv4Addr::from(ip),
            port,
        }
    }

    #[test]
    fn named_target_ports_resolve_per_slice_and_only_ready_endpoints_count() {
        let s = svc(json!({"clusterIP": "10.96.0.10", "ports": [
            {"name": "http", "port": 80, "protocol": "TCP"},
            {"name": "dns", "port": 53, "protocol": "UDP"}]}));
        let a = slice(
            json!([{"name": "http", "port": 8080, "protocol": "TCP"}, {"name": "dns", "port": 5353, "protocol": "UDP"}]),
            json!([{"addresses": ["10.1.0.2"], "conditions": {"ready": true}, "nodeName": "n1"},
                   {"addresses": ["10.1.0.3"], "conditions": {"ready": false, "serving": false}, "nodeName": "n2"}]),
        );
        // Another slice whose pods name the same port differently.
        let b = slice(
            json!([{"name": "http", "port": 9090, "protocol": "TCP"}]),
            json!([{"addresses": ["10.2.0.2"], "nodeName": "n2"}]),
        );
        let ports = service_ports(&s, &[&a, &b], "n1");
        assert_eq!(ports.len(), 2);
        let http = &ports[0];
        assert_eq!(
            (http.name.as_str(), http.proto, http.port),
            ("ns/web:http", TCP, 80)
        );
        assert_eq!(http.cluster_ips, vec![Ipv4Addr::new(10, 96, 0, 10)]);
        assert_eq!(
            http.cluster_endpoints,
            vec![ep([10, 1, 0, 2], 8080), ep([10, 2, 0, 2], 9090)]
        );
        assert_eq!(http.local_endpoints, vec![ep([10, 1, 0, 2], 8080)]);
        assert!(http.external_endpoints.is_empty(), "not exposed outside");
        let dns = &ports[1];
        assert_eq!((dns.proto, dns.port), (UDP, 53));
        assert_eq!(dns.cluster_endpoints, vec![ep([10, 1, 0, 2], 5353)]);
    }

    #[test]
    fn terminating_endpoints_serve_only_when_none_is_ready() {
        let s = svc(json!({"clusterIP": "10.96.0.10", "ports": [{"port": 80}]}));
        let terminating = json!({"addresses": ["10.1.0.9"],
            "conditions": {"ready": false, "serving": true, "terminating": true}});
        let both = slice(
            json!([{"port": 80}]),
            json!([{"addresses": ["10.1.0.2"], "conditions": {"ready": true}}, terminating]),
        );
        let ports = service_ports(&s, &[&both], "n1");
        assert_eq!(ports[0].cluster_endpoints, vec![ep([10, 1, 0, 2], 80)]);
        let only = slice(json!([{"port": 80}]), json!([terminating]));
        let ports = service_ports(&s, &[&only], "n1");
        assert_eq!(ports[0].name, "ns/web:80");
        assert_eq!(ports[0].cluster_endpoints, vec![ep([10, 1, 0, 9], 80)]);
        // Neither ready nor serving: nothing, and the service rejects.
        let gone = slice(
            json!([{"port": 80}]),
            json!([{"addresses": ["10.1.0.9"], "conditions": {"ready": false, "serving": false, "terminating": true}}]),
        );
        assert!(service_ports(&s, &[&gone], "n1")[0]
            .cluster_endpoints
            .is_empty());
    }

    #[test]
    fn traffic_policies_and_node_ports() {
        let eps = slice(
            json!([{"port": 8080}]),
            json!([{"addresses": ["10.1.0.2"], "nodeName": "n1"}, {"addresses": ["10.2.0.2"], "nodeName": "n2"}]),
        );
        let s = svc(json!({"type": "NodePort", "clusterIP": "10.96.0.10",
            "externalTrafficPolicy": "Local", "ports": [{"port": 80, "nodePort": 30080}]}));
        let p = &service_ports(&s, &[&eps], "n2")[0];
        assert_eq!(p.node_port, Some(30080));
        assert!(p.external_local);
        assert_eq!(p.external_endpoints, vec![ep([10, 2, 0, 2], 8080)]);
        assert_eq!(
            p.cluster_endpoints.len(),
            2,
            "ClusterIP traffic still goes everywhere"
        );
        let s = svc(json!({"type": "ClusterIP", "clusterIP": "10.96.0.10",
            "internalTrafficPolicy": "Local", "ports": [{"port": 80, "nodePort": 30080}]}));
        let p = &service_ports(&s, &[&eps], "n3")[0];
        assert_eq!(p.node_port, None, "a ClusterIP service opens no node port");
        assert!(p.cluster_endpoints.is_empty(), "no endpoint on this node");
        let s = svc(
            json!({"clusterIP": "10.96.0.10", "sessionAffinity": "ClientIP",
            "ports": [{"port": 80}]}),
        );
        assert_eq!(
            service_ports(&s, &[&eps], "n1")[0].affinity_timeout,
            Some(10_800)
        );
        let headless = svc(json!({"clusterIP": "None", "ports": [{"port": 80}]}));
        assert!(service_ports(&headless, &[&eps], "n1").is_empty());
    }

    #[test]
    fn load_balancer_addresses_come_from_the_status() {
        let mut s = svc(json!({"type": "LoadBalancer", "clusterIP": "10.96.0.10",
            "ports": [{"port": 80, "nodePort": 30080}]}));
        s.status = serde_json::from_value(
            json!({"loadBalancer": {"ingress": [{"ip": "192.168.5.10"}, {"hostname": "lb.example"}]}}),
        )
        .unwrap();
        let eps = slice(
            json!([{"port": 8080}]),
            json!([{"addresses": ["10.1.0.2"]}]),
        );
        let p = &service_ports(&s, &[&eps], "n1")[0];
        assert_eq!(p.load_balancer_ips, vec![Ipv4Addr::new(192, 168, 5, 10)]);
        assert_eq!(p.external_endpoints, vec![ep([10, 1, 0, 2], 8080)]);
    }
}
