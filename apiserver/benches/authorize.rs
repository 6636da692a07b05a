//! What one authorization decision costs, in process: the authorizers `--authorization-mode`
//! builds (`system:masters` first, then Node and RBAC, or AlwaysAllow) asked about the
//! requests `skiff-authz-bench` sends end to end, over the same policy — the bootstrap policy,
//! 200 RoleBindings to other users, and the user holding `edit` in its namespace through a
//! RoleBinding. Prints a Markdown table of nanoseconds per decision (the best of five batches).
//!
//! `cargo bench -p skiff-apiserver --bench authorize`. Under `cargo test` (no `--bench`
//! argument) it runs each case a few times, as a check that it still decides as it should.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, RoleBinding};
use serde_json::json;
use skiff_apiserver::auth::{Attributes, Authorizer, Decision, UserInfo};
use skiff_apiserver::node_auth::authorizer::{NodeAuthorizer, PodIndex};
use skiff_apiserver::rbac::{self, bootstrap, Mode, Rbac, Snapshot};

/// Pods are never consulted: the user is not a node.
struct NoPods;

impl PodIndex for NoPods {
    fn any_bound(&self, _: &str, _: &str, _: &mut dyn FnMut(&[u8]) -> bool) -> bool {
        false
    }
    fn is_bound(&self, _: &str, _: &str, _: &str) -> bool {
        false
    }
}

fn policy() -> Snapshot {
    let roles: Vec<ClusterRole> = bootstrap::cluster_roles()
        .iter()
        .map(|r| serde_json::from_value(bootstrap::role_object(r)).expect("a ClusterRole"))
        .collect();
    let cluster_bindings: Vec<ClusterRoleBinding> = bootstrap::cluster_role_bindings()
        .iter()
        .map(|b| serde_json::from_value(bootstrap::binding_object(b)).expect("a binding"))
        .collect();
    let binding = |ns: &str, name: &str, user: &str, role: &str| -> RoleBinding {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": ns},
            "roleRef": {"apiGroup": rbac::GROUP, "kind": "ClusterRole", "name": role},
            "subjects": [{"apiGroup": rbac::GROUP, "kind": "User", "name": user}],
        }))
        .expect("a RoleBinding")
    };
    let mut bindings: Vec<RoleBinding> = (0..200)
        .map(|i| {
            let ns = format!("team-{}", i % 20);
            binding(&ns, &format!("view-{i}"), &format!("user-{i}"), "view")
        })
        .collect();
    bindings.push(binding("bench", "bench-edit", "bench", "edit"));
    Snapshot::from_objects(roles, Vec::new(), cluster_bindings, bindings)
}

fn user() -> UserInfo {
    UserInfo {
        name: "bench".into(),
        uid: "1000".into(),
        groups: vec!["bench-users".into(), "system:authenticated".into()],
        extra: BTreeMap::new(),
    }
}

fn attrs<'a>(
    user: &'a UserInfo,
    verb: &'a str,
    resource: &'a str,
    ns: &'a str,
    name: &'a str,
) -> Attributes<'a> {
    Attributes {
        path: "/api/v1/namespaces/bench/pods",
        ..Attributes::resource(user, verb, "", resource, ns, name)
    }
}

/// Nanoseconds per decision: the best of five batches of `n`.
fn time(n: u32, authz: &dyn Authorizer, a: &Attributes<'_>) -> f64 {
    (0..5)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..n {
                black_box(authz.authorize(black_box(a)));
            }
            start.elapsed().as_nanos() as f64 / f64::from(n)
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let n = if std::env::args().any(|a| a == "--bench") {
        200_000
    } else {
        10
    };
    let rbac = Rbac::fixed(policy());
    let node =
        || -> Option<Box<dyn Authorizer>> { Some(Box::new(NodeAuthorizer::new(Arc::new(NoPods)))) };
    let default = rbac::authorizers(&[Mode::Node, Mode::Rbac], &rbac, node());
    let allow_all = rbac::authorizers(&[Mode::AlwaysAllow], &rbac, node());
    let u = user();
    let cases = [
        (
            "create a pod",
            attrs(&u, "create", "pods", "bench", ""),
            true,
        ),
        ("get a pod", attrs(&u, "get", "pods", "bench", "p-1"), true),
        ("list pods", attrs(&u, "list", "pods", "bench", ""), true),
        (
            "get a secret elsewhere (refused)",
            attrs(&u, "get", "secrets", "team-3", "s"),
            false,
        ),
    ];
    println!("| request | AlwaysAllow, ns | Node,RBAC, ns |");
    println!("|---|---|---|");
    for (what, a, allowed) in &cases {
        let decided = default.authorize(a) == Decision::Allow;
        assert_eq!(decided, *allowed, "{what}: Node,RBAC decided {decided}");
        assert_eq!(
            allow_all.authorize(a),
            Decision::Allow,
            "{what}: AlwaysAllow"
        );
        let base = time(n, &allow_all, a);
        let full = time(n, &default, a);
        println!("| {what} | {base:.0} | {full:.0} |");
    }
}
