//! What [`crate::Api`] needs of a type: its identity (group, version, kind, plural, scope) and
//! its metadata.
//!
//! The identity is asked of the type through a *dynamic type*, [`Resource::DynamicType`]:
//! for a type known when the program is compiled (every k8s-openapi type, and custom
//! resources made with [`crate::custom_resource!`]) it is `()` and the answers are constants;
//! for [`crate::dynamic::DynamicObject`] it is an [`crate::dynamic::ApiResource`] made at run
//! time, which an `Api` carries along. Generic code bounded by [`Resource`] works with both.

use std::any::TypeId;
use std::fmt::Debug;
use std::hash::Hash;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::{Metadata, NamespaceResourceScope};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// A type whose identity is known when the program is compiled: every k8s-openapi type, and
/// custom resources made with [`crate::custom_resource!`] (or by implementing
/// `k8s_openapi::Resource` and `k8s_openapi::Metadata` by hand). Every `Object` is a
/// [`Resource`] whose dynamic type is `()`.
pub trait Object:
    k8s_openapi::Resource
    + Metadata<Ty = ObjectMeta>
    + Serialize
    + DeserializeOwned
    + Clone
    + Send
    + Sync
    + 'static
{
}

impl<K> Object for K where
    K: k8s_openapi::Resource
        + Metadata<Ty = ObjectMeta>
        + Serialize
        + DeserializeOwned
        + Clone
        + Send
        + Sync
        + 'static
{
}

/// What every object type used with [`crate::Api`], watchers, caches and controllers
/// provides: its identity, asked through its [`Resource::DynamicType`], its metadata, and
/// its JSON encoding.
pub trait Resource: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {
    /// What identifies the resource at run time: `()` when the type alone does,
    /// [`crate::dynamic::ApiResource`] for [`crate::dynamic::DynamicObject`].
    type DynamicType: Clone + Debug + Eq + Hash + Send + Sync + 'static;

    /// The API group: `""` for the core group, `apps`, `example.skiff.dev` ...
    fn group(dt: &Self::DynamicType) -> &str;
    /// The version within the group: `v1`, `v1beta1` ...
    fn version(dt: &Self::DynamicType) -> &str;
    /// `group/version`, or just the version for the core group: the object's `apiVersion`.
    fn api_version(dt: &Self::DynamicType) -> &str;
    /// The object's `kind`: `ConfigMap`, `Widget` ...
    fn kind(dt: &Self::DynamicType) -> &str;
    /// The resource: the lower-case plural the API addresses it by (`configmaps`).
    fn plural(dt: &Self::DynamicType) -> &str;
    /// Whether objects live in namespaces (else they are cluster-scoped).
    fn namespaced(dt: &Self::DynamicType) -> bool;

    /// The object's metadata.
    fn meta(&self) -> &ObjectMeta;
    /// The object's metadata, to change.
    fn meta_mut(&mut self) -> &mut ObjectMeta;

    /// A reference to this object (an event's `involvedObject`, say).
    fn object_ref(&self, dt: &Self::DynamicType) -> ObjectReference {
        let m = self.meta();
        ObjectReference {
            api_version: Some(Self::api_version(dt).to_string()),
            kind: Some(Self::kind(dt).to_string()),
            name: m.name.clone(),
            namespace: m.namespace.clone(),
            uid: m.uid.clone(),
            resource_version: m.resource_version.clone(),
            field_path: None,
        }
    }

    /// An owner reference naming this object as the controller of another (`controller` and
    /// `blockOwnerDeletion` set), as an operator puts on what it creates so that deleting
    /// this object deletes them too. `None` until the object has a name and a uid (it has
    /// been read from the server).
    fn controller_owner_ref(&self, dt: &Self::DynamicType) -> Option<OwnerReference> {
        let m = self.meta();
        Some(OwnerReference {
            api_version: Self::api_version(dt).to_string(),
            kind: Self::kind(dt).to_string(),
            name: m.name.clone()?,
            uid: m.uid.clone()?,
            controller: Some(true),
            block_owner_deletion: Some(true),
        })
    }
}

impl<K: Object> Resource for K {
    type DynamicType = ();

    fn group(_: &()) -> &str {
        K::GROUP
    }

    fn version(_: &()) -> &str {
        K::VERSION
    }

    fn api_version(_: &()) -> &str {
        K::API_VERSION
    }

    fn kind(_: &()) -> &str {
        K::KIND
    }

    fn plural(_: &()) -> &str {
        K::URL_PATH_SEGMENT
    }

    fn namespaced(_: &()) -> bool {
        TypeId::of::<K::Scope>() == TypeId::of::<NamespaceResourceScope>()
    }

    fn meta(&self) -> &ObjectMeta {
        self.metadata()
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        self.metadata_mut()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::{ConfigMap, Node};

    #[test]
    fn static_types_answer_with_their_constants() {
        assert_eq!(ConfigMap::group(&()), "");
        assert_eq!(ConfigMap::api_version(&()), "v1");
        assert_eq!(ConfigMap::plural(&()), "configmaps");
        assert!(ConfigMap::namespaced(&()));
        assert!(!Node::namespaced(&()));
        assert_eq!(Deployment::group(&()), "apps");
        assert_eq!(Deployment::version(&()), "v1");
        assert_eq!(Deployment::api_version(&()), "apps/v1");
        assert_eq!(Deployment::kind(&()), "Deployment");
    }

    #[test]
    fn owner_references_need_a_stored_object() {
        let mut d = Deployment::default();
        d.meta_mut().name = Some("web".into());
        assert_eq!(d.controller_owner_ref(&()), None, "no uid yet");
        d.meta_mut().uid = Some("u-1".into());
        let r = d.controller_owner_ref(&()).unwrap();
        assert_eq!(
            (
                r.api_version.as_str(),
                r.kind.as_str(),
                r.name.as_str(),
                r.uid.as_str()
            ),
            ("apps/v1", "Deployment", "web", "u-1")
        );
        assert_eq!(
            (r.controller, r.block_owner_deletion),
            (Some(true), Some(true))
        );
        let o = d.object_ref(&());
        assert_eq!(o.kind.as_deref(), Some("Deployment"));
        assert_eq!(o.uid.as_deref(), Some("u-1"));
    }
}
