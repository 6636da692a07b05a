//! The rules every node holds regardless of the graph: Kubernetes' `NodeRules()`, which are
//! also the bootstrap policy's `system:node` role, for the resources the Node authorizer does
//! not subdivide.

use std::sync::OnceLock;

use crate::auth::rules::Rule;
use crate::auth::Attributes;

const READ: &[&str] = &["get", "list", "watch"];

/// Kubernetes' `NodeRules()`: what every node may do (the `system:node` role, which nothing
/// binds). The Node authorizer applies them to what its graph of pods does not decide.
pub fn node_rules() -> Vec<Rule> {
    vec![
        Rule::resources(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
        Rule::resources(
            &["create"],
            &["authorization.k8s.io"],
            &["subjectaccessreviews", "localsubjectaccessreviews"],
        ),
        Rule::resources(READ, &[""], &["services"]),
        Rule::resources(
            &["create", "get", "list", "watch", "patch", "update"],
            &[""],
            &["nodes"],
        ),
        Rule::resources(&["patch", "update"], &[""], &["nodes/status"]),
        Rule::resources(
            &["create", "patch", "update"],
            &["", "events.k8s.io"],
            &["events"],
        ),
        Rule::resources(READ, &[""], &["pods"]),
        Rule::resources(&["create", "delete"], &[""], &["pods"]),
        Rule::resources(&["patch", "update"], &[""], &["pods/status"]),
        Rule::resources(&["create"], &[""], &["pods/eviction"]),
        Rule::resources(READ, &[""], &["secrets", "configmaps"]),
        Rule::resources(
            &["get"],
            &[""],
            &["persistentvolumeclaims", "persistentvolumes"],
        ),
        Rule::resources(
            &["get", "patch", "update"],
            &[""],
            &["persistentvolumeclaims/status"],
        ),
        Rule::resources(&["get"], &[""], &["endpoints"]),
        Rule::resources(&["create"], &[""], &["serviceaccounts/token"]),
        Rule::resources(
            &["create", "delete", "get", "patch", "update"],
            &["coordination.k8s.io"],
            &["leases"],
        ),
        Rule::resources(&["get"], &["storage.k8s.io"], &["volumeattachments"]),
        Rule::resources(READ, &["storage.k8s.io"], &["csidrivers"]),
        Rule::resources(
            &["create", "delete", "get", "patch", "update"],
            &["storage.k8s.io"],
            &["csinodes"],
        ),
        Rule::resources(READ, &["node.k8s.io"], &["runtimeclasses"]),
        Rule::resources(
            &["create", "get", "list", "watch"],
            &["certificates.k8s.io"],
            &["certificatesigningrequests"],
        ),
        Rule::resources(
            &["create"],
            &["certificates.k8s.io"],
            &["certificatesigningrequests/selfnodeclient"],
        ),
    ]
}

/// Whether the node rules allow a request.
pub fn allow(a: &Attributes<'_>) -> bool {
    static RULES: OnceLock<Vec<Rule>> = OnceLock::new();
    RULES.get_or_init(node_rules).iter().any(|r| r.allows(a))
}
