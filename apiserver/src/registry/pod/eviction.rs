//! `pods/eviction`: a graceful delete of a pod that respects the PodDisruptionBudgets
//! covering it, as Kubernetes' `pkg/registry/core/pod/storage/eviction.go` does. A pod that
//! is finished, pending or already deleting goes at once; otherwise its one budget must allow
//! a disruption, which the eviction takes by decrementing `disruptionsAllowed` and recording
//! the pod in `disruptedPods` with a conditional status write, before deleting it. A budget
//! that allows none answers 429, so that `kubectl drain` waits and tries again.
//!
//! Before the delete, the pod gets the `DisruptionTarget` condition (reason
//! `EvictionByEvictionAPI`), as Kubernetes marks an evicted pod: a Job's pod failure policy
//! tells evictions from failures by it.

use std::collections::BTreeMap;

use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{json, Value};
use skiff_rules::disruption::{self, DISRUPTION_BUDGET_CAUSE, MAX_DISRUPTED_PODS};

use super::binding::created;
use crate::error::{Error, Result};
use crate::registry::subresource::{Kind, Subresource};
use crate::registry::{s, Objects, Resource};
use crate::request::{DeleteOpts, Propagation, WriteOpts};

/// How many times an eviction re-reads what changed under it (a pod, a budget) before it
/// gives up with the conflict.
const ATTEMPTS: usize = 10;

/// kube's message for an eviction a budget refuses.
const VIOLATES: &str = "Cannot evict pod as it would violate the pod's disruption budget.";

/// The `eviction` handler.
pub static EVICTION: Eviction = Eviction;

/// The `eviction` subresource.
pub struct Eviction;

/// The delete an `Eviction` asks for.
fn delete_options(name: &str, eviction: &Value, opts: &WriteOpts) -> Result<DeleteOpts> {
    let body_name = s(eviction, "/metadata/name");
    if !body_name.is_empty() && body_name != name {
        return Err(Error::bad_request(
            "name in URL does not match name in Eviction object",
        ));
    }
    let d = eviction.get("deleteOptions").cloned().unwrap_or(json!({}));
    let propagation = match d.get("propagationPolicy").and_then(Value::as_str) {
        Some(p) => Some(Propagation::parse(p)?),
        None => None,
    };
    let dry_run = opts.dry_run
        || d.get("dryRun")
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().any(|x| x == "All"));
    Ok(DeleteOpts {
        grace_period: d.get("gracePeriodSeconds").and_then(Value::as_i64),
        propagation,
        uid: d
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            .map(String::from),
        resource_version: d
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            .map(String::from),
        dry_run,
        ignore_store_read_error: false,
        user: opts.user.clone(),
        notes: opts.notes.clone(),
    })
}

/// Whether the eviction may skip the budgets: the pod already stopped, never started, or is
/// going anyway.
fn can_ignore_budget(pod: &Value) -> bool {
    matches!(
        s(pod, "/status/phase").as_str(),
        "Succeeded" | "Failed" | "Pending"
    ) || pod
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|t| !t.is_null())
}

/// Whether the pod's `Ready` condition is true (what budgets count as healthy).
fn ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// The budgets in the pod's namespace whose selector matches it (in policy/v1 an empty
/// selector matches every pod; an absent one none).
fn budgets_of(objs: &dyn Objects, pdbs: &Resource, pod: &Value) -> Vec<PodDisruptionBudget> {
    let ns = s(pod, "/metadata/namespace");
    let labels: Option<BTreeMap<String, String>> = pod
        .pointer("/metadata/labels")
        .and_then(|l| serde_json::from_value(l.clone()).ok());
    objs.cached_list(pdbs, Some(&ns))
        .iter()
        .filter_map(|c| serde_json::from_slice::<PodDisruptionBudget>(&c.json).ok())
        .filter(|b| {
            let sel = b.spec.as_ref().and_then(|s| s.selector.as_ref());
            skiff_rules::selector::matches(sel, labels.as_ref())
        })
        .collect()
}

/// The 429 for a budget that allows no disruption now.
fn refused(pdb: &PodDisruptionBudget) -> Error {
    let st = pdb.status.clone().unwrap_or_default();
    let why = format!(
        "The disruption budget {} needs {} healthy pods and has {} currently",
        pdb.metadata.name.as_deref().unwrap_or(""),
        st.desired_healthy,
        st.current_healthy
    );
    Error::too_many_requests(
        VIOLATES,
        0,
        vec![json!({"reason": DISRUPTION_BUDGET_CAUSE, "message": why})],
    )
}

