//! The CSI drivers registered on this node, and what the node publishes about them.
//!
//! A driver comes in through the plugin watcher ([`crate::plugins`]); it is kept here with a
//! connection to its CSI socket, so that pod volumes ([`crate::pods::csi`]) reach its Node
//! service. The node tells the cluster about its drivers as Kubernetes' kubelet does: one
//! entry per driver in the node's `CSINode` object (`spec.drivers[]`: name, node ID,
//! topology keys, `allocatable.count`), the `csi.volume.kubernetes.io/nodeid` annotation on
//! the Node (a JSON map of driver to node ID), and the driver's topology segments as Node
//! labels, which the scheduler matches against volume topology.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::storage::v1::{CSINode, CSINodeDriver, CSINodeSpec, VolumeNodeResources};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use skiff_client::{Api, Client, Patch, PatchParams, PostParams};
use skiff_proto::csi::v1 as csi;
use tonic::transport::{Channel, Endpoint, Uri};

/// The Node annotation mapping each registered driver to this node's ID in it.
pub const NODE_ID_ANNOTATION: &str = "csi.volume.kubernetes.io/nodeid";

/// What can go wrong with a driver.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A CSI or registration call failed.
    #[error("{call}: {status}")]
    Call {
        /// Which call.
        call: &'static str,
        /// The driver's answer.
        status: tonic::Status,
    },
    /// The plugin answered something the kubelet cannot use.
    #[error("{0}")]
    Invalid(String),
    /// Reading or writing the node's objects failed.
    #[error("{0}")]
    Api(#[from] skiff_client::Error),
}

/// The result of a driver operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A gRPC channel over a Unix socket, made lazily (and re-made when the plugin restarts).
pub fn unix_channel(path: &Path) -> Channel {
    let path = path.to_path_buf();
    Endpoint::from_static("http://[::]:50051")
        .connect_timeout(std::time::Duration::from_secs(5))
        .connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(path).await?,
                ))
            }
        }))
}

/// One registered driver.
#[derive(Debug, Clone)]
pub struct Driver {
    /// Its name, e.g. `local.csi.skiff.dev`.
    pub name: String,
    /// Its CSI socket.
    pub endpoint: PathBuf,
    /// The ID the driver knows this node by.
    pub node_id: String,
    /// How many of its volumes this node can hold (0: no limit).
    pub max_volumes: i64,
    /// The topology segments this node is in, for this driver.
    pub topology: BTreeMap<String, String>,
    /// Whether its Node service stages volumes (`STAGE_UNSTAGE_VOLUME`).
    pub stage_unstage: bool,
    channel: Channel,
}

impl Driver {
    /// Connects to the driver at `endpoint` and asks its Node service who this node is and
    /// what the service can do.
    pub async fn connect(name: &str, endpoint: &Path) -> Result<Driver> {
        let channel = unix_channel(endpoint);
        let mut node = csi::node_client::NodeClient::new(channel.clone());
        let info =
            tokio::time::timeout(CALL_TIMEOUT, node.node_get_info(csi::NodeGetInfoRequest {}))
                .await
                .map_err(|_| Error::Call {
                    call: "NodeGetInfo",
                    status: tonic::Status::deadline_exceeded("no answer"),
                })?
                .map_err(|status| Error::Call {
                    call: "NodeGetInfo",
                    status,
                })?
                .into_inner();
        if info.node_id.is_empty() {
            return Err(Error::Invalid(format!(
                "driver {name:?} returned an empty node ID"
            )));
        }
        let caps = node
            .node_get_capabilities(csi::NodeGetCapabilitiesRequest {})
            .await
            .map_err(|status| Error::Call {
                call: "NodeGetCapabilities",
                status,
            })?
            .into_inner();
        let stage_unstage = caps.capabilities.iter().any(|c| {
            matches!(
                &c.r#type,
                Some(csi::node_service_capability::Type::Rpc(r))
                    if r.r#type == csi::node_service_capability::rpc::Type::StageUnstageVolume as i32
            )
        });
        Ok(Driver {
            name: name.to_string(),
            endpoint: endpoint.to_path_buf(),
            node_id: info.node_id,
            max_volumes: info.max_volumes_per_node,
            topology: info
                .accessible_topology
                .map(|t| t.segments.into_iter().collect())
                .unwrap_or_default(),
            stage_unstage,
            channel,
        })
    }

    /// The driver's Node service.
    pub fn node(&self) -> csi::node_client::NodeClient<Channel> {
        csi::node_client::NodeClient::new(self.channel.clone())
    }
}

/// How long one call to a plugin may take.
pub const CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The drivers registered on this node, by name. Cheap to clone.
#[derive(Clone, Default)]
pub struct Drivers(Arc<parking_lot::RwLock<BTreeMap<String, Arc<Driver>>>>);

impl Drivers {
    /// The driver called `name`, if registered.
    pub fn get(&self, name: &str) -> Option<Arc<Driver>> {
        self.0.read().get(name).cloned()
    }

