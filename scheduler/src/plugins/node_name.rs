//! `NodeName`: a pod that names a node in `spec.nodeName` fits only there.

use super::{Check, Filter, Rejection};
use crate::snapshot::{PodInfo, Snapshot};

/// The `NodeName` filter.
pub struct NodeName;

/// Kubernetes' reason.
pub const REASON: &str = "node(s) didn't match the requested node name";

impl Filter for NodeName {
    fn name(&self) -> &'static str {
        "NodeName"
    }

    fn filter_for<'a>(&'a self, pod: &'a PodInfo, _snap: &'a Snapshot) -> Option<Check<'a>> {
        let want = pod
            .spec()
            .and_then(|s| s.node_name.as_deref())
            .filter(|n| !n.is_empty())?;
        Some(Box::new(move |_, node| {
            if node.name == want {
                Ok(())
            } else {
                Err(Rejection::unresolvable(REASON))
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::{check, node, pod};
    use serde_json::json;

    #[test]
    fn only_the_named_node() {
        let a = node(json!({"metadata": {"name": "a"}}));
        let b = node(json!({"metadata": {"name": "b"}}));
        let p = pod(json!({"spec": {"nodeName": "a", "containers": []}}));
        assert!(check(&NodeName, &p, &a).is_ok());
        assert_eq!(check(&NodeName, &p, &b).unwrap_err().reasons, vec![REASON]);
        let any = pod(json!({"spec": {"containers": []}}));
        assert!(check(&NodeName, &any, &b).is_ok());
    }
}
