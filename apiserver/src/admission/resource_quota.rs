//! ResourceQuota: a create or update that would take a namespace past any of its quotas is
//! refused (`403`, `exceeded quota: NAME, requested: pods=1, used: pods=2, limited: pods=2`),
//! as are pods that do not state the CPU or memory a quota limits. What a write adds is
//! charged to each quota's `status.used` before the object is stored: a write of the quota's
//! status conditional on its resourceVersion, redone from a fresh copy when another write
//! came first, so concurrent writes can never together pass a limit. The quota controller
//! later gives back what deleted objects held.
//!
//! As in kube-apiserver, the writes of one namespace are charged in batches: while one batch
//! is being written to the quotas, the writes that arrive wait, and the next batch charges
//! them all with one write per quota, deciding each in arrival order against the quota as
//! stored. Without it every write would race every other for the same quota object.
//!
//! The rules themselves (usage, scopes, the check) are [`skiff_rules::quota`]'s.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, ResourceQuota as Quota, Service};
use k8s_openapi::jiff::Timestamp;
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use skiff_rules::quota::{self, Evaluator, Item, Operation as QuotaOp, Request, ResourceList};
use tokio::sync::{oneshot, Notify};

use super::{forbidden, Attributes, Operation, Plugin};
use crate::error::{ApiError, Error, Result};
use crate::registry::{Objects, Resource};

/// The plugin.
#[derive(Default)]
pub struct ResourceQuota {
    /// The writes waiting to be charged, by namespace.
    queues: Mutex<HashMap<String, Queue>>,
}

/// One namespace's writes waiting to be charged.
#[derive(Default)]
struct Queue {
    waiting: Vec<Job>,
    /// Whether a request is charging a batch now.
    leading: bool,
    /// Wakes the waiting requests when the one charging stops, so that one of them goes on.
    wake: Arc<Notify>,
}

/// One write to charge.
struct Job {
    /// What it adds to each quota, by the quota's name.
    charges: Vec<(String, ResourceList)>,
    /// The resource and name a refusal names (`pods "web" is forbidden: ...`).
    group_resource: String,
    name: String,
    /// Where the answer goes.
    done: oneshot::Sender<Result<()>>,
}

/// How often a refusal read from the watch cache is checked against etcd before it stands.
const CONFIRMATIONS: usize = 3;

/// The object being written, decoded as its type when quota measures more than its count.
enum Decoded {
    Pod(Box<Pod>),
    Service(Box<Service>),
    Claim(Box<PersistentVolumeClaim>),
    Object,
}

impl Decoded {
    fn new(ev: &Evaluator, obj: &Value) -> Result<Decoded> {
        fn typed<T: DeserializeOwned>(obj: &Value) -> Result<Box<T>> {
            T::deserialize(obj)
                .map(Box::new)
                .map_err(|e| Error::internal(format!("quota: decoding the object: {e}")))
        }
        Ok(match ev {
            Evaluator::Pods => Decoded::Pod(typed(obj)?),
            Evaluator::Services => Decoded::Service(typed(obj)?),
            Evaluator::Claims => Decoded::Claim(typed(obj)?),
            Evaluator::Count { .. } => Decoded::Object,
        })
    }

    fn item(&self) -> Item<'_> {
        match self {
            Decoded::Pod(p) => Item::Pod(p),
            Decoded::Service(s) => Item::Service(s),
            Decoded::Claim(c) => Item::Claim(c),
            Decoded::Object => Item::Object,
        }
    }
}

/// The current time, as quota compares it with pods' deletion times.
fn now() -> Timestamp {
    let n = chrono::Utc::now();
    Timestamp::new(n.timestamp(), n.timestamp_subsec_nanos() as i32)
        .unwrap_or(Timestamp::UNIX_EPOCH)
}

fn decode_quota(v: &Value) -> Result<Quota> {
    Quota::deserialize(v).map_err(|e| Error::internal(format!("quota: decoding a quota: {e}")))
}

fn name_of(q: &Quota) -> &str {
    q.metadata.name.as_deref().unwrap_or("")
}

