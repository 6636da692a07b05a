//! Container logs from the CRI log files (`<time> <stream> <P|F> <text>` lines) the runtime
//! writes under the pod's log directory, with Kubernetes' options: `follow`, `previous`,
//! `timestamps`, `tailLines`, `sinceSeconds`, `sinceTime` and `limitBytes`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::http::StatusCode;
use bytes::Bytes;
use k8s_openapi::jiff::Timestamp;
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::mpsc;

use crate::cri::Runtime;
use crate::pods::{labels, PodConfig};

/// The query of a log request.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogQuery {
    /// Keep streaming while the container runs.
    #[serde(default)]
    pub follow: Option<bool>,
    /// The previous instance's log.
    #[serde(default)]
    pub previous: Option<bool>,
    /// Prefix each line with its RFC 3339 time.
    #[serde(default)]
    pub timestamps: Option<bool>,
    /// Only the last lines.
    #[serde(default)]
    pub tail_lines: Option<i64>,
    /// Only lines newer than this many seconds.
    #[serde(default)]
    pub since_seconds: Option<i64>,
    /// Only lines from this time on.
    #[serde(default)]
    pub since_time: Option<String>,
    /// Stop after this many bytes.
    #[serde(default)]
    pub limit_bytes: Option<i64>,
}

type Failure = (StatusCode, String);

fn bad(msg: String) -> Failure {
    (StatusCode::BAD_REQUEST, msg)
}

/// The directory of the newest pod named `namespace/pod` on this node.
fn pod_dir(cfg: &PodConfig, namespace: &str, pod: &str) -> Option<PathBuf> {
    let prefix = format!("{namespace}_{pod}_");
    std::fs::read_dir(&cfg.pod_logs_dir)
        .ok()?
        .flatten()
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            // The rest must be the uid alone (no further underscore), so "a_b" never matches
            // a pod named "a_b_c".
            n.strip_prefix(&prefix)
                .is_some_and(|uid| !uid.contains('_'))
        })
        .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())
        .map(|e| e.path())
}

/// The container's log files, newest restart first.
fn log_files(dir: &Path) -> Vec<(u32, PathBuf)> {
    let mut v: Vec<(u32, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let n = name.strip_suffix(".log")?.parse().ok()?;
            Some((n, e.path()))
        })
        .collect();
    v.sort_by_key(|(n, _)| std::cmp::Reverse(*n));
    v
}

/// One parsed log line.
struct Line {
    time: String,
    at: Option<Timestamp>,
    text: String,
    full: bool,
}

fn parse(line: &str) -> Option<Line> {
    let mut parts = line.splitn(4, ' ');
    let time = parts.next()?.to_string();
    let _stream = parts.next()?;
    let tag = parts.next()?;
    let text = parts.next().unwrap_or("").to_string();
    Some(Line {
        at: time.parse().ok(),
        time,
        text,
        full: tag != "P",
    })
}

/// Turns raw CRI lines into the lines a user reads (partial lines joined).
struct Formatter {
    timestamps: bool,
    since: Option<Timestamp>,
    partial: Option<(String, String)>,
}

impl Formatter {
    fn push(&mut self, raw: &str, out: &mut Vec<String>) {
        let Some(l) = parse(raw) else {
            return;
        };
        if let (Some(since), Some(at)) = (self.since, l.at) {
            if at < since {
                return;
            }
        }
        let (time, mut text) = match self.partial.take() {
            Some((t, mut acc)) => {
                acc.push_str(&l.text);
                (t, acc)
            }
            None => (l.time.clone(), l.text.clone()),
        };
        if !l.full {
            self.partial = Some((time, text));
            return;
        }
        text.push('\n');
        out.push(if self.timestamps {
            format!("{time} {text}")
        } else {
            text
        });
    }
}

