//! Custom resources as Rust types: [`crate::custom_resource!`] declares one, usable with
//! [`crate::Api`] and everything built on it like any k8s-openapi type, and
//! [`CustomResourceExt::crd`] gives the CustomResourceDefinition that makes the API server
//! serve it, with an OpenAPI schema made from the Rust types by `schemars`.
//!
//! ```
//! use schemars::JsonSchema;
//! use serde::{Deserialize, Serialize};
//! use skiff_client::crd::CustomResourceExt;
//!
//! /// What a Widget should be.
//! #[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
//! pub struct WidgetSpec {
//!     /// How many copies of the message.
//!     pub replicas: i32,
//!     /// The message.
//!     pub message: String,
//! }
//!
//! /// What a Widget is.
//! #[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
//! #[serde(rename_all = "camelCase")]
//! pub struct WidgetStatus {
//!     /// The generation last acted on.
//!     pub observed_generation: Option<i64>,
//! }
//!
//! skiff_client::custom_resource! {
//!     /// A message, kept in a ConfigMap.
//!     pub struct Widget {
//!         group: "example.skiff.dev",
//!         version: "v1",
//!         plural: "widgets",
//!         scope: Namespaced,
//!         spec: WidgetSpec,
//!         status: WidgetStatus,
//!     }
//! }
//!
//! let w = Widget::new("hello", WidgetSpec { replicas: 2, message: "hi".into() });
//! assert_eq!(serde_json::to_value(&w).unwrap()["apiVersion"], "example.skiff.dev/v1");
//! let crd = Widget::crd().unwrap();
//! assert_eq!(crd.metadata.name.as_deref(), Some("widgets.example.skiff.dev"));
//! ```
//!
//! The schema follows Kubernetes' rules for structural schemas: subschemas are inlined,
//! `Option`s become `nullable`, a `serde_json::Value` field keeps unknown fields. Types the
//! rules cannot express (enums with data, recursive types) need their schema written by
//! hand (`#[schemars(schema_with = ...)]`), or a CRD written by hand with [`crd_for`].

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use schemars::generate::SchemaSettings;
use schemars::JsonSchema;
use serde_json::{json, Map, Value};

use crate::dynamic::ApiResource;
use crate::error::{Error, Result};
use crate::resource::{Object, Resource};

/// What [`crate::custom_resource!`] adds to a custom resource type.
pub trait CustomResourceExt: Object {
    /// The CustomResourceDefinition that serves this type: its group, names, scope, this one
    /// version (served and stored) with its schema, and the `status` subresource when the type
    /// has a status.
    fn crd() -> Result<CustomResourceDefinition>;

    /// The resource, as a dynamic [`ApiResource`] (to use the type's objects untyped).
    fn api_resource() -> ApiResource {
        ApiResource::erase::<Self>(&())
    }
}

/// The CustomResourceDefinition for `K` (its group, version, kind, plural and scope), with
/// `spec` (and `status`, when given, with the `status` subresource) as its schema: for types
/// declared by hand rather than with [`crate::custom_resource!`].
pub fn crd_for<K: Object>(spec: Value, status: Option<Value>) -> Result<CustomResourceDefinition> {
    let (group, version, kind, plural) = (K::GROUP, K::VERSION, K::KIND, K::URL_PATH_SEGMENT);
    let mut properties = Map::new();
    properties.insert("spec".into(), spec);
    let has_status = status.is_some();
    if let Some(s) = status {
        properties.insert("status".into(), s);
    }
    let mut version_entry = json!({
        "name": version,
        "served": true,
        "storage": true,
        "schema": {"openAPIV3Schema": {
            "description": format!("{kind} is the Schema for the {plural} API."),
            "type": "object",
            "properties": properties,
            "required": ["spec"],
        }},
    });
    if has_status {
        version_entry["subresources"] = json!({"status": {}});
    }
    let crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.{group}")},
        "spec": {
            "group": group,
            "names": {
                "kind": kind,
                "listKind": format!("{kind}List"),
                "plural": plural,
                "singular": kind.to_lowercase(),
            },
            "scope": if K::namespaced(&()) { "Namespaced" } else { "Cluster" },
            "versions": [version_entry],
        },
    });
    serde_json::from_value(crd).map_err(|e| {
        Error::json(
            format!("building the CustomResourceDefinition of {kind}"),
            e,
        )
    })
}

