//! The CronJob controller: a Job for each time the schedule (five cron fields, `@hourly`
//! and the other nicknames, or `@every <duration>`) comes round, in `timeZone` (the
//! controller manager's local zone when unset, as Kubernetes does). `concurrencyPolicy`
//! `Allow`/`Forbid`/`Replace`, `startingDeadlineSeconds`, `suspend`, the history limits,
//! `status.active`, `lastScheduleTime` and `lastSuccessfulTime`. Missed runs are handled as
//! Kubernetes does: only the most recent missed time is run, and not at all once it is more
//! than `startingDeadlineSeconds` late.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::json;
use skiff_client::controller::{Action, Config as RunConfig, Controller};
use skiff_client::events::reference;
use skiff_client::reflector::{ObjectKey, Store};
use skiff_client::{Api, DeleteParams, PostParams, PropagationPolicy};
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::{owners, Context};

/// The annotation on a Job with the time it was scheduled for.
pub const SCHEDULED: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";

/// Runs the controller until `shutdown`, reading the time from `clock`.
pub async fn run(ctx: Arc<Context>, clock: Clock, shutdown: CancellationToken) {
    let informer = ctx.informers.informer::<CronJob>();
    let jobs = ctx.owned::<Job>();
    let ctrl = Controller::new(informer.clone(), RunConfig::default());
    owners::feed_owners(
        jobs.clone(),
        informer.store(),
        |_: &CronJob| None,
        ctrl.queue(),
        shutdown.clone(),
    );
    // A clock moved by hand wakes every CronJob.
    let (queue, store, c, stop) = (
        ctrl.queue(),
        informer.store(),
        clock.clone(),
        shutdown.clone(),
    );
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = c.moved() => {}
            }
            for k in store.keys() {
                queue.add(k);
            }
        }
    });
    let job_store = jobs.store();
    ctrl.run(
        move |key, cj| {
            let (ctx, job_store, clock) = (ctx.clone(), job_store.clone(), clock.clone());
            async move { reconcile(&ctx, &job_store, &clock, key, cj).await }
        },
        shutdown,
    )
    .await;
}

/// A parsed schedule.
pub enum Schedule {
    /// Cron fields (or a nickname).
    Cron(Box<croner::Cron>),
    /// `@every <duration>`, counted from the CronJob's creation.
    Every(Duration),
}

impl Schedule {
    /// Parses a CronJob's `schedule`.
    pub fn parse(s: &str) -> Result<Schedule, String> {
        let s = s.trim();
        if let Some(d) = s.strip_prefix("@every ") {
            let d = skiff_rules::duration::parse(d).map_err(|e| e.to_string())?;
            if d.is_zero() {
                return Err(format!(
                    "invalid schedule {s:?}: @every needs a positive duration"
                ));
            }
            return Ok(Schedule::Every(d));
        }
        croner::Cron::from_str(s)
            .map(|c| Schedule::Cron(Box::new(c)))
            .map_err(|e| format!("invalid schedule {s:?}: {e}"))
    }

