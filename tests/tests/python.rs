//! The gRPC contract from another language: Python stubs generated from `proto/` with
//! grpcio-tools create, list and watch pods against a real server, and find the services
//! through server reflection.

use std::path::{Path, PathBuf};
use std::process::Command;

use skiff_e2e::Cluster;

/// A virtualenv with grpcio, grpcio-tools, grpcio-status and grpcio-reflection from PyPI, made once per
/// build directory.
fn venv() -> PathBuf {
    let dir = skiff_e2e::bin_dir().join("python-grpc");
    let python = dir.join("bin/python");
    if python.exists()
        && Command::new(&python)
            .args(["-c", "import grpc_tools, grpc_status, grpc_reflection"])
            .status()
            .is_ok_and(|s| s.success())
    {
        return python;
    }
    let ok = Command::new("python3")
        .args(["-m", "venv", dir.to_str().unwrap()])
        .status()
        .expect("python3 runs");
    assert!(ok.success(), "python3 -m venv failed");
    let ok = Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "grpcio",
            "grpcio-tools",
            "grpcio-status",
            "grpcio-reflection",
        ])
        .status()
        .unwrap();
    assert!(
        ok.success(),
        "pip install grpcio grpcio-tools grpcio-status grpcio-reflection failed"
    );
    python
}

fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

#[tokio::test]
async fn python_stubs_from_the_proto_create_list_and_watch_pods() {
    let python = venv();
    let out = tempfile::tempdir().unwrap();
    let gen = Command::new(&python)
        .args(["-m", "grpc_tools.protoc", "-I"])
        .arg(workspace().join("proto"))
        .arg(format!("--python_out={}", out.path().display()))
        .arg(format!("--grpc_python_out={}", out.path().display()))
        .arg(workspace().join("proto/skiff/v1/api.proto"))
        .output()
        .unwrap();
    assert!(
        gen.status.success(),
        "protoc: {}",
        String::from_utf8_lossy(&gen.stderr)
    );

    let c = Cluster::start().await.unwrap();
    let cfg = skiff_client::Config::from_kubeconfig(&c.api.kubeconfig).unwrap();
    let (cert, key) = cfg.identity.unwrap();
    let pem = |name: &str, bytes: &[u8]| {
        let p = out.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let ca = pem("ca.pem", &cfg.ca_pem.unwrap());
    let cert = pem("cert.pem", &cert);
    let key = pem("key.pem", &key);
    let run = Command::new(&python)
        .arg(workspace().join("tests/python/grpc_pods.py"))
        .arg(out.path())
        .arg(format!("127.0.0.1:{}", c.api.port))
        .args([&ca, &cert, &key])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "python client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.contains("\"ok\": true"), "{stdout}");

    // What Python wrote, kubectl reads.
    let keep = c.kubectl().json(&["get", "pod", "py-keep", "-o", "json"]);
    assert_eq!(keep["metadata"]["labels"]["made-by"], "python");
    let gone = c.kubectl().fails(&["get", "pod", "py-temp"]);
    assert!(gone.contains("not found"), "{gone}");
}
