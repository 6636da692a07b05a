//! API discovery: `/api`, `/apis`, group and group-version resource lists, and the aggregated
//! discovery documents (`apidiscovery.k8s.io/v2`) that kubectl 1.32 asks for first.

use std::sync::Arc;

use axum::body::Body;
use http::{header, Request, Response, StatusCode};
use serde_json::{json, Value};

use super::negotiate::{respond, Format};
use crate::error::{Error, Result};
use crate::registry::{Resource, ResourceInfo, Subresource};
use crate::state::State;

const AGGREGATED: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

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

/// The (group, version, kind) a subresource takes and returns.
fn subresource_kind<'a>(r: &'a ResourceInfo, sub: &dyn Subresource) -> (&'a str, &'a str, &'a str) {
    match sub.kind() {
        Some((g, v, k)) => (g, v, k),
        None => (&r.group, &r.version, &r.kind),
    }
}

fn resource_list(all: &[Resource], group: &str, version: &str) -> Value {
    let mut resources = Vec::new();
    for r in all
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
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
        resources.push(e);
        for (name, sub) in &r.subresources {
            let (g, v, k) = subresource_kind(r, &**sub);
            let mut s = json!({
                "name": format!("{}/{name}", r.plural),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": k,
                "verbs": sub.verbs(),
            });
            if g != r.group || v != r.version {
                s["group"] = json!(g);
                s["version"] = json!(v);
            }
            resources.push(s);
        }
    }
    if group.is_empty() {
        // The legacy binding endpoint.
        resources.push(json!({"name": "bindings", "singularName": "binding", "namespaced": true, "kind": "Binding", "verbs": ["create"]}));
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
            let resources: Vec<Value> = all
                .iter()
                .filter(|r| r.group == group && r.version == v)
                .map(|r| {
                    let mut e = json!({
                        "resource": r.plural,
                        "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
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
                    let subs: Vec<Value> = r
                        .subresources
                        .iter()
                        .map(|(name, sub)| {
                            let (g, v, k) = subresource_kind(r, &**sub);
                            json!({"subresource": name, "responseKind": {"group": g, "version": v, "kind": k}, "verbs": sub.verbs()})
                        })
                        .collect();
                    if !subs.is_empty() {
                        e["subresources"] = json!(subs);
                    }
                    e
                })
                .collect();
            json!({"version": v, "resources": resources, "freshness": "Current"})
        })
        .collect();
    json!({"metadata": {"name": group, "creationTimestamp": null}, "versions": versions})
}

fn wants_aggregated(req: &Request<hyper::body::Incoming>) -> bool {
    req.headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("as=APIGroupDiscoveryList") && a.contains("v=v2"))
}

fn aggregated(doc: Value) -> Result<Response<Body>> {
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, AGGREGATED)
        .header(header::VARY, "Accept")
        .body(Body::from(
            serde_json::to_vec(&doc).map_err(|e| Error::internal(e.to_string()))?,
        ))
        .expect("valid response"))
}

fn group_entry(all: &[Resource], g: &str) -> Value {
    let versions: Vec<Value> = versions_of(all, g)
        .iter()
        .map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
        .collect();
    json!({"name": g, "versions": versions, "preferredVersion": versions[0]})
}

/// Serves a discovery path.
pub fn serve(
    state: &Arc<State>,
    req: &Request<hyper::body::Incoming>,
    segs: &[String],
) -> Result<Response<Body>> {
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let all = state.store.resources();
    let all = &all[..];
    match segs.as_slice() {
        ["api"] => {
            if wants_aggregated(req) {
                return aggregated(json!({
                    "kind": "APIGroupDiscoveryList",
                    "apiVersion": "apidiscovery.k8s.io/v2",
                    "metadata": {},
                    "items": [aggregated_group(all, "")],
                }));
            }
            respond(
                StatusCode::OK,
                &json!({
                    "kind": "APIVersions",
                    "versions": ["v1"],
                    "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": state.advertise.clone()}],
                }),
                Format::Json,
            )
        }
        ["apis"] => {
            if wants_aggregated(req) {
                let items: Vec<Value> = groups(all)
                    .iter()
                    .map(|g| aggregated_group(all, g))
                    .collect();
                return aggregated(json!({
                    "kind": "APIGroupDiscoveryList",
                    "apiVersion": "apidiscovery.k8s.io/v2",
                    "metadata": {},
                    "items": items,
                }));
            }
            let list: Vec<Value> = groups(all).iter().map(|g| group_entry(all, g)).collect();
            respond(
                StatusCode::OK,
                &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": list}),
                Format::Json,
            )
        }
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
