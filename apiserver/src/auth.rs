//! Authentication (client certificates, static bearer tokens) and the one authorization seam.
//!
//! Handlers never decide access themselves: every request is authenticated into a [`UserInfo`]
//! and then put to the configured [`Authorizer`] with its [`Attributes`].

use std::collections::HashMap;
use std::path::Path;

use http::HeaderMap;

use crate::error::{Error, Result};

/// Who is making a request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserInfo {
    /// User name (a client certificate's CN).
    pub name: String,
    /// User id, if known.
    pub uid: String,
    /// Groups (a client certificate's O values).
    pub groups: Vec<String>,
}

impl UserInfo {
    /// The API server itself, for the writes it makes on its own (bootstrap, namespace
    /// finalization, orphaning), as kube-apiserver's loopback identity.
    pub fn apiserver() -> Self {
        UserInfo {
            name: "system:apiserver".into(),
            uid: String::new(),
            groups: vec!["system:masters".into(), "system:authenticated".into()],
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
    })
}

/// Authenticates requests from their TLS client certificate or bearer token.
#[derive(Debug, Default, Clone)]
pub struct Authenticator {
    tokens: HashMap<String, UserInfo>,
}

/// A problem with the token file.
#[derive(Debug, thiserror::Error)]
#[error("token auth file {path}, line {line}: {why}")]
pub struct TokenFileError {
    path: String,
    line: usize,
    why: String,
}

impl Authenticator {
    /// An authenticator with the static tokens of a kube-apiserver `--token-auth-file`
    /// (CSV lines `token,user,uid,"group1,group2"`).
    pub fn from_token_file(path: Option<&Path>) -> Result<Self, TokenFileError> {
        let mut tokens = HashMap::new();
        let Some(path) = path else {
            return Ok(Authenticator { tokens });
        };
        let err = |line, why: String| TokenFileError {
            path: path.display().to_string(),
            line,
            why,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(0, e.to_string()))?;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields = split_csv(line);
            if fields.len() < 3 {
                return Err(err(n + 1, "want at least token,user,uid".into()));
            }
            let groups = fields
                .get(3)
                .map(|g| {
                    g.split(',')
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .unwrap_or_default();
            tokens.insert(
                fields[0].clone(),
                UserInfo {
                    name: fields[1].clone(),
                    uid: fields[2].clone(),
                    groups,
                },
            );
        }
        Ok(Authenticator { tokens })
    }

    /// The user behind a request, or 401.
    pub fn authenticate(
        &self,
        cert_user: Option<&UserInfo>,
        headers: &HeaderMap,
    ) -> Result<UserInfo> {
        let mut user = if let Some(auth) = headers.get(http::header::AUTHORIZATION) {
            let token = auth
                .to_str()
                .ok()
                .and_then(|v| {
                    v.strip_prefix("Bearer ")
                        .or_else(|| v.strip_prefix("bearer "))
                })
                .map(str::trim)
                .ok_or_else(Error::unauthorized)?;
            self.tokens
                .get(token)
                .cloned()
                .ok_or_else(Error::unauthorized)?
        } else if let Some(u) = cert_user {
            u.clone()
        } else {
            return Err(Error::unauthorized());
        };
        if !user.groups.iter().any(|g| g == "system:authenticated") {
            user.groups.push("system:authenticated".into());
        }
        Ok(user)
    }
}

fn split_csv(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur).trim().to_string()),
            c => cur.push(c),
        }
    }
    out.push(cur.trim().to_string());
    out
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
}

/// An authorizer's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Allowed.
    Allow,
    /// Denied, with the reason.
    Deny(String),
}

/// Decides whether a request may proceed. The only place access is decided.
pub trait Authorizer: Send + Sync {
    /// The decision for one request.
    fn authorize(&self, attrs: &Attributes<'_>) -> Decision;
}

/// Allows every authenticated request.
#[derive(Debug, Default, Clone, Copy)]
pub struct AllowAll;

impl Authorizer for AllowAll {
    fn authorize(&self, _attrs: &Attributes<'_>) -> Decision {
        Decision::Allow
    }
}

/// The 403 for a denied request, worded as kube-apiserver words it.
pub fn forbidden(attrs: &Attributes<'_>, why: &str) -> Error {
    let what = if attrs.resource_request {
        let res = if attrs.api_group.is_empty() {
            attrs.resource.to_string()
        } else {
            format!("{}.{}", attrs.resource, attrs.api_group)
        };
        let scope = if attrs.namespace.is_empty() {
            "at the cluster scope".to_string()
        } else {
            format!("in the namespace \"{}\"", attrs.namespace)
        };
        format!(
            "cannot {} resource \"{res}\" in API group \"{}\" {scope}",
            attrs.verb, attrs.api_group
        )
    } else {
        format!("cannot {} path \"{}\"", attrs.verb, attrs.path)
    };
    let mut msg = format!("User \"{}\" {what}", attrs.user.name);
    if !why.is_empty() {
        msg.push_str(": ");
        msg.push_str(why);
    }
    Error::forbidden(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let a = Authenticator::from_token_file(Some(&p)).unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            http::header::AUTHORIZATION,
            "Bearer s3cret".parse().unwrap(),
        );
        let u = a.authenticate(None, &h).unwrap();
        assert_eq!(u.name, "alice");
        assert_eq!(u.groups, vec!["dev", "ops", "system:authenticated"]);
        h.insert(http::header::AUTHORIZATION, "Bearer wrong".parse().unwrap());
        assert_eq!(a.authenticate(None, &h).unwrap_err().code(), 401);
        assert_eq!(
            a.authenticate(None, &HeaderMap::new()).unwrap_err().code(),
            401
        );
    }
}
