//! The gRPC door: `skiff.v1.Resources` and `skiff.v1.Server` (see `proto/skiff/v1/api.proto`),
//! plus gRPC health and server reflection, on the same port as REST.
//!
//! Every RPC authenticates, authorizes and then calls the same [`crate::store`] operation the
//! REST handler calls, subresources included; only the encoding differs. Errors become gRPC statuses here, once,
//! with the Kubernetes `Status` in the details.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use bytes::Bytes;
use futures::{FutureExt, Stream};
use serde_json::Value;
use skiff_proto::v1 as pb;
use skiff_proto::v1::resources_server::{Resources, ResourcesServer};
use skiff_proto::v1::server_server::{Server, ServerServer};
use tonic::{Code, Request, Response, Status};

use crate::audit;
use crate::auth::{Attributes, Decision, UserInfo};
use crate::error::Error;
use crate::patch::PatchType;
use crate::registry::{Resource, ResourceInfo};
use crate::request::{
    DeleteOpts, Deleted, FieldValidation, ListOpts, Notes, Propagation, WatchOpts, WriteOpts,
    Written,
};
use crate::selectors::{FieldSelector, LabelSelector};
use crate::state::State;
use crate::storage::cached::Cached;
use crate::storage::watch_cache::EventType;

/// The gRPC services, ready to be called with HTTP/2 requests whose content type is
/// `application/grpc`.
pub fn routes(state: Arc<State>) -> anyhow::Result<tonic::service::Routes> {
    let door = Door { state };
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(skiff_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(skiff_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    let (reporter, health) = tonic_health::server::health_reporter();
    let shutdown = door.state.shutdown.clone();
    tokio::spawn(async move {
        reporter.set_serving::<ResourcesServer<Door>>().await;
        reporter.set_serving::<ServerServer<Door>>().await;
        shutdown.cancelled().await;
        reporter.set_not_serving::<ResourcesServer<Door>>().await;
        reporter.set_not_serving::<ServerServer<Door>>().await;
        reporter
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
    });
    Ok(tonic::service::Routes::new(
        ResourcesServer::new(door.clone())
            .max_decoding_message_size(crate::rest::MAX_BODY + 64 * 1024)
            .max_encoding_message_size(usize::MAX),
    )
    .add_service(ServerServer::new(door))
    .add_service(health)
    .add_service(reflection_v1)
    .add_service(reflection_v1alpha))
}

/// The gRPC status for an error: the code its HTTP code and reason map to, the message, and
/// the Kubernetes `Status` in the details.
pub fn status(e: &Error) -> Status {
    let s = e.status();
    let code = grpc_code(e.code(), e.reason(), &s);
    let detail = pb::Status {
        code: i32::from(e.code()),
        reason: e.reason().to_string(),
        message: s["message"].as_str().unwrap_or_default().to_string(),
        json: serde_json::to_vec(&s).unwrap_or_default().into(),
    };
    let details = detail.to_details(code);
    Status::with_details(code, detail.message, details.into())
}

fn grpc_code(http: u16, reason: &str, status: &Value) -> Code {
    let cause_is = |want: &str| {
        status
            .pointer("/details/causes")
            .and_then(Value::as_array)
            .is_some_and(|c| c.iter().any(|c| c["reason"] == want))
    };
    match (http, reason) {
        (400, _) | (422, _) | (415, _) | (406, _) => Code::InvalidArgument,
        (401, _) => Code::Unauthenticated,
        (403, _) if cause_is("NamespaceTerminating") => Code::FailedPrecondition,
        (403, _) => Code::PermissionDenied,
        (404, _) => Code::NotFound,
        (405, _) => Code::Unimplemented,
        (409, "AlreadyExists") => Code::AlreadyExists,
        (409, _) => Code::Aborted,
        (410, _) => Code::OutOfRange,
        (413, _) | (429, _) => Code::ResourceExhausted,
        (503, _) => Code::Unavailable,
        (504, _) => Code::DeadlineExceeded,
        _ => Code::Internal,
    }
}

#[derive(Clone)]
struct Door {
    state: Arc<State>,
}

/// What an RPC is about, once checked: the resource, its namespace, and who asks.
struct Target {
    resource: Resource,
    namespace: Option<String>,
    user: UserInfo,
}

impl Target {
    fn ns(&self) -> Option<&str> {
        self.namespace.as_deref()
    }
}

/// The resource a request names, for metrics and logs.
fn resource_of(r: &Option<pb::ResourceRef>) -> &str {
    r.as_ref().map_or("", |r| r.resource.as_str())
}

fn envelope(r: &ResourceInfo, json: Bytes) -> pb::Object {
    pb::Object {
        api_version: r.api_version().to_string(),
        kind: r.kind.to_string(),
        json,
    }
}

/// A cached object's JSON goes out as it is, shared rather than copied.
fn cached_envelope(r: &ResourceInfo, c: &Cached) -> pb::Object {
    envelope(r, c.json.clone())
}

/// An object's envelope, named by its own apiVersion and kind when it has them (a Scale or a
/// Status from a subresource), else by the resource's.
fn value_envelope(r: &ResourceInfo, v: &Value) -> pb::Object {
    let own = |f: &str| v.get(f).and_then(Value::as_str).filter(|s| !s.is_empty());
    pb::Object {
        api_version: own("apiVersion").unwrap_or(r.api_version()).to_string(),
        kind: own("kind").unwrap_or(&r.kind).to_string(),
        json: serde_json::to_vec(v).unwrap_or_default().into(),
    }
}

fn written(r: &ResourceInfo, w: Written) -> pb::WriteResponse {
    pb::WriteResponse {
        object: Some(value_envelope(r, &w.object)),
        warnings: w.warnings,
        created: w.created,
    }
}

/// Decodes an envelope's JSON, filling apiVersion and kind from the envelope when the JSON
/// leaves them out, and refusing an envelope that disagrees with its own JSON.
fn decode_object(o: Option<pb::Object>) -> Result<Value, Error> {
    let o = o.ok_or_else(|| Error::bad_request("object: Required value"))?;
    let mut v: Value = serde_json::from_slice(&o.json)
        .map_err(|e| Error::bad_request(format!("object.json: invalid JSON: {e}")))?;
    let Some(m) = v.as_object_mut() else {
        return Err(Error::bad_request("object.json: must be a JSON object"));
    };
    for (field, given) in [("apiVersion", &o.api_version), ("kind", &o.kind)] {
        if given.is_empty() {
            continue;
        }
        match m.get(field).and_then(Value::as_str) {
            None | Some("") => {
                m.insert(field.into(), Value::String(given.clone()));
            }
            Some(inner) if inner != given => {
                return Err(Error::bad_request(format!(
                    "object: the envelope's {field} {given:?} does not match the object's {inner:?}"
                )))
            }
            Some(_) => {}
        }
    }
    Ok(v)
}

fn write_opts(
    o: Option<pb::WriteOptions>,
    apply: bool,
    user: &UserInfo,
    notes: Notes,
) -> Result<WriteOpts, Error> {
    let o = o.unwrap_or_default();
    let field_validation = match pb::FieldValidation::try_from(o.field_validation) {
        Ok(pb::FieldValidation::Unspecified) | Ok(pb::FieldValidation::Warn) => {
            FieldValidation::Warn
        }
        Ok(pb::FieldValidation::Ignore) => FieldValidation::Ignore,
        Ok(pb::FieldValidation::Strict) => FieldValidation::Strict,
        Err(_) => {
            return Err(Error::bad_request(format!(
                "options.field_validation: unknown value {}",
                o.field_validation
            )))
        }
    };
    if o.field_manager.len() > 128 || o.field_manager.chars().any(|c| c.is_control()) {
        return Err(Error::bad_request(
            "fieldManager: Invalid value: must be at most 128 printable characters",
        ));
    }
    if o.force && !apply {
        return Err(Error::bad_request(
            "force: Forbidden: may not be specified for non-apply patch",
        ));
    }
    Ok(WriteOpts {
        dry_run: o.dry_run,
        field_validation,
        field_manager: Some(o.field_manager).filter(|m| !m.is_empty()),
        force: o.force,
        user: user.clone(),
        notes,
        decoded: Default::default(),
    })
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchEvent, Status>> + Send>>;

/// One RPC's audit: the method's path, its id, and its record once the caller is known.
struct Call {
    method: &'static str,
    audit_id: String,
    received: Option<chrono::DateTime<chrono::Utc>>,
    recorder: OnceLock<Arc<audit::Recorder>>,
}

impl Call {
    fn recorder(&self) -> Option<&Arc<audit::Recorder>> {
        self.recorder.get()
    }

    /// Where admission's warnings and audit annotations for this call go.
    fn notes(&self) -> Notes {
        Notes::audited(self.recorder().cloned())
    }

    /// The request's decoded object, for the record.
    fn request_object(&self, v: &Value) {
        if let Some(r) = self.recorder() {
            r.request_object(v);
        }
    }
}

/// What of a response the audit log records at level `RequestResponse`.
trait Audited {
    /// The response as a Kubernetes object, if it is one.
    fn object(&self) -> Option<Value> {
        None
    }

    /// Whether the response is a stream whose end completes the record.
    fn long_running(&self) -> bool {
        false
    }
}

fn parse_object(o: &Option<pb::Object>) -> Option<Value> {
    o.as_ref()
        .and_then(|o| serde_json::from_slice(&o.json).ok())
}

impl Audited for pb::Object {
    fn object(&self) -> Option<Value> {
        serde_json::from_slice(&self.json).ok()
    }
}

impl Audited for pb::WriteResponse {
    fn object(&self) -> Option<Value> {
        parse_object(&self.object)
    }
}

impl Audited for pb::DeleteResponse {
    fn object(&self) -> Option<Value> {
        parse_object(&self.object)
    }
}

impl Audited for pb::ListResponse {
    fn object(&self) -> Option<Value> {
        let items: Vec<Value> = self
            .items
            .iter()
            .filter_map(|o| serde_json::from_slice(&o.json).ok())
            .collect();
        let mut metadata = serde_json::Map::new();
        metadata.insert(
            "resourceVersion".into(),
            self.resource_version.clone().into(),
        );
        if !self.r#continue.is_empty() {
            metadata.insert("continue".into(), self.r#continue.clone().into());
        }
        Some(serde_json::json!({
            "kind": self.kind, "apiVersion": self.api_version,
            "metadata": metadata, "items": items,
        }))
    }
}

impl Audited for pb::BindResponse {}

impl Audited for pb::VersionInfo {}

impl Audited for WatchStream {
    fn long_running(&self) -> bool {
        true
    }
}

/// A watch's events, which complete the call's audit record when the stream ends or the
/// client goes.
struct Completing {
    inner: WatchStream,
    recorder: Option<Arc<audit::Recorder>>,
}

impl Stream for Completing {
    type Item = Result<pb::WatchEvent, Status>;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

impl Drop for Completing {
    fn drop(&mut self) {
        if let Some(r) = self.recorder.take() {
            r.complete(audit::ResponseStatus::code(200));
        }
    }
}

impl Door {
    /// Starts an RPC's audit: its id (the caller's `audit-id` metadata, else a new one) and,
    /// when auditing, when it arrived.
    fn call_for<T>(&self, req: &Request<T>, method: &'static str) -> Call {
        Call {
            method,
            audit_id: audit::audit_id(req.metadata().as_ref()),
            received: self.state.audit.as_ref().map(|_| chrono::Utc::now()),
            recorder: OnceLock::new(),
        }
    }

    /// Authenticates the caller (its bearer token, else its client certificate), begins the
    /// call's audit record as `asked` by that user, and applies impersonation.
    fn user<T>(
        &self,
        req: &Request<T>,
        call: &Call,
        asked: &Attributes<'_>,
        api_version: &str,
    ) -> Result<UserInfo, Error> {
        let cert = req
            .extensions()
            .get::<Option<UserInfo>>()
            .cloned()
            .flatten();
        let headers: &http::HeaderMap = req.metadata().as_ref();
        let origin = || {
            let peer = req.extensions().get::<audit::Peer>().copied();
            audit::Origin::new(
                &call.audit_id,
                call.received.unwrap_or_else(chrono::Utc::now),
                call.method,
                headers,
                peer,
            )
        };
        let user = match self.state.authn.authenticate(cert.as_ref(), headers) {
            Ok(u) => u,
            Err(e) => {
                if let Some(a) = &self.state.audit {
                    let mut tried = Vec::new();
                    if crate::auth::authn::bearer(headers).is_some() {
                        tried.push("bearer");
                    }
                    if cert.is_some() {
                        tried.push("x509");
                    }
                    let attrs = audit::policy::Attributes::of(asked, None);
                    a.failed_authentication(&attrs, api_version, origin(), &tried);
                }
                return Err(e);
            }
        };
        if let Some(a) = &self.state.audit {
            let attrs = audit::policy::Attributes::of(asked, Some(&user));
            if let Some(r) = a.begin(&attrs, api_version, origin())? {
                let _ = call.recorder.set(r);
            }
        }
        let impersonating = crate::auth::impersonation::requested(headers);
        let user = crate::auth::impersonation::impersonate(headers, user, &*self.state.authz)?;
        if let (true, Some(r)) = (impersonating, call.recorder()) {
            r.impersonated(&user);
        }
        Ok(user)
    }

    /// Asks the authorizer (for the call's audit record, with its reason); 403 unless allowed.
    fn authorize(&self, call: &Call, attrs: &Attributes<'_>) -> Result<(), Error> {
        let decision = match call.recorder() {
            None => self.state.authz.authorize(attrs),
            Some(r) => {
                let (d, why) = self.state.authz.authorize_with_reason(attrs);
                r.authorized(d == Decision::Allow, &why);
                d
            }
        };
        match decision {
            Decision::Allow => Ok(()),
            Decision::Deny(why) | Decision::NoOpinion(why) => {
                Err(crate::auth::forbidden(attrs, &why))
            }
        }
    }

    /// Resolves and authorizes a resource request.
    fn target<T>(
        &self,
        req: &Request<T>,
        call: &Call,
        r: Option<&pb::ResourceRef>,
        verb: &str,
        subresource: &str,
        name: &str,
    ) -> Result<Target, Error> {
        self.target_selecting(req, call, r, verb, subresource, name, "")
    }

    /// Resolves and authorizes a list or watch, whose field selector the authorizer sees (and
    /// whose `metadata.name` requirement, absent a name, names the object read).
    #[allow(clippy::too_many_arguments)]
    fn target_selecting<T>(
        &self,
        req: &Request<T>,
        call: &Call,
        r: Option<&pb::ResourceRef>,
        verb: &str,
        subresource: &str,
        name: &str,
        field_selector: &str,
    ) -> Result<Target, Error> {
        let name = match name {
            "" => crate::auth::field_requirement(field_selector, "metadata.name").unwrap_or(""),
            n => n,
        };
        let nobody = UserInfo::default();
        let asked = Attributes {
            user: &nobody,
            verb,
            resource_request: true,
            api_group: r.map_or("", |r| r.group.as_str()),
            resource: r.map_or("", |r| r.resource.as_str()),
            subresource,
            namespace: r.map_or("", |r| r.namespace.as_str()),
            name,
            path: "",
            field_selector,
        };
        let user = self.user(req, call, &asked, r.map_or("", |r| r.version.as_str()))?;
        let r = r.ok_or_else(|| Error::bad_request("resource: Required value"))?;
        let found = if r.version.is_empty() {
            // No version: the one the server serves the resource at (what a client that
            // knows a resource only by group and name, as a quota's `count/` does, asks for).
            self.state
                .store
                .resources()
                .into_iter()
                .find(|x| x.group == r.group && x.plural == r.resource)
        } else {
            self.state.store.find(&r.group, &r.version, &r.resource)
        };
        let resource = found.ok_or_else(|| {
            Error::not_found_message(format!(
                "the server could not find the requested resource {:?} in {:?}",
                r.resource,
                if r.group.is_empty() {
                    r.version.clone()
                } else {
                    format!("{}/{}", r.group, r.version)
                }
            ))
        })?;
        if (resource.create_only.is_some() && (verb != "create" || !subresource.is_empty()))
            || (subresource.is_empty() && !resource.verbs().contains(&verb))
        {
            return Err(Error::method_not_allowed(
                "the server does not allow this method on the requested resource",
            ));
        }
        if resource.computed.is_some()
            && (!matches!(verb, "get" | "list") || !subresource.is_empty())
        {
            return Err(Error::method_not_allowed(
                "the server does not allow this method on the requested resource",
            ));
        }
        let served = resource
            .subresource(subresource)
            .is_some_and(|s| !s.connect());
        if !subresource.is_empty() && !served {
            return Err(crate::store::no_such_subresource(subresource));
        }
        if !resource.namespaced && !r.namespace.is_empty() {
            return Err(Error::bad_request(format!(
                "resource.namespace: {} are cluster-scoped; the namespace must be empty",
                resource.plural
            )));
        }
        let namespace = Some(r.namespace.clone()).filter(|n| !n.is_empty());
        let attrs = Attributes {
            user: &user,
            verb,
            resource_request: true,
            api_group: &r.group,
            resource: &resource.plural,
            subresource,
            namespace: namespace.as_deref().unwrap_or(""),
            name,
            path: "",
            field_selector,
        };
        self.authorize(call, &attrs)?;
        Ok(Target {
            resource,
            namespace,
            user,
        })
    }

    /// Runs one RPC: its metrics, its log line, its audit record's end, and the one mapping of
    /// its error.
    async fn call<T, F>(
        &self,
        call: &Call,
        verb: &str,
        resource: &str,
        f: F,
    ) -> Result<Response<T>, Status>
    where
        T: Audited,
        F: std::future::Future<Output = Result<T, Error>>,
    {
        let start = Instant::now();
        let result = match AssertUnwindSafe(f).catch_unwind().await {
            Ok(r) => r,
            Err(panic) => {
                let message = audit::panic_message(&*panic);
                tracing::error!(verb, resource, panic = %message, "serving an RPC panicked");
                if let Some(r) = call.recorder() {
                    r.panicked(&message);
                }
                Err(Error::internal(
                    "the server failed while serving the request",
                ))
            }
        };
        let code = match &result {
            Ok(_) => 200,
            Err(e) => e.code(),
        };
        self.state
            .metrics
            .observe_request(&verb.to_uppercase(), resource, code, start.elapsed());
        tracing::debug!(
            verb,
            resource,
            code,
            took_ms = start.elapsed().as_secs_f64() * 1000.0,
            "grpc request"
        );
        let result = match (call.recorder(), result) {
            (Some(r), Ok(v)) if v.long_running() => {
                r.response_started(200);
                Ok(v)
            }
            (Some(r), Ok(v)) => {
                if r.wants_response_object() {
                    if let Some(o) = v.object() {
                        r.response_object(o);
                    }
                }
                r.complete(audit::ResponseStatus::code(200));
                Ok(v)
            }
            (Some(r), Err(e)) => {
                let status = e.status();
                if r.wants_response_object() {
                    r.response_object(status.clone());
                }
                r.complete(audit::ResponseStatus::from_status(&status));
                Err(e)
            }
            (None, result) => result,
        };
        let id = tonic::metadata::MetadataValue::try_from(call.audit_id.as_str()).ok();
        match result {
            Ok(v) => {
                let mut resp = Response::new(v);
                if let Some(id) = id {
                    resp.metadata_mut().insert(audit::AUDIT_ID_HEADER, id);
                }
                Ok(resp)
            }
            Err(e) => {
                if e.code() >= 500 {
                    tracing::warn!(verb, resource, error = %e, "grpc request failed");
                }
                let mut s = status(&e);
                if let Some(id) = id {
                    s.metadata_mut().insert(audit::AUDIT_ID_HEADER, id);
                }
                Err(s)
            }
        }
    }

    /// The namespace a write goes to: the request's, else the object's own.
    fn write_namespace(t: &mut Target, obj: &Value) -> Result<(), Error> {
        if t.resource.namespaced && t.namespace.is_none() {
            let own = obj
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty());
            match own {
                Some(ns) => t.namespace = Some(ns.to_string()),
                None => {
                    return Err(Error::bad_request(format!(
                        "resource.namespace: Required value: {} are namespaced; set it in the request or in metadata.namespace",
                        t.resource.plural
                    )))
                }
            }
        }
        Ok(())
    }

    fn require_namespace(t: &Target) -> Result<(), Error> {
        if t.resource.namespaced && t.namespace.is_none() {
            return Err(Error::bad_request(format!(
                "resource.namespace: Required value: {} are namespaced",
                t.resource.plural
            )));
        }
        Ok(())
    }

    fn require_name(name: &str) -> Result<(), Error> {
        if name.is_empty() {
            return Err(Error::bad_request("name: Required value"));
        }
        Ok(())
    }

    /// Update, UpdateStatus, and Update of a subresource.
    async fn update(
        &self,
        req: Request<pb::UpdateRequest>,
        call: &Call,
        sub: &str,
    ) -> Result<pb::WriteResponse, Error> {
        let inner = req.get_ref();
        let obj = decode_object(inner.object.clone())?;
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        Self::require_name(&name).map_err(|_| {
            Error::bad_request(
                "object.metadata.name: Required value: the name of the object to replace",
            )
        })?;
        let mut t = self.target(&req, call, inner.resource.as_ref(), "update", sub, &name)?;
        call.request_object(&obj);
        Self::write_namespace(&mut t, &obj)?;
        let mut opts = write_opts(inner.options.clone(), false, &t.user, call.notes())?;
        if let (Some(o), "" | "status") = (inner.object.as_ref(), sub) {
            opts.decoded =
                crate::rest::negotiate::decoded_json(&o.json, &t.resource, opts.field_validation);
        }
        let store = &self.state.store;
        let w = match sub {
            "" => {
                store
                    .update(&t.resource, t.ns(), &name, obj, None, &opts)
                    .await?
            }
            sub => {
                store
                    .update_subresource(&t.resource, t.ns(), &name, sub, obj, &opts)
                    .await?
            }
        };
        Ok(written(&t.resource, w))
    }
}

#[tonic::async_trait]
impl Resources for Door {
    async fn get(&self, req: Request<pb::GetRequest>) -> Result<Response<pb::Object>, Status> {
        let resource = resource_of(&req.get_ref().resource);
        let call = self.call_for(&req, "/skiff.v1.Resources/Get");
        self.call(&call, "get", resource, async {
            let q = req.get_ref();
            Self::require_name(&q.name)?;
            let t = self.target(
                &req,
                &call,
                q.resource.as_ref(),
                "get",
                &q.subresource,
                &q.name,
            )?;
            Self::require_namespace(&t)?;
            let store = &self.state.store;
            if let Some(c) = &t.resource.computed {
                let obj = c.objects(Some(&q.name)).await?.into_iter().next();
                let obj = obj.ok_or_else(|| c.not_found(&q.name))?;
                return Ok(value_envelope(&t.resource, &obj));
            }
            if q.subresource.is_empty() {
                let json = store.get_json(&t.resource, t.ns(), &q.name).await?;
                Ok(envelope(&t.resource, json))
            } else {
                let v = store
                    .get_subresource(&t.resource, t.ns(), &q.name, &q.subresource)
                    .await?;
                Ok(value_envelope(&t.resource, &v))
            }
        })
        .await
    }

    async fn list(
        &self,
        req: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        let resource = resource_of(&req.get_ref().resource);
        let call = self.call_for(&req, "/skiff.v1.Resources/List");
        self.call(&call, "list", resource, async {
            let t = self.target_selecting(
                &req,
                &call,
                req.get_ref().resource.as_ref(),
                "list",
                "",
                "",
                &req.get_ref().field_selector,
            )?;
            let q = req.get_ref();
            if q.limit < 0 {
                return Err(Error::bad_request(format!(
                    "limit: Invalid value: {}: must be 0 or more",
                    q.limit
                )));
            }
            let opts = ListOpts {
                labels: LabelSelector::parse(&q.label_selector)?,
                fields: FieldSelector::parse(&q.field_selector, &*t.resource)?,
                limit: q.limit,
                continue_token: Some(q.r#continue.clone()).filter(|c| !c.is_empty()),
                resource_version: Some(q.resource_version.clone()).filter(|c| !c.is_empty()),
                resource_version_match: Some(q.resource_version_match.clone())
                    .filter(|c| !c.is_empty()),
            };
            if let Some(c) = &t.resource.computed {
                let mut items = c.objects(None).await?;
                items.retain(|o| opts.labels.matches(o) && opts.fields.matches(&*t.resource, o));
                return Ok(pb::ListResponse {
                    api_version: t.resource.api_version().to_string(),
                    kind: format!("{}List", t.resource.kind),
                    items: items
                        .iter()
                        .map(|v| value_envelope(&t.resource, v))
                        .collect(),
                    ..Default::default()
                });
            }
            let listed = self.state.store.list(&t.resource, t.ns(), &opts).await?;
            Ok(pb::ListResponse {
                api_version: t.resource.api_version().to_string(),
                kind: format!("{}List", t.resource.kind),
                resource_version: listed.rv.to_string(),
                r#continue: listed.continue_token.unwrap_or_default(),
                remaining_item_count: listed.remaining,
                items: listed
                    .items
                    .iter()
                    .map(|c| cached_envelope(&t.resource, c))
                    .collect(),
            })
        })
        .await
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        req: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let resource = resource_of(&req.get_ref().resource);
        let call = self.call_for(&req, "/skiff.v1.Resources/Watch");
        self.call(&call, "watch", resource, async {
            let q = req.get_ref();
            let t = self.target_selecting(
                &req,
                &call,
                q.resource.as_ref(),
                "watch",
                "",
                &q.name,
                &q.field_selector,
            )?;
            let mut fields = q.field_selector.clone();
            if !q.name.is_empty() {
                if !fields.is_empty() {
                    fields.push(',');
                }
                fields.push_str(&format!("metadata.name={}", q.name));
            }
            let opts = WatchOpts {
                labels: LabelSelector::parse(&q.label_selector)?,
                fields: FieldSelector::parse(&fields, &*t.resource)?,
                resource_version: Some(q.resource_version.clone()).filter(|c| !c.is_empty()),
                bookmarks: q.allow_bookmarks,
                send_initial_events: q.send_initial_events,
            };
            let watch = self.state.store.watch(&t.resource, t.ns(), opts).await?;
            let deadline = tokio::time::Instant::now()
                + crate::request::watch_duration(Some(q.timeout_seconds));
            let r = t.resource.clone();
            let gauge = crate::metrics::WatchGauge::new(&self.state.metrics, &r.plural);
            let shutdown = self.state.shutdown.clone();
            let stream = futures::stream::unfold((watch, gauge), move |(mut w, gauge)| {
                let shutdown = shutdown.clone();
                let r = r.clone();
                async move {
                    let item = w.next_before(&shutdown, deadline).await?;
                    let ty = match item.kind {
                        EventType::Added => pb::EventType::Added,
                        EventType::Modified => pb::EventType::Modified,
                        EventType::Deleted => pb::EventType::Deleted,
                        EventType::Bookmark => pb::EventType::Bookmark,
                    };
                    let initial_events_end = item.kind == EventType::Bookmark
                        && item
                            .object
                            .value()
                            .pointer("/metadata/annotations/k8s.io~1initial-events-end")
                            .is_some();
                    let ev = pb::WatchEvent {
                        r#type: ty as i32,
                        resource_version: item.object.rv.to_string(),
                        object: Some(cached_envelope(&r, &item.object)),
                        initial_events_end,
                    };
                    Some((Ok(ev), (w, gauge)))
                }
            });
            let stream = Box::pin(stream) as WatchStream;
            Ok(match call.recorder() {
                None => stream,
                Some(r) => Box::pin(Completing {
                    inner: stream,
                    recorder: Some(r.clone()),
                }) as WatchStream,
            })
        })
        .await
    }

    async fn create(
        &self,
        req: Request<pb::CreateRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let resource = resource_of(&req.get_ref().resource);
        let call = self.call_for(&req, "/skiff.v1.Resources/Create");
        self.call(&call, "create", resource, async {
            let inner = req.get_ref();
            if inner.subresource.is_empty() {
                let mut t = self.target(&req, &call, inner.resource.as_ref(), "create", "", "")?;
                let obj = decode_object(inner.object.clone())?;
                call.request_object(&obj);
                if let Some(handler) = t.resource.create_only.as_ref() {
                    let fv = write_opts(inner.options.clone(), false, &t.user, call.notes())?
                        .field_validation;
                    let problems = match (&inner.object, fv) {
                        (_, crate::request::FieldValidation::Ignore) | (None, _) => Vec::new(),
                        (Some(o), _) => t.resource.strategy.strict_json(&o.json),
                    };
                    let warnings = fv.judge(&problems, &t.resource.kind, &t.resource.version)?;
                    let cx = crate::registry::review::Context {
                        user: &t.user,
                        authz: &*self.state.authz,
                        authn: &self.state.authn,
                    };
                    let answer = handler.create(&cx, t.ns(), obj)?;
                    return Ok(pb::WriteResponse {
                        object: Some(value_envelope(&t.resource, &answer)),
                        warnings,
                        created: true,
                    });
                }
                Self::write_namespace(&mut t, &obj)?;
                let mut opts = write_opts(inner.options.clone(), false, &t.user, call.notes())?;
                if let Some(o) = inner.object.as_ref() {
                    opts.decoded = crate::rest::negotiate::decoded_json(
                        &o.json,
                        &t.resource,
                        opts.field_validation,
                    );
                }
                let w = self
                    .state
                    .store
                    .create(&t.resource, t.ns(), obj, &opts)
                    .await?;
                return Ok(written(&t.resource, w));
            }
            Self::require_name(&inner.name).map_err(|_| {
                Error::bad_request("name: Required value: the object whose subresource to create")
            })?;
            let t = self.target(
                &req,
                &call,
                inner.resource.as_ref(),
                "create",
                &inner.subresource,
                &inner.name,
            )?;
            let obj = decode_object(inner.object.clone())?;
            call.request_object(&obj);
            Self::require_namespace(&t)?;
            let mut opts = write_opts(inner.options.clone(), false, &t.user, call.notes())?;
            if let (Some(o), Some(h)) = (
                inner.object.as_ref(),
                t.resource.subresource(&inner.subresource),
            ) {
                if opts.field_validation != crate::request::FieldValidation::Ignore {
                    opts.decoded.problems = h.strict_json(&o.json);
                }
            }
            let answer = self
                .state
                .store
                .create_subresource(
                    &t.resource,
                    t.ns(),
                    &inner.name,
                    &inner.subresource,
                    obj,
                    &opts,
                )
                .await?;
            Ok(pb::WriteResponse {
                object: Some(value_envelope(&t.resource, &answer)),
                warnings: Vec::new(),
                created: true,
            })
        })
        .await
    }

    async fn update(
        &self,
        req: Request<pb::UpdateRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let resource = resource_of(&req.get_ref().resource).to_string();
        let sub = req.get_ref().subresource.clone();
        let call = self.call_for(&req, "/skiff.v1.Resources/Update");
        self.call(
            &call,
            "update",
            &resource,
            Door::update(self, req, &call, &sub),
        )
        .await
    }

    async fn update_status(
        &self,
        req: Request<pb::UpdateRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let resource = resource_of(&req.get_ref().resource).to_string();
        let call = self.call_for(&req, "/skiff.v1.Resources/UpdateStatus");
        self.call(
            &call,
            "update",
            &resource,
            Door::update(self, req, &call, "status"),
        )
        .await
    }

    async fn patch(
        &self,
        req: Request<pb::PatchRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let resource = resource_of(&req.get_ref().resource);
        let call = self.call_for(&req, "/skiff.v1.Resources/Patch");
        self.call(&call, "patch", resource, async {
            let inner = req.get_ref();
            Self::require_name(&inner.name)?;
            let ptype = match pb::PatchType::try_from(inner.r#type) {
                Ok(pb::PatchType::Json) => PatchType::Json,
                Ok(pb::PatchType::Merge) => PatchType::Merge,
                Ok(pb::PatchType::StrategicMerge) => PatchType::Strategic,
                Ok(pb::PatchType::Apply) => PatchType::Apply,
                _ => return Err(Error::bad_request(
                    "type: Unsupported value: must be one of JSON, MERGE, STRATEGIC_MERGE, APPLY",
                )),
            };
            let sub = inner.subresource.as_str();
            let t = self.target(
                &req,
                &call,
                inner.resource.as_ref(),
                "patch",
                sub,
                &inner.name,
            )?;
            Self::require_namespace(&t)?;
            let body = crate::rest::negotiate::decode_patch(ptype, &inner.patch)?;
            if let Some(r) = call.recorder() {
                r.request_patch(&body);
            }
            let mut opts = write_opts(
                inner.options.clone(),
                ptype == PatchType::Apply,
                &t.user,
                call.notes(),
            )?;
            if matches!(sub, "" | "status") {
                opts.decoded = crate::rest::negotiate::decoded_patch(
                    ptype,
                    &inner.patch,
                    &body,
                    opts.field_validation,
                );
            }
            let store = &self.state.store;
            let w = match sub {
                "" => {
                    store
                        .patch(&t.resource, t.ns(), &inner.name, ptype, &body, None, &opts)
                        .await?
                }
                sub => {
                    store
                        .patch_subresource(
                            &t.resource,
                            t.ns(),
                            &inner.name,
                            sub,
                            ptype,
                            &body,
                            &opts,
                        )
                        .await?
                }
            };
            Ok(written(&t.resource, w))
        })
        .await
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let resource = resource_of(&req.get_ref().resource);
        let call = self.call_for(&req, "/skiff.v1.Resources/Delete");
        self.call(&call, "delete", resource, async {
            let inner = req.get_ref();
            Self::require_name(&inner.name)?;
            let t = self.target(
                &req,
                &call,
                inner.resource.as_ref(),
                "delete",
                "",
                &inner.name,
            )?;
            Self::require_namespace(&t)?;
            let propagation = match pb::PropagationPolicy::try_from(inner.propagation_policy) {
                Ok(pb::PropagationPolicy::Unspecified) => None,
                Ok(pb::PropagationPolicy::Orphan) => Some(Propagation::Orphan),
                Ok(pb::PropagationPolicy::Background) => Some(Propagation::Background),
                Ok(pb::PropagationPolicy::Foreground) => Some(Propagation::Foreground),
                Err(_) => {
                    return Err(Error::bad_request(format!(
                        "propagation_policy: Unsupported value: {}",
                        inner.propagation_policy
                    )))
                }
            };
            let pre = inner.preconditions.clone().unwrap_or_default();
            let opts = DeleteOpts {
                grace_period: inner.grace_period_seconds,
                propagation,
                uid: pre.uid,
                resource_version: pre.resource_version,
                dry_run: inner.dry_run,
                ignore_store_read_error: false,
                user: t.user.clone(),
                notes: call.notes(),
            };
            let (object, finished) = match self
                .state
                .store
                .delete(&t.resource, t.ns(), &inner.name, &opts)
                .await?
            {
                Deleted::Gone(o) => (o, true),
                Deleted::Pending(o) => (o, false),
            };
            Ok(pb::DeleteResponse {
                object: Some(value_envelope(&t.resource, &object)),
                finished,
            })
        })
        .await
    }

    async fn bind(
        &self,
        req: Request<pb::BindRequest>,
    ) -> Result<Response<pb::BindResponse>, Status> {
        let call = self.call_for(&req, "/skiff.v1.Resources/Bind");
        self.call(&call, "create", "pods", async {
            let inner = req.get_ref();
            Self::require_name(&inner.pod)
                .map_err(|_| Error::bad_request("pod: Required value"))?;
            let pods = pb::ResourceRef {
                group: String::new(),
                version: "v1".into(),
                resource: "pods".into(),
                namespace: inner.namespace.clone(),
            };
            let t = self.target(&req, &call, Some(&pods), "create", "binding", &inner.pod)?;
            Self::require_namespace(&t)?;
            let annotations: BTreeMap<String, String> = inner
                .annotations
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let binding = serde_json::json!({
                "apiVersion": "v1",
                "kind": "Binding",
                "metadata": {"name": inner.pod, "namespace": inner.namespace,
                             "uid": inner.pod_uid, "annotations": annotations},
                "target": {"kind": "Node", "name": inner.node},
            });
            call.request_object(&binding);
            let opts = WriteOpts {
                dry_run: inner.dry_run,
                user: t.user.clone(),
                notes: call.notes(),
                ..Default::default()
            };
            self.state
                .store
                .create_subresource(&t.resource, t.ns(), &inner.pod, "binding", binding, &opts)
                .await?;
            Ok(pb::BindResponse {})
        })
        .await
    }
}

#[tonic::async_trait]
impl Server for Door {
    async fn version(
        &self,
        req: Request<pb::VersionRequest>,
    ) -> Result<Response<pb::VersionInfo>, Status> {
        let call = self.call_for(&req, "/skiff.v1.Server/Version");
        self.call(&call, "get", "", async {
            // Authorized as REST's GET /version (which anonymous callers may read).
            let nobody = UserInfo::default();
            let mut attrs = Attributes {
                user: &nobody,
                verb: "get",
                resource_request: false,
                api_group: "",
                resource: "",
                subresource: "",
                namespace: "",
                name: "",
                path: "/version",
                field_selector: "",
            };
            let user = self.user(&req, &call, &attrs, "")?;
            attrs.user = &user;
            self.authorize(&call, &attrs)?;
            let v = crate::version::version();
            let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
            Ok(pb::VersionInfo {
                major: s("major"),
                minor: s("minor"),
                git_version: s("gitVersion"),
                git_commit: s("gitCommit"),
                git_tree_state: s("gitTreeState"),
                build_date: s("buildDate"),
                compiler: s("compiler"),
                platform: s("platform"),
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_kubernetes_reasons() {
        let cases = [
            (Error::not_found("pods", "x"), Code::NotFound),
            (Error::already_exists("pods", "x"), Code::AlreadyExists),
            (Error::stale("pods", "x"), Code::Aborted),
            (Error::bad_request("no"), Code::InvalidArgument),
            (
                Error::invalid("Pod", "", "x", vec![crate::error::Cause::required("spec")]),
                Code::InvalidArgument,
            ),
            (Error::gone("too old"), Code::OutOfRange),
            (Error::unauthorized(), Code::Unauthenticated),
            (Error::forbidden("no"), Code::PermissionDenied),
            (
                Error::forbidden_object("pods", "x", "terminating").with_cause(
                    "NamespaceTerminating",
                    "namespace x is being terminated",
                    "metadata.namespace",
                ),
                Code::FailedPrecondition,
            ),
            (Error::internal("boom"), Code::Internal),
        ];
        for (e, want) in cases {
            let s = status(&e);
            assert_eq!(s.code(), want, "{e}");
            let k = pb::Status::from_details(s.details()).expect("details carry the Status");
            assert_eq!(k.code, i32::from(e.code()));
            assert_eq!(k.reason, e.reason());
            let json: Value = serde_json::from_slice(&k.json).unwrap();
            assert_eq!(json["kind"], "Status");
            assert_eq!(json["reason"], e.reason());
        }
    }

    proptest::proptest! {
        #[test]
        fn any_envelope_decodes_or_is_refused(
            json in proptest::collection::vec(proptest::num::u8::ANY, 0..256),
            api_version in ".{0,8}",
            kind in ".{0,8}",
        ) {
            let o = pb::Object { api_version, kind, json: json.into() };
            if let Err(e) = decode_object(Some(o)) {
                proptest::prop_assert_eq!(e.code(), 400);
            }
        }
    }

    #[test]
    fn envelopes_fill_and_check_type() {
        let o = pb::Object {
            api_version: "v1".into(),
            kind: "Pod".into(),
            json: bytes::Bytes::from_static(br#"{"metadata":{"name":"a"}}"#),
        };
        let v = decode_object(Some(o)).unwrap();
        assert_eq!(v["kind"], "Pod");
        assert_eq!(v["apiVersion"], "v1");
        let bad = pb::Object {
            api_version: "v1".into(),
            kind: "Service".into(),
            json: bytes::Bytes::from_static(br#"{"kind":"Pod"}"#),
        };
        assert_eq!(decode_object(Some(bad)).unwrap_err().code(), 400);
        let junk = pb::Object {
            json: bytes::Bytes::from_static(b"{nope"),
            ..Default::default()
        };
        assert_eq!(decode_object(Some(junk)).unwrap_err().code(), 400);
        assert_eq!(decode_object(None).unwrap_err().code(), 400);
    }
}
