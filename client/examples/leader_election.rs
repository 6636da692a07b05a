//! Competes for a Lease and "works" while leader: run two copies and stop the one that
//! prints `leading`; the other takes over.
//!
//! ```text
//! cargo run -p skiff-client --example leader_election -- --identity a
//! ```
//! Exits 0 after releasing the lease on SIGTERM or Ctrl-C, 1 when leadership is lost.

use std::io::Write;
use std::time::Duration;

use clap::Parser;
use skiff_client::leader::{self, LeaderElector, Outcome};
use skiff_client::time::parse_duration;
use skiff_client::Client;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
struct Args {
    /// The kubeconfig to use.
    #[arg(long)]
    kubeconfig: Option<std::path::PathBuf>,
    /// The lease's namespace.
    #[arg(long, default_value = "default")]
    namespace: String,
    /// The lease's name.
    #[arg(long, default_value = "example-leader")]
    lease: String,
    /// This candidate's identity (default: host name and a random suffix).
    #[arg(long)]
    identity: Option<String>,
    /// How long a lease holds without renewal (a Go duration: `15s`, `1m`).
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    lease_duration: Duration,
    /// How long a leader keeps trying to renew.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    renew_deadline: Duration,
    /// The time between attempts.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    retry_period: Duration,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let client = Client::from_kubeconfig_or_default(args.kubeconfig.as_deref())?;
    let identity = args.identity.unwrap_or_else(leader::default_identity);
    let mut config = leader::Config::new(&args.namespace, &args.lease, &identity);
    config.lease_duration = args.lease_duration;
    config.renew_deadline = args.renew_deadline;
    config.retry_period = args.retry_period;

    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        stop.cancel();
    });
    println!("candidate {identity}");
    let outcome = LeaderElector::new(client, config)
        .run(shutdown, move |leading| async move {
            println!("leading {identity}");
            let _ = std::io::stdout().flush();
            // The work: here, waiting until leadership ends.
            leading.cancelled().await;
            println!("stopped working");
        })
        .await;
    let _ = std::io::stdout().flush();
    match outcome {
        Outcome::Shutdown => Ok(()),
        Outcome::Lost => {
            eprintln!("lost leadership");
            std::process::exit(1)
        }
    }
}
