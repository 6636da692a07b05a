//! The `request` of an `admission.k8s.io/v1` AdmissionReview, as kube-apiserver sends it to a
//! webhook, and as the `request` variable of CEL match conditions and policies sees it.

use serde_json::{json, Map, Value};

use super::Attributes;
use crate::auth::UserInfo;
use crate::registry::ResourceInfo;

/// The group, version and kind of what a request for `r` (and `subresource`) carries: the
/// resource's own kind, or the subresource's (a Scale, a Binding, an Eviction).
pub fn kind_of(r: &ResourceInfo, subresource: &str) -> (String, String, String) {
    if !subresource.is_empty() {
        if let Some((g, v, k)) = r.subresource(subresource).and_then(|h| h.kind()) {
            return (g.to_string(), v.to_string(), k.to_string());
        }
    }
    (r.group.clone(), r.version.clone(), r.kind.clone())
}

/// `userInfo` as Kubernetes' `authentication.k8s.io/v1` UserInfo: empty fields left out.
pub fn user_info(u: &UserInfo) -> Value {
    let mut m = Map::new();
    if !u.name.is_empty() {
        m.insert("username".into(), json!(u.name));
    }
    if !u.uid.is_empty() {
        m.insert("uid".into(), json!(u.uid));
    }
    if !u.groups.is_empty() {
        m.insert("groups".into(), json!(u.groups));
    }
    if !u.extra.is_empty() {
        m.insert("extra".into(), json!(u.extra));
    }
    Value::Object(m)
}

/// Builds an AdmissionReview `request`.
pub struct RequestBuilder<'a> {
    attrs: &'a Attributes<'a>,
    uid: String,
    sent_as: Option<&'a ResourceInfo>,
    object: Option<&'a Value>,
    old: Option<&'a Value>,
}

impl<'a> RequestBuilder<'a> {
    /// A request for `attrs` with a fresh uid, the objects being those of the request.
    pub fn new(attrs: &'a Attributes<'a>) -> Self {
        RequestBuilder {
            attrs,
            uid: uuid::Uuid::new_v4().to_string(),
            sent_as: None,
            object: None,
            old: attrs.old,
        }
    }

    /// The request's uid (each call to a webhook has its own).
    pub fn uid(mut self, uid: impl Into<String>) -> Self {
        self.uid = uid.into();
        self
    }

    /// Sent as another version of the resource (`matchPolicy: Equivalent`): `kind` and
    /// `resource` name it, `requestKind` and `requestResource` the request's own.
    pub fn sent_as(mut self, r: &'a ResourceInfo) -> Self {
        self.sent_as = Some(r);
        self
    }

    /// The new object (`None` for deletes and connects).
    pub fn object(mut self, obj: Option<&'a Value>) -> Self {
        self.object = obj;
        self
    }

    /// The old object, when it is sent in another version than `Attributes::old`.
    pub fn old_object(mut self, old: Option<&'a Value>) -> Self {
        self.old = old;
        self
    }

    /// The `request` JSON.
    pub fn build(&self) -> Value {
        let a = self.attrs;
        let sent = self.sent_as.unwrap_or(a.resource);
        let gvk = |r: &ResourceInfo| {
            let (g, v, k) = kind_of(r, a.subresource);
            json!({"group": g, "version": v, "kind": k})
        };
        let gvr = |r: &ResourceInfo| json!({"group": r.group, "version": r.version, "resource": r.plural});
        let mut m = Map::new();
        m.insert("uid".into(), json!(self.uid));
        m.insert("kind".into(), gvk(sent));
        m.insert("resource".into(), gvr(sent));
        if !a.subresource.is_empty() {
            m.insert("subResource".into(), json!(a.subresource));
        }
        m.insert("requestKind".into(), gvk(a.resource));
        m.insert("requestResource".into(), gvr(a.resource));
        if !a.subresource.is_empty() {
            m.insert("requestSubResource".into(), json!(a.subresource));
        }
        let name = if a.name.is_empty() {
            self.object
                .and_then(|o| o.pointer("/metadata/name"))
                .and_then(Value::as_str)
                .unwrap_or("")
        } else {
            a.name
        };
        if !name.is_empty() {
            m.insert("name".into(), json!(name));
        }
        if !a.namespace.is_empty() {
            m.insert("namespace".into(), json!(a.namespace));
        }
        m.insert("operation".into(), json!(a.operation.as_str()));
        m.insert("userInfo".into(), user_info(a.user));
        m.insert("object".into(), self.object.cloned().unwrap_or(Value::Null));
        m.insert("oldObject".into(), self.old.cloned().unwrap_or(Value::Null));
        m.insert("dryRun".into(), json!(a.dry_run));
        m.insert("options".into(), a.options.to_json());
        Value::Object(m)
    }
}

