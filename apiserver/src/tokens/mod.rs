//! ServiceAccount tokens: the JWTs the API server signs for a ServiceAccount (the
//! `serviceaccounts/token` subresource), checks when they come back as bearer tokens
//! ([`authenticator`]), and publishes the keys of for verifiers outside the cluster (OIDC
//! discovery, [`Tokens::openid_configuration`] and [`Tokens::jwks`]).
//!
//! Claims are Kubernetes' bound-token claims: `iss`, `sub` (`system:serviceaccount:NS:NAME`),
//! `aud`, `exp`, `iat`, `nbf`, `jti` and `kubernetes.io` naming the namespace, the
//! ServiceAccount and the pod, secret or node the token is bound to.

pub mod authenticator;
pub mod keys;

use std::path::{Path, PathBuf};
use std::time::Duration;

use jsonwebtoken::{Algorithm, Header, Validation};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{json, Value};

pub use authenticator::ServiceAccountTokens;
pub use keys::{KeyError, PublicKey, SigningKey};

/// kube-apiserver's usual issuer.
pub const DEFAULT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// Where the key set is served.
pub const JWKS_PATH: &str = "/openid/v1/jwks";

/// Where the OIDC discovery document is served.
pub const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";

/// How far clocks may disagree when checking `exp`, `nbf` and `iat` (Kubernetes' leeway).
pub const LEEWAY_SECONDS: u64 = 60;

/// How the tokens are configured (kube-apiserver's flags).
#[derive(Debug, Clone)]
pub struct Config {
    /// `--service-account-signing-key-file`: the private key tokens are signed with; when
    /// neither this nor `key_files` is given, a key is generated into the data dir and kept.
    pub signing_key_file: Option<PathBuf>,
    /// `--service-account-key-file` (repeatable): public keys that verify tokens; defaults to
    /// the signing key's public half.
    pub key_files: Vec<PathBuf>,
    /// `--service-account-issuer` (repeatable): the first names new tokens, any is accepted.
    pub issuers: Vec<String>,
    /// `--api-audiences`: the audiences the API itself accepts; defaults to the issuers.
    pub api_audiences: Vec<String>,
    /// `--service-account-max-token-expiration`: longer requests are shortened to it.
    pub max_token_expiration: Option<Duration>,
    /// `--service-account-jwks-uri`: the key set's address in the discovery document;
    /// defaults to `https://ADVERTISED-ADDRESS/openid/v1/jwks`.
    pub jwks_uri: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            signing_key_file: None,
            key_files: Vec::new(),
            issuers: vec![DEFAULT_ISSUER.to_string()],
            api_audiences: Vec::new(),
            max_token_expiration: None,
            jwks_uri: None,
        }
    }
}

/// Why the token configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A key could not be read or made.
    #[error("service account key: {0}")]
    Key(#[from] KeyError),
    /// A flag's value cannot work.
    #[error("{0}")]
    Invalid(String),
}

/// A reference to an object a token names (`{"name": ..., "uid": ...}`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRef {
    /// Its name.
    #[serde(default)]
    pub name: String,
    /// Its uid.
    #[serde(default)]
    pub uid: String,
}

/// The `kubernetes.io` claim.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubernetesClaims {
    /// The ServiceAccount's namespace.
    #[serde(default)]
    pub namespace: String,
    /// The ServiceAccount.
    #[serde(default)]
    pub serviceaccount: ObjectRef,
    /// The pod the token is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<ObjectRef>,
    /// The secret the token is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<ObjectRef>,
    /// The node the token's pod runs on (or the node it is bound to).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<ObjectRef>,
}

/// A ServiceAccount token's claims.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer.
    pub iss: String,
    /// Subject: `system:serviceaccount:NS:NAME`.
    pub sub: String,
    /// Audiences (a single string is read as one).
    #[serde(deserialize_with = "one_or_many")]
    pub aud: Vec<String>,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
    /// Issued at.
    pub iat: i64,
    /// Not before.
    pub nbf: i64,
    /// The token's id.
    #[serde(default)]
    pub jti: String,
    /// What it is bound to.
    #[serde(rename = "kubernetes.io")]
    pub kubernetes: KubernetesClaims,
}

fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

/// The user name of a ServiceAccount.
pub fn username(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

/// The signing key, the keys that verify, and what tokens must say.
pub struct Tokens {
    signing: SigningKey,
    verifying: Vec<PublicKey>,
    issuers: Vec<String>,
    audiences: Vec<String>,
    max_expiration: Option<i64>,
    jwks_uri: Option<String>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("issuers", &self.issuers)
            .field("audiences", &self.audiences)
            .field("signing", &self.signing)
            .finish()
    }
}

