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
    /// Seconds a lease holds without renewal.
    #[arg(long, default_value_t = 15.0)]
    lease_duration: f64,
    /// Seconds a leader keeps trying to renew.
    #[arg(long, default_value_t = 10.0)]
    renew_deadline: f64,
    /// Seconds between attempts.
    #[arg(long, default_value_t = 2.0)]
    retry_period: f64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let client = Client::from_kubeconfig_or_default(args.kubeconfig.as_deref())?;
    let identity = args.identity.unwrap_or_else(leader::default_identity);
    let mut config = leader::Config::new(&args.namespace, &args.lease, &identity);
    config.lease_duration = Duration::from_secs_f64(args.lease_duration);
    config.renew_deadline = Duration::from_secs_f64(args.renew_deadline);
    config.retry_period = Duration::from_secs_f64(args.retry_period);

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
