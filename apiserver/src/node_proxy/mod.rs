//! Requests the API server passes on to nodes and pods: `pods/log`, `exec`, `attach`,
//! `portforward` (to the pod's kubelet) and the `proxy` subresources of pods, services and
//! nodes ([`proxy`]). A kubelet is found from its node (its `InternalIP` and
//! `daemonEndpoints.kubeletEndpoint.Port`) and reached over HTTPS with the API server's
//! kubelet-client certificate.
//!
//! Streams go to the kubelet as the client asked for them, SPDY or WebSocket, with two
//! translations kube-apiserver makes: `exec`/`attach` over WebSocket with `v5.channel.k8s.io`
//! are ended here and spoken to the kubelet as SPDY ([`translate`]), and `portforward` over
//! WebSocket tunnelling SPDY (`SPDY/3.1+portforward.k8s.io`) is unwrapped here ([`tunnel`]).
//! A log requested as a WebSocket streams over one ([`websocket`]).

mod html;
pub mod proxy;
mod spdy;
mod translate;
mod tunnel;
pub mod websocket;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use http::{header, Response, StatusCode};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::query::{encode_value, Query};
use crate::store::GenericStore;

/// How the API server reaches kubelets and pods: its kubelet-client certificate, over HTTPS
/// for reads (logs, node proxy) and over TLS for streams (exec, attach, port-forward); and,
/// for pods and services, plain HTTP or HTTPS that verifies no certificate (as
/// kube-apiserver's proxy transport).
pub struct Kubelets {
    client: reqwest::Client,
    tls: Arc<rustls::ClientConfig>,
    /// The kubelet-client identity, following no redirects (the node proxy).
    kubelet_proxy: reqwest::Client,
    /// No client certificate, no redirects followed (pod and service proxies).
    proxy: reqwest::Client,
    /// TLS with no client certificate, for upgrades through the pod proxy.
    insecure_tls: Arc<rustls::ClientConfig>,
}

impl Kubelets {
    /// The kubelet client from the server's PKI.
    pub fn new(pki: &crate::certs::Pki) -> anyhow::Result<Self> {
        let tls = kubelet_tls(pki)?;
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls.clone())
            .connect_timeout(Duration::from_secs(5))
            .build()?;
        let kubelet_proxy = reqwest::Client::builder()
            .use_preconfigured_tls(tls.clone())
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(30))
            .build()?;
        let insecure = insecure_tls()?;
        let proxy = reqwest::Client::builder()
            .use_preconfigured_tls(insecure.clone())
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(30))
            .build()?;
        Ok(Kubelets {
            client,
            tls: Arc::new(tls),
            kubelet_proxy,
            proxy,
            insecure_tls: Arc::new(insecure),
        })
    }
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
fn kubelet_tls(pki: &crate::certs::Pki) -> anyhow::Result<rustls::ClientConfig> {
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

/// TLS to pods proxied to over HTTPS: no client certificate, and, as kube-apiserver's proxy
/// transport, no verification of theirs.
fn insecure_tls() -> anyhow::Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyKubeletCert(provider)))
        .with_no_client_auth();
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

/// The log options kubelets understand, passed on after checking them.
const LOG_PARAMS: &[&str] = &[
    "follow",
    "previous",
    "timestamps",
    "tailLines",
    "sinceSeconds",
    "sinceTime",
    "limitBytes",
];

fn names(pod: &Value, field: &str) -> Vec<String> {
    pod.pointer(&format!("/spec/{field}"))
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .filter_map(|c| c["name"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// The container a request names, or the pod's only one; an error naming the choices
/// otherwise, as kube-apiserver words it.
fn choose_container(pod: &Value, name: &str, given: Option<&str>) -> Result<String> {
    let regular = names(pod, "containers");
    let mut all = names(pod, "initContainers");
    all.extend(regular.iter().cloned());
    all.extend(names(pod, "ephemeralContainers"));
    let container = match given.filter(|c| !c.is_empty()) {
        Some(c) => c.to_string(),
        None if regular.len() == 1 => regular[0].clone(),
        None => {
            return Err(Error::bad_request(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                regular.join(" ")
            )))
        }
    };
    if !all.contains(&container) {
        return Err(Error::bad_request(format!(
            "container {container} is not valid for pod {name}"
        )));
    }
    Ok(container)
}

pub(crate) fn core(store: &GenericStore, plural: &str) -> Result<crate::registry::Resource> {
    store
        .find("", "v1", plural)
        .ok_or_else(|| Error::internal(format!("{plural} are not served")))
}

/// The address (`InternalIP`, else `ExternalIP`, else `Hostname`) and port of `node`'s
/// kubelet.
async fn kubelet_address(store: &GenericStore, node: &str) -> Result<(String, i64)> {
    let n = store.get(&*core(store, "nodes")?, None, node).await?;
    let port = n
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_i64)
        .filter(|p| *p > 0)
        .unwrap_or(10250);
    let addresses = n
        .pointer("/status/addresses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let pick = |kind: &str| {
        addresses
            .iter()
            .find(|a| a["type"] == kind)
            .and_then(|a| a["address"].as_str())
            .map(String::from)
    };
    let host = pick("InternalIP")
        .or_else(|| pick("ExternalIP"))
        .or_else(|| pick("Hostname"))
        .ok_or_else(|| {
            Error::internal(format!(
                "node {node:?} has no address to reach its kubelet at"
            ))
        })?;
    Ok((host, port))
}

/// `https://<ip>:<port>` of the kubelet of `node`.
async fn kubelet_base(store: &GenericStore, node: &str) -> Result<String> {
    let (host, port) = kubelet_address(store, node).await?;
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host
    };
    Ok(format!("https://{host}:{port}"))
}

