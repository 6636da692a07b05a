//! PersistentVolumeClaims in pods: the claim is looked up, must be bound, and its
//! PersistentVolume is made available at the paths Kubernetes' kubelet uses.
//!
//! - A CSI volume is staged once per node (when the driver has `STAGE_UNSTAGE_VOLUME`) at
//!   `<root>/plugins/kubernetes.io/csi/<driver>/<sha256(volumeHandle)>/globalmount`, then
//!   published for each pod at `<root>/pods/<uid>/volumes/kubernetes.io~csi/<pv>/mount`,
//!   which the containers bind-mount. Next to both the kubelet writes `vol_data.json` (the
//!   driver and the volume handle), which is how a restarted kubelet knows what to
//!   unpublish for pods that are gone.
//! - A `hostPath` or `local` PersistentVolume is its path on the node, mounted directly.
//! - The pod's `fsGroup` is applied to the published directory when the CSIDriver's
//!   `fsGroupPolicy` calls for it (`File`; `ReadWriteOnceWithFSType`, the default, only for
//!   a volume with an `fsType` and a ReadWriteOnce access mode), skipped under
//!   `fsGroupChangePolicy: OnRootMismatch` when the root already has it.
//!
//! - A volume whose driver needs attaching waits for its `VolumeAttachment` first
//!   ([`super::attach`]), and its attachment metadata goes to the driver as publish context.
//!
//! On pod removal each published volume is unpublished, and unstaged once no other pod on
//! the node has it published. A directory still mounted is never removed.
//!
//! Mounts outlive the kubelet. A restarted kubelet takes a volume it finds mounted at a pod's
//! publish directory as set up, without publishing it again or waiting for the driver to
//! register again, and lets that pod keep a claim that is being deleted meanwhile (the
//! claim's protection is waiting for the pod); what belongs to pods deleted while it was away
//! is found through the `vol_data.json` records and torn down.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{
    PersistentVolume, PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod,
};
use k8s_openapi::api::storage::v1::CSIDriver;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use skiff_client::{Api, Client};
use skiff_proto::csi::v1 as csi;

use super::PodConfig;
use crate::csi::{Driver, Drivers};

/// The plugin directory name of CSI volumes in a pod.
pub const CSI_PLUGIN_DIR: &str = "kubernetes.io~csi";
/// The file describing a published or staged volume.
const VOL_DATA: &str = "vol_data.json";

/// Why a claim could not be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The claim or its volume could not be used (Kubernetes' "error processing PVC").
    #[error("{0}")]
    Process(String),
    /// The volume could not be set up (Kubernetes' `MountVolume.SetUp failed`), for volume
    /// `.0` (the PersistentVolume's name).
    #[error("MountVolume.SetUp failed for volume {0:?} : {1}")]
    Mount(String, String),
    /// The volume is not attached to the node (yet), for volume `.0` (the PersistentVolume's
    /// name): Kubernetes' `MountVolume.WaitForAttach failed`.
    #[error("MountVolume.WaitForAttach failed for volume {0:?} : {1}")]
    WaitForAttach(String, String),
}

/// What the kubelet needs to mount claims.
#[derive(Clone)]
pub struct Mounter {
    client: Client,
    drivers: Drivers,
    in_use: super::attach::InUse,
}

/// A claim's volume, ready for the containers.
#[derive(Debug, Clone)]
pub struct Mounted {
    /// The directory to bind-mount.
    pub host_path: PathBuf,
    /// Whether the claim is used read-only.
    pub read_only: bool,
}

/// What `vol_data.json` records.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
struct VolData {
    driver_name: String,
    volume_handle: String,
    #[serde(default)]
    spec_vol_id: String,
    #[serde(default)]
    node_name: String,
}

impl Mounter {
    /// Mounts through `drivers`, reading claims, volumes and CSIDrivers with `client`.
    pub fn new(client: Client, drivers: Drivers) -> Self {
        Mounter {
            client,
            drivers,
            in_use: Default::default(),
        }
    }

