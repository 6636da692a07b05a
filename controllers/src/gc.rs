//! The garbage collector: a graph of owner references over every served kind — the built-in
//! kinds and one per CustomResourceDefinition ([`crate::served`]), whose informers join and
//! leave the graph as definitions come and go.
//!
//! - An object whose owners are all gone is deleted (background propagation: `kubectl delete
//!   deployment` removes the Deployment at once, then its ReplicaSets, then their pods).
//! - An owner deleted in the foreground (`foregroundDeletion` finalizer) has its dependents
//!   deleted first; the finalizer comes off when none is left whose reference to it has
//!   `blockOwnerDeletion`.
//! - References to owners that are gone (or waiting for their dependents) while other owners
//!   remain are removed.
//!
//! Owner references are matched by UID; an owner the graph has not seen is looked up on the
//! server by the group and kind its reference names (whatever version it names), so an
//! object created just after its owner is never taken for an orphan. A reference to a kind
//! that is not served is looked at again later, as Kubernetes does: a definition may be
//! about to serve it; but one to a kind whose definition was deleted names an owner that is
//! gone. Orphaning (`propagationPolicy: Orphan`) is done by the API server as it
//! deletes the owner.
//!
//! Collecting starts once every built-in kind is listed; a custom resource's kind joins the
//! graph when its first list is in.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use parking_lot::Mutex;
use serde_json::json;
use skiff_client::backoff::Backoff;
use skiff_client::controller::WorkQueue;
use skiff_client::PropagationPolicy;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::kinds::{group_of, GroupKind, Kind, Meta, MetaChange};
use crate::served::Served;
use crate::Context;

/// The finalizer that holds an owner until its dependents are gone.
pub const FOREGROUND: &str = "foregroundDeletion";

/// The finalizer that holds an owner until its dependents are orphaned.
pub const ORPHAN: &str = "orphan";

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

#[derive(Default)]
struct Graph {
    nodes: HashMap<String, Meta>,
    /// owner UID → dependent UIDs.
    dependents: HashMap<String, HashSet<String>>,
}

impl Graph {
    /// Adds or updates `m`; returns the UIDs to look at: the object (when it has owners or
    /// waits for its dependents) and the owners it no longer names (one may be waiting for
    /// it).
    fn upsert(&mut self, m: Meta) -> Vec<String> {
        let uid = m.uid.clone();
        let mut look = Vec::new();
        if let Some(old) = self.nodes.get(&uid) {
            for o in &old.owners {
                if let Some(d) = self.dependents.get_mut(&o.uid) {
                    d.remove(&uid);
                }
                if !m.owners.iter().any(|n| n.uid == o.uid) {
                    look.push(o.uid.clone());
                }
            }
        }
        for o in &m.owners {
            self.dependents
                .entry(o.uid.clone())
                .or_default()
                .insert(uid.clone());
        }
        if !m.owners.is_empty() || waits_for_dependents(&m) {
            look.push(uid.clone());
        }
        self.nodes.insert(uid, m);
        look
    }

    /// Removes `uid`; returns its dependents (maybe orphaned now) and owners (maybe waiting
    /// for it).
    fn remove(&mut self, uid: &str) -> Vec<String> {
        let mut look: Vec<String> = self
            .dependents
            .get(uid)
            .map(|d| d.iter().cloned().collect())
            .unwrap_or_default();
        if let Some(old) = self.nodes.remove(uid) {
            for o in &old.owners {
                if let Some(d) = self.dependents.get_mut(&o.uid) {
                    d.remove(uid);
                    if d.is_empty() && !self.nodes.contains_key(&o.uid) {
                        self.dependents.remove(&o.uid);
                    }
                }
                look.push(o.uid.clone());
            }
        }
        if self.dependents.get(uid).is_none_or(|d| d.is_empty()) {
            self.dependents.remove(uid);
        }
        look
    }

    /// Applies one change to the objects of `gk`; returns the UIDs to look at.
    fn apply(&mut self, gk: &GroupKind, change: MetaChange) -> Vec<String> {
        match change {
            MetaChange::Applied(m) => self.upsert(m),
            MetaChange::Deleted(m) => self.remove(&m.uid),
            MetaChange::Resynced(all) => {
                let now: HashSet<&str> = all.iter().map(|m| m.uid.as_str()).collect();
                let gone: Vec<String> = self
                    .nodes
                    .values()
                    .filter(|m| m.is_of(gk) && !now.contains(m.uid.as_str()))
                    .map(|m| m.uid.clone())
                    .collect();
                let mut look = Vec::new();
                for u in gone {
                    look.extend(self.remove(&u));
                }
                for m in all {
                    look.extend(self.upsert(m));
                }
                look
            }
        }
    }

