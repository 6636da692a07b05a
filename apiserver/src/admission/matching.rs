//! Which requests an admission webhook or policy applies to, decided once for both as
//! kube-apiserver decides it: rules (operations, API groups and versions, resources with their
//! subresources, scope), excluded rules and resource names (policies), the namespace and object
//! selectors, the match policy (`Exact`, or `Equivalent`: the same resource in another served
//! version also matches, and the request is then sent in that version), and `matchConditions`,
//! CEL expressions over the request.
//!
//! The configurations are read as JSON (`admissionregistration.k8s.io/v1`, as stored), compiled
//! once into a [`Matcher`] and [`MatchConditions`], and put to each request.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde_json::Value;
use skiff_schema::cel::Expression;

use super::{Attributes, Operation};
use crate::error::{Error, Result};
use crate::registry::{Objects, Resource, ResourceInfo};

/// `scope` of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// `Cluster`: cluster-scoped resources (and Namespace objects) only.
    Cluster,
    /// `Namespaced`: namespaced resources only.
    Namespaced,
    /// `*` (the default): both.
    All,
}

/// One rule (`RuleWithOperations`, or a policy's `NamedRuleWithOperations`).
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// `operations` (`CREATE`, `UPDATE`, `DELETE`, `CONNECT`, `*`).
    pub operations: Vec<String>,
    /// `apiGroups` (`""` is core, `*` any).
    pub api_groups: Vec<String>,
    /// `apiVersions` (`*` any).
    pub api_versions: Vec<String>,
    /// `resources`: `pods`, `pods/status`, `pods/*`, `*`, `*/status`, `*/*`.
    pub resources: Vec<String>,
    /// `resourceNames` (policies only; empty: any name).
    pub resource_names: Vec<String>,
    /// `scope`.
    pub scope: Scope,
}

fn strings(v: &Value, field: &str) -> Vec<String> {
    v.get(field)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

impl Rule {
    /// Reads a rule from its JSON form.
    pub fn from_json(v: &Value) -> Rule {
        Rule {
            operations: strings(v, "operations"),
            api_groups: strings(v, "apiGroups"),
            api_versions: strings(v, "apiVersions"),
            resources: strings(v, "resources"),
            resource_names: strings(v, "resourceNames"),
            scope: match v.get("scope").and_then(Value::as_str) {
                Some("Cluster") => Scope::Cluster,
                Some("Namespaced") => Scope::Namespaced,
                _ => Scope::All,
            },
        }
    }

    /// Whether the rule covers a request for `target` (its names aside).
    pub fn matches(&self, target: &Target<'_>) -> bool {
        let is_namespace = target.group.is_empty() && target.resource == "namespaces";
        let scope = match self.scope {
            Scope::All => true,
            Scope::Namespaced => !is_namespace && !target.namespace.is_empty(),
            Scope::Cluster => is_namespace || target.namespace.is_empty(),
        };
        let any = |list: &[String], want: &str| list.iter().any(|x| x == "*" || x == want);
        scope
            && any(&self.operations, target.operation.as_str())
            && any(&self.api_groups, target.group)
            && any(&self.api_versions, target.version)
            && self.resources.iter().any(|r| {
                let (res, sub) = r.split_once('/').unwrap_or((r, ""));
                (res == "*" || res == target.resource) && (sub == "*" || sub == target.subresource)
            })
    }

    /// Whether the rule's `resourceNames` allow `name` (an empty list allows any).
    pub fn names_match(&self, name: &str) -> bool {
        self.resource_names.is_empty() || self.resource_names.iter().any(|n| n == name)
    }
}

/// What rules are put to: a request's operation and resource (possibly an equivalent
/// resource's version in place of the request's own).
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// The operation.
    pub operation: Operation,
    /// API group.
    pub group: &'a str,
    /// API version.
    pub version: &'a str,
    /// Resource plural.
    pub resource: &'a str,
    /// Subresource, or "".
    pub subresource: &'a str,
    /// Namespace, or "" (cluster-scoped resources).
    pub namespace: &'a str,
}

