//! One pod's worker: the only task that acts on the pod. Its life is a small state machine —
//!
//! ```text
//! Running ──(deleted / activeDeadlineSeconds)──► Terminating ──► Finished ──(deleted)──► Removed
//!    └──────(every container done, restartPolicy says stop)──────────┘
//! ```
//!
//! In `Running` each sync compares the pod as declared with what the runtime has (so a
//! restarted kubelet adopts what runs, and a vanished sandbox is made anew): volumes, the
//! sandbox, init containers in order (sidecars kept running), then the containers, restarted as
//! `restartPolicy` says with Kubernetes' crash-loop back-off, and killed when a liveness or
//! startup probe fails. `Terminating` runs `preStop` hooks and stops containers within the
//! grace period, sidecars last, then the sandbox (which releases the IP). A deleted pod's
//! sandbox, volumes and cgroup are removed and the pod object is deleted for good. After each
//! sync the status is written — only when it changed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::{Container, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::Value;
use skiff_client::events::reference;
use skiff_client::{Api, DeleteParams, Patch, PatchParams};
use skiff_proto::cri;
use skiff_rules::Backoff;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::container::{self, Instance};
use super::env::{self, PodFacts, Sources};
use super::probes::{EventTarget, Probers, Target};
use super::resize::{self, Resizes};
use super::sandbox::{self, Sandbox};
use super::status::{self, Snapshot};
use super::volumes::{self, Ready};
use super::{cgroups, dns, hooks, pod_key, Shared};

/// Kubernetes' crash-loop back-off: 10 s doubling to 5 minutes.
const BACKOFF: Backoff = Backoff::exponential(Duration::from_secs(10), Duration::from_secs(300));
/// A container that ran this long before exiting starts its back-off afresh.
const BACKOFF_RESET: Duration = Duration::from_secs(600);
/// How soon a sync that failed on a runtime or API error is tried again.
const RETRY: Duration = Duration::from_secs(1);

/// Where the pod is in its life on this node.
#[derive(Debug, Clone, PartialEq)]
enum State {
    /// Kept as declared.
    Running,
    /// Being stopped; `grace` seconds for it.
    Terminating {
        /// The grace period.
        grace: i64,
    },
    /// Stopped for good with this phase; waits for the pod to be deleted.
    Finished {
        /// `Succeeded` or `Failed`.
        phase: &'static str,
    },
    /// Cleaned up and the pod object deleted: the worker ends.
    Removed,
}

/// Per container name: why it waits and its restart back-off.
#[derive(Debug, Default, Clone)]
struct Track {
    waiting: Option<(String, String)>,
    retry_at: Option<Instant>,
    backoff: Option<Duration>,
}

/// A pod's worker.
pub struct Worker {
    shared: Shared,
    updates: watch::Receiver<Arc<Pod>>,
    poke: Arc<Notify>,
    gone: CancellationToken,
    pod: Arc<Pod>,
    uid: String,
    state: State,
    sandbox: Option<Sandbox>,
    statuses: HashMap<String, cri::ContainerStatus>,
    instances: HashMap<String, Vec<Instance>>,
    tracks: HashMap<String, Track>,
    probers: Probers,
    probe_stop: CancellationToken,
    volumes: BTreeMap<String, Ready>,
    volumes_synced: Option<Instant>,
    /// Woken when one of the pod's service-account tokens was renewed.
    token_renewals: Arc<Notify>,
    /// The volumes are to be written again at the next sync (a token was renewed).
    volumes_due: bool,
    start_time: Option<Time>,
    reason: Option<(String, String)>,
    written: Option<Value>,
    initialized: bool,
    /// Restart counts carried over from a dead sandbox's containers.
    restart_base: HashMap<String, u32>,
    gone_seen: bool,
    /// In-place resizes: allocated and applied resources.
    resizes: Resizes,
    /// The kubelet's admission passed (or the pod ran before it looked).
    admitted: bool,
    /// The kubelet refused the pod: its status is only this phase, reason and message.
    rejected: bool,
}

enum Step {
    /// Look again at this instant (or sooner when something changes).
    At(Instant),
    /// The worker is done.
    Done,
}

