//! `pods/ephemeralcontainers`: the one way to add a debugging container to a running pod
//! (`kubectl debug`). A write through it changes `spec.ephemeralContainers` alone, and only by
//! adding containers, as Kubernetes' `podEphemeralContainersStrategy` and
//! `ValidatePodEphemeralContainersUpdate` allow; the kubelet starts what is added.

use k8s_openapi::api::core::v1::{EphemeralContainer, Pod};
use serde_json::{json, Value};

use crate::error::Cause;
use crate::registry::subresource::Subresource;

/// The `ephemeralcontainers` handler.
pub static EPHEMERAL_CONTAINERS: EphemeralContainers = EphemeralContainers;

/// The `ephemeralcontainers` subresource.
pub struct EphemeralContainers;

/// The subresource's name (what the store and admission see).
const SUB: &str = "ephemeralcontainers";

/// The message for a field an ephemeral container may not have.
const NOT_FOR_EPHEMERAL: &str = "cannot be set for an Ephemeral Container";

/// The fields of an ephemeral container that Kubernetes refuses (everything that would make
/// the pod depend on it: ports, probes, lifecycle, resources, restart policy).
const FORBIDDEN_FIELDS: &[&str] = &[
    "ports",
    "livenessProbe",
    "readinessProbe",
    "startupProbe",
    "lifecycle",
    "resources",
    "resizePolicy",
    "restartPolicy",
];

/// Whether a JSON value is unset or empty (Go's zero value).
fn zero(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(Value::Object(o)) => o.values().all(|x| zero(Some(x))),
        Some(Value::Array(a)) => a.is_empty(),
        Some(Value::String(s)) => s.is_empty(),
        Some(_) => false,
    }
}

/// The rules every ephemeral container of a pod follows (kube's
/// `validateEphemeralContainers`), beyond those of any container.
pub fn validate(f: &str, pod: &Value, out: &mut Vec<Cause>) {
    let spec = pod.get("spec").cloned().unwrap_or(json!({}));
    let list = |k: &str| -> Vec<Value> {
        spec.get(k)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let regular: Vec<String> = list("initContainers")
        .iter()
        .chain(list("containers").iter())
        .filter_map(|c| c["name"].as_str().map(String::from))
        .collect();
    let mut all = regular.clone();
    for (n, ec) in list("ephemeralContainers").iter().enumerate() {
        let at = format!("{f}.ephemeralContainers[{n}]");
        let name = ec["name"].as_str().unwrap_or_default();
        if name.is_empty() {
            out.push(Cause::required(format!("{at}.name")));
        } else if all.iter().any(|x| x == name) {
            out.push(Cause::duplicate(format!("{at}.name"), &json!(name)));
        } else {
            crate::validation::label_name(&format!("{at}.name"), name, out);
            all.push(name.to_string());
        }
        if ec["image"].as_str().unwrap_or("").trim().is_empty() {
            out.push(Cause::required(format!("{at}.image")));
        }
        if let Some(t) = ec["targetContainerName"].as_str().filter(|t| !t.is_empty()) {
            if !regular.iter().any(|x| x == t) {
                out.push(Cause::not_found(
                    format!("{at}.targetContainerName"),
                    &json!(t),
                ));
            }
        }
        for field in FORBIDDEN_FIELDS {
            if !zero(ec.get(*field)) {
                out.push(Cause::forbidden(format!("{at}.{field}"), NOT_FOR_EPHEMERAL));
            }
        }
        for (i, m) in ec["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            for field in ["subPath", "subPathExpr"] {
                if !zero(m.get(field)) {
                    out.push(Cause::forbidden(
                        format!("{at}.volumeMounts[{i}].{field}"),
                        NOT_FOR_EPHEMERAL,
                    ));
                }
            }
        }
    }
}

/// The changes an update may make to the ephemeral containers: none removed, none changed.
fn validate_changes(new: &Value, old: &Value, out: &mut Vec<Cause>) {
    let (Ok(new), Ok(old)) = (
        serde_json::from_value::<Pod>(new.clone()),
        serde_json::from_value::<Pod>(old.clone()),
    ) else {
        return;
    };
    if old
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key("kubernetes.io/config.mirror"))
    {
        out.clear();
        out.push(Cause::forbidden(
            "",
            "static pods do not support ephemeral containers",
        ));
        return;
    }
    let list = |p: &Pod| -> Vec<EphemeralContainer> {
        p.spec
            .as_ref()
            .and_then(|s| s.ephemeral_containers.clone())
            .unwrap_or_default()
    };
    let new_list = list(&new);
    for o in list(&old) {
        match new_list.iter().find(|n| n.name == o.name) {
            None => out.push(Cause::forbidden(
                "spec.ephemeralContainers",
                format!(
                    "existing ephemeral containers \"{}\" may not be removed\n",
                    o.name
                ),
            )),
            // kube names the list, not the container, and follows the message with a diff.
            Some(n) if *n != o => out.push(Cause::forbidden(
                "spec.ephemeralContainers",
                format!(
                    "existing ephemeral containers \"{}\" may not be changed\n",
                    o.name
                ),
            )),
            Some(_) => {}
        }
    }
}

