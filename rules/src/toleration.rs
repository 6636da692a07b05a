//! Taints and tolerations: whether a pod's tolerations let it onto (or keep it on) a node with
//! given taints, as Kubernetes' `Toleration.ToleratesTaint` decides.

use k8s_openapi::api::core::v1::{Taint, Toleration};

/// The effects a taint may have.
pub mod effect {
    /// New pods stay off unless they tolerate it.
    pub const NO_SCHEDULE: &str = "NoSchedule";
    /// The scheduler avoids the node if it can.
    pub const PREFER_NO_SCHEDULE: &str = "PreferNoSchedule";
    /// Pods that do not tolerate it are evicted (and new ones stay off).
    pub const NO_EXECUTE: &str = "NoExecute";
}

/// Whether toleration `t` tolerates `taint`, as Kubernetes decides:
/// - an empty effect matches every effect, else the effects must be equal;
/// - an empty key matches every key, else the keys must be equal;
/// - operator `Exists` matches any value, `Equal` (or none: the default) the same value;
/// - any other operator tolerates nothing.
#[inline]
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    let effect = t.effect.as_deref().unwrap_or("");
    if !effect.is_empty() && effect != taint.effect {
        return false;
    }
    let key = t.key.as_deref().unwrap_or("");
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match t.operator.as_deref().unwrap_or("") {
        "" | "Equal" => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        "Exists" => true,
        _ => false,
    }
}

/// Whether any of `tolerations` tolerates `taint`.
#[inline]
pub fn any_tolerates(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations.iter().any(|t| tolerates(t, taint))
}

/// The tolerations among `tolerations` that tolerate `taint`.
pub fn matching<'t>(
    tolerations: &'t [Toleration],
    taint: &'t Taint,
) -> impl Iterator<Item = &'t Toleration> + 't {
    tolerations.iter().filter(move |t| tolerates(t, taint))
}

/// The taints among `taints` that `keep` selects (by effect, typically) and that none of
/// `tolerations` tolerates.
pub fn untolerated<'t>(
    taints: &'t [Taint],
    tolerations: &'t [Toleration],
    keep: impl Fn(&Taint) -> bool + 't,
) -> impl Iterator<Item = &'t Taint> + 't {
    taints
        .iter()
        .filter(move |taint| keep(taint) && !any_tolerates(tolerations, taint))
}

/// The first taint with one of `effects` that none of `tolerations` tolerates
/// (Kubernetes' `FindMatchingUntoleratedTaint`).
pub fn first_untolerated<'t>(
    taints: &'t [Taint],
    tolerations: &'t [Toleration],
    effects: &[&str],
) -> Option<&'t Taint> {
    taints.iter().find(|taint| {
        effects.contains(&taint.effect.as_str()) && !any_tolerates(tolerations, taint)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn taint(v: serde_json::Value) -> Taint {
        serde_json::from_value(v).unwrap()
    }

    fn tol(v: serde_json::Value) -> Toleration {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn tolerates_as_kubernetes_does() {
        let t = taint(json!({"key": "dedicated", "value": "db", "effect": "NoSchedule"}));
        for (toleration, want) in [
            (json!({"operator": "Exists"}), true),
            (json!({"key": "", "operator": "Exists"}), true),
            (json!({"operator": "Exists", "effect": "NoSchedule"}), true),
            (json!({"operator": "Exists", "effect": "NoExecute"}), false),
            (json!({"key": "dedicated", "operator": "Exists"}), true),
            (json!({"key": "other", "operator": "Exists"}), false),
            (json!({"key": "dedicated", "value": "db"}), true),
            (
                json!({"key": "dedicated", "operator": "Equal", "value": "db"}),
                true,
            ),
            (
                json!({"key": "dedicated", "operator": "", "value": "db"}),
                true,
            ),
            (json!({"key": "dedicated", "value": "web"}), false),
            (json!({"key": "dedicated"}), false),
            (
                json!({"key": "dedicated", "value": "db", "effect": "NoSchedule"}),
                true,
            ),
            (
                json!({"key": "dedicated", "value": "db", "effect": ""}),
                true,
            ),
            (
                json!({"key": "dedicated", "value": "db", "effect": "PreferNoSchedule"}),
                false,
            ),
            (
                json!({"key": "dedicated", "operator": "Gt", "value": "db"}),
                false,
            ),
            (
                json!({"key": "dedicated", "operator": "Bogus", "value": "db"}),
                false,
            ),
        ] {
            assert_eq!(
                tolerates(&tol(toleration.clone()), &t),
                want,
                "{toleration}"
            );
        }
        let valueless =
            taint(json!({"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"}));
        assert!(tolerates(
            &tol(json!({"key": "node.kubernetes.io/not-ready"})),
            &valueless
        ));
    }

    #[test]
    fn untolerated_taints_by_effect() {
        let taints = vec![
            taint(json!({"key": "a", "effect": "NoSchedule"})),
            taint(json!({"key": "b", "effect": "PreferNoSchedule"})),
            taint(json!({"key": "c", "effect": "NoExecute"})),
        ];
        let tols = vec![tol(json!({"key": "a", "operator": "Exists"}))];
        let hard = [effect::NO_SCHEDULE, effect::NO_EXECUTE];
        assert_eq!(first_untolerated(&taints, &tols, &hard).unwrap().key, "c");
        let keys: Vec<&str> = untolerated(&taints, &tols, |_| true)
            .map(|t| t.key.as_str())
            .collect();
        assert_eq!(keys, ["b", "c"]);
        assert!(first_untolerated(&taints, &[tol(json!({"operator": "Exists"}))], &hard).is_none());
        assert_eq!(matching(&tols, &taints[0]).count(), 1);
        assert!(any_tolerates(&tols, &taints[0]));
    }
}
