//! The API server's error type and its one conversion to a Kubernetes `Status`.
//!
//! Every failure a client can see is an [`Error`]; [`Error::status`] turns it into the
//! `Status` object (code, reason, message, details) that kube-apiserver would send.

use serde_json::{json, Value};

/// A result whose error is the API server's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a field was rejected: the `reason` of a `StatusCause`, as Kubernetes names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CauseKind {
    /// A required field is missing.
    Required,
    /// A value is malformed or out of range.
    Invalid,
    /// A value is not one of the allowed enum values.
    NotSupported,
    /// A value repeats one that must be unique.
    Duplicate,
    /// A field may not be set or changed.
    Forbidden,
    /// A value is too long.
    TooLong,
    /// A list or map has too many items.
    TooMany,
    /// The field is not known to the schema.
    Unknown,
    /// A value names something that does not exist.
    NotFound,
}

impl CauseKind {
    fn reason(self) -> &'static str {
        match self {
            CauseKind::Required => "FieldValueRequired",
            CauseKind::Invalid => "FieldValueInvalid",
            CauseKind::NotSupported => "FieldValueNotSupported",
            CauseKind::Duplicate => "FieldValueDuplicate",
            CauseKind::Forbidden => "FieldValueForbidden",
            CauseKind::TooLong => "FieldValueTooLong",
            CauseKind::TooMany => "FieldValueTooMany",
            CauseKind::Unknown => "FieldValueUnknown",
            CauseKind::NotFound => "FieldValueNotFound",
        }
    }
}

/// One field-level problem, rendered as kube-apiserver renders a `field.Error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    /// What kind of problem.
    pub kind: CauseKind,
    /// The field path, e.g. `spec.containers[0].image`.
    pub field: String,
    /// The detail after the kind's standard words.
    pub message: String,
}

impl Cause {
    /// A missing required field.
    pub fn required(field: impl Into<String>) -> Self {
        Cause {
            kind: CauseKind::Required,
            field: field.into(),
            message: String::new(),
        }
    }

    /// A missing required field, with why it is required.
    pub fn required_because(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Cause {
            kind: CauseKind::Required,
            field: field.into(),
            message: detail.into(),
        }
    }

    /// A bad value, with the value and the reason.
    pub fn invalid(field: impl Into<String>, value: &Value, detail: impl Into<String>) -> Self {
        Cause {
            kind: CauseKind::Invalid,
            field: field.into(),
            message: format!("{}: {}", render_value(value), detail.into()),
        }
    }

    /// A value outside an enum.
    pub fn not_supported(field: impl Into<String>, value: &str, allowed: &[&str]) -> Self {
        let allowed: Vec<String> = allowed.iter().map(|a| format!("\"{a}\"")).collect();
        Cause {
            kind: CauseKind::NotSupported,
            field: field.into(),
            message: format!("\"{value}\": supported values: {}", allowed.join(", ")),
        }
    }

    /// A repeated value that must be unique.
    pub fn duplicate(field: impl Into<String>, value: &Value) -> Self {
        Cause {
            kind: CauseKind::Duplicate,
            field: field.into(),
            message: render_value(value),
        }
    }

    /// A value naming something that does not exist.
    pub fn not_found(field: impl Into<String>, value: &Value) -> Self {
        Cause {
            kind: CauseKind::NotFound,
            field: field.into(),
            message: render_value(value),
        }
    }

    /// A field that may not be set or changed, with the reason.
    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Cause {
            kind: CauseKind::Forbidden,
            field: field.into(),
            message: detail.into(),
        }
    }

    /// A value that is too long.
    pub fn too_long(field: impl Into<String>, max: usize) -> Self {
        Cause {
            kind: CauseKind::TooLong,
            field: field.into(),
            message: format!("may not be more than {max} bytes"),
        }
    }

    /// An immutable field that an update tried to change.
    pub fn immutable(field: impl Into<String>) -> Self {
        let field = field.into();
        Cause {
            kind: CauseKind::Invalid,
            field,
            message: "field is immutable".into(),
        }
    }

    /// The human text: `spec.x: Required value`, `spec.y: Invalid value: "z": why`.
    pub fn text(&self) -> String {
        let head = match self.kind {
            CauseKind::Required => "Required value",
            CauseKind::Invalid => "Invalid value",
            CauseKind::NotSupported => "Unsupported value",
            CauseKind::Duplicate => "Duplicate value",
            CauseKind::Forbidden => "Forbidden",
            CauseKind::TooLong => "Too long",
            CauseKind::TooMany => "Too many",
            CauseKind::Unknown => "Unknown field",
            CauseKind::NotFound => "Not found",
        };
        if self.message == "field is immutable" {
            // kube-apiserver prints immutable-field errors without the value.
            format!("{}: {}", self.field, self.message)
        } else if self.message.is_empty() {
            format!("{}: {head}", self.field)
        } else {
            format!("{}: {head}: {}", self.field, self.message)
        }
    }

    fn to_json(&self) -> Value {
        let message = self.text();
        let message = message
            .strip_prefix(&format!("{}: ", self.field))
            .unwrap_or(&message)
            .to_string();
        json!({"reason": self.kind.reason(), "message": message, "field": self.field})
    }
}

