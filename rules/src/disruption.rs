//! Disruption budgets: the rules the disruption controller and the eviction subresource share
//! (Kubernetes' `intstr.GetScaledValueFromIntOrPercent` and the PDB helper that keeps the
//! `DisruptionAllowed` condition).

use k8s_openapi::api::policy::v1::PodDisruptionBudgetStatus;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// The condition that says whether a budget allows a disruption now.
pub const DISRUPTION_ALLOWED: &str = "DisruptionAllowed";
/// The condition's reason when it does.
pub const SUFFICIENT_PODS: &str = "SufficientPods";
/// The condition's reason when it does not.
pub const INSUFFICIENT_PODS: &str = "InsufficientPods";
/// The condition's reason when the controller could not compute the budget.
pub const SYNC_FAILED: &str = "SyncFailed";
/// The cause type of an eviction refused by a budget.
pub const DISRUPTION_BUDGET_CAUSE: &str = "DisruptionBudget";
/// The most evictions a budget records before its controller has seen them go.
pub const MAX_DISRUPTED_PODS: usize = 2000;

/// An int-or-percent as a count of `total`: an integer as is, a percentage of `total`
/// rounded up or down. `None` for a string that is not a percentage.
pub fn scaled(v: &IntOrString, total: i32, round_up: bool) -> Option<i32> {
    match v {
        IntOrString::Int(i) => Some(*i),
        IntOrString::String(s) => {
            let p: i64 = s.strip_suffix('%')?.parse().ok()?;
            let x = p * i64::from(total);
            let n = if round_up {
                (x + 99).div_euclid(100)
            } else {
                x.div_euclid(100)
            };
            i32::try_from(n).ok()
        }
    }
}

/// Sets a condition on `conditions` as `meta.SetStatusCondition` does: the transition time
/// moves only when the status changes.
pub fn set_condition(conditions: &mut Vec<Condition>, mut c: Condition) {
    match conditions.iter_mut().find(|x| x.type_ == c.type_) {
        Some(old) => {
            if old.status == c.status {
                c.last_transition_time = old.last_transition_time.clone();
            }
            *old = c;
        }
        None => conditions.push(c),
    }
}

/// Sets `DisruptionAllowed` from `disruptionsAllowed` (`SufficientPods` / `InsufficientPods`).
pub fn update_allowed_condition(status: &mut PodDisruptionBudgetStatus, now: Time) {
    let allowed = status.disruptions_allowed > 0;
    let c = Condition {
        type_: DISRUPTION_ALLOWED.into(),
        status: if allowed { "True" } else { "False" }.into(),
        reason: if allowed {
            SUFFICIENT_PODS
        } else {
            INSUFFICIENT_PODS
        }
        .into(),
        message: String::new(),
        observed_generation: status.observed_generation,
        last_transition_time: now,
    };
    set_condition(status.conditions.get_or_insert_with(Vec::new), c);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_scale_and_round() {
        let p = |s: &str| IntOrString::String(s.into());
        assert_eq!(scaled(&IntOrString::Int(2), 10, true), Some(2));
        assert_eq!(scaled(&p("50%"), 3, true), Some(2));
        assert_eq!(scaled(&p("50%"), 3, false), Some(1));
        assert_eq!(scaled(&p("100%"), 7, true), Some(7));
        assert_eq!(scaled(&p("half"), 7, true), None);
    }

    #[test]
    fn the_condition_moves_only_on_a_change() {
        let t = |s: i64| Time(k8s_openapi::jiff::Timestamp::from_second(s).unwrap());
        let mut st = PodDisruptionBudgetStatus {
            disruptions_allowed: 1,
            ..Default::default()
        };
        update_allowed_condition(&mut st, t(10));
        update_allowed_condition(&mut st, t(20));
        let c = &st.conditions.as_ref().unwrap()[0];
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("True", SUFFICIENT_PODS)
        );
        assert_eq!(c.last_transition_time, t(10));
        st.disruptions_allowed = 0;
        update_allowed_condition(&mut st, t(30));
        let c = &st.conditions.as_ref().unwrap()[0];
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", INSUFFICIENT_PODS)
        );
        assert_eq!(c.last_transition_time, t(30));
    }
}
