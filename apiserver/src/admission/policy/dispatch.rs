//! The `ValidatingAdmissionPolicy` plugin: for each request, the policies whose
//! `matchConstraints` match and, for each, the bindings whose `matchResources` match, each run
//! once per param; then what the decisions do, as Kubernetes' validating policy dispatcher
//! does (`dispatcher.go`):
//!
//! - `Deny`: the request is refused with the first denial (`ValidatingAdmissionPolicy 'P'
//!   with binding 'B' denied request: MESSAGE`), its code from the validation's `reason`
//!   (`Invalid`, 422, unless it says `Unauthorized`, `Forbidden` or `RequestEntityTooLarge`);
//! - `Warn`: a warning to the client (`Validation failed for ValidatingAdmissionPolicy 'P'
//!   with binding 'B': MESSAGE`);
//! - `Audit`: the audit annotation `validation.policy.admission.k8s.io/validation_failure`.
//!
//! Policies and bindings are read from the watch cache; the compiled set is kept until one
//! of them changes, and a request costs next to nothing while no binding exists. Requests
//! on the policy types themselves are not checked, as in Kubernetes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::ValidatingAdmissionPolicyBindingSpec;
use serde::Deserialize;
use serde_json::{json, Value};

use super::compile::{FailurePolicy, Policy};
use super::metrics::{Enforcement, Metrics};
use super::validator::{self, Action, Annotation, Evaluation, Inputs};
use super::{params, BINDINGS, GROUP, POLICIES};
use crate::admission::matching::{self, Matcher};
use crate::admission::review::RequestBuilder;
use crate::admission::{Attributes, Plugin};
use crate::error::{Error, Result};
use crate::registry::{Objects, ResourceInfo};
use crate::storage::cached::Cached;

/// The audit annotation a failed validation bound with `Audit` writes.
pub const VALIDATION_FAILURE_ANNOTATION: &str =
    "validation.policy.admission.k8s.io/validation_failure";

/// The longest value of a published audit annotation.
const MAX_AUDIT_ANNOTATION_VALUE_LENGTH: usize = 10 * 1024;

/// The plugin.
pub struct ValidatingAdmissionPolicy {
    compiled: parking_lot::Mutex<Arc<Hooks>>,
    metrics: Arc<Metrics>,
}

impl Default for ValidatingAdmissionPolicy {
    fn default() -> Self {
        ValidatingAdmissionPolicy {
            compiled: Default::default(),
            metrics: super::metrics::global(),
        }
    }
}

/// A binding, decoded once per resourceVersion.
struct Binding {
    name: String,
    spec: ValidatingAdmissionPolicyBindingSpec,
    /// `spec.matchResources`, when set; `Err` when it cannot be read.
    matcher: Option<std::result::Result<Matcher, String>>,
}

/// A policy and its bindings.
struct Hook {
    policy: Arc<Policy>,
    /// `spec.matchConstraints`; `Err` when absent or unreadable.
    matcher: std::result::Result<Matcher, String>,
    bindings: Vec<Arc<Binding>>,
}

/// Every policy that has a binding, as compiled for a set of (name, resourceVersion)s.
#[derive(Default)]
struct Hooks {
    policies: Vec<(String, i64)>,
    bindings: Vec<(String, i64)>,
    hooks: Vec<Hook>,
    compiled: HashMap<String, Arc<Policy>>,
    decoded: HashMap<String, (i64, Arc<Binding>)>,
}

fn key(list: &[Arc<Cached>]) -> Vec<(String, i64)> {
    let mut k: Vec<(String, i64)> = list.iter().map(|c| (c.name.clone(), c.rv)).collect();
    k.sort();
    k
}

