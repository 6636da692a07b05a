//! The Job controller, as Kubernetes' runs Jobs: pods until `completions` succeed
//! (`parallelism` at a time), or, without `completions`, until one succeeds and the rest have
//! stopped. `Indexed` jobs give each pod its index (`batch.kubernetes.io/job-completion-index`,
//! `JOB_COMPLETION_INDEX`, hostname `<job>-<index>`) and may end early by a `successPolicy`.
//! Failed pods are replaced after a back-off (10 s doubling, at most 10 minutes) until
//! `backoffLimit` is passed, or per index with `backoffLimitPerIndex` (`status.failedIndexes`,
//! `maxFailedIndexes`); `podFailurePolicy` rules (`FailJob`, `FailIndex`, `Ignore`, `Count`
//! on exit codes or pod conditions such as an eviction's `DisruptionTarget`),
//! `activeDeadlineSeconds`, `suspend` and `ttlSecondsAfterFinished` are honoured.
//!
//! The end is reached in two steps, as Kubernetes 1.33 does: first the interim
//! `SuccessCriteriaMet` or `FailureTarget` condition is written and the remaining pods are
//! stopped; once none is left terminating, `Complete` or `Failed` follows with the same reason
//! and message.
//!
//! Finished pods are counted exactly once, even if they are deleted before the controller
//! sees them: every pod carries the `batch.kubernetes.io/job-tracking` finalizer, a finished
//! pod's UID goes into `status.uncountedTerminatedPods` first, then its finalizer comes off,
//! then it moves to the `succeeded`/`failed` counters (Kubernetes' own scheme). A pod whose
//! Job is gone or finished loses the finalizer too (`orphans.rs`).

mod backoff;
mod indexes;
mod orphans;
mod policy;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::{Job, JobCondition, JobSpec, JobStatus};
use k8s_openapi::api::core::v1::{EnvVar, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{json, Value};
use skiff_client::controller::{Action, Config as RunConfig, Controller};
use skiff_client::events::reference;
use skiff_client::reflector::{ObjectKey, Store};
use skiff_client::{Api, DeleteParams, Patch, PatchParams, PropagationPolicy};
use tokio_util::sync::CancellationToken;

use crate::expectations::Expectations;
use crate::{owners, pods, Context};
pub use indexes::Indexes;
use policy::Action as Rule;

/// The finalizer that keeps a job's pod until it is counted.
pub const TRACKING: &str = "batch.kubernetes.io/job-tracking";
/// The completion index of an `Indexed` job's pod (annotation and label).
pub const INDEX: &str = "batch.kubernetes.io/job-completion-index";
/// The counted failures of a pod's index before it (with `backoffLimitPerIndex`).
pub const INDEX_FAILURE_COUNT: &str = "batch.kubernetes.io/job-index-failure-count";
/// The failures of a pod's index before it that a pod failure policy ignored.
pub const INDEX_IGNORED_FAILURE_COUNT: &str = "batch.kubernetes.io/job-index-ignored-failure-count";
/// The `spec.managedBy` value of jobs this controller runs (also when the field is unset).
pub const CONTROLLER_NAME: &str = "kubernetes.io/job-controller";

/// At most this many pods are listed in `uncountedTerminatedPods` at a time.
const MAX_UNCOUNTED: usize = 500;

/// Runs the controller until `shutdown`.
pub async fn run(ctx: Arc<Context>, shutdown: CancellationToken) {
    let informer = ctx.owned::<Job>();
    let pods = ctx.pods();
    let ctrl = Controller::new(
        informer.clone(),
        RunConfig {
            concurrency: ctx.config.concurrent_job_syncs,
            ..RunConfig::default()
        },
    );
    owners::feed_owners(
        pods.clone(),
        informer.store(),
        |j: &Job| {
            j.spec
                .as_ref()
                .and_then(|s| s.selector.as_ref())
                .map(std::borrow::Cow::Borrowed)
        },
        ctrl.queue(),
        shutdown.clone(),
    );
    orphans::run(
        ctx.client.clone(),
        pods.clone(),
        informer.clone(),
        shutdown.clone(),
    );
    let shared = Arc::new(Shared::default());
    let store = pods.store();
    ctrl.run(
        move |key, job| {
            let (ctx, shared, store) = (ctx.clone(), shared.clone(), store.clone());
            async move { reconcile(&ctx, &shared, &store, key, job).await }
        },
        shutdown,
    )
    .await;
}

/// What the controller remembers between syncs.
#[derive(Default)]
struct Shared {
    exp: Expectations,
    written: Written,
    backoffs: backoff::Records,
}

/// The resourceVersion of each job's last status write. The job's status holds counts that
/// are not kept anywhere else (pods counted and released), so a reconcile must never work
/// from a cached job older than what it last wrote itself: it waits for the cache instead.
#[derive(Default)]
struct Written(parking_lot::Mutex<HashMap<ObjectKey, i64>>);

impl Written {
    fn note(&self, key: &ObjectKey, job: &Job) {
        if let Some(rv) = rv_of(job) {
            self.0.lock().insert(key.clone(), rv);
        }
    }

    /// Whether the cached `job` is at least as new as the last write.
    fn fresh(&self, key: &ObjectKey, job: &Job) -> bool {
        match self.0.lock().get(key) {
            Some(w) => rv_of(job).is_some_and(|rv| rv >= *w),
            None => true,
        }
    }

    fn forget(&self, key: &ObjectKey) {
        self.0.lock().remove(key);
    }
}

fn rv_of(job: &Job) -> Option<i64> {
    job.metadata.resource_version.as_deref()?.parse().ok()
}

/// Whether the pod still carries the job-tracking finalizer (it is not counted yet).
fn tracked(p: &Pod) -> bool {
    p.metadata
        .finalizers
        .iter()
        .flatten()
        .any(|f| f == TRACKING)
}

fn uid(p: &Pod) -> String {
    p.metadata.uid.clone().unwrap_or_default()
}

fn terminal(p: &Pod) -> bool {
    matches!(pods::phase(p), "Succeeded" | "Failed")
}

/// Stopping but not stopped yet.
fn terminating(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_some() && !terminal(p)
}

/// The pod's completion index, if it has a valid one.
fn index_of(p: &Pod) -> Option<i32> {
    p.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(INDEX))
        .and_then(|v| v.parse().ok())
        .filter(|i: &i32| *i >= 0)
}