    /// The CSI volumes in use on the node (for `node.status.volumesInUse`).
    pub fn in_use(&self) -> super::attach::InUse {
        self.in_use.clone()
    }

    /// Makes the claim of pod volume `src` available to the pod.
    pub async fn setup(
        &self,
        pod: &Pod,
        src: &PersistentVolumeClaimVolumeSource,
        config: &PodConfig,
    ) -> Result<Mounted, Error> {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let csi_dir = config.pod_dir(&uid).join("volumes").join(CSI_PLUGIN_DIR);
        let (_claim, pv) = self.resolve(&ns, &src.claim_name, &csi_dir).await?;
        let pv_name = pv.metadata.name.clone().unwrap_or_default();
        let read_only = src.read_only.unwrap_or(false);
        let spec = pv.spec.clone().unwrap_or_default();
        let mount_err = |e: String| Error::Mount(pv_name.clone(), e);
        if let Some(h) = &spec.host_path {
            return Ok(Mounted {
                host_path: PathBuf::from(&h.path),
                read_only,
            });
        }
        if let Some(l) = &spec.local {
            let path = PathBuf::from(&l.path);
            if !path.exists() {
                return Err(mount_err(format!(
                    "mount failed: stat {}: no such file or directory",
                    l.path
                )));
            }
            return Ok(Mounted {
                host_path: path,
                read_only,
            });
        }
        let Some(source) = &spec.csi else {
            return Err(mount_err(
                "the PersistentVolume's source is not supported on this node (csi, hostPath and local are)".into(),
            ));
        };
        let vol_dir = csi_dir.join(&pv_name);
        let target = vol_dir.join("mount");
        let unique = skiff_rules::attach::unique_volume_name(&source.driver, &source.volume_handle);
        self.in_use.claim(&unique, &uid);
        // Published already (by this kubelet, or by the one before a restart, whose mounts
        // outlive it): nothing to do, and nothing to ask a driver that may not have
        // registered again yet.
        if is_mount_point(&target) {
            return Ok(Mounted {
                host_path: target,
                read_only,
            });
        }
        let driver = self.drivers.get(&source.driver).ok_or_else(|| {
            mount_err(format!(
                "kubernetes.io/csi: mounter.SetUpAt failed to get CSI client: driver name {} not found in the list of registered CSI drivers",
                source.driver
            ))
        })?;
        let csidriver = self.csidriver(&source.driver).await.map_err(mount_err)?;
        let publish_context = if csidriver.attach_required {
            self.wait_for_attach(&source.driver, &source.volume_handle, &unique, config)
                .await
                .map_err(|e| Error::WaitForAttach(pv_name.clone(), e))?
        } else {
            HashMap::new()
        };
        let access_mode = spec
            .access_modes
            .as_ref()
            .and_then(|m| m.first())
            .map(String::as_str)
            .unwrap_or("ReadWriteOnce");
        let capability = csi::VolumeCapability {
            access_type: Some(csi::volume_capability::AccessType::Mount(
                csi::volume_capability::MountVolume {
                    fs_type: source.fs_type.clone().unwrap_or_default(),
                    mount_flags: spec.mount_options.clone().unwrap_or_default(),
                    volume_mount_group: String::new(),
                },
            )),
            access_mode: Some(csi::volume_capability::AccessMode {
                mode: csi_access_mode(access_mode) as i32,
            }),
        };
        let mut context: HashMap<String, String> = source
            .volume_attributes
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect();
        if csidriver.pod_info_on_mount {
            context.extend(pod_info(pod));
        }
        let data = VolData {
            driver_name: source.driver.clone(),
            volume_handle: source.volume_handle.clone(),
            spec_vol_id: pv_name.clone(),
            node_name: config.node_name.clone(),
        };
        let mut node = driver.node();
        let staging = if driver.stage_unstage {
            let staging = staging_path(&config.root_dir, &source.driver, &source.volume_handle);
            let record = staging.parent().map(|p| p.join(VOL_DATA));
            if record.as_ref().is_none_or(|r| !r.exists()) {
                std::fs::create_dir_all(&staging)
                    .map_err(|e| mount_err(format!("creating {}: {e}", staging.display())))?;
                call(node.node_stage_volume(csi::NodeStageVolumeRequest {
                    volume_id: source.volume_handle.clone(),
                    publish_context: publish_context.clone(),
                    staging_target_path: staging.to_string_lossy().into_owned(),
                    volume_capability: Some(capability.clone()),
                    secrets: HashMap::new(),
                    volume_context: context.clone(),
                }))
                .await
                .map_err(|e| mount_err(format!("rpc error: NodeStageVolume: {e}")))?;
                if let Some(r) = record {
                    write_vol_data(&r, &data).map_err(mount_err)?;
                }
            }
            staging.to_string_lossy().into_owned()
        } else {
            String::new()
        };
        std::fs::create_dir_all(&vol_dir)
            .map_err(|e| mount_err(format!("creating {}: {e}", vol_dir.display())))?;
        write_vol_data(&vol_dir.join(VOL_DATA), &data).map_err(mount_err)?;
        call(node.node_publish_volume(csi::NodePublishVolumeRequest {
            volume_id: source.volume_handle.clone(),
            publish_context,
            staging_target_path: staging,
            target_path: target.to_string_lossy().into_owned(),
            volume_capability: Some(capability),
            readonly: read_only,
            secrets: HashMap::new(),
            volume_context: context,
        }))
        .await
        .map_err(|e| mount_err(format!("rpc error: NodePublishVolume: {e}")))?;
        if !target.is_dir() {
            return Err(mount_err(format!(
                "the driver published nothing at {}",
                target.display()
            )));
        }
        let fs_type = source.fs_type.clone().unwrap_or_default();
        let sc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
        if let Some(gid) = sc.and_then(|s| s.fs_group) {
            if applies_fs_group(&csidriver.fs_group_policy, &fs_type, access_mode) && !read_only {
                let on_root_mismatch =
                    sc.and_then(|s| s.fs_group_change_policy.as_deref()) == Some("OnRootMismatch");
                set_ownership(&target, gid as u32, on_root_mismatch)
                    .map_err(|e| mount_err(format!("applying fsGroup {gid}: {e}")))?;
            }
        }
        Ok(Mounted {
            host_path: target,
            read_only,
        })
    }

