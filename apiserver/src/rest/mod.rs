//! The Kubernetes REST API: paths, verbs, content negotiation, and the mapping of every
//! failure to a `Status` response. The operations themselves live in [`crate::api`].

mod discovery;
mod negotiate;
pub mod table;
mod watch;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};

use crate::api::{DeleteOpts, Deleted, FieldValidation, ListOpts, WatchOpts, WriteOpts};
use crate::auth::{Attributes, Decision, UserInfo};
use crate::error::{success_status, Error, Result};
use crate::patch::PatchType;
use crate::registry::{self, ResourceInfo};
use crate::selectors::{FieldSelector, LabelSelector};
use crate::server::State;
pub use negotiate::{decode_patch, Format};

/// Largest request body accepted, as in kube-apiserver.
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// A parsed resource path.
#[derive(Debug, Clone, Default)]
pub struct Target {
    /// API group.
    pub group: String,
    /// API version.
    pub version: String,
    /// Namespace from the path.
    pub namespace: Option<String>,
    /// Resource plural.
    pub resource: String,
    /// Object name.
    pub name: Option<String>,
    /// Subresource.
    pub subresource: Option<String>,
    /// Whether the path used the legacy `/watch/` prefix.
    pub legacy_watch: bool,
}

/// What a path addresses.
#[derive(Debug)]
pub enum Route {
    /// A resource request.
    Resource(Target),
    /// `/api`, `/apis`, `/apis/<group>`, `/api/v1`, `/apis/<g>/<v>`.
    Discovery(Vec<String>),
    /// Anything else (`/version`, `/healthz`, `/openapi/...`).
    Other(String),
}

/// Splits a path into a route.
pub fn route(path: &str) -> Route {
    let segs: Vec<String> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .map(percent_decode)
        .collect();
    let (group, version, rest) = match segs.first().map(String::as_str) {
        Some("api") if segs.len() <= 2 => return Route::Discovery(segs),
        Some("api") => (String::new(), segs[1].clone(), &segs[2..]),
        Some("apis") if segs.len() <= 3 => return Route::Discovery(segs),
        Some("apis") => (segs[1].clone(), segs[2].clone(), &segs[3..]),
        _ => return Route::Other(path.to_string()),
    };
    let mut t = Target {
        group,
        version,
        ..Default::default()
    };
    let mut rest = rest.to_vec();
    if rest.first().map(String::as_str) == Some("watch") {
        t.legacy_watch = true;
        rest.remove(0);
    }
    let namespaced_form = rest.first().map(String::as_str) == Some("namespaces")
        && rest.len() >= 3
        && !(rest.len() == 3 && matches!(rest[2].as_str(), "status" | "finalize"));
    if namespaced_form {
        t.namespace = Some(rest[1].clone());
        rest.drain(0..2);
    }
    t.resource = rest.first().cloned().unwrap_or_default();
    t.name = rest.get(1).cloned();
    t.subresource = rest.get(2).cloned();
    if rest.len() > 3 {
        return Route::Other(path.to_string());
    }
    Route::Resource(t)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(n) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(n);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Query parameters, decoded.
#[derive(Debug, Default)]
pub struct Query(Vec<(String, String)>);

impl Query {
    /// Decodes a raw query string.
    pub fn parse_str(q: &str) -> Self {
        Self::parse(Some(q))
    }

    fn parse(q: Option<&str>) -> Self {
        let pairs = q
            .map(|q| {
                q.split('&')
                    .filter(|p| !p.is_empty())
                    .map(|p| {
                        let (k, v) = p.split_once('=').unwrap_or((p, ""));
                        (form_decode(k), form_decode(v))
                    })
                    .collect()
            })
            .unwrap_or_default();
        Query(pairs)
    }

    /// Every parameter, in order.
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The first value of a parameter.
    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }

    fn flag(&self, k: &str) -> bool {
        matches!(
            self.get(k),
            Some("1") | Some("true") | Some("True") | Some("")
        )
    }

    fn int(&self, k: &str) -> Result<Option<i64>> {
        match self.get(k) {
            None | Some("") => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| Error::bad_request(format!("invalid value for {k}: {v:?}"))),
        }
    }
}

fn form_decode(s: &str) -> String {
    percent_decode(&s.replace('+', " "))
}

