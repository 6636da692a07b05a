//! `admission.k8s.io/v1` `AdmissionReview`: what the API server sends an admission webhook
//! and what the webhook answers, with the field names of Kubernetes' `k8s.io/api/admission/v1`
//! types. `v1beta1` has the same shape; the server answers in the version it was asked in.

use std::collections::BTreeMap;

use k8s_openapi::api::authentication::v1::UserInfo;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Status;

/// The `apiVersion` of `admission.k8s.io/v1` reviews.
pub const ADMISSION_V1: &str = "admission.k8s.io/v1";
/// The `apiVersion` of `admission.k8s.io/v1beta1` reviews (same shape as `v1`).
pub const ADMISSION_V1BETA1: &str = "admission.k8s.io/v1beta1";
/// The `kind` of a review.
pub const ADMISSION_REVIEW: &str = "AdmissionReview";
/// The only `patchType` Kubernetes accepts.
pub const JSON_PATCH: &str = "JSONPatch";

/// An admission review: a `request` from the API server, a `response` from the webhook.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionReview {
    /// `admission.k8s.io/v1` (or `v1beta1`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_version: String,
    /// `AdmissionReview`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    /// What is being admitted (set by the API server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<AdmissionRequest>,
    /// The webhook's verdict (set by the webhook).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<AdmissionResponse>,
}

impl AdmissionReview {
    /// The review answering `self` with `response`: the same `apiVersion` and `kind`, the
    /// response and no request.
    pub fn answer(&self, response: AdmissionResponse) -> AdmissionReview {
        AdmissionReview {
            api_version: self.api_version.clone(),
            kind: ADMISSION_REVIEW.into(),
            request: None,
            response: Some(response),
        }
    }
}

/// A group, version and kind (`metav1.GroupVersionKind`): `{"group": "apps", "version": "v1",
/// "kind": "Deployment"}`; the core group is `""`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GroupVersionKind {
    /// The API group (`""` for the core group).
    #[serde(default)]
    pub group: String,
    /// The version.
    #[serde(default)]
    pub version: String,
    /// The kind.
    #[serde(default)]
    pub kind: String,
}

/// A group, version and resource (`metav1.GroupVersionResource`): `{"group": "", "version":
/// "v1", "resource": "pods"}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GroupVersionResource {
    /// The API group (`""` for the core group).
    #[serde(default)]
    pub group: String,
    /// The version.
    #[serde(default)]
    pub version: String,
    /// The resource (plural, lower case).
    #[serde(default)]
    pub resource: String,
}

/// The operation being admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Operation {
    /// `CREATE`.
    Create,
    /// `UPDATE`.
    Update,
    /// `DELETE`.
    Delete,
    /// `CONNECT` (exec, attach, port-forward, proxy).
    Connect,
}

/// What the API server asks a webhook to admit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionRequest {
    /// Identifies this round trip; the response must carry it back.
    pub uid: String,
    /// The type of the object, in the version the webhook asked for (`v1.Pod`,
    /// `autoscaling/v1.Scale`).
    pub kind: GroupVersionKind,
    /// The resource, in the version the webhook asked for.
    pub resource: GroupVersionResource,
    /// The subresource (`status`, `scale`), if any.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sub_resource: String,
    /// The type of the original request, when it differs from `kind` (an equivalent match).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_kind: Option<GroupVersionKind>,
    /// The resource of the original request, when it differs from `resource`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_resource: Option<GroupVersionResource>,
    /// The subresource of the original request.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub request_sub_resource: String,
    /// The object's name; empty on a CREATE whose name the server generates.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// The object's namespace; empty for cluster-scoped objects.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// The operation (a patch may be a CREATE or an UPDATE).
    pub operation: Operation,
    /// Who is asking.
    #[serde(default)]
    pub user_info: UserInfo,
    /// The object as it would be stored (absent for DELETE and CONNECT).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<Value>,
    /// The object as it is stored (UPDATE and DELETE).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_object: Option<Value>,
    /// Whether nothing will be persisted (a dry run): a webhook with side effects must not
    /// have them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<bool>,
    /// The operation's options: `meta.k8s.io/v1` `CreateOptions`, `UpdateOptions` or
    /// `DeleteOptions`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<Value>,
}