/// The OpenAPI v3 schema of `T` as a CRD takes it (`openAPIV3Schema` or a part of one):
/// subschemas inlined, `Option`s as `nullable`, free-form JSON as
/// `x-kubernetes-preserve-unknown-fields`, and what CRD schemas refuse (`$schema`,
/// `definitions`, `uniqueItems`) left out.
pub fn schema_for<T: JsonSchema>() -> Value {
    let generator = SchemaSettings::openapi3()
        .with(|s| {
            s.inline_subschemas = true;
            s.meta_schema = None;
        })
        .into_generator();
    let mut v = generator.into_root_schema_for::<T>().to_value();
    if let Some(m) = v.as_object_mut() {
        // The Rust type's name means nothing to the API's users.
        m.remove("title");
    }
    structural(&mut v);
    v
}

/// Rewrites one schema node, then its children, to what a structural schema allows.
fn structural(v: &mut Value) {
    let Some(m) = v.as_object_mut() else {
        return;
    };
    for refused in ["$schema", "definitions", "$defs", "uniqueItems", "examples"] {
        m.remove(refused);
    }
    // `Option<T>` of a type with subschemas comes as `anyOf: [T, null]`: T, nullable.
    for key in ["anyOf", "oneOf"] {
        let Some(Value::Array(branches)) = m.get(key) else {
            continue;
        };
        let (nulls, others): (Vec<&Value>, Vec<&Value>) = branches.iter().partition(|b| is_null(b));
        if nulls.is_empty() || others.len() != 1 {
            continue;
        }
        let Some(inner) = others[0].as_object().cloned() else {
            continue;
        };
        m.remove(key);
        for (k, val) in inner {
            // The outer node's own description (the field's doc) wins over the type's.
            m.entry(k).or_insert(val);
        }
        m.insert("nullable".into(), Value::Bool(true));
    }
    // A unit enum with documented variants comes as one branch per variant: one enum.
    for key in ["oneOf", "anyOf"] {
        if let Some(Value::Array(branches)) = m.get(key) {
            if let Some((ty, values)) = one_enum(branches) {
                m.remove(key);
                m.insert("type".into(), ty);
                m.insert("enum".into(), Value::Array(values));
            }
        }
    }
    let typed = [
        "type",
        "$ref",
        "anyOf",
        "oneOf",
        "allOf",
        "enum",
        "x-kubernetes-int-or-string",
    ]
    .iter()
    .any(|k| m.contains_key(*k));
    if !typed {
        // Any JSON at all (a `serde_json::Value`): kept as it is.
        m.insert(
            "x-kubernetes-preserve-unknown-fields".into(),
            Value::Bool(true),
        );
    }
    if let Some(Value::Object(props)) = m.get_mut("properties") {
        props.values_mut().for_each(structural);
    }
    for key in ["items", "additionalProperties", "not"] {
        if let Some(child) = m.get_mut(key) {
            structural(child);
        }
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        if let Some(Value::Array(branches)) = m.get_mut(key) {
            branches.iter_mut().for_each(structural);
        }
    }
}

/// The type and values of branches that each allow a few values of one scalar type.
fn one_enum(branches: &[Value]) -> Option<(Value, Vec<Value>)> {
    let ty = branches.first()?.get("type")?.clone();
    let mut values = Vec::new();
    for b in branches {
        if b.get("type") != Some(&ty) {
            return None;
        }
        values.extend(b.get("enum")?.as_array()?.iter().cloned());
    }
    Some((ty, values))
}

/// Whether a schema allows only `null`.
fn is_null(v: &Value) -> bool {
    v.get("type").is_some_and(|t| t == "null")
        || v.get("enum").is_some_and(|e| *e == json!([null]))
        || v.get("const").is_some_and(Value::is_null)
}

