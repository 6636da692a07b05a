//! Who a request is ([`authn`]: client certificates, bearer tokens) and whether it may do
//! what it asks (the one [`Authorizer`] seam).
//!
//! Handlers never decide access themselves: every request is authenticated into a [`UserInfo`]
//! and then put to the configured [`Authorizer`] with its [`Attributes`].

pub mod authn;
pub mod impersonation;
pub mod rules;
pub mod tokenfile;

use std::collections::BTreeMap;

pub use authn::{Authenticator, TokenAuthenticator};
pub use tokenfile::TokenFileError;

use crate::error::Error;

/// Who is making a request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserInfo {
    /// User name (a client certificate's CN).
    pub name: String,
    /// User id, if known.
    pub uid: String,
    /// Groups (a client certificate's O values).
    pub groups: Vec<String>,
    /// Extra attributes (a ServiceAccount token's pod name and uid, ...).
    pub extra: BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    /// The API server itself, for the writes it makes on its own (bootstrap, namespace
    /// finalization, orphaning), as kube-apiserver's loopback identity.
    pub fn apiserver() -> Self {
        UserInfo {
            name: "system:apiserver".into(),
            uid: String::new(),
            groups: vec!["system:masters".into(), "system:authenticated".into()],
            extra: BTreeMap::new(),
        }
    }
}

/// The user a client certificate names: CN is the user, each O a group.
pub fn user_from_cert(der: &[u8]) -> Option<UserInfo> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let name = subject
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(String::from))
        .collect();
    Some(UserInfo {
        name,
        uid: String::new(),
        groups,
        extra: BTreeMap::new(),
    })
}

/// What a request wants to do, as an authorizer sees it.
#[derive(Debug, Clone)]
pub struct Attributes<'a> {
    /// The user.
    pub user: &'a UserInfo,
    /// The Kubernetes verb (`get`, `list`, `watch`, `create`, ...), or the lowercase HTTP
    /// method for non-resource paths.
    pub verb: &'a str,
    /// Whether this is a resource request (else a path like `/healthz`).
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
    /// The request path.
    pub path: &'a str,
    /// The field selector of a list or watch, as sent (`spec.nodeName=n1`), or "".
    pub field_selector: &'a str,
}

impl<'a> Attributes<'a> {
    /// A check that `user` may `verb` one object (or, `name` empty, any) of `group`'s
    /// `resource` in `namespace` — what the server asks on its own behalf (escalation,
    /// certificate approval), not a request's own attributes.
    pub fn resource(
        user: &'a UserInfo,
        verb: &'a str,
        group: &'a str,
        resource: &'a str,
        namespace: &'a str,
        name: &'a str,
    ) -> Self {
        Attributes {
            user,
            verb,
            resource_request: true,
            api_group: group,
            resource,
            subresource: "",
            namespace,
            name,
            path: "",
            field_selector: "",
        }
    }
}

/// The value an exact requirement `field=value` (or `field==value`) of a field selector pins,
/// if it has one: what authorizers read a list's scope from (a kubelet lists its pods with
/// `spec.nodeName=NODE`, watches one Secret with `metadata.name=NAME`).
pub fn field_requirement<'s>(selector: &'s str, field: &str) -> Option<&'s str> {
    selector.split(',').find_map(|part| {
        if part.contains("!=") {
            return None;
        }
        let (f, v) = part.split_once("==").or_else(|| part.split_once('='))?;
        (f.trim() == field).then(|| v.trim())
    })
}

/// An authorizer's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Allowed.
    Allow,
    /// Denied, with the reason: no later authorizer is asked.
    Deny(String),
    /// Neither allowed nor denied, with the reason (may be empty): the next authorizer is
    /// asked, and a request no authorizer allows is refused.
    NoOpinion(String),
}

