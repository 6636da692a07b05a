//! RuntimeClass: a new pod that names a RuntimeClass gets the class's pod overhead as its
//! `spec.overhead` (counted by the scheduler and by quota), and the class's node selector and
//! tolerations merged into its own, so it lands only where the class's runtime is. A pod
//! naming a class that does not exist is refused, and so is a pod whose overhead is not the
//! class's (the overhead is the plugin's to set, never the pod author's).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Toleration;
use serde_json::{json, Value};
use skiff_rules::Quantity;

use super::{forbidden, Attributes, Operation, Plugin};
use crate::error::{Error, Result};
use crate::registry::Objects;

/// The plugin.
pub struct RuntimeClass;

/// Whether the request is one the plugin looks at: a pod's create, no subresource.
fn handles(a: &Attributes<'_>) -> bool {
    a.resource.group.is_empty()
        && a.resource.plural == "pods"
        && a.subresource.is_empty()
        && a.operation == Operation::Create
}

/// The RuntimeClass `pod` names (`None` when it names none), from the watch cache or, should
/// the cache lag behind a class just made, from etcd.
async fn class_of(a: &Attributes<'_>, pod: &Value, objs: &dyn Objects) -> Result<Option<Value>> {
    let Some(name) = pod
        .pointer("/spec/runtimeClassName")
        .and_then(Value::as_str)
    else {
        return Ok(None);
    };
    let r = objs
        .resource("node.k8s.io", "v1", "runtimeclasses")
        .ok_or_else(|| Error::internal("runtimeclasses are not served"))?;
    if let Some(c) = objs.cached(&r, None, name) {
        return Ok(Some(c.value()));
    }
    match objs.get(&r, None, name).await {
        Ok(c) => Ok(Some(c)),
        Err(e) if e.code() == 404 => Err(forbidden(
            a,
            Some(pod),
            &format!("pod rejected: RuntimeClass {name:?} not found"),
        )),
        Err(e) => Err(e),
    }
}

/// A resource list as quantities (what does not parse is left out: validation refuses it).
fn quantities(v: Option<&Value>) -> BTreeMap<String, Quantity> {
    v.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, q)| Some((k.clone(), q.as_str()?.parse().ok()?)))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether two resource lists are the same amounts (as Kubernetes compares them: `1` and
/// `1000m` are equal, and so are no list and an empty one).
fn same_overhead(a: Option<&Value>, b: Option<&Value>) -> bool {
    let (qa, qb) = (quantities(a), quantities(b));
    let len = |v: Option<&Value>| v.and_then(Value::as_object).map_or(0, |m| m.len());
    qa == qb && qa.len() == len(a) && qb.len() == len(b)
}

const MISMATCH: &str = "pod rejected: Pod's Overhead doesn't match RuntimeClass's defined Overhead";

/// The class's pod overhead: `None` when the class states no overhead, `Some(None)` when it
/// states one without amounts (the pod then gets none).
fn class_overhead(class: Option<&Value>) -> Option<Option<&Value>> {
    class
        .and_then(|c| c.get("overhead"))
        .filter(|o| !o.is_null())
        .map(|o| o.get("podFixed").filter(|f| !f.is_null()))
}

/// Sets the class's overhead on the pod, refusing a pod that states another.
fn set_overhead(a: &Attributes<'_>, pod: &mut Value, class: &Value) -> Result<()> {
    let Some(fixed) = class_overhead(Some(class)) else {
        return Ok(());
    };
    if let Some(given) = pod.pointer("/spec/overhead") {
        if !same_overhead(fixed, Some(given)) {
            return Err(forbidden(a, Some(pod), MISMATCH));
        }
    }
    if let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) {
        match fixed {
            Some(f) => spec.insert("overhead".into(), f.clone()),
            None => spec.remove("overhead"),
        };
    }
    Ok(())
}

/// Merges the class's node selector (refusing a pod that wants another value of one of its
/// labels) and tolerations into the pod's.
fn set_scheduling(a: &Attributes<'_>, pod: &mut Value, class: &Value) -> Result<()> {
    let Some(scheduling) = class.get("scheduling") else {
        return Ok(());
    };
    let wanted: BTreeMap<String, String> = scheduling
        .get("nodeSelector")
        .and_then(|s| serde_json::from_value(s.clone()).ok())
        .unwrap_or_default();
    let mut selector: BTreeMap<String, String> = pod
        .pointer("/spec/nodeSelector")
        .and_then(|s| serde_json::from_value(s.clone()).ok())
        .unwrap_or_default();
    for (key, value) in &wanted {
        if let Some(own) = selector.get(key).filter(|own| *own != value) {
            return Err(forbidden(
                a,
                Some(pod),
                &format!("conflict: runtimeClass.scheduling.nodeSelector[{key}] = {value}; pod.spec.nodeSelector[{key}] = {own}"),
            ));
        }
        selector.insert(key.clone(), value.clone());
    }
    let tolerations = |v: Option<&Value>| -> Vec<Toleration> {
        v.and_then(|t| serde_json::from_value(t.clone()).ok())
            .unwrap_or_default()
    };
    let merged = merge_tolerations(
        tolerations(pod.pointer("/spec/tolerations")),
        tolerations(scheduling.get("tolerations")),
    );
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return Ok(());
    };
    if !selector.is_empty() {
        spec.insert("nodeSelector".into(), json!(selector));
    }
    if !merged.is_empty() {
        spec.insert("tolerations".into(), json!(merged));
    }
    Ok(())
}

