//! ControllerRevisions: the history StatefulSets and DaemonSets keep of their pod templates,
//! as Kubernetes keeps it. Each revision holds the patch that puts its template back
//! (`{"spec":{"template":{…,"$patch":"replace"}}}`, what `kubectl rollout undo` applies), is
//! named `OWNER-HASH`, carries the template's labels plus `controller-revision-hash`, and is
//! numbered in the order it was last current. A template that comes back (a rollback) reuses
//! its old revision under a new number; the oldest revisions no pod uses go beyond
//! `revisionHistoryLimit`.
//!
//! Hash collisions are handled as Kubernetes' `controller_history` handles them: revisions are
//! compared by what they hold, never by their hash, and when the name `OWNER-HASH` is taken by
//! a revision holding something else the collision count grows and the next name is tried.
//! The count a revision was made with is given back, for the owner's `status.collisionCount`
//! (it is part of every later hash, so names stay unique).

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
    /// Every name tried (up to [`MAX_COLLISIONS`] counts on) is taken by another template.
    #[error("controller revision {0} exists with another template")]
    Collision(String),
}

/// How many successive collision counts one [`record`] tries before giving up.
pub const MAX_COLLISIONS: i32 = 10;

/// A revision made or found by [`record`], with the collision count its name was made with.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The revision that holds the template, now the newest.
    pub revision: ControllerRevision,
    /// The owner's collision count after recording: more than it was when a name was taken.
    pub collision_count: Option<i32>,
}

/// The newest of `revisions` (sorted as [`owned`] sorts them) holding `template`, compared by
/// content as Kubernetes' `FindEqualRevisions` does: a hash says nothing of equality.
pub fn find_equal<'a>(
    revisions: &'a [Arc<ControllerRevision>],
    template: &PodTemplateSpec,
) -> Option<&'a Arc<ControllerRevision>> {
    revisions
        .iter()
        .rev()
        .find(|r| template_of(r).is_some_and(|t| deployment::same_template(&t, template)))
}

/// Whether a revision found under the name `record` wanted is the one it would have made:
/// controlled by `owner_uid` and holding `template`. Anything else is a collision.
pub fn is_ours(
    there: &ControllerRevision,
    owner_uid: Option<&str>,
    template: &PodTemplateSpec,
) -> bool {
    let ours =
        owners::controller_of(&there.metadata).is_some_and(|r| Some(r.uid.as_str()) == owner_uid);
    ours && template_of(there).is_some_and(|t| deployment::same_template(&t, template))
}

/// The collision count after a name clash: one more, from none.
pub fn bumped(collision_count: Option<i32>) -> Option<i32> {
    Some(collision_count.unwrap_or(0).saturating_add(1))
}

/// The revision `owner` would make of `template` as revision number `number`.
pub fn revision_for<O: Object>(
    owner: &O,
    template: &PodTemplateSpec,
    collision_count: Option<i32>,
    number: i64,
) -> ControllerRevision {
    let m = owner.metadata();
    let h = hash(template, collision_count);
    let labels = template.metadata.as_ref().and_then(|t| t.labels.as_ref());
    ControllerRevision {
        metadata: ObjectMeta {
            name: Some(format!("{}-{h}", m.name.as_deref().unwrap_or_default())),
            namespace: m.namespace.clone(),
            labels: Some(owners::with_label(labels, HASH_LABEL, &h)),
            owner_references: Some(vec![owners::controller_ref(owner)]),
            ..Default::default()
        },
        data: Some(RawExtension(data_of(template))),
        revision: number,
    }
}

