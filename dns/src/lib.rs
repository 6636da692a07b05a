//! Skiff's cluster DNS, following Kubernetes' DNS-based service discovery specification:
//!
//! - `svc.ns.svc.<zone>`: A for a ClusterIP service's address; for a headless service, one A
//!   per ready endpoint; a CNAME for an ExternalName service.
//! - `host.svc.ns.svc.<zone>`: A for the endpoint of a headless service with that hostname
//!   (a pod's `hostname` with `subdomain` naming the service), or whose address, dashed, it
//!   is.
//! - `_port._proto.svc.ns.svc.<zone>`: SRV for a named port (for a headless service, one per
//!   endpoint), with the targets' A records as additional answers.
//! - `a-b-c-d.ns.pod.<zone>`: A for `a.b.c.d`.
//!
//! A name under the zone that names nothing is NXDOMAIN; one that exists but has no record of
//! the asked type (AAAA on an IPv4 cluster) is an empty NOERROR answer, both with the zone's
//! SOA, so resolvers cache them briefly. [`Zone`] is rebuilt from the informers' stores on
//! every change; a query reads the current one.

pub mod udp;

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::str::FromStr;
use std::sync::Arc;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, CNAME, SOA, SRV};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The TTL of every answer, in seconds (CoreDNS's default for cluster records).
pub const TTL: u32 = 5;

/// One endpoint of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Its address.
    pub ip: Ipv4Addr,
    /// Its hostname in the service's subdomain (a pod's `hostname`), if it has one.
    pub hostname: Option<String>,
    /// Named ports: name → (protocol, port).
    pub ports: Vec<(String, String, u16)>,
}

/// What a service name resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A ClusterIP service: its address and named ports `(name, protocol, port)`.
    Cluster(Ipv4Addr, Vec<(String, String, u16)>),
    /// A headless service: its endpoints.
    Headless(Vec<Endpoint>),
    /// An ExternalName service.
    External(String),
}

/// The cluster's names, as of the last rebuild.
#[derive(Debug, Default)]
pub struct Zone {
    /// `(namespace, service)` → what it resolves to.
    pub services: HashMap<(String, String), Target>,
    /// Namespaces with at least one service.
    pub namespaces: std::collections::HashSet<String>,
}

/// The named ports among `(name, protocol, port)`, as `(name, protocol, port)` (TCP when
/// no protocol is given).
fn named_ports<'a>(
    ports: impl Iterator<Item = (Option<&'a str>, Option<&'a str>, Option<i32>)>,
) -> Vec<(String, String, u16)> {
    ports
        .filter_map(|(name, proto, port)| {
            let name = name.filter(|n| !n.is_empty())?;
            Some((
                name.to_string(),
                proto.unwrap_or("TCP").to_string(),
                u16::try_from(port?).ok()?,
            ))
        })
        .collect()
}

impl Zone {
    /// Builds the zone from Services and their EndpointSlices.
    pub fn build(services: &[Arc<Service>], slices: &[Arc<EndpointSlice>]) -> Zone {
        let by_service = skiff_client::services::slices_by_service(slices);
        let mut zone = Zone::default();
        for svc in services {
            let ns = svc.metadata.namespace.clone().unwrap_or_default();
            let name = svc.metadata.name.clone().unwrap_or_default();
            let Some(spec) = &svc.spec else { continue };
            let target = if spec.type_.as_deref() == Some("ExternalName") {
                match &spec.external_name {
                    Some(n) if !n.is_empty() => Target::External(n.clone()),
                    _ => continue,
                }
            } else if spec.cluster_ip.as_deref() == Some("None") {
                let publish_all = spec.publish_not_ready_addresses == Some(true);
                let mut eps = Vec::new();
                for slice in by_service
                    .get(&(ns.as_str(), name.as_str()))
                    .into_iter()
                    .flatten()
                {
                    if slice.address_type != "IPv4" {
                        continue;
                    }
                    let ports = named_ports(
                        slice
                            .ports
                            .iter()
                            .flatten()
                            .map(|p| (p.name.as_deref(), p.protocol.as_deref(), p.port)),
                    );
                    for e in &slice.endpoints {
                        let ready = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
                        if !ready && !publish_all {
                            continue;
                        }
                        for a in &e.addresses {
                            if let Ok(ip) = a.parse() {
                                eps.push(Endpoint {
                                    ip,
                                    hostname: e.hostname.clone(),
                                    ports: ports.clone(),
                                });
                            }
                        }
                    }
                }
                eps.sort_by_key(|e| e.ip);
                eps.dedup_by_key(|e| e.ip);
                Target::Headless(eps)
            } else {
                let Some(ip) = spec.cluster_ip.as_deref().and_then(|i| i.parse().ok()) else {
                    continue;
                };
                let ports = named_ports(
                    spec.ports
                        .iter()
                        .flatten()
                        .map(|p| (p.name.as_deref(), p.protocol.as_deref(), Some(p.port))),
                );
                Target::Cluster(ip, ports)
            };
            zone.namespaces.insert(ns.clone());
            zone.services.insert((ns, name), target);
        }
        zone
    }
}