/// The verb of a request, as authorization and metrics name it.
fn verb(method: &Method, t: &Target, q: &Query) -> &'static str {
    let watching = t.legacy_watch || q.flag("watch") && q.get("watch").is_some();
    match (method, t.name.is_some()) {
        (&Method::GET, _) if watching => "watch",
        (&Method::GET, true) => "get",
        (&Method::GET, false) => "list",
        (&Method::POST, _) => "create",
        (&Method::PUT, _) => "update",
        (&Method::PATCH, _) => "patch",
        (&Method::DELETE, true) => "delete",
        (&Method::DELETE, false) => "deletecollection",
        _ => "unknown",
    }
}

/// Serves one request.
pub async fn handle(state: Arc<State>, req: Request<hyper::body::Incoming>) -> Response<Body> {
    let start = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = Query::parse(req.uri().query());
    let user_agent = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let route = route(&path);
    let (verb_name, resource_label) = match &route {
        Route::Resource(t) => (verb(&method, t, &query), t.resource.clone()),
        _ => ("get", String::new()),
    };
    let result = serve(&state, req, route, &query, &user_agent).await;
    let resp = match result {
        Ok(r) => r,
        Err(e) => {
            if e.code() >= 500 {
                tracing::warn!(%method, %path, error = %e, "request failed");
            }
            error_response(&e)
        }
    };
    let code = resp.status().as_u16();
    state.metrics.observe_request(
        &verb_name.to_uppercase(),
        &resource_label,
        code,
        start.elapsed(),
    );
    tracing::debug!(%method, %path, code, took_ms = start.elapsed().as_secs_f64() * 1000.0, "request");
    resp
}

/// The `Status` response for an error.
pub fn error_response(e: &Error) -> Response<Body> {
    let body = serde_json::to_vec(&e.status()).unwrap_or_default();
    Response::builder()
        .status(StatusCode::from_u16(e.code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .expect("valid response")
}

fn public_path(path: &str) -> bool {
    matches!(
        path,
        "/healthz" | "/livez" | "/readyz" | "/version" | "/version/"
    ) || path.starts_with("/healthz/")
        || path.starts_with("/livez/")
        || path.starts_with("/readyz/")
}

async fn serve(
    state: &Arc<State>,
    req: Request<hyper::body::Incoming>,
    route: Route,
    q: &Query,
    user_agent: &str,
) -> Result<Response<Body>> {
    let path = req.uri().path().to_string();
    let cert_user = req
        .extensions()
        .get::<Option<UserInfo>>()
        .cloned()
        .flatten();
    let user = match state.authn.authenticate(cert_user.as_ref(), req.headers()) {
        Ok(u) => u,
        Err(_) if public_path(&path) && req.headers().get(header::AUTHORIZATION).is_none() => {
            UserInfo {
                name: "system:anonymous".into(),
                uid: String::new(),
                groups: vec!["system:unauthenticated".into()],
            }
        }
        Err(e) => return Err(e),
    };
    let method = req.method().clone();
    match route {
        Route::Other(p) => {
            let attrs = Attributes {
                user: &user,
                verb: &method.as_str().to_lowercase(),
                resource_request: false,
                api_group: "",
                resource: "",
                subresource: "",
                namespace: "",
                name: "",
                path: &p,
            };
            authorize(state, &attrs)?;
            crate::server::non_resource(state, &req, &p).await
        }
        Route::Discovery(segs) => {
            let attrs = Attributes {
                user: &user,
                verb: "get",
                resource_request: false,
                api_group: "",
                resource: "",
                subresource: "",
                namespace: "",
                name: "",
                path: &path,
            };
            authorize(state, &attrs)?;
            discovery::serve(state, &req, &segs)
        }
        Route::Resource(t) => {
            let verb_name = verb(&method, &t, q);
            let attrs = Attributes {
                user: &user,
                verb: verb_name,
                resource_request: true,
                api_group: &t.group,
                resource: &t.resource,
                subresource: t.subresource.as_deref().unwrap_or(""),
                namespace: t.namespace.as_deref().unwrap_or(""),
                name: t.name.as_deref().unwrap_or(""),
                path: &path,
            };
            authorize(state, &attrs)?;
            resource(state, req, t, verb_name, q, user_agent).await
        }
    }
}

fn authorize(state: &State, attrs: &Attributes<'_>) -> Result<()> {
    match state.authz.authorize(attrs) {
        Decision::Allow => Ok(()),
        Decision::Deny(why) => Err(crate::auth::forbidden(attrs, &why)),
    }
}

fn find_resource(t: &Target) -> Result<&'static ResourceInfo> {
    registry::find(&t.group, &t.version, &t.resource)
        .ok_or_else(|| Error::not_found_message("the server could not find the requested resource"))
}

async fn read_body(req: Request<hyper::body::Incoming>) -> Result<(http::request::Parts, Bytes)> {
    let (parts, body) = req.into_parts();
    if let Some(len) = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
    {
        if len > MAX_BODY {
            return Err(Error::too_large(MAX_BODY));
        }
    }
    let limited = http_body_util::Limited::new(body, MAX_BODY);
    let bytes = match limited.collect().await {
        Ok(c) => c.to_bytes(),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            return Err(Error::too_large(MAX_BODY))
        }
        Err(e) => return Err(Error::bad_request(format!("reading request body: {e}"))),
    };
    Ok((parts, bytes))
}