fn true_condition<'a>(status: &'a JobStatus, t: &str) -> Option<&'a JobCondition> {
    status
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == t && c.status == "True")
}

/// Whether the job has ended (`Complete` or `Failed`).
fn finished(job: &Job) -> Option<&JobCondition> {
    let st = job.status.as_ref()?;
    true_condition(st, "Complete").or_else(|| true_condition(st, "Failed"))
}

/// Replacements wait for failed pods to be fully stopped (`podReplacementPolicy: Failed`, the
/// only choice with a pod failure policy).
fn only_replace_failed(spec: &JobSpec) -> bool {
    spec.pod_replacement_policy.as_deref() == Some("Failed") || spec.pod_failure_policy.is_some()
}

/// Whether the pod counts as failed: its phase says so, or (unless only failed pods are
/// replaced) it is being deleted without having succeeded.
fn pod_failed(p: &Pod, spec: &JobSpec) -> bool {
    let phase = pods::phase(p);
    phase == "Failed"
        || (!only_replace_failed(spec)
            && p.metadata.deletion_timestamp.is_some()
            && phase != "Succeeded")
}

/// One job condition, both times now.
#[derive(Clone, Debug)]
struct Cond {
    type_: &'static str,
    reason: String,
    message: String,
}

impl Cond {
    fn new(type_: &'static str, reason: &str, message: &str) -> Cond {
        Cond {
            type_,
            reason: reason.into(),
            message: message.into(),
        }
    }

    /// The same reason and message under another type.
    fn as_(&self, type_: &'static str) -> Cond {
        Cond {
            type_,
            ..self.clone()
        }
    }

    fn to_condition(&self, status: &str, now: &Time) -> JobCondition {
        JobCondition {
            type_: self.type_.into(),
            status: status.into(),
            reason: Some(self.reason.clone()),
            message: Some(self.message.clone()),
            last_probe_time: Some(now.clone()),
            last_transition_time: Some(now.clone()),
        }
    }
}

/// Sets condition `c` to `status` (Kubernetes' `ensureJobConditionStatus`): replaced when its
/// status, reason or message differ, added unless it would be added as `False`. Whether
/// anything changed.
fn ensure_condition(st: &mut JobStatus, c: &Cond, status: &str, now: &Time) -> bool {
    let list = st.conditions.get_or_insert_with(Vec::new);
    if let Some(old) = list.iter_mut().find(|x| x.type_ == c.type_) {
        if old.status != status
            || old.reason.as_deref() != Some(&c.reason)
            || old.message.as_deref() != Some(&c.message)
        {
            *old = c.to_condition(status, now);
            return true;
        }
        return false;
    }
    if status != "False" {
        list.push(c.to_condition(status, now));
        return true;
    }
    false
}

async fn reconcile(
    ctx: &Context,
    shared: &Shared,
    store: &Store<Pod>,
    key: ObjectKey,
    job: Option<Arc<Job>>,
) -> Result<Action, skiff_client::Error> {
    let Some(job) = job else {
        shared.exp.forget(&key);
        shared.written.forget(&key);
        shared.backoffs.forget(&key);
        return Ok(Action::Done);
    };
    if !shared.written.fresh(&key, &job) {
        // Our own last write is on its way to the cache; its event queues the job again.
        return Ok(Action::RequeueAfter(Duration::from_millis(200)));
    }
    store.wait_until_ready().await;
    let Some(spec) = job.spec.clone() else {
        return Ok(Action::Done);
    };
    let japi: Api<Job> = Api::namespaced(ctx.client.clone(), &key.namespace);
    let r = reference(job.as_ref());

    if let Some(c) = finished(&job) {
        shared.backoffs.forget(&key);
        return expire(&japi, &job, &spec, c).await;
    }
    if spec
        .managed_by
        .as_deref()
        .is_some_and(|m| m != CONTROLLER_NAME)
    {
        return Ok(Action::Done);
    }
    if let Some(mode) = spec.completion_mode.as_deref() {
        if mode != "NonIndexed" && mode != "Indexed" {
            ctx.events.warning(
                r,
                "UnknownCompletionMode",
                "Sync",
                "Skipped Job sync because completion mode is unknown".into(),
            );
            return Ok(Action::Done);
        }
    }
    let Some(sel) = spec.selector.clone() else {
        return Ok(Action::Done);
    };
    // Expectations first: a pod created after this check is seen by the next sync.
    let satisfied = shared.exp.satisfied(&key, store);
    let claimed = owners::claim(&ctx.client, job.as_ref(), &sel, store).await?;
    let mut sync = Sync::new(ctx, shared, &key, &job, spec, claimed, r, satisfied);
    sync.run().await
}

/// `ttlSecondsAfterFinished`: deletes the finished job (and, in the background, its pods)
/// once its time is up.
async fn expire(
    japi: &Api<Job>,
    job: &Job,
    spec: &JobSpec,
    done: &JobCondition,
) -> Result<Action, skiff_client::Error> {
    let Some(ttl) = spec.ttl_seconds_after_finished else {
        return Ok(Action::Done);
    };
    let now = skiff_client::time::now().as_second();
    let at = done
        .last_transition_time
        .as_ref()
        .map(|t| t.0.as_second())
        .unwrap_or(now);
    let left = at + i64::from(ttl) - now;
    if left > 0 {
        return Ok(Action::RequeueAfter(Duration::from_secs(left as u64)));
    }
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        precondition_uid: job.metadata.uid.clone(),
        ..Default::default()
    };
    match japi
        .delete(job.metadata.name.as_deref().unwrap_or_default(), &dp)
        .await
    {
        Ok(_) => Ok(Action::Done),
        Err(e) if e.is_not_found() || e.is_conflict() => Ok(Action::Done),
        Err(e) => Err(e),
    }
}