/// Takes one disruption from `pdb` for `pod` (kube's `checkAndDecrement`): refuses when the
/// budget allows none or its controller has not seen its latest spec, and otherwise writes
/// the decremented status, conditional on the budget's resourceVersion (a 409 when it moved).
async fn check_and_decrement(
    objs: &dyn Objects,
    pdbs: &Resource,
    pdb: &PodDisruptionBudget,
    pod: &str,
    dry_run: bool,
) -> Result<()> {
    let name = pdb.metadata.name.clone().unwrap_or_default();
    let mut st = pdb.status.clone().unwrap_or_default();
    if st.observed_generation.unwrap_or(0) < pdb.metadata.generation.unwrap_or(0) {
        let why = format!("The disruption budget {name} is still being processed by the server.");
        return Err(Error::too_many_requests(
            VIOLATES,
            10,
            vec![json!({"reason": DISRUPTION_BUDGET_CAUSE, "message": why})],
        ));
    }
    if st.disruptions_allowed < 0 {
        return Err(Error::forbidden_object(
            "poddisruptionbudget.policy",
            &name,
            "pdb disruptions allowed is negative",
        ));
    }
    if st.disrupted_pods.as_ref().map_or(0, BTreeMap::len) > MAX_DISRUPTED_PODS {
        return Err(Error::forbidden_object(
            "poddisruptionbudget.policy",
            &name,
            "DisruptedPods map too big - too many evictions not confirmed by PDB controller",
        ));
    }
    if st.disruptions_allowed == 0 {
        return Err(refused(pdb));
    }
    let now = k8s_openapi::jiff::Timestamp::from_second(chrono::Utc::now().timestamp())
        .map(Time)
        .map_err(|e| Error::internal(e.to_string()))?;
    st.disruptions_allowed -= 1;
    if st.disruptions_allowed == 0 {
        disruption::update_allowed_condition(&mut st, now.clone());
    }
    if dry_run {
        return Ok(());
    }
    st.disrupted_pods
        .get_or_insert_with(BTreeMap::new)
        .insert(pod.to_string(), now);
    let mut obj = serde_json::to_value(pdb).map_err(|e| Error::internal(e.to_string()))?;
    obj["status"] = serde_json::to_value(&st).map_err(|e| Error::internal(e.to_string()))?;
    let ns = pdb.metadata.namespace.clone();
    objs.update(
        pdbs,
        ns.as_deref(),
        &name,
        obj,
        Some("status"),
        &WriteOpts::internal("eviction"),
    )
    .await?;
    Ok(())
}

/// `delete` with the pod's resourceVersion as its precondition unless the eviction gave one:
/// the pod must still be what the eviction judged.
fn pinned(delete: &DeleteOpts, pod: &Value) -> DeleteOpts {
    let mut d = delete.clone();
    if d.resource_version.is_none() {
        d.resource_version = Some(s(pod, "/metadata/resourceVersion"));
    }
    d
}

/// Checks a delete's preconditions against the pod as stored, in kube's words.
fn check_preconditions(pod: &Value, name: &str, delete: &DeleteOpts) -> Result<()> {
    if let Some(uid) = delete.uid.as_deref().filter(|u| !u.is_empty()) {
        let actual = s(pod, "/metadata/uid");
        if actual != uid {
            return Err(Error::conflict("Pod", name, &format!("the UID in the precondition ({uid}) does not match the UID in record ({actual}). The object might have been deleted and then recreated")));
        }
    }
    if let Some(rv) = delete.resource_version.as_deref().filter(|r| !r.is_empty()) {
        let actual = s(pod, "/metadata/resourceVersion");
        if actual != rv {
            return Err(Error::conflict("Pod", name, &format!("the ResourceVersion in the precondition ({rv}) does not match the ResourceVersion in record ({actual}). The object might have been modified")));
        }
    }
    Ok(())
}

/// Sets the pod's `DisruptionTarget` condition to say the eviction API is evicting it (its
/// transition time kept when it said so already).
fn mark_disrupted(pod: &mut Value, now: &str) {
    let mut cond = json!({"type": "DisruptionTarget", "status": "True", "lastProbeTime": null,
        "lastTransitionTime": now, "reason": "EvictionByEvictionAPI",
        "message": "Eviction API: evicting"});
    let Some(status) = pod
        .as_object_mut()
        .map(|p| p.entry("status").or_insert(json!({})))
    else {
        return;
    };
    let Some(list) = status
        .as_object_mut()
        .map(|st| st.entry("conditions").or_insert(json!([])))
        .and_then(Value::as_array_mut)
    else {
        return;
    };
    match list.iter_mut().find(|c| c["type"] == "DisruptionTarget") {
        Some(old) => {
            if old["status"] == "True" {
                cond["lastTransitionTime"] = old["lastTransitionTime"].clone();
            }
            *old = cond;
        }
        None => list.push(cond),
    }
}

