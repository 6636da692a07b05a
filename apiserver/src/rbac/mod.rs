//! Role-based access control: the `rbac.authorization.k8s.io` objects turned into decisions.
//!
//! Every request is authorized, so nothing here parses JSON per request: the roles and
//! bindings of the four RBAC watch caches are compiled into a [`Snapshot`] (roles by name,
//! bindings indexed by subject), rebuilt only when one of those caches has moved on. A
//! request then costs a few hash lookups and rule comparisons.
//!
//! Also here: the `system:masters` short cut ([`Masters`]), the authorizers
//! `--authorization-mode` builds ([`authorizers`]), the bootstrap policy ([`bootstrap`]) and
//! privilege-escalation prevention ([`escalation`]).

pub mod bootstrap;
pub mod escalation;

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use k8s_openapi::api::authorization::v1::{NonResourceRule, ResourceRule};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding, Subject};
use parking_lot::{Mutex, RwLock};

pub use crate::auth::rules::Rule;
use crate::auth::{Attributes, Authorizer, Decision, Rules, UserInfo};
use crate::storage::watch_cache::WatchCache;

/// The RBAC API group.
pub const GROUP: &str = "rbac.authorization.k8s.io";
/// The group every request of `system:masters` is allowed for.
pub const MASTERS: &str = "system:masters";

/// A role a binding grants.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum RoleRef {
    /// A ClusterRole, by name.
    Cluster(String),
    /// A Role of the binding's namespace, by name.
    Local(String),
}

/// A role granted by a binding, with the binding described as kube's RBAC authorizer names it
/// in its reason (`ClusterRoleBinding "x" of ClusterRole "y" to User "z"`), built once with
/// the snapshot so that naming it costs a request nothing.
#[derive(Debug, Clone)]
struct Grant {
    role: RoleRef,
    source: Arc<str>,
}

/// kube's `describeSubject`: `User "alice"`, `Group "dev"`, `ServiceAccount "robot/ns"`.
fn describe_subject(s: &Subject, binding_ns: &str) -> String {
    match s.kind.as_str() {
        "ServiceAccount" => {
            let ns = s
                .namespace
                .as_deref()
                .filter(|n| !n.is_empty())
                .unwrap_or(binding_ns);
            format!("ServiceAccount {:?}", format!("{}/{ns}", s.name))
        }
        kind => format!("{kind} {:?}", s.name),
    }
}

/// Bindings indexed by who they bind.
#[derive(Debug, Default)]
struct Bound {
    users: HashMap<String, Vec<Grant>>,
    groups: HashMap<String, Vec<Grant>>,
}

impl Bound {
    /// Adds a binding: `binding` is how the reason names it (`ClusterRoleBinding "x"`,
    /// `RoleBinding "x/ns"`), `role_kind` and `role` what it grants.
    fn add(&mut self, binding_ns: &str, binding: &str, subjects: &[Subject], role: RoleRef) {
        let (role_kind, role_name) = match &role {
            RoleRef::Cluster(n) => ("ClusterRole", n),
            RoleRef::Local(n) => ("Role", n),
        };
        for s in subjects {
            let (map, name) = match s.kind.as_str() {
                "User" => (&mut self.users, s.name.clone()),
                "Group" => (&mut self.groups, s.name.clone()),
                "ServiceAccount" => {
                    let ns = s
                        .namespace
                        .as_deref()
                        .filter(|n| !n.is_empty())
                        .unwrap_or(binding_ns);
                    if ns.is_empty() {
                        continue;
                    }
                    (
                        &mut self.users,
                        format!("system:serviceaccount:{ns}:{}", s.name),
                    )
                }
                _ => continue,
            };
            let grants = map.entry(name).or_default();
            if !grants.iter().any(|g| g.role == role) {
                let source = format!(
                    "{binding} of {role_kind} {role_name:?} to {}",
                    describe_subject(s, binding_ns)
                );
                grants.push(Grant {
                    role: role.clone(),
                    source: source.into(),
                });
            }
        }
    }

