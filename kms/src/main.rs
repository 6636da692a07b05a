//! `skiff-kms`: serves the KMS v2 plugin API on a unix socket, or changes its keys file
//! (`rotate`, `remove-key`) or shows it (`status`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Parser, Subcommand};
use skiff_http::daemon;
use skiff_kms::keys;
use tokio_util::sync::CancellationToken;

/// Skiff's KMS v2 plugin: key-encryption keys in a file of its own, served to the API server
/// as the Kubernetes KMS v2 gRPC API on a unix socket.
#[derive(Debug, Parser)]
#[command(name = "skiff-kms", version, args_conflicts_with_subcommands = true)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// The socket to serve on, unix:///path/kms.sock (made mode 0600; a stale one left by a
    /// dead process is replaced).
    #[arg(long)]
    listen: Option<String>,
    /// The keys file (JSON, mode 0600); made with one new key if it does not exist.
    #[arg(long)]
    keys_file: Option<PathBuf>,
    /// Where to serve /healthz, /readyz and /metrics over plain HTTP (ADDRESS:PORT; port 0
    /// picks a free one); not served without it.
    #[arg(long)]
    health_bind_address: Option<SocketAddr>,
    #[command(flatten)]
    log: daemon::LogFlags,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Adds a new key and makes it primary (the old keys stay, for decryption); prints its id.
    Rotate {
        /// The keys file.
        #[arg(long)]
        keys_file: PathBuf,
    },
    /// Removes a key that is no longer primary.
    RemoveKey {
        /// The keys file.
        #[arg(long)]
        keys_file: PathBuf,
        /// The key's id.
        id: String,
    },
    /// Prints the keys and which is primary.
    Status {
        /// The keys file.
        #[arg(long)]
        keys_file: PathBuf,
    },
}

fn rotate(path: &Path) -> anyhow::Result<()> {
    let mut k = keys::load(path)?;
    let id = k.rotate()?;
    keys::save(path, &k)?;
    println!("{id}");
    Ok(())
}

fn remove_key(path: &Path, id: &str) -> anyhow::Result<()> {
    let mut k = keys::load(path)?;
    k.remove(id)?;
    keys::save(path, &k)?;
    println!("removed key {id}");
    Ok(())
}

fn status(path: &Path) -> anyhow::Result<()> {
    let k = keys::load(path)?;
    let width = k.keys.iter().map(|k| k.id.len()).max().unwrap_or(2).max(2);
    println!("{:<width$}   {:<20}   PRIMARY", "ID", "CREATED");
    for key in &k.keys {
        let primary = if key.id == k.primary { "*" } else { "" };
        println!("{:<width$}   {:<20}   {primary}", key.id, key.created);
    }
    Ok(())
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let listen = args
        .listen
        .context("--listen unix:///PATH is required to serve")?;
    let keys_file = args.keys_file.context("--keys-file is required")?;
    let path = skiff_kms::socket_path(&listen)?;
    let plugin = skiff_kms::Plugin::open(&keys_file)?;
    let listener = skiff_kms::bind(&path)?;
    let shutdown = CancellationToken::new();
    daemon::cancel_on_signal(shutdown.clone());
    if let Some(addr) = args.health_bind_address {
        let mut registry = prometheus_client::registry::Registry::default();
        plugin.metrics().register(&mut registry);
        let ready = CancellationToken::new();
        ready.cancel();
        let p = plugin.clone();
        let healthy: daemon::HealthCheck = std::sync::Arc::new(move || match p.problem() {
            None => Ok(()),
            Some(e) => Err(e),
        });
        let bound = daemon::serve_health_checked(
            addr,
            registry,
            healthy,
            ready,
            "not serving",
            shutdown.clone(),
        )
        .await
        .with_context(|| format!("serving health on {addr}"))?;
        tracing::info!(%bound, "serving /healthz, /readyz and /metrics");
    }
    tracing::info!(socket = %path.display(), keys = %keys_file.display(), primary = %plugin.primary(), "serving the KMS v2 API");
    skiff_kms::serve(plugin, listener, path, shutdown).await?;
    tracing::info!("stopped");
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    match &args.command {
        Some(Command::Rotate { keys_file }) => rotate(keys_file),
        Some(Command::RemoveKey { keys_file, id }) => remove_key(keys_file, id),
        Some(Command::Status { keys_file }) => status(keys_file),
        None => {
            args.log.init();
            serve(args).await
        }
    }
}
