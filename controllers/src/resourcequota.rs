//! The resource quota controller: every ResourceQuota's `status.hard` follows its
//! `spec.hard`, and its `status.used` is what the namespace really holds — recounted when the
//! quota's limits change, when objects it counts are deleted or use less (a pod that
//! finished, a Service no longer a NodePort), and for every quota each
//! `--resource-quota-sync-period`. The API server's `ResourceQuota` admission charges new
//! objects as they are written; this controller gives back what deleted ones held.
//!
//! A count lower than what the quota holds is written only once it has held for a second
//! with no charge in between: until then it may be missing creates the admission has charged
//! but not yet stored, and writing it would let the next creates past the limit.
//!
//! Pods, Services and the kinds other controllers already watch are counted from the shared
//! informers; any other resource a quota counts (`count/widgets.example.com`) is listed from
//! the server at each recount, so its deletions show at the next periodic one.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ConfigMap, Endpoints, PersistentVolumeClaim, Pod, ResourceQuota, ResourceQuotaStatus, Secret,
    Service, ServiceAccount,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::jiff::Timestamp;
use skiff_client::controller::{Config as RunConfig, WorkQueue};
use skiff_client::reflector::{Change, ObjectKey, Store};
use skiff_client::untyped::{self, ResourceRef};
use skiff_client::{Api, Object, PostParams};
use skiff_rules::quota::{self, Evaluator, Item, ResourceList};
use tokio_util::sync::CancellationToken;

use crate::Context;

/// How the controller runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// How often every quota is recounted (`--resource-quota-sync-period`).
    pub sync_period: Duration,
    /// Quotas recounted at once (`--concurrent-resource-quota-syncs`).
    pub concurrency: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            sync_period: Duration::from_secs(300),
            concurrency: 5,
        }
    }
}

/// The current time, as quota compares it with pods' deletion times.
fn now() -> Timestamp {
    let n = chrono::Utc::now();
    Timestamp::new(n.timestamp(), n.timestamp_subsec_nanos() as i32)
        .unwrap_or(Timestamp::UNIX_EPOCH)
}

/// Whether a quota needs a recount because of its own change: its limits are not yet in
/// force, or something it limits has no usage yet. Status writes alone (the admission's
/// charges, this controller's own) need none.
pub fn needs_sync(q: &ResourceQuota) -> bool {
    let spec_hard = quota::parse_list(q.spec.as_ref().and_then(|s| s.hard.as_ref()));
    let status_hard = quota::status_hard(q);
    let used = quota::status_used(q);
    spec_hard != status_hard
        || q.status
            .as_ref()
            .and_then(|s| s.hard.as_ref())
            .map(|h| h.len())
            != q.spec
                .as_ref()
                .and_then(|s| s.hard.as_ref())
                .map(|h| h.len())
        || spec_hard.keys().any(|k| !used.contains_key(k))
}

/// Whether `new` uses less of anything than `old` did: what makes a recount worth it.
pub fn decreased(old: &ResourceList, new: &ResourceList) -> bool {
    old.iter()
        .any(|(k, v)| new.get(k).is_none_or(|n| n < v) && !v.is_zero())
}

/// The status a quota should have: its `spec.hard`, and its previous usage with every
/// recounted name replaced, limited to the names it limits. `None` when that is what it has.
pub fn next_status(q: &ResourceQuota, recounted: &ResourceList) -> Option<ResourceQuotaStatus> {
    let spec_hard = q
        .spec
        .as_ref()
        .and_then(|s| s.hard.clone())
        .unwrap_or_default();
    let hard = quota::parse_list(Some(&spec_hard));
    let mut used = quota::status_used(q);
    for (k, v) in recounted {
        used.insert(k.clone(), *v);
    }
    let used = quota::mask(&used, hard.keys().map(String::as_str));
    let dirty = hard != quota::status_hard(q)
        || q.status
            .as_ref()
            .and_then(|s| s.hard.as_ref())
            .map(|h| h.len())
            != Some(spec_hard.len())
        || !quota::equals(&used, &quota::status_used(q))
        || q.status
            .as_ref()
            .and_then(|s| s.used.as_ref())
            .map(|u| u.len())
            != Some(used.len());
    dirty.then(|| ResourceQuotaStatus {
        hard: Some(spec_hard),
        used: Some(quota::to_wire(&used)),
    })
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How many `K`s a namespace holds, from the shared informer.
fn cached<K: Object>(ctx: &Context, ns: &str) -> BoxFuture<'static, usize> {
    let store = ctx.owned::<K>().store();
    let ns = ns.to_string();
    Box::pin(async move {
        store.wait_until_ready().await;
        store.in_namespace(&ns).len()
    })
}