    /// The roles bound to a user or any of its groups.
    fn grants<'a: 'u, 'u>(&'a self, user: &'u UserInfo) -> impl Iterator<Item = &'a Grant> + 'u {
        self.users
            .get(&user.name)
            .into_iter()
            .chain(user.groups.iter().filter_map(|g| self.groups.get(g)))
            .flatten()
    }
}

/// Every role and binding, compiled.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// What the snapshot was built from (see [`Caches::fingerprint`]).
    fingerprint: Vec<(usize, i64, i64)>,
    cluster_roles: HashMap<String, Arc<[Rule]>>,
    roles: HashMap<(String, String), Arc<[Rule]>>,
    cluster_bound: Bound,
    bound: HashMap<String, Bound>,
}

fn compile(rules: &Option<Vec<k8s_openapi::api::rbac::v1::PolicyRule>>) -> Arc<[Rule]> {
    rules
        .iter()
        .flatten()
        .map(Rule::from)
        .collect::<Vec<_>>()
        .into()
}

impl Snapshot {
    fn build(caches: &Caches) -> Snapshot {
        // Objects the caches hold passed validation; one that does not decode is skipped.
        fn decoded<T: serde::de::DeserializeOwned>(cache: &WatchCache) -> Vec<T> {
            let (items, _) = cache.list("", |_| true);
            items
                .iter()
                .filter_map(|c| serde_json::from_slice(&c.json).ok())
                .collect()
        }
        Snapshot {
            fingerprint: caches.fingerprint(),
            ..Snapshot::from_objects(
                decoded(&caches.cluster_roles),
                decoded(&caches.roles),
                decoded(&caches.cluster_bindings),
                decoded(&caches.bindings),
            )
        }
    }

    /// Compiles a set of roles and bindings (namespaced ones by their `metadata.namespace`).
    pub fn from_objects(
        cluster_roles: impl IntoIterator<Item = ClusterRole>,
        roles: impl IntoIterator<Item = Role>,
        cluster_bindings: impl IntoIterator<Item = ClusterRoleBinding>,
        bindings: impl IntoIterator<Item = RoleBinding>,
    ) -> Snapshot {
        let mut s = Snapshot::default();
        for r in cluster_roles {
            if let Some(name) = r.metadata.name {
                s.cluster_roles.insert(name, compile(&r.rules));
            }
        }
        for r in roles {
            if let (Some(ns), Some(name)) = (r.metadata.namespace, r.metadata.name) {
                s.roles.insert((ns, name), compile(&r.rules));
            }
        }
        for b in cluster_bindings {
            if b.role_ref.kind == "ClusterRole" {
                let subjects = b.subjects.unwrap_or_default();
                let name = format!(
                    "ClusterRoleBinding {:?}",
                    b.metadata.name.unwrap_or_default()
                );
                s.cluster_bound
                    .add("", &name, &subjects, RoleRef::Cluster(b.role_ref.name));
            }
        }
        for b in bindings {
            let Some(ns) = b.metadata.namespace else {
                continue;
            };
            let role = match b.role_ref.kind.as_str() {
                "ClusterRole" => RoleRef::Cluster(b.role_ref.name),
                "Role" => RoleRef::Local(b.role_ref.name),
                _ => continue,
            };
            let subjects = b.subjects.unwrap_or_default();
            let name = format!(
                "RoleBinding {:?}",
                format!("{}/{ns}", b.metadata.name.unwrap_or_default())
            );
            s.bound
                .entry(ns.clone())
                .or_default()
                .add(&ns, &name, &subjects, role);
        }
        s
    }

    fn rules_of(&self, ns: &str, role: &RoleRef) -> Option<&[Rule]> {
        match role {
            RoleRef::Cluster(n) => self.cluster_roles.get(n).map(|r| &**r),
            RoleRef::Local(n) => self.roles.get(&(ns.to_string(), n.clone())).map(|r| &**r),
        }
    }

    /// Calls `visit` with every rule that applies to `user` in `namespace` (cluster-wide
    /// rules first) until it returns true; returns whether it did.
    pub fn visit(
        &self,
        user: &UserInfo,
        namespace: &str,
        visit: impl FnMut(&Rule) -> bool,
    ) -> bool {
        self.find(user, namespace, visit).is_some()
    }

