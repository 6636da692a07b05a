//! Health (`/livez`, `/readyz`, `/healthz`): whether the server can serve.

use std::time::Duration;

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
