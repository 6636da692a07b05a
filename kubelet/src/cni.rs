//! The node's pod network: the CNI configuration containerd reads to wire every pod that is
//! not on the host network — a bridge with host-local addresses from the node's pod CIDR,
//! `portmap` for hostPorts and `firewall` so that a host whose FORWARD policy is DROP (as
//! Docker leaves it) still passes pod traffic. containerd adds the loopback interface itself.

use std::path::Path;

/// The file the kubelet owns in the CNI configuration directory.
pub const CONFLIST: &str = "10-skiff.conflist";

/// The configuration for pods on `bridge` with addresses from `pod_cidr`; host-local keeps
/// its allocations under `ipam_dir`.
pub fn conflist(bridge: &str, pod_cidr: &str, ipam_dir: &Path) -> serde_json::Value {
    serde_json::json!({
        "cniVersion": "0.4.0",
        "name": "skiff",
        "plugins": [
            {
                "type": "bridge",
                "bridge": bridge,
                "isGateway": true,
                // No masquerading here: pods reach pods on other nodes with their own
                // addresses (Kubernetes' network model), and skiff-proxy masquerades what
                // leaves the cluster's pod range (its --cluster-cidr).
                "ipMasq": false,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": pod_cidr}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": ipam_dir.display().to_string(),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": true}},
            {"type": "firewall"},
        ],
    })
}

/// Writes the configuration into `conf_dir` (atomically: containerd may be reading it), unless
/// it is already there as written.
pub fn write(conf_dir: &Path, conf: &serde_json::Value) -> std::io::Result<bool> {
    std::fs::create_dir_all(conf_dir)?;
    let path = conf_dir.join(CONFLIST);
    let bytes = serde_json::to_vec_pretty(conf).expect("JSON");
    if std::fs::read(&path).is_ok_and(|b| b == bytes) {
        return Ok(false);
    }
    let tmp = conf_dir.join(format!(".{CONFLIST}.tmp"));
    std::fs::write(&tmp, &bytes)?;
    std::fs::rename(&tmp, &path)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_once_and_rewrites_on_change() {
        let dir = std::env::temp_dir().join(format!("skiff-cni-{}", std::process::id()));
        let a = conflist("cbr0", "10.1.0.0/24", Path::new("/var/lib/x"));
        assert!(write(&dir, &a).unwrap());
        assert!(!write(&dir, &a).unwrap(), "unchanged: not rewritten");
        let b = conflist("cbr0", "10.1.1.0/24", Path::new("/var/lib/x"));
        assert!(write(&dir, &b).unwrap());
        let on_disk: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join(CONFLIST)).unwrap()).unwrap();
        assert_eq!(
            on_disk["plugins"][0]["ipam"]["ranges"][0][0]["subnet"],
            "10.1.1.0/24"
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
