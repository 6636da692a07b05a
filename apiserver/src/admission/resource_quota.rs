//! ResourceQuota: a create or update that would take a namespace past any of its quotas is
//! refused (`403`, `exceeded quota: NAME, requested: pods=1, used: pods=2, limited: pods=2`),
//! as are pods that do not state the CPU or memory a quota limits. What a write adds is
//! charged to each quota's `status.used` before the object is stored: a write of the quota's
//! status conditional on its resourceVersion, redone from a fresh copy when another write
//! came first, so concurrent writes can never together pass a limit. The quota controller
//! later gives back what deleted objects held.
//!
//! The rules themselves (usage, scopes, the check) are [`skiff_rules::quota`]'s.

use std::sync::atomic::{AtomicBool, Ordering};

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, ResourceQuota as Quota, Service};
use k8s_openapi::jiff::Timestamp;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use skiff_rules::quota::{self, Charge, Evaluator, Item, Operation as QuotaOp, Request};

use super::{forbidden, Attributes, Operation, Plugin};
use crate::error::{Error, Result};
use crate::registry::{Objects, Resource};

/// The plugin.
pub struct ResourceQuota;

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

/// `status.used` after adding `requested` to the quota `q` (the stored object), checked
/// against its current `status.hard`.
fn charged(q: &Value, requested: &quota::ResourceList) -> std::result::Result<Value, String> {
    let typed = decode_quota(q).map_err(|e| e.to_string())?;
    let hard = quota::status_hard(&typed);
    // The limits may have changed since the check: charge only what the quota limits now.
    let requested = quota::mask(requested, hard.keys().map(String::as_str));
    let used = quota::charge(
        name_of(&typed),
        &hard,
        &quota::status_used(&typed),
        &requested,
    )
    .map_err(|r| r.0)?;
    Ok(json!(quota::to_wire(&used)))
}

/// `status.used` less `given` (never below zero), for giving back a charge.
fn refunded(q: &Value, given: &quota::ResourceList) -> Option<Value> {
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

    /// Charges `requested` to one quota, conditionally on the copy the charge was computed
    /// from. A refusal computed from the watch cache's copy is confirmed against etcd's
    /// (the quota controller may have given usage back meanwhile). `Ok(false)`: the quota is
    /// gone.
    async fn charge_one(
        &self,
        a: &Attributes<'_>,
        obj: Option<&Value>,
        objs: &dyn Objects,
        rq: &Resource,
        name: &str,
        requested: &quota::ResourceList,
    ) -> Result<bool> {
        let ns = Some(a.namespace);
        for attempt in 0.. {
            let refused = AtomicBool::new(false);
            let change = |q: &mut Value| -> Result<()> {
                match charged(q, requested) {
                    Ok(used) => {
                        set_used(q, used);
                        Ok(())
                    }
                    Err(why) => {
                        refused.store(true, Ordering::Relaxed);
                        Err(forbidden(a, obj, &why))
                    }
                }
            };
            match objs.guaranteed_update(rq, ns, name, false, &change).await {
                Ok(_) => return Ok(true),
                Err(e) if e.code() == 404 => return Ok(false),
                Err(e) => {
                    if !refused.load(Ordering::Relaxed) || attempt + 1 >= CONFIRMATIONS {
                        return Err(e);
                    }
                    // Was it refused against a stale copy? Wait for the cache to catch up
                    // with etcd, and try again if etcd's copy would take the charge.
                    let fresh = match objs.get(rq, ns, name).await {
                        Ok(v) => v,
                        Err(g) if g.code() == 404 => return Ok(false),
                        Err(_) => return Err(e),
                    };
                    if charged(&fresh, requested).is_err() {
                        return Err(e);
                    }
                    let rv = fresh
                        .pointer("/metadata/resourceVersion")
                        .and_then(Value::as_str)
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0);
                    objs.cache_reaches(rq, rv).await;
                }
            }
        }
        Ok(true)
    }

    /// Gives back charges already made, when a later quota refused the write.
    async fn refund(
        &self,
        objs: &dyn Objects,
        rq: &Resource,
        ns: &str,
        made: &[(String, quota::ResourceList)],
    ) {
        for (name, given) in made {
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
        let mut quotas = self.quotas(objs, &rq, a.namespace, false).await?;
        let charges: Vec<Charge> = match quota::check(&quotas, &req) {
            Ok(c) => c,
            Err(_) => {
                // The cache may be behind a release or the controller's first count: the
                // refusal stands only if etcd's copies refuse too.
                quotas = self.quotas(objs, &rq, a.namespace, true).await?;
                quota::check(&quotas, &req).map_err(|r| forbidden(a, Some(obj), &r.0))?
            }
        };
        if a.dry_run || charges.is_empty() {
            return Ok(());
        }
        let mut made: Vec<(String, quota::ResourceList)> = Vec::new();
        for c in &charges {
            let name = name_of(&quotas[c.index]).to_string();
            match self
                .charge_one(a, Some(obj), objs, &rq, &name, &c.requested)
                .await
            {
                Ok(true) => made.push((name, c.requested.clone())),
                Ok(false) => {}
                Err(e) => {
                    self.refund(objs, &rq, a.namespace, &made).await;
                    return Err(e);
                }
            }
        }
        Ok(())
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
        let e = ResourceQuota
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
        ResourceQuota
            .validate(&attrs(&cms, &user), Some(&cm), &objs)
            .await
            .unwrap();
        // Subresources and other namespaces are not charged.
        let a = Attributes {
            namespace: "other",
            ..attrs(&cms, &user)
        };
        ResourceQuota.validate(&a, Some(&cm), &objs).await.unwrap();
    }

    #[test]
    fn charges_and_refunds_rewrite_status_used() {
        let q = json!({"metadata": {"name": "q"},
            "status": {"hard": {"count/configmaps": "2"}, "used": {"count/configmaps": "1"}}});
        let one: quota::ResourceList = [("count/configmaps".to_string(), "1".parse().unwrap())]
            .into_iter()
            .collect();
        let used = charged(&q, &one).unwrap();
        assert_eq!(used, json!({"count/configmaps": "2"}));
        let mut full = q.clone();
        set_used(&mut full, used);
        assert_eq!(
            charged(&full, &one).unwrap_err(),
            "exceeded quota: q, requested: count/configmaps=1, used: count/configmaps=2, limited: count/configmaps=2"
        );
        assert_eq!(
            refunded(&full, &one).unwrap(),
            json!({"count/configmaps": "1"})
        );
    }
}
