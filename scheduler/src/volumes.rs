//! The storage objects the scheduler reads (PersistentVolumes, claims, StorageClasses,
//! CSINodes, CSIDrivers, CSIStorageCapacities), kept beside the nodes in the snapshot, and
//! the *assumed* changes of pods being bound: a volume promised to a claim and a claim given
//! a node stay promised in the cache from Reserve until the API server's copy catches up (or
//! the bind fails), so that the next pod never gets the same volume, as kube-scheduler's
//! assume cache does.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::{CSIDriver, CSINode, CSIStorageCapacity, StorageClass};
use k8s_openapi::Metadata;

/// The annotation naming the node the scheduler chose for a `WaitForFirstConsumer` claim.
pub const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
/// Set on a claim once the PV controller has completed its binding.
pub const BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";
/// Set on a volume whose claimRef a controller (here: the scheduler) wrote.
pub const BOUND_BY_CONTROLLER: &str = "pv.kubernetes.io/bound-by-controller";
/// The provisioner of classes that provision nothing.
pub const NO_PROVISIONER: &str = "kubernetes.io/no-provisioner";

/// `namespace/name`.
pub fn key(ns: &str, name: &str) -> String {
    format!("{ns}/{name}")
}

fn meta_key<K: Metadata<Ty = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>>(
    o: &K,
) -> String {
    let m = o.metadata();
    match m.namespace.as_deref() {
        Some(ns) => key(ns, m.name.as_deref().unwrap_or("")),
        None => m.name.clone().unwrap_or_default(),
    }
}

/// The names of the claims a pod's volumes use, in its namespace: `persistentVolumeClaim`
/// volumes and, for generic ephemeral volumes, the claim `POD-VOLUME` made for each.
pub fn pod_claims(pod: &Pod) -> Vec<String> {
    let pod_name = pod.metadata.name.as_deref().unwrap_or("");
    pod.spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|v| {
            if let Some(c) = v.persistent_volume_claim.as_ref() {
                Some(c.claim_name.clone())
            } else if v.ephemeral.is_some() {
                Some(format!("{pod_name}-{}", v.name))
            } else {
                None
            }
        })
        .collect()
}

/// Whether the pod uses any claim (the cheap test that keeps volume-less pods off every
/// volume plugin's path).
pub fn uses_claims(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .is_some_and(|vs| {
            vs.iter()
                .any(|v| v.persistent_volume_claim.is_some() || v.ephemeral.is_some())
        })
}

/// Whether a claim's binding is complete (`volumeName` set and the PV controller's
/// `bind-completed` annotation), as kube-scheduler's `isPVCFullyBound` asks.
pub fn fully_bound(pvc: &PersistentVolumeClaim) -> bool {
    pvc.spec
        .as_ref()
        .and_then(|s| s.volume_name.as_deref())
        .is_some_and(|v| !v.is_empty())
        && pvc
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(BIND_COMPLETED))
}

/// The node a claim was given, if any.
pub fn selected_node(pvc: &PersistentVolumeClaim) -> Option<&str> {
    pvc.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(SELECTED_NODE))
        .map(String::as_str)
}

/// The storage objects, by key, with the assumed changes laid over them.
#[derive(Debug, Default, Clone)]
pub struct VolumeCache {
    volumes: HashMap<String, Arc<PersistentVolume>>,
    claims: HashMap<String, Arc<PersistentVolumeClaim>>,
    /// Volume name → the volume with the claimRef a pod being bound promised it.
    assumed_volumes: HashMap<String, Arc<PersistentVolume>>,
    /// Claim key → the claim with the node a pod being bound gave it.
    assumed_claims: HashMap<String, Arc<PersistentVolumeClaim>>,
    /// StorageClasses by name.
    pub classes: HashMap<String, Arc<StorageClass>>,
    /// CSINodes by (node) name.
    pub csi_nodes: HashMap<String, Arc<CSINode>>,
    /// CSIDrivers by name.
    pub csi_drivers: HashMap<String, Arc<CSIDriver>>,
    /// CSIStorageCapacities by `namespace/name`.
    pub capacities: HashMap<String, Arc<CSIStorageCapacity>>,
}

/// A storage object the cache keeps.
pub trait Cached: Sized {
    /// Puts `obj` in (or replaces it).
    fn apply(cache: &mut VolumeCache, obj: Arc<Self>);
    /// Takes `obj` out.
    fn delete(cache: &mut VolumeCache, obj: &Self);
    /// Replaces every object of the kind with `all` (after a re-list); assumptions stand
    /// until the objects they were made on change.
    fn reset(cache: &mut VolumeCache, all: Vec<Arc<Self>>) {
        Self::take_all(cache);
        for o in all {
            Self::apply(cache, o);
        }
    }
    /// Every object of the kind, taken out of the cache's maps.
    fn take_all(cache: &mut VolumeCache) -> Vec<Arc<Self>>;
}

fn rv<K: Metadata<Ty = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>>(
    o: &K,
) -> Option<&str> {
    o.metadata().resource_version.as_deref()
}

impl Cached for PersistentVolume {
    fn apply(c: &mut VolumeCache, obj: Arc<Self>) {
        let k = meta_key(&*obj);
        // The API server's copy moved on from the one the assumption was made on.
        if c.assumed_volumes
            .get(&k)
            .is_some_and(|a| rv(&**a) != rv(&*obj))
        {
            c.assumed_volumes.remove(&k);
        }
        c.volumes.insert(k, obj);
    }
    fn delete(c: &mut VolumeCache, obj: &Self) {
        let k = meta_key(obj);
        c.volumes.remove(&k);
        c.assumed_volumes.remove(&k);
    }
    fn take_all(c: &mut VolumeCache) -> Vec<Arc<Self>> {
        c.volumes.drain().map(|(_, v)| v).collect()
    }
}

