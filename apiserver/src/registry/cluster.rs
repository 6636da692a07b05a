//! PriorityClasses (scheduling.k8s.io/v1): named pod priorities.

use k8s_openapi::api::scheduling::v1::PriorityClass;
use serde_json::{json, Value};

use super::{col, Builtin, Column, Typed};
use crate::error::Cause;

/// The priorityclasses resource.
pub static PRIORITYCLASSES: Builtin = Builtin {
    group: "scheduling.k8s.io",
    version: "v1",
    kind: "PriorityClass",
    plural: "priorityclasses",
    singular: "priorityclass",
    short_names: &["pc"],
    categories: &[],
    namespaced: false,
    subresources: &[],
    selectable: &[],
    has_generation: false,
    strategy: &STRATEGY,
    schema: super::schema_of::<PriorityClass>,
};

static STRATEGY: Typed<PriorityClass> = Typed {
    defaults,
    validate,
    validate_update,
    ..Typed::new(columns, cells)
};

fn defaults(pc: &mut PriorityClass) {
    pc.preemption_policy
        .get_or_insert_with(|| "PreemptLowerPriority".into());
}

fn validate(pc: &PriorityClass) -> Vec<Cause> {
    let mut out = Vec::new();
    if pc.value > 1_000_000_000
        && !pc
            .metadata
            .name
            .as_deref()
            .unwrap_or("")
            .starts_with("system-")
    {
        out.push(Cause::forbidden(
            "value",
            "maximum allowed value of a user defined priority is 1000000000",
        ));
    }
    crate::validation::one_of(
        "preemptionPolicy",
        pc.preemption_policy.as_deref(),
        &["Never", "PreemptLowerPriority"],
        &mut out,
    );
    out
}

fn validate_update(new: &PriorityClass, old: &PriorityClass) -> Vec<Cause> {
    if new.value != old.value {
        vec![Cause::forbidden(
            "value",
            "may not be changed in an update.",
        )]
    } else {
        Vec::new()
    }
}

fn columns() -> Vec<Column> {
    vec![
        col("Name", "string", 0, "Name must be unique within a namespace."),
        col("Value", "integer", 0, "value represents the integer value of this priority class."),
        col("Global-Default", "boolean", 0, "globalDefault specifies whether this PriorityClass should be considered as the default priority."),
        col("Preemption-Policy", "string", 0, "preemptionPolicy is the Policy for preempting pods with lower priority."),
        col("Age", "string", 0, "CreationTimestamp is a timestamp representing the server time when this object was created."),
    ]
}

fn cells(pc: &Value) -> Vec<Value> {
    vec![
        super::name(pc),
        json!(super::i(pc, "/value")),
        json!(pc
            .get("globalDefault")
            .and_then(Value::as_bool)
            .unwrap_or(false)),
        json!(super::s(pc, "/preemptionPolicy")),
        super::age(pc),
    ]
}
