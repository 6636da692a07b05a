//! `/healthz`, `/readyz` and `/metrics` over plain HTTP on the scheduler's own port.

use std::net::SocketAddr;

use axum::routing::get;
use axum::Router;
use tokio_util::sync::CancellationToken;

/// Serves the endpoints (the metrics of `registry`) until `shutdown`; returns the bound address. `/readyz` answers 200
/// once `leading` is cancelled (this replica schedules), 503 before and after shutdown.
pub async fn serve(
    addr: SocketAddr,
    registry: prometheus_client::registry::Registry,
    leading: CancellationToken,
    shutdown: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let registry = std::sync::Arc::new(registry);
    let down = shutdown.clone();
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/livez", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let (leading, down) = (leading.clone(), down.clone());
                async move {
                    if leading.is_cancelled() && !down.is_cancelled() {
                        (axum::http::StatusCode::OK, "ok")
                    } else {
                        (
                            axum::http::StatusCode::SERVICE_UNAVAILABLE,
                            "not scheduling",
                        )
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let registry = registry.clone();
                async move {
                    let mut text = String::new();
                    let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4",
                        )],
                        text,
                    )
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
    });
    Ok(bound)
}
