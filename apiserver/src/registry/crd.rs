//! CustomResourceDefinitions (apiextensions.k8s.io/v1): types defined at run time. This file
//! is the definition object's own strategy (defaults, validation, columns); what serves the
//! types they define is [`super::custom`] and `crate::crd`.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, CustomResourceDefinitionVersion,
};
use serde_json::{json, Value};

use super::{col, Builtin, Column, Typed};
use crate::error::Cause;
use crate::validation as v;

/// The finalizer that holds a definition until every object of its type is gone.
pub const CLEANUP_FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";

/// The customresourcedefinitions resource.
pub static INFO: Builtin = Builtin {
    group: "apiextensions.k8s.io",
    version: "v1",
    kind: "CustomResourceDefinition",
    plural: "customresourcedefinitions",
    singular: "customresourcedefinition",
    short_names: &["crd", "crds"],
    categories: &["api-extensions"],
    namespaced: false,
    subresources: &[("status", &super::subresource::STATUS)],
    selectable: &[],
    has_generation: true,
    strategy: &STRATEGY,
    schema: super::schema_of::<CustomResourceDefinition>,
};

/// The resource as served: stored where kube-apiserver keeps definitions.
pub fn info() -> super::ResourceInfo {
    super::ResourceInfo::from(&INFO).with(|r| {
        r.storage = "apiextensions.k8s.io/customresourcedefinitions".into();
    })
}

static STRATEGY: Typed<CustomResourceDefinition> = Typed {
    status: true,
    defaults,
    validate,
    validate_update,
    prepare_create,
    prepare_update,
    ..Typed::new(columns, cells)
};

fn columns() -> Vec<Column> {
    vec![
        col("Name", "string", 0, "Name must be unique within a namespace."),
        col(
            "Created At",
            "date",
            0,
            "CreationTimestamp is a timestamp representing the server time when this object was created.",
        ),
    ]
}

fn cells(obj: &Value) -> Vec<Value> {
    vec![
        super::name(obj),
        obj.pointer("/metadata/creationTimestamp")
            .cloned()
            .unwrap_or(Value::Null),
    ]
}

/// What kube-apiserver's create strategy does: a new definition starts with no status but
/// the storage version recorded, and is held by the clean-up finalizer.
fn prepare_create(obj: &mut Value) {
    let storage = storage_version(obj);
    obj["status"] = json!({
        "conditions": [],
        "acceptedNames": {"plural": "", "kind": ""},
        "storedVersions": storage.into_iter().collect::<Vec<_>>(),
    });
    let fins = &mut obj["metadata"]["finalizers"];
    if !fins.is_array() {
        *fins = json!([]);
    }
    if let Some(a) = fins.as_array_mut() {
        if !a.iter().any(|f| f == CLEANUP_FINALIZER) {
            a.push(json!(CLEANUP_FINALIZER));
        }
    }
}

/// A new storage version joins `status.storedVersions`.
fn prepare_update(new: &mut Value, old: &Value) {
    let mut stored: Vec<Value> = old
        .pointer("/status/storedVersions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if let Some(v) = storage_version(new) {
        if !stored.iter().any(|s| s == v.as_str()) {
            stored.push(json!(v));
        }
    }
    if let Some(status) = new.get_mut("status").filter(|s| s.is_object()) {
        status["storedVersions"] = json!(stored);
    }
}

fn storage_version(obj: &Value) -> Option<String> {
    obj.pointer("/spec/versions")?
        .as_array()?
        .iter()
        .find(|v| v.get("storage") == Some(&json!(true)))
        .and_then(|v| v.get("name"))
        .and_then(Value::as_str)
        .map(String::from)
}

fn defaults(crd: &mut CustomResourceDefinition) {
    let names = &mut crd.spec.names;
    if names.singular.as_deref().unwrap_or("").is_empty() {
        names.singular = Some(names.kind.to_lowercase());
    }
    if names.list_kind.as_deref().unwrap_or("").is_empty() && !names.kind.is_empty() {
        names.list_kind = Some(format!("{}List", names.kind));
    }
    let conversion = crd.spec.conversion.get_or_insert_with(Default::default);
    if conversion.strategy.is_empty() {
        conversion.strategy = "None".into();
    }
    for version in &mut crd.spec.versions {
        for c in version.additional_printer_columns.iter_mut().flatten() {
            if c.priority.is_none() {
                c.priority = Some(0);
            }
        }
    }
}

