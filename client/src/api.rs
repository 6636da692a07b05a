//! `Api<K>`: operations on one kind of Kubernetes object, over gRPC.
//!
//! `K` is a typed object (a k8s-openapi type, or a custom resource type), or
//! [`crate::dynamic::DynamicObject`] for a resource named at run time; see [`Resource`].

use std::marker::PhantomData;
use std::time::Instant;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::{ClusterResourceScope, NamespaceResourceScope};
use serde::Serialize;
use skiff_proto::v1 as pb;

use crate::client::Client;
use crate::error::{Error, Result};
pub use crate::resource::{Object, Resource};

/// Access to one resource, in one namespace or across all of them.
///
/// The handle carries the resource's identity: nothing for a typed object, whose type says
/// it all, and the [`crate::dynamic::ApiResource`] for a [`crate::dynamic::DynamicObject`].
pub struct Api<K: Resource> {
    client: Client,
    namespace: Option<String>,
    dyntype: K::DynamicType,
    _k: PhantomData<fn() -> K>,
}

impl<K: Resource> Clone for Api<K> {
    fn clone(&self) -> Self {
        Api {
            client: self.client.clone(),
            namespace: self.namespace.clone(),
            dyntype: self.dyntype.clone(),
            _k: PhantomData,
        }
    }
}

impl<K: Resource> std::fmt::Debug for Api<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("group", &K::group(&self.dyntype))
            .field("version", &K::version(&self.dyntype))
            .field("resource", &K::plural(&self.dyntype))
            .field("namespace", &self.namespace)
            .finish()
    }
}

/// Options for [`Api::list`].
#[derive(Debug, Clone, Default)]
pub struct ListParams {
    /// A label selector, e.g. `app=web,tier in (a,b)`.
    pub label_selector: Option<String>,
    /// A field selector, e.g. `spec.nodeName=node-1`.
    pub field_selector: Option<String>,
    /// At most this many items per page (0: all).
    pub limit: u32,
    /// The `continue` token of the previous page.
    pub continue_token: Option<String>,
    /// `None` for a consistent read; `Some("0")` for any recent state (cheapest).
    pub resource_version: Option<String>,
}

impl ListParams {
    /// Only objects whose labels match `selector`.
    pub fn labels(mut self, selector: &str) -> Self {
        self.label_selector = Some(selector.into());
        self
    }

    /// Only objects whose fields match `selector`.
    pub fn fields(mut self, selector: &str) -> Self {
        self.field_selector = Some(selector.into());
        self
    }

    /// Pages of at most `limit` items.
    pub fn limit(mut self, limit: u32) -> Self {
        self.limit = limit;
        self
    }
}

/// One page of a list.
#[derive(Debug, Clone)]
pub struct ObjectList<K> {
    /// The objects.
    pub items: Vec<K>,
    /// The resourceVersion the list was read at: watch from here.
    pub resource_version: String,
    /// Set when more pages remain.
    pub continue_token: Option<String>,
    /// How many items remain, when the server knows.
    pub remaining_item_count: Option<i64>,
}

/// Options for writes.
#[derive(Debug, Clone, Default)]
pub struct PostParams {
    /// Check everything, store nothing.
    pub dry_run: bool,
    /// The field manager recorded in managedFields.
    pub field_manager: Option<String>,
    /// Refuse unknown fields instead of dropping them with a warning.
    pub strict: bool,
}

/// Options for [`Api::patch`].
#[derive(Debug, Clone, Default)]
pub struct PatchParams {
    /// Check everything, store nothing.
    pub dry_run: bool,
    /// The field manager (required for [`Patch::Apply`]).
    pub field_manager: Option<String>,
    /// Server-side apply only: take fields other managers own.
    pub force: bool,
    /// Refuse unknown fields instead of dropping them with a warning.
    pub strict: bool,
}

impl PatchParams {
    /// Parameters for server-side apply as `manager`.
    pub fn apply(manager: &str) -> Self {
        PatchParams {
            field_manager: Some(manager.into()),
            ..Default::default()
        }
    }

    /// Take ownership of conflicting fields (apply only).
    pub fn force(mut self) -> Self {
        self.force = true;
        self
    }
}

