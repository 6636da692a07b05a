//! OpenAPI v3 (per group-version) and v2 documents, for `kubectl explain`, kubectl's choice of
//! server-side field validation, and client tooling.
//!
//! Schemas come from k8s-openapi's own JSON schemas (with their descriptions); each resource's
//! schema carries `x-kubernetes-group-version-kind`, keyed lists carry the strategic-merge
//! extensions, and each resource has its paths with the query parameters the server honours.
//!
//! `/openapi/v2` is served as JSON or, for kubectl and client-go, as gnostic's protobuf
//! ([`gnostic`]), chosen by the `Accept` header as kube-openapi's handler chooses.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, LazyLock, OnceLock};

use axum::body::Body;
use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use schemars::generate::SchemaSettings;
use serde_json::{json, Map, Value};

use crate::error::{Error, Result};
use crate::registry::{Resource, ResourceInfo};

mod gnostic;

/// The OpenAPI documents, built on first use and again whenever what is served changes (a
/// CustomResourceDefinition comes or goes).
#[derive(Default)]
pub struct Docs {
    current: parking_lot::RwLock<Option<(u64, Arc<Generation>)>>,
}

/// The documents of one generation of what is served.
struct Generation {
    built: Built,
    /// The v2 document as protobuf, made from the JSON the first time a client asks for it.
    v2_protobuf: OnceLock<Result<Bytes, gnostic::Error>>,
}

struct Built {
    v3_index: Bytes,
    v3: BTreeMap<String, Bytes>,
    v2: Bytes,
}

/// What Kubernetes' published schemas of the built-in kinds carry that the Rust types' schemas
/// (k8s-openapi's) leave out: `default` values and the `x-kubernetes-*` extensions (list types
/// and map keys, patch strategies, map types, unions), by definition and JSON pointer into it.
/// Made by `scripts/kube-fixtures.py` from kube-apiserver v1.33's OpenAPI v3 documents.
static ANNOTATIONS: LazyLock<Map<String, Value>> =
    LazyLock::new(|| serde_json::from_str(include_str!("annotations.json")).unwrap_or_default());

fn hash_of(b: &[u8]) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    b.hash(&mut h);
    format!("{:016X}", h.finish())
}

fn group_versions(all: &[Resource]) -> Vec<(&str, &str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for r in all {
        if !out.contains(&(r.group.as_str(), r.version.as_str())) {
            out.push((&r.group, &r.version));
        }
    }
    out
}

/// The definition name kube-apiserver gives a custom resource's schema: the group's labels
/// reversed, the version and the kind (`com.example.stable.v1.CronTab`).
fn custom_definition_name(r: &ResourceInfo) -> String {
    let mut group: Vec<&str> = r.group.split('.').collect();
    group.reverse();
    format!("{}.{}.{}", group.join("."), r.version, r.kind)
}

