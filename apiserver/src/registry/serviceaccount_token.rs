//! `serviceaccounts/token`: the TokenRequest (`authentication.k8s.io/v1`) that issues a
//! ServiceAccount a signed, expiring token for some audiences, optionally bound to a pod or a
//! secret of its namespace (the token stops working when that object goes). What
//! `kubectl create token` and the kubelet's projected volumes call.

use std::sync::Arc;

use serde_json::{json, Value};

use super::subresource::{Kind, Subresource};
use super::{s, Objects, Resource, ResourceInfo, Shared};
use crate::error::{Cause, Error, Result};
use crate::request::WriteOpts;
use crate::tokens::{username, Claims, KubernetesClaims, ObjectRef, Tokens};

/// A TokenRequest's lifetime when it asks for none (kube-apiserver's default).
pub const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;

/// The shortest lifetime a token may be given.
pub const MIN_EXPIRATION_SECONDS: i64 = 600;

/// The `token` subresource, signing with the server's key.
pub struct TokenRequest {
    tokens: Arc<Tokens>,
}

impl TokenRequest {
    /// The handler, signing with `tokens`.
    pub fn new(tokens: Arc<Tokens>) -> Self {
        TokenRequest { tokens }
    }
}

/// `info` with the `token` subresource when it is the core `serviceaccounts` resource.
pub fn with_token(mut info: ResourceInfo, tokens: &Arc<Tokens>) -> ResourceInfo {
    if info.group.is_empty() && info.plural == "serviceaccounts" {
        info.subresources.push((
            "token".to_string(),
            Shared::Owned(Arc::new(TokenRequest::new(tokens.clone()))),
        ));
    }
    info
}

fn invalid(name: &str, causes: Vec<Cause>) -> Error {
    Error::invalid("TokenRequest", "authentication.k8s.io", name, causes)
}

/// What a TokenRequest asks for, checked as kube-apiserver checks it.
#[derive(Debug, PartialEq)]
struct Request {
    audiences: Vec<String>,
    expiration: i64,
    bound: Option<(String, String, String, String)>,
}

fn parse(body: &Value, name: &str, ns: &str, default_audiences: &[String]) -> Result<Request> {
    let body_name = s(body, "/metadata/name");
    if !body_name.is_empty() && body_name != name {
        return Err(invalid(
            name,
            vec![Cause::invalid(
                "metadata.name",
                &json!(body_name),
                "must match the service account name if specified",
            )],
        ));
    }
    let body_ns = s(body, "/metadata/namespace");
    if !body_ns.is_empty() && body_ns != ns {
        return Err(invalid(
            name,
            vec![Cause::invalid(
                "metadata.namespace",
                &json!(body_ns),
                "must match the service account namespace if specified",
            )],
        ));
    }
    let spec = body.get("spec").cloned().unwrap_or(json!({}));
    let mut audiences: Vec<String> = match spec.get("audiences") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| v.as_str().map(String::from))
            .collect::<Option<_>>()
            .ok_or_else(|| Error::bad_request("spec.audiences: expected a list of strings"))?,
        Some(_) => return Err(Error::bad_request("spec.audiences: expected a list")),
    };
    if audiences.is_empty() {
        audiences = default_audiences.to_vec();
    }
    let expiration = match spec.get("expirationSeconds") {
        None | Some(Value::Null) => DEFAULT_EXPIRATION_SECONDS,
        Some(v) => v.as_i64().ok_or_else(|| {
            Error::bad_request(format!(
                "TokenRequest in version \"v1\" cannot be handled as a TokenRequest: spec.expirationSeconds: {v} is not an int64"
            ))
        })?,
    };
    let mut causes = Vec::new();
    if expiration < MIN_EXPIRATION_SECONDS {
        causes.push(Cause::invalid(
            "spec.expirationSeconds",
            &json!(expiration),
            "may not specify a duration less than 10 minutes",
        ));
    }
    if expiration > 1 << 32 {
        causes.push(Cause::invalid(
            "spec.expirationSeconds",
            &json!(expiration),
            "may not specify a duration larger than 2^32 seconds",
        ));
    }
    if !causes.is_empty() {
        return Err(invalid("", causes));
    }
    let bound = match spec.get("boundObjectRef") {
        None | Some(Value::Null) => None,
        Some(r) => Some((
            s(r, "/kind"),
            s(r, "/apiVersion"),
            s(r, "/name"),
            s(r, "/uid"),
        )),
    };
    Ok(Request {
        audiences,
        expiration,
        bound,
    })
}