impl Worker {
    /// A worker for the pod `updates` carries; `poke` wakes it when the runtime's view of it
    /// changed; `gone` is cancelled once the pod object no longer exists.
    pub fn new(
        shared: Shared,
        updates: watch::Receiver<Arc<Pod>>,
        poke: Arc<Notify>,
        gone: CancellationToken,
    ) -> Self {
        let pod = updates.borrow().clone();
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let state = match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
            Some("Succeeded") => State::Finished { phase: "Succeeded" },
            Some("Failed") => State::Finished { phase: "Failed" },
            _ => State::Running,
        };
        let start_time = pod.status.as_ref().and_then(|s| s.start_time.clone());
        let token_renewals = shared.tokens.renewals(&uid);
        // A finished pod keeps the reason it finished with, and one the kubelet refused (a
        // reason but no containers) its short status, across kubelet restarts.
        let finished = matches!(state, State::Finished { .. });
        let reason = pod
            .status
            .as_ref()
            .filter(|_| finished)
            .and_then(|s| Some((s.reason.clone()?, s.message.clone().unwrap_or_default())));
        let rejected = reason.is_some()
            && pod
                .status
                .as_ref()
                .is_some_and(|s| s.container_statuses.as_ref().is_none_or(|c| c.is_empty()));
        Worker {
            shared,
            updates,
            poke,
            gone,
            pod,
            uid,
            state,
            sandbox: None,
            statuses: HashMap::new(),
            instances: HashMap::new(),
            tracks: HashMap::new(),
            probers: Probers::default(),
            probe_stop: CancellationToken::new(),
            volumes: BTreeMap::new(),
            volumes_synced: None,
            token_renewals,
            volumes_due: false,
            start_time,
            reason,
            written: None,
            initialized: false,
            restart_base: HashMap::new(),
            gone_seen: false,
            resizes: Resizes::default(),
            admitted: false,
            rejected,
        }
    }

    /// Runs until the pod is removed, or until `shutdown` (containers keep running then).
    pub async fn run(mut self, shutdown: CancellationToken) {
        loop {
            let next = self.step().await;
            let at = match next {
                Step::Done => break,
                Step::At(at) => at,
            };
            let gone = self.gone.clone();
            let renewals = self.token_renewals.clone();
            tokio::select! {
                _ = shutdown.cancelled() => break,
                r = self.updates.changed() => {
                    if r.is_err() {
                        break;
                    }
                    self.pod = self.updates.borrow_and_update().clone();
                }
                _ = self.poke.notified() => {}
                _ = renewals.notified() => self.volumes_due = true,
                _ = gone.cancelled(), if !self.gone_seen => self.gone_seen = true,
                _ = tokio::time::sleep_until(at) => {}
            }
        }
        self.probe_stop.cancel();
        if self.state == State::Removed {
            self.shared.allocations.forget(&self.uid);
        }
    }

    fn key(&self) -> String {
        pod_key(&self.pod)
    }

    /// The newest instance of container `name`.
    fn latest(&self, name: &str) -> Option<&Instance> {
        self.instances.get(name).and_then(|l| l.first())
    }

    fn deleting(&self) -> bool {
        self.gone.is_cancelled() || self.pod.metadata.deletion_timestamp.is_some()
    }

    fn restart_policy(&self) -> String {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.clone())
            .unwrap_or_else(|| "Always".into())
    }

    async fn step(&mut self) -> Step {
        let now = Instant::now();
        match self.state.clone() {
            State::Running => {
                if self.deleting() {
                    let grace = self.grace();
                    self.state = State::Terminating { grace };
                    return Step::At(now);
                }
                if !self.admitted {
                    // As the kubelet's admission handlers: a pod that may not run here fails
                    // before anything of it is made.
                    if let Err(msg) = self.shared.config.sysctls.admit(&self.pod) {
                        let reason = skiff_rules::sysctl::FORBIDDEN_REASON;
                        self.event_warning(None, reason, msg.clone());
                        self.reason = Some((reason.into(), format!("Pod was rejected: {msg}")));
                        self.rejected = true;
                        self.state = State::Finished { phase: "Failed" };
                        self.write_status().await;
                        return Step::At(now);
                    }
                    self.admitted = true;
                }
                if let Some(left) = self.deadline_left() {
                    if left.is_zero() {
                        let msg = "Pod was active on the node longer than the specified deadline";
                        self.reason = Some(("DeadlineExceeded".into(), msg.into()));
                        self.event_warning(None, "DeadlineExceeded", msg.into());
                        let grace = self.spec_grace();
                        self.state = State::Terminating { grace };
                        return Step::At(now);
                    }
                }
                let next = match self.sync().await {
                    Ok(next) => next,
                    Err(e) => {
                        tracing::warn!(pod = %self.key(), error = %e, "pod sync failed; retrying");
                        now + RETRY
                    }
                };
                self.write_status().await;
                let next = match self.deadline_left() {
                    Some(left) => next.min(now + left),
                    None => next,
                };
                Step::At(next)
            }
            State::Terminating { grace } => match self.terminate(grace).await {
                Ok(()) => {
                    let phase = self.final_phase();
                    self.state = State::Finished { phase };
                    self.write_status().await;
                    Step::At(now)
                }
                Err(e) => {
                    tracing::warn!(pod = %self.key(), error = %e, "stopping the pod failed; retrying");
                    Step::At(now + RETRY)
                }
            },
            State::Finished { .. } => {
                if self.deleting() {
                    match self.remove().await {
                        Ok(()) => {
                            self.state = State::Removed;
                            return Step::Done;
                        }
                        Err(e) => {
                            tracing::warn!(pod = %self.key(), error = %e, "removing the pod failed; retrying");
                            return Step::At(now + RETRY);
                        }
                    }
                }
                // A finished pod's sandbox is stopped (its IP released); the containers stay
                // for their logs until the pod is deleted.
                if let Err(e) = self.settle_finished().await {
                    tracing::warn!(pod = %self.key(), error = %e, "stopping a finished pod failed; retrying");
                    return Step::At(now + RETRY);
                }
                self.write_status().await;
                Step::At(now + self.shared.config.sync_frequency)
            }
            State::Removed => Step::Done,
        }
    }

    fn spec_grace(&self) -> i64 {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds)
            .unwrap_or(30)
    }

    fn grace(&self) -> i64 {
        self.pod
            .metadata
            .deletion_grace_period_seconds
            .unwrap_or_else(|| self.spec_grace())
            .max(0)
    }

    fn deadline_left(&self) -> Option<Duration> {
        let ads = self.pod.spec.as_ref()?.active_deadline_seconds?;
        let start = self.start_time.as_ref()?;
        let end = start.0.as_second() + ads;
        let now = skiff_client::time::now().as_second();
        Some(Duration::from_secs((end - now).max(0) as u64))
    }

    fn final_phase(&self) -> &'static str {
        if self.reason.is_some() {
            return "Failed";
        }
        let spec = self.pod.spec.clone().unwrap_or_default();
        // A pod stopped from outside ends Failed unless every container had succeeded.
        let all_succeeded = spec.containers.iter().all(|c| {
            self.latest(&c.name)
                .is_some_and(|i| i.exited() && i.status.exit_code == 0)
        });
        if all_succeeded && self.restart_policy() != "Always" {
            "Succeeded"
        } else {
            "Failed"
        }
    }

    fn object(&self, container: Option<&Container>) -> ObjectReference {
        let mut r = reference(self.pod.as_ref());
        if let Some(c) = container {
            let is_init = self
                .pod
                .spec
                .as_ref()
                .and_then(|s| s.init_containers.as_ref())
                .is_some_and(|ics| ics.iter().any(|i| i.name == c.name));
            r.field_path = Some(if is_init {
                format!("spec.initContainers{{{}}}", c.name)
            } else {
                format!("spec.containers{{{}}}", c.name)
            });
        }
        r
    }

    fn event_normal(&self, c: Option<&Container>, reason: &str, message: String) {
        self.shared
            .recorder
            .normal(self.object(c), reason, reason, message);
    }

    fn event_warning(&self, c: Option<&Container>, reason: &str, message: String) {
        self.shared
            .recorder
            .warning(self.object(c), reason, reason, message);
    }

    fn facts(&self) -> PodFacts {
        PodFacts {
            pod_ips: self
                .sandbox
                .as_ref()
                .map(|s| s.ips.clone())
                .unwrap_or_default(),
            host_ip: self.shared.config.node_ip.clone(),
        }
    }

    /// One pass of keeping the pod as declared; returns when to look again.
    async fn sync(&mut self) -> anyhow::Result<Instant> {
        let now = Instant::now();
        if self.start_time.is_none() {
            self.start_time = Some(skiff_client::time::now_time());
        }
        let ns = self.pod.metadata.namespace.clone().unwrap_or_default();
        let mut sources = Sources::new(self.shared.client.clone(), &ns);
        // Volumes: made before the sandbox, refreshed every sync period.
        let refresh = self.volumes_due
            || self
                .volumes_synced
                .is_none_or(|t| now.duration_since(t) >= self.shared.config.sync_frequency);
        if refresh {
            match volumes::setup(
                &self.pod,
                &self.shared.config,
                &mut sources,
                &self.shared.tokens,
                &self.facts(),
                &self.shared.claims,
            )
            .await
            {
                Ok(mut v) => {
                    if let Err(e) = self.image_volumes(&mut v).await {
                        self.event_warning(None, "FailedMount", e);
                        return Ok(now + Duration::from_secs(2));
                    }
                    self.volumes = v;
                    self.volumes_synced = Some(now);
                    self.volumes_due = false;
                }
                Err(e) => {
                    if self.volumes_synced.is_none() {
                        self.event_warning(None, "FailedMount", e.0.clone());
                        return Ok(now + Duration::from_secs(2));
                    }
                    tracing::warn!(pod = %self.key(), error = %e, "refreshing volumes");
                }
            }
        }
        let fresh = self.ensure_sandbox().await?;
        let Some(sb) = self.sandbox.clone() else {
            return Ok(now + RETRY);
        };
        // A sandbox made just now has no containers: nothing to ask the runtime.
        if !fresh {
            self.observe(&sb).await?;
        }
        let mut next = now + self.shared.config.sync_frequency;
        let mut acted = self.handle_probe_failures().await?;
        acted |= self.resize(&sb).await?;
        let spec = self.pod.spec.clone().unwrap_or_default();
        let policy = self.restart_policy();
        // Init containers, in order, until one is not done yet.
        let inits = spec.init_containers.clone().unwrap_or_default();
        let regular_started = spec
            .containers
            .iter()
            .any(|c| self.instances.contains_key(&c.name));
        let mut initialized = true;
        let mut init_failed = false;
        for ic in &inits {
            let sidecar = ic.restart_policy.as_deref() == Some("Always");
            let latest = self.latest(&ic.name).cloned();
            if sidecar {
                match &latest {
                    Some(l) if l.running() => {
                        if !self.probers.results(&l.status.id, ic).started && !regular_started {
                            initialized = false;
                            break;
                        }
                    }
                    _ => {
                        let (did, at) = self
                            .start_or_restart(&sb, ic, latest.as_ref(), "Always", &mut sources)
                            .await;
                        acted |= did;
                        next = next.min(at);
                        if !regular_started {
                            initialized = false;
                            break;
                        }
                    }
                }
                continue;
            }
            if regular_started {
                continue;
            }
            match &latest {
                Some(l) if l.exited() && l.status.exit_code == 0 => continue,
                Some(l) if l.running() => {
                    initialized = false;
                    break;
                }
                _ => {
                    let init_policy = if policy == "Never" {
                        "Never"
                    } else {
                        "OnFailure"
                    };
                    if latest.as_ref().is_some_and(|l| l.exited()) && init_policy == "Never" {
                        init_failed = true;
                        initialized = false;
                        break;
                    }
                    let (did, at) = self
                        .start_or_restart(&sb, ic, latest.as_ref(), init_policy, &mut sources)
                        .await;
                    acted |= did;
                    next = next.min(at);
                    initialized = false;
                    break;
                }
            }
        }
        self.initialized = initialized;
        if initialized {
            for c in &spec.containers {
                let latest = self.latest(&c.name).cloned();
                // A changed spec (in practice: a new image) restarts the container.
                if let Some(l) = latest.as_ref().filter(|l| l.running()) {
                    if l.hash != container::spec_hash(c) {
                        self.event_normal(
                            Some(c),
                            "Killing",
                            format!("Container {} definition changed, will be restarted", c.name),
                        );
                        container::stop(&self.shared.runtime, &l.status.id, self.spec_grace())
                            .await?;
                        acted = true;
                        continue;
                    }
                    continue;
                }
                let (did, at) = self
                    .start_or_restart(&sb, c, latest.as_ref(), &policy, &mut sources)
                    .await;
                acted |= did;
                next = next.min(at);
            }
            // Ephemeral containers run once, when added, and are never restarted.
            for (c, _) in super::ephemeral_containers(&self.pod) {
                let latest = self.latest(&c.name).cloned();
                let (did, at) = self
                    .start_or_restart(&sb, &c, latest.as_ref(), "Never", &mut sources)
                    .await;
                acted |= did;
                next = next.min(at);
            }
        }
        if acted {
            self.observe(&sb).await?;
        }
        // Finished: every container exited and none restarts (or an init container failed).
        let done = init_failed
            || (initialized
                && policy != "Always"
                && spec.containers.iter().all(|c| {
                    self.latest(&c.name).is_some_and(|l| {
                        l.exited() && (policy == "Never" || l.status.exit_code == 0)
                    })
                }));
        if done {
            let phase = if init_failed {
                "Failed"
            } else {
                let failed = spec.containers.iter().any(|c| {
                    self.latest(&c.name)
                        .is_some_and(|l| l.status.exit_code != 0)
                });
                if failed {
                    "Failed"
                } else {
                    "Succeeded"
                }
            };
            self.state = State::Finished { phase };
            return Ok(now);
        }
        for t in self.tracks.values() {
            if let Some(at) = t.retry_at {
                next = next.min(at.max(now + Duration::from_millis(50)));
            }
        }
        Ok(next)
    }

    /// Finds or makes the pod's sandbox; `true` when it made a new one.
    async fn ensure_sandbox(&mut self) -> anyhow::Result<bool> {
        let rt = self.shared.runtime.clone();
        let cfg = self.shared.config.clone();
        let existing = sandbox::list(&rt, &self.uid).await?;
        let ready = existing
            .iter()
            .find(|s| s.state == cri::PodSandboxState::SandboxReady as i32);
        if let Some(s) = ready {
            if self.sandbox.as_ref().map(|x| &x.id) != Some(&s.id) {
                // Adopted (after a kubelet restart) or first seen.
                let ips = sandbox::pod_ips(&rt, &self.pod, &s.id, &cfg.node_ip).await?;
                let attempt = s.metadata.as_ref().map(|m| m.attempt).unwrap_or(0);
                self.sandbox = Some(Sandbox {
                    id: s.id.clone(),
                    ips,
                    config: sandbox::config(&self.pod, attempt, &cfg),
                });
                self.write_hosts_file()?;
            }
            // Older, dead sandboxes of the pod go.
            for old in existing.iter().filter(|o| o.id != s.id) {
                sandbox::remove(&rt, &old.id).await?;
            }
            return Ok(false);
        }
        // None running: a new one (attempt after the newest), the dead ones removed. Their
        // containers' restart counts carry over.
        let attempt = existing
            .first()
            .and_then(|s| s.metadata.as_ref())
            .map(|m| m.attempt + 1)
            .unwrap_or(0);
        if let Some(old) = &self.sandbox {
            self.event_normal(
                None,
                "SandboxChanged",
                "Pod sandbox changed, it will be killed and re-created.".into(),
            );
            tracing::info!(pod = %self.key(), sandbox = %old.id, "the pod's sandbox died; making a new one");
        }
        for old in &existing {
            let mut cache = HashMap::new();
            if let Ok(list) = container::instances(&rt, &self.uid, &old.id, &mut cache).await {
                for (name, l) in list {
                    if let Some(i) = l.first() {
                        let base = self.restart_base.entry(name).or_default();
                        *base = (*base).max(i.restart + 1);
                    }
                }
            }
            sandbox::remove(&rt, &old.id).await?;
        }
        self.sandbox = None;
        self.statuses.clear();
        self.instances.clear();
        let config = sandbox::config(&self.pod, attempt, &cfg);
        let handler = match self.shared.runtime_classes.handler(&self.pod).await {
            Ok(h) => h,
            Err(e) => {
                self.event_warning(
                    None,
                    "FailedCreatePodSandBox",
                    format!("Failed to create pod sandbox: {e}"),
                );
                return Err(e.into());
            }
        };
        let id = match sandbox::run(&rt, config.clone(), &handler).await {
            Ok(id) => id,
            Err(e) => {
                self.event_warning(
                    None,
                    "FailedCreatePodSandBox",
                    format!("Failed to create pod sandbox: {}", sandbox::rpc_error(&e)),
                );
                return Err(e.into());
            }
        };
        let ips = sandbox::pod_ips(&rt, &self.pod, &id, &cfg.node_ip).await?;
        self.sandbox = Some(Sandbox { id, ips, config });
        self.write_hosts_file()?;
        Ok(true)
    }

    fn hosts_path(&self) -> std::path::PathBuf {
        self.shared.config.pod_dir(&self.uid).join("etc-hosts")
    }

    fn write_hosts_file(&self) -> anyhow::Result<()> {
        let path = self.hosts_path();
        std::fs::create_dir_all(path.parent().unwrap_or(&path))?;
        let text = if sandbox::host_network(&self.pod) {
            dns::host_network_hosts_file(&self.pod)
        } else {
            let ips = self
                .sandbox
                .as_ref()
                .map(|s| s.ips.clone())
                .unwrap_or_default();
            dns::hosts_file(&self.pod, &ips, &self.shared.config.cluster_domain)
        };
        std::fs::write(&path, text)?;
        Ok(())
    }

    /// Reads the pod's containers from the runtime; starts probers for running ones and prunes
    /// dead instances beyond the newest two of each container.
    async fn observe(&mut self, sb: &Sandbox) -> anyhow::Result<()> {
        let rt = self.shared.runtime.clone();
        self.instances = container::instances(&rt, &self.uid, &sb.id, &mut self.statuses).await?;
        let specs: HashMap<String, Container> = super::all_containers(&self.pod)
            .map(|c| (c.name.clone(), c.clone()))
            .collect();
        let mut running = HashSet::new();
        let mut start = Vec::new();
        for (name, list) in &mut self.instances {
            if list.len() > 2 {
                for old in list.drain(2..) {
                    container::remove(&rt, &old.status.id).await?;
                }
            }
            let Some(l) = list.first().filter(|l| l.running()) else {
                continue;
            };
            let Some(c) = specs.get(name) else {
                continue;
            };
            running.insert(l.status.id.clone());
            start.push((c.clone(), l.status.id.clone(), l.status.started_at));
        }
        for (c, id, started_ns) in start {
            let age = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .saturating_sub(Duration::from_nanos(started_ns.max(0) as u64));
            let started_at = Instant::now().checked_sub(age).unwrap_or_else(Instant::now);
            let events = EventTarget {
                recorder: self.shared.recorder.clone(),
                object: self.object(Some(&c)),
            };
            let target = Target {
                runtime: rt.clone(),
                container_id: id,
                host: sb.ips.first().cloned().unwrap_or_default(),
                container: c,
            };
            self.probers.ensure(
                target,
                started_at,
                events,
                self.poke.clone(),
                &self.probe_stop,
            );
        }
        self.probers.retain(&running);
        Ok(())
    }

    /// Pulls the images of the pod's image volumes (as their `pullPolicy` says) and unpacks
    /// each once into the pod's volume directory, mounted read-only.
    async fn image_volumes(
        &mut self,
        out: &mut BTreeMap<String, volumes::Ready>,
    ) -> Result<(), String> {
        let vols: Vec<_> = self
            .pod
            .spec
            .iter()
            .flat_map(|s| s.volumes.iter().flatten())
            .filter_map(|v| v.image.clone().map(|i| (v.name.clone(), i)))
            .collect();
        for (name, src) in vols {
            let reference = src.reference.clone().unwrap_or_default();
            let dir = self
                .shared
                .config
                .pod_dir(&self.uid)
                .join("volumes")
                .join("kubernetes.io~image")
                .join(&name);
            let done = dir.with_extension("unpacked");
            if !done.exists() {
                let policy = src.pull_policy.clone().unwrap_or_default();
                match self.shared.images.ensure(&reference, &policy).await {
                    Ok(p) if p.pulled => self.event_normal(
                        None,
                        "Pulled",
                        format!(
                            "Successfully pulled image {reference:?} in {:.3}s",
                            p.took.as_secs_f64()
                        ),
                    ),
                    Ok(_) => {}
                    Err(e) => {
                        return Err(format!(
                            "MountVolume.SetUp failed for volume {name:?} : {}: {}",
                            e.reason, e.message
                        ))
                    }
                }
                self.shared
                    .images
                    .unpack(&reference, &dir)
                    .await
                    .map_err(|e| format!("MountVolume.SetUp failed for volume {name:?} : {e}"))?;
                std::fs::write(&done, reference.as_bytes())
                    .map_err(|e| format!("MountVolume.SetUp failed for volume {name:?} : {e}"))?;
            }
            out.insert(
                name,
                volumes::Ready {
                    host_path: dir,
                    read_only: true,
                },
            );
        }
        Ok(())
    }

    /// Allocates a resize of the pod's resources when the node can hold it, and applies what
    /// is allocated to the running containers: in place, or by a restart where the container's
    /// `resizePolicy` asks for one. Returns whether it stopped a container.
    async fn resize(&mut self, sb: &Sandbox) -> anyhow::Result<bool> {
        let cfg = &self.shared.config;
        let capacity = resize::Totals {
            cpu_millis: cfg.node_cpu_millis,
            memory: cfg.node_memory_bytes,
        };
        self.resizes
            .allocate(&self.pod, &self.uid, &self.shared.allocations, capacity);
        let mut stopped = false;
        for action in self.resizes.actions(&self.pod, &self.instances) {
            match action {
                resize::Action::Update { id, container: c } => {
                    let linux = cgroups::container_resources(&self.pod, &c, cfg.node_memory_bytes);
                    let r = self
                        .shared
                        .runtime
                        .runtime
                        .clone()
                        .update_container_resources(cri::UpdateContainerResourcesRequest {
                            container_id: id.clone(),
                            linux: Some(linux),
                            annotations: Default::default(),
                        })
                        .await;
                    match r {
                        Ok(_) => self.resizes.applied(&id, &c),
                        Err(e) => {
                            let msg = format!(
                                "updating resources of container {}: {}",
                                c.name,
                                e.message()
                            );
                            tracing::warn!(pod = %self.key(), "{msg}");
                            self.resizes.failed(msg);
                        }
                    }
                }
                resize::Action::Restart { id, name } => {
                    let c = super::all_containers(&self.pod)
                        .find(|c| c.name == name)
                        .cloned();
                    self.event_normal(
                        c.as_ref(),
                        "Killing",
                        format!("Container {name} resize requires restart"),
                    );
                    container::stop(&self.shared.runtime, &id, self.spec_grace()).await?;
                    stopped = true;
                }
            }
        }
        if stopped {
            // The restarted containers start in this same sync.
            self.observe(sb).await?;
        }
        Ok(stopped)
    }

    /// Kills containers whose liveness or startup probe failed.
    async fn handle_probe_failures(&mut self) -> anyhow::Result<bool> {
        let mut acted = false;
        let specs: Vec<Container> = super::all_containers(&self.pod).cloned().collect();
        for c in &specs {
            let Some(l) = self.latest(&c.name).filter(|l| l.running()).cloned() else {
                continue;
            };
            let r = self.probers.results(&l.status.id, c);
            if let Some(f) = r.failed {
                self.event_normal(
                    Some(c),
                    "Killing",
                    format!(
                        "Container {} failed {} probe, will be restarted",
                        c.name,
                        f.probe.to_lowercase()
                    ),
                );
                let grace = f.grace.unwrap_or_else(|| self.spec_grace());
                self.pre_stop(c, &l, grace).await;
                container::stop(&self.shared.runtime, &l.status.id, grace).await?;
                acted = true;
            }
        }
        Ok(acted)
    }

    /// Starts `c` if it has never run, or restarts it after it exited when `policy` says so
    /// and its back-off allows. Returns whether it acted and when to look again.
    async fn start_or_restart(
        &mut self,
        sb: &Sandbox,
        c: &Container,
        latest: Option<&Instance>,
        policy: &str,
        sources: &mut Sources,
    ) -> (bool, Instant) {
        let now = Instant::now();
        let far = now + self.shared.config.sync_frequency;
        let restart = match latest {
            None => self.restart_base.get(&c.name).copied().unwrap_or(0),
            Some(l) if l.running() => return (false, far),
            Some(l) if !l.exited() => {
                // Created but never started (a kubelet that died in between): start afresh.
                let _ = container::remove(&self.shared.runtime, &l.status.id).await;
                l.restart
            }
            Some(l) => {
                let wants = match policy {
                    "Always" => true,
                    "OnFailure" => l.status.exit_code != 0,
                    _ => false,
                };
                if !wants {
                    self.tracks.remove(&c.name);
                    return (false, far);
                }
                // Kubernetes' crash-loop back-off: the first restart at once, then 10 s,
                // 20 s, ... 5 min after the last exit; reset after a long run.
                let finished = ns_to_system(l.status.finished_at);
                let ran = ns_to_system(l.status.finished_at)
                    .duration_since(ns_to_system(l.status.started_at))
                    .unwrap_or_default();
                let since = SystemTime::now()
                    .duration_since(finished)
                    .unwrap_or_default();
                let t = self.tracks.entry(c.name.clone()).or_default();
                if ran >= BACKOFF_RESET {
                    t.backoff = None;
                }
                match t.backoff {
                    Some(d) if since < d => {
                        t.waiting = Some((
                            "CrashLoopBackOff".into(),
                            format!(
                                "back-off {} restarting failed container={} pod={}_{}({})",
                                human(d),
                                c.name,
                                self.pod.metadata.name.as_deref().unwrap_or_default(),
                                self.pod.metadata.namespace.as_deref().unwrap_or_default(),
                                self.uid
                            ),
                        ));
                        let at = now + (d - since);
                        t.retry_at = Some(at);
                        let msg = format!(
                            "Back-off restarting failed container {} in pod {}",
                            c.name,
                            self.key()
                        );
                        self.event_warning(Some(c), "BackOff", msg);
                        return (false, at);
                    }
                    previous => t.backoff = Some(BACKOFF.after(previous)),
                }
                l.restart + 1
            }
        };
        match self.start(sb, c, restart, sources).await {
            Ok(()) => {
                let t = self.tracks.entry(c.name.clone()).or_default();
                t.waiting = None;
                t.retry_at = None;
                (true, far)
            }
            Err((reason, message, retry_at)) => {
                let t = self.tracks.entry(c.name.clone()).or_default();
                t.waiting = Some((reason, message));
                t.retry_at = retry_at;
                (false, retry_at.unwrap_or(now + Duration::from_secs(2)))
            }
        }
    }

    /// Pulls, configures, creates and starts one container, then runs its postStart hook.
    async fn start(
        &mut self,
        sb: &Sandbox,
        c: &Container,
        restart: u32,
        sources: &mut Sources,
    ) -> Result<(), (String, String, Option<Instant>)> {
        let image = c.image.clone().unwrap_or_default();
        let policy = c.image_pull_policy.clone().unwrap_or_default();
        let pulled = match self.shared.images.ensure(&image, &policy).await {
            Ok(p) => p,
            Err(e) => {
                if e.reason == "ImagePullBackOff" {
                    self.event_normal(
                        Some(c),
                        "BackOff",
                        format!("Back-off pulling image {image:?}"),
                    );
                } else {
                    self.event_warning(
                        Some(c),
                        "Failed",
                        format!("Failed to pull image {image:?}: {}", e.message),
                    );
                    self.event_warning(Some(c), "Failed", format!("Error: {}", e.reason));
                }
                return Err((e.reason.into(), e.message, e.retry_at));
            }
        };
        if pulled.pulled {
            self.event_normal(
                Some(c),
                "Pulled",
                format!(
                    "Successfully pulled image {image:?} in {:.3}s",
                    pulled.took.as_secs_f64()
                ),
            );
        } else {
            self.event_normal(
                Some(c),
                "Pulled",
                format!("Container image {image:?} already present on machine"),
            );
        }
        let config_error = |w: &Self, msg: String| {
            w.event_warning(Some(c), "Failed", format!("Error: {msg}"));
            (
                "CreateContainerConfigError".to_string(),
                msg,
                Some(Instant::now() + Duration::from_secs(2)),
            )
        };
        let facts = self.facts();
        let vars = match env::resolve(&self.pod, c, &facts, &self.shared.config, sources).await {
            Ok(r) => {
                for (reason, message) in r.warnings {
                    self.event_warning(None, &reason, message);
                }
                r.vars
            }
            Err(e) => return Err(config_error(self, e.0)),
        };
        // The container runs with what the kubelet allocated, which a resize not yet admitted
        // leaves behind the spec.
        let c = &self.resizes.allocated_container(c);
        let config = match container::config(container::Inputs {
            pod: &self.pod,
            container: c,
            restart,
            env: vars,
            volumes: &self.volumes,
            hosts_file: Some(self.hosts_path()),
            namespaces: self.namespaces(sb, &c.name),
            config: &self.shared.config,
        }) {
            Ok(cfg) => cfg,
            Err(e) => return Err(config_error(self, e.0)),
        };
        let id = match container::create_and_start(&self.shared.runtime, sb, config).await {
            Ok(id) => {
                self.resizes.started(&id, c);
                id
            }
            Err(e) => {
                let msg = e.to_string();
                self.event_warning(Some(c), "Failed", format!("Error: {msg}"));
                return Err((
                    "RunContainerError".into(),
                    msg,
                    Some(Instant::now() + BACKOFF.delay(0)),
                ));
            }
        };
        self.event_normal(Some(c), "Created", format!("Created container {}", c.name));
        self.event_normal(Some(c), "Started", format!("Started container {}", c.name));
        if let Some(h) = c.lifecycle.as_ref().and_then(|l| l.post_start.as_ref()) {
            let target = Target {
                runtime: self.shared.runtime.clone(),
                container_id: id.clone(),
                host: sb.ips.first().cloned().unwrap_or_default(),
                container: c.clone(),
            };
            if let Err(msg) = hooks::run(
                &target,
                h,
                Duration::from_secs(self.spec_grace().max(1) as u64),
            )
            .await
            {
                self.event_warning(
                    Some(c),
                    "FailedPostStartHook",
                    format!("PostStartHook failed: {msg}"),
                );
                let _ = container::stop(&self.shared.runtime, &id, self.spec_grace()).await;
            }
        }
        Ok(())
    }

    /// The namespaces container `name` joins: the sandbox's, but for an ephemeral container
    /// that targets a running container, whose process namespace it shares.
    fn namespaces(&self, sb: &Sandbox, name: &str) -> Option<cri::NamespaceOption> {
        let mut ns = sb
            .config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.clone());
        let target = super::ephemeral_containers(&self.pod)
            .into_iter()
            .find(|(c, _)| c.name == name)
            .and_then(|(_, t)| t)
            .and_then(|t| self.latest(&t).filter(|l| l.running()).cloned());
        if let (Some(o), Some(t)) = (ns.as_mut(), target) {
            // A pod that shares one process namespace already has the target's processes.
            if o.pid != cri::NamespaceMode::Pod as i32 && o.pid != cri::NamespaceMode::Node as i32 {
                o.pid = cri::NamespaceMode::Target as i32;
                o.target_id = t.status.id;
            }
        }
        ns
    }

    async fn pre_stop(&self, c: &Container, l: &Instance, grace: i64) {
        let Some(h) = c.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref()) else {
            return;
        };
        let target = Target {
            runtime: self.shared.runtime.clone(),
            container_id: l.status.id.clone(),
            host: self
                .sandbox
                .as_ref()
                .and_then(|s| s.ips.first().cloned())
                .unwrap_or_default(),
            container: c.clone(),
        };
        if let Err(msg) = hooks::run(&target, h, Duration::from_secs(grace.max(0) as u64)).await {
            self.event_warning(
                Some(c),
                "FailedPreStopHook",
                format!("PreStopHook failed: {msg}"),
            );
        }
    }

    /// Stops every container within `grace` seconds — the regular ones together, then the
    /// sidecars in reverse order — and then the sandbox.
    async fn terminate(&mut self, grace: i64) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(grace.max(0) as u64);
        let left = |d: Instant| d.saturating_duration_since(Instant::now()).as_secs() as i64;
        let sb = match &self.sandbox {
            Some(s) => Some(s.clone()),
            None => sandbox::list(&self.shared.runtime, &self.uid)
                .await?
                .into_iter()
                .find(|s| s.state == cri::PodSandboxState::SandboxReady as i32)
                .map(|s| Sandbox {
                    id: s.id,
                    ips: Vec::new(),
                    config: Default::default(),
                }),
        };
        let Some(sb) = sb else {
            return Ok(());
        };
        self.observe(&sb).await?;
        let spec = self.pod.spec.clone().unwrap_or_default();
        let running = |w: &Self, c: &Container| w.latest(&c.name).filter(|l| l.running()).cloned();
        let ephemeral: Vec<Container> = super::ephemeral_containers(&self.pod)
            .into_iter()
            .map(|(c, _)| c)
            .collect();
        let regular: Vec<(Container, Instance)> = spec
            .containers
            .iter()
            .chain(
                spec.init_containers
                    .iter()
                    .flatten()
                    .filter(|c| c.restart_policy.as_deref() != Some("Always")),
            )
            .chain(ephemeral.iter())
            .filter_map(|c| running(self, c).map(|l| (c.clone(), l)))
            .collect();
        let this = &*self;
        futures::future::join_all(regular.iter().map(|(c, l)| async move {
            this.event_normal(Some(c), "Killing", format!("Stopping container {}", c.name));
            this.pre_stop(c, l, left(deadline)).await;
            if let Err(e) =
                container::stop(&this.shared.runtime, &l.status.id, left(deadline)).await
            {
                tracing::warn!(container = %c.name, error = %e, "stopping a container");
            }
        }))
        .await;
        let sidecars: Vec<Container> = spec
            .init_containers
            .iter()
            .flatten()
            .filter(|c| c.restart_policy.as_deref() == Some("Always"))
            .rev()
            .cloned()
            .collect();
        for c in sidecars {
            if let Some(l) = running(self, &c) {
                self.event_normal(
                    Some(&c),
                    "Killing",
                    format!("Stopping container {}", c.name),
                );
                self.pre_stop(&c, &l, left(deadline)).await;
                container::stop(&self.shared.runtime, &l.status.id, left(deadline)).await?;
            }
        }
        self.probe_stop.cancel();
        self.probe_stop = CancellationToken::new();
        sandbox::stop(&self.shared.runtime, &sb.id).await?;
        self.observe(&sb).await?;
        Ok(())
    }

    /// A finished pod: sidecars and the sandbox stopped.
    async fn settle_finished(&mut self) -> anyhow::Result<()> {
        let existing = sandbox::list(&self.shared.runtime, &self.uid).await?;
        if existing
            .iter()
            .any(|s| s.state == cri::PodSandboxState::SandboxReady as i32)
        {
            let grace = self.spec_grace();
            self.terminate(grace).await?;
        } else if let Some(s) = existing.first() {
            let sb = Sandbox {
                id: s.id.clone(),
                ips: self
                    .sandbox
                    .as_ref()
                    .map(|s| s.ips.clone())
                    .unwrap_or_default(),
                config: Default::default(),
            };
            self.observe(&sb).await?;
        }
        Ok(())
    }

    /// Removes everything of a deleted pod, then the pod object itself.
    async fn remove(&mut self) -> anyhow::Result<()> {
        let rt = self.shared.runtime.clone();
        let existing = sandbox::list(&rt, &self.uid).await?;
        if existing
            .iter()
            .any(|s| s.state == cri::PodSandboxState::SandboxReady as i32)
        {
            let grace = self.grace();
            self.terminate(grace).await?;
        }
        // The final status (terminal phase) before the object goes.
        self.write_status().await;
        for s in &existing {
            sandbox::remove(&rt, &s.id).await?;
        }
        self.probe_stop.cancel();
        self.shared
            .claims
            .teardown(&self.shared.config, &self.uid)
            .await
            .map_err(anyhow::Error::msg)?;
        volumes::teardown(&self.shared.config, &self.uid);
        cgroups::remove(&cgroups::pod_cgroup(
            &self.shared.config.cgroup_root,
            &self.pod,
        ));
        let _ = std::fs::remove_dir_all(self.shared.config.log_dir(&self.pod));
        if !self.gone.is_cancelled() {
            let api: Api<Pod> = Api::namespaced(
                self.shared.client.clone(),
                self.pod.metadata.namespace.as_deref().unwrap_or("default"),
            );
            let dp = DeleteParams {
                grace_period_seconds: Some(0),
                precondition_uid: Some(self.uid.clone()),
                ..Default::default()
            };
            match api
                .delete(self.pod.metadata.name.as_deref().unwrap_or_default(), &dp)
                .await
            {
                Ok(_) => {}
                Err(e) if e.is_not_found() || e.is_conflict() => {}
                Err(e) => return Err(e.into()),
            }
        }
        tracing::info!(pod = %self.key(), "pod removed");
        Ok(())
    }

    /// Writes the status if it differs from the last one written.
    async fn write_status(&mut self) {
        if self.gone.is_cancelled() {
            return;
        }
        let start = self
            .start_time
            .clone()
            .unwrap_or_else(skiff_client::time::now_time);
        let specs: BTreeMap<String, Container> = super::all_containers(&self.pod)
            .cloned()
            .chain(
                super::ephemeral_containers(&self.pod)
                    .into_iter()
                    .map(|(c, _)| c),
            )
            .map(|c| (c.name.clone(), c))
            .collect();
        let cfg = self.shared.config.clone();
        let uid = self.uid.clone();
        let log_dir = cfg.log_dir(&self.pod);
        let messages = status::termination_messages(
            &specs,
            &self.instances,
            |name, restart| container::termination_message_file(&cfg, &uid, name, restart),
            |i| log_dir.join(&i.status.log_path),
        );
        let waiting: HashMap<String, (String, String)> = self
            .tracks
            .iter()
            .filter_map(|(k, t)| t.waiting.clone().map(|w| (k.clone(), w)))
            .collect();
        let patch = {
            let probers = &self.probers;
            let probe_fn = |id: &str, c: &Container| probers.results(id, c);
            let terminal = match &self.state {
                State::Finished { phase } => Some(*phase),
                _ => None,
            };
            let ips = self
                .sandbox
                .as_ref()
                .map(|s| s.ips.clone())
                .unwrap_or_default();
            let sandbox_ready = matches!(self.state, State::Running) && self.sandbox.is_some();
            let snap = Snapshot {
                pod: &self.pod,
                sandbox_ready,
                pod_ips: &ips,
                host_ip: &cfg.node_ip,
                instances: &self.instances,
                waiting: &waiting,
                probes: &probe_fn,
                messages: &messages,
                initialized: self.initialized || terminal.is_some(),
                terminal,
                reason: self.reason.clone(),
                start_time: &start,
            };
            if self.rejected {
                status::patch(&status::rejected(&snap))
            } else {
                let mut computed = status::compute(&snap);
                self.resizes
                    .report(&mut computed, &self.pod, &self.instances);
                status::patch(&computed)
            }
        };
        if self.written.as_ref() == Some(&patch) {
            return;
        }
        let api: Api<Pod> = Api::namespaced(
            self.shared.client.clone(),
            self.pod.metadata.namespace.as_deref().unwrap_or("default"),
        );
        match api
            .patch_status(
                self.pod.metadata.name.as_deref().unwrap_or_default(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(p) => {
                if p.metadata.uid.as_deref() == Some(self.uid.as_str()) {
                    self.written = Some(patch);
                }
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => {
                tracing::warn!(pod = %self.key(), error = %e, "writing the pod's status");
            }
        }
    }
}

fn ns_to_system(ns: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_nanos(ns.max(0) as u64)
}

/// A duration as Go prints it (`10s`, `1m20s`, `5m0s`).
fn human(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 {
        format!("{}m{}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations_print_like_go() {
        use std::time::Duration;
        assert_eq!(super::human(Duration::from_secs(10)), "10s");
        assert_eq!(super::human(Duration::from_secs(80)), "1m20s");
        assert_eq!(super::human(Duration::from_secs(300)), "5m0s");
    }
}
