//! Calling a webhook the cluster's objects name: admission webhooks and CRD conversion
//! webhooks alike. A `clientConfig` gives either a URL or a Service (namespace, name, path,
//! port); a Service is reached at one of its ready endpoints (from the cached EndpointSlices)
//! with the TLS server name `NAME.NAMESPACE.svc`, verified against the `caBundle`, as
//! kube-apiserver reaches it with endpoint routing. Each call has its own timeout, which the
//! URL also carries (`?timeout=10s`) for the server's sake.
//!
//! HTTP clients are kept per (CA bundle, host, address), so TLS is set up once, not per call.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use serde_json::Value;

use crate::registry::Objects;

/// A Service a webhook is reached through.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServiceRef {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// The URL path to call (`/` when absent).
    pub path: Option<String>,
    /// The Service port (default 443).
    pub port: u16,
}

/// Where a webhook is and how its certificate is checked (`WebhookClientConfig`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientConfig {
    /// `url`: the webhook's address.
    pub url: Option<String>,
    /// `service`: the Service in front of it.
    pub service: Option<ServiceRef>,
    /// `caBundle`, decoded: PEM certificates the serving certificate must chain to.
    pub ca_bundle: Vec<u8>,
}

/// Why a call failed. The text is what follows `failed to call webhook: ` in
/// kube-apiserver's messages.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The configuration cannot be used.
    #[error("{0}")]
    Config(String),
    /// The request did not get an answer (no endpoint, refused, TLS, timeout).
    #[error("Post {url:?}: {reason}")]
    Transport {
        /// The URL called, as kube-apiserver shows it.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The webhook answered with an error status.
    #[error("{0}")]
    Status(String),
    /// The answer is not JSON.
    #[error("{0}")]
    Decode(String),
}

impl CallError {
    /// Whether the call ran out of time.
    pub fn is_timeout(&self) -> bool {
        matches!(self, CallError::Transport { reason, .. } if reason == DEADLINE)
    }
}

const DEADLINE: &str = "context deadline exceeded";

impl ClientConfig {
    /// Reads a `clientConfig` (`url`, or `service` with `namespace`, `name`, `path`, `port`,
    /// and `caBundle` in base64).
    pub fn from_json(v: &Value) -> Result<ClientConfig, String> {
        let ca_bundle = match v.get("caBundle").and_then(Value::as_str) {
            None | Some("") => Vec::new(),
            Some(b) => base64::engine::general_purpose::STANDARD
                .decode(b)
                .map_err(|e| format!("caBundle: {e}"))?,
        };
        let url = v
            .get("url")
            .and_then(Value::as_str)
            .filter(|u| !u.is_empty())
            .map(String::from);
        let service = match v.get("service") {
            Some(s) if s.is_object() => {
                let text = |f: &str| s.get(f).and_then(Value::as_str).unwrap_or("").to_string();
                let port = s.get("port").and_then(Value::as_i64).unwrap_or(443);
                Some(ServiceRef {
                    namespace: text("namespace"),
                    name: text("name"),
                    path: s
                        .get("path")
                        .and_then(Value::as_str)
                        .filter(|p| !p.is_empty())
                        .map(String::from),
                    port: u16::try_from(port).map_err(|_| format!("service.port: {port}"))?,
                })
            }
            _ => None,
        };
        if url.is_none() && service.is_none() {
            return Err("exactly one of url or service is required".into());
        }
        Ok(ClientConfig {
            url,
            service,
            ca_bundle,
        })
    }

    /// The URL as kube-apiserver names it in messages (a Service by its DNS name and port).
    pub fn display_url(&self) -> String {
        match (&self.url, &self.service) {
            (Some(u), _) => u.clone(),
            (None, Some(s)) => format!(
                "https://{}.{}.svc:{}{}",
                s.name,
                s.namespace,
                s.port,
                s.path.as_deref().unwrap_or("")
            ),
            (None, None) => String::new(),
        }
    }
}