impl Cached for PersistentVolumeClaim {
    fn apply(c: &mut VolumeCache, obj: Arc<Self>) {
        let k = meta_key(&*obj);
        if c.assumed_claims
            .get(&k)
            .is_some_and(|a| rv(&**a) != rv(&*obj))
        {
            c.assumed_claims.remove(&k);
        }
        c.claims.insert(k, obj);
    }
    fn delete(c: &mut VolumeCache, obj: &Self) {
        let k = meta_key(obj);
        c.claims.remove(&k);
        c.assumed_claims.remove(&k);
    }
    fn take_all(c: &mut VolumeCache) -> Vec<Arc<Self>> {
        c.claims.drain().map(|(_, v)| v).collect()
    }
}

macro_rules! plain {
    ($ty:ty, $field:ident) => {
        impl Cached for $ty {
            fn apply(c: &mut VolumeCache, obj: Arc<Self>) {
                c.$field.insert(meta_key(&*obj), obj);
            }
            fn delete(c: &mut VolumeCache, obj: &Self) {
                c.$field.remove(&meta_key(obj));
            }
            fn take_all(c: &mut VolumeCache) -> Vec<Arc<Self>> {
                c.$field.drain().map(|(_, v)| v).collect()
            }
        }
    };
}

plain!(StorageClass, classes);
plain!(CSINode, csi_nodes);
plain!(CSIDriver, csi_drivers);
plain!(CSIStorageCapacity, capacities);

impl VolumeCache {
    /// A cache holding these objects (for tests and tools).
    pub fn with<K: Cached>(mut self, objs: impl IntoIterator<Item = K>) -> Self {
        for o in objs {
            K::apply(&mut self, Arc::new(o));
        }
        self
    }

    /// A volume by name, as assumed.
    pub fn volume(&self, name: &str) -> Option<&Arc<PersistentVolume>> {
        self.assumed_volumes
            .get(name)
            .or_else(|| self.volumes.get(name))
    }

    /// Every volume, as assumed.
    pub fn volumes(&self) -> impl Iterator<Item = &PersistentVolume> {
        self.volumes
            .iter()
            .map(|(k, v)| self.assumed_volumes.get(k).unwrap_or(v).as_ref())
    }

    /// A claim by namespace and name, as assumed.
    pub fn claim(&self, ns: &str, name: &str) -> Option<&Arc<PersistentVolumeClaim>> {
        let k = key(ns, name);
        self.assumed_claims.get(&k).or_else(|| self.claims.get(&k))
    }

    /// The class a claim names, if it exists.
    pub fn class_of(&self, pvc: &PersistentVolumeClaim) -> Option<&Arc<StorageClass>> {
        let name = skiff_rules::volume::claim_class(pvc);
        (!name.is_empty()).then(|| self.classes.get(name)).flatten()
    }

    /// Whether the claim's class binds only once a pod uses it (`WaitForFirstConsumer`).
    pub fn delays_binding(&self, pvc: &PersistentVolumeClaim) -> bool {
        self.class_of(pvc)
            .and_then(|c| c.volume_binding_mode.as_deref())
            == Some("WaitForFirstConsumer")
    }

    /// Promises `pv` (already carrying the claimRef) until the API server's copy changes.
    pub fn assume_volume(&mut self, pv: PersistentVolume) {
        self.assumed_volumes.insert(meta_key(&pv), Arc::new(pv));
    }

    /// Gives `pvc` (already carrying the annotation) a node until the API server's copy
    /// changes.
    pub fn assume_claim(&mut self, pvc: PersistentVolumeClaim) {
        self.assumed_claims.insert(meta_key(&pvc), Arc::new(pvc));
    }

    /// Forgets what was assumed of these volumes and claims (Unreserve).
    pub fn forget(&mut self, volumes: &[String], claims: &[String]) {
        for v in volumes {
            self.assumed_volumes.remove(v);
        }
        for c in claims {
            self.assumed_claims.remove(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pv(rv: &str) -> PersistentVolume {
        serde_json::from_value(json!({"metadata": {"name": "v", "resourceVersion": rv}})).unwrap()
    }

    #[test]
    fn an_assumption_lasts_until_the_server_copy_changes() {
        let mut c = VolumeCache::default().with([pv("1")]);
        let mut promised = pv("1");
        promised.metadata.labels = Some([("promised".into(), "yes".into())].into());
        c.assume_volume(promised);
        assert!(c.volume("v").unwrap().metadata.labels.is_some());
        // The same version again (a re-list) keeps it.
        PersistentVolume::apply(&mut c, Arc::new(pv("1")));
        assert!(c.volume("v").unwrap().metadata.labels.is_some());
        PersistentVolume::apply(&mut c, Arc::new(pv("2")));
        assert!(c.volume("v").unwrap().metadata.labels.is_none());
        c.assume_volume(pv("2"));
        c.forget(&["v".into()], &[]);
        assert_eq!(c.volumes().count(), 1);
    }

    #[test]
    fn ephemeral_volumes_name_their_claims_after_the_pod() {
        let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {
            "containers": [],
            "volumes": [{"name": "a", "persistentVolumeClaim": {"claimName": "data"}},
                        {"name": "s", "ephemeral": {"volumeClaimTemplate": {"spec": {}}}},
                        {"name": "e", "emptyDir": {}}]}}))
        .unwrap();
        assert_eq!(pod_claims(&pod), vec!["data", "p-s"]);
        assert!(uses_claims(&pod));
    }
}
