//! Subresources: what `NAME/SUBRESOURCE` serves. Each is a handler over [`Objects`], so both
//! doors serve every one of them through the same code. The generic ones live here (`status`,
//! `scale`); type-specific ones live with their type (a pod's `binding` and `eviction`, a
//! namespace's `finalize`).

use std::borrow::Cow;

use serde_json::{json, Value};

use super::{col, i, selector_text, Column, Objects, Printer, Resource};
use crate::error::{Cause, Error, Result};
use crate::patch::{self, PatchType};
use crate::request::{WriteOpts, Written};

/// The kind a subresource takes and returns, when not its resource's own.
pub type Kind = (&'static str, &'static str, &'static str);

fn not_allowed() -> Error {
    Error::method_not_allowed("the server does not allow this method on the requested resource")
}

/// One subresource. Verbs it does not serve answer 405.
#[async_trait::async_trait]
pub trait Subresource: Send + Sync {
    /// The verbs discovery lists.
    fn verbs(&self) -> &'static [&'static str];
    /// The (group, version, kind) it takes and returns; `None`: the resource's own kind.
    fn kind(&self) -> Option<Kind> {
        None
    }
    /// Whether it is a connection to the node the object runs on (log, exec, attach,
    /// port-forward), served by the REST door alone.
    fn connect(&self) -> bool {
        false
    }
    /// Whether writes through it change the object's status alone, as `status` does (the
    /// store then keeps the rest of the stored object).
    fn writes_status(&self) -> bool {
        false
    }
    /// For a subresource through which updates change one part of the spec (a pod's
    /// `ephemeralcontainers`): the object to store, made of the stored object `old` with
    /// that part taken from `new`. `None`: writes through it are not of that kind.
    fn prepare_update(&self, _new: &Value, _old: &Value) -> Option<Value> {
        None
    }
    /// For such a subresource, the validation of an update through it, standing for the
    /// type's own (`None`: the type's own applies).
    fn validate_update(&self, _new: &Value, _old: &Value) -> Option<Vec<Cause>> {
        None
    }
    /// How what it returns prints as a `Table`, when not as its resource's objects do.
    fn printer(&self) -> Option<&dyn Printer> {
        None
    }
    /// The unknown and duplicate fields of a JSON body created through it, as its kind
    /// reads it (duplicates alone unless it says what its kind is).
    fn strict_json(&self, body: &[u8]) -> Vec<crate::strict::Problem> {
        crate::strict::json_duplicates(body)
    }
    /// For a subresource that is a view of the object itself (`status`, a pod's `resize` and
    /// `ephemeralcontainers`): its name, and `get`, `update` and `patch` are then the object's
    /// own, written through it. `None`: they are its own to serve (`405` unless it does).
    fn object_view(&self) -> Option<&'static str> {
        None
    }
    /// `GET NAME/SUB`.
    async fn get(
        &self,
        objs: &dyn Objects,
        r: &Resource,
        ns: Option<&str>,
        name: &str,
    ) -> Result<Value> {
        match self.object_view() {
            Some(_) => objs.get(r, ns, name).await,
            None => Err(not_allowed()),
        }
    }
    /// `PUT NAME/SUB`.
    async fn update(
        &self,
        objs: &dyn Objects,
        r: &Resource,
        ns: Option<&str>,
        name: &str,
        body: Value,
        opts: &WriteOpts,
    ) -> Result<Written> {
        match self.object_view() {
            Some(sub) => objs.update(r, ns, name, body, Some(sub), opts).await,
            None => Err(not_allowed()),
        }
    }
    /// `PATCH NAME/SUB`.
    #[allow(clippy::too_many_arguments)]
    async fn patch(
        &self,
        objs: &dyn Objects,
        r: &Resource,
        ns: Option<&str>,
        name: &str,
        ptype: PatchType,
        body: &Value,
        opts: &WriteOpts,
    ) -> Result<Written> {
        match self.object_view() {
            Some(sub) => objs.patch(r, ns, name, ptype, body, Some(sub), opts).await,
            None => Err(not_allowed()),
        }
    }
    /// `POST NAME/SUB`: answers the object to send back (often a `Status`).
    async fn create(
        &self,
        _objs: &dyn Objects,
        _r: &Resource,
        _ns: Option<&str>,
        _name: &str,
        _body: Value,
        _opts: &WriteOpts,
    ) -> Result<Value> {
        Err(not_allowed())
    }
}

