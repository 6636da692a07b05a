//! The external provisioner: Kubernetes' `external-provisioner` sidecar, built in.
//!
//! It provisions a PersistentVolume for every claim the PV controller hands to its driver
//! (annotation `volume.kubernetes.io/storage-provisioner: DRIVER`), talking to the driver only
//! through CSI gRPC on its socket, so any CSI driver can sit behind it:
//!
//! 1. `CreateVolume` named `pvc-<claim uid>` (idempotent: a retry finds the same volume) with
//!    the claim's size, access modes and volume mode, the StorageClass's parameters (less the
//!    `csi.storage.k8s.io/` keys, of which `fstype` becomes the mount's filesystem type), and
//!    the node's topology when the claim names a `volume.kubernetes.io/selected-node`;
//! 2. a PersistentVolume of the same name, pre-bound to the claim (`claimRef`), with the
//!    class's reclaim policy and mount options, `pv.kubernetes.io/provisioned-by`, and a
//!    required node affinity from the volume's accessible topology.
//!
//! When a PersistentVolume it provisioned is `Released` with reclaim policy `Delete`, it
//! calls `DeleteVolume` and deletes the PersistentVolume.
//!
//! In node deployment ([`Config::node`]), as the local driver needs, each node's provisioner
//! takes only the claims whose selected node is its own, and deletes only volumes whose node
//! affinity is its node's topology; otherwise one provisioner at a time runs, chosen by the
//! caller through leader election. Events are the external-provisioner's: `Provisioning`,
//! `ProvisioningSucceeded`, `ProvisioningFailed`, `VolumeFailedDelete`.
//!
//! When the driver has no room on the node the scheduler chose (`RESOURCE_EXHAUSTED` for a
//! claim with a selected node, from a driver with topology), the claim is given back to the
//! scheduler as the external-provisioner's `ProvisioningReschedule` does: its
//! `volume.kubernetes.io/selected-node` is removed, and the scheduler's PreBind, seeing it
//! reset, schedules the pod again. After a volume is made or deleted, or making one failed,
//! the capacity publisher ([`crate::capacity`]) is asked to refresh.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    CSIPersistentVolumeSource, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm,
    ObjectReference, PersistentVolume, PersistentVolumeClaim, PersistentVolumeSpec,
    VolumeNodeAffinity,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use skiff_client::controller::{Action, Config as RunConfig, Controller};
use skiff_client::events::{reference, Recorder};
use skiff_client::informer::InformerFactory;
use skiff_client::reflector::{ObjectKey, Store};
use skiff_client::{Api, Client, DeleteParams, PostParams};
use skiff_proto::csi::v1 as csi;
use tokio_util::sync::CancellationToken;

use crate::capacity::Refresh;
use crate::CsiClient;

/// The claim annotation naming the driver that is to provision it.
pub const ANN_STORAGE_PROVISIONER: &str = "volume.kubernetes.io/storage-provisioner";
/// The same, as older PV controllers write it.
pub const ANN_BETA_STORAGE_PROVISIONER: &str = "volume.beta.kubernetes.io/storage-provisioner";
/// The claim annotation naming the node the scheduler chose for its first pod.
pub const ANN_SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
/// The PersistentVolume annotation naming the provisioner that made it.
pub const ANN_PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
/// The StorageClass parameter prefix reserved for the provisioner itself.
const RESERVED_PREFIX: &str = "csi.storage.k8s.io/";
/// The reserved parameter naming the filesystem type.
const FSTYPE_PARAMETER: &str = "csi.storage.k8s.io/fstype";

/// Why provisioning, deletion or resizing failed (the object is retried with back-off).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An API call failed.
    #[error(transparent)]
    Api(#[from] skiff_client::Error),
    /// The driver answered an error.
    #[error("rpc error: code = {code:?} desc = {message}", code = .0.code(), message = .0.message())]
    Csi(#[from] tonic::Status),
    /// The claim, class or volume cannot be provisioned as it is.
    #[error("{0}")]
    Invalid(String),
}

/// `Result` with an [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How a provisioner runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Node deployment: this node's name; only its claims and volumes are handled.
    pub node: Option<String>,
    /// This instance's identity, for events (`DRIVER_NODE` or the leader identity).
    pub identity: String,
    /// Claims (and volumes) handled at once by each controller.
    pub workers: usize,
}