    /// The scheduled times in `(after, until]` — how many, and the last — and the first one
    /// after `until`; `origin` anchors `@every`.
    pub fn between<Tz: TimeZone>(
        &self,
        tz: &Tz,
        origin: DateTime<Utc>,
        after: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> (usize, Option<DateTime<Utc>>, Option<DateTime<Utc>>) {
        match self {
            Schedule::Every(d) => {
                let step = chrono::Duration::from_std(*d).unwrap_or(chrono::Duration::MAX);
                let n_after = ((after - origin).num_milliseconds().max(0)
                    / step.num_milliseconds().max(1)) as i32;
                let mut t = origin + step * (n_after + 1);
                while t <= after {
                    t += step;
                }
                let (mut count, mut last) = (0, None);
                while t <= until && count < 1000 {
                    count += 1;
                    last = Some(t);
                    t += step;
                }
                let next = if t > until { Some(t) } else { None };
                (count, last, next)
            }
            Schedule::Cron(c) => {
                let mut count = 0;
                let mut last = None;
                let mut t = after.with_timezone(tz);
                let end = until.with_timezone(tz);
                let next = loop {
                    match c.find_next_occurrence(&t, false) {
                        Ok(n) if n <= end => {
                            count += 1;
                            last = Some(n.with_timezone(&Utc));
                            t = n;
                            // Beyond 100 missed times only the last one matters: jump to it.
                            if count > 100 {
                                if let Ok(p) = c.find_previous_occurrence(&end, true) {
                                    last = Some(p.with_timezone(&Utc));
                                }
                                t = end.clone();
                            }
                        }
                        Ok(n) => break Some(n.with_timezone(&Utc)),
                        Err(_) => break None,
                    }
                };
                (count, last, next)
            }
        }
    }
}

fn finished(j: &Job) -> Option<(&'static str, Option<DateTime<Utc>>)> {
    let cs = j.status.as_ref()?.conditions.as_ref()?;
    for c in cs {
        if c.status != "True" {
            continue;
        }
        let at = c
            .last_transition_time
            .as_ref()
            .and_then(|t| DateTime::from_timestamp(t.0.as_second(), 0));
        if c.type_ == "Complete" {
            return Some(("Complete", at));
        }
        if c.type_ == "Failed" {
            return Some(("Failed", at));
        }
    }
    None
}

fn time_of(t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) -> DateTime<Utc> {
    DateTime::from_timestamp(t.0.as_second(), 0).unwrap_or_default()
}

async fn reconcile(
    ctx: &Context,
    jobs: &Store<Job>,
    clock: &Clock,
    key: ObjectKey,
    cj: Option<Arc<CronJob>>,
) -> Result<Action, skiff_client::Error> {
    let Some(cj) = cj else {
        return Ok(Action::Done);
    };
    jobs.wait_until_ready().await;
    let Some(spec) = cj.spec.clone() else {
        return Ok(Action::Done);
    };
    let now = clock.now();
    let r = reference(cj.as_ref());
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &key.namespace);
    let cjapi: Api<CronJob> = Api::namespaced(ctx.client.clone(), &key.namespace);
    let uid = cj.metadata.uid.clone().unwrap_or_default();
    let mut owned: Vec<Arc<Job>> = jobs
        .by_index(owners::CONTROLLER_INDEX, &uid)
        .into_iter()
        .filter(|j| j.metadata.namespace.as_deref() == Some(key.namespace.as_str()))
        .collect();
    owned.sort_by_key(|j| j.metadata.creation_timestamp.as_ref().map(time_of));
    let status = cj.status.clone().unwrap_or_default();

    // What ran: active jobs, the last success, and history beyond the limits.
    let mut active: Vec<&Arc<Job>> = Vec::new();
    let mut last_success = status.last_successful_time.as_ref().map(time_of);
    let (mut succeeded, mut failed) = (Vec::new(), Vec::new());
    for j in &owned {
        match finished(j) {
            None if j.metadata.deletion_timestamp.is_none() => active.push(j),
            None => {}
            Some(("Complete", at)) => {
                if let Some(at) = at {
                    last_success = Some(last_success.map_or(at, |l| l.max(at)));
                }
                succeeded.push(j.clone());
            }
            Some(_) => failed.push(j.clone()),
        }
    }
    let was_active: Vec<String> = status
        .active
        .iter()
        .flatten()
        .filter_map(|a| a.name.clone())
        .collect();
    for j in succeeded.iter().chain(failed.iter()) {
        let n = j.metadata.name.clone().unwrap_or_default();
        if was_active.contains(&n) {
            let how = if finished(j).map(|f| f.0) == Some("Complete") {
                "Completed"
            } else {
                "Failed"
            };
            ctx.events.normal(
                r.clone(),
                "SawCompletedJob",
                "Sync",
                format!("Saw completed job: {n}, condition: {how}"),
            );
        }
    }
    for (list, limit) in [
        (&succeeded, spec.successful_jobs_history_limit.unwrap_or(3)),
        (&failed, spec.failed_jobs_history_limit.unwrap_or(1)),
    ] {
        let extra = list.len().saturating_sub(limit.max(0) as usize);
        for j in list.iter().take(extra) {
            delete_job(&api, j).await?;
            ctx.events.normal(
                r.clone(),
                "SuccessfulDelete",
                "Delete",
                format!("Deleted job {}", j.metadata.name.as_deref().unwrap_or("")),
            );
        }
    }

