//! `skiff-csi-attach-driver`: a CSI driver for tests that needs its volumes attached, as a
//! block-storage driver (a cloud disk) does, with Skiff's own external attacher beside it.
//!
//! - Identity: its `--name`, the Controller service.
//! - Controller: `CreateVolume`/`DeleteVolume` (directories under `--data-dir`),
//!   `ControllerPublishVolume` answering a publish context (`devicePath`, `attachedTo`) — or,
//!   with `--fail-publish MESSAGE`, `INTERNAL` with that message — and
//!   `ControllerUnpublishVolume`; capabilities `CREATE_DELETE_VOLUME` and
//!   `PUBLISH_UNPUBLISH_VOLUME`.
//! - Node: `--node-id` as its id for this node; `NodePublishVolume` bind-mounts the volume's
//!   directory on the target; with `--stage`, `STAGE_UNSTAGE_VOLUME` and staging calls too.
//!
//! It registers through the kubelet's plugin registration socket with `skiff-csi`'s registrar,
//! and runs `skiff-csi`'s external attacher with `--kubeconfig`. Every CSI call it serves is
//! appended to `--calls` as one JSON line (`{"call": ..., "volume_id": ..., ...}`), which is
//! how a test sees what the kubelet and the attacher asked of it.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use serde_json::{json, Value};
use skiff_csi::{attacher, provisioner, registrar, CsiClient};
use skiff_proto::csi::v1 as csi;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

#[derive(Debug, Parser)]
struct Args {
    /// The kubeconfig of the external attacher.
    #[arg(long)]
    kubeconfig: PathBuf,
    /// The driver's name.
    #[arg(long, default_value = "attach.csi.test.skiff.dev")]
    name: String,
    /// The driver's id for this node (its NodeGetInfo answer).
    #[arg(long)]
    node_id: String,
    /// The kubelet's root directory (the sockets go under it).
    #[arg(long)]
    kubelet_root_dir: PathBuf,
    /// Where volumes are made.
    #[arg(long)]
    data_dir: PathBuf,
    /// The file every call is recorded in.
    #[arg(long)]
    calls: PathBuf,
    /// Answer ControllerPublishVolume with INTERNAL and this message.
    #[arg(long)]
    fail_publish: Option<String>,
    /// Offer STAGE_UNSTAGE_VOLUME.
    #[arg(long)]
    stage: bool,
}

struct Driver {
    name: String,
    node_id: String,
    data_dir: PathBuf,
    calls: parking_lot::Mutex<std::fs::File>,
    fail_publish: Option<String>,
    stage: bool,
}

impl Driver {
    fn record(&self, call: &str, fields: Value) {
        let mut line = json!({ "call": call });
        if let (Some(l), Some(f)) = (line.as_object_mut(), fields.as_object()) {
            l.extend(f.clone());
        }
        let mut f = self.calls.lock();
        let _ = writeln!(f, "{line}");
        let _ = f.flush();
    }

    fn volume_dir(&self, id: &str) -> Result<PathBuf, Status> {
        if id.is_empty() || id.contains('/') || id.starts_with('.') {
            return Err(Status::invalid_argument(format!("bad volume id {id:?}")));
        }
        Ok(self.data_dir.join(id))
    }
}

fn rpc_cap(t: csi::controller_service_capability::rpc::Type) -> csi::ControllerServiceCapability {
    use csi::controller_service_capability as cc;
    csi::ControllerServiceCapability {
        r#type: Some(cc::Type::Rpc(cc::Rpc { r#type: t as i32 })),
    }
}

struct Identity(Arc<Driver>);
struct Controller(Arc<Driver>);
struct Node(Arc<Driver>);

#[tonic::async_trait]
impl csi::identity_server::Identity for Identity {
    async fn get_plugin_info(
        &self,
        _: Request<csi::GetPluginInfoRequest>,
    ) -> Result<Response<csi::GetPluginInfoResponse>, Status> {
        Ok(Response::new(csi::GetPluginInfoResponse {
            name: self.0.name.clone(),
            vendor_version: "0.1.0".into(),
            manifest: HashMap::new(),
        }))
    }

