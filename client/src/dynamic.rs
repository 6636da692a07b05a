//! Objects of resources the program learns about only when it runs: a custom resource it has
//! no Rust type for, or any resource named by a user.
//!
//! An [`ApiResource`] names the resource (group, version, kind, plural, scope); a
//! [`DynamicObject`] holds one object as its metadata plus the rest of its JSON. Together they
//! work with everything the typed API does:
//!
//! ```no_run
//! use serde_json::json;
//! use skiff_client::dynamic::{ApiResource, DynamicObject};
//! use skiff_client::{Api, Client, PostParams};
//!
//! # async fn run(client: Client) -> skiff_client::Result<()> {
//! let widgets = ApiResource::namespaced("example.skiff.dev", "v1", "Widget", "widgets");
//! let api: Api<DynamicObject> = Api::namespaced_with(client, "default", &widgets);
//! let w = DynamicObject::new("hello", &widgets).data(json!({"spec": {"replicas": 2}}));
//! let created = api.create(&PostParams::default(), &w).await?;
//! println!("{}", created.data["spec"]["replicas"]);
//! # Ok(())
//! # }
//! ```
//!
//! The gRPC API has no discovery call, so the resource is named explicitly, taken from a
//! typed resource ([`ApiResource::erase`]) or read from its CustomResourceDefinition
//! ([`ApiResource::from_crd`]).

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::resource::Resource;

/// Names one resource at run time: what a [`DynamicObject`]'s `Api` addresses.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ApiResource {
    /// The API group (`""` for the core group).
    pub group: String,
    /// The version within the group.
    pub version: String,
    /// `group/version`, or the version alone for the core group.
    pub api_version: String,
    /// The objects' kind.
    pub kind: String,
    /// The resource: its lower-case plural.
    pub plural: String,
    /// Whether objects live in namespaces.
    pub namespaced: bool,
}

impl ApiResource {
    fn new(group: &str, version: &str, kind: &str, plural: &str, namespaced: bool) -> Self {
        ApiResource {
            group: group.into(),
            version: version.into(),
            api_version: if group.is_empty() {
                version.into()
            } else {
                format!("{group}/{version}")
            },
            kind: kind.into(),
            plural: plural.into(),
            namespaced,
        }
    }

    /// A resource whose objects live in namespaces, e.g.
    /// `ApiResource::namespaced("", "v1", "ConfigMap", "configmaps")`.
    pub fn namespaced(group: &str, version: &str, kind: &str, plural: &str) -> Self {
        Self::new(group, version, kind, plural, true)
    }

    /// A cluster-scoped resource, e.g.
    /// `ApiResource::cluster("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles")`.
    pub fn cluster(group: &str, version: &str, kind: &str, plural: &str) -> Self {
        Self::new(group, version, kind, plural, false)
    }

    /// The resource a typed resource names (for a static type, `dt` is `&()`).
    pub fn erase<K: Resource>(dt: &K::DynamicType) -> Self {
        ApiResource {
            group: K::group(dt).into(),
            version: K::version(dt).into(),
            api_version: K::api_version(dt).into(),
            kind: K::kind(dt).into(),
            plural: K::plural(dt).into(),
            namespaced: K::namespaced(dt),
        }
    }

    /// The resource a CustomResourceDefinition defines, in one of its versions.
    pub fn from_crd(crd: &CustomResourceDefinition, version: &str) -> Result<Self> {
        let spec = &crd.spec;
        if !spec.versions.iter().any(|v| v.name == version) {
            return Err(Error::Invalid(format!(
                "the CustomResourceDefinition {:?} has no version {version:?}",
                crd.metadata.name.as_deref().unwrap_or_default()
            )));
        }
        Ok(Self::new(
            &spec.group,
            version,
            &spec.names.kind,
            &spec.names.plural,
            spec.scope != "Cluster",
        ))
    }
}

/// An object's `apiVersion` and `kind`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TypeMeta {
    /// `apiVersion`.
    pub api_version: String,
    /// `kind`.
    pub kind: String,
}

/// One object of any resource: its type, its metadata, and every other field as JSON.
/// It serializes to exactly the object's JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DynamicObject {
    /// `apiVersion` and `kind`, when the JSON has them (the server always sends them).
    #[serde(flatten, default)]
    pub types: Option<TypeMeta>,
    /// `metadata`.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Every other field (`spec`, `status`, `data` ...), as a JSON object (or null: none).
    #[serde(flatten)]
    pub data: Value,
}

impl DynamicObject {
    /// An object of `resource` named `name`, with no other fields yet.
    pub fn new(name: &str, resource: &ApiResource) -> Self {
        DynamicObject {
            types: Some(TypeMeta {
                api_version: resource.api_version.clone(),
                kind: resource.kind.clone(),
            }),
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            data: Value::Object(Default::default()),
        }
    }

    /// The same object in namespace `ns`.
    pub fn within(mut self, ns: &str) -> Self {
        self.metadata.namespace = Some(ns.into());
        self
    }

    /// The same object with `data` (a JSON object) as its fields besides type and metadata.
    pub fn data(mut self, data: Value) -> Self {
        self.data = data;
        self
    }

    /// The object as a typed one (a k8s-openapi type or a custom resource type).
    pub fn try_parse<K: DeserializeOwned>(&self) -> Result<K> {
        let v = serde_json::to_value(self).map_err(|e| Error::json("encoding the object", e))?;
        serde_json::from_value(v).map_err(|e| Error::json("decoding the object", e))
    }

    /// A typed object as a dynamic one.
    pub fn from_typed<K: Serialize>(obj: &K) -> Result<Self> {
        let v = serde_json::to_value(obj).map_err(|e| Error::json("encoding the object", e))?;
        serde_json::from_value(v).map_err(|e| Error::json("decoding the object", e))
    }
}

