//! core/v1 ReplicationControllers: the ReplicaSet's predecessor, with an equality-based
//! selector (a plain label map). Defaults, validation and table columns as kube-apiserver's
//! (`pkg/apis/core/v1/defaults.go`, `ValidateReplicationController`, `printers.go`), with the
//! `status` and `scale` subresources.

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ReplicationController, ReplicationControllerStatus};
use serde_json::{json, Value};

use super::subresource::{Scale, SelectorForm};
use super::{apps, clear_status, col, containers_images, i, map_text, pod, Builtin, Column, Typed};
use crate::error::Cause;
use crate::validation as v;

/// The replicationcontrollers resource.
pub static INFO: Builtin = Builtin {
    group: "",
    version: "v1",
    kind: "ReplicationController",
    plural: "replicationcontrollers",
    singular: "replicationcontroller",
    short_names: &["rc"],
    categories: &["all"],
    namespaced: true,
    subresources: &[("status", &super::subresource::STATUS), ("scale", &SCALE)],
    selectable: &["status.replicas"],
    has_generation: true,
    strategy: &RC,
    schema: super::schema_of::<ReplicationController>,
};

/// A ReplicationController's `Scale`: its selector is a label map.
static SCALE: Scale = Scale {
    spec_replicas: Cow::Borrowed("/spec/replicas"),
    status_replicas: Cow::Borrowed("/status/replicas"),
    selector: Cow::Borrowed("/spec/selector"),
    selector_form: SelectorForm::Map,
};

static RC: Typed<ReplicationController> = Typed {
    status: true,
    defaults,
    validate,
    validate_update,
    prepare_create: clear_status,
    ..Typed::new(columns, cells)
};

/// Kubernetes' `SetDefaults_ReplicationController`: the selector and the controller's own
/// labels default to the template's labels, and `replicas` to 1.
fn defaults(rc: &mut ReplicationController) {
    let Some(spec) = rc.spec.as_mut() else { return };
    let labels = spec
        .template
        .as_ref()
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone());
    if let Some(labels) = labels {
        if spec.selector.as_ref().is_none_or(BTreeMap::is_empty) {
            spec.selector = Some(labels.clone());
        }
        if rc.metadata.labels.as_ref().is_none_or(BTreeMap::is_empty) {
            rc.metadata.labels = Some(labels);
        }
    }
    spec.replicas.get_or_insert(1);
    if let Some(spec) = spec.template.as_mut().and_then(|t| t.spec.as_mut()) {
        pod::default_spec(spec);
    }
}

/// Kubernetes' `ValidateReplicationControllerSpec` (and `ValidatePodTemplateSpecForRC`).
fn validate(rc: &ReplicationController) -> Vec<Cause> {
    let mut out = Vec::new();
    let Some(spec) = &rc.spec else {
        out.push(Cause::required("spec.selector"));
        out.push(Cause::required("spec.template"));
        return out;
    };
    v::non_negative(
        "spec.minReadySeconds",
        spec.min_ready_seconds.map(i64::from),
        &mut out,
    );
    let selector = spec.selector.clone().unwrap_or_default();
    if selector.is_empty() {
        out.push(Cause::required("spec.selector"));
    } else {
        v::labels("spec.selector", Some(&selector), &mut out);
    }
    v::non_negative("spec.replicas", spec.replicas.map(i64::from), &mut out);
    let Some(t) = &spec.template else {
        out.push(Cause::required("spec.template"));
        return out;
    };
    let labels = t
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    if !selector.is_empty() && !selector.iter().all(|(k, v)| labels.get(k) == Some(v)) {
        out.push(Cause::invalid(
            "spec.template.metadata.labels",
            &v::val(&labels),
            "`selector` does not match template `labels`",
        ));
    }
    apps::pod_template(t, "spec.template", &["Always"], &mut out);
    if t.spec
        .as_ref()
        .is_some_and(|s| s.active_deadline_seconds.is_some())
    {
        out.push(Cause::forbidden(
            "spec.template.spec.activeDeadlineSeconds",
            "activeDeadlineSeconds in ReplicationController is not Supported",
        ));
    }
    out
}

/// The selector may change (unlike a ReplicaSet's); a status written through `status` must
/// hold together (Kubernetes' `ValidateReplicationControllerStatus`).
fn validate_update(new: &ReplicationController, _old: &ReplicationController) -> Vec<Cause> {
    let mut out = Vec::new();
    if let Some(s) = &new.status {
        validate_status(s, &mut out);
    }
    out
}