impl ValidatingAdmissionPolicy {
    /// The policies and bindings in force: the last compiled set, recompiled (reusing what
    /// did not change) when the watch cache holds other versions.
    fn hooks(&self, objs: &dyn Objects) -> Option<Arc<Hooks>> {
        let br = objs.resource(GROUP, "v1", BINDINGS)?;
        let bindings = objs.cached_list(&br, None);
        if bindings.is_empty() {
            return None;
        }
        let pr = objs.resource(GROUP, "v1", POLICIES)?;
        let policies = objs.cached_list(&pr, None);
        let (pk, bk) = (key(&policies), key(&bindings));
        let current = self.compiled.lock().clone();
        if current.policies == pk && current.bindings == bk {
            return Some(current);
        }
        let next = Arc::new(build(&current, &policies, &bindings, pk, bk));
        *self.compiled.lock() = next.clone();
        Some(next)
    }
}

fn build(
    old: &Hooks,
    policies: &[Arc<Cached>],
    bindings: &[Arc<Cached>],
    policies_key: Vec<(String, i64)>,
    bindings_key: Vec<(String, i64)>,
) -> Hooks {
    let mut decoded = HashMap::new();
    let mut by_policy: HashMap<String, Vec<Arc<Binding>>> = HashMap::new();
    for c in bindings {
        let b = match old.decoded.get(&c.name) {
            Some((rv, b)) if *rv == c.rv => b.clone(),
            _ => {
                let v = c.value();
                let spec: ValidatingAdmissionPolicyBindingSpec = v
                    .get("spec")
                    .and_then(|s| Deserialize::deserialize(s).ok())
                    .unwrap_or_default();
                let matcher = v
                    .pointer("/spec/matchResources")
                    .filter(|m| !m.is_null())
                    .map(|m| Matcher::resources(m, true));
                Arc::new(Binding {
                    name: c.name.clone(),
                    spec,
                    matcher,
                })
            }
        };
        decoded.insert(c.name.clone(), (c.rv, b.clone()));
        if let Some(p) = b.spec.policy_name.as_deref().filter(|p| !p.is_empty()) {
            by_policy.entry(p.to_owned()).or_default().push(b);
        }
    }
    let mut compiled = HashMap::new();
    let mut hooks = Vec::new();
    for c in policies {
        let Some(mut bindings) = by_policy.remove(&c.name) else {
            continue;
        };
        bindings.sort_by(|a, b| a.name.cmp(&b.name));
        let rv = c.rv.to_string();
        let (policy, matcher) = match old.compiled.get(&c.name) {
            Some(p) if p.resource_version == rv => {
                let v = old.hooks.iter().find(|h| Arc::ptr_eq(&h.policy, p));
                match v {
                    Some(h) => (p.clone(), h.matcher.clone()),
                    None => compile(&c.value()),
                }
            }
            _ => compile(&c.value()),
        };
        compiled.insert(c.name.clone(), policy.clone());
        hooks.push(Hook {
            policy,
            matcher,
            bindings,
        });
    }
    hooks.sort_by(|a, b| a.policy.name.cmp(&b.policy.name));
    Hooks {
        policies: policies_key,
        bindings: bindings_key,
        hooks,
        compiled,
        decoded,
    }
}

fn compile(v: &Value) -> (Arc<Policy>, std::result::Result<Matcher, String>) {
    let policy = Arc::new(Policy::compile(v));
    let matcher = match v.pointer("/spec/matchConstraints") {
        None | Some(Value::Null) => {
            Err("policy contained no match constraints, a required field".to_owned())
        }
        Some(m) => Matcher::resources(m, false),
    };
    (policy, matcher)
}

/// Whether the request is on the policy types themselves, which policies never check.
fn exempt(a: &Attributes<'_>) -> bool {
    a.resource.group == GROUP
        && matches!(
            a.resource.plural.as_str(),
            "validatingadmissionpolicies"
                | "validatingadmissionpolicybindings"
                | "mutatingadmissionpolicies"
                | "mutatingadmissionpolicybindings"
        )
}

/// A refusal collected while the policies run; the first one is answered.
struct Denied {
    policy: String,
    binding: Option<String>,
    message: String,
    reason: String,
}

