//! apps/v1 ControllerRevisions: the immutable snapshots of a template that StatefulSets and
//! DaemonSets keep as their history (what `kubectl rollout history|undo` reads). `data` and
//! `revision` are validated as kube does; `data` never changes once written.

use k8s_openapi::api::apps::v1::ControllerRevision;
use serde_json::{json, Value};

use super::{col, i, Builtin, Column, Typed};
use crate::error::Cause;
use crate::validation as v;

/// The controllerrevisions resource.
pub static CONTROLLERREVISIONS: Builtin = Builtin {
    group: "apps",
    version: "v1",
    kind: "ControllerRevision",
    plural: "controllerrevisions",
    singular: "controllerrevision",
    short_names: &[],
    categories: &[],
    namespaced: true,
    subresources: &[],
    selectable: &[],
    has_generation: false,
    strategy: &CR,
    schema: super::schema_of::<ControllerRevision>,
};

static CR: Typed<ControllerRevision> = Typed {
    validate,
    validate_update,
    ..Typed::new(columns, cells)
};

fn validate(r: &ControllerRevision) -> Vec<Cause> {
    let mut out = Vec::new();
    if r.data.is_none() {
        out.push(Cause::required("data"));
    }
    v::non_negative("revision", Some(r.revision), &mut out);
    out
}

fn validate_update(new: &ControllerRevision, old: &ControllerRevision) -> Vec<Cause> {
    if new.data != old.data {
        return vec![Cause::immutable("data")];
    }
    Vec::new()
}

fn columns() -> Vec<Column> {
    vec![
        col("Name", "string", 0, "Name must be unique within a namespace."),
        col("Controller", "string", 0, "Controller of the object"),
        col("Revision", "integer", 0, "Revision indicates the revision of the state represented by Data."),
        col("Age", "string", 0, "CreationTimestamp is a timestamp representing the server time when this object was created."),
    ]
}

/// The controller as `kind.group/name`, as kubectl prints it.
fn controller(r: &Value) -> String {
    let Some(refs) = r
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
    else {
        return "<none>".into();
    };
    let Some(o) = refs.iter().find(|o| o["controller"] == json!(true)) else {
        return "<none>".into();
    };
    let kind = o["kind"].as_str().unwrap_or_default().to_lowercase();
    let group = o["apiVersion"]
        .as_str()
        .and_then(|a| a.rsplit_once('/').map(|(g, _)| g))
        .unwrap_or_default();
    let name = o["name"].as_str().unwrap_or_default();
    if group.is_empty() {
        format!("{kind}/{name}")
    } else {
        format!("{kind}.{group}/{name}")
    }
}

fn cells(r: &Value) -> Vec<Value> {
    vec![
        super::name(r),
        json!(controller(r)),
        json!(i(r, "/revision")),
        super::age(r),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controller_column_and_immutable_data() {
        let r = json!({"metadata": {"name": "web-5d8f", "ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web", "uid": "u", "controller": true}]},
            "revision": 2, "data": {"spec": {}}});
        assert_eq!(cells(&r)[1], json!("statefulset.apps/web"));
        let old: ControllerRevision = serde_json::from_value(r.clone()).unwrap();
        let mut new = old.clone();
        assert!(validate(&old).is_empty());
        new.revision = 3;
        assert!(validate_update(&new, &old).is_empty());
        new.data = Some(k8s_openapi::apimachinery::pkg::runtime::RawExtension(
            json!({"x": 1}),
        ));
        assert_eq!(
            validate_update(&new, &old)[0].text(),
            "data: field is immutable"
        );
    }
}
