//! `apiextensions.k8s.io/v1` `ConversionReview`: what the API server sends a
//! CustomResourceDefinition's conversion webhook (objects and the version wanted) and what the
//! webhook answers (the objects in that version, or why not), with the field names of
//! Kubernetes' `k8s.io/apiextensions-apiserver` types. `v1beta1` has the same shape.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Status;

/// The `apiVersion` of `apiextensions.k8s.io/v1` reviews.
pub const CONVERSION_V1: &str = "apiextensions.k8s.io/v1";
/// The `apiVersion` of `apiextensions.k8s.io/v1beta1` reviews (same shape as `v1`).
pub const CONVERSION_V1BETA1: &str = "apiextensions.k8s.io/v1beta1";
/// The `kind` of a review.
pub const CONVERSION_REVIEW: &str = "ConversionReview";

/// A conversion review: a `request` from the API server, a `response` from the webhook.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConversionReview {
    /// `apiextensions.k8s.io/v1` (or `v1beta1`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_version: String,
    /// `ConversionReview`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    /// The objects to convert (set by the API server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<ConversionRequest>,
    /// The converted objects (set by the webhook).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<ConversionResponse>,
}

impl ConversionReview {
    /// The review answering `self` with `response`: the same `apiVersion` and `kind`, the
    /// response and no request.
    pub fn answer(&self, response: ConversionResponse) -> ConversionReview {
        ConversionReview {
            api_version: self.api_version.clone(),
            kind: CONVERSION_REVIEW.into(),
            request: None,
            response: Some(response),
        }
    }
}

/// Objects to convert.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConversionRequest {
    /// Identifies this round trip; the response must carry it back.
    pub uid: String,
    /// The `apiVersion` to convert to (`example.skiff.dev/v2`).
    #[serde(rename = "desiredAPIVersion")]
    pub desired_api_version: String,
    /// The objects, each whole (`apiVersion`, `kind`, `metadata`, ...).
    #[serde(default)]
    pub objects: Vec<Value>,
}

/// The converted objects, or why they could not be.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConversionResponse {
    /// The request's `uid`.
    pub uid: String,
    /// The objects in the desired version, in the request's order, one for each (empty on
    /// failure). Only labels and annotations of their metadata may differ from the
    /// originals'.
    #[serde(default)]
    pub converted_objects: Vec<Value>,
    /// `Success`, or `Failure` with a message.
    #[serde(default)]
    pub result: Status,
}

impl ConversionResponse {
    /// The objects converted.
    pub fn success(req: &ConversionRequest, converted: Vec<Value>) -> ConversionResponse {
        ConversionResponse {
            uid: req.uid.clone(),
            converted_objects: converted,
            result: Status::success(),
        }
    }

    /// No object converted, because of `message`.
    pub fn failure(req: &ConversionRequest, message: impl Into<String>) -> ConversionResponse {
        ConversionResponse {
            uid: req.uid.clone(),
            converted_objects: Vec::new(),
            result: Status {
                status: Some("Failure".into()),
                message: Some(message.into()),
                ..Default::default()
            },
        }
    }

    /// Converts each object with `convert(object, desired_api_version)`, which must set
    /// `apiVersion` (use [`set_api_version`]). The first error fails the whole review, as
    /// Kubernetes expects.
    pub fn convert_each(
        req: &ConversionRequest,
        mut convert: impl FnMut(Value, &str) -> Result<Value, String>,
    ) -> ConversionResponse {
        let mut out = Vec::with_capacity(req.objects.len());
        for obj in &req.objects {
            match convert(obj.clone(), &req.desired_api_version) {
                Ok(o) => out.push(o),
                Err(e) => return Self::failure(req, e),
            }
        }
        Self::success(req, out)
    }

    /// Whether the result is `Success`.
    pub fn is_success(&self) -> bool {
        self.result.status.as_deref() == Some("Success")
    }
}

/// Sets an object's `apiVersion`.
pub fn set_api_version(obj: &mut Value, api_version: &str) {
    if let Some(m) = obj.as_object_mut() {
        m.insert("apiVersion".into(), Value::String(api_version.into()));
    }
}

/// The version part of an `apiVersion` (`v2` of `example.skiff.dev/v2`, `v1` of `v1`).
pub fn version_of(api_version: &str) -> &str {
    api_version.rsplit('/').next().unwrap_or(api_version)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn review() -> ConversionReview {
        serde_json::from_value(json!({
            "kind": "ConversionReview",
            "apiVersion": "apiextensions.k8s.io/v1",
            "request": {
                "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
                "desiredAPIVersion": "example.skiff.dev/v2",
                "objects": [
                    {"apiVersion": "example.skiff.dev/v1", "kind": "Widget",
                     "metadata": {"name": "a", "namespace": "default", "uid": "1"},
                     "spec": {"size": 3}},
                    {"apiVersion": "example.skiff.dev/v1", "kind": "Widget",
                     "metadata": {"name": "b", "namespace": "default", "uid": "2"},
                     "spec": {"size": 5}}
                ]
            }
        }))
        .unwrap()
    }

    #[test]
    fn parses_a_request_and_answers_in_its_version() {
        let review = review();
        let req = review.request.as_ref().unwrap();
        assert_eq!(req.desired_api_version, "example.skiff.dev/v2");
        assert_eq!(version_of(&req.desired_api_version), "v2");
        assert_eq!(version_of("v1"), "v1");
        assert_eq!(req.objects.len(), 2);
        let resp = ConversionResponse::convert_each(req, |mut o, desired| {
            let size = o["spec"]["size"].take();
            o["spec"] = json!({"dimensions": {"size": size}});
            set_api_version(&mut o, desired);
            Ok(o)
        });
        assert!(resp.is_success());
        let answer = serde_json::to_value(review.answer(resp)).unwrap();
        assert_eq!(
            answer,
            json!({
                "apiVersion": "apiextensions.k8s.io/v1", "kind": "ConversionReview",
                "response": {
                    "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
                    "convertedObjects": [
                        {"apiVersion": "example.skiff.dev/v2", "kind": "Widget",
                         "metadata": {"name": "a", "namespace": "default", "uid": "1"},
                         "spec": {"dimensions": {"size": 3}}},
                        {"apiVersion": "example.skiff.dev/v2", "kind": "Widget",
                         "metadata": {"name": "b", "namespace": "default", "uid": "2"},
                         "spec": {"dimensions": {"size": 5}}}
                    ],
                    "result": {"status": "Success"}
                }
            })
        );
    }

    #[test]
    fn one_failure_fails_the_review() {
        let review = review();
        let req = review.request.as_ref().unwrap();
        let resp = ConversionResponse::convert_each(req, |o, _| {
            if o["metadata"]["name"] == "b" {
                Err("b cannot be converted".into())
            } else {
                Ok(o)
            }
        });
        assert!(!resp.is_success());
        assert_eq!(
            serde_json::to_value(&resp).unwrap(),
            json!({"uid": req.uid, "convertedObjects": [],
                   "result": {"status": "Failure", "message": "b cannot be converted"}})
        );
    }
}
