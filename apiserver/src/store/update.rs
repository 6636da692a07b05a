//! Update and patch: the object as the request makes it, written if its resourceVersion is
//! still the one read ("mod revision unchanged → put"), retried when a concurrent write came
//! first and the request set no resourceVersion of its own.

use serde_json::{json, Value};

use super::write::{
    check_namespace_field, check_type, finalizers, meta, meta_mut, meta_str, same_object, spec_part,
};
use super::GenericStore;
use crate::admission::{Attributes, Operation, Options};
use crate::error::{Cause, Error, Result};
use crate::patch::{self, PatchType};
use crate::registry::objects::Change;
use crate::registry::{Resource, ResourceInfo};
use crate::request::{WriteOpts, Written};
use crate::storage::{Stored, WriteOutcome};

/// Metadata only the server changes: on update it always comes from the stored object.
const SYSTEM_META: &[&str] = &[
    "uid",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generation",
    "namespace",
    "generateName",
];

pub(super) fn parse_rv(s: &str) -> Result<i64> {
    s.parse::<i64>()
        .ok()
        .filter(|n| *n >= 0)
        .ok_or_else(|| Error::bad_request(format!("invalid resource version \"{s}\"")))
}

/// What a commit means for an update's loop: the write, or — when a concurrent write came
/// first — a conflict if the request pinned a resourceVersion, else another try (`None`).
fn settle(
    r: &ResourceInfo,
    name: &str,
    committed: Option<Value>,
    warnings: &mut Vec<String>,
    pinned: bool,
) -> Result<Option<Written>> {
    match committed {
        Some(object) => Ok(Some(Written {
            object,
            warnings: std::mem::take(warnings),
            created: false,
        })),
        None if pinned => Err(Error::stale(r.group_resource(), name)),
        None => Ok(None),
    }
}

/// The resourceVersion a read asks for (`None` for none or "").
pub(super) fn requested_rv(rv: Option<&str>) -> Result<Option<i64>> {
    rv.filter(|s| !s.is_empty()).map(parse_rv).transpose()
}

/// The 504 for a read at a revision the watch cache has not reached in time.
pub(super) fn too_new(rv: i64, current: i64) -> Error {
    Error::timeout(format!(
        "Too large resource version: {rv}, current: {current}"
    ))
}

