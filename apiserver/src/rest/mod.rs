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

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use futures::FutureExt;
use http::{header, Method, Request, Response, StatusCode};

use crate::audit;
use crate::auth::{Attributes, Decision, UserInfo};
use crate::error::{Error, Result};
use crate::query::Query;
use crate::state::State;
pub use negotiate::Format;
pub use options::MAX_BODY;
use path::{route, Route, Target};

/// The verb of a request, as authorization and metrics name it.
fn verb(method: &Method, t: &Target, q: &Query) -> &'static str {
    // A proxied request's query is the target's own.
    let proxied = t.subresource.as_deref() == Some("proxy");
    let watching = t.legacy_watch || !proxied && q.flag("watch") && q.get("watch").is_some();
    match (method, t.name.is_some()) {
        // HEAD is a read of what a proxy reaches; the API's own resources do not serve it.
        (&Method::HEAD, true) if proxied => "get",
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
    let (verb_name, resource_label, subresource) = match &route {
        Route::Resource(t) => (
            verb(&method, t, &query),
            t.resource.clone(),
            t.subresource.clone().unwrap_or_default(),
        ),
        _ => ("get", String::new(), String::new()),
    };
    // As kube-apiserver, every response names its audit id, audited or not.
    let audit_id = audit::audit_id(req.headers());
    let origin = state.audit.as_ref().map(|_| {
        let uri = req
            .uri()
            .path_and_query()
            .map_or(path.as_str(), |p| p.as_str());
        audit::Origin::new(
            &audit_id,
            chrono::Utc::now(),
            uri,
            req.headers(),
            req.extensions().get::<audit::Peer>().copied(),
        )
    });
    let mut recorder = None;
    let served = AssertUnwindSafe(serve(&state, req, route, &query, origin, &mut recorder))
        .catch_unwind()
        .await;
    let (mut resp, failure) = match served {
        Ok(Ok(r)) => (r, None),
        Ok(Err(e)) => {
            if e.code() >= 500 {
                tracing::warn!(%method, %path, error = %e, "request failed");
            }
            (error_response(&e), Some(e.status()))
        }
        Err(panic) => {
            let message = audit::panic_message(&*panic);
            tracing::error!(%method, %path, panic = %message, "serving a request panicked");
            if let Some(r) = recorder.take() {
                r.panicked(&message);
            }
            let e = Error::internal("the server failed while serving the request");
            (error_response(&e), None)
        }
    };
    if let Ok(v) = http::HeaderValue::from_str(&audit_id) {
        resp.headers_mut().insert(audit::AUDIT_ID_HEADER, v);
    }
    let code = resp.status().as_u16();
    if let Some(r) = recorder {
        resp = finish_audit(resp, r, verb_name, &subresource, failure).await;
    }
    state.metrics.observe_request(
        &verb_name.to_uppercase(),
        &resource_label,
        code,
        start.elapsed(),
    );
    tracing::debug!(%method, %path, code, took_ms = start.elapsed().as_secs_f64() * 1000.0, "request");
    resp
}

