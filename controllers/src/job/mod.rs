//! The Job controller: runs pods until `completions` succeed (`parallelism` at a time), or,
//! without `completions`, until one succeeds and the rest have stopped. `Indexed` jobs give
//! each pod its index (`batch.kubernetes.io/job-completion-index`, `JOB_COMPLETION_INDEX`,
//! hostname `<job>-<index>`). Failed pods are retried with Kubernetes' back-off (10 s
//! doubling, at most 6 min) until `backoffLimit` is passed; `activeDeadlineSeconds`,
//! `podFailurePolicy` rules on exit codes (`FailJob`, `Ignore`, `Count`), `suspend` and
//! `ttlSecondsAfterFinished` are honoured; the `Complete`, `Failed` and `Suspended`
//! conditions say how it went.
//!
//! Finished pods are counted exactly once, even if they are deleted before the controller
//! sees them: every pod carries the `batch.kubernetes.io/job-tracking` finalizer, a finished
//! pod's UID goes into `status.uncountedTerminatedPods` first, then its finalizer comes off,
//! then it moves to the `succeeded`/`failed` counters (Kubernetes' own scheme).

use std::borrow::Cow;
use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{EnvVar, Pod};
use serde_json::{json, Value};
use skiff_client::controller::{Action, Config as RunConfig, Controller};
use skiff_client::events::reference;
use skiff_client::reflector::{ObjectKey, Store};
use skiff_client::{Api, DeleteParams, Patch, PatchParams, PropagationPolicy};
use skiff_rules::Backoff;
use tokio_util::sync::CancellationToken;

use crate::expectations::Expectations;
use crate::{owners, pods, Context};

/// The finalizer that keeps a job's pod until it is counted.
pub const TRACKING: &str = "batch.kubernetes.io/job-tracking";
/// The completion index of an `Indexed` job's pod (annotation and label).
pub const INDEX: &str = "batch.kubernetes.io/job-completion-index";

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
                .map(Cow::Borrowed)
        },
        ctrl.queue(),
        shutdown.clone(),
    );
    let exp = Arc::new(Expectations::default());
    let written = Arc::new(Written::default());
    let store = pods.store();
    ctrl.run(
        move |key, job| {
            let (ctx, exp, store, written) =
                (ctx.clone(), exp.clone(), store.clone(), written.clone());
            async move { reconcile(&ctx, &exp, &store, &written, key, job).await }
        },
        shutdown,
    )
    .await;
}

/// The resourceVersion of each job's last status write. The job's status holds counts that
/// are not kept anywhere else (pods counted and released), so a reconcile must never work
/// from a cached job older than what it last wrote itself: it waits for the cache instead.
#[derive(Default)]
struct Written(parking_lot::Mutex<std::collections::HashMap<ObjectKey, i64>>);

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

fn finished(p: &Pod) -> bool {
    matches!(pods::phase(p), "Succeeded" | "Failed")
}

fn index_of(p: &Pod) -> Option<i32> {
    p.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(INDEX))
        .and_then(|v| v.parse().ok())
}

fn condition<'a>(job: &'a Job, t: &str) -> Option<&'a k8s_openapi::api::batch::v1::JobCondition> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == t && c.status == "True")
}

/// `0-2,4,6-7` from a set of indexes.
pub fn ranges(idx: &BTreeSet<i32>) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut it = idx.iter().copied().peekable();
    while let Some(start) = it.next() {
        let mut end = start;
        while it.peek() == Some(&(end + 1)) {
            end = it.next().unwrap_or(end);
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    out.join(",")
}

/// The set back from [`ranges`].
pub fn parse_ranges(s: &str) -> BTreeSet<i32> {
    let mut out = BTreeSet::new();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<i32>(), b.parse::<i32>()) {
                    out.extend(a..=b);
                }
            }
            None => {
                if let Ok(a) = part.parse() {
                    out.insert(a);
                }
            }
        }
    }
    out
}

