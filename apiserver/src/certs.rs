//! The cluster PKI: a CA generated at first start, the serving certificate, the admin client
//! certificate and `admin.kubeconfig`, all kept under the data directory and reused later.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use skiff_rules::Kubeconfig;

/// Errors while creating or loading certificates.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Certificate generation or parsing failed.
    #[error("certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// The admin kubeconfig could not be written.
    #[error("admin kubeconfig: {0}")]
    Kubeconfig(#[from] skiff_rules::kubeconfig::KubeconfigError),
}

type Result<T, E = CertError> = std::result::Result<T, E>;

/// The PEM material the server needs.
#[derive(Debug, Clone)]
pub struct Pki {
    /// The CA certificate (PEM).
    pub ca_cert: String,
    /// The serving certificate (PEM).
    pub serving_cert: String,
    /// The serving key (PEM).
    pub serving_key: String,
    /// Path of the admin kubeconfig.
    pub admin_kubeconfig: PathBuf,
    /// The client certificate and key (PEM) the API server presents to kubelets.
    pub kubelet_client: (String, String),
    ca_key: String,
    dir: PathBuf,
}

fn read(path: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CertError::Io {
            path: path.into(),
            source,
        }),
    }
}

fn write(path: &Path, contents: &str, private: bool) -> Result<()> {
    let io = |source| CertError::Io {
        path: path.into(),
        source,
    };
    std::fs::write(path, contents).map_err(io)?;
    if private {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    }
    Ok(())
}

fn dn(cn: &str, orgs: &[&str]) -> DistinguishedName {
    let mut d = DistinguishedName::new();
    for o in orgs {
        d.push(DnType::OrganizationName, *o);
    }
    d.push(DnType::CommonName, cn);
    d
}

fn validity(params: &mut CertificateParams, days: i64) {
    let now = time_now();
    params.not_before = now - std::time::Duration::from_secs(3600);
    params.not_after = now + std::time::Duration::from_secs(days as u64 * 86400);
}

fn time_now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

impl Pki {
    /// Loads the PKI from `dir`, creating what is missing. The serving certificate is
    /// re-issued when the wanted names (`sans`) change.
    pub fn load_or_create(dir: &Path, sans: &[String], server_url: &str) -> Result<Pki> {
        std::fs::create_dir_all(dir).map_err(|source| CertError::Io {
            path: dir.into(),
            source,
        })?;
        let ca_cert_path = dir.join("ca.crt");
        let ca_key_path = dir.join("ca.key");
        let (ca_cert, ca_key) = match (read(&ca_cert_path)?, read(&ca_key_path)?) {
            (Some(c), Some(k)) => (c, k),
            _ => {
                let key = KeyPair::generate()?;
                let mut params = CertificateParams::new(Vec::<String>::new())?;
                params.distinguished_name = dn("skiff-ca", &[]);
                params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
                params.key_usages = vec![
                    KeyUsagePurpose::KeyCertSign,
                    KeyUsagePurpose::CrlSign,
                    KeyUsagePurpose::DigitalSignature,
                ];
                validity(&mut params, 3650);
                let cert = params.self_signed(&key)?;
                write(&ca_cert_path, &cert.pem(), false)?;
                write(&ca_key_path, &key.serialize_pem(), true)?;
                (cert.pem(), key.serialize_pem())
            }
        };
        let mut pki = Pki {
            ca_cert,
            serving_cert: String::new(),
            serving_key: String::new(),
            admin_kubeconfig: dir.join("admin.kubeconfig"),
            kubelet_client: (String::new(), String::new()),
            ca_key,
            dir: dir.into(),
        };

        let sans_path = dir.join("apiserver.sans");
        let wanted = sans.join("\n");
        let cert_path = dir.join("apiserver.crt");
        let key_path = dir.join("apiserver.key");
        match (read(&cert_path)?, read(&key_path)?, read(&sans_path)?) {
            (Some(c), Some(k), Some(s)) if s == wanted => {
                pki.serving_cert = c;
                pki.serving_key = k;
            }
            _ => {
                let (c, k) = pki.issue(
                    "skiff-apiserver",
                    &[],
                    sans,
                    ExtendedKeyUsagePurpose::ServerAuth,
                )?;
                write(&cert_path, &c, false)?;
                write(&key_path, &k, true)?;
                write(&sans_path, &wanted, false)?;
                pki.serving_cert = c;
                pki.serving_key = k;
            }
        }

        let admin_cert = dir.join("admin.crt");
        let admin_key = dir.join("admin.key");
        let (ac, ak) = match (read(&admin_cert)?, read(&admin_key)?) {
            (Some(c), Some(k)) => (c, k),
            _ => {
                let (c, k) = pki.issue_client("skiff-admin", &["system:masters"])?;
                write(&admin_cert, &c, false)?;
                write(&admin_key, &k, true)?;
                (c, k)
            }
        };
        let kc_cert = dir.join("apiserver-kubelet-client.crt");
        let kc_key = dir.join("apiserver-kubelet-client.key");
        pki.kubelet_client = match (read(&kc_cert)?, read(&kc_key)?) {
            (Some(c), Some(k)) => (c, k),
            _ => {
                let (c, k) =
                    pki.issue_client("kube-apiserver-kubelet-client", &["system:masters"])?;
                write(&kc_cert, &c, false)?;
                write(&kc_key, &k, true)?;
                (c, k)
            }
        };
        let kubeconfig = kubeconfig(server_url, &pki.ca_cert, &ac, &ak, "skiff-admin")?;
        write(&pki.admin_kubeconfig, &kubeconfig, true)?;
        Ok(pki)
    }