const KIND_RULE: &str =
    "may have mixed case, but should otherwise match: [a-z]([-a-z0-9]*[a-z0-9])?";
const PRINTER_TYPES: &[&str] = &["integer", "number", "string", "boolean", "date"];

fn validate(crd: &CustomResourceDefinition) -> Vec<Cause> {
    let mut out = Vec::new();
    let spec = &crd.spec;
    let name = crd.metadata.name.as_deref().unwrap_or("");
    if spec.group.is_empty() {
        out.push(Cause::required("spec.group"));
    } else {
        v::subdomain("spec.group", &spec.group, &mut out);
        if spec.group.split('.').count() < 2 {
            out.push(Cause::invalid(
                "spec.group",
                &json!(spec.group),
                "should be a domain with at least one dot",
            ));
        }
    }
    let expected = format!("{}.{}", spec.names.plural, spec.group);
    if name != expected {
        out.push(Cause::invalid(
            "metadata.name",
            &json!(name),
            "must be spec.names.plural+\".\"+spec.group",
        ));
    }
    validate_names(&spec.names, &mut out);
    match spec.scope.as_str() {
        "Namespaced" | "Cluster" => {}
        "" => out.push(Cause::required("spec.scope")),
        other => out.push(Cause::not_supported(
            "spec.scope",
            other,
            &["Cluster", "Namespaced"],
        )),
    }
    if let Some(c) = &spec.conversion {
        match c.strategy.as_str() {
            "None" => {
                if c.webhook.is_some() {
                    out.push(Cause::forbidden(
                        "spec.conversion.webhook",
                        "should not be set when strategy is not set to Webhook",
                    ));
                }
            }
            "Webhook" => out.push(Cause::invalid(
                "spec.conversion.strategy",
                &json!("Webhook"),
                "conversion webhooks are not supported by this server yet: use strategy None",
            )),
            other => out.push(Cause::not_supported(
                "spec.conversion.strategy",
                other,
                &["None", "Webhook"],
            )),
        }
    }
    validate_versions(spec.versions.as_slice(), &mut out);
    out
}

fn validate_names(
    names: &k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinitionNames,
    out: &mut Vec<Cause>,
) {
    let label = |field: &str, value: &str, out: &mut Vec<Cause>| {
        if !v::is_dns1035_label(value) {
            out.push(Cause::invalid(field, &json!(value), v::DNS1035_LABEL_MSG));
        }
    };
    if names.plural.is_empty() {
        out.push(Cause::required("spec.names.plural"));
    } else {
        label("spec.names.plural", &names.plural, out);
    }
    if let Some(s) = names.singular.as_deref().filter(|s| !s.is_empty()) {
        label("spec.names.singular", s, out);
    }
    let kind_ok = |k: &str| v::is_dns1035_label(&k.to_lowercase());
    if names.kind.is_empty() {
        out.push(Cause::required("spec.names.kind"));
    } else if !kind_ok(&names.kind) {
        out.push(Cause::invalid(
            "spec.names.kind",
            &json!(names.kind),
            KIND_RULE,
        ));
    }
    match names.list_kind.as_deref() {
        None | Some("") => out.push(Cause::required("spec.names.listKind")),
        Some(lk) if !kind_ok(lk) => {
            out.push(Cause::invalid("spec.names.listKind", &json!(lk), KIND_RULE))
        }
        Some(lk) if lk == names.kind => out.push(Cause::invalid(
            "spec.names.listKind",
            &json!(lk),
            "kind and listKind may not be the same or parsing become ambiguous",
        )),
        _ => {}
    }
    for (n, s) in names.short_names.iter().flatten().enumerate() {
        label(&format!("spec.names.shortNames[{n}]"), s, out);
    }
    for (n, c) in names.categories.iter().flatten().enumerate() {
        label(&format!("spec.names.categories[{n}]"), c, out);
    }
}

