//! `skiff-csi`: Skiff's storage over the Container Storage Interface.
//!
//! - [`driver`]: the CSI drivers `local.csi.skiff.dev` (directories on each node) and
//!   `shared.csi.skiff.dev` (directories on a filesystem every node shares), serving CSI v1
//!   (Identity, Controller, Node) on a Unix socket.
//! - [`registrar`]: the kubelet plugin-registration service that tells the kubelet where a
//!   driver's socket is.
//! - [`provisioner`], [`attacher`] and [`resizer`]: Kubernetes' external-provisioner,
//!   external-attacher and external-resizer, turning PersistentVolumeClaims and
//!   VolumeAttachments into CSI calls. They speak to the driver only through CSI gRPC over its
//!   socket ([`connect`]), so they drive any CSI driver.
//! - [`capacity`]: the external-provisioner's storage capacity publishing, the driver's
//!   `GetCapacity` kept as CSIStorageCapacity objects for the scheduler.
//! - [`election`]: the Leases through which one provisioner, attacher and resizer of a driver
//!   run per cluster, named as Kubernetes' CSI sidecars name them.

pub mod attacher;
pub mod capacity;
pub mod driver;
pub mod election;
pub mod provisioner;
pub mod registrar;
pub mod resizer;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

/// Why a socket could not be served or reached.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// The endpoint is not `unix:///path` (or a plain absolute path).
    #[error("endpoint {0:?}: only unix:///path endpoints are supported")]
    Endpoint(String),
    /// Another process serves the socket.
    #[error("{0}: another process is serving on this socket")]
    InUse(PathBuf),
    /// The socket could not be made.
    #[error("listening on {path}: {source}")]
    Listen {
        /// The socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The connection could not be made.
    #[error("connecting to {path}: {source}")]
    Connect {
        /// The socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: tonic::transport::Error,
    },
}

/// The socket path of an endpoint: `unix:///path` (CSI's form) or `/path`.
pub fn socket_path(endpoint: &str) -> Result<PathBuf, SocketError> {
    let p = endpoint.strip_prefix("unix://").unwrap_or(endpoint);
    if p.starts_with('/') {
        Ok(PathBuf::from(p))
    } else {
        Err(SocketError::Endpoint(endpoint.to_string()))
    }
}

/// Binds a Unix socket at `path` (mode 0600, its directory made if missing), replacing a
/// stale socket file left by a dead process but never one a live process serves.
pub fn bind(path: &Path) -> Result<tokio::net::UnixListener, SocketError> {
    let listen_err = |source| SocketError::Listen {
        path: path.to_path_buf(),
        source,
    };
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(SocketError::InUse(path.to_path_buf()));
        }
        tracing::info!(socket = %path.display(), "replacing a stale socket");
        std::fs::remove_file(path).map_err(listen_err)?;
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(listen_err)?;
    }
    let listener = tokio::net::UnixListener::bind(path).map_err(listen_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(listen_err)?;
    Ok(listener)
}

/// The incoming connections of `listener`, as tonic takes them.
fn incoming(
    listener: tokio::net::UnixListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::UnixStream>> {
    futures::stream::unfold(listener, |l| async move {
        let r = l.accept().await.map(|(s, _)| s);
        Some((r, l))
    })
}

/// Serves a driver's Identity, Controller and Node services on `listener` (at `path`) until
/// `shutdown`; removes the socket when done.
pub async fn serve_driver(
    driver: Arc<driver::Driver>,
    listener: tokio::net::UnixListener,
    path: PathBuf,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    use skiff_proto::csi::v1::{
        controller_server::ControllerServer, identity_server::IdentityServer,
        node_server::NodeServer,
    };
    let r = tonic::transport::Server::builder()
        .add_service(IdentityServer::new(driver::Identity(driver.clone())))
        .add_service(ControllerServer::new(driver::Controller(driver.clone())))
        .add_service(NodeServer::new(driver::Node(driver)))
        .serve_with_incoming_shutdown(incoming(listener), shutdown.cancelled())
        .await;
    let _ = std::fs::remove_file(&path);
    r
}

/// A gRPC channel to the Unix socket at `path` (connected lazily, re-connected after a
/// driver restart).
pub fn connect(path: &Path) -> tonic::transport::Channel {
    let path = path.to_path_buf();
    tonic::transport::Endpoint::from_static("http://localhost").connect_with_connector_lazy(
        tower::service_fn(move |_: tonic::transport::Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(path).await?,
                ))
            }
        }),
    )
}

/// The CSI clients of one driver socket.
#[derive(Clone)]
pub struct CsiClient {
    /// The Identity service.
    pub identity: skiff_proto::csi::v1::identity_client::IdentityClient<tonic::transport::Channel>,
    /// The Controller service.
    pub controller:
        skiff_proto::csi::v1::controller_client::ControllerClient<tonic::transport::Channel>,
    /// The Node service.
    pub node: skiff_proto::csi::v1::node_client::NodeClient<tonic::transport::Channel>,
}

impl CsiClient {
    /// Clients of the driver serving at `path`.
    pub fn new(path: &Path) -> Self {
        let ch = connect(path);
        CsiClient {
            identity: skiff_proto::csi::v1::identity_client::IdentityClient::new(ch.clone()),
            controller: skiff_proto::csi::v1::controller_client::ControllerClient::new(ch.clone()),
            node: skiff_proto::csi::v1::node_client::NodeClient::new(ch),
        }
    }
}