    async fn get_plugin_capabilities(
        &self,
        _: Request<csi::GetPluginCapabilitiesRequest>,
    ) -> Result<Response<csi::GetPluginCapabilitiesResponse>, Status> {
        use csi::plugin_capability::{service, Service, Type};
        Ok(Response::new(csi::GetPluginCapabilitiesResponse {
            capabilities: vec![csi::PluginCapability {
                r#type: Some(Type::Service(Service {
                    r#type: service::Type::ControllerService as i32,
                })),
            }],
        }))
    }

    async fn probe(
        &self,
        _: Request<csi::ProbeRequest>,
    ) -> Result<Response<csi::ProbeResponse>, Status> {
        Ok(Response::new(csi::ProbeResponse { ready: Some(true) }))
    }
}

#[tonic::async_trait]
impl csi::controller_server::Controller for Controller {
    async fn create_volume(
        &self,
        req: Request<csi::CreateVolumeRequest>,
    ) -> Result<Response<csi::CreateVolumeResponse>, Status> {
        let r = req.into_inner();
        self.0.record("CreateVolume", json!({"name": r.name}));
        let dir = self.0.volume_dir(&r.name)?;
        std::fs::create_dir_all(&dir).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(csi::CreateVolumeResponse {
            volume: Some(csi::Volume {
                capacity_bytes: r.capacity_range.map(|c| c.required_bytes).unwrap_or(0),
                volume_id: r.name,
                ..Default::default()
            }),
        }))
    }

    async fn delete_volume(
        &self,
        req: Request<csi::DeleteVolumeRequest>,
    ) -> Result<Response<csi::DeleteVolumeResponse>, Status> {
        let r = req.into_inner();
        self.0
            .record("DeleteVolume", json!({"volume_id": r.volume_id}));
        let _ = std::fs::remove_dir_all(self.0.volume_dir(&r.volume_id)?);
        Ok(Response::new(csi::DeleteVolumeResponse {}))
    }

    async fn controller_publish_volume(
        &self,
        req: Request<csi::ControllerPublishVolumeRequest>,
    ) -> Result<Response<csi::ControllerPublishVolumeResponse>, Status> {
        let r = req.into_inner();
        self.0.record(
            "ControllerPublishVolume",
            json!({"volume_id": r.volume_id, "node_id": r.node_id, "readonly": r.readonly,
                "volume_context": r.volume_context,
                "capability": r.volume_capability.is_some()}),
        );
        if let Some(m) = &self.0.fail_publish {
            return Err(Status::internal(m.clone()));
        }
        self.0.volume_dir(&r.volume_id)?;
        if r.node_id.is_empty() || r.volume_capability.is_none() {
            return Err(Status::invalid_argument(
                "node id and capability are required",
            ));
        }
        Ok(Response::new(csi::ControllerPublishVolumeResponse {
            publish_context: HashMap::from([
                (
                    "devicePath".to_string(),
                    format!("/dev/test/{}", r.volume_id),
                ),
                ("attachedTo".to_string(), r.node_id),
            ]),
        }))
    }

    async fn controller_unpublish_volume(
        &self,
        req: Request<csi::ControllerUnpublishVolumeRequest>,
    ) -> Result<Response<csi::ControllerUnpublishVolumeResponse>, Status> {
        let r = req.into_inner();
        self.0.record(
            "ControllerUnpublishVolume",
            json!({"volume_id": r.volume_id, "node_id": r.node_id}),
        );
        Ok(Response::new(csi::ControllerUnpublishVolumeResponse {}))
    }

    async fn get_capacity(
        &self,
        _: Request<csi::GetCapacityRequest>,
    ) -> Result<Response<csi::GetCapacityResponse>, Status> {
        Err(Status::unimplemented("GetCapacity"))
    }

    async fn controller_get_capabilities(
        &self,
        _: Request<csi::ControllerGetCapabilitiesRequest>,
    ) -> Result<Response<csi::ControllerGetCapabilitiesResponse>, Status> {
        use csi::controller_service_capability::rpc::Type;
        Ok(Response::new(csi::ControllerGetCapabilitiesResponse {
            capabilities: vec![
                rpc_cap(Type::CreateDeleteVolume),
                rpc_cap(Type::PublishUnpublishVolume),
            ],
        }))
    }

    async fn controller_expand_volume(
        &self,
        _: Request<csi::ControllerExpandVolumeRequest>,
    ) -> Result<Response<csi::ControllerExpandVolumeResponse>, Status> {
        Err(Status::unimplemented("ControllerExpandVolume"))
    }
}

