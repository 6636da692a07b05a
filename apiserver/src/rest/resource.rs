//! Resource requests: each verb's REST form (its options, body and response) around the one
//! store operation that serves it, for objects and their subresources alike.

use std::sync::Arc;

use axum::body::Body;
use http::{header, Request, Response, StatusCode};
use serde_json::{json, Value};

use super::negotiate::{self, respond, Format};
use super::options::{delete_opts, list_opts, read_body, watch_opts, with_warnings, write_opts};
use super::path::Target;
use super::{table, watch};
use crate::audit::Recorder;
use crate::auth::UserInfo;
use crate::error::{success_status, Error, Result};
use crate::patch::PatchType;
use crate::query::Query;
use crate::registry::{Resource, ResourceInfo};
use crate::request::{Deleted, FieldValidation, Notes, Written};
use crate::state::State;

type Req = Request<hyper::body::Incoming>;

fn not_allowed() -> Error {
    Error::method_not_allowed("the server does not allow this method on the requested resource")
}

fn not_found() -> Error {
    Error::not_found_message("the server could not find the requested resource")
}

/// Gives a request's decoded body to its audit record, if it is audited.
fn audit_body(parts: &http::request::Parts, body: &Value) {
    if let Some(r) = parts.extensions.get::<Arc<Recorder>>() {
        r.request_object(body);
    }
}

/// Where admission's warnings and audit annotations for a request go.
fn notes_of(req: &Req) -> Notes {
    Notes::audited(req.extensions().get::<Arc<Recorder>>().cloned())
}

/// Serves a request for a resource, an object, or one of its subresources.
pub async fn serve(
    state: &Arc<State>,
    req: Req,
    t: Target,
    verb: &str,
    q: &Query,
    user: &UserInfo,
) -> Result<Response<Body>> {
    if t.resource == "bindings" && t.group.is_empty() && verb == "create" && t.name.is_none() {
        return legacy_binding(state, req, &t, q, user).await;
    }
    let r = state
        .store
        .find(&t.group, &t.version, &t.resource)
        .ok_or_else(not_found)?;
    let deprecation = r.deprecation.clone();
    let response = serve_found(state, req, t, r, verb, q, user).await;
    match deprecation {
        Some(w) => response.map(|resp| with_warnings(resp, &[w])),
        None => response,
    }
}

