//! The audit policy (`audit.k8s.io/v1` `Policy`, `--audit-policy-file`): which requests are
//! recorded, at which level and for which stages.
//!
//! Read and checked as kube-apiserver reads it (`LoadPolicyFromBytes`): YAML or JSON, unknown
//! fields warned about rather than refused, kube's field errors for a bad level, stage, group
//! or URL, and a policy without rules refused. Rules are asked in order; the first that
//! matches decides, and a request no rule matches is not recorded.

use serde::Deserialize;
use serde_json::Value;

use crate::auth::UserInfo;
use crate::error::{Cause, CauseKind};

/// How much of a request is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Nothing.
    None,
    /// Who, what, when and the outcome; no bodies.
    Metadata,
    /// Metadata and the request's body.
    Request,
    /// Metadata, the request's body and the response's.
    RequestResponse,
}

impl Level {
    /// Every level, in order.
    pub const ALL: [Level; 4] = [
        Level::None,
        Level::Metadata,
        Level::Request,
        Level::RequestResponse,
    ];

    /// The name Kubernetes gives it.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::None => "None",
            Level::Metadata => "Metadata",
            Level::Request => "Request",
            Level::RequestResponse => "RequestResponse",
        }
    }

    fn parse(s: &str) -> Option<Level> {
        Level::ALL.into_iter().find(|l| l.as_str() == s)
    }
}

impl serde::Serialize for Level {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// A point in a request's life at which an event is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// As soon as the request is authenticated, before anything else.
    RequestReceived,
    /// Once the response headers are sent, for long-running requests (watches, logs, exec).
    ResponseStarted,
    /// Once the response is complete.
    ResponseComplete,
    /// When serving the request panicked.
    Panic,
}

impl Stage {
    /// Every stage, in order.
    pub const ALL: [Stage; 4] = [
        Stage::RequestReceived,
        Stage::ResponseStarted,
        Stage::ResponseComplete,
        Stage::Panic,
    ];

    /// The name Kubernetes gives it.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::RequestReceived => "RequestReceived",
            Stage::ResponseStarted => "ResponseStarted",
            Stage::ResponseComplete => "ResponseComplete",
            Stage::Panic => "Panic",
        }
    }

    fn parse(s: &str) -> Option<Stage> {
        Stage::ALL.into_iter().find(|st| st.as_str() == s)
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl serde::Serialize for Stage {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// A set of stages (those a rule omits).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stages(u8);

impl Stages {
    /// Whether `stage` is in the set.
    pub fn contains(self, stage: Stage) -> bool {
        self.0 & stage.bit() != 0
    }

    /// The set with `stage` added.
    pub fn with(self, stage: Stage) -> Stages {
        Stages(self.0 | stage.bit())
    }

    fn union(self, other: Stages) -> Stages {
        Stages(self.0 | other.0)
    }
}

/// Resources of one API group a rule names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupResources {
    /// The group (`""` is the core group).
    pub group: String,
    /// Resources (`pods`, `pods/log`, `*`, `*/status`, `pods/*`); none means all of the group.
    pub resources: Vec<String>,
    /// Object names; none means any.
    pub resource_names: Vec<String>,
}

/// One rule of a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The level of the requests it matches.
    pub level: Level,
    /// User names it matches (none: any).
    pub users: Vec<String>,
    /// Groups it matches, any of the user's (none: any).
    pub user_groups: Vec<String>,
    /// Verbs it matches (none: any).
    pub verbs: Vec<String>,
    /// Resources it matches (none: any).
    pub resources: Vec<GroupResources>,
    /// Namespaces it matches, `""` for cluster-scoped objects (none: any).
    pub namespaces: Vec<String>,
    /// Paths that are not resources it matches (`/healthz`, `/api*`, `*`).
    pub non_resource_urls: Vec<String>,
    /// Stages not recorded, the policy's own included.
    pub omit_stages: Stages,
    /// Whether `metadata.managedFields` is left out of recorded bodies (unset: the policy's).
    pub omit_managed_fields: Option<bool>,
}

