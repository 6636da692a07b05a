//! The server: TLS with optional client certificates, HTTP/1.1 and HTTP/2, graceful drain on
//! shutdown, the non-resource endpoints (`/healthz`, `/readyz`, `/livez`, `/version`,
//! `/metrics`, `/openapi`), start-up bootstrap and the background loops (watch caches,
//! compaction, namespace finalization).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use http::{header, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::{Api, WriteOpts};
use crate::auth::{Authenticator, Authorizer};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::registry;

/// Everything a request handler needs.
pub struct State {
    /// The API operations.
    pub api: Api,
    /// Authentication.
    pub authn: Authenticator,
    /// Authorization.
    pub authz: Box<dyn Authorizer>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Cancelled when the server shuts down (ends watches).
    pub shutdown: CancellationToken,
    /// `host:port` clients should use.
    pub advertise: String,
    /// The OpenAPI documents, built on first use.
    pub openapi: crate::openapi::Docs,
    /// The HTTPS client that reaches kubelets (logs), with the API server's kubelet-client
    /// certificate.
    pub kubelet_client: reqwest::Client,
    /// The same identity for streaming connections (exec, attach, port-forward).
    pub kubelet_tls: Arc<rustls::ClientConfig>,
}

/// Accepts any kubelet serving certificate (they are self-signed), checking only that the
/// handshake is signed by it.
#[derive(Debug)]
struct AnyKubeletCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyKubeletCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The TLS client configuration for kubelets: the kubelet-client certificate; kubelets serve
/// self-signed certificates, which (as Kubernetes does without
/// `--kubelet-certificate-authority`) are not verified.
pub fn kubelet_tls(pki: &crate::certs::Pki) -> anyhow::Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(pki.kubelet_client.0.as_bytes())
            .collect::<Result<_, _>>()?;
    let key = PrivateKeyDer::from_pem_slice(pki.kubelet_client.1.as_bytes())?;
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyKubeletCert(provider)))
        .with_client_auth_cert(certs, key)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// The HTTP client for kubelets, on the same TLS configuration as streaming connections.
pub fn kubelet_client(tls: &rustls::ClientConfig) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .use_preconfigured_tls(tls.clone())
        .connect_timeout(Duration::from_secs(5))
        .build()?)
}

/// The rustls server configuration: our serving certificate, client certificates from the
/// cluster CA accepted but not required (tokens are the alternative).
pub fn tls_config(pki: &crate::certs::Pki) -> anyhow::Result<rustls::ServerConfig> {
    Ok(skiff_http::server_tls(
        pki.serving_cert.as_bytes(),
        pki.serving_key.as_bytes(),
        pki.ca_cert.as_bytes(),
        &[b"h2", b"http/1.1"],
    )?)
}

/// Accepts connections until `shutdown`, then drains in-flight requests for up to `grace`.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    state: Arc<State>,
    shutdown: CancellationToken,
    grace: Duration,
) {
    let grpc = match crate::grpc::routes(state.clone()) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "building the gRPC services failed");
            return;
        }
    };
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let state = state.clone();
        let grpc = grpc.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
            let user = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| crate::auth::user_from_cert(c.as_ref()));
            let svc = hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(user.clone());
                let state = state.clone();
                let grpc = grpc.clone();
                async move {
                    if is_grpc(&req) {
                        return Ok::<_, Infallible>(serve_grpc(grpc, req).await);
                    }
                    Ok::<_, Infallible>(crate::rest::handle(state, req).await)
                }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), svc);
            let conn = watcher.watch(conn.into_owned());
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection ended");
            }
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("all connections drained"),
        _ = tokio::time::sleep(grace) => tracing::warn!("drain timed out; closing remaining connections"),
    }
}

/// gRPC requests are told apart from REST by their content type.
fn is_grpc<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