/// Ends a request's audit record: a long-running response's `ResponseStarted` now and its
/// `ResponseComplete` when its body ends; any other's `ResponseComplete`, with the response's
/// body when the level records it.
async fn finish_audit(
    resp: Response<Body>,
    r: Arc<audit::Recorder>,
    verb: &str,
    subresource: &str,
    failure: Option<serde_json::Value>,
) -> Response<Body> {
    let code = resp.status().as_u16();
    if let Some(status) = failure {
        if r.wants_response_object() {
            r.response_object(status.clone());
        }
        r.complete(audit::ResponseStatus::from_status(&status));
        return resp;
    }
    if audit::long_running(verb, subresource) {
        r.response_started(code);
        return resp.map(|body| {
            Body::new(Completing {
                inner: body,
                recorder: Some(r),
                code,
            })
        });
    }
    if !r.wants_response_object() {
        r.complete(audit::ResponseStatus::code(code));
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let bytes = match http_body_util::BodyExt::collect(body).await {
        Ok(c) => c.to_bytes(),
        Err(e) => {
            tracing::warn!(error = %e, "reading a response for the audit log");
            r.complete(audit::ResponseStatus::code(code));
            return Response::from_parts(parts, Body::empty());
        }
    };
    let yaml = parts
        .headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/yaml"));
    let parsed: Option<serde_json::Value> = if yaml {
        serde_norway::from_slice(&bytes).ok()
    } else {
        serde_json::from_slice(&bytes).ok()
    };
    let status = match &parsed {
        Some(v) if v.get("kind").and_then(serde_json::Value::as_str) == Some("Status") => {
            audit::ResponseStatus::from_status(v)
        }
        _ => audit::ResponseStatus::code(code),
    };
    if let Some(v) = parsed {
        r.response_object(v);
    }
    r.complete(status);
    Response::from_parts(parts, Body::from(bytes))
}

/// A long-running response's body, which completes the request's audit record when it ends
/// (or the client goes).
struct Completing {
    inner: Body,
    recorder: Option<Arc<audit::Recorder>>,
    code: u16,
}

impl hyper::body::Body for Completing {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<std::result::Result<hyper::body::Frame<Self::Data>, Self::Error>>>
    {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Completing {
    fn drop(&mut self) {
        if let Some(r) = self.recorder.take() {
            r.complete(audit::ResponseStatus::code(self.code));
        }
    }
}

/// The `Status` response for an error, with `Retry-After` when the status asks for a delay
/// (as kube-apiserver's `ErrorNegotiated` does).
pub fn error_response(e: &Error) -> Response<Body> {
    let status = e.status();
    let retry_after = status
        .pointer("/details/retryAfterSeconds")
        .and_then(serde_json::Value::as_u64)
        .filter(|s| *s > 0);
    let body = serde_json::to_vec(&status).unwrap_or_default();
    let mut resp = Response::builder()
        .status(StatusCode::from_u16(e.code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(s) = retry_after {
        resp = resp.header(header::RETRY_AFTER, s);
    }
    resp.body(Body::from(body)).expect("valid response")
}

/// The verb of a request for a path that is not a resource: its method, lowercased.
fn path_verb(method: &Method) -> &'static str {
    match method.as_str() {
        "GET" => "get",
        "HEAD" => "head",
        "POST" => "post",
        "PUT" => "put",
        "PATCH" => "patch",
        "DELETE" => "delete",
        _ => "unknown",
    }
}

/// The credentials a refused request tried, as kube-apiserver's audit log lists them.
fn attempted(headers: &http::HeaderMap, q: &Query, certificate: bool) -> Vec<&'static str> {
    let mut out = Vec::new();
    let auth = headers
        .get(header::AUTHORIZATION)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_string())
        .unwrap_or_default();
    let mut parts = auth.split(' ');
    let scheme = parts.next().unwrap_or("");
    let has_value = parts.next().is_some();
    if scheme.eq_ignore_ascii_case("basic") && has_value {
        out.push("basic");
    }
    if scheme.eq_ignore_ascii_case("bearer") && has_value {
        out.push("bearer");
    }
    if q.get("access_token").is_some_and(|t| !t.trim().is_empty()) {
        out.push("access_token");
    }
    if certificate {
        out.push("x509");
    }
    out
}

/// Authenticates, authorizes, and hands the request to the part of the API it addresses.
/// With auditing on, the request's record begins once its user is known (`recorder`).
async fn serve(
    state: &Arc<State>,
    mut req: Request<hyper::body::Incoming>,
    route: Route,
    q: &Query,
    origin: Option<audit::Origin>,
    recorder: &mut Option<Arc<audit::Recorder>>,
) -> Result<Response<Body>> {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let verb_name = match &route {
        Route::Resource(t) => verb(&method, t, q),
        Route::Discovery(_) => "get",
        Route::Other(_) => path_verb(&method),
    };
    // What is asked, before knowing who asks.
    let nobody = UserInfo::default();
    let field_selector = q.get("fieldSelector").unwrap_or("");
    let (asked, api_version) = match &route {
        Route::Resource(t) => {
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
                user: &nobody,
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
            (attrs, t.version.as_str())
        }
        Route::Discovery(_) | Route::Other(_) => {
            let attrs = Attributes {
                user: &nobody,
                verb: verb_name,
                resource_request: false,
                api_group: "",
                resource: "",
                subresource: "",
                namespace: "",
                name: "",
                path: &path,
                field_selector: "",
            };
            (attrs, "")
        }
    };
    let cert_user = req
        .extensions()
        .get::<Option<UserInfo>>()
        .cloned()
        .flatten();
    let user = match state.authn.authenticate(cert_user.as_ref(), req.headers()) {
        Ok(u) => u,
        Err(e) => {
            if let (Some(a), Some(origin)) = (&state.audit, origin) {
                let tried = attempted(req.headers(), q, cert_user.is_some());
                let attrs = audit::policy::Attributes::of(&asked, None);
                a.failed_authentication(&attrs, api_version, origin, &tried);
            }
            return Err(e);
        }
    };
    if let (Some(a), Some(origin)) = (&state.audit, origin) {
        let attrs = audit::policy::Attributes::of(&asked, Some(&user));
        *recorder = a.begin(&attrs, api_version, origin)?;
    }
    let impersonating = crate::auth::impersonation::requested(req.headers());
    let user = crate::auth::impersonation::impersonate(req.headers(), user, &*state.authz)?;
    let rec = recorder.as_ref();
    if let (true, Some(r)) = (impersonating, rec) {
        r.impersonated(&user);
    }
    authorize(
        state,
        &Attributes {
            user: &user,
            ..asked
        },
        rec.map(|r| &**r),
    )?;
    if let Some(r) = rec {
        // The handlers record the request's body through it.
        req.extensions_mut().insert(r.clone());
    }
    match route {
        Route::Other(p) => nonresource::serve(state, &req, &p).await,
        Route::Discovery(segs) => discovery::serve(state, &req, &segs),
        Route::Resource(t) => resource::serve(state, req, t, verb_name, q, &user).await,
    }
}

fn authorize(state: &State, attrs: &Attributes<'_>, rec: Option<&audit::Recorder>) -> Result<()> {
    let decision = match rec {
        None => state.authz.authorize(attrs),
        Some(r) => {
            let (d, why) = state.authz.authorize_with_reason(attrs);
            r.authorized(d == Decision::Allow, &why);
            d
        }
    };
    match decision {
        Decision::Allow => Ok(()),
        Decision::Deny(why) | Decision::NoOpinion(why) => Err(crate::auth::forbidden(attrs, &why)),
    }
}