fn render_value(value: &Value) -> String {
    match value {
        Value::String(s) => format!("\"{s}\""),
        Value::Null => "null".into(),
        other => other.to_string(),
    }
}

/// A failure with a Kubernetes status code and reason, ready to send to a client.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// The `reason` word (`NotFound`, `Conflict`, ...).
    pub reason: &'static str,
    /// The human-readable message.
    pub message: String,
    /// The `details` object, if any.
    pub details: Option<Value>,
}

/// Everything that can go wrong while serving a request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A failure that already has its Kubernetes status.
    #[error("{}", .0.message)]
    Api(Box<ApiError>),
    /// etcd could not be reached or refused the request.
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    /// A stored object could not be decoded: the store holds something we did not write.
    #[error("decoding stored object {key}: {source}")]
    Corrupt {
        /// The etcd key.
        key: String,
        /// Why it failed.
        #[source]
        source: serde_json::Error,
    },
    /// An internal invariant failed.
    #[error("internal error: {0}")]
    Internal(String),
    /// A stored value could not be read back: not decrypted by any configured provider.
    #[error("unable to transform key {key:?}: {source}")]
    Unreadable {
        /// The etcd key.
        key: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A value could not be encrypted for storage (so nothing was written).
    #[error("failed to encrypt key {key:?}: {source}")]
    Unwritable {
        /// The etcd key.
        key: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl From<ApiError> for Error {
    fn from(e: ApiError) -> Self {
        Error::Api(Box::new(e))
    }
}

impl Error {
    fn api(code: u16, reason: &'static str, message: String, details: Option<Value>) -> Self {
        Error::Api(Box::new(ApiError {
            code,
            reason,
            message,
            details,
        }))
    }

    /// 404 for a named object of a resource (`pods "x" not found`).
    pub fn not_found(group_resource: &str, name: &str) -> Self {
        let (kind, group) = split_group_resource(group_resource);
        Self::api(
            404,
            "NotFound",
            format!("{group_resource} \"{name}\" not found"),
            Some(json!({"name": name, "group": group, "kind": kind})),
        )
    }

    /// 404 for a path or resource the server does not serve.
    pub fn not_found_message(message: impl Into<String>) -> Self {
        Self::api(404, "NotFound", message.into(), None)
    }

    /// 409 for a create of a name that exists.
    pub fn already_exists(group_resource: &str, name: &str) -> Self {
        let (kind, group) = split_group_resource(group_resource);
        Self::api(
            409,
            "AlreadyExists",
            format!("{group_resource} \"{name}\" already exists"),
            Some(json!({"name": name, "group": group, "kind": kind})),
        )
    }

    /// 409 for a stale resourceVersion or failed precondition.
    pub fn conflict(group_resource: &str, name: &str, why: &str) -> Self {
        let (kind, group) = split_group_resource(group_resource);
        Self::api(
            409,
            "Conflict",
            format!("Operation cannot be fulfilled on {group_resource} \"{name}\": {why}"),
            Some(json!({"name": name, "group": group, "kind": kind})),
        )
    }

    /// The standard optimistic-concurrency conflict.
    pub fn stale(group_resource: &str, name: &str) -> Self {
        Self::conflict(
            group_resource,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// 409 with a free-form message (server-side apply conflicts).
    pub fn conflict_message(message: impl Into<String>, details: Option<Value>) -> Self {
        Self::api(409, "Conflict", message.into(), details)
    }

    /// 422 with field causes: `Pod "x" is invalid: spec.y: Required value`.
    pub fn invalid(kind: &str, group: &str, name: &str, causes: Vec<Cause>) -> Self {
        let texts: Vec<String> = causes.iter().map(Cause::text).collect();
        let joined = if texts.len() == 1 {
            texts[0].clone()
        } else {
            format!("[{}]", texts.join(", "))
        };
        Self::api(
            422,
            "Invalid",
            format!("{kind}.{group} \"{name}\" is invalid: {joined}").replacen(
                &format!("{kind}. \""),
                &format!("{kind} \""),
                1,
            ),
            Some(json!({
                "name": name,
                "group": group,
                "kind": kind,
                "causes": causes.iter().map(Cause::to_json).collect::<Vec<_>>(),
            })),
        )
    }

    /// 400 for a malformed request.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::api(400, "BadRequest", message.into(), None)
    }

    /// 410 for a resourceVersion older than what the store still has.
    pub fn gone(message: impl Into<String>) -> Self {
        Self::api(410, "Expired", message.into(), None)
    }

    /// 405 for a verb the resource does not support.
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::api(405, "MethodNotAllowed", message.into(), None)
    }

    /// 406 for an Accept header we cannot satisfy.
    pub fn not_acceptable(message: impl Into<String>) -> Self {
        Self::api(406, "NotAcceptable", message.into(), None)
    }

    /// 415 for a body type the server does not read, listing the ones it does.
    pub fn unsupported_media_type(_content_type: &str, accepted: &[&str]) -> Self {
        Self::api(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: {}",
                accepted.join(", ")
            ),
            None,
        )
    }

    /// 413 for a body over the limit, as kube-apiserver words it.
    pub fn too_large(limit: usize) -> Self {
        Self::api(
            413,
            "RequestEntityTooLarge",
            format!("Request entity too large: limit is {limit}"),
            None,
        )
    }

    /// 401 for a request without valid credentials.
    pub fn unauthorized() -> Self {
        Self::api(401, "Unauthorized", "Unauthorized".into(), None)
    }

    /// 403 for a request the authorizer denied.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::api(403, "Forbidden", message.into(), None)
    }

    /// 403 about one object: `pods "web" is forbidden: WHY` (without a name:
    /// `pods is forbidden: WHY`), with the details kube-apiserver gives.
    pub fn forbidden_object(group_resource: &str, name: &str, why: &str) -> Self {
        let (kind, group) = split_group_resource(group_resource);
        let message = if name.is_empty() {
            format!("{group_resource} is forbidden: {why}")
        } else {
            format!("{group_resource} \"{name}\" is forbidden: {why}")
        };
        Self::api(
            403,
            "Forbidden",
            message,
            Some(json!({"name": name, "group": group, "kind": kind})),
        )
    }

    /// The same error with one more `details.causes` entry.
    pub fn with_cause(self, reason: &str, message: &str, field: &str) -> Self {
        match self {
            Error::Api(mut a) => {
                let details = a.details.get_or_insert_with(|| json!({}));
                let cause = json!({"reason": reason, "message": message, "field": field});
                match details.get_mut("causes").and_then(Value::as_array_mut) {
                    Some(c) => c.push(cause),
                    None => details["causes"] = json!([cause]),
                }
                Error::Api(a)
            }
            other => other,
        }
    }

    /// 429 for a request refused for now (an eviction a disruption budget forbids), with
    /// kube's `details`: `retryAfterSeconds` when not zero, and the causes given.
    pub fn too_many_requests(
        message: impl Into<String>,
        retry_after: u32,
        causes: Vec<Value>,
    ) -> Self {
        let mut details = json!({});
        if retry_after > 0 {
            details["retryAfterSeconds"] = json!(retry_after);
        }
        if !causes.is_empty() {
            details["causes"] = Value::Array(causes);
        }
        Self::api(429, "TooManyRequests", message.into(), Some(details))
    }

    /// 500 as kube's `NewInternalError` words it: `Internal error occurred: WHY`.
    pub fn internal_error(why: &str) -> Self {
        Self::api(
            500,
            "InternalError",
            format!("Internal error occurred: {why}"),
            Some(json!({"causes": [{"message": why}]})),
        )
    }

    /// A failure a handler answers with a `Status` of its own making rather than raising an
    /// error (kube's `errors.FromObject`): the code and message as given, and no reason.
    pub fn failure_status(code: u16, message: impl Into<String>) -> Self {
        Self::api(code, "", message.into(), None)
    }

    /// 503 as kube's `NewServiceUnavailable` words it: the message as given.
    pub fn service_unavailable(message: impl Into<String>) -> Self {
        Self::api(503, "ServiceUnavailable", message.into(), None)
    }

    /// 422 for a patch that cannot be applied to the object.
    pub fn api_unprocessable(message: impl Into<String>) -> Self {
        Self::api(422, "Invalid", message.into(), None)
    }

    /// 500 with a message.
    pub fn internal(message: impl Into<String>) -> Self {
        Error::Internal(message.into())
    }

    /// 504 for a request that ran out of time.
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::api(504, "Timeout", message.into(), None)
    }

    /// The HTTP code this error maps to.
    pub fn code(&self) -> u16 {
        match self {
            Error::Api(a) => a.code,
            Error::Etcd(e) if etcd_unavailable(e) => 503,
            Error::Etcd(_)
            | Error::Corrupt { .. }
            | Error::Internal(_)
            | Error::Unreadable { .. }
            | Error::Unwritable { .. } => 500,
        }
    }

    /// The `reason` word this error maps to.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Api(a) => a.reason,
            Error::Etcd(e) if etcd_unavailable(e) => "ServiceUnavailable",
            Error::Etcd(_)
            | Error::Corrupt { .. }
            | Error::Internal(_)
            | Error::Unreadable { .. }
            | Error::Unwritable { .. } => "InternalError",
        }
    }

    /// The Kubernetes `Status` object for this error.
    pub fn status(&self) -> Value {
        let (message, details) = match self {
            Error::Api(a) => (a.message.clone(), a.details.clone()),
            Error::Etcd(e) if etcd_unavailable(e) => {
                (format!("the storage backend is unavailable: {e}"), None)
            }
            other => (
                format!("Internal error occurred: {other}"),
                Some(json!({"causes": [{"message": other.to_string()}]})),
            ),
        };
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": self.reason(),
            "code": self.code(),
        });
        if let Some(d) = details {
            status["details"] = d;
        }
        if self.reason().is_empty() {
            // An error with no reason of its own (Kubernetes' `StatusReasonUnknown`) has none.
            if let Some(o) = status.as_object_mut() {
                o.remove("reason");
            }
        }
        status
    }
}

