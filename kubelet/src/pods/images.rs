//! Image pulls through the runtime's image service, with `imagePullPolicy` and Kubernetes'
//! pull back-off: after a failed pull the image is not tried again for 10 s, then 20 s, ...
//! up to 5 minutes, and the container waits with `ImagePullBackOff` meanwhile.
//!
//! Image volumes (`volumes[].image`) are pulled the same way, then unpacked by the kubelet
//! from the runtime's content store into the pod's volume directory, since the runtime's CRI
//! (containerd before 2.1) cannot mount an image itself.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use skiff_proto::cri;
use skiff_rules::Backoff;
use tokio::time::Instant;

use crate::cri::Runtime;

/// Kubernetes' image pull back-off: 10 s doubling to 5 minutes.
const BACKOFF: Backoff = Backoff::exponential(Duration::from_secs(10), Duration::from_secs(300));
/// How long an image found present is taken to still be there without asking again (a burst
/// of pods of one image asks once).
const PRESENT_TTL: Duration = Duration::from_secs(5);

/// Why a container cannot have its image yet: the waiting reason and message its status shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullError {
    /// `ErrImagePull`, `ImagePullBackOff`, `ErrImageNeverPull` or `InvalidImageName`.
    pub reason: &'static str,
    /// What went wrong, for the status and the event.
    pub message: String,
    /// When another attempt may be made (none for `ErrImageNeverPull`).
    pub retry_at: Option<Instant>,
}

#[derive(Debug, Clone)]
struct Failure {
    until: Instant,
    backoff: Duration,
    message: String,
}

/// Pulls images, remembering failures for their back-off. Cheap to clone.
#[derive(Clone)]
pub struct Puller {
    runtime: Runtime,
    failures: Arc<Mutex<HashMap<String, Failure>>>,
    present: Arc<Mutex<HashMap<String, (String, Instant)>>>,
}

/// What happened on a successful [`Puller::ensure`].
#[derive(Debug, Clone)]
pub struct Pulled {
    /// The image's reference as the runtime knows it (its `imageID`).
    pub image_ref: String,
    /// Whether it was pulled now (not already present).
    pub pulled: bool,
    /// How long the pull took.
    pub took: Duration,
}