async fn serve_grpc(
    mut grpc: tonic::service::Routes,
    req: Request<hyper::body::Incoming>,
) -> Response<Body> {
    use tower::Service;
    match grpc.call(req.map(tonic::body::Body::new)).await {
        Ok(resp) => resp.map(Body::new),
        Err(never) => match never {},
    }
}

fn text(code: StatusCode, body: impl Into<String>) -> Response<Body> {
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .header("X-Content-Type-Options", "nosniff")
        .body(Body::from(body.into()))
        .expect("valid response")
}

/// Whether etcd answers and every watch cache has loaded.
pub async fn checks(state: &State) -> Vec<(&'static str, bool)> {
    let etcd = tokio::time::timeout(Duration::from_secs(2), state.api.store.current_revision())
        .await
        .map(|r| r.is_ok())
        .unwrap_or(false);
    let caches = state.api.caches().all(|c| c.is_ready());
    vec![
        ("ping", true),
        ("etcd", etcd),
        ("informer-sync", caches),
        ("shutdown", !state.shutdown.is_cancelled()),
    ]
}

fn health_response(name: &str, checks: &[(&'static str, bool)], verbose: bool) -> Response<Body> {
    let ok = checks.iter().all(|(_, ok)| *ok);
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    if !verbose && ok {
        return text(code, "ok");
    }
    let mut body = String::new();
    for (n, ok) in checks {
        if *ok {
            body.push_str(&format!("[+]{n} ok\n"));
        } else {
            body.push_str(&format!("[-]{n} failed: reason withheld\n"));
        }
    }
    if ok {
        body.push_str(&format!("{name} check passed\n"));
    } else {
        body.push_str(&format!("{name} check failed\n"));
    }
    text(code, body)
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

/// Serves paths outside the resource API.
pub async fn non_resource(
    state: &Arc<State>,
    req: &Request<hyper::body::Incoming>,
    path: &str,
) -> Result<Response<Body>> {
    let verbose = req.uri().query().is_some_and(|q| {
        q.split('&')
            .any(|p| p == "verbose" || p.starts_with("verbose="))
    });
    if req.method() != http::Method::GET && req.method() != http::Method::HEAD {
        return Err(Error::method_not_allowed(
            "only GET is allowed on this path",
        ));
    }
    match path.trim_end_matches('/') {
        "/livez" => Ok(health_response("livez", &[("ping", true)], verbose)),
        "/healthz" => Ok(health_response("healthz", &checks(state).await, verbose)),
        "/readyz" => Ok(health_response("readyz", &checks(state).await, verbose)),
        p if p.starts_with("/livez/")
            || p.starts_with("/readyz/")
            || p.starts_with("/healthz/") =>
        {
            let name = p.rsplit('/').next().unwrap_or("");
            let all = checks(state).await;
            match all.iter().find(|(n, _)| *n == name) {
                Some((_, true)) => Ok(text(StatusCode::OK, "ok")),
                Some((_, false)) => Ok(text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("[-]{name} failed"),
                )),
                None => Err(Error::not_found_message(format!(
                    "no such health check: {name}"
                ))),
            }
        }
        "/version" => Ok(Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(
                serde_json::to_vec(&version()).unwrap_or_default(),
            ))
            .expect("valid response")),
        "/metrics" => Ok(Response::builder()
            .status(StatusCode::OK)
            .header(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )
            .body(Body::from(state.metrics.render()))
            .expect("valid response")),
        p if p == "/openapi/v2" || p.starts_with("/openapi/v3") => state.openapi.serve(req, p),
        "" => {
            let paths: Vec<String> = [
                "/api",
                "/api/v1",
                "/apis",
                "/healthz",
                "/livez",
                "/metrics",
                "/openapi/v2",
                "/openapi/v3",
                "/readyz",
                "/version",
            ]
            .iter()
            .map(|s| s.to_string())
            .chain(
                registry::all()
                    .iter()
                    .filter(|r| !r.group.is_empty())
                    .map(|r| format!("/apis/{}/{}", r.group, r.version)),
            )
            .collect();
            let mut paths = paths;
            paths.sort();
            paths.dedup();
            Ok(Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(
                    serde_json::to_vec(&json!({"paths": paths})).unwrap_or_default(),
                ))
                .expect("valid response"))
        }
        _ => Err(Error::not_found_message(
            "the server could not find the requested resource",
        )),
    }
}