/// The cluster domain's answers.
pub struct Resolver {
    domain: Name,
    soa: Record,
}

/// What [`Resolver::resolve`] made of a query.
pub enum Outcome {
    /// The answer.
    Answer(Message),
    /// Not in the cluster domain: for the upstream servers.
    Forward,
}

fn dashed(ip: Ipv4Addr) -> String {
    ip.to_string().replace('.', "-")
}

fn a(name: &Name, ip: Ipv4Addr) -> Record {
    Record::from_rdata(name.clone(), TTL, RData::A(A(ip)))
}

impl Resolver {
    /// A resolver for `domain` (e.g. `cluster.local`).
    pub fn new(domain: &str) -> anyhow::Result<Resolver> {
        let domain = Name::from_str(&format!("{}.", domain.trim_end_matches('.')))?;
        let mname = Name::from_str("ns.dns.")?.append_domain(&domain)?;
        let rname = Name::from_str("hostmaster.")?.append_domain(&domain)?;
        let soa = Record::from_rdata(
            domain.clone(),
            TTL,
            RData::SOA(SOA::new(mname, rname, 1, 7200, 1800, 86400, TTL)),
        );
        Ok(Resolver { domain, soa })
    }

    /// The cluster domain.
    pub fn domain(&self) -> &Name {
        &self.domain
    }

    /// Answers `query` from `zone`, or says it is for upstream.
    pub fn resolve(&self, query: &Message, zone: &Zone) -> Outcome {
        let mut resp = Message::new(
            query.metadata.id,
            MessageType::Response,
            query.metadata.op_code,
        );
        resp.metadata.recursion_desired = query.metadata.recursion_desired;
        resp.metadata.recursion_available = true;
        let Some(q) = query.queries.first() else {
            resp.metadata.response_code = ResponseCode::FormErr;
            return Outcome::Answer(resp);
        };
        resp.add_query(q.clone());
        if query.metadata.op_code != OpCode::Query || query.queries.len() != 1 {
            resp.metadata.response_code = ResponseCode::NotImp;
            return Outcome::Answer(resp);
        }
        let name = q.name().to_lowercase();
        let fqdn = if name.is_fqdn() {
            name.clone()
        } else {
            let mut n = name.clone();
            n.set_fqdn(true);
            n
        };
        if !self.domain.zone_of(&fqdn) {
            return Outcome::Forward;
        }
        resp.metadata.authoritative = true;
        if q.query_class() != DNSClass::IN && q.query_class() != DNSClass::ANY {
            resp.metadata.response_code = ResponseCode::NXDomain;
            resp.add_authority(self.soa.clone());
            return Outcome::Answer(resp);
        }
        // The labels below the zone, nearest the zone first.
        let depth = fqdn.num_labels() - self.domain.num_labels();
        let labels: Vec<String> = fqdn
            .iter()
            .take(depth as usize)
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .rev()
            .collect();
        let found = self.lookup(&fqdn, &labels, zone);
        match found {
            None => {
                resp.metadata.response_code = ResponseCode::NXDomain;
                resp.add_authority(self.soa.clone());
            }
            Some((records, extra)) => {
                let qt = q.query_type();
                let mut any = false;
                for r in records {
                    let ty = r.record_type();
                    if qt == RecordType::ANY || ty == qt || ty == RecordType::CNAME {
                        resp.add_answer(r);
                        any = true;
                    }
                }
                if any && (qt == RecordType::SRV || qt == RecordType::ANY) {
                    for r in extra {
                        resp.add_additional(r);
                    }
                }
                if !any {
                    resp.add_authority(self.soa.clone());
                }
                if qt == RecordType::SOA && labels.is_empty() {
                    resp.add_answer(self.soa.clone());
                }
            }
        }
        Outcome::Answer(resp)
    }

