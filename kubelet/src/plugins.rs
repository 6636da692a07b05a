//! The plugin watcher (Kubernetes' `pluginmanager`): plugins announce themselves by placing
//! a registration socket in `<root-dir>/plugins_registry/`. For each socket the kubelet asks
//! `GetInfo` what the plugin is, checks it (a `CSIPlugin` with a name and a CSI version
//! `1.x`), connects to the plugin's endpoint, asks its Node service for the node's ID and
//! topology, records the driver and publishes it ([`crate::csi::NodeInfo`]), then tells the
//! plugin the outcome with `NotifyRegistrationStatus`. A socket that disappears deregisters
//! its driver; one that is replaced (the plugin restarted) registers again. A failed
//! registration is tried again at the next look, once a second.

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use skiff_proto::pluginregistration as reg;
use tokio_util::sync::CancellationToken;

use crate::csi::{self, Driver, Drivers, NodeInfo};

/// The plugin type of CSI drivers.
pub const CSI_PLUGIN: &str = "CSIPlugin";

/// The registration directory under the kubelet's root directory.
pub fn registry_dir(root: &Path) -> PathBuf {
    root.join("plugins_registry")
}

/// What one registration socket led to.
struct Registered {
    /// The socket's identity when it was registered: a new socket at the same path is a
    /// restarted plugin.
    ino: u64,
    /// The driver it registered.
    driver: String,
}

/// Watches `dir` for plugins until `shutdown`.
pub async fn run(dir: PathBuf, drivers: Drivers, info: NodeInfo, shutdown: CancellationToken) {
    if let Err(e) = std::fs::create_dir_all(&dir) {
        tracing::error!(dir = %dir.display(), error = %e, "creating the plugin registration directory");
        return;
    }
    if let Err(e) = info.init().await {
        tracing::warn!(error = %e, "creating the node's CSINode");
    }
    let mut registered: BTreeMap<PathBuf, Registered> = BTreeMap::new();
    let mut failed: BTreeMap<PathBuf, String> = BTreeMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let sockets = sockets(&dir);
        // Gone or replaced: deregister.
        let stale: Vec<PathBuf> = registered
            .iter()
            .filter(|(p, r)| sockets.get(*p) != Some(&r.ino))
            .map(|(p, _)| p.clone())
            .collect();
        for path in stale {
            let Some(r) = registered.remove(&path) else {
                continue;
            };
            // Another socket may have registered the same driver since.
            if registered.values().any(|o| o.driver == r.driver) {
                continue;
            }
            tracing::info!(driver = %r.driver, socket = %path.display(), "deregistering a CSI driver");
            drivers.remove(&r.driver);
            if let Err(e) = info.remove(&r.driver).await {
                tracing::warn!(driver = %r.driver, error = %e, "withdrawing a CSI driver from the node");
            }
        }
        failed.retain(|p, _| sockets.contains_key(p));
        for (path, ino) in sockets {
            if registered.contains_key(&path) {
                continue;
            }
            match register(&path, &drivers, &info).await {
                Ok(driver) => {
                    tracing::info!(driver = %driver, socket = %path.display(), "registered a CSI driver");
                    failed.remove(&path);
                    registered.insert(path, Registered { ino, driver });
                }
                Err(e) => {
                    let msg = e.to_string();
                    if failed.get(&path) != Some(&msg) {
                        tracing::warn!(socket = %path.display(), error = %msg, "registering a plugin");
                    }
                    failed.insert(path, msg);
                }
            }
        }
    }
}

/// The sockets in `dir` (hidden files left out, as Kubernetes does), with their inodes.
fn sockets(dir: &Path) -> BTreeMap<PathBuf, u64> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter_map(|e| {
            let m = e.metadata().ok()?;
            m.file_type().is_socket().then(|| (e.path(), m.ino()))
        })
        .collect()
}