/// Makes sure a revision of `template` exists for `owner` and is the newest one; returns it
/// with the collision count to keep in the owner's status. `revisions` are the owner's
/// revisions as [`owned`] lists them.
pub async fn record<O: Object>(
    client: &Client,
    owner: &O,
    revisions: &[Arc<ControllerRevision>],
    template: &PodTemplateSpec,
    collision_count: Option<i32>,
) -> Result<Recorded, Error> {
    let m = owner.metadata();
    let ns = m.namespace.clone().unwrap_or_default();
    let api: Api<ControllerRevision> = Api::namespaced(client.clone(), &ns);
    let newest = revisions.iter().map(|r| r.revision).max().unwrap_or(0);
    if let Some(r) = find_equal(revisions, template) {
        if r.revision == newest {
            return Ok(Recorded {
                revision: r.as_ref().clone(),
                collision_count,
            });
        }
        // A template that comes back becomes the newest revision again.
        let body = json!({"revision": newest + 1});
        let name = r.metadata.name.clone().unwrap_or_default();
        let revision = api
            .patch(&name, &PatchParams::default(), &Patch::Merge(body))
            .await?;
        return Ok(Recorded {
            revision,
            collision_count,
        });
    }
    create_unique(
        &ApiWriter(api),
        owner,
        template,
        collision_count,
        newest + 1,
    )
    .await
}

/// What creating a revision came to.
enum Made {
    /// Created as asked.
    Created(ControllerRevision),
    /// The name was taken: the revision there.
    Taken(ControllerRevision),
}

/// Where revisions are created: the API server, or a fake in tests.
trait Writer {
    async fn create(&self, rev: &ControllerRevision) -> Result<Made, skiff_client::Error>;
}

struct ApiWriter(Api<ControllerRevision>);

impl Writer for ApiWriter {
    async fn create(&self, rev: &ControllerRevision) -> Result<Made, skiff_client::Error> {
        match self.0.create(&PostParams::default(), rev).await {
            Ok(r) => Ok(Made::Created(r)),
            Err(e) if e.is_already_exists() => {
                let name = rev.metadata.name.as_deref().unwrap_or_default();
                Ok(Made::Taken(self.0.get(name).await?))
            }
            Err(e) => Err(e),
        }
    }
}

