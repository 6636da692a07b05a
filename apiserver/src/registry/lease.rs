//! Leases (coordination.k8s.io/v1): node heartbeats and leader election.

use k8s_openapi::api::coordination::v1::Lease;
use serde_json::{json, Value};

use super::{col, s, Builtin, Column, Typed};
use crate::error::Cause;

/// The leases resource.
pub static INFO: Builtin = Builtin {
    group: "coordination.k8s.io",
    version: "v1",
    kind: "Lease",
    plural: "leases",
    singular: "lease",
    short_names: &[],
    categories: &[],
    namespaced: true,
    subresources: &[],
    selectable: &[],
    has_generation: false,
    strategy: &STRATEGY,
    schema: super::schema_of::<Lease>,
};

static STRATEGY: Typed<Lease> = Typed {
    validate,
    name_rule: super::NameRule::PathSegment,
    create_on_update: true,
    ..Typed::new(columns, cells)
};

fn validate(l: &Lease) -> Vec<Cause> {
    let mut out = Vec::new();
    if let Some(spec) = &l.spec {
        if let Some(d) = spec.lease_duration_seconds {
            if d <= 0 {
                out.push(Cause::invalid(
                    "spec.leaseDurationSeconds",
                    &json!(d),
                    "must be greater than 0",
                ));
            }
        }
        if let Some(t) = spec.lease_transitions {
            crate::validation::non_negative("spec.leaseTransitions", Some(t.into()), &mut out);
        }
    }
    out
}

fn columns() -> Vec<Column> {
    vec![
        col("Name", "string", 0, "Name must be unique within a namespace."),
        col("Holder", "string", 0, "The holder of the lease"),
        col("Age", "string", 0, "CreationTimestamp is a timestamp representing the server time when this object was created."),
    ]
}

fn cells(l: &Value) -> Vec<Value> {
    vec![
        super::name(l),
        json!(s(l, "/spec/holderIdentity")),
        super::age(l),
    ]
}
