//! Compiles the `.proto` files with a pure-Rust compiler (no system `protoc`), generates the
//! tonic/prost code, and keeps the descriptor set for gRPC server reflection.

use prost::Message;

const PROTOS: &[&str] = &["skiff/v1/api.proto"];
/// The Container Runtime Interface, spoken by the kubelet to containerd (client side only).
const CRI: &str = "cri/runtime/v1/api.proto";
/// The Kubernetes KMS v2 plugin API: served by `skiff-kms`, called by the API server.
const KMS: &str = "kms/v2/api.proto";
/// The Container Storage Interface v1 (`csi.v1`): served by `skiff-csi`, called by the kubelet
/// and the provisioner, so any CSI driver fits either side.
const CSI: &str = "csi/v1/csi.proto";
/// The kubelet's plugin registration API, served by a driver's registrar, called by the kubelet.
const PLUGIN_REGISTRATION: &str = "pluginregistration/v1/api.proto";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for p in PROTOS {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(PROTOS, ["."])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("skiff_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        // Object JSON is shared with the server's cache and the client's decoder, not copied.
        .bytes(".skiff.v1")
        .codec_path("crate::codec::SizedProstCodec")
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    println!("cargo:rerun-if-changed={CRI}");
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        .compile_fds(protox::compile([CRI], ["."])?)?;
    println!("cargo:rerun-if-changed={KMS}");
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(protox::compile([KMS], ["."])?)?;
    for p in [CSI, PLUGIN_REGISTRATION] {
        println!("cargo:rerun-if-changed={p}");
        tonic_prost_build::configure()
            .build_server(true)
            .build_client(true)
            .compile_fds(protox::compile([p], ["."])?)?;
    }
    Ok(())
}
