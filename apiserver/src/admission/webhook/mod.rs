//! Admission webhooks (`admissionregistration.k8s.io/v1`): the configurations read from the
//! watch cache and compiled once per set of (name, resourceVersion), the call of one webhook
//! with an `admission.k8s.io` AdmissionReview, what its answer means (allowed or denied, a
//! JSONPatch, warnings, audit annotations), failure policies, and the
//! `apiserver_admission_webhook_*` metrics. The two plugins are [`mutating`] (webhooks called
//! in order, their patches applied, reinvoked when asked) and [`validating`] (called in
//! parallel).

pub mod mutating;
pub mod validating;

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use serde_json::{json, Value};
use tracing::Instrument;

use super::matching::{
    object_variables, ConditionOutcome, MatchConditions, Matched, Matcher, WEBHOOK_VARIABLES,
};
use super::review::{review, RequestBuilder};
use super::Attributes;
use crate::error::{ApiError, Error, Result};
use crate::registry::{convert_between as convert, Objects, ResourceInfo};
use crate::webhook::{CallError, ClientConfig, Clients};

/// The group of the webhook configurations.
const GROUP: &str = "admissionregistration.k8s.io";

/// The kinds whose requests are never sent to webhooks, so a webhook cannot lock out the
/// means to fix it (kube-apiserver's `IsExemptAdmissionConfigurationResource`).
const EXEMPT_KINDS: &[&str] = &[
    "ValidatingWebhookConfiguration",
    "MutatingWebhookConfiguration",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
    "MutatingAdmissionPolicy",
    "MutatingAdmissionPolicyBinding",
];

/// Whether a request is about a webhook or policy configuration (never sent to webhooks).
pub fn is_exempt(a: &Attributes<'_>) -> bool {
    a.resource.group == GROUP && EXEMPT_KINDS.contains(&a.resource.kind.as_str())
}

/// Mutating or validating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `MutatingWebhookConfiguration`.
    Mutating,
    /// `ValidatingWebhookConfiguration`.
    Validating,
}

impl Kind {
    fn plural(self) -> &'static str {
        match self {
            Kind::Mutating => "mutatingwebhookconfigurations",
            Kind::Validating => "validatingwebhookconfigurations",
        }
    }

    /// The `type` label of the metrics.
    fn metric_type(self) -> &'static str {
        match self {
            Kind::Mutating => "admit",
            Kind::Validating => "validating",
        }
    }
}

/// One webhook of a configuration, compiled.
#[derive(Debug)]
pub struct Hook {
    /// Its place among every webhook of its kind (configurations by name, then in order).
    pub index: usize,
    /// The configuration's name.
    pub configuration: String,
    /// The webhook's name.
    pub name: String,
    /// Which requests it is for (an error: a configuration that cannot be read).
    matcher: std::result::Result<Matcher, String>,
    conditions: MatchConditions,
    client: std::result::Result<ClientConfig, String>,
    /// `failurePolicy: Fail` (the default) rather than `Ignore`.
    fail_closed: bool,
    side_effects: String,
    timeout: Duration,
    versions: Vec<String>,
    /// `reinvocationPolicy: IfNeeded`.
    reinvoke: bool,
}

impl Hook {
    fn compile(index: usize, configuration: &str, w: &Value) -> Hook {
        let text = |f: &str| w.get(f).and_then(Value::as_str).unwrap_or("").to_string();
        Hook {
            index,
            configuration: configuration.to_string(),
            name: text("name"),
            matcher: Matcher::webhook(w),
            conditions: MatchConditions::compile(w.get("matchConditions"), WEBHOOK_VARIABLES),
            client: w
                .get("clientConfig")
                .ok_or_else(|| "clientConfig: Required value".to_string())
                .and_then(ClientConfig::from_json),
            fail_closed: text("failurePolicy") != "Ignore",
            side_effects: match text("sideEffects") {
                s if s.is_empty() => "Unknown".into(),
                s => s,
            },
            timeout: Duration::from_secs(
                w.get("timeoutSeconds")
                    .and_then(Value::as_u64)
                    .unwrap_or(10)
                    .clamp(1, 30),
            ),
            versions: w
                .get("admissionReviewVersions")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default(),
            reinvoke: text("reinvocationPolicy") == "IfNeeded",
        }
    }

    /// The identity reinvocation remembers it by.
    fn uid(&self) -> String {
        format!("{}/{}", self.configuration, self.index)
    }
}

