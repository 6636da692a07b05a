//! The server: TLS with optional client certificates, HTTP/1.1 and HTTP/2 on one port, each
//! request handed to its door (gRPC by content type, REST otherwise), graceful drain on
//! shutdown; start-up bootstrap and the background loops (compaction, namespace
//! finalization).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use http::{header, Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::request::WriteOpts;
use crate::state::State;

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
                req.extensions_mut().insert(crate::audit::Peer(peer));
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

/// The field manager the server's own writes are recorded under.
pub const MANAGER: &str = "skiff-apiserver";

/// Creates what every cluster has: the system namespaces, the `kubernetes` Service and its
/// Endpoints, and the system PriorityClasses.
pub async fn bootstrap(
    state: &State,
    first_service_ip: &str,
    secure_port: u16,
    advertise_ip: &str,
) -> Result<()> {
    let store = &state.store;
    let served = |group: &str, plural: &str| {
        store
            .find(group, "v1", plural)
            .ok_or_else(|| Error::internal(format!("{plural} are not served")))
    };
    let opts = WriteOpts::internal(MANAGER);
    let create = |r, ns: Option<&'static str>, obj: Value| {
        let opts = &opts;
        async move {
            match store.create(&r, ns, obj, opts).await {
                Ok(_) => Ok(true),
                Err(e) if e.code() == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
    };
    let ns = served("", "namespaces")?;
    for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
        if create(ns.clone(), None, obj).await? {
            tracing::info!(namespace = name, "created namespace");
        }
    }
    let pc = store
        .find("scheduling.k8s.io", "v1", "priorityclasses")
        .ok_or_else(|| Error::internal("priorityclasses are not served"))?;
    for (name, value, what) in [
        ("system-node-critical", 2_000_001_000, "Used for system critical pods that must not be moved from their current node."),
        ("system-cluster-critical", 2_000_000_000, "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary."),
    ] {
        let obj = json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
            "metadata": {"name": name}, "value": value, "description": what,
            "preemptionPolicy": "PreemptLowerPriority"});
        create(pc.clone(), None, obj).await?;
    }
    let obj = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {"clusterIP": first_service_ip, "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": secure_port}], "sessionAffinity": "None", "type": "ClusterIP"},
    });
    match store
        .create(&served("", "services")?, Some("default"), obj, &opts)
        .await
    {
        Ok(_) | Err(Error::Api(_)) => {}
        Err(e) => return Err(e),
    }
    let obj = json!({
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{"addresses": [{"ip": advertise_ip}], "ports": [{"name": "https", "port": secure_port, "protocol": "TCP"}]}],
    });
    match store
        .update(
            &served("", "endpoints")?,
            Some("default"),
            "kubernetes",
            obj,
            None,
            &opts,
        )
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
        let Ok(rev) = state.store.etcd.current_revision().await else {
            continue;
        };
        if last > 0 {
            match state.store.etcd.compact(last).await {
                Ok(()) => tracing::info!(revision = last, "compacted etcd"),
                Err(e) => tracing::debug!(error = %e, "compaction skipped"),
            }
        }
        last = rev;
    }
}
