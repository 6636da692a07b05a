//! The kinds the garbage collector and the namespace controller handle without knowing them:
//! each [`Kind`] can start (or share) its informer, report what it holds, and get, delete
//! and patch one object by name, whatever its type.

use std::collections::HashMap;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ConfigMap, Endpoints, LimitRange, Node, Pod, ResourceQuota, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use serde_json::Value;
use skiff_client::reflector::Change;
use skiff_client::{Api, DeleteParams, Object, Patch, PatchParams, PropagationPolicy};

use crate::Context;

/// A boxed future, for object-safe async methods.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A kind's changes, and what it holds once synced.
pub type Watch = (
    Pin<Box<dyn Stream<Item = MetaChange> + Send>>,
    BoxFuture<'static, Vec<Meta>>,
);

/// What the collector needs to know of one object.
#[derive(Debug, Clone, PartialEq)]
pub struct Meta {
    /// `apiVersion` of its kind.
    pub api_version: &'static str,
    /// Its kind.
    pub kind: &'static str,
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
    fn of<K: Object>(o: &K) -> Meta {
        let m: &ObjectMeta = o.metadata();
        Meta {
            api_version: K::API_VERSION,
            kind: K::KIND,
            namespace: m.namespace.clone().unwrap_or_default(),
            name: m.name.clone().unwrap_or_default(),
            uid: m.uid.clone().unwrap_or_default(),
            owners: m.owner_references.clone().unwrap_or_default(),
            finalizers: m.finalizers.clone().unwrap_or_default(),
            deleting: m.deletion_timestamp.is_some(),
            resource_version: m.resource_version.clone().unwrap_or_default(),
        }
    }
}

/// A change as the collector sees it.
#[derive(Debug, Clone)]
pub enum MetaChange {
    /// Created or changed.
    Applied(Meta),
    /// Gone.
    Deleted(Meta),
    /// Everything of this kind, after a re-list.
    Resynced(&'static str, Vec<Meta>),
}

/// One kind, used without knowing its type.
pub trait Kind: Send + Sync {
    /// `apiVersion`.
    fn api_version(&self) -> &'static str;
    /// `kind`.
    fn kind(&self) -> &'static str;
    /// Whether its objects live in namespaces.
    fn namespaced(&self) -> bool;
    /// Its changes from now on (starting its shared informer if need be) and what it holds
    /// once synced.
    fn watch(&self, ctx: &Context) -> Watch;
    /// The objects in a namespace, from the cache.
    fn in_namespace(&self, ctx: &Context, ns: &str) -> Vec<Meta>;
    /// The object as the server has it now (`None`: gone).
    fn get<'a>(
        &'a self,
        ctx: &'a Context,
        ns: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, skiff_client::Result<Option<Meta>>>;
    /// Deletes the object if it is still `uid` (and, when given, still at
    /// `resource_version`).
    #[allow(clippy::too_many_arguments)]
    fn delete<'a>(
        &'a self,
        ctx: &'a Context,
        ns: &'a str,
        name: &'a str,
        uid: &'a str,
        resource_version: Option<&'a str>,
        policy: PropagationPolicy,
    ) -> BoxFuture<'a, skiff_client::Result<()>>;
    /// Merge-patches the object's metadata.
    fn patch_meta<'a>(
        &'a self,
        ctx: &'a Context,
        ns: &'a str,
        name: &'a str,
        body: Value,
    ) -> BoxFuture<'a, skiff_client::Result<()>>;
}

struct Typed<K>(PhantomData<fn() -> K>);

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
    fn api_version(&self) -> &'static str {
        K::API_VERSION
    }

    fn kind(&self) -> &'static str {
        K::KIND
    }

    fn namespaced(&self) -> bool {
        std::any::TypeId::of::<K::Scope>()
            == std::any::TypeId::of::<k8s_openapi::NamespaceResourceScope>()
    }

    fn watch(&self, ctx: &Context) -> Watch {
        let informer = ctx.owned::<K>();
        let store = informer.store();
        let resync_store = store.clone();
        let changes = informer.subscribe().map(move |c| match c {
            Change::Applied(o) => MetaChange::Applied(Meta::of(o.as_ref())),
            Change::Deleted(o) => MetaChange::Deleted(Meta::of(o.as_ref())),
            Change::Resynced => MetaChange::Resynced(
                K::KIND,
                resync_store
                    .state()
                    .iter()
                    .map(|o| Meta::of(o.as_ref()))
                    .collect(),
            ),
        });
        let initial = Box::pin(async move {
            store.wait_until_ready().await;
            store.state().iter().map(|o| Meta::of(o.as_ref())).collect()
        });
        (Box::pin(changes), initial)
    }

    fn in_namespace(&self, ctx: &Context, ns: &str) -> Vec<Meta> {
        ctx.owned::<K>()
            .store()
            .in_namespace(ns)
            .iter()
            .map(|o| Meta::of(o.as_ref()))
            .collect()
    }

    fn get<'a>(
        &'a self,
        ctx: &'a Context,
        ns: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, skiff_client::Result<Option<Meta>>> {
        Box::pin(async move {
            Ok(Self::api(ctx, ns)
                .get_opt(name)
                .await?
                .map(|o| Meta::of(&o)))
        })
    }

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
            let dp = DeleteParams {
                propagation_policy: Some(policy),
                precondition_uid: Some(uid.to_string()),
                precondition_resource_version: resource_version.map(String::from),
                ..Default::default()
            };
            match Self::api(ctx, ns).delete(name, &dp).await {
                Ok(_) => Ok(()),
                Err(e) if e.is_not_found() || e.is_conflict() => Ok(()),
                Err(e) => Err(e),
            }
        })
    }

    fn patch_meta<'a>(
        &'a self,
        ctx: &'a Context,
        ns: &'a str,
        name: &'a str,
        body: Value,
    ) -> BoxFuture<'a, skiff_client::Result<()>> {
        Box::pin(async move {
            match Self::api(ctx, ns)
                .patch(name, &PatchParams::default(), &Patch::Merge(body))
                .await
            {
                Ok(_) => Ok(()),
                Err(e) if e.is_not_found() => Ok(()),
                Err(e) => Err(e),
            }
        })
    }
}

fn kind<K: Object>() -> Arc<dyn Kind> {
    Arc::new(Typed::<K>(PhantomData))
}

/// Every kind that can own or be owned, keyed by `(apiVersion, kind)`.
pub fn all() -> HashMap<(&'static str, &'static str), Arc<dyn Kind>> {
    [
        kind::<Pod>(),
        kind::<ReplicaSet>(),
        kind::<Deployment>(),
        kind::<DaemonSet>(),
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
    ]
    .into_iter()
    .map(|k| ((k.api_version(), k.kind()), k))
    .collect()
}