    /// The bound claim and its volume, or kube's reason why not. A claim being deleted is
    /// refused to a pod that has not got it yet, but not to one that has it published under
    /// `csi_dir` already (its pod directory's CSI volumes): the claim's protection waits for
    /// that pod, which must keep running, across kubelet restarts too.
    async fn resolve(
        &self,
        ns: &str,
        claim: &str,
        csi_dir: &Path,
    ) -> Result<(PersistentVolumeClaim, PersistentVolume), Error> {
        let process = |e: String| Error::Process(format!("error processing PVC {ns}/{claim}: {e}"));
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), ns);
        let pvc = claims.get(claim).await.map_err(|e| {
            process(format!(
                "failed to fetch PVC from API server: {}",
                api_message(&e)
            ))
        })?;
        let volume = pvc
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.clone())
            .unwrap_or_default();
        let published = !volume.is_empty() && is_mount_point(&csi_dir.join(&volume).join("mount"));
        if pvc.metadata.deletion_timestamp.is_some() && !published {
            return Err(process("PVC is being deleted".into()));
        }
        if pvc.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Bound") {
            return Err(process("PVC is not bound".into()));
        }
        if volume.is_empty() {
            return Err(process("PVC has empty pvc.Spec.VolumeName".into()));
        }
        let pvs: Api<PersistentVolume> = Api::all(self.client.clone());
        let pv = pvs.get(&volume).await.map_err(|e| {
            process(format!(
                "failed to fetch PV {volume:?} from API server: {}",
                api_message(&e)
            ))
        })?;
        let claim_ref = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref());
        let pvc_uid = pvc.metadata.uid.clone().unwrap_or_default();
        if claim_ref.and_then(|r| r.uid.clone()).unwrap_or_default() != pvc_uid {
            return Err(process(format!(
                "PV {volume:?} is not bound to PVC {claim:?} (UID {pvc_uid:?})"
            )));
        }
        Ok((pvc, pv))
    }

    /// The driver's CSIDriver settings (Kubernetes' defaults when it has none).
    async fn csidriver(&self, name: &str) -> Result<DriverSettings, String> {
        let api: Api<CSIDriver> = Api::all(self.client.clone());
        let d = api
            .get_opt(name)
            .await
            .map_err(|e| format!("getting CSIDriver {name:?}: {e}"))?;
        let attach_required = skiff_rules::attach::attach_required(d.as_ref());
        let spec = d.map(|d| d.spec);
        Ok(DriverSettings {
            attach_required,
            pod_info_on_mount: spec
                .as_ref()
                .and_then(|s| s.pod_info_on_mount)
                .unwrap_or(false),
            fs_group_policy: spec
                .and_then(|s| s.fs_group_policy)
                .unwrap_or_else(|| "ReadWriteOnceWithFSType".into()),
        })
    }

    /// Unpublishes every CSI volume of pod `uid` (and unstages those no other pod on the
    /// node still has), removing their directories. Fails, leaving things in place, when a
    /// driver is missing or refuses.
    pub async fn teardown(&self, config: &PodConfig, uid: &str) -> Result<(), String> {
        teardown_pod(&self.drivers, config, uid).await?;
        self.in_use.release_pod(uid);
        Ok(())
    }

    /// Waits until the node reports the volume in use and its attachment is attached; the
    /// attachment's publish context.
    async fn wait_for_attach(
        &self,
        driver: &str,
        handle: &str,
        unique: &str,
        config: &PodConfig,
    ) -> Result<HashMap<String, String>, String> {
        use super::attach;
        let start = tokio::time::Instant::now();
        if !self.in_use.wait_reported(unique, attach::WAIT).await {
            return Err(format!(
                "volume {unique} is not yet reported in use in the node status"
            ));
        }
        let left = attach::WAIT.saturating_sub(start.elapsed());
        attach::wait_attached(&self.client, driver, handle, &config.node_name, left).await
    }
}

