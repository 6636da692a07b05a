//! Bootstrap tokens (`--enable-bootstrap-token-auth`): a bearer token `ID.SECRET` stands for
//! the Secret `bootstrap-token-ID` of type `bootstrap.kubernetes.io/token` in `kube-system`,
//! as kube-apiserver reads them. A node joining the cluster uses one to ask for its
//! certificate; it authenticates as `system:bootstrap:ID` in `system:bootstrappers` and the
//! Secret's `auth-extra-groups`.

use base64::Engine;
use serde_json::Value;

use crate::auth::authn::Lookup;
use crate::auth::{TokenAuthenticator, UserInfo};

/// The Secret type of bootstrap tokens.
pub const SECRET_TYPE: &str = "bootstrap.kubernetes.io/token";
/// The group every bootstrap token is in.
pub const BOOTSTRAPPERS: &str = "system:bootstrappers";

/// The bootstrap token authenticator.
pub struct BootstrapTokens {
    /// Secrets, by namespace and name.
    secrets: Lookup,
}

impl BootstrapTokens {
    /// An authenticator reading tokens from `secrets`.
    pub fn new(secrets: Lookup) -> Self {
        BootstrapTokens { secrets }
    }
}

/// `[a-z0-9]{len}`.
fn token_part(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// Splits a bootstrap token into its id and secret, if it is one.
pub fn parse_token(token: &str) -> Option<(&str, &str)> {
    let (id, secret) = token.split_once('.')?;
    (token_part(id, 6) && token_part(secret, 16)).then_some((id, secret))
}

/// Compares without leaking, through timing, how much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A value of the Secret's `data` (base64), decoded; "" when absent or malformed.
fn data(secret: &Value, key: &str) -> String {
    secret
        .pointer(&format!("/data/{key}"))
        .and_then(Value::as_str)
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .unwrap_or_default()
}

/// Whether an extra group is one a bootstrap token may carry:
/// `system:bootstrappers:[a-z0-9:-]{0,255}[a-z0-9]`.
fn valid_extra_group(g: &str) -> bool {
    let Some(rest) = g.strip_prefix("system:bootstrappers:") else {
        return false;
    };
    let Some(last) = rest.bytes().last() else {
        return false;
    };
    rest.len() <= 256
        && (last.is_ascii_lowercase() || last.is_ascii_digit())
        && rest
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b':' || b == b'-')
}

/// Whether the token's `expiration` has passed; an expiration that does not parse counts as
/// passed, as in Kubernetes.
fn expired(secret: &Value, now: chrono::DateTime<chrono::Utc>) -> bool {
    let exp = data(secret, "expiration");
    if exp.is_empty() {
        return false;
    }
    match chrono::DateTime::parse_from_rfc3339(&exp) {
        Ok(t) => t <= now,
        Err(_) => true,
    }
}

impl BootstrapTokens {
    /// The user a token stands for at `now`.
    fn user_at(&self, token: &str, now: chrono::DateTime<chrono::Utc>) -> Option<UserInfo> {
        let (id, secret_part) = parse_token(token)?;
        let secret = (self.secrets)("kube-system", &format!("bootstrap-token-{id}"))?;
        if secret.pointer("/metadata/deletionTimestamp").is_some()
            || secret.get("type").and_then(Value::as_str) != Some(SECRET_TYPE)
        {
            return None;
        }
        if !constant_time_eq(
            data(&secret, "token-secret").as_bytes(),
            secret_part.as_bytes(),
        ) || data(&secret, "token-id") != id
            || expired(&secret, now)
            || data(&secret, "usage-bootstrap-authentication") != "true"
        {
            return None;
        }
        let mut groups = vec![BOOTSTRAPPERS.to_string()];
        let extra = data(&secret, "auth-extra-groups");
        for g in extra.split(',').map(str::trim).filter(|g| !g.is_empty()) {
            if !valid_extra_group(g) {
                tracing::warn!(
                    token_id = id,
                    group = g,
                    "bootstrap token has an invalid extra group; refused"
                );
                return None;
            }
            if !groups.iter().any(|x| x == g) {
                groups.push(g.to_string());
            }
        }
        Some(UserInfo {
            name: format!("system:bootstrap:{id}"),
            uid: String::new(),
            groups,
            extra: Default::default(),
        })
    }
}

