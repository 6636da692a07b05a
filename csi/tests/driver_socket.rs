//! The drivers over their real CSI socket: a tonic client against the server on a temporary
//! Unix socket, real directories and real bind mounts.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use skiff_csi::driver::{self, Driver, Kind};
use skiff_csi::CsiClient;
use skiff_proto::csi::v1 as csi;
use tokio_util::sync::CancellationToken;

struct Served {
    csi: CsiClient,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    socket: PathBuf,
    data: PathBuf,
    _dir: tempfile::TempDir,
}

impl Served {
    async fn start(kind: Kind, node: &str) -> Served {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let socket = dir
            .path()
            .join("plugins")
            .join(kind.driver_name())
            .join("csi.sock");
        let drv = Driver::new(driver::Config {
            kind,
            node_id: node.into(),
            data_dir: data.clone(),
            max_volumes_per_node: 7,
        })
        .unwrap();
        let listener = skiff_csi::bind(&socket).unwrap();
        let stop = CancellationToken::new();
        let task = tokio::spawn(skiff_csi::serve_driver(
            drv,
            listener,
            socket.clone(),
            stop.clone(),
        ));
        Served {
            csi: CsiClient::new(&socket),
            stop,
            task,
            socket,
            data,
            _dir: dir,
        }
    }

    async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
        assert!(!self.socket.exists(), "the socket is removed on shutdown");
    }
}

fn mount_cap(mode: csi::volume_capability::access_mode::Mode) -> csi::VolumeCapability {
    use csi::volume_capability::{AccessMode, AccessType, MountVolume};
    csi::VolumeCapability {
        access_type: Some(AccessType::Mount(MountVolume::default())),
        access_mode: Some(AccessMode { mode: mode as i32 }),
    }
}

fn create(name: &str, bytes: i64, caps: Vec<csi::VolumeCapability>) -> csi::CreateVolumeRequest {
    csi::CreateVolumeRequest {
        name: name.into(),
        capacity_range: Some(csi::CapacityRange {
            required_bytes: bytes,
            limit_bytes: 0,
        }),
        volume_capabilities: caps,
        parameters: HashMap::from([("tier".to_string(), "fast".to_string())]),
        ..Default::default()
    }
}

fn publish(id: &str, target: &Path, readonly: bool) -> csi::NodePublishVolumeRequest {
    csi::NodePublishVolumeRequest {
        volume_id: id.into(),
        target_path: target.display().to_string(),
        volume_capability: Some(mount_cap(
            csi::volume_capability::access_mode::Mode::SingleNodeWriter,
        )),
        readonly,
        ..Default::default()
    }
}

/// The code of a refusal; panics on success.
fn code<T>(r: Result<tonic::Response<T>, tonic::Status>) -> tonic::Code {
    match r {
        Ok(_) => panic!("accepted"),
        Err(e) => e.code(),
    }
}

fn is_mounted(path: &Path) -> bool {
    skiff_csi::driver::mount_points()
        .unwrap()
        .iter()
        .any(|m| m.path == path)
}

