//! Create-only resources that are never stored: the access reviews of
//! `authorization.k8s.io/v1` (SubjectAccessReview, SelfSubjectAccessReview,
//! LocalSubjectAccessReview, SelfSubjectRulesReview) and the reviews of
//! `authentication.k8s.io/v1` (SelfSubjectReview, TokenReview). A client posts a question and
//! gets the object back with its `status` filled in; `kubectl auth can-i` and
//! `kubectl auth whoami` are built on them.

use std::collections::BTreeMap;

use k8s_openapi::api::authentication::v1::{
    SelfSubjectReview, SelfSubjectReviewStatus, TokenReview, TokenReviewStatus,
    UserInfo as ApiUserInfo,
};
use k8s_openapi::api::authorization::v1::{
    LocalSubjectAccessReview, NonResourceAttributes, ResourceAttributes, SelfSubjectAccessReview,
    SelfSubjectRulesReview, SubjectAccessReview, SubjectAccessReviewSpec,
    SubjectAccessReviewStatus, SubjectRulesReviewStatus,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

use super::{col, ResourceInfo, Shared, Typed};
use crate::auth::{Attributes, Authenticator, Authorizer, Decision, UserInfo};
use crate::error::{Cause, Error, Result};

/// What a create-only resource's handler may use.
pub struct Context<'a> {
    /// Who asks.
    pub user: &'a UserInfo,
    /// The server's authorizer.
    pub authz: &'a dyn Authorizer,
    /// The server's authenticator.
    pub authn: &'a Authenticator,
}

