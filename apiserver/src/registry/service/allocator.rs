//! ClusterIP and NodePort allocation.
//!
//! Each allocated address or port is a key in etcd (`/registry/ranges/serviceips/<ip>`,
//! `/registry/ranges/servicenodeports/<port>`), claimed in the same transaction that writes the
//! service and released in the one that deletes it. Two API servers can therefore never hand
//! out the same value, and a failed write never leaks one.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use rand::Rng;
use serde_json::Value;

use crate::error::{Cause, Error, Result};
use crate::registry::Allocator;
use crate::storage::{Etcd, SideEffect};

/// The service address and node port ranges.
#[derive(Debug, Clone)]
pub struct Ranges {
    /// `--service-cluster-ip-range`.
    pub service_cidr: IpNet,
    /// `--service-node-port-range`, inclusive.
    pub node_ports: (u16, u16),
}

impl Ranges {
    /// The first usable service address (given to the `kubernetes` service).
    pub fn first_ip(&self) -> IpAddr {
        nth(&self.service_cidr, 1)
    }

    fn ip_key(&self, root: &str, ip: &str) -> String {
        format!("{root}/ranges/serviceips/{ip}")
    }

    fn port_key(&self, root: &str, port: i64) -> String {
        format!("{root}/ranges/servicenodeports/{port}")
    }

    fn size(&self) -> u128 {
        let bits = self.service_cidr.max_prefix_len() - self.service_cidr.prefix_len();
        (1u128 << bits.min(64)).saturating_sub(2).max(1)
    }
}

fn nth(net: &IpNet, n: u128) -> IpAddr {
    match net.network() {
        IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a).wrapping_add(n as u32))),
        IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a).wrapping_add(n))),
    }
}

/// Parses `30000-32767`.
pub fn parse_port_range(s: &str) -> Option<(u16, u16)> {
    let (a, b) = s.split_once('-')?;
    let (a, b): (u16, u16) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    (a <= b).then_some((a, b))
}

/// Services' allocator over the configured ranges.
pub struct ServiceAllocator(pub Ranges);

#[async_trait::async_trait]
impl Allocator for ServiceAllocator {
    async fn allocate(
        &self,
        etcd: &Etcd,
        obj: &mut Value,
        old: Option<&Value>,
    ) -> Result<Vec<SideEffect>> {
        plan(etcd, &self.0, obj, old).await
    }

    fn release(&self, etcd: &Etcd, obj: &Value) -> Vec<SideEffect> {
        releases(etcd, obj)
    }
}