/// What a `podFailurePolicy` says of a failed pod.
#[derive(Debug, PartialEq)]
enum OnFailure {
    FailJob(String),
    Ignore,
    Count,
}

fn failure_policy(job: &Job, pod: &Pod) -> OnFailure {
    let Some(policy) = job
        .spec
        .as_ref()
        .and_then(|s| s.pod_failure_policy.as_ref())
    else {
        return OnFailure::Count;
    };
    let statuses = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.clone())
        .unwrap_or_default();
    for (i, rule) in policy.rules.iter().enumerate() {
        let mut hit = false;
        if let Some(codes) = &rule.on_exit_codes {
            hit = statuses.iter().any(|cs| {
                if codes
                    .container_name
                    .as_deref()
                    .is_some_and(|n| n != cs.name)
                {
                    return false;
                }
                let Some(code) = cs
                    .state
                    .as_ref()
                    .and_then(|s| s.terminated.as_ref())
                    .map(|t| t.exit_code)
                else {
                    return false;
                };
                if code == 0 {
                    return false;
                }
                let listed = codes.values.contains(&code);
                if codes.operator == "In" {
                    listed
                } else {
                    !listed
                }
            });
        }
        if let Some(conds) = &rule.on_pod_conditions {
            let pc = pod
                .status
                .as_ref()
                .and_then(|s| s.conditions.clone())
                .unwrap_or_default();
            hit |= conds.iter().any(|c| {
                pc.iter()
                    .any(|p| p.type_ == c.type_ && p.status == c.status.clone())
            });
        }
        if hit {
            return match rule.action.as_str() {
                "FailJob" => OnFailure::FailJob(format!(
                    "Pod {}/{} failed with a failure matching rule {i} of the pod failure policy",
                    pod.metadata.namespace.as_deref().unwrap_or(""),
                    pod.metadata.name.as_deref().unwrap_or("")
                )),
                "Ignore" => OnFailure::Ignore,
                _ => OnFailure::Count,
            };
        }
    }
    OnFailure::Count
}

/// Kubernetes' Job pod failure back-off: 10 s doubling to 6 minutes.
const POD_FAILURE_BACKOFF: Backoff =
    Backoff::exponential(Duration::from_secs(10), Duration::from_secs(360));

/// The back-off before the next pod after `failures` failures, the last at `last` (Unix s).
fn backoff(failures: i32, last: i64, now: i64) -> Option<Duration> {
    if failures <= 0 {
        return None;
    }
    let delay = POD_FAILURE_BACKOFF.delay((failures - 1) as u32).as_secs() as i64;
    let left = last + delay - now;
    (left > 0).then(|| Duration::from_secs(left as u64))
}

