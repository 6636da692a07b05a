//! The `proxy` subresources of pods, services and nodes
//! (`/api/v1/namespaces/NS/pods/[https:]NAME[:PORT]/proxy/PATH`, `services/...`,
//! `nodes/NAME[:PORT]/proxy/PATH`), as kube-apiserver serves them: any method, the query and
//! body passed on, the answer streamed back, upgrades (WebSocket) carried through.
//!
//! Where a request goes: a pod's first IP (and the port given, or its first declared container
//! port); one ready address of the service's `Endpoints` for the port named (or numbered);
//! the node's kubelet (over HTTPS with the API server's kubelet-client certificate), or
//! another port of the node. Kube-apiserver's proxy transport is followed: no redirects
//! followed, `Location` headers and the links of HTML pages pointing back at the target
//! rewritten to go through the proxy ([`super::html`]),
//! `X-Forwarded-For` and `X-Forwarded-Uri` added, the client's `Host` kept, CORS headers of
//! the answer dropped, and the client's credentials never passed on. Failures to connect are `500`s worded
//! `error trying to reach service: ...`.

use std::net::IpAddr;

use axum::body::Body;
use http::{header, HeaderMap, HeaderName, Request, Response, StatusCode};
use rand::Rng;
use serde_json::Value;

use super::{core, kubelet_address, Kubelets};
use crate::error::{Error, Result};
use crate::store::GenericStore;

type Req = Request<hyper::body::Incoming>;

/// How the far side is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    /// Plain HTTP or HTTPS with no client certificate (pods, services, other node ports).
    Plain,
    /// The kubelet, with the API server's kubelet-client certificate.
    Kubelet,
}

/// Where a proxied request goes.
#[derive(Debug)]
struct Location {
    scheme: &'static str,
    /// `host:port` (IPv6 hosts bracketed), or just the host.
    authority: String,
    via: Via,
}

/// `[scheme:]name[:port]`, as Kubernetes' `SplitSchemeNamePort` reads it.
fn split_scheme_name_port(id: &str) -> Option<(&'static str, &str, &str)> {
    let parts: Vec<&str> = id.split(':').collect();
    let (scheme, name, port) = match parts.as_slice() {
        [n] => ("", *n, ""),
        [n, p] => ("", *n, *p),
        [s, n, p] => (*s, *n, *p),
        _ => return None,
    };
    let scheme = match scheme {
        "" => "",
        "http" => "http",
        "https" => "https",
        _ => return None,
    };
    (!name.is_empty()).then_some((scheme, name, port))
}

fn join_host_port(host: &str, port: &str) -> String {
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    if port.is_empty() {
        host
    } else {
        format!("{host}:{port}")
    }
}

