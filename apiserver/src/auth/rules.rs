//! One RBAC rule, compiled once from its `PolicyRule`, and whether it allows a request —
//! Kubernetes' `RuleAllows`: verbs, API groups, `resource/subresource` (with `*` and `*/sub`
//! forms), resource names, and non-resource URLs with a trailing `*`.

use k8s_openapi::api::rbac::v1::PolicyRule;

use crate::auth::Attributes;

/// A rule ready to match.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rule {
    /// Verbs (`*`: all).
    pub verbs: Vec<String>,
    /// API groups (`*`: all).
    pub api_groups: Vec<String>,
    /// Resources, possibly `res/sub`, `*`, `*/sub`.
    pub resources: Vec<String>,
    /// Object names (empty: all).
    pub resource_names: Vec<String>,
    /// Paths (`/healthz`, `/apis/*`).
    pub non_resource_urls: Vec<String>,
}

impl From<&PolicyRule> for Rule {
    fn from(r: &PolicyRule) -> Self {
        let v = |o: &Option<Vec<String>>| o.clone().unwrap_or_default();
        Rule {
            verbs: r.verbs.clone(),
            api_groups: v(&r.api_groups),
            resources: v(&r.resources),
            resource_names: v(&r.resource_names),
            non_resource_urls: v(&r.non_resource_urls),
        }
    }
}

impl From<&Rule> for PolicyRule {
    fn from(r: &Rule) -> Self {
        let o = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
        PolicyRule {
            verbs: r.verbs.clone(),
            api_groups: o(&r.api_groups),
            resources: o(&r.resources),
            resource_names: o(&r.resource_names),
            non_resource_urls: o(&r.non_resource_urls),
        }
    }
}

fn has(list: &[String], want: &str) -> bool {
    list.iter().any(|x| x == "*" || x == want)
}

impl Rule {
    /// A resource rule (bootstrap policy shorthand).
    pub fn resources(verbs: &[&str], groups: &[&str], resources: &[&str]) -> Self {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect();
        Rule {
            verbs: s(verbs),
            api_groups: s(groups),
            resources: s(resources),
            ..Rule::default()
        }
    }

    /// A non-resource rule (bootstrap policy shorthand).
    pub fn urls(verbs: &[&str], urls: &[&str]) -> Self {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect();
        Rule {
            verbs: s(verbs),
            non_resource_urls: s(urls),
            ..Rule::default()
        }
    }

    /// The same rule limited to some object names.
    pub fn names(mut self, names: &[&str]) -> Self {
        self.resource_names = names.iter().map(|x| x.to_string()).collect();
        self
    }

    /// Whether the rule allows the request.
    pub fn allows(&self, a: &Attributes<'_>) -> bool {
        if !has(&self.verbs, a.verb) {
            return false;
        }
        if !a.resource_request {
            return self.url_matches(a.path);
        }
        has(&self.api_groups, a.api_group)
            && self.resource_matches(a.resource, a.subresource)
            && (self.resource_names.is_empty() || self.resource_names.iter().any(|n| n == a.name))
    }

    fn resource_matches(&self, resource: &str, sub: &str) -> bool {
        self.resources.iter().any(|r| {
            if r == "*" {
                return true;
            }
            if sub.is_empty() {
                return r == resource;
            }
            // `pods/log` names the resource and subresource; `*/scale` any resource's scale.
            match r.split_once('/') {
                Some((res, s)) => s == sub && (res == resource || res == "*"),
                None => false,
            }
        })
    }

    fn url_matches(&self, path: &str) -> bool {
        self.non_resource_urls.iter().any(|u| {
            u == "*"
                || u == path
                || u.strip_suffix('*')
                    .is_some_and(|prefix| path.starts_with(prefix))
        })
    }