/// What the provisioner learnt of the driver over CSI.
#[derive(Debug, Clone)]
pub struct Plugin {
    /// The driver's name (`GetPluginInfo`).
    pub name: String,
    /// Whether the driver has topology (`VOLUME_ACCESSIBILITY_CONSTRAINTS`).
    pub topology: bool,
    /// The node's topology (`NodeGetInfo`), in node deployment of a driver with topology.
    pub node_topology: Option<BTreeMap<String, String>>,
}

/// Asks the driver its name and, in node deployment of a driver that has topology
/// constraints, the node's topology.
pub async fn discover(csi: &CsiClient, node_deployment: bool) -> Result<Plugin> {
    let name = csi
        .identity
        .clone()
        .get_plugin_info(csi::GetPluginInfoRequest {})
        .await?
        .into_inner()
        .name;
    let caps = csi
        .identity
        .clone()
        .get_plugin_capabilities(csi::GetPluginCapabilitiesRequest {})
        .await?
        .into_inner()
        .capabilities;
    use csi::plugin_capability::{service, Type};
    let topology = caps.iter().any(|c| {
        matches!(&c.r#type, Some(Type::Service(s)) if s.r#type == service::Type::VolumeAccessibilityConstraints as i32)
    });
    let node_topology = if node_deployment && topology {
        let info = csi
            .node
            .clone()
            .node_get_info(csi::NodeGetInfoRequest {})
            .await?
            .into_inner();
        info.accessible_topology
            .map(|t| t.segments.into_iter().collect())
    } else {
        None
    };
    Ok(Plugin {
        name,
        topology,
        node_topology,
    })
}

/// Bytes in a quantity, rounded up.
pub fn bytes_of(q: &Quantity) -> Result<i64> {
    let parsed: skiff_rules::Quantity = q
        .try_into()
        .map_err(|e| Error::Invalid(format!("quantity {:?}: {e}", q.0)))?;
    Ok(parsed.value())
}

/// A quantity of `bytes`, in binary units when they are whole.
pub fn quantity_of(bytes: i64) -> Quantity {
    skiff_rules::Quantity::from_value(bytes, skiff_rules::quantity::Format::BinarySI).to_wire()
}

/// The CSI access mode a Kubernetes access mode asks for.
pub fn access_mode(mode: &str) -> csi::volume_capability::access_mode::Mode {
    use csi::volume_capability::access_mode::Mode;
    match mode {
        "ReadWriteOnce" | "ReadWriteOncePod" => Mode::SingleNodeWriter,
        "ReadOnlyMany" => Mode::MultiNodeReaderOnly,
        "ReadWriteMany" => Mode::MultiNodeMultiWriter,
        _ => Mode::Unknown,
    }
}

/// The CSI capabilities a claim asks for: one per access mode, block or mount.
pub fn capabilities(
    access_modes: &[String],
    block: bool,
    fs_type: &str,
    mount_flags: &[String],
) -> Vec<csi::VolumeCapability> {
    use csi::volume_capability::{AccessMode, AccessType, BlockVolume, MountVolume};
    access_modes
        .iter()
        .map(|m| csi::VolumeCapability {
            access_type: Some(if block {
                AccessType::Block(BlockVolume {})
            } else {
                AccessType::Mount(MountVolume {
                    fs_type: fs_type.to_string(),
                    mount_flags: mount_flags.to_vec(),
                    volume_mount_group: String::new(),
                })
            }),
            access_mode: Some(AccessMode {
                mode: access_mode(m) as i32,
            }),
        })
        .collect()
}

/// The required node affinity of a volume reachable from `topology`: one term per topology
/// segment set, each requiring every key to have its value.
pub fn node_affinity(topology: &[csi::Topology]) -> Option<VolumeNodeAffinity> {
    let terms: Vec<NodeSelectorTerm> = topology
        .iter()
        .filter(|t| !t.segments.is_empty())
        .map(|t| {
            let mut segs: Vec<_> = t.segments.iter().collect();
            segs.sort();
            NodeSelectorTerm {
                match_expressions: Some(
                    segs.into_iter()
                        .map(|(k, v)| NodeSelectorRequirement {
                            key: k.clone(),
                            operator: "In".into(),
                            values: Some(vec![v.clone()]),
                        })
                        .collect(),
                ),
                match_fields: None,
            }
        })
        .collect();
    if terms.is_empty() {
        return None;
    }
    Some(VolumeNodeAffinity {
        required: Some(NodeSelector {
            node_selector_terms: terms,
        }),
    })
}

/// Whether a volume with node affinity `affinity` is on the node of `topology`: some term
/// requires exactly values the node has.
pub fn affinity_matches(
    affinity: Option<&VolumeNodeAffinity>,
    topology: &BTreeMap<String, String>,
) -> bool {
    let Some(terms) = affinity
        .and_then(|a| a.required.as_ref())
        .map(|r| &r.node_selector_terms)
    else {
        return false;
    };
    terms.iter().any(|t| {
        let exprs = t.match_expressions.as_deref().unwrap_or_default();
        !exprs.is_empty()
            && exprs.iter().all(|e| {
                e.operator == "In"
                    && topology
                        .get(&e.key)
                        .is_some_and(|v| e.values.as_ref().is_some_and(|vs| vs.contains(v)))
            })
    })
}

fn annotation<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

/// The provisioner's shared state.
struct Provisioner {
    plugin: Plugin,
    config: Config,
    csi: CsiClient,
    client: Client,
    classes: Store<StorageClass>,
    recorder: Recorder,
    /// The capacity publisher to tell when free space changed.
    capacity: Option<Refresh>,
}

/// What a claim needs before it can be provisioned, or why it is not this provisioner's.
enum Decision {
    /// Not for this provisioner (yet).
    Skip,
    /// Provision with this class.
    Provision(Arc<StorageClass>),
}

impl Provisioner {
    fn decide(&self, claim: &PersistentVolumeClaim) -> Decision {
        let meta = &claim.metadata;
        if meta.deletion_timestamp.is_some() {
            return Decision::Skip;
        }
        let spec = claim.spec.as_ref();
        if spec
            .and_then(|s| s.volume_name.as_deref())
            .is_some_and(|v| !v.is_empty())
        {
            return Decision::Skip;
        }
        let ours = annotation(meta, ANN_STORAGE_PROVISIONER)
            .or_else(|| annotation(meta, ANN_BETA_STORAGE_PROVISIONER))
            == Some(self.plugin.name.as_str());
        if !ours {
            return Decision::Skip;
        }
        let selected = annotation(meta, ANN_SELECTED_NODE);
        if let Some(node) = &self.config.node {
            if selected != Some(node.as_str()) {
                return Decision::Skip;
            }
        }
        let Some(class_name) = spec.and_then(|s| s.storage_class_name.as_deref()) else {
            return Decision::Skip;
        };
        let Some(class) = self.classes.get(&ObjectKey::new("", class_name)) else {
            return Decision::Skip;
        };
        if class.provisioner != self.plugin.name {
            return Decision::Skip;
        }
        if class.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer")
            && selected.is_none()
        {
            return Decision::Skip;
        }
        Decision::Provision(class)
    }

    async fn provision(
        &self,
        claim: &PersistentVolumeClaim,
        class: &StorageClass,
    ) -> Result<PersistentVolume> {
        let meta = &claim.metadata;
        let uid = meta.uid.clone().unwrap_or_default();
        let pv_name = format!("pvc-{uid}");
        let spec = claim.spec.clone().unwrap_or_default();
        let resources = spec.resources.unwrap_or_default();
        let Some(request) = resources.requests.as_ref().and_then(|r| r.get("storage")) else {
            return Err(Error::Invalid(
                "claim has no storage request (spec.resources.requests.storage)".into(),
            ));
        };
        let required = bytes_of(request)?;
        let limit = resources
            .limits
            .as_ref()
            .and_then(|l| l.get("storage"))
            .map(bytes_of)
            .transpose()?
            .unwrap_or(0);
        let access_modes = spec.access_modes.unwrap_or_default();
        if access_modes.is_empty() {
            return Err(Error::Invalid("claim has no access modes".into()));
        }
        let block = spec.volume_mode.as_deref() == Some("Block");
        let mut parameters = HashMap::new();
        let mut fs_type = String::new();
        for (k, v) in class.parameters.clone().unwrap_or_default() {
            if k == FSTYPE_PARAMETER {
                fs_type = v;
            } else if !k.starts_with(RESERVED_PREFIX) {
                parameters.insert(k, v);
            }
        }
        let mount_options = class.mount_options.clone().unwrap_or_default();
        let topology = self.plugin.node_topology.as_ref().map(|t| {
            let t = csi::Topology {
                segments: t.clone().into_iter().collect(),
            };
            csi::TopologyRequirement {
                requisite: vec![t.clone()],
                preferred: vec![t],
            }
        });
        let request = csi::CreateVolumeRequest {
            name: pv_name.clone(),
            capacity_range: Some(csi::CapacityRange {
                required_bytes: required,
                limit_bytes: limit,
            }),
            volume_capabilities: capabilities(&access_modes, block, &fs_type, &mount_options),
            parameters,
            secrets: HashMap::new(),
            volume_content_source: None,
            accessibility_requirements: topology,
            mutable_parameters: HashMap::new(),
        };
        let volume = self
            .csi
            .controller
            .clone()
            .create_volume(request)
            .await?
            .into_inner()
            .volume
            .ok_or_else(|| {
                Error::Invalid("the driver answered CreateVolume without a volume".into())
            })?;
        let capacity = if volume.capacity_bytes > 0 {
            volume.capacity_bytes
        } else {
            required
        };
        let mut attributes: BTreeMap<String, String> = volume.volume_context.into_iter().collect();
        attributes.insert(
            "storage.kubernetes.io/csiProvisionerIdentity".into(),
            self.config.identity.clone(),
        );
        Ok(PersistentVolume {
            metadata: ObjectMeta {
                name: Some(pv_name),
                annotations: Some(BTreeMap::from([(
                    ANN_PROVISIONED_BY.to_string(),
                    self.plugin.name.clone(),
                )])),
                ..Default::default()
            },
            spec: Some(PersistentVolumeSpec {
                access_modes: Some(access_modes),
                capacity: Some(BTreeMap::from([(
                    "storage".to_string(),
                    quantity_of(capacity),
                )])),
                claim_ref: Some(ObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("PersistentVolumeClaim".into()),
                    namespace: meta.namespace.clone(),
                    name: meta.name.clone(),
                    uid: meta.uid.clone(),
                    resource_version: meta.resource_version.clone(),
                    field_path: None,
                }),
                csi: Some(CSIPersistentVolumeSource {
                    driver: self.plugin.name.clone(),
                    volume_handle: volume.volume_id,
                    fs_type: (!fs_type.is_empty() && !block).then_some(fs_type),
                    volume_attributes: Some(attributes),
                    ..Default::default()
                }),
                mount_options: (!mount_options.is_empty()).then_some(mount_options),
                node_affinity: node_affinity(&volume.accessible_topology),
                persistent_volume_reclaim_policy: Some(
                    class
                        .reclaim_policy
                        .clone()
                        .unwrap_or_else(|| "Delete".into()),
                ),
                storage_class_name: class.metadata.name.clone(),
                volume_mode: Some(if block { "Block" } else { "Filesystem" }.into()),
                ..Default::default()
            }),
            status: None,
        })
    }

    async fn reconcile_claim(&self, claim: Arc<PersistentVolumeClaim>) -> Result<Action> {
        let Decision::Provision(class) = self.decide(&claim) else {
            return Ok(Action::Done);
        };
        let pvs: Api<PersistentVolume> = Api::all(self.client.clone());
        let pv_name = format!("pvc-{}", claim.metadata.uid.as_deref().unwrap_or_default());
        if pvs.get_opt(&pv_name).await?.is_some() {
            return Ok(Action::Done);
        }
        let key = format!(
            "{}/{}",
            claim.metadata.namespace.as_deref().unwrap_or_default(),
            claim.metadata.name.as_deref().unwrap_or_default()
        );
        let class_name = class.metadata.name.clone().unwrap_or_default();
        self.recorder.normal(
            reference(claim.as_ref()),
            "Provisioning",
            "Provisioning",
            format!("External provisioner is provisioning volume for claim {key:?}"),
        );
        let pv = match self.provision(&claim, &class).await {
            Ok(pv) => pv,
            Err(e) => {
                self.recorder.warning(
                    reference(claim.as_ref()),
                    "ProvisioningFailed",
                    "Provisioning",
                    format!("failed to provision volume with StorageClass {class_name:?}: {e}"),
                );
                if let Some(c) = &self.capacity {
                    c.class(&class_name);
                }
                if self.may_reschedule(&claim, &e) {
                    self.reschedule(&claim).await?;
                    tracing::info!(claim = %key, error = %e, "volume rescheduled: the scheduler is to pick another node");
                    return Ok(Action::Done);
                }
                return Err(e);
            }
        };
        match pvs.create(&PostParams::default(), &pv).await {
            Ok(_) => {}
            Err(e) if e.is_already_exists() => {}
            Err(e) => {
                self.recorder.warning(
                    reference(claim.as_ref()),
                    "ProvisioningFailed",
                    "Provisioning",
                    format!("failed to provision volume with StorageClass {class_name:?}: {e}"),
                );
                return Err(e.into());
            }
        }
        tracing::info!(claim = %key, volume = %pv_name, "provisioned");
        if let Some(c) = &self.capacity {
            if pv
                .spec
                .as_ref()
                .and_then(|s| s.node_affinity.as_ref())
                .is_some()
            {
                c.all();
            } else {
                c.class(&class_name);
            }
        }
        self.recorder.normal(
            reference(claim.as_ref()),
            "ProvisioningSucceeded",
            "Provisioning",
            format!("Successfully provisioned volume {pv_name}"),
        );
        Ok(Action::Done)
    }

    /// Whether a failure to provision `claim` gives the claim back to the scheduler (the
    /// external-provisioner's `ProvisioningReschedule`): the driver has no room where the
    /// scheduler put the claim (`RESOURCE_EXHAUSTED`), the driver has topology so another
    /// node may do, and the claim has a selected node to take away.
    fn may_reschedule(&self, claim: &PersistentVolumeClaim, e: &Error) -> bool {
        matches!(e, Error::Csi(s) if s.code() == tonic::Code::ResourceExhausted)
            && self.plugin.topology
            && annotation(&claim.metadata, ANN_SELECTED_NODE).is_some()
    }

    /// Removes the claim's `volume.kubernetes.io/selected-node`: the scheduler's PreBind sees
    /// it reset and schedules the pod again, elsewhere if the capacity says so. An update on
    /// the version seen, so that a claim changed meanwhile is looked at again.
    async fn reschedule(&self, claim: &PersistentVolumeClaim) -> Result<()> {
        let meta = &claim.metadata;
        let mut next = claim.clone();
        if let Some(a) = next.metadata.annotations.as_mut() {
            a.remove(ANN_SELECTED_NODE);
        }
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(
            self.client.clone(),
            meta.namespace.as_deref().unwrap_or_default(),
        );
        claims
            .replace(
                meta.name.as_deref().unwrap_or_default(),
                &PostParams::default(),
                &next,
            )
            .await
            .map_err(|e| {
                Error::Invalid(format!(
                    "delete annotation 'annSelectedNode' for PersistentVolumeClaim \"{}/{}\": {e}",
                    meta.namespace.as_deref().unwrap_or_default(),
                    meta.name.as_deref().unwrap_or_default()
                ))
            })?;
        Ok(())
    }

    /// Whether this provisioner deletes `pv` now.
    fn should_delete(&self, pv: &PersistentVolume) -> bool {
        let Some(spec) = pv.spec.as_ref() else {
            return false;
        };
        pv.metadata.deletion_timestamp.is_none()
            && pv.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Released")
            && spec.persistent_volume_reclaim_policy.as_deref() == Some("Delete")
            && annotation(&pv.metadata, ANN_PROVISIONED_BY) == Some(self.plugin.name.as_str())
            && spec
                .csi
                .as_ref()
                .is_some_and(|c| c.driver == self.plugin.name)
            && match (&self.config.node, &self.plugin.node_topology) {
                (Some(_), Some(t)) => affinity_matches(spec.node_affinity.as_ref(), t),
                _ => true,
            }
    }

    async fn reconcile_volume(&self, pv: Arc<PersistentVolume>) -> Result<Action> {
        if !self.should_delete(&pv) {
            return Ok(Action::Done);
        }
        let name = pv.metadata.name.clone().unwrap_or_default();
        let handle = pv
            .spec
            .as_ref()
            .and_then(|s| s.csi.as_ref())
            .map(|c| c.volume_handle.clone())
            .unwrap_or_default();
        let r = self
            .csi
            .controller
            .clone()
            .delete_volume(csi::DeleteVolumeRequest {
                volume_id: handle,
                secrets: HashMap::new(),
            })
            .await;
        if let Err(e) = r {
            let e = Error::from(e);
            self.recorder.warning(
                reference(pv.as_ref()),
                "VolumeFailedDelete",
                "Deleting",
                e.to_string(),
            );
            return Err(e);
        }
        let pvs: Api<PersistentVolume> = Api::all(self.client.clone());
        match pvs.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
        tracing::info!(volume = %name, "deleted a released volume");
        if let Some(c) = &self.capacity {
            if pv
                .spec
                .as_ref()
                .and_then(|s| s.node_affinity.as_ref())
                .is_some()
            {
                c.all();
            }
        }
        Ok(Action::Done)
    }
}

