//! TLS bootstrap and client-certificate rotation: how a kubelet gets its identity
//! `system:node:NAME` (group `system:nodes`) and keeps it, as Kubernetes' kubelet does with
//! `--bootstrap-kubeconfig`, `--kubeconfig`, `--cert-dir` and `--rotate-certificates`.
//!
//! At start, the first of these that holds a client certificate still valid is used:
//! `--kubeconfig`; the key and certificate in `CERT_DIR/kubelet-client-current.pem` (the
//! kubeconfig is then written pointing at it); else a new one is asked for with the
//! credentials of `--bootstrap-kubeconfig` (a bootstrap token): a P-256 key, a
//! CertificateSigningRequest `csr-XXXXX` for signer
//! `kubernetes.io/kube-apiserver-client-kubelet` (usages digital signature, client auth),
//! watched until the controller manager has issued it. The key and the certificate are then
//! written together to the PEM file, and `--kubeconfig` is written to use it. The kubelet does
//! nothing else until it has its identity.
//!
//! With rotation on, a certificate is renewed at a random point between 70% and 90% of its
//! lifetime (Kubernetes' jitter, so that nodes started together do not renew together), with
//! a CSR the current certificate authenticates (a `selfnodeclient` request); the running
//! client then switches to the new certificate ([`skiff_client::Client::set_identity`]) without
//! a restart, and the PEM file is replaced, so that a restart finds it too.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use skiff_client::{Api, Client, Config, PostParams, WatchEvent, WatchParams};
use tokio_util::sync::CancellationToken;

/// The signer of kubelets' client certificates.
pub const SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";
/// The file in `--cert-dir` that holds the current key and certificate.
pub const CURRENT: &str = "kubelet-client-current.pem";

/// Errors of the bootstrap.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The API server refused or could not be reached.
    #[error(transparent)]
    Api(#[from] skiff_client::Error),
    /// A key or request could not be made.
    #[error("certificate: {0}")]
    Certificate(String),
    /// The request was denied or failed.
    #[error("certificate signing request {name} {how}: {message}")]
    Refused {
        /// The request's name.
        name: String,
        /// `denied` or `failed`.
        how: &'static str,
        /// The condition's message.
        message: String,
    },
    /// Neither a valid certificate nor a bootstrap kubeconfig.
    #[error("no valid client certificate in {kubeconfig} or {cert_dir}, and no --bootstrap-kubeconfig to ask for one")]
    NoCredentials {
        /// `--kubeconfig`.
        kubeconfig: String,
        /// `--cert-dir`.
        cert_dir: String,
    },
    /// Stopped while waiting.
    #[error("stopped while waiting for a certificate")]
    Stopped,
}

type Result<T, E = BootstrapError> = std::result::Result<T, E>;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BootstrapError + '_ {
    move |source| BootstrapError::Io {
        path: path.into(),
        source,
    }
}

/// Where the kubelet's identity lives.
#[derive(Debug, Clone)]
pub struct Bootstrap {
    /// `--kubeconfig`: used if its certificate is valid, written after a bootstrap.
    pub kubeconfig: PathBuf,
    /// `--bootstrap-kubeconfig`: the credentials that may ask for a certificate.
    pub bootstrap_kubeconfig: Option<PathBuf>,
    /// `--cert-dir`: holds [`CURRENT`].
    pub cert_dir: PathBuf,
    /// The node's name: the certificate is for `system:node:NAME`.
    pub node_name: String,
}

/// What the kubelet runs with: its client configuration, and the PEM key and certificate
/// it manages (`None` when the kubeconfig's identity is someone else's to renew).
pub struct Identity {
    /// The client configuration.
    pub config: Config,
    /// The managed certificate (PEM) and key (PEM).
    pub managed: Option<(String, String)>,
}

impl Bootstrap {
    /// The PEM file of the current key and certificate.
    pub fn current(&self) -> PathBuf {
        self.cert_dir.join(CURRENT)
    }

