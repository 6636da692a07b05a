//! `skiff-csi`: one of Skiff's CSI drivers on a node, with its kubelet registrar and, given
//! a kubeconfig, its external provisioner and resizer.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use skiff_csi::driver::{self, Driver, Kind};
use skiff_csi::{attacher, capacity, election, provisioner, registrar, resizer, CsiClient};
use skiff_http::daemon;
use skiff_rules::duration::parse as parse_duration;
use tokio_util::sync::CancellationToken;

/// Skiff's CSI driver for node-local (`local.csi.skiff.dev`) or shared
/// (`shared.csi.skiff.dev`) directory volumes.
#[derive(Debug, Parser)]
#[command(name = "skiff-csi", version)]
struct Args {
    /// The driver to serve: `local.csi.skiff.dev` or `shared.csi.skiff.dev`.
    #[arg(long, value_parser = [driver::LOCAL_DRIVER, driver::SHARED_DRIVER])]
    driver: String,
    /// This node's name: the CSI node id, and the local driver's topology.
    #[arg(long)]
    node_id: String,
    /// Where volumes are made (for the shared driver: the same shared filesystem path on
    /// every node).
    #[arg(long)]
    data_dir: PathBuf,
    /// The CSI socket, unix:///PATH (default: KUBELET_ROOT/plugins/DRIVER/csi.sock).
    #[arg(long)]
    endpoint: Option<String>,
    /// The kubelet's root directory: the registration socket goes in its `plugins_registry`.
    #[arg(long, default_value = "/var/lib/kubelet")]
    kubelet_root_dir: PathBuf,
    /// Register the driver with the kubelet through the plugin registration socket.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    register: bool,
    /// The most volumes a node may hold (NodeGetInfo's max_volumes_per_node; 0: no limit).
    #[arg(long, default_value_t = 128)]
    max_volumes_per_node: i64,
    /// The kubeconfig of the provisioner and resizer; without it only the driver and its
    /// registrar run.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Elect one provisioner and one resizer among the nodes, each through its own Lease
    /// (default: on for the shared driver; the local driver provisions on each node for its
    /// own claims).
    #[arg(long, action = clap::ArgAction::Set)]
    leader_elect: Option<bool>,
    /// The namespace of the leader election Leases.
    #[arg(long, default_value = "kube-system")]
    leader_election_namespace: String,
    /// Claims, and released volumes, the provisioner works on at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..))]
    worker_threads: u16,
    /// Publish the driver's free space as CSIStorageCapacity objects (from GetCapacity), for
    /// the scheduler to place pods where their claims fit.
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    enable_capacity: bool,
    /// How often the published capacity is refreshed from the driver.
    #[arg(long, default_value = "1m0s", value_parser = skiff_rules::duration::parse)]
    capacity_poll_interval: Duration,
    /// Publish capacity for StorageClasses with `volumeBindingMode: Immediate` too.
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    capacity_for_immediate_binding: bool,
    /// The namespace of the CSIStorageCapacity objects.
    #[arg(long, default_value = "kube-system")]
    capacity_namespace: String,
    /// How long a leader's Lease holds without renewal.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    leader_election_lease_duration: Duration,
    /// How long the leader keeps trying to renew before it gives up.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    leader_election_renew_deadline: Duration,
    /// How often candidates try to acquire the Lease and the leader renews it.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    leader_election_retry_period: Duration,
    /// Address and port for /healthz, /readyz and /metrics (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:9809")]
    http_endpoint: SocketAddr,
    #[command(flatten)]
    log: daemon::LogFlags,
}

/// Runs the provisioner and, when `capacity` says how, the capacity publisher (the
/// external-provisioner's two halves) until `shutdown`.
async fn provisioning(
    client: skiff_client::Client,
    csi: CsiClient,
    plugin: provisioner::Plugin,
    config: provisioner::Config,
    capacity: Option<capacity::Config>,
    shutdown: CancellationToken,
) {
    let factory = skiff_client::informer::InformerFactory::new(client.clone(), shutdown.clone());
    let publisher = capacity.and_then(|c| {
        match capacity::Publisher::new(client.clone(), csi.clone(), &plugin, c, &factory) {
            Ok(p) => Some(p),
            Err(e) => {
                // Checked at start-up; nothing else can make it fail.
                tracing::error!(error = %e, "not publishing capacity");
                None
            }
        }
    });
    let refresh = publisher.as_ref().map(capacity::Publisher::refresher);
    let publishing = async {
        if let Some(p) = publisher {
            p.run(shutdown.clone()).await;
        }
    };
    tokio::join!(
        provisioner::run(client, csi, plugin, config, refresh, shutdown.clone()),
        publishing,
    );
}

