//! Pod volumes, under `<root>/pods/<uid>/volumes/<plugin>/<name>` as Kubernetes lays them out:
//! emptyDir (on disk, or tmpfs for `medium: Memory`), hostPath (with its type checks), and the
//! file-projecting kinds — configMap, secret, downwardAPI and projected (whose sources are
//! those three plus a service-account token from [`super::tokens`]) — written atomically as
//! Kubernetes' `AtomicWriter` does: the files go into a fresh `..YYYY_MM_DD_HH_MM_SS.N`
//! directory, a `..data` symlink is pointed at it with one `rename`, and every name the pod
//! sees is a symlink through `..data`, so a reader sees either the old set of files or the
//! new one, never a mix. Those volumes are rewritten on every volume sync (and when a token
//! was renewed), which is how a change to the source reaches the pod.
//!
//! Modes: each file gets its item's `mode`, else the volume's `defaultMode`, else 0644. With
//! a pod `fsGroup` the files are given to that group and made group-readable (0440 added,
//! as the kubelet's volume ownership does), and a token file starts from 0600 so that only
//! the owner and the group read it.

use std::collections::BTreeMap;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{
    DownwardAPIVolumeFile, KeyToPath, PersistentVolumeClaimVolumeSource, Pod, Volume,
};

use super::csi;
use super::env::{self, ConfigError, PodFacts, Sources};
use super::tokens;
use super::PodConfig;

/// A volume ready to be mounted into containers.
#[derive(Debug, Clone)]
pub struct Ready {
    /// Where it is on the node.
    pub host_path: PathBuf,
    /// Kubernetes mounts projected-file volumes read-only whatever the mount says.
    pub read_only: bool,
}

const DEFAULT_MODE: u32 = 0o644;

/// Sets every volume of `pod` up (again), returning them by name.
pub async fn setup(
    pod: &Pod,
    config: &PodConfig,
    sources: &mut Sources,
    tokens: &tokens::Manager,
    facts: &PodFacts,
    claims: &csi::Mounter,
) -> Result<BTreeMap<String, Ready>, ConfigError> {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let base = config.pod_dir(&uid).join("volumes");
    let mut out = BTreeMap::new();
    let volumes: Vec<&Volume> = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .into_iter()
        .flatten()
        .collect();
    for v in &volumes {
        // Image volumes are pulled and unpacked by the pod's worker (see `images`).
        if v.image.is_some() {
            continue;
        }
        if let Some(src) = claim_source(pod, v) {
            let mounted = claims.setup(pod, &src, config).await.map_err(|e| match e {
                // Kubernetes' wording for a claim the pod cannot have yet.
                csi::Error::Process(why) => {
                    let mut names: Vec<&str> = volumes.iter().map(|v| v.name.as_str()).collect();
                    names.sort();
                    ConfigError(format!(
                        "Unable to attach or mount volumes: unmounted volumes=[{}], unattached volumes=[{}]: failed to process volumes=[{}]: {why}",
                        v.name,
                        names.join(" "),
                        v.name
                    ))
                }
                e => ConfigError(e.to_string()),
            })?;
            out.insert(
                v.name.clone(),
                Ready {
                    host_path: mounted.host_path,
                    read_only: mounted.read_only,
                },
            );
            continue;
        }
        let ready = setup_one(pod, v, &base, config, sources, tokens, facts)
            .await
            .map_err(|e| {
                ConfigError(format!(
                    "MountVolume.SetUp failed for volume {:?} : {}",
                    v.name, e.0
                ))
            })?;
        out.insert(v.name.clone(), ready);
    }
    Ok(out)
}

/// The claim behind a volume: a `persistentVolumeClaim`, or the claim `POD-VOLUME` an
/// `ephemeral` volume stands for.
fn claim_source(pod: &Pod, v: &Volume) -> Option<PersistentVolumeClaimVolumeSource> {
    if let Some(c) = &v.persistent_volume_claim {
        return Some(c.clone());
    }
    v.ephemeral
        .as_ref()
        .map(|_| PersistentVolumeClaimVolumeSource {
            claim_name: format!(
                "{}-{}",
                pod.metadata.name.as_deref().unwrap_or_default(),
                v.name
            ),
            read_only: None,
        })
}

fn io(what: &str, path: &Path, e: std::io::Error) -> ConfigError {
    ConfigError(format!("{what} {}: {e}", path.display()))
}

