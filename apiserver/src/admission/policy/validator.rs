//! One policy run for one request, binding and param: its matchConditions, validations and
//! auditAnnotations evaluated to decisions, as k8s.io/apiserver's validating policy
//! `validator.go` turns evaluations into `PolicyDecision`s. What the decisions do (deny,
//! warn, audit) is the dispatcher's business.

use std::time::{Duration, Instant};

use serde_json::Value;
use skiff_schema::cel::{Activation, MAX_EVALUATED_MESSAGE_EXPRESSION_SIZE_BYTES};

use super::compile::{Compiled, FailurePolicy, Policy};

/// The most all expressions of one policy may cost on one request (Kubernetes'
/// `RuntimeCELCostBudget`).
pub const RUNTIME_CEL_COST_BUDGET: u64 = 10_000_000;

const OUT_OF_BUDGET: &str =
    "validation failed due to running out of cost budget, no further validation rules will be run";

/// What the CEL variables hold for one evaluation.
pub struct Inputs<'a> {
    /// `object` (`null` for deletes).
    pub object: &'a Value,
    /// `oldObject` (`null` for creates).
    pub old_object: &'a Value,
    /// `request`.
    pub request: &'a Value,
    /// `namespaceObject` (`null` for cluster-scoped requests).
    pub namespace: &'a Value,
    /// `params` (`null` when the binding has no paramRef); unbound when the policy has no
    /// paramKind.
    pub params: Option<&'a Value>,
}

/// What one validation decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Let the request through.
    Admit,
    /// Refuse it (or warn, or audit: as the binding's validationActions say).
    Deny,
}

/// How a decision came about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evaluation {
    /// The expression held.
    Admit,
    /// The expression did not hold.
    Deny,
    /// It could not be evaluated (the failurePolicy chose the action).
    Error,
}

/// One validation's outcome.
#[derive(Debug, Clone)]
pub struct Decision {
    /// What to do.
    pub action: Action,
    /// Why.
    pub evaluation: Evaluation,
    /// The message of a refusal or error.
    pub message: String,
    /// The reason of a refusal (`Invalid` unless the validation says otherwise).
    pub reason: String,
    /// How long the evaluation took.
    pub elapsed: Duration,
}

impl Decision {
    fn error(policy: FailurePolicy, message: String) -> Decision {
        Decision {
            action: match policy {
                FailurePolicy::Ignore => Action::Admit,
                FailurePolicy::Fail => Action::Deny,
            },
            evaluation: Evaluation::Error,
            message,
            reason: String::new(),
            elapsed: Duration::ZERO,
        }
    }

    /// The `error_type` label of the check metrics (Kubernetes' `ErrorType`).
    pub fn error_type(&self) -> &'static str {
        if self.evaluation == Evaluation::Admit {
            "no_error"
        } else if self.message.starts_with("compilation") {
            "compile_error"
        } else if self.message.starts_with(OUT_OF_BUDGET) {
            "out_of_budget"
        } else {
            "invalid_error"
        }
    }
}

/// What one auditAnnotation gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Annotation {
    /// Publish `POLICY/KEY: value`.
    Publish {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// The expression failed and the failurePolicy is Fail: a refusal.
    Error(String),
    /// Nothing to publish.
    Exclude,
}

/// All a policy decided for one request, binding and param.
#[derive(Debug, Default)]
pub struct Outcome {
    /// One per validation, in order; empty when the matchConditions did not match.
    pub decisions: Vec<Decision>,
    /// One per auditAnnotation.
    pub annotations: Vec<Annotation>,
}