    /// As [`Snapshot::visit`], naming the binding whose rule `visit` accepted as kube's RBAC
    /// authorizer names it (`ClusterRoleBinding "x" of ClusterRole "y" to User "z"`).
    pub fn find(
        &self,
        user: &UserInfo,
        namespace: &str,
        mut visit: impl FnMut(&Rule) -> bool,
    ) -> Option<&str> {
        for g in self.cluster_bound.grants(user) {
            // A binding to a missing role grants nothing.
            if let Some(rules) = self.rules_of("", &g.role) {
                if rules.iter().any(&mut visit) {
                    return Some(&g.source);
                }
            }
        }
        if namespace.is_empty() {
            return None;
        }
        if let Some(bound) = self.bound.get(namespace) {
            for g in bound.grants(user) {
                if let Some(rules) = self.rules_of(namespace, &g.role) {
                    if rules.iter().any(&mut visit) {
                        return Some(&g.source);
                    }
                }
            }
        }
        None
    }

    /// Every rule that applies to `user` in `namespace`.
    pub fn rules(&self, user: &UserInfo, namespace: &str) -> Vec<Rule> {
        let mut out = Vec::new();
        self.visit(user, namespace, |r| {
            out.push(r.clone());
            false
        });
        out
    }

    /// The rules of a role a binding refers to (`None`: no such role).
    pub fn role_rules(&self, namespace: &str, kind: &str, name: &str) -> Option<Vec<Rule>> {
        let role = match kind {
            "ClusterRole" => RoleRef::Cluster(name.to_string()),
            _ => RoleRef::Local(name.to_string()),
        };
        self.rules_of(namespace, &role).map(<[Rule]>::to_vec)
    }
}

/// The four watch caches RBAC reads.
struct Caches {
    roles: Arc<WatchCache>,
    cluster_roles: Arc<WatchCache>,
    bindings: Arc<WatchCache>,
    cluster_bindings: Arc<WatchCache>,
}

impl Caches {
    fn all(&self) -> [&Arc<WatchCache>; 4] {
        [
            &self.roles,
            &self.cluster_roles,
            &self.bindings,
            &self.cluster_bindings,
        ]
    }

    fn revs(&self) -> [i64; 4] {
        self.all().map(|c| c.rev())
    }

    /// Per cache: how many objects, and the sum and maximum of their resourceVersions. A
    /// cache's revision also moves when it merely catches up with etcd; this changes only
    /// when an object was added, changed or removed, and costs no decoding.
    fn fingerprint(&self) -> Vec<(usize, i64, i64)> {
        self.all()
            .iter()
            .map(|c| {
                let (items, _) = c.list("", |_| true);
                let sum = items.iter().fold(0i64, |a, o| a.wrapping_add(o.rv));
                let max = items.iter().map(|o| o.rv).max().unwrap_or(0);
                (items.len(), sum, max)
            })
            .collect()
    }
}

/// The RBAC authorizer: a compiled snapshot of the RBAC objects, kept current.
///
/// It exists before the store (the escalation check in the admission chain holds it) and is
/// attached to the store's caches once they are served.
#[derive(Default)]
pub struct Rbac {
    caches: OnceLock<Caches>,
    /// The snapshot, and the cache revisions it is known to be current at.
    snapshot: RwLock<([i64; 4], Arc<Snapshot>)>,
    rebuilding: Mutex<()>,
}

impl std::fmt::Debug for Rbac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rbac").finish_non_exhaustive()
    }
}

impl Rbac {
    /// An authorizer that knows no roles until [`Rbac::attach`]ed.
    pub fn new() -> Arc<Self> {
        Arc::new(Rbac::default())
    }

    /// An authorizer over a fixed set of roles and bindings, never attached to a store.
    pub fn fixed(snapshot: Snapshot) -> Arc<Self> {
        Arc::new(Rbac {
            snapshot: RwLock::new(([0; 4], Arc::new(snapshot))),
            ..Rbac::default()
        })
    }

