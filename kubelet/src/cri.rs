//! The Container Runtime Interface client: `runtime.v1` over containerd's unix socket.

use std::path::PathBuf;

use skiff_proto::cri;
use skiff_proto::cri::image_service_client::ImageServiceClient;
use skiff_proto::cri::runtime_service_client::RuntimeServiceClient;
use tonic::transport::{Channel, Endpoint, Uri};

/// What can go wrong talking to the runtime.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The endpoint is not `unix:///path`.
    #[error("container runtime endpoint {0:?} is not unix:///path/to/socket")]
    Endpoint(String),
    /// The socket could not be reached.
    #[error("connecting to the container runtime at {path}: {source}")]
    Connect {
        /// The socket.
        path: String,
        /// Why.
        #[source]
        source: tonic::transport::Error,
    },
    /// A call failed.
    #[error("container runtime: {0}")]
    Call(#[from] tonic::Status),
}

/// The result of a runtime call.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The runtime's two services over one connection. Cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    /// `runtime.v1.RuntimeService`: sandboxes and containers.
    pub runtime: RuntimeServiceClient<Channel>,
    /// `runtime.v1.ImageService`: images.
    pub images: ImageServiceClient<Channel>,
}

impl Runtime {
    /// Connects to `endpoint` (`unix:///run/containerd/containerd.sock`). The connection is
    /// made lazily and re-made after the runtime restarts.
    pub fn connect(endpoint: &str) -> Result<Runtime> {
        let path = endpoint
            .strip_prefix("unix://")
            .filter(|p| p.starts_with('/'))
            .ok_or_else(|| Error::Endpoint(endpoint.to_string()))?;
        let path = PathBuf::from(path);
        let channel = Endpoint::from_static("http://[::]:50051").connect_with_connector_lazy(
            tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move {
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                        tokio::net::UnixStream::connect(path).await?,
                    ))
                }
            }),
        );
        Ok(Runtime {
            runtime: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
        })
    }

    /// The runtime's name and version, e.g. `containerd://1.6.20`.
    pub async fn version(&self) -> Result<String> {
        let v = self
            .runtime
            .clone()
            .version(cri::VersionRequest::default())
            .await?
            .into_inner();
        Ok(format!("{}://{}", v.runtime_name, v.runtime_version))
    }

    /// The runtime's conditions (`RuntimeReady`, `NetworkReady`).
    pub async fn status(&self) -> Result<Vec<cri::RuntimeCondition>> {
        let s = self
            .runtime
            .clone()
            .status(cri::StatusRequest { verbose: false })
            .await?
            .into_inner();
        Ok(s.status.map(|s| s.conditions).unwrap_or_default())
    }
}
