//! ValidatingAdmissionPolicies and ValidatingAdmissionPolicyBindings
//! (admissionregistration.k8s.io/v1): CEL validations of requests, and where they apply. The
//! defaults, validation (every expression compiled with the variables it may name), status
//! subresource and columns are Kubernetes' (`pkg/apis/admissionregistration`,
//! `pkg/registry/admissionregistration`); what evaluates the policies is the admission chain.

use std::collections::BTreeSet;

use k8s_openapi::api::admissionregistration::v1::{
    AuditAnnotation, MatchResources, NamedRuleWithOperations, ParamKind, ParamRef,
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
    ValidatingAdmissionPolicyBindingSpec, ValidatingAdmissionPolicySpec,
    ValidatingAdmissionPolicyStatus, Validation, Variable,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use serde_json::{json, Value};

use super::webhook_configuration::{
    compile, dns1035_errors, dns1123_subdomain_errors, go_slice, invalid_go, match_conditions,
    required, rule, selector, Returns, RuleParts, AGE, GROUP,
};
use super::{clear_status, col, Builtin, Column, Typed};
use crate::error::Cause;
use crate::validation as v;

const NAME: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";

/// The validatingadmissionpolicies resource.
pub static POLICIES: Builtin = Builtin {
    group: GROUP,
    version: "v1",
    kind: "ValidatingAdmissionPolicy",
    plural: "validatingadmissionpolicies",
    singular: "validatingadmissionpolicy",
    short_names: &[],
    categories: &["api-extensions"],
    namespaced: false,
    subresources: &[("status", &super::subresource::STATUS)],
    selectable: &[],
    has_generation: true,
    strategy: &POLICY,
    schema: super::schema_of::<ValidatingAdmissionPolicy>,
};

/// The validatingadmissionpolicybindings resource.
pub static BINDINGS: Builtin = Builtin {
    group: GROUP,
    version: "v1",
    kind: "ValidatingAdmissionPolicyBinding",
    plural: "validatingadmissionpolicybindings",
    singular: "validatingadmissionpolicybinding",
    short_names: &[],
    categories: &["api-extensions"],
    namespaced: false,
    subresources: &[],
    selectable: &[],
    has_generation: false,
    strategy: &BINDING,
    schema: super::schema_of::<ValidatingAdmissionPolicyBinding>,
};

// A new policy starts with no status (the status controller writes the type checking);
// main writes keep the stored status and status writes the stored spec, which the store does
// for every type with a status subresource.
static POLICY: Typed<ValidatingAdmissionPolicy> = Typed {
    status: true,
    defaults: default_policy,
    validate: validate_policy,
    prepare_create: clear_status,
    ..Typed::new(policy_columns, policy_cells)
};

static BINDING: Typed<ValidatingAdmissionPolicyBinding> = Typed {
    defaults: default_binding,
    validate: validate_binding,
    ..Typed::new(binding_columns, binding_cells)
};

fn policy_columns() -> Vec<Column> {
    vec![
        col("Name", "string", 0, NAME),
        col(
            "Validations",
            "integer",
            0,
            "Validations indicates the number of validation rules defined in this configuration",
        ),
        col(
            "ParamKind",
            "string",
            0,
            "ParamKind specifies the kind of resources used to parameterize this policy",
        ),
        col("Age", "string", 0, AGE),
    ]
}

fn policy_cells(obj: &Value) -> Vec<Value> {
    let validations = obj
        .pointer("/spec/validations")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let param_kind = match obj.pointer("/spec/paramKind") {
        Some(pk) if pk.is_object() => {
            format!("{}/{}", super::s(pk, "/apiVersion"), super::s(pk, "/kind"))
        }
        _ => "<unset>".into(),
    };
    vec![
        super::name(obj),
        json!(validations),
        json!(param_kind),
        super::age(obj),
    ]
}

fn binding_columns() -> Vec<Column> {
    vec![
        col("Name", "string", 0, NAME),
        col(
            "PolicyName",
            "string",
            0,
            "PolicyName indicates the policy definition which the policy binding binded to",
        ),
        col(
            "ParamRef",
            "string",
            0,
            "ParamRef indicates the param resource which sets the configration param",
        ),
        col("Age", "string", 0, AGE),
    ]
}

fn binding_cells(obj: &Value) -> Vec<Value> {
    let param = match obj.pointer("/spec/paramRef") {
        Some(pr) if pr.is_object() => {
            let name = super::s(pr, "/name");
            let ns = super::s(pr, "/namespace");
            if !name.is_empty() {
                // Whether the params are cluster-scoped cannot be told from here.
                if ns.is_empty() {
                    format!("*/{name}")
                } else {
                    format!("{ns}/{name}")
                }
            } else {
                match pr.get("selector") {
                    Some(sel) if !sel.is_null() => {
                        serde_json::from_value::<LabelSelector>(sel.clone())
                            .map(|s| go_selector(&s))
                            .unwrap_or_else(|_| "<unset>".into())
                    }
                    _ => "<unset>".into(),
                }
            }
        }
        _ => "<unset>".into(),
    };
    vec![
        super::name(obj),
        json!(super::s(obj, "/spec/policyName")),
        json!(param),
        super::age(obj),
    ]
}

/// A label selector as Go's generated `String()` prints it, which is what kube-apiserver
/// shows in the `PARAMREF` column of a binding whose params are chosen by selector.
fn go_selector(sel: &LabelSelector) -> String {
    let labels: String = sel
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}: {v},"))
        .collect();
    let exprs: String = sel
        .match_expressions
        .iter()
        .flatten()
        .map(|e| {
            format!(
                "LabelSelectorRequirement{{Key:{},Operator:{},Values:[{}],}},",
                e.key,
                e.operator,
                e.values.as_deref().unwrap_or_default().join(" ")
            )
        })
        .collect();
    format!(
        "&LabelSelector{{MatchLabels:map[string]string{{{labels}}},MatchExpressions:[]LabelSelectorRequirement{{{exprs}}},}}"
    )
}