type Compiled = (Vec<(String, i64)>, Arc<Vec<Hook>>);

/// The webhooks of one kind, compiled from the cached configurations and compiled again only
/// when one of them changes.
pub struct Source {
    kind: Kind,
    compiled: parking_lot::Mutex<Option<Compiled>>,
}

impl Source {
    fn new(kind: Kind) -> Source {
        Source {
            kind,
            compiled: parking_lot::Mutex::new(None),
        }
    }

    /// The webhooks, in the order kube-apiserver calls them: configurations by name, each's
    /// webhooks in order.
    pub fn hooks(&self, objs: &dyn Objects) -> Arc<Vec<Hook>> {
        let Some(r) = objs.resource(GROUP, "v1", self.kind.plural()) else {
            return Arc::default();
        };
        let mut configs = objs.cached_list(&r, None);
        if configs.is_empty() {
            return Arc::default();
        }
        configs.sort_by(|a, b| a.name.cmp(&b.name));
        let key: Vec<(String, i64)> = configs.iter().map(|c| (c.name.clone(), c.rv)).collect();
        if let Some((k, hooks)) = &*self.compiled.lock() {
            if *k == key {
                return hooks.clone();
            }
        }
        let mut hooks = Vec::new();
        for c in &configs {
            let v = c.value();
            for w in v
                .get("webhooks")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let index = hooks.len();
                hooks.push(Hook::compile(index, &c.name, w));
            }
        }
        let hooks = Arc::new(hooks);
        *self.compiled.lock() = Some((key, hooks.clone()));
        hooks
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DurationLabels {
    name: String,
    operation: String,
    rejected: String,
    r#type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RejectionLabels {
    name: String,
    operation: String,
    r#type: String,
    error_type: String,
    rejection_code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    name: String,
    operation: String,
    r#type: String,
    code: String,
    rejected: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailOpenLabels {
    name: String,
    r#type: String,
}

/// The `apiserver_admission_webhook_*` metrics, with kube-apiserver's names and labels.
#[derive(Debug)]
pub struct Metrics {
    duration: Family<DurationLabels, Histogram>,
    rejections: Family<RejectionLabels, Gauge>,
    requests: Family<RequestLabels, Counter>,
    fail_open: Family<FailOpenLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.005, 2.5, 10))
            }),
            rejections: Family::default(),
            requests: Family::default(),
            fail_open: Family::default(),
        }
    }
}

/// How a call was rejected, for `rejection_count`'s `error_type`.
#[derive(Debug, Clone, Copy)]
enum RejectionType {
    CallingWebhook,
    NoError,
    Internal,
}

impl Metrics {
    /// Adds the metrics to a registry.
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "apiserver_admission_webhook_admission_duration_seconds",
            "Admission webhook latency in seconds, identified by name and broken out for each operation and API resource and type (validate or admit).",
            self.duration.clone(),
        );
        // Kubernetes' names end in `_count`, not `_total`: exposed as gauges that only grow.
        r.register(
            "apiserver_admission_webhook_rejection_count",
            "Admission webhook rejection count, identified by name and broken out for each admission type (validating or admit) and operation.",
            self.rejections.clone(),
        );
        r.register(
            "apiserver_admission_webhook_request",
            "Admission webhook request total, identified by name and broken out for each admission type (validating or admit) and operation.",
            self.requests.clone(),
        );
        r.register(
            "apiserver_admission_webhook_fail_open_count",
            "Admission webhook fail open count, identified by name and broken out for each admission type (validating or admit).",
            self.fail_open.clone(),
        );
    }

    fn observe(&self, kind: Kind, name: &str, op: &str, took: Duration, rejected: bool, code: u16) {
        let code = code.min(600);
        self.duration
            .get_or_create(&DurationLabels {
                name: name.into(),
                operation: op.into(),
                rejected: rejected.to_string(),
                r#type: kind.metric_type().into(),
            })
            .observe(took.as_secs_f64());
        self.requests
            .get_or_create(&RequestLabels {
                name: name.into(),
                operation: op.into(),
                r#type: kind.metric_type().into(),
                code: code.to_string(),
                rejected: rejected.to_string(),
            })
            .inc();
    }

    fn rejection(&self, kind: Kind, name: &str, op: &str, t: RejectionType, code: u16) {
        let error_type = match t {
            RejectionType::CallingWebhook => "calling_webhook_error",
            RejectionType::NoError => "no_error",
            RejectionType::Internal => "apiserver_internal_error",
        };
        self.rejections
            .get_or_create(&RejectionLabels {
                name: name.into(),
                operation: op.into(),
                r#type: kind.metric_type().into(),
                error_type: error_type.into(),
                rejection_code: code.min(600).to_string(),
            })
            .inc();
    }

    fn failed_open(&self, kind: Kind, name: &str) {
        self.fail_open
            .get_or_create(&FailOpenLabels {
                name: name.into(),
                r#type: kind.metric_type().into(),
            })
            .inc();
    }
}