    /// Whether this rule grants everything `other` grants (for escalation checks: every
    /// combination `other` allows is allowed by this rule).
    pub fn covers(&self, other: &Rule) -> bool {
        let all = |mine: &[String], theirs: &[String]| {
            mine.iter().any(|m| m == "*") || theirs.iter().all(|t| mine.contains(t))
        };
        if !all(&self.verbs, &other.verbs) {
            return false;
        }
        if !other.non_resource_urls.is_empty() {
            return other.non_resource_urls.iter().all(|u| {
                self.non_resource_urls.iter().any(|m| {
                    m == "*" || m == u || m.strip_suffix('*').is_some_and(|p| u.starts_with(p))
                })
            }) && other.resources.is_empty();
        }
        if !all(&self.api_groups, &other.api_groups) {
            return false;
        }
        let resources_ok = other.resources.iter().all(|r| {
            self.resources.iter().any(|m| {
                m == "*"
                    || m == r
                    || match (m.split_once('/'), r.split_once('/')) {
                        (Some(("*", ms)), Some((_, rs))) => ms == rs,
                        _ => false,
                    }
            })
        });
        if !resources_ok {
            return false;
        }
        // A rule limited to names covers only rules limited to a subset of them.
        self.resource_names.is_empty()
            || (!other.resource_names.is_empty()
                && other
                    .resource_names
                    .iter()
                    .all(|n| self.resource_names.contains(n)))
    }

    /// The rule split into one rule per verb, group, resource and name: the atoms Kubernetes'
    /// escalation check compares.
    pub fn breakdown(&self) -> Vec<Rule> {
        let mut out = Vec::new();
        let one = |s: &String| vec![s.clone()];
        for verb in &self.verbs {
            for url in &self.non_resource_urls {
                out.push(Rule {
                    verbs: one(verb),
                    non_resource_urls: one(url),
                    ..Rule::default()
                });
            }
            for group in &self.api_groups {
                for res in &self.resources {
                    if self.resource_names.is_empty() {
                        out.push(Rule {
                            verbs: one(verb),
                            api_groups: one(group),
                            resources: one(res),
                            ..Rule::default()
                        });
                    }
                    for name in &self.resource_names {
                        out.push(Rule {
                            verbs: one(verb),
                            api_groups: one(group),
                            resources: one(res),
                            resource_names: one(name),
                            ..Rule::default()
                        });
                    }
                }
            }
        }
        out
    }
}

/// Whether `owner`'s rules cover every rule of `wanted`; returns the rules not covered.
pub fn uncovered(owner: &[Rule], wanted: &[Rule]) -> Vec<Rule> {
    wanted
        .iter()
        .flat_map(Rule::breakdown)
        .filter(|atom| !owner.iter().any(|o| o.covers(atom)))
        .collect()
}

/// Rules that differ only in their verbs, merged (as Kubernetes compacts the rules an
/// escalation error lists).
pub fn compact(rules: Vec<Rule>) -> Vec<Rule> {
    let mut out: Vec<Rule> = Vec::new();
    for r in rules {
        match out.iter_mut().find(|o| {
            o.api_groups == r.api_groups
                && o.resources == r.resources
                && o.resource_names == r.resource_names
                && o.non_resource_urls == r.non_resource_urls
        }) {
            Some(o) => {
                for v in r.verbs {
                    if !o.verbs.contains(&v) {
                        o.verbs.push(v);
                    }
                }
            }
            None => out.push(r),
        }
    }
    out
}