    /// Reads roles and bindings from the store's RBAC watch caches from now on.
    pub fn attach(&self, store: &crate::store::GenericStore) {
        let cache = |plural: &str| {
            store
                .find(GROUP, "v1", plural)
                .map(|r| store.cache(&r))
                .expect("the RBAC resources are served")
        };
        let _ = self.caches.set(Caches {
            roles: cache("roles"),
            cluster_roles: cache("clusterroles"),
            bindings: cache("rolebindings"),
            cluster_bindings: cache("clusterrolebindings"),
        });
    }

    /// The current snapshot, rebuilt first if an RBAC object changed since it was built.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        let Some(caches) = self.caches.get() else {
            return self.snapshot.read().1.clone();
        };
        let revs = caches.revs();
        {
            let current = self.snapshot.read();
            if current.0 == revs {
                return current.1.clone();
            }
        }
        // One request looks; the others wait for it rather than all rebuilding.
        let _g = self.rebuilding.lock();
        let revs = caches.revs();
        let current = self.snapshot.read().1.clone();
        if self.snapshot.read().0 == revs {
            return current;
        }
        let next = if current.fingerprint == caches.fingerprint() {
            current
        } else {
            Arc::new(Snapshot::build(caches))
        };
        *self.snapshot.write() = (revs, next.clone());
        next
    }
}

impl Authorizer for Rbac {
    fn authorize(&self, attrs: &Attributes<'_>) -> Decision {
        let ns = if attrs.resource_request {
            attrs.namespace
        } else {
            ""
        };
        if self.snapshot().visit(attrs.user, ns, |r| r.allows(attrs)) {
            Decision::Allow
        } else {
            // kube-apiserver's 403 carries no RBAC text: the next authorizer may still allow.
            Decision::NoOpinion(String::new())
        }
    }

    fn authorize_with_reason(&self, attrs: &Attributes<'_>) -> (Decision, String) {
        let ns = if attrs.resource_request {
            attrs.namespace
        } else {
            ""
        };
        match self.snapshot().find(attrs.user, ns, |r| r.allows(attrs)) {
            Some(source) => (Decision::Allow, format!("RBAC: allowed by {source}")),
            None => (Decision::NoOpinion(String::new()), String::new()),
        }
    }

    fn rules(&self, user: &UserInfo, namespace: &str) -> Rules {
        let mut out = Rules::default();
        for r in self.snapshot().rules(user, namespace) {
            if r.non_resource_urls.is_empty() {
                out.resource.push(ResourceRule {
                    verbs: r.verbs.clone(),
                    api_groups: Some(r.api_groups.clone()),
                    resources: Some(r.resources.clone()),
                    resource_names: (!r.resource_names.is_empty())
                        .then(|| r.resource_names.clone()),
                });
            } else {
                out.non_resource.push(NonResourceRule {
                    verbs: r.verbs.clone(),
                    non_resource_urls: Some(r.non_resource_urls.clone()),
                });
            }
        }
        out
    }
}

/// Allows everything to members of `system:masters`, before any other authorizer is asked
/// (kube-apiserver's privileged group): the admin credential and the server's own identity.
#[derive(Debug, Default, Clone, Copy)]
pub struct Masters;

impl Authorizer for Masters {
    fn authorize(&self, attrs: &Attributes<'_>) -> Decision {
        if attrs.user.groups.iter().any(|g| g == MASTERS) {
            Decision::Allow
        } else {
            Decision::NoOpinion(String::new())
        }
    }

    fn rules(&self, user: &UserInfo, _namespace: &str) -> Rules {
        if !user.groups.iter().any(|g| g == MASTERS) {
            return Rules::default();
        }
        let all = || Some(vec!["*".to_string()]);
        Rules {
            resource: vec![ResourceRule {
                verbs: vec!["*".into()],
                api_groups: all(),
                resources: all(),
                resource_names: None,
            }],
            non_resource: vec![NonResourceRule {
                verbs: vec!["*".into()],
                non_resource_urls: all(),
            }],
            ..Rules::default()
        }
    }
}

