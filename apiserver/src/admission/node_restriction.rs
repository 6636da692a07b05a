//! NodeRestriction, as kube-apiserver's: the writes the Node authorizer lets every node make
//! are limited here to the node's own objects. A node may create and update only its own Node
//! (without steering labels or taints), create only mirror pods bound to itself, update the
//! status of, delete and evict only its pods, touch only its own Lease, and ask for tokens only
//! bound to its pods. Other users pass untouched.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::{forbidden, Attributes, Operation, Plugin};
use crate::error::{Error, Result};
use crate::node_auth::node_identity;
use crate::registry::Objects;

/// The plugin.
pub struct NodeRestriction;

const MIRROR_POD: &str = "kubernetes.io/config.mirror";

/// Labels outside `kubernetes.io`/`k8s.io` a kubelet may nonetheless set on its Node.
const KUBELET_LABELS: &[&str] = &[
    "kubernetes.io/hostname",
    "topology.kubernetes.io/zone",
    "topology.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/zone",
    "failure-domain.beta.kubernetes.io/region",
    "node.kubernetes.io/instance-type",
    "beta.kubernetes.io/instance-type",
    "kubernetes.io/os",
    "kubernetes.io/arch",
    "beta.kubernetes.io/os",
    "beta.kubernetes.io/arch",
];

/// Label namespaces kubelets may set freely.
const KUBELET_LABEL_NAMESPACES: &[&str] = &["kubelet.kubernetes.io", "node.kubernetes.io"];

fn label_namespace(key: &str) -> &str {
    key.split_once('/').map(|(ns, _)| ns).unwrap_or("")
}

fn in_domain(ns: &str, domain: &str) -> bool {
    ns == domain || ns.strip_suffix(domain).is_some_and(|p| p.ends_with('.'))
}

fn is_kubelet_label(key: &str) -> bool {
    KUBELET_LABELS.contains(&key)
        || KUBELET_LABEL_NAMESPACES
            .iter()
            .any(|d| in_domain(label_namespace(key), d))
}

/// The labels a node may not add, remove or change on its own Node: any under
/// `node-restriction.kubernetes.io/`, and any other `kubernetes.io` or `k8s.io` label but the
/// kubelet's own.
pub fn forbidden_labels(
    new: &BTreeMap<String, String>,
    old: &BTreeMap<String, String>,
) -> Vec<String> {
    let modified: BTreeSet<&String> = new
        .iter()
        .filter(|(k, v)| old.get(*k) != Some(*v))
        .chain(old.iter().filter(|(k, v)| new.get(*k) != Some(*v)))
        .map(|(k, _)| k)
        .collect();
    modified
        .into_iter()
        .filter(|k| {
            let ns = label_namespace(k);
            in_domain(ns, "node-restriction.kubernetes.io")
                || (in_domain(ns, "kubernetes.io") || in_domain(ns, "k8s.io"))
                    && !is_kubelet_label(k)
        })
        .cloned()
        .collect()
}

fn labels(obj: Option<&Value>) -> BTreeMap<String, String> {
    obj.and_then(|o| o.pointer("/metadata/labels"))
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                .collect()
        })
        .unwrap_or_default()
}

fn str_at<'v>(obj: &'v Value, ptr: &str) -> &'v str {
    obj.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

fn empty(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(Value::Array(a)) => a.is_empty(),
        Some(Value::Object(o)) => o.is_empty(),
        _ => false,
    }
}