impl Tokens {
    /// The keys and settings `cfg` names, the generated key in `data_dir` standing in for
    /// absent key files.
    pub fn new(cfg: &Config, data_dir: &Path) -> Result<Tokens, ConfigError> {
        let signing = match (&cfg.signing_key_file, cfg.key_files.is_empty()) {
            (Some(p), _) => keys::load_signing_key(p)?,
            (None, true) => keys::load_or_generate(data_dir)?,
            (None, false) => return Err(ConfigError::Invalid(
                "--service-account-signing-key-file is required with --service-account-key-file"
                    .into(),
            )),
        };
        let mut verifying = Vec::new();
        for p in &cfg.key_files {
            verifying.extend(keys::load_public_keys(p)?);
        }
        if verifying.is_empty() {
            verifying.push(signing.public.clone());
        }
        let issuers: Vec<String> = cfg
            .issuers
            .iter()
            .filter(|i| !i.is_empty())
            .cloned()
            .collect();
        if issuers.is_empty() {
            return Err(ConfigError::Invalid(
                "--service-account-issuer must not be empty".into(),
            ));
        }
        for i in &issuers {
            if i.contains("://") && !i.starts_with("https://") && !i.starts_with("http://") {
                return Err(ConfigError::Invalid(format!(
                    "--service-account-issuer {i:?} contained a ':' but was not a valid URL"
                )));
            }
        }
        let audiences = if cfg.api_audiences.is_empty() {
            issuers.clone()
        } else {
            cfg.api_audiences.clone()
        };
        let max_expiration =
            match cfg.max_token_expiration {
                Some(d) if d.as_secs() < 3600 => return Err(ConfigError::Invalid(
                    "the service-account-max-token-expiration must be set longer than 3600 seconds"
                        .into(),
                )),
                Some(d) => Some(d.as_secs() as i64),
                None => None,
            };
        Ok(Tokens {
            signing,
            verifying,
            issuers,
            audiences,
            max_expiration,
            jwks_uri: cfg.jwks_uri.clone(),
        })
    }

    /// The issuer new tokens name.
    pub fn issuer(&self) -> &str {
        &self.issuers[0]
    }

    /// The audiences the API accepts (a TokenRequest's default).
    pub fn api_audiences(&self) -> &[String] {
        &self.audiences
    }

    /// The longest lifetime a token may be given, in seconds.
    pub fn max_expiration_seconds(&self) -> Option<i64> {
        self.max_expiration
    }

    /// The key id of the signing key.
    pub fn key_id(&self) -> &str {
        &self.signing.public.kid
    }

    /// Signs `claims` (their `iss` set to the issuer).
    pub fn issue(&self, claims: &Claims) -> Result<String, jsonwebtoken::errors::Error> {
        let mut claims = claims.clone();
        claims.iss = self.issuer().to_string();
        let mut header = Header::new(self.signing.alg);
        // Kubernetes' tokens carry alg and kid only.
        header.typ = None;
        header.kid = Some(self.signing.public.kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.signing.encoding)
    }

    /// The claims of `token` if a verifying key signed it, its issuer is ours, one of its
    /// audiences is in `audiences`, and it is within its lifetime. Whether the objects it
    /// names still exist is the authenticator's business.
    pub fn verify(&self, token: &str, audiences: &[String]) -> Option<Claims> {
        // Cheap shape check first: most bearer tokens of other kinds stop here.
        if token.len() > 16 * 1024 || token.split('.').count() != 3 {
            return None;
        }
        let header = jsonwebtoken::decode_header(token).ok()?;
        if !matches!(
            header.alg,
            Algorithm::ES256 | Algorithm::ES384 | Algorithm::RS256
        ) {
            return None;
        }
        let mut v = Validation::new(header.alg);
        v.leeway = LEEWAY_SECONDS;
        v.validate_nbf = true;
        v.set_issuer(&self.issuers);
        v.set_audience(audiences);
        v.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
        // The key the header names first, then any other of the algorithm (the id is a hint).
        let mut candidates: Vec<&PublicKey> = self
            .verifying
            .iter()
            .filter(|k| k.alg == header.alg)
            .collect();
        candidates.sort_by_key(|k| Some(&k.kid) != header.kid.as_ref());
        let claims = candidates
            .iter()
            .find_map(|k| jsonwebtoken::decode::<Claims>(token, &k.decoding, &v).ok())?
            .claims;
        // `iat` in the future is as suspect as `nbf` in the future.
        let now = chrono::Utc::now().timestamp();
        if claims.iat > now + LEEWAY_SECONDS as i64 {
            return None;
        }
        let ns = &claims.kubernetes.namespace;
        let name = &claims.kubernetes.serviceaccount.name;
        if ns.is_empty() || name.is_empty() || claims.sub != username(ns, name) {
            return None;
        }
        Some(claims)
    }

