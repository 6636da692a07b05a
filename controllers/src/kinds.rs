//! The kinds the garbage collector and the namespace controller handle without knowing them:
//! each [`Kind`] can follow its informer, report what it holds, and get, delete and patch one
//! object by name, whatever its type. The built-in kinds ([`builtin`]) are typed; a custom
//! resource's kind ([`Custom`]) is named at run time and keeps only its objects' metadata.

use std::collections::HashMap;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;

use futures::stream::BoxStream;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{
    ControllerRevision, DaemonSet, Deployment, ReplicaSet, StatefulSet,
};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ConfigMap, Endpoints, LimitRange, Namespace, Node, PersistentVolumeClaim, Pod, PodTemplate,
    ReplicationController, ResourceQuota, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::api::scheduling::v1::PriorityClass;
use k8s_openapi::api::storage::v1::CSIStorageCapacity;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use skiff_client::informer::Informer;
use skiff_client::reflector::{Change, Store};
use skiff_client::{
    watcher, Api, ApiResource, Client, DeleteParams, Object, Patch, PatchParams, PropagationPolicy,
    Resource,
};
use tokio_util::sync::CancellationToken;

use crate::Context;

/// A boxed future, for object-safe async methods.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// An API group and a kind: what identifies a kind whatever version it is served at, as
/// Kubernetes' garbage collector matches owner references.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupKind {
    /// The group (`""` for the core group).
    pub group: String,
    /// The kind.
    pub kind: String,
}

impl GroupKind {
    /// The group and kind an object's (or an owner reference's) `apiVersion` and `kind` name.
    pub fn of(api_version: &str, kind: &str) -> GroupKind {
        GroupKind {
            group: group_of(api_version).to_string(),
            kind: kind.to_string(),
        }
    }
}

impl std::fmt::Display for GroupKind {
    /// `Kind.group`, or `Kind` in the core group, as Kubernetes prints a GroupKind.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.group.is_empty() {
            f.write_str(&self.kind)
        } else {
            write!(f, "{}.{}", self.kind, self.group)
        }
    }
}

/// The group of an `apiVersion`: what comes before the `/` (none for the core group's `v1`).
pub fn group_of(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(g, _)| g)
}

/// What the collector needs to know of one object.
#[derive(Debug, Clone, PartialEq)]
pub struct Meta {
    /// `apiVersion` of its kind, as watched.
    pub api_version: Arc<str>,
    /// Its kind.
    pub kind: Arc<str>,
    /// Its namespace ("" when cluster-scoped).
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its UID.
    pub uid: String,
    /// Its owners.
    pub owners: Vec<OwnerReference>,
    /// Its finalizers.
    pub finalizers: Vec<String>,
    /// Whether it is being deleted.
    pub deleting: bool,
    /// Its resourceVersion.
    pub resource_version: String,
}

impl Meta {
    fn of(m: &ObjectMeta, id: &Ident) -> Meta {
        Meta {
            api_version: id.api_version.clone(),
            kind: id.kind.clone(),
            namespace: m.namespace.clone().unwrap_or_default(),
            name: m.name.clone().unwrap_or_default(),
            uid: m.uid.clone().unwrap_or_default(),
            owners: m.owner_references.clone().unwrap_or_default(),
            finalizers: m.finalizers.clone().unwrap_or_default(),
            deleting: m.deletion_timestamp.is_some(),
            resource_version: m.resource_version.clone().unwrap_or_default(),
        }
    }

    /// Whether the object is of `gk` (at any version).
    pub fn is_of(&self, gk: &GroupKind) -> bool {
        *self.kind == *gk.kind && group_of(&self.api_version) == gk.group
    }

    /// Its group and kind.
    pub fn group_kind(&self) -> GroupKind {
        GroupKind::of(&self.api_version, &self.kind)
    }
}

/// A change as the collector sees it.
#[derive(Debug, Clone)]
pub enum MetaChange {
    /// Created or changed.
    Applied(Meta),
    /// Gone.
    Deleted(Meta),
    /// Everything of this kind, after a (re-)list.
    Resynced(Vec<Meta>),
}