fn bind(source: &Path, target: &Path, read_only: bool) -> Result<(), Status> {
    use nix::mount::{mount, MsFlags};
    std::fs::create_dir_all(target).map_err(|e| Status::internal(e.to_string()))?;
    mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| Status::internal(format!("bind mount: {e}")))?;
    if read_only {
        mount(
            None::<&str>,
            target,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .map_err(|e| Status::internal(format!("read-only remount: {e}")))?;
    }
    Ok(())
}

fn unmount(target: &Path) -> Result<(), Status> {
    match nix::mount::umount(target) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => return Err(Status::internal(format!("unmount: {e}"))),
    }
    let _ = std::fs::remove_dir(target);
    Ok(())
}

#[tonic::async_trait]
impl csi::node_server::Node for Node {
    async fn node_stage_volume(
        &self,
        req: Request<csi::NodeStageVolumeRequest>,
    ) -> Result<Response<csi::NodeStageVolumeResponse>, Status> {
        let r = req.into_inner();
        self.0.record(
            "NodeStageVolume",
            json!({"volume_id": r.volume_id, "publish_context": r.publish_context,
                "staging_target_path": r.staging_target_path}),
        );
        if !self.0.stage {
            return Err(Status::unimplemented("NodeStageVolume"));
        }
        std::fs::create_dir_all(&r.staging_target_path)
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(csi::NodeStageVolumeResponse {}))
    }

    async fn node_unstage_volume(
        &self,
        req: Request<csi::NodeUnstageVolumeRequest>,
    ) -> Result<Response<csi::NodeUnstageVolumeResponse>, Status> {
        let r = req.into_inner();
        self.0.record(
            "NodeUnstageVolume",
            json!({"volume_id": r.volume_id, "staging_target_path": r.staging_target_path}),
        );
        Ok(Response::new(csi::NodeUnstageVolumeResponse {}))
    }

    async fn node_publish_volume(
        &self,
        req: Request<csi::NodePublishVolumeRequest>,
    ) -> Result<Response<csi::NodePublishVolumeResponse>, Status> {
        let r = req.into_inner();
        self.0.record(
            "NodePublishVolume",
            json!({"volume_id": r.volume_id, "publish_context": r.publish_context,
                "target_path": r.target_path, "readonly": r.readonly}),
        );
        let dir = self.0.volume_dir(&r.volume_id)?;
        std::fs::create_dir_all(&dir).map_err(|e| Status::internal(e.to_string()))?;
        bind(&dir, Path::new(&r.target_path), r.readonly)?;
        Ok(Response::new(csi::NodePublishVolumeResponse {}))
    }

    async fn node_unpublish_volume(
        &self,
        req: Request<csi::NodeUnpublishVolumeRequest>,
    ) -> Result<Response<csi::NodeUnpublishVolumeResponse>, Status> {
        let r = req.into_inner();
        self.0.record(
            "NodeUnpublishVolume",
            json!({"volume_id": r.volume_id, "target_path": r.target_path}),
        );
        unmount(Path::new(&r.target_path))?;
        Ok(Response::new(csi::NodeUnpublishVolumeResponse {}))
    }

    async fn node_get_volume_stats(
        &self,
        _: Request<csi::NodeGetVolumeStatsRequest>,
    ) -> Result<Response<csi::NodeGetVolumeStatsResponse>, Status> {
        Err(Status::unimplemented("NodeGetVolumeStats"))
    }

    async fn node_expand_volume(
        &self,
        _: Request<csi::NodeExpandVolumeRequest>,
    ) -> Result<Response<csi::NodeExpandVolumeResponse>, Status> {
        Err(Status::unimplemented("NodeExpandVolume"))
    }

    async fn node_get_capabilities(
        &self,
        _: Request<csi::NodeGetCapabilitiesRequest>,
    ) -> Result<Response<csi::NodeGetCapabilitiesResponse>, Status> {
        use csi::node_service_capability::{rpc::Type, Rpc, Type as Cap};
        let capabilities = if self.0.stage {
            vec![csi::NodeServiceCapability {
                r#type: Some(Cap::Rpc(Rpc {
                    r#type: Type::StageUnstageVolume as i32,
                })),
            }]
        } else {
            Vec::new()
        };
        Ok(Response::new(csi::NodeGetCapabilitiesResponse {
            capabilities,
        }))
    }

    async fn node_get_info(
        &self,
        _: Request<csi::NodeGetInfoRequest>,
    ) -> Result<Response<csi::NodeGetInfoResponse>, Status> {
        Ok(Response::new(csi::NodeGetInfoResponse {
            node_id: self.0.node_id.clone(),
            max_volumes_per_node: 0,
            accessible_topology: None,
        }))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    std::fs::create_dir_all(&args.data_dir)?;
    let calls = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args.calls)
        .with_context(|| format!("opening {}", args.calls.display()))?;
    let driver = Arc::new(Driver {
        name: args.name.clone(),
        node_id: args.node_id.clone(),
        data_dir: args.data_dir.clone(),
        calls: parking_lot::Mutex::new(calls),
        fail_publish: args.fail_publish.clone(),
        stage: args.stage,
    });
    let shutdown = CancellationToken::new();
    {
        let shutdown = shutdown.clone();
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::spawn(async move {
            term.recv().await;
            shutdown.cancel();
        });
    }
    let socket = registrar::driver_socket(&args.kubelet_root_dir, &args.name);
    let listener = skiff_csi::bind(&socket)?;
    let serve = {
        let (socket, shutdown, d) = (socket.clone(), shutdown.clone(), driver.clone());
        let incoming = futures::stream::unfold(listener, |l| async move {
            let r = l.accept().await.map(|(s, _)| s);
            Some((r, l))
        });
        tokio::spawn(async move {
            let r = tonic::transport::Server::builder()
                .add_service(csi::identity_server::IdentityServer::new(Identity(
                    d.clone(),
                )))
                .add_service(csi::controller_server::ControllerServer::new(Controller(
                    d.clone(),
                )))
                .add_service(csi::node_server::NodeServer::new(Node(d)))
                .serve_with_incoming_shutdown(incoming, shutdown.cancelled())
                .await;
            let _ = std::fs::remove_file(&socket);
            r
        })
    };
    let reg = registrar::registration_socket(&args.kubelet_root_dir, &args.name);
    let reg_listener = skiff_csi::bind(&reg)?;
    let registration = tokio::spawn(registrar::serve(
        registrar::Registrar::new(&args.name, &socket),
        reg_listener,
        reg,
        shutdown.clone(),
    ));
    let client =
        skiff_client::Client::new(skiff_client::Config::from_kubeconfig(&args.kubeconfig)?)?;
    attacher::run(
        client,
        CsiClient::new(&socket),
        provisioner::Plugin {
            name: args.name.clone(),
            topology: false,
            node_topology: None,
        },
        provisioner::Config {
            node: None,
            identity: format!("{}_{}", args.name, args.node_id),
            workers: 1,
        },
        shutdown.clone(),
    )
    .await;
    shutdown.cancel();
    serve.await??;
    registration.await??;
    Ok(())
}