impl AdmissionRequest {
    /// `object` as a `T` (`None` when there is no object).
    pub fn object_as<T: DeserializeOwned>(&self) -> Result<Option<T>, serde_json::Error> {
        decode(self.object.as_ref())
    }

    /// `oldObject` as a `T` (`None` when there is no old object).
    pub fn old_object_as<T: DeserializeOwned>(&self) -> Result<Option<T>, serde_json::Error> {
        decode(self.old_object.as_ref())
    }

    /// Whether this is a dry run.
    pub fn is_dry_run(&self) -> bool {
        self.dry_run == Some(true)
    }

    /// The object's labels (the new object's, or the old one's for a DELETE).
    pub fn labels(&self) -> BTreeMap<String, String> {
        let obj = self.object.as_ref().or(self.old_object.as_ref());
        obj.and_then(|o| o.pointer("/metadata/labels"))
            .and_then(|l| serde_json::from_value(l.clone()).ok())
            .unwrap_or_default()
    }
}

fn decode<T: DeserializeOwned>(v: Option<&Value>) -> Result<Option<T>, serde_json::Error> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(v) => T::deserialize(v).map(Some),
    }
}

/// A webhook's verdict.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionResponse {
    /// The request's `uid`.
    pub uid: String,
    /// Whether the request may go on.
    pub allowed: bool,
    /// Why it was refused: the API server shows the message to the client as `admission
    /// webhook "NAME" denied the request: MESSAGE`, with this code (400 when under 400).
    #[serde(rename = "status", default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Status>,
    /// A JSON patch (RFC 6902) to apply to the object, as bytes (base64 in JSON). Only mutating
    /// webhooks may return one.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "base64_bytes"
    )]
    pub patch: Option<Vec<u8>>,
    /// `JSONPatch` when there is a patch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch_type: Option<String>,
    /// Annotations for the request's audit event (the API server prefixes each key with the
    /// webhook's name).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub audit_annotations: BTreeMap<String, String>,
    /// Warnings for the client (`Warning` headers; kubectl prints them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// Why [`AdmissionResponse::mutate`] could not build a patch.
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    /// The request carries no object to change (a DELETE or CONNECT).
    #[error("the request has no object to patch")]
    NoObject,
    /// The object is not a `T`, or the changed `T` could not be encoded.
    #[error("object: {0}")]
    Json(#[from] serde_json::Error),
}

impl AdmissionResponse {
    /// Admits `req` unchanged.
    pub fn allow(req: &AdmissionRequest) -> AdmissionResponse {
        AdmissionResponse {
            uid: req.uid.clone(),
            allowed: true,
            ..Default::default()
        }
    }

    /// Refuses `req` with `message` and code 403 (`Forbidden`), as a Kubernetes denial does.
    pub fn deny(req: &AdmissionRequest, message: impl Into<String>) -> AdmissionResponse {
        Self::deny_with(req, 403, "Forbidden", message)
    }

    /// Refuses `req` with `message`, an HTTP `code` (400 or more; the API server raises lower
    /// ones to 400) and a Kubernetes `reason` (`Forbidden`, `Invalid`, `BadRequest`, ...).
    pub fn deny_with(
        req: &AdmissionRequest,
        code: u16,
        reason: impl Into<String>,
        message: impl Into<String>,
    ) -> AdmissionResponse {
        AdmissionResponse {
            uid: req.uid.clone(),
            allowed: false,
            result: Some(Status::failure(code, reason, message)),
            ..Default::default()
        }
    }

    /// This response with `patch` to apply (no patch at all when it is empty).
    pub fn with_patch(mut self, patch: &json_patch::Patch) -> Result<Self, serde_json::Error> {
        if patch.0.is_empty() {
            self.patch = None;
            self.patch_type = None;
        } else {
            self.patch = Some(serde_json::to_vec(patch)?);
            self.patch_type = Some(JSON_PATCH.into());
        }
        Ok(self)
    }

