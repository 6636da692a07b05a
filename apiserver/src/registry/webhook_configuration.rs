//! MutatingWebhookConfigurations and ValidatingWebhookConfigurations
//! (admissionregistration.k8s.io/v1): which requests are sent to which admission webhooks.
//! Defaults and validation follow Kubernetes' `pkg/apis/admissionregistration` (v1 defaults,
//! `validation.go`), with its messages and field paths; the pieces policies share (rules,
//! match conditions, CEL expressions) live here too and [`super::admission_policy`] uses them.
//!
//! What calls the webhooks is the admission chain's business, not this file's.

use std::collections::BTreeSet;

use k8s_openapi::api::admissionregistration::v1::{
    MatchCondition, MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations,
    ServiceReference, ValidatingWebhook, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde_json::{json, Value};
use skiff_schema::cel::Expression;

use super::{col, Builtin, Column, Typed};
use crate::error::{Cause, CauseKind};
use crate::validation as v;

/// The API group of the four admission registration types.
pub const GROUP: &str = "admissionregistration.k8s.io";
const NAME: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";
/// The description of the `Age` column.
pub const AGE: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";

/// The mutatingwebhookconfigurations resource.
pub static MUTATING: Builtin = Builtin {
    group: GROUP,
    version: "v1",
    kind: "MutatingWebhookConfiguration",
    plural: "mutatingwebhookconfigurations",
    singular: "mutatingwebhookconfiguration",
    short_names: &[],
    categories: &["api-extensions"],
    namespaced: false,
    subresources: &[],
    selectable: &[],
    has_generation: false,
    strategy: &MUTATING_STRATEGY,
    schema: super::schema_of::<MutatingWebhookConfiguration>,
};

/// The validatingwebhookconfigurations resource.
pub static VALIDATING: Builtin = Builtin {
    group: GROUP,
    version: "v1",
    kind: "ValidatingWebhookConfiguration",
    plural: "validatingwebhookconfigurations",
    singular: "validatingwebhookconfiguration",
    short_names: &[],
    categories: &["api-extensions"],
    namespaced: false,
    subresources: &[],
    selectable: &[],
    has_generation: false,
    strategy: &VALIDATING_STRATEGY,
    schema: super::schema_of::<ValidatingWebhookConfiguration>,
};

// Kubernetes relaxes some checks on update when the stored object already broke them (objects
// written through v1beta1, which this server never served): every stored object here passed
// the same checks, so updates are held to them as creates are.
static MUTATING_STRATEGY: Typed<MutatingWebhookConfiguration> = Typed {
    defaults: default_mutating,
    validate: validate_mutating,
    ..Typed::new(columns, cells)
};

static VALIDATING_STRATEGY: Typed<ValidatingWebhookConfiguration> = Typed {
    defaults: default_validating,
    validate: validate_validating,
    ..Typed::new(columns, cells)
};

fn columns() -> Vec<Column> {
    vec![
        col("Name", "string", 0, NAME),
        col(
            "Webhooks",
            "integer",
            0,
            "Webhooks indicates the number of webhooks registered in this configuration",
        ),
        col("Age", "string", 0, AGE),
    ]
}

fn cells(obj: &Value) -> Vec<Value> {
    let hooks = obj
        .get("webhooks")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    vec![super::name(obj), json!(hooks), super::age(obj)]
}

// ---- defaults ----------------------------------------------------------------------------

fn set(field: &mut Option<String>, value: &str) {
    if field.is_none() {
        *field = Some(value.into());
    }
}

/// The defaults every webhook rule and client config gets (scope `*`, service port 443).
fn default_common(rules: Option<&mut Vec<RuleWithOperations>>, cc: &mut WebhookClientConfig) {
    for r in rules.into_iter().flatten() {
        set(&mut r.scope, "*");
    }
    if let Some(svc) = cc.service.as_mut() {
        svc.port.get_or_insert(443);
    }
}

fn default_selector(sel: &mut Option<LabelSelector>) {
    sel.get_or_insert_with(LabelSelector::default);
}

fn default_mutating(c: &mut MutatingWebhookConfiguration) {
    for h in c.webhooks.iter_mut().flatten() {
        set(&mut h.failure_policy, "Fail");
        set(&mut h.match_policy, "Equivalent");
        default_selector(&mut h.namespace_selector);
        default_selector(&mut h.object_selector);
        h.timeout_seconds.get_or_insert(10);
        set(&mut h.reinvocation_policy, "Never");
        default_common(h.rules.as_mut(), &mut h.client_config);
    }
}

fn default_validating(c: &mut ValidatingWebhookConfiguration) {
    for h in c.webhooks.iter_mut().flatten() {
        set(&mut h.failure_policy, "Fail");
        set(&mut h.match_policy, "Equivalent");
        default_selector(&mut h.namespace_selector);
        default_selector(&mut h.object_selector);
        h.timeout_seconds.get_or_insert(10);
        default_common(h.rules.as_mut(), &mut h.client_config);
    }
}

// ---- shared checks -------------------------------------------------------------------------

/// A cause with a value printed as Go prints it (`[]string{"a", "b"}`).
pub(super) fn invalid_go(field: impl Into<String>, go_value: String, detail: &str) -> Cause {
    Cause {
        kind: CauseKind::Invalid,
        field: field.into(),
        message: format!("{go_value}: {detail}"),
    }
}

/// A string slice as Go's `%#v` prints it, for a slice of `ty`.
pub(super) fn go_slice(ty: &str, items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("{s:?}")).collect();
    format!("[]{ty}{{{}}}", quoted.join(", "))
}