impl<'a> Target<'a> {
    /// The target of a request, as it came.
    pub fn of(a: &Attributes<'a>) -> Target<'a> {
        Target::of_resource(a, a.resource)
    }

    /// The target of a request as if it were for `r` (an equivalent resource).
    pub fn of_resource(a: &Attributes<'a>, r: &'a ResourceInfo) -> Target<'a> {
        Target {
            operation: a.operation,
            group: &r.group,
            version: &r.version,
            resource: &r.plural,
            subresource: a.subresource,
            namespace: a.namespace,
        }
    }
}

/// `matchPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchPolicy {
    /// Only the resource as the rules name it.
    Exact,
    /// The rules' resource in any other served version too (the default in v1).
    Equivalent,
}

/// A request a [`Matcher`] matched, and the resource it is to be sent as: the request's own,
/// or, under `Equivalent`, the version of it the rules name.
#[derive(Clone, Default)]
pub struct Matched {
    /// The other version of the resource to send the request as (`None`: its own).
    pub equivalent: Option<Resource>,
}

impl std::fmt::Debug for Matched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Matched")
            .field(
                "equivalent",
                &self.equivalent.as_ref().map(|r| r.api_version()),
            )
            .finish()
    }
}

/// The compiled request criteria of one webhook, or of one policy's `matchConstraints` or
/// binding's `matchResources`.
#[derive(Debug, Clone)]
pub struct Matcher {
    /// `rules` (webhooks) or `resourceRules` (policies).
    pub rules: Vec<Rule>,
    /// `excludeResourceRules` (policies).
    pub exclude: Vec<Rule>,
    /// `namespaceSelector` (`None`: absent, which matches everything).
    pub namespace_selector: Option<LabelSelector>,
    /// `objectSelector`.
    pub object_selector: Option<LabelSelector>,
    /// `matchPolicy`.
    pub policy: MatchPolicy,
    /// Whether an empty rule list matches every request (a binding's `matchResources`), rather
    /// than none (a webhook's `rules`).
    pub empty_rules_match_all: bool,
}

fn selector(v: &Value, field: &str) -> std::result::Result<Option<LabelSelector>, String> {
    match v.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(s) => serde_json::from_value(s.clone())
            .map(Some)
            .map_err(|e| format!("{field}: {e}")),
    }
}

fn is_empty_selector(s: &Option<LabelSelector>) -> bool {
    s.as_ref().is_none_or(|s| {
        s.match_labels.as_ref().is_none_or(BTreeMap::is_empty)
            && s.match_expressions.as_ref().is_none_or(Vec::is_empty)
    })
}

fn labels_of(obj: Option<&Value>) -> Option<BTreeMap<String, String>> {
    let labels = obj?.pointer("/metadata/labels");
    Some(
        labels
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                    .collect()
            })
            .unwrap_or_default(),
    )
}

impl Matcher {
    /// A webhook's criteria (`rules`, `namespaceSelector`, `objectSelector`, `matchPolicy`).
    pub fn webhook(w: &Value) -> std::result::Result<Matcher, String> {
        Ok(Matcher {
            rules: w
                .get("rules")
                .and_then(Value::as_array)
                .map(|a| a.iter().map(Rule::from_json).collect())
                .unwrap_or_default(),
            exclude: Vec::new(),
            namespace_selector: selector(w, "namespaceSelector")?,
            object_selector: selector(w, "objectSelector")?,
            policy: match_policy(w),
            empty_rules_match_all: false,
        })
    }

    /// A policy's `matchConstraints` or a binding's `matchResources` (`resourceRules`,
    /// `excludeResourceRules`, selectors, `matchPolicy`). With `empty_rules_match_all`, no
    /// `resourceRules` means every resource (a binding's), else none.
    pub fn resources(
        m: &Value,
        empty_rules_match_all: bool,
    ) -> std::result::Result<Matcher, String> {
        let rules = |f: &str| {
            m.get(f)
                .and_then(Value::as_array)
                .map(|a| a.iter().map(Rule::from_json).collect())
                .unwrap_or_default()
        };
        Ok(Matcher {
            rules: rules("resourceRules"),
            exclude: rules("excludeResourceRules"),
            namespace_selector: selector(m, "namespaceSelector")?,
            object_selector: selector(m, "objectSelector")?,
            policy: match_policy(m),
            empty_rules_match_all,
        })
    }

