//! `exec`, `attach` and `portForward`: the kubelet asks the runtime for a streaming session
//! (CRI `Exec`, `Attach`, `PortForward`), then relays the client's upgraded connection (SPDY or
//! WebSocket, whichever the client and the runtime agree on) to the runtime's streaming server.

use std::collections::HashMap;

use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use skiff_proto::cri;

use crate::cri::Runtime;
use crate::pods::labels;

/// What a streaming request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A command in a container.
    Exec,
    /// The container's own stdio.
    Attach,
    /// Ports of the pod.
    PortForward,
}

use skiff_http::plain;

/// Decodes `a=1&b=x%20y` into pairs, in order.
pub fn query_pairs(q: Option<&str>) -> Vec<(String, String)> {
    fn decode(s: &str) -> String {
        let s = s.replace('+', " ");
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' {
                if let Some(v) = s
                    .get(i + 1..i + 3)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    out.push(v);
                    i += 3;
                    continue;
                }
            }
            out.push(b[i]);
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    q.unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn flag(pairs: &[(String, String)], k: &str) -> bool {
    pairs
        .iter()
        .any(|(n, v)| n == k && matches!(v.as_str(), "1" | "true" | "True"))
}

/// The running instances of a pod's container, as the runtime lists them.
pub async fn running_containers(
    runtime: &Runtime,
    namespace: &str,
    pod: &str,
    container: &str,
) -> Result<Vec<cri::Container>, tonic::Status> {
    let filter = cri::ContainerFilter {
        state: Some(cri::ContainerStateValue {
            state: cri::ContainerState::ContainerRunning as i32,
        }),
        label_selector: HashMap::from([
            (labels::POD_NAMESPACE.to_string(), namespace.to_string()),
            (labels::POD_NAME.to_string(), pod.to_string()),
            (labels::CONTAINER_NAME.to_string(), container.to_string()),
        ]),
        ..Default::default()
    };
    Ok(runtime
        .runtime
        .clone()
        .list_containers(cri::ListContainersRequest {
            filter: Some(filter),
        })
        .await?
        .into_inner()
        .containers)
}

async fn running_container(
    runtime: &Runtime,
    namespace: &str,
    pod: &str,
    container: &str,
) -> Option<String> {
    running_containers(runtime, namespace, pod, container)
        .await
        .ok()?
        .into_iter()
        .max_by_key(|c| c.created_at)
        .map(|c| c.id)
}

async fn ready_sandbox(runtime: &Runtime, namespace: &str, pod: &str) -> Option<String> {
    let filter = cri::PodSandboxFilter {
        state: Some(cri::PodSandboxStateValue {
            state: cri::PodSandboxState::SandboxReady as i32,
        }),
        label_selector: HashMap::from([
            (labels::POD_NAMESPACE.to_string(), namespace.to_string()),
            (labels::POD_NAME.to_string(), pod.to_string()),
        ]),
        ..Default::default()
    };
    let list = runtime
        .runtime
        .clone()
        .list_pod_sandbox(cri::ListPodSandboxRequest {
            filter: Some(filter),
        })
        .await
        .ok()?
        .into_inner()
        .items;
    list.into_iter().max_by_key(|s| s.created_at).map(|s| s.id)
}

/// Serves one streaming request.
pub async fn handle(
    runtime: &Runtime,
    kind: Kind,
    namespace: &str,
    pod: &str,
    container: Option<&str>,
    req: Request<Body>,
) -> Response<Body> {
    let pairs = query_pairs(req.uri().query());
    let mut rt = runtime.runtime.clone();
    let url = match kind {
        Kind::Exec | Kind::Attach => {
            let container = container.unwrap_or_default();
            let Some(id) = running_container(runtime, namespace, pod, container).await else {
                return plain(
                    StatusCode::NOT_FOUND,
                    format!("container not found ({container:?})"),
                );
            };
            let (stdin, stdout, stderr, tty) = (
                flag(&pairs, "stdin") || flag(&pairs, "input"),
                flag(&pairs, "stdout") || flag(&pairs, "output"),
                flag(&pairs, "stderr") || flag(&pairs, "error"),
                flag(&pairs, "tty"),
            );
            let r = if kind == Kind::Exec {
                let cmd: Vec<String> = pairs
                    .iter()
                    .filter(|(k, _)| k == "command")
                    .map(|(_, v)| v.clone())
                    .collect();
                if cmd.is_empty() {
                    return plain(
                        StatusCode::BAD_REQUEST,
                        "you must specify at least 1 command",
                    );
                }
                rt.exec(cri::ExecRequest {
                    container_id: id,
                    cmd,
                    tty,
                    stdin,
                    stdout,
                    stderr: stderr && !tty,
                })
                .await
                .map(|r| r.into_inner().url)
            } else {
                rt.attach(cri::AttachRequest {
                    container_id: id,
                    stdin,
                    tty,
                    stdout,
                    stderr: stderr && !tty,
                })
                .await
                .map(|r| r.into_inner().url)
            };
            r
        }
        Kind::PortForward => {
            let Some(id) = ready_sandbox(runtime, namespace, pod).await else {
                return plain(
                    StatusCode::NOT_FOUND,
                    format!("pod {namespace}/{pod} is not running on this node"),
                );
            };
            let ports = pairs
                .iter()
                .filter(|(k, _)| k == "port")
                .filter_map(|(_, v)| v.parse().ok())
                .collect();
            rt.port_forward(cri::PortForwardRequest {
                pod_sandbox_id: id,
                port: ports,
            })
            .await
            .map(|r| r.into_inner().url)
        }
    };
    let url = match url {
        Ok(u) => u,
        Err(e) => return plain(StatusCode::INTERNAL_SERVER_ERROR, e.message().to_string()),
    };
    let Ok(uri) = url.parse::<axum::http::Uri>() else {
        return plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("bad streaming URL {url:?}"),
        );
    };
    let Some(authority) = uri.authority().map(|a| a.to_string()) else {
        return plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("bad streaming URL {url:?}"),
        );
    };
    let path = uri
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or("/".into());
    match tokio::net::TcpStream::connect(&authority).await {
        Ok(stream) => skiff_http::relay(req, stream, &authority, &path).await,
        Err(e) => plain(
            StatusCode::BAD_GATEWAY,
            format!("reaching the runtime's streaming server at {authority}: {e}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn query_decoding() {
        let p = super::query_pairs(Some("command=sh&command=-c&command=echo+a%20b&stdin=true"));
        assert_eq!(p[2], ("command".to_string(), "echo a b".to_string()));
        assert!(super::flag(&p, "stdin"));
    }
}