/// Marks the pod disrupted (unless this is a dry run), then deletes it; a resourceVersion
/// precondition follows the pod to the version the mark wrote.
async fn mark_and_delete(
    objs: &dyn Objects,
    r: &Resource,
    ns: Option<&str>,
    name: &str,
    delete: &DeleteOpts,
) -> Result<()> {
    let mut delete = delete.clone();
    if !delete.dry_run {
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let mut attempt = 0;
        let marked = loop {
            attempt += 1;
            let mut pod = objs.get(r, ns, name).await?;
            check_preconditions(&pod, name, &delete)?;
            mark_disrupted(&mut pod, &now);
            let opts = WriteOpts::internal("eviction");
            match objs.update(r, ns, name, pod, Some("status"), &opts).await {
                Ok(w) => break w.object,
                // Changed since it was read (the kubelet reporting, say): read it again.
                Err(e) if e.code() == 409 && attempt < ATTEMPTS => continue,
                Err(e) => return Err(e),
            }
        };
        if delete.resource_version.is_some() {
            delete.resource_version = Some(s(&marked, "/metadata/resourceVersion"));
        }
    }
    objs.delete(r, ns, name, &delete).await.map(|_| ())
}

/// Evicts pod `name`: deletes it if its budget (if any) allows, else the budget's refusal.
async fn evict(
    objs: &dyn Objects,
    r: &Resource,
    ns: Option<&str>,
    name: &str,
    delete: &DeleteOpts,
) -> Result<()> {
    // A resourceVersion the caller asked for is theirs to retry, not ours.
    let retry = |e: &Error| e.code() == 409 && delete.resource_version.is_none();
    let mut pod = Value::Null;
    for attempt in 1..=ATTEMPTS {
        pod = objs.get(r, ns, name).await?;
        if !can_ignore_budget(&pod) {
            break;
        }
        match mark_and_delete(objs, r, ns, name, &pinned(delete, &pod)).await {
            Err(e) if retry(&e) && attempt < ATTEMPTS => continue,
            Err(e) => return Err(e),
            Ok(_) => return Ok(()),
        }
    }
    let Some(pdbs) = objs.resource("policy", "v1", "poddisruptionbudgets") else {
        return mark_and_delete(objs, r, ns, name, delete).await;
    };
    let budgets = budgets_of(objs, &pdbs, &pod);
    let pdb = match budgets.as_slice() {
        [] => return mark_and_delete(objs, r, ns, name, delete).await,
        [one] => one,
        // kube answers with a failure `Status` of code 500 it builds itself: no reason, and
        // not the wording of an internal error.
        _ => {
            return Err(Error::failure_status(
                500,
                "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
            ))
        }
    };
    let pdb_name = pdb.metadata.name.clone().unwrap_or_default();
    let get_pdb = || async {
        let v = objs.get(&pdbs, ns, &pdb_name).await?;
        serde_json::from_value::<PodDisruptionBudget>(v).map_err(|e| Error::internal(e.to_string()))
    };
    let mut pdb = get_pdb().await?;
    if !ready(&pod) {
        let spec = pdb.spec.clone().unwrap_or_default();
        let st = pdb.status.clone().unwrap_or_default();
        // An unready pod counts for nothing: taking it away costs the budget nothing when the
        // policy says so, or when the budget is met without it.
        let always = spec.unhealthy_pod_eviction_policy.as_deref() == Some("AlwaysAllow");
        if always || (st.current_healthy >= st.desired_healthy && st.desired_healthy > 0) {
            return mark_and_delete(objs, r, ns, name, &pinned(delete, &pod)).await;
        }
    }
    for attempt in 1..=ATTEMPTS {
        match check_and_decrement(objs, &pdbs, &pdb, name, delete.dry_run).await {
            Ok(()) => break,
            Err(e) if e.code() == 409 && attempt < ATTEMPTS => pdb = get_pdb().await?,
            Err(e) => return Err(e),
        }
    }
    mark_and_delete(objs, r, ns, name, delete).await
}