/// Checks what a plugin says it is, returning the CSI endpoint to use.
fn validate(info: &reg::PluginInfo, socket: &Path) -> Result<PathBuf, String> {
    if info.r#type != CSI_PLUGIN {
        return Err(format!(
            "plugin type {:?} is not supported: only {CSI_PLUGIN:?}",
            info.r#type
        ));
    }
    if info.name.is_empty() {
        return Err("plugin name is empty".into());
    }
    if !info
        .supported_versions
        .iter()
        .any(|v| v.trim_start_matches('v').split('.').next() == Some("1"))
    {
        return Err(format!(
            "none of the versions specified {:?} are supported. allowed versions are [\"1.0.0\"]",
            info.supported_versions
        ));
    }
    let endpoint = if info.endpoint.is_empty() {
        socket.to_path_buf()
    } else {
        PathBuf::from(info.endpoint.trim_start_matches("unix://"))
    };
    if !endpoint.is_absolute() {
        return Err(format!(
            "plugin endpoint {:?} is not an absolute path",
            info.endpoint
        ));
    }
    Ok(endpoint)
}

/// One registration, reported back to the plugin.
async fn register(socket: &Path, drivers: &Drivers, info: &NodeInfo) -> Result<String, csi::Error> {
    let mut client = reg::registration_client::RegistrationClient::new(csi::unix_channel(socket));
    let plugin = tokio::time::timeout(csi::CALL_TIMEOUT, client.get_info(reg::InfoRequest {}))
        .await
        .map_err(|_| csi::Error::Call {
            call: "GetInfo",
            status: tonic::Status::deadline_exceeded("no answer"),
        })?
        .map_err(|status| csi::Error::Call {
            call: "GetInfo",
            status,
        })?
        .into_inner();
    let outcome = async {
        let endpoint = validate(&plugin, socket).map_err(csi::Error::Invalid)?;
        let driver = Driver::connect(&plugin.name, &endpoint).await?;
        info.add(&driver).await?;
        drivers.insert(driver);
        Ok::<_, csi::Error>(())
    }
    .await;
    let status = reg::RegistrationStatus {
        plugin_registered: outcome.is_ok(),
        error: outcome
            .as_ref()
            .err()
            .map(|e| format!("plugin {:?} failed registration: {e}", plugin.name))
            .unwrap_or_default(),
    };
    if let Err(e) = client.notify_registration_status(status).await {
        tracing::debug!(plugin = %plugin.name, error = %e, "telling a plugin its registration status");
    }
    outcome.map(|()| plugin.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(t: &str, name: &str, endpoint: &str, versions: &[&str]) -> reg::PluginInfo {
        reg::PluginInfo {
            r#type: t.into(),
            name: name.into(),
            endpoint: endpoint.into(),
            supported_versions: versions.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn plugins_are_checked_before_registration() {
        let sock = Path::new("/r/plugins_registry/d-reg.sock");
        assert_eq!(
            validate(
                &info("CSIPlugin", "d", "/r/plugins/d/csi.sock", &["1.0.0"]),
                sock
            ),
            Ok(PathBuf::from("/r/plugins/d/csi.sock"))
        );
        // No endpoint: the registration socket serves CSI itself.
        assert_eq!(
            validate(&info("CSIPlugin", "d", "", &["v1.9.0"]), sock),
            Ok(sock.to_path_buf())
        );
        assert!(validate(&info("DevicePlugin", "d", "", &["1.0.0"]), sock)
            .unwrap_err()
            .contains("not supported"));
        assert!(validate(&info("CSIPlugin", "", "", &["1.0.0"]), sock).is_err());
        assert!(validate(&info("CSIPlugin", "d", "", &["0.3.0"]), sock)
            .unwrap_err()
            .starts_with("none of the versions specified"));
        assert!(validate(&info("CSIPlugin", "d", "csi.sock", &["1.0.0"]), sock).is_err());
    }

    #[test]
    fn only_visible_sockets_count() {
        let d = tempfile::tempdir().unwrap();
        let _a = std::os::unix::net::UnixListener::bind(d.path().join("a-reg.sock")).unwrap();
        let _h = std::os::unix::net::UnixListener::bind(d.path().join(".hidden.sock")).unwrap();
        std::fs::write(d.path().join("file"), "x").unwrap();
        let found: Vec<PathBuf> = sockets(d.path()).into_keys().collect();
        assert_eq!(found, vec![d.path().join("a-reg.sock")]);
    }
}
