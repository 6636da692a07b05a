//! Namespaces: created `Active` with the `kubernetes` finalizer; deleting one moves it to
//! `Terminating`, and it stays until its `spec.finalizers` are gone (the `finalize`
//! subresource removes them once the namespace is empty).

use k8s_openapi::api::core::v1::Namespace;
use serde_json::{json, Value};

use super::{col, s, Builtin, Column, Typed};
use super::{Objects, Resource, Subresource};
use crate::error::{Cause, Result};
use crate::request::{WriteOpts, Written};

/// How often terminating namespaces are checked for emptiness.
const FINALIZE_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// Removes the `kubernetes` finalizer of each terminating namespace once the watch caches hold
/// nothing in it, so its deletion completes; until `shutdown`. (Kubernetes' namespace
/// controller deletes what is left in a namespace; the controller manager does that here.)
pub async fn finalize_empty(
    objs: &dyn Objects,
    shutdown: tokio_util::sync::CancellationToken,
    opts: WriteOpts,
) {
    let Some(nsr) = objs.resource("", "v1", "namespaces") else {
        return;
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(FINALIZE_EVERY) => {}
        }
        let resources = objs.resources();
        for ns in objs
            .cached_list(&nsr, None)
            .into_iter()
            .filter(|n| n.deleting)
        {
            let name = ns.name.clone();
            let empty = resources
                .iter()
                .filter(|r| r.namespaced)
                .all(|r| !objs.any_cached(r, &name));
            if !empty {
                continue;
            }
            let mut next = ns.value();
            if let Some(f) = next
                .pointer_mut("/spec/finalizers")
                .and_then(Value::as_array_mut)
            {
                f.retain(|x| x != "kubernetes");
            }
            match FINALIZE.update(objs, &nsr, None, &name, next, &opts).await {
                Ok(_) => tracing::info!(namespace = %name, "namespace emptied and removed"),
                Err(e) if e.code() == 404 || e.code() == 409 => {}
                Err(e) => tracing::warn!(namespace = %name, error = %e, "finalizing namespace"),
            }
        }
    }
}

/// Namespaces as the server serves them: deleted one at a time, never by collection, as
/// kube-apiserver serves them.
pub fn info() -> super::ResourceInfo {
    super::ResourceInfo::from(&INFO).with(|r| {
        r.verbs = &[
            "create", "delete", "get", "list", "patch", "update", "watch",
        ];
    })
}

/// The namespaces resource.
pub static INFO: Builtin = Builtin {
    group: "",
    version: "v1",
    kind: "Namespace",
    plural: "namespaces",
    singular: "namespace",
    short_names: &["ns"],
    categories: &[],
    namespaced: false,
    subresources: &[
        ("status", &super::subresource::STATUS),
        ("finalize", &FINALIZE),
    ],
    selectable: &["status.phase"],
    has_generation: false,
    strategy: &STRATEGY,
    schema: super::schema_of::<Namespace>,
};

static STRATEGY: Typed<Namespace> = Typed {
    status: true,
    defaults,
    validate,
    prepare_create,
    name_rule: super::NameRule::Label,
    deletion_held,
    prepare_delete,
    ..Typed::new(columns, cells)
};

/// A namespace's `spec.finalizers` hold it in `Terminating` until they are all gone.
fn deletion_held(ns: &Value) -> bool {
    ns.pointer("/spec/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty())
}

fn prepare_delete(ns: &mut Value) {
    ns["status"]["phase"] = json!("Terminating");
}

/// The `finalize` handler.
pub static FINALIZE: Finalize = Finalize;

/// The `finalize` subresource: replaces a namespace's `spec.finalizers` (and nothing else).
pub struct Finalize;

#[async_trait::async_trait]
impl Subresource for Finalize {
    fn verbs(&self) -> &'static [&'static str] {
        &["update"]
    }

    async fn update(
        &self,
        objs: &dyn Objects,
        r: &Resource,
        _ns: Option<&str>,
        name: &str,
        body: Value,
        opts: &WriteOpts,
    ) -> Result<Written> {
        let finalizers = body
            .pointer("/spec/finalizers")
            .cloned()
            .unwrap_or(json!([]));
        let mut current = objs.get(r, None, name).await?;
        current["spec"]["finalizers"] = finalizers;
        if let Some(rv) = body
            .pointer("/metadata/resourceVersion")
            .filter(|v| v.as_str().is_some_and(|s| !s.is_empty()))
        {
            current["metadata"]["resourceVersion"] = rv.clone();
        }
        objs.update(r, None, name, current, Some("finalize"), opts)
            .await
    }
}

fn prepare_create(obj: &mut Value) {
    if let Some(o) = obj.as_object_mut() {
        o.insert("status".into(), json!({"phase": "Active"}));
        let spec = o.entry("spec").or_insert_with(|| json!({}));
        if spec.get("finalizers").is_none() {
            spec["finalizers"] = json!(["kubernetes"]);
        }
    }
}

fn defaults(ns: &mut Namespace) {
    // kube-apiserver labels every namespace with its own name.
    let name = ns.metadata.name.clone().unwrap_or_default();
    ns.metadata
        .labels
        .get_or_insert_with(Default::default)
        .insert("kubernetes.io/metadata.name".into(), name);
}

fn validate(_ns: &Namespace) -> Vec<Cause> {
    Vec::new()
}

fn columns() -> Vec<Column> {
    vec![
        col("Name", "string", 0, "Name must be unique within a namespace."),
        col("Status", "string", 0, "The status of the namespace"),
        col("Age", "string", 0, "CreationTimestamp is a timestamp representing the server time when this object was created."),
    ]
}

fn cells(ns: &Value) -> Vec<Value> {
    vec![
        super::name(ns),
        json!(s(ns, "/status/phase")),
        super::age(ns),
    ]
}
