//! apps/v1: Deployments, ReplicaSets and DaemonSets.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{json, Value};

use super::{clear_status, col, containers_images, i, selector_text, Builtin, Column, Typed};
use crate::error::Cause;
use crate::registry::pod;
use crate::validation as v;

const AGE: &str =
    "CreationTimestamp is a timestamp representing the server time when this object was created.";
const NAME: &str = "Name must be unique within a namespace.";

/// The deployments resource.
pub static DEPLOYMENTS: Builtin = Builtin {
    group: "apps",
    version: "v1",
    kind: "Deployment",
    plural: "deployments",
    singular: "deployment",
    short_names: &["deploy"],
    categories: &["all"],
    namespaced: true,
    subresources: &[
        ("status", &super::subresource::STATUS),
        ("scale", &super::subresource::SCALE),
    ],
    selectable: &[],
    has_generation: true,
    strategy: &DEPLOY,
    schema: super::schema_of::<Deployment>,
};

/// The replicasets resource.
pub static REPLICASETS: Builtin = Builtin {
    group: "apps",
    version: "v1",
    kind: "ReplicaSet",
    plural: "replicasets",
    singular: "replicaset",
    short_names: &["rs"],
    categories: &["all"],
    namespaced: true,
    subresources: &[
        ("status", &super::subresource::STATUS),
        ("scale", &super::subresource::SCALE),
    ],
    selectable: &["status.replicas"],
    has_generation: true,
    strategy: &RS,
    schema: super::schema_of::<ReplicaSet>,
};

/// The daemonsets resource.
pub static DAEMONSETS: Builtin = Builtin {
    group: "apps",
    version: "v1",
    kind: "DaemonSet",
    plural: "daemonsets",
    singular: "daemonset",
    short_names: &["ds"],
    categories: &["all"],
    namespaced: true,
    subresources: &[("status", &super::subresource::STATUS)],
    selectable: &[],
    has_generation: true,
    strategy: &DS,
    schema: super::schema_of::<DaemonSet>,
};

static DEPLOY: Typed<Deployment> = Typed {
    status: true,
    defaults: deploy_defaults,
    validate: validate_deploy,
    validate_update: deploy_update,
    prepare_create: clear_status,
    ..Typed::new(deploy_columns, deploy_cells)
};

static RS: Typed<ReplicaSet> = Typed {
    status: true,
    defaults: rs_defaults,
    validate: validate_rs,
    validate_update: rs_update,
    prepare_create: clear_status,
    ..Typed::new(rs_columns, rs_cells)
};

static DS: Typed<DaemonSet> = Typed {
    status: true,
    defaults: ds_defaults,
    validate: validate_ds,
    validate_update: ds_update,
    prepare_create: clear_status,
    ..Typed::new(ds_columns, ds_cells)
};

fn default_template(t: &mut PodTemplateSpec) {
    if let Some(spec) = t.spec.as_mut() {
        pod::default_spec(spec);
    }
}

fn deploy_defaults(d: &mut Deployment) {
    let Some(spec) = d.spec.as_mut() else { return };
    spec.replicas.get_or_insert(1);
    spec.revision_history_limit.get_or_insert(10);
    spec.progress_deadline_seconds.get_or_insert(600);
    let strategy = spec.strategy.get_or_insert_with(Default::default);
    let ty = strategy.type_.get_or_insert_with(|| "RollingUpdate".into());
    if ty == "RollingUpdate" {
        let ru = strategy.rolling_update.get_or_insert_with(Default::default);
        ru.max_surge
            .get_or_insert(IntOrString::String("25%".into()));
        ru.max_unavailable
            .get_or_insert(IntOrString::String("25%".into()));
    }
    default_template(&mut spec.template);
}

fn rs_defaults(r: &mut ReplicaSet) {
    let Some(spec) = r.spec.as_mut() else { return };
    spec.replicas.get_or_insert(1);
    if let Some(t) = spec.template.as_mut() {
        default_template(t);
    }
}

fn ds_defaults(d: &mut DaemonSet) {
    let Some(spec) = d.spec.as_mut() else { return };
    spec.revision_history_limit.get_or_insert(10);
    let us = spec.update_strategy.get_or_insert_with(Default::default);
    let ty = us.type_.get_or_insert_with(|| "RollingUpdate".into());
    if ty == "RollingUpdate" {
        let ru = us.rolling_update.get_or_insert_with(Default::default);
        ru.max_unavailable.get_or_insert(IntOrString::Int(1));
        ru.max_surge.get_or_insert(IntOrString::Int(0));
    }
    default_template(&mut spec.template);
}

