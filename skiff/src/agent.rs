//! `skiff agent`: this machine joins a `skiff server`'s cluster as a node — containerd, the
//! kubelet and the proxy — until SIGTERM, which removes its pods and rules and stops them.
//!
//! The join token (`DATA_DIR/node-token` on the server, or one of `skiff token create`) is
//! `CA-HASH::ID.SECRET`: the hash pins the cluster CA, which the agent reads anonymously from
//! `kube-public/cluster-info` and trusts only if its SHA-256 matches; the bootstrap token
//! `ID.SECRET` then lets the kubelet ask for its own certificate (`system:node:NAME`) and the
//! proxy for its (`system:kube-proxy`), through CertificateSigningRequests the controller
//! manager approves and signs. The token is sent only to a server whose CA matched.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use skiff_rules::Kubeconfig;

use crate::join::BootstrapToken;
use crate::node::{self, NodeArgs};
use crate::preflight;
use crate::server::{bin_dir, ca_hash};
use crate::supervisor::Supervisor;

/// How this machine joins.
#[derive(Debug, Clone, clap::Args)]
pub struct AgentArgs {
    /// The server's API address, `https://HOST:PORT`.
    #[arg(long, env = "SKIFF_SERVER")]
    pub server: String,
    /// The join token (the server's `DATA_DIR/node-token`).
    #[arg(
        long,
        env = "SKIFF_TOKEN",
        conflicts_with = "token_file",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// A file holding the join token.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Where the node keeps its state.
    #[arg(long, default_value = "/var/lib/skiff-agent")]
    pub data_dir: PathBuf,
    /// The registry pods' images come from (default: port 5000 on the server's host, where
    /// `skiff server --registry-address` puts it).
    #[arg(long)]
    pub registry: Option<String>,
    /// This machine as a node.
    #[command(flatten)]
    pub node: NodeArgs,
}

/// A join token's parts.
#[derive(Debug, PartialEq, Eq)]
pub struct Token {
    /// The hex SHA-256 of the cluster CA's PEM.
    pub ca_hash: String,
    /// The bootstrap token.
    pub token: BootstrapToken,
}

impl std::str::FromStr for Token {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Token> {
        let (hash, secret) = s
            .trim()
            .split_once("::")
            .context("a join token is CA-HASH::ID.SECRET (the server's DATA_DIR/node-token)")?;
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            bail!("the join token's CA hash is not a hex SHA-256 (64 hex digits)");
        }
        if secret.is_empty() {
            bail!("the join token has no secret after \"::\"");
        }
        Ok(Token {
            ca_hash: hash.to_ascii_lowercase(),
            token: secret.parse()?,
        })
    }
}

/// Reads the cluster CA from `kube-public/cluster-info` on `server` (whose certificate cannot
/// be checked yet, so no credentials are sent) and keeps it only if it matches the token's
/// hash.
pub async fn fetch_ca(server: &str, token: &Token) -> Result<Vec<u8>> {
    crate::install_crypto_provider();
    let client = reqwest::Client::builder()
        .tls_danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(10))
        .build()?;
    let url = format!(
        "{}/api/v1/namespaces/kube-public/configmaps/cluster-info",
        server.trim_end_matches('/')
    );
    let resp = client
        .get(&url)
        .send()
        .await
        .with_context(|| format!("reaching {server}"))?;
    match resp.status() {
        s if s.is_success() => {}
        s @ (reqwest::StatusCode::UNAUTHORIZED | reqwest::StatusCode::FORBIDDEN) => {
            bail!("the server does not let anonymous requests read kube-public/cluster-info ({s})")
        }
        s => bail!("reading cluster-info from {server}: {s}"),
    }
    let cm: serde_json::Value = resp.json().await?;
    let kubeconfig = cm["data"]["kubeconfig"]
        .as_str()
        .context("cluster-info holds no kubeconfig")?;
    let kubeconfig =
        Kubeconfig::from_yaml(kubeconfig).context("cluster-info's kubeconfig is not YAML")?;
    let ca_b64 = kubeconfig
        .clusters
        .first()
        .and_then(|c| c.cluster.certificate_authority_data.as_deref())
        .context("cluster-info's kubeconfig has no certificate-authority-data")?;
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD
        .decode(ca_b64)
        .context("cluster-info's CA is not base64")?;
    if ca_hash(&ca) != token.ca_hash {
        bail!(
            "the server's CA does not match the join token (its SHA-256 is {}): wrong server, or someone in between",
            ca_hash(&ca)
        );
    }
    Ok(ca)
}

