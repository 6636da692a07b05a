//! `exec` and `attach` over WebSocket with the `v5.channel.k8s.io` protocol (kubectl's default
//! since 1.30), as kube-apiserver serves them: the API server ends the WebSocket itself and
//! speaks SPDY (`v4.channel.k8s.io`) to the kubelet, so the node needs no WebSocket support.
//!
//! Channels: 0 stdin, 1 stdout, 2 stderr, 3 the final `Status`, 4 terminal resizes; a message
//! `[255, 0]` from the client closes stdin (the half-close v4 cannot say).

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use super::spdy;
use super::websocket::Socket;

/// The subprotocol this translator serves.
pub const V5: &str = "v5.channel.k8s.io";
/// The remote-command protocol spoken to the kubelet.
const V4: &str = "v4.channel.k8s.io";

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
const CLOSE: u8 = 255;

/// Which streams the request asked for.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Standard input.
    pub stdin: bool,
    /// Standard output.
    pub stdout: bool,
    /// Standard error (never with a terminal).
    pub stderr: bool,
    /// A terminal.
    pub tty: bool,
}

impl Options {
    /// From the request's query, as the kubelet reads it.
    pub fn from_query(q: &crate::query::Query) -> Self {
        let on = |k: &str| matches!(q.get(k), Some("1" | "true" | "True"));
        Options {
            stdin: on("stdin"),
            stdout: on("stdout"),
            stderr: on("stderr"),
            tty: on("tty"),
        }
    }
}

/// The success `Status` written on channel 3.
fn success() -> Value {
    json!({"metadata": {}, "status": "Success"})
}

/// kube's `NewInternalError(err)` as a bare `Status`.
fn internal(why: &str) -> Value {
    json!({
        "metadata": {},
        "status": "Failure",
        "message": format!("Internal error occurred: {why}"),
        "reason": "InternalError",
        "details": {"causes": [{"message": why}]},
        "code": 500,
    })
}

/// What the client is told of the kubelet's final status: success, the exit code (worded as
/// kube-apiserver's translator words it), or the failure as an internal error.
fn final_status(from_node: &[u8]) -> Value {
    if from_node.iter().all(u8::is_ascii_whitespace) {
        return success();
    }
    let Ok(status) = serde_json::from_slice::<Value>(from_node) else {
        return internal(&format!(
            "error stream protocol error: invalid JSON in {:?}",
            String::from_utf8_lossy(from_node)
        ));
    };
    let message = status["message"].as_str().unwrap_or("");
    match status["status"].as_str() {
        Some("Success") => success(),
        Some("Failure") if status["reason"] == "NonZeroExitCode" => {
            let code = status
                .pointer("/details/causes")
                .and_then(Value::as_array)
                .and_then(|cs| cs.iter().find(|c| c["reason"] == "ExitCode"))
                .and_then(|c| c["message"].as_str())
                .unwrap_or("1")
                .to_string();
            json!({
                "metadata": {},
                "status": "Failure",
                "message": format!(
                    "command terminated with non-zero exit code: command terminated with non-zero exit code: {message}"
                ),
                "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": code}]},
            })
        }
        Some("Failure") => internal(message),
        _ => internal("error stream protocol error: unknown error"),
    }
}

fn frame(channel: u8, data: &[u8]) -> Message {
    let mut m = Vec::with_capacity(data.len() + 1);
    m.push(channel);
    m.extend_from_slice(data);
    Message::binary(m)
}

/// Ends the session: the status on channel 3, then a normal closure.
async fn finish<S>(tx: &mut S, status: Value)
where
    S: futures::Sink<Message> + Unpin,
{
    let body = serde_json::to_vec(&status).unwrap_or_default();
    let _ = tx.send(frame(ERROR, &body)).await;
    let _ = tx.send(super::websocket::close_normal()).await;
    let _ = tx.close().await;
}

/// Reads a kubelet's answer to the SPDY upgrade: `Ok(leftover)` after `101`, or the error to
/// report (kube's SPDY client words a refusal `unable to upgrade connection: BODY`).
async fn upgrade<S>(kubelet: &mut S, host: &str, path: &str) -> Result<Vec<u8>, Value>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: {V4}\r\nContent-Length: 0\r\n\r\n"
    );
    if let Err(e) = kubelet.write_all(head.as_bytes()).await {
        return Err(internal(&format!("error sending request: {e}")));
    }
    let (code, headers, rest) = skiff_http::read_response_head(kubelet)
        .await
        .map_err(|e| internal(&format!("error sending request: {e}")))?;
    if code == 101 {
        return Ok(rest);
    }
    let body = skiff_http::read_body(kubelet, &headers, rest).await;
    // A Status from the node is passed on as it is.
    if let Ok(s) = serde_json::from_slice::<Value>(&body) {
        if s["kind"] == "Status" {
            return Err(s);
        }
    }
    Err(internal(&format!(
        "unable to upgrade connection: {}",
        String::from_utf8_lossy(&body).trim()
    )))
}

/// What the SPDY reader passes on.
enum Event {
    Frame(spdy::Frame),
    Closed,
}

