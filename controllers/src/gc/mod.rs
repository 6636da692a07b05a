//! The garbage collector, built as Kubernetes' is: a dependency graph ([`graph`]) over every
//! served kind — the built-in kinds and one per CustomResourceDefinition ([`crate::served`]),
//! whose informers join and leave the graph as definitions come and go — and two queues of
//! nodes to act on ([`collector`]):
//!
//! - *attempt to delete*: objects whose owners may be gone (a dependent of a deleted owner,
//!   an owner named but not seen — a *virtual* node, verified against the API server —, a
//!   reference that may name its owner wrongly) and owners deleted in the foreground with
//!   their dependents. An object whose owners are all gone (not found, or another UID under
//!   the name: a *dangling* reference) or waiting for their dependents is deleted; one with
//!   a live owner only lets go of the others. An owner deleted in the foreground keeps its
//!   `foregroundDeletion` finalizer until no dependent whose reference has
//!   `blockOwnerDeletion` is left; a dependent deleted because of it that has dependents of
//!   its own is deleted in the foreground too, and if one of those is itself waiting (a
//!   cycle of owners) its references are first made non-blocking, so that the cycle ends.
//! - *attempt to orphan*: owners deleted with the `orphan` finalizer. The API server removes
//!   their references from the dependents itself as it deletes them; an owner still waiting
//!   a moment later has it done here, then its finalizer removed.
//!
//! Each built-in kind's first list is waited for up to [`SYNC_PERIOD`] before collecting
//! starts, and each custom kind's as it joins; a kind not listed by then counts one
//! `garbagecollector_controller_resources_sync_error_total` ([`metrics`]), and collecting
//! goes on: every decision is checked against the server, so an incomplete graph never
//! deletes what it should not. A reference to a kind that is not served is looked at again
//! later, as Kubernetes does (a definition may be about to serve it), but one to a kind
//! whose definition was deleted names an owner that is gone.

pub mod collector;
pub mod graph;
pub mod metrics;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use parking_lot::Mutex;
use skiff_client::backoff::Backoff;
use skiff_client::controller::WorkQueue;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::kinds::{GroupKind, Kind, MetaChange};
use crate::Context;
use collector::{Collector, Outcome};
use graph::{Graph, Item};

/// The finalizer that holds an owner until its dependents are gone.
pub const FOREGROUND: &str = "foregroundDeletion";

/// The finalizer that holds an owner until its dependents are orphaned.
pub const ORPHAN: &str = "orphan";

/// How long a kind's first list is waited for before it counts as a sync error (Kubernetes'
/// collector syncs its monitors every 30 s and waits that long).
pub const SYNC_PERIOD: Duration = Duration::from_secs(30);

/// Why an object could not be dealt with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused or failed a call.
    #[error(transparent)]
    Api(#[from] skiff_client::Error),
    /// An owner reference names a kind that is not served (yet).
    #[error("owner {name:?} is of a kind that is not served: {group_kind}")]
    UnknownKind {
        /// The owner's group and kind.
        group_kind: GroupKind,
        /// The owner's name.
        name: String,
    },
    /// A cluster-scoped object names a namespaced owner, which cannot be looked up.
    #[error(
        "a cluster-scoped object cannot be owned by {group_kind} {name:?}, which is namespaced"
    )]
    NamespacedOwner {
        /// The owner's group and kind.
        group_kind: GroupKind,
        /// The owner's name.
        name: String,
    },
}

/// The collector's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Registers the collector's metrics.
pub fn register_metrics(registry: &mut prometheus_client::registry::Registry) {
    metrics::register(registry);
}

fn queue<T: Clone + Eq + std::hash::Hash + Send + Sync + 'static>(name: &str) -> metrics::Queue<T> {
    metrics::Queue::new(
        name,
        WorkQueue::new(Backoff::new(
            Duration::from_millis(5),
            Duration::from_secs(60),
        )),
    )
}