/// What the macro's expansion uses; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use k8s_openapi;
    pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    pub use serde;
    pub use serde::de::IgnoredAny;
    pub use serde_json::Value as JsonValue;

    use serde::{Deserialize, Serialize};

    /// A custom resource as it is written: type, metadata, spec, status.
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Out<'a, S, T> {
        pub api_version: &'static str,
        pub kind: &'static str,
        pub metadata: &'a ObjectMeta,
        pub spec: &'a S,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub status: Option<&'a T>,
    }

    /// A custom resource as it is read.
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct In<S, T> {
        #[serde(default)]
        pub api_version: Option<String>,
        #[serde(default)]
        pub kind: Option<String>,
        #[serde(default)]
        pub metadata: ObjectMeta,
        pub spec: S,
        #[serde(default = "none")]
        pub status: Option<T>,
    }

    fn none<T>() -> Option<T> {
        None
    }

    /// Refuses an object of another kind or version than the type's.
    pub fn check_type<E: serde::de::Error>(
        found: Option<&str>,
        expected: &str,
        field: &str,
    ) -> Result<(), E> {
        match found {
            Some(f) if !f.is_empty() && f != expected => {
                Err(E::custom(format!("{field} {f:?} is not {expected:?}")))
            }
            _ => Ok(()),
        }
    }
}