    /// Issues a client certificate: CN is the user name, O the groups.
    pub fn issue_client(&self, user: &str, groups: &[&str]) -> Result<(String, String)> {
        self.issue(user, groups, &[], ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn issue(
        &self,
        cn: &str,
        orgs: &[&str],
        sans: &[String],
        usage: ExtendedKeyUsagePurpose,
    ) -> Result<(String, String)> {
        let ca_key = KeyPair::from_pem(&self.ca_key)?;
        let issuer = Issuer::from_ca_cert_pem(&self.ca_cert, ca_key)?;
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(sans.to_vec())?;
        params.distinguished_name = dn(cn, orgs);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![usage];
        validity(&mut params, 3650);
        let cert = params.signed_by(&key, &issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// The directory the PKI lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// A kubeconfig for one user with an embedded client certificate.
pub fn kubeconfig(
    server: &str,
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
    user: &str,
) -> Result<String> {
    Ok(Kubeconfig::single("skiff", server)
        .with_certificate_authority(ca_pem.as_bytes())
        .with_client_certificate(cert_pem.as_bytes(), key_pem.as_bytes())
        .with_user_name(user)
        .to_yaml()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let sans = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let a = Pki::load_or_create(dir.path(), &sans, "https://127.0.0.1:6443").unwrap();
        let b = Pki::load_or_create(dir.path(), &sans, "https://127.0.0.1:6443").unwrap();
        assert_eq!(a.ca_cert, b.ca_cert);
        assert_eq!(a.serving_cert, b.serving_cert);
        let kc = std::fs::read_to_string(&a.admin_kubeconfig).unwrap();
        let parsed = Kubeconfig::from_yaml(&kc).unwrap();
        let current = parsed.current().unwrap();
        assert_eq!(current.cluster.server, "https://127.0.0.1:6443");
        // New names re-issue the serving certificate under the same CA.
        let more = vec!["localhost".to_string(), "10.1.2.3".to_string()];
        let c = Pki::load_or_create(dir.path(), &more, "https://127.0.0.1:6443").unwrap();
        assert_eq!(a.ca_cert, c.ca_cert);
        assert_ne!(a.serving_cert, c.serving_cert);
    }
}