/// Whether an etcd error means "could not reach etcd" rather than "etcd said no".
fn etcd_unavailable(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        etcd_client::Error::GRpcStatus(s) => matches!(
            s.code(),
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
        ),
        _ => false,
    }
}

fn split_group_resource(gr: &str) -> (&str, &str) {
    match gr.split_once('.') {
        Some((resource, group)) => (resource, group),
        None => (gr, ""),
    }
}

/// What a create or update body may be sent as.
pub const BODY_MEDIA_TYPES: &[&str] = &[
    "application/json",
    "application/yaml",
    "application/vnd.kubernetes.protobuf",
];

/// What a patch may be sent as.
pub const PATCH_MEDIA_TYPES: &[&str] = &[
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/apply-patch+yaml",
    "application/strategic-merge-patch+json",
];

/// The `Status` object for a successful delete of a resource with no object to return.
pub fn success_status(details: Value) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": details,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_message_matches_kube_apiserver() {
        let e = Error::invalid("Pod", "", "web", vec![Cause::required("spec.containers")]);
        assert_eq!(e.code(), 422);
        let s = e.status();
        assert_eq!(
            s["message"],
            "Pod \"web\" is invalid: spec.containers: Required value"
        );
        assert_eq!(s["details"]["causes"][0]["field"], "spec.containers");
        assert_eq!(s["details"]["causes"][0]["reason"], "FieldValueRequired");

        let e = Error::invalid(
            "Deployment",
            "apps",
            "d",
            vec![
                Cause::required("a"),
                Cause::invalid("b", &json!("X"), "bad"),
            ],
        );
        assert_eq!(
            e.status()["message"],
            "Deployment.apps \"d\" is invalid: [a: Required value, b: Invalid value: \"X\": bad]"
        );
    }

    #[test]
    fn forbidden_and_too_large_match_kube_apiserver() {
        let e = Error::forbidden_object("pods", "web", "no").with_cause("R", "m", "f");
        let s = e.status();
        assert_eq!(s["message"], "pods \"web\" is forbidden: no");
        assert_eq!(s["details"]["kind"], "pods");
        assert_eq!(s["details"]["causes"][0]["reason"], "R");
        assert_eq!(
            Error::too_large(3145728).status()["message"],
            "Request entity too large: limit is 3145728"
        );
        assert_eq!(
            Error::forbidden_object("deployments.apps", "", "no").to_string(),
            "deployments.apps is forbidden: no"
        );
    }

    #[test]
    fn not_found_names_group_resource() {
        let s = Error::not_found("deployments.apps", "x").status();
        assert_eq!(s["message"], "deployments.apps \"x\" not found");
        assert_eq!(s["details"]["kind"], "deployments");
        assert_eq!(s["details"]["group"], "apps");
        assert_eq!(s["code"], 404);
    }
}