// ---- defaults ----------------------------------------------------------------------------

fn default_match_resources(m: &mut MatchResources) {
    if m.match_policy.is_none() {
        m.match_policy = Some("Equivalent".into());
    }
    m.namespace_selector
        .get_or_insert_with(LabelSelector::default);
    m.object_selector.get_or_insert_with(LabelSelector::default);
    let rules = m.resource_rules.iter_mut().flatten();
    for r in rules.chain(m.exclude_resource_rules.iter_mut().flatten()) {
        r.scope.get_or_insert_with(|| "*".into());
    }
}

fn default_policy(p: &mut ValidatingAdmissionPolicy) {
    let spec = p.spec.get_or_insert_with(Default::default);
    spec.failure_policy.get_or_insert_with(|| "Fail".into());
    if let Some(m) = spec.match_constraints.as_mut() {
        default_match_resources(m);
    }
}

fn default_binding(b: &mut ValidatingAdmissionPolicyBinding) {
    // No default for `paramRef.parameterNotFoundAction` in v1: it must be given.
    if let Some(m) = b.spec.as_mut().and_then(|s| s.match_resources.as_mut()) {
        default_match_resources(m);
    }
}

// ---- policies ----------------------------------------------------------------------------

/// The variables a policy's expressions may name: those of every admission expression, the
/// params when the policy has a `paramKind`, `variables` when it declares some.
struct Vars {
    params: bool,
    variables: bool,
}

impl Vars {
    fn list(&self, authorizer: bool, variables: bool) -> Vec<&'static str> {
        let mut out = vec!["object", "oldObject", "namespaceObject", "request"];
        if self.params {
            out.push("params");
        }
        if authorizer {
            out.push("authorizer");
        }
        if variables && self.variables {
            out.push("variables");
        }
        out
    }
}

fn param_kind(f: &str, pk: &ParamKind, out: &mut Vec<Cause>) {
    let av = pk.api_version.as_deref().unwrap_or("");
    let at = format!("{f}.apiVersion");
    if av.is_empty() {
        out.push(Cause::required(&at));
    } else if av.matches('/').count() > 1 {
        out.push(Cause::invalid(
            &at,
            &json!(av),
            format!("unexpected GroupVersion string: {av}"),
        ));
    } else if av != "/" {
        let (group, version) = av.split_once('/').unwrap_or(("", av));
        if !group.is_empty() {
            let errs = dns1123_subdomain_errors(group);
            if !errs.is_empty() {
                out.push(Cause::invalid(&at, &json!(group), errs.join(",")));
            }
        }
        if version.is_empty() {
            out.push(Cause::invalid(&at, &json!(av), "version must be specified"));
        } else {
            let errs = dns1035_errors(version);
            if !errs.is_empty() {
                out.push(Cause::invalid(&at, &json!(version), errs.join(",")));
            }
        }
    } else {
        out.push(Cause::invalid(&at, &json!(av), "version must be specified"));
    }
    let kind = pk.kind.as_deref().unwrap_or("");
    let at = format!("{f}.kind");
    if kind.is_empty() {
        out.push(Cause::required(at));
    } else {
        let errs = dns1035_errors(&kind.to_lowercase());
        if !errs.is_empty() {
            out.push(Cause::invalid(
                at,
                &json!(kind),
                format!(
                    "may have mixed case, but should otherwise match: {}",
                    errs.join(",")
                ),
            ));
        }
    }
}