/// A patch, in one of the formats Kubernetes accepts.
#[derive(Debug, Clone)]
pub enum Patch<P: Serialize> {
    /// RFC 6902 JSON patch.
    Json(json_patch::Patch),
    /// RFC 7386 merge patch.
    Merge(P),
    /// Kubernetes strategic merge patch (lists merged by their keys).
    Strategic(P),
    /// Server-side apply of a partial object; creates the object when missing.
    Apply(P),
}

/// What happens to an object's dependents when it is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PropagationPolicy {
    /// Keep dependents, removing their owner reference.
    Orphan,
    /// Delete the object now, dependents afterwards.
    Background,
    /// Delete dependents first.
    Foreground,
}

/// Options for [`Api::delete`].
#[derive(Debug, Clone, Default)]
pub struct DeleteParams {
    /// Seconds the object may take to stop; 0 deletes at once.
    pub grace_period_seconds: Option<i64>,
    /// What happens to dependents (the resource's default when `None`).
    pub propagation_policy: Option<PropagationPolicy>,
    /// Delete only if the object still has this uid.
    pub precondition_uid: Option<String>,
    /// Delete only if the object is still at this resourceVersion.
    pub precondition_resource_version: Option<String>,
    /// Check, change nothing.
    pub dry_run: bool,
}

/// What a delete did.
#[derive(Debug, Clone)]
pub enum Deleted<K> {
    /// The object is gone; this was its last state.
    Gone(K),
    /// Deletion has started (finalizers or a grace period hold it); this is its state now.
    Pending(K),
}

/// Options for [`Api::watch`].
#[derive(Debug, Clone, Default)]
pub struct WatchParams {
    /// A label selector.
    pub label_selector: Option<String>,
    /// A field selector.
    pub field_selector: Option<String>,
    /// Watch the object with this name only.
    pub name: Option<String>,
    /// Ask for BOOKMARK events.
    pub bookmarks: bool,
    /// End the stream after this many seconds (server default when `None`).
    pub timeout_seconds: Option<u32>,
    /// With resource version "" or "0": send the current state first, then a bookmark
    /// marking its end.
    pub send_initial_events: bool,
}

/// One event of a raw watch.
#[derive(Debug, Clone)]
pub enum WatchEvent<K> {
    /// Created, or came to match the selectors.
    Added(K),
    /// Changed.
    Modified(K),
    /// Deleted, or stopped matching the selectors (its last state).
    Deleted(K),
    /// Progress: the stream has reached this resourceVersion.
    Bookmark {
        /// The resourceVersion.
        resource_version: String,
        /// The initial events asked for with `send_initial_events` are all sent.
        initial_events_end: bool,
    },
}

/// Decodes an object the server sent, as a `kind`.
fn decode<K: serde::de::DeserializeOwned>(o: Option<pb::Object>, kind: &str) -> Result<K> {
    let o = o.ok_or_else(|| Error::Invalid("the server sent no object".into()))?;
    serde_json::from_slice(&o.json).map_err(|e| Error::json(format!("decoding a {kind}"), e))
}

fn encode<K: Serialize>(obj: &K, api_version: &str, kind: &str) -> Result<pb::Object> {
    Ok(pb::Object {
        api_version: api_version.to_string(),
        kind: kind.to_string(),
        json: serde_json::to_vec(obj)
            .map_err(|e| Error::json(format!("encoding a {kind}"), e))?
            .into(),
    })
}

fn post_options(pp: &PostParams) -> pb::WriteOptions {
    pb::WriteOptions {
        dry_run: pp.dry_run,
        field_manager: pp.field_manager.clone().unwrap_or_default(),
        field_validation: if pp.strict {
            pb::FieldValidation::Strict as i32
        } else {
            pb::FieldValidation::Unspecified as i32
        },
        force: false,
    }
}

impl<K: Object> Api<K> {
    /// Objects in one namespace.
    pub fn namespaced(client: Client, namespace: &str) -> Self
    where
        K: k8s_openapi::Resource<Scope = NamespaceResourceScope>,
    {
        Self::namespaced_with(client, namespace, &())
    }

    /// Objects in the kubeconfig context's namespace (`default` when it names none).
    pub fn default_namespaced(client: Client) -> Self
    where
        K: k8s_openapi::Resource<Scope = NamespaceResourceScope>,
    {
        Self::default_namespaced_with(client, &())
    }

    /// Objects in every namespace (for namespaced kinds: list and watch only).
    pub fn all(client: Client) -> Self {
        Self::all_with(client, &())
    }