/// The `status` subresource: the object, of which writes change only the status.
pub struct Status;

/// The one `status` handler.
pub static STATUS: Status = Status;

#[async_trait::async_trait]
impl Subresource for Status {
    fn verbs(&self) -> &'static [&'static str] {
        &["get", "patch", "update"]
    }

    fn writes_status(&self) -> bool {
        true
    }

    fn object_view(&self) -> Option<&'static str> {
        Some("status")
    }
}

/// The `scale` subresource: an `autoscaling/v1` `Scale` view of a workload's replica count.
pub struct Scale {
    /// Where the desired replicas are (a JSON pointer).
    pub spec_replicas: Cow<'static, str>,
    /// Where the observed replicas are.
    pub status_replicas: Cow<'static, str>,
    /// Where the label selector is ("" for none).
    pub selector: Cow<'static, str>,
    /// How the selector is written there.
    pub selector_form: SelectorForm,
}

/// How a workload holds the selector its `Scale` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelectorForm {
    /// A `LabelSelector` object (built-in workloads' `spec.selector`).
    Object,
    /// Its text form (`app=web`), as custom resources' `labelSelectorPath` points at.
    Text,
    /// A plain label map (a ReplicationController's `spec.selector`).
    Map,
}

/// The scale of workloads with `spec.replicas`, `status.replicas` and `spec.selector`.
pub static SCALE: Scale = Scale {
    spec_replicas: Cow::Borrowed("/spec/replicas"),
    status_replicas: Cow::Borrowed("/status/replicas"),
    selector: Cow::Borrowed("/spec/selector"),
    selector_form: SelectorForm::Object,
};

impl Scale {
    /// The `Scale` view of a workload.
    pub fn of(&self, obj: &Value) -> Value {
        let m = obj.get("metadata").cloned().unwrap_or(json!({}));
        let selector = match self.selector_form {
            _ if self.selector.is_empty() => String::new(),
            SelectorForm::Object => obj
                .pointer(&self.selector)
                .map(|s| selector_text(Some(s)))
                .filter(|s| s != "<none>")
                .unwrap_or_default(),
            SelectorForm::Map => obj
                .pointer(&self.selector)
                .map(|m| super::map_text(Some(m)))
                .filter(|s| s != "<none>")
                .unwrap_or_default(),
            SelectorForm::Text => obj
                .pointer(&self.selector)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        };
        let int = |p: &str| obj.pointer(p).and_then(Value::as_i64).unwrap_or(0);
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
            "spec": {"replicas": int(&self.spec_replicas)},
            "status": {"replicas": int(&self.status_replicas), "selector": selector},
        })
    }

    /// Writes the replicas a `Scale` asks for (its resourceVersion, when set, a precondition).
    async fn write(
        &self,
        objs: &dyn Objects,
        r: &Resource,
        ns: Option<&str>,
        name: &str,
        scale: &Value,
        opts: &WriteOpts,
    ) -> Result<Written> {
        let replicas = match scale.pointer("/spec/replicas") {
            None | Some(Value::Null) => 0,
            Some(v) => v.as_i64().filter(|n| i32::try_from(*n).is_ok()).ok_or_else(|| {
                Error::bad_request(format!(
                    "Scale in version \"v1\" cannot be handled as a Scale: spec.replicas: {v} is not an int32"
                ))
            })?,
        };
        if replicas < 0 {
            return Err(Error::invalid(
                "Scale",
                "autoscaling",
                name,
                vec![Cause::invalid(
                    "spec.replicas",
                    &json!(replicas),
                    "must be greater than or equal to 0",
                )],
            ));
        }
        let mut change = json!({});
        let mut at = &mut change;
        for part in self.spec_replicas.trim_start_matches('/').split('/') {
            at = &mut at[part];
        }
        *at = json!(replicas);
        if let Some(rv) = scale
            .pointer("/metadata/resourceVersion")
            .filter(|v| v.as_str().is_some_and(|s| !s.is_empty()))
        {
            change["metadata"] = json!({"resourceVersion": rv});
        }
        let mut w = objs
            .patch(r, ns, name, PatchType::Merge, &change, Some("scale"), opts)
            .await?;
        w.object = self.of(&w.object);
        Ok(w)
    }
}