impl GenericStore {
    /// Replaces an object (PUT), or its status (`sub = Some("status")`).
    pub async fn update(
        &self,
        r: &Resource,
        ns: Option<&str>,
        name: &str,
        mut obj: Value,
        sub: Option<&str>,
        opts: &WriteOpts,
    ) -> Result<Written> {
        check_type(r, &mut obj)?;
        check_namespace_field(r, ns, &mut obj)?;
        let body_name = meta_str(&obj, "name").to_string();
        if body_name.is_empty() {
            meta_mut(&mut obj).insert("name".into(), json!(name));
        } else if body_name != name {
            return Err(Error::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let precondition = match meta_str(&obj, "resourceVersion") {
            "" => None,
            s => Some(
                parse_rv(s)
                    .map_err(|_| Error::bad_request(format!("invalid resourceVersion \"{s}\"")))?,
            ),
        };
        let key = self.key(r, ns, name);
        let mut warnings = Vec::new();
        loop {
            let current = match self.read(r, &key).await? {
                Some(c) => c,
                None if sub.is_none() && r.strategy.allow_create_on_update() => {
                    return self.create(r, ns, obj, opts).await;
                }
                None => return Err(Error::not_found(r.group_resource(), name)),
            };
            if precondition.is_some_and(|p| p != current.rv) {
                return Err(Error::stale(r.group_resource(), name));
            }
            warnings.clear();
            let next = self
                .prepare_update(
                    r,
                    obj.clone(),
                    &current.value,
                    sub,
                    opts,
                    false,
                    false,
                    &mut warnings,
                )
                .await?;
            let committed = self
                .commit_update(r, &key, name, current, next, opts)
                .await?;
            if let Some(w) = settle(r, name, committed, &mut warnings, precondition.is_some())? {
                return Ok(w);
            }
        }
    }

    /// Patches an object or its status.
    #[allow(clippy::too_many_arguments)]
    pub async fn patch(
        &self,
        r: &Resource,
        ns: Option<&str>,
        name: &str,
        ptype: PatchType,
        body: &Value,
        sub: Option<&str>,
        opts: &WriteOpts,
    ) -> Result<Written> {
        let key = self.key(r, ns, name);
        let mut warnings = Vec::new();
        loop {
            let current = match self.read(r, &key).await? {
                Some(c) => c,
                None if ptype == PatchType::Apply && sub.is_none() => {
                    return self.create_as(r, ns, body.clone(), opts, true).await;
                }
                None => return Err(Error::not_found(r.group_resource(), name)),
            };
            let mut doc = current.value.clone();
            match ptype {
                PatchType::Apply => {
                    crate::apply::apply(&mut doc, body, opts, r.strategy.list_types())?
                }
                other => patch::apply_patch(&mut doc, other, body)?,
            }
            // A patch that sets resourceVersion makes it a precondition.
            let patched_rv = meta_str(&doc, "resourceVersion");
            if !patched_rv.is_empty() && patched_rv != current.rv.to_string() {
                return Err(Error::stale(r.group_resource(), name));
            }
            let precondition = body.pointer("/metadata/resourceVersion").is_some();
            if meta_str(&doc, "name") != name {
                return Err(Error::bad_request(format!(
                    "the name of the object ({}) does not match the name on the URL ({name})",
                    meta_str(&doc, "name")
                )));
            }
            check_type(r, &mut doc)?;
            warnings.clear();
            let next = self
                .prepare_update(
                    r,
                    doc,
                    &current.value,
                    sub,
                    opts,
                    ptype == PatchType::Apply,
                    true,
                    &mut warnings,
                )
                .await?;
            let committed = self
                .commit_update(r, &key, name, current, next, opts)
                .await?;
            if let Some(w) = settle(r, name, committed, &mut warnings, precondition)? {
                return Ok(w);
            }
        }
    }

    /// Builds the object an update will store, from the request's object and the stored one.
    /// `sub = Some("status")` (or another subresource that writes the status) keeps everything
    /// but the status (and labels and annotations);
    /// any other write keeps the stored status when the type has a status subresource.
    #[allow(clippy::too_many_arguments)]
    async fn prepare_update(
        &self,
        r: &ResourceInfo,
        mut obj: Value,
        old: &Value,
        sub: Option<&str>,
        opts: &WriteOpts,
        applied: bool,
        patched: bool,
        warnings: &mut Vec<String>,
    ) -> Result<Value> {
        // `status`, and subresources that write the status as it does (a CSR's `approval`).
        let status_like = sub.is_some_and(|s| r.subresource(s).is_some_and(|h| h.writes_status()));
        // Subresources that write one part of the spec (a pod's ephemeral containers).
        let part = sub
            .and_then(|s| r.subresource(s))
            .and_then(|h| h.prepare_update(&obj, old));
        let part_like = part.is_some();
        if let Some(next) = part {
            obj = next;
        } else if status_like {
            let mut next = old.clone();
            next["status"] = obj.get("status").cloned().unwrap_or(Value::Null);
            if next["status"].is_null() {
                next.as_object_mut().map(|o| o.remove("status"));
            }
            for f in ["labels", "annotations"] {
                match meta(&obj).and_then(|m| m.get(f)) {
                    Some(v) => {
                        meta_mut(&mut next).insert(f.into(), v.clone());
                    }
                    None => {
                        meta_mut(&mut next).remove(f);
                    }
                }
            }
            obj = next;
        } else if r.strategy.has_status() {
            match old.get("status") {
                Some(s) => obj["status"] = s.clone(),
                None => {
                    obj.as_object_mut().map(|o| o.remove("status"));
                }
            }
        }
        let old_meta = meta(old).cloned().unwrap_or_default();
        let m = meta_mut(&mut obj);
        for f in SYSTEM_META {
            match old_meta.get(*f) {
                Some(v) => {
                    m.insert(f.to_string(), v.clone());
                }
                None => {
                    m.remove(*f);
                }
            }
        }
        m.remove("selfLink");
        if !m.contains_key("managedFields") {
            if let Some(mf) = old_meta.get("managedFields") {
                m.insert("managedFields".into(), mf.clone());
            }
        }
        if old_meta.contains_key("deletionTimestamp") {
            // A deleting object may lose finalizers but gain none.
            let old_f = finalizers(old);
            let added: Vec<String> = finalizers(&obj)
                .into_iter()
                .filter(|f| !old_f.contains(f))
                .collect();
            if !added.is_empty() {
                return Err(Error::invalid(
                    &r.kind,
                    &r.group,
                    meta_str(old, "name"),
                    vec![Cause::forbidden("metadata.finalizers", format!("no new finalizers can be added if the object is being deleted, found new finalizers {added:?}"))],
                ));
            }
        }
        if !status_like && !part_like {
            r.strategy.prepare_update(&mut obj, old);
        }
        let name = meta_str(old, "name").to_string();
        let attrs = Attributes {
            operation: Operation::Update,
            resource: r,
            subresource: sub.unwrap_or(""),
            namespace: meta_str(old, "namespace"),
            name: &name,
            old: Some(old),
            user: &opts.user,
            dry_run: opts.dry_run,
            options: if patched {
                Options::Patch(opts)
            } else {
                Options::Update(opts)
            },
            reinvocation: None,
        };
        let mut next = self.admit(r, obj, &attrs, opts, warnings).await?;
        opts.notes.move_warnings_into(warnings);
        if !applied {
            crate::apply::record_update(
                &mut next,
                Some(old),
                opts.manager(),
                sub.unwrap_or(""),
                r.strategy.list_types(),
            );
        }
        if r.has_generation {
            let gen = old
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            let gen = if spec_part(&next) != spec_part(old) {
                gen + 1
            } else {
                gen
            };
            meta_mut(&mut next).insert("generation".into(), json!(gen));
        }
        Ok(next)
    }

    /// Writes a prepared update: nothing if nothing changed, a delete if the last finalizer of
    /// a deleting object went. `None` on a lost race.
    async fn commit_update(
        &self,
        r: &ResourceInfo,
        key: &str,
        name: &str,
        current: Stored,
        mut next: Value,
        opts: &WriteOpts,
    ) -> Result<Option<Value>> {
        let effects = r
            .strategy
            .allocate(&self.etcd, &mut next, Some(&current.value))
            .await?;
        // A stale value (read with a provider or key other than the one writes use) is
        // rewritten even unchanged: that is how replacing every object re-encrypts them.
        if same_object(&next, &current.value) && !current.stale {
            return Ok(Some(current.value));
        }
        if opts.dry_run {
            return Ok(Some(next));
        }
        let deleting = meta(&next).is_some_and(|m| m.contains_key("deletionTimestamp"));
        let grace = next
            .pointer("/metadata/deletionGracePeriodSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        if deleting
            && finalizers(&next).is_empty()
            && !r.strategy.deletion_held(&next)
            && grace == 0
        {
            let effects = r.strategy.release(&self.etcd, &current.value);
            return match self.etcd.delete(key, current.rv, &effects).await? {
                WriteOutcome::Done(rev) => {
                    crate::storage::set_rv(&mut next, rev);
                    Ok(Some(next))
                }
                _ => Ok(None),
            };
        }
        let encoded = super::encode_for(r, &next).await?;
        match self
            .etcd
            .update_encoded(key, encoded.bytes.clone(), current.rv, &effects)
            .await?
        {
            WriteOutcome::Done(rev) => {
                self.hint(r, key, encoded.stored(&next), &encoded.bytes, rev);
                super::written_as(r, &mut next, encoded, rev).await?;
                Ok(Some(next))
            }
            WriteOutcome::Mismatch(None) => Err(Error::not_found(r.group_resource(), name)),
            WriteOutcome::Mismatch(Some(_)) | WriteOutcome::ClaimTaken => Ok(None),
        }
    }

    /// Applies `change` to the stored object and writes it back, retrying when the object
    /// changed meanwhile. The first attempt starts from the watch cache (one etcd round trip
    /// instead of two: the transaction checks the revision); a stale copy fails that check and
    /// the next attempt reads etcd. No admission or validation runs: the caller's own rules
    /// stand for them.
    pub async fn guaranteed_update(
        &self,
        r: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
        dry_run: bool,
        change: Change<'_>,
    ) -> Result<Value> {
        let key = self.key(r, ns, name);
        let mut from_cache = self.cache(r).get(&key);
        loop {
            let (mut obj, rv) = match from_cache.take() {
                Some(c) => {
                    let mut v: Value = serde_json::from_slice(&c.json)
                        .map_err(|e| Error::internal(format!("decoding a cached object: {e}")))?;
                    super::in_version(r, &mut v).await?;
                    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
                        m.remove("resourceVersion");
                    }
                    (v, c.rv)
                }
                None => {
                    let current = self
                        .read(r, &key)
                        .await?
                        .ok_or_else(|| Error::not_found(r.group_resource(), name))?;
                    (current.value, current.rv)
                }
            };
            let before = obj.clone();
            change(&mut obj)?;
            if dry_run || same_object(&obj, &before) {
                crate::storage::set_rv(&mut obj, rv);
                return Ok(obj);
            }
            let encoded = super::encode_for(r, &obj).await?;
            match self
                .etcd
                .update_encoded(&key, encoded.bytes.clone(), rv, &[])
                .await?
            {
                WriteOutcome::Done(rev) => {
                    self.hint(r, &key, encoded.stored(&obj), &encoded.bytes, rev);
                    super::written_as(r, &mut obj, encoded, rev).await?;
                    return Ok(obj);
                }
                WriteOutcome::Mismatch(None) => {
                    return Err(Error::not_found(r.group_resource(), name))
                }
                _ => continue,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_versions_are_non_negative_integers() {
        assert_eq!(parse_rv("42").unwrap(), 42);
        assert_eq!(parse_rv("-1").unwrap_err().code(), 400);
        assert_eq!(parse_rv("x").unwrap_err().code(), 400);
    }

    #[test]
    fn spec_changes_only_count_outside_metadata_and_status() {
        let a = json!({"metadata": {"labels": {"a": "1"}}, "spec": {"x": 1}, "status": {"y": 1}});
        let b = json!({"metadata": {"labels": {"a": "2"}}, "spec": {"x": 1}, "status": {"y": 2}});
        assert_eq!(spec_part(&a), spec_part(&b));
    }
}
