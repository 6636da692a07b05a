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

/// A Service as the proxy needs it: what [`ServicePort`]s are worked out from, kept in
/// place of the whole object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceInfo {
    /// The ClusterIPs (IPv4 only).
    pub cluster_ips: Vec<Ipv4Addr>,
    /// NodePort or LoadBalancer.
    pub exposed: bool,
    /// LoadBalancer ingress addresses.
    pub load_balancer_ips: Vec<Ipv4Addr>,
    /// `sessionAffinity: ClientIP`: its timeout in seconds.
    pub affinity_timeout: Option<u32>,
    /// `externalTrafficPolicy: Local` (on an exposed service).
    pub external_local: bool,
    /// `internalTrafficPolicy: Local`.
    pub internal_local: bool,
    /// Its ports.
    pub ports: Vec<PortSpec>,
}

/// One port of a Service's spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSpec {
    /// Its name ("" when unnamed).
    pub name: String,
    /// The protocol number.
    pub proto: u8,
    /// The service port.
    pub port: u16,
    /// The node port, for NodePort and LoadBalancer services.
    pub node_port: Option<u16>,
}

impl ServiceInfo {
    /// What the proxy needs of `svc`; `None` for a service it does nothing for (headless,
    /// ExternalName, no IPv4 ClusterIP).
    pub fn new(svc: &Service) -> Option<ServiceInfo> {
        let spec = svc.spec.as_ref()?;
        if spec.type_.as_deref() == Some("ExternalName") {
            return None;
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
            return None;
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
        let ports = spec
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                Some(PortSpec {
                    name: p.name.clone().unwrap_or_default(),
                    proto: proto_number(p.protocol.as_deref())?,
                    port: u16::try_from(p.port).ok()?,
                    node_port: p
                        .node_port
                        .and_then(|n| u16::try_from(n).ok())
                        .filter(|_| exposed),
                })
            })
            .collect();
        Some(ServiceInfo {
            cluster_ips,
            exposed,
            load_balancer_ips,
            affinity_timeout,
            external_local: exposed && spec.external_traffic_policy.as_deref() == Some("Local"),
            internal_local: spec.internal_traffic_policy.as_deref() == Some("Local"),
            ports,
        })
    }
}

/// An EndpointSlice as the proxy needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliceInfo {
    /// Its ports: name ("" when unnamed), protocol number, port.
    pub ports: Vec<(String, u8, u16)>,
    /// Its endpoints.
    pub endpoints: Vec<SliceEndpoint>,
}

/// One endpoint of a slice, with its conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SliceEndpoint {
    /// Its (first) address.
    pub ip: Ipv4Addr,
    /// `conditions.ready` (unset: ready).
    pub ready: bool,
    /// `conditions.serving` (unset: as ready).
    pub serving: bool,
    /// `conditions.terminating`.
    pub terminating: bool,
    /// On this node.
    pub local: bool,
    /// No `nodeName`: it may be on this node.
    pub unplaced: bool,
}

impl SliceInfo {
    /// What the proxy needs of `slice`, seen from node `node`; `None` for a slice that is
    /// not of IPv4 addresses.
    pub fn new(slice: &EndpointSlice, node: &str) -> Option<SliceInfo> {
        if slice.address_type != "IPv4" {
            return None;
        }
        let ports = slice
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                Some((
                    p.name.clone().unwrap_or_default(),
                    proto_number(p.protocol.as_deref())?,
                    u16::try_from(p.port?).ok()?,
                ))
            })
            .collect();
        let endpoints = slice
            .endpoints
            .iter()
            .filter_map(|e| {
                let ip = e.addresses.first()?.parse().ok()?;
                let c = e.conditions.as_ref();
                let ready = c.and_then(|c| c.ready).unwrap_or(true);
                Some(SliceEndpoint {
                    ip,
                    ready,
                    serving: c.and_then(|c| c.serving).unwrap_or(ready),
                    terminating: c.and_then(|c| c.terminating).unwrap_or(false),
                    local: e.node_name.as_deref() == Some(node),
                    unplaced: e.node_name.as_deref().unwrap_or("").is_empty(),
                })
            })
            .collect();
        Some(SliceInfo { ports, endpoints })
    }
}

/// kube-proxy's choice among candidates: the ready ones; when there are none, the ones
/// still serving while they terminate.
fn usable(cands: &[(Endpoint, SliceEndpoint)]) -> Vec<Endpoint> {
    let mut ready: Vec<Endpoint> = cands
        .iter()
        .filter(|(_, c)| c.ready)
        .map(|(e, _)| e.clone())
        .collect();
    if ready.is_empty() {
        ready = cands
            .iter()
            .filter(|(_, c)| c.serving && c.terminating)
            .map(|(e, _)| e.clone())
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

/// The service ports of service `namespace/name` with endpoints from `slices` (its
/// EndpointSlices).
pub fn ports(
    namespace: &str,
    name: &str,
    svc: &ServiceInfo,
    slices: &[&SliceInfo],
) -> Vec<ServicePort> {
    let mut out = Vec::with_capacity(svc.ports.len());
    for p in &svc.ports {
        let mut cands: Vec<(Endpoint, SliceEndpoint)> = Vec::new();
        for slice in slices {
            let Some((_, _, port)) = slice
                .ports
                .iter()
                .find(|(n, proto, _)| *n == p.name && *proto == p.proto)
            else {
                continue;
            };
            cands.extend(slice.endpoints.iter().map(|e| {
                (
                    Endpoint {
                        ip: e.ip,
                        port: *port,
                    },
                    *e,
                )
            }));
        }
        let local: Vec<(Endpoint, SliceEndpoint)> =
            cands.iter().filter(|(_, c)| c.local).cloned().collect();
        let cluster_endpoints = usable(if svc.internal_local { &local } else { &cands });
        let external_endpoints = if !svc.exposed && svc.load_balancer_ips.is_empty() {
            Vec::new()
        } else if svc.external_local {
            usable(&local)
        } else {
            usable(&cands)
        };
        // Hairpin candidates: this node's endpoints, and those of no known node (a slice
        // written by hand), which may be here too.
        let mut local_endpoints: Vec<Endpoint> = cands
            .iter()
            .filter(|(_, c)| c.local || c.unplaced)
            .map(|(e, _)| e.clone())
            .collect();
        local_endpoints.sort();
        local_endpoints.dedup();
        let shown = if p.name.is_empty() {
            p.port.to_string()
        } else {
            p.name.clone()
        };
        out.push(ServicePort {
            name: format!("{namespace}/{name}:{shown}"),
            proto: p.proto,
            cluster_ips: svc.cluster_ips.clone(),
            port: p.port,
            node_port: p.node_port,
            load_balancer_ips: svc.load_balancer_ips.clone(),
            affinity_timeout: svc.affinity_timeout,
            external_local: svc.external_local,
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

    /// The service ports of `svc` with endpoints from `slices` (the service's EndpointSlices),
    /// seen from node `node`. Services without a ClusterIP (headless) and ExternalName services
    /// have none.
    fn service_ports(svc: &Service, slices: &[&EndpointSlice], node: &str) -> Vec<ServicePort> {
        let Some(info) = ServiceInfo::new(svc) else {
            return Vec::new();
        };
        let slices: Vec<SliceInfo> = slices
            .iter()
            .filter_map(|s| SliceInfo::new(s, node))
            .collect();
        let slices: Vec<&SliceInfo> = slices.iter().collect();
        ports(
            svc.metadata.namespace.as_deref().unwrap_or(""),
            svc.metadata.name.as_deref().unwrap_or(""),
            &info,
            &slices,
        )
    }

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
