//! Image pulls through the runtime's image service, with `imagePullPolicy` and Kubernetes'
//! pull back-off: after a failed pull the image is not tried again for 10 s, then 20 s, ...
//! up to 5 minutes, and the container waits with `ImagePullBackOff` meanwhile.

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
