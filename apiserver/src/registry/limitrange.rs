//! LimitRanges (core/v1): per-namespace bounds and defaults for the resources of containers,
//! pods and claims, which the `LimitRanger` admission applies to new pods.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{LimitRange, LimitRangeItem};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as Wire;
use serde_json::{json, Value};
use skiff_rules::Quantity;

use super::resourcequota::{is_extended, is_native, resource_name};
use super::{col, Builtin, Column, Typed};
use crate::error::{Cause, CauseKind};

/// The limitranges resource.
pub static INFO: Builtin = Builtin {
    group: "",
    version: "v1",
    kind: "LimitRange",
    plural: "limitranges",
    singular: "limitrange",
    short_names: &["limits"],
    categories: &[],
    namespaced: true,
    subresources: &[],
    selectable: &[],
    has_generation: false,
    strategy: &STRATEGY,
    schema: super::schema_of::<LimitRange>,
};

static STRATEGY: Typed<LimitRange> = Typed {
    defaults,
    validate,
    ..Typed::new(columns, cells)
};

/// A container's defaults follow from its bounds: the default limit from `max`, the default
/// request from the default limit, else from `min`.
fn defaults(lr: &mut LimitRange) {
    for item in lr.spec.iter_mut().flat_map(|s| s.limits.iter_mut()) {
        if item.type_ != "Container" {
            continue;
        }
        let default = item.default.get_or_insert_with(BTreeMap::new);
        for (k, v) in item.max.iter().flatten() {
            default.entry(k.clone()).or_insert_with(|| v.clone());
        }
        let request = item.default_request.get_or_insert_with(BTreeMap::new);
        for (k, v) in default.iter() {
            request.entry(k.clone()).or_insert_with(|| v.clone());
        }
        for (k, v) in item.min.iter().flatten() {
            request.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
}

fn limit_type(field: &str, t: &str, out: &mut Vec<Cause>) {
    let before = out.len();
    crate::validation::qualified_name(field, t, out);
    if out.len() == before
        && !t.contains('/')
        && !matches!(t, "Pod" | "Container" | "PersistentVolumeClaim")
    {
        out.push(Cause::invalid(
            field,
            &json!(t),
            "must be a standard limit type or fully qualified",
        ));
    }
}

/// A resource name a limit of type `t` may bound: containers and pods only their own
/// resources (`cpu`, `memory`, `ephemeral-storage`, hugepages, extended resources).
fn limit_resource(t: &str, field: &str, name: &str, out: &mut Vec<Cause>) {
    if !matches!(t, "Pod" | "Container") {
        resource_name(field, name, out);
        return;
    }
    if !resource_name(field, name, out) {
        return;
    }
    if !name.contains('/') {
        let container = matches!(name, "cpu" | "memory" | "ephemeral-storage")
            || name.starts_with("hugepages-");
        if !container {
            out.push(Cause::invalid(
                field,
                &json!(name),
                "must be a standard resource for containers",
            ));
        }
    } else if !is_native(name) && !is_extended(name) {
        out.push(Cause::invalid(
            field,
            &json!(name),
            "doesn't follow extended resource name standard",
        ));
    }
}

fn quantities(
    t: &str,
    field: &str,
    list: Option<&BTreeMap<String, Wire>>,
    keys: &mut BTreeSet<String>,
    out: &mut Vec<Cause>,
) -> BTreeMap<String, Quantity> {
    let mut parsed = BTreeMap::new();
    for (k, q) in list.into_iter().flatten() {
        limit_resource(t, &format!("{field}[{k}]"), k, out);
        keys.insert(k.clone());
        if let Ok(v) = Quantity::try_from(q) {
            parsed.insert(k.clone(), v);
        }
    }
    parsed
}

fn item(n: usize, item: &LimitRangeItem, seen: &mut BTreeSet<String>, out: &mut Vec<Cause>) {
    let f = format!("spec.limits[{n}]");
    let t = item.type_.as_str();
    limit_type(&format!("{f}.type"), t, out);
    if !seen.insert(t.to_string()) {
        out.push(Cause::duplicate(format!("{f}.type"), &json!(t)));
    }
    let mut keys = BTreeSet::new();
    let max = quantities(t, &format!("{f}.max"), item.max.as_ref(), &mut keys, out);
    let min = quantities(t, &format!("{f}.min"), item.min.as_ref(), &mut keys, out);
    let (mut default, mut default_request) = (BTreeMap::new(), BTreeMap::new());
    if t == "Pod" {
        if item.default.as_ref().is_some_and(|d| !d.is_empty()) {
            out.push(Cause::forbidden(
                format!("{f}.default"),
                "may not be specified when `type` is 'Pod'",
            ));
        }
        if item.default_request.as_ref().is_some_and(|d| !d.is_empty()) {
            out.push(Cause::forbidden(
                format!("{f}.defaultRequest"),
                "may not be specified when `type` is 'Pod'",
            ));
        }
    } else {
        default = quantities(
            t,
            &format!("{f}.default"),
            item.default.as_ref(),
            &mut keys,
            out,
        );
        default_request = quantities(
            t,
            &format!("{f}.defaultRequest"),
            item.default_request.as_ref(),
            &mut keys,
            out,
        );
    }
    if t == "PersistentVolumeClaim" && !min.contains_key("storage") && !max.contains_key("storage")
    {
        out.push(Cause {
            kind: CauseKind::Required,
            field: format!("{f}.limits"),
            message:
                "either minimum or maximum storage value is required, but neither was provided"
                    .into(),
        });
    }
    let ratio = quantities(
        t,
        &format!("{f}.maxLimitRequestRatio"),
        item.max_limit_request_ratio.as_ref(),
        &mut keys,
        out,
    );
    for k in &keys {
        let at = |what: &str| format!("{f}.{what}[{k}]");
        let (mn, mx, d, dr, r) = (
            min.get(k),
            max.get(k),
            default.get(k),
            default_request.get(k),
            ratio.get(k),
        );
        let mut bad = |field: String, value: &Quantity, msg: String| {
            out.push(Cause::invalid(field, &json!(value.to_string()), msg));
        };
        if let (Some(mn), Some(mx)) = (mn, mx) {
            if mn > mx {
                bad(
                    at("min"),
                    mn,
                    format!("min value {mn} is greater than max value {mx}"),
                );
            }
        }
        if let (Some(dr), Some(mn)) = (dr, mn) {
            if mn > dr {
                bad(
                    at("defaultRequest"),
                    dr,
                    format!("min value {mn} is greater than default request value {dr}"),
                );
            }
        }
        if let (Some(dr), Some(mx)) = (dr, mx) {
            if dr > mx {
                bad(
                    at("defaultRequest"),
                    dr,
                    format!("default request value {dr} is greater than max value {mx}"),
                );
            }
        }
        if let (Some(dr), Some(d)) = (dr, d) {
            if dr > d {
                bad(
                    at("defaultRequest"),
                    dr,
                    format!("default request value {dr} is greater than default limit value {d}"),
                );
            }
        }
        if let (Some(d), Some(mn)) = (d, mn) {
            if mn > d {
                bad(
                    at("default"),
                    mn,
                    format!("min value {mn} is greater than default value {d}"),
                );
            }
        }
        if let (Some(d), Some(mx)) = (d, mx) {
            if d > mx {
                bad(
                    at("default"),
                    mx,
                    format!("default value {d} is greater than max value {mx}"),
                );
            }
        }
        if let Some(r) = r {
            if *r < Quantity::from_value(1, skiff_rules::quantity::Format::DecimalSI) {
                bad(
                    at("maxLimitRequestRatio"),
                    r,
                    format!("ratio {r} is less than 1"),
                );
            }
            if let (Some(mn), Some(mx)) = (mn, mx) {
                // Kubernetes compares in thousandths where they fit, as floating point.
                let limit = mx.milli_value() as f64 / mn.milli_value() as f64;
                let ratio = r.milli_value() as f64 / 1000.0;
                if ratio > limit {
                    bad(
                        at("maxLimitRequestRatio"),
                        r,
                        format!("ratio {r} is greater than max/min = {limit:.6}"),
                    );
                }
            }
        }
        // Resources that cannot be overcommitted (hugepages, extended ones) must default
        // their request to their limit.
        let overcommit = is_native(k) && !k.starts_with("hugepages-");
        if let (false, Some(d), Some(dr)) = (overcommit, d, dr) {
            if d != dr {
                bad(
                    at("defaultRequest"),
                    dr,
                    format!("default value {d} must equal to defaultRequest value {dr} in {k}"),
                );
            }
        }
    }
}

fn validate(lr: &LimitRange) -> Vec<Cause> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for (n, i) in lr.spec.iter().flat_map(|s| s.limits.iter()).enumerate() {
        item(n, i, &mut seen, &mut out);
    }
    out
}

fn columns() -> Vec<Column> {
    vec![
        col("Name", "string", 0, "Name must be unique within a namespace."),
        col("Created At", "date", 0, "CreationTimestamp is a timestamp representing the server time when this object was created."),
    ]
}

fn cells(lr: &Value) -> Vec<Value> {
    vec![
        super::name(lr),
        json!(super::s(lr, "/metadata/creationTimestamp")),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lr(limits: Value) -> LimitRange {
        serde_json::from_value(json!({"metadata": {"name": "l"}, "spec": {"limits": limits}}))
            .unwrap()
    }

    fn errors(limits: Value) -> Vec<String> {
        let mut l = lr(limits);
        defaults(&mut l);
        validate(&l).iter().map(Cause::text).collect()
    }

    #[test]
    fn container_defaults_follow_from_bounds() {
        let mut l =
            lr(json!([{"type": "Container", "max": {"cpu": "2"}, "min": {"memory": "64Mi"}}]));
        defaults(&mut l);
        let item = &l.spec.as_ref().unwrap().limits[0];
        assert_eq!(item.default.as_ref().unwrap()["cpu"].0, "2");
        assert_eq!(item.default_request.as_ref().unwrap()["cpu"].0, "2");
        assert_eq!(item.default_request.as_ref().unwrap()["memory"].0, "64Mi");
        assert!(errors(json!([{"type": "Container", "max": {"cpu": "2"}, "min": {"cpu": "100m"},
            "default": {"cpu": "500m"}, "defaultRequest": {"cpu": "200m"}, "maxLimitRequestRatio": {"cpu": "10"}}]))
            .is_empty());
    }

    #[test]
    fn bounds_must_agree() {
        let e = errors(json!([{"type": "Container", "min": {"cpu": "2"}, "max": {"cpu": "1"}}]));
        assert!(e.contains(&"spec.limits[0].min[cpu]: Invalid value: \"2\": min value 2 is greater than max value 1".to_string()), "{e:?}");
        let e = errors(json!([{"type": "Pod", "default": {"cpu": "1"}}]));
        assert_eq!(
            e,
            vec!["spec.limits[0].default: Forbidden: may not be specified when `type` is 'Pod'"]
        );
        let e = errors(json!([{"type": "PersistentVolumeClaim"}]));
        assert_eq!(e, vec!["spec.limits[0].limits: Required value: either minimum or maximum storage value is required, but neither was provided"]);
        let e = errors(json!([{"type": "Container", "max": {"pods": "1"}}, {"type": "Container"}]));
        assert!(
            e.iter()
                .any(|x| x.contains("must be a standard resource for containers")),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|x| x.starts_with("spec.limits[1].type: Duplicate value")),
            "{e:?}"
        );
        let e = errors(json!([{"type": "foo"}]));
        assert_eq!(e, vec!["spec.limits[0].type: Invalid value: \"foo\": must be a standard limit type or fully qualified"]);
        let e = errors(
            json!([{"type": "Container", "min": {"cpu": "1"}, "max": {"cpu": "2"}, "maxLimitRequestRatio": {"cpu": "3"}}]),
        );
        assert!(e.contains(&"spec.limits[0].maxLimitRequestRatio[cpu]: Invalid value: \"3\": ratio 3 is greater than max/min = 2.000000".to_string()), "{e:?}");
    }

    #[test]
    fn cells_show_the_creation_time() {
        let c =
            cells(&json!({"metadata": {"name": "l", "creationTimestamp": "2024-05-01T10:00:00Z"}}));
        assert_eq!(c, vec![json!("l"), json!("2024-05-01T10:00:00Z")]);
    }
}