/// The registry by default: port 5000 on the server's host.
fn default_registry(server: &str) -> Result<String> {
    let url = reqwest::Url::parse(server).with_context(|| format!("--server {server:?}"))?;
    let host = url
        .host_str()
        .with_context(|| format!("--server {server:?} names no host"))?;
    Ok(format!("{host}:5000"))
}

/// Joins and runs the node until `stop` says so.
pub fn run(args: &AgentArgs, rt: &tokio::runtime::Handle, stop: &dyn Fn() -> bool) -> Result<()> {
    let bin = bin_dir()?;
    preflight::require(
        &preflight::Needs {
            etcd: false,
            registry: false,
            iptables: args.node.proxy_mode == "iptables",
            control_plane: false,
            bin_dir: bin.clone(),
        },
        "skiff agent",
    )?;
    let token_text = match (&args.token, &args.token_file) {
        (Some(t), _) => t.clone(),
        (None, Some(f)) => std::fs::read_to_string(f)
            .with_context(|| format!("reading --token-file {}", f.display()))?,
        (None, None) => bail!("give --token or --token-file (the server's DATA_DIR/node-token)"),
    };
    let token: Token = token_text.parse()?;
    let registry = match &args.registry {
        Some(r) => r.clone(),
        None => default_registry(&args.server)?,
    };
    let ca = rt.block_on(fetch_ca(&args.server, &token))?;
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let identity = node::Identity::join(&args.data_dir, &args.server, &ca, &token.token, rt)?;
    let logs = args.data_dir.join("logs");
    let mut sup = Supervisor::default();
    let result = start_and_wait(args, &bin, &identity, &registry, &logs, &mut sup, stop);
    tracing::info!("stopping");
    node::stop(&mut sup, &bin, &args.data_dir, &args.node.cni_bridge(), rt);
    sup.stop_all(Duration::from_secs(10));
    result
}

fn start_and_wait(
    args: &AgentArgs,
    bin: &Path,
    identity: &node::Identity,
    registry: &str,
    logs: &Path,
    sup: &mut Supervisor,
    stop: &dyn Fn() -> bool,
) -> Result<()> {
    node::Node {
        args: &args.node,
        bin,
        data_dir: &args.data_dir,
        logs,
        identity,
        registry,
        pod_cidr: None,
    }
    .start(sup)?;
    println!("Joined {} as a node. Logs: {}", args.server, logs.display());
    sup.watch_until(stop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_tokens_are_checked_before_use() {
        let hash = "ab".repeat(32);
        let t: Token = format!("{hash}::abcdef.0123456789abcdef\n")
            .parse()
            .unwrap();
        assert_eq!(t.ca_hash, hash);
        assert_eq!(t.token.to_string(), "abcdef.0123456789abcdef");
        let err = "s3cret".parse::<Token>().unwrap_err().to_string();
        assert!(err.contains("CA-HASH::ID.SECRET"), "{err}");
        let err = format!("{hash}::s3cret")
            .parse::<Token>()
            .unwrap_err()
            .to_string();
        assert!(err.contains("ID.SECRET"), "{err}");
        let err = "abc::abcdef.0123456789abcdef"
            .parse::<Token>()
            .unwrap_err()
            .to_string();
        assert!(err.contains("64 hex digits"), "{err}");
        let err = format!("{hash}::")
            .parse::<Token>()
            .unwrap_err()
            .to_string();
        assert!(err.contains("no secret"), "{err}");
    }

    #[test]
    fn the_registry_defaults_to_the_servers_host() {
        assert_eq!(
            default_registry("https://10.0.0.5:6443").unwrap(),
            "10.0.0.5:5000"
        );
        assert!(default_registry("not a url").is_err());
    }
}