/// `ValidatePathSegmentName` messages.
fn path_segment_errors(name: &str) -> Vec<String> {
    if name == "." || name == ".." {
        return vec![format!("may not be '{name}'")];
    }
    ["/", "%"]
        .iter()
        .filter(|c| name.contains(*c))
        .map(|c| format!("may not contain '{c}'"))
        .collect()
}

fn named_rule(f: &str, r: &NamedRuleWithOperations, out: &mut Vec<Cause>) {
    let mut seen = BTreeSet::new();
    for (i, n) in r.resource_names.iter().flatten().enumerate() {
        let at = format!("{f}.resourceNames[{i}]");
        for e in path_segment_errors(n) {
            out.push(Cause::invalid(&at, &json!(n), e));
        }
        if !seen.insert(n.as_str()) {
            out.push(Cause::duplicate(&at, &json!(n)));
        }
    }
    rule(
        f,
        RuleParts {
            operations: r.operations.as_ref(),
            api_groups: r.api_groups.as_ref(),
            api_versions: r.api_versions.as_ref(),
            resources: r.resources.as_ref(),
            scope: r.scope.as_ref(),
        },
        out,
    );
}

/// `validateMatchResources`.
fn match_resources(f: &str, m: &MatchResources, out: &mut Vec<Cause>) {
    match m.match_policy.as_deref() {
        None => out.push(Cause::required(format!("{f}.matchPolicy"))),
        Some(p) => v::one_of(
            &format!("{f}.matchPolicy"),
            Some(p),
            &["Equivalent", "Exact"],
            out,
        ),
    }
    for (name, sel) in [
        ("namespaceSelector", &m.namespace_selector),
        ("objectSelector", &m.object_selector),
    ] {
        match sel {
            None => out.push(Cause::required(format!("{f}.{name}"))),
            Some(s) => selector(&format!("{f}.{name}"), Some(s), out),
        }
    }
    for (i, r) in m.resource_rules.iter().flatten().enumerate() {
        named_rule(&format!("{f}.resourceRules[{i}]"), r, out);
    }
    for (i, r) in m.exclude_resource_rules.iter().flatten().enumerate() {
        named_rule(&format!("{f}.excludeResourceRules[{i}]"), r, out);
    }
}

fn variable(f: &str, var: &Variable, vars: &Vars, out: &mut Vec<Cause>) {
    if var.name.trim().is_empty() {
        out.push(required(format!("{f}.name"), "name is not specified"));
    } else if !skiff_schema::cel::is_identifier(&var.name) {
        out.push(Cause::invalid(
            format!("{f}.name"),
            &json!(var.name),
            "name is not a valid CEL identifier",
        ));
    }
    if var.expression.trim().is_empty() {
        out.push(required(
            format!("{f}.expression"),
            "expression is not specified",
        ));
    } else {
        compile(
            &format!("{f}.expression"),
            &var.expression,
            &vars.list(true, true),
            Returns::Any,
            out,
        );
    }
}

fn has_newlines(s: &str) -> bool {
    s.contains(['\n', '\r'])
}

fn validation(f: &str, val: &Validation, vars: &Vars, out: &mut Vec<Cause>) {
    if val.expression.trim().is_empty() {
        out.push(required(
            format!("{f}.expression"),
            "expression is not specified",
        ));
    } else {
        compile(
            &format!("{f}.expression"),
            &val.expression,
            &vars.list(true, true),
            Returns::Bool,
            out,
        );
    }
    let me = val.message_expression.as_deref().unwrap_or("");
    if !me.is_empty() && me.trim().is_empty() {
        out.push(Cause::invalid(
            format!("{f}.messageExpression"),
            &json!(me),
            "must be non-empty if specified",
        ));
    } else if !me.trim().is_empty() {
        // Untrimmed, so that the compiler's columns point at the right place.
        compile(
            &format!("{f}.messageExpression"),
            me,
            &vars.list(false, true),
            Returns::String,
            out,
        );
    }
    let msg = val.message.as_deref().unwrap_or("");
    if !msg.is_empty() && msg.trim().is_empty() {
        out.push(Cause::invalid(
            format!("{f}.message"),
            &json!(msg),
            "message must be non-empty if specified",
        ));
    } else if has_newlines(msg.trim()) {
        // Quoted as Go quotes it, the line breaks escaped.
        out.push(invalid_go(
            format!("{f}.message"),
            format!("{msg:?}"),
            "message must not contain line breaks",
        ));
    }
    v::one_of(
        &format!("{f}.reason"),
        val.reason.as_deref(),
        &["Forbidden", "Invalid", "RequestEntityTooLarge"],
        out,
    );
}

