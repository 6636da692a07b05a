//! `NodePorts`: a pod's host ports must be free on the node.

use super::{Check, Filter, Rejection};
use crate::snapshot::{PodInfo, Snapshot};

/// The `NodePorts` filter.
pub struct NodePorts;

/// Kubernetes' reason.
pub const REASON: &str = "node(s) didn't have free ports for the requested pod ports";

impl Filter for NodePorts {
    fn name(&self) -> &'static str {
        "NodePorts"
    }

    fn filter_for<'a>(&'a self, pod: &'a PodInfo, _snap: &'a Snapshot) -> Option<Check<'a>> {
        if pod.host_ports.is_empty() {
            return None;
        }
        Some(Box::new(move |_, node| {
            let clash = pod
                .host_ports
                .iter()
                .any(|want| node.used_ports.iter().any(|used| used.conflicts(want)));
            if clash {
                Err(Rejection::resolvable(REASON))
            } else {
                Ok(())
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::{check, node, pod};
    use serde_json::json;
    use std::sync::Arc;

    fn with_port(port: i32, ip: Option<&str>, proto: &str) -> crate::snapshot::PodInfo {
        let mut p = json!({"containerPort": 80, "hostPort": port, "protocol": proto});
        if let Some(ip) = ip {
            p["hostIP"] = json!(ip);
        }
        pod(
            json!({"metadata": {"name": format!("p{port}{proto}"), "namespace": "d"},
            "spec": {"containers": [{"name": "c", "ports": [p]}]}}),
        )
    }

    #[test]
    fn host_ports_collide_by_protocol_port_and_address() {
        let mut n = node(json!({"metadata": {"name": "a"}}));
        n.add_pod(Arc::new(with_port(8080, None, "TCP")));
        assert!(check(&NodePorts, &with_port(8080, None, "TCP"), &n).is_err());
        assert!(check(&NodePorts, &with_port(8080, Some("10.0.0.1"), "TCP"), &n).is_err());
        assert!(check(&NodePorts, &with_port(8080, None, "UDP"), &n).is_ok());
        assert!(check(&NodePorts, &with_port(8081, None, "TCP"), &n).is_ok());
        assert!(n.remove_pod("d/p8080TCP").is_some());
        assert!(check(&NodePorts, &with_port(8080, None, "TCP"), &n).is_ok());
    }
}
