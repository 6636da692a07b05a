//! PodDisruptionBudgets (policy/v1): how many of a set of pods voluntary disruptions (an
//! eviction, a drain) may take down at once. Validation follows Kubernetes'
//! `pkg/apis/policy/validation` with its messages and field paths; the table columns follow
//! kube-apiserver's printers. The disruption controller writes the status; the eviction
//! subresource reads and decrements it.

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetStatus};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{json, Value};

use super::webhook_configuration::AGE;
use super::{clear_status, col, i, Builtin, Column, Typed};
use crate::error::Cause;
use crate::validation as v;

const NAME: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";

/// The unhealthy-pod eviction policies Kubernetes accepts.
pub const UNHEALTHY_POLICIES: &[&str] = &["AlwaysAllow", "IfHealthyBudget"];

/// The poddisruptionbudgets resource.
pub static PODDISRUPTIONBUDGETS: Builtin = Builtin {
    group: "policy",
    version: "v1",
    kind: "PodDisruptionBudget",
    plural: "poddisruptionbudgets",
    singular: "poddisruptionbudget",
    short_names: &["pdb"],
    categories: &[],
    namespaced: true,
    subresources: &[("status", &super::subresource::STATUS)],
    selectable: &[],
    has_generation: true,
    strategy: &STRATEGY,
    schema: super::schema_of::<PodDisruptionBudget>,
};

static STRATEGY: Typed<PodDisruptionBudget> = Typed {
    status: true,
    validate,
    prepare_create: clear_status,
    ..Typed::new(columns, cells)
};

/// A non-negative integer or a percentage, as `ValidatePositiveIntOrPercent` and
/// `IsNotMoreThan100Percent` check it.
fn int_or_percent(field: &str, x: &IntOrString, out: &mut Vec<Cause>) {
    match x {
        IntOrString::Int(n) if *n < 0 => out.push(Cause::invalid(
            field,
            &json!(n),
            "must be greater than or equal to 0",
        )),
        IntOrString::Int(_) => {}
        IntOrString::String(s) => match s.strip_suffix('%').map(str::parse::<u64>) {
            Some(Ok(p)) if p > 100 => {
                out.push(Cause::invalid(field, &json!(s), "must not be greater than 100%"))
            }
            Some(Ok(_)) => {}
            _ => out.push(Cause::invalid(
                field,
                &json!(s),
                "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')",
            )),
        },
    }
}

fn validate(pdb: &PodDisruptionBudget) -> Vec<Cause> {
    let mut out = Vec::new();
    if let Some(spec) = &pdb.spec {
        if spec.min_available.is_some() && spec.max_unavailable.is_some() {
            out.push(Cause::invalid(
                "spec",
                &v::val(spec),
                "minAvailable and maxUnavailable cannot be both set",
            ));
        }
        if let Some(m) = &spec.min_available {
            int_or_percent("spec.minAvailable", m, &mut out);
        }
        if let Some(m) = &spec.max_unavailable {
            int_or_percent("spec.maxUnavailable", m, &mut out);
        }
        if let Some(sel) = &spec.selector {
            v::label_selector("spec.selector", sel, &mut out);
        }
        if let Some(p) = &spec.unhealthy_pod_eviction_policy {
            if !UNHEALTHY_POLICIES.contains(&p.as_str()) {
                out.push(Cause::not_supported(
                    "spec.unhealthyPodEvictionPolicy",
                    p,
                    UNHEALTHY_POLICIES,
                ));
            }
        }
    }
    if let Some(st) = &pdb.status {
        validate_status(st, &mut out);
    }
    out
}

fn validate_status(st: &PodDisruptionBudgetStatus, out: &mut Vec<Cause>) {
    for (field, n) in [
        ("status.disruptionsAllowed", st.disruptions_allowed),
        ("status.currentHealthy", st.current_healthy),
        ("status.desiredHealthy", st.desired_healthy),
        ("status.expectedPods", st.expected_pods),
    ] {
        v::non_negative(field, Some(n.into()), out);
    }
}

fn columns() -> Vec<Column> {
    vec![
        col("Name", "string", 0, NAME),
        col(
            "Min Available",
            "string",
            0,
            "The minimum number of pods that must be available.",
        ),
        col(
            "Max Unavailable",
            "string",
            0,
            "The maximum number of pods that may be unavailable.",
        ),
        col(
            "Allowed Disruptions",
            "integer",
            0,
            "Calculated number of pods that may be disrupted at this time.",
        ),
        col("Age", "string", 0, AGE),
    ]
}

/// An int-or-percent as kubectl prints it, `N/A` when unset.
fn shown(obj: &Value, ptr: &str) -> Value {
    match obj.pointer(ptr) {
        Some(Value::String(s)) => json!(s),
        Some(Value::Number(n)) => json!(n.to_string()),
        _ => json!("N/A"),
    }
}

fn cells(pdb: &Value) -> Vec<Value> {
    vec![
        super::name(pdb),
        shown(pdb, "/spec/minAvailable"),
        shown(pdb, "/spec/maxUnavailable"),
        json!(i(pdb, "/status/disruptionsAllowed")),
        super::age(pdb),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{Rejection, Strategy};

    fn causes(obj: Value) -> Vec<String> {
        match STRATEGY.validate(&obj, None) {
            Ok(()) => Vec::new(),
            Err(Rejection::Invalid(c)) => c.iter().map(Cause::text).collect(),
            Err(Rejection::Decode(e)) => vec![e],
        }
    }

    #[test]
    fn validation_follows_kubernetes() {
        assert!(causes(
            json!({"metadata": {"name": "a"}, "spec": {"minAvailable": "50%",
            "selector": {"matchLabels": {"app": "web"}}}})
        )
        .is_empty());
        let both = causes(json!({"spec": {"minAvailable": 1, "maxUnavailable": 1}}));
        assert_eq!(both.len(), 1);
        assert!(both[0].ends_with("minAvailable and maxUnavailable cannot be both set"));
        assert_eq!(
            causes(json!({"spec": {"maxUnavailable": -1}})),
            vec!["spec.maxUnavailable: Invalid value: -1: must be greater than or equal to 0"]
        );
        assert_eq!(
            causes(json!({"spec": {"minAvailable": "150%"}})),
            vec!["spec.minAvailable: Invalid value: \"150%\": must not be greater than 100%"]
        );
        assert_eq!(causes(json!({"spec": {"minAvailable": "half"}})).len(), 1);
        assert_eq!(
            causes(json!({"spec": {"unhealthyPodEvictionPolicy": "Never"}})),
            vec!["spec.unhealthyPodEvictionPolicy: Unsupported value: \"Never\": supported values: \"AlwaysAllow\", \"IfHealthyBudget\""]
        );
    }

    #[test]
    fn columns_print_unset_bounds_as_na() {
        let pdb = json!({"metadata": {"name": "a"}, "spec": {"maxUnavailable": 1},
            "status": {"disruptionsAllowed": 2}});
        let c = cells(&pdb);
        assert_eq!(c[1], json!("N/A"));
        assert_eq!(c[2], json!("1"));
        assert_eq!(c[3], json!(2));
    }
}
