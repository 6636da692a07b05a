//! Probes and the handlers they share with lifecycle hooks: `exec` (through the runtime),
//! `httpGet`, `tcpSocket` and `grpc`. Each running container with probes gets one prober task
//! that runs its startup probe until it succeeds, then its liveness and readiness probes, each
//! on its own timing (`initialDelaySeconds`, `periodSeconds`, `timeoutSeconds`,
//! `successThreshold`, `failureThreshold`), and tells the pod's worker when a result changes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    Container, ExecAction, GRPCAction, HTTPGetAction, ObjectReference, Probe, TCPSocketAction,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use parking_lot::Mutex;
use skiff_client::events::Recorder;
use skiff_proto::cri;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::cri::Runtime;

/// What a handler runs against.
#[derive(Clone)]
pub struct Target {
    /// The runtime (for `exec`).
    pub runtime: Runtime,
    /// The container's id.
    pub container_id: String,
    /// The address `httpGet`, `tcpSocket` and `grpc` reach by default (the pod's IP).
    pub host: String,
    /// The container, for named ports.
    pub container: Container,
}

/// The port a probe names, a number or one of the container's named ports.
fn port(t: &Target, p: &IntOrString) -> Result<u16, String> {
    match p {
        IntOrString::Int(n) => u16::try_from(*n).map_err(|_| format!("invalid port {n}")),
        IntOrString::String(name) => {
            if let Ok(n) = name.parse::<u16>() {
                return Ok(n);
            }
            t.container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .and_then(|p| u16::try_from(p.container_port).ok())
                .ok_or_else(|| format!("couldn't find port {name:?} in container"))
        }
    }
}

/// Runs a command in the container; success is exit code 0.
pub async fn exec(t: &Target, a: &ExecAction, timeout: Duration) -> Result<String, String> {
    let r = t
        .runtime
        .runtime
        .clone()
        .exec_sync(cri::ExecSyncRequest {
            container_id: t.container_id.clone(),
            cmd: a.command.clone().unwrap_or_default(),
            timeout: timeout.as_secs().max(1) as i64,
        })
        .await
        .map_err(|e| e.message().to_string())?
        .into_inner();
    let mut out = String::from_utf8_lossy(&r.stdout).into_owned();
    out.push_str(&String::from_utf8_lossy(&r.stderr));
    if r.exit_code == 0 {
        Ok(out)
    } else {
        Err(if out.is_empty() {
            format!(
                "command {:?} exited with {}",
                a.command.clone().unwrap_or_default(),
                r.exit_code
            )
        } else {
            out
        })
    }
}

/// The one HTTP client of every probe and hook: certificates unchecked and no connection kept
/// between checks, as Kubernetes probes.
fn probe_client() -> Result<&'static reqwest::Client, String> {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    if let Some(c) = CLIENT.get() {
        return Ok(c);
    }
    let c = reqwest::Client::builder()
        .tls_danger_accept_invalid_certs(true)
        .pool_max_idle_per_host(0)
        .user_agent(format!(
            "kube-probe/{}",
            crate::KUBELET_VERSION.trim_start_matches('v')
        ))
        .build()
        .map_err(|e| e.to_string())?;
    Ok(CLIENT.get_or_init(|| c))
}

/// An HTTP GET; success is a status from 200 to 399.
pub async fn http_get(t: &Target, a: &HTTPGetAction, timeout: Duration) -> Result<String, String> {
    let scheme = a.scheme.as_deref().unwrap_or("HTTP").to_ascii_lowercase();
    let host = a
        .host
        .clone()
        .filter(|h| !h.is_empty())
        .unwrap_or(t.host.clone());
    let port = port(t, &a.port)?;
    let path = a.path.clone().unwrap_or_else(|| "/".into());
    let path = if path.starts_with('/') {
        path
    } else {
        format!("/{path}")
    };
    let host_part = if host.contains(':') {
        format!("[{host}]")
    } else {
        host
    };
    let url = format!("{scheme}://{host_part}:{port}{path}");
    let mut req = probe_client()?.get(&url).timeout(timeout);
    for h in a.http_headers.iter().flatten() {
        req = req.header(h.name.as_str(), h.value.as_str());
    }
    let resp = req
        .send()
        .await
        .map_err(|e| format!("Get {url:?}: {}", skiff_http::error_chain(&e)))?;
    let code = resp.status();
    if code.as_u16() >= 200 && code.as_u16() < 400 {
        Ok(String::new())
    } else {
        Err(format!(
            "HTTP probe failed with statuscode: {}",
            code.as_u16()
        ))
    }
}