/// Implements [`Resource`] for a type named at run time by an [`ApiResource`], whose
/// `metadata` field holds its `ObjectMeta` (a [`DynamicObject`], or a metadata-only view of
/// one).
#[macro_export]
macro_rules! dynamic_resource {
    ($t:ty) => {
        impl $crate::Resource for $t {
            type DynamicType = $crate::ApiResource;

            fn group(dt: &$crate::ApiResource) -> &str {
                &dt.group
            }

            fn version(dt: &$crate::ApiResource) -> &str {
                &dt.version
            }

            fn api_version(dt: &$crate::ApiResource) -> &str {
                &dt.api_version
            }

            fn kind(dt: &$crate::ApiResource) -> &str {
                &dt.kind
            }

            fn plural(dt: &$crate::ApiResource) -> &str {
                &dt.plural
            }

            fn namespaced(dt: &$crate::ApiResource) -> bool {
                dt.namespaced
            }

            fn meta(&self) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                &self.metadata
            }

            fn meta_mut(
                &mut self,
            ) -> &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

dynamic_resource!(DynamicObject);

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::ConfigMap;
    use k8s_openapi::api::rbac::v1::ClusterRole;
    use serde_json::json;

    #[test]
    fn an_object_round_trips_to_the_same_json() {
        let text = json!({
            "apiVersion": "example.skiff.dev/v1",
            "kind": "Widget",
            "metadata": {"name": "w", "namespace": "ns", "labels": {"a": "b"}},
            "spec": {"replicas": 3, "message": "hi"},
            "status": {"ready": true}
        });
        let o: DynamicObject = serde_json::from_value(text.clone()).unwrap();
        assert_eq!(
            o.types,
            Some(TypeMeta {
                api_version: "example.skiff.dev/v1".into(),
                kind: "Widget".into()
            })
        );
        assert_eq!(o.metadata.name.as_deref(), Some("w"));
        // The type and the metadata are not repeated among the other fields.
        assert_eq!(
            o.data,
            json!({"spec": {"replicas": 3, "message": "hi"}, "status": {"ready": true}})
        );
        assert_eq!(serde_json::to_value(&o).unwrap(), text);
    }

    #[test]
    fn missing_type_and_metadata_are_tolerated() {
        let o: DynamicObject = serde_json::from_value(json!({"data": {"k": "v"}})).unwrap();
        assert_eq!(o.types, None);
        assert_eq!(o.metadata, ObjectMeta::default());
        assert_eq!(
            serde_json::to_value(&o).unwrap(),
            json!({"metadata": {}, "data": {"k": "v"}})
        );
    }

    #[test]
    fn new_objects_serialize_with_their_type() {
        let cms = ApiResource::erase::<ConfigMap>(&());
        let o = DynamicObject::new("c", &cms)
            .within("default")
            .data(json!({"data": {"k": "v"}}));
        assert_eq!(
            serde_json::to_value(&o).unwrap(),
            json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "c", "namespace": "default"},
                "data": {"k": "v"}
            })
        );
        // Fields left empty are not sent as null.
        let bare = DynamicObject::new("c", &cms);
        assert_eq!(
            serde_json::to_value(&bare).unwrap(),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}})
        );
        // No other fields at all, as `data: Default::default()` says.
        let null = DynamicObject {
            data: Value::Null,
            ..bare.clone()
        };
        assert_eq!(
            serde_json::to_value(&null).unwrap(),
            serde_json::to_value(&bare).unwrap()
        );
        // Parsed into the typed object and back.
        let cm: ConfigMap = o.try_parse().unwrap();
        assert_eq!(cm.data.unwrap()["k"], "v");
        let back = DynamicObject::from_typed(&ConfigMap {
            metadata: ObjectMeta {
                name: Some("c".into()),
                ..Default::default()
            },
            ..Default::default()
        })
        .unwrap();
        assert_eq!(back.types.unwrap().kind, "ConfigMap");
    }

    #[test]
    fn the_identity_is_the_descriptor_it_was_given() {
        let d = ApiResource::erase::<Deployment>(&());
        assert_eq!(
            d,
            ApiResource::namespaced("apps", "v1", "Deployment", "deployments")
        );
        assert_eq!(DynamicObject::api_version(&d), "apps/v1");
        assert_eq!(DynamicObject::plural(&d), "deployments");
        assert!(DynamicObject::namespaced(&d));
        let core = ApiResource::namespaced("", "v1", "ConfigMap", "configmaps");
        assert_eq!(core.api_version, "v1");
        assert_eq!(core, ApiResource::erase::<ConfigMap>(&()));
        let roles = ApiResource::cluster(
            "rbac.authorization.k8s.io",
            "v1",
            "ClusterRole",
            "clusterroles",
        );
        assert_eq!(roles, ApiResource::erase::<ClusterRole>(&()));
        assert!(!DynamicObject::namespaced(&roles));
    }

    #[test]
    fn a_crd_names_its_resource() {
        let crd: CustomResourceDefinition = serde_json::from_value(json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": "gadgets.example.skiff.dev"},
            "spec": {
                "group": "example.skiff.dev",
                "names": {"kind": "Gadget", "plural": "gadgets"},
                "scope": "Cluster",
                "versions": [{"name": "v1alpha1", "served": true, "storage": true}]
            }
        }))
        .unwrap();
        let r = ApiResource::from_crd(&crd, "v1alpha1").unwrap();
        assert_eq!(
            r,
            ApiResource::cluster("example.skiff.dev", "v1alpha1", "Gadget", "gadgets")
        );
        let e = ApiResource::from_crd(&crd, "v2").unwrap_err();
        assert!(e.to_string().contains("no version \"v2\""), "{e}");
    }
}