    /// Drops every object of `gk` (its kind is no longer served); returns the UIDs to look
    /// at.
    fn drop_kind(&mut self, gk: &GroupKind) -> Vec<String> {
        self.apply(gk, MetaChange::Resynced(Vec::new()))
    }

    fn dependents_of(&self, uid: &str) -> Vec<Meta> {
        self.dependents
            .get(uid)
            .map(|d| {
                d.iter()
                    .filter_map(|u| self.nodes.get(u).cloned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The dependents of `uid` whose reference to it has `blockOwnerDeletion`: those a
    /// foreground deletion waits for.
    fn blocking_dependents(&self, uid: &str) -> Vec<Meta> {
        let mut deps = self.dependents_of(uid);
        deps.retain(|d| {
            d.owners
                .iter()
                .any(|r| r.uid == uid && r.block_owner_deletion == Some(true))
        });
        deps
    }

    /// The objects with an owner reference to a `gk`.
    fn referencing(&self, gk: &GroupKind) -> Vec<String> {
        self.nodes
            .values()
            .filter(|m| {
                m.owners
                    .iter()
                    .any(|r| r.kind == gk.kind && group_of(&r.api_version) == gk.group)
            })
            .map(|m| m.uid.clone())
            .collect()
    }
}

fn waits_for_dependents(m: &Meta) -> bool {
    m.deleting && m.finalizers.iter().any(|f| f == FOREGROUND)
}

type Queue = Arc<WorkQueue<String>>;

/// Runs the collector until `shutdown`.
pub async fn run(ctx: Arc<Context>, shutdown: CancellationToken) {
    let served = ctx.served();
    let graph = Arc::new(Mutex::new(Graph::default()));
    let queue: Queue = WorkQueue::new(Backoff::new(
        Duration::from_millis(5),
        Duration::from_secs(60),
    ));
    let listed: Vec<_> = served
        .builtin()
        .values()
        .map(|k| follow(&ctx, k.clone(), &graph, &queue, shutdown.child_token()))
        .collect();
    tokio::spawn(follow_custom(
        ctx.clone(),
        served.clone(),
        graph.clone(),
        queue.clone(),
        shutdown.clone(),
    ));
    // Start collecting once every built-in kind is listed: the graph is complete then.
    tokio::select! {
        _ = shutdown.cancelled() => return,
        _ = futures::future::join_all(listed) => {}
    }
    tracing::info!(
        objects = graph.lock().nodes.len(),
        "garbage collector synced"
    );
    let mut workers = Vec::new();
    for _ in 0..ctx.config.concurrent_gc_syncs.max(1) {
        let (ctx, served, graph, queue) =
            (ctx.clone(), served.clone(), graph.clone(), queue.clone());
        workers.push(tokio::spawn(async move {
            while let Some(uid) = queue.get().await {
                match collect(&ctx, &served, &graph, &queue, &uid).await {
                    Ok(()) => queue.forget(&uid),
                    Err(e @ Error::NamespacedOwner { .. }) => {
                        tracing::info!(uid, error = %e, "left alone");
                        queue.forget(&uid);
                    }
                    Err(e @ Error::UnknownKind { .. }) => {
                        tracing::debug!(uid, error = %e, "looked at again later");
                        queue.add_rate_limited(uid.clone());
                    }
                    Err(e) => {
                        tracing::warn!(uid, error = %e, "garbage collection failed; retrying");
                        queue.add_rate_limited(uid.clone());
                    }
                }
                queue.done(&uid);
            }
        }));
    }
    shutdown.cancelled().await;
    queue.shut_down();
    for w in workers {
        let _ = w.await;
    }
}

/// Feeds `kind`'s changes into the graph until `stop`; the receiver resolves once its first
/// list is in the graph.
fn follow(
    ctx: &Context,
    kind: Arc<dyn Kind>,
    graph: &Arc<Mutex<Graph>>,
    queue: &Queue,
    stop: CancellationToken,
) -> oneshot::Receiver<()> {
    let (tx, rx) = oneshot::channel();
    let mut changes = kind.watch(ctx);
    let gk = kind.group_kind();
    let (graph, queue) = (graph.clone(), queue.clone());
    tokio::spawn(async move {
        let mut tx = Some(tx);
        loop {
            let change = tokio::select! {
                _ = stop.cancelled() => return,
                c = changes.next() => c,
            };
            let Some(change) = change else { return };
            let listed = matches!(change, MetaChange::Resynced(_));
            let look = {
                let mut g = graph.lock();
                // Checked under the lock the kind is dropped under: nothing of a kind that
                // is gone comes back.
                if stop.is_cancelled() {
                    return;
                }
                g.apply(&gk, change)
            };
            for u in look {
                queue.add(u);
            }
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
async fn follow_custom(
    ctx: Arc<Context>,
    served: Arc<Served>,
    graph: Arc<Mutex<Graph>>,
    queue: Queue,
    shutdown: CancellationToken,
) {
    let mut kinds = served.subscribe();
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
                let look = {
                    let mut g = graph.lock();
                    stop.cancel();
                    g.drop_kind(&gk)
                };
                tracing::info!(kind = %gk, "garbage collector no longer follows a kind");
                for u in look {
                    queue.add(u);
                }
            }
        }
        for (gk, k) in now.iter() {
            if following.contains_key(gk) {
                continue;
            }
            let stop = shutdown.child_token();
            let listed = follow(&ctx, k.clone(), &graph, &queue, stop.clone());
            let (gk2, graph, queue, stop2) =
                (gk.clone(), graph.clone(), queue.clone(), stop.clone());
            tokio::spawn(async move {
                if listed.await.is_err() || stop2.is_cancelled() {
                    return;
                }
                // What was looked at before the kind was known gets looked at again now,
                // rather than after its back-off.
                let look = graph.lock().referencing(&gk2);
                tracing::info!(kind = %gk2, "garbage collector follows a kind");
                for u in look {
                    queue.add(u);
                }
            });
            following.insert(gk.clone(), (k.clone(), stop));
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = kinds.changed() => if changed.is_err() { return },
        }
    }
}

enum OwnerState {
    /// Exists and is not waiting for its dependents: a solid owner.
    Alive,
    /// Being deleted with its dependents first.
    Waiting,
    Gone,
}

async fn owner_state(
    ctx: &Context,
    served: &Served,
    graph: &Mutex<Graph>,
    dependent: &Meta,
    r: &OwnerReference,
) -> Result<OwnerState> {
    if let Some(o) = graph.lock().nodes.get(&r.uid) {
        return Ok(if waits_for_dependents(o) {
            OwnerState::Waiting
        } else {
            OwnerState::Alive
        });
    }
    // Not seen (yet): ask the server, at the version the collector follows.
    let group_kind = GroupKind::of(&r.api_version, &r.kind);
    let Some(k) = served.get(&group_kind) else {
        if served.deleted(&group_kind) {
            return Ok(OwnerState::Gone);
        }
        return Err(Error::UnknownKind {
            group_kind,
            name: r.name.clone(),
        });
    };
    let ns = if k.namespaced() {
        if dependent.namespace.is_empty() {
            return Err(Error::NamespacedOwner {
                group_kind,
                name: r.name.clone(),
            });
        }
        dependent.namespace.as_str()
    } else {
        ""
    };
    Ok(match k.get(ctx, ns, &r.name).await? {
        Some(m) if m.uid == r.uid && waits_for_dependents(&m) => OwnerState::Waiting,
        Some(m) if m.uid == r.uid => OwnerState::Alive,
        _ => OwnerState::Gone,
    })
}

async fn collect(
    ctx: &Context,
    served: &Served,
    graph: &Mutex<Graph>,
    queue: &Queue,
    uid: &str,
) -> Result<()> {
    let Some(node) = graph.lock().nodes.get(uid).cloned() else {
        return Ok(());
    };
    let Some(k) = served.get(&node.group_kind()) else {
        return Ok(());
    };
    if waits_for_dependents(&node) {
        let blocking = graph.lock().blocking_dependents(uid);
        if blocking.is_empty() {
            let rest: Vec<&String> = node
                .finalizers
                .iter()
                .filter(|f| *f != FOREGROUND)
                .collect();
            return k
                .patch_meta(
                    ctx,
                    &node.namespace,
                    &node.name,
                    json!({"metadata": {"finalizers": rest, "resourceVersion": node.resource_version}}),
                )
                .await
                .or_else(|e| if e.is_conflict() { Ok(()) } else { Err(e) })
                .map_err(Error::from);
        }
        // Each dependent is judged on its own: deleted unless another owner keeps it (then
        // it only lets go of this one). The owner waits for the blocking ones.
        for d in graph.lock().dependents_of(uid) {
            if !d.deleting {
                queue.add(d.uid);
            }
        }
        return Ok(());
    }
    if node.owners.is_empty() || node.deleting {
        return Ok(());
    }
    // Judged on the cache first; any action is judged again on the object as the server has
    // it, since the cache may not show an owner reference removed just now (orphaning).
    if verdict(ctx, served, graph, &node).await? == Verdict::Keep {
        return Ok(());
    }
    let Some(live) = k.get(ctx, &node.namespace, &node.name).await? else {
        return Ok(());
    };
    if live.uid != node.uid || live.deleting {
        return Ok(());
    }
    match verdict(ctx, served, graph, &live).await? {
        Verdict::Keep => Ok(()),
        Verdict::Delete { waiting } => {
            let has = |f: &str| live.finalizers.iter().any(|x| x == f);
            let policy = if waiting && !graph.lock().dependents_of(&live.uid).is_empty() {
                // An owner waits for this one, which has dependents of its own: they go
                // first, so that the owner waits for them too.
                PropagationPolicy::Foreground
            } else if has(ORPHAN) {
                PropagationPolicy::Orphan
            } else if has(FOREGROUND) {
                PropagationPolicy::Foreground
            } else {
                PropagationPolicy::Background
            };
            tracing::debug!(
                kind = &*live.kind,
                ns = live.namespace,
                name = live.name,
                ?policy,
                "deleting: its owners are gone"
            );
            k.delete(
                ctx,
                &live.namespace,
                &live.name,
                &live.uid,
                Some(&live.resource_version),
                policy,
            )
            .await
            .map_err(Error::from)
        }
        Verdict::Drop(uids) => {
            let keep: Vec<_> = live
                .owners
                .iter()
                .filter(|r| !uids.contains(&r.uid))
                .collect();
            k.patch_meta(
                ctx,
                &live.namespace,
                &live.name,
                json!({"metadata": {"ownerReferences": keep, "resourceVersion": live.resource_version}}),
            )
            .await
            .or_else(|e| if e.is_conflict() { Ok(()) } else { Err(e) })
            .map_err(Error::from)
        }
    }
}

#[derive(Debug, PartialEq)]
enum Verdict {
    Keep,
    /// No owner is left but ones waiting for their dependents (`waiting`: some are).
    Delete {
        waiting: bool,
    },
    /// These owners are gone or waiting for their dependents; others remain.
    Drop(Vec<String>),
}

async fn verdict(
    ctx: &Context,
    served: &Served,
    graph: &Mutex<Graph>,
    node: &Meta,
) -> Result<Verdict> {
    if node.owners.is_empty() {
        return Ok(Verdict::Keep);
    }
    let mut states = Vec::new();
    for r in &node.owners {
        states.push((
            r.uid.clone(),
            owner_state(ctx, served, graph, node, r).await?,
        ));
    }
    Ok(judge(states))
}

fn judge(states: Vec<(String, OwnerState)>) -> Verdict {
    let solid = states.iter().any(|(_, s)| matches!(s, OwnerState::Alive));
    let waiting = states.iter().any(|(_, s)| matches!(s, OwnerState::Waiting));
    if !solid {
        return Verdict::Delete { waiting };
    }
    let drop: Vec<String> = states
        .into_iter()
        .filter(|(_, s)| !matches!(s, OwnerState::Alive))
        .map(|(u, _)| u)
        .collect();
    if drop.is_empty() {
        Verdict::Keep
    } else {
        Verdict::Drop(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WIDGETS: &str = "example.skiff.dev/v1";

    fn meta(kind: (&str, &str), uid: &str, owners: &[&str]) -> Meta {
        Meta {
            api_version: kind.0.into(),
            kind: kind.1.into(),
            namespace: "default".into(),
            name: uid.into(),
            uid: uid.into(),
            owners: owners
                .iter()
                .map(|o| OwnerReference {
                    uid: o.to_string(),
                    ..Default::default()
                })
                .collect(),
            finalizers: Vec::new(),
            deleting: false,
            resource_version: "1".into(),
        }
    }

    fn pod(uid: &str, owners: &[&str]) -> Meta {
        meta(("v1", "Pod"), uid, owners)
    }

    fn sorted(mut v: Vec<String>) -> Vec<String> {
        v.sort();
        v
    }

    #[test]
    fn removing_an_owner_points_at_its_dependents_and_back() {
        let mut g = Graph::default();
        assert!(g.upsert(pod("rs", &[])).is_empty());
        assert_eq!(g.upsert(pod("p1", &["rs"])), vec!["p1".to_string()]);
        g.upsert(pod("p2", &["rs"]));
        let look = sorted(g.remove("rs"));
        assert_eq!(look, vec!["p1".to_string(), "p2".into()]);
        // A dependent that goes wakes its (foreground-waiting) owner.
        g.upsert(pod("d", &[]));
        g.upsert(pod("r", &["d"]));
        assert_eq!(g.remove("r"), vec!["d".to_string()]);
        assert!(g.dependents_of("d").is_empty());
        // Changed owners move the edges, and wake the owner let go of.
        g.upsert(pod("x", &["a"]));
        assert_eq!(
            sorted(g.upsert(pod("x", &["b"]))),
            vec!["a".to_string(), "x".into()]
        );
        assert!(g.dependents_of("a").is_empty());
    }

    #[test]
    fn custom_kinds_are_nodes_like_any_other() {
        let widget = |uid: &str, owners: &[&str]| meta((WIDGETS, "Widget"), uid, owners);
        let gadget = |uid: &str| meta(("example.skiff.dev/v2", "Gadget"), uid, &[]);
        let widgets = GroupKind::of(WIDGETS, "Widget");
        let mut g = Graph::default();
        g.upsert(widget("w1", &[]));
        g.upsert(widget("w2", &["cm"]));
        g.upsert(gadget("g1"));
        g.upsert(pod("cm", &[]));
        g.upsert(pod("owned", &["w1"]));
        assert_eq!(g.dependents_of("w1")[0].uid, "owned");
        assert_eq!(&*g.dependents_of("cm")[0].kind, "Widget");
        // A re-list of Widgets (at another version, same group) forgets w1 only: its
        // dependent is to be looked at, and nodes of other kinds stay.
        let relisted = vec![meta(("example.skiff.dev/v1beta1", "Widget"), "w2", &["cm"])];
        let look = g.apply(&widgets, MetaChange::Resynced(relisted));
        assert!(look.contains(&"owned".to_string()), "{look:?}");
        assert!(!g.nodes.contains_key("w1"));
        assert!(g.nodes.contains_key("g1") && g.nodes.contains_key("cm"));
        // The kind no longer served: its nodes go, and what they own or are owned by is
        // looked at.
        let look = sorted(g.drop_kind(&widgets));
        assert_eq!(look, vec!["cm".to_string()]);
        assert!(!g.nodes.values().any(|m| m.is_of(&widgets)));
        assert!(g.dependents_of("cm").is_empty());
        assert!(g.nodes.contains_key("g1"));
    }

    #[test]
    fn references_to_a_kind_are_found_by_group_and_kind() {
        let mut g = Graph::default();
        let mut o = pod("cm", &[]);
        o.owners = vec![OwnerReference {
            api_version: "example.skiff.dev/v1beta1".into(),
            kind: "Widget".into(),
            name: "w".into(),
            uid: "w".into(),
            ..Default::default()
        }];
        g.upsert(o);
        g.upsert(pod("p", &["rs"]));
        let found = g.referencing(&GroupKind::of("example.skiff.dev/v1", "Widget"));
        assert_eq!(found, vec!["cm".to_string()]);
        assert!(g
            .referencing(&GroupKind::of("other.skiff.dev/v1", "Widget"))
            .is_empty());
    }

    #[test]
    fn a_foreground_deletion_waits_for_blocking_dependents_only() {
        let mut g = Graph::default();
        let mut owner = meta((WIDGETS, "Widget"), "w", &[]);
        owner.deleting = true;
        owner.finalizers = vec![FOREGROUND.into()];
        assert_eq!(
            g.upsert(owner),
            vec!["w".to_string()],
            "it waits: look at it"
        );
        let mut blocking = pod("b", &["w"]);
        blocking.owners[0].block_owner_deletion = Some(true);
        g.upsert(blocking);
        g.upsert(pod("n", &["w"]));
        let b: Vec<_> = g
            .blocking_dependents("w")
            .into_iter()
            .map(|m| m.uid)
            .collect();
        assert_eq!(b, vec!["b".to_string()]);
        assert_eq!(g.dependents_of("w").len(), 2);
        g.remove("b");
        assert!(g.blocking_dependents("w").is_empty());
    }

    #[test]
    fn owners_judged_as_kubernetes_does() {
        use OwnerState::*;
        let j = |s: Vec<(&str, OwnerState)>| {
            judge(s.into_iter().map(|(u, s)| (u.to_string(), s)).collect())
        };
        assert_eq!(j(vec![("a", Alive)]), Verdict::Keep);
        assert_eq!(j(vec![("a", Gone)]), Verdict::Delete { waiting: false });
        assert_eq!(
            j(vec![("a", Gone), ("b", Waiting)]),
            Verdict::Delete { waiting: true }
        );
        // A live owner keeps the object, which lets go of the others — those waiting for
        // their dependents too, or they would wait for ever.
        assert_eq!(
            j(vec![("a", Alive), ("b", Gone), ("c", Waiting)]),
            Verdict::Drop(vec!["b".into(), "c".into()])
        );
    }
}
