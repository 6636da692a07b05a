//! Request bodies in Kubernetes' protobuf encoding (`application/vnd.kubernetes.protobuf`).
//!
//! client-go's typed clients — and so `kubectl create deployment|configmap|secret|...` — send
//! built-in objects as protobuf: the magic `k8s\0`, then a `runtime.Unknown` envelope whose
//! `raw` bytes are the object. We decode the object with the `k8s-pb` types and convert it,
//! field by field, into the k8s-openapi type, whose JSON is what we store. The conversions are
//! generated (see `scripts/gen-protobuf-conversions.py`); the types whose protobuf and JSON
//! forms differ (times, quantities, int-or-string, raw JSON) are converted here.

mod generated;

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, MicroTime, Time};
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::ByteString;
use prost::Message;
use serde_json::Value;

use crate::error::{Error, Result};

/// The media type.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";
const MAGIC: &[u8] = b"k8s\0";

/// Conversion from a protobuf value to its k8s-openapi counterpart.
pub trait FromPb<P>: Sized {
    /// Converts.
    fn from_pb(p: P) -> Self;
}

/// Whether a protobuf value means "unset". Go writes empty strings for fields whose JSON
/// form would omit them, so an empty string in an optional field is no value.
pub trait Unset {
    /// True if the value stands for an absent field.
    fn is_unset(&self) -> bool {
        false
    }
}

impl Unset for String {
    fn is_unset(&self) -> bool {
        self.is_empty()
    }
}
impl Unset for i32 {}
impl Unset for i64 {}
impl Unset for bool {}
impl Unset for f64 {}
impl Unset for Vec<u8> {}

macro_rules! identity {
    ($($t:ty),*) => {$(
        impl FromPb<$t> for $t {
            fn from_pb(p: $t) -> Self { p }
        }
        impl FromPb<Option<$t>> for $t {
            fn from_pb(p: Option<$t>) -> Self { p.unwrap_or_default() }
        }
    )*};
}
identity!(String, i32, i64, bool, f64);

impl<T: FromPb<P>, P: Unset> FromPb<Option<P>> for Option<T> {
    fn from_pb(p: Option<P>) -> Self {
        p.filter(|v| !v.is_unset()).map(T::from_pb)
    }
}

impl<T: FromPb<P>, P> FromPb<Vec<P>> for Vec<T> {
    fn from_pb(p: Vec<P>) -> Self {
        p.into_iter().map(T::from_pb).collect()
    }
}

impl<T: FromPb<P>, P> FromPb<Vec<P>> for Option<Vec<T>> {
    fn from_pb(p: Vec<P>) -> Self {
        (!p.is_empty()).then(|| p.into_iter().map(T::from_pb).collect())
    }
}

impl<V: FromPb<P>, P> FromPb<BTreeMap<String, P>> for BTreeMap<String, V> {
    fn from_pb(p: BTreeMap<String, P>) -> Self {
        p.into_iter().map(|(k, v)| (k, V::from_pb(v))).collect()
    }
}

impl<V: FromPb<P>, P> FromPb<BTreeMap<String, P>> for Option<BTreeMap<String, V>> {
    fn from_pb(p: BTreeMap<String, P>) -> Self {
        (!p.is_empty()).then(|| p.into_iter().map(|(k, v)| (k, V::from_pb(v))).collect())
    }
}

// A CertificateSigningRequest's `spec.request` is a required bytes field.
impl FromPb<Option<Vec<u8>>> for ByteString {
    fn from_pb(p: Option<Vec<u8>>) -> Self {
        ByteString(p.unwrap_or_default())
    }
}

// A user's extra values travel wrapped in an `ExtraValue` message.
impl FromPb<k8s_pb::api::certificates::v1::ExtraValue> for Vec<String> {
    fn from_pb(p: k8s_pb::api::certificates::v1::ExtraValue) -> Self {
        p.items
    }
}

