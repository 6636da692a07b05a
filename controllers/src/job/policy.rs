//! What a Job's `podFailurePolicy` makes of a failed pod, and whether its `successPolicy` is
//! met, as Kubernetes' Job controller decides them (rules in order, the first match wins).

use k8s_openapi::api::batch::v1::{PodFailurePolicy, PodFailurePolicyRule, SuccessPolicy};
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};

use super::indexes::Indexes;

/// A rule's action.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// The job fails (`PodFailurePolicy`) and its running pods are stopped.
    FailJob,
    /// The pod's index fails and is not retried (with `backoffLimitPerIndex`).
    FailIndex,
    /// The failure is not counted towards the back-off limits; the pod is replaced.
    Ignore,
    /// The failure is counted, as without a policy.
    Count,
}

impl Action {
    fn of(rule: &PodFailurePolicyRule) -> Option<Action> {
        match rule.action.as_str() {
            "FailJob" => Some(Action::FailJob),
            "FailIndex" => Some(Action::FailIndex),
            "Ignore" => Some(Action::Ignore),
            "Count" => Some(Action::Count),
            // An action this version does not know: the rule is skipped.
            _ => None,
        }
    }
}

/// What the policy makes of a failed pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// The matched rule's action, if a rule matched.
    pub action: Option<Action>,
    /// Whether the failure counts towards `backoffLimit` (and `backoffLimitPerIndex`).
    pub counts: bool,
    /// For `FailJob`, the job's failure message.
    pub message: Option<String>,
}

const DEFAULT: Verdict = Verdict {
    action: None,
    counts: true,
    message: None,
};

/// Matches the failed `pod` against `policy`'s rules.
pub fn on_failure(policy: Option<&PodFailurePolicy>, pod: &Pod) -> Verdict {
    let Some(policy) = policy else {
        return DEFAULT;
    };
    let ns = pod.metadata.namespace.as_deref().unwrap_or("");
    let name = pod.metadata.name.as_deref().unwrap_or("");
    for (i, rule) in policy.rules.iter().enumerate() {
        let Some(action) = Action::of(rule) else {
            continue;
        };
        let message = if rule.on_exit_codes.is_some() {
            match exit_code_match(pod, rule) {
                Some((container, code)) => format!(
                    "Container {container} for pod {ns}/{name} failed with exit code {code} matching {} rule at index {i}",
                    rule.action
                ),
                None => continue,
            }
        } else if rule.on_pod_conditions.is_some() {
            match condition_match(pod, rule) {
                Some(t) => format!(
                    "Pod {ns}/{name} has condition {t} matching {} rule at index {i}",
                    rule.action
                ),
                None => continue,
            }
        } else {
            continue;
        };
        return Verdict {
            action: Some(action),
            counts: action != Action::Ignore,
            message: (action == Action::FailJob).then_some(message),
        };
    }
    DEFAULT
}

/// The first terminated container (app containers before init containers) whose non-zero
/// exit code the rule's requirement matches: its name and exit code.
fn exit_code_match(pod: &Pod, rule: &PodFailurePolicyRule) -> Option<(String, i32)> {
    let req = rule.on_exit_codes.as_ref()?;
    let status = pod.status.as_ref()?;
    let lists: [&Option<Vec<ContainerStatus>>; 2] =
        [&status.container_statuses, &status.init_container_statuses];
    lists.into_iter().flatten().flatten().find_map(|cs| {
        let code = cs.state.as_ref()?.terminated.as_ref()?.exit_code;
        if req.container_name.as_deref().is_some_and(|n| n != cs.name) || code == 0 {
            return None;
        }
        let listed = req.values.contains(&code);
        let hit = match req.operator.as_str() {
            "In" => listed,
            "NotIn" => !listed,
            _ => false,
        };
        hit.then(|| (cs.name.clone(), code))
    })
}

/// The type of the first pod condition one of the rule's patterns matches.
fn condition_match(pod: &Pod, rule: &PodFailurePolicyRule) -> Option<String> {
    let patterns = rule.on_pod_conditions.as_ref()?;
    let conditions = pod.status.as_ref()?.conditions.as_ref()?;
    conditions
        .iter()
        .find(|c| {
            patterns
                .iter()
                .any(|p| p.type_ == c.type_ && p.status == c.status)
        })
        .map(|c| c.type_.clone())
}