/// Validates a selector and a pod template that must carry its labels.
pub fn selector_and_template(
    selector: Option<&LabelSelector>,
    template: Option<&PodTemplateSpec>,
    template_field: &str,
    restart: &[&str],
    out: &mut Vec<Cause>,
) {
    match selector {
        None => out.push(Cause::required("spec.selector")),
        Some(sel)
            if sel.match_labels.as_ref().is_none_or(|m| m.is_empty())
                && sel.match_expressions.as_ref().is_none_or(|m| m.is_empty()) =>
        {
            out.push(Cause::invalid(
                "spec.selector",
                &v::val(sel),
                "empty selector is invalid for deployment",
            ))
        }
        Some(sel) => v::label_selector("spec.selector", sel, out),
    }
    let Some(t) = template else {
        out.push(Cause::required(template_field.to_string()));
        return;
    };
    let labels = t
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    if selector.is_some() && !skiff_rules::selector::matches(selector, Some(&labels)) {
        out.push(Cause::invalid(
            format!("{template_field}.metadata.labels"),
            &v::val(&labels),
            "`selector` does not match template `labels`",
        ));
    }
    pod_template(t, template_field, restart, out);
}

/// Validates a pod template at `template_field` (its labels and annotations, its pod spec,
/// a restart policy among `restart`): the rules every workload's template and a PodTemplate
/// follow.
pub fn pod_template(
    t: &PodTemplateSpec,
    template_field: &str,
    restart: &[&str],
    out: &mut Vec<Cause>,
) {
    let meta = t.metadata.as_ref();
    v::labels(
        &format!("{template_field}.metadata.labels"),
        Some(&meta.and_then(|m| m.labels.clone()).unwrap_or_default()),
        out,
    );
    v::annotations(
        &format!("{template_field}.metadata.annotations"),
        meta.and_then(|m| m.annotations.as_ref()),
        out,
    );
    match &t.spec {
        None => out.push(Cause::required(format!("{template_field}.spec"))),
        Some(spec) => {
            pod::validate_spec(&format!("{template_field}.spec"), spec, out);
            let rp = spec.restart_policy.as_deref().unwrap_or("Always");
            // A policy no pod may have is reported by the pod spec's own check.
            let any_pod = ["Always", "OnFailure", "Never"].contains(&rp);
            if any_pod && !restart.contains(&rp) {
                out.push(Cause::not_supported(
                    format!("{template_field}.spec.restartPolicy"),
                    rp,
                    restart,
                ));
            }
        }
    }
}

fn int_or_percent(field: &str, x: Option<&IntOrString>, out: &mut Vec<Cause>) {
    match x {
        Some(IntOrString::Int(n)) if *n < 0 => out.push(Cause::invalid(
            field,
            &json!(n),
            "must be greater than or equal to 0",
        )),
        Some(IntOrString::String(s)) => {
            let ok = s
                .strip_suffix('%')
                .and_then(|n| n.parse::<u32>().ok())
                .is_some();
            if !ok {
                out.push(Cause::invalid(field, &json!(s), "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')"));
            }
        }
        _ => {}
    }
}

fn validate_deploy(d: &Deployment) -> Vec<Cause> {
    let mut out = Vec::new();
    let Some(spec) = &d.spec else {
        out.push(Cause::required("spec"));
        return out;
    };
    v::non_negative("spec.replicas", spec.replicas.map(i64::from), &mut out);
    selector_and_template(
        Some(&spec.selector),
        Some(&spec.template),
        "spec.template",
        &["Always"],
        &mut out,
    );
    if let Some(st) = &spec.strategy {
        v::one_of(
            "spec.strategy.type",
            st.type_.as_deref(),
            &["Recreate", "RollingUpdate"],
            &mut out,
        );
        if st.type_.as_deref() == Some("Recreate") && st.rolling_update.is_some() {
            out.push(Cause::forbidden(
                "spec.strategy.rollingUpdate",
                "may not be specified when strategy `type` is 'Recreate'",
            ));
        }
        if let Some(ru) = &st.rolling_update {
            int_or_percent(
                "spec.strategy.rollingUpdate.maxSurge",
                ru.max_surge.as_ref(),
                &mut out,
            );
            int_or_percent(
                "spec.strategy.rollingUpdate.maxUnavailable",
                ru.max_unavailable.as_ref(),
                &mut out,
            );
            let zero = |x: &Option<IntOrString>| {
                matches!(x, Some(IntOrString::Int(0)))
                    || matches!(x, Some(IntOrString::String(s)) if s == "0%")
            };
            if zero(&ru.max_surge) && zero(&ru.max_unavailable) {
                out.push(Cause::invalid(
                    "spec.strategy.rollingUpdate.maxUnavailable",
                    &json!(0),
                    "may not be 0 when `maxSurge` is 0",
                ));
            }
        }
    }
    v::non_negative(
        "spec.minReadySeconds",
        spec.min_ready_seconds.map(i64::from),
        &mut out,
    );
    v::non_negative(
        "spec.revisionHistoryLimit",
        spec.revision_history_limit.map(i64::from),
        &mut out,
    );
    out
}

fn selector_immutable(new: Option<&LabelSelector>, old: Option<&LabelSelector>) -> Vec<Cause> {
    if new != old {
        vec![Cause::immutable("spec.selector")]
    } else {
        Vec::new()
    }
}

fn deploy_update(new: &Deployment, old: &Deployment) -> Vec<Cause> {
    selector_immutable(
        new.spec.as_ref().map(|s| &s.selector),
        old.spec.as_ref().map(|s| &s.selector),
    )
}