#[async_trait::async_trait]
impl Subresource for Eviction {
    fn verbs(&self) -> &'static [&'static str] {
        &["create"]
    }

    fn kind(&self) -> Option<Kind> {
        Some(("policy", "v1", "Eviction"))
    }

    fn strict_json(&self, body: &[u8]) -> Vec<crate::strict::Problem> {
        crate::strict::json_typed::<k8s_openapi::api::policy::v1::Eviction>(body)
            .unwrap_or_else(|| crate::strict::json_duplicates(body))
    }

    async fn create(
        &self,
        objs: &dyn Objects,
        r: &Resource,
        ns: Option<&str>,
        name: &str,
        body: Value,
        opts: &WriteOpts,
    ) -> Result<Value> {
        let delete = delete_options(name, &body, opts)?;
        evict(objs, r, ns, name, &delete).await?;
        Ok(created(None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finished_pending_and_deleting_pods_skip_the_budget() {
        let p = |phase: &str| json!({"status": {"phase": phase}});
        assert!(can_ignore_budget(&p("Succeeded")));
        assert!(can_ignore_budget(&p("Pending")));
        assert!(!can_ignore_budget(&p("Running")));
        assert!(can_ignore_budget(
            &json!({"metadata": {"deletionTimestamp": "2024-01-01T00:00:00Z"},
                "status": {"phase": "Running"}})
        ));
    }

    #[test]
    fn a_refusal_reads_as_kubes() {
        let pdb: PodDisruptionBudget = serde_json::from_value(json!({
            "metadata": {"name": "web"},
            "status": {"disruptionsAllowed": 0, "currentHealthy": 2, "desiredHealthy": 2,
                "expectedPods": 3}}))
        .unwrap();
        let st = refused(&pdb).status();
        assert_eq!(st["code"], 429);
        assert_eq!(st["reason"], "TooManyRequests");
        assert_eq!(st["message"], VIOLATES);
        assert_eq!(
            st["details"]["causes"][0],
            json!({"reason": "DisruptionBudget",
                "message": "The disruption budget web needs 2 healthy pods and has 2 currently"})
        );
    }

    #[test]
    fn an_evicted_pod_is_marked_as_kube_marks_it() {
        let mut pod = json!({"metadata": {"name": "p"}, "status": {"phase": "Running",
            "conditions": [{"type": "Ready", "status": "True"}]}});
        mark_disrupted(&mut pod, "2024-01-01T00:00:00Z");
        let c = &pod["status"]["conditions"][1];
        assert_eq!(c["type"], "DisruptionTarget");
        assert_eq!(c["status"], "True");
        assert_eq!(c["reason"], "EvictionByEvictionAPI");
        assert_eq!(c["message"], "Eviction API: evicting");
        mark_disrupted(&mut pod, "2024-01-02T00:00:00Z");
        assert_eq!(pod["status"]["conditions"].as_array().unwrap().len(), 2);
        assert_eq!(
            pod["status"]["conditions"][1]["lastTransitionTime"],
            "2024-01-01T00:00:00Z"
        );
        let d = DeleteOpts {
            resource_version: Some("5".into()),
            ..delete_options("p", &json!({}), &WriteOpts::default()).unwrap()
        };
        let stored = json!({"metadata": {"uid": "u", "resourceVersion": "6"}});
        let e = check_preconditions(&stored, "p", &d).unwrap_err();
        assert_eq!(e.code(), 409);
        assert!(e.to_string().contains("the ResourceVersion in the precondition (5) does not match the ResourceVersion in record (6)"), "{e}");
    }

    #[test]
    fn delete_options_come_from_the_eviction() {
        let ev = json!({"metadata": {"name": "p"}, "deleteOptions": {"gracePeriodSeconds": 3,
            "preconditions": {"uid": "u"}, "dryRun": ["All"]}});
        let d = delete_options("p", &ev, &WriteOpts::default()).unwrap();
        assert_eq!(d.grace_period, Some(3));
        assert_eq!(d.uid.as_deref(), Some("u"));
        assert!(d.dry_run);
        assert_eq!(
            delete_options("q", &ev, &WriteOpts::default())
                .unwrap_err()
                .code(),
            400
        );
        let bad = json!({"deleteOptions": {"propagationPolicy": "Sideways"}});
        assert_eq!(
            delete_options("p", &bad, &WriteOpts::default())
                .unwrap_err()
                .code(),
            422
        );
    }
}
