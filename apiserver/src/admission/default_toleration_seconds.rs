//! DefaultTolerationSeconds: a new pod that does not tolerate the `node.kubernetes.io/not-ready`
//! or `node.kubernetes.io/unreachable` `NoExecute` taint gets a toleration of it for a while
//! (five minutes unless the flags say otherwise), so it is evicted that long after its node is
//! lost.

use serde_json::{json, Value};

use super::{Attributes, Operation, Plugin};
use crate::error::Result;
use crate::registry::Objects;

/// The plugin's settings (`--default-not-ready-toleration-seconds`,
/// `--default-unreachable-toleration-seconds`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DefaultTolerations {
    /// For `node.kubernetes.io/not-ready`.
    pub not_ready_seconds: i64,
    /// For `node.kubernetes.io/unreachable`.
    pub unreachable_seconds: i64,
}

impl Default for DefaultTolerations {
    /// Kubernetes' five minutes for both.
    fn default() -> Self {
        DefaultTolerations {
            not_ready_seconds: 300,
            unreachable_seconds: 300,
        }
    }
}

/// The plugin.
pub struct DefaultTolerationSeconds(pub DefaultTolerations);

impl DefaultTolerationSeconds {
    /// Adds the tolerations `pod` lacks. A toleration with the taint's key (or no key) and
    /// the `NoExecute` effect (or none) already covers it, as Kubernetes counts it.
    fn add(&self, pod: &mut Value) {
        let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
            return;
        };
        let list = spec.entry("tolerations").or_insert_with(|| json!([]));
        if !list.is_array() {
            *list = json!([]);
        }
        let Some(list) = list.as_array_mut() else {
            return;
        };
        for (key, seconds) in [
            ("node.kubernetes.io/not-ready", self.0.not_ready_seconds),
            ("node.kubernetes.io/unreachable", self.0.unreachable_seconds),
        ] {
            let covered = list.iter().any(|t| {
                let k = t.get("key").and_then(Value::as_str).unwrap_or("");
                let effect = t.get("effect").and_then(Value::as_str).unwrap_or("");
                (k == key || k.is_empty()) && (effect.is_empty() || effect == "NoExecute")
            });
            if !covered {
                list.push(
                    json!({"key": key, "operator": "Exists", "effect": "NoExecute",
                                 "tolerationSeconds": seconds}),
                );
            }
        }
    }
}

#[async_trait::async_trait]
impl Plugin for DefaultTolerationSeconds {
    fn name(&self) -> &'static str {
        "DefaultTolerationSeconds"
    }

    async fn admit(
        &self,
        a: &Attributes<'_>,
        obj: Option<&mut Value>,
        _objs: &dyn Objects,
    ) -> Result<()> {
        let pods = a.resource.group.is_empty() && a.resource.plural == "pods";
        if pods && a.subresource.is_empty() && a.operation == Operation::Create {
            if let Some(pod) = obj {
                self.add(pod);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tolerations(p: &DefaultTolerationSeconds, mut pod: Value) -> Value {
        p.add(&mut pod);
        pod["spec"]["tolerations"].clone()
    }

    #[test]
    fn adds_what_the_pod_lacks() {
        let p = DefaultTolerationSeconds(DefaultTolerations {
            not_ready_seconds: 7,
            unreachable_seconds: 9,
        });
        let t = tolerations(&p, json!({"spec": {}}));
        assert_eq!(t[0]["key"], "node.kubernetes.io/not-ready");
        assert_eq!(t[0]["tolerationSeconds"], 7);
        assert_eq!(t[1]["key"], "node.kubernetes.io/unreachable");
        assert_eq!(t[1]["tolerationSeconds"], 9);
        // The pod's own toleration of one taint is kept; only the other is added.
        let own = json!({"spec": {"tolerations": [{"key": "node.kubernetes.io/unreachable",
            "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 1}]}});
        let t = tolerations(&p, own);
        assert_eq!(t.as_array().unwrap().len(), 2);
        assert_eq!(t[0]["tolerationSeconds"], 1);
        assert_eq!(t[1]["key"], "node.kubernetes.io/not-ready");
        // A toleration of every taint covers both.
        let all = json!({"spec": {"tolerations": [{"operator": "Exists"}]}});
        assert_eq!(tolerations(&p, all).as_array().unwrap().len(), 1);
        // A NoSchedule toleration does not.
        let ns = json!({"spec": {"tolerations": [{"key": "node.kubernetes.io/not-ready",
            "operator": "Exists", "effect": "NoSchedule"}]}});
        assert_eq!(tolerations(&p, ns).as_array().unwrap().len(), 3);
    }
}