/// What a webhook plugin shares: its configurations, the HTTP clients, the metrics.
pub struct Dispatcher {
    kind: Kind,
    source: Source,
    clients: Arc<Clients>,
    metrics: Arc<Metrics>,
}

/// A webhook's verdict.
#[derive(Debug, Default)]
struct Response {
    allowed: bool,
    status: Option<Value>,
    patch: Option<Vec<u8>>,
}

/// Why a call did not give a verdict, or what the verdict refused.
#[derive(Debug)]
enum CallFailure {
    /// The webhook could not be called, or its answer was not usable: the failure policy
    /// decides (`failed calling webhook "NAME": REASON`).
    Calling { reason: String, code: u16 },
    /// The webhook refused the request (its status as kube passes it on).
    Rejected(Error, u16),
    /// The API server failed (a patch that does not apply, ...).
    Internal(Error),
}

/// kube's reason words; a webhook's own reason outside them is passed on empty.
fn reason_word(reason: &str) -> &'static str {
    const REASONS: &[&str] = &[
        "Unauthorized",
        "Forbidden",
        "NotFound",
        "AlreadyExists",
        "Conflict",
        "Gone",
        "Invalid",
        "ServerTimeout",
        "Timeout",
        "TooManyRequests",
        "BadRequest",
        "MethodNotAllowed",
        "NotAcceptable",
        "RequestEntityTooLarge",
        "UnsupportedMediaType",
        "InternalError",
        "Expired",
        "ServiceUnavailable",
    ];
    REASONS
        .iter()
        .find(|r| **r == reason)
        .copied()
        .unwrap_or("")
}

/// The error a denial becomes: the webhook's status, its message prefixed
/// `admission webhook "NAME" denied the request: ` (kube's `ToStatusErr`).
pub fn denied(name: &str, status: Option<&Value>) -> Error {
    let status = status.cloned().unwrap_or(Value::Null);
    let text = |f: &str| status.get(f).and_then(Value::as_str).unwrap_or("");
    let code = status
        .get("code")
        .and_then(Value::as_u64)
        .map_or(400, |c| c.max(400).min(u64::from(u16::MAX))) as u16;
    let denied_by = format!("admission webhook {name:?} denied the request");
    let message = if !text("message").is_empty() {
        format!("{denied_by}: {}", text("message"))
    } else if !text("reason").is_empty() {
        format!("{denied_by}: {}", text("reason"))
    } else {
        format!("{denied_by} without explanation")
    };
    Error::from(ApiError {
        code,
        reason: reason_word(text("reason")),
        message,
        details: status.get("details").filter(|d| d.is_object()).cloned(),
    })
}

/// The 500 of a webhook that could not be called under `failurePolicy: Fail`:
/// `Internal error occurred: failed calling webhook "NAME": REASON`.
pub fn calling_error(name: &str, reason: &str) -> Error {
    let err = format!("failed calling webhook {name:?}: {reason}");
    Error::from(ApiError {
        code: 500,
        reason: "InternalError",
        message: format!("Internal error occurred: {err}"),
        details: Some(json!({"causes": [{"message": err}]})),
    })
}

/// A 500 with kube-apiserver's `NewInternalError` shape.
fn internal(message: String) -> Error {
    Error::from(ApiError {
        code: 500,
        reason: "InternalError",
        message: format!("Internal error occurred: {message}"),
        details: Some(json!({"causes": [{"message": message}]})),
    })
}

/// A request as one webhook sees it: in the version it matched, with the objects converted.
struct Invocation<'a> {
    hook: &'a Hook,
    matched: Matched,
}

impl Invocation<'_> {
    /// The resource the request is sent as.
    fn resource<'r>(&'r self, a: &'r Attributes<'_>) -> &'r ResourceInfo {
        self.matched.equivalent.as_deref().unwrap_or(a.resource)
    }
}

