//! The bootstrap policy: the ClusterRoles and ClusterRoleBindings every cluster starts with
//! (Kubernetes' `bootstrappolicy`), and their reconciliation at each start.
//!
//! Reconciliation follows the `rbac.authorization.kubernetes.io/autoupdate: "true"`
//! annotation: missing objects are created, missing rules, labels and subjects added, nothing
//! removed; an object a user marked `autoupdate: "false"` is left alone.

use serde_json::{json, Value};

use super::GROUP;
use crate::auth::rules::{uncovered, Rule};
use crate::error::{Error, Result};
use crate::request::WriteOpts;
use crate::store::GenericStore;
use k8s_openapi::api::rbac::v1::PolicyRule;

const AUTOUPDATE: &str = "rbac.authorization.kubernetes.io/autoupdate";
const READ: &[&str] = &["get", "list", "watch"];
const WRITE: &[&str] = &["create", "delete", "deletecollection", "patch", "update"];
const MANAGER: &str = "rbac-bootstrap";

/// A bootstrap ClusterRole.
pub struct BootstrapRole {
    /// Its name.
    pub name: &'static str,
    /// Its rules.
    pub rules: Vec<Rule>,
    /// Extra labels (aggregation).
    pub labels: Vec<(&'static str, &'static str)>,
    /// The aggregate-to label its aggregationRule selects, if it is aggregated.
    pub aggregate_from: Option<&'static str>,
}