async fn setup_one(
    pod: &Pod,
    v: &Volume,
    base: &Path,
    config: &PodConfig,
    sources: &mut Sources,
    tokens: &tokens::Manager,
    facts: &PodFacts,
) -> Result<Ready, ConfigError> {
    let fs_group = pod
        .spec
        .as_ref()
        .and_then(|s| s.security_context.as_ref())
        .and_then(|s| s.fs_group);
    if let Some(e) = &v.empty_dir {
        let dir = base.join("kubernetes.io~empty-dir").join(&v.name);
        if !dir.exists() {
            std::fs::create_dir_all(&dir).map_err(|e| io("creating", &dir, e))?;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))
                .map_err(|e| io("chmod", &dir, e))?;
            if e.medium.as_deref() == Some("Memory") {
                let size = e
                    .size_limit
                    .as_ref()
                    .and_then(|q| skiff_rules::Quantity::try_from(q).ok())
                    .map(|q| q.value())
                    .map(|b| format!(",size={b}"))
                    .unwrap_or_default();
                nix::mount::mount(
                    Some("tmpfs"),
                    &dir,
                    Some("tmpfs"),
                    nix::mount::MsFlags::empty(),
                    Some(format!("mode=0777{size}").as_str()),
                )
                .map_err(|e| ConfigError(format!("mounting tmpfs at {}: {e}", dir.display())))?;
            }
            if let Some(g) = fs_group {
                chown_group(&dir, g);
            }
        }
        return Ok(Ready {
            host_path: dir,
            read_only: false,
        });
    }
    if let Some(h) = &v.host_path {
        let path = PathBuf::from(&h.path);
        check_host_path(&path, h.type_.as_deref().unwrap_or(""))?;
        return Ok(Ready {
            host_path: path,
            read_only: false,
        });
    }
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let fs_user = fs_user(pod);
    // Token files, given to `fs_user` once written.
    let mut user_owned: Vec<String> = Vec::new();
    let (plugin, files, mode) = if let Some(c) = &v.config_map {
        let files = match sources.configmap(&c.name).await? {
            Some(cm) => project(
                &Sources::configmap_data(&cm),
                c.items.as_deref(),
                c.optional,
            )
            .map_err(|k| ConfigError(format!("configmap {:?}: key {k:?} not found", c.name)))?,
            None if c.optional.unwrap_or(false) => BTreeMap::new(),
            None => return Err(ConfigError(format!("configmap {:?} not found", c.name))),
        };
        ("kubernetes.io~configmap", files, c.default_mode)
    } else if let Some(s) = &v.secret {
        let name = s.secret_name.clone().unwrap_or_default();
        let files = match sources.secret(&name).await? {
            Some(sec) => project(&Sources::secret_data(&sec), s.items.as_deref(), s.optional)
                .map_err(|k| ConfigError(format!("secret {name:?}: key {k:?} not found")))?,
            None if s.optional.unwrap_or(false) => BTreeMap::new(),
            None => return Err(ConfigError(format!("secret {:?} not found", name))),
        };
        ("kubernetes.io~secret", files, s.default_mode)
    } else if let Some(d) = &v.downward_api {
        let files = downward(pod, d.items.as_deref().unwrap_or_default(), config, facts)?;
        ("kubernetes.io~downward-api", files, d.default_mode)
    } else if let Some(p) = &v.projected {
        let mut files = BTreeMap::new();
        for src in p.sources.iter().flatten() {
            if let Some(c) = &src.config_map {
                match sources.configmap(&c.name).await? {
                    Some(cm) => files.extend(
                        project(
                            &Sources::configmap_data(&cm),
                            c.items.as_deref(),
                            c.optional,
                        )
                        .map_err(|k| {
                            ConfigError(format!("configmap {:?}: key {k:?} not found", c.name))
                        })?,
                    ),
                    None if c.optional.unwrap_or(false) => {}
                    None => return Err(ConfigError(format!("configmap {:?} not found", c.name))),
                }
            }
            if let Some(s) = &src.secret {
                match sources.secret(&s.name).await? {
                    Some(sec) => files.extend(
                        project(&Sources::secret_data(&sec), s.items.as_deref(), s.optional)
                            .map_err(|k| {
                                ConfigError(format!("secret {:?}: key {k:?} not found", s.name))
                            })?,
                    ),
                    None if s.optional.unwrap_or(false) => {}
                    None => return Err(ConfigError(format!("secret {:?} not found", s.name))),
                }
            }
            if let Some(d) = &src.downward_api {
                files.extend(downward(
                    pod,
                    d.items.as_deref().unwrap_or_default(),
                    config,
                    facts,
                )?);
            }
            if let Some(t) = &src.service_account_token {
                let key = tokens::Key::for_pod(
                    pod,
                    t.audience.as_deref().unwrap_or(""),
                    t.expiration_seconds,
                );
                let token = tokens
                    .get(&key)
                    .await
                    .map_err(|e| ConfigError(e.to_string()))?;
                // With an owner to give it to (the containers' common user, or an fsGroup,
                // which adds group read below) the token is readable by the owner only.
                let mode = (fs_user.is_some() || fs_group.is_some()).then_some(0o600);
                files.insert(t.path.clone(), (token.into_bytes(), mode));
                user_owned.push(t.path.clone());
            }
        }
        ("kubernetes.io~projected", files, p.default_mode)
    } else {
        return Err(ConfigError(format!(
            "volume {:?} in namespace {ns} is of a kind this kubelet does not support",
            v.name
        )));
    };
    let dir = base.join(plugin).join(&v.name);
    let mode = mode.map(|m| m as u32).unwrap_or(DEFAULT_MODE);
    write_atomic(&dir, &files, mode, fs_group)?;
    if let Some(uid) = fs_user {
        for path in &user_owned {
            let file = dir.join(path);
            std::os::unix::fs::chown(&file, Some(uid as u32), None)
                .map_err(|e| io("chown", &file, e))?;
        }
    }
    Ok(Ready {
        host_path: dir,
        read_only: true,
    })
}