/// `GET .../pods/<name>/log`: the container's log, from its kubelet; over a WebSocket when the
/// request asks for one.
pub async fn pod_log<B>(
    store: &GenericStore,
    kubelets: &Kubelets,
    mut req: http::Request<B>,
    ns: &str,
    name: &str,
    q: &Query,
) -> Result<Response<Body>> {
    let pod = store.get(&*core(store, "pods")?, Some(ns), name).await?;
    let container = choose_container(&pod, name, q.get("container"))?;
    let node = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or("");
    if node.is_empty() {
        return Err(Error::bad_request(format!(
            "container \"{container}\" in pod \"{name}\" is waiting to start: ContainerCreating"
        )));
    }
    let mut params: Vec<(&str, &str)> = Vec::new();
    for (k, v) in q.pairs() {
        if !LOG_PARAMS.contains(&k) {
            continue;
        }
        if matches!(k, "tailLines" | "sinceSeconds" | "limitBytes") && v.parse::<i64>().is_err() {
            return Err(Error::bad_request(format!("invalid value for {k}: {v:?}")));
        }
        params.push((k, v));
    }
    let query: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{k}={}", encode_value(v)))
        .collect();
    let url = format!(
        "{}/containerLogs/{ns}/{name}/{container}?{}",
        kubelet_base(store, node).await?,
        query.join("&")
    );
    let resp =
        kubelets.client.get(&url).send().await.map_err(|e| {
            Error::internal(format!("Get {url:?}: {}", skiff_http::error_chain(&e)))
        })?;
    let code = resp.status();
    if !code.is_success() {
        let text = resp.text().await.unwrap_or_default();
        return Err(match code.as_u16() {
            400 => Error::bad_request(text),
            404 => Error::not_found_message(text),
            _ => Error::internal(format!("the kubelet answered {code}: {text}")),
        });
    }
    if websocket::is_websocket(req.headers()) {
        return Ok(websocket::stream_log(&mut req, resp));
    }
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from_stream(resp.bytes_stream()))
        .expect("valid response"))
}

/// `pods/exec`, `pods/attach` and `pods/portforward`: the client's upgrade request goes to the
/// pod's kubelet over TLS; once the kubelet switches protocols the bytes flow both ways
/// untouched, so whichever of SPDY or WebSocket the client and the node agree on is used —
/// except for `v5.channel.k8s.io` WebSockets, translated to SPDY here ([`translate`]), and
/// port-forward WebSockets tunnelling SPDY, unwrapped here ([`tunnel`]).
pub async fn stream(
    store: &GenericStore,
    kubelets: &Kubelets,
    req: http::Request<hyper::body::Incoming>,
    ns: &str,
    name: &str,
    sub: &str,
) -> Result<Response<Body>> {
    let pod = store.get(&*core(store, "pods")?, Some(ns), name).await?;
    let node = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let phase = pod
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("");
    if matches!(phase, "Succeeded" | "Failed") {
        return Err(Error::bad_request(format!(
            "cannot exec into a container in a completed pod; current phase is {phase}"
        )));
    }
    let query = req.uri().query().unwrap_or("").to_string();
    let path = if sub == "portforward" {
        format!("/portForward/{ns}/{name}?{query}")
    } else {
        let given = Query::parse(Some(&query));
        let container = choose_container(&pod, name, given.get("container"))?;
        format!("/{sub}/{ns}/{name}/{container}?{query}")
    };
    if node.is_empty() {
        return Err(Error::bad_request(format!(
            "pod {name} does not have a host assigned"
        )));
    }
    let base = kubelet_base(store, &node).await?;
    let authority = base.trim_start_matches("https://").to_string();
    let tcp = tokio::net::TcpStream::connect(&authority)
        .await
        .map_err(|e| Error::internal(format!("dialing the kubelet at {authority}: {e}")))?;
    let connector = tokio_rustls::TlsConnector::from(kubelets.tls.clone());
    let server_name = rustls::pki_types::ServerName::try_from("kubelet")
        .expect("a valid name")
        .to_owned();
    let tls = connector
        .connect(server_name, tcp)
        .await
        .map_err(|e| Error::internal(format!("TLS to the kubelet at {authority}: {e}")))?;
    let ws = websocket::is_websocket(req.headers());
    let offered = websocket::protocols(req.headers());
    if ws && sub != "portforward" && offered.iter().any(|p| p == translate::V5) {
        let opts = translate::Options::from_query(&Query::parse(Some(&query)));
        let mut req = req;
        let (resp, upgrade) = match websocket::accept(&mut req, translate::V5) {
            Ok(a) => a,
            Err(r) => return Ok(r.response()),
        };
        tokio::spawn(async move {
            if let Some(socket) = websocket::server(upgrade).await {
                translate::run(socket, tls, authority, path, opts).await;
            }
        });
        return Ok(resp);
    }
    if ws && sub == "portforward" && !tunnel::tunnelled(req.headers()).is_empty() {
        return Ok(tunnel::serve(req, tls, &authority, &path).await);
    }
    Ok(skiff_http::relay(req, tls, &authority, &path).await)
}
