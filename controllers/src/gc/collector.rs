//! What the collector does with a node taken from its queues, as Kubernetes' collector does
//! it: every decision is made on the objects as the API server has them (the item and each
//! of its owners are read afresh), the graph only saying what to look at and who depends on
//! whom.
//!
//! - *Attempt to delete* an item: gone (or another UID under its name) — a virtual delete
//!   tells the graph; deleted in the foreground — its finalizer comes off once no dependent
//!   blocks it, else its blocking dependents are looked at; otherwise its owners are
//!   classified as solid (exist, not waiting), dangling (not found, or another UID) or
//!   waiting for their dependents (foreground). With a solid owner it only lets go of the
//!   others; with none it is deleted — in the foreground if an owner waits for it and it has
//!   dependents of its own, first marking its own references non-blocking if one of those
//!   dependents is itself waiting (which is what lets a cycle of foreground deletions end).
//! - *Attempt to orphan* an owner deleted with the `orphan` finalizer: its references are
//!   removed from its dependents, then the finalizer from it.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use parking_lot::Mutex;
use serde_json::{json, Value};
use skiff_client::PropagationPolicy;

use super::graph::{AbsentKey, Effects, Graph, Identity, Item, Node};
use super::metrics::Queue;
use super::{Error, Result, FOREGROUND, ORPHAN};
use crate::kinds::{Kind, Meta};
use crate::served::Served;
use crate::Context;

/// How long the API server has to orphan an owner's dependents itself (it does so as it
/// deletes the owner) before the collector takes over.
pub const ORPHAN_GRACE: Duration = Duration::from_secs(1);

/// How a node's attempt ended.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    /// Done with it (for now).
    Done,
    /// It does not exist: the graph was told.
    Absent,
}

/// An owner reference's verdict.
#[derive(Debug, Default)]
struct Classified {
    solid: Vec<OwnerReference>,
    dangling: Vec<OwnerReference>,
    waiting: Vec<OwnerReference>,
}

/// The collector's workers' shared state.
pub struct Collector {
    pub(super) ctx: Arc<Context>,
    pub(super) served: Arc<Served>,
    pub(super) graph: Arc<Mutex<Graph>>,
    pub(super) attempt_to_delete: Queue<Item>,
    pub(super) attempt_to_orphan: Queue<String>,
}

fn has(m: &Meta, finalizer: &str) -> bool {
    m.finalizers.iter().any(|f| f == finalizer)
}

impl Collector {
    /// Queues what a graph change asks for.
    pub fn dispatch(&self, fx: Effects) {
        for i in fx.attempt_to_delete {
            self.attempt_to_delete.add(i);
        }
        for i in fx.attempt_to_delete_later {
            self.attempt_to_delete.add_rate_limited(i);
        }
        for uid in fx.attempt_to_orphan {
            self.attempt_to_orphan.add_after(uid, ORPHAN_GRACE);
        }
        for (dependent, r) in fx.invalid_namespace {
            let owner = Identity::of_ref(&r, &dependent.namespace);
            self.ctx.events.warning(
                ObjectReference {
                    api_version: Some(dependent.api_version.to_string()),
                    kind: Some(dependent.kind.to_string()),
                    namespace: Some(dependent.namespace.clone()),
                    name: Some(dependent.name.clone()),
                    uid: Some(dependent.uid.clone()),
                    ..Default::default()
                },
                "OwnerRefInvalidNamespace",
                "GarbageCollect",
                format!(
                    "ownerRef {owner} does not exist in namespace {:?}",
                    dependent.namespace
                ),
            );
        }
    }

    /// Tells the graph that `id` does not exist.
    fn virtual_delete(&self, id: &Identity) -> Outcome {
        let mut fx = Effects::default();
        self.graph.lock().virtual_delete(id, &mut fx);
        self.dispatch(fx);
        Outcome::Absent
    }

