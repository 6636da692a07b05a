//! batch/v1: Jobs and CronJobs.

use k8s_openapi::api::batch::v1::{CronJob, Job, JobSpec};
use serde_json::{json, Value};

use super::{col, containers_images, i, s, selector_text, Builtin, Column, Typed};
use crate::error::Cause;
use crate::registry::{apps, pod};
use crate::validation as v;

const AGE: &str =
    "CreationTimestamp is a timestamp representing the server time when this object was created.";
const NAME: &str = "Name must be unique within a namespace.";

/// The jobs resource.
pub static JOBS: Builtin = Builtin {
    group: "batch",
    version: "v1",
    kind: "Job",
    plural: "jobs",
    singular: "job",
    short_names: &[],
    categories: &["all"],
    namespaced: true,
    subresources: &[("status", &super::subresource::STATUS)],
    selectable: &["status.successful"],
    has_generation: true,
    strategy: &JOB,
    schema: super::schema_of::<Job>,
};

/// The cronjobs resource.
pub static CRONJOBS: Builtin = Builtin {
    group: "batch",
    version: "v1",
    kind: "CronJob",
    plural: "cronjobs",
    singular: "cronjob",
    short_names: &["cj"],
    categories: &["all"],
    namespaced: true,
    subresources: &[("status", &super::subresource::STATUS)],
    selectable: &[],
    has_generation: true,
    strategy: &CRON,
    schema: super::schema_of::<CronJob>,
};

static JOB: Typed<Job> = Typed {
    status: true,
    defaults: job_defaults,
    validate: validate_job,
    validate_update: job_update,
    prepare_create: job_prepare,
    ..Typed::new(job_columns, job_cells)
};

static CRON: Typed<CronJob> = Typed {
    status: true,
    defaults: cron_defaults,
    validate: validate_cron,
    validate_update: super::no_validate_update,
    prepare_create: super::clear_status,
    ..Typed::new(cron_columns, cron_cells)
};

/// Gives a job without `manualSelector` the selector and template labels Kubernetes generates
/// from its uid.
fn job_prepare(obj: &mut Value) {
    super::clear_status(obj);
    let uid = s(obj, "/metadata/uid");
    let name = s(obj, "/metadata/name");
    if obj.pointer("/spec/manualSelector").and_then(Value::as_bool) == Some(true) || uid.is_empty()
    {
        return;
    }
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    if !spec.contains_key("selector") {
        spec.insert(
            "selector".into(),
            json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}),
        );
    }
    let template = spec.entry("template").or_insert_with(|| json!({}));
    let meta = template
        .as_object_mut()
        .map(|t| t.entry("metadata").or_insert_with(|| json!({})));
    if let Some(meta) = meta.and_then(Value::as_object_mut) {
        let labels = meta.entry("labels").or_insert_with(|| json!({}));
        if let Some(l) = labels.as_object_mut() {
            l.insert("batch.kubernetes.io/controller-uid".into(), json!(uid));
            l.insert("batch.kubernetes.io/job-name".into(), json!(name));
            l.insert("controller-uid".into(), json!(uid));
            l.insert("job-name".into(), json!(name));
        }
    }
}

/// Defaults of a job spec (shared with cron job templates).
pub fn default_job_spec(spec: &mut JobSpec) {
    if spec.completions.is_none() && spec.parallelism.is_none() {
        spec.completions = Some(1);
    }
    spec.parallelism.get_or_insert(1);
    spec.backoff_limit.get_or_insert(6);
    spec.completion_mode
        .get_or_insert_with(|| "NonIndexed".into());
    spec.suspend.get_or_insert(false);
    spec.manual_selector.get_or_insert(false);
    spec.pod_replacement_policy
        .get_or_insert_with(|| "TerminatingOrFailed".into());
    if let Some(t) = spec.template.spec.as_mut() {
        pod::default_spec(t);
    }
}

