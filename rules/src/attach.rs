//! Attaching CSI volumes to nodes: the names Kubernetes' attach/detach controller, the
//! kubelet and the CSI external attacher agree on without asking each other.
//!
//! - A `VolumeAttachment` is named `csi-` + the hex SHA-256 of the volume handle, the driver
//!   name and the node name run together (Kubernetes' `getAttachmentName`), so the kubelet
//!   finds the one the controller made for its node.
//! - In `node.status.volumesAttached` and `volumesInUse` a CSI volume is
//!   `kubernetes.io/csi/DRIVER^HANDLE` (its unique volume name).
//! - A driver needs attaching unless its `CSIDriver` says `attachRequired: false`; a driver
//!   with no `CSIDriver` object needs it.

use k8s_openapi::api::storage::v1::CSIDriver;
use sha2::{Digest, Sha256};

/// The plugin name CSI volumes carry in unique volume names.
pub const CSI_PLUGIN: &str = "kubernetes.io/csi";

/// The name of the VolumeAttachment of volume `handle` of `driver` on `node`.
pub fn attachment_name(handle: &str, driver: &str, node: &str) -> String {
    let mut h = Sha256::new();
    h.update(handle.as_bytes());
    h.update(driver.as_bytes());
    h.update(node.as_bytes());
    let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    format!("csi-{hex}")
}

/// The unique volume name of a CSI volume: `kubernetes.io/csi/DRIVER^HANDLE`.
pub fn unique_volume_name(driver: &str, handle: &str) -> String {
    format!("{CSI_PLUGIN}/{driver}^{handle}")
}

/// Whether a driver's volumes must be attached before a node can use them: yes unless its
/// CSIDriver object says `attachRequired: false` (no object at all means yes).
pub fn attach_required(driver: Option<&CSIDriver>) -> bool {
    driver.is_none_or(|d| d.spec.attach_required != Some(false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attachment_names_are_kubes() {
        // sha256("vol-1" "hostpath.csi.k8s.io" "node-a"), as Kubernetes names it.
        let n = attachment_name("vol-1", "hostpath.csi.k8s.io", "node-a");
        assert!(n.starts_with("csi-"));
        assert_eq!(n.len(), 68);
        assert_eq!(
            n,
            "csi-5a70c5de395ccad5e79daeb27c7c4f2634b675e6e1bb2a397999a016143bc9fb"
        );
        assert_ne!(n, attachment_name("vol-1", "hostpath.csi.k8s.io", "node-b"));
    }

    #[test]
    fn unique_names_and_attach_required() {
        assert_eq!(
            unique_volume_name("ebs.csi.aws.com", "vol-0abc"),
            "kubernetes.io/csi/ebs.csi.aws.com^vol-0abc"
        );
        assert!(attach_required(None));
        let d = |v: Option<bool>| {
            let mut d = CSIDriver::default();
            d.spec.attach_required = v;
            d
        };
        assert!(attach_required(Some(&d(None))));
        assert!(attach_required(Some(&d(Some(true)))));
        assert!(!attach_required(Some(&d(Some(false)))));
    }
}
