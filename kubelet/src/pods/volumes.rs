//! Pod volumes, under `<root>/pods/<uid>/volumes/<plugin>/<name>` as Kubernetes lays them out:
//! emptyDir (on disk, or tmpfs for `medium: Memory`), hostPath (with its type checks), and the
//! file-projecting kinds — configMap, secret, downwardAPI and projected — written atomically
//! (a timestamped directory behind a `..data` symlink, each file a symlink into it) so that a
//! running container sees an update all at once. Those are rewritten on every sync, which is
//! how a change to the source reaches the pod.

use std::collections::BTreeMap;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{DownwardAPIVolumeFile, KeyToPath, Pod, Volume};

use super::env::{self, ConfigError, PodFacts, Sources};
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
    facts: &PodFacts,
) -> Result<BTreeMap<String, Ready>, ConfigError> {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let base = config.pod_dir(&uid).join("volumes");
    let mut out = BTreeMap::new();
    for v in pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .into_iter()
        .flatten()
    {
        let ready = setup_one(pod, v, &base, config, sources, facts)
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

fn io(what: &str, path: &Path, e: std::io::Error) -> ConfigError {
    ConfigError(format!("{what} {}: {e}", path.display()))
}

async fn setup_one(
    pod: &Pod,
    v: &Volume,
    base: &Path,
    config: &PodConfig,
    sources: &mut Sources,
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
            if src.service_account_token.is_some() {
                return Err(ConfigError(
                    "serviceAccountToken projections are not supported by this cluster".into(),
                ));
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
    Ok(Ready {
        host_path: dir,
        read_only: true,
    })
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
/// what is there.
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
    std::fs::create_dir_all(dir).map_err(|e| io("creating", dir, e))?;
    let data_link = dir.join("..data");
    if let Ok(current) = std::fs::read_link(&data_link) {
        if same_contents(&dir.join(&current), files, mode) {
            return Ok(());
        }
    }
    let stamp = format!("..{}", data_dir_stamp());
    let new_dir = dir.join(&stamp);
    std::fs::create_dir_all(&new_dir).map_err(|e| io("creating", &new_dir, e))?;
    std::fs::set_permissions(&new_dir, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| io("chmod", &new_dir, e))?;
    for (path, (bytes, own_mode)) in files {
        let file = new_dir.join(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io("creating", parent, e))?;
        }
        std::fs::write(&file, bytes).map_err(|e| io("writing", &file, e))?;
        let m = own_mode.unwrap_or(mode);
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(m))
            .map_err(|e| io("chmod", &file, e))?;
        if let Some(g) = fs_group {
            chown_group(&file, g);
        }
    }
    let tmp_link = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp_link);
    symlink(&stamp, &tmp_link).map_err(|e| io("linking", &tmp_link, e))?;
    let old = std::fs::read_link(&data_link).ok();
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
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("..") || top.contains(&name) {
                continue;
            }
            let _ = std::fs::remove_file(e.path());
        }
    }
    if let Some(old) = old {
        if old != Path::new(&stamp) {
            let _ = std::fs::remove_dir_all(dir.join(old));
        }
    }
    Ok(())
}

fn data_dir_stamp() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}_{:09}", now.as_secs(), now.subsec_nanos())
}

fn same_contents(dir: &Path, files: &Files, mode: u32) -> bool {
    let mut count = 0;
    let walk = walk_files(dir);
    for (rel, path) in &walk {
        let Some((bytes, own)) = files.get(rel) else {
            return false;
        };
        count += 1;
        let Ok(meta) = std::fs::metadata(path) else {
            return false;
        };
        if meta.permissions().mode() & 0o7777 != own.unwrap_or(mode)
            || std::fs::read(path).ok().as_ref() != Some(bytes)
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

/// Whether `secret` or `configmap` data would be projected unchanged (used by tests of the
/// writer).
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
}