const MAX_AUDIT_ANNOTATIONS: usize = 20;
const MAX_AUDIT_VALUE_EXPRESSION: usize = 5 * 1024;

fn audit_annotation(f: &str, policy: &str, a: &AuditAnnotation, vars: &Vars, out: &mut Vec<Cause>) {
    let key = format!("{f}.key");
    if policy.is_empty() {
        out.push(Cause::invalid(
            key,
            &json!(a.key),
            "requires metadata.name be non-empty",
        ));
    } else {
        // The annotation is recorded as `POLICY/KEY`, which must be a qualified name.
        v::qualified_name(&key, &format!("{policy}/{}", a.key), out);
    }
    let at = format!("{f}.valueExpression");
    let expr = a.value_expression.trim();
    if expr.is_empty() {
        out.push(required(at, "valueExpression is not specified"));
    } else if expr.len() > MAX_AUDIT_VALUE_EXPRESSION {
        out.push(required(
            at,
            &format!("must not exceed {MAX_AUDIT_VALUE_EXPRESSION} bytes in length"),
        ));
    } else {
        compile(
            &at,
            expr,
            &vars.list(true, true),
            Returns::StringOrNull,
            out,
        );
    }
}

fn policy_spec(name: &str, spec: &ValidatingAdmissionPolicySpec, out: &mut Vec<Cause>) {
    let f = "spec";
    match spec.failure_policy.as_deref() {
        None => out.push(Cause::required("spec.failurePolicy")),
        Some(p) => v::one_of("spec.failurePolicy", Some(p), &["Fail", "Ignore"], out),
    }
    let vars = Vars {
        params: spec.param_kind.is_some(),
        variables: spec.variables.as_ref().is_some_and(|v| !v.is_empty()),
    };
    if let Some(pk) = &spec.param_kind {
        param_kind("spec.paramKind", pk, out);
    }
    match &spec.match_constraints {
        None => out.push(Cause::required("spec.matchConstraints")),
        Some(m) => {
            match_resources("spec.matchConstraints", m, out);
            // The rules give the policy's expressions their types.
            if m.resource_rules.as_ref().is_none_or(Vec::is_empty) {
                out.push(Cause::required("spec.matchConstraints.resourceRules"));
            }
        }
    }
    match_conditions(
        &format!("{f}.matchConditions"),
        spec.match_conditions.as_deref().unwrap_or_default(),
        &vars.list(true, false),
        out,
    );
    for (i, var) in spec.variables.iter().flatten().enumerate() {
        variable(&format!("{f}.variables[{i}]"), var, &vars, out);
    }
    let validations = spec.validations.as_deref().unwrap_or_default();
    let audits = spec.audit_annotations.as_deref().unwrap_or_default();
    if validations.is_empty() && audits.is_empty() {
        let why = "validations or auditAnnotations must contain at least one item";
        out.push(required("spec.validations", why));
        out.push(required("spec.auditAnnotations", why));
        return;
    }
    for (i, val) in validations.iter().enumerate() {
        validation(&format!("{f}.validations[{i}]"), val, &vars, out);
    }
    if audits.len() > MAX_AUDIT_ANNOTATIONS {
        let keys: Vec<String> = audits.iter().map(|a| a.key.clone()).collect();
        out.push(invalid_go(
            "spec.auditAnnotations",
            go_slice("admissionregistration.AuditAnnotation", &keys),
            &format!("must not have more than {MAX_AUDIT_ANNOTATIONS} auditAnnotations"),
        ));
    }
    let mut keys = BTreeSet::new();
    for (i, a) in audits.iter().enumerate() {
        let at = format!("{f}.auditAnnotations[{i}]");
        audit_annotation(&at, name, a, &vars, out);
        if !keys.insert(a.key.as_str()) {
            out.push(Cause::duplicate(format!("{at}.key"), &json!(a.key)));
        }
    }
}

const REASON_MSG: &str = "a condition reason must start with alphabetic character, optionally followed by a string of alphanumeric characters or '_,:', and must end with an alphanumeric character or '_' (e.g. 'my_name',  or 'MY_NAME',  or 'MyName',  or 'ReasonA,ReasonB',  or 'ReasonA:ReasonB', regex used for validation is '[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?')";