/// Runs the collector until `shutdown`.
pub async fn run(ctx: Arc<Context>, shutdown: CancellationToken) {
    let served = ctx.served();
    let gc = Arc::new(Collector {
        ctx: ctx.clone(),
        served: served.clone(),
        graph: Arc::new(Mutex::new(Graph::default())),
        attempt_to_delete: queue(metrics::ATTEMPT_TO_DELETE),
        attempt_to_orphan: queue(metrics::ATTEMPT_TO_ORPHAN),
    });
    let listed: Vec<_> = served
        .builtin()
        .values()
        .map(|k| follow(&gc, k.clone(), shutdown.child_token()))
        .collect();
    tokio::spawn(follow_custom(gc.clone(), shutdown.clone()));
    // Collecting starts once every built-in kind is listed, or the sync period is over.
    tokio::select! {
        _ = shutdown.cancelled() => return,
        synced = tokio::time::timeout(SYNC_PERIOD, futures::future::join_all(listed)) => {
            let objects = gc.graph.lock().len();
            if synced.is_ok() {
                tracing::info!(objects, "garbage collector: all resource monitors have synced");
            } else {
                metrics::metrics().resources_sync_error.inc();
                tracing::warn!(
                    objects,
                    "garbage collector: not all resource monitors could be synced, proceeding anyways"
                );
            }
        }
    }
    let mut workers = Vec::new();
    for _ in 0..ctx.config.concurrent_gc_syncs.max(1) {
        let g = gc.clone();
        workers.push(tokio::spawn(async move {
            while let Some(item) = g.attempt_to_delete.get().await {
                attempt_to_delete(&g, &item).await;
                g.attempt_to_delete.done(&item);
            }
        }));
        let g = gc.clone();
        workers.push(tokio::spawn(async move {
            while let Some(uid) = g.attempt_to_orphan.get().await {
                attempt_to_orphan(&g, &uid).await;
                g.attempt_to_orphan.done(&uid);
            }
        }));
    }
    shutdown.cancelled().await;
    gc.attempt_to_delete.shut_down();
    gc.attempt_to_orphan.shut_down();
    for w in workers {
        let _ = w.await;
    }
}

/// One attempt-to-delete item, requeued with back-off when it is to be looked at again.
async fn attempt_to_delete(gc: &Collector, item: &Item) {
    let node = gc.graph.lock().node(&item.uid).cloned();
    let Some(node) = node else {
        gc.attempt_to_delete.forget(item);
        return;
    };
    if item.virtual_node && node.observed {
        // Seen since it was queued: its observation queued what it needed.
        gc.attempt_to_delete.forget(item);
        return;
    }
    match gc.attempt_to_delete_item(&node).await {
        Ok(Outcome::Absent) => gc.attempt_to_delete.forget(item),
        // Verified to exist but not seen yet: looked at again until it is, so that a node
        // added and removed while a watch was down does not stay in the graph.
        Ok(Outcome::Done) if !node.observed => gc.attempt_to_delete.add_rate_limited(item.clone()),
        Ok(Outcome::Done) => gc.attempt_to_delete.forget(item),
        Err(e @ Error::NamespacedOwner { .. }) => {
            tracing::info!(item = %node.identity, error = %e, "left alone");
            gc.attempt_to_delete.forget(item);
        }
        Err(e @ Error::UnknownKind { .. }) => {
            tracing::debug!(item = %node.identity, error = %e, "looked at again later");
            gc.attempt_to_delete.add_rate_limited(item.clone());
        }
        Err(e) => {
            tracing::warn!(
                item = %node.identity,
                error = %e,
                "garbage collection failed; retrying"
            );
            gc.attempt_to_delete.add_rate_limited(item.clone());
        }
    }
}

/// One attempt-to-orphan item, requeued with back-off on failure.
async fn attempt_to_orphan(gc: &Collector, uid: &String) {
    let node = gc.graph.lock().node(uid).cloned();
    // Gone already: the API server orphaned its dependents as it deleted it.
    let Some(node) = node.filter(|n| n.orphaning) else {
        gc.attempt_to_orphan.forget(uid);
        return;
    };
    match gc.attempt_to_orphan_item(&node).await {
        Ok(()) => gc.attempt_to_orphan.forget(uid),
        Err(e) => {
            tracing::warn!(owner = %node.identity, error = %e, "orphaning failed; retrying");
            gc.attempt_to_orphan.add_rate_limited(uid.clone());
        }
    }
}

