//! Authentication: a request's bearer token, put to each token authenticator in turn (static
//! tokens, ServiceAccount tokens, bootstrap tokens, ...), else its TLS client certificate.
//! An invalid token is a 401 even when a certificate is present, as in kube-apiserver.

use std::collections::BTreeMap;
use std::sync::Arc;

use http::HeaderMap;
use serde_json::Value;

use super::UserInfo;
use crate::error::{Error, Result};
use crate::storage::watch_cache::WatchCache;

/// How a token authenticator reads the objects a token stands for: `(namespace, name)` → the
/// object.
pub type Lookup = Arc<dyn Fn(&str, &str) -> Option<Value> + Send + Sync>;

/// A [`Lookup`] over a resource's watch cache, whose keys are `prefix` (the resource's etcd
/// key prefix, `/registry/secrets/`) then `NS/NAME`: no etcd read per request.
pub fn cached(cache: Arc<WatchCache>, prefix: String) -> Lookup {
    Arc::new(move |ns, name| {
        cache
            .get(&format!("{prefix}{ns}/{name}"))
            .map(|c| c.value())
    })
}

/// One kind of bearer token.
pub trait TokenAuthenticator: Send + Sync {
    /// The user `token` stands for, if it is one of this kind's and valid for one of
    /// `audiences` (`None`: the API server's own audiences).
    fn authenticate(&self, token: &str, audiences: Option<&[String]>) -> Option<UserInfo>;
}

/// Authenticates requests from their bearer token or TLS client certificate.
#[derive(Default, Clone)]
pub struct Authenticator {
    tokens: Vec<Arc<dyn TokenAuthenticator>>,
    anonymous: bool,
    audiences: Vec<String>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("token_authenticators", &self.tokens.len())
            .finish()
    }
}

/// The bearer token of an `Authorization` header, if it has one (`Err`: malformed).
pub fn bearer(headers: &HeaderMap) -> Option<Result<&str>> {
    let auth = headers.get(http::header::AUTHORIZATION)?;
    Some(
        auth.to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(Error::unauthorized),
    )
}

impl Authenticator {
    /// An authenticator that knows only client certificates.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether a request with no credentials at all is `system:anonymous` in
    /// `system:unauthenticated` (`--anonymous-auth`) rather than a 401.
    pub fn anonymous(mut self, allowed: bool) -> Self {
        self.anonymous = allowed;
        self
    }

    /// The audiences the API itself accepts (`--api-audiences`): what a token is checked
    /// against when no audiences are asked for.
    pub fn with_audiences(mut self, audiences: Vec<String>) -> Self {
        self.audiences = audiences;
        self
    }

    /// The audiences the API itself accepts.
    pub fn api_audiences(&self) -> &[String] {
        &self.audiences
    }

    /// Adds a kind of bearer token (asked after those added before).
    pub fn with_tokens(mut self, t: Arc<dyn TokenAuthenticator>) -> Self {
        self.tokens.push(t);
        self
    }

    /// The user a bearer token stands for, or `None`.
    pub fn authenticate_token(
        &self,
        token: &str,
        audiences: Option<&[String]>,
    ) -> Option<UserInfo> {
        let mut user = self
            .tokens
            .iter()
            .find_map(|t| t.authenticate(token, audiences))?;
        authenticated(&mut user);
        Some(user)
    }

    /// The user behind a request, or 401.
    pub fn authenticate(
        &self,
        cert_user: Option<&UserInfo>,
        headers: &HeaderMap,
    ) -> Result<UserInfo> {
        if let Some(token) = bearer(headers) {
            return self
                .authenticate_token(token?, None)
                .ok_or_else(Error::unauthorized);
        }
        match cert_user {
            Some(u) => {
                let mut user = u.clone();
                authenticated(&mut user);
                Ok(user)
            }
            None if self.anonymous => Ok(anonymous()),
            None => Err(Error::unauthorized()),
        }
    }
}

/// The user of a request without credentials.
pub fn anonymous() -> UserInfo {
    user("system:anonymous", &["system:unauthenticated"])
}

fn authenticated(user: &mut UserInfo) {
    if !user.groups.iter().any(|g| g == "system:authenticated") {
        user.groups.push("system:authenticated".into());
    }
}

/// A user with no uid or extra attributes.
pub fn user(name: &str, groups: &[&str]) -> UserInfo {
    UserInfo {
        name: name.into(),
        uid: String::new(),
        groups: groups.iter().map(|g| g.to_string()).collect(),
        extra: BTreeMap::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::tokenfile::TokenFile;

    proptest::proptest! {
        #[test]
        fn any_authorization_header_authenticates_or_is_refused(
            value in proptest::collection::vec(32u8..127, 0..64),
        ) {
            let a = Authenticator::default();
            let mut h = HeaderMap::new();
            if let Ok(v) = http::HeaderValue::from_bytes(&value) {
                h.insert(http::header::AUTHORIZATION, v);
                proptest::prop_assert_eq!(a.authenticate(None, &h).unwrap_err().code(), 401);
            }
        }
    }

    #[test]
    fn token_file_and_bearer() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tokens.csv");
        std::fs::write(&p, "s3cret,alice,1001,\"dev,ops\"\n").unwrap();
        let a = Authenticator::new().with_tokens(Arc::new(TokenFile::load(&p).unwrap()));
        let mut h = HeaderMap::new();
        h.insert(
            http::header::AUTHORIZATION,
            "Bearer s3cret".parse().unwrap(),
        );
        let u = a.authenticate(None, &h).unwrap();
        assert_eq!(u.name, "alice");
        assert_eq!(u.uid, "1001");
        assert_eq!(u.groups, vec!["dev", "ops", "system:authenticated"]);
        h.insert(http::header::AUTHORIZATION, "Bearer wrong".parse().unwrap());
        assert_eq!(a.authenticate(None, &h).unwrap_err().code(), 401);
        // A bad token is refused even with a good certificate.
        let cert = user("bob", &[]);
        assert_eq!(a.authenticate(Some(&cert), &h).unwrap_err().code(), 401);
        assert_eq!(
            a.authenticate(Some(&cert), &HeaderMap::new()).unwrap().name,
            "bob"
        );
        assert_eq!(
            a.authenticate(None, &HeaderMap::new()).unwrap_err().code(),
            401
        );
        let a = a.anonymous(true);
        assert_eq!(
            a.authenticate(None, &HeaderMap::new()).unwrap(),
            anonymous()
        );
        assert_eq!(a.authenticate(None, &h).unwrap_err().code(), 401);
    }
}
