//! The kubelet's own HTTPS server (`--port`, 10250): container logs for the API server's
//! `pods/log`. Every client must present a certificate from the cluster's CA (the one in the
//! kubelet's kubeconfig, or `--client-ca-file`) and be the API server's kubelet client or in
//! `system:masters`; others get 401 or 403. The serving certificate is the kubelet's own,
//! self-signed at start unless `--tls-cert-file`/`--tls-private-key-file` give one.

pub mod logs;
pub mod streaming;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{Request, Response, StatusCode};
use axum::routing::get;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio_util::sync::CancellationToken;
use tower::Service;

use crate::pods::PodConfig;

/// The user the API server presents to kubelets.
pub const APISERVER_CLIENT: &str = "kube-apiserver-kubelet-client";

/// What the server needs.
pub struct ServerConfig {
    /// Where to listen.
    pub addr: SocketAddr,
    /// PEM of the CA whose client certificates are accepted.
    pub client_ca_pem: Vec<u8>,
    /// The serving certificate and key (PEM); self-signed when `None`.
    pub cert: Option<(Vec<u8>, Vec<u8>)>,
    /// Names for a self-signed certificate.
    pub names: Vec<String>,
}

fn tls(cfg: &ServerConfig) -> anyhow::Result<rustls::ServerConfig> {
    let (cert_pem, key_pem) = match &cfg.cert {
        Some(c) => c.clone(),
        None => {
            let key = rcgen::KeyPair::generate()?;
            let params = rcgen::CertificateParams::new(cfg.names.clone())?;
            let cert = params.self_signed(&key)?;
            (cert.pem().into_bytes(), key.serialize_pem().into_bytes())
        }
    };
    Ok(skiff_http::server_tls(
        &cert_pem,
        &key_pem,
        &cfg.client_ca_pem,
        &[b"http/1.1"],
    )?)
}

/// Who a verified client certificate names: its CN and organisations.
fn subject(der: &[u8]) -> Option<(String, Vec<String>)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let s = cert.subject();
    let cn = s
        .iter_common_name()
        .next()
        .and_then(|a| a.as_str().ok())?
        .to_string();
    let orgs = s
        .iter_organization()
        .filter_map(|a| a.as_str().ok().map(String::from))
        .collect();
    Some((cn, orgs))
}

#[derive(Clone)]
struct AppState {
    pods: Arc<PodConfig>,
    runtime: crate::cri::Runtime,
}

/// Serves until `shutdown`; returns the bound address.
pub async fn serve(
    cfg: ServerConfig,
    pods: Arc<PodConfig>,
    runtime: crate::cri::Runtime,
    shutdown: CancellationToken,
) -> anyhow::Result<SocketAddr> {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls(&cfg)?));
    let listener = tokio::net::TcpListener::bind(cfg.addr).await?;
    let bound = listener.local_addr()?;
    let app = axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/containerLogs/{namespace}/{pod}/{container}",
            get(container_logs),
        )
        .route(
            "/exec/{namespace}/{pod}/{container}",
            get(container_stream).post(container_stream),
        )
        .route(
            "/attach/{namespace}/{pod}/{container}",
            get(container_stream).post(container_stream),
        )
        .route(
            "/portForward/{namespace}/{pod}",
            get(port_forward).post(port_forward),
        )
        .with_state(AppState { pods, runtime });
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = listener.accept() => match r {
                    Ok(c) => c,
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let acceptor = acceptor.clone();
            let app = app.clone();
            let stop = shutdown.clone();
            tokio::spawn(async move {
                let Ok(Ok(tls)) =
                    tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
                else {
                    return;
                };
                let who = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .and_then(|c| subject(c.as_ref()));
                let verdict = match &who {
                    None => Err((StatusCode::UNAUTHORIZED, "Unauthorized".to_string())),
                    Some((cn, orgs))
                        if cn == APISERVER_CLIENT || orgs.iter().any(|o| o == "system:masters") =>
                    {
                        Ok(())
                    }
                    Some((cn, _)) => Err((
                        StatusCode::FORBIDDEN,
                        format!(
                            "Forbidden (user={cn}, verb=get, resource=nodes, subresource=proxy)"
                        ),
                    )),
                };
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let mut app = app.clone();
                    let verdict = verdict.clone();
                    async move {
                        if let Err((code, msg)) = verdict {
                            return Ok::<_, Infallible>(
                                Response::builder()
                                    .status(code)
                                    .body(Body::from(msg))
                                    .expect("valid response"),
                            );
                        }
                        Ok(app
                            .call(req.map(Body::new))
                            .await
                            .unwrap_or_else(|e| match e {}))
                    }
                });
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), svc);
                tokio::select! {
                    r = conn => if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "kubelet server connection ended");
                    },
                    _ = stop.cancelled() => {}
                }
            });
        }
    });
    Ok(bound)
}

async fn container_logs(
    State(s): State<AppState>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    Query(q): Query<logs::LogQuery>,
) -> Response<Body> {
    match logs::open(&s.pods, &s.runtime, &namespace, &pod, &container, q).await {
        Ok(stream) => Response::builder()
            .header("content-type", "text/plain")
            .body(Body::from_stream(stream))
            .expect("valid response"),
        Err((code, msg)) => Response::builder()
            .status(code)
            .header("content-type", "text/plain")
            .body(Body::from(msg))
            .expect("valid response"),
    }
}

/// `exec` or `attach`, told apart by the path.
async fn container_stream(
    State(s): State<AppState>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    req: Request<Body>,
) -> Response<Body> {
    let kind = if req.uri().path().starts_with("/attach/") {
        streaming::Kind::Attach
    } else {
        streaming::Kind::Exec
    };
    streaming::handle(&s.runtime, kind, &namespace, &pod, Some(&container), req).await
}

async fn port_forward(
    State(s): State<AppState>,
    Path((namespace, pod)): Path<(String, String)>,
    req: Request<Body>,
) -> Response<Body> {
    streaming::handle(
        &s.runtime,
        streaming::Kind::PortForward,
        &namespace,
        &pod,
        None,
        req,
    )
    .await
}
