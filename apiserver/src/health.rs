//! Health (`/livez`, `/readyz`, `/healthz`): whether the server can serve.

use std::time::Duration;

use crate::state::State;

/// Whether etcd answers, every watch cache has loaded, and (with encryption at rest through
/// KMS, or its configuration reloaded automatically) the KMS plugins answer (`kms-providers`,
/// on `/healthz` and `/readyz` only, as kube-apiserver has it).
pub async fn checks(state: &State) -> Vec<(&'static str, bool)> {
    let etcd = tokio::time::timeout(Duration::from_secs(2), state.store.etcd.current_revision())
        .await
        .map(|r| r.is_ok())
        .unwrap_or(false);
    let caches = state.store.caches().iter().all(|c| c.is_ready());
    let mut out = vec![
        ("ping", true),
        ("etcd", etcd),
        ("informer-sync", caches),
        ("shutdown", !state.shutdown.is_cancelled()),
    ];
    let encryption = state.store.etcd.encryption();
    if encryption.has_health_check() {
        out.push(("kms-providers", encryption.health().await.is_ok()));
    }
    out
}
