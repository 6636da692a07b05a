//! The webhook server's serving certificate: from PEM, from a mounted `kubernetes.io/tls`
//! Secret directory (`tls.crt`, `tls.key`; read again when they change, as the kubelet swaps
//! in a Secret's new contents), or from the Secret itself through the API.
//!
//! A [`CertStore`] holds the current certificate and key; the server's rustls configuration
//! asks it on each handshake, so a new certificate serves new connections at once.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use parking_lot::{Mutex, RwLock};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_util::sync::CancellationToken;

use super::Error;
use crate::watcher::{self, Event};
use crate::Api;

/// The certificate file of a `kubernetes.io/tls` Secret.
pub const TLS_CERT_KEY: &str = "tls.crt";
/// The private key file of a `kubernetes.io/tls` Secret.
pub const TLS_PRIVATE_KEY_KEY: &str = "tls.key";

/// How often, at most, a certificate directory is read again to see whether it changed.
const RELOAD_CHECK: Duration = Duration::from_secs(1);

/// The serving certificate, swappable while the server runs.
#[derive(Debug)]
pub struct CertStore {
    current: RwLock<Arc<CertifiedKey>>,
    dir: Option<DirSource>,
}

/// A certificate directory and what was last read from it.
#[derive(Debug)]
struct DirSource {
    cert: PathBuf,
    key: PathBuf,
    state: Mutex<DirState>,
}

#[derive(Debug)]
struct DirState {
    checked: Instant,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
}

impl CertStore {
    /// A certificate chain and private key in PEM.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertStore, Error> {
        Ok(CertStore {
            current: RwLock::new(Arc::new(certified_key(cert_pem, key_pem)?)),
            dir: None,
        })
    }

    /// `tls.crt` and `tls.key` in `dir` (a mounted `kubernetes.io/tls` Secret), read again
    /// when they change. A change that cannot be used (a half-written pair) keeps the
    /// certificate served until a good pair is there.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<CertStore, Error> {
        let dir = dir.as_ref();
        Self::from_files(dir.join(TLS_CERT_KEY), dir.join(TLS_PRIVATE_KEY_KEY))
    }

    /// A certificate file and a key file (`--tls-cert-file`, `--tls-private-key-file`), read
    /// again when they change.
    pub fn from_files(
        cert: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
    ) -> Result<CertStore, Error> {
        let (cert, key) = (cert.into(), key.into());
        let cert_pem = read(&cert)?;
        let key_pem = read(&key)?;
        let ck = certified_key(&cert_pem, &key_pem)?;
        Ok(CertStore {
            current: RwLock::new(Arc::new(ck)),
            dir: Some(DirSource {
                cert,
                key,
                state: Mutex::new(DirState {
                    checked: Instant::now(),
                    cert_pem,
                    key_pem,
                }),
            }),
        })
    }

    /// The `kubernetes.io/tls` Secret `name` read through `secrets` (an `Api<Secret>` of its
    /// namespace). [`CertStore::follow_secret`] keeps it current.
    pub async fn from_secret(secrets: &Api<Secret>, name: &str) -> Result<CertStore, Error> {
        let secret = secrets.get(name).await?;
        let (cert, key) = secret_pem(&secret)?;
        Self::from_pem(&cert, &key)
    }

    /// Watches the Secret `name` and serves its new certificate whenever it changes, until
    /// `shutdown`. A Secret changed to something unusable is logged and skipped.
    pub async fn follow_secret(
        &self,
        secrets: Api<Secret>,
        name: &str,
        shutdown: CancellationToken,
    ) {
        let events = watcher::watcher(
            secrets,
            watcher::Config::default().fields(&format!("metadata.name={name}")),
        );
        futures::pin_mut!(events);
        loop {
            let ev = tokio::select! {
                _ = shutdown.cancelled() => return,
                ev = events.next() => ev,
            };
            let secret = match ev {
                None => return,
                Some(Ok(Event::Apply(s) | Event::InitApply(s))) => s,
                Some(Ok(_)) => continue,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, secret = name, "watching the serving certificate's Secret");
                    continue;
                }
            };
            match secret_pem(&secret).and_then(|(c, k)| self.set_pem(&c, &k)) {
                Ok(()) => tracing::info!(secret = name, "serving the Secret's certificate"),
                Err(e) => {
                    tracing::warn!(error = %e, secret = name, "the Secret's certificate is unusable; keeping the current one")
                }
            }
        }
    }

    /// Serves `cert_pem` and `key_pem` from now on.
    pub fn set_pem(&self, cert_pem: &[u8], key_pem: &[u8]) -> Result<(), Error> {
        let ck = certified_key(cert_pem, key_pem)?;
        let mut cur = self.current.write();
        if cur.cert != ck.cert {
            *cur = Arc::new(ck);
        }
        Ok(())
    }

    /// The certificate served now (its chain, leaf first, in DER).
    pub fn certificate(&self) -> Vec<CertificateDer<'static>> {
        self.reload_if_changed();
        self.current.read().cert.clone()
    }

    /// A rustls server configuration serving this store's certificate, offering HTTP/2 and
    /// HTTP/1.1 (the API server speaks HTTP/2 to webhooks when offered).
    pub fn server_config(self: &Arc<Self>) -> Result<rustls::ServerConfig, Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(cfg)
    }

    /// Reads the directory again when it was last read more than a second ago, and swaps in
    /// a changed, usable pair.
    fn reload_if_changed(&self) {
        let Some(dir) = &self.dir else { return };
        let mut state = dir.state.lock();
        if state.checked.elapsed() < RELOAD_CHECK {
            return;
        }
        state.checked = Instant::now();
        let (Ok(cert_pem), Ok(key_pem)) = (std::fs::read(&dir.cert), std::fs::read(&dir.key))
        else {
            tracing::warn!(cert = %dir.cert.display(), "the certificate files cannot be read; keeping the current certificate");
            return;
        };
        if cert_pem == state.cert_pem && key_pem == state.key_pem {
            return;
        }
        match certified_key(&cert_pem, &key_pem) {
            Ok(ck) => {
                *self.current.write() = Arc::new(ck);
                state.cert_pem = cert_pem;
                state.key_pem = key_pem;
                tracing::info!(cert = %dir.cert.display(), "serving a new certificate");
            }
            // Perhaps caught between the two files' updates: the next check sees both.
            Err(e) => {
                tracing::warn!(error = %e, "the changed certificate is unusable; keeping the current one")
            }
        }
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.reload_if_changed();
        Some(self.current.read().clone())
    }
}

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// The certificate and key of a `kubernetes.io/tls` Secret.
fn secret_pem(secret: &Secret) -> Result<(Vec<u8>, Vec<u8>), Error> {
    let name = secret.metadata.name.clone().unwrap_or_default();
    let field = |key: &str| {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|b| b.0.clone())
            .ok_or_else(|| Error::SecretField {
                secret: name.clone(),
                key: key.into(),
            })
    };
    Ok((field(TLS_CERT_KEY)?, field(TLS_PRIVATE_KEY_KEY)?))
}