/// `metav1validation.ValidateConditions`.
fn conditions(f: &str, conds: &[Condition], out: &mut Vec<Cause>) {
    let mut types = BTreeSet::new();
    for (i, c) in conds.iter().enumerate() {
        let at = |x: &str| format!("{f}[{i}].{x}");
        if !types.insert(c.type_.as_str()) {
            out.push(Cause::duplicate(at("type"), &json!(c.type_)));
        }
        v::qualified_name(&at("type"), &c.type_, out);
        v::one_of(
            &at("status"),
            Some(&c.status),
            &["False", "True", "Unknown"],
            out,
        );
        if let Some(g) = c.observed_generation.filter(|g| *g < 0) {
            out.push(Cause::invalid(
                at("observedGeneration"),
                &json!(g),
                "must be greater than or equal to zero",
            ));
        }
        if c.reason.is_empty() {
            out.push(required(at("reason"), "must be set"));
        } else {
            let b = c.reason.as_bytes();
            let shaped = b[0].is_ascii_alphabetic()
                && (b[b.len() - 1].is_ascii_alphanumeric() || b[b.len() - 1] == b'_')
                && b.iter()
                    .all(|&x| x.is_ascii_alphanumeric() || matches!(x, b'_' | b',' | b':'));
            if !shaped {
                out.push(Cause::invalid(at("reason"), &json!(c.reason), REASON_MSG));
            }
            if c.reason.len() > 1024 {
                out.push(Cause::too_long(at("reason"), 1024));
            }
        }
        if c.message.len() > 32768 {
            out.push(Cause::too_long(at("message"), 32768));
        }
    }
}

/// `validateValidatingAdmissionPolicyStatus`.
fn policy_status(status: &ValidatingAdmissionPolicyStatus, out: &mut Vec<Cause>) {
    let warnings = status
        .type_checking
        .as_ref()
        .and_then(|t| t.expression_warnings.as_deref())
        .unwrap_or_default();
    for (i, w) in warnings.iter().enumerate() {
        let f = format!("status.typeChecking.expressionWarnings[{i}]");
        if w.warning.is_empty() {
            out.push(Cause::required(format!("{f}.warning")));
        }
        if w.field_ref.trim().is_empty() {
            out.push(Cause::required(format!("{f}.fieldRef")));
        }
    }
    conditions(
        "status.conditions",
        status.conditions.as_deref().unwrap_or_default(),
        out,
    );
}

fn validate_policy(p: &ValidatingAdmissionPolicy) -> Vec<Cause> {
    let mut out = Vec::new();
    let name = p.metadata.name.as_deref().unwrap_or("");
    let spec = p.spec.clone().unwrap_or_default();
    policy_spec(name, &spec, &mut out);
    if let Some(status) = &p.status {
        policy_status(status, &mut out);
    }
    out
}

// ---- bindings ----------------------------------------------------------------------------

fn param_ref(f: &str, pr: &ParamRef, out: &mut Vec<Cause>) {
    let name = pr.name.as_deref().unwrap_or("");
    const EXCLUSIVE: &str = "name and selector are mutually exclusive";
    if !name.is_empty() {
        for e in path_segment_errors(name) {
            out.push(Cause::invalid(format!("{f}.name"), &json!(name), e));
        }
        if pr.selector.is_some() {
            out.push(Cause::forbidden(format!("{f}.name"), EXCLUSIVE));
        }
    }
    if let Some(sel) = &pr.selector {
        v::label_selector(&format!("{f}.selector"), sel, out);
        if !name.is_empty() {
            out.push(Cause::forbidden(format!("{f}.selector"), EXCLUSIVE));
        }
    }
    if name.is_empty() && pr.selector.is_none() {
        out.push(required(f, "one of name or selector must be specified"));
    }
    let at = format!("{f}.parameterNotFoundAction");
    match pr.parameter_not_found_action.as_deref() {
        None | Some("") => out.push(Cause::required(at)),
        Some(a) => v::one_of(&at, Some(a), &["Deny", "Allow"], out),
    }
}

fn validation_actions(f: &str, actions: &[String], out: &mut Vec<Cause>) {
    let mut seen = BTreeSet::new();
    for (i, a) in actions.iter().enumerate() {
        let at = format!("{f}[{i}]");
        v::one_of(&at, Some(a), &["Audit", "Deny", "Warn"], out);
        if !seen.insert(a.as_str()) {
            out.push(Cause::duplicate(at, &json!(a)));
        }
    }
    if seen.contains("Deny") && seen.contains("Warn") {
        out.push(invalid_go(
            f,
            go_slice("admissionregistration.ValidationAction", actions),
            "must not contain both Deny and Warn (repeating the same validation failure information in the API response and headers serves no purpose)",
        ));
    }
    if seen.is_empty() {
        out.push(required(f, "at least one validation action is required"));
    }
}