    /// Whether the request matches, and as which resource it is to be sent. `obj` is the
    /// request's new object (`None` for deletes and connects). A namespace that cannot be
    /// found makes an error (404) only when the rules would otherwise match, as in
    /// kube-apiserver.
    pub async fn matches(
        &self,
        a: &Attributes<'_>,
        obj: Option<&Value>,
        objs: &dyn Objects,
    ) -> Result<Option<Matched>> {
        let (ns_match, ns_err) = match self.namespace_matches(a, obj, objs).await {
            Ok(m) => (m, None),
            Err(e) => (true, Some(e)),
        };
        if !ns_match {
            return Ok(None);
        }
        if !self.object_matches(obj, a.old) {
            return Ok(None);
        }
        let Some(matched) = self.rules_match(a, objs)? else {
            return Ok(None);
        };
        match ns_err {
            Some(e) => Err(e),
            None => Ok(Some(matched)),
        }
    }

    /// The rules alone (excluded rules and the match policy included), no selectors.
    pub fn rules_match(&self, a: &Attributes<'_>, objs: &dyn Objects) -> Result<Option<Matched>> {
        let own = Target::of(a);
        let name = request_name(a);
        let hit = |rules: &[Rule], t: &Target<'_>, names: bool| {
            rules
                .iter()
                .any(|r| r.matches(t) && (!names || r.names_match(&name)))
        };
        if !self.exclude.is_empty() {
            if hit(&self.exclude, &own, true) {
                return Ok(None);
            }
            if self.policy == MatchPolicy::Equivalent
                && equivalents(a.resource, objs)
                    .iter()
                    .any(|e| hit(&self.exclude, &Target::of_resource(a, e), false))
            {
                return Ok(None);
            }
        }
        let this = Matched::default;
        if self.rules.is_empty() {
            return Ok(self.empty_rules_match_all.then(this));
        }
        if hit(&self.rules, &own, true) {
            return Ok(Some(this()));
        }
        if self.policy == MatchPolicy::Exact {
            return Ok(None);
        }
        let others = equivalents(a.resource, objs);
        // Earlier rules first, as kube-apiserver honours them.
        for rule in &self.rules {
            for e in &others {
                if rule.matches(&Target::of_resource(a, e)) {
                    return Ok(Some(Matched {
                        equivalent: Some(e.clone()),
                    }));
                }
            }
        }
        Ok(None)
    }

    /// The object selector: the new or the old object's labels match. An absent or empty
    /// selector matches every request.
    pub fn object_matches(&self, obj: Option<&Value>, old: Option<&Value>) -> bool {
        if is_empty_selector(&self.object_selector) {
            return true;
        }
        let sel = self.object_selector.as_ref();
        [obj, old]
            .into_iter()
            .any(|o| labels_of(o).is_some_and(|l| skiff_rules::selector::matches(sel, Some(&l))))
    }

    /// The namespace selector, against the labels of the request's namespace (a Namespace
    /// object's own, when it is created or updated). Requests for other cluster-scoped
    /// resources always match.
    pub async fn namespace_matches(
        &self,
        a: &Attributes<'_>,
        obj: Option<&Value>,
        objs: &dyn Objects,
    ) -> Result<bool> {
        let is_namespace = a.resource.group.is_empty() && a.resource.plural == "namespaces";
        if a.namespace.is_empty() && !is_namespace {
            return Ok(true);
        }
        if is_empty_selector(&self.namespace_selector) {
            return Ok(true);
        }
        let labels = namespace_labels(a, obj, objs).await?;
        Ok(skiff_rules::selector::matches(
            self.namespace_selector.as_ref(),
            Some(&labels),
        ))
    }
}

fn match_policy(v: &Value) -> MatchPolicy {
    match v.get("matchPolicy").and_then(Value::as_str) {
        Some("Exact") => MatchPolicy::Exact,
        _ => MatchPolicy::Equivalent,
    }
}

/// The name a request is about (a create's generated name is not known yet: "").
fn request_name(a: &Attributes<'_>) -> String {
    a.name.to_string()
}