impl NodeRestriction {
    async fn pod(
        &self,
        node: &str,
        a: &Attributes<'_>,
        obj: Option<&Value>,
        objs: &dyn Objects,
    ) -> Result<()> {
        let deny = |why: String| Err(forbidden(a, obj, &why));
        match a.operation {
            Operation::Create => {
                let Some(pod) = obj else {
                    return deny("unexpected type".into());
                };
                if pod
                    .pointer("/metadata/annotations")
                    .and_then(Value::as_object)
                    .is_none_or(|m| !m.contains_key(MIRROR_POD))
                {
                    return deny(format!("pod does not have \"{MIRROR_POD}\" annotation, node \"{node}\" can only create mirror pods"));
                }
                if str_at(pod, "/spec/nodeName") != node {
                    return deny(format!(
                        "node \"{node}\" can only create pods with spec.nodeName set to itself"
                    ));
                }
                let owners = pod
                    .pointer("/metadata/ownerReferences")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                match owners.as_slice() {
                    [] => {
                        return deny(format!(
                            "node \"{node}\" can only create pods with an owner reference set to itself"
                        ))
                    }
                    [owner] => {
                        if str_at(owner, "/apiVersion") != "v1"
                            || str_at(owner, "/kind") != "Node"
                            || str_at(owner, "/name") != node
                        {
                            return deny(format!("node \"{node}\" can only create pods with an owner reference set to itself"));
                        }
                        if owner.get("controller").and_then(Value::as_bool) != Some(true) {
                            return deny(format!("node \"{node}\" can only create pods with a controller owner reference set to itself"));
                        }
                        if owner.get("blockOwnerDeletion").and_then(Value::as_bool) == Some(true) {
                            return deny(format!(
                                "node \"{node}\" must not set blockOwnerDeletion on an owner reference"
                            ));
                        }
                        let nodes = objs
                            .resource("", "v1", "nodes")
                            .ok_or_else(|| Error::internal("nodes are not served"))?;
                        let n = objs.get(&nodes, None, node).await?;
                        let uid = str_at(&n, "/metadata/uid");
                        if str_at(owner, "/uid") != uid {
                            return deny(format!(
                                "node {node} UID mismatch: expected {} got {uid}",
                                str_at(owner, "/uid")
                            ));
                        }
                    }
                    _ => {
                        return deny(format!("node \"{node}\" can only create pods with a single owner reference set to itself"))
                    }
                }
                if !str_at(pod, "/spec/serviceAccountName").is_empty() {
                    return deny(format!(
                        "node \"{node}\" can not create pods that reference a service account"
                    ));
                }
                let refs = serde_json::to_vec(pod).unwrap_or_default();
                if crate::node_auth::references_any(&refs, crate::node_auth::Kind::Secret) {
                    return deny(format!(
                        "node \"{node}\" can not create pods that reference secrets"
                    ));
                }
                if crate::node_auth::references_any(&refs, crate::node_auth::Kind::ConfigMap) {
                    return deny(format!(
                        "node \"{node}\" can not create pods that reference configmaps"
                    ));
                }
                if crate::node_auth::references_any(&refs, crate::node_auth::Kind::Claim) {
                    return deny(format!(
                        "node \"{node}\" can not create pods that reference persistentvolumeclaims"
                    ));
                }
                Ok(())
            }
            Operation::Delete => {
                let Some(old) = a.old else {
                    return deny("unexpected type".into());
                };
                if str_at(old, "/spec/nodeName") != node {
                    return deny(format!(
                        "node \"{node}\" can only delete pods with spec.nodeName set to itself"
                    ));
                }
                Ok(())
            }
            op => deny(format!(
                "unexpected operation \"{}\", node \"{node}\" can only create and delete mirror pods",
                op.as_str()
            )),
        }
    }

    fn pod_status(&self, node: &str, a: &Attributes<'_>, obj: Option<&Value>) -> Result<()> {
        let deny = |why: String| Err(forbidden(a, obj, &why));
        if a.operation != Operation::Update {
            return deny(format!("unexpected operation \"{}\"", a.operation.as_str()));
        }
        let Some(old) = a.old else {
            return deny("unexpected type".into());
        };
        if str_at(old, "/spec/nodeName") != node {
            return deny(format!(
                "node \"{node}\" can only update pod status for pods with spec.nodeName set to itself"
            ));
        }
        if labels(Some(old)) != labels(obj) {
            return deny(format!(
                "node \"{node}\" cannot update labels through pod status"
            ));
        }
        if old.pointer("/status/resourceClaimStatuses")
            != obj.and_then(|o| o.pointer("/status/resourceClaimStatuses"))
        {
            return deny(format!(
                "node \"{node}\" cannot update resource claim statues"
            ));
        }
        Ok(())
    }