fn write_opts(q: &Query, user_agent: &str, patch: bool) -> Result<WriteOpts> {
    let dry_run = match q.get("dryRun") {
        None | Some("") => false,
        Some("All") => true,
        Some(o) => {
            return Err(Error::bad_request(format!(
                "Invalid dryRun value: {o}; valid values are: All"
            )))
        }
    };
    let mut field_manager = q.get("fieldManager").map(String::from);
    if let Some(m) = &field_manager {
        if m.len() > 128 || m.chars().any(|c| c.is_control()) {
            return Err(Error::bad_request(
                "fieldManager: Invalid value: must be at most 128 printable characters",
            ));
        }
    }
    if field_manager.is_none() && !patch {
        let ua = user_agent.split('/').next().unwrap_or("").trim();
        if !ua.is_empty() {
            field_manager = Some(ua.to_string());
        }
    }
    Ok(WriteOpts {
        dry_run,
        field_validation: FieldValidation::parse(q.get("fieldValidation"))?,
        field_manager,
        force: q.flag("force") && q.get("force").is_some(),
    })
}

fn label_selector(q: &Query) -> Result<LabelSelector> {
    LabelSelector::parse(q.get("labelSelector").unwrap_or(""))
}

fn list_opts(q: &Query, r: &'static ResourceInfo) -> Result<ListOpts> {
    Ok(ListOpts {
        labels: label_selector(q)?,
        fields: FieldSelector::parse(q.get("fieldSelector").unwrap_or(""), r)?,
        limit: q.int("limit")?.unwrap_or(0).max(0),
        continue_token: q
            .get("continue")
            .filter(|c| !c.is_empty())
            .map(String::from),
        resource_version: q.get("resourceVersion").map(String::from),
        resource_version_match: q
            .get("resourceVersionMatch")
            .filter(|s| !s.is_empty())
            .map(String::from),
    })
}

fn delete_opts(q: &Query, body: &Value) -> Result<DeleteOpts> {
    let mut o = DeleteOpts {
        grace_period: q.int("gracePeriodSeconds")?,
        propagation: q
            .get("propagationPolicy")
            .filter(|s| !s.is_empty())
            .map(String::from),
        dry_run: q.get("dryRun") == Some("All"),
        ..Default::default()
    };
    if q.flag("orphanDependents") && q.get("orphanDependents").is_some() && o.propagation.is_none()
    {
        o.propagation = Some("Orphan".into());
    }
    if let Some(b) = body.as_object() {
        if let Some(g) = b.get("gracePeriodSeconds").and_then(Value::as_i64) {
            o.grace_period = Some(g);
        }
        if let Some(p) = b.get("propagationPolicy").and_then(Value::as_str) {
            o.propagation = Some(p.into());
        }
        if b.get("orphanDependents").and_then(Value::as_bool) == Some(true)
            && o.propagation.is_none()
        {
            o.propagation = Some("Orphan".into());
        }
        if let Some(p) = b.get("preconditions") {
            o.uid = p.get("uid").and_then(Value::as_str).map(String::from);
            o.resource_version = p
                .get("resourceVersion")
                .and_then(Value::as_str)
                .map(String::from);
        }
        if let Some(d) = b.get("dryRun").and_then(Value::as_array) {
            o.dry_run = d.iter().any(|x| x == "All");
        }
    }
    Ok(o)
}

fn with_warnings(mut resp: Response<Body>, warnings: &[String]) -> Response<Body> {
    for w in warnings {
        let v = format!("299 - \"{}\"", w.replace('"', "\\\""));
        if let Ok(h) = HeaderValue::from_str(&v) {
            resp.headers_mut().append(header::WARNING, h);
        }
    }
    resp
}

