//! Attached volumes, the kubelet's side: which CSI volumes are in use on the node, and waiting
//! for a volume's attachment before it is staged and published.
//!
//! - Every CSI volume a pod here is set up with is *in use* from then until the pod's volumes
//!   are torn down. The node reports them in `node.status.volumesInUse` (as
//!   `kubernetes.io/csi/DRIVER^HANDLE`), which tells the attach/detach controller not to detach
//!   them yet.
//! - A volume whose driver needs attaching (its CSIDriver says `attachRequired: true`, or there
//!   is none) is staged and published only once the node has reported it in use and its
//!   `VolumeAttachment` (`csi-<sha256(handle + driver + node)>`) says `attached`; the
//!   attachment's `attachmentMetadata` is the `publish_context` of `NodeStageVolume` and
//!   `NodePublishVolume`, as Kubernetes' CSI plugin passes it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::storage::v1::VolumeAttachment;
use skiff_client::{Api, Client};
use tokio::sync::watch;

/// How long one volume set-up waits for the attachment before the pod is told why (and the
/// set-up is tried again on its next sync).
pub const WAIT: Duration = Duration::from_secs(10);

/// The CSI volumes in use on this node. Cheap to clone.
#[derive(Clone)]
pub struct InUse(Arc<Inner>);

struct Inner {
    /// Unique volume name → the pods (UIDs) using it.
    users: parking_lot::Mutex<BTreeMap<String, BTreeSet<String>>>,
    /// Bumped whenever the set of volumes changes.
    changed: watch::Sender<u64>,
    /// The volumes the node status last written lists.
    reported: watch::Sender<BTreeSet<String>>,
}

impl Default for InUse {
    fn default() -> Self {
        InUse(Arc::new(Inner {
            users: Default::default(),
            changed: watch::channel(0).0,
            reported: watch::channel(BTreeSet::new()).0,
        }))
    }
}

impl InUse {
    /// Records that pod `pod_uid` uses volume `unique`.
    pub fn claim(&self, unique: &str, pod_uid: &str) {
        let added = {
            let mut users = self.0.users.lock();
            let new = !users.contains_key(unique);
            users
                .entry(unique.to_string())
                .or_default()
                .insert(pod_uid.to_string());
            new
        };
        if added {
            self.0.changed.send_modify(|v| *v += 1);
        }
    }

    /// Forgets everything pod `pod_uid` used (its volumes are torn down).
    pub fn release_pod(&self, pod_uid: &str) {
        let removed = {
            let mut users = self.0.users.lock();
            let before = users.len();
            users.retain(|_, pods| {
                pods.remove(pod_uid);
                !pods.is_empty()
            });
            users.len() != before
        };
        if removed {
            self.0.changed.send_modify(|v| *v += 1);
        }
    }

    /// The volumes in use, sorted.
    pub fn list(&self) -> Vec<String> {
        self.0.users.lock().keys().cloned().collect()
    }

    /// Changes whenever [`InUse::list`] does.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.0.changed.subscribe()
    }

    /// Records what the node status now lists.
    pub fn reported(&self, names: &[String]) {
        self.0
            .reported
            .send_replace(names.iter().cloned().collect());
    }

    /// Waits until the node status lists `unique`, for at most `timeout`; whether it does.
    pub async fn wait_reported(&self, unique: &str, timeout: Duration) -> bool {
        let mut rx = self.0.reported.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|r| r.contains(unique)))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

/// Waits, for at most `timeout`, until the attachment of volume `handle` of `driver` on `node`
/// is attached; its publish context, or why not in Kubernetes' words.
pub async fn wait_attached(
    client: &Client,
    driver: &str,
    handle: &str,
    node: &str,
    timeout: Duration,
) -> Result<HashMap<String, String>, String> {
    let name = skiff_rules::attach::attachment_name(handle, driver, node);
    let api: Api<VolumeAttachment> = Api::all(client.clone());
    let deadline = tokio::time::Instant::now() + timeout;
    let mut pause = Duration::from_millis(100);
    let mut last = format!(
        "timed out waiting for external-attacher of {driver} CSI driver to attach volume {handle}"
    );
    loop {
        match api.get_opt(&name).await {
            Ok(Some(va)) => {
                if va.metadata.deletion_timestamp.is_some() {
                    return Err("volume attachment is being deleted".into());
                }
                let status = va.status.unwrap_or_default();
                if status.attached {
                    return Ok(status
                        .attachment_metadata
                        .unwrap_or_default()
                        .into_iter()
                        .collect());
                }
                if let Some(m) = status.attach_error.and_then(|e| e.message) {
                    return Err(m);
                }
            }
            Ok(None) => {
                last = format!(
                    "volume {handle} has GET error for volume attachment {name}: volumeattachments.storage.k8s.io {name:?} not found"
                );
            }
            Err(e) => {
                last = format!("volume {handle} has GET error for volume attachment {name}: {e}");
            }
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Err(last);
        }
        tokio::time::sleep(pause.min(deadline - now)).await;
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn volumes_are_in_use_until_their_last_pod_goes() {
        let u = InUse::default();
        let mut changes = u.subscribe();
        u.claim("kubernetes.io/csi/d^a", "pod-1");
        u.claim("kubernetes.io/csi/d^a", "pod-2");
        u.claim("kubernetes.io/csi/d^b", "pod-2");
        assert!(changes.has_changed().unwrap());
        changes.borrow_and_update();
        assert_eq!(u.list(), ["kubernetes.io/csi/d^a", "kubernetes.io/csi/d^b"]);
        u.release_pod("pod-2");
        assert_eq!(u.list(), ["kubernetes.io/csi/d^a"]);
        assert!(changes.has_changed().unwrap());
        changes.borrow_and_update();
        u.claim("kubernetes.io/csi/d^a", "pod-1");
        assert!(!changes.has_changed().unwrap(), "nothing new");
        u.release_pod("pod-1");
        assert!(u.list().is_empty());
    }

    #[tokio::test]
    async fn waiting_for_the_report() {
        let u = InUse::default();
        u.claim("v", "p");
        assert!(!u.wait_reported("v", Duration::from_millis(20)).await);
        let u2 = u.clone();
        let waiter =
            tokio::spawn(async move { u2.wait_reported("v", Duration::from_secs(10)).await });
        u.reported(&["v".to_string()]);
        assert!(waiter.await.unwrap());
    }
}