fn job_defaults(j: &mut Job) {
    if let Some(spec) = j.spec.as_mut() {
        default_job_spec(spec);
    }
}

fn validate_job_spec(spec: &JobSpec, with_selector: bool, out: &mut Vec<Cause>) {
    v::non_negative("spec.parallelism", spec.parallelism.map(i64::from), out);
    v::non_negative("spec.completions", spec.completions.map(i64::from), out);
    v::non_negative("spec.backoffLimit", spec.backoff_limit.map(i64::from), out);
    if let Some(d) = spec.active_deadline_seconds {
        if d <= 0 {
            out.push(Cause::invalid(
                "spec.activeDeadlineSeconds",
                &json!(d),
                "must be greater than 0",
            ));
        }
    }
    v::one_of(
        "spec.completionMode",
        spec.completion_mode.as_deref(),
        &["NonIndexed", "Indexed"],
        out,
    );
    if spec.completion_mode.as_deref() == Some("Indexed") && spec.completions.is_none() {
        out.push(Cause::required("spec.completions"));
    }
    if with_selector {
        apps::selector_and_template(
            spec.selector.as_ref(),
            Some(&spec.template),
            "spec.template",
            &["OnFailure", "Never"],
            out,
        );
    } else if let Some(t) = &spec.template.spec {
        pod::validate_spec("spec.template.spec", t, out);
        let rp = t.restart_policy.as_deref().unwrap_or("Always");
        if rp != "OnFailure" && rp != "Never" {
            out.push(Cause::not_supported(
                "spec.template.spec.restartPolicy",
                rp,
                &["OnFailure", "Never"],
            ));
        }
    } else {
        out.push(Cause::required("spec.template.spec"));
    }
}

fn validate_job(j: &Job) -> Vec<Cause> {
    let mut out = Vec::new();
    match &j.spec {
        None => out.push(Cause::required("spec")),
        Some(spec) => validate_job_spec(
            spec,
            spec.selector.is_some() || spec.manual_selector == Some(true),
            &mut out,
        ),
    }
    out
}

fn job_update(new: &Job, old: &Job) -> Vec<Cause> {
    let mut out = Vec::new();
    let (Some(n), Some(o)) = (&new.spec, &old.spec) else {
        return out;
    };
    if n.selector != o.selector {
        out.push(Cause::immutable("spec.selector"));
    }
    if n.completions != o.completions {
        out.push(Cause::immutable("spec.completions"));
    }
    if n.completion_mode != o.completion_mode {
        out.push(Cause::immutable("spec.completionMode"));
    }
    // The template may change only while the job is suspended (scheduling directives).
    if n.template != o.template && o.suspend != Some(true) {
        out.push(Cause::immutable("spec.template"));
    }
    out
}

fn cron_defaults(c: &mut CronJob) {
    let Some(spec) = c.spec.as_mut() else { return };
    spec.concurrency_policy
        .get_or_insert_with(|| "Allow".into());
    spec.suspend.get_or_insert(false);
    spec.successful_jobs_history_limit.get_or_insert(3);
    spec.failed_jobs_history_limit.get_or_insert(1);
    if let Some(js) = spec.job_template.spec.as_mut() {
        default_job_spec(js);
    }
}