/// Decides, in order, which of `entries` (a job's index and what it adds) the quota `q` (as
/// stored) has room for, against its current `status.hard`: the new `status.used`, and for
/// each entry `None` (charged) or why not.
fn decide(q: &Value, entries: &[(usize, ResourceList)]) -> Result<(Value, Vec<Option<String>>)> {
    let typed = decode_quota(q)?;
    let hard = quota::status_hard(&typed);
    let mut used = quota::status_used(&typed);
    let decisions = entries
        .iter()
        .map(|(_, requested)| {
            // The limits may have changed since the plan: charge what the quota limits now.
            let requested = quota::mask(requested, hard.keys().map(String::as_str));
            if requested.is_empty() {
                return None;
            }
            match quota::charge(name_of(&typed), &hard, &used, &requested) {
                Ok(u) => {
                    used = u;
                    None
                }
                Err(r) => Some(r.0),
            }
        })
        .collect();
    Ok((json!(quota::to_wire(&used)), decisions))
}

/// `status.used` less `given` (never below zero), for giving back a charge.
fn refunded(q: &Value, given: &ResourceList) -> Option<Value> {
    let typed = decode_quota(q).ok()?;
    let used = quota::status_used(&typed);
    let mut back = used.clone();
    for (k, v) in
        quota::subtract_non_negative(&quota::mask(&used, given.keys().map(String::as_str)), given)
    {
        back.insert(k, v);
    }
    Some(json!(quota::to_wire(&back)))
}

fn set_used(q: &mut Value, used: Value) {
    if !q.get("status").is_some_and(Value::is_object) {
        q["status"] = json!({});
    }
    q["status"]["used"] = used;
}

/// The same error again, for every write of a batch that one failure stopped.
fn duplicate(e: &Error) -> Error {
    let status = e.status();
    Error::from(ApiError {
        code: e.code(),
        reason: e.reason(),
        message: status["message"].as_str().unwrap_or_default().to_string(),
        details: status.get("details").cloned(),
    })
}

fn interrupted() -> Error {
    Error::internal("resource quota evaluation was interrupted")
}

/// Held by the request charging a namespace's batches: when it stops, however it stops (its
/// client may go away mid-batch), the namespace is free to be led by another.
struct Lead<'a> {
    plugin: &'a ResourceQuota,
    ns: &'a str,
}

impl Drop for Lead<'_> {
    fn drop(&mut self) {
        let mut queues = self.plugin.queues.lock();
        if let Some(q) = queues.get_mut(self.ns) {
            q.leading = false;
            let wake = q.wake.clone();
            if q.waiting.is_empty() {
                queues.remove(self.ns);
            }
            wake.notify_waiters();
        }
    }
}