/// The count of a resource from a shared informer, for the kinds the controller manager
/// watches anyway.
fn cached_count(
    ctx: &Context,
    group: &str,
    plural: &str,
    ns: &str,
) -> Option<BoxFuture<'static, usize>> {
    Some(match (group, plural) {
        ("", "configmaps") => cached::<ConfigMap>(ctx, ns),
        ("", "secrets") => cached::<Secret>(ctx, ns),
        ("", "serviceaccounts") => cached::<ServiceAccount>(ctx, ns),
        ("", "endpoints") => cached::<Endpoints>(ctx, ns),
        ("", "resourcequotas") => cached::<ResourceQuota>(ctx, ns),
        ("apps", "deployments") => cached::<Deployment>(ctx, ns),
        ("apps", "replicasets") => cached::<ReplicaSet>(ctx, ns),
        ("apps", "daemonsets") => cached::<DaemonSet>(ctx, ns),
        ("batch", "jobs") => cached::<Job>(ctx, ns),
        ("batch", "cronjobs") => cached::<CronJob>(ctx, ns),
        ("coordination.k8s.io", "leases") => cached::<Lease>(ctx, ns),
        ("discovery.k8s.io", "endpointslices") => cached::<EndpointSlice>(ctx, ns),
        _ => return None,
    })
}

/// Objects of every page of a resource in a namespace, as JSON; none when the server does
/// not serve it.
async fn listed(
    ctx: &Context,
    group: &str,
    plural: &str,
    ns: &str,
) -> Result<Vec<serde_json::Value>, skiff_client::Error> {
    let r = ResourceRef::any_version(group, plural);
    let mut lp = skiff_client::ListParams::default().limit(500);
    let mut out = Vec::new();
    loop {
        let page = match untyped::list(&ctx.client, &r, Some(ns), &lp).await {
            Ok(p) => p,
            Err(e) if e.is_not_found() => return Ok(out),
            Err(e) => return Err(e),
        };
        out.extend(page.items);
        match page.continue_token {
            Some(c) => lp.continue_token = Some(c),
            None => return Ok(out),
        }
    }
}

/// What a namespace holds of everything `q` limits. Resources that could not be counted are
/// left out (their previous usage stands), and the error returned after the rest.
async fn recount(ctx: &Context, q: &ResourceQuota) -> (ResourceList, Option<skiff_client::Error>) {
    let ns = q.metadata.namespace.clone().unwrap_or_default();
    let spec = q.spec.clone().unwrap_or_default();
    let names: Vec<String> = spec.hard.iter().flatten().map(|(k, _)| k.clone()).collect();
    let scopes = quota::scope_selectors(&spec);
    let mut evaluators: Vec<Evaluator> = names
        .iter()
        .filter_map(|n| Evaluator::for_name(n))
        .collect();
    evaluators.sort();
    evaluators.dedup();
    let now = now();
    let mut usage = ResourceList::new();
    let mut error = None;
    for ev in evaluators {
        let counted = match &ev {
            Evaluator::Pods => {
                let store = ctx.pods().store();
                store.wait_until_ready().await;
                let pods = store.in_namespace(&ns);
                quota::usage_of(&ev, &names, &scopes, pods.iter().map(|p| Item::Pod(p)), now)
            }
            Evaluator::Services => {
                let store = ctx.owned::<Service>().store();
                store.wait_until_ready().await;
                let svcs = store.in_namespace(&ns);
                quota::usage_of(
                    &ev,
                    &names,
                    &scopes,
                    svcs.iter().map(|s| Item::Service(s)),
                    now,
                )
            }
            Evaluator::Claims => match listed(ctx, "", "persistentvolumeclaims", &ns).await {
                Ok(items) => {
                    let claims: Vec<PersistentVolumeClaim> = items
                        .into_iter()
                        .filter_map(|v| serde_json::from_value(v).ok())
                        .collect();
                    quota::usage_of(&ev, &names, &scopes, claims.iter().map(Item::Claim), now)
                }
                Err(e) => {
                    error = Some(e);
                    continue;
                }
            },
            Evaluator::Count { group, plural } => {
                let n = match cached_count(ctx, group, plural, &ns) {
                    Some(f) => f.await,
                    None => match listed(ctx, group, plural, &ns).await {
                        Ok(items) => items.len(),
                        Err(e) => {
                            error = Some(e);
                            continue;
                        }
                    },
                };
                quota::count_of(&ev, &names, &scopes, n)
            }
        };
        usage.extend(counted);
    }
    (usage, error)
}