/// A resource served only by `create`, answered without storing anything.
pub trait CreateOnly: Send + Sync {
    /// The answer to a posted object (in `namespace` for a namespaced resource).
    fn create(&self, cx: &Context<'_>, namespace: Option<&str>, obj: Value) -> Result<Value>;
}

fn name_cells(o: &Value) -> Vec<Value> {
    vec![super::name(o)]
}

fn name_columns() -> Vec<super::Column> {
    vec![col("Name", "string", 0, "Name")]
}

// Never stored, so nothing of a strategy but decoding is used.
static SSAR: Typed<SelfSubjectAccessReview> = Typed::new(name_columns, name_cells);
static SAR: Typed<SubjectAccessReview> = Typed::new(name_columns, name_cells);
static LSAR: Typed<LocalSubjectAccessReview> = Typed::new(name_columns, name_cells);
static SSRR: Typed<SelfSubjectRulesReview> = Typed::new(name_columns, name_cells);
static SSR: Typed<SelfSubjectReview> = Typed::new(name_columns, name_cells);
static TR: Typed<TokenReview> = Typed::new(name_columns, name_cells);

/// Every create-only resource, as the server serves it.
pub fn served() -> Vec<ResourceInfo> {
    let authz = "authorization.k8s.io";
    let authn = "authentication.k8s.io";
    let mk = |group: &str,
              kind: &str,
              plural: &str,
              namespaced: bool,
              strategy: Shared<dyn super::Strategy>,
              handler: &'static dyn CreateOnly,
              schema: super::SchemaFn| {
        ResourceInfo::new(
            group,
            "v1",
            kind,
            plural,
            &kind.to_lowercase(),
            namespaced,
            strategy,
        )
        .with(|r| {
            r.create_only = Some(Shared::Static(handler));
            r.storage_version_hash = None;
            r.schema = Some(schema);
        })
    };
    vec![
        mk(
            authz,
            "SelfSubjectAccessReview",
            "selfsubjectaccessreviews",
            false,
            Shared::Static(&SSAR),
            &SelfAccess,
            super::schema_of::<SelfSubjectAccessReview>,
        ),
        mk(
            authz,
            "SubjectAccessReview",
            "subjectaccessreviews",
            false,
            Shared::Static(&SAR),
            &SubjectAccess,
            super::schema_of::<SubjectAccessReview>,
        ),
        mk(
            authz,
            "LocalSubjectAccessReview",
            "localsubjectaccessreviews",
            true,
            Shared::Static(&LSAR),
            &LocalAccess,
            super::schema_of::<LocalSubjectAccessReview>,
        ),
        mk(
            authz,
            "SelfSubjectRulesReview",
            "selfsubjectrulesreviews",
            false,
            Shared::Static(&SSRR),
            &SelfRules,
            super::schema_of::<SelfSubjectRulesReview>,
        ),
        mk(
            authn,
            "SelfSubjectReview",
            "selfsubjectreviews",
            false,
            Shared::Static(&SSR),
            &SelfReview,
            super::schema_of::<SelfSubjectReview>,
        ),
        mk(
            authn,
            "TokenReview",
            "tokenreviews",
            false,
            Shared::Static(&TR),
            &TokenReviewer,
            super::schema_of::<TokenReview>,
        ),
    ]
}

fn decode<T: DeserializeOwned>(obj: Value) -> Result<T> {
    serde_json::from_value(obj).map_err(|e| Error::bad_request(e.to_string()))
}

fn encode<T: Serialize>(kind: &str, group: &str, obj: &T) -> Result<Value> {
    let mut v = serde_json::to_value(obj).map_err(|e| Error::internal(e.to_string()))?;
    v["apiVersion"] = json!(format!("{group}/v1"));
    v["kind"] = json!(kind);
    if !v.get("metadata").is_some_and(Value::is_object) {
        v["metadata"] = json!({});
    }
    v["metadata"]["creationTimestamp"] = Value::Null;
    Ok(v)
}

fn invalid(kind: &str, group: &str, causes: Vec<Cause>) -> Result<()> {
    if causes.is_empty() {
        Ok(())
    } else {
        Err(Error::invalid(kind, group, "", causes))
    }
}

/// The attributes checks common to every access review (Kubernetes'
/// `ValidateSelfSubjectAccessReviewSpec`).
fn check_attributes(
    resource: Option<&ResourceAttributes>,
    non_resource: Option<&NonResourceAttributes>,
) -> Vec<Cause> {
    match (resource, non_resource) {
        (Some(_), Some(n)) => vec![Cause::invalid(
            "spec.nonResourceAttributes",
            &crate::validation::val(n),
            "cannot be specified in combination with resourceAttributes",
        )],
        (None, None) => vec![Cause::invalid(
            "spec.resourceAttributes",
            &Value::Null,
            "exactly one of nonResourceAttributes or resourceAttributes must be specified",
        )],
        _ => Vec::new(),
    }
}

/// Asks the authorizer about `user` doing what the attributes describe.
fn decide(
    authz: &dyn Authorizer,
    user: &UserInfo,
    resource: Option<&ResourceAttributes>,
    non_resource: Option<&NonResourceAttributes>,
) -> SubjectAccessReviewStatus {
    let o = |s: &Option<String>| s.clone().unwrap_or_default();
    let (verb, group, res, sub, ns, name, path, is_res) = match (resource, non_resource) {
        (Some(r), _) => (
            o(&r.verb),
            o(&r.group),
            o(&r.resource),
            o(&r.subresource),
            o(&r.namespace),
            o(&r.name),
            String::new(),
            true,
        ),
        (None, Some(n)) => (
            o(&n.verb),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            o(&n.path),
            false,
        ),
        (None, None) => Default::default(),
    };
    let attrs = Attributes {
        user,
        verb: &verb,
        resource_request: is_res,
        api_group: &group,
        resource: &res,
        subresource: &sub,
        namespace: &ns,
        name: &name,
        path: &path,
        field_selector: "",
    };
    match authz.authorize(&attrs) {
        Decision::Allow => SubjectAccessReviewStatus {
            allowed: true,
            ..Default::default()
        },
        Decision::Deny(why) => SubjectAccessReviewStatus {
            allowed: false,
            denied: Some(true),
            reason: Some(why).filter(|w| !w.is_empty()),
            ..Default::default()
        },
        Decision::NoOpinion(why) => SubjectAccessReviewStatus {
            allowed: false,
            reason: Some(why).filter(|w| !w.is_empty()),
            ..Default::default()
        },
    }
}

const AUTHZ: &str = "authorization.k8s.io";
const AUTHN: &str = "authentication.k8s.io";

struct SelfAccess;

impl CreateOnly for SelfAccess {
    fn create(&self, cx: &Context<'_>, _ns: Option<&str>, obj: Value) -> Result<Value> {
        let mut r: SelfSubjectAccessReview = decode(obj)?;
        let (res, non) = (
            r.spec.resource_attributes.as_ref(),
            r.spec.non_resource_attributes.as_ref(),
        );
        invalid("SelfSubjectAccessReview", AUTHZ, check_attributes(res, non))?;
        r.status = Some(decide(cx.authz, cx.user, res, non));
        encode("SelfSubjectAccessReview", AUTHZ, &r)
    }
}

/// The user a SubjectAccessReview asks about.
fn subject(spec: &SubjectAccessReviewSpec) -> UserInfo {
    UserInfo {
        name: spec.user.clone().unwrap_or_default(),
        uid: spec.uid.clone().unwrap_or_default(),
        groups: spec.groups.clone().unwrap_or_default(),
        extra: spec
            .extra
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect::<BTreeMap<_, _>>(),
    }
}

fn check_subject(spec: &SubjectAccessReviewSpec) -> Vec<Cause> {
    let mut out = check_attributes(
        spec.resource_attributes.as_ref(),
        spec.non_resource_attributes.as_ref(),
    );
    if spec.user.as_deref().unwrap_or("").is_empty()
        && spec.groups.as_ref().is_none_or(Vec::is_empty)
    {
        out.push(Cause::invalid(
            "spec.user",
            &json!(spec.user.clone().unwrap_or_default()),
            "at least one of user or group must be specified",
        ));
    }
    out
}

struct SubjectAccess;

impl CreateOnly for SubjectAccess {
    fn create(&self, cx: &Context<'_>, _ns: Option<&str>, obj: Value) -> Result<Value> {
        let mut r: SubjectAccessReview = decode(obj)?;
        invalid("SubjectAccessReview", AUTHZ, check_subject(&r.spec))?;
        r.status = Some(decide(
            cx.authz,
            &subject(&r.spec),
            r.spec.resource_attributes.as_ref(),
            r.spec.non_resource_attributes.as_ref(),
        ));
        encode("SubjectAccessReview", AUTHZ, &r)
    }
}

struct LocalAccess;

impl CreateOnly for LocalAccess {
    fn create(&self, cx: &Context<'_>, ns: Option<&str>, obj: Value) -> Result<Value> {
        let mut r: LocalSubjectAccessReview = decode(obj)?;
        let ns = ns.unwrap_or("");
        if ns.is_empty() {
            return Err(Error::bad_request("namespace is required on this type: "));
        }
        // As kube-apiserver's create handler: the object takes the request's namespace, and
        // may not name another.
        match r.metadata.namespace.as_deref() {
            None | Some("") => r.metadata.namespace = Some(ns.to_string()),
            Some(own) if own != ns => {
                return Err(Error::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ))
            }
            Some(_) => {}
        }
        invalid("LocalSubjectAccessReview", AUTHZ, check_local(&r))?;
        r.status = Some(decide(
            cx.authz,
            &subject(&r.spec),
            r.spec.resource_attributes.as_ref(),
            None,
        ));
        encode("LocalSubjectAccessReview", AUTHZ, &r)
    }
}

