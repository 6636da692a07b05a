//! The Node authorizer, as Kubernetes' (`--authorization-mode=Node`): a node may read the
//! Secrets, ConfigMaps, PersistentVolumeClaims and PersistentVolumes the pods bound to it use,
//! create tokens for their ServiceAccounts, read its own Node, and touch its own Lease; for
//! every other resource it has the `system:node` rules. Users that are not nodes get no
//! opinion, and so does a node asking for what it may not have, so that a later authorizer
//! (RBAC) may still allow it.
//!
//! Kubernetes keeps a graph of pods, nodes and what pods reference, fed by informers. Here the
//! graph is the pods watch cache itself: the pods of one namespace bound to the node (a field
//! the cache indexes, so no pod is decoded to filter) are decoded for their references only
//! when a node asks for an object of that namespace. No request reads etcd.

use std::sync::Arc;

use super::references::{references, Kind};
use super::{node_identity, rules};
use crate::auth::{field_requirement, Attributes, Authorizer, Decision, Rules, UserInfo};
use crate::storage::watch_cache::WatchCache;

/// Where the authorizer finds pods and the claims they use.
pub trait PodIndex: Send + Sync {
    /// Whether some pod of namespace `ns` bound to `node` satisfies `f` (given its JSON).
    fn any_bound(&self, ns: &str, node: &str, f: &mut dyn FnMut(&[u8]) -> bool) -> bool;
    /// Whether the pod `ns/name` is bound to `node`.
    fn is_bound(&self, ns: &str, name: &str, node: &str) -> bool;
    /// The claims (namespace, name) bound to PersistentVolume `pv`.
    fn claims_of(&self, _pv: &str) -> Vec<(String, String)> {
        Vec::new()
    }
}

/// The pods watch cache as a [`PodIndex`].
pub struct CachedPods {
    pods: Arc<WatchCache>,
    /// `/registry/pods/`.
    prefix: String,
    /// Where `spec.nodeName` is among the pods' indexed fields.
    node_field: usize,
    /// The claims watch cache and its prefix, when claims are served.
    claims: Option<(Arc<WatchCache>, String)>,
}

impl CachedPods {
    /// An index over the pods cache (`prefix` its etcd prefix, `node_field` the position of
    /// `spec.nodeName` among its selectable fields) and the claims cache, if any.
    pub fn new(
        pods: Arc<WatchCache>,
        prefix: String,
        node_field: usize,
        claims: Option<(Arc<WatchCache>, String)>,
    ) -> Self {
        CachedPods {
            pods,
            prefix,
            node_field,
            claims,
        }
    }
}

impl PodIndex for CachedPods {
    fn any_bound(&self, ns: &str, node: &str, f: &mut dyn FnMut(&[u8]) -> bool) -> bool {
        let (pods, _) = self.pods.list(&format!("{}{ns}/", self.prefix), |c| {
            c.field(self.node_field) == node
        });
        pods.iter().any(|p| f(&p.json))
    }

    fn is_bound(&self, ns: &str, name: &str, node: &str) -> bool {
        self.pods
            .get(&format!("{}{ns}/{name}", self.prefix))
            .is_some_and(|p| p.field(self.node_field) == node)
    }

    fn claims_of(&self, pv: &str) -> Vec<(String, String)> {
        let Some((claims, prefix)) = &self.claims else {
            return Vec::new();
        };
        claims
            .list(prefix, |_| true)
            .0
            .iter()
            .filter(|c| {
                serde_json::from_slice::<serde_json::Value>(&c.json)
                    .ok()
                    .and_then(|v| v.pointer("/spec/volumeName")?.as_str().map(|s| s == pv))
                    .unwrap_or(false)
            })
            .map(|c| (c.namespace.clone(), c.name.clone()))
            .collect()
    }
}

/// The Node authorizer.
pub struct NodeAuthorizer {
    pods: Arc<dyn PodIndex>,
}