/// The `request` of an AdmissionReview for `attrs` and its new object: what the CEL `request`
/// variable holds.
pub fn admission_request(a: &Attributes<'_>, obj: Option<&Value>) -> Value {
    RequestBuilder::new(a).object(obj).build()
}

/// A whole AdmissionReview around `request`, in `version` (`v1` or `v1beta1`).
pub fn review(version: &str, request: Value) -> Value {
    json!({
        "apiVersion": format!("admission.k8s.io/{version}"),
        "kind": "AdmissionReview",
        "request": request,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::{Operation, Options};
    use crate::registry::builtin;
    use crate::request::WriteOpts;

    #[test]
    fn requests_carry_what_kube_sends() {
        let pods = builtin("", "pods").unwrap();
        let mut user = UserInfo {
            name: "alice".into(),
            uid: "u-1".into(),
            groups: vec!["dev".into()],
            ..Default::default()
        };
        user.extra.insert("scopes".into(), vec!["a".into()]);
        let opts = WriteOpts {
            dry_run: true,
            field_manager: Some("kubectl".into()),
            ..Default::default()
        };
        let a = Attributes {
            operation: Operation::Create,
            resource: &pods,
            subresource: "",
            namespace: "ns",
            name: "",
            old: None,
            user: &user,
            dry_run: true,
            options: Options::Create(&opts),
            reinvocation: None,
        };
        let obj = json!({"metadata": {"name": "web"}});
        let r = RequestBuilder::new(&a).uid("x").object(Some(&obj)).build();
        assert_eq!(r["uid"], "x");
        assert_eq!(
            r["kind"],
            json!({"group": "", "version": "v1", "kind": "Pod"})
        );
        assert_eq!(
            r["resource"],
            json!({"group": "", "version": "v1", "resource": "pods"})
        );
        assert_eq!(r["requestKind"], r["kind"]);
        assert_eq!(r["name"], "web");
        assert_eq!(r["namespace"], "ns");
        assert_eq!(r["operation"], "CREATE");
        assert_eq!(
            r["userInfo"],
            json!({"username": "alice", "uid": "u-1", "groups": ["dev"], "extra": {"scopes": ["a"]}})
        );
        assert_eq!(r["object"], obj);
        assert_eq!(r["oldObject"], Value::Null);
        assert_eq!(r["dryRun"], true);
        assert_eq!(
            r["options"],
            json!({"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1", "dryRun": ["All"], "fieldManager": "kubectl"})
        );
        assert!(r.get("subResource").is_none());
    }

    #[test]
    fn subresources_send_their_own_kind() {
        let deploys = builtin("apps", "deployments").unwrap();
        let user = UserInfo::default();
        let a = Attributes {
            operation: Operation::Update,
            resource: &deploys,
            subresource: "scale",
            namespace: "ns",
            name: "web",
            old: None,
            user: &user,
            dry_run: false,
            options: Options::None,
            reinvocation: None,
        };
        let r = admission_request(&a, None);
        assert_eq!(r["subResource"], "scale");
        assert_eq!(r["requestSubResource"], "scale");
        assert_eq!(r["kind"]["kind"], "Scale");
        assert_eq!(r["resource"]["resource"], "deployments");
        assert_eq!(r["options"], Value::Null);
    }
}