impl FromPb<Vec<u8>> for ByteString {
    fn from_pb(p: Vec<u8>) -> Self {
        ByteString(p)
    }
}

// A user's extra values travel wrapped in a message of their own.
impl FromPb<k8s_pb::api::authorization::v1::ExtraValue> for Vec<String> {
    fn from_pb(p: k8s_pb::api::authorization::v1::ExtraValue) -> Self {
        p.items
    }
}

impl FromPb<k8s_pb::api::authentication::v1::ExtraValue> for Vec<String> {
    fn from_pb(p: k8s_pb::api::authentication::v1::ExtraValue) -> Self {
        p.items
    }
}

type PbMeta = k8s_pb::apimachinery::pkg::apis::meta::v1::Time;

impl Unset for PbMeta {
    // Go encodes a zero time as the epoch; its JSON form is null.
    fn is_unset(&self) -> bool {
        self.seconds.unwrap_or(0) == 0 && self.nanos.unwrap_or(0) == 0
    }
}
impl Unset for k8s_pb::apimachinery::pkg::apis::meta::v1::MicroTime {}
impl Unset for k8s_pb::apimachinery::pkg::api::resource::Quantity {}
impl Unset for k8s_pb::apimachinery::pkg::util::intstr::IntOrString {}
impl Unset for k8s_pb::apimachinery::pkg::apis::meta::v1::FieldsV1 {}
impl Unset for k8s_pb::apimachinery::pkg::runtime::RawExtension {}

fn timestamp(seconds: Option<i64>, nanos: Option<i32>) -> k8s_openapi::jiff::Timestamp {
    k8s_openapi::jiff::Timestamp::new(seconds.unwrap_or(0), nanos.unwrap_or(0).max(0))
        .unwrap_or_default()
}

impl FromPb<PbMeta> for Time {
    fn from_pb(p: PbMeta) -> Self {
        Time(timestamp(p.seconds, p.nanos))
    }
}

impl FromPb<Option<PbMeta>> for Time {
    fn from_pb(p: Option<PbMeta>) -> Self {
        Time::from_pb(p.unwrap_or_default())
    }
}

impl FromPb<k8s_pb::apimachinery::pkg::apis::meta::v1::MicroTime> for MicroTime {
    fn from_pb(p: k8s_pb::apimachinery::pkg::apis::meta::v1::MicroTime) -> Self {
        MicroTime(timestamp(p.seconds, p.nanos))
    }
}

impl FromPb<k8s_pb::apimachinery::pkg::api::resource::Quantity> for Quantity {
    fn from_pb(p: k8s_pb::apimachinery::pkg::api::resource::Quantity) -> Self {
        Quantity(p.string.unwrap_or_default())
    }
}

impl FromPb<k8s_pb::apimachinery::pkg::util::intstr::IntOrString> for IntOrString {
    fn from_pb(p: k8s_pb::apimachinery::pkg::util::intstr::IntOrString) -> Self {
        // type 0 is an integer, 1 a string.
        match p.r#type.unwrap_or(0) {
            1 => IntOrString::String(p.str_val.unwrap_or_default()),
            _ => IntOrString::Int(p.int_val.unwrap_or(0)),
        }
    }
}

impl FromPb<Option<k8s_pb::apimachinery::pkg::util::intstr::IntOrString>> for IntOrString {
    fn from_pb(p: Option<k8s_pb::apimachinery::pkg::util::intstr::IntOrString>) -> Self {
        p.map(IntOrString::from_pb).unwrap_or(IntOrString::Int(0))
    }
}

fn raw_json(raw: Option<Vec<u8>>) -> Value {
    raw.and_then(|r| serde_json::from_slice(&r).ok())
        .unwrap_or(Value::Null)
}

impl FromPb<k8s_pb::apimachinery::pkg::apis::meta::v1::FieldsV1> for FieldsV1 {
    fn from_pb(p: k8s_pb::apimachinery::pkg::apis::meta::v1::FieldsV1) -> Self {
        FieldsV1(raw_json(p.raw))
    }
}