/// `?timeout=Ns` (or `&timeout=`) added to a URL, with the timeout rounded up to a second.
pub fn with_timeout(url: &str, timeout: Duration) -> String {
    let secs = timeout.as_secs() + u64::from(timeout.subsec_nanos() > 0);
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}timeout={secs}s")
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    ca_bundle: Vec<u8>,
    resolve: Option<(String, SocketAddr)>,
}

/// The HTTP clients webhooks are called with, kept by CA bundle and resolved address.
#[derive(Default)]
pub struct Clients {
    cache: parking_lot::Mutex<HashMap<Key, reqwest::Client>>,
}

/// How many clients are kept before the cache starts over.
const MAX_CLIENTS: usize = 256;

impl std::fmt::Debug for Clients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Clients")
            .field("cached", &self.cache.lock().len())
            .finish()
    }
}

/// Where Debian (and most distributions) keep the system's trusted roots, used when a
/// webhook names no `caBundle`, as kube-apiserver falls back to the system's roots.
const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// A TLS client configuration trusting `ca_bundle`, or the system's roots when it is empty
/// (none when the system has no bundle either: the serving certificate cannot be verified,
/// so calls fail).
fn tls_config(ca_bundle: &[u8]) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    if ca_bundle.is_empty() {
        let system = std::fs::read(SYSTEM_ROOTS).unwrap_or_default();
        let certs = CertificateDer::pem_slice_iter(&system).filter_map(Result::ok);
        roots.add_parsable_certificates(certs);
    }
    for cert in CertificateDer::pem_slice_iter(ca_bundle) {
        let cert = cert.map_err(|e| format!("caBundle: {e}"))?;
        roots.add(cert).map_err(|e| format!("caBundle: {e}"))?;
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

impl Clients {
    fn client(&self, key: Key) -> Result<reqwest::Client, String> {
        if let Some(c) = self.cache.lock().get(&key) {
            return Ok(c.clone());
        }
        let tls = tls_config(&key.ca_bundle)?;
        let mut b = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .connect_timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy();
        if let Some((host, addr)) = &key.resolve {
            b = b.resolve(host, *addr);
        }
        let client = b.build().map_err(|e| e.to_string())?;
        let mut cache = self.cache.lock();
        if cache.len() >= MAX_CLIENTS {
            cache.clear();
        }
        cache.insert(key, client.clone());
        Ok(client)
    }

    /// POSTs `body` as JSON to the webhook and reads its JSON answer, within `timeout`.
    pub async fn post(
        &self,
        cfg: &ClientConfig,
        objs: &dyn Objects,
        body: &Value,
        timeout: Duration,
    ) -> Result<Value, CallError> {
        let shown = with_timeout(&cfg.display_url(), timeout);
        let transport = |reason: String| CallError::Transport {
            url: shown.clone(),
            reason,
        };
        let (url, resolve) = match (&cfg.url, &cfg.service) {
            (Some(u), _) => (with_timeout(u, timeout), None),
            (None, Some(s)) => {
                let addr = resolve_service(s, objs).await.map_err(transport)?;
                let host = format!("{}.{}.svc", s.name, s.namespace);
                let url = format!(
                    "https://{host}:{}{}",
                    addr.port(),
                    s.path.as_deref().unwrap_or("/")
                );
                (with_timeout(&url, timeout), Some((host, addr)))
            }
            (None, None) => return Err(CallError::Config("no url or service".into())),
        };
        if !url.starts_with("https://") {
            return Err(CallError::Config(format!(
                "webhook URL {url:?}: 'https' is the only allowed URL scheme"
            )));
        }
        let client = self
            .client(Key {
                ca_bundle: cfg.ca_bundle.clone(),
                resolve,
            })
            .map_err(CallError::Config)?;
        let bytes = serde_json::to_vec(body).map_err(|e| CallError::Config(e.to_string()))?;
        let call = async {
            let resp = client
                .post(&url)
                .header(http::header::CONTENT_TYPE, "application/json")
                .header(http::header::ACCEPT, "application/json, */*")
                .body(bytes)
                .send()
                .await
                .map_err(|e| transport(describe(&e)))?;
            let status = resp.status();
            let text = resp.bytes().await.map_err(|e| transport(describe(&e)))?;
            Ok::<_, CallError>((status, text))
        };
        let (status, text) = match tokio::time::timeout(timeout, call).await {
            Ok(r) => r?,
            Err(_) => return Err(transport(DEADLINE.into())),
        };
        if !status.is_success() {
            let body = String::from_utf8_lossy(&text);
            let message = serde_json::from_slice::<Value>(&text)
                .ok()
                .and_then(|v| v.get("message").and_then(Value::as_str).map(String::from))
                .unwrap_or_else(|| {
                    format!(
                        "an error on the server ({:?}) has prevented the request from succeeding",
                        body.trim()
                    )
                });
            return Err(CallError::Status(message));
        }
        serde_json::from_slice(&text)
            .map_err(|e| CallError::Decode(format!("couldn't decode the response: {e}")))
    }
}

/// A transport error in the words Go's HTTP client would use where they are known.
fn describe(e: &reqwest::Error) -> String {
    // reqwest names the URL it dialled (the endpoint's own port); the caller names the
    // webhook's URL already.
    let mut text = e.to_string();
    if let Some(url) = e.url() {
        text = text.replace(&format!(" for url ({url})"), "");
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let t = s.to_string();
        if !text.contains(&t) {
            text = format!("{text}: {t}");
        }
        source = s.source();
    }
    if e.is_timeout() {
        return DEADLINE.into();
    }
    if text.contains("Connection refused") || text.contains("connection refused") {
        return "connect: connection refused".into();
    }
    if let Some(tls) = certificate_problem(&text) {
        return format!("tls: failed to verify certificate: x509: {tls}");
    }
    text
}

/// What rustls' refusal of a serving certificate means, in Go's x509 words where they are
/// known (an unknown issuer, an expired certificate), else rustls' own.
fn certificate_problem(text: &str) -> Option<String> {
    let (_, why) = text.split_once("invalid peer certificate: ")?;
    let why = why.split(": error sending").next().unwrap_or(why);
    Some(
        if why.starts_with("UnknownIssuer") || why.starts_with("BadSignature") {
            "certificate signed by unknown authority".to_owned()
        } else if [
            "certificate expired",
            "Expired",
            "certificate not valid yet",
            "NotValidYet",
        ]
        .iter()
        .any(|p| why.starts_with(p))
        {
            "certificate has expired or is not yet valid".to_owned()
        } else {
            why.to_owned()
        },
    )
}

/// One ready endpoint of a Service for its `port`: the EndpointSlices labelled
/// `kubernetes.io/service-name`, the slice port named as the Service port is (ready
/// endpoints only; one picked at random).
pub async fn resolve_service(s: &ServiceRef, objs: &dyn Objects) -> Result<SocketAddr, String> {
    let not_found = || format!("service {:?} not found", s.name);
    let services = objs.resource("", "v1", "services").ok_or_else(not_found)?;
    let svc = match objs.cached(&services, Some(&s.namespace), &s.name) {
        Some(c) => c.value(),
        None => objs
            .get(&services, Some(&s.namespace), &s.name)
            .await
            .map_err(|_| not_found())?,
    };
    let ports = svc
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let svc_port = ports
        .iter()
        .find(|p| p.get("port").and_then(Value::as_i64) == Some(i64::from(s.port)))
        .ok_or_else(|| format!("no service port {} found for service {:?}", s.port, s.name))?;
    let port_name = svc_port.get("name").and_then(Value::as_str).unwrap_or("");
    let none = || format!("no endpoints available for service {:?}", s.name);
    let slices = objs
        .resource("discovery.k8s.io", "v1", "endpointslices")
        .ok_or_else(none)?;
    let mut candidates = Vec::new();
    for c in objs.cached_list(&slices, Some(&s.namespace)) {
        let slice = c.value();
        if slice
            .pointer("/metadata/labels/kubernetes.io~1service-name")
            .and_then(Value::as_str)
            != Some(s.name.as_str())
        {
            continue;
        }
        let Some(port) = slice
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|p| p.get("name").and_then(Value::as_str).unwrap_or("") == port_name)
            .and_then(|p| p.get("port").and_then(Value::as_i64))
            .and_then(|p| u16::try_from(p).ok())
        else {
            continue;
        };
        for ep in slice
            .get("endpoints")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if ep.pointer("/conditions/ready").and_then(Value::as_bool) == Some(false) {
                continue;
            }
            for a in ep
                .get("addresses")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(ip) = a.as_str().and_then(|a| a.parse::<IpAddr>().ok()) {
                    candidates.push(SocketAddr::new(ip, port));
                }
            }
        }
    }
    if candidates.is_empty() {
        return Err(none());
    }
    use rand::Rng;
    Ok(candidates[rand::rng().random_range(0..candidates.len())])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::testing::Fixed;
    use serde_json::json;

    #[test]
    fn certificate_refusals_read_as_go_words_them() {
        let unknown = "error sending request for url (https://a.b.svc:8443/x): client error \
                       (Connect): invalid peer certificate: UnknownIssuer";
        assert_eq!(
            certificate_problem(unknown).as_deref(),
            Some("certificate signed by unknown authority")
        );
        let name = "invalid peer certificate: certificate not valid for name \"a.b.svc\"; \
                    certificate is only valid for c.d.svc";
        assert!(certificate_problem(name)
            .unwrap()
            .starts_with("certificate not valid for name"));
        assert_eq!(certificate_problem("connection reset"), None);
    }

    #[test]
    fn client_configs_read_url_or_service() {
        let c = ClientConfig::from_json(&json!({"url": "https://h:8443/x", "caBundle": "aGk="}))
            .unwrap();
        assert_eq!(c.url.as_deref(), Some("https://h:8443/x"));
        assert_eq!(c.ca_bundle, b"hi");
        let c = ClientConfig::from_json(
            &json!({"service": {"namespace": "ns", "name": "hook", "path": "/v"}}),
        )
        .unwrap();
        assert_eq!(c.display_url(), "https://hook.ns.svc:443/v");
        assert!(ClientConfig::from_json(&json!({})).is_err());
        assert!(ClientConfig::from_json(&json!({"url": "https://h", "caBundle": "!!"})).is_err());
    }

    #[test]
    fn timeouts_round_up_to_seconds() {
        assert_eq!(
            with_timeout("https://h/x", Duration::from_secs(10)),
            "https://h/x?timeout=10s"
        );
        assert_eq!(
            with_timeout("https://h/x?a=b", Duration::from_millis(1500)),
            "https://h/x?a=b&timeout=2s"
        );
    }

    #[tokio::test]
    async fn services_resolve_to_ready_endpoints_of_their_port() {
        let objs = Fixed::default()
            .with(
                "services",
                "ns",
                json!({"metadata": {"name": "hook", "namespace": "ns"},
                "spec": {"ports": [{"name": "https", "port": 443, "targetPort": 8443}]}}),
            )
            .with(
                "endpointslices",
                "ns",
                json!({"metadata": {"name": "hook-1", "namespace": "ns",
                    "labels": {"kubernetes.io/service-name": "hook"}},
                "ports": [{"name": "https", "port": 8443}],
                "endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": false}},
                              {"addresses": ["10.0.0.2"], "conditions": {"ready": true}}]}),
            )
            .with(
                "endpointslices",
                "ns",
                json!({"metadata": {"name": "other", "namespace": "ns",
                    "labels": {"kubernetes.io/service-name": "other"}},
                "ports": [{"name": "https", "port": 9999}],
                "endpoints": [{"addresses": ["10.0.0.3"]}]}),
            );
        let s = |port| ServiceRef {
            namespace: "ns".into(),
            name: "hook".into(),
            path: None,
            port,
        };
        assert_eq!(
            resolve_service(&s(443), &objs).await.unwrap(),
            "10.0.0.2:8443".parse().unwrap()
        );
        assert_eq!(
            resolve_service(&s(444), &objs).await.unwrap_err(),
            "no service port 444 found for service \"hook\""
        );
        let missing = ServiceRef {
            name: "nope".into(),
            ..s(443)
        };
        assert_eq!(
            resolve_service(&missing, &objs).await.unwrap_err(),
            "service \"nope\" not found"
        );
    }
}