/// Runs the provisioner for the driver at `csi` until `shutdown`.
pub async fn run(
    client: Client,
    csi: CsiClient,
    plugin: Plugin,
    config: Config,
    capacity: Option<Refresh>,
    shutdown: CancellationToken,
) {
    let factory = InformerFactory::new(client.clone(), shutdown.clone());
    let classes = factory.informer::<StorageClass>();
    let claims = factory.informer::<PersistentVolumeClaim>();
    let volumes = factory.informer::<PersistentVolume>();
    let recorder = Recorder::new(client.clone(), &plugin.name, &config.identity);
    let p = Arc::new(Provisioner {
        plugin,
        config,
        csi,
        client,
        classes: classes.store(),
        recorder,
        capacity,
    });
    classes.store().wait_until_ready().await;
    let run_config = RunConfig {
        concurrency: p.config.workers.max(1),
        ..RunConfig::default()
    };
    let claim_controller = Controller::new(claims, run_config.clone());
    let volume_controller = Controller::new(volumes, run_config);
    let pc = p.clone();
    let claims_done = claim_controller.run_present(
        move |claim: Arc<PersistentVolumeClaim>| {
            let p = pc.clone();
            async move { p.reconcile_claim(claim).await }
        },
        shutdown.clone(),
    );
    let pv = p.clone();
    let volumes_done = volume_controller.run_present(
        move |volume: Arc<PersistentVolume>| {
            let p = pv.clone();
            async move { p.reconcile_volume(volume).await }
        },
        shutdown.clone(),
    );
    tokio::join!(claims_done, volumes_done);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_affinity_round_trips_through_the_matcher() {
        let topo = csi::Topology {
            segments: HashMap::from([(
                "topology.local.csi.skiff.dev/node".to_string(),
                "n1".to_string(),
            )]),
        };
        let a = node_affinity(&[topo]).unwrap();
        let terms = &a.required.as_ref().unwrap().node_selector_terms;
        let e = &terms[0].match_expressions.as_ref().unwrap()[0];
        assert_eq!(
            (e.key.as_str(), e.operator.as_str()),
            ("topology.local.csi.skiff.dev/node", "In")
        );
        let here = BTreeMap::from([(
            "topology.local.csi.skiff.dev/node".to_string(),
            "n1".to_string(),
        )]);
        let there = BTreeMap::from([(
            "topology.local.csi.skiff.dev/node".to_string(),
            "n2".to_string(),
        )]);
        assert!(affinity_matches(Some(&a), &here));
        assert!(!affinity_matches(Some(&a), &there));
        assert!(!affinity_matches(None, &here));
        assert!(node_affinity(&[]).is_none());
    }

    #[test]
    fn access_modes_map_to_csi_modes() {
        use csi::volume_capability::access_mode::Mode;
        assert_eq!(access_mode("ReadWriteOnce"), Mode::SingleNodeWriter);
        assert_eq!(access_mode("ReadWriteOncePod"), Mode::SingleNodeWriter);
        assert_eq!(access_mode("ReadOnlyMany"), Mode::MultiNodeReaderOnly);
        assert_eq!(access_mode("ReadWriteMany"), Mode::MultiNodeMultiWriter);
        assert_eq!(access_mode("Sideways"), Mode::Unknown);
    }

    #[test]
    fn quantities_convert_to_bytes_and_back() {
        assert_eq!(bytes_of(&Quantity("1Gi".into())).unwrap(), 1 << 30);
        assert_eq!(bytes_of(&Quantity("1500M".into())).unwrap(), 1_500_000_000);
        assert!(bytes_of(&Quantity("lots".into())).is_err());
        assert_eq!(quantity_of(2 << 30).0, "2Gi");
    }
}