/// Serves a request for a resource the server serves.
async fn serve_found(
    state: &Arc<State>,
    req: Req,
    t: Target,
    r: Resource,
    verb: &str,
    q: &Query,
    user: &UserInfo,
) -> Result<Response<Body>> {
    if (r.namespaced && t.namespace.is_none() && t.name.is_some())
        || (!r.namespaced && t.namespace.is_some())
    {
        return Err(not_found());
    }
    if r.create_only.is_some() {
        return create_only(state, req, &r, &t, verb, q, user).await;
    }
    if let Some(c) = r.computed.clone() {
        return computed(req, &r, &*c, &t, verb, q).await;
    }
    let notes = notes_of(&req);
    if let Some(sub) = t.subresource.as_deref() {
        return subresource(state, req, &r, &t, sub, verb, q, user).await;
    }
    if !r.verbs().contains(&verb) {
        return Err(not_allowed());
    }
    let format = Format::from_accept(req.headers(), verb)?;
    let ns = t.namespace.as_deref();
    let store = &state.store;
    let user_agent = user_agent(req.headers());
    match (verb, t.name.as_deref()) {
        ("get", Some(name)) => table::respond_one(&r, store.get(&r, ns, name).await?, &format, q),
        ("list", _) => {
            let mut listed = store.list(&r, ns, &list_opts(q, &r)?).await?;
            let warnings = std::mem::take(&mut listed.warnings);
            table::respond_list(&r, listed, &format, q).map(|resp| with_warnings(resp, &warnings))
        }
        ("watch", name) => {
            let opts = watch_opts(q, &r, name)?;
            watch::respond(state, &r, ns, opts, format, q.int("timeoutSeconds")?, q).await
        }
        ("create", None) => {
            let (parts, body) = read_body(req).await?;
            let obj = negotiate::decode_body(&parts.headers, &body, &r.kind)?;
            audit_body(&parts, &obj);
            let opts = write_opts(q, &user_agent, false, user)?.with_notes(notes.clone());
            let decoded = negotiate::decoded_body(&parts.headers, &body, &r, opts.field_validation);
            let opts = opts.with_decoded(decoded);
            written(store.create(&r, ns, obj, &opts).await?, format)
        }
        ("update", Some(name)) => {
            let (parts, body) = read_body(req).await?;
            let obj = negotiate::decode_body(&parts.headers, &body, &r.kind)?;
            audit_body(&parts, &obj);
            let opts = write_opts(q, &user_agent, false, user)?.with_notes(notes.clone());
            let decoded = negotiate::decoded_body(&parts.headers, &body, &r, opts.field_validation);
            let opts = opts.with_decoded(decoded);
            written(store.update(&r, ns, name, obj, None, &opts).await?, format)
        }
        ("patch", Some(name)) => {
            let (ptype, patch, parts_ua, raw) = read_patch(req, q, &r).await?;
            let opts = write_opts(q, &parts_ua, ptype == PatchType::Apply, user)?
                .with_notes(notes.clone());
            let decoded = negotiate::decoded_patch(ptype, &raw, &patch, opts.field_validation);
            let opts = opts.with_decoded(decoded);
            written(
                store
                    .patch(&r, ns, name, ptype, &patch, None, &opts)
                    .await?,
                format,
            )
        }
        ("delete", Some(name)) => {
            let (parts, raw) = read_body(req).await?;
            let body = negotiate::decode_optional(&parts.headers, &raw, "DeleteOptions")?;
            if !raw.is_empty() {
                audit_body(&parts, &body);
            }
            let opts = delete_opts(q, &body, user)?.with_notes(notes.clone());
            if opts.ignore_store_read_error {
                return unsafe_delete(state, &r, ns, name, &opts).await;
            }
            let deleted = store.delete(&r, ns, name, &opts).await?;
            let warnings = opts.notes.take_warnings();
            let resp = match deleted {
                Deleted::Pending(obj) => respond(StatusCode::OK, &obj, format),
                Deleted::Gone(obj) if r.strategy.return_deleted_object() => {
                    respond(StatusCode::OK, &obj, format)
                }
                Deleted::Gone(obj) => {
                    let details = json!({
                        "name": name,
                        "group": r.group,
                        "kind": r.plural,
                        "uid": obj.pointer("/metadata/uid").cloned().unwrap_or(Value::Null),
                    });
                    respond(StatusCode::OK, &success_status(details), Format::Json)
                }
            };
            resp.map(|resp| with_warnings(resp, &warnings))
        }
        ("deletecollection", None) => {
            let (parts, raw) = read_body(req).await?;
            let body = negotiate::decode_optional(&parts.headers, &raw, "DeleteOptions")?;
            if !raw.is_empty() {
                audit_body(&parts, &body);
            }
            let lopts = list_opts(q, &r)?;
            let dopts = delete_opts(q, &body, user)?.with_notes(notes.clone());
            let items = store.delete_collection(&r, ns, &lopts, &dopts).await?;
            let list = json!({
                "kind": format!("{}List", r.kind),
                "apiVersion": r.api_version(),
                "metadata": {},
                "items": items,
            });
            respond(StatusCode::OK, &list, Format::Json)
                .map(|resp| with_warnings(resp, &dopts.notes.take_warnings()))
        }
        _ => Err(not_allowed()),
    }
}

/// DELETE with `ignoreStoreReadErrorWithClusterBreakingPotential`: removes an object whose
/// stored value cannot be read, for a user who may `unsafe-delete-ignore-read-errors` it, as
/// kube-apiserver does. Finalizers, preconditions and admission are skipped: whatever depended
/// on the object is not told.
async fn unsafe_delete(
    state: &Arc<State>,
    r: &Resource,
    ns: Option<&str>,
    name: &str,
    opts: &crate::request::DeleteOpts,
) -> Result<Response<Body>> {
    const VERB: &str = "unsafe-delete-ignore-read-errors";
    let attrs = crate::auth::Attributes::resource(
        &opts.user,
        VERB,
        &r.group,
        &r.plural,
        ns.unwrap_or(""),
        name,
    );
    if let crate::auth::Decision::Deny(why) | crate::auth::Decision::NoOpinion(why) =
        state.authz.authorize(&attrs)
    {
        return Err(Error::forbidden_object(
            r.group_resource(),
            name,
            &format!("not permitted to do {VERB:?}, reason: {why}"),
        ));
    }
    tracing::warn!(resource = %r.group_resource(), namespace = ns.unwrap_or(""), name, user = %opts.user.name, dry_run = opts.dry_run, "unsafe deletion of an unreadable object");
    state
        .store
        .delete_unreadable(r, ns, name, opts.dry_run)
        .await?;
    let details = json!({"name": name, "group": r.group, "kind": r.plural});
    respond(StatusCode::OK, &success_status(details), Format::Json)
}