/// One kind, used without knowing its type.
pub trait Kind: Send + Sync {
    /// `apiVersion` it is watched and addressed at.
    fn api_version(&self) -> &str;
    /// `kind`.
    fn kind(&self) -> &str;
    /// The resource (lower-case plural).
    fn plural(&self) -> &str;
    /// Whether its objects live in namespaces.
    fn namespaced(&self) -> bool;
    /// Its group and kind.
    fn group_kind(&self) -> GroupKind {
        GroupKind::of(self.api_version(), self.kind())
    }
    /// Everything it holds once its cache is listed (as [`MetaChange::Resynced`]), then its
    /// changes (starting its informer if need be). Every change after the first item is one
    /// the first item may already show: applied in order, they end at the cache's state.
    fn watch(&self, ctx: &Context) -> BoxStream<'static, MetaChange>;
    /// Resolves once its cache is listed.
    fn synced(&self, ctx: &Context) -> BoxFuture<'static, ()>;
    /// The objects in a namespace, from the cache; `None` until the cache is listed.
    fn in_namespace(&self, ctx: &Context, ns: &str) -> Option<Vec<Meta>>;
    /// The object as the server has it now (`None`: gone).
    fn get<'a>(
        &'a self,
        ctx: &'a Context,
        ns: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, skiff_client::Result<Option<Meta>>>;
    /// Deletes the object if it is still `uid` (and, when given, still at
    /// `resource_version`); NotFound and Conflict (a precondition failed) are errors.
    #[allow(clippy::too_many_arguments)]
    fn delete_exact<'a>(
        &'a self,
        ctx: &'a Context,
        ns: &'a str,
        name: &'a str,
        uid: &'a str,
        resource_version: Option<&'a str>,
        policy: PropagationPolicy,
    ) -> BoxFuture<'a, skiff_client::Result<()>>;
    /// Deletes the object if it is still `uid` (and, when given, still at
    /// `resource_version`); gone or changed meanwhile, it is left alone.
    #[allow(clippy::too_many_arguments)]
    fn delete<'a>(
        &'a self,
        ctx: &'a Context,
        ns: &'a str,
        name: &'a str,
        uid: &'a str,
        resource_version: Option<&'a str>,
        policy: PropagationPolicy,
    ) -> BoxFuture<'a, skiff_client::Result<()>> {
        Box::pin(async move {
            match self
                .delete_exact(ctx, ns, name, uid, resource_version, policy)
                .await
            {
                Err(e) if e.is_not_found() || e.is_conflict() => Ok(()),
                r => r,
            }
        })
    }
    /// Merge-patches the object's metadata; the object as patched, `None` if it is gone.
    fn patch_meta<'a>(
        &'a self,
        ctx: &'a Context,
        ns: &'a str,
        name: &'a str,
        body: Value,
    ) -> BoxFuture<'a, skiff_client::Result<Option<Meta>>>;
}

/// A kind's `apiVersion` and `kind`, shared by every [`Meta`] of it.
#[derive(Clone)]
struct Ident {
    api_version: Arc<str>,
    kind: Arc<str>,
}

/// What one kind's informer reports, as [`Kind::watch`] promises it.
fn follow_informer<K: Resource>(
    informer: &Informer<K>,
    id: Ident,
) -> BoxStream<'static, MetaChange> {
    // Subscribed before the snapshot is read, so nothing falls between the two.
    let changes = informer.subscribe();
    let store = informer.store();
    let first_store = store.clone();
    let first_id = id.clone();
    let first = futures::stream::once(async move {
        first_store.wait_until_ready().await;
        snapshot(&first_store, &first_id)
    });
    let rest = changes.map(move |c| match c {
        Change::Applied(o) => MetaChange::Applied(Meta::of(o.meta(), &id)),
        Change::Deleted(o) => MetaChange::Deleted(Meta::of(o.meta(), &id)),
        Change::Resynced => snapshot(&store, &id),
    });
    first.chain(rest).boxed()
}