/// A required field with a detail.
pub(super) fn required(field: impl Into<String>, detail: &str) -> Cause {
    Cause {
        kind: CauseKind::Required,
        field: field.into(),
        message: detail.into(),
    }
}

/// Kubernetes' `IsDNS1123Subdomain` messages.
pub(super) fn dns1123_subdomain_errors(s: &str) -> Vec<&'static str> {
    let mut out = Vec::new();
    if s.len() > 253 {
        out.push("must be no more than 253 characters");
    }
    // The pattern alone: Kubernetes reports the length apart.
    let label = |l: &str| {
        let b = l.as_bytes();
        let edge = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
        !b.is_empty()
            && edge(b[0])
            && edge(b[b.len() - 1])
            && b.iter().all(|&c| edge(c) || c == b'-')
    };
    if !s.split('.').all(label) {
        out.push(v::DNS1123_SUBDOMAIN_MSG);
    }
    out
}

/// Kubernetes' `IsDNS1035Label` messages.
pub(super) fn dns1035_errors(s: &str) -> Vec<&'static str> {
    let mut out = Vec::new();
    if s.len() > 63 {
        out.push("must be no more than 63 characters");
    }
    let b = s.as_bytes();
    let shaped = !b.is_empty()
        && b[0].is_ascii_lowercase()
        && (b[b.len() - 1].is_ascii_lowercase() || b[b.len() - 1].is_ascii_digit())
        && b.iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-');
    if !shaped {
        out.push(v::DNS1035_LABEL_MSG);
    }
    out
}

fn has_wildcard(items: &[String]) -> bool {
    items.iter().any(|s| s == "*")
}

/// A rule's resources (`validateResources`): `*`, `*/*`, `pods/*`, `*/status`, and what may
/// not stand beside them.
fn resources(field: &str, resources: &[String], out: &mut Vec<Cause>) {
    if resources.is_empty() {
        out.push(Cause::required(field));
    }
    let mut wildcard_sub = BTreeSet::new(); // x/*
    let mut wildcard_res = BTreeSet::new(); // */x
    let (mut double, mut single, mut plain) = (false, false, false);
    for (i, rs) in resources.iter().enumerate() {
        let f = format!("{field}[{i}]");
        if rs.is_empty() {
            out.push(Cause::required(f));
            continue;
        }
        double |= rs == "*/*";
        single |= rs == "*";
        let Some((res, sub)) = rs.split_once('/') else {
            // Kubernetes keeps the last plain entry's verdict only.
            plain = rs != "*";
            continue;
        };
        if wildcard_sub.contains(res) {
            out.push(Cause::invalid(
                &f,
                &json!(rs),
                format!("if '{res}/*' is present, must not specify {rs}"),
            ));
        }
        if wildcard_res.contains(sub) {
            out.push(Cause::invalid(
                &f,
                &json!(rs),
                format!("if '*/{sub}' is present, must not specify {rs}"),
            ));
        }
        if sub == "*" {
            wildcard_sub.insert(res.to_string());
        }
        if res == "*" {
            wildcard_res.insert(sub.to_string());
        }
    }
    if resources.len() > 1 && double {
        out.push(invalid_go(
            field,
            go_slice("string", resources),
            "if '*/*' is present, must not specify other resources",
        ));
    }
    if single && plain {
        out.push(invalid_go(
            field,
            go_slice("string", resources),
            "if '*' is present, must not specify other resources without subresources",
        ));
    }
}

/// The parts of a rule every rule has, wherever it sits (`validateRuleWithOperations`).
pub(super) struct RuleParts<'a> {
    /// `operations`.
    pub operations: Option<&'a Vec<String>>,
    /// `apiGroups`.
    pub api_groups: Option<&'a Vec<String>>,
    /// `apiVersions`.
    pub api_versions: Option<&'a Vec<String>>,
    /// `resources`.
    pub resources: Option<&'a Vec<String>>,
    /// `scope`.
    pub scope: Option<&'a String>,
}

impl<'a> From<&'a RuleWithOperations> for RuleParts<'a> {
    fn from(r: &'a RuleWithOperations) -> Self {
        RuleParts {
            operations: r.operations.as_ref(),
            api_groups: r.api_groups.as_ref(),
            api_versions: r.api_versions.as_ref(),
            resources: r.resources.as_ref(),
            scope: r.scope.as_ref(),
        }
    }
}