    /// The OIDC discovery document (`/.well-known/openid-configuration`); `advertise` is
    /// the `host:port` the server is reached at.
    pub fn openid_configuration(&self, advertise: &str) -> Value {
        let jwks_uri = self
            .jwks_uri
            .clone()
            .unwrap_or_else(|| format!("https://{advertise}{JWKS_PATH}"));
        let mut algs: Vec<String> = self
            .verifying
            .iter()
            .map(|k| format!("{:?}", k.alg))
            .collect();
        algs.sort();
        algs.dedup();
        json!({
            "issuer": self.issuer(),
            "jwks_uri": jwks_uri,
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": algs,
        })
    }

    /// Whether OIDC discovery is served: as kube-apiserver, only for an `https` issuer URL.
    pub fn discovery_enabled(&self) -> bool {
        self.issuer().starts_with("https://")
    }

    /// The verifying keys as a JSON Web Key Set (`/openid/v1/jwks`).
    pub fn jwks(&self) -> Value {
        let mut seen = std::collections::BTreeSet::new();
        let keys: Vec<&Value> = self
            .verifying
            .iter()
            .filter(|k| seen.insert(k.kid.clone()))
            .map(|k| &k.jwk)
            .collect();
        json!({ "keys": keys })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    pub(crate) fn tokens(dir: &Path) -> Tokens {
        Tokens::new(&Config::default(), dir).unwrap()
    }

    pub(crate) fn claims(aud: &str, exp_in: i64) -> Claims {
        let now = chrono::Utc::now().timestamp();
        Claims {
            iss: String::new(),
            sub: username("ns", "sa"),
            aud: vec![aud.to_string()],
            exp: now + exp_in,
            iat: now,
            nbf: now,
            jti: "j-1".into(),
            kubernetes: KubernetesClaims {
                namespace: "ns".into(),
                serviceaccount: ObjectRef {
                    name: "sa".into(),
                    uid: "u-sa".into(),
                },
                pod: Some(ObjectRef {
                    name: "p".into(),
                    uid: "u-p".into(),
                }),
                secret: None,
                node: None,
            },
        }
    }

    fn part(token: &str, n: usize) -> Value {
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token.split('.').nth(n).unwrap())
            .unwrap();
        serde_json::from_slice(&raw).unwrap()
    }

    #[test]
    fn round_trip_and_claims_shape() {
        let dir = tempfile::tempdir().unwrap();
        let t = tokens(dir.path());
        let tok = t.issue(&claims(DEFAULT_ISSUER, 3600)).unwrap();
        let header = part(&tok, 0);
        assert_eq!(header, json!({"alg": "ES256", "kid": t.key_id()}));
        let body = part(&tok, 1);
        assert_eq!(body["iss"], DEFAULT_ISSUER);
        assert_eq!(body["sub"], "system:serviceaccount:ns:sa");
        assert_eq!(body["aud"], json!([DEFAULT_ISSUER]));
        assert_eq!(
            body["kubernetes.io"],
            json!({"namespace": "ns", "serviceaccount": {"name": "sa", "uid": "u-sa"},
                   "pod": {"name": "p", "uid": "u-p"}})
        );
        for k in ["exp", "iat", "nbf"] {
            assert!(body[k].is_i64(), "{k}");
        }
        let got = t.verify(&tok, t.api_audiences()).unwrap();
        assert_eq!(got.kubernetes.pod.unwrap().uid, "u-p");
        // The key set lists the key the header names.
        assert_eq!(t.jwks()["keys"][0]["kid"], t.key_id());
        assert_eq!(t.jwks()["keys"][0]["alg"], "ES256");
    }