impl Dispatcher {
    fn new(kind: Kind, clients: Arc<Clients>, metrics: Arc<Metrics>) -> Dispatcher {
        Dispatcher {
            kind,
            source: Source::new(kind),
            clients,
            metrics,
        }
    }

    /// Whether `hook` is for this request, and as which version; a match condition that
    /// cannot be evaluated refuses the request under `failurePolicy: Fail` (a 403, as kube
    /// answers).
    async fn should_call<'h>(
        &self,
        hook: &'h Hook,
        a: &Attributes<'_>,
        obj: Option<&Value>,
        objs: &dyn Objects,
    ) -> Result<Option<Invocation<'h>>> {
        let matcher = match &hook.matcher {
            Ok(m) => m,
            Err(e) => {
                if hook.fail_closed {
                    return Err(calling_error(&hook.name, e));
                }
                return Ok(None);
            }
        };
        let Some(matched) = matcher.matches(a, obj, objs).await? else {
            return Ok(None);
        };
        let inv = Invocation { hook, matched };
        if !hook.conditions.is_empty() {
            let r = inv.resource(a);
            let (o, old) = self.versioned(a, r, obj).await?;
            let request = RequestBuilder::new(a)
                .sent_as(r)
                .object(o.as_ref())
                .old_object(old.as_ref())
                .build();
            let (ov, oldv) = object_variables(o.as_ref(), old.as_ref());
            match hook.conditions.evaluate(&[
                ("object", &ov),
                ("oldObject", &oldv),
                ("request", &request),
            ]) {
                ConditionOutcome::Match => {}
                ConditionOutcome::Skip { condition } => {
                    tracing::trace!(webhook = %hook.name, %condition, "match condition excluded the request");
                    return Ok(None);
                }
                ConditionOutcome::Error(e) => {
                    if hook.fail_closed {
                        tracing::warn!(webhook = %hook.name, error = %e, "failed evaluating match conditions, failing closed");
                        return Err(super::forbidden(a, obj, &e));
                    }
                    return Ok(None);
                }
            }
        }
        Ok(Some(inv))
    }

    /// The new and old objects in the version `r` (converted when it is not the request's).
    async fn versioned(
        &self,
        a: &Attributes<'_>,
        r: &ResourceInfo,
        obj: Option<&Value>,
    ) -> Result<(Option<Value>, Option<Value>)> {
        if std::ptr::eq(r, a.resource) {
            return Ok((obj.cloned(), a.old.cloned()));
        }
        let new = match obj {
            Some(o) => Some(convert(a.resource, r, o).await?),
            None => None,
        };
        let old = match a.old {
            Some(o) => Some(convert(a.resource, r, o).await?),
            None => None,
        };
        Ok((new, old))
    }

    /// Calls one webhook and reads its verdict, checking the answer as kube-apiserver does.
    async fn call(
        &self,
        inv: &Invocation<'_>,
        a: &Attributes<'_>,
        obj: Option<&Value>,
        objs: &dyn Objects,
    ) -> std::result::Result<Response, CallFailure> {
        let hook = inv.hook;
        if a.dry_run && !matches!(hook.side_effects.as_str(), "None" | "NoneOnDryRun") {
            return Err(CallFailure::Rejected(
                Error::bad_request(format!(
                    "admission webhook {:?} does not support dry run",
                    hook.name
                )),
                400,
            ));
        }
        let calling = |reason: String, code: u16| CallFailure::Calling { reason, code };
        let client = hook
            .client
            .as_ref()
            .map_err(|e| calling(format!("could not get REST client: {e}"), 500))?;
        let Some(version) = hook.versions.iter().find(|v| *v == "v1" || *v == "v1beta1") else {
            return Err(calling(
                format!(
                    "webhook does not accept known AdmissionReview versions: {:?}",
                    hook.versions
                ),
                500,
            ));
        };
        let r = inv.resource(a);
        let (o, old) = self
            .versioned(a, r, obj)
            .await
            .map_err(CallFailure::Internal)?;
        let uid = uuid::Uuid::new_v4().to_string();
        let request = RequestBuilder::new(a)
            .uid(&uid)
            .sent_as(r)
            .object(o.as_ref())
            .old_object(old.as_ref())
            .build();
        let span = tracing::debug_span!("call webhook", configuration = %hook.configuration, webhook = %hook.name, resource = %r.group_resource(), operation = a.operation.as_str(), uid = %uid);
        let answer = self
            .clients
            .post(client, objs, &review(version, request), hook.timeout)
            .instrument(span)
            .await
            .map_err(|e| {
                let code = match &e {
                    CallError::Status(_) => 500,
                    _ => 503,
                };
                calling(format!("failed to call webhook: {e}"), code)
            })?;
        let mutating = self.kind == Kind::Mutating;
        let response = verify(&answer, version, &uid, mutating)
            .map_err(|e| calling(format!("received invalid webhook response: {e}"), 503))?;
        for w in answer
            .pointer("/response/warnings")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            a.notes().warn(w);
        }
        if let Some(m) = answer
            .pointer("/response/auditAnnotations")
            .and_then(Value::as_object)
        {
            for (k, v) in m {
                if let Some(v) = v.as_str() {
                    a.notes().annotate(format!("{}/{k}", hook.name), v);
                }
            }
        }
        if !response.allowed {
            let e = denied(&hook.name, response.status.as_ref());
            let code = e.code();
            return Err(CallFailure::Rejected(e, code));
        }
        Ok(response)
    }

    /// Settles a call for the metrics and the failure policy: `Ok(None)` when it failed open,
    /// the error when it refuses the request.
    fn settle(
        &self,
        hook: &Hook,
        a: &Attributes<'_>,
        started: Instant,
        result: std::result::Result<Response, CallFailure>,
        failed_open_key: &str,
    ) -> Result<Option<Response>> {
        let op = a.operation.as_str();
        let took = started.elapsed();
        let m = &self.metrics;
        match result {
            Ok(r) => {
                m.observe(self.kind, &hook.name, op, took, false, 200);
                Ok(Some(r))
            }
            Err(CallFailure::Calling { reason, code }) => {
                if hook.fail_closed {
                    m.rejection(
                        self.kind,
                        &hook.name,
                        op,
                        RejectionType::CallingWebhook,
                        code,
                    );
                    m.observe(self.kind, &hook.name, op, took, true, code);
                    tracing::warn!(webhook = %hook.name, error = %reason, "failed calling webhook, failing closed");
                    Err(calling_error(&hook.name, &reason))
                } else {
                    m.observe(self.kind, &hook.name, op, took, false, code);
                    m.failed_open(self.kind, &hook.name);
                    tracing::warn!(webhook = %hook.name, error = %reason, "failed calling webhook, failing open");
                    a.notes().annotate(failed_open_key, &hook.name);
                    Ok(None)
                }
            }
            Err(CallFailure::Rejected(e, code)) => {
                m.rejection(self.kind, &hook.name, op, RejectionType::NoError, code);
                m.observe(self.kind, &hook.name, op, took, true, code);
                Err(e)
            }
            Err(CallFailure::Internal(e)) => {
                m.rejection(self.kind, &hook.name, op, RejectionType::Internal, 0);
                m.observe(self.kind, &hook.name, op, took, true, 0);
                Err(e)
            }
        }
    }
}