/// A TCP connection; success is being able to connect.
pub async fn tcp(t: &Target, a: &TCPSocketAction, timeout: Duration) -> Result<String, String> {
    let host = a
        .host
        .clone()
        .filter(|h| !h.is_empty())
        .unwrap_or(t.host.clone());
    let port = port(t, &a.port)?;
    let addr = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(&addr)).await {
        Ok(Ok(_)) => Ok(String::new()),
        Ok(Err(e)) => Err(format!("dial tcp {addr}: {e}")),
        Err(_) => Err(format!("dial tcp {addr}: i/o timeout")),
    }
}

/// A gRPC health check (`grpc.health.v1.Health/Check`); success is `SERVING`.
pub async fn grpc(t: &Target, a: &GRPCAction, timeout: Duration) -> Result<String, String> {
    let addr = format!("http://{}:{}", t.host, a.port);
    let fut = async {
        let channel = tonic::transport::Endpoint::from_shared(addr.clone())
            .map_err(|e| e.to_string())?
            .connect()
            .await
            .map_err(|e| format!("failed to connect service {addr:?}: {e}"))?;
        let mut c = tonic_health::pb::health_client::HealthClient::new(channel);
        let r = c
            .check(tonic_health::pb::HealthCheckRequest {
                service: a.service.clone().unwrap_or_default(),
            })
            .await
            .map_err(|e| format!("health rpc failed: {}", e.message()))?
            .into_inner();
        if r.status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32 {
            Ok(String::new())
        } else {
            Err(format!(
                "service unhealthy (responded with {:?})",
                r.status()
            ))
        }
    };
    tokio::time::timeout(timeout, fut)
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "timeout: health rpc did not complete within {timeout:?}"
            ))
        })
}

/// Runs a probe's handler once.
pub async fn run_probe(t: &Target, p: &Probe) -> Result<String, String> {
    let timeout = Duration::from_secs(p.timeout_seconds.unwrap_or(1).max(1) as u64);
    if let Some(a) = &p.exec {
        exec(t, a, timeout).await
    } else if let Some(a) = &p.http_get {
        http_get(t, a, timeout).await
    } else if let Some(a) = &p.tcp_socket {
        tcp(t, a, timeout).await
    } else if let Some(a) = &p.grpc {
        grpc(t, a, timeout).await
    } else {
        Err("probe has no handler".into())
    }
}

/// What the probes of one container instance found so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Results {
    /// The startup probe succeeded (or there is none).
    pub started: bool,
    /// The readiness probe succeeds (or there is none).
    pub ready: bool,
    /// Set once the liveness or startup probe failed: the container must be restarted.
    pub failed: Option<Failure>,
}

/// A failed liveness or startup probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// `Liveness` or `Startup`.
    pub probe: &'static str,
    /// The probe's own grace period, when it sets one.
    pub grace: Option<i64>,
}

/// The probers of one pod, by container id.
#[derive(Default)]
pub struct Probers {
    running: HashMap<String, CancellationToken>,
    results: Arc<Mutex<HashMap<String, Results>>>,
}

/// Where events about a container go.
#[derive(Clone)]
pub struct EventTarget {
    /// The recorder.
    pub recorder: Recorder,
    /// The pod, with `fieldPath` naming the container.
    pub object: ObjectReference,
}

impl Probers {
    /// The results for a container instance (`started` and `ready` true when it has no probes).
    pub fn results(&self, id: &str, c: &Container) -> Results {
        self.results.lock().get(id).cloned().unwrap_or(Results {
            started: c.startup_probe.is_none(),
            ready: c.readiness_probe.is_none() && c.startup_probe.is_none(),
            failed: None,
        })
    }

    /// Starts the prober of a running container instance unless it runs already. `started_at`
    /// is when the container started; `wake` is told about every change of results.
    pub fn ensure(
        &mut self,
        t: Target,
        started_at: Instant,
        events: EventTarget,
        wake: Arc<Notify>,
        parent: &CancellationToken,
    ) {
        let c = &t.container;
        if c.startup_probe.is_none() && c.liveness_probe.is_none() && c.readiness_probe.is_none() {
            return;
        }
        if self.running.contains_key(&t.container_id) {
            return;
        }
        let stop = parent.child_token();
        self.running.insert(t.container_id.clone(), stop.clone());
        self.results.lock().insert(
            t.container_id.clone(),
            Results {
                started: c.startup_probe.is_none(),
                ready: false,
                failed: None,
            },
        );
        let results = self.results.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = probe_container(t, started_at, events, results, wake) => {}
            }
        });
    }

    /// Stops the probers of instances not in `keep` and forgets their results.
    pub fn retain(&mut self, keep: &std::collections::HashSet<String>) {
        self.running.retain(|id, stop| {
            let k = keep.contains(id);
            if !k {
                stop.cancel();
            }
            k
        });
        self.results.lock().retain(|id, _| keep.contains(id));
    }
}