    /// A cluster-scoped kind (nodes, namespaces, priority classes, ...).
    pub fn cluster(client: Client) -> Self
    where
        K: k8s_openapi::Resource<Scope = ClusterResourceScope>,
    {
        Self::all(client)
    }
}

impl<K: Resource> Api<K> {
    /// Objects of the resource `dyntype` names in one namespace (for a
    /// [`crate::dynamic::DynamicObject`], `dyntype` is its [`crate::dynamic::ApiResource`]).
    pub fn namespaced_with(client: Client, namespace: &str, dyntype: &K::DynamicType) -> Self {
        Api {
            client,
            namespace: Some(namespace.to_string()),
            dyntype: dyntype.clone(),
            _k: PhantomData,
        }
    }

    /// Objects of the resource `dyntype` names in the kubeconfig context's namespace.
    pub fn default_namespaced_with(client: Client, dyntype: &K::DynamicType) -> Self {
        let ns = client.default_namespace().to_string();
        Self::namespaced_with(client, &ns, dyntype)
    }

    /// Objects of the resource `dyntype` names in every namespace, or of a cluster-scoped
    /// resource.
    pub fn all_with(client: Client, dyntype: &K::DynamicType) -> Self {
        Api {
            client,
            namespace: None,
            dyntype: dyntype.clone(),
            _k: PhantomData,
        }
    }

    /// What identifies the resource (`()` for typed objects).
    pub fn dynamic_type(&self) -> &K::DynamicType {
        &self.dyntype
    }

    /// The same kind in one namespace, whatever its scope (for generic code that learns the
    /// scope at run time, such as a garbage collector following owner references).
    pub fn in_namespace(mut self, ns: &str) -> Self {
        self.namespace = Some(ns.to_string());
        self
    }

    /// The namespace this handle is for, if any.
    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    /// The client behind this handle.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The resource's plural, as metrics and logs name it.
    pub(crate) fn plural(&self) -> &str {
        K::plural(&self.dyntype)
    }

    fn kind(&self) -> &str {
        K::kind(&self.dyntype)
    }

    fn resource_ref(&self) -> pb::ResourceRef {
        pb::ResourceRef {
            group: K::group(&self.dyntype).to_string(),
            version: K::version(&self.dyntype).to_string(),
            resource: K::plural(&self.dyntype).to_string(),
            namespace: self.namespace.clone().unwrap_or_default(),
        }
    }

    /// Runs one unary call with throttling, a span, metrics and the deadline.
    async fn call<T, R, F, Fut>(&self, verb: &str, msg: T, f: F) -> Result<R>
    where
        F: FnOnce(
            skiff_proto::v1::resources_client::ResourcesClient<tonic::transport::Channel>,
            tonic::Request<T>,
        ) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<tonic::Response<R>, tonic::Status>>,
    {
        let call = f(self.client.resources(), self.client.request(msg, true));
        let ns = self.namespace.as_deref().unwrap_or("");
        self.client.unary(verb, self.plural(), ns, call).await
    }

    /// Reads one object.
    pub async fn get(&self, name: &str) -> Result<K> {
        let msg = pb::GetRequest {
            resource: Some(self.resource_ref()),
            name: name.to_string(),
            ..Default::default()
        };
        let o = self
            .call("get", msg, |mut c, r| async move { c.get(r).await })
            .await?;
        decode(Some(o), self.kind())
    }

    /// Reads one object through its `status` subresource (the whole object, as Kubernetes
    /// answers GET `NAME/status`).
    pub async fn get_status(&self, name: &str) -> Result<K> {
        let msg = pb::GetRequest {
            resource: Some(self.resource_ref()),
            name: name.to_string(),
            subresource: "status".to_string(),
        };
        let o = self
            .call("get", msg, |mut c, r| async move { c.get(r).await })
            .await?;
        decode(Some(o), self.kind())
    }