async fn reconcile(
    ctx: &Context,
    exp: &Expectations,
    store: &Store<Pod>,
    written: &Written,
    key: ObjectKey,
    job: Option<Arc<Job>>,
) -> Result<Action, skiff_client::Error> {
    let Some(job) = job else {
        exp.forget(&key);
        written.forget(&key);
        return Ok(Action::Done);
    };
    if !written.fresh(&key, &job) {
        // Our own last write is on its way to the cache; its event queues the job again.
        return Ok(Action::RequeueAfter(Duration::from_millis(200)));
    }
    store.wait_until_ready().await;
    let Some(spec) = job.spec.clone() else {
        return Ok(Action::Done);
    };
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &key.namespace);
    let japi: Api<Job> = Api::namespaced(ctx.client.clone(), &key.namespace);
    let r = reference(job.as_ref());
    let now = skiff_client::time::now().as_second();
    let status = job.status.clone().unwrap_or_default();

    // Finished: only the time to live is left.
    let done = condition(&job, "Complete").or_else(|| condition(&job, "Failed"));
    if let Some(c) = done {
        if let Some(ttl) = spec.ttl_seconds_after_finished {
            let at = c
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
            return match japi.delete(&key.name, &dp).await {
                Ok(_) => Ok(Action::Done),
                Err(e) if e.is_not_found() || e.is_conflict() => Ok(Action::Done),
                Err(e) => Err(e),
            };
        }
    }

    let Some(sel) = spec.selector.clone() else {
        return Ok(Action::Done);
    };
    let claimed = owners::claim(&ctx.client, job.as_ref(), &sel, store).await?;

    // Count finished pods once: UID into uncountedTerminatedPods, finalizer off, counter up.
    let uncounted = status.uncounted_terminated_pods.clone().unwrap_or_default();
    let mut unc_s: Vec<String> = uncounted.succeeded.clone().unwrap_or_default();
    let mut unc_f: Vec<String> = uncounted.failed.clone().unwrap_or_default();
    let mut succeeded = status.succeeded.unwrap_or(0);
    let mut failed = status.failed.unwrap_or(0);
    let mut completed: BTreeSet<i32> =
        parse_ranges(status.completed_indexes.as_deref().unwrap_or(""));
    let mut fail_job: Option<(String, String)> = None;
    let mut last_failure = 0i64;
    let mut newly = false;
    for p in &claimed {
        let uid = p.metadata.uid.clone().unwrap_or_default();
        let tracked = tracked(p);
        if !finished(p) || !tracked || unc_s.contains(&uid) || unc_f.contains(&uid) {
            continue;
        }
        newly = true;
        if pods::phase(p) == "Succeeded" {
            unc_s.push(uid);
        } else {
            match failure_policy(&job, p) {
                OnFailure::Ignore => {}
                OnFailure::FailJob(msg) => {
                    fail_job.get_or_insert(("PodFailurePolicy".into(), msg));
                    unc_f.push(uid);
                }
                OnFailure::Count => unc_f.push(uid),
            }
        }
    }
    if newly {
        // Recorded before any finalizer comes off: a pod released but not yet counted is
        // then still listed here.
        match write_status(
            &japi,
            &key,
            json!({"uncountedTerminatedPods": {"succeeded": unc_s, "failed": unc_f}}),
        )
        .await?
        {
            Some(j) => written.note(&key, &j),
            None => return Ok(Action::Done),
        }
    }
    for p in claimed.iter().filter(|p| finished(p)) {
        let uid = p.metadata.uid.clone().unwrap_or_default();
        let tracked = tracked(p);
        let listed = unc_s.contains(&uid) || unc_f.contains(&uid);
        // Ignored failures are not listed: their finalizer comes off all the same.
        let ignored = pods::phase(p) == "Failed" && failure_policy(&job, p) == OnFailure::Ignore;
        if tracked && (listed || ignored) {
            let rest: Vec<&String> = p
                .metadata
                .finalizers
                .iter()
                .flatten()
                .filter(|f| *f != TRACKING)
                .collect();
            match api
                .patch(
                    p.metadata.name.as_deref().unwrap_or_default(),
                    &PatchParams::default(),
                    &Patch::Merge(json!({"metadata": {"finalizers": rest, "resourceVersion": p.metadata.resource_version}})),
                )
                .await
            {
                Ok(_) => {}
                Err(e) if e.is_not_found() || e.is_conflict() => {}
                Err(e) => return Err(e),
            }
        }
    }
    // Move what is released (finalizer off, or pod gone) to the counters.
    let still_tracked: HashSet<String> = claimed
        .iter()
        .filter(|p| tracked(p))
        .filter_map(|p| p.metadata.uid.clone())
        .collect();
    let by_uid = |uid: &str| {
        claimed
            .iter()
            .find(|p| p.metadata.uid.as_deref() == Some(uid))
            .cloned()
    };
    let (mut keep_s, mut keep_f) = (Vec::new(), Vec::new());
    for uid in unc_s.drain(..) {
        if still_tracked.contains(&uid) {
            keep_s.push(uid);
        } else {
            succeeded += 1;
            if let Some(i) = by_uid(&uid).as_deref().and_then(index_of) {
                completed.insert(i);
            }
        }
    }
    for uid in unc_f.drain(..) {
        if still_tracked.contains(&uid) {
            keep_f.push(uid);
        } else {
            failed += 1;
        }
    }
    for p in claimed.iter().filter(|p| pods::phase(p) == "Failed") {
        let t = p
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|cs| {
                cs.iter()
                    .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref())
                    .map(|t| t.0.as_second())
                    .max()
            })
            .or_else(|| {
                p.metadata
                    .creation_timestamp
                    .as_ref()
                    .map(|t| t.0.as_second())
            })
            .unwrap_or(0);
        last_failure = last_failure.max(t);
    }

    let active: Vec<Arc<Pod>> = claimed
        .iter()
        .filter(|p| !finished(p) && p.metadata.deletion_timestamp.is_none())
        .cloned()
        .collect();
    let indexed = spec.completion_mode.as_deref() == Some("Indexed");
    let parallelism = spec.parallelism.unwrap_or(1).max(0);
    let completions = spec.completions;
    let backoff_limit = spec.backoff_limit.unwrap_or(6);
    let start = status
        .start_time
        .as_ref()
        .map(|t| t.0.as_second())
        .filter(|_| spec.suspend != Some(true));

    // Decide: failed, complete, or keep going — counting pods finished but not yet moved to
    // the counters (and, for Indexed jobs, their indexes).
    let total_s = succeeded + keep_s.len() as i32;
    let total_f = failed + keep_f.len() as i32;
    let mut done_idx = completed.clone();
    done_idx.extend(
        claimed
            .iter()
            .filter(|p| pods::phase(p) == "Succeeded")
            .filter_map(|p| index_of(p)),
    );
    let counting = !keep_s.is_empty() || !keep_f.is_empty();
    let mut end: Option<(&str, String, String)> = None;
    if let Some((reason, msg)) = fail_job {
        end = Some(("Failed", reason, msg));
    } else if total_f > backoff_limit {
        end = Some((
            "Failed",
            "BackoffLimitExceeded".into(),
            "Job has reached the specified backoff limit".into(),
        ));
    } else if let (Some(deadline), Some(s)) = (spec.active_deadline_seconds, start) {
        if now - s >= deadline {
            end = Some((
                "Failed",
                "DeadlineExceeded".into(),
                "Job was active longer than specified deadline".into(),
            ));
        }
    }
    if end.is_none() {
        let complete = match (indexed, completions) {
            (true, Some(c)) => (0..c).all(|i| done_idx.contains(&i)),
            (false, Some(c)) => total_s >= c,
            (_, None) => total_s > 0 && active.is_empty(),
        };
        // Complete once every finished pod is counted, so the counts it shows are final.
        if complete && !counting {
            end = Some(("Complete", String::new(), String::new()));
        } else if complete {
            return Ok(Action::RequeueAfter(Duration::from_millis(200)));
        }
    }
    let suspended = spec.suspend == Some(true);
    let mut wake: Option<Duration> = None;
    let satisfied = exp.satisfied(&key, store);
    if end.is_some() || suspended {
        // Nothing more runs.
        for p in &active {
            delete_pod(&api, p).await?;
        }
    } else if satisfied {
        let want: i32 = match (indexed, completions) {
            (false, Some(c)) => parallelism.min(c - total_s).max(0),
            (_, None) if total_s > 0 => 0,
            _ => parallelism,
        };
        let mut to_make: Vec<Option<i32>> = Vec::new();
        if indexed {
            let running: HashSet<i32> = active.iter().filter_map(|p| index_of(p)).collect();
            let free = (want - active.len() as i32).max(0) as usize;
            to_make = (0..completions.unwrap_or(0))
                .filter(|i| !done_idx.contains(i) && !running.contains(i))
                .take(free)
                .map(Some)
                .collect();
        } else {
            let n = (want - active.len() as i32).max(0);
            to_make.resize(n as usize, None);
        }
        // At most a burst per sync; the pods' creation brings the Job back for the rest.
        to_make.truncate(pods::BURST);
        if !to_make.is_empty() {
            if let Some(d) = backoff(total_f, last_failure, now) {
                wake = Some(d);
                to_make.clear();
            }
        }
        let mut new_pods = Vec::new();
        for idx in to_make {
            let mut pod = pods::from_template(
                &spec.template,
                &key.namespace,
                &key.name,
                owners::controller_ref(job.as_ref()),
            );
            pod.metadata
                .finalizers
                .get_or_insert_with(Vec::new)
                .push(TRACKING.into());
            if let Some(i) = idx {
                pod.metadata.generate_name = Some(format!("{}-{i}-", key.name));
                pod.metadata
                    .annotations
                    .get_or_insert_with(Default::default)
                    .insert(INDEX.into(), i.to_string());
                pod.metadata
                    .labels
                    .get_or_insert_with(Default::default)
                    .insert(INDEX.into(), i.to_string());
                if let Some(ps) = pod.spec.as_mut() {
                    ps.hostname = Some(format!("{}-{i}", key.name));
                    for c in ps
                        .containers
                        .iter_mut()
                        .chain(ps.init_containers.iter_mut().flatten())
                    {
                        c.env.get_or_insert_with(Vec::new).push(EnvVar {
                            name: "JOB_COMPLETION_INDEX".into(),
                            value: Some(i.to_string()),
                            value_from: None,
                        });
                    }
                }
            }
            new_pods.push(pod);
        }
        pods::create_each(ctx, exp, &key, &r, new_pods).await?;
    }

    // Status.
    let now_t = skiff_client::time::now_rfc3339();
    let mut conditions: Vec<Value> = status
        .conditions
        .clone()
        .unwrap_or_default()
        .iter()
        .map(|c| serde_json::to_value(c).unwrap_or_default())
        .collect();
    let has = |cs: &[Value], t: &str| cs.iter().any(|c| c["type"] == t && c["status"] == "True");
    let set = |cs: &mut Vec<Value>, t: &str, status: &str, reason: &str, msg: &str| {
        cs.retain(|c| c["type"] != t);
        cs.push(
            json!({"type": t, "status": status, "reason": reason, "message": msg,
            "lastProbeTime": now_t, "lastTransitionTime": now_t}),
        );
    };
    let was_suspended = has(&conditions, "Suspended");
    if suspended && !was_suspended && end.is_none() {
        set(
            &mut conditions,
            "Suspended",
            "True",
            "JobSuspended",
            "Job suspended",
        );
        ctx.events
            .normal(r.clone(), "Suspended", "Suspend", "Job suspended".into());
    } else if !suspended && was_suspended {
        set(
            &mut conditions,
            "Suspended",
            "False",
            "JobResumed",
            "Job resumed",
        );
        ctx.events
            .normal(r.clone(), "Resumed", "Resume", "Job resumed".into());
    }
    let mut completion_time = status.completion_time.as_ref().map(|t| t.0.to_string());
    if let Some((t, reason, msg)) = &end {
        if !has(&conditions, t) {
            if *t == "Complete" {
                set(
                    &mut conditions,
                    "SuccessCriteriaMet",
                    "True",
                    "CompletionsReached",
                    "Reached expected number of succeeded pods",
                );
                set(
                    &mut conditions,
                    "Complete",
                    "True",
                    "CompletionsReached",
                    "Reached expected number of succeeded pods",
                );
                completion_time = Some(now_t.clone());
                ctx.events
                    .normal(r.clone(), "Completed", "Complete", "Job completed".into());
            } else {
                set(&mut conditions, "FailureTarget", "True", reason, msg);
                set(&mut conditions, "Failed", "True", reason, msg);
                ctx.events.warning(r.clone(), reason, "Fail", msg.clone());
            }
        }
    }
    let start_time = match (&status.start_time, suspended) {
        (Some(t), false) => Some(t.0.to_string()),
        (None, false) => Some(now_t.clone()),
        (_, true) => None,
    };
    let ready = active.iter().filter(|p| pods::is_ready(p)).count();
    let terminating = claimed
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_some() && !finished(p))
        .count();
    let active_n = if end.is_some() || suspended {
        0
    } else {
        active.len()
    };
    let new_status = json!({
        "active": active_n,
        "ready": ready,
        "terminating": terminating,
        "succeeded": succeeded,
        "failed": failed,
        "startTime": start_time,
        "completionTime": completion_time,
        "conditions": if conditions.is_empty() { Value::Null } else { Value::Array(conditions) },
        "uncountedTerminatedPods": {"succeeded": keep_s, "failed": keep_f},
        "completedIndexes": if indexed { Value::from(ranges(&completed)) } else { Value::Null },
    });
    let old = serde_json::to_value(&status).unwrap_or_default();
    let norm = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = v.as_object_mut() {
            m.retain(|_, x| {
                !(x.is_null()
                    || x.as_i64() == Some(0)
                    || x.as_str() == Some("")
                    || x.as_object().is_some_and(|o| {
                        o.values()
                            .all(|a| a.as_array().is_none_or(|a| a.is_empty()))
                    }))
            });
        }
        v
    };
    if norm(&old) != norm(&new_status) {
        if let Some(j) = write_status(&japi, &key, new_status).await? {
            written.note(&key, &j);
        }
    }
    if end.is_none() && !suspended {
        if let (Some(deadline), Some(s)) = (spec.active_deadline_seconds, start) {
            let left = Duration::from_secs((s + deadline - now).max(0) as u64 + 1);
            wake = Some(wake.map_or(left, |w| w.min(left)));
        }
    }
    if end.is_some() && spec.ttl_seconds_after_finished.is_some() {
        wake = Some(Duration::from_secs(
            u64::from(spec.ttl_seconds_after_finished.unwrap_or(0).max(0) as u32) + 1,
        ));
    }
    Ok(match wake {
        Some(d) => Action::RequeueAfter(d),
        None => Action::Done,
    })
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