/// The user every container of the pod runs as, when they all run as the same one (the
/// kubelet's `FsUserFrom`): a token file is given to that user so that a container not
/// running as root reads a token of mode 0600.
fn fs_user(pod: &Pod) -> Option<i64> {
    let spec = pod.spec.as_ref()?;
    let pod_user = spec.security_context.as_ref().and_then(|s| s.run_as_user);
    let mut user = None;
    for c in super::all_containers(pod) {
        let u = c
            .security_context
            .as_ref()
            .and_then(|s| s.run_as_user)
            .or(pod_user)?;
        if user.is_some_and(|x| x != u) {
            return None;
        }
        user = Some(u);
    }
    user
}

/// A file to project: its bytes and its own mode (if given).
type Files = BTreeMap<String, (Vec<u8>, Option<u32>)>;

/// The files of a configMap/secret source: every key, or the listed `items`. A listed key
/// that is missing is an error unless the source is optional; the error carries the key.
fn project(
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    optional: Option<bool>,
) -> Result<Files, String> {
    match items {
        None | Some([]) => Ok(data
            .iter()
            .map(|(k, v)| (k.clone(), (v.clone(), None)))
            .collect()),
        Some(items) => {
            let mut out = Files::new();
            for i in items {
                match data.get(&i.key) {
                    Some(v) => {
                        out.insert(i.path.clone(), (v.clone(), i.mode.map(|m| m as u32)));
                    }
                    None if optional.unwrap_or(false) => {}
                    None => return Err(i.key.clone()),
                }
            }
            Ok(out)
        }
    }
}

fn downward(
    pod: &Pod,
    items: &[DownwardAPIVolumeFile],
    config: &PodConfig,
    facts: &PodFacts,
) -> Result<Files, ConfigError> {
    let mut out = Files::new();
    for i in items {
        let value = if let Some(f) = &i.field_ref {
            env::field_value(pod, &f.field_path, facts)?
        } else if let Some(r) = &i.resource_field_ref {
            let name = r.container_name.clone().unwrap_or_default();
            let c = super::all_containers(pod)
                .find(|c| c.name == name)
                .ok_or_else(|| ConfigError(format!("container {name:?} not found in the pod")))?;
            env::resource_value(c, &r.resource, r.divisor.as_ref(), config)?
        } else {
            String::new()
        };
        out.insert(
            i.path.clone(),
            (value.into_bytes(), i.mode.map(|m| m as u32)),
        );
    }
    Ok(out)
}

