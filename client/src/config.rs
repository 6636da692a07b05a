//! Where the API server is and who the client is: read from a kubeconfig, as `kubectl`
//! reads it, or — inside a pod — from the pod's ServiceAccount, as client-go's
//! `rest.InClusterConfig` does: the API server at `https://$KUBERNETES_SERVICE_HOST:
//! $KUBERNETES_SERVICE_PORT`, the token, CA and namespace from
//! `/var/run/secrets/kubernetes.io/serviceaccount`. The kubelet renews that token before it
//! expires and rewrites the file, so a token that came from a file is read again every
//! [`TOKEN_FILE_RELOAD`] (see [`TokenSource`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use base64::Engine;
use skiff_rules::kubeconfig::Kubeconfig;

use crate::error::{Error, Result};

/// How to reach and authenticate to an API server.
#[derive(Clone)]
pub struct Config {
    /// The server's URL, `https://host:port`.
    pub server: String,
    /// The PEM certificates of the CA that signed the server's certificate.
    pub ca_pem: Option<Vec<u8>>,
    /// The client certificate and key (PEM), for certificate authentication.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    /// A bearer token, sent as `authorization: Bearer <token>`.
    pub token: Option<String>,
    /// A file holding the bearer token (a kubeconfig's `tokenFile`, a pod's ServiceAccount
    /// token), read again every [`TOKEN_FILE_RELOAD`]; it takes the place of `token`, which
    /// then only holds its first reading.
    pub token_file: Option<PathBuf>,
    /// The namespace `Api::default_namespaced` uses (the context's, else `default`).
    pub namespace: String,
    /// Requests per second the client allows itself on average (0: no limit).
    pub qps: f32,
    /// Requests allowed at once above the average rate.
    pub burst: u32,
    /// Deadline of every call except watches.
    pub timeout: std::time::Duration,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("server", &self.server)
            .field("namespace", &self.namespace)
            .field("client_certificate", &self.identity.is_some())
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("token_file", &self.token_file)
            .field("qps", &self.qps)
            .field("burst", &self.burst)
            .finish()
    }
}

/// Default client-side rate: requests per second.
pub const DEFAULT_QPS: f32 = 100.0;
/// Default client-side burst.
pub const DEFAULT_BURST: u32 = 200;

/// Where a pod finds its ServiceAccount's `token`, `ca.crt` and `namespace`.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// How long a token read from a file is used before the file is read again (client-go and
/// kube-rs wait a minute too; the kubelet renews a token well before that matters).
pub const TOKEN_FILE_RELOAD: Duration = Duration::from_secs(60);

impl Config {
    /// A configuration for `server` with no credentials and the default limits.
    pub fn new(server: impl Into<String>) -> Self {
        Config {
            server: server.into(),
            ca_pem: None,
            identity: None,
            token: None,
            token_file: None,
            namespace: "default".into(),
            qps: DEFAULT_QPS,
            burst: DEFAULT_BURST,
            timeout: std::time::Duration::from_secs(60),
        }
    }