async fn resource(
    state: &Arc<State>,
    req: Request<hyper::body::Incoming>,
    t: Target,
    verb_name: &str,
    q: &Query,
    user_agent: &str,
) -> Result<Response<Body>> {
    if t.resource == "pods"
        && t.group.is_empty()
        && t.subresource.as_deref() == Some("log")
        && verb_name == "get"
    {
        let name = t.name.as_deref().unwrap_or_default();
        return crate::node_proxy::pod_log(
            state,
            t.namespace.as_deref().unwrap_or("default"),
            name,
            q,
        )
        .await;
    }
    if t.resource == "pods"
        && t.group.is_empty()
        && matches!(
            t.subresource.as_deref(),
            Some("exec") | Some("attach") | Some("portforward")
        )
    {
        let name = t.name.clone().unwrap_or_default();
        let sub = t.subresource.clone().unwrap_or_default();
        let ns = t.namespace.clone().unwrap_or_else(|| "default".into());
        return crate::node_proxy::stream(state, req, &ns, &name, &sub).await;
    }
    if t.resource == "bindings" && t.group.is_empty() && verb_name == "create" {
        // The legacy pod binding endpoint: POST /api/v1/namespaces/<ns>/bindings.
        let (parts, body) = read_body(req).await?;
        let binding = negotiate::decode_body(&parts.headers, &body)?;
        let name = binding
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        return bind(state, t.namespace.as_deref(), &name, binding, q).await;
    }
    let r = find_resource(&t)?;
    if r.namespaced && t.namespace.is_none() && t.name.is_some() {
        return Err(Error::not_found_message(
            "the server could not find the requested resource",
        ));
    }
    if !r.namespaced && t.namespace.is_some() {
        return Err(Error::not_found_message(
            "the server could not find the requested resource",
        ));
    }
    if let Some(sub) = &t.subresource {
        if !r.has_subresource(sub) {
            return Err(Error::not_found_message(format!(
                "the server could not find the requested resource ({sub})"
            )));
        }
    }
    let format = negotiate::Format::from_accept(req.headers(), verb_name)?;
    let ns = t.namespace.as_deref();
    let api = &state.api;
    match verb_name {
        "get" => {
            let name = t.name.as_deref().expect("get has a name");
            let obj = api.get(r, ns, name).await?;
            match t.subresource.as_deref() {
                Some("scale") => negotiate::respond(StatusCode::OK, &scale_of(&obj), Format::Json),
                _ => table::respond_one(r, obj, &format, q),
            }
        }
        "list" => {
            let opts = list_opts(q, r)?;
            let listed = api.list(r, ns, &opts).await?;
            table::respond_list(r, listed, &format, q)
        }
        "watch" => {
            let mut opts = WatchOpts {
                labels: label_selector(q)?,
                fields: FieldSelector::parse(q.get("fieldSelector").unwrap_or(""), r)?,
                resource_version: q.get("resourceVersion").map(String::from),
                bookmarks: q.flag("allowWatchBookmarks") && q.get("allowWatchBookmarks").is_some(),
                send_initial_events: q.flag("sendInitialEvents")
                    && q.get("sendInitialEvents").is_some(),
            };
            if let Some(name) = &t.name {
                // GET .../pods/<name>?watch=1 is a watch on that one object.
                let fs = format!("metadata.name={name}");
                opts.fields = FieldSelector::parse(&fs, r)?;
            }
            let timeout = q.int("timeoutSeconds")?;
            watch::respond(state, r, ns, opts, format, timeout, q).await
        }
        "create" => {
            let (parts, body) = read_body(req).await?;
            let obj = negotiate::decode_body(&parts.headers, &body)?;
            let opts = write_opts(q, user_agent, false)?;
            match (t.name.as_deref(), t.subresource.as_deref()) {
                (Some(name), Some("binding")) => bind(state, ns, name, obj, q).await,
                (Some(name), Some("eviction")) => evict(state, r, ns, name, obj).await,
                (None, None) => {
                    let w = api.create(r, ns, obj, &opts).await?;
                    Ok(with_warnings(
                        negotiate::respond(StatusCode::CREATED, &w.object, format)?,
                        &w.warnings,
                    ))
                }
                _ => Err(Error::method_not_allowed(
                    "the server does not allow this method on the requested resource",
                )),
            }
        }
        "update" => {
            let name = t.name.clone().ok_or_else(|| {
                Error::method_not_allowed(
                    "the server does not allow this method on the requested resource",
                )
            })?;
            let (parts, body) = read_body(req).await?;
            let obj = negotiate::decode_body(&parts.headers, &body)?;
            let opts = write_opts(q, user_agent, false)?;
            let w = match t.subresource.as_deref() {
                Some("scale") => {
                    let replicas = obj
                        .pointer("/spec/replicas")
                        .and_then(Value::as_i64)
                        .unwrap_or(0);
                    let patch = json!({"spec": {"replicas": replicas}});
                    let w = api
                        .patch(r, ns, &name, PatchType::Merge, &patch, None, &opts)
                        .await?;
                    return negotiate::respond(StatusCode::OK, &scale_of(&w.object), Format::Json);
                }
                Some("finalize") => {
                    let fins = obj
                        .pointer("/spec/finalizers")
                        .cloned()
                        .unwrap_or(json!([]));
                    let mut cur = api.get(r, ns, &name).await?;
                    cur["spec"]["finalizers"] = fins;
                    api.update(r, ns, &name, cur, None, &opts).await?
                }
                sub => api.update(r, ns, &name, obj, sub, &opts).await?,
            };
            let code = if w.created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok(with_warnings(
                negotiate::respond(code, &w.object, format)?,
                &w.warnings,
            ))
        }
        "patch" => {
            let name = t.name.clone().ok_or_else(|| {
                Error::method_not_allowed(
                    "the server does not allow this method on the requested resource",
                )
            })?;
            let (parts, body) = read_body(req).await?;
            let ct = parts
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let ptype = PatchType::from_content_type(&ct)
                .ok_or_else(|| Error::unsupported_media_type(&ct))?;
            let patch_body = negotiate::decode_patch(ptype, &body)?;
            let opts = write_opts(q, user_agent, ptype == PatchType::Apply)?;
            if ptype != PatchType::Apply && q.get("force").is_some() {
                return Err(Error::bad_request(
                    "force: Forbidden: may not be specified for non-apply patch",
                ));
            }
            let w = match t.subresource.as_deref() {
                Some("scale") => {
                    let cur = api.get(r, ns, &name).await?;
                    let mut scale = scale_of(&cur);
                    crate::patch::apply_patch(&mut scale, ptype, &patch_body)?;
                    let replicas = scale
                        .pointer("/spec/replicas")
                        .and_then(Value::as_i64)
                        .unwrap_or(0);
                    let mut p = json!({"spec": {"replicas": replicas}});
                    if let Some(rv) = patch_body.pointer("/metadata/resourceVersion") {
                        p["metadata"] = json!({"resourceVersion": rv});
                    }
                    let w = api
                        .patch(r, ns, &name, PatchType::Merge, &p, None, &opts)
                        .await?;
                    return negotiate::respond(StatusCode::OK, &scale_of(&w.object), Format::Json);
                }
                sub => {
                    api.patch(r, ns, &name, ptype, &patch_body, sub, &opts)
                        .await?
                }
            };
            let code = if w.created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok(with_warnings(
                negotiate::respond(code, &w.object, format)?,
                &w.warnings,
            ))
        }
        "delete" => {
            let name = t.name.clone().expect("delete has a name");
            let (parts, body) = read_body(req).await?;
            let body = negotiate::decode_optional(&parts.headers, &body)?;
            let opts = delete_opts(q, &body)?;
            match api.delete(r, ns, &name, &opts).await? {
                Deleted::Pending(obj) => negotiate::respond(StatusCode::OK, &obj, format),
                Deleted::Gone(obj) if r.plural == "pods" => {
                    negotiate::respond(StatusCode::OK, &obj, format)
                }
                Deleted::Gone(obj) => {
                    let details = json!({
                        "name": name,
                        "group": r.group,
                        "kind": r.plural,
                        "uid": obj.pointer("/metadata/uid").cloned().unwrap_or(Value::Null),
                    });
                    negotiate::respond(StatusCode::OK, &success_status(details), Format::Json)
                }
            }
        }
        "deletecollection" => {
            let (parts, body) = read_body(req).await?;
            let body = negotiate::decode_optional(&parts.headers, &body)?;
            let lopts = list_opts(q, r)?;
            let dopts = delete_opts(q, &body)?;
            let items = api.delete_collection(r, ns, &lopts, &dopts).await?;
            let list = json!({
                "kind": format!("{}List", r.kind),
                "apiVersion": r.api_version(),
                "metadata": {},
                "items": items,
            });
            negotiate::respond(StatusCode::OK, &list, Format::Json)
        }
        _ => Err(Error::method_not_allowed(
            "the server does not allow this method on the requested resource",
        )),
    }
}