    /// The served kind of `id`; `Ok(None)` when its kind's definition was deleted (so the
    /// object is gone).
    fn kind_of(&self, id: &Identity) -> Result<Option<Arc<dyn Kind>>> {
        let group_kind = id.group_kind();
        match self.served.get(&group_kind) {
            Some(k) => Ok(Some(k)),
            None if self.served.deleted(&group_kind) => Ok(None),
            None => Err(Error::UnknownKind {
                group_kind,
                name: id.name.clone(),
            }),
        }
    }

    /// The namespace `k`'s objects are addressed in from `ns`.
    fn namespace_for<'a>(k: &dyn Kind, ns: &'a str) -> &'a str {
        if k.namespaced() {
            ns
        } else {
            ""
        }
    }

    /// The object as the server has it (`None`: not found).
    async fn get_object(&self, id: &Identity) -> Result<Option<(Arc<dyn Kind>, Meta)>> {
        let Some(k) = self.kind_of(id)? else {
            return Ok(None);
        };
        let ns = Self::namespace_for(k.as_ref(), &id.namespace);
        Ok(k.get(&self.ctx, ns, &id.name).await?.map(|m| (k, m)))
    }

    /// One attempt-to-delete item.
    pub async fn attempt_to_delete_item(&self, item: &Node) -> Result<Outcome> {
        let id = &item.identity;
        tracing::debug!(item = %id, virtual_node = !item.observed, "processing item");
        // Being deleted is a one-way trip: its dependents are looked at once it is gone.
        if item.being_deleted && !item.deleting_dependents {
            return Ok(Outcome::Done);
        }
        let Some((k, latest)) = self.get_object(id).await? else {
            return Ok(self.virtual_delete(id));
        };
        if latest.uid != id.uid {
            return Ok(self.virtual_delete(id));
        }
        if item.deleting_dependents {
            self.process_deleting_dependents(item).await?;
            return Ok(Outcome::Done);
        }
        if latest.owners.is_empty() {
            return Ok(Outcome::Done);
        }
        let refs = self.classify(id, &latest.owners).await?;
        tracing::debug!(
            item = %id,
            solid = refs.solid.len(),
            dangling = refs.dangling.len(),
            waiting = refs.waiting.len(),
            "classified its owner references"
        );
        if !refs.solid.is_empty() {
            if refs.dangling.is_empty() && refs.waiting.is_empty() {
                return Ok(Outcome::Done);
            }
            // The waiting ones go too, or they would wait for it for ever.
            let gone: Vec<&str> = refs
                .dangling
                .iter()
                .chain(&refs.waiting)
                .map(|r| r.uid.as_str())
                .collect();
            tracing::info!(
                item = %id,
                owners = ?gone,
                "removing references to owners that are gone or waiting"
            );
            self.remove_references(k.as_ref(), &latest, &gone).await?;
            return Ok(Outcome::Done);
        }
        let has_dependents = self
            .graph
            .lock()
            .node(&id.uid)
            .is_some_and(|n| !n.dependents.is_empty());
        if !refs.waiting.is_empty() && has_dependents {
            let mut target = latest;
            let cycle = self
                .graph
                .lock()
                .dependents(&id.uid)
                .into_iter()
                .find(|d| d.deleting_dependents);
            if let Some(dep) = cycle {
                tracing::info!(
                    item = %id,
                    dependent = %dep.identity,
                    "an owner and a dependent of the item are both deleted in the foreground: \
                     its references are made non-blocking to break a possible cycle"
                );
                if let Some(patched) = self.unblock_references(k.as_ref(), &target).await? {
                    target = patched;
                }
            }
            tracing::info!(
                item = %id,
                "deleting in the foreground: an owner waits for it, and it has dependents"
            );
            return self
                .delete_object(k.as_ref(), id, &target, PropagationPolicy::Foreground)
                .await;
        }
        // No solid owner, and none waiting for it with dependents to wait for: the policy is
        // the one its finalizers ask for.
        let policy = if has(&latest, ORPHAN) {
            PropagationPolicy::Orphan
        } else if has(&latest, FOREGROUND) {
            PropagationPolicy::Foreground
        } else {
            PropagationPolicy::Background
        };
        tracing::info!(item = %id, ?policy, "deleting: no owner of it is left");
        self.delete_object(k.as_ref(), id, &latest, policy).await
    }

    /// An owner deleted in the foreground: done once no dependent blocks it.
    async fn process_deleting_dependents(&self, item: &Node) -> Result<()> {
        let blocking = self.graph.lock().blocking_dependents(&item.identity.uid);
        if blocking.is_empty() {
            tracing::info!(item = %item.identity, "removing the foregroundDeletion finalizer");
            return self.remove_finalizer(&item.identity, FOREGROUND).await;
        }
        for dep in blocking.iter().filter(|d| !d.deleting_dependents) {
            tracing::debug!(
                item = %item.identity,
                dependent = %dep.identity,
                "looking at a blocking dependent"
            );
            self.attempt_to_delete.add(Item {
                uid: dep.identity.uid.clone(),
                virtual_node: !dep.observed,
            });
        }
        Ok(())
    }

    /// Sorts `refs` by what their owners are now.
    async fn classify(&self, item: &Identity, refs: &[OwnerReference]) -> Result<Classified> {
        let mut out = Classified::default();
        for r in refs {
            match self.owner_of(item, r).await? {
                None => out.dangling.push(r.clone()),
                Some(o) if o.deleting && has(&o, FOREGROUND) => out.waiting.push(r.clone()),
                Some(_) => out.solid.push(r.clone()),
            }
        }
        Ok(out)
    }

    /// The owner `r` names, as the server has it; `None` if it is dangling: not found, or
    /// another UID under its name.
    async fn owner_of(&self, item: &Identity, r: &OwnerReference) -> Result<Option<Meta>> {
        let mut key = AbsentKey::of_ref(r, "");
        let in_namespace = AbsentKey::of_ref(r, &item.namespace);
        {
            let mut g = self.graph.lock();
            if g.absent.has(&key) || g.absent.has(&in_namespace) {
                tracing::debug!(item = %item, owner = r.name, "owner known absent");
                return Ok(None);
            }
        }
        let owner = Identity::of_ref(r, &item.namespace);
        let Some(k) = self.kind_of(&owner)? else {
            return Ok(None);
        };
        if k.namespaced() {
            if item.namespace.is_empty() {
                return Err(Error::NamespacedOwner {
                    group_kind: owner.group_kind(),
                    name: r.name.clone(),
                });
            }
            key = in_namespace;
        }
        let ns = Self::namespace_for(k.as_ref(), &item.namespace);
        match k.get(&self.ctx, ns, &r.name).await? {
            Some(o) if o.uid == r.uid => Ok(Some(o)),
            _ => {
                tracing::debug!(item = %item, owner = r.name, "owner not found");
                self.graph.lock().absent.add(key);
                Ok(None)
            }
        }
    }

    /// Deletes `latest` if it has not changed since — or if only other things than its
    /// owner references did.
    async fn delete_object(
        &self,
        k: &dyn Kind,
        id: &Identity,
        latest: &Meta,
        policy: PropagationPolicy,
    ) -> Result<Outcome> {
        let ns = Self::namespace_for(k, &id.namespace);
        let rv = Some(latest.resource_version.as_str()).filter(|rv| !rv.is_empty());
        let err = match k
            .delete_exact(&self.ctx, ns, &id.name, &id.uid, rv, policy)
            .await
        {
            Ok(()) => return Ok(Outcome::Done),
            Err(e) if e.is_not_found() => return Ok(self.virtual_delete(id)),
            Err(e) => e,
        };
        if !err.is_conflict() || rv.is_none() {
            return Err(err.into());
        }
        // Changed meanwhile: what matters is whether its owners did.
        match k.get(&self.ctx, ns, &id.name).await? {
            None => Ok(self.virtual_delete(id)),
            Some(live)
                if live.uid == id.uid
                    && live.resource_version != latest.resource_version
                    && live.owners == latest.owners =>
            {
                match k
                    .delete_exact(&self.ctx, ns, &id.name, &id.uid, None, policy)
                    .await
                {
                    Ok(()) => Ok(Outcome::Done),
                    Err(e) if e.is_not_found() => Ok(self.virtual_delete(id)),
                    Err(e) => Err(e.into()),
                }
            }
            Some(_) => Err(err.into()),
        }
    }

    /// Removes the references to `owners` from `latest`, if it is still at its version.
    async fn remove_references(&self, k: &dyn Kind, latest: &Meta, owners: &[&str]) -> Result<()> {
        let keep: Vec<&OwnerReference> = latest
            .owners
            .iter()
            .filter(|r| !owners.contains(&r.uid.as_str()))
            .collect();
        self.patch_references(k, latest, keep_or_null(&keep))
            .await?;
        Ok(())
    }

    /// Makes every reference of `latest` non-blocking; the object as patched.
    async fn unblock_references(&self, k: &dyn Kind, latest: &Meta) -> Result<Option<Meta>> {
        if !latest
            .owners
            .iter()
            .any(|r| r.block_owner_deletion == Some(true))
        {
            return Ok(Some(latest.clone()));
        }
        let owners: Vec<OwnerReference> = latest
            .owners
            .iter()
            .map(|r| OwnerReference {
                block_owner_deletion: r.block_owner_deletion.map(|_| false),
                ..r.clone()
            })
            .collect();
        self.patch_references(k, latest, json!(owners)).await
    }

    async fn patch_references(
        &self,
        k: &dyn Kind,
        latest: &Meta,
        owners: Value,
    ) -> Result<Option<Meta>> {
        let ns = Self::namespace_for(k, &latest.namespace);
        Ok(k.patch_meta(
            &self.ctx,
            ns,
            &latest.name,
            json!({"metadata": {
                "ownerReferences": owners,
                "resourceVersion": latest.resource_version,
            }}),
        )
        .await?)
    }

    /// Removes `finalizer` from the object, retrying on conflicts a few times.
    async fn remove_finalizer(&self, id: &Identity, finalizer: &str) -> Result<()> {
        let mut delay = Duration::from_millis(10);
        let mut conflicts = 0;
        loop {
            let Some((k, live)) = self.get_object(id).await? else {
                return Ok(());
            };
            if live.uid != id.uid || !has(&live, finalizer) {
                return Ok(());
            }
            let rest: Vec<&String> = live.finalizers.iter().filter(|f| *f != finalizer).collect();
            let ns = Self::namespace_for(k.as_ref(), &id.namespace);
            let body = json!({"metadata": {
                "finalizers": rest,
                "resourceVersion": live.resource_version,
            }});
            match k.patch_meta(&self.ctx, ns, &id.name, body).await {
                Ok(_) => return Ok(()),
                Err(e) if e.is_conflict() && conflicts < 3 => {
                    conflicts += 1;
                    tokio::time::sleep(delay).await;
                    delay *= 5;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// One attempt-to-orphan item: the owner's references are removed from its
    /// dependents, then its `orphan` finalizer.
    pub async fn attempt_to_orphan_item(&self, owner: &Node) -> Result<()> {
        let dependents = self.graph.lock().dependents(&owner.identity.uid);
        let uid = owner.identity.uid.as_str();
        let results = futures::future::join_all(dependents.iter().map(|d| async move {
            let Some((k, live)) = self.get_object(&d.identity).await? else {
                return Ok(());
            };
            if live.uid != d.identity.uid || !live.owners.iter().any(|r| r.uid == uid) {
                return Ok(());
            }
            self.remove_references(k.as_ref(), &live, &[uid]).await
        }))
        .await;
        for r in results {
            r?;
        }
        tracing::info!(
            owner = %owner.identity,
            dependents = dependents.len(),
            "orphaned the dependents"
        );
        self.remove_finalizer(&owner.identity, ORPHAN).await
    }
}

/// The references kept, or `null` (removing the field) when none is.
fn keep_or_null(keep: &[&OwnerReference]) -> Value {
    if keep.is_empty() {
        Value::Null
    } else {
        json!(keep)
    }
}