/// The other served versions of the same group and resource (a custom resource's other
/// versions), each an equivalent resource under `matchPolicy: Equivalent`.
pub fn equivalents(r: &ResourceInfo, objs: &dyn Objects) -> Vec<Resource> {
    objs.resources()
        .into_iter()
        .filter(|o| o.group == r.group && o.plural == r.plural && o.version != r.version)
        .collect()
}

/// The labels of the namespace a request is in; for a create or update of a Namespace, the
/// new object's own. Read from the watch cache, then from storage (a namespace just created
/// may not be cached yet); a namespace that does not exist is a 404.
pub async fn namespace_labels(
    a: &Attributes<'_>,
    obj: Option<&Value>,
    objs: &dyn Objects,
) -> Result<BTreeMap<String, String>> {
    let is_namespace = a.resource.group.is_empty() && a.resource.plural == "namespaces";
    if is_namespace
        && a.subresource.is_empty()
        && matches!(a.operation, Operation::Create | Operation::Update)
    {
        return Ok(labels_of(obj).unwrap_or_default());
    }
    let name = if a.namespace.is_empty() {
        a.name
    } else {
        a.namespace
    };
    Ok(labels_of(Some(&namespace_object(name, objs).await?)).unwrap_or_default())
}

/// A namespace as stored (cached, else read from storage).
pub async fn namespace_object(name: &str, objs: &dyn Objects) -> Result<Value> {
    let Some(nsr) = objs.resource("", "v1", "namespaces") else {
        return Err(Error::not_found("namespaces", name));
    };
    if let Some(c) = objs.cached(&nsr, None, name) {
        return Ok(c.value());
    }
    objs.get(&nsr, None, name).await
}

/// One compiled `matchConditions` entry.
#[derive(Debug)]
pub struct MatchCondition {
    /// Its `name`.
    pub name: String,
    /// Its `expression`, as written.
    pub expression: String,
    compiled: std::result::Result<Expression, String>,
}

/// The `matchConditions` of a webhook, policy or binding, compiled once.
#[derive(Debug, Default)]
pub struct MatchConditions(Vec<MatchCondition>);

/// What the match conditions say of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConditionOutcome {
    /// Every condition is true (or there are none).
    Match,
    /// A condition is false: the request is skipped, whatever the failure policy.
    Skip {
        /// The name of the condition.
        condition: String,
    },
    /// No condition is false but some could not be evaluated: the failure policy decides.
    /// The message is kube-apiserver's (`expression 'E' resulted in error: WHY`, several
    /// listed as `[A, B]`).
    Error(String),
}

/// The variables match conditions may name (policies also have `params`, `namespaceObject`
/// and `variables`).
pub const WEBHOOK_VARIABLES: &[&str] = &["object", "oldObject", "request"];