    async fn eviction(
        &self,
        node: &str,
        a: &Attributes<'_>,
        obj: Option<&Value>,
        objs: &dyn Objects,
    ) -> Result<()> {
        let deny = |why: String| Err(forbidden(a, obj, &why));
        if a.operation != Operation::Create {
            return deny(format!("unexpected operation {}", a.operation.as_str()));
        }
        let pod_name = match a.name {
            "" => obj.map(|o| str_at(o, "/metadata/name")).unwrap_or(""),
            n => n,
        };
        if pod_name.is_empty() {
            return deny("could not determine pod from request data".into());
        }
        let pods = objs
            .resource("", "v1", "pods")
            .ok_or_else(|| Error::internal("pods are not served"))?;
        let pod = objs.get(&pods, Some(a.namespace), pod_name).await?;
        if str_at(&pod, "/spec/nodeName") != node {
            return deny(format!(
                "node {node} can only evict pods with spec.nodeName set to itself"
            ));
        }
        Ok(())
    }

    fn node(&self, node: &str, a: &Attributes<'_>, obj: Option<&Value>) -> Result<()> {
        let deny = |why: String| Err(forbidden(a, obj, &why));
        let requested = match a.name {
            "" => obj.map(|o| str_at(o, "/metadata/name")).unwrap_or(""),
            n => n,
        };
        if requested != node {
            return deny(format!(
                "node \"{node}\" is not allowed to modify node \"{requested}\""
            ));
        }
        match a.operation {
            Operation::Create => {
                if !empty(obj.and_then(|o| o.pointer("/spec/configSource"))) {
                    return deny(format!(
                        "node \"{node}\" is not allowed to create pods with a non-nil configSource"
                    ));
                }
                let bad = forbidden_labels(&labels(obj), &BTreeMap::new());
                if !bad.is_empty() {
                    return deny(format!(
                        "node \"{node}\" is not allowed to set the following labels: {}",
                        bad.join(", ")
                    ));
                }
            }
            Operation::Update => {
                let source = obj.and_then(|o| o.pointer("/spec/configSource"));
                if !empty(source) && source != a.old.and_then(|o| o.pointer("/spec/configSource")) {
                    return deny(format!("node \"{node}\" is not allowed to update configSource to a new non-nil configSource"));
                }
                let taints = |o: Option<&Value>| {
                    o.and_then(|o| o.pointer("/spec/taints"))
                        .filter(|t| !empty(Some(t)))
                        .cloned()
                };
                if taints(obj) != taints(a.old) {
                    return deny(format!("node \"{node}\" is not allowed to modify taints"));
                }
                let bad = forbidden_labels(&labels(obj), &labels(a.old));
                if !bad.is_empty() {
                    // Kubernetes' own wording, without the node's name.
                    return deny(format!(
                        "is not allowed to modify labels: {}",
                        bad.join(", ")
                    ));
                }
            }
            _ => {}
        }
        Ok(())
    }

    async fn token(
        &self,
        node: &str,
        a: &Attributes<'_>,
        obj: Option<&Value>,
        objs: &dyn Objects,
    ) -> Result<()> {
        if a.operation != Operation::Create || a.subresource != "token" {
            return Ok(());
        }
        let deny = |why: String| Err(forbidden(a, obj, &why));
        let Some(tr) = obj else {
            return deny("unexpected type".into());
        };
        let Some(r) = tr.pointer("/spec/boundObjectRef").filter(|r| !r.is_null()) else {
            return deny("node requested token not bound to a pod".into());
        };
        let pod_name = str_at(r, "/name");
        if str_at(r, "/apiVersion") != "v1" || str_at(r, "/kind") != "Pod" || pod_name.is_empty() {
            return deny("node requested token not bound to a pod".into());
        }
        let uid = str_at(r, "/uid");
        if uid.is_empty() {
            return deny("node requested token with a pod binding without a uid".into());
        }
        let pods = objs
            .resource("", "v1", "pods")
            .ok_or_else(|| Error::internal("pods are not served"))?;
        let pod = objs.get(&pods, Some(a.namespace), pod_name).await?;
        if str_at(&pod, "/metadata/uid") != uid {
            return deny(format!("the UID in the bound object reference ({uid}) does not match the UID in record. The object might have been deleted and then recreated"));
        }
        if str_at(&pod, "/spec/nodeName") != node {
            return deny(
                "node requested token bound to a pod scheduled on a different node".into(),
            );
        }
        Ok(())
    }