impl ResourceQuota {
    /// The namespace's quotas: from the watch cache, or (`fresh`) as etcd has them now.
    async fn quotas(
        &self,
        objs: &dyn Objects,
        rq: &Resource,
        ns: &str,
        fresh: bool,
    ) -> Result<Vec<Quota>> {
        let cached = objs.cached_list(rq, Some(ns));
        let mut out = Vec::with_capacity(cached.len());
        for c in cached {
            if !fresh {
                out.push(
                    serde_json::from_slice(&c.json)
                        .map_err(|e| Error::internal(format!("quota: decoding a quota: {e}")))?,
                );
                continue;
            }
            match objs.get(rq, Some(ns), &c.name).await {
                Ok(v) => out.push(decode_quota(&v)?),
                Err(e) if e.code() == 404 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Queues a write's charges and waits for the answer, charging the namespace's batches
    /// itself while no other request does.
    async fn submit(
        &self,
        objs: &dyn Objects,
        rq: &Resource,
        ns: &str,
        job: impl FnOnce(oneshot::Sender<Result<()>>) -> Job,
    ) -> Result<()> {
        let (tx, mut rx) = oneshot::channel();
        let wake = {
            let mut queues = self.queues.lock();
            let q = queues.entry(ns.to_string()).or_default();
            q.waiting.push(job(tx));
            q.wake.clone()
        };
        loop {
            // Made before looking, so that a leader stopping in between still wakes us.
            let woken = wake.notified();
            if self.take_lead(ns) {
                if let Some(answer) = self.lead(objs, rq, ns, &mut rx).await {
                    return answer;
                }
            }
            tokio::select! {
                answer = &mut rx => return answer.unwrap_or_else(|_| Err(interrupted())),
                _ = woken => {}
            }
        }
    }

    fn take_lead(&self, ns: &str) -> bool {
        let mut queues = self.queues.lock();
        match queues.get_mut(ns) {
            Some(q) if !q.leading && !q.waiting.is_empty() => {
                q.leading = true;
                true
            }
            _ => false,
        }
    }

    /// Charges the namespace's batches until this request's own answer is in (then another
    /// waiting request takes over), or none are left.
    async fn lead(
        &self,
        objs: &dyn Objects,
        rq: &Resource,
        ns: &str,
        own: &mut oneshot::Receiver<Result<()>>,
    ) -> Option<Result<()>> {
        let _lead = Lead { plugin: self, ns };
        loop {
            let batch = {
                let mut queues = self.queues.lock();
                match queues.get_mut(ns) {
                    Some(q) if !q.waiting.is_empty() => std::mem::take(&mut q.waiting),
                    _ => return None,
                }
            };
            self.charge_batch(objs, rq, ns, batch).await;
            match own.try_recv() {
                Ok(answer) => return Some(answer),
                Err(oneshot::error::TryRecvError::Closed) => return Some(Err(interrupted())),
                Err(oneshot::error::TryRecvError::Empty) => {}
            }
        }
    }

    /// Charges a batch: quota by quota, each job's charge if the quota (as stored) has room
    /// for it after the jobs before it; a job refused by one quota is given back to those
    /// that took it already.
    async fn charge_batch(&self, objs: &dyn Objects, rq: &Resource, ns: &str, jobs: Vec<Job>) {
        let n = jobs.len();
        let mut refused: Vec<Option<String>> = vec![None; n];
        let mut failed: Vec<Option<Error>> = (0..n).map(|_| None).collect();
        let mut taken: Vec<Vec<(String, ResourceList)>> = vec![Vec::new(); n];
        let names: BTreeSet<&str> = jobs
            .iter()
            .flat_map(|j| j.charges.iter().map(|(q, _)| q.as_str()))
            .collect();
        for name in names {
            let entries: Vec<(usize, ResourceList)> = jobs
                .iter()
                .enumerate()
                .filter(|(i, _)| refused[*i].is_none() && failed[*i].is_none())
                .filter_map(|(i, j)| {
                    j.charges
                        .iter()
                        .find(|(q, _)| q == name)
                        .map(|(_, r)| (i, r.clone()))
                })
                .collect();
            if entries.is_empty() {
                continue;
            }
            match self.charge_quota(objs, rq, ns, name, &entries).await {
                Ok(decisions) => {
                    for ((i, requested), d) in entries.into_iter().zip(decisions) {
                        match d {
                            Some(why) => refused[i] = Some(why),
                            None => taken[i].push((name.to_string(), requested)),
                        }
                    }
                }
                Err(e) => {
                    for (i, _) in &entries {
                        failed[*i] = Some(duplicate(&e));
                    }
                }
            }
        }
        let mut back: BTreeMap<String, ResourceList> = BTreeMap::new();
        for i in 0..n {
            if refused[i].is_some() || failed[i].is_some() {
                for (q, r) in taken[i].drain(..) {
                    let sum = back.entry(q).or_default();
                    *sum = quota::add(sum, &r);
                }
            }
        }
        for (q, given) in back {
            self.refund(objs, rq, ns, &q, &given).await;
        }
        for (i, job) in jobs.into_iter().enumerate() {
            let answer = match (failed[i].take(), &refused[i]) {
                (Some(e), _) => Err(e),
                (None, Some(why)) => {
                    Err(Error::forbidden_object(&job.group_resource, &job.name, why))
                }
                (None, None) => Ok(()),
            };
            let _ = job.done.send(answer);
        }
    }

    /// Charges one quota with `entries`, in one write conditional on the copy decided from
    /// (redone from a fresh copy on conflict). When every entry is refused nothing is written,
    /// so a refusal decided from the watch cache's copy is confirmed against etcd's (the
    /// quota controller may have given usage back meanwhile). A quota that is gone takes
    /// nothing.
    async fn charge_quota(
        &self,
        objs: &dyn Objects,
        rq: &Resource,
        ns: &str,
        name: &str,
        entries: &[(usize, ResourceList)],
    ) -> Result<Vec<Option<String>>> {
        let nothing = || vec![None; entries.len()];
        let mut attempt = 0;
        loop {
            attempt += 1;
            let decisions = Mutex::new(Vec::new());
            let change = |q: &mut Value| -> Result<()> {
                let (used, d) = decide(q, entries)?;
                *decisions.lock() = d;
                set_used(q, used);
                Ok(())
            };
            match objs
                .guaranteed_update(rq, Some(ns), name, false, &change)
                .await
            {
                Ok(_) => {}
                Err(e) if e.code() == 404 => return Ok(nothing()),
                Err(e) => return Err(e),
            }
            let decided = decisions.into_inner();
            if decided.iter().any(Option::is_none) || attempt >= CONFIRMATIONS {
                return Ok(decided);
            }
            let fresh = match objs.get(rq, Some(ns), name).await {
                Ok(v) => v,
                Err(e) if e.code() == 404 => return Ok(nothing()),
                Err(e) => return Err(e),
            };
            let (_, again) = decide(&fresh, entries)?;
            if again.iter().all(Option::is_some) {
                return Ok(again);
            }
            let rv = fresh
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            objs.cache_reaches(rq, rv).await;
        }
    }

    /// Gives back charges already made, when a later quota refused the write.
    async fn refund(
        &self,
        objs: &dyn Objects,
        rq: &Resource,
        ns: &str,
        name: &str,
        given: &ResourceList,
    ) {
        let change = |q: &mut Value| -> Result<()> {
            if let Some(used) = refunded(q, given) {
                set_used(q, used);
            }
            Ok(())
        };
        if let Err(e) = objs
            .guaranteed_update(rq, Some(ns), name, false, &change)
            .await
        {
            if e.code() != 404 {
                tracing::warn!(quota = %name, namespace = %ns, error = %e, "could not give back a quota charge; the quota controller will");
            }
        }
    }
}

#[async_trait::async_trait]
impl Plugin for ResourceQuota {
    fn name(&self) -> &'static str {
        "ResourceQuota"
    }

    async fn validate(
        &self,
        a: &Attributes<'_>,
        obj: Option<&Value>,
        objs: &dyn Objects,
    ) -> Result<()> {
        let op = match a.operation {
            Operation::Create => QuotaOp::Create,
            Operation::Update => QuotaOp::Update,
            _ => return Ok(()),
        };
        let r = a.resource;
        let Some(obj) = obj else { return Ok(()) };
        if !a.subresource.is_empty()
            || a.namespace.is_empty()
            || r.create_only.is_some()
            || quota::ignored(&r.group, &r.plural)
        {
            return Ok(());
        }
        let evaluator = Evaluator::for_resource(&r.group, &r.plural);
        if !evaluator.handles(op) {
            return Ok(());
        }
        let rq = objs
            .resource("", "v1", "resourcequotas")
            .ok_or_else(|| Error::internal("resourcequotas are not served"))?;
        if !objs.any_cached(&rq, a.namespace) {
            return Ok(());
        }
        let item = Decoded::new(&evaluator, obj)?;
        let old = match (op, a.old) {
            (QuotaOp::Update, Some(o)) => Some(Decoded::new(&evaluator, o)?),
            _ => None,
        };
        let req = Request {
            operation: op,
            evaluator: &evaluator,
            item: item.item(),
            old: old.as_ref().map(Decoded::item),
            now: now(),
        };
        // The cache may be behind the controller's first count or a release: a refusal
        // stands only if etcd's copies refuse too.
        let mut quotas = self.quotas(objs, &rq, a.namespace, false).await?;
        let plan = match quota::plan(&quotas, &req) {
            Ok(p) => p,
            Err(_) => {
                quotas = self.quotas(objs, &rq, a.namespace, true).await?;
                quota::plan(&quotas, &req).map_err(|r| forbidden(a, Some(obj), &r.0))?
            }
        };
        if plan.is_empty() {
            return Ok(());
        }
        if a.dry_run {
            if quota::check(&quotas, &req).is_err() {
                let fresh = self.quotas(objs, &rq, a.namespace, true).await?;
                quota::check(&fresh, &req).map_err(|r| forbidden(a, Some(obj), &r.0))?;
            }
            return Ok(());
        }
        let charges: Vec<(String, ResourceList)> = plan
            .into_iter()
            .map(|c| (name_of(&quotas[c.index]).to_string(), c.requested))
            .collect();
        let name = match a.name {
            "" => obj
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            n => n.to_string(),
        };
        let group_resource = r.group_resource().to_string();
        self.submit(objs, &rq, a.namespace, |done| Job {
            charges,
            group_resource,
            name,
            done,
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::testing::Fixed;
    use crate::auth::UserInfo;
    use crate::registry::builtin;

    fn attrs<'a>(r: &'a crate::registry::ResourceInfo, user: &'a UserInfo) -> Attributes<'a> {
        Attributes {
            operation: Operation::Create,
            resource: r,
            subresource: "",
            namespace: "ns",
            name: "web",
            old: None,
            user,
            dry_run: false,
            options: crate::admission::Options::None,
            reinvocation: None,
        }
    }

    fn full_quota() -> Value {
        json!({"metadata": {"name": "q", "namespace": "ns"},
            "spec": {"hard": {"pods": "1"}},
            "status": {"hard": {"pods": "1"}, "used": {"pods": "1"}}})
    }

    #[tokio::test]
    async fn a_write_past_a_quota_is_refused_with_kubernetes_words() {
        let pods = builtin("", "pods").unwrap();
        let user = UserInfo::default();
        let objs = Fixed::default().with("resourcequotas", "ns", full_quota());
        let pod = json!({"metadata": {"name": "web", "namespace": "ns"},
            "spec": {"containers": [{"name": "c", "image": "i"}]}});
        let e = ResourceQuota::default()
            .validate(&attrs(&pods, &user), Some(&pod), &objs)
            .await
            .unwrap_err();
        assert_eq!(e.code(), 403);
        assert_eq!(
            e.to_string(),
            "pods \"web\" is forbidden: exceeded quota: q, requested: pods=1, used: pods=1, limited: pods=1"
        );
    }

    #[tokio::test]
    async fn what_no_quota_limits_passes_untouched() {
        let cms = builtin("", "configmaps").unwrap();
        let user = UserInfo::default();
        // The quota limits pods only: nothing to charge, so nothing is written (the fixed
        // store refuses writes).
        let objs = Fixed::default().with("resourcequotas", "ns", full_quota());
        let cm = json!({"metadata": {"name": "web", "namespace": "ns"}});
        ResourceQuota::default()
            .validate(&attrs(&cms, &user), Some(&cm), &objs)
            .await
            .unwrap();
        // Subresources and other namespaces are not charged.
        let a = Attributes {
            namespace: "other",
            ..attrs(&cms, &user)
        };
        ResourceQuota::default()
            .validate(&a, Some(&cm), &objs)
            .await
            .unwrap();
    }

    #[test]
    fn batches_are_decided_in_order_and_refunds_give_back() {
        let q = json!({"metadata": {"name": "q"},
            "status": {"hard": {"count/configmaps": "2"}, "used": {"count/configmaps": "1"}}});
        let one: ResourceList = [("count/configmaps".to_string(), "1".parse().unwrap())]
            .into_iter()
            .collect();
        let entries = vec![(0, one.clone()), (1, one.clone())];
        let (used, decisions) = decide(&q, &entries).unwrap();
        assert_eq!(used, json!({"count/configmaps": "2"}));
        assert_eq!(decisions[0], None);
        assert_eq!(
            decisions[1].as_deref(),
            Some("exceeded quota: q, requested: count/configmaps=1, used: count/configmaps=2, limited: count/configmaps=2")
        );
        let mut full = q.clone();
        set_used(&mut full, used);
        assert_eq!(
            refunded(&full, &one).unwrap(),
            json!({"count/configmaps": "1"})
        );
    }

    #[tokio::test]
    async fn concurrent_writes_get_exactly_what_is_left() {
        let cms = builtin("", "configmaps").unwrap();
        let user = UserInfo::default();
        let objs = Fixed::default().with(
            "resourcequotas",
            "ns",
            json!({"metadata": {"name": "q", "namespace": "ns"},
                "spec": {"hard": {"count/configmaps": "10"}},
                "status": {"hard": {"count/configmaps": "10"}, "used": {"count/configmaps": "3"}}}),
        );
        let plugin = ResourceQuota::default();
        let names: Vec<String> = (0..20).map(|i| format!("cm-{i}")).collect();
        let objects: Vec<Value> = names
            .iter()
            .map(|n| json!({"metadata": {"name": n, "namespace": "ns"}}))
            .collect();
        let writes = names.iter().zip(&objects).map(|(n, o)| {
            let (plugin, objs, cms, user) = (&plugin, &objs, &cms, &user);
            async move {
                let a = Attributes {
                    name: n,
                    ..attrs(cms, user)
                };
                plugin.validate(&a, Some(o), objs).await
            }
        });
        let answers = futures::future::join_all(writes).await;
        let admitted = answers.iter().filter(|r| r.is_ok()).count();
        assert_eq!(admitted, 7);
        for e in answers.iter().filter_map(|r| r.as_ref().err()) {
            assert_eq!(e.code(), 403);
            assert!(e.to_string().contains("exceeded quota: q"), "{e}");
        }
        let q = objs.stored("resourcequotas", "ns", "q").unwrap();
        assert_eq!(q["status"]["used"], json!({"count/configmaps": "10"}));
        assert!(plugin.queues.lock().is_empty());
    }
}
