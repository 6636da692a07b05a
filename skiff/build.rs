//! Compiles the pod sandbox's pause program (`deploy/images/pause/pause.c`) statically, so
//! that `skiff` carries the pause image with it.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let src = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"))
        .join("../deploy/images/pause/pause.c");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("pause");
    println!("cargo:rerun-if-changed={}", src.display());
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let status = Command::new(&cc)
        .args(["-static", "-O2", "-s", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .unwrap_or_else(|e| {
            panic!("running {cc} to build the pause program: {e} (install gcc and libc6-dev)")
        });
    assert!(
        status.success(),
        "{cc} could not build the pause program statically (install gcc and libc6-dev)"
    );
}
