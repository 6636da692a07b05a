//! batch/v1: Jobs and CronJobs.

use k8s_openapi::api::batch::v1::{
    CronJob, Job, JobSpec, PodFailurePolicy, PodFailurePolicyOnExitCodesRequirement,
    PodFailurePolicyOnPodConditionsPattern, SuccessPolicy,
};
use serde_json::{json, Value};

use super::{col, containers_images, i, s, selector_text, Builtin, Column, Typed};
use crate::error::{Cause, CauseKind};
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
    // With a limit per index, the job-wide limit is off unless given.
    let backoff_limit = if spec.backoff_limit_per_index.is_some() {
        i32::MAX
    } else {
        6
    };
    spec.backoff_limit.get_or_insert(backoff_limit);
    spec.completion_mode
        .get_or_insert_with(|| "NonIndexed".into());
    spec.suspend.get_or_insert(false);
    spec.manual_selector.get_or_insert(false);
    let replacement = if spec.pod_failure_policy.is_some() {
        "Failed"
    } else {
        "TerminatingOrFailed"
    };
    spec.pod_replacement_policy
        .get_or_insert_with(|| replacement.into());
    if let Some(pfp) = spec.pod_failure_policy.as_mut() {
        for pattern in pfp
            .rules
            .iter_mut()
            .flat_map(|r| r.on_pod_conditions.iter_mut().flatten())
        {
            if pattern.status.is_empty() {
                pattern.status = "True".into();
            }
        }
    }
    if let Some(t) = spec.template.spec.as_mut() {
        pod::default_spec(t);
    }
}

fn job_defaults(j: &mut Job) {
    if let Some(spec) = j.spec.as_mut() {
        default_job_spec(spec);
    }
}

/// The most pods an Indexed job may run at once.
const MAX_INDEXED_PARALLELISM: i32 = 100_000;
/// The most failed indexes a job may allow.
const MAX_FAILED_INDEXES: i32 = 100_000;
/// Above this many completions, a limit per index needs `maxFailedIndexes` and tighter caps.
const COMPLETIONS_SOFT_LIMIT: i32 = 100_000;
const PARALLELISM_FOR_HIGH_COMPLETIONS: i32 = 10_000;
const MAX_FAILED_INDEXES_FOR_HIGH_COMPLETIONS: i32 = 10_000;
const MAX_POD_FAILURE_POLICY_RULES: usize = 20;
const MAX_EXIT_CODE_VALUES: usize = 255;
const MAX_POD_CONDITION_PATTERNS: usize = 20;
const MAX_SUCCESS_POLICY_RULES: usize = 20;
const MAX_SUCCEEDED_INDEXES_LENGTH: usize = 64 * 1024;
const MAX_MANAGED_BY_LENGTH: usize = 63;

/// An invalid value reported without the value (Kubernetes' `field.OmitValueType`).
fn invalid_no_value(field: String, detail: &str) -> Cause {
    Cause {
        kind: CauseKind::Invalid,
        field,
        message: detail.into(),
    }
}

/// A list longer than allowed.
fn too_many(field: String, actual: usize, max: usize) -> Cause {
    Cause {
        kind: CauseKind::TooMany,
        field,
        message: format!("{actual}: must have at most {max} items"),
    }
}

/// Go's `%q` of a list of strings: `["a" "b"]`.
fn quoted_list(items: &[&str]) -> String {
    let q: Vec<String> = items.iter().map(|i| format!("\"{i}\"")).collect();
    format!("[{}]", q.join(" "))
}