async fn write_status(
    api: &Api<Job>,
    key: &ObjectKey,
    status: Value,
) -> Result<Option<Job>, skiff_client::Error> {
    crate::write_status(api, &key.name, status).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completed_indexes_as_ranges() {
        let s: BTreeSet<i32> = [0, 1, 2, 4, 6, 7].into();
        assert_eq!(ranges(&s), "0-2,4,6-7");
        assert_eq!(parse_ranges("0-2,4,6-7"), s);
        assert_eq!(ranges(&BTreeSet::new()), "");
        assert!(parse_ranges("").is_empty());
    }

    #[test]
    fn back_off_doubles_from_ten_seconds_to_six_minutes() {
        assert_eq!(backoff(0, 100, 100), None);
        assert_eq!(backoff(1, 100, 100), Some(Duration::from_secs(10)));
        assert_eq!(backoff(2, 100, 105), Some(Duration::from_secs(15)));
        assert_eq!(backoff(10, 100, 100), Some(Duration::from_secs(360)));
        assert_eq!(backoff(1, 100, 111), None);
    }

    #[test]
    fn pod_failure_policy_rules_by_exit_code() {
        let job: Job = serde_json::from_value(
            json!({"spec": {"template": {}, "podFailurePolicy": {"rules": [
            {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [42]}},
            {"action": "Ignore", "onExitCodes": {"operator": "In", "values": [3]}}]}}}),
        )
        .unwrap();
        let pod = |code: i32| -> Pod {
            serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "n"}, "status": {"phase": "Failed",
                "containerStatuses": [{"name": "c", "image": "", "imageID": "", "ready": false, "restartCount": 0,
                    "state": {"terminated": {"exitCode": code}}}]}})).unwrap()
        };
        assert!(matches!(
            failure_policy(&job, &pod(42)),
            OnFailure::FailJob(_)
        ));
        assert_eq!(failure_policy(&job, &pod(3)), OnFailure::Ignore);
        assert_eq!(failure_policy(&job, &pod(1)), OnFailure::Count);
    }
}
