//! The garbage collector: a graph of owner references over every kind in [`crate::kinds`].
//!
//! - An object whose owners are all gone is deleted (background propagation: `kubectl delete
//!   deployment` removes the Deployment at once, then its ReplicaSets, then their pods).
//! - An owner deleted in the foreground (`foregroundDeletion` finalizer) has its dependents
//!   deleted first; the finalizer comes off when none is left.
//! - References to owners that are gone while other owners remain are removed.
//!
//! Orphaning (`propagationPolicy: Orphan`) is done by the API server as it deletes the owner.
//! An owner the graph has not seen yet is looked up on the server before anything is deleted,
//! so an object created just after its owner is never taken for an orphan.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::json;
use skiff_client::backoff::Backoff;
use skiff_client::controller::WorkQueue;
use skiff_client::PropagationPolicy;
use tokio_util::sync::CancellationToken;

use crate::kinds::{self, Kind, Meta, MetaChange};
use crate::Context;

/// The finalizer that holds an owner until its dependents are gone.
pub const FOREGROUND: &str = "foregroundDeletion";

#[derive(Default)]
struct Graph {
    nodes: HashMap<String, Meta>,
    /// owner UID → dependent UIDs.
    dependents: HashMap<String, HashSet<String>>,
}

impl Graph {
    /// Adds or updates `m`; returns the UIDs to look at.
    fn upsert(&mut self, m: Meta) -> Vec<String> {
        let uid = m.uid.clone();
        if let Some(old) = self.nodes.get(&uid) {
            for o in &old.owners {
                if let Some(d) = self.dependents.get_mut(&o.uid) {
                    d.remove(&uid);
                }
            }
        }
        for o in &m.owners {
            self.dependents
                .entry(o.uid.clone())
                .or_default()
                .insert(uid.clone());
        }
        let look =
            !m.owners.is_empty() || (m.deleting && m.finalizers.iter().any(|f| f == FOREGROUND));
        self.nodes.insert(uid.clone(), m);
        if look {
            vec![uid]
        } else {
            Vec::new()
        }
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
}

/// Runs the collector until `shutdown`.
pub async fn run(ctx: Arc<Context>, shutdown: CancellationToken) {
    let kinds = Arc::new(kinds::all());
    let graph = Arc::new(Mutex::new(Graph::default()));
    let queue: Arc<WorkQueue<String>> = WorkQueue::new(Backoff::new(
        Duration::from_millis(5),
        Duration::from_secs(60),
    ));
    let mut initial = Vec::new();
    for k in kinds.values() {
        let (changes, synced) = k.watch(&ctx);
        initial.push(synced);
        let (graph, queue, shutdown) = (graph.clone(), queue.clone(), shutdown.clone());
        let kind = k.kind();
        crate::spawn_each(changes, shutdown, move |c| {
            let look = match c {
                MetaChange::Applied(m) => graph.lock().upsert(m),
                MetaChange::Deleted(m) => graph.lock().remove(&m.uid),
                MetaChange::Resynced(_, all) => {
                    let mut g = graph.lock();
                    let now: HashSet<&str> = all.iter().map(|m| m.uid.as_str()).collect();
                    let gone: Vec<String> = g
                        .nodes
                        .values()
                        .filter(|m| m.kind == kind && !now.contains(m.uid.as_str()))
                        .map(|m| m.uid.clone())
                        .collect();
                    let mut look = Vec::new();
                    for u in gone {
                        look.extend(g.remove(&u));
                    }
                    for m in all {
                        look.extend(g.upsert(m));
                    }
                    look
                }
            };
            for u in look {
                queue.add(u);
            }
        });
    }
    // Start collecting once every kind is listed: the graph is complete then.
    let all = tokio::select! {
        _ = shutdown.cancelled() => return,
        all = futures::future::join_all(initial) => all,
    };
    {
        let mut g = graph.lock();
        for m in all.into_iter().flatten() {
            for u in g.upsert(m) {
                queue.add(u);
            }
        }
    }
    tracing::info!(
        objects = graph.lock().nodes.len(),
        "garbage collector synced"
    );
    let mut workers = Vec::new();
    for _ in 0..ctx.config.concurrent_gc_syncs.max(1) {
        let (ctx, kinds, graph, queue) = (ctx.clone(), kinds.clone(), graph.clone(), queue.clone());
        workers.push(tokio::spawn(async move {
            while let Some(uid) = queue.get().await {
                match collect(&ctx, &kinds, &graph, &uid).await {
                    Ok(()) => queue.forget(&uid),
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

type Kinds = HashMap<(&'static str, &'static str), Arc<dyn Kind>>;

fn kind_of<'a>(kinds: &'a Kinds, api_version: &str, kind: &str) -> Option<&'a Arc<dyn Kind>> {
    kinds
        .iter()
        .find(|((a, k), _)| *a == api_version && *k == kind)
        .map(|(_, v)| v)
}

enum OwnerState {
    Alive,
    /// Being deleted with its dependents first.
    Foreground,
    Gone,
}

async fn owner_state(
    ctx: &Context,
    kinds: &Kinds,
    graph: &Mutex<Graph>,
    dependent: &Meta,
    r: &k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference,
) -> skiff_client::Result<OwnerState> {
    if let Some(o) = graph.lock().nodes.get(&r.uid) {
        return Ok(
            if o.deleting && o.finalizers.iter().any(|f| f == FOREGROUND) {
                OwnerState::Foreground
            } else {
                OwnerState::Alive
            },
        );
    }
    // Not seen (yet): ask the server. A kind this collector does not know is left alone.
    let Some(k) = kind_of(kinds, &r.api_version, &r.kind) else {
        return Ok(OwnerState::Alive);
    };
    let ns = if k.namespaced() {
        dependent.namespace.as_str()
    } else {
        ""
    };
    Ok(match k.get(ctx, ns, &r.name).await? {
        Some(m) if m.uid == r.uid => OwnerState::Alive,
        _ => OwnerState::Gone,
    })
}

async fn collect(
    ctx: &Context,
    kinds: &Kinds,
    graph: &Mutex<Graph>,
    uid: &str,
) -> skiff_client::Result<()> {
    let Some(node) = graph.lock().nodes.get(uid).cloned() else {
        return Ok(());
    };
    let Some(k) = kind_of(kinds, node.api_version, node.kind).cloned() else {
        return Ok(());
    };
    if node.deleting && node.finalizers.iter().any(|f| f == FOREGROUND) {
        let deps = graph.lock().dependents_of(uid);
        if deps.is_empty() {
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
                .or_else(|e| if e.is_conflict() { Ok(()) } else { Err(e) });
        }
        for d in deps.iter().filter(|d| !d.deleting) {
            let Some(dk) = kind_of(kinds, d.api_version, d.kind) else {
                continue;
            };
            let has_own = !graph.lock().dependents_of(&d.uid).is_empty();
            let policy = if has_own {
                PropagationPolicy::Foreground
            } else {
                PropagationPolicy::Background
            };
            dk.delete(ctx, &d.namespace, &d.name, &d.uid, None, policy)
                .await?;
        }
        return Ok(());
    }
    if node.owners.is_empty() || node.deleting {
        return Ok(());
    }
    // Judged on the cache first; any action is judged again on the object as the server has
    // it, since the cache may not show an owner reference removed just now (orphaning).
    if verdict(ctx, kinds, graph, &node).await? == Verdict::Keep {
        return Ok(());
    }
    let Some(live) = k.get(ctx, &node.namespace, &node.name).await? else {
        return Ok(());
    };
    if live.uid != node.uid || live.deleting {
        return Ok(());
    }
    match verdict(ctx, kinds, graph, &live).await? {
        Verdict::Keep => Ok(()),
        Verdict::Delete => {
            tracing::debug!(
                kind = live.kind,
                ns = live.namespace,
                name = live.name,
                "deleting: its owners are gone"
            );
            k.delete(
                ctx,
                &live.namespace,
                &live.name,
                &live.uid,
                Some(&live.resource_version),
                PropagationPolicy::Background,
            )
            .await
        }
        Verdict::Drop(gone) => {
            let keep: Vec<_> = live
                .owners
                .iter()
                .filter(|r| !gone.contains(&r.uid))
                .collect();
            k.patch_meta(
                ctx,
                &live.namespace,
                &live.name,
                json!({"metadata": {"ownerReferences": keep, "resourceVersion": live.resource_version}}),
            )
            .await
            .or_else(|e| if e.is_conflict() { Ok(()) } else { Err(e) })
        }
    }
}

#[derive(Debug, PartialEq)]
enum Verdict {
    Keep,
    /// Every owner is gone (or gone but for waiting on its dependents).
    Delete,
    /// These owners are gone; others remain.
    Drop(Vec<String>),
}

async fn verdict(
    ctx: &Context,
    kinds: &Kinds,
    graph: &Mutex<Graph>,
    node: &Meta,
) -> skiff_client::Result<Verdict> {
    if node.owners.is_empty() {
        return Ok(Verdict::Keep);
    }
    let mut gone = Vec::new();
    let mut alive = false;
    for r in &node.owners {
        match owner_state(ctx, kinds, graph, node, r).await? {
            OwnerState::Alive => alive = true,
            OwnerState::Foreground => {}
            OwnerState::Gone => gone.push(r.uid.clone()),
        }
    }
    Ok(if !alive {
        Verdict::Delete
    } else if !gone.is_empty() {
        Verdict::Drop(gone)
    } else {
        Verdict::Keep
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    fn meta(uid: &str, owners: &[&str]) -> Meta {
        Meta {
            api_version: "v1",
            kind: "Pod",
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

    #[test]
    fn removing_an_owner_points_at_its_dependents_and_back() {
        let mut g = Graph::default();
        assert!(g.upsert(meta("rs", &[])).is_empty());
        assert_eq!(g.upsert(meta("p1", &["rs"])), vec!["p1".to_string()]);
        g.upsert(meta("p2", &["rs"]));
        let mut look = g.remove("rs");
        look.sort();
        assert_eq!(look, vec!["p1".to_string(), "p2".into()]);
        // A dependent that goes wakes its (foreground-waiting) owner.
        g.upsert(meta("d", &[]));
        g.upsert(meta("r", &["d"]));
        assert_eq!(g.remove("r"), vec!["d".to_string()]);
        assert!(g.dependents_of("d").is_empty());
        // Changed owners move the edges.
        g.upsert(meta("x", &["a"]));
        g.upsert(meta("x", &["b"]));
        assert!(g.dependents_of("a").is_empty());
    }
}
