//! What the webhook examples share: the serving flags (kube-style), logs, the serving
//! certificate and SIGTERM.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::Secret;
use skiff_client::webhook::{CertStore, Server};
use skiff_client::{Api, Client};
use tokio_util::sync::CancellationToken;

/// Where and how a webhook serves.
#[derive(Debug, clap::Args)]
pub struct ServeFlags {
    /// The address to listen on.
    #[arg(long, default_value = "0.0.0.0")]
    pub bind_address: IpAddr,
    /// The HTTPS port.
    #[arg(long, default_value_t = 8443)]
    pub secure_port: u16,
    /// A directory holding `tls.crt` and `tls.key` (a mounted `kubernetes.io/tls` Secret),
    /// read again when they change.
    #[arg(long, default_value = "/etc/webhook/certs")]
    pub cert_dir: PathBuf,
    /// The serving certificate (PEM), instead of `--cert-dir`'s.
    #[arg(long, requires = "tls_private_key_file")]
    pub tls_cert_file: Option<PathBuf>,
    /// The serving certificate's private key (PEM).
    #[arg(long, requires = "tls_cert_file")]
    pub tls_private_key_file: Option<PathBuf>,
    /// `NAMESPACE/NAME` of a `kubernetes.io/tls` Secret to read through the API instead of
    /// files, followed as it changes.
    #[arg(long, conflicts_with = "tls_cert_file")]
    pub tls_secret: Option<String>,
    /// The kubeconfig for `--tls-secret` (else `$KUBECONFIG`, `~/.kube/config`, or the pod's
    /// ServiceAccount).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Log verbosity (0-5).
    #[arg(short = 'v', long = "v", default_value_t = 2)]
    pub verbosity: u8,
}

/// Sets up logs, the certificate and SIGTERM, then serves `server` until SIGTERM or Ctrl-C.
pub async fn serve(flags: ServeFlags, server: Server) -> anyhow::Result<()> {
    let level = match flags.verbosity {
        0 => "error",
        1 => "warn",
        2 => "info",
        3 | 4 => "debug",
        _ => "trace",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));

    let certs = match (
        &flags.tls_secret,
        &flags.tls_cert_file,
        &flags.tls_private_key_file,
    ) {
        (Some(secret), _, _) => {
            let (ns, name) = secret
                .split_once('/')
                .with_context(|| format!("--tls-secret={secret}: expected NAMESPACE/NAME"))?;
            let client = Client::from_kubeconfig_or_default(flags.kubeconfig.as_deref())?;
            let secrets: Api<Secret> = Api::namespaced(client, ns);
            let store = Arc::new(
                CertStore::from_secret(&secrets, name)
                    .await
                    .with_context(|| format!("reading the Secret {secret}"))?,
            );
            let (follower, name, stop) = (store.clone(), name.to_string(), shutdown.clone());
            tokio::spawn(async move { follower.follow_secret(secrets, &name, stop).await });
            store
        }
        (None, Some(cert), Some(key)) => Arc::new(CertStore::from_files(cert, key)?),
        _ => Arc::new(
            CertStore::from_dir(&flags.cert_dir)
                .with_context(|| format!("--cert-dir={}", flags.cert_dir.display()))?,
        ),
    };
    let addr = SocketAddr::new(flags.bind_address, flags.secure_port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr}"))?;
    server
        .serve(listener, Arc::new(certs.server_config()?), shutdown)
        .await?;
    tracing::info!("stopped");
    Ok(())
}

/// Cancels `shutdown` on SIGTERM or Ctrl-C.
async fn cancel_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "no SIGTERM handler; Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    tracing::info!("shutting down");
    shutdown.cancel();
}
