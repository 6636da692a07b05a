//! API discovery: `/api`, `/apis`, group and group-version resource lists, and the aggregated
//! discovery documents (`apidiscovery.k8s.io/v2`) that kubectl 1.32 asks for first.

use std::sync::Arc;

use axum::body::Body;
use http::{header, Request, Response, StatusCode};
use serde_json::{json, Value};

use super::negotiate::{respond, Format};
use crate::error::{Error, Result};
use crate::registry::{self, ResourceInfo};
use crate::server::State;

const AGGREGATED: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// The groups served, in discovery order (core is separate).
fn groups() -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for r in registry::all() {
        if !r.group.is_empty() && !out.contains(&r.group) {
            out.push(r.group);
        }
    }
    out
}

fn versions_of(group: &str) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for r in registry::all().iter().filter(|r| r.group == group) {
        if !out.contains(&r.version) {
            out.push(r.version);
        }
    }
    out
}

fn subresource_verbs(sub: &str) -> &'static [&'static str] {
    match sub {
        "status" | "scale" | "finalize" => &["get", "patch", "update"],
        "binding" | "eviction" | "token" => &["create"],
        "log" => &["get"],
        "exec" | "attach" | "portforward" => &["create", "get"],
        "proxy" => &["create", "delete", "get", "patch", "update"],
        _ => &["get"],
    }
}

fn subresource_kind(r: &ResourceInfo, sub: &str) -> (String, String, String) {
    match sub {
        "scale" => ("autoscaling".into(), "v1".into(), "Scale".into()),
        "binding" => ("".into(), "v1".into(), "Binding".into()),
        "eviction" => ("policy".into(), "v1".into(), "Eviction".into()),
        "token" => (
            "authentication.k8s.io".into(),
            "v1".into(),
            "TokenRequest".into(),
        ),
        "log" | "exec" | "attach" | "portforward" | "proxy" => {
            ("".into(), "v1".into(), r.kind.into())
        }
        _ => (r.group.into(), r.version.into(), r.kind.into()),
    }
}

fn resource_list(group: &str, version: &str) -> Value {
    let mut resources = Vec::new();
    for r in registry::all()
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
        for sub in r.subresources {
            let (g, v, k) = subresource_kind(r, sub);
            let mut s = json!({
                "name": format!("{}/{sub}", r.plural),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": k,
                "verbs": subresource_verbs(sub),
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

fn aggregated_group(group: &str) -> Value {
    let versions: Vec<Value> = versions_of(group)
        .into_iter()
        .map(|v| {
            let resources: Vec<Value> = registry::all()
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
                        .map(|s| {
                            let (g, v, k) = subresource_kind(r, s);
                            json!({"subresource": s, "responseKind": {"group": g, "version": v, "kind": k}, "verbs": subresource_verbs(s)})
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

fn group_entry(g: &str) -> Value {
    let versions: Vec<Value> = versions_of(g)
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
    match segs.as_slice() {
        ["api"] => {
            if wants_aggregated(req) {
                return aggregated(json!({
                    "kind": "APIGroupDiscoveryList",
                    "apiVersion": "apidiscovery.k8s.io/v2",
                    "metadata": {},
                    "items": [aggregated_group("")],
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
                let items: Vec<Value> = groups().iter().map(|g| aggregated_group(g)).collect();
                return aggregated(json!({
                    "kind": "APIGroupDiscoveryList",
                    "apiVersion": "apidiscovery.k8s.io/v2",
                    "metadata": {},
                    "items": items,
                }));
            }
            let list: Vec<Value> = groups().iter().map(|g| group_entry(g)).collect();
            respond(
                StatusCode::OK,
                &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": list}),
                Format::Json,
            )
        }
        ["api", "v1"] => respond(StatusCode::OK, &resource_list("", "v1"), Format::Json),
        ["apis", g] if groups().contains(g) => {
            let mut e = group_entry(g);
            e["kind"] = json!("APIGroup");
            e["apiVersion"] = json!("v1");
            respond(StatusCode::OK, &e, Format::Json)
        }
        ["apis", g, v] if versions_of(g).contains(v) => {
            respond(StatusCode::OK, &resource_list(g, v), Format::Json)
        }
        _ => Err(Error::not_found_message(
            "the server could not find the requested resource",
        )),
    }
}