/// Kubernetes' `ValidateLocalSubjectAccessReview`: a SubjectAccessReview's checks, nothing
/// in `metadata` but the namespace, a question about that namespace alone, and no
/// non-resource question.
fn check_local(r: &LocalSubjectAccessReview) -> Vec<Cause> {
    let mut causes = check_subject(&r.spec);
    let mut rest = r.metadata.clone();
    rest.namespace = None;
    rest.managed_fields = None;
    if rest != Default::default() {
        causes.push(Cause::invalid(
            "metadata",
            &crate::validation::val(&r.metadata),
            "must be empty except for namespace",
        ));
    }
    if let Some(a) = &r.spec.resource_attributes {
        let asked = a.namespace.clone().unwrap_or_default();
        if Some(asked.as_str()) != r.metadata.namespace.as_deref() {
            causes.push(Cause::invalid(
                "spec.resourceAttributes.namespace",
                &json!(asked),
                "must match metadata.namespace",
            ));
        }
    }
    if let Some(n) = &r.spec.non_resource_attributes {
        causes.push(Cause::invalid(
            "spec.nonResourceAttributes",
            &crate::validation::val(n),
            "disallowed on this kind of request",
        ));
    }
    causes
}

struct SelfRules;

impl CreateOnly for SelfRules {
    fn create(&self, cx: &Context<'_>, _ns: Option<&str>, obj: Value) -> Result<Value> {
        let mut r: SelfSubjectRulesReview = decode(obj)?;
        let ns = r.spec.namespace.clone().unwrap_or_default();
        let rules = cx.authz.rules(cx.user, &ns);
        r.status = Some(SubjectRulesReviewStatus {
            resource_rules: rules.resource,
            non_resource_rules: rules.non_resource,
            incomplete: rules.incomplete,
            evaluation_error: Some(rules.evaluation_error).filter(|e| !e.is_empty()),
        });
        encode("SelfSubjectRulesReview", AUTHZ, &r)
    }
}

