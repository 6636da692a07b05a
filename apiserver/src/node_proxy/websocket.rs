//! The server side of a WebSocket upgrade (RFC 6455) as kube-apiserver makes it: which requests
//! ask for one, which subprotocols they offer, the `101` answer, and a pod's log streamed over
//! one (`binary.k8s.io`, `base64.binary.k8s.io`, as Kubernetes' `wsstream` reader serves it).

use axum::body::Body;
use base64::Engine;
use futures::{SinkExt, StreamExt};
use http::{header, HeaderMap, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// A WebSocket connection over an upgraded request.
pub type Socket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// Whether a header's comma-separated tokens include `token` (case-insensitively).
fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .unwrap_or("")
            .split(',')
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    })
}

/// Whether the request asks to upgrade at all (`Connection: Upgrade` and an `Upgrade` header).
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    has_token(headers, header::CONNECTION, "upgrade") && headers.contains_key(header::UPGRADE)
}

/// Whether the request asks to upgrade to WebSocket.
pub fn is_websocket(headers: &HeaderMap) -> bool {
    has_token(headers, header::CONNECTION, "upgrade")
        && has_token(headers, header::UPGRADE, "websocket")
}

/// The subprotocols the client offers, in its order.
pub fn protocols(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .flat_map(|v| {
            v.to_str()
                .unwrap_or("")
                .split(',')
                .map(|p| p.trim().to_string())
                .filter(|p| !p.is_empty())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Why a WebSocket handshake was refused, with the code it is answered with.
pub struct Refused(pub StatusCode, pub String);

impl Refused {
    /// The plain-text answer.
    pub fn response(self) -> Response<Body> {
        skiff_http::plain(self.0, self.1)
    }
}

/// The first of the client's subprotocols the server supports (`""` standing for none
/// offered), as Kubernetes' `wsstream` handshake picks it; 403 when none is supported.
pub fn negotiate(headers: &HeaderMap, supported: &[&str]) -> Result<String, Refused> {
    let offered = protocols(headers);
    let wanted = if offered.is_empty() {
        vec![String::new()]
    } else {
        offered.clone()
    };
    wanted
        .into_iter()
        .find(|p| supported.contains(&p.as_str()))
        .ok_or_else(|| {
            Refused(
                StatusCode::FORBIDDEN,
                format!(
                    "requested protocol(s) are not supported: {offered:?}; supports {supported:?}"
                ),
            )
        })
}

/// Answers the handshake with `101 Switching Protocols` naming `protocol` (none when empty);
/// the connection is handed over once the response has been sent.
pub fn accept<B>(
    req: &mut Request<B>,
    protocol: &str,
) -> Result<(Response<Body>, hyper::upgrade::OnUpgrade), Refused> {
    let headers = req.headers();
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes() != b"13")
    {
        return Err(Refused(
            StatusCode::BAD_REQUEST,
            "websocket: unsupported version: only version 13 is supported".into(),
        ));
    }
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
        return Err(Refused(
            StatusCode::BAD_REQUEST,
            "websocket: not a websocket handshake: 'Sec-WebSocket-Key' header is missing".into(),
        ));
    };
    let accept_key = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let mut resp = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::UPGRADE, "websocket")
        .header(header::CONNECTION, "Upgrade")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept_key);
    if !protocol.is_empty() {
        resp = resp.header(header::SEC_WEBSOCKET_PROTOCOL, protocol);
    }
    let upgrade = hyper::upgrade::on(req);
    Ok((resp.body(Body::empty()).expect("valid response"), upgrade))
}

/// The server's end of the connection once upgraded.
pub async fn server(upgrade: hyper::upgrade::OnUpgrade) -> Option<Socket> {
    let up = upgrade.await.ok()?;
    Some(WebSocketStream::from_raw_socket(TokioIo::new(up), Role::Server, None).await)
}

/// A normal closure.
pub fn close_normal() -> Message {
    Message::Close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    }))
}

/// The log subprotocols: none or `binary.k8s.io` (binary messages), `base64.binary.k8s.io`
/// (base64 text messages).
const LOG_PROTOCOLS: &[&str] = &["", "binary.k8s.io", "base64.binary.k8s.io"];

/// Streams `body` (a container's log) to a WebSocket client: an empty message first, then
/// each chunk as it comes, then a normal closure; what the client sends is ignored.
pub fn stream_log<B>(req: &mut Request<B>, body: reqwest::Response) -> Response<Body> {
    let protocol = match negotiate(req.headers(), LOG_PROTOCOLS) {
        Ok(p) => p,
        Err(r) => return r.response(),
    };
    let (resp, upgrade) = match accept(req, &protocol) {
        Ok(a) => a,
        Err(r) => return r.response(),
    };
    let text = protocol == "base64.binary.k8s.io";
    tokio::spawn(async move {
        let Some(ws) = server(upgrade).await else {
            return;
        };
        let (mut tx, mut rx) = ws.split();
        let message = |chunk: &[u8]| {
            if text {
                Message::text(base64::engine::general_purpose::STANDARD.encode(chunk))
            } else {
                Message::binary(chunk.to_vec())
            }
        };
        if tx.send(message(&[])).await.is_err() {
            return;
        }
        let mut log = body.bytes_stream();
        loop {
            tokio::select! {
                chunk = log.next() => match chunk {
                    Some(Ok(c)) => {
                        if tx.send(message(&c)).await.is_err() {
                            return;
                        }
                    }
                    _ => break,
                },
                m = rx.next() => match m {
                    // The client has nothing to say but goodbye.
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                    Some(Ok(_)) => {}
                },
            }
        }
        let _ = tx.send(close_normal()).await;
        let _ = tx.close().await;
    });
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn websocket_requests_are_told() {
        let h = headers(&[
            ("Connection", "keep-alive, Upgrade"),
            ("Upgrade", "WebSocket"),
        ]);
        assert!(is_websocket(&h) && is_upgrade(&h));
        let h = headers(&[("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1")]);
        assert!(!is_websocket(&h) && is_upgrade(&h));
        assert!(!is_upgrade(&headers(&[("Upgrade", "websocket")])));
    }

    #[test]
    fn the_first_supported_protocol_wins() {
        let h = headers(&[
            (
                "Sec-WebSocket-Protocol",
                "v4.channel.k8s.io, base64.binary.k8s.io",
            ),
            ("Sec-WebSocket-Protocol", "binary.k8s.io"),
        ]);
        assert_eq!(
            negotiate(&h, LOG_PROTOCOLS).ok(),
            Some("base64.binary.k8s.io".into())
        );
        assert_eq!(
            negotiate(&headers(&[]), LOG_PROTOCOLS).ok(),
            Some(String::new())
        );
        let h = headers(&[("Sec-WebSocket-Protocol", "v4.channel.k8s.io")]);
        let Err(Refused(code, why)) = negotiate(&h, LOG_PROTOCOLS) else {
            panic!()
        };
        assert_eq!(code, StatusCode::FORBIDDEN);
        assert!(
            why.starts_with("requested protocol(s) are not supported"),
            "{why}"
        );
    }
}
