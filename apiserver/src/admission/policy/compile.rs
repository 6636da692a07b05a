//! A ValidatingAdmissionPolicy compiled once per resourceVersion: every expression parsed and
//! checked in the environment Kubernetes gives policies (k8s.io/apiserver's admission
//! `cel` package: `object`, `oldObject`, `request`, `namespaceObject`, `params` when the
//! policy has a `paramKind`, and `variables`), with the return type each place demands.
//!
//! An expression that does not compile does not stop the policy: it fails when it runs,
//! with `compilation error: ...`, and the policy's failurePolicy decides, as in Kubernetes.

use k8s_openapi::api::admissionregistration::v1::ValidatingAdmissionPolicySpec;
use serde::Deserialize;
use serde_json::{json, Value};
use skiff_schema::cel::{Composited, Env, Expression, InputType};
use skiff_schema::Schema;

/// What a policy does when an expression cannot be evaluated or its configuration is wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailurePolicy {
    /// Refuse the request (the default).
    Fail,
    /// Admit it as if the policy did not exist.
    Ignore,
}

/// One compiled expression, kept with its source (messages quote it).
#[derive(Debug)]
pub struct Compiled {
    /// The expression as written.
    pub source: String,
    /// The program, or why it did not compile (`compilation failed: ERROR: ...`, or
    /// `must evaluate to bool`).
    pub program: Result<Expression, String>,
}

/// One of `spec.validations`.
#[derive(Debug)]
pub struct Validation {
    /// `expression`.
    pub expression: Compiled,
    /// `message`.
    pub message: Option<String>,
    /// `messageExpression`.
    pub message_expression: Option<Compiled>,
    /// `reason` (`Invalid` when unset).
    pub reason: Option<String>,
}

/// One of `spec.auditAnnotations`.
#[derive(Debug)]
pub struct AuditAnnotation {
    /// `key`.
    pub key: String,
    /// `valueExpression`.
    pub value: Compiled,
}

/// One of `spec.matchConditions`.
#[derive(Debug)]
pub struct MatchCondition {
    /// `name`.
    pub name: String,
    /// `expression`.
    pub expression: Compiled,
}