impl Printer for Scale {
    fn columns(&self) -> Vec<Column> {
        vec![
            col(
                "Name",
                "string",
                0,
                "Name must be unique within a namespace.",
            ),
            col(
                "Desired",
                "integer",
                0,
                "desired number of instances for the scaled object.",
            ),
            col(
                "Available",
                "integer",
                0,
                "actual number of observed instances of the scaled object.",
            ),
        ]
    }

    fn cells(&self, scale: &Value) -> Vec<Value> {
        vec![
            super::name(scale),
            json!(i(scale, "/spec/replicas")),
            json!(i(scale, "/status/replicas")),
        ]
    }
}

#[async_trait::async_trait]
impl Subresource for Scale {
    fn printer(&self) -> Option<&dyn Printer> {
        Some(self)
    }

    fn verbs(&self) -> &'static [&'static str] {
        &["get", "patch", "update"]
    }

    fn kind(&self) -> Option<super::subresource::Kind> {
        Some(("autoscaling", "v1", "Scale"))
    }

    async fn get(
        &self,
        objs: &dyn Objects,
        r: &Resource,
        ns: Option<&str>,
        name: &str,
    ) -> Result<Value> {
        Ok(self.of(&objs.get(r, ns, name).await?))
    }

    async fn update(
        &self,
        objs: &dyn Objects,
        r: &Resource,
        ns: Option<&str>,
        name: &str,
        body: Value,
        opts: &WriteOpts,
    ) -> Result<Written> {
        self.write(objs, r, ns, name, &body, opts).await
    }

    async fn patch(
        &self,
        objs: &dyn Objects,
        r: &Resource,
        ns: Option<&str>,
        name: &str,
        ptype: PatchType,
        body: &Value,
        opts: &WriteOpts,
    ) -> Result<Written> {
        if ptype == PatchType::Apply {
            return Err(Error::unsupported_media_type(
                "application/apply-patch+yaml",
                crate::error::PATCH_MEDIA_TYPES,
            ));
        }
        let mut scale = self.of(&objs.get(r, ns, name).await?);
        // The patch's own resourceVersion (if any) stays the precondition.
        if let Some(m) = scale.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
        }
        patch::apply_patch(&mut scale, ptype, body)?;
        self.write(objs, r, ns, name, &scale, opts).await
    }
}

/// A subresource that is a connection to the object's node (pods' `log`, `exec`, `attach`,
/// `portforward`) or through the API server to it (`proxy` of pods, services and nodes),
/// served by the REST door.
pub struct Connect {
    /// The verbs discovery lists.
    pub verbs: &'static [&'static str],
    /// The options kind discovery names (`PodExecOptions`); `None`: the pod's own.
    pub kind: Option<Kind>,
}

/// `log`: read.
pub static LOG: Connect = Connect {
    verbs: &["get"],
    kind: None,
};
/// `exec`: a stream.
pub static EXEC: Connect = Connect {
    verbs: &["create", "get"],
    kind: Some(("", "v1", "PodExecOptions")),
};
/// `attach`: a stream.
pub static ATTACH: Connect = Connect {
    verbs: &["create", "get"],
    kind: Some(("", "v1", "PodAttachOptions")),
};
/// `portforward`: a stream.
pub static PORTFORWARD: Connect = Connect {
    verbs: &["create", "get"],
    kind: Some(("", "v1", "PodPortForwardOptions")),
};
/// What a `proxy` subresource passes on: every method.
const PROXY_VERBS: &[&str] = &["create", "delete", "get", "patch", "update"];
/// `pods/proxy`.
pub static POD_PROXY: Connect = Connect {
    verbs: PROXY_VERBS,
    kind: Some(("", "v1", "PodProxyOptions")),
};
/// `services/proxy`.
pub static SERVICE_PROXY: Connect = Connect {
    verbs: PROXY_VERBS,
    kind: Some(("", "v1", "ServiceProxyOptions")),
};
/// `nodes/proxy`.
pub static NODE_PROXY: Connect = Connect {
    verbs: PROXY_VERBS,
    kind: Some(("", "v1", "NodeProxyOptions")),
};

#[async_trait::async_trait]
impl Subresource for Connect {
    fn verbs(&self) -> &'static [&'static str] {
        self.verbs
    }

    fn kind(&self) -> Option<Kind> {
        self.kind
    }

    fn connect(&self) -> bool {
        true
    }
}
