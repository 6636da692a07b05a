//! `portforward` over WebSocket as kubectl 1.31+ asks for it by default: the subprotocol
//! `SPDY/3.1+portforward.k8s.io` carries SPDY frames inside binary WebSocket messages. As
//! kube-apiserver does, the API server upgrades to SPDY with the kubelet, then answers the
//! client's WebSocket handshake with the protocol the kubelet chose and carries the bytes
//! between the two untouched.

use axum::body::Body;
use futures::{SinkExt, StreamExt};
use http::{header, Request, Response, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

use super::websocket;

/// The prefix of a tunnelling subprotocol.
const PREFIX: &str = "SPDY/3.1+";

/// The SPDY protocols a WebSocket request tunnels (`portforward.k8s.io` from
/// `SPDY/3.1+portforward.k8s.io`), as kube-apiserver picks them: Kubernetes ones only.
pub fn tunnelled(headers: &http::HeaderMap) -> Vec<String> {
    websocket::protocols(headers)
        .into_iter()
        .filter_map(|p| {
            p.strip_prefix(PREFIX)
                .filter(|p| p.ends_with(".k8s.io"))
                .map(String::from)
        })
        .collect()
}

/// Serves a tunnelling request over `kubelet`, a connection to the node not upgraded yet.
pub async fn serve<B, K>(
    mut req: Request<B>,
    mut kubelet: K,
    host: &str,
    path: &str,
) -> Response<Body>
where
    K: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let spdy = tunnelled(req.headers());
    if spdy.is_empty() {
        return skiff_http::plain(
            StatusCode::BAD_REQUEST,
            "unable to upgrade: no tunneling spdy protocols provided",
        );
    }
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
    );
    for p in &spdy {
        head.push_str(&format!("X-Stream-Protocol-Version: {p}\r\n"));
    }
    head.push_str("Content-Length: 0\r\n\r\n");
    if let Err(e) = kubelet.write_all(head.as_bytes()).await {
        return skiff_http::plain(
            StatusCode::BAD_GATEWAY,
            format!("error sending request: {e}"),
        );
    }
    let (code, headers, leftover) = match skiff_http::read_response_head(&mut kubelet).await {
        Ok(h) => h,
        Err(e) => {
            return skiff_http::plain(
                StatusCode::BAD_GATEWAY,
                format!("error sending request: {e}"),
            )
        }
    };
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    if code != 101 {
        // Anything but an upgrade goes back as the node gave it.
        let body = skiff_http::read_body(&mut kubelet, &headers, leftover).await;
        let mut resp = Response::builder()
            .status(StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY));
        for (k, v) in &headers {
            if !k.eq_ignore_ascii_case("content-length")
                && !k.eq_ignore_ascii_case("transfer-encoding")
            {
                resp = resp.header(k.as_str(), v.as_str());
            }
        }
        return resp.body(Body::from(body)).expect("valid response");
    }
    if !get("connection").to_ascii_lowercase().contains("upgrade")
        || !get("upgrade").to_ascii_lowercase().contains("spdy/3.1")
    {
        return skiff_http::plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            "unable to upgrade: missing upgrade headers in response",
        );
    }
    let chosen = get("x-stream-protocol-version");
    let protocol = if chosen.trim().is_empty() {
        String::new()
    } else {
        format!("{PREFIX}{}", chosen.trim())
    };
    let (resp, upgrade) = match websocket::accept(&mut req, &protocol) {
        Ok(a) => a,
        Err(r) => return r.response(),
    };
    tokio::spawn(async move {
        let Some(ws) = websocket::server(upgrade).await else {
            return;
        };
        pipe(ws, kubelet, leftover).await;
    });
    let mut resp = resp;
    resp.headers_mut().remove(header::CONTENT_LENGTH);
    resp
}

/// Carries bytes between binary WebSocket messages and the node's connection until either
/// side ends.
async fn pipe<K>(ws: websocket::Socket, kubelet: K, leftover: Vec<u8>)
where
    K: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut tx, mut rx) = ws.split();
    let (mut read, mut write) = tokio::io::split(kubelet);
    if !leftover.is_empty() && tx.send(Message::binary(leftover)).await.is_err() {
        return;
    }
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        tokio::select! {
            n = read.read(&mut buf) => match n {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.send(Message::binary(buf[..n].to_vec())).await.is_err() {
                        return;
                    }
                }
            },
            m = rx.next() => match m {
                Some(Ok(Message::Binary(data))) => {
                    if write.write_all(&data).await.is_err() || write.flush().await.is_err() {
                        break;
                    }
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                    let _ = write.shutdown().await;
                    return;
                }
                Some(Ok(_)) => {}
            },
        }
    }
    let _ = tx.send(websocket::close_normal()).await;
    let _ = tx.close().await;
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_kubernetes_protocols_are_tunnelled() {
        let mut h = http::HeaderMap::new();
        h.insert(
            http::header::SEC_WEBSOCKET_PROTOCOL,
            "SPDY/3.1+portforward.k8s.io, SPDY/3.1+other.example, portforward.k8s.io"
                .parse()
                .unwrap(),
        );
        assert_eq!(super::tunnelled(&h), vec!["portforward.k8s.io".to_string()]);
    }
}