impl TokenAuthenticator for BootstrapTokens {
    fn authenticate(&self, token: &str, audiences: Option<&[String]>) -> Option<UserInfo> {
        // Bootstrap tokens are for the API server alone.
        if audiences.is_some() {
            return None;
        }
        self.user_at(token, chrono::Utc::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeMap;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn token_secret(id: &str, secret: &str, extra: &[(&str, &str)]) -> Value {
        let mut data = serde_json::Map::new();
        for (k, v) in [
            ("token-id", id),
            ("token-secret", secret),
            ("usage-bootstrap-authentication", "true"),
        ]
        .iter()
        .chain(extra)
        {
            data.insert(k.to_string(), json!(b64(v)));
        }
        json!({
            "metadata": {"name": format!("bootstrap-token-{id}"), "namespace": "kube-system"},
            "type": SECRET_TYPE,
            "data": data,
        })
    }

    fn authn(secrets: Vec<Value>) -> BootstrapTokens {
        let by_name: BTreeMap<String, Value> = secrets
            .into_iter()
            .map(|s| (s["metadata"]["name"].as_str().unwrap().to_string(), s))
            .collect();
        BootstrapTokens::new(std::sync::Arc::new(move |ns, name| {
            (ns == "kube-system")
                .then(|| by_name.get(name).cloned())
                .flatten()
        }))
    }

    #[test]
    fn a_valid_token_is_its_bootstrap_user() {
        let a = authn(vec![token_secret(
            "abcdef",
            "0123456789abcdef",
            &[
                ("expiration", "2999-01-01T00:00:00Z"),
                (
                    "auth-extra-groups",
                    "system:bootstrappers:worker,system:bootstrappers:x-1",
                ),
            ],
        )]);
        let u = a.authenticate("abcdef.0123456789abcdef", None).unwrap();
        assert_eq!(u.name, "system:bootstrap:abcdef");
        assert_eq!(
            u.groups,
            vec![
                "system:bootstrappers",
                "system:bootstrappers:worker",
                "system:bootstrappers:x-1"
            ]
        );
        // Not for other audiences.
        assert!(a
            .authenticate("abcdef.0123456789abcdef", Some(&["vault".to_string()]))
            .is_none());
    }

    #[test]
    fn bad_tokens_are_refused() {
        let ok = token_secret("abcdef", "0123456789abcdef", &[]);
        let a = authn(vec![
            ok.clone(),
            token_secret(
                "expire",
                "0123456789abcdef",
                &[("expiration", "2001-01-01T00:00:00Z")],
            ),
            token_secret("badexp", "0123456789abcdef", &[("expiration", "soon")]),
            token_secret(
                "nousag",
                "0123456789abcdef",
                &[("usage-bootstrap-authentication", "false")],
            ),
            token_secret(
                "badgrp",
                "0123456789abcdef",
                &[("auth-extra-groups", "system:masters")],
            ),
            {
                let mut s = token_secret("opaque", "0123456789abcdef", &[]);
                s["type"] = json!("Opaque");
                s
            },
            {
                let mut s = token_secret("otherid", "0123456789abcdef", &[]);
                s["metadata"]["name"] = json!("bootstrap-token-wrngid");
                s
            },
        ]);
        assert!(a.authenticate("abcdef.0123456789abcdef", None).is_some());
        for t in [
            "abcdef.0123456789abcdee", // wrong secret
            "abcdef.0123456789abcde",  // short
            "ABCDEF.0123456789abcdef", // not lowercase
            "abcdef0123456789abcdef",  // no dot
            "zzzzzz.0123456789abcdef", // no such secret
            "expire.0123456789abcdef", // expired
            "badexp.0123456789abcdef", // unparsable expiration
            "nousag.0123456789abcdef", // not for authentication
            "badgrp.0123456789abcdef", // extra group outside system:bootstrappers:
            "opaque.0123456789abcdef", // not a bootstrap token secret
            "wrngid.0123456789abcdef", // token-id does not match the name
            "",
            ".",
        ] {
            assert!(a.authenticate(t, None).is_none(), "{t}");
        }
    }

    #[test]
    fn extra_groups_are_checked() {
        assert!(valid_extra_group("system:bootstrappers:a"));
        assert!(valid_extra_group(
            "system:bootstrappers:kubeadm:default-node-token"
        ));
        assert!(!valid_extra_group("system:bootstrappers:"));
        assert!(!valid_extra_group("system:bootstrappers:a-"));
        assert!(!valid_extra_group("system:bootstrappers:A"));
        assert!(!valid_extra_group("system:nodes"));
    }
}