impl MatchConditions {
    /// Compiles the `matchConditions` list, each able to name `variables`. A condition that
    /// does not compile is kept and fails at evaluation (configurations are validated when
    /// written, so this only happens to ones stored before).
    pub fn compile(conditions: Option<&Value>, variables: &[&str]) -> MatchConditions {
        let list = conditions
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        MatchConditions(
            list.iter()
                .map(|c| {
                    let name = c
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string();
                    let expression = c
                        .get("expression")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string();
                    let compiled = Expression::compile(&expression, variables);
                    MatchCondition {
                        name,
                        expression,
                        compiled,
                    }
                })
                .collect(),
        )
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The conditions.
    pub fn conditions(&self) -> &[MatchCondition] {
        &self.0
    }

    /// Evaluates every condition with the variables bound to `values`: any false one skips
    /// the request, else any error is reported, else it matches.
    pub fn evaluate(&self, values: &[(&str, &Value)]) -> ConditionOutcome {
        let mut errors = Vec::new();
        for c in &self.0 {
            let result = match &c.compiled {
                Ok(e) => e.evaluate_bool(values),
                Err(e) => Err(format!("compilation failed: {e}")),
            };
            match result {
                Ok(true) => {}
                Ok(false) => {
                    return ConditionOutcome::Skip {
                        condition: c.name.clone(),
                    }
                }
                Err(e) => errors.push(format!(
                    "expression '{}' resulted in error: {e}",
                    c.expression
                )),
            }
        }
        match errors.len() {
            0 => ConditionOutcome::Match,
            1 => ConditionOutcome::Error(errors.remove(0)),
            _ => ConditionOutcome::Error(format!("[{}]", errors.join(", "))),
        }
    }
}

/// The `object` and `oldObject` variables of a request: `null` where the request has none.
pub fn object_variables(obj: Option<&Value>, old: Option<&Value>) -> (Value, Value) {
    (
        obj.cloned().unwrap_or(Value::Null),
        old.cloned().unwrap_or(Value::Null),
    )
}

/// The 403 kube-apiserver answers when a request's match conditions could not be evaluated
/// and the failure policy is `Fail`.
pub fn condition_error(a: &Attributes<'_>, obj: Option<&Value>, why: &str) -> Error {
    super::forbidden(a, obj, why)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::testing::Fixed;
    use crate::admission::Options;
    use crate::auth::UserInfo;
    use crate::registry::builtin;
    use serde_json::json;

    fn rule(v: Value) -> Rule {
        Rule::from_json(&v)
    }

    fn target<'a>(
        op: Operation,
        g: &'a str,
        v: &'a str,
        r: &'a str,
        sub: &'a str,
        ns: &'a str,
    ) -> Target<'a> {
        Target {
            operation: op,
            group: g,
            version: v,
            resource: r,
            subresource: sub,
            namespace: ns,
        }
    }

    #[test]
    fn rules_match_operations_groups_versions_and_resources() {
        let r = rule(
            json!({"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}),
        );
        assert!(r.matches(&target(Operation::Create, "", "v1", "pods", "", "ns")));
        assert!(!r.matches(&target(Operation::Update, "", "v1", "pods", "", "ns")));
        assert!(!r.matches(&target(Operation::Create, "apps", "v1", "pods", "", "ns")));
        assert!(!r.matches(&target(Operation::Create, "", "v2", "pods", "", "ns")));
        // A plain resource does not cover its subresources.
        assert!(!r.matches(&target(Operation::Create, "", "v1", "pods", "status", "ns")));
        let any = rule(
            json!({"operations": ["*"], "apiGroups": ["*"], "apiVersions": ["*"], "resources": ["*"]}),
        );
        assert!(any.matches(&target(
            Operation::Delete,
            "apps",
            "v1",
            "deployments",
            "",
            "ns"
        )));
        assert!(!any.matches(&target(
            Operation::Update,
            "apps",
            "v1",
            "deployments",
            "scale",
            "ns"
        )));
        let all = rule(
            json!({"operations": ["*"], "apiGroups": ["*"], "apiVersions": ["*"], "resources": ["*/*"]}),
        );
        assert!(all.matches(&target(
            Operation::Update,
            "apps",
            "v1",
            "deployments",
            "scale",
            "ns"
        )));
        // `*` as a subresource also covers the resource itself, as in kube-apiserver.
        assert!(all.matches(&target(
            Operation::Update,
            "apps",
            "v1",
            "deployments",
            "",
            "ns"
        )));
        let pods_all = rule(
            json!({"operations": ["*"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods/*"]}),
        );
        assert!(pods_all.matches(&target(
            Operation::Create,
            "",
            "v1",
            "pods",
            "binding",
            "ns"
        )));
        assert!(pods_all.matches(&target(Operation::Create, "", "v1", "pods", "", "ns")));
        assert!(!pods_all.matches(&target(Operation::Create, "", "v1", "nodes", "", "")));
        let status = rule(
            json!({"operations": ["UPDATE"], "apiGroups": ["*"], "apiVersions": ["*"], "resources": ["*/status"]}),
        );
        assert!(status.matches(&target(Operation::Update, "", "v1", "pods", "status", "ns")));
        assert!(!status.matches(&target(Operation::Update, "", "v1", "pods", "", "ns")));
        let none = rule(
            json!({"operations": [], "apiGroups": ["*"], "apiVersions": ["*"], "resources": ["*"]}),
        );
        assert!(!none.matches(&target(Operation::Create, "", "v1", "pods", "", "ns")));
    }

    #[test]
    fn scope_separates_cluster_and_namespaced() {
        let cluster = rule(
            json!({"operations": ["*"], "apiGroups": ["*"], "apiVersions": ["*"], "resources": ["*"], "scope": "Cluster"}),
        );
        let namespaced = rule(
            json!({"operations": ["*"], "apiGroups": ["*"], "apiVersions": ["*"], "resources": ["*"], "scope": "Namespaced"}),
        );
        let pods = target(Operation::Create, "", "v1", "pods", "", "ns");
        let nodes = target(Operation::Create, "", "v1", "nodes", "", "");
        // A Namespace is cluster-scoped even though its requests name it as their namespace.
        let ns = target(Operation::Update, "", "v1", "namespaces", "", "ns");
        assert!(!cluster.matches(&pods) && namespaced.matches(&pods));
        assert!(cluster.matches(&nodes) && !namespaced.matches(&nodes));
        assert!(cluster.matches(&ns) && !namespaced.matches(&ns));
    }

    fn attrs<'a>(
        op: Operation,
        r: &'a ResourceInfo,
        ns: &'a str,
        name: &'a str,
        user: &'a UserInfo,
    ) -> Attributes<'a> {
        Attributes {
            operation: op,
            resource: r,
            subresource: "",
            namespace: ns,
            name,
            old: None,
            user,
            dry_run: false,
            options: Options::None,
            reinvocation: None,
        }
    }

    #[tokio::test]
    async fn selectors_narrow_requests() {
        let objs = Fixed::default()
            .with(
                "namespaces",
                "",
                json!({"metadata": {"name": "prod", "labels": {"env": "prod"}}}),
            )
            .with("namespaces", "", json!({"metadata": {"name": "dev"}}));
        let pods = builtin("", "pods").unwrap();
        let user = UserInfo::default();
        let m = Matcher::webhook(&json!({
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}],
            "namespaceSelector": {"matchLabels": {"env": "prod"}},
            "objectSelector": {"matchExpressions": [{"key": "skip", "operator": "DoesNotExist"}]},
        }))
        .unwrap();
        let pod = json!({"metadata": {"name": "p", "labels": {"app": "x"}}});
        let skipped = json!({"metadata": {"name": "p", "labels": {"skip": "yes"}}});
        let a = attrs(Operation::Create, &pods, "prod", "p", &user);
        assert!(m.matches(&a, Some(&pod), &objs).await.unwrap().is_some());
        assert!(m
            .matches(&a, Some(&skipped), &objs)
            .await
            .unwrap()
            .is_none());
        let a = attrs(Operation::Create, &pods, "dev", "p", &user);
        assert!(m.matches(&a, Some(&pod), &objs).await.unwrap().is_none());
        // A namespace that does not exist is a 404, as kube-apiserver answers.
        let a = attrs(Operation::Create, &pods, "gone", "p", &user);
        let e = m.matches(&a, Some(&pod), &objs).await.unwrap_err();
        assert_eq!(e.code(), 404, "{e}");
        // ... but only for requests the rules match.
        let a = attrs(Operation::Delete, &pods, "gone", "p", &user);
        assert!(m.matches(&a, None, &objs).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_namespace_is_matched_by_its_own_labels() {
        let objs = Fixed::default();
        let nsr = builtin("", "namespaces").unwrap();
        let user = UserInfo::default();
        let m = Matcher::webhook(&json!({
            "rules": [{"operations": ["*"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["namespaces"]}],
            "namespaceSelector": {"matchLabels": {"team": "a"}},
        }))
        .unwrap();
        let a = attrs(Operation::Create, &nsr, "", "new", &user);
        let ns = json!({"metadata": {"name": "new", "labels": {"team": "a"}}});
        assert!(m.matches(&a, Some(&ns), &objs).await.unwrap().is_some());
        let other = json!({"metadata": {"name": "new", "labels": {"team": "b"}}});
        assert!(m.matches(&a, Some(&other), &objs).await.unwrap().is_none());
        // Cluster-scoped resources other than namespaces are never excluded by it.
        let nodes = builtin("", "nodes").unwrap();
        let m = Matcher::webhook(&json!({
            "rules": [{"operations": ["*"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["nodes"]}],
            "namespaceSelector": {"matchLabels": {"team": "a"}},
        }))
        .unwrap();
        let a = attrs(Operation::Create, &nodes, "", "n1", &user);
        assert!(m
            .matches(&a, Some(&json!({"metadata": {"name": "n1"}})), &objs)
            .await
            .unwrap()
            .is_some());
    }

    #[tokio::test]
    async fn object_selector_sees_the_old_object_too() {
        let m = Matcher::webhook(&json!({
            "rules": [{"operations": ["*"], "apiGroups": ["*"], "apiVersions": ["*"], "resources": ["*"]}],
            "objectSelector": {"matchLabels": {"watch": "me"}},
        }))
        .unwrap();
        let old = json!({"metadata": {"labels": {"watch": "me"}}});
        let new = json!({"metadata": {"labels": {}}});
        assert!(m.object_matches(Some(&new), Some(&old)));
        assert!(!m.object_matches(Some(&new), None));
        assert!(!m.object_matches(None, None));
        // An empty selector matches even without objects.
        let any = Matcher::webhook(&json!({"objectSelector": {}})).unwrap();
        assert!(any.object_matches(None, None));
    }

    #[tokio::test]
    async fn policies_exclude_rules_and_names() {
        let objs = Fixed::default();
        let cms = builtin("", "configmaps").unwrap();
        let user = UserInfo::default();
        let m = Matcher::resources(
            &json!({
                "resourceRules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["configmaps"], "resourceNames": ["a", "b"]}],
                "excludeResourceRules": [{"operations": ["*"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["configmaps"], "resourceNames": ["b"]}],
            }),
            false,
        )
        .unwrap();
        for (name, want) in [("a", true), ("b", false), ("c", false)] {
            let a = attrs(Operation::Create, &cms, "ns", name, &user);
            assert_eq!(
                m.matches(&a, None, &objs).await.unwrap().is_some(),
                want,
                "{name}"
            );
        }
        let all = Matcher::resources(&json!({}), true).unwrap();
        let a = attrs(Operation::Create, &cms, "ns", "x", &user);
        assert!(all.matches(&a, None, &objs).await.unwrap().is_some());
        let none = Matcher::resources(&json!({}), false).unwrap();
        assert!(none.matches(&a, None, &objs).await.unwrap().is_none());
    }

    #[test]
    fn match_conditions_skip_match_or_fail() {
        let conds = MatchConditions::compile(
            Some(&json!([
                {"name": "has-labels", "expression": "has(object.metadata.labels)"},
                {"name": "not-kube-system", "expression": "request.namespace != 'kube-system'"},
            ])),
            WEBHOOK_VARIABLES,
        );
        let request = json!({"namespace": "default"});
        let obj = json!({"metadata": {"labels": {"a": "b"}}});
        let null = Value::Null;
        assert_eq!(
            conds.evaluate(&[
                ("object", &obj),
                ("oldObject", &null),
                ("request", &request)
            ]),
            ConditionOutcome::Match
        );
        let bare = json!({"metadata": {}});
        assert_eq!(
            conds.evaluate(&[
                ("object", &bare),
                ("oldObject", &null),
                ("request", &request)
            ]),
            ConditionOutcome::Skip {
                condition: "has-labels".into()
            }
        );
        let failing = MatchConditions::compile(
            Some(&json!([{"name": "bad", "expression": "object.spec.replicas > 1"}])),
            WEBHOOK_VARIABLES,
        );
        match failing.evaluate(&[
            ("object", &obj),
            ("oldObject", &null),
            ("request", &request),
        ]) {
            ConditionOutcome::Error(e) => assert!(
                e.starts_with("expression 'object.spec.replicas > 1' resulted in error: "),
                "{e}"
            ),
            other => panic!("{other:?}"),
        }
        // A false condition wins over an error in another.
        let mixed = MatchConditions::compile(
            Some(&json!([
                {"name": "bad", "expression": "object.spec.replicas > 1"},
                {"name": "no", "expression": "false"},
            ])),
            WEBHOOK_VARIABLES,
        );
        assert_eq!(
            mixed.evaluate(&[
                ("object", &obj),
                ("oldObject", &null),
                ("request", &request)
            ]),
            ConditionOutcome::Skip {
                condition: "no".into()
            }
        );
    }
}
