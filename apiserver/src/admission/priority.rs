//! Priority: a new pod's `spec.priority` (and `preemptionPolicy`) come from its
//! PriorityClass — the one it names, else the cluster's global default, else 0 — and a pod may
//! not state a priority that disagrees. Only one PriorityClass may be the global default.

use serde_json::{json, Value};

use super::{forbidden, Attributes, Operation, Plugin};
use crate::error::{Error, Result};
use crate::registry::{Objects, ResourceInfo};

/// The plugin.
pub struct Priority;

fn is(r: &ResourceInfo, group: &str, plural: &str) -> bool {
    r.group == group && r.plural == plural
}

/// The global default class with the lowest value (several may exist after a race).
fn default_class(objs: &dyn Objects, pcr: &ResourceInfo) -> Option<Value> {
    objs.cached_list(pcr, None)
        .into_iter()
        .map(|c| c.value())
        .filter(|pc| pc.get("globalDefault").and_then(Value::as_bool) == Some(true))
        .min_by_key(|pc| pc.get("value").and_then(Value::as_i64).unwrap_or(0))
}

impl Priority {
    async fn admit_pod(
        &self,
        a: &Attributes<'_>,
        pod: &mut Value,
        objs: &dyn Objects,
    ) -> Result<()> {
        if a.operation == Operation::Update {
            // Both are set on create; an update that leaves them out keeps them.
            for field in ["priority", "preemptionPolicy"] {
                let ptr = format!("/spec/{field}");
                if pod.pointer(&ptr).is_none() {
                    if let Some(old) = a.old.and_then(|o| o.pointer(&ptr)) {
                        if let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) {
                            spec.insert(field.into(), old.clone());
                        }
                    }
                }
            }
            return Ok(());
        }
        let pcr = objs
            .resource("scheduling.k8s.io", "v1", "priorityclasses")
            .ok_or_else(|| Error::internal("priorityclasses are not served"))?;
        let name = pod
            .pointer("/spec/priorityClassName")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let class = if name.is_empty() {
            default_class(objs, &pcr)
        } else {
            let cached = objs.cached(&pcr, None, &name).map(|c| c.value());
            let found = match cached {
                Some(pc) => Some(pc),
                // Not in the cache yet, perhaps just created: ask etcd.
                None => match objs.get(&pcr, None, &name).await {
                    Ok(pc) => Some(pc),
                    Err(e) if e.code() == 404 => None,
                    Err(e) => return Err(e),
                },
            };
            Some(found.ok_or_else(|| {
                forbidden(
                    a,
                    Some(pod),
                    &format!("no PriorityClass with name {name} was found"),
                )
            })?)
        };
        let (priority, policy) = match &class {
            Some(pc) => {
                if name.is_empty() {
                    if let Some(n) = pc.pointer("/metadata/name") {
                        pod["spec"]["priorityClassName"] = n.clone();
                    }
                }
                (
                    pc.get("value").and_then(Value::as_i64).unwrap_or(0),
                    pc.get("preemptionPolicy")
                        .and_then(Value::as_str)
                        .unwrap_or("PreemptLowerPriority")
                        .to_string(),
                )
            }
            None => (0, "PreemptLowerPriority".to_string()),
        };
        if let Some(given) = pod.pointer("/spec/priority").and_then(Value::as_i64) {
            if given != priority {
                return Err(forbidden(
                    a,
                    Some(pod),
                    &format!("the integer value of priority ({given}) must not be provided in pod spec; priority admission controller computed {priority} from the given PriorityClass name"),
                ));
            }
        }
        if let Some(given) = pod
            .pointer("/spec/preemptionPolicy")
            .and_then(Value::as_str)
        {
            if given != policy {
                return Err(forbidden(
                    a,
                    Some(pod),
                    &format!("the string value of PreemptionPolicy ({given}) must not be provided in pod spec; priority admission controller computed {policy} from the given PriorityClass name"),
                ));
            }
        }
        if let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) {
            spec.insert("priority".into(), json!(priority));
            spec.insert("preemptionPolicy".into(), json!(policy));
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Plugin for Priority {
    fn name(&self) -> &'static str {
        "Priority"
    }

    async fn admit(
        &self,
        a: &Attributes<'_>,
        obj: Option<&mut Value>,
        objs: &dyn Objects,
    ) -> Result<()> {
        match obj {
            Some(pod)
                if is(a.resource, "", "pods")
                    && a.subresource.is_empty()
                    && matches!(a.operation, Operation::Create | Operation::Update) =>
            {
                self.admit_pod(a, pod, objs).await
            }
            _ => Ok(()),
        }
    }

    async fn validate(
        &self,
        a: &Attributes<'_>,
        obj: Option<&Value>,
        objs: &dyn Objects,
    ) -> Result<()> {
        let Some(pc) = obj else { return Ok(()) };
        if !is(a.resource, "scheduling.k8s.io", "priorityclasses")
            || !a.subresource.is_empty()
            || !matches!(a.operation, Operation::Create | Operation::Update)
            || pc.get("globalDefault").and_then(Value::as_bool) != Some(true)
        {
            return Ok(());
        }
        let name = pc
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        if let Some(existing) = default_class(objs, a.resource) {
            let other = existing
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("");
            if other != name {
                return Err(forbidden(
                    a,
                    obj,
                    &format!("PriorityClass {other} is already marked as default. Only one default can exist"),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::testing::Fixed;
    use crate::auth::UserInfo;
    use crate::registry::builtin;

    fn attrs<'a>(
        op: Operation,
        r: &'a ResourceInfo,
        old: Option<&'a Value>,
        user: &'a UserInfo,
    ) -> Attributes<'a> {
        Attributes {
            operation: op,
            resource: r,
            subresource: "",
            namespace: "default",
            name: "",
            old,
            user,
            dry_run: false,
            options: crate::admission::Options::None,
            reinvocation: None,
        }
    }

    fn classes() -> Fixed {
        Fixed::default()
            .with(
                "priorityclasses",
                "",
                json!({"metadata": {"name": "high"}, "value": 1000, "preemptionPolicy": "Never"}),
            )
            .with(
                "priorityclasses",
                "",
                json!({"metadata": {"name": "system-node-critical"}, "value": 2000001000}),
            )
    }

    #[tokio::test]
    async fn pods_get_their_class_priority() {
        let pods = builtin("", "pods").unwrap();
        let user = UserInfo::default();
        let a = attrs(Operation::Create, &pods, None, &user);
        let objs = classes();
        let mut pod = json!({"metadata": {"name": "p"}, "spec": {"priorityClassName": "high"}});
        Priority.admit(&a, Some(&mut pod), &objs).await.unwrap();
        assert_eq!(pod["spec"]["priority"], 1000);
        assert_eq!(pod["spec"]["preemptionPolicy"], "Never");
        let mut pod = json!({"metadata": {"name": "p"}, "spec": {"priorityClassName": "system-node-critical"}});
        Priority.admit(&a, Some(&mut pod), &objs).await.unwrap();
        assert_eq!(pod["spec"]["priority"], 2000001000);
        assert_eq!(pod["spec"]["preemptionPolicy"], "PreemptLowerPriority");
        // No class and no default: 0.
        let mut pod = json!({"metadata": {"name": "p"}, "spec": {}});
        Priority.admit(&a, Some(&mut pod), &objs).await.unwrap();
        assert_eq!(pod["spec"]["priority"], 0);
        // A class that does not exist.
        let mut pod = json!({"metadata": {"name": "p"}, "spec": {"priorityClassName": "nope"}});
        let e = Priority.admit(&a, Some(&mut pod), &objs).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "pods \"p\" is forbidden: no PriorityClass with name nope was found"
        );
        // A priority that disagrees with the class.
        let mut pod = json!({"metadata": {"name": "p"},
            "spec": {"priorityClassName": "high", "priority": 5}});
        let e = Priority.admit(&a, Some(&mut pod), &objs).await.unwrap_err();
        assert_eq!(e.code(), 403);
        assert!(e
            .to_string()
            .contains("the integer value of priority (5) must not be provided"));
    }

    #[tokio::test]
    async fn the_global_default_applies_and_is_unique() {
        let pods = builtin("", "pods").unwrap();
        let pcs = builtin("scheduling.k8s.io", "priorityclasses").unwrap();
        let user = UserInfo::default();
        let objs = classes().with(
            "priorityclasses",
            "",
            json!({"metadata": {"name": "normal"}, "value": 10, "globalDefault": true}),
        );
        let mut pod = json!({"metadata": {"name": "p"}, "spec": {}});
        Priority
            .admit(
                &attrs(Operation::Create, &pods, None, &user),
                Some(&mut pod),
                &objs,
            )
            .await
            .unwrap();
        assert_eq!(pod["spec"]["priority"], 10);
        assert_eq!(pod["spec"]["priorityClassName"], "normal");
        let second = json!({"metadata": {"name": "other"}, "value": 5, "globalDefault": true});
        let e = Priority
            .validate(
                &attrs(Operation::Create, &pcs, None, &user),
                Some(&second),
                &objs,
            )
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "priorityclasses.scheduling.k8s.io \"other\" is forbidden: PriorityClass normal is already marked as default. Only one default can exist"
        );
        // The default itself may be updated.
        let same = json!({"metadata": {"name": "normal"}, "value": 10, "globalDefault": true});
        Priority
            .validate(
                &attrs(Operation::Update, &pcs, None, &user),
                Some(&same),
                &objs,
            )
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn updates_keep_the_priority() {
        let pods = builtin("", "pods").unwrap();
        let user = UserInfo::default();
        let old = json!({"spec": {"priority": 1000}});
        let mut pod = json!({"metadata": {"name": "p"}, "spec": {}});
        Priority
            .admit(
                &attrs(Operation::Update, &pods, Some(&old), &user),
                Some(&mut pod),
                &Fixed::default(),
            )
            .await
            .unwrap();
        assert_eq!(pod["spec"]["priority"], 1000);
    }
}
