//! Controller references: who controls an object, adopting matching orphans and releasing
//! objects that stopped matching (client-go's `ControllerRefManager`), and turning changes of
//! owned objects into the owner's key.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use serde_json::json;
use skiff_client::controller::WorkQueue;
use skiff_client::informer::Informer;
use skiff_client::reflector::{Change, IndexFn, ObjectKey, Store};
use skiff_client::{Api, Client, Object, Patch, PatchParams};
use skiff_rules::selector;
use tokio_util::sync::CancellationToken;

/// Index of objects by their controller's UID.
pub const CONTROLLER_INDEX: &str = "controller-uid";
/// Index of objects no controller owns, by namespace.
pub const ORPHAN_INDEX: &str = "orphans";

/// The owner reference marked `controller: true`, if any.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
}

/// Files objects under their controller's UID.
pub fn controller_index<K: Object>() -> IndexFn<K> {
    Arc::new(|o: &K| {
        controller_of(o.metadata())
            .map(|r| r.uid.clone())
            .into_iter()
            .collect()
    })
}

/// Files objects no controller owns under their namespace.
pub fn orphan_index<K: Object>() -> IndexFn<K> {
    Arc::new(|o: &K| {
        let m = o.metadata();
        if controller_of(m).is_some() {
            return Vec::new();
        }
        vec![m.namespace.clone().unwrap_or_default()]
    })
}

/// A controller reference to `owner` (`controller` and `blockOwnerDeletion` set).
pub fn controller_ref<O: Object>(owner: &O) -> OwnerReference {
    let m = owner.metadata();
    OwnerReference {
        api_version: O::API_VERSION.into(),
        kind: O::KIND.into(),
        name: m.name.clone().unwrap_or_default(),
        uid: m.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Whether `obj` is being deleted.
pub fn deleting(meta: &ObjectMeta) -> bool {
    meta.deletion_timestamp.is_some()
}

/// The objects `owner` controls after claiming: those it controls that still match
/// `sel`, plus the orphans in its namespace that match (adopted now). Objects it controls that
/// no longer match are released. A deleting owner adopts nothing.
pub async fn claim<
    O: Object,
    K: Object + k8s_openapi::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
>(
    client: &Client,
    owner: &O,
    sel: &LabelSelector,
    store: &Store<K>,
) -> skiff_client::Result<Vec<Arc<K>>> {
    let m = owner.metadata();
    let uid = m.uid.clone().unwrap_or_default();
    let ns = m.namespace.clone().unwrap_or_default();
    let api: Api<K> = Api::namespaced(client.clone(), &ns);
    let mut out = Vec::new();
    for o in store.by_index(CONTROLLER_INDEX, &uid) {
        let om = o.metadata();
        if om.namespace.as_deref() != Some(ns.as_str()) {
            continue;
        }
        if selector::matches(Some(sel), om.labels.as_ref()) {
            out.push(o);
        } else if !deleting(om) {
            release(&api, o.as_ref(), &uid).await?;
        }
    }
    if deleting(m) {
        return Ok(out);
    }
    let mut may_adopt = None;
    for o in store.by_index(ORPHAN_INDEX, &ns) {
        let om = o.metadata();
        if deleting(om) || !selector::matches(Some(sel), om.labels.as_ref()) {
            continue;
        }
        // The cache may not show yet that the owner is gone or going (it may be the very
        // delete that orphaned this object): ask the server once before adopting anything.
        if may_adopt.is_none() {
            let name = m.name.as_deref().unwrap_or_default();
            let fresh = Api::<O>::all(client.clone())
                .in_namespace(&ns)
                .get_opt(name)
                .await?;
            may_adopt = Some(fresh.is_some_and(|f| {
                f.metadata().uid == m.uid && f.metadata().deletion_timestamp.is_none()
            }));
        }
        if may_adopt == Some(false) {
            break;
        }
        match adopt(&api, o.as_ref(), owner).await {
            Ok(adopted) => out.push(Arc::new(adopted)),
            // Changed or gone meanwhile: its next event brings it back here.
            Err(e) if e.is_conflict() || e.is_not_found() || e.is_invalid() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

async fn adopt<O: Object, K: Object>(api: &Api<K>, obj: &K, owner: &O) -> skiff_client::Result<K> {
    let m = obj.metadata();
    let mut refs = m.owner_references.clone().unwrap_or_default();
    refs.push(controller_ref(owner));
    let body = json!({"metadata": {
        "ownerReferences": refs,
        "resourceVersion": m.resource_version,
        "uid": m.uid,
    }});
    api.patch(
        m.name.as_deref().unwrap_or_default(),
        &PatchParams::default(),
        &Patch::Merge(body),
    )
    .await
}

async fn release<K: Object>(api: &Api<K>, obj: &K, owner_uid: &str) -> skiff_client::Result<()> {
    let m = obj.metadata();
    let refs: Vec<&OwnerReference> = m
        .owner_references
        .iter()
        .flatten()
        .filter(|r| r.uid != owner_uid)
        .collect();
    let body = json!({"metadata": {
        "ownerReferences": refs,
        "resourceVersion": m.resource_version,
        "uid": m.uid,
    }});
    match api
        .patch(
            m.name.as_deref().unwrap_or_default(),
            &PatchParams::default(),
            &Patch::Merge(body),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if e.is_conflict() || e.is_not_found() || e.is_invalid() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Feeds `queue` with the keys of `O`s that changes of owned `K`s concern: the controller
/// (when it is an `O`, in `owners`), or, for an orphan, every `O` in its namespace whose
/// selector (`sel`) matches it, so it can be adopted. Runs until `shutdown`.
pub fn feed_owners<O, K, S>(
    owned: Informer<K>,
    owners: Store<O>,
    sel: S,
    queue: Arc<WorkQueue<ObjectKey>>,
    shutdown: CancellationToken,
) where
    O: Object,
    K: Object,
    S: Fn(&O) -> Option<Cow<'_, LabelSelector>> + Send + Sync + 'static,
{
    crate::spawn_each(owned.subscribe(), shutdown, move |c| {
        let obj = match c {
            Change::Applied(o) | Change::Deleted(o) => o,
            Change::Resynced => {
                for k in owners.keys() {
                    queue.add(k);
                }
                return;
            }
        };
        let m = obj.metadata();
        let ns = m.namespace.clone().unwrap_or_default();
        match controller_of(m) {
            Some(r) if r.kind == O::KIND => queue.add(ObjectKey::new(&ns, &r.name)),
            Some(_) => {}
            None => {
                for o in owners.in_namespace(&ns) {
                    if selector::matches(sel(&o).as_deref(), m.labels.as_ref()) {
                        queue.add(ObjectKey::of(o.as_ref()));
                    }
                }
            }
        }
    });
}

/// `labels` with `extra` added.
pub fn with_label(
    labels: Option<&BTreeMap<String, String>>,
    key: &str,
    value: &str,
) -> BTreeMap<String, String> {
    let mut l = labels.cloned().unwrap_or_default();
    l.insert(key.into(), value.into());
    l
}