/// Declares a custom resource type: a struct with `metadata`, `spec` and (when a status type
/// is given) `status`, usable with [`crate::Api`] and everything built on it, with a
/// [`CustomResourceExt::crd`] to register it.
///
/// ```
/// # #[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
/// # pub struct BackupSpec { pub schedule: String }
/// # #[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
/// # pub struct BackupStatus { pub last: Option<String> }
/// skiff_client::custom_resource! {
///     /// A backup schedule.
///     #[derive(Default)]
///     pub struct Backup {
///         group: "example.skiff.dev",   // the API group
///         version: "v1alpha1",          // the version within it
///         plural: "backups",            // the resource, as URLs and RBAC rules name it
///         scope: Namespaced,            // or Cluster
///         spec: BackupSpec,             // the desired state
///         status: BackupStatus,         // optional: the observed state
///     }
/// }
/// # let _ = Backup::default();
/// ```
///
/// The struct's name is the kind. It derives `Clone` and `Debug` (more derives may be
/// added); spec and status types need `Clone`, `Debug`, `Serialize`, `Deserialize` and
/// `schemars::JsonSchema`. The expansion implements `k8s_openapi::Resource`,
/// `k8s_openapi::ListableResource` and `k8s_openapi::Metadata`, so the type is a
/// [`crate::Object`]; its JSON carries `apiVersion` and `kind`, and reading an object of
/// another kind or version fails.
#[macro_export]
macro_rules! custom_resource {
    (@scope Namespaced) => { $crate::crd::__private::k8s_openapi::NamespaceResourceScope };
    (@scope Cluster) => { $crate::crd::__private::k8s_openapi::ClusterResourceScope };
    (@status) => { () };
    (@status $status:ty) => { $status };
    (@status_in) => { $crate::crd::__private::IgnoredAny };
    (@status_in $status:ty) => { $status };
    (
        $(#[$attr:meta])*
        $vis:vis struct $name:ident {
            group: $group:literal,
            version: $version:literal,
            plural: $plural:literal,
            scope: $scope:ident,
            spec: $spec:ty
            $(, status: $status:ty)?
            $(,)?
        }
    ) => {
        $(#[$attr])*
        #[derive(Clone, Debug)]
        $vis struct $name {
            /// Standard object metadata: name, namespace, labels, owners ...
            pub metadata: $crate::crd::__private::ObjectMeta,
            /// The desired state.
            pub spec: $spec,
            $(
                /// The observed state, written through the `status` subresource.
                pub status: ::core::option::Option<$status>,
            )?
        }

        impl $name {
            /// A new object named `name` with `spec`.
            #[allow(dead_code)]
            pub fn new(name: &str, spec: $spec) -> Self {
                $name {
                    metadata: $crate::crd::__private::ObjectMeta {
                        name: ::core::option::Option::Some(name.into()),
                        ..::core::default::Default::default()
                    },
                    spec,
                    $(status: ::core::option::Option::<$status>::None,)?
                }
            }
        }

        impl $crate::crd::__private::k8s_openapi::Resource for $name {
            const API_VERSION: &'static str = concat!($group, "/", $version);
            const GROUP: &'static str = $group;
            const KIND: &'static str = stringify!($name);
            const VERSION: &'static str = $version;
            const URL_PATH_SEGMENT: &'static str = $plural;
            type Scope = $crate::custom_resource!(@scope $scope);
        }

        impl $crate::crd::__private::k8s_openapi::ListableResource for $name {
            const LIST_KIND: &'static str = concat!(stringify!($name), "List");
        }

        impl $crate::crd::__private::k8s_openapi::Metadata for $name {
            type Ty = $crate::crd::__private::ObjectMeta;

            fn metadata(&self) -> &Self::Ty {
                &self.metadata
            }

            fn metadata_mut(&mut self) -> &mut Self::Ty {
                &mut self.metadata
            }
        }

        impl $crate::crd::__private::serde::Serialize for $name {
            fn serialize<S>(&self, serializer: S) -> ::core::result::Result<S::Ok, S::Error>
            where
                S: $crate::crd::__private::serde::Serializer,
            {
                let status: ::core::option::Option<&$crate::custom_resource!(@status $($status)?)> =
                    ::core::option::Option::None $(.or(self.status.as_ref().map(|s: &$status| s)))?;
                $crate::crd::__private::serde::Serialize::serialize(
                    &$crate::crd::__private::Out {
                        api_version: <Self as $crate::crd::__private::k8s_openapi::Resource>::API_VERSION,
                        kind: <Self as $crate::crd::__private::k8s_openapi::Resource>::KIND,
                        metadata: &self.metadata,
                        spec: &self.spec,
                        status,
                    },
                    serializer,
                )
            }
        }

        impl<'de> $crate::crd::__private::serde::Deserialize<'de> for $name {
            fn deserialize<D>(deserializer: D) -> ::core::result::Result<Self, D::Error>
            where
                D: $crate::crd::__private::serde::Deserializer<'de>,
            {
                let o = <$crate::crd::__private::In<$spec, $crate::custom_resource!(@status_in $($status)?)>
                    as $crate::crd::__private::serde::Deserialize>::deserialize(deserializer)?;
                $crate::crd::__private::check_type(
                    o.api_version.as_deref(),
                    <Self as $crate::crd::__private::k8s_openapi::Resource>::API_VERSION,
                    "apiVersion",
                )?;
                $crate::crd::__private::check_type(
                    o.kind.as_deref(),
                    <Self as $crate::crd::__private::k8s_openapi::Resource>::KIND,
                    "kind",
                )?;
                ::core::result::Result::Ok($name {
                    metadata: o.metadata,
                    spec: o.spec,
                    $(status: { let s: ::core::option::Option<$status> = o.status; s },)?
                })
            }
        }

        impl $crate::crd::CustomResourceExt for $name {
            fn crd() -> $crate::Result<
                $crate::crd::__private::k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
            > {
                let status: ::core::option::Option<$crate::crd::__private::JsonValue> =
                    ::core::option::Option::None $(.or(::core::option::Option::Some($crate::crd::schema_for::<$status>())))?;
                $crate::crd::crd_for::<Self>($crate::crd::schema_for::<$spec>(), status)
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use schemars::JsonSchema;
    use serde::{Deserialize, Serialize};
    use serde_json::json;

    use super::*;

    /// Where a gadget points.
    #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
    pub struct Target {
        /// The host.
        pub host: String,
        /// The port.
        pub port: Option<u16>,
    }

    /// How loud.
    #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
    pub enum Level {
        /// Quiet.
        #[default]
        Low,
        /// Loud.
        High,
    }

    /// A gadget's desired state.
    #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
    #[serde(rename_all = "camelCase")]
    pub struct GadgetSpec {
        /// How many.
        pub replicas: i32,
        /// Where to, if anywhere.
        pub target: Option<Target>,
        /// How loud, if set.
        pub level: Option<Level>,
        /// Labels to copy.
        #[serde(default)]
        pub labels: BTreeMap<String, String>,
        /// Ports.
        #[serde(default)]
        pub ports: Vec<i32>,
        /// Anything at all.
        pub extra: Option<serde_json::Value>,
    }

    /// A gadget's observed state.
    #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
    #[serde(rename_all = "camelCase")]
    pub struct GadgetStatus {
        /// Whether it works.
        pub ready: bool,
    }

    crate::custom_resource! {
        /// A gadget.
        #[derive(PartialEq)]
        pub struct Gadget {
            group: "example.skiff.dev",
            version: "v1",
            plural: "gadgets",
            scope: Namespaced,
            spec: GadgetSpec,
            status: GadgetStatus,
        }
    }

    /// A gadget that reports nothing back, for the whole cluster.
    #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
    pub struct SwitchSpec {
        /// On or off.
        pub on: bool,
    }

    crate::custom_resource! {
        /// A switch.
        struct Switch {
            group: "example.skiff.dev",
            version: "v1beta1",
            plural: "switches",
            scope: Cluster,
            spec: SwitchSpec,
        }
    }

    fn gadget() -> Gadget {
        let mut g = Gadget::new(
            "g",
            GadgetSpec {
                replicas: 2,
                ..Default::default()
            },
        );
        g.metadata.namespace = Some("ns".into());
        g
    }

    #[test]
    fn a_custom_resource_is_written_with_its_type() {
        let g = gadget();
        let v = serde_json::to_value(&g).unwrap();
        assert_eq!(v["apiVersion"], "example.skiff.dev/v1");
        assert_eq!(v["kind"], "Gadget");
        assert_eq!(v["metadata"], json!({"name": "g", "namespace": "ns"}));
        assert_eq!(v["spec"]["replicas"], 2);
        assert!(v.get("status").is_none(), "no status until one is set: {v}");
        let mut with_status = g.clone();
        with_status.status = Some(GadgetStatus { ready: true });
        let v = serde_json::to_value(&with_status).unwrap();
        assert_eq!(v["status"], json!({"ready": true}));
        let back: Gadget = serde_json::from_value(v).unwrap();
        assert_eq!(back, with_status);
    }

    #[test]
    fn reading_checks_the_type_but_not_its_presence() {
        let ok: Gadget = serde_json::from_value(json!({
            "metadata": {"name": "g"}, "spec": {"replicas": 1}
        }))
        .unwrap();
        assert_eq!(ok.spec.replicas, 1);
        assert_eq!(ok.status, None);
        let e = serde_json::from_value::<Gadget>(json!({
            "apiVersion": "example.skiff.dev/v2", "kind": "Gadget",
            "metadata": {"name": "g"}, "spec": {"replicas": 1}
        }))
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("apiVersion \"example.skiff.dev/v2\""),
            "{e}"
        );
        let e = serde_json::from_value::<Gadget>(json!({
            "apiVersion": "example.skiff.dev/v1", "kind": "Widget",
            "metadata": {"name": "g"}, "spec": {"replicas": 1}
        }))
        .unwrap_err();
        assert!(e.to_string().contains("kind \"Widget\""), "{e}");
        // The spec is required, as the definition's schema says.
        let e = serde_json::from_value::<Gadget>(json!({"metadata": {"name": "g"}})).unwrap_err();
        assert!(e.to_string().contains("spec"), "{e}");
        // Without a status type, a status the server sends is ignored.
        let s: Switch = serde_json::from_value(json!({
            "apiVersion": "example.skiff.dev/v1beta1", "kind": "Switch",
            "metadata": {"name": "s"}, "spec": {"on": true}, "status": {"anything": 1}
        }))
        .unwrap();
        assert!(s.spec.on);
        assert_eq!(
            serde_json::to_value(&s).unwrap(),
            json!({
                "apiVersion": "example.skiff.dev/v1beta1", "kind": "Switch",
                "metadata": {"name": "s"}, "spec": {"on": true}
            })
        );
    }

    #[test]
    fn a_custom_resource_has_the_identity_it_declares() {
        assert_eq!(Gadget::api_version(&()), "example.skiff.dev/v1");
        assert_eq!(Gadget::plural(&()), "gadgets");
        assert_eq!(Gadget::kind(&()), "Gadget");
        assert!(Gadget::namespaced(&()));
        assert!(!Switch::namespaced(&()));
        assert_eq!(
            <Gadget as k8s_openapi::ListableResource>::LIST_KIND,
            "GadgetList"
        );
        assert_eq!(
            Gadget::api_resource(),
            ApiResource::namespaced("example.skiff.dev", "v1", "Gadget", "gadgets")
        );
        let mut g = gadget();
        g.metadata.uid = Some("u".into());
        let owner = g.controller_owner_ref(&()).unwrap();
        assert_eq!((owner.kind.as_str(), owner.name.as_str()), ("Gadget", "g"));
        // As a dynamic object and back.
        let d = crate::DynamicObject::from_typed(&g).unwrap();
        assert_eq!(d.data["spec"]["replicas"], 2);
        assert_eq!(d.try_parse::<Gadget>().unwrap(), g);
    }

    /// Every node of `v` that Kubernetes requires a type of has one (or keeps unknown fields),
    /// and nothing a CRD schema refuses is left.
    fn assert_structural(path: &str, v: &Value) {
        let m = v
            .as_object()
            .unwrap_or_else(|| panic!("{path}: not a schema: {v}"));
        for refused in [
            "$ref",
            "$schema",
            "definitions",
            "$defs",
            "uniqueItems",
            "title",
        ] {
            assert!(!m.contains_key(refused), "{path}: {refused} in {v}");
        }
        for key in ["oneOf", "anyOf", "allOf"] {
            assert!(!m.contains_key(key), "{path}: {key} in {v}");
        }
        assert!(
            m.contains_key("type")
                || m.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true)),
            "{path}: no type in {v}"
        );
        if let Some(props) = m.get("properties").and_then(Value::as_object) {
            for (k, p) in props {
                assert_structural(&format!("{path}.{k}"), p);
            }
        }
        for key in ["items", "additionalProperties"] {
            if let Some(child) = m.get(key) {
                assert_structural(&format!("{path}[{key}]"), child);
            }
        }
    }

    #[test]
    fn the_definition_serves_the_type_with_a_structural_schema() {
        let crd = Gadget::crd().unwrap();
        assert_eq!(
            crd.metadata.name.as_deref(),
            Some("gadgets.example.skiff.dev")
        );
        let spec = &crd.spec;
        assert_eq!(spec.group, "example.skiff.dev");
        assert_eq!(spec.scope, "Namespaced");
        assert_eq!(spec.names.kind, "Gadget");
        assert_eq!(spec.names.plural, "gadgets");
        assert_eq!(spec.names.singular.as_deref(), Some("gadget"));
        assert_eq!(spec.names.list_kind.as_deref(), Some("GadgetList"));
        assert_eq!(spec.versions.len(), 1);
        let v = &spec.versions[0];
        assert_eq!((v.name.as_str(), v.served, v.storage), ("v1", true, true));
        assert!(v.subresources.as_ref().unwrap().status.is_some());
        let schema = serde_json::to_value(
            v.schema
                .as_ref()
                .unwrap()
                .open_api_v3_schema
                .as_ref()
                .unwrap(),
        )
        .unwrap();
        assert_structural("", &schema);
        assert_eq!(schema["required"], json!(["spec"]));
        let props = &schema["properties"]["spec"]["properties"];
        assert_eq!(props["replicas"]["type"], "integer");
        assert_eq!(props["replicas"]["description"], "How many.");
        // Option<struct>: the struct, nullable, described by the field's doc.
        assert_eq!(props["target"]["type"], "object");
        assert_eq!(props["target"]["nullable"], true);
        assert_eq!(props["target"]["description"], "Where to, if anywhere.");
        assert_eq!(props["target"]["required"], json!(["host"]));
        // Option<unit enum>: one string enum.
        assert_eq!(props["level"]["type"], "string");
        assert_eq!(props["level"]["enum"], json!(["Low", "High"]));
        assert_eq!(props["level"]["nullable"], true);
        assert_eq!(props["labels"]["additionalProperties"]["type"], "string");
        assert_eq!(props["ports"]["items"]["type"], "integer");
        assert_eq!(props["extra"]["x-kubernetes-preserve-unknown-fields"], true);
        assert_eq!(
            schema["properties"]["status"]["properties"]["ready"]["type"],
            "boolean"
        );

        let crd = Switch::crd().unwrap();
        assert_eq!(
            crd.metadata.name.as_deref(),
            Some("switches.example.skiff.dev")
        );
        assert_eq!(crd.spec.scope, "Cluster");
        let v = &crd.spec.versions[0];
        assert_eq!(v.name, "v1beta1");
        assert!(v.subresources.is_none(), "no status, no status subresource");
        let schema = serde_json::to_value(&v.schema).unwrap();
        assert!(schema["openAPIV3Schema"]["properties"]
            .get("status")
            .is_none());
    }
}
