//! `NodeUnschedulable`: a cordoned node (`spec.unschedulable`) takes only pods that tolerate
//! the `node.kubernetes.io/unschedulable:NoSchedule` taint.

use super::{Check, Filter, Rejection};
use crate::plugins::taint_toleration::tolerates;
use crate::snapshot::{PodInfo, Snapshot};

/// The `NodeUnschedulable` filter.
pub struct NodeUnschedulable;

/// Kubernetes' reason.
pub const REASON: &str = "node(s) were unschedulable";

impl Filter for NodeUnschedulable {
    fn name(&self) -> &'static str {
        "NodeUnschedulable"
    }

    fn filter_for<'a>(&'a self, pod: &'a PodInfo, _snap: &'a Snapshot) -> Option<Check<'a>> {
        let taint = k8s_openapi::api::core::v1::Taint {
            key: "node.kubernetes.io/unschedulable".into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        };
        let tolerations = pod
            .spec()
            .and_then(|s| s.tolerations.as_deref())
            .unwrap_or(&[]);
        if tolerates(tolerations, &taint) {
            return None;
        }
        Some(Box::new(|_, node| {
            if node.unschedulable {
                Err(Rejection::unresolvable(REASON))
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

    #[test]
    fn cordoned_nodes_take_only_tolerating_pods() {
        let cordoned = node(json!({"metadata": {"name": "a"}, "spec": {"unschedulable": true}}));
        let open = node(json!({"metadata": {"name": "b"}}));
        let plain = pod(json!({"spec": {"containers": []}}));
        let tolerant = pod(json!({"spec": {"containers": [], "tolerations": [
            {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}]}}));
        assert_eq!(
            check(&NodeUnschedulable, &plain, &cordoned)
                .unwrap_err()
                .reasons,
            vec![REASON]
        );
        assert!(check(&NodeUnschedulable, &plain, &open).is_ok());
        assert!(check(&NodeUnschedulable, &tolerant, &cordoned).is_ok());
    }
}