/// A certificate chain and key, checked to belong together.
fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, Error> {
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(cert_pem).collect::<Result<_, _>>()?;
    if certs.is_empty() {
        return Err(Error::NoCertificate);
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)?;
    let provider = rustls::crypto::ring::default_provider();
    let ck = CertifiedKey::from_der(certs, key, &provider)?;
    Ok(ck)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook::{admit_fn, AdmissionResponse, Server};
    use k8s_openapi::ByteString;
    use serde_json::{json, Value};

    /// A CA, and a serving certificate and key it signed for `names`.
    struct Pki {
        ca: String,
        cert: String,
        key: String,
    }

    fn pki(names: &[&str]) -> Pki {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "webhook-test-ca");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap();
        Pki {
            ca: ca.pem(),
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    /// An HTTPS client trusting `ca` only.
    fn client(ca: &str) -> reqwest::Client {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(ca.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        reqwest::Client::builder()
            .tls_backend_preconfigured(cfg)
            .build()
            .unwrap()
    }

    fn write_pair(dir: &Path, p: &Pki) {
        std::fs::write(dir.join(TLS_CERT_KEY), &p.cert).unwrap();
        std::fs::write(dir.join(TLS_PRIVATE_KEY_KEY), &p.key).unwrap();
    }

    /// Makes the next handshake read the directory again.
    fn expire_check(store: &CertStore) {
        let dir = store.dir.as_ref().unwrap();
        dir.state.lock().checked = Instant::now() - RELOAD_CHECK * 2;
    }

    #[test]
    fn refuses_unusable_pairs() {
        let a = pki(&["a.test"]);
        let b = pki(&["b.test"]);
        assert!(matches!(
            CertStore::from_pem(a.cert.as_bytes(), b.key.as_bytes()),
            Err(Error::Tls(_))
        ));
        assert!(matches!(
            CertStore::from_pem(b"", a.key.as_bytes()),
            Err(Error::NoCertificate)
        ));
        assert!(CertStore::from_pem(a.cert.as_bytes(), b"not a key").is_err());
        let missing = CertStore::from_dir("/nonexistent-webhook-certs").unwrap_err();
        assert!(
            missing
                .to_string()
                .starts_with("reading /nonexistent-webhook-certs/tls.crt:"),
            "{missing}"
        );
    }

    #[test]
    fn reads_a_tls_secret() {
        let a = pki(&["a.test"]);
        let mut s = Secret::default();
        s.metadata.name = Some("certs".into());
        s.data = Some(
            [
                (
                    TLS_CERT_KEY.to_string(),
                    ByteString(a.cert.clone().into_bytes()),
                ),
                (
                    TLS_PRIVATE_KEY_KEY.to_string(),
                    ByteString(a.key.clone().into_bytes()),
                ),
            ]
            .into(),
        );
        let (cert, key) = secret_pem(&s).unwrap();
        CertStore::from_pem(&cert, &key).unwrap();
        s.data.as_mut().unwrap().remove(TLS_PRIVATE_KEY_KEY);
        assert_eq!(
            secret_pem(&s).unwrap_err().to_string(),
            "the Secret certs has no tls.key"
        );
    }

    #[test]
    fn follows_the_directory_keeping_the_old_pair_through_a_bad_change() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (pki(&["a.test"]), pki(&["b.test"]));
        write_pair(dir.path(), &a);
        let store = CertStore::from_dir(dir.path()).unwrap();
        let first = store.certificate();

        // Half-written: the new certificate with the old key. Kept the old pair.
        std::fs::write(dir.path().join(TLS_CERT_KEY), &b.cert).unwrap();
        expire_check(&store);
        assert_eq!(store.certificate(), first);

        // Both written: the new pair, once the check is due.
        std::fs::write(dir.path().join(TLS_PRIVATE_KEY_KEY), &b.key).unwrap();
        assert_eq!(store.certificate(), first, "not read again within a second");
        expire_check(&store);
        let second = store.certificate();
        assert_ne!(second, first);
        let want: Vec<_> = CertificateDer::pem_slice_iter(b.cert.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(second, want);
    }

    #[tokio::test]
    async fn serves_reviews_over_https_and_stops_on_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let p = pki(&["localhost"]);
        write_pair(dir.path(), &p);
        let store = Arc::new(CertStore::from_dir(dir.path()).unwrap());
        let tls = Arc::new(store.server_config().unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(
            Server::new()
                .admit(
                    "/validate",
                    admit_fn(|req| async move { AdmissionResponse::deny(&req, "no") }),
                )
                .serve(listener, tls, shutdown.clone()),
        );
        let http = client(&p.ca);
        let url = |path: &str| format!("https://localhost:{port}{path}");
        let body = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "u", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                        "resource": {"group": "", "version": "v1", "resource": "pods"},
                        "operation": "CREATE", "userInfo": {}}});
        let resp = http
            .post(url("/validate"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.version(),
            reqwest::Version::HTTP_2,
            "HTTP/2 when offered"
        );
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["response"]["status"]["message"], "no");
        let health = http.get(url("/healthz")).send().await.unwrap();
        assert_eq!(health.text().await.unwrap(), "ok");

        // A client that does not trust the CA is refused the handshake.
        let other = client(&pki(&["localhost"]).ca);
        assert!(other.get(url("/healthz")).send().await.is_err());

        // A new certificate in the directory serves new connections.
        let q = pki(&["localhost"]);
        write_pair(dir.path(), &q);
        expire_check(&store);
        let fresh = client(&q.ca);
        assert_eq!(
            fresh.get(url("/healthz")).send().await.unwrap().status(),
            200
        );

        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(15), server)
            .await
            .expect("the server stops after shutdown")
            .unwrap()
            .unwrap();
        assert!(
            client(&q.ca).get(url("/healthz")).send().await.is_err(),
            "nothing listens after shutdown"
        );
    }
}