/// One sync of one job (Kubernetes' `syncJobCtx` and the steps of `syncJob`).
struct Sync<'a> {
    ctx: &'a Context,
    shared: &'a Shared,
    key: &'a ObjectKey,
    job: &'a Job,
    spec: JobSpec,
    r: ObjectReference,
    satisfied: bool,
    pods: Vec<Arc<Pod>>,
    /// Pods neither finished nor being deleted.
    active: Vec<Arc<Pod>>,
    /// The status being built.
    status: JobStatus,
    /// `uncountedTerminatedPods` as the sync found them.
    uncounted_s: HashSet<String>,
    uncounted_f: HashSet<String>,
    succeeded: i32,
    failed: i32,
    prev_succeeded: Indexes,
    succeeded_idx: Indexes,
    /// With `backoffLimitPerIndex`, the failed indexes.
    failed_idx: Option<Indexes>,
    /// Per index, the last failed pod kept until its replacement exists (it carries the
    /// index's failure count).
    delayed: HashMap<i32, Arc<Pod>>,
    terminating: i32,
    ready: i32,
    /// The end reached, if any: the condition to write next.
    end: Option<Cond>,
    record: backoff::Record,
    now: i64,
    now_t: Time,
    wake: Option<Duration>,
}

impl<'a> Sync<'a> {
    #[allow(clippy::too_many_arguments)]
    fn new(
        ctx: &'a Context,
        shared: &'a Shared,
        key: &'a ObjectKey,
        job: &'a Job,
        spec: JobSpec,
        pods: Vec<Arc<Pod>>,
        r: ObjectReference,
        satisfied: bool,
    ) -> Sync<'a> {
        let mut status = job.status.clone().unwrap_or_default();
        let unc = status
            .uncounted_terminated_pods
            .get_or_insert_with(Default::default);
        let uncounted_s: HashSet<String> = unc.succeeded.iter().flatten().cloned().collect();
        let uncounted_f: HashSet<String> = unc.failed.iter().flatten().cloned().collect();
        let active: Vec<Arc<Pod>> = pods
            .iter()
            .filter(|p| pods::is_active(p))
            .cloned()
            .collect();
        let ready = active.iter().filter(|p| pods::is_ready(p)).count() as i32;
        let terminating = pods.iter().filter(|p| terminating(p)).count() as i32;
        let now_t = skiff_client::time::now_time();
        Sync {
            ctx,
            shared,
            key,
            job,
            spec,
            r,
            satisfied,
            pods,
            active,
            status,
            uncounted_s,
            uncounted_f,
            succeeded: 0,
            failed: 0,
            prev_succeeded: Indexes::default(),
            succeeded_idx: Indexes::default(),
            failed_idx: None,
            delayed: HashMap::new(),
            terminating,
            ready,
            end: None,
            record: backoff::Record::default(),
            now: now_t.0.as_millisecond(),
            now_t,
            wake: None,
        }
    }

    fn indexed(&self) -> bool {
        self.spec.completion_mode.as_deref() == Some("Indexed")
    }

    fn completions(&self) -> i32 {
        self.spec.completions.unwrap_or(0)
    }

    fn suspended(&self) -> bool {
        self.spec.suspend == Some(true)
    }

    fn per_index(&self) -> Option<i32> {
        self.spec.backoff_limit_per_index.filter(|_| self.indexed())
    }

    /// The pod's index if this is an Indexed job and the index is within `completions`.
    fn valid_index(&self, p: &Pod) -> Option<i32> {
        index_of(p).filter(|i| *i < self.completions())
    }

    fn verdict(&self, p: &Pod) -> policy::Verdict {
        policy::on_failure(self.spec.pod_failure_policy.as_ref(), p)
    }

    fn later(&mut self, d: Duration) {
        if !d.is_zero() {
            self.wake = Some(self.wake.map_or(d, |w| w.min(d)));
        }
    }

    /// Finished pods not counted yet: still tracked, not listed as uncounted, with a valid
    /// index for Indexed jobs.
    fn newly_finished(&self) -> (Vec<Arc<Pod>>, Vec<Arc<Pod>>) {
        let valid = |p: &Pod| !self.indexed() || self.valid_index(p).is_some();
        let candidates = self.pods.iter().filter(|p| tracked(p) && valid(p));
        let succeeded = candidates
            .clone()
            .filter(|p| pods::phase(p) == "Succeeded" && !self.uncounted_s.contains(&uid(p)))
            .cloned()
            .collect();
        let failed = candidates
            .filter(|p| pod_failed(p, &self.spec) && !self.uncounted_f.contains(&uid(p)))
            .cloned()
            .collect();
        (succeeded, failed)
    }

    /// The message of the first failed pod a `FailJob` rule matches.
    fn fail_job_message(&self) -> Option<String> {
        self.spec.pod_failure_policy.as_ref()?;
        self.pods
            .iter()
            .filter(|p| pod_failed(p, &self.spec))
            .find_map(|p| self.verdict(p).message)
    }

    /// With `restartPolicy: OnFailure`, whether the restarts of running pods' containers
    /// have reached `backoffLimit`.
    fn past_backoff_limit_on_failure(&self) -> bool {
        let rp = self
            .spec
            .template
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.as_deref());
        if rp != Some("OnFailure") {
            return false;
        }
        let restarts: i32 = self
            .pods
            .iter()
            .filter(|p| matches!(pods::phase(p), "Running" | "Pending"))
            .filter_map(|p| p.status.as_ref())
            .flat_map(|s| {
                s.init_container_statuses
                    .iter()
                    .flatten()
                    .chain(s.container_statuses.iter().flatten())
            })
            .map(|c| c.restart_count)
            .sum();
        let limit = self.spec.backoff_limit.unwrap_or(6);
        if limit == 0 {
            restarts > 0
        } else {
            restarts >= limit
        }
    }

    /// Whether the pod's index is failed: a `FailIndex` rule matched, or its counted failures
    /// reached `backoffLimitPerIndex`.
    fn index_failed(&self, p: &Pod, limit: i32) -> bool {
        if !pod_failed(p, &self.spec) {
            return false;
        }
        let v = self.verdict(p);
        if v.action == Some(Rule::FailIndex) {
            return true;
        }
        v.counts && backoff::index_failures(p) >= limit
    }

    async fn run(&mut self) -> Result<Action, skiff_client::Error> {
        let (new_s, new_f) = self.newly_finished();
        let counted_new_f = new_f.iter().filter(|p| self.verdict(p).counts).count() as i32;
        self.succeeded =
            self.status.succeeded.unwrap_or(0) + new_s.len() as i32 + self.uncounted_s.len() as i32;
        self.failed =
            self.status.failed.unwrap_or(0) + counted_new_f + self.uncounted_f.len() as i32;
        if self.status.start_time.is_none() && !self.suspended() {
            self.status.start_time = Some(self.now_t.clone());
        }
        self.record = self.shared.backoffs.get(self.key).after(&new_s, &new_f);

        // The end, in Kubernetes' order: what earlier syncs decided, then failures, then
        // successes.
        self.end = true_condition(&self.status, "SuccessCriteriaMet")
            .map(|c| cond_of(c, "SuccessCriteriaMet"));
        if self.end.is_none() {
            if let Some(c) = true_condition(&self.status, "FailureTarget") {
                self.end = Some(cond_of(c, "Failed"));
            } else if let Some(msg) = self.fail_job_message() {
                self.end = Some(Cond::new("FailureTarget", "PodFailurePolicy", &msg));
            }
        }
        if self.end.is_none() {
            let limit = self.spec.backoff_limit.unwrap_or(6);
            if self.failed > limit || self.past_backoff_limit_on_failure() {
                self.end = Some(Cond::new(
                    "FailureTarget",
                    "BackoffLimitExceeded",
                    "Job has reached the specified backoff limit",
                ));
            } else if let Some(left) = self.deadline_left() {
                if left.is_zero() {
                    self.end = Some(Cond::new(
                        "FailureTarget",
                        "DeadlineExceeded",
                        "Job was active longer than specified deadline",
                    ));
                } else {
                    self.later(left);
                }
            }
        }
        if self.indexed() {
            let completions = self.completions();
            self.prev_succeeded = Indexes::parse(
                &self.status.completed_indexes.clone().unwrap_or_default(),
                completions,
            );
            let new_done = self
                .pods
                .iter()
                .filter(|p| pods::phase(p) == "Succeeded" && tracked(p))
                .filter_map(|p| self.valid_index(p));
            self.succeeded_idx = self.prev_succeeded.with(new_done.collect::<Vec<_>>());
            self.succeeded = self.succeeded_idx.total();
            if let Some(limit) = self.per_index() {
                let prev = Indexes::parse(
                    self.status.failed_indexes.as_deref().unwrap_or(""),
                    completions,
                );
                let new_failed: Vec<i32> = self
                    .pods
                    .iter()
                    .filter(|p| tracked(p) && self.index_failed(p, limit))
                    .filter_map(|p| self.valid_index(p))
                    .collect();
                let failed = prev.with(new_failed);
                if self.end.is_none() {
                    let n = failed.total();
                    if self.spec.max_failed_indexes.is_some_and(|m| n > m) {
                        self.end = Some(Cond::new(
                            "FailureTarget",
                            "MaxFailedIndexesExceeded",
                            "Job has exceeded the specified maximal number of failed indexes",
                        ));
                    } else if n > 0 && n + self.succeeded_idx.total() >= completions {
                        self.end = Some(Cond::new(
                            "FailureTarget",
                            "FailedIndexes",
                            "Job has failed indexes",
                        ));
                    }
                }
                self.failed_idx = Some(failed);
                self.delayed = self.delayed_per_index();
            }
            if self.end.is_none() {
                if let Some(msg) = policy::success(
                    self.spec.success_policy.as_ref(),
                    completions,
                    &self.succeeded_idx,
                ) {
                    self.end = Some(Cond::new("SuccessCriteriaMet", "SuccessPolicy", &msg));
                }
            }
        }

        let mut active = self.active.len() as i32;
        let mut suspend_changed = false;
        let mut manage_err = None;
        if self.end.is_some() {
            let (deleted_ready, deleted, err) = self.delete_active().await;
            manage_err = err;
            if deleted != active || !self.satisfied {
                // Pods remain, or ones not seen yet may: the end waits for the next sync.
                self.end = None;
            }
            active -= deleted;
            self.terminating += deleted;
            self.ready -= deleted_ready;
        } else {
            let mut managed = false;
            if self.satisfied && self.job.metadata.deletion_timestamp.is_none() {
                match self.manage().await {
                    Ok(a) => active = a,
                    Err(e) => manage_err = Some(e),
                }
                managed = true;
            }
            let complete = match self.spec.completions {
                None => self.succeeded > 0 && active == 0,
                Some(c) => self.succeeded >= c && active == 0,
            };
            if complete {
                self.end = Some(Cond::new(
                    "SuccessCriteriaMet",
                    "CompletionsReached",
                    "Reached expected number of succeeded pods",
                ));
            } else if managed {
                suspend_changed = self.suspend_condition();
            }
        }

        let needs_update = suspend_changed
            || self.status.active.unwrap_or(0) != active
            || self.status.ready != Some(self.ready)
            || self.status.terminating != Some(self.terminating);
        self.status.active = Some(active);
        self.status.ready = Some(self.ready);
        self.status.terminating = Some(self.terminating);
        self.track(needs_update).await?;
        if let Some(e) = manage_err {
            return Err(e);
        }
        Ok(match self.wake {
            Some(d) => Action::RequeueAfter(d),
            None => Action::Done,
        })
    }

    /// With `activeDeadlineSeconds` on a running job, the time left (zero once passed).
    fn deadline_left(&self) -> Option<Duration> {
        let deadline = self.spec.active_deadline_seconds?;
        if self.suspended() {
            return None;
        }
        let start = self.status.start_time.as_ref()?.0.as_millisecond();
        let left = start + deadline * 1000 - self.now;
        Some(Duration::from_millis(left.max(0) as u64))
    }

    /// The `Suspended` condition as the job's `suspend` says; whether it changed.
    fn suspend_condition(&mut self) -> bool {
        let now = self.now_t.clone();
        if self.suspended() {
            let c = Cond::new("Suspended", "JobSuspended", "Job suspended");
            let changed = ensure_condition(&mut self.status, &c, "True", &now);
            if changed {
                self.ctx.events.normal(
                    self.r.clone(),
                    "Suspended",
                    "Suspend",
                    "Job suspended".into(),
                );
            }
            changed
        } else {
            let c = Cond::new("Suspended", "JobResumed", "Job resumed");
            let changed = ensure_condition(&mut self.status, &c, "False", &now);
            if changed {
                self.ctx
                    .events
                    .normal(self.r.clone(), "Resumed", "Resume", "Job resumed".into());
                // `activeDeadlineSeconds` counts from the resumption.
                self.status.start_time = Some(now);
            }
            changed
        }
    }

    /// Per index neither succeeded, failed nor running, the last failed pod: its finalizer
    /// stays until the replacement (which inherits its failure count) exists.
    fn delayed_per_index(&self) -> HashMap<i32, Arc<Pod>> {
        let active: HashSet<i32> = self.active.iter().filter_map(|p| index_of(p)).collect();
        let failed = self.failed_idx.clone().unwrap_or_default();
        let mut out: HashMap<i32, Arc<Pod>> = HashMap::new();
        for p in self
            .pods
            .iter()
            .filter(|p| tracked(p) && pod_failed(p, &self.spec))
        {
            let Some(ix) = self.valid_index(p) else {
                continue;
            };
            if self.succeeded_idx.has(ix) || failed.has(ix) || active.contains(&ix) {
                continue;
            }
            let absolute =
                |p: &Pod| backoff::index_failures(p) + backoff::index_ignored_failures(p);
            match out.get(&ix) {
                Some(last)
                    if !(absolute(last) <= absolute(p)
                        && backoff::finished_at(p) >= backoff::finished_at(last)) => {}
                _ => {
                    out.insert(ix, p.clone());
                }
            }
        }
        out
    }

    /// Deletes the active pods of a job that has reached its end, keeping their finalizers
    /// (they are counted as they go). How many were deleted, how many of those were ready,
    /// and the first failure.
    async fn delete_active(&mut self) -> (i32, i32, Option<skiff_client::Error>) {
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &self.key.namespace);
        let (mut ready, mut deleted, mut err) = (0, 0, None);
        for p in &self.active {
            match delete_pod(&api, p).await {
                Ok(()) => {
                    deleted += 1;
                    if pods::is_ready(p) {
                        ready += 1;
                    }
                }
                Err(e) => {
                    err.get_or_insert(e);
                }
            }
        }
        (ready, deleted, err)
    }

    /// Kubernetes' `manageJob`: deletes pods beyond what is wanted (all of them while
    /// suspended), or creates the missing ones once their back-off has passed. The number of
    /// active pods after it.
    async fn manage(&mut self) -> Result<i32, skiff_client::Error> {
        let mut active = self.active.len() as i32;
        if self.suspended() {
            let all = self.active.clone();
            let (ready, removed) = self.delete_job_pods(&all).await?;
            self.terminating += removed;
            self.ready -= ready;
            return Ok(active - removed);
        }
        let parallelism = self.spec.parallelism.unwrap_or(1).max(0);
        let want = match self.spec.completions {
            None if self.succeeded > 0 => active,
            None => parallelism,
            Some(c) => (c - self.succeeded).min(parallelism).max(0),
        };
        let to_delete = self.for_removal((active - want).max(0) as usize);
        if !to_delete.is_empty() {
            let (ready, removed) = self.delete_job_pods(&to_delete).await?;
            self.terminating += removed;
            self.ready -= ready;
            // Deleting and creating in one sync could fight: deletion first.
            return Ok(active - removed);
        }
        let stopping = if only_replace_failed(&self.spec) {
            self.terminating
        } else {
            0
        };
        let diff = want - stopping - active;
        if diff <= 0 {
            return Ok(active);
        }
        if self.per_index().is_none() {
            let left = self.record.remaining(self.now);
            if !left.is_zero() {
                self.later(left);
                return Ok(active);
            }
        }
        let diff = (diff as usize).min(pods::BURST);
        let mut to_make: Vec<Option<i32>> = vec![None; diff];
        if self.indexed() {
            let mut busy = self
                .succeeded_idx
                .with(self.active.iter().filter_map(|p| index_of(p)));
            if only_replace_failed(&self.spec) {
                busy = busy.with(
                    self.pods
                        .iter()
                        .filter(|p| terminating(p))
                        .filter_map(|p| index_of(p)),
                );
            }
            if let Some(f) = &self.failed_idx {
                busy = busy.union(f);
            }
            let mut idx = busy.first_missing(diff, self.completions());
            if self.per_index().is_some() {
                let mut soonest: Option<Duration> = None;
                idx.retain(|i| {
                    let left = backoff::remaining_for_index(
                        self.delayed.get(i).map(|p| p.as_ref()),
                        self.now,
                    );
                    if !left.is_zero() {
                        soonest = Some(soonest.map_or(left, |s| s.min(left)));
                    }
                    left.is_zero()
                });
                if idx.is_empty() {
                    if let Some(s) = soonest {
                        self.later(s);
                    }
                    return Ok(active);
                }
            }
            to_make = idx.into_iter().map(Some).collect();
        }
        let new_pods: Vec<Pod> = to_make.iter().map(|i| self.new_pod(*i)).collect();
        let n = new_pods.len() as i32;
        pods::create_each(self.ctx, &self.shared.exp, self.key, &self.r, new_pods).await?;
        active += n;
        Ok(active)
    }

    /// A pod for index `idx` (or none, for NonIndexed jobs).
    fn new_pod(&self, idx: Option<i32>) -> Pod {
        let name = &self.key.name;
        let mut pod = pods::from_template(
            &self.spec.template,
            &self.key.namespace,
            name,
            owners::controller_ref(self.job),
        );
        let fin = pod.metadata.finalizers.get_or_insert_with(Vec::new);
        if !fin.iter().any(|f| f == TRACKING) {
            fin.push(TRACKING.into());
        }
        let Some(i) = idx else {
            return pod;
        };
        pod.metadata.generate_name = Some(format!("{name}-{i}-"));
        let ann = pod
            .metadata
            .annotations
            .get_or_insert_with(Default::default);
        ann.insert(INDEX.into(), i.to_string());
        if self.per_index().is_some() {
            let (failures, ignored) = match self.delayed.get(&i) {
                None => (0, 0),
                Some(prev) => {
                    let (f, ig) = (
                        backoff::index_failures(prev),
                        backoff::index_ignored_failures(prev),
                    );
                    if self.verdict(prev).counts {
                        (f + 1, ig)
                    } else {
                        (f, ig + 1)
                    }
                }
            };
            ann.insert(INDEX_FAILURE_COUNT.into(), failures.to_string());
            if ignored > 0 {
                ann.insert(INDEX_IGNORED_FAILURE_COUNT.into(), ignored.to_string());
            }
        }
        pod.metadata
            .labels
            .get_or_insert_with(Default::default)
            .insert(INDEX.into(), i.to_string());
        if let Some(ps) = pod.spec.as_mut() {
            ps.hostname = Some(format!("{name}-{i}"));
            for c in ps
                .containers
                .iter_mut()
                .chain(ps.init_containers.iter_mut().flatten())
            {
                let env = c.env.get_or_insert_with(Vec::new);
                if !env.iter().any(|e| e.name == "JOB_COMPLETION_INDEX") {
                    env.push(EnvVar {
                        name: "JOB_COMPLETION_INDEX".into(),
                        value: Some(i.to_string()),
                        value_from: None,
                    });
                }
            }
        }
        pod
    }

    /// Active pods to delete: for Indexed jobs every pod without a valid index and all but
    /// one of each repeated index; then the first of the rest in deletion order until at
    /// least `at_least`.
    fn for_removal(&self, at_least: usize) -> Vec<Arc<Pod>> {
        let mut rm: Vec<Arc<Pod>> = Vec::new();
        let mut left: Vec<Arc<Pod>> = Vec::new();
        if self.indexed() {
            let mut by_index: HashMap<i32, Vec<Arc<Pod>>> = HashMap::new();
            for p in &self.active {
                match self.valid_index(p) {
                    Some(i) => by_index.entry(i).or_default().push(p.clone()),
                    None => rm.push(p.clone()),
                }
            }
            for (_, mut same) in by_index {
                pods::sort_for_deletion(&mut same);
                let keep = same.pop();
                rm.extend(same);
                left.extend(keep);
            }
        } else {
            left = self.active.clone();
        }
        if rm.len() < at_least {
            pods::sort_for_deletion(&mut left);
            let more = at_least - rm.len();
            rm.extend(left.into_iter().take(more));
        }
        rm.truncate(pods::BURST);
        rm
    }

    /// Deletes pods the job no longer wants, their finalizers removed first (they are not
    /// counted). How many were deleted, and how many of those ready.
    async fn delete_job_pods(
        &mut self,
        victims: &[Arc<Pod>],
    ) -> Result<(i32, i32), skiff_client::Error> {
        if victims.is_empty() {
            return Ok((0, 0));
        }
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &self.key.namespace);
        self.shared.exp.expect_dels(
            self.key,
            victims.iter().map(|p| (ObjectKey::of(p.as_ref()), uid(p))),
        );
        let (mut ready, mut removed) = (0, 0);
        let mut first_err = None;
        for p in victims {
            let r = match release(&api, p).await {
                Ok(()) => delete_pod(&api, p).await,
                Err(e) => Err(e),
            };
            match r {
                Ok(()) => {
                    removed += 1;
                    if pods::is_ready(p) {
                        ready += 1;
                    }
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok((ready, removed)),
        }
    }

    /// Whether the pod's finalizer may come off: the job is being deleted or has reached its
    /// end, the pod succeeded, or it failed (unless it is an index's last failure kept for
    /// its replacement).
    fn can_release(&self, p: &Pod, failed: bool) -> bool {
        if self.job.metadata.deletion_timestamp.is_some()
            || self.end.is_some()
            || pods::phase(p) == "Succeeded"
        {
            return true;
        }
        if !failed {
            return false;
        }
        match index_of(p).and_then(|i| self.delayed.get(&i)) {
            Some(kept) if self.per_index().is_some() => kept.metadata.uid != p.metadata.uid,
            _ => true,
        }
    }

    /// Kubernetes' `trackJobStatusAndRemoveFinalizers`: lists finished pods as uncounted,
    /// writes that (with any interim condition), releases them, moves them to the counters,
    /// and ends the job when nothing is left uncounted or terminating.
    async fn track(&mut self, mut flush: bool) -> Result<(), skiff_client::Error> {
        let indexed = self.indexed();
        if indexed {
            self.pods.sort_by_key(|p| index_of(p).unwrap_or(-1));
        }
        let mut with_fin: HashSet<String> = self
            .pods
            .iter()
            .filter(|p| tracked(p))
            .map(|p| uid(p))
            .collect();
        flush |= move_counted(&mut self.status, &with_fin);
        let mut release_now: Vec<Arc<Pod>> = Vec::new();
        let mut new_done: Vec<i32> = Vec::new();
        let mut full = false;
        let ends_in_failure = self
            .end
            .as_ref()
            .is_some_and(|c| c.type_ != "SuccessCriteriaMet");
        let pods = self.pods.clone();
        for p in pods.iter().filter(|p| tracked(p)) {
            let failed = pod_failed(p, &self.spec);
            if !self.can_release(p, failed) {
                continue;
            }
            release_now.push(p.clone());
            let id = uid(p);
            let index = self.valid_index(p);
            let counts = self.verdict(p).counts;
            let unc = self
                .status
                .uncounted_terminated_pods
                .get_or_insert_with(Default::default);
            if pods::phase(p) == "Succeeded" && !self.uncounted_f.contains(&id) {
                if indexed {
                    if let Some(i) = index.filter(|i| !self.prev_succeeded.has(*i)) {
                        new_done.push(i);
                        flush = true;
                    }
                } else if !self.uncounted_s.contains(&id) {
                    unc.succeeded.get_or_insert_with(Vec::new).push(id);
                    flush = true;
                }
            } else if (failed || ends_in_failure)
                && !self.uncounted_f.contains(&id)
                && (!indexed || index.is_some())
                && counts
            {
                unc.failed.get_or_insert_with(Vec::new).push(id);
                flush = true;
            }
            let listed = new_done.len()
                + unc.succeeded.as_ref().map_or(0, Vec::len)
                + unc.failed.as_ref().map_or(0, Vec::len);
            if listed >= MAX_UNCOUNTED {
                // The rest waits for the next sync, which this one's writes bring.
                full = true;
                break;
            }
        }
        if indexed {
            self.succeeded_idx = self.succeeded_idx.with(new_done);
            let s = self.succeeded_idx.to_string();
            if Some(&s) != self.status.completed_indexes.as_ref()
                && !(s.is_empty() && self.status.completed_indexes.is_none())
            {
                flush = true;
            }
            self.status.succeeded = Some(self.succeeded_idx.total());
            self.status.completed_indexes = Some(s);
            let f = self.failed_idx.as_ref().map(Indexes::to_string);
            if f != self.status.failed_indexes {
                self.status.failed_indexes = f;
                flush = true;
            }
        }
        let now = self.now_t.clone();
        if let Some(c) = self.end.clone() {
            if c.type_ == "FailureTarget" {
                // Written before any finalizer comes off, so the reason outlives the pods.
                self.status
                    .conditions
                    .get_or_insert_with(Vec::new)
                    .push(c.to_condition("True", &now));
                flush = true;
                self.end = Some(c.as_("Failed"));
            } else if c.type_ == "SuccessCriteriaMet" {
                if true_condition(&self.status, "SuccessCriteriaMet").is_none() {
                    self.status
                        .conditions
                        .get_or_insert_with(Vec::new)
                        .push(c.to_condition("True", &now));
                    flush = true;
                }
                self.end = Some(c.as_("Complete"));
            }
        }

        // Flush what is listed, then release.
        if flush {
            self.write().await?;
            self.shared.backoffs.set(self.key, self.record.clone());
            flush = false;
        }
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &self.key.namespace);
        let mut rm_err = None;
        for p in &release_now {
            match release(&api, p).await {
                Ok(()) => {
                    with_fin.remove(&uid(p));
                }
                Err(e) => {
                    rm_err.get_or_insert(e);
                }
            }
        }
        flush |= move_counted(&mut self.status, &with_fin);
        if let Some(e) = rm_err {
            if flush {
                self.write().await?;
            }
            return Err(e);
        }

        let done = !full && self.enact_end();
        if done || flush {
            self.write().await?;
        }
        if done {
            if let Some(c) = &self.end {
                if c.type_ == "Complete" {
                    self.ctx.events.normal(
                        self.r.clone(),
                        "Completed",
                        "Complete",
                        "Job completed".into(),
                    );
                } else {
                    self.ctx
                        .events
                        .warning(self.r.clone(), &c.reason, "Fail", c.message.clone());
                }
            }
        }
        Ok(())
    }

    /// Writes `Complete` or `Failed` once no pod is left uncounted or terminating; whether it
    /// did.
    fn enact_end(&mut self) -> bool {
        let Some(c) = self.end.clone() else {
            return false;
        };
        let unc = self
            .status
            .uncounted_terminated_pods
            .clone()
            .unwrap_or_default();
        if unc.succeeded.as_ref().is_some_and(|v| !v.is_empty())
            || unc.failed.as_ref().is_some_and(|v| !v.is_empty())
            || self.terminating > 0
        {
            return false;
        }
        let now = self.now_t.clone();
        ensure_condition(&mut self.status, &c, "True", &now);
        if c.type_ == "Complete" {
            self.status.completion_time = Some(now);
        }
        true
    }

    async fn write(&mut self) -> Result<(), skiff_client::Error> {
        let api: Api<Job> = Api::namespaced(self.ctx.client.clone(), &self.key.namespace);
        if let Some(j) =
            crate::write_status(&api, &self.key.name, status_patch(&self.status)).await?
        {
            self.shared.written.note(self.key, &j);
        }
        Ok(())
    }
}

