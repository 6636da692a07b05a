//! `TaintToleration`: `NoSchedule` and `NoExecute` taints keep out pods that do not tolerate
//! them (this is how not-ready and unreachable nodes are avoided); untolerated
//! `PreferNoSchedule` taints lower a node's score.

use k8s_openapi::api::core::v1::{Taint, Toleration};
use skiff_rules::toleration::{self, effect};

use super::{normalize_to_max, Check, Filter, Rate, Rejection, Score};
use crate::snapshot::{PodInfo, Snapshot};

/// The `TaintToleration` filter and score.
pub struct TaintToleration;

/// Whether any of `tolerations` tolerates `taint` (Kubernetes' rule, from `skiff-rules`).
pub use skiff_rules::toleration::any_tolerates as tolerates;

/// The pod's tolerations.
pub fn tolerations(pod: &PodInfo) -> &[Toleration] {
    pod.spec()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or(&[])
}

/// The first of `taints` that keeps the pod out (`NoSchedule` or `NoExecute`) and that none
/// of `tolerations` tolerates.
pub fn untolerated<'t>(tolerations: &'t [Toleration], taints: &'t [Taint]) -> Option<&'t Taint> {
    toleration::first_untolerated(
        taints,
        tolerations,
        &[effect::NO_SCHEDULE, effect::NO_EXECUTE],
    )
}

impl Filter for TaintToleration {
    fn name(&self) -> &'static str {
        "TaintToleration"
    }

    fn filter_for<'a>(&'a self, pod: &'a PodInfo, _snap: &'a Snapshot) -> Option<Check<'a>> {
        let tols = tolerations(pod);
        Some(Box::new(move |_, node| {
            match untolerated(tols, node.taints()) {
                Some(taint) => Err(Rejection::unresolvable(format!(
                    "node(s) had untolerated taint {{{}: {}}}",
                    taint.key,
                    taint.value.as_deref().unwrap_or("")
                ))),
                None => Ok(()),
            }
        }))
    }
}

impl Score for TaintToleration {
    fn name(&self) -> &'static str {
        "TaintToleration"
    }

    /// How many `PreferNoSchedule` taints the pod does not tolerate (fewer is better).
    fn score_for<'a>(&'a self, pod: &'a PodInfo, _snap: &'a Snapshot) -> Option<Rate<'a>> {
        let tols: Vec<&Toleration> = tolerations(pod)
            .iter()
            .filter(|t| {
                matches!(
                    t.effect.as_deref(),
                    None | Some("") | Some("PreferNoSchedule")
                )
            })
            .collect();
        Some(Box::new(move |_, node| {
            node.taints()
                .iter()
                .filter(|t| t.effect == "PreferNoSchedule")
                .filter(|taint| !tols.iter().any(|t| toleration::tolerates(t, taint)))
                .count() as i64
        }))
    }

    fn normalize(&self, scores: &mut [i64]) {
        normalize_to_max(scores, true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::{check, node, pod, rate};
    use serde_json::json;

    #[test]
    fn hard_taints_keep_out_untolerating_pods() {
        let n = node(json!({"metadata": {"name": "a"}, "spec": {"taints": [
            {"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"},
            {"key": "dedicated", "value": "db", "effect": "NoSchedule"}]}}));
        let plain = pod(json!({"spec": {"containers": []}}));
        let err = check(&TaintToleration, &plain, &n).unwrap_err();
        assert_eq!(
            err.reasons,
            vec!["node(s) had untolerated taint {node.kubernetes.io/not-ready: }"]
        );
        assert!(err.unresolvable);
        let half = pod(json!({"spec": {"containers": [], "tolerations": [
            {"key": "node.kubernetes.io/not-ready", "operator": "Exists"}]}}));
        assert_eq!(
            check(&TaintToleration, &half, &n).unwrap_err().reasons,
            vec!["node(s) had untolerated taint {dedicated: db}"]
        );
        let both = pod(json!({"spec": {"containers": [], "tolerations": [
            {"key": "node.kubernetes.io/not-ready", "operator": "Exists"},
            {"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoSchedule"}]}}));
        assert!(check(&TaintToleration, &both, &n).is_ok());
        let wrong_value = pod(json!({"spec": {"containers": [], "tolerations": [
            {"operator": "Exists", "effect": "NoExecute"},
            {"key": "dedicated", "value": "web"}]}}));
        assert!(check(&TaintToleration, &wrong_value, &n).is_err());
        let everything =
            pod(json!({"spec": {"containers": [], "tolerations": [{"operator": "Exists"}]}}));
        assert!(check(&TaintToleration, &everything, &n).is_ok());
    }

    #[test]
    fn soft_taints_lower_the_score() {
        let clean = node(json!({"metadata": {"name": "a"}}));
        let soft = node(json!({"metadata": {"name": "b"}, "spec": {"taints": [
            {"key": "spot", "effect": "PreferNoSchedule"}]}}));
        let p = pod(json!({"spec": {"containers": []}}));
        assert!(check(&TaintToleration, &p, &soft).is_ok());
        let mut scores = vec![
            rate(&TaintToleration, &p, &clean),
            rate(&TaintToleration, &p, &soft),
        ];
        TaintToleration.normalize(&mut scores);
        assert_eq!(scores, vec![100, 0]);
    }
}
