//! What every long-running Skiff component does the same way: `tracing` logs at a `--v`
//! verbosity, `/healthz` `/livez` `/readyz` and Prometheus `/metrics` on a plain-HTTP port,
//! and a shutdown token cancelled by SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::{header, StatusCode};
use axum::routing::get;
use axum::Router;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

/// The logging flags every component takes: `-v`/`--v` and `--logging-format`.
#[derive(Debug, Clone, clap::Args)]
pub struct LogFlags {
    /// Log verbosity (0-5).
    #[arg(short = 'v', long = "v", default_value_t = 2)]
    pub verbosity: u8,
    /// `text` or `json`.
    #[arg(long, alias = "log-format", default_value = "text", value_parser = ["text", "json"])]
    pub logging_format: String,
}

impl LogFlags {
    /// Sets up `tracing` as the flags say.
    pub fn init(&self) {
        init_tracing(self.verbosity, self.logging_format == "json");
    }
}

/// Logs to stderr at a level from Kubernetes' `--v` (0 errors … 2 info … 4 debug, 5 trace;
/// `RUST_LOG` wins when set), as JSON lines when `json`.
pub fn init_tracing(verbosity: u8, json: bool) {
    let level = match verbosity {
        0 => "error",
        1 => "warn",
        2 => "info",
        3 | 4 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    // Colours only on a terminal: logs written to files stay plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Cancels `shutdown` on SIGTERM or Ctrl-C.
pub fn cancel_on_signal(shutdown: CancellationToken) {
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(e) => {
                    tracing::error!(error = %e, "no SIGTERM handler; Ctrl-C only");
                    let _ = tokio::signal::ctrl_c().await;
                    shutdown.cancel();
                    return;
                }
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("shutting down");
        shutdown.cancel();
    });
}

/// Serves `/healthz` and `/livez` (always 200), `/readyz` (200 once `ready` is cancelled and
/// until `shutdown`, else 503 with `not_ready` as the body) and `/metrics` (`registry` in
/// Prometheus' text format) on `addr` until `shutdown`; returns the bound address (port 0
/// picks a free one).
pub async fn serve_health(
    addr: SocketAddr,
    registry: Registry,
    ready: CancellationToken,
    not_ready: &'static str,
    shutdown: CancellationToken,
) -> std::io::Result<SocketAddr> {
    serve_health_checked(
        addr,
        registry,
        Arc::new(|| Ok(())),
        ready,
        not_ready,
        shutdown,
    )
    .await
}

/// Whether a component works: `Err` with the reason when it does not.
pub type HealthCheck = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// As [`serve_health`], with `/healthz` and `/livez` answering 503 and the reason while
/// `healthy` says the component does not work.
pub async fn serve_health_checked(
    addr: SocketAddr,
    registry: Registry,
    healthy: HealthCheck,
    ready: CancellationToken,
    not_ready: &'static str,
    shutdown: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let registry = Arc::new(registry);
    let down = shutdown.clone();
    let health = move || {
        let healthy = healthy.clone();
        async move {
            match healthy() {
                Ok(()) => (StatusCode::OK, "ok".to_string()),
                Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e),
            }
        }
    };
    let app = Router::new()
        .route("/healthz", get(health.clone()))
        .route("/livez", get(health))
        .route(
            "/readyz",
            get(move || {
                let (ready, down) = (ready.clone(), down.clone());
                async move {
                    if ready.is_cancelled() && !down.is_cancelled() {
                        (StatusCode::OK, "ok")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, not_ready)
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
                    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
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