/// A configuration error, as the failurePolicy has it: `None` to ignore.
fn config_error(policy: &Policy, binding: Option<&str>, err: &str) -> Option<Denied> {
    match policy.failure_policy {
        FailurePolicy::Ignore => None,
        FailurePolicy::Fail => Some(Denied {
            policy: policy.name.clone(),
            binding: binding.map(str::to_owned),
            message: match binding {
                None => format!("failed to configure policy: {err}"),
                Some(_) => format!("failed to configure binding: {err}"),
            },
            reason: String::new(),
        }),
    }
}

#[async_trait::async_trait]
impl Plugin for ValidatingAdmissionPolicy {
    fn name(&self) -> &'static str {
        "ValidatingAdmissionPolicy"
    }

    async fn validate(
        &self,
        a: &Attributes<'_>,
        obj: Option<&Value>,
        objs: &dyn Objects,
    ) -> Result<()> {
        if exempt(a) {
            return Ok(());
        }
        let Some(hooks) = self.hooks(objs) else {
            return Ok(());
        };
        if hooks.hooks.is_empty() {
            return Ok(());
        }
        let mut denied = Vec::new();
        // Built once, for the first policy that needs them.
        let mut request: Option<Value> = None;
        let mut namespace: Option<Value> = None;
        let object = obj.cloned().unwrap_or(Value::Null);
        let old_object = a.old.cloned().unwrap_or(Value::Null);

        for hook in &hooks.hooks {
            let policy = &hook.policy;
            let matcher = match &hook.matcher {
                Ok(m) => m,
                Err(e) => {
                    denied.extend(config_error(policy, None, e));
                    continue;
                }
            };
            let matched = match matcher.matches(a, obj, objs).await {
                Ok(Some(m)) => m,
                Ok(None) => continue,
                Err(e) => {
                    denied.extend(config_error(policy, None, &e.to_string()));
                    continue;
                }
            };
            if let Some(e) = &policy.configuration_error {
                denied.extend(config_error(policy, None, e));
                continue;
            }
            let param_resource = match &policy.param_kind {
                None => None,
                Some(pk) => match params::param_resource(objs, pk) {
                    Some(r) => Some(r),
                    None => {
                        denied.extend(config_error(policy, None, &params::not_found_message(pk)));
                        continue;
                    }
                },
            };
            let mut annotations = AnnotationCollector::default();
            for binding in &hook.bindings {
                if let Some(m) = &binding.matcher {
                    let m = match m {
                        Ok(m) => m,
                        Err(e) => {
                            denied.extend(config_error(policy, Some(&binding.name), e));
                            continue;
                        }
                    };
                    match m.matches(a, obj, objs).await {
                        Ok(Some(_)) => {}
                        Ok(None) => continue,
                        Err(e) => {
                            denied.extend(config_error(
                                policy,
                                Some(&binding.name),
                                &e.to_string(),
                            ));
                            continue;
                        }
                    }
                }
                let found = match params::collect(
                    objs,
                    param_resource.as_ref(),
                    binding.spec.param_ref.as_ref(),
                    a.namespace,
                ) {
                    Ok(p) => p,
                    Err(e) => {
                        denied.extend(config_error(policy, Some(&binding.name), &e));
                        continue;
                    }
                };
                if found.is_empty() {
                    continue;
                }
                let request = match &request {
                    Some(r) => r,
                    None => request.insert(cel_request(a, obj, &matched)),
                };
                let (object, old_object) = match &matched.equivalent {
                    None => (
                        std::borrow::Cow::Borrowed(&object),
                        std::borrow::Cow::Borrowed(&old_object),
                    ),
                    Some(r) => (
                        std::borrow::Cow::Owned(in_version(&object, a.resource, r).await?),
                        std::borrow::Cow::Owned(in_version(&old_object, a.resource, r).await?),
                    ),
                };
                let namespace = match &namespace {
                    Some(n) => n,
                    None => namespace.insert(namespace_variable(a, objs).await?),
                };
                let actions = binding.spec.validation_actions.clone().unwrap_or_default();
                for param in &found {
                    let outcome = validator::validate(
                        policy,
                        &Inputs {
                            object: &object,
                            old_object: &old_object,
                            request,
                            namespace,
                            params: param.as_ref(),
                        },
                    );
                    for (i, d) in outcome.decisions.iter().enumerate() {
                        match d.action {
                            Action::Admit => {
                                if d.evaluation == Evaluation::Error {
                                    self.metrics.observe(
                                        &policy.name,
                                        &binding.name,
                                        d.error_type(),
                                        Enforcement::Allow,
                                        d.elapsed,
                                    );
                                }
                            }
                            Action::Deny => {
                                for action in &actions {
                                    match action.as_str() {
                                        "Deny" => {
                                            denied.push(Denied {
                                                policy: policy.name.clone(),
                                                binding: Some(binding.name.clone()),
                                                message: d.message.clone(),
                                                reason: d.reason.clone(),
                                            });
                                            self.metrics.observe(
                                                &policy.name,
                                                &binding.name,
                                                d.error_type(),
                                                Enforcement::Deny,
                                                d.elapsed,
                                            );
                                        }
                                        "Audit" => {
                                            let value = json!([{
                                                "message": d.message,
                                                "policy": policy.name,
                                                "binding": binding.name,
                                                "expressionIndex": i,
                                                "validationActions": actions,
                                            }]);
                                            a.notes().annotate(
                                                VALIDATION_FAILURE_ANNOTATION,
                                                value.to_string(),
                                            );
                                            self.metrics.observe(
                                                &policy.name,
                                                &binding.name,
                                                d.error_type(),
                                                Enforcement::Audit,
                                                d.elapsed,
                                            );
                                        }
                                        "Warn" => {
                                            a.notes().warn(format!(
                                                "Validation failed for ValidatingAdmissionPolicy '{}' with binding '{}': {}",
                                                policy.name, binding.name, d.message
                                            ));
                                            self.metrics.observe(
                                                &policy.name,
                                                &binding.name,
                                                d.error_type(),
                                                Enforcement::Warn,
                                                d.elapsed,
                                            );
                                        }
                                        _ => {}
                                    }
                                }
                            }
                        }
                    }
                    for annotation in outcome.annotations {
                        match annotation {
                            Annotation::Publish { key, mut value } => {
                                if value.len() > MAX_AUDIT_ANNOTATION_VALUE_LENGTH {
                                    let mut end = MAX_AUDIT_ANNOTATION_VALUE_LENGTH;
                                    while !value.is_char_boundary(end) {
                                        end -= 1;
                                    }
                                    value.truncate(end);
                                }
                                annotations.add(key, value);
                            }
                            Annotation::Error(message) => {
                                denied.push(Denied {
                                    policy: policy.name.clone(),
                                    binding: Some(binding.name.clone()),
                                    message,
                                    reason: String::new(),
                                });
                                self.metrics.observe(
                                    &policy.name,
                                    &binding.name,
                                    "invalid_error",
                                    Enforcement::Deny,
                                    Duration::ZERO,
                                );
                            }
                            Annotation::Exclude => {}
                        }
                    }
                }
            }
            annotations.publish(&policy.name, a);
        }

        match denied.into_iter().next() {
            None => Ok(()),
            Some(d) => Err(refusal(a, obj, &d)),
        }
    }
}