/// How long a lower count must hold, with no charge to the quota meanwhile, before it is
/// written.
pub const CONFIRM_RELEASE: Duration = Duration::from_secs(1);

/// How many times a release waits for the quota to go a whole [`CONFIRM_RELEASE`] without
/// charges before it is written anyway (a namespace that never stops creating).
const MAX_RELEASE_WAITS: u32 = 10;

/// A lower count seen for a quota, waiting to be confirmed.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingRelease {
    /// The quota's resourceVersion when it was seen.
    pub resource_version: String,
    /// When it was seen.
    pub since: std::time::Instant,
    /// How many times it has waited.
    pub waits: u32,
}

/// What a recount may write. A count lower than the quota's usage is either a release
/// (objects deleted) or creates the admission has charged but not yet stored: the count is
/// believed only once it has held for [`CONFIRM_RELEASE`] with no charge to the quota in
/// between (the resourceVersion unchanged), by which time any charged create has been stored
/// and counted. Until then the usage stays as charged (`recounted` is raised back), and the
/// answer says when to look again. Counts that are higher are written at once.
pub fn hold_releases(
    q: &ResourceQuota,
    recounted: &mut ResourceList,
    pending: Option<&PendingRelease>,
    now: std::time::Instant,
) -> (Option<PendingRelease>, Option<Duration>) {
    let used = quota::status_used(q);
    let lower: Vec<String> = recounted
        .iter()
        .filter(|(k, v)| used.get(*k).is_some_and(|u| *v < u))
        .map(|(k, _)| k.clone())
        .collect();
    if lower.is_empty() {
        return (None, None);
    }
    let rv = q.metadata.resource_version.clone().unwrap_or_default();
    let confirmed = pending.is_some_and(|p| {
        (p.resource_version == rv && now.duration_since(p.since) >= CONFIRM_RELEASE)
            || p.waits >= MAX_RELEASE_WAITS
    });
    if confirmed {
        return (None, None);
    }
    for k in lower {
        if let Some(u) = used.get(&k) {
            recounted.insert(k, *u);
        }
    }
    let next = match pending {
        Some(p) if p.resource_version == rv => p.clone(),
        Some(p) => PendingRelease {
            resource_version: rv,
            since: now,
            waits: p.waits + 1,
        },
        None => PendingRelease {
            resource_version: rv,
            since: now,
            waits: 0,
        },
    };
    let wait = CONFIRM_RELEASE.saturating_sub(now.duration_since(next.since));
    (Some(next), Some(wait.max(Duration::from_millis(100))))
}

type Pending = Arc<parking_lot::Mutex<HashMap<ObjectKey, PendingRelease>>>;