fn validate_rs(r: &ReplicaSet) -> Vec<Cause> {
    let mut out = Vec::new();
    let Some(spec) = &r.spec else {
        out.push(Cause::required("spec"));
        return out;
    };
    v::non_negative("spec.replicas", spec.replicas.map(i64::from), &mut out);
    selector_and_template(
        Some(&spec.selector),
        spec.template.as_ref(),
        "spec.template",
        &["Always"],
        &mut out,
    );
    out
}

fn rs_update(new: &ReplicaSet, old: &ReplicaSet) -> Vec<Cause> {
    selector_immutable(
        new.spec.as_ref().map(|s| &s.selector),
        old.spec.as_ref().map(|s| &s.selector),
    )
}

fn validate_ds(d: &DaemonSet) -> Vec<Cause> {
    let mut out = Vec::new();
    let Some(spec) = &d.spec else {
        out.push(Cause::required("spec"));
        return out;
    };
    selector_and_template(
        Some(&spec.selector),
        Some(&spec.template),
        "spec.template",
        &["Always"],
        &mut out,
    );
    if let Some(us) = &spec.update_strategy {
        v::one_of(
            "spec.updateStrategy.type",
            us.type_.as_deref(),
            &["OnDelete", "RollingUpdate"],
            &mut out,
        );
    }
    out
}

fn ds_update(new: &DaemonSet, old: &DaemonSet) -> Vec<Cause> {
    selector_immutable(
        new.spec.as_ref().map(|s| &s.selector),
        old.spec.as_ref().map(|s| &s.selector),
    )
}

fn wide(obj: &Value) -> [Value; 3] {
    let (c, im) = containers_images(obj, "/spec/template/spec/containers");
    [c, im, json!(selector_text(obj.pointer("/spec/selector")))]
}

fn wide_columns() -> [Column; 3] {
    [
        col(
            "Containers",
            "string",
            1,
            "Names of each container in the template.",
        ),
        col(
            "Images",
            "string",
            1,
            "Images referenced by each container in the template.",
        ),
        col("Selector", "string", 1, "Label selector for pods."),
    ]
}

fn deploy_columns() -> Vec<Column> {
    let mut c = vec![
        col("Name", "string", 0, NAME),
        col("Ready", "string", 0, "Number of the pod with ready state"),
        col("Up-to-date", "string", 0, "Total number of non-terminated pods targeted by this deployment that have the desired template spec."),
        col("Available", "string", 0, "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment."),
        col("Age", "string", 0, AGE),
    ];
    c.extend(wide_columns());
    c
}

fn deploy_cells(d: &Value) -> Vec<Value> {
    let mut c = vec![
        super::name(d),
        json!(format!(
            "{}/{}",
            i(d, "/status/readyReplicas"),
            i(d, "/spec/replicas")
        )),
        json!(i(d, "/status/updatedReplicas")),
        json!(i(d, "/status/availableReplicas")),
        super::age(d),
    ];
    c.extend(wide(d));
    c
}

fn rs_columns() -> Vec<Column> {
    let mut c = vec![
        col("Name", "string", 0, NAME),
        col("Desired", "integer", 0, "Number of desired pods."),
        col("Current", "integer", 0, "Number of actual replicas."),
        col("Ready", "integer", 0, "Number of ready replicas."),
        col("Age", "string", 0, AGE),
    ];
    c.extend(wide_columns());
    c
}

fn rs_cells(r: &Value) -> Vec<Value> {
    let mut c = vec![
        super::name(r),
        json!(i(r, "/spec/replicas")),
        json!(i(r, "/status/replicas")),
        json!(i(r, "/status/readyReplicas")),
        super::age(r),
    ];
    c.extend(wide(r));
    c
}

fn ds_columns() -> Vec<Column> {
    let mut c = vec![
        col("Name", "string", 0, NAME),
        col("Desired", "integer", 0, "The total number of nodes that should be running the daemon pod."),
        col("Current", "integer", 0, "The number of nodes that are running at least 1 daemon pod."),
        col("Ready", "integer", 0, "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and ready."),
        col("Up-to-date", "integer", 0, "The total number of nodes that are running updated daemon pod."),
        col("Available", "integer", 0, "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and available."),
        col("Node Selector", "string", 0, "NodeSelector is a selector which must be true for the pod to fit on a node."),
        col("Age", "string", 0, AGE),
    ];
    c.extend(wide_columns());
    c
}

fn ds_cells(d: &Value) -> Vec<Value> {
    let mut c = vec![
        super::name(d),
        json!(i(d, "/status/desiredNumberScheduled")),
        json!(i(d, "/status/currentNumberScheduled")),
        json!(i(d, "/status/numberReady")),
        json!(i(d, "/status/updatedNumberScheduled")),
        json!(i(d, "/status/numberAvailable")),
        json!(super::map_text(
            d.pointer("/spec/template/spec/nodeSelector")
        )),
        super::age(d),
    ];
    c.extend(wide(d));
    c
}