/// Writes `files` into `dir` the way Kubernetes' atomic writer does, only when they differ from
/// what is there: the new set in a fresh timestamped directory, `..data` swapped to it with
/// one `rename` (atomic on the same file system), the visible names as links through
/// `..data`, then what is no longer projected and the old directory removed.
fn write_atomic(
    dir: &Path,
    files: &Files,
    mode: u32,
    fs_group: Option<i64>,
) -> Result<(), ConfigError> {
    for path in files.keys() {
        let p = Path::new(path);
        if p.is_absolute()
            || path.is_empty()
            || p.components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
            || path.starts_with("..")
        {
            return Err(ConfigError(format!(
                "invalid path {path:?} in volume items"
            )));
        }
    }
    // Each file's final mode: its own, else the volume's; group-readable under an fsGroup.
    let files: BTreeMap<&String, (&Vec<u8>, u32)> = files
        .iter()
        .map(|(p, (bytes, own))| {
            let m = own.unwrap_or(mode) & 0o7777;
            let m = if fs_group.is_some() { m | 0o440 } else { m };
            (p, (bytes, m))
        })
        .collect();
    std::fs::create_dir_all(dir).map_err(|e| io("creating", dir, e))?;
    let data_link = dir.join("..data");
    if let Ok(current) = std::fs::read_link(&data_link) {
        if same_contents(&dir.join(&current), &files) {
            return Ok(());
        }
    }
    let stamp = data_dir_name();
    let new_dir = dir.join(&stamp);
    std::fs::create_dir(&new_dir).map_err(|e| io("creating", &new_dir, e))?;
    std::fs::set_permissions(&new_dir, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| io("chmod", &new_dir, e))?;
    if let Some(g) = fs_group {
        chown_group(&new_dir, g);
    }
    for (path, (bytes, m)) in &files {
        let file = new_dir.join(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io("creating", parent, e))?;
        }
        std::fs::write(&file, bytes).map_err(|e| io("writing", &file, e))?;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(*m))
            .map_err(|e| io("chmod", &file, e))?;
        if let Some(g) = fs_group {
            chown_group(&file, g);
        }
    }
    let tmp_link = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp_link);
    symlink(&stamp, &tmp_link).map_err(|e| io("linking", &tmp_link, e))?;
    std::fs::rename(&tmp_link, &data_link).map_err(|e| io("renaming", &data_link, e))?;
    // The user-visible names: each top-level entry a link through ..data.
    let top: std::collections::BTreeSet<String> = files
        .keys()
        .filter_map(|p| p.split('/').next().map(String::from))
        .collect();
    for name in &top {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            symlink(Path::new("..data").join(name), &link).map_err(|e| io("linking", &link, e))?;
        }
    }
    // What is no longer projected, the old data directory, and any a crash left behind.
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name == "..data" || name == stamp || top.contains(&name) {
                continue;
            }
            let is_dir = std::fs::symlink_metadata(e.path()).is_ok_and(|m| m.is_dir());
            if is_dir && name.starts_with("..") {
                let _ = std::fs::remove_dir_all(e.path());
            } else if !is_dir {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    Ok(())
}

/// A fresh data directory's name, `..` and the UTC time as Kubernetes names them
/// (`..2026_01_02_15_04_05.` and a unique suffix; here the nanoseconds).
fn data_dir_name() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let ts = k8s_openapi::jiff::Timestamp::from_second(now.as_secs() as i64)
        .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
    format!(
        "..{}.{:09}",
        ts.strftime("%Y_%m_%d_%H_%M_%S"),
        now.subsec_nanos()
    )
}

fn same_contents(dir: &Path, files: &BTreeMap<&String, (&Vec<u8>, u32)>) -> bool {
    let mut count = 0;
    let walk = walk_files(dir);
    for (rel, path) in &walk {
        let Some((bytes, m)) = files.get(rel) else {
            return false;
        };
        count += 1;
        let Ok(meta) = std::fs::metadata(path) else {
            return false;
        };
        if meta.permissions().mode() & 0o7777 != *m
            || std::fs::read(path).ok().as_ref() != Some(*bytes)
        {
            return false;
        }
    }
    count == files.len()
}

fn walk_files(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    let mut stack = vec![(String::new(), dir.to_path_buf())];
    while let Some((prefix, d)) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let rel = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                stack.push((rel, e.path()));
            } else {
                out.push((rel, e.path()));
            }
        }
    }
    out
}

fn chown_group(path: &Path, gid: i64) {
    let _ = nix::unistd::chown(path, None, Some(nix::unistd::Gid::from_raw(gid as u32)));
}