/// The tolerations of both lists, leaving out any that another one kept covers (Kubernetes'
/// `MergeTolerations`): of two equal ones the first stays.
fn merge_tolerations(first: Vec<Toleration>, second: Vec<Toleration>) -> Vec<Toleration> {
    let all: Vec<Toleration> = first.into_iter().chain(second).collect();
    let mut merged: Vec<Toleration> = Vec::new();
    for (i, t) in all.iter().enumerate() {
        if merged.iter().any(|m| is_superset(m, t)) {
            continue;
        }
        if all[i + 1..].iter().any(|u| u != t && is_superset(u, t)) {
            continue;
        }
        merged.push(t.clone());
    }
    merged
}

/// Whether `ss` tolerates everything `t` does.
fn is_superset(ss: &Toleration, t: &Toleration) -> bool {
    if ss == t {
        return true;
    }
    let get = |o: &Option<String>| o.clone().unwrap_or_default();
    let (ss_key, t_key) = (get(&ss.key), get(&t.key));
    let ss_op = get(&ss.operator);
    // An empty key with `Exists` matches every key.
    if t_key != ss_key && (!ss_key.is_empty() || ss_op != "Exists") {
        return false;
    }
    let (ss_effect, t_effect) = (get(&ss.effect), get(&t.effect));
    // An empty effect matches every effect.
    if t_effect != ss_effect && !ss_effect.is_empty() {
        return false;
    }
    if ss_effect == "NoExecute" {
        if let Some(limit) = ss.toleration_seconds {
            if t.toleration_seconds.is_none_or(|s| s > limit) {
                return false;
            }
        }
    }
    match ss_op.as_str() {
        "Equal" | "" => get(&t.operator) == "Equal" && t.value == ss.value,
        "Exists" => true,
        _ => false,
    }
}

