//! The node test harness itself, against the real thing: a local registry with the images
//! built here, a private containerd pulling from it, and a pod sandbox with a busybox
//! container run through CRI on a CNI bridge — the runtime the kubelet drives.

use std::time::Duration;

use skiff_e2e::node::{Containerd, Images};
use skiff_proto::cri;

#[tokio::test]
async fn runs_a_sandbox_and_a_container_through_cri() {
    let images = Images::start().unwrap();
    let ctrd = Containerd::start(&images.pause, &images.registry.host).unwrap();
    let net = skiff_e2e::node::TestNetwork::new();
    net.write_conflist(&ctrd.cni_conf_dir, &ctrd.dir).unwrap();
    let mut c = ctrd.cri().unwrap();

    let v = c
        .runtime
        .version(cri::VersionRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v.runtime_name, "containerd");

    // A missing image is an error naming it.
    let missing = c
        .images
        .pull_image(cri::PullImageRequest {
            image: Some(cri::ImageSpec {
                image: format!("{}/test/nothing:1", images.registry.host),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(missing.message().contains("test/nothing"), "{missing:?}");

    let image = cri::ImageSpec {
        image: images.busybox.clone(),
        ..Default::default()
    };
    c.images
        .pull_image(cri::PullImageRequest {
            image: Some(image.clone()),
            ..Default::default()
        })
        .await
        .unwrap();

    let logs = tempfile::tempdir().unwrap();
    let sandbox_config = cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: "smoke".into(),
            uid: "uid-smoke".into(),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: "smoke".into(),
        log_directory: logs.path().display().to_string(),
        linux: Some(cri::LinuxPodSandboxConfig::default()),
        ..Default::default()
    };
    let sandbox = c
        .runtime
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(sandbox_config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_or_else(|e| panic!("{e:?}\n{}", ctrd.log()))
        .into_inner()
        .pod_sandbox_id;
    let status = c
        .runtime
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: sandbox.clone(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    let ip = status.network.unwrap().ip;
    assert!(net.contains(&ip), "pod IP {ip} from the bridge's range");

    let container = c
        .runtime
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: sandbox.clone(),
            config: Some(cri::ContainerConfig {
                metadata: Some(cri::ContainerMetadata {
                    name: "web".into(),
                    attempt: 0,
                }),
                image: Some(image),
                command: vec!["sh".into(), "-c".into()],
                args: vec!["echo hello; mkdir -p /www; echo page > /www/index.html; exec httpd -f -p 8080 -h /www".into()],
                log_path: "web/0.log".into(),
                linux: Some(cri::LinuxContainerConfig::default()),
                ..Default::default()
            }),
            sandbox_config: Some(sandbox_config),
        })
        .await
        .unwrap()
        .into_inner()
        .container_id;
    c.runtime
        .start_container(cri::StartContainerRequest {
            container_id: container.clone(),
        })
        .await
        .unwrap();

    // The container serves at the pod IP, from the host, through the bridge.
    let mut body = String::new();
    for _ in 0..50 {
        if let Ok(mut s) = tokio::net::TcpStream::connect((ip.as_str(), 8080)).await {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n")
                .await
                .unwrap();
            s.read_to_string(&mut body).await.unwrap();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(body.contains("page"), "{body:?}");
    // Its output went to the log file the sandbox config named, in CRI's log format.
    let log = std::fs::read_to_string(logs.path().join("web/0.log")).unwrap();
    assert!(log.contains(" stdout F hello"), "{log:?}");

    // Exec inside it.
    let out = c
        .runtime
        .exec_sync(cri::ExecSyncRequest {
            container_id: container.clone(),
            cmd: vec!["cat".into(), "/www/index.html".into()],
            timeout: 10,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((out.exit_code, out.stdout.as_slice()), (0, &b"page\n"[..]));

    c.runtime
        .stop_container(cri::StopContainerRequest {
            container_id: container.clone(),
            timeout: 5,
        })
        .await
        .unwrap();
    let st = c
        .runtime
        .container_status(cri::ContainerStatusRequest {
            container_id: container,
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert_eq!(st.state, cri::ContainerState::ContainerExited as i32);
    ctrd.remove_all_sandboxes().await.unwrap();
    let left = c
        .runtime
        .list_pod_sandbox(cri::ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(left.items.is_empty());
}