    // The schedule.
    let schedule = match Schedule::parse(&spec.schedule) {
        Ok(s) => s,
        Err(e) => {
            ctx.events
                .warning(r.clone(), "UnparseableSchedule", "Sync", e);
            return write_status(
                &cjapi,
                &key,
                &active,
                status.last_schedule_time.as_ref().map(time_of),
                last_success,
                &status,
            )
            .await
            .map(|_| Action::Done);
        }
    };
    let created = cj
        .metadata
        .creation_timestamp
        .as_ref()
        .map(time_of)
        .unwrap_or(now);
    let mut earliest = scheduled_max(&owned, &status).unwrap_or(created);
    if let Some(d) = spec.starting_deadline_seconds {
        earliest = earliest.max(now - chrono::Duration::seconds(d));
    }
    let (missed, most_recent, next) = match spec.time_zone.as_deref() {
        Some(name) => match name.parse::<chrono_tz::Tz>() {
            Ok(tz) => schedule.between(&tz, created, earliest, now),
            Err(_) => {
                ctx.events.warning(
                    r.clone(),
                    "UnknownTimeZone",
                    "Sync",
                    format!("invalid timeZone: {name:?}"),
                );
                return Ok(Action::Done);
            }
        },
        None => schedule.between(&chrono::Local, created, earliest, now),
    };
    // Never behind the jobs themselves: the cached status may predate our last write.
    let mut last_schedule = scheduled_max(&owned, &status);
    let wake = next.map(|n| (n - now).to_std().unwrap_or_default() + Duration::from_millis(100));
    let suspended = spec.suspend == Some(true);
    if let (Some(t), false) = (most_recent, suspended) {
        if missed > 100 {
            ctx.events.warning(r.clone(), "TooManyMissedTimes", "Sync",
                format!("too many missed start times: {missed}. Set or decrease .spec.startingDeadlineSeconds or check clock skew"));
        }
        let too_late = spec
            .starting_deadline_seconds
            .is_some_and(|d| t + chrono::Duration::seconds(d) < now);
        let name = format!("{}-{}", key.name, t.timestamp() / 60);
        let exists = owned
            .iter()
            .any(|j| j.metadata.name.as_deref() == Some(name.as_str()));
        let policy = spec.concurrency_policy.as_deref().unwrap_or("Allow");
        if too_late {
            ctx.events.warning(
                r.clone(),
                "MissedSchedule",
                "Sync",
                format!("Missed scheduled time to start a job: {}", t.to_rfc3339()),
            );
        } else if !exists {
            let mut go = true;
            if !active.is_empty() {
                match policy {
                    "Forbid" => {
                        ctx.events.normal(r.clone(), "JobAlreadyActive", "Sync", "Not starting job because prior execution is running and concurrency policy is Forbid".into());
                        go = false;
                    }
                    "Replace" => {
                        for j in &active {
                            delete_job(&api, j).await?;
                            ctx.events.normal(
                                r.clone(),
                                "SuccessfulDelete",
                                "Delete",
                                format!("Deleted job {}", j.metadata.name.as_deref().unwrap_or("")),
                            );
                        }
                        active.clear();
                    }
                    _ => {}
                }
            }
            if go {
                let tmpl = spec.job_template.clone();
                let tm = tmpl.metadata.clone().unwrap_or_default();
                let mut ann = tm.annotations.clone().unwrap_or_default();
                let local = match spec
                    .time_zone
                    .as_deref()
                    .and_then(|n| n.parse::<chrono_tz::Tz>().ok())
                {
                    Some(tz) => t.with_timezone(&tz).to_rfc3339(),
                    None => t.with_timezone(&chrono::Local).to_rfc3339(),
                };
                ann.insert(SCHEDULED.into(), local);
                let job = Job {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        namespace: Some(key.namespace.clone()),
                        labels: tm.labels.clone(),
                        annotations: Some(ann),
                        owner_references: Some(vec![owners::controller_ref(cj.as_ref())]),
                        ..Default::default()
                    },
                    spec: tmpl.spec.clone(),
                    status: None,
                };
                match api.create(&PostParams::default(), &job).await {
                    Ok(_) => {
                        ctx.events.normal(
                            r.clone(),
                            "SuccessfulCreate",
                            "Create",
                            format!("Created job {name}"),
                        );
                        last_schedule = Some(t);
                    }
                    Err(e) if e.is_already_exists() => last_schedule = Some(t),
                    Err(e) if e.api().is_some_and(|a| a.code == 403) => return Ok(Action::Done),
                    Err(e) => {
                        ctx.events.warning(
                            r.clone(),
                            "FailedCreate",
                            "Create",
                            format!("Error creating job: {e}"),
                        );
                        return Err(e);
                    }
                }
            }
        }
    }
    // The active list names what runs now (including a job just made: it is in the cache
    // soon; until then the name is enough).
    let mut refs: Vec<ObjectReference> = active.iter().map(|j| job_ref(j)).collect();
    if let Some(t) =
        last_schedule.filter(|t| Some(*t) != status.last_schedule_time.as_ref().map(time_of))
    {
        let name = format!("{}-{}", key.name, t.timestamp() / 60);
        let done = owned
            .iter()
            .any(|j| j.metadata.name.as_deref() == Some(name.as_str()) && finished(j).is_some());
        if !done
            && !refs
                .iter()
                .any(|r| r.name.as_deref() == Some(name.as_str()))
        {
            refs.push(ObjectReference {
                api_version: Some("batch/v1".into()),
                kind: Some("Job".into()),
                name: Some(name),
                namespace: Some(key.namespace.clone()),
                ..Default::default()
            });
        }
    }
    write_refs(&cjapi, &key, refs, last_schedule, last_success, &status).await?;
    Ok(match wake {
        Some(d) => Action::RequeueAfter(d),
        None => Action::Done,
    })
}