impl Puller {
    /// A puller using `runtime`'s image service.
    pub fn new(runtime: Runtime) -> Self {
        Puller {
            runtime,
            failures: Arc::new(Mutex::new(HashMap::new())),
            present: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Makes sure `image` is present as `policy` (`Always`, `IfNotPresent`, `Never`) asks.
    pub async fn ensure(&self, image: &str, policy: &str) -> Result<Pulled, PullError> {
        if image.is_empty() || image.contains(char::is_whitespace) {
            return Err(PullError {
                reason: "InvalidImageName",
                message: format!("Failed to apply default image tag {image:?}: couldn't parse image name {image:?}: invalid reference format"),
                retry_at: None,
            });
        }
        let policy = match policy {
            "" if image_tag_is_latest(image) => "Always",
            "" => "IfNotPresent",
            p => p,
        };
        let present = if policy == "Always" {
            None
        } else {
            self.present(image).await
        };
        match (policy, present) {
            ("Never", Some(r)) | ("IfNotPresent", Some(r)) => {
                return Ok(Pulled {
                    image_ref: r,
                    pulled: false,
                    took: Duration::ZERO,
                })
            }
            ("Never", None) => {
                return Err(PullError {
                    reason: "ErrImageNeverPull",
                    message: format!(
                        "Container image {image:?} is not present with pull policy of Never"
                    ),
                    retry_at: None,
                })
            }
            _ => {}
        }
        if let Some(f) = self.failures.lock().get(image) {
            if Instant::now() < f.until {
                return Err(PullError {
                    reason: "ImagePullBackOff",
                    message: format!("Back-off pulling image {image:?}: {}", f.message),
                    retry_at: Some(f.until),
                });
            }
        }
        let start = Instant::now();
        let result = self
            .runtime
            .images
            .clone()
            .pull_image(cri::PullImageRequest {
                image: Some(cri::ImageSpec {
                    image: image.to_string(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await;
        match result {
            Ok(r) => {
                self.failures.lock().remove(image);
                Ok(Pulled {
                    image_ref: r.into_inner().image_ref,
                    pulled: true,
                    took: start.elapsed(),
                })
            }
            Err(status) => {
                let message = format!(
                    "failed to pull and unpack image {image:?}: {}",
                    status.message()
                );
                let mut failures = self.failures.lock();
                let backoff = BACKOFF.after(failures.get(image).map(|f| f.backoff));
                let until = Instant::now() + backoff;
                failures.insert(
                    image.to_string(),
                    Failure {
                        until,
                        backoff,
                        message: message.clone(),
                    },
                );
                Err(PullError {
                    reason: "ErrImagePull",
                    message,
                    retry_at: Some(until),
                })
            }
        }
    }

    async fn present(&self, image: &str) -> Option<String> {
        if let Some((r, at)) = self.present.lock().get(image) {
            if at.elapsed() < PRESENT_TTL {
                return Some(r.clone());
            }
        }
        let r = self
            .runtime
            .images
            .clone()
            .image_status(cri::ImageStatusRequest {
                image: Some(cri::ImageSpec {
                    image: image.to_string(),
                    ..Default::default()
                }),
                verbose: false,
            })
            .await
            .ok()?
            .into_inner();
        let id = r.image.map(|i| i.id)?;
        self.present
            .lock()
            .insert(image.to_string(), (id.clone(), Instant::now()));
        Some(id)
    }
}

/// containerd's content store below its root directory.
const CONTENT: &str = "io.containerd.content.v1.content/blobs";

/// Why an image volume could not be unpacked.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// The runtime does not say where its content is, or lacks the image.
    #[error("{0}")]
    Runtime(String),
    /// A blob or the destination could not be read or written.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// To which file.
        path: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// A manifest or index is not what the OCI image spec says.
    #[error("image manifest {0}: unexpected content")]
    Manifest(String),
}

fn io_err(what: &'static str, path: &std::path::Path, source: std::io::Error) -> UnpackError {
    UnpackError::Io {
        what,
        path: path.display().to_string(),
        source,
    }
}

impl Puller {
    /// The runtime's content blob directory, from its verbose status.
    async fn content_dir(&self) -> Result<std::path::PathBuf, UnpackError> {
        let info = self
            .runtime
            .runtime
            .clone()
            .status(cri::StatusRequest { verbose: true })
            .await
            .map_err(|e| UnpackError::Runtime(e.message().to_string()))?
            .into_inner()
            .info;
        let root = info
            .get("config")
            .and_then(|c| serde_json::from_str::<serde_json::Value>(c).ok())
            .and_then(|c| c["containerdRootDir"].as_str().map(String::from))
            .ok_or_else(|| {
                UnpackError::Runtime("the container runtime does not report its root".into())
            })?;
        Ok(std::path::Path::new(&root).join(CONTENT))
    }

    /// Unpacks present image `image` into `dest` (made anew): its layers in order, with OCI
    /// whiteouts applied.
    pub async fn unpack(&self, image: &str, dest: &std::path::Path) -> Result<(), UnpackError> {
        let status = self
            .runtime
            .images
            .clone()
            .image_status(cri::ImageStatusRequest {
                image: Some(cri::ImageSpec {
                    image: image.to_string(),
                    ..Default::default()
                }),
                verbose: false,
            })
            .await
            .map_err(|e| UnpackError::Runtime(e.message().to_string()))?
            .into_inner();
        let digest = status
            .image
            .and_then(|i| i.repo_digests.into_iter().next())
            .and_then(|d| d.rsplit_once('@').map(|(_, d)| d.to_string()))
            .ok_or_else(|| UnpackError::Runtime(format!("image {image:?} is not present")))?;
        let blobs = self.content_dir().await?;
        let dest = dest.to_path_buf();
        tokio::task::spawn_blocking(move || unpack_blocking(&blobs, &digest, &dest))
            .await
            .map_err(|e| UnpackError::Runtime(e.to_string()))?
    }
}

/// The path of blob `digest` (`sha256:HEX`) in the content store.
fn blob(blobs: &std::path::Path, digest: &str) -> Result<std::path::PathBuf, UnpackError> {
    let (alg, hex) = digest
        .split_once(':')
        .filter(|(a, h)| !a.is_empty() && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| UnpackError::Manifest(digest.to_string()))?;
    Ok(blobs.join(alg).join(hex))
}

fn read_json(blobs: &std::path::Path, digest: &str) -> Result<serde_json::Value, UnpackError> {
    let path = blob(blobs, digest)?;
    let data = std::fs::read(&path).map_err(|e| io_err("reading", &path, e))?;
    serde_json::from_slice(&data).map_err(|_| UnpackError::Manifest(digest.to_string()))
}

fn unpack_blocking(
    blobs: &std::path::Path,
    digest: &str,
    dest: &std::path::Path,
) -> Result<(), UnpackError> {
    let mut manifest = read_json(blobs, digest)?;
    // An index: the manifest for this machine's platform (else its first).
    if let Some(list) = manifest["manifests"].as_array() {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        };
        let chosen = list
            .iter()
            .find(|m| m["platform"]["os"] == "linux" && m["platform"]["architecture"] == arch)
            .or_else(|| list.first())
            .and_then(|m| m["digest"].as_str())
            .ok_or_else(|| UnpackError::Manifest(digest.to_string()))?
            .to_string();
        manifest = read_json(blobs, &chosen)?;
    }
    let layers = manifest["layers"]
        .as_array()
        .ok_or_else(|| UnpackError::Manifest(digest.to_string()))?;
    if dest.exists() {
        std::fs::remove_dir_all(dest).map_err(|e| io_err("removing", dest, e))?;
    }
    std::fs::create_dir_all(dest).map_err(|e| io_err("creating", dest, e))?;
    for l in layers {
        let d = l["digest"]
            .as_str()
            .ok_or_else(|| UnpackError::Manifest(digest.to_string()))?;
        let path = blob(blobs, d)?;
        let data = std::fs::read(&path).map_err(|e| io_err("reading", &path, e))?;
        let tar: Box<dyn std::io::Read> = if data.starts_with(&[0x1f, 0x8b]) {
            Box::new(flate2::read::GzDecoder::new(std::io::Cursor::new(data)))
        } else {
            Box::new(std::io::Cursor::new(data))
        };
        apply_layer(tar, dest).map_err(|e| io_err("unpacking layer into", dest, e))?;
    }
    Ok(())
}

/// Applies one layer: its files, and its whiteouts (`.wh.NAME` removes `NAME`,
/// `.wh..wh..opq` empties the directory it is in).
fn apply_layer(tar: impl std::io::Read, dest: &std::path::Path) -> std::io::Result<()> {
    let mut archive = tar::Archive::new(tar);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_overwrite(true);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.into_owned();
        if path.components().any(|c| {
            !matches!(
                c,
                std::path::Component::Normal(_) | std::path::Component::CurDir
            )
        }) {
            continue;
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if let Some(hidden) = name.strip_prefix(".wh.") {
            let dir = dest.join(path.parent().unwrap_or(std::path::Path::new("")));
            if hidden == ".wh..opq" {
                if let Ok(children) = std::fs::read_dir(&dir) {
                    for c in children.flatten() {
                        let p = c.path();
                        let _ = std::fs::remove_dir_all(&p).or_else(|_| std::fs::remove_file(&p));
                    }
                }
            } else {
                let p = dir.join(hidden);
                let _ = std::fs::remove_dir_all(&p).or_else(|_| std::fs::remove_file(&p));
            }
            continue;
        }
        entry.unpack_in(dest)?;
    }
    Ok(())
}

/// Whether an image reference names the `latest` tag (explicitly or by having none), for
/// which Kubernetes' default pull policy is `Always`.
pub fn image_tag_is_latest(image: &str) -> bool {
    if image.contains('@') {
        return false;
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        Some((_, tag)) => tag == "latest",
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latest_tag_detection() {
        assert!(image_tag_is_latest("busybox"));
        assert!(image_tag_is_latest("busybox:latest"));
        assert!(image_tag_is_latest("127.0.0.1:5000/test/busybox"));
        assert!(!image_tag_is_latest("127.0.0.1:5000/test/busybox:1"));
        assert!(!image_tag_is_latest("busybox@sha256:abcd"));
    }
}