/// A resource that is only created, never stored (an access review): the answer to the
/// posted object.
async fn create_only(
    state: &Arc<State>,
    req: Req,
    r: &Resource,
    t: &Target,
    verb: &str,
    q: &Query,
    user: &UserInfo,
) -> Result<Response<Body>> {
    let Some(handler) = r.create_only.as_ref() else {
        return Err(not_found());
    };
    if verb != "create" || t.name.is_some() || t.subresource.is_some() {
        return Err(not_allowed());
    }
    let format = Format::from_accept(req.headers(), verb)?;
    let (parts, body) = read_body(req).await?;
    let obj = negotiate::decode_body(&parts.headers, &body, &r.kind)?;
    audit_body(&parts, &obj);
    let fv = FieldValidation::parse(q.get("fieldValidation"))?;
    let decoded = negotiate::decoded_body(&parts.headers, &body, r, fv);
    let warnings = fv.judge(&decoded.problems, &r.kind, &r.version)?;
    let cx = crate::registry::review::Context {
        user,
        authz: &*state.authz,
        authn: &state.authn,
    };
    let answer = handler.create(&cx, t.namespace.as_deref(), obj)?;
    respond(StatusCode::CREATED, &answer, format).map(|resp| with_warnings(resp, &warnings))
}

/// A resource whose objects are worked out when read (component statuses): `get` and `list`.
async fn computed(
    req: Req,
    r: &Resource,
    c: &dyn crate::registry::componentstatus::Computed,
    t: &Target,
    verb: &str,
    q: &Query,
) -> Result<Response<Body>> {
    if t.subresource.is_some() {
        return Err(not_found());
    }
    let format = Format::from_accept(req.headers(), verb)?;
    match (verb, t.name.as_deref()) {
        ("get", Some(name)) => {
            let obj = c
                .objects(Some(name))
                .await?
                .into_iter()
                .next()
                .ok_or_else(|| c.not_found(name))?;
            table::respond_one(r, obj, &format, q)
        }
        ("list", None) => {
            // kube-apiserver filters computed lists by both selectors too.
            let opts = list_opts(q, r)?;
            let mut items = c.objects(None).await?;
            items.retain(|o| opts.labels.matches(o) && opts.fields.matches(&**r, o));
            table::respond_values(r, &items, &format, q)
        }
        _ => Err(not_allowed()),
    }
}

