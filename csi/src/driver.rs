//! Skiff's two CSI drivers, one implementation: a volume is a directory.
//!
//! - `local.csi.skiff.dev` ([`Kind::Local`]): directories under the node's `--data-dir`.
//!   Every node runs its own instance (Controller and Node services together); a volume lives
//!   on one node, so its id names the node (`NAME@NODE`) and its accessible topology is
//!   `topology.local.csi.skiff.dev/node=NODE`. Single-node access modes only.
//! - `shared.csi.skiff.dev` ([`Kind::Shared`]): directories on a filesystem every node mounts
//!   at the same path; any node can serve any volume, every access mode including
//!   `MULTI_NODE_MULTI_WRITER` (`ReadWriteMany`), no topology.
//!
//! A volume `NAME` is `DATA_DIR/NAME/`: its content in `data/`, its record (size asked for,
//! StorageClass parameters) in `volume.json`. A directory has no hard quota: the size is
//! recorded, reported by `NodeGetVolumeStats` and checked against the free space at creation,
//! not enforced on writes. `NodePublishVolume` bind-mounts `data/` on the target path the
//! kubelet gives (read-only when asked); there is no staging step.
//!
//! Errors carry the gRPC codes the CSI specification prescribes for each call.

use std::collections::HashMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use skiff_proto::csi::v1 as csi;
use tonic::{Request, Response, Status};

/// The local driver's name.
pub const LOCAL_DRIVER: &str = "local.csi.skiff.dev";
/// The shared driver's name.
pub const SHARED_DRIVER: &str = "shared.csi.skiff.dev";
/// The topology key of the local driver: the node a volume lives on.
pub const LOCAL_TOPOLOGY_KEY: &str = "topology.local.csi.skiff.dev/node";
/// The size of a volume whose request gives none (1 GiB).
pub const DEFAULT_CAPACITY: i64 = 1 << 30;
/// The record file inside a volume's directory.
const RECORD: &str = "volume.json";
/// The content directory inside a volume's directory.
const CONTENT: &str = "data";
/// The longest volume name taken (CSI allows 128 bytes for ids; `@NODE` must fit too).
const MAX_NAME: usize = 64;

/// Which of the two drivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Node-local directories.
    Local,
    /// Directories on a filesystem shared by every node.
    Shared,
}

impl Kind {
    /// The driver's CSI name.
    pub fn driver_name(self) -> &'static str {
        match self {
            Kind::Local => LOCAL_DRIVER,
            Kind::Shared => SHARED_DRIVER,
        }
    }

    /// The kind a driver name stands for.
    pub fn from_driver_name(name: &str) -> Option<Kind> {
        match name {
            LOCAL_DRIVER => Some(Kind::Local),
            SHARED_DRIVER => Some(Kind::Shared),
            _ => None,
        }
    }
}

/// What a driver instance serves.
#[derive(Debug, Clone)]
pub struct Config {
    /// Which driver.
    pub kind: Kind,
    /// This node's name (the CSI node id).
    pub node_id: String,
    /// Where volumes are made.
    pub data_dir: PathBuf,
    /// `NodeGetInfo`'s `max_volumes_per_node` (0: no limit).
    pub max_volumes_per_node: i64,
}

/// What `volume.json` records of a volume.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
struct Record {
    /// The size asked for (or expanded to), in bytes.
    capacity_bytes: i64,
    /// The StorageClass parameters it was made with.
    #[serde(default)]
    parameters: HashMap<String, String>,
    /// When it was made (RFC 3339).
    created: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct Op {
    method: &'static str,
    code: String,
}

/// A driver: the Identity, Controller and Node services over one data directory.
#[derive(Debug)]
pub struct Driver {
    config: Config,
    operations: prometheus_client::metrics::family::Family<
        Op,
        prometheus_client::metrics::counter::Counter,
    >,
    /// Serialises changes to volumes (create, delete, expand, publish): they are rare and
    /// each must see the state the one before left.
    lock: tokio::sync::Mutex<()>,
}

fn invalid(msg: impl Into<String>) -> Status {
    Status::invalid_argument(msg.into())
}

fn internal(what: &str, path: &Path, e: impl std::fmt::Display) -> Status {
    Status::internal(format!("{what} {}: {e}", path.display()))
}

/// Whether `name` is usable as a directory name: letters, digits, `.`, `_`, `-`, not
/// starting with `.`.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl Driver {
    /// A driver as `config` says; the data directory is made if missing.
    pub fn new(config: Config) -> std::io::Result<Arc<Self>> {
        std::fs::create_dir_all(&config.data_dir)?;
        Ok(Arc::new(Driver {
            config,
            operations: Default::default(),
            lock: tokio::sync::Mutex::new(()),
        }))
    }