fn validate_job_spec(spec: &JobSpec, with_selector: bool, out: &mut Vec<Cause>) {
    v::non_negative("spec.parallelism", spec.parallelism.map(i64::from), out);
    v::non_negative("spec.completions", spec.completions.map(i64::from), out);
    v::non_negative(
        "spec.activeDeadlineSeconds",
        spec.active_deadline_seconds,
        out,
    );
    v::non_negative("spec.backoffLimit", spec.backoff_limit.map(i64::from), out);
    v::non_negative(
        "spec.ttlSecondsAfterFinished",
        spec.ttl_seconds_after_finished.map(i64::from),
        out,
    );
    v::non_negative(
        "spec.backoffLimitPerIndex",
        spec.backoff_limit_per_index.map(i64::from),
        out,
    );
    if let Some(m) = spec.max_failed_indexes {
        v::non_negative("spec.maxFailedIndexes", Some(i64::from(m)), out);
        if spec.backoff_limit_per_index.is_none() {
            out.push(Cause::required_because(
                "spec.backoffLimitPerIndex",
                "when maxFailedIndexes is specified",
            ));
        }
    }
    if let Some(m) = &spec.managed_by {
        managed_by(m, out);
    }
    v::one_of(
        "spec.completionMode",
        spec.completion_mode.as_deref(),
        &["NonIndexed", "Indexed"],
        out,
    );
    let indexed = spec.completion_mode.as_deref() == Some("Indexed");
    if indexed {
        indexed_limits(spec, out);
    } else {
        if let Some(b) = spec.backoff_limit_per_index {
            out.push(Cause::invalid(
                "spec.backoffLimitPerIndex",
                &json!(b),
                "requires indexed completion mode",
            ));
        }
        if let Some(m) = spec.max_failed_indexes {
            out.push(Cause::invalid(
                "spec.maxFailedIndexes",
                &json!(m),
                "requires indexed completion mode",
            ));
        }
    }
    if let Some(pfp) = &spec.pod_failure_policy {
        pod_failure_policy(spec, pfp, out);
    }
    if let Some(sp) = &spec.success_policy {
        if indexed {
            success_policy(spec, sp, out);
        } else {
            out.push(Cause::invalid(
                "spec.successPolicy",
                &v::val(sp),
                "requires indexed completion mode",
            ));
        }
    }
    if let Some(rp) = spec.pod_replacement_policy.as_deref() {
        if spec.pod_failure_policy.is_some() {
            if rp != "Failed" {
                out.push(Cause::not_supported(
                    "spec.podReplacementPolicy",
                    rp,
                    &["Failed"],
                ));
            }
        } else {
            v::one_of(
                "spec.podReplacementPolicy",
                Some(rp),
                &["Failed", "TerminatingOrFailed"],
                out,
            );
        }
    }
    // The restart policy is the job's to judge (below), not the template check's.
    let any = &["Always", "OnFailure", "Never"];
    if with_selector {
        apps::selector_and_template(
            spec.selector.as_ref(),
            Some(&spec.template),
            "spec.template",
            any,
            out,
        );
    } else if let Some(t) = &spec.template.spec {
        pod::validate_spec("spec.template.spec", t, out);
    } else {
        out.push(Cause::required("spec.template.spec"));
    }
    if let Some(t) = &spec.template.spec {
        let rp = t.restart_policy.as_deref().unwrap_or("");
        match rp {
            "" | "Always" => out.push(Cause::required_because(
                "spec.template.spec.restartPolicy",
                "valid values: \"OnFailure\", \"Never\"",
            )),
            "OnFailure" if spec.pod_failure_policy.is_some() => out.push(Cause::invalid(
                "spec.template.spec.restartPolicy",
                &json!(rp),
                "only \"Never\" is supported when podFailurePolicy is specified",
            )),
            // Allowed, or no pod's policy at all (the pod spec's own check reports that).
            _ => {}
        }
    }
}

/// `spec.managedBy`: a domain-prefixed path of at most 63 characters.
fn managed_by(m: &str, out: &mut Vec<Cause>) {
    const FIELD: &str = "spec.managedBy";
    match m.split_once('/') {
        None => out.push(Cause::invalid(
            FIELD,
            &json!(m),
            "must be a domain-prefixed path (such as \"acme.io/foo\")",
        )),
        Some((host, path)) => {
            v::subdomain(FIELD, host, out);
            let path_ok = !path.is_empty()
                && path
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "/-._~%!$&'()*+,;=:".contains(c));
            if !path_ok {
                out.push(Cause::invalid(
                    FIELD,
                    &json!(path),
                    "Invalid path: must contain only valid path characters",
                ));
            }
        }
    }
    if m.len() > MAX_MANAGED_BY_LENGTH {
        out.push(Cause::too_long(FIELD, MAX_MANAGED_BY_LENGTH));
    }
}