/// The client's user agent (an ordinary write's default field manager).
fn user_agent(headers: &http::HeaderMap) -> String {
    headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// A write's response: 201 when it created the object, with its warnings.
fn written(w: Written, format: Format) -> Result<Response<Body>> {
    let code = if w.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(with_warnings(
        respond(code, &w.object, format)?,
        &w.warnings,
    ))
}

/// A PATCH's type (from its content type) and body (decoded and as sent), and the client's
/// user agent.
async fn read_patch(
    req: Req,
    q: &Query,
    r: &ResourceInfo,
) -> Result<(PatchType, Value, String, bytes::Bytes)> {
    let (parts, body) = read_body(req).await?;
    let ct = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let ptype = PatchType::from_content_type(ct)
        .ok_or_else(|| Error::unsupported_media_type(ct, crate::error::PATCH_MEDIA_TYPES))?;
    // Custom resources have no patch strategies to merge lists by, as in Kubernetes.
    if ptype == PatchType::Strategic && r.json_schema.is_some() {
        return Err(Error::unsupported_media_type(
            ct,
            &crate::error::PATCH_MEDIA_TYPES[..3],
        ));
    }
    if ptype != PatchType::Apply && q.get("force").is_some() {
        return Err(Error::bad_request(
            "force: Forbidden: may not be specified for non-apply patch",
        ));
    }
    let patch = negotiate::decode_patch(ptype, &body)?;
    if let Some(r) = parts.extensions.get::<Arc<Recorder>>() {
        r.request_patch(&patch);
    }
    Ok((ptype, patch, user_agent(&parts.headers), body))
}

/// `NAME/SUB`: connections to the node for pods' logs and streams, proxies to pods, services
/// and nodes, the store's handlers for the rest.
#[allow(clippy::too_many_arguments)]
async fn subresource(
    state: &Arc<State>,
    req: Req,
    r: &Resource,
    t: &Target,
    sub: &str,
    verb: &str,
    q: &Query,
    user: &UserInfo,
) -> Result<Response<Body>> {
    let store = &state.store;
    let ns = t.namespace.as_deref();
    let name = t.name.as_deref().ok_or_else(not_found)?;
    let handler = r
        .subresource(sub)
        .ok_or_else(|| crate::store::no_such_subresource(sub))?;
    let user_agent = user_agent(req.headers());
    let notes = notes_of(&req);
    if handler.connect() {
        // A proxy passes OPTIONS on too (its verb is no API verb).
        let options = sub == "proxy" && req.method() == http::Method::OPTIONS;
        if !handler.verbs().contains(&verb) && !options {
            return Err(not_allowed());
        }
        let opts = write_opts(q, &user_agent, false, user)?.with_notes(notes.clone());
        store.admit_connect(r, ns, name, sub, &opts).await?;
        let ns = ns.unwrap_or("default");
        let kubelets = &state.kubelets;
        return match sub {
            "log" => crate::node_proxy::pod_log(store, kubelets, req, ns, name, q).await,
            "proxy" => {
                crate::node_proxy::proxy::serve(store, kubelets, req, &r.plural, ns, name, &t.rest)
                    .await
            }
            _ => crate::node_proxy::stream(store, kubelets, req, ns, name, sub).await,
        };
    }
    let format = Format::from_accept(req.headers(), verb)?;
    // The object's own kind (status) prints as the object does, another kind (a Scale) by
    // its own printer, or else as JSON.
    let format = match (handler.kind(), handler.printer(), format) {
        (Some(_), None, Format::Table | Format::PartialMeta) => Format::Json,
        (_, _, f) => f,
    };
    match verb {
        "get" => {
            let obj = store.get_subresource(r, ns, name, sub).await?;
            match handler.printer() {
                Some(p) => table::respond_printed(p, obj, &format, q),
                None => table::respond_one(r, obj, &format, q),
            }
        }
        "update" => {
            let (parts, body) = read_body(req).await?;
            let kind = handler.kind().map_or(r.kind.as_str(), |k| k.2);
            let obj = negotiate::decode_body(&parts.headers, &body, kind)?;
            audit_body(&parts, &obj);
            let opts = write_opts(q, &user_agent, false, user)?.with_notes(notes.clone());
            // A subresource of the object's own kind (status) reads the body as that kind.
            let opts = match handler.kind() {
                None => {
                    let decoded =
                        negotiate::decoded_body(&parts.headers, &body, r, opts.field_validation);
                    opts.with_decoded(decoded)
                }
                Some(_) => opts,
            };
            written(
                store
                    .update_subresource(r, ns, name, sub, obj, &opts)
                    .await?,
                format,
            )
        }
        "patch" => {
            let (ptype, patch, ua, raw) = read_patch(req, q, r).await?;
            let opts =
                write_opts(q, &ua, ptype == PatchType::Apply, user)?.with_notes(notes.clone());
            let opts = match handler.kind() {
                None => {
                    let decoded =
                        negotiate::decoded_patch(ptype, &raw, &patch, opts.field_validation);
                    opts.with_decoded(decoded)
                }
                Some(_) => opts,
            };
            written(
                store
                    .patch_subresource(r, ns, name, sub, ptype, &patch, &opts)
                    .await?,
                format,
            )
        }
        "create" => {
            let (parts, body) = read_body(req).await?;
            let kind = handler.kind().map_or(r.kind.as_str(), |k| k.2);
            let obj = negotiate::decode_body(&parts.headers, &body, kind)?;
            audit_body(&parts, &obj);
            let opts = write_opts(q, &user_agent, false, user)?.with_notes(notes.clone());
            let decoded = negotiate::decoded_subresource(
                &parts.headers,
                &body,
                handler,
                opts.field_validation,
            );
            let opts = opts.with_decoded(decoded);
            let answer = store
                .create_subresource(r, ns, name, sub, obj, &opts)
                .await?;
            respond(StatusCode::CREATED, &answer, Format::Json)
                .map(|resp| with_warnings(resp, &opts.notes.take_warnings()))
        }
        _ => Err(not_allowed()),
    }
}

/// `POST /api/v1/namespaces/NS/bindings`: the binding names its pod.
async fn legacy_binding(
    state: &Arc<State>,
    req: Req,
    t: &Target,
    q: &Query,
    user: &UserInfo,
) -> Result<Response<Body>> {
    let pods = state.store.find("", "v1", "pods").ok_or_else(not_found)?;
    let notes = notes_of(&req);
    let (parts, body) = read_body(req).await?;
    let binding = negotiate::decode_body(&parts.headers, &body, "Binding")?;
    audit_body(&parts, &binding);
    let name = binding
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let opts = write_opts(q, "", false, user)?.with_notes(notes.clone());
    let opts = match pods.subresource("binding") {
        Some(h) => {
            let fv = opts.field_validation;
            opts.with_decoded(negotiate::decoded_subresource(&parts.headers, &body, h, fv))
        }
        None => opts,
    };
    let answer = state
        .store
        .create_subresource(
            &pods,
            t.namespace.as_deref(),
            &name,
            "binding",
            binding,
            &opts,
        )
        .await?;
    respond(StatusCode::CREATED, &answer, Format::Json)
        .map(|resp| with_warnings(resp, &opts.notes.take_warnings()))
}