fn api_user(u: &UserInfo) -> ApiUserInfo {
    ApiUserInfo {
        username: Some(u.name.clone()),
        uid: Some(u.uid.clone()).filter(|x| !x.is_empty()),
        groups: Some(u.groups.clone()).filter(|g| !g.is_empty()),
        extra: Some(u.extra.clone().into_iter().collect())
            .filter(|e: &BTreeMap<_, _>| !e.is_empty()),
    }
}

struct SelfReview;

impl CreateOnly for SelfReview {
    fn create(&self, cx: &Context<'_>, _ns: Option<&str>, obj: Value) -> Result<Value> {
        let mut r: SelfSubjectReview = decode(obj)?;
        r.status = Some(SelfSubjectReviewStatus {
            user_info: Some(api_user(cx.user)),
        });
        encode("SelfSubjectReview", AUTHN, &r)
    }
}

struct TokenReviewer;

impl CreateOnly for TokenReviewer {
    fn create(&self, cx: &Context<'_>, _ns: Option<&str>, obj: Value) -> Result<Value> {
        let mut r: TokenReview = decode(obj)?;
        let token = r.spec.token.clone().unwrap_or_default();
        if token.is_empty() {
            return Err(Error::bad_request(
                "token is required for TokenReview in authentication",
            ));
        }
        let audiences = r.spec.audiences.clone().filter(|a| !a.is_empty());
        r.status = Some(
            match cx.authn.authenticate_token(&token, audiences.as_deref()) {
                Some(user) => TokenReviewStatus {
                    authenticated: Some(true),
                    user: Some(api_user(&user)),
                    // The audiences the token was found valid for: those asked for, else
                    // the API server's own, as kube-apiserver answers.
                    audiences: Some(
                        audiences
                            .clone()
                            .unwrap_or_else(|| cx.authn.api_audiences().to_vec()),
                    )
                    .filter(|a| !a.is_empty()),
                    error: None,
                },
                None => TokenReviewStatus {
                    authenticated: Some(false),
                    user: Some(ApiUserInfo::default()),
                    audiences: None,
                    error: Some("[invalid bearer token, token lookup failed]".into()),
                },
            },
        );
        encode("TokenReview", AUTHN, &r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lsar(v: Value) -> LocalSubjectAccessReview {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_local_review_asks_about_its_own_namespace_alone() {
        let fields = |r: &LocalSubjectAccessReview| -> Vec<String> {
            check_local(r).into_iter().map(|c| c.field).collect()
        };
        let ok = lsar(json!({"metadata": {"namespace": "a"}, "spec": {"user": "u",
            "resourceAttributes": {"namespace": "a", "verb": "get", "resource": "pods"}}}));
        assert!(fields(&ok).is_empty());
        let other = lsar(json!({"metadata": {"namespace": "a"}, "spec": {"user": "u",
            "resourceAttributes": {"namespace": "b", "verb": "get", "resource": "pods"}}}));
        assert_eq!(fields(&other), ["spec.resourceAttributes.namespace"]);
        let missing = lsar(json!({"metadata": {"namespace": "a"}, "spec": {"user": "u",
            "resourceAttributes": {"verb": "get", "resource": "pods"}}}));
        assert_eq!(fields(&missing), ["spec.resourceAttributes.namespace"]);
        let named = lsar(
            json!({"metadata": {"namespace": "a", "name": "x"}, "spec": {
            "groups": ["g"], "nonResourceAttributes": {"path": "/x", "verb": "get"}}}),
        );
        assert_eq!(fields(&named), ["metadata", "spec.nonResourceAttributes"]);
    }
}
