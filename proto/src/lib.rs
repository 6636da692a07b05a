//! Skiff's gRPC contract, generated at build time from `skiff/v1/api.proto`, the client
//! side of the Container Runtime Interface (`cri/runtime/v1/api.proto`) and the Kubernetes
//! KMS v2 plugin API (`kms/v2/api.proto`), the Container Storage Interface
//! (`csi/v1/csi.proto`) and the kubelet's plugin registration API
//! (`pluginregistration/v1/api.proto`).
//!
//! The `.proto` file documents every service, message and field; this crate re-exports the
//! generated tonic/prost code under [`v1`], plus the descriptor set gRPC server reflection
//! serves and the `google.rpc.Status` envelope that carries error details.

#![deny(missing_docs)]

pub mod codec;

/// The `skiff.v1` package: services `Resources` and `Server`, and their messages.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("skiff.v1");
}

/// The Kubernetes Container Runtime Interface (`runtime.v1`): the clients of its
/// `RuntimeService` and `ImageService`, for the part of it the kubelet uses.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod cri {
    tonic::include_proto!("runtime.v1");
}

/// The Kubernetes KMS v2 plugin API (`v2.KeyManagementService`): the server `skiff-kms`
/// implements and the client the API server's envelope encryption uses.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod kms {
    tonic::include_proto!("v2");
}

/// The Container Storage Interface (`csi.v1`): the servers a CSI driver implements
/// (`Identity`, `Controller`, `Node`) and their clients, for the subset of CSI v1.9 Skiff uses.
pub mod csi {
    /// CSI version 1.
    #[allow(missing_docs, clippy::all, clippy::pedantic)]
    pub mod v1 {
        tonic::include_proto!("csi.v1");
    }
}

/// The kubelet's plugin registration API (`pluginregistration`, kubelet's v1): the
/// `Registration` service a plugin's registrar serves and the kubelet calls.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pluginregistration {
    tonic::include_proto!("pluginregistration");

    /// The `type` a CSI plugin gives in its [`PluginInfo`].
    pub const CSI_PLUGIN: &str = "CSIPlugin";
}

/// The encoded `FileDescriptorSet` of every Skiff `.proto` file, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/skiff_descriptor.bin"));

/// The type URL of [`v1::Status`] inside a `google.rpc.Status`'s details.
pub const STATUS_TYPE_URL: &str = "type.googleapis.com/skiff.v1.Status";

/// The standard `google.rpc.Status` message gRPC carries in the `grpc-status-details-bin`
/// trailer (field numbers as the gRPC error model defines them).
#[derive(Clone, PartialEq, prost::Message)]
pub struct RpcStatus {
    /// The gRPC status code.
    #[prost(int32, tag = "1")]
    pub code: i32,
    /// The error message.
    #[prost(string, tag = "2")]
    pub message: String,
    /// Typed details; Skiff sends one [`v1::Status`].
    #[prost(message, repeated, tag = "3")]
    pub details: Vec<Any>,
}

/// `google.protobuf.Any`: a message and the URL of its type.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Any {
    /// The type URL, e.g. [`STATUS_TYPE_URL`].
    #[prost(string, tag = "1")]
    pub type_url: String,
    /// The encoded message.
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

impl v1::Status {
    /// Wraps this Kubernetes status as the bytes of a `google.rpc.Status` for
    /// [`tonic::Status::with_details`].
    pub fn to_details(&self, grpc_code: tonic::Code) -> Vec<u8> {
        use prost::Message;
        RpcStatus {
            code: grpc_code as i32,
            message: self.message.clone(),
            details: vec![Any {
                type_url: STATUS_TYPE_URL.to_string(),
                value: self.encode_to_vec(),
            }],
        }
        .encode_to_vec()
    }

    /// Reads the Kubernetes status out of a gRPC error's details, when it carries one.
    pub fn from_details(details: &[u8]) -> Option<Self> {
        use prost::Message;
        let rpc = RpcStatus::decode(details).ok()?;
        rpc.details
            .iter()
            .find(|a| a.type_url == STATUS_TYPE_URL)
            .and_then(|a| v1::Status::decode(a.value.as_slice()).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_details_round_trip() {
        let s = v1::Status {
            code: 404,
            reason: "NotFound".into(),
            message: "pods \"x\" not found".into(),
            json: b"{}".to_vec().into(),
        };
        let bytes = s.to_details(tonic::Code::NotFound);
        assert_eq!(v1::Status::from_details(&bytes), Some(s));
        assert_eq!(v1::Status::from_details(b"\xff\xff"), None);
    }
}
