//! Delete: at once, or gracefully — the object marked with `deletionTimestamp` until its grace
//! period ends and its finalizers are gone — and what happens to its dependents (orphaned,
//! or deleted after it or before it).

use chrono::{SecondsFormat, Utc};
use serde_json::{json, Value};

use super::write::{finalizers, meta, meta_mut, meta_str};
use super::GenericStore;
use crate::admission::{Attributes, Operation, Options};
use crate::error::{Cause, Error, Result};
use crate::registry::Resource;
use crate::request::{DeleteOpts, Deleted, ListOpts, Propagation};
use crate::storage::{UnreadableDelete, WriteOutcome};

const ORPHAN: &str = "orphan";
const FOREGROUND: &str = "foregroundDeletion";

fn deletion_time(grace: i64) -> Value {
    let when = Utc::now() + chrono::Duration::seconds(grace);
    json!(when.to_rfc3339_opts(SecondsFormat::Secs, true))
}

impl GenericStore {
    /// Removes an object whose stored value cannot be read (not decrypted, or not an object),
    /// as kube-apiserver's `ignoreStoreReadErrorWithClusterBreakingPotential` does: at once,
    /// without finalizers, preconditions or admission. An object that reads fine is refused
    /// (409): it goes through the ordinary delete.
    pub async fn delete_unreadable(
        &self,
        r: &Resource,
        ns: Option<&str>,
        name: &str,
        dry_run: bool,
    ) -> Result<()> {
        let key = self.key(r, ns, name);
        match self.etcd.delete_unreadable(&key, dry_run).await? {
            UnreadableDelete::Deleted => Ok(()),
            UnreadableDelete::Missing => Err(Error::not_found(r.group_resource(), name)),
            UnreadableDelete::Readable => Err(Error::conflict(
                r.group_resource(),
                name,
                "the object can be read: delete it without ignoreStoreReadErrorWithClusterBreakingPotential",
            )),
        }
    }

    /// Deletes an object, gracefully where its type and finalizers say so.
    pub async fn delete(
        &self,
        r: &Resource,
        ns: Option<&str>,
        name: &str,
        opts: &DeleteOpts,
    ) -> Result<Deleted> {
        if let Some(g) = opts.grace_period.filter(|g| *g < 0) {
            return Err(Error::invalid(
                "DeleteOptions",
                "meta.k8s.io",
                "",
                vec![Cause::invalid(
                    "gracePeriodSeconds",
                    &json!(g),
                    "must be greater than or equal to 0",
                )],
            ));
        }
        let key = self.key(r, ns, name);
        let mut admitted = false;
        loop {
            let current = self.get_stored(r, ns, name).await?;
            let cur = &current.value;
            if !admitted {
                let attrs = Attributes {
                    operation: Operation::Delete,
                    resource: r,
                    subresource: "",
                    namespace: ns.unwrap_or(""),
                    name,
                    old: Some(cur),
                    user: &opts.user,
                    dry_run: opts.dry_run,
                    options: Options::Delete(opts),
                    reinvocation: None,
                };
                self.admission().admit(&attrs, None, self).await?;
                self.admission().validate(&attrs, None, self).await?;
                admitted = true;
            }
            if let Some(uid) = &opts.uid {
                if uid != meta_str(cur, "uid") {
                    return Err(Error::conflict(
                        r.group_resource(),
                        name,
                        &format!(
                            "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                            meta_str(cur, "uid")
                        ),
                    ));
                }
            }
            if let Some(rv) = &opts.resource_version {
                if *rv != current.rv.to_string() {
                    return Err(Error::conflict(r.group_resource(), name, &format!(
                        "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                        current.rv
                    )));
                }
            }
            let already = meta(cur).is_some_and(|m| m.contains_key("deletionTimestamp"));
            let mut fins = finalizers(cur);
            let orphan = opts.propagation == Some(Propagation::Orphan) && !opts.dry_run;
            // Orphaning: the owner is first marked deleting (with the `orphan` finalizer, as
            // Kubernetes does), so no controller adopts a dependent back into it while its
            // references are being removed; then the references go; then the owner.
            if orphan && !already && !fins.iter().any(|f| f == ORPHAN) && self.has_dependents(cur) {
                let grace = r.strategy.grace_period(cur, opts.grace_period);
                let mut next = cur.clone();
                let m = meta_mut(&mut next);
                m.insert("deletionTimestamp".into(), deletion_time(grace));
                m.insert("deletionGracePeriodSeconds".into(), json!(grace));
                bump_generation(m);
                fins.push(ORPHAN.into());
                m.insert("finalizers".into(), json!(fins));
                let bytes = super::encode_for(r, &next).await?.bytes;
                match self
                    .etcd
                    .update_encoded(&key, bytes, current.rv, &[])
                    .await?
                {
                    WriteOutcome::Mismatch(None) => {
                        return Err(Error::not_found(r.group_resource(), name))
                    }
                    _ => continue,
                }
            }
            if !opts.dry_run && (fins.iter().any(|f| f == ORPHAN) || (orphan && already)) {
                self.orphan_dependents(cur).await?;
                fins.retain(|f| f != ORPHAN);
            }
            if opts.propagation == Some(Propagation::Foreground)
                && !fins.iter().any(|f| f == FOREGROUND)
            {
                fins.push(FOREGROUND.into());
            }
            let grace = r.strategy.grace_period(cur, opts.grace_period);
            let old_grace = cur
                .pointer("/metadata/deletionGracePeriodSeconds")
                .and_then(Value::as_i64);
            if fins.is_empty() && !r.strategy.deletion_held(cur) && grace == 0 {
                if opts.dry_run {
                    return Ok(Deleted::Gone(cur.clone()));
                }
                let effects = r.strategy.release(&self.etcd, cur);
                match self.etcd.delete(&key, current.rv, &effects).await? {
                    WriteOutcome::Done(rev) => {
                        let mut last = current.value;
                        crate::storage::set_rv(&mut last, rev);
                        return Ok(Deleted::Gone(last));
                    }
                    WriteOutcome::Mismatch(None) => {
                        return Err(Error::not_found(r.group_resource(), name))
                    }
                    _ => continue,
                }
            }
            if already && old_grace.is_some_and(|g| g <= grace) && fins == finalizers(cur) {
                return Ok(Deleted::Pending(current.value));
            }
            let mut next = current.value.clone();
            {
                let m = meta_mut(&mut next);
                if !already || old_grace.is_some_and(|g| grace < g) {
                    m.insert("deletionTimestamp".into(), deletion_time(grace));
                }
                if !already {
                    bump_generation(m);
                }
                m.insert("deletionGracePeriodSeconds".into(), json!(grace));
                if fins.is_empty() {
                    m.remove("finalizers");
                } else {
                    m.insert("finalizers".into(), json!(fins));
                }
            }
            r.strategy.prepare_delete(&mut next);
            if opts.dry_run {
                return Ok(Deleted::Pending(next));
            }
            let encoded = super::encode_for(r, &next).await?;
            match self
                .etcd
                .update_encoded(&key, encoded.bytes.clone(), current.rv, &[])
                .await?
            {
                WriteOutcome::Done(rev) => {
                    super::written_as(r, &mut next, encoded, rev).await?;
                    return Ok(Deleted::Pending(next));
                }
                WriteOutcome::Mismatch(None) => {
                    return Err(Error::not_found(r.group_resource(), name))
                }
                _ => continue,
            }
        }
    }