/// A condition read back, under `type_`.
fn cond_of(c: &JobCondition, type_: &'static str) -> Cond {
    Cond {
        type_,
        reason: c.reason.clone().unwrap_or_default(),
        message: c.message.clone().unwrap_or_default(),
    }
}

/// Moves the uncounted pods that are released (finalizer off, or gone) to the counters;
/// whether any moved.
fn move_counted(st: &mut JobStatus, with_fin: &HashSet<String>) -> bool {
    let unc = st
        .uncounted_terminated_pods
        .get_or_insert_with(Default::default);
    let mut moved = false;
    for (list, counter) in [
        (&mut unc.succeeded, &mut st.succeeded),
        (&mut unc.failed, &mut st.failed),
    ] {
        let Some(l) = list.as_mut() else { continue };
        let before = l.len();
        l.retain(|u| with_fin.contains(u));
        let gone = (before - l.len()) as i32;
        if gone > 0 {
            *counter = Some(counter.unwrap_or(0) + gone);
            moved = true;
        }
    }
    moved
}

/// The status as a merge patch: what is unset or zero is removed (stored as Kubernetes stores
/// a Job's status, which omits empty counters and lists).
fn status_patch(st: &JobStatus) -> Value {
    let unc = st.uncounted_terminated_pods.clone().unwrap_or_default();
    let list = |v: &Option<Vec<String>>| match v {
        Some(v) if !v.is_empty() => json!(v),
        _ => Value::Null,
    };
    let count = |v: Option<i32>| match v {
        Some(n) if n != 0 => json!(n),
        _ => Value::Null,
    };
    json!({
        "active": count(st.active),
        "ready": st.ready,
        "terminating": st.terminating,
        "succeeded": count(st.succeeded),
        "failed": count(st.failed),
        "startTime": st.start_time,
        "completionTime": st.completion_time,
        "conditions": st.conditions.as_ref().filter(|c| !c.is_empty()),
        "uncountedTerminatedPods": {"succeeded": list(&unc.succeeded), "failed": list(&unc.failed)},
        "completedIndexes": st.completed_indexes.as_ref().filter(|s| !s.is_empty()),
        "failedIndexes": st.failed_indexes,
    })
}