/// The latest time a job was scheduled for: from the jobs' annotations, or the status.
fn scheduled_max(
    owned: &[Arc<Job>],
    status: &k8s_openapi::api::batch::v1::CronJobStatus,
) -> Option<DateTime<Utc>> {
    owned
        .iter()
        .filter_map(|j| j.metadata.annotations.as_ref()?.get(SCHEDULED))
        .filter_map(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
        .chain(status.last_schedule_time.as_ref().map(time_of))
        .max()
}

fn job_ref(j: &Job) -> ObjectReference {
    ObjectReference {
        api_version: Some("batch/v1".into()),
        kind: Some("Job".into()),
        name: j.metadata.name.clone(),
        namespace: j.metadata.namespace.clone(),
        uid: j.metadata.uid.clone(),
        resource_version: j.metadata.resource_version.clone(),
        ..Default::default()
    }
}

async fn delete_job(api: &Api<Job>, j: &Job) -> Result<(), skiff_client::Error> {
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        precondition_uid: j.metadata.uid.clone(),
        ..Default::default()
    };
    match api
        .delete(j.metadata.name.as_deref().unwrap_or_default(), &dp)
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if e.is_not_found() || e.is_conflict() => Ok(()),
        Err(e) => Err(e),
    }
}

async fn write_status(
    api: &Api<CronJob>,
    key: &ObjectKey,
    active: &[&Arc<Job>],
    last_schedule: Option<DateTime<Utc>>,
    last_success: Option<DateTime<Utc>>,
    old: &k8s_openapi::api::batch::v1::CronJobStatus,
) -> Result<(), skiff_client::Error> {
    let refs = active.iter().map(|j| job_ref(j)).collect();
    write_refs(api, key, refs, last_schedule, last_success, old).await
}

