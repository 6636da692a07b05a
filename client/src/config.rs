//! Where the API server is and who the client is: read from a kubeconfig, as `kubectl`
//! reads it.

use std::path::{Path, PathBuf};

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
            .field("qps", &self.qps)
            .field("burst", &self.burst)
            .finish()
    }
}

/// Default client-side rate: requests per second.
pub const DEFAULT_QPS: f32 = 100.0;
/// Default client-side burst.
pub const DEFAULT_BURST: u32 = 200;

impl Config {
    /// A configuration for `server` with no credentials and the default limits.
    pub fn new(server: impl Into<String>) -> Self {
        Config {
            server: server.into(),
            ca_pem: None,
            identity: None,
            token: None,
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

    /// The kubeconfig `kubectl` would use: `$KUBECONFIG` (its first file), else
    /// `~/.kube/config`.
    pub fn infer() -> Result<Self> {
        Self::from_kubeconfig(default_kubeconfig_path()?)
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
        c.token = match (&user.token, &user.token_file) {
            (Some(t), _) => Some(t.clone()),
            (None, Some(f)) => {
                let p = resolve(base, f);
                Some(
                    std::fs::read_to_string(&p)
                        .map_err(|e| Error::Kubeconfig(format!("tokenFile {}: {e}", p.display())))?
                        .trim()
                        .to_string(),
                )
            }
            _ => None,
        };
        if let Some(ns) = current.namespace {
            c.namespace = ns.to_string();
        }
        Ok(c)
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
}