fn no(why: impl Into<String>) -> Decision {
    Decision::NoOpinion(why.into())
}

fn no_relationship(node: &str) -> Decision {
    no(format!(
        "no relationship found between node '{node}' and this object"
    ))
}

impl NodeAuthorizer {
    /// An authorizer that finds pods in `pods`.
    pub fn new(pods: Arc<dyn PodIndex>) -> Self {
        NodeAuthorizer { pods }
    }

    /// Whether a pod bound to `node` in `ns` references `kind`/`name`.
    fn referenced(&self, node: &str, ns: &str, kind: Kind, name: &str) -> bool {
        self.pods
            .any_bound(ns, node, &mut |json| references(json, kind, name))
    }

    /// The graph decision for one named object of `kind` (or a pod, or a volume).
    fn related(&self, node: &str, a: &Attributes<'_>, target: Target) -> Decision {
        if a.name.is_empty() {
            return no("No Object name found");
        }
        let found = match target {
            Target::Ref(kind) => self.referenced(node, a.namespace, kind, a.name),
            Target::Pod => self.pods.is_bound(a.namespace, a.name, node),
            Target::Volume => self
                .pods
                .claims_of(a.name)
                .iter()
                .any(|(ns, claim)| self.referenced(node, ns, Kind::Claim, claim)),
        };
        if found {
            Decision::Allow
        } else {
            no_relationship(node)
        }
    }

    fn read_namespaced(&self, node: &str, a: &Attributes<'_>, kind: Kind) -> Decision {
        if !matches!(a.verb, "get" | "list" | "watch") {
            return no("can only read resources of this type");
        }
        if !a.subresource.is_empty() {
            return no("cannot read subresource");
        }
        if a.namespace.is_empty() {
            return no("can only read namespaced object of this type");
        }
        self.related(node, a, Target::Ref(kind))
    }

    fn get(&self, node: &str, a: &Attributes<'_>, target: Target) -> Decision {
        if a.verb != "get" {
            return no("can only get individual resources of this type");
        }
        if !a.subresource.is_empty() {
            return no("cannot get subresource");
        }
        self.related(node, a, target)
    }

    fn claim(&self, node: &str, a: &Attributes<'_>) -> Decision {
        if a.subresource == "status" {
            if !matches!(a.verb, "update" | "patch") {
                return no("can only get/update/patch this type");
            }
            return self.related(node, a, Target::Ref(Kind::Claim));
        }
        self.get(node, a, Target::Ref(Kind::Claim))
    }

    fn token(&self, node: &str, a: &Attributes<'_>) -> Decision {
        if a.verb != "create" || a.name.is_empty() {
            return no("can only create tokens for individual service accounts");
        }
        if a.subresource != "token" {
            return no("can only create token subresource of serviceaccount");
        }
        self.related(node, a, Target::Ref(Kind::ServiceAccount))
    }

    fn lease(node: &str, a: &Attributes<'_>) -> Decision {
        if !matches!(a.verb, "get" | "create" | "update" | "patch" | "delete") {
            return no("can only get, create, update, patch, or delete a node lease");
        }
        if a.namespace != "kube-node-lease" {
            return no("can only access leases in the \"kube-node-lease\" system namespace");
        }
        // A create names no object here: NodeRestriction checks the name it carries.
        if a.verb != "create" && a.name != node {
            return no("can only access node lease with the same name as the requesting node");
        }
        Decision::Allow
    }

    fn node_object(node: &str, a: &Attributes<'_>) -> Decision {
        match (a.subresource, a.verb) {
            // NodeRestriction limits these to the node's own object.
            ("", "create" | "update" | "patch") | ("status", "update" | "patch") => Decision::Allow,
            // By name rather than through the graph, so a kubelet may look for its Node
            // before it registers it.
            ("", "get" | "list" | "watch") => match a.name {
                n if n == node => Decision::Allow,
                "" => no(format!(
                    "node '{node}' cannot read all nodes, only its own Node object"
                )),
                other => no(format!(
                    "node '{node}' cannot read '{other}', only its own Node object"
                )),
            },
            _ => no(""),
        }
    }

