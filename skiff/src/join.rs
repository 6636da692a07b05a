//! How machines and components get their identities: bootstrap tokens (Secrets
//! `kube-system/bootstrap-token-ID` of type `bootstrap.kubernetes.io/token`, as kubeadm makes
//! them) that join tokens carry, client certificates the server issues from the cluster CA to
//! its scheduler and controller manager, and the proxy's certificate asked for through a
//! CertificateSigningRequest with a bootstrap token.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use skiff_rules::Kubeconfig;
use tokio_util::sync::CancellationToken;

/// The group every bootstrap token of `skiff server` authenticates in, besides
/// `system:bootstrappers` (kubeadm's is `system:bootstrappers:kubeadm:default-node-token`).
pub const NODE_TOKEN_GROUP: &str = "system:bootstrappers:skiff:default-node-token";

/// A bootstrap token, `ID.SECRET` (`[a-z0-9]{6}.[a-z0-9]{16}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapToken {
    /// The public part: the Secret is `bootstrap-token-ID`.
    pub id: String,
    /// The secret part.
    pub secret: String,
}

fn random_chars(n: usize) -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..n)
        .map(|_| CHARS[rand::random_range(0..CHARS.len())] as char)
        .collect()
}

impl BootstrapToken {
    /// A new random token.
    pub fn generate() -> Self {
        BootstrapToken {
            id: random_chars(6),
            secret: random_chars(16),
        }
    }

    /// The Secret that makes this token valid until `expires` (never when `None`), in
    /// `system:bootstrappers` and [`NODE_TOKEN_GROUP`].
    pub fn secret_object(&self, expires: Option<chrono::DateTime<chrono::Utc>>) -> Value {
        let mut data = json!({
            "token-id": self.id,
            "token-secret": self.secret,
            "usage-bootstrap-authentication": "true",
            "usage-bootstrap-signing": "true",
            "auth-extra-groups": NODE_TOKEN_GROUP,
            "description": "a skiff agent's join token",
        });
        if let Some(e) = expires {
            data["expiration"] = json!(e.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        }
        json!({"apiVersion": "v1", "kind": "Secret", "type": "bootstrap.kubernetes.io/token",
               "metadata": {"name": format!("bootstrap-token-{}", self.id),
                            "namespace": "kube-system"},
               "stringData": data})
    }
}

impl std::fmt::Display for BootstrapToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.id, self.secret)
    }
}

impl std::str::FromStr for BootstrapToken {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        let ok = |p: &str, n: usize| {
            p.len() == n
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        };
        match s.trim().split_once('.') {
            Some((id, secret)) if ok(id, 6) && ok(secret, 16) => Ok(BootstrapToken {
                id: id.into(),
                secret: secret.into(),
            }),
            _ => bail!("a bootstrap token is ID.SECRET, [a-z0-9]{{6}}.[a-z0-9]{{16}}"),
        }
    }
}

/// Creates (or refreshes the expiration of) `token`'s Secret with the credentials of
/// `kubeconfig`; a `ttl` of zero never expires.
pub async fn publish_token(kubeconfig: &Path, token: &BootstrapToken, ttl: Duration) -> Result<()> {
    let expires = (!ttl.is_zero()).then(|| {
        chrono::Utc::now() + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX)
    });
    crate::addons::apply(kubeconfig, &[token.secret_object(expires)]).await
}