/// Assigns a ClusterIP and NodePorts to `svc` where it needs them and lacks them, checks
/// requested values, and returns the keys to claim (and, given `old`, to release).
async fn plan(
    store: &Etcd,
    ranges: &Ranges,
    svc: &mut Value,
    old: Option<&Value>,
) -> Result<Vec<SideEffect>> {
    let root = store.prefix().to_string();
    let mut effects = Vec::new();
    let ty = svc
        .pointer("/spec/type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
        .to_string();
    let name = svc
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let invalid = |causes: Vec<Cause>| Error::invalid("Service", "", &name, causes);

    // --- ClusterIP ---
    let old_ip = old
        .and_then(|o| o.pointer("/spec/clusterIP"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let wants_ip = ty != "ExternalName";
    let mut ip = svc
        .pointer("/spec/clusterIP")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if wants_ip && ip.is_empty() && !old_ip.is_empty() {
        ip = old_ip.clone();
    }
    if wants_ip && ip != "None" {
        if ip.is_empty() {
            let used: HashSet<String> = store
                .keys(&format!("{root}/ranges/serviceips/"))
                .await?
                .into_iter()
                .filter_map(|k| k.rsplit('/').next().map(String::from))
                .collect();
            let size = ranges.size();
            if used.len() as u128 >= size {
                return Err(Error::internal(
                    "failed to allocate a serviceIP: range is full",
                ));
            }
            let mut rng = rand::rng();
            // Random probing, then a scan: the range may be nearly full.
            let mut chosen = None;
            for _ in 0..64 {
                let n = rng.random_range(2..=size.max(2));
                let cand = nth(&ranges.service_cidr, n).to_string();
                if !used.contains(&cand) {
                    chosen = Some(cand);
                    break;
                }
            }
            let chosen = match chosen {
                Some(c) => c,
                None => (2..=size)
                    .map(|n| nth(&ranges.service_cidr, n).to_string())
                    .find(|c| !used.contains(c))
                    .ok_or_else(|| {
                        Error::internal("failed to allocate a serviceIP: range is full")
                    })?,
            };
            ip = chosen;
        } else {
            let addr: IpAddr = ip.parse().map_err(|_| {
                invalid(vec![Cause::invalid(
                    "spec.clusterIPs[0]",
                    &Value::String(ip.clone()),
                    "must be a valid IP address",
                )])
            })?;
            if !ranges.service_cidr.contains(&addr) {
                return Err(invalid(vec![Cause::invalid(
                    "spec.clusterIPs[0]",
                    &Value::String(ip.clone()),
                    format!("failed to allocate IP {ip}: the provided IP ({ip}) is not in the valid range. The range of valid IPs is {}", ranges.service_cidr),
                )]));
            }
        }
        if ip != old_ip {
            effects.push(SideEffect::Claim(ranges.ip_key(&root, &ip)));
        }
        svc["spec"]["clusterIP"] = Value::String(ip.clone());
        svc["spec"]["clusterIPs"] = serde_json::json!([ip]);
    } else if ip == "None" {
        svc["spec"]["clusterIPs"] = serde_json::json!(["None"]);
    }
    if !old_ip.is_empty() && old_ip != "None" && (old_ip != ip || !wants_ip) {
        effects.push(SideEffect::Release(ranges.ip_key(&root, &old_ip)));
        if !wants_ip {
            if let Some(spec) = svc.get_mut("spec").and_then(Value::as_object_mut) {
                spec.remove("clusterIP");
                spec.remove("clusterIPs");
            }
        }
    }

    // --- NodePorts ---
    let wants_ports = ty == "NodePort"
        || (ty == "LoadBalancer"
            && svc
                .pointer("/spec/allocateLoadBalancerNodePorts")
                .and_then(Value::as_bool)
                != Some(false));
    let old_ports: Vec<i64> = old
        .and_then(|o| o.pointer("/spec/ports"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|p| p.get("nodePort").and_then(Value::as_i64))
                .filter(|n| *n > 0)
                .collect()
        })
        .unwrap_or_default();
    let mut kept = Vec::new();
    if wants_ports {
        let used: HashSet<i64> = store
            .keys(&format!("{root}/ranges/servicenodeports/"))
            .await?
            .into_iter()
            .filter_map(|k| k.rsplit('/').next().and_then(|p| p.parse().ok()))
            .collect();
        let mut taken_here = HashSet::new();
        let (lo, hi) = (ranges.node_ports.0 as i64, ranges.node_ports.1 as i64);
        let count = svc
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .map(|a| a.len())
            .unwrap_or(0);
        for n in 0..count {
            let port = &mut svc["spec"]["ports"][n];
            let want = port.get("nodePort").and_then(Value::as_i64).unwrap_or(0);
            let np = if want > 0 {
                if want < lo || want > hi {
                    return Err(invalid(vec![Cause::invalid(
                        format!("spec.ports[{n}].nodePort"),
                        &Value::from(want),
                        format!("provided port is not in the valid range. The range of valid ports is {lo}-{hi}"),
                    )]));
                }
                if !old_ports.contains(&want)
                    && (used.contains(&want) || taken_here.contains(&want))
                {
                    return Err(invalid(vec![Cause::invalid(
                        format!("spec.ports[{n}].nodePort"),
                        &Value::from(want),
                        "provided port is already allocated",
                    )]));
                }
                want
            } else {
                let mut rng = rand::rng();
                let free = |p: &i64| !used.contains(p) && !taken_here.contains(p);
                let mut pick = None;
                for _ in 0..64 {
                    let c = rng.random_range(lo..=hi);
                    if free(&c) {
                        pick = Some(c);
                        break;
                    }
                }
                match pick.or_else(|| (lo..=hi).find(free)) {
                    Some(p) => p,
                    None => {
                        return Err(Error::internal(
                            "failed to allocate a nodePort: range is full",
                        ))
                    }
                }
            };
            taken_here.insert(np);
            port["nodePort"] = Value::from(np);
            if !old_ports.contains(&np) {
                effects.push(SideEffect::Claim(ranges.port_key(&root, np)));
            }
            kept.push(np);
        }
    } else if let Some(ports) = svc.pointer_mut("/spec/ports").and_then(Value::as_array_mut) {
        for p in ports {
            if let Some(m) = p.as_object_mut() {
                m.remove("nodePort");
            }
        }
    }
    for p in old_ports {
        if !kept.contains(&p) {
            effects.push(SideEffect::Release(ranges.port_key(&root, p)));
        }
    }
    Ok(effects)
}

/// The keys a deleted service releases.
fn releases(store: &Etcd, svc: &Value) -> Vec<SideEffect> {
    let root = store.prefix();
    let mut out = Vec::new();
    if let Some(ip) = svc.pointer("/spec/clusterIP").and_then(Value::as_str) {
        if !ip.is_empty() && ip != "None" {
            out.push(SideEffect::Release(format!(
                "{root}/ranges/serviceips/{ip}"
            )));
        }
    }
    for p in svc
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(np) = p.get("nodePort").and_then(Value::as_i64) {
            out.push(SideEffect::Release(format!(
                "{root}/ranges/servicenodeports/{np}"
            )));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_port_range("30000-32767"), Some((30000, 32767)));
        assert_eq!(parse_port_range("5-1"), None);
        let r = Ranges {
            service_cidr: "10.96.0.0/12".parse().unwrap(),
            node_ports: (30000, 32767),
        };
        assert_eq!(r.first_ip().to_string(), "10.96.0.1");
    }
}