    /// Deletes every object matching the selectors in a namespace (or everywhere).
    pub async fn delete_collection(
        &self,
        r: &Resource,
        ns: Option<&str>,
        list: &ListOpts,
        opts: &DeleteOpts,
    ) -> Result<Vec<Value>> {
        let all = ListOpts {
            limit: 0,
            continue_token: None,
            ..list.clone()
        };
        let items = self.list(r, ns, &all).await?.items;
        let mut out = Vec::new();
        for item in items {
            let ins = (!item.namespace.is_empty()).then_some(item.namespace.as_str());
            match self.delete(r, ins.or(ns), &item.name, opts).await {
                Ok(Deleted::Gone(v)) | Ok(Deleted::Pending(v)) => out.push(v),
                Err(e) if e.code() == 404 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// The resources and cached objects that name `owner` among their owners.
    fn dependents(&self, owner: &Value) -> Vec<(Resource, Vec<(String, String)>)> {
        let uid = meta_str(owner, "uid");
        if uid.is_empty() {
            return Vec::new();
        }
        self.resources()
            .into_iter()
            .filter_map(|r| {
                let (items, _) = self.cache(&r).list(&r.prefix(self.etcd.prefix()), |o| {
                    o.owners.iter().any(|u| u == uid)
                });
                let names: Vec<(String, String)> = items
                    .iter()
                    .map(|c| (c.namespace.clone(), c.name.clone()))
                    .collect();
                (!names.is_empty()).then_some((r, names))
            })
            .collect()
    }

    /// Whether any object names `owner` among its owners.
    fn has_dependents(&self, owner: &Value) -> bool {
        !self.dependents(owner).is_empty()
    }

    /// Removes the owner reference to `owner` from every object that has it. Each dependent
    /// is changed from its stored state and written only if unchanged since (retrying
    /// otherwise), so an owner added or removed meanwhile by someone else is kept.
    async fn orphan_dependents(&self, owner: &Value) -> Result<()> {
        let uid = meta_str(owner, "uid").to_string();
        for (r, names) in self.dependents(owner) {
            for (ns, name) in names {
                let ns = (!ns.is_empty()).then_some(ns.as_str());
                let res = self
                    .guaranteed_update(&r, ns, &name, false, &|obj| {
                        remove_owner(obj, &uid);
                        Ok(())
                    })
                    .await;
                match res {
                    Ok(_) => {}
                    Err(e) if e.code() == 404 => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }
}

/// Drops the owner reference with `uid` (and the list, if it was the last).
fn remove_owner(obj: &mut Value, uid: &str) {
    let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    if let Some(refs) = m.get_mut("ownerReferences").and_then(Value::as_array_mut) {
        refs.retain(|o| o.get("uid").and_then(Value::as_str) != Some(uid));
        if refs.is_empty() {
            m.remove("ownerReferences");
        }
    }
}

/// A deletion starting changes what an object's controllers may do, so, as Kubernetes does,
/// it counts as a new generation of an object that has one (a pod's graceful deletion, a
/// Deployment held by a finalizer).
fn bump_generation(m: &mut serde_json::Map<String, Value>) {
    if let Some(g) = m
        .get("generation")
        .and_then(Value::as_i64)
        .filter(|g| *g > 0)
    {
        m.insert("generation".into(), json!(g + 1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_named_owner_goes() {
        let mut obj = json!({"metadata": {"ownerReferences": [{"uid": "a"}, {"uid": "b"}]}});
        remove_owner(&mut obj, "a");
        assert_eq!(obj["metadata"]["ownerReferences"], json!([{"uid": "b"}]));
        remove_owner(&mut obj, "b");
        assert!(obj["metadata"].get("ownerReferences").is_none());
    }
}