/// Runs the provisioner (with the capacity publisher), attacher and resizer together until
/// `shutdown`.
async fn sidecars(
    client: skiff_client::Client,
    csi: CsiClient,
    plugin: provisioner::Plugin,
    config: provisioner::Config,
    capacity: Option<capacity::Config>,
    shutdown: CancellationToken,
) {
    tokio::join!(
        provisioning(
            client.clone(),
            csi.clone(),
            plugin.clone(),
            config.clone(),
            capacity,
            shutdown.clone()
        ),
        attacher::run(
            client.clone(),
            csi.clone(),
            plugin.clone(),
            config.clone(),
            shutdown.clone()
        ),
        resizer::run(client, csi, plugin, config, shutdown),
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    args.log.init();
    let kind = Kind::from_driver_name(&args.driver).context("--driver")?;
    if args.node_id.is_empty() {
        bail!("--node-id must not be empty");
    }
    if args.capacity_poll_interval.is_zero() {
        bail!("--capacity-poll-interval must be greater than zero");
    }
    let drv = Driver::new(driver::Config {
        kind,
        node_id: args.node_id.clone(),
        data_dir: args.data_dir.clone(),
        max_volumes_per_node: args.max_volumes_per_node,
    })
    .with_context(|| format!("making --data-dir {}", args.data_dir.display()))?;
    let name = kind.driver_name();
    let socket = match &args.endpoint {
        Some(e) => skiff_csi::socket_path(e)?,
        None => registrar::driver_socket(&args.kubelet_root_dir, name),
    };
    let shutdown = CancellationToken::new();
    daemon::cancel_on_signal(shutdown.clone());
    let ready = CancellationToken::new();
    let mut registry = prometheus_client::registry::Registry::default();
    drv.register_metrics(&mut registry);
    let bound = daemon::serve_health(
        args.http_endpoint,
        registry,
        ready.clone(),
        "not serving",
        shutdown.clone(),
    )
    .await
    .with_context(|| format!("serving health on {}", args.http_endpoint))?;
    tracing::info!(%bound, "serving /healthz, /readyz and /metrics");

    let mut tasks = tokio::task::JoinSet::new();
    let listener = skiff_csi::bind(&socket)?;
    tracing::info!(driver = name, socket = %socket.display(), data_dir = %args.data_dir.display(), "serving CSI");
    tasks.spawn(skiff_csi::serve_driver(
        drv.clone(),
        listener,
        socket.clone(),
        shutdown.clone(),
    ));
    if args.register {
        let reg = registrar::registration_socket(&args.kubelet_root_dir, name);
        let listener = skiff_csi::bind(&reg)?;
        tracing::info!(socket = %reg.display(), "serving plugin registration");
        tasks.spawn(registrar::serve(
            registrar::Registrar::new(name, &socket),
            listener,
            reg,
            shutdown.clone(),
        ));
    }
    if let Some(kubeconfig) = &args.kubeconfig {
        let client = skiff_client::Client::new(skiff_client::Config::from_kubeconfig(kubeconfig)?)?;
        let csi = CsiClient::new(&socket);
        let leader_elect = args.leader_elect.unwrap_or(kind == Kind::Shared);
        let plugin = provisioner::discover(&csi, !leader_elect)
            .await
            .context("asking the driver what it is over CSI")?;
        if args.enable_capacity && leader_elect && plugin.topology {
            bail!(
                "--enable-capacity: {} has topology, so its capacity is published by each \
                 node's instance (--leader-elect=false)",
                plugin.name
            );
        }
        let capacity_config = |node: Option<String>| {
            args.enable_capacity.then(|| capacity::Config {
                namespace: args.capacity_namespace.clone(),
                poll_interval: args.capacity_poll_interval,
                immediate_binding: args.capacity_for_immediate_binding,
                node,
            })
        };
        ready.cancel();
        if leader_elect {
            let identity = election::identity(&args.node_id);
            let config = provisioner::Config {
                node: None,
                identity: identity.clone(),
                workers: args.worker_threads.into(),
            };
            let capacity = capacity_config(None);
            let timing = election::Timing {
                lease_duration: args.leader_election_lease_duration,
                renew_deadline: args.leader_election_renew_deadline,
                retry_period: args.leader_election_retry_period,
            };
            let ns = &args.leader_election_namespace;
            let (p_lease, a_lease, r_lease) = (
                election::provisioner_lease(&plugin.name),
                election::attacher_lease(&plugin.name),
                election::resizer_lease(&plugin.name),
            );
            let (c, s, p, cf) = (client.clone(), csi.clone(), plugin.clone(), config.clone());
            let (c_a, s_a, p_a, cf_a) =
                (client.clone(), csi.clone(), plugin.clone(), config.clone());
            let client_r = client.clone();
            tokio::join!(
                election::run(
                    client.clone(),
                    ns,
                    &p_lease,
                    &identity,
                    timing,
                    shutdown.clone(),
                    move |token| provisioning(
                        c.clone(),
                        s.clone(),
                        p.clone(),
                        cf.clone(),
                        capacity.clone(),
                        token
                    ),
                ),
                election::run(
                    client.clone(),
                    ns,
                    &a_lease,
                    &identity,
                    timing,
                    shutdown.clone(),
                    move |token| attacher::run(
                        c_a.clone(),
                        s_a.clone(),
                        p_a.clone(),
                        cf_a.clone(),
                        token
                    ),
                ),
                election::run(
                    client,
                    ns,
                    &r_lease,
                    &identity,
                    timing,
                    shutdown.clone(),
                    move |token| {
                        resizer::run(
                            client_r.clone(),
                            csi.clone(),
                            plugin.clone(),
                            config.clone(),
                            token,
                        )
                    },
                ),
            );
        } else {
            let config = provisioner::Config {
                node: Some(args.node_id.clone()),
                identity: format!("{}_{}", plugin.name, args.node_id),
                workers: args.worker_threads.into(),
            };
            let capacity = capacity_config(Some(args.node_id.clone()));
            sidecars(client, csi, plugin, config, capacity, shutdown.clone()).await;
        }
        shutdown.cancel();
    } else {
        ready.cancel();
    }
    while let Some(r) = tasks.join_next().await {
        r.context("a server task failed")??;
    }
    tracing::info!("stopped");
    Ok(())
}