    /// Reads the current context of a kubeconfig file.
    pub fn from_kubeconfig(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Kubeconfig(format!("reading {}: {e}", path.display())))?;
        Self::from_kubeconfig_str(&text, path.parent())
    }

    /// The kubeconfig `kubectl` would use (`$KUBECONFIG`'s first file, else
    /// `~/.kube/config`); when there is none that can be read, the in-cluster configuration
    /// if the program runs in a pod ([`Config::in_cluster`]). A kubeconfig comes first, as
    /// kube-rs and client-go's default loading order have it.
    pub fn infer() -> Result<Self> {
        let kubeconfig = default_kubeconfig_path().and_then(Self::from_kubeconfig);
        infer_from(
            kubeconfig,
            std::env::var("KUBERNETES_SERVICE_HOST").ok(),
            std::env::var("KUBERNETES_SERVICE_PORT").ok(),
            Path::new(SERVICE_ACCOUNT_DIR),
        )
    }

    /// The configuration of a program running in a pod: the API server at
    /// `https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`, with the pod's
    /// ServiceAccount token, CA and namespace from [`SERVICE_ACCOUNT_DIR`].
    pub fn in_cluster() -> Result<Self> {
        let (host, port) = in_cluster_env().ok_or_else(not_in_cluster)?;
        Self::in_cluster_from(&host, &port, SERVICE_ACCOUNT_DIR)
    }

    /// The in-cluster configuration for the API server at `host:port`, with the credentials
    /// in `dir` (`token`, and `ca.crt` and `namespace` when present).
    pub fn in_cluster_from(host: &str, port: &str, dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        if host.is_empty() || port.is_empty() {
            return Err(not_in_cluster());
        }
        let token_file = dir.join("token");
        let token = read_token(&token_file).map_err(Error::InCluster)?;
        // An IPv6 address is bracketed in a URL.
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host.to_string()
        };
        let mut c = Config::new(format!("https://{host}:{port}"));
        c.token = Some(token);
        c.token_file = Some(token_file);
        // client-go goes on without the CA (trusting the system's roots) when it is missing.
        let ca = dir.join("ca.crt");
        match std::fs::read(&ca) {
            Ok(pem) => c.ca_pem = Some(pem),
            Err(e) => {
                tracing::warn!(path = %ca.display(), error = %e, "no root CA for the in-cluster configuration")
            }
        }
        if let Ok(ns) = std::fs::read_to_string(dir.join("namespace")) {
            let ns = ns.trim();
            if !ns.is_empty() {
                c.namespace = ns.to_string();
            }
        }
        Ok(c)
    }

    /// Parses a kubeconfig's text; relative file paths in it are taken from `base`.
    pub fn from_kubeconfig_str(text: &str, base: Option<&Path>) -> Result<Self> {
        let kc = Kubeconfig::from_yaml(text).map_err(|e| Error::Kubeconfig(e.to_string()))?;
        let current = kc.current().map_err(|e| Error::Kubeconfig(e.to_string()))?;
        let (cluster, user) = (current.cluster, &current.user);
        let read =
            |data: &Option<String>, file: &Option<String>, what: &str| -> Result<Option<Vec<u8>>> {
                if let Some(d) = data {
                    return base64::engine::general_purpose::STANDARD
                        .decode(d.trim())
                        .map(Some)
                        .map_err(|e| Error::Kubeconfig(format!("{what}-data: {e}")));
                }
                if let Some(f) = file {
                    let p = resolve(base, f);
                    return std::fs::read(&p)
                        .map(Some)
                        .map_err(|e| Error::Kubeconfig(format!("{what} {}: {e}", p.display())));
                }
                Ok(None)
            };
        let mut c = Config::new(cluster.server.clone());
        c.ca_pem = read(
            &cluster.certificate_authority_data,
            &cluster.certificate_authority,
            "certificate-authority",
        )?;
        let cert = read(
            &user.client_certificate_data,
            &user.client_certificate,
            "client-certificate",
        )?;
        let key = read(&user.client_key_data, &user.client_key, "client-key")?;
        c.identity = match (cert, key) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => {
                return Err(Error::Kubeconfig(
                    "a client certificate needs both client-certificate and client-key".into(),
                ))
            }
        };
        match (&user.token, &user.token_file) {
            (Some(t), _) => c.token = Some(t.clone()),
            (None, Some(f)) => {
                let p = resolve(base, f);
                c.token = Some(read_token(&p).map_err(Error::Kubeconfig)?);
                c.token_file = Some(p);
            }
            _ => {}
        }
        if let Some(ns) = current.namespace {
            c.namespace = ns.to_string();
        }
        Ok(c)
    }
}

/// `infer`'s choice: the kubeconfig when it could be read, else the in-cluster configuration
/// when the service variables are set; otherwise the kubeconfig's error.
fn infer_from(
    kubeconfig: Result<Config>,
    host: Option<String>,
    port: Option<String>,
    dir: &Path,
) -> Result<Config> {
    let kubeconfig_err = match kubeconfig {
        Ok(c) => return Ok(c),
        Err(e) => e,
    };
    match (host, port) {
        (Some(h), Some(p)) if !h.is_empty() && !p.is_empty() => {
            Config::in_cluster_from(&h, &p, dir)
                .map_err(|e| Error::InCluster(format!("{e}; and {kubeconfig_err}")))
        }
        _ => Err(kubeconfig_err),
    }
}

fn in_cluster_env() -> Option<(String, String)> {
    let host = std::env::var("KUBERNETES_SERVICE_HOST").ok()?;
    let port = std::env::var("KUBERNETES_SERVICE_PORT").ok()?;
    (!host.is_empty() && !port.is_empty()).then_some((host, port))
}

fn not_in_cluster() -> Error {
    Error::InCluster(
        "unable to load in-cluster configuration, KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT must be defined"
            .into(),
    )
}

fn read_token(path: &Path) -> std::result::Result<String, String> {
    std::fs::read_to_string(path)
        .map(|t| t.trim().to_string())
        .map_err(|e| format!("reading the token {}: {e}", path.display()))
}

/// The bearer token a client sends: fixed, or read from a file and read again once it is
/// [`TOKEN_FILE_RELOAD`] old, so that a token the kubelet renewed is picked up. A file that
/// cannot be read (mid-rotation, briefly gone) leaves the last token in use.
#[derive(Clone)]
pub struct TokenSource {
    inner: Arc<TokenInner>,
}

