//! apps/v1 StatefulSets: kube's defaults (OrderedReady, RollingUpdate with partition 0, a
//! history of 10, claims kept on delete and scale-down), its validation (the selector must
//! match the template; only replicas, ordinals, template, update strategy, claim retention and
//! minReadySeconds may change), `status` and `scale`, and the READY column.

use k8s_openapi::api::apps::v1::{
    RollingUpdateStatefulSetStrategy, StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy,
    StatefulSetUpdateStrategy,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{json, Value};

use super::{apps, clear_status, col, containers_images, i, persistentvolumeclaim, Builtin};
use super::{Column, Typed};
use crate::error::Cause;
use crate::validation as v;

/// The statefulsets resource.
pub static STATEFULSETS: Builtin = Builtin {
    group: "apps",
    version: "v1",
    kind: "StatefulSet",
    plural: "statefulsets",
    singular: "statefulset",
    short_names: &["sts"],
    categories: &["all"],
    namespaced: true,
    subresources: &[
        ("status", &super::subresource::STATUS),
        ("scale", &super::subresource::SCALE),
    ],
    selectable: &[],
    has_generation: true,
    strategy: &STS,
    schema: super::schema_of::<StatefulSet>,
};

static STS: Typed<StatefulSet> = Typed {
    status: true,
    defaults,
    validate,
    validate_update,
    prepare_create: clear_status,
    ..Typed::new(columns, cells)
};

const POLICIES: &[&str] = &["Retain", "Delete"];

fn defaults(s: &mut StatefulSet) {
    let Some(spec) = s.spec.as_mut() else { return };
    spec.replicas.get_or_insert(1);
    spec.revision_history_limit.get_or_insert(10);
    spec.pod_management_policy
        .get_or_insert_with(|| "OrderedReady".into());
    let us = spec
        .update_strategy
        .get_or_insert_with(StatefulSetUpdateStrategy::default);
    let ty = us.type_.get_or_insert_with(|| "RollingUpdate".into());
    if ty == "RollingUpdate" {
        let ru = us
            .rolling_update
            .get_or_insert_with(RollingUpdateStatefulSetStrategy::default);
        ru.partition.get_or_insert(0);
    }
    let rp = spec
        .persistent_volume_claim_retention_policy
        .get_or_insert_with(StatefulSetPersistentVolumeClaimRetentionPolicy::default);
    rp.when_deleted.get_or_insert_with(|| "Retain".into());
    rp.when_scaled.get_or_insert_with(|| "Retain".into());
    if let Some(t) = spec.template.spec.as_mut() {
        super::pod::default_spec(t);
    }
    for c in spec.volume_claim_templates.iter_mut().flatten() {
        persistentvolumeclaim::defaults(c);
    }
}

fn validate(s: &StatefulSet) -> Vec<Cause> {
    let mut out = Vec::new();
    let Some(spec) = &s.spec else {
        out.push(Cause::required("spec"));
        return out;
    };
    match spec.pod_management_policy.as_deref() {
        None | Some("") => out.push(Cause::required("spec.podManagementPolicy")),
        Some("OrderedReady" | "Parallel") => {}
        Some(p) => out.push(Cause::invalid(
            "spec.podManagementPolicy",
            &json!(p),
            "must be 'OrderedReady' or 'Parallel'",
        )),
    }
    let us = spec.update_strategy.clone().unwrap_or_default();
    match us.type_.as_deref() {
        None | Some("") => out.push(Cause::required("spec.updateStrategy")),
        Some("OnDelete") => {
            if us.rolling_update.is_some() {
                out.push(Cause::invalid(
                    "spec.updateStrategy.rollingUpdate",
                    &v::val(&us.rolling_update),
                    "only allowed for updateStrategy 'RollingUpdate'",
                ));
            }
        }
        Some("RollingUpdate") => {
            if let Some(ru) = &us.rolling_update {
                v::non_negative(
                    "spec.updateStrategy.rollingUpdate.partition",
                    ru.partition.map(i64::from),
                    &mut out,
                );
                max_unavailable(ru.max_unavailable.as_ref(), &mut out);
            }
        }
        Some(_) => out.push(Cause::invalid(
            "spec.updateStrategy",
            &v::val(&us),
            "must be 'RollingUpdate' or 'OnDelete'",
        )),
    }
    if let Some(rp) = &spec.persistent_volume_claim_retention_policy {
        for (f, p) in [
            ("whenDeleted", &rp.when_deleted),
            ("whenScaled", &rp.when_scaled),
        ] {
            let p = p.as_deref().unwrap_or("");
            if !POLICIES.contains(&p) {
                out.push(Cause::not_supported(
                    format!("spec.persistentVolumeClaimRetentionPolicy.{f}"),
                    p,
                    POLICIES,
                ));
            }
        }
    }
    v::non_negative("spec.replicas", spec.replicas.map(i64::from), &mut out);
    v::non_negative(
        "spec.minReadySeconds",
        spec.min_ready_seconds.map(i64::from),
        &mut out,
    );
    v::non_negative(
        "spec.revisionHistoryLimit",
        spec.revision_history_limit.map(i64::from),
        &mut out,
    );
    if let Some(o) = &spec.ordinals {
        v::non_negative("spec.ordinals.start", o.start.map(i64::from), &mut out);
    }
    if let Some(name) = spec.service_name.as_deref().filter(|n| !n.is_empty()) {
        if !v::is_dns1123_label(name) {
            out.push(Cause::invalid(
                "spec.serviceName",
                &json!(name),
                "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
            ));
        }
    }
    // The pods get one volume per claim template, so the template is checked with those
    // volumes added: a mount of a claim template's name is not a mount of a missing volume.
    // (Kubernetes leaves the template's pod spec unchecked for this reason.)
    let mut template = spec.template.clone();
    if let Some(pod) = template.spec.as_mut() {
        let volumes = pod.volumes.get_or_insert_with(Vec::new);
        for c in spec.volume_claim_templates.iter().flatten() {
            let name = c.metadata.name.clone().unwrap_or_default();
            if !name.is_empty() && !volumes.iter().any(|v| v.name == name) {
                volumes.push(k8s_openapi::api::core::v1::Volume {
                    name: name.clone(),
                    persistent_volume_claim: Some(
                        k8s_openapi::api::core::v1::PersistentVolumeClaimVolumeSource {
                            claim_name: name,
                            read_only: None,
                        },
                    ),
                    ..Default::default()
                });
            }
        }
    }
    let mut sel = Vec::new();
    apps::selector_and_template(
        Some(&spec.selector),
        Some(&template),
        "spec.template",
        &["Always"],
        &mut sel,
    );
    for mut c in sel {
        if c.message == "empty selector is invalid for deployment" {
            c.message = "empty selector is invalid for statefulset".into();
        }
        out.push(c);
    }
    if spec
        .template
        .spec
        .as_ref()
        .is_some_and(|p| p.active_deadline_seconds.is_some())
    {
        out.push(Cause::forbidden(
            "spec.template.spec.activeDeadlineSeconds",
            "activeDeadlineSeconds in StatefulSet is not Supported",
        ));
    }
    let mut names = std::collections::BTreeSet::new();
    for (n, c) in spec.volume_claim_templates.iter().flatten().enumerate() {
        let at = format!("spec.volumeClaimTemplates[{n}]");
        let name = c.metadata.name.clone().unwrap_or_default();
        if name.is_empty() {
            out.push(Cause::required(format!("{at}.metadata.name")));
        } else {
            v::subdomain(&format!("{at}.metadata.name"), &name, &mut out);
            if !names.insert(name.clone()) {
                out.push(Cause::duplicate(
                    format!("{at}.metadata.name"),
                    &json!(name),
                ));
            }
        }
        for mut e in persistentvolumeclaim::validate(c) {
            e.field = format!("{at}.{}", e.field);
            out.push(e);
        }
    }
    out
}

fn max_unavailable(x: Option<&IntOrString>, out: &mut Vec<Cause>) {
    const FIELD: &str = "spec.updateStrategy.rollingUpdate.maxUnavailable";
    match x {
        Some(IntOrString::Int(n)) if *n < 1 => out.push(Cause::invalid(
            FIELD,
            &json!(n),
            "must be greater than or equal to 1",
        )),
        Some(IntOrString::String(s)) => match s.strip_suffix('%').and_then(|n| n.parse::<u32>().ok()) {
            None => out.push(Cause::invalid(FIELD, &json!(s), "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')")),
            Some(0) => out.push(Cause::invalid(FIELD, &json!(s), "must be greater than or equal to 1")),
            Some(p) if p > 100 => out.push(Cause::invalid(FIELD, &json!(s), "must not be greater than 100%")),
            Some(_) => {}
        },
        _ => {}
    }
}

/// kube's rule: the spec is fixed once created, but for the fields a rollout or a scale
/// changes.
fn validate_update(new: &StatefulSet, old: &StatefulSet) -> Vec<Cause> {
    let (Some(n), Some(o)) = (&new.spec, &old.spec) else {
        return Vec::new();
    };
    let mut n = n.clone();
    n.replicas = o.replicas;
    n.template = o.template.clone();
    n.update_strategy = o.update_strategy.clone();
    n.min_ready_seconds = o.min_ready_seconds;
    n.ordinals = o.ordinals.clone();
    n.persistent_volume_claim_retention_policy = o.persistent_volume_claim_retention_policy.clone();
    // The claim templates are compared as the client gave them, not by the type and status
    // kube fills in.
    let strip = |s: &k8s_openapi::api::apps::v1::StatefulSetSpec| {
        let mut s = s.clone();
        for c in s.volume_claim_templates.iter_mut().flatten() {
            c.status = None;
        }
        s
    };
    if strip(&n) != strip(o) {
        return vec![Cause::forbidden(
            "spec",
            "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
        )];
    }
    Vec::new()
}

fn columns() -> Vec<Column> {
    vec![
        col("Name", "string", 0, "Name must be unique within a namespace."),
        col("Ready", "string", 0, "Number of the pod with ready state"),
        col("Age", "string", 0, "CreationTimestamp is a timestamp representing the server time when this object was created."),
        col("Containers", "string", 1, "Names of each container in the template."),
        col("Images", "string", 1, "Images referenced by each container in the template."),
    ]
}

fn cells(s: &Value) -> Vec<Value> {
    let (c, im) = containers_images(s, "/spec/template/spec/containers");
    vec![
        super::name(s),
        json!(format!(
            "{}/{}",
            i(s, "/status/readyReplicas"),
            i(s, "/spec/replicas")
        )),
        super::age(s),
        c,
        im,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sts(v: Value) -> StatefulSet {
        let mut s: StatefulSet = serde_json::from_value(v).unwrap();
        defaults(&mut s);
        s
    }

    fn web() -> Value {
        json!({"metadata": {"name": "web"}, "spec": {
            "selector": {"matchLabels": {"app": "web"}}, "serviceName": "web",
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]}},
            "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {
                "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]}})
    }

    #[test]
    fn a_mount_of_a_claim_template_is_a_mount_of_a_volume() {
        let mut v = web();
        v["spec"]["template"]["spec"]["containers"][0]["volumeMounts"] =
            json!([{"name": "data", "mountPath": "/data"}]);
        assert!(validate(&sts(v.clone())).is_empty());
        v["spec"]["template"]["spec"]["containers"][0]["volumeMounts"] =
            json!([{"name": "other", "mountPath": "/data"}]);
        let texts: Vec<String> = validate(&sts(v)).iter().map(Cause::text).collect();
        assert!(
            texts
                .iter()
                .any(|t| t.contains("volumeMounts[0].name") && t.contains("not found")),
            "{texts:?}"
        );
    }

    #[test]
    fn kube_defaults() {
        let s = sts(web());
        let spec = s.spec.unwrap();
        assert_eq!(spec.replicas, Some(1));
        assert_eq!(spec.pod_management_policy.as_deref(), Some("OrderedReady"));
        let us = spec.update_strategy.unwrap();
        assert_eq!(us.type_.as_deref(), Some("RollingUpdate"));
        assert_eq!(us.rolling_update.unwrap().partition, Some(0));
        let rp = spec.persistent_volume_claim_retention_policy.unwrap();
        assert_eq!(rp.when_deleted.as_deref(), Some("Retain"));
        assert_eq!(rp.when_scaled.as_deref(), Some("Retain"));
        let c = &spec.volume_claim_templates.unwrap()[0];
        assert_eq!(
            c.spec.as_ref().unwrap().volume_mode.as_deref(),
            Some("Filesystem")
        );
        let raw = serde_json::to_value(c).unwrap();
        assert_eq!(
            raw["kind"], "PersistentVolumeClaim",
            "stored as kube stores it"
        );
    }

    #[test]
    fn selector_mismatch_and_bad_policies() {
        let mut v = web();
        v["spec"]["selector"] = json!({"matchLabels": {"app": "other"}});
        v["spec"]["podManagementPolicy"] = json!("Sometimes");
        v["spec"]["updateStrategy"] =
            json!({"type": "OnDelete", "rollingUpdate": {"partition": 1}});
        let texts: Vec<String> = validate(&sts(v)).iter().map(Cause::text).collect();
        assert!(
            texts
                .iter()
                .any(|t| t.contains("`selector` does not match template `labels`")),
            "{texts:?}"
        );
        assert!(
            texts
                .iter()
                .any(|t| t.contains("must be 'OrderedReady' or 'Parallel'")),
            "{texts:?}"
        );
        assert!(
            texts
                .iter()
                .any(|t| t.contains("only allowed for updateStrategy 'RollingUpdate'")),
            "{texts:?}"
        );
        assert!(validate(&sts(web())).is_empty());
    }

    #[test]
    fn only_rollout_fields_change() {
        let old = sts(web());
        let mut new = old.clone();
        let spec = new.spec.as_mut().unwrap();
        spec.replicas = Some(5);
        spec.template.spec.as_mut().unwrap().containers[0].image = Some("nginx".into());
        assert!(validate_update(&new, &old).is_empty());
        new.spec.as_mut().unwrap().service_name = Some("other".into());
        let e = validate_update(&new, &old);
        assert_eq!(e.len(), 1);
        assert!(e[0].text().contains("updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden"));
    }
}