/// A parsed, checked policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The rules, first match wins.
    pub rules: Vec<Rule>,
    /// Stages no rule records.
    pub omit_stages: Stages,
    /// Whether `metadata.managedFields` is left out of recorded bodies.
    pub omit_managed_fields: bool,
}

/// A request as the policy sees it: who (if anyone could be authenticated) asks what.
#[derive(Debug, Clone, Copy)]
pub struct Attributes<'a> {
    /// The authenticated user (before impersonation), if any.
    pub user: Option<&'a UserInfo>,
    /// The verb.
    pub verb: &'a str,
    /// Whether it addresses a resource rather than a path.
    pub resource_request: bool,
    /// API group.
    pub api_group: &'a str,
    /// Resource plural.
    pub resource: &'a str,
    /// Subresource, or "".
    pub subresource: &'a str,
    /// Namespace, or "".
    pub namespace: &'a str,
    /// Object name, or "".
    pub name: &'a str,
    /// The path.
    pub path: &'a str,
}

impl<'a> Attributes<'a> {
    /// The attributes an authorizer sees, with `user` (the authenticated user, before
    /// impersonation, or none when authentication failed).
    pub fn of(a: &crate::auth::Attributes<'a>, user: Option<&'a UserInfo>) -> Self {
        Attributes {
            user,
            verb: a.verb,
            resource_request: a.resource_request,
            api_group: a.api_group,
            resource: a.resource,
            subresource: a.subresource,
            namespace: a.namespace,
            name: a.name,
            path: a.path,
        }
    }
}

/// What the policy decides for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// The level.
    pub level: Level,
    /// Stages not recorded.
    pub omit_stages: Stages,
    /// Whether managed fields are left out of bodies.
    pub omit_managed_fields: bool,
}

impl Policy {
    /// The level and stages for a request: the first matching rule's, else `None`.
    pub fn evaluate(&self, a: &Attributes<'_>) -> Decision {
        for r in &self.rules {
            if r.matches(a) {
                return Decision {
                    level: r.level,
                    omit_stages: r.omit_stages,
                    omit_managed_fields: r.omit_managed_fields.unwrap_or(self.omit_managed_fields),
                };
            }
        }
        Decision {
            level: Level::None,
            omit_stages: self.omit_stages,
            omit_managed_fields: self.omit_managed_fields,
        }
    }