/// Whether a cron schedule is well-formed: five fields or one of the `@` forms.
pub fn valid_schedule(s: &str) -> bool {
    let s = s.trim();
    let s = match s.strip_prefix("TZ=").or_else(|| s.strip_prefix("CRON_TZ=")) {
        Some(rest) => rest.split_once(' ').map(|(_, r)| r).unwrap_or(""),
        None => s,
    };
    if let Some(at) = s.strip_prefix('@') {
        return matches!(
            at,
            "yearly" | "annually" | "monthly" | "weekly" | "daily" | "midnight" | "hourly"
        ) || at.strip_prefix("every ").is_some();
    }
    let fields: Vec<&str> = s.split_whitespace().collect();
    if fields.len() != 5 {
        return false;
    }
    let ranges = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)];
    let names: [&[&str]; 5] = [
        &[],
        &[],
        &[],
        &[
            "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
        ],
        &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
    ];
    fields
        .iter()
        .zip(ranges)
        .zip(names)
        .all(|((f, (lo, hi)), names)| {
            f.split(',').all(|part| {
                let (range, step) = match part.split_once('/') {
                    Some((r, st)) => (r, Some(st)),
                    None => (part, None),
                };
                if step.is_some_and(|st| st.parse::<u32>().map(|n| n == 0).unwrap_or(true)) {
                    return false;
                }
                if range == "*" || range == "?" {
                    return true;
                }
                let val = |x: &str| {
                    x.parse::<u32>()
                        .ok()
                        .filter(|n| (lo..=hi).contains(n))
                        .or_else(|| {
                            names
                                .iter()
                                .position(|n| n.eq_ignore_ascii_case(x))
                                .map(|p| p as u32 + lo)
                        })
                };
                match range.split_once('-') {
                    Some((a, b)) => matches!((val(a), val(b)), (Some(a), Some(b)) if a <= b),
                    None => val(range).is_some(),
                }
            })
        })
}

fn validate_cron(c: &CronJob) -> Vec<Cause> {
    let mut out = Vec::new();
    let Some(spec) = &c.spec else {
        out.push(Cause::required("spec"));
        return out;
    };
    if spec.schedule.is_empty() {
        out.push(Cause::required("spec.schedule"));
    } else if !valid_schedule(&spec.schedule) {
        out.push(Cause::invalid(
            "spec.schedule",
            &json!(spec.schedule),
            "unparseable cron schedule",
        ));
    }
    if spec.schedule.contains("TZ") {
        out.push(Cause::invalid(
            "spec.schedule",
            &json!(spec.schedule),
            "cannot use TZ or CRON_TZ in schedule, use timeZone field instead",
        ));
    }
    v::one_of(
        "spec.concurrencyPolicy",
        spec.concurrency_policy.as_deref(),
        &["Allow", "Forbid", "Replace"],
        &mut out,
    );
    v::non_negative(
        "spec.startingDeadlineSeconds",
        spec.starting_deadline_seconds,
        &mut out,
    );
    match &spec.job_template.spec {
        None => out.push(Cause::required("spec.jobTemplate.spec")),
        Some(js) => {
            let mut inner = Vec::new();
            validate_job_spec(js, js.selector.is_some(), &mut inner);
            out.extend(inner.into_iter().map(|mut c| {
                c.field = format!("spec.jobTemplate.{}", c.field);
                c
            }));
        }
    }
    if let Some(name) = &c.metadata.name {
        if name.len() > 52 {
            out.push(Cause::invalid(
                "metadata.name",
                &json!(name),
                "must be no more than 52 characters",
            ));
        }
    }
    out
}

fn wide(obj: &Value, base: &str) -> [Value; 3] {
    let (c, im) = containers_images(obj, &format!("{base}/template/spec/containers"));
    [
        c,
        im,
        json!(selector_text(obj.pointer(&format!("{base}/selector")))),
    ]
}

fn job_columns() -> Vec<Column> {
    vec![
        col("Name", "string", 0, NAME),
        col("Status", "string", 0, "Status of the job."),
        col(
            "Completions",
            "string",
            0,
            "The desired number of successfully finished pods the job should be run with.",
        ),
        col(
            "Duration",
            "string",
            0,
            "Time required to complete the job.",
        ),
        col("Age", "string", 0, AGE),
        col(
            "Containers",
            "string",
            1,
            "Names of each container in the template.",
        ),
        col(
            "Images",
            "string",
            1,
            "Images referenced by each container in the template.",
        ),
        col("Selector", "string", 1, "Label selector for pods."),
    ]
}

