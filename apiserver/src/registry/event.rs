//! Events (core/v1): what happened to which object.

use k8s_openapi::api::core::v1::Event;
use serde_json::{json, Value};

use super::{col, s, Builtin, Column, Typed};
use crate::error::Cause;

/// The events resource.
pub static INFO: Builtin = Builtin {
    group: "",
    version: "v1",
    kind: "Event",
    plural: "events",
    singular: "event",
    short_names: &["ev"],
    categories: &[],
    namespaced: true,
    subresources: &[],
    selectable: &[
        "involvedObject.kind",
        "involvedObject.namespace",
        "involvedObject.name",
        "involvedObject.uid",
        "involvedObject.apiVersion",
        "involvedObject.resourceVersion",
        "involvedObject.fieldPath",
        "reason",
        "reportingComponent",
        "source",
        "type",
    ],
    has_generation: false,
    strategy: &STRATEGY,
    schema: super::schema_of::<Event>,
};

static STRATEGY: Typed<Event> = Typed {
    validate,
    name_rule: super::NameRule::PathSegment,
    create_on_update: true,
    field,
    ..Typed::new(columns, cells)
};

fn validate(ev: &Event) -> Vec<Cause> {
    let mut out = Vec::new();
    if ev.involved_object.kind.as_deref().unwrap_or("").is_empty()
        && ev.involved_object.name.as_deref().unwrap_or("").is_empty()
    {
        out.push(Cause::required("involvedObject"));
    }
    if let Some(t) = ev.type_.as_deref() {
        if !t.is_empty() && t != "Normal" && t != "Warning" {
            out.push(Cause::not_supported("type", t, &["Normal", "Warning"]));
        }
    }
    out
}

fn columns() -> Vec<Column> {
    vec![
        col("Last Seen", "string", 0, "Time of the last occurrence"),
        col("Type", "string", 0, "Type of this event (Normal, Warning)"),
        col("Reason", "string", 0, "This should be a short, machine understandable string that gives the reason for the transition into the object's current status."),
        col("Object", "string", 0, "The object that this event is about"),
        col("Message", "string", 0, "A human-readable description of the status of this operation."),
        col("Source", "string", 1, "The component reporting this event."),
        col("First Seen", "string", 1, "The time at which the event was first recorded."),
        col("Count", "string", 1, "The number of times this event has occurred."),
        col("Name", "string", 1, "Name must be unique within a namespace."),
    ]
}

fn cells(ev: &Value) -> Vec<Value> {
    let last = [
        s(ev, "/lastTimestamp"),
        s(ev, "/eventTime"),
        s(ev, "/metadata/creationTimestamp"),
    ]
    .into_iter()
    .find(|t| !t.is_empty())
    .unwrap_or_default();
    let first = [
        s(ev, "/firstTimestamp"),
        s(ev, "/eventTime"),
        s(ev, "/metadata/creationTimestamp"),
    ]
    .into_iter()
    .find(|t| !t.is_empty())
    .unwrap_or_default();
    let kind = s(ev, "/involvedObject/kind").to_lowercase();
    let source = [s(ev, "/source/component"), s(ev, "/reportingComponent")]
        .into_iter()
        .find(|t| !t.is_empty())
        .unwrap_or_default();
    vec![
        json!(super::since(&last)),
        json!(s(ev, "/type")),
        json!(s(ev, "/reason")),
        json!(format!("{kind}/{}", s(ev, "/involvedObject/name"))),
        json!(s(ev, "/message")),
        json!(source),
        json!(super::since(&first)),
        json!(super::i(ev, "/count").max(1)),
        super::name(ev),
    ]
}

fn field(ev: &Value, f: &str) -> Option<String> {
    match f {
        "source" => Some(s(ev, "/source/component")),
        _ => None,
    }
}