/// An `--authorization-mode` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The node authorizer.
    Node,
    /// Role-based access control.
    Rbac,
    /// Everything allowed.
    AlwaysAllow,
}

impl Mode {
    /// Parses one mode as kube-apiserver spells it.
    pub fn parse(s: &str) -> Result<Mode, String> {
        match s {
            "Node" => Ok(Mode::Node),
            "RBAC" => Ok(Mode::Rbac),
            "AlwaysAllow" => Ok(Mode::AlwaysAllow),
            other => Err(format!(
                "authorization-mode {other:?} is not a valid mode (valid: Node, RBAC, AlwaysAllow)"
            )),
        }
    }
}

/// The authorizers the modes ask for, in their order, after [`Masters`]. Node's authorizer
/// comes in `node` (None until one is given).
pub fn authorizers(
    modes: &[Mode],
    rbac: &Arc<Rbac>,
    node: Option<Box<dyn Authorizer>>,
) -> crate::auth::Union {
    let mut list: Vec<Box<dyn Authorizer>> = vec![Box::new(Masters)];
    let mut node = node;
    for m in modes {
        match m {
            Mode::Node => {
                if let Some(n) = node.take() {
                    list.push(n);
                }
            }
            Mode::Rbac => list.push(Box::new(Shared(rbac.clone()))),
            Mode::AlwaysAllow => list.push(Box::new(crate::auth::AllowAll)),
        }
    }
    crate::auth::Union(list)
}

/// An authorizer shared with others (the RBAC snapshot is also the escalation check's).
struct Shared(Arc<Rbac>);