fn scheme_or_http(s: &'static str) -> &'static str {
    if s.is_empty() {
        "http"
    } else {
        s
    }
}

/// A pod: its first IP, the port given or its first container port.
async fn pod_location(store: &GenericStore, ns: &str, id: &str) -> Result<Location> {
    let (scheme, name, port) = split_scheme_name_port(id)
        .ok_or_else(|| Error::bad_request(format!("invalid pod request {id:?}")))?;
    let pod = store.get(&*core(store, "pods")?, Some(ns), name).await?;
    let mut port = port.to_string();
    if port.is_empty() {
        if let Some(p) = pod
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find_map(|c| c.pointer("/ports/0/containerPort").and_then(Value::as_i64))
        {
            port = p.to_string();
        }
    }
    let ip = pod
        .pointer("/status/podIPs/0/ip")
        .and_then(Value::as_str)
        .unwrap_or("");
    let global = match ip.parse::<IpAddr>() {
        Ok(IpAddr::V4(a)) => {
            !(a.is_loopback()
                || a.is_link_local()
                || a.is_multicast()
                || a.is_broadcast()
                || a.is_unspecified())
        }
        Ok(IpAddr::V6(a)) => {
            !(a.is_loopback()
                || a.is_multicast()
                || a.is_unspecified()
                || (a.segments()[0] & 0xffc0) == 0xfe80)
        }
        Err(_) => false,
    };
    if !global {
        return Err(Error::bad_request("address not allowed"));
    }
    Ok(Location {
        scheme: scheme_or_http(scheme),
        authority: join_host_port(ip, &port),
        via: Via::Plain,
    })
}

/// A service: a ready address of its `Endpoints` with the port named (or numbered), as
/// kube-apiserver picks one (at random, checked against the pod it names).
async fn service_location(store: &GenericStore, ns: &str, id: &str) -> Result<Location> {
    let (scheme, name, port) = split_scheme_name_port(id)
        .ok_or_else(|| Error::bad_request(format!("invalid service request {id:?}")))?;
    let mut port_name = port.to_string();
    if let Ok(number) = port.parse::<i64>() {
        let svc = store
            .get(&*core(store, "services")?, Some(ns), name)
            .await?;
        let declared = svc
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|p| p["port"].as_i64() == Some(number));
        match declared {
            Some(p) => port_name = p["name"].as_str().unwrap_or("").to_string(),
            None => {
                return Err(Error::service_unavailable(format!(
                    "no service port {number} found for service {name:?}"
                )))
            }
        }
    }
    let eps = store
        .get(&*core(store, "endpoints")?, Some(ns), name)
        .await?;
    let subsets = eps["subsets"].as_array().cloned().unwrap_or_default();
    if subsets.is_empty() {
        return Err(Error::service_unavailable(format!(
            "no endpoints available for service {name:?}"
        )));
    }
    let pods = core(store, "pods")?;
    let seed = rand::rng().random_range(0..subsets.len());
    for i in 0..subsets.len() {
        let ss = &subsets[(seed + i) % subsets.len()];
        let addresses = ss["addresses"].as_array().cloned().unwrap_or_default();
        if addresses.is_empty() {
            continue;
        }
        let Some(port) = ss["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["name"].as_str().unwrap_or("") == port_name)
            .and_then(|p| p["port"].as_i64())
        else {
            continue;
        };
        let start = rand::rng().random_range(0..addresses.len());
        for j in 0..addresses.len() {
            let addr = &addresses[(start + j) % addresses.len()];
            let ip = addr["ip"].as_str().unwrap_or("");
            // Only an address whose pod (in this namespace) still has that IP.
            let target = &addr["targetRef"];
            if target.is_null() || target["namespace"].as_str() != Some(ns) {
                continue;
            }
            let Some(pod_name) = target["name"].as_str() else {
                continue;
            };
            let Ok(pod) = store.get(&pods, Some(ns), pod_name).await else {
                continue;
            };
            let has_ip = pod
                .pointer("/status/podIPs")
                .and_then(Value::as_array)
                .is_some_and(|ips| ips.iter().any(|p| p["ip"].as_str() == Some(ip)));
            if has_ip {
                return Ok(Location {
                    scheme: scheme_or_http(scheme),
                    authority: join_host_port(ip, &port.to_string()),
                    via: Via::Plain,
                });
            }
        }
    }
    Err(Error::service_unavailable(format!(
        "no endpoints available for service {id:?}"
    )))
}

/// A node: its kubelet, or another of its ports.
async fn node_location(store: &GenericStore, id: &str) -> Result<Location> {
    let (scheme, name, port) = split_scheme_name_port(id)
        .ok_or_else(|| Error::bad_request(format!("invalid node request {id:?}")))?;
    let (host, kubelet_port) = kubelet_address(store, name).await?;
    if port.is_empty() || port == kubelet_port.to_string() {
        return Ok(Location {
            scheme: "https",
            authority: join_host_port(&host, &kubelet_port.to_string()),
            via: Via::Kubelet,
        });
    }
    Ok(Location {
        scheme: scheme_or_http(scheme),
        authority: join_host_port(&host, port),
        via: Via::Plain,
    })
}

/// Headers that belong to one hop, never passed on (as Go's reverse proxy drops them).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "proxy-connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// What the client sent that the target must not see: its credentials (kube-apiserver drops
/// them once it has authenticated the request) and hop-by-hop headers.
fn forwardable(name: &HeaderName, headers: &HeaderMap) -> bool {
    let n = name.as_str();
    let named_by_connection = headers.get_all(header::CONNECTION).iter().any(|v| {
        v.to_str()
            .unwrap_or("")
            .split(',')
            .any(|t| t.trim().eq_ignore_ascii_case(n))
    });
    !(HOP_BY_HOP.contains(&n)
        || named_by_connection
        || name == header::AUTHORIZATION
        || name == header::HOST
        || n.starts_with("impersonate-"))
}

/// The CORS headers of an answer, which the proxy removes.
const CORS: &[&str] = &[
    "access-control-allow-credentials",
    "access-control-allow-headers",
    "access-control-allow-methods",
    "access-control-allow-origin",
];

/// A `Location` the target sent, rewritten to go through the proxy when it points back at the
/// target (as kube's proxy transport does); any other left alone.
fn rewrite_location(location: &str, target: &str, request_host: &str, prefix: &str) -> String {
    let path_and_query = if location.starts_with('/') && !location.starts_with("//") {
        location.to_string()
    } else {
        let Ok(url) = reqwest::Url::parse(location) else {
            return location.to_string();
        };
        let host = match (url.host_str(), url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            (None, _) => String::new(),
        };
        if host.is_empty() || (host != target && host != request_host) {
            return location.to_string();
        }
        let mut s = url.path().to_string();
        if let Some(q) = url.query() {
            s.push('?');
            s.push_str(q);
        }
        s
    };
    if path_and_query.starts_with(prefix) {
        return path_and_query;
    }
    format!("{prefix}{path_and_query}")
}

/// What a failure to reach the target says, worded as Go's dialer words the usual ones.
fn reach_error(e: &reqwest::Error, authority: &str) -> Error {
    let mut cur: Option<&dyn std::error::Error> = Some(e);
    let mut why = None;
    while let Some(c) = cur {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            why = Some(match io.kind() {
                std::io::ErrorKind::ConnectionRefused => {
                    format!("dial tcp {authority}: connect: connection refused")
                }
                std::io::ErrorKind::TimedOut => format!("dial tcp {authority}: i/o timeout"),
                _ => format!("dial tcp {authority}: {io}"),
            });
            break;
        }
        cur = c.source();
    }
    let why = why.unwrap_or_else(|| {
        if e.is_timeout() {
            format!("dial tcp {authority}: i/o timeout")
        } else {
            skiff_http::error_chain(e)
        }
    });
    Error::failure_status(500, format!("error trying to reach service: {why}"))
}