fn binding_spec(spec: &ValidatingAdmissionPolicyBindingSpec, out: &mut Vec<Cause>) {
    let policy = spec.policy_name.as_deref().unwrap_or("");
    if policy.is_empty() {
        out.push(Cause::required("spec.policyName"));
    } else {
        for e in dns1123_subdomain_errors(policy) {
            out.push(Cause::invalid("spec.policyName", &json!(policy), e));
        }
    }
    if let Some(pr) = &spec.param_ref {
        param_ref("spec.paramRef", pr, out);
    }
    if let Some(m) = &spec.match_resources {
        // Kubernetes' own spelling of this path.
        match_resources("spec.matchResouces", m, out);
    }
    validation_actions(
        "spec.validationActions",
        spec.validation_actions.as_deref().unwrap_or_default(),
        out,
    );
}

fn validate_binding(b: &ValidatingAdmissionPolicyBinding) -> Vec<Cause> {
    let mut out = Vec::new();
    binding_spec(&b.spec.clone().unwrap_or_default(), &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(spec: Value) -> ValidatingAdmissionPolicy {
        let mut p: ValidatingAdmissionPolicy = serde_json::from_value(
            json!({"metadata": {"name": "replicas.example.com"}, "spec": spec}),
        )
        .unwrap();
        default_policy(&mut p);
        p
    }

    fn errors(spec: Value) -> Vec<String> {
        validate_policy(&policy(spec))
            .iter()
            .map(Cause::text)
            .collect()
    }

    fn good_spec() -> Value {
        json!({
            "paramKind": {"apiVersion": "v1", "kind": "ConfigMap"},
            "matchConstraints": {"resourceRules": [{"apiGroups": ["apps"], "apiVersions": ["v1"],
                "operations": ["CREATE", "UPDATE"], "resources": ["deployments"]}]},
            "variables": [{"name": "limit", "expression": "int(params.data.maxReplicas)"}],
            "validations": [{
                "expression": "object.spec.replicas <= variables.limit",
                "messageExpression": "'replicas must be at most ' + string(variables.limit)",
                "reason": "Invalid",
            }],
            "auditAnnotations": [{"key": "high-replicas", "valueExpression": "'replicas: ' + string(object.spec.replicas)"}],
        })
    }

    fn with(mut spec: Value, key: &str, value: Value) -> Value {
        spec[key] = value;
        spec
    }

    #[test]
    fn policies_get_kubernetes_defaults() {
        let p = serde_json::to_value(policy(good_spec())).unwrap();
        assert_eq!(p["spec"]["failurePolicy"], "Fail");
        let m = &p["spec"]["matchConstraints"];
        assert_eq!(m["matchPolicy"], "Equivalent");
        assert_eq!(m["namespaceSelector"], json!({}));
        assert_eq!(m["objectSelector"], json!({}));
        assert_eq!(m["resourceRules"][0]["scope"], "*");
        assert!(errors(good_spec()).is_empty(), "{:?}", errors(good_spec()));
    }

    #[test]
    fn a_policy_needs_constraints_and_something_to_check() {
        let e = errors(json!({}));
        assert_eq!(
            e,
            vec![
                "spec.matchConstraints: Required value",
                "spec.validations: Required value: validations or auditAnnotations must contain at least one item",
                "spec.auditAnnotations: Required value: validations or auditAnnotations must contain at least one item",
            ]
        );
        let e = errors(with(
            good_spec(),
            "matchConstraints",
            json!({"matchPolicy": "Loose"}),
        ));
        assert_eq!(
            e,
            vec![
                "spec.matchConstraints.matchPolicy: Unsupported value: \"Loose\": supported values: \"Equivalent\", \"Exact\"",
                "spec.matchConstraints.resourceRules: Required value",
            ]
        );
        let e = errors(with(
            good_spec(),
            "matchConstraints",
            json!({"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                "resources": ["pods"], "resourceNames": ["a", "a", "b/c"]}]}),
        ));
        assert_eq!(
            e,
            vec![
                "spec.matchConstraints.resourceRules[0].resourceNames[1]: Duplicate value: \"a\"",
                "spec.matchConstraints.resourceRules[0].resourceNames[2]: Invalid value: \"b/c\": may not contain '/'",
            ]
        );
    }

    #[test]
    fn param_kinds_are_group_versions_and_kinds() {
        let e = errors(with(
            good_spec(),
            "paramKind",
            json!({"apiVersion": "a/b/c", "kind": "Config Map"}),
        ));
        assert_eq!(e[0], "spec.paramKind.apiVersion: Invalid value: \"a/b/c\": unexpected GroupVersion string: a/b/c");
        assert_eq!(
            e[1],
            format!(
                "spec.paramKind.kind: Invalid value: \"Config Map\": may have mixed case, but should otherwise match: {}",
                v::DNS1035_LABEL_MSG
            )
        );
        let e = errors(with(
            good_spec(),
            "paramKind",
            json!({"apiVersion": "example.com/", "kind": ""}),
        ));
        assert_eq!(
            e[..2],
            [
                "spec.paramKind.apiVersion: Invalid value: \"example.com/\": version must be specified",
                "spec.paramKind.kind: Required value",
            ]
        );
    }

    #[test]
    fn expressions_compile_with_the_variables_in_scope() {
        // Without a paramKind there are no params; without variables no `variables`.
        let mut spec = good_spec();
        spec.as_object_mut().unwrap().remove("paramKind");
        spec.as_object_mut().unwrap().remove("variables");
        let e = errors(spec);
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].starts_with("spec.validations[0].expression: Invalid value: \"object.spec.replicas <= variables.limit\": compilation failed: ERROR: <input>:1:25: undeclared reference to 'variables'"), "{e:?}");
        assert!(
            e[1].starts_with("spec.validations[0].messageExpression: Invalid value: "),
            "{e:?}"
        );

        let e = errors(with(
            good_spec(),
            "validations",
            json!([
                {"expression": "object.spec.replicas"},
                {"expression": "true", "messageExpression": "1"},
                {"expression": " ", "message": "two\nlines", "reason": "Unauthorized"},
                {"expression": "true", "messageExpression": "  ", "message": "  "},
            ]),
        ));
        assert_eq!(
            e,
            vec![
                "spec.validations[0].expression: Invalid value: \"object.spec.replicas\": must evaluate to bool",
                "spec.validations[1].messageExpression: Invalid value: \"1\": must evaluate to string",
                "spec.validations[2].expression: Required value: expression is not specified",
                "spec.validations[2].message: Invalid value: \"two\\nlines\": message must not contain line breaks",
                "spec.validations[2].reason: Unsupported value: \"Unauthorized\": supported values: \"Forbidden\", \"Invalid\", \"RequestEntityTooLarge\"",
                "spec.validations[3].messageExpression: Invalid value: \"  \": must be non-empty if specified",
                "spec.validations[3].message: Invalid value: \"  \": message must be non-empty if specified",
            ]
        );
        let e = errors(with(
            good_spec(),
            "variables",
            json!([{"name": "if", "expression": "1"}, {"name": "", "expression": ""}, {"name": "ok", "expression": "1 +"}]),
        ));
        assert_eq!(
            e[0],
            "spec.variables[0].name: Invalid value: \"if\": name is not a valid CEL identifier"
        );
        assert_eq!(
            e[1],
            "spec.variables[1].name: Required value: name is not specified"
        );
        assert_eq!(
            e[2],
            "spec.variables[1].expression: Required value: expression is not specified"
        );
        assert!(
            e[3].starts_with(
                "spec.variables[2].expression: Invalid value: \"1 +\": compilation failed: "
            ),
            "{e:?}"
        );
    }

    #[test]
    fn audit_annotations_need_qualified_unique_keys_and_string_values() {
        let e = errors(with(
            good_spec(),
            "auditAnnotations",
            json!([{"key": "bad key", "valueExpression": "1"}, {"key": "k", "valueExpression": "null"},
                   {"key": "k", "valueExpression": ""}]),
        ));
        assert_eq!(e.len(), 4, "{e:?}");
        assert!(e[0].starts_with("spec.auditAnnotations[0].key: Invalid value: \"replicas.example.com/bad key\": name part must consist of"), "{e:?}");
        assert_eq!(e[1], "spec.auditAnnotations[0].valueExpression: Invalid value: \"1\": must evaluate to one of [string null_type]");
        assert_eq!(e[2], "spec.auditAnnotations[2].valueExpression: Required value: valueExpression is not specified");
        assert_eq!(e[3], "spec.auditAnnotations[2].key: Duplicate value: \"k\"");
    }

    #[test]
    fn status_is_checked_when_written() {
        let mut p = policy(good_spec());
        p.status = serde_json::from_value(json!({
            "typeChecking": {"expressionWarnings": [{"fieldRef": " ", "warning": ""}]},
            "conditions": [{"type": "Ready", "status": "Maybe", "reason": "1bad", "message": "",
                            "lastTransitionTime": "2024-05-01T10:00:00Z"}],
        }))
        .unwrap();
        let e: Vec<String> = validate_policy(&p).iter().map(Cause::text).collect();
        assert_eq!(
            e,
            vec![
                "status.typeChecking.expressionWarnings[0].warning: Required value".to_string(),
                "status.typeChecking.expressionWarnings[0].fieldRef: Required value".to_string(),
                "status.conditions[0].status: Unsupported value: \"Maybe\": supported values: \"False\", \"True\", \"Unknown\"".to_string(),
                format!("status.conditions[0].reason: Invalid value: \"1bad\": {REASON_MSG}"),
            ]
        );
    }

    fn binding(spec: Value) -> Vec<String> {
        let mut b: ValidatingAdmissionPolicyBinding =
            serde_json::from_value(json!({"metadata": {"name": "b"}, "spec": spec})).unwrap();
        default_binding(&mut b);
        validate_binding(&b).iter().map(Cause::text).collect()
    }

    #[test]
    fn bindings_name_a_policy_params_and_actions() {
        let good = json!({"policyName": "replicas.example.com", "validationActions": ["Deny"],
            "paramRef": {"name": "limits", "namespace": "default", "parameterNotFoundAction": "Deny"},
            "matchResources": {"namespaceSelector": {"matchLabels": {"env": "test"}}}});
        assert!(binding(good.clone()).is_empty(), "{:?}", binding(good));
        assert_eq!(
            binding(json!({})),
            vec![
                "spec.policyName: Required value",
                "spec.validationActions: Required value: at least one validation action is required",
            ]
        );
        let e = binding(
            json!({"policyName": "Bad", "validationActions": ["Deny", "Warn", "Deny", "Block"],
            "paramRef": {"name": "a", "selector": {}},
            "matchResources": {"matchPolicy": "Loose"}}),
        );
        assert_eq!(
            e,
            vec![
                format!("spec.policyName: Invalid value: \"Bad\": {}", v::DNS1123_SUBDOMAIN_MSG),
                "spec.paramRef.name: Forbidden: name and selector are mutually exclusive".into(),
                "spec.paramRef.selector: Forbidden: name and selector are mutually exclusive".into(),
                "spec.paramRef.parameterNotFoundAction: Required value".into(),
                "spec.matchResouces.matchPolicy: Unsupported value: \"Loose\": supported values: \"Equivalent\", \"Exact\"".into(),
                "spec.validationActions[2]: Duplicate value: \"Deny\"".into(),
                "spec.validationActions[3]: Unsupported value: \"Block\": supported values: \"Audit\", \"Deny\", \"Warn\"".into(),
                "spec.validationActions: Invalid value: []admissionregistration.ValidationAction{\"Deny\", \"Warn\", \"Deny\", \"Block\"}: must not contain both Deny and Warn (repeating the same validation failure information in the API response and headers serves no purpose)".to_string(),
            ]
        );
        let e = binding(
            json!({"policyName": "p", "validationActions": ["Warn", "Audit"],
            "paramRef": {"parameterNotFoundAction": "Ignore"}}),
        );
        assert_eq!(
            e,
            vec![
                "spec.paramRef: Required value: one of name or selector must be specified",
                "spec.paramRef.parameterNotFoundAction: Unsupported value: \"Ignore\": supported values: \"Deny\", \"Allow\"",
            ]
        );
    }

    #[test]
    fn cells_show_validations_param_kind_and_param_ref() {
        let p = json!({"metadata": {"name": "p"}, "spec": {"validations": [{}, {}], "paramKind": {"apiVersion": "v1", "kind": "ConfigMap"}}});
        assert_eq!(
            policy_cells(&p)[..3],
            [json!("p"), json!(2), json!("v1/ConfigMap")]
        );
        let p = json!({"metadata": {"name": "p"}, "spec": {}});
        assert_eq!(
            policy_cells(&p)[..3],
            [json!("p"), json!(0), json!("<unset>")]
        );
        let cell = |pr: Value| {
            binding_cells(
                &json!({"metadata": {"name": "b"}, "spec": {"policyName": "p", "paramRef": pr}}),
            )[2]
            .clone()
        };
        assert_eq!(
            cell(json!({"name": "limits", "namespace": "default"})),
            json!("default/limits")
        );
        assert_eq!(cell(json!({"name": "limits"})), json!("*/limits"));
        assert_eq!(cell(Value::Null), json!("<unset>"));
        assert_eq!(
            cell(json!({"selector": {"matchLabels": {"b": "2", "a": "1"},
                "matchExpressions": [{"key": "env", "operator": "In", "values": ["x", "y"]}]}})),
            json!("&LabelSelector{MatchLabels:map[string]string{a: 1,b: 2,},MatchExpressions:[]LabelSelectorRequirement{LabelSelectorRequirement{Key:env,Operator:In,Values:[x y],},},}")
        );
    }
}