fn snapshot<K: Resource>(store: &Store<K>, id: &Ident) -> MetaChange {
    MetaChange::Resynced(
        store
            .state()
            .iter()
            .map(|o| Meta::of(o.meta(), id))
            .collect(),
    )
}

fn in_namespace<K: Resource>(store: &Store<K>, ns: &str, id: &Ident) -> Option<Vec<Meta>> {
    if !store.is_ready() {
        return None;
    }
    Some(
        store
            .in_namespace(ns)
            .iter()
            .map(|o| Meta::of(o.meta(), id))
            .collect(),
    )
}

fn synced<K: Resource>(store: Store<K>) -> BoxFuture<'static, ()> {
    Box::pin(async move { store.wait_until_ready().await })
}

async fn get<K: Resource>(
    api: Api<K>,
    name: &str,
    id: &Ident,
) -> skiff_client::Result<Option<Meta>> {
    Ok(api.get_opt(name).await?.map(|o| Meta::of(o.meta(), id)))
}

async fn delete<K: Resource>(
    api: Api<K>,
    name: &str,
    uid: &str,
    resource_version: Option<&str>,
    policy: PropagationPolicy,
) -> skiff_client::Result<()> {
    let dp = DeleteParams {
        propagation_policy: Some(policy),
        precondition_uid: Some(uid.to_string()),
        precondition_resource_version: resource_version.map(String::from),
        ..Default::default()
    };
    api.delete(name, &dp).await.map(|_| ())
}

async fn patch_meta<K: Resource>(
    api: Api<K>,
    name: &str,
    body: Value,
    id: &Ident,
) -> skiff_client::Result<Option<Meta>> {
    match api
        .patch(name, &PatchParams::default(), &Patch::Merge(body))
        .await
    {
        Ok(o) => Ok(Some(Meta::of(o.meta(), id))),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// A kind Skiff's API server serves by itself, through the controllers' shared informer.
struct Typed<K> {
    id: Ident,
    _k: PhantomData<fn() -> K>,
}

impl<K: Object> Typed<K> {
    fn api(ctx: &Context, ns: &str) -> Api<K> {
        let api = Api::<K>::all(ctx.client.clone());
        if ns.is_empty() {
            api
        } else {
            api.in_namespace(ns)
        }
    }
}

impl<K: Object> Kind for Typed<K> {
    fn api_version(&self) -> &str {
        K::API_VERSION
    }

    fn kind(&self) -> &str {
        K::KIND
    }

    fn plural(&self) -> &str {
        K::URL_PATH_SEGMENT
    }

    fn namespaced(&self) -> bool {
        <K as Resource>::namespaced(&())
    }

    fn watch(&self, ctx: &Context) -> BoxStream<'static, MetaChange> {
        follow_informer(&ctx.owned::<K>(), self.id.clone())
    }

    fn synced(&self, ctx: &Context) -> BoxFuture<'static, ()> {
        synced(ctx.owned::<K>().store())
    }

    fn in_namespace(&self, ctx: &Context, ns: &str) -> Option<Vec<Meta>> {
        in_namespace(&ctx.owned::<K>().store(), ns, &self.id)
    }

    fn get<'a>(
        &'a self,
        ctx: &'a Context,
        ns: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, skiff_client::Result<Option<Meta>>> {
        Box::pin(get(Self::api(ctx, ns), name, &self.id))
    }

    fn delete_exact<'a>(
        &'a self,
        ctx: &'a Context,
        ns: &'a str,
        name: &'a str,
        uid: &'a str,
        resource_version: Option<&'a str>,
        policy: PropagationPolicy,
    ) -> BoxFuture<'a, skiff_client::Result<()>> {
        Box::pin(delete(
            Self::api(ctx, ns),
            name,
            uid,
            resource_version,
            policy,
        ))
    }

    fn patch_meta<'a>(
        &'a self,
        ctx: &'a Context,
        ns: &'a str,
        name: &'a str,
        body: Value,
    ) -> BoxFuture<'a, skiff_client::Result<Option<Meta>>> {
        Box::pin(patch_meta(Self::api(ctx, ns), name, body, &self.id))
    }
}