impl FromPb<k8s_pb::apimachinery::pkg::runtime::RawExtension> for RawExtension {
    fn from_pb(p: k8s_pb::apimachinery::pkg::runtime::RawExtension) -> Self {
        RawExtension(raw_json(p.raw))
    }
}

impl FromPb<Option<k8s_pb::apimachinery::pkg::runtime::RawExtension>> for RawExtension {
    fn from_pb(p: Option<k8s_pb::apimachinery::pkg::runtime::RawExtension>) -> Self {
        p.map(RawExtension::from_pb)
            .unwrap_or(RawExtension(Value::Null))
    }
}

/// `conv!(module, OpenapiName [= PbName] { field, field: pb_field, field: embedded.field } default { field })`
/// converts a protobuf type to the k8s-openapi type of the same module.
macro_rules! conv {
    ($($seg:ident)::+, $t:ident $(= $pt:ident)? { $($f:ident $(: $pf:ident $(. $ef:ident)?)?),* $(,)? } default { $($d:ident),* $(,)? }) => {
        conv!(@impl [$($seg)::+] $t [$($pt)?] { $($f $(: $pf $(. $ef)?)?),* } { $($d),* });
    };
    (@impl [$($seg:ident)::+] $t:ident [] $fields:tt $defaults:tt) => {
        conv!(@emit [$($seg)::+] $t $t $fields $defaults);
    };
    (@impl [$($seg:ident)::+] $t:ident [$pt:ident] $fields:tt $defaults:tt) => {
        conv!(@emit [$($seg)::+] $t $pt $fields $defaults);
    };
    (@emit [$($seg:ident)::+] $t:ident $pt:ident { $($f:ident $(: $pf:ident $(. $ef:ident)?)?),* } { $($d:ident),* }) => {
        impl FromPb<k8s_pb::$($seg)::+::$pt> for k8s_openapi::$($seg)::+::$t {
            #[allow(unused_variables, clippy::needless_update, clippy::redundant_field_names)]
            fn from_pb(p: k8s_pb::$($seg)::+::$pt) -> Self {
                Self {
                    $($f: FromPb::from_pb(conv!(@get p $f $($pf $(. $ef)?)?)),)*
                    $($d: Default::default(),)*
                }
            }
        }
        impl $crate::protobuf::Unset for k8s_pb::$($seg)::+::$pt {}
        impl FromPb<Option<k8s_pb::$($seg)::+::$pt>> for k8s_openapi::$($seg)::+::$t {
            fn from_pb(p: Option<k8s_pb::$($seg)::+::$pt>) -> Self {
                Self::from_pb(p.unwrap_or_default())
            }
        }
    };
    (@get $p:ident $f:ident) => { $p.$f };
    (@get $p:ident $f:ident $pf:ident) => { $p.$pf };
    (@get $p:ident $f:ident $pf:ident . $ef:ident) => { $p.$pf.as_ref().map(|e| e.$ef.clone()).unwrap_or_default() };
}
use conv;

fn decode<P, T>(raw: &[u8]) -> Result<Value>
where
    P: Message + Default,
    T: FromPb<P> + serde::Serialize,
{
    let p =
        P::decode(raw).map_err(|e| Error::bad_request(format!("decoding protobuf body: {e}")))?;
    serde_json::to_value(T::from_pb(p)).map_err(|e| Error::internal(e.to_string()))
}