/// A client certificate and key (PEM) for `cn` in `orgs`, signed by the CA at `ca_cert` /
/// `ca_key` (PEM files), valid for a year.
pub fn issue_client_certificate(
    ca_cert: &Path,
    ca_key: &Path,
    cn: &str,
    orgs: &[&str],
) -> Result<(String, String)> {
    use rcgen::{
        CertificateParams, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair, KeyUsagePurpose,
    };
    let read =
        |p: &Path| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()));
    let issuer = Issuer::from_ca_cert_pem(&read(ca_cert)?, KeyPair::from_pem(&read(ca_key)?)?)?;
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut p = CertificateParams::default();
    for o in orgs {
        p.distinguished_name.push(DnType::OrganizationName, *o);
    }
    p.distinguished_name.push(DnType::CommonName, cn);
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    p.serial_number = Some(rcgen::SerialNumber::from_slice(&rand::random::<[u8; 16]>()));
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - Duration::from_secs(300);
    p.not_after = now + Duration::from_secs(365 * 86400);
    let cert = p.signed_by(&key, &issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// A kubeconfig for `user` at `server` with the CA and an embedded client certificate.
pub fn cert_kubeconfig(
    server: &str,
    ca_pem: &[u8],
    user: &str,
    cert: &str,
    key: &str,
) -> Result<String> {
    Ok(Kubeconfig::single("skiff", server)
        .with_certificate_authority(ca_pem)
        .with_client_certificate(cert.as_bytes(), key.as_bytes())
        .with_user_name(user)
        .to_yaml()?)
}

/// Whether `path` is a kubeconfig whose client certificate is valid for at least another day.
pub fn kubeconfig_still_good(path: &Path) -> bool {
    let Ok(config) = skiff_client::Config::from_kubeconfig(path) else {
        return false;
    };
    let Some((cert, _)) = config.identity else {
        return false;
    };
    let soon = time::OffsetDateTime::now_utc() + Duration::from_secs(86400);
    skiff_kubelet::bootstrap::lifetime(&cert).is_some_and(|(nb, na)| nb <= soon && soon < na)
}

/// Writes `path` (unless it holds a certificate still good): a kubeconfig for the component
/// `user` with a certificate from the cluster CA in `pki` (`ca.crt`, `ca.key`).
pub fn component_kubeconfig(path: &Path, pki: &Path, server: &str, user: &str) -> Result<()> {
    if kubeconfig_still_good(path) {
        return Ok(());
    }
    let ca = std::fs::read(pki.join("ca.crt")).context("reading the cluster CA")?;
    let (cert, key) =
        issue_client_certificate(&pki.join("ca.crt"), &pki.join("ca.key"), user, &[])?;
    crate::server::write_private(
        path,
        cert_kubeconfig(server, &ca, user, &cert, &key)?.as_bytes(),
    )
}

/// Writes `path` (unless it holds a certificate still good): the proxy's kubeconfig, its
/// certificate for `system:kube-proxy` asked for with the bootstrap credentials of
/// `bootstrap` through a CSR of signer `kubernetes.io/kube-apiserver-client`, which the
/// controller manager approves and signs.
pub async fn proxy_kubeconfig(path: &Path, bootstrap: &Path, wait: Duration) -> Result<()> {
    csr_kubeconfig(path, bootstrap, "system:kube-proxy", wait).await
}

/// Writes `path` (unless it holds a certificate still good): the kubeconfig of the node
/// component `user` (`system:kube-proxy`, `system:skiff-csi`), its certificate asked for as
/// [`proxy_kubeconfig`] says.
pub async fn csr_kubeconfig(
    path: &Path,
    bootstrap: &Path,
    user: &str,
    wait: Duration,
) -> Result<()> {
    if kubeconfig_still_good(path) {
        return Ok(());
    }
    let config = skiff_client::Config::from_kubeconfig(bootstrap)?;
    let client = skiff_client::Client::new(config.clone())?;
    let (key, request) = skiff_kubelet::bootstrap::new_request_for(user, &[])?;
    let stop = CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    let cert = tokio::time::timeout(
        wait,
        skiff_kubelet::bootstrap::request_signed(
            &client,
            "kubernetes.io/kube-apiserver-client",
            request,
            &stop,
        ),
    )
    .await
    .with_context(|| format!("the certificate signing request of {user} was not issued in time"))?
    .map_err(|e| match &e {
        skiff_kubelet::bootstrap::BootstrapError::Api(a)
            if a.api()
                .is_some_and(|a| a.code == 401 || a.reason == "Unauthenticated") =>
        {
            anyhow::anyhow!("the server refused the join token (401 Unauthorized)")
        }
        _ => anyhow::Error::new(e),
    })?;
    let ca = config.ca_pem.clone().unwrap_or_default();
    crate::server::write_private(
        path,
        cert_kubeconfig(&config.server, &ca, user, &cert, &key)?.as_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_tokens_have_kubernetes_shape() {
        let t = BootstrapToken::generate();
        let parsed: BootstrapToken = t.to_string().parse().unwrap();
        assert_eq!(parsed, t);
        for bad in [
            "abcdef",
            "abcde.0123456789abcdef",
            "ABCDEF.0123456789abcdef",
            "abcdef.0123456789abcde!",
        ] {
            assert!(bad.parse::<BootstrapToken>().is_err(), "{bad}");
        }
        let s = t.secret_object(Some(chrono::DateTime::from_timestamp(0, 0).unwrap()));
        assert_eq!(s["type"], "bootstrap.kubernetes.io/token");
        assert_eq!(s["metadata"]["name"], format!("bootstrap-token-{}", t.id));
        assert_eq!(s["metadata"]["namespace"], "kube-system");
        assert_eq!(s["stringData"]["token-secret"], t.secret);
        assert_eq!(s["stringData"]["expiration"], "1970-01-01T00:00:00Z");
        assert_eq!(s["stringData"]["usage-bootstrap-authentication"], "true");
        assert!(t.secret_object(None)["stringData"]
            .get("expiration")
            .is_none());
    }

    #[test]
    fn component_certificates_come_from_the_cluster_ca() {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let dir = tempfile::tempdir().unwrap();
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, "skiff-ca");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        std::fs::write(
            dir.path().join("ca.crt"),
            p.self_signed(&key).unwrap().pem(),
        )
        .unwrap();
        std::fs::write(dir.path().join("ca.key"), key.serialize_pem()).unwrap();
        let kc = dir.path().join("scheduler.kubeconfig");
        component_kubeconfig(
            &kc,
            dir.path(),
            "https://127.0.0.1:6443",
            "system:kube-scheduler",
        )
        .unwrap();
        assert!(kubeconfig_still_good(&kc));
        let before = std::fs::read(&kc).unwrap();
        // Kept while good.
        component_kubeconfig(
            &kc,
            dir.path(),
            "https://127.0.0.1:6443",
            "system:kube-scheduler",
        )
        .unwrap();
        assert_eq!(std::fs::read(&kc).unwrap(), before);
        let c = skiff_client::Config::from_kubeconfig(&kc).unwrap();
        let (cert, _) = c.identity.unwrap();
        // The subject's CN is in the DER as it is.
        use base64::Engine;
        let text = String::from_utf8(cert).unwrap();
        let b64: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        let cn = b"system:kube-scheduler";
        assert!(der.windows(cn.len()).any(|w| w == cn));
    }
}