/// Checks an AdmissionReview answer (kube's `VerifyAdmissionResponse`).
fn verify(
    answer: &Value,
    version: &str,
    uid: &str,
    mutating: bool,
) -> std::result::Result<Response, String> {
    let Some(r) = answer.get("response").filter(|r| r.is_object()) else {
        return Err("webhook response was absent".into());
    };
    let got_uid = r.get("uid").and_then(Value::as_str).unwrap_or("");
    let api_version = answer
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    let kind = answer.get("kind").and_then(Value::as_str).unwrap_or("");
    let patch = match r.get("patch").and_then(Value::as_str) {
        None | Some("") => None,
        Some(p) => Some(
            base64::engine::general_purpose::STANDARD
                .decode(p)
                .map_err(|e| format!("response.patch: {e}"))?,
        ),
    };
    let mut patch_type = r
        .get("patchType")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if version == "v1" {
        if got_uid != uid {
            return Err(format!("expected response.uid={uid:?}, got {got_uid:?}"));
        }
        if api_version != "admission.k8s.io/v1" || kind != "AdmissionReview" {
            let got = if api_version.contains('/') {
                format!("{api_version}, Kind={kind}")
            } else {
                format!("/{api_version}, Kind={kind}")
            };
            return Err(format!(
                "expected webhook response of admission.k8s.io/v1, Kind=AdmissionReview, got {got}"
            ));
        }
        if patch.is_some() && patch_type.is_empty() {
            return Err("webhook returned response.patch but not response.patchType".into());
        }
    } else if patch.is_some() && patch_type.is_empty() && mutating {
        // v1beta1 answers may leave the patch type out.
        patch_type = "JSONPatch".into();
    }
    if patch.is_some() && !mutating {
        return Err("validating webhook may not return response.patch".into());
    }
    if !patch_type.is_empty() && !mutating {
        return Err("validating webhook may not return response.patchType".into());
    }
    if !patch_type.is_empty() && patch_type != "JSONPatch" {
        return Err(format!(
            "webhook returned invalid response.patchType of {patch_type:?}"
        ));
    }
    Ok(Response {
        allowed: r.get("allowed").and_then(Value::as_bool).unwrap_or(false),
        status: r.get("status").cloned(),
        patch,
    })
}

