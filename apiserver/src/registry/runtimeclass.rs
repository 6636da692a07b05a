//! RuntimeClasses (node.k8s.io/v1): which container runtime configuration (the CRI handler)
//! runs a pod, what the runtime costs a pod beyond its containers (`overhead.podFixed`), and
//! which nodes have it (`scheduling`). Validation follows Kubernetes' `pkg/apis/node/validation`
//! with its messages and field paths; the table columns follow kube-apiserver's printers.
//!
//! What a RuntimeClass does to pods is the `RuntimeClass` admission plugin's (overhead and
//! scheduling) and the kubelet's (the handler).

use std::collections::HashSet;

use k8s_openapi::api::core::v1::Toleration;
use k8s_openapi::api::node::v1::RuntimeClass;
use serde_json::{json, Value};

use super::webhook_configuration::AGE;
use super::{col, s, Builtin, Column, Typed};
use crate::error::{Cause, CauseKind};
use crate::validation as v;

const NAME: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";
const HANDLER: &str = "handler specifies the underlying runtime and configuration that the CRI implementation will use to handle pods of this class. The possible values are specific to the node & CRI configuration.  It is assumed that all handlers are available on every node, and handlers of the same name are equivalent on every node. For example, a handler called \"runc\" might specify that the runc OCI runtime (using native Linux containers) will be used to run the containers in a pod. The Handler must be lowercase, conform to the DNS Label (RFC 1123) requirements, and is immutable.";

/// The runtimeclasses resource.
pub static RUNTIMECLASSES: Builtin = Builtin {
    group: "node.k8s.io",
    version: "v1",
    kind: "RuntimeClass",
    plural: "runtimeclasses",
    singular: "runtimeclass",
    short_names: &[],
    categories: &[],
    namespaced: false,
    subresources: &[],
    selectable: &[],
    has_generation: false,
    strategy: &STRATEGY,
    schema: super::schema_of::<RuntimeClass>,
};

static STRATEGY: Typed<RuntimeClass> = Typed {
    validate,
    validate_update,
    create_on_update: true,
    ..Typed::new(columns, cells)
};

fn validate(rc: &RuntimeClass) -> Vec<Cause> {
    let mut out = Vec::new();
    v::label_name("handler", &rc.handler, &mut out);
    if let Some(fixed) = rc.overhead.as_ref().and_then(|o| o.pod_fixed.as_ref()) {
        // Kubernetes checks the overhead as a container's limits, and names it so.
        for name in fixed.keys() {
            container_resource_name(&format!("overhead.limits[{name}]"), name, &mut out);
        }
        v::quantities("overhead.limits", Some(fixed), &mut out);
    }
    if let Some(s) = &rc.scheduling {
        if let Some(sel) = &s.node_selector {
            v::labels("scheduling.nodeSelector", Some(sel), &mut out);
        }
        tolerations(
            "scheduling.tolerations",
            s.tolerations.as_deref().unwrap_or_default(),
            &mut out,
        );
    }
    out
}

fn validate_update(new: &RuntimeClass, old: &RuntimeClass) -> Vec<Cause> {
    if new.handler != old.handler {
        vec![Cause::invalid(
            "handler",
            &json!(new.handler),
            "field is immutable",
        )]
    } else {
        Vec::new()
    }
}

/// A resource a container may ask for: a qualified name, and without a domain one of the
/// standard ones.
fn container_resource_name(field: &str, name: &str, out: &mut Vec<Cause>) {
    let before = out.len();
    v::qualified_name(field, &name.to_lowercase(), out);
    if out.len() > before {
        return;
    }
    let standard =
        matches!(name, "cpu" | "memory" | "ephemeral-storage") || name.starts_with("hugepages-");
    if !name.contains('/') && !standard {
        out.push(Cause::invalid(
            field,
            &json!(name),
            "must be a standard resource for containers",
        ));
    }
}

/// Kubernetes' toleration rules, and no two tolerations alike in key, operator, value and
/// effect.
fn tolerations(field: &str, list: &[Toleration], out: &mut Vec<Cause>) {
    let mut seen = HashSet::new();
    for (n, t) in list.iter().enumerate() {
        let f = format!("{field}[{n}]");
        let key = t.key.as_deref().unwrap_or("");
        let op = t.operator.as_deref().unwrap_or("");
        let value = t.value.as_deref().unwrap_or("");
        let effect = t.effect.as_deref().unwrap_or("");
        if !key.is_empty() {
            v::qualified_name(&format!("{f}.key"), key, out);
        }
        if key.is_empty() && op != "Exists" {
            out.push(Cause::invalid(
                format!("{f}.operator"),
                &json!(op),
                "operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
            ));
        }
        if t.toleration_seconds.is_some() && effect != "NoExecute" {
            out.push(Cause::invalid(
                format!("{f}.effect"),
                &json!(effect),
                "effect must be 'NoExecute' when `tolerationSeconds` is set",
            ));
        }
        match op {
            "Equal" | "" => v::label_value(&format!("{f}.operator"), value, out),
            "Exists" if !value.is_empty() => out.push(Cause {
                kind: CauseKind::Invalid,
                field: format!("{f}.operator"),
                message: format!(
                    "{}: value must be empty when `operator` is 'Exists'",
                    go_toleration(t)
                ),
            }),
            "Exists" => {}
            other => out.push(Cause::not_supported(
                format!("{f}.operator"),
                other,
                &["Equal", "Exists"],
            )),
        }
        if !effect.is_empty() {
            v::one_of(
                &format!("{f}.effect"),
                Some(effect),
                &["NoSchedule", "PreferNoSchedule", "NoExecute"],
                out,
            );
        }
        if !seen.insert((key, op, value, effect)) {
            out.push(Cause {
                kind: CauseKind::Duplicate,
                field: f,
                message: go_toleration(t),
            });
        }
    }
}