/// Go's `GroupVersionKind.String()` of an apiVersion and kind (`apps/v1, Kind=Deployment`).
fn gvk_string(api_version: &str, kind: &str) -> String {
    let (group, version) = match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    };
    format!("{group}/{version}, Kind={kind}")
}

fn uid(obj: &Value) -> String {
    s(obj, "/metadata/uid")
}

fn rv(obj: &Value) -> i64 {
    s(obj, "/metadata/resourceVersion").parse().unwrap_or(0)
}

fn resource(objs: &dyn Objects, plural: &str) -> Result<Resource> {
    objs.resource("", "v1", plural)
        .ok_or_else(|| Error::internal(format!("{plural} are not served")))
}

#[async_trait::async_trait]
impl Subresource for TokenRequest {
    fn verbs(&self) -> &'static [&'static str] {
        &["create"]
    }

    fn kind(&self) -> Option<Kind> {
        Some(("authentication.k8s.io", "v1", "TokenRequest"))
    }

    fn strict_json(&self, body: &[u8]) -> Vec<crate::strict::Problem> {
        crate::strict::json_typed::<k8s_openapi::api::authentication::v1::TokenRequest>(body)
            .unwrap_or_else(|| crate::strict::json_duplicates(body))
    }

    async fn create(
        &self,
        objs: &dyn Objects,
        r: &Resource,
        ns: Option<&str>,
        name: &str,
        body: Value,
        _opts: &WriteOpts,
    ) -> Result<Value> {
        let ns = ns.ok_or_else(|| Error::bad_request("namespace is required"))?;
        let req = parse(&body, name, ns, self.tokens.api_audiences())?;
        let sa = objs.get(r, Some(ns), name).await?;
        let mut k8s = KubernetesClaims {
            namespace: ns.to_string(),
            serviceaccount: ObjectRef {
                name: name.to_string(),
                uid: uid(&sa),
            },
            ..Default::default()
        };
        // What the token names must be in the watch caches the authenticator reads before
        // the token is handed out, or its first use could be refused.
        let mut seen = vec![(r.clone(), rv(&sa))];
        if let Some((kind, api_version, bound_name, bound_uid)) = &req.bound {
            let core = api_version.is_empty() || api_version == "v1";
            let (plural, obj) = match (core, kind.as_str()) {
                (true, "Pod") => {
                    let pods = resource(objs, "pods")?;
                    let pod = objs.get(&pods, Some(ns), bound_name).await?;
                    if s(&pod, "/spec/serviceAccountName") != name {
                        return Err(Error::bad_request(format!(
                            "cannot bind token for serviceaccount {name:?} to pod running with different serviceaccount name."
                        )));
                    }
                    k8s.pod = Some(ObjectRef {
                        name: bound_name.clone(),
                        uid: uid(&pod),
                    });
                    let node = s(&pod, "/spec/nodeName");
                    if !node.is_empty() {
                        let nodes = resource(objs, "nodes")?;
                        let node_uid = objs
                            .cached(&nodes, None, &node)
                            .map(|c| uid(&c.value()))
                            .unwrap_or_default();
                        k8s.node = Some(ObjectRef {
                            name: node,
                            uid: node_uid,
                        });
                    }
                    seen.push((pods, rv(&pod)));
                    ("Pod", pod)
                }
                (true, "Secret") => {
                    let secrets = resource(objs, "secrets")?;
                    let secret = objs.get(&secrets, Some(ns), bound_name).await?;
                    k8s.secret = Some(ObjectRef {
                        name: bound_name.clone(),
                        uid: uid(&secret),
                    });
                    seen.push((secrets, rv(&secret)));
                    ("Secret", secret)
                }
                (true, "Node") => {
                    return Err(Error::bad_request(
                        "cannot bind token to a Node object as the \"ServiceAccountTokenNodeBinding\" feature-gate is disabled",
                    ))
                }
                _ => {
                    return Err(Error::bad_request(format!(
                        "cannot bind token to object of type {}",
                        gvk_string(api_version, kind)
                    )))
                }
            };
            if !bound_uid.is_empty() && *bound_uid != uid(&obj) {
                return Err(Error::conflict(
                    plural,
                    bound_name,
                    &format!(
                        "the UID in the bound object reference ({bound_uid}) does not match the UID in record. The object might have been deleted and then recreated"
                    ),
                ));
            }
        }
        let mut expiration = req.expiration;
        if let Some(max) = self.tokens.max_expiration_seconds() {
            expiration = expiration.min(max);
        }
        let now = chrono::Utc::now();
        let claims = Claims {
            iss: String::new(),
            sub: username(ns, name),
            aud: req.audiences.clone(),
            exp: now.timestamp() + expiration,
            iat: now.timestamp(),
            nbf: now.timestamp(),
            jti: uuid::Uuid::new_v4().to_string(),
            kubernetes: k8s,
        };
        let token = self
            .tokens
            .issue(&claims)
            .map_err(|e| Error::internal(format!("failed to generate token: {e}")))?;
        for (res, rev) in seen {
            objs.cache_reaches(&res, rev).await;
        }
        let mut spec = json!({
            "audiences": req.audiences,
            "expirationSeconds": expiration,
            "boundObjectRef": null,
        });
        match body.pointer("/spec/boundObjectRef") {
            Some(b) if !b.is_null() => spec["boundObjectRef"] = b.clone(),
            _ => {
                if let Some(o) = spec.as_object_mut() {
                    o.remove("boundObjectRef");
                }
            }
        }
        let stamp =
            |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        Ok(json!({
            "kind": "TokenRequest",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {
                "name": name,
                "namespace": ns,
                "creationTimestamp": stamp(now),
            },
            "spec": spec,
            "status": {
                "token": token,
                "expirationTimestamp": stamp(now + chrono::Duration::seconds(expiration)),
            },
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_checked_as_kubernetes_checks_them() {
        let auds = vec!["https://kubernetes.default.svc.cluster.local".to_string()];
        let r = parse(&json!({"spec": {}}), "sa", "ns", &auds).unwrap();
        assert_eq!(r.audiences, auds);
        assert_eq!(r.expiration, 3600);
        assert_eq!(r.bound, None);
        let e = parse(
            &json!({"spec": {"expirationSeconds": 60}}),
            "sa",
            "ns",
            &auds,
        )
        .unwrap_err();
        assert_eq!(e.code(), 422);
        assert!(
            e.to_string()
                .contains("spec.expirationSeconds: Invalid value: 60: may not specify a duration less than 10 minutes"),
            "{e}"
        );
        let e = parse(&json!({"metadata": {"name": "x"}}), "sa", "ns", &auds).unwrap_err();
        assert!(
            e.to_string()
                .contains("must match the service account name if specified"),
            "{e}"
        );
        assert_eq!(
            parse(&json!({"spec": {"audiences": [1]}}), "sa", "ns", &auds)
                .unwrap_err()
                .code(),
            400
        );
        assert_eq!(
            parse(
                &json!({"spec": {"expirationSeconds": "x"}}),
                "sa",
                "ns",
                &auds
            )
            .unwrap_err()
            .code(),
            400
        );
        let r = parse(
            &json!({"spec": {"audiences": ["vault"], "expirationSeconds": 7200,
                "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "p"}}}),
            "sa",
            "ns",
            &auds,
        )
        .unwrap();
        assert_eq!(r.audiences, vec!["vault"]);
        assert_eq!(
            r.bound,
            Some(("Pod".into(), "v1".into(), "p".into(), String::new()))
        );
        assert_eq!(
            gvk_string("apps/v1", "Deployment"),
            "apps/v1, Kind=Deployment"
        );
        assert_eq!(gvk_string("v1", "ConfigMap"), "/v1, Kind=ConfigMap");
    }
}