/// A bootstrap ClusterRoleBinding: the role of the same name unless said otherwise.
pub struct BootstrapBinding {
    /// Its name.
    pub name: &'static str,
    /// The ClusterRole it grants.
    pub role: &'static str,
    /// `(kind, name, namespace)` of each subject.
    pub subjects: Vec<(&'static str, &'static str, &'static str)>,
}

fn role(name: &'static str, rules: Vec<Rule>) -> BootstrapRole {
    BootstrapRole {
        name,
        rules,
        labels: Vec::new(),
        aggregate_from: None,
    }
}

fn r(verbs: &[&str], groups: &[&str], resources: &[&str]) -> Rule {
    Rule::resources(verbs, groups, resources)
}

const fn agg(to: &'static str) -> (&'static str, &'static str) {
    (to, "true")
}

const TO_ADMIN: &str = "rbac.authorization.k8s.io/aggregate-to-admin";
const TO_EDIT: &str = "rbac.authorization.k8s.io/aggregate-to-edit";
const TO_VIEW: &str = "rbac.authorization.k8s.io/aggregate-to-view";

/// The rules of `view`: read everything of a namespace but Secrets.
fn view_rules() -> Vec<Rule> {
    vec![
        r(
            READ,
            &[""],
            &[
                "configmaps",
                "endpoints",
                "persistentvolumeclaims",
                "persistentvolumeclaims/status",
                "pods",
                "replicationcontrollers",
                "replicationcontrollers/scale",
                "serviceaccounts",
                "services",
                "services/status",
            ],
        ),
        r(
            READ,
            &[""],
            &[
                "bindings",
                "events",
                "limitranges",
                "namespaces/status",
                "pods/log",
                "pods/status",
                "replicationcontrollers/status",
                "resourcequotas",
                "resourcequotas/status",
            ],
        ),
        r(READ, &[""], &["namespaces"]),
        r(READ, &["discovery.k8s.io"], &["endpointslices"]),
        r(
            READ,
            &["apps"],
            &[
                "controllerrevisions",
                "daemonsets",
                "daemonsets/status",
                "deployments",
                "deployments/scale",
                "deployments/status",
                "replicasets",
                "replicasets/scale",
                "replicasets/status",
                "statefulsets",
                "statefulsets/scale",
                "statefulsets/status",
            ],
        ),
        r(
            READ,
            &["autoscaling"],
            &[
                "horizontalpodautoscalers",
                "horizontalpodautoscalers/status",
            ],
        ),
        r(
            READ,
            &["batch"],
            &["cronjobs", "cronjobs/status", "jobs", "jobs/status"],
        ),
        r(
            READ,
            &["policy"],
            &["poddisruptionbudgets", "poddisruptionbudgets/status"],
        ),
        r(
            READ,
            &["networking.k8s.io"],
            &["ingresses", "ingresses/status", "networkpolicies"],
        ),
    ]
}

/// The rules `edit` adds to `view`: change the namespace's workloads, read and write Secrets.
fn edit_rules() -> Vec<Rule> {
    vec![
        r(&["impersonate"], &[""], &["serviceaccounts"]),
        r(
            WRITE,
            &[""],
            &[
                "pods",
                "pods/attach",
                "pods/exec",
                "pods/portforward",
                "pods/proxy",
            ],
        ),
        r(&["create"], &[""], &["pods/eviction"]),
        r(
            WRITE,
            &[""],
            &[
                "configmaps",
                "events",
                "persistentvolumeclaims",
                "replicationcontrollers",
                "replicationcontrollers/scale",
                "secrets",
                "serviceaccounts",
                "services",
                "services/proxy",
            ],
        ),
        r(&["create"], &[""], &["serviceaccounts/token"]),
        r(
            WRITE,
            &["apps"],
            &[
                "daemonsets",
                "deployments",
                "deployments/rollback",
                "deployments/scale",
                "replicasets",
                "replicasets/scale",
                "statefulsets",
                "statefulsets/scale",
            ],
        ),
        r(WRITE, &["autoscaling"], &["horizontalpodautoscalers"]),
        r(WRITE, &["batch"], &["cronjobs", "jobs"]),
        r(WRITE, &["policy"], &["poddisruptionbudgets"]),
        r(
            WRITE,
            &["networking.k8s.io"],
            &["ingresses", "networkpolicies"],
        ),
        r(WRITE, &["discovery.k8s.io"], &["endpointslices"]),
        r(
            READ,
            &[""],
            &[
                "pods/attach",
                "pods/exec",
                "pods/portforward",
                "pods/proxy",
                "secrets",
                "services/proxy",
            ],
        ),
    ]
}

/// The rules `admin` adds to `edit`: roles and bindings of the namespace, and access reviews.
fn admin_rules() -> Vec<Rule> {
    vec![
        r(
            &["create"],
            &["authorization.k8s.io"],
            &["localsubjectaccessreviews"],
        ),
        r(
            &[
                "create",
                "delete",
                "deletecollection",
                "get",
                "list",
                "patch",
                "update",
                "watch",
            ],
            &[GROUP],
            &["rolebindings", "roles"],
        ),
    ]
}

/// What Skiff's controller manager does: the namespace controller and the garbage collector
/// read and delete (and orphan) objects of every kind, as Kubernetes' namespace-controller and
/// generic-garbage-collector accounts may; the workload controllers create what they own; CSR
/// approval and signing and ClusterRole aggregation need their own verbs.
fn controller_manager_rules() -> Vec<Rule> {
    vec![
        r(
            &[
                "get",
                "list",
                "watch",
                "patch",
                "update",
                "delete",
                "deletecollection",
            ],
            &["*"],
            &["*"],
        ),
        r(
            &["create"],
            &[""],
            &[
                "pods",
                "events",
                "endpoints",
                "serviceaccounts",
                "configmaps",
                "serviceaccounts/token",
                "persistentvolumeclaims",
            ],
        ),
        r(
            &["create"],
            &["apps"],
            &["replicasets", "controllerrevisions"],
        ),
        r(&["create"], &["batch"], &["jobs"]),
        r(&["create"], &["discovery.k8s.io"], &["endpointslices"]),
        r(&["create"], &["storage.k8s.io"], &["volumeattachments"]),
        r(&["create"], &["events.k8s.io"], &["events"]),
        r(&["create"], &["coordination.k8s.io"], &["leases"]),
        r(
            &["create"],
            &["authorization.k8s.io"],
            &["subjectaccessreviews"],
        ),
        r(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
        r(&["approve", "sign"], &["certificates.k8s.io"], &["signers"]),
        r(&["escalate"], &[GROUP], &["clusterroles"]),
    ]
}

fn scheduler_rules() -> Vec<Rule> {
    vec![
        r(
            &["create", "patch", "update"],
            &["", "events.k8s.io"],
            &["events"],
        ),
        r(&["create"], &["coordination.k8s.io"], &["leases"]),
        r(&["get", "update"], &["coordination.k8s.io"], &["leases"]),
        r(&["create"], &[""], &["endpoints"]),
        r(&["get", "update"], &[""], &["endpoints"]),
        r(READ, &[""], &["nodes"]),
        r(&["delete", "get", "list", "watch"], &[""], &["pods"]),
        r(&["create"], &[""], &["bindings", "pods/binding"]),
        r(&["patch", "update"], &[""], &["pods/status"]),
        r(READ, &[""], &["replicationcontrollers", "services"]),
        r(READ, &["apps", "extensions"], &["replicasets"]),
        r(READ, &["apps"], &["statefulsets"]),
        r(READ, &["policy"], &["poddisruptionbudgets"]),
        r(
            READ,
            &[""],
            &["persistentvolumeclaims", "persistentvolumes"],
        ),
        r(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
        r(
            &["create"],
            &["authorization.k8s.io"],
            &["subjectaccessreviews"],
        ),
        r(
            READ,
            &["storage.k8s.io"],
            &[
                "csinodes",
                "csidrivers",
                "csistoragecapacities",
                "storageclasses",
                "volumeattachments",
            ],
        ),
        r(READ, &[""], &["namespaces"]),
        r(READ, &["scheduling.k8s.io"], &["priorityclasses"]),
        r(READ, &["resource.k8s.io"], &["*"]),
    ]
}

/// Every bootstrap ClusterRole.
pub fn cluster_roles() -> Vec<BootstrapRole> {
    let health = [
        "/healthz",
        "/healthz/*",
        "/livez",
        "/livez/*",
        "/readyz",
        "/readyz/*",
        "/version",
        "/version/",
    ];
    vec![
        role(
            "cluster-admin",
            vec![r(&["*"], &["*"], &["*"]), Rule::urls(&["*"], &["*"])],
        ),
        BootstrapRole {
            labels: vec![("kubernetes.io/bootstrapping", "rbac-defaults")],
            aggregate_from: Some(TO_ADMIN),
            ..role("admin", Vec::new())
        },
        BootstrapRole {
            labels: vec![agg(TO_ADMIN)],
            aggregate_from: Some(TO_EDIT),
            ..role("edit", Vec::new())
        },
        BootstrapRole {
            labels: vec![agg(TO_ADMIN), agg(TO_EDIT)],
            aggregate_from: Some(TO_VIEW),
            ..role("view", Vec::new())
        },
        BootstrapRole {
            labels: vec![agg(TO_ADMIN)],
            ..role("system:aggregate-to-admin", admin_rules())
        },
        BootstrapRole {
            labels: vec![agg(TO_EDIT)],
            ..role("system:aggregate-to-edit", edit_rules())
        },
        BootstrapRole {
            labels: vec![agg(TO_VIEW)],
            ..role("system:aggregate-to-view", view_rules())
        },
        role(
            "system:basic-user",
            vec![
                r(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                ),
                r(
                    &["create"],
                    &["authentication.k8s.io"],
                    &["selfsubjectreviews"],
                ),
            ],
        ),
        role(
            "system:discovery",
            vec![Rule::urls(
                &["get"],
                &[
                    "/api",
                    "/api/*",
                    "/apis",
                    "/apis/*",
                    "/healthz",
                    "/livez",
                    "/openapi",
                    "/openapi/*",
                    "/readyz",
                    "/version",
                    "/version/",
                ],
            )],
        ),
        role(
            "system:public-info-viewer",
            vec![Rule::urls(&["get"], &health)],
        ),
        role(
            "system:service-account-issuer-discovery",
            vec![Rule::urls(
                &["get"],
                &[
                    "/.well-known/openid-configuration",
                    "/.well-known/openid-configuration/",
                    "/openid/v1/jwks",
                    "/openid/v1/jwks/",
                ],
            )],
        ),
        role("system:kube-scheduler", scheduler_rules()),
        // What the scheduler's VolumeBinding plugin writes: a volume's claimRef for a
        // WaitForFirstConsumer claim, a claim's selected-node annotation.
        role(
            "system:volume-scheduler",
            vec![
                r(
                    &["get", "list", "patch", "update", "watch"],
                    &[""],
                    &["persistentvolumes"],
                ),
                r(READ, &["storage.k8s.io"], &["storageclasses"]),
                r(
                    &["get", "list", "patch", "update", "watch"],
                    &[""],
                    &["persistentvolumeclaims"],
                ),
            ],
        ),
        role("system:kube-controller-manager", controller_manager_rules()),
        // Kubernetes' role of the attach/detach controller, for a controller manager that
        // runs each controller under its own ServiceAccount.
        role(
            "system:controller:attachdetach-controller",
            vec![
                r(
                    &["list", "watch"],
                    &[""],
                    &["persistentvolumes", "persistentvolumeclaims"],
                ),
                r(READ, &[""], &["nodes"]),
                r(&["patch", "update"], &[""], &["nodes/status"]),
                r(&["list", "watch"], &[""], &["pods"]),
                r(
                    &["create", "patch", "update"],
                    &["", "events.k8s.io"],
                    &["events"],
                ),
                r(
                    &["get", "create", "delete", "list", "watch"],
                    &["storage.k8s.io"],
                    &["volumeattachments"],
                ),
                r(READ, &["storage.k8s.io"], &["csidrivers", "csinodes"]),
            ],
        ),
        // Kubernetes' role for the ephemeral volume controller's own identity.
        role(
            "system:controller:ephemeral-volume-controller",
            vec![
                r(READ, &[""], &["pods"]),
                r(&["update"], &[""], &["pods/finalizers"]),
                r(
                    &["get", "list", "watch", "create"],
                    &[""],
                    &["persistentvolumeclaims"],
                ),
                r(
                    &["create", "update", "patch"],
                    &["", "events.k8s.io"],
                    &["events"],
                ),
            ],
        ),
        // Kubernetes' role for full use of kubelets' API, through `nodes/proxy` included.
        role(
            "system:kubelet-api-admin",
            vec![
                r(READ, &[""], &["nodes"]),
                r(&["proxy"], &[""], &["nodes"]),
                r(
                    &["*"],
                    &[""],
                    &["nodes/proxy", "nodes/metrics", "nodes/stats", "nodes/log"],
                ),
            ],
        ),
        role(
            "system:node-proxier",
            vec![
                r(READ, &[""], &["services", "endpoints"]),
                r(READ, &[""], &["nodes"]),
                r(
                    &["create", "patch", "update"],
                    &["", "events.k8s.io"],
                    &["events"],
                ),
                r(READ, &["discovery.k8s.io"], &["endpointslices"]),
            ],
        ),
        // The CSI external provisioner, attacher and resizer (`skiff-csi` on every node).
        role(
            "system:skiff-csi",
            vec![
                r(
                    &[
                        "get", "list", "watch", "create", "delete", "patch", "update",
                    ],
                    &[""],
                    &["persistentvolumes"],
                ),
                r(
                    &["get", "list", "watch", "patch", "update"],
                    &[""],
                    &["persistentvolumeclaims"],
                ),
                r(
                    &["patch", "update"],
                    &[""],
                    &["persistentvolumeclaims/status"],
                ),
                r(READ, &[""], &["nodes"]),
                r(READ, &["storage.k8s.io"], &["storageclasses", "csinodes"]),
                // Publishing capacity: its own objects, found again by label, rewritten
                // whole and deleted when their class goes.
                r(
                    &["get", "list", "watch", "create", "update", "delete"],
                    &["storage.k8s.io"],
                    &["csistoragecapacities"],
                ),
                // The external attacher.
                r(
                    &["get", "list", "watch", "patch", "update"],
                    &["storage.k8s.io"],
                    &["volumeattachments"],
                ),
                r(
                    &["patch", "update"],
                    &["storage.k8s.io"],
                    &["volumeattachments/status"],
                ),
                r(
                    &["create", "patch", "update"],
                    &["", "events.k8s.io"],
                    &["events"],
                ),
                r(
                    &["get", "list", "watch", "create", "patch", "update"],
                    &["coordination.k8s.io"],
                    &["leases"],
                ),
            ],
        ),
        role("system:node", crate::node_auth::rules::node_rules()),
        role(
            "system:node-bootstrapper",
            vec![r(
                &["create", "get", "list", "watch"],
                &["certificates.k8s.io"],
                &["certificatesigningrequests"],
            )],
        ),
        role(
            "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
            vec![r(
                &["create"],
                &["certificates.k8s.io"],
                &["certificatesigningrequests/nodeclient"],
            )],
        ),
        role(
            "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
            vec![r(
                &["create"],
                &["certificates.k8s.io"],
                &["certificatesigningrequests/selfnodeclient"],
            )],
        ),
        // Kubernetes' controller role for the ReplicationController controller (its
        // `controller_policy.go`), for clusters whose controller manager runs each controller
        // under its own ServiceAccount.
        role(
            "system:controller:replication-controller",
            vec![
                r(
                    &["get", "list", "watch", "update"],
                    &[""],
                    &["replicationcontrollers"],
                ),
                r(&["update"], &[""], &["replicationcontrollers/status"]),
                r(&["update"], &[""], &["replicationcontrollers/finalizers"]),
                r(
                    &["list", "watch", "patch", "create", "delete"],
                    &[""],
                    &["pods"],
                ),
                r(
                    &["create", "update", "patch"],
                    &["", "events.k8s.io"],
                    &["events"],
                ),
            ],
        ),
        role(
            "system:skiff-dns",
            vec![
                r(
                    &["list", "watch"],
                    &[""],
                    &["endpoints", "services", "pods", "namespaces"],
                ),
                r(
                    &["list", "watch"],
                    &["discovery.k8s.io"],
                    &["endpointslices"],
                ),
            ],
        ),
    ]
}

fn binding(
    name: &'static str,
    subjects: Vec<(&'static str, &'static str, &'static str)>,
) -> BootstrapBinding {
    BootstrapBinding {
        name,
        role: name,
        subjects,
    }
}

/// Every bootstrap ClusterRoleBinding.
pub fn cluster_role_bindings() -> Vec<BootstrapBinding> {
    vec![
        binding("cluster-admin", vec![("Group", "system:masters", "")]),
        binding(
            "system:basic-user",
            vec![("Group", "system:authenticated", "")],
        ),
        binding(
            "system:discovery",
            vec![("Group", "system:authenticated", "")],
        ),
        binding(
            "system:public-info-viewer",
            vec![
                ("Group", "system:authenticated", ""),
                ("Group", "system:unauthenticated", ""),
            ],
        ),
        binding(
            "system:service-account-issuer-discovery",
            vec![("Group", "system:serviceaccounts", "")],
        ),
        binding(
            "system:kube-scheduler",
            vec![("User", "system:kube-scheduler", "")],
        ),
        binding(
            "system:volume-scheduler",
            vec![("User", "system:kube-scheduler", "")],
        ),
        binding(
            "system:kube-controller-manager",
            vec![("User", "system:kube-controller-manager", "")],
        ),
        binding(
            "system:controller:ephemeral-volume-controller",
            vec![(
                "ServiceAccount",
                "ephemeral-volume-controller",
                "kube-system",
            )],
        ),
        binding(
            "system:node-proxier",
            vec![("User", "system:kube-proxy", "")],
        ),
        binding(
            "system:controller:attachdetach-controller",
            vec![("ServiceAccount", "attachdetach-controller", "kube-system")],
        ),
        binding("system:skiff-csi", vec![("User", "system:skiff-csi", "")]),
        binding(
            "system:node-bootstrapper",
            vec![("Group", "system:bootstrappers", "")],
        ),
        binding(
            "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
            vec![("Group", "system:bootstrappers", "")],
        ),
        binding(
            "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
            vec![("Group", "system:nodes", "")],
        ),
        binding(
            "system:controller:replication-controller",
            vec![("ServiceAccount", "replication-controller", "kube-system")],
        ),
        binding(
            "system:skiff-dns",
            vec![("ServiceAccount", "skiff-dns", "kube-system")],
        ),
    ]
}

fn meta(name: &str, labels: &[(&str, &str)]) -> Value {
    let mut l = serde_json::Map::new();
    l.insert("kubernetes.io/bootstrapping".into(), json!("rbac-defaults"));
    for (k, v) in labels {
        l.insert(k.to_string(), json!(v));
    }
    json!({"name": name, "labels": l, "annotations": {AUTOUPDATE: "true"}})
}

/// The rules an aggregated bootstrap role starts with: the union of the bootstrap roles its
/// label selects (the aggregation controller keeps them current from then on, but the API
/// server must be usable before it runs).
fn initial_rules(b: &BootstrapRole, all: &[BootstrapRole]) -> Vec<Rule> {
    let Some(label) = b.aggregate_from else {
        return b.rules.clone();
    };
    let mut out: Vec<Rule> = Vec::new();
    for source in all
        .iter()
        .filter(|r| r.labels.iter().any(|(k, _)| *k == label))
    {
        for rule in initial_rules(source, all) {
            if !out.contains(&rule) {
                out.push(rule);
            }
        }
    }
    out
}

/// The ClusterRole object a bootstrap role is created as (aggregated roles with the rules
/// of the roles they aggregate).
pub fn role_object(b: &BootstrapRole) -> Value {
    let rules: Vec<PolicyRule> = initial_rules(b, &cluster_roles())
        .iter()
        .map(PolicyRule::from)
        .collect();
    let mut o = json!({
        "apiVersion": format!("{GROUP}/v1"), "kind": "ClusterRole",
        "metadata": meta(b.name, &b.labels),
        "rules": rules,
    });
    if let Some(label) = b.aggregate_from {
        o["aggregationRule"] = json!({"clusterRoleSelectors": [{"matchLabels": {label: "true"}}]});
    }
    o
}

fn subject(kind: &str, name: &str, ns: &str) -> Value {
    match kind {
        "ServiceAccount" => json!({"kind": kind, "name": name, "namespace": ns}),
        _ => json!({"kind": kind, "name": name, "apiGroup": GROUP}),
    }
}

/// The ClusterRoleBinding object a bootstrap binding is created as.
pub fn binding_object(b: &BootstrapBinding) -> Value {
    json!({
        "apiVersion": format!("{GROUP}/v1"), "kind": "ClusterRoleBinding",
        "metadata": meta(b.name, &[]),
        "roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": b.role},
        "subjects": b.subjects.iter().map(|(k, n, ns)| subject(k, n, ns)).collect::<Vec<_>>(),
    })
}

/// Whether the object may be reconciled (`autoupdate` not set to `"false"`).
fn autoupdate(existing: &Value) -> bool {
    existing
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(AUTOUPDATE))
        .and_then(Value::as_str)
        != Some("false")
}

/// Adds missing labels and annotations of `want` to `have`; returns whether it changed.
fn merge_meta(have: &mut Value, want: &Value) -> bool {
    let mut changed = false;
    for field in ["labels", "annotations"] {
        let Some(want) = want
            .pointer(&format!("/metadata/{field}"))
            .and_then(Value::as_object)
        else {
            continue;
        };
        let meta = &mut have["metadata"];
        if !meta.get(field).is_some_and(Value::is_object) {
            meta[field] = json!({});
        }
        for (k, v) in want {
            if meta[field].get(k).is_none() {
                meta[field][k] = v.clone();
                changed = true;
            }
        }
    }
    changed
}

/// The reconciled form of an existing role, if anything is missing from it.
pub fn reconcile_role(have: &Value, want: &BootstrapRole) -> Option<Value> {
    if !autoupdate(have) {
        return None;
    }
    let target = role_object(want);
    let mut out = have.clone();
    let mut changed = merge_meta(&mut out, &target);
    if want.aggregate_from.is_some() && out.get("aggregationRule").is_none_or(Value::is_null) {
        out["aggregationRule"] = target["aggregationRule"].clone();
        changed = true;
    }
    let existing: Vec<Rule> = out
        .get("rules")
        .cloned()
        .and_then(|r| serde_json::from_value::<Vec<PolicyRule>>(r).ok())
        .unwrap_or_default()
        .iter()
        .map(Rule::from)
        .collect();
    let wanted = if want.aggregate_from.is_some() && !existing.is_empty() {
        // The aggregation controller owns an aggregated role's rules once it has any.
        Vec::new()
    } else {
        initial_rules(want, &cluster_roles())
    };
    let missing: Vec<&Rule> = wanted
        .iter()
        .filter(|rule| !uncovered(&existing, std::slice::from_ref(*rule)).is_empty())
        .collect();
    if !missing.is_empty() {
        let mut rules = out
            .get("rules")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        rules.extend(missing.into_iter().map(|r| json!(PolicyRule::from(r))));
        out["rules"] = Value::Array(rules);
        changed = true;
    }
    changed.then_some(out)
}

/// The reconciled form of an existing binding, if subjects or metadata are missing.
pub fn reconcile_binding(have: &Value, want: &BootstrapBinding) -> Option<Value> {
    if !autoupdate(have) {
        return None;
    }
    let target = binding_object(want);
    let mut out = have.clone();
    let mut changed = merge_meta(&mut out, &target);
    let mut subjects = out
        .get("subjects")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for s in target["subjects"].as_array().into_iter().flatten() {
        let same = |x: &Value| {
            ["kind", "name", "namespace"]
                .iter()
                .all(|f| x.get(f).unwrap_or(&Value::Null) == s.get(f).unwrap_or(&Value::Null))
        };
        if !subjects.iter().any(same) {
            subjects.push(s.clone());
            changed = true;
        }
    }
    out["subjects"] = Value::Array(subjects);
    changed.then_some(out)
}

/// Creates or completes the bootstrap policy, as the API server itself.
pub async fn reconcile(store: &GenericStore) -> Result<()> {
    let opts = WriteOpts::internal(MANAGER);
    let served = |plural: &str| {
        store
            .find(GROUP, "v1", plural)
            .ok_or_else(|| Error::internal(format!("{plural} are not served")))
    };
    let roles = served("clusterroles")?;
    for want in cluster_roles() {
        match store.get(&roles, None, want.name).await {
            Ok(have) => {
                if let Some(next) = reconcile_role(&have, &want) {
                    store
                        .update(&roles, None, want.name, next, None, &opts)
                        .await?;
                    tracing::info!(role = want.name, "reconciled bootstrap clusterrole");
                }
            }
            Err(e) if e.code() == 404 => {
                match store.create(&roles, None, role_object(&want), &opts).await {
                    Ok(_) | Err(Error::Api(_)) => {}
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        }
    }
    let bindings = served("clusterrolebindings")?;
    for want in cluster_role_bindings() {
        match store.get(&bindings, None, want.name).await {
            Ok(have) => {
                if let Some(next) = reconcile_binding(&have, &want) {
                    store
                        .update(&bindings, None, want.name, next, None, &opts)
                        .await?;
                    tracing::info!(
                        binding = want.name,
                        "reconciled bootstrap clusterrolebinding"
                    );
                }
            }
            Err(e) if e.code() == 404 => {
                match store
                    .create(&bindings, None, binding_object(&want), &opts)
                    .await
                {
                    Ok(_) | Err(Error::Api(_)) => {}
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconciliation_adds_and_never_removes() {
        let want = role(
            "r",
            vec![
                r(&["get"], &[""], &["pods"]),
                r(&["list"], &[""], &["pods"]),
            ],
        );
        let mut have = role_object(&role("r", vec![r(&["get"], &[""], &["pods", "secrets"])]));
        have["metadata"]["labels"]["mine"] = json!("x");
        let next = reconcile_role(&have, &want).expect("a rule is missing");
        assert_eq!(next["rules"].as_array().unwrap().len(), 2);
        assert_eq!(next["rules"][0]["resources"], json!(["pods", "secrets"]));
        assert_eq!(next["metadata"]["labels"]["mine"], "x");
        assert!(reconcile_role(&next, &want).is_none());
        have["metadata"]["annotations"][AUTOUPDATE] = json!("false");
        assert!(reconcile_role(&have, &want).is_none());

        let b = binding("b", vec![("Group", "g", ""), ("User", "u", "")]);
        let mut have = binding_object(&binding("b", vec![("User", "other", "")]));
        let next = reconcile_binding(&have, &b).unwrap();
        assert_eq!(next["subjects"].as_array().unwrap().len(), 3);
        assert!(reconcile_binding(&next, &b).is_none());
        have["metadata"]["annotations"][AUTOUPDATE] = json!("false");
        assert!(reconcile_binding(&have, &b).is_none());
    }

    #[test]
    fn aggregated_roles_start_with_their_sources_rules() {
        let all = cluster_roles();
        let get = |n: &str| all.iter().find(|r| r.name == n).unwrap();
        let view = initial_rules(get("view"), &all);
        let edit = initial_rules(get("edit"), &all);
        let admin = initial_rules(get("admin"), &all);
        assert_eq!(view, view_rules());
        assert!(view.iter().all(|r| edit.contains(r)));
        assert!(edit.iter().all(|r| admin.contains(r)));
        assert!(admin.len() > edit.len() && edit.len() > view.len());
    }

    #[test]
    fn quotas_and_limit_ranges_are_granted_as_kubernetes_grants_them() {
        let all = cluster_roles();
        let get = |n: &str| all.iter().find(|r| r.name == n).unwrap();
        let read = [r(
            READ,
            &[""],
            &["resourcequotas", "resourcequotas/status", "limitranges"],
        )];
        let write = [r(WRITE, &[""], &["resourcequotas", "limitranges"])];
        for name in ["view", "edit", "admin"] {
            let rules = initial_rules(get(name), &all);
            assert!(uncovered(&rules, &read).is_empty(), "{name} reads quotas");
            // Only cluster administrators set quotas and limits.
            assert_eq!(
                uncovered(&rules, &write).len(),
                10,
                "{name} writes no quota"
            );
        }
        let cm = &get("system:kube-controller-manager").rules;
        let status = [r(
            &["get", "list", "watch", "update"],
            &[""],
            &["resourcequotas/status", "resourcequotas"],
        )];
        assert!(uncovered(cm, &status).is_empty());
    }

    #[test]
    fn every_binding_names_a_bootstrap_role() {
        let roles: Vec<_> = cluster_roles().iter().map(|r| r.name).collect();
        for b in cluster_role_bindings() {
            assert!(roles.contains(&b.role), "{}", b.role);
        }
    }
}