impl Authorizer for Shared {
    fn authorize(&self, attrs: &Attributes<'_>) -> Decision {
        self.0.authorize(attrs)
    }
    fn authorize_with_reason(&self, attrs: &Attributes<'_>) -> (Decision, String) {
        self.0.authorize_with_reason(attrs)
    }
    fn rules(&self, user: &UserInfo, namespace: &str) -> Rules {
        self.0.rules(user, namespace)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user(name: &str, groups: &[&str]) -> UserInfo {
        UserInfo {
            name: name.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            ..UserInfo::default()
        }
    }

    fn rules(verbs: &[&str], resources: &[&str]) -> serde_json::Value {
        json!([{"apiGroups": [""], "resources": resources, "verbs": verbs}])
    }

    fn snapshot() -> Snapshot {
        let cluster_roles: Vec<ClusterRole> = serde_json::from_value(json!([
            {"metadata": {"name": "reader"}, "rules": rules(&["get"], &["pods"])},
            {"metadata": {"name": "nodes"}, "rules": rules(&["list"], &["nodes"])},
        ]))
        .unwrap();
        let roles: Vec<Role> = serde_json::from_value(json!([
            {"metadata": {"name": "secrets", "namespace": "a"},
             "rules": rules(&["get"], &["secrets"])},
        ]))
        .unwrap();
        let cluster_bindings: Vec<ClusterRoleBinding> = serde_json::from_value(json!([
            {"metadata": {"name": "ops-nodes"},
             "roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": "nodes"},
             "subjects": [{"kind": "Group", "name": "ops"}]},
        ]))
        .unwrap();
        let bindings: Vec<RoleBinding> = serde_json::from_value(json!([
            {"metadata": {"name": "r", "namespace": "a"},
             "roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": "reader"},
             "subjects": [{"kind": "User", "name": "alice"},
                          {"kind": "ServiceAccount", "name": "robot"}]},
            {"metadata": {"name": "s", "namespace": "a"},
             "roleRef": {"apiGroup": GROUP, "kind": "Role", "name": "secrets"},
             "subjects": [{"kind": "User", "name": "alice"}]},
            {"metadata": {"name": "gone", "namespace": "b"},
             "roleRef": {"apiGroup": GROUP, "kind": "Role", "name": "missing"},
             "subjects": [{"kind": "User", "name": "alice"}]},
        ]))
        .unwrap();
        Snapshot::from_objects(cluster_roles, roles, cluster_bindings, bindings)
    }

    fn allowed(s: &Snapshot, u: &UserInfo, verb: &str, resource: &str, ns: &str) -> bool {
        let a = Attributes::resource(u, verb, "", resource, ns, "x");
        s.visit(u, ns, |r| r.allows(&a))
    }

    #[test]
    fn role_bindings_grant_only_in_their_namespace() {
        let s = snapshot();
        let alice = user("alice", &["system:authenticated"]);
        assert!(allowed(&s, &alice, "get", "pods", "a"));
        assert!(allowed(&s, &alice, "get", "secrets", "a"));
        assert!(!allowed(&s, &alice, "get", "pods", "b"));
        assert!(!allowed(&s, &alice, "get", "pods", ""));
        assert!(!allowed(&s, &alice, "delete", "pods", "a"));
    }

    #[test]
    fn service_account_subjects_default_to_the_bindings_namespace() {
        let s = snapshot();
        let robot = user("system:serviceaccount:a:robot", &[]);
        assert!(allowed(&s, &robot, "get", "pods", "a"));
        let other = user("system:serviceaccount:b:robot", &[]);
        assert!(!allowed(&s, &other, "get", "pods", "a"));
    }

    #[test]
    fn groups_are_bound_and_missing_roles_grant_nothing() {
        let s = snapshot();
        let bob = user("bob", &["ops"]);
        assert!(allowed(&s, &bob, "list", "nodes", ""));
        assert!(allowed(&s, &bob, "list", "nodes", "a"));
        assert!(!allowed(&s, &user("bob", &[]), "list", "nodes", ""));
        assert!(s.role_rules("b", "Role", "missing").is_none());
        assert_eq!(s.rules(&user("alice", &[]), "b"), Vec::<Rule>::new());
    }

    #[test]
    fn the_allowing_binding_is_named_as_kube_names_it() {
        let rbac = Rbac::fixed(snapshot());
        let reason = |u: &UserInfo, verb: &str, resource: &str, ns: &str| {
            rbac.authorize_with_reason(&Attributes::resource(u, verb, "", resource, ns, "x"))
        };
        let alice = user("alice", &[]);
        assert_eq!(
            reason(&alice, "get", "secrets", "a"),
            (
                Decision::Allow,
                r#"RBAC: allowed by RoleBinding "s/a" of Role "secrets" to User "alice""#.into()
            )
        );
        assert_eq!(
            reason(&user("bob", &["ops"]), "list", "nodes", ""),
            (
                Decision::Allow,
                r#"RBAC: allowed by ClusterRoleBinding "ops-nodes" of ClusterRole "nodes" to Group "ops""#
                    .into()
            )
        );
        assert_eq!(
            reason(&user("system:serviceaccount:a:robot", &[]), "get", "pods", "a"),
            (
                Decision::Allow,
                r#"RBAC: allowed by RoleBinding "r/a" of ClusterRole "reader" to ServiceAccount "robot/a""#
                    .into()
            )
        );
        assert_eq!(
            reason(&alice, "delete", "pods", "a"),
            (Decision::NoOpinion(String::new()), String::new())
        );
        // The same decisions as without reasons, through the authorizers the modes build.
        let all = authorizers(&[Mode::Node, Mode::Rbac], &rbac, None);
        let a = Attributes::resource(&alice, "get", "", "pods", "a", "p");
        assert_eq!(all.authorize_with_reason(&a).0, all.authorize(&a));
        let admin = user("admin", &[MASTERS]);
        let a = Attributes::resource(&admin, "get", "", "pods", "a", "p");
        assert_eq!(
            all.authorize_with_reason(&a),
            (Decision::Allow, String::new())
        );
    }

    #[test]
    fn a_fixed_authorizer_decides_from_its_snapshot() {
        let rbac = Rbac::fixed(snapshot());
        let alice = user("alice", &[]);
        let a = Attributes::resource(&alice, "get", "", "pods", "a", "p");
        assert_eq!(rbac.authorize(&a), Decision::Allow);
        let a = Attributes::resource(&alice, "get", "", "pods", "b", "p");
        assert!(matches!(rbac.authorize(&a), Decision::NoOpinion(_)));
    }
}