/// A toleration as kube-apiserver prints one in an error (Go's `%#v` of its internal type).
fn go_toleration(t: &Toleration) -> String {
    let seconds = match t.toleration_seconds {
        Some(s) => format!("(*int64)({s})"),
        None => "(*int64)(nil)".into(),
    };
    format!(
        "core.Toleration{{Key:{:?}, Operator:{:?}, Value:{:?}, Effect:{:?}, TolerationSeconds:{seconds}}}",
        t.key.as_deref().unwrap_or(""),
        t.operator.as_deref().unwrap_or(""),
        t.value.as_deref().unwrap_or(""),
        t.effect.as_deref().unwrap_or(""),
    )
}

fn columns() -> Vec<Column> {
    vec![
        col("Name", "string", 0, NAME),
        col("Handler", "string", 0, HANDLER),
        col("Age", "string", 0, AGE),
    ]
}

fn cells(rc: &Value) -> Vec<Value> {
    vec![super::name(rc), json!(s(rc, "/handler")), super::age(rc)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(c: Vec<Cause>) -> Vec<String> {
        c.iter().map(Cause::text).collect()
    }

    fn rc(v: Value) -> RuntimeClass {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_well_formed_class_is_valid() {
        let c = rc(json!({"metadata": {"name": "crun"}, "handler": "crun",
            "overhead": {"podFixed": {"cpu": "250m", "memory": "64Mi"}},
            "scheduling": {"nodeSelector": {"runtime": "crun"},
                "tolerations": [{"key": "runtime", "operator": "Equal", "value": "crun",
                    "effect": "NoSchedule"},
                    {"operator": "Exists"}]}}));
        assert!(validate(&c).is_empty(), "{:?}", texts(validate(&c)));
    }

    #[test]
    fn bad_handlers_overheads_and_scheduling_are_refused_in_kubernetes_words() {
        let c = rc(json!({"metadata": {"name": "x"}, "handler": "Not_A_Label",
            "overhead": {"podFixed": {"cpu": "-1", "gpu": "1"}},
            "scheduling": {"nodeSelector": {"bad key!": "v"},
                "tolerations": [{"operator": "Equal", "value": "v"},
                    {"key": "k", "operator": "Exists", "value": "v"},
                    {"key": "k", "operator": "Less"},
                    {"key": "k", "effect": "Sometimes", "tolerationSeconds": 5},
                    {"key": "a", "value": "b"}, {"key": "a", "value": "b"}]}}));
        let label = v::DNS1123_LABEL_MSG;
        assert_eq!(
            texts(validate(&c)),
            vec![
                format!("handler: Invalid value: \"Not_A_Label\": {label}"),
                "overhead.limits[gpu]: Invalid value: \"gpu\": must be a standard resource for containers".to_string(),
                "overhead.limits[cpu]: Invalid value: \"-1\": must be greater than or equal to 0".to_string(),
                "scheduling.nodeSelector: Invalid value: \"bad key!\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')".to_string(),
                "scheduling.tolerations[0].operator: Invalid value: \"Equal\": operator must be Exists when `key` is empty, which means \"match all values and all keys\"".to_string(),
                "scheduling.tolerations[1].operator: Invalid value: core.Toleration{Key:\"k\", Operator:\"Exists\", Value:\"v\", Effect:\"\", TolerationSeconds:(*int64)(nil)}: value must be empty when `operator` is 'Exists'".to_string(),
                "scheduling.tolerations[2].operator: Unsupported value: \"Less\": supported values: \"Equal\", \"Exists\"".to_string(),
                "scheduling.tolerations[3].effect: Invalid value: \"Sometimes\": effect must be 'NoExecute' when `tolerationSeconds` is set".to_string(),
                "scheduling.tolerations[3].effect: Unsupported value: \"Sometimes\": supported values: \"NoSchedule\", \"PreferNoSchedule\", \"NoExecute\"".to_string(),
                "scheduling.tolerations[5]: Duplicate value: core.Toleration{Key:\"a\", Operator:\"\", Value:\"b\", Effect:\"\", TolerationSeconds:(*int64)(nil)}".to_string(),
            ]
        );
        let empty = rc(json!({"metadata": {"name": "x"}}));
        assert_eq!(
            texts(validate(&empty)),
            vec![format!("handler: Invalid value: \"\": {label}")]
        );
    }

    #[test]
    fn the_handler_is_immutable() {
        let old = rc(json!({"metadata": {"name": "x"}, "handler": "runc"}));
        let new = rc(json!({"metadata": {"name": "x"}, "handler": "crun"}));
        assert_eq!(
            texts(validate_update(&new, &old)),
            vec!["handler: Invalid value: \"crun\": field is immutable"]
        );
        let relabelled = rc(json!({"metadata": {"name": "x", "labels": {"a": "b"}},
            "handler": "runc"}));
        assert!(validate_update(&relabelled, &old).is_empty());
    }

    #[test]
    fn rows_show_name_and_handler() {
        let cells = cells(&json!({"metadata": {"name": "fast"}, "handler": "crun"}));
        assert_eq!(cells[..2], [json!("fast"), json!("crun")]);
        assert_eq!(columns().len(), 3);
    }
}
