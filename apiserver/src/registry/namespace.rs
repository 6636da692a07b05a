//! Namespaces: created `Active` with the `kubernetes` finalizer; deleting one moves it to
//! `Terminating` until it is empty.

use std::marker::PhantomData;

use k8s_openapi::api::core::v1::Namespace;
use serde_json::{json, Value};

use super::{col, no_field, no_validate_update, s, Column, ResourceInfo, Typed};
use crate::error::Cause;

/// The namespaces resource.
pub const INFO: ResourceInfo = ResourceInfo {
    group: "",
    version: "v1",
    kind: "Namespace",
    plural: "namespaces",
    singular: "namespace",
    short_names: &["ns"],
    categories: &[],
    namespaced: false,
    subresources: &["status", "finalize"],
    has_generation: false,
    strategy: &STRATEGY,
    schema: super::schema_of::<Namespace>,
};

static STRATEGY: Typed<Namespace> = Typed {
    status: true,
    defaults,
    validate,
    validate_update: no_validate_update,
    prepare_create,
    columns,
    cells,
    field: no_field,
    selectable: &["status.phase"],
    ty: PhantomData,
};

fn prepare_create(obj: &mut Value) {
    if let Some(o) = obj.as_object_mut() {
        o.insert("status".into(), json!({"phase": "Active"}));
        let spec = o.entry("spec").or_insert_with(|| json!({}));
        if spec.get("finalizers").is_none() {
            spec["finalizers"] = json!(["kubernetes"]);
        }
    }
}

fn defaults(ns: &mut Namespace) {
    // kube-apiserver labels every namespace with its own name.
    let name = ns.metadata.name.clone().unwrap_or_default();
    ns.metadata
        .labels
        .get_or_insert_with(Default::default)
        .insert("kubernetes.io/metadata.name".into(), name);
}

fn validate(_ns: &Namespace) -> Vec<Cause> {
    Vec::new()
}

fn columns() -> Vec<Column> {
    vec![
        col("Name", "string", 0, "Name must be unique within a namespace."),
        col("Status", "string", 0, "The status of the namespace"),
        col("Age", "string", 0, "CreationTimestamp is a timestamp representing the server time when this object was created."),
    ]
}

fn cells(ns: &Value) -> Vec<Value> {
    vec![
        super::name(ns),
        json!(s(ns, "/status/phase")),
        super::age(ns),
    ]
}