fn validate_versions(versions: &[CustomResourceDefinitionVersion], out: &mut Vec<Cause>) {
    if versions.is_empty() {
        out.push(Cause::invalid(
            "spec.versions",
            &json!([]),
            "must have exactly one version marked as storage version",
        ));
        return;
    }
    let storage = versions.iter().filter(|v| v.storage).count();
    if storage != 1 {
        out.push(Cause::invalid(
            "spec.versions",
            &v::val(&versions.iter().map(|v| &v.name).collect::<Vec<_>>()),
            "must have exactly one version marked as storage version",
        ));
    }
    if !versions.iter().any(|v| v.served) {
        out.push(Cause::invalid(
            "spec.versions",
            &v::val(&versions.iter().map(|v| &v.name).collect::<Vec<_>>()),
            "must have at least one version served",
        ));
    }
    let mut seen = Vec::new();
    for (n, version) in versions.iter().enumerate() {
        let at = format!("spec.versions[{n}]");
        if !v::is_dns1035_label(&version.name) {
            out.push(Cause::invalid(
                format!("{at}.name"),
                &json!(version.name),
                v::DNS1035_LABEL_MSG,
            ));
        }
        if seen.contains(&&version.name) {
            out.push(Cause::duplicate(format!("{at}.name"), &json!(version.name)));
        }
        seen.push(&version.name);
        match version
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
        {
            None => out.push(Cause::required(format!("{at}.schema.openAPIV3Schema"))),
            Some(schema) => {
                let json = v::val(schema);
                out.extend(super::custom::check_schema(
                    &format!("{at}.schema.openAPIV3Schema"),
                    &json,
                ));
            }
        }
        if let Some(scale) = version.subresources.as_ref().and_then(|s| s.scale.as_ref()) {
            let sat = format!("{at}.subresources.scale");
            let spec_path = &scale.spec_replicas_path;
            if !spec_path.starts_with(".spec") {
                out.push(Cause::invalid(
                    format!("{sat}.specReplicasPath"),
                    &json!(spec_path),
                    "should be a json path under .spec",
                ));
            }
            if !scale.status_replicas_path.starts_with(".status") {
                out.push(Cause::invalid(
                    format!("{sat}.statusReplicasPath"),
                    &json!(scale.status_replicas_path),
                    "should be a json path under .status",
                ));
            }
            if let Some(sel) = scale.label_selector_path.as_deref() {
                if !sel.starts_with(".spec") && !sel.starts_with(".status") {
                    out.push(Cause::invalid(
                        format!("{sat}.labelSelectorPath"),
                        &json!(sel),
                        "should be a json path under either .spec or .status",
                    ));
                }
            }
        }
        for (c, column) in version
            .additional_printer_columns
            .iter()
            .flatten()
            .enumerate()
        {
            let cat = format!("{at}.additionalPrinterColumns[{c}]");
            if column.name.is_empty() {
                out.push(Cause::required(format!("{cat}.name")));
            }
            if !PRINTER_TYPES.contains(&column.type_.as_str()) {
                out.push(Cause::not_supported(
                    format!("{cat}.type"),
                    &column.type_,
                    PRINTER_TYPES,
                ));
            }
            if column.json_path.is_empty() {
                out.push(Cause::required(format!("{cat}.JSONPath")));
            } else if let Err(e) = super::custom::check_json_path(&column.json_path) {
                out.push(Cause::invalid(
                    format!("{cat}.JSONPath"),
                    &json!(column.json_path),
                    e,
                ));
            }
        }
        for (f, field) in version.selectable_fields.iter().flatten().enumerate() {
            if !field.json_path.starts_with('.') {
                out.push(Cause::invalid(
                    format!("{at}.selectableFields[{f}].jsonPath"),
                    &json!(field.json_path),
                    "must be a simple json path starting with .",
                ));
            }
        }
    }
}

fn validate_update(new: &CustomResourceDefinition, old: &CustomResourceDefinition) -> Vec<Cause> {
    let mut out = Vec::new();
    if new.spec.scope != old.spec.scope {
        out.push(Cause::immutable("spec.scope"));
    }
    if new.spec.group != old.spec.group {
        out.push(Cause::immutable("spec.group"));
    }
    // Every version objects may still be stored in stays defined.
    let stored = new
        .status
        .as_ref()
        .and_then(|s| s.stored_versions.clone())
        .unwrap_or_default();
    for (n, s) in stored.iter().enumerate() {
        if !new.spec.versions.iter().any(|v| &v.name == s) {
            out.push(Cause::invalid(
                format!("status.storedVersions[{n}]"),
                &json!(s),
                "must appear in spec.versions",
            ));
        }
    }
    out
}