    fn pod(&self, node: &str, a: &Attributes<'_>) -> Decision {
        match (a.subresource, a.verb) {
            ("", "get") => self.get(node, a, Target::Pod),
            ("", "list" | "watch") => {
                if field_requirement(a.field_selector, "spec.nodeName") == Some(node) {
                    Decision::Allow
                } else if !a.name.is_empty() {
                    self.related(node, a, Target::Pod)
                } else {
                    no("can only list/watch pods with spec.nodeName field selector")
                }
            }
            // Mirror pods, pod status and evictions: NodeRestriction limits these to the
            // node's own pods.
            ("", "create" | "delete") | ("status", "update" | "patch") | ("eviction", "create") => {
                Decision::Allow
            }
            _ => no(""),
        }
    }
}

/// What a graph decision looks for.
#[derive(Clone, Copy)]
enum Target {
    /// An object pods reference by name.
    Ref(Kind),
    /// A pod bound to the node.
    Pod,
    /// A PersistentVolume bound to a claim such a pod uses.
    Volume,
}

impl Authorizer for NodeAuthorizer {
    fn authorize(&self, a: &Attributes<'_>) -> Decision {
        let Some(node) = node_identity(a.user) else {
            return no("");
        };
        if node.is_empty() {
            return no(format!("unknown node for user {:?}", a.user.name));
        }
        if a.resource_request {
            match (a.api_group, a.resource) {
                ("", "secrets") => return self.read_namespaced(node, a, Kind::Secret),
                ("", "configmaps") => return self.read_namespaced(node, a, Kind::ConfigMap),
                ("", "persistentvolumeclaims") => return self.claim(node, a),
                ("", "persistentvolumes") => return self.get(node, a, Target::Volume),
                ("", "serviceaccounts") => return self.token(node, a),
                ("coordination.k8s.io", "leases") => return Self::lease(node, a),
                ("", "nodes") => return Self::node_object(node, a),
                ("", "pods") => return self.pod(node, a),
                _ => {}
            }
        }
        if rules::allow(a) {
            Decision::Allow
        } else {
            no("")
        }
    }