    /// Reads one object, `None` when it does not exist.
    pub async fn get_opt(&self, name: &str) -> Result<Option<K>> {
        match self.get(name).await {
            Ok(o) => Ok(Some(o)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Lists objects (one page when `lp.limit` is set).
    pub async fn list(&self, lp: &ListParams) -> Result<ObjectList<K>> {
        let msg = pb::ListRequest {
            resource: Some(self.resource_ref()),
            label_selector: lp.label_selector.clone().unwrap_or_default(),
            field_selector: lp.field_selector.clone().unwrap_or_default(),
            limit: i64::from(lp.limit),
            r#continue: lp.continue_token.clone().unwrap_or_default(),
            resource_version: lp.resource_version.clone().unwrap_or_default(),
            resource_version_match: String::new(),
        };
        let l = self
            .call("list", msg, |mut c, r| async move { c.list(r).await })
            .await?;
        let items = l
            .items
            .into_iter()
            .map(|o| decode(Some(o), self.kind()))
            .collect::<Result<Vec<K>>>()?;
        Ok(ObjectList {
            items,
            resource_version: l.resource_version,
            continue_token: Some(l.r#continue).filter(|c| !c.is_empty()),
            remaining_item_count: l.remaining_item_count,
        })
    }

    /// Creates an object.
    pub async fn create(&self, pp: &PostParams, obj: &K) -> Result<K> {
        let msg = pb::CreateRequest {
            resource: Some(self.resource_ref()),
            object: Some(encode(obj, K::api_version(&self.dyntype), self.kind())?),
            options: Some(post_options(pp)),
            ..Default::default()
        };
        let w = self
            .call("create", msg, |mut c, r| async move { c.create(r).await })
            .await?;
        decode(w.object, self.kind())
    }

    /// Creates a subresource of object `name`, as POST `NAME/SUB` does (a ServiceAccount's
    /// `token`, taking and returning a `TokenRequest`; a pod's `eviction`), and answers what
    /// the server returns.
    pub async fn create_subresource<I: Object, O: Object>(
        &self,
        sub: &str,
        name: &str,
        pp: &PostParams,
        obj: &I,
    ) -> Result<O> {
        let msg = pb::CreateRequest {
            resource: Some(self.resource_ref()),
            object: Some(encode(obj, I::API_VERSION, I::KIND)?),
            options: Some(post_options(pp)),
            name: name.to_string(),
            subresource: sub.to_string(),
        };
        let w = self
            .call("create", msg, |mut c, r| async move { c.create(r).await })
            .await?;
        decode(w.object, O::KIND)
    }

    /// Replaces a subresource of object `name` that takes the object itself (a
    /// CertificateSigningRequest's `approval`), as PUT `NAME/SUB` does.
    pub async fn replace_subresource(
        &self,
        sub: &str,
        name: &str,
        pp: &PostParams,
        obj: &K,
    ) -> Result<K> {
        let msg = pb::UpdateRequest {
            resource: Some(self.resource_ref()),
            object: Some(self.named(name, obj)?),
            options: Some(post_options(pp)),
            subresource: sub.to_string(),
        };
        let w = self
            .call("update", msg, |mut c, r| async move { c.update(r).await })
            .await?;
        decode(w.object, self.kind())
    }

    fn named(&self, name: &str, obj: &K) -> Result<pb::Object> {
        let mut v = serde_json::to_value(obj)
            .map_err(|e| Error::json(format!("encoding a {}", self.kind()), e))?;
        match v.pointer("/metadata/name").and_then(|n| n.as_str()) {
            Some(n) if n != name => {
                return Err(Error::Invalid(format!(
                    "the object's metadata.name {n:?} does not match {name:?}"
                )))
            }
            Some(_) => {}
            None => v["metadata"]["name"] = serde_json::Value::String(name.into()),
        }
        Ok(pb::Object {
            api_version: K::api_version(&self.dyntype).into(),
            kind: self.kind().into(),
            json: serde_json::to_vec(&v)
                .map_err(|e| Error::json("encoding", e))?
                .into(),
        })
    }

    /// Replaces an object; a resourceVersion in its metadata makes it conditional
    /// ([`Error::is_conflict`] when the object changed since).
    pub async fn replace(&self, name: &str, pp: &PostParams, obj: &K) -> Result<K> {
        self.update(name, pp, obj, false).await
    }

    /// Replaces an object's status.
    pub async fn replace_status(&self, name: &str, pp: &PostParams, obj: &K) -> Result<K> {
        self.update(name, pp, obj, true).await
    }

    async fn update(&self, name: &str, pp: &PostParams, obj: &K, status: bool) -> Result<K> {
        let msg = pb::UpdateRequest {
            resource: Some(self.resource_ref()),
            object: Some(self.named(name, obj)?),
            options: Some(post_options(pp)),
            ..Default::default()
        };
        let w = self
            .call("update", msg, |mut c, r| async move {
                if status {
                    c.update_status(r).await
                } else {
                    c.update(r).await
                }
            })
            .await?;
        decode(w.object, self.kind())
    }

    async fn patch_sub<P: Serialize>(
        &self,
        name: &str,
        pp: &PatchParams,
        patch: &Patch<P>,
        sub: &str,
    ) -> Result<K> {
        let (ty, body) = match patch {
            Patch::Json(p) => (pb::PatchType::Json, serde_json::to_vec(p)),
            Patch::Merge(p) => (pb::PatchType::Merge, serde_json::to_vec(p)),
            Patch::Strategic(p) => (pb::PatchType::StrategicMerge, serde_json::to_vec(p)),
            Patch::Apply(p) => (pb::PatchType::Apply, serde_json::to_vec(p)),
        };
        let body = body.map_err(|e| Error::json("encoding the patch", e))?;
        let msg = pb::PatchRequest {
            resource: Some(self.resource_ref()),
            name: name.to_string(),
            r#type: ty as i32,
            patch: body.into(),
            subresource: sub.to_string(),
            options: Some(pb::WriteOptions {
                dry_run: pp.dry_run,
                field_manager: pp.field_manager.clone().unwrap_or_default(),
                field_validation: if pp.strict {
                    pb::FieldValidation::Strict as i32
                } else {
                    pb::FieldValidation::Unspecified as i32
                },
                force: pp.force,
            }),
        };
        let w = self
            .call("patch", msg, |mut c, r| async move { c.patch(r).await })
            .await?;
        decode(w.object, self.kind())
    }

    /// Patches an object.
    pub async fn patch<P: Serialize>(
        &self,
        name: &str,
        pp: &PatchParams,
        patch: &Patch<P>,
    ) -> Result<K> {
        self.patch_sub(name, pp, patch, "").await
    }

    /// Patches an object's status.
    pub async fn patch_status<P: Serialize>(
        &self,
        name: &str,
        pp: &PatchParams,
        patch: &Patch<P>,
    ) -> Result<K> {
        self.patch_sub(name, pp, patch, "status").await
    }

    /// Deletes an object.
    pub async fn delete(&self, name: &str, dp: &DeleteParams) -> Result<Deleted<K>> {
        let propagation = match dp.propagation_policy {
            None => pb::PropagationPolicy::Unspecified,
            Some(PropagationPolicy::Orphan) => pb::PropagationPolicy::Orphan,
            Some(PropagationPolicy::Background) => pb::PropagationPolicy::Background,
            Some(PropagationPolicy::Foreground) => pb::PropagationPolicy::Foreground,
        };
        let msg = pb::DeleteRequest {
            resource: Some(self.resource_ref()),
            name: name.to_string(),
            grace_period_seconds: dp.grace_period_seconds,
            propagation_policy: propagation as i32,
            preconditions: Some(pb::Preconditions {
                uid: dp.precondition_uid.clone(),
                resource_version: dp.precondition_resource_version.clone(),
            }),
            dry_run: dp.dry_run,
        };
        let d = self
            .call("delete", msg, |mut c, r| async move { c.delete(r).await })
            .await?;
        let obj = decode(d.object, self.kind())?;
        Ok(if d.finished {
            Deleted::Gone(obj)
        } else {
            Deleted::Pending(obj)
        })
    }

    /// Watches changes after `resource_version` ("" or "0": the current state first, as
    /// `Added` events). The stream ends when the server ends it (timeout or shutdown); an
    /// `Err` with [`Error::is_gone`] means the version is too old: list again.
    ///
    /// Most programs want [`crate::watcher()`], which lists, watches and resumes by itself.
    pub async fn watch(
        &self,
        wp: &WatchParams,
        resource_version: &str,
    ) -> Result<impl Stream<Item = Result<WatchEvent<K>>> + Send + 'static> {
        let msg = pb::WatchRequest {
            resource: Some(self.resource_ref()),
            label_selector: wp.label_selector.clone().unwrap_or_default(),
            field_selector: wp.field_selector.clone().unwrap_or_default(),
            name: wp.name.clone().unwrap_or_default(),
            resource_version: resource_version.to_string(),
            allow_bookmarks: wp.bookmarks,
            send_initial_events: wp.send_initial_events,
            timeout_seconds: wp.timeout_seconds.map(i64::from).unwrap_or(0),
        };
        self.client.throttle().await;
        let start = Instant::now();
        let mut c = self.client.resources();
        let result = c.watch(self.client.request(msg, false)).await;
        let code = result
            .as_ref()
            .map(|_| tonic::Code::Ok)
            .unwrap_or_else(|s| s.code());
        self.client
            .observe("watch", self.plural(), code, start.elapsed());
        let stream = result?.into_inner();
        let dyntype = self.dyntype.clone();
        Ok(stream.map(move |item| {
            let ev = item?;
            let obj = || decode::<K>(ev.object.clone(), K::kind(&dyntype));
            match pb::EventType::try_from(ev.r#type) {
                Ok(pb::EventType::Added) => Ok(WatchEvent::Added(obj()?)),
                Ok(pb::EventType::Modified) => Ok(WatchEvent::Modified(obj()?)),
                Ok(pb::EventType::Deleted) => Ok(WatchEvent::Deleted(obj()?)),
                Ok(pb::EventType::Bookmark) => Ok(WatchEvent::Bookmark {
                    resource_version: ev.resource_version,
                    initial_events_end: ev.initial_events_end,
                }),
                _ => Err(Error::Invalid(format!(
                    "unknown watch event type {}",
                    ev.r#type
                ))),
            }
        }))
    }
}

impl Api<Pod> {
    /// Binds a pod to a node, as a scheduler does (the `binding` subresource). Fails with
    /// [`Error::is_conflict`] when the pod is already bound.
    pub async fn bind(&self, name: &str, node: &str) -> Result<()> {
        let ns = self
            .namespace
            .clone()
            .ok_or_else(|| Error::Invalid("bind needs a namespaced Api".into()))?;
        let msg = pb::BindRequest {
            namespace: ns,
            pod: name.to_string(),
            node: node.to_string(),
            ..Default::default()
        };
        self.call("create", msg, |mut c, r| async move { c.bind(r).await })
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dynamic::{ApiResource, DynamicObject};
    use k8s_openapi::api::core::v1::ConfigMap;
    use k8s_openapi::api::rbac::v1::ClusterRole;

    fn client() -> Client {
        // Connections are made on first use: none is made here.
        Client::new(crate::Config::new("https://127.0.0.1:1")).unwrap()
    }

    #[tokio::test]
    async fn a_dynamic_api_addresses_what_its_descriptor_names() {
        let typed: Api<ConfigMap> = Api::namespaced(client(), "ns");
        let ar = ApiResource::namespaced("", "v1", "ConfigMap", "configmaps");
        let dynamic: Api<DynamicObject> = Api::namespaced_with(client(), "ns", &ar);
        assert_eq!(dynamic.resource_ref(), typed.resource_ref());
        assert_eq!(dynamic.dynamic_type(), &ar);

        let widgets = ApiResource::namespaced("example.skiff.dev", "v1", "Widget", "widgets");
        let all = Api::<DynamicObject>::all_with(client(), &widgets);
        let r = all.resource_ref();
        assert_eq!(
            (
                r.group.as_str(),
                r.version.as_str(),
                r.resource.as_str(),
                r.namespace.as_str()
            ),
            ("example.skiff.dev", "v1", "widgets", "")
        );
        assert_eq!(all.clone().in_namespace("a").resource_ref().namespace, "a");
        assert!(format!("{all:?}").contains("widgets"));

        let roles = Api::<ClusterRole>::cluster(client());
        let ar = ApiResource::erase::<ClusterRole>(&());
        assert_eq!(
            Api::<DynamicObject>::all_with(client(), &ar).resource_ref(),
            roles.resource_ref()
        );
    }

    #[tokio::test]
    async fn writes_are_wrapped_in_the_descriptors_type() {
        let widgets = ApiResource::namespaced("example.skiff.dev", "v1", "Widget", "widgets");
        let api = Api::<DynamicObject>::namespaced_with(client(), "ns", &widgets);
        let w = DynamicObject::new("w", &widgets);
        let o = api.named("w", &w).unwrap();
        assert_eq!(
            (o.api_version.as_str(), o.kind.as_str()),
            ("example.skiff.dev/v1", "Widget")
        );
        // The name given must be the object's, or is filled in.
        assert!(api.named("other", &w).is_err());
        let mut unnamed = w.clone();
        unnamed.metadata.name = None;
        let o = api.named("w", &unnamed).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&o.json).unwrap();
        assert_eq!(v["metadata"]["name"], "w");
    }
}