/// Runs a startup (`stop_on_success`) or liveness probe until it succeeds once, or fails
/// `failureThreshold` times in a row: then returns `Some` with the probe's own grace period.
async fn until_settled(
    t: &Target,
    p: &Probe,
    started_at: Instant,
    name: &str,
    events: &EventTarget,
    stop_on_success: bool,
) -> Option<Option<i64>> {
    let (delay, period, _, failures) = settings(p);
    tokio::time::sleep_until(started_at + delay).await;
    let mut failed = 0;
    loop {
        match run_probe(t, p).await {
            Ok(_) if stop_on_success => return None,
            Ok(_) => failed = 0,
            Err(msg) => {
                failed += 1;
                events.recorder.warning(
                    events.object.clone(),
                    "Unhealthy",
                    "Probing",
                    format!("{name} probe failed: {msg}"),
                );
                if failed >= failures {
                    return Some(p.termination_grace_period_seconds);
                }
            }
        }
        tokio::time::sleep(period).await;
    }
}

/// A probe's timing; an unset or 0 field has Kubernetes' default (the API server fills them
/// in, but a pod may predate that).
fn settings(p: &Probe) -> (Duration, Duration, u32, u32) {
    let or = |v: Option<i32>, default: i32| v.filter(|v| *v > 0).unwrap_or(default);
    (
        Duration::from_secs(p.initial_delay_seconds.unwrap_or(0).max(0) as u64),
        Duration::from_secs(or(p.period_seconds, 10) as u64),
        or(p.success_threshold, 1) as u32,
        or(p.failure_threshold, 3) as u32,
    )
}

async fn probe_container(
    t: Target,
    started_at: Instant,
    events: EventTarget,
    results: Arc<Mutex<HashMap<String, Results>>>,
    wake: Arc<Notify>,
) {
    let id = t.container_id.clone();
    let update = |f: &dyn Fn(&mut Results)| {
        let mut r = results.lock();
        if let Some(cur) = r.get_mut(&id) {
            let before = cur.clone();
            f(cur);
            if *cur != before {
                wake.notify_one();
            }
        }
    };
    if let Some(p) = t.container.startup_probe.clone() {
        match until_settled(&t, &p, started_at, "Startup", &events, true).await {
            Some(grace) => {
                update(&|r| {
                    r.failed = Some(Failure {
                        probe: "Startup",
                        grace,
                    })
                });
                return;
            }
            None => update(&|r| r.started = true),
        }
    }
    let liveness = async {
        let Some(p) = t.container.liveness_probe.clone() else {
            return;
        };
        if let Some(grace) = until_settled(&t, &p, started_at, "Liveness", &events, false).await {
            update(&|r| {
                r.failed = Some(Failure {
                    probe: "Liveness",
                    grace,
                })
            });
        }
    };
    let readiness = async {
        let Some(p) = t.container.readiness_probe.clone() else {
            update(&|r| r.ready = true);
            return;
        };
        let (delay, period, successes, failures) = settings(&p);
        tokio::time::sleep_until(started_at + delay).await;
        let (mut ok, mut failed) = (0, 0);
        loop {
            match run_probe(&t, &p).await {
                Ok(_) => {
                    ok += 1;
                    failed = 0;
                    if ok >= successes {
                        update(&|r| r.ready = true);
                    }
                }
                Err(msg) => {
                    failed += 1;
                    ok = 0;
                    events.recorder.warning(
                        events.object.clone(),
                        "Unhealthy",
                        "Probing",
                        format!("Readiness probe failed: {msg}"),
                    );
                    if failed >= failures {
                        update(&|r| r.ready = false);
                    }
                }
            }
            tokio::time::sleep(period).await;
        }
    };
    tokio::join!(liveness, readiness);
    // Liveness failed: the container is being restarted; nothing more to find out.
    std::future::pending::<()>().await;
}