/// A policy, ready to run.
#[derive(Debug)]
pub struct Policy {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.resourceVersion` when compiled.
    pub resource_version: String,
    /// The spec as stored.
    pub spec: ValidatingAdmissionPolicySpec,
    /// `spec.failurePolicy`.
    pub failure_policy: FailurePolicy,
    /// `spec.paramKind` as (group, version, kind).
    pub param_kind: Option<(String, String, String)>,
    /// Why the policy cannot be used at all (its spec does not decode, or its paramKind
    /// names no API version).
    pub configuration_error: Option<String>,
    /// The environment its expressions were compiled in.
    pub env: Env,
    /// `spec.variables`, in order.
    pub variables: Vec<Composited>,
    /// `spec.matchConditions`.
    pub match_conditions: Vec<MatchCondition>,
    /// `spec.validations`.
    pub validations: Vec<Validation>,
    /// `spec.auditAnnotations`.
    pub audit_annotations: Vec<AuditAnnotation>,
}

/// What each place requires an expression to return.
#[derive(Clone, Copy)]
enum Returns {
    Bool,
    String,
    StringOrNull,
    Any,
}

impl Policy {
    /// Compiles the policy `obj` (as stored).
    pub fn compile(obj: &Value) -> Policy {
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let resource_version = obj
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let (spec, mut configuration_error) = match obj
            .get("spec")
            .map(ValidatingAdmissionPolicySpec::deserialize)
        {
            Some(Ok(spec)) => (spec, None),
            Some(Err(e)) => (
                Default::default(),
                Some(format!("decoding the policy: {e}")),
            ),
            None => (
                Default::default(),
                Some("the policy has no spec".to_owned()),
            ),
        };
        let failure_policy = match spec.failure_policy.as_deref() {
            Some("Ignore") => FailurePolicy::Ignore,
            _ => FailurePolicy::Fail,
        };
        let param_kind = spec.param_kind.as_ref().map(|pk| {
            let api_version = pk.api_version.clone().unwrap_or_default();
            let (group, version) = match api_version.split_once('/') {
                Some((g, v)) => (g.to_owned(), v.to_owned()),
                None => (String::new(), api_version.clone()),
            };
            if version.is_empty() || version.contains('/') {
                configuration_error.get_or_insert_with(|| {
                    format!(
                        "failed to parse paramKind APIVersion: unexpected GroupVersion string: {api_version}"
                    )
                });
            }
            (group, version, pk.kind.clone().unwrap_or_default())
        });

        let mut env = base_env(param_kind.is_some());
        let mut variables = Vec::new();
        for v in spec.variables.iter().flatten() {
            let expression = compile(&env, &v.expression, Returns::Any);
            env.add_variable(&v.name, expression.as_ref().ok());
            variables.push(Composited {
                name: v.name.clone(),
                expression,
            });
        }
        let compiled = |source: &str, returns: Returns| Compiled {
            source: source.to_owned(),
            program: compile(&env, source, returns),
        };
        let match_conditions = spec
            .match_conditions
            .iter()
            .flatten()
            .map(|c| MatchCondition {
                name: c.name.clone(),
                expression: compiled(&c.expression, Returns::Bool),
            })
            .collect();
        let validations = spec
            .validations
            .iter()
            .flatten()
            .map(|v| Validation {
                expression: compiled(&v.expression, Returns::Bool),
                message: v.message.clone(),
                message_expression: v
                    .message_expression
                    .as_deref()
                    .filter(|m| !m.is_empty())
                    .map(|m| compiled(m, Returns::String)),
                reason: v.reason.clone().filter(|r| !r.is_empty()),
            })
            .collect();
        let audit_annotations = spec
            .audit_annotations
            .iter()
            .flatten()
            .map(|a| AuditAnnotation {
                key: a.key.clone(),
                value: compiled(&a.value_expression, Returns::StringOrNull),
            })
            .collect();
        Policy {
            name,
            resource_version,
            failure_policy,
            param_kind,
            configuration_error,
            env,
            variables,
            match_conditions,
            validations,
            audit_annotations,
            spec,
        }
    }
}

/// Compiles `source` in `env`, requiring what `returns` says, with Kubernetes' wording of
/// the failures.
fn compile(env: &Env, source: &str, returns: Returns) -> Result<Expression, String> {
    let e = env
        .compile(source)
        .map_err(|issues| format!("compilation failed: {}", explain(&issues)))?;
    let ty = e.return_type();
    let ok = match returns {
        Returns::Bool => ty == "bool",
        Returns::String => ty == "string",
        Returns::StringOrNull => ty == "string" || ty == "null_type",
        Returns::Any => true,
    };
    if ok {
        return Ok(e);
    }
    Err(match returns {
        Returns::Bool => "must evaluate to bool".to_owned(),
        Returns::String => "must evaluate to string".to_owned(),
        _ => "must evaluate to one of [string null_type]".to_owned(),
    })
}

/// cel-go's problems, with a word on `authorizer`, which Kubernetes declares and this
/// server does not have.
fn explain(issues: &str) -> String {
    if issues.contains("undeclared reference to 'authorizer'") {
        return issues.replace(
            "undeclared reference to 'authorizer' (in container '')",
            "undeclared reference to 'authorizer' (in container ''): the authorizer library is not available in this server",
        );
    }
    issues.to_owned()
}

/// The environment of a policy's expressions: `object` and `oldObject` of any type,
/// `request` and `namespaceObject` typed as Kubernetes types them, `params` when the policy
/// has a paramKind, and the composited `variables`.
pub fn base_env(with_params: bool) -> Env {
    env_with(InputType::Dyn, with_params.then_some(InputType::Dyn))
}

/// The environment with `object`/`oldObject` of type `object` and `params` of type
/// `params` (when the policy has a paramKind): what type checking uses.
pub fn env_with(object: InputType, params: Option<InputType>) -> Env {
    let mut inputs = vec![
        ("object".to_owned(), object.clone()),
        ("oldObject".to_owned(), object),
        (
            "request".to_owned(),
            InputType::Schema(Box::new(request_schema())),
        ),
        (
            "namespaceObject".to_owned(),
            InputType::Schema(Box::new(namespace_schema())),
        ),
    ];
    if let Some(p) = params {
        inputs.push(("params".to_owned(), p));
    }
    Env::new(inputs).with_record("variables")
}

fn schema(v: Value) -> Schema {
    // The literals below are well-formed schemas.
    Schema::parse(&v).unwrap_or_default()
}

/// The type of `request` (Kubernetes' `BuildRequestType`: the AdmissionRequest without
/// `uid`, `object` and `oldObject`).
fn request_schema() -> Schema {
    let gvk = json!({"type": "object", "properties": {
        "group": {"type": "string"}, "version": {"type": "string"}, "kind": {"type": "string"}}});
    let gvr = json!({"type": "object", "properties": {
        "group": {"type": "string"}, "version": {"type": "string"}, "resource": {"type": "string"}}});
    schema(json!({"type": "object", "properties": {
        "kind": gvk,
        "resource": gvr,
        "subResource": {"type": "string"},
        "requestKind": gvk,
        "requestResource": gvr,
        "requestSubResource": {"type": "string"},
        "name": {"type": "string"},
        "namespace": {"type": "string"},
        "operation": {"type": "string"},
        "userInfo": {"type": "object", "properties": {
            "username": {"type": "string"},
            "uid": {"type": "string"},
            "groups": {"type": "array", "items": {"type": "string"}},
            "extra": {"type": "object", "additionalProperties":
                {"type": "array", "items": {"type": "string"}}},
        }},
        "dryRun": {"type": "boolean"},
        "options": {"x-kubernetes-preserve-unknown-fields": true},
    }}))
}

/// The type of `namespaceObject` (Kubernetes' `BuildNamespaceType`).
fn namespace_schema() -> Schema {
    let strings = json!({"type": "array", "items": {"type": "string"}});
    let string_map = json!({"type": "object", "additionalProperties": {"type": "string"}});
    schema(json!({"type": "object", "properties": {
        "metadata": {"type": "object", "properties": {
            "name": {"type": "string"},
            "generateName": {"type": "string"},
            "namespace": {"type": "string"},
            "labels": string_map,
            "annotations": string_map,
            "UID": {"type": "string"},
            "creationTimestamp": {"type": "string", "format": "date-time"},
            "deletionGracePeriodSeconds": {"type": "integer"},
            "deletionTimestamp": {"type": "string", "format": "date-time"},
            "generation": {"type": "integer"},
            "resourceVersion": {"type": "string"},
            "finalizers": strings,
        }},
        "spec": {"type": "object", "properties": {"finalizers": strings}},
        "status": {"type": "object", "properties": {
            "conditions": {"type": "array", "items": {"type": "object", "properties": {
                "status": {"type": "string"},
                "type": {"type": "string"},
                "lastTransitionTime": {"type": "string", "format": "date-time"},
                "message": {"type": "string"},
                "reason": {"type": "string"},
            }}},
            "phase": {"type": "string"},
        }},
    }}))
}

/// `namespaceObject` for a namespace as stored: only the fields its type declares
/// (Kubernetes' `CreateNamespaceObject`).
pub fn namespace_object(ns: &Value) -> Value {
    let meta = &ns["metadata"];
    let mut m = serde_json::Map::new();
    for key in [
        "name",
        "generateName",
        "namespace",
        "labels",
        "annotations",
        "creationTimestamp",
        "deletionGracePeriodSeconds",
        "deletionTimestamp",
        "generation",
        "resourceVersion",
        "finalizers",
    ] {
        if let Some(v) = meta.get(key).filter(|v| !v.is_null()) {
            m.insert(key.to_owned(), v.clone());
        }
    }
    if let Some(uid) = meta.get("uid").filter(|v| !v.is_null()) {
        m.insert("UID".to_owned(), uid.clone());
    }
    let mut out = json!({"metadata": Value::Object(m)});
    if let Some(spec) = ns.get("spec").filter(|v| v.is_object()) {
        out["spec"] = spec.clone();
    }
    if let Some(status) = ns.get("status").filter(|v| v.is_object()) {
        out["status"] = status.clone();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(spec: Value) -> Policy {
        Policy::compile(&json!({
            "metadata": {"name": "p", "resourceVersion": "7"},
            "spec": spec,
        }))
    }

    #[test]
    fn compiles_with_kubernetes_wording() {
        let p = policy(json!({
            "failurePolicy": "Ignore",
            "paramKind": {"apiVersion": "v1", "kind": "ConfigMap"},
            "variables": [{"name": "replicas", "expression": "object.spec.replicas"}],
            "validations": [
                {"expression": "variables.replicas <= int(params.data.max)"},
                {"expression": "object.spec.replicas"},
                {"expression": "object.spec.x ==", "message": "m"},
                {"expression": "variables.nope > 1"},
                {"expression": "true", "messageExpression": "1"},
                {"expression": "request.nosuch == 1"},
                {"expression": "authorizer.group('').resource('pods').check('get').allowed()"},
            ],
            "auditAnnotations": [{"key": "k", "valueExpression": "1"}],
        }));
        assert_eq!(p.name, "p");
        assert_eq!(p.resource_version, "7");
        assert_eq!(p.failure_policy, FailurePolicy::Ignore);
        assert_eq!(
            p.param_kind,
            Some(("".into(), "v1".into(), "ConfigMap".into()))
        );
        assert!(p.configuration_error.is_none());
        assert!(p.validations[0].expression.program.is_ok());
        assert_eq!(
            p.validations[1].expression.program.as_ref().unwrap_err(),
            "must evaluate to bool"
        );
        let e = p.validations[2].expression.program.as_ref().unwrap_err();
        assert!(
            e.starts_with("compilation failed: ERROR: <input>:1:"),
            "{e}"
        );
        let e = p.validations[3].expression.program.as_ref().unwrap_err();
        assert!(e.contains("undefined field 'nope'"), "{e}");
        assert_eq!(
            p.validations[4]
                .message_expression
                .as_ref()
                .unwrap()
                .program
                .as_ref()
                .unwrap_err(),
            "must evaluate to string"
        );
        let e = p.validations[5].expression.program.as_ref().unwrap_err();
        assert!(e.contains("undefined field 'nosuch'"), "{e}");
        let e = p.validations[6].expression.program.as_ref().unwrap_err();
        assert!(e.contains("authorizer library is not available"), "{e}");
        assert_eq!(
            p.audit_annotations[0].value.program.as_ref().unwrap_err(),
            "must evaluate to one of [string null_type]"
        );
    }

    #[test]
    fn params_exist_only_with_a_param_kind() {
        let p = policy(json!({"validations": [{"expression": "params.x == 1"}]}));
        let e = p.validations[0].expression.program.as_ref().unwrap_err();
        assert!(e.contains("undeclared reference to 'params'"), "{e}");
    }

    #[test]
    fn a_bad_param_kind_is_a_configuration_error() {
        let p = policy(json!({"paramKind": {"apiVersion": "a/b/c", "kind": "X"}}));
        assert!(p
            .configuration_error
            .unwrap()
            .starts_with("failed to parse paramKind APIVersion"));
        let p = Policy::compile(&json!({"metadata": {"name": "p"}, "spec": {"validations": 3}}));
        assert!(p.configuration_error.is_some());
    }

    #[test]
    fn namespace_object_keeps_what_its_type_declares() {
        let ns = json!({"metadata": {"name": "a", "uid": "u", "labels": {"x": "y"},
            "managedFields": [{}], "ownerReferences": []},
            "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}});
        assert_eq!(
            namespace_object(&ns),
            json!({"metadata": {"name": "a", "UID": "u", "labels": {"x": "y"}},
                "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}})
        );
    }
}