/// Runs `policy` on `inputs`.
pub fn validate(policy: &Policy, inputs: &Inputs<'_>) -> Outcome {
    let fp = policy.failure_policy;
    let mut values: Vec<(&str, &Value)> = vec![
        ("object", inputs.object),
        ("oldObject", inputs.old_object),
        ("request", inputs.request),
        ("namespaceObject", inputs.namespace),
    ];
    let null = Value::Null;
    if policy.param_kind.is_some() {
        values.push(("params", inputs.params.unwrap_or(&null)));
    }
    let activation = match Activation::new(&policy.env, &values, &policy.variables) {
        Ok(a) => a,
        Err(e) => {
            return Outcome {
                decisions: vec![Decision::error(fp, e)],
                annotations: Vec::new(),
            }
        }
    };

    // matchConditions: any false skips the policy; errors, with none false, follow the
    // failurePolicy.
    let mut errors = Vec::new();
    for c in &policy.match_conditions {
        match evaluate(&activation, &c.expression) {
            Ok(Value::Bool(false)) => return Outcome::default(),
            Ok(Value::Bool(true)) => {}
            Ok(other) => errors.push(format!(
                "expression '{}' resulted in error: no such overload: expected a bool, got {other}",
                c.expression.source
            )),
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        return match fp {
            FailurePolicy::Ignore => Outcome::default(),
            FailurePolicy::Fail => Outcome {
                decisions: vec![Decision::error(fp, aggregate(&errors))],
                annotations: Vec::new(),
            },
        };
    }

    let mut decisions = Vec::with_capacity(policy.validations.len());
    for v in &policy.validations {
        if activation.spent() > RUNTIME_CEL_COST_BUDGET {
            decisions.push(Decision::error(fp, OUT_OF_BUDGET.to_owned()));
            break;
        }
        let started = Instant::now();
        let result = evaluate(&activation, &v.expression);
        let elapsed = started.elapsed();
        let mut d = match result {
            Err(e) => Decision::error(fp, e),
            Ok(Value::Bool(true)) => Decision {
                action: Action::Admit,
                evaluation: Evaluation::Admit,
                message: String::new(),
                reason: String::new(),
                elapsed,
            },
            Ok(Value::Bool(false)) => {
                let message = v
                    .message_expression
                    .as_ref()
                    .and_then(|m| message_text(evaluate(&activation, m)))
                    .or_else(|| {
                        v.message
                            .as_deref()
                            .map(str::trim)
                            .filter(|m| !m.is_empty())
                            .map(str::to_owned)
                    })
                    .unwrap_or_else(|| {
                        format!("failed expression: {}", v.expression.source.trim())
                    });
                Decision {
                    action: Action::Deny,
                    evaluation: Evaluation::Deny,
                    message,
                    reason: v.reason.clone().unwrap_or_else(|| "Invalid".to_owned()),
                    elapsed,
                }
            }
            Ok(other) => Decision::error(
                fp,
                format!(
                    "expression '{}' resulted in error: no such overload: expected a bool, got {other}",
                    v.expression.source
                ),
            ),
        };
        d.elapsed = elapsed;
        decisions.push(d);
    }

    let annotations = policy
        .audit_annotations
        .iter()
        .map(|a| match evaluate(&activation, &a.value) {
            Err(e) => match fp {
                FailurePolicy::Ignore => Annotation::Exclude,
                FailurePolicy::Fail => Annotation::Error(e),
            },
            Ok(Value::String(s)) if s.trim().is_empty() => Annotation::Exclude,
            Ok(Value::String(s)) => Annotation::Publish {
                key: a.key.clone(),
                value: s.trim().to_owned(),
            },
            Ok(Value::Null) => Annotation::Exclude,
            Ok(other) => Annotation::Error(format!(
                "valueExpression '{}' resulted in unsupported return type: {}. Return type must be either string or null.",
                a.value.source,
                type_name(&other)
            )),
        })
        .collect();
    Outcome {
        decisions,
        annotations,
    }
}

/// Evaluates one compiled expression, with Kubernetes' wording of failures.
fn evaluate(activation: &Activation<'_>, c: &Compiled) -> Result<Value, String> {
    let program = c
        .program
        .as_ref()
        .map_err(|e| format!("compilation error: {e}"))?;
    activation
        .evaluate(program)
        .map_err(|e| format!("expression '{}' resulted in error: {e}", c.source))
}

/// A messageExpression's result, when it can stand as the message (a string, trimmed, not
/// empty, not too long, on one line); otherwise the static message is used.
fn message_text(result: Result<Value, String>) -> Option<String> {
    let Ok(Value::String(s)) = result else {
        return None;
    };
    let s = s.trim();
    if s.is_empty() || s.len() > MAX_EVALUATED_MESSAGE_EXPRESSION_SIZE_BYTES || s.contains('\n') {
        return None;
    }
    Some(s.to_owned())
}

/// Several errors as Kubernetes' `utilerrors.NewAggregate` prints them.
fn aggregate(errors: &[String]) -> String {
    if errors.len() == 1 {
        errors[0].clone()
    } else {
        format!("[{}]", errors.join(", "))
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null_type",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_i64() => "int",
        Value::Number(n) if n.is_u64() => "uint",
        Value::Number(_) => "double",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "map",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn policy(spec: Value) -> Policy {
        Policy::compile(&json!({"metadata": {"name": "p", "resourceVersion": "1"}, "spec": spec}))
    }

    fn run(p: &Policy, object: Value, params: Option<Value>) -> Outcome {
        let request = json!({"operation": "CREATE", "namespace": "a", "name": "x",
            "userInfo": {"username": "alice", "groups": ["g"]}});
        let ns = json!({"metadata": {"name": "a", "labels": {"env": "prod"}}});
        validate(
            p,
            &Inputs {
                object: &object,
                old_object: &Value::Null,
                request: &request,
                namespace: &ns,
                params: params.as_ref(),
            },
        )
    }

    #[test]
    fn validations_decide_with_messages_in_order_of_preference() {
        let p = policy(json!({
            "paramKind": {"apiVersion": "v1", "kind": "ConfigMap"},
            "variables": [
                {"name": "max", "expression": "int(params.data.max)"},
                {"name": "over", "expression": "object.spec.replicas > variables.max"},
            ],
            "validations": [
                {"expression": "!variables.over",
                 "messageExpression": "'replicas ' + string(object.spec.replicas) + ' above ' + string(variables.max)",
                 "reason": "Forbidden"},
                {"expression": "object.spec.replicas < 3", "message": " static "},
                {"expression": "object.spec.replicas < 2"},
                {"expression": "namespaceObject.metadata.labels.env == 'prod' && request.userInfo.username == 'alice'"},
            ],
        }));
        let out = run(
            &p,
            json!({"spec": {"replicas": 5}}),
            Some(json!({"data": {"max": "3"}})),
        );
        let d = &out.decisions;
        assert_eq!(d.len(), 4);
        assert_eq!(d[0].action, Action::Deny);
        assert_eq!(d[0].message, "replicas 5 above 3");
        assert_eq!(d[0].reason, "Forbidden");
        assert_eq!(d[1].message, "static");
        assert_eq!(d[1].reason, "Invalid");
        assert_eq!(d[2].message, "failed expression: object.spec.replicas < 2");
        assert_eq!(d[3].action, Action::Admit);
        assert_eq!(d[3].error_type(), "no_error");

        let out = run(
            &p,
            json!({"spec": {"replicas": 1}}),
            Some(json!({"data": {"max": "3"}})),
        );
        assert!(out.decisions.iter().all(|d| d.action == Action::Admit));
    }

    #[test]
    fn errors_follow_the_failure_policy() {
        let spec = |fp: &str| {
            json!({"failurePolicy": fp, "validations": [
                {"expression": "object.spec.nosuch > 1"},
                {"expression": "object.spec.replicas >"},
            ]})
        };
        let out = run(&policy(spec("Fail")), json!({"spec": {}}), None);
        assert_eq!(out.decisions[0].action, Action::Deny);
        assert_eq!(out.decisions[0].evaluation, Evaluation::Error);
        assert_eq!(
            out.decisions[0].message,
            "expression 'object.spec.nosuch > 1' resulted in error: no such key: nosuch"
        );
        assert_eq!(out.decisions[0].error_type(), "invalid_error");
        assert!(out.decisions[1]
            .message
            .starts_with("compilation error: compilation failed: ERROR: <input>:1:"));
        assert_eq!(out.decisions[1].error_type(), "compile_error");
        let out = run(&policy(spec("Ignore")), json!({"spec": {}}), None);
        assert!(out.decisions.iter().all(|d| d.action == Action::Admit));
    }

    #[test]
    fn a_failing_variable_says_so() {
        let p = policy(json!({
            "variables": [{"name": "v", "expression": "object.spec.nosuch"}],
            "validations": [{"expression": "variables.v == 1"}],
        }));
        let out = run(&p, json!({"spec": {}}), None);
        assert_eq!(
            out.decisions[0].message,
            "expression 'variables.v == 1' resulted in error: composited variable \"v\" fails to evaluate: no such key: nosuch"
        );
    }

    #[test]
    fn match_conditions_narrow_and_fail_per_policy() {
        let p = policy(json!({
            "matchConditions": [
                {"name": "labelled", "expression": "has(object.metadata.labels) && 'check' in object.metadata.labels"},
            ],
            "validations": [{"expression": "false"}],
        }));
        assert!(run(&p, json!({"metadata": {}}), None).decisions.is_empty());
        let out = run(&p, json!({"metadata": {"labels": {"check": "y"}}}), None);
        assert_eq!(out.decisions[0].action, Action::Deny);

        let broken = |fp: &str| {
            policy(json!({"failurePolicy": fp,
                "matchConditions": [{"name": "bad", "expression": "object.x.y"}],
                "validations": [{"expression": "false"}]}))
        };
        let out = run(&broken("Fail"), json!({}), None);
        assert_eq!(out.decisions.len(), 1);
        assert_eq!(out.decisions[0].evaluation, Evaluation::Error);
        assert_eq!(
            out.decisions[0].message,
            "compilation error: must evaluate to bool"
        );
        assert!(run(&broken("Ignore"), json!({}), None).decisions.is_empty());
    }

    #[test]
    fn audit_annotations_publish_strings_and_skip_nulls() {
        let p = policy(json!({
            "auditAnnotations": [
                {"key": "replicas", "valueExpression": "'n=' + string(object.spec.replicas)"},
                {"key": "none", "valueExpression": "null"},
                {"key": "blank", "valueExpression": "'  '"},
                {"key": "broken", "valueExpression": "object.nosuch"},
            ],
        }));
        let out = run(&p, json!({"spec": {"replicas": 2}}), None);
        assert_eq!(
            out.annotations[0],
            Annotation::Publish {
                key: "replicas".into(),
                value: "n=2".into()
            }
        );
        assert_eq!(out.annotations[1], Annotation::Exclude);
        assert_eq!(out.annotations[2], Annotation::Exclude);
        assert!(
            matches!(&out.annotations[3], Annotation::Error(e) if e.contains("must evaluate to one of [string null_type]"))
        );
    }
}