/// A rule as Kubernetes prints it in escalation errors:
/// `{APIGroups:["apps"], Resources:["deployments"], Verbs:["get"]}`.
pub fn describe(r: &Rule) -> String {
    let q = |v: &[String]| {
        v.iter()
            .map(|s| format!("{s:?}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut parts = Vec::new();
    if !r.api_groups.is_empty() {
        parts.push(format!("APIGroups:[{}]", q(&r.api_groups)));
    }
    if !r.resources.is_empty() {
        parts.push(format!("Resources:[{}]", q(&r.resources)));
    }
    if !r.non_resource_urls.is_empty() {
        parts.push(format!("NonResourceURLs:[{}]", q(&r.non_resource_urls)));
    }
    if !r.resource_names.is_empty() {
        parts.push(format!("ResourceNames:[{}]", q(&r.resource_names)));
    }
    parts.push(format!("Verbs:[{}]", q(&r.verbs)));
    format!("{{{}}}", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::UserInfo;

    fn attrs<'a>(
        user: &'a UserInfo,
        verb: &'a str,
        group: &'a str,
        res: &'a str,
        sub: &'a str,
        name: &'a str,
    ) -> Attributes<'a> {
        Attributes {
            user,
            verb,
            resource_request: true,
            api_group: group,
            resource: res,
            subresource: sub,
            namespace: "default",
            name,
            path: "",
            field_selector: "",
        }
    }

    #[test]
    fn verbs_groups_resources_and_names() {
        let u = UserInfo::default();
        let r = Rule::resources(&["get", "list"], &[""], &["pods", "pods/log"]);
        assert!(r.allows(&attrs(&u, "get", "", "pods", "", "x")));
        assert!(r.allows(&attrs(&u, "list", "", "pods", "", "")));
        assert!(!r.allows(&attrs(&u, "delete", "", "pods", "", "x")));
        assert!(!r.allows(&attrs(&u, "get", "apps", "pods", "", "x")));
        assert!(r.allows(&attrs(&u, "get", "", "pods", "log", "x")));
        assert!(!r.allows(&attrs(&u, "get", "", "pods", "exec", "x")));
        assert!(!r.allows(&attrs(&u, "get", "", "secrets", "", "x")));
        let named = r.clone().names(&["a"]);
        assert!(named.allows(&attrs(&u, "get", "", "pods", "", "a")));
        assert!(!named.allows(&attrs(&u, "get", "", "pods", "", "b")));
        assert!(!named.allows(&attrs(&u, "list", "", "pods", "", "")));
        let scale = Rule::resources(&["*"], &["*"], &["*/scale"]);
        assert!(scale.allows(&attrs(&u, "update", "apps", "deployments", "scale", "d")));
        assert!(!scale.allows(&attrs(&u, "update", "apps", "deployments", "", "d")));
        let all = Rule::resources(&["*"], &["*"], &["*"]);
        assert!(all.allows(&attrs(&u, "escalate", "x", "y", "z", "n")));
    }

    #[test]
    fn non_resource_urls() {
        let u = UserInfo::default();
        let r = Rule::urls(&["get"], &["/healthz", "/healthz/*", "/version"]);
        let mut a = attrs(&u, "get", "", "", "", "");
        a.resource_request = false;
        for (p, ok) in [
            ("/healthz", true),
            ("/healthz/etcd", true),
            ("/version", true),
            ("/version/x", false),
            ("/api", false),
        ] {
            a.path = p;
            assert_eq!(r.allows(&a), ok, "{p}");
        }
        a.verb = "post";
        a.path = "/healthz";
        assert!(!r.allows(&a));
        // A resource rule never matches a path.
        let res = Rule::resources(&["*"], &["*"], &["*"]);
        a.verb = "get";
        assert!(!res.allows(&a));
    }

    #[test]
    fn coverage_for_escalation() {
        let view = Rule::resources(&["get", "list", "watch"], &[""], &["pods"]);
        let want = vec![Rule::resources(&["get"], &[""], &["pods"])];
        assert!(uncovered(std::slice::from_ref(&view), &want).is_empty());
        let want = vec![Rule::resources(
            &["get", "delete"],
            &[""],
            &["pods", "secrets"],
        )];
        let missing = uncovered(std::slice::from_ref(&view), &want);
        assert_eq!(missing.len(), 3);
        let c = compact(missing);
        assert_eq!(
            c.iter().map(describe).collect::<Vec<_>>(),
            vec![
                r#"{APIGroups:[""], Resources:["secrets"], Verbs:["get" "delete"]}"#,
                r#"{APIGroups:[""], Resources:["pods"], Verbs:["delete"]}"#,
            ]
        );
        let star = Rule::resources(&["*"], &["*"], &["*"]);
        assert!(uncovered(std::slice::from_ref(&star), &want).is_empty());
        let scale = Rule::resources(&["get"], &["apps"], &["*/scale"]);
        let want = vec![Rule::resources(&["get"], &["apps"], &["deployments/scale"])];
        assert!(uncovered(&[scale], &want).is_empty());
        let named = Rule::resources(&["get"], &[""], &["pods"]).names(&["a"]);
        let want_all = vec![Rule::resources(&["get"], &[""], &["pods"])];
        assert_eq!(uncovered(std::slice::from_ref(&named), &want_all).len(), 1);
        let want_a = vec![Rule::resources(&["get"], &[""], &["pods"]).names(&["a"])];
        assert!(uncovered(&[named], &want_a).is_empty());
        let urls = Rule::urls(&["get"], &["/healthz/*"]);
        assert!(uncovered(&[urls], &[Rule::urls(&["get"], &["/healthz/etcd"])]).is_empty());
        assert!(uncovered(&[star], &[Rule::urls(&["get"], &["/x"])]).len() == 1);
    }
}