    /// Adds the driver's metrics to `r`.
    pub fn register_metrics(&self, r: &mut prometheus_client::registry::Registry) {
        r.register(
            "skiff_csi_operations",
            "CSI calls served, by method and gRPC code",
            self.operations.clone(),
        );
    }

    /// Counts a call's outcome and hands it back.
    fn observe<T>(
        &self,
        method: &'static str,
        r: Result<T, Status>,
    ) -> Result<Response<T>, Status> {
        let code = match &r {
            Ok(_) => "OK".to_string(),
            Err(e) => format!("{:?}", e.code()),
        };
        self.operations.get_or_create(&Op { method, code }).inc();
        if let Err(e) = &r {
            tracing::debug!(method, code = ?e.code(), error = %e.message(), "CSI call refused");
        }
        r.map(Response::new)
    }

    /// The driver's configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The driver's CSI name.
    pub fn name(&self) -> &'static str {
        self.config.kind.driver_name()
    }

    /// The volume id of the volume `name` made here.
    fn volume_id(&self, name: &str) -> String {
        match self.config.kind {
            Kind::Local => format!("{name}@{}", self.config.node_id),
            Kind::Shared => name.to_string(),
        }
    }

    /// The volume name in `id`, if `id` is a volume of this driver instance; `Err` with the
    /// code the caller should answer when it is malformed or lives on another node.
    fn name_of<'a>(&self, id: &'a str, elsewhere: tonic::Code) -> Result<&'a str, Status> {
        if id.is_empty() {
            return Err(invalid("volume id missing in request"));
        }
        let name = match self.config.kind {
            Kind::Local => {
                let Some((name, node)) = id.split_once('@') else {
                    return Err(Status::not_found(format!(
                        "volume {id:?} is not a {LOCAL_DRIVER} volume id (NAME@NODE)"
                    )));
                };
                if node != self.config.node_id {
                    return Err(Status::new(
                        elsewhere,
                        format!(
                            "volume {id:?} lives on node {node:?}, not on {:?}",
                            self.config.node_id
                        ),
                    ));
                }
                name
            }
            Kind::Shared => id,
        };
        if !valid_name(name) {
            return Err(Status::not_found(format!("volume {id:?} does not exist")));
        }
        Ok(name)
    }

    fn dir(&self, name: &str) -> PathBuf {
        self.config.data_dir.join(name)
    }

    fn read_record(&self, name: &str) -> Result<Option<Record>, Status> {
        let path = self.dir(name).join(RECORD);
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| internal("reading", &path, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(internal("reading", &path, e)),
        }
    }

    fn write_record(&self, name: &str, r: &Record) -> Result<(), Status> {
        let path = self.dir(name).join(RECORD);
        let tmp = self.dir(name).join(format!(".{RECORD}.tmp"));
        let bytes = serde_json::to_vec_pretty(r).map_err(|e| internal("encoding", &path, e))?;
        std::fs::write(&tmp, bytes).map_err(|e| internal("writing", &tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| internal("writing", &path, e))
    }

    /// The record of the volume `id`, or NOT_FOUND.
    fn existing(&self, id: &str, elsewhere: tonic::Code) -> Result<(String, Record), Status> {
        let name = self.name_of(id, elsewhere)?;
        match self.read_record(name)? {
            Some(r) => Ok((name.to_string(), r)),
            None => Err(Status::not_found(format!("volume {id:?} does not exist"))),
        }
    }

    /// Free bytes on the data directory's filesystem.
    pub fn available_bytes(&self) -> Result<i64, Status> {
        let s = nix::sys::statvfs::statvfs(&self.config.data_dir)
            .map_err(|e| internal("statfs", &self.config.data_dir, e))?;
        let bytes = u128::from(s.blocks_available()) * u128::from(s.fragment_size());
        Ok(i64::try_from(bytes).unwrap_or(i64::MAX))
    }

    fn topology(&self) -> Vec<csi::Topology> {
        match self.config.kind {
            Kind::Local => vec![csi::Topology {
                segments: HashMap::from([(
                    LOCAL_TOPOLOGY_KEY.to_string(),
                    self.config.node_id.clone(),
                )]),
            }],
            Kind::Shared => vec![],
        }
    }

    /// Whether this instance can make a volume that `req` allows (the local driver only on
    /// its own node).
    fn topology_allows(&self, req: Option<&csi::TopologyRequirement>) -> bool {
        let Some(req) = req else { return true };
        if self.config.kind == Kind::Shared || req.requisite.is_empty() {
            return true;
        }
        req.requisite.iter().any(|t| self.segment_matches(t))
    }

    fn segment_matches(&self, t: &csi::Topology) -> bool {
        t.segments
            .get(LOCAL_TOPOLOGY_KEY)
            .is_none_or(|n| *n == self.config.node_id)
    }

    /// Checks one capability: a mount volume (block is not offered) in a mode this driver has.
    fn check_capability(&self, c: &csi::VolumeCapability) -> Result<(), Status> {
        use csi::volume_capability::access_mode::Mode;
        use csi::volume_capability::AccessType;
        match &c.access_type {
            Some(AccessType::Mount(_)) => {}
            Some(AccessType::Block(_)) => {
                return Err(invalid(format!(
                    "{} offers filesystem volumes only, not block volumes",
                    self.name()
                )))
            }
            None => return Err(invalid("volume capability access type missing")),
        }
        let mode = c
            .access_mode
            .as_ref()
            .map(|m| Mode::try_from(m.mode).unwrap_or(Mode::Unknown))
            .unwrap_or(Mode::Unknown);
        let ok = match mode {
            Mode::Unknown => return Err(invalid("volume capability access mode missing")),
            Mode::SingleNodeWriter
            | Mode::SingleNodeReaderOnly
            | Mode::SingleNodeSingleWriter
            | Mode::SingleNodeMultiWriter => true,
            Mode::MultiNodeReaderOnly
            | Mode::MultiNodeSingleWriter
            | Mode::MultiNodeMultiWriter => self.config.kind == Kind::Shared,
        };
        if ok {
            Ok(())
        } else {
            Err(invalid(format!(
                "{} volumes live on one node: access mode {} is not offered",
                self.name(),
                mode.as_str_name()
            )))
        }
    }

    fn csi_volume(&self, name: &str, r: &Record) -> csi::Volume {
        csi::Volume {
            capacity_bytes: r.capacity_bytes,
            volume_id: self.volume_id(name),
            volume_context: HashMap::new(),
            content_source: None,
            accessible_topology: self.topology(),
        }
    }

    fn create_volume(&self, req: csi::CreateVolumeRequest) -> Result<csi::Volume, Status> {
        if req.name.is_empty() {
            return Err(invalid("volume name missing in request"));
        }
        if !valid_name(&req.name) {
            return Err(invalid(format!(
                "volume name {:?}: at most {MAX_NAME} letters, digits, '.', '_' or '-', not starting with '.'",
                req.name
            )));
        }
        if req.volume_capabilities.is_empty() {
            return Err(invalid("volume capabilities missing in request"));
        }
        for c in &req.volume_capabilities {
            self.check_capability(c)?;
        }
        if req.volume_content_source.is_some() {
            return Err(invalid(format!(
                "{} cannot make a volume from a snapshot or another volume",
                self.name()
            )));
        }
        let (required, limit) = req
            .capacity_range
            .map(|c| (c.required_bytes, c.limit_bytes))
            .unwrap_or((0, 0));
        if required < 0 || limit < 0 || (limit > 0 && required > limit) {
            return Err(Status::out_of_range(format!(
                "capacity range: required {required} bytes, limit {limit} bytes"
            )));
        }
        let capacity = if required > 0 {
            required
        } else if limit > 0 {
            limit.min(DEFAULT_CAPACITY)
        } else {
            DEFAULT_CAPACITY
        };
        if let Some(existing) = self.read_record(&req.name)? {
            let fits = existing.capacity_bytes >= required
                && (limit == 0 || existing.capacity_bytes <= limit);
            if !fits {
                return Err(Status::already_exists(format!(
                    "volume {:?} exists with {} bytes, outside the range asked for ({required}..{limit})",
                    req.name, existing.capacity_bytes
                )));
            }
            return Ok(self.csi_volume(&req.name, &existing));
        }
        if !self.topology_allows(req.accessibility_requirements.as_ref()) {
            return Err(Status::resource_exhausted(format!(
                "node {:?} is not in the requested topology",
                self.config.node_id
            )));
        }
        let available = self.available_bytes()?;
        if capacity > available {
            return Err(Status::resource_exhausted(format!(
                "{capacity} bytes asked for, {available} bytes free in {}",
                self.config.data_dir.display()
            )));
        }
        let dir = self.dir(&req.name);
        let content = dir.join(CONTENT);
        std::fs::create_dir_all(&content).map_err(|e| internal("making", &content, e))?;
        // World-writable as a fresh emptyDir is: the pod's user is not known here, and the
        // kubelet applies fsGroup ownership at mount time.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&content, std::fs::Permissions::from_mode(0o777))
            .map_err(|e| internal("chmod", &content, e))?;
        let r = Record {
            capacity_bytes: capacity,
            parameters: req.parameters,
            created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        };
        self.write_record(&req.name, &r)?;
        tracing::info!(volume = %self.volume_id(&req.name), bytes = capacity, "volume created");
        Ok(self.csi_volume(&req.name, &r))
    }

    fn delete_volume(&self, id: &str) -> Result<(), Status> {
        let name = match self.name_of(id, tonic::Code::FailedPrecondition) {
            Ok(n) => n,
            // A volume id that cannot be ours was never made: deleting it is done.
            Err(e) if e.code() == tonic::Code::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let dir = self.dir(name);
        if !dir.exists() {
            return Ok(());
        }
        if mounted_under(&dir.join(CONTENT))? {
            return Err(Status::failed_precondition(format!(
                "volume {id:?} is still published on this node"
            )));
        }
        std::fs::remove_dir_all(&dir).map_err(|e| internal("removing", &dir, e))?;
        tracing::info!(volume = %id, "volume deleted");
        Ok(())
    }

    fn expand_volume(&self, req: &csi::ControllerExpandVolumeRequest) -> Result<i64, Status> {
        let (name, mut r) = self.existing(&req.volume_id, tonic::Code::NotFound)?;
        let Some(range) = req.capacity_range else {
            return Err(invalid("capacity range missing in request"));
        };
        let (required, limit) = (range.required_bytes, range.limit_bytes);
        if required <= 0 || limit < 0 || (limit > 0 && required > limit) {
            return Err(Status::out_of_range(format!(
                "capacity range: required {required} bytes, limit {limit} bytes"
            )));
        }
        if let Some(c) = &req.volume_capability {
            self.check_capability(c)?;
        }
        if required > r.capacity_bytes {
            let grow = required - r.capacity_bytes;
            let available = self.available_bytes()?;
            if grow > available {
                return Err(Status::resource_exhausted(format!(
                    "{grow} more bytes asked for, {available} bytes free"
                )));
            }
            r.capacity_bytes = required;
            self.write_record(&name, &r)?;
            tracing::info!(volume = %req.volume_id, bytes = required, "volume expanded");
        }
        Ok(r.capacity_bytes)
    }

    fn publish(&self, req: &csi::NodePublishVolumeRequest) -> Result<(), Status> {
        if req.volume_id.is_empty() {
            return Err(invalid("volume id missing in request"));
        }
        if req.target_path.is_empty() {
            return Err(invalid("target path missing in request"));
        }
        let Some(cap) = &req.volume_capability else {
            return Err(invalid("volume capability missing in request"));
        };
        self.check_capability(cap)?;
        let (name, _) = self.existing(&req.volume_id, tonic::Code::NotFound)?;
        let source = self.dir(&name).join(CONTENT);
        let target = Path::new(&req.target_path);
        if !target.is_absolute() {
            return Err(invalid(format!(
                "target path {:?} is not absolute",
                req.target_path
            )));
        }
        if let Some(m) = mount_at(target)? {
            // Published already: the same volume the same way is done; anything else conflicts.
            return if m.readonly == req.readonly {
                Ok(())
            } else {
                Err(Status::already_exists(format!(
                    "{} is already mounted {}",
                    target.display(),
                    if m.readonly {
                        "read-only"
                    } else {
                        "read-write"
                    }
                )))
            };
        }
        std::fs::create_dir_all(target).map_err(|e| internal("making", target, e))?;
        mount::bind(&source, target, req.readonly)
            .map_err(|e| internal("bind-mounting", target, e))?;
        tracing::info!(volume = %req.volume_id, target = %target.display(), readonly = req.readonly, "volume published");
        Ok(())
    }

    fn unpublish(&self, req: &csi::NodeUnpublishVolumeRequest) -> Result<(), Status> {
        if req.volume_id.is_empty() {
            return Err(invalid("volume id missing in request"));
        }
        if req.target_path.is_empty() {
            return Err(invalid("target path missing in request"));
        }
        let target = Path::new(&req.target_path);
        if mount_at(target)?.is_some() {
            mount::unmount(target).map_err(|e| internal("unmounting", target, e))?;
            tracing::info!(volume = %req.volume_id, target = %target.display(), "volume unpublished");
        } else {
            // Not mounted: the volume must at least exist for the call to make sense.
            self.existing(&req.volume_id, tonic::Code::NotFound)?;
        }
        match std::fs::remove_dir(target) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(internal("removing", target, e)),
        }
    }

    fn stats(&self, req: &csi::NodeGetVolumeStatsRequest) -> Result<Vec<csi::VolumeUsage>, Status> {
        if req.volume_path.is_empty() {
            return Err(invalid("volume path missing in request"));
        }
        let (name, r) = self.existing(&req.volume_id, tonic::Code::NotFound)?;
        if !Path::new(&req.volume_path).exists() {
            return Err(Status::not_found(format!(
                "volume path {:?} does not exist",
                req.volume_path
            )));
        }
        let used = i64::try_from(disk_usage(&self.dir(&name).join(CONTENT))).unwrap_or(i64::MAX);
        let free = self.available_bytes()?;
        let available = (r.capacity_bytes - used).clamp(0, free);
        Ok(vec![csi::VolumeUsage {
            available,
            total: r.capacity_bytes,
            used,
            unit: csi::volume_usage::Unit::Bytes as i32,
        }])
    }
}

