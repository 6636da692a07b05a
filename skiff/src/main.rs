//! `skiff`: the all-in-one command.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use skiff::{agent, preflight, server};
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
    /// Run a whole cluster on this machine (etcd, a registry, the control plane, the cluster
    /// DNS and this machine as a node) until SIGTERM, which stops it all and removes its pods
    /// and rules.
    Server(Box<server::ServerArgs>),
    /// Join this machine to a skiff server's cluster as a node until SIGTERM.
    Agent(Box<agent::AgentArgs>),
    /// Build the pause, busybox, httpd and skiff-dns images and push them to a registry.
    Images {
        /// The registry, `HOST:PORT` (plain HTTP).
        #[arg(long)]
        registry: String,
    },
    /// Print what a cluster runs in itself (`kube-public/cluster-info` for agents, and the
    /// cluster DNS) as YAML for `kubectl apply -f -`.
    Addons(Box<skiff::addons::AddonArgs>),
    /// Bootstrap tokens: join tokens for `skiff agent`.
    #[command(subcommand)]
    Token(TokenCmd),
    /// Secrets encryption at rest on this server: `status`, `rotate` (a new key-encryption
    /// key), `reencrypt` (every Secret written again under it).
    #[command(subcommand, name = "secrets-encrypt")]
    SecretsEncrypt(SecretsCmd),
    /// Say what this machine lacks for `skiff server`, and how to get it.
    Check {
        /// Check for the proxy's iptables mode rather than nftables.
        #[arg(long)]
        iptables: bool,
        /// Check for `skiff agent` (a node only) rather than `skiff server`.
        #[arg(long)]
        agent: bool,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCmd {
    /// Make a new bootstrap token and print the join token `CA-HASH::ID.SECRET` for
    /// `skiff agent --token`.
    Create {
        /// How long the token stays valid (`0`: for ever).
        #[arg(long, default_value = "24h", value_parser = skiff_rules::duration::parse)]
        ttl: std::time::Duration,
        /// An administrator's kubeconfig (its CA is the one the join token pins).
        #[arg(
            long,
            env = "KUBECONFIG",
            default_value = "/var/lib/skiff/kubeconfig.yaml"
        )]
        kubeconfig: std::path::PathBuf,
    },
}

/// Where `skiff secrets-encrypt` finds the server.
#[derive(Debug, clap::Args)]
struct ServerDirs {
    /// The server's data dir (its `skiff server --data-dir`).
    #[arg(long, default_value = "/var/lib/skiff")]
    data_dir: std::path::PathBuf,
    /// An administrator's kubeconfig (default: the server's own, DATA-DIR/server/admin.kubeconfig).
    #[arg(long)]
    kubeconfig: Option<std::path::PathBuf>,
}

impl ServerDirs {
    fn kubeconfig(&self) -> std::path::PathBuf {
        self.kubeconfig
            .clone()
            .unwrap_or_else(|| self.data_dir.join("server").join("admin.kubeconfig"))
    }
}

#[derive(Debug, Subcommand)]
enum SecretsCmd {
    /// Whether Secrets are encrypted, the keys, the primary one, and the API server's view.
    Status(ServerDirs),
    /// Make a new key-encryption key primary (the old ones still decrypt) and wait until the
    /// API server encrypts with it.
    Rotate(ServerDirs),
    /// Write every Secret again, under the API server's current key.
    Reencrypt {
        #[command(flatten)]
        dirs: ServerDirs,
        /// Then remove the keys that are no longer primary.
        #[arg(long)]
        prune: bool,
    },
}

/// Runs `body` with a runtime whose token is cancelled on SIGTERM or SIGINT.
fn until_signal(
    what: &str,
    body: impl FnOnce(&tokio::runtime::Handle, &dyn Fn() -> bool) -> anyhow::Result<()>,
) -> ExitCode {
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{what}: {e}");
            return ExitCode::from(1);
        }
    };
    let stop = CancellationToken::new();
    {
        let _in_runtime = rt.enter();
        daemon::cancel_on_signal(stop.clone());
    }
    match body(rt.handle(), &|| stop.is_cancelled()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{what}: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    cli.log.init();
    match cli.command {
        Cmd::Check { iptables, agent } => {
            let bin_dir = match server::bin_dir() {
                Ok(d) => d,
                Err(e) => {
                    eprintln!("skiff check: {e:#}");
                    return ExitCode::from(1);
                }
            };
            let problems = preflight::check(&preflight::Needs {
                etcd: !agent,
                registry: !agent,
                iptables,
                control_plane: !agent,
                bin_dir,
            });
            let what = if agent { "skiff agent" } else { "skiff server" };
            if problems.is_empty() {
                println!("this machine has what {what} needs");
                return ExitCode::SUCCESS;
            }
            for p in &problems {
                println!("missing: {p}");
            }
            ExitCode::from(2)
        }
        Cmd::Images { registry } => until_signal("skiff images", |rt, _| {
            let pushed = rt.block_on(skiff::images::push_all(&registry, &server::bin_dir()?))?;
            for r in [pushed.pause, pushed.busybox, pushed.httpd, pushed.dns] {
                println!("{r}");
            }
            Ok(())
        }),
        Cmd::Addons(args) => match args.render() {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("skiff addons: {e:#}");
                ExitCode::from(1)
            }
        },
        Cmd::Token(TokenCmd::Create { ttl, kubeconfig }) => {
            until_signal("skiff token create", |rt, _| {
                let config = skiff_client::Config::from_kubeconfig(&kubeconfig)?;
                let ca = config
                    .ca_pem
                    .ok_or_else(|| anyhow::anyhow!("{} has no cluster CA", kubeconfig.display()))?;
                let token = skiff::join::BootstrapToken::generate();
                rt.block_on(skiff::join::publish_token(&kubeconfig, &token, ttl))?;
                println!("{}::{token}", server::ca_hash(&ca));
                Ok(())
            })
        }
        Cmd::SecretsEncrypt(cmd) => until_signal("skiff secrets-encrypt", |rt, _| {
            skiff::install_crypto_provider();
            let bin = server::bin_dir()?;
            rt.block_on(async {
                match &cmd {
                    SecretsCmd::Status(d) => {
                        skiff::secrets::status(&bin, &d.data_dir, &d.kubeconfig()).await
                    }
                    SecretsCmd::Rotate(d) => {
                        skiff::secrets::rotate(&bin, &d.data_dir, &d.kubeconfig()).await
                    }
                    SecretsCmd::Reencrypt { dirs, prune } => {
                        skiff::secrets::reencrypt(&bin, &dirs.data_dir, &dirs.kubeconfig(), *prune)
                            .await
                    }
                }
            })
        }),
        Cmd::Server(args) => until_signal("skiff server", |rt, stop| server::run(&args, rt, stop)),
        Cmd::Agent(args) => until_signal("skiff agent", |rt, stop| agent::run(&args, rt, stop)),
    }
}