/// A list of a rule that must not be empty, and in which `*` stands alone (`what` names its
/// items in the message, `go_type` their Go type in the value shown).
fn required_alone(f: &str, go_type: &str, items: &[String], what: &str, out: &mut Vec<Cause>) {
    if items.is_empty() {
        out.push(Cause::required(f));
    }
    if items.len() > 1 && has_wildcard(items) {
        out.push(invalid_go(
            f,
            go_slice(go_type, items),
            &format!("if '*' is present, must not specify other {what}"),
        ));
    }
}

/// Checks a rule with operations at `field` (`webhooks[0].rules[0]`).
pub(super) fn rule(field: &str, r: RuleParts<'_>, out: &mut Vec<Cause>) {
    let empty = Vec::new();
    let ops = r.operations.unwrap_or(&empty);
    let f = format!("{field}.operations");
    required_alone(
        &f,
        "admissionregistration.OperationType",
        ops,
        "operations",
        out,
    );
    for (i, op) in ops.iter().enumerate() {
        if !matches!(
            op.as_str(),
            "*" | "CREATE" | "UPDATE" | "DELETE" | "CONNECT"
        ) {
            out.push(Cause::not_supported(
                format!("{f}[{i}]"),
                op,
                &["*", "CONNECT", "CREATE", "DELETE", "UPDATE"],
            ));
        }
    }
    let groups = r.api_groups.unwrap_or(&empty);
    let f = format!("{field}.apiGroups");
    required_alone(&f, "string", groups, "API groups", out);
    let versions = r.api_versions.unwrap_or(&empty);
    let f = format!("{field}.apiVersions");
    required_alone(&f, "string", versions, "API versions", out);
    for (i, ver) in versions.iter().enumerate() {
        if ver.is_empty() {
            out.push(Cause::required(format!("{f}[{i}]")));
        }
    }
    resources(
        &format!("{field}.resources"),
        r.resources.unwrap_or(&empty),
        out,
    );
    if let Some(scope) = r.scope {
        if !matches!(scope.as_str(), "*" | "Cluster" | "Namespaced") {
            out.push(Cause::not_supported(
                format!("{field}.scope"),
                scope,
                &["*", "Cluster", "Namespaced"],
            ));
        }
    }
}

/// The variables a webhook's match conditions may name.
const WEBHOOK_CONDITION_VARS: &[&str] = &[
    "object",
    "oldObject",
    "namespaceObject",
    "request",
    "authorizer",
];

/// What a CEL expression must evaluate to.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Returns {
    /// A bool (conditions, validations).
    Bool,
    /// A string (message expressions).
    String,
    /// A string or null (audit annotation values).
    StringOrNull,
    /// Anything (variables).
    Any,
}

/// Compiles `expr` with `vars`, reporting a failure at `field` as Kubernetes does:
/// `FIELD: Invalid value: "EXPR": compilation failed: ERROR: ...`, or `must evaluate to bool`.
pub(super) fn compile(
    field: &str,
    expr: &str,
    vars: &[&str],
    returns: Returns,
    out: &mut Vec<Cause>,
) {
    match Expression::compile(expr, vars) {
        Err(e) => out.push(Cause::invalid(
            field,
            &json!(expr),
            format!("compilation failed: {e}"),
        )),
        Ok(compiled) => {
            let ty = compiled.return_type();
            let why = match returns {
                Returns::Bool if ty != "bool" => Some("must evaluate to bool"),
                Returns::String if ty != "string" => Some("must evaluate to string"),
                Returns::StringOrNull if ty != "string" && ty != "null_type" => {
                    Some("must evaluate to one of [string null_type]")
                }
                _ => None,
            };
            if let Some(why) = why {
                out.push(Cause::invalid(field, &json!(expr), why));
            }
        }
    }
}

/// `matchConditions` (`validateMatchConditions`): at most 64, names unique qualified names,
/// expressions that compile to a bool over `vars`.
pub(super) fn match_conditions(
    field: &str,
    conditions: &[MatchCondition],
    vars: &[&str],
    out: &mut Vec<Cause>,
) {
    if conditions.len() > 64 {
        out.push(Cause {
            kind: CauseKind::TooMany,
            field: field.into(),
            message: format!("{}: must have at most 64 items", conditions.len()),
        });
    }
    let mut names = BTreeSet::new();
    for (i, c) in conditions.iter().enumerate() {
        let f = format!("{field}[{i}]");
        let expr = c.expression.trim();
        if expr.is_empty() {
            out.push(Cause::required(format!("{f}.expression")));
        } else {
            compile(&format!("{f}.expression"), expr, vars, Returns::Bool, out);
        }
        if c.name.is_empty() {
            out.push(Cause::required(format!("{f}.name")));
        } else {
            v::qualified_name(&format!("{f}.name"), &c.name, out);
        }
        if !c.name.is_empty() && !names.insert(c.name.as_str()) {
            out.push(Cause::duplicate(format!("{f}.name"), &json!(c.name)));
        }
    }
}

/// A label selector, if set.
pub(super) fn selector(field: &str, sel: Option<&LabelSelector>, out: &mut Vec<Cause>) {
    if let Some(sel) = sel {
        v::label_selector(field, sel, out);
    }
}