    fn rules(&self, user: &UserInfo, _namespace: &str) -> Rules {
        if node_identity(user).is_some() {
            return Rules {
                incomplete: true,
                evaluation_error: "node authorizer does not support user rule resolution".into(),
                ..Rules::default()
            };
        }
        Rules::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::authn::user;
    use serde_json::{json, Value};

    /// Pods as (namespace, name, node, JSON).
    struct Fixed(Vec<(String, String, String, Vec<u8>)>);

    impl PodIndex for Fixed {
        fn any_bound(&self, ns: &str, node: &str, f: &mut dyn FnMut(&[u8]) -> bool) -> bool {
            self.0
                .iter()
                .filter(|(n, _, nd, _)| n == ns && nd == node)
                .any(|(_, _, _, j)| f(j))
        }
        fn is_bound(&self, ns: &str, name: &str, node: &str) -> bool {
            self.0
                .iter()
                .any(|(n, m, nd, _)| n == ns && m == name && nd == node)
        }
        fn claims_of(&self, pv: &str) -> Vec<(String, String)> {
            if pv == "pv-data" {
                vec![("default".into(), "data".into())]
            } else {
                Vec::new()
            }
        }
    }

    fn pod(ns: &str, name: &str, node: &str, spec: Value) -> (String, String, String, Vec<u8>) {
        let mut spec = spec;
        spec["nodeName"] = json!(node);
        let v = json!({"metadata": {"name": name, "namespace": ns}, "spec": spec});
        (
            ns.into(),
            name.into(),
            node.into(),
            serde_json::to_vec(&v).unwrap(),
        )
    }

    fn authz() -> NodeAuthorizer {
        NodeAuthorizer::new(Arc::new(Fixed(vec![
            pod(
                "default",
                "web",
                "n1",
                json!({
                    "serviceAccountName": "robot",
                    "containers": [{"name": "c", "envFrom": [{"configMapRef": {"name": "cm1"}}]}],
                    "volumes": [
                        {"name": "s", "secret": {"secretName": "s1"}},
                        {"name": "d", "persistentVolumeClaim": {"claimName": "data"}},
                    ],
                }),
            ),
            pod(
                "default",
                "db",
                "n2",
                json!({"volumes": [{"name": "s", "secret": {"secretName": "s2"}}]}),
            ),
        ])))
    }

    struct Req {
        verb: &'static str,
        group: &'static str,
        resource: &'static str,
        sub: &'static str,
        ns: &'static str,
        name: &'static str,
        fields: &'static str,
    }

    fn req(
        verb: &'static str,
        resource: &'static str,
        ns: &'static str,
        name: &'static str,
    ) -> Req {
        Req {
            verb,
            group: "",
            resource,
            sub: "",
            ns,
            name,
            fields: "",
        }
    }

    fn decide(u: &UserInfo, r: &Req) -> Decision {
        authz().authorize(&Attributes {
            user: u,
            verb: r.verb,
            resource_request: true,
            api_group: r.group,
            resource: r.resource,
            subresource: r.sub,
            namespace: r.ns,
            name: r.name,
            path: "",
            field_selector: r.fields,
        })
    }

    fn n1() -> UserInfo {
        user("system:node:n1", &["system:nodes", "system:authenticated"])
    }

    const NO_REL: &str = "no relationship found between node 'n1' and this object";

    #[test]
    fn a_node_reads_what_its_pods_use_and_nothing_else() {
        let u = n1();
        assert_eq!(
            decide(&u, &req("get", "secrets", "default", "s1")),
            Decision::Allow
        );
        assert_eq!(
            decide(&u, &req("watch", "secrets", "default", "s1")),
            Decision::Allow
        );
        assert_eq!(
            decide(&u, &req("get", "configmaps", "default", "cm1")),
            Decision::Allow
        );
        // Another node's pod's secret.
        assert_eq!(
            decide(&u, &req("get", "secrets", "default", "s2")),
            no(NO_REL)
        );
        // The same name in another namespace.
        assert_eq!(
            decide(&u, &req("get", "secrets", "other", "s1")),
            no(NO_REL)
        );
        assert_eq!(
            decide(&u, &req("list", "secrets", "default", "")),
            no("No Object name found")
        );
        assert_eq!(
            decide(&u, &req("list", "secrets", "", "")),
            no("can only read namespaced object of this type")
        );
        assert_eq!(
            decide(&u, &req("update", "secrets", "default", "s1")),
            no("can only read resources of this type")
        );
        assert_eq!(
            decide(&u, &req("delete", "configmaps", "default", "cm1")),
            no("can only read resources of this type")
        );
    }

    #[test]
    fn claims_volumes_and_tokens_follow_the_pods() {
        let u = n1();
        assert_eq!(
            decide(&u, &req("get", "persistentvolumeclaims", "default", "data")),
            Decision::Allow
        );
        assert_eq!(
            decide(
                &u,
                &req("list", "persistentvolumeclaims", "default", "data")
            ),
            no("can only get individual resources of this type")
        );
        assert_eq!(
            decide(&u, &req("get", "persistentvolumes", "", "pv-data")),
            Decision::Allow
        );
        assert_eq!(
            decide(&u, &req("get", "persistentvolumes", "", "pv-other")),
            no(NO_REL)
        );
        let token = |name| Req {
            sub: "token",
            ..req("create", "serviceaccounts", "default", name)
        };
        assert_eq!(decide(&u, &token("robot")), Decision::Allow);
        assert_eq!(decide(&u, &token("default")), no(NO_REL));
        assert_eq!(
            decide(&u, &req("get", "serviceaccounts", "default", "robot")),
            no("can only create tokens for individual service accounts")
        );
    }

    #[test]
    fn nodes_pods_and_leases() {
        let u = n1();
        assert_eq!(decide(&u, &req("get", "nodes", "", "n1")), Decision::Allow);
        assert_eq!(
            decide(&u, &req("get", "nodes", "", "n2")),
            no("node 'n1' cannot read 'n2', only its own Node object")
        );
        assert_eq!(
            decide(&u, &req("list", "nodes", "", "")),
            no("node 'n1' cannot read all nodes, only its own Node object")
        );
        assert_eq!(
            decide(&u, &req("update", "nodes", "", "n2")),
            Decision::Allow,
            "NodeRestriction refuses it"
        );
        assert_eq!(decide(&u, &req("delete", "nodes", "", "n1")), no(""));
        assert_eq!(
            decide(&u, &req("get", "pods", "default", "web")),
            Decision::Allow
        );
        assert_eq!(decide(&u, &req("get", "pods", "default", "db")), no(NO_REL));
        let list = |fields| Req {
            fields,
            ..req("watch", "pods", "", "")
        };
        assert_eq!(decide(&u, &list("spec.nodeName=n1")), Decision::Allow);
        assert_eq!(
            decide(&u, &list("spec.nodeName=n2")),
            no("can only list/watch pods with spec.nodeName field selector")
        );
        assert_eq!(
            decide(&u, &list("")),
            no("can only list/watch pods with spec.nodeName field selector")
        );
        let status = Req {
            sub: "status",
            ..req("patch", "pods", "default", "db")
        };
        assert_eq!(decide(&u, &status), Decision::Allow);
        let lease = |verb, ns, name| Req {
            group: "coordination.k8s.io",
            ..req(verb, "leases", ns, name)
        };
        assert_eq!(
            decide(&u, &lease("update", "kube-node-lease", "n1")),
            Decision::Allow
        );
        assert_eq!(
            decide(&u, &lease("update", "kube-node-lease", "n2")),
            no("can only access node lease with the same name as the requesting node")
        );
        assert_eq!(
            decide(&u, &lease("get", "default", "n1")),
            no("can only access leases in the \"kube-node-lease\" system namespace")
        );
    }

    #[test]
    fn other_resources_follow_the_node_rules() {
        let u = n1();
        assert_eq!(
            decide(&u, &req("list", "services", "", "")),
            Decision::Allow
        );
        assert_eq!(
            decide(&u, &req("create", "events", "default", "")),
            Decision::Allow
        );
        let csr = Req {
            group: "certificates.k8s.io",
            ..req("create", "certificatesigningrequests", "", "")
        };
        assert_eq!(decide(&u, &csr), Decision::Allow);
        assert_eq!(
            decide(&u, &req("delete", "services", "default", "x")),
            no("")
        );
        let deploy = Req {
            group: "apps",
            ..req("list", "deployments", "", "")
        };
        assert_eq!(decide(&u, &deploy), no(""));
    }

    #[test]
    fn users_that_are_not_nodes_get_no_opinion() {
        let alice = user("alice", &["system:authenticated"]);
        assert_eq!(
            decide(&alice, &req("get", "secrets", "default", "s1")),
            no("")
        );
        // A node name without the nodes group is not a node.
        let fake = user("system:node:n1", &["system:authenticated"]);
        assert_eq!(
            decide(&fake, &req("get", "secrets", "default", "s1")),
            no("")
        );
        let nameless = user("system:node:", &["system:nodes"]);
        assert_eq!(
            decide(&nameless, &req("get", "secrets", "default", "s1")),
            no("unknown node for user \"system:node:\"")
        );
    }
}
