//! API discovery: `/api`, `/apis`, group and group-version resource lists, and the aggregated
//! discovery documents (`apidiscovery.k8s.io/v2`) that kubectl 1.32 asks for first.

use std::sync::Arc;

use axum::body::Body;
use http::{header, Request, Response, StatusCode};
use serde_json::{json, Value};

use super::negotiate::{self, respond, Discovery, Format};
use crate::error::{Error, Result};
use crate::registry::{Resource, ResourceInfo, Subresource};
use crate::state::State;

/// The parameters that name the aggregated document's kind in its media type.
const AGGREGATED: &str = ";g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// The groups served, in discovery order (core is separate).
fn groups(all: &[Resource]) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    for r in all {
        if !r.group.is_empty() && !out.contains(&r.group.as_str()) {
            out.push(&r.group);
        }
    }
    out
}

fn versions_of<'a>(all: &'a [Resource], group: &str) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::new();
    for r in all.iter().filter(|r| r.group == group) {
        if !out.contains(&r.version.as_str()) {
            out.push(&r.version);
        }
    }
    out
}

/// Whether the resource is a custom resource's, served as its definition says rather than by a
/// compiled-in type. kube-apiserver's discovery names the group and version of what these take
/// and return, where for built-in types it leaves them empty when they are the resource's own.
fn custom(r: &ResourceInfo) -> bool {
    r.schema.is_none()
}

/// The (group, version, kind) a resource takes and returns, as discovery names it.
fn response_kind(r: &ResourceInfo) -> Value {
    if custom(r) {
        json!({"group": r.group, "version": r.version, "kind": r.kind})
    } else {
        json!({"group": "", "version": "", "kind": r.kind})
    }
}

/// The (group, version, kind) a subresource takes and returns, with the group and version left
/// empty where they are a built-in resource's own, as kube-apiserver writes them.
fn subresource_kind<'a>(r: &'a ResourceInfo, sub: &dyn Subresource) -> (&'a str, &'a str, &'a str) {
    match sub.kind() {
        Some((g, v, k)) if g != r.group || v != r.version || custom(r) => (g, v, k),
        Some((_, _, k)) => ("", "", k),
        None if custom(r) => (&r.group, &r.version, &r.kind),
        None => ("", "", &r.kind),
    }
}

/// The resources of a group/version, by name, as both documents list them.
fn resources_of<'a>(all: &'a [Resource], group: &str, version: &str) -> Vec<&'a Resource> {
    let mut out: Vec<&Resource> = all
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .collect();
    out.sort_by(|a, b| a.plural.cmp(&b.plural));
    out
}

/// A resource's subresources: a built-in resource's by name, as kube-apiserver sorts them; a
/// custom resource's `status` before `scale`, as its definition's handler lists them.
fn subresources_of(r: &ResourceInfo) -> Vec<(&str, &dyn Subresource)> {
    let mut out: Vec<(&str, &dyn Subresource)> = r
        .subresources
        .iter()
        .map(|(name, sub)| (name.as_str(), &**sub))
        .collect();
    if custom(r) {
        out.sort_by_key(|(name, _)| *name != "status");
    } else {
        out.sort_by(|a, b| a.0.cmp(b.0));
    }
    out
}

/// The legacy core binding endpoint (`POST /api/v1/namespaces/NS/bindings`), which both
/// documents list as a resource of its own.
const BINDINGS: (&str, &str) = ("bindings", "Binding");

fn resource_list(all: &[Resource], group: &str, version: &str) -> Value {
    let mut resources = Vec::new();
    if group.is_empty() {
        let (name, kind) = BINDINGS;
        resources.push(json!({"name": name, "singularName": "binding", "namespaced": true, "kind": kind, "verbs": ["create"]}));
    }
    for r in resources_of(all, group, version) {
        let mut e = json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": r.verbs(),
        });
        if !r.short_names.is_empty() {
            e["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            e["categories"] = json!(r.categories);
        }
        if let Some(hash) = &r.storage_version_hash {
            e["storageVersionHash"] = json!(hash);
        }
        resources.push(e);
        for (name, sub) in subresources_of(r) {
            let (g, v, k) = subresource_kind(r, sub);
            let mut s = json!({
                "name": format!("{}/{name}", r.plural),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": k,
                "verbs": sub.verbs(),
            });
            if (g, v) != ("", "") && (g, v) != (r.group.as_str(), r.version.as_str()) {
                s["group"] = json!(g);
                s["version"] = json!(v);
            }
            resources.push(s);
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources})
}