/// A custom resource's definition: its schema, with `apiVersion`, `kind` and `metadata` as
/// every kind has them.
fn custom_definition(schema: &Value, meta: schemars::Schema) -> Value {
    let mut def = schema.clone();
    if !def.is_object() {
        def = json!({"type": "object"});
    }
    let props = def
        .as_object_mut()
        .map(|o| o.entry("properties").or_insert_with(|| json!({})));
    if let Some(Value::Object(props)) = props {
        props.insert("apiVersion".into(), json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources"}));
        props.insert("kind".into(), json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds"}));
        let mut meta = serde_json::to_value(meta).unwrap_or(Value::Null);
        if let Some(o) = meta.as_object_mut() {
            o.insert("description".into(), json!("Standard object's metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata"));
        }
        props.insert("metadata".into(), meta);
    }
    def
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// Adds to each definition what Kubernetes publishes for it beyond k8s-openapi's schema, then
/// puts every reference that has words beside it (a description, a default) under `allOf`, as
/// OpenAPI 3.0 wants and kube-apiserver writes it.
fn annotate(defs: &mut Map<String, Value>) {
    for (name, def) in defs.iter_mut() {
        kube_form(name, def);
        if let Some(Value::Object(at)) = ANNOTATIONS.get(name) {
            for (pointer, keys) in at {
                if let (Some(Value::Object(target)), Value::Object(keys)) =
                    (def.pointer_mut(pointer), keys)
                {
                    for (k, v) in keys {
                        match (k.as_str(), v) {
                            ("required", Value::Array(a)) if a.is_empty() => {
                                target.shift_remove("required");
                            }
                            _ => {
                                target.insert(k.clone(), v.clone());
                            }
                        }
                    }
                }
            }
        }
        wrap_refs(def);
    }
}

/// The few definitions whose JSON form the Rust types describe otherwise than Kubernetes does,
/// written as Kubernetes publishes them: an int-or-string as `oneOf` integer or string (with its
/// format), a quantity as `oneOf` string or number, and the apiextensions values of any JSON
/// (`JSON`, `JSONSchemaPropsOr*`) with no type at all.
fn kube_form(name: &str, def: &mut Value) {
    let Some(m) = def.as_object_mut() else {
        return;
    };
    match name {
        "io.k8s.apimachinery.pkg.util.intstr.IntOrString" => {
            m.shift_remove("x-kubernetes-int-or-string");
            m.shift_remove("type");
            m.insert("format".into(), json!("int-or-string"));
            m.insert(
                "oneOf".into(),
                json!([{"type": "integer"}, {"type": "string"}]),
            );
        }
        "io.k8s.apimachinery.pkg.api.resource.Quantity" => {
            m.shift_remove("x-kubernetes-int-or-string");
            m.shift_remove("type");
            m.insert(
                "oneOf".into(),
                json!([{"type": "string"}, {"type": "number"}]),
            );
        }
        "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSON"
        | "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSONSchemaPropsOrArray"
        | "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSONSchemaPropsOrBool"
        | "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSONSchemaPropsOrStringArray" => {
            for k in [
                "type",
                "oneOf",
                "anyOf",
                "x-kubernetes-preserve-unknown-fields",
            ] {
                m.shift_remove(k);
            }
        }
        _ => {}
    }
}

/// `{"$ref": X, "description": ..}` → `{"allOf": [{"$ref": X}], "description": ..}`, throughout a
/// schema (but inside extension values, which are data).
fn wrap_refs(v: &mut Value) {
    match v {
        Value::Object(m) => {
            if m.len() > 1 {
                if let Some(r) = m.shift_remove("$ref") {
                    m.insert("allOf".into(), json!([{"$ref": r}]));
                }
            }
            for (k, child) in m.iter_mut() {
                match (k.as_str(), child) {
                    // Schemas by name (a property may be called `$ref`): each is a schema.
                    ("properties" | "patternProperties", Value::Object(named)) => {
                        named.values_mut().for_each(wrap_refs)
                    }
                    (k, _) if k.starts_with("x-") => {}
                    (_, child) => wrap_refs(child),
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(wrap_refs),
        _ => {}
    }
}

fn query(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "query", "description": description, "schema": {"type": "string", "uniqueItems": true}})
}

fn path_param(name: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "schema": {"type": "string", "uniqueItems": true}})
}

fn operation(
    r: &ResourceInfo,
    action: &str,
    verb: &str,
    schema_ref: &Value,
    params: Vec<Value>,
    body: bool,
) -> Value {
    let scope = if r.namespaced { "Namespaced" } else { "" };
    let mut op = json!({
        "tags": [format!("{}{}", if r.group.is_empty() { "core" } else { &r.group }, r.version)],
        "description": format!("{verb} the specified {}", r.kind),
        "operationId": format!("{verb}{scope}{}", r.kind),
        "parameters": params,
        "responses": {
            "200": {"description": "OK", "content": {"application/json": {"schema": schema_ref}}},
            "401": {"description": "Unauthorized"},
        },
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": r.group, "version": r.version, "kind": r.kind},
    });
    if body {
        op["requestBody"] = json!({"content": {"*/*": {"schema": schema_ref}}, "required": true});
    }
    op
}

fn write_params() -> Vec<Value> {
    vec![
        query("dryRun", "When present, indicates that modifications should not be persisted. Valid values: All"),
        query("fieldManager", "fieldManager is a name associated with the actor or entity that is making these changes."),
        query("fieldValidation", "Ignore, Warn or Strict: what to do with unknown or duplicate fields."),
    ]
}

fn paths(r: &ResourceInfo, schema_ref: &Value, out: &mut Map<String, Value>) {
    let base = format!("/{}", gv_path(&r.group, &r.version));
    let coll = if r.namespaced {
        format!("{base}/namespaces/{{namespace}}/{}", r.plural)
    } else {
        format!("{base}/{}", r.plural)
    };
    let mut scope_params = Vec::new();
    if r.namespaced {
        scope_params.push(path_param("namespace"));
    }
    let mut list_params = scope_params.clone();
    for (n, d) in [
        ("labelSelector", "A selector to restrict the list of returned objects by their labels."),
        ("fieldSelector", "A selector to restrict the list of returned objects by their fields."),
        ("limit", "limit is a maximum number of responses to return for a list call."),
        ("continue", "The continue option should be set when retrieving more results from the server."),
        ("resourceVersion", "resourceVersion sets a constraint on what resource versions a request may be served from."),
        ("resourceVersionMatch", "resourceVersionMatch determines how resourceVersion is applied to list calls."),
        ("watch", "Watch for changes to the described resources and return them as a stream of add, update, and remove notifications."),
        ("allowWatchBookmarks", "allowWatchBookmarks requests watch events with type \"BOOKMARK\"."),
        ("timeoutSeconds", "Timeout for the list/watch call."),
    ] {
        list_params.push(query(n, d));
    }
    let mut create_params = scope_params.clone();
    create_params.extend(write_params());
    if r.create_only.is_some() {
        // A review is only ever created: one operation, as kube-apiserver publishes it.
        out.insert(
            coll,
            json!({"post": operation(r, "post", "create", schema_ref, create_params, true)}),
        );
        return;
    }
    if r.computed.is_some() {
        // Worked out when read (component statuses): list and get alone.
        let mut item_params = scope_params;
        item_params.push(path_param("name"));
        out.insert(
            coll.clone(),
            json!({"get": operation(r, "list", "list", &json!({"type": "object"}), list_params, false)}),
        );
        out.insert(
            format!("{coll}/{{name}}"),
            json!({"get": operation(r, "get", "read", schema_ref, item_params, false)}),
        );
        return;
    }
    out.insert(
        coll.clone(),
        json!({
            "get": operation(r, "list", "list", &json!({"type": "object"}), list_params, false),
            "post": operation(r, "post", "create", schema_ref, create_params.clone(), true),
        }),
    );
    let mut item_params = scope_params;
    item_params.push(path_param("name"));
    let mut patch_params = item_params.clone();
    patch_params.extend(write_params());
    patch_params.push(query(
        "force",
        "Force is going to \"force\" Apply requests.",
    ));
    let mut put_params = item_params.clone();
    put_params.extend(write_params());
    let mut delete_params = item_params.clone();
    for (n, d) in [
        ("gracePeriodSeconds", "The duration in seconds before the object should be deleted."),
        ("propagationPolicy", "Whether and how garbage collection will be performed: Orphan, Background or Foreground."),
        ("dryRun", "When present, indicates that modifications should not be persisted."),
    ] {
        delete_params.push(query(n, d));
    }
    let mut patch = operation(r, "patch", "patch", schema_ref, patch_params, false);
    // A custom resource has no patch strategies and refuses strategic merge patches, so its
    // documents leave them out as kube-apiserver's do: kubectl's client-side apply picks a
    // strategic merge patch only where the document offers one, a JSON merge patch otherwise.
    let content: Map<String, Value> = [
        "application/json-patch+json",
        "application/merge-patch+json",
        "application/strategic-merge-patch+json",
        "application/apply-patch+yaml",
    ]
    .into_iter()
    .filter(|t| r.json_schema.is_none() || !t.starts_with("application/strategic-merge-patch"))
    .map(|t| (t.to_string(), json!({"schema": {"type": "object"}})))
    .collect();
    patch["requestBody"] = json!({"content": content, "required": true});
    out.insert(
        format!("{coll}/{{name}}"),
        json!({
            "get": operation(r, "get", "read", schema_ref, item_params, false),
            "put": operation(r, "put", "replace", schema_ref, put_params, true),
            "patch": patch,
            "delete": operation(r, "delete", "delete", &json!({"type": "object"}), delete_params, false),
        }),
    );
}

/// Turns OpenAPI 3 schemas into Swagger 2.0 ones: references point into `#/definitions/`, and a
/// described reference is `$ref` beside its `description`, as kube-apiserver writes v2, rather
/// than the `allOf: [{$ref}]` OpenAPI 3 needs. kube-openapi's v2 reader, which kubectl uses for
/// client-side validation and patch metadata, takes a schema with only `allOf` for "anything".
fn to_swagger2(v: &mut Value) {
    match v {
        Value::Object(m) => {
            let lone_ref = match m.get("allOf") {
                Some(Value::Array(all)) => match all.as_slice() {
                    [Value::Object(only)] if only.len() == 1 => only.get("$ref").cloned(),
                    _ => None,
                },
                _ => None,
            };
            if let Some(r) = lone_ref {
                if !["$ref", "type", "properties"]
                    .iter()
                    .any(|k| m.contains_key(*k))
                {
                    m.shift_remove("allOf");
                    m.insert("$ref".into(), r);
                }
            }
            if let Some(Value::String(r)) = m.get_mut("$ref") {
                if let Some(name) = r.strip_prefix("#/components/schemas/") {
                    *r = format!("#/definitions/{name}");
                }
            }
            // A choice of plain types (an int-or-string, a quantity) is a string in Swagger
            // 2.0, as kube-apiserver writes it there.
            let plain: Option<Vec<&str>> = match m.get("oneOf") {
                Some(Value::Array(one)) => one
                    .iter()
                    .map(|o| match o.as_object() {
                        Some(o) if o.len() == 1 => o.get("type").and_then(Value::as_str),
                        _ => None,
                    })
                    .collect(),
                _ => None,
            };
            if let Some(types) = plain.filter(|t| !t.is_empty()) {
                if !m.contains_key("type") {
                    let t = if types.contains(&"string") {
                        "string"
                    } else {
                        types[0]
                    };
                    m.insert("type".into(), json!(t));
                }
            }
            // OpenAPI 3 words Swagger 2.0 has not: kube-apiserver leaves them out of v2 (a
            // JSONSchemaPropsOrBool is published untyped; a custom resource's value
            // validations are dropped).
            let drop: Vec<&str> = [("oneOf", true), ("anyOf", true), ("not", false)]
                .into_iter()
                .filter(|(k, list)| match m.get(*k) {
                    Some(Value::Array(_)) => *list,
                    Some(Value::Object(_)) => !*list,
                    _ => false,
                })
                .map(|(k, _)| k)
                .chain(
                    m.get("nullable")
                        .and_then(Value::as_bool)
                        .map(|_| "nullable"),
                )
                .collect();
            for k in drop {
                m.shift_remove(k);
            }
            for (k, child) in m.iter_mut() {
                match (k.as_str(), child) {
                    ("properties" | "definitions", Value::Object(named)) => {
                        named.values_mut().for_each(to_swagger2)
                    }
                    (_, child) => to_swagger2(child),
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(to_swagger2),
        _ => {}
    }
}

fn build(all: &[Resource]) -> Built {
    let info = json!({"title": "Kubernetes", "version": crate::version::version()["gitVersion"]});
    let mut v3 = BTreeMap::new();
    let mut index = Map::new();
    let mut all_defs = Map::new();
    for (group, version) in group_versions(all) {
        let mut generator = SchemaSettings::openapi3().into_generator();
        let mut paths_map = Map::new();
        let mut roots = Vec::new();
        let mut custom = Vec::new();
        for r in all
            .iter()
            .filter(|r| r.group == group && r.version == version)
        {
            let schema = match (r.schema, &r.json_schema) {
                (Some(schema_of), _) => {
                    serde_json::to_value(schema_of(&mut generator)).unwrap_or(Value::Null)
                }
                (None, Some(json_schema)) => {
                    let meta = generator.subschema_for::<
                        k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
                    >();
                    let name = custom_definition_name(r);
                    custom.push((name.clone(), custom_definition(json_schema, meta)));
                    json!({"$ref": format!("#/components/schemas/{name}")})
                }
                (None, None) => continue,
            };
            paths(r, &schema, &mut paths_map);
            if let Some(name) = schema
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|s| s.rsplit('/').next())
            {
                roots.push((name.to_string(), r));
            }
        }
        if group.is_empty() {
            // The legacy `bindings` resource (and pods' `binding`) takes a Binding.
            generator.subschema_for::<k8s_openapi::api::core::v1::Binding>();
        }
        let mut defs = generator.take_definitions(true);
        for (name, def) in custom {
            defs.insert(name, def);
        }
        for (name, r) in roots {
            if let Some(d) = defs.get_mut(&name) {
                d["x-kubernetes-group-version-kind"] =
                    json!([{"group": r.group, "version": r.version, "kind": r.kind}]);
                // A kind's metadata is never required in kube-apiserver's documents (a review
                // is sent without any); kubectl validates against these when it cannot leave it
                // to the server.
                if let Some(o) = d.as_object_mut() {
                    if let Some(Value::Array(req)) = o.get_mut("required") {
                        req.retain(|f| f != "metadata");
                        if req.is_empty() {
                            o.shift_remove("required");
                        }
                    }
                }
            }
        }
        annotate(&mut defs);
        let doc = json!({
            "openapi": "3.0.0",
            "info": info,
            "paths": paths_map,
            "components": {"schemas": defs},
        });
        let bytes = Bytes::from(serde_json::to_vec(&doc).unwrap_or_default());
        let key = gv_path(group, version);
        index.insert(
            key.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{key}?hash={}", hash_of(&bytes))}),
        );
        v3.insert(key, bytes);
        for (k, v) in defs {
            all_defs.insert(k, v);
        }
    }
    // Swagger 2.0: the same schemas under #/definitions, and no paths. kubectl reads v2 paths
    // only when the v3 document has no path for a kind (one this server does not serve), to ask
    // whether the kind takes `fieldValidation`. With no paths it concludes "no" and validates on
    // the client, finding no schema and leaving the error to the REST mapping ("no matches for
    // kind"), as against kube-apiserver. With paths it would see that Namespace takes the
    // parameter and list CustomResourceDefinitions to see if the kind is one, which this server
    // does not serve, and fail with that instead.
    let mut v2 = json!({"swagger": "2.0", "info": info, "paths": {}, "definitions": all_defs});
    to_swagger2(&mut v2);
    Built {
        v3_index: Bytes::from(serde_json::to_vec(&json!({"paths": index})).unwrap_or_default()),
        v3,
        v2: Bytes::from(serde_json::to_vec(&v2).unwrap_or_default()),
    }
}

/// The protobuf media type `/openapi/v2` answers with. Clients may ask for it by this name or by
/// the older one with `@` that client-go and kubectl still send.
const V2_PROTOBUF: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

/// What `/openapi/v2` can be served as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum V2Format {
    Json,
    Protobuf,
}

/// Picks the representation of `/openapi/v2` for an `Accept` header as kube-openapi does: the
/// most preferred media range (exact types before wildcards among equals) that any offer
/// matches, offers tried in the order JSON, protobuf, so that `*/*`, `application/*` and no
/// `Accept` at all get JSON. `None` when nothing matches (406). Unlike kube-openapi, a range
/// with `q=0` is taken to refuse the type, as RFC 9110 says.
fn negotiate_v2(accept: &str) -> Option<V2Format> {
    const OFFERS: [(&str, &str, V2Format); 3] = [
        ("application", "json", V2Format::Json),
        (
            "application",
            "com.github.proto-openapi.spec.v2@v1.0+protobuf",
            V2Format::Protobuf,
        ),
        (
            "application",
            "com.github.proto-openapi.spec.v2.v1.0+protobuf",
            V2Format::Protobuf,
        ),
    ];
    let accept = if accept.trim().is_empty() {
        "*/*"
    } else {
        accept
    };
    let mut ranges: Vec<(f32, &str, &str)> = accept
        .split(',')
        .filter_map(|clause| {
            let mut parts = clause.split(';');
            let range = parts.next()?.trim();
            // A lone `*` is taken for `*/*`, as kube-openapi's parser takes it.
            let (ty, sub) = if range == "*" {
                ("*", "*")
            } else {
                range.split_once('/')?
            };
            let q = match parts.find_map(|p| p.trim().strip_prefix("q=")) {
                Some(q) => q.trim().parse::<f32>().ok()?,
                None => 1.0,
            };
            Some((q, ty.trim(), sub.trim()))
        })
        .filter(|(q, ..)| *q > 0.0)
        .collect();
    ranges.sort_by(|a, b| {
        b.0.total_cmp(&a.0)
            .then((a.1 == "*").cmp(&(b.1 == "*")))
            .then((a.2 == "*").cmp(&(b.2 == "*")))
    });
    ranges.iter().find_map(|(_, ty, sub)| {
        OFFERS
            .iter()
            .find(|(t, s, _)| {
                (*ty == "*" || ty.eq_ignore_ascii_case(t))
                    && (*sub == "*" || sub.eq_ignore_ascii_case(s))
            })
            .map(|offer| offer.2)
    })
}

/// Whether an `If-None-Match` header names `etag` (quoted), so the client's copy is current.
fn not_modified(req: &Request<hyper::body::Incoming>, etag: &str) -> bool {
    req.headers()
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|tag| tag.trim())
        .any(|tag| tag == "*" || tag.trim_start_matches("W/") == etag)
}

/// A document, or 304 when the client already has it. `etag` comes with the quotes.
fn respond(
    req: &Request<hyper::body::Incoming>,
    content_type: &str,
    etag: &str,
    body: Bytes,
) -> Response<Body> {
    let response = Response::builder().header(header::ETAG, etag);
    if not_modified(req, etag) {
        return response
            .status(StatusCode::NOT_MODIFIED)
            .body(Body::empty())
            .expect("valid response");
    }
    response
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from(body))
        .expect("valid response")
}

fn etag_of(b: &Bytes) -> String {
    format!("\"{}\"", hash_of(b))
}

impl Docs {
    fn generation(&self, generation: u64, all: &[Resource]) -> Arc<Generation> {
        if let Some((g, docs)) = &*self.current.read() {
            if *g == generation {
                return docs.clone();
            }
        }
        let docs = Arc::new(Generation {
            built: build(all),
            v2_protobuf: OnceLock::new(),
        });
        *self.current.write() = Some((generation, docs.clone()));
        docs
    }
}

impl Generation {
    fn v2_protobuf(&self, built: &Built) -> Result<Bytes> {
        let encoded = self.v2_protobuf.get_or_init(|| {
            gnostic::encode(&built.v2).map(Bytes::from).inspect_err(
                |e| tracing::error!(error = %e, "the OpenAPI v2 document has no protobuf form"),
            )
        });
        match encoded {
            Ok(b) => Ok(b.clone()),
            Err(e) => Err(Error::internal(format!(
                "the OpenAPI v2 document has no protobuf form: {e}"
            ))),
        }
    }
}

impl Docs {
    /// Serves `/openapi/v2` and `/openapi/v3[/...]` for the resources served (`all`, as of
    /// `generation`).
    pub fn serve(
        &self,
        req: &Request<hyper::body::Incoming>,
        path: &str,
        generation: u64,
        all: &[Resource],
    ) -> Result<Response<Body>> {
        let docs = self.generation(generation, all);
        let built = &docs.built;
        if path == "/openapi/v2" {
            let accept = req
                .headers()
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            // One ETag for both forms, as kube-openapi does: they are one document, and caches
            // tell them apart by `Vary: Accept`.
            let etag = etag_of(&built.v2);
            let (content_type, body) = match negotiate_v2(accept) {
                Some(V2Format::Json) => ("application/json", built.v2.clone()),
                Some(V2Format::Protobuf) => (V2_PROTOBUF, docs.v2_protobuf(built)?),
                None => {
                    return Err(Error::not_acceptable(format!(
                        "/openapi/v2 is served as application/json or {V2_PROTOBUF}"
                    )))
                }
            };
            let mut response = respond(req, content_type, &etag, body);
            response
                .headers_mut()
                .insert(header::VARY, http::HeaderValue::from_static("Accept"));
            return Ok(response);
        }
        let rest = path
            .trim_start_matches("/openapi/v3")
            .trim_start_matches('/');
        let doc = if rest.is_empty() {
            &built.v3_index
        } else {
            built.v3.get(rest).ok_or_else(|| {
                Error::not_found_message(format!("no OpenAPI document for {rest}"))
            })?
        };
        Ok(respond(req, "application/json", &etag_of(doc), doc.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The documents of every compiled-in resource.
    fn build() -> Built {
        let all: Vec<Resource> = crate::registry::builtins()
            .iter()
            .map(|b| std::sync::Arc::new(ResourceInfo::from(*b)))
            .collect();
        super::build(&all)
    }

    #[test]
    fn documents_name_every_kind() {
        let b = build();
        let core: Value = serde_json::from_slice(&b.v3["api/v1"]).unwrap();
        let pod = &core["components"]["schemas"]["io.k8s.api.core.v1.Pod"];
        assert_eq!(pod["x-kubernetes-group-version-kind"][0]["kind"], "Pod");
        let containers = &core["components"]["schemas"]["io.k8s.api.core.v1.PodSpec"]["properties"]
            ["containers"];
        assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
        let patch = &core["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"]["patch"];
        assert!(patch["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "fieldValidation"));
        let apps: Value = serde_json::from_slice(&b.v3["apis/apps/v1"]).unwrap();
        assert!(apps["components"]["schemas"]["io.k8s.api.apps.v1.Deployment"].is_object());
        let v2: Value = serde_json::from_slice(&b.v2).unwrap();
        assert!(v2
            .to_string()
            .contains("#/definitions/io.k8s.api.core.v1.PodSpec"));
    }

    /// The media types a PATCH of `path` takes, as published.
    fn patch_types(doc: &Value, path: &str) -> Vec<String> {
        doc["paths"][path]["patch"]["requestBody"]["content"]
            .as_object()
            .unwrap_or_else(|| panic!("no PATCH of {path}"))
            .keys()
            .cloned()
            .collect()
    }

    #[test]
    fn custom_resources_take_no_strategic_merge_patch() {
        let builtin = crate::registry::builtins()
            .iter()
            .find(|b| b.kind == "ConfigMap")
            .unwrap();
        let mut widget = ResourceInfo::from(*builtin);
        widget.group = "example.com".into();
        widget.kind = "Widget".into();
        widget.plural = "widgets".into();
        widget.schema = None;
        widget.json_schema = Some(json!({"type": "object"}));
        let b = super::build(&[
            std::sync::Arc::new(ResourceInfo::from(*builtin)),
            std::sync::Arc::new(widget),
        ]);
        let core: Value = serde_json::from_slice(&b.v3["api/v1"]).unwrap();
        assert_eq!(
            patch_types(&core, "/api/v1/namespaces/{namespace}/configmaps/{name}"),
            [
                "application/json-patch+json",
                "application/merge-patch+json",
                "application/strategic-merge-patch+json",
                "application/apply-patch+yaml"
            ]
        );
        let custom: Value = serde_json::from_slice(&b.v3["apis/example.com/v1"]).unwrap();
        assert_eq!(
            patch_types(
                &custom,
                "/apis/example.com/v1/namespaces/{namespace}/widgets/{name}"
            ),
            [
                "application/json-patch+json",
                "application/merge-patch+json",
                "application/apply-patch+yaml"
            ]
        );
    }

    #[test]
    fn reviews_are_published_as_create_only() {
        let all: Vec<Resource> = crate::registry::review::served()
            .into_iter()
            .map(std::sync::Arc::new)
            .collect();
        let b = super::build(&all);
        let authn: Value = serde_json::from_slice(&b.v3["apis/authentication.k8s.io/v1"]).unwrap();
        let paths = authn["paths"].as_object().unwrap();
        let reviews = &paths["/apis/authentication.k8s.io/v1/tokenreviews"];
        let ops: Vec<&String> = reviews.as_object().unwrap().keys().collect();
        assert_eq!(ops, ["post"], "{reviews}");
        assert!(!paths.keys().any(|p| p.contains("{name}")), "{authn}");
        let authz: Value = serde_json::from_slice(&b.v3["apis/authorization.k8s.io/v1"]).unwrap();
        let local = &authz["paths"]
            ["/apis/authorization.k8s.io/v1/namespaces/{namespace}/localsubjectaccessreviews"];
        assert!(
            local["post"].is_object() && local.get("get").is_none(),
            "{local}"
        );
    }

    fn named<'a>(named: &'a [gnostic::NamedSchema], name: &str) -> &'a gnostic::Schema {
        named
            .iter()
            .find(|n| n.name == name)
            .and_then(|n| n.value.as_ref())
            .unwrap_or_else(|| panic!("no {name}"))
    }

    fn extension(s: &gnostic::Schema, name: &str) -> Value {
        let any = s
            .vendor_extension
            .iter()
            .find(|e| e.name == name)
            .and_then(|e| e.value.as_ref())
            .unwrap_or_else(|| panic!("no {name}"));
        serde_norway::from_str(&any.yaml).unwrap()
    }

    #[test]
    fn v2_protobuf_is_the_json_document() {
        use prost::Message;

        let b = build();
        let bytes = gnostic::encode(&b.v2).unwrap();
        let doc = gnostic::Document::decode(bytes.as_slice()).unwrap();
        let json: Value = serde_json::from_slice(&b.v2).unwrap();
        assert_eq!(gnostic::to_json(&doc), json);

        assert_eq!(doc.swagger, "2.0");
        let defs = &doc.definitions.as_ref().unwrap().additional_properties;
        let prop = |s: &'_ gnostic::Schema, name: &str| {
            named(&s.properties.as_ref().unwrap().additional_properties, name).clone()
        };
        let pod = named(defs, "io.k8s.api.core.v1.Pod");
        assert!(pod
            .description
            .starts_with("Pod is a collection of containers"));
        assert_eq!(
            extension(pod, "x-kubernetes-group-version-kind"),
            json!([{"group": "", "version": "v1", "kind": "Pod"}])
        );
        let spec = prop(pod, "spec");
        assert_eq!(spec.xref, "#/definitions/io.k8s.api.core.v1.PodSpec");
        assert!(spec
            .description
            .starts_with("Specification of the desired behavior"));
        let containers = prop(named(defs, "io.k8s.api.core.v1.PodSpec"), "containers");
        assert_eq!(containers.r#type.as_ref().unwrap().value, ["array"]);
        assert_eq!(
            containers.items.as_ref().unwrap().schema[0].xref,
            "#/definitions/io.k8s.api.core.v1.Container"
        );
        assert_eq!(
            extension(&containers, "x-kubernetes-patch-merge-key"),
            "name"
        );
        assert_eq!(
            extension(&containers, "x-kubernetes-patch-strategy"),
            "merge"
        );
        let container = named(defs, "io.k8s.api.core.v1.Container");
        assert_eq!(container.required, ["name"]);
        let labels = prop(
            named(defs, "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"),
            "labels",
        );
        let values = match labels.additional_properties.and_then(|a| a.oneof) {
            Some(gnostic::additional_properties_item::Oneof::Schema(s)) => s,
            other => panic!("labels' values: {other:?}"),
        };
        assert_eq!(values.r#type.unwrap().value, ["string"]);
        assert_eq!(
            extension(
                named(defs, "io.k8s.api.apps.v1.Deployment"),
                "x-kubernetes-group-version-kind"
            ),
            json!([{"group": "apps", "version": "v1", "kind": "Deployment"}])
        );
    }

    /// What kube-openapi's v2 reader (`pkg/util/proto`) refuses, which kubectl runs over every
    /// definition before it validates anything: a reference with a type or properties beside it,
    /// a reference out of `#/definitions/` or to a missing one, an array without exactly one item
    /// schema, several types, unknown types. It also reads a schema with only `allOf` as "any
    /// value", so none should be left.
    fn kubectl_cannot_read(s: &Value, at: &str, defs: &Map<String, Value>, out: &mut Vec<String>) {
        let mut problem = |what: &str| out.push(format!("{at}: {what}"));
        if let Some(r) = s.get("$ref") {
            if s.get("type").is_some() || s.get("properties").is_some() {
                problem("a reference with a type or properties");
            }
            match r.as_str().and_then(|r| r.strip_prefix("#/definitions/")) {
                Some(name) if defs.contains_key(name) => {}
                _ => problem("a reference to no definition"),
            }
            return;
        }
        if s.get("allOf").is_some() {
            problem("allOf");
        }
        match s.get("type") {
            None => {}
            Some(Value::String(t)) => match t.as_str() {
                "object" | "string" | "number" | "integer" | "boolean" => {}
                "array" if s["items"].is_object() => {}
                _ => problem("an unknown type or an array without one item schema"),
            },
            Some(_) => problem("several types"),
        }
        if let Some(Value::Object(props)) = s.get("properties") {
            for (name, p) in props {
                kubectl_cannot_read(p, &format!("{at}.{name}"), defs, out);
            }
        }
        for key in ["items", "additionalProperties"] {
            if let Some(sub @ Value::Object(_)) = s.get(key) {
                kubectl_cannot_read(sub, &format!("{at}[{key}]"), defs, out);
            }
        }
    }

    #[test]
    fn kubectl_can_read_every_v2_definition() {
        let v2: Value = serde_json::from_slice(&build().v2).unwrap();
        let defs = v2["definitions"].as_object().unwrap();
        let mut problems = Vec::new();
        for (name, s) in defs {
            kubectl_cannot_read(s, name, defs, &mut problems);
        }
        assert!(problems.is_empty(), "{problems:#?}");
    }

    #[test]
    fn v2_representation_follows_accept_as_kube_openapi_does() {
        use V2Format::{Json, Protobuf};
        let legacy = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";
        for (accept, want) in [
            ("", Some(Json)),
            ("*/*", Some(Json)),
            ("application/*", Some(Json)),
            ("application/json", Some(Json)),
            ("application/json, */*", Some(Json)),
            (legacy, Some(Protobuf)),
            (V2_PROTOBUF, Some(Protobuf)),
            (
                "Application/Com.Github.Proto-OpenAPI.Spec.V2@v1.0+Protobuf",
                Some(Protobuf),
            ),
            (&format!("{legacy}, application/json"), Some(Protobuf)),
            (&format!("application/json;q=0.5, {legacy}"), Some(Protobuf)),
            (&format!("*/*, {legacy}"), Some(Protobuf)),
            (&format!("{legacy};q=0.9, application/json"), Some(Json)),
            ("application/yaml, text/html", None),
            ("application/json;q=0", None),
            ("application/vnd.kubernetes.protobuf", None),
            ("*", Some(Json)),
            ("garbage", None),
        ] {
            assert_eq!(negotiate_v2(accept), want, "Accept: {accept}");
        }
    }
}