/// Serves `pods/ID/proxy...`, `services/ID/proxy...` or `nodes/ID/proxy...`; `rest` is what
/// followed `proxy` in the path, as sent (empty, or starting with `/`).
pub async fn serve(
    store: &GenericStore,
    kubelets: &Kubelets,
    req: Req,
    plural: &str,
    ns: &str,
    id: &str,
    rest: &str,
) -> Result<Response<Body>> {
    let location = match plural {
        "pods" => pod_location(store, ns, id).await?,
        "services" => service_location(store, ns, id).await?,
        _ => node_location(store, id).await?,
    };
    let path = req.uri().path().to_string();
    let query = req.uri().query().map(str::to_string);
    if rest.is_empty() && !path.ends_with('/') && !super::websocket::is_upgrade(req.headers()) {
        // As kube-apiserver: the target's root is reached with a trailing slash.
        let to = match &query {
            Some(q) => format!("{path}/?{q}"),
            None => format!("{path}/"),
        };
        return Ok(Response::builder()
            .status(StatusCode::MOVED_PERMANENTLY)
            .header(header::LOCATION, to)
            .body(Body::empty())
            .expect("valid response"));
    }
    let target_path = if rest.is_empty() { "/" } else { rest };
    let target_path_and_query = match &query {
        Some(q) => format!("{target_path}?{q}"),
        None => target_path.to_string(),
    };
    let prefix = path
        .strip_suffix(rest)
        .unwrap_or(&path)
        .trim_end_matches('/')
        .to_string();

    if super::websocket::is_upgrade(req.headers()) {
        return upgrade(kubelets, req, &location, &target_path_and_query).await;
    }

    let client = match location.via {
        Via::Plain => &kubelets.proxy,
        Via::Kubelet => &kubelets.kubelet_proxy,
    };
    let url = format!(
        "{}://{}{}",
        location.scheme, location.authority, target_path_and_query
    );
    let method = req.method().clone();
    // The host the client asked for (HTTP/2 carries it in the URI): as kube-apiserver, the
    // target is asked for it too.
    let request_host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default();
    let peer = req
        .extensions()
        .get::<crate::audit::Peer>()
        .map(|p| p.0.ip().to_string());
    let mut headers = HeaderMap::new();
    for (k, v) in req.headers() {
        if forwardable(k, req.headers()) {
            headers.append(k.clone(), v.clone());
        }
    }
    if let Some(ip) = peer {
        let forwarded = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
            Some(prior) => format!("{prior}, {ip}"),
            None => ip,
        };
        if let Ok(v) = forwarded.parse() {
            headers.insert("x-forwarded-for", v);
        }
    }
    if let Ok(v) = format!("{prefix}{target_path}").parse() {
        headers.insert("x-forwarded-uri", v);
    }
    if let Ok(v) = request_host.parse() {
        headers.insert(header::HOST, v);
    }
    let has_body = req.headers().contains_key(header::CONTENT_LENGTH)
        || req.headers().contains_key(header::TRANSFER_ENCODING);
    let mut outgoing = client.request(method.clone(), &url).headers(headers);
    if has_body {
        let body = reqwest::Body::wrap_stream(http_body_util::BodyDataStream::new(req.into_body()));
        outgoing = outgoing.body(body);
    }
    let answer = outgoing
        .send()
        .await
        .map_err(|e| reach_error(&e, &location.authority))?;
    let rewrite = |u: &str| rewrite_location(u, &location.authority, &request_host, &prefix);
    let redirected = answer.headers().contains_key(header::LOCATION);
    let html = answer
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.split(';').next().unwrap_or("").trim() == "text/html");
    let encoding = answer
        .headers()
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let mut resp = Response::builder().status(answer.status());
    for (k, v) in answer.headers() {
        let n = k.as_str();
        if HOP_BY_HOP.contains(&n) || CORS.contains(&n) {
            continue;
        }
        if k == header::LOCATION {
            if let Ok(l) = v.to_str() {
                if let Ok(v) = rewrite(l).parse::<http::HeaderValue>() {
                    resp = resp.header(k, v);
                }
                continue;
            }
        }
        resp = resp.header(k, v);
    }
    if !html || redirected || method == http::Method::HEAD {
        return Ok(resp
            .body(Body::from_stream(answer.bytes_stream()))
            .expect("valid response"));
    }
    // A page: read whole (up to a bound), its links rewritten.
    let mut stream = answer.bytes_stream();
    let mut page = Vec::new();
    while let Some(chunk) = futures::StreamExt::next(&mut stream).await {
        let Ok(chunk) = chunk else { break };
        page.extend_from_slice(&chunk);
        if page.len() > MAX_PAGE {
            // Too big to hold: it goes as it came.
            let head = futures::stream::once(async move { Ok(bytes::Bytes::from(page)) });
            return Ok(resp
                .body(Body::from_stream(futures::StreamExt::chain(head, stream)))
                .expect("valid response"));
        }
    }
    let body = match super::html::rewrite_encoded(&page, &encoding, &rewrite) {
        Some(new) => {
            if let Some(h) = resp.headers_mut() {
                h.remove(header::CONTENT_LENGTH);
            }
            new
        }
        None => page,
    };
    Ok(resp.body(Body::from(body)).expect("valid response"))
}

