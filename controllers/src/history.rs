//! ControllerRevisions: the history StatefulSets and DaemonSets keep of their pod templates,
//! as Kubernetes keeps it. Each revision holds the patch that puts its template back
//! (`{"spec":{"template":{…,"$patch":"replace"}}}`, what `kubectl rollout undo` applies), is
//! named `OWNER-HASH`, carries the template's labels plus `controller-revision-hash`, and is
//! numbered in the order it was last current. A template that comes back (a rollback) reuses
//! its old revision under a new number; the oldest revisions no pod uses go beyond
//! `revisionHistoryLimit`.

use std::collections::BTreeSet;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use serde_json::{json, Value};
use skiff_client::reflector::Store;
use skiff_client::{Api, Client, DeleteParams, Object, Patch, PatchParams, PostParams};

use crate::{deployment, owners};

/// The label naming the revision (StatefulSets: its name; DaemonSets: its hash) on revisions
/// and on the pods made from them.
pub const HASH_LABEL: &str = "controller-revision-hash";

/// The patch that restores `template`: a revision's `data`.
pub fn data_of(template: &PodTemplateSpec) -> Value {
    let mut t = serde_json::to_value(template).unwrap_or_else(|_| json!({}));
    if let Some(m) = t.as_object_mut() {
        m.insert("$patch".into(), json!("replace"));
    }
    json!({"spec": {"template": t}})
}

/// The template a revision restores.
pub fn template_of(r: &ControllerRevision) -> Option<PodTemplateSpec> {
    let mut t = r.data.as_ref()?.0.pointer("/spec/template")?.clone();
    t.as_object_mut()?.remove("$patch");
    serde_json::from_value(t).ok()
}

/// The hash of a template (with the owner's collision count), as the revision's name suffix.
pub fn hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    deployment::template_hash(template, collision_count)
}

/// The revision's hash label.
pub fn revision_hash(r: &ControllerRevision) -> Option<&str> {
    r.metadata
        .labels
        .as_ref()?
        .get(HASH_LABEL)
        .map(String::as_str)
}

/// The revisions `owner` controls, oldest number first.
pub fn owned<O: Object>(
    store: &Store<ControllerRevision>,
    owner: &O,
) -> Vec<Arc<ControllerRevision>> {
    let m = owner.metadata();
    let uid = m.uid.clone().unwrap_or_default();
    let mut out: Vec<_> = store
        .by_index(owners::CONTROLLER_INDEX, &uid)
        .into_iter()
        .filter(|r| r.metadata.namespace == m.namespace)
        .collect();
    out.sort_by_key(|r| r.revision);
    out
}

/// Errors keeping history.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API refused or failed.
    #[error(transparent)]
    Api(#[from] skiff_client::Error),
    /// A revision of the same name holds another template (the owner's collision count must
    /// grow).
    #[error("controller revision {0} exists with another template")]
    Collision(String),
}

/// Makes sure a revision of `template` exists for `owner` and is the newest one; returns it.
/// `revisions` are the owner's revisions as [`owned`] lists them.
pub async fn record<O: Object>(
    client: &Client,
    owner: &O,
    revisions: &[Arc<ControllerRevision>],
    template: &PodTemplateSpec,
    collision_count: Option<i32>,
) -> Result<ControllerRevision, Error> {
    let m = owner.metadata();
    let ns = m.namespace.clone().unwrap_or_default();
    let api: Api<ControllerRevision> = Api::namespaced(client.clone(), &ns);
    let h = hash(template, collision_count);
    let newest = revisions.iter().map(|r| r.revision).max().unwrap_or(0);
    if let Some(r) = revisions
        .iter()
        .find(|r| revision_hash(r) == Some(h.as_str()))
    {
        if r.revision == newest {
            return Ok(r.as_ref().clone());
        }
        // A template that comes back becomes the newest revision again.
        let body = json!({"revision": newest + 1});
        let name = r.metadata.name.clone().unwrap_or_default();
        return Ok(api
            .patch(&name, &PatchParams::default(), &Patch::Merge(body))
            .await?);
    }
    let name = format!("{}-{h}", m.name.as_deref().unwrap_or_default());
    let labels = template.metadata.as_ref().and_then(|t| t.labels.as_ref());
    let rev = ControllerRevision {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(ns),
            labels: Some(owners::with_label(labels, HASH_LABEL, &h)),
            owner_references: Some(vec![owners::controller_ref(owner)]),
            ..Default::default()
        },
        data: Some(RawExtension(data_of(template))),
        revision: newest + 1,
    };
    match api.create(&PostParams::default(), &rev).await {
        Ok(r) => Ok(r),
        Err(e) if e.is_already_exists() => {
            // Made by an earlier sync the cache has not shown yet, or someone else's.
            let there = api.get(&name).await?;
            let ours = owners::controller_of(&there.metadata)
                .is_some_and(|r| Some(&r.uid) == m.uid.as_ref());
            let same = template_of(&there).is_some_and(|t| deployment::same_template(&t, template));
            if ours && same {
                Ok(there)
            } else {
                Err(Error::Collision(name))
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// Deletes the oldest revisions beyond `limit`, sparing those named in `keep` (the current
/// and update revisions, and those live pods were made from).
pub async fn trim(
    client: &Client,
    revisions: &[Arc<ControllerRevision>],
    keep: &BTreeSet<String>,
    limit: i32,
) -> Result<(), skiff_client::Error> {
    let limit = usize::try_from(limit.max(0)).unwrap_or(0);
    let spare: Vec<&Arc<ControllerRevision>> = revisions
        .iter()
        .filter(|r| {
            let name = r.metadata.name.as_deref().unwrap_or_default();
            !keep.contains(name) && !revision_hash(r).is_some_and(|h| keep.contains(h))
        })
        .collect();
    let excess = spare.len().saturating_sub(limit);
    for r in spare.into_iter().take(excess) {
        let api: Api<ControllerRevision> = Api::namespaced(
            client.clone(),
            r.metadata.namespace.as_deref().unwrap_or_default(),
        );
        let dp = DeleteParams {
            precondition_uid: r.metadata.uid.clone(),
            ..Default::default()
        };
        match api
            .delete(r.metadata.name.as_deref().unwrap_or_default(), &dp)
            .await
        {
            Ok(_) => {}
            Err(e) if e.is_not_found() || e.is_conflict() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_restores_the_template() {
        let t: PodTemplateSpec = serde_json::from_value(json!({
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}}))
        .unwrap();
        let d = data_of(&t);
        assert_eq!(d["spec"]["template"]["$patch"], "replace");
        let r = ControllerRevision {
            data: Some(RawExtension(d)),
            ..Default::default()
        };
        assert_eq!(template_of(&r), Some(t.clone()));
        assert_eq!(hash(&t, None), hash(&t, None));
        assert_ne!(hash(&t, None), hash(&t, Some(1)));
    }
}
