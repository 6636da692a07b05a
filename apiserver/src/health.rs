//! Health (`/livez`, `/readyz`, `/healthz`) and version: what the server reports about itself.

use std::time::Duration;

use serde_json::{json, Value};

use crate::state::State;

/// Whether etcd answers and every watch cache has loaded.
pub async fn checks(state: &State) -> Vec<(&'static str, bool)> {
    let etcd = tokio::time::timeout(Duration::from_secs(2), state.store.etcd.current_revision())
        .await
        .map(|r| r.is_ok())
        .unwrap_or(false);
    let caches = state.store.caches().iter().all(|c| c.is_ready());
    vec![
        ("ping", true),
        ("etcd", etcd),
        ("informer-sync", caches),
        ("shutdown", !state.shutdown.is_cancelled()),
    ]
}

/// The `/version` document.
pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": format!("v1.33.0-skiff.{}", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
        "goVersion": "n/a",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, match std::env::consts::ARCH { "x86_64" => "amd64", "aarch64" => "arm64", a => a }),
    })
}