/// What a user may do in a namespace, as a SelfSubjectRulesReview reports it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rules {
    /// Rules on resources.
    pub resource: Vec<k8s_openapi::api::authorization::v1::ResourceRule>,
    /// Rules on paths that are not resources.
    pub non_resource: Vec<k8s_openapi::api::authorization::v1::NonResourceRule>,
    /// Whether the list may miss rules (an authorizer that cannot list them).
    pub incomplete: bool,
    /// Why the list may be incomplete.
    pub evaluation_error: String,
}

/// Decides whether a request may proceed. The only place access is decided.
pub trait Authorizer: Send + Sync {
    /// The decision for one request.
    fn authorize(&self, attrs: &Attributes<'_>) -> Decision;

    /// The decision with the reason the audit log records as `authorization.k8s.io/reason`:
    /// why it was allowed (RBAC names the binding), else why not. Asked instead of
    /// [`Authorizer::authorize`] only for requests being audited; the answer is the same.
    fn authorize_with_reason(&self, attrs: &Attributes<'_>) -> (Decision, String) {
        let d = self.authorize(attrs);
        let why = match &d {
            Decision::Allow => String::new(),
            Decision::Deny(w) | Decision::NoOpinion(w) => w.clone(),
        };
        (d, why)
    }

    /// The rules `user` has in `namespace` (for `kubectl auth can-i --list`); an authorizer
    /// that cannot list them says the list is incomplete.
    fn rules(&self, _user: &UserInfo, _namespace: &str) -> Rules {
        Rules {
            incomplete: true,
            ..Rules::default()
        }
    }
}

/// Authorizers asked in turn (`--authorization-mode=Node,RBAC`): the first to allow or deny
/// decides; when none does, the request is refused with the reasons given.
#[derive(Default)]
pub struct Union(pub Vec<Box<dyn Authorizer>>);

impl Authorizer for Union {
    fn authorize(&self, attrs: &Attributes<'_>) -> Decision {
        let mut reasons = Vec::new();
        for a in &self.0 {
            match a.authorize(attrs) {
                Decision::NoOpinion(why) => {
                    if !why.is_empty() {
                        reasons.push(why);
                    }
                }
                d => return d,
            }
        }
        Decision::NoOpinion(reasons.join(", "))
    }

    fn authorize_with_reason(&self, attrs: &Attributes<'_>) -> (Decision, String) {
        let mut reasons = Vec::new();
        for a in &self.0 {
            match a.authorize_with_reason(attrs) {
                (Decision::NoOpinion(why), _) => {
                    if !why.is_empty() {
                        reasons.push(why);
                    }
                }
                decided => return decided,
            }
        }
        let why = reasons.join(", ");
        (Decision::NoOpinion(why.clone()), why)
    }

