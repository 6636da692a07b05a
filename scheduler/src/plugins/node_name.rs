//! `NodeName`: a pod that names a node in `spec.nodeName` fits only there.

use super::{CycleState, Filter, Rejection};
use crate::snapshot::{NodeInfo, PodInfo};

/// The `NodeName` filter.
pub struct NodeName;

/// Kubernetes' reason.
pub const REASON: &str = "node(s) didn't match the requested node name";

impl Filter for NodeName {
    fn name(&self) -> &'static str {
        "NodeName"
    }

    fn filter(&self, _state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Result<(), Rejection> {
        match pod.spec().and_then(|s| s.node_name.as_deref()) {
            Some(n) if !n.is_empty() && n != node.name => Err(Rejection::unresolvable(REASON)),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::{node, pod};
    use serde_json::json;

    #[test]
    fn only_the_named_node() {
        let a = node(json!({"metadata": {"name": "a"}}));
        let b = node(json!({"metadata": {"name": "b"}}));
        let p = pod(json!({"spec": {"nodeName": "a", "containers": []}}));
        assert!(NodeName.filter(&CycleState::default(), &p, &a).is_ok());
        assert_eq!(
            NodeName
                .filter(&CycleState::default(), &p, &b)
                .unwrap_err()
                .reasons,
            vec![REASON]
        );
        let any = pod(json!({"spec": {"containers": []}}));
        assert!(NodeName.filter(&CycleState::default(), &any, &b).is_ok());
    }
}