/// Creates the namespaces and the `kubernetes` service every cluster has.
pub async fn bootstrap(state: &State, secure_port: u16, advertise_ip: &str) -> Result<()> {
    let api = &state.api;
    let ns = registry::find("", "v1", "namespaces").expect("served");
    let opts = WriteOpts {
        field_manager: Some("skiff-apiserver".into()),
        ..Default::default()
    };
    for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
        match api.create(ns, None, obj, &opts).await {
            Ok(_) => tracing::info!(namespace = name, "created namespace"),
            Err(e) if e.code() == 409 => {}
            Err(e) => return Err(e),
        }
    }
    let svc = registry::find("", "v1", "services").expect("served");
    let first = state.api.ranges.first_ip().to_string();
    let obj = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {"clusterIP": first, "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": secure_port}], "sessionAffinity": "None", "type": "ClusterIP"},
    });
    match api.create(svc, Some("default"), obj, &opts).await {
        Ok(_) | Err(Error::Api(_)) => {}
        Err(e) => return Err(e),
    }
    let ep = registry::find("", "v1", "endpoints").expect("served");
    let obj = json!({
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{"addresses": [{"ip": advertise_ip}], "ports": [{"name": "https", "port": secure_port, "protocol": "TCP"}]}],
    });
    match api
        .update(ep, Some("default"), "kubernetes", obj, None, &opts)
        .await
    {
        Ok(_) => {}
        Err(e) if e.code() < 500 => {
            tracing::warn!(error = %e, "could not write the kubernetes endpoints")
        }
        Err(e) => return Err(e),
    }
    Ok(())
}

/// Compacts etcd every `interval` up to the revision seen one interval before, so watchers
/// always have at least one interval of history.
pub async fn compaction_loop(state: Arc<State>, interval: Duration, shutdown: CancellationToken) {
    if interval.is_zero() {
        return;
    }
    let mut last = 0;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let Ok(rev) = state.api.store.current_revision().await else {
            continue;
        };
        if last > 0 {
            match state.api.store.compact(last).await {
                Ok(()) => tracing::info!(revision = last, "compacted etcd"),
                Err(e) => tracing::debug!(error = %e, "compaction skipped"),
            }
        }
        last = rev;
    }
}

/// Removes terminating namespaces once nothing is left in them.
pub async fn namespace_loop(state: Arc<State>, shutdown: CancellationToken) {
    let nsr = registry::find("", "v1", "namespaces").expect("served");
    let api = &state.api;
    let cache = api.cache(nsr).clone();
    cache.wait_ready().await;
    let root = api.store.prefix().to_string();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
        let (terminating, _) = cache.list(&nsr.prefix(&root), |n| n.deleting);
        for ns in terminating {
            let name = ns.name.clone();
            let empty = registry::all()
                .iter()
                .filter(|r| r.namespaced)
                .all(|r| !api.cache(r).any_under(&r.ns_prefix(&root, Some(&name))));
            if !empty {
                continue;
            }
            let mut next = ns.value();
            if let Some(f) = next
                .pointer_mut("/spec/finalizers")
                .and_then(Value::as_array_mut)
            {
                f.retain(|x| x != "kubernetes");
            }
            let opts = WriteOpts {
                field_manager: Some("skiff-apiserver".into()),
                ..Default::default()
            };
            match api.update(nsr, None, &name, next, None, &opts).await {
                Ok(_) => tracing::info!(namespace = %name, "namespace emptied and removed"),
                Err(e) if e.code() == 404 || e.code() == 409 => {}
                Err(e) => tracing::warn!(namespace = %name, error = %e, "finalizing namespace"),
            }
        }
    }
}