fn kind<K: Object>() -> Arc<dyn Kind> {
    Arc::new(Typed::<K> {
        id: Ident {
            api_version: K::API_VERSION.into(),
            kind: K::KIND.into(),
        },
        _k: PhantomData,
    })
}

/// Kinds by group and kind.
pub type Kinds = HashMap<GroupKind, Arc<dyn Kind>>;

/// Every built-in kind that can own or be owned: each one the API server serves but events
/// (which Kubernetes' garbage collector leaves alone too).
pub fn builtin() -> Kinds {
    [
        kind::<Pod>(),
        kind::<ReplicaSet>(),
        kind::<ReplicationController>(),
        kind::<PodTemplate>(),
        kind::<Deployment>(),
        kind::<DaemonSet>(),
        kind::<StatefulSet>(),
        kind::<ControllerRevision>(),
        kind::<PersistentVolumeClaim>(),
        kind::<Job>(),
        kind::<CronJob>(),
        kind::<Service>(),
        kind::<Endpoints>(),
        kind::<EndpointSlice>(),
        kind::<ConfigMap>(),
        kind::<Secret>(),
        kind::<ServiceAccount>(),
        kind::<Lease>(),
        kind::<ResourceQuota>(),
        kind::<LimitRange>(),
        kind::<Node>(),
        kind::<Namespace>(),
        kind::<Role>(),
        kind::<RoleBinding>(),
        kind::<ClusterRole>(),
        kind::<ClusterRoleBinding>(),
        kind::<CertificateSigningRequest>(),
        kind::<PriorityClass>(),
        kind::<CSIStorageCapacity>(),
        kind::<CustomResourceDefinition>(),
    ]
    .into_iter()
    .map(|k| (k.group_kind(), k))
    .collect()
}

/// An object of a custom resource as the collector keeps it: its metadata alone (as
/// Kubernetes' garbage collector keeps every object, through metadata-only informers), so a
/// cache of large custom objects costs little.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct MetaOnly {
    /// `metadata`.
    #[serde(default)]
    pub metadata: ObjectMeta,
}

skiff_client::dynamic_resource!(MetaOnly);

/// A custom resource's kind, served because of a CustomResourceDefinition: its informer runs
/// from [`Custom::start`] until [`Custom::stop`] (the definition gone).
pub struct Custom {
    resource: ApiResource,
    id: Ident,
    informer: Informer<MetaOnly>,
    stop: CancellationToken,
}

impl Custom {
    /// Starts following `resource`'s objects, until `stop` or `shutdown`.
    pub fn start(client: Client, resource: ApiResource, shutdown: &CancellationToken) -> Custom {
        let stop = shutdown.child_token();
        let api = Api::<MetaOnly>::all_with(client, &resource);
        let informer = Informer::spawn(
            api,
            watcher::Config::default().strip_managed_fields(),
            HashMap::new(),
            stop.clone(),
        );
        Custom {
            id: Ident {
                api_version: resource.api_version.as_str().into(),
                kind: resource.kind.as_str().into(),
            },
            resource,
            informer,
            stop,
        }
    }

    /// The resource followed.
    pub fn resource(&self) -> &ApiResource {
        &self.resource
    }

    /// Stops its informer.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    fn api(&self, ctx: &Context, ns: &str) -> Api<MetaOnly> {
        let api = Api::<MetaOnly>::all_with(ctx.client.clone(), &self.resource);
        if ns.is_empty() {
            api
        } else {
            api.in_namespace(ns)
        }
    }
}

impl Kind for Custom {
    fn api_version(&self) -> &str {
        &self.resource.api_version
    }

    fn kind(&self) -> &str {
        &self.resource.kind
    }

    fn plural(&self) -> &str {
        &self.resource.plural
    }

    fn namespaced(&self) -> bool {
        self.resource.namespaced
    }

    fn group_kind(&self) -> GroupKind {
        GroupKind {
            group: self.resource.group.clone(),
            kind: self.resource.kind.clone(),
        }
    }