/// Recounts one quota and writes its status if it changed; when a release waits to be
/// confirmed, when to look again.
async fn sync(
    ctx: &Context,
    store: &Store<ResourceQuota>,
    pending: &Pending,
    key: &ObjectKey,
) -> Result<Option<Duration>, skiff_client::Error> {
    let Some(q) = store.get(key) else {
        pending.lock().remove(key);
        return Ok(None);
    };
    let (mut recounted, error) = recount(ctx, &q).await;
    let before = pending.lock().get(key).cloned();
    let (waiting, again) = hold_releases(
        &q,
        &mut recounted,
        before.as_ref(),
        std::time::Instant::now(),
    );
    match waiting {
        Some(p) => {
            pending.lock().insert(key.clone(), p);
        }
        None => {
            pending.lock().remove(key);
        }
    }
    if let Some(status) = next_status(&q, &recounted) {
        let mut updated = (*q).clone();
        updated.status = Some(status);
        // Written against the resourceVersion read: an admission charge that came first
        // makes this a conflict, and the recount is done again.
        let api: Api<ResourceQuota> = Api::namespaced(ctx.client.clone(), &key.namespace);
        match api
            .replace_status(&key.name, &PostParams::default(), &updated)
            .await
        {
            Ok(_) => {}
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        }
    }
    match error {
        Some(e) => Err(e),
        None => Ok(again),
    }
}

fn enqueue_namespace(queue: &WorkQueue<ObjectKey>, store: &Store<ResourceQuota>, ns: &str) {
    for q in store.in_namespace(ns) {
        queue.add(ObjectKey::of(q.as_ref()));
    }
}

fn enqueue_all(queue: &WorkQueue<ObjectKey>, store: &Store<ResourceQuota>) {
    for k in store.keys() {
        queue.add(k);
    }
}

/// Recounts a namespace's quotas when one of its `K`s is deleted or (per `usage`) uses less
/// than it did.
fn replenish_on<K: Object>(
    ctx: &Context,
    queue: Arc<WorkQueue<ObjectKey>>,
    quotas: Store<ResourceQuota>,
    usage: Option<fn(&K) -> ResourceList>,
    shutdown: CancellationToken,
) {
    let mut seen: HashMap<ObjectKey, ResourceList> = HashMap::new();
    crate::spawn_each(ctx.owned::<K>().subscribe(), shutdown, move |c| match c {
        Change::Deleted(o) => {
            seen.remove(&ObjectKey::of(o.as_ref()));
            enqueue_namespace(
                &queue,
                &quotas,
                o.metadata().namespace.as_deref().unwrap_or(""),
            );
        }
        Change::Applied(o) => {
            let Some(usage) = usage else { return };
            let now = usage(o.as_ref());
            if let Some(before) = seen.insert(ObjectKey::of(o.as_ref()), now.clone()) {
                if decreased(&before, &now) {
                    enqueue_namespace(
                        &queue,
                        &quotas,
                        o.metadata().namespace.as_deref().unwrap_or(""),
                    );
                }
            }
        }
        // A re-list may hide deletions: recount everything.
        Change::Resynced => enqueue_all(&queue, &quotas),
    });
}

fn pod_usage(p: &Pod) -> ResourceList {
    quota::pod_usage(p, now())
}