#[async_trait::async_trait]
impl Subresource for EphemeralContainers {
    fn verbs(&self) -> &'static [&'static str] {
        &["get", "patch", "update"]
    }

    fn prepare_update(&self, new: &Value, old: &Value) -> Option<Value> {
        // Everything but the ephemeral containers comes from the stored pod.
        let mut next = old.clone();
        for f in ["name", "namespace", "resourceVersion", "uid"] {
            if let Some(v) = new.pointer(&format!("/metadata/{f}")) {
                next["metadata"][f] = v.clone();
            }
        }
        match new.pointer("/spec/ephemeralContainers") {
            Some(v) if !v.is_null() => next["spec"]["ephemeralContainers"] = v.clone(),
            _ => {
                if let Some(s) = next.get_mut("spec").and_then(Value::as_object_mut) {
                    s.remove("ephemeralContainers");
                }
            }
        }
        Some(next)
    }

    fn validate_update(&self, new: &Value, old: &Value) -> Option<Vec<Cause>> {
        let mut out = Vec::new();
        match serde_json::from_value::<Pod>(new.clone()) {
            Ok(pod) => out.extend((super::STRATEGY.validate)(&pod)),
            Err(e) => out.push(Cause::invalid("spec", &Value::Null, e.to_string())),
        }
        validate_changes(new, old, &mut out);
        Some(out)
    }

    fn object_view(&self) -> Option<&'static str> {
        Some(SUB)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(ephemeral: Value) -> Value {
        json!({"metadata": {"name": "p", "namespace": "d"},
            "spec": {"containers": [{"name": "app", "image": "busybox"}],
                "ephemeralContainers": ephemeral}})
    }

    fn texts(new: &Value, old: &Value) -> Vec<String> {
        EPHEMERAL_CONTAINERS
            .validate_update(new, old)
            .unwrap()
            .iter()
            .map(Cause::text)
            .collect()
    }

    #[test]
    fn only_additions_are_allowed() {
        let old = pod(json!([{"name": "dbg", "image": "busybox"}]));
        let added = pod(json!([{"name": "dbg", "image": "busybox"},
            {"name": "dbg2", "image": "busybox", "targetContainerName": "app"}]));
        assert!(texts(&added, &old).is_empty());
        assert_eq!(
            texts(&pod(json!([])), &old),
            vec!["spec.ephemeralContainers: Forbidden: existing ephemeral containers \"dbg\" may not be removed\n"]
        );
        let changed = pod(json!([{"name": "dbg", "image": "alpine"}]));
        assert_eq!(
            texts(&changed, &old),
            vec!["spec.ephemeralContainers: Forbidden: existing ephemeral containers \"dbg\" may not be changed\n"]
        );
    }

    #[test]
    fn ephemeral_containers_are_checked_as_kube_checks_them() {
        let old = pod(json!([]));
        let bad = pod(json!([{"name": "app", "image": "busybox"},
            {"name": "x", "image": "busybox", "targetContainerName": "nope",
             "ports": [{"containerPort": 80}], "resources": {"limits": {"cpu": "1"}},
             "volumeMounts": [{"name": "v", "mountPath": "/v", "subPath": "a"}]}]));
        let t = texts(&bad, &old);
        assert!(
            t.contains(&"spec.ephemeralContainers[0].name: Duplicate value: \"app\"".to_string()),
            "{t:?}"
        );
        assert!(
            t.contains(
                &"spec.ephemeralContainers[1].targetContainerName: Not found: \"nope\"".to_string()
            ),
            "{t:?}"
        );
        assert!(t.contains(&"spec.ephemeralContainers[1].ports: Forbidden: cannot be set for an Ephemeral Container".to_string()), "{t:?}");
        assert!(t.contains(&"spec.ephemeralContainers[1].resources: Forbidden: cannot be set for an Ephemeral Container".to_string()), "{t:?}");
        assert!(t.contains(&"spec.ephemeralContainers[1].volumeMounts[0].subPath: Forbidden: cannot be set for an Ephemeral Container".to_string()), "{t:?}");
    }

    #[test]
    fn only_the_ephemeral_containers_change() {
        let old = pod(json!([]));
        let mut new = pod(json!([{"name": "dbg", "image": "busybox"}]));
        new["spec"]["containers"][0]["image"] = json!("evil");
        new["metadata"]["labels"] = json!({"a": "b"});
        let next = EPHEMERAL_CONTAINERS.prepare_update(&new, &old).unwrap();
        assert_eq!(next["spec"]["containers"][0]["image"], "busybox");
        assert!(next["metadata"].get("labels").is_none());
        assert_eq!(next["spec"]["ephemeralContainers"][0]["name"], "dbg");
    }
}
