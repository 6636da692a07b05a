//! The kubelet plugin registrar (Kubernetes' node-driver-registrar, built in).
//!
//! It serves `pluginregistration.Registration` on
//! `<kubelet-root>/plugins_registry/<driver>-reg.sock`. The kubelet's plugin watcher finds
//! the socket there, calls `GetInfo` to learn the driver's name and its CSI socket
//! (`<kubelet-root>/plugins/<driver>/csi.sock`), registers the driver (calling its
//! `NodeGetInfo` and writing the node's CSINode), and reports the outcome with
//! `NotifyRegistrationStatus`.

use std::path::{Path, PathBuf};

use skiff_proto::pluginregistration as pb;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

/// The CSI versions a driver registers with.
pub const SUPPORTED_VERSIONS: &[&str] = &["1.0.0"];

/// The registration socket of `driver` under the kubelet's root directory.
pub fn registration_socket(kubelet_root: &Path, driver: &str) -> PathBuf {
    kubelet_root
        .join("plugins_registry")
        .join(format!("{driver}-reg.sock"))
}

/// The CSI socket of `driver` under the kubelet's root directory.
pub fn driver_socket(kubelet_root: &Path, driver: &str) -> PathBuf {
    kubelet_root.join("plugins").join(driver).join("csi.sock")
}

/// What the kubelet last said about the registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registration {
    /// Not told yet.
    Pending,
    /// Registered.
    Registered,
    /// Refused, with the kubelet's reason.
    Failed(String),
}

/// The registration service of one driver.
pub struct Registrar {
    driver: String,
    endpoint: PathBuf,
    status: tokio::sync::watch::Sender<Registration>,
}

impl Registrar {
    /// A registrar announcing `driver` at the CSI socket `endpoint`.
    pub fn new(driver: &str, endpoint: &Path) -> Self {
        Registrar {
            driver: driver.to_string(),
            endpoint: endpoint.to_path_buf(),
            status: tokio::sync::watch::channel(Registration::Pending).0,
        }
    }

    /// Follows what the kubelet says of the registration.
    pub fn status(&self) -> tokio::sync::watch::Receiver<Registration> {
        self.status.subscribe()
    }
}

struct Service {
    driver: String,
    endpoint: PathBuf,
    status: tokio::sync::watch::Sender<Registration>,
}

#[tonic::async_trait]
impl pb::registration_server::Registration for Service {
    async fn get_info(
        &self,
        _: Request<pb::InfoRequest>,
    ) -> Result<Response<pb::PluginInfo>, Status> {
        Ok(Response::new(pb::PluginInfo {
            r#type: pb::CSI_PLUGIN.to_string(),
            name: self.driver.clone(),
            endpoint: self.endpoint.display().to_string(),
            supported_versions: SUPPORTED_VERSIONS.iter().map(|v| v.to_string()).collect(),
        }))
    }

    async fn notify_registration_status(
        &self,
        req: Request<pb::RegistrationStatus>,
    ) -> Result<Response<pb::RegistrationStatusResponse>, Status> {
        let s = req.into_inner();
        let r = if s.plugin_registered {
            tracing::info!(driver = %self.driver, "registered with the kubelet");
            Registration::Registered
        } else {
            tracing::error!(driver = %self.driver, error = %s.error, "the kubelet refused the registration");
            Registration::Failed(s.error)
        };
        self.status.send_replace(r);
        Ok(Response::new(pb::RegistrationStatusResponse {}))
    }
}

/// Serves the registration service on `listener` (at `path`) until `shutdown`; removes the
/// socket when done, which is how the kubelet learns the driver is gone.
pub async fn serve(
    registrar: Registrar,
    listener: tokio::net::UnixListener,
    path: PathBuf,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let svc = Service {
        driver: registrar.driver,
        endpoint: registrar.endpoint,
        status: registrar.status,
    };
    let incoming = futures::stream::unfold(listener, |l| async move {
        let r = l.accept().await.map(|(s, _)| s);
        Some((r, l))
    });
    let r = tonic::transport::Server::builder()
        .add_service(pb::registration_server::RegistrationServer::new(svc))
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled())
        .await;
    let _ = std::fs::remove_file(&path);
    r
}