/// The CEL `request`: the AdmissionRequest, in the version the policy matched, without the
/// objects (they are variables of their own).
fn cel_request(a: &Attributes<'_>, obj: Option<&Value>, matched: &matching::Matched) -> Value {
    // Built without the objects (they are variables of their own, and copying them is
    // most of the cost); the name of a create comes from the object.
    let mut builder = RequestBuilder::new(a).object(None).old_object(None);
    if let Some(r) = &matched.equivalent {
        builder = builder.sent_as(r);
    }
    let mut request = builder.build();
    if let Some(m) = request.as_object_mut() {
        m.remove("uid");
        m.remove("object");
        m.remove("oldObject");
        if !m.contains_key("name") {
            if let Some(name) = obj
                .and_then(|o| o.pointer("/metadata/name"))
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
            {
                m.insert("name".to_owned(), Value::String(name.to_owned()));
            }
        }
    }
    request
}

/// An object of `from`'s version as `to`'s version of the same resource shows it (a
/// policy matching another version of a custom resource sees the object in that version).
async fn in_version(obj: &Value, from: &ResourceInfo, to: &ResourceInfo) -> Result<Value> {
    if obj.is_null() {
        return Ok(Value::Null);
    }
    crate::registry::convert_between(from, to, obj).await
}

/// `namespaceObject`: the request's namespace, `null` for cluster-scoped requests and for
/// Namespace objects themselves.
async fn namespace_variable(a: &Attributes<'_>, objs: &dyn Objects) -> Result<Value> {
    let is_namespace = a.resource.group.is_empty() && a.resource.plural == "namespaces";
    if a.namespace.is_empty() || is_namespace {
        return Ok(Value::Null);
    }
    let ns = matching::namespace_object(a.namespace, objs).await?;
    Ok(super::compile::namespace_object(&ns))
}

