//! Rendering objects and lists: plain JSON/YAML, `Table` (what `kubectl get` prints) and
//! `PartialObjectMetadata`.

use std::io::Write;
use std::sync::Arc;

use axum::body::Body;
use http::{header, Response, StatusCode};
use serde_json::{json, Value};

use super::negotiate::{respond, Format};
use crate::error::{Error, Result};
use crate::query::Query;
use crate::registry::{Printer, ResourceInfo};
use crate::request::Listed;
use crate::storage::cached::Cached;

/// What a table row carries besides its cells (`includeObject`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Include {
    /// Nothing.
    None,
    /// Metadata only.
    Metadata,
    /// The whole object.
    Object,
}

impl Include {
    /// From the `includeObject` parameter.
    pub fn parse(q: &Query) -> Result<Include> {
        match q.get("includeObject") {
            None | Some("") | Some("PartialObjectMetadata") => Ok(Include::Metadata),
            Some("Object") => Ok(Include::Object),
            Some("None") => Ok(Include::None),
            Some(o) => Err(Error::bad_request(format!(
                "includeObject: unsupported value {o:?}"
            ))),
        }
    }
}

/// The metadata-only view of an object.
pub fn partial(obj: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata").cloned().unwrap_or(json!({})),
    })
}

/// One table row.
pub fn row(p: &dyn Printer, obj: &Value, include: Include) -> Value {
    let mut row = json!({"cells": p.cells(obj)});
    match include {
        Include::None => {}
        Include::Metadata => row["object"] = partial(obj),
        Include::Object => row["object"] = obj.clone(),
    }
    row
}

/// Column definitions.
pub fn columns(p: &dyn Printer) -> Value {
    Value::Array(
        p.columns()
            .iter()
            .map(|c| {
                json!({
                    "name": c.name,
                    "type": c.kind,
                    "format": c.format,
                    "description": c.description,
                    "priority": c.priority,
                })
            })
            .collect(),
    )
}

/// A table of objects.
pub fn table<'a>(
    p: &dyn Printer,
    items: impl Iterator<Item = &'a Value>,
    include: Include,
    headers: bool,
    meta: Value,
) -> Value {
    let mut t = json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": meta,
        "rows": items.map(|o| row(p, o, include)).collect::<Vec<_>>(),
    });
    if headers {
        t["columnDefinitions"] = columns(p);
    }
    t
}

/// Responds with one object of a resource in the requested format.
pub fn respond_one(
    r: &ResourceInfo,
    obj: Value,
    format: &Format,
    q: &Query,
) -> Result<Response<Body>> {
    respond_printed(&*r.strategy, obj, format, q)
}

/// Responds with one object in the requested format, printed by `p` as a `Table`.
pub fn respond_printed(
    p: &dyn Printer,
    obj: Value,
    format: &Format,
    q: &Query,
) -> Result<Response<Body>> {
    match format {
        Format::Table => {
            let rv = obj
                .pointer("/metadata/resourceVersion")
                .cloned()
                .unwrap_or(json!(""));
            let t = table(
                p,
                std::iter::once(&obj),
                Include::parse(q)?,
                true,
                json!({"resourceVersion": rv}),
            );
            respond(StatusCode::OK, &t, Format::Json)
        }
        Format::PartialMeta => respond(StatusCode::OK, &partial(&obj), Format::Json),
        f => respond(StatusCode::OK, &obj, *f),
    }
}

fn list_meta(listed: &Listed) -> Value {
    let mut meta = json!({"resourceVersion": listed.rv.to_string()});
    if let Some(c) = &listed.continue_token {
        meta["continue"] = json!(c);
    }
    if let Some(n) = listed.remaining {
        meta["remainingItemCount"] = json!(n);
    }
    meta
}

/// Responds with a list in the requested format.
pub fn respond_list(
    r: &ResourceInfo,
    listed: Listed,
    format: &Format,
    q: &Query,
) -> Result<Response<Body>> {
    let meta = list_meta(&listed);
    match format {
        Format::Table => {
            let t = table(
                &*r.strategy,
                listed
                    .items
                    .iter()
                    .map(|a| a.value())
                    .collect::<Vec<_>>()
                    .iter(),
                Include::parse(q)?,
                true,
                meta,
            );
            respond(StatusCode::OK, &t, Format::Json)
        }
        Format::PartialMeta => {
            let l = json!({
                "kind": "PartialObjectMetadataList",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": meta,
                "items": listed.items.iter().map(|o| partial(&o.value())).collect::<Vec<_>>(),
            });
            respond(StatusCode::OK, &l, Format::Json)
        }
        Format::Yaml => {
            let l = json!({
                "kind": format!("{}List", r.kind),
                "apiVersion": r.api_version(),
                "metadata": meta,
                "items": listed.items.iter().map(|o| o.value()).collect::<Vec<_>>(),
            });
            respond(StatusCode::OK, &l, Format::Yaml)
        }
        Format::Json => Ok(Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(list_json(r, &meta, &listed.items)))
            .expect("valid response")),
    }
}

/// Responds with a list of objects made for the request (never stored: no resourceVersion,
/// no pages) in the requested format.
pub fn respond_values(
    r: &ResourceInfo,
    items: &[Value],
    format: &Format,
    q: &Query,
) -> Result<Response<Body>> {
    let meta = json!({});
    match format {
        Format::Table => {
            let t = table(&*r.strategy, items.iter(), Include::parse(q)?, true, meta);
            respond(StatusCode::OK, &t, Format::Json)
        }
        Format::PartialMeta => {
            let l = json!({
                "kind": "PartialObjectMetadataList",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": meta,
                "items": items.iter().map(partial).collect::<Vec<_>>(),
            });
            respond(StatusCode::OK, &l, Format::Json)
        }
        f => {
            let l = json!({
                "kind": format!("{}List", r.kind),
                "apiVersion": r.api_version(),
                "metadata": meta,
                "items": items,
            });
            respond(StatusCode::OK, &l, *f)
        }
    }
}

/// A list's JSON, written item by item without copying the items.
fn list_json(r: &ResourceInfo, meta: &Value, items: &[Arc<Cached>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + items.iter().map(|i| i.json.len() + 1).sum::<usize>());
    let _ = write!(
        out,
        "{{\"kind\":\"{}List\",\"apiVersion\":\"{}\",\"metadata\":{},\"items\":[",
        r.kind,
        r.api_version(),
        meta
    );
    for (n, item) in items.iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        out.extend_from_slice(&item.json);
    }
    out.extend_from_slice(b"]}");
    out
}
