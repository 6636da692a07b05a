//! The Kubernetes REST door: paths, verbs, content negotiation, and the mapping of every
//! failure to a `Status` response. The operations themselves live in [`crate::store`].

mod discovery;
pub mod negotiate;
mod nonresource;
mod options;
pub mod path;
mod resource;
pub mod table;
mod watch;

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use http::{header, Method, Request, Response, StatusCode};

use crate::auth::{Attributes, Decision, UserInfo};
use crate::error::{Error, Result};
use crate::query::Query;
use crate::state::State;
pub use negotiate::Format;
pub use options::MAX_BODY;
use path::{route, Route, Target};

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
    let route = route(&path);
    let (verb_name, resource_label) = match &route {
        Route::Resource(t) => (verb(&method, t, &query), t.resource.clone()),
        _ => ("get", String::new()),
    };
    let resp = match serve(&state, req, route, &query).await {
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

/// Authenticates, authorizes, and hands the request to the part of the API it addresses.
async fn serve(
    state: &Arc<State>,
    req: Request<hyper::body::Incoming>,
    route: Route,
    q: &Query,
) -> Result<Response<Body>> {
    let path = req.uri().path().to_string();
    let cert_user = req
        .extensions()
        .get::<Option<UserInfo>>()
        .cloned()
        .flatten();
    let user = state
        .authn
        .authenticate(cert_user.as_ref(), req.headers())?;
    let user = crate::auth::impersonation::impersonate(req.headers(), user, &*state.authz)?;
    let method = req.method().clone();
    let non_resource = |verb: &'static str| Attributes {
        user: &user,
        verb,
        resource_request: false,
        api_group: "",
        resource: "",
        subresource: "",
        namespace: "",
        name: "",
        path: &path,
        field_selector: "",
    };
    match route {
        Route::Other(p) => {
            let verb = match method.as_str() {
                "GET" => "get",
                "HEAD" => "head",
                "POST" => "post",
                "PUT" => "put",
                "PATCH" => "patch",
                "DELETE" => "delete",
                _ => "unknown",
            };
            authorize(state, &non_resource(verb))?;
            nonresource::serve(state, &req, &p).await
        }
        Route::Discovery(segs) => {
            authorize(state, &non_resource("get"))?;
            discovery::serve(state, &req, &segs)
        }
        Route::Resource(t) => {
            let verb_name = verb(&method, &t, q);
            let field_selector = q.get("fieldSelector").unwrap_or("");
            // A list or watch pinned to one name by `metadata.name` is authorized as a read
            // of that object, as kube-apiserver's request info makes it.
            let name = match (t.name.as_deref(), verb_name) {
                (Some(n), _) => n,
                (None, "list" | "watch") => {
                    crate::auth::field_requirement(field_selector, "metadata.name").unwrap_or("")
                }
                (None, _) => "",
            };
            let attrs = Attributes {
                user: &user,
                verb: verb_name,
                resource_request: true,
                api_group: &t.group,
                resource: &t.resource,
                subresource: t.subresource.as_deref().unwrap_or(""),
                namespace: t.namespace.as_deref().unwrap_or(""),
                name,
                path: &path,
                field_selector,
            };
            authorize(state, &attrs)?;
            resource::serve(state, req, t, verb_name, q, &user).await
        }
    }
}

fn authorize(state: &State, attrs: &Attributes<'_>) -> Result<()> {
    match state.authz.authorize(attrs) {
        Decision::Allow => Ok(()),
        Decision::Deny(why) | Decision::NoOpinion(why) => Err(crate::auth::forbidden(attrs, &why)),
    }
}
