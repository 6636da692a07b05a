//! HTTP pieces Skiff's servers share. [`server_tls`] is the TLS set-up of the API server and
//! the kubelet alike (a serving certificate, client certificates from one CA). [`relay`] carries an upgrade request (`kubectl exec`,
//! `attach`, `port-forward`: SPDY or WebSocket) one hop further — API server to kubelet, kubelet
//! to the runtime's streaming server — and, once the far side switches protocols, copies the
//! bytes both ways untouched, so the two ends agree on the protocol between themselves.
//! [`daemon`] is what every long-running component sets up the same way: logs, `/healthz`,
//! `/readyz`, `/metrics` and SIGTERM.

pub mod daemon;

use axum::body::Body;
use hyper::header;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Why a TLS configuration could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate or key is not valid PEM.
    #[error("reading PEM: {0}")]
    Pem(#[from] rustls::pki_types::pem::Error),
    /// rustls refused the certificates, key or settings.
    #[error(transparent)]
    Rustls(#[from] rustls::Error),
    /// The client-certificate verifier could not be built (e.g. no CA certificate).
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// A server configuration with ring: the certificate chain and key (PEM), client certificates
/// signed by `client_ca_pem` accepted but not required (who may do what is the server's own
/// decision), and the ALPN protocols offered.
pub fn server_tls(
    cert_pem: &[u8],
    key_pem: &[u8],
    client_ca_pem: &[u8],
    alpn: &[&[u8]],
) -> Result<rustls::ServerConfig, TlsError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use std::sync::Arc;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(cert_pem).collect::<Result<_, _>>()?;
    let key = PrivateKeyDer::from_pem_slice(key_pem)?;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(client_ca_pem) {
        roots.add(c?)?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)?;
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(cfg)
}

/// The longest response head (or error body) read from the far side.
const MAX_HEAD: usize = 64 * 1024;

/// A plain-text response.
pub fn plain(code: StatusCode, msg: impl Into<String>) -> Response<Body> {
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from(msg.into()))
        .expect("valid response")
}

/// An error with its sources, `a: b: c`.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Reads an HTTP/1.1 response head: status, headers and the bytes that followed it.
pub async fn read_response_head<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> std::io::Result<(u16, Vec<(String, String)>, Vec<u8>)> {
    let mut buf = Vec::new();
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 || buf.len() > MAX_HEAD {
            return Err(std::io::Error::other(
                "the far side closed the connection before answering",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let text = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = text.split("\r\n");
    let code = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(502);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Ok((code, headers, buf[end..].to_vec()))
}

/// Reads the body of a response that is not an upgrade: its `Content-Length` bytes (none
/// without one), at most 64 KiB; `leftover` is what came with the head.
pub async fn read_body<S: AsyncRead + Unpin>(
    stream: &mut S,
    headers: &[(String, String)],
    leftover: Vec<u8>,
) -> Vec<u8> {
    let len: Option<usize> = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok());
    let limit = len.unwrap_or(0).min(MAX_HEAD);
    let mut body = leftover;
    let mut chunk = [0u8; 4096];
    while body.len() < limit {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    body.truncate(limit);
    body
}

/// Sends `req`'s method and headers (not its authorization) to `path` on `host` over `stream`.
/// When the far side switches protocols, answers the client the same and copies bytes both
/// ways until either side closes; any other answer goes back to the client as it came.
pub async fn relay<B, S>(
    mut req: Request<B>,
    mut stream: S,
    host: &str,
    path: &str,
) -> Response<Body>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut head = format!("{} {path} HTTP/1.1\r\nHost: {host}\r\n", req.method());
    for (k, v) in req.headers() {
        if matches!(
            k,
            &header::HOST | &header::AUTHORIZATION | &header::CONTENT_LENGTH
        ) {
            continue;
        }
        if let Ok(v) = v.to_str() {
            head.push_str(&format!("{}: {v}\r\n", k.as_str()));
        }
    }
    head.push_str("Content-Length: 0\r\n\r\n");
    if let Err(e) = stream.write_all(head.as_bytes()).await {
        return plain(StatusCode::BAD_GATEWAY, format!("relaying to {host}: {e}"));
    }
    let (code, headers, leftover) = match read_response_head(&mut stream).await {
        Ok(h) => h,
        Err(e) => return plain(StatusCode::BAD_GATEWAY, format!("relaying to {host}: {e}")),
    };
    let mut resp =
        Response::builder().status(StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY));
    for (k, v) in &headers {
        if !k.eq_ignore_ascii_case("content-length") && !k.eq_ignore_ascii_case("transfer-encoding")
        {
            resp = resp.header(k.as_str(), v.as_str());
        }
    }
    if code != 101 {
        let body = read_body(&mut stream, &headers, leftover).await;
        return resp.body(Body::from(body)).expect("valid response");
    }
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(up) = upgrade.await else {
            return;
        };
        let mut up = TokioIo::new(up);
        if !leftover.is_empty() && up.write_all(&leftover).await.is_err() {
            return;
        }
        let _ = tokio::io::copy_bidirectional(&mut up, &mut stream).await;
    });
    resp.body(Body::empty()).expect("valid response")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_error_answer_comes_back_as_it_was() {
        let (client, mut server) = tokio::io::duplex(4096);
        let far = tokio::spawn(async move {
            let mut buf = vec![0u8; 1024];
            let n = server.read(&mut buf).await.unwrap();
            let head = String::from_utf8_lossy(&buf[..n]).into_owned();
            server
                .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 5\r\n\r\nnope!")
                .await
                .unwrap();
            head
        });
        let req = Request::builder()
            .method("POST")
            .uri("/exec/x")
            .header("Authorization", "Bearer secret")
            .header("X-Stream-Protocol-Version", "v4.channel.k8s.io")
            .body(())
            .unwrap();
        let resp = relay(req, client, "node:10250", "/exec/ns/p/c?command=ls").await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        let head = far.await.unwrap();
        assert!(head.starts_with("POST /exec/ns/p/c?command=ls HTTP/1.1\r\nHost: node:10250\r\n"));
        assert!(head.contains("x-stream-protocol-version: v4.channel.k8s.io\r\n"));
        assert!(!head.to_lowercase().contains("authorization"));
        use http_body_util::BodyExt;
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"nope!");
    }
}