/// Creates the revision of `template` under the first free name, as Kubernetes'
/// `CreateControllerRevision` does: a name taken by this owner's revision of this template
/// (made by an earlier sync the cache has not shown yet) is that revision; taken by anything
/// else, it is a collision, and the count grows.
async fn create_unique<O: Object>(
    writer: &impl Writer,
    owner: &O,
    template: &PodTemplateSpec,
    collision_count: Option<i32>,
    number: i64,
) -> Result<Recorded, Error> {
    let uid = owner.metadata().uid.clone();
    let mut count = collision_count;
    let mut name = String::new();
    for _ in 0..MAX_COLLISIONS {
        let rev = revision_for(owner, template, count, number);
        name = rev.metadata.name.clone().unwrap_or_default();
        match writer.create(&rev).await? {
            Made::Created(revision) => {
                return Ok(Recorded {
                    revision,
                    collision_count: count,
                })
            }
            Made::Taken(there) if is_ours(&there, uid.as_deref(), template) => {
                return Ok(Recorded {
                    revision: there,
                    collision_count: count,
                })
            }
            Made::Taken(_) => {
                tracing::info!(
                    revision = %name,
                    "controller revision name taken by another template; bumping the collision count"
                );
                count = bumped(count);
            }
        }
    }
    Err(Error::Collision(name))
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

    fn template(image: &str) -> PodTemplateSpec {
        serde_json::from_value(json!({
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": image}]}}))
        .unwrap()
    }

    fn owner() -> k8s_openapi::api::apps::v1::StatefulSet {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "ns", "uid": "set-1"}}))
        .unwrap()
    }

    /// Revisions kept in memory, as the API server keeps them, and the names asked for.
    #[derive(Default)]
    struct Fake {
        stored: parking_lot::Mutex<std::collections::BTreeMap<String, ControllerRevision>>,
        creates: parking_lot::Mutex<Vec<String>>,
    }

    impl Writer for Fake {
        async fn create(&self, rev: &ControllerRevision) -> Result<Made, skiff_client::Error> {
            let name = rev.metadata.name.clone().unwrap();
            self.creates.lock().push(name.clone());
            let mut stored = self.stored.lock();
            if let Some(there) = stored.get(&name) {
                return Ok(Made::Taken(there.clone()));
            }
            stored.insert(name, rev.clone());
            Ok(Made::Created(rev.clone()))
        }
    }

    #[tokio::test]
    async fn a_name_taken_by_another_template_bumps_the_collision_count() {
        let (set, v1, v2) = (owner(), template("busybox:v1"), template("busybox:v2"));
        let fake = Fake::default();
        // Someone else's revision holds the name v2 would get with no collisions.
        let mut squatter = revision_for(&set, &v1, None, 1);
        squatter.metadata.name = revision_for(&set, &v2, None, 1).metadata.name;
        let taken = squatter.metadata.name.clone().unwrap();
        fake.stored.lock().insert(taken.clone(), squatter);

        let r = create_unique(&fake, &set, &v2, None, 2).await.unwrap();
        assert_eq!(r.collision_count, Some(1));
        let name = r.revision.metadata.name.clone().unwrap();
        assert_eq!(name, format!("web-{}", hash(&v2, Some(1))));
        assert_eq!(
            revision_hash(&r.revision),
            Some(hash(&v2, Some(1)).as_str())
        );
        assert_eq!(template_of(&r.revision), Some(v2.clone()));
        assert_eq!(r.revision.revision, 2);
        assert_eq!(*fake.creates.lock(), [taken.clone(), name.clone()]);

        // Again (the cache not showing it yet): the revision made before is found, no bump.
        let again = create_unique(&fake, &set, &v2, Some(1), 2).await.unwrap();
        assert_eq!(again.collision_count, Some(1));
        assert_eq!(again.revision.metadata.name.as_deref(), Some(name.as_str()));

        // The same template under another owner's name is a collision too.
        let mut other = owner();
        other.metadata.uid = Some("set-2".into());
        let r = create_unique(&fake, &other, &v2, Some(1), 1).await.unwrap();
        assert_eq!(r.collision_count, Some(2));
    }

    #[tokio::test]
    async fn every_name_taken_is_an_error_not_a_loop() {
        let (set, v1, v2) = (owner(), template("busybox:v1"), template("busybox:v2"));
        let fake = Fake::default();
        for c in std::iter::once(None).chain((1..=MAX_COLLISIONS).map(Some)) {
            let mut squatter = revision_for(&set, &v1, None, 1);
            squatter.metadata.name = revision_for(&set, &v2, c, 1).metadata.name;
            fake.stored
                .lock()
                .insert(squatter.metadata.name.clone().unwrap(), squatter);
        }
        let e = create_unique(&fake, &set, &v2, None, 1).await.unwrap_err();
        assert!(matches!(e, Error::Collision(_)), "{e}");
        assert_eq!(fake.creates.lock().len(), MAX_COLLISIONS as usize);
    }

    #[test]
    fn equal_revisions_are_found_by_content_not_hash() {
        let (set, v1, v2) = (owner(), template("busybox:v1"), template("busybox:v2"));
        let r1 = Arc::new(revision_for(&set, &v1, None, 1));
        // A revision of v2 whose hash label is v1's (a collision made it so).
        let mut r2 = revision_for(&set, &v2, None, 2);
        r2.metadata.labels = r1.metadata.labels.clone();
        let r2 = Arc::new(r2);
        let r3 = Arc::new(revision_for(&set, &v1, Some(3), 3));
        let revs = vec![r1.clone(), r2.clone(), r3.clone()];
        // The newest holding v1, though another revision shares its hash.
        assert_eq!(find_equal(&revs, &v1).unwrap().revision, 3);
        assert_eq!(find_equal(&revs, &v2).unwrap().revision, 2);
        assert!(find_equal(&revs, &template("busybox:v3")).is_none());
        assert!(is_ours(&r2, Some("set-1"), &v2));
        assert!(!is_ours(&r2, Some("set-1"), &v1));
        assert!(!is_ours(&r2, Some("set-2"), &v2));
        assert_eq!(bumped(None), Some(1));
        assert_eq!(bumped(Some(4)), Some(5));
    }
}