    /// Admits `req` with the changes `change` makes to its object: the patch is the
    /// difference between the object before and after (json-patch's `diff`), so only what
    /// `change` touched is sent back.
    pub fn mutate(
        req: &AdmissionRequest,
        change: impl FnOnce(&mut Value),
    ) -> Result<AdmissionResponse, PatchError> {
        let before = req.object.as_ref().ok_or(PatchError::NoObject)?;
        let mut after = before.clone();
        change(&mut after);
        let patch = json_patch::diff(before, &after);
        Ok(Self::allow(req).with_patch(&patch)?)
    }

    /// As [`AdmissionResponse::mutate`], with the object as a typed `T` (a k8s-openapi `Pod`).
    /// The patch is the difference between `T` encoded before and after the change, so
    /// fields `T` drops or writes differently are not touched.
    pub fn mutate_as<T: Serialize + DeserializeOwned>(
        req: &AdmissionRequest,
        change: impl FnOnce(&mut T),
    ) -> Result<AdmissionResponse, PatchError> {
        let mut obj: T = req.object_as()?.ok_or(PatchError::NoObject)?;
        let before = serde_json::to_value(&obj)?;
        change(&mut obj);
        let after = serde_json::to_value(&obj)?;
        let patch = json_patch::diff(&before, &after);
        Ok(Self::allow(req).with_patch(&patch)?)
    }

    /// This response with a warning for the client.
    pub fn warn(mut self, warning: impl Into<String>) -> Self {
        self.warnings.push(warning.into());
        self
    }

    /// This response with an annotation for the request's audit event.
    pub fn annotate(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.audit_annotations.insert(key.into(), value.into());
        self
    }

    /// The patch, decoded.
    pub fn json_patch(&self) -> Option<Result<json_patch::Patch, serde_json::Error>> {
        self.patch.as_deref().map(serde_json::from_slice)
    }
}