/// The refusal of the first denial: `pods "x" is forbidden: ValidatingAdmissionPolicy ...`,
/// with the code of its reason and the message as its one cause, as Kubernetes answers.
fn refusal(a: &Attributes<'_>, obj: Option<&Value>, d: &Denied) -> Error {
    let message = match &d.binding {
        Some(b) => format!(
            "ValidatingAdmissionPolicy '{}' with binding '{}' denied request: {}",
            d.policy, b, d.message
        ),
        None => format!(
            "ValidatingAdmissionPolicy '{}' denied request: {}",
            d.policy, d.message
        ),
    };
    let (reason, code): (&'static str, u16) = match d.reason.as_str() {
        "Forbidden" => ("Forbidden", 403),
        "Unauthorized" => ("Unauthorized", 401),
        "RequestEntityTooLarge" => ("RequestEntityTooLarge", 413),
        _ => ("Invalid", 422),
    };
    match crate::admission::forbidden(a, obj, &message) {
        Error::Api(mut e) => {
            e.code = code;
            e.reason = reason;
            let details = e.details.get_or_insert_with(|| json!({}));
            details["causes"] = json!([{"message": message}]);
            Error::Api(e)
        }
        other => other,
    }
}

/// The audit annotations of one policy, across its bindings and params: one value per
/// key, distinct values joined with `, `, published as `POLICY/KEY`.
#[derive(Default)]
struct AnnotationCollector(Vec<(String, Vec<String>)>);