/// Feeds `kind`'s changes into the graph until `stop`; the receiver resolves once its first
/// list is in the graph.
fn follow(
    gc: &Arc<Collector>,
    kind: Arc<dyn Kind>,
    stop: CancellationToken,
) -> oneshot::Receiver<()> {
    let (tx, rx) = oneshot::channel();
    let mut changes = kind.watch(&gc.ctx);
    let gk = kind.group_kind();
    let gc = gc.clone();
    tokio::spawn(async move {
        let mut tx = Some(tx);
        loop {
            let change = tokio::select! {
                _ = stop.cancelled() => return,
                c = changes.next() => c,
            };
            let Some(change) = change else { return };
            let listed = matches!(change, MetaChange::Resynced(_));
            let fx = {
                let mut g = gc.graph.lock();
                // Checked under the lock the kind is dropped under: nothing of a kind that
                // is gone comes back.
                if stop.is_cancelled() {
                    return;
                }
                g.apply(&gk, change)
            };
            gc.dispatch(fx);
            if listed {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(());
                }
            }
        }
    });
    rx
}

/// Follows the custom resources' kinds as they come and go, until `shutdown`.
async fn follow_custom(gc: Arc<Collector>, shutdown: CancellationToken) {
    let mut kinds = gc.served.subscribe();
    let mut following: HashMap<GroupKind, (Arc<dyn Kind>, CancellationToken)> = HashMap::new();
    loop {
        let now = kinds.borrow_and_update().clone().unwrap_or_default();
        let gone: Vec<GroupKind> = following
            .iter()
            .filter(|(gk, (k, _))| !now.get(*gk).is_some_and(|n| Arc::ptr_eq(n, k)))
            .map(|(gk, _)| gk.clone())
            .collect();
        for gk in gone {
            if let Some((_, stop)) = following.remove(&gk) {
                let fx = {
                    let mut g = gc.graph.lock();
                    stop.cancel();
                    g.drop_kind(&gk)
                };
                tracing::info!(kind = %gk, "garbage collector no longer follows a kind");
                gc.dispatch(fx);
            }
        }
        let mut joining = Vec::new();
        for (gk, k) in now.iter() {
            if following.contains_key(gk) {
                continue;
            }
            let stop = shutdown.child_token();
            let listed = follow(&gc, k.clone(), stop.clone());
            let (gk2, g, stop2) = (gk.clone(), gc.clone(), stop.clone());
            let (synced_tx, synced_rx) = oneshot::channel::<()>();
            tokio::spawn(async move {
                if listed.await.is_err() || stop2.is_cancelled() {
                    return;
                }
                let _ = synced_tx.send(());
                // Owners of the kind named before it was served are verified now, rather
                // than after their back-off.
                let virtual_owners = g.graph.lock().virtual_of(&gk2);
                tracing::info!(kind = %gk2, "garbage collector follows a kind");
                for i in virtual_owners {
                    g.attempt_to_delete.add(i);
                }
            });
            joining.push((synced_rx, stop.clone()));
            following.insert(gk.clone(), (k.clone(), stop));
        }
        if !joining.is_empty() {
            tokio::spawn(count_unsynced(joining));
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = kinds.changed() => if changed.is_err() { return },
        }
    }
}

/// Counts one sync error if some of the kinds that just joined are not listed within the
/// sync period (and still followed).
async fn count_unsynced(joining: Vec<(oneshot::Receiver<()>, CancellationToken)>) {
    let stops: Vec<CancellationToken> = joining.iter().map(|(_, s)| s.clone()).collect();
    let all = futures::future::join_all(joining.into_iter().map(|(rx, stop)| async move {
        tokio::select! {
            _ = rx => {}
            _ = stop.cancelled() => {}
        }
    }));
    if tokio::time::timeout(SYNC_PERIOD, all).await.is_err()
        && stops.iter().any(|s| !s.is_cancelled())
    {
        metrics::metrics().resources_sync_error.inc();
        tracing::warn!("timed out waiting for dependency graph builder sync during GC sync");
    }
}