/// `[]byte` as Go's `encoding/json` writes it: standard base64.
mod base64_bytes {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(b) => s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(b)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(s) => base64::engine::general_purpose::STANDARD
                .decode(s.as_bytes())
                .map(Some)
                .map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, Pod};
    use serde_json::json;

    /// A review as kube-apiserver sends it for `kubectl run` (a pod CREATE), `null`s and all.
    fn pod_create_review() -> Value {
        json!({
            "kind": "AdmissionReview",
            "apiVersion": "admission.k8s.io/v1",
            "request": {
                "uid": "0df28fbd-5f5f-11e8-bc74-36e6bb280816",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
                "requestResource": {"group": "", "version": "v1", "resource": "pods"},
                "name": "web",
                "namespace": "default",
                "operation": "CREATE",
                "userInfo": {
                    "username": "kubernetes-admin",
                    "groups": ["kubeadm:cluster-admins", "system:authenticated"],
                    "extra": {"authentication.kubernetes.io/credential-id": ["X509SHA256=ab"]}
                },
                "object": {
                    "kind": "Pod", "apiVersion": "v1",
                    "metadata": {"name": "web", "namespace": "default",
                                 "labels": {"run": "web", "example.com/tier": "front"}},
                    "spec": {"containers": [{"name": "web", "image": "nginx", "resources": {}}]},
                    "status": {}
                },
                "oldObject": null,
                "dryRun": false,
                "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1",
                            "fieldManager": "kubectl-run"}
            }
        })
    }

    fn request() -> AdmissionRequest {
        let review: AdmissionReview = serde_json::from_value(pod_create_review()).unwrap();
        review.request.unwrap()
    }

    #[test]
    fn parses_a_request_as_kube_apiserver_sends_it() {
        let review: AdmissionReview = serde_json::from_value(pod_create_review()).unwrap();
        assert_eq!(review.api_version, ADMISSION_V1);
        assert_eq!(review.kind, ADMISSION_REVIEW);
        let req = review.request.unwrap();
        assert_eq!(req.uid, "0df28fbd-5f5f-11e8-bc74-36e6bb280816");
        assert_eq!(
            req.kind,
            GroupVersionKind {
                group: "".into(),
                version: "v1".into(),
                kind: "Pod".into()
            }
        );
        assert_eq!(req.resource.resource, "pods");
        assert_eq!(req.request_resource.as_ref().unwrap().resource, "pods");
        assert_eq!(req.sub_resource, "");
        assert_eq!(
            (req.namespace.as_str(), req.name.as_str()),
            ("default", "web")
        );
        assert_eq!(req.operation, Operation::Create);
        assert_eq!(req.user_info.username.as_deref(), Some("kubernetes-admin"));
        assert_eq!(req.user_info.groups.as_ref().unwrap().len(), 2);
        assert_eq!(
            req.user_info.extra.as_ref().unwrap()["authentication.kubernetes.io/credential-id"],
            ["X509SHA256=ab"]
        );
        assert!(req.old_object.is_none(), "null is no old object");
        assert!(!req.is_dry_run());
        assert_eq!(req.options.as_ref().unwrap()["fieldManager"], "kubectl-run");
        let pod: Pod = req.object_as().unwrap().unwrap();
        assert_eq!(
            pod.spec.unwrap().containers[0].image.as_deref(),
            Some("nginx")
        );
        assert_eq!(req.labels()["example.com/tier"], "front");
        assert!(req.old_object_as::<Pod>().unwrap().is_none());
    }

    #[test]
    fn parses_subresource_delete_and_dry_run_requests() {
        let review: AdmissionReview = serde_json::from_value(json!({
            "apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview",
            "request": {"uid": "u", "kind": {"group": "autoscaling", "version": "v1", "kind": "Scale"},
                "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
                "subResource": "scale", "requestSubResource": "scale",
                "namespace": "ns", "name": "d", "operation": "DELETE", "userInfo": {},
                "oldObject": {"metadata": {"labels": {"a": "b"}}}, "dryRun": true}
        }))
        .unwrap();
        let req = review.request.unwrap();
        assert_eq!(req.operation, Operation::Delete);
        assert_eq!(
            (req.sub_resource.as_str(), req.kind.group.as_str()),
            ("scale", "autoscaling")
        );
        assert!(req.is_dry_run());
        assert!(req.object.is_none());
        assert_eq!(
            req.labels()["a"],
            "b",
            "a DELETE's labels are the old object's"
        );
        // An operation Kubernetes does not have is not a request.
        let mut bad = pod_create_review();
        bad["request"]["operation"] = json!("PATCH");
        assert!(serde_json::from_value::<AdmissionReview>(bad).is_err());
    }

    #[test]
    fn serialises_responses_with_kubernetes_field_names() {
        let req = request();
        let allow = serde_json::to_value(AdmissionResponse::allow(&req)).unwrap();
        assert_eq!(allow, json!({"uid": req.uid, "allowed": true}));

        let deny = AdmissionResponse::deny(&req, "the label app is required")
            .warn("consider a team label")
            .annotate("reason", "missing-label");
        assert_eq!(
            serde_json::to_value(&deny).unwrap(),
            json!({
                "uid": req.uid, "allowed": false,
                "status": {"status": "Failure", "message": "the label app is required",
                           "reason": "Forbidden", "code": 403},
                "auditAnnotations": {"reason": "missing-label"},
                "warnings": ["consider a team label"]
            })
        );
        let invalid = AdmissionResponse::deny_with(&req, 422, "Invalid", "bad");
        assert_eq!(invalid.result.as_ref().unwrap().code, Some(422));

        // The review answering a request keeps its version and carries no request.
        let review: AdmissionReview = serde_json::from_value(pod_create_review()).unwrap();
        let answer = serde_json::to_value(review.answer(AdmissionResponse::allow(&req))).unwrap();
        assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(answer["kind"], "AdmissionReview");
        assert!(answer.get("request").is_none());
        assert_eq!(answer["response"]["allowed"], true);
    }

    #[test]
    fn patch_is_base64_json_patch() {
        let req = request();
        let patch: json_patch::Patch = serde_json::from_value(
            json!([{"op": "add", "path": "/metadata/labels/x", "value": "y"}]),
        )
        .unwrap();
        let resp = AdmissionResponse::allow(&req).with_patch(&patch).unwrap();
        let v = serde_json::to_value(&resp).unwrap();
        assert_eq!(v["patchType"], "JSONPatch");
        use base64::Engine as _;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(v["patch"].as_str().unwrap())
            .unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&raw).unwrap(),
            json!([{"op": "add", "path": "/metadata/labels/x", "value": "y"}])
        );
        // Read back, the bytes are the same.
        let back: AdmissionResponse = serde_json::from_value(v).unwrap();
        assert_eq!(back, resp);
        // An empty patch is no patch.
        let none = AdmissionResponse::allow(&req)
            .with_patch(&json_patch::Patch(vec![]))
            .unwrap();
        assert_eq!(
            serde_json::to_value(none).unwrap(),
            json!({"uid": req.uid, "allowed": true})
        );
        // Not base64: refused.
        assert!(serde_json::from_value::<AdmissionResponse>(
            json!({"uid": "u", "allowed": true, "patch": "***"})
        )
        .is_err());
    }

    /// Applies a response's patch to the request's object.
    fn patched(req: &AdmissionRequest, resp: &AdmissionResponse) -> Value {
        let mut obj = req.object.clone().unwrap();
        json_patch::patch(&mut obj, &resp.json_patch().unwrap().unwrap()).unwrap();
        obj
    }

    #[test]
    fn mutate_sends_only_the_change() {
        let req = request();
        let resp = AdmissionResponse::mutate(&req, |o| {
            o["metadata"]["labels"]["injected/by"] = json!("test");
        })
        .unwrap();
        assert!(resp.allowed);
        let ops: Value = serde_json::to_value(resp.json_patch().unwrap().unwrap()).unwrap();
        // The `/` in the key is escaped as `~1`.
        assert_eq!(
            ops,
            json!([{"op": "add", "path": "/metadata/labels/injected~1by", "value": "test"}])
        );
        let after = patched(&req, &resp);
        assert_eq!(after["metadata"]["labels"]["injected/by"], "test");
        assert_eq!(after["metadata"]["labels"]["run"], "web");

        // No change, no patch.
        let same = AdmissionResponse::mutate(&req, |_| {}).unwrap();
        assert!(same.patch.is_none() && same.patch_type.is_none());
    }

    #[test]
    fn mutate_as_touches_no_field_the_type_writes_differently() {
        let req = request();
        let resp = AdmissionResponse::mutate_as(&req, |pod: &mut Pod| {
            let spec = pod.spec.get_or_insert_with(Default::default);
            spec.containers.push(Container {
                name: "sidecar".into(),
                image: Some("proxy:1".into()),
                ..Default::default()
            });
        })
        .unwrap();
        let ops: Value = serde_json::to_value(resp.json_patch().unwrap().unwrap()).unwrap();
        assert_eq!(
            ops,
            json!([{"op": "add", "path": "/spec/containers/1",
                    "value": {"name": "sidecar", "image": "proxy:1"}}]),
            "only the new container: the empty `resources` and `status` stay as they were"
        );
        let after = patched(&req, &resp);
        assert_eq!(after["spec"]["containers"][1]["name"], "sidecar");
        assert_eq!(after["spec"]["containers"][0]["resources"], json!({}));

        // A DELETE has no object to change.
        let mut del = req.clone();
        del.operation = Operation::Delete;
        del.old_object = del.object.take();
        assert!(matches!(
            AdmissionResponse::mutate_as(&del, |_: &mut Pod| {}),
            Err(PatchError::NoObject)
        ));
        // An object that is not a T.
        let mut odd = req;
        odd.object = Some(json!({"spec": {"containers": "no"}}));
        assert!(matches!(
            AdmissionResponse::mutate_as(&odd, |_: &mut Pod| {}),
            Err(PatchError::Json(_))
        ));
    }
}
