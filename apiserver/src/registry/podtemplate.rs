//! core/v1 PodTemplates: stored pod templates, nothing runs from them. Their template follows
//! the rules of every workload's template (`ValidatePodTemplate`), and `generation` counts
//! changes to it.

use k8s_openapi::api::core::v1::PodTemplate;
use serde_json::{json, Value};

use super::{apps, col, containers_images, map_text, pod, Builtin, Column, Typed};
use crate::error::Cause;

/// The podtemplates resource.
pub static INFO: Builtin = Builtin {
    group: "",
    version: "v1",
    kind: "PodTemplate",
    plural: "podtemplates",
    singular: "podtemplate",
    short_names: &[],
    categories: &[],
    namespaced: true,
    subresources: &[],
    selectable: &[],
    has_generation: true,
    strategy: &PT,
    schema: super::schema_of::<PodTemplate>,
};

static PT: Typed<PodTemplate> = Typed {
    defaults,
    validate,
    ..Typed::new(columns, cells)
};

fn defaults(p: &mut PodTemplate) {
    if let Some(spec) = p.template.as_mut().and_then(|t| t.spec.as_mut()) {
        pod::default_spec(spec);
    }
}

fn validate(p: &PodTemplate) -> Vec<Cause> {
    let mut out = Vec::new();
    let template = p.template.clone().unwrap_or_default();
    apps::pod_template(
        &template,
        "template",
        &["Always", "OnFailure", "Never"],
        &mut out,
    );
    out
}

fn columns() -> Vec<Column> {
    vec![
        col(
            "Name",
            "string",
            0,
            "Name must be unique within a namespace.",
        ),
        col(
            "Containers",
            "string",
            0,
            "Names of each container in the template.",
        ),
        col(
            "Images",
            "string",
            0,
            "Images referenced by each container in the template.",
        ),
        col(
            "Pod Labels",
            "string",
            0,
            "The labels for the pod template.",
        ),
    ]
}

fn cells(p: &Value) -> Vec<Value> {
    let (c, im) = containers_images(p, "/template/spec/containers");
    vec![
        super::name(p),
        c,
        im,
        json!(map_text(p.pointer("/template/metadata/labels"))),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{Printer, Rejection, Strategy};

    #[test]
    fn the_template_is_validated_as_a_workload_template() {
        let ok = json!({"metadata": {"name": "t"}, "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}}});
        let admitted = PT.default(ok).unwrap();
        PT.validate(&admitted.value, None).unwrap();
        assert_eq!(
            PT.cells(&admitted.value)[1..],
            [json!("c"), json!("busybox"), json!("app=web")]
        );
        let bad = json!({"metadata": {"name": "t"}, "template": {
            "metadata": {"labels": {"-x": "y"}}, "spec": {"containers": []}}});
        let admitted = PT.default(bad).unwrap();
        let Err(Rejection::Invalid(causes)) = PT.validate(&admitted.value, None) else {
            panic!("accepted")
        };
        let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
        assert!(fields.contains(&"template.metadata.labels"), "{fields:?}");
        assert!(fields.contains(&"template.spec.containers"), "{fields:?}");
        let none = PT.default(json!({"metadata": {"name": "t"}})).unwrap();
        assert!(PT.validate(&none.value, None).is_err());
    }
}