    /// The records of a name under the zone (`None`: it does not exist), with additional
    /// records for SRV targets.
    fn lookup(
        &self,
        fqdn: &Name,
        labels: &[String],
        zone: &Zone,
    ) -> Option<(Vec<Record>, Vec<Record>)> {
        let l: Vec<&str> = labels.iter().map(String::as_str).collect();
        let svc_name = |ns: &str, svc: &str| -> Name {
            Name::from_str(&format!("{svc}.{ns}.svc.{}", self.domain))
                .unwrap_or_else(|_| fqdn.clone())
        };
        match l.as_slice() {
            // The zone itself and its fixed subdomains exist, without records.
            [] | ["svc"] | ["pod"] => Some((vec![], vec![])),
            ["svc", ns] => zone.namespaces.contains(*ns).then(|| (vec![], vec![])),
            ["svc", ns, svc] => match zone.services.get(&(ns.to_string(), svc.to_string()))? {
                Target::Cluster(ip, _) => Some((vec![a(fqdn, *ip)], vec![])),
                Target::Headless(eps) => {
                    Some((eps.iter().map(|e| a(fqdn, e.ip)).collect(), vec![]))
                }
                Target::External(ext) => {
                    let target = Name::from_str(&format!("{}.", ext.trim_end_matches('.'))).ok()?;
                    Some((
                        vec![Record::from_rdata(
                            fqdn.clone(),
                            TTL,
                            RData::CNAME(CNAME(target)),
                        )],
                        vec![],
                    ))
                }
            },
            ["svc", ns, svc, proto, port] if proto.starts_with('_') && port.starts_with('_') => {
                let (proto, port) = (&proto[1..], &port[1..]);
                let t = zone.services.get(&(ns.to_string(), svc.to_string()))?;
                let base = svc_name(ns, svc);
                let matches = |(n, p, _): &(String, String, u16)| {
                    n.eq_ignore_ascii_case(port) && p.eq_ignore_ascii_case(proto)
                };
                let (mut answers, mut extra) = (Vec::new(), Vec::new());
                match t {
                    Target::Cluster(ip, ports) => {
                        for (_, _, num) in ports.iter().filter(|p| matches(p)) {
                            answers.push(Record::from_rdata(
                                fqdn.clone(),
                                TTL,
                                RData::SRV(SRV::new(0, 100, *num, base.clone())),
                            ));
                            extra.push(a(&base, *ip));
                        }
                    }
                    Target::Headless(eps) => {
                        for e in eps {
                            for (_, _, num) in e.ports.iter().filter(|p| matches(p)) {
                                let host = e.hostname.clone().unwrap_or_else(|| dashed(e.ip));
                                let Ok(target) =
                                    Name::from_str(&host).and_then(|h| h.append_domain(&base))
                                else {
                                    continue;
                                };
                                answers.push(Record::from_rdata(
                                    fqdn.clone(),
                                    TTL,
                                    RData::SRV(SRV::new(0, 100, *num, target.clone())),
                                ));
                                extra.push(a(&target, e.ip));
                            }
                        }
                    }
                    Target::External(_) => return None,
                }
                (!answers.is_empty()).then_some((answers, extra))
            }
            ["svc", ns, svc, host] => {
                match zone.services.get(&(ns.to_string(), svc.to_string()))? {
                    Target::Headless(eps) => {
                        let recs: Vec<Record> = eps
                            .iter()
                            .filter(|e| {
                                e.hostname
                                    .as_deref()
                                    .is_some_and(|h| h.eq_ignore_ascii_case(host))
                                    || dashed(e.ip) == *host
                            })
                            .map(|e| a(fqdn, e.ip))
                            .collect();
                        (!recs.is_empty()).then_some((recs, vec![]))
                    }
                    _ => None,
                }
            }
            ["pod", _ns, host] => {
                let ip: Ipv4Addr = host.replace('-', ".").parse().ok()?;
                Some((vec![a(fqdn, ip)], vec![]))
            }
            _ => None,
        }
    }
}