/// Removes the job-tracking finalizer (a pod already gone counts as released).
async fn release(api: &Api<Pod>, p: &Pod) -> Result<(), skiff_client::Error> {
    if !tracked(p) {
        return Ok(());
    }
    let body = json!({"metadata": {"$deleteFromPrimitiveList/finalizers": [TRACKING]}});
    match api
        .patch(
            p.metadata.name.as_deref().unwrap_or_default(),
            &PatchParams::default(),
            &Patch::Strategic(body),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(e),
    }
}

async fn delete_pod(api: &Api<Pod>, p: &Pod) -> Result<(), skiff_client::Error> {
    let dp = DeleteParams {
        precondition_uid: p.metadata.uid.clone(),
        ..Default::default()
    };
    match api
        .delete(p.metadata.name.as_deref().unwrap_or_default(), &dp)
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if e.is_not_found() || e.is_conflict() => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(v: Value) -> JobSpec {
        serde_json::from_value(v).unwrap()
    }

    fn pod(v: Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn deleted_pods_count_as_failed_unless_only_failed_ones_are_replaced() {
        let deleting = pod(
            json!({"metadata": {"deletionTimestamp": "2024-01-01T00:00:00Z"},
            "status": {"phase": "Running"}}),
        );
        assert!(pod_failed(&deleting, &spec(json!({"template": {}}))));
        assert!(!pod_failed(
            &deleting,
            &spec(json!({"template": {}, "podReplacementPolicy": "Failed"}))
        ));
        assert!(!pod_failed(
            &deleting,
            &spec(json!({"template": {}, "podFailurePolicy": {"rules": []}}))
        ));
        let failed = pod(json!({"status": {"phase": "Failed"}}));
        assert!(pod_failed(
            &failed,
            &spec(json!({"template": {}, "podReplacementPolicy": "Failed"}))
        ));
    }

    #[test]
    fn conditions_change_only_when_they_differ() {
        let now = skiff_client::time::now_time();
        let mut st = JobStatus::default();
        let resumed = Cond::new("Suspended", "JobResumed", "Job resumed");
        assert!(!ensure_condition(&mut st, &resumed, "False", &now));
        let suspended = Cond::new("Suspended", "JobSuspended", "Job suspended");
        assert!(ensure_condition(&mut st, &suspended, "True", &now));
        assert!(!ensure_condition(&mut st, &suspended, "True", &now));
        assert!(ensure_condition(&mut st, &resumed, "False", &now));
        assert_eq!(st.conditions.as_ref().unwrap().len(), 1);
        assert_eq!(st.conditions.as_ref().unwrap()[0].status, "False");
    }

    #[test]
    fn released_pods_move_to_the_counters() {
        let mut st: JobStatus = serde_json::from_value(json!({"succeeded": 1,
            "uncountedTerminatedPods": {"succeeded": ["a", "b"], "failed": ["c"]}}))
        .unwrap();
        let still: HashSet<String> = ["b".to_string()].into();
        assert!(move_counted(&mut st, &still));
        assert_eq!(st.succeeded, Some(2));
        assert_eq!(st.failed, Some(1));
        let patch = status_patch(&st);
        assert_eq!(
            patch["uncountedTerminatedPods"],
            json!({"succeeded": ["b"], "failed": null})
        );
        assert!(!move_counted(&mut st, &still));
    }
}