fn validate_status(s: &ReplicationControllerStatus, out: &mut Vec<Cause>) {
    let replicas = i64::from(s.replicas);
    let fields = [
        ("status.replicas", Some(replicas)),
        (
            "status.fullyLabeledReplicas",
            s.fully_labeled_replicas.map(i64::from),
        ),
        ("status.readyReplicas", s.ready_replicas.map(i64::from)),
        (
            "status.availableReplicas",
            s.available_replicas.map(i64::from),
        ),
        ("status.observedGeneration", s.observed_generation),
    ];
    for (f, n) in fields {
        v::non_negative(f, n, out);
    }
    let at_most = |f: &str, n: Option<i32>, limit: i64, what: &str, out: &mut Vec<Cause>| {
        if let Some(n) = n.map(i64::from).filter(|n| *n > limit) {
            out.push(Cause::invalid(
                f,
                &json!(n),
                format!("cannot be greater than {what}"),
            ));
        }
    };
    at_most(
        "status.fullyLabeledReplicas",
        s.fully_labeled_replicas,
        replicas,
        "status.replicas",
        out,
    );
    at_most(
        "status.readyReplicas",
        s.ready_replicas,
        replicas,
        "status.replicas",
        out,
    );
    at_most(
        "status.availableReplicas",
        s.available_replicas,
        replicas,
        "status.replicas",
        out,
    );
    at_most(
        "status.availableReplicas",
        s.available_replicas,
        i64::from(s.ready_replicas.unwrap_or(0)),
        "status.readyReplicas",
        out,
    );
}

fn columns() -> Vec<Column> {
    vec![
        col("Name", "string", 0, "Name must be unique within a namespace."),
        col("Desired", "integer", 0, "Replicas is the number of desired replicas."),
        col("Current", "integer", 0, "Replicas is the most recently observed number of replicas."),
        col("Ready", "integer", 0, "The number of ready replicas for this replication controller."),
        col("Age", "string", 0, "CreationTimestamp is a timestamp representing the server time when this object was created."),
        col("Containers", "string", 1, "Names of each container in the template."),
        col("Images", "string", 1, "Images referenced by each container in the template."),
        col("Selector", "string", 1, "Selector is a label query over pods that should match the Replicas count."),
    ]
}

fn cells(rc: &Value) -> Vec<Value> {
    let (c, im) = containers_images(rc, "/spec/template/spec/containers");
    vec![
        super::name(rc),
        json!(i(rc, "/spec/replicas")),
        json!(i(rc, "/status/replicas")),
        json!(i(rc, "/status/readyReplicas")),
        super::age(rc),
        c,
        im,
        json!(map_text(rc.pointer("/spec/selector"))),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Strategy;

    fn rc(v: Value) -> Result<Value, Vec<Cause>> {
        let admitted = RC.default(v).map_err(|_| Vec::new())?;
        match RC.validate(&admitted.value, None) {
            Ok(()) => Ok(admitted.value),
            Err(crate::registry::Rejection::Invalid(c)) => Err(c),
            Err(crate::registry::Rejection::Decode(_)) => Err(Vec::new()),
        }
    }

    fn template(labels: Value) -> Value {
        json!({"metadata": {"labels": labels},
               "spec": {"containers": [{"name": "c", "image": "busybox"}]}})
    }

    #[test]
    fn selector_and_labels_default_from_the_template() {
        let v = rc(json!({"metadata": {"name": "r"},
                          "spec": {"template": template(json!({"app": "web"}))}}))
        .unwrap();
        assert_eq!(v["spec"]["selector"], json!({"app": "web"}));
        assert_eq!(v["metadata"]["labels"], json!({"app": "web"}));
        assert_eq!(v["spec"]["replicas"], json!(1));
        assert_eq!(
            v["spec"]["template"]["spec"]["restartPolicy"],
            json!("Always")
        );
    }

    #[test]
    fn a_selector_must_match_the_template_and_be_given() {
        let fields =
            |causes: Vec<Cause>| -> Vec<String> { causes.into_iter().map(|c| c.field).collect() };
        let e = rc(json!({"metadata": {"name": "r"}, "spec": {
            "selector": {"app": "db"}, "template": template(json!({"app": "web"}))}}))
        .unwrap_err();
        assert_eq!(fields(e), ["spec.template.metadata.labels"]);
        let e = rc(json!({"metadata": {"name": "r"}, "spec": {
            "template": template(json!({}))}}))
        .unwrap_err();
        assert_eq!(fields(e), ["spec.selector"]);
        let e =
            rc(json!({"metadata": {"name": "r"}, "spec": {"selector": {"a": "b"}}})).unwrap_err();
        assert_eq!(fields(e), ["spec.template"]);
        let mut t = template(json!({"a": "b"}));
        t["spec"]["restartPolicy"] = json!("Never");
        t["spec"]["activeDeadlineSeconds"] = json!(5);
        let e = rc(json!({"metadata": {"name": "r"}, "spec": {"replicas": -1, "template": t}}))
            .unwrap_err();
        assert_eq!(
            fields(e),
            [
                "spec.replicas",
                "spec.template.spec.restartPolicy",
                "spec.template.spec.activeDeadlineSeconds"
            ]
        );
    }

    #[test]
    fn a_status_may_not_count_more_ready_than_it_has() {
        let s: ReplicationControllerStatus =
            serde_json::from_value(json!({"replicas": 1, "readyReplicas": 2})).unwrap();
        let mut out = Vec::new();
        validate_status(&s, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].field, "status.readyReplicas");
    }

    #[test]
    fn the_scale_selector_is_the_label_map() {
        let obj = json!({"metadata": {"name": "r"}, "spec": {"replicas": 3,
            "selector": {"app": "web", "tier": "fe"}}, "status": {"replicas": 2}});
        let s = SCALE.of(&obj);
        assert_eq!(s["status"]["selector"], json!("app=web,tier=fe"));
        assert_eq!(s["spec"]["replicas"], json!(3));
    }
}