impl AnnotationCollector {
    fn add(&mut self, key: String, value: String) {
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some((_, values)) => {
                if !values.contains(&value) {
                    values.push(value);
                }
            }
            None => self.0.push((key, vec![value])),
        }
    }

    fn publish(self, policy: &str, a: &Attributes<'_>) {
        for (key, values) in self.0 {
            a.notes()
                .annotate(format!("{policy}/{key}"), values.join(", "));
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::admission::testing::Fixed;
    use crate::admission::{Operation, Options};
    use crate::auth::UserInfo;
    use crate::registry::builtin;
    use crate::request::WriteOpts;

    fn policy(name: &str, spec: Value) -> Value {
        json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": name, "resourceVersion": "1"}, "spec": spec})
    }

    fn binding(name: &str, spec: Value) -> Value {
        json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": name, "resourceVersion": "1"}, "spec": spec})
    }

    fn pods_constraints() -> Value {
        json!({"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"],
            "operations": ["CREATE", "UPDATE"], "resources": ["pods"]}]})
    }

    fn cluster(policies: Vec<Value>, bindings: Vec<Value>) -> Fixed {
        let mut f = Fixed::default()
            .with(
                "namespaces",
                "",
                json!({"metadata": {"name": "prod", "labels": {"env": "prod"}}}),
            )
            .with(
                "namespaces",
                "",
                json!({"metadata": {"name": "dev", "labels": {"env": "dev"}}}),
            );
        for p in policies {
            f = f.with(POLICIES, "", p);
        }
        for b in bindings {
            f = f.with(BINDINGS, "", b);
        }
        f
    }

    async fn create_pod(
        plugin: &ValidatingAdmissionPolicy,
        objs: &Fixed,
        ns: &str,
        pod: Value,
        opts: &WriteOpts,
    ) -> Result<()> {
        let pods = builtin("", "pods").unwrap();
        let user = UserInfo::default();
        let a = Attributes {
            operation: Operation::Create,
            resource: &pods,
            subresource: "",
            namespace: ns,
            name: "",
            old: None,
            user: &user,
            dry_run: false,
            options: Options::Create(opts),
            reinvocation: None,
        };
        plugin.validate(&a, Some(&pod), objs).await
    }

    fn pod(name: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": {}})
    }

    #[tokio::test]
    async fn a_denial_is_answered_as_kubernetes_answers_it() {
        let objs = cluster(
            vec![policy(
                "names",
                json!({"matchConstraints": pods_constraints(), "validations": [
                    {"expression": "object.metadata.name != 'bad'"},
                    {"expression": "object.metadata.name != 'worse'", "reason": "Forbidden",
                     "messageExpression": "'no ' + object.metadata.name"},
                ]}),
            )],
            vec![binding(
                "names-prod",
                json!({"policyName": "names", "validationActions": ["Deny"],
                    "matchResources": {"namespaceSelector": {"matchLabels": {"env": "prod"}}}}),
            )],
        );
        let plugin = ValidatingAdmissionPolicy::default();
        let opts = WriteOpts::default();
        assert!(create_pod(&plugin, &objs, "prod", pod("good"), &opts)
            .await
            .is_ok());
        let e = create_pod(&plugin, &objs, "prod", pod("bad"), &opts)
            .await
            .unwrap_err();
        let s = e.status();
        assert_eq!(s["code"], 422);
        assert_eq!(s["reason"], "Invalid");
        let message = "ValidatingAdmissionPolicy 'names' with binding 'names-prod' denied request: failed expression: object.metadata.name != 'bad'";
        assert_eq!(
            s["message"],
            format!("pods \"bad\" is forbidden: {message}")
        );
        assert_eq!(s["details"]["causes"], json!([{"message": message}]));
        assert_eq!(s["details"]["kind"], "pods");
        let e = create_pod(&plugin, &objs, "prod", pod("worse"), &opts)
            .await
            .unwrap_err();
        assert_eq!(e.code(), 403);
        assert!(e.to_string().ends_with("denied request: no worse"), "{e}");
        // The binding selects prod only.
        assert!(create_pod(&plugin, &objs, "dev", pod("bad"), &opts)
            .await
            .is_ok());
    }

    #[tokio::test]
    async fn warn_and_audit_leave_notes() {
        let objs = cluster(
            vec![policy(
                "names",
                json!({"matchConstraints": pods_constraints(),
                    "validations": [{"expression": "object.metadata.name != 'bad'", "message": "not that name"}],
                    "auditAnnotations": [{"key": "name", "valueExpression": "string(object.metadata.name)"}]}),
            )],
            vec![binding(
                "names-warn",
                json!({"policyName": "names", "validationActions": ["Warn", "Audit"]}),
            )],
        );
        let plugin = ValidatingAdmissionPolicy::default();
        let opts = WriteOpts::default();
        create_pod(&plugin, &objs, "dev", pod("bad"), &opts)
            .await
            .unwrap();
        assert_eq!(
            opts.notes.warnings(),
            vec!["Validation failed for ValidatingAdmissionPolicy 'names' with binding 'names-warn': not that name"]
        );
        let annotations = opts.notes.annotations();
        assert_eq!(annotations[0].0, VALIDATION_FAILURE_ANNOTATION);
        assert_eq!(
            serde_json::from_str::<Value>(&annotations[0].1).unwrap(),
            json!([{"message": "not that name", "policy": "names", "binding": "names-warn",
                "expressionIndex": 0, "validationActions": ["Warn", "Audit"]}])
        );
        assert_eq!(annotations[1], ("names/name".to_owned(), "bad".to_owned()));
    }

    #[tokio::test]
    async fn configuration_errors_follow_the_failure_policy() {
        let spec = |fp: &str| {
            json!({"failurePolicy": fp, "matchConstraints": pods_constraints(),
                "paramKind": {"apiVersion": "example.com/v1", "kind": "Limits"},
                "validations": [{"expression": "true"}]})
        };
        let bind = |p: &str| {
            binding(
                &format!("{p}-b"),
                json!({"policyName": p, "validationActions": ["Deny"], "paramRef": {"name": "x"}}),
            )
        };
        let objs = cluster(
            vec![
                policy("fail", spec("Fail")),
                policy("ignore", spec("Ignore")),
            ],
            vec![bind("fail"), bind("ignore")],
        );
        let plugin = ValidatingAdmissionPolicy::default();
        let e = create_pod(&plugin, &objs, "dev", pod("a"), &WriteOpts::default())
            .await
            .unwrap_err();
        assert_eq!(e.code(), 422);
        assert!(e.to_string().ends_with(
            "ValidatingAdmissionPolicy 'fail' denied request: failed to configure policy: failed to find resource referenced by paramKind: 'example.com/v1, Kind=Limits'"
        ), "{e}");
        let objs = cluster(vec![policy("ignore", spec("Ignore"))], vec![bind("ignore")]);
        assert!(
            create_pod(&plugin, &objs, "dev", pod("a"), &WriteOpts::default())
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn policies_do_not_check_their_own_types_and_compile_once() {
        let objs = cluster(
            vec![policy(
                "all",
                json!({"matchConstraints": {"resourceRules": [{"apiGroups": ["*"], "apiVersions": ["*"],
                    "operations": ["*"], "resources": ["*"]}]},
                    "validations": [{"expression": "false"}]}),
            )],
            vec![binding(
                "all-b",
                json!({"policyName": "all", "validationActions": ["Deny"]}),
            )],
        );
        let plugin = ValidatingAdmissionPolicy::default();
        let user = UserInfo::default();
        let opts = WriteOpts::default();
        for plural in [POLICIES, BINDINGS] {
            let r = builtin(GROUP, plural).unwrap();
            let a = Attributes {
                operation: Operation::Create,
                resource: &r,
                subresource: "",
                namespace: "",
                name: "x",
                old: None,
                user: &user,
                dry_run: false,
                options: Options::Create(&opts),
                reinvocation: None,
            };
            assert!(plugin.validate(&a, Some(&json!({})), &objs).await.is_ok());
        }
        assert!(create_pod(&plugin, &objs, "dev", pod("a"), &opts)
            .await
            .is_err());
        let first = plugin.compiled.lock().hooks[0].policy.clone();
        assert!(create_pod(&plugin, &objs, "dev", pod("b"), &opts)
            .await
            .is_err());
        assert!(Arc::ptr_eq(&first, &plugin.compiled.lock().hooks[0].policy));
        // No binding: nothing applies.
        let unbound = cluster(vec![], vec![]);
        assert!(create_pod(&plugin, &unbound, "dev", pod("a"), &opts)
            .await
            .is_ok());
    }
}
