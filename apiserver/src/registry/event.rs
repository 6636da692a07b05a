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

/// The events.k8s.io/v1 view of the same events: stored as core/v1 events, shown with the
/// newer field names (`regarding`, `note`, `reportingController`, `deprecated*`).
pub static EVENTS_V1: Builtin = Builtin {
    group: "events.k8s.io",
    version: "v1",
    kind: "Event",
    plural: "events",
    singular: "event",
    short_names: &["ev"],
    categories: &[],
    namespaced: true,
    subresources: &[],
    selectable: &[],
    has_generation: false,
    strategy: &EVENTS_V1_STRATEGY,
    schema: super::schema_of::<k8s_openapi::api::events::v1::Event>,
};

static EVENTS_V1_STRATEGY: Typed<k8s_openapi::api::events::v1::Event> = Typed {
    validate: validate_v1,
    name_rule: super::NameRule::PathSegment,
    create_on_update: true,
    ..Typed::new(columns, cells_v1)
};

/// The events.k8s.io/v1 events resource, over the core events' storage.
pub fn events_v1() -> super::ResourceInfo {
    super::ResourceInfo::from(&EVENTS_V1).with(|r| {
        r.storage = "events".into();
        r.convert = Some(super::Shared::Static(&CoreEvents));
        r.storage_version_hash = Some(super::storage_version_hash("", "v1", "Event"));
    })
}

/// Field names of events.k8s.io/v1 and the core/v1 fields they are stored as.
const RENAMED: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

/// events.k8s.io/v1 ⇄ core/v1, as Kubernetes converts them.
struct CoreEvents;

fn renamed(obj: &Value, api_version: &str, from_new: bool) -> Value {
    let Value::Object(m) = obj else {
        return obj.clone();
    };
    let mut out = serde_json::Map::new();
    for (k, v) in m {
        let key = RENAMED
            .iter()
            .find(|(new, old)| if from_new { new == k } else { old == k })
            .map(|(new, old)| if from_new { *old } else { *new })
            .unwrap_or(k.as_str());
        out.insert(key.to_string(), v.clone());
    }
    out.insert("apiVersion".into(), json!(api_version));
    Value::Object(out)
}

impl super::Convert for CoreEvents {
    fn to_stored<'a>(&'a self, objs: &'a mut [Value]) -> super::Converting<'a> {
        for o in objs {
            *o = renamed(o, "v1", true);
        }
        super::converted(Ok(()))
    }

    fn to_served<'a>(&'a self, stored: &'a mut [Value]) -> super::Converting<'a> {
        for o in stored {
            *o = renamed(o, "events.k8s.io/v1", false);
        }
        super::converted(Ok(()))
    }
}

fn cells_v1(ev: &Value) -> Vec<Value> {
    cells(&renamed(ev, "v1", true))
}

/// events.k8s.io/v1's rules for a new event (Kubernetes' `ValidateEventCreate`).
fn validate_v1(ev: &k8s_openapi::api::events::v1::Event) -> Vec<Cause> {
    let mut out = Vec::new();
    if ev.event_time.is_none() {
        out.push(Cause::required("eventTime"));
    }
    match ev.type_.as_deref().unwrap_or("") {
        "Normal" | "Warning" => {}
        t => out.push(Cause::not_supported("type", t, &["Normal", "Warning"])),
    }
    let required = [
        ("reportingController", ev.reporting_controller.as_deref()),
        ("reportingInstance", ev.reporting_instance.as_deref()),
        ("action", ev.action.as_deref()),
        ("reason", ev.reason.as_deref()),
    ];
    for (field, value) in required {
        match value.unwrap_or("") {
            "" => out.push(Cause::required(field)),
            v if v.len() > 128 => out.push(Cause::too_long(field, 128)),
            _ => {}
        }
    }
    if ev.note.as_deref().unwrap_or("").len() > 1024 {
        out.push(Cause::too_long("note", 1024));
    }
    out
}
