//! The ServiceAccount-token authenticator: a bearer JWT signed by one of our keys, for one of
//! the audiences asked, within its lifetime, whose ServiceAccount — and the pod or secret it
//! is bound to — still exists with the uid the token names. The objects are read from the
//! watch caches, so a request costs no etcd read; a token bound to a deleted pod stops working
//! as soon as the cache sees the deletion.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use super::{username, Claims, ObjectRef, Tokens};
use crate::auth::authn::Lookup;
use crate::auth::{TokenAuthenticator, UserInfo};

/// Whether a reference still holds: the object exists with the uid named.
fn live(l: &Lookup, ns: &str, r: &ObjectRef, now: chrono::DateTime<chrono::Utc>) -> bool {
    let Some(obj) = l(ns, &r.name) else {
        return false;
    };
    let uid = obj.pointer("/metadata/uid").and_then(Value::as_str);
    if uid != Some(r.uid.as_str()) {
        return false;
    }
    // An object being deleted keeps its tokens for Kubernetes' minute of grace (a pod shutting
    // down may still talk to the API), then they stop working.
    match obj
        .pointer("/metadata/deletionTimestamp")
        .and_then(Value::as_str)
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
    {
        Some(t) => t.with_timezone(&chrono::Utc) + chrono::Duration::seconds(60) > now,
        None => true,
    }
}

/// Authenticates ServiceAccount tokens.
pub struct ServiceAccountTokens {
    tokens: Arc<Tokens>,
    accounts: Lookup,
    pods: Lookup,
    secrets: Lookup,
}

impl ServiceAccountTokens {
    /// An authenticator over the ServiceAccount, pod and secret caches.
    pub fn new(tokens: Arc<Tokens>, accounts: Lookup, pods: Lookup, secrets: Lookup) -> Self {
        ServiceAccountTokens {
            tokens,
            accounts,
            pods,
            secrets,
        }
    }

    /// The user a token's claims stand for, if what they name still exists.
    fn user(&self, c: &Claims) -> Option<UserInfo> {
        let k = &c.kubernetes;
        let ns = &k.namespace;
        let now = chrono::Utc::now();
        // The ServiceAccount: gone, recreated (another uid) or being deleted → refused.
        let sa = (self.accounts)(ns, &k.serviceaccount.name)?;
        if sa.pointer("/metadata/uid").and_then(Value::as_str) != Some(&k.serviceaccount.uid)
            || sa.pointer("/metadata/deletionTimestamp").is_some()
        {
            return None;
        }
        if let Some(p) = &k.pod {
            if !live(&self.pods, ns, p, now) {
                return None;
            }
        }
        if let Some(s) = &k.secret {
            if !live(&self.secrets, ns, s, now) {
                return None;
            }
        }
        let mut extra = BTreeMap::new();
        let mut put = |k: &str, v: &str| {
            extra.insert(
                format!("authentication.kubernetes.io/{k}"),
                vec![v.to_string()],
            );
        };
        if let Some(p) = &k.pod {
            put("pod-name", &p.name);
            put("pod-uid", &p.uid);
        }
        if let Some(n) = &k.node {
            put("node-name", &n.name);
            if !n.uid.is_empty() {
                put("node-uid", &n.uid);
            }
        }
        if !c.jti.is_empty() {
            put("credential-id", &format!("JTI={}", c.jti));
        }
        Some(UserInfo {
            name: username(ns, &k.serviceaccount.name),
            uid: k.serviceaccount.uid.clone(),
            groups: vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{ns}"),
            ],
            extra,
        })
    }
}

impl TokenAuthenticator for ServiceAccountTokens {
    fn authenticate(&self, token: &str, audiences: Option<&[String]>) -> Option<UserInfo> {
        let audiences = audiences.unwrap_or(self.tokens.api_audiences());
        let claims = self.tokens.verify(token, audiences)?;
        self.user(&claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cache(_prefix: &str, objs: &[Value]) -> Lookup {
        let objs: Vec<Value> = objs.to_vec();
        Arc::new(move |ns, name| {
            objs.iter()
                .find(|o| o["metadata"]["namespace"] == ns && o["metadata"]["name"] == name)
                .cloned()
        })
    }

    fn obj(name: &str, uid: &str) -> Value {
        json!({"metadata": {"name": name, "namespace": "ns", "uid": uid}})
    }

    #[test]
    fn the_user_of_a_live_token() {
        let dir = tempfile::tempdir().unwrap();
        let t = Arc::new(crate::tokens::tests::tokens(dir.path()));
        let tok = t
            .issue(&crate::tokens::tests::claims(
                crate::tokens::DEFAULT_ISSUER,
                3600,
            ))
            .unwrap();
        let a = ServiceAccountTokens::new(
            t.clone(),
            cache("/r/serviceaccounts/", &[obj("sa", "u-sa")]),
            cache("/r/pods/", &[obj("p", "u-p")]),
            cache("/r/secrets/", &[]),
        );
        let u = a.authenticate(&tok, None).unwrap();
        assert_eq!(u.name, "system:serviceaccount:ns:sa");
        assert_eq!(u.uid, "u-sa");
        assert_eq!(
            u.groups,
            vec!["system:serviceaccounts", "system:serviceaccounts:ns"]
        );
        assert_eq!(
            u.extra["authentication.kubernetes.io/pod-name"],
            vec!["p".to_string()]
        );
        assert_eq!(
            u.extra["authentication.kubernetes.io/credential-id"],
            vec!["JTI=j-1".to_string()]
        );
        // Another audience than the token's.
        assert!(a.authenticate(&tok, Some(&["vault".to_string()])).is_none());

        // The pod recreated under the same name: another uid.
        let a = ServiceAccountTokens::new(
            t.clone(),
            cache("/r/serviceaccounts/", &[obj("sa", "u-sa")]),
            cache("/r/pods/", &[obj("p", "u-p2")]),
            cache("/r/secrets/", &[]),
        );
        assert!(a.authenticate(&tok, None).is_none());
        // The pod gone, the ServiceAccount gone.
        let a = ServiceAccountTokens::new(
            t.clone(),
            cache("/r/serviceaccounts/", &[obj("sa", "u-sa")]),
            cache("/r/pods/", &[]),
            cache("/r/secrets/", &[]),
        );
        assert!(a.authenticate(&tok, None).is_none());
        let a = ServiceAccountTokens::new(
            t.clone(),
            cache("/r/serviceaccounts/", &[]),
            cache("/r/pods/", &[obj("p", "u-p")]),
            cache("/r/secrets/", &[]),
        );
        assert!(a.authenticate(&tok, None).is_none());
        // A pod deleted long ago but still held by a finalizer.
        let mut old = obj("p", "u-p");
        old["metadata"]["deletionTimestamp"] = json!("2020-01-01T00:00:00Z");
        let a = ServiceAccountTokens::new(
            t,
            cache("/r/serviceaccounts/", &[obj("sa", "u-sa")]),
            cache("/r/pods/", &[old]),
            cache("/r/secrets/", &[]),
        );
        assert!(a.authenticate(&tok, None).is_none());
    }
}