#[async_trait::async_trait]
impl Plugin for RuntimeClass {
    fn name(&self) -> &'static str {
        "RuntimeClass"
    }

    async fn admit(
        &self,
        a: &Attributes<'_>,
        obj: Option<&mut Value>,
        objs: &dyn Objects,
    ) -> Result<()> {
        let Some(pod) = obj.filter(|_| handles(a)) else {
            return Ok(());
        };
        let Some(class) = class_of(a, pod, objs).await? else {
            return Ok(());
        };
        set_overhead(a, pod, &class)?;
        set_scheduling(a, pod, &class)
    }

    async fn validate(
        &self,
        a: &Attributes<'_>,
        obj: Option<&Value>,
        objs: &dyn Objects,
    ) -> Result<()> {
        let Some(pod) = obj.filter(|_| handles(a)) else {
            return Ok(());
        };
        let class = class_of(a, pod, objs).await?;
        let overhead = pod.pointer("/spec/overhead").filter(|o| !o.is_null());
        match class_overhead(class.as_ref()) {
            Some(fixed) if !same_overhead(fixed, overhead) => {
                Err(forbidden(a, Some(pod), MISMATCH))
            }
            Some(_) => Ok(()),
            None if overhead.is_some() => Err(forbidden(
                a,
                Some(pod),
                "pod rejected: Pod Overhead set without corresponding RuntimeClass defined Overhead",
            )),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::testing::Fixed;
    use crate::admission::Options;
    use crate::auth::UserInfo;
    use crate::registry::builtin;

    fn objs() -> Fixed {
        Fixed::default()
            .with(
                "runtimeclasses",
                "",
                json!({"metadata": {"name": "kata"}, "handler": "kata",
                    "overhead": {"podFixed": {"cpu": "250m", "memory": "120Mi"}},
                    "scheduling": {"nodeSelector": {"runtime": "kata"},
                        "tolerations": [{"key": "runtime", "operator": "Equal",
                            "value": "kata", "effect": "NoSchedule"}]}}),
            )
            .with(
                "runtimeclasses",
                "",
                json!({"metadata": {"name": "runc"}, "handler": "runc"}),
            )
    }

    async fn run(pod: Value) -> Result<Value> {
        let pods = builtin("", "pods").unwrap();
        let user = UserInfo::default();
        let a = Attributes {
            operation: Operation::Create,
            resource: &pods,
            subresource: "",
            namespace: "default",
            name: "web",
            old: None,
            user: &user,
            dry_run: false,
            options: Options::None,
            reinvocation: None,
        };
        let objs = objs();
        let mut pod = pod;
        RuntimeClass.admit(&a, Some(&mut pod), &objs).await?;
        RuntimeClass.validate(&a, Some(&pod), &objs).await?;
        Ok(pod)
    }

    fn message(r: Result<Value>) -> String {
        match r {
            Err(e) => e.to_string(),
            Ok(p) => panic!("admitted: {p}"),
        }
    }

    #[tokio::test]
    async fn the_class_sets_overhead_selector_and_tolerations() {
        let pod = run(json!({"spec": {"runtimeClassName": "kata",
            "nodeSelector": {"disk": "ssd"},
            "tolerations": [{"key": "a", "operator": "Exists"}],
            "containers": [{"name": "c", "image": "i"}]}}))
        .await
        .unwrap();
        assert_eq!(
            pod["spec"]["overhead"],
            json!({"cpu": "250m", "memory": "120Mi"})
        );
        assert_eq!(
            pod["spec"]["nodeSelector"],
            json!({"disk": "ssd", "runtime": "kata"})
        );
        assert_eq!(
            pod["spec"]["tolerations"],
            json!([{"key": "a", "operator": "Exists"},
                {"key": "runtime", "operator": "Equal", "value": "kata", "effect": "NoSchedule"}])
        );
        // The same overhead written otherwise is the same overhead.
        let pod = run(json!({"spec": {"runtimeClassName": "kata",
            "overhead": {"cpu": "0.25", "memory": "120Mi"}, "containers": []}}))
        .await
        .unwrap();
        assert_eq!(pod["spec"]["overhead"]["cpu"], "250m");
        // A class without overhead or scheduling changes nothing.
        let pod = run(json!({"spec": {"runtimeClassName": "runc", "containers": []}}))
            .await
            .unwrap();
        assert!(pod["spec"].get("overhead").is_none());
        assert!(pod["spec"].get("nodeSelector").is_none());
    }

    #[tokio::test]
    async fn refusals_are_worded_as_kubernetes_words_them() {
        assert_eq!(
            message(run(json!({"spec": {"runtimeClassName": "gone", "containers": []}})).await),
            "pods \"web\" is forbidden: pod rejected: RuntimeClass \"gone\" not found"
        );
        assert_eq!(
            message(
                run(json!({"spec": {"runtimeClassName": "kata",
                "overhead": {"cpu": "1"}, "containers": []}}))
                .await
            ),
            "pods \"web\" is forbidden: pod rejected: Pod's Overhead doesn't match RuntimeClass's defined Overhead"
        );
        assert_eq!(
            message(
                run(json!({"spec": {"runtimeClassName": "kata",
                "nodeSelector": {"runtime": "runc"}, "containers": []}}))
                .await
            ),
            "pods \"web\" is forbidden: conflict: runtimeClass.scheduling.nodeSelector[runtime] = kata; pod.spec.nodeSelector[runtime] = runc"
        );
        assert_eq!(
            message(run(json!({"spec": {"overhead": {"cpu": "1"}, "containers": []}})).await),
            "pods \"web\" is forbidden: pod rejected: Pod Overhead set without corresponding RuntimeClass defined Overhead"
        );
        assert_eq!(
            message(
                run(json!({"spec": {"runtimeClassName": "runc",
                "overhead": {"cpu": "1"}, "containers": []}}))
                .await
            ),
            "pods \"web\" is forbidden: pod rejected: Pod Overhead set without corresponding RuntimeClass defined Overhead"
        );
    }

    fn tol(v: Value) -> Toleration {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn merged_tolerations_keep_the_wider_one() {
        let exists = tol(json!({"key": "k", "operator": "Exists"}));
        let equal = tol(json!({"key": "k", "operator": "Equal", "value": "v",
            "effect": "NoSchedule"}));
        let all = tol(json!({"operator": "Exists"}));
        assert_eq!(
            merge_tolerations(vec![equal.clone()], vec![exists.clone()]),
            vec![exists.clone()]
        );
        assert_eq!(
            merge_tolerations(vec![exists.clone(), equal.clone()], vec![all.clone()]),
            vec![all.clone()]
        );
        assert_eq!(
            merge_tolerations(vec![equal.clone()], vec![equal.clone()]),
            vec![equal.clone()]
        );
        // A shorter NoExecute toleration is covered by a longer one, not the other way round.
        let short = tol(
            json!({"key": "k", "operator": "Exists", "effect": "NoExecute",
            "tolerationSeconds": 10}),
        );
        let long = tol(
            json!({"key": "k", "operator": "Exists", "effect": "NoExecute",
            "tolerationSeconds": 60}),
        );
        assert_eq!(
            merge_tolerations(vec![short.clone()], vec![long.clone()]),
            vec![long]
        );
        let other = tol(json!({"key": "x", "operator": "Exists"}));
        assert_eq!(
            merge_tolerations(vec![other.clone()], vec![equal.clone()]),
            vec![other, equal]
        );
    }
}