/// `IsFullyQualifiedName`: a subdomain of at least three segments.
fn fully_qualified(field: &str, name: &str, out: &mut Vec<Cause>) {
    if name.is_empty() {
        out.push(Cause::required(field));
        return;
    }
    let errs = dns1123_subdomain_errors(name);
    if !errs.is_empty() {
        out.push(Cause::invalid(field, &json!(name), errs.join(",")));
    } else if name.split('.').count() < 3 {
        out.push(Cause::invalid(
            field,
            &json!(name),
            "should be a domain with at least three segments separated by dots",
        ));
    }
}

/// The parts of a URL Kubernetes looks at, split as Go's `url.Parse` splits them.
struct UrlParts<'a> {
    scheme: &'a str,
    user: Option<&'a str>,
    host: &'a str,
    query: &'a str,
    fragment: &'a str,
}

fn split_url(s: &str) -> Result<UrlParts<'_>, String> {
    if s.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return Err(format!(
            "parse {s:?}: net/url: invalid control character in URL"
        ));
    }
    let (rest, fragment) = s.split_once('#').unwrap_or((s, ""));
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    let mut scheme = "";
    let mut rest = rest;
    if let Some(i) = rest.find(':') {
        let candidate = &rest[..i];
        if i == 0 {
            return Err(format!("parse {s:?}: missing protocol scheme"));
        }
        let valid = candidate.as_bytes()[0].is_ascii_alphabetic()
            && candidate
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
        if valid {
            scheme = candidate;
            rest = &rest[i + 1..];
        }
    }
    let (mut user, mut host) = (None, "");
    if let Some(authority) = rest.strip_prefix("//") {
        let authority = authority.split('/').next().unwrap_or("");
        match authority.rsplit_once('@') {
            Some((u, h)) => {
                user = Some(u);
                host = h;
            }
            None => host = authority,
        }
    }
    Ok(UrlParts {
        scheme,
        user,
        host,
        query,
        fragment,
    })
}

/// `ValidateWebhookURL` with https required.
fn webhook_url(field: &str, url: &str, out: &mut Vec<Cause>) {
    const FORM: &str = "; desired format: https://host[/path]";
    let u = match split_url(url) {
        Ok(u) => u,
        Err(e) => {
            out.push(required(
                field,
                &format!("url must be a valid URL: {e}{FORM}"),
            ));
            return;
        }
    };
    // Go's parser lowercases the scheme.
    if !u.scheme.eq_ignore_ascii_case("https") {
        out.push(Cause::invalid(
            field,
            &json!(u.scheme.to_ascii_lowercase()),
            format!("'https' is the only allowed URL scheme{FORM}"),
        ));
    }
    if u.host.is_empty() {
        out.push(Cause::invalid(
            field,
            &json!(u.host),
            format!("host must be provided{FORM}"),
        ));
    }
    if let Some(user) = u.user {
        out.push(Cause::invalid(
            field,
            &json!(user),
            "user information is not permitted in the URL",
        ));
    }
    if !u.fragment.is_empty() {
        out.push(Cause::invalid(
            field,
            &json!(u.fragment),
            "fragments are not permitted in the URL",
        ));
    }
    if !u.query.is_empty() {
        out.push(Cause::invalid(
            field,
            &json!(u.query),
            "query parameters are not permitted in the URL",
        ));
    }
}

/// `ValidateWebhookService`.
pub(super) fn webhook_service(field: &str, svc: &ServiceReference, out: &mut Vec<Cause>) {
    if svc.name.is_empty() {
        out.push(required(
            format!("{field}.name"),
            "service name is required",
        ));
    }
    if svc.namespace.is_empty() {
        out.push(required(
            format!("{field}.namespace"),
            "service namespace is required",
        ));
    }
    let port = svc.port.unwrap_or(443);
    if !(1..=65535).contains(&port) {
        out.push(Cause::invalid(
            format!("{field}.port"),
            &json!(port),
            "port is not valid: must be between 1 and 65535, inclusive",
        ));
    }
    let Some(path) = svc.path.as_deref() else {
        return;
    };
    let f = format!("{field}.path");
    if path == "/" || path.is_empty() {
        return;
    }
    if path == "//" {
        out.push(Cause::invalid(
            f,
            &json!(path),
            "segment[0] may not be empty",
        ));
        return;
    }
    if !path.starts_with('/') {
        out.push(Cause::invalid(&f, &json!(path), "must start with a '/'"));
    }
    let check = &path[path.chars().next().map_or(0, char::len_utf8)..];
    let check = check.strip_suffix('/').unwrap_or(check);
    for (i, step) in check.split('/').enumerate() {
        if step.is_empty() {
            out.push(Cause::invalid(
                &f,
                &json!(path),
                format!("segment[{i}] may not be empty"),
            ));
            continue;
        }
        for e in dns1123_subdomain_errors(step) {
            out.push(Cause::invalid(
                &f,
                &json!(path),
                format!("segment[{i}]: {e}"),
            ));
        }
    }
}

