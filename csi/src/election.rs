//! Leader election of the provisioner and the resizer when one of each runs per cluster (the
//! shared driver), named as Kubernetes' CSI sidecars name it, so that `kubectl get lease`
//! reads the same as on a cluster running `csi-provisioner` and `csi-resizer`:
//!
//! - the provisioner's Lease is the driver's name with `/` made `-`, sanitised (every
//!   character outside `[a-zA-Z0-9-]` made `-`): `shared.csi.skiff.dev` →
//!   `shared-csi-skiff-dev`;
//! - the resizer's is `external-resizer-` and the sanitised driver name:
//!   `external-resizer-shared-csi-skiff-dev`;
//! - the holder identity is the sanitised host name of the sidecar (its pod's name upstream);
//!   `skiff-csi` runs on the node itself, once per node and driver, so it is the node's name,
//!   which is the host name unless a node is given another.
//!
//! Each sidecar competes for its own Lease, so the two may lead from different nodes, as the
//! upstream sidecars can. Timings default to the sidecars' (15 s, 10 s, 5 s).

use std::future::Future;
use std::time::Duration;

use skiff_client::leader::{Config, LeaderElector, Outcome};
use skiff_client::Client;
use tokio_util::sync::CancellationToken;

/// A name as the CSI sidecars make it fit for a Lease name or holder identity: every
/// character outside `[a-zA-Z0-9-]` becomes `-`, and a trailing `-` gets an `X` after it.
pub fn sanitize_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if out.is_empty() || out.ends_with('-') {
        out.push('X');
    }
    out
}

/// The external-provisioner's Lease for `driver`.
pub fn provisioner_lease(driver: &str) -> String {
    sanitize_name(&driver.replace('/', "-"))
}

/// The external-attacher's Lease for `driver`.
pub fn attacher_lease(driver: &str) -> String {
    format!("external-attacher-leader-{}", sanitize_name(driver))
}

/// The external-resizer's Lease for `driver`.
pub fn resizer_lease(driver: &str) -> String {
    format!("external-resizer-{}", sanitize_name(driver))
}

/// The holder identity of the sidecars on node `node`.
pub fn identity(node: &str) -> String {
    sanitize_name(node)
}

/// How a Lease is held (the sidecars' `--leader-election-lease-duration`,
/// `--leader-election-renew-deadline`, `--leader-election-retry-period`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How long a Lease holds without renewal.
    pub lease_duration: Duration,
    /// How long the leader keeps trying to renew before it gives up.
    pub renew_deadline: Duration,
    /// How often candidates try to acquire and the leader renews.
    pub retry_period: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(5),
        }
    }
}

/// Runs `work` whenever this candidate holds Lease `namespace/lease` as `identity`, until
/// `shutdown` (the Lease released then). Leadership lost stops `work`, and the candidate
/// competes again: the sidecars exit at that point for the kubelet to restart them, but
/// `skiff-csi` runs on the node with nobody to restart it.
pub async fn run<F, Fut>(
    client: Client,
    namespace: &str,
    lease: &str,
    identity: &str,
    timing: Timing,
    shutdown: CancellationToken,
    work: F,
) where
    F: Fn(CancellationToken) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut config = Config::new(namespace, lease, identity);
    config.lease_duration = timing.lease_duration;
    config.renew_deadline = timing.renew_deadline;
    config.retry_period = timing.retry_period;
    loop {
        let outcome = LeaderElector::new(client.clone(), config.clone())
            .run(shutdown.clone(), &work)
            .await;
        if outcome == Outcome::Shutdown || shutdown.is_cancelled() {
            return;
        }
        tracing::warn!(lease, identity, "lost the Lease: competing for it again");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_sidecars() {
        assert_eq!(
            provisioner_lease("shared.csi.skiff.dev"),
            "shared-csi-skiff-dev"
        );
        assert_eq!(
            resizer_lease("shared.csi.skiff.dev"),
            "external-resizer-shared-csi-skiff-dev"
        );
        assert_eq!(
            attacher_lease("shared.csi.skiff.dev"),
            "external-attacher-leader-shared-csi-skiff-dev"
        );
        assert_eq!(provisioner_lease("example.com/nfs"), "example-com-nfs");
        assert_eq!(identity("worker_1.lan"), "worker-1-lan");
        assert_eq!(identity("node-a"), "node-a");
        assert_eq!(sanitize_name("ends."), "ends-X");
        assert_eq!(sanitize_name(""), "X");
    }

    #[test]
    fn timings_default_to_the_sidecars() {
        let t = Timing::default();
        assert_eq!(
            (t.lease_duration, t.renew_deadline, t.retry_period),
            (
                Duration::from_secs(15),
                Duration::from_secs(10),
                Duration::from_secs(5)
            )
        );
    }
}