/// Bytes of disk blocks the files under `dir` take (not following symbolic links).
fn disk_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(m) = e.path().symlink_metadata() else {
                continue;
            };
            total += m.blocks() * 512;
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    total
}

/// A mount point, as `/proc/self/mountinfo` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountPoint {
    /// Where it is mounted.
    pub path: PathBuf,
    /// Whether it is mounted read-only.
    pub readonly: bool,
}

/// Decodes mountinfo's octal escapes (`\040` for a space).
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        if let (b'\\', Some(d)) = (b[i], octal) {
            let v = d.iter().fold(0u32, |v, c| v * 8 + u32::from(c - b'0'));
            out.push(u8::try_from(v).unwrap_or(b'?'));
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Every mount point of this process's mount namespace.
pub fn mount_points() -> std::io::Result<Vec<MountPoint>> {
    let f = std::fs::File::open("/proc/self/mountinfo")?;
    let mut out = Vec::new();
    for line in std::io::BufReader::new(f).lines() {
        let line = line?;
        let fields: Vec<&str> = line.split(' ').collect();
        if fields.len() < 6 {
            continue;
        }
        out.push(MountPoint {
            path: PathBuf::from(unescape(fields[4])),
            readonly: fields[5].split(',').any(|o| o == "ro"),
        });
    }
    Ok(out)
}

/// The last mount on `path`, if any.
fn mount_at(path: &Path) -> Result<Option<MountPoint>, Status> {
    let points = mount_points().map_err(|e| Status::internal(format!("mountinfo: {e}")))?;
    Ok(points.into_iter().rev().find(|m| m.path == path))
}

/// Whether anything is mounted from `source` — checked by device and inode of each mount's
/// root, which mountinfo does not give directly; the bind mounts this driver makes show up
/// as mounts whose content is `source`, so compare each target's identity with `source`'s.
fn mounted_under(source: &Path) -> Result<bool, Status> {
    use std::os::unix::fs::MetadataExt;
    let Ok(src) = source.metadata() else {
        return Ok(false);
    };
    let points = mount_points().map_err(|e| Status::internal(format!("mountinfo: {e}")))?;
    Ok(points.iter().any(|m| {
        m.path != source
            && m.path
                .metadata()
                .is_ok_and(|t| t.dev() == src.dev() && t.ino() == src.ino())
    }))
}

/// Bind mounts, the one OS call the Node service makes.
mod mount {
    use std::path::Path;

    use nix::mount::{MntFlags, MsFlags};

    /// Bind-mounts `source` on `target`, then makes it read-only when asked (a bind mount
    /// takes `MS_RDONLY` only on a remount).
    pub fn bind(source: &Path, target: &Path, readonly: bool) -> nix::Result<()> {
        nix::mount::mount(
            Some(source),
            target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )?;
        if readonly {
            let r = nix::mount::mount(
                None::<&str>,
                target,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                None::<&str>,
            );
            if let Err(e) = r {
                let _ = nix::mount::umount2(target, MntFlags::MNT_DETACH);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Unmounts `target`.
    pub fn unmount(target: &Path) -> nix::Result<()> {
        nix::mount::umount2(target, MntFlags::empty())
    }
}

/// The Identity service of a driver.
pub struct Identity(pub Arc<Driver>);
/// The Controller service of a driver.
pub struct Controller(pub Arc<Driver>);
/// The Node service of a driver.
pub struct Node(pub Arc<Driver>);

#[tonic::async_trait]
impl csi::identity_server::Identity for Identity {
    async fn get_plugin_info(
        &self,
        _: Request<csi::GetPluginInfoRequest>,
    ) -> Result<Response<csi::GetPluginInfoResponse>, Status> {
        Ok(Response::new(csi::GetPluginInfoResponse {
            name: self.0.name().to_string(),
            vendor_version: env!("CARGO_PKG_VERSION").to_string(),
            manifest: HashMap::new(),
        }))
    }

    async fn get_plugin_capabilities(
        &self,
        _: Request<csi::GetPluginCapabilitiesRequest>,
    ) -> Result<Response<csi::GetPluginCapabilitiesResponse>, Status> {
        use csi::plugin_capability::{self as pc, service, volume_expansion};
        let service = |t: service::Type| csi::PluginCapability {
            r#type: Some(pc::Type::Service(pc::Service { r#type: t as i32 })),
        };
        let mut caps = vec![
            service(service::Type::ControllerService),
            csi::PluginCapability {
                r#type: Some(pc::Type::VolumeExpansion(pc::VolumeExpansion {
                    r#type: volume_expansion::Type::Online as i32,
                })),
            },
        ];
        if self.0.config.kind == Kind::Local {
            caps.push(service(service::Type::VolumeAccessibilityConstraints));
        }
        Ok(Response::new(csi::GetPluginCapabilitiesResponse {
            capabilities: caps,
        }))
    }

    async fn probe(
        &self,
        _: Request<csi::ProbeRequest>,
    ) -> Result<Response<csi::ProbeResponse>, Status> {
        let ready = self.0.config.data_dir.is_dir();
        Ok(Response::new(csi::ProbeResponse { ready: Some(ready) }))
    }
}

#[tonic::async_trait]
impl csi::controller_server::Controller for Controller {
    async fn create_volume(
        &self,
        req: Request<csi::CreateVolumeRequest>,
    ) -> Result<Response<csi::CreateVolumeResponse>, Status> {
        let _g = self.0.lock.lock().await;
        let r = self
            .0
            .create_volume(req.into_inner())
            .map(|v| csi::CreateVolumeResponse { volume: Some(v) });
        self.0.observe("CreateVolume", r)
    }

    async fn delete_volume(
        &self,
        req: Request<csi::DeleteVolumeRequest>,
    ) -> Result<Response<csi::DeleteVolumeResponse>, Status> {
        let _g = self.0.lock.lock().await;
        let r = self
            .0
            .delete_volume(&req.into_inner().volume_id)
            .map(|()| csi::DeleteVolumeResponse {});
        self.0.observe("DeleteVolume", r)
    }

    async fn controller_publish_volume(
        &self,
        _: Request<csi::ControllerPublishVolumeRequest>,
    ) -> Result<Response<csi::ControllerPublishVolumeResponse>, Status> {
        Err(Status::unimplemented(
            "directory volumes need no attaching: PUBLISH_UNPUBLISH_VOLUME is not offered",
        ))
    }

    async fn controller_unpublish_volume(
        &self,
        _: Request<csi::ControllerUnpublishVolumeRequest>,
    ) -> Result<Response<csi::ControllerUnpublishVolumeResponse>, Status> {
        Err(Status::unimplemented(
            "directory volumes need no attaching: PUBLISH_UNPUBLISH_VOLUME is not offered",
        ))
    }

    async fn get_capacity(
        &self,
        req: Request<csi::GetCapacityRequest>,
    ) -> Result<Response<csi::GetCapacityResponse>, Status> {
        let req = req.into_inner();
        for c in &req.volume_capabilities {
            self.0.check_capability(c)?;
        }
        let here = req
            .accessible_topology
            .as_ref()
            .is_none_or(|t| self.0.config.kind == Kind::Shared || self.0.segment_matches(t));
        let available = if here { self.0.available_bytes()? } else { 0 };
        Ok(Response::new(csi::GetCapacityResponse {
            available_capacity: available,
            maximum_volume_size: Some(available),
            minimum_volume_size: None,
        }))
    }

    async fn controller_get_capabilities(
        &self,
        _: Request<csi::ControllerGetCapabilitiesRequest>,
    ) -> Result<Response<csi::ControllerGetCapabilitiesResponse>, Status> {
        use csi::controller_service_capability::{self as cc, rpc::Type};
        let caps = [
            Type::CreateDeleteVolume,
            Type::GetCapacity,
            Type::ExpandVolume,
        ]
        .into_iter()
        .map(|t| csi::ControllerServiceCapability {
            r#type: Some(cc::Type::Rpc(cc::Rpc { r#type: t as i32 })),
        })
        .collect();
        Ok(Response::new(csi::ControllerGetCapabilitiesResponse {
            capabilities: caps,
        }))
    }

    async fn controller_expand_volume(
        &self,
        req: Request<csi::ControllerExpandVolumeRequest>,
    ) -> Result<Response<csi::ControllerExpandVolumeResponse>, Status> {
        let _g = self.0.lock.lock().await;
        let r = self.0.expand_volume(&req.into_inner()).map(|capacity| {
            csi::ControllerExpandVolumeResponse {
                capacity_bytes: capacity,
                node_expansion_required: false,
            }
        });
        self.0.observe("ControllerExpandVolume", r)
    }
}

#[tonic::async_trait]
impl csi::node_server::Node for Node {
    async fn node_stage_volume(
        &self,
        _: Request<csi::NodeStageVolumeRequest>,
    ) -> Result<Response<csi::NodeStageVolumeResponse>, Status> {
        Err(Status::unimplemented(format!(
            "{} has no STAGE_UNSTAGE_VOLUME capability: publish directly",
            self.0.name()
        )))
    }

    async fn node_unstage_volume(
        &self,
        _: Request<csi::NodeUnstageVolumeRequest>,
    ) -> Result<Response<csi::NodeUnstageVolumeResponse>, Status> {
        Err(Status::unimplemented(format!(
            "{} has no STAGE_UNSTAGE_VOLUME capability",
            self.0.name()
        )))
    }

    async fn node_publish_volume(
        &self,
        req: Request<csi::NodePublishVolumeRequest>,
    ) -> Result<Response<csi::NodePublishVolumeResponse>, Status> {
        let _g = self.0.lock.lock().await;
        let r = self
            .0
            .publish(&req.into_inner())
            .map(|()| csi::NodePublishVolumeResponse {});
        self.0.observe("NodePublishVolume", r)
    }

    async fn node_unpublish_volume(
        &self,
        req: Request<csi::NodeUnpublishVolumeRequest>,
    ) -> Result<Response<csi::NodeUnpublishVolumeResponse>, Status> {
        let _g = self.0.lock.lock().await;
        let r = self
            .0
            .unpublish(&req.into_inner())
            .map(|()| csi::NodeUnpublishVolumeResponse {});
        self.0.observe("NodeUnpublishVolume", r)
    }

    async fn node_get_volume_stats(
        &self,
        req: Request<csi::NodeGetVolumeStatsRequest>,
    ) -> Result<Response<csi::NodeGetVolumeStatsResponse>, Status> {
        let r = self
            .0
            .stats(&req.into_inner())
            .map(|usage| csi::NodeGetVolumeStatsResponse {
                usage,
                volume_condition: None,
            });
        self.0.observe("NodeGetVolumeStats", r)
    }

    async fn node_expand_volume(
        &self,
        req: Request<csi::NodeExpandVolumeRequest>,
    ) -> Result<Response<csi::NodeExpandVolumeResponse>, Status> {
        // Nothing to grow on the node: the size is the record the controller keeps.
        let req = req.into_inner();
        if req.volume_path.is_empty() {
            return Err(invalid("volume path missing in request"));
        }
        let (_, r) = self.0.existing(&req.volume_id, tonic::Code::NotFound)?;
        Ok(Response::new(csi::NodeExpandVolumeResponse {
            capacity_bytes: r.capacity_bytes,
        }))
    }

    async fn node_get_capabilities(
        &self,
        _: Request<csi::NodeGetCapabilitiesRequest>,
    ) -> Result<Response<csi::NodeGetCapabilitiesResponse>, Status> {
        use csi::node_service_capability::{self as nc, rpc::Type};
        Ok(Response::new(csi::NodeGetCapabilitiesResponse {
            capabilities: vec![csi::NodeServiceCapability {
                r#type: Some(nc::Type::Rpc(nc::Rpc {
                    r#type: Type::GetVolumeStats as i32,
                })),
            }],
        }))
    }

    async fn node_get_info(
        &self,
        _: Request<csi::NodeGetInfoRequest>,
    ) -> Result<Response<csi::NodeGetInfoResponse>, Status> {
        Ok(Response::new(csi::NodeGetInfoResponse {
            node_id: self.0.config.node_id.clone(),
            max_volumes_per_node: self.0.config.max_volumes_per_node,
            accessible_topology: self.0.topology().into_iter().next(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_could_escape_the_data_dir_are_refused() {
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "a/b",
            ".hidden",
            "a b",
            &"x".repeat(65),
        ] {
            assert!(!valid_name(bad), "{bad:?}");
        }
        for good in ["pvc-0b6c1f4e-5b2d-4c1a-9a53-3f1f2a7c9d10", "data_1.v2"] {
            assert!(valid_name(good), "{good:?}");
        }
    }

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape(r"/var/lib/a\040b"), "/var/lib/a b");
        assert_eq!(unescape(r"/plain"), "/plain");
        assert_eq!(unescape(r"/trailing\04"), r"/trailing\04");
    }
}