    fn rules(&self, user: &UserInfo, namespace: &str) -> Rules {
        let mut out = Rules::default();
        let mut errors = Vec::new();
        for a in &self.0 {
            let r = a.rules(user, namespace);
            out.resource.extend(r.resource);
            out.non_resource.extend(r.non_resource);
            out.incomplete |= r.incomplete;
            if !r.evaluation_error.is_empty() {
                errors.push(r.evaluation_error);
            }
        }
        out.evaluation_error = errors.join("; ");
        out
    }
}

/// Allows every authenticated request.
#[derive(Debug, Default, Clone, Copy)]
pub struct AllowAll;

impl Authorizer for AllowAll {
    fn authorize(&self, _attrs: &Attributes<'_>) -> Decision {
        Decision::Allow
    }
}

/// The 403 for a denied request, worded as kube-apiserver words it:
/// `pods is forbidden: User "alice" cannot list resource "pods" in API group "" in the
/// namespace "default"` (`forbidden: User "x" cannot get path "/api"` for a path), with the
/// authorizers' reasons after a colon when they gave any.
pub fn forbidden(attrs: &Attributes<'_>, why: &str) -> Error {
    let user = &attrs.user.name;
    let mut msg = if attrs.resource_request {
        let resource = if attrs.subresource.is_empty() {
            attrs.resource.to_string()
        } else {
            format!("{}/{}", attrs.resource, attrs.subresource)
        };
        let scope = if attrs.namespace.is_empty() {
            "at the cluster scope".to_string()
        } else {
            format!("in the namespace \"{}\"", attrs.namespace)
        };
        format!(
            "User \"{user}\" cannot {} resource \"{resource}\" in API group \"{}\" {scope}",
            attrs.verb, attrs.api_group
        )
    } else {
        format!(
            "User \"{user}\" cannot {} path \"{}\"",
            attrs.verb, attrs.path
        )
    };
    if !why.is_empty() {
        msg.push_str(": ");
        msg.push_str(why);
    }
    if !attrs.resource_request {
        return Error::forbidden(format!("forbidden: {msg}"));
    }
    let group_resource = if attrs.api_group.is_empty() {
        attrs.resource.to_string()
    } else {
        format!("{}.{}", attrs.resource, attrs.api_group)
    };
    Error::forbidden_object(&group_resource, attrs.name, &msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Says(Decision);

    impl Authorizer for Says {
        fn authorize(&self, _: &Attributes<'_>) -> Decision {
            self.0.clone()
        }
    }

    #[test]
    fn the_first_authorizer_with_an_opinion_decides() {
        let user = UserInfo::default();
        let attrs = Attributes {
            user: &user,
            verb: "get",
            resource_request: true,
            api_group: "",
            resource: "pods",
            subresource: "",
            namespace: "default",
            name: "",
            path: "/api/v1/namespaces/default/pods",
            field_selector: "",
        };
        let no = |w: &str| Box::new(Says(Decision::NoOpinion(w.into()))) as Box<dyn Authorizer>;
        let u = Union(vec![no("a"), Box::new(Says(Decision::Allow)), no("b")]);
        assert_eq!(u.authorize(&attrs), Decision::Allow);
        let u = Union(vec![
            no("a"),
            Box::new(Says(Decision::Deny("x".into()))),
            Box::new(Says(Decision::Allow)),
        ]);
        assert_eq!(u.authorize(&attrs), Decision::Deny("x".into()));
        let u = Union(vec![no("a"), no(""), no("b")]);
        assert_eq!(u.authorize(&attrs), Decision::NoOpinion("a, b".into()));
    }

    #[test]
    fn forbidden_reads_as_kube_apiserver() {
        let alice = authn::user("alice", &[]);
        let mut a = Attributes {
            user: &alice,
            verb: "list",
            resource_request: true,
            api_group: "",
            resource: "pods",
            subresource: "",
            namespace: "default",
            name: "",
            path: "/api/v1/namespaces/default/pods",
            field_selector: "",
        };
        let msg = |a: &Attributes<'_>| forbidden(a, "").status()["message"].clone();
        assert_eq!(
            msg(&a),
            "pods is forbidden: User \"alice\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\""
        );
        a.verb = "get";
        a.name = "web";
        a.subresource = "log";
        assert_eq!(
            msg(&a),
            "pods \"web\" is forbidden: User \"alice\" cannot get resource \"pods/log\" in API group \"\" in the namespace \"default\""
        );
        a.api_group = "apps";
        a.resource = "deployments";
        a.subresource = "";
        a.namespace = "";
        a.name = "";
        assert_eq!(
            msg(&a),
            "deployments.apps is forbidden: User \"alice\" cannot get resource \"deployments\" in API group \"apps\" at the cluster scope"
        );
        a.resource_request = false;
        a.path = "/api";
        assert_eq!(
            msg(&a),
            "forbidden: User \"alice\" cannot get path \"/api\""
        );
    }

    #[test]
    fn field_requirements_are_read_from_selectors() {
        let sel = "metadata.name=s1, spec.nodeName==n1,status.phase!=Running";
        assert_eq!(field_requirement(sel, "metadata.name"), Some("s1"));
        assert_eq!(field_requirement(sel, "spec.nodeName"), Some("n1"));
        assert_eq!(field_requirement(sel, "status.phase"), None);
        assert_eq!(field_requirement("", "metadata.name"), None);
        assert_eq!(field_requirement("garbage", "metadata.name"), None);
    }
}