/// The webhook plugins' shared parts, made once per server.
#[derive(Default)]
pub struct Webhooks {
    clients: Arc<Clients>,
    metrics: Arc<Metrics>,
}

impl Webhooks {
    /// The `MutatingAdmissionWebhook` plugin.
    pub fn mutating(&self) -> mutating::MutatingWebhook {
        mutating::MutatingWebhook::new(Dispatcher::new(
            Kind::Mutating,
            self.clients.clone(),
            self.metrics.clone(),
        ))
    }

    /// The `ValidatingAdmissionWebhook` plugin.
    pub fn validating(&self) -> validating::ValidatingWebhook {
        validating::ValidatingWebhook::new(Dispatcher::new(
            Kind::Validating,
            self.clients.clone(),
            self.metrics.clone(),
        ))
    }

    /// The metrics.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denials_are_worded_as_kube_words_them() {
        let e = denied(
            "deny.example.com",
            Some(&json!({"code": 403, "message": "pods need a team label", "reason": "Forbidden"})),
        );
        assert_eq!(e.code(), 403);
        assert_eq!(e.reason(), "Forbidden");
        assert_eq!(
            e.to_string(),
            "admission webhook \"deny.example.com\" denied the request: pods need a team label"
        );
        let e = denied("w", Some(&json!({"code": 200})));
        assert_eq!(e.code(), 400);
        assert_eq!(
            e.to_string(),
            "admission webhook \"w\" denied the request without explanation"
        );
        let e = denied("w", Some(&json!({"reason": "NoNoNo"})));
        assert_eq!(
            e.to_string(),
            "admission webhook \"w\" denied the request: NoNoNo"
        );
        let e = calling_error(
            "w",
            "failed to call webhook: Post \"https://x\": connect: connection refused",
        );
        assert_eq!(e.code(), 500);
        assert_eq!(
            e.status()["message"],
            "Internal error occurred: failed calling webhook \"w\": failed to call webhook: Post \"https://x\": connect: connection refused"
        );
    }

    #[test]
    fn answers_are_checked() {
        let ok = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "response": {"uid": "u", "allowed": true}});
        assert!(verify(&ok, "v1", "u", false).unwrap().allowed);
        assert_eq!(
            verify(&ok, "v1", "other", false).unwrap_err(),
            "expected response.uid=\"other\", got \"u\""
        );
        assert_eq!(
            verify(&json!({}), "v1", "u", false).unwrap_err(),
            "webhook response was absent"
        );
        let patch = base64::engine::general_purpose::STANDARD.encode(b"[]");
        let no_type = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "response": {"uid": "u", "allowed": true, "patch": patch}});
        assert_eq!(
            verify(&no_type, "v1", "u", true).unwrap_err(),
            "webhook returned response.patch but not response.patchType"
        );
        assert_eq!(
            verify(&no_type, "v1beta1", "u", false).unwrap_err(),
            "validating webhook may not return response.patch"
        );
        assert!(verify(&no_type, "v1beta1", "u", true)
            .unwrap()
            .patch
            .is_some());
        let wrong = json!({"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview",
            "response": {"uid": "u", "allowed": true}});
        assert_eq!(
            verify(&wrong, "v1", "u", false).unwrap_err(),
            "expected webhook response of admission.k8s.io/v1, Kind=AdmissionReview, got admission.k8s.io/v1beta1, Kind=AdmissionReview"
        );
    }
}