fn client_config(field: &str, cc: &WebhookClientConfig, out: &mut Vec<Cause>) {
    match (&cc.url, &cc.service) {
        (Some(url), None) => webhook_url(&format!("{field}.url"), url, out),
        (None, Some(svc)) => webhook_service(&format!("{field}.service"), svc, out),
        _ => out.push(required(field, "exactly one of url or service is required")),
    }
}

/// `validateAdmissionReviewVersions`, requiring one this server speaks.
fn review_versions(field: &str, versions: &[String], out: &mut Vec<Cause>) {
    if versions.is_empty() {
        out.push(required(field, "must specify one of v1, v1beta1"));
        return;
    }
    let mut seen = BTreeSet::new();
    for (i, ver) in versions.iter().enumerate() {
        let f = format!("{field}[{i}]");
        if !seen.insert(ver.as_str()) {
            out.push(Cause::invalid(f, &json!(ver), "duplicate version"));
            continue;
        }
        for e in dns1035_errors(ver) {
            out.push(Cause::invalid(&f, &json!(ver), e));
        }
    }
    if !versions.iter().any(|v| v == "v1" || v == "v1beta1") {
        out.push(invalid_go(
            field,
            go_slice("string", versions),
            "must include at least one of v1, v1beta1",
        ));
    }
}

/// What mutating and validating webhooks have in common, borrowed from either.
struct Hook<'a> {
    name: &'a str,
    rules: &'a [RuleWithOperations],
    failure_policy: Option<&'a String>,
    match_policy: Option<&'a String>,
    side_effects: &'a str,
    timeout_seconds: Option<i32>,
    namespace_selector: Option<&'a LabelSelector>,
    object_selector: Option<&'a LabelSelector>,
    reinvocation_policy: Option<&'a String>,
    client_config: &'a WebhookClientConfig,
    match_conditions: &'a [MatchCondition],
    admission_review_versions: &'a [String],
}

impl<'a> From<&'a MutatingWebhook> for Hook<'a> {
    fn from(h: &'a MutatingWebhook) -> Self {
        Hook {
            name: &h.name,
            rules: h.rules.as_deref().unwrap_or_default(),
            failure_policy: h.failure_policy.as_ref(),
            match_policy: h.match_policy.as_ref(),
            side_effects: &h.side_effects,
            timeout_seconds: h.timeout_seconds,
            namespace_selector: h.namespace_selector.as_ref(),
            object_selector: h.object_selector.as_ref(),
            reinvocation_policy: h.reinvocation_policy.as_ref(),
            client_config: &h.client_config,
            match_conditions: h.match_conditions.as_deref().unwrap_or_default(),
            admission_review_versions: &h.admission_review_versions,
        }
    }
}

impl<'a> From<&'a ValidatingWebhook> for Hook<'a> {
    fn from(h: &'a ValidatingWebhook) -> Self {
        Hook {
            name: &h.name,
            rules: h.rules.as_deref().unwrap_or_default(),
            failure_policy: h.failure_policy.as_ref(),
            match_policy: h.match_policy.as_ref(),
            side_effects: &h.side_effects,
            timeout_seconds: h.timeout_seconds,
            namespace_selector: h.namespace_selector.as_ref(),
            object_selector: h.object_selector.as_ref(),
            reinvocation_policy: None,
            client_config: &h.client_config,
            match_conditions: h.match_conditions.as_deref().unwrap_or_default(),
            admission_review_versions: &h.admission_review_versions,
        }
    }
}

/// One webhook (`validateMutatingWebhook` / `validateValidatingWebhook`), then its review
/// versions, in Kubernetes' order.
fn hook(f: &str, h: &Hook<'_>, out: &mut Vec<Cause>) {
    fully_qualified(&format!("{f}.name"), h.name, out);
    for (i, r) in h.rules.iter().enumerate() {
        rule(&format!("{f}.rules[{i}]"), r.into(), out);
    }
    v::one_of(
        &format!("{f}.failurePolicy"),
        h.failure_policy.map(String::as_str),
        &["Fail", "Ignore"],
        out,
    );
    v::one_of(
        &format!("{f}.matchPolicy"),
        h.match_policy.map(String::as_str),
        &["Equivalent", "Exact"],
        out,
    );
    // v1 allows only the classes that promise no side effects on a dry run.
    if h.side_effects.is_empty() {
        out.push(required(
            format!("{f}.sideEffects"),
            "must specify one of None, NoneOnDryRun",
        ));
    } else {
        v::one_of(
            &format!("{f}.sideEffects"),
            Some(h.side_effects),
            &["None", "NoneOnDryRun"],
            out,
        );
    }
    if let Some(t) = h.timeout_seconds.filter(|t| !(1..=30).contains(t)) {
        out.push(Cause::invalid(
            format!("{f}.timeoutSeconds"),
            &json!(t),
            "the timeout value must be between 1 and 30 seconds",
        ));
    }
    selector(&format!("{f}.namespaceSelector"), h.namespace_selector, out);
    selector(&format!("{f}.objectSelector"), h.object_selector, out);
    v::one_of(
        &format!("{f}.reinvocationPolicy"),
        h.reinvocation_policy.map(String::as_str),
        &["IfNeeded", "Never"],
        out,
    );
    client_config(&format!("{f}.clientConfig"), h.client_config, out);
    match_conditions(
        &format!("{f}.matchConditions"),
        h.match_conditions,
        WEBHOOK_CONDITION_VARS,
        out,
    );
    review_versions(
        &format!("{f}.admissionReviewVersions"),
        h.admission_review_versions,
        out,
    );
}

