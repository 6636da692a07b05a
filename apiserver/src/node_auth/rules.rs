//! The rules every node holds regardless of the graph: Kubernetes' `NodeRules()` (the
//! `system:node` role), for the resources the Node authorizer does not subdivide.

use crate::auth::Attributes;

/// One rule: any of `verbs` on any of `resources` (`plural` or `plural/subresource`) in any of
/// `groups`.
struct Rule {
    verbs: &'static [&'static str],
    groups: &'static [&'static str],
    resources: &'static [&'static str],
}

const READ: &[&str] = &["get", "list", "watch"];

/// Kubernetes' `NodeRules()`, in its order.
static NODE_RULES: &[Rule] = &[
    Rule {
        verbs: &["create"],
        groups: &["authentication.k8s.io"],
        resources: &["tokenreviews"],
    },
    Rule {
        verbs: &["create"],
        groups: &["authorization.k8s.io"],
        resources: &["subjectaccessreviews", "localsubjectaccessreviews"],
    },
    Rule {
        verbs: READ,
        groups: &[""],
        resources: &["services"],
    },
    Rule {
        verbs: &["create", "get", "list", "watch"],
        groups: &[""],
        resources: &["nodes"],
    },
    Rule {
        verbs: &["update", "patch"],
        groups: &[""],
        resources: &["nodes/status"],
    },
    Rule {
        verbs: &["update", "patch"],
        groups: &[""],
        resources: &["nodes"],
    },
    Rule {
        verbs: &["create", "update", "patch"],
        groups: &[""],
        resources: &["events"],
    },
    Rule {
        verbs: READ,
        groups: &[""],
        resources: &["pods"],
    },
    Rule {
        verbs: &["create", "delete"],
        groups: &[""],
        resources: &["pods"],
    },
    Rule {
        verbs: &["update", "patch"],
        groups: &[""],
        resources: &["pods/status"],
    },
    Rule {
        verbs: &["create"],
        groups: &[""],
        resources: &["pods/eviction"],
    },
    Rule {
        verbs: READ,
        groups: &[""],
        resources: &["secrets", "configmaps"],
    },
    Rule {
        verbs: &["get"],
        groups: &[""],
        resources: &["persistentvolumeclaims", "persistentvolumes"],
    },
    Rule {
        verbs: &["get"],
        groups: &[""],
        resources: &["endpoints"],
    },
    Rule {
        verbs: &["create", "get", "list", "watch"],
        groups: &["certificates.k8s.io"],
        resources: &["certificatesigningrequests"],
    },
    Rule {
        verbs: &["get", "create", "update", "patch", "delete"],
        groups: &["coordination.k8s.io"],
        resources: &["leases"],
    },
    Rule {
        verbs: &["get"],
        groups: &["storage.k8s.io"],
        resources: &["volumeattachments"],
    },
    Rule {
        verbs: &["create"],
        groups: &[""],
        resources: &["serviceaccounts/token"],
    },
    Rule {
        verbs: &["get", "update", "patch"],
        groups: &[""],
        resources: &["persistentvolumeclaims/status"],
    },
    Rule {
        verbs: &["get", "watch", "list"],
        groups: &["storage.k8s.io"],
        resources: &["csidrivers"],
    },
    Rule {
        verbs: &["get", "create", "update", "patch", "delete"],
        groups: &["storage.k8s.io"],
        resources: &["csinodes"],
    },
    Rule {
        verbs: READ,
        groups: &["node.k8s.io"],
        resources: &["runtimeclasses"],
    },
];

/// Whether the node rules allow a request (never a path that is not a resource: the rules
/// name none).
pub fn allow(a: &Attributes<'_>) -> bool {
    if !a.resource_request {
        return false;
    }
    NODE_RULES.iter().any(|r| {
        r.verbs.contains(&a.verb)
            && r.groups.contains(&a.api_group)
            && r.resources.iter().any(|res| match res.split_once('/') {
                Some((plural, sub)) => plural == a.resource && sub == a.subresource,
                None => *res == a.resource && a.subresource.is_empty(),
            })
    })
}