    fn watch(&self, _ctx: &Context) -> BoxStream<'static, MetaChange> {
        follow_informer(&self.informer, self.id.clone())
    }

    fn synced(&self, _ctx: &Context) -> BoxFuture<'static, ()> {
        synced(self.informer.store())
    }

    fn in_namespace(&self, _ctx: &Context, ns: &str) -> Option<Vec<Meta>> {
        in_namespace(&self.informer.store(), ns, &self.id)
    }

    fn get<'a>(
        &'a self,
        ctx: &'a Context,
        ns: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, skiff_client::Result<Option<Meta>>> {
        Box::pin(get(self.api(ctx, ns), name, &self.id))
    }

    fn delete_exact<'a>(
        &'a self,
        ctx: &'a Context,
        ns: &'a str,
        name: &'a str,
        uid: &'a str,
        resource_version: Option<&'a str>,
        policy: PropagationPolicy,
    ) -> BoxFuture<'a, skiff_client::Result<()>> {
        Box::pin(delete(
            self.api(ctx, ns),
            name,
            uid,
            resource_version,
            policy,
        ))
    }

    fn patch_meta<'a>(
        &'a self,
        ctx: &'a Context,
        ns: &'a str,
        name: &'a str,
        body: Value,
    ) -> BoxFuture<'a, skiff_client::Result<Option<Meta>>> {
        Box::pin(patch_meta(self.api(ctx, ns), name, body, &self.id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_told_apart_by_group_not_version() {
        assert_eq!(
            GroupKind::of("example.skiff.dev/v1", "Widget"),
            GroupKind::of("example.skiff.dev/v1beta1", "Widget")
        );
        assert_ne!(
            GroupKind::of("v1", "Event"),
            GroupKind::of("events.k8s.io/v1", "Event")
        );
        assert_eq!(GroupKind::of("v1", "Pod").group, "");
        assert_eq!(
            GroupKind::of("apps/v1", "Deployment").to_string(),
            "Deployment.apps"
        );
        assert_eq!(GroupKind::of("v1", "Pod").to_string(), "Pod");
    }

    #[test]
    fn builtin_kinds_are_keyed_by_group_kind() {
        let all = builtin();
        let rs = &all[&GroupKind::of("apps/v1", "ReplicaSet")];
        assert_eq!((rs.api_version(), rs.plural()), ("apps/v1", "replicasets"));
        assert!(rs.namespaced());
        assert!(!all[&GroupKind::of("v1", "Node")].namespaced());
        let rc = &all[&GroupKind::of("v1", "ReplicationController")];
        assert_eq!(
            (rc.api_version(), rc.plural()),
            ("v1", "replicationcontrollers")
        );
        assert!(all.contains_key(&GroupKind::of("v1", "PodTemplate")));
        assert!(all.contains_key(&GroupKind::of(
            "rbac.authorization.k8s.io/v1",
            "RoleBinding"
        )));
        assert!(
            !all.keys().any(|gk| gk.kind == "Event"),
            "events are left alone"
        );
    }

    #[test]
    fn metadata_only_objects_read_any_object() {
        let o: MetaOnly = serde_json::from_value(serde_json::json!({
            "apiVersion": "example.skiff.dev/v1", "kind": "Widget",
            "metadata": {"name": "w", "uid": "u", "ownerReferences": [
                {"apiVersion": "v1", "kind": "ConfigMap", "name": "c", "uid": "o"}]},
            "spec": {"replicas": 3}
        }))
        .unwrap();
        let id = Ident {
            api_version: "example.skiff.dev/v1".into(),
            kind: "Widget".into(),
        };
        let m = Meta::of(&o.metadata, &id);
        assert_eq!((m.name.as_str(), m.uid.as_str()), ("w", "u"));
        assert_eq!(m.owners[0].uid, "o");
        assert!(m.is_of(&GroupKind::of("example.skiff.dev/v2", "Widget")));
        assert!(!m.is_of(&GroupKind::of("other.skiff.dev/v1", "Widget")));
    }
}