#[tokio::test]
async fn local_volume_lifecycle_over_the_socket() {
    use csi::volume_capability::access_mode::Mode;
    let s = Served::start(Kind::Local, "node-a").await;
    let mut id = s.csi.identity.clone();
    let info = id
        .get_plugin_info(csi::GetPluginInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.name, "local.csi.skiff.dev");
    let probe = id.probe(csi::ProbeRequest {}).await.unwrap().into_inner();
    assert_eq!(probe.ready, Some(true));

    let mut node = s.csi.node.clone();
    let ni = node
        .node_get_info(csi::NodeGetInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ni.node_id, "node-a");
    assert_eq!(ni.max_volumes_per_node, 7);
    assert_eq!(
        ni.accessible_topology.unwrap().segments,
        HashMap::from([(driver::LOCAL_TOPOLOGY_KEY.to_string(), "node-a".to_string())])
    );

    let mut ctl = s.csi.controller.clone();
    let cap = ctl
        .get_capacity(csi::GetCapacityRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(cap.available_capacity > 0);
    let elsewhere = ctl
        .get_capacity(csi::GetCapacityRequest {
            accessible_topology: Some(csi::Topology {
                segments: HashMap::from([(
                    driver::LOCAL_TOPOLOGY_KEY.to_string(),
                    "node-b".to_string(),
                )]),
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        elsewhere.available_capacity, 0,
        "no room on another node here"
    );

    let v = ctl
        .create_volume(create(
            "pvc-1",
            1 << 20,
            vec![mount_cap(Mode::SingleNodeWriter)],
        ))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    assert_eq!(v.volume_id, "pvc-1@node-a");
    assert_eq!(v.capacity_bytes, 1 << 20);
    assert_eq!(
        v.accessible_topology[0].segments[driver::LOCAL_TOPOLOGY_KEY],
        "node-a"
    );
    assert!(s.data.join("pvc-1/data").is_dir());
    // The same request again is the same volume; an incompatible size is ALREADY_EXISTS.
    let again = ctl
        .create_volume(create(
            "pvc-1",
            1 << 20,
            vec![mount_cap(Mode::SingleNodeWriter)],
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.volume.unwrap().volume_id, "pvc-1@node-a");
    let err = ctl
        .create_volume(create(
            "pvc-1",
            1 << 30,
            vec![mount_cap(Mode::SingleNodeWriter)],
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::AlreadyExists, "{err:?}");

    // Publish: a bind mount, writable, then the same again is fine.
    let target = s
        .data
        .parent()
        .unwrap()
        .join("pods/uid/volumes/pvc-1/mount");
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    node.node_publish_volume(publish(&v.volume_id, &target, false))
        .await
        .unwrap();
    assert!(is_mounted(&target));
    std::fs::write(target.join("hello"), b"world").unwrap();
    assert_eq!(
        std::fs::read(s.data.join("pvc-1/data/hello")).unwrap(),
        b"world"
    );
    node.node_publish_volume(publish(&v.volume_id, &target, false))
        .await
        .unwrap();
    let err = node
        .node_publish_volume(publish(&v.volume_id, &target, true))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::AlreadyExists, "{err:?}");

    // Stats: the recorded size and what the files take.
    let stats = node
        .node_get_volume_stats(csi::NodeGetVolumeStatsRequest {
            volume_id: v.volume_id.clone(),
            volume_path: target.display().to_string(),
            staging_target_path: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.usage[0].total, 1 << 20);
    assert!(stats.usage[0].used > 0);

    // A published volume is not deleted under the pod.
    let err = ctl
        .delete_volume(csi::DeleteVolumeRequest {
            volume_id: v.volume_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");

    // A read-only publish refuses writes.
    let ro = s
        .data
        .parent()
        .unwrap()
        .join("pods/uid2/volumes/pvc-1/mount");
    std::fs::create_dir_all(ro.parent().unwrap()).unwrap();
    node.node_publish_volume(publish(&v.volume_id, &ro, true))
        .await
        .unwrap();
    assert_eq!(std::fs::read(ro.join("hello")).unwrap(), b"world");
    let w = std::fs::write(ro.join("nope"), b"x").unwrap_err();
    assert_eq!(w.raw_os_error(), Some(nix::libc::EROFS), "{w}");

    for t in [&target, &ro] {
        node.node_unpublish_volume(csi::NodeUnpublishVolumeRequest {
            volume_id: v.volume_id.clone(),
            target_path: t.display().to_string(),
        })
        .await
        .unwrap();
        assert!(!is_mounted(t));
        assert!(!t.exists(), "the target is removed");
    }
    // Unpublishing again is done already.
    node.node_unpublish_volume(csi::NodeUnpublishVolumeRequest {
        volume_id: v.volume_id.clone(),
        target_path: target.display().to_string(),
    })
    .await
    .unwrap();

    // Expansion records the new size.
    let grown = ctl
        .controller_expand_volume(csi::ControllerExpandVolumeRequest {
            volume_id: v.volume_id.clone(),
            capacity_range: Some(csi::CapacityRange {
                required_bytes: 2 << 20,
                limit_bytes: 0,
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(grown.capacity_bytes, 2 << 20);
    assert!(!grown.node_expansion_required);

    ctl.delete_volume(csi::DeleteVolumeRequest {
        volume_id: v.volume_id.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    assert!(!s.data.join("pvc-1").exists());
    // Deleting what is gone is done already.
    ctl.delete_volume(csi::DeleteVolumeRequest {
        volume_id: v.volume_id.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    s.stop().await;
}

#[tokio::test]
async fn bad_requests_get_the_codes_csi_specifies() {
    use csi::volume_capability::access_mode::Mode;
    use tonic::Code;
    let s = Served::start(Kind::Local, "node-a").await;
    let mut ctl = s.csi.controller.clone();
    let mut node = s.csi.node.clone();
    let single = || vec![mount_cap(Mode::SingleNodeWriter)];
    // CreateVolume: name, capabilities, access modes, capacity, topology.
    assert_eq!(
        code(ctl.create_volume(create("", 1, single())).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(ctl.create_volume(create("../etc", 1, single())).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(ctl.create_volume(create("v", 1, vec![])).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(
            ctl.create_volume(create("v", 1, vec![mount_cap(Mode::MultiNodeMultiWriter)]))
                .await
        ),
        Code::InvalidArgument,
        "a node-local volume is not ReadWriteMany"
    );
    let block = csi::VolumeCapability {
        access_type: Some(csi::volume_capability::AccessType::Block(Default::default())),
        access_mode: Some(csi::volume_capability::AccessMode {
            mode: Mode::SingleNodeWriter as i32,
        }),
    };
    assert_eq!(
        code(ctl.create_volume(create("v", 1, vec![block])).await),
        Code::InvalidArgument
    );
    let mut inverted = create("v", 10, single());
    inverted.capacity_range = Some(csi::CapacityRange {
        required_bytes: 10,
        limit_bytes: 5,
    });
    assert_eq!(code(ctl.create_volume(inverted).await), Code::OutOfRange);
    assert_eq!(
        code(ctl.create_volume(create("v", i64::MAX, single())).await),
        Code::ResourceExhausted,
        "more than the disk has"
    );
    let mut other_node = create("v", 1, single());
    other_node.accessibility_requirements = Some(csi::TopologyRequirement {
        requisite: vec![csi::Topology {
            segments: HashMap::from([(
                driver::LOCAL_TOPOLOGY_KEY.to_string(),
                "node-b".to_string(),
            )]),
        }],
        preferred: vec![],
    });
    assert_eq!(
        code(ctl.create_volume(other_node).await),
        Code::ResourceExhausted
    );
    assert!(!s.data.join("v").exists(), "nothing was made");
    // DeleteVolume: no id; a volume of another node is not this node's to delete.
    assert_eq!(
        code(ctl.delete_volume(csi::DeleteVolumeRequest::default()).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(
            ctl.delete_volume(csi::DeleteVolumeRequest {
                volume_id: "v@node-b".into(),
                ..Default::default()
            })
            .await
        ),
        Code::FailedPrecondition
    );
    // Expand: no id, unknown volume, no range.
    assert_eq!(
        code(
            ctl.controller_expand_volume(csi::ControllerExpandVolumeRequest::default())
                .await
        ),
        Code::InvalidArgument
    );
    let expand_missing = csi::ControllerExpandVolumeRequest {
        volume_id: "missing@node-a".into(),
        capacity_range: Some(csi::CapacityRange {
            required_bytes: 1,
            limit_bytes: 0,
        }),
        ..Default::default()
    };
    assert_eq!(
        code(ctl.controller_expand_volume(expand_missing).await),
        Code::NotFound
    );
    ctl.create_volume(create("v", 1 << 20, single()))
        .await
        .unwrap();
    assert_eq!(
        code(
            ctl.controller_expand_volume(csi::ControllerExpandVolumeRequest {
                volume_id: "v@node-a".into(),
                ..Default::default()
            })
            .await
        ),
        Code::InvalidArgument
    );
    // Publish: no id, no target, no capability, unknown volume, another node's volume.
    let target = s.data.parent().unwrap().join("t");
    let mut p = publish("", &target, false);
    assert_eq!(
        code(node.node_publish_volume(p.clone()).await),
        Code::InvalidArgument
    );
    p.volume_id = "v@node-a".into();
    p.target_path.clear();
    assert_eq!(
        code(node.node_publish_volume(p.clone()).await),
        Code::InvalidArgument
    );
    let mut p = publish("v@node-a", &target, false);
    p.volume_capability = None;
    assert_eq!(
        code(node.node_publish_volume(p).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(
            node.node_publish_volume(publish("missing@node-a", &target, false))
                .await
        ),
        Code::NotFound
    );
    assert_eq!(
        code(
            node.node_publish_volume(publish("v@node-b", &target, false))
                .await
        ),
        Code::NotFound
    );
    assert!(!is_mounted(&target));
    // Unpublish and stats: missing fields, unknown volume.
    assert_eq!(
        code(
            node.node_unpublish_volume(csi::NodeUnpublishVolumeRequest {
                volume_id: "v@node-a".into(),
                target_path: String::new(),
            })
            .await
        ),
        Code::InvalidArgument
    );
    assert_eq!(
        code(
            node.node_unpublish_volume(csi::NodeUnpublishVolumeRequest {
                volume_id: "missing@node-a".into(),
                target_path: target.display().to_string(),
            })
            .await
        ),
        Code::NotFound
    );
    assert_eq!(
        code(
            node.node_get_volume_stats(csi::NodeGetVolumeStatsRequest {
                volume_id: "missing@node-a".into(),
                volume_path: "/".into(),
                staging_target_path: String::new(),
            })
            .await
        ),
        Code::NotFound
    );
    assert_eq!(
        code(
            node.node_stage_volume(csi::NodeStageVolumeRequest::default())
                .await
        ),
        Code::Unimplemented,
        "no STAGE_UNSTAGE_VOLUME capability"
    );
    s.stop().await;
}

#[tokio::test]
async fn shared_volumes_are_read_write_many_without_topology() {
    use csi::volume_capability::access_mode::Mode;
    let s = Served::start(Kind::Shared, "node-a").await;
    let caps = s
        .csi
        .identity
        .clone()
        .get_plugin_capabilities(csi::GetPluginCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner()
        .capabilities;
    use csi::plugin_capability::{service, Type};
    assert!(!caps.iter().any(|c| matches!(&c.r#type,
        Some(Type::Service(s)) if s.r#type == service::Type::VolumeAccessibilityConstraints as i32)));
    let v = s
        .csi
        .controller
        .clone()
        .create_volume(create(
            "pvc-s",
            1 << 20,
            vec![mount_cap(Mode::MultiNodeMultiWriter)],
        ))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    assert_eq!(v.volume_id, "pvc-s");
    assert!(v.accessible_topology.is_empty());
    let ni = s
        .csi
        .node
        .clone()
        .node_get_info(csi::NodeGetInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(ni.accessible_topology.is_none());
    s.stop().await;
}

#[tokio::test]
async fn the_registrar_points_the_kubelet_at_the_driver_socket() {
    use skiff_proto::pluginregistration as pb;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let reg = skiff_csi::registrar::registration_socket(root, "local.csi.skiff.dev");
    assert_eq!(
        reg,
        root.join("plugins_registry/local.csi.skiff.dev-reg.sock")
    );
    let endpoint = skiff_csi::registrar::driver_socket(root, "local.csi.skiff.dev");
    let registrar = skiff_csi::registrar::Registrar::new("local.csi.skiff.dev", &endpoint);
    let mut status = registrar.status();
    let listener = skiff_csi::bind(&reg).unwrap();
    let stop = CancellationToken::new();
    let task = tokio::spawn(skiff_csi::registrar::serve(
        registrar,
        listener,
        reg.clone(),
        stop.clone(),
    ));
    let mut c = pb::registration_client::RegistrationClient::new(skiff_csi::connect(&reg));
    let info = c.get_info(pb::InfoRequest {}).await.unwrap().into_inner();
    assert_eq!(info.r#type, "CSIPlugin");
    assert_eq!(info.name, "local.csi.skiff.dev");
    assert_eq!(info.endpoint, endpoint.display().to_string());
    assert_eq!(info.supported_versions, vec!["1.0.0".to_string()]);
    c.notify_registration_status(pb::RegistrationStatus {
        plugin_registered: false,
        error: "no such driver".into(),
    })
    .await
    .unwrap();
    status.changed().await.unwrap();
    assert_eq!(
        *status.borrow(),
        skiff_csi::registrar::Registration::Failed("no such driver".into())
    );
    stop.cancel();
    task.await.unwrap().unwrap();
    assert!(!reg.exists());
}
