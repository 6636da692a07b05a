//! `skiff`: the all-in-one command.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use skiff::{preflight, server};
use skiff_http::daemon;
use tokio_util::sync::CancellationToken;

/// Skiff in one command.
#[derive(Debug, Parser)]
#[command(name = "skiff", version)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
    #[command(flatten)]
    log: daemon::LogFlags,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run a whole cluster on this machine (etcd, a registry, the control plane and this
    /// machine as a node) until SIGTERM, which stops it all and removes its pods and rules.
    Server(Box<server::ServerArgs>),
    /// Say what this machine lacks for `skiff server`, and how to get it.
    Check {
        /// Check for the proxy's iptables mode rather than nftables.
        #[arg(long)]
        iptables: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    cli.log.init();
    match cli.command {
        Cmd::Check { iptables } => {
            let bin_dir = match server::bin_dir() {
                Ok(d) => d,
                Err(e) => {
                    eprintln!("skiff check: {e:#}");
                    return ExitCode::from(1);
                }
            };
            let problems = preflight::check(&preflight::Needs {
                etcd: true,
                registry: true,
                iptables,
                bin_dir,
            });
            if problems.is_empty() {
                println!("this machine has what skiff server needs");
                return ExitCode::SUCCESS;
            }
            for p in &problems {
                println!("missing: {p}");
            }
            ExitCode::from(2)
        }
        Cmd::Server(args) => {
            let rt = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("skiff server: {e}");
                    return ExitCode::from(1);
                }
            };
            let stop = CancellationToken::new();
            {
                let _in_runtime = rt.enter();
                daemon::cancel_on_signal(stop.clone());
            }
            match server::run(&args, rt.handle(), &|| stop.is_cancelled()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("skiff server: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
    }
}