/// Runs the controller until `shutdown`.
pub async fn run(ctx: Arc<Context>, config: Config, shutdown: CancellationToken) {
    let informer = ctx.informers.informer::<ResourceQuota>();
    let store = informer.store();
    let queue = WorkQueue::new(RunConfig::default().backoff);
    // What quotas count, deleted or using less, frees quota.
    replenish_on::<Pod>(
        &ctx,
        queue.clone(),
        store.clone(),
        Some(pod_usage),
        shutdown.clone(),
    );
    replenish_on::<Service>(
        &ctx,
        queue.clone(),
        store.clone(),
        Some(quota::service_usage),
        shutdown.clone(),
    );
    replenish_on::<ConfigMap>(&ctx, queue.clone(), store.clone(), None, shutdown.clone());
    replenish_on::<Secret>(&ctx, queue.clone(), store.clone(), None, shutdown.clone());
    replenish_on::<ServiceAccount>(&ctx, queue.clone(), store.clone(), None, shutdown.clone());
    replenish_on::<Endpoints>(&ctx, queue.clone(), store.clone(), None, shutdown.clone());
    replenish_on::<Deployment>(&ctx, queue.clone(), store.clone(), None, shutdown.clone());
    replenish_on::<ReplicaSet>(&ctx, queue.clone(), store.clone(), None, shutdown.clone());
    replenish_on::<DaemonSet>(&ctx, queue.clone(), store.clone(), None, shutdown.clone());
    replenish_on::<Job>(&ctx, queue.clone(), store.clone(), None, shutdown.clone());
    replenish_on::<CronJob>(&ctx, queue.clone(), store.clone(), None, shutdown.clone());
    replenish_on::<Lease>(&ctx, queue.clone(), store.clone(), None, shutdown.clone());
    replenish_on::<EndpointSlice>(&ctx, queue.clone(), store.clone(), None, shutdown.clone());
    // A quota's own changes: only those that change what it limits, not status writes.
    {
        let (queue, store) = (queue.clone(), store.clone());
        crate::spawn_each(informer.subscribe(), shutdown.clone(), move |c| match c {
            Change::Applied(q) if needs_sync(&q) => queue.add(ObjectKey::of(q.as_ref())),
            // Quotas that count quotas count one less.
            Change::Deleted(q) => enqueue_namespace(
                &queue,
                &store,
                q.metadata.namespace.as_deref().unwrap_or(""),
            ),
            Change::Resynced => enqueue_all(&queue, &store),
            Change::Applied(_) => {}
        });
    }
    // The first count of every quota, then a full recount every sync period.
    {
        let (queue, store, shutdown) = (queue.clone(), store.clone(), shutdown.clone());
        let period = config.sync_period.max(Duration::from_secs(1));
        tokio::spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = store.wait_until_ready() => {}
            }
            loop {
                enqueue_all(&queue, &store);
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(period) => {}
                }
            }
        });
    }
    let pending: Pending = Arc::default();
    let mut workers = Vec::new();
    for _ in 0..config.concurrency.max(1) {
        let (queue, store, ctx) = (queue.clone(), store.clone(), ctx.clone());
        let pending = pending.clone();
        workers.push(tokio::spawn(async move {
            while let Some(key) = queue.get().await {
                match sync(&ctx, &store, &pending, &key).await {
                    Ok(None) => queue.forget(&key),
                    Ok(Some(again)) => {
                        queue.forget(&key);
                        queue.add_after(key.clone(), again);
                    }
                    Err(e) => {
                        tracing::warn!(quota = %key, error = %e, "resource quota sync failed; requeued");
                        queue.add_rate_limited(key.clone());
                    }
                }
                queue.done(&key);
            }
        }));
    }
    shutdown.cancelled().await;
    queue.shut_down();
    for w in workers {
        let _ = w.await;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use k8s_openapi::api::core::v1::ResourceQuotaSpec;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity as Wire;

    type Pairs<'a> = &'a [(&'a str, &'a str)];

    fn wire(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, Wire>> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), Wire(v.to_string())))
                .collect(),
        )
    }

    fn list(pairs: &[(&str, &str)]) -> ResourceList {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.parse().unwrap()))
            .collect()
    }

    fn rq(hard: &[(&str, &str)], status: Option<(Pairs<'_>, Pairs<'_>)>) -> ResourceQuota {
        ResourceQuota {
            spec: Some(ResourceQuotaSpec {
                hard: wire(hard),
                ..Default::default()
            }),
            status: status.map(|(h, u)| ResourceQuotaStatus {
                hard: wire(h),
                used: wire(u),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn quotas_sync_when_their_limits_change_not_when_charged() {
        assert!(needs_sync(&rq(&[("pods", "2")], None)));
        let synced = rq(&[("pods", "2")], Some((&[("pods", "2")], &[("pods", "1")])));
        assert!(!needs_sync(&synced));
        let charged = rq(&[("pods", "2")], Some((&[("pods", "2")], &[("pods", "2")])));
        assert!(!needs_sync(&charged));
        let raised = rq(&[("pods", "3")], Some((&[("pods", "2")], &[("pods", "2")])));
        assert!(needs_sync(&raised));
        let added = rq(
            &[("pods", "2"), ("secrets", "1")],
            Some((&[("pods", "2"), ("secrets", "1")], &[("pods", "1")])),
        );
        assert!(needs_sync(&added));
    }

    #[test]
    fn status_takes_spec_hard_and_recounted_usage() {
        let fresh = rq(&[("pods", "2"), ("count/x.example.com", "3")], None);
        let s = next_status(&fresh, &list(&[("pods", "1")])).unwrap();
        assert_eq!(s.hard, wire(&[("pods", "2"), ("count/x.example.com", "3")]));
        // What could not be counted has no usage yet.
        assert_eq!(s.used, wire(&[("pods", "1")]));
        // Unchanged: nothing to write.
        let synced = rq(&[("pods", "2")], Some((&[("pods", "2")], &[("pods", "1")])));
        assert_eq!(next_status(&synced, &list(&[("pods", "1")])), None);
        // A release.
        let s = next_status(&synced, &list(&[("pods", "0")])).unwrap();
        assert_eq!(s.used, wire(&[("pods", "0")]));
        // A name no longer limited goes; one that could not be recounted keeps its usage.
        let old = rq(
            &[("pods", "2")],
            Some((
                &[("pods", "2"), ("secrets", "5")],
                &[("pods", "1"), ("secrets", "4")],
            )),
        );
        let s = next_status(&old, &ResourceList::new()).unwrap();
        assert_eq!(s.hard, wire(&[("pods", "2")]));
        assert_eq!(s.used, wire(&[("pods", "1")]));
    }

    #[test]
    fn lower_counts_wait_for_a_quiet_second() {
        let mut q = rq(&[("pods", "5")], Some((&[("pods", "5")], &[("pods", "3")])));
        q.metadata.resource_version = Some("10".into());
        let t0 = std::time::Instant::now();
        // Higher: at once.
        let mut up = list(&[("pods", "4")]);
        assert_eq!(hold_releases(&q, &mut up, None, t0), (None, None));
        assert_eq!(up, list(&[("pods", "4")]));
        // Lower: held at the charged usage, looked at again a second later.
        let mut down = list(&[("pods", "1")]);
        let (p, again) = hold_releases(&q, &mut down, None, t0);
        assert_eq!(down, list(&[("pods", "3")]));
        assert_eq!(again, Some(CONFIRM_RELEASE));
        let p = p.unwrap();
        // Still lower a second later, with no charge in between: written.
        let mut down = list(&[("pods", "1")]);
        let t1 = t0 + CONFIRM_RELEASE;
        assert_eq!(hold_releases(&q, &mut down, Some(&p), t1), (None, None));
        assert_eq!(down, list(&[("pods", "1")]));
        // A charge in between (a new resourceVersion): wait again.
        q.metadata.resource_version = Some("11".into());
        let mut down = list(&[("pods", "1")]);
        let (again_p, again) = hold_releases(&q, &mut down, Some(&p), t1);
        assert_eq!(down, list(&[("pods", "3")]));
        assert_eq!(again_p.unwrap().waits, 1);
        assert!(again.is_some());
        // A namespace that never stops: written after enough waits.
        let tired = PendingRelease {
            resource_version: "9".into(),
            since: t1,
            waits: MAX_RELEASE_WAITS,
        };
        let mut down = list(&[("pods", "1")]);
        assert_eq!(hold_releases(&q, &mut down, Some(&tired), t1), (None, None));
        assert_eq!(down, list(&[("pods", "1")]));
    }

    #[test]
    fn only_using_less_is_worth_a_recount() {
        let before = list(&[("pods", "1"), ("requests.cpu", "500m")]);
        assert!(!decreased(&before, &before));
        assert!(!decreased(
            &before,
            &list(&[("pods", "1"), ("requests.cpu", "1")])
        ));
        assert!(decreased(&before, &list(&[("count/pods", "1")])));
        assert!(decreased(
            &before,
            &list(&[("pods", "1"), ("requests.cpu", "100m")])
        ));
    }
}