/// The autoscaling/v1 `Scale` view of a workload.
fn scale_of(obj: &Value) -> Value {
    let m = obj.get("metadata").cloned().unwrap_or(json!({}));
    let selector = obj
        .pointer("/spec/selector")
        .map(|s| registry::selector_text(Some(s)))
        .filter(|s| s != "<none>")
        .unwrap_or_default();
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": m.get("name"),
            "namespace": m.get("namespace"),
            "uid": m.get("uid"),
            "resourceVersion": m.get("resourceVersion"),
            "creationTimestamp": m.get("creationTimestamp"),
        },
        "spec": {"replicas": obj.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(0)},
        "status": {
            "replicas": obj.pointer("/status/replicas").and_then(Value::as_i64).unwrap_or(0),
            "selector": selector,
        },
    })
}

/// Binds a pod to a node (the `binding` subresource).
async fn bind(
    state: &Arc<State>,
    ns: Option<&str>,
    name: &str,
    binding: Value,
    q: &Query,
) -> Result<Response<Body>> {
    let node = binding
        .pointer("/target/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let kind = binding
        .pointer("/target/kind")
        .and_then(Value::as_str)
        .unwrap_or("Node");
    if !kind.is_empty() && kind != "Node" {
        return Err(Error::invalid(
            "Binding",
            "",
            name,
            vec![crate::error::Cause::not_supported(
                "target.kind",
                kind,
                &["Node", "<empty>"],
            )],
        ));
    }
    let annotations: BTreeMap<String, String> = binding
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default();
    let uid = binding.pointer("/metadata/uid").and_then(Value::as_str);
    state
        .api
        .bind(
            ns.unwrap_or(""),
            name,
            &node,
            uid,
            &annotations,
            q.get("dryRun") == Some("All"),
        )
        .await?;
    let details = json!({"name": name, "kind": "pods"});
    negotiate::respond(
        StatusCode::CREATED,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201, "details": details}),
        Format::Json,
    )
}