fn check_host_path(path: &Path, kind: &str) -> Result<(), ConfigError> {
    use std::os::unix::fs::FileTypeExt;
    let meta = std::fs::metadata(path);
    let fail = |what: &str| {
        Err(ConfigError(format!(
            "hostPath type check failed: {} is not a {what}",
            path.display()
        )))
    };
    match kind {
        "" => Ok(()),
        "DirectoryOrCreate" => {
            if meta.is_err() {
                std::fs::create_dir_all(path).map_err(|e| io("creating", path, e))?;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
                    .map_err(|e| io("chmod", path, e))?;
                return Ok(());
            }
            if meta.map(|m| m.is_dir()).unwrap_or(false) {
                Ok(())
            } else {
                fail("directory")
            }
        }
        "Directory" => match meta {
            Ok(m) if m.is_dir() => Ok(()),
            _ => fail("directory"),
        },
        "FileOrCreate" => {
            if meta.is_err() {
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| io("creating", parent, e))?;
                }
                std::fs::File::create(path).map_err(|e| io("creating", path, e))?;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
                    .map_err(|e| io("chmod", path, e))?;
                return Ok(());
            }
            if meta.map(|m| m.is_file()).unwrap_or(false) {
                Ok(())
            } else {
                fail("file")
            }
        }
        "File" => match meta {
            Ok(m) if m.is_file() => Ok(()),
            _ => fail("file"),
        },
        "Socket" => match meta {
            Ok(m) if m.file_type().is_socket() => Ok(()),
            _ => fail("socket"),
        },
        "CharDevice" => match meta {
            Ok(m) if m.file_type().is_char_device() => Ok(()),
            _ => fail("character device"),
        },
        "BlockDevice" => match meta {
            Ok(m) if m.file_type().is_block_device() => Ok(()),
            _ => fail("block device"),
        },
        other => Err(ConfigError(format!("unknown hostPath type {other:?}"))),
    }
}