async fn write_refs(
    api: &Api<CronJob>,
    key: &ObjectKey,
    refs: Vec<ObjectReference>,
    last_schedule: Option<DateTime<Utc>>,
    last_success: Option<DateTime<Utc>>,
    old: &k8s_openapi::api::batch::v1::CronJobStatus,
) -> Result<(), skiff_client::Error> {
    let fmt =
        |t: Option<DateTime<Utc>>| t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    let names = |r: &[ObjectReference]| r.iter().map(|x| x.name.clone()).collect::<Vec<_>>();
    let same = names(&refs) == names(old.active.as_deref().unwrap_or(&[]))
        && fmt(last_schedule) == fmt(old.last_schedule_time.as_ref().map(time_of))
        && fmt(last_success) == fmt(old.last_successful_time.as_ref().map(time_of));
    if same {
        return Ok(());
    }
    let status = json!({
        "active": if refs.is_empty() { serde_json::Value::Null } else { json!(refs) },
        "lastScheduleTime": fmt(last_schedule),
        "lastSuccessfulTime": fmt(last_success),
    });
    crate::write_status(api, &key.name, status)
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn most_recent_missed_time_and_the_next() {
        let s = Schedule::parse("*/15 * * * *").unwrap();
        let (n, last, next) = s.between(
            &Utc,
            at("2026-01-01T00:00:00Z"),
            at("2026-01-01T00:00:00Z"),
            at("2026-01-01T01:07:00Z"),
        );
        assert_eq!(n, 4);
        assert_eq!(last, Some(at("2026-01-01T01:00:00Z")));
        assert_eq!(next, Some(at("2026-01-01T01:15:00Z")));
        let (n, last, _) = s.between(
            &Utc,
            at("2026-01-01T00:00:00Z"),
            at("2026-01-01T01:00:00Z"),
            at("2026-01-01T01:07:00Z"),
        );
        assert_eq!((n, last), (0, None), "a time already run is not run again");
    }

    #[test]
    fn nicknames_time_zones_and_every() {
        let hourly = Schedule::parse("@hourly").unwrap();
        let (_, last, _) = hourly.between(
            &Utc,
            at("2026-01-01T00:00:00Z"),
            at("2026-01-01T00:10:00Z"),
            at("2026-01-01T02:30:00Z"),
        );
        assert_eq!(last, Some(at("2026-01-01T02:00:00Z")));
        let nine = Schedule::parse("0 9 * * *").unwrap();
        let tokyo: chrono_tz::Tz = "Asia/Tokyo".parse().unwrap();
        let (n, last, _) = nine.between(
            &tokyo,
            at("2026-01-01T00:00:00Z"),
            at("2026-01-01T12:00:00Z"),
            at("2026-01-02T12:00:00Z"),
        );
        assert_eq!(
            (n, last),
            (1, Some(at("2026-01-02T00:00:00Z"))),
            "09:00 in Tokyo is midnight UTC"
        );
        let every = Schedule::parse("@every 90m").unwrap();
        let (n, last, next) = every.between(
            &Utc,
            at("2026-01-01T00:00:00Z"),
            at("2026-01-01T00:00:00Z"),
            at("2026-01-01T04:00:00Z"),
        );
        assert_eq!(
            (n, last, next),
            (
                2,
                Some(at("2026-01-01T03:00:00Z")),
                Some(at("2026-01-01T04:30:00Z"))
            )
        );
        assert!(Schedule::parse("not a schedule").is_err());
        assert!(Schedule::parse("@every 0s").is_err());
    }
}