/// The server's message alone, as client-go prints an API error.
fn api_message(e: &skiff_client::Error) -> String {
    match e {
        skiff_client::Error::Api(a) => a.message.clone(),
        e => e.to_string(),
    }
}

/// What the kubelet reads of a CSIDriver.
struct DriverSettings {
    attach_required: bool,
    pod_info_on_mount: bool,
    fs_group_policy: String,
}

async fn call<T>(
    f: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, String> {
    match tokio::time::timeout(crate::csi::CALL_TIMEOUT, f).await {
        Ok(Ok(r)) => Ok(r.into_inner()),
        Ok(Err(s)) => Err(format!("code = {:?} desc = {}", s.code(), s.message())),
        Err(_) => Err("code = DeadlineExceeded desc = context deadline exceeded".into()),
    }
}

/// Where a driver's volume is staged on the node.
pub fn staging_path(root: &Path, driver: &str, handle: &str) -> PathBuf {
    let digest = Sha256::digest(handle.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    root.join("plugins/kubernetes.io/csi")
        .join(driver)
        .join(hex)
        .join("globalmount")
}

/// The CSI access mode of a Kubernetes one.
fn csi_access_mode(mode: &str) -> csi::volume_capability::access_mode::Mode {
    use csi::volume_capability::access_mode::Mode;
    match mode {
        "ReadOnlyMany" => Mode::MultiNodeReaderOnly,
        "ReadWriteMany" => Mode::MultiNodeMultiWriter,
        "ReadWriteOncePod" => Mode::SingleNodeSingleWriter,
        _ => Mode::SingleNodeWriter,
    }
}

/// The pod's identity, passed to drivers that ask for it (`podInfoOnMount`).
fn pod_info(pod: &Pod) -> BTreeMap<String, String> {
    let m = &pod.metadata;
    BTreeMap::from([
        (
            "csi.storage.k8s.io/pod.name".into(),
            m.name.clone().unwrap_or_default(),
        ),
        (
            "csi.storage.k8s.io/pod.namespace".into(),
            m.namespace.clone().unwrap_or_default(),
        ),
        (
            "csi.storage.k8s.io/pod.uid".into(),
            m.uid.clone().unwrap_or_default(),
        ),
        (
            "csi.storage.k8s.io/serviceAccount.name".into(),
            pod.spec
                .as_ref()
                .and_then(|s| s.service_account_name.clone())
                .unwrap_or_else(|| "default".into()),
        ),
        ("csi.storage.k8s.io/ephemeral".into(), "false".into()),
    ])
}

/// Whether the pod's fsGroup is applied to a volume, by the CSIDriver's `fsGroupPolicy`.
fn applies_fs_group(policy: &str, fs_type: &str, access_mode: &str) -> bool {
    match policy {
        "File" => true,
        "None" => false,
        _ => !fs_type.is_empty() && matches!(access_mode, "ReadWriteOnce" | "ReadWriteOncePod"),
    }
}

/// Gives `dir` and everything under it to group `gid`, group-readable and -writable, with
/// directories setgid so that new files inherit the group (Kubernetes' volume ownership).
/// With `on_root_mismatch`, nothing is done when the root already has them.
fn set_ownership(dir: &Path, gid: u32, on_root_mismatch: bool) -> std::io::Result<()> {
    const DIR_BITS: u32 = 0o2070;
    if on_root_mismatch {
        let m = std::fs::metadata(dir)?;
        if m.gid() == gid && m.mode() & DIR_BITS == DIR_BITS {
            return Ok(());
        }
    }
    fn walk(p: &Path, gid: u32) -> std::io::Result<()> {
        let m = std::fs::symlink_metadata(p)?;
        if m.file_type().is_symlink() {
            return Ok(());
        }
        nix::unistd::chown(p, None, Some(nix::unistd::Gid::from_raw(gid)))
            .map_err(std::io::Error::from)?;
        let bits = if m.is_dir() { 0o2070 } else { 0o060 };
        std::fs::set_permissions(
            p,
            std::fs::Permissions::from_mode((m.mode() & 0o7777) | bits),
        )?;
        if m.is_dir() {
            for e in std::fs::read_dir(p)? {
                walk(&e?.path(), gid)?;
            }
        }
        Ok(())
    }
    walk(dir, gid)
}

fn write_vol_data(path: &Path, data: &VolData) -> Result<(), String> {
    let bytes = serde_json::to_vec(data).map_err(|e| e.to_string())?;
    std::fs::write(path, bytes).map_err(|e| format!("writing {}: {e}", path.display()))
}

fn read_vol_data(path: &Path) -> Option<VolData> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// Whether `path` is a mount point, by the kernel's mount table.
pub fn is_mount_point(path: &Path) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = path.to_string_lossy();
    table
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|p| unescape_mount_path(p) == want)
}

