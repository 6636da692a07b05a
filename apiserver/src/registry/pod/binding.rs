//! `pods/binding`: assigns a pod to a node, once, as the scheduler does (also reached through
//! the legacy `POST .../namespaces/NS/bindings`).

use serde_json::{json, Value};

use crate::error::{Cause, Error, Result};
use crate::registry::subresource::{Kind, Subresource};
use crate::registry::{s, Objects, Resource};
use crate::request::WriteOpts;

/// The `binding` handler.
pub static BINDING: Binding = Binding;

/// The `binding` subresource.
pub struct Binding;

/// The `Status` a create of a subresource answers with.
pub fn created(details: Option<Value>) -> Value {
    let mut status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Success", "code": 201});
    if let Some(d) = details {
        status["details"] = d;
    }
    status
}

/// Checks a `Binding` as kube-apiserver does, returning the node it names.
fn target(name: &str, binding: &Value) -> Result<String> {
    let body_name = s(binding, "/metadata/name");
    if !body_name.is_empty() && body_name != name {
        return Err(Error::bad_request(
            "name in URL does not match name in Binding object",
        ));
    }
    let node = s(binding, "/target/name");
    let kind = s(binding, "/target/kind");
    let mut causes = Vec::new();
    if node.is_empty() {
        causes.push(Cause::required("target.name"));
    }
    if !kind.is_empty() && kind != "Node" {
        causes.push(Cause::not_supported(
            "target.kind",
            &kind,
            &["Node", "<empty>"],
        ));
    }
    if !causes.is_empty() {
        return Err(Error::invalid("Binding", "", name, causes));
    }
    Ok(node)
}

/// Sets `spec.nodeName`, the `PodScheduled` condition and the binding's annotations on `pod`,
/// refusing a pod that is being deleted, already bound, or not the one the binding names.
fn assign(pod: &mut Value, name: &str, node: &str, binding: &Value) -> Result<()> {
    let uid = s(binding, "/metadata/uid");
    let pod_uid = s(pod, "/metadata/uid");
    if !uid.is_empty() && uid != pod_uid {
        return Err(Error::conflict(
            "pods",
            name,
            &format!(
                "Precondition failed: UID in precondition: {uid}, UID in object meta: {pod_uid}"
            ),
        ));
    }
    if pod.pointer("/metadata/deletionTimestamp").is_some() {
        return Err(Error::conflict(
            "pods",
            name,
            "pod is being deleted, cannot be assigned to a host",
        ));
    }
    let existing = s(pod, "/spec/nodeName");
    if !existing.is_empty() {
        return Err(Error::conflict(
            "pods",
            name,
            &format!("pod {name} is already assigned to node \"{existing}\""),
        ));
    }
    pod["spec"]["nodeName"] = json!(node);
    let mut conds: Vec<Value> = pod["status"]["conditions"]
        .as_array()
        .map(|c| {
            c.iter()
                .filter(|c| c["type"] != "PodScheduled")
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    conds.push(
        json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null,
        "lastTransitionTime": crate::registry::now()}),
    );
    pod["status"]["conditions"] = json!(conds);
    if let Some(ann) = binding
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
    {
        for (k, v) in ann {
            pod["metadata"]["annotations"][k] = json!(v.as_str().unwrap_or_default());
        }
    }
    Ok(())
}

#[async_trait::async_trait]
impl Subresource for Binding {
    fn verbs(&self) -> &'static [&'static str] {
        &["create"]
    }

    fn kind(&self) -> Option<Kind> {
        Some(("", "v1", "Binding"))
    }

    fn strict_json(&self, body: &[u8]) -> Vec<crate::strict::Problem> {
        crate::strict::json_typed::<k8s_openapi::api::core::v1::Binding>(body)
            .unwrap_or_else(|| crate::strict::json_duplicates(body))
    }

    async fn create(
        &self,
        objs: &dyn Objects,
        r: &Resource,
        ns: Option<&str>,
        name: &str,
        body: Value,
        opts: &WriteOpts,
    ) -> Result<Value> {
        let node = target(name, &body)?;
        objs.guaranteed_update(r, ns, name, opts.dry_run, &|pod| {
            assign(pod, name, &node, &body)
        })
        .await?;
        Ok(created(Some(json!({"name": name, "kind": "pods"}))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_binding_names_a_node() {
        assert_eq!(
            target("p", &json!({"target": {"name": "n1"}})).unwrap(),
            "n1"
        );
        assert_eq!(target("p", &json!({"target": {}})).unwrap_err().code(), 422);
        let e = target("p", &json!({"target": {"name": "n", "kind": "Pod"}})).unwrap_err();
        assert_eq!(e.code(), 422);
        assert!(e.to_string().contains("target.kind"), "{e}");
        let e = target(
            "p",
            &json!({"metadata": {"name": "q"}, "target": {"name": "n"}}),
        );
        assert_eq!(e.unwrap_err().code(), 400);
    }

    #[test]
    fn a_pod_is_bound_once() {
        let mut pod = json!({"metadata": {"uid": "u1", "annotations": {"a": "1"}}, "spec": {},
            "status": {"conditions": [{"type": "PodScheduled", "status": "False"}]}});
        let binding = json!({"metadata": {"uid": "u1", "annotations": {"b": "2"}}});
        assign(&mut pod, "p", "n1", &binding).unwrap();
        assert_eq!(pod["spec"]["nodeName"], "n1");
        assert_eq!(pod["status"]["conditions"][0]["status"], "True");
        assert_eq!(pod["metadata"]["annotations"], json!({"a": "1", "b": "2"}));
        let again = assign(&mut pod, "p", "n2", &json!({})).unwrap_err();
        assert_eq!(again.code(), 409);
        assert!(again
            .to_string()
            .contains("already assigned to node \"n1\""));
        let mut other = json!({"metadata": {"uid": "u2"}, "spec": {}});
        let e = assign(&mut other, "p", "n1", &binding).unwrap_err();
        assert!(e.to_string().contains("UID in precondition: u1"), "{e}");
        let mut deleting = json!({"metadata": {"deletionTimestamp": "x"}, "spec": {}});
        assert_eq!(
            assign(&mut deleting, "p", "n", &json!({}))
                .unwrap_err()
                .code(),
            409
        );
    }
}