    #[test]
    fn tampered_tokens_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let t = tokens(dir.path());
        let tok = t.issue(&claims(DEFAULT_ISSUER, 3600)).unwrap();
        let parts: Vec<&str> = tok.split('.').collect();
        // Another subject with the original signature.
        let mut body = part(&tok, 1);
        body["sub"] = json!("system:serviceaccount:kube-system:admin");
        body["kubernetes.io"]["namespace"] = json!("kube-system");
        let forged = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(serde_json::to_vec(&body).unwrap());
        let tampered = format!("{}.{forged}.{}", parts[0], parts[2]);
        assert!(t.verify(&tampered, t.api_audiences()).is_none());
        // A flipped signature byte.
        let mut sig = parts[2].to_string().into_bytes();
        sig[5] = if sig[5] == b'A' { b'B' } else { b'A' };
        let bad_sig = format!(
            "{}.{}.{}",
            parts[0],
            parts[1],
            String::from_utf8(sig).unwrap()
        );
        assert!(t.verify(&bad_sig, t.api_audiences()).is_none());
        // alg none, and garbage.
        let none = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#);
        assert!(t
            .verify(&format!("{none}.{}.", parts[1]), t.api_audiences())
            .is_none());
        for junk in ["", "a.b.c", "...", "x", &"a.".repeat(20000)] {
            assert!(t.verify(junk, t.api_audiences()).is_none());
        }
        // Another key's signature, with our key's id.
        let other = tempfile::tempdir().unwrap();
        let o = tokens(other.path());
        let foreign = o.issue(&claims(DEFAULT_ISSUER, 3600)).unwrap();
        assert!(t.verify(&foreign, t.api_audiences()).is_none());
    }

    #[test]
    fn expiry_audience_and_issuer_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let t = tokens(dir.path());
        let expired = t.issue(&claims(DEFAULT_ISSUER, -120)).unwrap();
        assert!(t.verify(&expired, t.api_audiences()).is_none());
        // Within the leeway it still counts.
        let just = t.issue(&claims(DEFAULT_ISSUER, -10)).unwrap();
        assert!(t.verify(&just, t.api_audiences()).is_some());
        let mut future = claims(DEFAULT_ISSUER, 3600);
        future.nbf += 600;
        assert!(t
            .verify(&t.issue(&future).unwrap(), t.api_audiences())
            .is_none());
        let vault = t.issue(&claims("vault", 3600)).unwrap();
        assert!(t.verify(&vault, t.api_audiences()).is_none());
        assert!(t.verify(&vault, &["vault".to_string()]).is_some());
        // Another issuer's token signed with the same key.
        let other = Tokens::new(
            &Config {
                issuers: vec!["https://elsewhere".into()],
                ..Config::default()
            },
            dir.path(),
        )
        .unwrap();
        let theirs = other.issue(&claims(DEFAULT_ISSUER, 3600)).unwrap();
        assert!(t.verify(&theirs, t.api_audiences()).is_none());
        // A subject that does not match the kubernetes.io claim.
        let mut c = claims(DEFAULT_ISSUER, 3600);
        c.sub = username("ns", "other");
        assert!(t.verify(&t.issue(&c).unwrap(), t.api_audiences()).is_none());
    }

    #[test]
    fn rsa_keys_sign_rs256_and_other_key_files_verify() {
        let dir = tempfile::tempdir().unwrap();
        let rsa = dir.path().join("rsa.pem");
        std::fs::write(&rsa, include_str!("testdata/rsa.pem")).unwrap();
        let ec = dir.path().join("ec.pem");
        std::fs::write(&ec, include_str!("testdata/ec-sec1.pem")).unwrap();
        let cfg = Config {
            signing_key_file: Some(rsa.clone()),
            ..Config::default()
        };
        let t = Tokens::new(&cfg, dir.path()).unwrap();
        let tok = t.issue(&claims(DEFAULT_ISSUER, 3600)).unwrap();
        assert_eq!(part(&tok, 0)["alg"], "RS256");
        assert!(t.verify(&tok, t.api_audiences()).is_some());
        assert_eq!(t.jwks()["keys"][0]["kty"], "RSA");
        // Verifying with the EC key alone (a rotation gone wrong) refuses the RSA token.
        let only_ec = Tokens::new(
            &Config {
                signing_key_file: Some(rsa.clone()),
                key_files: vec![ec.clone()],
                ..Config::default()
            },
            dir.path(),
        )
        .unwrap();
        assert!(only_ec.verify(&tok, t.api_audiences()).is_none());
        // Both keys verify: the key set lists both.
        let both = Tokens::new(
            &Config {
                signing_key_file: Some(ec),
                key_files: vec![rsa.clone(), dir.path().join("ec.pem")],
                ..Config::default()
            },
            dir.path(),
        )
        .unwrap();
        assert!(both.verify(&tok, t.api_audiences()).is_some());
        assert_eq!(both.jwks()["keys"].as_array().unwrap().len(), 2);
        // Key files without a signing key cannot issue.
        let e = Tokens::new(
            &Config {
                key_files: vec![rsa],
                ..Config::default()
            },
            dir.path(),
        );
        assert!(e.is_err());
    }

    #[test]
    fn discovery_document() {
        let dir = tempfile::tempdir().unwrap();
        let t = tokens(dir.path());
        let d = t.openid_configuration("10.0.0.1:6443");
        assert_eq!(
            d,
            json!({"issuer": DEFAULT_ISSUER, "jwks_uri": "https://10.0.0.1:6443/openid/v1/jwks",
                   "response_types_supported": ["id_token"], "subject_types_supported": ["public"],
                   "id_token_signing_alg_values_supported": ["ES256"]})
        );
        assert!(t.discovery_enabled());
        let bad = Config {
            max_token_expiration: Some(Duration::from_secs(60)),
            ..Config::default()
        };
        assert!(Tokens::new(&bad, dir.path()).is_err());
    }
}