/// The kernel writes spaces, tabs, newlines and backslashes of mount paths as octal escapes.
fn unescape_mount_path(p: &str) -> String {
    let b = p.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Every CSI volume published for a pod on this node: (volume directory, what it is).
fn published(root: &Path) -> Vec<(PathBuf, VolData)> {
    let mut out = Vec::new();
    for pod in std::fs::read_dir(root.join("pods"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let dir = pod.path().join("volumes").join(CSI_PLUGIN_DIR);
        for v in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if let Some(d) = read_vol_data(&v.path().join(VOL_DATA)) {
                out.push((v.path(), d));
            }
        }
    }
    out
}

async fn teardown_pod(drivers: &Drivers, config: &PodConfig, uid: &str) -> Result<(), String> {
    let dir = config.pod_dir(uid).join("volumes").join(CSI_PLUGIN_DIR);
    let entries: Vec<PathBuf> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    for vol_dir in entries {
        let target = vol_dir.join("mount");
        let Some(data) = read_vol_data(&vol_dir.join(VOL_DATA)) else {
            // Nothing was published here (set-up failed before the record was written).
            if is_mount_point(&target) {
                return Err(format!(
                    "{} is mounted by an unknown driver",
                    target.display()
                ));
            }
            let _ = std::fs::remove_dir_all(&vol_dir);
            continue;
        };
        let driver = drivers.get(&data.driver_name).ok_or_else(|| {
            format!(
                "kubernetes.io/csi: Unmounter.TearDownAt failed to get CSI client: driver name {} not found in the list of registered CSI drivers",
                data.driver_name
            )
        })?;
        unpublish(&driver, &data, &target).await?;
        std::fs::remove_dir_all(&vol_dir)
            .map_err(|e| format!("removing {}: {e}", vol_dir.display()))?;
        if driver.stage_unstage {
            let still_used = published(&config.root_dir).iter().any(|(_, d)| {
                d.driver_name == data.driver_name && d.volume_handle == data.volume_handle
            });
            if !still_used {
                unstage(&driver, config, &data).await?;
            }
        }
    }
    Ok(())
}

async fn unpublish(driver: &Driver, data: &VolData, target: &Path) -> Result<(), String> {
    if target.exists() || is_mount_point(target) {
        call(
            driver
                .node()
                .node_unpublish_volume(csi::NodeUnpublishVolumeRequest {
                    volume_id: data.volume_handle.clone(),
                    target_path: target.to_string_lossy().into_owned(),
                }),
        )
        .await
        .map_err(|e| {
            format!(
                "UnmountVolume.TearDown failed for volume {:?} : rpc error: {e}",
                data.spec_vol_id
            )
        })?;
    }
    if is_mount_point(target) {
        return Err(format!(
            "UnmountVolume.TearDown failed for volume {:?} : {} is still mounted",
            data.spec_vol_id,
            target.display()
        ));
    }
    Ok(())
}

async fn unstage(driver: &Driver, config: &PodConfig, data: &VolData) -> Result<(), String> {
    let staging = staging_path(&config.root_dir, &data.driver_name, &data.volume_handle);
    let Some(parent) = staging.parent().map(Path::to_path_buf) else {
        return Ok(());
    };
    if !parent.join(VOL_DATA).exists() {
        return Ok(());
    }
    call(
        driver
            .node()
            .node_unstage_volume(csi::NodeUnstageVolumeRequest {
                volume_id: data.volume_handle.clone(),
                staging_target_path: staging.to_string_lossy().into_owned(),
            }),
    )
    .await
    .map_err(|e| {
        format!(
            "UnmountDevice failed for volume {:?} : rpc error: {e}",
            data.spec_vol_id
        )
    })?;
    if is_mount_point(&staging) {
        return Err(format!(
            "UnmountDevice failed for volume {:?} : {} is still mounted",
            data.spec_vol_id,
            staging.display()
        ));
    }
    std::fs::remove_dir_all(&parent).map_err(|e| format!("removing {}: {e}", parent.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_paths_are_kubes() {
        let p = staging_path(
            Path::new("/var/lib/kubelet"),
            "local.csi.skiff.dev",
            "vol-1",
        );
        let s = p.to_string_lossy();
        assert!(s.starts_with("/var/lib/kubelet/plugins/kubernetes.io/csi/local.csi.skiff.dev/"));
        assert!(s.ends_with("/globalmount"));
        // sha256("vol-1") in hex.
        let hash = p
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert_eq!(hash.len(), 64);
        assert_ne!(
            staging_path(Path::new("/r"), "d", "vol-2").parent(),
            staging_path(Path::new("/r"), "d", "vol-1").parent()
        );
    }

    #[test]
    fn access_modes_map_to_csi() {
        use csi::volume_capability::access_mode::Mode;
        assert_eq!(csi_access_mode("ReadWriteOnce"), Mode::SingleNodeWriter);
        assert_eq!(csi_access_mode("ReadOnlyMany"), Mode::MultiNodeReaderOnly);
        assert_eq!(csi_access_mode("ReadWriteMany"), Mode::MultiNodeMultiWriter);
        assert_eq!(
            csi_access_mode("ReadWriteOncePod"),
            Mode::SingleNodeSingleWriter
        );
    }

    #[test]
    fn fs_group_policies() {
        assert!(applies_fs_group("File", "", "ReadWriteMany"));
        assert!(!applies_fs_group("None", "ext4", "ReadWriteOnce"));
        assert!(applies_fs_group(
            "ReadWriteOnceWithFSType",
            "ext4",
            "ReadWriteOnce"
        ));
        assert!(!applies_fs_group(
            "ReadWriteOnceWithFSType",
            "",
            "ReadWriteOnce"
        ));
        assert!(!applies_fs_group(
            "ReadWriteOnceWithFSType",
            "ext4",
            "ReadWriteMany"
        ));
    }

    #[test]
    fn ownership_and_on_root_mismatch() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("v");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/f"), "x").unwrap();
        std::fs::set_permissions(root.join("sub/f"), std::fs::Permissions::from_mode(0o600))
            .unwrap();
        let gid = nix::unistd::getegid().as_raw();
        set_ownership(&root, gid, false).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o7777;
        assert_eq!(mode(&root.join("sub/f")), 0o660);
        assert_eq!(mode(&root.join("sub")) & 0o2070, 0o2070);
        assert_eq!(std::fs::metadata(root.join("sub/f")).unwrap().gid(), gid);
        // The root matches: a file changed since is left as it is under OnRootMismatch.
        std::fs::set_permissions(root.join("sub/f"), std::fs::Permissions::from_mode(0o600))
            .unwrap();
        set_ownership(&root, gid, true).unwrap();
        assert_eq!(mode(&root.join("sub/f")), 0o600);
        set_ownership(&root, gid, false).unwrap();
        assert_eq!(mode(&root.join("sub/f")), 0o660);
    }

    #[test]
    fn mount_paths_unescape() {
        assert_eq!(unescape_mount_path("/a\\040b"), "/a b");
        assert_eq!(unescape_mount_path("/plain"), "/plain");
        assert_eq!(unescape_mount_path("/x\\"), "/x\\");
        assert!(is_mount_point(Path::new("/")));
        assert!(!is_mount_point(Path::new("/no/such/dir")));
    }

    #[test]
    fn published_volumes_are_found_by_their_records() {
        let d = tempfile::tempdir().unwrap();
        let data = VolData {
            driver_name: "d".into(),
            volume_handle: "h".into(),
            spec_vol_id: "pv".into(),
            node_name: "n".into(),
        };
        let v = d
            .path()
            .join("pods/u1/volumes")
            .join(CSI_PLUGIN_DIR)
            .join("pv");
        std::fs::create_dir_all(&v).unwrap();
        write_vol_data(&v.join(VOL_DATA), &data).unwrap();
        std::fs::create_dir_all(
            d.path()
                .join("pods/u2/volumes")
                .join(CSI_PLUGIN_DIR)
                .join("x"),
        )
        .unwrap();
        let found = published(d.path());
        assert_eq!(found, vec![(v, data)]);
    }
}