/// Evicts a pod (the `eviction` subresource): a graceful delete.
async fn evict(
    state: &Arc<State>,
    r: &'static ResourceInfo,
    ns: Option<&str>,
    name: &str,
    body: Value,
) -> Result<Response<Body>> {
    let grace = body
        .pointer("/deleteOptions/gracePeriodSeconds")
        .and_then(Value::as_i64);
    let opts = DeleteOpts {
        grace_period: grace,
        ..Default::default()
    };
    state.api.delete(r, ns, name, &opts).await?;
    negotiate::respond(
        StatusCode::CREATED,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
        Format::Json,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let Route::Resource(t) = route("/api/v1/namespaces/default/pods/web/status") else {
            panic!()
        };
        assert_eq!(
            (
                t.namespace.as_deref(),
                t.resource.as_str(),
                t.name.as_deref(),
                t.subresource.as_deref()
            ),
            (Some("default"), "pods", Some("web"), Some("status"))
        );
        let Route::Resource(t) = route("/api/v1/namespaces/kube-system") else {
            panic!()
        };
        assert_eq!(
            (t.namespace, t.resource.as_str(), t.name.as_deref()),
            (None, "namespaces", Some("kube-system"))
        );
        let Route::Resource(t) = route("/api/v1/namespaces/x/status") else {
            panic!()
        };
        assert_eq!(
            (
                t.resource.as_str(),
                t.name.as_deref(),
                t.subresource.as_deref()
            ),
            ("namespaces", Some("x"), Some("status"))
        );
        let Route::Resource(t) = route("/apis/apps/v1/namespaces/d/deployments") else {
            panic!()
        };
        assert_eq!(
            (
                t.group.as_str(),
                t.namespace.as_deref(),
                t.resource.as_str()
            ),
            ("apps", Some("d"), "deployments")
        );
        let Route::Resource(t) = route("/api/v1/watch/namespaces/d/pods") else {
            panic!()
        };
        assert!(t.legacy_watch);
        assert!(matches!(route("/apis/apps"), Route::Discovery(_)));
        assert!(matches!(route("/version"), Route::Other(_)));
    }

    #[test]
    fn query_decoding() {
        let q = Query::parse(Some(
            "labelSelector=app%3Dweb%2Ctier+in+(a)&watch=true&limit=5",
        ));
        assert_eq!(q.get("labelSelector"), Some("app=web,tier in (a)"));
        assert!(q.flag("watch"));
        assert_eq!(q.int("limit").unwrap(), Some(5));
    }
}