    fn lease(&self, node: &str, a: &Attributes<'_>, obj: Option<&Value>) -> Result<()> {
        let deny = |why: &str| Err(forbidden(a, obj, why));
        if a.namespace != "kube-node-lease" {
            return deny("can only access leases in the \"kube-node-lease\" system namespace");
        }
        let name = match a.operation {
            Operation::Create => obj.map(|o| str_at(o, "/metadata/name")).unwrap_or(""),
            _ => a.name,
        };
        if name != node {
            return deny("can only access node lease with the same name as the requesting node");
        }
        Ok(())
    }

    /// A node writes only the CSINode named after it.
    fn csinode(&self, node: &str, a: &Attributes<'_>, obj: Option<&Value>) -> Result<()> {
        let name = match a.operation {
            Operation::Create => obj.map(|o| str_at(o, "/metadata/name")).unwrap_or(""),
            _ => a.name,
        };
        if name != node {
            return Err(forbidden(
                a,
                obj,
                "can only access CSINode with the same name as the requesting node",
            ));
        }
        Ok(())
    }

    fn claim(&self, node: &str, a: &Attributes<'_>, obj: Option<&Value>) -> Result<()> {
        let deny = |why: String| Err(forbidden(a, obj, &why));
        if a.subresource != "status" {
            return deny("may only update PVC status".into());
        }
        if a.operation != Operation::Update {
            return deny(format!("unexpected operation \"{}\"", a.operation.as_str()));
        }
        // Everything but the capacity, conditions and allocations must stay as it was.
        let strip = |o: Option<&Value>| {
            let mut o = o.cloned().unwrap_or(Value::Null);
            for p in ["resourceVersion", "managedFields"] {
                if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
                    m.remove(p);
                }
            }
            if let Some(s) = o.get_mut("status").and_then(Value::as_object_mut) {
                for p in [
                    "capacity",
                    "conditions",
                    "allocatedResourceStatuses",
                    "allocatedResources",
                ] {
                    s.remove(p);
                }
            }
            o
        };
        if strip(obj) != strip(a.old) {
            return deny(format!("node \"{node}\" is not allowed to update fields other than status.capacity and status.conditions"));
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Plugin for NodeRestriction {
    fn name(&self) -> &'static str {
        "NodeRestriction"
    }

    async fn admit(
        &self,
        a: &Attributes<'_>,
        obj: Option<&mut Value>,
        objs: &dyn Objects,
    ) -> Result<()> {
        if a.operation == Operation::Connect {
            return Ok(());
        }
        let Some(node) = node_identity(a.user) else {
            return Ok(());
        };
        let obj = obj.map(|o| &*o);
        if node.is_empty() {
            return Err(forbidden(
                a,
                obj,
                &format!("could not determine node from user \"{}\"", a.user.name),
            ));
        }
        match (a.resource.group.as_str(), a.resource.plural.as_str()) {
            ("", "pods") => match a.subresource {
                "" => self.pod(node, a, obj, objs).await,
                "status" => self.pod_status(node, a, obj),
                "eviction" => self.eviction(node, a, obj, objs).await,
                sub => Err(forbidden(
                    a,
                    obj,
                    &format!(
                        "unexpected pod subresource \"{sub}\", only 'status' and 'eviction' are allowed"
                    ),
                )),
            },
            ("", "nodes") => self.node(node, a, obj),
            ("", "persistentvolumeclaims") => self.claim(node, a, obj),
            ("", "serviceaccounts") => self.token(node, a, obj, objs).await,
            ("coordination.k8s.io", "leases") => self.lease(node, a, obj),
            ("storage.k8s.io", "csinodes") => self.csinode(node, a, obj),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::testing::Fixed;
    use crate::auth::authn::user;
    use crate::auth::UserInfo;
    use crate::registry::builtin;
    use serde_json::json;

    fn n1() -> UserInfo {
        user("system:node:n1", &["system:nodes", "system:authenticated"])
    }

    fn objs() -> Fixed {
        Fixed::default()
            .with("nodes", "", json!({"metadata": {"name": "n1", "uid": "u-n1"}}))
            .with(
                "pods",
                "default",
                json!({"metadata": {"name": "web", "namespace": "default", "uid": "u-web"}, "spec": {"nodeName": "n1"}}),
            )
            .with(
                "pods",
                "default",
                json!({"metadata": {"name": "db", "namespace": "default", "uid": "u-db"}, "spec": {"nodeName": "n2"}}),
            )
    }

    #[allow(clippy::too_many_arguments)]
    async fn run(
        u: &UserInfo,
        op: Operation,
        group: &str,
        plural: &str,
        sub: &str,
        ns: &str,
        name: &str,
        old: Option<&Value>,
        obj: Option<Value>,
    ) -> Result<()> {
        let r = builtin(group, plural).unwrap_or_else(|| {
            std::sync::Arc::new(crate::registry::ResourceInfo::new(
                group,
                "v1",
                "X",
                plural,
                plural,
                !ns.is_empty(),
                crate::registry::Shared::Static(&NO_STRATEGY),
            ))
        });
        let a = Attributes {
            operation: op,
            resource: &r,
            subresource: sub,
            namespace: ns,
            name,
            old,
            user: u,
            dry_run: false,
            options: crate::admission::Options::None,
            reinvocation: None,
        };
        let mut obj = obj;
        NodeRestriction.admit(&a, obj.as_mut(), &objs()).await
    }

    static NO_STRATEGY: crate::registry::Typed<k8s_openapi::api::core::v1::ConfigMap> =
        crate::registry::Typed::new(Vec::new, |_| Vec::new());

    fn msg(r: Result<()>) -> String {
        r.unwrap_err().to_string()
    }

    #[tokio::test]
    async fn a_node_changes_only_its_own_node() {
        let u = n1();
        let node =
            |name: &str, labels: Value| json!({"metadata": {"name": name, "labels": labels}});
        let old = node("n1", json!({"kubernetes.io/hostname": "n1"}));
        assert!(run(
            &u,
            Operation::Update,
            "",
            "nodes",
            "",
            "",
            "n1",
            Some(&old),
            Some(node(
                "n1",
                json!({"kubernetes.io/hostname": "n1", "team": "a", "node.kubernetes.io/x": "y"})
            ))
        )
        .await
        .is_ok());
        assert_eq!(
            msg(run(
                &u,
                Operation::Update,
                "",
                "nodes",
                "",
                "",
                "n2",
                Some(&old),
                Some(node("n2", json!({})))
            )
            .await),
            "nodes \"n2\" is forbidden: node \"n1\" is not allowed to modify node \"n2\""
        );
        assert_eq!(
            msg(run(&u, Operation::Update, "", "nodes", "status", "", "n1", Some(&old), Some(node("n1", json!({"kubernetes.io/hostname": "n1", "node-restriction.kubernetes.io/x": "y"})))).await),
            "nodes \"n1\" is forbidden: is not allowed to modify labels: node-restriction.kubernetes.io/x"
        );
        assert_eq!(
            msg(run(&u, Operation::Create, "", "nodes", "", "", "n1", None, Some(node("n1", json!({"example.k8s.io/a": "1", "kubernetes.io/os": "linux"})))).await),
            "nodes \"n1\" is forbidden: node \"n1\" is not allowed to set the following labels: example.k8s.io/a"
        );
        let tainted = json!({"metadata": {"name": "n1"}, "spec": {"taints": [{"key": "k", "effect": "NoSchedule"}]}});
        assert_eq!(
            msg(run(
                &u,
                Operation::Update,
                "",
                "nodes",
                "",
                "",
                "n1",
                Some(&tainted),
                Some(json!({"metadata": {"name": "n1"}, "spec": {}}))
            )
            .await),
            "nodes \"n1\" is forbidden: node \"n1\" is not allowed to modify taints"
        );
        // Other users are not restricted.
        let admin = user("admin", &["system:masters"]);
        assert!(run(
            &admin,
            Operation::Update,
            "",
            "nodes",
            "",
            "",
            "n2",
            Some(&old),
            Some(node("n2", json!({"node-restriction.kubernetes.io/x": "y"})))
        )
        .await
        .is_ok());
    }

    #[tokio::test]
    async fn a_node_writes_only_its_pods() {
        let u = n1();
        let web =
            json!({"metadata": {"name": "web", "labels": {"a": "1"}}, "spec": {"nodeName": "n1"}});
        let db = json!({"metadata": {"name": "db"}, "spec": {"nodeName": "n2"}});
        let mut web_status = web.clone();
        web_status["status"] = json!({"phase": "Running"});
        assert!(run(
            &u,
            Operation::Update,
            "",
            "pods",
            "status",
            "default",
            "web",
            Some(&web),
            Some(web_status)
        )
        .await
        .is_ok());
        assert_eq!(
            msg(run(&u, Operation::Update, "", "pods", "status", "default", "db", Some(&db), Some(db.clone())).await),
            "pods \"db\" is forbidden: node \"n1\" can only update pod status for pods with spec.nodeName set to itself"
        );
        let mut relabelled = web.clone();
        relabelled["metadata"]["labels"] = json!({"a": "2"});
        assert_eq!(
            msg(run(
                &u,
                Operation::Update,
                "",
                "pods",
                "status",
                "default",
                "web",
                Some(&web),
                Some(relabelled)
            )
            .await),
            "pods \"web\" is forbidden: node \"n1\" cannot update labels through pod status"
        );
        assert!(run(
            &u,
            Operation::Delete,
            "",
            "pods",
            "",
            "default",
            "web",
            Some(&web),
            None
        )
        .await
        .is_ok());
        assert_eq!(
            msg(run(&u, Operation::Delete, "", "pods", "", "default", "db", Some(&db), None).await),
            "pods \"db\" is forbidden: node \"n1\" can only delete pods with spec.nodeName set to itself"
        );
        let eviction = json!({"metadata": {"name": "db"}});
        assert_eq!(
            msg(run(&u, Operation::Create, "", "pods", "eviction", "default", "db", None, Some(eviction)).await),
            "pods \"db\" is forbidden: node n1 can only evict pods with spec.nodeName set to itself"
        );
        assert!(run(
            &u,
            Operation::Create,
            "",
            "pods",
            "eviction",
            "default",
            "web",
            None,
            Some(json!({"metadata": {"name": "web"}}))
        )
        .await
        .is_ok());
        assert_eq!(
            msg(run(&u, Operation::Create, "", "pods", "binding", "default", "web", None, Some(json!({}))).await),
            "pods \"web\" is forbidden: unexpected pod subresource \"binding\", only 'status' and 'eviction' are allowed"
        );
    }

    #[tokio::test]
    async fn mirror_pods_only() {
        let u = n1();
        let mirror = |extra: Value| {
            let mut p = json!({
                "metadata": {
                    "name": "static-n1",
                    "annotations": {"kubernetes.io/config.mirror": "x"},
                    "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": "n1", "uid": "u-n1", "controller": true}],
                },
                "spec": {"nodeName": "n1", "containers": [{"name": "c"}]},
            });
            if let (Some(p), Some(e)) = (p["spec"].as_object_mut(), extra.as_object()) {
                p.extend(e.clone());
            }
            p
        };
        assert!(run(
            &u,
            Operation::Create,
            "",
            "pods",
            "",
            "default",
            "static-n1",
            None,
            Some(mirror(json!({})))
        )
        .await
        .is_ok());
        let mut plain = mirror(json!({}));
        plain["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("annotations");
        assert_eq!(
            msg(run(&u, Operation::Create, "", "pods", "", "default", "static-n1", None, Some(plain)).await),
            "pods \"static-n1\" is forbidden: pod does not have \"kubernetes.io/config.mirror\" annotation, node \"n1\" can only create mirror pods"
        );
        assert_eq!(
            msg(run(&u, Operation::Create, "", "pods", "", "default", "static-n1", None, Some(mirror(json!({"nodeName": "n2"})))).await),
            "pods \"static-n1\" is forbidden: node \"n1\" can only create pods with spec.nodeName set to itself"
        );
        assert_eq!(
            msg(run(&u, Operation::Create, "", "pods", "", "default", "static-n1", None, Some(mirror(json!({"volumes": [{"name": "s", "secret": {"secretName": "x"}}]})))).await),
            "pods \"static-n1\" is forbidden: node \"n1\" can not create pods that reference secrets"
        );
        assert_eq!(
            msg(run(&u, Operation::Create, "", "pods", "", "default", "static-n1", None, Some(mirror(json!({"serviceAccountName": "x"})))).await),
            "pods \"static-n1\" is forbidden: node \"n1\" can not create pods that reference a service account"
        );
    }

    #[tokio::test]
    async fn a_node_writes_only_its_own_csinode() {
        let user = n1();
        let u = &user;
        let csinode = |name: &str| json!({"metadata": {"name": name}, "spec": {"drivers": []}});
        let write = |op, name: &'static str| {
            let body = csinode(name);
            async move {
                let old = csinode(name);
                run(
                    u,
                    op,
                    "storage.k8s.io",
                    "csinodes",
                    "",
                    "",
                    name,
                    Some(&old),
                    Some(body),
                )
                .await
            }
        };
        assert!(write(Operation::Create, "n1").await.is_ok());
        assert!(write(Operation::Update, "n1").await.is_ok());
        assert_eq!(
            msg(write(Operation::Create, "n2").await),
            "csinodes.storage.k8s.io \"n2\" is forbidden: can only access CSINode with the same name as the requesting node"
        );
        assert_eq!(
            msg(write(Operation::Update, "n2").await),
            "csinodes.storage.k8s.io \"n2\" is forbidden: can only access CSINode with the same name as the requesting node"
        );
    }

    #[tokio::test]
    async fn leases_and_tokens() {
        let u = n1();
        let lease = |name: &str| json!({"metadata": {"name": name}});
        assert!(run(
            &u,
            Operation::Create,
            "coordination.k8s.io",
            "leases",
            "",
            "kube-node-lease",
            "n1",
            None,
            Some(lease("n1"))
        )
        .await
        .is_ok());
        assert_eq!(
            msg(run(&u, Operation::Create, "coordination.k8s.io", "leases", "", "kube-node-lease", "n2", None, Some(lease("n2"))).await),
            "leases.coordination.k8s.io \"n2\" is forbidden: can only access node lease with the same name as the requesting node"
        );
        assert_eq!(
            msg(run(&u, Operation::Update, "coordination.k8s.io", "leases", "", "default", "n1", Some(&lease("n1")), Some(lease("n1"))).await),
            "leases.coordination.k8s.io \"n1\" is forbidden: can only access leases in the \"kube-node-lease\" system namespace"
        );
        let tr = |name: &str, uid: &str| json!({"spec": {"audiences": [], "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": name, "uid": uid}}});
        let token = |body| {
            run(
                &u,
                Operation::Create,
                "",
                "serviceaccounts",
                "token",
                "default",
                "default",
                None,
                Some(body),
            )
        };
        assert!(token(tr("web", "u-web")).await.is_ok());
        assert_eq!(
            msg(token(tr("db", "u-db")).await),
            "serviceaccounts \"default\" is forbidden: node requested token bound to a pod scheduled on a different node"
        );
        assert_eq!(
            msg(token(tr("web", "other")).await),
            "serviceaccounts \"default\" is forbidden: the UID in the bound object reference (other) does not match the UID in record. The object might have been deleted and then recreated"
        );
        assert_eq!(
            msg(token(json!({"spec": {}})).await),
            "serviceaccounts \"default\" is forbidden: node requested token not bound to a pod"
        );
        assert_eq!(msg(token(tr("gone", "x")).await), "pods \"gone\" not found");
    }
}