enum TokenInner {
    Fixed(String),
    File {
        path: PathBuf,
        every: Duration,
        current: Mutex<(String, Instant)>,
    },
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &*self.inner {
            TokenInner::Fixed(_) => f.write_str("TokenSource::Fixed(<redacted>)"),
            TokenInner::File { path, .. } => write!(f, "TokenSource::File({})", path.display()),
        }
    }
}

impl TokenSource {
    /// Always `token`.
    pub fn fixed(token: impl Into<String>) -> Self {
        TokenSource {
            inner: Arc::new(TokenInner::Fixed(token.into())),
        }
    }

    /// The token in `path`, starting from `first` (its reading now), read again once it is
    /// `every` old.
    pub fn file(path: impl Into<PathBuf>, first: String, every: Duration) -> Self {
        TokenSource {
            inner: Arc::new(TokenInner::File {
                path: path.into(),
                every,
                current: Mutex::new((first, Instant::now())),
            }),
        }
    }

    /// The token of a configuration, if it has one.
    pub fn from_config(c: &Config) -> Option<Self> {
        match (&c.token_file, &c.token) {
            (Some(p), first) => {
                let first = match first {
                    Some(t) => t.clone(),
                    None => read_token(p).unwrap_or_default(),
                };
                Some(Self::file(p, first, TOKEN_FILE_RELOAD))
            }
            (None, Some(t)) => Some(Self::fixed(t.clone())),
            (None, None) => None,
        }
    }

    /// The token to send now.
    pub fn token(&self) -> String {
        match &*self.inner {
            TokenInner::Fixed(t) => t.clone(),
            TokenInner::File {
                path,
                every,
                current,
            } => {
                let mut cur = current.lock();
                if cur.1.elapsed() >= *every {
                    // Read at most once per period, even when the file cannot be read.
                    cur.1 = Instant::now();
                    match read_token(path) {
                        Ok(t) if !t.is_empty() => cur.0 = t,
                        Ok(_) => {
                            tracing::warn!(path = %path.display(), "the token file is empty; keeping the previous token")
                        }
                        Err(e) => tracing::warn!(error = %e, "keeping the previous token"),
                    }
                }
                cur.0.clone()
            }
        }
    }
}

fn default_kubeconfig_path() -> Result<PathBuf> {
    if let Some(k) = std::env::var_os("KUBECONFIG") {
        if let Some(first) = std::env::split_paths(&k).find(|p| !p.as_os_str().is_empty()) {
            return Ok(first);
        }
    }
    let home = std::env::var_os("HOME")
        .ok_or_else(|| Error::Kubeconfig("neither KUBECONFIG nor HOME is set".into()))?;
    Ok(PathBuf::from(home).join(".kube").join("config"))
}