/// Upstream servers from a resolv.conf's text: its `nameserver` lines, IPv4 and IPv6.
pub fn nameservers(resolv_conf: &str) -> Vec<std::net::IpAddr> {
    resolv_conf
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("nameserver")).then(|| w.next()?.parse().ok())?
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;
    use serde_json::json;

    fn zone() -> Zone {
        let svc = |v: serde_json::Value| Arc::new(serde_json::from_value::<Service>(v).unwrap());
        let services = vec![
            svc(json!({"metadata": {"name": "web", "namespace": "default"},
                "spec": {"clusterIP": "10.96.0.20", "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}})),
            svc(json!({"metadata": {"name": "db", "namespace": "prod"},
                "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}})),
            svc(json!({"metadata": {"name": "ext", "namespace": "default"},
                "spec": {"type": "ExternalName", "externalName": "example.org"}})),
        ];
        let slices = vec![Arc::new(
            serde_json::from_value::<EndpointSlice>(json!({
            "metadata": {"name": "db-1", "namespace": "prod",
                "labels": {"kubernetes.io/service-name": "db"}},
            "addressType": "IPv4",
            "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}],
            "endpoints": [
                {"addresses": ["10.244.1.5"], "hostname": "db-0", "conditions": {"ready": true}},
                {"addresses": ["10.244.2.6"], "conditions": {"ready": true}},
                {"addresses": ["10.244.2.7"], "conditions": {"ready": false}},
            ]}))
            .unwrap(),
        )];
        Zone::build(&services, &slices)
    }

    fn ask(name: &str, ty: RecordType) -> Message {
        let r = Resolver::new("cluster.local").unwrap();
        let mut q = Message::query();
        q.metadata.id = 7;
        q.add_query(Query::query(Name::from_str(name).unwrap(), ty));
        match r.resolve(&q, &zone()) {
            Outcome::Answer(m) => m,
            Outcome::Forward => panic!("{name} forwarded"),
        }
    }

    fn ips(m: &Message) -> Vec<String> {
        m.answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(a.0.to_string()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn services_headless_endpoints_srv_pods_and_missing_names() {
        let m = ask("web.default.svc.cluster.local.", RecordType::A);
        assert_eq!(m.metadata.id, 7);
        assert_eq!(ips(&m), ["10.96.0.20"]);
        assert!(m.metadata.authoritative);
        let m = ask("WEB.default.svc.cluster.local.", RecordType::A);
        assert_eq!(ips(&m), ["10.96.0.20"], "names are case-insensitive");
        let m = ask("db.prod.svc.cluster.local.", RecordType::A);
        assert_eq!(
            ips(&m),
            ["10.244.1.5", "10.244.2.6"],
            "ready endpoints only"
        );
        let m = ask("db-0.db.prod.svc.cluster.local.", RecordType::A);
        assert_eq!(ips(&m), ["10.244.1.5"]);
        let m = ask("10-244-2-6.db.prod.svc.cluster.local.", RecordType::A);
        assert_eq!(ips(&m), ["10.244.2.6"]);
        let m = ask("_pg._tcp.db.prod.svc.cluster.local.", RecordType::SRV);
        let targets: Vec<String> = m
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::SRV(s) => Some(format!("{} {}", s.port, s.target)),
                _ => None,
            })
            .collect();
        assert_eq!(
            targets,
            [
                "5432 db-0.db.prod.svc.cluster.local.",
                "5432 10-244-2-6.db.prod.svc.cluster.local."
            ]
        );
        assert_eq!(m.additionals.len(), 2);
        let m = ask("_http._tcp.web.default.svc.cluster.local.", RecordType::SRV);
        assert_eq!(m.answers.len(), 1);
        let m = ask("ext.default.svc.cluster.local.", RecordType::A);
        assert!(matches!(&m.answers[0].data, RData::CNAME(c) if c.0.to_string() == "example.org."));
        let m = ask("10-1-2-3.default.pod.cluster.local.", RecordType::A);
        assert_eq!(ips(&m), ["10.1.2.3"]);
        // Exists, but no AAAA: NOERROR, empty, with the SOA.
        let m = ask("web.default.svc.cluster.local.", RecordType::AAAA);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.answers.is_empty());
        assert_eq!(m.authorities.len(), 1);
        // Unknown names: NXDOMAIN with the SOA.
        for n in [
            "nope.default.svc.cluster.local.",
            "web.other.svc.cluster.local.",
            "x.web.default.svc.cluster.local.",
            "web.default.cluster.local.",
            "_nope._tcp.web.default.svc.cluster.local.",
        ] {
            let m = ask(n, RecordType::A);
            assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{n}");
            assert_eq!(m.authorities.len(), 1, "{n}");
        }
        // Outside the zone: for upstream.
        let r = Resolver::new("cluster.local").unwrap();
        let mut q = Message::query();
        q.add_query(Query::query(
            Name::from_str("example.org.").unwrap(),
            RecordType::A,
        ));
        assert!(matches!(r.resolve(&q, &zone()), Outcome::Forward));
    }

    #[test]
    fn nameservers_of_resolv_conf() {
        let ns =
            nameservers("# x\nsearch a b\nnameserver 10.0.0.2\nnameserver ::1\noptions ndots:5\n");
        assert_eq!(ns.len(), 2);
    }
}
