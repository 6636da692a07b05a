//! Helpers the benchmark programs share: percentiles, a process's memory, and a load spread
//! over concurrent clients.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The `p` quantile (0.0–1.0) of sorted durations; zero for none.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// A field of `/proc/<pid>/status` in KiB: `"VmRSS:"` (resident now) or `"VmHWM:"` (peak).
pub fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A process's resident memory in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

/// Runs `op(i)` for every `i` in `0..total` over `clients` concurrent workers; returns the
/// time taken, or the first error.
pub async fn fan_out<F, Fut>(clients: usize, total: usize, op: F) -> anyhow::Result<Duration>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..clients.max(1) {
        let (op, next) = (op.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return Ok::<_, anyhow::Error>(());
                }
                op(i).await?;
            }
        }));
    }
    for w in workers {
        w.await??;
    }
    Ok(start.elapsed())
}

/// How far a pod has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// It exists.
    Created,
    /// It has a node.
    Bound,
    /// Its phase is `Running`.
    Running,
}

#[derive(Default)]
struct Seen {
    names: [std::collections::HashSet<String>; 3],
    last: [Option<Instant>; 3],
}

/// Watches the pods of one namespace and notes when each first reached each [`Stage`].
pub struct PodProgress {
    seen: Arc<parking_lot::Mutex<Seen>>,
    _stop: tokio_util::sync::DropGuard,
}

impl PodProgress {
    /// Starts watching `namespace`.
    pub fn watch(client: &skiff_client::Client, namespace: &str) -> PodProgress {
        use futures::StreamExt;
        use k8s_openapi::api::core::v1::Pod;
        use skiff_client::reflector::Change;

        let stop = tokio_util::sync::CancellationToken::new();
        let informer = skiff_client::informer::Informer::spawn(
            skiff_client::Api::<Pod>::namespaced(client.clone(), namespace),
            skiff_client::watcher::Config::default().strip_managed_fields(),
            Default::default(),
            stop.clone(),
        );
        let seen = Arc::new(parking_lot::Mutex::new(Seen::default()));
        let s = seen.clone();
        let note = move |p: &Pod| {
            let name = p.metadata.name.clone().unwrap_or_default();
            let bound = p
                .spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .is_some_and(|n| !n.is_empty());
            let running = p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
            let now = Instant::now();
            let mut g = s.lock();
            for (i, reached) in [true, bound, running].into_iter().enumerate() {
                if reached && g.names[i].insert(name.clone()) {
                    g.last[i] = Some(now);
                }
            }
        };
        let mut changes = informer.subscribe().boxed();
        tokio::spawn(async move {
            while let Some(c) = changes.next().await {
                match c {
                    Change::Applied(p) => note(&p),
                    Change::Resynced => {
                        for p in informer.store().state() {
                            note(&p);
                        }
                    }
                    Change::Deleted(_) => {}
                }
            }
        });
        PodProgress {
            seen,
            _stop: stop.drop_guard(),
        }
    }

    /// How many pods have reached `stage`.
    pub fn count(&self, stage: Stage) -> usize {
        self.seen.lock().names[stage as usize].len()
    }

    /// Waits until `n` pods have reached `stage`; returns when the last of them did.
    pub async fn wait(&self, stage: Stage, n: usize, within: Duration) -> anyhow::Result<Instant> {
        let deadline = Instant::now() + within;
        loop {
            {
                let g = self.seen.lock();
                let i = stage as usize;
                if g.names[i].len() >= n {
                    return Ok(g.last[i].unwrap_or_else(Instant::now));
                }
                if Instant::now() > deadline {
                    anyhow::bail!(
                        "only {} of {n} pods reached {stage:?} within {within:?}",
                        g.names[i].len()
                    );
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Sends `total` creates over `clients` concurrent workers, 30 s at most, `request(i)` being
/// the i-th; answers the creates per second that were answered 201.
pub async fn creates_per_second<F>(clients: usize, total: usize, request: F) -> f64
where
    F: Fn(usize) -> reqwest::RequestBuilder + Send + Sync + 'static,
{
    let request = Arc::new(request);
    let next = Arc::new(AtomicUsize::new(0));
    let ok = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (request, next, ok) = (request.clone(), next.clone(), ok.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total || start.elapsed() > Duration::from_secs(30) {
                    break;
                }
                if matches!(request(i).send().await, Ok(r) if r.status() == 201) {
                    ok.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    ok.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

/// The median of `values`, and it as a table cell: `median (min–max)` with `digits` decimals.
pub fn median_range(values: impl IntoIterator<Item = f64>, digits: usize) -> (f64, String) {
    let mut v: Vec<f64> = values.into_iter().collect();
    v.sort_by(|a, b| a.total_cmp(b));
    let median = (v[(v.len() - 1) / 2] + v[v.len() / 2]) / 2.0;
    let cell = format!(
        "{median:.digits$} ({:.digits$}–{:.digits$})",
        v[0],
        v[v.len() - 1]
    );
    (median, cell)
}