/// The limits of an Indexed job: `completions` required; parallelism and failed indexes
/// capped so the index lists stay small.
fn indexed_limits(spec: &JobSpec, out: &mut Vec<Cause>) {
    let Some(completions) = spec.completions else {
        out.push(Cause::required_because(
            "spec.completions",
            "when completion mode is Indexed",
        ));
        return;
    };
    if let Some(p) = spec.parallelism.filter(|p| *p > MAX_INDEXED_PARALLELISM) {
        out.push(Cause::invalid(
            "spec.parallelism",
            &json!(p),
            format!("must be less than or equal to {MAX_INDEXED_PARALLELISM} when completion mode is Indexed"),
        ));
    }
    if let Some(m) = spec.max_failed_indexes {
        if m > completions {
            out.push(Cause::invalid(
                "spec.maxFailedIndexes",
                &json!(m),
                "must be less than or equal to completions",
            ));
        }
        if m > MAX_FAILED_INDEXES {
            out.push(Cause::invalid(
                "spec.maxFailedIndexes",
                &json!(m),
                format!("must be less than or equal to {MAX_FAILED_INDEXES}"),
            ));
        }
    }
    if completions > COMPLETIONS_SOFT_LIMIT && spec.backoff_limit_per_index.is_some() {
        match spec.max_failed_indexes {
            None => out.push(Cause::required_because(
                "spec.maxFailedIndexes",
                format!("must be specified when completions is above {COMPLETIONS_SOFT_LIMIT}"),
            )),
            Some(m) if m > MAX_FAILED_INDEXES_FOR_HIGH_COMPLETIONS => out.push(Cause::invalid(
                "spec.maxFailedIndexes",
                &json!(m),
                format!("must be less than or equal to {MAX_FAILED_INDEXES_FOR_HIGH_COMPLETIONS} when completions are above {COMPLETIONS_SOFT_LIMIT} and used with backoff limit per index"),
            )),
            Some(_) => {}
        }
        if let Some(p) = spec
            .parallelism
            .filter(|p| *p > PARALLELISM_FOR_HIGH_COMPLETIONS)
        {
            out.push(Cause::invalid(
                "spec.parallelism",
                &json!(p),
                format!("must be less than or equal to {PARALLELISM_FOR_HIGH_COMPLETIONS} when completions are above {COMPLETIONS_SOFT_LIMIT} and used with backoff limit per index"),
            ));
        }
    }
}

const ACTIONS: &[&str] = &["Count", "FailIndex", "FailJob", "Ignore"];
const OPERATORS: &[&str] = &["In", "NotIn"];
const STATUSES: &[&str] = &["False", "True", "Unknown"];

fn pod_failure_policy(spec: &JobSpec, pfp: &PodFailurePolicy, out: &mut Vec<Cause>) {
    let rules = "spec.podFailurePolicy.rules";
    if pfp.rules.len() > MAX_POD_FAILURE_POLICY_RULES {
        out.push(too_many(
            rules.into(),
            pfp.rules.len(),
            MAX_POD_FAILURE_POLICY_RULES,
        ));
    }
    let names: Vec<&str> = spec
        .template
        .spec
        .iter()
        .flat_map(|s| {
            s.containers
                .iter()
                .chain(s.init_containers.iter().flatten())
        })
        .map(|c| c.name.as_str())
        .collect();
    for (i, rule) in pfp.rules.iter().enumerate() {
        let at = format!("{rules}[{i}]");
        let action = format!("{at}.action");
        match rule.action.as_str() {
            "" => out.push(Cause::required_because(
                action,
                format!("valid values: {}", quoted_list(ACTIONS)),
            )),
            "FailIndex" if spec.backoff_limit_per_index.is_none() => out.push(Cause::invalid(
                action,
                &json!("FailIndex"),
                "requires the backoffLimitPerIndex to be set",
            )),
            a if !ACTIONS.contains(&a) => out.push(Cause::not_supported(action, a, ACTIONS)),
            _ => {}
        }
        let conditions = rule.on_pod_conditions.as_ref().filter(|c| !c.is_empty());
        if let Some(req) = &rule.on_exit_codes {
            on_exit_codes(&format!("{at}.onExitCodes"), req, &names, out);
        }
        if let Some(patterns) = conditions {
            on_pod_conditions(&format!("{at}.onPodConditions"), patterns, out);
        }
        match (rule.on_exit_codes.is_some(), conditions.is_some()) {
            (true, true) => out.push(invalid_no_value(
                at,
                "specifying both OnExitCodes and OnPodConditions is not supported",
            )),
            (false, false) => out.push(invalid_no_value(
                at,
                "specifying one of OnExitCodes and OnPodConditions is required",
            )),
            _ => {}
        }
    }
}