fn job_status(j: &Value) -> String {
    let conds = j
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let has = |t: &str| {
        conds
            .iter()
            .any(|c| c["type"] == t && c["status"] == "True")
    };
    if has("Complete") {
        "Complete".into()
    } else if has("Failed") {
        "Failed".into()
    } else if has("FailureTarget") {
        "FailureTarget".into()
    } else if has("SuccessCriteriaMet") {
        "SuccessCriteriaMet".into()
    } else if has("Suspended") || j.pointer("/spec/suspend").and_then(Value::as_bool) == Some(true)
    {
        "Suspended".into()
    } else {
        "Running".into()
    }
}

fn job_cells(j: &Value) -> Vec<Value> {
    let completions = match j.pointer("/spec/completions").and_then(Value::as_i64) {
        Some(c) => format!("{}/{c}", i(j, "/status/succeeded")),
        None => format!(
            "{}/1 of {}",
            i(j, "/status/succeeded"),
            i(j, "/spec/parallelism")
        ),
    };
    let start = s(j, "/status/startTime");
    let end = s(j, "/status/completionTime");
    let duration = match (
        chrono::DateTime::parse_from_rfc3339(&start),
        chrono::DateTime::parse_from_rfc3339(&end),
    ) {
        (Ok(a), Ok(b)) => super::human_duration(b.signed_duration_since(a).num_seconds()),
        (Ok(_), Err(_)) => super::since(&start),
        _ => String::new(),
    };
    let mut c = vec![
        super::name(j),
        json!(job_status(j)),
        json!(completions),
        json!(duration),
        super::age(j),
    ];
    c.extend(wide(j, "/spec"));
    c
}

fn cron_columns() -> Vec<Column> {
    vec![
        col("Name", "string", 0, NAME),
        col("Schedule", "string", 0, "The schedule in Cron format."),
        col(
            "Timezone",
            "string",
            0,
            "The time zone name for the given schedule.",
        ),
        col(
            "Suspend",
            "boolean",
            0,
            "This flag tells the controller to suspend subsequent executions.",
        ),
        col(
            "Active",
            "integer",
            0,
            "A list of pointers to currently running jobs.",
        ),
        col(
            "Last Schedule",
            "string",
            0,
            "Information when was the last time the job was successfully scheduled.",
        ),
        col("Age", "string", 0, AGE),
        col(
            "Containers",
            "string",
            1,
            "Names of each container in the template.",
        ),
        col(
            "Images",
            "string",
            1,
            "Images referenced by each container in the template.",
        ),
        col("Selector", "string", 1, "Label selector for pods."),
    ]
}

fn cron_cells(c: &Value) -> Vec<Value> {
    let last = s(c, "/status/lastScheduleTime");
    let tz = s(c, "/spec/timeZone");
    let active = c
        .pointer("/status/active")
        .and_then(Value::as_array)
        .map(|a| a.len())
        .unwrap_or(0);
    let mut cells = vec![
        super::name(c),
        json!(s(c, "/spec/schedule")),
        json!(if tz.is_empty() {
            "<none>".to_string()
        } else {
            tz
        }),
        json!(c
            .pointer("/spec/suspend")
            .and_then(Value::as_bool)
            .unwrap_or(false)),
        json!(active),
        json!(if last.is_empty() {
            "<none>".to_string()
        } else {
            super::since(&last)
        }),
        super::age(c),
    ];
    cells.extend(wide(c, "/spec/jobTemplate/spec"));
    cells
}

#[cfg(test)]
mod tests {
    use super::valid_schedule;

    #[test]
    fn schedules() {
        assert!(valid_schedule("*/5 * * * *"));
        assert!(valid_schedule("0 3 * * mon-fri"));
        assert!(valid_schedule("@hourly"));
        assert!(!valid_schedule("61 * * * *"));
        assert!(!valid_schedule("* * *"));
        assert!(!valid_schedule("@fortnightly"));
    }
}