/// Opens the log stream of `namespace/pod`'s `container`.
pub async fn open(
    cfg: &PodConfig,
    runtime: &Runtime,
    namespace: &str,
    pod: &str,
    container: &str,
    q: LogQuery,
) -> Result<impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static, Failure> {
    let dir = pod_dir(cfg, namespace, pod).ok_or_else(|| {
        (
            StatusCode::NOT_FOUND,
            format!("pod {namespace}/{pod} has no logs on this node"),
        )
    })?;
    let cdir = dir.join(container);
    let files = log_files(&cdir);
    let previous = q.previous.unwrap_or(false);
    let (restart, path) = match (previous, files.as_slice()) {
        (false, [first, ..]) => first.clone(),
        (true, [_, second, ..]) => second.clone(),
        (true, _) => {
            return Err(bad(format!(
                "previous terminated container {container:?} in pod {pod:?} not found"
            )))
        }
        (false, []) => {
            return Err(bad(format!(
                "container {container:?} in pod {pod:?} is waiting to start: ContainerCreating"
            )))
        }
    };
    let since = match (&q.since_time, q.since_seconds) {
        (Some(t), _) => Some(
            t.parse::<Timestamp>()
                .map_err(|e| bad(format!("invalid sinceTime {t:?}: {e}")))?,
        ),
        (None, Some(s)) => {
            Some(skiff_client::time::now() - k8s_openapi::jiff::SignedDuration::from_secs(s))
        }
        _ => None,
    };
    if q.tail_lines.is_some_and(|t| t < 0) || q.limit_bytes.is_some_and(|l| l <= 0) {
        return Err(bad("tailLines must be >= 0 and limitBytes > 0".into()));
    }
    let follow = q.follow.unwrap_or(false) && !previous;
    let mut fmt = Formatter {
        timestamps: q.timestamps.unwrap_or(false),
        since,
        partial: None,
    };
    let mut file = tokio::fs::File::open(&path).await.map_err(|e| {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("opening the log: {e}"),
        )
    })?;
    let mut text = String::new();
    file.read_to_string(&mut text).await.map_err(|e| {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("reading the log: {e}"),
        )
    })?;
    // Only whole lines now; a line still being written is read on the next round.
    let mut offset = text.rfind('\n').map(|i| i + 1).unwrap_or(0) as u64;
    let mut lines = Vec::new();
    for raw in text[..offset as usize].lines() {
        fmt.push(raw, &mut lines);
    }
    if let Some(t) = q.tail_lines {
        let skip = lines.len().saturating_sub(t as usize);
        lines.drain(..skip);
    }
    let mut budget = q.limit_bytes.map(|l| l as usize);
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    let runtime = runtime.clone();
    let (namespace, pod, container) = (
        namespace.to_string(),
        pod.to_string(),
        container.to_string(),
    );
    tokio::spawn(async move {
        let send = |chunk: String, budget: &mut Option<usize>| {
            let mut bytes = Bytes::from(chunk);
            if let Some(b) = budget {
                if bytes.len() >= *b {
                    bytes.truncate(*b);
                    *b = 0;
                } else {
                    *b -= bytes.len();
                }
            }
            bytes
        };
        for l in lines {
            let b = send(l, &mut budget);
            if tx.send(Ok(b)).await.is_err() || budget == Some(0) {
                return;
            }
        }
        if !follow {
            return;
        }
        let mut tick = 0u32;
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            tick += 1;
            let mut more = String::new();
            if file.seek(std::io::SeekFrom::Start(offset)).await.is_err()
                || file.read_to_string(&mut more).await.is_err()
            {
                return;
            }
            let whole = more.rfind('\n').map(|i| i + 1).unwrap_or(0);
            offset += whole as u64;
            let mut out = Vec::new();
            for raw in more[..whole].lines() {
                fmt.push(raw, &mut out);
            }
            for l in out {
                let b = send(l, &mut budget);
                if tx.send(Ok(b)).await.is_err() || budget == Some(0) {
                    return;
                }
            }
            if tx.is_closed() {
                return;
            }
            // Once a second: stop when the container no longer runs (after the last read).
            if tick % 10 == 0
                && whole == 0
                && !running(&runtime, &namespace, &pod, &container, restart).await
            {
                return;
            }
        }
    });
    Ok(tokio_stream::wrappers::ReceiverStream::new(rx))
}

/// Whether restart `restart` of the container is running.
async fn running(
    runtime: &Runtime,
    namespace: &str,
    pod: &str,
    container: &str,
    restart: u32,
) -> bool {
    match super::streaming::running_containers(runtime, namespace, pod, container).await {
        Ok(list) => list.iter().any(|c| {
            c.annotations
                .get(labels::RESTART_COUNT)
                .and_then(|r| r.parse::<u32>().ok())
                == Some(restart)
        }),
        // The runtime is away: keep following.
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_cri_lines() {
        let mut f = Formatter {
            timestamps: false,
            since: None,
            partial: None,
        };
        let mut out = Vec::new();
        f.push("2024-01-01T00:00:00.000000001Z stdout P hel", &mut out);
        f.push("2024-01-01T00:00:00.000000002Z stdout F lo", &mut out);
        f.push("2024-01-01T00:00:01Z stderr F ", &mut out);
        assert_eq!(out, ["hello\n", "\n"]);
        let mut f = Formatter {
            timestamps: true,
            since: Some("2024-01-01T00:00:01Z".parse().unwrap()),
            partial: None,
        };
        let mut out = Vec::new();
        f.push("2024-01-01T00:00:00Z stdout F old", &mut out);
        f.push("2024-01-01T00:00:02Z stdout F new", &mut out);
        assert_eq!(out, ["2024-01-01T00:00:02Z new\n"]);
    }
}
