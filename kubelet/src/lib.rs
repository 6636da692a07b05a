//! Skiff's kubelet: the node agent. It registers its node and keeps the node's status and
//! heartbeat lease fresh, writes the node's pod network configuration for the container
//! runtime, and talks to containerd through the Container Runtime Interface.

pub mod bootstrap;
pub mod cni;
pub mod cri;
pub mod csi;
pub mod node;
pub mod plugins;
pub mod pods;
pub mod server;

use std::path::PathBuf;

use tokio_util::sync::CancellationToken;

/// The version the kubelet reports in `status.nodeInfo.kubeletVersion`.
pub const KUBELET_VERSION: &str = concat!("v1.33.0-skiff.", env!("CARGO_PKG_VERSION"));

/// What the kubelet needs to run.
pub struct Kubelet {
    /// The API client.
    pub client: skiff_client::Client,
    /// The container runtime.
    pub runtime: cri::Runtime,
    /// How the node describes itself.
    pub node: node::NodeConfig,
    /// The CNI configuration directory the runtime reads.
    pub cni_conf_dir: PathBuf,
    /// The bridge pods attach to.
    pub cni_bridge: String,
    /// How pods are run on this node.
    pub pods: pods::PodConfig,
}

impl Kubelet {
    /// Registers the node and keeps it up to date until `shutdown`.
    pub async fn run(
        self,
        ready: CancellationToken,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let drivers = csi::Drivers::default();
        let claims = pods::csi::Mounter::new(self.client.clone(), drivers.clone());
        let agent =
            node::NodeAgent::new(self.client.clone(), self.node.clone(), self.runtime.clone())
                .with_volumes_in_use(claims.in_use());
        // The pod network first (the Node's pod CIDR if it exists already, else --pod-cidr),
        // so that the runtime reports NetworkReady in the first status; a node that has none
        // yet writes it once the control plane assigns one.
        let network_written = self.write_pod_network(&agent).await?;
        if !network_written {
            tracing::warn!(
                "the node has no pod CIDR yet: pods off the host network wait for the control plane to assign one"
            );
        }
        let node = agent.register().await?;
        let uid = node.metadata.uid.clone().unwrap_or_default();
        ready.cancel();
        let node_info = csi::NodeInfo::new(self.client.clone(), &self.node.name);
        let recorder =
            skiff_client::events::Recorder::new(self.client.clone(), "kubelet", &self.node.name);
        let shared = pods::Shared {
            client: self.client.clone(),
            runtime: self.runtime.clone(),
            config: std::sync::Arc::new(self.pods.clone()),
            recorder,
            images: pods::images::Puller::new(self.runtime.clone()),
            tokens: pods::tokens::Manager::new(self.client.clone()),
            claims,
            allocations: pods::resize::Ledger::default(),
            runtime_classes: pods::sandbox::RuntimeClasses::spawn(
                self.client.clone(),
                shutdown.clone(),
            ),
        };
        let tokens = shared.tokens.clone();
        let network = async {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            let mut written = network_written;
            while !written {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                }
                match self.write_pod_network(&agent).await {
                    Ok(w) => written = w,
                    Err(e) => tracing::warn!(error = %e, "writing the pod network configuration"),
                }
            }
        };
        tokio::join!(
            network,
            agent.keep_lease(uid, shutdown.clone()),
            agent.keep_status(shutdown.clone()),
            pods::run(shared, shutdown.clone()),
            tokens.run(shutdown.clone()),
            plugins::run(
                plugins::registry_dir(&self.pods.root_dir),
                drivers,
                node_info,
                shutdown.clone()
            ),
        );
        Ok(())
    }

    /// Writes the CNI configuration for the node's pod CIDR, if it has one; says whether it
    /// did.
    async fn write_pod_network(&self, agent: &node::NodeAgent) -> anyhow::Result<bool> {
        let Some(cidr) = agent.pod_cidr().await else {
            return Ok(false);
        };
        let conf = cni::conflist(
            &self.cni_bridge,
            &cidr,
            &self.node.root_dir.join("cni/ipam"),
        );
        if cni::write(&self.cni_conf_dir, &conf)? {
            tracing::info!(pod_cidr = %cidr, "wrote the pod network configuration");
        }
        Ok(true)
    }
}