    /// The kubelet's identity: an existing valid certificate, or a new one asked for with
    /// the bootstrap credentials (waiting, until `shutdown`, for it to be issued).
    pub async fn identity(&self, shutdown: &CancellationToken) -> Result<Identity> {
        let now = time::OffsetDateTime::now_utc();
        if let Ok(config) = Config::from_kubeconfig(&self.kubeconfig) {
            let valid = config
                .identity
                .as_ref()
                .is_some_and(|(cert, _)| still_valid(cert, now));
            if valid || (config.identity.is_none() && self.bootstrap_kubeconfig.is_none()) {
                let mut config = config;
                let managed = self.managed_by_us(&config);
                if let Some((cert, key)) = &managed {
                    // The kubeconfig names one file for both: keep each part apart.
                    config.identity = Some((cert.clone().into_bytes(), key.clone().into_bytes()));
                }
                return Ok(Identity { config, managed });
            }
        }
        let current = self.current();
        if let Ok(pem) = std::fs::read_to_string(&current) {
            if let Some((cert, key)) =
                split_pem(&pem).filter(|(c, _)| still_valid(c.as_bytes(), now))
            {
                // Where the cluster is: the bootstrap kubeconfig's, else the old kubeconfig's.
                let bootstrap = self
                    .bootstrap_config()
                    .or_else(|e| Config::from_kubeconfig(&self.kubeconfig).map_err(|_| e))?;
                self.write_kubeconfig(&bootstrap)?;
                let mut config = bootstrap;
                config.token = None;
                config.identity = Some((cert.clone().into_bytes(), key.clone().into_bytes()));
                return Ok(Identity {
                    config,
                    managed: Some((cert, key)),
                });
            }
        }
        let bootstrap = self.bootstrap_config()?;
        tracing::info!(node = %self.node_name, "no valid client certificate: asking for one with the bootstrap credentials");
        let client = Client::new(bootstrap.clone())?;
        let (cert, key) = request_certificate(&client, &self.node_name, shutdown).await?;
        self.store(&cert, &key)?;
        self.write_kubeconfig(&bootstrap)?;
        let mut config = bootstrap;
        config.token = None;
        config.identity = Some((cert.clone().into_bytes(), key.clone().into_bytes()));
        tracing::info!(node = %self.node_name, "got a client certificate");
        Ok(Identity {
            config,
            managed: Some((cert, key)),
        })
    }

    fn bootstrap_config(&self) -> Result<Config> {
        let Some(path) = &self.bootstrap_kubeconfig else {
            return Err(BootstrapError::NoCredentials {
                kubeconfig: self.kubeconfig.display().to_string(),
                cert_dir: self.cert_dir.display().to_string(),
            });
        };
        Ok(Config::from_kubeconfig(path)?)
    }

    /// The certificate and key of a kubeconfig that uses [`CURRENT`] (one this kubelet wrote).
    fn managed_by_us(&self, config: &Config) -> Option<(String, String)> {
        let pem = std::fs::read_to_string(self.current()).ok()?;
        let (cert, key) = split_pem(&pem)?;
        let (c, _) = config.identity.as_ref()?;
        let theirs = String::from_utf8_lossy(c);
        let theirs = split_pem(&theirs).map_or_else(|| theirs.to_string(), |(c, _)| c);
        (theirs == cert).then_some((cert, key))
    }

    /// Writes the key and certificate to [`CURRENT`] (private, replaced atomically).
    pub fn store(&self, cert: &str, key: &str) -> Result<()> {
        std::fs::create_dir_all(&self.cert_dir).map_err(io(&self.cert_dir))?;
        let current = self.current();
        let tmp = self.cert_dir.join(format!("{CURRENT}.tmp"));
        write_private(&tmp, format!("{key}{cert}").as_bytes())?;
        std::fs::rename(&tmp, &current).map_err(io(&current))
    }

    /// Writes `--kubeconfig`: the bootstrap kubeconfig's server and CA, the key and
    /// certificate in [`CURRENT`] (by path, so that rotation needs no rewrite).
    fn write_kubeconfig(&self, bootstrap: &Config) -> Result<()> {
        let current = self.current().display().to_string();
        let mut kc = skiff_rules::Kubeconfig::single("default", &bootstrap.server)
            .with_user_name(&format!("system:node:{}", self.node_name));
        if let Some(ca) = &bootstrap.ca_pem {
            kc = kc.with_certificate_authority(ca);
        }
        for u in &mut kc.users {
            u.user.client_certificate = Some(current.clone());
            u.user.client_key = Some(current.clone());
        }
        let text = kc
            .to_yaml()
            .map_err(|e| BootstrapError::Certificate(format!("kubeconfig: {e}")))?;
        if let Some(dir) = self.kubeconfig.parent() {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
        }
        write_private(&self.kubeconfig, text.as_bytes())
    }