/// Unmounts and removes everything the kubelet made for the pod (`<root>/pods/<uid>`).
pub fn teardown(config: &PodConfig, uid: &str) {
    let dir = config.pod_dir(uid);
    // A volume still published belongs to its driver: removing the directory would remove
    // the volume's data through the mount.
    let published = dir.join("volumes").join(csi::CSI_PLUGIN_DIR);
    if std::fs::read_dir(&published)
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| csi::is_mount_point(&e.path().join("mount")))
    {
        tracing::warn!(dir = %dir.display(), "not removing a pod's directory: a volume is still mounted");
        return;
    }
    let empty = dir.join("volumes").join("kubernetes.io~empty-dir");
    for e in std::fs::read_dir(&empty).into_iter().flatten().flatten() {
        let _ = nix::mount::umount2(&e.path(), nix::mount::MntFlags::MNT_DETACH);
    }
    if let Err(e) = std::fs::remove_dir_all(&dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(dir = %dir.display(), error = %e, "removing a pod's directory");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(kv: &[(&str, &str)]) -> Files {
        kv.iter()
            .map(|(k, v)| (k.to_string(), (v.as_bytes().to_vec(), None)))
            .collect()
    }

    #[test]
    fn atomic_writer_swaps_and_prunes() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("v");
        write_atomic(&dir, &files(&[("a", "1"), ("sub/b", "2")]), 0o600, None).unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("a")).unwrap(), "1");
        assert_eq!(std::fs::read_to_string(dir.join("sub/b")).unwrap(), "2");
        let mode = std::fs::metadata(dir.join("a"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        let first = std::fs::read_link(dir.join("..data")).unwrap();
        // Unchanged: nothing rewritten.
        write_atomic(&dir, &files(&[("a", "1"), ("sub/b", "2")]), 0o600, None).unwrap();
        assert_eq!(std::fs::read_link(dir.join("..data")).unwrap(), first);
        // Changed: new contents, the removed key gone, the old data directory gone.
        write_atomic(&dir, &files(&[("a", "3")]), 0o600, None).unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("a")).unwrap(), "3");
        assert!(std::fs::symlink_metadata(dir.join("sub")).is_err());
        assert!(!dir.join(&first).exists());
        assert!(write_atomic(&dir, &files(&[("../x", "1")]), 0o600, None).is_err());
    }

    #[test]
    fn projections_of_items() {
        let data = BTreeMap::from([("k".to_string(), b"v".to_vec())]);
        let items = [KeyToPath {
            key: "k".into(),
            path: "p/q".into(),
            mode: Some(0o400),
        }];
        let out = project(&data, Some(&items), None).unwrap();
        assert_eq!(out["p/q"], (b"v".to_vec(), Some(0o400)));
        let missing = [KeyToPath {
            key: "nope".into(),
            path: "x".into(),
            mode: None,
        }];
        assert_eq!(
            project(&data, Some(&missing), None),
            Err("nope".to_string())
        );
        assert!(project(&data, Some(&missing), Some(true))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn host_path_types() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("made");
        check_host_path(&p, "DirectoryOrCreate").unwrap();
        assert!(p.is_dir());
        assert!(check_host_path(&p, "File").is_err());
        let f = d.path().join("f/file");
        check_host_path(&f, "FileOrCreate").unwrap();
        assert!(f.is_file());
        assert!(check_host_path(&f, "Directory")
            .unwrap_err()
            .0
            .contains("is not a directory"));
    }

    fn mode_of(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn data_directories_are_named_by_the_utc_time() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("v");
        write_atomic(&dir, &files(&[("a", "1")]), 0o644, None).unwrap();
        let target = std::fs::read_link(dir.join("..data")).unwrap();
        let name = target.to_str().unwrap();
        // ..2026_01_02_15_04_05.123456789
        let (stamp, nanos) = name.strip_prefix("..").unwrap().split_once('.').unwrap();
        let parts: Vec<&str> = stamp.split('_').collect();
        assert_eq!(parts.len(), 6, "{name}");
        assert_eq!(parts[0].len(), 4, "{name}");
        assert!(parts
            .iter()
            .chain([&nanos])
            .all(|p| p.chars().all(|c| c.is_ascii_digit())));
        // The visible name is a link through ..data, which is the only way in.
        assert_eq!(
            std::fs::read_link(dir.join("a")).unwrap(),
            Path::new("..data/a")
        );
        assert!(std::fs::symlink_metadata(dir.join("..data_tmp")).is_err());
        // A data directory a crash left half-written goes with the next update.
        std::fs::create_dir(dir.join("..2001_01_01_00_00_00.1")).unwrap();
        write_atomic(&dir, &files(&[("a", "2")]), 0o644, None).unwrap();
        let dot: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".."))
            .collect();
        assert_eq!(dot.len(), 2, "{dot:?}");
    }

    #[test]
    fn a_reader_sees_the_old_files_or_the_new_never_a_mix() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("v");
        write_atomic(&dir, &files(&[("a", "0"), ("b", "0")]), 0o644, None).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = std::thread::spawn({
            let dir = dir.clone();
            let stop = stop.clone();
            move || {
                let mut reads = 0;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    // One resolution of ..data, as a reader holding the directory open has.
                    let Ok(target) = std::fs::read_link(dir.join("..data")) else {
                        continue;
                    };
                    let data = dir.join(target);
                    let (Ok(a), Ok(b)) = (
                        std::fs::read_to_string(data.join("a")),
                        std::fs::read_to_string(data.join("b")),
                    ) else {
                        // The old directory was removed after the swap: read again.
                        continue;
                    };
                    assert_eq!(a, b, "a mixed update");
                    reads += 1;
                }
                reads
            }
        });
        for i in 1..200 {
            let v = i.to_string();
            write_atomic(&dir, &files(&[("a", &v), ("b", &v)]), 0o644, None).unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        assert!(reader.join().unwrap() > 0);
        assert_eq!(std::fs::read_to_string(dir.join("b")).unwrap(), "199");
        // Only the newest data directory is left.
        let dirs = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("..2"))
            .count();
        assert_eq!(dirs, 1);
    }

    #[test]
    fn item_modes_the_default_mode_and_fs_group() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("v");
        let mut f = files(&[("plain", "1")]);
        f.insert("own".into(), (b"2".to_vec(), Some(0o400)));
        f.insert("exec".into(), (b"3".to_vec(), Some(0o755)));
        write_atomic(&dir, &f, 0o644, None).unwrap();
        assert_eq!(mode_of(&dir.join("plain")), 0o644);
        assert_eq!(mode_of(&dir.join("own")), 0o400);
        assert_eq!(mode_of(&dir.join("exec")), 0o755);
        // A changed default mode alone is an update.
        write_atomic(&dir, &f, 0o600, None).unwrap();
        assert_eq!(mode_of(&dir.join("plain")), 0o600);
        // Under an fsGroup the files are group-readable (the token's 0600 becomes 0640) and
        // belong to the group.
        let gid = nix::unistd::getegid().as_raw();
        let dir = d.path().join("g");
        let mut f = files(&[("plain", "1")]);
        f.insert("token".into(), (b"t".to_vec(), Some(0o600)));
        f.insert("own".into(), (b"2".to_vec(), Some(0o400)));
        write_atomic(&dir, &f, 0o644, Some(gid as i64)).unwrap();
        assert_eq!(mode_of(&dir.join("token")), 0o640);
        assert_eq!(mode_of(&dir.join("own")), 0o440);
        assert_eq!(mode_of(&dir.join("plain")), 0o644);
        use std::os::unix::fs::MetadataExt;
        assert_eq!(std::fs::metadata(dir.join("token")).unwrap().gid(), gid);
    }

    fn config(root: &Path) -> PodConfig {
        PodConfig {
            node_name: "node-a".into(),
            node_ip: "192.0.2.1".into(),
            root_dir: root.to_path_buf(),
            pod_logs_dir: root.join("logs"),
            cluster_dns: vec![],
            cluster_domain: "cluster.local".into(),
            resolv_conf: "/etc/resolv.conf".into(),
            cgroup_root: "/".into(),
            node_cpu_millis: 4000,
            node_memory_bytes: 8 << 30,
            sync_frequency: std::time::Duration::from_secs(60),
            sysctls: Default::default(),
        }
    }

    fn pod(volumes: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "shop", "uid": "u-1",
                "labels": {"app": "web", "tier": "front"},
                "annotations": {"team": "a"}},
            "spec": {
                "nodeName": "node-a",
                "serviceAccountName": "robot",
                "containers": [{"name": "main", "image": "x",
                    "resources": {"limits": {"memory": "64Mi"}, "requests": {"cpu": "250m"}}}],
                "volumes": volumes
            }
        }))
        .unwrap()
    }

    #[test]
    fn downward_api_fields() {
        let d = tempfile::tempdir().unwrap();
        let p = pod(serde_json::json!([]));
        let facts = PodFacts {
            pod_ips: vec!["10.1.0.5".into()],
            host_ip: "192.0.2.1".into(),
        };
        let items: Vec<DownwardAPIVolumeFile> = serde_json::from_value(serde_json::json!([
            {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}},
            {"path": "ns", "fieldRef": {"fieldPath": "metadata.namespace"}},
            {"path": "uid", "fieldRef": {"fieldPath": "metadata.uid"}},
            {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
            {"path": "annotations", "fieldRef": {"fieldPath": "metadata.annotations"}},
            {"path": "tier", "fieldRef": {"fieldPath": "metadata.labels['tier']"}},
            {"path": "node", "fieldRef": {"fieldPath": "spec.nodeName"}},
            {"path": "sa", "fieldRef": {"fieldPath": "spec.serviceAccountName"}},
            {"path": "ip", "fieldRef": {"fieldPath": "status.podIP"}},
            {"path": "host", "fieldRef": {"fieldPath": "status.hostIP"}},
            {"path": "mem", "resourceFieldRef": {"containerName": "main", "resource": "limits.memory", "divisor": "1Mi"}},
            {"path": "cpu", "resourceFieldRef": {"containerName": "main", "resource": "requests.cpu", "divisor": "1m"}, "mode": 0o400}
        ]))
        .unwrap();
        let out = downward(&p, &items, &config(d.path()), &facts).unwrap();
        let text = |k: &str| String::from_utf8(out[k].0.clone()).unwrap();
        assert_eq!(text("name"), "web");
        assert_eq!(text("ns"), "shop");
        assert_eq!(text("uid"), "u-1");
        assert_eq!(text("labels"), "app=\"web\"\ntier=\"front\"");
        assert_eq!(text("annotations"), "team=\"a\"");
        assert_eq!(text("tier"), "front");
        assert_eq!(text("node"), "node-a");
        assert_eq!(text("sa"), "robot");
        assert_eq!(text("ip"), "10.1.0.5");
        assert_eq!(text("host"), "192.0.2.1");
        assert_eq!(text("mem"), "64");
        assert_eq!(text("cpu"), "250");
        assert_eq!(out["cpu"].1, Some(0o400));
        let bad: Vec<DownwardAPIVolumeFile> = serde_json::from_value(serde_json::json!([
            {"path": "x", "fieldRef": {"fieldPath": "spec.nope"}}
        ]))
        .unwrap();
        let e = downward(&p, &bad, &config(d.path()), &facts).unwrap_err();
        assert_eq!(e.0, "unsupported fieldPath: spec.nope");
    }

    #[tokio::test]
    async fn a_projected_volume_with_a_token_and_the_downward_api() {
        use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestStatus};
        let d = tempfile::tempdir().unwrap();
        let seen = std::sync::Arc::new(parking_lot::Mutex::new(Vec::new()));
        let issuer: tokens::Issuer = std::sync::Arc::new({
            let seen = seen.clone();
            move |ns, sa, tr: TokenRequest| {
                seen.lock().push((ns, sa, tr.clone()));
                Box::pin(async move {
                    let mut out = tr;
                    out.status = Some(TokenRequestStatus {
                        token: "header.payload.sig".into(),
                        expiration_timestamp: skiff_client::time::now_time(),
                    });
                    Ok(out)
                })
            }
        });
        let tokens = tokens::Manager::with_issuer(issuer, std::time::Duration::ZERO);
        let p = pod(
            serde_json::json!([{"name": "all", "projected": {"defaultMode": 0o440, "sources": [
                {"serviceAccountToken": {"audience": "vault", "path": "token"}},
                {"downwardAPI": {"items": [
                    {"path": "meta/name", "fieldRef": {"fieldPath": "metadata.name"}},
                    {"path": "meta/labels", "fieldRef": {"fieldPath": "metadata.labels"}, "mode": 0o444}
                ]}}
            ]}}]),
        );
        // No configMap or secret is read: the client never connects.
        let client =
            skiff_client::Client::new(skiff_client::Config::new("https://127.0.0.1:1")).unwrap();
        let mut sources = Sources::new(client.clone(), "shop");
        let cfg = config(d.path());
        let claims = csi::Mounter::new(client.clone(), crate::csi::Drivers::default());
        let out = setup(
            &p,
            &cfg,
            &mut sources,
            &tokens,
            &PodFacts::default(),
            &claims,
        )
        .await
        .unwrap();
        let v = &out["all"];
        assert!(v.read_only);
        assert!(v
            .host_path
            .ends_with("pods/u-1/volumes/kubernetes.io~projected/all"));
        let read = |f: &str| std::fs::read_to_string(v.host_path.join(f)).unwrap();
        assert_eq!(read("token"), "header.payload.sig");
        assert_eq!(read("meta/name"), "web");
        assert_eq!(mode_of(&v.host_path.join("token")), 0o440);
        assert_eq!(mode_of(&v.host_path.join("meta/name")), 0o440);
        assert_eq!(mode_of(&v.host_path.join("meta/labels")), 0o444);
        // The token was asked for the pod's account, bound to the pod, for the audience and
        // the default hour.
        let (ns, sa, tr) = seen.lock()[0].clone();
        assert_eq!((ns.as_str(), sa.as_str()), ("shop", "robot"));
        assert_eq!(tr.spec.audiences, vec!["vault".to_string()]);
        assert_eq!(tr.spec.expiration_seconds, Some(3600));
        let b = tr.spec.bound_object_ref.unwrap();
        assert_eq!(
            (b.name.as_deref(), b.uid.as_deref()),
            (Some("web"), Some("u-1"))
        );
        // A refused token fails the mount, naming why.
        let refuse: tokens::Issuer = std::sync::Arc::new(|_, _, _| {
            Box::pin(async { Err("serviceaccounts \"robot\" not found".to_string()) })
        });
        let tokens = tokens::Manager::with_issuer(refuse, std::time::Duration::ZERO);
        let e = setup(
            &p,
            &cfg,
            &mut sources,
            &tokens,
            &PodFacts::default(),
            &claims,
        )
        .await
        .unwrap_err();
        assert_eq!(
            e.0,
            "MountVolume.SetUp failed for volume \"all\" : failed to fetch token: serviceaccounts \"robot\" not found"
        );
    }

    #[test]
    fn the_containers_common_user_owns_the_token() {
        let with = |pod_user: Option<i64>, users: &[Option<i64>]| {
            let containers: Vec<serde_json::Value> = users
                .iter()
                .enumerate()
                .map(|(i, u)| match u {
                    Some(u) => serde_json::json!({"name": format!("c{i}"), "securityContext": {"runAsUser": u}}),
                    None => serde_json::json!({"name": format!("c{i}")}),
                })
                .collect();
            let mut spec = serde_json::json!({"containers": containers});
            if let Some(u) = pod_user {
                spec["securityContext"] = serde_json::json!({"runAsUser": u});
            }
            let p: Pod = serde_json::from_value(serde_json::json!({"spec": spec})).unwrap();
            fs_user(&p)
        };
        assert_eq!(with(None, &[Some(1000), Some(1000)]), Some(1000));
        assert_eq!(with(Some(1000), &[None, Some(1000)]), Some(1000));
        assert_eq!(with(None, &[Some(1000), Some(2000)]), None);
        assert_eq!(with(None, &[Some(1000), None]), None);
        assert_eq!(with(Some(7), &[None]), Some(7));
    }
}