    /// Reads a policy file's text (YAML or JSON). `Err` carries kube's message.
    pub fn parse(text: &str) -> Result<Policy, String> {
        let v: Value = serde_norway::from_str(text).map_err(|e| format!("failed decoding: {e}"))?;
        let Some(obj) = v.as_object() else {
            return Err("failed decoding: the policy must be an object".into());
        };
        let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
        let api_version = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
        if kind.is_empty() {
            return Err("failed decoding: Object 'Kind' is missing".into());
        }
        if api_version.is_empty() {
            return Err("failed decoding: Object 'apiVersion' is missing".into());
        }
        if api_version != "audit.k8s.io/v1" || kind != "Policy" {
            return Err(format!(
                "failed decoding: no kind {kind:?} is registered for version {api_version:?} (want kind \"Policy\" of \"audit.k8s.io/v1\")"
            ));
        }
        let unknown = unknown_fields(&v);
        if !unknown.is_empty() {
            tracing::warn!(
                "audit policy contains errors, falling back to lenient decoding: strict decoding error: {}",
                unknown
                    .iter()
                    .map(|f| format!("unknown field {f:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        let raw: RawPolicy =
            serde_json::from_value(v).map_err(|e| format!("failed decoding: {e}"))?;
        let policy = raw.check()?;
        if policy.rules.is_empty() {
            return Err("loaded illegal policy with 0 rules".into());
        }
        Ok(policy)
    }
}

impl Rule {
    /// Whether the rule applies to a request (kube's `ruleMatches`).
    fn matches(&self, a: &Attributes<'_>) -> bool {
        if !self.users.is_empty() && !a.user.is_some_and(|u| self.users.contains(&u.name)) {
            return false;
        }
        if !self.user_groups.is_empty()
            && !a
                .user
                .is_some_and(|u| u.groups.iter().any(|g| self.user_groups.contains(g)))
        {
            return false;
        }
        if !self.verbs.is_empty() && !self.verbs.iter().any(|v| v == a.verb) {
            return false;
        }
        if !self.namespaces.is_empty() || !self.resources.is_empty() {
            return self.matches_resource(a);
        }
        if !self.non_resource_urls.is_empty() {
            return !a.resource_request
                && self
                    .non_resource_urls
                    .iter()
                    .any(|spec| path_matches(a.path, spec));
        }
        true
    }

    fn matches_resource(&self, a: &Attributes<'_>) -> bool {
        if !a.resource_request {
            return false;
        }
        if !self.namespaces.is_empty() && !self.namespaces.iter().any(|n| n == a.namespace) {
            return false;
        }
        if self.resources.is_empty() {
            return true;
        }
        for gr in self.resources.iter().filter(|gr| gr.group == a.api_group) {
            if gr.resources.is_empty() {
                return true;
            }
            if !gr.resource_names.is_empty() && !gr.resource_names.iter().any(|n| n == a.name) {
                continue;
            }
            for res in &gr.resources {
                if resource_matches(res, a.resource, a.subresource) {
                    return true;
                }
            }
        }
        false
    }
}

/// `*`, `resource`, `resource/sub`, `*/sub` and `resource/*` (kube's `ruleMatchesResource`).
fn resource_matches(spec: &str, resource: &str, subresource: &str) -> bool {
    if spec == "*" {
        return true;
    }
    let combined_matches = match spec.split_once('/') {
        None => subresource.is_empty() && spec == resource,
        Some((r, s)) => r == resource && s == subresource,
    };
    if combined_matches {
        return true;
    }
    if !subresource.is_empty() && spec.strip_prefix("*/") == Some(subresource) {
        return true;
    }
    spec.strip_suffix("/*") == Some(resource)
}

/// `*`, an exact path, or a prefix ending in `*`.
fn path_matches(path: &str, spec: &str) -> bool {
    spec == "*"
        || spec == path
        || spec
            .strip_suffix('*')
            .is_some_and(|prefix| path.starts_with(prefix.trim_end_matches('*')))
}

/// The policy as written, before checking.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct RawPolicy {
    rules: Vec<RawRule>,
    omit_stages: Vec<String>,
    omit_managed_fields: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct RawRule {
    level: String,
    users: Vec<String>,
    user_groups: Vec<String>,
    verbs: Vec<String>,
    resources: Vec<RawGroupResources>,
    namespaces: Vec<String>,
    #[serde(rename = "nonResourceURLs")]
    non_resource_urls: Vec<String>,
    omit_stages: Vec<String>,
    omit_managed_fields: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct RawGroupResources {
    group: String,
    resources: Vec<String>,
    resource_names: Vec<String>,
}

/// Go's `%#v` of a `[]string`, as kube's field errors print list values.
fn go_strings(v: &[String]) -> String {
    let quoted: Vec<String> = v.iter().map(|s| format!("{s:?}")).collect();
    format!("[]string{{{}}}", quoted.join(", "))
}

fn invalid_list(field: String, v: &[String], detail: &str) -> Cause {
    Cause {
        kind: CauseKind::Invalid,
        field,
        message: format!("{}: {detail}", go_strings(v)),
    }
}

fn stages(list: &[String], field: &str, errors: &mut Vec<Cause>) -> Stages {
    let mut out = Stages::default();
    for (i, s) in list.iter().enumerate() {
        match Stage::parse(s) {
            Some(st) => out = out.with(st),
            None => errors.push(Cause::invalid(
                format!("{field}[{i}]"),
                &Value::String(s.clone()),
                "allowed stages are RequestReceived,ResponseStarted,ResponseComplete,Panic",
            )),
        }
    }
    out
}

impl RawPolicy {
    /// kube's `ValidatePolicy`: every problem, in its order, as one message.
    fn check(self) -> Result<Policy, String> {
        let mut errors = Vec::new();
        let omit_stages = stages(&self.omit_stages, "omitStages", &mut errors);
        let mut rules = Vec::with_capacity(self.rules.len());
        for (i, r) in self.rules.into_iter().enumerate() {
            let at = |f: &str| format!("rules[{i}].{f}");
            let level = match r.level.as_str() {
                "" => {
                    errors.push(Cause::required(at("level")));
                    Level::None
                }
                l => Level::parse(l).unwrap_or_else(|| {
                    errors.push(Cause::not_supported(
                        at("level"),
                        l,
                        &["None", "Metadata", "Request", "RequestResponse"],
                    ));
                    Level::None
                }),
            };
            for (j, url) in r.non_resource_urls.iter().enumerate() {
                if url == "*" {
                    continue;
                }
                let field = format!("{}[{j}]", at("nonResourceURLs"));
                let value = Value::String(url.clone());
                if !url.starts_with('/') {
                    errors.push(Cause::invalid(
                        field.clone(),
                        &value,
                        "non-resource URL rules must begin with a '/' character",
                    ));
                }
                if !url.is_empty() && url[..url.len() - 1].contains('*') {
                    errors.push(Cause::invalid(
                        field,
                        &value,
                        "non-resource URL wildcards '*' must be the final character of the rule",
                    ));
                }
            }
            for gr in &r.resources {
                if !gr.group.is_empty() && !crate::validation::is_dns1123_subdomain(&gr.group) {
                    let detail = if gr.group.len() > 253 {
                        "must be no more than 253 characters"
                    } else {
                        crate::validation::DNS1123_SUBDOMAIN_MSG
                    };
                    errors.push(Cause::invalid(
                        at("resources.group"),
                        &Value::String(gr.group.clone()),
                        detail,
                    ));
                }
                if !gr.resource_names.is_empty() && gr.resources.is_empty() {
                    errors.push(invalid_list(
                        at("resources.resourceNames"),
                        &gr.resource_names,
                        "using resourceNames requires at least one resource",
                    ));
                }
            }
            let rule_omits = stages(&r.omit_stages, &at("omitStages"), &mut errors);
            if !r.non_resource_urls.is_empty()
                && (!r.resources.is_empty() || !r.namespaces.is_empty())
            {
                errors.push(invalid_list(
                    at("nonResourceURLs"),
                    &r.non_resource_urls,
                    "rules cannot apply to both regular resources and non-resource URLs",
                ));
            }
            rules.push(Rule {
                level,
                users: r.users,
                user_groups: r.user_groups,
                verbs: r.verbs,
                resources: r
                    .resources
                    .into_iter()
                    .map(|g| GroupResources {
                        group: g.group,
                        resources: g.resources,
                        resource_names: g.resource_names,
                    })
                    .collect(),
                namespaces: r.namespaces,
                non_resource_urls: r.non_resource_urls,
                omit_stages: rule_omits.union(omit_stages),
                omit_managed_fields: r.omit_managed_fields,
            });
        }
        match errors.len() {
            0 => Ok(Policy {
                rules,
                omit_stages,
                omit_managed_fields: self.omit_managed_fields,
            }),
            1 => Err(errors[0].text()),
            _ => Err(format!(
                "[{}]",
                errors
                    .iter()
                    .map(Cause::text)
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }
}

/// The fields of a policy that `audit.k8s.io/v1` does not have, by path
/// (`rules[0].resource`).
fn unknown_fields(v: &Value) -> Vec<String> {
    const POLICY: &[&str] = &[
        "apiVersion",
        "kind",
        "metadata",
        "rules",
        "omitStages",
        "omitManagedFields",
    ];
    const RULE: &[&str] = &[
        "level",
        "users",
        "userGroups",
        "verbs",
        "resources",
        "namespaces",
        "nonResourceURLs",
        "omitStages",
        "omitManagedFields",
    ];
    const GROUP: &[&str] = &["group", "resources", "resourceNames"];
    fn check(v: &Value, known: &[&str], at: &str, out: &mut Vec<String>) {
        if let Some(m) = v.as_object() {
            for k in m.keys().filter(|k| !known.contains(&k.as_str())) {
                out.push(if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                });
            }
        }
    }
    let mut out = Vec::new();
    check(v, POLICY, "", &mut out);
    for (i, r) in v
        .get("rules")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        check(r, RULE, &format!("rules[{i}]"), &mut out);
        for (j, g) in r
            .get("resources")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            check(g, GROUP, &format!("rules[{i}].resources[{j}]"), &mut out);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::authn::user;

    fn attrs<'a>(
        u: Option<&'a UserInfo>,
        verb: &'a str,
        group: &'a str,
        resource: &'a str,
        sub: &'a str,
        ns: &'a str,
        name: &'a str,
    ) -> Attributes<'a> {
        Attributes {
            user: u,
            verb,
            resource_request: true,
            api_group: group,
            resource,
            subresource: sub,
            namespace: ns,
            name,
            path: "",
        }
    }

    fn path<'a>(u: Option<&'a UserInfo>, verb: &'a str, p: &'a str) -> Attributes<'a> {
        Attributes {
            user: u,
            verb,
            resource_request: false,
            api_group: "",
            resource: "",
            subresource: "",
            namespace: "",
            name: "",
            path: p,
        }
    }

    const POLICY: &str = r#"
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: None
    users: ["system:kube-proxy"]
    verbs: ["watch"]
  - level: None
    nonResourceURLs: ["/healthz*", "/version"]
  - level: Metadata
    resources:
      - group: ""
        resources: ["secrets", "configmaps"]
  - level: RequestResponse
    userGroups: ["dev"]
    resources:
      - group: ""
        resources: ["pods/log", "*/status"]
      - group: "apps"
        resources: ["deployments/*"]
  - level: Request
    namespaces: ["kube-system"]
    omitStages: ["ResponseStarted"]
    omitManagedFields: true
  - level: RequestResponse
    resources:
      - group: ""
        resources: ["pods"]
        resourceNames: ["special"]
  - level: Metadata
    omitStages: ["Panic"]
"#;

    #[test]
    fn the_first_matching_rule_decides() {
        let p = Policy::parse(POLICY).unwrap();
        let proxy = user("system:kube-proxy", &["system:authenticated"]);
        let dev = user("alice", &["dev", "system:authenticated"]);
        let other = user("bob", &["system:authenticated"]);
        let level = |a: Attributes<'_>| p.evaluate(&a).level;

        // users + verbs: only the proxy's watches are not recorded.
        assert_eq!(
            level(attrs(Some(&proxy), "watch", "", "services", "", "", "")),
            Level::None
        );
        assert_eq!(
            level(attrs(Some(&proxy), "list", "", "services", "", "", "")),
            Level::Metadata
        );
        // A rule with users never matches a request nobody could be authenticated for.
        assert_eq!(
            level(attrs(None, "watch", "", "services", "", "", "")),
            Level::Metadata
        );
        // Non-resource URLs: exact and `*` suffix; never a resource request.
        assert_eq!(level(path(None, "get", "/healthz")), Level::None);
        assert_eq!(level(path(None, "get", "/healthz/etcd")), Level::None);
        assert_eq!(level(path(None, "get", "/version")), Level::None);
        assert_eq!(level(path(None, "get", "/versions")), Level::Metadata);
        // Secrets at Metadata whoever asks, before the dev rule.
        assert_eq!(
            level(attrs(Some(&dev), "get", "", "secrets", "", "default", "s")),
            Level::Metadata
        );
        // Subresources: exact `pods/log`, `*/status`, `deployments/*`; groups must match.
        assert_eq!(
            level(attrs(Some(&dev), "get", "", "pods", "log", "default", "p")),
            Level::RequestResponse
        );
        assert_eq!(
            level(attrs(Some(&dev), "update", "", "nodes", "status", "", "n")),
            Level::RequestResponse
        );
        assert_eq!(
            level(attrs(
                Some(&dev),
                "update",
                "apps",
                "deployments",
                "scale",
                "a",
                "d"
            )),
            Level::RequestResponse
        );
        assert_eq!(
            level(attrs(
                Some(&dev),
                "update",
                "",
                "deployments",
                "scale",
                "a",
                "d"
            )),
            Level::Metadata
        );
        // `pods/log` is not `pods`, and `*/status` does not match the object itself.
        assert_eq!(
            level(attrs(Some(&dev), "get", "", "pods", "", "default", "p")),
            Level::Metadata
        );
        assert_eq!(
            level(attrs(Some(&dev), "get", "", "nodes", "", "", "n")),
            Level::Metadata
        );
        // Not in group dev.
        assert_eq!(
            level(attrs(
                Some(&other),
                "get",
                "",
                "pods",
                "log",
                "default",
                "p"
            )),
            Level::Metadata
        );
        // Namespaces: resource requests only.
        let d = p.evaluate(&attrs(
            Some(&other),
            "get",
            "",
            "pods",
            "",
            "kube-system",
            "p",
        ));
        assert_eq!(d.level, Level::Request);
        assert!(d.omit_managed_fields);
        assert!(d.omit_stages.contains(Stage::ResponseStarted));
        assert!(
            d.omit_stages.contains(Stage::RequestReceived),
            "the policy's own"
        );
        assert!(!d.omit_stages.contains(Stage::Panic));
        // Resource names.
        assert_eq!(
            level(attrs(
                Some(&other),
                "get",
                "",
                "pods",
                "",
                "default",
                "special"
            )),
            Level::RequestResponse
        );
        assert_eq!(
            level(attrs(Some(&other), "list", "", "pods", "", "default", "")),
            Level::Metadata
        );
        let d = p.evaluate(&path(Some(&other), "get", "/openapi/v2"));
        assert_eq!(d.level, Level::Metadata);
        assert!(d.omit_stages.contains(Stage::Panic));
        assert!(!d.omit_managed_fields);
    }

    #[test]
    fn no_matching_rule_means_none() {
        let p = Policy::parse(
            r#"{"apiVersion":"audit.k8s.io/v1","kind":"Policy","omitStages":["Panic"],
                "rules":[{"level":"Metadata","verbs":["create"]}]}"#,
        )
        .unwrap();
        let d = p.evaluate(&attrs(None, "get", "", "pods", "", "", ""));
        assert_eq!(d.level, Level::None);
        assert!(d.omit_stages.contains(Stage::Panic));
        assert_eq!(
            p.evaluate(&attrs(None, "create", "", "pods", "", "", ""))
                .level,
            Level::Metadata
        );
    }

    #[test]
    fn wildcards_in_resources_and_paths() {
        assert!(resource_matches("*", "pods", "log"));
        assert!(resource_matches("pods", "pods", ""));
        assert!(!resource_matches("pods", "pods", "log"));
        assert!(resource_matches("pods/log", "pods", "log"));
        assert!(!resource_matches("pods/log", "pods", ""));
        assert!(resource_matches("*/log", "pods", "log"));
        assert!(!resource_matches("*/log", "pods", ""));
        assert!(resource_matches("pods/*", "pods", "exec"));
        assert!(resource_matches("pods/*", "pods", ""));
        assert!(!resource_matches("pods/*", "nodes", "status"));
        assert!(path_matches("/api", "*"));
        assert!(path_matches("/apis/apps", "/apis*"));
        assert!(path_matches("/apis", "/apis*"));
        assert!(!path_matches("/api", "/apis*"));
        assert!(!path_matches("/metrics", "/healthz"));
    }

    fn refused(text: &str) -> String {
        Policy::parse(text).unwrap_err()
    }

    #[test]
    fn bad_policies_are_refused_with_kubes_messages() {
        let head = "apiVersion: audit.k8s.io/v1\nkind: Policy\n";
        assert_eq!(
            refused(&format!("{head}rules:\n- level: Everything\n")),
            "rules[0].level: Unsupported value: \"Everything\": supported values: \"None\", \"Metadata\", \"Request\", \"RequestResponse\""
        );
        assert_eq!(
            refused(&format!("{head}rules:\n- users: [a]\n")),
            "rules[0].level: Required value"
        );
        assert_eq!(
            refused(&format!(
                "{head}rules:\n- level: None\n  nonResourceURLs: [healthz, /a*b]\n"
            )),
            "[rules[0].nonResourceURLs[0]: Invalid value: \"healthz\": non-resource URL rules must begin with a '/' character, rules[0].nonResourceURLs[1]: Invalid value: \"/a*b\": non-resource URL wildcards '*' must be the final character of the rule]"
        );
        assert_eq!(
            refused(&format!(
                "{head}rules:\n- level: None\n  namespaces: [a]\n  nonResourceURLs: [/x]\n"
            )),
            "rules[0].nonResourceURLs: Invalid value: []string{\"/x\"}: rules cannot apply to both regular resources and non-resource URLs"
        );
        assert_eq!(
            refused(&format!(
                "{head}rules:\n- level: None\n  resources: [{{group: rbac.authorization.k8s.io/v1}}]\n"
            )),
            format!(
                "rules[0].resources.group: Invalid value: \"rbac.authorization.k8s.io/v1\": {}",
                crate::validation::DNS1123_SUBDOMAIN_MSG
            )
        );
        assert_eq!(
            refused(&format!(
                "{head}rules:\n- level: None\n  resources: [{{resourceNames: [x]}}]\n"
            )),
            "rules[0].resources.resourceNames: Invalid value: []string{\"x\"}: using resourceNames requires at least one resource"
        );
        assert_eq!(
            refused(&format!(
                "{head}omitStages: [Done]\nrules:\n- level: None\n  omitStages: [RequestReceived, Later]\n"
            )),
            "[omitStages[0]: Invalid value: \"Done\": allowed stages are RequestReceived,ResponseStarted,ResponseComplete,Panic, rules[0].omitStages[1]: Invalid value: \"Later\": allowed stages are RequestReceived,ResponseStarted,ResponseComplete,Panic]"
        );
        assert_eq!(refused(head), "loaded illegal policy with 0 rules");
        assert_eq!(
            refused("kind: Policy\nrules: [{level: None}]\n"),
            "failed decoding: Object 'apiVersion' is missing"
        );
        assert_eq!(
            refused("apiVersion: audit.k8s.io/v1\nrules: [{level: None}]\n"),
            "failed decoding: Object 'Kind' is missing"
        );
        assert!(refused(
            "apiVersion: audit.k8s.io/v1beta1\nkind: Policy\nrules: [{level: None}]\n"
        )
        .contains("no kind \"Policy\" is registered for version \"audit.k8s.io/v1beta1\""));
        assert!(refused("{{{").starts_with("failed decoding: "));
        assert!(refused("- a\n- b\n").starts_with("failed decoding: "));
        assert!(
            refused(&format!("{head}rules:\n- level: None\n  users: alice\n"))
                .starts_with("failed decoding: ")
        );
    }

    #[test]
    fn unknown_fields_are_found_but_not_fatal() {
        let text = "apiVersion: audit.k8s.io/v1\nkind: Policy\nextra: 1\nrules:\n- level: None\n  resource: [pods]\n  resources: [{group: '', resource: [x]}]\n";
        let v: Value = serde_norway::from_str(text).unwrap();
        assert_eq!(
            unknown_fields(&v),
            vec![
                "extra",
                "rules[0].resource",
                "rules[0].resources[0].resource"
            ]
        );
        assert_eq!(Policy::parse(text).unwrap().rules.len(), 1);
    }

    proptest::proptest! {
        #[test]
        fn any_text_parses_or_is_refused(text in ".{0,200}") {
            let _ = Policy::parse(&text);
        }
    }
}