/// Decodes a protobuf request body into the object's JSON.
pub fn decode_object(body: &[u8]) -> Result<Value> {
    let rest = body.strip_prefix(MAGIC).ok_or_else(|| {
        Error::bad_request("protobuf body does not start with the Kubernetes magic number")
    })?;
    let unknown = k8s_pb::apimachinery::pkg::runtime::Unknown::decode(rest)
        .map_err(|e| Error::bad_request(format!("decoding protobuf envelope: {e}")))?;
    let tm = unknown.type_meta.unwrap_or_default();
    let api_version = tm.api_version.unwrap_or_default();
    let kind = tm.kind.unwrap_or_default();
    let raw = unknown.raw.unwrap_or_default();
    use k8s_openapi::api as oa;
    use k8s_pb::api as pb;
    let mut v = match (api_version.as_str(), kind.as_str()) {
        ("v1", "Namespace") => decode::<pb::core::v1::Namespace, oa::core::v1::Namespace>(&raw)?,
        ("v1", "ConfigMap") => decode::<pb::core::v1::ConfigMap, oa::core::v1::ConfigMap>(&raw)?,
        ("v1", "Secret") => decode::<pb::core::v1::Secret, oa::core::v1::Secret>(&raw)?,
        ("v1", "Service") => decode::<pb::core::v1::Service, oa::core::v1::Service>(&raw)?,
        ("v1", "Pod") => decode::<pb::core::v1::Pod, oa::core::v1::Pod>(&raw)?,
        ("v1", "Node") => decode::<pb::core::v1::Node, oa::core::v1::Node>(&raw)?,
        ("v1", "Endpoints") => decode::<pb::core::v1::Endpoints, oa::core::v1::Endpoints>(&raw)?,
        ("v1", "Event") => decode::<pb::core::v1::Event, oa::core::v1::Event>(&raw)?,
        ("v1", "ServiceAccount") => {
            decode::<pb::core::v1::ServiceAccount, oa::core::v1::ServiceAccount>(&raw)?
        }
        ("v1", "Binding") => decode::<pb::core::v1::Binding, oa::core::v1::Binding>(&raw)?,
        ("v1", "ResourceQuota") => {
            decode::<pb::core::v1::ResourceQuota, oa::core::v1::ResourceQuota>(&raw)?
        }
        ("v1", "LimitRange") => decode::<pb::core::v1::LimitRange, oa::core::v1::LimitRange>(&raw)?,
        ("v1", "ReplicationController") => decode::<
            pb::core::v1::ReplicationController,
            oa::core::v1::ReplicationController,
        >(&raw)?,
        ("v1", "PodTemplate") => {
            decode::<pb::core::v1::PodTemplate, oa::core::v1::PodTemplate>(&raw)?
        }
        ("apps/v1", "Deployment") => {
            decode::<pb::apps::v1::Deployment, oa::apps::v1::Deployment>(&raw)?
        }
        ("apps/v1", "ReplicaSet") => {
            decode::<pb::apps::v1::ReplicaSet, oa::apps::v1::ReplicaSet>(&raw)?
        }
        ("apps/v1", "DaemonSet") => {
            decode::<pb::apps::v1::DaemonSet, oa::apps::v1::DaemonSet>(&raw)?
        }
        ("batch/v1", "Job") => decode::<pb::batch::v1::Job, oa::batch::v1::Job>(&raw)?,
        ("batch/v1", "CronJob") => decode::<pb::batch::v1::CronJob, oa::batch::v1::CronJob>(&raw)?,
        ("coordination.k8s.io/v1", "Lease") => {
            decode::<pb::coordination::v1::Lease, oa::coordination::v1::Lease>(&raw)?
        }
        ("discovery.k8s.io/v1", "EndpointSlice") => {
            decode::<pb::discovery::v1::EndpointSlice, oa::discovery::v1::EndpointSlice>(&raw)?
        }
        ("scheduling.k8s.io/v1", "PriorityClass") => {
            decode::<pb::scheduling::v1::PriorityClass, oa::scheduling::v1::PriorityClass>(&raw)?
        }
        ("policy/v1", "Eviction") => {
            decode::<pb::policy::v1::Eviction, oa::policy::v1::Eviction>(&raw)?
        }
        ("policy/v1", "PodDisruptionBudget") => decode::<
            pb::policy::v1::PodDisruptionBudget,
            oa::policy::v1::PodDisruptionBudget,
        >(&raw)?,
        ("autoscaling/v1", "Scale") => {
            decode::<pb::autoscaling::v1::Scale, oa::autoscaling::v1::Scale>(&raw)?
        }
        ("rbac.authorization.k8s.io/v1", "Role") => {
            decode::<pb::rbac::v1::Role, oa::rbac::v1::Role>(&raw)?
        }
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => {
            decode::<pb::rbac::v1::ClusterRole, oa::rbac::v1::ClusterRole>(&raw)?
        }
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => {
            decode::<pb::rbac::v1::RoleBinding, oa::rbac::v1::RoleBinding>(&raw)?
        }
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
            decode::<pb::rbac::v1::ClusterRoleBinding, oa::rbac::v1::ClusterRoleBinding>(&raw)?
        }
        ("authorization.k8s.io/v1", "SelfSubjectAccessReview") => decode::<
            pb::authorization::v1::SelfSubjectAccessReview,
            oa::authorization::v1::SelfSubjectAccessReview,
        >(&raw)?,
        ("authorization.k8s.io/v1", "SubjectAccessReview") => decode::<
            pb::authorization::v1::SubjectAccessReview,
            oa::authorization::v1::SubjectAccessReview,
        >(&raw)?,
        ("authorization.k8s.io/v1", "LocalSubjectAccessReview") => decode::<
            pb::authorization::v1::LocalSubjectAccessReview,
            oa::authorization::v1::LocalSubjectAccessReview,
        >(&raw)?,
        ("authorization.k8s.io/v1", "SelfSubjectRulesReview") => decode::<
            pb::authorization::v1::SelfSubjectRulesReview,
            oa::authorization::v1::SelfSubjectRulesReview,
        >(&raw)?,
        ("authentication.k8s.io/v1", "SelfSubjectReview") => decode::<
            pb::authentication::v1::SelfSubjectReview,
            oa::authentication::v1::SelfSubjectReview,
        >(&raw)?,
        ("authentication.k8s.io/v1", "TokenReview") => decode::<
            pb::authentication::v1::TokenReview,
            oa::authentication::v1::TokenReview,
        >(&raw)?,
        ("certificates.k8s.io/v1", "CertificateSigningRequest") => decode::<
            pb::certificates::v1::CertificateSigningRequest,
            oa::certificates::v1::CertificateSigningRequest,
        >(&raw)?,
        ("authentication.k8s.io/v1", "TokenRequest") => decode::<
            pb::authentication::v1::TokenRequest,
            oa::authentication::v1::TokenRequest,
        >(&raw)?,
        (_, "DeleteOptions") => decode::<
            k8s_pb::apimachinery::pkg::apis::meta::v1::DeleteOptions,
            k8s_openapi::apimachinery::pkg::apis::meta::v1::DeleteOptions,
        >(&raw)?,
        _ => {
            return Err(Error::unsupported_media_type(
                MEDIA_TYPE,
                &["application/json", "application/yaml"],
            ))
        }
    };
    drop_zero_generation(&mut v);
    if let Some(o) = v.as_object_mut() {
        o.insert("apiVersion".into(), Value::String(api_version));
        o.insert("kind".into(), Value::String(kind));
    }
    Ok(v)
}