/// The `SuccessCriteriaMet` message when one of `policy`'s rules holds for the succeeded
/// indexes of an Indexed Job of `completions`.
pub fn success(policy: Option<&SuccessPolicy>, completions: i32, done: &Indexes) -> Option<String> {
    let policy = policy?;
    if done.is_empty() {
        return None;
    }
    for (i, rule) in policy.rules.iter().enumerate() {
        let met = match (&rule.succeeded_indexes, rule.succeeded_count) {
            (Some(list), count) => {
                let wanted = Indexes::parse(list, completions);
                if wanted.is_empty() {
                    continue;
                }
                let have = wanted.overlap(done);
                have == wanted.total() || count.is_some_and(|c| have >= c)
            }
            (None, Some(count)) => done.total() >= count,
            (None, None) => false,
        };
        if met {
            return Some(format!("Matched rules at index {i}"));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(rules: serde_json::Value) -> PodFailurePolicy {
        serde_json::from_value(json!({ "rules": rules })).unwrap()
    }

    fn failed(codes: &[(&str, i32)], conditions: serde_json::Value) -> Pod {
        let statuses: Vec<_> = codes
            .iter()
            .map(|(n, c)| {
                json!({"name": n, "image": "", "imageID": "", "ready": false,
                "restartCount": 0, "state": {"terminated": {"exitCode": c}}})
            })
            .collect();
        serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "n"},
            "status": {"phase": "Failed", "containerStatuses": statuses, "conditions": conditions}}))
        .unwrap()
    }

    #[test]
    fn exit_codes_in_order_with_upstreams_message() {
        let p = policy(json!([
            {"action": "FailJob", "onExitCodes": {"containerName": "main", "operator": "In", "values": [42]}},
            {"action": "Ignore", "onExitCodes": {"operator": "In", "values": [3]}},
            {"action": "Count", "onExitCodes": {"operator": "NotIn", "values": [1, 2]}},
        ]));
        let v = on_failure(Some(&p), &failed(&[("main", 42)], json!([])));
        assert_eq!(v.action, Some(Action::FailJob));
        assert_eq!(
            v.message.as_deref(),
            Some("Container main for pod n/p failed with exit code 42 matching FailJob rule at index 0")
        );
        // Another container's 42 is not the rule's.
        let v = on_failure(Some(&p), &failed(&[("side", 42)], json!([])));
        assert_eq!((v.action, v.counts), (Some(Action::Count), true));
        let v = on_failure(Some(&p), &failed(&[("main", 0), ("side", 3)], json!([])));
        assert_eq!((v.action, v.counts), (Some(Action::Ignore), false));
        assert_eq!(
            on_failure(Some(&p), &failed(&[("main", 2)], json!([]))),
            DEFAULT
        );
        assert_eq!(
            on_failure(None, &failed(&[("main", 42)], json!([]))),
            DEFAULT
        );
    }

    #[test]
    fn pod_conditions_and_unknown_actions() {
        let p = policy(json!([
            {"action": "Restart", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
        ]));
        let evicted = failed(
            &[("main", 137)],
            json!([{"type": "DisruptionTarget", "status": "True"}]),
        );
        let v = on_failure(Some(&p), &evicted);
        assert_eq!((v.action, v.counts), (Some(Action::Ignore), false));
        let p = policy(json!([{"action": "FailJob",
            "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}]));
        assert_eq!(
            on_failure(Some(&p), &evicted).message.as_deref(),
            Some("Pod n/p has condition DisruptionTarget matching FailJob rule at index 0")
        );
        let not_evicted = failed(
            &[("main", 1)],
            json!([{"type": "DisruptionTarget", "status": "False"}]),
        );
        assert_eq!(on_failure(Some(&p), &not_evicted), DEFAULT);
    }

    #[test]
    fn success_rules() {
        let p: SuccessPolicy = serde_json::from_value(json!({"rules": [
            {"succeededIndexes": "1-4", "succeededCount": 3},
            {"succeededIndexes": "0,8"},
            {"succeededCount": 5},
        ]}))
        .unwrap();
        let done = |v: &[i32]| Indexes::of(v.iter().copied());
        assert_eq!(success(Some(&p), 10, &done(&[1, 3, 5])), None);
        assert_eq!(
            success(Some(&p), 10, &done(&[1, 3, 4])).as_deref(),
            Some("Matched rules at index 0")
        );
        assert_eq!(
            success(Some(&p), 10, &done(&[0, 8])).as_deref(),
            Some("Matched rules at index 1")
        );
        assert_eq!(
            success(Some(&p), 10, &done(&[0, 5, 6, 7, 9])).as_deref(),
            Some("Matched rules at index 2")
        );
        assert_eq!(success(None, 10, &done(&[0, 8])), None);
    }
}