/// Runs one session between a WebSocket client and a kubelet connection that has not been
/// upgraded yet.
pub async fn run<K>(ws: Socket, mut kubelet: K, host: String, path: String, opts: Options)
where
    K: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut tx, mut rx) = ws.split();
    // The client learns the connection is up from an empty message on its lowest writable
    // channel.
    let first = if opts.stdout {
        STDOUT
    } else if opts.stderr {
        STDERR
    } else {
        ERROR
    };
    if tx.send(frame(first, &[])).await.is_err() {
        return;
    }
    let leftover = match upgrade(&mut kubelet, &host, &path).await {
        Ok(l) => l,
        Err(status) => return finish(&mut tx, status).await,
    };
    let (read, mut write) = tokio::io::split(kubelet);
    let (events, mut incoming) = mpsc::channel::<Event>(16);
    tokio::spawn(async move {
        let mut read = tokio::io::AsyncReadExt::chain(&leftover[..], read);
        while let Ok(Some(f)) = spdy::read_frame(&mut read).await {
            if events.send(Event::Frame(f)).await.is_err() {
                return;
            }
        }
        let _ = events.send(Event::Closed).await;
    });

    // The streams, in the order kube's client opens them, each accepted before the next.
    let mut client = spdy::Client::new();
    let mut wanted = vec![("error", ERROR)];
    if opts.stdin {
        wanted.push(("stdin", STDIN));
    }
    if opts.stdout {
        wanted.push(("stdout", STDOUT));
    }
    if opts.stderr && !opts.tty {
        wanted.push(("stderr", STDERR));
    }
    if opts.tty {
        wanted.push(("resize", RESIZE));
    }
    let mut ids: Vec<(u32, u8)> = Vec::new();
    let mut early = Vec::new();
    for (kind, channel) in wanted {
        let (id, syn) = client.open(&[("streamtype", kind)]);
        if spdy::write(&mut write, &syn).await.is_err() {
            return finish(&mut tx, internal("the node closed the connection")).await;
        }
        ids.push((id, channel));
        loop {
            match incoming.recv().await {
                Some(Event::Frame(spdy::Frame::Reply { stream, .. })) if stream == id => break,
                Some(Event::Frame(spdy::Frame::Ping(p))) => {
                    let _ = spdy::write(&mut write, &spdy::pong(p)).await;
                }
                Some(Event::Frame(spdy::Frame::Reset { stream })) if stream == id => {
                    return finish(&mut tx, internal("stream reset by the node")).await;
                }
                Some(Event::Frame(f)) => early.push(f),
                Some(Event::Closed) | None => {
                    return finish(&mut tx, internal("the node closed the connection")).await
                }
            }
        }
    }
    let channel_of = |stream: u32| ids.iter().find(|(i, _)| *i == stream).map(|(_, c)| *c);
    let stream_of = |channel: u8| ids.iter().find(|(_, c)| *c == channel).map(|(i, _)| *i);

    let mut status = Vec::new();
    let mut pending = early.into_iter();
    loop {
        let event = match pending.next() {
            Some(f) => Some(Event::Frame(f)),
            None => tokio::select! {
                e = incoming.recv() => e,
                m = rx.next() => {
                    match m {
                        Some(Ok(Message::Binary(data))) if !data.is_empty() => {
                            let (channel, body) = (data[0], &data[1..]);
                            let frame = match channel {
                                CLOSE => body
                                    .first()
                                    .and_then(|c| stream_of(*c))
                                    .map(|s| spdy::data(s, &[], true)),
                                STDIN | RESIZE => stream_of(channel).map(|s| spdy::data(s, body, false)),
                                _ => None,
                            };
                            if let Some(f) = frame {
                                if spdy::write(&mut write, &f).await.is_err() {
                                    break;
                                }
                            }
                        }
                        Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                            // The client went: so does the session.
                            let _ = write.shutdown().await;
                            return;
                        }
                        Some(Ok(_)) => {}
                    }
                    continue;
                }
            },
        };
        match event {
            Some(Event::Frame(spdy::Frame::Data { stream, data, .. })) => {
                match channel_of(stream) {
                    Some(ERROR) => status.extend_from_slice(&data),
                    Some(c @ (STDOUT | STDERR))
                        if !data.is_empty() && tx.send(frame(c, &data)).await.is_err() =>
                    {
                        return;
                    }
                    _ => {}
                }
            }
            Some(Event::Frame(spdy::Frame::Ping(p))) => {
                let _ = spdy::write(&mut write, &spdy::pong(p)).await;
            }
            Some(Event::Frame(spdy::Frame::GoAway)) | Some(Event::Closed) | None => break,
            Some(Event::Frame(_)) => {}
        }
    }
    finish(&mut tx, final_status(&status)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nodes_status_is_worded_as_kube_apiserver_words_it() {
        assert_eq!(final_status(b""), success());
        assert_eq!(
            final_status(br#"{"metadata":{},"status":"Success"}"#),
            success()
        );
        let exit = final_status(
            br#"{"metadata":{},"status":"Failure","message":"error executing command [sh -c exit 3], exit code 3","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"3"}]}}"#,
        );
        assert_eq!(exit["reason"], "NonZeroExitCode");
        assert_eq!(exit["details"]["causes"][0]["message"], "3");
        assert_eq!(
            exit["message"],
            "command terminated with non-zero exit code: command terminated with non-zero exit code: error executing command [sh -c exit 3], exit code 3"
        );
        let other = final_status(br#"{"status":"Failure","message":"boom"}"#);
        assert_eq!(other["message"], "Internal error occurred: boom");
        assert_eq!(other["code"], 500);
    }
}