/// Go writes `generation: 0` for templates' metadata, which JSON omits.
fn drop_zero_generation(v: &mut Value) {
    match v {
        Value::Object(o) => {
            if let Some(Value::Object(m)) = o.get_mut("metadata") {
                if m.get("generation").and_then(Value::as_i64) == Some(0) {
                    m.remove("generation");
                }
            }
            o.values_mut().for_each(drop_zero_generation);
        }
        Value::Array(a) => a.iter_mut().for_each(drop_zero_generation),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_pb::api::apps::v1 as pb;
    use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_protobuf_object_decodes_or_is_refused(
            which in proptest::sample::select(vec![
                ("v1", "Pod"), ("v1", "Namespace"), ("v1", "Service"), ("v1", "ConfigMap"),
                ("v1", "Secret"), ("v1", "Node"), ("v1", "Binding"), ("apps/v1", "Deployment"),
                ("policy/v1", "Eviction"), ("policy/v1", "PodDisruptionBudget"),
                ("autoscaling/v1", "Scale"), ("v1", "DeleteOptions"),
                ("v1", "ResourceQuota"), ("v1", "LimitRange"),
                ("authentication.k8s.io/v1", "TokenRequest"), ("v1", "Nope"),
            ]),
            raw in proptest::collection::vec(any::<u8>(), 0..256),
            tail in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut body = envelope(which.0, which.1, raw);
            for b in [body.clone(), [MAGIC, &tail[..]].concat(), tail.clone()] {
                if let Err(e) = decode_object(&b) {
                    prop_assert!(e.code() < 500, "{}", e);
                }
            }
            body.truncate(body.len() / 2);
            if let Err(e) = decode_object(&body) {
                prop_assert!(e.code() < 500, "{}", e);
            }
        }
    }

    fn envelope(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
        let u = k8s_pb::apimachinery::pkg::runtime::Unknown {
            type_meta: Some(k8s_pb::apimachinery::pkg::runtime::TypeMeta {
                api_version: Some(api_version.into()),
                kind: Some(kind.into()),
            }),
            raw: Some(raw),
            content_encoding: None,
            content_type: None,
        };
        let mut out = MAGIC.to_vec();
        out.extend(u.encode_to_vec());
        out
    }

    #[test]
    fn deployment_decodes_to_kubernetes_json() {
        let d = pb::Deployment {
            metadata: Some(meta::ObjectMeta {
                name: Some("web".into()),
                labels: [("app".to_string(), "web".to_string())].into(),
                creation_timestamp: Some(meta::Time {
                    seconds: Some(0),
                    nanos: Some(0),
                }),
                ..Default::default()
            }),
            spec: Some(pb::DeploymentSpec {
                replicas: Some(3),
                selector: Some(meta::LabelSelector {
                    match_labels: [("app".to_string(), "web".to_string())].into(),
                    ..Default::default()
                }),
                template: Some(k8s_pb::api::core::v1::PodTemplateSpec {
                    metadata: None,
                    spec: Some(k8s_pb::api::core::v1::PodSpec {
                        containers: vec![k8s_pb::api::core::v1::Container {
                            name: Some("nginx".into()),
                            image: Some("nginx:1.25".into()),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }),
                }),
                ..Default::default()
            }),
            status: None,
        };
        let v = decode_object(&envelope("apps/v1", "Deployment", d.encode_to_vec())).unwrap();
        assert_eq!(v["kind"], "Deployment");
        assert_eq!(v["apiVersion"], "apps/v1");
        assert_eq!(v["metadata"]["name"], "web");
        assert_eq!(v["spec"]["replicas"], 3);
        assert_eq!(
            v["spec"]["template"]["spec"]["containers"][0]["image"],
            "nginx:1.25"
        );
        assert_eq!(v["spec"]["selector"]["matchLabels"]["app"], "web");
    }

    #[test]
    fn secret_bytes_and_bad_bodies() {
        let s = k8s_pb::api::core::v1::Secret {
            metadata: Some(meta::ObjectMeta {
                name: Some("s".into()),
                ..Default::default()
            }),
            data: [("k".to_string(), b"v".to_vec())].into(),
            ..Default::default()
        };
        let v = decode_object(&envelope("v1", "Secret", s.encode_to_vec())).unwrap();
        assert_eq!(v["data"]["k"], "dg==");
        assert_eq!(decode_object(b"nope").unwrap_err().code(), 400);
        assert_eq!(
            decode_object(&envelope("v1", "Nope", vec![]))
                .unwrap_err()
                .code(),
            415
        );
        assert_eq!(
            decode_object(&envelope("v1", "Secret", vec![0xff, 0xff]))
                .unwrap_err()
                .code(),
            400
        );
    }
}