/// The largest page whose links are rewritten.
const MAX_PAGE: usize = 32 << 20;

/// An upgrade (a WebSocket to the pod, say) carried through to the target.
async fn upgrade(
    kubelets: &Kubelets,
    req: Req,
    location: &Location,
    path: &str,
) -> Result<Response<Body>> {
    let authority = &location.authority;
    let tcp = tokio::net::TcpStream::connect(authority.as_str())
        .await
        .map_err(|e| {
            let why = match e.kind() {
                std::io::ErrorKind::ConnectionRefused => {
                    format!("dial tcp {authority}: connect: connection refused")
                }
                _ => format!("dial tcp {authority}: {e}"),
            };
            Error::failure_status(500, format!("error trying to reach service: {why}"))
        })?;
    if location.scheme == "http" {
        return Ok(skiff_http::relay(req, tcp, authority, path).await);
    }
    let tls = match location.via {
        Via::Kubelet => kubelets.tls.clone(),
        Via::Plain => kubelets.insecure_tls.clone(),
    };
    let server_name = rustls::pki_types::ServerName::try_from("proxied")
        .expect("a valid name")
        .to_owned();
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(server_name, tcp)
        .await
        .map_err(|e| Error::failure_status(500, format!("error trying to reach service: {e}")))?;
    Ok(skiff_http::relay(req, stream, authority, path).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_split_as_kubernetes_splits_them() {
        assert_eq!(split_scheme_name_port("web"), Some(("", "web", "")));
        assert_eq!(split_scheme_name_port("web:80"), Some(("", "web", "80")));
        assert_eq!(
            split_scheme_name_port("https:web:443"),
            Some(("https", "web", "443"))
        );
        assert_eq!(split_scheme_name_port("ftp:web:21"), None);
        assert_eq!(split_scheme_name_port(":80"), None);
        assert_eq!(split_scheme_name_port("a:b:c:d"), None);
    }

    #[test]
    fn redirects_back_to_the_target_go_through_the_proxy() {
        let prefix = "/api/v1/namespaces/d/pods/web:8080/proxy";
        assert_eq!(
            rewrite_location("/login?x=1", "10.0.0.5:8080", "api:6443", prefix),
            format!("{prefix}/login?x=1")
        );
        assert_eq!(
            rewrite_location(
                "http://10.0.0.5:8080/a/",
                "10.0.0.5:8080",
                "api:6443",
                prefix
            ),
            format!("{prefix}/a/")
        );
        assert_eq!(
            rewrite_location("https://example.com/a", "10.0.0.5:8080", "api:6443", prefix),
            "https://example.com/a"
        );
        assert_eq!(
            rewrite_location("next", "10.0.0.5:8080", "api:6443", prefix),
            "next"
        );
        assert_eq!(
            rewrite_location(&format!("{prefix}/x"), "10.0.0.5:8080", "api:6443", prefix),
            format!("{prefix}/x")
        );
    }

    #[test]
    fn credentials_and_hop_headers_stay_behind() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "close, x-private".parse().unwrap());
        for n in [
            "authorization",
            "impersonate-user",
            "te",
            "x-private",
            "host",
        ] {
            assert!(!forwardable(&HeaderName::from_static(n), &h), "{n}");
        }
        assert!(forwardable(&HeaderName::from_static("x-custom"), &h));
        assert!(forwardable(&header::CONTENT_TYPE, &h));
    }
}