/// Go's `%#v` of a list of exit codes, as Kubernetes prints the bad value.
fn go_int32s(values: &[i32]) -> Value {
    let v: Vec<String> = values.iter().map(i32::to_string).collect();
    Value::String(format!("[]int32{{{}}}", v.join(", ")))
}

fn on_exit_codes(
    at: &str,
    req: &PodFailurePolicyOnExitCodesRequirement,
    names: &[&str],
    out: &mut Vec<Cause>,
) {
    let operator = format!("{at}.operator");
    match req.operator.as_str() {
        "" => out.push(Cause::required_because(
            operator,
            format!("valid values: {}", quoted_list(OPERATORS)),
        )),
        op if !OPERATORS.contains(&op) => out.push(Cause::not_supported(operator, op, OPERATORS)),
        _ => {}
    }
    if let Some(name) = &req.container_name {
        if !names.contains(&name.as_str()) {
            out.push(Cause::invalid(
                format!("{at}.containerName"),
                &json!(name),
                "must be one of the container or initContainer names in the pod template",
            ));
        }
    }
    let values = format!("{at}.values");
    if req.values.is_empty() {
        // Printed raw, as Kubernetes prints the empty list.
        out.push(Cause {
            kind: CauseKind::Invalid,
            field: values.clone(),
            message: "[]int32{}: at least one value is required".into(),
        });
    } else if req.values.len() > MAX_EXIT_CODE_VALUES {
        out.push(too_many(
            values.clone(),
            req.values.len(),
            MAX_EXIT_CODE_VALUES,
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for (j, code) in req.values.iter().enumerate() {
        let here = format!("{values}[{j}]");
        if req.operator == "In" && *code == 0 {
            out.push(Cause::invalid(
                here.clone(),
                &json!(code),
                "must not be 0 for the In operator",
            ));
        }
        if !seen.insert(*code) {
            out.push(Cause::duplicate(here, &json!(code)));
        }
    }
    if req.values.windows(2).any(|w| w[0] > w[1]) {
        let shown = go_int32s(&req.values);
        out.push(Cause {
            kind: CauseKind::Invalid,
            field: values,
            message: format!("{}: must be ordered", shown.as_str().unwrap_or_default()),
        });
    }
}

fn on_pod_conditions(
    at: &str,
    patterns: &[PodFailurePolicyOnPodConditionsPattern],
    out: &mut Vec<Cause>,
) {
    if patterns.len() > MAX_POD_CONDITION_PATTERNS {
        out.push(too_many(
            at.into(),
            patterns.len(),
            MAX_POD_CONDITION_PATTERNS,
        ));
    }
    for (j, p) in patterns.iter().enumerate() {
        v::qualified_name(&format!("{at}[{j}].type"), &p.type_, out);
        let status = format!("{at}[{j}].status");
        match p.status.as_str() {
            "" => out.push(Cause::required_because(
                status,
                format!("valid values: {}", quoted_list(STATUSES)),
            )),
            st if !STATUSES.contains(&st) => out.push(Cause::not_supported(status, st, STATUSES)),
            _ => {}
        }
    }
}

fn success_policy(spec: &JobSpec, sp: &SuccessPolicy, out: &mut Vec<Cause>) {
    let rules = "spec.successPolicy.rules";
    if sp.rules.is_empty() {
        out.push(Cause::required_because(
            rules,
            "at least one rules must be specified when the successPolicy is specified",
        ));
    }
    if sp.rules.len() > MAX_SUCCESS_POLICY_RULES {
        out.push(too_many(
            rules.into(),
            sp.rules.len(),
            MAX_SUCCESS_POLICY_RULES,
        ));
    }
    // Without completions the Indexed job is refused already.
    let Some(completions) = spec.completions else {
        return;
    };
    for (i, rule) in sp.rules.iter().enumerate() {
        let at = format!("{rules}[{i}]");
        if rule.succeeded_count.is_none() && rule.succeeded_indexes.is_none() {
            out.push(Cause::required_because(
                at.clone(),
                "at least one of succeededCount or succeededIndexes must be specified",
            ));
        }
        let mut total = 0;
        if let Some(list) = &rule.succeeded_indexes {
            let field = format!("{at}.succeededIndexes");
            if list.len() > MAX_SUCCEEDED_INDEXES_LENGTH {
                out.push(Cause::too_long(field.clone(), MAX_SUCCEEDED_INDEXES_LENGTH));
            }
            match indexes_total(list, completions) {
                Ok(n) => total = n,
                Err(e) => out.push(Cause::invalid(
                    field,
                    &json!(list),
                    format!("error parsing succeededIndexes: {e}"),
                )),
            }
        }
        if let Some(count) = rule.succeeded_count {
            let field = format!("{at}.succeededCount");
            v::non_negative(&field, Some(i64::from(count)), out);
            if count > completions {
                out.push(Cause::invalid(
                    field.clone(),
                    &json!(count),
                    format!("must be less than or equal to {completions} (the number of specified completions)"),
                ));
            }
            if rule.succeeded_indexes.is_some() && count > total {
                out.push(Cause::invalid(
                    field,
                    &json!(count),
                    format!("must be less than or equal to {total} (the number of indexes in the specified succeededIndexes field)"),
                ));
            }
        }
    }
}

/// How many indexes an index list (`1,3-5,7`) names, each below `completions`, in increasing
/// order; or why it is malformed, in Kubernetes' words.
pub fn indexes_total(list: &str, completions: i32) -> Result<i32, String> {
    if list.is_empty() {
        return Ok(0);
    }
    let mut last: Option<i32> = None;
    let mut total = 0i32;
    for part in list.split(',') {
        let (x, y) = index_interval(part, completions)?;
        if let Some(l) = last {
            if l >= x {
                return Err(format!("non-increasing order, previous: {l}, current: {x}"));
            }
        }
        total = total.saturating_add(y - x + 1);
        last = Some(y);
    }
    Ok(total)
}

fn index_interval(part: &str, completions: i32) -> Result<(i32, i32), String> {
    let ends: Vec<&str> = part.split('-').collect();
    if ends.len() > 2 {
        return Err(format!("the fragment {part:?} violates the requirement that an index interval can have at most two parts separated by '-'"));
    }
    let num = |s: &str| -> Result<i32, String> {
        let n: i64 = s
            .parse()
            .map_err(|_| format!("cannot convert string to integer for index: {s:?}"))?;
        if n >= i64::from(completions) {
            return Err(format!("too large index: {s:?}"));
        }
        // A negative index cannot be written: its '-' splits the fragment.
        Ok(n as i32)
    };
    let x = num(ends[0])?;
    match ends.get(1) {
        None => Ok((x, x)),
        Some(b) => {
            let y = num(b)?;
            if x >= y {
                return Err(format!("non-increasing order, previous: {x}, current: {y}"));
            }
            Ok((x, y))
        }
    }
}

fn validate_job(j: &Job) -> Vec<Cause> {
    let mut out = Vec::new();
    let Some(spec) = &j.spec else {
        out.push(Cause::required("spec"));
        return out;
    };
    validate_job_spec(
        spec,
        spec.selector.is_some() || spec.manual_selector == Some(true),
        &mut out,
    );
    // The pods of an Indexed job are named for their host `<job>-<index>`.
    if let (Some("Indexed"), Some(c)) = (spec.completion_mode.as_deref(), spec.completions) {
        let name = j.metadata.name.as_deref().unwrap_or("");
        let host = format!("{name}-{}", c - 1);
        if c > 0 && !name.is_empty() && !v::is_dns1123_label(&host) {
            out.push(Cause::invalid(
                "metadata.name",
                &json!(name),
                format!("will not able to create pod with invalid DNS label: {host}"),
            ));
        }
    }
    out
}

fn job_update(new: &Job, old: &Job) -> Vec<Cause> {
    let mut out = Vec::new();
    let (Some(n), Some(o)) = (&new.spec, &old.spec) else {
        return out;
    };
    if n.completions != o.completions {
        // An Indexed job may be scaled: completions together with parallelism.
        if n.completion_mode.as_deref() != Some("Indexed") {
            out.push(Cause::immutable("spec.completions"));
        } else if let Some(c) = n.completions {
            if Some(c) != n.parallelism {
                out.push(Cause::invalid(
                    "spec.completions",
                    &json!(c),
                    "can only be modified in tandem with spec.parallelism",
                ));
            }
        }
    }
    if n.selector != o.selector {
        out.push(Cause::immutable("spec.selector"));
    }
    // The template may change only while the job is suspended (scheduling directives).
    if n.template != o.template && o.suspend != Some(true) {
        out.push(Cause::immutable("spec.template"));
    }
    if n.completion_mode != o.completion_mode {
        out.push(Cause::immutable("spec.completionMode"));
    }
    if n.pod_failure_policy != o.pod_failure_policy {
        out.push(Cause::immutable("spec.podFailurePolicy"));
    }
    if n.backoff_limit_per_index != o.backoff_limit_per_index {
        out.push(Cause::immutable("spec.backoffLimitPerIndex"));
    }
    if n.managed_by != o.managed_by {
        out.push(Cause::immutable("spec.managedBy"));
    }
    if n.success_policy != o.success_policy {
        out.push(Cause::immutable("spec.successPolicy"));
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
    // kubectl's order: the terminal conditions, deletion, suspension, then the interim ones.
    if has("Complete") {
        "Complete".into()
    } else if has("Failed") {
        "Failed".into()
    } else if j
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|t| !t.is_null())
    {
        "Terminating".into()
    } else if has("Suspended") {
        "Suspended".into()
    } else if has("FailureTarget") {
        "FailureTarget".into()
    } else if has("SuccessCriteriaMet") {
        "SuccessCriteriaMet".into()
    } else {
        "Running".into()
    }
}

fn job_cells(j: &Value) -> Vec<Value> {
    let completions = match j.pointer("/spec/completions").and_then(Value::as_i64) {
        Some(c) => format!("{}/{c}", i(j, "/status/succeeded")),
        None if i(j, "/spec/parallelism") > 1 => format!(
            "{}/1 of {}",
            i(j, "/status/succeeded"),
            i(j, "/spec/parallelism")
        ),
        None => format!("{}/1", i(j, "/status/succeeded")),
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
    use super::{indexes_total, job_cells, job_status, valid_schedule};
    use serde_json::json;

    #[test]
    fn index_lists_are_read_as_kubernetes_reads_them() {
        assert_eq!(indexes_total("", 3), Ok(0));
        assert_eq!(indexes_total("0,2-4,6", 7), Ok(5));
        assert_eq!(
            indexes_total("0-5", 3),
            Err("too large index: \"5\"".to_string())
        );
        assert_eq!(
            indexes_total("2,1", 3),
            Err("non-increasing order, previous: 2, current: 1".to_string())
        );
        assert_eq!(
            indexes_total("2-1", 3),
            Err("non-increasing order, previous: 2, current: 1".to_string())
        );
        assert_eq!(
            indexes_total("x", 3),
            Err("cannot convert string to integer for index: \"x\"".to_string())
        );
        assert!(indexes_total("1-2-3", 9)
            .unwrap_err()
            .contains("at most two parts separated by '-'"));
    }

    #[test]
    fn job_rows_read_as_kubectl_prints_them() {
        let cond = |t: &str| json!({"type": t, "status": "True"});
        let job = |conds: Vec<serde_json::Value>| json!({"status": {"conditions": conds}});
        assert_eq!(job_status(&job(vec![])), "Running");
        assert_eq!(
            job_status(&job(vec![cond("SuccessCriteriaMet")])),
            "SuccessCriteriaMet"
        );
        assert_eq!(
            job_status(&job(vec![cond("SuccessCriteriaMet"), cond("Complete")])),
            "Complete"
        );
        assert_eq!(
            job_status(&job(vec![cond("FailureTarget"), cond("Suspended")])),
            "Suspended"
        );
        assert_eq!(
            job_status(&job(vec![cond("FailureTarget")])),
            "FailureTarget"
        );
        let completions = |spec: serde_json::Value| {
            job_cells(&json!({"metadata": {"name": "j"},
            "spec": spec, "status": {"succeeded": 1}}))[2]
                .clone()
        };
        assert_eq!(completions(json!({"completions": 3})), "1/3");
        assert_eq!(completions(json!({"parallelism": 2})), "1/1 of 2");
        assert_eq!(completions(json!({"parallelism": 1})), "1/1");
    }

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
