//! Lifecycle hooks: `postStart` right after a container starts (a failure kills the container,
//! which then restarts as its policy says) and `preStop` before it is stopped (within the
//! termination grace period).

use std::time::Duration;

use k8s_openapi::api::core::v1::LifecycleHandler;

use super::probes::{self, Target};

/// Runs a hook handler, giving up after `within`.
pub async fn run(t: &Target, h: &LifecycleHandler, within: Duration) -> Result<(), String> {
    let fut = async {
        if let Some(a) = &h.exec {
            probes::exec(t, a, within).await.map(|_| ())
        } else if let Some(a) = &h.http_get {
            probes::http_get(t, a, within).await.map(|_| ())
        } else if let Some(a) = &h.tcp_socket {
            probes::tcp(t, a, within).await.map(|_| ())
        } else if let Some(s) = &h.sleep {
            tokio::time::sleep(Duration::from_secs(s.seconds.max(0) as u64)).await;
            Ok(())
        } else {
            Err("hook has no handler".into())
        }
    };
    tokio::time::timeout(within, fut)
        .await
        .unwrap_or_else(|_| Err(format!("hook did not finish within {within:?}")))
}