fn hooks<'a>(all: impl Iterator<Item = Hook<'a>>) -> Vec<Cause> {
    let mut out = Vec::new();
    let mut names = BTreeSet::new();
    for (i, h) in all.enumerate() {
        let f = format!("webhooks[{i}]");
        hook(&f, &h, &mut out);
        if !h.name.is_empty() && !names.insert(h.name) {
            out.push(Cause::duplicate(format!("{f}.name"), &json!(h.name)));
        }
    }
    out
}

fn validate_mutating(c: &MutatingWebhookConfiguration) -> Vec<Cause> {
    hooks(c.webhooks.iter().flatten().map(Hook::from))
}

fn validate_validating(c: &ValidatingWebhookConfiguration) -> Vec<Cause> {
    hooks(c.webhooks.iter().flatten().map(Hook::from))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook_json(extra: Value) -> Value {
        let mut h = json!({
            "name": "pods.policy.example.com",
            "clientConfig": {"service": {"namespace": "web", "name": "hook"}},
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}],
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
        });
        for (k, v) in extra.as_object().unwrap() {
            h[k] = v.clone();
        }
        h
    }

    fn validating(hooks: Vec<Value>) -> ValidatingWebhookConfiguration {
        let mut c: ValidatingWebhookConfiguration =
            serde_json::from_value(json!({"metadata": {"name": "c"}, "webhooks": hooks})).unwrap();
        default_validating(&mut c);
        c
    }

    fn errors(hooks: Vec<Value>) -> Vec<String> {
        validate_validating(&validating(hooks))
            .iter()
            .map(Cause::text)
            .collect()
    }

    fn mutating_errors(hooks: Vec<Value>) -> Vec<String> {
        let mut c: MutatingWebhookConfiguration =
            serde_json::from_value(json!({"metadata": {"name": "c"}, "webhooks": hooks})).unwrap();
        default_mutating(&mut c);
        validate_mutating(&c).iter().map(Cause::text).collect()
    }

    #[test]
    fn webhooks_get_kubernetes_defaults() {
        let c = validating(vec![hook_json(json!({}))]);
        let got = serde_json::to_value(&c).unwrap();
        let h = &got["webhooks"][0];
        assert_eq!(h["failurePolicy"], "Fail");
        assert_eq!(h["matchPolicy"], "Equivalent");
        assert_eq!(h["namespaceSelector"], json!({}));
        assert_eq!(h["objectSelector"], json!({}));
        assert_eq!(h["timeoutSeconds"], 10);
        assert_eq!(h["rules"][0]["scope"], "*");
        assert_eq!(h["clientConfig"]["service"]["port"], 443);
        assert!(h.get("reinvocationPolicy").is_none());
        assert!(errors(vec![hook_json(json!({}))]).is_empty());

        let mut m: MutatingWebhookConfiguration = serde_json::from_value(
            json!({"metadata": {"name": "m"}, "webhooks": [hook_json(json!({"failurePolicy": "Ignore", "timeoutSeconds": 3}))]}),
        )
        .unwrap();
        default_mutating(&mut m);
        let got = serde_json::to_value(&m).unwrap();
        assert_eq!(got["webhooks"][0]["reinvocationPolicy"], "Never");
        assert_eq!(got["webhooks"][0]["failurePolicy"], "Ignore");
        assert_eq!(got["webhooks"][0]["timeoutSeconds"], 3);
    }

    #[test]
    fn names_are_qualified_and_unique() {
        let e = errors(vec![hook_json(json!({"name": "hook"}))]);
        assert_eq!(
            e,
            vec!["webhooks[0].name: Invalid value: \"hook\": should be a domain with at least three segments separated by dots"]
        );
        let e = errors(vec![hook_json(json!({"name": "Hook.Example.com"}))]);
        assert_eq!(
            e,
            vec![format!(
                "webhooks[0].name: Invalid value: \"Hook.Example.com\": {}",
                v::DNS1123_SUBDOMAIN_MSG
            )]
        );
        let e = errors(vec![hook_json(json!({})), hook_json(json!({}))]);
        assert_eq!(
            e,
            vec!["webhooks[1].name: Duplicate value: \"pods.policy.example.com\""]
        );
        let e = errors(vec![hook_json(json!({"name": ""}))]);
        assert_eq!(e, vec!["webhooks[0].name: Required value"]);
    }

    #[test]
    fn rules_are_checked_as_kubernetes_does() {
        let rules = json!([
            {"operations": [], "apiGroups": [], "apiVersions": ["v1", "*"], "resources": []},
            {"operations": ["*", "CREATE", "PATCH"], "apiGroups": ["*", "apps"], "apiVersions": [""],
             "resources": ["pods/*", "pods/status", "*/*"], "scope": "Everywhere"},
            {"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["*", "pods", "*/scale", "deployments/scale"]},
        ]);
        let e = errors(vec![hook_json(json!({"rules": rules}))]);
        assert_eq!(
            e,
            vec![
                "webhooks[0].rules[0].operations: Required value",
                "webhooks[0].rules[0].apiGroups: Required value",
                "webhooks[0].rules[0].apiVersions: Invalid value: []string{\"v1\", \"*\"}: if '*' is present, must not specify other API versions",
                "webhooks[0].rules[0].resources: Required value",
                "webhooks[0].rules[1].operations: Invalid value: []admissionregistration.OperationType{\"*\", \"CREATE\", \"PATCH\"}: if '*' is present, must not specify other operations",
                "webhooks[0].rules[1].operations[2]: Unsupported value: \"PATCH\": supported values: \"*\", \"CONNECT\", \"CREATE\", \"DELETE\", \"UPDATE\"",
                "webhooks[0].rules[1].apiGroups: Invalid value: []string{\"*\", \"apps\"}: if '*' is present, must not specify other API groups",
                "webhooks[0].rules[1].apiVersions[0]: Required value",
                "webhooks[0].rules[1].resources[1]: Invalid value: \"pods/status\": if 'pods/*' is present, must not specify pods/status",
                "webhooks[0].rules[1].resources: Invalid value: []string{\"pods/*\", \"pods/status\", \"*/*\"}: if '*/*' is present, must not specify other resources",
                "webhooks[0].rules[1].scope: Unsupported value: \"Everywhere\": supported values: \"*\", \"Cluster\", \"Namespaced\"",
                "webhooks[0].rules[2].resources[3]: Invalid value: \"deployments/scale\": if '*/scale' is present, must not specify deployments/scale",
                "webhooks[0].rules[2].resources: Invalid value: []string{\"*\", \"pods\", \"*/scale\", \"deployments/scale\"}: if '*' is present, must not specify other resources without subresources",
            ]
        );
    }

    #[test]
    fn enums_timeouts_and_versions() {
        let e = errors(vec![hook_json(json!({
            "failurePolicy": "Sometimes", "matchPolicy": "Loose", "sideEffects": "Some",
            "timeoutSeconds": 31, "admissionReviewVersions": ["v2", "v2", "V3"],
        }))]);
        assert_eq!(
            e,
            vec![
                "webhooks[0].failurePolicy: Unsupported value: \"Sometimes\": supported values: \"Fail\", \"Ignore\"",
                "webhooks[0].matchPolicy: Unsupported value: \"Loose\": supported values: \"Equivalent\", \"Exact\"",
                "webhooks[0].sideEffects: Unsupported value: \"Some\": supported values: \"None\", \"NoneOnDryRun\"",
                "webhooks[0].timeoutSeconds: Invalid value: 31: the timeout value must be between 1 and 30 seconds",
                "webhooks[0].admissionReviewVersions[1]: Invalid value: \"v2\": duplicate version",
                &format!("webhooks[0].admissionReviewVersions[2]: Invalid value: \"V3\": {}", v::DNS1035_LABEL_MSG),
                "webhooks[0].admissionReviewVersions: Invalid value: []string{\"v2\", \"v2\", \"V3\"}: must include at least one of v1, v1beta1",
            ]
        );
        let mut h = hook_json(json!({}));
        h.as_object_mut().unwrap().remove("sideEffects");
        h.as_object_mut().unwrap().remove("admissionReviewVersions");
        assert_eq!(
            errors(vec![h]),
            vec![
                "webhooks[0].sideEffects: Required value: must specify one of None, NoneOnDryRun",
                "webhooks[0].admissionReviewVersions: Required value: must specify one of v1, v1beta1",
            ]
        );
        let e = mutating_errors(vec![hook_json(json!({"reinvocationPolicy": "Always"}))]);
        assert_eq!(
            e,
            vec!["webhooks[0].reinvocationPolicy: Unsupported value: \"Always\": supported values: \"IfNeeded\", \"Never\""]
        );
        assert!(
            mutating_errors(vec![hook_json(json!({"reinvocationPolicy": "IfNeeded"}))]).is_empty()
        );
    }

    #[test]
    fn client_configs_name_one_https_url_or_one_service() {
        let e = errors(vec![hook_json(json!({"clientConfig": {}}))]);
        assert_eq!(
            e,
            vec!["webhooks[0].clientConfig: Required value: exactly one of url or service is required"]
        );
        let e = errors(vec![hook_json(
            json!({"clientConfig": {"url": "https://h.example.com/x", "service": {"namespace": "a", "name": "b"}}}),
        )]);
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(errors(vec![hook_json(
            json!({"clientConfig": {"url": "https://hook.example.com:8443/validate"}})
        )])
        .is_empty());
        let e = errors(vec![hook_json(
            json!({"clientConfig": {"url": "http://me:pw@hook/x?a=1#top"}}),
        )]);
        assert_eq!(
            e,
            vec![
                "webhooks[0].clientConfig.url: Invalid value: \"http\": 'https' is the only allowed URL scheme; desired format: https://host[/path]",
                "webhooks[0].clientConfig.url: Invalid value: \"me:pw\": user information is not permitted in the URL",
                "webhooks[0].clientConfig.url: Invalid value: \"top\": fragments are not permitted in the URL",
                "webhooks[0].clientConfig.url: Invalid value: \"a=1\": query parameters are not permitted in the URL",
            ]
        );
        let e = errors(vec![hook_json(
            json!({"clientConfig": {"url": "/just/a/path"}}),
        )]);
        assert_eq!(
            e,
            vec![
                "webhooks[0].clientConfig.url: Invalid value: \"\": 'https' is the only allowed URL scheme; desired format: https://host[/path]",
                "webhooks[0].clientConfig.url: Invalid value: \"\": host must be provided; desired format: https://host[/path]",
            ]
        );
        let e = errors(vec![hook_json(
            json!({"clientConfig": {"service": {"namespace": "", "name": "", "port": 70000, "path": "foo//Bar/"}}}),
        )]);
        assert_eq!(
            e,
            vec![
                "webhooks[0].clientConfig.service.name: Required value: service name is required",
                "webhooks[0].clientConfig.service.namespace: Required value: service namespace is required",
                "webhooks[0].clientConfig.service.port: Invalid value: 70000: port is not valid: must be between 1 and 65535, inclusive",
                "webhooks[0].clientConfig.service.path: Invalid value: \"foo//Bar/\": must start with a '/'",
                "webhooks[0].clientConfig.service.path: Invalid value: \"foo//Bar/\": segment[1] may not be empty",
                &format!("webhooks[0].clientConfig.service.path: Invalid value: \"foo//Bar/\": segment[2]: {}", v::DNS1123_SUBDOMAIN_MSG),
            ]
        );
        assert!(errors(vec![hook_json(
            json!({"clientConfig": {"service": {"namespace": "a", "name": "b", "path": "/validate/pods/"}}})
        )])
        .is_empty());
    }

    #[test]
    fn match_conditions_compile_with_the_request_variables() {
        let ok = json!([
            {"name": "not-kube-system", "expression": "request.namespace != 'kube-system'"},
            {"name": "example.com/labelled", "expression": "has(object.metadata.labels) && 'app' in object.metadata.labels"},
        ]);
        assert!(errors(vec![hook_json(json!({"matchConditions": ok}))]).is_empty());
        let bad = json!([
            {"name": "a", "expression": "params.x == 1"},
            {"name": "a", "expression": "object.metadata.name"},
            {"name": "bad name!", "expression": "  "},
            {"name": "", "expression": "1 +"},
        ]);
        let e = errors(vec![hook_json(json!({"matchConditions": bad}))]);
        assert_eq!(e.len(), 7, "{e:?}");
        assert!(
            e[0].starts_with("webhooks[0].matchConditions[0].expression: Invalid value: \"params.x == 1\": compilation failed: ERROR: <input>:1:1: undeclared reference to 'params'"),
            "{e:?}"
        );
        assert_eq!(
            e[1],
            "webhooks[0].matchConditions[1].expression: Invalid value: \"object.metadata.name\": must evaluate to bool"
        );
        assert_eq!(
            e[2],
            "webhooks[0].matchConditions[1].name: Duplicate value: \"a\""
        );
        assert_eq!(
            e[3],
            "webhooks[0].matchConditions[2].expression: Required value"
        );
        assert!(
            e[4].starts_with("webhooks[0].matchConditions[2].name: Invalid value: \"bad name!\": name part must consist of"),
            "{e:?}"
        );
        assert!(
            e[5].starts_with(
                "webhooks[0].matchConditions[3].expression: Invalid value: \"1 +\": compilation failed: ERROR: <input>:1:4: Syntax error:"
            ),
            "{e:?}"
        );
        assert_eq!(e[6], "webhooks[0].matchConditions[3].name: Required value");
        let many: Vec<Value> = (0..65)
            .map(|i| json!({"name": format!("c{i}"), "expression": "true"}))
            .collect();
        let e = errors(vec![hook_json(json!({"matchConditions": many}))]);
        assert_eq!(
            e,
            vec!["webhooks[0].matchConditions: Too many: 65: must have at most 64 items"]
        );
    }

    #[test]
    fn selectors_are_checked() {
        let e = errors(vec![hook_json(json!({
            "namespaceSelector": {"matchExpressions": [{"key": "env", "operator": "Near"}]},
        }))]);
        assert_eq!(
            e,
            vec!["webhooks[0].namespaceSelector.matchExpressions[0].operator: Unsupported value: \"Near\": supported values: \"In\", \"NotIn\", \"Exists\", \"DoesNotExist\""]
        );
    }

    #[test]
    fn cells_count_the_webhooks() {
        let c = cells(&json!({"metadata": {"name": "c"}, "webhooks": [{}, {}]}));
        assert_eq!(c[..2], [json!("c"), json!(2)]);
        assert_eq!(cells(&json!({"metadata": {"name": "c"}}))[1], json!(0));
    }
}