    /// Renews the managed certificate before it expires, for as long as `shutdown` is not
    /// cancelled, switching `client` to each new one.
    pub async fn rotate(&self, client: Client, mut cert: String, shutdown: CancellationToken) {
        let mut failures = 0u32;
        loop {
            let wait = match lifetime(cert.as_bytes()) {
                Some((not_before, not_after)) => {
                    let at = renewal_time(not_before, not_after, rand::random::<f64>());
                    let now = time::OffsetDateTime::now_utc();
                    Duration::try_from(at - now).unwrap_or(Duration::ZERO)
                }
                None => Duration::ZERO,
            };
            tracing::info!(wait = ?wait, "next client certificate renewal");
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            match request_certificate(&client, &self.node_name, &shutdown).await {
                Ok((c, k)) => {
                    if let Err(e) = self.store(&c, &k) {
                        tracing::warn!(error = %e, "keeping the renewed certificate");
                    }
                    match client.set_identity(c.as_bytes(), k.as_bytes()) {
                        Ok(()) => {
                            tracing::info!("rotated the client certificate");
                            cert = c;
                            failures = 0;
                        }
                        Err(e) => tracing::warn!(error = %e, "using the renewed certificate"),
                    }
                }
                Err(BootstrapError::Stopped) => return,
                Err(e) => {
                    failures += 1;
                    // Kubernetes' back-off: from a second, doubling, to at most five minutes.
                    let delay =
                        Duration::from_secs(1 << failures.min(8)).min(Duration::from_secs(300));
                    tracing::warn!(error = %e, retry_in = ?delay, "renewing the client certificate");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }
}

/// When to renew a certificate valid from `not_before` to `not_after`: at 70% of its
/// lifetime plus `jitter` (0..1) times another 20%, as Kubernetes' certificate manager does.
pub fn renewal_time(
    not_before: time::OffsetDateTime,
    not_after: time::OffsetDateTime,
    jitter: f64,
) -> time::OffsetDateTime {
    let total = (not_after - not_before).as_seconds_f64().max(0.0);
    let fraction = 0.7 + 0.2 * jitter.clamp(0.0, 1.0);
    not_before + time::Duration::seconds_f64(total * fraction)
}

/// The validity of the first certificate of a PEM text.
pub fn lifetime(pem: &[u8]) -> Option<(time::OffsetDateTime, time::OffsetDateTime)> {
    let cert_block = x509_parser::pem::Pem::iter_from_buffer(pem)
        .filter_map(|p| p.ok())
        .find(|p| p.label == "CERTIFICATE")?;
    let cert = cert_block.parse_x509().ok()?;
    let v = cert.validity();
    Some((v.not_before.to_datetime(), v.not_after.to_datetime()))
}

fn still_valid(pem: &[u8], now: time::OffsetDateTime) -> bool {
    lifetime(pem).is_some_and(|(nb, na)| nb <= now && now < na)
}

/// The certificate blocks and the key block of a PEM text holding both.
pub fn split_pem(pem: &str) -> Option<(String, String)> {
    let mut cert = String::new();
    let mut key = String::new();
    let mut block = String::new();
    for line in pem.lines() {
        block.push_str(line);
        block.push('\n');
        if line.starts_with("-----END ") {
            if line.contains("CERTIFICATE") {
                cert.push_str(&block);
            } else if line.contains("PRIVATE KEY") {
                key.push_str(&block);
            }
            block.clear();
        }
    }
    (!cert.is_empty() && !key.is_empty()).then_some((cert, key))
}

/// A new P-256 key (PEM) and a request for `system:node:NAME` in `system:nodes` with it.
pub fn new_request(node: &str) -> Result<(String, String)> {
    new_request_for(&format!("system:node:{node}"), &["system:nodes"])
}

/// A new P-256 key (PEM) and a request (PEM) for the subject CN `cn`, O `orgs` with it.
pub fn new_request_for(cn: &str, orgs: &[&str]) -> Result<(String, String)> {
    let err = |e: rcgen::Error| BootstrapError::Certificate(e.to_string());
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(err)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    for o in orgs {
        dn.push(DnType::OrganizationName, *o);
    }
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    let csr = params
        .serialize_request(&key)
        .map_err(err)?
        .pem()
        .map_err(err)?;
    Ok((key.serialize_pem(), csr))
}

/// Asks for a certificate for `system:node:NODE` with `client`'s credentials and waits for
/// it; answers the certificate and key (PEM).
pub async fn request_certificate(
    client: &Client,
    node: &str,
    shutdown: &CancellationToken,
) -> Result<(String, String)> {
    let (key, request) = new_request(node)?;
    let cert = request_signed(client, SIGNER, request, shutdown).await?;
    Ok((cert, key))
}

/// Asks `signer` for a client certificate (usages digital signature and client auth) for the
/// PEM `request` with `client`'s credentials, in a CertificateSigningRequest `csr-XXXXX`, and
/// waits (until `shutdown`) for it to be issued; answers the certificate (PEM).
pub async fn request_signed(
    client: &Client,
    signer: &str,
    request: String,
    shutdown: &CancellationToken,
) -> Result<String> {
    let csr = CertificateSigningRequest {
        metadata: ObjectMeta {
            generate_name: Some("csr-".into()),
            ..Default::default()
        },
        spec: CertificateSigningRequestSpec {
            signer_name: signer.into(),
            request: ByteString(request.into_bytes()),
            usages: Some(vec!["digital signature".into(), "client auth".into()]),
            ..Default::default()
        },
        ..Default::default()
    };
    let api = Api::<CertificateSigningRequest>::all(client.clone());
    let created = api.create(&PostParams::default(), &csr).await?;
    let name = created.metadata.name.clone().unwrap_or_default();
    tracing::info!(csr = %name, "waiting for the certificate signing request to be issued");
    wait_issued(&api, created, shutdown).await
}

/// What a CSR says: its certificate, its refusal, or nothing yet.
fn outcome(csr: &CertificateSigningRequest) -> Option<Result<String>> {
    let name = csr.metadata.name.clone().unwrap_or_default();
    let status = csr.status.as_ref()?;
    for c in status.conditions.iter().flatten() {
        let how = match c.type_.as_str() {
            "Denied" => "denied",
            "Failed" => "failed",
            _ => continue,
        };
        return Some(Err(BootstrapError::Refused {
            name,
            how,
            message: c
                .message
                .clone()
                .or_else(|| c.reason.clone())
                .unwrap_or_default(),
        }));
    }
    let cert = status.certificate.as_ref().filter(|c| !c.0.is_empty())?;
    Some(
        String::from_utf8(cert.0.clone()).map_err(|_| {
            BootstrapError::Certificate(format!("{name}: the certificate is not PEM"))
        }),
    )
}

/// Watches `csr` until it is issued, denied or failed (or `shutdown`).
async fn wait_issued(
    api: &Api<CertificateSigningRequest>,
    mut csr: CertificateSigningRequest,
    shutdown: &CancellationToken,
) -> Result<String> {
    let name = csr.metadata.name.clone().unwrap_or_default();
    loop {
        if let Some(o) = outcome(&csr) {
            return o;
        }
        let rv = csr.metadata.resource_version.clone().unwrap_or_default();
        let wp = WatchParams {
            name: Some(name.clone()),
            ..Default::default()
        };
        let stream = tokio::select! {
            _ = shutdown.cancelled() => return Err(BootstrapError::Stopped),
            s = api.watch(&wp, &rv) => s,
        };
        match stream {
            Ok(stream) => {
                futures::pin_mut!(stream);
                loop {
                    let ev = tokio::select! {
                        _ = shutdown.cancelled() => return Err(BootstrapError::Stopped),
                        ev = stream.next() => ev,
                    };
                    match ev {
                        Some(Ok(WatchEvent::Added(c) | WatchEvent::Modified(c))) => {
                            if let Some(o) = outcome(&c) {
                                return o;
                            }
                            csr = c;
                        }
                        Some(Ok(WatchEvent::Deleted(_))) => {
                            return Err(BootstrapError::Refused {
                                name,
                                how: "deleted",
                                message: "deleted before it was issued".into(),
                            })
                        }
                        Some(Ok(WatchEvent::Bookmark { .. })) => {}
                        Some(Err(e)) => {
                            tracing::warn!(error = %e, "watching the certificate signing request");
                            break;
                        }
                        None => break,
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "watching the certificate signing request");
                tokio::select! {
                    _ = shutdown.cancelled() => return Err(BootstrapError::Stopped),
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
        // The watch ended or broke: read the object again and resume from it.
        match api.get(&name).await {
            Ok(c) => csr = c,
            Err(e) if e.is_not_found() => {
                return Err(BootstrapError::Refused {
                    name,
                    how: "deleted",
                    message: "deleted before it was issued".into(),
                })
            }
            Err(e) => tracing::warn!(error = %e, "reading the certificate signing request"),
        }
    }
}

/// Writes a file only its owner reads.
fn write_private(path: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io(path))?;
    f.write_all(data).map_err(io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_falls_between_70_and_90_percent_of_the_lifetime() {
        let nb = time::OffsetDateTime::from_unix_timestamp(1_000_000).unwrap();
        let na = nb + time::Duration::seconds(1000);
        assert_eq!(renewal_time(nb, na, 0.0), nb + time::Duration::seconds(700));
        assert_eq!(renewal_time(nb, na, 1.0), nb + time::Duration::seconds(900));
        assert_eq!(renewal_time(nb, na, 0.5), nb + time::Duration::seconds(800));
        // Jitter out of range is clamped; an inverted validity renews at once.
        assert_eq!(renewal_time(nb, na, 7.0), nb + time::Duration::seconds(900));
        assert_eq!(renewal_time(na, nb, 0.5), na);
        for _ in 0..100 {
            let t = renewal_time(nb, na, rand::random::<f64>());
            assert!(
                t >= nb + time::Duration::seconds(700) && t <= nb + time::Duration::seconds(900)
            );
        }
    }

    #[test]
    fn requests_are_for_the_node() {
        let (key, csr) = new_request("n1").unwrap();
        assert!(key.contains("PRIVATE KEY"));
        let p = rcgen::CertificateSigningRequestParams::from_pem(&csr).unwrap();
        let dn: Vec<_> = p
            .params
            .distinguished_name
            .iter()
            .map(|(t, v)| (t.clone(), v.clone()))
            .collect();
        assert!(dn.contains(&(
            DnType::CommonName,
            rcgen::DnValue::Utf8String("system:node:n1".into())
        )));
        assert!(dn.contains(&(
            DnType::OrganizationName,
            rcgen::DnValue::Utf8String("system:nodes".into())
        )));
        assert_eq!(p.public_key.algorithm(), &rcgen::PKCS_ECDSA_P256_SHA256);
    }

    /// A key and a self-signed certificate valid from `from` to `to` seconds from now.
    fn cert(from: i64, to: i64) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::default();
        let now = time::OffsetDateTime::now_utc();
        p.not_before = now + time::Duration::seconds(from);
        p.not_after = now + time::Duration::seconds(to);
        (p.self_signed(&key).unwrap().pem(), key.serialize_pem())
    }

    #[tokio::test]
    async fn a_valid_certificate_in_the_cert_dir_is_used_and_the_kubeconfig_written() {
        let dir = tempfile::tempdir().unwrap();
        let bootstrap_kc = dir.path().join("bootstrap.kubeconfig");
        std::fs::write(
            &bootstrap_kc,
            skiff_rules::Kubeconfig::single("b", "https://127.0.0.1:1")
                .with_certificate_authority(b"CA")
                .with_token("abcdef.0123456789abcdef")
                .to_yaml()
                .unwrap(),
        )
        .unwrap();
        let b = Bootstrap {
            kubeconfig: dir.path().join("kubelet.kubeconfig"),
            bootstrap_kubeconfig: Some(bootstrap_kc),
            cert_dir: dir.path().join("pki"),
            node_name: "n1".into(),
        };
        let (c, k) = cert(-60, 3600);
        b.store(&c, &k).unwrap();
        let id = b.identity(&CancellationToken::new()).await.unwrap();
        assert_eq!(id.managed, Some((c.clone(), k.clone())));
        assert!(id.config.token.is_none());
        // The kubeconfig now names the file: a second start uses it as it is.
        let again = b.identity(&CancellationToken::new()).await.unwrap();
        assert_eq!(
            again.config.identity,
            Some((c.into_bytes(), k.into_bytes()))
        );
        assert_eq!(again.config.ca_pem.as_deref(), Some(&b"CA"[..]));
        assert!(again.managed.is_some());
    }

    #[tokio::test]
    async fn without_a_valid_certificate_or_bootstrap_credentials_it_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let b = Bootstrap {
            kubeconfig: dir.path().join("kubelet.kubeconfig"),
            bootstrap_kubeconfig: None,
            cert_dir: dir.path().join("pki"),
            node_name: "n1".into(),
        };
        let (c, k) = cert(-7200, -3600);
        b.store(&c, &k).unwrap();
        let err = b.identity(&CancellationToken::new()).await.err().unwrap();
        assert!(matches!(err, BootstrapError::NoCredentials { .. }), "{err}");
    }

    #[test]
    fn pem_files_split_into_certificate_and_key() {
        let (c, k) = cert(0, 10);
        assert_eq!(split_pem(&format!("{k}{c}")), Some((c.clone(), k.clone())));
        assert_eq!(split_pem(&c), None);
    }
}