fn resolve(base: Option<&Path>, file: &str) -> PathBuf {
    let p = PathBuf::from(file);
    match base {
        Some(b) if p.is_relative() => b.join(p),
        _ => p,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_current_context() {
        let text = r#"
apiVersion: v1
kind: Config
current-context: b
clusters:
- name: one
  cluster: {server: "https://10.0.0.1:6443", certificate-authority-data: "Q0E="}
- name: two
  cluster: {server: "https://127.0.0.1:7443"}
contexts:
- name: a
  context: {cluster: one, user: u}
- name: b
  context: {cluster: two, user: t, namespace: team}
users:
- name: u
  user: {client-certificate-data: "Q0VSVA==", client-key-data: "S0VZ"}
- name: t
  user: {token: secret}
"#;
        let c = Config::from_kubeconfig_str(text, None).unwrap();
        assert_eq!(c.server, "https://127.0.0.1:7443");
        assert_eq!(c.namespace, "team");
        assert_eq!(c.token.as_deref(), Some("secret"));
        assert!(c.identity.is_none());
        let c = Config::from_kubeconfig_str(
            &text.replace("current-context: b", "current-context: a"),
            None,
        )
        .unwrap();
        assert_eq!(c.ca_pem.as_deref(), Some(&b"CA"[..]));
        assert_eq!(c.identity, Some((b"CERT".to_vec(), b"KEY".to_vec())));
        assert_eq!(c.namespace, "default");
    }

    #[test]
    fn bad_kubeconfigs_name_the_problem() {
        let e = Config::from_kubeconfig_str("clusters: []\ncontexts: []\n", None).unwrap_err();
        assert!(e.to_string().contains("no context"), "{e}");
        let e =
            Config::from_kubeconfig_str("contexts: [{name: a, context: {cluster: nope}}]\n", None)
                .unwrap_err();
        assert!(e.to_string().contains("\"nope\" not found"), "{e}");
        let e = Config::from_kubeconfig("/nonexistent/kubeconfig").unwrap_err();
        assert!(e.to_string().contains("/nonexistent/kubeconfig"), "{e}");
    }

    fn sa_dir(token: &str) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("token"), format!("{token}\n")).unwrap();
        std::fs::write(d.path().join("ca.crt"), "PEM").unwrap();
        std::fs::write(d.path().join("namespace"), "team-a").unwrap();
        d
    }

    #[test]
    fn in_cluster_reads_the_service_account_directory() {
        let d = sa_dir("tok-1");
        let c = Config::in_cluster_from("10.96.0.1", "443", d.path()).unwrap();
        assert_eq!(c.server, "https://10.96.0.1:443");
        assert_eq!(c.token.as_deref(), Some("tok-1"));
        assert_eq!(
            c.token_file.as_deref(),
            Some(d.path().join("token").as_path())
        );
        assert_eq!(c.ca_pem.as_deref(), Some(&b"PEM"[..]));
        assert_eq!(c.namespace, "team-a");
        let c = Config::in_cluster_from("fd00::1", "6443", d.path()).unwrap();
        assert_eq!(c.server, "https://[fd00::1]:6443");
        // Without a token file there is no in-cluster configuration; without the variables
        // neither.
        let empty = tempfile::tempdir().unwrap();
        let e = Config::in_cluster_from("10.96.0.1", "443", empty.path()).unwrap_err();
        assert!(e.to_string().contains("reading the token"), "{e}");
        let e = Config::in_cluster_from("", "443", d.path()).unwrap_err();
        assert!(e.to_string().contains("KUBERNETES_SERVICE_HOST"), "{e}");
    }

    #[test]
    fn infer_prefers_a_kubeconfig_then_the_pod() {
        let d = sa_dir("tok");
        let env = || (Some("10.96.0.1".to_string()), Some("443".to_string()));
        let kc = Ok(Config::new("https://from-kubeconfig:6443"));
        let (h, p) = env();
        assert_eq!(
            infer_from(kc, h, p, d.path()).unwrap().server,
            "https://from-kubeconfig:6443"
        );
        let missing = || Err(Error::Kubeconfig("reading /none/config: not found".into()));
        let (h, p) = env();
        assert_eq!(
            infer_from(missing(), h, p, d.path()).unwrap().server,
            "https://10.96.0.1:443"
        );
        // Outside a pod the kubeconfig's own error stands.
        let e = infer_from(missing(), None, None, d.path()).unwrap_err();
        assert_eq!(e.to_string(), "kubeconfig: reading /none/config: not found");
        // In a pod without a token, both reasons are told.
        let (h, p) = env();
        let e = infer_from(missing(), h, p, Path::new("/nonexistent")).unwrap_err();
        assert!(
            e.to_string().contains("reading the token") && e.to_string().contains("/none/config"),
            "{e}"
        );
    }

    #[test]
    fn a_token_file_is_read_again_after_the_period() {
        let d = sa_dir("first");
        let c = Config::in_cluster_from("10.96.0.1", "443", d.path()).unwrap();
        let src = TokenSource::from_config(&c).unwrap();
        assert_eq!(src.token(), "first");
        // Rotated the way the kubelet rotates it: a new file renamed into place.
        let tmp = d.path().join("token.tmp");
        std::fs::write(&tmp, "second").unwrap();
        std::fs::rename(&tmp, d.path().join("token")).unwrap();
        // Within the period the token read last is kept ...
        assert_eq!(src.token(), "first");
        // ... and once it is over, the file is read again.
        let quick = TokenSource::file(d.path().join("token"), "first".into(), Duration::ZERO);
        assert_eq!(quick.token(), "second");
        // A file that went away leaves the last token in use.
        std::fs::remove_file(d.path().join("token")).unwrap();
        assert_eq!(quick.token(), "second");
        // A kubeconfig's tokenFile is a file source too.
        std::fs::write(d.path().join("t"), "kc-token").unwrap();
        let text = "current-context: a\ncontexts: [{name: a, context: {cluster: c, user: u}}]\nclusters: [{name: c, cluster: {server: \"https://x:1\"}}]\nusers: [{name: u, user: {tokenFile: t}}]\n";
        let c = Config::from_kubeconfig_str(text, Some(d.path())).unwrap();
        assert_eq!(c.token.as_deref(), Some("kc-token"));
        assert_eq!(c.token_file.as_deref(), Some(d.path().join("t").as_path()));
        assert_eq!(TokenSource::from_config(&c).unwrap().token(), "kc-token");
        assert_eq!(
            TokenSource::from_config(&Config::new("https://x:1")).map(|s| s.token()),
            None
        );
    }
}