fn aggregated_group(all: &[Resource], group: &str) -> Value {
    let versions: Vec<Value> = versions_of(all, group)
        .into_iter()
        .map(|v| {
            let mut resources: Vec<Value> = Vec::new();
            if group.is_empty() {
                let (name, kind) = BINDINGS;
                resources.push(json!({
                    "resource": name,
                    "responseKind": {"group": "", "version": "", "kind": kind},
                    "scope": "Namespaced",
                    "singularResource": "binding",
                    "verbs": ["create"],
                }));
            }
            for r in resources_of(all, group, v) {
                let mut e = json!({
                    "resource": r.plural,
                    "responseKind": response_kind(r),
                    "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
                    "singularResource": r.singular,
                    "verbs": r.verbs(),
                });
                if !r.short_names.is_empty() {
                    e["shortNames"] = json!(r.short_names);
                }
                if !r.categories.is_empty() {
                    e["categories"] = json!(r.categories);
                }
                let subs: Vec<Value> = subresources_of(r)
                    .into_iter()
                    .map(|(name, sub)| {
                        let (g, v, k) = subresource_kind(r, sub);
                        json!({"subresource": name, "responseKind": {"group": g, "version": v, "kind": k}, "verbs": sub.verbs()})
                    })
                    .collect();
                if !subs.is_empty() {
                    e["subresources"] = json!(subs);
                }
                resources.push(e);
            }
            json!({"version": v, "resources": resources, "freshness": "Current"})
        })
        .collect();
    let metadata = if group.is_empty() {
        json!({})
    } else {
        json!({"name": group})
    };
    json!({"metadata": metadata, "versions": versions})
}

/// The aggregated document in `format`, with its media type naming the kind, an ETag, and 304
/// for a client that has it already, as kube-apiserver serves it.
fn aggregated(
    req: &Request<hyper::body::Incoming>,
    doc: Value,
    format: Format,
) -> Result<Response<Body>> {
    let (media, body) = match format {
        Format::Yaml => (
            "application/yaml",
            serde_norway::to_string(&doc)
                .map_err(|e| Error::internal(e.to_string()))?
                .into_bytes(),
        ),
        _ => (
            "application/json",
            serde_json::to_vec(&doc).map_err(|e| Error::internal(e.to_string()))?,
        ),
    };
    let etag = format!("\"{}\"", hex_digest(&body));
    let fresh = req
        .headers()
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|tag| tag.trim().trim_start_matches("W/") == etag);
    let response = Response::builder()
        .header(header::VARY, "Accept")
        .header(header::ETAG, &etag);
    let response = if fresh {
        response
            .status(StatusCode::NOT_MODIFIED)
            .body(Body::empty())
    } else {
        response
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, format!("{media}{AGGREGATED}"))
            .body(Body::from(body))
    };
    Ok(response.expect("valid response"))
}

/// A digest of a document, for its ETag.
fn hex_digest(body: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(body)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect()
}

/// A legacy document, saying that the path answers by `Accept`.
fn legacy(doc: &Value, format: Format) -> Result<Response<Body>> {
    let mut response = respond(StatusCode::OK, doc, format)?;
    response
        .headers_mut()
        .insert(header::VARY, http::HeaderValue::from_static("Accept"));
    Ok(response)
}

fn group_entry(all: &[Resource], g: &str) -> Value {
    let versions: Vec<Value> = versions_of(all, g)
        .iter()
        .map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
        .collect();
    json!({"name": g, "versions": versions, "preferredVersion": versions[0]})
}

/// Serves a discovery path. `/api` and `/apis` answer with the aggregated or the legacy
/// document by the `Accept` header ([`negotiate::discovery`]); a group or group/version path
/// answers with its legacy document.
pub fn serve(
    state: &Arc<State>,
    req: &Request<hyper::body::Incoming>,
    segs: &[String],
) -> Result<Response<Body>> {
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let all = state.store.resources();
    let all = &all[..];
    match segs.as_slice() {
        ["api"] => match negotiate::discovery(req.headers())? {
            Discovery::Aggregated(format) => aggregated(
                req,
                json!({
                    "kind": "APIGroupDiscoveryList",
                    "apiVersion": "apidiscovery.k8s.io/v2",
                    "metadata": {},
                    "items": [aggregated_group(all, "")],
                }),
                format,
            ),
            Discovery::Legacy(format) => legacy(
                &json!({
                    "kind": "APIVersions",
                    "versions": ["v1"],
                    "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": state.advertise.clone()}],
                }),
                format,
            ),
        },
        ["apis"] => match negotiate::discovery(req.headers())? {
            Discovery::Aggregated(format) => {
                let items: Vec<Value> = groups(all)
                    .iter()
                    .map(|g| aggregated_group(all, g))
                    .collect();
                aggregated(
                    req,
                    json!({
                        "kind": "APIGroupDiscoveryList",
                        "apiVersion": "apidiscovery.k8s.io/v2",
                        "metadata": {},
                        "items": items,
                    }),
                    format,
                )
            }
            Discovery::Legacy(format) => {
                let list: Vec<Value> = groups(all).iter().map(|g| group_entry(all, g)).collect();
                legacy(
                    &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": list}),
                    format,
                )
            }
        },
        ["api", "v1"] => respond(StatusCode::OK, &resource_list(all, "", "v1"), Format::Json),
        ["apis", g] if groups(all).contains(g) => {
            let mut e = group_entry(all, g);
            e["kind"] = json!("APIGroup");
            e["apiVersion"] = json!("v1");
            respond(StatusCode::OK, &e, Format::Json)
        }
        ["apis", g, v] if versions_of(all, g).contains(v) => {
            respond(StatusCode::OK, &resource_list(all, g, v), Format::Json)
        }
        _ => Err(Error::not_found_message(
            "the server could not find the requested resource",
        )),
    }
}