    /// Records a driver (replacing one of the same name).
    pub fn insert(&self, d: Driver) {
        self.0.write().insert(d.name.clone(), Arc::new(d));
    }

    /// Forgets a driver.
    pub fn remove(&self, name: &str) {
        self.0.write().remove(name);
    }

    /// The registered drivers' names.
    pub fn names(&self) -> Vec<String> {
        self.0.read().keys().cloned().collect()
    }
}

/// Keeps the node's `CSINode`, node-ID annotation and topology labels in step with its
/// drivers (Kubernetes' `nodeinfomanager`).
#[derive(Clone)]
pub struct NodeInfo {
    client: Client,
    node: String,
}

impl NodeInfo {
    /// For node `node`.
    pub fn new(client: Client, node: &str) -> Self {
        NodeInfo {
            client,
            node: node.to_string(),
        }
    }

    /// Makes the node's `CSINode` (with no drivers) if it has none, owned by the Node.
    pub async fn init(&self) -> Result<()> {
        self.update_csinode(|_| {}).await
    }

    /// Publishes a registered driver.
    pub async fn add(&self, d: &Driver) -> Result<()> {
        self.patch_node(&d.name, Some(&d.node_id), &d.topology)
            .await?;
        let entry = CSINodeDriver {
            name: d.name.clone(),
            node_id: d.node_id.clone(),
            topology_keys: Some(d.topology.keys().cloned().collect()),
            allocatable: (d.max_volumes > 0).then(|| VolumeNodeResources {
                count: Some(d.max_volumes.min(i32::MAX as i64) as i32),
            }),
        };
        self.update_csinode(|drivers| {
            drivers.retain(|x| x.name != entry.name);
            drivers.push(entry.clone());
            drivers.sort_by(|a, b| a.name.cmp(&b.name));
        })
        .await
    }

    /// Withdraws a driver that went away.
    pub async fn remove(&self, driver: &str) -> Result<()> {
        self.patch_node(driver, None, &BTreeMap::new()).await?;
        self.update_csinode(|drivers| drivers.retain(|x| x.name != driver))
            .await
    }

    /// Sets (or removes) the driver's entry of the node-ID annotation and adds its topology
    /// labels.
    async fn patch_node(
        &self,
        driver: &str,
        node_id: Option<&str>,
        topology: &BTreeMap<String, String>,
    ) -> Result<()> {
        let api: Api<Node> = Api::all(self.client.clone());
        let node = api.get(&self.node).await?;
        let mut ids: BTreeMap<String, String> = node
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(NODE_ID_ANNOTATION))
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or_default();
        match node_id {
            Some(id) => {
                ids.insert(driver.to_string(), id.to_string());
            }
            None => {
                ids.remove(driver);
            }
        }
        let annotation = if ids.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::Value::String(serde_json::to_string(&ids).unwrap_or_default())
        };
        let labels: serde_json::Map<String, serde_json::Value> = topology
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        let mut meta = serde_json::json!({"annotations": {NODE_ID_ANNOTATION: annotation}});
        if !labels.is_empty() {
            meta["labels"] = serde_json::Value::Object(labels);
        }
        api.patch(
            &self.node,
            &PatchParams::default(),
            &Patch::Merge(&serde_json::json!({ "metadata": meta })),
        )
        .await?;
        Ok(())
    }

    /// Reads the node's `CSINode` (making it if missing), changes its drivers with `f`, and
    /// writes it back, again on a conflict.
    async fn update_csinode(&self, f: impl Fn(&mut Vec<CSINodeDriver>)) -> Result<()> {
        let api: Api<CSINode> = Api::all(self.client.clone());
        let mut last = None;
        for _ in 0..5 {
            let r = match api.get_opt(&self.node).await? {
                Some(mut c) => {
                    let before = c.spec.drivers.clone();
                    f(&mut c.spec.drivers);
                    if c.spec.drivers == before {
                        return Ok(());
                    }
                    api.replace(&self.node, &PostParams::default(), &c)
                        .await
                        .map(|_| ())
                }
                None => {
                    let nodes: Api<Node> = Api::all(self.client.clone());
                    let node = nodes.get(&self.node).await?;
                    let mut drivers = Vec::new();
                    f(&mut drivers);
                    let c = CSINode {
                        metadata: ObjectMeta {
                            name: Some(self.node.clone()),
                            owner_references: Some(vec![OwnerReference {
                                api_version: "v1".into(),
                                kind: "Node".into(),
                                name: self.node.clone(),
                                uid: node.metadata.uid.clone().unwrap_or_default(),
                                ..Default::default()
                            }]),
                            ..Default::default()
                        },
                        spec: CSINodeSpec { drivers },
                    };
                    api.create(&PostParams::default(), &c).await.map(|_| ())
                }
            };
            match r {
                Ok(()) => return Ok(()),
                Err(e) if e.is_conflict() || e.is_already_exists() => last = Some(e),
                Err(e) => return Err(e.into()),
            }
        }
        Err(last
            .map(Error::from)
            .unwrap_or_else(|| Error::Invalid("updating the CSINode kept conflicting".into())))
    }
}
